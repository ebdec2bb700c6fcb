//! The gauges `/metrics` renders for on-call: the stock of live campaigns (bounded,
//! and gone with the campaign), the outbox, the grant writers and their queues, the
//! pool, and the Postgres and Redis gates.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ADMIN_TOKEN, RedisMode, TestApp, campaign_body, lock_waiters, metric, metrics_text, token,
    unique,
};

/// The samples of one family: (labels as written, value).
fn samples(text: &str, family: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(family)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            (labels.is_empty() || labels.starts_with('{'))
                .then(|| (labels.to_string(), value.parse().unwrap()))
        })
        .collect()
}

/// Polls `/metrics` (the figures from Postgres are read every second here) until
/// `done` holds, and returns that text; fails after 20 s.
async fn metrics_until(app: &TestApp, what: &str, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(app).await;
        if done(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/metrics never showed {what}:\n{text}");
}

async fn create(app: &TestApp, name: &str, stock: i64, starts_at: Option<&str>) -> String {
    let mut body = campaign_body(stock, 1);
    body["name"] = name.into();
    if let Some(at) = starts_at {
        body["starts_at"] = at.into();
    }
    let resp = app
        .admin_post("/v1/admin/campaigns", &unique("create"), &body)
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Per-campaign series: only live campaigns, at most `METRICS_CAMPAIGNS_MAX` of them
/// (the most recently opened), names escaped; a campaign that ends loses its series
/// at the next read, and the count of live campaigns stays exact beyond the cap.
#[tokio::test]
async fn live_campaign_stock_is_bounded_escaped_and_ends_with_the_campaign() {
    let app = TestApp::spawn_isolated(
        "gauges_stock",
        &[
            ("METRICS_DB_INTERVAL", "1s"),
            ("METRICS_CAMPAIGNS_MAX", "2"),
        ],
    )
    .await;
    let oldest = create(&app, "oldest", 10, None).await;
    let middle = create(&app, r#"11.11 "50k" \ off"#, 10, None).await;
    let newest = create(&app, "newest – ưu đãi", 5, None).await;
    let upcoming = create(&app, "upcoming", 10, Some("2098-01-01T00:00:00Z")).await;
    let granted = app.grab(&token(&unique("u")), &newest, &unique("k")).await;
    assert_eq!(granted.status, StatusCode::CREATED);

    let text = metrics_until(&app, "the grant in the stock", |t| {
        samples(t, "voucherd_campaign_stock_remaining")
            .iter()
            .any(|(l, v)| l.contains(&newest) && *v == 4.0)
    })
    .await;
    let remaining = samples(&text, "voucherd_campaign_stock_remaining");
    assert_eq!(
        remaining.len(),
        2,
        "capped at METRICS_CAMPAIGNS_MAX: {text}"
    );
    assert!(remaining.iter().any(|(l, v)| *l
        == format!(r#"{{campaign="{middle}",name="11.11 \"50k\" \\ off"}}"#)
        && *v == 10.0));
    assert!(remaining.iter().any(|(l, _)| l.contains("ưu đãi")));
    for absent in [&oldest, &upcoming] {
        assert!(!text.contains(absent.as_str()), "{absent} listed:\n{text}");
    }
    assert_eq!(samples(&text, "voucherd_campaign_stock_total").len(), 2);
    assert_eq!(metric(&app, "voucherd_campaigns_live").await, 3.0);
    // No WEBHOOK_URL: nothing drains the outbox, so no backlog is reported.
    assert!(!text.contains("voucherd_outbox_pending_events "), "{text}");
    assert!(text.contains("voucherd_outbox_dead_letters 0"));

    // The newest ends (as if its ends_at passed): its series go, the next most
    // recently opened takes its place.
    sqlx::query(
        "UPDATE campaigns SET starts_at = now() - interval '1 hour', ends_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&newest)
    .execute(&app.db)
    .await
    .unwrap();
    let text = metrics_until(&app, "the ended campaign gone", |t| {
        !t.contains(newest.as_str()) && t.contains(oldest.as_str())
    })
    .await;
    assert_eq!(
        samples(&text, "voucherd_campaign_stock_remaining").len(),
        2,
        "{text}"
    );
    assert_eq!(metric(&app, "voucherd_campaigns_live").await, 2.0);
}

/// With a webhook that never answers and one attempt allowed, every event ends as
/// a dead letter: the backlog and the dead letters are what Postgres holds.
#[tokio::test]
async fn outbox_backlog_and_dead_letters_follow_the_events_table() {
    let app = TestApp::spawn_isolated(
        "gauges_outbox",
        &[
            ("METRICS_DB_INTERVAL", "1s"),
            ("WEBHOOK_URL", "http://127.0.0.1:1/hook"),
            ("WEBHOOK_SECRET", "gauges-webhook-secret-0123456789"),
            ("WEBHOOK_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    for _ in 0..3 {
        create(&app, "outbox", 1, None).await;
    }
    let text = metrics_until(&app, "three dead letters", |t| {
        t.contains("voucherd_outbox_dead_letters 3\n")
    })
    .await;
    assert_eq!(samples(&text, "voucherd_outbox_pending_events").len(), 1);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE delivery = 'dead'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(dead, 3);
    let listed = app.admin_get("/v1/admin/webhooks/dead-letters").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    let text = metrics_until(&app, "an empty backlog", |t| {
        t.contains("voucherd_outbox_pending_events 0\n")
    })
    .await;
    assert!(
        text.contains("voucherd_outbox_oldest_due_seconds 0\n"),
        "{text}"
    );
}

/// Grabs held behind a locked campaign row: the two writer slots of the campaign
/// commit (and hold their connections), the rest wait in its admission queue, and
/// once the row is free every one of them is granted and the gauges fall to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_and_queue_gauges_follow_held_grabs() {
    use sqlx::Connection;
    let url = crate::helpers::isolated_database("gauges_writers").await;
    let app = TestApp::spawn_with(RedisMode::None, &[("DATABASE_URL", &url)]).await;
    let campaign = app.campaign(100, 1).await;
    assert_eq!(
        metric(&app, "voucherd_grab_writer_connections_max").await,
        5.0
    );
    assert_eq!(metric(&app, "voucherd_db_pool_max_connections").await, 20.0);

    let mut side = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut held = side.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM campaigns WHERE id = $1::uuid FOR UPDATE")
        .bind(&campaign)
        .execute(&mut *held)
        .await
        .unwrap();
    let fire = |n: usize| {
        (0..n)
            .map(|_| {
                let (app, campaign) = (app.clone(), campaign.clone());
                tokio::spawn(async move {
                    app.grab(&token(&unique("u")), &campaign, &unique("k"))
                        .await
                })
            })
            .collect::<Vec<_>>()
    };
    // One batch per writer slot of the campaign (GRAB_WRITERS=2), each on the lock.
    let mut grabs = fire(1);
    lock_waiters(&url, "voucherd", 1).await;
    grabs.extend(fire(1));
    lock_waiters(&url, "voucherd", 2).await;
    grabs.extend(fire(3));
    let text = metrics_until(&app, "three queued grabs", |t| {
        t.contains("voucherd_grab_queue_depth 3\n")
    })
    .await;
    assert!(
        text.contains("voucherd_grab_batches_committing 2\n"),
        "{text}"
    );
    assert!(
        text.contains("voucherd_grab_writer_connections 2\n"),
        "{text}"
    );
    assert!(text.contains("voucherd_grab_queue_campaigns 1\n"), "{text}");
    let in_use = samples(&text, "voucherd_db_pool_connections")
        .into_iter()
        .find(|(l, _)| l.contains("in_use"))
        .unwrap()
        .1;
    assert!(in_use >= 2.0, "{text}");
    assert!(metric(&app, "voucherd_grab_commit_longest_seconds").await > 0.0);
    held.rollback().await.unwrap();
    for g in grabs {
        assert_eq!(g.await.unwrap().status, StatusCode::CREATED);
    }
    let text = metrics_until(&app, "idle writers", |t| {
        t.contains("voucherd_grab_batches_committing 0\n")
            && t.contains("voucherd_grab_writer_connections 0\n")
    })
    .await;
    assert!(text.contains("voucherd_grab_queue_depth 0\n"), "{text}");
    assert!(text.contains("voucherd_grab_queue_oldest_wait_seconds 0\n"));
}

/// The gates: Postgres unreachable turns `voucherd_postgres_up` to 0 (and requests
/// that need it are refused); a dead Redis opens the breaker, `voucherd_redis_up` 0;
/// without REDIS_URL there is no Redis gauge at all.
#[tokio::test]
async fn postgres_and_redis_gates_are_reported() {
    let down = TestApp::spawn_with(
        RedisMode::None,
        &[(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/voucherd_nowhere",
        )],
    )
    .await;
    let text = metrics_until(&down, "Postgres down", |t| {
        t.contains("voucherd_postgres_up 0\n")
    })
    .await;
    assert!(!text.contains("voucherd_redis_up"), "{text}");
    let refused = down
        .client
        .get(down.url("/v1/admin/events"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    let app = TestApp::spawn_with(RedisMode::Dead, &[]).await;
    assert_eq!(metric(&app, "voucherd_postgres_up").await, 1.0);
    assert_eq!(metric(&app, "voucherd_redis_up").await, 1.0);
    let campaign = app.campaign(5, 1).await;
    // A public read goes to Redis first; the dead port fails it and opens the
    // breaker for a second, inside which /metrics is read.
    let view = app
        .client
        .get(app.url(&format!("/v1/campaigns/{campaign}")))
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), StatusCode::OK);
    assert_eq!(metric(&app, "voucherd_redis_up").await, 0.0);
    let errors: f64 = samples(&metrics_text(&app).await, "voucherd_redis_errors_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(errors >= 1.0);
}

/// Hostile input cannot reach the text format: a campaign name is free text, yet
/// every line of `/metrics` stays one sample or comment, whatever quotes,
/// backslashes or braces the name carries.
#[tokio::test]
async fn a_hostile_campaign_name_cannot_break_the_metrics_text() {
    let app = TestApp::spawn_isolated("gauges_hostile", &[("METRICS_DB_INTERVAL", "1s")]).await;
    let name = r#"x"} 1 voucherd_postgres_up{a="\"#;
    let id = create(&app, name, 3, None).await;
    let text = metrics_until(&app, "the hostile campaign", |t| t.contains(id.as_str())).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("voucherd_campaign_stock_remaining{") && l.contains(&id))
        .unwrap();
    assert_eq!(
        line,
        format!(
            r#"voucherd_campaign_stock_remaining{{campaign="{id}",name="x\"}} 1 voucherd_postgres_up{{a=\"\\"}} 3"#
        )
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("voucherd_postgres_up"))
            .count(),
        1
    );
    // A NUL byte never gets that far: the name is refused as input.
    let mut body = campaign_body(1, 1);
    body["name"] = json!("nul\u{0}name");
    let resp = app
        .admin_post("/v1/admin/campaigns", &unique("create"), &body)
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
