-- Finding a tenant's events by the envelope's transactionId or referenceId (GET /v1/events and
-- the dashboard's Find page). Expression indexes over the journaled body: the publish statement
-- is unchanged, SQLite evaluates the two expressions once per inserted event. Queries must use
-- the same expressions, word for word, to use them.
CREATE INDEX events_by_transaction ON events(tenant_id, json_extract(body, '$.transactionId'));
CREATE INDEX events_by_reference ON events(tenant_id, json_extract(body, '$.referenceId'));
