-- hookline journal, version 1. See src/journal/mod.rs for the invariants these tables keep.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- API keys are stored as SHA-256 hex digests only. tenant_id NULL marks an admin key.
CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
) STRICT;

-- config is the JSON of SubscriptionSpec. The state columns are owned by different writers:
-- paused by operators, blocked_on and disabled_reason by the subscription's actor,
-- faulted_reason by the supervisor. The public state is derived from them.
CREATE TABLE subscriptions (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    config           TEXT NOT NULL,
    version          INTEGER NOT NULL DEFAULT 1,
    paused           INTEGER NOT NULL DEFAULT 0,
    blocked_on       INTEGER,
    disabled_reason  TEXT,
    faulted_reason   TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX subscriptions_by_tenant ON subscriptions(tenant_id, id);

-- seq is the global journal order; deliveries of one subscription go out in seq order.
-- body is the exact envelope JSON POSTed to receivers.
CREATE TABLE events (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id          TEXT NOT NULL,
    id                 TEXT NOT NULL,
    notification_type  TEXT NOT NULL,
    body               TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    UNIQUE (tenant_id, id)
) STRICT;

-- attempts counts every attempt (numbering); budget_used only those that count against
-- maxAttempts since the last (re)submission. started_at is set while in_flight.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    subscription_id  TEXT NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    event_seq        INTEGER NOT NULL REFERENCES events(seq),
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    budget_used      INTEGER NOT NULL DEFAULT 0,
    next_at          INTEGER,
    started_at       INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    updated_at       INTEGER NOT NULL,
    UNIQUE (subscription_id, event_seq)
) STRICT;
-- The queue of each subscription: only open deliveries, in order.
CREATE INDEX deliveries_open ON deliveries(subscription_id, event_seq)
    WHERE state IN ('pending', 'in_flight');
-- Recovery looks for attempts interrupted by a crash.
CREATE INDEX deliveries_in_flight ON deliveries(id) WHERE state = 'in_flight';

CREATE TABLE attempts (
    delivery_id       INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    n                 INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    status_code       INTEGER,
    error_kind        TEXT,
    error             TEXT,
    response_snippet  TEXT,
    PRIMARY KEY (delivery_id, n)
) STRICT, WITHOUT ROWID;
