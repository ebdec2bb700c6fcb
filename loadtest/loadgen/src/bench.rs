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
    /// Measuring time per path and round (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Rounds: in each, every path is measured right after a `/healthz` ceiling.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
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
    /// Campaigns live at once in the many-campaigns grants path.
    #[arg(long, default_value_t = 50)]
    pub campaigns: usize,
    /// The wrk binary: when given, grants on the hot campaign are also driven by wrk
    /// (`loadtest/wrk/grab.lua`), against a ceiling measured through the same script.
    #[arg(long)]
    pub wrk: Option<PathBuf>,
    /// Only these paths (comma-separated ids: grants, single, campaigns, wrk,
    /// refusals, replays, wallet, public); all of them when absent.
    #[arg(long, value_delimiter = ',')]
    pub paths: Option<Vec<String>>,
}

/// CPU time (user + system) of a process, in microseconds.
fn cpu_us(pid: u32) -> Option<u64> {
    proc_ticks(pid, 11)
}

/// CPU time of this process and of its children that have exited (wrk), in
/// microseconds.
fn own_cpu_us() -> Option<u64> {
    let me = std::process::id();
    Some(proc_ticks(me, 11)? + proc_ticks(me, 13)?)
}

/// Two adjacent tick fields of `/proc/<pid>/stat` (counted after the command name)
/// summed, in microseconds: 11 is user + system time, 13 the same for waited-for
/// children.
fn proc_ticks(pid: u32, first: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 =
        fields.get(first)?.parse::<u64>().ok()? + fields.get(first + 1)?.parse::<u64>().ok()?;
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

/// The cluster's counters so far: committed transactions, and the WAL written
/// (bytes and records, `pg_stat_wal`).
async fn pg_counters(db: &Option<sqlx::PgPool>) -> Option<[i64; 3]> {
    let db = db.as_ref()?;
    let (commits, wal_bytes, wal_records): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(xact_commit) FROM pg_stat_database)::bigint, \
                wal_bytes::bigint, wal_records::bigint FROM pg_stat_wal",
    )
    .fetch_one(db)
    .await
    .ok()?;
    Some([commits, wal_bytes, wal_records])
}

#[derive(Serialize, Clone)]
struct Row {
    path: String,
    requests_per_s: f64,
    /// The median over rounds of this path's rate over the ceiling measured just
    /// before it.
    ratio_to_healthz: f64,
    ratio_per_round: Vec<f64>,
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
    /// WAL bytes and records Postgres wrote per request.
    wal_bytes: Option<f64>,
    wal_records: Option<f64>,
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
    rounds: usize,
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
    // Request numbers run on across measurements, so a path measured again in a
    // later round sends new idempotency keys rather than replaying the last round's.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (api, step) = (api.clone(), step.clone());
            tokio::spawn(async move {
                let mut h = report::histogram();
                let (mut n, mut bad) = (0u64, 0u64);
                loop {
                    let i = NEXT.fetch_add(1, Ordering::Relaxed);
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
    campaigns: Vec<String>,
    run: String,
    user_of: fn(&str, u64) -> String,
    key_of: fn(&str, u64) -> String,
    want: u16,
    want_code: &'static str,
) -> Step {
    let campaigns = Arc::new(campaigns);
    let run = Arc::new(run);
    let tokens: Arc<Vec<String>> =
        Arc::new((0..USERS).map(|j| api.token(&user_of(&run, j))).collect());
    Arc::new(move |api: Api, i: u64| {
        let (campaigns, run, tokens) = (campaigns.clone(), run.clone(), tokens.clone());
        Box::pin(async move {
            let token = &tokens[(i % USERS) as usize];
            let campaign = &campaigns[(i % campaigns.len() as u64) as usize];
            match api
                .grab(campaign, token, &key_of(&run, i), Duration::from_secs(30))
                .await
            {
                Reply::Answer { status, code, .. } => status == want && code == want_code,
                Reply::NoAnswer => false,
            }
        })
    })
}

/// wrk driving one path through `loadtest/wrk/grab.lua`, which builds each request
/// (a user's token and a fresh key) the same way for the grab and for its ceiling.
struct Wrk {
    bin: PathBuf,
    url: String,
    tokens: PathBuf,
    campaign: String,
    run: String,
    connections: usize,
    /// Runs so far: each run's keys carry its number, so no run replays another's.
    runs: AtomicU64,
    /// Requests sent by the runs so far: the next run starts at the user after the
    /// last one served, so users reach their limit only once every user has.
    sent: AtomicU64,
}

/// What one wrk run reported (its `done` line).
struct WrkReport {
    requests: u64,
    seconds: f64,
    bad: u64,
    latency: Latency,
}

impl Wrk {
    async fn run(&self, mode: &str, duration: Duration) -> anyhow::Result<WrkReport> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let out = tokio::process::Command::new(&self.bin)
            .args(["-t2", &format!("-c{}", self.connections)])
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .args([
                "--timeout",
                "30s",
                "-s",
                "loadtest/wrk/grab.lua",
                &self.url,
                "--",
                mode,
            ])
            .arg(&self.tokens)
            .args([&self.campaign, &format!("{}-w{n}", self.run), "2"])
            .arg(self.sent.load(Ordering::Relaxed).to_string())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("WRK "))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "wrk reported nothing: {stdout} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse())
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(f.len() == 8, "wrk's report line: {line}");
        self.sent.fetch_add(f[0], Ordering::Relaxed);
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        Ok(WrkReport {
            requests: f[0],
            seconds: f[1] as f64 / 1e6,
            bad: f[2] + f[3],
            latency: Latency {
                p50_ms: ms(f[4]),
                p90_ms: ms(f[5]),
                p99_ms: ms(f[6]),
                max_ms: ms(f[7]),
            },
        })
    }
}

/// How a path's requests are sent.
#[derive(Clone)]
enum Driver {
    Loadgen(Api, Step),
    /// wrk, in the script's mode `grab` or `healthz`.
    Wrk(Arc<Wrk>, &'static str),
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

/// One measurement of one path: what was answered and what it cost.
struct Sample {
    n: u64,
    bad: u64,
    h: hdrhistogram::Histogram<u64>,
    rate: f64,
    server_cpu_us: Option<u64>,
    postgres_cpu_us: u64,
    /// Changes of `pg_counters` over the sample.
    pg: Option<[i64; 3]>,
    loadgen_cpu_us: Option<u64>,
    /// Machine CPU ticks: (all, idle, steal).
    ticks: Option<(u64, u64, u64)>,
    /// wrk's own percentiles (its runs carry no histogram to merge).
    latency: Option<Latency>,
}

async fn sample(
    args: &Args,
    driver: &Driver,
    pid: Option<u32>,
    db: &Option<sqlx::PgPool>,
) -> anyhow::Result<Sample> {
    if let Driver::Wrk(wrk, mode) = driver {
        // wrk has no warm-up of its own: a short run first, not counted.
        wrk.run(mode, Duration::from_secs(1)).await?;
    }
    let (cpu0, pg0, tx0, me0, ticks0) = (
        pid.and_then(cpu_us),
        postgres_cpu_us(),
        pg_counters(db).await,
        own_cpu_us(),
        machine_ticks(),
    );
    let (n, bad, h, latency, seconds) = match driver {
        Driver::Loadgen(api, step) => {
            let (n, bad, h) = measure(api, args.connections, args.duration, step.clone()).await;
            (n, bad, h, None, args.duration.as_secs_f64())
        }
        Driver::Wrk(wrk, mode) => {
            let r = wrk.run(mode, args.duration).await?;
            (
                r.requests,
                r.bad,
                report::histogram(),
                Some(r.latency),
                r.seconds,
            )
        }
    };
    let delta = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a.saturating_sub(b));
    Ok(Sample {
        n,
        bad,
        h,
        rate: n as f64 / seconds.max(1e-3),
        server_cpu_us: delta(pid.and_then(cpu_us), cpu0),
        postgres_cpu_us: postgres_cpu_us().saturating_sub(pg0),
        pg: pg_counters(db)
            .await
            .zip(tx0)
            .map(|(a, b)| [a[0] - b[0], a[1] - b[1], a[2] - b[2]]),
        loadgen_cpu_us: delta(own_cpu_us(), me0),
        ticks: machine_ticks().zip(ticks0).map(|(a, b)| {
            (
                a.0.saturating_sub(b.0),
                a.1.saturating_sub(b.1),
                a.2.saturating_sub(b.2),
            )
        }),
        latency,
    })
}

/// A path's samples over all rounds.
#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    ratios: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Tally {
    /// `ratio` is the sample's rate over its ceiling's (none for the ceiling).
    fn add(&mut self, s: &Sample, ratio: Option<f64>) {
        self.samples.push(Sample {
            h: s.h.clone(),
            ticks: s.ticks,
            latency: s.latency.clone(),
            ..*s
        });
        self.ratios.extend(ratio);
    }

    fn row(self, path: String) -> Row {
        let n: u64 = self.samples.iter().map(|s| s.n).sum();
        let mut h = report::histogram();
        for s in &self.samples {
            let _ = h.add(&s.h);
        }
        // Costs are totals over every round divided by every request.
        let per = |v: Option<f64>| v.map(|v| round2(v / n.max(1) as f64));
        let sum = |f: fn(&Sample) -> Option<u64>| -> Option<f64> {
            self.samples
                .iter()
                .map(f)
                .sum::<Option<u64>>()
                .map(|v| v as f64)
        };
        let pg_sum = |i: usize| -> Option<f64> {
            self.samples
                .iter()
                .map(|s| s.pg.map(|c| c[i]))
                .sum::<Option<i64>>()
                .map(|v| v as f64)
        };
        let ticks = self
            .samples
            .iter()
            .map(|s| s.ticks)
            .try_fold((0, 0, 0), |a, t| {
                t.map(|t| (a.0 + t.0, a.1 + t.1, a.2 + t.2))
            });
        let share = |part: fn((u64, u64, u64)) -> u64| {
            ticks
                .filter(|t| t.0 > 0)
                .map(|t| (part(t) as f64 / t.0 as f64 * 1000.0).round() / 10.0)
        };
        let ratios: Vec<f64> = self.ratios.iter().map(|r| round2(*r)).collect();
        Row {
            path,
            requests_per_s: median(self.samples.iter().map(|s| s.rate).collect()).round(),
            ratio_to_healthz: if self.ratios.is_empty() {
                1.0
            } else {
                round2(median(self.ratios.clone()))
            },
            ratio_per_round: ratios,
            latency: if self.samples.iter().any(|s| s.latency.is_some()) {
                // wrk's runs: the median over rounds of each percentile, the max of maxima.
                let of = |f: fn(&Latency) -> f64| {
                    let v = self
                        .samples
                        .iter()
                        .filter_map(|s| s.latency.as_ref().map(f));
                    median(v.collect())
                };
                Latency {
                    p50_ms: of(|l| l.p50_ms),
                    p90_ms: of(|l| l.p90_ms),
                    p99_ms: of(|l| l.p99_ms),
                    max_ms: self
                        .samples
                        .iter()
                        .filter_map(|s| s.latency.as_ref().map(|l| l.max_ms))
                        .fold(0.0, f64::max),
                }
            } else {
                report::latency(&h)
            },
            unexpected: self.samples.iter().map(|s| s.bad).sum(),
            requests: n,
            server_cpu_us: per(sum(|s| s.server_cpu_us)),
            postgres_cpu_us: per(sum(|s| Some(s.postgres_cpu_us))),
            transactions: per(pg_sum(0)),
            wal_bytes: per(pg_sum(1)),
            wal_records: per(pg_sum(2)),
            loadgen_cpu_us: per(sum(|s| s.loadgen_cpu_us)),
            idle_pct: share(|t| t.1),
            steal_pct: share(|t| t.2),
        }
    }
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

    let wanted = |id: &str| {
        args.paths
            .as_ref()
            .is_none_or(|p| p.iter().any(|w| w == id))
    };
    let loadgen_ceiling = Driver::Loadgen(api.clone(), get_step("/healthz".into(), None));
    // (id, row, driver, the ceiling it is measured against, its instance's pid)
    let mut paths: Vec<(&str, String, Driver, Driver, Option<u32>)> = Vec::new();
    let mut add = |id: &'static str, name: String, driver: Driver, ceiling: &Driver| {
        if wanted(id) {
            paths.push((id, name, driver, ceiling.clone(), args.server_pid));
        }
    };
    add(
        "grants",
        args.grants_label.clone(),
        Driver::Loadgen(
            api.clone(),
            grab_step(
                &api,
                vec![hot.clone()],
                run.clone(),
                |r, i| format!("{r}-g{i}"),
                |r, i| format!("{r}-gk{i}"),
                201,
                "",
            ),
        ),
        &loadgen_ceiling,
    );
    if wanted("campaigns") {
        let mut many = Vec::with_capacity(args.campaigns);
        for _ in 0..args.campaigns.max(1) {
            many.push(api.create_campaign(args.stock, 5).await?);
        }
        add(
            "campaigns",
            format!("grants, {} campaigns at once", args.campaigns.max(1)),
            Driver::Loadgen(
                api.clone(),
                grab_step(
                    &api,
                    many,
                    run.clone(),
                    |r, i| format!("{r}-m{i}"),
                    |r, i| format!("{r}-mk{i}"),
                    201,
                    "",
                ),
            ),
            &loadgen_ceiling,
        );
    }
    let mut wrk_ceiling = None;
    if let Some(bin) = args.wrk.clone().filter(|_| wanted("wrk")) {
        let tokens = std::env::temp_dir().join(format!("voucherd-bench-{run}.tokens"));
        let lines: Vec<String> = (0..USERS)
            .map(|j| api.token(&format!("{run}-w{j}")))
            .collect();
        std::fs::write(&tokens, lines.join("\n") + "\n")?;
        let wrk = Arc::new(Wrk {
            bin,
            url: api.base.clone(),
            tokens,
            campaign: hot.clone(),
            run: run.clone(),
            connections: args.connections,
            runs: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let ceiling = Driver::Wrk(wrk.clone(), "healthz");
        add(
            "wrk",
            format!("{}, driven by wrk", args.grants_label),
            Driver::Wrk(wrk, "grab"),
            &ceiling,
        );
        wrk_ceiling = Some(ceiling);
    }
    if let Some(url) = args.compare_url.as_ref().filter(|_| wanted("single")) {
        let other = Api::new(
            &Target {
                url: url.clone(),
                ..args.target.clone()
            },
            args.connections,
        )?;
        let other_hot = other.create_campaign(args.stock, 5).await?;
        paths.push((
            "single",
            args.compare_label.clone(),
            Driver::Loadgen(
                other.clone(),
                grab_step(
                    &other,
                    vec![other_hot],
                    run.clone(),
                    |r, i| format!("{r}-s{i}"),
                    |r, i| format!("{r}-sk{i}"),
                    201,
                    "",
                ),
            ),
            loadgen_ceiling.clone(),
            args.compare_pid,
        ));
    }
    let mut add = |id: &'static str, name: &str, step: Step| {
        if wanted(id) {
            paths.push((
                id,
                name.to_string(),
                Driver::Loadgen(api.clone(), step),
                loadgen_ceiling.clone(),
                args.server_pid,
            ));
        }
    };
    add(
        "refusals",
        "refusals, sold-out campaign",
        grab_step(
            &api,
            vec![sold_out.clone()],
            run.clone(),
            |r, i| format!("{r}-late{i}"),
            |r, i| format!("{r}-lk{i}"),
            409,
            "sold_out",
        ),
    );
    add(
        "replays",
        "idempotent replays",
        grab_step(
            &api,
            vec![hot.clone()],
            run.clone(),
            |r, _| format!("{r}-holder"),
            |r, _| format!("{r}-wallet-0"),
            201,
            "",
        ),
    );
    add(
        "wallet",
        "wallet reads (5 vouchers)",
        get_step("/v1/me/vouchers".into(), Some(holder_token.clone())),
    );
    add(
        "public",
        "public campaign reads",
        get_step(format!("/v1/campaigns/{hot}"), None),
    );

    let db = match &args.database_url {
        Some(url) => Some(sqlx::PgPool::connect(url).await?),
        None => None,
    };
    // Each path is measured right after its own /healthz ceiling (through the same
    // driver), in several rounds: on a shared machine the speed drifts by a third
    // within minutes, so a ratio taken against a ceiling measured minutes earlier says
    // more about the drift than about the path. Each row reports the median over
    // rounds.
    let mut ceiling = Tally::default();
    let mut wrk_ceiling_tally = Tally::default();
    let mut tallies: Vec<Tally> = paths.iter().map(|_| Tally::default()).collect();
    for round in 1..=args.rounds {
        for ((id, name, driver, base_driver, pid), tally) in paths.iter().zip(&mut tallies) {
            eprintln!("bench: round {round} of {}: {name}", args.rounds);
            let base = sample(&args, base_driver, args.server_pid, &db).await?;
            let s = sample(&args, driver, *pid, &db).await?;
            tally.add(&s, Some(s.rate / base.rate.max(1.0)));
            if *id == "wrk" {
                wrk_ceiling_tally.add(&base, None);
            } else {
                ceiling.add(&base, None);
            }
        }
    }
    let mut rows = Vec::new();
    if !ceiling.samples.is_empty() {
        rows.push(ceiling.row("`GET /healthz` (ceiling)".into()));
    }
    if wrk_ceiling.is_some() {
        rows.push(
            wrk_ceiling_tally.row("`GET /healthz` through the wrk script (its ceiling)".into()),
        );
    }
    rows.extend(
        paths
            .into_iter()
            .zip(tallies)
            .map(|((_, name, ..), t)| t.row(name)),
    );
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
        rounds: args.rounds,
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
        "Measured {} on {}; {} connections; {} rounds, in each of which every path is measured for {} s (after a 1 s warm-up) right after a `/healthz` ceiling of its own. Rates and ratios are medians over the rounds; latencies and costs cover all rounds.\n\n\
         | path | requests/s | ratio to /healthz | ratio per round | p50 ms | p99 ms | unexpected answers | voucherd CPU µs/req | Postgres CPU µs/req | Postgres commits/req | WAL bytes/req | WAL records/req | loadgen CPU µs/req | machine idle % | steal % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        b.machine,
        b.connections,
        b.rounds,
        b.seconds_per_path
    );
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v}"));
    for r in &b.rows {
        s += &format!(
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.path,
            r.requests_per_s,
            r.ratio_to_healthz,
            r.ratio_per_round
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.unexpected,
            opt(r.server_cpu_us),
            opt(r.postgres_cpu_us),
            opt(r.transactions),
            opt(r.wal_bytes),
            opt(r.wal_records),
            opt(r.loadgen_cpu_us),
            opt(r.idle_pct),
            opt(r.steal_pct)
        );
    }
    s
}
