//! Latency statistics, the per-second timeline and the written report (Markdown,
//! JSON and an SVG chart of throughput and latency over time).

use std::{collections::BTreeMap, path::Path};

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

/// One completed HTTP attempt.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Milliseconds since the run started, when the attempt finished.
    pub at_ms: u64,
    /// From the moment the request was due (not sent), so queueing in the client
    /// under overload is counted rather than hidden.
    pub latency_us: u64,
    pub granted: bool,
    /// What went wrong, if the attempt got no usable answer: `None` for an answer
    /// (a grant, a replay or a refusal), else the HTTP status (0: no answer at all).
    pub fault: Option<u16>,
    /// A 429 or 503 that did not say when to come back.
    pub missing_retry_after: bool,
}

#[derive(Debug, Serialize, Clone)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid")
}

pub fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    Latency {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// Per second: attempts finished, grants, and p99 latency.
#[derive(Debug, Serialize, Clone)]
pub struct Second {
    pub second: u64,
    pub requests: u64,
    pub granted: u64,
    pub p99_ms: f64,
}

pub fn timeline(samples: &[Sample]) -> Vec<Second> {
    let mut by_sec: BTreeMap<u64, (u64, u64, Histogram<u64>)> = BTreeMap::new();
    for s in samples {
        let e = by_sec
            .entry(s.at_ms / 1000)
            .or_insert_with(|| (0, 0, histogram()));
        e.0 += 1;
        e.1 += u64::from(s.granted);
        let _ = e.2.record(s.latency_us.max(1));
    }
    by_sec
        .into_iter()
        .map(|(second, (requests, granted, h))| Second {
            second,
            requests,
            granted,
            p99_ms: latency(&h).p99_ms,
        })
        .collect()
}

/// Two stacked panels: requests and grants per second, then p99 latency per second.
pub fn chart(path: &Path, title: &str, seconds: &[Second]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(300);
    let max_x = seconds.last().map_or(1, |s| s.second + 1);
    let max_rate = seconds.iter().map(|s| s.requests).max().unwrap_or(1).max(1);
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!("{title}: throughput per second"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..max_x, 0u64..max_rate + max_rate / 10)?;
    c.configure_mesh()
        .x_desc("second")
        .y_desc("per second")
        .draw()?;
    c.draw_series(LineSeries::new(
        seconds.iter().map(|s| (s.second, s.requests)),
        &BLUE,
    ))?
    .label("responses")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(
        seconds.iter().map(|s| (s.second, s.granted)),
        &GREEN,
    ))?
    .label("grants")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    c.configure_series_labels().border_style(BLACK).draw()?;
    let max_p99 = seconds.iter().map(|s| s.p99_ms).fold(1.0, f64::max);
    let mut l = ChartBuilder::on(&bottom)
        .caption("p99 latency per second (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..max_x, 0f64..max_p99 * 1.1)?;
    l.configure_mesh().x_desc("second").y_desc("ms").draw()?;
    l.draw_series(LineSeries::new(
        seconds.iter().map(|s| (s.second, s.p99_ms)),
        &RED,
    ))?;
    root.present()?;
    Ok(())
}

/// The machine a figure was measured on, for every report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), voucherd, Postgres, Redis and loadgen on the same machine")
}
