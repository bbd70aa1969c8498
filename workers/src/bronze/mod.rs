//! The bronze layer: immutable Parquet files of exactly what Kafka delivered, and the
//! dead-letter queue beside it. This module owns the lake's format and every access to it:
//! the object keys ([`layout`]), the columns ([`schema`], [`decode`]), the batch records and
//! manifests ([`manifest`]), turning messages into files ([`writer`]), and storing, publishing,
//! listing and reading them ([`lake`], with [`footer`] guarding the Parquet reader). The
//! streamer and a redrive write through it; the loader
//! and the quickstart read through it.

pub mod decode;
pub mod footer;
pub mod lake;
pub mod layout;
pub mod manifest;
pub mod row;
pub mod schema;
pub mod writer;

pub use lake::{Lake, LakeError};
pub use manifest::BatchRecord;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Rows per Parquet row group: large enough for good compression and few footer entries,
/// small enough that a reader can stream a file without holding it whole.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The codec of bronze files. zstd at level 1 writes a third faster than level 3 and its
/// files are as small; LZ4 and snappy write faster still, but their files are two-thirds
/// larger (the comparison is in `docs/benchmarks.md`, stage 2).
pub fn compression() -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default())
}

/// Writer settings of every bronze file: [`compression`], dictionary encoding, page
/// statistics.
pub fn writer_properties() -> WriterProperties {
    writer_properties_with(compression())
}

/// The bronze writer settings with another codec, to compare codecs.
pub fn writer_properties_with(compression: Compression) -> WriterProperties {
    let builder = WriterProperties::builder()
        .set_compression(compression)
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
    encode_parquet_with(batch, writer_properties())
}

/// Encodes one record batch as a Parquet file with other writer settings.
pub fn encode_parquet_with(
    batch: &RecordBatch,
    properties: WriterProperties,
) -> Result<Vec<u8>, ParquetError> {
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.into_inner()
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
            columns.append_event(&event, &message);
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
