-- voucherd core schema: campaigns, vouchers, per-user claim counters and
-- idempotency records. Postgres is the only source of truth; every invariant that
-- can be stated as a constraint is stated here so that no code path can break it.

CREATE TABLE campaigns (
    id                uuid PRIMARY KEY,
    name              text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    total_stock       bigint      NOT NULL CHECK (total_stock BETWEEN 1 AND 1000000000),
    -- `remaining` and `issued` are counters kept in the same row update as the
    -- grant, so invariant 1 (total_stock = remaining + issued) is a row CHECK.
    remaining         bigint      NOT NULL CONSTRAINT campaigns_remaining_non_negative CHECK (remaining >= 0),
    issued            bigint      NOT NULL DEFAULT 0 CHECK (issued >= 0),
    redeemed          bigint      NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    per_user_limit    integer     NOT NULL CHECK (per_user_limit BETWEEN 1 AND 100),
    starts_at         timestamptz NOT NULL,
    ends_at           timestamptz NOT NULL,
    paused            boolean     NOT NULL DEFAULT false,
    -- Voucher terms are immutable after creation: caches may keep them forever.
    discount          jsonb       NOT NULL,
    min_order_amount  bigint      NOT NULL CHECK (min_order_amount >= 0),
    valid_for_seconds integer     NOT NULL CHECK (valid_for_seconds BETWEEN 60 AND 31536000),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_stock_balance CHECK (total_stock = remaining + issued),
    CONSTRAINT campaigns_ends_after_starts CHECK (ends_at > starts_at),
    CONSTRAINT campaigns_redeemed_le_issued CHECK (redeemed <= issued)
);

-- One row per (campaign, user): the per-user limit is enforced by a conditional
-- upsert on this row, which serialises only that user's concurrent grabs.
CREATE TABLE user_claims (
    campaign_id uuid    NOT NULL REFERENCES campaigns (id),
    user_id     text    NOT NULL,
    claimed     integer NOT NULL CHECK (claimed >= 1),
    PRIMARY KEY (campaign_id, user_id)
);

CREATE TABLE vouchers (
    id               uuid        PRIMARY KEY,
    code             text        NOT NULL UNIQUE,
    campaign_id      uuid        NOT NULL REFERENCES campaigns (id),
    user_id          text        NOT NULL,
    -- `expired` is never stored: it is derived from expires_at at read time, so no
    -- sweeper lag can make a voucher usable after its expiry.
    status           text        NOT NULL DEFAULT 'issued' CHECK (status IN ('issued', 'redeemed')),
    discount         jsonb       NOT NULL,
    min_order_amount bigint      NOT NULL,
    issued_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    redeemed_at      timestamptz,
    order_id         text,
    CHECK ((status = 'redeemed') = (redeemed_at IS NOT NULL AND order_id IS NOT NULL))
);
CREATE INDEX vouchers_user_idx ON vouchers (user_id, id DESC);
CREATE INDEX vouchers_campaign_user_idx ON vouchers (campaign_id, user_id);

-- An idempotency record is the key's claim and the stored response. It is inserted
-- and completed in the same transaction as the effect, so a committed row always
-- carries its response; a concurrent duplicate blocks on the unique index until
-- the first transaction ends.
CREATE TABLE idempotency_keys (
    scope         text        NOT NULL,
    key           text        NOT NULL,
    fingerprint   bytea       NOT NULL,
    status_code   smallint,
    response_body bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
