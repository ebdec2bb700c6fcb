//! The grab under real concurrency: stock, per-user limits and refusals.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Grab, RedisMode, TestApp, tally, token, unique};

/// Fires one grab per user, all at once, and returns each one's final answer.
pub(crate) async fn crowd(app: &TestApp, campaign: &str, users: usize) -> Vec<Grab> {
    let run = unique("crowd");
    let tokens: Vec<String> = (0..users).map(|i| token(&format!("{run}-u{i}"))).collect();
    join_all(
        tokens
            .iter()
            .map(|t| async move { app.grab_settled(t, campaign, &unique("k")).await }),
    )
    .await
}

/// Both ways of writing grants must keep every promise: each core test runs twice.
/// The queue bounds are wide enough for a crowd of 2,000 on a loaded machine, so on
/// this healthy database any 503 is a defect, not load shedding.
async fn app_in(mode: &str) -> std::sync::Arc<TestApp> {
    TestApp::spawn_with(
        RedisMode::Real,
        &[
            ("GRAB_MODE", mode),
            ("GRAB_QUEUE_MAX", "100000"),
            ("GRAB_QUEUE_MAX_WAIT", "5s"),
            ("DATABASE_MAX_CONNECTIONS", "40"),
        ],
    )
    .await
}

/// How many 503s the crowd's clients retried. With batched grants none is expected
/// on a healthy database: a batch Postgres refused (say, for a stock decrement off
/// by one) shows here even when the retries end well. One grant per transaction
/// queues 2,000 requests on the pool, whose waits may outlast its acquire bound.
fn unavailable(grabs: &[Grab]) -> usize {
    grabs
        .iter()
        .flat_map(|g| &g.retried)
        .filter(|(status, _)| *status == 503)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_users_share_a_stock_of_one_hundred() {
    stock_of_one_hundred(&*app_in("batched").await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_users_share_a_stock_of_one_hundred_one_grant_per_transaction() {
    stock_of_one_hundred(&*app_in("single").await, false).await;
}

async fn stock_of_one_hundred(app: &TestApp, batched: bool) {
    let campaign = app.campaign(100, 1).await;
    let grabs = crowd(app, &campaign, 2000).await;
    if batched {
        assert_eq!(unavailable(&grabs), 0, "503s on a healthy database");
    }
    let t = tally(&grabs);
    assert_eq!(t.get(&(201, String::new())), Some(&100), "{t:?}");
    assert_eq!(t.get(&(409, "sold_out".into())), Some(&1900), "{t:?}");
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["remaining"], 0);
    assert_eq!(c["issued"], 100);
    assert_eq!(c["status"], "sold_out");
    // Every granted voucher code is distinct.
    let mut codes: Vec<_> = grabs
        .iter()
        .filter(|g| g.status == StatusCode::CREATED)
        .map(|g| g.body["voucher"]["code"].as_str().unwrap().to_string())
        .collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_with_limit_three_gets_exactly_three_of_two_hundred_grabs() {
    limit_three(&*app_in("batched").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_with_limit_three_one_grant_per_transaction() {
    limit_three(&*app_in("single").await).await;
}

async fn limit_three(app: &TestApp) {
    let campaign = app.campaign(1000, 3).await;
    let t = token(&unique("greedy"));
    let grabs =
        join_all((0..200).map(|_| async { app.grab(&t, &campaign, &unique("k")).await })).await;
    let counts = tally(&grabs);
    assert_eq!(counts.get(&(201, String::new())), Some(&3), "{counts:?}");
    assert_eq!(
        counts.get(&(409, "limit_reached".into())),
        Some(&197),
        "{counts:?}"
    );
    let wallet: serde_json::Value = app.get_json("/v1/me/vouchers", Some(&t)).await.1;
    assert_eq!(wallet["items"].as_array().unwrap().len(), 3);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["remaining"], 997);
}

#[tokio::test]
async fn a_paused_refusal_is_not_recorded_and_succeeds_after_resume() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 1).await;
    app.admin_patch(&campaign, json!({"paused": true})).await;
    let t = token(&unique("patient"));
    let key = unique("k");
    let first = app.grab(&t, &campaign, &key).await;
    assert_eq!(
        (first.status, first.code()),
        (StatusCode::CONFLICT, "campaign_not_active")
    );
    app.admin_patch(&campaign, json!({"paused": false})).await;
    let second = app.grab(&t, &campaign, &key).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert!(!second.replayed);
    app.assert_invariants(&campaign).await;
}

#[tokio::test]
async fn a_campaign_paused_behind_the_snapshot_is_refused_by_postgres() {
    paused_behind_the_snapshot(&*app_in("batched").await).await;
}

#[tokio::test]
async fn a_campaign_paused_behind_the_snapshot_is_refused_by_postgres_one_grant_per_transaction() {
    paused_behind_the_snapshot(&*app_in("single").await).await;
}

/// The campaign is paused in Postgres without voucherd hearing of it, so its cached
/// snapshot still says open: the grant's own statement must refuse, write nothing,
/// and leave the key free for after the resume.
async fn paused_behind_the_snapshot(app: &TestApp) {
    let campaign = app.campaign(10, 1).await;
    let early = app
        .grab(&token(&unique("early")), &campaign, &unique("k"))
        .await;
    assert_eq!(early.status, StatusCode::CREATED);
    sqlx::query("UPDATE campaigns SET paused = true WHERE id = $1::uuid")
        .bind(&campaign)
        .execute(&app.db)
        .await
        .unwrap();
    let t = token(&unique("patient"));
    let key = unique("k");
    let refused = app.grab(&t, &campaign, &key).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "campaign_not_active"),
        "{:?}",
        refused.body
    );
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 1);
    app.admin_patch(&campaign, json!({"paused": false})).await;
    let granted = app.grab(&t, &campaign, &key).await;
    assert_eq!(granted.status, StatusCode::CREATED, "{:?}", granted.body);
    assert!(!granted.replayed);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 2);
}

#[tokio::test]
async fn a_sold_out_refusal_succeeds_once_stock_is_added() {
    restock(&*app_in("batched").await).await;
}

#[tokio::test]
async fn a_sold_out_refusal_succeeds_once_stock_is_added_one_grant_per_transaction() {
    restock(&*app_in("single").await).await;
}

async fn restock(app: &TestApp) {
    let campaign = app.campaign(1, 1).await;
    let first_user = token(&unique("early"));
    assert_eq!(
        app.grab(&first_user, &campaign, &unique("k")).await.status,
        StatusCode::CREATED
    );
    let t = token(&unique("late"));
    let key = unique("k");
    let refused = app.grab(&t, &campaign, &key).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "sold_out")
    );
    let c = app.admin_patch(&campaign, json!({"add_stock": 1})).await;
    assert_eq!(c["total_stock"], 2);
    let granted = app.grab(&t, &campaign, &key).await;
    assert_eq!(granted.status, StatusCode::CREATED, "{:?}", granted.body);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(
        (c["issued"].as_i64(), c["remaining"].as_i64()),
        (Some(2), Some(0))
    );
}

#[tokio::test]
async fn the_last_voucher_replays_after_the_campaign_sold_out() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(1, 1).await;
    let t = token(&unique("winner"));
    let key = unique("k");
    let first = app.grab(&t, &campaign, &key).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Another user's refusal teaches the cache that the campaign is sold out.
    let other = app
        .grab(&token(&unique("loser")), &campaign, &unique("k"))
        .await;
    assert_eq!(other.code(), "sold_out");
    let again = app.grab(&t, &campaign, &key).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed);
    assert_eq!(again.bytes, first.bytes);
    // The winner's new key is refused, not granted.
    let extra = app.grab(&t, &campaign, &unique("k")).await;
    assert_eq!(extra.code(), "sold_out");
}

#[tokio::test]
async fn unknown_and_ended_campaigns_are_refused() {
    let app = TestApp::spawn().await;
    let t = token(&unique("u"));
    let missing = app
        .grab(&t, "00000000-0000-7000-8000-000000000000", &unique("k"))
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "campaign_not_found")
    );
    let not_uuid = app.grab(&t, "not-a-uuid", &unique("k")).await;
    assert_eq!(not_uuid.code(), "campaign_not_found");

    let mut body = crate::helpers::campaign_body(5, 1);
    body["starts_at"] = json!("2098-01-01T00:00:00Z");
    let resp = app
        .admin_post("/v1/admin/campaigns", &unique("c"), &body)
        .await;
    let scheduled: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(scheduled["status"], "scheduled");
    let id = scheduled["id"].as_str().unwrap();
    let g = app.grab(&t, id, &unique("k")).await;
    assert_eq!(
        (g.status, g.code()),
        (StatusCode::CONFLICT, "campaign_not_active")
    );
    app.assert_invariants(id).await;
}

/// A batch that cannot commit (here: the campaign row is held by another transaction
/// past the lock bound) fails every grab in it with a retryable 503 and writes
/// nothing; the same keys succeed once the row is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_batch_fails_its_waiters_with_no_effect() {
    for mode in ["batched", "single"] {
        let app = app_in(mode).await;
        let campaign = app.campaign(100, 1).await;
        let id = uuid::Uuid::parse_str(&campaign).unwrap();
        let mut blocker = app.db.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM campaigns WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut *blocker)
            .await
            .unwrap();
        let run = unique("blocked");
        let users: Vec<(String, String)> = (0..20)
            .map(|i| (token(&format!("{run}-{i}")), unique("k")))
            .collect();
        let first = join_all(users.iter().map(|(t, k)| app.grab(t, &campaign, k))).await;
        // Sent and refused by Postgres (`service_unavailable`), or, with batches of
        // one, still queued when their deadline passed (`overloaded`): either way a
        // retryable 503 that wrote nothing.
        for g in &first {
            assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE, "{mode}");
            assert!(
                ["service_unavailable", "overloaded"].contains(&g.code()),
                "{mode}: {:?}",
                g.body
            );
        }
        blocker.rollback().await.unwrap();
        let written: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM vouchers WHERE campaign_id = $1)
                  + (SELECT count(*) FROM user_grants WHERE campaign_id = $1)
                  + (SELECT count(*) FROM idempotency_keys WHERE key = ANY($2))",
        )
        .bind(id)
        .bind(users.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>())
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(written, 0, "{mode}: a failed batch wrote something");
        let retried = join_all(users.iter().map(|(t, k)| app.grab(t, &campaign, k))).await;
        assert!(
            retried
                .iter()
                .all(|g| g.status == StatusCode::CREATED && !g.replayed),
            "{mode}"
        );
        let c = app.assert_invariants(&campaign).await;
        assert_eq!(c["issued"], 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_refused_sold_out_is_granted_the_same_key_after_more_stock() {
    for mode in ["batched", "single"] {
        holder_refused_then_restocked(&*app_in(mode).await).await;
    }
}

/// The holder of the last voucher grabs again with a new key and is refused
/// `sold_out` (a holder's refusal goes through the key lookup, unlike a stranger's);
/// that refusal is not recorded, so after `add_stock` the same key grants.
async fn holder_refused_then_restocked(app: &TestApp) {
    let campaign = app.campaign(1, 2).await;
    let t = token(&unique("holder"));
    let first = app.grab(&t, &campaign, &unique("k")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let key = unique("k");
    let refused = app.grab(&t, &campaign, &key).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "sold_out")
    );
    app.admin_patch(&campaign, json!({"add_stock": 1})).await;
    let again = app.grab_settled(&t, &campaign, &key).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert!(!again.replayed);
    assert_ne!(again.bytes, first.bytes);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_are_never_counted_against_the_rate_limit() {
    for mode in ["batched", "single"] {
        let app = TestApp::spawn_with(
            RedisMode::Real,
            &[("GRAB_MODE", mode), ("RATE_LIMIT_USER", "1")],
        )
        .await;
        let campaign = app.campaign(10, 5).await;
        let t = token(&unique("retrier"));
        let key = unique("k");
        // The grab and its replays at once: only the one fresh grab is counted, so
        // all answer 201 under a limit of one per second.
        let answers = join_all((0..6).map(|_| app.grab(&t, &campaign, &key))).await;
        for g in &answers {
            assert_eq!(g.status, StatusCode::CREATED, "{mode}: {:?}", g.body);
            assert_eq!(g.bytes, answers[0].bytes);
        }
        // And afterwards, with the allowance spent.
        let later = app.grab(&t, &campaign, &key).await;
        assert!(later.replayed, "{mode}: {:?}", later.body);
        let fresh = app.grab(&t, &campaign, &unique("k")).await;
        assert_eq!(fresh.code(), "rate_limited", "{mode}");
    }
}
