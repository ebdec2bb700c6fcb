//! Redemptions: the owner spends a voucher at checkout, and the checkout saga's
//! compensation rolls it back when the order is cancelled. Each is one transaction
//! guarded by a conditional update on the voucher's state, never read-then-write.

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
    routing::post,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::User,
    domain::{Currency, UserId, VoucherCode},
    error::{ApiError, ApiResult, FieldError},
    events::{self, EventType},
    idempotency::{Begun, Claim, Idempotent, Scope, json_bytes_response},
    json::EmptyBody,
    limits::ClientIp,
    vouchers::{Voucher, VoucherRow},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/vouchers/{code}/redemptions", post(redeem))
        .route("/v1/redemptions/{id}/rollback", post(rollback))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The checkout's order id, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub order_id: String,
    /// The order total in minor units, > 0.
    #[schema(minimum = 1)]
    pub order_amount: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedemptionStatus {
    Active,
    RolledBack,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct RedemptionRow {
    id: Uuid,
    voucher_id: Uuid,
    order_id: String,
    order_amount: i64,
    currency: String,
    discount_amount: i64,
    status: String,
    created_at: DateTime<Utc>,
    rolled_back_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Redemption {
    pub id: Uuid,
    pub voucher_id: Uuid,
    pub order_id: String,
    pub order_amount: i64,
    pub currency: String,
    /// What the voucher takes off this order, in minor units.
    pub discount_amount: i64,
    pub status: RedemptionStatus,
    pub created_at: DateTime<Utc>,
    pub rolled_back_at: Option<DateTime<Utc>>,
}

impl From<&RedemptionRow> for Redemption {
    fn from(r: &RedemptionRow) -> Self {
        Redemption {
            id: r.id,
            voucher_id: r.voucher_id,
            order_id: r.order_id.clone(),
            order_amount: r.order_amount,
            currency: r.currency.clone(),
            discount_amount: r.discount_amount,
            status: if r.status == "active" {
                RedemptionStatus::Active
            } else {
                RedemptionStatus::RolledBack
            },
            created_at: r.created_at,
            rolled_back_at: r.rolled_back_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedemptionResponse {
    pub redemption: Redemption,
    pub voucher: Voucher,
}

fn validate(r: &RedeemRequest) -> ApiResult<()> {
    let mut errors = Vec::new();
    let n = r.order_id.chars().count();
    if !(1..=128).contains(&n) || r.order_id.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "order_id",
            "must be 1 to 128 characters, no control characters",
        ));
    }
    if r.order_amount <= 0 {
        errors.push(FieldError::new("order_amount", "must be > 0"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Why a voucher cannot be redeemed now, judged from its committed row.
fn unavailable(v: &VoucherRow, now: DateTime<Utc>) -> Option<ApiError> {
    if v.status == "redeemed" {
        Some(ApiError::VoucherAlreadyRedeemed)
    } else if v.expires_at <= now {
        Some(ApiError::VoucherExpired)
    } else {
        None
    }
}

/// The caller's voucher, with the transaction's `now()`: the instant Postgres judges
/// expiry by in the conditional update, so a refusal names Postgres' reason even when
/// this machine's clock disagrees with Postgres'.
async fn owned_voucher(
    tx: &mut Transaction<'_, Postgres>,
    code: &VoucherCode,
    user: &UserId,
) -> ApiResult<(VoucherRow, DateTime<Utc>)> {
    #[derive(sqlx::FromRow)]
    struct Timed {
        #[sqlx(flatten)]
        row: VoucherRow,
        db_now: DateTime<Utc>,
    }
    let t: Timed = sqlx::query_as(
        "SELECT v.*, now() AS db_now FROM vouchers v WHERE code = $1 AND user_id = $2",
    )
    .bind(code.as_str())
    .bind(user.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::VoucherNotFound)?;
    Ok((t.row, t.db_now))
}

/// Commits the effect with its stored response and event.
async fn finish(
    mut claim: Claim,
    status: StatusCode,
    kind: EventType,
    response: &RedemptionResponse,
    user: &UserId,
) -> ApiResult<Response> {
    let body = serde_json::to_vec(response).map_err(ApiError::internal)?;
    claim.complete(status, &body).await?;
    events::record(
        &mut claim.tx,
        kind,
        &serde_json::json!({
            "redemption": response.redemption,
            "voucher": response.voucher,
            "user_id": user.as_str(),
        }),
    )
    .await?;
    claim.commit().await?;
    Ok(json_bytes_response(status, body))
}

#[utoipa::path(post, path = "/v1/vouchers/{code}/redemptions", operation_id = "redeemVoucher", tag = "users",
    request_body = RedeemRequest,
    params(("code" = String, Path), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 201, body = RedemptionResponse),
        (status = 404, description = "voucher_not_found (unknown, or not the caller's)", body = crate::error::Problem),
        (status = 409, description = "voucher_already_redeemed, voucher_expired", body = crate::error::Problem),
        (status = 422, description = "order_below_minimum, currency_mismatch, validation_failed", body = crate::error::Problem)),
    security(("user" = [])))]
async fn redeem(
    State(state): State<AppState>,
    User(user): User,
    ClientIp(ip): ClientIp,
    Path(code): Path<String>,
    req: Idempotent<RedeemRequest>,
) -> ApiResult<Response> {
    let code = VoucherCode::parse(&code)?;
    // Rate-limited only as fresh work: a replay is never counted.
    let mut claim = match req
        .begin(&state, &Scope::user(&user), || {
            validate(&req.body)?;
            state.limits.check(&user, ip)
        })
        .await?
    {
        Begun::Replay(resp) => return Ok(resp),
        Begun::Fresh(claim) => *claim,
    };
    let (voucher, db_now) = owned_voucher(&mut claim.tx, &code, &user).await?;
    if let Some(refusal) = unavailable(&voucher, db_now) {
        return Err(refusal);
    }
    let discount = &voucher.discount.0;
    if discount.currency() != &req.body.currency {
        return Err(ApiError::CurrencyMismatch(
            discount.currency().clone().into(),
        ));
    }
    if req.body.order_amount < voucher.min_order_amount {
        return Err(ApiError::OrderBelowMinimum(voucher.min_order_amount));
    }
    let redemption_id = Uuid::now_v7();
    // The guard: only an issued, unexpired voucher changes state. Of concurrent
    // redemptions exactly one matches; the others see the committed winner.
    let updated: Option<VoucherRow> = sqlx::query_as(
        "UPDATE vouchers SET status = 'redeemed', redeemed_at = now(), order_id = $2,
                             redemption_id = $3
         WHERE id = $1 AND status = 'issued' AND expires_at > now()
         RETURNING *",
    )
    .bind(voucher.id)
    .bind(&req.body.order_id)
    .bind(redemption_id)
    .fetch_optional(&mut *claim.tx)
    .await?;
    let Some(updated) = updated else {
        let (current, db_now) = owned_voucher(&mut claim.tx, &code, &user).await?;
        return Err(unavailable(&current, db_now).unwrap_or(ApiError::VoucherAlreadyRedeemed));
    };
    let row: RedemptionRow = sqlx::query_as(
        "INSERT INTO redemptions (id, voucher_id, user_id, order_id, order_amount, currency,
                                  discount_amount)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING *",
    )
    .bind(redemption_id)
    .bind(voucher.id)
    .bind(user.as_str())
    .bind(&req.body.order_id)
    .bind(req.body.order_amount)
    .bind(String::from(req.body.currency.clone()))
    .bind(discount.discount_on(req.body.order_amount))
    .fetch_one(&mut *claim.tx)
    .await
    .map_err(|e| match &e {
        // The index that keeps one live redemption per voucher: the guard above
        // makes this unreachable, and should it ever be reached it is the same
        // conflict the guard answers, never a 500.
        sqlx::Error::Database(db)
            if db.constraint() == Some("redemptions_one_live_per_voucher") =>
        {
            ApiError::VoucherAlreadyRedeemed
        }
        _ => ApiError::from(e),
    })?;
    let response = RedemptionResponse {
        redemption: Redemption::from(&row),
        voucher: updated.view(Utc::now()),
    };
    finish(
        claim,
        StatusCode::CREATED,
        EventType::VoucherRedeemed,
        &response,
        &user,
    )
    .await
}

#[utoipa::path(post, path = "/v1/redemptions/{id}/rollback", operation_id = "rollbackRedemption", tag = "users",
    request_body(content = Option<EmptyBody>, description = "no body, or `{}`"),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 200, description = "rolled back; the voucher is `issued` again", body = RedemptionResponse),
        (status = 404, description = "redemption_not_found (unknown, or not the caller's)", body = crate::error::Problem),
        (status = 409, description = "redemption_already_rolled_back (by another key)", body = crate::error::Problem)),
    security(("user" = [])))]
async fn rollback(
    State(state): State<AppState>,
    User(user): User,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    req: Idempotent<EmptyBody>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::RedemptionNotFound)?;
    let mut claim = match req
        .begin(&state, &Scope::user(&user), || {
            state.limits.check(&user, ip)
        })
        .await?
    {
        Begun::Replay(resp) => return Ok(resp),
        Begun::Fresh(claim) => *claim,
    };
    let row: Option<RedemptionRow> = sqlx::query_as(
        "UPDATE redemptions SET status = 'rolled_back', rolled_back_at = now()
         WHERE id = $1 AND user_id = $2 AND status = 'active'
         RETURNING *",
    )
    .bind(id)
    .bind(user.as_str())
    .fetch_optional(&mut *claim.tx)
    .await?;
    let Some(row) = row else {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM redemptions WHERE id = $1 AND user_id = $2)",
        )
        .bind(id)
        .bind(user.as_str())
        .fetch_one(&mut *claim.tx)
        .await?;
        return Err(if exists {
            ApiError::RedemptionAlreadyRolledBack
        } else {
            ApiError::RedemptionNotFound
        });
    };
    let voucher: VoucherRow = sqlx::query_as(
        "UPDATE vouchers SET status = 'issued', redeemed_at = NULL, order_id = NULL,
                             redemption_id = NULL
         WHERE id = $1 AND redemption_id = $2
         RETURNING *",
    )
    .bind(row.voucher_id)
    .bind(row.id)
    .fetch_one(&mut *claim.tx)
    .await?;
    let response = RedemptionResponse {
        redemption: Redemption::from(&row),
        voucher: voucher.view(Utc::now()),
    };
    finish(
        claim,
        StatusCode::OK,
        EventType::RedemptionRolledBack,
        &response,
        &user,
    )
    .await
}
