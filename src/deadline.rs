//! The whole-request deadline (`REQUEST_TIMEOUT`), and the one promise it must keep:
//! a request whose commit was already sent to Postgres is never answered 5xx, since
//! its effect may have landed. Such a request is answered 409
//! `idempotency_key_in_use` instead, and its retries learn the real outcome.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// When the request arrived, and how it stands: open, committing (its effect was
/// sent to Postgres), or answered by the timeout. The last two exclude each other:
/// whichever comes first wins, so a request answered 503 is never sent afterwards,
/// and one that was sent is never answered 503.
#[derive(Clone, Debug)]
pub struct RequestClock {
    pub arrived: Instant,
    state: Arc<AtomicU8>,
}

const OPEN: u8 = 0;
const COMMITTING: u8 = 1;
const TIMED_OUT: u8 = 2;

impl RequestClock {
    pub fn new() -> Self {
        RequestClock {
            arrived: Instant::now(),
            state: Arc::new(AtomicU8::new(OPEN)),
        }
    }

    /// Called right before the request's effect is sent to Postgres for commit;
    /// `false` if the timeout answered the request first (then do not send it).
    pub fn begin_commit(&self) -> bool {
        match self
            .state
            .compare_exchange(OPEN, COMMITTING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == COMMITTING,
        }
    }

    /// Whether the request's effect was sent to Postgres for commit (then a cut-off
    /// request was answered 409 `idempotency_key_in_use`, never a 5xx).
    pub fn is_committing(&self) -> bool {
        self.state.load(Ordering::Acquire) == COMMITTING
    }

    /// Called by the timeout; `false` if the commit began first.
    fn time_out(&self) -> bool {
        match self
            .state
            .compare_exchange(OPEN, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == TIMED_OUT,
        }
    }
}

impl Default for RequestClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The request's clock; a fresh one where the middleware did not run (a router
/// driven without it), so handlers never need to care.
impl<S: Send + Sync> FromRequestParts<S> for RequestClock {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestClock>()
            .cloned()
            .unwrap_or_default())
    }
}

/// Middleware: bounds the whole request by `timeout`. Past it, a request that has
/// not begun to commit is answered 503 `timeout` (its transaction is rolled back when
/// the handler is dropped); one that has is answered 409 `idempotency_key_in_use`.
pub(crate) async fn enforce(
    State(timeout): State<Duration>,
    mut req: Request,
    next: Next,
) -> Response {
    let clock = RequestClock::new();
    req.extensions_mut().insert(clock.clone());
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) if !clock.time_out() => ApiError::IdempotencyKeyInUse.into_response(),
        Err(_) => ApiError::Timeout.into_response(),
    }
}
