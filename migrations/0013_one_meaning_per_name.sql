-- Names with one meaning each (issue 13). "Claim" is the route `/claims` and nothing
-- else: the per-user counter table `user_claims(claimed)` becomes
-- `user_grants(granted)`, and grant_batch's first output, the keys this batch
-- recorded, becomes `o_reserved` (the idempotency store's word for a key taken for a
-- request in flight). The body is 0010's, with those names: this file now holds the
-- live body of grant_batch.
-- Rolling upgrade: instances of the previous release read `user_claims` and
-- `o_claimed`; drain them before this runs (as for 0012). Renames are catalog-only
-- and take an ACCESS EXCLUSIVE lock for an instant.
ALTER TABLE user_claims RENAME TO user_grants;
ALTER TABLE user_grants RENAME COLUMN claimed TO granted;
ALTER INDEX user_claims_pkey RENAME TO user_grants_pkey;
ALTER TABLE user_grants RENAME CONSTRAINT user_claims_claimed_check TO user_grants_granted_check;

DROP FUNCTION grant_batch(uuid, integer, jsonb, bigint, text[], text[], bytea[], bytea[],
                          uuid[], text[], text[], timestamptz[], timestamptz[], uuid[],
                          text[], text, text, uuid);

CREATE FUNCTION grant_batch(
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
    OUT o_reserved    integer[],
    OUT o_eligible   integer[],
    OUT o_granted    integer,
    OUT o_open       boolean,
    OUT o_taken      integer[],
    OUT o_busy       integer[],
    OUT o_state      text)
LANGUAGE plpgsql AS $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
    v_wanted      integer;
    v_remaining   bigint;
    v_total       bigint;
    v_paused      boolean;
    v_starts      timestamptz;
    v_ends        timestamptz;
    v_late_ids    uuid[];
    v_late_events uuid[];
    v_late_users  text[];
    v_drop_scopes text[];
    v_drop_keys   text[];
    v_started     timestamptz;
    v_i           bigint;
BEGIN
    o_reserved := '{}';
    o_eligible := '{}';
    o_granted := 0;
    o_taken := '{}';
    o_busy := '{}';

    -- 0. The campaign as committed now, without a lock: if it cannot grant, nothing
    --    is written; keys already recorded are reported so they are replayed.
    SELECT remaining, paused, starts_at, ends_at INTO v_remaining, v_paused, v_starts, v_ends
      FROM campaigns WHERE id = p_campaign;
    -- Ended counts here only 5 s (the statement bound) after `ends_at`: a
    -- transaction that began before it may still hold one of these keys uncommitted
    -- and grant it; inside that margin the keys are reserved as usual, and the locked
    -- row below gives the reason.
    o_state := CASE WHEN NOT FOUND OR now() >= v_ends + interval '5 seconds' THEN 'ended'
                    WHEN now() >= v_ends THEN 'open'
                    WHEN now() < v_starts THEN 'scheduled'
                    WHEN v_paused THEN 'paused'
                    WHEN v_remaining <= 0 THEN 'sold_out'
                    ELSE 'open' END;
    IF o_state <> 'open' THEN
        o_open := false;
        SELECT coalesce(array_agg(g.i::integer ORDER BY g.i), '{}')
          INTO o_taken
          FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
          JOIN idempotency_keys ik ON ik.scope = g.s AND ik.key = g.k;
        RETURN;
    END IF;
    o_open := true;

    -- 1. Reserve the keys, each with its response; a key already recorded (a retry of
    --    a committed grab) is skipped. Sorted, so concurrent batches take key locks in
    --    one order. A key held by another open transaction is waited on for 50 ms at
    --    most (a committing batch takes a few); past that, the keys are reserved one
    --    by one and the held ones reported busy.
    BEGIN
        PERFORM set_config('lock_timeout', '50ms', true);
        WITH ins AS (
            INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, response_body)
            SELECT s, k, f, 201, b
            FROM unnest(p_scopes, p_keys, p_fingerprints, p_bodies) AS t(s, k, f, b)
            ORDER BY s COLLATE "C", k COLLATE "C"
            ON CONFLICT DO NOTHING
            RETURNING scope, key)
        SELECT coalesce(array_agg(g.i::integer ORDER BY g.i), '{}')
          INTO o_reserved
          FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
          JOIN ins ON ins.scope = g.s AND ins.key = g.k;
    EXCEPTION WHEN lock_not_available THEN
        -- Key by key, in the same order, each waiting 5 ms at most, and within a
        -- budget of 200 ms in all: past it the remaining keys are reported busy
        -- rather than let a batch full of held keys run into the statement timeout.
        PERFORM set_config('lock_timeout', '5ms', true);
        o_reserved := '{}';
        v_started := clock_timestamp();
        FOR v_i IN SELECT g.i FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
                    ORDER BY g.s COLLATE "C", g.k COLLATE "C" LOOP
            IF clock_timestamp() - v_started > interval '200 milliseconds' THEN
                o_busy := o_busy || v_i::integer;
                CONTINUE;
            END IF;
            BEGIN
                INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, response_body)
                VALUES (p_scopes[v_i], p_keys[v_i], p_fingerprints[v_i], 201, p_bodies[v_i])
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    o_reserved := o_reserved || v_i::integer;
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                o_busy := o_busy || v_i::integer;
            END;
        END LOOP;
        SELECT coalesce(array_agg(c ORDER BY c), '{}') INTO o_reserved FROM unnest(o_reserved) AS c;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    SELECT coalesce(array_agg(g.i::integer ORDER BY g.i), '{}')
      INTO o_taken
      FROM generate_subscripts(p_keys, 1) AS g(i)
     WHERE NOT g.i = ANY (o_reserved) AND NOT g.i = ANY (o_busy);

    -- 2. The per-user limit: one conditional upsert per user (a batch holds at most
    --    one grab per user).
    WITH reserved AS (
        SELECT u.user_id, u.i::integer AS i
        FROM unnest(p_users) WITH ORDINALITY AS u(user_id, i)
        JOIN unnest(o_reserved) AS c(i) ON c.i = u.i),
    up AS (
        INSERT INTO user_grants (campaign_id, user_id, granted)
        SELECT p_campaign, user_id, 1 FROM reserved
        ORDER BY user_id COLLATE "C"
        ON CONFLICT (campaign_id, user_id) DO UPDATE SET granted = user_grants.granted + 1
        WHERE user_grants.granted < p_per_user_limit
        RETURNING user_id)
    SELECT coalesce(array_agg(reserved.i ORDER BY reserved.i), '{}')
      INTO o_eligible
      FROM reserved JOIN up ON up.user_id = reserved.user_id;

    v_wanted := cardinality(o_eligible);
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

        -- 5. The stock, last: one conditional decrement by as many as are left,
        --    judged against the locked, committed row.
        SELECT remaining, total_stock, paused, starts_at, ends_at
          INTO v_remaining, v_total, v_paused, v_starts, v_ends
          FROM campaigns WHERE id = p_campaign
           FOR UPDATE;
        o_state := CASE WHEN now() >= v_ends THEN 'ended'
                        WHEN now() < v_starts THEN 'scheduled'
                        WHEN v_paused THEN 'paused'
                        ELSE 'open' END;
        IF o_state <> 'open' THEN
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
            DELETE FROM user_grants
             WHERE campaign_id = p_campaign AND user_id = ANY (v_late_users) AND granted = 1;
            UPDATE user_grants SET granted = granted - 1
             WHERE campaign_id = p_campaign AND user_id = ANY (v_late_users);
        END IF;
    END IF;

    -- Refusals record nothing: drop the key of every reserved grab not granted.
    IF cardinality(o_reserved) > o_granted THEN
        SELECT array_agg(g.s), array_agg(g.k)
          INTO v_drop_scopes, v_drop_keys
          FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
          JOIN unnest(o_reserved) AS c(i) ON c.i = g.i
         WHERE NOT g.i = ANY (o_eligible[1 : o_granted]);
        DELETE FROM idempotency_keys k
         USING unnest(v_drop_scopes, v_drop_keys) AS r(s, kk)
         WHERE k.scope = r.s AND k.key = r.kk;
    END IF;
END;
$$;
