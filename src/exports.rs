//! CSV exports of a campaign's vouchers and redemptions, for finance: streamed from
//! Postgres (`COPY … TO STDOUT`) into the response body from one REPEATABLE READ
//! snapshot, on a connection of their own, at most `EXPORTS_MAX` at once.

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderValue, StatusCode, Version, header},
    response::Response,
};
use futures::StreamExt;
use sqlx::{Connection, Executor, PgConnection, postgres::PgConnectOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::Admin,
    domain::CampaignId,
    error::{ApiError, ApiResult},
};

/// The export routes, each registered with its documentation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(vouchers_csv))
        .routes(routes!(redemptions_csv))
}

/// How long an export waits to connect to Postgres before answering 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Rows are gathered into chunks of about this size before they are sent: Postgres
/// sends one message per row, and a chunk per row would cost a chunk header each.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for a slow client: with `CHUNK`, what one export may hold in memory
/// (besides the socket's buffers) is bounded by about 1 MiB, however many rows.
const CHUNKS_QUEUED: usize = 16;
/// The longest an export may run; past it the body is cut off (a failed export).
const EXPORT_MAX_DURATION: Duration = Duration::from_secs(15 * 60);
/// The longest Postgres may send nothing while an export streams.
const EXPORT_IDLE: Duration = Duration::from_secs(60);

/// The exports' own connections and the bound on how many run at once.
#[derive(Clone)]
pub struct Exports {
    /// `EXPORTS_MAX` permits; an export holds one from its start to its last byte.
    running: Arc<Semaphore>,
    /// A connection per export, outside the request pool: an export of a million
    /// rows outlives the pool's statement timeout by far, and must never hold a
    /// connection a grab is waiting for.
    options: PgConnectOptions,
}

impl Exports {
    pub fn new(database_url: &str, max: usize) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(database_url)
            .context("DATABASE_URL: not a valid Postgres URL")?
            .application_name("voucherd-export")
            .options([
                ("statement_timeout", "0"),
                // An export only reads, but waits behind a migration's lock no
                // longer than a request would.
                ("lock_timeout", "3s"),
                ("idle_in_transaction_session_timeout", "60s"),
                ("TimeZone", "UTC"),
            ]);
        Ok(Exports {
            running: Arc::new(Semaphore::new(max)),
            options,
        })
    }

    /// Starts `export` of `campaign`: answers 404 or 503 before any byte is sent,
    /// else a chunked CSV body fed by a task that owns the connection and the permit.
    async fn start(&self, campaign: CampaignId, export: Export) -> ApiResult<Response> {
        let permit = self
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::ExportsBusy)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| ApiError::Unavailable("the database is unavailable; retry shortly"))??;
        let (started_tx, started) = oneshot::channel();
        let (chunks_tx, chunks) = mpsc::channel(CHUNKS_QUEUED);
        tokio::spawn(stream_copy(
            conn, permit, campaign, export, started_tx, chunks_tx,
        ));
        started.await.map_err(|_| {
            ApiError::internal(anyhow::anyhow!("the export task ended before it started"))
        })??;
        let body = futures::stream::unfold(chunks, |mut chunks| async move {
            chunks.recv().await.map(|chunk| (chunk, chunks))
        });
        let filename = format!(
            "attachment; filename=\"campaign-{}-{}.csv\"",
            campaign.0,
            export.name()
        );
        let mut response = Response::new(Body::from_stream(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&filename) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        *response.status_mut() = StatusCode::OK;
        Ok(response)
    }
}

/// Which rows an export holds.
#[derive(Debug, Clone, Copy)]
enum Export {
    Vouchers,
    Redemptions,
}

/// A text cell that came from outside (a user id, an order id) as a spreadsheet may
/// show it: one whose first character after any white space (which importers that
/// trim cells skip) is `=`, `+`, `-` or `@`, or their full-width forms, is prefixed
/// with `'`, so it is shown as text and never run as a formula.
fn text_cell(column: &str) -> String {
    format!(
        "CASE WHEN {column} ~ '^[[:space:]\\u00a0\\u2000-\\u200b\\u3000\\ufeff]*[-=+@\\uff1d\\uff0b\\uff0d\\uff20]' \
         THEN '''' || {column} ELSE {column} END"
    )
}

/// An instant as RFC 3339 in UTC, as the JSON API writes it.
fn instant_cell(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

impl Export {
    fn name(self) -> &'static str {
        match self {
            Export::Vouchers => "vouchers",
            Export::Redemptions => "redemptions",
        }
    }

    /// The `COPY` statement. COPY takes no parameters, so the campaign id is written
    /// into it: a parsed UUID, whose text is only hex digits and hyphens.
    fn copy_sql(self, campaign: CampaignId) -> String {
        let id = campaign.0;
        let select = match self {
            // In id order (the campaign index's order: no sort, whatever the size).
            // `expired` is derived by the snapshot's clock, as the API derives it.
            Export::Vouchers => format!(
                "SELECT v.id, v.code, v.campaign_id, {user} AS user_id,
                        CASE WHEN v.status = 'issued' AND v.expires_at <= now() THEN 'expired'
                             ELSE v.status END AS status,
                        v.discount->>'type' AS discount_type,
                        v.discount->>'amount' AS discount_amount,
                        v.discount->>'basis_points' AS discount_basis_points,
                        v.discount->>'max_amount' AS discount_max_amount,
                        v.discount->>'currency' AS currency,
                        v.min_order_amount,
                        {issued} AS issued_at, {expires} AS expires_at,
                        {redeemed} AS redeemed_at, {order} AS order_id,
                        {voided} AS voided_at, v.stock_returned
                 FROM vouchers v WHERE v.campaign_id = '{id}' ORDER BY v.id",
                user = text_cell("v.user_id"),
                order = text_cell("v.order_id"),
                issued = instant_cell("v.issued_at"),
                expires = instant_cell("v.expires_at"),
                redeemed = instant_cell("v.redeemed_at"),
                voided = instant_cell("v.voided_at"),
            ),
            Export::Redemptions => format!(
                "SELECT r.id, r.voucher_id, v.code, v.campaign_id, {user} AS user_id,
                        {order} AS order_id, r.order_amount, r.currency, r.discount_amount,
                        r.status, {created} AS created_at, {rolled_back} AS rolled_back_at
                 FROM vouchers v JOIN redemptions r ON r.voucher_id = v.id
                 WHERE v.campaign_id = '{id}' ORDER BY v.id, r.id",
                user = text_cell("r.user_id"),
                order = text_cell("r.order_id"),
                created = instant_cell("r.created_at"),
                rolled_back = instant_cell("r.rolled_back_at"),
            ),
        };
        // The leading comment names the export in `pg_stat_activity`, whose copy of a
        // statement is cut at 1 KiB, before the campaign id of the WHERE.
        format!(
            "/* {} export of campaign {id} */ COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER true)",
            self.name()
        )
    }
}

/// Opens the snapshot, checks the campaign, starts the COPY, and reports on `started`
/// whether the export can be answered 200; then forwards the rows in chunks. An error
/// after that is sent as the body's last item, so the chunked body is cut off rather
/// than ended: a client never takes a truncated export for a whole one. A client that
/// goes away drops the receiver; the next send fails and the connection is closed,
/// which ends the COPY in Postgres.
async fn stream_copy(
    mut conn: PgConnection,
    _permit: OwnedSemaphorePermit,
    campaign: CampaignId,
    export: Export,
    started: oneshot::Sender<ApiResult<()>>,
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let opened = async {
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let exists: bool = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $1) AS "e!""#,
            campaign.0
        )
        .fetch_one(&mut conn)
        .await?;
        if !exists {
            return Err(ApiError::CampaignNotFound);
        }
        Ok(())
    }
    .await;
    if let Err(e) = opened {
        let _ = started.send(Err(e));
        let _ = conn.close().await;
        return;
    }
    let mut rows = match conn.copy_out_raw(&export.copy_sql(campaign)).await {
        Ok(rows) => rows,
        Err(e) => {
            let _ = started.send(Err(e.into()));
            return;
        }
    };
    if started.send(Ok(())).is_err() {
        return;
    }
    let mut chunk = Vec::with_capacity(CHUNK);
    // An export holds a snapshot, which holds back vacuum of the hot campaign row: it
    // ends, cut off, after EXPORT_MAX_DURATION or when Postgres sends nothing for
    // EXPORT_IDLE (a partitioned host would otherwise hold the permit for ever).
    let deadline = tokio::time::Instant::now() + EXPORT_MAX_DURATION;
    loop {
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + EXPORT_IDLE),
            rows.next(),
        )
        .await
        .unwrap_or_else(|_| {
            Some(Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the export ran out of time",
            ))))
        });
        match next {
            Some(Ok(row)) => {
                chunk.extend_from_slice(&row);
                if chunk.len() < CHUNK {
                    continue;
                }
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                if chunks.send(Ok(Bytes::from(full))).await.is_err() {
                    tracing::info!(export = export.name(), "the client left mid-export");
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, export = export.name(), "an export failed mid-stream");
                let _ = chunks
                    .send(Err(std::io::Error::other("the export failed")))
                    .await;
                return;
            }
            None => break,
        }
    }
    // the snapshot is released before the last bytes wait on the client
    drop(rows);
    let _ = conn.execute("COMMIT").await;
    let _ = conn.close().await;
    if !chunk.is_empty() {
        let _ = chunks.send(Ok(Bytes::from(chunk))).await;
    }
}

#[utoipa::path(get, path = "/v1/admin/campaigns/{id}/vouchers.csv", operation_id = "exportCampaignVouchersCsv", tag = "admin",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "every voucher of the campaign as CSV (RFC 4180 quoting, a header row), from one snapshot, streamed; a cell from outside that begins with `=`, `+`, `-` or `@` is prefixed with `'`. A body cut off before its end (no last chunk) is a failed export", content_type = "text/csv", body = String),
        (status = 404, description = "campaign_not_found", body = crate::error::Problem),
        (status = 426, description = "upgrade_required: asked over HTTP/1.0, where a cut-off export could not be told from a whole one", body = crate::error::Problem),
        (status = 503, description = "exports_busy (`EXPORTS_MAX` exports are running; retry after `Retry-After`), service_unavailable", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn vouchers_csv(
    State(state): State<AppState>,
    _: Admin,
    version: Version,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    answer(&state, version, &id, Export::Vouchers).await
}

/// Both routes: the campaign id checked, and HTTP/1.1 required, since only a
/// chunked body can be cut off visibly; both before any work.
async fn answer(
    state: &AppState,
    version: Version,
    id: &str,
    export: Export,
) -> ApiResult<Response> {
    let id = CampaignId::parse(id)?;
    if version < Version::HTTP_11 {
        return Err(ApiError::UpgradeRequired);
    }
    state.exports.start(id, export).await
}

#[utoipa::path(get, path = "/v1/admin/campaigns/{id}/redemptions.csv", operation_id = "exportCampaignRedemptionsCsv", tag = "admin",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "every redemption of the campaign's vouchers (rolled back ones too) as CSV, as `vouchers.csv` is written", content_type = "text/csv", body = String),
        (status = 404, description = "campaign_not_found", body = crate::error::Problem),
        (status = 426, description = "upgrade_required (HTTP/1.0)", body = crate::error::Problem),
        (status = 503, description = "exports_busy, service_unavailable", body = crate::error::Problem)),
    security(("admin" = [])))]
async fn redemptions_csv(
    State(state): State<AppState>,
    _: Admin,
    version: Version,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    answer(&state, version, &id, Export::Redemptions).await
}
