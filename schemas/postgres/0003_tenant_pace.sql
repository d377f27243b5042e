-- A tenant's rate limit across the cluster (src/policy/cluster_pace.rs explains the design).
-- One row per tenant with a limit: a GCRA whose whole state is tat_us, the theoretical arrival
-- time of the next slot in microseconds since the epoch on PostgreSQL's clock, and the limit it
-- was computed for (a changed limit starts from a fresh, full bucket). No foreign key: a row of
-- a tenant that no longer exists is never read again.
CREATE TABLE tenant_pace (
    tenant_id    text PRIMARY KEY,
    interval_us  bigint NOT NULL,
    burst        integer NOT NULL,
    tat_us       bigint NOT NULL
);

-- Reserves up to p_want consecutive slots of p_tenant's schedule, none further than p_horizon_us
-- ahead of now, and moves the schedule past them, under the row's lock: two nodes never get the
-- same slot. Slot i (0-based) is at max(now_us, first_us + i * interval); first_us is the first
-- slot's earliest time less the burst tolerance (burst - 1 intervals), so it may lie before now.
-- Fewer than p_want granted means the next slot is beyond the horizon.
CREATE FUNCTION hookline_reserve_slots(
    p_tenant text, p_interval_us bigint, p_burst integer, p_want integer, p_horizon_us bigint,
    OUT now_us bigint, OUT first_us bigint, OUT granted integer)
LANGUAGE plpgsql AS $$
DECLARE
    tat bigint;
    tau bigint := (greatest(p_burst, 1) - 1)::bigint * p_interval_us;
    v bigint;
    room bigint;
BEGIN
    INSERT INTO tenant_pace (tenant_id, interval_us, burst, tat_us)
    VALUES (p_tenant, p_interval_us, p_burst, 0)
    ON CONFLICT (tenant_id) DO NOTHING;
    SELECT CASE WHEN t.interval_us = p_interval_us AND t.burst = p_burst THEN t.tat_us ELSE 0 END
      INTO tat FROM tenant_pace t WHERE t.tenant_id = p_tenant FOR UPDATE;
    -- Read after the lock: the reservations of one tenant see a clock that never goes back.
    now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    v := greatest(tat, now_us);
    room := now_us + p_horizon_us + tau - v;
    IF room < 0 THEN
        granted := 0;
    ELSE
        granted := least(p_want::bigint, room / p_interval_us + 1)::integer;
    END IF;
    first_us := v - tau;
    UPDATE tenant_pace t
       SET tat_us = v + granted::bigint * p_interval_us, interval_us = p_interval_us,
           burst = p_burst
     WHERE t.tenant_id = p_tenant;
END
$$;

-- A subscription's own rate limit as its last holder left it at release: no cell before
-- pace_at (PostgreSQL's clock), so the next holder, on any node, keeps the pace rather than
-- starting from a full bucket.
ALTER TABLE sub_cursor ADD COLUMN pace_at timestamptz;
