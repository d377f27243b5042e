-- Until when a holder fenced by an operator's takeover may still be sending (PostgreSQL's
-- clock). A takeover stores it; it outlives the taker's own lease, so that a subscription taken
-- over (to pause it, say) and released at once is neither claimed nor taken over again by a
-- third node that would send while the fenced holder's request may still be in flight.
ALTER TABLE sub_cursor ADD COLUMN quiet_until timestamptz;
