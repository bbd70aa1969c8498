//! `fintech redrive` on a lake whose dead letters hold both events an older decoder refused
//! and payloads that are still bad, in two same-named files of a batch that spanned midnight:
//! the first reach silver once, the second stay put, and a second redrive changes nothing.

mod common;

use chrono::{NaiveDate, TimeZone, Utc};
use common::on_embedded_postgres;
use fintech_workers::bronze::decode::{DeadLetterColumns, DeadLetterKind, DecodeError};
use fintech_workers::bronze::{self, Lake, layout};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics, RunStatus};
use fintech_workers::producer::{EventStream, ProducerMetrics, StreamConfig};
use fintech_workers::source::SourceMessage;
use fintech_workers::storage::StorageOptions;
use fintech_workers::warehouse::WarehouseOptions;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const GOOD: usize = 40;
const DAY: (i32, u32, u32) = (2026, 11, 1);

/// Writes the dead letters of one streamer batch that spanned midnight: a file in each of two
/// day folders, under the batch's one name. Each holds `GOOD` valid events (refused, say, by
/// a decoder that did not know a field yet) and three payloads that no decoder accepts.
async fn dead_letters(lake: &StorageOptions) {
    let range = layout::BatchRange {
        topic: "transactions".to_owned(),
        partition: 2,
        first_offset: 101,
        last_offset: 100 + 2 * (GOOD as i64 + 3),
    };
    let first = NaiveDate::from_ymd_opt(DAY.0, DAY.1, DAY.2).unwrap();
    dead_letter_file(lake, &range, 5, first, 101).await;
    let second = first.succ_opt().unwrap();
    dead_letter_file(lake, &range, 6, second, 101 + GOOD as i64 + 3).await;
}

/// One dead-letter file of `range` in the folder of `day`, its records from `first_offset` on.
async fn dead_letter_file(
    lake: &StorageOptions,
    range: &layout::BatchRange,
    seed: u64,
    day: NaiveDate,
    first_offset: i64,
) {
    let (store, root) = lake.open().unwrap();
    let config = StreamConfig {
        seed,
        simulated_start: Some(Utc.with_ymd_and_hms(DAY.0, DAY.1, DAY.2, 0, 0, 0).unwrap()),
        ..StreamConfig::default()
    };
    let mut stream = EventStream::new(&config, ProducerMetrics::default()).unwrap();
    let mut columns = DeadLetterColumns::new("transactions");
    let refused = DecodeError {
        kind: DeadLetterKind::UnknownField,
        message: "unknown field `device_id`".to_owned(),
    };
    let timestamp = day.and_hms_opt(0, 30, 0).unwrap().and_utc();
    let mut offset = first_offset - 1;
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
    let path = layout::dead_letter_file(&root, day, range);
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
    let loader = Loader::new(
        pool.clone(),
        Lake::open(&lake).unwrap(),
        LoaderConfig::default(),
        LoaderMetrics::default(),
    );

    let dry = redrive(&lake, &["--dry-run"]);
    assert!(
        dry.contains("86 dead letters in 2 files from 2026-10-31..=2026-11-02: 80 decode now (dry run: nothing written), 6 still fail (empty_payload 2, invalid_json 2, wrong_type 2)"),
        "{dry}"
    );
    let run = loader.run_once().await.unwrap();
    assert_eq!(run.files_pending, 0, "a dry run writes nothing");

    let wet = redrive(&lake, &[]);
    assert!(wet.contains("80 decode now"), "{wet}");
    assert!(!wet.contains("(0 new files"), "{wet}");
    // A redrive repeated on another day, before the loader ran, announces the same files in
    // a second manifest; they still load once.
    let (store, root) = lake.open().unwrap();
    let manifests: Vec<_> = store
        .list(Some(&layout::manifests_root(&root, "transactions")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        manifests.len(),
        2,
        "one per dead-letter file, though they share a name"
    );
    let tomorrow = Utc::now().date_naive().succ_opt().unwrap();
    for manifest in &manifests {
        let copy = layout::manifest_folder(&root, "transactions", tomorrow)
            .join(manifest.location.filename().unwrap());
        let body = store
            .get(&manifest.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        store.put(&copy, PutPayload::from(body)).await.unwrap();
    }
    let run = loader.run_once().await.unwrap();
    assert_eq!(run.status, RunStatus::Success, "{:?}", run.error);
    assert_eq!(run.rows_loaded + run.rows_duplicate, 2 * GOOD as u64);
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

/// A redrive stopped at each of its writes (each new bronze file, each manifest), then run
/// again: every redriven event is in bronze exactly once.
#[tokio::test]
async fn a_redrive_stopped_at_any_write_stores_each_event_once() {
    use common::outage::StoreOutage;
    use fintech_workers::redrive::{self, RedriveOptions};
    use std::sync::Arc;

    let options = RedriveOptions {
        from: NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(),
        to: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        topic: "transactions".to_owned(),
        max_message_bytes: 1 << 20,
        dry_run: false,
    };
    let lake_with = |lake: &StorageOptions, first: usize| {
        let (store, root) = lake.open().unwrap();
        let outage = Arc::new(StoreOutage::from_put(store, first));
        (Lake::new(outage.clone(), root), outage)
    };
    // A clean redrive, to count the writes there are to stop at.
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    dead_letters(&lake).await;
    let (counting, outage) = lake_with(&lake, usize::MAX);
    redrive::redrive(&counting, &options).await.unwrap();
    let writes = outage.puts();
    assert!(writes >= 4, "{writes} writes");

    for first in 1..=writes {
        let folder = tempfile::tempdir().unwrap();
        let lake = StorageOptions::local(folder.path()).unwrap();
        dead_letters(&lake).await;
        let (stopped, _) = lake_with(&lake, first);
        assert!(
            redrive::redrive(&stopped, &options).await.is_err(),
            "write {first}"
        );
        let report = redrive::redrive(&Lake::open(&lake).unwrap(), &options)
            .await
            .unwrap();
        assert_eq!(report.redriven, 2 * GOOD as u64, "write {first}");
        let rows = common::stored_offsets(&lake, layout::TRANSACTIONS_PREFIX).await;
        common::assert_each_once(rows, 2 * GOOD);
    }
}
