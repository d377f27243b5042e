-- The outcome of an attempt as one statement: the delivery's new state, the attempt row, and the
-- next delivery of the subscription marked in flight. Inserting into this view runs the trigger
-- below for each row, and one statement is atomic on its own, so the journal writer records a
-- run of attempt outcomes in a single round trip to SQLite, without BEGIN and COMMIT: the
-- commit that sits between two deliveries of one subscription (see src/journal/batch.rs).
CREATE VIEW attempt_outcomes AS SELECT
    NULL AS delivery_id, NULL AS n, NULL AS started_at, NULL AS duration_ms,
    NULL AS status_code, NULL AS error_kind, NULL AS error, NULL AS response_snippet,
    NULL AS transform_log, NULL AS new_state, NULL AS budget_used, NULL AS next_at,
    NULL AS updated_at, NULL AS next_id, NULL AS next_n, NULL AS next_started_at
WHERE 0;

CREATE TRIGGER attempt_outcomes_insert INSTEAD OF INSERT ON attempt_outcomes
BEGIN
    -- A delivery deleted with its subscription while the attempt ran has nothing left to record.
    INSERT OR REPLACE INTO attempts (delivery_id, n, started_at, duration_ms, status_code,
        error_kind, error, response_snippet, transform_log)
    SELECT NEW.delivery_id, NEW.n, NEW.started_at, NEW.duration_ms, NEW.status_code,
        NEW.error_kind, NEW.error, NEW.response_snippet, NEW.transform_log
    WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = NEW.delivery_id);
    UPDATE deliveries SET state = NEW.new_state, attempts = NEW.n,
        budget_used = NEW.budget_used, next_at = NEW.next_at, started_at = NULL,
        last_status = NEW.status_code, last_error = NEW.error, updated_at = NEW.updated_at
    WHERE id = NEW.delivery_id;
    UPDATE deliveries SET state = 'in_flight', attempts = NEW.next_n,
        started_at = NEW.next_started_at, next_at = NULL, updated_at = NEW.next_started_at
    WHERE NEW.next_id IS NOT NULL AND id = NEW.next_id AND state IN ('pending', 'in_flight');
END;
