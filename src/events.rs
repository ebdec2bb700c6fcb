//! The transactional outbox: every effect writes its event in its own transaction,
//! numbered so readers can page by `seq` without gaps; admins read the log and the
//! dead letters here.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::Admin,
    error::{ApiError, ApiResult},
    idempotency::{Begun, Idempotent, Scope, json_bytes_response},
    json::{EmptyBody, Query},
};

/// The event log and dead-letter routes, each registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(dead_letters))
        .routes(routes!(replay_dead_letter))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    VoucherIssued,
    VoucherRedeemed,
    RedemptionRolledBack,
    CampaignCreated,
    CampaignUpdated,
    CampaignSoldOut,
    VoucherVoided,
}

impl EventType {
    /// Every type, so a filter can be checked against them.
    pub(crate) const ALL: [EventType; 7] = [
        EventType::VoucherIssued,
        EventType::VoucherRedeemed,
        EventType::RedemptionRolledBack,
        EventType::CampaignCreated,
        EventType::CampaignUpdated,
        EventType::CampaignSoldOut,
        EventType::VoucherVoided,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::VoucherIssued => "voucher.issued",
            EventType::VoucherRedeemed => "voucher.redeemed",
            EventType::RedemptionRolledBack => "redemption.rolled_back",
            EventType::CampaignCreated => "campaign.created",
            EventType::CampaignUpdated => "campaign.updated",
            EventType::CampaignSoldOut => "campaign.sold_out",
            EventType::VoucherVoided => "voucher.voided",
        }
    }
}

/// Writes an event in the effect's transaction: both commit or neither does.
pub(crate) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    kind: EventType,
    data: &impl Serialize,
) -> ApiResult<()> {
    let data = serde_json::to_value(data).map_err(ApiError::internal)?;
    sqlx::query!(
        "INSERT INTO events (id, type, data) VALUES ($1, $2, $3)",
        Uuid::now_v7(),
        kind.as_str(),
        data,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An event as consumers see it, in the log and in webhook bodies.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Event {
    pub id: Uuid,
    /// Only grows; page with `after=<last seq seen>`.
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}

/// An event whose webhook delivery gave up, with why.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetter {
    #[serde(flatten)]
    pub event: Event,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// An event as stored. A grant's `voucher.issued` event carries no data: its id is
/// its voucher's, and its data is rebuilt from the voucher row (migration 0019).
pub(crate) struct StoredEvent {
    pub id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub data: Option<Value>,
}

/// A `StoredEvent` from a row of a `query!` that selected `id, seq, type AS kind,
/// occurred_at, data`.
macro_rules! event_from {
    ($r:expr) => {
        $crate::events::StoredEvent {
            id: $r.id,
            seq: $r.seq,
            kind: $r.kind,
            occurred_at: $r.occurred_at,
            data: $r.data,
        }
    };
}
pub(crate) use event_from;

/// The events as consumers see them: the data of grants' events rebuilt from their
/// vouchers, read in one query.
pub(crate) async fn with_data(
    conn: &mut PgConnection,
    stored: Vec<StoredEvent>,
) -> ApiResult<Vec<Event>> {
    let bare: Vec<Uuid> = stored
        .iter()
        .filter(|e| e.data.is_none())
        .map(|e| e.id)
        .collect();
    let vouchers: std::collections::HashMap<Uuid, crate::vouchers::VoucherRow> = if bare.is_empty()
    {
        Default::default()
    } else {
        crate::vouchers::by_ids(conn, &bare)
            .await?
            .into_iter()
            .map(|v| (v.id, v))
            .collect()
    };
    stored
        .into_iter()
        .map(|e| {
            let data = match e.data {
                Some(data) => data,
                // Never without its voucher: both are written and removed together.
                None => match vouchers.get(&e.id) {
                    Some(v) => v.issued_event()?,
                    None => Value::Null,
                },
            };
            Ok(Event {
                id: e.id,
                seq: e.seq,
                kind: e.kind,
                occurred_at: e.occurred_at,
                data,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    /// Return events with `seq` greater than this (default 0).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only events of this type (`voucher.issued`, `voucher.redeemed`,
    /// `redemption.rolled_back`, `voucher.voided`, `campaign.created`,
    /// `campaign.updated`, `campaign.sold_out`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventPage {
    pub items: Vec<Event>,
    /// Pass as `after` for the next page (the last `seq` here, or `after` if empty).
    pub next_after: i64,
}

/// The page asked for: after which `seq`, how many, and of which type.
fn page_params(p: &EventParams) -> ApiResult<(i64, i64, Option<&'static str>)> {
    // A type no event has is refused rather than answered with an empty log, which
    // would read as "nothing happened" for a typo.
    let kind = match p.kind.as_deref() {
        None => None,
        Some(wanted) => Some(
            EventType::ALL
                .iter()
                .map(|t| t.as_str())
                .find(|t| *t == wanted)
                .ok_or_else(|| {
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    ApiError::validation("type", format!("must be one of {}", known.join(", ")))
                })?,
        ),
    };
    let after = p.after.unwrap_or(0);
    let limit = p.limit.unwrap_or(100);
    if after < 0 {
        return Err(ApiError::validation("after", "must be >= 0"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "must be from 1 to 1000"));
    }
    Ok((after, limit, kind))
}

#[utoipa::path(get, path = "/v1/admin/events", operation_id = "listEvents", tag = "admin", params(EventParams),
    responses((status = 200, body = EventPage),
              (status = 422, description = "validation_failed (`type` names no event type, `after` or `limit` out of range)", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn list(
    State(state): State<AppState>,
    _: Admin,
    Query(params): Query<EventParams>,
) -> ApiResult<Json<EventPage>> {
    let (after, limit, kind) = page_params(&params)?;
    // Only events of transactions older than every transaction still running are
    // listed: `seq` carries the inserting transaction's id in its high bits, so
    // anything that commits later sorts after what a reader has already seen.
    let stored: Vec<StoredEvent> = match kind {
        // Every type but voucher.issued is rare among the grants' events and has an
        // index of its own (0018, partial, so grants write no entry in it); the
        // query states the index's condition so the planner may use it.
        Some(kind) if kind != EventType::VoucherIssued.as_str() => {
            sqlx::query_as!(
                StoredEvent,
                "SELECT id, seq, type AS kind, occurred_at, data FROM events
                 WHERE type = $3 AND type <> 'voucher.issued' AND seq > $1
                   AND seq < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)
                 ORDER BY type, seq LIMIT $2",
                after,
                limit,
                kind,
            )
            .fetch_all(&state.db)
            .await?
        }
        // voucher.issued, dense along seq, is found by scanning seq; so is the whole log
        _ => {
            sqlx::query_as!(
                StoredEvent,
                "SELECT id, seq, type AS kind, occurred_at, data FROM events
                 WHERE seq > $1
                   AND seq < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)
                   AND ($3::text IS NULL OR type = $3)
                 ORDER BY seq LIMIT $2",
                after,
                limit,
                kind,
            )
            .fetch_all(&state.db)
            .await?
        }
    };
    let items = with_data(&mut *state.db.acquire().await?, stored).await?;
    let next_after = items.last().map_or(after, |e| e.seq);
    Ok(Json(EventPage { items, next_after }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    pub next_after: i64,
}

#[utoipa::path(get, path = "/v1/admin/webhooks/dead-letters", operation_id = "listDeadLetters", tag = "admin", params(EventParams),
    responses((status = 200, body = DeadLetterPage)), security(("admin" = [])))]
async fn dead_letters(
    State(state): State<AppState>,
    _: Admin,
    Query(params): Query<EventParams>,
) -> ApiResult<Json<DeadLetterPage>> {
    let (after, limit, kind) = page_params(&params)?;
    let rows = sqlx::query!(
        "SELECT id, seq, type AS kind, occurred_at, data, attempts, last_error FROM events
         WHERE delivery = 'dead' AND seq > $1 AND ($3::text IS NULL OR type = $3)
         ORDER BY seq LIMIT $2",
        after,
        limit,
        kind,
    )
    .fetch_all(&state.db)
    .await?;
    let delivery: Vec<(i32, Option<String>)> = rows
        .iter()
        .map(|r| (r.attempts, r.last_error.clone()))
        .collect();
    let stored = rows.into_iter().map(|r| event_from!(r)).collect();
    let items: Vec<DeadLetter> = with_data(&mut *state.db.acquire().await?, stored)
        .await?
        .into_iter()
        .zip(delivery)
        .map(|(event, (attempts, last_error))| DeadLetter {
            attempts,
            last_error,
            event,
        })
        .collect();
    let next_after = items.last().map_or(after, |d| d.event.seq);
    Ok(Json(DeadLetterPage { items, next_after }))
}

#[utoipa::path(post, path = "/v1/admin/webhooks/dead-letters/{id}/replay", operation_id = "replayDeadLetter", tag = "admin",
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 202, description = "queued for delivery again", body = Event),
              (status = 404, description = "no dead letter with this id", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn replay_dead_letter(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    req: Idempotent<EmptyBody>,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::DeadLetterNotFound)?;
    let mut reservation = match req
        .begin(&state, &Scope::admin(), || Ok(()), || Ok(()))
        .await?
    {
        Begun::Replay(resp) => return Ok(resp),
        Begun::Fresh(reservation) => *reservation,
    };
    let stored: StoredEvent = sqlx::query_as!(
        StoredEvent,
        "UPDATE events SET delivery = 'pending', attempts = 0, next_attempt_at = now(),
                           last_error = NULL
         WHERE id = $1 AND delivery = 'dead'
         RETURNING id, seq, type AS kind, occurred_at, data",
        id,
    )
    .fetch_optional(&mut *reservation.tx)
    .await?
    .ok_or(ApiError::DeadLetterNotFound)?;
    let event = with_data(&mut reservation.tx, vec![stored]).await?;
    let body = serde_json::to_vec(&event[0]).map_err(ApiError::internal)?;
    reservation.complete(StatusCode::ACCEPTED, &body).await?;
    reservation.commit().await?;
    Ok(json_bytes_response(StatusCode::ACCEPTED, body))
}
