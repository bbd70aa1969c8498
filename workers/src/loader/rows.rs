//! Turning bronze record batches into silver rows: validation, de-duplication within a run,
//! the rows sent to the warehouse's `COPY`, and the rejected rows with their reasons.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType,
};
use arrow_array::{
    Array, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
};

use crate::bronze::schema::{BronzeType, Column, TRANSACTION_COLUMNS};
use crate::warehouse::copy_text::{
    end_copy_row, push_cents, push_display, push_float, push_raw, push_text, push_timestamp,
    timestamp_text,
};

/// Largest amount `numeric(14, 2)` holds, in hundredths.
const MAX_AMOUNT_CENTS: i128 = 99_999_999_999_999;

/// Columns of `raw.transactions` the loader fills beside the bronze ones: where each row
/// came from.
const LINEAGE_COLUMNS: [&str; 2] = ["bronze_file", "load_run_id"];

/// The silver columns filled from bronze, in `COPY` order: the bronze columns, then lineage.
pub static COPY_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    TRANSACTION_COLUMNS
        .iter()
        .map(|column| column.name)
        .chain(LINEAGE_COLUMNS)
        .collect::<Vec<_>>()
        .join(", ")
});

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

/// One bronze column of a batch, checked against its declared [`BronzeType`].
enum Cells<'a> {
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Text(&'a StringArray),
    Boolean(&'a BooleanArray),
    Float64(&'a Float64Array),
    Amount(&'a Decimal128Array),
    Micros(&'a TimestampMicrosecondArray),
    Millis(&'a TimestampMillisecondArray),
}

impl<'a> Cells<'a> {
    /// The column `column` of `batch`, read from `file`.
    fn of(batch: &'a RecordBatch, column: &Column, file: &str) -> Result<Self, SchemaMismatch> {
        let mismatch = || SchemaMismatch {
            file: file.to_owned(),
            column: column.name,
        };
        let array = batch.column_by_name(column.name).ok_or_else(mismatch)?;
        let cells = match column.bronze {
            BronzeType::Int32 => array.as_primitive_opt::<Int32Type>().map(Self::Int32),
            BronzeType::Int64 => array.as_primitive_opt::<Int64Type>().map(Self::Int64),
            BronzeType::Text => array.as_string_opt::<i32>().map(Self::Text),
            BronzeType::Boolean => array.as_boolean_opt().map(Self::Boolean),
            BronzeType::Float64 => array.as_primitive_opt::<Float64Type>().map(Self::Float64),
            // Hundredths are what the COPY text and the range check assume.
            BronzeType::Amount => array
                .as_primitive_opt::<Decimal128Type>()
                .filter(|amounts| amounts.scale() == 2)
                .map(Self::Amount),
            BronzeType::TimestampMicros => array
                .as_primitive_opt::<TimestampMicrosecondType>()
                .map(Self::Micros),
            BronzeType::TimestampMillis => array
                .as_primitive_opt::<TimestampMillisecondType>()
                .map(Self::Millis),
        };
        cells.ok_or_else(mismatch)
    }

    fn array(&self) -> &dyn Array {
        match self {
            Self::Int32(a) => *a,
            Self::Int64(a) => *a,
            Self::Text(a) => *a,
            Self::Boolean(a) => *a,
            Self::Float64(a) => *a,
            Self::Amount(a) => *a,
            Self::Micros(a) => *a,
            Self::Millis(a) => *a,
        }
    }

    /// Appends the value of `row` as `COPY` text (`\N` for null).
    fn push_copy(&self, line: &mut Vec<u8>, row: usize) {
        if self.array().is_null(row) {
            push_raw(line, "\\N");
            return;
        }
        match self {
            Self::Int32(a) => push_display(line, a.value(row)),
            Self::Int64(a) => push_display(line, a.value(row)),
            Self::Text(a) => push_text(line, a.value(row)),
            Self::Boolean(a) => push_raw(line, if a.value(row) { "t" } else { "f" }),
            Self::Float64(a) => push_float(line, Some(a.value(row))),
            Self::Amount(a) => push_cents(line, a.value(row)),
            Self::Micros(a) => push_timestamp(line, a.value(row)),
            Self::Millis(a) => push_timestamp(line, a.value(row).saturating_mul(1_000)),
        }
    }

    /// The value of `row` as JSON, for a rejected row.
    fn json(&self, row: usize) -> serde_json::Value {
        use serde_json::Value;
        if self.array().is_null(row) {
            return Value::Null;
        }
        match self {
            Self::Int32(a) => a.value(row).into(),
            Self::Int64(a) => a.value(row).into(),
            Self::Text(a) => a.value(row).into(),
            Self::Boolean(a) => a.value(row).into(),
            Self::Float64(a) => {
                serde_json::Number::from_f64(a.value(row)).map_or(Value::Null, Value::Number)
            }
            Self::Amount(a) => a.value_as_string(row).into(),
            Self::Micros(a) => timestamp_text(a.value(row), 1).into(),
            Self::Millis(a) => timestamp_text(a.value(row), 1_000).into(),
        }
    }
}

/// The columns the validation reads by name.
struct Checked<'a> {
    event_id: &'a StringArray,
    transaction_id: &'a StringArray,
    customer_id: &'a StringArray,
    amount: &'a Decimal128Array,
    partition: &'a Int32Array,
    offset: &'a Int64Array,
}

impl<'a> Checked<'a> {
    fn of(cells: &[Cells<'a>]) -> Self {
        let cell = |name: &str| {
            let index = TRANSACTION_COLUMNS
                .iter()
                .position(|column| column.name == name)
                .unwrap_or_else(|| unreachable!("{name} is a bronze column"));
            &cells[index]
        };
        let text = |name: &str| match cell(name) {
            Cells::Text(array) => *array,
            _ => unreachable!("{name} is text"),
        };
        Self {
            event_id: text("event_id"),
            transaction_id: text("transaction_id"),
            customer_id: text("customer_id"),
            amount: match cell("amount") {
                Cells::Amount(array) => array,
                _ => unreachable!("amount is an amount"),
            },
            partition: match cell("kafka_partition") {
                Cells::Int32(array) => array,
                _ => unreachable!("kafka_partition is an Int32"),
            },
            offset: match cell("kafka_offset") {
                Cells::Int64(array) => array,
                _ => unreachable!("kafka_offset is an Int64"),
            },
        }
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
        let cells = TRANSACTION_COLUMNS
            .iter()
            .map(|column| Cells::of(batch, column, file))
            .collect::<Result<Vec<_>, _>>()?;
        let checked = Checked::of(&cells);

        for (column, cells) in TRANSACTION_COLUMNS.iter().zip(&cells) {
            let nulls = cells.array().null_count() as u64;
            if column.nullable_in_bronze() && nulls > 0 {
                *self.stats.nulls.entry(column.name).or_default() += nulls;
            }
        }

        for row in 0..batch.num_rows() {
            self.stats.read += 1;
            let cents = checked.amount.value(row);
            let customer = checked.customer_id;
            let reason = if customer.is_null(row) || customer.value(row).is_empty() {
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
                let json = TRANSACTION_COLUMNS
                    .iter()
                    .zip(&cells)
                    .map(|(column, cells)| (column.name.to_owned(), cells.json(row)))
                    .collect();
                self.rejections.push(Rejection {
                    bronze_file: file.to_owned(),
                    partition: checked.partition.value(row),
                    offset: checked.offset.value(row),
                    event_id: checked.event_id.value(row).to_owned(),
                    transaction_id: checked.transaction_id.value(row).to_owned(),
                    reason,
                    row: serde_json::Value::Object(json),
                });
                continue;
            }
            if !self.seen.insert(checked.event_id.value(row)) {
                self.stats.duplicate_in_run += 1;
                continue;
            }
            self.stats.accepted += 1;
            let line = &mut self.copy_text;
            for cells in &cells {
                cells.push_copy(line, row);
            }
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
