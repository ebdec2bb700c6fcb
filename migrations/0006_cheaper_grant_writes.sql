-- The purge scans idempotency keys by age; rows arrive in time order, so a BRIN
-- index serves it at almost no cost per insert (a B-tree entry per grant was one of
-- the grant path's largest writes).
DROP INDEX idempotency_keys_created_idx;
CREATE INDEX idempotency_keys_created_brin ON idempotency_keys USING brin (created_at);
