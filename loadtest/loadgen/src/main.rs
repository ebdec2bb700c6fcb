//! loadgen: rehearses a flash sale against a running voucherd and proves the result
//! (`flash`), measures the hot paths side by side (`bench`), plays slow and abusive
//! clients (`abuse`) and tabulates the fault drills (`drills-table`).

mod abuse;
mod api;
mod bench;
mod drills;
mod flash;
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
        Command::Bench(args) => bench::run(args).await,
        Command::Abuse(args) => abuse::run(args).await,
        Command::DrillsTable(args) => drills::run(args),
    }
}
