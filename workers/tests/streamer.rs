//! The streamer's guarantees against an in-memory lake and a replayable in-memory log with
//! Kafka's contract: every message lands once, as a row or a dead letter; a crash between
//! writing a batch and committing it replays into the same objects; revoked partitions drop
//! what they have not committed; batches close on their interval.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::manifest_outage::ManifestOutage;
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

const TOPIC: &str = "transactions";

/// A replayable partitioned log with committed positions: Kafka's contract, in memory.
struct LogSource {
    log: BTreeMap<i32, Vec<SourceMessage>>,
    committed: Arc<Mutex<HashMap<i32, i64>>>,
    cursor: HashMap<i32, i64>,
    events: std::collections::VecDeque<SourceEvent>,
    /// Whether `next` ends (`None`) or waits forever once the log is read.
    ends: bool,
}

impl LogSource {
    fn new(
        log: &BTreeMap<i32, Vec<SourceMessage>>,
        committed: &Arc<Mutex<HashMap<i32, i64>>>,
    ) -> Self {
        let cursor = log
            .keys()
            .map(|p| (*p, committed.lock().unwrap().get(p).copied().unwrap_or(0)))
            .collect();
        Self {
            log: log.clone(),
            committed: committed.clone(),
            cursor,
            events: [SourceEvent::Assigned(log.keys().copied().collect())].into(),
            ends: true,
        }
    }
}

impl MessageSource for LogSource {
    fn topic(&self) -> &str {
        TOPIC
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        // Round robin over partitions, like a consumer fetching from several.
        for (partition, messages) in &self.log {
            let cursor = self.cursor.get_mut(partition).unwrap();
            if let Some(message) = messages.get(*cursor as usize) {
                *cursor += 1;
                return Ok(Some(SourceEvent::Message(message.clone())));
            }
        }
        if self.ends {
            Ok(None)
        } else {
            std::future::pending().await
        }
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        let mut committed = self.committed.lock().unwrap();
        for (partition, offset) in positions {
            committed.insert(*partition, *offset);
        }
        Ok(())
    }
}

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
    let outage = Arc::new(ManifestOutage::beyond_first_batch(store.clone()));
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
