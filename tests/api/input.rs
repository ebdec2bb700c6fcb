//! Bad input of every class gets its 4xx and code as problem+json, and changes nothing.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, JWT_SECRET, TestApp, campaign_body, token, unique};

async fn problem(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, resp.json().await.unwrap())
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let none_alg = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "mallory", "exp": exp}))
    );
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": "mallory", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let wrong_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "mallory", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-0000"),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("not bearer", Some("Basic YWxpY2U6eA==".into())),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("alg none", Some(format!("Bearer {none_alg}"))),
        ("HS512", Some(format!("Bearer {hs512}"))),
        ("wrong secret", Some(format!("Bearer {wrong_secret}"))),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs256(&json!({"sub": "a", "exp": 1000}))
            )),
        ),
        (
            "no sub",
            Some(format!("Bearer {}", hs256(&json!({"exp": exp})))),
        ),
        (
            "no exp",
            Some(format!("Bearer {}", hs256(&json!({"sub": "a"})))),
        ),
        (
            "empty sub",
            Some(format!("Bearer {}", hs256(&json!({"sub": "", "exp": exp})))),
        ),
        (
            "long sub",
            Some(format!(
                "Bearer {}",
                hs256(&json!({"sub": "x".repeat(129), "exp": exp}))
            )),
        ),
        ("admin token as user", Some(format!("Bearer {ADMIN_TOKEN}"))),
    ];
    for (name, auth) in cases {
        let mut req = app
            .client
            .post(app.url(&format!("/v1/campaigns/{campaign}/claims")))
            .header("Idempotency-Key", unique("k"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{name}");
        let (status, body) = problem(resp).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{name}"
        );
    }
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 0);
}

/// Values Postgres would refuse or store differently never reach it: a NUL byte in a
/// name, instants that differ only below a microsecond, an `ends_at` a millisecond
/// away with the default start. Each is a 4xx (or, for the last, possibly a 201),
/// never a 500, and nothing is created by a refusal.
#[tokio::test]
async fn values_postgres_cannot_store_are_refused_not_500() {
    let app = TestApp::spawn().await;
    let mut named = campaign_body(10, 1);
    named["name"] = Value::String(format!("flash{}sale", '\u{0}'));
    let mut close = campaign_body(10, 1);
    close["starts_at"] = "2098-01-01T00:00:00.0000001Z".into();
    close["ends_at"] = "2098-01-01T00:00:00.0000009Z".into();
    for (name, body) in [("NUL in name", named), ("sub-microsecond window", close)] {
        let resp = app
            .admin_post("/v1/admin/campaigns", &unique("c"), &body)
            .await;
        let (status, problem_body) = problem(resp).await;
        assert_eq!(
            (status, problem_body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{name}: {problem_body}"
        );
    }
    for _ in 0..20 {
        let mut soon = campaign_body(10, 1);
        soon["ends_at"] = (chrono::Utc::now() + chrono::Duration::milliseconds(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            .into();
        let resp = app
            .admin_post("/v1/admin/campaigns", &unique("c"), &soon)
            .await;
        assert!(
            resp.status() == StatusCode::CREATED
                || resp.status() == StatusCode::UNPROCESSABLE_ENTITY,
            "ends_at a millisecond away: {}",
            resp.status()
        );
    }
}

/// A token is accepted up to `JWT_LEEWAY` (default 5 s) past `exp`, never longer.
#[tokio::test]
async fn tokens_past_exp_and_the_leeway_are_refused() {
    let now = jsonwebtoken::get_current_timestamp();
    for (extra, expired_for, accepted) in [
        (&[][..], 2, true),
        (&[][..], 12, false),
        (&[("JWT_LEEWAY", "30s")][..], 12, true),
        (&[("JWT_LEEWAY", "0s")][..], 2, false),
    ] {
        let app = TestApp::spawn_with(crate::helpers::RedisMode::None, extra).await;
        let t = hs256(&json!({"sub": unique("late"), "exp": now - expired_for}));
        let (status, _) = app.get_json("/v1/me/vouchers", Some(&t)).await;
        let expected = if accepted {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, expected, "{extra:?}, expired {expired_for} s ago");
    }
}

#[tokio::test]
async fn admin_routes_refuse_users_and_strangers() {
    let app = TestApp::spawn().await;
    let as_user = app
        .client
        .get(app.url("/v1/admin/campaigns"))
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(as_user).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let stranger = app
        .client
        .post(app.url("/v1/admin/campaigns"))
        .bearer_auth("not-the-admin-token-at-all")
        .header("Idempotency-Key", unique("k"))
        .json(&campaign_body(5, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(stranger).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn idempotency_keys_are_required_and_checked() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let t = token(&unique("u"));
    let missing = app
        .client
        .post(app.url(&format!("/v1/campaigns/{campaign}/claims")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(missing).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("idempotency_key_missing"))
    );
    for bad in [
        "short",
        "has spaces in it",
        &"x".repeat(256),
        "\"unterminated",
    ] {
        let g = app.grab(&t, &campaign, bad).await;
        assert_eq!(
            (g.status, g.code()),
            (StatusCode::BAD_REQUEST, "idempotency_key_invalid"),
            "{bad}"
        );
    }
    let patch_without_key = app
        .client
        .patch(app.url(&format!("/v1/admin/campaigns/{campaign}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(patch_without_key).await.1["code"],
        "idempotency_key_missing"
    );
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(
        (c["issued"].as_i64(), c["paused"].as_bool()),
        (Some(0), Some(false))
    );
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_400_and_413() {
    let app = TestApp::spawn().await;
    let post = |body: Vec<u8>| {
        app.client
            .post(app.url("/v1/admin/campaigns"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", unique("k"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [&b"{"[..], b"not json", b"{\"name\": }", b"\xff\xfe"] {
        let (status, p) = problem(post(body.to_vec()).await.unwrap()).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("malformed_request"))
        );
    }
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let (status, p) = problem(post(big.into_bytes()).await.unwrap()).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
}

#[tokio::test]
async fn invalid_values_are_422_with_each_field_named() {
    let app = TestApp::spawn().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"total_stock": 0}), "total_stock"),
        (json!({"total_stock": 1_000_000_001i64}), "total_stock"),
        (json!({"total_stock": 1.5}), "total_stock"),
        (json!({"total_stock": "10"}), "total_stock"),
        (json!({"per_user_limit": 101}), "per_user_limit"),
        (json!({"ends_at": "2001-01-01T00:00:00Z"}), "ends_at"),
        (json!({"ends_at": "tomorrow"}), "ends_at"),
        (
            json!({"starts_at": "2099-06-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}),
            "ends_at",
        ),
        (
            json!({"voucher": {"discount": {"type": "fixed", "amount": 0, "currency": "VND"}, "valid_for_seconds": 600}}),
            "voucher.discount.amount",
        ),
        (
            json!({"voucher": {"discount": {"type": "fixed", "amount": 5, "currency": "vnd"}, "valid_for_seconds": 600}}),
            "voucher.discount",
        ),
        (
            json!({"voucher": {"discount": {"type": "percent", "basis_points": 10001, "max_amount": 5, "currency": "VND"}, "valid_for_seconds": 600}}),
            "voucher.discount.basis_points",
        ),
        (
            json!({"voucher": {"discount": {"type": "bogus"}, "valid_for_seconds": 600}}),
            "voucher.discount",
        ),
        (
            json!({"voucher": {"discount": {"type": "fixed", "amount": 5, "currency": "VND"}, "valid_for_seconds": 59}}),
            "voucher.valid_for_seconds",
        ),
        (json!({"surprise": true}), ""),
    ];
    for (patch, field) in cases {
        let mut body = campaign_body(10, 1);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = app
            .admin_post("/v1/admin/campaigns", &unique("k"), &body)
            .await;
        let (status, p) = problem(resp).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{patch}"
        );
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "{patch}: {fields:?}"
        );
    }
    let listed = app.admin_get("/v1/admin/campaigns?limit=100").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "x".repeat(201))
    );
}

#[tokio::test]
async fn bad_patches_and_paths_are_refused() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let patch = |id: String, body: Value| {
        app.client
            .patch(app.url(&format!("/v1/admin/campaigns/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", unique("k"))
            .json(&body)
            .send()
    };
    for body in [
        json!({}),
        json!({"add_stock": 0}),
        json!({"add_stock": -5}),
        json!({"add_stock": 1_000_000_000}),
        json!({"ends_at": "2000-01-01T00:00:00Z"}),
        json!({"remaining": 100}),
    ] {
        let (status, p) = problem(patch(campaign.clone(), body.clone()).await.unwrap()).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{body}"
        );
    }
    let (status, p) = problem(patch("nope".into(), json!({"paused": true})).await.unwrap()).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("campaign_not_found"))
    );
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(
        (c["total_stock"].as_i64(), c["paused"].as_bool()),
        (Some(5), Some(false))
    );

    for (method, path) in [
        (Method::GET, "/v1/nowhere".to_string()),
        (Method::DELETE, format!("/v1/campaigns/{campaign}")),
        (Method::GET, "/v1/admin/campaigns?limit=0".to_string()),
        (Method::GET, "/v1/admin/campaigns?cursor=zzz".to_string()),
        (Method::GET, "/v1/me/vouchers/NOT-A-CODE".to_string()),
        (Method::GET, "/v1/me/vouchers?status=lost".to_string()),
    ] {
        let resp = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(if path.contains("admin") {
                ADMIN_TOKEN.to_string()
            } else {
                token("alice")
            })
            .send()
            .await
            .unwrap();
        let (status, p) = problem(resp).await;
        assert!(status.is_client_error(), "{method} {path}: {status}");
        assert!(p["code"].is_string(), "{method} {path}");
    }
}

#[tokio::test]
async fn another_users_voucher_is_not_found() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let owner = token(&unique("owner"));
    let g = app.grab(&owner, &campaign, &unique("k")).await;
    let code = g.body["voucher"]["code"].as_str().unwrap();
    let mine = app
        .client
        .get(app.url(&format!("/v1/me/vouchers/{code}")))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::OK);
    let v: Value = mine.json().await.unwrap();
    assert_eq!(v, g.body["voucher"]);
    let theirs = app
        .client
        .get(app.url(&format!("/v1/me/vouchers/{code}")))
        .bearer_auth(token(&unique("thief")))
        .send()
        .await
        .unwrap();
    let (status, p) = problem(theirs).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("voucher_not_found"))
    );
}

/// Requests no client should send: each gets a 4xx problem+json, never a 5xx.
#[tokio::test]
async fn hostile_requests_get_a_4xx_problem_never_a_500() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let t = token(&unique("mallory"));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<(String, Vec<u8>)> = vec![
        ("/v1/admin/campaigns".into(), b"[1,2,3]".to_vec()),
        ("/v1/admin/campaigns".into(), b"null".to_vec()),
        ("/v1/admin/campaigns".into(), b"\"campaign\"".to_vec()),
        ("/v1/admin/campaigns".into(), deep.clone().into_bytes()),
        (
            "/v1/admin/campaigns".into(),
            br#"{"name":"a","name":"b"}"#.to_vec(),
        ),
        (
            format!("/v1/campaigns/{campaign}/claims"),
            deep.into_bytes(),
        ),
        (
            format!("/v1/campaigns/{campaign}/claims"),
            b"{\"x\":1}".to_vec(),
        ),
        (format!("/v1/campaigns/{campaign}/claims"), b"[]".to_vec()),
        ("/v1/campaigns/%FF%FE/claims".into(), vec![]),
        ("/v1/campaigns/..%2F..%2Fetc/claims".into(), vec![]),
    ];
    for (path, body) in bodies {
        let bearer = if path.contains("admin") {
            ADMIN_TOKEN.to_string()
        } else {
            t.clone()
        };
        let resp = app
            .client
            .post(app.url(&path))
            .bearer_auth(bearer)
            .header("Idempotency-Key", unique("k"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, p) = problem(resp).await;
        assert!(status.is_client_error(), "{path}: {status} {p}");
    }
    for path in [
        "/v1/admin/campaigns?limit=99999999999999999999999",
        "/v1/admin/campaigns?limit=5&limit=6",
        "/v1/admin/campaigns?cursor=%FF",
        "/v1/campaigns/%00",
    ] {
        let resp = app
            .client
            .get(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let (status, _) = problem(resp).await;
        assert!(status.is_client_error(), "{path}: {status}");
    }
    // Header bytes reqwest would refuse to send: write them by hand.
    for header in [
        &b"Authorization: Bearer \xff\xfe"[..],
        b"Idempotency-Key: \x80\x81\x82\x83\x84\x85\x86\x87\x88",
    ] {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let mut req = format!("POST /v1/campaigns/{campaign}/claims HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n").into_bytes();
        if !header.starts_with(b"Authorization") {
            req.extend_from_slice(format!("Authorization: Bearer {t}\r\n").as_bytes());
        }
        req.extend_from_slice(header);
        req.extend_from_slice(b"\r\n\r\n");
        s.write_all(&req).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let head = String::from_utf8_lossy(&out);
        assert!(head.starts_with("HTTP/1.1 4"), "{head}");
        assert!(head.contains("application/problem+json"), "{head}");
        crate::helpers::assert_raw_problem(&out);
    }
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 0);
}

/// Too many grabs from one user, or from one address, are refused with 429 and
/// Retry-After before their keys are looked at: nothing is recorded for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_refuse_with_429_and_record_nothing() {
    for (setting, per_user) in [("RATE_LIMIT_USER", true), ("RATE_LIMIT_IP", false)] {
        let app = TestApp::spawn_with(crate::helpers::RedisMode::Real, &[(setting, "3")]).await;
        let campaign = app.campaign(100, 100).await;
        let run = unique("burst");
        let keys: Vec<String> = (0..12).map(|_| unique("k")).collect();
        let grabs = futures::future::join_all(keys.iter().enumerate().map(|(i, k)| {
            // One user for the per-user limit; a user each for the per-IP limit.
            let t = token(&if per_user {
                run.clone()
            } else {
                format!("{run}-{i}")
            });
            let (app, campaign) = (&app, &campaign);
            async move { (k.clone(), app.grab(&t, campaign, k).await) }
        }))
        .await;
        let limited: Vec<&String> = grabs
            .iter()
            .filter(|(_, g)| g.status == StatusCode::TOO_MANY_REQUESTS)
            .map(|(k, _)| k)
            .collect();
        assert!(
            limited.len() >= 4,
            "{setting}: only {} of 12 limited",
            limited.len()
        );
        for (_, g) in grabs
            .iter()
            .filter(|(_, g)| g.status == StatusCode::TOO_MANY_REQUESTS)
        {
            assert_eq!(g.code(), "rate_limited");
        }
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = ANY($1)")
                .bind(limited.iter().map(|k| k.to_string()).collect::<Vec<_>>())
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(recorded, 0, "{setting}: a limited request was recorded");
        let c = app.assert_invariants(&campaign).await;
        assert_eq!(c["issued"].as_i64().unwrap(), 12 - limited.len() as i64);
        let resp = app
            .client
            .post(app.url(&format!("/v1/campaigns/{campaign}/claims")))
            .bearer_auth(token(&run))
            .header("Idempotency-Key", unique("k"))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait >= 1);
        }
    }
}
