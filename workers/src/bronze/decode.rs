//! Decoding Kafka messages into bronze rows, and the reasons a message cannot be decoded.
//!
//! A message becomes a row when its payload is a payment event as `docs/events.md` defines
//! it. Anything else becomes a dead letter with a bounded `kind` (for metrics and for
//! draining the queue) and the decoder's full message.

use arrow_array::builder::ArrayBuilder;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use std::sync::Arc;

use super::row::{self, Row};
use super::schema::{
    self, AMOUNT_PRECISION, AMOUNT_SCALE, BronzeType, TRANSACTION_COLUMNS, column_index,
};
use crate::event::PaymentEvent;
use crate::source::SourceMessage;

// Where each column is in TRANSACTION_COLUMNS; a name missing from the table fails the build.
const SCHEMA_VERSION: usize = column_index("schema_version");
const EVENT_ID: usize = column_index("event_id");
const TRANSACTION_ID: usize = column_index("transaction_id");
const STATUS: usize = column_index("status");
const EVENT_TIME: usize = column_index("event_time");
const CUSTOMER_ID: usize = column_index("customer_id");
const MERCHANT_ID: usize = column_index("merchant_id");
const MERCHANT_NAME: usize = column_index("merchant_name");
const CATEGORY: usize = column_index("category");
const AMOUNT: usize = column_index("amount");
const CURRENCY: usize = column_index("currency");
const PAYMENT_METHOD: usize = column_index("payment_method");
const CITY: usize = column_index("city");
const STATE: usize = column_index("state");
const COUNTRY: usize = column_index("country");
const LATITUDE: usize = column_index("latitude");
const LONGITUDE: usize = column_index("longitude");
const IS_FRAUD: usize = column_index("is_fraud");
const SOURCE: usize = column_index("source");
const KAFKA_PARTITION: usize = column_index("kafka_partition");
const KAFKA_OFFSET: usize = column_index("kafka_offset");
const KAFKA_TIMESTAMP: usize = column_index("kafka_timestamp");
const INGESTED_AT: usize = column_index("ingested_at");

/// Longest text field accepted, in bytes; longer values are dead letters, so that one bad
/// producer cannot blow up a row group.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Why a message could not be decoded; the `error_kind` column of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// The message has no payload.
    EmptyPayload,
    /// The payload is larger than the configured maximum, or a field is too long.
    TooLarge,
    /// The payload is not UTF-8.
    InvalidUtf8,
    /// The payload is not JSON.
    InvalidJson,
    /// A required field is missing.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field the event does not define.
    UnknownField,
    /// A field has the right type but a value outside its domain (an unknown status, an
    /// amount with three decimal places, a schema version from the future).
    InvalidValue,
}

impl DeadLetterKind {
    /// Every kind, in a fixed order.
    pub const ALL: [DeadLetterKind; 8] = [
        Self::EmptyPayload,
        Self::TooLarge,
        Self::InvalidUtf8,
        Self::InvalidJson,
        Self::MissingField,
        Self::WrongType,
        Self::UnknownField,
        Self::InvalidValue,
    ];

    /// The column and metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyPayload => "empty_payload",
            Self::TooLarge => "too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::UnknownField => "unknown_field",
            Self::InvalidValue => "invalid_value",
        }
    }
}

/// A message that cannot become a bronze row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The bounded reason.
    pub kind: DeadLetterKind,
    /// The decoder's message.
    pub message: String,
}

impl DecodeError {
    fn new(kind: DeadLetterKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Decodes one payload into a payment event, or says why it cannot.
pub fn decode(payload: Option<&[u8]>, max_bytes: usize) -> Result<PaymentEvent, DecodeError> {
    let payload = match payload {
        None | Some([]) => {
            return Err(DecodeError::new(
                DeadLetterKind::EmptyPayload,
                "the message has no payload",
            ));
        }
        Some(bytes) => bytes,
    };
    if payload.len() > max_bytes {
        return Err(DecodeError::new(
            DeadLetterKind::TooLarge,
            format!(
                "payload of {} bytes exceeds the maximum of {max_bytes}",
                payload.len()
            ),
        ));
    }
    if let Err(error) = std::str::from_utf8(payload) {
        return Err(DecodeError::new(
            DeadLetterKind::InvalidUtf8,
            format!("payload is not UTF-8: {error}"),
        ));
    }
    let event = PaymentEvent::from_json(payload).map_err(classify)?;
    if event.schema_version > crate::event::SCHEMA_VERSION || event.schema_version == 0 {
        return Err(DecodeError::new(
            DeadLetterKind::InvalidValue,
            format!(
                "schema_version {} is not supported (this build reads 1 to {})",
                event.schema_version,
                crate::event::SCHEMA_VERSION
            ),
        ));
    }
    check_text(&event)?;
    amount_mantissa(&event)?;
    Ok(event)
}

fn classify(error: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    let message = error.to_string();
    let kind = match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => DeadLetterKind::InvalidJson,
        Category::Data if message.starts_with("missing field") => DeadLetterKind::MissingField,
        Category::Data if message.starts_with("unknown field") => DeadLetterKind::UnknownField,
        Category::Data if message.starts_with("invalid type") => DeadLetterKind::WrongType,
        Category::Data => DeadLetterKind::InvalidValue,
    };
    DecodeError { kind, message }
}

fn check_text(event: &PaymentEvent) -> Result<(), DecodeError> {
    let fields = [
        ("transaction_id", event.transaction_id.as_str()),
        ("customer_id", event.customer_id.as_deref().unwrap_or("")),
        ("merchant_id", event.merchant_id.as_str()),
        ("merchant_name", event.merchant_name.as_str()),
        ("category", event.category.as_str()),
        ("city", event.city.as_str()),
        ("state", event.state.as_str()),
        ("country", event.country.as_str()),
    ];
    for (name, value) in fields {
        if value.len() > MAX_FIELD_BYTES {
            return Err(DecodeError::new(
                DeadLetterKind::TooLarge,
                format!(
                    "{name} is {} bytes long, more than {MAX_FIELD_BYTES}",
                    value.len()
                ),
            ));
        }
        // PostgreSQL's text cannot hold NUL: such a row could never reach silver.
        if value.contains('\0') {
            return Err(DecodeError::new(
                DeadLetterKind::InvalidValue,
                format!("{name} contains a NUL character, which PostgreSQL text cannot store"),
            ));
        }
    }
    Ok(())
}

/// The amount as the integer number of hundredths that `Decimal128(18, 2)` stores.
fn amount_mantissa(event: &PaymentEvent) -> Result<i128, DecodeError> {
    let mut amount = event.amount;
    amount.rescale(AMOUNT_SCALE as u32);
    let mantissa = amount.mantissa();
    if mantissa.unsigned_abs() >= 10u128.pow(u32::from(AMOUNT_PRECISION)) {
        return Err(DecodeError::new(
            DeadLetterKind::InvalidValue,
            format!(
                "amount {} does not fit {AMOUNT_PRECISION} digits",
                event.amount
            ),
        ));
    }
    Ok(mantissa)
}

/// Decodes one payload into its bronze row and hands the row to `use_row`: through the fast
/// path ([`row::scan`]) when the payload has the common shape of an event, else through the
/// reference decoder ([`decode`]), which also says why a payload is refused.
pub fn decode_row<T>(
    payload: Option<&[u8]>,
    max_bytes: usize,
    use_row: impl FnOnce(&Row<'_>) -> T,
) -> Result<T, DecodeError> {
    if let Some(row) = payload
        .filter(|bytes| !bytes.is_empty() && bytes.len() <= max_bytes)
        .and_then(row::scan)
    {
        return Ok(use_row(&row));
    }
    let event = decode(payload, max_bytes)?;
    let hundredths = amount_mantissa(&event)?;
    Ok(use_row(&row::from_event(&event, hundredths)))
}

/// A column of a batch being built, of its bronze type.
enum Builder {
    Int32(Int32Builder),
    Int64(Int64Builder),
    Text(StringBuilder),
    Boolean(BooleanBuilder),
    Float64(Float64Builder),
    Amount(Decimal128Builder),
    Micros(TimestampMicrosecondBuilder),
    Millis(TimestampMillisecondBuilder),
}

impl Builder {
    fn new(kind: BronzeType) -> Self {
        match kind {
            BronzeType::Int32 => Self::Int32(Int32Builder::new()),
            BronzeType::Int64 => Self::Int64(Int64Builder::new()),
            BronzeType::Text => Self::Text(StringBuilder::new()),
            BronzeType::Boolean => Self::Boolean(BooleanBuilder::new()),
            BronzeType::Float64 => Self::Float64(Float64Builder::new()),
            BronzeType::Amount => Self::Amount(Decimal128Builder::new()),
            BronzeType::TimestampMicros => Self::Micros(TimestampMicrosecondBuilder::new()),
            BronzeType::TimestampMillis => Self::Millis(TimestampMillisecondBuilder::new()),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Amount(b) => Arc::new(
                b.finish()
                    .with_precision_and_scale(AMOUNT_PRECISION, AMOUNT_SCALE)
                    .unwrap_or_else(|e| unreachable!("valid decimal type: {e}")),
            ),
            Self::Micros(b) => Arc::new(b.finish().with_timezone("UTC")),
            Self::Millis(b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// Column builders for `bronze/transactions` rows of one file, one per column of
/// [`TRANSACTION_COLUMNS`] and of its type; `ingested_at` is filled when the batch is built.
pub struct TransactionColumns {
    columns: Vec<Builder>,
    rows: usize,
}

impl Default for TransactionColumns {
    fn default() -> Self {
        Self {
            columns: TRANSACTION_COLUMNS
                .iter()
                .map(|column| Builder::new(column.bronze))
                .collect(),
            rows: 0,
        }
    }
}

/// Writes into the builder of a column of the type the column table gives it; a column
/// whose type the decoder does not match is a programming error that every test finds.
macro_rules! put {
    ($columns:expr, $index:expr, $kind:ident, |$builder:ident| $append:expr) => {
        match &mut $columns[$index] {
            Builder::$kind($builder) => $append,
            _ => unreachable!("column {} is not of type {}", $index, stringify!($kind)),
        }
    };
}

impl TransactionColumns {
    /// Appends one decoded row and where it came from.
    pub fn append(&mut self, row: &Row<'_>, message: &SourceMessage) {
        let c = &mut self.columns;
        put!(c, SCHEMA_VERSION, Int32, |b| b
            .append_value(i32::from(row.schema_version)));
        put!(c, EVENT_ID, Text, |b| b.append_value(row.event_id()));
        put!(c, TRANSACTION_ID, Text, |b| b
            .append_value(&row.transaction_id));
        put!(c, STATUS, Text, |b| b.append_value(row.status.as_str()));
        put!(c, EVENT_TIME, Micros, |b| b
            .append_value(row.event_time_micros));
        put!(c, CUSTOMER_ID, Text, |b| b
            .append_option(row.customer_id.as_deref()));
        put!(c, MERCHANT_ID, Text, |b| b.append_value(&row.merchant_id));
        put!(c, MERCHANT_NAME, Text, |b| b
            .append_value(&row.merchant_name));
        put!(c, CATEGORY, Text, |b| b.append_value(&row.category));
        put!(c, AMOUNT, Amount, |b| b.append_value(row.amount_hundredths));
        put!(c, CURRENCY, Text, |b| b.append_value(row.currency.as_str()));
        put!(c, PAYMENT_METHOD, Text, |b| b
            .append_value(row.payment_method.as_str()));
        put!(c, CITY, Text, |b| b.append_value(&row.city));
        put!(c, STATE, Text, |b| b.append_value(&row.state));
        put!(c, COUNTRY, Text, |b| b.append_value(&row.country));
        put!(c, LATITUDE, Float64, |b| b.append_option(row.latitude));
        put!(c, LONGITUDE, Float64, |b| b.append_option(row.longitude));
        put!(c, IS_FRAUD, Boolean, |b| b.append_value(row.is_fraud));
        put!(c, SOURCE, Text, |b| b.append_value(row.source.as_str()));
        put!(c, KAFKA_PARTITION, Int32, |b| b
            .append_value(message.partition));
        put!(c, KAFKA_OFFSET, Int64, |b| b.append_value(message.offset));
        put!(c, KAFKA_TIMESTAMP, Millis, |b| b
            .append_option(message.timestamp_ms));
        self.rows += 1;
    }

    /// Appends an event the reference decoder ([`decode`]) accepted.
    pub fn append_event(&mut self, event: &PaymentEvent, message: &SourceMessage) {
        // decode() has checked that the amount fits.
        let hundredths = amount_mantissa(event).unwrap_or_default();
        self.append(&row::from_event(event, hundredths), message);
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as one record batch, stamped with `ingested_at` (µs since the epoch, UTC).
    pub fn finish(mut self, ingested_at: i64) -> RecordBatch {
        let rows = self.rows;
        put!(self.columns, INGESTED_AT, Micros, |b| b
            .append_value_n(ingested_at, rows));
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(schema::TRANSACTIONS.clone(), columns)
            .unwrap_or_else(|e| unreachable!("columns match the transactions schema: {e}"))
    }
}

/// Column builders for dead-letter records of one file.
pub struct DeadLetterColumns {
    topic: String,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    kafka_timestamp: TimestampMillisecondBuilder,
    kafka_key: BinaryBuilder,
    payload: BinaryBuilder,
    error_kind: StringBuilder,
    error: StringBuilder,
}

impl DeadLetterColumns {
    /// Builders for dead letters of `topic`.
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            kafka_partition: Int32Builder::new(),
            kafka_offset: Int64Builder::new(),
            kafka_timestamp: TimestampMillisecondBuilder::new(),
            kafka_key: BinaryBuilder::new(),
            payload: BinaryBuilder::new(),
            error_kind: StringBuilder::new(),
            error: StringBuilder::new(),
        }
    }

    /// Appends a message that could not be decoded, bytes untouched.
    pub fn append(&mut self, message: &SourceMessage, error: &DecodeError) {
        self.kafka_partition.append_value(message.partition);
        self.kafka_offset.append_value(message.offset);
        self.kafka_timestamp.append_option(message.timestamp_ms);
        self.kafka_key.append_option(message.key.as_deref());
        self.payload.append_option(message.payload.as_deref());
        self.error_kind.append_value(error.kind.as_str());
        self.error.append_value(&error.message);
    }

    /// Records appended so far.
    pub fn len(&self) -> usize {
        self.kafka_offset.len()
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records as one record batch, stamped with `ingested_at`.
    pub fn finish(mut self, ingested_at: i64) -> RecordBatch {
        let rows = self.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                &self.topic,
                rows,
            ))),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
            Arc::new(self.kafka_timestamp.finish().with_timezone("UTC")),
            Arc::new(self.kafka_key.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.error_kind.finish()),
            Arc::new(self.error.finish()),
            Arc::new(TimestampMicrosecondArray::from_value(ingested_at, rows).with_timezone("UTC")),
        ];
        RecordBatch::try_new(schema::DEAD_LETTERS.clone(), columns)
            .unwrap_or_else(|e| unreachable!("columns match the dead-letter schema: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{FaultInjector, FaultRates};
    use crate::synthetic::SyntheticGenerator;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Decimal128Type;

    const MAX: usize = 1 << 20;

    fn good_json() -> serde_json::Value {
        let event = SyntheticGenerator::new(1, 0.0).next_payment(chrono::Utc::now());
        serde_json::to_value(&event).unwrap()
    }

    fn kind_of(payload: &[u8]) -> DeadLetterKind {
        decode(Some(payload), MAX).unwrap_err().kind
    }

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut json = good_json();
        json[field] = value;
        json.to_string().into_bytes()
    }

    #[test]
    fn decodes_a_good_event() {
        let json = good_json();
        let event = decode(Some(json.to_string().as_bytes()), MAX).unwrap();
        assert_eq!(event.transaction_id, json["transaction_id"]);
    }

    #[test]
    fn classifies_every_kind_of_bad_message() {
        assert_eq!(
            decode(None, MAX).unwrap_err().kind,
            DeadLetterKind::EmptyPayload
        );
        assert_eq!(kind_of(b""), DeadLetterKind::EmptyPayload);
        assert_eq!(
            kind_of(b"{\"schema_version\": 1, \"eve"),
            DeadLetterKind::InvalidJson
        );
        assert_eq!(kind_of(b"not json"), DeadLetterKind::InvalidJson);
        assert_eq!(
            kind_of(b"{\"a\": \"\xff\xfe\"}"),
            DeadLetterKind::InvalidUtf8
        );
        let mut missing = good_json();
        missing.as_object_mut().unwrap().remove("amount");
        assert_eq!(
            kind_of(missing.to_string().as_bytes()),
            DeadLetterKind::MissingField
        );
        assert_eq!(
            kind_of(&with("is_fraud", "maybe".into())),
            DeadLetterKind::WrongType
        );
        assert_eq!(
            kind_of(&with("amount", 12.5.into())),
            DeadLetterKind::WrongType
        );
        assert_eq!(
            kind_of(&with("event_time", 1_700_000_000.into())),
            DeadLetterKind::WrongType
        );
        assert_eq!(
            kind_of(&with("surprise", 1.into())),
            DeadLetterKind::UnknownField
        );
        assert_eq!(
            kind_of(&with("status", "REFUNDED".into())),
            DeadLetterKind::InvalidValue
        );
        assert_eq!(
            kind_of(&with("amount", "1.005".into())),
            DeadLetterKind::InvalidValue
        );
        assert_eq!(
            kind_of(&with("schema_version", 2.into())),
            DeadLetterKind::InvalidValue
        );
        assert_eq!(
            kind_of(&with("amount", "12345678901234567890.00".into())),
            DeadLetterKind::InvalidValue
        );
    }

    #[test]
    fn oversized_payloads_and_fields_are_dead_letters() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let error = decode(Some(&with("merchant_name", long.into())), MAX).unwrap_err();
        assert_eq!(error.kind, DeadLetterKind::TooLarge);
        assert!(error.message.contains("merchant_name"), "{}", error.message);
        let payload = good_json().to_string().into_bytes();
        let error = decode(Some(&payload), 100).unwrap_err();
        assert_eq!(error.kind, DeadLetterKind::TooLarge);
    }

    #[test]
    fn text_postgresql_cannot_store_is_a_dead_letter() {
        let error = decode(Some(&with("merchant_name", "Ac\u{0}me".into())), MAX).unwrap_err();
        assert_eq!(error.kind, DeadLetterKind::InvalidValue);
        assert!(
            error.message.contains("merchant_name contains a NUL"),
            "{}",
            error.message
        );
        // Other control characters and right-to-left marks are text PostgreSQL stores.
        assert!(decode(Some(&with("city", "Pune\u{1}\u{202e}".into())), MAX).is_ok());
    }

    #[test]
    fn every_undecodable_fault_of_the_producer_is_a_dead_letter() {
        let rates = FaultRates {
            malformed_json: 0.5,
            wrong_type: 0.5,
            ..FaultRates::default()
        };
        let mut injector = FaultInjector::new(rates, 9);
        let mut generator = SyntheticGenerator::new(9, 0.0);
        for _ in 0..500 {
            for encoded in injector.encode(generator.next_payment(chrono::Utc::now())) {
                assert_eq!(
                    decode(Some(&encoded.payload), MAX).is_err(),
                    !encoded.faults.is_empty()
                );
            }
        }
    }

    #[test]
    fn builds_rows_with_exact_amounts_and_provenance() {
        let json = with("amount", "1234567.89".into());
        let event = decode(Some(&json), MAX).unwrap();
        let message = SourceMessage {
            partition: 3,
            offset: 77,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"k".to_vec()),
            payload: Some(json),
        };
        let mut columns = TransactionColumns::default();
        columns.append_event(&event, &message);
        let batch = columns.finish(5);
        assert_eq!(batch.num_rows(), 1);
        let amount = batch
            .column_by_name("amount")
            .unwrap()
            .as_primitive::<Decimal128Type>();
        assert_eq!(amount.value_as_string(0), "1234567.89");
        let offset = batch.column_by_name("kafka_offset").unwrap();
        assert_eq!(
            offset
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(0),
            77
        );

        let mut dead = DeadLetterColumns::new("transactions");
        let error = decode(Some(b"{"), MAX).unwrap_err();
        dead.append(&message, &error);
        let batch = dead.finish(5);
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(
            batch
                .column_by_name("error_kind")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "invalid_json"
        );
    }
}
