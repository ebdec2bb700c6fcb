-- Validates the checks 0014 added NOT VALID. VALIDATE CONSTRAINT scans the table under
-- SHARE UPDATE EXCLUSIVE, which lets grants, redemptions and voids run meanwhile; its
-- own migration, so 0014's ACCESS EXCLUSIVE lock is not held during the scan.
ALTER TABLE vouchers VALIDATE CONSTRAINT vouchers_status_check;
ALTER TABLE vouchers VALIDATE CONSTRAINT vouchers_voided_at_check;
ALTER TABLE vouchers VALIDATE CONSTRAINT vouchers_stock_returned_check;
