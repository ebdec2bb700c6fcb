//! The fault drills' summary: one row per drill, read from the reports `flash`
//! wrote during `loadtest/drills`, for the README's drills table.

use std::path::PathBuf;

use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The drills' flash reports (JSON), in the order the table should list them.
    pub reports: Vec<PathBuf>,
    /// The table is written here (markdown).
    #[arg(long, default_value = "loadtest/results/drills.md")]
    pub out: PathBuf,
}

fn window(v: &Value) -> String {
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(a), Some(b)) => format!("{:.1} s (from {a:.1} s to {b:.1} s)", b - a),
        _ => "none".into(),
    }
}

fn row(path: &PathBuf) -> anyhow::Result<String> {
    let r: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let mut injected = r["injected"].as_str().unwrap_or("").to_string();
    let abuse = path.with_extension("abuse.json");
    if let Ok(bytes) = std::fs::read(&abuse) {
        let a: crate::abuse::Report = serde_json::from_slice(&bytes)?;
        injected += &format!(" ({})", crate::abuse::describe(&a));
    }
    let faults =
        r["faults"]
            .as_object()
            .filter(|m| !m.is_empty())
            .map_or("none".to_string(), |m| {
                m.iter()
                    .map(|(k, v)| format!("{v} × {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
    let failed: Vec<String> = r["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != true)
        .map(|c| c["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let checks = r["checks"].as_array().map_or(0, Vec::len);
    let invariants = if failed.is_empty() {
        format!("all {checks} checks passed")
    } else {
        format!("**FAILED**: {}", failed.join(", "))
    };
    let redeemed = r["redemptions"]["redeemed"].as_u64().unwrap_or(0);
    Ok(format!(
        "| {} | {} | {} attempts ({} keys, {} granted, {redeemed} redeemed, {} retries) | {faults} | {} | {} | {invariants} |",
        r["label"].as_str().unwrap_or("?"),
        injected,
        r["attempts"],
        r["grabs"],
        r["outcomes"]["granted"].as_u64().unwrap_or(0),
        r["retries"],
        window(&r["fault_window_s"]),
        window(&r["readyz_unready_s"]),
    ))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut md = String::from(
        "| drill | injected | requests | attempts without a usable answer | faults seen for | `/readyz` unavailable for | invariants |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for p in &args.reports {
        md += &row(p)?;
        md.push('\n');
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md)?;
    print!("{md}");
    Ok(())
}
