//! Stage 3: the streamer end to end against a real broker and object store: records per
//! second from Kafka into committed bronze Parquet, the latency of each batch's commit, and
//! the streamer's peak memory.
//!
//! `fintech produce` first fills a fresh topic in a process of its own (its throughput and
//! memory are reported too); then the real [`Streamer`] reads the topic with a real
//! [`KafkaSource`] until every message is committed. The source is wrapped by [`Observed`],
//! which only watches: when messages arrive and when commits return.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::process::{self, fintech_binary};
use super::report::{MB, Report, Target};
use super::scratch::{self, Scratch, unique_name};
use fintech_workers::bronze::Lake;
use fintech_workers::bronze::layout;
use fintech_workers::kafka::{KafkaOptions, KafkaSource, LagGauge};
use fintech_workers::source::{MessageSource, SourceError, SourceEvent};
use fintech_workers::storage::StorageOptions;
use fintech_workers::streamer::{BatchPolicy, Streamer, StreamerMetrics};

/// Flags of `fintech-bench stream`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// The broker; `--topic` names the prefix of the fresh topic the benchmark creates.
    #[command(flatten)]
    pub kafka: KafkaOptions,

    /// The lake; the benchmark writes below a fresh prefix of it.
    #[command(flatten)]
    pub storage: StorageOptions,

    /// Messages to produce and stream.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,

    /// Partitions of the fresh topic.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1_000))]
    pub partitions: i32,

    /// The streamer's --batch-max-rows.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_max_rows: u64,

    /// The streamer's --batch-interval-secs.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_interval_secs: u64,

    /// Give up when the streamer has not committed every message after this many seconds.
    #[arg(long = "give-up-after-secs", default_value_t = 900)]
    pub give_up_after_secs: u64,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Keep the topic and the bronze files instead of deleting them.
    #[arg(long)]
    pub keep: bool,
}

/// What [`Observed`] saw, published to the benchmark at every commit.
#[derive(Debug, Clone, Default)]
struct Observations {
    first_message: Option<Instant>,
    last_message: Option<Instant>,
    messages: u64,
    bytes: u64,
    last_commit: Option<Instant>,
    /// From the last message of a batch arriving to its offsets being committed: encoding,
    /// storing and committing the batch.
    commit_latencies: Vec<Duration>,
}

/// A source that passes everything through and notes when messages arrive and commits
/// return. It cancels the streamer once the expected count has arrived, which makes the
/// streamer write and commit its open batch and stop, as on SIGTERM.
struct Observed<S> {
    inner: S,
    expected: u64,
    cancel: CancellationToken,
    seen: Observations,
    published: Arc<Mutex<Observations>>,
}

impl<S: MessageSource + Send> MessageSource for Observed<S> {
    fn topic(&self) -> &str {
        self.inner.topic()
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        let event = self.inner.next().await?;
        if let Some(SourceEvent::Message(message)) = &event {
            let now = Instant::now();
            self.seen.first_message.get_or_insert(now);
            self.seen.last_message = Some(now);
            self.seen.messages += 1;
            self.seen.bytes += message.size() as u64;
            if self.seen.messages == self.expected {
                self.cancel.cancel();
            }
        }
        Ok(event)
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        let result = self.inner.commit(positions).await;
        let now = Instant::now();
        if let Some(last) = self.seen.last_message {
            self.seen.commit_latencies.push(now - last);
        }
        self.seen.last_commit = Some(now);
        // Once per batch, so the hot path of `next` takes no lock.
        if let Ok(mut published) = self.published.lock() {
            published.clone_from(&self.seen);
        }
        result
    }

    async fn rewind(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        self.inner.rewind(positions).await
    }
}

/// Runs the benchmark.
pub async fn run(args: &StreamArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "stream",
        "the streamer end to end: Kafka into committed bronze Parquet in object storage",
    );
    let mut scratch = Scratch::default();
    let kafka = scratch.topic(&args.kafka);
    let lake = scratch.lake(&args.storage, "bench-stream");
    report
        .parameter("messages", args.messages)
        .parameter("partitions", args.partitions)
        .parameter("batch_max_rows", args.batch_max_rows)
        .parameter("batch_interval_secs", args.batch_interval_secs)
        .parameter("topic", kafka.topic.clone())
        .parameter("lake_url", lake.lake_url.clone());
    let result = measure(args, &kafka, &lake, &mut report).await;
    scratch.remove(args.keep).await;
    result?;
    Ok(report)
}

async fn measure(
    args: &StreamArgs,
    kafka: &KafkaOptions,
    lake: &StorageOptions,
    report: &mut Report,
) -> anyhow::Result<()> {
    let produced = produce(args, kafka).await?;
    report.throughput("produce_", args.messages, produced.wall, None);
    if let Some(mb) = produced.peak_rss_mb {
        report.number("produce_peak_rss_mb", mb, 1);
    }
    stream(args, kafka, lake, report).await
}

/// Fills the topic with `fintech produce`, in a process of its own.
async fn produce(args: &StreamArgs, kafka: &KafkaOptions) -> anyhow::Result<process::Finished> {
    let mut command = Command::new(fintech_binary()?);
    command
        .args(["produce", "--log-format", "json"])
        .args(["--bootstrap-servers", &kafka.bootstrap_servers])
        .args(["--topic", &kafka.topic])
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--count", &args.messages.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--start-time", &super::timeline_start().to_rfc3339()])
        .args(["--payments-per-day", &super::PAYMENTS_PER_DAY.to_string()]);
    for (key, value) in &kafka.properties {
        command.args(["--kafka-property", &format!("{key}={value}")]);
    }
    process::run("the producer (fintech produce)", command).await
}

/// Streams the topic into the lake until every message is committed.
async fn stream(
    args: &StreamArgs,
    kafka: &KafkaOptions,
    lake: &StorageOptions,
    report: &mut Report,
) -> anyhow::Result<()> {
    let group = unique_name("bench-streamer");
    let cancel = CancellationToken::new();
    let published = Arc::new(Mutex::new(Observations::default()));
    let source = KafkaSource::new(kafka, &group, LagGauge::default())
        .with_context(|| format!("joining consumer group {group}"))?;
    let source = Observed {
        inner: source,
        expected: args.messages,
        cancel: cancel.clone(),
        seen: Observations::default(),
        published: published.clone(),
    };
    let policy = BatchPolicy {
        interval: Duration::from_secs(args.batch_interval_secs),
        max_rows: usize::try_from(args.batch_max_rows)?,
        ..BatchPolicy::default()
    };
    let streamer = Streamer::new(
        source,
        Lake::open(lake)?,
        policy,
        StreamerMetrics::default(),
    );
    let cpu = process::CpuClock::start();
    let started = Instant::now();
    let summary = tokio::select! {
        summary = streamer.run(cancel) => summary?,
        () = tokio::time::sleep(Duration::from_secs(args.give_up_after_secs)) => {
            let seen = published.lock().map(|o| o.messages).unwrap_or_default();
            bail!("the streamer had not committed every message after {} s ({seen} of {} committed)", args.give_up_after_secs, args.messages);
        }
    };
    let wall = started.elapsed();
    let cpu_used = cpu.used();
    let seen = published.lock().map(|o| o.clone()).unwrap_or_default();
    if summary.messages != args.messages {
        bail!(
            "the streamer committed {} messages of the {} produced",
            summary.messages,
            args.messages
        );
    }
    let (Some(first), Some(last_commit)) = (seen.first_message, seen.last_commit) else {
        bail!("the streamer committed nothing");
    };
    let bronze = scratch::list_lake(lake, layout::TRANSACTIONS_PREFIX).await?;
    let bronze_bytes: u64 = bronze.iter().map(|object| object.size).sum();
    report
        .throughput("", summary.messages, last_commit - first, Some(seen.bytes))
        .number("startup_seconds", (first - started).as_secs_f64(), 3)
        .cpu(cpu_used, wall)
        .figure("bronze_rows", summary.rows)
        .figure("dead_letters", summary.dead_letters)
        .figure("batches", summary.batches)
        .figure("files", bronze.len())
        .number("bronze_mb", bronze_bytes as f64 / MB, 1)
        .latencies("batch_commit_latency", &seen.commit_latencies)
        .peak_rss()
        .target(Target::at_least("rows_per_sec", 500_000.0, "records/s"))
        // The streamer's own bound, tighter than the other workers' 150 MB.
        .target(Target::at_most("peak_rss_mb", 64.0, "MB"))
        .target(Target::at_most("produce_peak_rss_mb", 150.0, "MB"));
    Ok(())
}
