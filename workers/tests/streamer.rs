//! The streamer's guarantees against an in-memory lake and a replayable in-memory log with
//! Kafka's contract: every message lands once, as a row or a dead letter; a crash between
//! writing a batch and committing it replays into the same objects; revoked partitions drop
//! what they have not committed; batches close on their interval.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::log_source::{LogSource, TOPIC};
use common::outage::StoreOutage;
use fintech_workers::bronze::Lake;
use fintech_workers::faults::{FaultInjector, FaultRates};
use fintech_workers::source::{
    InProcessSource, MessageSource, SourceError, SourceEvent, SourceMessage,
};
use fintech_workers::streamer::{BatchPolicy, Streamer, StreamerMetrics};
use fintech_workers::synthetic::SyntheticGenerator;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use tokio_util::sync::CancellationToken;

/// A log of `n` messages over 3 partitions, some of them undecodable.
fn log(n: usize, malformed: f64) -> BTreeMap<i32, Vec<SourceMessage>> {
    let mut generator = SyntheticGenerator::new(3, 0.0);
    let rates = FaultRates {
        malformed_json: malformed,
        ..FaultRates::default()
    };
    let mut injector = FaultInjector::new(rates, 3);
    let mut log: BTreeMap<i32, Vec<SourceMessage>> = BTreeMap::new();
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T20:00:00Z")
        .unwrap()
        .to_utc();
    for i in 0..n {
        // Events spread over two days, so batches split by date.
        let time = start + chrono::Duration::minutes(i as i64);
        let event = generator.next_payment(time);
        let key = event.transaction_id.clone();
        let payload = injector.encode(event).remove(0).payload;
        let partition = InProcessSource::partition_of(key.as_bytes(), 3);
        let messages = log.entry(partition).or_default();
        messages.push(SourceMessage {
            partition,
            offset: messages.len() as i64,
            timestamp_ms: Some(time.timestamp_millis()),
            key: Some(key.into_bytes()),
            payload: Some(payload),
        });
    }
    log
}

fn policy(max_rows: usize) -> BatchPolicy {
    BatchPolicy {
        max_rows,
        ..BatchPolicy::default()
    }
}

/// The lake at the root of `store`.
fn lake(store: &Arc<InMemory>) -> Lake {
    Lake::new(store.clone(), Path::default())
}

/// Every (partition, offset) stored under `prefix`, with repeats.
async fn stored(store: &Arc<InMemory>, prefix: &str) -> Vec<(i32, i64)> {
    lake(store).stored_positions(prefix).await.unwrap()
}

#[tokio::test]
async fn every_message_lands_once_as_a_row_or_a_dead_letter() {
    let log = log(2_000, 0.05);
    let committed = Arc::default();
    let store = Arc::new(InMemory::new());
    let streamer = Streamer::new(
        LogSource::new(&log, &committed),
        lake(&store),
        policy(300),
        StreamerMetrics::default(),
    );
    let summary = streamer.run(CancellationToken::new()).await.unwrap();
    let rows = stored(&store, "bronze/transactions").await;
    let dead = stored(&store, "dead_letter/transactions").await;
    assert!(dead.len() > 50, "{} dead letters", dead.len());
    assert_eq!(summary.rows as usize, rows.len());
    assert_eq!(summary.dead_letters as usize, dead.len());
    common::assert_each_once([rows, dead].concat(), 2_000);
    // Every partition is committed up to its end.
    for (partition, messages) in &log {
        assert_eq!(committed.lock().unwrap()[partition], messages.len() as i64);
    }
    // Files sit in the folder of their event date.
    let listed: Vec<_> = store
        .list(Some(&Path::from("bronze/transactions")))
        .try_collect()
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|o| o.location.as_ref().contains("year=2026/month=11/day=02"))
    );
}

#[tokio::test]
async fn a_crash_between_write_and_commit_replays_into_the_same_objects() {
    let log = log(1_500, 0.02);
    let committed: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
    let store = Arc::new(InMemory::new());
    // The first batch is published; the second is written but its manifests are refused, as
    // if the streamer died before publishing them.
    let outage = Arc::new(StoreOutage::beyond_first_batch(store.clone()));
    let crashed = Streamer::new(
        LogSource::new(&log, &committed),
        Lake::new(outage, Path::default()),
        policy(400),
        StreamerMetrics::default(),
    );
    let error = crashed.run(CancellationToken::new()).await.unwrap_err();
    assert!(error.to_string().contains("_manifests"), "{error}");
    let before = stored(&store, "").await.len();
    assert!(before > 400, "the crashed run wrote its second batch");
    let committed_rows: i64 = committed.lock().unwrap().values().sum();
    assert!(
        (committed_rows as usize) < before,
        "the second batch was not committed"
    );

    // The restarted streamer uses other caps; it still closes the replayed batch at the
    // recorded end, so nothing is stored twice.
    let metrics = StreamerMetrics::default();
    let restarted = Streamer::new(
        LogSource::new(&log, &committed),
        lake(&store),
        policy(170),
        metrics.clone(),
    );
    restarted.run(CancellationToken::new()).await.unwrap();
    let rows = stored(&store, "bronze/transactions").await;
    let dead = stored(&store, "dead_letter/transactions").await;
    common::assert_each_once([rows, dead].concat(), 1_500);
    assert!(
        metrics.files_kept() > 0,
        "the replay found the crashed run's objects"
    );
}

#[tokio::test]
async fn revoked_partitions_drop_what_they_have_not_committed() {
    let log = log(300, 0.0);
    let committed: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
    let store = Arc::new(InMemory::new());
    let mut source = LogSource::new(&log, &committed);
    source.ends = false;
    // Partition 1 is revoked right after its first message arrives.
    source
        .events
        .push_back(SourceEvent::Message(log[&1][0].clone()));
    source.events.push_back(SourceEvent::Revoked(vec![1]));
    source.cursor.insert(1, i64::MAX);
    let cancel = CancellationToken::new();
    let streamer = Streamer::new(
        source,
        lake(&store),
        policy(10_000),
        StreamerMetrics::default(),
    );
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { streamer.run(cancel).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    run.await.unwrap().unwrap();
    let rows = stored(&store, "bronze/transactions").await;
    assert!(rows.iter().all(|(partition, _)| *partition != 1));
    assert_eq!(rows.len(), log[&0].len() + log[&2].len());
    assert!(!committed.lock().unwrap().contains_key(&1));
}

#[tokio::test(start_paused = true)]
async fn a_batch_closes_on_its_interval_and_shutdown_commits_the_open_one() {
    let log = log(50, 0.0);
    let committed: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
    let store = Arc::new(InMemory::new());
    let mut source = LogSource::new(&log, &committed);
    source.ends = false;
    let policy = BatchPolicy {
        interval: Duration::from_secs(30),
        ..BatchPolicy::default()
    };
    let cancel = CancellationToken::new();
    let streamer = Streamer::new(source, lake(&store), policy, StreamerMetrics::default());
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { streamer.run(cancel).await }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        committed.lock().unwrap().is_empty(),
        "nothing commits before the interval"
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(committed.lock().unwrap().values().sum::<i64>(), 50);
    cancel.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.rows, 50);
    // The batch record names the batch's range and objects.
    let record = lake(&store)
        .read_batch_record(TOPIC, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.range.first_offset, 0);
    assert_eq!(record.range.last_offset, log[&0].len() as i64 - 1);
    assert!(!record.files.is_empty());
}

/// A [`LogSource`] whose commits fail from the `first`-th on, as when the broker goes away
/// for good: the streamer retries, then stops.
struct CommitOutage {
    inner: LogSource,
    first: usize,
    commits: Arc<std::sync::atomic::AtomicUsize>,
}

impl MessageSource for CommitOutage {
    fn topic(&self) -> &str {
        self.inner.topic()
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        self.inner.next().await
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        let commits = 1 + self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if commits >= self.first {
            return Err(SourceError::Commit(rdkafka::error::KafkaError::Canceled));
        }
        self.inner.commit(positions).await
    }

    async fn rewind(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        self.inner.rewind(positions).await
    }
}

/// Stops a streamer at every write it makes (each batch record, object and manifest) and at
/// every commit, one crash point per run, and restarts it: every message is then stored
/// exactly once, as a row or a dead letter.
#[tokio::test(start_paused = true)]
async fn a_streamer_stopped_at_any_write_or_commit_stores_every_message_once() {
    let log = log(900, 0.03);
    // A clean run, to count the writes and commits there are to stop at.
    let committed: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
    let counting = Arc::new(StoreOutage::from_put(Arc::new(InMemory::new()), usize::MAX));
    let commits = Arc::<std::sync::atomic::AtomicUsize>::default();
    let source = CommitOutage {
        inner: LogSource::new(&log, &committed),
        first: usize::MAX,
        commits: commits.clone(),
    };
    Streamer::new(
        source,
        Lake::new(counting.clone(), Path::default()),
        policy(200),
        StreamerMetrics::default(),
    )
    .run(CancellationToken::new())
    .await
    .unwrap();
    let puts = counting.puts();
    let commits = commits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(puts > 20 && commits > 3, "{puts} writes, {commits} commits");

    let restart = |store: &Arc<InMemory>, committed: &Arc<Mutex<HashMap<i32, i64>>>| {
        Streamer::new(
            LogSource::new(&log, committed),
            lake(store),
            policy(170),
            StreamerMetrics::default(),
        )
        .run(CancellationToken::new())
    };
    for first in 1..=puts {
        let store = Arc::new(InMemory::new());
        let committed: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
        let outage = Arc::new(StoreOutage::from_put(store.clone(), first));
        let stopped = Streamer::new(
            LogSource::new(&log, &committed),
            Lake::new(outage, Path::default()),
            policy(200),
            StreamerMetrics::default(),
        )
        .run(CancellationToken::new())
        .await;
        assert!(stopped.is_err(), "stopped at write {first}");
        restart(&store, &committed).await.unwrap();
        let rows = stored(&store, "bronze/transactions").await;
        let dead = stored(&store, "dead_letter/transactions").await;
        common::assert_each_once([rows, dead].concat(), 900);
    }
    for first in 1..=commits {
        let store = Arc::new(InMemory::new());
        let committed: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
        let source = CommitOutage {
            inner: LogSource::new(&log, &committed),
            first,
            commits: Arc::default(),
        };
        let stopped = Streamer::new(
            source,
            lake(&store),
            policy(200),
            StreamerMetrics::default(),
        )
        .run(CancellationToken::new())
        .await;
        assert!(stopped.is_err(), "stopped at commit {first}");
        restart(&store, &committed).await.unwrap();
        let rows = stored(&store, "bronze/transactions").await;
        let dead = stored(&store, "dead_letter/transactions").await;
        common::assert_each_once([rows, dead].concat(), 900);
    }
}
