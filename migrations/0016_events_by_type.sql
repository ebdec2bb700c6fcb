-- no-transaction
-- The event log's `type` filter (`GET /v1/admin/events?type=`) pages by seq within
-- one type: without this index a rare type among millions of events scans the
-- whole log and runs into the statement timeout. Built CONCURRENTLY, so the outbox
-- keeps taking writes while it builds (hence no transaction around this file).
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_type_seq_idx ON events (type, seq);
