//! A flash sale at an open arrival rate: the rate ramps from zero to its peak
//! whatever the service answers (latency is counted from when each grab was due),
//! clients time out and retry with the same key, and every key left unanswered is
//! retried until it has an answer. Then the audit compares what the clients were told
//! with what Postgres holds.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{
    api::{Api, Reply, Target},
    report::{self, Latency, Sample, Second},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Postgres, read (never written) by the audit.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Grab requests to send (each with its own key).
    #[arg(long, default_value_t = 100_000)]
    pub grabs: u64,
    /// Distinct users; defaults to one per grab.
    #[arg(long)]
    pub users: Option<u64>,
    #[arg(long, default_value_t = 10_000)]
    pub stock: i64,
    #[arg(long, default_value_t = 1)]
    pub per_user_limit: i64,
    /// Peak arrivals per second.
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// Time to ramp from zero to the peak rate.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// Most grabs in flight at once (the client's connection budget).
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// How long a client waits before it gives up and retries with the same key.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Share of granted keys sent once more, to check the replay is byte-identical.
    #[arg(long, default_value_t = 0.02)]
    pub replay_fraction: f64,
    /// Share of grants whose voucher is then redeemed (its own key, retried the same
    /// way), so faults hit checkouts as well as grabs.
    #[arg(long, default_value_t = 0.0)]
    pub redeem_fraction: f64,
    /// Send each key's first attempt to this many instances at once (the same key
    /// racing itself across instances); every final answer must be identical.
    #[arg(long, default_value_t = 1)]
    pub fanout: usize,
    /// A name for this run (a fault drill's name), carried into the report.
    #[arg(long, default_value = "flash sale")]
    pub label: String,
    /// What is done to the system during the run, as the report should say it.
    #[arg(long, default_value = "nothing")]
    pub injected: String,
    /// Use this campaign instead of creating one.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Report files are written as <out>.md, <out>.json and <out>.svg.
    #[arg(long, default_value = "loadtest/results/flash")]
    pub out: PathBuf,
    /// Also write, one line per key answered 201, `<unix ms of the answer>
    /// <voucher id>` (sorted by time), so a drill can line grants up with the
    /// instant of its fault.
    #[arg(long)]
    pub answers: Option<PathBuf>,
}

/// What the clients were finally told for one key.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Granted { voucher: Uuid },
    Refused(String),
    Unanswered,
}

pub(crate) struct KeyRun {
    pub outcome: Outcome,
    pub samples: Vec<Sample>,
    pub attempts: u32,
    pub replay_checked: bool,
    pub replay_mismatch: bool,
    /// For a share of the grants: the redemption of the voucher (`Granted` holds the
    /// redemption's id).
    pub redemption: Option<Outcome>,
    pub redeemed_code: Option<String>,
    /// When (ms since the start) the grab's 201 came back.
    pub granted_at_ms: Option<u64>,
}

struct Ctx {
    api: Api,
    campaign: String,
    run: String,
    users: u64,
    timeout: Duration,
    retries: u32,
    replay_fraction: f64,
    redeem_fraction: f64,
    fanout: usize,
    start: Instant,
}

fn body_hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

pub(crate) fn voucher_of(body: &[u8]) -> Option<Uuid> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["voucher"]["id"].as_str()?.parse().ok()
}

fn voucher_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(v["voucher"]["code"].as_str()?.to_string())
}

/// Arrivals due by `t` seconds: the rate grows linearly to `peak` over `ramp`, then holds.
pub(crate) fn due(t: f64, peak: f64, ramp: f64) -> u64 {
    let n = if ramp <= 0.0 {
        peak * t
    } else if t < ramp {
        peak * t * t / (2.0 * ramp)
    } else {
        peak * ramp / 2.0 + peak * (t - ramp)
    };
    n as u64
}

/// Whether an attempt's answer is final for its key (a grant, a replay or a refusal)
/// or the same key must be sent again (no answer, 5xx, 429, the key still in flight).
pub(crate) fn settled(reply: &Reply) -> bool {
    match reply {
        Reply::Answer { status: 201, .. } | Reply::Answer { status: 200, .. } => true,
        Reply::Answer {
            status: 409, code, ..
        } if code == "idempotency_key_in_use" => false,
        Reply::Answer { status: 429, .. } => false,
        Reply::Answer { status, .. } => *status < 500,
        Reply::NoAnswer => false,
    }
}

/// How a key is retried: how many times, from which clock samples are timed, and
/// how long a `Retry-After` may hold a retry back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retrying {
    pub retries: u32,
    /// Samples' `at_ms` count from here.
    pub start: Instant,
    /// A retry waits for the answer's `Retry-After`, up to this long (and never less
    /// than the exponential backoff); zero ignores `Retry-After`, as `flash` does.
    pub retry_after_cap: Duration,
}

/// The pause before retry `attempt + 1`: 50 ms doubling up to 1.6 s, or the answer's
/// `Retry-After` capped at `cap` when that is longer.
pub(crate) fn backoff(attempt: u32, reply: &Reply, cap: Duration) -> Duration {
    let exponential = Duration::from_millis(50 << attempt.min(5));
    match reply {
        Reply::Answer {
            retry_after: Some(after),
            ..
        } => exponential.max((*after).min(cap)),
        _ => exponential,
    }
}

/// Sends one request (built by `send` for attempt n) until it is answered for good
/// or runs out of retries; every attempt becomes a sample. Returns the final answer.
async fn until_answered<F, Fut>(
    ctx: &Ctx,
    first_due: Instant,
    samples: &mut Vec<Sample>,
    attempts: &mut u32,
    send: F,
) -> Option<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let retrying = Retrying {
        retries: ctx.retries,
        start: ctx.start,
        retry_after_cap: Duration::ZERO,
    };
    retry_until_answered(retrying, first_due, samples, attempts, send, |_, _, _| {}).await
}

/// The retry loop itself: `observe` sees every attempt's reply with when it was
/// sent (the first: when it was due) and when it came back.
pub(crate) async fn retry_until_answered<F, Fut, O>(
    r: Retrying,
    first_due: Instant,
    samples: &mut Vec<Sample>,
    attempts: &mut u32,
    send: F,
    mut observe: O,
) -> Option<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply>,
    O: FnMut(&Reply, Instant, Instant),
{
    for attempt in 0..=r.retries {
        let sent = if attempt == 0 {
            first_due
        } else {
            Instant::now()
        };
        *attempts += 1;
        // Each retry goes to the next instance, as a load balancer might send it.
        let reply = send(attempt as usize).await;
        let done = Instant::now();
        observe(&reply, sent, done);
        let (fault, missing_retry_after) = match &reply {
            Reply::NoAnswer => (Some(0), false),
            Reply::Answer {
                status,
                retry_after,
                ..
            } => (
                (!settled(&reply)).then_some(*status),
                matches!(status, 429 | 503) && retry_after.is_none(),
            ),
        };
        samples.push(Sample {
            at_ms: done.duration_since(r.start).as_millis() as u64,
            latency_us: done.duration_since(sent).as_micros() as u64,
            granted: matches!(reply, Reply::Answer { status: 201, .. }),
            fault,
            missing_retry_after,
        });
        if settled(&reply) {
            return Some(reply);
        }
        if attempt < r.retries {
            tokio::time::sleep(backoff(attempt, &reply, r.retry_after_cap)).await;
        }
    }
    None
}

pub(crate) fn refusal(status: u16, code: String) -> String {
    if code.is_empty() {
        status.to_string()
    } else {
        code
    }
}

/// Sends one key until it gets a definitive answer or runs out of retries; then, for
/// a share of the grants, redeems the voucher the same way.
async fn one(ctx: &Ctx, i: u64, due_at: Instant) -> KeyRun {
    let user = i % ctx.users;
    let token = ctx.api.token(&format!("{}-u{user}", ctx.run));
    let key = format!("{}-k{i}", ctx.run);
    let mut samples = Vec::with_capacity(1);
    let mut attempts = 0;
    let mut outcome = Outcome::Unanswered;
    let mut first_body = None;
    // With a fan-out, the same key goes to every instance at once; every final
    // answer must then be the same bytes.
    let fanout = ctx.fanout.max(1);
    let tries = (0..fanout).map(|f| {
        let (token, key) = (&token, &key);
        async move {
            let (mut samples, mut attempts) = (Vec::new(), 0);
            let reply = until_answered(ctx, due_at, &mut samples, &mut attempts, |n| {
                ctx.api
                    .grab_on(i as usize + f + n, &ctx.campaign, token, key, ctx.timeout)
            })
            .await;
            (reply, samples, attempts)
        }
    });
    let mut fanout_mismatch = false;
    let mut reply = None;
    let mut answered_at_ms = None;
    for (r, s, a) in futures::future::join_all(tries).await {
        if reply.is_none() {
            answered_at_ms = s.last().map(|s| s.at_ms);
        }
        samples.extend(s);
        attempts += a;
        let hash = |r: &Option<Reply>| match r {
            Some(Reply::Answer { status, body, .. }) => Some((*status, body_hash(body))),
            _ => None,
        };
        match &reply {
            None => reply = Some(r),
            Some(first) => {
                fanout_mismatch |=
                    hash(first).is_some() && hash(&r).is_some() && hash(first) != hash(&r)
            }
        }
    }
    let reply = reply.flatten();
    let mut granted_at_ms = None;
    match reply {
        Some(Reply::Answer {
            status: 201, body, ..
        }) => match voucher_of(&body) {
            Some(voucher) => {
                outcome = Outcome::Granted { voucher };
                granted_at_ms = answered_at_ms;
                first_body = Some(body);
            }
            None => outcome = Outcome::Refused("unreadable 201 body".into()),
        },
        Some(Reply::Answer { status, code, .. }) => {
            outcome = Outcome::Refused(refusal(status, code))
        }
        _ => {}
    }
    let mut run = KeyRun {
        outcome,
        samples,
        attempts,
        replay_checked: fanout > 1,
        replay_mismatch: fanout_mismatch,
        redemption: None,
        redeemed_code: None,
        granted_at_ms,
    };
    if let Some(body) = &first_body
        && picked(i, ctx.replay_fraction)
    {
        run.replay_checked = true;
        // An instance that is down is asked again later (and the next one too),
        // until one answers for good.
        for attempt in 0..20u32 {
            let n = i as usize + attempt as usize + 1;
            match ctx
                .api
                .grab_on(n, &ctx.campaign, &token, &key, Duration::from_secs(30))
                .await
            {
                // Only a final answer can differ; "retry later" (503, 429, the key
                // in flight) is asked again like no answer at all.
                reply @ Reply::Answer { .. } if settled(&reply) => {
                    if let Reply::Answer {
                        status, body: b, ..
                    } = reply
                    {
                        run.replay_mismatch = !(status == 201 && body_hash(&b) == body_hash(body));
                    }
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await,
            }
        }
    }
    if let Some(body) = &first_body
        && picked(i.wrapping_mul(7919), ctx.redeem_fraction)
        && let Some(code) = voucher_code(body)
    {
        run.redemption = Some(redeem(ctx, i, &token, &code, &mut run).await);
        run.redeemed_code = Some(code);
    }
    run
}

/// Redeems a granted voucher with its own key, retried like a grab.
async fn redeem(ctx: &Ctx, i: u64, token: &str, code: &str, run: &mut KeyRun) -> Outcome {
    let key = format!("{}-r{i}", ctx.run);
    let reply = until_answered(
        ctx,
        Instant::now(),
        &mut run.samples,
        &mut run.attempts,
        |n| {
            ctx.api
                .redeem_on(i as usize + n, code, token, &key, ctx.timeout)
        },
    )
    .await;
    match reply {
        Some(Reply::Answer {
            status: 201, body, ..
        }) => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["redemption"]["id"].as_str()?.parse().ok())
            .map_or(Outcome::Refused("unreadable 201 body".into()), |id| {
                Outcome::Granted { voucher: id }
            }),
        Some(Reply::Answer { status, code, .. }) => Outcome::Refused(refusal(status, code)),
        _ => Outcome::Unanswered,
    }
}

/// Whether key `i` is in the given share of keys (spread evenly over the run).
fn picked(i: u64, fraction: f64) -> bool {
    fraction > 0.0 && (i as f64 * fraction).fract() + fraction >= 1.0
}

#[derive(Serialize, serde::Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Serialize)]
struct FlashReport {
    label: String,
    injected: String,
    machine: String,
    command: String,
    campaign: String,
    grabs: u64,
    users: u64,
    stock: i64,
    per_user_limit: i64,
    peak_rate: f64,
    duration_s: f64,
    responses_per_s: f64,
    grants_per_s: f64,
    attempts: u64,
    retries: u64,
    unanswered_before_reconcile: u64,
    latency: Latency,
    outcomes: HashMap<String, u64>,
    redemptions: HashMap<String, u64>,
    /// Attempts without a usable answer, by kind, and the first and last second
    /// (since the start) one was seen.
    faults: BTreeMap<String, u64>,
    fault_window_s: Option<(f64, f64)>,
    /// The first and last second `/readyz` (polled every 200 ms on the first
    /// instance) did not answer 200.
    readyz_unready_s: Option<(f64, f64)>,
    replay_checks: u64,
    audit_ok: bool,
    checks: Vec<Check>,
    timeline: Vec<Second>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let api = Api::new(&args.target, args.concurrency)?;
    let campaign = match &args.campaign {
        Some(c) => c.clone(),
        None => api.create_campaign(args.stock, args.per_user_limit).await?,
    };
    let run = format!("lg{}", &Uuid::new_v4().simple().to_string()[..10]);
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        campaign: campaign.clone(),
        run,
        users: args.users.unwrap_or(args.grabs).max(1),
        timeout: args.timeout,
        retries: args.retries,
        replay_fraction: args.replay_fraction.clamp(0.0, 1.0),
        redeem_fraction: args.redeem_fraction.clamp(0.0, 1.0),
        fanout: args.fanout,
        start: Instant::now(),
    });
    let start_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    eprintln!(
        "flash: {} grabs, {} users, stock {}, peak {}/s, campaign {campaign}",
        args.grabs, ctx.users, args.stock, args.rate
    );

    let unready = Arc::new(std::sync::Mutex::new(Vec::new()));
    let readyz = tokio::spawn(poll_readyz(api.clone(), ctx.start, unready.clone()));
    // The open model: arrivals are scheduled by the clock, not by the answers.
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(args.grabs as usize);
    let mut next = 0u64;
    let ramp = args.ramp.as_secs_f64();
    while next < args.grabs {
        let t = ctx.start.elapsed().as_secs_f64();
        let target = due(t, args.rate, ramp).min(args.grabs);
        while next < target {
            let due_at = ctx.start + Duration::from_secs_f64(arrival_time(next, args.rate, ramp));
            let permit = slots.clone().acquire_owned().await?;
            let ctx = ctx.clone();
            let i = next;
            tasks.push(tokio::spawn(async move {
                let r = one(&ctx, i, due_at).await;
                drop(permit);
                r
            }));
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut runs = Vec::with_capacity(tasks.len());
    for t in tasks {
        runs.push(t.await?);
    }
    let elapsed = ctx.start.elapsed().as_secs_f64();
    readyz.abort();
    let readyz_unready_s = {
        let at = unready.lock().unwrap_or_else(|p| p.into_inner());
        at.first()
            .zip(at.last())
            .map(|(a, b)| (*a as f64 / 1000.0, *b as f64 / 1000.0))
    };

    // Every key the clients never heard back about is asked again until it answers:
    // each must resolve to at most one voucher.
    let unanswered: Vec<usize> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.outcome, Outcome::Unanswered))
        .map(|(i, _)| i)
        .collect();
    eprintln!("flash: {} keys unanswered; asking again", unanswered.len());
    let recon = Ctx {
        timeout: Duration::from_secs(30),
        retries: 10,
        replay_fraction: 0.0,
        redeem_fraction: 0.0,
        fanout: 1,
        api: api.clone(),
        campaign: campaign.clone(),
        run: ctx.run.clone(),
        users: ctx.users,
        start: ctx.start,
    };
    for i in &unanswered {
        let again = one(&recon, *i as u64, Instant::now()).await;
        runs[*i].outcome = again.outcome;
        runs[*i].granted_at_ms = again.granted_at_ms;
    }
    // Likewise every redemption left unanswered, with its own key.
    for (i, run) in runs.iter_mut().enumerate() {
        if let (Some(Outcome::Unanswered), Some(code)) =
            (&run.redemption, run.redeemed_code.clone())
        {
            let token = api.token(&format!("{}-u{}", recon.run, i as u64 % recon.users));
            let again = redeem(&recon, i as u64, &token, &code, run).await;
            run.redemption = Some(again);
        }
    }

    let mut report = audit(
        &args,
        &api,
        &campaign,
        &runs,
        unanswered.len() as u64,
        elapsed,
    )
    .await?;
    report.readyz_unready_s = readyz_unready_s;
    write(&args.out, &report)?;
    if let Some(path) = &args.answers {
        let mut grants: Vec<(u64, Uuid)> = runs
            .iter()
            .filter_map(|r| match (&r.outcome, r.granted_at_ms) {
                (Outcome::Granted { voucher }, Some(at)) => Some((start_unix_ms + at, *voucher)),
                _ => None,
            })
            .collect();
        grants.sort();
        let lines: String = grants.iter().map(|(t, v)| format!("{t} {v}\n")).collect();
        std::fs::write(path, lines)?;
    }
    println!("{}", markdown(&report));
    anyhow::ensure!(
        report.audit_ok,
        "AUDIT FAILED: see {}.md",
        args.out.display()
    );
    Ok(())
}

/// Records when (ms since `start`) the first instance's `/readyz` did not answer 200.
async fn poll_readyz(api: Api, start: Instant, unready: Arc<std::sync::Mutex<Vec<u64>>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let ok = api
            .http
            .get(format!("{}/readyz", api.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            unready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(start.elapsed().as_millis() as u64);
        }
    }
}

/// Arrival time of grab `i` (the inverse of `due`).
pub(crate) fn arrival_time(i: u64, peak: f64, ramp: f64) -> f64 {
    let n = i as f64;
    let at_ramp_end = peak * ramp / 2.0;
    if ramp > 0.0 && n < at_ramp_end {
        (2.0 * ramp * n / peak).sqrt()
    } else {
        ramp + (n - at_ramp_end) / peak
    }
}

async fn audit(
    args: &Args,
    api: &Api,
    campaign: &str,
    runs: &[KeyRun],
    unanswered_before: u64,
    elapsed: f64,
) -> anyhow::Result<FlashReport> {
    let db = sqlx::PgPool::connect(&args.database_url).await?;
    let CampaignAudit {
        checks,
        outcomes,
        redemptions,
        faults,
        fault_window_s,
        replay_checks,
        granted,
        ..
    } = audit_campaign(
        &db,
        api,
        campaign,
        args.per_user_limit,
        args.redeem_fraction > 0.0,
        runs,
    )
    .await?;

    let samples: Vec<Sample> = runs
        .iter()
        .flat_map(|r| r.samples.iter().copied())
        .collect();
    let mut h = report::histogram();
    for s in &samples {
        let _ = h.record(s.latency_us.max(1));
    }
    let attempts: u64 = runs.iter().map(|r| u64::from(r.attempts)).sum();
    Ok(FlashReport {
        label: args.label.clone(),
        injected: args.injected.clone(),
        readyz_unready_s: None,
        machine: report::machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        campaign: campaign.to_string(),
        grabs: args.grabs,
        users: args.users.unwrap_or(args.grabs),
        stock: args.stock,
        per_user_limit: args.per_user_limit,
        peak_rate: args.rate,
        duration_s: (elapsed * 100.0).round() / 100.0,
        responses_per_s: (samples.len() as f64 / elapsed).round(),
        grants_per_s: (granted as f64 / elapsed).round(),
        attempts,
        // Every key's first grab, and every redemption's first attempt, are not retries.
        retries: attempts
            - runs.len() as u64 * args.fanout.max(1) as u64
            - runs.iter().filter(|r| r.redemption.is_some()).count() as u64,
        unanswered_before_reconcile: unanswered_before,
        latency: report::latency(&h),
        outcomes,
        redemptions,
        faults,
        fault_window_s,
        replay_checks,
        audit_ok: checks.iter().all(|c| c.ok),
        checks,
        timeline: report::timeline(&samples),
    })
}

/// One campaign's audit: what the clients were told (`runs`: every key sent to it)
/// against the rows in Postgres, and the service's own audit endpoint.
pub(crate) struct CampaignAudit {
    pub checks: Vec<Check>,
    pub outcomes: HashMap<String, u64>,
    pub redemptions: HashMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    pub fault_window_s: Option<(f64, f64)>,
    pub replay_checks: u64,
    /// Keys answered 201.
    pub granted: u64,
    /// The campaign's counters from the admin API.
    pub issued: i64,
    pub total_stock: i64,
}

pub(crate) async fn audit_campaign(
    db: &sqlx::PgPool,
    api: &Api,
    campaign: &str,
    per_user_limit: i64,
    check_redemptions: bool,
    runs: &[KeyRun],
) -> anyhow::Result<CampaignAudit> {
    let cid: Uuid = campaign.parse()?;
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, user_id FROM vouchers WHERE campaign_id = $1")
            .bind(cid)
            .fetch_all(db)
            .await?;
    let in_db: HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
    let mut per_user: HashMap<&str, i64> = HashMap::new();
    for (_, u) in &rows {
        *per_user.entry(u.as_str()).or_default() += 1;
    }
    let over_limit = per_user.values().filter(|n| **n > per_user_limit).count();

    let mut outcomes: HashMap<String, u64> = HashMap::new();
    let mut told: Vec<Uuid> = Vec::new();
    for r in runs {
        let name = match &r.outcome {
            Outcome::Granted { voucher } => {
                told.push(*voucher);
                "granted".to_string()
            }
            Outcome::Refused(code) => code.clone(),
            Outcome::Unanswered => "unanswered".to_string(),
        };
        *outcomes.entry(name).or_default() += 1;
    }
    let told_set: HashSet<Uuid> = told.iter().copied().collect();
    let replay_checks = runs.iter().filter(|r| r.replay_checked).count() as u64;
    let replay_mismatches = runs.iter().filter(|r| r.replay_mismatch).count();
    let c = api
        .admin_get(&format!("/v1/admin/campaigns/{campaign}"))
        .await?;
    let (total, issued) = (
        c["total_stock"].as_i64().unwrap_or(-1),
        c["issued"].as_i64().unwrap_or(-1),
    );
    let audit = api
        .admin_get(&format!("/v1/admin/campaigns/{campaign}/audit"))
        .await?;

    // Redemptions: what the clients were told against the rows.
    let redeemed_rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT r.id, r.voucher_id, r.status FROM redemptions r
         JOIN vouchers v ON v.id = r.voucher_id WHERE v.campaign_id = $1",
    )
    .bind(cid)
    .fetch_all(db)
    .await?;
    let mut redemptions: HashMap<String, u64> = HashMap::new();
    let mut told_r: HashSet<Uuid> = HashSet::new();
    for r in runs {
        let name = match &r.redemption {
            None => continue,
            Some(Outcome::Granted { voucher }) => {
                told_r.insert(*voucher);
                "redeemed".to_string()
            }
            Some(Outcome::Refused(code)) => code.clone(),
            Some(Outcome::Unanswered) => "unanswered".to_string(),
        };
        *redemptions.entry(name).or_default() += 1;
    }
    let live: HashSet<Uuid> = redeemed_rows
        .iter()
        .filter(|r| r.2 == "active")
        .map(|r| r.0)
        .collect();
    let all_r: HashSet<Uuid> = redeemed_rows.iter().map(|r| r.0).collect();
    let mut per_voucher: HashMap<Uuid, u32> = HashMap::new();
    for r in &redeemed_rows {
        *per_voucher.entry(r.1).or_default() += 1;
    }
    let doubly = per_voucher.values().filter(|n| **n > 1).count();

    // Faults: attempts without a usable answer, when they happened, and how.
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut missing_retry_after = 0u64;
    for s in runs.iter().flat_map(|r| r.samples.iter()) {
        missing_retry_after += u64::from(s.missing_retry_after);
        if let Some(status) = s.fault {
            let name = match status {
                0 => "no answer (timeout or connection)".to_string(),
                409 => "409 idempotency_key_in_use".to_string(),
                other => other.to_string(),
            };
            *faults.entry(name).or_default() += 1;
            first = first.min(s.at_ms);
            last = last.max(s.at_ms);
        }
    }
    let fault_window_s = (first <= last).then(|| (first as f64 / 1000.0, last as f64 / 1000.0));
    let server_errors: u64 = faults
        .iter()
        .filter(|(k, _)| k.starts_with('5') && k.as_str() != "503")
        .map(|(_, v)| v)
        .sum();

    let check = |name: &str, ok, detail: String| Check {
        name: name.to_string(),
        ok,
        detail,
    };
    let mut checks = vec![
        check(
            "issued_equals_201s",
            in_db.len() == told.len() && issued == told.len() as i64,
            format!(
                "{} voucher rows, issued counter {issued}, {} keys answered 201",
                in_db.len(),
                told.len()
            ),
        ),
        check(
            "acknowledged_vouchers_exist",
            told_set == in_db,
            format!(
                "{} acknowledged vouchers missing, {} vouchers nobody was told of",
                told_set.difference(&in_db).count(),
                in_db.difference(&told_set).count()
            ),
        ),
        check(
            "one_voucher_per_key",
            told_set.len() == told.len(),
            format!("{} keys, {} distinct vouchers", told.len(), told_set.len()),
        ),
        check(
            "never_above_stock",
            issued <= total && in_db.len() as i64 <= total,
            format!("issued {issued} of stock {total}"),
        ),
        check(
            "per_user_limit",
            over_limit == 0,
            format!("{over_limit} users above {}", per_user_limit),
        ),
        check(
            "replays_identical",
            replay_mismatches == 0,
            format!(
                "{replay_mismatches} of {replay_checks} replays differed from the first answer"
            ),
        ),
        check(
            "every_key_answered",
            !outcomes.contains_key("unanswered"),
            format!(
                "{} keys still unanswered after reconciliation",
                outcomes.get("unanswered").unwrap_or(&0)
            ),
        ),
        check(
            "audit_endpoint",
            audit["ok"] == true,
            audit["checks"].to_string(),
        ),
        check(
            "no_500s",
            server_errors == 0,
            format!("{server_errors} answers were 5xx other than 503"),
        ),
        check(
            "retry_after_on_429_and_503",
            missing_retry_after == 0,
            format!("{missing_retry_after} 429/503 answers without Retry-After"),
        ),
    ];
    if check_redemptions {
        let refused: u64 = redemptions
            .iter()
            .filter(|(k, _)| k.as_str() != "redeemed")
            .map(|(_, v)| v)
            .sum();
        checks.extend([
            check(
                "acknowledged_redemptions_exist",
                told_r.is_subset(&live),
                format!(
                    "{} acknowledged redemptions, {} missing or not active",
                    told_r.len(),
                    told_r.difference(&live).count()
                ),
            ),
            check(
                "no_unacknowledged_redemptions",
                all_r.is_subset(&told_r),
                format!(
                    "{} redemption rows nobody was told of",
                    all_r.difference(&told_r).count()
                ),
            ),
            check(
                "one_redemption_per_voucher",
                doubly == 0,
                format!("{doubly} vouchers with more than one redemption"),
            ),
            check(
                "every_redemption_key_redeemed_once",
                refused == 0,
                format!("{refused} redemption keys refused or unanswered (each voucher is redeemed once, by one key)"),
            ),
        ]);
    }
    Ok(CampaignAudit {
        checks,
        outcomes,
        redemptions,
        faults,
        fault_window_s,
        replay_checks,
        granted: told.len() as u64,
        issued,
        total_stock: total,
    })
}

fn markdown(r: &FlashReport) -> String {
    let mut outcomes: Vec<_> = r.outcomes.iter().collect();
    outcomes.sort();
    let mut s = format!(
        "## {}: {} grabs, {} users, stock {}\n\nInjected: {}.\nMachine: {}.\nCommand: `{}`\n\n\
         | figure | value |\n|---|---:|\n\
         | duration | {:.1} s |\n| responses/s | {} |\n| grants/s | {} |\n\
         | attempts (incl. {} retries) | {} |\n| unanswered before reconciliation | {} |\n\
         | latency p50 / p90 / p99 / max | {} / {} / {} / {} ms |\n\n| outcome | keys |\n|---|---:|\n",
        r.label,
        r.grabs,
        r.users,
        r.stock,
        r.injected,
        r.machine,
        r.command,
        r.duration_s,
        r.responses_per_s,
        r.grants_per_s,
        r.retries,
        r.attempts,
        r.unanswered_before_reconcile,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
    );
    for (k, v) in outcomes {
        s += &format!("| {k} | {v} |\n");
    }
    let mut redemptions: Vec<_> = r.redemptions.iter().collect();
    redemptions.sort();
    for (k, v) in redemptions {
        s += &format!("| redemption: {k} | {v} |\n");
    }
    s += "\n| attempts without a usable answer | count |\n|---|---:|\n";
    if r.faults.is_empty() {
        s += "| none | 0 |\n";
    }
    for (k, v) in &r.faults {
        s += &format!("| {k} | {v} |\n");
    }
    if let Some((a, b)) = r.fault_window_s {
        s += &format!(
            "\nFaults seen from {a:.1} s to {b:.1} s after the start ({:.1} s).\n",
            b - a
        );
    }
    s += &format!(
        "\n**Audit: {}**\n\n| check | ok | detail |\n|---|---|---|\n",
        if r.audit_ok { "PASSED" } else { "FAILED" }
    );
    for c in &r.checks {
        let detail = if c.name == "audit_endpoint" {
            "GET /v1/admin/campaigns/{id}/audit".to_string()
        } else {
            c.detail.clone()
        };
        s += &format!(
            "| {} | {} | {} |\n",
            c.name,
            if c.ok { "yes" } else { "**NO**" },
            detail
        );
    }
    s
}

fn write(out: &std::path::Path, r: &FlashReport) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out.with_extension("md"), markdown(r))?;
    std::fs::write(out.with_extension("json"), serde_json::to_vec_pretty(r)?)?;
    report::chart(&out.with_extension("svg"), "flash sale", &r.timeline)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_schedule_inverts_the_ramp() {
        for i in [0u64, 1, 10, 7_499, 7_500, 20_000] {
            let t = arrival_time(i, 5000.0, 3.0);
            assert!(due(t + 1e-6, 5000.0, 3.0) >= i, "{i}");
        }
        assert_eq!(due(3.0, 5000.0, 3.0), 7_500);
        assert_eq!(due(4.0, 5000.0, 3.0), 12_500);
    }
}
