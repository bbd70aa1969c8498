//! Stage 2: decoding JSON messages into Arrow and encoding Arrow as bronze Parquet, the
//! streamer's CPU work without Kafka or object storage.
//!
//! Each batch of messages is made first (not timed), then decoded the way the streamer adds a
//! message to its open batch ([`decode::decode_row`] into the [`TransactionColumns`] of its
//! partition and UTC day), then each part is encoded with [`bronze::encode_parquet`], the
//! streamer's encoder, so the files have the sizes the streamer would write. The same
//! messages are also decoded by the reference decoder alone ([`decode::decode`], serde into
//! an owned event), the decoder before the fast path, for the ratio; and the first batch's
//! files are encoded again with each codec compared in `docs/benchmarks.md`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use chrono::{NaiveDate, Utc};
use parquet::basic::{Compression, ZstdLevel};

use super::report::{MB, Report, Target};
use fintech_workers::bronze::{self, decode, decode::TransactionColumns, layout};
use fintech_workers::producer::{EventStream, ProducerMetrics};
use fintech_workers::source::{InProcessSource, SourceMessage};
use fintech_workers::streamer::BatchPolicy;

/// Flags of `fintech-bench bronze`.
#[derive(Debug, Clone, clap::Args)]
pub struct BronzeArgs {
    /// Messages to decode and encode.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// Messages per batch, as the streamer's --batch-max-rows.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: u64,

    /// Kafka partitions the messages are spread over by key (one file per partition and day).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1_000))]
    pub partitions: i32,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the benchmark.
pub fn run(args: &BronzeArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "bronze",
        "decode JSON into Arrow and encode Arrow as Parquet (the streamer's code, no I/O)",
    );
    report
        .parameter("rows", args.rows)
        .parameter("batch_rows", args.batch_rows)
        .parameter("partitions", args.partitions)
        .parameter("seed", args.seed);

    let max_message_bytes = BatchPolicy::default().max_message_bytes;
    let mut stream =
        EventStream::new(&super::stream_config(args.seed), ProducerMetrics::default())?;
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let (mut decoding, mut encoding) = (Duration::ZERO, Duration::ZERO);
    let mut reference_decoding = Duration::ZERO;
    // The first batch's files, encoded again with each codec at the end.
    let mut sample: Vec<RecordBatch> = Vec::new();
    let (mut json_bytes, mut arrow_bytes, mut parquet_bytes) = (0u64, 0u64, 0u64);
    let (mut rows, mut dead_letters, mut files, mut held_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut done = 0u64;
    while done < args.rows {
        let n = args.batch_rows.min(args.rows - done);
        let mut messages = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let mut message = stream.next_message()?.message;
            // As a Kafka source delivers it: exactly as long as it is.
            message.payload.shrink_to_fit();
            let partition = InProcessSource::partition_of(message.key.as_bytes(), args.partitions);
            let offset = offsets.entry(partition).or_insert(0);
            messages.push(SourceMessage {
                partition,
                offset: *offset,
                timestamp_ms: Some(Utc::now().timestamp_millis()),
                key: Some(message.key.into_bytes()),
                payload: Some(message.payload),
            });
            *offset += 1;
        }
        let batch_bytes: u64 = messages.iter().map(|m| m.size() as u64).sum();
        json_bytes += batch_bytes;
        held_bytes = held_bytes.max(batch_bytes);

        let clock = Instant::now();
        let mut parts: BTreeMap<(i32, NaiveDate), TransactionColumns> = BTreeMap::new();
        for message in &messages {
            let decoded =
                decode::decode_row(message.payload.as_deref(), max_message_bytes, |row| {
                    parts
                        .entry((message.partition, row.event_date()))
                        .or_default()
                        .append(row, message);
                });
            match decoded {
                Ok(()) => rows += 1,
                Err(_) => dead_letters += 1,
            }
        }
        let ingested_at = Utc::now().timestamp_micros();
        let batches: Vec<RecordBatch> = parts
            .into_values()
            .map(|columns| columns.finish(ingested_at))
            .collect();
        decoding += clock.elapsed();

        // The same messages through the reference decoder alone (serde into an owned event,
        // then its columns): the decoder before the fast path, for the ratio.
        let clock = Instant::now();
        let mut reference: BTreeMap<(i32, NaiveDate), TransactionColumns> = BTreeMap::new();
        for message in &messages {
            if let Ok(event) = decode::decode(message.payload.as_deref(), max_message_bytes) {
                reference
                    .entry((message.partition, layout::utc_date(event.event_time)))
                    .or_default()
                    .append_event(&event, message);
            }
        }
        let reference: Vec<RecordBatch> = reference
            .into_values()
            .map(|columns| columns.finish(ingested_at))
            .collect();
        reference_decoding += clock.elapsed();
        drop((messages, reference));
        if sample.is_empty() {
            sample = batches.clone();
        }

        arrow_bytes += batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum::<u64>();
        let clock = Instant::now();
        for batch in &batches {
            parquet_bytes += bronze::encode_parquet(batch)?.len() as u64;
            files += 1;
        }
        encoding += clock.elapsed();
        done += n;
    }

    report.throughput("", rows, decoding + encoding, Some(json_bytes));
    report.throughput("decode_", rows, decoding, Some(json_bytes));
    report.throughput(
        "reference_decode_",
        rows,
        reference_decoding,
        Some(json_bytes),
    );
    report.number(
        "decode_speedup",
        reference_decoding.as_secs_f64() / decoding.as_secs_f64().max(f64::EPSILON),
        2,
    );
    report.throughput("encode_", rows, encoding, Some(arrow_bytes));
    report
        .figure("dead_letters", dead_letters)
        .figure("files", files)
        .number("json_mb", json_bytes as f64 / MB, 1)
        .number("arrow_mb", arrow_bytes as f64 / MB, 1)
        .number("parquet_mb", parquet_bytes as f64 / MB, 1)
        .number(
            "json_to_parquet_ratio",
            json_bytes as f64 / parquet_bytes.max(1) as f64,
            1,
        )
        // The benchmark holds one batch of messages to keep their making out of the timing;
        // the streamer drops each message once it is decoded.
        .number("messages_held_mb", held_bytes as f64 / MB, 1);
    // No memory target here: this process also holds a batch of messages and the producer's
    // settlement schedule, which a streamer does not; the streamer's own memory is measured
    // by `fintech-bench stream`.
    compare_codecs(&sample, &mut report)?;
    report
        .peak_rss()
        .target(Target::at_least(
            "decode_rows_per_sec",
            2_000_000.0,
            "rows/s",
        ))
        .target(Target::at_least("rows_per_sec", 1_000_000.0, "rows/s"));
    Ok(report)
}

/// Codecs compared on the first batch's files, with the bronze writer's other settings.
fn codecs() -> Vec<(&'static str, Compression)> {
    let zstd = |level| Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default());
    vec![
        ("zstd1", zstd(1)),
        ("zstd3", zstd(3)),
        ("lz4", Compression::LZ4_RAW),
        ("snappy", Compression::SNAPPY),
        ("uncompressed", Compression::UNCOMPRESSED),
    ]
}

/// Encodes `batches` with each codec: rows per second and the size of the files.
fn compare_codecs(batches: &[RecordBatch], report: &mut Report) -> anyhow::Result<()> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    for (name, compression) in codecs() {
        let clock = Instant::now();
        let mut bytes = 0u64;
        for batch in batches {
            let properties = bronze::writer_properties_with(compression);
            bytes += bronze::encode_parquet_with(batch, properties)?.len() as u64;
        }
        let seconds = clock.elapsed().as_secs_f64();
        report
            .number(
                &format!("codec_{name}_rows_per_sec"),
                super::report::per_second(rows as u64, seconds),
                0,
            )
            .number(&format!("codec_{name}_mb"), bytes as f64 / MB, 2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_encodes_every_row_into_files_per_partition_and_day() {
        let args = BronzeArgs {
            rows: 1_200,
            batch_rows: 500,
            partitions: 3,
            seed: 2,
        };
        let report = run(&args).unwrap();
        assert_eq!(report.get_f64("rows"), Some(1_200.0));
        assert_eq!(report.get_f64("dead_letters"), Some(0.0));
        // Three batches, each with three partitions.
        assert!(report.get_f64("files").unwrap() >= 9.0);
        assert!(report.get_f64("decode_rows_per_sec").unwrap() > 0.0);
        assert!(report.get_f64("parquet_mb").unwrap() > 0.0);
    }
}
