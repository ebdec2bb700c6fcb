-- no-transaction
-- 0016's index on events (type, seq) added a tenth index entry to every grant (its
-- voucher.issued event): measured by loadtest/bench at 256 connections, Postgres
-- spent 75 µs of CPU per grant with it. Every index entry a grant writes must earn
-- its place, and voucher.issued, dense along seq, needs no index to be found: 0018
-- indexes the other types only. Dropped CONCURRENTLY so the outbox keeps writing.
DROP INDEX CONCURRENTLY IF EXISTS events_type_seq_idx;
