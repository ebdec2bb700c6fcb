//! The crate's one error type and its problem+json (RFC 9457) rendering: every
//! failure a client can see has a stable `code`, and internals never reach a body.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a well-formed body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `voucher.discount.amount`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The problem+json body every error response carries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[schema(value_type = ProblemCode)]
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// A problem written outside `ApiError`, for an error that the framework or one of
/// its layers produced without a body (an unknown route, a wrong method, a refused
/// body).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameworkProblem {
    /// The status it dresses; `None` for the entry that dresses any other.
    pub status: Option<StatusCode>,
    pub code: &'static str,
    pub detail: &'static str,
}

/// The codes answered without an `ApiError`. `dress_errors` (lib.rs) names a
/// bodiless error by its status from this list and `not_found` takes its 404 entry;
/// the OpenAPI `ProblemCode` enum lists every code here. One list, read by both, so
/// the service cannot answer a code its document does not name. 415 and 431 are
/// listed before any route or the server answers them, so the enum is complete
/// whichever lands first.
pub(crate) const FRAMEWORK_PROBLEMS: &[FrameworkProblem] = &[
    FrameworkProblem {
        status: Some(StatusCode::BAD_REQUEST),
        code: "malformed_request",
        detail: "the request could not be parsed",
    },
    FrameworkProblem {
        status: Some(StatusCode::NOT_FOUND),
        code: "not_found",
        detail: "no such resource",
    },
    FrameworkProblem {
        status: Some(StatusCode::METHOD_NOT_ALLOWED),
        code: "method_not_allowed",
        detail: "this route does not accept this method",
    },
    FrameworkProblem {
        status: Some(StatusCode::PAYLOAD_TOO_LARGE),
        code: "payload_too_large",
        detail: "the request body is larger than 64 KiB",
    },
    FrameworkProblem {
        status: Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        code: "unsupported_media_type",
        detail: "a request body must be application/json",
    },
    FrameworkProblem {
        status: Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        code: "headers_too_large",
        detail: "the request headers are too large",
    },
    FrameworkProblem {
        status: Some(StatusCode::SERVICE_UNAVAILABLE),
        code: "service_unavailable",
        detail: "the service cannot answer now and changed nothing; retry shortly",
    },
    FrameworkProblem {
        status: None,
        code: "error",
        detail: "the request failed",
    },
];

/// The entry of `FRAMEWORK_PROBLEMS` that dresses a bodiless `status`.
pub(crate) fn framework_problem(status: StatusCode) -> &'static FrameworkProblem {
    let entry = |wanted: Option<StatusCode>| FRAMEWORK_PROBLEMS.iter().find(|p| p.status == wanted);
    entry(Some(status))
        .or_else(|| entry(None))
        .expect("FRAMEWORK_PROBLEMS has an entry for any other status")
}

/// Every code the service answers, sorted: `ApiError`'s and the framework's.
pub(crate) fn all_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = ApiError::CODES
        .iter()
        .copied()
        .chain(FRAMEWORK_PROBLEMS.iter().map(|p| p.code))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// `Problem.code` in the OpenAPI document: an enum of `all_codes`, under a name of
/// its own, so a generated client gets one type to match on.
pub(crate) struct ProblemCode;

impl utoipa::PartialSchema for ProblemCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Stable machine-readable error code. A client should treat a code it does not know as the status alone.",
            ))
            .enum_values(Some(all_codes()))
            .into()
    }
}

impl ToSchema for ProblemCode {}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this credential may not use this route")]
    Forbidden,
    #[error("the Idempotency-Key header is required on every POST, PATCH and DELETE")]
    IdempotencyKeyMissing,
    #[error("{0}")]
    IdempotencyKeyInvalid(&'static str),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    IdempotencyKeyInUse,
    #[error("{0}")]
    Malformed(String),
    #[error("the request body has invalid values")]
    Validation(Vec<FieldError>),
    #[error("the request body is larger than 64 KiB")]
    PayloadTooLarge,
    /// A non-empty body whose `Content-Type` is not JSON: read as JSON it could only
    /// mean something its sender did not intend (a form's `a=1&b=2`).
    #[error("a request body must be sent as application/json (or application/*+json)")]
    UnsupportedMediaType,
    /// A request head over `head::MAX_HEAD` or with more than `head::MAX_HEADERS`
    /// fields, answered by the connection's head guard before any route runs.
    #[error("the request head is larger than 16 KiB or has more than 100 header fields")]
    HeadersTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("no campaign with this id")]
    CampaignNotFound,
    #[error("no voucher with this code belongs to you")]
    VoucherNotFound,
    #[error("the campaign has no vouchers left")]
    SoldOut,
    #[error("you already hold the maximum number of vouchers for this campaign")]
    LimitReached,
    #[error("the campaign is {0}")]
    CampaignNotActive(&'static str),
    #[error("this voucher is already redeemed")]
    VoucherAlreadyRedeemed,
    #[error("this voucher has expired")]
    VoucherExpired,
    #[error("this voucher was voided by an admin and can no longer be redeemed")]
    VoucherVoided,
    /// `EXPORTS_MAX` exports are already streaming: refused before any Postgres work,
    /// so exports never take the connections grabs need.
    #[error("as many exports as the service runs at once are already running; retry shortly")]
    ExportsBusy,
    /// An export asked over HTTP/1.0: without chunked framing its end is the
    /// connection's close, so an export cut off mid-stream would look complete.
    #[error(
        "exports are streamed with chunked framing: ask over HTTP/1.1 (behind nginx, set proxy_http_version 1.1)"
    )]
    UpgradeRequired,
    #[error("the order is below this voucher's minimum of {0}")]
    OrderBelowMinimum(i64),
    #[error("the order's currency is not the voucher's ({0})")]
    CurrencyMismatch(String),
    #[error(
        "this order was first redeemed with an amount of {amount} {currency}; one order has one amount and currency"
    )]
    OrderMismatch { amount: i64, currency: String },
    #[error(
        "the order's vouchers would take off more than its amount of {amount} ({discounted} is already taken off)"
    )]
    OrderDiscountExceeded { amount: i64, discounted: i64 },
    #[error(
        "this order already carries {0} voucher(s) of this campaign, as many as the campaign allows per order"
    )]
    VoucherNotCombinable(i32),
    #[error("no redemption with this id belongs to you")]
    RedemptionNotFound,
    #[error("this redemption was already rolled back")]
    RedemptionAlreadyRolledBack,
    #[error("no dead-lettered event with this id")]
    DeadLetterNotFound,
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    /// A transient failure (database unreachable, lock wait exceeded): nothing was
    /// changed and the same request may be retried with the same key.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Admission control: the campaign's queue is past its bound, or the grab could
    /// not be written before its deadline. Refused before any Postgres work.
    #[error("too many grabs are waiting on this campaign; nothing was recorded, retry shortly")]
    Overloaded,
    /// The request outlived `REQUEST_TIMEOUT` before it began to commit: its
    /// transaction was rolled back, so the same key may be sent again.
    #[error("the request took too long and changed nothing; retry with the same Idempotency-Key")]
    Timeout,
    /// Anything else; logged with its cause, shown to the client as an opaque 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Defines `ApiError::code` and `ApiError::CODES` from one table. The `match` has no
/// wildcard arm, so a new variant does not compile until its code is given here, and
/// the code it is given is in `CODES`, and so in the OpenAPI document, at once.
macro_rules! error_codes {
    ($($variant:pat => $code:literal,)+) => {
        impl ApiError {
            /// The stable machine-readable code a client matches on.
            pub fn code(&self) -> &'static str {
                match self {
                    $($variant => $code,)+
                }
            }

            /// Every code `code` can return (some more than once).
            pub const CODES: &'static [&'static str] = &[$($code),+];
        }
    };
}

error_codes! {
    ApiError::Unauthorized(_) => "unauthorized",
    ApiError::Forbidden => "forbidden",
    ApiError::IdempotencyKeyMissing => "idempotency_key_missing",
    ApiError::IdempotencyKeyInvalid(_) => "idempotency_key_invalid",
    ApiError::IdempotencyKeyReused => "idempotency_key_reused",
    ApiError::IdempotencyKeyInUse => "idempotency_key_in_use",
    ApiError::Malformed(_) => "malformed_request",
    ApiError::Validation(_) => "validation_failed",
    ApiError::PayloadTooLarge => "payload_too_large",
    ApiError::UnsupportedMediaType => "unsupported_media_type",
    ApiError::HeadersTooLarge => "headers_too_large",
    ApiError::BodyTimeout => "request_timeout",
    ApiError::CampaignNotFound => "campaign_not_found",
    ApiError::VoucherNotFound => "voucher_not_found",
    ApiError::SoldOut => "sold_out",
    ApiError::LimitReached => "limit_reached",
    ApiError::CampaignNotActive(_) => "campaign_not_active",
    ApiError::VoucherAlreadyRedeemed => "voucher_already_redeemed",
    ApiError::VoucherExpired => "voucher_expired",
    ApiError::VoucherVoided => "voucher_voided",
    ApiError::ExportsBusy => "exports_busy",
    ApiError::UpgradeRequired => "upgrade_required",
    ApiError::OrderBelowMinimum(_) => "order_below_minimum",
    ApiError::CurrencyMismatch(_) => "currency_mismatch",
    ApiError::OrderMismatch { .. } => "order_mismatch",
    ApiError::OrderDiscountExceeded { .. } => "order_discount_exceeded",
    ApiError::VoucherNotCombinable(_) => "voucher_not_combinable",
    ApiError::RedemptionNotFound => "redemption_not_found",
    ApiError::RedemptionAlreadyRolledBack => "redemption_already_rolled_back",
    ApiError::DeadLetterNotFound => "dead_letter_not_found",
    ApiError::Unavailable(_) => "service_unavailable",
    ApiError::Overloaded => "overloaded",
    ApiError::Timeout => "timeout",
    ApiError::RateLimited(_) => "rate_limited",
    ApiError::Internal(_) => "internal_error",
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            IdempotencyKeyMissing | IdempotencyKeyInvalid(_) | Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
            IdempotencyKeyReused
            | Validation(_)
            | OrderBelowMinimum(_)
            | CurrencyMismatch(_)
            | OrderMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            IdempotencyKeyInUse
            | SoldOut
            | LimitReached
            | CampaignNotActive(_)
            | VoucherAlreadyRedeemed
            | VoucherExpired
            | VoucherVoided
            | OrderDiscountExceeded { .. }
            | VoucherNotCombinable(_)
            | RedemptionAlreadyRolledBack => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            CampaignNotFound | VoucherNotFound | RedemptionNotFound | DeadLetterNotFound => {
                StatusCode::NOT_FOUND
            }
            Unavailable(_) | Overloaded | Timeout | ExportsBusy => StatusCode::SERVICE_UNAVAILABLE,
            RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    /// A copy of a refusal, for answering many waiters with one outcome; anything
    /// that is not a plain refusal becomes a retryable 503.
    pub fn clone_refusal(&self) -> ApiError {
        use ApiError::*;
        match self {
            SoldOut => SoldOut,
            LimitReached => LimitReached,
            CampaignNotActive(s) => CampaignNotActive(s),
            CampaignNotFound => CampaignNotFound,
            Unavailable(m) => Unavailable(m),
            Overloaded => Overloaded,
            IdempotencyKeyInUse => IdempotencyKeyInUse,
            _ => Unavailable("the request failed and changed nothing; retry with the same key"),
        }
    }

    /// Whether the refusal changed nothing and may be sent again with the same key.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::IdempotencyKeyInUse
                | ApiError::Unavailable(_)
                | ApiError::Overloaded
                | ApiError::Timeout
                | ApiError::ExportsBusy
        )
    }
}

/// The problem+json body for `status` and `code`: what `problem_response` sends,
/// and what the head guard writes itself where no response type exists yet.
pub(crate) fn problem_body(
    status: StatusCode,
    code: &str,
    detail: String,
    errors: Option<Vec<FieldError>>,
) -> Vec<u8> {
    let title = status.canonical_reason().unwrap_or("Error").to_string();
    let body = Problem {
        kind: format!("urn:voucherd:problem:{code}"),
        title,
        status: status.as_u16(),
        detail,
        code: code.to_string(),
        errors,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Builds a problem+json response for any status; also used to dress up errors
/// produced outside handlers (unknown route, wrong method, timeout).
pub(crate) fn problem_response(
    status: StatusCode,
    code: &str,
    detail: String,
    errors: Option<Vec<FieldError>>,
) -> Response {
    let bytes = problem_body(status, code, detail, errors);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        bytes,
    )
        .into_response()
}

/// A `Retry-After` for a refusal that changed nothing: whole seconds (RFC 9110
/// delay-seconds), uniform over 1 to 3, so the clients refused together in one stall
/// come back spread over two seconds rather than all in the same one.
pub(crate) fn retry_after() -> HeaderValue {
    retry_after_from(1)
}

/// `Retry-After` of at least `secs`, jittered by up to two more seconds.
pub(crate) fn retry_after_from(secs: u64) -> HeaderValue {
    HeaderValue::from(secs.max(1) + rand::random_range(0..=2u64))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "request failed");
        }
        let code = self.code();
        let detail = self.to_string();
        if let ApiError::RateLimited(secs) = self {
            let mut response = problem_response(status, code, detail, None);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_from(secs));
            return response;
        }
        let (mut response, extra) = match self {
            ApiError::Validation(errors) => {
                (problem_response(status, code, detail, Some(errors)), None)
            }
            ApiError::Unauthorized(_) => (
                problem_response(status, code, detail, None),
                Some((header::WWW_AUTHENTICATE, "Bearer")),
            ),
            e if e.is_retryable() => {
                let mut response = problem_response(status, code, detail, None);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after());
                (response, None)
            }
            _ => (problem_response(status, code, detail, None), None),
        };
        if let Some((name, value)) = extra {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// SQLSTATEs that mean "try again": the server is going away, a lock wait or the
/// statement hit its bound, the connection broke, or Postgres is out of slots.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || matches!(
            code,
            "55P03" | "57014" | "40001" | "40P01" | "53300" | "53400"
        )
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry shortly")
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| is_transient_sqlstate(&c)) => {
                tracing::warn!(error = %e, "transient database error");
                ApiError::Unavailable("the database is busy; retry shortly")
            }
            _ => ApiError::Internal(e.into()),
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each status is dressed one way, and every other one by the catch-all.
    #[test]
    fn bodiless_errors_are_named_by_status() {
        let mut statuses: Vec<_> = FRAMEWORK_PROBLEMS.iter().map(|p| p.status).collect();
        let listed = statuses.len();
        statuses.sort_unstable_by_key(|s| s.map(|s| s.as_u16()));
        statuses.dedup();
        assert_eq!(statuses.len(), listed, "a status is listed twice");
        assert_eq!(
            framework_problem(StatusCode::METHOD_NOT_ALLOWED).code,
            "method_not_allowed"
        );
        assert_eq!(
            framework_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE).code,
            "unsupported_media_type"
        );
        assert_eq!(framework_problem(StatusCode::IM_A_TEAPOT).code, "error");
    }

    /// The document's enum holds the codes of both sources, each once.
    #[test]
    fn all_codes_lists_errors_and_framework_codes_once() {
        let codes = all_codes();
        for code in ApiError::CODES
            .iter()
            .chain(FRAMEWORK_PROBLEMS.iter().map(|p| &p.code))
        {
            assert!(codes.contains(code), "{code}");
        }
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
        assert_eq!(ApiError::Timeout.code(), "timeout");
        assert_eq!(ApiError::Timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
