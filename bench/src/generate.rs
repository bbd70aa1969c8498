//! Stage 1: event generation and JSON encoding, the producer's work without Kafka.
//!
//! The headline figure runs the producer's own [`EventStream`] (clock, synthetic payments,
//! settlements, fault injector, JSON); a breakdown then times payment generation and JSON
//! encoding apart, in chunks, to show where the time goes.

use std::time::{Duration, Instant};

use chrono::TimeDelta;

use super::report::Report;
use fintech_workers::producer::{EventStream, ProducerMetrics};
use fintech_workers::synthetic::SyntheticGenerator;

/// Flags of `fintech-bench generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Messages to make.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,

    /// Payments generated and then encoded at a time in the breakdown.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk: u64,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the benchmark.
pub fn run(args: &GenerateArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "generate",
        "event generation and JSON encoding (the producer's EventStream, no Kafka)",
    );
    report
        .parameter("events", args.events)
        .parameter("chunk", args.chunk)
        .parameter("seed", args.seed);

    let mut stream =
        EventStream::new(&super::stream_config(args.seed), ProducerMetrics::default())?;
    let started = Instant::now();
    let mut bytes = 0u64;
    for _ in 0..args.events {
        bytes += stream.next_message()?.message.payload.len() as u64;
    }
    report.throughput("", args.events, started.elapsed(), Some(bytes));
    report.number(
        "average_message_bytes",
        bytes as f64 / args.events as f64,
        0,
    );

    // The same work split in two, on synthetic payments only: the settlement schedule and
    // the fault injector are what the headline adds on top.
    let mut generator = SyntheticGenerator::new(args.seed, 0.004);
    let (mut generating, mut encoding) = (Duration::ZERO, Duration::ZERO);
    let mut encoded_bytes = 0u64;
    let mut done = 0u64;
    let start = super::timeline_start();
    while done < args.events {
        let n = args.chunk.min(args.events - done);
        let clock = Instant::now();
        let payments: Vec<_> = (done..done + n)
            .map(|i| generator.next_payment(start + TimeDelta::seconds(i as i64)))
            .collect();
        generating += clock.elapsed();
        let clock = Instant::now();
        for payment in &payments {
            encoded_bytes += payment.to_json().len() as u64;
        }
        encoding += clock.elapsed();
        done += n;
    }
    report.throughput("generate_", args.events, generating, None);
    report.throughput("json_encode_", args.events, encoding, Some(encoded_bytes));
    report.peak_rss();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_event_it_was_asked_for() {
        let args = GenerateArgs {
            events: 500,
            chunk: 200,
            seed: 1,
        };
        let report = run(&args).unwrap();
        assert_eq!(report.get_f64("rows"), Some(500.0));
        assert_eq!(report.get_f64("json_encode_rows"), Some(500.0));
        assert!(report.get_f64("rows_per_sec").unwrap() > 0.0);
        assert!(report.get_f64("average_message_bytes").unwrap() > 300.0);
    }
}
