//! Support after a launch: admins look vouchers up (by code with its redemptions, by
//! holder across campaigns, by campaign) and void them (bots found after the
//! launch), optionally returning the voucher's unit of stock to its campaign.

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
    auth::Admin,
    domain::{CampaignId, UserId, VoucherCode},
    error::{ApiError, ApiResult},
    events::{self, EventType},
    idempotency::{Begun, Idempotent, Scope, json_bytes_response},
    json::{self, Query},
    redemptions::{Redemption, RedemptionRow},
    vouchers::{Holding, ListedVoucher, Voucher, VoucherListParams, listed_voucher, page_of},
};

/// The support routes, each registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_voucher))
        .routes(routes!(void))
        .routes(routes!(user_vouchers))
        .routes(routes!(campaign_vouchers))
}

/// A voucher as support sees it: the holder's view, who holds it, and its void.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AdminVoucher {
    #[serde(flatten)]
    pub voucher: Voucher,
    /// The holder (the JWT `sub` that grabbed it).
    pub user_id: String,
    /// When an admin voided it; null unless `status` is `voided`.
    pub voided_at: Option<DateTime<Utc>>,
    /// Whether its void returned its unit of stock to the campaign.
    pub stock_returned: bool,
}

/// One voucher looked up by code, with every redemption it had (rolled back ones
/// too), oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VoucherDetail {
    #[serde(flatten)]
    pub voucher: AdminVoucher,
    pub redemptions: Vec<Redemption>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AdminVoucherList {
    pub items: Vec<AdminVoucher>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/admin/vouchers/{code}/void`'s body (or none).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VoidRequest {
    /// Move the voucher's unit of stock from `issued` back to `remaining` (a sold-out
    /// campaign grants again). Default false. The holder's per-user count is kept.
    #[serde(default)]
    pub return_stock: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VoidResponse {
    pub voucher: AdminVoucher,
}

/// A voucher as support sees it, from a row with its void.
fn admin_view(listed: &ListedVoucher, now: DateTime<Utc>) -> AdminVoucher {
    AdminVoucher {
        voucher: listed.row.view(now),
        user_id: listed.row.user_id.clone(),
        voided_at: listed.voided_at,
        stock_returned: listed.stock_returned,
    }
}

/// A page of `page_of` as support lists it.
fn page((rows, next_cursor): (Vec<ListedVoucher>, Option<String>)) -> AdminVoucherList {
    let now = Utc::now();
    AdminVoucherList {
        items: rows.iter().map(|r| admin_view(r, now)).collect(),
        next_cursor,
    }
}

#[utoipa::path(get, path = "/v1/admin/vouchers/{code}", operation_id = "getVoucherForSupport", tag = "admin",
    params(("code" = String, Path, description = "the voucher's code, in any letter case")),
    responses((status = 200, body = VoucherDetail),
              (status = 404, description = "voucher_not_found", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn get_voucher(
    State(state): State<AppState>,
    _: Admin,
    Path(code): Path<String>,
) -> ApiResult<Json<VoucherDetail>> {
    let code = VoucherCode::parse(&code)?;
    let found = sqlx::query!(
        r#"SELECT id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                  min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id,
                  voided_at, stock_returned
           FROM vouchers WHERE code = $1"#,
        code.as_str(),
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::VoucherNotFound)?;
    let found = listed_voucher!(found);
    let redemptions: Vec<RedemptionRow> = sqlx::query_as!(
        RedemptionRow,
        "SELECT id, voucher_id, order_id, order_amount, currency, discount_amount, status,
                created_at, rolled_back_at
         FROM redemptions WHERE voucher_id = $1 ORDER BY id",
        found.row.id,
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(VoucherDetail {
        voucher: admin_view(&found, Utc::now()),
        redemptions: redemptions.iter().map(Redemption::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/admin/users/{sub}/vouchers", operation_id = "listUserVouchersForSupport", tag = "admin",
    params(("sub" = String, Path, description = "the user id (JWT `sub`), percent-encoded"), VoucherListParams),
    responses((status = 200, description = "the user's vouchers of every campaign, newest first", body = AdminVoucherList),
              (status = 422, description = "validation_failed (a `sub` no user can have, a bad `status`, `limit` or `cursor`)", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn user_vouchers(
    State(state): State<AppState>,
    _: Admin,
    Path(sub): Path<String>,
    Query(params): Query<VoucherListParams>,
) -> ApiResult<Json<AdminVoucherList>> {
    let user = UserId::parse(&sub).ok_or_else(|| {
        ApiError::validation("sub", "must be 1 to 128 characters, no control characters")
    })?;
    let limit = json::page_limit(params.limit, 50, 100)?;
    let cursor = json::cursor(params.cursor.as_deref())?;
    let listed = page_of(
        &state.db,
        Holding::User(&user),
        params.status,
        cursor,
        limit,
    )
    .await?;
    Ok(Json(page(listed)))
}

#[utoipa::path(get, path = "/v1/admin/campaigns/{id}/vouchers", operation_id = "listCampaignVouchers", tag = "admin",
    params(("id" = Uuid, Path), VoucherListParams),
    responses((status = 200, description = "the campaign's vouchers, newest first", body = AdminVoucherList),
              (status = 404, description = "campaign_not_found", body = crate::error::Problem),
              (status = 422, description = "validation_failed (a bad `status`, `limit` or `cursor`)", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn campaign_vouchers(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Query(params): Query<VoucherListParams>,
) -> ApiResult<Json<AdminVoucherList>> {
    let id = CampaignId::parse(&id)?;
    let limit = json::page_limit(params.limit, 50, 100)?;
    let cursor = json::cursor(params.cursor.as_deref())?;
    let exists: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $1) AS "exists!""#,
        id.0,
    )
    .fetch_one(&state.db)
    .await?;
    if !exists {
        return Err(ApiError::CampaignNotFound);
    }
    let listed = page_of(
        &state.db,
        Holding::Campaign(id),
        params.status,
        cursor,
        limit,
    )
    .await?;
    Ok(Json(page(listed)))
}

/// Voids the voucher if it is issued and unexpired: one conditional update, so of a
/// void and a redemption racing for it exactly one matches, and the other sees the
/// winner. Returns the voided row and the transaction's `now()`, or the refusal the
/// voucher's state gives.
#[tracing::instrument(skip_all)]
async fn void_voucher(
    tx: &mut Transaction<'_, Postgres>,
    code: &VoucherCode,
    return_stock: bool,
) -> ApiResult<(ListedVoucher, DateTime<Utc>)> {
    let voided = sqlx::query!(
        r#"UPDATE vouchers SET status = 'voided', voided_at = now(), stock_returned = $2
           WHERE code = $1 AND status = 'issued' AND expires_at > now()
           RETURNING id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                  min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id,
                  voided_at, stock_returned, now() AS "db_now!""#,
        code.as_str(),
        return_stock,
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(r) = voided {
        let now = r.db_now;
        return Ok((listed_voucher!(r), now));
    }
    let current = sqlx::query!(
        r#"SELECT status, expires_at <= now() AS "expired!" FROM vouchers WHERE code = $1"#,
        code.as_str(),
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::VoucherNotFound)?;
    Err(match current.status.as_str() {
        "voided" => ApiError::VoucherVoided,
        "issued" if current.expired => ApiError::VoucherExpired,
        // Redeemed when the update looked (it may have been rolled back since).
        _ => ApiError::VoucherAlreadyRedeemed,
    })
}

/// The campaign's counters after a returned unit.
#[derive(Debug, Serialize)]
struct Counters {
    id: Uuid,
    total_stock: i64,
    remaining: i64,
    issued: i64,
}

/// Moves one unit of the campaign's stock from `issued` back to `remaining`, in the
/// void's transaction, so `total_stock = remaining + issued` holds at every commit.
/// `updated_at` moves forward (by a microsecond at least): the holder filters are
/// keyed by `issued` and `updated_at`, and `issued` alone now goes back.
#[tracing::instrument(skip_all)]
async fn return_unit(tx: &mut Transaction<'_, Postgres>, campaign: Uuid) -> ApiResult<Counters> {
    let counters = sqlx::query_as!(
        Counters,
        "UPDATE campaigns SET remaining = remaining + 1, issued = issued - 1,
                              updated_at = greatest(now(), updated_at + interval '1 microsecond')
         WHERE id = $1
         RETURNING id, total_stock, remaining, issued",
        campaign,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(counters)
}

#[utoipa::path(post, path = "/v1/admin/vouchers/{code}/void", operation_id = "voidVoucher", tag = "admin",
    request_body(content = Option<VoidRequest>, description = "no body, `{}`, or `{\"return_stock\": true}`"),
    params(("code" = String, Path), ("Idempotency-Key" = String, Header, description = "8–255 printable ASCII characters")),
    responses(
        (status = 200, description = "voided (or replayed, with `Idempotent-Replayed: true`); a `voucher.voided` event is written", body = VoidResponse),
        (status = 404, description = "voucher_not_found", body = crate::error::Problem),
        (status = 409, description = "voucher_voided (already), voucher_already_redeemed, voucher_expired, idempotency_key_in_use", body = crate::error::Problem),
        (status = 422, description = "validation_failed, idempotency_key_reused", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn void(
    State(state): State<AppState>,
    admin: Admin,
    Path(code): Path<String>,
    req: Idempotent<VoidRequest>,
) -> ApiResult<Response> {
    let code = VoucherCode::parse(&code)?;
    let mut reservation = match req
        .begin(&state, &Scope::admin(), || Ok(()), || Ok(()))
        .await?
    {
        Begun::Replay(resp) => return Ok(resp),
        Begun::Fresh(reservation) => *reservation,
    };
    let return_stock = req.body.return_stock;
    let (voided, now) = void_voucher(&mut reservation.tx, &code, return_stock).await?;
    let campaign = voided.row.campaign_id;
    let counters = if return_stock {
        Some(return_unit(&mut reservation.tx, campaign).await?)
    } else {
        None
    };
    let response = VoidResponse {
        voucher: admin_view(&voided, now),
    };
    let body = serde_json::to_vec(&response).map_err(ApiError::internal)?;
    reservation.complete(StatusCode::OK, &body).await?;
    events::record(
        &mut reservation.tx,
        EventType::VoucherVoided,
        &serde_json::json!({
            "voucher": response.voucher,
            "return_stock": return_stock,
            "campaign": counters,
            "actor": admin.actor(),
        }),
    )
    .await?;
    reservation.commit().await?;
    // the holder's next wallet read must show the void, whatever a replica has replayed
    if let Some(holder) = crate::domain::UserId::parse(&voided.row.user_id) {
        state.reads.wrote(&holder).await;
    }
    if return_stock {
        // The campaign may have been sold out: its snapshot must learn it grants again.
        state.cache.invalidate(CampaignId(campaign)).await;
    }
    Ok(json_bytes_response(StatusCode::OK, body))
}
