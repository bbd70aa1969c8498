//! Lakes of payments with every kind of bad input the loader must handle, written as the
//! streamer writes them: for the loader's tests and its crash points.

use chrono::{TimeZone, Utc};
use fintech_workers::bronze::Lake;
use fintech_workers::faults::FaultRates;
use fintech_workers::in_process::InProcessPipeline;
use fintech_workers::producer::{EventStream, ProducerMetrics, StreamConfig};
use fintech_workers::source::CommittedPositions;
use fintech_workers::storage::StorageOptions;
use fintech_workers::streamer::BatchPolicy;

/// Payments of `seed` from 2026-11-01, some malformed, sent twice, of a non-positive amount
/// or without a customer.
pub fn faulty_stream(seed: u64) -> StreamConfig {
    StreamConfig {
        seed,
        simulated_start: Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()),
        payments_per_day: 2_000,
        faults: FaultRates {
            malformed_json: 0.02,
            duplicate: 0.05,
            non_positive_amount: 0.03,
            null_customer_id: 0.03,
            ..FaultRates::default()
        },
        ..StreamConfig::default()
    }
}

/// Produces `count` messages of [`faulty_stream`] through the in-process channel and
/// streams them into `lake` in batches of `batch_rows`. `positions` carries the in-process
/// topic's offsets from one fill to the next, as Kafka would.
pub async fn fill_lake(
    lake: &StorageOptions,
    positions: &CommittedPositions,
    seed: u64,
    count: u64,
    batch_rows: usize,
) {
    let mut events = EventStream::new(&faulty_stream(seed), ProducerMetrics::default()).unwrap();
    InProcessPipeline::new(Lake::open(lake).unwrap(), 3)
        .with_positions(positions.clone())
        .with_policy(BatchPolicy {
            max_rows: batch_rows,
            ..BatchPolicy::default()
        })
        .run(&mut events, count, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
}
