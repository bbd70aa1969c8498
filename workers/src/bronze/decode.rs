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

use super::schema::{self, AMOUNT_PRECISION, AMOUNT_SCALE};
use crate::event::PaymentEvent;
use crate::source::SourceMessage;

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

/// Column builders for `bronze/transactions` rows of one file.
pub struct TransactionColumns {
    schema_version: Int32Builder,
    event_id: StringBuilder,
    transaction_id: StringBuilder,
    status: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    customer_id: StringBuilder,
    merchant_id: StringBuilder,
    merchant_name: StringBuilder,
    category: StringBuilder,
    amount: Decimal128Builder,
    currency: StringBuilder,
    payment_method: StringBuilder,
    city: StringBuilder,
    state: StringBuilder,
    country: StringBuilder,
    latitude: Float64Builder,
    longitude: Float64Builder,
    is_fraud: BooleanBuilder,
    source: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    kafka_timestamp: TimestampMillisecondBuilder,
}

impl Default for TransactionColumns {
    fn default() -> Self {
        Self {
            schema_version: Int32Builder::new(),
            event_id: StringBuilder::new(),
            transaction_id: StringBuilder::new(),
            status: StringBuilder::new(),
            event_time: TimestampMicrosecondBuilder::new(),
            customer_id: StringBuilder::new(),
            merchant_id: StringBuilder::new(),
            merchant_name: StringBuilder::new(),
            category: StringBuilder::new(),
            amount: Decimal128Builder::new(),
            currency: StringBuilder::new(),
            payment_method: StringBuilder::new(),
            city: StringBuilder::new(),
            state: StringBuilder::new(),
            country: StringBuilder::new(),
            latitude: Float64Builder::new(),
            longitude: Float64Builder::new(),
            is_fraud: BooleanBuilder::new(),
            source: StringBuilder::new(),
            kafka_partition: Int32Builder::new(),
            kafka_offset: Int64Builder::new(),
            kafka_timestamp: TimestampMillisecondBuilder::new(),
        }
    }
}

impl TransactionColumns {
    /// Appends one decoded event and where it came from.
    pub fn append(&mut self, event: &PaymentEvent, message: &SourceMessage) {
        self.schema_version
            .append_value(i32::from(event.schema_version));
        self.event_id
            .append_value(event.event_id.hyphenated().to_string());
        self.transaction_id.append_value(&event.transaction_id);
        self.status.append_value(event.status.as_str());
        self.event_time
            .append_value(event.event_time.timestamp_micros());
        self.customer_id.append_option(event.customer_id.as_deref());
        self.merchant_id.append_value(&event.merchant_id);
        self.merchant_name.append_value(&event.merchant_name);
        self.category.append_value(&event.category);
        // decode() has checked that the amount fits.
        self.amount
            .append_value(amount_mantissa(event).unwrap_or_default());
        self.currency.append_value(event.currency.as_str());
        self.payment_method
            .append_value(event.payment_method.as_str());
        self.city.append_value(&event.city);
        self.state.append_value(&event.state);
        self.country.append_value(&event.country);
        self.latitude.append_option(event.latitude);
        self.longitude.append_option(event.longitude);
        self.is_fraud.append_value(event.is_fraud);
        self.source.append_value(event.source.as_str());
        self.kafka_partition.append_value(message.partition);
        self.kafka_offset.append_value(message.offset);
        self.kafka_timestamp.append_option(message.timestamp_ms);
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.kafka_offset.len()
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as one record batch, stamped with `ingested_at` (µs since the epoch, UTC).
    pub fn finish(mut self, ingested_at: i64) -> RecordBatch {
        let rows = self.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.schema_version.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.transaction_id.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.event_time.finish().with_timezone("UTC")),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.merchant_id.finish()),
            Arc::new(self.merchant_name.finish()),
            Arc::new(self.category.finish()),
            Arc::new(
                self.amount
                    .finish()
                    .with_precision_and_scale(AMOUNT_PRECISION, AMOUNT_SCALE)
                    .unwrap_or_else(|e| unreachable!("valid decimal type: {e}")),
            ),
            Arc::new(self.currency.finish()),
            Arc::new(self.payment_method.finish()),
            Arc::new(self.city.finish()),
            Arc::new(self.state.finish()),
            Arc::new(self.country.finish()),
            Arc::new(self.latitude.finish()),
            Arc::new(self.longitude.finish()),
            Arc::new(self.is_fraud.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
            Arc::new(self.kafka_timestamp.finish().with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from_value(ingested_at, rows).with_timezone("UTC")),
        ];
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
        columns.append(&event, &message);
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
