//! `fintech produce` against the real broker: exactly the events the stream defines arrive,
//! keyed by transaction, and bad input fails clearly.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::kafka::topic_messages;
use common::{free_port, http_get, kaggle_export, metric, testenv_var, unique_name};
use fintech_workers::bronze::decode;
use fintech_workers::event::PaymentEvent;
use fintech_workers::faults::FaultRates;
use fintech_workers::producer::{EventStream, ProducerMetrics, StreamConfig};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};

const SEED: u64 = 11;
const COUNT: usize = 3_000;
const START: &str = "2026-11-01T00:00:00Z";

fn fintech() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fintech"))
}

/// The stream the producer builds from the flags below, made in-process.
fn expected_messages() -> Vec<(String, Vec<u8>)> {
    let config = StreamConfig {
        seed: SEED,
        simulated_start: Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()),
        payments_per_day: 1_000,
        settlement_share: 0.3,
        faults: FaultRates {
            duplicate: 0.02,
            non_positive_amount: 0.01,
            null_customer_id: 0.01,
            ..FaultRates::default()
        },
        ..StreamConfig::default()
    };
    let mut stream = EventStream::new(&config, ProducerMetrics::default()).unwrap();
    (0..COUNT)
        .map(|_| {
            let outgoing = stream.next_message().unwrap();
            (outgoing.message.key, outgoing.message.payload)
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn produces_exactly_count_events_keyed_by_transaction() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("produce");
    let status = fintech()
        .args(["produce", "--log-format", "text"])
        .args([
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            &topic,
            "--partitions",
            "3",
        ])
        .args(["--seed", &SEED.to_string(), "--count", &COUNT.to_string()])
        .args(["--start-time", START, "--payments-per-day", "1000"])
        .args(["--settlement-share", "0.3", "--fault-duplicate", "0.02"])
        .args([
            "--fault-non-positive-amount",
            "0.01",
            "--fault-null-customer-id",
            "0.01",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "fintech produce failed: {status}");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", unique_name("produce-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut received = Vec::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    // Read until COUNT arrive, then keep reading a little to prove no extra message exists.
    loop {
        let wait = if received.len() < COUNT { 30 } else { 3 };
        match tokio::time::timeout(Duration::from_secs(wait), consumer.recv()).await {
            Ok(message) => {
                let message = message.unwrap();
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let payload = message.payload().unwrap().to_vec();
                let event = PaymentEvent::from_json(&payload).unwrap();
                assert_eq!(key, event.transaction_id, "the key is the transaction id");
                // A payment and its settlement share a partition, so they stay in order.
                let partition = *partition_of
                    .entry(key.clone())
                    .or_insert(message.partition());
                assert_eq!(partition, message.partition());
                received.push((key, payload));
            }
            Err(_) if received.len() >= COUNT => break,
            Err(_) => panic!("only {} of {COUNT} messages arrived", received.len()),
        }
    }
    assert_eq!(received.len(), COUNT);
    let mut expected = expected_messages();
    expected.sort();
    received.sort();
    assert!(
        expected == received,
        "the topic holds other messages than the stream defines"
    );
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn sigterm_flushes_every_sent_message_and_exits_cleanly() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("sigterm");
    let port = free_port();
    let child = fintech()
        .args(["produce", "--log-format", "json", "--rate", "400"])
        .args(["--bootstrap-servers", &bootstrap, "--topic", &topic])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Ready once the topic exists and the producer is connected; then wait for deliveries.
    wait_until_delivered(port, 200);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "SIGTERM must exit 0: {:?}",
        output.status
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    let finished: serde_json::Value = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "producer finished")
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    let sent = finished["sent"].as_u64().unwrap();
    assert_eq!(finished["delivered"].as_u64(), Some(sent));
    assert_eq!(finished["failed"].as_u64(), Some(0));
    assert_eq!(topic_messages(&bootstrap, &topic).await.len() as u64, sent);
}

/// Waits until the producer serving its status on `port` is ready, healthy and has had
/// `messages` acknowledged by Kafka.
fn wait_until_delivered(port: u16, messages: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "producer never delivered {messages} messages"
        );
        if let (Some((200, _)), Some((200, body))) =
            (http_get(port, "/readyz"), http_get(port, "/metrics"))
        {
            assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
            if metric(&body, "fintech_producer_delivered_total") >= messages as f64 {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every event on `topic`, by transaction, each transaction's in offset order.
async fn events_by_transaction(bootstrap: &str, topic: &str) -> HashMap<String, Vec<PaymentEvent>> {
    let mut by_transaction: HashMap<String, Vec<PaymentEvent>> = HashMap::new();
    for (_, payload) in topic_messages(bootstrap, topic).await {
        let event = decode::decode(Some(&payload), usize::MAX).unwrap();
        by_transaction
            .entry(event.transaction_id.clone())
            .or_default()
            .push(event);
    }
    by_transaction
}

/// `fintech produce` on a live clock into `topic`, every payment pending and settled 5 to 8 s
/// later, at 50 messages a second.
fn live_producer(bootstrap: &str, topic: &str, seed: &str, port: u16) -> Command {
    let mut command = fintech();
    command
        .args(["produce", "--log-format", "json", "--rate", "50"])
        .args(["--bootstrap-servers", bootstrap, "--topic", topic])
        .args(["--seed", seed, "--settlement-share", "1"])
        .args(["--settlement-min-delay-secs", "5"])
        .args(["--settlement-max-delay-secs", "8"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    command
}

/// The settlement schedule lives in the topic: a producer killed between payments and their
/// settlements leaves them PENDING there, and the next producer reads them back and settles
/// each one once; a third finds nothing left to settle and settles nothing twice.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_producer_killed_before_its_settlements_settles_each_once_after_a_restart() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("settle");
    let port = free_port();
    let mut first = live_producer(&bootstrap, &topic, "1", port)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once Kafka has acknowledged 100 payments: 2 s in, before any settlement is due.
    wait_until_delivered(port, 100);
    first.kill().unwrap();
    first.wait().unwrap();
    let killed_at = Utc::now();

    // The second runs 12 s: long enough for every settlement of the first to come due.
    let second = live_producer(&bootstrap, &topic, "2", free_port())
        .args(["--count", "600"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    let resumed = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "scheduled the settlements earlier runs left waiting")
        .unwrap_or_else(|| panic!("no resume line in {log}"));
    let resumed = resumed["resumed"].as_u64().unwrap();
    assert!(resumed >= 100, "resumed {resumed} settlements");

    // A third finds the first's payments settled, and settles none of them again.
    let third = live_producer(&bootstrap, &topic, "3", free_port())
        .args(["--count", "1"])
        .output()
        .unwrap();
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );

    let by_transaction = events_by_transaction(&bootstrap, &topic).await;
    let mut settled_after_the_kill = 0;
    for (transaction, events) in &by_transaction {
        let payment = &events[0];
        assert_eq!(payment.status.as_str(), "PENDING", "{transaction}");
        let settlements = &events[1..];
        assert!(
            settlements.len() <= 1,
            "{transaction} settled twice: {events:?}"
        );
        if payment.event_time < killed_at {
            assert_eq!(
                settlements.len(),
                1,
                "{transaction} of the killed producer never settled"
            );
            let delay = settlements[0].event_time - payment.event_time;
            assert!((5..8).contains(&delay.num_seconds()), "{delay}");
            settled_after_the_kill += 1;
        }
    }
    assert_eq!(settled_after_the_kill as u64, resumed);
}

/// A producer pod keeps its `--seed` across restarts. On the live clock each start makes new
/// payments: were the second run's the first's again, with the same event ids, silver would
/// drop every one of them as a duplicate.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_restarted_live_producer_makes_new_payments_with_the_same_seed() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("restart");
    for _ in 0..2 {
        let run = fintech()
            .args(["produce", "--log-format", "json", "--count", "200"])
            .args(["--bootstrap-servers", &bootstrap, "--topic", &topic])
            .args(["--seed", "7", "--settlement-share", "0"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let events: Vec<PaymentEvent> = topic_messages(&bootstrap, &topic)
        .await
        .iter()
        .map(|(_, payload)| decode::decode(Some(payload), usize::MAX).unwrap())
        .collect();
    assert_eq!(events.len(), 400);
    let event_ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id).collect();
    let transactions: std::collections::HashSet<_> =
        events.iter().map(|e| e.transaction_id.as_str()).collect();
    assert_eq!((event_ids.len(), transactions.len()), (400, 400));
}

/// A restarted producer goes on in the Kaggle export after the last row an earlier run sent,
/// told apart from the settlements sent as late as it (they are dated later than their
/// payments): every row reaches the topic once, none is skipped, and each transaction is a
/// payment with at most one settlement after it.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_restarted_producer_goes_on_in_the_kaggle_export_where_it_stopped() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("kaggle-resume");
    let folder = tempfile::tempdir().unwrap();
    let export = folder.path().join("fraudTrain.csv");
    std::fs::write(&export, kaggle_export(1_000)).unwrap();
    for _ in 0..3 {
        let run = fintech()
            .args([
                "produce",
                "--log-format",
                "json",
                "--count",
                "150",
                "--rate",
                "100",
            ])
            .args(["--bootstrap-servers", &bootstrap, "--topic", &topic])
            .arg("--kaggle-csv")
            .arg(&export)
            .args(["--kaggle-share", "1", "--settlement-share", "0.5"])
            .args(["--settlement-min-delay-secs", "1"])
            .args(["--settlement-max-delay-secs", "2"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let by_transaction = events_by_transaction(&bootstrap, &topic).await;
    for (transaction, events) in &by_transaction {
        let shape: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
        assert!(
            matches!(
                shape.as_slice(),
                ["SUCCESS" | "FAILED"] | ["PENDING"] | ["PENDING", "SUCCESS" | "FAILED"]
            ),
            "{transaction}: {shape:?}"
        );
    }
    let mut rows: Vec<usize> = by_transaction
        .keys()
        .map(|id| usize::from_str_radix(id, 16).unwrap())
        .collect();
    rows.sort_unstable();
    assert!(rows.len() > 200, "{} rows", rows.len());
    assert_eq!(rows, (0..rows.len()).collect::<Vec<_>>(), "rows skipped");
}

/// Runs `fintech produce` with `args`, expects it to fail, and returns its stderr.
fn failing_produce(args: &[&str]) -> String {
    let output = fintech()
        .args(["produce", "--log-format", "text"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "fintech produce {args:?} succeeded"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn missing_kaggle_file_fails_before_touching_kafka() {
    let stderr = failing_produce(&[
        "--count",
        "1",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--kaggle-csv",
        "/nonexistent/fraudTrain.csv",
    ]);
    assert!(
        stderr.contains("cannot open Kaggle file /nonexistent/fraudTrain.csv"),
        "{stderr}"
    );
}

#[test]
fn out_of_range_rate_is_refused_by_flag_name() {
    let stderr = failing_produce(&["--fault-duplicate", "2"]);
    assert!(
        stderr.contains("duplicate must be between 0 and 1"),
        "{stderr}"
    );
}

#[test]
fn unreachable_kafka_is_a_clear_error() {
    let stderr = failing_produce(&[
        "--count",
        "1",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--kafka-timeout-secs",
        "3",
    ]);
    assert!(stderr.contains("is Kafka reachable?"), "{stderr}");
}
