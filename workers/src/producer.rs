//! `fintech produce`: payment events into Kafka (or the in-process channel).
//!
//! [`EventStream`] is the deterministic part: it mixes Kaggle replay and synthetic payments,
//! runs the settlement lifecycle and injects faults, one message at a time. [`run`] is the
//! I/O part: it paces the stream, hands messages to an [`EventSink`], and reports what was
//! delivered.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use fintech_status_server::report::WorkerStatus;

use crate::clock::EventClock;
use crate::event::{EventSource, PaymentEvent, PaymentStatus};
use crate::faults::{Fault, FaultInjector, FaultRates};
use crate::harness::{Exposed, Progress};
use crate::kaggle::{self, KaggleLocation, KaggleReader};
use crate::settlement::{SettlementSchedule, Unsettled};
use crate::sink::{DeliveryReport, EventSink, Message, SinkError};
use crate::synthetic::{SyntheticGenerator, random_uuid};

/// Bad Kaggle rows logged one by one before only every 1000th is.
const LOGGED_BAD_ROWS: u64 = 100;

/// Where Kaggle rows get their event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KaggleTime {
    /// The row's own `trans_date_trans_time` (2019-2020).
    Original,
    /// The producer's clock, as if the payment happened now.
    Rebased,
}

/// Everything that decides which events are made, validated by [`StreamConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Seed of every random choice; the same seed gives the same events.
    pub seed: u64,
    /// Kaggle export to replay, if any.
    pub kaggle_csv: Option<KaggleLocation>,
    /// Share of payments replayed from the Kaggle file when one is given.
    pub kaggle_share: f64,
    /// Event time of Kaggle rows.
    pub kaggle_time: KaggleTime,
    /// Start of a simulated timeline; `None` uses the wall clock.
    pub simulated_start: Option<DateTime<Utc>>,
    /// Payments per day on the simulated timeline.
    pub payments_per_day: u32,
    /// Share of payments emitted `PENDING` first and settled later.
    pub settlement_share: f64,
    /// Share of settlements that fail.
    pub settlement_failure_rate: f64,
    /// Shortest and longest time from a pending payment to its settlement.
    pub settlement_delay: (chrono::Duration, chrono::Duration),
    /// Share of synthetic payments labelled fraudulent (before risk factors).
    pub fraud_rate: f64,
    /// Fault injection rates.
    pub faults: FaultRates,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            kaggle_csv: None,
            kaggle_share: 0.7,
            kaggle_time: KaggleTime::Rebased,
            simulated_start: None,
            payments_per_day: 50_000,
            settlement_share: 0.2,
            settlement_failure_rate: 0.1,
            settlement_delay: crate::settlement::SETTLEMENT_DELAY,
            fraud_rate: 0.004,
            faults: FaultRates::default(),
        }
    }
}

impl StreamConfig {
    /// Checks the shares and rates, naming the first that is out of range.
    pub fn validate(&self) -> Result<(), ProduceError> {
        let shares = [
            ("kaggle-share", self.kaggle_share),
            ("settlement-share", self.settlement_share),
            ("settlement-failure-rate", self.settlement_failure_rate),
            ("fraud-rate", self.fraud_rate),
        ];
        for (name, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(ProduceError::Config(format!(
                    "--{name} must be between 0 and 1, got {value}"
                )));
            }
        }
        let (shortest, longest) = self.settlement_delay;
        if shortest < chrono::Duration::zero() || longest < shortest {
            return Err(ProduceError::Config(format!(
                "the settlement delay must be 0 or more and its maximum at least its minimum, \
                 got {}..{} s",
                shortest.num_seconds(),
                longest.num_seconds()
            )));
        }
        if self.payments_per_day == 0 {
            return Err(ProduceError::Config(
                "--payments-per-day must be at least 1".to_owned(),
            ));
        }
        self.faults.validate().map_err(ProduceError::Config)
    }
}

/// Errors that stop the producer.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// A setting is out of range or inconsistent.
    #[error("invalid producer configuration: {0}")]
    Config(String),
    /// The Kaggle file is missing, is not an export, or cannot be read.
    #[error(transparent)]
    Kaggle(#[from] kaggle::OpenError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Kind of payment in a message, for metrics (label `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A new payment.
    Payment,
    /// A later status change of a pending payment.
    Settlement,
}

/// One message of the stream, with what it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The message for the sink.
    pub message: Message,
    /// The event before encoding (and before undecodable faults).
    pub event: PaymentEvent,
    /// Payment or settlement.
    pub kind: MessageKind,
    /// Faults injected into this message.
    pub faults: Vec<Fault>,
}

/// Metrics of the producer. Unregistered (and so invisible) unless [`Self::register`]ed.
#[derive(Clone, Default)]
pub struct ProducerMetrics {
    messages: Family<MessageLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    kaggle_rows_skipped: Counter,
    delivered: Counter,
    delivery_failures: Counter,
    settlements_waiting: Gauge,
    /// When Kafka last acknowledged a message (Unix seconds); 0 before the first.
    last_delivery: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    source: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    fault: &'static str,
}

impl ProducerMetrics {
    fn message_sent(&self, outgoing: &Outgoing) {
        self.messages
            .get_or_create(&MessageLabels {
                source: outgoing.event.source.as_str(),
                status: outgoing.event.status.as_str(),
            })
            .inc();
        for fault in &outgoing.faults {
            self.faults
                .get_or_create(&FaultLabels {
                    fault: fault.as_str(),
                })
                .inc();
        }
    }

    fn kaggle_row_skipped(&self, error: &kaggle::RowError) {
        let skipped = self.kaggle_rows_skipped.inc() + 1;
        if skipped <= LOGGED_BAD_ROWS || skipped.is_multiple_of(1000) {
            tracing::warn!(line = error.line, reason = %error.reason, skipped, "skipping malformed Kaggle row");
        }
    }

    fn delivery_report(&self, report: &DeliveryReport) {
        let new = report.delivered.saturating_sub(self.delivered.get());
        if new > 0 {
            self.delivered.inc_by(new);
            self.last_delivery.set(Utc::now().timestamp());
        }
        self.delivery_failures
            .inc_by(report.failed.saturating_sub(self.delivery_failures.get()));
    }
}

impl Exposed for ProducerMetrics {
    /// Registers the metrics under `fintech_producer_*`.
    fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("fintech_producer");
        registry.register(
            "messages",
            "Messages handed to the sink, by event source and payment status",
            self.messages.clone(),
        );
        registry.register(
            "faults_injected",
            "Faults injected on purpose, by fault",
            self.faults.clone(),
        );
        registry.register(
            "kaggle_rows_skipped",
            "Malformed Kaggle CSV rows skipped",
            self.kaggle_rows_skipped.clone(),
        );
        registry.register(
            "delivered",
            "Messages the broker acknowledged",
            self.delivered.clone(),
        );
        registry.register(
            "delivery_failures",
            "Messages that could not be delivered",
            self.delivery_failures.clone(),
        );
        registry.register(
            "last_delivery_timestamp_seconds",
            "When Kafka last acknowledged a message (Unix time)",
            self.last_delivery.clone(),
        );
        registry.register(
            "settlements_waiting",
            "Settlements scheduled but not yet due",
            self.settlements_waiting.clone(),
        );
    }

    /// What the producer last did, for its `/status`: messages Kafka acknowledged and when
    /// it last did.
    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            worker: "producer".to_owned(),
            rows_total: self.delivered.get(),
            last_progress_at: Some(self.last_delivery.get()).filter(|&at| at > 0),
            ..WorkerStatus::default()
        }
    }
}

/// What a producer on the live clock learns from the topic when it starts, read back over
/// the longest settlement delay: the payments earlier runs left `PENDING`, and the last
/// Kaggle row they sent.
pub struct ReadBack {
    /// Payments still to settle.
    pub unsettled: Unsettled,
    /// The latest Kaggle payment by event time: its time and `transaction_id` (the row's
    /// `trans_num`). Rebased rows carry the time they were sent; original times follow the
    /// export's order.
    pub last_kaggle: Option<(DateTime<Utc>, String)>,
    /// Tells a settlement from a payment: a settlement's event id follows from its
    /// transaction id.
    settlements: SettlementSchedule,
}

impl ReadBack {
    /// An empty read-back for a stream configured by `config`.
    pub fn new(config: &StreamConfig) -> Self {
        Self {
            unsettled: Unsettled::default(),
            last_kaggle: None,
            settlements: SettlementSchedule::new(
                config.settlement_share,
                config.settlement_failure_rate,
                config.settlement_delay,
                0,
            ),
        }
    }

    /// Takes in one message of the topic; one that does not decode (a dead letter in the
    /// making) is passed over.
    pub fn observe(&mut self, payload: &[u8]) {
        let Ok(event) = crate::bronze::decode::decode(Some(payload), usize::MAX) else {
            return;
        };
        // Only a Kaggle event later than the latest so far is checked for being a
        // settlement, which costs a generator per event.
        let later_kaggle = event.source == EventSource::Kaggle
            && self
                .last_kaggle
                .as_ref()
                .is_none_or(|(time, _)| event.event_time >= *time);
        if later_kaggle && !self.is_settlement(&event) {
            self.last_kaggle = Some((event.event_time, event.transaction_id.clone()));
        }
        self.unsettled.observe(event);
    }

    fn is_settlement(&self, event: &PaymentEvent) -> bool {
        event.status != PaymentStatus::Pending
            && self.settlements.settlement_of(event).event_id == event.event_id
    }
}

/// The deterministic stream of messages.
pub struct EventStream {
    clock: EventClock,
    synthetic: SyntheticGenerator,
    kaggle: Option<KaggleReader<Box<dyn std::io::Read + Send>>>,
    /// Where the Kaggle file is, to open it again.
    kaggle_location: Option<KaggleLocation>,
    kaggle_share: f64,
    kaggle_time: KaggleTime,
    settlements: SettlementSchedule,
    faults: FaultInjector,
    rng: StdRng,
    buffer: std::collections::VecDeque<Outgoing>,
    metrics: ProducerMetrics,
}

impl EventStream {
    /// Opens the Kaggle file (if any) and seeds every generator from `config.seed`.
    pub fn new(config: &StreamConfig, metrics: ProducerMetrics) -> Result<Self, ProduceError> {
        config.validate()?;
        let kaggle = match &config.kaggle_csv {
            Some(location) => Some(location.open()?),
            None => None,
        };
        // Each part draws from its own generator, so that turning one feature on does not
        // change the choices of the others.
        let seed = config.seed;
        let clock = match config.simulated_start {
            Some(start) => EventClock::simulated(start, config.payments_per_day, seed ^ 0x1),
            None => EventClock::Live,
        };
        Ok(Self {
            clock,
            synthetic: SyntheticGenerator::new(seed, config.fraud_rate),
            kaggle,
            kaggle_location: config.kaggle_csv.clone(),
            kaggle_share: config.kaggle_share,
            kaggle_time: config.kaggle_time,
            settlements: SettlementSchedule::new(
                config.settlement_share,
                config.settlement_failure_rate,
                config.settlement_delay,
                seed ^ 0x2,
            ),
            faults: FaultInjector::new(config.faults, seed ^ 0x3),
            rng: StdRng::seed_from_u64(seed ^ 0x4),
            buffer: std::collections::VecDeque::new(),
            metrics,
        })
    }

    /// The next message: a settlement that has come due, or else a new payment.
    pub fn next_message(&mut self) -> Result<Outgoing, ProduceError> {
        while self.buffer.is_empty() {
            let (event, kind) = match self.settlements.due(self.clock.now()) {
                Some(settlement) => (settlement, MessageKind::Settlement),
                None => (self.next_payment()?, MessageKind::Payment),
            };
            self.metrics
                .settlements_waiting
                .set(i64::try_from(self.settlements.waiting()).unwrap_or(i64::MAX));
            let key = event.transaction_id.clone();
            for encoded in self.faults.encode(event.clone()) {
                self.buffer.push_back(Outgoing {
                    message: Message {
                        key: key.clone(),
                        payload: encoded.payload,
                    },
                    event: event.clone(),
                    kind,
                    faults: encoded.faults,
                });
            }
        }
        Ok(self
            .buffer
            .pop_front()
            .unwrap_or_else(|| unreachable!("the loop above fills the buffer")))
    }

    /// The stream's clock: where a simulated timeline has got to.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the Kaggle file past the row whose `trans_num` is `transaction_id`, the last one
    /// an earlier run sent (read back from the topic), so that a restarted producer goes on
    /// where that run stopped instead of sending the same payments again. Returns the rows
    /// passed over; `None` when no row has that `trans_num`, in which case the file is
    /// opened again and replayed from its first row.
    pub fn resume_kaggle_after(
        &mut self,
        transaction_id: &str,
    ) -> Result<Option<u64>, ProduceError> {
        let Some(reader) = self.kaggle.as_mut() else {
            return Ok(None);
        };
        let mut passed = 0;
        while let Some(row) = reader.next_row()? {
            passed += 1;
            if row.is_ok_and(|row| row.transaction_number == transaction_id) {
                return Ok(Some(passed));
            }
        }
        self.kaggle = match &self.kaggle_location {
            Some(location) => Some(location.open()?),
            None => None,
        };
        Ok(None)
    }

    /// Schedules again the settlements of `pending`, payments an earlier run emitted
    /// `PENDING` and did not settle (read back from the topic); returns how many.
    pub fn resume_settlements(&mut self, pending: impl IntoIterator<Item = PaymentEvent>) -> usize {
        let resumed = self.settlements.resume(pending);
        self.metrics
            .settlements_waiting
            .set(i64::try_from(self.settlements.waiting()).unwrap_or(i64::MAX));
        resumed
    }

    /// How far back a restarted producer reads the topic for payments still to settle: the
    /// longest settlement delay.
    pub fn settlement_horizon(&self) -> chrono::Duration {
        self.settlements.longest_delay()
    }

    /// Settlements scheduled but not yet due.
    pub fn settlements_waiting(&self) -> usize {
        self.settlements.waiting()
    }

    fn next_payment(&mut self) -> Result<PaymentEvent, ProduceError> {
        let now = self.clock.tick();
        let from_kaggle = self.kaggle.is_some() && self.rng.random_bool(self.kaggle_share);
        let mut payment = match from_kaggle {
            true => match self.next_kaggle_payment(now)? {
                Some(payment) => payment,
                None => self.synthetic.next_payment(now),
            },
            false => self.synthetic.next_payment(now),
        };
        self.settlements.on_payment(&mut payment);
        Ok(payment)
    }

    /// The next good Kaggle row as a payment; `None` once the file is exhausted, after
    /// which the stream is all synthetic.
    fn next_kaggle_payment(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Option<PaymentEvent>, ProduceError> {
        let Some(reader) = self.kaggle.as_mut() else {
            return Ok(None);
        };
        loop {
            match reader.next_row()? {
                Some(Ok(row)) => {
                    let time = match self.kaggle_time {
                        KaggleTime::Original => row.transaction_time,
                        KaggleTime::Rebased => now,
                    };
                    let event_id = random_uuid(&mut self.rng);
                    return Ok(Some(row.into_event(event_id, time)));
                }
                Some(Err(error)) => self.metrics.kaggle_row_skipped(&error),
                None => {
                    tracing::info!(
                        "Kaggle file replayed to the end; continuing with synthetic payments only"
                    );
                    self.kaggle = None;
                    return Ok(None);
                }
            }
        }
    }
}

/// When to stop, and how fast to go.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunLimits {
    /// Stop after this many messages; `None` runs until cancelled.
    pub count: Option<u64>,
    /// Messages per second; `None` is as fast as the sink accepts.
    pub rate: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProduceSummary {
    /// Messages handed to the sink.
    pub sent: u64,
    /// What the sink reported after the final flush.
    pub report: DeliveryReport,
    /// Settlements still scheduled when the run stopped.
    pub settlements_waiting: u64,
}

/// Runs `stream` into `sink` until `limits.count` messages are sent or `cancel` fires, then
/// flushes the sink. Every message is either acknowledged or counted as failed in the
/// summary; none is dropped silently. Each message handed to the sink advances `progress`
/// (a progress bar, a liveness heartbeat, or both).
pub async fn run<S: EventSink>(
    stream: &mut EventStream,
    sink: &mut S,
    limits: RunLimits,
    cancel: &CancellationToken,
    progress: &impl Progress,
) -> Result<ProduceSummary, ProduceError> {
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut last_report = Instant::now();
    while limits.count.is_none_or(|count| sent < count) && !cancel.is_cancelled() {
        if let Some(rate) = limits.rate {
            // Keep to the schedule: message n is due n / rate seconds after the start.
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::select! {
                    () = tokio::time::sleep(due - now) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
        let outgoing = stream.next_message()?;
        stream.metrics.message_sent(&outgoing);
        tokio::select! {
            result = sink.send(outgoing.message) => result?,
            () = cancel.cancelled() => break,
        }
        sent += 1;
        progress.advance(1);
        if last_report.elapsed() > Duration::from_secs(1) {
            last_report = Instant::now();
            // Deliveries so far, so that dashboards move during a long run.
            stream.metrics.delivery_report(&sink.report());
        }
    }
    let report = sink.flush().await?;
    stream.metrics.delivery_report(&report);
    progress.finish();
    Ok(ProduceSummary {
        sent,
        report,
        settlements_waiting: stream.settlements_waiting() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventSource, PaymentStatus};
    use crate::kaggle::fixtures;
    use crate::sink::ChannelSink;
    use chrono::{Datelike, TimeZone};
    use std::collections::HashMap;
    use std::io::Write;

    fn simulated(seed: u64) -> StreamConfig {
        StreamConfig {
            seed,
            simulated_start: Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()),
            payments_per_day: 2_000,
            ..StreamConfig::default()
        }
    }

    fn take(config: &StreamConfig, n: usize) -> Vec<Outgoing> {
        let mut stream = EventStream::new(config, ProducerMetrics::default()).unwrap();
        (0..n).map(|_| stream.next_message().unwrap()).collect()
    }

    /// A Kaggle file of `rows` good rows and one bad one, in the export's format.
    fn kaggle_file(rows: usize) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{}", fixtures::HEADER).unwrap();
        let template = fixtures::GOOD_ROWS.lines().nth(1).unwrap();
        for i in 0..rows {
            let row = template.replacen("1,", &format!("{i},"), 1).replace(
                "1f76529f8574734946361c461b024d99",
                &format!("kaggle-{i:08}"),
            );
            writeln!(file, "{row}").unwrap();
            if i == 10 {
                writeln!(file, "{i},not,enough,fields").unwrap();
            }
        }
        file
    }

    #[test]
    fn same_seed_gives_the_same_stream() {
        let payloads = |seed| {
            take(&simulated(seed), 300)
                .into_iter()
                .map(|o| o.message)
                .collect::<Vec<_>>()
        };
        assert_eq!(payloads(9), payloads(9));
        assert_ne!(payloads(9), payloads(10));
    }

    #[test]
    fn every_settlement_follows_its_pending_payment_in_the_stream() {
        let config = StreamConfig {
            settlement_share: 0.5,
            ..simulated(1)
        };
        // 2,000 payments a day over ~4 days: early settlements come due within the run.
        let outgoing = take(&config, 8_000);
        let mut pending: HashMap<&str, &PaymentEvent> = HashMap::new();
        let mut settled = 0;
        for o in &outgoing {
            assert_eq!(o.message.key, o.event.transaction_id);
            match o.kind {
                MessageKind::Payment => {
                    if o.event.status == PaymentStatus::Pending {
                        pending.insert(&o.event.transaction_id, &o.event);
                    }
                }
                MessageKind::Settlement => {
                    let payment = pending
                        .get(o.event.transaction_id.as_str())
                        .expect("a settlement comes after its pending payment");
                    let delay = o.event.event_time - payment.event_time;
                    let (min, max) = crate::settlement::SETTLEMENT_DELAY;
                    assert!(delay >= min && delay < max, "{delay}");
                    assert_ne!(o.event.status, PaymentStatus::Pending);
                    settled += 1;
                }
            }
        }
        assert!(settled > 1_000, "only {settled} settlements in the run");
        let payments = outgoing
            .iter()
            .filter(|o| o.kind == MessageKind::Payment)
            .count();
        let share = pending.len() as f64 / payments as f64;
        assert!((0.45..0.55).contains(&share), "pending share {share}");
    }

    #[test]
    fn mixes_kaggle_and_synthetic_at_the_configured_ratio() {
        let file = kaggle_file(5_000);
        let config = StreamConfig {
            kaggle_csv: Some(KaggleLocation::File(file.path().to_owned())),
            settlement_share: 0.0,
            ..simulated(2)
        };
        let outgoing = take(&config, 4_000);
        let kaggle = outgoing
            .iter()
            .filter(|o| o.event.source == EventSource::Kaggle)
            .count();
        let share = kaggle as f64 / outgoing.len() as f64;
        assert!((0.67..0.73).contains(&share), "kaggle share {share}");
        // Rebased Kaggle rows carry the simulated clock's time, not 2019.
        assert!(outgoing.iter().all(|o| o.event.event_time.year() == 2026));
    }

    #[test]
    fn skips_bad_kaggle_rows_and_goes_synthetic_when_the_file_ends() {
        let file = kaggle_file(50);
        let metrics = ProducerMetrics::default();
        let config = StreamConfig {
            kaggle_csv: Some(KaggleLocation::File(file.path().to_owned())),
            kaggle_share: 1.0,
            kaggle_time: KaggleTime::Original,
            settlement_share: 0.0,
            ..simulated(3)
        };
        let mut stream = EventStream::new(&config, metrics.clone()).unwrap();
        let outgoing: Vec<_> = (0..80).map(|_| stream.next_message().unwrap()).collect();
        assert!(
            outgoing[..50]
                .iter()
                .all(|o| o.event.source == EventSource::Kaggle)
        );
        assert!(
            outgoing[50..]
                .iter()
                .all(|o| o.event.source == EventSource::Synthetic)
        );
        assert_eq!(outgoing[0].event.event_time.year(), 2019);
        assert_eq!(metrics.kaggle_rows_skipped.get(), 1);
    }

    #[test]
    fn without_a_kaggle_file_everything_is_synthetic() {
        let outgoing = take(&simulated(4), 500);
        assert!(
            outgoing
                .iter()
                .all(|o| o.event.source == EventSource::Synthetic)
        );
    }

    #[test]
    fn out_of_range_settings_are_refused_by_flag_name() {
        let config = StreamConfig {
            kaggle_share: 1.2,
            ..StreamConfig::default()
        };
        let error = EventStream::new(&config, ProducerMetrics::default())
            .err()
            .unwrap();
        assert!(error.to_string().contains("--kaggle-share"), "{error}");
    }

    #[tokio::test]
    async fn run_sends_exactly_count_messages_and_stops_on_cancel() {
        let mut stream = EventStream::new(&simulated(5), ProducerMetrics::default()).unwrap();
        let (mut sink, mut receiver) = ChannelSink::new(1_000);
        let consumer = tokio::spawn(async move {
            let mut n = 0;
            while receiver.recv().await.is_some() {
                n += 1;
            }
            n
        });
        let limits = RunLimits {
            count: Some(700),
            rate: None,
        };
        let cancel = CancellationToken::new();
        let hidden = indicatif::ProgressBar::hidden();
        let summary = run(&mut stream, &mut sink, limits, &cancel, &hidden)
            .await
            .unwrap();
        drop(sink);
        assert_eq!(summary.sent, 700);
        assert_eq!(summary.report.delivered, 700);
        assert_eq!(consumer.await.unwrap(), 700);

        let (mut sink, _receiver) = ChannelSink::new(10_000);
        cancel.cancel();
        let summary = run(
            &mut stream,
            &mut sink,
            RunLimits::default(),
            &cancel,
            &hidden,
        )
        .await
        .unwrap();
        assert_eq!(summary.sent, 0);
    }
}
