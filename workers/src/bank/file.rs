//! The settlement file a bank sends once a day: its name, its columns and how one line is
//! read and written. The generator ([`super::statement`]) and the loader
//! ([`crate::loader`]) both go through here, so the format has one owner.
//!
//! A file covers one settlement day (UTC) and is named for it:
//! `settlements-YYYY-MM-DD.csv` under the batch files' prefix (`s3://fintech/batch_files`
//! on a cluster, `batch_files/` in the quickstart's folder). Its first line is [`HEADER`];
//! each further line is one settled transaction:
//!
//! ```text
//! transaction_id,amount,currency,status,settled_at,bank_reference
//! 3f2a…,1499.00,INR,SUCCESS,2026-11-02T10:00:04Z,BNK7C1F0A93D2E4
//! ```

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;

use crate::event::{Currency, PaymentStatus, amount};
use crate::settlement::fnv1a;

/// The header line of every settlement file.
pub const HEADER: &str = "transaction_id,amount,currency,status,settled_at,bank_reference";

/// Where the files are looked for and written, under the object store's bucket.
pub const DEFAULT_PREFIX: &str = "batch_files";

/// The name of the file for `day`.
pub fn file_name(day: NaiveDate) -> String {
    format!("settlements-{}.csv", day.format("%Y-%m-%d"))
}

/// The day a file's name says it covers, or `None` for a name that is not a settlement
/// file's (such objects are left alone).
pub fn day_of(name: &str) -> Option<NaiveDate> {
    let base = name.rsplit('/').next()?;
    let date = base.strip_prefix("settlements-")?.strip_suffix(".csv")?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// One settled transaction, as the bank reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankLine {
    /// The payment's `transaction_id`.
    pub transaction_id: String,
    /// The amount the bank settled.
    pub amount: Decimal,
    /// Its currency.
    pub currency: Currency,
    /// `SUCCESS` or `FAILED`: a bank reports only settled payments.
    pub status: PaymentStatus,
    /// When the bank settled it.
    pub settled_at: DateTime<Utc>,
    /// The bank's own reference for the settlement.
    pub bank_reference: String,
}

impl BankLine {
    /// The line as written in the file, without its line break.
    pub fn to_line(&self) -> String {
        format!(
            "{},{:.2},{},{},{},{}",
            self.transaction_id,
            self.amount,
            self.currency.as_str(),
            self.status.as_str(),
            self.settled_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.bank_reference
        )
    }

    /// Reads one line of a file (not its header).
    pub fn parse(line: &str) -> Result<Self, LineError> {
        let fields: Vec<&str> = line.split(',').collect();
        let [
            transaction_id,
            amount,
            currency,
            status,
            settled_at,
            bank_reference,
        ] = fields.as_slice()
        else {
            return Err(LineError::new(
                LineReason::WrongFieldCount,
                format!("{} fields, expected 6", fields.len()),
            ));
        };
        if transaction_id.is_empty() || bank_reference.is_empty() {
            return Err(LineError::new(
                LineReason::MissingIdentifier,
                "transaction_id and bank_reference must not be empty",
            ));
        }
        let amount = amount::parse(amount)
            .ok()
            .filter(|a| settleable(*a))
            .ok_or_else(|| {
                LineError::new(
                    LineReason::BadAmount,
                    format!("amount {amount:?} is not a positive decimal with at most two places"),
                )
            })?;
        let currency = match *currency {
            "INR" => Currency::Inr,
            "USD" => Currency::Usd,
            other => {
                return Err(LineError::new(
                    LineReason::BadCurrency,
                    format!("currency {other:?} is not INR or USD"),
                ));
            }
        };
        let status = match *status {
            "SUCCESS" => PaymentStatus::Success,
            "FAILED" => PaymentStatus::Failed,
            other => {
                return Err(LineError::new(
                    LineReason::BadStatus,
                    format!("status {other:?} is not SUCCESS or FAILED"),
                ));
            }
        };
        let settled_at = DateTime::parse_from_rfc3339(settled_at)
            .map_err(|e| {
                LineError::new(
                    LineReason::BadTime,
                    format!("settled_at {settled_at:?} is not an RFC 3339 time: {e}"),
                )
            })?
            .with_timezone(&Utc);
        Ok(Self {
            transaction_id: (*transaction_id).to_owned(),
            amount,
            currency,
            status,
            settled_at,
            bank_reference: (*bank_reference).to_owned(),
        })
    }
}

/// Whether a bank settles `amount`: positive and within `numeric(14, 2)`.
pub fn settleable(amount: Decimal) -> bool {
    amount > Decimal::ZERO && amount < Decimal::new(1_000_000_000_000, 0)
}

/// The bank's reference for the settlement of `transaction_id`: stable, so a file written
/// twice for a day is the same file.
pub fn bank_reference(transaction_id: &str) -> String {
    format!("BNK{:012X}", fnv1a(transaction_id.as_bytes()) >> 16)
}

/// Why a line cannot be loaded; the `reason` of `raw.rejected_bank_lines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LineReason {
    /// Not six comma-separated fields.
    WrongFieldCount,
    /// No transaction id or bank reference.
    MissingIdentifier,
    /// The amount is not a positive decimal with at most two places.
    BadAmount,
    /// The currency is not INR or USD.
    BadCurrency,
    /// The status is not SUCCESS or FAILED.
    BadStatus,
    /// The settlement time is not an RFC 3339 time.
    BadTime,
    /// The line is not UTF-8.
    NotText,
}

impl LineReason {
    /// Every reason, in a fixed order.
    pub const ALL: [LineReason; 7] = [
        Self::WrongFieldCount,
        Self::MissingIdentifier,
        Self::BadAmount,
        Self::BadCurrency,
        Self::BadStatus,
        Self::BadTime,
        Self::NotText,
    ];

    /// The stored reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongFieldCount => "wrong_field_count",
            Self::MissingIdentifier => "missing_identifier",
            Self::BadAmount => "bad_amount",
            Self::BadCurrency => "bad_currency",
            Self::BadStatus => "bad_status",
            Self::BadTime => "bad_time",
            Self::NotText => "not_text",
        }
    }
}

/// A line that cannot be loaded: why, in a word and in a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct LineError {
    /// The stored reason.
    pub reason: LineReason,
    /// What exactly is wrong.
    pub detail: String,
}

impl LineError {
    fn new(reason: LineReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// A whole file read: its good lines and its bad ones, each with its 1-based line number
/// (the header is line 1).
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// Lines that parse.
    pub lines: Vec<(i32, BankLine)>,
    /// Lines that do not, with their text (lossily decoded) and why.
    pub rejected: Vec<(i32, String, LineError)>,
}

/// Why a whole file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the first line is not the settlement file header {HEADER:?}")]
pub struct NotASettlementFile;

/// Reads a file's bytes. Blank lines (a trailing line break) are skipped; a file whose first
/// line is not [`HEADER`] is refused whole.
pub fn parse_file(bytes: &[u8]) -> Result<ParsedFile, NotASettlementFile> {
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    if lines.next() != Some(HEADER.as_bytes()) {
        return Err(NotASettlementFile);
    }
    let mut parsed = ParsedFile::default();
    for (index, line) in lines.enumerate() {
        let number = i32::try_from(index + 2).unwrap_or(i32::MAX);
        if line.is_empty() {
            continue;
        }
        let read = std::str::from_utf8(line)
            .map_err(|e| LineError::new(LineReason::NotText, format!("not UTF-8: {e}")))
            .and_then(BankLine::parse);
        match read {
            Ok(bank_line) => parsed.lines.push((number, bank_line)),
            Err(error) => parsed.rejected.push((
                number,
                String::from_utf8_lossy(line).replace('\0', "\u{FFFD}"),
                error,
            )),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> BankLine {
        BankLine {
            transaction_id: "T1".to_owned(),
            amount: Decimal::new(149_950, 2),
            currency: Currency::Inr,
            status: PaymentStatus::Success,
            settled_at: "2026-11-02T10:00:04Z".parse().unwrap(),
            bank_reference: bank_reference("T1"),
        }
    }

    #[test]
    fn a_written_line_reads_back_as_itself() {
        let written = line().to_line();
        assert_eq!(
            written,
            format!(
                "T1,1499.50,INR,SUCCESS,2026-11-02T10:00:04Z,{}",
                bank_reference("T1")
            )
        );
        assert_eq!(BankLine::parse(&written).unwrap(), line());
    }

    #[test]
    fn a_file_name_carries_its_day() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        assert_eq!(file_name(day), "settlements-2026-11-02.csv");
        assert_eq!(day_of("batch_files/settlements-2026-11-02.csv"), Some(day));
        assert_eq!(day_of("batch_files/settlements-2026-13-02.csv"), None);
        assert_eq!(day_of("batch_files/readme.txt"), None);
    }

    #[test]
    fn each_malformed_line_is_refused_with_its_reason() {
        for (text, reason) in [
            (
                "T1,1.00,INR,SUCCESS,2026-11-02T10:00:04Z",
                LineReason::WrongFieldCount,
            ),
            (
                ",1.00,INR,SUCCESS,2026-11-02T10:00:04Z,B",
                LineReason::MissingIdentifier,
            ),
            (
                "T1,1.001,INR,SUCCESS,2026-11-02T10:00:04Z,B",
                LineReason::BadAmount,
            ),
            (
                "T1,-1.00,INR,SUCCESS,2026-11-02T10:00:04Z,B",
                LineReason::BadAmount,
            ),
            (
                "T1,1.00,EUR,SUCCESS,2026-11-02T10:00:04Z,B",
                LineReason::BadCurrency,
            ),
            (
                "T1,1.00,INR,PENDING,2026-11-02T10:00:04Z,B",
                LineReason::BadStatus,
            ),
            ("T1,1.00,INR,SUCCESS,yesterday,B", LineReason::BadTime),
        ] {
            assert_eq!(BankLine::parse(text).unwrap_err().reason, reason, "{text}");
        }
    }

    #[test]
    fn a_file_keeps_line_numbers_for_good_and_bad_lines() {
        let text = format!(
            "{HEADER}\r\n{}\r\nnot a line\n\n{}\n",
            line().to_line(),
            line().to_line()
        );
        let parsed = parse_file(text.as_bytes()).unwrap();
        let numbers: Vec<i32> = parsed.lines.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [2, 5]);
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!(parsed.rejected[0].0, 3);
        assert_eq!(parsed.rejected[0].1, "not a line");
        assert_eq!(parsed.rejected[0].2.reason, LineReason::WrongFieldCount);
    }

    #[test]
    fn a_file_without_the_header_is_refused_whole() {
        assert_eq!(
            parse_file(b"id,amount\nT1,1.00\n").unwrap_err(),
            NotASettlementFile
        );
    }
}
