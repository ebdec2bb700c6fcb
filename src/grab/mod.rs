//! The grab: `POST /v1/campaigns/{id}/claims`. Everything that decides a grant sits
//! behind `Grabber::grab`: refusals from the campaign snapshot, then the grant
//! writers (`writer`), whose one call of `grant_batches` holds every grant rule
//! (`GRAB_MODE=single` is the same path with batches of one).

pub(crate) mod writer;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::User,
    cache::CampaignCache,
    campaigns::row::CampaignRow,
    dbwatch::DbWatch,
    deadline::RequestClock,
    domain::{CampaignId, UserId, VoucherCode},
    error::{ApiError, ApiResult},
    idempotency::{self, IdempotencyKey, Idempotent, NextAction, Outcome, Scope, WhenLimited},
    json::EmptyBody,
    limits::ClientIp,
    vouchers::{ClaimResponse, VoucherRow},
};
use writer::{Batcher, Prepared, Settled};

/// The grab route, registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(claim))
}

/// One grab, as the route hands it over.
pub(crate) struct GrabRequest<'a> {
    pub campaign: &'a Arc<CampaignRow>,
    pub user: &'a UserId,
    pub key: &'a IdempotencyKey,
    pub fingerprint: &'a [u8],
}

/// Decides grabs: refusals the snapshot allows from memory, everything else through
/// the grant writers.
#[derive(Clone)]
pub struct Grabber {
    db: PgPool,
    dbwatch: DbWatch,
    cache: CampaignCache,
    idempotency: idempotency::Store,
    batcher: Batcher,
}

/// How a grab ended, for the metrics and the live view: `granted`, `replayed`, or
/// the refusal's problem code.
pub(crate) fn outcome(result: &ApiResult<Response>) -> &'static str {
    match result {
        Ok(r) if r.headers().contains_key(idempotency::REPLAYED_HEADER) => "replayed",
        Ok(_) => "granted",
        Err(e) => e.code(),
    }
}

impl Grabber {
    pub fn new(
        db: PgPool,
        dbwatch: DbWatch,
        cache: CampaignCache,
        idempotency: idempotency::Store,
        batcher: Batcher,
    ) -> Self {
        Grabber {
            db,
            dbwatch,
            cache,
            idempotency,
            batcher,
        }
    }

    /// What the grant writers are doing now, for `/metrics`.
    pub fn writer_gauges(&self) -> writer::WriterGauges {
        self.batcher.gauges()
    }

    /// Grants one voucher, replays an earlier answer for the same key, or refuses.
    /// A refusal changes nothing and leaves the key unrecorded. `admit` (the rate
    /// limits) is asked only once the grab is known to be fresh work: a replay, or a
    /// twin waiting for its in-flight original, is never counted against the caller.
    pub async fn grab(
        &self,
        campaign: CampaignId,
        user: &UserId,
        key: &IdempotencyKey,
        fingerprint: &[u8],
        clock: &RequestClock,
        admit: impl FnOnce() -> ApiResult<()>,
    ) -> ApiResult<Response> {
        // One async block, so every way out (replay, refusal, grant) is counted.
        let result: ApiResult<Response> = async {
            let scope = Scope::user(user);
            // A retry of a committed grab this instance has answered: from memory, and
            // before the campaign is looked up, so it is replayed even while Postgres is
            // down and the campaign's snapshot has expired.
            if let Some(resp) = self.idempotency.cached(&scope, key, fingerprint).await? {
                return Ok(resp);
            }
            let campaign = self
                .cache
                .get(&self.db, campaign)
                .await?
                .ok_or(ApiError::CampaignNotFound)?;
            // Not open yet, paused, over or sold out: answered from the snapshot, judged
            // by Postgres' clock, so the herd costs Postgres nothing. Only a caller who
            // may hold a voucher of the campaign (it is replaying a grant) costs one
            // indexed read of the key.
            // A key in flight here is left to its twin: the refusal could race the
            // grant the twin is committing.
            if let Some((refusal, holders)) = campaign.verdict(self.cache.clock().now())
                && !self.idempotency.is_in_flight(&scope, key)
            {
                if !holders || !self.cache.may_hold(&self.db, &campaign, user).await? {
                    return Err(refusal);
                }
                let stored = self
                    .idempotency
                    .stored(&self.db, &scope, key, fingerprint)
                    .await?;
                return stored.ok_or(refusal);
            }
            let req = GrabRequest {
                campaign: &campaign,
                user,
                key,
                fingerprint,
            };
            // Everything past here needs Postgres.
            self.dbwatch.check()?;
            self.batched(req, scope, clock, admit).await
        }
        .await;
        metrics::counter!("voucherd_grabs_total", "outcome" => outcome(&result)).increment(1);
        result
    }

    /// The voucher a grant would issue, with its 201 body, prepared before any
    /// transaction opens.
    fn prepare(&self, req: &GrabRequest<'_>) -> ApiResult<(VoucherRow, Vec<u8>)> {
        // Postgres keeps microseconds: round here so the body we store and replay
        // matches what the wallet reads back.
        let issued_at = Utc::now().trunc_subsecs(6);
        let row = VoucherRow {
            id: Uuid::now_v7(),
            code: VoucherCode::generate().as_str().to_string(),
            campaign_id: req.campaign.id,
            user_id: req.user.as_str().to_string(),
            status: "issued".into(),
            discount: req.campaign.discount.clone(),
            min_order_amount: req.campaign.min_order_amount,
            issued_at,
            expires_at: req.campaign.voucher_expiry(issued_at),
            redeemed_at: None,
            order_id: None,
            redemption_id: None,
        };
        let body = row.issued_body()?;
        Ok((row, body))
    }

    /// Batched: wait for this key's in-flight twin, else queue on the campaign's
    /// batch writers, handing them the key's guard until the outcome is known.
    async fn batched(
        &self,
        req: GrabRequest<'_>,
        scope: Scope,
        clock: &RequestClock,
        admit: impl FnOnce() -> ApiResult<()>,
    ) -> ApiResult<Response> {
        let in_flight = match self
            .idempotency
            .reserve(&scope, req.key, req.fingerprint, admit, WhenLimited::Refuse)
            .await?
        {
            NextAction::Replay(resp) => return Ok(resp),
            NextAction::Proceed(guard) => guard,
        };
        let (voucher, body) = self.prepare(&req)?;
        let grab = Prepared {
            scope: scope.as_str().to_string(),
            key: req.key.as_str().to_string(),
            fingerprint: req.fingerprint.to_vec(),
            voucher,
        };
        let (settled, _in_flight) = self
            .batcher
            .submit(req.campaign, grab, clock, in_flight)
            .await;
        let outcome = match settled {
            Settled::Granted => Outcome::Committed {
                status: StatusCode::CREATED,
                body,
            },
            Settled::KeyTaken => Outcome::AlreadyRecorded,
            Settled::Refused(e) => {
                if matches!(e, ApiError::SoldOut | ApiError::CampaignNotActive(_)) {
                    // The snapshot said open and Postgres disagrees: refresh it.
                    self.cache.invalidate(CampaignId(req.campaign.id)).await;
                }
                Outcome::Refused(e)
            }
        };
        self.idempotency
            .settle(
                &self.db,
                &scope,
                req.key,
                req.fingerprint,
                clock.arrived,
                outcome,
            )
            .await
    }
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/claims", operation_id = "grabVoucher", tag = "users",
    request_body(content = Option<EmptyBody>, description = "no body, or `{}`"),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header, description = "8–255 printable ASCII characters")),
    responses(
        (status = 201, description = "granted (or replayed, with `Idempotent-Replayed: true`)", body = ClaimResponse),
        (status = 400, body = crate::error::Problem), (status = 401, body = crate::error::Problem),
        (status = 404, description = "campaign_not_found", body = crate::error::Problem),
        (status = 409, description = "sold_out, limit_reached, campaign_not_active or idempotency_key_in_use", body = crate::error::Problem),
        (status = 422, description = "idempotency_key_reused", body = crate::error::Problem),
        (status = 429, description = "rate_limited, with Retry-After; the key is not recorded", body = crate::error::Problem),
        (status = 503, description = "overloaded (the campaign's queue is past its bound, or the grab could not be written before GRAB_DEADLINE) or service_unavailable, with a jittered Retry-After; nothing was recorded, retry with the same key", body = crate::error::Problem)),
    security(("user" = [])))]
async fn claim(
    State(state): State<AppState>,
    User(user): User,
    ClientIp(ip): ClientIp,
    clock: RequestClock,
    Path(id): Path<String>,
    req: Idempotent<EmptyBody>,
) -> ApiResult<Response> {
    let id = CampaignId::parse(&id)?;
    let timing = state.live.grab(id, &clock);
    // marks the user's reads for the primary even if this handler is dropped while
    // its grant may still commit (with a read replica only)
    let effect = state.reads.pending(&user);
    let result = state
        .grabber
        .grab(id, &user, &req.key, &req.fingerprint, &clock, || {
            state.limits.check(&user, ip)
        })
        .await;
    if let Some(timing) = timing {
        let status = match &result {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        timing.finish(outcome(&result), status);
    }
    if let Some(effect) = effect {
        effect.settled(result.is_ok()).await;
    }
    result
}
