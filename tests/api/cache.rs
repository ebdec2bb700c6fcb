//! Redis is a cache and nothing more: flushed mid-load, unreachable or absent,
//! every invariant still holds and every request still gets its right answer.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    grab::crowd,
    helpers::{
        ProxyMode, RedisMode, RedisProxy, TestApp, campaign_opening, redis_url, tally, token,
        unique,
    },
};

async fn crowd_keeps_invariants(app: &TestApp) {
    let campaign = app.campaign(50, 1).await;
    let grabs = crowd(app, &campaign, 600).await;
    assert_fifty_of_six_hundred(app, &campaign, &grabs).await;
}

/// A stock of 50 met by 600 users: exactly 50 grants, the rest sold out, audit ok.
async fn assert_fifty_of_six_hundred(
    app: &TestApp,
    campaign: &str,
    grabs: &[crate::helpers::Grab],
) {
    let t = tally(grabs);
    assert_eq!(t.get(&(201, String::new())), Some(&50), "{t:?}");
    assert_eq!(t.get(&(409, "sold_out".into())), Some(&550), "{t:?}");
    let c = app.assert_invariants(campaign).await;
    assert_eq!(c["remaining"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_flushed_again_and_again_during_a_crowd() {
    let app = TestApp::spawn().await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicUsize::new(0));
    let flusher = {
        let (done, flushes) = (done.clone(), flushes.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
                flushes.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    crowd_keeps_invariants(&app).await;
    done.store(true, Ordering::Relaxed);
    flusher.await.unwrap();
    assert!(flushes.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_on_a_closed_port_only_slows_things_down() {
    let app = TestApp::spawn_with(RedisMode::Dead, &[]).await;
    crowd_keeps_invariants(&app).await;
    let ready: serde_json::Value = app.get_json("/readyz", None).await.1;
    assert_eq!(
        ready,
        json!({"status": "degraded", "postgres": "ok", "redis": "down"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_the_in_process_cache_is_enough() {
    let app = TestApp::spawn_with(RedisMode::None, &[]).await;
    crowd_keeps_invariants(&app).await;
}

/// The storefront's list: live and upcoming campaigns, soonest first, each with its
/// status by the server's clock and `server_time` to count down from; a CDN may keep
/// it a second. A campaign that has ended is not listed.
#[tokio::test]
async fn the_public_list_shows_live_and_upcoming_campaigns_with_the_servers_time() {
    let app = TestApp::spawn_isolated("public_list", &[]).await;
    let opens = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let upcoming = app
        .admin_post(
            "/v1/admin/campaigns",
            &unique("c"),
            &campaign_opening(10, &opens),
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let live = app.campaign(3, 1).await;
    let resp = app
        .client
        .get(app.url("/v1/campaigns"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=1");
    let list: serde_json::Value = resp.json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [live.as_str(), upcoming.as_str()], "soonest first");
    assert_eq!(items[0]["status"], "active");
    assert_eq!(items[1]["status"], "scheduled");
    let server_time = chrono::DateTime::parse_from_rfc3339(list["server_time"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(
        (chrono::Utc::now() - server_time).num_seconds().abs() < 5,
        "{server_time}"
    );
    assert_eq!(items[0]["server_time"], list["server_time"]);
    // The single view carries the same clock and cache policy.
    let one = app
        .client
        .get(app.url(&format!("/v1/campaigns/{upcoming}")))
        .send()
        .await
        .unwrap();
    assert_eq!(one.headers()["cache-control"], "public, max-age=1");
    let one: serde_json::Value = one.json().await.unwrap();
    assert!(one["server_time"].is_string());

    // Ended (its end moved to just after its start, in the past): gone from the
    // list once the one-second snapshot has moved on.
    sqlx::query("UPDATE campaigns SET starts_at = now() - interval '2 hours', ends_at = now() - interval '1 hour' WHERE id = $1::uuid")
        .bind(&live)
        .execute(&app.db)
        .await
        .unwrap();
    let mut listed = true;
    for _ in 0..60 {
        let (_, v) = app.get_json("/v1/campaigns", None).await;
        listed = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == live.as_str());
        if !listed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!listed, "an ended campaign is still listed");
}

#[tokio::test]
async fn admin_changes_reach_the_public_view_at_once() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(3, 1).await;
    let public = |app: Arc<TestApp>, id: String| async move {
        let v: serde_json::Value = app.get_json(&format!("/v1/campaigns/{id}"), None).await.1;
        v
    };
    assert_eq!(
        public(app.clone(), campaign.clone()).await["status"],
        "active"
    );
    app.admin_patch(&campaign, json!({"paused": true})).await;
    assert_eq!(
        public(app.clone(), campaign.clone()).await["status"],
        "paused"
    );
    app.admin_patch(&campaign, json!({"paused": false, "add_stock": 2}))
        .await;
    let v = public(app.clone(), campaign.clone()).await;
    assert_eq!(
        (v["status"].as_str(), v["remaining"].as_i64()),
        (Some("active"), Some(5))
    );
    // A stale "active" snapshot never grants beyond stock: Postgres decides.
    let grabs = crowd(&app, &campaign, 20).await;
    assert_eq!(
        grabs
            .iter()
            .filter(|g| g.status == StatusCode::CREATED)
            .count(),
        5
    );
    assert_eq!(
        public(app.clone(), campaign.clone()).await["status"],
        "sold_out"
    );
}

#[tokio::test]
async fn a_second_instance_sharing_redis_grants_only_what_postgres_allows() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn().await;
    let campaign = a.campaign(30, 1).await;
    let run = unique("two");
    let grabs = futures::future::join_all((0..200).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let t = token(&format!("{run}-{i}"));
        let campaign = campaign.clone();
        async move { app.grab(&t, &campaign, &unique("k")).await }
    }))
    .await;
    assert_eq!(
        grabs
            .iter()
            .filter(|g| g.status == StatusCode::CREATED)
            .count(),
        30
    );
    a.assert_invariants(&campaign).await;
}

/// Runs a crowd through a Redis proxy that switches to `fault` once a third of the
/// answers are in, and checks every answer and invariant.
async fn fault_mid_crowd(fault: ProxyMode) {
    let proxy = RedisProxy::start().await;
    let app = TestApp::spawn_with(RedisMode::Url(proxy.url.clone()), &[]).await;
    let campaign = app.campaign(50, 1).await;
    let users = 600;
    let answered = AtomicUsize::new(0);
    let third = tokio::sync::Notify::new();
    let run = unique("fault");
    let crowd = futures::future::join_all((0..users).map(|i| {
        let (app, campaign, answered, third) = (&app, &campaign, &answered, &third);
        let t = token(&format!("{run}-{i}"));
        async move {
            let g = app.grab(&t, campaign, &unique("k")).await;
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == users / 3 {
                third.notify_one();
            }
            g
        }
    }));
    let injector = async {
        third.notified().await;
        proxy.set(fault);
    };
    let (grabs, ()) = tokio::join!(crowd, injector);
    assert_fifty_of_six_hundred(&app, &campaign, &grabs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_crowd() {
    fault_mid_crowd(ProxyMode::Dead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_frozen_mid_crowd() {
    fault_mid_crowd(ProxyMode::Frozen).await;
}
