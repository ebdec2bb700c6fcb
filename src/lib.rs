//! voucherd: a flash-sale voucher service. This file wires the pieces together:
//! shared state, the router and its middleware, start-up, serving and shutdown.
//!
//! # Layout
//!
//! Routes and what they do:
//! - `grab`: the grab, `POST /v1/campaigns/{id}/claims`, and `Grabber`, which answers
//!   what a campaign snapshot can refuse from memory and hands the rest to the writers.
//!   - `grab::writer`: the grant writers: per-campaign queues, admission and shedding
//!     (queue bounds, the commit-stall breaker), batch formation (across campaigns
//!     no other batch is writing), and the one call of `grant_batches` that commits a
//!     batch.
//! - `campaigns`: the admin routes (create, list, change, audit) and the public view,
//!   with their request and response types and the writes behind them.
//!   - `campaigns::row`: the campaign row and the rules it alone decides (status,
//!     refusal, verdict, voucher terms and expiry), and reading a row; no routes.
//! - `vouchers`: the wallet routes and the voucher rows they read, and a voucher as it
//!   was granted (the 201 body and the `voucher.issued` event's data, rebuilt from
//!   the row for replays and the event log).
//! - `redemptions`: quoting, spending and rolling back a voucher at checkout.
//! - `checkout`: the checkout rules as one pure function (`Checkout::decide`).
//! - `support`: support's admin routes: voucher lookups (by code, holder, campaign)
//!   and voiding a voucher, optionally returning its stock.
//! - `exports`: finance's CSV exports of a campaign's vouchers and redemptions, streamed
//!   by `COPY` from one snapshot on connections of their own, `EXPORTS_MAX` at once.
//! - `events`: the transactional outbox, and the admin routes over its log (filtered
//!   by type) and dead letters.
//! - `webhooks`: delivery of the outbox to `WEBHOOK_URL`, leased, signed and retried.
//! - `live`: the live launch view of a campaign (server-sent events, one frame a
//!   second): this instance's grabs by outcome, p99 and 5xx, and the stock as
//!   Postgres counts it.
//! - `ops`: liveness, readiness, metrics, the OpenAPI document and its page.
//! - `pages`: the storefront demo (`/demo`) and the admin console (`/admin`), built
//!   from `clients/web` and embedded in the binary.
//! - `gauges`: the gauges `/metrics` renders from the instance's state (pool, grant
//!   writers and queues, Postgres gate, Redis breaker) and the Postgres figures one
//!   periodic task reads (outbox backlog, dead letters, stock of live campaigns).
//!
//! What every mutating route shares:
//! - `idempotency`: the `Idempotent<T>` extractor (key, fingerprint, typed body) and
//!   re-exports of the two halves below.
//!   - `idempotency::key`: the pure half: key, scope, canonical JSON and path,
//!     fingerprint.
//!   - `idempotency::store`: the concurrent half: the store that reserves a key in the
//!     effect's transaction (`Reservation`), in-flight waits, cached answers, purge.
//! - `auth`: user JWTs, the named admins' tokens and order-service tokens, as
//!   extractors (`Admin` carries the admin's name, the actor of its changes).
//! - `limits`: per-user and per-IP rate limits, asked only of fresh work.
//! - `json`: body and query parsing with problem+json rejections; the body deadline.
//! - `error`: the one error type, its stable codes and its problem+json rendering.
//! - `domain`: validated newtypes (ids, voucher codes, currencies, discounts).
//!
//! State and stores:
//! - `cache`: campaign snapshots (in process, then Redis) and the holder filters that
//!   let refusals be answered from memory.
//! - `redis`: the Redis client: optional, time-bounded, behind a breaker.
//! - `replica`: where reads that need not touch the primary go (wallets, the public
//!   list): a replica while measured fresh, the primary within a user's own window.
//! - `dbclock`: Postgres' clock as last measured, so memory judges time as Postgres.
//! - `dbwatch`: whether Postgres answers now; refuses at once while it does not.
//! - `maintenance`: upkeep that runs on one instance at a time (`Alone`, an advisory
//!   lock per job): the frequent vacuum of the hot `campaigns` table; the idempotency
//!   purge takes the same kind of lock.
//!
//! Serving:
//! - `server`: the connection loop: connection cap, head deadline, drain on shutdown.
//! - `head`: checks each request head before hyper parses it (400, 431 as problem+json).
//! - `keep_alive`: says `Connection: close` on answers after which the connection ends.
//! - `deadline`: the whole-request deadline, and no 5xx once a commit was sent.
//! - `config`: settings from the environment, validated at start-up.
//! - `telemetry`: tracing set-up.
//!
//! # Where each grant rule lives
//!
//! Every grant, in both grab modes (`GRAB_MODE=single` is batches of one), is written
//! by the SQL function `grant_batches`, whose live body is in
//! `migrations/0019_grant_batches.sql` (see `migrations/README.md`), called
//! once per batch (which may span campaigns), from `grab::writer`'s `commit`. Each
//! rule has that one place:
//! - the idempotency key (recorded naming the voucher it granted, or reported taken
//!   or busy): `grant_batches`; the answer it replays is rebuilt from that voucher by
//!   `vouchers::VoucherRow::issued_body`, the function that built the first answer;
//! - the per-user limit (`user_grants`, at most `per_user_limit` per user):
//!   `grant_batches`;
//! - the voucher and its `voucher.issued` event (the voucher's id, its data rebuilt
//!   from the voucher when read): `grant_batches` (the rows are prepared by
//!   `Grabber`, written there);
//! - the stock decrement (`remaining`, never below zero): `grant_batches`; the only
//!   way back, one unit returned by a void (`return_stock`): `support`'s
//!   `return_unit`;
//! - pause and window (`paused`, `starts_at`, `ends_at`, by Postgres' clock):
//!   `grant_batches`;
//! - the `campaign.sold_out` event, once, by the batch that takes the last voucher:
//!   `grant_batches`.
//!
//! Answered without Postgres, from a campaign snapshot: not open yet, paused, over or
//! sold out, `campaigns::row::CampaignRow::verdict` (a refusal only; it never grants).
//! The checkout rules (whether a voucher may be spent on an order, and for how much):
//! `checkout::Checkout::decide`.

pub(crate) mod auth;
pub(crate) mod cache;
pub(crate) mod campaigns;
pub(crate) mod checkout;
pub(crate) mod config;
pub(crate) mod dbclock;
pub(crate) mod dbwatch;
pub(crate) mod deadline;
pub(crate) mod domain;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod exports;
pub(crate) mod gauges;
pub(crate) mod grab;
pub(crate) mod head;
pub(crate) mod idempotency;
pub(crate) mod json;
pub(crate) mod keep_alive;
pub(crate) mod limits;
pub(crate) mod live;
pub(crate) mod maintenance;
pub(crate) mod ops;
pub(crate) mod pages;
pub(crate) mod redemptions;
pub(crate) mod redis;
pub(crate) mod replica;
pub(crate) mod server;
pub(crate) mod support;
pub(crate) mod telemetry;
pub(crate) mod vouchers;
pub(crate) mod webhooks;

// The crate's public surface: what the binary, the integration tests and the fuzz
// targets use. Everything else is crate-private, so `dead_code` and
// `unreachable_pub` see it.
pub use auth::mint as mint_token;
pub use campaigns::CreateCampaign;
pub use checkout::Checkout;
pub use config::{
    Settings, from_env as settings_from_env, from_lookup as settings_from_lookup,
    jwt_secret_from_env,
};
pub use domain::{CampaignId, Currency, Discount, UserId, VoucherCode};
pub use idempotency::key::{IdempotencyKey, canonical_json, fingerprint};
pub use idempotency::store::purge_expired;
pub use json::{from_body, parse_value};
pub use ops::document as openapi_document;
pub use server::{ServerLimits, run as run_server};
pub use telemetry::init as init_tracing;

use std::{str::FromStr, time::Duration};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRef, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::Response,
};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tower::ServiceBuilder;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    auth::AuthKeys,
    cache::CampaignCache,
    error::{PROBLEM_JSON, problem_response},
    grab::Grabber,
    redis::Redis,
};

pub const BODY_LIMIT: usize = 64 * 1024;
/// Lock waits and statements are bounded in Postgres itself, so a stuck request
/// fails with a retryable 503 well inside the request timeout.
const LOCK_TIMEOUT: &str = "3s";
const STATEMENT_TIMEOUT: &str = "5s";
/// How long a starting instance waits for another's migration (sqlx's advisory
/// lock) or for a table lock a migration needs, before giving up.
const MIGRATION_LOCK_TIMEOUT: &str = "15min";
/// `STATEMENT_TIMEOUT` as a duration, for the settings that must fit around it.
pub const STATEMENT_BOUND: Duration = Duration::from_secs(5);
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Everything a request needs, behind one `Arc`: extractors clone the state once
/// each, and cloning several caches and a pool per request showed up in profiles.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The body deadline, for the extractor that reads request bodies.
impl FromRef<AppState> for json::BodyDeadline {
    fn from_ref(state: &AppState) -> Self {
        json::BodyDeadline(state.settings.body_read_timeout)
    }
}

/// The shared handles themselves.
pub struct Shared {
    /// The request pool: every statement in it is bounded by `LOCK_TIMEOUT` and
    /// `STATEMENT_TIMEOUT`, and runs READ COMMITTED.
    pub db: PgPool,
    /// Where reads that need not touch the primary go (a fresh replica, if any).
    pub reads: replica::Reads,
    /// Whether Postgres answers now; routes that need it are refused at once while
    /// it does not.
    pub dbwatch: dbwatch::DbWatch,
    /// Per-user and per-IP rate limits, asked only once a request is fresh work.
    pub limits: limits::Limits,
    /// Campaign snapshots and holder filters; serves reads and refusals, never grants.
    pub cache: CampaignCache,
    /// Keys that check user JWTs, the admin token and the order services' tokens.
    pub auth: AuthKeys,
    /// The idempotency store shared by every mutating route and the grab path.
    pub idempotency: idempotency::Store,
    /// The grab path: snapshot refusals, then the grant writers.
    pub grabber: Grabber,
    /// CSV exports: their own connections, at most `EXPORTS_MAX` at once.
    pub exports: exports::Exports,
    /// The campaigns admins watch live on this instance, and their grabs' tallies.
    pub live: live::Live,
    /// Renders the Prometheus metrics for `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The figures for `/metrics` that need Postgres, as last read by `gauges::run`.
    pub db_figures: gauges::DbFiguresCell,
    /// The validated settings the process started with; never change after start-up.
    pub settings: std::sync::Arc<Settings>,
}

/// The connection pool; connects lazily so the process can start (and report
/// itself unready) while Postgres is still coming up.
pub fn pool(settings: &Settings) -> anyhow::Result<PgPool> {
    pool_of(settings.database_url(), "DATABASE_URL", settings)
}

/// A pool with the request path's bounds, to the database at `url` (named `setting`
/// in errors).
fn pool_of(url: &str, setting: &str, settings: &Settings) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("{setting}: not a valid Postgres URL"))?
        .application_name("voucherd")
        .options([
            ("lock_timeout", LOCK_TIMEOUT),
            ("statement_timeout", STATEMENT_TIMEOUT),
            // Stated, not inherited from the database's default: a redemption locks its
            // order's row and then sums the order's discounts in a new statement, which
            // sees what the redemptions before it committed only under READ COMMITTED
            // (under REPEATABLE READ both of two racing redemptions would fit).
            // (A space in the startup options must be escaped.)
            ("default_transaction_isolation", "read\\ committed"),
        ]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.db_max_connections)
        .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

/// Opens a transaction that a cancelled caller cannot leave half-open. sqlx's
/// `begin`, dropped after `BEGIN` reached Postgres but before its answer was read (a
/// client gone, a request timed out), leaves its connection inside a transaction sqlx
/// does not know of. Back in the pool, the next user's statements would run inside
/// it: a grant batch meant as one implicit transaction answers 201s, then vanishes
/// when that transaction is rolled back (seen in the two-instance drill under load).
/// Run as a task of its own, `begin` always completes, and a caller that has gone
/// drops a transaction sqlx knows of, which it rolls back before the connection is
/// lent again.
pub async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .unwrap_or_else(|e| Err(sqlx::Error::Io(std::io::Error::other(e))))
}

/// Creates the database if it does not exist yet and applies pending migrations,
/// waiting up to 30 s for Postgres to accept connections. Migrations run on a
/// connection of their own, outside the request bounds: one over millions of rows
/// may take minutes, and an instance that starts while another migrates waits on
/// the migration lock for as long as that takes instead of exiting.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    use sqlx::{Connection, migrate::MigrateDatabase};
    let url = settings.database_url();
    let mut attempt = 0;
    loop {
        match sqlx::Postgres::database_exists(url).await {
            Ok(true) => break,
            Ok(false) => {
                tracing::info!("creating the database named in DATABASE_URL");
                sqlx::Postgres::create_database(url)
                    .await
                    .context("DATABASE_URL: creating the database")?;
                break;
            }
            Err(e) if attempt < 30 && is_connect(&e) => {
                attempt += 1;
                tracing::info!(attempt, "waiting for Postgres");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("DATABASE_URL: cannot reach Postgres"),
        }
    }
    let options = PgConnectOptions::from_str(url)
        .context("DATABASE_URL: not a valid Postgres URL")?
        .application_name("voucherd-migrate")
        .options([
            ("statement_timeout", "0"),
            ("lock_timeout", MIGRATION_LOCK_TIMEOUT),
        ]);
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .context("DATABASE_URL: cannot reach Postgres")?;
    let applied = migrate_locked(&mut conn).await;
    let _ = conn.close().await;
    applied
}

/// How long one migration statement may wait for a table lock before the migration
/// rolls back and is tried again: a statement queued for a lock blocks every request
/// behind it, so it never waits longer than a grab tolerates.
const MIGRATION_TABLE_LOCK_WAIT: &str = "500ms";
/// Tries of a migration that could not get its table locks (a long transaction in the
/// way), two seconds apart: 15 minutes in all.
const MIGRATION_TRIES: u32 = 450;

/// Applies pending migrations under sqlx's advisory lock, taken with the long wait
/// (another instance migrating), then with short table-lock waits retried.
async fn migrate_locked(conn: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    use sqlx::migrate::{Migrate, MigrateError};
    conn.lock()
        .await
        .context("waiting for another instance's migration")?;
    sqlx::query(&format!("SET lock_timeout = '{MIGRATION_TABLE_LOCK_WAIT}'"))
        .execute(&mut *conn)
        .await?;
    let mut migrator = sqlx::migrate!();
    migrator.set_locking(false);
    let mut tries = 0;
    let result = loop {
        // `run_direct`, not `run`: `run(&mut conn)` cannot be awaited inside a spawned
        // task ("implementation of `Acquire` is not general enough", sqlx#1594).
        match migrator.run_direct(&mut *conn).await {
            Err(MigrateError::ExecuteMigration(sqlx::Error::Database(e), version))
                if e.code().as_deref() == Some("55P03") && tries < MIGRATION_TRIES =>
            {
                tries += 1;
                tracing::warn!(
                    version,
                    tries,
                    "a migration waited too long for a table lock; trying again"
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => break other,
        }
    };
    let _ = conn.unlock().await;
    result.context("applying migrations")
}

fn is_connect(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
}

/// Builds the shared state from settings. Redis is optional and connects lazily.
pub fn state(settings: Settings, db: PgPool) -> anyhow::Result<AppState> {
    let redis = settings
        .redis_url
        .as_ref()
        .map(|url| {
            Redis::connect(
                secrecy::ExposeSecret::expose_secret(url),
                settings.redis_timeout,
            )
        })
        .transpose()
        .context("REDIS_URL")?;
    let dbwatch = dbwatch::DbWatch::default();
    let cache = CampaignCache::new(redis.clone(), dbwatch.clone());
    let idempotency = idempotency::Store::new(redis.clone(), settings.idempotency_ttl);
    // One way of writing grants: `GRAB_MODE=single` is the same writers and the same
    // `grant_batches` with batches of one (one grant per transaction, the bench's
    // baseline), any writer free to serve the one hot campaign.
    let single = settings.grab_mode == config::GrabMode::Single;
    let batcher = grab::writer::Batcher::new(
        db.clone(),
        dbwatch.clone(),
        grab::writer::BatchLimits {
            max_batch: if single { 1 } else { settings.grab_batch_max },
            connections: settings.grab_writer_connections,
            active: if single {
                settings.grab_writer_connections
            } else {
                settings.grab_active_batches
            },
            per_campaign: if single {
                settings.grab_writer_connections
            } else {
                settings.grab_writers
            },
            queue_max: settings.grab_queue_max,
            queue_max_wait: settings.grab_queue_max_wait,
            commit_stall: settings.grab_commit_stall,
            deadline: settings.grab_deadline,
        },
    );
    let limits = limits::Limits::new(settings.rate_limit_user, settings.rate_limit_ip);
    let exports = exports::Exports::new(settings.database_url(), settings.exports_max)?;
    let replica = settings
        .read_database_url
        .as_ref()
        .map(|url| {
            pool_of(
                secrecy::ExposeSecret::expose_secret(url),
                "READ_DATABASE_URL",
                &settings,
            )
        })
        .transpose()?;
    let reads = replica::Reads::new(
        db.clone(),
        replica,
        settings.replica_read_after_write,
        redis.clone(),
    );
    let live = live::Live::new(
        db.clone(),
        cache.clock().clone(),
        settings.instance_name.clone(),
        settings.request_timeout,
    );
    Ok(AppState(std::sync::Arc::new(Shared {
        limits,
        exports,
        live,
        reads,
        grabber: Grabber::new(
            db.clone(),
            dbwatch.clone(),
            cache.clone(),
            idempotency.clone(),
            batcher,
        ),
        dbwatch,
        auth: AuthKeys::new(
            &settings.jwt_secret,
            settings.admin_tokens.clone(),
            settings.service_tokens.clone(),
            settings.jwt_leeway,
        ),
        db,
        cache,
        idempotency,
        metrics: ops::metrics_handle(),
        db_figures: gauges::DbFiguresCell::default(),
        settings: std::sync::Arc::new(settings),
    })))
}

/// Every route of the API, each module's router registering its handlers with their
/// documentation: the served router and the OpenAPI document (`ops::document`) come
/// from this one list, so no route is served undocumented.
pub fn routes() -> OpenApiRouter<AppState> {
    let (answering, needing_postgres) = route_groups();
    OpenApiRouter::with_openapi(ops::ApiDoc::openapi())
        .merge(answering)
        .merge(needing_postgres)
}

/// The routes in two groups: those answered whatever Postgres' state (from the
/// campaign snapshot, the replay cache, or about the service itself), and those that
/// always need Postgres, refused at once while it is down.
fn route_groups() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let answering = OpenApiRouter::new()
        .merge(campaigns::router())
        .merge(grab::router())
        .merge(ops::router())
        .merge(pages::router());
    let needing_postgres = OpenApiRouter::new()
        .merge(vouchers::router())
        .merge(redemptions::router())
        .merge(support::router())
        .merge(exports::router())
        .merge(events::router())
        .merge(live::router());
    (answering, needing_postgres)
}

/// The whole HTTP application. Separate from serving so tests can bind port 0.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let cors = cors(&state.settings.cors_allowed_origins);
    let timeout = state.settings.request_timeout;
    let (answering, needing_postgres) = route_groups();
    let (answering, _) = answering.split_for_parts();
    let (needing_postgres, _) = needing_postgres.split_for_parts();
    Router::new()
        .merge(answering)
        .merge(
            needing_postgres
                .route_layer(middleware::from_fn_with_state(state.clone(), dbwatch::gate)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(ops::track_http))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::map_response(dress_errors))
                .layer(cors)
                .layer(middleware::from_fn_with_state(timeout, deadline::enforce))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(idempotency::HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(idempotency::REPLAYED_HEADER),
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

async fn not_found() -> Response {
    let code = error::framework_problem(StatusCode::NOT_FOUND).code;
    problem_response(StatusCode::NOT_FOUND, code, "no such route".into(), None)
}

/// Errors produced outside the handlers (wrong method, a layer's refusal) come
/// without a body; give them the same problem+json shape as every other error, with
/// the code `error::FRAMEWORK_PROBLEMS` names for their status.
async fn dress_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let dressing = error::framework_problem(status);
    let mut dressed = problem_response(status, dressing.code, dressing.detail.into(), None);
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = response.headers().get(&name) {
            dressed.headers_mut().insert(name, v.clone());
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        dressed
            .headers_mut()
            .insert(header::RETRY_AFTER, error::retry_after());
    }
    dressed
}

/// The background loops of one instance. Dropping this stops them (tests use that
/// to stage an instance dying with work pending).
pub struct Workers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Starts the idempotency purger, the hot-table vacuum, the Postgres watchdog, the
/// reader of the figures `/metrics` needs from Postgres and, when `WEBHOOK_URL` is
/// set, the webhook dispatcher.
pub fn spawn_workers(state: &AppState) -> Workers {
    // reqwest is built without a default TLS backend; use ring, already linked for JWTs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = state.db.clone();
    let mut handles = vec![
        tokio::spawn(idempotency::run_purger(
            db.clone(),
            state.settings.idempotency_ttl,
        )),
        tokio::spawn(maintenance::run_hot_vacuum(db.clone())),
        tokio::spawn(state.limits.clone().run_cleanup()),
        tokio::spawn(state.dbwatch.clone().run(db.clone())),
        tokio::spawn(state.reads.clone().watch()),
        tokio::spawn(gauges::run(
            db.clone(),
            state.dbwatch.clone(),
            state.db_figures.clone(),
            state.settings.metrics_db_interval,
            state.settings.metrics_campaigns_max,
            state.settings.webhook_url.is_some(),
        )),
    ];
    if let Some(cfg) = state.settings.webhook() {
        tracing::info!(url = %cfg.url, "delivering events to the webhook");
        handles.push(tokio::spawn(webhooks::run_dispatcher(db, cfg)));
    }
    Workers(handles)
}

/// `voucherd serve`: migrate (unless told not to), start background tasks, serve
/// until SIGTERM or Ctrl-C, then drain (see `server`).
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let db = pool(&settings)?;
    if settings.migrate_on_start {
        migrate(&settings).await?;
    }
    let addr = settings.listen_addr;
    let limits = server::ServerLimits::from_settings(&settings);
    let state = state(settings, db)?;
    let _workers = spawn_workers(&state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("LISTEN_ADDR: cannot listen on {addr}"))?;
    tracing::info!(%addr, "voucherd listening");

    // Live views stream until their watchers leave: ended at the shutdown, so the
    // drain waits for requests in flight, not for someone's open dashboard.
    let live = state.live.clone();
    let shutdown = async move {
        shutdown_signal().await;
        live.close();
    };
    server::run(listener, app(state), limits, shutdown).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
