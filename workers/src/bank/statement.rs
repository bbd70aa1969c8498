//! Writing the settlement file a bank would send for a day, from the payments the producer
//! made, with faults put in on purpose so that reconciliation has something to find.
//!
//! A [`DayStatement`] collects, from the payment events of the topic, every transaction whose
//! settled (`SUCCESS` or `FAILED`) event falls on the day (UTC); [`DayStatement::render`]
//! writes the file, injecting each asked-for fault into distinct transactions chosen by a
//! seeded generator, and returns which transaction got which fault.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;

use super::file::{BankLine, HEADER, bank_reference, settleable};
use crate::event::{Currency, PaymentEvent, PaymentStatus};

/// How many lines of each fault to put into a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct BankFaults {
    /// Settled transactions left out of the file.
    #[arg(long = "fault-missing", default_value_t = 0)]
    pub missing: usize,
    /// Lines for transactions the stream never saw.
    #[arg(long = "fault-unknown", default_value_t = 0)]
    pub unknown: usize,
    /// Lines whose amount is off by a few paise (or cents).
    #[arg(long = "fault-amount", default_value_t = 0)]
    pub amount_off: usize,
    /// Lines whose status is the other settled one.
    #[arg(long = "fault-status", default_value_t = 0)]
    pub status_flip: usize,
    /// Lines written twice.
    #[arg(long = "fault-duplicate", default_value_t = 0)]
    pub duplicate: usize,
    /// Extra lines that cannot be read (a line cut short).
    #[arg(long = "fault-malformed", default_value_t = 0)]
    pub malformed: usize,
}

impl BankFaults {
    /// One line of every fault: what the quickstart puts into each day's file.
    pub const ONE_OF_EACH: BankFaults = BankFaults {
        missing: 1,
        unknown: 1,
        amount_off: 1,
        status_flip: 1,
        duplicate: 1,
        malformed: 1,
    };
}

/// A fault put into a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The transaction is not in the file.
    Missing,
    /// The transaction is only in the file.
    Unknown,
    /// The file's amount differs.
    AmountOff,
    /// The file's status differs.
    StatusFlip,
    /// The file lists the transaction twice.
    Duplicate,
    /// A line that cannot be read, besides the transaction's good one.
    Malformed,
}

impl FaultKind {
    /// The outcome `marts.bank_reconciliation` gives the transaction, or `None` for a
    /// malformed line (quarantined at loading; its transaction's good line still matches).
    pub fn expected_outcome(self) -> Option<&'static str> {
        match self {
            Self::Missing => Some("missing_at_bank"),
            Self::Unknown => Some("missing_in_stream"),
            Self::AmountOff => Some("amount_mismatch"),
            Self::StatusFlip => Some("status_mismatch"),
            Self::Duplicate => Some("duplicated_at_bank"),
            Self::Malformed => None,
        }
    }

    /// A word for the printed list.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unknown => "unknown",
            Self::AmountOff => "amount",
            Self::StatusFlip => "status",
            Self::Duplicate => "duplicate",
            Self::Malformed => "malformed",
        }
    }
}

/// A fault that was put into a file: its kind and the transaction it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    /// What was done.
    pub kind: FaultKind,
    /// To which transaction.
    pub transaction_id: String,
}

/// The file asks for more faulty transactions than the day has settlements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{day} has {settled} settled transactions, fewer than the {wanted} faults asked for")]
pub struct TooFewSettlements {
    /// The day.
    pub day: NaiveDate,
    /// Settled transactions of the day.
    pub settled: usize,
    /// Transactions the faults need.
    pub wanted: usize,
}

/// The settled transactions of one day, as the bank reports them.
#[derive(Debug, Clone)]
pub struct DayStatement {
    day: NaiveDate,
    settled: BTreeMap<String, BankLine>,
}

impl DayStatement {
    /// An empty statement for `day`.
    pub fn new(day: NaiveDate) -> Self {
        Self {
            day,
            settled: BTreeMap::new(),
        }
    }

    /// The day it covers.
    pub fn day(&self) -> NaiveDate {
        self.day
    }

    /// Settled transactions so far.
    pub fn len(&self) -> usize {
        self.settled.len()
    }

    /// Whether no transaction settled on the day.
    pub fn is_empty(&self) -> bool {
        self.settled.is_empty()
    }

    /// Takes in one event: a `SUCCESS` or `FAILED` event dated on the day settles its
    /// transaction (the latest such event wins, as in the stream). Others are ignored, and
    /// so is an amount no bank settles (zero, negative, or beyond `numeric(14, 2)`: a faulty
    /// producer's).
    pub fn record(&mut self, event: &PaymentEvent) {
        if event.status == PaymentStatus::Pending
            || event.event_time.date_naive() != self.day
            || !settleable(event.amount.round_dp(2))
        {
            return;
        }
        let line = BankLine {
            transaction_id: event.transaction_id.clone(),
            amount: event.amount.round_dp(2),
            currency: event.currency,
            status: event.status,
            settled_at: event.event_time,
            bank_reference: bank_reference(&event.transaction_id),
        };
        match self.settled.get(&event.transaction_id) {
            Some(held) if held.settled_at > line.settled_at => {}
            _ => {
                self.settled.insert(event.transaction_id.clone(), line);
            }
        }
    }

    /// Takes in one message of the topic; a payload that is not an event is ignored (the
    /// streamer dead-letters it, and no bank settled it).
    pub fn record_message(&mut self, payload: &[u8]) {
        if let Ok(event) = PaymentEvent::from_json(payload) {
            self.record(&event);
        }
    }

    /// The file's text, lines in settlement order, with `faults` put in (chosen with `seed`);
    /// and the faults, in the order they were chosen.
    pub fn render(
        &self,
        faults: &BankFaults,
        seed: u64,
    ) -> Result<(String, Vec<InjectedFault>), TooFewSettlements> {
        let wanted = faults.missing
            + faults.amount_off
            + faults.status_flip
            + faults.duplicate
            + faults.malformed;
        if wanted > self.settled.len() {
            return Err(TooFewSettlements {
                day: self.day,
                settled: self.settled.len(),
                wanted,
            });
        }
        let day_seed = seed ^ u64::from(self.day.num_days_from_ce().unsigned_abs());
        let mut rng = StdRng::seed_from_u64(day_seed);
        let mut chosen: Vec<&String> = self.settled.keys().collect();
        chosen.shuffle(&mut rng);
        let mut chosen = chosen.into_iter();
        let mut kinds: BTreeMap<&str, FaultKind> = BTreeMap::new();
        let mut injected = Vec::new();
        for (kind, n) in [
            (FaultKind::Missing, faults.missing),
            (FaultKind::AmountOff, faults.amount_off),
            (FaultKind::StatusFlip, faults.status_flip),
            (FaultKind::Duplicate, faults.duplicate),
            (FaultKind::Malformed, faults.malformed),
        ] {
            for id in chosen.by_ref().take(n) {
                kinds.insert(id.as_str(), kind);
                injected.push(InjectedFault {
                    kind,
                    transaction_id: id.clone(),
                });
            }
        }

        let mut lines: Vec<BankLine> = Vec::with_capacity(self.settled.len() + faults.unknown);
        let mut extra: Vec<String> = Vec::new();
        for (id, line) in &self.settled {
            let mut line = line.clone();
            match kinds.get(id.as_str()) {
                Some(FaultKind::Missing) => continue,
                Some(FaultKind::AmountOff) => {
                    let paise = Decimal::new(rng.random_range(1..=9), 2);
                    line.amount = if line.amount > paise && rng.random_bool(0.5) {
                        line.amount - paise
                    } else {
                        line.amount + paise
                    };
                }
                Some(FaultKind::StatusFlip) => {
                    line.status = match line.status {
                        PaymentStatus::Success => PaymentStatus::Failed,
                        _ => PaymentStatus::Success,
                    };
                }
                Some(FaultKind::Duplicate) => lines.push(line.clone()),
                Some(FaultKind::Malformed) => {
                    // A line cut short in transfer: its fields stop after the currency.
                    let whole = line.to_line();
                    let cut: Vec<&str> = whole.splitn(4, ',').take(3).collect();
                    extra.push(cut.join(","));
                }
                Some(FaultKind::Unknown) | None => {}
            }
            lines.push(line);
        }
        let start = self.day.and_time(chrono::NaiveTime::MIN).and_utc();
        for n in 0..faults.unknown {
            let id = format!("BANK-{}-{n:04}", self.day.format("%Y%m%d"));
            injected.push(InjectedFault {
                kind: FaultKind::Unknown,
                transaction_id: id.clone(),
            });
            lines.push(BankLine {
                bank_reference: bank_reference(&id),
                transaction_id: id,
                amount: Decimal::new(rng.random_range(1_000..500_000), 2),
                currency: Currency::Inr,
                status: PaymentStatus::Success,
                settled_at: start + chrono::Duration::seconds(rng.random_range(0..86_400)),
            });
        }
        lines.sort_by(|a, b| {
            (a.settled_at, &a.transaction_id).cmp(&(b.settled_at, &b.transaction_id))
        });
        let mut text = String::with_capacity((lines.len() + extra.len() + 1) * 96);
        text.push_str(HEADER);
        text.push('\n');
        // Cut lines go among the good ones, each after a line chosen at random.
        let mut after: Vec<usize> = extra
            .iter()
            .map(|_| rng.random_range(0..lines.len().max(1)))
            .collect();
        after.sort_unstable();
        let mut extra = extra.into_iter().zip(after).peekable();
        for (index, line) in lines.iter().enumerate() {
            text.push_str(&line.to_line());
            text.push('\n');
            while let Some((cut, _)) = extra.next_if(|(_, at)| *at == index) {
                text.push_str(&cut);
                text.push('\n');
            }
        }
        for (cut, _) in extra {
            text.push_str(&cut);
            text.push('\n');
        }
        Ok((text, injected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::file::{LineReason, parse_file};
    use crate::event::{EventSource, PaymentMethod};

    fn event(id: &str, status: PaymentStatus, time: &str) -> PaymentEvent {
        PaymentEvent {
            schema_version: 1,
            event_id: uuid::Uuid::new_v4(),
            transaction_id: id.to_owned(),
            status,
            event_time: time.parse().unwrap(),
            customer_id: Some("C1".to_owned()),
            merchant_id: "M1".to_owned(),
            merchant_name: "M1 Store".to_owned(),
            category: "grocery".to_owned(),
            amount: Decimal::new(10_000, 2),
            currency: Currency::Inr,
            payment_method: PaymentMethod::Upi,
            city: "Pune".to_owned(),
            state: "Maharashtra".to_owned(),
            country: "IN".to_owned(),
            latitude: None,
            longitude: None,
            is_fraud: false,
            source: EventSource::Synthetic,
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
    }

    fn statement(settled: usize) -> DayStatement {
        let mut statement = DayStatement::new(day());
        for n in 0..settled {
            statement.record(&event(
                &format!("T{n:03}"),
                PaymentStatus::Success,
                &format!("2026-11-02T{:02}:00:00Z", n % 24),
            ));
        }
        statement
    }

    #[test]
    fn only_settlements_dated_on_the_day_are_listed() {
        let mut statement = DayStatement::new(day());
        statement.record(&event("P", PaymentStatus::Pending, "2026-11-02T10:00:00Z"));
        statement.record(&event("Y", PaymentStatus::Success, "2026-11-01T23:59:59Z"));
        statement.record(&event("S", PaymentStatus::Failed, "2026-11-02T00:00:00Z"));
        statement.record_message(b"{not json");
        let (text, faults) = statement.render(&BankFaults::default(), 1).unwrap();
        assert!(faults.is_empty());
        let parsed = parse_file(text.as_bytes()).unwrap();
        let ids: Vec<&str> = parsed
            .lines
            .iter()
            .map(|(_, l)| l.transaction_id.as_str())
            .collect();
        assert_eq!(ids, ["S"]);
        assert_eq!(parsed.lines[0].1.status, PaymentStatus::Failed);
    }

    #[test]
    fn each_fault_lands_on_its_own_transaction_and_shows_in_the_file() {
        let statement = statement(40);
        let faults = BankFaults {
            missing: 2,
            unknown: 2,
            amount_off: 2,
            status_flip: 2,
            duplicate: 2,
            malformed: 2,
        };
        let (text, injected) = statement.render(&faults, 7).unwrap();
        assert_eq!(injected.len(), 12);
        let mut ids: Vec<&str> = injected.iter().map(|f| f.transaction_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 12, "faults share a transaction");
        let parsed = parse_file(text.as_bytes()).unwrap();
        assert_eq!(parsed.rejected.len(), 2);
        assert!(
            parsed
                .rejected
                .iter()
                .all(|(_, _, e)| e.reason == LineReason::WrongFieldCount)
        );
        let lines_of = |id: &str| -> Vec<&BankLine> {
            parsed
                .lines
                .iter()
                .map(|(_, l)| l)
                .filter(|l| l.transaction_id == id)
                .collect()
        };
        for fault in &injected {
            let found = lines_of(&fault.transaction_id);
            match fault.kind {
                FaultKind::Missing => assert!(found.is_empty()),
                FaultKind::Duplicate => assert_eq!(found.len(), 2),
                FaultKind::AmountOff => {
                    let off = (found[0].amount - Decimal::new(10_000, 2)).abs();
                    assert!(off > Decimal::ZERO && off < Decimal::new(10, 2), "{off}");
                }
                FaultKind::StatusFlip => assert_eq!(found[0].status, PaymentStatus::Failed),
                FaultKind::Unknown | FaultKind::Malformed => assert_eq!(found.len(), 1),
            }
        }
        // 40 settled − 2 missing + 2 duplicated + 2 unknown.
        assert_eq!(parsed.lines.len(), 42);
    }

    #[test]
    fn the_same_seed_writes_the_same_file() {
        let faults = BankFaults {
            amount_off: 3,
            malformed: 1,
            ..BankFaults::default()
        };
        assert_eq!(
            statement(10).render(&faults, 3).unwrap(),
            statement(10).render(&faults, 3).unwrap()
        );
    }

    #[test]
    fn more_faults_than_settlements_is_an_error() {
        let faults = BankFaults {
            missing: 3,
            ..BankFaults::default()
        };
        let error = statement(2).render(&faults, 1).unwrap_err();
        assert_eq!(error.wanted, 3);
        assert!(error.to_string().contains("fewer than the 3 faults"));
    }
}
