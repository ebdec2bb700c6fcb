-- Checkout that cannot overpay. One order could be discounted more than its amount:
-- three vouchers of 50,000 redeemed on one order of 120,000 gave 150,000 off, in turn
-- and racing. An order is its owner's `sub` plus the shop's `order_id`; the row below
-- fixes its amount and currency and is what concurrent redemptions of one order queue
-- on (`SELECT … FOR UPDATE`), so the sum of its active discounts is read and extended
-- by one redemption at a time (src/checkout.rs decides, src/redemptions.rs writes).
CREATE TABLE orders (
    owner      text        NOT NULL,
    order_id   text        NOT NULL,
    amount     bigint      NOT NULL CHECK (amount > 0),
    currency   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, order_id)
);
-- Orders redeemed before this migration, each as first seen.
INSERT INTO orders (owner, order_id, amount, currency, created_at)
SELECT DISTINCT ON (user_id, order_id) user_id, order_id, order_amount, currency, created_at
FROM redemptions
ORDER BY user_id, order_id, created_at;

-- The active redemptions of one order, summed at every redemption.
CREATE INDEX redemptions_active_order_idx ON redemptions (user_id, order_id) WHERE status = 'active';

-- How many vouchers of one campaign one order may take (default one), and an
-- absolute expiry beside (or instead of) the relative one; the earlier wins. Constant
-- defaults and nullable columns: adding them rewrites nothing.
ALTER TABLE campaigns
    ADD COLUMN max_per_order integer NOT NULL DEFAULT 1
        CONSTRAINT campaigns_max_per_order_check CHECK (max_per_order BETWEEN 1 AND 100),
    ADD COLUMN voucher_expires_at timestamptz,
    ALTER COLUMN valid_for_seconds DROP NOT NULL,
    ADD CONSTRAINT campaigns_voucher_expiry_given
        CHECK (valid_for_seconds IS NOT NULL OR voucher_expires_at IS NOT NULL),
    ADD CONSTRAINT campaigns_voucher_expires_after_ends
        CHECK (voucher_expires_at IS NULL OR voucher_expires_at > ends_at);
