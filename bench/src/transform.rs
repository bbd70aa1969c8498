//! Stage 5: the transforms on a large silver table, a full refresh and then an incremental
//! run after one more day of payments arrived.
//!
//! Child processes make the silver rows the way production does (bronze by
//! [`super::fill`], then `fintech load --once`); the real transform runner then builds every
//! model and runs every data test, timed, with each step's duration read back from
//! `metadata.transform_runs` to show where the time goes. The second fill continues the same
//! event stream, so the increment holds new payments and the settlements of earlier pending
//! ones, which the incremental run merges into the fact.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use sqlx::PgPool;

use super::process::{self, fintech_binary};
use super::report::{Report, Target};
use super::scratch::{self, Scratch};
use fintech_workers::storage::StorageOptions;
use fintech_workers::transform::{
    self, NodeKind, NodeStatus, Project, TransformOptions, TransformReport,
};
use fintech_workers::warehouse::WarehouseOptions;

/// Flags of `fintech-bench transform`.
#[derive(Debug, Clone, clap::Args)]
pub struct TransformArgs {
    /// The lake; the benchmark writes below a fresh prefix of it.
    #[command(flatten)]
    pub storage: StorageOptions,

    /// The PostgreSQL server; the benchmark creates a database of its own on it (the user
    /// needs CREATEDB) and drops it at the end.
    #[arg(long, env = "FINTECH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Silver rows before the full refresh.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// Silver rows added before the incremental run: one day at the benchmarks' pace.
    #[arg(long, default_value_t = u64::from(super::PAYMENTS_PER_DAY), value_parser = clap::value_parser!(u64).range(1..))]
    pub increment_rows: u64,

    /// The runner's --lookback-seconds for the incremental run.
    #[arg(long, default_value_t = fintech_workers::transform::DEFAULT_LOOKBACK.as_secs())]
    pub lookback_seconds: u64,

    /// Date the first rows as loaded when their events happened, ending an hour before the
    /// increment, instead of minutes before it. In production the history reached silver
    /// day by day, so an incremental run's window (the lookback before the latest load it
    /// merged) holds the end of it and the increment, not the whole history.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub history_loaded_over_time: bool,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Keep the bronze files and the database instead of deleting them.
    #[arg(long)]
    pub keep: bool,
}

/// Runs the benchmark.
pub async fn run(args: &TransformArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "transform",
        "the transforms: a full refresh, then an incremental run after one more day of payments",
    );
    let mut scratch = Scratch::default();
    let lake = scratch.lake(&args.storage, "bench-transform");
    report
        .parameter("rows", args.rows)
        .parameter("increment_rows", args.increment_rows)
        .parameter("lookback_seconds", args.lookback_seconds)
        .parameter("history_loaded_over_time", args.history_loaded_over_time)
        .parameter("lake_url", lake.lake_url.clone());
    let result = measure(args, &lake, &mut scratch, &mut report).await;
    scratch.remove(args.keep).await;
    result?;
    Ok(report)
}

async fn measure(
    args: &TransformArgs,
    lake: &StorageOptions,
    scratch: &mut Scratch,
    report: &mut Report,
) -> anyhow::Result<()> {
    let url = scratch.database(&args.database_url, "transform").await?;
    let batch_rows = 100_000;
    let filled = super::load::fill(lake, args.rows, 0, batch_rows, args.seed).await?;
    let loaded = load(lake, &url).await?;

    let pool = WarehouseOptions::url(&url, 1).connect_and_migrate().await?;
    let project = Project::embedded()?;
    let silver = silver_rows(&pool).await?;
    if silver != args.rows {
        bail!("silver holds {silver} rows, expected {}", args.rows);
    }
    report.figure("rows", silver);
    if args.history_loaded_over_time {
        sqlx::query(
            "update raw.transactions set loaded_at = event_time \
             + (now() - interval '1 hour' - (select max(event_time) from raw.transactions))",
        )
        .execute(&pool)
        .await?;
        // The update leaves a dead version of every row; a table loaded over days has none.
        sqlx::query("vacuum full analyze raw.transactions")
            .execute(&pool)
            .await?;
    }

    let options = TransformOptions {
        select: None,
        full_refresh: true,
        lookback: Duration::from_secs(args.lookback_seconds),
    };
    let (full, elapsed) = timed_run(&pool, &project, &options).await?;
    report
        .number("seconds", elapsed.as_secs_f64(), 3)
        .number(
            "rows_per_sec",
            super::report::per_second(silver, elapsed.as_secs_f64()),
            0,
        )
        .figure("fact_rows", node_rows(&full, "marts.fact_transactions"))
        .figure("data_tests_failed", failed_tests(&full))
        .figure("full_refresh_steps", steps(&pool, &full).await?)
        .number("setup_fill_seconds", filled.wall.as_secs_f64(), 3)
        .number("setup_load_seconds", loaded.wall.as_secs_f64(), 3);
    if let Some(mb) = loaded.peak_rss_mb {
        // `fintech load --once` loading every row in one run: the loader's memory at scale.
        report.number("setup_load_peak_rss_mb", mb, 1);
    }

    super::load::fill(lake, args.increment_rows, args.rows, batch_rows, args.seed).await?;
    load(lake, &url).await?;
    let total = silver_rows(&pool).await?;
    let options = TransformOptions {
        full_refresh: false,
        ..options
    };
    let (incremental, elapsed) = timed_run(&pool, &project, &options).await?;
    report
        .figure("incremental_new_rows", total - silver)
        .number("incremental_seconds", elapsed.as_secs_f64(), 3)
        .figure(
            "incremental_fact_rows_merged",
            node_rows(&incremental, "marts.fact_transactions"),
        )
        .figure("incremental_data_tests_failed", failed_tests(&incremental))
        .figure("incremental_steps", steps(&pool, &incremental).await?);
    let full_seconds = report.get_f64("seconds").unwrap_or_default();
    if full_seconds > 0.0 {
        report.number("incremental_share", elapsed.as_secs_f64() / full_seconds, 3);
    }
    report
        .target(Target::at_most("seconds", 7.0, "s"))
        .target(Target::at_most(
            "incremental_share",
            0.10,
            "of the full refresh",
        ));
    pool.close().await;
    Ok(())
}

/// Loads every pending bronze file with `fintech load --once`, in a process of its own.
async fn load(lake: &StorageOptions, database_url: &str) -> anyhow::Result<process::Finished> {
    let mut command = Command::new(fintech_binary()?);
    command
        .args(["load", "--once", "--log-format", "json"])
        .args(["--database-url", database_url])
        .args(scratch::lake_flags(lake));
    process::run("the loader (fintech load --once)", command).await
}

async fn timed_run(
    pool: &PgPool,
    project: &Project,
    options: &TransformOptions,
) -> anyhow::Result<(TransformReport, Duration)> {
    let started = Instant::now();
    let report = transform::run(pool, project, options).await?;
    let elapsed = started.elapsed();
    if report.failed() {
        tracing::warn!(failures = %report.failures(), "the transform run had failures");
    }
    Ok((report, elapsed))
}

async fn silver_rows(pool: &PgPool) -> anyhow::Result<u64> {
    let rows: i64 = sqlx::query_scalar("select count(*) from raw.transactions")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(rows)?)
}

fn node_rows(report: &TransformReport, node: &str) -> i64 {
    report.node(node).and_then(|n| n.rows).unwrap_or_default()
}

fn failed_tests(report: &TransformReport) -> usize {
    report
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Test && n.status != NodeStatus::Success)
        .count()
}

/// Seconds per step as the runner recorded them, numbered in run order (JSON objects here keep
/// their keys sorted): seeds in total, each model, data tests in total.
async fn steps(pool: &PgPool, report: &TransformReport) -> anyhow::Result<serde_json::Value> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select node, kind, duration_ms from metadata.transform_runs \
         where run_id = $1 order by started_at",
    )
    .bind(report.run_id)
    .fetch_all(pool)
    .await?;
    let total = |kind: &str| -> i64 { rows.iter().filter(|r| r.1 == kind).map(|r| r.2).sum() };
    let mut ordered = vec![("seeds (all)".to_owned(), total("seed"))];
    ordered.extend(
        rows.iter()
            .filter(|r| r.1 == "model")
            .map(|r| (r.0.clone(), r.2)),
    );
    ordered.push(("data tests (all)".to_owned(), total("test")));
    let steps: serde_json::Map<String, serde_json::Value> = ordered
        .into_iter()
        .enumerate()
        .map(|(i, (name, millis))| (format!("{:02} {name}", i + 1), (millis as f64 / 1e3).into()))
        .collect();
    Ok(serde_json::Value::Object(steps))
}
