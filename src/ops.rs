//! Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI
//! document and its browsable page (served whole from the binary: it loads nothing
//! from another host), plus the HTTP metrics middleware.

use std::{sync::OnceLock, time::Instant};

use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "voucherd", description = "Flash-sale voucher service. Every POST and PATCH needs an `Idempotency-Key`; errors are `application/problem+json` with a stable `code`."),
    modifiers(&Security),
    tags((name = "admin"), (name = "public"), (name = "users"), (name = "operations"))
)]
/// The document's base (info, tags, security schemes); the paths come from the
/// routers (`crate::routes`), the complete document from `document`.
pub(crate) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // An order service's token (`SERVICE_TOKENS`), with the user it acts for in
        // `On-Behalf-Of`: quote, redeem and roll back only.
        components.add_security_scheme(
            "service",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an order service's token, with the user it acts for in the On-Behalf-Of header; quote, redeem and roll back only",
                    ))
                    .build(),
            ),
        );
    }
}

/// Documents the errors every operation can answer, as problem+json: the status
/// codes from malformed input (down to a request head the HTTP layer refuses, 400 or
/// 431, and a body not sent as JSON, 415), authentication, conflicts and a database
/// that is down (`503` with `Retry-After`), so clients and contract tests see the
/// real contract.
struct Problems;

impl Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, RefOr, ResponseBuilder, schema::Ref};
        const PROBLEM: &str = "application/problem+json";
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ];
            for (op, mutating) in ops {
                let Some(op) = op.as_mut() else { continue };
                // The key's documented shape is the bare form; the quoted form is
                // accepted too (see the API description).
                for param in op.parameters.iter_mut().flatten() {
                    if let RefOr::T(param) = param
                        && param.name == "Idempotency-Key"
                    {
                        param.required = utoipa::openapi::Required::True;
                        param.schema = Some(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::String)
                                .pattern(Some("^[!#-~][!-~]{6,253}[!#-~]$"))
                                .into(),
                        );
                    }
                }
                for (code, response) in op.responses.responses.iter_mut() {
                    if (code.starts_with('4') || code.starts_with('5'))
                        && let RefOr::T(r) = response
                        && let Some(c) = r.content.shift_remove("application/json")
                    {
                        r.content.insert(PROBLEM.to_string(), c);
                    }
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut codes = vec![
                    (
                        "400",
                        "malformed_request (a malformed request line, header field or body) or an invalid header",
                    ),
                    ("404", "not_found, or the resource's own *_not_found code"),
                    ("422", "validation_failed (with `errors`)"),
                    (
                        "431",
                        "headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed",
                    ),
                    (
                        "503",
                        "service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed",
                    ),
                ];
                if secured {
                    codes.push(("401", "unauthorized, with WWW-Authenticate: Bearer"));
                    codes.push(("403", "forbidden"));
                }
                if mutating {
                    codes.push((
                        "409",
                        "a refusal, or idempotency_key_in_use (with Retry-After): the key is in flight, or its commit was sent and its outcome is not yet known",
                    ));
                    codes.push(("408", "request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed"));
                    codes.push((
                        "413",
                        "payload_too_large (over 64 KiB), with Connection: close",
                    ));
                    codes.push((
                        "415",
                        "unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type",
                    ));
                    codes.push(("429", "rate_limited, with Retry-After"));
                }
                for (code, description) in codes {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| RefOr::T(problem(description)));
                }
            }
        }
    }
}

/// Health and readiness (documented), metrics and the documents themselves.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .route(SCALAR_JS_PATH, get(scalar_js))
        .route(DOCS_JS_PATH, get(docs_js))
}

/// The page's script URL names the vendored Scalar's version (see
/// assets/scalar/README.md), so a browser that cached one version for a year still
/// fetches the next one after an upgrade. assets/docs/index.html names it too.
pub(crate) const SCALAR_JS_PATH: &str = "/docs/assets/scalar-1.76.4/standalone.js";
const SCALAR_JS: &[u8] = include_bytes!("../assets/scalar/standalone.js");
pub(crate) const DOCS_JS_PATH: &str = "/docs/assets/docs.js";
const DOCS_JS: &str = include_str!("../assets/docs/docs.js");
const DOCS_HTML: &str = include_str!("../assets/docs/index.html");

/// The docs page's policy: everything from this origin only, so the page renders
/// offline and behind a proxy that reaches nothing else, and nothing it runs can
/// call out. Inline script stays refused (the page has none). Inline style is
/// allowed: Scalar sets style attributes and adds `<style>` elements (its theme,
/// the code editor's) that a nonce would not cover, and a style cannot fetch from
/// another host under this policy. The one report a browser logs is Zod probing
/// for `Function` (eval), which it answers by not compiling its validators.
const DOCS_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
    object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn docs_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DOCS_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCS_HTML,
    )
        .into_response()
}

/// Immutable under its versioned URL, so cached for a year.
async fn scalar_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCALAR_JS,
    )
        .into_response()
}

/// Ours and unversioned, so revalidated on every load; it is a few hundred bytes.
async fn docs_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DOCS_JS,
    )
        .into_response()
}

/// Installs the process-wide Prometheus recorder once; later calls (tests build many
/// apps in one process) share it.
pub(crate) fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("voucherd_http_request_duration_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist only if an embedding program set one first.
            let _ = metrics::set_global_recorder(recorder);
            crate::gauges::describe_series();
            handle
        })
        .clone()
}

/// Counts every request by route template (never the raw path, which would let
/// clients create unbounded label values), method and status, with its latency.
pub(crate) async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Any token is a method to HTTP; only the ones this API serves get a label of
    // their own, so a client cannot mint series.
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PATCH
        | Method::PUT
        | Method::DELETE
        | Method::OPTIONS => req.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let response = next.run(req).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("voucherd_http_requests_total", &labels).increment(1);
    metrics::histogram!("voucherd_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "the process is alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready`, `degraded` (Redis down: still serving, slower) or `unavailable`.
    pub status: &'static str,
    pub postgres: &'static str,
    /// `ok`, `down` or `disabled` (no `REDIS_URL`).
    pub redis: &'static str,
}

#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> Response {
    // Known down: say so at once rather than after the pool's connect retries.
    let postgres_ok = !state.dbwatch.is_down()
        && tokio::time::timeout(
            std::time::Duration::from_secs(2),
            sqlx::query!("SELECT 1 AS one").fetch_one(&state.db),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    let redis = match state.cache.redis() {
        None => "disabled",
        Some(r) if r.ping().await => "ok",
        Some(_) => "down",
    };
    let (code, status) = match (postgres_ok, redis) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, "down") => (StatusCode::OK, "degraded"),
        (true, _) => (StatusCode::OK, "ready"),
    };
    let body = Readiness {
        status,
        postgres: if postgres_ok { "ok" } else { "down" },
        redis,
    };
    (code, Json(body)).into_response()
}

/// The recorder's counters and histograms, then this instance's gauges.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&crate::gauges::render(&state));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The OpenAPI document: the routes' own annotations, gathered as each module's
/// router registers them (so no route is served undocumented), with the shared
/// errors added to every operation. Built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, mut document) = crate::routes().split_for_parts();
        Problems.modify(&mut document);
        document
    })
}

async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}
