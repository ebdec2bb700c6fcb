-- Voucher lifecycle (redemptions and their rollback) and the transactional outbox.

-- `redeemed` is counted from the rows (through the partial index below) rather than
-- kept on the campaign row: a counter there would make every checkout queue on the
-- same hot row as the grants.
ALTER TABLE campaigns DROP CONSTRAINT campaigns_redeemed_le_issued;
ALTER TABLE campaigns DROP COLUMN redeemed;

ALTER TABLE vouchers ADD COLUMN redemption_id uuid;
CREATE INDEX vouchers_campaign_redeemed_idx ON vouchers (campaign_id) WHERE status = 'redeemed';

CREATE TABLE redemptions (
    id              uuid        PRIMARY KEY,
    voucher_id      uuid        NOT NULL REFERENCES vouchers (id),
    user_id         text        NOT NULL,
    order_id        text        NOT NULL,
    order_amount    bigint      NOT NULL CHECK (order_amount > 0),
    currency        text        NOT NULL,
    discount_amount bigint      NOT NULL CHECK (discount_amount >= 0 AND discount_amount <= order_amount),
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'rolled_back')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    rolled_back_at  timestamptz,
    CHECK ((status = 'rolled_back') = (rolled_back_at IS NOT NULL))
);
-- Invariant 4 as an index: a voucher has at most one live redemption, whatever races.
CREATE UNIQUE INDEX redemptions_one_live_per_voucher ON redemptions (voucher_id) WHERE status = 'active';
CREATE INDEX redemptions_user_idx ON redemptions (user_id);

-- The outbox. Each effect inserts its event in its own transaction. `seq` is not
-- taken at insert time: transactions commit out of order, so a reader paging by an
-- insert-time number could pass a gap that fills in later. A single sequencer
-- (src/events.rs) numbers only committed events, so `seq` order is the order in
-- which events became visible and a reader never skips one.
CREATE TABLE events (
    id              uuid        PRIMARY KEY,
    pos             bigint      GENERATED ALWAYS AS IDENTITY,
    seq             bigint      UNIQUE,
    type            text        NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    data            jsonb       NOT NULL,
    -- Webhook delivery state: at least once, with backoff, then dead-lettered.
    delivery        text        NOT NULL DEFAULT 'pending' CHECK (delivery IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz
);
CREATE INDEX events_unsequenced_idx ON events (pos) WHERE seq IS NULL;
CREATE INDEX events_due_idx ON events (next_attempt_at) WHERE delivery = 'pending' AND seq IS NOT NULL;
CREATE INDEX events_dead_idx ON events (seq) WHERE delivery = 'dead';
