-- Ordering keys (docs/ordering.md). order_key is computed once, at fan-out, from the
-- subscription's ordering.key pointer: the value's compact JSON text, '' for the shared no-key
-- sequence, NULL when the subscription had no ordering (one sequence for all its deliveries).
-- order_epoch is the subscription's ordering epoch at fan-out: deliveries of different epochs
-- always keep their relative order. holds_key = 1 marks a keyed delivery that failed under
-- onFailure: block: the later deliveries of its key wait until it is resubmitted or skipped.
ALTER TABLE deliveries ADD COLUMN order_key TEXT;
ALTER TABLE deliveries ADD COLUMN order_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN holds_key INTEGER NOT NULL DEFAULT 0;
-- The heads of a keyed subscription's groups: one probe per candidate delivery. Only keyed
-- deliveries are in it, so a subscription without ordering pays nothing for it.
CREATE INDEX deliveries_key_open ON deliveries(subscription_id, order_epoch, order_key, event_seq)
    WHERE order_key IS NOT NULL AND (state IN ('pending', 'in_flight') OR holds_key = 1);
-- Deliveries holding their key (few): the subscription's blocked keys, retention's check.
CREATE INDEX deliveries_holding ON deliveries(subscription_id) WHERE holds_key = 1;
