//! `fintech stream`: messages into bronze Parquet, exactly once, with a dead-letter queue.
//!
//! The streamer reads a [`MessageSource`], decodes each message as it arrives into the
//! columns of an open batch (one part per partition), and closes the batch on an interval or
//! a row or byte cap. [`Streamer::write_and_commit`] holds the rule that makes bronze exactly
//! once; read its comment before changing anything here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bronze::decode::{self, DeadLetterColumns, TransactionColumns};
use crate::bronze::layout::{self, BatchRange};
use crate::bronze::{self};
use crate::kafka::LagGauge;
use crate::source::{MessageSource, SourceError, SourceEvent, SourceMessage};
use crate::storage;

/// Concurrent object writes per batch.
const WRITE_CONCURRENCY: usize = 8;
/// Attempts at committing offsets before the streamer gives up and exits.
const COMMIT_ATTEMPTS: u32 = 5;

/// When a batch closes, and what a message may weigh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// A batch closes this long after its first message.
    pub interval: Duration,
    /// A batch closes when it holds this many messages.
    pub max_rows: usize,
    /// A batch closes when its messages weigh this many bytes.
    pub max_bytes: usize,
    /// A larger payload is a dead letter.
    pub max_message_bytes: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            max_rows: 100_000,
            max_bytes: 64 * 1024 * 1024,
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// Errors that stop the streamer.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing or reading an object failed.
    #[error("object store operation on {path} failed: {source}")]
    Store {
        /// The object.
        path: String,
        /// Why.
        source: object_store::Error,
    },
    /// Encoding a Parquet file failed.
    #[error("encoding {path} failed: {source}")]
    Encode {
        /// The object.
        path: String,
        /// Why.
        source: parquet::errors::ParquetError,
    },
    /// The record of a partition's last batch is unreadable.
    #[error(
        "the batch record {path} is corrupt: {source}; delete it only after checking bronze for files of that range"
    )]
    CorruptBatchRecord {
        /// The object.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// The record of the last batch written for one partition, stored before the batch's files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchRecord {
    /// The batch's Kafka range.
    pub range: BatchRange,
    /// Every object the batch writes.
    pub files: Vec<String>,
}

/// Metrics of the streamer, under `fintech_streamer_*`.
#[derive(Clone)]
pub struct StreamerMetrics {
    messages: Counter,
    bytes: Counter,
    batches: Counter,
    files_written: Family<FileLabels, Counter>,
    files_kept: Counter,
    dead_letters: Family<DeadLetterLabels, Counter>,
    batch_duration: Histogram,
    last_commit: Gauge,
    /// Consumer lag per partition, fed by the Kafka source.
    pub lag: LagGauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    kind: &'static str,
}

impl Default for StreamerMetrics {
    fn default() -> Self {
        Self {
            messages: Counter::default(),
            bytes: Counter::default(),
            batches: Counter::default(),
            files_written: Family::default(),
            files_kept: Counter::default(),
            dead_letters: Family::default(),
            batch_duration: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            last_commit: Gauge::default(),
            lag: LagGauge::default(),
        }
    }
}

impl StreamerMetrics {
    /// Messages read so far.
    pub fn messages_read(&self) -> u64 {
        self.messages.get()
    }

    /// Registers the metrics under `fintech_streamer_*`.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("fintech_streamer");
        registry.register("messages", "Messages read", self.messages.clone());
        registry.register("bytes", "Bytes of key and payload read", self.bytes.clone());
        registry.register(
            "batches",
            "Batches written and committed",
            self.batches.clone(),
        );
        registry.register(
            "files_written",
            "Objects written, by kind (transactions or dead_letter)",
            self.files_written.clone(),
        );
        registry.register(
            "files_kept",
            "Objects found already stored when a batch was replayed after a crash",
            self.files_kept.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages sent to the dead-letter queue, by kind",
            self.dead_letters.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Time to encode, store and commit one batch",
            self.batch_duration.clone(),
        );
        registry.register(
            "last_commit_timestamp_seconds",
            "When offsets were last committed (Unix time)",
            self.last_commit.clone(),
        );
        registry.register(
            "consumer_lag",
            "Messages behind the end of each partition",
            self.lag.clone(),
        );
    }
}

/// Totals of a streamer run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Messages read and committed.
    pub messages: u64,
    /// Rows written to bronze.
    pub rows: u64,
    /// Records written to the dead-letter queue.
    pub dead_letters: u64,
    /// Batches committed.
    pub batches: u64,
}

/// The open batch's part for one partition.
struct PartitionPart {
    first_offset: i64,
    last_offset: i64,
    transactions: BTreeMap<NaiveDate, TransactionColumns>,
    dead_letters: BTreeMap<NaiveDate, DeadLetterColumns>,
    rows: u64,
    dead: u64,
}

/// The streamer: one source, one object store, one open batch.
pub struct Streamer<S: MessageSource> {
    source: S,
    store: Arc<dyn ObjectStore>,
    root: Path,
    policy: BatchPolicy,
    metrics: StreamerMetrics,
    parts: BTreeMap<i32, PartitionPart>,
    batch_started: Option<Instant>,
    batch_messages: usize,
    batch_bytes: usize,
    /// Partitions assigned but not yet checked for an uncommitted batch.
    unchecked: HashSet<i32>,
    /// Partitions replaying an uncommitted batch, with the offset that batch must end at.
    replay_ends: HashMap<i32, i64>,
    summary: StreamSummary,
    /// Test hook: stop after writing this many batches, before committing the last one.
    crash_after_writes: Option<u64>,
    /// Set when the test hook stopped the streamer.
    crashed: bool,
    /// Batches whose files were written.
    batches_written: u64,
}

impl<S: MessageSource> Streamer<S> {
    /// A streamer writing under `root` of `store`.
    pub fn new(
        source: S,
        store: Arc<dyn ObjectStore>,
        root: Path,
        policy: BatchPolicy,
        metrics: StreamerMetrics,
    ) -> Self {
        Self {
            source,
            store,
            root,
            policy,
            metrics,
            parts: BTreeMap::new(),
            batch_started: None,
            batch_messages: 0,
            batch_bytes: 0,
            unchecked: HashSet::new(),
            replay_ends: HashMap::new(),
            summary: StreamSummary::default(),
            crash_after_writes: None,
            crashed: false,
            batches_written: 0,
        }
    }

    /// Makes the streamer stop (as if killed) after writing the files of its `n`th batch and
    /// before committing it, for tests of crash recovery.
    pub fn crash_after_writing(mut self, n: u64) -> Self {
        self.crash_after_writes = Some(n);
        self
    }

    /// Runs until `cancel` fires or the source ends, then writes and commits the open batch.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<StreamSummary, StreamError> {
        loop {
            let deadline = self
                .batch_started
                .map(|started| started + self.policy.interval);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = sleep_until(deadline) => self.close_batch().await?,
                event = self.source.next() => match event? {
                    None => break,
                    Some(SourceEvent::Assigned(partitions)) => self.unchecked.extend(partitions),
                    Some(SourceEvent::Revoked(partitions)) => self.drop_partitions(&partitions),
                    Some(SourceEvent::Message(message)) => {
                        if self.unchecked.remove(&message.partition) {
                            self.check_uncommitted_batch(message.partition, message.offset).await?;
                        }
                        self.add(message);
                        if self.batch_is_full() {
                            self.close_batch().await?;
                        }
                    }
                },
            }
            if self.crashed {
                return Ok(self.summary);
            }
        }
        // Shutdown: a replayed batch that has not reached its recorded end cannot be written
        // under another range, so it is left for the next run to replay.
        let unfinished: Vec<i32> = self.replay_ends.keys().copied().collect();
        self.drop_partitions(&unfinished);
        self.close_batch().await?;
        Ok(self.summary)
    }

    /// Adds one message to the open batch: a row, or a dead letter.
    fn add(&mut self, message: SourceMessage) {
        let topic = self.source.topic().to_owned();
        self.metrics.messages.inc();
        self.metrics.bytes.inc_by(message.size() as u64);
        self.batch_started.get_or_insert_with(Instant::now);
        self.batch_messages += 1;
        self.batch_bytes += message.size();
        let part = self
            .parts
            .entry(message.partition)
            .or_insert_with(|| PartitionPart {
                first_offset: message.offset,
                last_offset: message.offset,
                transactions: BTreeMap::new(),
                dead_letters: BTreeMap::new(),
                rows: 0,
                dead: 0,
            });
        part.last_offset = message.offset;
        match decode::decode(message.payload.as_deref(), self.policy.max_message_bytes) {
            Ok(event) => {
                let date = layout::utc_date(event.event_time);
                part.transactions
                    .entry(date)
                    .or_default()
                    .append(&event, &message);
                part.rows += 1;
            }
            Err(error) => {
                let time = message
                    .timestamp_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .unwrap_or_else(Utc::now);
                part.dead_letters
                    .entry(layout::utc_date(time))
                    .or_insert_with(|| DeadLetterColumns::new(&topic))
                    .append(&message, &error);
                part.dead += 1;
                self.metrics
                    .dead_letters
                    .get_or_create(&DeadLetterLabels {
                        kind: error.kind.as_str(),
                    })
                    .inc();
            }
        }
    }

    fn batch_is_full(&self) -> bool {
        let replay_done = self.replay_ends.iter().any(|(partition, end)| {
            self.parts
                .get(partition)
                .is_some_and(|p| p.last_offset >= *end)
        });
        replay_done
            || self.batch_messages >= self.policy.max_rows
            || self.batch_bytes >= self.policy.max_bytes
    }

    /// Forgets everything read from `partitions` and not yet committed.
    fn drop_partitions(&mut self, partitions: &[i32]) {
        for partition in partitions {
            if let Some(part) = self.parts.remove(partition) {
                tracing::info!(
                    partition,
                    first_offset = part.first_offset,
                    last_offset = part.last_offset,
                    "dropping uncommitted messages of a partition this streamer no longer owns"
                );
            }
            self.replay_ends.remove(partition);
            self.unchecked.remove(partition);
        }
        if self.parts.is_empty() {
            self.reset_batch();
        }
    }

    fn reset_batch(&mut self) {
        self.batch_started = None;
        self.batch_messages = 0;
        self.batch_bytes = 0;
    }

    /// On the first message of a newly assigned partition, looks for a batch that was
    /// written but not committed (a crash, or a failed commit). If the first offset falls in
    /// it, this run must close its batch at the same end, so that it rewrites the same keys.
    async fn check_uncommitted_batch(
        &mut self,
        partition: i32,
        offset: i64,
    ) -> Result<(), StreamError> {
        let topic = self.source.topic().to_owned();
        let Some(record) =
            read_batch_record(self.store.as_ref(), &self.root, &topic, partition).await?
        else {
            return Ok(());
        };
        if offset > record.range.last_offset {
            return Ok(());
        }
        if offset != record.range.first_offset {
            tracing::warn!(
                partition,
                offset,
                recorded_first = record.range.first_offset,
                "the committed offset is inside the recorded batch, not at its start"
            );
        }
        tracing::info!(
            partition,
            first_offset = offset,
            last_offset = record.range.last_offset,
            "replaying a batch that was written but not committed; it will close at the same offset"
        );
        self.replay_ends.insert(partition, record.range.last_offset);
        Ok(())
    }

    /// Closes the open batch: writes it, then commits it. Parts still replaying towards a
    /// recorded end stay open.
    async fn close_batch(&mut self) -> Result<(), StreamError> {
        let replaying: HashSet<i32> = self
            .replay_ends
            .iter()
            .filter(|(partition, end)| {
                self.parts
                    .get(partition)
                    .is_none_or(|p| p.last_offset < **end)
            })
            .map(|(partition, _)| *partition)
            .collect();
        let ready: Vec<i32> = self
            .parts
            .keys()
            .copied()
            .filter(|p| !replaying.contains(p))
            .collect();
        let parts: Vec<(i32, PartitionPart)> = ready
            .iter()
            .filter_map(|partition| self.parts.remove(partition).map(|part| (*partition, part)))
            .collect();
        for partition in &ready {
            self.replay_ends.remove(partition);
        }
        if self.parts.is_empty() {
            self.reset_batch();
        }
        if parts.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.write_and_commit(parts).await?;
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Writes one batch and commits its offsets.
    ///
    /// **Invariant: an offset is committed only after every object that holds its message is
    /// durably stored, and a message is stored under one key only.** In order:
    ///
    /// 1. For each partition, the batch record (range and object keys) is stored first.
    /// 2. Every object is stored with create-only semantics; an object that exists already
    ///    was stored by an earlier attempt at this same range and is kept, never changed.
    /// 3. The batch's manifest, which tells the loader the objects exist, is stored
    ///    (create-only too).
    /// 4. Only then are the offsets committed (`last_offset + 1` per partition).
    ///
    /// Keys are a function of the range alone, and a restarted streamer that finds an
    /// uncommitted record closes its first batch at the recorded end, so a crash at any
    /// point replays into the same keys, never into new ones.
    async fn write_and_commit(
        &mut self,
        parts: Vec<(i32, PartitionPart)>,
    ) -> Result<(), StreamError> {
        let topic = self.source.topic().to_owned();
        let ingested_at = Utc::now().timestamp_micros();
        let mut records = Vec::new();
        let written_on = Utc::now().date_naive();
        let mut files: Vec<(Path, &'static str, Vec<u8>)> = Vec::new();
        let mut positions = Vec::new();
        let (mut rows, mut dead, mut messages) = (0, 0, 0);
        for (partition, part) in parts {
            let range = BatchRange {
                topic: topic.clone(),
                partition,
                first_offset: part.first_offset,
                last_offset: part.last_offset,
            };
            let mut keys = Vec::new();
            for (date, columns) in part.transactions {
                let path = layout::transactions_file(&self.root, date, &range);
                files.push((
                    path.clone(),
                    "transactions",
                    encode(&path, &columns.finish(ingested_at))?,
                ));
                keys.push(path.to_string());
            }
            for (date, columns) in part.dead_letters {
                let path = layout::dead_letter_file(&self.root, date, &range);
                files.push((
                    path.clone(),
                    "dead_letter",
                    encode(&path, &columns.finish(ingested_at))?,
                ));
                keys.push(path.to_string());
            }
            rows += part.rows;
            dead += part.dead;
            messages += (part.last_offset - part.first_offset + 1) as u64;
            positions.push((partition, part.last_offset + 1));
            records.push((
                layout::batch_record(&self.root, &topic, partition),
                BatchRecord { range, files: keys },
            ));
        }

        // 1. The batch records.
        let store = &self.store;
        let puts: Vec<_> = records
            .iter()
            .map(|(path, record)| put_record(store.clone(), path.clone(), record.clone()))
            .collect();
        futures::stream::iter(puts)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;

        // 2. The objects, create-only.
        let puts: Vec<_> = files
            .into_iter()
            .map(|(path, kind, body)| put_new(store.clone(), path, kind, body))
            .collect();
        let outcomes: Vec<(&'static str, bool)> = futures::stream::iter(puts)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        for (kind, written) in outcomes {
            if written {
                self.metrics
                    .files_written
                    .get_or_create(&FileLabels { kind })
                    .inc();
            } else {
                self.metrics.files_kept.inc();
            }
        }
        self.batches_written += 1;
        if self.crash_after_writes == Some(self.batches_written) {
            self.crashed = true;
            return Ok(());
        }

        // 3. The manifests.
        let puts: Vec<_> = records
            .into_iter()
            .map(|(_, record)| {
                let path = layout::manifest(&self.root, written_on, &record.range);
                let body = serde_json::to_vec_pretty(&record)
                    .unwrap_or_else(|e| unreachable!("a batch record serialises: {e}"));
                put_new(store.clone(), path, "manifest", body)
            })
            .collect();
        futures::stream::iter(puts)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;

        // 4. The offsets.
        self.commit(&positions).await?;
        self.metrics.batches.inc();
        self.metrics.last_commit.set(Utc::now().timestamp());
        self.summary.batches += 1;
        self.summary.rows += rows;
        self.summary.dead_letters += dead;
        self.summary.messages += messages;
        tracing::info!(
            rows,
            dead_letters = dead,
            partitions = positions.len(),
            "batch committed"
        );
        Ok(())
    }

    /// Commits with retries. A commit refused because the group is rebalancing is not
    /// retried: the partitions' new owner replays the recorded batch into the same keys.
    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), StreamError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.source.commit(positions).await {
                Ok(()) => return Ok(()),
                Err(error) if is_rebalance(&error) => {
                    tracing::warn!(%error, "commit refused during a rebalance; the new owner replays the batch");
                    return Ok(());
                }
                Err(error) if attempt < COMMIT_ATTEMPTS => {
                    let delay = Duration::from_millis(200 * 2u64.pow(attempt));
                    tracing::warn!(%error, attempt, ?delay, "commit failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// The record of the last batch written for `partition` of `topic`, if any.
pub async fn read_batch_record(
    store: &dyn ObjectStore,
    root: &Path,
    topic: &str,
    partition: i32,
) -> Result<Option<BatchRecord>, StreamError> {
    let path = layout::batch_record(root, topic, partition);
    let bytes = match store.get(&path).await {
        Ok(result) => result
            .bytes()
            .await
            .map_err(|source| store_error(&path, source))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(source) => return Err(store_error(&path, source)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StreamError::CorruptBatchRecord {
            path: path.to_string(),
            source,
        })
}

/// Stores (or replaces) the record of a partition's batch.
async fn put_record(
    store: Arc<dyn ObjectStore>,
    path: Path,
    record: BatchRecord,
) -> Result<(), StreamError> {
    let body = serde_json::to_vec_pretty(&record)
        .unwrap_or_else(|e| unreachable!("a batch record serialises: {e}"));
    store
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|source| store_error(&path, source))?;
    Ok(())
}

/// Stores a new object; an object already at `path` is kept and reported as not written.
async fn put_new(
    store: Arc<dyn ObjectStore>,
    path: Path,
    kind: &'static str,
    body: Vec<u8>,
) -> Result<(&'static str, bool), StreamError> {
    let written = storage::put_if_absent(store.as_ref(), &path, body)
        .await
        .map_err(|source| store_error(&path, source))?;
    if !written {
        tracing::info!(%path, "object already stored by an earlier attempt; keeping it");
    }
    Ok((kind, written))
}

fn is_rebalance(error: &SourceError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        error,
        SourceError::Commit(KafkaError::ConsumerCommit(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
        ))
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn encode(path: &Path, batch: &arrow_array::RecordBatch) -> Result<Vec<u8>, StreamError> {
    bronze::encode_parquet(batch).map_err(|source| StreamError::Encode {
        path: path.to_string(),
        source,
    })
}

fn store_error(path: &Path, source: object_store::Error) -> StreamError {
    StreamError::Store {
        path: path.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{FaultInjector, FaultRates};
    use crate::source::InProcessSource;
    use crate::synthetic::SyntheticGenerator;
    use object_store::memory::InMemory;
    use std::sync::Mutex;

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

    /// Every (partition, offset) stored under `prefix`, with repeats.
    async fn stored(store: &InMemory, prefix: &str) -> Vec<(i32, i64)> {
        bronze::stored_positions(store, &Path::from(prefix))
            .await
            .unwrap()
    }

    fn assert_each_once(mut pairs: Vec<(i32, i64)>, expected: usize) {
        let total = pairs.len();
        pairs.sort();
        pairs.dedup();
        assert_eq!(
            pairs.len(),
            total,
            "some (partition, offset) is stored twice"
        );
        assert_eq!(total, expected);
    }

    #[tokio::test]
    async fn every_message_lands_once_as_a_row_or_a_dead_letter() {
        let log = log(2_000, 0.05);
        let committed = Arc::default();
        let store = Arc::new(InMemory::new());
        let streamer = Streamer::new(
            LogSource::new(&log, &committed),
            store.clone(),
            Path::default(),
            policy(300),
            StreamerMetrics::default(),
        );
        let summary = streamer.run(CancellationToken::new()).await.unwrap();
        let rows = stored(&store, "bronze/transactions").await;
        let dead = stored(&store, "dead_letter/transactions").await;
        assert!(dead.len() > 50, "{} dead letters", dead.len());
        assert_eq!(summary.rows as usize, rows.len());
        assert_eq!(summary.dead_letters as usize, dead.len());
        assert_each_once([rows, dead].concat(), 2_000);
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
        let crashed = Streamer::new(
            LogSource::new(&log, &committed),
            store.clone(),
            Path::default(),
            policy(400),
            StreamerMetrics::default(),
        )
        .crash_after_writing(2);
        crashed.run(CancellationToken::new()).await.unwrap();
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
            store.clone(),
            Path::default(),
            policy(170),
            metrics.clone(),
        );
        restarted.run(CancellationToken::new()).await.unwrap();
        let rows = stored(&store, "bronze/transactions").await;
        let dead = stored(&store, "dead_letter/transactions").await;
        assert_each_once([rows, dead].concat(), 1_500);
        assert!(
            metrics.files_kept.get() > 0,
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
            store.clone(),
            Path::default(),
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
        let streamer = Streamer::new(
            source,
            store.clone(),
            Path::default(),
            policy,
            StreamerMetrics::default(),
        );
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
        let record = store
            .get(&layout::batch_record(&Path::default(), TOPIC, 0))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let record: BatchRecord = serde_json::from_slice(&record).unwrap();
        assert_eq!(record.range.first_offset, 0);
        assert_eq!(record.range.last_offset, log[&0].len() as i64 - 1);
        assert!(!record.files.is_empty());
    }
}
