-- hookline's shared store on PostgreSQL, version 1 (src/store/postgres/ keeps the invariants;
-- docs/cluster.md explains them). The tables mirror the SQLite journal (schemas/migrations/),
-- with times in milliseconds since the epoch as there, plus what several nodes need: a
-- per-subscription order counter (sub_tail), the lease and its fencing token (sub_cursor), and
-- the key check value (store_meta).

CREATE TABLE store_meta (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  bigint NOT NULL,
    rate_limit  text
);

-- API keys are stored as SHA-256 hex digests only. tenant_id NULL marks an admin key.
CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,
    tenant_id   text REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  bigint NOT NULL
);

-- config is the JSON of SubscriptionSpec without its secrets, which are sealed in `secrets`
-- (XChaCha20-Poly1305 under the cluster's key, bound to the id). notification_types and
-- workflow_ids repeat the spec's filters so that a publish routes without opening any spec.
CREATE TABLE subscriptions (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants(id),
    config              text NOT NULL,
    secrets             bytea,
    notification_types  text[] NOT NULL,
    workflow_ids        text[] NOT NULL,
    version             bigint NOT NULL DEFAULT 1,
    paused              boolean NOT NULL DEFAULT false,
    blocked_on          bigint,
    disabled_reason     text,
    faulted_reason      text,
    created_at          bigint NOT NULL,
    updated_at          bigint NOT NULL
);
CREATE INDEX subscriptions_by_tenant ON subscriptions(tenant_id, id);

-- The order counter of a subscription: a publish locks the rows of the subscriptions it fans
-- out to (in id order, so two publishes never deadlock) and numbers their deliveries from
-- tail_seq, so a subscription's seq order is the commit order of its events. Kept apart from
-- sub_cursor so that accepting events and recording outcomes never wait for each other's lock.
CREATE TABLE sub_tail (
    subscription_id  text PRIMARY KEY REFERENCES subscriptions(id) ON DELETE CASCADE,
    tail_seq         bigint NOT NULL DEFAULT 0
);

-- The lease on a subscription's queue. epoch is the fencing token: every acquire bumps it, and
-- every queue write first locks this row FOR SHARE under (epoch, owner); no row means the
-- writer lost the lease. lease_until is on PostgreSQL's clock; next_due_at is when the head
-- may next be attempted (NULL: now, or nothing to do).
CREATE TABLE sub_cursor (
    subscription_id  text PRIMARY KEY REFERENCES subscriptions(id) ON DELETE CASCADE,
    epoch            bigint NOT NULL DEFAULT 0,
    owner            text,
    lease_until      timestamptz,
    next_due_at      timestamptz
);

-- seq is the event's id in this database (a sequence: gaps, and not commit order); the order
-- of deliveries is their own per-subscription seq. body is the exact envelope JSON receivers get.
CREATE TABLE events (
    seq                bigserial PRIMARY KEY,
    tenant_id          text NOT NULL,
    id                 text NOT NULL,
    notification_type  text NOT NULL,
    body               text NOT NULL,
    created_at         bigint NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX events_by_created ON events(created_at);
-- GET /v1/events by transactionId or referenceId: queries use these expressions word for word.
CREATE INDEX events_by_transaction ON events(tenant_id, ((body::jsonb) ->> 'transactionId'));
CREATE INDEX events_by_reference ON events(tenant_id, ((body::jsonb) ->> 'referenceId'));

-- attempts counts every attempt (numbering); budget_used only those that count against
-- maxAttempts since the last (re)submission. started_at is set while in_flight.
CREATE TABLE deliveries (
    id               bigserial PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    seq              bigint NOT NULL,
    event_seq        bigint NOT NULL REFERENCES events(seq),
    state            text NOT NULL,
    attempts         bigint NOT NULL DEFAULT 0,
    budget_used      bigint NOT NULL DEFAULT 0,
    next_at          bigint,
    started_at       bigint,
    last_status      bigint,
    last_error       text,
    updated_at       bigint NOT NULL,
    UNIQUE (subscription_id, seq)
);
CREATE INDEX deliveries_open ON deliveries(subscription_id, seq)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX deliveries_in_flight ON deliveries(subscription_id) WHERE state = 'in_flight';
CREATE INDEX deliveries_by_event ON deliveries(event_seq);

-- node_id and epoch: which holder recorded the attempt, under which token (for the record of
-- a takeover; NULL for attempts logged by recovery).
CREATE TABLE attempts (
    delivery_id       bigint NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    n                 bigint NOT NULL,
    started_at        bigint NOT NULL,
    duration_ms       bigint NOT NULL,
    status_code       bigint,
    error_kind        text,
    error             text,
    response_snippet  text,
    transform_log     text,
    node_id           text,
    epoch             bigint,
    PRIMARY KEY (delivery_id, n)
);
CREATE INDEX attempts_by_started ON attempts(started_at);

-- Tenant transforms: each upload of a name is a new version; the same bytes again are the
-- existing version. artifact is wasmtime's precompiled code, shared by every node.
CREATE TABLE transforms (
    tenant_id   text NOT NULL REFERENCES tenants(id),
    name        text NOT NULL,
    version     bigint NOT NULL,
    sha256      text NOT NULL,
    size_bytes  bigint NOT NULL,
    wasm        bytea NOT NULL,
    artifact    bytea,
    created_at  bigint NOT NULL,
    PRIMARY KEY (tenant_id, name, version),
    UNIQUE (tenant_id, name, sha256)
);

-- The nodes of the cluster, for operators (GET /v1/cluster): no lease depends on a heartbeat.
CREATE TABLE nodes (
    node_id       text PRIMARY KEY,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL
);
-- Claiming: the leases that are free or expired, oldest due first.
CREATE INDEX sub_cursor_claimable ON sub_cursor (next_due_at NULLS FIRST);
CREATE INDEX sub_cursor_by_owner ON sub_cursor (owner) WHERE owner IS NOT NULL;
