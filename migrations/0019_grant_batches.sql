-- grant_batches: every grant, written by one call per batch (one transaction, one
-- commit) that may span several campaigns, and writing no copy of the voucher it
-- grants (issue 20). Replaces `grant_batch` (0013), one campaign a call.
--
-- Measured (loadtest/bench, 256 connections), against grant_batch:
-- - With 50 campaigns live, grant_batch committed batches of ~5 grabs and Postgres
--   spent 148 µs of CPU per grant against 58 on one hot campaign (0.16x against
--   0.28x the /healthz ceiling). Batches across campaigns (with the writers' cap on
--   batches written at once, src/grab/writer.rs) brought it to 63 µs and 0.28x.
-- - The campaigns of a batch are judged and decremented in one statement each: a
--   first version ran two per campaign, and a profile showed Postgres re-reading the
--   campaigns table's CHECK constraints for every statement (`stringToNode` under
--   `ExecConstraints`, 5% of its time) and starting an executor for each (10%).
-- - Per grant, the key's record carried the 201 body (~350 bytes) and the
--   voucher.issued event carried it again with the holder (~400 bytes of jsonb,
--   parsed on the way in). Now the key's record names its voucher (`voucher_id`, body
--   NULL) and the event's id is its voucher's id (data NULL); both are rebuilt from
--   the voucher row as they were at grant time (status issued) by the code that built
--   them (`VoucherRow::issued_body`, `VoucherRow::issued_event`). WAL per grant 2,763
--   -> 2,142 bytes. Records and events written before keep their copies and are read
--   as they are.
--
-- Locks are taken in one order by every batch: keys (sorted), then per-user rows
-- (sorted by campaign, then user), then campaign rows (sorted by id), so two batches
-- never wait on each other in a cycle. A batch of several campaigns waits at most
-- 200 ms for each of their rows; a row held longer (a stalled transaction on one
-- campaign) is left out: that campaign's grabs in this batch are undone and reported
-- `stalled` (503, nothing recorded, retried with the same key), so one stalled
-- campaign never holds the other campaigns' grabs. A batch of one campaign waits as
-- `grant_batch` does (its grabs wait for their outcome).
--
-- Inputs: one element per grab (`p_campaign_of` is the grab's 1-based position in
-- the per-campaign arrays), one per campaign (`p_campaigns`, `p_limits`,
-- `p_discounts`, `p_min_orders`, `p_sold_out_ids`). Output: one word per grab:
-- granted, taken (its key is recorded: replay), busy (its key is held by another
-- transaction), limit_reached, stalled, or why its campaign refused it (sold_out,
-- paused, scheduled, ended).
--
-- Rolling upgrade: `grant_batch` stays for instances of the previous release, but
-- they cannot read a key record without a body or an event without data; drain them
-- before this runs (migrations/README.md). A later migration drops `grant_batch`.
ALTER TABLE idempotency_keys ADD COLUMN voucher_id uuid;
ALTER TABLE events ALTER COLUMN data DROP NOT NULL;

CREATE FUNCTION grant_batches(
    p_campaign_of    integer[],
    p_scopes         text[],
    p_keys           text[],
    p_fingerprints   bytea[],
    p_ids            uuid[],
    p_codes          text[],
    p_users          text[],
    p_issued_at      timestamptz[],
    p_expires_at     timestamptz[],
    p_campaigns      uuid[],
    p_limits         integer[],
    p_discounts      jsonb[],
    p_min_orders     bigint[],
    p_sold_out_ids   uuid[],
    p_issued_type    text,
    p_sold_out_type  text,
    OUT o_outcomes   text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
    v_states    text[];
    v_open      integer[];
    v_reserved  integer[] := '{}';
    v_busy      integer[] := '{}';
    v_eligible  integer[] := '{}';
    v_granted   integer[] := '{}';
    v_wanted    integer[];
    v_n         integer[];
    v_locked    uuid[] := '{}';
    v_stalled   integer[] := '{}';
    v_late_ids    uuid[];
    v_late_c      uuid[];
    v_late_users  text[];
    v_drop_scopes text[];
    v_drop_keys   text[];
    v_started   timestamptz;
    v_i         bigint;
    v_c         record;
BEGIN
    -- 0. Each campaign as committed now, without a lock: grabs on one that cannot
    --    grant write nothing (their key is looked up so a retry is replayed).
    --    Ended counts only 5 s (the statement bound) after `ends_at`, as in 0010.
    SELECT array_agg(CASE WHEN k.id IS NULL OR now() >= k.ends_at + interval '5 seconds' THEN 'ended'
                          WHEN now() >= k.ends_at THEN 'open'
                          WHEN now() < k.starts_at THEN 'scheduled'
                          WHEN k.paused THEN 'paused'
                          WHEN k.remaining <= 0 THEN 'sold_out'
                          ELSE 'open' END ORDER BY c.i)
      INTO v_states
      FROM unnest(p_campaigns) WITH ORDINALITY AS c(id, i)
      LEFT JOIN campaigns k ON k.id = c.id;
    SELECT array_agg(CASE WHEN v_states[g.c] = 'open' THEN NULL
                          WHEN EXISTS (SELECT 1 FROM idempotency_keys ik
                                        WHERE ik.scope = g.s AND ik.key = g.k) THEN 'taken'
                          ELSE v_states[g.c] END ORDER BY g.i)
      INTO o_outcomes
      FROM unnest(p_campaign_of, p_scopes, p_keys) WITH ORDINALITY AS g(c, s, k, i);
    SELECT coalesce(array_agg(g.i::integer ORDER BY g.i), '{}')
      INTO v_open
      FROM unnest(p_campaign_of) WITH ORDINALITY AS g(c, i)
     WHERE v_states[g.c] = 'open';
    IF cardinality(v_open) = 0 THEN
        RETURN;
    END IF;

    -- 1. Claim the keys of the grabs on open campaigns, each with its response,
    --    sorted; a key held by another transaction is waited on for 50 ms, then the
    --    keys are claimed one by one within 200 ms and the held ones reported busy.
    BEGIN
        PERFORM set_config('lock_timeout', '50ms', true);
        WITH ins AS (
            INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, voucher_id)
            SELECT s, k, f, 201, v
            FROM unnest(p_scopes, p_keys, p_fingerprints, p_ids) WITH ORDINALITY AS t(s, k, f, v, i)
            WHERE t.i = ANY (v_open)
            ORDER BY s COLLATE "C", k COLLATE "C"
            ON CONFLICT DO NOTHING
            RETURNING scope, key)
        SELECT coalesce(array_agg(g.i::integer ORDER BY g.i), '{}')
          INTO v_reserved
          FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
          JOIN ins ON ins.scope = g.s AND ins.key = g.k;
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('lock_timeout', '5ms', true);
        v_reserved := '{}';
        v_started := clock_timestamp();
        FOR v_i IN SELECT g.i FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
                    WHERE g.i = ANY (v_open)
                    ORDER BY g.s COLLATE "C", g.k COLLATE "C" LOOP
            IF clock_timestamp() - v_started > interval '200 milliseconds' THEN
                v_busy := v_busy || v_i::integer;
                CONTINUE;
            END IF;
            BEGIN
                INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, voucher_id)
                VALUES (p_scopes[v_i], p_keys[v_i], p_fingerprints[v_i], 201, p_ids[v_i])
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    v_reserved := v_reserved || v_i::integer;
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                v_busy := v_busy || v_i::integer;
            END;
        END LOOP;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);

    -- 2. The per-user limit: one conditional upsert per (campaign, user) (a batch
    --    holds at most one grab per user and campaign).
    IF cardinality(v_reserved) > 0 THEN
        WITH reserved AS (
            SELECT p_campaigns[g.c] AS campaign_id, g.u AS user_id, g.i::integer AS i
            FROM unnest(p_campaign_of, p_users) WITH ORDINALITY AS g(c, u, i)
            WHERE g.i = ANY (v_reserved)),
        up AS (
            INSERT INTO user_grants (campaign_id, user_id, granted)
            SELECT campaign_id, user_id, 1 FROM reserved
            ORDER BY campaign_id, user_id COLLATE "C"
            ON CONFLICT (campaign_id, user_id) DO UPDATE SET granted = user_grants.granted + 1
            WHERE user_grants.granted < p_limits[array_position(p_campaigns, user_grants.campaign_id)]
            RETURNING campaign_id, user_id)
        SELECT coalesce(array_agg(r.i ORDER BY r.i), '{}')
          INTO v_eligible
          FROM reserved r JOIN up ON up.campaign_id = r.campaign_id AND up.user_id = r.user_id;
    END IF;

    IF cardinality(v_eligible) > 0 THEN
        -- 3 and 4. Vouchers and their events, for every eligible grab.
        INSERT INTO vouchers (id, code, campaign_id, user_id, discount, min_order_amount,
                              issued_at, expires_at)
        SELECT v.id, v.code, p_campaigns[v.c], v.user_id, p_discounts[v.c], p_min_orders[v.c],
               v.issued_at, v.expires_at
        FROM unnest(p_ids, p_codes, p_users, p_issued_at, p_expires_at, p_campaign_of)
             WITH ORDINALITY AS v(id, code, user_id, issued_at, expires_at, c, i)
        WHERE v.i = ANY (v_eligible);
        INSERT INTO events (id, type)
        SELECT v.id, p_issued_type
        FROM unnest(p_ids) WITH ORDINALITY AS v(id, i)
        WHERE v.i = ANY (v_eligible);

        -- 5. The stock, last: each campaign's row locked in id order, one conditional
        --    decrement by as many as are left, judged against the locked row.
        SELECT array_agg(coalesce(e.n, 0) ORDER BY c.i)
          INTO v_wanted
          FROM unnest(p_campaigns) WITH ORDINALITY AS c(id, i)
          LEFT JOIN (SELECT g.c, count(*)::integer AS n
                       FROM unnest(p_campaign_of) WITH ORDINALITY AS g(c, i)
                      WHERE g.i = ANY (v_eligible) GROUP BY g.c) e ON e.c = c.i;
        v_n := array_fill(0, ARRAY[cardinality(p_campaigns)]);
        IF cardinality(p_campaigns) > 1 THEN
            -- Several campaigns: a row not lockable within 200 ms is left out.
            BEGIN
                PERFORM set_config('lock_timeout', '200ms', true);
                SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') INTO v_locked
                  FROM (SELECT k.id FROM campaigns k
                         WHERE k.id = ANY (p_campaigns) AND v_wanted[array_position(p_campaigns, k.id)] > 0
                         ORDER BY k.id FOR UPDATE) k;
            EXCEPTION WHEN lock_not_available THEN
                PERFORM set_config('lock_timeout', '5ms', true);
                v_locked := '{}';
                FOR v_c IN SELECT c.id FROM unnest(p_campaigns) WITH ORDINALITY AS c(id, i)
                            WHERE v_wanted[c.i] > 0 ORDER BY c.id LOOP
                    BEGIN
                        PERFORM 1 FROM campaigns WHERE id = v_c.id FOR UPDATE;
                        v_locked := v_locked || v_c.id;
                    EXCEPTION WHEN lock_not_available THEN
                        NULL;
                    END;
                END LOOP;
            END;
            PERFORM set_config('lock_timeout', v_lock_timeout, true);
        ELSE
            -- One campaign: its row is waited for as long as the lock bound allows.
            SELECT coalesce(array_agg(k.id), '{}') INTO v_locked
              FROM (SELECT id FROM campaigns WHERE id = p_campaigns[1] FOR UPDATE) k;
        END IF;
        -- Every locked campaign judged and decremented at once (statements per batch,
        -- not per campaign: each statement on a table re-reads its CHECK constraints).
        FOR v_c IN SELECT c.i::integer AS i,
                          CASE WHEN now() >= k.ends_at THEN 'ended'
                               WHEN now() < k.starts_at THEN 'scheduled'
                               WHEN k.paused THEN 'paused'
                               ELSE 'open' END AS state,
                          k.remaining
                     FROM unnest(p_campaigns) WITH ORDINALITY AS c(id, i)
                     JOIN campaigns k ON k.id = c.id
                    WHERE v_wanted[c.i] > 0 AND k.id = ANY (v_locked) LOOP
            v_states[v_c.i] := v_c.state;
            IF v_c.state = 'open' THEN
                v_n[v_c.i] := LEAST(v_c.remaining, v_wanted[v_c.i]);
            END IF;
        END LOOP;
        FOR v_i IN 1 .. cardinality(p_campaigns) LOOP
            IF v_wanted[v_i] > 0 AND NOT p_campaigns[v_i] = ANY (v_locked) THEN
                v_states[v_i] := 'stalled';
            END IF;
        END LOOP;
        WITH taken AS (
            UPDATE campaigns k
               SET remaining = k.remaining - t.n, issued = k.issued + t.n
              FROM unnest(p_campaigns, v_n) AS t(id, n)
             WHERE k.id = t.id AND t.n > 0
            RETURNING k.id, k.remaining, k.total_stock)
        -- The batch that takes the last unit says so, once.
        INSERT INTO events (id, type, data)
        SELECT p_sold_out_ids[array_position(p_campaigns, taken.id)], p_sold_out_type,
               jsonb_build_object('campaign_id', taken.id, 'total_stock', taken.total_stock)
          FROM taken WHERE taken.remaining = 0;

        -- Granted: each campaign's first v_n eligible grabs, in batch order.
        SELECT coalesce(array_agg(x.i ORDER BY x.i), '{}') INTO v_granted
          FROM (SELECT g.i::integer AS i, g.c,
                       row_number() OVER (PARTITION BY g.c ORDER BY g.i) AS r
                  FROM unnest(p_campaign_of) WITH ORDINALITY AS g(c, i)
                 WHERE g.i = ANY (v_eligible)) x
         WHERE x.r <= v_n[x.c];

        -- The rest of the eligible grabs (out of stock, campaign closed, row stalled):
        -- remove their vouchers, events and one count from their users.
        IF cardinality(v_granted) < cardinality(v_eligible) THEN
            SELECT array_agg(v.id), array_agg(p_campaigns[v.c]), array_agg(v.user_id)
              INTO v_late_ids, v_late_c, v_late_users
              FROM unnest(p_ids, p_users, p_campaign_of) WITH ORDINALITY AS v(id, user_id, c, i)
             WHERE v.i = ANY (v_eligible) AND NOT v.i = ANY (v_granted);
            DELETE FROM vouchers WHERE id = ANY (v_late_ids);
            DELETE FROM events WHERE id = ANY (v_late_ids);
            DELETE FROM user_grants u
             USING unnest(v_late_c, v_late_users) AS l(c, usr)
             WHERE u.campaign_id = l.c AND u.user_id = l.usr AND u.granted = 1;
            UPDATE user_grants u SET granted = granted - 1
              FROM unnest(v_late_c, v_late_users) AS l(c, usr)
             WHERE u.campaign_id = l.c AND u.user_id = l.usr;
        END IF;
    END IF;

    -- Refusals record nothing: drop the key of every reserved grab not granted.
    IF cardinality(v_reserved) > cardinality(v_granted) THEN
        SELECT array_agg(g.s), array_agg(g.k)
          INTO v_drop_scopes, v_drop_keys
          FROM unnest(p_scopes, p_keys) WITH ORDINALITY AS g(s, k, i)
         WHERE g.i = ANY (v_reserved) AND NOT g.i = ANY (v_granted);
        DELETE FROM idempotency_keys k
         USING unnest(v_drop_scopes, v_drop_keys) AS r(s, kk)
         WHERE k.scope = r.s AND k.key = r.kk;
    END IF;

    -- Every grab's word. A grab neither reserved nor busy found its key recorded.
    SELECT array_agg(CASE WHEN g.w IS NOT NULL THEN g.w
                          WHEN g.i = ANY (v_busy) THEN 'busy'
                          WHEN NOT g.i = ANY (v_reserved) THEN 'taken'
                          WHEN NOT g.i = ANY (v_eligible) THEN 'limit_reached'
                          WHEN g.i = ANY (v_granted) THEN 'granted'
                          WHEN v_states[g.c] = 'open' THEN 'sold_out'
                          ELSE v_states[g.c] END ORDER BY g.i)
      INTO o_outcomes
      FROM unnest(p_campaign_of, o_outcomes) WITH ORDINALITY AS g(c, w, i);
END;
$$;
