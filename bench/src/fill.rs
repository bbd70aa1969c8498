//! Filling a lake with bronze files: the input of the load and transform benchmarks, made by
//! the quickstart's [`InProcessPipeline`] so that the files, manifests and batch records are
//! exactly what a streamer writes. The load and transform benchmarks run it as a child process, so
//! that its memory never counts towards theirs.

use std::time::Instant;

use anyhow::{Context, bail};

use super::report::{MB, Report};
use fintech_workers::bronze::Lake;
use fintech_workers::bronze::layout::{self, BatchRange};
use fintech_workers::in_process::{Flowed, InProcessPipeline};
use fintech_workers::producer::{EventStream, ProducerMetrics};
use fintech_workers::source::CommittedPositions;
use fintech_workers::storage::StorageOptions;
use fintech_workers::streamer::BatchPolicy;

/// Flags of `fintech-bench fill-lake`.
#[derive(Debug, Clone, clap::Args)]
pub struct FillArgs {
    /// The lake to write into: `s3://bucket/prefix` or `file:///path`. Required, with no
    /// environment fallback, so that synthetic data never lands in a pipeline's own lake by
    /// accident (its loader would take it for real payments).
    #[arg(long)]
    pub lake_url: String,

    /// S3 endpoint, for S3-compatible servers such as MinIO (default: `AWS_ENDPOINT_URL`).
    #[arg(long)]
    pub s3_endpoint: Option<String>,

    /// S3 region (default: `AWS_REGION`, else us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,

    /// Messages to write; no fault is injected, so each becomes one bronze row.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// Messages of the same stream to skip first, so that a second fill continues the first
    /// (later payments, and the settlements of earlier ones). Every partition's offsets start
    /// at this number, so the second fill's files never take the first one's names.
    #[arg(long, default_value_t = 0)]
    pub skip: u64,

    /// Messages per batch, as the streamer's --batch-max-rows.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: u64,

    /// Partitions of the in-process topic.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1_000))]
    pub partitions: i32,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the fill.
pub async fn run(args: &FillArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "fill-lake",
        "payment events into bronze through the in-process producer and the streamer",
    );
    report
        .parameter("lake_url", args.lake_url.clone())
        .parameter("rows", args.rows)
        .parameter("skip", args.skip)
        .parameter("batch_rows", args.batch_rows)
        .parameter("seed", args.seed);

    let mut events =
        EventStream::new(&super::stream_config(args.seed), ProducerMetrics::default())?;
    for _ in 0..args.skip {
        events.next_message()?;
    }
    let first_offset = i64::try_from(args.skip).context("--skip is too large")?;
    let positions = CommittedPositions::default();
    if let Ok(mut committed) = positions.lock() {
        committed.extend((0..args.partitions).map(|partition| (partition, first_offset)));
    }
    let storage = StorageOptions {
        lake_url: args.lake_url.clone(),
        s3_endpoint: args.s3_endpoint.clone(),
        s3_region: args.s3_region.clone(),
    };
    let pipeline = InProcessPipeline::new(Lake::open(&storage)?, args.partitions)
        .with_positions(positions)
        .with_policy(BatchPolicy {
            max_rows: usize::try_from(args.batch_rows)?,
            ..BatchPolicy::default()
        });

    let started = Instant::now();
    let Flowed { produced, streamed } = pipeline
        .run(&mut events, args.rows, &indicatif::ProgressBar::hidden())
        .await?;
    let elapsed = started.elapsed();
    if streamed.rows != args.rows || produced.sent != args.rows {
        bail!(
            "asked for {} rows, produced {} and wrote {} to bronze",
            args.rows,
            produced.sent,
            streamed.rows
        );
    }
    // A continuation writes into a lake that already holds the first fill's files.
    let written: Vec<_> = super::scratch::list_lake(&storage, layout::TRANSACTIONS_PREFIX)
        .await?
        .into_iter()
        .filter(|object| {
            object
                .location
                .filename()
                .and_then(BatchRange::parse_file_name)
                .is_some_and(|range| range.first_offset >= first_offset)
        })
        .collect();
    let bytes: u64 = written.iter().map(|object| object.size).sum();
    let files = written.len();
    report
        .throughput("", streamed.rows, elapsed, Some(bytes))
        .figure("batches", streamed.batches)
        .figure("files", files)
        .number("bronze_mb", bytes as f64 / MB, 1)
        .peak_rss();
    Ok(report)
}
