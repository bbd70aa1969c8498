//! Kafka for the tests: a topic filled by `fintech produce`, streamers reading it into a lake,
//! the checks that every message was stored once, and pausing the broker itself.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fintech_workers::bronze::{Lake, decode};
use fintech_workers::faults::FaultRates;
use fintech_workers::kafka::{KafkaOptions, KafkaSource, LagGauge};
use fintech_workers::producer::{EventStream, ProducerMetrics, StreamConfig};
use fintech_workers::storage::StorageOptions;
use fintech_workers::streamer::{
    BatchPolicy, StreamError, StreamSummary, Streamer, StreamerMetrics,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;

use super::{assert_each_once, committed_total, stored_offsets, testenv_var, unique_name};

/// Partitions of every test topic.
pub const PARTITIONS: i32 = 3;
/// Seed of the events [`produce`] makes.
pub const SEED: u64 = 21;

/// The `fintech` binary. Only the workers' tests have it; the benchmarks' tests share these
/// helpers without calling the ones that run it.
pub fn fintech() -> Command {
    let Some(fintech) = option_env!("CARGO_BIN_EXE_fintech") else {
        panic!("this helper needs the fintech binary of the workers' tests");
    };
    Command::new(fintech)
}

/// Starts `fintech stream` of `group` into `lake`, its batches closed every `interval_secs`
/// (or at a million messages), serving its metrics on `port`.
pub fn spawn_fintech_stream(
    bootstrap: &str,
    topic: &str,
    group: &str,
    lake: &StorageOptions,
    interval_secs: u64,
    port: u16,
) -> std::process::Child {
    fintech()
        .args([
            "stream",
            "--log-format",
            "text",
            "--bootstrap-servers",
            bootstrap,
        ])
        .args([
            "--topic",
            topic,
            "--group-id",
            group,
            "--lake-url",
            &lake.lake_url,
        ])
        .args(["--batch-interval-secs", &interval_secs.to_string()])
        .args(["--batch-max-rows", "1000000"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .spawn()
        .unwrap()
}

/// Produces `count` messages, about 5% of them undecodable, and returns how many are good.
pub fn produce(bootstrap: &str, topic: &str, count: usize) -> usize {
    let status = fintech()
        .args([
            "produce",
            "--log-format",
            "text",
            "--bootstrap-servers",
            bootstrap,
        ])
        .args(["--topic", topic, "--partitions", &PARTITIONS.to_string()])
        .args(["--seed", &SEED.to_string(), "--count", &count.to_string()])
        .args([
            "--start-time",
            "2026-11-01T00:00:00Z",
            "--payments-per-day",
            "1000",
        ])
        .args([
            "--fault-malformed-json",
            "0.03",
            "--fault-wrong-type",
            "0.02",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // The same stream, made in-process, says which messages are decodable.
    let config = StreamConfig {
        seed: SEED,
        simulated_start: Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()),
        payments_per_day: 1_000,
        faults: FaultRates {
            malformed_json: 0.03,
            wrong_type: 0.02,
            ..FaultRates::default()
        },
        ..StreamConfig::default()
    };
    let mut stream = EventStream::new(&config, ProducerMetrics::default()).unwrap();
    (0..count)
        .filter(|_| {
            let message = stream.next_message().unwrap().message;
            decode::decode(Some(&message.payload), 1 << 20).is_ok()
        })
        .count()
}

/// The Kafka options of a client of `topic`.
pub fn kafka(bootstrap: &str, topic: &str) -> KafkaOptions {
    KafkaOptions {
        bootstrap_servers: bootstrap.to_owned(),
        topic: topic.to_owned(),
        properties: vec![],
        timeout_secs: 30,
    }
}

/// Batches closed every 2 s or at `max_rows`.
pub fn policy(max_rows: usize) -> BatchPolicy {
    BatchPolicy {
        interval: Duration::from_secs(2),
        max_rows,
        ..BatchPolicy::default()
    }
}

/// Starts a streamer of `group` writing into `lake` in the background.
pub fn start_streamer(
    bootstrap: &str,
    topic: &str,
    group: &str,
    lake: Lake,
    policy: BatchPolicy,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<StreamSummary, StreamError>>,
) {
    let source = KafkaSource::new(&kafka(bootstrap, topic), group, LagGauge::default()).unwrap();
    let streamer = Streamer::new(source, lake, policy, StreamerMetrics::default());
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(streamer.run(cancel.clone()));
    (cancel, handle)
}

/// Starts a streamer of `group` in the background, which must end well.
pub fn spawn_streamer(
    bootstrap: &str,
    topic: &str,
    group: &str,
    lake: &StorageOptions,
    policy: BatchPolicy,
) -> (CancellationToken, tokio::task::JoinHandle<StreamSummary>) {
    let lake = Lake::open(lake).unwrap();
    let (cancel, handle) = start_streamer(bootstrap, topic, group, lake, policy);
    (
        cancel,
        tokio::spawn(async move { handle.await.unwrap().unwrap() }),
    )
}

/// Runs a streamer of `group` until it has committed all `total` messages of `topic`, then
/// stops it.
pub async fn stream_everything(
    bootstrap: &str,
    topic: &str,
    group: &str,
    lake: &StorageOptions,
    policy: BatchPolicy,
    total: usize,
) {
    let (cancel, streaming) = spawn_streamer(bootstrap, topic, group, lake, policy);
    wait_for_commits(bootstrap, group, topic, total as i64).await;
    cancel.cancel();
    streaming.await.unwrap();
}

/// Waits until `group` has committed `total` messages of the topic.
pub async fn wait_for_commits(bootstrap: &str, group: &str, topic: &str, total: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = committed_total(bootstrap, group, topic, PARTITIONS);
        if committed >= total {
            assert_eq!(committed, total);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {committed} of {total} committed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts that `lake` holds each of `total` messages once: `good` rows in bronze, the rest
/// in the dead-letter queue.
pub async fn assert_lake_holds(lake: &StorageOptions, good: usize, total: usize) {
    let rows = stored_offsets(lake, "bronze/transactions").await;
    let dead = stored_offsets(lake, "dead_letter/transactions").await;
    assert_eq!(rows.len(), good, "rows in bronze");
    assert_eq!(dead.len(), total - good, "records in the dead-letter queue");
    assert_each_once([rows, dead].concat(), total);
}

/// Every message of `topic` as (key, payload), read from the start until none arrives for a
/// few seconds.
pub async fn topic_messages(bootstrap: &str, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("count"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut messages = Vec::new();
    let mut wait = 30;
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(wait), consumer.recv()).await {
        let message = message.unwrap();
        messages.push((
            message.key().unwrap_or_default().to_vec(),
            message.payload().unwrap_or_default().to_vec(),
        ));
        wait = 5;
    }
    messages
}

/// The test environment's broker, held by one test alone: a test that pauses it must not
/// overlap another that uses it, so every test that pauses it takes it whole first.
pub struct Broker {
    pid: String,
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
}

static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Broker {
    /// Waits until no other test of this binary holds the broker, and takes it.
    pub async fn exclusive() -> Self {
        let exclusive = EXCLUSIVE.lock().await;
        Self {
            pid: testenv_var("KAFKA_PID"),
            _exclusive: exclusive,
        }
    }

    /// Pauses the broker (SIGSTOP) until the returned guard is dropped: its connections stay
    /// open and nothing answers, as when the broker's host stops responding. It resumes
    /// (SIGCONT) also when the test fails.
    pub fn pause(&self) -> Paused<'_> {
        signal("-STOP", &self.pid);
        Paused { pid: &self.pid }
    }
}

/// The broker paused; see [`Broker::pause`].
pub struct Paused<'a> {
    pid: &'a str,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        signal("-CONT", self.pid);
    }
}

fn signal(signal: &str, pid: &str) {
    let status = Command::new("kill").args([signal, pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}
