//! Slow and abusive clients for the fault drills: connections that never send,
//! request heads sent a line at a time (slowloris), and bodies sent a byte at a time.
//! Each reports whether and when the server cut it off.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// voucherd's address (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Connections opened and left silent.
    #[arg(long, default_value_t = 1000)]
    pub idle: usize,
    /// Connections sending a request head one header line per second.
    #[arg(long, default_value_t = 200)]
    pub slowloris: usize,
    /// Requests sending a 1,000-byte body one byte every 200 ms.
    #[arg(long, default_value_t = 50)]
    pub slow_bodies: usize,
    /// How long each abuser keeps going before it gives up on being cut off.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub patience: Duration,
    #[arg(long, env = "ADMIN_TOKEN", default_value = "dev-only-admin-token")]
    pub admin_token: String,
    /// The report is written here as JSON.
    #[arg(long, default_value = "loadtest/results/abuse.json")]
    pub out: PathBuf,
}

/// How one kind of abuser fared.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Kind {
    /// Connections that were accepted (the others found the backlog full).
    pub opened: usize,
    #[serde(default)]
    pub not_connected: usize,
    /// Cut off by the server (closed, or answered with an error) before `patience`.
    pub cut_off: usize,
    pub median_s: f64,
    pub max_s: f64,
    /// HTTP statuses the server answered with, where it answered.
    pub statuses: Vec<u16>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Report {
    pub idle: Kind,
    pub slowloris: Kind,
    pub slow_bodies: Kind,
}

/// One abuser's end: `Err` if it could not even connect (the backlog was full);
/// else after how long the server cut it off and with which status, or `None` if it
/// never did within the patience.
type End = Result<Option<(Duration, Option<u16>)>, ()>;

async fn idle(addr: String, patience: Duration) -> End {
    let mut s = TcpStream::connect(&addr).await.map_err(drop)?;
    let start = Instant::now();
    let mut buf = [0u8; 512];
    Ok(
        match tokio::time::timeout(patience, s.read(&mut buf)).await {
            Ok(Ok(n)) => Some((start.elapsed(), status(&buf[..n]))),
            Ok(Err(_)) => Some((start.elapsed(), None)),
            Err(_) => None,
        },
    )
}

async fn slowloris(addr: String, patience: Duration) -> End {
    let mut s = TcpStream::connect(&addr).await.map_err(drop)?;
    let start = Instant::now();
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\n")
        .await
        .is_err()
    {
        return Ok(Some((start.elapsed(), None)));
    }
    let mut buf = [0u8; 512];
    while start.elapsed() < patience {
        tokio::select! {
            read = s.read(&mut buf) => return Ok(Some((start.elapsed(), read.ok().and_then(|n| status(&buf[..n]))))),
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Ok(Some((start.elapsed(), None)));
                }
            }
        }
    }
    Ok(None)
}

async fn slow_body(addr: String, patience: Duration, admin: String, n: usize) -> End {
    let mut s = TcpStream::connect(&addr).await.map_err(drop)?;
    let start = Instant::now();
    let head = format!(
        "POST /v1/admin/campaigns HTTP/1.1\r\nHost: voucherd\r\nAuthorization: Bearer {admin}\r\n\
         Idempotency-Key: abuse-slow-body-{n:08}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return Ok(Some((start.elapsed(), None)));
    }
    let mut buf = [0u8; 512];
    let mut sent = 0;
    while start.elapsed() < patience {
        tokio::select! {
            read = s.read(&mut buf) => return Ok(Some((start.elapsed(), read.ok().and_then(|n| status(&buf[..n]))))),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if sent < 999 {
                    sent += 1;
                    if s.write_all(b" ").await.is_err() {
                        return Ok(Some((start.elapsed(), None)));
                    }
                }
            }
        }
    }
    Ok(None)
}

fn status(bytes: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(bytes).ok()?.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn summarise(ends: Vec<End>) -> Kind {
    let not_connected = ends.iter().filter(|e| e.is_err()).count();
    let ends: Vec<_> = ends.into_iter().filter_map(Result::ok).collect();
    let opened = ends.len();
    let mut times: Vec<f64> = ends.iter().flatten().map(|e| e.0.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    let mut statuses: Vec<u16> = ends.iter().flatten().filter_map(|e| e.1).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let round = |x: f64| (x * 10.0).round() / 10.0;
    Kind {
        opened,
        not_connected,
        cut_off: times.len(),
        median_s: times.get(times.len() / 2).copied().map_or(0.0, round),
        max_s: times.last().copied().map_or(0.0, round),
        statuses,
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (a, p) = (&args.addr, args.patience);
    let idle = futures::future::join_all((0..args.idle).map(|_| idle(a.clone(), p)));
    let loris = futures::future::join_all((0..args.slowloris).map(|_| slowloris(a.clone(), p)));
    let bodies = futures::future::join_all(
        (0..args.slow_bodies).map(|n| slow_body(a.clone(), p, args.admin_token.clone(), n)),
    );
    let (idle, loris, bodies) = tokio::join!(idle, loris, bodies);
    let report = Report {
        idle: summarise(idle),
        slowloris: summarise(loris),
        slow_bodies: summarise(bodies),
    };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", describe(&report));
    Ok(())
}

/// One line per kind, as the drills table quotes it.
pub fn describe(r: &Report) -> String {
    let kind = |name: &str, k: &Kind| {
        format!(
            "{} {name}{}: {} cut off by the server (median {} s, max {} s){}",
            k.opened,
            if k.not_connected > 0 {
                format!(" (and {} refused at connect)", k.not_connected)
            } else {
                String::new()
            },
            k.cut_off,
            k.median_s,
            k.max_s,
            if k.statuses.is_empty() {
                String::new()
            } else {
                format!(", answered {:?}", k.statuses)
            }
        )
    };
    [
        kind("idle connections", &r.idle),
        kind("slowloris heads", &r.slowloris),
        kind("byte-by-byte bodies", &r.slow_bodies),
    ]
    .join("; ")
}
