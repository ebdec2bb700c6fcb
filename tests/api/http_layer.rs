//! What the HTTP layer answers by itself, before or around the routes: a body not
//! declared as JSON is refused, as problem+json like every other error.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, campaign_body, token, unique};

async fn problem(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, resp.json().await.unwrap())
}

/// Only a body declared as JSON is read as JSON: a form is 415 and changes nothing,
/// while JSON with parameters, a `+json` type and an empty untyped body are served.
#[tokio::test]
async fn a_body_not_declared_as_json_is_415_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let key = unique("form");
    let post = |content_type: Option<&'static str>, body: String| {
        let mut req = app
            .client
            .post(app.url("/v1/admin/campaigns"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", &key)
            .body(body);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        req.send()
    };
    let refused = [
        (
            Some("application/x-www-form-urlencoded"),
            "name=x&total_stock=5",
        ),
        (None, r#"{"name": "untyped"}"#),
        (Some("text/plain"), r#"{"name": "plain"}"#),
    ];
    for (content_type, body) in refused {
        let (status, p) = problem(post(content_type, body.to_string()).await.unwrap()).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("unsupported_media_type")
            ),
            "{content_type:?}"
        );
    }
    let alice = token(&unique("alice"));
    let grab = app
        .client
        .post(app.url(&format!("/v1/campaigns/{campaign}/claims")))
        .bearer_auth(&alice)
        .header("Idempotency-Key", unique("grab"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    let (status, _) = problem(grab).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (_, wallet) = app.get_json("/v1/me/vouchers", Some(&alice)).await;
    assert_eq!(wallet["items"], json!([]));

    // The refused key was never recorded: sent again as JSON, it creates afresh.
    let resp = post(
        Some("application/json; charset=utf-8"),
        campaign_body(5, 1).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers().get("idempotent-replayed").is_none());

    let patched = app
        .client
        .patch(app.url(&format!("/v1/admin/campaigns/{campaign}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", unique("patch"))
        .header("content-type", "Application/Merge-Patch+JSON")
        .body(r#"{"paused": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    app.admin_patch(&campaign, json!({"paused": false})).await;

    // No body, no Content-Type: the grab needs neither.
    let g = app.grab(&alice, &campaign, &unique("grab")).await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 1);
}
