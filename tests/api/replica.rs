//! Reads from a read replica (`READ_DATABASE_URL`) against a real primary and
//! streaming standby whose replay the test pauses: wallets and the public list are
//! read from the replica while it is fresh, a user's own effects are read back from
//! the primary, campaign snapshots always come from the primary, and a replica
//! behind by more than the window is not read at all.
//!
//! Needs the pair `scripts/replica up` starts (scripts/check starts it, then runs
//! `cargo test --test api replica -- --ignored`).

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, PgConnection, migrate::MigrateDatabase};

use crate::helpers::{ADMIN_TOKEN, JWT_SECRET, RedisMode, TestApp, token, unique};

const WINDOW: Duration = Duration::from_secs(4);

fn urls() -> (String, String) {
    let db = "voucherd_replica_test";
    let primary = std::env::var("REPLICA_PRIMARY_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5461/postgres".into());
    let standby = std::env::var("REPLICA_STANDBY_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5462/postgres".into());
    let on = |url: &str| format!("{}/{db}", url.rsplit_once('/').unwrap().0);
    (on(&primary), on(&standby))
}

/// Polls `check` every 50 ms until it holds, failing after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn standby_has(standby: &str, sql: &str) -> bool {
    let Ok(mut c) = PgConnection::connect(standby).await else {
        return false;
    };
    sqlx::query_scalar::<_, bool>(sql)
        .fetch_one(&mut c)
        .await
        .unwrap_or(false)
}

async fn wallet(app: &TestApp, user: &str) -> Vec<Value> {
    let (status, body) = app.get_json("/v1/me/vouchers", Some(&token(user))).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn listed(app: &TestApp, campaign: &str) -> bool {
    let (_, body) = app.get_json("/v1/campaigns", None).await;
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == campaign)
}

#[tokio::test]
#[ignore = "needs the primary and standby of scripts/replica up"]
async fn reads_go_to_a_fresh_replica_except_a_users_own_and_never_to_a_lagging_one() {
    let (primary, standby) = urls();
    let _ = sqlx::Postgres::force_drop_database(&primary).await;
    let settings = voucherd::settings_from_lookup(|k| match k {
        "DATABASE_URL" => Some(primary.clone()),
        "JWT_SECRET" => Some(JWT_SECRET.into()),
        "ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        _ => None,
    })
    .unwrap();
    voucherd::migrate(&settings).await.unwrap();
    // a previous run may have left the replay paused
    let mut replica = PgConnection::connect(&standby.replace("voucherd_replica_test", "postgres"))
        .await
        .expect("the standby of scripts/replica up");
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut replica)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the standby has the schema",
        || standby_has(&standby, "SELECT count(*) >= 0 FROM campaigns"),
    )
    .await;
    let window = format!("{}s", WINDOW.as_secs());
    let app = TestApp::spawn_with(
        RedisMode::Real,
        &[
            ("DATABASE_URL", primary.as_str()),
            ("READ_DATABASE_URL", standby.as_str()),
            ("REPLICA_READ_AFTER_WRITE", window.as_str()),
        ],
    )
    .await;

    // Before the pause: bob holds a voucher the standby has replayed, and his own
    // window has passed, so his wallet may be read from the standby.
    let bob = unique("bob");
    let before = app.campaign(10, 1).await;
    assert_eq!(
        app.grab(&token(&bob), &before, &unique("k")).await.status,
        201
    );
    let bob_sql = format!("SELECT count(*) = 1 FROM vouchers WHERE user_id = '{bob}'");
    eventually(
        Duration::from_secs(10),
        "the standby has bob's voucher",
        || standby_has(&standby, &bob_sql),
    )
    .await;
    tokio::time::sleep(WINDOW + Duration::from_millis(500)).await; // bob's window passes

    // The replay stops: from now on the standby falls behind.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut replica)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the replay is paused", || {
        standby_has(
            &standby,
            "SELECT pg_get_wal_replay_pause_state() = 'paused'",
        )
    })
    .await;
    let paused = Instant::now();
    // a change bob did not make: his voucher expires, on the primary only
    let mut p = PgConnection::connect(&primary).await.unwrap();
    sqlx::query("UPDATE vouchers SET expires_at = now() WHERE user_id = $1")
        .bind(&bob)
        .execute(&mut p)
        .await
        .unwrap();
    let after = app.campaign(10, 1).await;

    // Campaign snapshots come from the primary: the standby has never seen `after`.
    let alice = unique("alice");
    let g = app.grab(&token(&alice), &after, &unique("k")).await;
    assert_eq!(g.status, 201, "{:?}", g.body);
    // alice's own effect is read back from the primary at once
    let mine = wallet(&app, &alice).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["campaign_id"], after.as_str());
    // bob's wallet and the public list come from the (still fresh enough) standby
    let his = wallet(&app, &bob).await;
    assert_eq!(his[0]["status"], "issued", "read from the standby: {his:?}");
    assert!(
        !listed(&app, &after).await,
        "the standby's list lacks `after`"
    );
    assert!(
        paused.elapsed() < WINDOW,
        "the checks above ran within the window (a slow machine: rerun)"
    );

    // Once the standby is behind by more than the window, nothing reads it.
    eventually(
        WINDOW * 3,
        "bob's wallet is read from the primary",
        || async { wallet(&app, &bob).await[0]["status"] == "expired" },
    )
    .await;
    eventually(WINDOW * 3, "the list is read from the primary", || {
        listed(&app, &after)
    })
    .await;
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut replica)
        .await
        .unwrap();
}
