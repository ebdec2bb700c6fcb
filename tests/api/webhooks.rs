//! Webhook delivery to a real HTTP receiver started inside the test, which checks
//! every signature (with a verifier written here from the Standard Webhooks
//! specification, not voucherd's signing code) and can refuse deliveries on demand.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes, extract::State, http::HeaderMap, http::StatusCode as AxumStatus, routing::post,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{RedisMode, TestApp, token, unique};

/// A secret in the specification's form: `whsec_` and the base64 of the key.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Inbox {
    refuse_first: usize,
    refuse_all: AtomicBool,
    /// Answer every delivery with a redirect to `/landing`.
    redirect_all: AtomicBool,
    /// Requests that reached `/landing` (a followed redirect).
    followed: AtomicUsize,
    calls: AtomicUsize,
    bad_signatures: AtomicUsize,
    accepted: Mutex<Vec<Value>>,
    arrived: tokio::sync::Notify,
    /// Hold the first delivery until `release`, then refuse it (a slow attempt
    /// whose lease runs out); `holding` says it is held.
    hold_first: AtomicBool,
    holding: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if inbox.redirect_all.load(Ordering::SeqCst) {
        return (AxumStatus::FOUND, [("location", "/landing")]).into_response();
    }
    if inbox.hold_first.swap(false, Ordering::SeqCst) {
        inbox.holding.notify_one();
        inbox.release.notified().await;
        return AxumStatus::SERVICE_UNAVAILABLE.into_response();
    }
    accept(&inbox, &headers, &body).into_response()
}

async fn landing(State(inbox): State<Arc<Inbox>>) -> AxumStatus {
    inbox.followed.fetch_add(1, Ordering::SeqCst);
    AxumStatus::OK
}

fn accept(inbox: &Inbox, headers: &HeaderMap, body: &Bytes) -> AxumStatus {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if !verify_standard_webhook(
        SECRET,
        &h("webhook-id"),
        &h("webhook-timestamp"),
        &h("webhook-signature"),
        body,
    ) {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return AxumStatus::UNAUTHORIZED;
    }
    let n = inbox.calls.fetch_add(1, Ordering::SeqCst);
    if n < inbox.refuse_first || inbox.refuse_all.load(Ordering::SeqCst) {
        return AxumStatus::SERVICE_UNAVAILABLE;
    }
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["id"].as_str(), Some(h("webhook-id").as_str()));
    inbox.accepted.lock().unwrap().push(event);
    inbox.arrived.notify_waiters();
    AxumStatus::NO_CONTENT
}

/// Standard Webhooks verification as a receiver implements it from the
/// specification: the key is the base64 after `whsec_`; the signed content is
/// `{webhook-id}.{webhook-timestamp}.{body}`; `webhook-signature` is a space-separated
/// list of `v1,<base64 HMAC-SHA256>`, one of which must match; a timestamp more than
/// five minutes away is refused.
fn verify_standard_webhook(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
) -> bool {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| b64.decode(k).ok())
    else {
        return false;
    };
    let Ok(sent) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - sent).abs() > 300 {
        return false;
    }
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = b64.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

async fn receiver(inbox: Arc<Inbox>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .route("/landing", axum::routing::any(landing))
        .with_state(inbox);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

impl Inbox {
    fn ids(&self) -> HashSet<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits (event-driven, with a deadline) until every id in `want` has arrived.
    async fn wait_for(&self, want: &HashSet<String>) {
        let all = async {
            loop {
                let arrived = self.arrived.notified();
                if want.is_subset(&self.ids()) {
                    return;
                }
                // Also re-check periodically: a notification may land between the
                // check and the await.
                let _ = tokio::time::timeout(Duration::from_millis(200), arrived).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "events never arrived: missing {:?}",
                    want.difference(&self.ids())
                )
            });
    }
}

fn settings(addr: SocketAddr, max_attempts: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WEBHOOK_URL", format!("http://{addr}/hook")),
        ("WEBHOOK_SECRET", SECRET.to_string()),
        ("WEBHOOK_BACKOFF_BASE", "20ms".to_string()),
        ("WEBHOOK_TIMEOUT", "2s".to_string()),
        ("WEBHOOK_MAX_ATTEMPTS", max_attempts.to_string()),
    ]
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Every event id in this test's database, once all effects are done.
async fn all_event_ids(app: &TestApp) -> HashSet<String> {
    sqlx::query_scalar::<_, String>("SELECT id::text FROM events")
        .fetch_all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Some effects of every kind: a campaign, grabs, a redemption and its rollback.
async fn make_effects(app: &TestApp) {
    let campaign = app.campaign(2, 1).await;
    let t = token(&unique("buyer"));
    let g = app.grab(&t, &campaign, &unique("k")).await;
    app.grab(&token(&unique("buyer")), &campaign, &unique("k"))
        .await;
    let code = g.body["voucher"]["code"].as_str().unwrap();
    let body = serde_json::json!({"order_id": "o-1", "order_amount": 300000, "currency": "VND"});
    let r = app
        .user_post(
            &t,
            &format!("/v1/vouchers/{code}/redemptions"),
            &unique("k"),
            Some(&body),
        )
        .await;
    let rid = r.body["redemption"]["id"].as_str().unwrap();
    let back = app
        .user_post(
            &t,
            &format!("/v1/redemptions/{rid}/rollback"),
            &unique("k"),
            None,
        )
        .await;
    assert_eq!(back.status, StatusCode::OK);
    app.admin_patch(&campaign, serde_json::json!({"add_stock": 5}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_failing_three_times_still_gets_every_event_once() {
    let inbox = Arc::new(Inbox {
        refuse_first: 3,
        ..Default::default()
    });
    let addr = receiver(inbox.clone()).await;
    let s = settings(addr, "12");
    let app = TestApp::spawn_isolated("webhook_flaky", &as_refs(&s)).await;
    make_effects(&app).await;
    let want = all_event_ids(&app).await;
    let kinds: HashSet<String> = sqlx::query_scalar("SELECT DISTINCT type FROM events")
        .fetch_all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    inbox.wait_for(&want).await;
    assert_eq!(
        inbox.ids(),
        want,
        "after dropping duplicates, each event exactly once"
    );
    assert!(inbox.calls.load(Ordering::SeqCst) >= want.len() + 3);
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0);
}

/// The first dead-lettered event, waited for (30 s at most).
async fn first_dead_letter(app: &TestApp) -> Value {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let page = app.admin_get("/v1/admin/webhooks/dead-letters").await;
            if let Some(d) = page["items"].as_array().unwrap().first() {
                return d.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no event was ever dead-lettered")
}

/// A receiver that redirects: the redirect is a failed attempt (never followed, so
/// the event is not marked delivered by a GET elsewhere), and the event ends
/// dead-lettered with the 302 as its last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirecting_receiver_is_a_failed_delivery_never_followed() {
    let inbox = Arc::new(Inbox::default());
    inbox.redirect_all.store(true, Ordering::SeqCst);
    let addr = receiver(inbox.clone()).await;
    let s = settings(addr, "3");
    let app = TestApp::spawn_isolated("webhook_redirect", &as_refs(&s)).await;
    app.campaign(1, 1).await;
    let dead = first_dead_letter(&app).await;
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"].as_str().unwrap().contains("302"),
        "{dead}"
    );
    assert_eq!(
        inbox.followed.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_never_accepts_dead_letters_the_event_until_replayed() {
    let inbox = Arc::new(Inbox::default());
    inbox.refuse_all.store(true, Ordering::SeqCst);
    let addr = receiver(inbox.clone()).await;
    let s = settings(addr, "3");
    let app = TestApp::spawn_isolated("webhook_dead", &as_refs(&s)).await;
    let campaign = app.campaign(1, 1).await;
    let dead = first_dead_letter(&app).await;
    assert_eq!(dead["type"], "campaign.created");
    assert_eq!(dead["data"]["campaign"]["id"], campaign.as_str());
    assert_eq!(dead["attempts"], 3);
    assert!(dead["last_error"].as_str().unwrap().contains("503"));
    assert!(inbox.ids().is_empty());

    inbox.refuse_all.store(false, Ordering::SeqCst);
    let id = dead["id"].as_str().unwrap();
    let key = unique("replay");
    let path = format!("/v1/admin/webhooks/dead-letters/{id}/replay");
    let replay = app.admin_post(&path, &key, &serde_json::json!({})).await;
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    inbox.wait_for(&HashSet::from([id.to_string()])).await;
    let page = app.admin_get("/v1/admin/webhooks/dead-letters").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let again = app.admin_post(&path, &key, &serde_json::json!({})).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let unknown = app
        .admin_post(
            "/v1/admin/webhooks/dead-letters/not-a-uuid/replay",
            &unique("k"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_pending_when_voucherd_dies_are_delivered_after_restart() {
    let inbox = Arc::new(Inbox::default());
    inbox.refuse_all.store(true, Ordering::SeqCst);
    let addr = receiver(inbox.clone()).await;
    let s = settings(addr, "100");
    let first = TestApp::spawn_isolated("webhook_restart", &as_refs(&s)).await;
    make_effects(&first).await;
    let want = all_event_ids(&first).await;
    // Wait until delivery has been tried (and refused) for every event, then die.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let untried: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE attempts = 0")
                .fetch_one(&first.db)
                .await
                .unwrap();
            if untried == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("delivery was never attempted");
    first.kill();
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE delivery = 'pending'")
        .fetch_one(&first.db)
        .await
        .unwrap();
    assert_eq!(pending as usize, want.len());

    inbox.refuse_all.store(false, Ordering::SeqCst);
    let url = first
        .db
        .connect_options()
        .get_database()
        .map(str::to_string)
        .unwrap();
    let db_url = format!(
        "{}/{url}",
        crate::helpers::database_url().rsplit_once('/').unwrap().0
    );
    let mut restart = as_refs(&s);
    restart.push(("DATABASE_URL", db_url.as_str()));
    let second = TestApp::spawn_with(RedisMode::None, &restart).await;
    inbox.wait_for(&want).await;
    assert_eq!(inbox.ids(), want);
    drop(second);
}

/// The delivery state of the one event in this test's database.
async fn delivery_state(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT delivery FROM events")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// How many outcomes of expired leases were dropped, from `/metrics`.
async fn stale_outcomes(app: &TestApp) -> f64 {
    crate::helpers::metric(app, "voucherd_webhook_deliveries_total{result=\"stale\"}").await
}

/// A slow attempt whose lease ran out cannot overwrite the outcome of the attempt
/// that leased the event after it: instance A's delivery hangs, the lease expires,
/// instance B delivers it; then A's attempt fails as the last one allowed, and the
/// event stays delivered (before: A marked it dead).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_lease_never_overwrites_a_later_outcome() {
    let inbox = Arc::new(Inbox::default());
    inbox.hold_first.store(true, Ordering::SeqCst);
    let addr = receiver(inbox.clone()).await;
    let mut s = settings(addr, "1");
    s.retain(|(k, _)| *k != "WEBHOOK_TIMEOUT");
    s.push(("WEBHOOK_TIMEOUT", "20s".to_string()));
    let url = crate::helpers::isolated_database("webhook_stale").await;
    s.push(("DATABASE_URL", url.clone()));
    let a = TestApp::spawn_with(RedisMode::None, &as_refs(&s)).await;
    a.campaign(1, 1).await;
    inbox.holding.notified().await;
    // A's lease (20 s + 5 s) runs out now.
    sqlx::query("UPDATE events SET next_attempt_at = now()")
        .execute(&a.db)
        .await
        .unwrap();
    let b = TestApp::spawn_with(RedisMode::None, &as_refs(&s)).await;
    inbox.wait_for(&all_event_ids(&b).await).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while delivery_state(&b).await != "delivered" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("B never recorded its delivery");
    let stale_before = stale_outcomes(&a).await;
    inbox.release.notify_one();
    // A's late failure lands either as a dropped stale outcome or, wrongly, over B's.
    tokio::time::timeout(Duration::from_secs(30), async {
        while stale_outcomes(&a).await == stale_before && delivery_state(&a).await == "delivered" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("A's attempt never ended");
    assert_eq!(delivery_state(&a).await, "delivered");
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0);
}

/// A void is an effect like any other: its `voucher.voided` event, with the admin who
/// voided, goes through the outbox to the webhook, signed.
#[tokio::test]
async fn a_voided_voucher_is_delivered_to_the_webhook_with_its_actor() {
    let inbox = Arc::new(Inbox::default());
    let addr = receiver(inbox.clone()).await;
    let s = settings(addr, "5");
    let app = TestApp::spawn_isolated("voided", &as_refs(&s)).await;
    let campaign = app.campaign(1, 1).await;
    let g = app.grab(&token("bot"), &campaign, &unique("g")).await;
    let code = g.body["voucher"]["code"].as_str().unwrap().to_string();
    let voided = app
        .admin_post(
            &format!("/v1/admin/vouchers/{code}/void"),
            &unique("void"),
            &serde_json::json!({"return_stock": true}),
        )
        .await;
    assert_eq!(voided.status(), StatusCode::OK);
    inbox.wait_for(&all_event_ids(&app).await).await;
    let accepted = inbox.accepted.lock().unwrap().clone();
    let event = accepted
        .iter()
        .find(|e| e["type"] == "voucher.voided")
        .expect("the voucher.voided event was delivered");
    assert_eq!(event["data"]["voucher"]["code"], code.as_str());
    assert_eq!(event["data"]["actor"]["admin"], "admin");
    assert_eq!(event["data"]["campaign"]["remaining"], 1);
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0);
}
