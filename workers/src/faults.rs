//! Fault injection: deliberately bad messages, to prove the lower layers handle them.
//!
//! Each fault has its own rate (0 by default). Two kinds of fault make the message
//! undecodable and must end in the streamer's dead-letter queue (malformed JSON, a wrong
//! type); two make a decodable event that the loader must reject (a non-positive amount, a
//! null customer); and a duplicate re-sends the same message, which the lower layers must
//! de-duplicate.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;

use crate::event::PaymentEvent;

/// Rates, each between 0 and 1, of every fault.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Share of messages whose payload is cut short, so it is not valid JSON.
    pub malformed_json: f64,
    /// Share of messages with a field of the wrong JSON type.
    pub wrong_type: f64,
    /// Share of messages sent twice.
    pub duplicate: f64,
    /// Share of events whose amount is zero or negative.
    pub non_positive_amount: f64,
    /// Share of events without a customer id.
    pub null_customer_id: f64,
}

impl FaultRates {
    /// Checks every rate is within 0..=1, naming the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("malformed-json", self.malformed_json),
            ("wrong-type", self.wrong_type),
            ("duplicate", self.duplicate),
            ("non-positive-amount", self.non_positive_amount),
            ("null-customer-id", self.null_customer_id),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "fault rate {name} must be between 0 and 1, got {rate}"
                ));
            }
        }
        Ok(())
    }
}

/// A fault that was injected, as counted in metrics (label `fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The payload is not valid JSON.
    MalformedJson,
    /// A field has the wrong JSON type.
    WrongType,
    /// The message was sent a second time.
    Duplicate,
    /// The amount is zero or negative.
    NonPositiveAmount,
    /// The customer id is null.
    NullCustomerId,
}

impl Fault {
    /// Every fault, in a fixed order.
    pub const ALL: [Fault; 5] = [
        Fault::MalformedJson,
        Fault::WrongType,
        Fault::Duplicate,
        Fault::NonPositiveAmount,
        Fault::NullCustomerId,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::WrongType => "wrong_type",
            Self::Duplicate => "duplicate",
            Self::NonPositiveAmount => "non_positive_amount",
            Self::NullCustomerId => "null_customer_id",
        }
    }
}

/// One encoded message and the faults injected into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The JSON payload (or what is left of it).
    pub payload: Vec<u8>,
    /// Faults in this message.
    pub faults: Vec<Fault>,
}

/// Applies [`FaultRates`] to events as they are encoded.
pub struct FaultInjector {
    rates: FaultRates,
    rng: StdRng,
}

impl FaultInjector {
    /// An injector with `rates`, deterministic for `seed`.
    pub fn new(rates: FaultRates, seed: u64) -> Self {
        Self {
            rates,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Encodes `event` into one message, or two when it is duplicated; the second copy is
    /// byte-identical to the first.
    pub fn encode(&mut self, mut event: PaymentEvent) -> Vec<Encoded> {
        let mut faults = Vec::new();
        if self.hit(self.rates.non_positive_amount) {
            event.amount = if self.rng.random_bool(0.5) {
                Decimal::new(0, 2)
            } else {
                -event.amount
            };
            faults.push(Fault::NonPositiveAmount);
        }
        if self.hit(self.rates.null_customer_id) {
            event.customer_id = None;
            faults.push(Fault::NullCustomerId);
        }
        let mut payload = event.to_json();
        if self.hit(self.rates.wrong_type) {
            payload = self.wrong_type(&event);
            faults.push(Fault::WrongType);
        }
        if self.hit(self.rates.malformed_json) {
            // Cut inside the object so that the closing brace is always missing.
            let cut = self.rng.random_range(1..payload.len() - 1);
            payload.truncate(cut);
            faults.push(Fault::MalformedJson);
        }
        let first = Encoded { payload, faults };
        if self.hit(self.rates.duplicate) {
            let mut second = first.clone();
            second.faults.push(Fault::Duplicate);
            vec![first, second]
        } else {
            vec![first]
        }
    }

    fn hit(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random_bool(rate.min(1.0))
    }

    /// Valid JSON in which one field has a type the schema does not allow.
    fn wrong_type(&mut self, event: &PaymentEvent) -> Vec<u8> {
        let mut json = serde_json::to_value(event)
            .unwrap_or_else(|e| unreachable!("payment event converts to JSON: {e}"));
        let (field, value) = match self.rng.random_range(0..4) {
            0 => (
                "amount",
                serde_json::json!({ "value": event.amount.to_string() }),
            ),
            1 => ("is_fraud", serde_json::json!("maybe")),
            2 => (
                "event_time",
                serde_json::json!(event.event_time.timestamp()),
            ),
            _ => ("schema_version", serde_json::json!("one")),
        };
        json[field] = value;
        json.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticGenerator;

    fn encode_many(rates: FaultRates, n: usize) -> Vec<Encoded> {
        let mut generator = SyntheticGenerator::new(5, 0.0);
        let mut injector = FaultInjector::new(rates, 5);
        (0..n)
            .flat_map(|_| injector.encode(generator.next_payment(chrono::Utc::now())))
            .collect()
    }

    #[test]
    fn no_faults_by_default() {
        let encoded = encode_many(FaultRates::default(), 500);
        assert_eq!(encoded.len(), 500);
        for message in encoded {
            assert!(message.faults.is_empty());
            let event = PaymentEvent::from_json(&message.payload).unwrap();
            assert!(event.amount > Decimal::ZERO && event.customer_id.is_some());
        }
    }

    #[test]
    fn undecodable_faults_do_not_decode_and_decodable_ones_do() {
        let rates = FaultRates {
            malformed_json: 0.1,
            wrong_type: 0.1,
            duplicate: 0.1,
            non_positive_amount: 0.1,
            null_customer_id: 0.1,
        };
        let encoded = encode_many(rates, 2_000);
        for fault in Fault::ALL {
            let count = encoded.iter().filter(|m| m.faults.contains(&fault)).count();
            assert!((120..300).contains(&count), "{fault:?}: {count} of ~2000");
        }
        for message in &encoded {
            let decoded = PaymentEvent::from_json(&message.payload);
            let undecodable = message.faults.contains(&Fault::MalformedJson)
                || message.faults.contains(&Fault::WrongType);
            assert_eq!(decoded.is_err(), undecodable, "{:?}", message.faults);
            if let Ok(event) = decoded {
                assert_eq!(
                    event.amount <= Decimal::ZERO,
                    message.faults.contains(&Fault::NonPositiveAmount)
                );
                assert_eq!(
                    event.customer_id.is_none(),
                    message.faults.contains(&Fault::NullCustomerId)
                );
            }
        }
        // A duplicate is byte-identical to the message before it.
        for (i, message) in encoded.iter().enumerate() {
            if message.faults.contains(&Fault::Duplicate) {
                assert_eq!(message.payload, encoded[i - 1].payload);
            }
        }
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused_by_name() {
        let rates = FaultRates {
            duplicate: 1.5,
            ..FaultRates::default()
        };
        assert!(rates.validate().unwrap_err().contains("duplicate"));
    }
}
