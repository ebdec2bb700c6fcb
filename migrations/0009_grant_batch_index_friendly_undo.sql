-- grant_batch, second version. The first looked up the grabs to undo (those the stock
-- ran out before) and the keys to drop with `WHERE id IN (SELECT p_ids[i] FROM
-- unnest(...))`: planned inside PL/pgSQL without knowing the arrays, those became
-- scans of the whole vouchers, user_claims and idempotency_keys tables with an array
-- subscript per row. Once the tables held a few hundred thousand rows, the batch that
-- sold a campaign out ran past the statement timeout, failed, was retried as another
-- full batch, and failed again. Every lookup now takes the values out of the arrays
-- once and probes the indexes with `= ANY (array)` or a join on an `unnest`.
CREATE OR REPLACE FUNCTION grant_batch(
    p_campaign       uuid,
    p_per_user_limit integer,
    p_discount       jsonb,
    p_min_order      bigint,
    p_scopes         text[],
    p_keys           text[],
    p_fingerprints   bytea[],
    p_bodies         bytea[],
    p_ids            uuid[],
    p_codes          text[],
    p_users          text[],
    p_issued_at      timestamptz[],
    p_expires_at     timestamptz[],
    p_event_ids      uuid[],
    p_events         text[],
    p_issued_type    text,
    p_sold_out_type  text,
    p_sold_out_id    uuid,
    OUT o_claimed    integer[],
    OUT o_eligible   integer[],
    OUT o_granted    integer,
    OUT o_open       boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_wanted      integer;
    v_remaining   bigint;
    v_total       bigint;
    v_late_ids    uuid[];
    v_late_events uuid[];
    v_late_users  text[];
    v_drop_scopes text[];
    v_drop_keys   text[];
BEGIN
    -- 1. Claim the keys, each with its response; a key already recorded (a retry of
    --    a committed grab, or one in flight elsewhere) is skipped. Sorted, so
    --    concurrent batches take key locks in one order.
    WITH ins AS (
        INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, response_body)
        SELECT s, k, f, 201, b
        FROM unnest(p_scopes, p_keys, p_fingerprints, p_bodies) AS t(s, k, f, b)
        ORDER BY s COLLATE "C", k COLLATE "C"
        ON CONFLICT DO NOTHING
        RETURNING scope, key)
    SELECT coalesce(array_agg(g.i::integer ORDER BY g.i), '{}')
      INTO o_claimed
      FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
      JOIN ins ON ins.scope = g.s AND ins.key = g.k;

    -- 2. The per-user limit: one conditional upsert per user (a batch holds at most
    --    one grab per user).
    WITH claimed AS (
        SELECT u.user_id, u.i::integer AS i
        FROM unnest(p_users) WITH ORDINALITY AS u(user_id, i)
        JOIN unnest(o_claimed) AS c(i) ON c.i = u.i),
    up AS (
        INSERT INTO user_claims (campaign_id, user_id, claimed)
        SELECT p_campaign, user_id, 1 FROM claimed
        ORDER BY user_id COLLATE "C"
        ON CONFLICT (campaign_id, user_id) DO UPDATE SET claimed = user_claims.claimed + 1
        WHERE user_claims.claimed < p_per_user_limit
        RETURNING user_id)
    SELECT coalesce(array_agg(claimed.i ORDER BY claimed.i), '{}')
      INTO o_eligible
      FROM claimed JOIN up ON up.user_id = claimed.user_id;

    v_wanted := cardinality(o_eligible);
    o_granted := 0;
    o_open := true;
    IF v_wanted > 0 THEN
        -- 3 and 4. Vouchers and their events, for every eligible grab.
        INSERT INTO vouchers (id, code, campaign_id, user_id, discount, min_order_amount,
                              issued_at, expires_at)
        SELECT v.id, v.code, p_campaign, v.user_id, p_discount, p_min_order,
               v.issued_at, v.expires_at
        FROM unnest(p_ids, p_codes, p_users, p_issued_at, p_expires_at)
             WITH ORDINALITY AS v(id, code, user_id, issued_at, expires_at, i)
        JOIN unnest(o_eligible) AS e(i) ON e.i = v.i;
        INSERT INTO events (id, type, data)
        SELECT v.id, p_issued_type, v.data::jsonb
        FROM unnest(p_event_ids, p_events) WITH ORDINALITY AS v(id, data, i)
        JOIN unnest(o_eligible) AS e(i) ON e.i = v.i;

        -- 5. The stock, last: one conditional decrement by as many as are left. The
        --    WHERE re-checks pause and window against the committed row.
        SELECT remaining, total_stock INTO v_remaining, v_total
          FROM campaigns
         WHERE id = p_campaign AND NOT paused AND starts_at <= now() AND ends_at > now()
           FOR UPDATE;
        IF NOT FOUND THEN
            o_open := false;
        ELSE
            o_granted := LEAST(v_remaining, v_wanted);
            IF o_granted > 0 THEN
                UPDATE campaigns
                   SET remaining = remaining - o_granted, issued = issued + o_granted
                 WHERE id = p_campaign;
            END IF;
            IF o_granted > 0 AND o_granted = v_remaining THEN
                INSERT INTO events (id, type, data)
                VALUES (p_sold_out_id, p_sold_out_type,
                        jsonb_build_object('campaign_id', p_campaign, 'total_stock', v_total));
            END IF;
        END IF;

        -- Grabs the stock ran out before (or all of them, if the campaign was not
        -- open): remove their vouchers, events and one count from their users.
        IF o_granted < v_wanted THEN
            SELECT array_agg(v.id), array_agg(v.event_id), array_agg(v.user_id)
              INTO v_late_ids, v_late_events, v_late_users
              FROM unnest(p_ids, p_event_ids, p_users) WITH ORDINALITY AS v(id, event_id, user_id, i)
              JOIN unnest(o_eligible[o_granted + 1 : v_wanted]) AS l(i) ON l.i = v.i;
            DELETE FROM vouchers WHERE id = ANY (v_late_ids);
            DELETE FROM events WHERE id = ANY (v_late_events);
            DELETE FROM user_claims
             WHERE campaign_id = p_campaign AND user_id = ANY (v_late_users) AND claimed = 1;
            UPDATE user_claims SET claimed = claimed - 1
             WHERE campaign_id = p_campaign AND user_id = ANY (v_late_users);
        END IF;
    END IF;

    -- Refusals record nothing: drop the key of every claimed grab not granted.
    IF cardinality(o_claimed) > o_granted THEN
        SELECT array_agg(g.s), array_agg(g.k)
          INTO v_drop_scopes, v_drop_keys
          FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
          JOIN unnest(o_claimed) AS c(i) ON c.i = g.i
         WHERE NOT g.i = ANY (o_eligible[1 : o_granted]);
        DELETE FROM idempotency_keys k
         USING unnest(v_drop_scopes, v_drop_keys) AS r(s, kk)
         WHERE k.scope = r.s AND k.key = r.kk;
    END IF;
END;
$$;
