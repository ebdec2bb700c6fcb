//! Idempotency rules from API.md, observed over HTTP.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Row};

use crate::helpers::{RedisMode, TestApp, campaign_body, token, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_grabs_with_one_key_issue_one_voucher() {
    for mode in ["batched", "single"] {
        one_key_fifty_times(&*TestApp::spawn_with(RedisMode::Real, &[("GRAB_MODE", mode)]).await)
            .await;
    }
}

async fn one_key_fifty_times(app: &TestApp) {
    let campaign = app.campaign(100, 5).await;
    let t = token(&unique("retrier"));
    let key = unique("k");
    let grabs = join_all((0..50).map(|_| app.grab(&t, &campaign, &key))).await;
    for g in &grabs {
        assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
        assert_eq!(g.bytes, grabs[0].bytes, "every answer is the same voucher");
    }
    assert_eq!(grabs.iter().filter(|g| !g.replayed).count(), 1);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 1);
}

#[tokio::test]
async fn a_key_reused_on_another_campaign_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.campaign(10, 1).await;
    let b = app.campaign(10, 1).await;
    let t = token(&unique("u"));
    let key = unique("k");
    assert_eq!(app.grab(&t, &a, &key).await.status, StatusCode::CREATED);
    let reused = app.grab(&t, &b, &key).await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    let c = app.assert_invariants(&b).await;
    assert_eq!(c["issued"], 0);
}

#[tokio::test]
async fn the_same_key_from_two_users_is_two_keys() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 1).await;
    let key = unique("shared");
    let a = app.grab(&token(&unique("a")), &campaign, &key).await;
    let b = app.grab(&token(&unique("b")), &campaign, &key).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert!(!b.replayed);
    assert_ne!(a.body["voucher"]["code"], b.body["voucher"]["code"]);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 2);
}

#[tokio::test]
async fn quoted_and_bare_keys_are_the_same_key() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 2).await;
    let t = token(&unique("u"));
    let key = unique("k");
    let bare = app.grab(&t, &campaign, &key).await;
    let quoted = app.grab(&t, &campaign, &format!("\"{key}\"")).await;
    assert!(quoted.replayed);
    assert_eq!(bare.bytes, quoted.bytes);
}

#[tokio::test]
async fn admin_create_replays_and_detects_a_changed_body() {
    let app = TestApp::spawn().await;
    let key = unique("create");
    let body = campaign_body(7, 1);
    let first = app.admin_post("/v1/admin/campaigns", &key, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: serde_json::Value = first.json().await.unwrap();
    // Same body with keys in another order and other spacing: a replay.
    let reordered: serde_json::Value =
        serde_json::from_str(&serde_json::to_string_pretty(&body).unwrap()).unwrap();
    let again = app
        .admin_post("/v1/admin/campaigns", &key, &reordered)
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let changed = app
        .admin_post("/v1/admin/campaigns", &key, &campaign_body(8, 1))
        .await;
    assert_eq!(changed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let p: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(p["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn a_validation_refusal_is_not_recorded() {
    let app = TestApp::spawn().await;
    let key = unique("create");
    let mut bad = campaign_body(0, 1);
    let refused = app.admin_post("/v1/admin/campaigns", &key, &bad).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    bad["total_stock"] = json!(5);
    let ok = app.admin_post("/v1/admin/campaigns", &key, &bad).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert!(ok.headers().get("idempotent-replayed").is_none());
}

/// Purges once, waiting out another instance's purge (one runs at a time).
async fn purge(db: &sqlx::PgPool, ttl: std::time::Duration) -> u64 {
    for _ in 0..100 {
        if let Some(n) = voucherd::purge_expired(db, ttl).await.unwrap() {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("another instance held the purge for 5 s");
}

/// Several replicas share one Postgres: while one instance purges (here, its lock
/// held from a side session), another steps aside without touching a record, and
/// purges once the lock is free.
#[tokio::test]
async fn the_purge_runs_on_one_instance_at_a_time() {
    let url = crate::helpers::isolated_database("purge_alone").await;
    let app = TestApp::spawn_with(RedisMode::Real, &[("DATABASE_URL", &url)]).await;
    let campaign = app.campaign(10, 2).await;
    let sub = unique("u");
    app.grab(&token(&sub), &campaign, &unique("k")).await;
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&app.db)
        .await
        .unwrap();
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    // voucherd's lock class ("vouc") and the purge's job number.
    sqlx::query("SELECT pg_advisory_lock(1987016035, 2)")
        .execute(&mut other)
        .await
        .unwrap();
    let ttl = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(voucherd::purge_expired(&app.db, ttl).await.unwrap(), None);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    // The campaign's creation and the grab, both aged past the TTL.
    assert_eq!(kept, 2, "purged while another instance held the purge");
    sqlx::query("SELECT pg_advisory_unlock(1987016035, 2)")
        .execute(&mut other)
        .await
        .unwrap();
    assert_eq!(
        voucherd::purge_expired(&app.db, ttl).await.unwrap(),
        Some(2)
    );
    // The lock went back with the purge: the side session takes it at once.
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(1987016035, 2)")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(free, "the purge kept its lock after it finished");
}

#[tokio::test]
async fn expired_keys_are_purged_and_fresh_ones_kept() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 2).await;
    let sub = unique("u");
    let t = token(&sub);
    let (old, fresh) = (unique("old"), unique("fresh"));
    app.grab(&t, &campaign, &old).await;
    app.grab(&t, &campaign, &fresh).await;
    let scope = format!("user:{sub}");
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE scope = $1 AND key = $2")
        .bind(&scope)
        .bind(&old)
        .execute(&app.db)
        .await
        .unwrap();
    purge(&app.db, std::time::Duration::from_secs(24 * 3600)).await;
    let left: Vec<String> = sqlx::query("SELECT key FROM idempotency_keys WHERE scope = $1")
        .bind(&scope)
        .fetch_all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![fresh]);
}

/// No cache answers for a key longer than Postgres keeps it. The record is aged past
/// `IDEMPOTENCY_TTL` in Postgres (as if the TTL had passed), read once by a second
/// instance, then purged: that instance and a third one sharing its Redis must
/// evaluate the key afresh, not replay the purged voucher beside the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_cache_replays_a_key_postgres_has_purged() {
    let url = crate::helpers::isolated_database("purged").await;
    let settings: &[(&str, &str)] = &[("DATABASE_URL", &url), ("IDEMPOTENCY_TTL", "60s")];
    let a = TestApp::spawn_with(RedisMode::Real, settings).await;
    let b = TestApp::spawn_with(RedisMode::Real, settings).await;
    let campaign = a.campaign(10, 5).await;
    let sub = unique("u");
    let t = token(&sub);
    let key = unique("k");
    let first = a.grab(&t, &campaign, &key).await;
    assert_eq!(first.status, StatusCode::CREATED);

    sqlx::query(
        "UPDATE idempotency_keys SET created_at = created_at - interval '61 seconds'
         WHERE key = $1",
    )
    .bind(&key)
    .execute(&a.db)
    .await
    .unwrap();
    // Still in Postgres (not purged yet): replayed, from Postgres.
    let read = b.grab(&t, &campaign, &key).await;
    assert!(read.replayed && read.bytes == first.bytes);
    let purged = purge(&a.db, std::time::Duration::from_secs(60)).await;
    assert_eq!(purged, 1);

    let again = b.grab(&t, &campaign, &key).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert!(!again.replayed, "a purged key was replayed from a cache");
    assert_ne!(again.bytes, first.bytes);
    let c = TestApp::spawn_with(RedisMode::Real, settings).await;
    let shared = c.grab(&t, &campaign, &key).await;
    assert_eq!(shared.bytes, again.bytes, "Redis held the purged answer");
    let vouchers: i64 = sqlx::query_scalar("SELECT count(*) FROM vouchers WHERE user_id = $1")
        .bind(&sub)
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(vouchers, 2);
}

/// An id written another way is the same request: a retry that spells the campaign
/// id in capitals, braces or as a URN, or the voucher code in lower case, replays
/// rather than being refused as a reused key.
#[tokio::test]
async fn a_retry_spelling_an_id_another_way_replays() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 5).await;
    let t = token(&unique("u"));
    let key = unique("k");
    let first = app.grab(&t, &campaign.to_uppercase(), &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    for spelling in [
        campaign.clone(),
        format!("urn:uuid:{campaign}"),
        format!("%7B{campaign}%7D"),
        campaign.replace('-', ""),
    ] {
        let again = app.grab(&t, &spelling, &key).await;
        assert!(
            again.replayed && again.bytes == first.bytes,
            "{spelling}: {:?}",
            again.body
        );
    }
    let code = first.body["voucher"]["code"].as_str().unwrap().to_string();
    let body = json!({"order_id": "o-1", "order_amount": 300000, "currency": "VND"});
    let key = unique("r");
    let path = |c: &str| format!("/v1/vouchers/{c}/redemptions");
    let redeemed = app
        .user_post(&t, &path(&code.to_lowercase()), &key, Some(&body))
        .await;
    assert_eq!(redeemed.status, StatusCode::CREATED, "{:?}", redeemed.body);
    let again = app.user_post(&t, &path(&code), &key, Some(&body)).await;
    assert!(
        again.replayed && again.bytes == redeemed.bytes,
        "{:?}",
        again.body
    );
}

/// A key recorded before fingerprints were canonical still replays: its fingerprint,
/// computed here from the documented recipe (SHA-256 of method, path and canonical
/// body, newline-separated), matches what a canonical request computes today.
#[tokio::test]
async fn a_key_recorded_before_canonical_fingerprints_still_replays() {
    use sha2::{Digest, Sha256};
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 5).await;
    let sub = unique("u");
    let key = unique("k");
    let path = format!("/v1/campaigns/{campaign}/claims");
    let fingerprint = Sha256::digest(format!("POST\n{path}\n{{}}").as_bytes()).to_vec();
    let stored = br#"{"voucher":{"recorded":"before the upgrade"}}"#;
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, response_body)
         VALUES ($1, $2, $3, 201, $4)",
    )
    .bind(format!("user:{sub}"))
    .bind(&key)
    .bind(&fingerprint)
    .bind(&stored[..])
    .execute(&app.db)
    .await
    .unwrap();
    let replay = app.grab(&token(&sub), &campaign, &key).await;
    assert_eq!(replay.status, StatusCode::CREATED, "{:?}", replay.body);
    assert!(replay.replayed);
    assert_eq!(replay.bytes, &stored[..]);
}

/// A redemption's key reused with another order, or a rollback's key reused on
/// another redemption, is 422 `idempotency_key_reused` and changes nothing.
#[tokio::test]
async fn a_checkout_key_reused_with_another_request_is_422() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(10, 2).await;
    let t = token(&unique("u"));
    let mut codes = Vec::new();
    for _ in 0..2 {
        let g = app.grab(&t, &campaign, &unique("k")).await;
        codes.push(g.body["voucher"]["code"].as_str().unwrap().to_string());
    }
    let order = |id: &str| json!({"order_id": id, "order_amount": 300000, "currency": "VND"});
    let redeem = |code: &str, key: &str, body: serde_json::Value| {
        let (app, t, path) = (&app, &t, format!("/v1/vouchers/{code}/redemptions"));
        let key = key.to_string();
        async move { app.user_post(t, &path, &key, Some(&body)).await }
    };
    let key = unique("r");
    let first = redeem(&codes[0], &key, order("o-1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other_order = redeem(&codes[0], &key, order("o-2")).await;
    assert_eq!(
        (other_order.status, other_order.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    let other_voucher = redeem(&codes[1], &key, order("o-1")).await;
    assert_eq!(other_voucher.code(), "idempotency_key_reused");
    let second = redeem(&codes[1], &unique("r"), order("o-3")).await;
    assert_eq!(second.status, StatusCode::CREATED);

    let rollback = |id: &str, key: &str| {
        let (app, t, path) = (&app, &t, format!("/v1/redemptions/{id}/rollback"));
        let key = key.to_string();
        async move { app.user_post(t, &path, &key, None).await }
    };
    let ids: Vec<String> = [&first, &second]
        .iter()
        .map(|r| r.body["redemption"]["id"].as_str().unwrap().to_string())
        .collect();
    let key = unique("b");
    assert_eq!(rollback(&ids[0], &key).await.status, StatusCode::OK);
    let reused = rollback(&ids[1], &key).await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    let (_, voucher) = app
        .get_json(&format!("/v1/me/vouchers/{}", codes[1]), Some(&t))
        .await;
    assert_eq!(
        voucher["status"], "redeemed",
        "the reused key rolled nothing back"
    );
    let redeemed: Vec<String> = sqlx::query_scalar(
        "SELECT r.order_id FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id
         WHERE v.code = ANY($1) AND r.status = 'active'",
    )
    .bind(&codes)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(redeemed, vec!["o-3".to_string()]);
}
