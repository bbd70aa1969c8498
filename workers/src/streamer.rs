//! `fintech stream`: messages into bronze Parquet, exactly once, with a dead-letter queue.
//!
//! The streamer reads a [`MessageSource`], decodes each message as it arrives into the
//! columns of an open batch (one part per partition), and closes the batch on an interval or
//! a row or byte cap. [`Streamer::write_and_commit`] holds the rule that makes bronze exactly
//! once; read its comment before changing anything here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use fintech_status_server::report::WorkerStatus;

use crate::bronze::decode::DeadLetterKind;
use crate::bronze::lake::{Lake, LakeError, Publication, RecordVersion, VersionedRecord};
use crate::bronze::layout::{self, BatchRange};
use crate::bronze::writer::{self, DaySplit, EncodeError};
use crate::harness::Exposed;
use crate::kafka::LagGauge;
use crate::source::{MessageSource, SourceError, SourceEvent, SourceMessage};

/// Attempts at committing offsets before the streamer gives up and exits.
const COMMIT_ATTEMPTS: u32 = 5;

/// Attempts at taking a partition's batch record over while other writers keep replacing it.
const TAKE_OVER_ATTEMPTS: u32 = 5;

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
    /// Reading or writing the lake failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Encoding a Parquet file failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Metrics of the streamer, under `fintech_streamer_*`.
#[derive(Clone)]
pub struct StreamerMetrics {
    messages: Counter,
    rows: Counter,
    bytes: Counter,
    batches: Counter,
    files_written: Family<FileLabels, Counter>,
    files_kept: Counter,
    fenced_batches: Counter,
    commits_refused: Counter,
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
        let metrics = Self {
            messages: Counter::default(),
            rows: Counter::default(),
            bytes: Counter::default(),
            batches: Counter::default(),
            files_written: Family::default(),
            files_kept: Counter::default(),
            fenced_batches: Counter::default(),
            commits_refused: Counter::default(),
            dead_letters: Family::default(),
            batch_duration: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            last_commit: Gauge::default(),
            lag: LagGauge::default(),
        };
        // Every kind starts at 0, so that its first dead letter is an increase rates see.
        for kind in DeadLetterKind::ALL {
            let _ = metrics.dead_letters.get_or_create(&DeadLetterLabels {
                kind: kind.as_str(),
            });
        }
        metrics
    }
}

impl StreamerMetrics {
    /// Messages read so far.
    pub fn messages_read(&self) -> u64 {
        self.messages.get()
    }

    /// Objects found already stored when a batch was replayed.
    pub fn files_kept(&self) -> u64 {
        self.files_kept.get()
    }

    /// Batches of a partition abandoned because another streamer had taken the partition over.
    pub fn fenced_batches(&self) -> u64 {
        self.fenced_batches.get()
    }

    /// Commits the group refused because the partitions had moved or were moving.
    pub fn commits_refused(&self) -> u64 {
        self.commits_refused.get()
    }
}

impl Exposed for StreamerMetrics {
    /// Registers the metrics under `fintech_streamer_*`.
    fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("fintech_streamer");
        registry.register("messages", "Messages read", self.messages.clone());
        registry.register(
            "rows",
            "Rows written to bronze and committed",
            self.rows.clone(),
        );
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
            "fenced_batches",
            "Batches of a partition abandoned unwritten because another streamer had taken \
             the partition over (the batch record's conditional write was refused)",
            self.fenced_batches.clone(),
        );
        registry.register(
            "commits_refused",
            "Commits refused by the consumer group because the partitions had moved or were \
             moving; the batch is read again",
            self.commits_refused.clone(),
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
            "Messages behind the end of each partition this streamer consumes",
            self.lag.partitions(),
        );
    }

    /// What the streamer last did, for its `/status`: rows committed to bronze, the last
    /// commit, and the messages behind the end of its partitions.
    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            worker: "streamer".to_owned(),
            rows_total: self.rows.get(),
            last_progress_at: Some(self.last_commit.get()).filter(|&at| at > 0),
            backlog: Some(self.lag.total()),
            ..WorkerStatus::default()
        }
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

/// What one partition's part of a batch adds to the totals once committed.
struct PartTotals {
    rows: u64,
    dead_letters: u64,
    messages: u64,
}

/// The open batch's part for one partition.
struct PartitionPart {
    first_offset: i64,
    last_offset: i64,
    split: DaySplit,
}

/// The streamer: one source, one object store, one open batch.
pub struct Streamer<S: MessageSource> {
    source: S,
    lake: Lake,
    policy: BatchPolicy,
    metrics: StreamerMetrics,
    parts: BTreeMap<i32, PartitionPart>,
    batch_started: Option<Instant>,
    batch_messages: usize,
    batch_bytes: usize,
    /// Partitions assigned but not yet checked for an uncommitted batch.
    unchecked: HashSet<i32>,
    /// Partitions read again from an uncommitted batch's first offset ([`Self::read_again`])
    /// rather than from the offset the group committed.
    rewound: HashSet<i32>,
    /// Partitions another streamer has moved past where this one reads: their messages are
    /// ignored until the source assigns them again (and so reads from the committed offset).
    behind: HashSet<i32>,
    /// Partitions replaying an uncommitted batch, with the offset that batch must end at.
    replay_ends: HashMap<i32, i64>,
    /// For each partition taken over, the version of its batch record this streamer last
    /// read or wrote: its next write of the record is conditional on it.
    records: HashMap<i32, RecordVersion>,
    summary: StreamSummary,
}

impl<S: MessageSource> Streamer<S> {
    /// A streamer writing into `lake`.
    pub fn new(source: S, lake: Lake, policy: BatchPolicy, metrics: StreamerMetrics) -> Self {
        Self {
            source,
            lake,
            policy,
            metrics,
            parts: BTreeMap::new(),
            batch_started: None,
            batch_messages: 0,
            batch_bytes: 0,
            unchecked: HashSet::new(),
            rewound: HashSet::new(),
            behind: HashSet::new(),
            replay_ends: HashMap::new(),
            records: HashMap::new(),
            summary: StreamSummary::default(),
        }
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
                    Some(SourceEvent::Assigned(partitions)) => self.assign(partitions),
                    Some(SourceEvent::Revoked(partitions)) => self.drop_partitions(&partitions),
                    Some(SourceEvent::Message(message)) => {
                        if self.behind.contains(&message.partition) {
                            continue;
                        }
                        if self.unchecked.remove(&message.partition)
                            && !self.take_over(message.partition, message.offset).await?
                        {
                            continue;
                        }
                        self.add(message);
                        if self.batch_is_full() {
                            self.close_batch().await?;
                        }
                    }
                },
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
        self.metrics.messages.inc();
        self.metrics.bytes.inc_by(message.size() as u64);
        self.batch_started.get_or_insert_with(Instant::now);
        self.batch_messages += 1;
        self.batch_bytes += message.size();
        let (topic, max_message_bytes) = (self.source.topic(), self.policy.max_message_bytes);
        let part = self
            .parts
            .entry(message.partition)
            .or_insert_with(|| PartitionPart {
                first_offset: message.offset,
                last_offset: message.offset,
                split: DaySplit::new(topic, max_message_bytes),
            });
        part.last_offset = message.offset;
        if let Some(kind) = part.split.add(&message) {
            self.metrics
                .dead_letters
                .get_or_create(&DeadLetterLabels {
                    kind: kind.as_str(),
                })
                .inc();
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

    /// Partitions newly assigned: each is taken over on its first message, which is at the
    /// offset the group committed.
    fn assign(&mut self, partitions: Vec<i32>) {
        for partition in &partitions {
            self.rewound.remove(partition);
            self.behind.remove(partition);
        }
        self.unchecked.extend(partitions);
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
            self.rewound.remove(partition);
            self.behind.remove(partition);
            self.records.remove(partition);
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

    /// Takes a newly assigned partition over, on its first message. Reads the partition's
    /// batch record and stores it again under a new version, so that the previous owner's
    /// next write of it, conditional on the version that owner saw, is refused: a streamer
    /// that lost the partition while paused (a zombie) cannot write a batch over this one's.
    /// A partition without a record has nothing to fence yet: its first record is created
    /// create-only, so of two writers only one creates it.
    ///
    /// Then, if the first offset falls in the recorded batch (written but not committed: a
    /// crash, a refused commit, or the previous owner's last batch), this run must close its
    /// batch at the same end, so that it rewrites the same keys.
    ///
    /// Returns whether the partition is this streamer's to write. It is not when the
    /// partition is read again after an uncommitted batch ([`Self::read_again`]) and the
    /// record shows that another streamer has stored a later batch: this one is behind the
    /// group (a zombie whose source still hands it the partition), and a batch from where it
    /// reads would overlap stored ones. It then leaves the partition until it is assigned
    /// again, without touching the record.
    async fn take_over(&mut self, partition: i32, offset: i64) -> Result<bool, StreamError> {
        let topic = self.source.topic().to_owned();
        let rewound = self.rewound.remove(&partition);
        let mut attempt = 0;
        let record = loop {
            attempt += 1;
            let VersionedRecord { record, version } = self
                .lake
                .read_versioned_batch_record(&topic, partition)
                .await?;
            let Some(record) = record else {
                self.records.insert(partition, RecordVersion::Absent);
                return Ok(true);
            };
            let range = &record.range;
            if rewound && offset != range.first_offset && offset <= range.last_offset {
                tracing::warn!(
                    partition,
                    offset,
                    recorded_first = range.first_offset,
                    recorded_last = range.last_offset,
                    "another streamer has stored a later batch of this partition than where this \
                     one reads again; leaving the partition until it is assigned again"
                );
                self.behind.insert(partition);
                return Ok(false);
            }
            match self.lake.write_batch_record(&record, &version).await {
                Ok(version) => {
                    self.records.insert(partition, version);
                    break record;
                }
                // Another writer replaced it between the read and the write: read it again.
                Err(LakeError::Fenced { reason, .. }) if attempt < TAKE_OVER_ATTEMPTS => {
                    tracing::info!(
                        partition,
                        %reason,
                        "the batch record changed while taking the partition over; reading it again"
                    );
                }
                Err(error) => return Err(error.into()),
            }
        };
        if offset > record.range.last_offset {
            return Ok(true);
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
        Ok(true)
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
    /// 1. For each partition, the batch record (range and object keys) is stored first,
    ///    conditional on the version of the record this streamer last read or wrote. When
    ///    another streamer has written the record since (it took the partition over), the
    ///    write is refused and this partition's part of the batch is abandoned: no object,
    ///    no manifest, no commit, and the partition is read again from the batch's first
    ///    offset ([`Self::read_again`]).
    /// 2. The rest of the batch is published ([`Lake::publish`]): every object with
    ///    create-only semantics (an object that exists already was stored by an earlier
    ///    attempt at this same range and is kept, never changed), then the manifests that
    ///    tell the loader the objects exist.
    /// 3. Only then are the offsets committed (`last_offset + 1` per partition). A commit the
    ///    group refuses (the partitions moved) is not a success: the batch is not counted and
    ///    its partitions are read again from its first offsets.
    ///
    /// Keys are a function of the range alone, and a streamer that takes a partition over
    /// reads the record and closes its first batch at the recorded end when it starts inside
    /// it, so a crash at any point replays into the same keys, never into new ones; and since
    /// the take-over rewrites the record, the previous owner can no longer start a range of
    /// its own.
    async fn write_and_commit(
        &mut self,
        parts: Vec<(i32, PartitionPart)>,
    ) -> Result<(), StreamError> {
        let topic = self.source.topic().to_owned();
        let ingested_at = Utc::now().timestamp_micros();
        let written_on = Utc::now().date_naive();
        let root = self.lake.root().clone();
        let mut batch = Vec::with_capacity(parts.len());
        for (partition, part) in parts {
            let range = BatchRange {
                topic: topic.clone(),
                partition,
                first_offset: part.first_offset,
                last_offset: part.last_offset,
            };
            let totals = PartTotals {
                rows: part.split.rows(),
                dead_letters: part.split.dead_letters(),
                messages: (part.last_offset - part.first_offset + 1) as u64,
            };
            let files = part
                .split
                .encode(ingested_at, writer::batch_file_key(&root, &range))?;
            let publication = Publication {
                manifest: layout::manifest(&root, written_on, &range),
                range,
                files,
            };
            batch.push((publication, totals));
        }

        // 1. The batch records, each conditional on the version this streamer last saw.
        let writes: Vec<_> = batch
            .iter()
            .map(|(publication, _)| {
                let (lake, record) = (self.lake.clone(), publication.record());
                let expected = self
                    .records
                    .get(&record.range.partition)
                    .cloned()
                    .unwrap_or(RecordVersion::Absent);
                async move { lake.write_batch_record(&record, &expected).await }
            })
            .collect();
        let outcomes = futures::future::join_all(writes).await;
        let mut fenced = Vec::new();
        let mut kept = Vec::with_capacity(batch.len());
        for ((publication, totals), outcome) in batch.into_iter().zip(outcomes) {
            let range = &publication.range;
            match outcome {
                Ok(version) => {
                    self.records.insert(range.partition, version);
                    kept.push((publication, totals));
                }
                Err(LakeError::Fenced { path, reason }) => {
                    tracing::error!(
                        partition = range.partition,
                        first_offset = range.first_offset,
                        last_offset = range.last_offset,
                        record = %path,
                        %reason,
                        "fenced: another streamer has taken this partition over; abandoning its \
                         batch (no object, manifest or commit) and reading the partition again"
                    );
                    self.metrics.fenced_batches.inc();
                    fenced.push((range.partition, range.first_offset));
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.read_again(&fenced).await?;
        if kept.is_empty() {
            return Ok(());
        }
        let (publications, totals): (Vec<Publication>, Vec<PartTotals>) = kept.into_iter().unzip();
        let firsts: Vec<(i32, i64)> = publications
            .iter()
            .map(|p| (p.range.partition, p.range.first_offset))
            .collect();
        let positions: Vec<(i32, i64)> = publications
            .iter()
            .map(|p| (p.range.partition, p.range.last_offset + 1))
            .collect();

        // 2. The objects, then the manifests.
        let published = self.lake.publish(publications).await?;
        for kind in published.written {
            self.metrics
                .files_written
                .get_or_create(&FileLabels {
                    kind: kind.as_str(),
                })
                .inc();
        }
        self.metrics.files_kept.inc_by(published.kept);

        // 3. The offsets.
        if !self.commit(&positions).await? {
            return self.read_again(&firsts).await;
        }
        let (rows, dead, messages) = totals.iter().fold((0, 0, 0), |(r, d, m), t| {
            (r + t.rows, d + t.dead_letters, m + t.messages)
        });
        self.metrics.batches.inc();
        self.metrics.rows.inc_by(rows);
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

    /// After a batch of these partitions was abandoned or its commit refused: forgets the
    /// version of their batch records and has the source hand them out again from the
    /// batch's first offsets, so that nothing after the uncommitted batch is committed
    /// before it is stored. A partition that is still this streamer's is taken over again on
    /// its next message (its record read, and the replay closed at the recorded end).
    async fn read_again(&mut self, positions: &[(i32, i64)]) -> Result<(), StreamError> {
        if positions.is_empty() {
            return Ok(());
        }
        for (partition, _) in positions {
            self.records.remove(partition);
            self.replay_ends.remove(partition);
            self.unchecked.insert(*partition);
            self.rewound.insert(*partition);
        }
        self.source.rewind(positions).await?;
        Ok(())
    }

    /// Commits with retries; returns whether the group took the commit. A commit refused
    /// because the partitions moved or are moving (a rebalance, an expired session) is not
    /// retried and is not a success: the batch's objects and manifests stay, and whoever
    /// reads the partitions next (a new owner, or this streamer again) replays the recorded
    /// batch into the same keys.
    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<bool, StreamError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.source.commit(positions).await {
                Ok(()) => return Ok(true),
                Err(error @ SourceError::CommitRefused(_)) => {
                    tracing::warn!(
                        %error,
                        ?positions,
                        "commit refused: the partitions moved or are moving; the batch is not committed and will be replayed into the same keys"
                    );
                    self.metrics.commits_refused.inc();
                    return Ok(false);
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
