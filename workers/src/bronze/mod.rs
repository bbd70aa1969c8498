//! The bronze layer: immutable Parquet files of exactly what Kafka delivered, and the
//! dead-letter queue beside it. This module owns their format (schemas, encoding, object
//! keys); the streamer writes them and the loader reads them.

pub mod decode;
pub mod layout;
pub mod schema;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Rows per Parquet row group: large enough for good compression and few footer entries,
/// small enough that a reader can stream a file without holding it whole.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writer settings of every bronze file: zstd, dictionary encoding, page statistics.
pub fn writer_properties() -> WriterProperties {
    let builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("fintech {}", env!("CARGO_PKG_VERSION")));
    // Nearly every value of these columns is distinct, so a dictionary only costs time
    // before the writer falls back to plain encoding.
    UNIQUE_COLUMNS
        .iter()
        .fold(builder, |builder, column| {
            builder.set_column_dictionary_enabled(ColumnPath::from(*column), false)
        })
        .build()
}

/// Columns of the bronze files whose values are (nearly) all distinct.
const UNIQUE_COLUMNS: [&str; 6] = [
    "event_id",
    "transaction_id",
    "event_time",
    "amount",
    "kafka_offset",
    "kafka_timestamp",
];

/// Encodes one record batch as a complete Parquet file in memory.
pub fn encode_parquet(batch: &RecordBatch) -> Result<Vec<u8>, ParquetError> {
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.into_inner()
}

/// Every `(kafka_partition, kafka_offset)` stored in the Parquet files under `prefix`, with
/// repeats: the input of an exactly-once check (no pair may appear twice across bronze and
/// the dead-letter queue).
pub async fn stored_positions(
    store: &dyn object_store::ObjectStore,
    prefix: &object_store::path::Path,
) -> Result<Vec<(i32, i64)>, PositionsError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let listed: Vec<_> = store.list(Some(prefix)).try_collect().await?;
    let mut pairs = Vec::new();
    for object in listed
        .iter()
        .filter(|o| o.location.as_ref().ends_with(".parquet"))
    {
        let bytes = store.get(&object.location).await?.bytes().await?;
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            let batch = batch?;
            let column = |name| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| PositionsError::MissingColumn(object.location.to_string(), name))
            };
            let partitions = column("kafka_partition")?
                .as_primitive::<Int32Type>()
                .clone();
            let offsets = column("kafka_offset")?.as_primitive::<Int64Type>().clone();
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

/// Errors of [`stored_positions`].
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    /// Listing or reading an object failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// A file is not readable Parquet.
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    /// A record batch could not be decoded.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A file lacks the Kafka position columns.
    #[error("{0} has no column {1}")]
    MissingColumn(String, &'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceMessage;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn parquet_files_round_trip_with_zstd_and_statistics() {
        let mut generator = crate::synthetic::SyntheticGenerator::new(1, 0.0);
        let mut columns = decode::TransactionColumns::default();
        for offset in 0..1_000 {
            let event = generator.next_payment(chrono::Utc::now());
            let message = SourceMessage {
                partition: 0,
                offset,
                timestamp_ms: None,
                key: None,
                payload: None,
            };
            columns.append(&event, &message);
        }
        let batch = columns.finish(0);
        let bytes = Bytes::from(encode_parquet(&batch).unwrap());
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let metadata = builder.metadata().clone();
        let column = metadata.row_group(0).column(0);
        // The footer records the codec, not its level.
        assert!(matches!(column.compression(), Compression::ZSTD(_)));
        assert!(column.statistics().is_some());
        let read: Vec<_> = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(read.iter().map(RecordBatch::num_rows).sum::<usize>(), 1_000);
        assert_eq!(read[0].schema(), *schema::TRANSACTIONS);
    }
}
