//! A campaign as stored, and the rules its row alone decides: its status, the refusal
//! a grab gets from a snapshot of it (`CampaignRow::verdict`), the voucher every grant
//! issues and when it expires; and reading a row from Postgres. Holds no routes, so the
//! cache and the grab path use it without the admin and public handlers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, types::Json as DbJson};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    dbclock::DbClock,
    domain::{CampaignId, Discount},
    error::ApiError,
};

/// A campaign row as stored. Serialisable so the cache can share it through Redis.
/// Queries name its columns (with `discount`'s type), so `query_as!` checks each
/// against the table when the crate is built; `row_from!` builds one from a `query!`
/// record that selected them beside other columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignRow {
    pub id: Uuid,
    pub name: String,
    pub total_stock: i64,
    pub remaining: i64,
    pub issued: i64,
    pub per_user_limit: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub paused: bool,
    pub discount: DbJson<Discount>,
    pub min_order_amount: i64,
    /// How long a voucher lives from its grant; `None` when only
    /// `voucher_expires_at` bounds it.
    pub valid_for_seconds: Option<i32>,
    /// The instant every voucher of the campaign expires at the latest.
    #[serde(default)]
    pub voucher_expires_at: Option<DateTime<Utc>>,
    /// Vouchers of this campaign one order may take (1 to 100).
    #[serde(default = "one")]
    pub max_per_order: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `CampaignRow` from a `query!` record holding its columns.
macro_rules! row_from {
    ($r:expr) => {
        $crate::campaigns::row::CampaignRow {
            id: $r.id,
            name: $r.name,
            total_stock: $r.total_stock,
            remaining: $r.remaining,
            issued: $r.issued,
            per_user_limit: $r.per_user_limit,
            starts_at: $r.starts_at,
            ends_at: $r.ends_at,
            paused: $r.paused,
            discount: $r.discount,
            min_order_amount: $r.min_order_amount,
            valid_for_seconds: $r.valid_for_seconds,
            voucher_expires_at: $r.voucher_expires_at,
            max_per_order: $r.max_per_order,
            created_at: $r.created_at,
            updated_at: $r.updated_at,
        }
    };
}
pub(crate) use row_from;

/// `max_per_order` of a snapshot cached before the column existed.
fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    Scheduled,
    Active,
    Paused,
    SoldOut,
    Ended,
}

impl CampaignRow {
    /// Time decides first (a campaign that has ended is `ended` even if paused), then
    /// the pause, then stock.
    pub fn status(&self, now: DateTime<Utc>) -> CampaignStatus {
        if now < self.starts_at {
            CampaignStatus::Scheduled
        } else if now >= self.ends_at {
            CampaignStatus::Ended
        } else if self.paused {
            CampaignStatus::Paused
        } else if self.remaining == 0 {
            CampaignStatus::SoldOut
        } else {
            CampaignStatus::Active
        }
    }

    /// The refusal this state implies for a grab, if any.
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<ApiError> {
        match self.status(now) {
            CampaignStatus::Active => None,
            CampaignStatus::SoldOut => Some(ApiError::SoldOut),
            CampaignStatus::Scheduled => Some(ApiError::CampaignNotActive("not open yet")),
            CampaignStatus::Paused => Some(ApiError::CampaignNotActive("paused")),
            CampaignStatus::Ended => Some(ApiError::CampaignNotActive("over")),
        }
    }

    /// What this snapshot lets a grab be told without Postgres, given bounds on
    /// Postgres' clock now (`None`: not measured). `None` when only Postgres can
    /// decide: the campaign looks open, or the clock is too close to `starts_at` or
    /// `ends_at` to call. Otherwise the refusal, and whether the caller might be a
    /// holder replaying a grant (a campaign not open yet has no holders).
    pub fn verdict(
        &self,
        db_now: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Option<(ApiError, bool)> {
        let (earliest, latest) = db_now?;
        // A grant whose transaction began just before `ends_at` may still commit for
        // a few seconds (the statement bound): only past that is "over" final.
        let surely_over = self.ends_at + chrono::Duration::from_std(crate::STATEMENT_BOUND).ok()?;
        if latest < self.starts_at {
            Some((ApiError::CampaignNotActive("not open yet"), false))
        } else if earliest >= surely_over {
            Some((ApiError::CampaignNotActive("over"), true))
        } else if earliest < self.starts_at || latest >= self.ends_at {
            None
        } else if self.paused {
            Some((ApiError::CampaignNotActive("paused"), true))
        } else if self.remaining <= 0 {
            Some((ApiError::SoldOut, true))
        } else {
            None
        }
    }

    pub(super) fn terms(&self) -> VoucherTerms {
        VoucherTerms {
            discount: self.discount.0.clone(),
            min_order_amount: self.min_order_amount,
            valid_for_seconds: self.valid_for_seconds,
            expires_at: self.voucher_expires_at,
        }
    }

    /// When a voucher granted at `issued_at` expires: the earlier of its relative and
    /// its absolute expiry (validation guarantees at least one).
    pub fn voucher_expiry(&self, issued_at: DateTime<Utc>) -> DateTime<Utc> {
        let relative = self
            .valid_for_seconds
            .map(|s| issued_at + chrono::Duration::seconds(s.into()));
        match (relative, self.voucher_expires_at) {
            (Some(r), Some(a)) => r.min(a),
            (Some(r), None) => r,
            (None, Some(a)) => a,
            // Unreachable through the API (a table constraint too): the shortest term.
            (None, None) => issued_at + chrono::Duration::seconds(60),
        }
    }
}

/// The voucher every grant of a campaign issues.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherTerms {
    pub discount: Discount,
    /// Smallest order, in minor units of the discount's currency, the voucher applies to.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub min_order_amount: i64,
    /// How long an issued voucher stays redeemable (60 to 31536000). At least one of
    /// `valid_for_seconds` and `expires_at` is required; with both, the earlier wins.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 31_536_000)]
    pub valid_for_seconds: Option<i32>,
    /// The instant every voucher expires at the latest; later than the campaign's
    /// `ends_at`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Reads one campaign straight from Postgres (from the pool, or in a transaction).
pub(crate) async fn fetch<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: CampaignId,
) -> Result<Option<CampaignRow>, sqlx::Error> {
    sqlx::query_as!(
        CampaignRow,
        r#"SELECT id, name, total_stock, remaining, issued, per_user_limit, starts_at, ends_at, paused,
           discount AS "discount: sqlx::types::Json<crate::domain::Discount>", min_order_amount,
           valid_for_seconds, voucher_expires_at, max_per_order, created_at, updated_at
           FROM campaigns WHERE id = $1"#,
        id.0,
    )
    .fetch_optional(db)
    .await
}

/// Most campaigns the public list shows: a storefront lists what is live or about to
/// open, never a history.
pub(crate) const LISTED_MAX: i64 = 100;

/// The campaigns not over yet (live, paused, sold out or upcoming), soonest first, as
/// Postgres' clock says, which is measured with them when `clock` is given (only the
/// primary's clock decides).
pub(crate) async fn fetch_listed(
    pool: &PgPool,
    clock: Option<&DbClock>,
) -> Result<Vec<CampaignRow>, sqlx::Error> {
    let sent = std::time::Instant::now();
    let rows = sqlx::query!(
        r#"SELECT id, name, total_stock, remaining, issued, per_user_limit, starts_at, ends_at, paused,
           discount AS "discount: sqlx::types::Json<crate::domain::Discount>", min_order_amount,
           valid_for_seconds, voucher_expires_at, max_per_order, created_at, updated_at,
                  now() AS "db_now!"
           FROM campaigns WHERE ends_at > now()
           ORDER BY starts_at, id LIMIT $1"#,
        LISTED_MAX,
    )
    .fetch_all(pool)
    .await?;
    if let (Some(first), Some(clock)) = (rows.first(), clock) {
        clock.record(sent, first.db_now, std::time::Instant::now());
    }
    Ok(rows.into_iter().map(|r| row_from!(r)).collect())
}

/// Reads one campaign straight from Postgres, and Postgres' clock with it.
pub(crate) async fn fetch_measuring_clock(
    pool: &PgPool,
    id: CampaignId,
    clock: &DbClock,
) -> Result<Option<CampaignRow>, sqlx::Error> {
    let sent = std::time::Instant::now();
    let timed = sqlx::query!(
        r#"SELECT id, name, total_stock, remaining, issued, per_user_limit, starts_at, ends_at, paused,
           discount AS "discount: sqlx::types::Json<crate::domain::Discount>", min_order_amount,
           valid_for_seconds, voucher_expires_at, max_per_order, created_at, updated_at,
                  now() AS "db_now!"
           FROM campaigns WHERE id = $1"#,
        id.0,
    )
    .fetch_optional(pool)
    .await?;
    let received = std::time::Instant::now();
    Ok(timed.map(|t| {
        clock.record(sent, t.db_now, received);
        row_from!(t)
    }))
}
