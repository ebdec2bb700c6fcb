//! Launch night: many campaigns open at the same instant and the herd is already at
//! the door. Every campaign is created with the same `starts_at` a few seconds ahead;
//! grabs arrive from `--herd-lead` before it (answered 409 `campaign_not_active`,
//! final for their key: a client that tries again uses a new key, so the herd is
//! simply many keys), ramp to the peak rate, and keep arriving for `--tail` after
//! every campaign reports `remaining` 0. Retries are flash's same-key retries (503,
//! 429, no answer, 409 `idempotency_key_in_use`), here honouring `Retry-After` up
//! to a small cap. Then flash's audit runs per campaign.
//!
//! Besides grants/s, 503 share and latency, the run measures what refusals cost
//! Postgres: the change of `xact_commit + xact_rollback` of the service's database
//! per refused grab, before opening and after the sell-out, and the peak number of
//! voucherd backends.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use serde::Serialize;
use sqlx::{Connection, PgConnection, Row, postgres::PgConnectOptions};
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

use crate::{
    api::{Api, Reply, Target},
    flash::{self, Check, KeyRun, Outcome, Retrying},
    report::{self, Latency, Sample, Second},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The service's Postgres: read (never written) for the transaction counter, the
    /// backends and the audit.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Campaigns opening at the same instant.
    #[arg(long, default_value_t = 50)]
    pub campaigns: usize,
    #[arg(long, default_value_t = 4_000)]
    pub stock_per_campaign: i64,
    #[arg(long, default_value_t = 1)]
    pub per_user_limit: i64,
    /// How far ahead of the run's start the campaigns open (their common `starts_at`).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub open_in: Duration,
    /// The herd's first grab arrives this long before `starts_at`.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub herd_lead: Duration,
    /// Peak arrivals per second, over all campaigns. Set it to three times the grant
    /// rate `loadtest/bench` measures on the machine, so the herd outruns the service.
    #[arg(long, default_value_t = 30_000.0)]
    pub peak_rate: f64,
    /// Time for the arrivals to ramp from zero to the peak rate (from the first).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// Most grabs to send (each with its own key); the herd stops earlier, `--tail`
    /// after the sell-out.
    #[arg(long, default_value_t = 1_000_000)]
    pub grabs: u64,
    /// Distinct users; defaults to one per grab.
    #[arg(long)]
    pub users: Option<u64>,
    /// Most grabs in flight at once (the client's connection budget).
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// How long a client waits before it gives up and retries with the same key.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Same-key retries after a 503, 429, no answer or 409 `idempotency_key_in_use`.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// A retry waits for `Retry-After`, but never longer than this.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_after_cap: Duration,
    /// The herd keeps coming this long after every campaign reports `remaining` 0:
    /// the after-sell-out window of the transaction count.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub tail: Duration,
    /// Wait after a window's end before reading the counter's end value (backends
    /// flush their statistics lazily).
    #[arg(long, default_value = "1.5s", value_parser = humantime::parse_duration)]
    pub stats_wait: Duration,
    /// Read the after-sell-out end value once more this long after the window's
    /// end, when even idle backends have flushed (PG15 flushes an idle backend's
    /// statistics after up to 10 s); 0 skips it.
    #[arg(long, default_value = "11s", value_parser = humantime::parse_duration)]
    pub stats_idle_wait: Duration,
    /// Report files are written as <out>.md, <out>.json and <out>.svg.
    #[arg(long, default_value = "loadtest/results/launch")]
    pub out: PathBuf,
}

/// Application name of the loadgen's own Postgres sessions (never `voucherd`).
const APP: &str = "loadgen-launch";
/// The after-sell-out window starts this long after the sell-out is seen, so that
/// the last grants' statistics (flushed at most ~1 s late by a busy backend) fall
/// before it.
const SETTLE: Duration = Duration::from_secs(1);
/// How late a busy backend flushes its statistics at most (PGSTAT_MIN_INTERVAL).
const FLUSH_LAG_US: i64 = 1_000_000;
const BACKENDS_SQL: &str =
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'voucherd' AND datname = $1";
const XACTS_SQL: &str = "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
                         WHERE datname = current_database()";

/// One HTTP attempt of the herd, in microseconds since the herd's first arrival.
#[derive(Debug, Clone)]
struct Attempt {
    sent_us: i64,
    done_us: i64,
    /// 0: no answer (timeout or connection).
    status: u16,
    code: String,
}

impl Attempt {
    /// Answered, and granted nothing: a refusal (409, 503 `overloaded`, 429, …).
    fn refused(&self) -> bool {
        self.status >= 400
    }

    fn name(&self) -> String {
        match (self.status, self.code.as_str()) {
            (0, _) => "no answer (timeout or connection)".into(),
            (s, "") => s.to_string(),
            (s, c) => format!("{s} {c}"),
        }
    }
}

fn us_since(base: Instant, t: Instant) -> i64 {
    if t >= base {
        t.duration_since(base).as_micros() as i64
    } else {
        -(base.duration_since(t).as_micros() as i64)
    }
}

/// What the herd shares.
struct Herd {
    api: Api,
    campaigns: Vec<String>,
    run: String,
    users: u64,
    timeout: Duration,
    retrying: Retrying,
    base: Instant,
}

/// Grab `i` goes to campaign `i mod n`: the herd is spread evenly.
fn campaign_of(i: u64, campaigns: usize) -> usize {
    (i % campaigns.max(1) as u64) as usize
}

/// Sends key `i` until it has a final answer (a grant, a refusal — including
/// `campaign_not_active` — or a replay) or runs out of retries.
async fn grab_key(h: &Herd, i: u64) -> (KeyRun, Vec<Attempt>) {
    let campaign = &h.campaigns[campaign_of(i, h.campaigns.len())];
    let token = h.api.token(&format!("{}-u{}", h.run, i % h.users));
    let key = format!("{}-k{i}", h.run);
    let (mut samples, mut attempts, mut seen) = (Vec::with_capacity(1), 0, Vec::with_capacity(1));
    let reply = flash::retry_until_answered(
        h.retrying,
        Instant::now(),
        &mut samples,
        &mut attempts,
        |n| {
            h.api
                .grab_on(i as usize + n, campaign, &token, &key, h.timeout)
        },
        |reply, sent, done| {
            let (status, code) = match reply {
                Reply::Answer { status, code, .. } => (*status, code.clone()),
                Reply::NoAnswer => (0, String::new()),
            };
            seen.push(Attempt {
                sent_us: us_since(h.base, sent),
                done_us: us_since(h.base, done),
                status,
                code,
            });
        },
    )
    .await;
    let outcome = match reply {
        Some(Reply::Answer {
            status: 201, body, ..
        }) => flash::voucher_of(&body)
            .map_or(Outcome::Refused("unreadable 201 body".into()), |voucher| {
                Outcome::Granted { voucher }
            }),
        Some(Reply::Answer { status, code, .. }) => Outcome::Refused(flash::refusal(status, code)),
        _ => Outcome::Unanswered,
    };
    let run = KeyRun {
        outcome,
        samples,
        attempts,
        replay_checked: false,
        replay_mismatch: false,
        redemption: None,
        redeemed_code: None,
        granted_at_ms: None,
    };
    (run, seen)
}

/// One read of the service database's transaction counter.
#[derive(Debug, Clone, Copy)]
struct Reading {
    value: i64,
    /// The loadgen's own transactions on the service's database before this read
    /// (every read is one).
    own_before: u64,
    /// When it was read, in µs since the herd's first arrival.
    at_us: i64,
}

/// The service's transactions between two readings: the counter's change less the
/// loadgen's own in between (the first reading itself and any after it; the second
/// reading's own transaction is not in its own value).
fn service_xacts(a: &Reading, b: &Reading) -> i64 {
    (b.value - a.value) - (b.own_before - a.own_before) as i64
}

/// Reads `xact_commit + xact_rollback` over a session of its own, with the simple
/// query protocol so that each read is exactly one transaction.
struct Counter {
    conn: tokio::sync::Mutex<PgConnection>,
    own: Arc<AtomicU64>,
    base: Instant,
}

impl Counter {
    async fn read(&self) -> anyhow::Result<Reading> {
        let mut conn = self.conn.lock().await;
        let own_before = self.own.load(Ordering::SeqCst);
        let at = Instant::now();
        // A bare string is sent as a simple query: one transaction, nothing prepared.
        let row = sqlx::Executor::fetch_one(&mut *conn, XACTS_SQL).await;
        self.own.fetch_add(1, Ordering::SeqCst);
        let value: i64 = row?.try_get(0)?;
        Ok(Reading {
            value,
            own_before,
            at_us: us_since(self.base, at),
        })
    }
}

/// Polls the number of voucherd backends every 100 ms, as (µs since base, count).
async fn poll_backends(
    mut conn: PgConnection,
    datname: String,
    base: Instant,
    own: Option<Arc<AtomicU64>>,
    seen: Arc<Mutex<Vec<(i64, i64)>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let n: Result<(i64,), _> = sqlx::query_as(BACKENDS_SQL)
            .bind(&datname)
            .fetch_one(&mut conn)
            .await;
        if let Some(own) = &own {
            own.fetch_add(1, Ordering::SeqCst);
        }
        if let Ok((n,)) = n {
            let at = us_since(base, Instant::now());
            seen.lock().unwrap_or_else(|p| p.into_inner()).push((at, n));
        }
    }
}

/// From `open_at` on, asks every campaign's public view until all show `remaining`
/// 0; then says when on `sold`, waits `SETTLE` and reads the counter: the start of
/// the after-sell-out window.
async fn watch_sold_out(
    api: Api,
    campaigns: Vec<String>,
    open_at: Instant,
    sold: watch::Sender<Option<Instant>>,
    counter: Arc<Counter>,
) -> anyhow::Result<Reading> {
    tokio::time::sleep_until(open_at.into()).await;
    let mut left = campaigns;
    while !left.is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let views = futures::future::join_all(left.iter().map(|c| {
            let (api, path) = (&api, format!("/v1/campaigns/{c}"));
            async move { api.public_get(&path, Duration::from_secs(2)).await }
        }))
        .await;
        left = left
            .into_iter()
            .zip(views)
            .filter(|(_, v)| {
                !matches!(v, Ok(v) if v["remaining"].as_i64() == Some(0) || v["status"] == "sold_out")
            })
            .map(|(c, _)| c)
            .collect();
    }
    let at = Instant::now();
    let _ = sold.send(Some(at));
    tokio::time::sleep_until((at + SETTLE).into()).await;
    counter.read().await
}

/// Refusals answered in `[from, to)` (µs since base), and what they were.
fn refusals_in(attempts: &[Attempt], from: i64, to: i64) -> (u64, BTreeMap<String, u64>) {
    let mut by = BTreeMap::new();
    let mut n = 0;
    for a in attempts
        .iter()
        .filter(|a| a.refused() && a.done_us >= from && a.done_us < to)
    {
        n += 1;
        *by.entry(a.name()).or_default() += 1;
    }
    (n, by)
}

fn ratio(x: i64, n: u64) -> Option<f64> {
    (n > 0).then(|| (x as f64 / n as f64 * 10_000.0).round() / 10_000.0)
}

/// One window of the transaction count.
#[derive(Debug, Serialize)]
struct TxWindow {
    /// Seconds from `starts_at` (negative: before opening).
    from_s: f64,
    to_s: f64,
    /// How long after the window's end its end value was read.
    end_read_after_s: f64,
    counter_change: i64,
    /// The loadgen's own transactions in it (its reads of the counter), subtracted.
    own_transactions: u64,
    service_transactions: i64,
    /// The service's transactions per second of the window: flat if they come from
    /// its own periodic work rather than from the refusals.
    service_per_s: Option<f64>,
    refusals: u64,
    refusals_by_answer: BTreeMap<String, u64>,
    grants: u64,
    no_answers: u64,
    per_refusal: Option<f64>,
    /// The figure if up to the last (before opening) or first (after sell-out)
    /// second's transactions sit on the wrong side of the window's edge unflushed.
    per_refusal_range: (Option<f64>, Option<f64>),
    /// The same end value read again `stats_idle_wait` after the end.
    late_read: Option<LateRead>,
}

#[derive(Debug, Serialize)]
struct LateRead {
    end_read_after_s: f64,
    service_transactions: i64,
    per_refusal: Option<f64>,
}

/// Which edge of a window may hold up to a second of unflushed statistics.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Lagging {
    /// The end is read on time (the grants follow): the last second may be missing.
    End,
    /// The start was read shortly after busy work: up to a second before it may
    /// still be counted.
    Start,
}

/// The figure and its range: `service` transactions over the refusals of
/// `[from, to)`, with the lagging edge moved by the flush lag.
fn per_refusal(
    attempts: &[Attempt],
    service: i64,
    from: i64,
    to: i64,
    lagging: Lagging,
) -> (Option<f64>, (Option<f64>, Option<f64>)) {
    let (n, _) = refusals_in(attempts, from, to);
    let figure = ratio(service, n);
    let range = match lagging {
        // Fewer transactions than the window's refusals caused may have been counted:
        // the figure is at least this, at most as if the last second sent nothing.
        Lagging::End => (
            figure,
            ratio(service, refusals_in(attempts, from, to - FLUSH_LAG_US).0),
        ),
        // Up to a second before the start may be counted as well.
        Lagging::Start => (
            ratio(service, refusals_in(attempts, from - FLUSH_LAG_US, to).0),
            figure,
        ),
    };
    (figure, range)
}

#[allow(clippy::too_many_arguments)]
fn window(
    attempts: &[Attempt],
    open_us: i64,
    start: &Reading,
    end: &Reading,
    to_us: i64,
    lagging: Lagging,
    late: Option<&Reading>,
) -> TxWindow {
    let from_us = start.at_us;
    let service = service_xacts(start, end);
    let (refusals, refusals_by_answer) = refusals_in(attempts, from_us, to_us);
    let in_window = |a: &&Attempt| a.done_us >= from_us && a.done_us < to_us;
    let grants = attempts
        .iter()
        .filter(in_window)
        .filter(|a| matches!(a.status, 200 | 201))
        .count() as u64;
    let no_answers = attempts
        .iter()
        .filter(in_window)
        .filter(|a| a.status == 0)
        .count() as u64;
    let (figure, range) = per_refusal(attempts, service, from_us, to_us, lagging);
    let s = |us: i64| ((us - open_us) as f64 / 1e4).round() / 100.0;
    let after = |r: &Reading| ((r.at_us - to_us) as f64 / 1e4).round() / 100.0;
    TxWindow {
        from_s: s(from_us),
        to_s: s(to_us),
        end_read_after_s: after(end),
        counter_change: end.value - start.value,
        own_transactions: end.own_before - start.own_before,
        service_transactions: service,
        service_per_s: (to_us > from_us)
            .then(|| (service as f64 / ((to_us - from_us) as f64 / 1e6) * 10.0).round() / 10.0),
        refusals,
        refusals_by_answer,
        grants,
        no_answers,
        per_refusal: figure,
        per_refusal_range: range,
        late_read: late.map(|r| {
            let service = service_xacts(start, r);
            LateRead {
                end_read_after_s: after(r),
                service_transactions: service,
                per_refusal: ratio(service, refusals),
            }
        }),
    }
}

/// Peak voucherd backends over the run and per phase.
#[derive(Debug, Serialize, Default)]
struct Backends {
    peak: i64,
    before_opening: i64,
    selling: i64,
    after_sold_out: i64,
    polls: usize,
    /// The database the poller's own session is on.
    poller_database: String,
}

fn backends(seen: &[(i64, i64)], open_us: i64, sold_us: Option<i64>) -> Backends {
    let peak = |f: &dyn Fn(i64) -> bool| {
        seen.iter()
            .filter(|(t, _)| f(*t))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    };
    let sold = sold_us.unwrap_or(i64::MAX);
    Backends {
        peak: peak(&|_| true),
        before_opening: peak(&|t| t < open_us),
        selling: peak(&|t| t >= open_us && t < sold),
        after_sold_out: peak(&|t| t >= sold),
        polls: seen.len(),
        poller_database: String::new(),
    }
}

#[derive(Serialize)]
struct CampaignResult {
    campaign: String,
    granted: u64,
    issued: i64,
    total_stock: i64,
    audit_ok: bool,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct LaunchReport {
    machine: String,
    command: String,
    campaigns: usize,
    stock_per_campaign: i64,
    per_user_limit: i64,
    starts_at: String,
    open_in_s: f64,
    herd_lead_s: f64,
    peak_rate: f64,
    ramp_s: f64,
    grabs_planned: u64,
    grabs_sent: u64,
    users: u64,
    timeout_ms: u64,
    retries: u32,
    retry_after_cap_s: f64,
    tail_s: f64,
    stats_wait_s: f64,
    /// Seconds between the last campaign created and the herd's first arrival
    /// (creation's own statistics may be flushed into the first window if short).
    quiet_before_herd_s: f64,
    /// How far behind schedule the client sent arrivals (its concurrency cap).
    arrivals_late_max_ms: f64,
    arrivals_late_over_50ms: u64,
    /// Seconds from `starts_at` until every campaign's public view showed 0.
    sold_out_after_s: Option<f64>,
    /// Seconds from `starts_at` to the last 201.
    last_grant_after_s: Option<f64>,
    grants: u64,
    grants_per_s: Option<f64>,
    issued: i64,
    total_stock: i64,
    attempts: u64,
    answers: u64,
    answers_503: u64,
    share_503: f64,
    answers_by_status: BTreeMap<String, u64>,
    /// Answered attempts, from when each was sent.
    latency_answered: Latency,
    latency_granted: Latency,
    unanswered_before_reconcile: u64,
    tx_before_opening: TxWindow,
    tx_after_sold_out: Option<TxWindow>,
    /// voucherd's transactions per second after the herd, while idle (between the
    /// two end reads of the last window; an upper bound, as late flushes land there).
    idle_service_tx_per_s: Option<f64>,
    backends: Backends,
    audit_ok: bool,
    checks: Vec<Check>,
    per_campaign: Vec<CampaignResult>,
    timeline: Vec<Second>,
}

fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)?.application_name(APP))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.campaigns > 0, "--campaigns must be at least 1");
    anyhow::ensure!(
        args.herd_lead < args.open_in,
        "--herd-lead must be shorter than --open-in"
    );
    let api = Api::new(&args.target, args.concurrency)?;
    let options = connect_options(&args.database_url)?;
    let datname = options
        .get_database()
        .map(str::to_string)
        .unwrap_or_else(|| "postgres".into());
    let own = Arc::new(AtomicU64::new(0));

    // The common opening, on the wall clock (the service judges it by Postgres'
    // clock, on the same machine) and on ours.
    let (now_i, now_w) = (Instant::now(), Utc::now());
    let starts_at_w = now_w + chrono::Duration::from_std(args.open_in)?;
    let starts_at = starts_at_w.to_rfc3339_opts(SecondsFormat::Millis, true);
    let starts_at_w = chrono::DateTime::parse_from_rfc3339(&starts_at)?;
    let open_at = now_i + (starts_at_w.with_timezone(&Utc) - now_w).to_std()?;
    let herd_start = open_at - args.herd_lead;
    let mut campaigns = Vec::with_capacity(args.campaigns);
    for _ in 0..args.campaigns {
        campaigns.push(
            api.create_campaign_at(
                args.stock_per_campaign,
                args.per_user_limit,
                Some(&starts_at),
            )
            .await?,
        );
    }
    let created = Instant::now();
    if created >= herd_start {
        // Slowness is reported, never fatal: the herd starts late and catches up.
        eprintln!(
            "launch: creating {} campaigns took {:.1} s, past the herd's first arrival \
             (raise --open-in); the before-opening window is short",
            args.campaigns,
            created.duration_since(now_i).as_secs_f64()
        );
    }
    let base = herd_start;
    let counter = Arc::new(Counter {
        conn: tokio::sync::Mutex::new(PgConnection::connect_with(&options).await?),
        own: own.clone(),
        base,
    });
    // The poller runs on another database where it can, so its queries are not
    // transactions of the service's database; else they are counted as our own.
    let (poller, poller_db, poller_own) =
        match PgConnection::connect_with(&options.clone().database("postgres")).await {
            Ok(c) if datname != "postgres" => (c, "postgres".to_string(), None),
            _ => (
                PgConnection::connect_with(&options).await?,
                datname.clone(),
                Some(own.clone()),
            ),
        };
    let seen_backends = Arc::new(Mutex::new(Vec::new()));
    let poll = tokio::spawn(poll_backends(
        poller,
        datname.clone(),
        base,
        poller_own,
        seen_backends.clone(),
    ));
    let users = args.users.unwrap_or(args.grabs).max(1);
    eprintln!(
        "launch: {} campaigns x {} stock open at {starts_at}; up to {} grabs from {} users, \
         from {:?} before, peak {}/s",
        args.campaigns, args.stock_per_campaign, args.grabs, users, args.herd_lead, args.peak_rate
    );

    let (sold_tx, sold_rx) = watch::channel(None);
    let watcher = tokio::spawn(watch_sold_out(
        api.clone(),
        campaigns.clone(),
        open_at,
        sold_tx,
        counter.clone(),
    ));
    // Before opening: from just before the first arrival to just before starts_at.
    let before = {
        let counter = counter.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((herd_start - Duration::from_millis(5)).into()).await;
            let start = counter.read().await?;
            tokio::time::sleep_until((open_at - Duration::from_millis(20)).into()).await;
            let end = counter.read().await?;
            anyhow::Ok((start, end))
        })
    };

    let herd = Arc::new(Herd {
        api: api.clone(),
        campaigns: campaigns.clone(),
        run: format!("lg{}", &Uuid::new_v4().simple().to_string()[..10]),
        users,
        timeout: args.timeout,
        retrying: Retrying {
            retries: args.retries,
            start: base,
            retry_after_cap: args.retry_after_cap,
        },
        base,
    });
    tokio::time::sleep_until(herd_start.into()).await;
    // The open model, as in flash: arrivals are scheduled by the clock.
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::new();
    let (mut next, mut late_max, mut late_50) = (0u64, Duration::ZERO, 0u64);
    let ramp = args.ramp.as_secs_f64();
    'herd: while next < args.grabs {
        let t = herd_start.elapsed().as_secs_f64();
        let target = flash::due(t, args.peak_rate, ramp).min(args.grabs);
        while next < target {
            if let Some(sold) = *sold_rx.borrow()
                && sold.elapsed() >= args.tail
            {
                break 'herd;
            }
            let due_at = herd_start
                + Duration::from_secs_f64(flash::arrival_time(next, args.peak_rate, ramp));
            let permit = slots.clone().acquire_owned().await?;
            let late = Instant::now().saturating_duration_since(due_at);
            late_max = late_max.max(late);
            late_50 += u64::from(late > Duration::from_millis(50));
            let herd = herd.clone();
            let i = next;
            tasks.push(tokio::spawn(async move {
                let r = grab_key(&herd, i).await;
                drop(permit);
                r
            }));
            next += 1;
        }
        if let Some(sold) = *sold_rx.borrow()
            && sold.elapsed() >= args.tail
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let grabs_sent = next;
    eprintln!("launch: {grabs_sent} grabs sent; waiting for their answers");
    let mut runs = Vec::with_capacity(tasks.len());
    let mut attempts = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (run, seen) = t.await?;
        runs.push(run);
        attempts.extend(seen);
    }
    let herd_done = Instant::now();
    let (before_start, before_end) = before.await??;
    let sold_at = *sold_rx.borrow();
    // The after-sell-out window exists if its start was read while the herd still ran.
    let after_start = if watcher.is_finished() {
        watcher.await?.ok()
    } else {
        watcher.abort();
        None
    };
    let after_start = after_start.filter(|r| r.at_us < us_since(base, herd_done));
    tokio::time::sleep(args.stats_wait).await;
    let after_end = counter.read().await?;
    let after_late = if args.stats_idle_wait > args.stats_wait {
        tokio::time::sleep(args.stats_idle_wait - args.stats_wait).await;
        Some(counter.read().await?)
    } else {
        None
    };
    poll.abort();

    // Reconciliation, as in flash: every key never answered for good is asked again
    // (after the windows, so it counts in none) until it answers.
    let unanswered: Vec<usize> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.outcome, Outcome::Unanswered))
        .map(|(i, _)| i)
        .collect();
    eprintln!("launch: {} keys unanswered; asking again", unanswered.len());
    let recon = Herd {
        api: api.clone(),
        campaigns: campaigns.clone(),
        run: herd.run.clone(),
        users,
        timeout: Duration::from_secs(30),
        retrying: Retrying {
            retries: 10,
            start: base,
            retry_after_cap: args.retry_after_cap,
        },
        base,
    };
    let answers: Vec<(usize, Outcome)> = futures::stream::iter(unanswered.iter().copied())
        .map(|i| {
            let recon = &recon;
            async move { (i, grab_key(recon, i as u64).await.0.outcome) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for (i, outcome) in answers {
        runs[i].outcome = outcome;
    }

    // The audit, per campaign: flash's, over the keys sent to it.
    let db = sqlx::PgPool::connect_with(options.clone()).await?;
    let mut by_campaign: Vec<Vec<KeyRun>> = (0..campaigns.len()).map(|_| Vec::new()).collect();
    for (i, run) in runs.into_iter().enumerate() {
        by_campaign[campaign_of(i as u64, campaigns.len())].push(run);
    }
    let mut per_campaign = Vec::with_capacity(campaigns.len());
    for (campaign, runs) in campaigns.iter().zip(&by_campaign) {
        let a =
            flash::audit_campaign(&db, &api, campaign, args.per_user_limit, false, runs).await?;
        per_campaign.push(CampaignResult {
            campaign: campaign.clone(),
            granted: a.granted,
            issued: a.issued,
            total_stock: a.total_stock,
            audit_ok: a.checks.iter().all(|c| c.ok),
            checks: a.checks,
        });
    }

    let open_us = us_since(base, open_at);
    let early_grants = attempts
        .iter()
        .filter(|a| matches!(a.status, 200 | 201) && a.done_us < open_us)
        .count();
    let checks = vec![Check {
        name: "no_grant_before_starts_at".into(),
        ok: early_grants == 0,
        detail: format!("{early_grants} grabs answered 201 before starts_at"),
    }];
    let samples: Vec<Sample> = by_campaign
        .iter()
        .flatten()
        .flat_map(|r| r.samples.iter().copied())
        .collect();
    let report = LaunchReport {
        machine: report::machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        campaigns: args.campaigns,
        stock_per_campaign: args.stock_per_campaign,
        per_user_limit: args.per_user_limit,
        starts_at,
        open_in_s: args.open_in.as_secs_f64(),
        herd_lead_s: args.herd_lead.as_secs_f64(),
        peak_rate: args.peak_rate,
        ramp_s: ramp,
        grabs_planned: args.grabs,
        grabs_sent,
        users,
        timeout_ms: args.timeout.as_millis() as u64,
        retries: args.retries,
        retry_after_cap_s: args.retry_after_cap.as_secs_f64(),
        tail_s: args.tail.as_secs_f64(),
        stats_wait_s: args.stats_wait.as_secs_f64(),
        quiet_before_herd_s: round2(us_since(created, herd_start) as f64 / 1e6),
        arrivals_late_max_ms: round2(late_max.as_secs_f64() * 1000.0),
        arrivals_late_over_50ms: late_50,
        sold_out_after_s: sold_at.map(|t| round2((us_since(base, t) - open_us) as f64 / 1e6)),
        last_grant_after_s: None,
        grants: 0,
        grants_per_s: None,
        issued: per_campaign.iter().map(|c| c.issued).sum(),
        total_stock: per_campaign.iter().map(|c| c.total_stock).sum(),
        attempts: attempts.len() as u64,
        answers: 0,
        answers_503: 0,
        share_503: 0.0,
        answers_by_status: BTreeMap::new(),
        latency_answered: report::latency(&report::histogram()),
        latency_granted: report::latency(&report::histogram()),
        unanswered_before_reconcile: unanswered.len() as u64,
        tx_before_opening: window(
            &attempts,
            open_us,
            &before_start,
            &before_end,
            before_end.at_us,
            Lagging::End,
            None,
        ),
        tx_after_sold_out: after_start.as_ref().map(|start| {
            window(
                &attempts,
                open_us,
                start,
                &after_end,
                us_since(base, herd_done),
                Lagging::Start,
                after_late.as_ref(),
            )
        }),
        idle_service_tx_per_s: after_late.as_ref().map(|late| {
            let secs = (late.at_us - after_end.at_us) as f64 / 1e6;
            (service_xacts(&after_end, late) as f64 / secs * 10.0).round() / 10.0
        }),
        backends: Backends {
            poller_database: poller_db,
            ..backends(
                &seen_backends.lock().unwrap_or_else(|p| p.into_inner()),
                open_us,
                sold_at.map(|t| us_since(base, t)),
            )
        },
        audit_ok: checks.iter().all(|c| c.ok) && per_campaign.iter().all(|c| c.audit_ok),
        checks,
        per_campaign,
        timeline: report::timeline(&samples),
    };
    let report = with_answers(report, &attempts, open_us);
    write(&args.out, &report)?;
    println!("{}", markdown(&report));
    anyhow::ensure!(
        report.audit_ok,
        "AUDIT FAILED: see {}.md",
        args.out.with_extension("md").display()
    );
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Fills in the figures made of every attempt: answers by status, the 503 share,
/// latencies and the grant rate.
fn with_answers(mut r: LaunchReport, attempts: &[Attempt], open_us: i64) -> LaunchReport {
    let (mut answered, mut granted) = (report::histogram(), report::histogram());
    let mut last_grant = None;
    for a in attempts {
        *r.answers_by_status.entry(a.name()).or_default() += 1;
        if a.status == 0 {
            continue;
        }
        r.answers += 1;
        r.answers_503 += u64::from(a.status == 503);
        let latency = (a.done_us - a.sent_us).max(1) as u64;
        let _ = answered.record(latency);
        if matches!(a.status, 200 | 201) {
            r.grants += 1;
            let _ = granted.record(latency);
            last_grant = last_grant.max(Some(a.done_us));
        }
    }
    r.share_503 = if r.answers > 0 {
        (r.answers_503 as f64 / r.answers as f64 * 10_000.0).round() / 10_000.0
    } else {
        0.0
    };
    r.latency_answered = report::latency(&answered);
    r.latency_granted = report::latency(&granted);
    r.last_grant_after_s = last_grant.map(|t| round2((t - open_us) as f64 / 1e6));
    r.grants_per_s = grant_rate(r.grants, open_us, last_grant);
    r
}

/// Grants per second from the opening to the last grant.
fn grant_rate(grants: u64, open_us: i64, last_grant_us: Option<i64>) -> Option<f64> {
    let span = (last_grant_us? - open_us) as f64 / 1e6;
    (span > 0.0).then(|| (grants as f64 / span).round())
}

fn opt(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{x}"))
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn markdown(r: &LaunchReport) -> String {
    let l = &r.latency_answered;
    let g = &r.latency_granted;
    let mut s = format!(
        "## Launch: {} campaigns × {} stock open at once; {} grabs at up to {}/s\n\n\
         Machine: {}.\nCommand: `{}`\n\n\
         Every campaign opens at {} ({} s after the run started); the herd arrives from \
         {} s before, ramping to {}/s over {} s, one key per grab, {} users, spread evenly \
         over the campaigns. A client waits {} ms, then retries the same key up to {} times \
         after a 503, 429, no answer or 409 `idempotency_key_in_use` (backoff 50 ms doubling, \
         or `Retry-After` up to {} s); any other answer, `campaign_not_active` included, is \
         final for its key. The herd stops {} s after every campaign's public view shows \
         `remaining` 0.\n\n\
         | figure | value |\n|---|---:|\n\
         | grabs sent | {} of {} |\n\
         | every campaign sold out (public view) | {} |\n\
         | vouchers issued (Postgres) | {} of {} stock |\n\
         | grants/s (opening → last grant at {} s) | {} |\n\
         | answers that were 503 | {:.2} % ({} of {}) |\n\
         | answered grabs p50 / p90 / p99 / max (from send) | {} / {} / {} / {} ms |\n\
         | granted grabs p50 / p99 | {} / {} ms |\n\
         | peak voucherd backends (before opening / selling / after sell-out) | {} ({} / {} / {}) |\n\
         | arrivals behind schedule (client concurrency cap) | max {} ms, {} over 50 ms |\n\
         | keys unanswered before reconciliation | {} |\n\n",
        r.campaigns,
        r.stock_per_campaign,
        thousands(r.grabs_planned),
        r.peak_rate,
        r.machine,
        r.command,
        r.starts_at,
        r.open_in_s,
        r.herd_lead_s,
        r.peak_rate,
        r.ramp_s,
        thousands(r.users),
        r.timeout_ms,
        r.retries,
        r.retry_after_cap_s,
        r.tail_s,
        thousands(r.grabs_sent),
        thousands(r.grabs_planned),
        r.sold_out_after_s
            .map_or("no (the herd ended first)".into(), |s| format!(
                "{s:.2} s after opening"
            )),
        thousands(r.issued.max(0) as u64),
        thousands(r.total_stock.max(0) as u64),
        opt(r.last_grant_after_s),
        opt(r.grants_per_s),
        r.share_503 * 100.0,
        thousands(r.answers_503),
        thousands(r.answers),
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.max_ms,
        g.p50_ms,
        g.p99_ms,
        r.backends.peak,
        r.backends.before_opening,
        r.backends.selling,
        r.backends.after_sold_out,
        r.arrivals_late_max_ms,
        r.arrivals_late_over_50ms,
        r.unanswered_before_reconcile,
    );
    s += "### Answers by status and code (every attempt)\n\n| answer | attempts | share |\n|---|---:|---:|\n";
    let total = r.attempts.max(1) as f64;
    for (k, v) in &r.answers_by_status {
        s += &format!(
            "| {k} | {} | {:.2} % |\n",
            thousands(*v),
            *v as f64 / total * 100.0
        );
    }
    s += "\n### Postgres transactions per refused grab\n\n\
          | window | from → to (s from opening) | refusals | service transactions | per second | per refusal | range (flush lag) |\n\
          |---|---|---:|---:|---:|---:|---:|\n";
    let when = |after: f64| {
        if after < 0.05 {
            "end read on time".to_string()
        } else {
            format!("end read {after} s after")
        }
    };
    let row = |name: &str, w: &TxWindow| {
        let mut row = format!(
            "| {name} ({}) | {} → {} | {} | {} (counter +{}, own {}) | {} | {} | {} – {} |\n",
            when(w.end_read_after_s),
            w.from_s,
            w.to_s,
            thousands(w.refusals),
            w.service_transactions,
            w.counter_change,
            w.own_transactions,
            opt(w.service_per_s),
            opt(w.per_refusal),
            opt(w.per_refusal_range.0),
            opt(w.per_refusal_range.1),
        );
        if let Some(late) = &w.late_read {
            row += &format!(
                "| {name} ({}) | {} → {} | {} | {} | | {} | |\n",
                when(late.end_read_after_s),
                w.from_s,
                w.to_s,
                thousands(w.refusals),
                late.service_transactions,
                opt(late.per_refusal),
            );
        }
        row
    };
    s += &row("before opening", &r.tx_before_opening);
    match &r.tx_after_sold_out {
        Some(w) => s += &row("after sell-out", w),
        None => {
            s += "| after sell-out | not measured: the herd ended before every campaign sold out \
                  (or less than a second after) | | | | | |\n"
        }
    }
    let by = |w: &TxWindow| {
        let mut parts: Vec<String> = w
            .refusals_by_answer
            .iter()
            .map(|(k, v)| format!("{k}: {}", thousands(*v)))
            .collect();
        parts.push(format!("grants: {}", w.grants));
        parts.push(format!("no answer: {}", w.no_answers));
        parts.join(" · ")
    };
    s += &format!("\nBefore opening: {}.\n", by(&r.tx_before_opening));
    if r.tx_before_opening.to_s > 0.0 {
        s += &format!(
            "(Its end value was read {} s after `starts_at`, not 20 ms before: the loadgen \
             was busy; the window is counted to when it was read.)\n",
            r.tx_before_opening.to_s
        );
    }
    if let Some(w) = &r.tx_after_sold_out {
        s += &format!("After sell-out: {}.\n", by(w));
    }
    s += &format!(
        "\nHow this is measured: `xact_commit + xact_rollback` of the service's database \
         (`pg_stat_database`, `datname = current_database()`), read through `--database-url` \
         at each edge of a window, over the refusals (every answer ≥ 400) that came back in \
         it. Each read is itself a transaction on that database and is subtracted (\"own\"); \
         the backends poller runs on the `{}` database{}. The before-opening window runs \
         from just before the herd's first arrival to 20 ms before `starts_at`; the \
         after-sell-out one from {} s after every campaign showed `remaining` 0 until the \
         herd's last answer. The service's own periodic work (readiness pings every \
         250 ms, maintenance, cache refreshes of live campaigns) is counted too: idle after \
         the run it came to {} transactions/s (an upper bound: late flushes land in that \
         interval). A per-second rate that stays flat while the herd grows is that work, not \
         the refusals'.\n\n\
         Caveat: Postgres 15 backends flush these counters lazily — a busy backend at most \
         about once a second, an idle one only when its idle timer fires (up to 10 s later) \
         or it exits. So the after-sell-out end value is read {} s after the window's end, \
         and again after {} s; the before-opening end cannot wait (the \
         grants start at `starts_at`), so the range shows the figure if the last second's \
         transactions were not yet flushed, and for the after-sell-out window if the second \
         before its start was. Statistics a backend held back past an idle timer (the \
         campaigns' creation {} s before the herd, the last grants before the sell-out) can \
         still land inside a window.\n",
        r.backends.poller_database,
        if r.backends.poller_database == "postgres" {
            ", so its queries are none of the service database's"
        } else {
            " (the service's: its queries are subtracted as own)"
        },
        SETTLE.as_secs_f64(),
        opt(r.idle_service_tx_per_s),
        r.stats_wait_s,
        r.tx_after_sold_out
            .as_ref()
            .and_then(|w| w.late_read.as_ref())
            .map_or("–".into(), |l| l.end_read_after_s.to_string()),
        r.quiet_before_herd_s,
    );
    s += &format!(
        "\nBackends: `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'voucherd' \
         AND datname = <the service's database>` every 100 ms ({} polls); the loadgen's own \
         sessions are named `{APP}`.\n",
        r.backends.polls
    );
    let failed = r.per_campaign.iter().filter(|c| !c.audit_ok).count()
        + r.checks.iter().filter(|c| !c.ok).count();
    s += &format!(
        "\n**Audit: {}** ({} campaigns, flash's audit on each; {} failed)\n\n\
         | check | ok | detail |\n|---|---|---|\n",
        if r.audit_ok { "PASSED" } else { "FAILED" },
        r.per_campaign.len(),
        failed
    );
    for c in &r.checks {
        s += &format!(
            "| {} | {} | {} |\n",
            c.name,
            if c.ok { "yes" } else { "**NO**" },
            c.detail
        );
    }
    // Flash's checks, each over every campaign: the first failure's detail, or the
    // first campaign's when all passed.
    let names: Vec<&str> = r
        .per_campaign
        .first()
        .map(|c| c.checks.iter().map(|k| k.name.as_str()).collect())
        .unwrap_or_default();
    for name in names {
        let all: Vec<(&CampaignResult, &Check)> = r
            .per_campaign
            .iter()
            .filter_map(|c| c.checks.iter().find(|k| k.name == name).map(|k| (c, k)))
            .collect();
        let bad: Vec<_> = all.iter().filter(|(_, k)| !k.ok).collect();
        let detail = match (bad.first(), all.first()) {
            _ if name == "audit_endpoint" => "GET /v1/admin/campaigns/{id}/audit".to_string(),
            (Some((c, k)), _) => format!(
                "{} of {} campaigns failed; {}: {}",
                bad.len(),
                all.len(),
                c.campaign,
                k.detail
            ),
            (None, Some((c, k))) => format!(
                "all {} campaigns; e.g. {}",
                all.len(),
                k.detail.replace(&c.campaign, "…")
            ),
            (None, None) => String::new(),
        };
        s += &format!(
            "| {name} | {} | {detail} |\n",
            if bad.is_empty() { "yes" } else { "**NO**" }
        );
    }
    s
}

fn write(out: &std::path::Path, r: &LaunchReport) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out.with_extension("md"), markdown(r))?;
    std::fs::write(out.with_extension("json"), serde_json::to_vec_pretty(r)?)?;
    report::chart(&out.with_extension("svg"), "launch", &r.timeline)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(done_ms: i64, status: u16, code: &str) -> Attempt {
        Attempt {
            sent_us: done_ms * 1000 - 500,
            done_us: done_ms * 1000,
            status,
            code: code.into(),
        }
    }

    fn reading(value: i64, own_before: u64, at_ms: i64) -> Reading {
        Reading {
            value,
            own_before,
            at_us: at_ms * 1000,
        }
    }

    #[test]
    fn own_reads_are_subtracted() {
        // The first read and two reads in between are ours; the second's is not in
        // its own value.
        let (a, b) = (reading(100, 4, 0), reading(110, 7, 2000));
        assert_eq!(service_xacts(&a, &b), 7);
    }

    #[test]
    fn refusals_count_in_the_window_only() {
        let attempts = vec![
            answer(100, 409, "campaign_not_active"),
            answer(1500, 503, "overloaded"),
            answer(2500, 409, "campaign_not_active"),
            answer(2600, 201, ""),
            answer(2700, 0, ""),
            answer(3100, 409, "sold_out"),
        ];
        let (n, by) = refusals_in(&attempts, 0, 3_000_000);
        assert_eq!(n, 3);
        assert_eq!(by["409 campaign_not_active"], 2);
        assert_eq!(by["503 overloaded"], 1);
        let w = window(
            &attempts,
            3_000_000,
            &reading(0, 0, 0),
            &reading(31, 1, 3000),
            3_000_000,
            Lagging::End,
            None,
        );
        assert_eq!((w.grants, w.no_answers, w.service_transactions), (1, 1, 30));
        assert_eq!(w.per_refusal, Some(10.0));
        // Without the last second (one refusal of three), the upper end of the range.
        assert_eq!(w.per_refusal_range, (Some(10.0), Some(15.0)));
        assert_eq!((w.from_s, w.to_s), (-3.0, 0.0));
    }

    #[test]
    fn a_lagging_start_widens_the_window_backwards() {
        let attempts: Vec<Attempt> = (0..10)
            .map(|s| answer(s * 1000 + 10, 409, "sold_out"))
            .collect();
        // Window [5 s, 10 s): five refusals; one more in the second before it.
        let (figure, range) = per_refusal(&attempts, 12, 5_000_000, 10_000_000, Lagging::Start);
        assert_eq!(figure, Some(2.4));
        assert_eq!(range, (Some(2.0), Some(2.4)));
        assert_eq!(ratio(3, 0), None);
    }

    #[test]
    fn grant_rate_counts_from_the_opening() {
        assert_eq!(grant_rate(1000, 2_000_000, Some(2_500_000)), Some(2000.0));
        assert_eq!(grant_rate(0, 2_000_000, None), None);
        assert_eq!(grant_rate(5, 2_000_000, Some(1_000_000)), None);
    }

    #[test]
    fn backends_peak_per_phase() {
        let seen = [(0, 3), (900, 9), (1000, 40), (1500, 12), (2000, 5)];
        let b = backends(&seen, 1000, Some(2000));
        assert_eq!(
            (b.peak, b.before_opening, b.selling, b.after_sold_out),
            (40, 9, 40, 5)
        );
    }

    #[test]
    fn the_herd_is_spread_evenly_and_retries_honour_retry_after_capped() {
        let mut n = [0u32; 7];
        for i in 0..7000 {
            n[campaign_of(i, 7)] += 1;
        }
        assert!(n.iter().all(|c| *c == 1000));
        let busy = |after: Option<u64>| Reply::Answer {
            status: 503,
            code: "overloaded".into(),
            body: Vec::new(),
            retry_after: after.map(Duration::from_secs),
        };
        let cap = Duration::from_secs(1);
        assert_eq!(flash::backoff(0, &busy(Some(3)), cap), cap);
        assert_eq!(
            flash::backoff(0, &busy(None), cap),
            Duration::from_millis(50)
        );
        assert_eq!(
            flash::backoff(5, &busy(Some(1)), cap),
            Duration::from_millis(1600)
        );
        assert_eq!(
            flash::backoff(0, &busy(Some(3)), Duration::ZERO),
            Duration::from_millis(50)
        );
        assert!(!flash::settled(&busy(Some(1))));
        let not_active = Reply::Answer {
            status: 409,
            code: "campaign_not_active".into(),
            body: Vec::new(),
            retry_after: None,
        };
        assert!(flash::settled(&not_active));
    }
}
