//! The `fintech` command line: flags mapped to each stage's configuration. Every flag a pod
//! needs has a `FINTECH_*` environment fallback, so a pod's environment and a laptop's flags
//! configure the same thing (the operator renders that environment; a test parses it with
//! [`Cli`]). The stages' loops live in their modules and run inside a [`Harness`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::bank::file;
use crate::bank::load::BankFiles;
use crate::bank::statement::{BankFaults, DayStatement};
use crate::bronze::Lake;
use crate::faults::FaultRates;
use crate::harness::{BeatingSource, Harness};
use crate::kafka::KafkaSource;
use crate::kafka::{self, KafkaOptions, KafkaSink, TopicOptions, TopicState};
use crate::kaggle::KaggleLocation;
use crate::loader::rows::EventTimeBounds;
use crate::loader::{Loader, LoaderConfig, LoaderMetrics, RunFailed, Schedule};
use crate::producer::{
    self, EventStream, KaggleTime, ProducerMetrics, ReadBack, RunLimits, StreamConfig,
};
#[cfg(feature = "embedded")]
use crate::quickstart::{self, QuickstartConfig};
use crate::redrive::{self, RedriveOptions};
use crate::storage::StorageOptions;
use crate::streamer::{BatchPolicy, Streamer, StreamerMetrics};
use crate::telemetry::{self, LogFormat};
use crate::transform::{self, Project, TransformOptions};
#[cfg(feature = "embedded")]
use crate::warehouse::EmbeddedWarehouse;
use crate::warehouse::WarehouseOptions;

/// The fintech payment-analytics pipeline.
#[derive(Debug, Parser)]
#[command(name = "fintech", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "FINTECH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The pipeline's stages.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce payment events into Kafka.
    Produce(ProduceArgs),
    /// Stream payment events from Kafka into bronze Parquet files, exactly once.
    Stream(StreamArgs),
    /// Load bronze files into the PostgreSQL silver tables, audited.
    Load(LoadArgs),
    /// Build the gold tables from silver with the SQL models, then run the data tests.
    Transform(TransformArgs),
    /// Run the whole pipeline in this process on embedded parts: nothing to install.
    #[cfg(feature = "embedded")]
    Quickstart(QuickstartArgs),
    /// Serve the quickstart's embedded warehouse on a local port, for psql or any client.
    #[cfg(feature = "embedded")]
    Warehouse(WarehouseArgs),
    /// Send dead letters through the current decoder again, after a fix; the loader then
    /// loads those that decode.
    Redrive(RedriveArgs),
    /// Write the settlement file a bank would send for a day, from the payments on the
    /// topic, with faults put in on purpose if asked; the loader's bank-file runs load it.
    BankFile(BankFileArgs),
}

impl Command {
    /// The log level when `FINTECH_LOG` sets none: `info`, except for the quickstart on a
    /// terminal, whose progress bars and summary tell a person what happened (its log lines
    /// are for `FINTECH_LOG=info` and for files).
    pub fn default_log_level(&self) -> &'static str {
        #[cfg(feature = "embedded")]
        if matches!(self, Self::Quickstart(_))
            && std::io::IsTerminal::is_terminal(&std::io::stderr())
        {
            return "warn";
        }
        "info"
    }

    /// Runs the chosen stage.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Produce(args) => produce(args).await,
            Self::Stream(args) => stream(args).await,
            Self::Load(args) => load(args).await,
            Self::Transform(args) => transform_command(args).await,
            #[cfg(feature = "embedded")]
            Self::Quickstart(args) => quickstart_command(args).await,
            #[cfg(feature = "embedded")]
            Self::Warehouse(args) => warehouse_command(args).await,
            Self::Redrive(args) => redrive_command(args).await,
            Self::BankFile(args) => bank_file_command(args).await,
        }
    }
}

/// Flags of `fintech produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaOptions,

    #[command(flatten)]
    topic: TopicOptions,

    /// Seed of every random choice. With --start-time the same seed gives the same events;
    /// on the live clock it is mixed with the start time, so that a restarted producer makes
    /// new payments instead of repeating those it sent before.
    #[arg(long, env = "FINTECH_SEED", default_value_t = 42)]
    seed: u64,

    /// A Kaggle `fraudTrain.csv` export to replay: a local path, or `s3://bucket/key` read
    /// as a stream from the object store at --s3-endpoint; without it every payment is
    /// synthetic.
    #[arg(long, env = "FINTECH_KAGGLE_CSV")]
    kaggle_csv: Option<String>,

    /// S3 endpoint of an `s3://` Kaggle file, for S3-compatible servers such as MinIO.
    #[arg(long, env = "FINTECH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// S3 region of an `s3://` Kaggle file.
    #[arg(long, env = "FINTECH_S3_REGION")]
    s3_region: Option<String>,

    /// Share of payments replayed from the Kaggle file (when given).
    #[arg(long, env = "FINTECH_KAGGLE_SHARE", default_value_t = 0.7)]
    kaggle_share: f64,

    /// Event time of Kaggle rows: their original 2019-2020 time, or the producer's clock.
    #[arg(long, env = "FINTECH_KAGGLE_TIME", value_enum, default_value_t = KaggleTime::Rebased)]
    kaggle_time: KaggleTime,

    /// Start a simulated timeline at this time (RFC 3339) instead of using the wall clock;
    /// makes a run reproducible and lets it cover several days quickly.
    #[arg(long, env = "FINTECH_START_TIME")]
    start_time: Option<DateTime<Utc>>,

    /// Payments per day on the simulated timeline.
    #[arg(long, env = "FINTECH_PAYMENTS_PER_DAY", default_value_t = 50_000)]
    payments_per_day: u32,

    /// Share of payments emitted PENDING first and settled 1-3 days later.
    #[arg(long, env = "FINTECH_SETTLEMENT_SHARE", default_value_t = 0.2)]
    settlement_share: f64,

    /// Share of settlements that fail.
    #[arg(long, env = "FINTECH_SETTLEMENT_FAILURE_RATE", default_value_t = 0.1)]
    settlement_failure_rate: f64,

    /// Shortest time from a pending payment to its settlement (T+1 by default).
    #[arg(
        long,
        env = "FINTECH_SETTLEMENT_MIN_DELAY_SECS",
        default_value_t = 86_400
    )]
    settlement_min_delay_secs: u32,

    /// Longest time from a pending payment to its settlement. A restarted producer reads
    /// this far back in the topic for payments it has still to settle.
    #[arg(
        long,
        env = "FINTECH_SETTLEMENT_MAX_DELAY_SECS",
        default_value_t = 259_200
    )]
    settlement_max_delay_secs: u32,

    /// Share of synthetic payments labelled fraudulent, before risk factors.
    #[arg(long, env = "FINTECH_FRAUD_RATE", default_value_t = 0.004)]
    fraud_rate: f64,

    #[command(flatten)]
    faults: FaultArgs,

    /// Stop after this many messages; without it, run until SIGTERM.
    #[arg(long, env = "FINTECH_COUNT")]
    count: Option<u64>,

    /// Messages per second; without it, as fast as Kafka accepts.
    #[arg(long, env = "FINTECH_RATE")]
    rate: Option<f64>,

    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "FINTECH_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// How long the final flush may wait for outstanding deliveries.
    #[arg(long, env = "FINTECH_FLUSH_TIMEOUT_SECS", default_value_t = 60)]
    flush_timeout_secs: u64,

    /// Seconds the producer may go without handing a message to Kafka before `/healthz`
    /// answers 503 (and the kubelet restarts the pod). The longest legitimate wait is for
    /// room in librdkafka's queue while Kafka is away: it frees up as messages are delivered
    /// or expire after `delivery.timeout.ms` (300 s); the default is twice that. Raised to
    /// twice the gap between two messages at --rate and to --flush-timeout-secs when those
    /// are longer.
    #[arg(long, env = "FINTECH_PRODUCE_STALL_LIMIT_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    stall_limit_secs: u64,
}

/// Flags of `fintech stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    kafka: KafkaOptions,

    #[command(flatten)]
    storage: StorageOptions,

    /// Consumer group; streamers of one pipeline share it and split the partitions.
    #[arg(
        long,
        env = "FINTECH_CONSUMER_GROUP",
        default_value = "fintech-streamer"
    )]
    group_id: String,

    /// A batch closes this many seconds after its first message.
    #[arg(long, env = "FINTECH_BATCH_INTERVAL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    batch_interval_secs: u64,

    /// A batch closes when it holds this many messages.
    #[arg(long, env = "FINTECH_BATCH_MAX_ROWS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    batch_max_rows: u64,

    /// A batch closes when its messages weigh this many bytes.
    #[arg(long, env = "FINTECH_BATCH_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    batch_max_bytes: u64,

    /// A larger message goes to the dead-letter queue.
    #[arg(long, env = "FINTECH_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(64..))]
    max_message_bytes: u64,

    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "FINTECH_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Seconds the streamer's loop may go without asking Kafka for the next message before
    /// `/healthz` answers 503 (and the kubelet restarts the pod). It asks after every message
    /// and keeps asking while the topic is empty, so the longest legitimate step is closing a
    /// batch: encoding it (seconds), storing it (each object-store request retried for up to
    /// about 3 minutes) and committing it (up to 5 attempts). The default, 600 s, is above
    /// that; a store or broker away for longer makes the streamer exit with an error anyway.
    #[arg(long, env = "FINTECH_STREAM_STALL_LIMIT_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    stall_limit_secs: u64,
}

/// Flags of `fintech load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    storage: StorageOptions,

    #[command(flatten)]
    warehouse: WarehouseOptions,

    /// The topic whose bronze files are loaded.
    #[arg(long, env = "FINTECH_KAFKA_TOPIC", default_value = "transactions")]
    topic: String,

    /// Run once and exit (for a Job); without it, run every --interval-secs.
    #[arg(long, env = "FINTECH_LOAD_ONCE")]
    once: bool,

    /// Seconds between two runs.
    #[arg(long, env = "FINTECH_LOAD_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    interval_secs: u64,

    /// At most this many files per run; the rest waits for the next run.
    #[arg(long, env = "FINTECH_LOAD_MAX_FILES", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_files_per_run: u64,

    /// Rows whose event time is more than this many days before they were ingested are
    /// rejected as `implausible_event_time` (historical replays need it wide).
    #[arg(long, env = "FINTECH_EVENT_TIME_MAX_AGE_DAYS", default_value_t = 3_650, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    event_time_max_age_days: u32,

    /// Rows whose event time is more than this many hours after they were ingested are
    /// rejected as `implausible_event_time` (a producer's clock running ahead).
    #[arg(long, env = "FINTECH_EVENT_TIME_MAX_LEAD_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(0..=876_000))]
    event_time_max_lead_hours: u32,

    /// With --once, how long to keep trying to reach PostgreSQL before giving up.
    #[arg(long, env = "FINTECH_CONNECT_TIMEOUT_SECS", default_value_t = 60)]
    connect_timeout_secs: u64,

    /// Load every bronze file of event dates from this one (YYYY-MM-DD) again, loaded before
    /// or not, then exit: after a fix to validation, or to restore rows lost from silver.
    #[arg(long, requires = "replay_to")]
    replay_from: Option<chrono::NaiveDate>,

    /// Last event date (inclusive) of --replay-from.
    #[arg(long, requires = "replay_from")]
    replay_to: Option<chrono::NaiveDate>,

    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "FINTECH_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Seconds one load run may take before `/healthz` answers 503 (and the kubelet restarts
    /// the pod); the pause between runs and waiting for PostgreSQL at start count as
    /// progress. A run takes seconds, a catch-up run of --max-files-per-run files minutes,
    /// and it may first wait up to --database-lock-timeout-secs (10 min) for another's lock.
    /// A run cut short starts over from nothing, so the default is generous: 3600 s, the age
    /// at which `metadata.load_health` calls a run still `RUNNING` `stalled`.
    #[arg(long, env = "FINTECH_LOAD_STALL_LIMIT_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    stall_limit_secs: u64,

    /// After each successful run, load the bank's new settlement files from this folder
    /// (`s3://bucket/prefix` with the lake's endpoint, or `file:///path`) in a run of their
    /// own; without it, none are loaded.
    #[arg(long, env = "FINTECH_BANK_FILES_URL")]
    bank_files_url: Option<String>,
}

/// Flags of `fintech bank-file`.
#[derive(Debug, Args)]
pub struct BankFileArgs {
    #[command(flatten)]
    kafka: KafkaOptions,

    /// The object store's endpoint and region (its --lake-url is not used).
    #[command(flatten)]
    storage: StorageOptions,

    /// The settlement day (UTC) the file covers, YYYY-MM-DD.
    #[arg(long)]
    day: chrono::NaiveDate,

    /// Folder the file is written to, as settlements-YYYY-MM-DD.csv.
    #[arg(
        long,
        env = "FINTECH_BANK_FILES_URL",
        default_value = "s3://fintech/batch_files"
    )]
    bank_files_url: String,

    /// Hours before the day's start from which the topic is read: messages reach Kafka a
    /// little after their event time, never before it on a live clock.
    #[arg(long, default_value_t = 1)]
    read_from_hours_before: u32,

    /// Seed of the faults' choice; the same seed gives the same file.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    #[command(flatten)]
    faults: BankFaults,
}

/// Flags of `fintech redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    storage: StorageOptions,

    /// First day whose dead-letter folder is read (YYYY-MM-DD, the messages' Kafka date).
    #[arg(long)]
    from: chrono::NaiveDate,

    /// Last day, inclusive.
    #[arg(long)]
    to: chrono::NaiveDate,

    /// The topic the dead letters came from.
    #[arg(long, env = "FINTECH_KAFKA_TOPIC", default_value = "transactions")]
    topic: String,

    /// The largest payload the decoder accepts, as the streamer's --max-message-bytes.
    #[arg(long, env = "FINTECH_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(64..))]
    max_message_bytes: u64,

    /// Count what would be redriven; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Flags of `fintech transform`.
#[derive(Debug, Args)]
// Listing the models reads no database, so `--list` runs without a URL (the empty default
// only fills the field; clap still demands a URL given on the command line or in the
// environment whenever `--list` is absent).
#[command(mut_arg("database_url", |arg| {
    arg.required(false)
        .required_unless_present("list")
        .default_value("")
        .hide_default_value(true)
}))]
pub struct TransformArgs {
    #[command(flatten)]
    warehouse: WarehouseOptions,

    /// Run only this model and the models downstream of it.
    #[arg(long, env = "FINTECH_TRANSFORM_SELECT")]
    select: Option<String>,

    /// Rebuild incremental models from scratch (picks up settlements older than the window).
    #[arg(long, env = "FINTECH_FULL_REFRESH")]
    full_refresh: bool,

    /// Seconds before the latest change already in an incremental model that a run starts
    /// re-reading. Loads stamp rows in the order they commit, so this only covers the
    /// warehouse's clock stepping back.
    #[arg(long, env = "FINTECH_LOOKBACK_SECONDS", default_value_t = crate::transform::DEFAULT_LOOKBACK.as_secs(), value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    lookback_seconds: u64,

    /// Print the models in run order with what each reads, and the data tests; run nothing.
    #[arg(long)]
    list: bool,

    /// Read seeds, models and tests from this folder (laid out like `sql/`) instead of the
    /// ones built in.
    #[arg(long, env = "FINTECH_SQL_DIR")]
    sql_dir: Option<PathBuf>,
}

/// Flags of `fintech quickstart`.
#[cfg(feature = "embedded")]
#[derive(Debug, Args)]
// A demo shows every kind of bad input by default: a few dead letters (malformed JSON, wrong
// types), duplicates for silver to remove, and rows silver rejects.
#[command(
    mut_arg("fault_malformed_json", |arg| arg.default_value("0.002")),
    mut_arg("fault_wrong_type", |arg| arg.default_value("0.001")),
    mut_arg("fault_duplicate", |arg| arg.default_value("0.01")),
    mut_arg("fault_non_positive_amount", |arg| arg.default_value("0.002")),
    mut_arg("fault_null_customer_id", |arg| arg.default_value("0.002")),
)]
pub struct QuickstartArgs {
    /// Folder for the lake, the embedded warehouse and the report; a second run on the same
    /// folder continues where the first stopped.
    #[arg(
        long,
        env = "FINTECH_QUICKSTART_OUT",
        default_value = "fintech-quickstart"
    )]
    out: PathBuf,

    /// Messages to produce.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,

    /// Days of payments the messages cover.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,

    /// A Kaggle `fraudTrain.csv` export to mix in (70% of payments).
    #[arg(long)]
    kaggle_csv: Option<PathBuf>,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Share of payments emitted PENDING first and settled 1-3 days later.
    #[arg(long, default_value_t = 0.2)]
    settlement_share: f64,

    #[command(flatten)]
    faults: FaultArgs,
}

/// Flags of `fintech warehouse`.
#[cfg(feature = "embedded")]
#[derive(Debug, Args)]
pub struct WarehouseArgs {
    /// The quickstart's folder.
    #[arg(
        long,
        env = "FINTECH_QUICKSTART_OUT",
        default_value = "fintech-quickstart"
    )]
    out: PathBuf,

    /// Address to serve on. The embedded server has no password and every client is its
    /// superuser, so only a loopback address is accepted unless --allow-remote is given.
    #[arg(long, default_value = "127.0.0.1:5432")]
    listen: SocketAddr,

    /// Serve on a non-loopback address although anyone who reaches it gets full control of
    /// the database without a password.
    #[arg(long)]
    allow_remote: bool,
}

/// Fault injection rates, each between 0 and 1; 0 unless a command sets other defaults.
#[derive(Debug, Args)]
struct FaultArgs {
    /// Share of messages cut short so that they are not valid JSON.
    #[arg(long, env = "FINTECH_FAULT_MALFORMED_JSON", default_value_t = 0.0)]
    fault_malformed_json: f64,
    /// Share of messages with a field of the wrong JSON type.
    #[arg(long, env = "FINTECH_FAULT_WRONG_TYPE", default_value_t = 0.0)]
    fault_wrong_type: f64,
    /// Share of messages sent twice.
    #[arg(long, env = "FINTECH_FAULT_DUPLICATE", default_value_t = 0.0)]
    fault_duplicate: f64,
    /// Share of events with a zero or negative amount.
    #[arg(long, env = "FINTECH_FAULT_NON_POSITIVE_AMOUNT", default_value_t = 0.0)]
    fault_non_positive_amount: f64,
    /// Share of events without a customer id.
    #[arg(long, env = "FINTECH_FAULT_NULL_CUSTOMER_ID", default_value_t = 0.0)]
    fault_null_customer_id: f64,
}

impl From<&FaultArgs> for FaultRates {
    fn from(args: &FaultArgs) -> Self {
        Self {
            malformed_json: args.fault_malformed_json,
            wrong_type: args.fault_wrong_type,
            duplicate: args.fault_duplicate,
            non_positive_amount: args.fault_non_positive_amount,
            null_customer_id: args.fault_null_customer_id,
        }
    }
}

impl ProduceArgs {
    /// The stream's configuration, for a process that started at `started`.
    fn stream_config(&self, started: DateTime<Utc>) -> StreamConfig {
        StreamConfig {
            seed: self.stream_seed(started),
            kaggle_csv: self.kaggle_csv.as_deref().map(|location| {
                KaggleLocation::parse(location, self.s3_endpoint.clone(), self.s3_region.clone())
            }),
            kaggle_share: self.kaggle_share,
            kaggle_time: self.kaggle_time,
            simulated_start: self.start_time,
            payments_per_day: self.payments_per_day,
            settlement_share: self.settlement_share,
            settlement_failure_rate: self.settlement_failure_rate,
            settlement_delay: (
                chrono::Duration::seconds(self.settlement_min_delay_secs.into()),
                chrono::Duration::seconds(self.settlement_max_delay_secs.into()),
            ),
            fraud_rate: self.fraud_rate,
            faults: FaultRates::from(&self.faults),
        }
    }

    /// `--seed` itself on a simulated timeline, where the same seed gives the same events.
    /// On the live clock it is mixed with the start time: a pod keeps its `--seed` when it is
    /// rolled, resumed or rescheduled, and would otherwise send again, with the same event
    /// and transaction ids, the payments it sent before, which silver drops as duplicates:
    /// no new payment would arrive until it had caught up with its last run.
    fn stream_seed(&self, started: DateTime<Utc>) -> u64 {
        match self.start_time {
            Some(_) => self.seed,
            None => self.seed ^ started.timestamp_nanos_opt().unwrap_or_default() as u64,
        }
    }
}

async fn stream(args: StreamArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&args.storage)?;
    let metrics = StreamerMetrics::default();
    let stall_limit = Duration::from_secs(args.stall_limit_secs);
    let harness = Harness::start_with_stall_limit(args.metrics_addr, stall_limit, &metrics).await?;
    let source =
        KafkaSource::new(&args.kafka, &args.group_id, metrics.lag.clone()).with_context(|| {
            format!(
                "joining consumer group {:?} on {}",
                args.group_id, args.kafka.bootstrap_servers
            )
        })?;
    let policy = BatchPolicy {
        interval: Duration::from_secs(args.batch_interval_secs),
        max_rows: usize::try_from(args.batch_max_rows)?,
        max_bytes: usize::try_from(args.batch_max_bytes)?,
        max_message_bytes: usize::try_from(args.max_message_bytes)?,
    };
    tracing::info!(topic = %args.kafka.topic, group = %args.group_id, lake = %args.storage.lake_url, "streaming");
    harness.ready();
    // The loop asks its source for the next message once per iteration: those asks, and the
    // waits for a message, are its heartbeat.
    let source = BeatingSource::new(source, harness.heartbeat());
    let outcome = Streamer::new(source, lake, policy, metrics)
        .run(harness.cancel().clone())
        .await;
    if let Ok(summary) = &outcome {
        tracing::info!(
            messages = summary.messages,
            rows = summary.rows,
            dead_letters = summary.dead_letters,
            batches = summary.batches,
            "streamer finished"
        );
    }
    harness.finish(outcome).await?;
    Ok(())
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let replay_range = args.replay_from.zip(args.replay_to);
    if let Some((from, to)) = replay_range {
        anyhow::ensure!(from <= to, "--replay-from {from} is after --replay-to {to}");
    }
    let lake = Lake::open(&args.storage)?;
    let metrics = LoaderMetrics::default();
    // A replay is a one-off command, often run beside the loader (`kubectl exec` into its
    // pod), whose metrics address the loader holds already.
    let metrics_addr = args.metrics_addr.filter(|_| replay_range.is_none());
    let stall_limit = Duration::from_secs(args.stall_limit_secs);
    let harness = Harness::start_with_stall_limit(metrics_addr, stall_limit, &metrics).await?;
    let heartbeat = harness.heartbeat();
    let schedule = if args.once || replay_range.is_some() {
        Schedule::Once
    } else {
        Schedule::Every(Duration::from_secs(args.interval_secs))
    };
    // PostgreSQL being down at start is waited out, not a crash loop; a one-off run gives up.
    let give_up_after =
        (schedule == Schedule::Once).then(|| Duration::from_secs(args.connect_timeout_secs));
    // Retrying until PostgreSQL answers is progress: `/readyz` tells it is not there yet.
    let connecting = args
        .warehouse
        .connect_and_migrate_patiently(give_up_after, harness.cancel());
    let pool = match heartbeat.beat_while(connecting).await {
        Ok(Some(pool)) => pool,
        Ok(None) => return harness.finish(Ok(())).await,
        Err(error) => {
            let outcome = Err(error).context("giving up on the warehouse; no file was loaded");
            return harness.finish(outcome).await;
        }
    };
    harness.ready();
    let config = LoaderConfig {
        topic: args.topic.clone(),
        max_files_per_run: usize::try_from(args.max_files_per_run)?,
        event_time_bounds: EventTimeBounds {
            max_age: chrono::Duration::days(i64::from(args.event_time_max_age_days)),
            max_lead: chrono::Duration::hours(i64::from(args.event_time_max_lead_hours)),
        },
    };
    let mut loader = Loader::new(pool, lake, config, metrics);
    if let Some(url) = &args.bank_files_url {
        loader = loader.with_bank_files(BankFiles::open(url, &args.storage)?);
    }
    let outcome = match replay_range {
        Some((from, to)) => replay(&loader, from, to).await,
        None => loader
            .serve_with_heartbeat(schedule, harness.cancel(), &heartbeat)
            .await
            .map_err(anyhow::Error::from),
    };
    harness.finish(outcome).await
}

/// `fintech bank-file`: reads the topic from shortly before the day to its end now, collects
/// the day's settlements, and writes the file with the faults asked for.
async fn bank_file_command(args: BankFileArgs) -> anyhow::Result<()> {
    let files = BankFiles::open(&args.bank_files_url, &args.storage)?;
    let start = args.day.and_time(chrono::NaiveTime::MIN).and_utc();
    let since = start - chrono::Duration::hours(i64::from(args.read_from_hours_before));
    let (read, statement) = kafka::read_since(
        &args.kafka,
        since,
        DayStatement::new(args.day),
        DayStatement::record_message,
    )
    .await
    .with_context(|| format!("reading {} back from {since}", args.kafka.topic))?;
    let (text, faults) = statement.render(&args.faults, args.seed)?;
    let name = file::file_name(args.day);
    files.put(&name, text).await?;
    println!(
        "wrote {}/{name}: {} settled transactions of {} from {read} messages",
        files.url().trim_end_matches('/'),
        statement.len(),
        args.day
    );
    for fault in faults {
        println!("fault {} {}", fault.kind.as_str(), fault.transaction_id);
    }
    Ok(())
}

/// `fintech load --replay-from … --replay-to …`: the audited replay runs, summed up.
async fn replay(
    loader: &Loader,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> anyhow::Result<()> {
    let reports = loader.replay(from, to).await.map_err(RunFailed::from)?;
    let (mut files, mut read, mut loaded, mut rejected, mut duplicate) = (0, 0, 0, 0, 0);
    for report in &reports {
        tracing::info!(run_id = %report.run_id, status = %report.status, files = report.files_loaded, rows_loaded = report.rows_loaded, "replay run finished");
        if let Some(error) = &report.error {
            bail!(RunFailed {
                run_id: report.run_id,
                error: error.clone()
            });
        }
        files += report.files_loaded;
        read += report.stats.read;
        loaded += report.rows_loaded;
        rejected += report.stats.rejected_total();
        duplicate += report.rows_duplicate;
    }
    println!(
        "replayed {from}..={to} in {} run(s): {files} files, {read} rows read, {loaded} loaded, \
         {duplicate} already in silver, {rejected} rejected",
        reports.len()
    );
    Ok(())
}

async fn redrive_command(args: RedriveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.from <= args.to,
        "--from {} is after --to {}",
        args.from,
        args.to
    );
    let lake = Lake::open(&args.storage)?;
    let options = RedriveOptions {
        from: args.from,
        to: args.to,
        topic: args.topic,
        max_message_bytes: usize::try_from(args.max_message_bytes)?,
        dry_run: args.dry_run,
    };
    let report = redrive::redrive(&lake, &options).await?;
    let failing: Vec<String> = report
        .still_failing
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!(
        "{} dead letters in {} files from {}..={}: {} decode now{}, {} still fail{}",
        report.dead_letters,
        report.files_read,
        args.from,
        args.to,
        report.redriven,
        if args.dry_run {
            " (dry run: nothing written)".to_owned()
        } else {
            format!(" ({} new files for the loader)", report.files_written)
        },
        report.dead_letters - report.redriven,
        if failing.is_empty() {
            String::new()
        } else {
            format!(" ({})", failing.join(", "))
        },
    );
    Ok(())
}

async fn transform_command(args: TransformArgs) -> anyhow::Result<()> {
    let project = match &args.sql_dir {
        Some(folder) => Project::from_folder(folder)?,
        None => Project::embedded()?,
    };
    if args.list {
        print!("{}", project.describe());
        println!();
        for test in &project.tests {
            println!("test {}", test.name);
        }
        return Ok(());
    }
    let pool = args.warehouse.connect_and_migrate().await?;
    let options = TransformOptions {
        select: args.select.clone(),
        full_refresh: args.full_refresh,
        lookback: Duration::from_secs(args.lookback_seconds),
    };
    let report = transform::run(&pool, &project, &options).await?;
    for node in &report.nodes {
        let rows = node.rows.map(|r| r.to_string()).unwrap_or_default();
        println!(
            "{:<8} {:<7} {:>10}  {}",
            node.status, node.kind, rows, node.node
        );
    }
    if report.failed() {
        bail!(
            "transform run {} failed:\n{}",
            report.run_id,
            report.failures()
        );
    }
    Ok(())
}

#[cfg(feature = "embedded")]
async fn quickstart_command(args: QuickstartArgs) -> anyhow::Result<()> {
    let config = QuickstartConfig {
        out: args.out,
        events: args.events,
        days: args.days,
        seed: args.seed,
        kaggle_csv: args.kaggle_csv,
        faults: FaultRates::from(&args.faults),
        settlement_share: args.settlement_share,
    };
    let summary = quickstart::run(&config).await?;
    println!("{}", summary.render());
    if summary.transform.failed() {
        bail!("data tests failed:\n{}", summary.transform.failures());
    }
    Ok(())
}

#[cfg(feature = "embedded")]
async fn warehouse_command(args: WarehouseArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "--listen {} is reachable from other machines, and the embedded warehouse has no \
             password: anyone who reaches it is its superuser. Serve on a loopback address \
             (127.0.0.1), or add --allow-remote if you mean it",
            args.listen
        );
    }
    let folder = args.out.join("warehouse");
    if !folder.exists() {
        bail!(
            "{} has no warehouse yet; run `fintech quickstart --out {}` first",
            args.out.display(),
            args.out.display()
        );
    }
    let warehouse = EmbeddedWarehouse::start_on(&folder, Some(args.listen))?;
    println!(
        "The quickstart warehouse is serving at\n\n  {}\n",
        warehouse.options().database_url
    );
    println!(
        "Try: psql \"{}\" -c 'select * from marts.daily_revenue_summary limit 10'",
        warehouse.options().database_url
    );
    println!("It serves one connection at a time. Stop with Ctrl-C.");
    let harness = Harness::without_server().await?;
    harness.cancel().cancelled().await;
    harness.finish(warehouse.shutdown().await).await?;
    Ok(())
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of messages per second, got {rate}");
    }
    let metrics = ProducerMetrics::default();
    // Open the Kaggle file and check every setting before touching Kafka.
    let config = args.stream_config(Utc::now());
    if args.start_time.is_none() {
        tracing::info!(
            seed = config.seed,
            "live clock: the seed is --seed mixed with the start time, so every start makes new payments"
        );
    }
    let mut stream = EventStream::new(&config, metrics.clone())?;
    // Neither the pace of --rate nor the final flush is a stall.
    let pace = args.rate.map_or(Duration::ZERO, |rate| {
        Duration::try_from_secs_f64(2.0 / rate).unwrap_or(Duration::MAX)
    });
    let stall_limit = Duration::from_secs(args.stall_limit_secs)
        .max(Duration::from_secs(args.flush_timeout_secs))
        .max(pace);
    let harness = Harness::start_with_stall_limit(args.metrics_addr, stall_limit, &metrics).await?;

    let state = kafka::ensure_topic(&args.kafka, &args.topic)
        .await
        .with_context(|| {
            format!(
                "creating topic {:?} on {} (is Kafka reachable?)",
                args.kafka.topic, args.kafka.bootstrap_servers
            )
        })?;
    match state {
        TopicState::Created => {
            tracing::info!(topic = %args.kafka.topic, partitions = args.topic.partitions, "created topic")
        }
        TopicState::Existed => tracing::info!(topic = %args.kafka.topic, "topic exists"),
    }
    // On a live clock the schedule of settlements and the place in the Kaggle export outlive
    // the process in the topic itself: the payments still PENDING within the longest delay
    // are scheduled again, and the export goes on after the last row sent.
    if (args.settlement_share > 0.0 || args.kaggle_csv.is_some()) && args.start_time.is_none() {
        let since = Utc::now() - stream.settlement_horizon();
        let (read, found) = harness
            .heartbeat()
            .beat_while(kafka::read_since(
                &args.kafka,
                since,
                ReadBack::new(&config),
                ReadBack::observe,
            ))
            .await
            .with_context(|| format!("reading back topic {:?} since {since}", args.kafka.topic))?;
        let resumed = stream.resume_settlements(found.unsettled.into_pending());
        tracing::info!(read, resumed, %since, "scheduled the settlements earlier runs left waiting");
        if let Some((_, last)) = &found.last_kaggle {
            match stream.resume_kaggle_after(last)? {
                Some(passed) => tracing::info!(
                    passed,
                    last_sent = %last,
                    "the Kaggle export goes on after the last row an earlier run sent"
                ),
                None => tracing::warn!(
                    last_sent = %last,
                    "the last Kaggle row an earlier run sent is not in the export; replaying it from its first row"
                ),
            }
        }
    }
    let mut sink = KafkaSink::new(&args.kafka, Duration::from_secs(args.flush_timeout_secs))
        .context("creating the Kafka producer")?;
    harness.ready();

    let limits = RunLimits {
        count: args.count,
        rate: args.rate,
    };
    // Every message handed to Kafka moves the progress bar and beats the heartbeat.
    let progress = (
        telemetry::progress_bar(args.count, "produce"),
        harness.heartbeat(),
    );
    let outcome = producer::run(&mut stream, &mut sink, limits, harness.cancel(), &progress).await;
    let summary = harness.finish(outcome).await?;
    tracing::info!(
        sent = summary.sent,
        delivered = summary.report.delivered,
        failed = summary.report.failed,
        settlements_waiting = summary.settlements_waiting,
        "producer finished"
    );
    if summary.report.failed > 0 {
        bail!(
            "{} of {} messages could not be delivered to Kafka (see the errors above)",
            summary.report.failed,
            summary.sent
        );
    }
    Ok(())
}
