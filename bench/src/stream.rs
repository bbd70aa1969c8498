//! Stage 3: the streamer end to end against a real broker and object store: records per
//! second from Kafka into committed bronze Parquet, the latency of each batch's commit, and
//! the streamer's peak memory.
//!
//! `fintech produce` first fills a fresh topic in a process of its own (its throughput and
//! memory are reported too); then the real [`Streamer`] reads the topic with a real
//! [`KafkaSource`] until every message is committed. The source is wrapped by [`Observed`],
//! which only watches: when messages arrive and when commits return. With `--streamers N`,
//! N streamers in one consumer group share the topic, each a task of the benchmark's
//! multi-threaded runtime (one thread per core it may use).

use std::process::Command;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

    /// Streamers in one consumer group sharing the topic; give the process as many cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub streamers: u32,

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

/// What the streamers of one run have read between them: the highest offset seen in each
/// partition. Offsets of a fresh topic start at 0 and have no gaps, so the messages read at
/// least once number the sum of those offsets plus one each, whichever streamer read them
/// and however often a rebalance made one read them again.
struct ReadSoFar {
    expected: u64,
    arrivals: AtomicU64,
    highest: Vec<AtomicI64>,
    cancel: CancellationToken,
}

impl ReadSoFar {
    fn new(expected: u64, partitions: i32, cancel: CancellationToken) -> Self {
        Self {
            expected,
            arrivals: AtomicU64::new(0),
            highest: (0..partitions).map(|_| AtomicI64::new(-1)).collect(),
            cancel,
        }
    }

    /// Notes a message; cancels every streamer once each message has been read.
    fn note(&self, partition: i32, offset: i64) {
        if let Some(highest) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.highest.get(p))
        {
            highest.fetch_max(offset, Ordering::Relaxed);
        }
        // Summing the partitions on every message would cost more than the rest; arrivals
        // (re-reads included) reach the expected count no sooner than the distinct ones.
        if self.arrivals.fetch_add(1, Ordering::Relaxed) + 1 < self.expected {
            return;
        }
        let distinct: i64 = self
            .highest
            .iter()
            .map(|h| h.load(Ordering::Relaxed) + 1)
            .sum();
        if u64::try_from(distinct).is_ok_and(|d| d >= self.expected) {
            self.cancel.cancel();
        }
    }
}

/// A source that passes everything through and notes when messages arrive and commits
/// return. It cancels the streamers once every message has been read, which makes each
/// streamer write and commit its open batch and stop, as on SIGTERM.
struct Observed<S> {
    inner: S,
    read: Arc<ReadSoFar>,
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
            self.read.note(message.partition, message.offset);
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
        .parameter("streamers", args.streamers)
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
    let read = Arc::new(ReadSoFar::new(
        args.messages,
        args.partitions,
        cancel.clone(),
    ));
    let policy = BatchPolicy {
        interval: Duration::from_secs(args.batch_interval_secs),
        max_rows: usize::try_from(args.batch_max_rows)?,
        ..BatchPolicy::default()
    };
    let mut published = Vec::new();
    let mut streamers = Vec::new();
    for _ in 0..args.streamers {
        let source = KafkaSource::new(kafka, &group, LagGauge::default())
            .with_context(|| format!("joining consumer group {group}"))?;
        let observations = Arc::new(Mutex::new(Observations::default()));
        let source = Observed {
            inner: source,
            read: read.clone(),
            seen: Observations::default(),
            published: observations.clone(),
        };
        published.push(observations);
        streamers.push(Streamer::new(
            source,
            Lake::open(lake)?,
            policy,
            StreamerMetrics::default(),
        ));
    }
    let cpu = process::CpuClock::start();
    let started = Instant::now();
    // A task each, so that the runtime's threads run them side by side.
    let running: Vec<_> = streamers
        .into_iter()
        .map(|streamer| tokio::spawn(streamer.run(cancel.clone())))
        .collect();
    let finished = tokio::time::timeout(
        Duration::from_secs(args.give_up_after_secs),
        futures::future::join_all(running),
    )
    .await;
    let committed = |published: &[Arc<Mutex<Observations>>]| -> u64 {
        published
            .iter()
            .map(|o| o.lock().map(|o| o.messages).unwrap_or_default())
            .sum()
    };
    let Ok(finished) = finished else {
        cancel.cancel();
        bail!(
            "the streamers had not committed every message after {} s ({} of {} read)",
            args.give_up_after_secs,
            committed(&published),
            args.messages
        );
    };
    let wall = started.elapsed();
    let cpu_used = cpu.used();
    let mut summaries = Vec::new();
    for result in finished {
        summaries.push(result.context("a streamer task panicked")??);
    }
    let seen: Vec<Observations> = published
        .iter()
        .map(|o| o.lock().map(|o| o.clone()).unwrap_or_default())
        .collect();
    let total = |field: fn(&fintech_workers::streamer::StreamSummary) -> u64| -> u64 {
        summaries.iter().map(field).sum()
    };
    let (messages, rows) = (total(|s| s.messages), total(|s| s.rows));
    // A rebalance can make a streamer read messages that another then commits: those count
    // in both summaries, never fewer than the messages produced.
    if messages < args.messages {
        bail!(
            "the streamers committed {messages} messages of the {} produced",
            args.messages
        );
    }
    let first = seen.iter().filter_map(|o| o.first_message).min();
    let last_commit = seen.iter().filter_map(|o| o.last_commit).max();
    let (Some(first), Some(last_commit)) = (first, last_commit) else {
        bail!("the streamers committed nothing");
    };
    let bytes: u64 = seen.iter().map(|o| o.bytes).sum();
    let latencies: Vec<Duration> = seen
        .iter()
        .flat_map(|o| o.commit_latencies.iter().copied())
        .collect();
    let bronze = scratch::list_lake(lake, layout::TRANSACTIONS_PREFIX).await?;
    let bronze_bytes: u64 = bronze.iter().map(|object| object.size).sum();
    report
        .throughput("", args.messages, last_commit - first, Some(bytes))
        .number("startup_seconds", (first - started).as_secs_f64(), 3)
        .cpu(cpu_used, wall)
        .figure("messages_read", messages)
        .figure("bronze_rows", rows)
        .figure("dead_letters", total(|s| s.dead_letters))
        .figure("batches", total(|s| s.batches))
        .figure("files", bronze.len())
        .number("bronze_mb", bronze_bytes as f64 / MB, 1)
        .latencies("batch_commit_latency", &latencies)
        .peak_rss();
    // The targets are for one streamer on one core.
    if args.streamers == 1 {
        report
            .target(Target::at_least("rows_per_sec", 500_000.0, "records/s"))
            // The streamer's own bound, tighter than the other workers' 150 MB.
            .target(Target::at_most("peak_rss_mb", 64.0, "MB"))
            .target(Target::at_most("produce_peak_rss_mb", 150.0, "MB"));
    }
    Ok(())
}
