//! The payment event: the one message type that flows through the `transactions` topic.
//!
//! The wire format is JSON, produced and parsed by serde from [`PaymentEvent`], so the
//! producer, the streamer's decoder and the documentation (`docs/events.md`) share one
//! definition. Amounts travel as decimal strings with two places (`"1250.00"`) so that no
//! float ever touches money.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of the event layout written by this build. Bumped on any change a consumer
/// must know about; consumers accept every version up to their own.
pub const SCHEMA_VERSION: u16 = 1;

/// One payment event: a new payment, or a later status change of the same payment.
///
/// A payment and its settlement share `transaction_id` (and therefore the Kafka key and
/// partition) and differ in `event_id`, `status` and `event_time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentEvent {
    /// Layout version of this event, see [`SCHEMA_VERSION`].
    pub schema_version: u16,
    /// Unique per message; a re-sent message keeps its `event_id`, which is how the
    /// lower layers recognise duplicates.
    pub event_id: Uuid,
    /// The payment this event belongs to; the Kafka message key.
    pub transaction_id: String,
    /// Status of the payment as of `event_time`.
    pub status: PaymentStatus,
    /// When the payment (or its status change) happened, UTC.
    pub event_time: DateTime<Utc>,
    /// The paying customer. Never null from a correct producer; the loader rejects rows
    /// without it, but bronze keeps them, so the wire format allows null.
    pub customer_id: Option<String>,
    /// Stable identifier of the merchant.
    pub merchant_id: String,
    /// Display name of the merchant.
    pub merchant_name: String,
    /// Spending category, for example `grocery_pos` or `food_delivery`.
    pub category: String,
    /// Amount in `currency`, exactly two decimal places. The loader rejects non-positive
    /// amounts; the wire format carries them so that bronze stays a faithful record.
    #[serde(with = "amount")]
    pub amount: Decimal,
    /// Currency of `amount`.
    pub currency: Currency,
    /// How the customer paid.
    pub payment_method: PaymentMethod,
    /// City of the customer at payment time.
    pub city: String,
    /// State (India) or two-letter state code (United States).
    pub state: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// Latitude of the customer, WGS 84 degrees.
    pub latitude: Option<f64>,
    /// Longitude of the customer, WGS 84 degrees.
    pub longitude: Option<f64>,
    /// Whether the payment is labelled fraudulent.
    pub is_fraud: bool,
    /// Where the event comes from.
    pub source: EventSource,
}

/// Status of a payment. `Pending` payments settle later to `Success` or `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Authorised, waiting for the bank's settlement.
    Pending,
    /// Settled successfully.
    Success,
    /// Declined or reversed.
    Failed,
}

/// Currency of an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    /// Indian rupee.
    Inr,
    /// United States dollar (the Kaggle rows).
    Usd,
}

/// How a payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PaymentMethod {
    /// Unified Payments Interface.
    Upi,
    /// Credit or debit card; every Kaggle row.
    Card,
    /// Internet banking.
    Netbanking,
    /// Prepaid wallet.
    Wallet,
}

/// Origin of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    /// A replayed row of the Kaggle credit-card transactions file.
    Kaggle,
    /// Generated Indian payment.
    Synthetic,
}

impl PaymentStatus {
    /// The wire name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
        }
    }
}

impl Currency {
    /// The wire name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inr => "INR",
            Self::Usd => "USD",
        }
    }
}

impl PaymentMethod {
    /// The wire name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upi => "UPI",
            Self::Card => "CARD",
            Self::Netbanking => "NETBANKING",
            Self::Wallet => "WALLET",
        }
    }
}

impl EventSource {
    /// The wire name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kaggle => "kaggle",
            Self::Synthetic => "synthetic",
        }
    }
}

impl PaymentEvent {
    /// Serialises the event as its JSON wire form.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising this type cannot fail: every field is a string, number, bool or a
        // unit enum, and no map has non-string keys.
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("payment event serialises: {e}"))
    }

    /// Parses an event from its JSON wire form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Serde for amounts: a decimal string with exactly two places on output; on input a decimal
/// string with at most two places. JSON numbers are refused because a parser may have
/// rounded them through a float already.
pub mod amount {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `value` as a string with two decimal places.
    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        let mut rounded = value.round_dp(2);
        rounded.rescale(2);
        serializer.collect_str(&rounded)
    }

    /// Reads a decimal string with at most two decimal places.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(D::Error::custom)
    }

    /// Parses a decimal amount with at most two decimal places, normalised to two.
    pub fn parse(text: &str) -> Result<Decimal, String> {
        let mut value: Decimal = text
            .trim()
            .parse()
            .map_err(|e| format!("amount {text:?} is not a decimal number: {e}"))?;
        if value.scale() > 2 {
            return Err(format!("amount {text:?} has more than two decimal places"));
        }
        value.rescale(2);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn sample() -> PaymentEvent {
        PaymentEvent {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::from_u128(7),
            transaction_id: "TXN-1".into(),
            status: PaymentStatus::Pending,
            event_time: Utc.with_ymd_and_hms(2026, 11, 2, 10, 30, 0).unwrap(),
            customer_id: Some("CUST-1".into()),
            merchant_id: "MER-1".into(),
            merchant_name: "Sharma Stores".into(),
            category: "grocery".into(),
            amount: Decimal::new(125_050, 2),
            currency: Currency::Inr,
            payment_method: PaymentMethod::Upi,
            city: "Pune".into(),
            state: "Maharashtra".into(),
            country: "IN".into(),
            latitude: Some(18.52),
            longitude: Some(73.86),
            is_fraud: false,
            source: EventSource::Synthetic,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let event = sample();
        let back = PaymentEvent::from_json(&event.to_json()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn writes_amount_as_two_place_string_and_enums_by_wire_name() {
        let json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(json["amount"], "1250.50");
        assert_eq!(json["status"], "PENDING");
        assert_eq!(json["currency"], "INR");
        assert_eq!(json["payment_method"], "UPI");
        assert_eq!(json["source"], "synthetic");
        // as_str() and serde agree on every wire name.
        assert_eq!(json["currency"], Currency::Inr.as_str());
        for method in [
            PaymentMethod::Upi,
            PaymentMethod::Card,
            PaymentMethod::Netbanking,
            PaymentMethod::Wallet,
        ] {
            assert_eq!(serde_json::to_value(method).unwrap(), method.as_str());
        }
        for status in [
            PaymentStatus::Pending,
            PaymentStatus::Success,
            PaymentStatus::Failed,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(
            serde_json::to_value(Currency::Usd).unwrap(),
            Currency::Usd.as_str()
        );
        assert_eq!(json["event_time"], "2026-11-02T10:30:00Z");
    }

    #[test]
    fn refuses_amounts_as_numbers_or_with_three_places() {
        let mut json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        json["amount"] = serde_json::json!(12.5);
        assert!(PaymentEvent::from_json(json.to_string().as_bytes()).is_err());
        json["amount"] = serde_json::json!("12.505");
        let err = PaymentEvent::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("more than two decimal places"),
            "{err}"
        );
    }

    #[test]
    fn accepts_null_customer_and_non_positive_amount_for_bronze() {
        let mut json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        json["customer_id"] = serde_json::Value::Null;
        json["amount"] = serde_json::json!("-3.00");
        let event = PaymentEvent::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(event.customer_id, None);
        assert_eq!(event.amount, Decimal::new(-300, 2));
    }

    #[test]
    fn refuses_unknown_fields_and_missing_fields() {
        let mut json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        json["surprise"] = serde_json::json!(1);
        assert!(PaymentEvent::from_json(json.to_string().as_bytes()).is_err());
        let mut json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        json.as_object_mut().unwrap().remove("transaction_id");
        let err = PaymentEvent::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("transaction_id"), "{err}");
    }
}
