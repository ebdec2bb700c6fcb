//! Test harness: starts a real voucherd on an ephemeral port against real Postgres
//! and (optionally) real Redis, and offers typed helpers for the calls tests make.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use reqwest::{
    Response, StatusCode,
    header::{CONTENT_TYPE, HeaderName, HeaderValue},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Attempts `grab_settled` makes before calling the service stuck.
const RETRIES: usize = 20;

pub(crate) const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Where the tests' database lives; the check script exports it, the default
/// matches the local Postgres the dev script starts.
pub(crate) fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/voucherd_test".into())
}

pub(crate) fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/7".into())
}

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// Creates and migrates the test database once per test process.
async fn prepare_database(settings: &voucherd::Settings) {
    MIGRATED
        .get_or_init(|| async {
            voucherd::migrate(settings)
                .await
                .expect("Postgres must be running: scripts/check starts it");
        })
        .await;
}

pub(crate) struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    pub db: PgPool,
    /// The instance's background loops; dropped with the app.
    workers: std::sync::Mutex<Option<voucherd::Workers>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub(crate) enum RedisMode {
    Real,
    None,
    /// A port where nothing listens.
    Dead,
    /// This URL (a `RedisProxy`).
    Url(String),
}

impl TestApp {
    pub(crate) async fn spawn() -> Arc<TestApp> {
        Self::spawn_with(RedisMode::Real, &[]).await
    }

    pub(crate) async fn spawn_with(redis: RedisMode, extra: &[(&str, &str)]) -> Arc<TestApp> {
        Self::spawn_full(redis, extra, true).await
    }

    /// An instance without its background loops (purger, vacuum, Postgres watch,
    /// webhooks), for tests that count the database work requests cause.
    pub(crate) async fn spawn_quiet(redis: RedisMode, extra: &[(&str, &str)]) -> Arc<TestApp> {
        Self::spawn_full(redis, extra, false).await
    }

    async fn spawn_full(
        redis: RedisMode,
        extra: &[(&str, &str)],
        background: bool,
    ) -> Arc<TestApp> {
        let mut env: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), database_url()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("CORS_ALLOWED_ORIGINS".into(), "https://shop.example".into()),
            ("DATABASE_MAX_CONNECTIONS".into(), "20".into()),
            // Tests fire many concurrent grabs per user on purpose; the rate-limit
            // test turns limits back on.
            ("RATE_LIMIT_USER".into(), "0".into()),
        ]);
        match redis {
            RedisMode::Real => {
                env.insert("REDIS_URL".into(), redis_url());
            }
            RedisMode::Dead => {
                env.insert("REDIS_URL".into(), "redis://127.0.0.1:1".into());
            }
            RedisMode::Url(url) => {
                env.insert("REDIS_URL".into(), url);
            }
            RedisMode::None => {}
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = voucherd::settings_from_lookup(|k| env.get(k).cloned()).unwrap();
        if settings.database_url() == database_url() {
            prepare_database(&settings).await;
        }
        let db = voucherd::pool(&settings).unwrap();
        let state = voucherd::state(settings, db.clone()).unwrap();
        let workers = background.then(|| voucherd::spawn_workers(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = voucherd::ServerLimits::from_settings(&state.settings);
        let server = tokio::spawn(voucherd::run_server(
            listener,
            voucherd::app(state),
            limits,
            std::future::pending(),
        ));
        // reqwest is built without a default TLS backend; the service installs ring
        // only with its background loops, and a quiet instance has none.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client(
            reqwest::Client::builder()
                .pool_max_idle_per_host(512)
                .build()
                .unwrap(),
        );
        Arc::new(TestApp {
            addr,
            client,
            db,
            workers: std::sync::Mutex::new(workers),
            server,
        })
    }

    /// An instance on a database of its own, created empty for this test, for tests
    /// whose background workers must not see other tests' rows (webhook delivery).
    pub(crate) async fn spawn_isolated(name: &str, extra: &[(&str, &str)]) -> Arc<TestApp> {
        let url = isolated_database(name).await;
        let mut all: Vec<(&str, &str)> = vec![("DATABASE_URL", url.as_str())];
        all.extend_from_slice(extra);
        Self::spawn_with(RedisMode::None, &all).await
    }

    /// Stops the HTTP server and the background loops, as if the process died.
    pub(crate) fn kill(&self) {
        self.server.abort();
        self.workers.lock().unwrap().take();
    }

    /// POSTs as a user with a key and an optional JSON body.
    pub(crate) async fn user_post(
        &self,
        token: &str,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Grab {
        let mut req = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .header("Idempotency-Key", key);
        if let Some(b) = body {
            req = req.json(b);
        }
        Grab::read(req.send().await.unwrap()).await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) async fn admin_post(&self, path: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn admin_patch(&self, id: &str, body: Value) -> Value {
        let resp = self
            .client
            .patch(self.url(&format!("/v1/admin/campaigns/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", unique("patch"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// GETs `path` with an optional bearer token; returns the status and JSON body.
    pub(crate) async fn get_json(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn admin_get(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.unwrap()
    }

    /// Creates an open campaign and returns its id.
    pub(crate) async fn campaign(&self, stock: i64, per_user_limit: i64) -> String {
        let resp = self
            .admin_post(
                "/v1/admin/campaigns",
                &unique("create"),
                &campaign_body(stock, per_user_limit),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let v: Value = resp.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub(crate) async fn grab(&self, token: &str, campaign: &str, key: &str) -> Grab {
        let resp = self
            .client
            .post(self.url(&format!("/v1/campaigns/{campaign}/claims")))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .send()
            .await
            .unwrap();
        Grab::read(resp).await
    }

    /// A grab as a well-behaved client makes it: a 503 (busy or down), a 429 or a
    /// 409 `idempotency_key_in_use` promises nothing was done, so the same key is sent
    /// again after the advertised `Retry-After` (capped, to keep tests short) until
    /// a final answer arrives. Under a loaded CI machine a crowd of 2,000 can
    /// legitimately outwait the pool; what must hold is the final answers.
    pub(crate) async fn grab_settled(&self, token: &str, campaign: &str, key: &str) -> Grab {
        let mut retried = Vec::new();
        for _ in 0..RETRIES {
            let mut g = self.grab(token, campaign, key).await;
            let retryable =
                matches!(g.status.as_u16(), 503 | 429) || g.code() == "idempotency_key_in_use";
            if !retryable {
                g.retried = retried;
                return g;
            }
            retried.push((g.status.as_u16(), g.code().to_string()));
            tokio::time::sleep(g.retry_after.min(Duration::from_millis(500))).await;
        }
        panic!("no final answer to key {key} after {RETRIES} attempts: {retried:?}");
    }

    /// Checks the campaign's invariants through the audit endpoint and the rows.
    pub(crate) async fn assert_invariants(&self, campaign: &str) -> Value {
        let audit = self
            .admin_get(&format!("/v1/admin/campaigns/{campaign}/audit"))
            .await;
        assert_eq!(audit["ok"], true, "{audit:#}");
        let c = self
            .admin_get(&format!("/v1/admin/campaigns/{campaign}"))
            .await;
        // A voided voucher whose stock was returned is a row no longer counted as issued.
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM vouchers WHERE campaign_id = $1 AND NOT stock_returned",
        )
        .bind(Uuid::parse_str(campaign).unwrap())
        .fetch_one(&self.db)
        .await
        .unwrap();
        assert_eq!(c["issued"].as_i64().unwrap(), rows);
        assert!(rows <= c["total_stock"].as_i64().unwrap());
        c
    }
}

/// Drops and re-creates `voucherd_test_<name>` and migrates it; returns its URL.
pub(crate) async fn isolated_database(name: &str) -> String {
    use sqlx::migrate::MigrateDatabase;
    let url = format!("{}_{name}", database_url());
    let _ = sqlx::Postgres::force_drop_database(&url).await;
    let env: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url.clone()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
    ]);
    let settings = voucherd::settings_from_lookup(|k| env.get(k).cloned()).unwrap();
    voucherd::migrate(&settings).await.unwrap();
    url
}

/// The codes the OpenAPI document lists for `Problem.code`, read once per test
/// binary from the document `/openapi.json` serves.
static DOCUMENTED_CODES: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    let spec = serde_json::to_value(voucherd::openapi_document()).unwrap();
    documented_codes(&spec)
});

/// `Problem.code`'s enum in an OpenAPI document, following its `$ref`.
pub(crate) fn documented_codes(spec: &Value) -> BTreeSet<String> {
    let schemas = &spec["components"]["schemas"];
    let mut code = &schemas["Problem"]["properties"]["code"];
    if let Some(name) = code["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        code = &schemas[name];
    }
    let codes: BTreeSet<String> = code["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("Problem.code is not an enum: {code}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(!codes.is_empty(), "Problem.code lists no codes");
    codes
}

/// Fails the test unless `body`, a problem+json body answered with `status`, is a
/// problem whose `code` the OpenAPI document lists. Every problem a test receives
/// comes through here: from `Client` (so every helper built on it), and from the
/// tests that speak HTTP over a raw socket (`assert_raw_problem`).
pub(crate) fn assert_documented_problem(status: StatusCode, body: &[u8]) {
    let problem: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "a {status} problem+json body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let code = problem["code"]
        .as_str()
        .unwrap_or_else(|| panic!("a {status} problem has no string code: {problem}"));
    assert!(
        DOCUMENTED_CODES.contains(code),
        "a {status} problem has code {code:?}, which the OpenAPI Problem.code enum does not list: {problem}"
    );
}

/// `assert_documented_problem` for a whole HTTP/1.1 response read off a raw socket,
/// when it is a problem+json one.
pub(crate) fn assert_raw_problem(raw: &[u8]) {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    if !head.contains("content-type: application/problem+json") {
        return;
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let body = &raw[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        assert_documented_problem(status, &dechunk(body));
    } else {
        assert_documented_problem(status, body);
    }
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        let start = line + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
    out
}

/// The tests' HTTP client: reqwest's, except that every problem+json response is
/// read through `assert_documented_problem` before the test sees it.
#[derive(Clone)]
pub(crate) struct Client(reqwest::Client);

impl Client {
    pub(crate) fn get(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        RequestBuilder(self.0.get(url))
    }

    pub(crate) fn post(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        RequestBuilder(self.0.post(url))
    }

    pub(crate) fn patch(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        RequestBuilder(self.0.patch(url))
    }

    pub(crate) fn delete(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        RequestBuilder(self.0.delete(url))
    }

    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> RequestBuilder {
        RequestBuilder(self.0.request(method, url))
    }
}

/// reqwest's request builder, sending through `Client`.
pub(crate) struct RequestBuilder(reqwest::RequestBuilder);

impl RequestBuilder {
    pub(crate) fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<axum::http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<axum::http::Error>,
    {
        RequestBuilder(self.0.header(key, value))
    }

    pub(crate) fn bearer_auth(self, token: impl std::fmt::Display) -> Self {
        RequestBuilder(self.0.bearer_auth(token))
    }

    pub(crate) fn json<T: serde::Serialize + ?Sized>(self, json: &T) -> Self {
        RequestBuilder(self.0.json(json))
    }

    pub(crate) fn body(self, body: impl Into<reqwest::Body>) -> Self {
        RequestBuilder(self.0.body(body))
    }

    /// Sends the request; a problem+json answer is checked, then handed back whole.
    pub(crate) async fn send(self) -> reqwest::Result<Response> {
        let resp = self.0.send().await?;
        let is_problem = resp
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        if !is_problem {
            return Ok(resp);
        }
        use reqwest::ResponseBuilderExt;
        let (status, version, url) = (resp.status(), resp.version(), resp.url().clone());
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        assert_documented_problem(status, &body);
        let mut rebuilt = axum::http::Response::builder()
            .status(status)
            .version(version)
            .url(url)
            .body(body)
            .unwrap();
        *rebuilt.headers_mut() = headers;
        Ok(Response::from(rebuilt))
    }
}

pub(crate) struct Grab {
    pub status: StatusCode,
    pub replayed: bool,
    /// `Retry-After`, zero when absent.
    pub retry_after: Duration,
    pub bytes: Vec<u8>,
    pub body: Value,
    /// The answers `grab_settled` retried before this one (status and code).
    pub retried: Vec<(u16, String)>,
}

impl Grab {
    pub(crate) async fn read(resp: Response) -> Grab {
        let status = resp.status();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or_default();
        let bytes = resp.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Grab {
            status,
            replayed,
            retry_after,
            bytes,
            body,
            retried: Vec::new(),
        }
    }

    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// Counts a problem body's `Retry-After` as RFC 9110 delay-seconds in 1..=3 (the
/// service's jitter), failing the test otherwise.
pub(crate) fn assert_jittered_retry_after(g: &Grab) {
    let secs = g.retry_after.as_secs();
    assert!(
        (1..=3).contains(&secs),
        "Retry-After {secs} s on {} {}",
        g.status,
        g.code()
    );
}

/// A campaign body opening at `starts_at` (RFC 3339).
pub(crate) fn campaign_opening(stock: i64, starts_at: &str) -> Value {
    let mut body = campaign_body(stock, 1);
    body["starts_at"] = starts_at.into();
    body
}

pub(crate) fn campaign_body(stock: i64, per_user_limit: i64) -> Value {
    json!({
        "name": "test campaign",
        "total_stock": stock,
        "per_user_limit": per_user_limit,
        "ends_at": "2099-01-01T00:00:00Z",
        "voucher": {
            "discount": {"type": "fixed", "amount": 50000, "currency": "VND"},
            "min_order_amount": 200000,
            "valid_for_seconds": 604800
        }
    })
}

pub(crate) fn token(sub: &str) -> String {
    let secret = secrecy::SecretString::from(JWT_SECRET.to_string());
    voucherd::mint_token(&secret, sub, 3600).unwrap()
}

/// A unique name, so tests sharing one database never collide.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4())
}

/// Counts responses by (status, code).
pub(crate) fn tally(grabs: &[Grab]) -> HashMap<(u16, String), usize> {
    let mut m = HashMap::new();
    for g in grabs {
        *m.entry((g.status.as_u16(), g.code().to_string()))
            .or_insert(0) += 1;
    }
    m
}

/// A TCP proxy in front of a real server (Redis, Postgres) that a test can cut
/// ("killed": open connections dropped, new ones refused) or freeze (connections
/// stay open, nothing is forwarded), to stage faults mid-load without touching the
/// shared server.
pub(crate) struct RedisProxy {
    pub url: String,
    mode: tokio::sync::watch::Sender<ProxyMode>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ProxyMode {
    Pass,
    Dead,
    Frozen,
}

impl RedisProxy {
    /// In front of the tests' Redis; `url` points at the proxy.
    pub(crate) async fn start() -> RedisProxy {
        let upstream = redis_url();
        let rest = upstream.trim_start_matches("redis://");
        let (target, db) = rest.split_once('/').unwrap_or((rest, "0"));
        let proxy = Self::to(target).await;
        let url = format!("redis://{}/{db}", proxy.url);
        RedisProxy { url, ..proxy }
    }

    /// In front of `target` (host:port); `url` is the proxy's host:port.
    pub(crate) async fn to(target: &str) -> RedisProxy {
        let target = target.to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = listener.local_addr().unwrap().to_string();
        let (mode, _) = tokio::sync::watch::channel(ProxyMode::Pass);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = modes.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let mode = *watch.borrow_and_update();
                    match mode {
                        ProxyMode::Dead => return,
                        ProxyMode::Frozen => {
                            let _ = watch.changed().await;
                            return;
                        }
                        ProxyMode::Pass => {}
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let stopped = async {
                        watch
                            .wait_for(|m| *m != ProxyMode::Pass)
                            .await
                            .map(|m| *m)
                            .ok()
                    };
                    let stopped_as = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => None,
                        mode = stopped => mode,
                    };
                    if stopped_as == Some(ProxyMode::Frozen) {
                        // Hold both sockets open and silent until the next change.
                        let _ = watch.changed().await;
                    }
                });
            }
        });
        RedisProxy { url, mode }
    }

    pub(crate) fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

/// The process's `/metrics` text (shared by every instance in this test process).
pub(crate) async fn metrics_text(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A value from the process's `/metrics`, 0 when absent.
pub(crate) async fn metric(app: &TestApp, series: &str) -> f64 {
    metrics_text(app)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `n` backends named `application` on the database at `url` wait on a
/// lock (a request or a migration queued behind a transaction the test holds).
pub(crate) async fn lock_waiters(url: &str, application: &str, n: i64) {
    use sqlx::Connection;
    let mut probe = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..1000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
             AND application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_one(&mut probe)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{n} {application} backends never queued on a lock");
}
