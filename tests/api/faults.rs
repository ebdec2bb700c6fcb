//! Postgres going away mid-session: voucherd answers 503 with Retry-After (never a
//! 500, never a hang), says so on /readyz, changes nothing, and recovers by itself.

use reqwest::StatusCode;

use crate::helpers::{ProxyMode, RedisMode, RedisProxy, TestApp, database_url, token, unique};

/// A voucherd whose Postgres connection runs through a proxy the test can cut.
async fn behind_a_cuttable_proxy() -> (RedisProxy, std::sync::Arc<TestApp>) {
    let (server, name) = database_url()
        .rsplit_once('/')
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .unwrap();
    let host = server
        .rsplit_once('@')
        .map_or(server.trim_start_matches("postgres://"), |(_, h)| h)
        .to_string();
    let proxy = RedisProxy::to(&host).await;
    let via_proxy = format!(
        "{}@{}/{name}",
        server.rsplit_once('@').unwrap().0,
        proxy.url
    );
    let app = TestApp::spawn_with(RedisMode::Real, &[("DATABASE_URL", via_proxy.as_str())]).await;
    (proxy, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_answers_503_and_the_pool_recovers() {
    // The direct instance migrates the database and owns the campaign.
    let direct = TestApp::spawn().await;
    let campaign = direct.campaign(10, 5).await;
    let (proxy, app) = behind_a_cuttable_proxy().await;
    let t = token(&unique("patient"));
    assert_eq!(
        app.grab(&t, &campaign, &unique("k")).await.status,
        StatusCode::CREATED
    );

    proxy.set(ProxyMode::Dead);
    let key = unique("during-outage");
    let refused = app.grab(&t, &campaign, &key).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = app
        .client
        .post(app.url(&format!("/v1/campaigns/{campaign}/claims")))
        .bearer_auth(&t)
        .header("Idempotency-Key", unique("k"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));

    proxy.set(ProxyMode::Pass);
    // The same key succeeds once Postgres is back, without restarting voucherd.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let g = app.grab(&t, &campaign, &key).await;
        if g.status == StatusCode::CREATED {
            assert!(
                !g.replayed,
                "the refused attempt must not have been recorded"
            );
            break;
        }
        assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", g.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never recovered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let c = direct.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 2);
}

/// A grab this instance answered is replayed from memory while Postgres is down,
/// even once the campaign's cached snapshot has expired: the replay must not depend
/// on looking the campaign up first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_granted_key_is_replayed_during_an_outage_after_the_campaign_snapshot_expired() {
    let direct = TestApp::spawn().await;
    let campaign = direct.campaign(10, 1).await;
    let (proxy, app) = behind_a_cuttable_proxy().await;
    let t = token(&unique("retrier"));
    let key = unique("granted-before-outage");
    let first = app.grab(&t, &campaign, &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);

    proxy.set(ProxyMode::Dead);
    // The public read is served from the snapshot while one is cached (in process,
    // then in Redis) and needs Postgres once none is: its 503 says the snapshot is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let resp = app
            .client
            .get(app.url(&format!("/v1/campaigns/{campaign}")))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            std::time::Instant::now() < deadline,
            "the campaign snapshot never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let retry = app.grab(&t, &campaign, &key).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert!(retry.replayed);
    assert_eq!(retry.bytes, first.bytes);
    // A fresh key still needs Postgres, and is refused with nothing done.
    let fresh = app.grab(&t, &campaign, &unique("k")).await;
    assert_eq!(fresh.status, StatusCode::SERVICE_UNAVAILABLE);

    proxy.set(ProxyMode::Pass);
    let c = direct.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 1);
}

/// An instance that starts while another holds the migration lock (a long migration
/// on a big table) waits past the request bounds' lock timeout (3 s) instead of
/// exiting, then migrates and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_starting_during_another_migration_waits_then_serves() {
    use sqlx::{Connection, migrate::Migrate};
    let url = crate::helpers::isolated_database("migration_lock").await;
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    other.lock().await.unwrap();
    let env = std::collections::HashMap::from([
        ("DATABASE_URL", url.clone()),
        ("JWT_SECRET", crate::helpers::JWT_SECRET.to_string()),
        ("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN.to_string()),
    ]);
    let settings = voucherd::settings_from_lookup(|k| env.get(k).cloned()).unwrap();
    let starting = tokio::spawn(async move { voucherd::migrate(&settings).await });
    // The scenario itself, not a synchronisation: the other migration outlasts
    // the 3 s lock timeout that bounds requests.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(
        !starting.is_finished(),
        "gave up waiting: {:?}",
        starting.await
    );
    other.unlock().await.unwrap();
    starting
        .await
        .unwrap()
        .expect("migrates once the lock is free");
    let app = TestApp::spawn_with(RedisMode::None, &[("DATABASE_URL", url.as_str())]).await;
    let (status, _) = app.get_json("/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A TCP proxy in front of Postgres that holds back the server's answer to `BEGIN`
/// (its `CommandComplete`) until told, so a test can abandon a `begin` at exactly
/// the point where Postgres has begun the transaction and the client has not heard.
struct HoldsBegin {
    addr: String,
    holding: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

async fn hold_begin_replies() -> HoldsBegin {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = database_url();
    let host = upstream
        .split_once('@')
        .map_or(upstream.as_str(), |(_, h)| h)
        .trim_start_matches("postgres://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let holding = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (h, r) = (holding.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(&host).await.unwrap();
            let (mut from_client, mut to_client) = inbound.into_split();
            let (mut from_server, mut to_server) = outbound.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
            });
            let (h, r) = (h.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_server.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if buf[..n].windows(6).any(|w| w == b"BEGIN\0") {
                        h.notify_one();
                        r.notified().await;
                    }
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    HoldsBegin {
        addr,
        holding,
        release,
    }
}

/// A transaction whose opener gives up while Postgres' answer to `BEGIN` is on its
/// way (a client gone, a request timed out) leaves nothing open on the connection
/// it used: otherwise the next user of that connection (a grant batch meant as one
/// implicit transaction) would run inside the stray transaction and vanish with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_abandoned_while_beginning_leaves_its_connection_clean() {
    use sqlx::{Executor, Row};
    let proxy = hold_begin_replies().await;
    let via_proxy = format!(
        "{}@{}/{}",
        database_url().rsplit_once('@').unwrap().0,
        proxy.addr,
        database_url().rsplit_once('/').unwrap().1
    );
    let env = std::collections::HashMap::from([
        ("DATABASE_URL", via_proxy),
        ("JWT_SECRET", crate::helpers::JWT_SECRET.to_string()),
        ("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN.to_string()),
        ("DATABASE_MAX_CONNECTIONS", "2".to_string()),
        ("GRAB_WRITER_CONNECTIONS", "1".to_string()),
    ]);
    let settings = voucherd::settings_from_lookup(|k| env.get(k).cloned()).unwrap();
    let pool = voucherd::pool(&settings).unwrap();
    let abandoned = {
        let pool = pool.clone();
        tokio::spawn(async move { voucherd::begin(&pool).await.map(|_| ()) })
    };
    proxy.holding.notified().await;
    abandoned.abort();
    proxy.release.notify_one();
    // The one connection comes back to the pool (in a task of its own).
    for _ in 0..500 {
        if pool.size() == 1 && pool.num_idle() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!((pool.size(), pool.num_idle()), (1, 1));
    let mut conn = pool.acquire().await.unwrap();
    // By the simple protocol, where a lone statement's transaction starts with it:
    // inside an open transaction block, `now()` is earlier.
    let row = conn
        .fetch_one("SELECT now() <> statement_timestamp()")
        .await
        .unwrap();
    assert!(
        !row.get::<bool, _>(0),
        "the connection was lent inside a stray transaction"
    );
}

/// A migration that needs a table lock held by a long transaction waits for it only
/// briefly at a time, so the requests queued behind it are not held for as long as
/// that transaction lasts: a reader of the table, sent while the migration waits,
/// is served within its own one-second lock bound. Then the migration completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waiting_for_a_table_lock_does_not_hold_requests_behind_it() {
    use sqlx::{Connection, Executor};
    let url = crate::helpers::isolated_database("migration_table_lock").await;
    let mut setup = sqlx::PgConnection::connect(&url).await.unwrap();
    // Back to the schema before migration 12, as a database not yet upgraded.
    setup
        .execute(
            "DELETE FROM _sqlx_migrations WHERE version = 12;
             DROP TABLE orders;
             DROP INDEX redemptions_active_order_idx;
             ALTER TABLE campaigns DROP CONSTRAINT campaigns_voucher_expires_after_ends,
                 DROP CONSTRAINT campaigns_voucher_expiry_given,
                 DROP COLUMN max_per_order, DROP COLUMN voucher_expires_at,
                 ALTER COLUMN valid_for_seconds SET NOT NULL;",
        )
        .await
        .unwrap();
    // A long transaction (a report, an audit) holding the table.
    let mut long = sqlx::PgConnection::connect(&url).await.unwrap();
    long.execute("BEGIN; LOCK TABLE campaigns IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let env = std::collections::HashMap::from([
        ("DATABASE_URL", url.clone()),
        ("JWT_SECRET", crate::helpers::JWT_SECRET.to_string()),
        ("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN.to_string()),
    ]);
    let settings = voucherd::settings_from_lookup(|k| env.get(k).cloned()).unwrap();
    let migrating = tokio::spawn(async move { voucherd::migrate(&settings).await });
    crate::helpers::lock_waiters(&url, "voucherd-migrate", 1).await;
    let mut probe = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut reader = sqlx::PgConnection::connect(&url).await.unwrap();
    reader.execute("SET lock_timeout = '1s'").await.unwrap();
    let read = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM campaigns")
        .fetch_one(&mut reader)
        .await;
    assert!(
        read.is_ok(),
        "a reader was held behind the migration: {read:?}"
    );
    assert!(!migrating.is_finished());
    long.execute("COMMIT").await.unwrap();
    migrating
        .await
        .unwrap()
        .expect("migrates once the table is free");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = 12")
            .fetch_one(&mut probe)
            .await
            .unwrap();
    assert_eq!(applied, 1);
}
