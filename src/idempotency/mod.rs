//! Idempotency, implemented once for every mutating route: the `Idempotency-Key`
//! header and request fingerprint (the `Idempotent<T>` extractor, here), and the store
//! that reserves a key inside the effect's own transaction and replays committed
//! responses. Split along the line that matters when changing it:
//! - `key`: pure and safe to touch (the key, its scope, canonical JSON, the
//!   fingerprint);
//! - `store`: concurrent and dangerous (the store, in-flight waits, the caches of
//!   committed answers and their encoding, the purge).

pub(crate) mod key;
pub(crate) mod store;

use axum::{
    body::Bytes,
    extract::{FromRef, FromRequest, Request},
};
use serde::de::DeserializeOwned;

pub(crate) use key::{IdempotencyKey, Scope, fingerprint};
pub(crate) use store::{Begun, InFlightGuard, Reservation, Store, json_bytes_response, run_purger};
pub(crate) use store::{NextAction, Outcome, WhenLimited};

use crate::{
    deadline::RequestClock,
    error::{ApiError, ApiResult},
    json,
};

pub(crate) const HEADER: &str = "idempotency-key";
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A mutating request: its key, its fingerprint and its typed body. Extracting it
/// checks, in order, the key (400), the body size (413), the body's media type (415),
/// JSON syntax (400) and the body's shape (422). An empty body reads as `{}`. Every
/// route with a body reads it here, so this is the one place those checks live.
#[derive(Debug)]
pub(crate) struct Idempotent<T> {
    pub key: IdempotencyKey,
    pub fingerprint: Vec<u8>,
    pub body: T,
    /// The request's clock, so the commit can say it has begun (see `deadline`).
    pub clock: RequestClock,
}

impl<S, T> FromRequest<S> for Idempotent<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    json::BodyDeadline: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(mut req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let key = match req.headers().get(HEADER) {
            None => return Err(ApiError::IdempotencyKeyMissing),
            Some(v) => IdempotencyKey::parse(v.as_bytes())?,
        };
        let method = req.method().as_str().to_string();
        let on_behalf_of = req
            .headers()
            .get(crate::auth::ON_BEHALF_OF)
            .map(|v| v.as_bytes().to_vec());
        let path = key::canonical_path(&mut req).await;
        let clock = req
            .extensions()
            .get::<RequestClock>()
            .cloned()
            .unwrap_or_default();
        let json::BodyDeadline(deadline) = json::BodyDeadline::from_ref(state);
        let declared_json = json::declares_json(req.headers());
        let bytes = tokio::time::timeout(deadline, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::BodyTimeout)?
            .map_err(json::body_rejection)?;
        json::require_json(declared_json, &bytes)?;
        let value = json::parse_value(&bytes)?;
        let fingerprint = fingerprint(&method, &path, &value, on_behalf_of.as_deref());
        let body = json::from_body(&bytes, &value)?;
        Ok(Idempotent {
            key,
            fingerprint,
            body,
            clock,
        })
    }
}

impl<T> Idempotent<T> {
    /// Reserves this request's key for `scope` in a new transaction, or replays the
    /// stored answer. See `Store::begin`.
    pub(crate) async fn begin(
        &self,
        state: &crate::AppState,
        scope: &Scope,
        admit: impl FnOnce() -> ApiResult<()>,
        precheck: impl FnOnce() -> ApiResult<()>,
    ) -> ApiResult<Begun> {
        state
            .idempotency
            .begin(
                &state.db,
                scope,
                &self.key,
                &self.fingerprint,
                &self.clock,
                admit,
                precheck,
            )
            .await
    }
}
