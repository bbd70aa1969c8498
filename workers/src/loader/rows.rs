//! Turning bronze record batches into silver rows: validation, de-duplication within a run,
//! the rows sent to the warehouse's `COPY`, and the rejected rows with their reasons.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
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
use crate::warehouse::copy_binary;
use crate::warehouse::copy_text::timestamp_text;

/// Largest amount `numeric(14, 2)` holds, in hundredths.
const MAX_AMOUNT_CENTS: i128 = 99_999_999_999_999;

/// Columns of `raw.transactions` the loader fills beside the bronze ones: where each row
/// came from, and when it reached silver.
const LINEAGE_COLUMNS: [&str; 3] = ["bronze_file", "load_run_id", "loaded_at"];

/// What a load run stamps on every row it stores, beside the row's bronze file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The run, as `metadata.load_audit` knows it.
    pub run_id: uuid::Uuid,
    /// When the run took the load lock. Runs hold that lock until they commit, so this
    /// orders runs as they commit, which the transaction's own start time (`now()`) does
    /// not: a run that waited for the lock would otherwise stamp its rows earlier than the
    /// run it waited for. Incremental transforms rely on that order for their window.
    pub loaded_at: chrono::DateTime<chrono::Utc>,
}

/// Fields of each `COPY` row: the bronze columns, then lineage.
const COPY_FIELDS: i16 = (TRANSACTION_COLUMNS.len() + LINEAGE_COLUMNS.len()) as i16;

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
    /// `event_id` is not a UUID (bronze written by another writer than the streamer).
    InvalidEventId,
    /// A text column holds NUL, which PostgreSQL text cannot store (bronze written before
    /// the decoder refused it).
    UnstorableText,
    /// `event_time` lies outside the plausible range around `ingested_at` (see
    /// [`EventTimeBounds`]).
    ImplausibleEventTime,
}

impl RejectReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RejectReason; 6] = [
        Self::MissingCustomerId,
        Self::NonPositiveAmount,
        Self::AmountOutOfRange,
        Self::InvalidEventId,
        Self::UnstorableText,
        Self::ImplausibleEventTime,
    ];

    /// The stored reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingCustomerId => "missing_customer_id",
            Self::NonPositiveAmount => "non_positive_amount",
            Self::AmountOutOfRange => "amount_out_of_range",
            Self::InvalidEventId => "invalid_event_id",
            Self::UnstorableText => "unstorable_text",
            Self::ImplausibleEventTime => "implausible_event_time",
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
    /// Rows refused, by stored reason (a [`RejectReason`]'s, or a bank file line's
    /// [`crate::bank::file::LineReason`]).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Nulls per nullable column, among rows read.
    pub nulls: BTreeMap<&'static str, u64>,
}

impl RowStats {
    /// All rows refused.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// How far an event's own time may lie from the time it was ingested before the loader
/// stops trusting it. Event times drive the gold layer's dates, so one event dated in 2099
/// or in year 0 is quarantined with a reason rather than loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeBounds {
    /// The oldest an event may be, before its ingestion.
    pub max_age: chrono::Duration,
    /// The furthest an event may lie after its ingestion (producers' clocks run ahead).
    pub max_lead: chrono::Duration,
}

impl Default for EventTimeBounds {
    /// Ten years back (replays of historical exports, such as the Kaggle file's 2019-2020
    /// payments with their own times) and one day ahead (a producer's skewed clock).
    fn default() -> Self {
        Self {
            max_age: chrono::Duration::days(3_650),
            max_lead: chrono::Duration::days(1),
        }
    }
}

impl EventTimeBounds {
    /// Whether an event at `event_time` ingested at `ingested_at` (both µs since the epoch)
    /// is plausible. An ingestion time PostgreSQL cannot hold makes neither trustworthy.
    fn admit(&self, event_time: i64, ingested_at: i64) -> bool {
        const YEAR_2000: i64 = 946_684_800_000_000;
        const YEAR_10000: i64 = 253_402_300_800_000_000;
        let (Some(age), Some(lead)) = (
            self.max_age.num_microseconds(),
            self.max_lead.num_microseconds(),
        ) else {
            return false;
        };
        (YEAR_2000..YEAR_10000).contains(&ingested_at)
            && event_time >= ingested_at.saturating_sub(age)
            && event_time <= ingested_at.saturating_add(lead)
    }
}

/// The rows of one run, accumulated file by file.
///
/// Accepted rows wait as `COPY … (FORMAT binary)` rows until [`RunRows::take_copy_data`]:
/// the loader first asks the warehouse which of their event ids it holds already, so that
/// the rows can go straight into `raw.transactions` without `ON CONFLICT`.
#[derive(Default)]
pub struct RunRows {
    /// The `COPY` header and the binary rows accepted since the last take.
    copy_rows: Vec<u8>,
    /// Where each of those rows lies in `copy_rows`, and its event id.
    pending: Vec<(Range<usize>, u128)>,
    /// Rows refused.
    pub rejections: Vec<Rejection>,
    /// Counts.
    pub stats: RowStats,
    bounds: EventTimeBounds,
    /// The event ids the run has accepted, as 16 bytes rather than 36-character strings: a
    /// million-row run's set then takes tens of MB, not a hundred.
    seen: HashSet<u128>,
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
    /// Text in bronze, `uuid` in silver.
    Uuid(&'a StringArray),
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
            BronzeType::Text if column.silver == "uuid" => {
                array.as_string_opt::<i32>().map(Self::Uuid)
            }
            BronzeType::Text => array.as_string_opt::<i32>().map(Self::Text),
            BronzeType::Boolean => array.as_boolean_opt().map(Self::Boolean),
            BronzeType::Float64 => array.as_primitive_opt::<Float64Type>().map(Self::Float64),
            // Hundredths are what the COPY encoding and the range check assume.
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
            Self::Text(a) | Self::Uuid(a) => *a,
            Self::Boolean(a) => *a,
            Self::Float64(a) => *a,
            Self::Amount(a) => *a,
            Self::Micros(a) => *a,
            Self::Millis(a) => *a,
        }
    }

    /// Appends the value of `row` as a binary `COPY` field.
    fn push_copy(&self, out: &mut Vec<u8>, row: usize) {
        use copy_binary::*;
        if self.array().is_null(row) {
            push_null(out);
            return;
        }
        match self {
            Self::Int32(a) => push_i32(out, a.value(row)),
            Self::Int64(a) => push_i64(out, a.value(row)),
            Self::Text(a) => push_text(out, a.value(row)),
            // Validation refuses a row whose event id is not a UUID before it gets here, and
            // a test keeps event_id the only uuid column; were another one added unchecked,
            // NULL makes the server refuse the run rather than store a wrong value.
            Self::Uuid(a) => match uuid::Uuid::try_parse(a.value(row)) {
                Ok(id) => push_uuid(out, id.as_u128()),
                Err(_) => push_null(out),
            },
            Self::Boolean(a) => push_bool(out, a.value(row)),
            Self::Float64(a) => push_f64(out, a.value(row)),
            Self::Amount(a) => push_hundredths(out, a.value(row)),
            Self::Micros(a) => push_timestamp(out, a.value(row)),
            Self::Millis(a) => push_timestamp(out, a.value(row).saturating_mul(1_000)),
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
            Self::Text(a) | Self::Uuid(a) => storable(a.value(row)).into(),
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
    event_time: &'a TimestampMicrosecondArray,
    ingested_at: &'a TimestampMicrosecondArray,
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
            Cells::Text(array) | Cells::Uuid(array) => *array,
            _ => unreachable!("{name} is text"),
        };
        let micros = |name: &str| match cell(name) {
            Cells::Micros(array) => *array,
            _ => unreachable!("{name} is in microseconds"),
        };
        Self {
            event_id: text("event_id"),
            transaction_id: text("transaction_id"),
            customer_id: text("customer_id"),
            amount: match cell("amount") {
                Cells::Amount(array) => array,
                _ => unreachable!("amount is an amount"),
            },
            event_time: micros("event_time"),
            ingested_at: micros("ingested_at"),
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

/// Checks that `batch`, read from `file`, has every bronze column with its declared type.
pub fn check_columns(file: &str, batch: &RecordBatch) -> Result<(), SchemaMismatch> {
    TRANSACTION_COLUMNS
        .iter()
        .try_for_each(|column| Cells::of(batch, column, file).map(drop))
}

impl RunRows {
    /// Rows for a run that trusts event times within `bounds`.
    pub fn new(bounds: EventTimeBounds) -> Self {
        Self {
            bounds,
            ..Self::default()
        }
    }

    /// Validates and adds every row of `batch`, read from `file`, stamped with `lineage`.
    pub fn add_batch(
        &mut self,
        file: &str,
        batch: &RecordBatch,
        lineage: Lineage,
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
        // One look at each text column's bytes; rows are checked one by one only when a
        // NUL is somewhere in the batch.
        let text_with_nul: Vec<&StringArray> = cells
            .iter()
            .filter_map(|cells| match cells {
                Cells::Text(array) if array.value_data().contains(&0) => Some(*array),
                _ => None,
            })
            .collect();

        for row in 0..batch.num_rows() {
            self.stats.read += 1;
            let cents = checked.amount.value(row);
            let customer = checked.customer_id;
            let event_id = uuid::Uuid::try_parse(checked.event_id.value(row)).ok();
            let reason = if customer.is_null(row) || customer.value(row).is_empty() {
                Some(RejectReason::MissingCustomerId)
            } else if cents <= 0 {
                Some(RejectReason::NonPositiveAmount)
            } else if cents > MAX_AMOUNT_CENTS {
                Some(RejectReason::AmountOutOfRange)
            } else if event_id.is_none() {
                Some(RejectReason::InvalidEventId)
            } else if text_with_nul
                .iter()
                .any(|text| !text.is_null(row) && text.value(row).contains('\0'))
            {
                Some(RejectReason::UnstorableText)
            } else if !self.bounds.admit(
                checked.event_time.value(row),
                checked.ingested_at.value(row),
            ) {
                Some(RejectReason::ImplausibleEventTime)
            } else {
                None
            };
            if let Some(reason) = reason {
                *self.stats.rejected.entry(reason.as_str()).or_default() += 1;
                let json = TRANSACTION_COLUMNS
                    .iter()
                    .zip(&cells)
                    .map(|(column, cells)| (column.name.to_owned(), cells.json(row)))
                    .collect();
                self.rejections.push(Rejection {
                    bronze_file: file.to_owned(),
                    partition: checked.partition.value(row),
                    offset: checked.offset.value(row),
                    event_id: storable(checked.event_id.value(row)),
                    transaction_id: storable(checked.transaction_id.value(row)),
                    reason,
                    row: serde_json::Value::Object(json),
                });
                continue;
            }
            let Some(event_id) = event_id.map(|id| id.as_u128()) else {
                unreachable!("a row whose event id is not a UUID is rejected above")
            };
            if !self.seen.insert(event_id) {
                self.stats.duplicate_in_run += 1;
                continue;
            }
            self.stats.accepted += 1;
            let out = &mut self.copy_rows;
            if out.is_empty() {
                out.extend_from_slice(copy_binary::HEADER);
            }
            let start = out.len();
            copy_binary::start_row(out, COPY_FIELDS);
            for cells in &cells {
                cells.push_copy(out, row);
            }
            copy_binary::push_text(out, file);
            copy_binary::push_uuid(out, lineage.run_id.as_u128());
            copy_binary::push_timestamp(out, lineage.loaded_at.timestamp_micros());
            self.pending.push((start..out.len(), event_id));
        }
        Ok(())
    }

    /// The event ids of the rows accepted since the last [`RunRows::take_copy_data`].
    pub fn pending_event_ids(&self) -> Vec<uuid::Uuid> {
        self.pending
            .iter()
            .map(|(_, id)| uuid::Uuid::from_u128(*id))
            .collect()
    }

    /// The rows accepted since the last take as `COPY … (FORMAT binary)` data, leaving out
    /// those whose event id is in `loaded_already`, and how many rows it holds. `None` when
    /// no row is left to send.
    pub fn take_copy_data(
        &mut self,
        loaded_already: &HashSet<uuid::Uuid>,
    ) -> Option<(Vec<u8>, u64)> {
        let mut data = std::mem::take(&mut self.copy_rows);
        let pending = std::mem::take(&mut self.pending);
        let mut sent = pending.len() as u64;
        if !loaded_already.is_empty() {
            // Rare in an incremental run (a producer's retry in another file), the rule in a
            // replay: the rows left are moved down over the ones already loaded.
            let mut end = copy_binary::HEADER.len();
            sent = 0;
            for (range, id) in pending {
                if !loaded_already.contains(&uuid::Uuid::from_u128(id)) {
                    let len = range.len();
                    data.copy_within(range, end);
                    end += len;
                    sent += 1;
                }
            }
            data.truncate(end);
        }
        data.extend_from_slice(&copy_binary::TRAILER);
        (sent > 0).then_some((data, sent))
    }
}

/// `text` as PostgreSQL text and jsonb can store it: NUL, which neither can, becomes U+FFFD.
/// Only rejected rows go through this; accepted rows never hold NUL.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bronze::decode::TransactionColumns;
    use crate::event::PaymentEvent;
    use crate::source::SourceMessage;
    use crate::synthetic::SyntheticGenerator;
    use rust_decimal::Decimal;

    const RUN: uuid::Uuid = uuid::Uuid::from_u128(1);
    /// The lineage of the tests' run, loaded at 2026-12-02T00:00:00Z.
    const LINEAGE: Lineage = Lineage {
        run_id: RUN,
        loaded_at: chrono::DateTime::from_timestamp_nanos(1_796_169_600_000_000_000),
    };

    /// The position of `name` in a `COPY` row.
    fn column(name: &str) -> usize {
        TRANSACTION_COLUMNS
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    }

    /// The rows of binary `COPY` data, each field's bytes or `None` for NULL.
    fn copy_rows(data: &[u8]) -> Vec<Vec<Option<&[u8]>>> {
        crate::warehouse::copy_binary::read_rows(data).expect("binary COPY data")
    }

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
            columns.append_event(&event, &message);
        }
        columns.finish(chrono::Utc::now().timestamp_micros())
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
        rows.add_batch("f1", &batch, LINEAGE).unwrap();
        // The same file again: every valid row is a duplicate within the run.
        rows.add_batch("f1", &batch, LINEAGE).unwrap();
        assert_eq!(rows.stats.read, 20);
        assert_eq!(rows.stats.accepted, 6);
        assert_eq!(rows.stats.duplicate_in_run, 6);
        assert_eq!(rows.stats.rejected["missing_customer_id"], 2);
        assert_eq!(rows.stats.rejected["non_positive_amount"], 4);
        assert_eq!(rows.stats.rejected["amount_out_of_range"], 2);
        assert_eq!(rows.stats.nulls["customer_id"], 2);
        assert_eq!(rows.rejections[0].reason, RejectReason::MissingCustomerId);
        assert_eq!(rows.rejections[0].offset, 1);

        let (data, sent) = rows.take_copy_data(&HashSet::new()).unwrap();
        assert_eq!(sent, 6);
        let copied = copy_rows(&data);
        assert_eq!(copied.len(), 6);
        assert!(
            copied
                .iter()
                .all(|row| row.len() == COPY_COLUMNS.split(',').count())
        );
        // Binary fields carry text as it is, nothing escaped.
        let merchant = column("merchant_name");
        assert_eq!(
            copied[1][merchant], // offset 5: rows 1 to 4 are rejected
            Some("tab\there\nnewline \\ backslash".as_bytes())
        );
        // The lineage: the file, the run as 16 bytes, then when the run took the lock, in
        // microseconds since 2000-01-01.
        assert_eq!(copied[0][COPY_FIELDS as usize - 3], Some(&b"f1"[..]));
        assert_eq!(
            copied[0][COPY_FIELDS as usize - 2],
            Some(&RUN.as_bytes()[..])
        );
        let loaded_at = LINEAGE.loaded_at.timestamp_micros() - copy_binary::POSTGRES_EPOCH_MICROS;
        assert_eq!(
            copied[0][COPY_FIELDS as usize - 1],
            Some(&loaded_at.to_be_bytes()[..])
        );
        assert!(rows.take_copy_data(&HashSet::new()).is_none());
    }

    #[test]
    fn rows_the_warehouse_holds_already_are_left_out_of_the_copy() {
        let mut rows = RunRows::default();
        rows.add_batch("f1", &batch(|_, _| {}), LINEAGE).unwrap();
        let ids = rows.pending_event_ids();
        assert_eq!(ids.len(), 10);
        let held: HashSet<uuid::Uuid> = [ids[0], ids[4], ids[9]].into();
        let (data, sent) = rows.take_copy_data(&held).unwrap();
        assert_eq!(sent, 7);
        let event_id = column("event_id");
        let copied: Vec<uuid::Uuid> = copy_rows(&data)
            .iter()
            .map(|row| uuid::Uuid::from_slice(row[event_id].unwrap()).unwrap())
            .collect();
        let expected: Vec<uuid::Uuid> = ids
            .iter()
            .filter(|id| !held.contains(id))
            .copied()
            .collect();
        assert_eq!(copied, expected);

        // A file whose every row is held already sends nothing.
        rows.add_batch("f2", &batch(|_, _| {}), LINEAGE).unwrap();
        let held: HashSet<uuid::Uuid> = rows.pending_event_ids().into_iter().collect();
        assert!(rows.take_copy_data(&held).is_none());
        assert!(rows.pending_event_ids().is_empty());
    }

    #[test]
    fn event_id_is_the_one_column_read_as_text_and_stored_as_uuid() {
        // A second such column would need validation of its own before push_copy.
        let uuids: Vec<&str> = TRANSACTION_COLUMNS
            .iter()
            .filter(|c| c.bronze == BronzeType::Text && c.silver == "uuid")
            .map(|c| c.name)
            .collect();
        assert_eq!(uuids, ["event_id"]);
    }

    #[test]
    fn rows_postgresql_would_refuse_are_rejected_not_loaded() {
        let batch = batch(|i, event| match i {
            1 => event.merchant_name = "Ac\u{0}me".to_owned(),
            2 => event.event_time = "0000-01-01T00:00:00Z".parse().unwrap(),
            3 => event.event_time = "2099-01-01T00:00:00Z".parse().unwrap(),
            _ => {}
        });
        // A bronze file from another writer, whose event ids are not UUIDs.
        let mut ids: Vec<String> = batch
            .column_by_name("event_id")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|id| id.unwrap().to_owned())
            .collect();
        ids[4] = "not-a-uuid".to_owned();
        let index = batch.schema().index_of("event_id").unwrap();
        let mut columns = batch.columns().to_vec();
        columns[index] = std::sync::Arc::new(StringArray::from(ids));
        let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();

        let mut rows = RunRows::default();
        rows.add_batch("f1", &batch, LINEAGE).unwrap();
        assert_eq!(rows.stats.accepted, 6);
        let reasons: Vec<(i64, RejectReason)> = rows
            .rejections
            .iter()
            .map(|r| (r.offset, r.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, RejectReason::UnstorableText),
                (2, RejectReason::ImplausibleEventTime),
                (3, RejectReason::ImplausibleEventTime),
                (4, RejectReason::InvalidEventId),
            ]
        );
        // The quarantined row keeps every column, in a form jsonb stores.
        let row = &rows.rejections[0].row;
        assert_eq!(row["merchant_name"], "Ac\u{fffd}me");
        assert_eq!(row.as_object().unwrap().len(), TRANSACTION_COLUMNS.len());
        let (data, _) = rows.take_copy_data(&HashSet::new()).unwrap();
        let copied = copy_rows(&data);
        assert_eq!(copied.len(), 6);
        let merchant = column("merchant_name");
        assert!(
            copied
                .iter()
                .all(|row| !row[merchant].unwrap().contains(&0))
        );
    }

    #[test]
    fn event_times_are_trusted_within_the_bounds_around_ingestion() {
        let bounds = EventTimeBounds::default();
        let ingested = chrono::Utc::now().timestamp_micros();
        let day = 86_400_000_000;
        assert!(bounds.admit(ingested, ingested));
        assert!(bounds.admit(ingested - 3_650 * day, ingested));
        assert!(!bounds.admit(ingested - 3_651 * day, ingested));
        assert!(bounds.admit(ingested + day, ingested));
        assert!(!bounds.admit(ingested + day + 1, ingested));
        // An ingestion time no clock gives makes nothing plausible.
        assert!(!bounds.admit(0, 0));
    }
}
