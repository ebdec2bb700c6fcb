//! The grab under real concurrency: stock, per-user limits and refusals.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Grab, TestApp, tally, token, unique};

/// Fires one grab per user, all at once, and returns the answers.
pub async fn crowd(app: &TestApp, campaign: &str, users: usize) -> Vec<Grab> {
    let run = unique("crowd");
    let tokens: Vec<String> = (0..users).map(|i| token(&format!("{run}-u{i}"))).collect();
    join_all(
        tokens
            .iter()
            .map(|t| async move { app.grab(t, campaign, &unique("k")).await }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_users_share_a_stock_of_one_hundred() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(100, 1).await;
    let grabs = crowd(&app, &campaign, 2000).await;
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
    let app = TestApp::spawn().await;
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
async fn a_sold_out_refusal_succeeds_once_stock_is_added() {
    let app = TestApp::spawn().await;
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
