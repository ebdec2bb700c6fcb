-- Keys that the grant path compares thousands of times a second (idempotency keys,
-- user ids, voucher codes) are opaque identifiers, not words: compare them byte by
-- byte. Under the database's default collation (often C.UTF-8 or en_US) every B-tree
-- step and every sort on them went through strcoll; measured in a profile of the grant
-- path as the largest part of Postgres's own CPU after WAL. The order of such keys
-- means nothing to anyone, so nothing observable changes.
ALTER TABLE idempotency_keys
    ALTER COLUMN scope TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C";
ALTER TABLE user_claims ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE vouchers
    ALTER COLUMN code TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE redemptions ALTER COLUMN user_id TYPE text COLLATE "C";

-- The per-campaign index served only the audit, yet (campaign_id, user_id) put each
-- grant's entry at a random place in a large B-tree (a full-page image in the WAL after
-- every checkpoint). Voucher ids are time-ordered (UUIDv7), so (campaign_id, id)
-- appends at the right edge and still serves every per-campaign count.
DROP INDEX vouchers_campaign_user_idx;
CREATE INDEX vouchers_campaign_idx ON vouchers (campaign_id, id);
