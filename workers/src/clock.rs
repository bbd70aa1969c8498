//! Where event times come from: the wall clock, or a simulated timeline.
//!
//! A simulated clock makes a run deterministic for a given seed and lets a short run cover
//! several days of payments, so that daily summaries and late settlements have real work.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The producer's source of event times.
#[derive(Debug)]
pub enum EventClock {
    /// Event times are the wall clock when the event is made.
    Live,
    /// Event times start at a fixed instant and advance by random gaps (exponentially
    /// distributed, so arrivals form a Poisson process) averaging `mean_gap`.
    Simulated {
        /// The current simulated time.
        now: DateTime<Utc>,
        /// Mean time between two payments.
        mean_gap: Duration,
        /// Draws the gaps.
        rng: Box<StdRng>,
    },
}

impl EventClock {
    /// A simulated clock starting at `start` with `payments_per_day` payments a day on average.
    pub fn simulated(start: DateTime<Utc>, payments_per_day: u32, seed: u64) -> Self {
        let per_day = i64::from(payments_per_day.max(1));
        Self::Simulated {
            now: start,
            mean_gap: Duration::microseconds(86_400_000_000 / per_day),
            rng: Box::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The current time, without advancing.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::Live => Utc::now(),
            Self::Simulated { now, .. } => *now,
        }
    }

    /// Advances to the time of the next payment and returns it.
    pub fn tick(&mut self) -> DateTime<Utc> {
        match self {
            Self::Live => Utc::now(),
            Self::Simulated { now, mean_gap, rng } => {
                // Inverse-transform sampling of an exponential gap; 1 - u is in (0, 1].
                let u: f64 = rng.random();
                let factor = -(1.0 - u).ln();
                let micros = (mean_gap.num_microseconds().unwrap_or(0) as f64 * factor) as i64;
                *now += Duration::microseconds(micros);
                *now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn simulated_clock_is_deterministic_and_keeps_its_average_rate() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let run = |seed| {
            let mut clock = EventClock::simulated(start, 10_000, seed);
            (0..20_000).map(|_| clock.tick()).collect::<Vec<_>>()
        };
        let times = run(42);
        assert_eq!(times, run(42));
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // 20,000 payments at 10,000 a day span about two days.
        let span = (*times.last().unwrap() - start).num_minutes() as f64 / 1440.0;
        assert!((1.9..2.1).contains(&span), "span {span} days");
    }
}
