//! `fintech redrive`: dead letters through the current decoder again, after a fix.
//!
//! Bronze stays immutable: nothing is moved or deleted. For each dead-letter file of the
//! chosen days, the records that decode now become new payment-event files, one per event
//! date, with a manifest that announces them to the loader, in the streamer's order (files
//! first, then the manifest, all create-only). Names follow from the dead-letter file, its
//! day and how many of its records decode, so a second redrive with the same decoder writes nothing, and
//! a later fix that redrives more writes new files whose repeated events the loader drops on
//! `event_id`. Records that still fail stay where they are and are counted by kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};

use crate::bronze::decode::{self, TransactionColumns};
use crate::bronze::layout::{self, BatchRange};
use crate::bronze::{self as bronze_files};
use crate::source::SourceMessage;
use crate::storage;
use crate::streamer::BatchRecord;

/// Errors that stop a redrive.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// Listing, reading or writing an object failed.
    #[error("object store operation on {path} failed: {source}")]
    Store {
        /// The object or prefix.
        path: String,
        /// Why.
        source: object_store::Error,
    },
    /// A dead-letter file is not the Parquet the streamer writes.
    #[error("dead-letter file {path} is not readable: {reason}")]
    Unreadable {
        /// The object.
        path: String,
        /// Why.
        reason: String,
    },
}

/// What a redrive did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    /// Dead-letter files read.
    pub files_read: u64,
    /// Dead letters in them.
    pub dead_letters: u64,
    /// Dead letters that decode now.
    pub redriven: u64,
    /// Dead letters that still fail, by `error_kind`.
    pub still_failing: BTreeMap<&'static str, u64>,
    /// Payment-event files written (0 on a dry run, or when an earlier redrive wrote them).
    pub files_written: u64,
}

/// The days and the behaviour of one redrive.
#[derive(Debug, Clone)]
pub struct RedriveOptions {
    /// First day (the dead letter's Kafka timestamp, UTC) whose folder is read.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub to: NaiveDate,
    /// The topic the manifests are written for.
    pub topic: String,
    /// The largest payload the decoder accepts, as the streamer's `--max-message-bytes`.
    pub max_message_bytes: usize,
    /// Count what would be redriven, write nothing.
    pub dry_run: bool,
}

/// Redrives the dead letters of `options.from..=options.to` in the lake at `root`.
pub async fn redrive(
    store: Arc<dyn ObjectStore>,
    root: &Path,
    options: &RedriveOptions,
) -> Result<RedriveReport, RedriveError> {
    let mut report = RedriveReport::default();
    let files = storage::list_days(
        store.as_ref(),
        root,
        layout::DEAD_LETTER_PREFIX,
        options.from,
        options.to,
    )
    .await
    .map_err(|e| RedriveError::Store {
        path: e.folder.to_string(),
        source: e.source,
    })?;
    for file in files {
        // The day folder, which a batch across midnight needs to tell same-named files apart.
        let dead_on = layout::date_of_key(&file).ok_or_else(|| RedriveError::Unreadable {
            path: file.to_string(),
            reason: "it is not in a day folder".to_owned(),
        })?;
        redrive_file(&store, root, &file, dead_on, options, &mut report).await?;
    }
    Ok(report)
}

async fn redrive_file(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    file: &Path,
    dead_on: NaiveDate,
    options: &RedriveOptions,
    report: &mut RedriveReport,
) -> Result<(), RedriveError> {
    let unreadable = |reason: String| RedriveError::Unreadable {
        path: file.to_string(),
        reason,
    };
    let range = file
        .filename()
        .and_then(BatchRange::parse_file_name)
        .ok_or_else(|| unreadable("its name is not a batch range".to_owned()))?;
    let bytes = store
        .get(file)
        .await
        .map_err(|source| store_error(file, source))?
        .bytes()
        .await
        .map_err(|source| store_error(file, source))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|builder| builder.build())
        .map_err(|e| unreadable(e.to_string()))?;
    report.files_read += 1;

    let mut decoded: BTreeMap<NaiveDate, TransactionColumns> = BTreeMap::new();
    let mut count = 0;
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(e.to_string()))?;
        for message in messages(&batch).map_err(unreadable)? {
            report.dead_letters += 1;
            match decode::decode(message.payload.as_deref(), options.max_message_bytes) {
                Ok(event) => {
                    decoded
                        .entry(layout::utc_date(event.event_time))
                        .or_default()
                        .append(&event, &message);
                    count += 1;
                }
                Err(error) => *report.still_failing.entry(error.kind.as_str()).or_default() += 1,
            }
        }
    }
    report.redriven += count as u64;
    if count == 0 || options.dry_run {
        return Ok(());
    }

    let ingested_at = Utc::now().timestamp_micros();
    let mut keys = Vec::new();
    for (date, columns) in decoded {
        let path = layout::redriven_file(root, date, &range, dead_on, count);
        let body = bronze_files::encode_parquet(&columns.finish(ingested_at))
            .map_err(|e| unreadable(format!("encoding {path} failed: {e}")))?;
        if put_new(store, &path, body).await? {
            report.files_written += 1;
        }
        keys.push(path.to_string());
    }
    let range = BatchRange {
        topic: options.topic.clone(),
        ..range
    };
    let manifest = layout::redriven_manifest(root, Utc::now().date_naive(), &range, dead_on, count);
    let record = BatchRecord { range, files: keys };
    let body = serde_json::to_vec_pretty(&record)
        .unwrap_or_else(|e| unreachable!("a batch record serialises: {e}"));
    // A manifest of an earlier redrive on another day may announce the same files; the
    // loader skips files it has loaded, so announcing them twice loads nothing twice.
    put_new(store, &manifest, body).await?;
    Ok(())
}

/// The Kafka messages a dead-letter batch holds, bytes untouched.
fn messages(batch: &RecordBatch) -> Result<Vec<SourceMessage>, String> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("no {name} column"))
    };
    let partitions = column("kafka_partition")?
        .as_primitive_opt::<Int32Type>()
        .ok_or("kafka_partition is not int32")?;
    let offsets = column("kafka_offset")?
        .as_primitive_opt::<Int64Type>()
        .ok_or("kafka_offset is not int64")?;
    let timestamps = column("kafka_timestamp")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or("kafka_timestamp is not a millisecond timestamp")?;
    let keys = column("kafka_key")?
        .as_binary_opt::<i32>()
        .ok_or("kafka_key is not binary")?;
    let payloads = column("payload")?
        .as_binary_opt::<i32>()
        .ok_or("payload is not binary")?;
    Ok((0..batch.num_rows())
        .map(|i| SourceMessage {
            partition: partitions.value(i),
            offset: offsets.value(i),
            timestamp_ms: timestamps.is_valid(i).then(|| timestamps.value(i)),
            key: keys.is_valid(i).then(|| keys.value(i).to_vec()),
            payload: payloads.is_valid(i).then(|| payloads.value(i).to_vec()),
        })
        .collect())
}

/// Stores a new object; returns false when an earlier redrive stored it already.
async fn put_new(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    body: Vec<u8>,
) -> Result<bool, RedriveError> {
    storage::put_if_absent(store.as_ref(), path, body)
        .await
        .map_err(|source| store_error(path, source))
}

fn store_error(path: &Path, source: object_store::Error) -> RedriveError {
    RedriveError::Store {
        path: path.to_string(),
        source,
    }
}
