//! The settlement lifecycle: some payments are first emitted `PENDING` and settle later.
//!
//! A bank settles card and UPI payments one to two business days later (T+1..T+2). A chosen
//! payment is emitted as `PENDING`, and its settlement (`SUCCESS` or `FAILED`, same
//! `transaction_id`, new `event_id`) is scheduled 1 to 3 days of event time later. The
//! settlement is released once the producer's clock reaches that time, so with a live clock
//! it arrives days later, and with a simulated clock as soon as the timeline gets there.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::event::{PaymentEvent, PaymentStatus};
use crate::synthetic::random_uuid;

/// Shortest and longest time from a payment to its settlement.
pub const SETTLEMENT_DELAY: (Duration, Duration) = (Duration::days(1), Duration::days(3));

/// How a failed settlement's share rises for payments labelled fraudulent.
const FRAUD_FAILURE_RATE: f64 = 0.6;

/// Decides which payments go through the lifecycle and holds their settlements until due.
pub struct SettlementSchedule {
    /// Share of payments emitted `PENDING` first.
    share: f64,
    /// Share of settlements that fail.
    failure_rate: f64,
    rng: StdRng,
    /// Settlements by due time; the sequence number keeps equal times in order.
    queue: BinaryHeap<Reverse<Scheduled>>,
    sequence: u64,
}

struct Scheduled {
    due: DateTime<Utc>,
    sequence: u64,
    event: PaymentEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

impl SettlementSchedule {
    /// A schedule that makes `share` of payments pending, of which `failure_rate` fail.
    pub fn new(share: f64, failure_rate: f64, seed: u64) -> Self {
        Self {
            share,
            failure_rate,
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            sequence: 0,
        }
    }

    /// Maybe turns `payment` into a `PENDING` one and schedules its settlement.
    pub fn on_payment(&mut self, payment: &mut PaymentEvent) {
        if self.share <= 0.0 || !self.rng.random_bool(self.share.min(1.0)) {
            return;
        }
        payment.status = PaymentStatus::Pending;
        let failure_rate = if payment.is_fraud {
            FRAUD_FAILURE_RATE.max(self.failure_rate)
        } else {
            self.failure_rate
        };
        let status = if self.rng.random_bool(failure_rate.clamp(0.0, 1.0)) {
            PaymentStatus::Failed
        } else {
            PaymentStatus::Success
        };
        let (min, max) = SETTLEMENT_DELAY;
        let delay = Duration::seconds(self.rng.random_range(min.num_seconds()..max.num_seconds()));
        let mut settlement = payment.clone();
        settlement.event_id = random_uuid(&mut self.rng);
        settlement.status = status;
        settlement.event_time = payment.event_time + delay;
        self.sequence += 1;
        self.queue.push(Reverse(Scheduled {
            due: settlement.event_time,
            sequence: self.sequence,
            event: settlement,
        }));
    }

    /// The next settlement due at or before `now`, if any.
    pub fn due(&mut self, now: DateTime<Utc>) -> Option<PaymentEvent> {
        if self.queue.peek()?.0.due > now {
            return None;
        }
        self.queue.pop().map(|Reverse(scheduled)| scheduled.event)
    }

    /// How many settlements are scheduled but not yet due.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticGenerator;
    use chrono::TimeZone;

    #[test]
    fn pending_payment_settles_one_to_three_days_later_with_the_same_transaction() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let mut generator = SyntheticGenerator::new(3, 0.0);
        let mut schedule = SettlementSchedule::new(1.0, 0.2, 3);
        let mut payments = Vec::new();
        for _ in 0..1_000 {
            let mut payment = generator.next_payment(start);
            schedule.on_payment(&mut payment);
            assert_eq!(payment.status, PaymentStatus::Pending);
            payments.push(payment);
        }
        assert!(
            schedule.due(start).is_none(),
            "nothing settles the same instant"
        );
        assert_eq!(schedule.waiting(), 1_000);
        let mut settled = Vec::new();
        while let Some(settlement) = schedule.due(start + Duration::days(4)) {
            settled.push(settlement);
        }
        assert_eq!(settled.len(), 1_000);
        assert!(
            settled
                .windows(2)
                .all(|w| w[0].event_time <= w[1].event_time)
        );
        let failed = settled
            .iter()
            .filter(|s| s.status == PaymentStatus::Failed)
            .count();
        assert!(
            (120..280).contains(&failed),
            "{failed} of 1000 failed at a 20% rate"
        );
        for settlement in &settled {
            let payment = payments
                .iter()
                .find(|p| p.transaction_id == settlement.transaction_id)
                .unwrap();
            assert_ne!(settlement.event_id, payment.event_id);
            assert_ne!(settlement.status, PaymentStatus::Pending);
            let delay = settlement.event_time - payment.event_time;
            assert!(
                delay >= SETTLEMENT_DELAY.0 && delay < SETTLEMENT_DELAY.1,
                "{delay}"
            );
            assert_eq!(settlement.amount, payment.amount);
        }
    }

    #[test]
    fn share_zero_leaves_payments_settled() {
        let mut generator = SyntheticGenerator::new(3, 0.0);
        let mut schedule = SettlementSchedule::new(0.0, 0.2, 3);
        let mut payment = generator.next_payment(Utc::now());
        schedule.on_payment(&mut payment);
        assert_eq!(payment.status, PaymentStatus::Success);
        assert_eq!(schedule.waiting(), 0);
    }
}
