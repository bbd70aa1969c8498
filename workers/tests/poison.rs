//! Arbitrary input from the decoder to PostgreSQL: payloads generated from a seed (payment
//! events with a field replaced by arbitrary text, extreme or malformed dates and decimals,
//! other JSON values, unknown fields, escapes of lone surrogates, cut or corrupted bytes)
//! go through the real streamer, lake and loader. Each message must end in exactly one
//! place (a row in silver, a rejected row, a duplicate of an event in silver, or a dead
//! letter), and no load or transform run may fail because of any of them.

mod common;

use chrono::Utc;
use fintech_workers::bronze::{Lake, layout};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics, RunStatus};
use fintech_workers::sink::{ChannelSink, EventSink, Message};
use fintech_workers::source::{CommittedPositions, InProcessSource};
use fintech_workers::storage::StorageOptions;
use fintech_workers::streamer::{BatchPolicy, Streamer, StreamerMetrics};
use fintech_workers::synthetic::SyntheticGenerator;
use fintech_workers::transform::{self, Project, TransformOptions};
use fintech_workers::warehouse::WarehouseOptions;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Messages per run: enough for every kind of damage to occur many times.
const MESSAGES: usize = 1_500;

/// Text that has broken pipelines: NUL and other control characters, right-to-left and
/// zero-width marks, escapes as text, non-BMP characters, quotes, SQL and very long text.
const NASTY_TEXT: &[&str] = &[
    "\u{0}",
    "a\u{0}b",
    "\u{1}\u{7}\u{1b}[31m",
    "\t\r\n",
    "\\N",
    "\\",
    "\u{202e}\u{200f}evil\u{200b}",
    "\u{feff}",
    "🦀💳",
    "'; drop table raw.transactions; --",
    "\"",
    "",
    " ",
];

/// Event times: extremes PostgreSQL or chrono cannot hold, leap days, time zones, garbage.
const NASTY_TIMES: &[&str] = &[
    "0000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "2099-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
    "2024-02-29T12:00:00+05:30",
    "2023-02-29T12:00:00Z",
    "2026-11-01T25:61:61Z",
    "2026-11-01",
    "2026-11-01T10:00:00",
    "yesterday",
    "",
];

/// Amounts: the strict format's edges and beyond.
const NASTY_AMOUNTS: &[&str] = &[
    "0",
    "0.00",
    "-0.01",
    "-100.00",
    "0.001",
    "1e3",
    "NaN",
    "Infinity",
    "999999999999.99",
    "999999999999999.99",
    "9999999999999999.99",
    "99999999999999999999.99",
    "1,000.00",
    " 12.00",
    "+5.00",
    ".50",
    "5.",
    "",
];

/// Arbitrary text of up to `max` characters, any code point but surrogates.
fn arbitrary_text(rng: &mut StdRng, max: usize) -> String {
    let length = rng.random_range(0..=max);
    (0..length)
        .map(|_| match rng.random_range(0..4) {
            0 => char::from(rng.random_range(0u8..0x80)),
            1 => char::from_u32(rng.random_range(0x80..0xD800)).unwrap_or('?'),
            2 => char::from_u32(rng.random_range(0xE000..0x11_0000)).unwrap_or('?'),
            _ => char::from(rng.random_range(0u8..0x20)),
        })
        .collect()
}

/// An arbitrary JSON value, nested at most `depth` deep.
fn arbitrary_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random_bool(0.5)),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e12),
        4 => Value::String(arbitrary_text(rng, 40)),
        5 => json!(u64::MAX),
        6 => Value::Array(
            (0..rng.random_range(0..3))
                .map(|_| arbitrary_json(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..3))
                .map(|_| (arbitrary_text(rng, 8), arbitrary_json(rng, depth - 1)))
                .collect(),
        ),
    }
}

fn pick<'a>(rng: &mut StdRng, choices: &[&'a str]) -> &'a str {
    choices[rng.random_range(0..choices.len())]
}

/// One payload: a good event, damaged in one of many ways (or not at all).
fn payload(rng: &mut StdRng, generator: &mut SyntheticGenerator) -> Vec<u8> {
    let event = generator.next_payment(Utc::now());
    let mut json: Value = serde_json::from_slice(&event.to_json()).unwrap();
    let fields: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
    let field = fields[rng.random_range(0..fields.len())].clone();
    match rng.random_range(0..12) {
        0 => {}
        1 => json[&field] = Value::String(pick(rng, NASTY_TEXT).to_owned()),
        2 => json[&field] = Value::String(arbitrary_text(rng, 60)),
        3 => json["event_time"] = Value::String(pick(rng, NASTY_TIMES).to_owned()),
        4 => json["amount"] = Value::String(pick(rng, NASTY_AMOUNTS).to_owned()),
        5 => json[&field] = arbitrary_json(rng, 2),
        6 => {
            json.as_object_mut().unwrap().remove(&field);
        }
        7 => json[arbitrary_text(rng, 12)] = arbitrary_json(rng, 1),
        8 => {
            // A lone surrogate, which JSON text can spell but no Rust string can hold.
            let text = json.to_string().replacen(
                &format!("\"{field}\":"),
                &format!("\"{field}\":\"\\ud800\",\"x{field}\":"),
                1,
            );
            return text.into_bytes();
        }
        9 => {
            let mut bytes = json.to_string().into_bytes();
            let cut = rng.random_range(0..bytes.len());
            bytes.truncate(cut);
            return bytes;
        }
        10 => {
            let mut bytes = json.to_string().into_bytes();
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
            return bytes;
        }
        _ => json["customer_id"] = Value::String(pick(rng, NASTY_TEXT).to_owned()),
    }
    json.to_string().into_bytes()
}

/// Streams `MESSAGES` payloads of `seed` into `lake`, the in-process topic going on from
/// `positions`; returns how many were sent.
async fn stream(lake: &StorageOptions, positions: &CommittedPositions, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut generator = SyntheticGenerator::new(seed, 0.01);
    let (mut sink, receiver) = ChannelSink::new(1_000);
    let source = InProcessSource::new("transactions", receiver, 3, positions.clone());
    let policy = BatchPolicy {
        max_rows: 400,
        ..BatchPolicy::default()
    };
    let streamer = Streamer::new(
        source,
        Lake::open(lake).unwrap(),
        policy,
        StreamerMetrics::default(),
    );
    let streaming = tokio::spawn(streamer.run(CancellationToken::new()));
    for n in 0..MESSAGES {
        let message = Message {
            key: format!("key-{n}"),
            payload: payload(&mut rng, &mut generator),
        };
        sink.send(message).await.unwrap();
    }
    drop(sink);
    let summary = streaming.await.unwrap().unwrap();
    assert_eq!(summary.messages as usize, MESSAGES);
    MESSAGES
}

on_every_warehouse!(every_arbitrary_message_ends_in_exactly_one_place_and_no_run_fails);

async fn every_arbitrary_message_ends_in_exactly_one_place_and_no_run_fails(
    options: WarehouseOptions,
) {
    let pool = options.connect_and_migrate().await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    let positions = CommittedPositions::default();
    let (mut sent, mut bronze_before) = (0, 0);
    for seed in [1, 2, 3] {
        sent += stream(&lake, &positions, seed).await;

        // The lake: every message once, as a bronze row or a dead letter.
        let opened = Lake::open(&lake).unwrap();
        let rows = opened
            .stored_positions(layout::TRANSACTIONS_PREFIX)
            .await
            .unwrap();
        let dead = opened
            .stored_positions(layout::DEAD_LETTER_PREFIX)
            .await
            .unwrap();
        assert!(!rows.is_empty() && !dead.is_empty(), "seed {seed}");
        let bronze_rows = rows.len() as u64 - bronze_before;
        bronze_before += bronze_rows;
        common::assert_each_once(rows.into_iter().chain(dead).collect(), sent);

        // Silver: every bronze row loaded, rejected with a reason, or a repeat of a loaded
        // event; the run succeeds.
        let before: i64 = sqlx::query_scalar("select count(*) from raw.transactions")
            .fetch_one(&pool)
            .await
            .unwrap();
        let loader = Loader::new(
            pool.clone(),
            opened,
            LoaderConfig::default(),
            LoaderMetrics::default(),
        );
        let run = loader.run_once().await.unwrap();

        assert_eq!(
            run.status,
            RunStatus::Success,
            "seed {seed}: {:?}",
            run.error
        );
        assert_eq!(run.files_quarantined, 0);
        assert_eq!(run.stats.read, bronze_rows);
        assert_eq!(
            run.rows_loaded + run.stats.rejected_total() + run.rows_duplicate,
            bronze_rows,
            "seed {seed}: {run:?}"
        );
        let after: i64 = sqlx::query_scalar("select count(*) from raw.transactions")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!((after - before) as u64, run.rows_loaded);

        // Gold: every model builds from what silver took in.
        let options = TransformOptions::default();
        let report = transform::run(&pool, &Project::embedded().unwrap(), &options)
            .await
            .unwrap();
        let broken: Vec<_> = report
            .nodes
            .iter()
            .filter(|node| node.kind != transform::NodeKind::Test && node.error.is_some())
            .map(|node| format!("{}: {:?}", node.node, node.error))
            .collect();
        assert!(broken.is_empty(), "seed {seed}: {broken:?}");
    }
    pool.close().await;
}
