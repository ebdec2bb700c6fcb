//! The voucher's life after the grab: redeem, roll back, expire.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Grab, TestApp, campaign_body, token, unique};

/// Creates a campaign with these voucher terms and grabs one voucher for a new user.
async fn voucher_with(app: &TestApp, voucher: Value) -> (String, String, String) {
    let mut body = campaign_body(10, 1);
    body["voucher"] = voucher;
    let resp = app
        .admin_post("/v1/admin/campaigns", &unique("c"), &body)
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let campaign: Value = resp.json().await.unwrap();
    let t = token(&unique("shopper"));
    let g = app
        .grab(&t, campaign["id"].as_str().unwrap(), &unique("k"))
        .await;
    assert_eq!(g.status, StatusCode::CREATED);
    let code = g.body["voucher"]["code"].as_str().unwrap().to_string();
    (t, code, campaign["id"].as_str().unwrap().to_string())
}

fn fixed_50k() -> Value {
    json!({"discount": {"type": "fixed", "amount": 50000, "currency": "VND"},
           "min_order_amount": 200000, "valid_for_seconds": 3600})
}

async fn redeem(
    app: &TestApp,
    t: &str,
    code: &str,
    key: &str,
    order: &str,
    amount: i64,
    currency: &str,
) -> Grab {
    let body = json!({"order_id": order, "order_amount": amount, "currency": currency});
    app.user_post(
        t,
        &format!("/v1/vouchers/{code}/redemptions"),
        key,
        Some(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_orders_racing_for_one_voucher_one_wins() {
    let app = TestApp::spawn().await;
    let (t, code, campaign) = voucher_with(&app, fixed_50k()).await;
    let answers = join_all((0..20).map(|i| {
        let (app, t, code) = (&app, &t, &code);
        async move {
            redeem(
                app,
                t,
                code,
                &unique("k"),
                &format!("order-{i}"),
                250000,
                "VND",
            )
            .await
        }
    }))
    .await;
    let winners: Vec<&Grab> = answers
        .iter()
        .filter(|g| g.status == StatusCode::CREATED)
        .collect();
    assert_eq!(winners.len(), 1);
    assert!(
        answers
            .iter()
            .filter(|g| g.status != StatusCode::CREATED)
            .all(|g| (g.status, g.code()) == (StatusCode::CONFLICT, "voucher_already_redeemed"))
    );
    let won = &winners[0].body;
    assert_eq!(won["redemption"]["discount_amount"], 50000);
    assert_eq!(won["voucher"]["status"], "redeemed");
    assert_eq!(won["voucher"]["order_id"], won["redemption"]["order_id"]);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["redeemed"], 1);
}

#[tokio::test]
async fn redeem_roll_back_twice_and_redeem_again() {
    let app = TestApp::spawn().await;
    let (t, code, campaign) = voucher_with(&app, fixed_50k()).await;
    let first = redeem(&app, &t, &code, &unique("k"), "order-1", 300000, "VND").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let rid = first.body["redemption"]["id"].as_str().unwrap().to_string();
    let key = unique("rollback");
    let path = format!("/v1/redemptions/{rid}/rollback");
    let back = app.user_post(&t, &path, &key, None).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert_eq!(back.body["voucher"]["status"], "issued");
    assert_eq!(back.body["redemption"]["status"], "rolled_back");
    let again = app.user_post(&t, &path, &key, None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.replayed);
    assert_eq!(again.bytes, back.bytes);
    let other_key = app.user_post(&t, &path, &unique("rollback"), None).await;
    assert_eq!(
        (other_key.status, other_key.code()),
        (StatusCode::CONFLICT, "redemption_already_rolled_back")
    );
    let second = redeem(&app, &t, &code, &unique("k"), "order-2", 300000, "VND").await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(second.body["voucher"]["order_id"], "order-2");
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["redeemed"], 1);
}

#[tokio::test]
async fn someone_elses_voucher_or_redemption_is_404_and_unchanged() {
    let app = TestApp::spawn().await;
    let (owner, code, campaign) = voucher_with(&app, fixed_50k()).await;
    let thief = token(&unique("thief"));
    let stolen = redeem(&app, &thief, &code, &unique("k"), "order-x", 300000, "VND").await;
    assert_eq!(
        (stolen.status, stolen.code()),
        (StatusCode::NOT_FOUND, "voucher_not_found")
    );
    let mine = redeem(&app, &owner, &code, &unique("k"), "order-1", 300000, "VND").await;
    let rid = mine.body["redemption"]["id"].as_str().unwrap();
    let undo = app
        .user_post(
            &thief,
            &format!("/v1/redemptions/{rid}/rollback"),
            &unique("k"),
            None,
        )
        .await;
    assert_eq!(
        (undo.status, undo.code()),
        (StatusCode::NOT_FOUND, "redemption_not_found")
    );
    let bogus = app
        .user_post(
            &owner,
            "/v1/redemptions/not-a-uuid/rollback",
            &unique("k"),
            None,
        )
        .await;
    assert_eq!(bogus.code(), "redemption_not_found");
    let (_, v) = app
        .get_json(&format!("/v1/me/vouchers/{code}"), Some(&owner))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["order_id"].as_str()),
        (Some("redeemed"), Some("order-1"))
    );
    app.assert_invariants(&campaign).await;
}

#[tokio::test]
async fn discount_terms_minimum_currency_and_expiry_are_enforced() {
    let app = TestApp::spawn().await;
    let percent = json!({"discount": {"type": "percent", "basis_points": 1000, "max_amount": 100000, "currency": "VND"},
                         "min_order_amount": 0, "valid_for_seconds": 3600});
    let (t, code, _) = voucher_with(&app, percent.clone()).await;
    let r = redeem(&app, &t, &code, &unique("k"), "o1", 123_459, "VND").await;
    assert_eq!(
        r.body["redemption"]["discount_amount"], 12_345,
        "floor of 10%"
    );
    let (t, code, _) = voucher_with(&app, percent).await;
    let r = redeem(&app, &t, &code, &unique("k"), "o2", 9_000_000, "VND").await;
    assert_eq!(r.body["redemption"]["discount_amount"], 100_000, "capped");

    let (t, code, campaign) = voucher_with(&app, fixed_50k()).await;
    let small = redeem(&app, &t, &code, &unique("k"), "o3", 199_999, "VND").await;
    assert_eq!(
        (small.status, small.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "order_below_minimum")
    );
    let euros = redeem(&app, &t, &code, &unique("k"), "o4", 300_000, "EUR").await;
    assert_eq!(
        (euros.status, euros.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch")
    );
    for bad in [
        json!({"order_id": "", "order_amount": 1, "currency": "VND"}),
        json!({"order_id": "o", "order_amount": 0, "currency": "VND"}),
        json!({"order_id": "o", "order_amount": 1, "currency": "dong"}),
        json!({"order_id": "o", "order_amount": 1}),
    ] {
        let g = app
            .user_post(
                &t,
                &format!("/v1/vouchers/{code}/redemptions"),
                &unique("k"),
                Some(&bad),
            )
            .await;
        assert_eq!(
            (g.status, g.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{bad}"
        );
    }
    let exact = redeem(&app, &t, &code, &unique("k"), "o5", 200_000, "VND").await;
    assert_eq!(exact.body["redemption"]["discount_amount"], 50_000);

    // Expiry is a clock fact: move this voucher's expiry into the past.
    let (t, code, _) = voucher_with(&app, fixed_50k()).await;
    sqlx::query("UPDATE vouchers SET expires_at = now() - interval '1 second' WHERE code = $1")
        .bind(&code)
        .execute(&app.db)
        .await
        .unwrap();
    let late = redeem(&app, &t, &code, &unique("k"), "o6", 300_000, "VND").await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "voucher_expired")
    );
    let (_, v) = app
        .get_json(&format!("/v1/me/vouchers/{code}"), Some(&t))
        .await;
    assert_eq!(v["status"], "expired");
    let (_, expired) = app
        .get_json("/v1/me/vouchers?status=expired", Some(&t))
        .await;
    assert_eq!(expired["items"][0]["code"], code.as_str());
    let (_, usable) = app
        .get_json("/v1/me/vouchers?status=issued", Some(&t))
        .await;
    assert_eq!(usable["items"].as_array().unwrap().len(), 0);
    app.assert_invariants(&campaign).await;
}

#[tokio::test]
async fn every_effect_has_one_event_and_refusals_have_none() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(3, 1).await;
    let run = unique("ev");
    let grabs = join_all((0..10).map(|i| {
        let (app, campaign) = (&app, &campaign);
        let t = token(&format!("{run}-{i}"));
        async move { app.grab(&t, campaign, &unique("k")).await }
    }))
    .await;
    assert_eq!(
        grabs
            .iter()
            .filter(|g| g.status == StatusCode::CREATED)
            .count(),
        3
    );
    // A grant's event is its voucher's id without data of its own (migration 0019).
    let issued: Vec<(String, i64)> = sqlx::query_as(
        "SELECT v.id::text, (SELECT count(*) FROM events e WHERE e.type = 'voucher.issued'
                             AND e.id = v.id AND e.data IS NULL)
         FROM vouchers v WHERE v.campaign_id = $1",
    )
    .bind(Uuid::parse_str(&campaign).unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(issued.len(), 3);
    assert!(issued.iter().all(|(_, n)| *n == 1), "{issued:?}");
    let per_campaign: Vec<(String, i64)> = sqlx::query_as(
        "SELECT type, count(*) FROM events e
         WHERE data -> 'voucher' ->> 'campaign_id' = $1 OR data ->> 'campaign_id' = $1
            OR data -> 'campaign' ->> 'id' = $1
            OR EXISTS (SELECT 1 FROM vouchers v WHERE v.id = e.id AND v.campaign_id::text = $1)
         GROUP BY type ORDER BY type",
    )
    .bind(&campaign)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        per_campaign,
        vec![
            ("campaign.created".into(), 1),
            ("campaign.sold_out".into(), 1),
            ("voucher.issued".into(), 3)
        ]
    );
}

#[tokio::test]
async fn the_event_log_pages_by_seq() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    app.grab(&token(&unique("u")), &campaign, &unique("k"))
        .await;
    // Page through the whole log: seq strictly increases and our events appear once
    // the sequencer has numbered them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut after = 0;
        let mut last_seq = 0;
        let mut ours = Vec::new();
        loop {
            let page = app
                .admin_get(&format!("/v1/admin/events?after={after}&limit=500"))
                .await;
            let items = page["items"].as_array().unwrap();
            for e in items {
                let seq = e["seq"].as_i64().unwrap();
                assert!(seq > last_seq, "seq must only grow");
                last_seq = seq;
                let d = &e["data"];
                if d["campaign"]["id"] == campaign.as_str()
                    || d["voucher"]["campaign_id"] == campaign.as_str()
                {
                    ours.push(e["type"].as_str().unwrap().to_string());
                }
            }
            if items.is_empty() {
                break;
            }
            after = page["next_after"].as_i64().unwrap();
        }
        if ours == ["campaign.created", "voucher.issued"] {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events never listed: {ours:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A reader paging by `seq` never skips an event: while a transaction that wrote an
/// event is still open, events committed after it are held back, and once it commits
/// its event comes first.
#[tokio::test]
async fn the_event_log_holds_back_events_behind_an_open_transaction() {
    let app = TestApp::spawn().await;
    let mut open = app.db.begin().await.unwrap();
    let early = Uuid::now_v7();
    sqlx::query("INSERT INTO events (id, type, data) VALUES ($1, 'test.early', '{}')")
        .bind(early)
        .execute(&mut *open)
        .await
        .unwrap();
    let campaign = app.campaign(1, 1).await;
    let listed = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let later: String = sqlx::query_scalar(
        "SELECT id::text FROM events WHERE type = 'campaign.created' AND data -> 'campaign' ->> 'id' = $1",
    )
    .bind(&campaign)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let while_open = app.admin_get("/v1/admin/events?after=0&limit=1000").await;
    assert!(
        !listed(&while_open).contains(&later),
        "a later event was listed ahead of an open one"
    );
    open.commit().await.unwrap();
    let page = app.admin_get("/v1/admin/events?after=0&limit=1000").await;
    let mut after = page["next_after"].as_i64().unwrap();
    let mut ids = listed(&page);
    // Other tests' open transactions hold the horizon back too: wait, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ids.contains(&later) {
        assert!(std::time::Instant::now() < deadline, "event never listed");
        let more = app
            .admin_get(&format!("/v1/admin/events?after={after}&limit=1000"))
            .await;
        if more["items"].as_array().unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        after = more["next_after"].as_i64().unwrap();
        ids.extend(listed(&more));
    }
    let pos = |id: &str| ids.iter().position(|x| x == id).expect("listed");
    assert!(pos(&early.to_string()) < pos(&later));
}

/// Two redemptions of one voucher queue behind a side transaction holding its row;
/// released, exactly one wins, the other is 409 `voucher_already_redeemed`, and no
/// answer is a 500 (without the race's luck: both are queued before the release).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_redemptions_queued_on_a_held_voucher_one_wins_none_fails() {
    use sqlx::Connection;
    let url = crate::helpers::isolated_database("redeem_held").await;
    let app = TestApp::spawn_with(crate::helpers::RedisMode::None, &[("DATABASE_URL", &url)]).await;
    let (t, code, _) = voucher_with(&app, fixed_50k()).await;
    let mut side = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut held = side.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM vouchers WHERE code = $1 FOR UPDATE")
        .bind(&code)
        .execute(&mut *held)
        .await
        .unwrap();
    let racing: Vec<_> = ["order-a", "order-b"]
        .into_iter()
        .map(|order| {
            let (app, t, code) = (app.clone(), t.clone(), code.clone());
            tokio::spawn(async move {
                redeem(&app, &t, &code, &unique("k"), order, 300_000, "VND").await
            })
        })
        .collect();
    crate::helpers::lock_waiters(&url, "voucherd", 2).await;
    held.rollback().await.unwrap();
    let answers: Vec<Grab> = join_all(racing)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut seen: Vec<(u16, String)> = answers
        .iter()
        .map(|g| (g.status.as_u16(), g.code().to_string()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (201, String::new()),
            (409, "voucher_already_redeemed".to_string())
        ],
        "{:?}",
        answers.iter().map(|g| &g.body).collect::<Vec<_>>()
    );
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM redemptions WHERE status = 'active'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(active, 1);
}

/// Expiry is judged by the time Postgres uses, not this machine's clock: a
/// redemption whose transaction began before the voucher expired, but which reached
/// its checks after (its key was held by another transaction until then), gets what
/// Postgres decides (the voucher was valid when the transaction began), never a
/// refusal reasoned from a different clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_is_judged_by_the_clock_postgres_uses() {
    use sqlx::Connection;
    let url = crate::helpers::isolated_database("redeem_clock").await;
    let app = TestApp::spawn_with(crate::helpers::RedisMode::None, &[("DATABASE_URL", &url)]).await;
    let (t, code, _) = voucher_with(&app, fixed_50k()).await;
    let user: String = sqlx::query_scalar("SELECT user_id FROM vouchers WHERE code = $1")
        .bind(&code)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let key = unique("k");
    let mut side = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut held = side.begin().await.unwrap();
    sqlx::query("INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, '\\x00')")
        .bind(format!("user:{user}"))
        .bind(&key)
        .execute(&mut *held)
        .await
        .unwrap();
    let expires: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE vouchers SET expires_at = clock_timestamp() + interval '1 second'
         WHERE code = $1 RETURNING expires_at",
    )
    .bind(&code)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let pending = {
        let (app, t, code, key) = (app.clone(), t.clone(), code.clone(), key.clone());
        tokio::spawn(async move { redeem(&app, &t, &code, &key, "order-1", 300_000, "VND").await })
    };
    crate::helpers::lock_waiters(&url, "voucherd", 1).await;
    // The scenario, not a synchronisation: the voucher expires while the
    // redemption's transaction waits for the key.
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(100)).await;
    held.rollback().await.unwrap();
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
}
