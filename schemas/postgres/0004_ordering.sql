-- Ordering keys (docs/ordering.md), as in the SQLite journal's 0010_ordering.sql: order_key is
-- computed at fan-out ('' = the no-key sequence, NULL = the subscription had no ordering),
-- order_epoch is the subscription's ordering epoch then, holds_key marks a keyed delivery that
-- failed under onFailure: block (its key's later deliveries wait).
ALTER TABLE deliveries ADD COLUMN order_key text;
ALTER TABLE deliveries ADD COLUMN order_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN holds_key boolean NOT NULL DEFAULT false;
CREATE INDEX deliveries_key_open ON deliveries(subscription_id, order_epoch, order_key, seq)
    WHERE order_key IS NOT NULL AND (state IN ('pending', 'in_flight') OR holds_key);
CREATE INDEX deliveries_holding ON deliveries(subscription_id) WHERE holds_key;
