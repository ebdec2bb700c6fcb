-- Voiding a voucher (issue 17): after a launch, support finds bots and voids their
-- vouchers. `voided` is stored (unlike `expired`, which is derived from expires_at):
-- it is an admin's decision, taken once, and every redemption must see it.
-- `stock_returned`: the void moved the voucher's unit of stock from `issued` back to
-- `remaining` (optional), so `total_stock = remaining + issued` still holds while the
-- voucher row stays; the audit counts `issued` as the rows less these.
-- The status check is replaced by a wider one. The new checks are added NOT VALID
-- (no scan under this migration's ACCESS EXCLUSIVE lock, which would hold every grant
-- for as long as the scan of a table of millions takes); 0015 validates them under a
-- lock that lets grants and redemptions run.
ALTER TABLE vouchers DROP CONSTRAINT vouchers_status_check;
ALTER TABLE vouchers
    ADD COLUMN voided_at timestamptz,
    ADD COLUMN stock_returned boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT vouchers_status_check
        CHECK (status IN ('issued', 'redeemed', 'voided')) NOT VALID,
    ADD CONSTRAINT vouchers_voided_at_check
        CHECK ((status = 'voided') = (voided_at IS NOT NULL)) NOT VALID,
    ADD CONSTRAINT vouchers_stock_returned_check
        CHECK (NOT stock_returned OR status = 'voided') NOT VALID;

-- A voucher's redemptions (the support lookup lists them, rolled back ones too) and a
-- campaign's (the redemptions export): only the live one was indexed by voucher.
CREATE INDEX redemptions_voucher_idx ON redemptions (voucher_id);
