//! Campaigns: the admin routes that create, list, change and audit them, the public
//! read-only view, their request and response types, and the writes behind them. The
//! row and the rules it decides live in `row`, importable without these routes.

pub(crate) mod row;

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction, types::Json as DbJson};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub(crate) use row::{CampaignRow, CampaignStatus, VoucherTerms, fetch};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::Admin,
    domain::CampaignId,
    error::{ApiError, ApiResult, FieldError},
    events::{self, EventType},
    idempotency::{Begun, Idempotent, Scope, json_bytes_response},
    json::{self, Query},
};

/// The campaign routes, each registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(admin_get, update))
        .routes(routes!(audit))
        .routes(routes!(public_get))
        .routes(routes!(public_list))
}

struct ListedRow {
    row: CampaignRow,
    redeemed: i64,
}

/// A campaign as admins see it, with exact counters from Postgres.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Campaign {
    pub id: Uuid,
    pub name: String,
    pub status: CampaignStatus,
    pub total_stock: i64,
    pub remaining: i64,
    pub issued: i64,
    pub redeemed: i64,
    pub per_user_limit: i32,
    /// Vouchers of this campaign one order may take.
    pub max_per_order: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub paused: bool,
    pub voucher: VoucherTerms,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Campaign {
    /// The admin view; `redeemed` is counted from the rows by `count_redeemed`.
    pub(crate) fn new(r: &CampaignRow, redeemed: i64) -> Self {
        Campaign {
            id: r.id,
            name: r.name.clone(),
            status: r.status(Utc::now()),
            total_stock: r.total_stock,
            remaining: r.remaining,
            issued: r.issued,
            redeemed,
            per_user_limit: r.per_user_limit,
            max_per_order: r.max_per_order,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            paused: r.paused,
            voucher: r.terms(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Vouchers of a campaign currently redeemed (a partial index keeps this cheap).
async fn count_redeemed<'e>(db: impl sqlx::PgExecutor<'e>, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM vouchers WHERE campaign_id = $1 AND status = 'redeemed'"#,
        id,
    )
    .fetch_one(db)
    .await
}

/// The public view of a campaign; `remaining` may lag by about a second.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PublicCampaign {
    pub id: Uuid,
    pub name: String,
    pub status: CampaignStatus,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub remaining: i64,
    pub per_user_limit: i32,
    /// Vouchers of this campaign one order may take.
    pub max_per_order: i32,
    pub voucher: VoucherTerms,
    /// Now, by the clock that decides the opening (Postgres'): countdowns count from
    /// this, not from the device's clock.
    pub server_time: DateTime<Utc>,
}

impl PublicCampaign {
    fn new(row: &CampaignRow, server_time: DateTime<Utc>) -> Self {
        PublicCampaign {
            id: row.id,
            name: row.name.clone(),
            status: row.status(server_time),
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            remaining: row.remaining,
            per_user_limit: row.per_user_limit,
            max_per_order: row.max_per_order,
            voucher: row.terms(),
            server_time,
        }
    }
}

/// Campaigns live or upcoming, soonest first (at most 100).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PublicCampaignList {
    pub items: Vec<PublicCampaign>,
    /// Now, by the clock that decides the opening.
    pub server_time: DateTime<Utc>,
}

/// Public reads may be kept by a CDN or the browser for a second: `remaining` lags
/// by about that much anyway, and a launch's refreshes then reach voucherd once a
/// second per edge.
const PUBLIC_CACHE: &str = "public, max-age=1";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// 1 to 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub total_stock: i64,
    /// 1 to 100; defaults to 1.
    #[schema(minimum = 1, maximum = 100)]
    pub per_user_limit: Option<i32>,
    /// Vouchers of this campaign one order may take: 1 to 100; defaults to 1.
    #[schema(minimum = 1, maximum = 100)]
    pub max_per_order: Option<i32>,
    /// Defaults to now.
    pub starts_at: Option<DateTime<Utc>>,
    /// After `starts_at` and in the future.
    pub ends_at: DateTime<Utc>,
    pub voucher: VoucherTerms,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateCampaign {
    pub paused: Option<bool>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Stock only ever grows: 1 to 1,000,000,000 more.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub add_stock: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CampaignList {
    pub items: Vec<Campaign>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditCheck {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Audit {
    pub ok: bool,
    pub checks: Vec<AuditCheck>,
}

const MAX_STOCK: i64 = 1_000_000_000;

/// An instant as Postgres stores it (microseconds, truncated as `timestamptz` input
/// rounds only below that): validation judges exactly the values the row will hold.
fn at_stored_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

fn validate_create(c: &CreateCampaign, now: DateTime<Utc>) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let name_len = c.name.chars().count();
    // Postgres text cannot hold U+0000, and no other control character belongs in a
    // name an admin console shows.
    if !(1..=200).contains(&name_len) || c.name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must be 1 to 200 characters, no control characters",
        ));
    }
    if !(1..=MAX_STOCK).contains(&c.total_stock) {
        errors.push(FieldError::new(
            "total_stock",
            "must be from 1 to 1000000000",
        ));
    }
    if let Some(l) = c.per_user_limit
        && !(1..=100).contains(&l)
    {
        errors.push(FieldError::new("per_user_limit", "must be from 1 to 100"));
    }
    let starts_at = c.starts_at.map_or(now, at_stored_precision);
    let ends_at = at_stored_precision(c.ends_at);
    if ends_at <= starts_at {
        errors.push(FieldError::new("ends_at", "must be after starts_at"));
    }
    if ends_at <= now {
        errors.push(FieldError::new("ends_at", "must be in the future"));
    }
    c.voucher.discount.validate("voucher.discount", &mut errors);
    if c.voucher.min_order_amount < 0 {
        errors.push(FieldError::new("voucher.min_order_amount", "must be >= 0"));
    }
    if let Some(l) = c.max_per_order
        && !(1..=100).contains(&l)
    {
        errors.push(FieldError::new("max_per_order", "must be from 1 to 100"));
    }
    if let Some(s) = c.voucher.valid_for_seconds
        && !(60..=31_536_000).contains(&s)
    {
        errors.push(FieldError::new(
            "voucher.valid_for_seconds",
            "must be from 60 to 31536000",
        ));
    }
    match c.voucher.expires_at.map(at_stored_precision) {
        None if c.voucher.valid_for_seconds.is_none() => errors.push(FieldError::new(
            "voucher",
            "give valid_for_seconds, expires_at or both",
        )),
        Some(expires) if expires <= ends_at => errors.push(FieldError::new(
            "voucher.expires_at",
            "must be after the campaign's ends_at",
        )),
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn validate_update(u: &UpdateCampaign) -> Result<(), ApiError> {
    if u.paused.is_none() && u.ends_at.is_none() && u.add_stock.is_none() {
        return Err(ApiError::validation(
            "",
            "give at least one of paused, ends_at, add_stock",
        ));
    }
    if let Some(n) = u.add_stock
        && !(1..=MAX_STOCK).contains(&n)
    {
        return Err(ApiError::validation(
            "add_stock",
            "must be from 1 to 1000000000",
        ));
    }
    Ok(())
}

async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    id: CampaignId,
    c: &CreateCampaign,
    starts_at: DateTime<Utc>,
) -> ApiResult<CampaignRow> {
    sqlx::query_as!(
        CampaignRow,
        r#"INSERT INTO campaigns (id, name, total_stock, remaining, per_user_limit, starts_at,
                                  ends_at, discount, min_order_amount, valid_for_seconds,
                                  voucher_expires_at, max_per_order)
           VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           RETURNING id, name, total_stock, remaining, issued, per_user_limit, starts_at, ends_at, paused,
           discount AS "discount: sqlx::types::Json<crate::domain::Discount>", min_order_amount,
           valid_for_seconds, voucher_expires_at, max_per_order, created_at, updated_at"#,
        id.0,
        &c.name,
        c.total_stock,
        c.per_user_limit.unwrap_or(1),
        starts_at,
        at_stored_precision(c.ends_at),
        DbJson(&c.voucher.discount) as _,
        c.voucher.min_order_amount,
        c.voucher.valid_for_seconds,
        c.voucher.expires_at.map(at_stored_precision),
        c.max_per_order.unwrap_or(1),
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(constraint_to_validation)
}

/// The table's constraints, mapped to the field they guard; validation runs first,
/// so reaching one means a check the validation missed, never a 500.
fn constraint_to_validation(e: sqlx::Error) -> ApiError {
    let constraint = e
        .as_database_error()
        .and_then(|d| d.constraint())
        .map(str::to_owned);
    match constraint.as_deref() {
        Some("campaigns_ends_after_starts") => {
            ApiError::validation("ends_at", "must be after starts_at")
        }
        Some("campaigns_total_stock_check") => {
            ApiError::validation("add_stock", "total stock would exceed 1000000000")
        }
        Some("campaigns_voucher_expires_after_ends") => {
            ApiError::validation("ends_at", "must be before the vouchers' expires_at")
        }
        Some(other) => ApiError::validation("", format!("violates {other}")),
        None => e.into(),
    }
}

/// Applies a patch in one statement; the table's constraints reject an `ends_at`
/// before `starts_at` or stock beyond the maximum, and those are mapped to 422.
async fn apply_update(
    tx: &mut Transaction<'_, Postgres>,
    id: CampaignId,
    u: &UpdateCampaign,
) -> ApiResult<Option<CampaignRow>> {
    sqlx::query_as!(
        CampaignRow,
        r#"UPDATE campaigns SET
               paused = COALESCE($2, paused),
               ends_at = COALESCE($3, ends_at),
               total_stock = total_stock + COALESCE($4::bigint, 0),
               remaining = remaining + COALESCE($4::bigint, 0),
               updated_at = now()
           WHERE id = $1
           RETURNING id, name, total_stock, remaining, issued, per_user_limit, starts_at, ends_at, paused,
           discount AS "discount: sqlx::types::Json<crate::domain::Discount>", min_order_amount,
           valid_for_seconds, voucher_expires_at, max_per_order, created_at, updated_at"#,
        id.0,
        u.paused,
        u.ends_at,
        u.add_stock,
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(constraint_to_validation)
}

fn json_bytes<T: Serialize>(v: &T) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(ApiError::internal)
}

#[utoipa::path(post, path = "/v1/admin/campaigns", operation_id = "createCampaign", tag = "admin",
    request_body = CreateCampaign,
    params(("Idempotency-Key" = String, Header, description = "8–255 printable ASCII characters")),
    responses((status = 201, body = Campaign), (status = 400, body = crate::error::Problem),
              (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("admin" = [])))]
async fn create(
    State(state): State<AppState>,
    admin: Admin,
    req: Idempotent<CreateCampaign>,
) -> ApiResult<Response> {
    // One clock for validation and the default start, at the precision stored.
    let now = at_stored_precision(Utc::now());
    let mut reservation = match req
        .begin(
            &state,
            &Scope::admin(),
            || Ok(()),
            || validate_create(&req.body, now),
        )
        .await?
    {
        Begun::Replay(resp) => return Ok(resp),
        Begun::Fresh(reservation) => *reservation,
    };
    let id = CampaignId::new();
    let starts_at = req.body.starts_at.map_or(now, at_stored_precision);
    let row = insert(&mut reservation.tx, id, &req.body, starts_at).await?;
    let campaign = Campaign::new(&row, 0);
    let body = json_bytes(&campaign)?;
    reservation.complete(StatusCode::CREATED, &body).await?;
    events::record(
        &mut reservation.tx,
        EventType::CampaignCreated,
        &serde_json::json!({ "campaign": campaign, "actor": admin.actor() }),
    )
    .await?;
    reservation.commit().await?;
    state.cache.invalidate(id).await;
    Ok(json_bytes_response(StatusCode::CREATED, body))
}

#[utoipa::path(patch, path = "/v1/admin/campaigns/{id}", operation_id = "updateCampaign", tag = "admin",
    request_body = UpdateCampaign,
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = Campaign), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("admin" = [])))]
async fn update(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    req: Idempotent<UpdateCampaign>,
) -> ApiResult<Response> {
    let id = CampaignId::parse(&id)?;
    let mut reservation = match req
        .begin(
            &state,
            &Scope::admin(),
            || Ok(()),
            || validate_update(&req.body),
        )
        .await?
    {
        Begun::Replay(resp) => return Ok(resp),
        Begun::Fresh(reservation) => *reservation,
    };
    let row = apply_update(&mut reservation.tx, id, &req.body)
        .await?
        .ok_or(ApiError::CampaignNotFound)?;
    let redeemed = count_redeemed(&mut *reservation.tx, row.id).await?;
    let campaign = Campaign::new(&row, redeemed);
    let body = json_bytes(&campaign)?;
    reservation.complete(StatusCode::OK, &body).await?;
    events::record(
        &mut reservation.tx,
        EventType::CampaignUpdated,
        &serde_json::json!({ "campaign": campaign, "change": req.body, "actor": admin.actor() }),
    )
    .await?;
    reservation.commit().await?;
    state.cache.invalidate(id).await;
    Ok(json_bytes_response(StatusCode::OK, body))
}

#[utoipa::path(get, path = "/v1/admin/campaigns/{id}", operation_id = "getCampaign", tag = "admin",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Campaign), (status = 404, body = crate::error::Problem)),
    security(("admin" = [])))]
async fn admin_get(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    let id = CampaignId::parse(&id)?;
    let row = fetch(&state.db, id)
        .await?
        .ok_or(ApiError::CampaignNotFound)?;
    let redeemed = count_redeemed(&state.db, row.id).await?;
    Ok(Json(Campaign::new(&row, redeemed)))
}

#[utoipa::path(get, path = "/v1/admin/campaigns", operation_id = "listCampaigns", tag = "admin", params(ListParams),
    responses((status = 200, body = CampaignList)), security(("admin" = [])))]
async fn list(
    State(state): State<AppState>,
    _: Admin,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<CampaignList>> {
    let limit = json::page_limit(params.limit, 20, 100)?;
    let cursor = json::cursor(params.cursor.as_deref())?;
    // Ids are v7 UUIDs, so id order is creation order: newest first.
    let mut rows: Vec<ListedRow> = sqlx::query!(
        r#"SELECT id, name, total_stock, remaining, issued, per_user_limit, starts_at, ends_at, paused,
           discount AS "discount: sqlx::types::Json<crate::domain::Discount>", min_order_amount,
           valid_for_seconds, voucher_expires_at, max_per_order, created_at, updated_at,
                  (SELECT count(*) FROM vouchers v
                   WHERE v.campaign_id = c.id AND v.status = 'redeemed') AS "redeemed!"
           FROM campaigns c WHERE ($1::uuid IS NULL OR c.id < $1)
           ORDER BY c.id DESC LIMIT $2"#,
        cursor,
        limit + 1,
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|r| ListedRow {
        redeemed: r.redeemed,
        row: row::row_from!(r),
    })
    .collect();
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.row.id.to_string())
    } else {
        None
    };
    Ok(Json(CampaignList {
        items: rows
            .iter()
            .map(|r| Campaign::new(&r.row, r.redeemed))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/admin/campaigns/{id}/audit", operation_id = "getCampaignAudit", tag = "admin",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Audit), (status = 404, body = crate::error::Problem)),
    security(("admin" = [])))]
async fn audit(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Audit>> {
    let id = CampaignId::parse(&id)?;
    // One REPEATABLE READ snapshot, so every check sees the same moment.
    let mut tx = crate::begin(&state.db).await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let row = row::fetch(&mut *tx, id)
        .await?
        .ok_or(ApiError::CampaignNotFound)?;
    // Voided vouchers stay rows; those whose void returned their unit of stock are
    // no longer counted in `issued`.
    let vouchers = sqlx::query!(
        r#"SELECT count(*) AS "all!",
                  count(*) FILTER (WHERE status = 'voided') AS "voided!",
                  count(*) FILTER (WHERE stock_returned) AS "returned!",
                  count(*) FILTER (WHERE stock_returned AND status <> 'voided') AS "returned_unvoided!"
           FROM vouchers WHERE campaign_id = $1"#,
        id.0,
    )
    .fetch_one(&mut *tx)
    .await?;
    let doubly_redeemed: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM (SELECT r.voucher_id FROM redemptions r
               JOIN vouchers v ON v.id = r.voucher_id
               WHERE v.campaign_id = $1 AND r.status = 'active'
               GROUP BY r.voucher_id HAVING count(*) > 1) twice"#,
        id.0,
    )
    .fetch_one(&mut *tx)
    .await?;
    // A voucher is `redeemed` exactly when it has a live redemption, and both name
    // the same redemption and order.
    let redemption_mismatch: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM vouchers v
           LEFT JOIN redemptions r ON r.voucher_id = v.id AND r.status = 'active'
           WHERE v.campaign_id = $1
             AND ((v.status = 'redeemed') IS DISTINCT FROM (r.id IS NOT NULL)
                  OR (r.id IS NOT NULL AND (r.id IS DISTINCT FROM v.redemption_id
                                            OR r.order_id IS DISTINCT FROM v.order_id)))"#,
        id.0,
    )
    .fetch_one(&mut *tx)
    .await?;
    let over_limit: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM (SELECT user_id FROM vouchers WHERE campaign_id = $1
           GROUP BY user_id HAVING count(*) > $2) over"#,
        id.0,
        row.per_user_limit as i64,
    )
    .fetch_one(&mut *tx)
    .await?;
    let grant_count_mismatch: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM
               (SELECT user_id, granted FROM user_grants WHERE campaign_id = $1) c
               FULL JOIN (SELECT user_id, count(*)::int AS n FROM vouchers
                          WHERE campaign_id = $1 GROUP BY user_id) v USING (user_id)
           WHERE c.granted IS DISTINCT FROM v.n"#,
        id.0,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

    let check = |name, ok, detail: String| AuditCheck { name, ok, detail };
    let checks = vec![
        check(
            "stock_balance",
            row.total_stock == row.remaining + row.issued,
            format!(
                "total_stock {} = remaining {} + issued {}",
                row.total_stock, row.remaining, row.issued
            ),
        ),
        check(
            "issued_matches_vouchers",
            row.issued == vouchers.all - vouchers.returned && row.issued <= row.total_stock,
            format!(
                "issued counter {} vs {} voucher rows less {} voided with their stock returned",
                row.issued, vouchers.all, vouchers.returned
            ),
        ),
        check(
            "returned_stock_only_from_voided",
            vouchers.returned_unvoided == 0,
            format!(
                "{} vouchers voided, {} of them with their stock returned; {} returned but not voided",
                vouchers.voided, vouchers.returned, vouchers.returned_unvoided
            ),
        ),
        check(
            "remaining_non_negative",
            row.remaining >= 0,
            format!("remaining {}", row.remaining),
        ),
        check(
            "per_user_limit",
            over_limit == 0,
            format!(
                "{over_limit} users above the limit of {}",
                row.per_user_limit
            ),
        ),
        check(
            "user_grants_match_vouchers",
            grant_count_mismatch == 0,
            format!("{grant_count_mismatch} users whose grant counter differs from their vouchers"),
        ),
        check(
            "one_live_redemption_per_voucher",
            doubly_redeemed == 0,
            format!("{doubly_redeemed} vouchers with more than one live redemption"),
        ),
        check(
            "redeemed_vouchers_match_redemptions",
            redemption_mismatch == 0,
            format!("{redemption_mismatch} vouchers whose state disagrees with their redemptions"),
        ),
    ];
    Ok(Json(Audit {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", operation_id = "getPublicCampaign", tag = "public",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = PublicCampaign), (status = 404, body = crate::error::Problem)))]
async fn public_get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = CampaignId::parse(&id)?;
    let row: Arc<CampaignRow> = state
        .cache
        .get(&state.db, id)
        .await?
        .ok_or(ApiError::CampaignNotFound)?;
    let view = PublicCampaign::new(&row, state.cache.clock().estimate());
    Ok(([(header::CACHE_CONTROL, PUBLIC_CACHE)], Json(view)).into_response())
}

#[utoipa::path(get, path = "/v1/campaigns", operation_id = "listPublicCampaigns", tag = "public",
    responses((status = 200, body = PublicCampaignList,
               headers(("Cache-Control" = String, description = "public, max-age=1")))))]
async fn public_list(State(state): State<AppState>) -> ApiResult<Response> {
    let rows = state.cache.listed(&state.reads).await?;
    let server_time = state.cache.clock().estimate();
    // The snapshot may be a second old: one that ended since is left out.
    let items = rows
        .iter()
        .filter(|r| r.ends_at > server_time)
        .map(|r| PublicCampaign::new(r, server_time))
        .collect();
    let list = PublicCampaignList { items, server_time };
    Ok(([(header::CACHE_CONTROL, PUBLIC_CACHE)], Json(list)).into_response())
}
