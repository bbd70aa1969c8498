//! Turning bronze record batches into silver rows: validation, de-duplication within a run,
//! the rows sent to the warehouse's `COPY`, and the rejected rows with their reasons.

use std::collections::{BTreeMap, HashSet};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};

use crate::warehouse::copy_text::{
    end_copy_row, push_cents, push_display, push_float, push_raw, push_text, push_timestamp,
    timestamp_text,
};

/// Largest amount `numeric(14, 2)` holds, in hundredths.
const MAX_AMOUNT_CENTS: i128 = 99_999_999_999_999;

/// The silver columns filled from bronze, in `COPY` order.
pub const COPY_COLUMNS: &str = "event_id, transaction_id, status, event_time, customer_id, \
    merchant_id, merchant_name, category, amount, currency, payment_method, city, state, \
    country, latitude, longitude, is_fraud, source, schema_version, kafka_partition, \
    kafka_offset, kafka_timestamp, ingested_at, bronze_file, load_run_id";

/// Why a row is refused; the `reason` of `raw.rejected_transactions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// `customer_id` is null or empty.
    MissingCustomerId,
    /// `amount` is zero or negative.
    NonPositiveAmount,
    /// `amount` does not fit `numeric(14, 2)`.
    AmountOutOfRange,
}

impl RejectReason {
    /// The stored reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingCustomerId => "missing_customer_id",
            Self::NonPositiveAmount => "non_positive_amount",
            Self::AmountOutOfRange => "amount_out_of_range",
        }
    }
}

/// A bronze row the loader refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The file it came from.
    pub bronze_file: String,
    /// Its Kafka partition.
    pub partition: i32,
    /// Its Kafka offset.
    pub offset: i64,
    /// Its event id.
    pub event_id: String,
    /// Its transaction id.
    pub transaction_id: String,
    /// Why.
    pub reason: RejectReason,
    /// The row, as JSON.
    pub row: serde_json::Value,
}

/// Counts of one run, for the audit and the quality metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowStats {
    /// Rows read from bronze.
    pub read: u64,
    /// Rows that passed validation and were not repeated within the run.
    pub accepted: u64,
    /// Rows whose `event_id` appeared earlier in the run.
    pub duplicate_in_run: u64,
    /// Rows refused, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Nulls per nullable column, among rows read.
    pub nulls: BTreeMap<&'static str, u64>,
}

impl RowStats {
    /// All rows refused.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// The rows of one run, accumulated file by file.
#[derive(Default)]
pub struct RunRows {
    /// `COPY … FROM STDIN` text of the accepted rows.
    pub copy_text: Vec<u8>,
    /// Rows refused.
    pub rejections: Vec<Rejection>,
    /// Counts.
    pub stats: RowStats,
    seen: SeenEvents,
}

/// The event ids a run has accepted. Bronze ids are UUIDs, kept as 16 bytes rather than
/// 36-character strings: a million-row run's set then takes tens of MB, not a hundred.
#[derive(Default)]
struct SeenEvents {
    uuids: HashSet<u128>,
    others: HashSet<String>,
}

impl SeenEvents {
    /// Adds `id`; false if the run has it already.
    fn insert(&mut self, id: &str) -> bool {
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) => self.uuids.insert(uuid.as_u128()),
            Err(_) => self.others.insert(id.to_owned()),
        }
    }
}

/// A bronze file whose columns are not the bronze schema's.
#[derive(Debug, thiserror::Error)]
#[error("{file} is not a bronze transactions file: column {column} is missing or has another type")]
pub struct SchemaMismatch {
    /// The file.
    pub file: String,
    /// The offending column.
    pub column: &'static str,
}

struct Columns<'a> {
    batch: &'a RecordBatch,
    file: &'a str,
}

impl<'a> Columns<'a> {
    fn get(&self, name: &'static str) -> Result<&'a ArrayRef, SchemaMismatch> {
        self.batch.column_by_name(name).ok_or(SchemaMismatch {
            file: self.file.to_owned(),
            column: name,
        })
    }

    fn text(&self, name: &'static str) -> Result<&'a arrow_array::StringArray, SchemaMismatch> {
        self.get(name)?
            .as_string_opt::<i32>()
            .ok_or(SchemaMismatch {
                file: self.file.to_owned(),
                column: name,
            })
    }

    fn primitive<T: arrow_array::ArrowPrimitiveType>(
        &self,
        name: &'static str,
    ) -> Result<&'a arrow_array::PrimitiveArray<T>, SchemaMismatch> {
        self.get(name)?
            .as_primitive_opt::<T>()
            .ok_or(SchemaMismatch {
                file: self.file.to_owned(),
                column: name,
            })
    }
}

impl RunRows {
    /// Validates and adds every row of `batch`, read from `file`, for run `run_id`.
    pub fn add_batch(
        &mut self,
        file: &str,
        batch: &RecordBatch,
        run_id: &str,
    ) -> Result<(), SchemaMismatch> {
        let columns = Columns { batch, file };
        let event_id = columns.text("event_id")?;
        let transaction_id = columns.text("transaction_id")?;
        let status = columns.text("status")?;
        let event_time = columns.primitive::<TimestampMicrosecondType>("event_time")?;
        let customer_id = columns.text("customer_id")?;
        let merchant_id = columns.text("merchant_id")?;
        let merchant_name = columns.text("merchant_name")?;
        let category = columns.text("category")?;
        let amount = columns.primitive::<Decimal128Type>("amount")?;
        let currency = columns.text("currency")?;
        let payment_method = columns.text("payment_method")?;
        let city = columns.text("city")?;
        let state = columns.text("state")?;
        let country = columns.text("country")?;
        let latitude = columns.primitive::<Float64Type>("latitude")?;
        let longitude = columns.primitive::<Float64Type>("longitude")?;
        let is_fraud = columns
            .get("is_fraud")?
            .as_boolean_opt()
            .ok_or(SchemaMismatch {
                file: file.to_owned(),
                column: "is_fraud",
            })?;
        let source = columns.text("source")?;
        let schema_version = columns.primitive::<Int32Type>("schema_version")?;
        let partition = columns.primitive::<Int32Type>("kafka_partition")?;
        let offset = columns.primitive::<Int64Type>("kafka_offset")?;
        let kafka_timestamp = columns.primitive::<TimestampMillisecondType>("kafka_timestamp")?;
        let ingested_at = columns.primitive::<TimestampMicrosecondType>("ingested_at")?;
        if amount.scale() != 2 {
            return Err(SchemaMismatch {
                file: file.to_owned(),
                column: "amount",
            });
        }

        for (name, column) in [
            ("customer_id", customer_id as &dyn Array),
            ("latitude", latitude),
            ("longitude", longitude),
            ("kafka_timestamp", kafka_timestamp),
        ] {
            let nulls = column.null_count() as u64;
            if nulls > 0 {
                *self.stats.nulls.entry(name).or_default() += nulls;
            }
        }

        for row in 0..batch.num_rows() {
            self.stats.read += 1;
            let cents = amount.value(row);
            let customer = (!customer_id.is_null(row)).then(|| customer_id.value(row));
            let reason = if customer.is_none_or(str::is_empty) {
                Some(RejectReason::MissingCustomerId)
            } else if cents <= 0 {
                Some(RejectReason::NonPositiveAmount)
            } else if cents > MAX_AMOUNT_CENTS {
                Some(RejectReason::AmountOutOfRange)
            } else {
                None
            };
            if let Some(reason) = reason {
                *self.stats.rejected.entry(reason).or_default() += 1;
                self.rejections.push(Rejection {
                    bronze_file: file.to_owned(),
                    partition: partition.value(row),
                    offset: offset.value(row),
                    event_id: event_id.value(row).to_owned(),
                    transaction_id: transaction_id.value(row).to_owned(),
                    reason,
                    row: serde_json::json!({
                        "event_id": event_id.value(row),
                        "transaction_id": transaction_id.value(row),
                        "status": status.value(row),
                        "event_time": timestamp_text(event_time.value(row), 1),
                        "customer_id": customer,
                        "merchant_id": merchant_id.value(row),
                        "amount": amount.value_as_string(row),
                        "currency": currency.value(row),
                        "payment_method": payment_method.value(row),
                        "source": source.value(row),
                    }),
                });
                continue;
            }
            if !self.seen.insert(event_id.value(row)) {
                self.stats.duplicate_in_run += 1;
                continue;
            }
            self.stats.accepted += 1;
            let line = &mut self.copy_text;
            push_text(line, event_id.value(row));
            push_text(line, transaction_id.value(row));
            push_text(line, status.value(row));
            push_timestamp(line, event_time.value(row));
            push_text(line, customer.unwrap_or_default());
            push_text(line, merchant_id.value(row));
            push_text(line, merchant_name.value(row));
            push_text(line, category.value(row));
            push_cents(line, cents);
            push_text(line, currency.value(row));
            push_text(line, payment_method.value(row));
            push_text(line, city.value(row));
            push_text(line, state.value(row));
            push_text(line, country.value(row));
            push_float(line, (!latitude.is_null(row)).then(|| latitude.value(row)));
            push_float(
                line,
                (!longitude.is_null(row)).then(|| longitude.value(row)),
            );
            push_raw(line, if is_fraud.value(row) { "t" } else { "f" });
            push_text(line, source.value(row));
            push_display(line, schema_version.value(row));
            push_display(line, partition.value(row));
            push_display(line, offset.value(row));
            if kafka_timestamp.is_null(row) {
                push_raw(line, "\\N");
            } else {
                push_timestamp(line, kafka_timestamp.value(row).saturating_mul(1_000));
            }
            push_timestamp(line, ingested_at.value(row));
            push_text(line, file);
            push_raw(line, run_id);
            end_copy_row(line);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bronze::decode::TransactionColumns;
    use crate::event::PaymentEvent;
    use crate::source::SourceMessage;
    use crate::synthetic::SyntheticGenerator;
    use rust_decimal::Decimal;

    fn batch(edit: impl Fn(usize, &mut PaymentEvent)) -> RecordBatch {
        let mut generator = SyntheticGenerator::new(4, 0.0);
        let mut columns = TransactionColumns::default();
        for i in 0..10 {
            let mut event = generator.next_payment(chrono::Utc::now());
            edit(i, &mut event);
            let message = SourceMessage {
                partition: 0,
                offset: i as i64,
                timestamp_ms: None,
                key: None,
                payload: None,
            };
            columns.append(&event, &message);
        }
        columns.finish(0)
    }

    #[test]
    fn rejects_invalid_rows_with_reasons_and_counts_duplicates() {
        let batch = batch(|i, event| match i {
            1 => event.customer_id = None,
            2 => event.amount = Decimal::ZERO,
            3 => event.amount = Decimal::new(-500, 2),
            4 => event.amount = Decimal::new(100_000_000_000_000, 2),
            5 => event.merchant_name = "tab\there\nnewline \\ backslash".to_owned(),
            _ => {}
        });
        let mut rows = RunRows::default();
        rows.add_batch("f1", &batch, "00000000-0000-0000-0000-000000000001")
            .unwrap();
        // The same file again: every valid row is a duplicate within the run.
        rows.add_batch("f1", &batch, "00000000-0000-0000-0000-000000000001")
            .unwrap();
        assert_eq!(rows.stats.read, 20);
        assert_eq!(rows.stats.accepted, 6);
        assert_eq!(rows.stats.duplicate_in_run, 6);
        assert_eq!(rows.stats.rejected[&RejectReason::MissingCustomerId], 2);
        assert_eq!(rows.stats.rejected[&RejectReason::NonPositiveAmount], 4);
        assert_eq!(rows.stats.rejected[&RejectReason::AmountOutOfRange], 2);
        assert_eq!(rows.stats.nulls["customer_id"], 2);
        assert_eq!(rows.rejections[0].reason, RejectReason::MissingCustomerId);
        assert_eq!(rows.rejections[0].offset, 1);

        let text = String::from_utf8(rows.copy_text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(
            lines
                .iter()
                .all(|l| l.split('\t').count() == COPY_COLUMNS.split(',').count())
        );
        assert!(text.contains("tab\\there\\nnewline \\\\ backslash"));
    }
}
