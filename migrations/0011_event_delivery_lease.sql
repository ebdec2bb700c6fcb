-- Each claim of an event for webhook delivery takes a lease of its own, and only the
-- holder of the current lease records the outcome. Before this, a dispatcher whose
-- lease had run out (a delivery slower than the lease, a paused process) could record
-- its late outcome over the one of the dispatcher that claimed the event after it: an
-- event delivered by the second marked dead by the first, or the reverse.
-- Nullable, with no default: adding it rewrites nothing, whatever the table's size.
ALTER TABLE events ADD COLUMN lease uuid;
