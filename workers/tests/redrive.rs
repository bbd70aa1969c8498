//! `fintech redrive` on a lake whose dead letters hold both events an older decoder refused
//! and payloads that are still bad: the first reach silver once, the second stay put, and a
//! second redrive changes nothing.

mod common;

use chrono::{NaiveDate, TimeZone, Utc};
use common::on_embedded_postgres;
use fintech_workers::bronze::decode::{DeadLetterColumns, DeadLetterKind, DecodeError};
use fintech_workers::bronze::{self, layout};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics};
use fintech_workers::producer::{EventStream, ProducerMetrics, StreamConfig};
use fintech_workers::source::SourceMessage;
use fintech_workers::storage::StorageOptions;
use fintech_workers::warehouse::WarehouseOptions;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const GOOD: usize = 40;
const DAY: (i32, u32, u32) = (2026, 11, 1);

/// Writes one dead-letter file of `GOOD` valid events (refused, say, by a decoder that did
/// not know a field yet) and three payloads that no decoder accepts.
async fn dead_letters(lake: &StorageOptions) {
    let (store, root) = lake.open().unwrap();
    let config = StreamConfig {
        seed: 5,
        simulated_start: Some(Utc.with_ymd_and_hms(DAY.0, DAY.1, DAY.2, 0, 0, 0).unwrap()),
        ..StreamConfig::default()
    };
    let mut stream = EventStream::new(&config, ProducerMetrics::default()).unwrap();
    let mut columns = DeadLetterColumns::new("transactions");
    let refused = DecodeError {
        kind: DeadLetterKind::UnknownField,
        message: "unknown field `device_id`".to_owned(),
    };
    let timestamp = Utc.with_ymd_and_hms(DAY.0, DAY.1, DAY.2, 12, 0, 0).unwrap();
    let mut offset = 100;
    let mut message = |payload: Option<Vec<u8>>| {
        offset += 1;
        SourceMessage {
            partition: 2,
            offset,
            timestamp_ms: Some(timestamp.timestamp_millis()),
            key: Some(b"key".to_vec()),
            payload,
        }
    };
    for _ in 0..GOOD {
        let payload = stream.next_message().unwrap().message.payload;
        columns.append(&message(Some(payload)), &refused);
    }
    let bad = DecodeError {
        kind: DeadLetterKind::InvalidJson,
        message: "expected value".to_owned(),
    };
    columns.append(&message(Some(b"{not json".to_vec())), &bad);
    columns.append(&message(Some(b"[1, 2]".to_vec())), &bad);
    columns.append(&message(None), &bad);
    let range = layout::BatchRange {
        topic: "transactions".to_owned(),
        partition: 2,
        first_offset: 101,
        last_offset: offset,
    };
    let date = NaiveDate::from_ymd_opt(DAY.0, DAY.1, DAY.2).unwrap();
    let path = layout::dead_letter_file(&root, date, &range);
    let body = bronze::encode_parquet(&columns.finish(0)).unwrap();
    store.put(&path, PutPayload::from(body)).await.unwrap();
}

fn redrive(lake: &StorageOptions, extra: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["redrive", "--lake-url", &lake.lake_url])
        .args(["--from", "2026-10-31", "--to", "2026-11-02"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn scenario(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    dead_letters(&lake).await;
    let (store, root) = lake.open().unwrap();
    let loader = Loader::new(
        pool.clone(),
        store,
        root,
        LoaderConfig::default(),
        LoaderMetrics::default(),
    );

    let dry = redrive(&lake, &["--dry-run"]);
    assert!(
        dry.contains("43 dead letters in 1 files from 2026-10-31..=2026-11-02: 40 decode now (dry run: nothing written), 3 still fail (empty_payload 1, invalid_json 1, wrong_type 1)"),
        "{dry}"
    );
    let run = loader.run_once().await.unwrap();
    assert_eq!(run.files_pending, 0, "a dry run writes nothing");

    let wet = redrive(&lake, &[]);
    assert!(wet.contains("40 decode now"), "{wet}");
    assert!(!wet.contains("(0 new files"), "{wet}");
    // A redrive repeated on another day, before the loader ran, announces the same files in
    // a second manifest; they still load once.
    let (store, root) = lake.open().unwrap();
    let manifests: Vec<_> = store
        .list(Some(&layout::manifests_root(&root, "transactions")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(manifests.len(), 1);
    let copy = layout::manifest_folder(
        &root,
        "transactions",
        Utc::now().date_naive().succ_opt().unwrap(),
    )
    .join(manifests[0].location.filename().unwrap());
    let body = store
        .get(&manifests[0].location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    store.put(&copy, PutPayload::from(body)).await.unwrap();
    let run = loader.run_once().await.unwrap();
    assert_eq!(run.status, "SUCCESS", "{:?}", run.error);
    assert_eq!(run.rows_loaded + run.rows_duplicate, GOOD as u64);
    let in_silver: i64 =
        sqlx::query_scalar("select count(*) from raw.transactions where kafka_partition = 2")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(in_silver as u64, run.rows_loaded);

    // The same decoder again: nothing new to write, nothing new to load.
    let again = redrive(&lake, &[]);
    assert!(again.contains("(0 new files for the loader)"), "{again}");
    let run = loader.run_once().await.unwrap();
    assert_eq!((run.files_pending, run.rows_loaded), (0, 0));
    pool.close().await;
}

#[tokio::test]
async fn redriven_dead_letters_reach_silver_once_and_bad_ones_stay() {
    on_embedded_postgres(scenario).await;
}

#[test]
fn a_redrive_with_reversed_days_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["redrive", "--lake-url", "file:///tmp/unused-lake"])
        .args(["--from", "2026-11-02", "--to", "2026-11-01"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("--from 2026-11-02 is after --to 2026-11-01"),
        "{message}"
    );
}
