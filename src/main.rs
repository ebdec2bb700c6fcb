//! The `voucherd` binary: parses the command line and hands over to the library.

use clap::{Parser, Subcommand};

// glibc's allocator was about 30% of the grant path's CPU under load (profiled with
// perf). Of the replacements measured side by side in `loadtest/bench`, jemalloc cost
// the grant path 33-35 µs of voucherd CPU per grant against mimalloc 3's 37.5: the
// path frees on one worker thread much of what it allocated on another.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "voucherd", version, about = "Flash-sale voucher service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations (unless MIGRATE_ON_START=false) and serve HTTP.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Print a user JWT signed with JWT_SECRET, for trying the API with curl.
    Token {
        /// The user id (`sub`), 1 to 128 characters.
        #[arg(long)]
        sub: String,
        /// Lifetime of the token, e.g. 1h or 30m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Print this many tokens, one per line, for users `<sub>-0` … `<sub>-<count-1>`
        /// (load tests need many distinct users).
        #[arg(long)]
        count: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token { sub, ttl, count } => {
            let secret = voucherd::jwt_secret_from_env()?;
            match count {
                None => println!("{}", voucherd::mint_token(&secret, &sub, ttl.as_secs())?),
                Some(n) => {
                    use std::io::Write;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    for i in 0..n {
                        let token =
                            voucherd::mint_token(&secret, &format!("{sub}-{i}"), ttl.as_secs())?;
                        writeln!(out, "{token}")?;
                    }
                }
            }
            Ok(())
        }
        Command::Migrate => {
            let settings = load_settings();
            voucherd::init_tracing(settings.log_json);
            voucherd::migrate(&settings).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            let settings = load_settings();
            voucherd::init_tracing(settings.log_json);
            voucherd::serve(settings).await
        }
    }
}

fn load_settings() -> voucherd::Settings {
    voucherd::settings_from_env().unwrap_or_else(|e| {
        eprintln!("voucherd: invalid setting {e}");
        std::process::exit(2);
    })
}
