//! The streamer against the real broker and S3 server: every message lands in bronze or the
//! dead-letter queue exactly once, across SIGTERM, a crash before commit, an unreachable
//! object store, a Kafka that comes up after the streamer, a rebalance, and a zombie (a
//! streamer that lost its partitions while stuck, then wakes and closes its batch).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{
    PARTITIONS, assert_lake_holds, fintech, kafka, policy, produce, spawn_fintech_stream,
    spawn_streamer, start_streamer, stream_everything, wait_for_commits,
};
use common::outage::StoreOutage;
use common::{
    committed_total, free_port, fresh_database, http_get, metric, stored_offsets, test_lake,
    testenv_var, unique_name,
};
use fintech_workers::bronze::Lake;
use fintech_workers::kafka::{KafkaSource, LagGauge};
use fintech_workers::streamer::{BatchPolicy, Streamer, StreamerMetrics};
use tokio_util::sync::CancellationToken;

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn fintech_stream_writes_rows_and_dead_letters_exactly_once_and_commits_on_sigterm() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("stream");
    let group = unique_name("stream-group");
    let lake = test_lake("stream");
    let total = 3_000;
    let good = produce(&bootstrap, &topic, total);
    assert!(good < total && good > total * 9 / 10);

    // A long interval and a large cap: only SIGTERM can close the batch.
    let port = free_port();
    let child = spawn_fintech_stream(&bootstrap, &topic, &group, &lake, 3600, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the streamer never read every message"
        );
        if let Some((200, body)) = http_get(port, "/metrics")
            && metric(&body, "fintech_streamer_messages_total") >= total as f64
        {
            assert!(body.contains("fintech_streamer_dead_letters_total{kind=\"invalid_json\"}"));
            assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(committed_total(&bootstrap, &group, &topic, PARTITIONS), 0);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "SIGTERM must exit 0");
    assert_eq!(
        committed_total(&bootstrap, &group, &topic, PARTITIONS),
        total as i64
    );
    assert_lake_holds(&lake, good, total).await;

    // And `fintech load --once` takes the lake into PostgreSQL.
    let database = fresh_database(&testenv_var("DATABASE_URL")).await;
    let status = fintech()
        .args(["load", "--once", "--log-format", "text", "--topic", &topic])
        .args(["--database-url", &database, "--lake-url", &lake.lake_url])
        .status()
        .unwrap();
    assert!(status.success());
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let loaded: i64 = sqlx::query_scalar("select count(*) from raw.transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(loaded, good as i64);
    let audit: (String, i64) =
        sqlx::query_as("select status, rows_loaded from metadata.load_audit")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audit, ("SUCCESS".to_owned(), good as i64));
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_streamer_killed_before_commit_is_replayed_without_duplicates() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("crash");
    let group = unique_name("crash-group");
    let lake = test_lake("crash");
    let total = 2_000;
    let good = produce(&bootstrap, &topic, total);

    // The first streamer writes its second batch's objects, but dies before publishing the
    // batch (its manifests are refused), so the batch stays uncommitted.
    let (store, root) = lake.open().unwrap();
    let outage = Lake::new(Arc::new(StoreOutage::beyond_first_batch(store)), root);
    let (_, crashed) = start_streamer(&bootstrap, &topic, &group, outage, policy(300));
    let error = crashed.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("_manifests"), "{error}");
    let written = stored_offsets(&lake, "").await.len();
    let committed = committed_total(&bootstrap, &group, &topic, PARTITIONS);
    assert!(committed > 0, "the first batch was committed");
    assert!(
        written as i64 > committed,
        "objects of an uncommitted batch are in the lake"
    );

    // Its replacement uses other caps and still stores every message once.
    stream_everything(&bootstrap, &topic, &group, &lake, policy(170), total).await;
    assert_lake_holds(&lake, good, total).await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn two_streamers_in_one_group_split_the_partitions() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("group");
    let group = unique_name("group-group");
    let lake = test_lake("group");
    let total = 3_000;
    let topic_options = fintech_workers::kafka::TopicOptions {
        partitions: PARTITIONS,
        replication_factor: 1,
    };
    fintech_workers::kafka::ensure_topic(&kafka(&bootstrap, &topic), &topic_options)
        .await
        .unwrap();

    // Both members join before any data arrives, so the group is balanced when it does.
    let (cancel_a, a) = spawn_streamer(&bootstrap, &topic, &group, &lake, policy(200));
    let (cancel_b, b) = spawn_streamer(&bootstrap, &topic, &group, &lake, policy(200));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let good = produce(&bootstrap, &topic, total);
    wait_for_commits(&bootstrap, &group, &topic, total as i64).await;
    cancel_a.cancel();
    cancel_b.cancel();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        a.messages > 0 && b.messages > 0,
        "both members did work: {a:?} {b:?}"
    );
    assert_eq!(a.messages + b.messages, total as u64);
    assert_lake_holds(&lake, good, total).await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn an_unreachable_object_store_stops_the_streamer_without_committing_or_losing() {
    use object_store::aws::AmazonS3Builder;
    use object_store::{BackoffConfig, RetryConfig};

    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("s3-down");
    let group = unique_name("s3-down-group");
    let total = 600;
    let good = produce(&bootstrap, &topic, total);

    // Nothing listens on this endpoint; a short retry budget keeps the test quick (the
    // default, three minutes, rides out a brief outage).
    let down = AmazonS3Builder::new()
        .with_bucket_name(testenv_var("FINTECH_TEST_BUCKET"))
        .with_endpoint(format!("http://127.0.0.1:{}", free_port()))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("unused")
        .with_secret_access_key("unused")
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: Duration::from_secs(2),
        })
        .build()
        .unwrap();
    let source = KafkaSource::new(&kafka(&bootstrap, &topic), &group, LagGauge::default()).unwrap();
    let streamer = Streamer::new(
        source,
        Lake::new(Arc::new(down), "lake".into()),
        policy(200),
        StreamerMetrics::default(),
    );
    let error = streamer
        .run(CancellationToken::new())
        .await
        .expect_err("no object can be stored");
    let message = error.to_string();
    assert!(
        message.contains("object store operation on lake/_streamer/"),
        "the error names the object it could not store: {message}"
    );
    assert_eq!(
        committed_total(&bootstrap, &group, &topic, PARTITIONS),
        0,
        "no offset is committed for a batch that was not stored"
    );

    // Once the store is back, a new streamer of the group stores every message once.
    let lake = test_lake("s3-down");
    stream_everything(&bootstrap, &topic, &group, &lake, policy(200), total).await;
    assert_lake_holds(&lake, good, total).await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_streamer_started_before_kafka_is_reachable_streams_everything_once_it_is() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("kafka-late");
    let group = unique_name("kafka-late-group");
    let lake = test_lake("kafka-late");
    let total = 600;
    let good = produce(&bootstrap, &topic, total);

    // The streamer's only bootstrap address has nothing behind it yet, as when a pipeline
    // is installed before its Kafka is up.
    let port = free_port();
    let (cancel, streaming) = spawn_streamer(
        &format!("127.0.0.1:{port}"),
        &topic,
        &group,
        &lake,
        policy(200),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!streaming.is_finished(), "the streamer waits for Kafka");
    assert!(stored_offsets(&lake, "").await.is_empty());

    // Kafka becomes reachable: a forwarder to the broker starts on that address.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let broker = bootstrap.clone();
    let forwarder = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let broker = broker.clone();
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(&broker).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    wait_for_commits(&bootstrap, &group, &topic, total as i64).await;
    cancel.cancel();
    streaming.await.unwrap();
    forwarder.abort();
    assert_lake_holds(&lake, good, total).await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_zombie_streamer_writes_nothing_once_its_partitions_moved() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("zombie");
    let group = unique_name("zombie-group");
    let lake = test_lake("zombie");
    let total = 900;
    let good = produce(&bootstrap, &topic, total);

    // A reads everything into one batch, then gets stuck writing its batch records. It stops
    // polling, so after max.poll.interval.ms the group drops it, as it drops a streamer
    // stopped (SIGSTOP) past its session timeout.
    let (open_gate, gate) = tokio::sync::watch::channel(false);
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (store, root) = lake.open().unwrap();
    let gated = StoreOutage::holding_batch_records(store, gate, held.clone());
    let mut options = kafka(&bootstrap, &topic);
    options.properties = vec![
        ("session.timeout.ms".to_owned(), "6000".to_owned()),
        ("max.poll.interval.ms".to_owned(), "7000".to_owned()),
    ];
    let a_metrics = StreamerMetrics::default();
    let a_source = KafkaSource::new(&options, &group, LagGauge::default()).unwrap();
    let a_policy = BatchPolicy {
        interval: Duration::from_secs(8),
        max_rows: 1_000_000,
        ..BatchPolicy::default()
    };
    let a = Streamer::new(
        a_source,
        Lake::new(Arc::new(gated), root),
        a_policy,
        a_metrics.clone(),
    );
    let a_cancel = CancellationToken::new();
    let a = tokio::spawn(a.run(a_cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.load(std::sync::atomic::Ordering::SeqCst) < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "A never closed its batch");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        a_metrics.messages_read(),
        total as u64,
        "A's batch holds everything"
    );

    // B joins; once the group has dropped A, B owns every partition and stores everything.
    let (b_cancel, b) = spawn_streamer(&bootstrap, &topic, &group, &lake, policy(200));
    wait_for_commits(&bootstrap, &group, &topic, total as i64).await;
    assert_lake_holds(&lake, good, total).await;

    // A wakes: every record write is refused, so it stores and commits nothing.
    open_gate.send(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while a_metrics.fenced_batches() < PARTITIONS as u64 {
        assert!(
            Instant::now() < deadline,
            "A was not fenced on every partition"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A rejoins the group, reads from the committed offsets and finds nothing to store.
    tokio::time::sleep(Duration::from_secs(10)).await;
    a_cancel.cancel();
    b_cancel.cancel();
    let a = a.await.unwrap().unwrap();
    b.await.unwrap();
    assert_eq!(a.batches, 0, "A committed nothing: {a:?}");
    assert_eq!(
        committed_total(&bootstrap, &group, &topic, PARTITIONS),
        total as i64
    );
    assert_lake_holds(&lake, good, total).await;
}
