//! Launch night: many campaigns at once, a hot row held past the request timeout, a
//! burst past the queue bound, the herd before opening and after sell-out, and one
//! client's key in flight on two instances.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::helpers::{
    Grab, RedisMode, TestApp, assert_jittered_retry_after, campaign_opening, database_url,
    isolated_database, metric, tally, token, unique,
};

/// A side transaction of the test's own holding `campaign`'s row, as a long admin
/// transaction or a stalled disk would. Rolling it back releases the row (a dropped
/// one would only roll back on the connection's next use).
async fn hold_row<'c>(conn: &'c mut PgConnection, campaign: &str) -> Transaction<'c, Postgres> {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM campaigns WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(campaign).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until at least `n` of voucherd's backends wait on a lock that the side
/// transaction `blocker` holds (grant batches stuck behind the held row).
async fn until_blocked_by(app: &TestApp, blocker: &mut Transaction<'_, Postgres>, n: i64) {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **blocker)
        .await
        .unwrap();
    for _ in 0..600 {
        // Directly, or behind another waiter in the row's lock queue.
        let waiting: i64 = sqlx::query_scalar(
            "WITH RECURSIVE behind(pid) AS (
                 SELECT $1::int
                 UNION
                 SELECT a.pid FROM pg_stat_activity a JOIN behind b
                     ON b.pid = ANY (pg_blocking_pids(a.pid)))
             SELECT count(*) FROM behind JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'voucherd'",
        )
        .bind(pid)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} voucherd backends ever waited on the held row");
}

/// Waits until at least `n` grabs wait in the writers' queues (behind a plug).
async fn until_queued(app: &TestApp, n: usize) {
    for _ in 0..600 {
        if metric(app, "voucherd_grab_queue_depth").await >= n as f64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} grabs ever queued");
}

async fn side_connection(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap()
}

/// Many more live campaigns than the pool has connections, each with grabs stuck in
/// Postgres: admin reads, a redemption and `/readyz` are still served, because the
/// grant writers together hold at most `GRAB_WRITER_CONNECTIONS` (here 1 of 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_live_campaigns_leave_the_pool_to_everyone_else() {
    let app = TestApp::spawn_with(RedisMode::Real, &[("DATABASE_MAX_CONNECTIONS", "4")]).await;
    // A voucher to redeem later, granted before the stall.
    let shop = app.campaign(10, 1).await;
    let buyer = token(&unique("buyer"));
    let voucher = app.grab(&buyer, &shop, &unique("k")).await;
    assert_eq!(voucher.status, StatusCode::CREATED);
    let code = voucher.body["voucher"]["code"]
        .as_str()
        .unwrap()
        .to_string();

    let mut campaigns = Vec::new();
    for _ in 0..12 {
        campaigns.push(app.campaign(100, 1).await);
    }
    let mut side = Vec::new();
    for _ in &campaigns {
        side.push(side_connection(&database_url()).await);
    }
    let mut held = Vec::new();
    for (conn, c) in side.iter_mut().zip(&campaigns) {
        held.push(hold_row(conn, c).await);
    }
    let grabs: Vec<_> = campaigns
        .iter()
        .flat_map(|c| (0..3).map(move |i| (c.clone(), i)))
        .map(|(c, _)| {
            let app = app.clone();
            tokio::spawn(async move { app.grab(&token(&unique("u")), &c, &unique("k")).await })
        })
        .collect();
    let mut any_blocked = false;
    for _ in 0..600 {
        for tx in held.iter_mut() {
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut **tx)
                .await
                .unwrap();
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'voucherd' AND $1 = ANY (pg_blocking_pids(pid))",
            )
            .bind(pid)
            .fetch_one(&app.db)
            .await
            .unwrap();
            any_blocked |= waiting > 0;
        }
        if any_blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(any_blocked, "no grant batch ever waited on a held row");

    let (status, _) = app
        .get_json(
            &format!("/v1/admin/campaigns/{}", campaigns[0]),
            Some(crate::helpers::ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "admin read during the stall");
    let (status, _) = app.get_json("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "readiness during the stall");
    let redeemed = app
        .user_post(
            &buyer,
            &format!("/v1/vouchers/{code}/redemptions"),
            &unique("r"),
            Some(&json!({"order_id": unique("o"), "order_amount": 300000, "currency": "VND"})),
        )
        .await;
    assert_eq!(redeemed.status, StatusCode::CREATED, "{:?}", redeemed.body);
    let (status, _) = app.get_json("/v1/me/vouchers", Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK, "wallet during the stall");

    for tx in held {
        tx.rollback().await.unwrap();
    }
    for g in join_all(grabs).await {
        let g = g.unwrap();
        assert!(
            g.status == StatusCode::CREATED
                || g.status.is_server_error()
                || g.status == StatusCode::CONFLICT,
            "{} {:?}",
            g.status,
            g.body
        );
    }
    for c in &campaigns {
        app.assert_invariants(c).await;
    }
}

/// The hot row held for longer than `REQUEST_TIMEOUT` while grabs queue behind it:
/// every key answered 5xx changed nothing (sent again after the release, it is
/// evaluated afresh, never replayed), and a grab that committed was never answered
/// 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stall_past_the_request_timeout_never_hides_an_effect_behind_a_5xx() {
    let app = TestApp::spawn_with(
        RedisMode::Real,
        &[("GRAB_BATCH_MAX", "1"), ("REQUEST_TIMEOUT", "12s")],
    )
    .await;
    let campaign = app.campaign(1000, 1).await;
    let mut conn = side_connection(&database_url()).await;
    let mut held = hold_row(&mut conn, &campaign).await;
    let stall_began = Instant::now();
    let users: Vec<(String, String)> = (0..24)
        .map(|_| (token(&unique("u")), unique("k")))
        .collect();
    let first: Vec<_> = users
        .iter()
        .cloned()
        .map(|(t, k)| {
            let (app, c) = (app.clone(), campaign.clone());
            tokio::spawn(async move { app.grab(&t, &c, &k).await })
        })
        .collect();
    until_blocked_by(&app, &mut held, 1).await;
    // Every first attempt is answered while the row is still held: they are all
    // refusals that changed nothing (503: a lock wait bound, or a deadline passed in
    // the queue), never grants.
    let first: Vec<Grab> = join_all(first)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for g in &first {
        assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", g.body);
        assert_jittered_retry_after(g);
    }
    assert!(
        first.iter().any(|g| g.code() == "overloaded"),
        "grabs past their deadline are dropped: {:?}",
        tally(&first)
    );
    // The stall itself: the row stays held past REQUEST_TIMEOUT, so nothing queued
    // can be waiting on the timeout layer to be written later.
    tokio::time::sleep_until((stall_began + Duration::from_secs(13)).into()).await;
    held.rollback().await.unwrap();
    for (t, k) in &users {
        let again = app.grab_settled(t, &campaign, k).await;
        assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
        assert!(!again.replayed, "a key answered 5xx had an effect: {k}");
    }
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], users.len());
}

/// Grabs on `campaign` from fresh users until one is refused by the commit-stall
/// breaker (503 `overloaded`, jittered `Retry-After`). A probe still waiting after
/// 300 ms is queued behind the stall: it is abandoned (its caller gone, it is never
/// written) and the next one sent. Returns the refused user's token and key.
async fn until_refused_by_the_breaker(app: &TestApp, campaign: &str) -> (String, String) {
    let breaker = r#"voucherd_grabs_shed_total{reason="commit_stalled"}"#;
    for _ in 0..100 {
        let before = metric(app, breaker).await;
        let (t, k) = (token(&unique("u")), unique("k"));
        let probe = app.grab(&t, campaign, &k);
        let Ok(g) = tokio::time::timeout(Duration::from_millis(300), probe).await else {
            continue;
        };
        match g.status {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE if metric(app, breaker).await > before => {
                assert_eq!(g.code(), "overloaded", "{:?}", g.body);
                assert_jittered_retry_after(&g);
                return (t, k);
            }
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(g.code(), "overloaded"),
            other => panic!("unexpected {other}: {:?}", g.body),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no grab was refused by the breaker while a commit stalled");
}

/// Commits stalled past `GRAB_COMMIT_STALL` (here campaign rows held; in production a
/// synchronous standby gone stalls every commit the same way). One campaign stalled
/// refuses new grabs on that campaign at once, and only there: another campaign keeps
/// granting. Stalls on two campaigns mean Postgres itself is stuck: grabs on a third
/// campaign, which Postgres could still serve here, are refused at once with 503
/// `overloaded` and record nothing. The grabs inside the stalled commits wait for
/// their outcome and are granted when the stall ends (each stall stays well inside
/// the 3 s lock wait bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_commit_refuses_new_grabs_at_once_and_only_where_it_stalls() {
    let app = TestApp::spawn_with(
        RedisMode::Real,
        &[("GRAB_BATCH_MAX", "1"), ("GRAB_COMMIT_STALL", "200ms")],
    )
    .await;
    let (a, b, c) = (
        app.campaign(1000, 5).await,
        app.campaign(1000, 5).await,
        app.campaign(1000, 5).await,
    );
    let stall = |campaign: &str| {
        let (app, c, t, k) = (
            app.clone(),
            campaign.to_string(),
            token(&unique("u")),
            unique("k"),
        );
        tokio::spawn(async move { app.grab(&t, &c, &k).await })
    };
    let (mut conn_a, mut conn_b) = (
        side_connection(&database_url()).await,
        side_connection(&database_url()).await,
    );

    // One campaign stalled: refused there, once the stall is older than the bound,
    // and never elsewhere.
    let mut held_a = hold_row(&mut conn_a, &a).await;
    let inside = stall(&a);
    until_blocked_by(&app, &mut held_a, 1).await;
    until_refused_by_the_breaker(&app, &a).await;
    let g = app.grab(&token(&unique("u")), &c, &unique("k")).await;
    assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
    assert!(!inside.is_finished(), "answered before its outcome");
    held_a.rollback().await.unwrap();
    let g = inside.await.unwrap();
    assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);

    // Two campaigns stalled: every campaign is refused.
    let mut held_a = hold_row(&mut conn_a, &a).await;
    let mut held_b = hold_row(&mut conn_b, &b).await;
    let inside = [stall(&a), stall(&b)];
    until_blocked_by(&app, &mut held_a, 1).await;
    until_blocked_by(&app, &mut held_b, 1).await;
    let (t, k) = until_refused_by_the_breaker(&app, &c).await;
    assert!(
        inside.iter().all(|g| !g.is_finished()),
        "answered before their outcome"
    );
    held_a.rollback().await.unwrap();
    held_b.rollback().await.unwrap();
    for g in inside {
        let g = g.await.unwrap();
        assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
    }
    // The refused key changed nothing: sent again, it is granted afresh.
    let again = app.grab_settled(&t, &c, &k).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert!(!again.replayed);
    for campaign in [&a, &b, &c] {
        app.assert_invariants(campaign).await;
    }
}

/// A burst beyond `GRAB_QUEUE_MAX` while the campaign's writers are stuck: the excess
/// is refused at once with 503 `overloaded` and a jittered `Retry-After`, and nothing
/// is recorded for it (the same keys grant afresh later).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_past_the_queue_bound_is_shed_with_nothing_recorded() {
    let app = TestApp::spawn_with(
        RedisMode::Real,
        &[("GRAB_BATCH_MAX", "1"), ("GRAB_QUEUE_MAX", "4")],
    )
    .await;
    let campaign = app.campaign(1000, 1).await;
    let mut conn = side_connection(&database_url()).await;
    let mut held = hold_row(&mut conn, &campaign).await;
    // Two grabs take both of the campaign's writer slots, stuck on the row.
    let plugs: Vec<(String, String)> = (0..2).map(|_| (token(&unique("u")), unique("k"))).collect();
    let plug_tasks: Vec<_> = plugs
        .iter()
        .cloned()
        .map(|(t, k)| {
            let (app, c) = (app.clone(), campaign.clone());
            tokio::spawn(async move { app.grab(&t, &c, &k).await })
        })
        .collect();
    until_blocked_by(&app, &mut held, 2).await;
    let shed_before = metric(&app, r#"voucherd_grabs_shed_total{reason="queue_full"}"#).await;
    let burst: Vec<(String, String)> = (0..30)
        .map(|_| (token(&unique("u")), unique("k")))
        .collect();
    let answers: Vec<Grab> = join_all(burst.iter().map(|(t, k)| app.grab(t, &campaign, k))).await;
    let shed: Vec<&Grab> = answers
        .iter()
        .filter(|g| g.code() == "overloaded")
        .collect();
    // At most the queue bound waits; a few more may enter if the plugs' lock waits
    // run out (3 s) during the burst.
    assert!(shed.len() >= 20, "{:?}", tally(&answers));
    for g in &shed {
        assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_jittered_retry_after(g);
    }
    // Refused by the queue bound itself, not by deadlines running out.
    let shed_by_bound =
        metric(&app, r#"voucherd_grabs_shed_total{reason="queue_full"}"#).await - shed_before;
    assert!(
        shed_by_bound >= 20.0,
        "{shed_by_bound} refused by the queue bound"
    );
    // Jittered: twenty refusals at once do not all name the same second.
    let seconds: std::collections::HashSet<u64> =
        shed.iter().map(|g| g.retry_after.as_secs()).collect();
    assert!(seconds.len() > 1, "every Retry-After was {seconds:?}");
    for (_, k) in &burst {
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = $1")
                .bind(k)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(recorded, 0, "a shed grab left its key recorded");
    }
    held.rollback().await.unwrap();
    join_all(plug_tasks).await;
    for (t, k) in burst.iter().chain(&plugs) {
        let again = app.grab_settled(t, &campaign, k).await;
        assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
        assert!(!again.replayed);
    }
    app.assert_invariants(&campaign).await;
}

/// The database's committed and rolled-back transactions so far, read on a
/// connection of its own (closed, so its own transaction is flushed too).
async fn transactions(url: &str) -> i64 {
    let mut conn = side_connection(url).await;
    let n: i64 = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database
         WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    n
}

/// Closes the instance's pool and waits until its backends have exited, which is
/// when Postgres counts their transactions. `close` is repeated while waiting: a
/// connection a writer handed back just as the pool closed can land among the idle
/// ones after `close` emptied them, and only a later `close` ends it.
async fn close_and_flush(app: &TestApp) {
    let url = app
        .db
        .connect_options()
        .get_database()
        .unwrap_or("")
        .to_string();
    let mut probe = side_connection(&database_url()).await;
    for _ in 0..600 {
        app.db.close().await;
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'voucherd'",
        )
        .bind(&url)
        .fetch_one(&mut probe)
        .await
        .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("voucherd's backends never exited");
}

/// The herd before opening and after sell-out is answered from memory: fewer than
/// one Postgres transaction per hundred refusals, counted in the test's own
/// database with the background loops off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_herd_before_opening_and_after_sell_out_stays_out_of_postgres() {
    let url = isolated_database("herd").await;
    let setup = TestApp::spawn_quiet(RedisMode::None, &[("DATABASE_URL", &url)]).await;
    let opens = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let resp = setup
        .admin_post(
            "/v1/admin/campaigns",
            &unique("c"),
            &campaign_opening(100, &opens),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let scheduled = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sold_out = setup.campaign(1, 1).await;
    let holder = token("holder");
    // Unique per run: Redis outlives this test's database, which is made anew.
    let holder_key = unique("holder-key");
    let last = setup.grab(&holder, &sold_out, &holder_key).await;
    assert_eq!(last.status, StatusCode::CREATED);
    close_and_flush(&setup).await;
    let before = transactions(&url).await;
    let herd_began = Instant::now();

    for (redis, name) in [(RedisMode::None, "no Redis"), (RedisMode::Real, "Redis")] {
        let app = TestApp::spawn_quiet(redis, &[("DATABASE_URL", &url)]).await;
        let herd = 2000;
        let answers: Vec<Grab> = join_all((0..herd).map(|i| {
            let c = if i % 2 == 0 { &scheduled } else { &sold_out };
            let app = app.clone();
            async move { app.grab(&token(&format!("fan-{i}")), c, &unique("k")).await }
        }))
        .await;
        let t = tally(&answers);
        assert_eq!(
            t.get(&(409, "campaign_not_active".into())),
            Some(&(herd / 2)),
            "{name}: {t:?}"
        );
        assert_eq!(
            t.get(&(409, "sold_out".into())),
            Some(&(herd / 2)),
            "{name}: {t:?}"
        );
        // The holder's retry is still replayed.
        let again = app.grab(&holder, &sold_out, &holder_key).await;
        assert!(again.replayed && again.bytes == last.bytes, "{name}");
        close_and_flush(&app).await;
    }
    // The one read of `before` itself counts as a transaction. Refusals cost none;
    // what remains is time, not traffic: each of the two campaigns' snapshots is
    // re-read at most twice a second (the in-process cache's 0.5 s), so a herd that
    // a loaded machine answers slowly may see a few more reads, never one per grab.
    let spent = transactions(&url).await - before - 1;
    let rereads = (4.0 * herd_began.elapsed().as_secs_f64()).ceil() as i64;
    assert!(
        spent < 4000 / 100 + rereads,
        "{spent} Postgres transactions for 4,000 refusals in {:?}",
        herd_began.elapsed()
    );
}

/// One instance holds key K uncommitted (here: a side transaction that claimed it as
/// an instance does) while another instance's batch carries K and fifty other
/// users' grabs: those fifty are granted, K is told to retry, and K ends with one
/// voucher.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_held_elsewhere_never_fails_other_users_grabs() {
    // One batch in flight per campaign, so the fifty queue behind a plug and are
    // written together with K.
    let app = TestApp::spawn_with(RedisMode::Real, &[("GRAB_WRITERS", "1")]).await;
    let campaign = app.campaign(1000, 1).await;
    let (k_user, k) = (unique("k-user"), unique("shared-key"));
    let k_token = token(&k_user);

    let mut key_conn = side_connection(&database_url()).await;
    let mut key_tx = key_conn.begin().await.unwrap();
    sqlx::query("INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)")
        .bind(format!("user:{k_user}"))
        .bind(&k)
        .bind(vec![0u8; 32])
        .execute(&mut *key_tx)
        .await
        .unwrap();

    // The plug: a grab stuck on the campaign row while the others queue.
    let mut row_conn = side_connection(&database_url()).await;
    let mut held = hold_row(&mut row_conn, &campaign).await;
    let plug = {
        let (app, c) = (app.clone(), campaign.clone());
        tokio::spawn(async move { app.grab(&token(&unique("plug")), &c, &unique("k")).await })
    };
    until_blocked_by(&app, &mut held, 1).await;
    let others: Vec<_> = (0..50)
        .map(|_| {
            let (app, c) = (app.clone(), campaign.clone());
            tokio::spawn(async move { app.grab(&token(&unique("u")), &c, &unique("k")).await })
        })
        .collect();
    let k_grab = {
        let (app, c, t, k) = (app.clone(), campaign.clone(), k_token.clone(), k.clone());
        tokio::spawn(async move { app.grab(&t, &c, &k).await })
    };
    // All 51 queued behind the plug before the row is released.
    until_queued(&app, 51).await;
    held.rollback().await.unwrap();
    // The plug itself may have given up on the row lock (503): it only held the
    // writer while the others queued.
    let plug = plug.await.unwrap();
    assert!(plug.status == StatusCode::CREATED || plug.status == StatusCode::SERVICE_UNAVAILABLE);
    let answers: Vec<Grab> = join_all(others)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let t = tally(&answers);
    assert_eq!(t.get(&(201, String::new())), Some(&50), "{t:?}");
    let k_first = k_grab.await.unwrap();
    assert_eq!(
        (k_first.status, k_first.code()),
        (StatusCode::CONFLICT, "idempotency_key_in_use"),
        "{:?}",
        k_first.body
    );
    assert!(k_first.retry_after >= Duration::from_secs(1));

    // The other instance's transaction ends without committing: K is K's again.
    key_tx.rollback().await.unwrap();
    let k_final = app.grab_settled(&k_token, &campaign, &k).await;
    assert_eq!(k_final.status, StatusCode::CREATED, "{:?}", k_final.body);
    let held_by_k: i64 =
        sqlx::query_scalar("SELECT count(*) FROM vouchers WHERE campaign_id = $1 AND user_id = $2")
            .bind(Uuid::parse_str(&campaign).unwrap())
            .bind(&k_user)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(held_by_k, 1);
    app.assert_invariants(&campaign).await;
}

/// A batch spans campaigns: one whose row a stalled transaction holds is left out of
/// it after a short wait (its grab refused with a retryable 503 that records
/// nothing), and the other campaigns' grabs in the same batch are granted at once,
/// not held until the stall ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_campaign_in_a_batch_of_several_never_holds_the_others() {
    // One writer for every campaign, so the grabs below queue behind the plug and
    // are written in one batch.
    let app = TestApp::spawn_with(RedisMode::Real, &[("GRAB_WRITER_CONNECTIONS", "1")]).await;
    let (plugged, stalled, free) = (
        app.campaign(1000, 1).await,
        app.campaign(1000, 1).await,
        app.campaign(1000, 1).await,
    );
    let mut plug_conn = side_connection(&database_url()).await;
    let mut plug_row = hold_row(&mut plug_conn, &plugged).await;
    let plug = {
        let (app, c) = (app.clone(), plugged.clone());
        tokio::spawn(async move { app.grab(&token(&unique("plug")), &c, &unique("k")).await })
    };
    until_blocked_by(&app, &mut plug_row, 1).await;

    let mut stall_conn = side_connection(&database_url()).await;
    let stall_row = hold_row(&mut stall_conn, &stalled).await;
    let (s_token, s_key) = (token(&unique("s")), unique("k"));
    let on_stalled = {
        let (app, c, t, k) = (app.clone(), stalled.clone(), s_token.clone(), s_key.clone());
        tokio::spawn(async move { app.grab(&t, &c, &k).await })
    };
    until_queued(&app, 1).await;
    let on_free: Vec<_> = (0..5)
        .map(|_| {
            let (app, c) = (app.clone(), free.clone());
            tokio::spawn(async move { app.grab(&token(&unique("u")), &c, &unique("k")).await })
        })
        .collect();
    until_queued(&app, 6).await;
    plug_row.rollback().await.unwrap();
    assert_eq!(plug.await.unwrap().status, StatusCode::CREATED);

    // The free campaign's grabs are answered while the other row is still held.
    let answers: Vec<Grab> = join_all(on_free)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let t = tally(&answers);
    assert_eq!(t.get(&(201, String::new())), Some(&5), "{t:?}");
    let s = on_stalled.await.unwrap();
    assert_eq!(
        (s.status, s.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "{:?}",
        s.body
    );
    // `overloaded`: left out of the batch after its short wait. A batch of its own
    // would have waited out the lock bound and failed `service_unavailable`.
    assert_jittered_retry_after(&s);

    // Nothing was recorded for it: once the row is free the same key grants afresh.
    stall_row.rollback().await.unwrap();
    let again = app.grab_settled(&s_token, &stalled, &s_key).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert!(!again.replayed);
    for campaign in [&plugged, &stalled, &free] {
        app.assert_invariants(campaign).await;
    }
}
