//! The one document of the lake that is not Parquet: the record of a batch, naming the Kafka
//! range it covers and every object it writes.
//!
//! The same document is stored twice in a batch's life: first as the streamer's record of
//! the last batch of a partition (`_streamer/…`, replaced by every batch, read back after a
//! crash to replay into the same keys), then as the batch's manifest (`_manifests/…`,
//! create-only), which tells the loader the objects exist.

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

    /// Parses the stored form.
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
    }
}
