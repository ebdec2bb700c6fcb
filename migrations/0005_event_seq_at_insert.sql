-- Event numbers without a sequencer. `seq` is now taken at insert from the inserting
-- transaction's id (high bits) and a per-event ordinal (low 20 bits), and readers only
-- return events whose transaction id is below the oldest transaction still running
-- (`pg_snapshot_xmin`). Any transaction that can still commit has an id at least that
-- large, so its events sort after everything already returned: a reader paging by
-- `seq` never skips one. This replaces rewriting every event row after commit, which
-- cost a second heap tuple and index entries per grant.
DROP INDEX events_unsequenced_idx;
DROP INDEX events_due_idx;
CREATE SEQUENCE events_ordinal;
-- Events written before this migration keep their numbers (all smaller than any new one).
UPDATE events SET seq = s.n FROM (
    SELECT id, (SELECT COALESCE(MAX(seq), 0) FROM events) + row_number() OVER (ORDER BY pos) AS n
    FROM events WHERE seq IS NULL) s
WHERE events.id = s.id;
ALTER TABLE events DROP COLUMN pos;
ALTER TABLE events
    ALTER COLUMN seq SET DEFAULT ((pg_current_xact_id()::text::bigint << 20) | (nextval('events_ordinal') & 1048575)),
    ALTER COLUMN seq SET NOT NULL;
CREATE INDEX events_due_idx ON events (next_attempt_at) WHERE delivery = 'pending';
