//! Command-line interface. Every flag has a `FINTECH_*` environment fallback, so a pod's
//! environment and a laptop's flags configure the same thing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use prometheus_client::registry::Registry;

use fintech_workers::faults::FaultRates;
use fintech_workers::kafka::{self, KafkaOptions, KafkaSink, TopicOptions, TopicState};
use fintech_workers::producer::{
    self, EventStream, KaggleTime, ProducerMetrics, RunLimits, StreamConfig,
};
use fintech_workers::shutdown;
use fintech_workers::status_server::{self, Readiness};
use fintech_workers::telemetry::{self, LogFormat};

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
}

impl Command {
    /// Runs the chosen stage.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Produce(args) => produce(args).await,
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

    /// Seed of every random choice; the same seed gives the same events.
    #[arg(long, env = "FINTECH_SEED", default_value_t = 42)]
    seed: u64,

    /// A Kaggle `fraudTrain.csv` export to replay; without it every payment is synthetic.
    #[arg(long, env = "FINTECH_KAGGLE_CSV")]
    kaggle_csv: Option<PathBuf>,

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
}

/// Fault injection rates, each between 0 and 1, default 0.
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
    fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            seed: self.seed,
            kaggle_csv: self.kaggle_csv.clone(),
            kaggle_share: self.kaggle_share,
            kaggle_time: self.kaggle_time,
            simulated_start: self.start_time,
            payments_per_day: self.payments_per_day,
            settlement_share: self.settlement_share,
            settlement_failure_rate: self.settlement_failure_rate,
            fraud_rate: self.fraud_rate,
            faults: FaultRates::from(&self.faults),
        }
    }
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of messages per second, got {rate}");
    }
    let cancel = shutdown::on_signal().context("installing signal handlers")?;
    let metrics = ProducerMetrics::default();
    // Open the Kaggle file and check every setting before touching Kafka.
    let mut stream = EventStream::new(&args.stream_config(), metrics.clone())?;

    let readiness = Readiness::default();
    let server = match args.metrics_addr {
        Some(address) => {
            let mut registry = Registry::default();
            metrics.register(&mut registry);
            let server = status_server::serve(address, registry, readiness.clone(), cancel.clone())
                .await
                .with_context(|| format!("binding the metrics address {address}"))?;
            Some(server)
        }
        None => None,
    };

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
    let mut sink = KafkaSink::new(&args.kafka, Duration::from_secs(args.flush_timeout_secs))
        .context("creating the Kafka producer")?;
    readiness.set(true);

    let limits = RunLimits {
        count: args.count,
        rate: args.rate,
    };
    let progress = telemetry::progress_bar(args.count, "produce");
    let summary = producer::run(&mut stream, &mut sink, limits, &cancel, &progress).await?;
    tracing::info!(
        sent = summary.sent,
        delivered = summary.report.delivered,
        failed = summary.report.failed,
        settlements_waiting = summary.settlements_waiting,
        "producer finished"
    );
    cancel.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    if summary.report.failed > 0 {
        bail!(
            "{} of {} messages could not be delivered to Kafka (see the errors above)",
            summary.report.failed,
            summary.sent
        );
    }
    Ok(())
}
