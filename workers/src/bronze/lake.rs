//! The lake: an object store and the root under which bronze, the dead-letter queue, the
//! manifests and the streamer's batch records live (see [`super::layout`]). Every read and
//! write of those objects goes through [`Lake`], so the rules that make bronze exactly once
//! are kept in one place:
//!
//! - bronze objects and manifests are created, never replaced ([`Lake::put_new`]);
//! - a batch is published objects first, manifest last ([`Lake::publish`]), so a manifest
//!   never names an object that is not stored.

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
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
    /// The file's record batches, decoded one at a time.
    pub fn batches(self) -> impl Iterator<Item = Result<RecordBatch, LakeError>> {
        let path = self.path;
        self.reader.map(move |batch| {
            batch.map_err(|source| LakeError::Parquet {
                path: path.to_string(),
                source: source.into(),
            })
        })
    }
}

/// The lake at `root` of an object store.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl Lake {
    /// The lake at `root` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self { store, root }
    }

    /// Opens the lake the options name.
    pub fn open(options: &StorageOptions) -> Result<Self, StorageError> {
        let (store, root) = options.open()?;
        Ok(Self::new(store, root))
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

    /// Stores (or replaces) the streamer's record of the last batch of a partition.
    pub async fn write_batch_record(&self, record: BatchRecord) -> Result<(), LakeError> {
        let range = &record.range;
        let path = layout::batch_record(&self.root, &range.topic, range.partition);
        self.store
            .put(&path, PutPayload::from(record.to_json()))
            .await
            .map_err(store_error(&path))?;
        Ok(())
    }

    /// The streamer's record of the last batch written for `partition` of `topic`, if any.
    pub async fn read_batch_record(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<BatchRecord>, LakeError> {
        let path = layout::batch_record(&self.root, topic, partition);
        let Some(bytes) = self.read_if_exists(&path).await? else {
            return Ok(None);
        };
        BatchRecord::from_json(&bytes)
            .map(Some)
            .map_err(|source| LakeError::CorruptBatchRecord {
                path: path.to_string(),
                source,
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
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|builder| builder.build())
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

    async fn read_if_exists(&self, path: &Path) -> Result<Option<Bytes>, LakeError> {
        match self.read(path).await {
            Ok((bytes, _)) => Ok(Some(bytes)),
            Err(LakeError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
