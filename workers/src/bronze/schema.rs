//! Arrow schemas of the bronze layer: one for payment events, one for dead letters.
//!
//! The transaction schema comes from [`TRANSACTION_COLUMNS`], the one declaration of a payment
//! event's columns in both bronze and silver. Column names are part of the product's
//! interface: the loader and any external reader depend on them.

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

/// The Arrow type of a bronze column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BronzeType {
    /// `Int32`.
    Int32,
    /// `Int64`.
    Int64,
    /// `Utf8`.
    Text,
    /// `Boolean`.
    Boolean,
    /// `Float64`.
    Float64,
    /// `Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE)`.
    Amount,
    /// Microseconds since the epoch, UTC.
    TimestampMicros,
    /// Milliseconds since the epoch, UTC (Kafka's resolution).
    TimestampMillis,
}

impl BronzeType {
    /// The Arrow data type.
    pub fn data_type(self) -> DataType {
        match self {
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Text => DataType::Utf8,
            Self::Boolean => DataType::Boolean,
            Self::Float64 => DataType::Float64,
            Self::Amount => DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE),
            Self::TimestampMicros => utc_micros(),
            Self::TimestampMillis => utc_millis(),
        }
    }
}

/// Whether a column may be null, in bronze and in silver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nullability {
    /// Never null.
    Required,
    /// May be null in both layers.
    Optional,
    /// May be null in bronze, which keeps whatever decodes; the loader rejects such rows, so
    /// silver never holds a null.
    RequiredInSilver,
}

/// One column of a payment event as bronze stores it and `raw.transactions` loads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The name, the same in both layers.
    pub name: &'static str,
    /// Its Arrow type in bronze.
    pub bronze: BronzeType,
    /// Its type in `raw.transactions`, as `information_schema.columns.data_type` names it.
    pub silver: &'static str,
    /// Where it may be null.
    pub nullability: Nullability,
}

impl Column {
    const fn new(
        name: &'static str,
        bronze: BronzeType,
        silver: &'static str,
        nullability: Nullability,
    ) -> Self {
        Self {
            name,
            bronze,
            silver,
            nullability,
        }
    }

    /// Whether bronze may hold a null in it.
    pub fn nullable_in_bronze(&self) -> bool {
        self.nullability != Nullability::Required
    }
}

/// The columns of a payment event in bronze order: the event field by field (see
/// `docs/events.md`), then where it came from in Kafka and when it was ingested. This is the
/// one list: the bronze schema, the loader's reading, its `COPY` and its rejected rows follow
/// it, and a test holds it against `raw.transactions`. The decoder's builders are made from
/// it, one per column of its type, and find their columns with [`column_index`].
pub const TRANSACTION_COLUMNS: [Column; 23] = {
    use BronzeType::*;
    use Nullability::*;
    [
        Column::new("schema_version", Int32, "integer", Required),
        Column::new("event_id", Text, "uuid", Required),
        Column::new("transaction_id", Text, "text", Required),
        Column::new("status", Text, "text", Required),
        Column::new(
            "event_time",
            TimestampMicros,
            "timestamp with time zone",
            Required,
        ),
        Column::new("customer_id", Text, "text", RequiredInSilver),
        Column::new("merchant_id", Text, "text", Required),
        Column::new("merchant_name", Text, "text", Required),
        Column::new("category", Text, "text", Required),
        Column::new("amount", Amount, "numeric", Required),
        Column::new("currency", Text, "text", Required),
        Column::new("payment_method", Text, "text", Required),
        Column::new("city", Text, "text", Required),
        Column::new("state", Text, "text", Required),
        Column::new("country", Text, "text", Required),
        Column::new("latitude", Float64, "double precision", Optional),
        Column::new("longitude", Float64, "double precision", Optional),
        Column::new("is_fraud", Boolean, "boolean", Required),
        Column::new("source", Text, "text", Required),
        Column::new("kafka_partition", Int32, "integer", Required),
        Column::new("kafka_offset", Int64, "bigint", Required),
        Column::new(
            "kafka_timestamp",
            TimestampMillis,
            "timestamp with time zone",
            Optional,
        ),
        Column::new(
            "ingested_at",
            TimestampMicros,
            "timestamp with time zone",
            Required,
        ),
    ]
};

/// The position of the column `name` in [`TRANSACTION_COLUMNS`]; evaluated at compile time
/// where used in a constant, so that a name missing from the table fails the build.
pub const fn column_index(name: &str) -> usize {
    let mut index = 0;
    while index < TRANSACTION_COLUMNS.len() {
        let column = TRANSACTION_COLUMNS[index].name.as_bytes();
        let wanted = name.as_bytes();
        if column.len() == wanted.len() {
            let mut at = 0;
            while at < wanted.len() && column[at] == wanted[at] {
                at += 1;
            }
            if at == wanted.len() {
                return index;
            }
        }
        index += 1;
    }
    panic!("no such column in TRANSACTION_COLUMNS");
}

/// The schema of `bronze/transactions` files, from [`TRANSACTION_COLUMNS`].
pub static TRANSACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields: Vec<Field> = TRANSACTION_COLUMNS
        .iter()
        .map(|column| {
            Field::new(
                column.name,
                column.bronze.data_type(),
                column.nullable_in_bronze(),
            )
        })
        .collect();
    Arc::new(Schema::new(fields))
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
