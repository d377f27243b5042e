-- Retention (src/journal/upkeep.rs) finds the oldest events by acceptance time and the
-- deliveries of an event; replay looks events up by acceptance time as well.
CREATE INDEX events_by_created ON events(created_at);
CREATE INDEX deliveries_by_event ON deliveries(event_seq);
