//! Side-by-side rates of the hot paths in one run on one machine: the `/healthz`
//! ceiling first, then each path as a rate and as a ratio to that ceiling, so noise
//! from a shared machine cancels out of the comparison.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    api::{Api, Reply, Target},
    report::{self, Latency},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// A second voucherd to measure grants on (e.g. one started with GRAB_MODE=single).
    #[arg(long)]
    pub compare_url: Option<String>,
    /// Label for the `--compare-url` grants row.
    #[arg(long, default_value = "grants, second instance")]
    pub compare_label: String,
    /// Label for the main grants row.
    #[arg(long, default_value = "grants, one hot campaign")]
    pub grants_label: String,
    /// Concurrent connections per path.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measuring time per path (after a 1 s warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Report files are written as <out>.md and <out>.json.
    #[arg(long, default_value = "loadtest/results/bench")]
    pub out: PathBuf,
    /// Stock of the hot campaign (must outlast the run).
    #[arg(long, default_value_t = 10_000_000)]
    pub stock: i64,
    /// voucherd's process id (for `--url`), to report its CPU time per request.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The `--compare-url` instance's process id.
    #[arg(long)]
    pub compare_pid: Option<u32>,
    /// Postgres, read for transactions per request (`pg_stat_database`).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

/// CPU time (user + system) of a process, in microseconds.
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000) // USER_HZ is 100 on Linux
}

/// CPU time of every Postgres server process, in microseconds.
fn postgres_cpu_us() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains("(postgres)"))
        })
        .filter_map(cpu_us)
        .sum()
}

/// The machine's CPU ticks since boot: (all, idle including I/O wait, stolen by the
/// hypervisor), from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let all = fields.iter().take(8).sum();
    Some((all, fields.get(3)? + fields.get(4)?, *fields.get(7)?))
}

/// Committed transactions in the whole cluster so far.
async fn commits(db: &Option<sqlx::PgPool>) -> Option<i64> {
    let db = db.as_ref()?;
    sqlx::query_scalar("SELECT sum(xact_commit)::bigint FROM pg_stat_database")
        .fetch_one(db)
        .await
        .ok()
}

#[derive(Serialize, Clone)]
struct Row {
    path: String,
    requests_per_s: f64,
    ratio_to_healthz: f64,
    latency: Latency,
    /// Answers other than the path's expected status.
    unexpected: u64,
    requests: u64,
    /// voucherd CPU per request, when its pid was given.
    server_cpu_us: Option<f64>,
    /// CPU of all Postgres processes per request.
    postgres_cpu_us: Option<f64>,
    /// Postgres commits per request.
    transactions: Option<f64>,
    /// The load generator's own CPU per request: what the client costs the machine.
    loadgen_cpu_us: Option<f64>,
    /// Share of the machine's CPU left idle, and stolen by the hypervisor, while
    /// the path was measured (a busy neighbour shows as steal).
    idle_pct: Option<f64>,
    steal_pct: Option<f64>,
}

#[derive(Serialize)]
struct Bench {
    machine: String,
    command: String,
    connections: usize,
    seconds_per_path: f64,
    rows: Vec<Row>,
}

/// What one request of a path is: it returns whether the answer was the expected one.
type Step = Arc<dyn Fn(Api, u64) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

async fn measure(
    api: &Api,
    connections: usize,
    duration: Duration,
    step: Step,
) -> (u64, u64, hdrhistogram::Histogram<u64>) {
    let counter = Arc::new(AtomicU64::new(0));
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (api, step, counter) = (api.clone(), step.clone(), counter.clone());
            tokio::spawn(async move {
                let mut h = report::histogram();
                let (mut n, mut bad) = (0u64, 0u64);
                loop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    if t0 >= stop_at {
                        break;
                    }
                    let ok = step(api.clone(), i).await;
                    if t0 >= warm_until {
                        let _ = h.record((t0.elapsed().as_micros() as u64).max(1));
                        n += 1;
                        bad += u64::from(!ok);
                    }
                }
                (n, bad, h)
            })
        })
        .collect();
    let mut total = report::histogram();
    let (mut n, mut bad) = (0, 0);
    for w in workers {
        if let Ok((wn, wb, h)) = w.await {
            n += wn;
            bad += wb;
            let _ = total.add(&h);
        }
    }
    (n, bad, total)
}

/// Users each grab path cycles through. Their tokens are signed before measuring,
/// as real clients sign in once and reuse the token: signing one per request would
/// spend the shared machine's CPU on the client, not the service.
const USERS: u64 = 250_000;

fn grab_step(
    api: &Api,
    campaign: String,
    run: String,
    user_of: fn(&str, u64) -> String,
    key_of: fn(&str, u64) -> String,
    want: u16,
    want_code: &'static str,
) -> Step {
    let campaign = Arc::new(campaign);
    let run = Arc::new(run);
    let tokens: Arc<Vec<String>> =
        Arc::new((0..USERS).map(|j| api.token(&user_of(&run, j))).collect());
    Arc::new(move |api: Api, i: u64| {
        let (campaign, run, tokens) = (campaign.clone(), run.clone(), tokens.clone());
        Box::pin(async move {
            let token = &tokens[(i % USERS) as usize];
            match api
                .grab(&campaign, token, &key_of(&run, i), Duration::from_secs(30))
                .await
            {
                Reply::Answer { status, code, .. } => status == want && code == want_code,
                Reply::NoAnswer => false,
            }
        })
    })
}

fn get_step(path: String, token: Option<String>) -> Step {
    let path = Arc::new(path);
    let token = Arc::new(token);
    Arc::new(move |api: Api, _| {
        let (path, token) = (path.clone(), token.clone());
        Box::pin(async move {
            let mut req = api.http.get(format!("{}{path}", api.base));
            if let Some(t) = token.as_ref() {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        })
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let api = Api::new(&args.target, args.connections)?;
    let run = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Fixtures: a hot campaign with stock to spare, a sold-out one, a granted key to
    // replay, and a wallet of five vouchers.
    let hot = api.create_campaign(args.stock, 5).await?;
    let sold_out = api.create_campaign(1, 1).await?;
    let holder = format!("{run}-holder");
    let holder_token = api.token(&holder);
    let taken = api
        .grab(
            &sold_out,
            &holder_token,
            &format!("{run}-last"),
            Duration::from_secs(10),
        )
        .await;
    anyhow::ensure!(
        matches!(taken, Reply::Answer { status: 201, .. }),
        "could not sell out the fixture campaign"
    );
    for k in 0..5 {
        let r = api
            .grab(
                &hot,
                &holder_token,
                &format!("{run}-wallet-{k}"),
                Duration::from_secs(10),
            )
            .await;
        anyhow::ensure!(
            matches!(r, Reply::Answer { status: 201, .. }),
            "could not fill the fixture wallet"
        );
    }

    let mut paths: Vec<(String, Api, Step)> = vec![
        (
            "`GET /healthz` (ceiling)".into(),
            api.clone(),
            get_step("/healthz".into(), None),
        ),
        (
            args.grants_label.clone(),
            api.clone(),
            grab_step(
                &api,
                hot.clone(),
                run.clone(),
                |r, i| format!("{r}-g{i}"),
                |r, i| format!("{r}-gk{i}"),
                201,
                "",
            ),
        ),
    ];
    if let Some(url) = &args.compare_url {
        let other = Api::new(
            &Target {
                url: url.clone(),
                ..args.target.clone()
            },
            args.connections,
        )?;
        let other_hot = other.create_campaign(args.stock, 5).await?;
        paths.push((
            args.compare_label.clone(),
            other.clone(),
            grab_step(
                &other,
                other_hot,
                run.clone(),
                |r, i| format!("{r}-s{i}"),
                |r, i| format!("{r}-sk{i}"),
                201,
                "",
            ),
        ));
    }
    paths.extend([
        (
            "refusals, sold-out campaign".to_string(),
            api.clone(),
            grab_step(
                &api,
                sold_out.clone(),
                run.clone(),
                |r, i| format!("{r}-late{i}"),
                |r, i| format!("{r}-lk{i}"),
                409,
                "sold_out",
            ),
        ),
        (
            "idempotent replays".to_string(),
            api.clone(),
            grab_step(
                &api,
                hot.clone(),
                run.clone(),
                |r, _| format!("{r}-holder"),
                |r, _| format!("{r}-wallet-0"),
                201,
                "",
            ),
        ),
        (
            "wallet reads (5 vouchers)".to_string(),
            api.clone(),
            get_step("/v1/me/vouchers".into(), Some(holder_token.clone())),
        ),
        (
            "public campaign reads".to_string(),
            api.clone(),
            get_step(format!("/v1/campaigns/{hot}"), None),
        ),
    ]);

    let db = match &args.database_url {
        Some(url) => Some(sqlx::PgPool::connect(url).await?),
        None => None,
    };
    let mut rows: Vec<Row> = Vec::new();
    for (name, target, step) in paths {
        eprintln!("bench: {name} ...");
        let pid = if args.compare_url.is_some() && name == args.compare_label {
            args.compare_pid
        } else {
            args.server_pid
        };
        let cpu0 = pid.and_then(cpu_us);
        let pg0 = postgres_cpu_us();
        let tx0 = commits(&db).await;
        let me0 = cpu_us(std::process::id());
        let ticks0 = machine_ticks();
        let (n, bad, h) = measure(&target, args.connections, args.duration, step).await;
        let per = |d: Option<f64>| d.map(|d| (d / (n.max(1) as f64) * 100.0).round() / 100.0);
        let server_cpu_us = per(pid
            .and_then(cpu_us)
            .zip(cpu0)
            .map(|(a, b)| a.saturating_sub(b) as f64));
        let pg_cpu = per(Some(postgres_cpu_us().saturating_sub(pg0) as f64));
        let transactions = per(commits(&db).await.zip(tx0).map(|(a, b)| (a - b) as f64));
        let loadgen_cpu_us = per(cpu_us(std::process::id())
            .zip(me0)
            .map(|(a, b)| a.saturating_sub(b) as f64));
        let share = |f: fn((u64, u64, u64)) -> u64| {
            machine_ticks().zip(ticks0).and_then(|(a, b)| {
                let all = a.0.checked_sub(b.0).filter(|d| *d > 0)?;
                let part = f(a).saturating_sub(f(b));
                Some((part as f64 / all as f64 * 1000.0).round() / 10.0)
            })
        };
        let (idle_pct, steal_pct) = (share(|t| t.1), share(|t| t.2));
        let rate = (n as f64 / args.duration.as_secs_f64()).round();
        let ceiling = rows.first().map_or(rate, |r| r.requests_per_s).max(1.0);
        rows.push(Row {
            path: name,
            requests_per_s: rate,
            ratio_to_healthz: (rate / ceiling * 100.0).round() / 100.0,
            latency: report::latency(&h),
            unexpected: bad,
            requests: n,
            server_cpu_us,
            postgres_cpu_us: pg_cpu,
            transactions,
            loadgen_cpu_us,
            idle_pct,
            steal_pct,
        });
    }
    let audit = api
        .admin_get(&format!("/v1/admin/campaigns/{hot}/audit"))
        .await?;
    anyhow::ensure!(
        audit["ok"] == true,
        "the hot campaign's audit failed: {audit}"
    );

    let bench = Bench {
        machine: report::machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        connections: args.connections,
        seconds_per_path: args.duration.as_secs_f64(),
        rows,
    };
    let md = markdown(&bench);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(args.out.with_extension("md"), &md)?;
    std::fs::write(
        args.out.with_extension("json"),
        serde_json::to_vec_pretty(&bench)?,
    )?;
    println!("{md}");
    Ok(())
}

fn markdown(b: &Bench) -> String {
    let mut s = format!(
        "Measured {} on {}; {} connections, {} s per path after a 1 s warm-up, all paths in one run.\n\n\
         | path | requests/s | ratio to /healthz | p50 ms | p99 ms | unexpected answers | voucherd CPU µs/req | Postgres CPU µs/req | Postgres commits/req | loadgen CPU µs/req | machine idle % | steal % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        b.machine,
        b.connections,
        b.seconds_per_path
    );
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v}"));
    for r in &b.rows {
        s += &format!(
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.path,
            r.requests_per_s,
            r.ratio_to_healthz,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.unexpected,
            opt(r.server_cpu_us),
            opt(r.postgres_cpu_us),
            opt(r.transactions),
            opt(r.loadgen_cpu_us),
            opt(r.idle_pct),
            opt(r.steal_pct)
        );
    }
    s
}
