-- no-transaction
-- The event log's `type` filter for every type but voucher.issued (admin changes,
-- redemptions, voids: rare among millions of grants' events): one index entry per
-- such event, none per grant. `events::list` states `type <> 'voucher.issued'` in its
-- query, so the planner can use this partial index whatever the parameter.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_rare_type_seq_idx
    ON events (type, seq) WHERE type <> 'voucher.issued';
