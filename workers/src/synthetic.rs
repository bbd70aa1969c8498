//! Synthetic Indian payments.
//!
//! A fixed population of customers and merchants is drawn once from the seed; payments then
//! pick a customer, a merchant and a method and draw an amount from a log-normal
//! distribution per method, which gives the skew of real payment data: many small UPI
//! payments and a long tail of large card and net-banking ones. The same seed always gives
//! the same payments.

use std::sync::LazyLock;

use chrono::{DateTime, Timelike, Utc};
use fake::Fake;
use fake::faker::company::en::CompanyName;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::event::{self, Currency, EventSource, PaymentEvent, PaymentMethod, PaymentStatus};

/// The Indian cities payments happen in, with their tier; the transform layer loads the same
/// file as a seed table, so generator and warehouse agree on tiers.
pub const CITIES_CSV: &str = include_str!("../../sql/seeds/indian_cities.csv");

/// One row of [`CITIES_CSV`].
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct City {
    /// City name.
    pub city: String,
    /// State or union territory.
    pub state: String,
    /// 1 (metro) to 3 (small city).
    pub tier: u8,
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
    /// Relative share of customers living there.
    pub population_weight: u32,
}

/// The cities of [`CITIES_CSV`], parsed once.
pub static CITIES: LazyLock<Vec<City>> = LazyLock::new(|| {
    csv::Reader::from_reader(CITIES_CSV.as_bytes())
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("sql/seeds/indian_cities.csv is malformed: {e}"))
});

/// Spending categories with their share of payments, a typical-amount multiplier, and the
/// word used in merchant names.
const CATEGORIES: [(&str, u32, f64, &str); 10] = [
    ("grocery", 22, 1.0, "Kirana Store"),
    ("food_delivery", 18, 0.6, "Foods"),
    ("fuel", 10, 1.6, "Fuels"),
    ("utilities", 8, 2.0, "Utilities"),
    ("fashion", 8, 2.5, "Fashions"),
    ("entertainment", 8, 1.2, "Entertainment"),
    ("healthcare", 7, 1.8, "Medicals"),
    ("electronics", 6, 6.0, "Electronics"),
    ("travel", 7, 5.0, "Travels"),
    ("education", 6, 4.0, "Academy"),
];

/// Surnames for family-run merchants.
const SURNAMES: [&str; 20] = [
    "Sharma", "Verma", "Gupta", "Patel", "Reddy", "Iyer", "Nair", "Khan", "Singh", "Das", "Mehta",
    "Joshi", "Kulkarni", "Banerjee", "Rao", "Agarwal", "Kapoor", "Malhotra", "Bose", "Menon",
];

/// Payment methods: share of payments, and median amount in rupees and spread (sigma of the
/// log) for a category multiplier of 1.
const METHODS: [(PaymentMethod, u32, f64, f64); 4] = [
    (PaymentMethod::Upi, 55, 250.0, 1.0),
    (PaymentMethod::Card, 25, 1500.0, 0.9),
    (PaymentMethod::Wallet, 12, 180.0, 0.8),
    (PaymentMethod::Netbanking, 8, 4000.0, 1.0),
];

/// Smallest and largest synthetic amount, in paise.
const AMOUNT_RANGE_PAISE: (i64, i64) = (100, 50_000_000);

/// Sizes of the generated populations.
const CUSTOMERS: usize = 20_000;
const MERCHANTS: usize = 1_000;

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    home_city: usize,
}

#[derive(Debug, Clone)]
struct Merchant {
    id: String,
    name: String,
    category: usize,
}

/// Makes synthetic Indian payments, deterministically for a seed.
pub struct SyntheticGenerator {
    rng: StdRng,
    customers: Vec<Customer>,
    merchants: Vec<Merchant>,
    cities: WeightedIndex<u32>,
    methods: WeightedIndex<u32>,
    /// Share of payments labelled fraudulent, before the risk factors.
    fraud_rate: f64,
}

impl SyntheticGenerator {
    /// A generator whose populations and payments follow from `seed`.
    pub fn new(seed: u64, fraud_rate: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let cities = WeightedIndex::new(CITIES.iter().map(|c| c.population_weight))
            .unwrap_or_else(|e| panic!("city weights are invalid: {e}"));
        let categories = WeightedIndex::new(CATEGORIES.iter().map(|c| c.1))
            .unwrap_or_else(|e| panic!("category weights are invalid: {e}"));
        let methods = WeightedIndex::new(METHODS.iter().map(|m| m.1))
            .unwrap_or_else(|e| panic!("method weights are invalid: {e}"));
        let customers = (0..CUSTOMERS)
            .map(|i| Customer {
                id: format!("CUST-{i:06}"),
                home_city: rng.sample(&cities),
            })
            .collect();
        let merchants = (0..MERCHANTS)
            .map(|i| {
                let category = rng.sample(&categories);
                Merchant {
                    id: format!("MER-{i:05}"),
                    name: merchant_name(&mut rng, category),
                    category,
                }
            })
            .collect();
        Self {
            rng,
            customers,
            merchants,
            cities,
            methods,
            fraud_rate,
        }
    }

    /// The next payment, settled (`SUCCESS`), at `event_time`.
    pub fn next_payment(&mut self, event_time: DateTime<Utc>) -> PaymentEvent {
        let rng = &mut self.rng;
        let customer = &self.customers[rng.random_range(0..self.customers.len())];
        let merchant = &self.merchants[rng.random_range(0..self.merchants.len())];
        // Most payments happen in the customer's home city; some while travelling.
        let city_index = if rng.random_bool(0.9) {
            customer.home_city
        } else {
            rng.sample(&self.cities)
        };
        let city = &CITIES[city_index];
        let (method, _, median, sigma) = METHODS[rng.sample(&self.methods)];
        let (category, _, multiplier, _) = CATEGORIES[merchant.category];
        let amount = log_normal_amount(rng, median * multiplier, sigma);
        let is_fraud = rng.random_bool(fraud_probability(
            self.fraud_rate,
            amount,
            event_time.hour(),
        ));
        PaymentEvent {
            schema_version: event::SCHEMA_VERSION,
            event_id: random_uuid(rng),
            transaction_id: random_uuid(rng).simple().to_string(),
            status: PaymentStatus::Success,
            event_time,
            customer_id: Some(customer.id.clone()),
            merchant_id: merchant.id.clone(),
            merchant_name: merchant.name.clone(),
            category: category.to_owned(),
            amount,
            currency: Currency::Inr,
            payment_method: method,
            city: city.city.clone(),
            state: city.state.clone(),
            country: "IN".to_owned(),
            // Jitter within a few kilometres of the city centre.
            latitude: Some(round4(city.latitude + rng.random_range(-0.05..0.05))),
            longitude: Some(round4(city.longitude + rng.random_range(-0.05..0.05))),
            is_fraud,
            source: EventSource::Synthetic,
        }
    }
}

/// A random (version 4) UUID drawn from `rng`, so that ids are reproducible.
pub fn random_uuid<R: Rng + ?Sized>(rng: &mut R) -> Uuid {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn merchant_name(rng: &mut StdRng, category: usize) -> String {
    let word = CATEGORIES[category].3;
    if rng.random_bool(0.6) {
        format!("{} {word}", SURNAMES[rng.random_range(0..SURNAMES.len())])
    } else {
        let company: String = CompanyName().fake_with_rng(rng);
        format!("{company} {word} India")
    }
}

/// Draws a log-normal amount with the given median (rupees) and sigma, in whole paise.
fn log_normal_amount(rng: &mut StdRng, median: f64, sigma: f64) -> Decimal {
    // Box-Muller: one standard normal from two uniforms; 1 - u is in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let rupees = median * (sigma * normal).exp();
    let paise = ((rupees * 100.0).round() as i64).clamp(AMOUNT_RANGE_PAISE.0, AMOUNT_RANGE_PAISE.1);
    Decimal::new(paise, 2)
}

/// Fraud is rarer than 1%, and more likely at night and for large amounts.
fn fraud_probability(base: f64, amount: Decimal, hour: u32) -> f64 {
    let mut p = base;
    if amount > Decimal::new(50_000, 0) {
        p *= 8.0;
    }
    if hour < 5 {
        p *= 3.0;
    }
    p.clamp(0.0, 1.0)
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::HashMap;

    fn time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap()
    }

    fn payments(seed: u64, n: usize) -> Vec<PaymentEvent> {
        let mut generator = SyntheticGenerator::new(seed, 0.005);
        (0..n).map(|_| generator.next_payment(time())).collect()
    }

    #[test]
    fn same_seed_gives_same_payments_and_other_seeds_differ() {
        assert_eq!(payments(7, 200), payments(7, 200));
        assert_ne!(payments(7, 200), payments(8, 200));
    }

    #[test]
    fn cities_seed_parses_with_all_three_tiers() {
        assert!(CITIES.len() >= 30);
        for tier in 1..=3 {
            assert!(CITIES.iter().any(|c| c.tier == tier), "no tier {tier} city");
        }
    }

    #[test]
    fn distributions_look_like_indian_payments() {
        let events = payments(1, 20_000);
        let mut by_method: HashMap<PaymentMethod, Vec<Decimal>> = HashMap::new();
        for e in &events {
            assert_eq!(e.currency, Currency::Inr);
            assert_eq!(e.country, "IN");
            assert!(e.amount >= Decimal::ONE, "{}", e.amount);
            assert_eq!(e.amount.scale(), 2);
            assert!(
                CITIES
                    .iter()
                    .any(|c| c.city == e.city && c.state == e.state)
            );
            by_method
                .entry(e.payment_method)
                .or_default()
                .push(e.amount);
        }
        let share = |m| by_method[&m].len() as f64 / events.len() as f64;
        assert!((0.50..0.60).contains(&share(PaymentMethod::Upi)));
        assert!((0.05..0.11).contains(&share(PaymentMethod::Netbanking)));
        let median = |m| {
            let mut v = by_method[&m].clone();
            v.sort();
            v[v.len() / 2]
        };
        // Many small UPI payments, larger card and net-banking tickets.
        assert!(median(PaymentMethod::Upi) < Decimal::new(1_000, 0));
        assert!(median(PaymentMethod::Netbanking) > median(PaymentMethod::Card));
        assert!(median(PaymentMethod::Card) > median(PaymentMethod::Upi));
        // Skewed: the mean is well above the median.
        let upi = &by_method[&PaymentMethod::Upi];
        let mean = upi.iter().sum::<Decimal>() / Decimal::from(upi.len());
        assert!(mean > median(PaymentMethod::Upi) * Decimal::new(12, 1));
        let fraud = events.iter().filter(|e| e.is_fraud).count() as f64 / events.len() as f64;
        assert!((0.001..0.03).contains(&fraud), "fraud share {fraud}");
        let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.transaction_id).collect();
        assert_eq!(ids.len(), events.len());
    }
}
