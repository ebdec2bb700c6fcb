//! Vouchers: the caller's wallet routes and the voucher rows they read.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::User,
    domain::{CampaignId, Discount, UserId, VoucherCode},
    error::{ApiError, ApiResult},
    json::{self, Query},
};

/// The wallet routes, each registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
}

/// A voucher row as stored. Queries name its columns (with `discount`'s type), so
/// `query_as!` checks each against the table when the crate is built.
#[derive(Debug, Clone)]
pub struct VoucherRow {
    pub id: Uuid,
    pub code: String,
    pub campaign_id: Uuid,
    pub user_id: String,
    pub status: String,
    pub discount: DbJson<Discount>,
    pub min_order_amount: i64,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
    /// The live redemption while `status` is `redeemed`.
    pub redemption_id: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoucherStatus {
    Issued,
    Redeemed,
    /// Voided by an admin: it can no longer be redeemed.
    Voided,
    Expired,
}

impl VoucherStatus {
    /// The word a status filter passes to the queries, which judge `expired` by
    /// `expires_at` as `VoucherRow::view` does.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VoucherStatus::Issued => "issued",
            VoucherStatus::Redeemed => "redeemed",
            VoucherStatus::Voided => "voided",
            VoucherStatus::Expired => "expired",
        }
    }
}

/// A voucher as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Voucher {
    pub id: Uuid,
    pub code: String,
    pub campaign_id: Uuid,
    pub status: VoucherStatus,
    pub discount: Discount,
    pub min_order_amount: i64,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
}

impl VoucherRow {
    /// `expired` is computed here, at read time, from `expires_at`.
    pub fn view(&self, now: DateTime<Utc>) -> Voucher {
        let status = match self.status.as_str() {
            "redeemed" => VoucherStatus::Redeemed,
            "voided" => VoucherStatus::Voided,
            _ if self.expires_at <= now => VoucherStatus::Expired,
            _ => VoucherStatus::Issued,
        };
        Voucher {
            id: self.id,
            code: self.code.clone(),
            campaign_id: self.campaign_id,
            status,
            discount: self.discount.0.clone(),
            min_order_amount: self.min_order_amount,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            redeemed_at: self.redeemed_at,
            order_id: self.order_id.clone(),
        }
    }
}

// A grant's answer: the voucher it issued. (A plain comment: a doc comment would
// become the schema's description in the published OpenAPI document.)
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClaimResponse {
    pub voucher: Voucher,
}

impl VoucherRow {
    /// This voucher as it was when granted (status `issued`), whatever it is now.
    fn as_issued(&self) -> Voucher {
        VoucherRow {
            status: "issued".into(),
            redeemed_at: None,
            order_id: None,
            redemption_id: None,
            ..self.clone()
        }
        .view(self.issued_at)
    }

    /// The 201 body of the grab that issued this voucher, byte for byte: built here
    /// when the grant is answered, and rebuilt here when its key is replayed from
    /// Postgres, which keeps only the voucher row (migration 0019).
    pub(crate) fn issued_body(&self) -> ApiResult<Vec<u8>> {
        serde_json::to_vec(&ClaimResponse {
            voucher: self.as_issued(),
        })
        .map_err(ApiError::internal)
    }

    /// The `voucher.issued` event's data, `{"voucher":{..},"user_id":".."}`: the 201
    /// body plus the holder, rebuilt from the voucher row when the event is read
    /// (grants write the event without its data, migration 0019).
    pub(crate) fn issued_event(&self) -> ApiResult<serde_json::Value> {
        Ok(serde_json::json!({
            "voucher": serde_json::to_value(self.as_issued()).map_err(ApiError::internal)?,
            "user_id": self.user_id,
        }))
    }
}

/// Voucher rows by id (the vouchers of `voucher.issued` events read from the log).
pub(crate) async fn by_ids(
    conn: &mut sqlx::PgConnection,
    ids: &[Uuid],
) -> Result<Vec<VoucherRow>, sqlx::Error> {
    sqlx::query_as!(
        VoucherRow,
        r#"SELECT id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                  min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id
           FROM vouchers WHERE id = ANY ($1)"#,
        ids,
    )
    .fetch_all(conn)
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VoucherList {
    pub items: Vec<Voucher>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A page of vouchers: the wallet's, and support's lookups by holder or campaign.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct VoucherListParams {
    pub status: Option<VoucherStatus>,
    /// 1 to 100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/me/vouchers", operation_id = "listMyVouchers", tag = "users", params(VoucherListParams),
    responses((status = 200, body = VoucherList), (status = 401, body = crate::error::Problem)),
    security(("user" = [])))]
async fn list(
    State(state): State<AppState>,
    User(user): User,
    Query(params): Query<VoucherListParams>,
) -> ApiResult<Json<VoucherList>> {
    let limit = json::page_limit(params.limit, 50, 100)?;
    let cursor = json::cursor(params.cursor.as_deref())?;
    let user = &user;
    // On the replica while it is fresh, unless this user's own effects are too recent.
    let (rows, next_cursor) = state
        .reads
        .for_user(user, move |pool| async move {
            page_of(&pool, Holding::User(user), params.status, cursor, limit).await
        })
        .await?;
    let now = Utc::now();
    Ok(Json(VoucherList {
        items: rows.iter().map(|r| r.row.view(now)).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/me/vouchers/{code}", operation_id = "getMyVoucher", tag = "users",
    params(("code" = String, Path)),
    responses((status = 200, body = Voucher), (status = 404, body = crate::error::Problem)),
    security(("user" = [])))]
async fn get_one(
    State(state): State<AppState>,
    User(user): User,
    Path(code): Path<String>,
) -> ApiResult<Json<Voucher>> {
    let code = VoucherCode::parse(&code)?;
    let row = state
        .reads
        .for_user(&user, |pool| {
            let (code, user) = (&code, &user);
            async move { fetch_owned(&pool, code, user).await }
        })
        .await?
        .ok_or(ApiError::VoucherNotFound)?;
    Ok(Json(row.view(Utc::now())))
}

/// Whose vouchers a page lists.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holding<'a> {
    /// A user's, of every campaign (the wallet; support's lookup by holder).
    User(&'a UserId),
    /// A campaign's (support's lookup by campaign).
    Campaign(CampaignId),
}

/// A voucher row with its void, which only support shows (the wallet shows the
/// status alone).
pub(crate) struct ListedVoucher {
    pub row: VoucherRow,
    pub voided_at: Option<DateTime<Utc>>,
    pub stock_returned: bool,
}

/// A `ListedVoucher` from a `query!` record that selected the voucher's columns (as
/// `VoucherRow` names them) and `voided_at`, `stock_returned`.
macro_rules! listed_voucher {
    ($r:expr) => {
        $crate::vouchers::ListedVoucher {
            row: $crate::vouchers::VoucherRow {
                id: $r.id,
                code: $r.code,
                campaign_id: $r.campaign_id,
                user_id: $r.user_id,
                status: $r.status,
                discount: $r.discount,
                min_order_amount: $r.min_order_amount,
                issued_at: $r.issued_at,
                expires_at: $r.expires_at,
                redeemed_at: $r.redeemed_at,
                order_id: $r.order_id,
                redemption_id: $r.redemption_id,
            },
            voided_at: $r.voided_at,
            stock_returned: $r.stock_returned,
        }
    };
}
pub(crate) use listed_voucher;

/// One page of vouchers, newest first, after `cursor`, with the cursor of the next
/// page (`None` on the last). Expiry is decided by the clock in the query, the same
/// rule as `view`. One query per holding, so each walks its own index
/// (`(user_id, id)`, `(campaign_id, id)`) in order.
pub(crate) async fn page_of(
    pool: &sqlx::PgPool,
    holding: Holding<'_>,
    status: Option<VoucherStatus>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<ListedVoucher>, Option<String>), sqlx::Error> {
    let status = status.map(VoucherStatus::as_str);
    let mut rows: Vec<ListedVoucher> = match holding {
        Holding::User(user) => sqlx::query!(
            r#"SELECT id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                      min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id,
                      voided_at, stock_returned
               FROM vouchers
               WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2)
                 AND CASE $3::text
                       WHEN 'redeemed' THEN status = 'redeemed'
                       WHEN 'voided' THEN status = 'voided'
                       WHEN 'issued' THEN status = 'issued' AND expires_at > now()
                       WHEN 'expired' THEN status = 'issued' AND expires_at <= now()
                       ELSE true END
               ORDER BY id DESC LIMIT $4"#,
            user.as_str(),
            cursor,
            status,
            limit + 1,
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| listed_voucher!(r))
        .collect(),
        Holding::Campaign(campaign) => sqlx::query!(
            r#"SELECT id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                      min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id,
                      voided_at, stock_returned
               FROM vouchers
               WHERE campaign_id = $1 AND ($2::uuid IS NULL OR id < $2)
                 AND CASE $3::text
                       WHEN 'redeemed' THEN status = 'redeemed'
                       WHEN 'voided' THEN status = 'voided'
                       WHEN 'issued' THEN status = 'issued' AND expires_at > now()
                       WHEN 'expired' THEN status = 'issued' AND expires_at <= now()
                       ELSE true END
               ORDER BY id DESC LIMIT $4"#,
            campaign.0,
            cursor,
            status,
            limit + 1,
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| listed_voucher!(r))
        .collect(),
    };
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.row.id.to_string())
    } else {
        None
    };
    Ok((rows, next_cursor))
}

/// A voucher by code, only if `user` owns it: another user's code reads as unknown.
pub(crate) async fn fetch_owned(
    pool: &sqlx::PgPool,
    code: &VoucherCode,
    user: &UserId,
) -> Result<Option<VoucherRow>, sqlx::Error> {
    sqlx::query_as!(
        VoucherRow,
        r#"SELECT id, code, campaign_id, user_id, status, discount AS "discount: sqlx::types::Json<crate::domain::Discount>",
                  min_order_amount, issued_at, expires_at, redeemed_at, order_id, redemption_id
           FROM vouchers WHERE code = $1 AND user_id = $2"#,
        code.as_str(),
        user.as_str(),
    )
    .fetch_optional(pool)
    .await
}
