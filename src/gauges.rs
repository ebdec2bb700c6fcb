//! The gauges an on-call engineer reads during a launch, as `/metrics` renders them:
//! what this instance holds in memory (pool, grant writers and their queues, the
//! Postgres gate, the Redis breaker), read when it is scraped, and what only Postgres
//! knows (outbox backlog, dead letters, stock of live campaigns), read by one periodic
//! task (`run`), never per request and never per scrape.
//!
//! Rendered here rather than through the process-wide recorder: these are one
//! instance's state (tests run many instances in one process), and a campaign that is
//! no longer live simply is not rendered again, so its series end with it.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{AppState, dbwatch::DbWatch};

/// Counting pending or dead events stops here: the count walks a partial index, and
/// past this many the figure says "a lot" well enough without walking them all.
pub(crate) const OUTBOX_COUNT_CAP: i64 = 100_000;

/// What the periodic task last read from Postgres.
struct DbFigures {
    read_at: Instant,
    /// `read_at` as Unix time, for the staleness alert.
    read_unix: f64,
    /// Events dead-lettered (counted up to `OUTBOX_COUNT_CAP`).
    dead_letters: i64,
    /// Only with `WEBHOOK_URL` set: without a dispatcher every event stays pending,
    /// and a backlog nobody drains would only ever grow.
    outbox: Option<Outbox>,
    /// Campaigns opened and not ended (paused and sold-out ones included).
    live_campaigns: i64,
    /// The most recently opened of them, at most `METRICS_CAMPAIGNS_MAX`.
    campaigns: Vec<CampaignStock>,
}

struct Outbox {
    /// Events not delivered yet (counted up to `OUTBOX_COUNT_CAP`).
    pending: i64,
    /// How long the most overdue pending event has been due (0 when none is).
    oldest_due: f64,
    /// How long ago the oldest pending event happened (0 when none is): unlike
    /// `oldest_due`, retries' backoff does not reset it, so it says how far behind
    /// delivery is while a receiver is down.
    oldest_pending: f64,
}

struct CampaignStock {
    id: Uuid,
    name: String,
    total: i64,
    remaining: i64,
    ends_at: DateTime<Utc>,
}

/// The last figures read, shared by the task that reads them and `/metrics`.
#[derive(Clone, Default)]
pub struct DbFiguresCell(Arc<Mutex<Option<Arc<DbFigures>>>>);

impl DbFiguresCell {
    fn get(&self) -> Option<Arc<DbFigures>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, figures: DbFigures) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(figures));
    }
}

/// Reads the Postgres figures every `interval`, skipped while the Postgres gate
/// refuses (the figures then age, and `voucherd_db_figures_age_seconds` says so).
/// Each read takes one pooled connection for three small statements, bounded by the
/// pool's statement timeout and by `STATEMENT_BOUND` as a whole.
pub(crate) async fn run(
    db: PgPool,
    dbwatch: DbWatch,
    cell: DbFiguresCell,
    interval: Duration,
    campaigns_max: usize,
    webhooks: bool,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if dbwatch.is_down() {
            continue;
        }
        let read = tokio::time::timeout(crate::STATEMENT_BOUND, async {
            let mut conn = db.acquire().await?;
            read(&mut conn, campaigns_max, webhooks).await
        })
        .await;
        match read {
            Ok(Ok(figures)) => cell.set(figures),
            Ok(Err(e)) => {
                metrics::counter!("voucherd_db_figures_errors_total").increment(1);
                tracing::warn!(error = %e, "could not read the figures for /metrics");
            }
            Err(_) => {
                metrics::counter!("voucherd_db_figures_errors_total").increment(1);
                tracing::warn!("reading the figures for /metrics timed out");
            }
        }
    }
}

async fn read(
    conn: &mut PgConnection,
    campaigns_max: usize,
    webhooks: bool,
) -> Result<DbFigures, sqlx::Error> {
    let dead_letters = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM
             (SELECT 1 FROM events WHERE delivery = 'dead' LIMIT $1) d"#,
        OUTBOX_COUNT_CAP,
    )
    .fetch_one(&mut *conn)
    .await?;
    let outbox = if webhooks {
        // In due order along the partial index, so the first row is the most overdue.
        let r = sqlx::query!(
            r#"SELECT count(*) AS "pending!",
                      COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at))::float8, 0)
                        AS "oldest_due!",
                      COALESCE(EXTRACT(EPOCH FROM now() - min(occurred_at))::float8, 0)
                        AS "oldest_pending!"
               FROM (SELECT next_attempt_at, occurred_at FROM events WHERE delivery = 'pending'
                     ORDER BY next_attempt_at LIMIT $1) p"#,
            OUTBOX_COUNT_CAP,
        )
        .fetch_one(&mut *conn)
        .await?;
        Some(Outbox {
            pending: r.pending,
            oldest_due: r.oldest_due.max(0.0),
            oldest_pending: r.oldest_pending.max(0.0),
        })
    } else {
        None
    };
    // At least one row, so the count of live campaigns comes back even when no
    // campaign gets series of its own.
    let rows = sqlx::query!(
        r#"SELECT id, name, total_stock, remaining, ends_at, count(*) OVER () AS "live!"
           FROM campaigns WHERE starts_at <= now() AND ends_at > now()
           ORDER BY starts_at DESC, id LIMIT $1"#,
        i64::try_from(campaigns_max.max(1)).unwrap_or(i64::MAX),
    )
    .fetch_all(&mut *conn)
    .await?;
    let live_campaigns = rows.first().map_or(0, |r| r.live);
    let campaigns = rows
        .into_iter()
        .take(campaigns_max)
        .map(|r| CampaignStock {
            id: r.id,
            name: r.name,
            total: r.total_stock,
            remaining: r.remaining,
            ends_at: r.ends_at,
        })
        .collect();
    Ok(DbFigures {
        read_at: Instant::now(),
        read_unix: unix_now(),
        dead_letters,
        outbox,
        live_campaigns,
        campaigns,
    })
}

/// Describes every series the process-wide recorder holds (`/metrics` then carries
/// a HELP line for each) and registers the counters whose series would otherwise
/// appear only at their first event, at zero: a dashboard's `rate()` shows 0 rather
/// than "no data" until the first shed grab, Redis error or dead letter.
pub(crate) fn describe_series() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "voucherd_http_requests_total",
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        "voucherd_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route template, method and status."
    );
    describe_gauge!("voucherd_http_connections", "HTTP connections open now.");
    describe_counter!(
        "voucherd_http_heads_refused_total",
        "Request heads refused before parsing (400, 431), by code."
    );
    describe_counter!(
        "voucherd_http_write_stalls_total",
        "Connections dropped because the client read nothing of its answers."
    );
    describe_counter!(
        "voucherd_grabs_total",
        "Grabs answered, by outcome: granted, replayed, or the refusal's code."
    );
    describe_counter!(
        "voucherd_grabs_shed_total",
        "Grabs refused 503 overloaded by admission or dropped unwritten, by reason."
    );
    describe_histogram!(
        "voucherd_grant_batch_size",
        "Grabs per grant batch sent to Postgres."
    );
    describe_counter!(
        "voucherd_redis_errors_total",
        "Redis calls that failed or timed out, by operation."
    );
    describe_counter!(
        "voucherd_rate_limited_total",
        "Requests refused 429 by the per-user or per-IP rate limit."
    );
    describe_counter!(
        "voucherd_webhook_deliveries_total",
        "Webhook delivery attempts recorded, by result."
    );
    describe_counter!(
        "voucherd_db_figures_errors_total",
        "Failed reads of the figures /metrics needs from Postgres."
    );
    for outcome in [
        "granted",
        "replayed",
        "sold_out",
        "limit_reached",
        "campaign_not_active",
        "overloaded",
        "service_unavailable",
        "idempotency_key_in_use",
        "rate_limited",
    ] {
        metrics::counter!("voucherd_grabs_total", "outcome" => outcome).increment(0);
    }
    for reason in ["commit_stalled", "queue_full", "caller_gone", "deadline"] {
        metrics::counter!("voucherd_grabs_shed_total", "reason" => reason).increment(0);
    }
    for op in ["get", "set", "del"] {
        metrics::counter!("voucherd_redis_errors_total", "op" => op).increment(0);
    }
    for result in ["delivered", "retry", "dead", "stale"] {
        metrics::counter!("voucherd_webhook_deliveries_total", "result" => result).increment(0);
    }
    metrics::counter!("voucherd_rate_limited_total").increment(0);
    metrics::counter!("voucherd_db_figures_errors_total").increment(0);
}

/// A label value as the text format wants it: backslash, double quote and line feed
/// escaped (campaign names are an admin's free text).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One gauge family: its help, its type and its samples (`labels` as already
/// rendered, `""` for none).
fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Gauges of one unlabelled sample each: name, help, value.
fn scalars(out: &mut String, gauges: &[(&str, &str, f64)]) {
    for (name, help, value) in gauges {
        gauge(out, name, help, &[(String::new(), *value)]);
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// This instance's gauges in the Prometheus text format, appended to what the
/// recorder renders.
pub(crate) fn render(state: &AppState) -> String {
    let mut out = String::new();
    let pool_size = state.db.size() as f64;
    let idle = state.db.num_idle() as f64;
    gauge(
        &mut out,
        "voucherd_db_pool_connections",
        "Connections of the request pool, by state (in_use includes the grant writers').",
        &[
            ("{state=\"in_use\"}".into(), (pool_size - idle).max(0.0)),
            ("{state=\"idle\"}".into(), idle),
        ],
    );
    let w = state.grabber.writer_gauges();
    scalars(
        &mut out,
        &[
            (
                "voucherd_db_pool_max_connections",
                "DATABASE_MAX_CONNECTIONS: the most connections the pool opens.",
                f64::from(state.settings.db_max_connections),
            ),
            (
                "voucherd_grab_writer_connections",
                "Pooled connections the grant writers hold now.",
                w.connections as f64,
            ),
            (
                "voucherd_grab_writer_connections_max",
                "GRAB_WRITER_CONNECTIONS: the most connections the grant writers hold.",
                w.connections_max as f64,
            ),
            (
                "voucherd_grab_queue_depth",
                "Grabs waiting in the admission queues of every campaign.",
                w.queued as f64,
            ),
            (
                "voucherd_grab_queue_campaigns",
                "Campaigns with grabs waiting in their admission queue.",
                w.campaigns_waiting as f64,
            ),
            (
                "voucherd_grab_queue_oldest_wait_seconds",
                "How long the oldest waiting grab has waited (past GRAB_QUEUE_MAX_WAIT new grabs are refused overloaded).",
                w.oldest_wait.as_secs_f64(),
            ),
            (
                "voucherd_grab_batches_committing",
                "Grant batches sent to Postgres and not answered yet.",
                w.committing as f64,
            ),
            (
                "voucherd_grab_commit_longest_seconds",
                "How long the oldest batch still committing has been (past GRAB_COMMIT_STALL grabs are refused overloaded).",
                w.longest_commit.as_secs_f64(),
            ),
            (
                "voucherd_postgres_up",
                "1 while Postgres answers the watchdog; 0 while its gate refuses database work with 503.",
                flag(!state.dbwatch.is_down()),
            ),
        ],
    );
    if let Some(redis) = state.cache.redis() {
        scalars(
            &mut out,
            &[(
                "voucherd_redis_up",
                "1 while calls go to Redis; 0 while the breaker a failed call opened skips it (only with REDIS_URL).",
                flag(redis.breaker_closed()),
            )],
        );
    }
    let figures = state.db_figures.get();
    // Always rendered (0 until a first read), so an instance that never managed to
    // read its figures is seen, not silent.
    scalars(
        &mut out,
        &[(
            "voucherd_db_figures_last_read_timestamp_seconds",
            "Unix time of the last successful read of the Postgres figures (0 before the first).",
            figures.as_ref().map_or(0.0, |f| f.read_unix),
        )],
    );
    if let Some(figures) = figures {
        render_db_figures(&mut out, &figures);
    }
    out
}

/// One figure of a campaign's stock.
type StockFigure = fn(&CampaignStock) -> i64;

fn render_db_figures(out: &mut String, figures: &DbFigures) {
    scalars(
        out,
        &[
            (
                "voucherd_db_figures_age_seconds",
                "Seconds since the figures read from Postgres (outbox, dead letters, campaign stock) were read.",
                figures.read_at.elapsed().as_secs_f64(),
            ),
            (
                "voucherd_outbox_dead_letters",
                "Events whose webhook delivery gave up (counted up to 100000).",
                figures.dead_letters as f64,
            ),
            (
                "voucherd_campaigns_live",
                "Campaigns opened and not ended, paused and sold-out ones included.",
                figures.live_campaigns as f64,
            ),
        ],
    );
    if let Some(outbox) = &figures.outbox {
        scalars(
            out,
            &[
                (
                    "voucherd_outbox_pending_events",
                    "Events not delivered to the webhook yet (counted up to 100000; only with WEBHOOK_URL).",
                    outbox.pending as f64,
                ),
                (
                    "voucherd_outbox_oldest_due_seconds",
                    "How long the most overdue pending event has been due (only with WEBHOOK_URL).",
                    outbox.oldest_due,
                ),
                (
                    "voucherd_outbox_oldest_pending_seconds",
                    "How long ago the oldest event not delivered yet happened (among the first 100000 due; only with WEBHOOK_URL).",
                    outbox.oldest_pending,
                ),
            ],
        );
    }
    // A campaign that ended since the read is left out at once, read again or not.
    let now = Utc::now();
    let live: Vec<&CampaignStock> = figures
        .campaigns
        .iter()
        .filter(|c| c.ends_at > now)
        .collect();
    let stock: [(&str, &str, StockFigure); 2] = [
        (
            "voucherd_campaign_stock_remaining",
            "Vouchers left of a live campaign (the METRICS_CAMPAIGNS_MAX most recently opened).",
            |c| c.remaining,
        ),
        (
            "voucherd_campaign_stock_total",
            "A live campaign's total stock (the METRICS_CAMPAIGNS_MAX most recently opened).",
            |c| c.total,
        ),
    ];
    for (name, help, value) in stock {
        let samples: Vec<(String, f64)> = live
            .iter()
            .map(|c| {
                let labels = format!("{{campaign=\"{}\",name=\"{}\"}}", c.id, escape(&c.name));
                (labels, value(c) as f64)
            })
            .collect();
        gauge(out, name, help, &samples);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(name: &str, ends_at: DateTime<Utc>) -> CampaignStock {
        CampaignStock {
            id: Uuid::now_v7(),
            name: name.into(),
            total: 10,
            remaining: 4,
            ends_at,
        }
    }

    /// A campaign whose `ends_at` passed since the last read (Postgres down, the
    /// read failing) is no longer rendered: its series end with it, read or not.
    #[test]
    fn a_campaign_ended_since_the_read_is_not_rendered() {
        let now = Utc::now();
        let figures = DbFigures {
            read_at: Instant::now(),
            read_unix: unix_now(),
            dead_letters: 2,
            outbox: None,
            live_campaigns: 2,
            campaigns: vec![
                stock("still live", now + chrono::Duration::hours(1)),
                stock("just ended", now - chrono::Duration::seconds(1)),
            ],
        };
        let mut out = String::new();
        render_db_figures(&mut out, &figures);
        assert!(out.contains("still live"), "{out}");
        assert!(!out.contains("just ended"), "{out}");
        assert!(out.contains("voucherd_outbox_dead_letters 2\n"), "{out}");
        assert!(!out.contains("voucherd_outbox_pending_events"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("line\nbreak"), "line\\nbreak");
        assert_eq!(escape("11.11 – 50k off"), "11.11 – 50k off");
    }
}
