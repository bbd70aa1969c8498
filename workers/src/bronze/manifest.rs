//! The one document of the lake that is not Parquet: the record of a batch, naming the Kafka
//! range it covers and every object it writes.
//!
//! The same document is stored twice in a batch's life: first as the streamer's record of
//! the last batch of a partition (`_streamer/…`, replaced by every batch, read back after a
//! crash to replay into the same keys), then as the batch's manifest (`_manifests/…`,
//! create-only), which tells the loader the objects exist.
//!
//! The streamer's record also carries a `write_id` unique to each write (see
//! [`BatchRecord::to_record_json`]), so that no two writes store the same bytes: the record is
//! replaced only by a write conditional on the version its writer last saw, and a store whose
//! version is a digest of the bytes (an S3 ETag) would otherwise give a rewrite of the same
//! range the version of the write before it, letting an old owner's stale write through.

use super::layout::BatchRange;

/// A batch's Kafka range and the keys of every object it writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchRecord {
    /// The batch's Kafka range.
    pub range: BatchRange,
    /// Every object the batch writes.
    pub files: Vec<String>,
}

impl BatchRecord {
    /// The stored form: pretty JSON, for people reading the lake.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self)
            .unwrap_or_else(|e| unreachable!("a batch record serialises: {e}"))
    }

    /// The stored form of the streamer's record of the batch: [`Self::to_json`] with a
    /// `write_id` unique to this write. Readers ignore the extra field.
    pub fn to_record_json(&self, write_id: &str) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Stored<'a> {
            #[serde(flatten)]
            record: &'a BatchRecord,
            write_id: &'a str,
        }
        serde_json::to_vec_pretty(&Stored {
            record: self,
            write_id,
        })
        .unwrap_or_else(|e| unreachable!("a batch record serialises: {e}"))
    }

    /// Parses the stored form (of a manifest or of a streamer's record).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_record_reads_back_as_written() {
        let record = BatchRecord {
            range: BatchRange {
                topic: "transactions".to_owned(),
                partition: 1,
                first_offset: 10,
                last_offset: 19,
            },
            files: vec!["bronze/transactions/year=2026/month=11/day=01/x.parquet".to_owned()],
        };
        assert_eq!(BatchRecord::from_json(&record.to_json()).unwrap(), record);
        // The streamer's record reads back the same, and two writes never store the same bytes.
        let stored = record.to_record_json("a");
        assert_eq!(BatchRecord::from_json(&stored).unwrap(), record);
        assert_ne!(stored, record.to_record_json("b"));
        assert!(
            String::from_utf8(stored)
                .unwrap()
                .contains("\"write_id\": \"a\"")
        );
    }
}
