//! Arrow schemas of the bronze layer: one for payment events, one for dead letters.
//!
//! The transaction schema follows the payment event field by field (see `docs/events.md`)
//! and adds where each row came from in Kafka and when it was ingested. Column names are part
//! of the product's interface: the loader and any external reader depend on them.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Precision of bronze amounts: wide enough for any amount the wire format can carry with
/// two decimal places, so bronze never rejects a decodable amount (silver checks ranges).
pub const AMOUNT_PRECISION: u8 = 18;
/// Scale of amounts: two decimal places.
pub const AMOUNT_SCALE: i8 = 2;

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utc_millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The schema of `bronze/transactions` files.
pub static TRANSACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("schema_version", DataType::Int32, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("event_time", utc_micros(), false),
        Field::new("customer_id", DataType::Utf8, true),
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new("merchant_name", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new(
            "amount",
            DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE),
            false,
        ),
        Field::new("currency", DataType::Utf8, false),
        Field::new("payment_method", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("latitude", DataType::Float64, true),
        Field::new("longitude", DataType::Float64, true),
        Field::new("is_fraud", DataType::Boolean, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", utc_millis(), true),
        Field::new("ingested_at", utc_micros(), false),
    ]))
});

/// The schema of `dead_letter/transactions` files: the message as Kafka delivered it and why
/// it could not be decoded.
pub static DEAD_LETTERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", utc_millis(), true),
        Field::new("kafka_key", DataType::Binary, true),
        Field::new("payload", DataType::Binary, true),
        Field::new("error_kind", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("ingested_at", utc_micros(), false),
    ]))
});
