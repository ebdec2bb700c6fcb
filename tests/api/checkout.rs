//! Checkout that cannot overpay: order-level rules (one order is never discounted by
//! more than its amount, one voucher of a campaign per order unless the campaign
//! allows more, one amount and currency per order), quotes that agree with the
//! redemption, the order service's credential, and absolute voucher expiry.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Grab, RedisMode, TestApp, campaign_body, token, unique};

const SERVICE: &str = "orders";
const SERVICE_TOKEN: &str = "order-service-token-0123456789";

async fn app() -> Arc<TestApp> {
    TestApp::spawn_with(
        RedisMode::Real,
        &[("SERVICE_TOKENS", &format!("{SERVICE}:{SERVICE_TOKEN}"))],
    )
    .await
}

/// A campaign of fixed 50,000 vouchers, no minimum, `per_order` per order, and
/// `n` of its vouchers held by one new user: (campaign, token, user, codes).
async fn holder_of(
    app: &TestApp,
    n: usize,
    per_order: i64,
    discount: Value,
) -> (String, String, String, Vec<String>) {
    let campaign = campaign_of(app, n as i64, per_order, discount).await;
    let user = unique("shopper");
    let t = token(&user);
    let mut codes = Vec::new();
    for _ in 0..n {
        let g = app.grab(&t, &campaign, &unique("k")).await;
        assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
        codes.push(g.body["voucher"]["code"].as_str().unwrap().to_string());
    }
    (campaign, t, user, codes)
}

fn fixed(amount: i64) -> Value {
    json!({"type": "fixed", "amount": amount, "currency": "VND"})
}

fn order(id: &str, amount: i64) -> Value {
    json!({"order_id": id, "order_amount": amount, "currency": "VND"})
}

async fn redeem(app: &TestApp, t: &str, code: &str, body: &Value) -> Grab {
    app.user_post(
        t,
        &format!("/v1/vouchers/{code}/redemptions"),
        &unique("r"),
        Some(body),
    )
    .await
}

/// The sum of the active discounts of `user`'s order, from the rows.
async fn discounted(app: &TestApp, user: &str, order_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(discount_amount), 0)::bigint FROM redemptions
         WHERE user_id = $1 AND order_id = $2 AND status = 'active'",
    )
    .bind(user)
    .bind(order_id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn three_vouchers_of_50k_on_an_order_of_120k_take_off_at_most_100k() {
    let app = app().await;
    let (_, t, user, codes) = holder_of(&app, 3, 3, fixed(50_000)).await;
    let o = order("o-120k", 120_000);
    assert_eq!(
        redeem(&app, &t, &codes[0], &o).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        redeem(&app, &t, &codes[1], &o).await.status,
        StatusCode::CREATED
    );
    let third = redeem(&app, &t, &codes[2], &o).await;
    assert_eq!(
        (third.status, third.code()),
        (StatusCode::CONFLICT, "order_discount_exceeded"),
        "{:?}",
        third.body
    );
    assert_eq!(discounted(&app, &user, "o-120k").await, 100_000);
    // The refused voucher is untouched and the key unrecorded.
    let (_, v) = app
        .get_json(&format!("/v1/me/vouchers/{}", codes[2]), Some(&t))
        .await;
    assert_eq!(v["status"], "issued");

    // A rollback frees its share of the order: the third voucher fits now.
    let first_id: String = sqlx::query_scalar(
        "SELECT r.id::text FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id
         WHERE v.code = $1",
    )
    .bind(&codes[0])
    .fetch_one(&app.db)
    .await
    .unwrap();
    let back = app
        .user_post(
            &t,
            &format!("/v1/redemptions/{first_id}/rollback"),
            &unique("b"),
            None,
        )
        .await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(
        redeem(&app, &t, &codes[2], &o).await.status,
        StatusCode::CREATED
    );
    assert_eq!(discounted(&app, &user, "o-120k").await, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_redemptions_of_one_order_never_pass_its_amount() {
    let app = app().await;
    let (_, t, user, codes) = holder_of(&app, 6, 6, fixed(50_000)).await;
    let o = order("o-race", 120_000);
    let answers = join_all(codes.iter().map(|c| redeem(&app, &t, c, &o))).await;
    let granted = answers
        .iter()
        .filter(|g| g.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        granted,
        2,
        "{:?}",
        answers.iter().map(|g| &g.body).collect::<Vec<_>>()
    );
    for g in answers.iter().filter(|g| g.status != StatusCode::CREATED) {
        assert_eq!(g.code(), "order_discount_exceeded", "{:?}", g.body);
    }
    assert_eq!(discounted(&app, &user, "o-race").await, 100_000);
}

#[tokio::test]
async fn an_order_takes_one_voucher_of_a_campaign_by_default() {
    let app = app().await;
    let (_, t, _, codes) = holder_of(&app, 2, 1, fixed(1_000)).await;
    let o = order("o-1", 500_000);
    assert_eq!(
        redeem(&app, &t, &codes[0], &o).await.status,
        StatusCode::CREATED
    );
    let second = redeem(&app, &t, &codes[1], &o).await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::CONFLICT, "voucher_not_combinable")
    );
    // Another order takes it.
    let other = redeem(&app, &t, &codes[1], &order("o-2", 500_000)).await;
    assert_eq!(other.status, StatusCode::CREATED);
}

#[tokio::test]
async fn one_order_has_one_amount_and_two_users_orders_are_apart() {
    let app = app().await;
    let (_, t, _, codes) = holder_of(&app, 2, 2, fixed(1_000)).await;
    assert_eq!(
        redeem(&app, &t, &codes[0], &order("shared-id", 120_000))
            .await
            .status,
        StatusCode::CREATED
    );
    let other_amount = redeem(&app, &t, &codes[1], &order("shared-id", 130_000)).await;
    assert_eq!(
        (other_amount.status, other_amount.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "order_mismatch")
    );
    // Another user's order of the same id is another order, with its own amount.
    let (_, t2, _, codes2) = holder_of(&app, 1, 1, fixed(1_000)).await;
    let theirs = redeem(&app, &t2, &codes2[0], &order("shared-id", 50_000)).await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{:?}", theirs.body);
}

async fn quote(app: &TestApp, t: &str, code: &str, o: &Value) -> (StatusCode, Value) {
    let q = format!(
        "/v1/vouchers/{code}/quote?order_id={}&order_amount={}&currency={}",
        o["order_id"].as_str().unwrap(),
        o["order_amount"],
        o["currency"].as_str().unwrap()
    );
    app.get_json(&q, Some(t)).await
}

/// For every refusal a redemption can give, the quote just before names it (and
/// changes nothing), and for a redeemable one it names the discount given.
#[tokio::test]
async fn a_quote_agrees_with_the_redemption_that_follows_it() {
    let app = app().await;
    let (_, t, _, codes) = holder_of(&app, 6, 2, fixed(50_000)).await;
    // Scenarios, each a voucher and an order, set up so that redeeming gives `code`.
    let big = order("q-big", 120_000);
    assert_eq!(
        redeem(&app, &t, &codes[0], &big).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        redeem(&app, &t, &codes[1], &order("q-small", 60_000))
            .await
            .status,
        StatusCode::CREATED
    );
    sqlx::query("UPDATE vouchers SET expires_at = now() - interval '1 second' WHERE code = $1")
        .bind(&codes[5])
        .execute(&app.db)
        .await
        .unwrap();
    let mut high_minimum = campaign_body(10, 1);
    high_minimum["voucher"]["min_order_amount"] = json!(1_000_000);
    let resp = app
        .admin_post("/v1/admin/campaigns", &unique("c"), &high_minimum)
        .await;
    let minimum_campaign = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let g = app.grab(&t, &minimum_campaign, &unique("k")).await;
    let minimum_code = g.body["voucher"]["code"].as_str().unwrap().to_string();
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "voucher_already_redeemed",
            codes[0].clone(),
            order("q-other", 500_000),
        ),
        (
            "voucher_expired",
            codes[5].clone(),
            order("q-other", 500_000),
        ),
        (
            "currency_mismatch",
            codes[2].clone(),
            json!({"order_id": "q-usd", "order_amount": 500_000, "currency": "USD"}),
        ),
        ("order_mismatch", codes[2].clone(), order("q-big", 999_999)),
        ("order_below_minimum", minimum_code, order("q-min", 500_000)),
        (
            "order_discount_exceeded",
            codes[2].clone(),
            order("q-small", 60_000),
        ),
        ("", codes[3].clone(), order("q-big", 120_000)),
        (
            "voucher_not_combinable",
            codes[4].clone(),
            order("q-big", 120_000),
        ),
    ];
    for (want, code, o) in cases {
        let (status, q) = quote(&app, &t, &code, &o).await;
        assert_eq!(status, StatusCode::OK, "{want}: {q}");
        let r = redeem(&app, &t, &code, &o).await;
        if want.is_empty() {
            assert_eq!(q["redeemable"], true, "{q}");
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            assert_eq!(
                q["discount_amount"],
                r.body["redemption"]["discount_amount"]
            );
        } else {
            assert_eq!(
                (q["redeemable"].clone(), q["code"].as_str()),
                (json!(false), Some(want)),
                "{q}"
            );
            assert_eq!(r.code(), want, "{want}: {:?}", r.body);
        }
    }
    // Someone else's voucher is not found; bad query values are 422.
    let (status, _) = quote(&app, &token(&unique("stranger")), &codes[3], &big).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .get_json(
            &format!(
                "/v1/vouchers/{}/quote?order_id=x&order_amount=-5&currency=VND",
                codes[3]
            ),
            Some(&t),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
}

/// A user JWT signed as voucherd expects, expired an hour ago.
fn expired_token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() - 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The order service redeems, quotes and rolls back for a user whose own token has
/// long expired, naming them in `On-Behalf-Of`; anywhere else its token is 403.
#[tokio::test]
async fn the_order_service_redeems_for_a_user_and_nothing_else() {
    let app = app().await;
    let (campaign, _, user, codes) = holder_of(&app, 1, 1, fixed(50_000)).await;
    let path = format!("/v1/vouchers/{}/redemptions", codes[0]);
    let body = order("svc-1", 300_000);
    let expired = expired_token(&user);
    let by_user = app
        .user_post(&expired, &path, &unique("r"), Some(&body))
        .await;
    assert_eq!(by_user.status, StatusCode::UNAUTHORIZED);

    let service = |path: &str, key: &str, on_behalf_of: Option<&str>, body: Option<&Value>| {
        let mut req = app
            .client
            .post(app.url(path))
            .bearer_auth(SERVICE_TOKEN)
            .header("Idempotency-Key", key);
        if let Some(u) = on_behalf_of {
            req = req.header("On-Behalf-Of", u);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        async move { Grab::read(req.send().await.unwrap()).await }
    };
    let key = unique("svc");
    let redeemed = service(&path, &key, Some(&user), Some(&body)).await;
    assert_eq!(redeemed.status, StatusCode::CREATED, "{:?}", redeemed.body);
    let again = service(&path, &key, Some(&user), Some(&body)).await;
    assert!(again.replayed && again.bytes == redeemed.bytes);
    // The user it names is part of the request: the same key for another user is
    // another request, refused.
    let other_user = service(&path, &key, Some("someone-else"), Some(&body)).await;
    assert_eq!(other_user.code(), "idempotency_key_reused");
    // Another user's voucher is not found for this user.
    let stranger = service(&path, &unique("svc"), Some("someone-else"), Some(&body)).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    // Without On-Behalf-Of: refused, nothing done.
    let nobody = service(&path, &unique("svc"), None, Some(&body)).await;
    assert_eq!(nobody.status, StatusCode::BAD_REQUEST);

    let quoted = app
        .client
        .get(app.url(&format!(
            "/v1/vouchers/{}/quote?order_id=svc-2&order_amount=300000&currency=VND",
            codes[0]
        )))
        .bearer_auth(SERVICE_TOKEN)
        .header("On-Behalf-Of", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(quoted.status(), StatusCode::OK);
    let quoted: Value = quoted.json().await.unwrap();
    assert_eq!(quoted["code"], "voucher_already_redeemed");

    let rid = redeemed.body["redemption"]["id"].as_str().unwrap();
    let back = service(
        &format!("/v1/redemptions/{rid}/rollback"),
        &unique("svc"),
        Some(&user),
        None,
    )
    .await;
    assert_eq!(back.status, StatusCode::OK, "{:?}", back.body);

    // Everything else: 403.
    let grab = service(
        &format!("/v1/campaigns/{campaign}/claims"),
        &unique("svc"),
        Some(&user),
        None,
    )
    .await;
    assert_eq!(
        (grab.status, grab.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let admin = service(
        "/v1/admin/campaigns",
        &unique("svc"),
        Some(&user),
        Some(&campaign_body(1, 1)),
    )
    .await;
    assert_eq!(
        (admin.status, admin.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let wallet = app
        .client
        .get(app.url("/v1/me/vouchers"))
        .bearer_auth(SERVICE_TOKEN)
        .header("On-Behalf-Of", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(wallet.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn vouchers_expire_at_the_earlier_of_their_relative_and_absolute_expiry() {
    let app = app().await;
    let create = |voucher: Value, ends_at: &str| {
        let mut body = campaign_body(10, 1);
        body["ends_at"] = json!(ends_at);
        body["voucher"] = voucher;
        let app = app.clone();
        async move {
            app.admin_post("/v1/admin/campaigns", &unique("c"), &body)
                .await
        }
    };
    let discount = fixed(1_000);
    let cases = [
        // Absolute only.
        (
            json!({"discount": discount, "expires_at": "2099-06-01T00:00:00Z"}),
            "2099-06-01T00:00:00Z",
        ),
        // Both: the relative one (an hour) is earlier.
        (
            json!({"discount": discount, "valid_for_seconds": 3600, "expires_at": "2099-06-01T00:00:00Z"}),
            "",
        ),
    ];
    for (voucher, want) in cases {
        let resp = create(voucher, "2099-01-01T00:00:00Z").await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let c: Value = resp.json().await.unwrap();
        let g = app
            .grab(
                &token(&unique("u")),
                c["id"].as_str().unwrap(),
                &unique("k"),
            )
            .await;
        let expires =
            chrono::DateTime::parse_from_rfc3339(g.body["voucher"]["expires_at"].as_str().unwrap())
                .unwrap();
        if want.is_empty() {
            let issued = chrono::DateTime::parse_from_rfc3339(
                g.body["voucher"]["issued_at"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(expires - issued, chrono::Duration::hours(1));
        } else {
            assert_eq!(expires, chrono::DateTime::parse_from_rfc3339(want).unwrap());
        }
    }
    for (voucher, field) in [
        (json!({"discount": discount}), "voucher"),
        (
            json!({"discount": discount, "expires_at": "2098-01-01T00:00:00Z"}),
            "voucher.expires_at",
        ),
    ] {
        let resp = create(voucher, "2099-01-01T00:00:00Z").await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    // Moving the end past the vouchers' expiry is refused too.
    let resp = create(
        json!({"discount": discount, "expires_at": "2099-06-01T00:00:00Z"}),
        "2099-01-01T00:00:00Z",
    )
    .await;
    let c: Value = resp.json().await.unwrap();
    let patch = app
        .client
        .patch(app.url(&format!(
            "/v1/admin/campaigns/{}",
            c["id"].as_str().unwrap()
        )))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .header("Idempotency-Key", unique("p"))
        .json(&json!({"ends_at": "2099-07-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// A campaign of `discount` vouchers, no minimum, `per_user` per user, taking up to
/// `per_order` per order.
async fn campaign_of(app: &TestApp, per_user: i64, per_order: i64, discount: Value) -> String {
    let mut body = campaign_body(1000, per_user);
    body["max_per_order"] = json!(per_order);
    body["voucher"]["min_order_amount"] = json!(0);
    body["voucher"]["discount"] = discount;
    let resp = app
        .admin_post("/v1/admin/campaigns", &unique("c"), &body)
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Property: whatever mix of concurrent redemptions and rollbacks of fixed and percent
/// vouchers one order receives, the rows after every step show its active discounts
/// summing to no more than its amount, and no answer is a 500.
#[test]
fn concurrent_redemptions_and_rollbacks_never_overpay_an_order() {
    use proptest::{prelude::*, test_runner::TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(app());
    let (fixed_campaign, percent_campaign) = rt.block_on(async {
        (
            campaign_of(&app, 100, 8, fixed(40_000)).await,
            campaign_of(
                &app,
                100,
                8,
                json!({"type": "percent", "basis_points": 3000, "max_amount": 70_000, "currency": "VND"}),
            )
            .await,
        )
    });
    // Each step: the vouchers (of 8) to redeem and the ones whose redemption to roll
    // back, all sent at once.
    let step = (
        prop::collection::vec(0usize..8, 0..8),
        prop::collection::vec(0usize..8, 0..4),
    );
    let case = (50_000i64..400_000, prop::collection::vec(step, 1..5));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    runner
        .run(&case, |(amount, steps)| {
            rt.block_on(async {
                let user = unique("prop");
                let t = token(&user);
                let mut codes = Vec::new();
                for campaign in [&fixed_campaign, &percent_campaign] {
                    for _ in 0..4 {
                        let g = app.grab(&t, campaign, &unique("k")).await;
                        codes.push(g.body["voucher"]["code"].as_str().unwrap().to_string());
                    }
                }
                let o = order("prop-order", amount);
                for (redeems, rollbacks) in steps {
                    let live: Vec<String> = sqlx::query_scalar(
                        "SELECT r.id::text FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id
                         WHERE r.user_id = $1 AND r.status = 'active' AND v.code = ANY($2)",
                    )
                    .bind(&user)
                    .bind(rollbacks.iter().map(|i| codes[*i].clone()).collect::<Vec<_>>())
                    .fetch_all(&app.db)
                    .await
                    .unwrap();
                    let sent = redeems
                        .iter()
                        .map(|i| {
                            let (app, t, code, o) = (&app, &t, &codes[*i], &o);
                            async move { redeem(app, t, code, o).await }
                        })
                        .collect::<Vec<_>>();
                    let undone = live
                        .iter()
                        .map(|id| {
                            let (app, t) = (&app, &t);
                            let path = format!("/v1/redemptions/{id}/rollback");
                            async move { app.user_post(t, &path, &unique("b"), None).await }
                        })
                        .collect::<Vec<_>>();
                    let (a, b) = futures::future::join(join_all(sent), join_all(undone)).await;
                    for g in a.iter().chain(&b) {
                        assert!(
                            g.status.as_u16() < 500 || g.status == StatusCode::SERVICE_UNAVAILABLE,
                            "{:?}",
                            g.body
                        );
                    }
                    let total = discounted(&app, &user, "prop-order").await;
                    assert!(total <= amount, "{total} taken off an order of {amount}");
                }
            });
            Ok(())
        })
        .unwrap();
}

/// The order rule holds whatever isolation the database defaults to: an operator who
/// sets `repeatable read` as the default must not let two racing redemptions both
/// read the order's discounts from before the other committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_stays_exact_when_the_database_defaults_to_repeatable_read() {
    let url = crate::helpers::isolated_database("repeatable_read").await;
    let name = url.rsplit_once('/').unwrap().1.to_string();
    let admin = crate::helpers::database_url();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let app = TestApp::spawn_with(RedisMode::None, &[("DATABASE_URL", &url)]).await;
    let (_, t, user, codes) = holder_of(&app, 6, 6, fixed(50_000)).await;
    let o = order("o-rr", 120_000);
    // The order exists (its row committed), then the rest race for it.
    assert_eq!(
        redeem(&app, &t, &codes[0], &o).await.status,
        StatusCode::CREATED
    );
    let answers = join_all(codes[1..].iter().map(|c| redeem(&app, &t, c, &o))).await;
    let granted = 1 + answers
        .iter()
        .filter(|g| g.status == StatusCode::CREATED)
        .count();
    assert!(
        granted <= 2,
        "{granted} redemptions of 50,000 on an order of 120,000"
    );
    assert!(discounted(&app, &user, "o-rr").await <= 120_000);
}
