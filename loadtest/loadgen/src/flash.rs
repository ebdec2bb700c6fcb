//! A flash sale at an open arrival rate: the rate ramps from zero to its peak
//! whatever the service answers (latency is counted from when each grab was due),
//! clients time out and retry with the same key, and every key left unanswered is
//! retried until it has an answer. Then the audit compares what the clients were told
//! with what Postgres holds.

use std::{
    collections::{HashMap, HashSet},
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
    /// Use this campaign instead of creating one.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Report files are written as <out>.md, <out>.json and <out>.svg.
    #[arg(long, default_value = "loadtest/results/flash")]
    pub out: PathBuf,
}

/// What the clients were finally told for one key.
#[derive(Debug, Clone)]
enum Outcome {
    Granted { voucher: Uuid },
    Refused(String),
    Unanswered,
}

struct KeyRun {
    outcome: Outcome,
    samples: Vec<Sample>,
    attempts: u32,
    replay_checked: bool,
    replay_mismatch: bool,
}

struct Ctx {
    api: Api,
    campaign: String,
    run: String,
    users: u64,
    timeout: Duration,
    retries: u32,
    replay_fraction: f64,
    start: Instant,
}

fn body_hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn voucher_id(body: &[u8]) -> Option<Uuid> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["voucher"]["id"].as_str()?.parse().ok()
}

/// Arrivals due by `t` seconds: the rate grows linearly to `peak` over `ramp`, then holds.
fn due(t: f64, peak: f64, ramp: f64) -> u64 {
    let n = if ramp <= 0.0 {
        peak * t
    } else if t < ramp {
        peak * t * t / (2.0 * ramp)
    } else {
        peak * ramp / 2.0 + peak * (t - ramp)
    };
    n as u64
}

/// Sends one key until it gets a definitive answer or runs out of retries.
async fn one(ctx: &Ctx, i: u64, due_at: Instant) -> KeyRun {
    let user = i % ctx.users;
    let token = ctx.api.token(&format!("{}-u{user}", ctx.run));
    let key = format!("{}-k{i}", ctx.run);
    let mut samples = Vec::with_capacity(1);
    let mut attempts = 0;
    let mut outcome = Outcome::Unanswered;
    let mut first_body = None;
    for attempt in 0..=ctx.retries {
        let sent = if attempt == 0 { due_at } else { Instant::now() };
        attempts += 1;
        // Each retry goes to the next instance, as a load balancer might send it.
        let reply = ctx
            .api
            .grab_on(
                i as usize + attempt as usize,
                &ctx.campaign,
                &token,
                &key,
                ctx.timeout,
            )
            .await;
        let done = Instant::now();
        let granted = matches!(reply, Reply::Answer { status: 201, .. });
        samples.push(Sample {
            at_ms: done.duration_since(ctx.start).as_millis() as u64,
            latency_us: done.duration_since(sent).as_micros() as u64,
            granted,
        });
        match reply {
            Reply::Answer {
                status: 201, body, ..
            } => {
                if let Some(voucher) = voucher_id(&body) {
                    outcome = Outcome::Granted { voucher };
                    first_body = Some(body);
                } else {
                    outcome = Outcome::Refused("unreadable 201 body".into());
                }
                break;
            }
            Reply::Answer {
                status: 409, code, ..
            } if code == "idempotency_key_in_use" => {}
            // Rate limited: nothing was recorded; send the same key again.
            Reply::Answer { status: 429, .. } => {}
            Reply::Answer { status, code, .. } if status < 500 => {
                outcome = Outcome::Refused(if code.is_empty() {
                    status.to_string()
                } else {
                    code
                });
                break;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
    }
    let mut run = KeyRun {
        outcome,
        samples,
        attempts,
        replay_checked: false,
        replay_mismatch: false,
    };
    if let Some(body) = first_body
        && (i as f64 * ctx.replay_fraction).fract() + ctx.replay_fraction >= 1.0
    {
        run.replay_checked = true;
        // Only an answer can differ: an instance that is down is asked again later
        // (and the next one too), until one answers.
        for attempt in 0..20u32 {
            let n = i as usize + attempt as usize + 1;
            match ctx
                .api
                .grab_on(n, &ctx.campaign, &token, &key, Duration::from_secs(30))
                .await
            {
                Reply::Answer {
                    status, body: b, ..
                } => {
                    run.replay_mismatch = !(status == 201 && body_hash(&b) == body_hash(&body));
                    break;
                }
                Reply::NoAnswer => {
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await
                }
            }
        }
    }
    run
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct FlashReport {
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
        start: Instant::now(),
    });
    eprintln!(
        "flash: {} grabs, {} users, stock {}, peak {}/s, campaign {campaign}",
        args.grabs, ctx.users, args.stock, args.rate
    );

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
        api: api.clone(),
        campaign: campaign.clone(),
        run: ctx.run.clone(),
        users: ctx.users,
        start: ctx.start,
    };
    for i in &unanswered {
        let again = one(&recon, *i as u64, Instant::now()).await;
        runs[*i].outcome = again.outcome;
    }

    let report = audit(
        &args,
        &api,
        &campaign,
        &runs,
        unanswered.len() as u64,
        elapsed,
    )
    .await?;
    write(&args.out, &report)?;
    println!("{}", markdown(&report));
    anyhow::ensure!(
        report.audit_ok,
        "AUDIT FAILED: see {}.md",
        args.out.display()
    );
    Ok(())
}

/// Arrival time of grab `i` (the inverse of `due`).
fn arrival_time(i: u64, peak: f64, ramp: f64) -> f64 {
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
    let cid: Uuid = campaign.parse()?;
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, user_id FROM vouchers WHERE campaign_id = $1")
            .bind(cid)
            .fetch_all(&db)
            .await?;
    let in_db: HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
    let mut per_user: HashMap<&str, i64> = HashMap::new();
    for (_, u) in &rows {
        *per_user.entry(u.as_str()).or_default() += 1;
    }
    let over_limit = per_user
        .values()
        .filter(|n| **n > args.per_user_limit)
        .count();

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

    let check = |name, ok, detail: String| Check { name, ok, detail };
    let checks = vec![
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
            format!("{over_limit} users above {}", args.per_user_limit),
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
    ];

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
        grants_per_s: (told.len() as f64 / elapsed).round(),
        attempts,
        retries: attempts - runs.len() as u64,
        unanswered_before_reconcile: unanswered_before,
        latency: report::latency(&h),
        outcomes,
        replay_checks,
        audit_ok: checks.iter().all(|c| c.ok),
        checks,
        timeline: report::timeline(&samples),
    })
}

fn markdown(r: &FlashReport) -> String {
    let mut outcomes: Vec<_> = r.outcomes.iter().collect();
    outcomes.sort();
    let mut s = format!(
        "## Flash sale: {} grabs, {} users, stock {}\n\nMachine: {}.\nCommand: `{}`\n\n\
         | figure | value |\n|---|---:|\n\
         | duration | {:.1} s |\n| responses/s | {} |\n| grants/s | {} |\n\
         | attempts (incl. {} retries) | {} |\n| unanswered before reconciliation | {} |\n\
         | latency p50 / p90 / p99 / max | {} / {} / {} / {} ms |\n\n| outcome | keys |\n|---|---:|\n",
        r.grabs,
        r.users,
        r.stock,
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
