//! Kafka going away while the workers run: the broker of the test environment is paused
//! (SIGSTOP) under a running producer and under a streamer holding an open batch, then
//! resumed. Nothing is lost and nothing is stored twice. Each test holds the broker alone.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{
    Broker, PARTITIONS, assert_lake_holds, fintech, produce, spawn_fintech_stream, topic_messages,
    wait_for_commits,
};
use common::{
    committed_total, free_port, http_get, metric, stored_offsets, test_lake, testenv_var,
    unique_name,
};

/// Waits until the metric `name` served on `port` reaches `at_least`.
async fn wait_for_metric(port: u16, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, body)) = http_get(port, "/metrics")
            && metric(&body, name) >= at_least
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for `child` to exit on its own, killing it after `limit`.
async fn exit_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the process did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.wait_with_output().unwrap()
}

/// The broker stops answering for longer than librdkafka's request timeout (30 s) while the
/// producer sends: the producer keeps making events, queues them, and once the broker
/// answers again delivers every one of them exactly once (idempotence covers the requests
/// that timed out and were sent again), reporting none failed.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_producer_running_through_a_kafka_outage_delivers_every_event_once() {
    let broker = Broker::exclusive().await;
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("outage-produce");
    let port = free_port();
    let total = 8_000;
    let child = fintech()
        .args(["produce", "--log-format", "json", "--rate", "400"])
        .args(["--count", &total.to_string(), "--seed", "5"])
        .args(["--bootstrap-servers", &bootstrap, "--topic", &topic])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_metric(port, "fintech_producer_delivered_total", 1_000.0).await;

    let during = {
        let _paused = broker.pause();
        let before = producer_metrics(port);
        tokio::time::sleep(Duration::from_secs(35)).await;
        (before, producer_metrics(port))
    };
    let ((sent_before, _), (sent_after, _)) = during;
    assert!(
        sent_after > sent_before,
        "the producer kept making events while Kafka was away: {during:?}"
    );

    let output = exit_within(child, Duration::from_secs(180)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    let finished: serde_json::Value = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "producer finished")
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    assert_eq!(finished["sent"].as_u64(), Some(total));
    assert_eq!(finished["delivered"].as_u64(), Some(total));
    assert_eq!(finished["failed"].as_u64(), Some(0));

    let messages = topic_messages(&bootstrap, &topic).await;
    let distinct: HashSet<&(Vec<u8>, Vec<u8>)> = messages.iter().collect();
    assert_eq!(messages.len() as u64, total, "messages in the topic");
    assert_eq!(
        distinct.len(),
        messages.len(),
        "no message is in the topic twice"
    );
}

/// (events sent, events delivered) as the producer's metrics say; sent is counted per event
/// source and status, so its series are added up.
fn producer_metrics(port: u16) -> (f64, f64) {
    let (_, body) = http_get(port, "/metrics").expect("the producer serves its metrics");
    let sent = body
        .lines()
        .filter_map(|line| line.strip_prefix("fintech_producer_messages_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    (sent, metric(&body, "fintech_producer_delivered_total"))
}

/// The broker stops answering while the streamer holds an open batch: the batch closes on
/// its interval and its objects are stored without Kafka; the commit waits for the broker,
/// goes through once it answers, and the lake holds every message exactly once.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_streamer_whose_kafka_stops_answering_mid_batch_stores_every_message_once() {
    let broker = Broker::exclusive().await;
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("outage-stream");
    let group = unique_name("outage-stream-group");
    let lake = test_lake("outage-stream");
    let total = 2_000;
    let good = produce(&bootstrap, &topic, total);

    let port = free_port();
    let child = spawn_fintech_stream(&bootstrap, &topic, &group, &lake, 10, port);
    // Every message is in the open batch, none committed, when Kafka goes away.
    wait_for_metric(port, "fintech_streamer_messages_total", total as f64).await;
    assert_eq!(committed_total(&bootstrap, &group, &topic, PARTITIONS), 0);
    {
        let _paused = broker.pause();
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(
            stored_offsets(&lake, "").await.len(),
            total,
            "the batch closed on its interval and its objects were stored while Kafka was away"
        );
    }

    wait_for_commits(&bootstrap, &group, &topic, total as i64).await;
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = exit_within(child, Duration::from_secs(60)).await;
    assert!(output.status.success(), "{:?}", output.status);
    assert_lake_holds(&lake, good, total).await;
}
