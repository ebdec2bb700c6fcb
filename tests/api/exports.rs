//! CSV exports: what finance opens in a spreadsheet (a header, RFC 4180 quoting,
//! formula cells defused), the bound on exports at once, an export taken while grabs
//! continue (one snapshot), and an export cut off mid-stream, which a client must see
//! as incomplete.

use std::{collections::HashSet, sync::Arc, time::Duration};

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, RedisMode, TestApp, token, unique};

/// Parses RFC 4180 CSV: quoted fields may hold commas, doubled quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// The rows of a CSV as maps from the header's names.
fn records(text: &str) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let mut rows = parse_csv(text).into_iter();
    let header = rows.next().expect("a header row");
    let records = rows
        .map(|r| {
            assert_eq!(r.len(), header.len(), "{r:?}");
            header.iter().cloned().zip(r).collect()
        })
        .collect();
    (header, records)
}

async fn export(app: &TestApp, campaign: &str, what: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/admin/campaigns/{campaign}/{what}.csv")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

/// Adds `n` vouchers to `campaign` straight in SQL (many more than grabs would make
/// in a test's time), keeping what the audit checks true: one holder each, counted in
/// `user_grants`, and `issued` + `remaining` = `total_stock`.
async fn seed_vouchers(app: &TestApp, campaign: &str, n: i64) {
    let id = Uuid::parse_str(campaign).unwrap();
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    let prefix = unique("seeded");
    sqlx::query(
        "INSERT INTO vouchers (id, code, campaign_id, user_id, discount, min_order_amount,
                               issued_at, expires_at)
         SELECT gen_random_uuid(), upper(substr(md5(random()::text || g::text), 1, 16)), c.id,
                $2 || '-' || g, c.discount, c.min_order_amount, now(), now() + interval '7 days'
         FROM campaigns c, generate_series(1, $3) AS g WHERE c.id = $1",
    )
    .bind(id)
    .bind(&prefix)
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO user_grants (campaign_id, user_id, granted)
         SELECT $1, $2 || '-' || g, 1 FROM generate_series(1, $3) AS g",
    )
    .bind(id)
    .bind(&prefix)
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE campaigns SET remaining = remaining - $2, issued = issued + $2 WHERE id = $1",
    )
    .bind(id)
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn exports_quote_rfc_4180_and_defuse_formula_cells() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(20, 1).await;
    let tag = Uuid::new_v4().simple().to_string();
    let users = [
        format!("=HYPERLINK(\"http://evil\",\"{tag}\")"),
        format!("+{tag}"),
        format!("-{tag}"),
        format!("@SUM(A1){tag}"),
        // importers that trim cells read these as formulas too
        format!(" =1+1{tag}"),
        format!("\u{a0}=2+3{tag}"),
        format!("\u{ff1d}3+4{tag}"),
        format!("comma, \"quote\" {tag}"),
        format!("plain-{tag}"),
    ];
    let mut codes = Vec::new();
    for user in &users {
        let g = app.grab(&token(user), &campaign, &unique("g")).await;
        assert_eq!(g.status, StatusCode::CREATED);
        codes.push(g.body["voucher"]["code"].as_str().unwrap().to_string());
    }
    let order = "=cmd|' /C calc'!A0";
    let r = app
        .user_post(
            &token(&users[8]),
            &format!("/v1/vouchers/{}/redemptions", codes[8]),
            &unique("r"),
            Some(&json!({"order_id": order, "order_amount": 250000, "currency": "VND"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let resp = export(&app, &campaign, "vouchers").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("vouchers.csv")
    );
    let text = resp.text().await.unwrap();
    let (header, rows) = records(&text);
    assert_eq!(
        header,
        [
            "id",
            "code",
            "campaign_id",
            "user_id",
            "status",
            "discount_type",
            "discount_amount",
            "discount_basis_points",
            "discount_max_amount",
            "currency",
            "min_order_amount",
            "issued_at",
            "expires_at",
            "redeemed_at",
            "order_id",
            "voided_at",
            "stock_returned"
        ]
    );
    assert_eq!(rows.len(), users.len());
    for (user, code) in users.iter().zip(&codes) {
        let row = rows.iter().find(|r| r["code"] == *code).unwrap();
        let formula = user
            .trim_start_matches([' ', '\u{a0}'])
            .starts_with(['=', '+', '-', '@', '\u{ff1d}']);
        let expected = if formula {
            format!("'{user}")
        } else {
            user.clone()
        };
        assert_eq!(row["user_id"], expected, "{user:?}");
        assert_eq!(row["campaign_id"], campaign);
        assert_eq!(row["discount_type"], "fixed");
        assert_eq!(row["currency"], "VND");
        assert!(row["issued_at"].ends_with('Z'), "{}", row["issued_at"]);
    }
    let spent = rows.iter().find(|r| r["code"] == codes[8]).unwrap();
    assert_eq!(
        (spent["status"].as_str(), spent["order_id"].as_str()),
        ("redeemed", &*format!("'{order}"))
    );

    let text = export(&app, &campaign, "redemptions")
        .await
        .text()
        .await
        .unwrap();
    let (header, rows) = records(&text);
    assert_eq!(header[0], "id");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["order_id"], format!("'{order}"));
    assert_eq!(rows[0]["code"], codes[8]);
    assert_eq!(rows[0]["discount_amount"], "50000");

    // Nothing to export, and who may not.
    let resp = export(&app, &Uuid::now_v7().to_string(), "vouchers").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = export(&app, "not-a-campaign", "redemptions").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app
        .client
        .get(app.url(&format!("/v1/admin/campaigns/{campaign}/vouchers.csv")))
        .bearer_auth(token("someone"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// The body of an export of `campaign`, once the one export permit is free again
/// (an export refused meanwhile is 503 `exports_busy`, and tried again).
async fn export_once_free(app: &TestApp, campaign: &str, what: &str) -> String {
    for _ in 0..200 {
        let resp = export(app, campaign, what).await;
        if resp.status() == StatusCode::OK {
            return resp.text().await.unwrap();
        }
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the export permit never came back");
}

/// The export backend of this test's campaign, once Postgres is blocked writing to
/// voucherd (the export is mid-stream, held back by its client): its pid.
async fn stalled_export_backend(app: &TestApp, campaign: &str) -> i32 {
    for _ in 0..400 {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'voucherd-export'
             AND wait_event = 'ClientWrite' AND strpos(query, $1) > 0",
        )
        .bind(campaign)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seen: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT state, wait_event, left(query, 80) FROM pg_stat_activity WHERE application_name = 'voucherd-export'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    panic!("the export never stalled on its client: {seen:?}");
}

#[tokio::test]
async fn an_export_cut_off_mid_stream_is_seen_incomplete_and_exports_max_bounds_them() {
    let app = TestApp::spawn_with(RedisMode::Real, &[("EXPORTS_MAX", "1")]).await;
    let campaign = app.campaign(1_000_000, 1).await;
    seed_vouchers(&app, &campaign, 100_000).await;

    // A client that reads one chunk and stops: the export stays open, holding the
    // one permit, with Postgres blocked writing to voucherd.
    let resp = export(&app, &campaign, "vouchers").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp;
    let first = body.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"id,code,"));
    let pid = stalled_export_backend(&app, &campaign).await;

    // A second export meanwhile is refused at once, with Retry-After.
    let busy = export(&app, &campaign, "redemptions").await;
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.headers().contains_key("retry-after"));
    let problem: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(problem["code"], "exports_busy");

    // The export's backend dies mid-stream: the client must see a broken body, never
    // a clean end.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(killed);
    let mut received = first.len();
    let mut ended_with = None;
    loop {
        match body.chunk().await {
            Ok(Some(c)) => received += c.len(),
            Ok(None) => break,
            Err(e) => {
                ended_with = Some(e);
                break;
            }
        }
    }
    let error = ended_with.expect("the cut-off export ended like a whole one");
    assert!(error.is_body() || error.is_decode(), "{error:?}");

    // The permit came back with the failed export: the next one runs whole, and the
    // cut one was shorter (how much shorter depends on the sockets' buffers).
    let whole = export_once_free(&app, &campaign, "vouchers").await;
    assert_eq!(whole.lines().count(), 100_001);
    assert!(
        received < whole.len(),
        "{received} bytes of {}: whole",
        whole.len()
    );
    app.assert_invariants(&campaign).await;
}

#[tokio::test]
async fn a_client_leaving_mid_export_frees_its_permit_and_its_connection() {
    let app = TestApp::spawn_with(RedisMode::Real, &[("EXPORTS_MAX", "1")]).await;
    let campaign = app.campaign(1_000_000, 1).await;
    seed_vouchers(&app, &campaign, 100_000).await;
    let resp = export(&app, &campaign, "vouchers").await;
    let mut body = resp;
    body.chunk().await.unwrap().unwrap();
    let pid = stalled_export_backend(&app, &campaign).await;
    drop(body);
    // Postgres' backend goes with the client: nothing keeps its snapshot open.
    let mut gone = false;
    for _ in 0..400 {
        let alive: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if !alive {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "the export's backend outlived its client");
    export_once_free(&app, &campaign, "redemptions").await;
}

#[tokio::test]
async fn an_export_while_grabs_continue_holds_exactly_the_rows_of_its_snapshot() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(1_000_000, 1).await;
    seed_vouchers(&app, &campaign, 30_000).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let grabbers: Vec<_> = (0..16)
        .map(|_| {
            let (app, campaign, stop) = (app.clone(), campaign.clone(), stop.clone());
            tokio::spawn(async move {
                let mut granted = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let g = app
                        .grab_settled(&token(&unique("u")), &campaign, &unique("g"))
                        .await;
                    assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
                    granted += 1;
                }
                granted
            })
        })
        .collect();
    // Grabs are under way before the export starts, and go on during it.
    while app
        .admin_get(&format!("/v1/admin/campaigns/{campaign}"))
        .await["issued"]
        .as_i64()
        .unwrap()
        < 30_050
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = export(&app, &campaign, "vouchers")
        .await
        .text()
        .await
        .unwrap();
    let after_export = app
        .admin_get(&format!("/v1/admin/campaigns/{campaign}"))
        .await["issued"]
        .as_i64()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let granted: usize = join(grabbers).await;
    assert!(granted > 50);

    let (_, rows) = records(&text);
    let exported: HashSet<Uuid> = rows
        .iter()
        .map(|r| Uuid::parse_str(&r["id"]).unwrap())
        .collect();
    assert_eq!(exported.len(), rows.len(), "a voucher exported twice");
    // Every grant batch is one transaction: in one snapshot, all of its vouchers or
    // none. And the export is a moment between the grabs before it and after it.
    let batches: Vec<(String, Vec<Uuid>)> = sqlx::query_as(
        "SELECT xmin::text, array_agg(id) FROM vouchers WHERE campaign_id = $1 GROUP BY xmin::text",
    )
    .bind(Uuid::parse_str(&campaign).unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    let mut in_db = 0;
    for (xmin, ids) in &batches {
        let inside = ids.iter().filter(|id| exported.contains(id)).count();
        assert!(
            inside == 0 || inside == ids.len(),
            "transaction {xmin}: {inside} of {} exported",
            ids.len()
        );
        in_db += ids.len();
    }
    assert!(rows.len() > 30_050, "{} rows", rows.len());
    assert!((rows.len() as i64) <= after_export);
    assert!(
        rows.len() < in_db,
        "no grab committed after the export's snapshot"
    );
    // Each exported row is the row as stored.
    let sample: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT id, code, user_id FROM vouchers WHERE campaign_id = $1 ORDER BY id DESC LIMIT 500",
    )
    .bind(Uuid::parse_str(&campaign).unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    for (id, code, user) in sample {
        if let Some(row) = rows.iter().find(|r| r["id"] == id.to_string()) {
            assert_eq!(
                (row["code"].as_str(), row["user_id"].as_str()),
                (code.as_str(), user.as_str())
            );
        }
    }
    app.assert_invariants(&campaign).await;
}

async fn join(handles: Vec<tokio::task::JoinHandle<usize>>) -> usize {
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total
}

/// Over HTTP/1.0 a body ends with the connection, so an export cut off mid-stream
/// would look whole: refused before any work, with 426.
#[tokio::test]
async fn an_export_over_http_1_0_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "GET /v1/admin/campaigns/{campaign}/vouchers.csv HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 426"), "{answer}");
    assert!(answer.contains("upgrade_required"), "{answer}");
}
