//! Stage 6: `fintech quickstart` as a user runs it: wall time and peak memory of a first run
//! on an empty folder and of later runs on the same folder (which continue it incrementally).
//!
//! Each run is the real command in a child process, with its own defaults; the time between
//! its log lines says where the time goes.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::process::{self, fintech_binary};
use super::report::Report;

/// The quickstart's log messages that close a phase, with the phase's name.
const PHASES: [(&str, &str); 5] = [
    ("produced and streamed", "start, produce and stream"),
    ("loaded", "load"),
    ("transformed", "transform and data tests"),
    ("report written", "summary and report"),
    ("warehouse stopped", "stop the warehouse"),
];

/// Flags of `fintech-bench quickstart`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// The quickstart's folder; without it, a fresh temporary folder deleted at the end.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Messages each run produces (the quickstart's default).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,

    /// Runs on the same folder, one after the other.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub runs: u32,
}

/// Runs the benchmark.
pub async fn run(args: &QuickstartArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "quickstart",
        "fintech quickstart: whole runs on embedded parts, the first on an empty folder",
    );
    report
        .parameter("events", args.events)
        .parameter("runs", args.runs);
    let temporary = args.out.is_none();
    let out = match &args.out {
        Some(out) => out.clone(),
        None => std::env::temp_dir().join(super::scratch::unique_name("fintech-bench-quickstart")),
    };
    let result = measure(args, &out, &mut report).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&out);
    }
    result?;
    Ok(report)
}

async fn measure(
    args: &QuickstartArgs,
    out: &std::path::Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    for run in 1..=args.runs {
        let mut command = Command::new(fintech_binary()?);
        command
            .args(["quickstart", "--log-format", "json"])
            .args(["--events", &args.events.to_string()])
            .arg("--out")
            .arg(out);
        let finished = process::run("fintech quickstart", command).await?;
        let silver = silver_rows(&finished.stdout)
            .context("the quickstart's summary has no silver row count")?;
        let prefix = if run == 1 {
            String::new()
        } else {
            format!("run_{run}_")
        };
        if run == 1 {
            report.figure("rows", args.events);
        }
        report.number(&format!("{prefix}seconds"), finished.wall.as_secs_f64(), 3);
        if run == 1 {
            report.number(
                "rows_per_sec",
                super::report::per_second(args.events, finished.wall.as_secs_f64()),
                0,
            );
        }
        if let Some(mb) = finished.peak_rss_mb {
            report.number(&format!("{prefix}peak_rss_mb"), mb, 1);
        }
        report
            .figure(&format!("{prefix}silver_rows_after"), silver)
            .figure(
                &format!("{prefix}phases"),
                phases(&finished.stderr, finished.spawned_at, finished.wall),
            );
    }
    Ok(())
}

/// The silver row count printed in the quickstart's summary.
fn silver_rows(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find(|line| line.trim_start().starts_with("silver rows"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Seconds per phase, from the timestamps of the JSON log lines that close each phase.
fn phases(stderr: &str, spawned_at: DateTime<Utc>, wall: std::time::Duration) -> serde_json::Value {
    let times: Vec<(String, DateTime<Utc>)> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|log| {
            let message = log.get("message")?.as_str()?.to_owned();
            let time = log.get("timestamp")?.as_str()?.parse().ok()?;
            Some((message, time))
        })
        .collect();
    // Numbered, because JSON objects here keep their keys sorted.
    let mut phases = serde_json::Map::new();
    let mut previous = spawned_at;
    let mut number = 0;
    let mut add = |name: &str, seconds: f64| {
        number += 1;
        phases.insert(
            format!("{number} {name}"),
            ((seconds * 1e3).round() / 1e3).into(),
        );
    };
    for (message, phase) in PHASES {
        if let Some((_, time)) = times.iter().find(|(m, _)| m == message) {
            add(phase, (*time - previous).as_seconds_f64());
            previous = *time;
        }
    }
    let end = spawned_at + chrono::TimeDelta::from_std(wall).unwrap_or_default();
    add("exit", (end - previous).as_seconds_f64());
    serde_json::Value::Object(phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_silver_count_and_the_phases_from_the_quickstart_output() {
        let stdout = "Rows per layer\n  produced (this run)   100\n  silver rows (raw.transactions)    98274\n";
        assert_eq!(silver_rows(stdout), Some(98_274));
        let start: DateTime<Utc> = "2026-11-24T01:00:00Z".parse().unwrap();
        let stderr = "{\"timestamp\":\"2026-11-24T01:00:01.5Z\",\"message\":\"produced and streamed\"}\n\
                      not json\n\
                      {\"timestamp\":\"2026-11-24T01:00:04Z\",\"message\":\"loaded\"}\n";
        let phases = phases(stderr, start, std::time::Duration::from_secs(5));
        assert_eq!(phases["1 start, produce and stream"], 1.5);
        assert_eq!(phases["2 load"], 2.5);
        assert_eq!(phases["3 exit"], 1.0);
    }
}
