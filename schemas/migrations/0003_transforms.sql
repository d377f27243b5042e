-- Tenant transforms (WebAssembly components). Each upload of a name is a new version; the same
-- bytes uploaded again are the existing version (UNIQUE on the hash). `wasm` is the tenant's
-- module, the source of truth; `artifact` is wasmtime's precompiled code for it, so a restart
-- loads it in milliseconds instead of compiling again (seconds for a Python component). An
-- artifact that the running wasmtime refuses is recompiled from `wasm` and replaced.
CREATE TABLE transforms (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    wasm        BLOB NOT NULL,
    artifact    BLOB,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name, version),
    UNIQUE (tenant_id, name, sha256)
) STRICT;

-- What the transform printed (stdout/stderr, bounded) during an attempt.
ALTER TABLE attempts ADD COLUMN transform_log TEXT;
