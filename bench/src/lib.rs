//! `fintech-bench`: throughput, latency and memory of every stage, measured on the code the
//! pipeline runs (the real event stream, bronze encoder, streamer, loader, transform runner and
//! quickstart, through the `fintech_workers` library and the `fintech` binary), never on
//! re-implementations of it. It is a crate of its own so that the product ships without it.
//!
//! Each stage prints a short summary and writes one JSON object. Peak memory is read from
//! `/proc/self/status` and is process-wide, so each stage is its own `fintech-bench` process,
//! and whatever a stage only needs as input (messages in Kafka, bronze files in a lake, silver
//! rows) is made by a child process so that it does not count towards the stage's memory.
//! Nothing here asserts on time: figures are held against the targets of the benchmark issue
//! and reported as met or missed. `scripts/bench.sh` runs every stage against the test
//! environment and records the machine; `docs/benchmarks.md` explains the figures.

pub mod bronze;
pub mod fill;
pub mod generate;
pub mod load;
pub mod process;
pub mod quickstart;
pub mod report;
pub mod scratch;
pub mod soak;
pub mod stream;
pub mod transform;

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};

use fintech_workers::producer::StreamConfig;

pub use report::{Bound, Report, Target};

/// Payments per day of every benchmark's simulated timeline: the producer's default pace, so
/// a million messages cover about twenty days, as a production topic would.
pub const PAYMENTS_PER_DAY: u32 = 50_000;

/// Where every benchmark's simulated timeline starts, so that runs are reproducible.
pub fn timeline_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The producer's default event stream (20% of payments settle later) on the benchmarks'
/// simulated timeline, without faults, so that every message becomes exactly one bronze row
/// and one silver row and counts can be checked.
pub fn stream_config(seed: u64) -> StreamConfig {
    StreamConfig {
        seed,
        simulated_start: Some(timeline_start()),
        payments_per_day: PAYMENTS_PER_DAY,
        ..StreamConfig::default()
    }
}

/// Flags of `fintech-bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Also write the figures as one JSON object to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,

    /// What goes to stdout: the text summary, or the JSON object (the summary then goes to
    /// stderr).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// The stage to measure.
    #[command(subcommand)]
    pub stage: Stage,
}

/// What `fintech-bench` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A short human-readable summary.
    Text,
    /// One JSON object.
    Json,
}

/// The stages that can be measured.
#[derive(Debug, clap::Subcommand)]
pub enum Stage {
    /// Event generation and JSON encoding (the producer without Kafka).
    Generate(generate::GenerateArgs),
    /// Decoding JSON messages into Arrow and encoding Arrow as bronze Parquet.
    Bronze(bronze::BronzeArgs),
    /// The streamer end to end: Kafka to bronze Parquet in object storage, committed.
    Stream(stream::StreamArgs),
    /// The loader (bronze to PostgreSQL with COPY) against a row-by-row INSERT baseline.
    Load(load::LoadArgs),
    /// The transforms: a full refresh and an incremental run on a large silver table.
    Transform(transform::TransformArgs),
    /// `fintech quickstart`: wall time and peak memory of whole runs.
    Quickstart(quickstart::QuickstartArgs),
    /// The whole pipeline for minutes under kills, skewed clocks, replays and bad input,
    /// then every message reconciled from Kafka to the fact table (`scripts/soak.sh`).
    Soak(soak::SoakArgs),
    /// Writes payment events as bronze files into a lake through the in-process producer and
    /// streamer: the input of the load and transform benchmarks.
    FillLake(fill::FillArgs),
}

impl BenchArgs {
    /// Runs the stage, then prints and writes its report.
    pub async fn run(self) -> anyhow::Result<()> {
        let report = match self.stage {
            Stage::Generate(args) => generate::run(&args)?,
            Stage::Bronze(args) => bronze::run(&args)?,
            Stage::Stream(args) => stream::run(&args).await?,
            Stage::Load(args) => load::run(&args).await?,
            Stage::Transform(args) => transform::run(&args).await?,
            Stage::Quickstart(args) => quickstart::run(&args).await?,
            Stage::Soak(args) => soak::run(&args).await?,
            Stage::FillLake(args) => fill::run(&args).await?,
        };
        let json = serde_json::to_string_pretty(&report)?;
        if let Some(path) = &self.json {
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("writing the figures to {}", path.display()))?;
        }
        match self.format {
            OutputFormat::Text => print!("{}", report.text()),
            OutputFormat::Json => {
                eprint!("{}", report.text());
                println!("{json}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn every_stage_has_consistent_flags() {
        Bench::command().debug_assert();
        let bench =
            Bench::try_parse_from(["bench", "bronze", "--rows", "10", "--format", "json"]).unwrap();
        assert_eq!(bench.args.format, OutputFormat::Json);
        assert!(matches!(
            bench.args.stage,
            Stage::Bronze(bronze::BronzeArgs { rows: 10, .. })
        ));
    }
}
