-- A per-minute rollup of attempts for the dashboard's statistics (the overview, the sparklines):
-- one row per subscription, minute and duration (to two significant digits), kept up to date by
-- a trigger on every attempt recorded, whichever statement records it. The overview then reads
-- at most a row per subscription, minute and duration of the window instead of every attempt.
-- Rows older than two days are pruned by retention. An attempt row replaced in place (the
-- writer's INSERT OR REPLACE of the same delivery and n) counts again: statistics, not a ledger.
CREATE TABLE attempt_minutes (
    subscription_id TEXT NOT NULL,
    minute          INTEGER NOT NULL,  -- started_at / 60000
    duration_ms     INTEGER NOT NULL,  -- rounded down to two significant digits
    succeeded       INTEGER NOT NULL,  -- answered 2xx
    failed          INTEGER NOT NULL,  -- neither 2xx nor a transform's drop nor an interruption
    attempts        INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, minute, duration_ms)
) STRICT, WITHOUT ROWID;
CREATE INDEX attempt_minutes_by_minute ON attempt_minutes(minute);

CREATE TRIGGER attempt_minutes_count AFTER INSERT ON attempts
BEGIN
    INSERT INTO attempt_minutes (subscription_id, minute, duration_ms, succeeded, failed, attempts)
    SELECT d.subscription_id, NEW.started_at / 60000,
        CASE WHEN NEW.duration_ms < 100 THEN NEW.duration_ms
             WHEN NEW.duration_ms < 1000 THEN NEW.duration_ms / 10 * 10
             WHEN NEW.duration_ms < 10000 THEN NEW.duration_ms / 100 * 100
             WHEN NEW.duration_ms < 100000 THEN NEW.duration_ms / 1000 * 1000
             ELSE NEW.duration_ms / 10000 * 10000 END,
        CASE WHEN NEW.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END,
        CASE WHEN NEW.status_code BETWEEN 200 AND 299
             OR NEW.error_kind IN ('dropped', 'interrupted') THEN 0 ELSE 1 END,
        1
    FROM deliveries d WHERE d.id = NEW.delivery_id
    ON CONFLICT (subscription_id, minute, duration_ms) DO UPDATE SET
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        attempts = attempts + 1;
END;

-- The last day's attempts already in the journal.
INSERT INTO attempt_minutes (subscription_id, minute, duration_ms, succeeded, failed, attempts)
SELECT d.subscription_id, a.started_at / 60000,
    CASE WHEN a.duration_ms < 100 THEN a.duration_ms
         WHEN a.duration_ms < 1000 THEN a.duration_ms / 10 * 10
         WHEN a.duration_ms < 10000 THEN a.duration_ms / 100 * 100
         WHEN a.duration_ms < 100000 THEN a.duration_ms / 1000 * 1000
         ELSE a.duration_ms / 10000 * 10000 END AS bucket,
    SUM(CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END),
    SUM(CASE WHEN a.status_code BETWEEN 200 AND 299
             OR a.error_kind IN ('dropped', 'interrupted') THEN 0 ELSE 1 END),
    COUNT(*)
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE a.started_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000
GROUP BY 1, 2, 3;
