//! loadgen: rehearses a flash sale against a running voucherd and proves the result
//! (`flash`), rehearses launch night — many campaigns opening at once (`launch`),
//! measures the hot paths side by side (`bench`), plays slow and abusive
//! clients (`abuse`) and tabulates the fault drills (`drills-table`).

mod abuse;
mod api;
mod bench;
mod drills;
mod flash;
mod launch;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator and auditor for voucherd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A flash sale at an open arrival rate, with timeouts, retries and an audit.
    Flash(flash::Args),
    /// Launch night: many campaigns open at one instant with the herd already
    /// waiting; measures grants/s, 503s, latency and Postgres transactions per
    /// refused grab, then audits every campaign.
    Launch(launch::Args),
    /// Closed-loop rates of the hot paths, each as a ratio to the /healthz ceiling.
    Bench(bench::Args),
    /// Idle connections, slowloris heads and byte-by-byte bodies; reports when the
    /// server cut each off.
    Abuse(abuse::Args),
    /// The fault drills' reports as one markdown table.
    DrillsTable(drills::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The workspace builds reqwest without a default TLS backend (see voucherd).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Flash(args) => flash::run(args).await,
        Command::Launch(args) => launch::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Abuse(args) => abuse::run(args).await,
        Command::DrillsTable(args) => drills::run(args),
    }
}
