//! Liveness: `/healthz` answers 200 while a worker's loop makes progress, idle waits
//! included (the loader's pause between runs, the streamer polling an empty topic), and 503
//! once the loop is stuck on a call that does not return, so the kubelet restarts it.
//!
//! The `fintech load` binary shows the first half on the embedded PostgreSQL; a wedge is
//! shown on each stage's loop in-process, where a call can be made to hang on purpose.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fintech_workers::bronze::Lake;
use fintech_workers::faults::{FaultInjector, FaultRates};
use fintech_workers::harness::{BeatingSource, Harness, Heartbeat};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics, Schedule};
use fintech_workers::producer::{self, EventStream, ProducerMetrics, RunLimits, StreamConfig};
use fintech_workers::sink::{ChannelSink, Message};
use fintech_workers::source::{CommittedPositions, InProcessSource};
use fintech_workers::storage::StorageOptions;
use fintech_workers::streamer::{BatchPolicy, Streamer, StreamerMetrics};
use fintech_workers::synthetic::SyntheticGenerator;
use fintech_workers::warehouse::EmbeddedWarehouse;
use object_store::memory::InMemory;
use object_store::path::Path;
use tokio_util::sync::CancellationToken;

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET on loopback from a blocking thread; `None` while nothing answers.
async fn get(port: u16, path: &'static str) -> Option<(u16, String)> {
    tokio::task::spawn_blocking(move || fintech_status_server::http_get(port, path).ok())
        .await
        .unwrap()
}

/// The value of the sample `name` (with its labels) in a Prometheus text body, 0 if absent.
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
async fn eventually(what: &str, limit: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `fintech` child process, killed if the test ends before it exits; its log is printed
/// when the test fails.
struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn log(&self) -> String {
        let mut log = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- fintech log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_loader_binary_stays_live_through_a_pause_longer_than_its_stall_limit() {
    let folder = tempfile::tempdir().unwrap();
    let warehouse = EmbeddedWarehouse::start(&folder.path().join("warehouse")).unwrap();
    let lake = StorageOptions::local(&folder.path().join("lake")).unwrap();
    std::fs::create_dir_all(folder.path().join("lake")).unwrap();
    let port = free_port();
    let stall_limit_secs = 3;
    let log = folder.path().join("loader.log");
    let child = Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["load", "--log-format", "text"])
        .args(["--database-url", &warehouse.options().database_url])
        .args(["--pool-size", "1", "--lake-url", &lake.lake_url])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        // One run, then a pause of an hour: all of the pause is progress.
        .args(["--interval-secs", "3600"])
        .args(["--stall-limit-secs", &stall_limit_secs.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut worker = Worker { child, log };

    eventually(
        "the loader is ready",
        Duration::from_secs(120),
        async || {
            get(port, "/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
        },
    )
    .await;
    let runs = r#"fintech_loader_runs_total{status="SUCCESS",health="healthy"}"#;
    eventually(
        "the first load run succeeded",
        Duration::from_secs(120),
        async || {
            get(port, "/metrics")
                .await
                .is_some_and(|(_, body)| metric(&body, runs) >= 1.0)
        },
    )
    .await;

    // The loader now sleeps; for longer than its stall limit it stays live.
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_secs(stall_limit_secs + 1) {
        let answer = get(port, "/healthz").await;
        assert_eq!(
            answer,
            Some((200, "ok".to_owned())),
            "after {:?} of the pause",
            pause.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGTERM ends the pause and the process, cleanly.
    let pid = worker.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut status = None;
    eventually("the loader exits", Duration::from_secs(30), async || {
        status = worker.child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(status.unwrap().success(), "{}", worker.log());
    drop(worker);
    warehouse.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_load_run_hung_on_the_database_turns_healthz_503() {
    // A "server" that accepts connections and never answers: every query hangs.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://fintech@127.0.0.1:{}/fintech",
        black_hole.local_addr().unwrap().port()
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(600))
        .connect_lazy(&url)
        .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = Lake::open(&StorageOptions::local(folder.path()).unwrap()).unwrap();
    let metrics = LoaderMetrics::default();
    let loader = Loader::new(pool, lake, LoaderConfig::default(), metrics.clone());

    let port = free_port();
    let address = ([127, 0, 0, 1], port).into();
    let harness =
        Harness::start_with_stall_limit(Some(address), Duration::from_millis(300), &metrics)
            .await
            .unwrap();
    harness.ready();
    let serving = tokio::spawn({
        let (cancel, heartbeat) = (harness.cancel().clone(), harness.heartbeat());
        async move {
            loader
                .serve_with_heartbeat(
                    Schedule::Every(Duration::from_secs(3600)),
                    &cancel,
                    &heartbeat,
                )
                .await
        }
    });

    let mut body = String::new();
    eventually(
        "/healthz answers 503",
        Duration::from_secs(30),
        async || match get(port, "/healthz").await {
            Some((503, answer)) => {
                body = answer;
                true
            }
            _ => false,
        },
    )
    .await;
    assert!(body.starts_with("stalled: no progress for"), "{body}");
    assert!(body.ends_with("(limit 300ms)"), "{body}");
    // Still ready: liveness and readiness are separate questions.
    assert_eq!(get(port, "/readyz").await.map(|(code, _)| code), Some(200));
    assert!(!serving.is_finished(), "the run is still hanging");

    serving.abort();
    harness.finish(()).await;
}

/// A streamer over an in-process topic of one partition, beating `heartbeat`.
fn streamer(
    heartbeat: &Heartbeat,
    committed: &CommittedPositions,
    metrics: &StreamerMetrics,
) -> (
    Streamer<BeatingSource<InProcessSource>>,
    tokio::sync::mpsc::Sender<Message>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let source = InProcessSource::new("transactions", receiver, 1, committed.clone());
    let lake = Lake::new(Arc::new(InMemory::new()), Path::default());
    let policy = BatchPolicy {
        max_rows: 1,
        ..BatchPolicy::default()
    };
    let streamer = Streamer::new(
        BeatingSource::new(source, heartbeat.clone()),
        lake,
        policy,
        metrics.clone(),
    );
    (streamer, sender)
}

fn payment() -> Message {
    let event = SyntheticGenerator::new(1, 0.0).next_payment(chrono::Utc::now());
    let key = event.transaction_id.clone();
    let payload = FaultInjector::new(FaultRates::default(), 1)
        .encode(event)
        .remove(0)
        .payload;
    Message { key, payload }
}

#[tokio::test(start_paused = true)]
async fn a_streamer_waiting_on_an_empty_topic_stays_live() {
    let stall_limit = Duration::from_secs(10);
    let heartbeat = Heartbeat::new(stall_limit);
    let metrics = StreamerMetrics::default();
    let (streamer, _sender) = streamer(&heartbeat, &CommittedPositions::default(), &metrics);
    let cancel = CancellationToken::new();
    let running = tokio::spawn(streamer.run(cancel.clone()));

    // Ten stall limits without a message (the clock is paused: this takes no time).
    tokio::time::sleep(stall_limit * 10).await;
    assert_eq!(heartbeat.check(), Ok(()));
    assert_eq!(metrics.messages_read(), 0);

    cancel.cancel();
    assert_eq!(running.await.unwrap().unwrap().messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamer_deadlocked_in_its_commit_stalls_and_recovers_once_it_returns() {
    let heartbeat = Heartbeat::new(Duration::from_millis(300));
    let committed = CommittedPositions::default();
    let metrics = StreamerMetrics::default();
    let (streamer, sender) = streamer(&heartbeat, &committed, &metrics);

    // Another thread holds the lock the in-process commit takes: the streamer's commit
    // blocks its thread, as in a deadlock, until the lock is released.
    let (locked, is_locked) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let committed = committed.clone();
        move || {
            let _guard = committed.lock().unwrap();
            locked.send(()).unwrap();
            let _ = released.recv();
        }
    });
    is_locked.recv().unwrap();

    let cancel = CancellationToken::new();
    let running = tokio::spawn(streamer.run(cancel.clone()));
    // One message: the batch is full at once, is stored, and its commit hangs.
    sender.send(payment()).await.unwrap();
    eventually(
        "the heartbeat is stale",
        Duration::from_secs(30),
        async || heartbeat.check().is_err(),
    )
    .await;
    assert_eq!(metrics.messages_read(), 1);
    assert!(!running.is_finished());

    release.send(()).unwrap();
    holder.join().unwrap();
    eventually(
        "the heartbeat is fresh again",
        Duration::from_secs(30),
        async || heartbeat.check().is_ok(),
    )
    .await;
    cancel.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!((summary.messages, summary.batches), (1, 1));
}

#[tokio::test]
async fn a_producer_blocked_on_a_full_sink_stalls() {
    let heartbeat = Heartbeat::new(Duration::from_millis(300));
    let config = StreamConfig {
        simulated_start: Some(chrono::Utc::now()),
        ..StreamConfig::default()
    };
    let mut stream = EventStream::new(&config, ProducerMetrics::default()).unwrap();
    // Nobody reads the channel: after 8 messages every send waits.
    let (mut sink, _receiver) = ChannelSink::new(8);
    let cancel = CancellationToken::new();
    let producing = tokio::spawn({
        let (cancel, heartbeat) = (cancel.clone(), heartbeat.clone());
        async move {
            producer::run(
                &mut stream,
                &mut sink,
                RunLimits::default(),
                &cancel,
                &heartbeat,
            )
            .await
        }
    });
    eventually(
        "the heartbeat is stale",
        Duration::from_secs(30),
        async || heartbeat.check().is_err(),
    )
    .await;
    cancel.cancel();
    let summary = producing.await.unwrap().unwrap();
    assert_eq!(summary.sent, 8);
}
