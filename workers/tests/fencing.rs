//! Fencing of the streamer's batch records: a streamer that lost a partition (a zombie: paused
//! past the group's session timeout, then woken) must not write a batch over the new owner's.
//!
//! Store level, on every object store the lake runs on (the in-memory store, a local folder,
//! MinIO): a write of a partition's batch record is conditional on the version its writer last
//! read or wrote, so a writer holding a stale version is refused, a take-over (which rewrites
//! the record) fences the previous owner even when the content is unchanged, and of writers
//! racing on one version exactly one wins.
//!
//! Streamer level, on the same stores with the in-memory log: an old owner's batch closed
//! after a new owner took the partition over writes nothing (no record, object or manifest)
//! and commits nothing, whether the partition had a record or not; and a commit the group
//! refuses is not counted as a success, the batch being replayed into the same keys.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::log_source::{Log, LogSource, TOPIC};
use fintech_workers::bronze::BatchRecord;
use fintech_workers::bronze::lake::{Lake, LakeError, RecordVersion};
use fintech_workers::bronze::layout::{self, BatchRange};
use fintech_workers::faults::{FaultInjector, FaultRates};
use fintech_workers::source::{CommittedPositions, MessageSource, SourceError, SourceEvent};
use fintech_workers::streamer::{BatchPolicy, StreamSummary, Streamer, StreamerMetrics};
use fintech_workers::synthetic::SyntheticGenerator;
use futures::TryStreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;

on_every_store!(
    a_writer_holding_a_stale_version_is_refused,
    a_take_over_fences_the_previous_owner_even_when_the_record_is_unchanged,
    of_writers_racing_on_one_version_exactly_one_wins,
    an_old_owners_batch_after_a_take_over_writes_nothing,
    an_old_owners_first_batch_after_a_take_over_writes_nothing,
);

fn record(partition: i32, first_offset: i64, last_offset: i64) -> BatchRecord {
    BatchRecord {
        range: BatchRange {
            topic: TOPIC.to_owned(),
            partition,
            first_offset,
            last_offset,
        },
        files: vec![format!(
            "bronze/transactions/p{partition}-{first_offset}-{last_offset}.parquet"
        )],
    }
}

fn assert_fenced(error: &LakeError, lake: &Lake, partition: i32) {
    assert!(matches!(error, LakeError::Fenced { .. }), "{error}");
    let path = layout::batch_record(lake.root(), TOPIC, partition);
    assert!(error.to_string().contains(path.as_ref()), "{error}");
}

async fn a_writer_holding_a_stale_version_is_refused(lake: &Lake) {
    // Two streamers take partition 0 over while it has no record.
    let a = lake.read_versioned_batch_record(TOPIC, 0).await.unwrap();
    let b = lake.read_versioned_batch_record(TOPIC, 0).await.unwrap();
    assert_eq!((&a.record, &a.version), (&None, &RecordVersion::Absent));

    // A creates the record; B, still holding "no record", is refused.
    let a_version = lake
        .write_batch_record(&record(0, 0, 9), &a.version)
        .await
        .unwrap();
    let refused = lake
        .write_batch_record(&record(0, 0, 4), &b.version)
        .await
        .unwrap_err();
    assert_fenced(&refused, lake, 0);

    // B reads it again and replaces it; now A holds a stale version and is refused.
    let b = lake.read_versioned_batch_record(TOPIC, 0).await.unwrap();
    assert_eq!(b.record, Some(record(0, 0, 9)));
    assert_eq!(b.version, a_version);
    let b_version = lake
        .write_batch_record(&record(0, 10, 19), &b.version)
        .await
        .unwrap();
    let refused = lake
        .write_batch_record(&record(0, 10, 29), &a_version)
        .await
        .unwrap_err();
    assert_fenced(&refused, lake, 0);

    // The refused writes changed nothing, and B goes on with the version it wrote.
    let stored = lake.read_versioned_batch_record(TOPIC, 0).await.unwrap();
    assert_eq!(stored.record, Some(record(0, 10, 19)));
    assert_eq!(stored.version, b_version);
    lake.write_batch_record(&record(0, 20, 29), &b_version)
        .await
        .unwrap();
    assert_eq!(
        lake.read_batch_record(TOPIC, 0).await.unwrap(),
        Some(record(0, 20, 29))
    );
    // Another partition's record is another object, with its own versions.
    lake.write_batch_record(&record(1, 0, 9), &RecordVersion::Absent)
        .await
        .unwrap();
}

async fn a_take_over_fences_the_previous_owner_even_when_the_record_is_unchanged(lake: &Lake) {
    let a_version = lake
        .write_batch_record(&record(1, 0, 9), &RecordVersion::Absent)
        .await
        .unwrap();
    // B takes the partition over by storing the record it read again, unchanged.
    let read = lake.read_versioned_batch_record(TOPIC, 1).await.unwrap();
    let b_version = lake
        .write_batch_record(read.record.as_ref().unwrap(), &read.version)
        .await
        .unwrap();
    assert_ne!(
        a_version, b_version,
        "every write makes a new version, even of the same record (S3's ETag is the MD5 of \
         the bytes)"
    );
    let refused = lake
        .write_batch_record(&record(1, 10, 19), &a_version)
        .await
        .unwrap_err();
    assert_fenced(&refused, lake, 1);
    assert_eq!(
        lake.read_batch_record(TOPIC, 1).await.unwrap(),
        Some(record(1, 0, 9))
    );
}

async fn of_writers_racing_on_one_version_exactly_one_wins(lake: &Lake) {
    let version = lake
        .write_batch_record(&record(2, 0, 9), &RecordVersion::Absent)
        .await
        .unwrap();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let (lake, version) = (lake.clone(), version.clone());
            tokio::spawn(async move {
                let record = record(2, 10, 10 + i);
                (
                    record.clone(),
                    lake.write_batch_record(&record, &version).await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for writer in writers {
        let (record, outcome) = writer.await.unwrap();
        match outcome {
            Ok(version) => winners.push((record, version)),
            Err(error) => assert_fenced(&error, lake, 2),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racing writer wins");
    let stored = lake.read_versioned_batch_record(TOPIC, 2).await.unwrap();
    assert_eq!(stored.record.as_ref(), Some(&winners[0].0));
    assert_eq!(stored.version, winners[0].1);
}

/// Messages of partition 0 at offsets `first..first + count`, all decodable.
fn append(log: &Log, first: i64, count: i64) {
    let mut generator = SyntheticGenerator::new(first as u64 + 1, 0.0);
    let mut injector = FaultInjector::new(FaultRates::default(), 1);
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-01T20:00:00Z")
        .unwrap()
        .to_utc();
    for i in first..first + count {
        let time = start + chrono::Duration::minutes(i);
        let event = generator.next_payment(time);
        let key = event.transaction_id.clone();
        let payload = injector.encode(event).remove(0).payload;
        let message = log.append(
            0,
            Some(key.into_bytes()),
            Some(payload),
            Some(time.timestamp_millis()),
        );
        assert_eq!(message.offset, i);
    }
}

fn policy(max_rows: usize) -> BatchPolicy {
    BatchPolicy {
        // Only a full batch or the end closes one.
        interval: Duration::from_secs(3600),
        max_rows,
        ..BatchPolicy::default()
    }
}

/// A [`LogSource`] that counts the messages it hands out.
struct Counted {
    inner: LogSource,
    handed_out: Arc<AtomicU64>,
}

impl MessageSource for Counted {
    fn topic(&self) -> &str {
        self.inner.topic()
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        let event = self.inner.next().await?;
        if let Some(SourceEvent::Message(_)) = event {
            self.handed_out.fetch_add(1, Ordering::SeqCst);
        }
        Ok(event)
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        self.inner.commit(positions).await
    }

    async fn rewind(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        self.inner.rewind(positions).await
    }
}

/// A streamer running in the background.
struct Running {
    metrics: StreamerMetrics,
    handed_out: Arc<AtomicU64>,
    cancel: CancellationToken,
    run: tokio::task::JoinHandle<StreamSummary>,
}

impl Running {
    fn handed_out(&self) -> u64 {
        self.handed_out.load(Ordering::SeqCst)
    }

    /// Stops it and returns its summary.
    async fn stop(self) -> StreamSummary {
        self.cancel.cancel();
        self.run.await.unwrap()
    }
}

/// Starts a streamer of the group whose positions are `committed`, reading `log`.
fn start(lake: &Lake, log: &Log, committed: &CommittedPositions, max_rows: usize) -> Running {
    let metrics = StreamerMetrics::default();
    let handed_out = Arc::new(AtomicU64::new(0));
    let source = Counted {
        inner: LogSource::reading(log.clone(), committed),
        handed_out: handed_out.clone(),
    };
    let streamer = Streamer::new(source, lake.clone(), policy(max_rows), metrics.clone());
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { streamer.run(cancel).await.unwrap() }
    });
    Running {
        metrics,
        handed_out,
        cancel,
        run,
    }
}

/// Waits up to 30 s for `condition`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn committed_offset(committed: &CommittedPositions) -> i64 {
    committed.lock().unwrap().get(&0).copied().unwrap_or(0)
}

/// Every object of the lake with its ETag.
async fn objects(lake: &Lake) -> Vec<(String, Option<String>)> {
    let mut objects: Vec<_> = lake
        .store()
        .list(Some(lake.root()))
        .map_ok(|meta| (meta.location.to_string(), meta.e_tag))
        .try_collect()
        .await
        .unwrap();
    objects.sort();
    objects
}

async fn stored(lake: &Lake) -> Vec<(i32, i64)> {
    let rows = lake
        .stored_positions(layout::TRANSACTIONS_PREFIX)
        .await
        .unwrap();
    let dead = lake
        .stored_positions(layout::DEAD_LETTER_PREFIX)
        .await
        .unwrap();
    [rows, dead].concat()
}

/// The zombie: streamer A holds the open batch of partition 0 from `first` to offset 99 when
/// B takes the partition over (A's session expired) and stores offsets `first..100`. Then A
/// wakes and closes its batch: it must write and commit nothing.
async fn zombie_after_take_over(lake: &Lake, first: i64) {
    let log = Log::new(1);
    let committed = CommittedPositions::default();
    if first > 0 {
        // An earlier owner stored and committed offsets 0 to `first - 1`.
        append(&log, 0, first);
        let earlier = start(lake, &log, &committed, first as usize);
        eventually("the earlier owner committed", || {
            committed_offset(&committed) == first
        })
        .await;
        earlier.stop().await;
    }
    append(&log, first, 100 - first);

    // A reads the rest; its batch closes one message later, when it wakes.
    let held = (100 - first) as u64;
    let a = start(lake, &log, &committed, held as usize + 1);
    eventually("A read its batch", || a.metrics.messages_read() == held).await;

    // B, the partition's new owner, stores and commits everything, in batches of 20.
    let b = start(lake, &log, &committed, 20);
    eventually("B committed", || committed_offset(&committed) == 100).await;
    assert_eq!(b.stop().await.messages, held);
    let before = objects(lake).await;
    common::assert_each_once(stored(lake).await, 100);

    // A wakes: one more message fills its batch, whose record write is refused.
    append(&log, 100, 1);
    eventually("A was fenced", || a.metrics.fenced_batches() == 1).await;
    // It reads the partition again from its batch's start, finds B's later batch in the
    // record, and leaves the partition alone: every message it is handed is ignored.
    eventually("A read the partition again", || {
        a.handed_out() == 2 * (held + 1)
    })
    .await;
    assert_eq!(a.metrics.messages_read(), held + 1);
    assert_eq!(
        a.stop().await,
        StreamSummary::default(),
        "A committed nothing"
    );
    assert_eq!(
        objects(lake).await,
        before,
        "A stored nothing: no batch record, object or manifest"
    );
    assert_eq!(committed_offset(&committed), 100);
    common::assert_each_once(stored(lake).await, 100);

    // The partition's next owner stores what A could not.
    log.close();
    let c = start(lake, &log, &committed, 20);
    let c_metrics = c.metrics.clone();
    let c = c.run.await.unwrap();
    assert_eq!((c.messages, c_metrics.fenced_batches()), (1, 0));
    assert_eq!(committed_offset(&committed), 101);
    common::assert_each_once(stored(lake).await, 101);
}

/// The partition has a record when A takes it over: A's write is an update of its version.
async fn an_old_owners_batch_after_a_take_over_writes_nothing(lake: &Lake) {
    zombie_after_take_over(lake, 40).await;
}

/// The partition has no record yet: A's write is a create, refused since B created one.
async fn an_old_owners_first_batch_after_a_take_over_writes_nothing(lake: &Lake) {
    zombie_after_take_over(lake, 0).await;
}

/// A [`LogSource`] whose group refuses the first commit, as Kafka does during a rebalance or
/// after the member's session expired.
struct RefusingOnce {
    inner: LogSource,
    refused: bool,
}

impl MessageSource for RefusingOnce {
    fn topic(&self) -> &str {
        self.inner.topic()
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        self.inner.next().await
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        if !self.refused {
            self.refused = true;
            return Err(SourceError::CommitRefused(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::IllegalGeneration,
            )));
        }
        self.inner.commit(positions).await
    }

    async fn rewind(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        self.inner.rewind(positions).await
    }
}

#[tokio::test]
async fn a_refused_commit_is_not_a_success_and_the_batch_is_replayed_into_the_same_keys() {
    let store = common::stores::in_memory();
    let log = Log::new(1);
    append(&log, 0, 100);
    log.close();
    let committed = CommittedPositions::default();
    let metrics = StreamerMetrics::default();
    let source = RefusingOnce {
        inner: LogSource::reading(log.clone(), &committed),
        refused: false,
    };
    let streamer = Streamer::new(source, store.lake.clone(), policy(30), metrics.clone());
    let summary = streamer.run(CancellationToken::new()).await.unwrap();

    // The first batch, [0, 29], was stored but its commit refused: not counted, read again
    // from offset 0 and closed at the recorded end, so its objects were found and kept.
    assert_eq!(metrics.commits_refused(), 1);
    assert!(metrics.files_kept() > 0, "the replay met the same keys");
    assert_eq!(
        (summary.messages, summary.batches),
        (100, 4),
        "only committed batches count"
    );
    assert_eq!(committed_offset(&committed), 100);
    common::assert_each_once(stored(&store.lake).await, 100);
    let manifests = objects(&store.lake)
        .await
        .into_iter()
        .filter(|(key, _)| key.contains("/_manifests/"))
        .count();
    assert_eq!(manifests, 4, "one manifest per range");
}
