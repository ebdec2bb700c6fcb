//! The live launch view over real HTTP: server-sent frames of one campaign, their
//! counters moving with grabs, one shared frame for every watcher, and the usual
//! admin refusals.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, TestApp, token, unique};

/// A reader of one SSE response: whole `frame` events, parsed.
struct Frames {
    resp: reqwest::Response,
    buf: String,
}

impl Frames {
    async fn open(app: &TestApp, campaign: &str) -> Frames {
        let resp = app
            .client
            .get(app.url(&format!("/v1/admin/campaigns/{campaign}/live")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Frames {
            resp,
            buf: String::new(),
        }
    }

    /// The next frame; fails the test if none comes within 10 s.
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let event: String = self.buf.drain(..end + 2).collect();
                    if !event.lines().any(|l| l == "event: frame") {
                        continue; // a keep-alive comment
                    }
                    let data = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .collect::<String>();
                    return serde_json::from_str(&data).unwrap();
                }
                let chunk = self.resp.chunk().await.unwrap().expect("the stream ended");
                self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("a frame within 10 s")
    }

    /// Frames until `done` holds of the sums of their counts; returns the sums.
    async fn until(&mut self, done: impl Fn(&Value, &Totals) -> bool) -> (Value, Totals) {
        let mut t = Totals::default();
        loop {
            let f = self.next().await;
            t.grants += f["grants"].as_u64().unwrap();
            t.requests += f["requests"].as_u64().unwrap();
            for (code, n) in f["refusals"].as_object().unwrap() {
                *t.refusals.entry(code.clone()).or_default() += n.as_u64().unwrap();
            }
            if done(&f, &t) {
                return (f, t);
            }
        }
    }
}

#[derive(Default, Debug)]
struct Totals {
    grants: u64,
    requests: u64,
    refusals: std::collections::BTreeMap<String, u64>,
}

#[tokio::test]
async fn the_live_view_counts_this_instances_grabs_and_shows_postgres_stock() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 3).await;
    let mut frames = Frames::open(&app, &campaign).await;
    let first = frames.next().await;
    assert_eq!(first["campaign"]["remaining"], 5);
    assert_eq!(first["campaign"]["status"], "active");
    assert_eq!(first["postgres"], "ok");
    assert!(first["instance"].as_str().is_some_and(|s| !s.is_empty()));

    let alice = token(&unique("alice"));
    for i in 0..4 {
        let g = app
            .grab(&alice, &campaign, &format!("live-grab-{i}-{campaign}"))
            .await;
        assert_eq!(g.status, if i < 3 { 201 } else { 409 }, "{:?}", g.body);
    }
    let (last, totals) = frames
        .until(|f, t| f["campaign"]["remaining"] == 2 && t.requests >= 4)
        .await;
    assert_eq!(totals.grants, 3, "{totals:?}");
    assert_eq!(totals.refusals.get("limit_reached"), Some(&1), "{totals:?}");
    assert_eq!(last["campaign"]["issued"], 3);
    assert_eq!(last["errors_5xx"], 0);
}

#[tokio::test]
async fn every_watcher_gets_the_same_frames() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let mut a = Frames::open(&app, &campaign).await;
    let mut b = Frames::open(&app, &campaign).await;
    // one ticker per campaign: the two streams carry the same frames, made once
    let (fa, fb) = (a.next().await, b.next().await);
    let (fa, fb) = if fa["at"] == fb["at"] {
        (fa, fb)
    } else if fa["at"].as_str() < fb["at"].as_str() {
        (a.next().await, fb)
    } else {
        (fa, b.next().await)
    };
    assert_eq!(fa, fb);
    // a watcher leaving does not stop the frames of the one still watching
    drop(b);
    let next = a.next().await;
    assert_ne!(next["at"], fa["at"]);
}

#[tokio::test]
async fn the_live_view_refuses_users_strangers_and_unknown_campaigns() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let path = format!("/v1/admin/campaigns/{campaign}/live");
    let (status, body) = app.get_json(&path, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, body) = app.get_json(&path, Some(&token("mallory"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let missing = format!("/v1/admin/campaigns/{}/live", uuid::Uuid::now_v7());
    let (status, body) = app.get_json(&missing, Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("campaign_not_found"))
    );
    let (status, _) = app
        .get_json("/v1/admin/campaigns/not%00a-uuid/live", Some(ADMIN_TOKEN))
        .await;
    assert!(status.is_client_error(), "{status}");
}
