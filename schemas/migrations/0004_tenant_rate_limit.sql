-- A tenant's own delivery rate limit (JSON of RateLimit: {"perSecond": .., "burst": ..}), shared by
-- all its subscriptions; NULL: the engine's configured default applies (if any). Reapplied to the
-- in-memory limiters at start-up. See src/ratelimit.rs.
ALTER TABLE tenants ADD COLUMN rate_limit TEXT;
