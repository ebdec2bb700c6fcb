//! Operations endpoints and cross-cutting HTTP behaviour.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, assert_documented_problem, documented_codes, token, unique};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready: Value = app.get_json("/readyz", None).await.1;
    assert_eq!(ready["status"], "ready");
    let campaign = app.campaign(1, 1).await;
    app.grab(&token(&unique("u")), &campaign, &unique("k"))
        .await;
    app.grab(&token(&unique("u")), &campaign, &unique("k"))
        .await;
    let metrics = crate::helpers::metrics_text(&app).await;
    assert!(
        metrics.contains(r#"voucherd_grabs_total{outcome="granted"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"voucherd_grabs_total{outcome="sold_out"}"#));
    assert!(metrics.contains(r#"route="/v1/campaigns/{id}/claims""#));
    assert!(metrics.contains("voucherd_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get_json("/openapi.json", None).await.1;
    for path in [
        "/v1/admin/campaigns",
        "/v1/admin/campaigns/{id}",
        "/v1/admin/campaigns/{id}/audit",
        "/v1/campaigns/{id}",
        "/v1/campaigns/{id}/claims",
        "/v1/me/vouchers",
        "/v1/me/vouchers/{code}",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }
}

/// A client generator names a method after each operationId: every operation has
/// one, no two share one, and the names clients were built with do not change.
#[tokio::test]
async fn every_operation_has_its_own_stable_operation_id() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get_json("/openapi.json", None).await.1;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            let Some(op) = item.get(method) else { continue };
            operations += 1;
            let at = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at} has no operationId"));
            assert!(
                id.starts_with(|c: char| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{at}: operationId {id:?} is not a camelCase identifier"
            );
            if let Some(other) = seen.insert(id.to_string(), at.clone()) {
                panic!("{at} and {other} share the operationId {id:?}");
            }
        }
    }
    assert!(operations >= 16, "only {operations} operations documented");
    for (id, at) in [
        ("createCampaign", "POST /v1/admin/campaigns"),
        ("listCampaigns", "GET /v1/admin/campaigns"),
        ("getCampaign", "GET /v1/admin/campaigns/{id}"),
        ("updateCampaign", "PATCH /v1/admin/campaigns/{id}"),
        ("getCampaignAudit", "GET /v1/admin/campaigns/{id}/audit"),
        ("listEvents", "GET /v1/admin/events"),
        ("listDeadLetters", "GET /v1/admin/webhooks/dead-letters"),
        (
            "replayDeadLetter",
            "POST /v1/admin/webhooks/dead-letters/{id}/replay",
        ),
        ("getPublicCampaign", "GET /v1/campaigns/{id}"),
        ("grabVoucher", "POST /v1/campaigns/{id}/claims"),
        ("listMyVouchers", "GET /v1/me/vouchers"),
        ("getMyVoucher", "GET /v1/me/vouchers/{code}"),
        ("redeemVoucher", "POST /v1/vouchers/{code}/redemptions"),
        ("rollbackRedemption", "POST /v1/redemptions/{id}/rollback"),
        ("healthz", "GET /healthz"),
        ("readyz", "GET /readyz"),
    ] {
        assert_eq!(seen.get(id).map(String::as_str), Some(at), "{id}");
    }
}

/// `Problem.code` is an enum a client can match on, it names every code the
/// contract does, and it is the list the other tests check every problem against.
#[tokio::test]
async fn problem_code_is_an_enum_of_every_code_the_service_answers() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get_json("/openapi.json", None).await.1;
    let served = documented_codes(&spec);
    let built = documented_codes(&serde_json::to_value(voucherd::openapi_document()).unwrap());
    assert_eq!(served, built);
    for code in [
        "malformed_request",
        "validation_failed",
        "payload_too_large",
        "unsupported_media_type",
        "headers_too_large",
        "unauthorized",
        "forbidden",
        "idempotency_key_missing",
        "idempotency_key_invalid",
        "idempotency_key_reused",
        "idempotency_key_in_use",
        "campaign_not_found",
        "sold_out",
        "limit_reached",
        "campaign_not_active",
        "voucher_not_found",
        "voucher_already_redeemed",
        "voucher_expired",
        "order_below_minimum",
        "currency_mismatch",
        "overloaded",
        "rate_limited",
        "service_unavailable",
        "timeout",
        "request_timeout",
        "not_found",
        "method_not_allowed",
        "internal_error",
        "error",
    ] {
        assert!(served.contains(code), "{code} missing from {served:?}");
    }
    // Unknown routes and methods are answered by the framework-level handlers.
    let nowhere = app.client.get(app.url("/v1/nowhere")).send().await.unwrap();
    let nowhere: Value = nowhere.json().await.unwrap();
    assert_eq!(nowhere["code"], "not_found");
    let wrong = app.client.delete(app.url("/healthz")).send().await.unwrap();
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(wrong["code"], "method_not_allowed");
}

/// The check every test's problems go through does fail on a code the document
/// does not list.
#[test]
#[should_panic(expected = "does not list")]
fn an_undocumented_problem_code_fails_the_test() {
    assert_documented_problem(
        StatusCode::CONFLICT,
        br#"{"status": 409, "code": "not_a_documented_code"}"#,
    );
}

/// The docs page works offline and behind a strict proxy: the HTML names only this
/// service's own paths, its policy allows nothing from another origin, and the
/// scripts it names are served from the binary, Scalar's exactly as vendored.
#[tokio::test]
async fn docs_page_loads_nothing_from_another_host() {
    let app = TestApp::spawn().await;
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = docs.text().await.unwrap();

    // The policy: every source is this origin or none, but for inline style.
    for directive in policy.split(';') {
        let mut words = directive.split_whitespace();
        let name = words.next().unwrap();
        for source in words {
            assert!(
                ["'self'", "'none'"].contains(&source)
                    || (name == "style-src" && source == "'unsafe-inline'"),
                "{name} allows {source}: {policy}"
            );
        }
    }
    assert!(policy.contains("default-src 'self'"), "{policy}");

    // The page: no URL with a scheme or a host, in an attribute or anywhere else.
    assert!(!html.contains("://"), "{html}");
    let referenced: Vec<String> = ["src", "href"]
        .iter()
        .flat_map(|a| attribute_values(&html, a))
        .collect();
    assert!(!referenced.is_empty(), "{html}");
    for url in &referenced {
        assert!(
            url.starts_with('/') && !url.starts_with("//"),
            "{url} is not a path of this service"
        );
    }

    // What it names is served as JavaScript; Scalar's bundle is the vendored one.
    let vendored = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/scalar/README.md"
    ))
    .unwrap();
    let recorded = vendored
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .expect("assets/scalar/README.md records the bundle's sha256");
    let mut scalar_served = false;
    for url in &referenced {
        let resp = app.client.get(app.url(url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        assert_eq!(
            resp.headers()["content-type"],
            "text/javascript; charset=utf-8",
            "{url}"
        );
        let cache = resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_string();
        let body = resp.bytes().await.unwrap();
        if url.contains("scalar") {
            scalar_served = true;
            assert_eq!(hex::encode(Sha256::digest(&body)), recorded, "{url}");
            assert!(cache.contains("max-age=31536000"), "{url}: {cache}");
        } else {
            let script = String::from_utf8(body.to_vec()).unwrap();
            assert!(script.contains("'/openapi.json'"), "{script}");
            assert!(!script.contains("://"), "{script}");
        }
    }
    assert!(scalar_served, "the page does not load Scalar: {html}");
}

/// The values of every `name="…"` (or `name='…'`, or bare) attribute in `html`.
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    let lower = html.to_ascii_lowercase();
    let needle = format!("{name}=");
    let mut at = 0;
    while let Some(found) = lower[at..].find(&needle) {
        let start = at + found + needle.len();
        at = start;
        let preceded = lower[..start - needle.len()]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace);
        if !preceded {
            continue;
        }
        let rest = &html[start..];
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or(""),
            _ => rest
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or(""),
        };
        values.push(value.to_string());
    }
    values
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_cors_allows_the_frontend() {
    let app = TestApp::spawn().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let given = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-123");
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/campaigns/x/claims"))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let foreign = app
        .client
        .get(app.url("/healthz"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn wallet_lists_pages_and_filters() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 5).await;
    let t = token(&unique("collector"));
    for _ in 0..5 {
        assert_eq!(
            app.grab(&t, &campaign, &unique("k")).await.status,
            StatusCode::CREATED
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/me/vouchers?limit=2&cursor={c}"),
            None => "/v1/me/vouchers?limit=2".to_string(),
        };
        let page: Value = app.get_json(&q, Some(&t)).await.1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["code"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
    let redeemed: Value = app
        .get_json("/v1/me/vouchers?status=redeemed", Some(&t))
        .await
        .1;
    assert_eq!(redeemed["items"].as_array().unwrap().len(), 0);
    let issued: Value = app
        .get_json("/v1/me/vouchers?status=issued", Some(&t))
        .await
        .1;
    assert_eq!(issued["items"].as_array().unwrap().len(), 5);
}

/// Any token is an HTTP method; only the API's own get a label, so a client sending
/// made-up methods cannot add series to `/metrics`.
#[tokio::test]
async fn made_up_methods_share_one_label() {
    let app = TestApp::spawn().await;
    for m in ["ZZZ1", "ZZZ2", "BREW"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let resp = app
            .client
            .request(method, app.url("/nope"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{m}: {}", resp.status());
    }
    let text = crate::helpers::metrics_text(&app).await;
    assert!(
        !text.contains("ZZZ1") && !text.contains("BREW"),
        "a made-up method is a label"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("voucherd_http_requests_total") && l.contains("method=\"other\"")
        ),
        "made-up methods are counted as other"
    );
    assert!(text.contains("voucherd_db_figures_last_read_timestamp_seconds"));
}
