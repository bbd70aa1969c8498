//! A payment event as bronze stores it ([`Row`]), and the decoder's fast path: reading a
//! payload straight into a row that borrows its text from the payload ([`scan`]).
//!
//! The reference decoder ([`super::decode::decode`], serde into a [`PaymentEvent`]) defines
//! what a payload means and why one is refused. The fast path reads the common shape of an
//! event, checking UTF-8 once and copying nothing, and gives up ([`None`]) on anything else
//! (escaped text, another time zone, an unknown or repeated field, a malformed value), which
//! the reference decoder then reads or refuses. Where the fast path gives a row, the
//! reference decoder gives an event with the same row: a test holds the two together on
//! hundreds of thousands of generated and damaged payloads.

use std::borrow::Cow;

use chrono::NaiveDate;

use super::decode::MAX_FIELD_BYTES;
use crate::event::{
    Currency, EventSource, PaymentEvent, PaymentMethod, PaymentStatus, SCHEMA_VERSION,
};

/// Length of a hyphenated UUID.
const UUID_TEXT: usize = 36;

/// 1970-01-01 counted in days from 0001-01-01 (day 1), as chrono counts them.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A decoded payment event in the form bronze stores it, its text borrowed where it can be.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// `schema_version`.
    pub schema_version: u16,
    /// `event_id`, lower-case and hyphenated.
    pub event_id: [u8; UUID_TEXT],
    /// `transaction_id`.
    pub transaction_id: Cow<'a, str>,
    /// `status`.
    pub status: PaymentStatus,
    /// `event_time`, microseconds since the epoch.
    pub event_time_micros: i64,
    /// `customer_id`.
    pub customer_id: Option<Cow<'a, str>>,
    /// `merchant_id`.
    pub merchant_id: Cow<'a, str>,
    /// `merchant_name`.
    pub merchant_name: Cow<'a, str>,
    /// `category`.
    pub category: Cow<'a, str>,
    /// `amount` in hundredths, as `Decimal128(18, 2)` stores it.
    pub amount_hundredths: i128,
    /// `currency`.
    pub currency: Currency,
    /// `payment_method`.
    pub payment_method: PaymentMethod,
    /// `city`.
    pub city: Cow<'a, str>,
    /// `state`.
    pub state: Cow<'a, str>,
    /// `country`.
    pub country: Cow<'a, str>,
    /// `latitude`.
    pub latitude: Option<f64>,
    /// `longitude`.
    pub longitude: Option<f64>,
    /// `is_fraud`.
    pub is_fraud: bool,
    /// `source`.
    pub source: EventSource,
}

impl Row<'_> {
    /// The event's `event_id` as text.
    pub fn event_id(&self) -> &str {
        // Always ASCII: written by `Uuid::hyphenated().encode_lower`.
        std::str::from_utf8(&self.event_id).unwrap_or_default()
    }

    /// The UTC day of the event, which names its bronze folder.
    pub fn event_date(&self) -> NaiveDate {
        const MICROS_PER_DAY: i64 = 86_400_000_000;
        let days = self.event_time_micros.div_euclid(MICROS_PER_DAY);
        i32::try_from(days)
            .ok()
            .and_then(|days| NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE))
            .unwrap_or_default()
    }
}

/// An event the reference decoder accepted, as a row borrowing its text. `amount_hundredths`
/// is the amount the decoder checked to fit bronze's precision.
pub fn from_event(event: &PaymentEvent, amount_hundredths: i128) -> Row<'_> {
    let mut event_id = [0; UUID_TEXT];
    event.event_id.hyphenated().encode_lower(&mut event_id);
    Row {
        schema_version: event.schema_version,
        event_id,
        transaction_id: Cow::Borrowed(&event.transaction_id),
        status: event.status,
        event_time_micros: event.event_time.timestamp_micros(),
        customer_id: event.customer_id.as_deref().map(Cow::Borrowed),
        merchant_id: Cow::Borrowed(&event.merchant_id),
        merchant_name: Cow::Borrowed(&event.merchant_name),
        category: Cow::Borrowed(&event.category),
        amount_hundredths,
        currency: event.currency,
        payment_method: event.payment_method,
        city: Cow::Borrowed(&event.city),
        state: Cow::Borrowed(&event.state),
        country: Cow::Borrowed(&event.country),
        latitude: event.latitude,
        longitude: event.longitude,
        is_fraud: event.is_fraud,
        source: event.source,
    }
}

/// The fast path: the row of `payload` when it has the common shape of a valid event, else
/// `None` (the reference decoder then decides). The caller has checked the payload's size.
pub fn scan(payload: &[u8]) -> Option<Row<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut scanner = Scanner { text, at: 0 };
    let mut fields = Fields::default();
    scanner.whitespace();
    scanner.expect(b'{')?;
    scanner.whitespace();
    if scanner.peek()? != b'}' {
        loop {
            let key = scanner.string()?;
            scanner.whitespace();
            scanner.expect(b':')?;
            scanner.whitespace();
            fields.read(key, &mut scanner)?;
            scanner.whitespace();
            match scanner.next()? {
                b',' => scanner.whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    } else {
        scanner.at += 1;
    }
    scanner.whitespace();
    if scanner.at != payload.len() {
        return None;
    }
    fields.row()
}

/// The fields read so far; each may appear once.
#[derive(Default)]
struct Fields<'a> {
    schema_version: Option<u16>,
    event_id: Option<[u8; UUID_TEXT]>,
    transaction_id: Option<&'a str>,
    status: Option<PaymentStatus>,
    event_time_micros: Option<i64>,
    customer_id: Option<Option<&'a str>>,
    merchant_id: Option<&'a str>,
    merchant_name: Option<&'a str>,
    category: Option<&'a str>,
    amount_hundredths: Option<i128>,
    currency: Option<Currency>,
    payment_method: Option<PaymentMethod>,
    city: Option<&'a str>,
    state: Option<&'a str>,
    country: Option<&'a str>,
    latitude: Option<Option<f64>>,
    longitude: Option<Option<f64>>,
    is_fraud: Option<bool>,
    source: Option<EventSource>,
}

/// Sets `slot` once; a field seen twice gives up.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

impl<'a> Fields<'a> {
    fn read(&mut self, key: &str, scanner: &mut Scanner<'a>) -> Option<()> {
        match key {
            "schema_version" => once(&mut self.schema_version, scanner.schema_version()?),
            "event_id" => once(&mut self.event_id, uuid(scanner.string()?)?),
            "transaction_id" => once(&mut self.transaction_id, scanner.text()?),
            "status" => once(&mut self.status, status(scanner.string()?)?),
            "event_time" => once(&mut self.event_time_micros, utc_micros(scanner.string()?)?),
            "customer_id" => once(&mut self.customer_id, scanner.nullable(Scanner::text)?),
            "merchant_id" => once(&mut self.merchant_id, scanner.text()?),
            "merchant_name" => once(&mut self.merchant_name, scanner.text()?),
            "category" => once(&mut self.category, scanner.text()?),
            "amount" => once(&mut self.amount_hundredths, hundredths(scanner.string()?)?),
            "currency" => once(&mut self.currency, currency(scanner.string()?)?),
            "payment_method" => once(&mut self.payment_method, method(scanner.string()?)?),
            "city" => once(&mut self.city, scanner.text()?),
            "state" => once(&mut self.state, scanner.text()?),
            "country" => once(&mut self.country, scanner.text()?),
            "latitude" => once(&mut self.latitude, scanner.nullable(Scanner::float)?),
            "longitude" => once(&mut self.longitude, scanner.nullable(Scanner::float)?),
            "is_fraud" => once(&mut self.is_fraud, scanner.boolean()?),
            "source" => once(&mut self.source, source(scanner.string()?)?),
            _ => None,
        }
    }

    /// The row, when every required field was read. Optional fields left out are null, as
    /// the reference decoder reads them.
    fn row(self) -> Option<Row<'a>> {
        Some(Row {
            schema_version: self.schema_version?,
            event_id: self.event_id?,
            transaction_id: Cow::Borrowed(self.transaction_id?),
            status: self.status?,
            event_time_micros: self.event_time_micros?,
            customer_id: self.customer_id.flatten().map(Cow::Borrowed),
            merchant_id: Cow::Borrowed(self.merchant_id?),
            merchant_name: Cow::Borrowed(self.merchant_name?),
            category: Cow::Borrowed(self.category?),
            amount_hundredths: self.amount_hundredths?,
            currency: self.currency?,
            payment_method: self.payment_method?,
            city: Cow::Borrowed(self.city?),
            state: Cow::Borrowed(self.state?),
            country: Cow::Borrowed(self.country?),
            latitude: self.latitude.flatten(),
            longitude: self.longitude.flatten(),
            is_fraud: self.is_fraud?,
            source: self.source?,
        })
    }
}

/// A cursor over a payload known to be UTF-8.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters (the reference decoder reads the
    /// others).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = &self.bytes()[start..];
        let length = special_byte(rest)?;
        if rest[length] != b'"' {
            return None;
        }
        self.at = start + length + 1;
        // Both ends are at ASCII bytes, so at character boundaries.
        self.text.get(start..start + length)
    }

    /// A text field: a string no longer than bronze keeps (the reference decoder refuses
    /// longer ones with the field's name).
    fn text(&mut self) -> Option<&'a str> {
        self.string().filter(|s| s.len() <= MAX_FIELD_BYTES)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal("true").map(|()| true),
            b'f' => self.literal("false").map(|()| false),
            _ => None,
        }
    }

    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal("null").map(|()| None)
        } else {
            read(self).map(Some)
        }
    }

    /// A JSON number's text, and whether it is an integer (no fraction, no exponent).
    fn number(&mut self) -> Option<(&'a str, bool)> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digit()?;
            self.digits();
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digit()?;
            self.digits();
            integer = false;
        }
        Some((self.text.get(start..self.at)?, integer))
    }

    fn digit(&mut self) -> Option<()> {
        self.next().filter(u8::is_ascii_digit).map(drop)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn schema_version(&mut self) -> Option<u16> {
        let (number, integer) = self.number()?;
        let version: u16 = number.parse().ok().filter(|_| integer)?;
        (1..=SCHEMA_VERSION).contains(&version).then_some(version)
    }

    /// A float, correctly rounded as serde reads one (integers too: converting an integer
    /// to the nearest float is the same rounding); infinities refused.
    fn float(&mut self) -> Option<f64> {
        let (number, _) = self.number()?;
        number.parse::<f64>().ok().filter(|value| value.is_finite())
    }
}

/// The first byte of `bytes` that ends or interrupts a plain JSON string (a quote, a
/// backslash, a control character), looking at eight bytes at a time: text fields are most of
/// a payload's bytes.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let special = has_zero_byte(word ^ (ONES * u64::from(b'"')))
            | has_zero_byte(word ^ (ONES * u64::from(b'\\')))
            // A byte below 0x20; bytes of 0x80 and above (UTF-8) are not.
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if special != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|offset| at + offset)
}

/// A hyphenated UUID in either case, lower-cased: what `Uuid::try_parse` accepts at this
/// length, written as `Uuid::hyphenated().encode_lower` writes it.
fn uuid(text: &str) -> Option<[u8; UUID_TEXT]> {
    let bytes: &[u8; UUID_TEXT] = text.as_bytes().try_into().ok()?;
    let mut lower = [0; UUID_TEXT];
    for (at, (&byte, out)) in bytes.iter().zip(&mut lower).enumerate() {
        *out = match (at, byte) {
            (8 | 13 | 18 | 23, b'-') => b'-',
            (8 | 13 | 18 | 23, _) => return None,
            (_, b'0'..=b'9' | b'a'..=b'f') => byte,
            (_, b'A'..=b'F') => byte.to_ascii_lowercase(),
            _ => return None,
        };
    }
    Some(lower)
}

fn status(text: &str) -> Option<PaymentStatus> {
    match text {
        "PENDING" => Some(PaymentStatus::Pending),
        "SUCCESS" => Some(PaymentStatus::Success),
        "FAILED" => Some(PaymentStatus::Failed),
        _ => None,
    }
}

fn currency(text: &str) -> Option<Currency> {
    match text {
        "INR" => Some(Currency::Inr),
        "USD" => Some(Currency::Usd),
        _ => None,
    }
}

fn method(text: &str) -> Option<PaymentMethod> {
    match text {
        "UPI" => Some(PaymentMethod::Upi),
        "CARD" => Some(PaymentMethod::Card),
        "NETBANKING" => Some(PaymentMethod::Netbanking),
        "WALLET" => Some(PaymentMethod::Wallet),
        _ => None,
    }
}

fn source(text: &str) -> Option<EventSource> {
    match text {
        "kaggle" => Some(EventSource::Kaggle),
        "synthetic" => Some(EventSource::Synthetic),
        _ => None,
    }
}

/// Parses the fixed-width digits `text[range]`.
fn number_at(text: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    text.get(range)?.iter().try_fold(0u32, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the form the producer writes, as microseconds since
/// the epoch. Other offsets, separators and leap seconds are left to the reference decoder.
fn utc_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let year = number_at(b, 0..4)?;
    let (month, day) = (number_at(b, 5..7)?, number_at(b, 8..10)?);
    let (hour, minute, second) = (
        number_at(b, 11..13)?,
        number_at(b, 14..16)?,
        number_at(b, 17..19)?,
    );
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let value = number_at(digits, 0..digits.len())?;
            value * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    let time = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(time.and_utc().timestamp_micros())
}

/// A decimal string with at most two places and at most 16 integer digits (so that it fits
/// `Decimal128(18, 2)`), in hundredths.
fn hundredths(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if whole.is_empty() || whole.len() > 16 || fraction.len() > 2 {
        return None;
    }
    if unsigned.contains('.') && fraction.is_empty() {
        return None;
    }
    let digits = |part: &str| -> Option<i128> {
        part.bytes().try_fold(0i128, |value, b| {
            b.is_ascii_digit()
                .then(|| value * 10 + i128::from(b - b'0'))
        })
    };
    let scale = [100, 10, 1][fraction.len()];
    let value = digits(whole)? * 100 + digits(fraction)? * scale;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use serde_json::{Value, json};

    use super::*;
    use crate::bronze::decode::decode;
    use crate::faults::{FaultInjector, FaultRates};
    use crate::synthetic::SyntheticGenerator;

    const MAX: usize = 1 << 20;

    /// Values that sit on the edges of what the fast path reads, per field.
    fn variants(field: &str) -> Vec<Value> {
        let texts = [
            "",
            "Pune",
            "a\"b",
            "é漢🦀",
            "\\",
            "\u{0}",
            "\u{1f}",
            "\u{202e}x",
            "\u{7f}",
        ];
        let mut values: Vec<Value> = texts.iter().map(|t| json!(t)).collect();
        values.extend([
            json!(null),
            json!(1),
            json!(true),
            json!("x".repeat(1024)),
            json!("x".repeat(1025)),
        ]);
        values.extend(match field {
            "schema_version" => vec![
                json!(0),
                json!(1),
                json!(2),
                json!(-1),
                json!(1.0),
                json!(70_000),
                json!("1"),
            ],
            "event_id" => vec![
                json!("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
                json!("6f9619ff8b86d011b42d00c04fc964ff"),
                json!("{6f9619ff-8b86-d011-b42d-00c04fc964ff}"),
                json!("urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff"),
                json!("6f9619ff-8b86-d011-b42d-00c04fc964fg"),
            ],
            "event_time" => [
                "2026-11-01T10:00:00Z",
                "2026-11-01T10:00:00.5Z",
                "2026-11-01T10:00:00.123456789Z",
                "2026-11-01T10:00:00.1234567891Z",
                "2026-11-01T10:00:00+05:30",
                "2026-11-01 10:00:00Z",
                "2026-11-01t10:00:00z",
                "2026-11-01T23:59:60Z",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999Z",
                "2024-02-29T12:00:00Z",
                "2023-02-29T12:00:00Z",
                "2026-11-01T24:00:00Z",
                "1969-12-31T23:59:59.999999Z",
                "2026-11-01T10:00:00.Z",
                "2026-11-01",
                "+2026-11-01T10:00:00Z",
            ]
            .iter()
            .map(|t| json!(t))
            .collect(),
            "amount" => [
                "0",
                "0.00",
                "-0",
                "-0.00",
                "-0.01",
                "12.5",
                "12.50",
                "12.505",
                "12.",
                ".5",
                "007.50",
                "1e3",
                " 12.00",
                "+5.00",
                "1_000.00",
                "9999999999999999.99",
                "99999999999999999.99",
                "NaN",
                "-",
            ]
            .iter()
            .map(|t| json!(t))
            .chain([json!(12.5), json!(12)])
            .collect(),
            "latitude" | "longitude" => vec![
                json!(0),
                json!(-0.0),
                json!(18.5204),
                json!(1e300),
                json!(-1.5e-300),
                json!(u64::MAX),
                json!(i64::MIN),
                json!(0.1),
                json!(1234567890123456789u64),
            ],
            "status" | "currency" | "payment_method" | "source" => [
                "PENDING",
                "pending",
                "INR",
                "usd",
                "UPI",
                "CARD",
                "kaggle",
                "Synthetic",
            ]
            .iter()
            .map(|t| json!(t))
            .collect(),
            _ => vec![],
        });
        values
    }

    /// Raw JSON number texts serde_json and the fast path could read differently.
    const NUMBERS: &[&str] = &[
        "-0",
        "0",
        "1E2",
        "1e+2",
        "1e-2",
        "2.5e-324",
        "1e400",
        "-1e400",
        "18446744073709551616",
        "-9223372036854775809",
        "0.30000000000000004",
        "00",
        "01",
        "1.",
        "-",
        "+1",
        ".5",
        "1e",
    ];

    fn bits(row: &Row<'_>) -> (Option<u64>, Option<u64>) {
        (
            row.latitude.map(f64::to_bits),
            row.longitude.map(f64::to_bits),
        )
    }

    /// The fast path read `payload`: the reference decoder must read the same row from it.
    fn check(payload: &[u8]) -> bool {
        let Some(fast) = scan(payload) else {
            return false;
        };
        let event = decode(Some(payload), MAX).unwrap_or_else(|error| {
            panic!(
                "the fast path read a payload the reference decoder refuses ({error:?}): {}",
                String::from_utf8_lossy(payload)
            )
        });
        let amount = (event.amount.mantissa(), event.amount.scale());
        let hundredths = match amount.1 {
            2 => amount.0,
            _ => unreachable!("decode() normalises amounts to two places"),
        };
        let reference = from_event(&event, hundredths);
        assert_eq!(fast, reference, "{}", String::from_utf8_lossy(payload));
        assert_eq!(fast.event_date(), event.event_time.date_naive());
        assert_eq!(
            bits(&fast),
            bits(&reference),
            "{}",
            String::from_utf8_lossy(payload)
        );
        true
    }

    #[test]
    fn where_the_fast_path_reads_a_row_the_reference_decoder_reads_the_same() {
        let mut rng = StdRng::seed_from_u64(17);
        let rates = FaultRates {
            malformed_json: 0.05,
            wrong_type: 0.05,
            duplicate: 0.05,
            non_positive_amount: 0.05,
            null_customer_id: 0.05,
        };
        let mut injector = FaultInjector::new(rates, 17);
        let mut generator = SyntheticGenerator::new(17, 0.2);
        let fields: Vec<String> = serde_json::to_value(generator.next_payment(chrono::Utc::now()))
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let (mut payloads, mut fast) = (0, 0);
        for _ in 0..4_000 {
            let event = generator.next_payment(chrono::Utc::now());
            for encoded in injector.encode(event) {
                let payload = encoded.payload;
                let mut tried = vec![payload.clone()];
                // A field set to an edge value.
                let mut json: Value = match serde_json::from_slice(&payload) {
                    Ok(json @ Value::Object(_)) => json,
                    _ => Value::Object(Default::default()),
                };
                let field = &fields[rng.random_range(0..fields.len())];
                let choices = variants(field);
                json[field.as_str()] = choices[rng.random_range(0..choices.len())].clone();
                tried.push(json.to_string().into_bytes());
                // A field left out, pretty-printed, or written twice.
                let mut without = json.clone();
                without.as_object_mut().unwrap().remove(field.as_str());
                tried.push(without.to_string().into_bytes());
                tried.push(serde_json::to_vec_pretty(&json).unwrap());
                let text = json.to_string();
                tried.push(
                    format!("{{\"{field}\":{},{}", json[field.as_str()], &text[1..]).into_bytes(),
                );
                // A number written the way no serialiser would.
                let number = NUMBERS[rng.random_range(0..NUMBERS.len())];
                for numeric in ["latitude", "longitude", "schema_version"] {
                    let mut raw = json.clone();
                    raw[numeric] = json!("@@");
                    tried.push(raw.to_string().replace("\"@@\"", number).into_bytes());
                }
                // Damaged bytes.
                for _ in 0..4 {
                    let mut damaged = payload.clone();
                    if damaged.is_empty() {
                        break;
                    }
                    let at = rng.random_range(0..damaged.len());
                    match rng.random_range(0..3) {
                        0 => damaged[at] = b"\"\\-0.e {},:n\x00\xffZ+9tf"[rng.random_range(0..17)],
                        1 => {
                            damaged.remove(at);
                        }
                        _ => damaged.truncate(at),
                    }
                    tried.push(damaged);
                }
                for payload in tried {
                    payloads += 1;
                    fast += usize::from(check(&payload));
                }
            }
        }
        // Most variants are refused or escaped on purpose; enough must still take the fast
        // path for the comparison to mean something.
        assert!(
            fast * 10 > payloads,
            "{fast} of {payloads} took the fast path"
        );
    }

    #[test]
    fn every_event_the_producer_makes_takes_the_fast_path() {
        let mut generator = SyntheticGenerator::new(3, 0.3);
        for _ in 0..2_000 {
            let payload = generator.next_payment(chrono::Utc::now()).to_json();
            assert!(check(&payload), "{}", String::from_utf8_lossy(&payload));
        }
    }
}
