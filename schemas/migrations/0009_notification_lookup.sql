-- The dashboard's list of the newest operational notifications (events of the system tenant
-- `_hookline`, see src/notify): every one (the admin), or those about one tenant's subscriptions
-- (their workflowId). Partial indexes over the system tenant's events only: an ordinary event
-- is not entered in them, so publishing pays only the check of their WHERE clause. Queries must
-- name the tenant literally, and use the expression word for word, to use them.
CREATE INDEX events_of_system ON events(seq) WHERE tenant_id = '_hookline';
CREATE INDEX events_of_system_by_about ON events(json_extract(body, '$.workflowId'), seq)
    WHERE tenant_id = '_hookline';
