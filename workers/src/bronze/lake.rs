//! The lake: an object store and the root under which bronze, the dead-letter queue, the
//! manifests and the streamer's batch records live (see [`super::layout`]). Every read and
//! write of those objects goes through [`Lake`], so the rules that make bronze exactly once
//! are kept in one place:
//!
//! - bronze objects and manifests are created, never replaced ([`Lake::put_new`]);
//! - a batch is published objects first, manifest last ([`Lake::publish`]), so a manifest
//!   never names an object that is not stored;
//! - a partition's batch record is replaced only by a write conditional on the version its
//!   writer last read or wrote ([`Lake::write_batch_record`]), so a streamer that lost the
//!   partition to another (a zombie) is refused ([`LakeError::Fenced`]) instead of writing a
//!   batch over the new owner's.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, PutResult, UpdateVersion,
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;

use super::layout::{self, BatchRange};
use super::manifest::BatchRecord;
use super::writer::{BronzeFile, FileKind};
use crate::storage::{StorageError, StorageOptions};

/// Concurrent object writes when publishing.
const WRITE_CONCURRENCY: usize = 8;

/// Errors of the lake's operations, each naming the object.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// Listing, reading or writing an object failed.
    #[error("object store operation on {path} failed: {source}")]
    Store {
        /// The object or prefix.
        path: String,
        /// Why.
        source: object_store::Error,
    },
    /// A file is not readable Parquet.
    #[error("{path} is not readable Parquet: {source}")]
    Parquet {
        /// The object.
        path: String,
        /// Why.
        source: ParquetError,
    },
    /// A partition's batch record is unreadable.
    #[error(
        "the batch record {path} is corrupt: {source}; delete it only after checking bronze for files of that range"
    )]
    CorruptBatchRecord {
        /// The object.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A conditional write of a partition's batch record found another version than the one
    /// its writer last saw: another streamer has written the record since, so this one no
    /// longer owns the partition. Nothing was written.
    #[error(
        "the batch record {path} was written by another streamer since this one last saw it \
         ({reason}); this streamer no longer owns the partition"
    )]
    Fenced {
        /// The batch record.
        path: String,
        /// What the store said.
        reason: String,
    },
    /// The lock that fences the batch records of a local folder could not be taken.
    #[error("cannot lock {path} to write a batch record: {source}")]
    Lock {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A manifest is unreadable.
    #[error("manifest {path} is corrupt: {source}")]
    CorruptManifest {
        /// The object.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

fn store_error(path: &Path) -> impl FnOnce(object_store::Error) -> LakeError + '_ {
    move |source| LakeError::Store {
        path: path.to_string(),
        source,
    }
}

/// A batch ready to publish: its files, and its manifest's key and content.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Where the manifest goes.
    pub manifest: Path,
    /// The range the manifest names.
    pub range: BatchRange,
    /// The batch's files.
    pub files: Vec<BronzeFile>,
}

impl Publication {
    /// The record naming the batch's range and files: its manifest, and the streamer's
    /// record of the batch.
    pub fn record(&self) -> BatchRecord {
        BatchRecord {
            range: self.range.clone(),
            files: self.files.iter().map(|f| f.path.to_string()).collect(),
        }
    }
}

/// What publishing stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Published {
    /// Files this call wrote, by kind.
    pub written: Vec<FileKind>,
    /// Files an earlier attempt had stored already, kept as they were.
    pub kept: u64,
}

/// The version of a partition's batch record that a write of it is conditional on: the one its
/// writer last read or wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordVersion {
    /// There was no record: the write creates one, and is refused if another writer did first.
    Absent,
    /// The record as the store identified it; the write is refused if the stored record is
    /// another.
    Stored {
        /// Its ETag.
        e_tag: Option<String>,
        /// Its version, on a versioned store.
        version: Option<String>,
    },
}

impl RecordVersion {
    fn stored(e_tag: Option<String>, version: Option<String>) -> Self {
        Self::Stored { e_tag, version }
    }
}

impl From<PutResult> for RecordVersion {
    fn from(result: PutResult) -> Self {
        Self::stored(result.e_tag, result.version)
    }
}

/// A partition's batch record, if there is one, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedRecord {
    /// The record.
    pub record: Option<BatchRecord>,
    /// What a write replacing it is conditional on.
    pub version: RecordVersion,
}

/// A Parquet file of the lake, fetched whole and opened for reading.
pub struct ParquetFile {
    path: Path,
    /// Size in bytes.
    pub size: u64,
    /// The store's ETag, where it gives one.
    pub etag: Option<String>,
    reader: ParquetRecordBatchReader,
}

impl ParquetFile {
    /// The file's record batches, decoded one at a time. A batch the Parquet reader cannot
    /// decode ends the iteration with [`LakeError::Parquet`], also when the reader panics.
    pub fn batches(self) -> impl Iterator<Item = Result<RecordBatch, LakeError>> {
        let path = self.path;
        let mut reader = Some(self.reader);
        std::iter::from_fn(move || {
            let next = unpanicked(&path, || {
                reader.as_mut()?.next().map(|b| b.map_err(Into::into))
            });
            if matches!(next, Err(_) | Ok(Some(Err(_)))) {
                reader = None;
            }
            match next {
                Ok(batch) => batch.map(|batch| {
                    batch.map_err(|source| LakeError::Parquet {
                        path: path.to_string(),
                        source,
                    })
                }),
                Err(error) => Some(Err(error)),
            }
        })
    }
}

/// Runs `read` on bytes of the lake. The Parquet reader panics on some corrupt files (a
/// column chunk at a negative offset, found by the `bronze_reader` fuzz target) instead of
/// returning an error; such a file is unreadable, which the loader handles, not a reason
/// for the whole process to stop (and, restarted, to stop again on the same file).
fn unpanicked<T>(path: &Path, read: impl FnOnce() -> T) -> Result<T, LakeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).map_err(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the Parquet reader panicked");
        LakeError::Parquet {
            path: path.to_string(),
            source: ParquetError::General(format!("corrupt file: {reason}")),
        }
    })
}

/// The lake at `root` of an object store.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The folder of a local store: its batch records are fenced with file locks there,
    /// since a local folder cannot replace an object conditionally.
    local_folder: Option<PathBuf>,
}

impl Lake {
    /// The lake at `root` of `store`, which must support conditional writes
    /// (`PutMode::Create` and `PutMode::Update`: S3, MinIO, the in-memory store). For a local
    /// folder use [`Lake::open`].
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self {
            store,
            root,
            local_folder: None,
        }
    }

    /// Opens the lake the options name.
    pub fn open(options: &StorageOptions) -> Result<Self, StorageError> {
        let (store, root) = options.open()?;
        Ok(Self {
            local_folder: options.local_folder(),
            ..Self::new(store, root)
        })
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The root path inside the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores `body` at `path` unless an object is there already, which is kept as it is (the
    /// lake's objects are immutable). Returns whether this call wrote it.
    pub async fn put_new(&self, path: &Path, body: Vec<u8>) -> Result<bool, LakeError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::info!(%path, "object already stored by an earlier attempt; keeping it");
                Ok(false)
            }
            Err(source) => Err(store_error(path)(source)),
        }
    }

    /// Publishes batches: every file of every batch (create-only, concurrently), and only
    /// when all are stored, the manifests (create-only too).
    pub async fn publish(&self, publications: Vec<Publication>) -> Result<Published, LakeError> {
        let manifests: Vec<(Path, Vec<u8>)> = publications
            .iter()
            .map(|p| (p.manifest.clone(), p.record().to_json()))
            .collect();
        // Owned futures, so that the streamer's future stays `Send` for any lifetime.
        let puts: Vec<_> = publications
            .into_iter()
            .flat_map(|p| p.files)
            .map(|file| {
                let lake = self.clone();
                async move {
                    let written = lake.put_new(&file.path, file.body).await?;
                    Ok::<_, LakeError>((file.kind, written))
                }
            })
            .collect();
        let outcomes: Vec<(FileKind, bool)> = futures::stream::iter(puts)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut published = Published::default();
        for (kind, written) in outcomes {
            if written {
                published.written.push(kind);
            } else {
                published.kept += 1;
            }
        }
        let puts: Vec<_> = manifests
            .into_iter()
            .map(|(path, body)| {
                let lake = self.clone();
                async move { lake.put_new(&path, body).await }
            })
            .collect();
        futures::stream::iter(puts)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(published)
    }

    /// Stores the streamer's record of the last batch of a partition, in place of the
    /// `expected` version, the one the writer last read or wrote, and returns the new
    /// version. Fails with [`LakeError::Fenced`], writing nothing, when the stored record is
    /// another (or, for [`RecordVersion::Absent`], when there is one): another streamer has
    /// taken the partition over.
    ///
    /// Object stores check the version themselves (`If-Match` on S3 and MinIO,
    /// `If-None-Match: *` for a new record). A local folder cannot, so there the version is
    /// compared and the record replaced while holding an exclusive lock on
    /// `<record>.lock` beside it, which every writer of that folder takes.
    pub async fn write_batch_record(
        &self,
        record: &BatchRecord,
        expected: &RecordVersion,
    ) -> Result<RecordVersion, LakeError> {
        let range = &record.range;
        let path = layout::batch_record(&self.root, &range.topic, range.partition);
        let body = PutPayload::from(record.to_record_json(&uuid::Uuid::new_v4().to_string()));
        if let Some(folder) = &self.local_folder {
            return self.replace_locked(folder, &path, body, expected).await;
        }
        let mode = match expected {
            RecordVersion::Absent => PutMode::Create,
            RecordVersion::Stored { e_tag, version } => PutMode::Update(UpdateVersion {
                e_tag: e_tag.clone(),
                version: version.clone(),
            }),
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.store.put_opts(&path, body, options).await {
            Ok(result) => Ok(result.into()),
            Err(
                error @ (object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }),
            ) => Err(LakeError::Fenced {
                path: path.to_string(),
                reason: error.to_string(),
            }),
            Err(source) => Err(store_error(&path)(source)),
        }
    }

    /// [`Self::write_batch_record`] on a local folder: compare and replace under a file lock.
    async fn replace_locked(
        &self,
        folder: &std::path::Path,
        path: &Path,
        body: PutPayload,
        expected: &RecordVersion,
    ) -> Result<RecordVersion, LakeError> {
        let lock_path = folder.join(format!("{path}.lock"));
        let lock_error = |source| LakeError::Lock {
            path: lock_path.display().to_string(),
            source,
        };
        // Blocks until no other writer holds it; released when `_lock` is dropped (closed),
        // or by the kernel when its holder dies.
        let _lock = tokio::task::spawn_blocking({
            let lock_path = lock_path.clone();
            move || {
                if let Some(parent) = lock_path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)?;
                file.lock()?;
                Ok(file)
            }
        })
        .await
        .map_err(|join| lock_error(std::io::Error::other(join)))?
        .map_err(lock_error)?;
        let stored = match self.store.head(path).await {
            Ok(meta) => RecordVersion::stored(meta.e_tag, meta.version),
            Err(object_store::Error::NotFound { .. }) => RecordVersion::Absent,
            Err(source) => return Err(store_error(path)(source)),
        };
        if stored != *expected {
            return Err(LakeError::Fenced {
                path: path.to_string(),
                reason: format!("expected {expected:?}, found {stored:?}"),
            });
        }
        let result = self
            .store
            .put(path, body)
            .await
            .map_err(store_error(path))?;
        Ok(result.into())
    }

    /// The streamer's record of the last batch written for `partition` of `topic`, if any.
    pub async fn read_batch_record(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<BatchRecord>, LakeError> {
        Ok(self
            .read_versioned_batch_record(topic, partition)
            .await?
            .record)
    }

    /// The streamer's record of the last batch written for `partition` of `topic`, if any,
    /// with the version a write replacing it must name.
    pub async fn read_versioned_batch_record(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<VersionedRecord, LakeError> {
        let path = layout::batch_record(&self.root, topic, partition);
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(VersionedRecord {
                    record: None,
                    version: RecordVersion::Absent,
                });
            }
            Err(source) => return Err(store_error(&path)(source)),
        };
        let version = RecordVersion::stored(result.meta.e_tag.clone(), result.meta.version.clone());
        let bytes = result.bytes().await.map_err(store_error(&path))?;
        let record =
            BatchRecord::from_json(&bytes).map_err(|source| LakeError::CorruptBatchRecord {
                path: path.to_string(),
                source,
            })?;
        Ok(VersionedRecord {
            record: Some(record),
            version,
        })
    }

    /// The manifest folders of `topic` and their dates, oldest first.
    pub async fn manifest_days(&self, topic: &str) -> Result<Vec<(NaiveDate, Path)>, LakeError> {
        let prefix = layout::manifests_root(&self.root, topic);
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(store_error(&prefix))?;
        let mut days: Vec<(NaiveDate, Path)> = listing
            .common_prefixes
            .into_iter()
            .filter_map(|folder| Some((layout::manifest_folder_date(folder.filename()?)?, folder)))
            .collect();
        days.sort();
        Ok(days)
    }

    /// The manifests in one manifest folder, sorted by key.
    pub async fn manifests_in(&self, folder: &Path) -> Result<Vec<Path>, LakeError> {
        let mut manifests = self.list(folder).await?;
        manifests.sort();
        Ok(manifests)
    }

    /// Reads one manifest.
    pub async fn read_manifest(&self, path: &Path) -> Result<BatchRecord, LakeError> {
        let bytes = self.read(path).await?.0;
        BatchRecord::from_json(&bytes).map_err(|source| LakeError::CorruptManifest {
            path: path.to_string(),
            source,
        })
    }

    /// Whether `key` (as a manifest names it) is a payment-event file of this lake.
    pub fn is_transactions_file(&self, key: &str) -> bool {
        key.strip_prefix(layout::transactions_root(&self.root).as_ref())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Every object in the day folders of `prefix` (see [`layout::date_folder`]) from `from`
    /// to `to`, both included, sorted by key.
    pub async fn list_days(
        &self,
        prefix: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Path>, LakeError> {
        let mut objects = Vec::new();
        for date in from.iter_days().take_while(|date| *date <= to) {
            let folder = layout::date_folder(&self.root, prefix, date);
            objects.extend(self.list(&folder).await?);
        }
        objects.sort();
        Ok(objects)
    }

    /// Fetches a Parquet file and opens it for reading.
    pub async fn read_parquet(&self, path: &Path) -> Result<ParquetFile, LakeError> {
        let (bytes, etag) = self.read(path).await?;
        let size = bytes.len() as u64;
        super::footer::check(&bytes).map_err(|costly| LakeError::Parquet {
            path: path.to_string(),
            source: ParquetError::General(format!("corrupt file: {costly}")),
        })?;
        let reader = unpanicked(path, || {
            ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|builder| builder.build())
        })?
        .map_err(|source| LakeError::Parquet {
            path: path.to_string(),
            source,
        })?;
        Ok(ParquetFile {
            path: path.clone(),
            size,
            etag,
            reader,
        })
    }

    /// Every `(kafka_partition, kafka_offset)` stored in the Parquet files under `prefix`
    /// (relative to the root, such as [`layout::TRANSACTIONS_PREFIX`]), with repeats: the
    /// input of an exactly-once check (no pair may appear twice across bronze and the
    /// dead-letter queue).
    pub async fn stored_positions(&self, prefix: &str) -> Result<Vec<(i32, i64)>, LakeError> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Int32Type, Int64Type};

        let folder = layout::join(&self.root, prefix);
        let listed = self.list(&folder).await?;
        let mut pairs = Vec::new();
        for path in listed.iter().filter(|p| p.as_ref().ends_with(".parquet")) {
            for batch in self.read_parquet(path).await?.batches() {
                let batch = batch?;
                let column = |name: &str| {
                    batch
                        .column_by_name(name)
                        .cloned()
                        .ok_or_else(|| LakeError::Parquet {
                            path: path.to_string(),
                            source: ParquetError::General(format!("no column {name}")),
                        })
                };
                let partitions = column("kafka_partition")?;
                let offsets = column("kafka_offset")?;
                let (Some(partitions), Some(offsets)) = (
                    partitions.as_primitive_opt::<Int32Type>(),
                    offsets.as_primitive_opt::<Int64Type>(),
                ) else {
                    return Err(LakeError::Parquet {
                        path: path.to_string(),
                        source: ParquetError::General("Kafka positions of the wrong type".into()),
                    });
                };
                pairs.extend(
                    partitions
                        .values()
                        .iter()
                        .copied()
                        .zip(offsets.values().iter().copied()),
                );
            }
        }
        Ok(pairs)
    }

    /// Rows of the Parquet files under `prefix` per value of their text column `column`,
    /// such as the dead letters by `error_kind`.
    pub async fn count_by(
        &self,
        prefix: &str,
        column: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, LakeError> {
        use arrow_array::cast::AsArray;

        let folder = layout::join(&self.root, prefix);
        let mut counts = std::collections::BTreeMap::new();
        for path in self
            .list(&folder)
            .await?
            .iter()
            .filter(|p| p.as_ref().ends_with(".parquet"))
        {
            for batch in self.read_parquet(path).await?.batches() {
                let batch = batch?;
                let values = batch
                    .column_by_name(column)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| LakeError::Parquet {
                        path: path.to_string(),
                        source: ParquetError::General(format!("no text column {column}")),
                    })?;
                for value in values.iter().flatten() {
                    *counts.entry(value.to_owned()).or_default() += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Every object under `folder`, in the store's order.
    async fn list(&self, folder: &Path) -> Result<Vec<Path>, LakeError> {
        self.store
            .list(Some(folder))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(store_error(folder))
    }

    async fn read(&self, path: &Path) -> Result<(Bytes, Option<String>), LakeError> {
        let result = self.store.get(path).await.map_err(store_error(path))?;
        let etag = result.meta.e_tag.clone();
        let bytes = result.bytes().await.map_err(store_error(path))?;
        Ok((bytes, etag))
    }
}
