//! Redemptions: the owner (or the order service acting for them) quotes and spends a
//! voucher at checkout, and the checkout saga's compensation rolls it back when the
//! order is cancelled. A redemption is one transaction: the order's row locked, the
//! rules of `checkout` applied to what Postgres holds, and the voucher taken by a
//! conditional update on its state, never read-then-write.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::Shopper,
    checkout::Checkout,
    domain::{Currency, UserId, VoucherCode},
    error::{ApiError, ApiResult, FieldError},
    events::{self, EventType},
    idempotency::{Begun, Idempotent, Reservation, json_bytes_response},
    json::{EmptyBody, Query},
    limits::ClientIp,
    vouchers::{Voucher, VoucherRow},
};

/// The checkout routes, each registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(redeem))
        .routes(routes!(quote))
        .routes(routes!(rollback))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedeemRequest {
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
pub(crate) enum RedemptionStatus {
    Active,
    RolledBack,
}

/// A redemption row as stored (support lookups read them too).
#[derive(Debug, Clone)]
pub(crate) struct RedemptionRow {
    pub id: Uuid,
    pub voucher_id: Uuid,
    pub order_id: String,
    pub order_amount: i64,
    pub currency: String,
    pub discount_amount: i64,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub rolled_back_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Redemption {
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
pub(crate) struct RedemptionResponse {
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

/// How a redemption reads the order: locking it (the order's redemptions queue on
/// its row), or only looking (a quote).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OrderRead {
    Lock,
    Look,
}

/// The order as first recorded. Locking creates the row if this is the order's first
/// redemption (a refusal rolls it back with everything else) and holds it until the
/// commit, so concurrent redemptions of one order, of any vouchers, run one at a time
/// and each sees the discounts the others committed.
async fn recorded_order(
    tx: &mut Transaction<'_, Postgres>,
    owner: &UserId,
    order: &RedeemRequest,
    read: OrderRead,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let recorded = match read {
        OrderRead::Lock => {
            sqlx::query!(
                "INSERT INTO orders (owner, order_id, amount, currency) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (owner, order_id) DO NOTHING",
                owner.as_str(),
                &order.order_id,
                order.order_amount,
                order.currency.as_str(),
            )
            .execute(&mut **tx)
            .await?;
            sqlx::query!(
                "SELECT amount, currency FROM orders WHERE owner = $1 AND order_id = $2
                 FOR UPDATE",
                owner.as_str(),
                &order.order_id,
            )
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| (r.amount, r.currency))
        }
        OrderRead::Look => sqlx::query!(
            "SELECT amount, currency FROM orders WHERE owner = $1 AND order_id = $2",
            owner.as_str(),
            &order.order_id,
        )
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| (r.amount, r.currency)),
    };
    Ok(recorded)
}

/// Everything the checkout rules look at for this voucher on this order, read in
/// the transaction (after the order's row is locked, for a redemption).
async fn checkout_facts(
    tx: &mut Transaction<'_, Postgres>,
    voucher: &VoucherRow,
    db_now: DateTime<Utc>,
    owner: &UserId,
    order: &RedeemRequest,
    recorded: Option<(i64, String)>,
) -> Result<Checkout, sqlx::Error> {
    let on_order = sqlx::query!(
        r#"SELECT COALESCE(sum(r.discount_amount), 0)::bigint AS "discounted!",
                  count(*) FILTER (WHERE v.campaign_id = $3) AS "same_campaign!",
                  COALESCE((SELECT max_per_order FROM campaigns WHERE id = $3), 1)
                      AS "max_per_order!"
           FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id
           WHERE r.user_id = $1 AND r.order_id = $2 AND r.status = 'active'"#,
        owner.as_str(),
        &order.order_id,
        voucher.campaign_id,
    )
    .fetch_one(&mut **tx)
    .await?;
    let (discounted, same_campaign, max_per_order) = (
        on_order.discounted,
        on_order.same_campaign,
        on_order.max_per_order,
    );
    Ok(Checkout {
        voucher_voided: voucher.status == "voided",
        voucher_redeemed: voucher.status == "redeemed",
        voucher_expires_at: voucher.expires_at,
        discount: voucher.discount.0.clone(),
        min_order_amount: voucher.min_order_amount,
        order_amount: order.order_amount,
        order_currency: order.currency.as_str().to_string(),
        recorded_order: recorded,
        order_discounted: discounted,
        order_same_campaign: same_campaign,
        max_per_order,
        now: db_now,
    })
}

/// The caller's voucher, with the transaction's `now()`: the instant Postgres judges
/// expiry by in the conditional update, so a refusal names Postgres' reason even when
/// this machine's clock disagrees with Postgres'.
async fn owned_voucher(
    tx: &mut Transaction<'_, Postgres>,
    code: &VoucherCode,
    user: &UserId,
) -> ApiResult<(VoucherRow, DateTime<Utc>)> {
    let r = sqlx::query!(
        r#"SELECT id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                  min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id,
                  now() AS "db_now!"
           FROM vouchers WHERE code = $1 AND user_id = $2"#,
        code.as_str(),
        user.as_str(),
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::VoucherNotFound)?;
    let row = VoucherRow {
        id: r.id,
        code: r.code,
        campaign_id: r.campaign_id,
        user_id: r.user_id,
        status: r.status,
        discount: r.discount,
        min_order_amount: r.min_order_amount,
        issued_at: r.issued_at,
        expires_at: r.expires_at,
        redeemed_at: r.redeemed_at,
        order_id: r.order_id,
        redemption_id: r.redemption_id,
    };
    Ok((row, r.db_now))
}

/// Commits the effect with its stored response and event.
async fn finish(
    mut reservation: Reservation,
    status: StatusCode,
    kind: EventType,
    response: &RedemptionResponse,
    shopper: &Shopper,
    reads: &crate::replica::Reads,
) -> ApiResult<Response> {
    let body = serde_json::to_vec(response).map_err(ApiError::internal)?;
    reservation.complete(status, &body).await?;
    let mut data = serde_json::json!({
        "redemption": response.redemption,
        "voucher": response.voucher,
        "user_id": shopper.user.as_str(),
    });
    if let Some(service) = &shopper.service {
        // Who acted for the user: the order service, named.
        data["actor"] = serde_json::json!({ "service": service });
    }
    events::record(&mut reservation.tx, kind, &data).await?;
    reservation.commit().await?;
    // the shopper's next wallet read must see this
    reads.wrote(&shopper.user).await;
    Ok(json_bytes_response(status, body))
}

#[utoipa::path(post, path = "/v1/vouchers/{code}/redemptions", operation_id = "redeemVoucher", tag = "users",
    request_body = RedeemRequest,
    params(("code" = String, Path), ("Idempotency-Key" = String, Header),
           ("On-Behalf-Of" = Option<String>, Header, description = "with a service token: the user the order service acts for")),
    responses(
        (status = 201, body = RedemptionResponse),
        (status = 403, description = "forbidden (a credential that may not redeem)", body = crate::error::Problem),
        (status = 404, description = "voucher_not_found (unknown, or not the caller's)", body = crate::error::Problem),
        (status = 409, description = "voucher_voided (an admin voided it), voucher_already_redeemed, voucher_expired, order_discount_exceeded (the order's active discounts would pass its amount; never reduced to fit), voucher_not_combinable (the order already carries max_per_order vouchers of this campaign)", body = crate::error::Problem),
        (status = 422, description = "order_below_minimum, currency_mismatch, order_mismatch (the order was first redeemed with another amount or currency), validation_failed", body = crate::error::Problem)),
    security(("user" = []), ("service" = [])))]
async fn redeem(
    State(state): State<AppState>,
    shopper: Shopper,
    ClientIp(ip): ClientIp,
    Path(code): Path<String>,
    req: Idempotent<RedeemRequest>,
) -> ApiResult<Response> {
    let code = VoucherCode::parse(&code)?;
    let user = &shopper.user;
    let mut reservation = match req
        .begin(
            &state,
            &shopper.scope(),
            || state.limits.check(user, shopper.client_ip(ip)),
            || validate(&req.body),
        )
        .await?
    {
        Begun::Replay(resp) => {
            // a replay may be the first answer its client sees (the first was lost)
            state.reads.wrote(&shopper.user).await;
            return Ok(resp);
        }
        Begun::Fresh(reservation) => *reservation,
    };
    // The order first: a redemption queued behind another of the same order reads the
    // voucher only once that one committed, so it names the reason a quote would.
    let recorded = recorded_order(&mut reservation.tx, user, &req.body, OrderRead::Lock).await?;
    let (voucher, db_now) = owned_voucher(&mut reservation.tx, &code, user).await?;
    let facts = checkout_facts(
        &mut reservation.tx,
        &voucher,
        db_now,
        user,
        &req.body,
        recorded,
    )
    .await?;
    let discount = facts.decide()?;
    let redemption_id = Uuid::now_v7();
    // The guard: only an issued, unexpired voucher changes state. Of concurrent
    // redemptions of one voucher exactly one matches; the others see the winner.
    let updated: Option<VoucherRow> = sqlx::query_as!(
        VoucherRow,
        r#"UPDATE vouchers SET status = 'redeemed', redeemed_at = now(), order_id = $2,
                               redemption_id = $3
           WHERE id = $1 AND status = 'issued' AND expires_at > now()
           RETURNING id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                  min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id"#,
        voucher.id,
        &req.body.order_id,
        redemption_id,
    )
    .fetch_optional(&mut *reservation.tx)
    .await?;
    let Some(updated) = updated else {
        // Redeemed by another order or voided since it was read: name the reason the rules give
        // for the voucher as it is now.
        let (current, db_now) = owned_voucher(&mut reservation.tx, &code, user).await?;
        let now_facts = Checkout {
            voucher_voided: current.status == "voided",
            voucher_redeemed: current.status == "redeemed",
            voucher_expires_at: current.expires_at,
            now: db_now,
            ..facts
        };
        return Err(now_facts
            .decide()
            .err()
            .unwrap_or(ApiError::VoucherAlreadyRedeemed));
    };
    let row: RedemptionRow = sqlx::query_as!(
        RedemptionRow,
        "INSERT INTO redemptions (id, voucher_id, user_id, order_id, order_amount, currency,
                                  discount_amount)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, voucher_id, order_id, order_amount, currency, discount_amount, status, created_at,
                     rolled_back_at",
        redemption_id,
        voucher.id,
        user.as_str(),
        &req.body.order_id,
        req.body.order_amount,
        req.body.currency.as_str(),
        discount,
    )
    .fetch_one(&mut *reservation.tx)
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
        voucher: updated.view(db_now),
    };
    finish(
        reservation,
        StatusCode::CREATED,
        EventType::VoucherRedeemed,
        &response,
        &shopper,
        &state.reads,
    )
    .await
}

/// The order a quote is asked for, from the query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuoteParams {
    /// The checkout's order id, 1 to 128 characters.
    pub order_id: String,
    /// The order total in minor units, > 0.
    #[param(minimum = 1)]
    pub order_amount: i64,
    #[param(value_type = String, example = "VND")]
    pub currency: Currency,
}

/// What a redemption of this voucher on this order would give.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Quote {
    pub redeemable: bool,
    /// What the voucher would take off, when redeemable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_amount: Option<i64>,
    /// The refusal's code, exactly as the redemption would answer it, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[utoipa::path(get, path = "/v1/vouchers/{code}/quote", operation_id = "quoteVoucher", tag = "users",
    params(("code" = String, Path), QuoteParams,
           ("On-Behalf-Of" = Option<String>, Header, description = "with a service token: the user the order service acts for")),
    responses(
        (status = 200, description = "what a redemption would give now: `redeemable` with `discount_amount`, or not with the `code` the redemption would answer; no effect", body = Quote),
        (status = 404, description = "voucher_not_found (unknown, or not the caller's)", body = crate::error::Problem),
        (status = 422, description = "validation_failed (bad query values)", body = crate::error::Problem)),
    security(("user" = []), ("service" = [])))]
async fn quote(
    State(state): State<AppState>,
    shopper: Shopper,
    ClientIp(ip): ClientIp,
    Path(code): Path<String>,
    Query(params): Query<QuoteParams>,
) -> ApiResult<Json<Quote>> {
    // Each quote is a transaction's worth of reads: limited like a redemption.
    state.limits.check(&shopper.user, shopper.client_ip(ip))?;
    let order = RedeemRequest {
        order_id: params.order_id,
        order_amount: params.order_amount,
        currency: params.currency,
    };
    validate(&order)?;
    let code = VoucherCode::parse(&code)?;
    let mut tx = crate::begin(&state.db).await?;
    let (voucher, db_now) = owned_voucher(&mut tx, &code, &shopper.user).await?;
    let recorded = recorded_order(&mut tx, &shopper.user, &order, OrderRead::Look).await?;
    let facts = checkout_facts(&mut tx, &voucher, db_now, &shopper.user, &order, recorded).await?;
    tx.rollback().await?;
    Ok(Json(match facts.decide() {
        Ok(discount) => Quote {
            redeemable: true,
            discount_amount: Some(discount),
            code: None,
            detail: None,
        },
        Err(refusal) => Quote {
            redeemable: false,
            discount_amount: None,
            code: Some(refusal.code()),
            detail: Some(refusal.to_string()),
        },
    }))
}

#[utoipa::path(post, path = "/v1/redemptions/{id}/rollback", operation_id = "rollbackRedemption", tag = "users",
    request_body(content = Option<EmptyBody>, description = "no body, or `{}`"),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header),
           ("On-Behalf-Of" = Option<String>, Header, description = "with a service token: the user the order service acts for")),
    responses(
        (status = 200, description = "rolled back; the voucher is `issued` again", body = RedemptionResponse),
        (status = 404, description = "redemption_not_found (unknown, or not the caller's)", body = crate::error::Problem),
        (status = 409, description = "redemption_already_rolled_back (by another key)", body = crate::error::Problem)),
    security(("user" = []), ("service" = [])))]
async fn rollback(
    State(state): State<AppState>,
    shopper: Shopper,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    req: Idempotent<EmptyBody>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::RedemptionNotFound)?;
    let user = &shopper.user;
    let mut reservation = match req
        .begin(
            &state,
            &shopper.scope(),
            || state.limits.check(user, shopper.client_ip(ip)),
            || Ok(()),
        )
        .await?
    {
        Begun::Replay(resp) => {
            // a replay may be the first answer its client sees (the first was lost)
            state.reads.wrote(&shopper.user).await;
            return Ok(resp);
        }
        Begun::Fresh(reservation) => *reservation,
    };
    let row: Option<RedemptionRow> = sqlx::query_as!(
        RedemptionRow,
        "UPDATE redemptions SET status = 'rolled_back', rolled_back_at = now()
         WHERE id = $1 AND user_id = $2 AND status = 'active'
         RETURNING id, voucher_id, order_id, order_amount, currency, discount_amount, status, created_at,
                     rolled_back_at",
        id,
        user.as_str(),
    )
    .fetch_optional(&mut *reservation.tx)
    .await?;
    let Some(row) = row else {
        let exists: bool = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM redemptions WHERE id = $1 AND user_id = $2) AS "exists!""#,
            id,
            user.as_str(),
        )
        .fetch_one(&mut *reservation.tx)
        .await?;
        return Err(if exists {
            ApiError::RedemptionAlreadyRolledBack
        } else {
            ApiError::RedemptionNotFound
        });
    };
    let voucher: VoucherRow = sqlx::query_as!(
        VoucherRow,
        r#"UPDATE vouchers SET status = 'issued', redeemed_at = NULL, order_id = NULL,
                               redemption_id = NULL
           WHERE id = $1 AND redemption_id = $2
           RETURNING id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                  min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id"#,
        row.voucher_id,
        row.id,
    )
    .fetch_one(&mut *reservation.tx)
    .await?;
    let response = RedemptionResponse {
        redemption: Redemption::from(&row),
        voucher: voucher.view(Utc::now()),
    };
    finish(
        reservation,
        StatusCode::OK,
        EventType::RedemptionRolledBack,
        &response,
        &shopper,
        &state.reads,
    )
    .await
}
