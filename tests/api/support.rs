//! Support after a launch: lookups by code, holder and campaign; voiding a voucher
//! (with and without its stock returned) and what a void does to redemptions, quotes,
//! the wallet, the grab and the audit; named admins recorded as the actor of their
//! changes; the event log's type filter.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Grab, RedisMode, TestApp, campaign_body, token, unique};

const ALICE_TOKEN: &str = "alice-admin-token-0123456789";
const BOB_TOKEN: &str = "bob-admin-token-0123456789";

/// An instance with two named admins beside `ADMIN_TOKEN` (the admin named `admin`).
async fn app() -> Arc<TestApp> {
    TestApp::spawn_with(
        RedisMode::Real,
        &[(
            "ADMIN_TOKENS",
            &format!("alice:{ALICE_TOKEN},bob:{BOB_TOKEN}"),
        )],
    )
    .await
}

async fn admin_request(
    app: &TestApp,
    as_admin: &str,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> Grab {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(as_admin)
        .header("Idempotency-Key", key);
    if let Some(b) = body {
        req = req.json(b);
    }
    Grab::read(req.send().await.unwrap()).await
}

async fn void(app: &TestApp, code: &str, key: &str, return_stock: bool) -> Grab {
    admin_request(
        app,
        ALICE_TOKEN,
        reqwest::Method::POST,
        &format!("/v1/admin/vouchers/{code}/void"),
        key,
        Some(&json!({ "return_stock": return_stock })),
    )
    .await
}

async fn redeem(app: &TestApp, t: &str, code: &str, order_id: &str) -> Grab {
    app.user_post(
        t,
        &format!("/v1/vouchers/{code}/redemptions"),
        &unique("r"),
        Some(&json!({"order_id": order_id, "order_amount": 250000, "currency": "VND"})),
    )
    .await
}

/// Grabs one voucher of `campaign` for `user`; returns its code.
async fn grab_code(app: &TestApp, user: &str, campaign: &str) -> String {
    let g = app.grab(&token(user), campaign, &unique("g")).await;
    assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
    g.body["voucher"]["code"].as_str().unwrap().to_string()
}

/// The first event of `kind` that `wanted` picks, once the log lists it: the log
/// holds back events younger than the oldest transaction still running anywhere on
/// the server (other tests' included), so a fresh one may take a moment to show.
async fn event_where(app: &TestApp, kind: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        if let Some(e) = events_of(app, kind).await.into_iter().find(&wanted) {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {kind} event as wanted");
}

/// Every event of `kind` in the log (all pages).
async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page = app
            .admin_get(&format!(
                "/v1/admin/events?type={kind}&after={after}&limit=1000"
            ))
            .await;
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return all;
        }
        after = page["next_after"].as_i64().unwrap();
        all.extend(items);
    }
}

#[tokio::test]
async fn support_finds_a_voucher_by_code_a_user_across_campaigns_and_a_campaign_by_status() {
    let app = app().await;
    let first = app.campaign(10, 3).await;
    let second = app.campaign(10, 1).await;
    let user = unique("holder");
    let t = token(&user);
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(grab_code(&app, &user, &first).await);
    }
    let elsewhere = grab_code(&app, &user, &second).await;
    let other = grab_code(&app, &unique("other"), &first).await;

    // By code, in any letter case, with its redemptions, rolled back ones too.
    let r = redeem(&app, &t, &codes[0], &unique("order")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let rid = r.body["redemption"]["id"].as_str().unwrap().to_string();
    let back = app
        .user_post(
            &t,
            &format!("/v1/redemptions/{rid}/rollback"),
            &unique("rb"),
            None,
        )
        .await;
    assert_eq!(back.status, StatusCode::OK);
    let again = redeem(&app, &t, &codes[0], &unique("order")).await;
    assert_eq!(again.status, StatusCode::CREATED);
    let found = app
        .admin_get(&format!("/v1/admin/vouchers/{}", codes[0].to_lowercase()))
        .await;
    assert_eq!(found["code"], codes[0].as_str());
    assert_eq!(found["user_id"], user.as_str());
    assert_eq!(found["campaign_id"], first.as_str());
    assert_eq!(found["status"], "redeemed");
    assert_eq!(found["stock_returned"], false);
    assert_eq!(found["voided_at"], Value::Null);
    let statuses: Vec<&str> = found["redemptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["rolled_back", "active"]);

    // The user's vouchers of both campaigns, newest first, paged.
    let sub = urlencoding(&user);
    let page = app
        .admin_get(&format!("/v1/admin/users/{sub}/vouchers?limit=3"))
        .await;
    let mut seen: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen[0], elsewhere, "newest first");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let rest = app
        .admin_get(&format!(
            "/v1/admin/users/{sub}/vouchers?limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["next_cursor"], Value::Null);
    seen.extend(
        rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["code"].as_str().unwrap().to_string()),
    );
    let mut expected = codes.clone();
    expected.push(elsewhere.clone());
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "every voucher of the user, no other's");

    // The campaign's vouchers, filtered by status.
    let all = app
        .admin_get(&format!("/v1/admin/campaigns/{first}/vouchers"))
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    let redeemed = app
        .admin_get(&format!(
            "/v1/admin/campaigns/{first}/vouchers?status=redeemed"
        ))
        .await;
    let redeemed: Vec<&str> = redeemed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["code"].as_str().unwrap())
        .collect();
    assert_eq!(redeemed, [codes[0].as_str()]);
    let issued = app
        .admin_get(&format!(
            "/v1/admin/campaigns/{first}/vouchers?status=issued&limit=100"
        ))
        .await;
    let issued = issued["items"].as_array().unwrap();
    assert_eq!(issued.len(), 3);
    assert!(issued.iter().any(|v| v["code"] == other.as_str()));

    // What is not there, and who may not look.
    let (status, body) = app
        .get_json("/v1/admin/vouchers/0000000000000000", Some(ALICE_TOKEN))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("voucher_not_found"))
    );
    let (status, body) = app
        .get_json(
            &format!("/v1/admin/campaigns/{}/vouchers", Uuid::now_v7()),
            Some(ALICE_TOKEN),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("campaign_not_found"))
    );
    let (status, body) = app
        .get_json(&format!("/v1/admin/vouchers/{}", codes[1]), Some(&t))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    for bad in [
        "/v1/admin/users/a%00b/vouchers",
        "/v1/admin/users/someone/vouchers?status=lost",
        "/v1/admin/users/someone/vouchers?limit=1000000000000000000000",
        "/v1/admin/users/someone/vouchers?cursor=nope",
    ] {
        let (status, body) = app.get_json(bad, Some(ALICE_TOKEN)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["code"], "validation_failed", "{bad}");
    }
    let long = "x".repeat(129);
    let (status, _) = app
        .get_json(
            &format!("/v1/admin/users/{long}/vouchers"),
            Some(ALICE_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Percent-encodes a user id for a path segment.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_void_with_returned_stock_reopens_a_sold_out_campaign_and_the_voucher_is_dead() {
    let app = app().await;
    let campaign = app.campaign(2, 1).await;
    let (bot, human, late) = (unique("bot"), unique("human"), unique("late"));
    let code = grab_code(&app, &bot, &campaign).await;
    let kept = grab_code(&app, &human, &campaign).await;
    let late_key = unique("late-grab");
    let refused = app.grab(&token(&late), &campaign, &late_key).await;
    assert_eq!(refused.code(), "sold_out");

    let key = unique("void");
    let voided = void(&app, &code, &key, true).await;
    assert_eq!(voided.status, StatusCode::OK, "{:?}", voided.body);
    assert_eq!(voided.body["voucher"]["status"], "voided");
    assert_eq!(voided.body["voucher"]["stock_returned"], true);
    assert!(voided.body["voucher"]["voided_at"].is_string());
    // The same key replays; a new key finds it voided already.
    let replay = void(&app, &code, &key, true).await;
    assert!(replay.replayed);
    assert_eq!(replay.bytes, voided.bytes);
    let twice = void(&app, &code, &unique("void"), false).await;
    assert_eq!(
        (twice.status, twice.code()),
        (StatusCode::CONFLICT, "voucher_voided")
    );

    // The holder can neither redeem it nor be quoted for it, and sees it voided.
    let bt = token(&bot);
    let r = redeem(&app, &bt, &code, "order-1").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "voucher_voided")
    );
    let (status, quote) = app
        .get_json(
            &format!("/v1/vouchers/{code}/quote?order_id=o-1&order_amount=250000&currency=VND"),
            Some(&bt),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (quote["redeemable"].as_bool(), quote["code"].as_str()),
        (Some(false), Some("voucher_voided"))
    );
    let (_, wallet) = app
        .get_json("/v1/me/vouchers?status=voided", Some(&bt))
        .await;
    assert_eq!(wallet["items"][0]["code"], code.as_str());
    let (_, wallet) = app
        .get_json("/v1/me/vouchers?status=issued", Some(&bt))
        .await;
    assert_eq!(wallet["items"].as_array().unwrap().len(), 0);

    // The unit is back: the campaign grants again, through the grab route, at once.
    let c = app
        .admin_get(&format!("/v1/admin/campaigns/{campaign}"))
        .await;
    assert_eq!(
        (
            c["remaining"].as_i64(),
            c["issued"].as_i64(),
            c["status"].as_str()
        ),
        (Some(1), Some(1), Some("active"))
    );
    let g = app.grab(&token(&late), &campaign, &late_key).await;
    assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
    // The bot's count is kept: it cannot grab the returned unit again.
    let c = app
        .admin_get(&format!("/v1/admin/campaigns/{campaign}"))
        .await;
    assert_eq!(c["status"], "sold_out");
    let again = app.grab(&token(&bot), &campaign, &unique("g")).await;
    assert!(
        ["limit_reached", "sold_out"].contains(&again.code()),
        "{:?}",
        again.body
    );
    app.assert_invariants(&campaign).await;
    let audit = app
        .admin_get(&format!("/v1/admin/campaigns/{campaign}/audit"))
        .await;
    let returned = audit["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "returned_stock_only_from_voided")
        .unwrap();
    assert!(
        returned["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 vouchers voided, 1 of them"),
        "{returned}"
    );
    // The counter is the rows less the returned one: 3 rows, 2 issued.
    let c = app
        .admin_get(&format!("/v1/admin/campaigns/{campaign}"))
        .await;
    assert_eq!(c["issued"], 2);

    // The event, with the actor and the counters after the return.
    let event = event_where(&app, "voucher.voided", |e| {
        e["data"]["voucher"]["code"] == code.as_str()
    })
    .await;
    assert_eq!(event["type"], "voucher.voided");
    assert_eq!(event["data"]["actor"], json!({"admin": "alice"}));
    assert_eq!(event["data"]["return_stock"], true);
    assert_eq!(event["data"]["voucher"]["user_id"], bot.as_str());
    assert_eq!(event["data"]["campaign"]["remaining"], 1);

    // A redeemed voucher, an expired one, and no voucher at all.
    let ht = token(&human);
    assert_eq!(
        redeem(&app, &ht, &kept, "order-2").await.status,
        StatusCode::CREATED
    );
    let v = void(&app, &kept, &unique("void"), true).await;
    assert_eq!(
        (v.status, v.code()),
        (StatusCode::CONFLICT, "voucher_already_redeemed")
    );
    let old = grab_code(&app, &unique("old"), &app.campaign(1, 1).await).await;
    sqlx::query("UPDATE vouchers SET expires_at = now() - interval '1 second' WHERE code = $1")
        .bind(&old)
        .execute(&app.db)
        .await
        .unwrap();
    let v = void(&app, &old, &unique("void"), true).await;
    assert_eq!(
        (v.status, v.code()),
        (StatusCode::CONFLICT, "voucher_expired")
    );
    let v = void(&app, "ZZZZZZZZZZZZZZZZ", &unique("void"), false).await;
    assert_eq!(
        (v.status, v.code()),
        (StatusCode::NOT_FOUND, "voucher_not_found")
    );
    let v = void(&app, "not-a-code\u{7f}", &unique("void"), false).await;
    assert_eq!(v.status, StatusCode::NOT_FOUND);
    // Bad bodies: a wrong type, an unknown field, a NUL.
    for body in [
        json!({"return_stock": "yes"}),
        json!({"return_stock": true, "reason": "bots"}),
        json!({"return_stock\u{0}": true}),
    ] {
        let v = admin_request(
            &app,
            BOB_TOKEN,
            reqwest::Method::POST,
            &format!("/v1/admin/vouchers/{kept}/void"),
            &unique("void"),
            Some(&body),
        )
        .await;
        assert_eq!(
            v.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            v.body
        );
    }
    // A user may not void.
    let v = app
        .user_post(
            &ht,
            &format!("/v1/admin/vouchers/{kept}/void"),
            &unique("void"),
            None,
        )
        .await;
    assert_eq!(v.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_void_racing_a_redemption_of_the_same_voucher_exactly_one_wins() {
    const N: usize = 50;
    let app = app().await;
    let campaign = app.campaign(N as i64, N as i64).await;
    let user = unique("racer");
    let t = token(&user);
    let mut codes = Vec::new();
    for _ in 0..N {
        codes.push(grab_code(&app, &user, &campaign).await);
    }
    let races = codes.iter().enumerate().map(|(i, code)| {
        let (app, t, code) = (app.clone(), t.clone(), code.clone());
        async move {
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let b = barrier.clone();
            let (a2, c2) = (app.clone(), code.clone());
            let voiding = tokio::spawn(async move {
                b.wait().await;
                void(&a2, &c2, &unique("void"), i % 2 == 0).await
            });
            let b = barrier.clone();
            let c3 = code.clone();
            let redeeming = tokio::spawn(async move {
                b.wait().await;
                redeem(&app, &t, &c3, &format!("race-order-{i}")).await
            });
            (
                code,
                voiding.await.unwrap(),
                redeeming.await.unwrap(),
                i % 2 == 0,
            )
        }
    });
    let mut voids_won = 0;
    let mut returned = 0;
    for (code, v, r) in join_all(races)
        .await
        .into_iter()
        .map(|(c, v, r, ret)| {
            if v.status == StatusCode::OK && ret {
                returned += 1;
            }
            (c, v, r)
        })
        .collect::<Vec<_>>()
    {
        let status: String = sqlx::query_scalar("SELECT status FROM vouchers WHERE code = $1")
            .bind(&code)
            .fetch_one(&app.db)
            .await
            .unwrap();
        match (v.status, r.status) {
            (StatusCode::OK, StatusCode::CONFLICT) => {
                assert_eq!(r.code(), "voucher_voided");
                assert_eq!(status, "voided");
                voids_won += 1;
            }
            (StatusCode::CONFLICT, StatusCode::CREATED) => {
                assert_eq!(v.code(), "voucher_already_redeemed");
                assert_eq!(status, "redeemed");
            }
            other => panic!(
                "not exactly one winner for {code}: {other:?} {:?} {:?}",
                v.body, r.body
            ),
        }
    }
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"].as_i64().unwrap(), N as i64 - returned);
    assert_eq!(c["remaining"].as_i64().unwrap(), returned);
    let redemptions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id
         WHERE v.campaign_id = $1 AND r.status = 'active'",
    )
    .bind(Uuid::parse_str(&campaign).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        redemptions,
        N as i64 - voids_won,
        "every lost redemption left nothing"
    );
}

#[tokio::test]
async fn admin_changes_name_their_actor_and_the_log_filters_by_type() {
    let app = app().await;
    // Alice creates; Bob sends Alice's key with the same body: the shared scope
    // `admin` replays it (keys recorded before named admins still replay).
    let key = unique("create");
    let body = crate::helpers::campaign_body(5, 1);
    let created = admin_request(
        &app,
        ALICE_TOKEN,
        reqwest::Method::POST,
        "/v1/admin/campaigns",
        &key,
        Some(&body),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let replayed = admin_request(
        &app,
        BOB_TOKEN,
        reqwest::Method::POST,
        "/v1/admin/campaigns",
        &key,
        Some(&body),
    )
    .await;
    assert!(replayed.replayed);
    assert_eq!(replayed.bytes, created.bytes);
    let id = created.body["id"].as_str().unwrap().to_string();
    let patched = admin_request(
        &app,
        BOB_TOKEN,
        reqwest::Method::PATCH,
        &format!("/v1/admin/campaigns/{id}"),
        &unique("patch"),
        Some(&json!({"add_stock": 100000})),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);
    // ADMIN_TOKEN still works, as the admin named `admin`.
    app.admin_patch(&id, json!({"paused": true})).await;

    let mine = event_where(&app, "campaign.created", |e| {
        e["data"]["campaign"]["id"] == id.as_str()
    })
    .await;
    assert_eq!(mine["data"]["actor"], json!({"admin": "alice"}));
    let created = events_of(&app, "campaign.created").await;
    assert!(created.iter().all(|e| e["type"] == "campaign.created"));
    // Both updates, once the later one is listed.
    event_where(&app, "campaign.updated", |e| {
        e["data"]["campaign"]["id"] == id.as_str() && e["data"]["campaign"]["paused"] == true
    })
    .await;
    let updates: Vec<Value> = events_of(&app, "campaign.updated")
        .await
        .into_iter()
        .filter(|e| e["data"]["campaign"]["id"] == id.as_str())
        .collect();
    let actors: Vec<&Value> = updates
        .iter()
        .map(|e| &e["data"]["actor"]["admin"])
        .collect();
    assert_eq!(actors, [&json!("bob"), &json!("admin")]);
    assert_eq!(updates[0]["data"]["change"]["add_stock"], 100000);

    let (status, body) = app
        .get_json("/v1/admin/events?type=campaign.deleted", Some(BOB_TOKEN))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    let (status, _) = app
        .get_json("/v1/admin/events?type=%00", Some(BOB_TOKEN))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A token no admin has is 401, whatever its length.
    let (status, _) = app
        .get_json(
            "/v1/admin/events",
            Some(&"alice-admin-token-0123456789x".repeat(100)),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_same_void_sent_many_times_at_once_voids_and_returns_stock_once() {
    let app = app().await;
    let campaign = app.campaign(3, 1).await;
    let code = grab_code(&app, &unique("bot"), &campaign).await;
    let key = unique("void");
    let answers = join_all((0..8).map(|_| void(&app, &code, &key, true))).await;
    let mut bodies = Vec::new();
    for a in &answers {
        match (a.status, a.code()) {
            (StatusCode::OK, _) => bodies.push(a.bytes.clone()),
            (StatusCode::CONFLICT, "idempotency_key_in_use") => {}
            other => panic!("{other:?}: {:?}", a.body),
        }
    }
    assert!(!bodies.is_empty());
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one answer for one key"
    );
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(
        (c["remaining"].as_i64(), c["issued"].as_i64()),
        (Some(3), Some(0))
    );
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE type = 'voucher.voided' AND data->'voucher'->>'code' = $1",
    )
    .bind(&code)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(events, 1);
}

/// The holder filter an instance built while a campaign was sold out must not answer
/// for it once a returned unit was granted again: `issued` is back at the same number
/// with another holder. A grant made through another instance is replayed here.
#[tokio::test]
async fn a_grant_of_a_returned_unit_is_replayed_by_an_instance_that_knew_the_campaign_sold_out() {
    let here = app().await;
    let there = app().await;
    let campaign = here.campaign(2, 1).await;
    let bot = grab_code(&here, &unique("bot"), &campaign).await;
    grab_code(&here, &unique("human"), &campaign).await;
    // Sold out, as this instance's snapshot and holder filter know it: the first
    // refusal comes from Postgres and refreshes the snapshot, the second from memory,
    // which builds the filter of the campaign's holders.
    sold_out_here(&here, &campaign).await;
    assert_eq!(
        void(&here, &bot, &unique("void"), true).await.status,
        StatusCode::OK
    );
    // The returned unit is granted through the other instance.
    let (late, key) = (unique("late"), unique("late-grab"));
    let granted = there.grab(&token(&late), &campaign, &key).await;
    assert_eq!(granted.status, StatusCode::CREATED, "{:?}", granted.body);
    // This instance learns the campaign is sold out again (a refusal from Postgres
    // refreshes its snapshot), then is sent the late grab's retry.
    sold_out_here(&here, &campaign).await;
    let retry = here.grab(&token(&late), &campaign, &key).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert!(retry.replayed);
    assert_eq!(retry.bytes, granted.bytes);
    here.assert_invariants(&campaign).await;
}

/// Two grabs by new users refused `sold_out` on `app`: the first may be Postgres'
/// answer (which refreshes the snapshot), the second is the snapshot's.
async fn sold_out_here(app: &TestApp, campaign: &str) {
    for _ in 0..2 {
        let g = app
            .grab(&token(&unique("probe")), campaign, &unique("g"))
            .await;
        assert_eq!(g.code(), "sold_out", "{:?}", g.body);
    }
}

/// A grant writes no copy of its answer or of its voucher: the key's record names the
/// voucher and the `voucher.issued` event has no data of its own (migration 0019).
/// Both are rebuilt from the voucher row, as they were at grant time, whatever the
/// voucher became since: a replay read from Postgres (by an instance that never saw
/// the grant) is the 201 sent at grant time byte for byte, and the event is that body
/// plus the holder, for a voucher since redeemed, one since voided, and one untouched,
/// of fixed and percent campaigns, a holder named in Unicode among them.
#[tokio::test]
async fn a_grant_is_replayed_and_logged_as_granted_from_its_voucher_row_alone() {
    let here = app().await;
    let fixed = here.campaign(10, 3).await;
    let mut body = campaign_body(10, 3);
    body["voucher"] = json!({
        "discount": {"type": "percent", "basis_points": 1250, "max_amount": 75000, "currency": "VND"},
        "valid_for_seconds": 3600
    });
    let created = here
        .admin_post("/v1/admin/campaigns", &unique("c"), &body)
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let percent = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let holder = unique("hölder-ünïcode\"q");
    let t = token(&holder);
    let mut grants = Vec::new();
    for campaign in [&fixed, &fixed, &fixed, &percent] {
        let key = unique("g");
        let g = here.grab(&t, campaign, &key).await;
        assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
        grants.push((campaign.clone(), key, g));
    }
    let code = |i: usize| {
        grants[i].2.body["voucher"]["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r = redeem(&here, &t, &code(0), &unique("order")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        void(&here, &code(1), &unique("void"), false).await.status,
        StatusCode::OK
    );

    let there = app().await;
    for (campaign, key, granted) in &grants {
        let id = Uuid::parse_str(granted.body["voucher"]["id"].as_str().unwrap()).unwrap();
        let (body, voucher): (Option<Vec<u8>>, Option<Uuid>) = sqlx::query_as(
            "SELECT response_body, voucher_id FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(format!("user:{holder}"))
        .bind(key)
        .fetch_one(&there.db)
        .await
        .unwrap();
        assert_eq!((body, voucher), (None, Some(id)), "the record holds a copy");
        let replay = there.grab(&t, campaign, key).await;
        assert_eq!(replay.status, StatusCode::CREATED, "{:?}", replay.body);
        assert!(replay.replayed);
        assert_eq!(
            String::from_utf8_lossy(&replay.bytes),
            String::from_utf8_lossy(&granted.bytes)
        );

        let (seq, data): (i64, Option<Value>) = sqlx::query_as(
            "SELECT seq, data FROM events WHERE id = $1 AND type = 'voucher.issued'",
        )
        .bind(id)
        .fetch_one(&there.db)
        .await
        .unwrap();
        assert_eq!(data, None, "the event holds a copy");
        let mut wanted = granted.body.clone();
        wanted["user_id"] = holder.clone().into();
        let mut listed = Value::Null;
        for _ in 0..200 {
            let page = there
                .admin_get(&format!(
                    "/v1/admin/events?type=voucher.issued&after={}&limit=1",
                    seq - 1
                ))
                .await;
            listed = page["items"][0].clone();
            if listed["id"] == id.to_string() {
                break;
            }
            // Held back while an older transaction anywhere on the server is open.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(listed["data"], wanted);
    }
}
