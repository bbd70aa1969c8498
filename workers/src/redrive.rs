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

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use chrono::{NaiveDate, Utc};
use object_store::path::Path;

use crate::bronze::lake::{Lake, LakeError, Publication};
use crate::bronze::layout::{self, BatchRange};
use crate::bronze::writer::{DaySplit, EncodeError, FileKind};
use crate::source::SourceMessage;

/// Errors that stop a redrive.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// Listing, reading or writing the lake failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Encoding a redriven file failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A dead-letter file is not what the streamer writes.
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

/// Redrives the dead letters of `options.from..=options.to` in `lake`.
pub async fn redrive(lake: &Lake, options: &RedriveOptions) -> Result<RedriveReport, RedriveError> {
    let mut report = RedriveReport::default();
    let files = lake
        .list_days(layout::DEAD_LETTER_PREFIX, options.from, options.to)
        .await?;
    for file in files {
        // The day folder, which a batch across midnight needs to tell same-named files apart.
        let dead_on = layout::date_of_key(&file).ok_or_else(|| RedriveError::Unreadable {
            path: file.to_string(),
            reason: "it is not in a day folder".to_owned(),
        })?;
        redrive_file(lake, &file, dead_on, options, &mut report).await?;
    }
    Ok(report)
}

async fn redrive_file(
    lake: &Lake,
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
    let parquet = lake.read_parquet(file).await?;
    report.files_read += 1;

    let mut split = DaySplit::new(&options.topic, options.max_message_bytes);
    for batch in parquet.batches() {
        for message in messages(&batch?).map_err(unreadable)? {
            report.dead_letters += 1;
            if let Err(error) = split.add_row(&message) {
                *report.still_failing.entry(error.kind.as_str()).or_default() += 1;
            }
        }
    }
    let count = split.rows() as usize;
    report.redriven += count as u64;
    if count == 0 || options.dry_run {
        return Ok(());
    }

    let root = lake.root();
    let files = split.encode(Utc::now().timestamp_micros(), |kind, date| {
        debug_assert_eq!(
            kind,
            FileKind::Transactions,
            "add_row keeps no dead letters"
        );
        layout::redriven_file(root, date, &range, dead_on, count)
    })?;
    let range = BatchRange {
        topic: options.topic.clone(),
        ..range
    };
    // A manifest of an earlier redrive on another day may announce the same files; the
    // loader skips files it has loaded, so announcing them twice loads nothing twice.
    let publication = Publication {
        manifest: layout::redriven_manifest(root, Utc::now().date_naive(), &range, dead_on, count),
        range,
        files,
    };
    let published = lake.publish(vec![publication]).await?;
    report.files_written += published.written.len() as u64;
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
