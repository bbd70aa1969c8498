//! Turning messages into bronze files: each message decoded once, its row placed in the
//! columns of its UTC day, and each day's columns encoded as one Parquet file.
//!
//! The streamer fills one [`DaySplit`] per partition of a batch; a redrive fills one per
//! dead-letter file. Both name the files from the batch's Kafka range (see [`super::layout`]).

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use object_store::path::Path;
use parquet::errors::ParquetError;

use super::decode::{self, DeadLetterColumns, DeadLetterKind, DecodeError, TransactionColumns};
use super::layout;
use crate::source::SourceMessage;

/// What a bronze file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Payment events, one row per decoded message.
    Transactions,
    /// Messages that could not be decoded, bytes untouched.
    DeadLetter,
}

impl FileKind {
    /// The name used in metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transactions => "transactions",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// One encoded bronze file and the key it is to be stored under.
#[derive(Debug, Clone)]
pub struct BronzeFile {
    /// The object key.
    pub path: Path,
    /// What it holds.
    pub kind: FileKind,
    /// The Parquet bytes.
    pub body: Vec<u8>,
}

/// Encoding a file failed.
#[derive(Debug, thiserror::Error)]
#[error("encoding {path} failed: {source}")]
pub struct EncodeError {
    /// The key the file was for.
    pub path: String,
    /// Why.
    pub source: ParquetError,
}

/// The messages of one batch part, decoded and split by UTC day: rows by the day of their
/// event time, dead letters by the day of their Kafka timestamp (or of ingestion when the
/// message has none).
pub struct DaySplit {
    topic: String,
    max_message_bytes: usize,
    transactions: BTreeMap<NaiveDate, TransactionColumns>,
    dead_letters: BTreeMap<NaiveDate, DeadLetterColumns>,
    rows: u64,
    dead: u64,
}

impl DaySplit {
    /// An empty split for messages of `topic`; larger payloads than `max_message_bytes` are
    /// dead letters.
    pub fn new(topic: &str, max_message_bytes: usize) -> Self {
        Self {
            topic: topic.to_owned(),
            max_message_bytes,
            transactions: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            rows: 0,
            dead: 0,
        }
    }

    /// Decodes `message` into a row of its event's day, or returns why it cannot be one and
    /// keeps nothing.
    pub fn add_row(&mut self, message: &SourceMessage) -> Result<(), DecodeError> {
        let transactions = &mut self.transactions;
        decode::decode_row(message.payload.as_deref(), self.max_message_bytes, |row| {
            transactions
                .entry(row.event_date())
                .or_default()
                .append(row, message);
        })?;
        self.rows += 1;
        Ok(())
    }

    /// Adds `message` as a row, or as a dead letter when it does not decode; returns the
    /// dead letter's kind.
    pub fn add(&mut self, message: &SourceMessage) -> Option<DeadLetterKind> {
        let error = self.add_row(message).err()?;
        let time = message
            .timestamp_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        self.dead_letters
            .entry(layout::utc_date(time))
            .or_insert_with(|| DeadLetterColumns::new(&self.topic))
            .append(message, &error);
        self.dead += 1;
        Some(error.kind)
    }

    /// Rows added.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Dead letters added.
    pub fn dead_letters(&self) -> u64 {
        self.dead
    }

    /// Encodes one file per day and kind, stamped with `ingested_at` (µs since the epoch),
    /// under the key `key(kind, day)` gives.
    pub fn encode(
        self,
        ingested_at: i64,
        key: impl Fn(FileKind, NaiveDate) -> Path,
    ) -> Result<Vec<BronzeFile>, EncodeError> {
        let batches =
            self.transactions
                .into_iter()
                .map(|(date, columns)| (FileKind::Transactions, date, columns.finish(ingested_at)))
                .chain(self.dead_letters.into_iter().map(|(date, columns)| {
                    (FileKind::DeadLetter, date, columns.finish(ingested_at))
                }));
        batches
            .map(|(kind, date, batch)| {
                let path = key(kind, date);
                match super::encode_parquet(&batch) {
                    Ok(body) => Ok(BronzeFile { path, kind, body }),
                    Err(source) => Err(EncodeError {
                        path: path.to_string(),
                        source,
                    }),
                }
            })
            .collect()
    }
}

/// The key of a streamed batch's file: the batch's range in the folder of its kind and day.
pub fn batch_file_key(
    root: &Path,
    range: &layout::BatchRange,
) -> impl Fn(FileKind, NaiveDate) -> Path {
    move |kind, date| match kind {
        FileKind::Transactions => layout::transactions_file(root, date, range),
        FileKind::DeadLetter => layout::dead_letter_file(root, date, range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64, payload: &[u8]) -> SourceMessage {
        SourceMessage {
            partition: 0,
            offset,
            timestamp_ms: Some(1_762_000_000_000),
            key: None,
            payload: Some(payload.to_vec()),
        }
    }

    #[test]
    fn rows_go_to_the_day_of_their_event_and_dead_letters_to_their_own_folder() {
        let mut generator = crate::synthetic::SyntheticGenerator::new(1, 0.0);
        let mut injector = crate::faults::FaultInjector::new(Default::default(), 1);
        let mut split = DaySplit::new("transactions", 1024 * 1024);
        for (offset, day) in [(0, 1), (1, 2), (2, 2)] {
            let time = chrono::DateTime::parse_from_rfc3339(&format!("2026-11-0{day}T12:00:00Z"))
                .unwrap()
                .to_utc();
            let payload = injector
                .encode(generator.next_payment(time))
                .remove(0)
                .payload;
            assert_eq!(split.add(&message(offset, &payload)), None);
        }
        assert_eq!(
            split.add(&message(3, b"{not json")),
            Some(DeadLetterKind::InvalidJson)
        );
        assert_eq!((split.rows(), split.dead_letters()), (3, 1));
        let range = layout::BatchRange {
            topic: "transactions".to_owned(),
            partition: 0,
            first_offset: 0,
            last_offset: 3,
        };
        let root = Path::default();
        let files = split.encode(0, batch_file_key(&root, &range)).unwrap();
        let keys: Vec<(FileKind, &str)> = files.iter().map(|f| (f.kind, f.path.as_ref())).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(
            keys[0]
                .1
                .contains("bronze/transactions/year=2026/month=11/day=01/")
        );
        assert!(
            keys[1]
                .1
                .contains("bronze/transactions/year=2026/month=11/day=02/")
        );
        assert_eq!(keys[2].0, FileKind::DeadLetter);
        assert!(
            keys[2]
                .1
                .starts_with("dead_letter/transactions/year=2025/month=11/day=01/")
        );
    }

    #[test]
    fn add_row_keeps_nothing_of_a_message_that_does_not_decode() {
        let mut split = DaySplit::new("transactions", 1024 * 1024);
        let error = split.add_row(&message(0, b"")).unwrap_err();
        assert_eq!(error.kind, DeadLetterKind::EmptyPayload);
        assert_eq!((split.rows(), split.dead_letters()), (0, 0));
        assert!(split.encode(0, |_, _| Path::default()).unwrap().is_empty());
    }
}
