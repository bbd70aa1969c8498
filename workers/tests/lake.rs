//! The lake's guarantees on every object store it runs on: the in-memory store, a local
//! folder (the quickstart's and `file://` lakes) and MinIO (S3). Exactly-once bronze rests on
//! them: an object is created once and never replaced, publishing again keeps what is stored,
//! a partition's batch record is replaced and read back with its version, and listings come
//! back in order. (The batch record's fencing, on the same stores, is in `tests/fencing.rs`.)
//! Each guarantee is one function, run on each store by `on_every_store!`.

mod common;

use chrono::NaiveDate;
use fintech_workers::bronze::BatchRecord;
use fintech_workers::bronze::lake::{Lake, LakeError, Publication, RecordVersion, VersionedRecord};
use fintech_workers::bronze::layout::{self, BatchRange};
use fintech_workers::bronze::writer::{self, DaySplit};
use fintech_workers::faults::{FaultInjector, FaultRates};
use fintech_workers::source::SourceMessage;
use fintech_workers::synthetic::SyntheticGenerator;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

on_every_store!(
    an_object_is_created_once_and_never_replaced,
    publishing_a_batch_again_keeps_every_stored_object,
    a_batch_record_is_replaced_by_the_next_and_read_back,
    a_corrupt_batch_record_is_an_error_naming_it,
    manifest_days_come_in_date_order_without_other_folders,
    day_folders_are_listed_in_key_order_within_the_range,
    stored_positions_name_every_row_of_every_file,
);

fn range(partition: i32, first_offset: i64, last_offset: i64) -> BatchRange {
    BatchRange {
        topic: "transactions".to_owned(),
        partition,
        first_offset,
        last_offset,
    }
}

fn day(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
}

/// A batch of `count` payments of partition `partition` from `first_offset`, spread over
/// 2026-11-01 and 2026-11-02, published under the streamer's keys.
fn batch(lake: &Lake, partition: i32, first_offset: i64, count: i64) -> Publication {
    let mut generator = SyntheticGenerator::new(7, 0.0);
    let mut injector = FaultInjector::new(FaultRates::default(), 7);
    let mut split = DaySplit::new("transactions", 1024 * 1024);
    let start = day(1).and_hms_opt(23, 0, 0).unwrap().and_utc();
    for i in 0..count {
        let time = start + chrono::Duration::minutes(i * 2);
        let payload = injector
            .encode(generator.next_payment(time))
            .remove(0)
            .payload;
        let message = SourceMessage {
            partition,
            offset: first_offset + i,
            timestamp_ms: Some(time.timestamp_millis()),
            key: None,
            payload: Some(payload),
        };
        assert_eq!(split.add(&message), None);
    }
    let range = range(partition, first_offset, first_offset + count - 1);
    let files = split
        .encode(0, writer::batch_file_key(lake.root(), &range))
        .unwrap();
    Publication {
        manifest: layout::manifest(lake.root(), day(2), &range),
        range,
        files,
    }
}

async fn read(lake: &Lake, path: &Path) -> Vec<u8> {
    lake.store()
        .get(path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn an_object_is_created_once_and_never_replaced(lake: &Lake) {
    let path = layout::transactions_file(lake.root(), day(1), &range(0, 0, 9));
    assert!(lake.put_new(&path, b"first".to_vec()).await.unwrap());
    assert!(!lake.put_new(&path, b"second".to_vec()).await.unwrap());
    assert_eq!(read(lake, &path).await, b"first");
}

async fn publishing_a_batch_again_keeps_every_stored_object(lake: &Lake) {
    let first = batch(lake, 1, 0, 60);
    let files = first.files.len();
    assert_eq!(files, 2, "the batch spans two days");
    let published = lake.publish(vec![first.clone()]).await.unwrap();
    assert_eq!((published.written.len(), published.kept), (files, 0));
    let stored = read(lake, &first.files[0].path).await;

    // A replay of the same range (a streamer restarted after a crash) meets the same keys.
    let mut replay = batch(lake, 1, 0, 60);
    replay.files[0].body = b"not what was stored".to_vec();
    let published = lake.publish(vec![replay]).await.unwrap();
    assert_eq!((published.written.len(), published.kept), (0, files as u64));
    assert_eq!(read(lake, &first.files[0].path).await, stored);
    let manifest = lake.read_manifest(&first.manifest).await.unwrap();
    assert_eq!(manifest, first.record());
}

async fn a_batch_record_is_replaced_by_the_next_and_read_back(lake: &Lake) {
    assert_eq!(
        lake.read_batch_record("transactions", 0).await.unwrap(),
        None
    );
    let record = |last_offset| BatchRecord {
        range: range(0, 0, last_offset),
        files: vec![format!("bronze/transactions/x-{last_offset}.parquet")],
    };
    let first = lake
        .write_batch_record(&record(9), &RecordVersion::Absent)
        .await
        .unwrap();
    let second = lake.write_batch_record(&record(19), &first).await.unwrap();
    assert_ne!(first, second);
    assert_eq!(
        lake.read_batch_record("transactions", 0).await.unwrap(),
        Some(record(19))
    );
    let read = lake
        .read_versioned_batch_record("transactions", 0)
        .await
        .unwrap();
    assert_eq!(
        read,
        VersionedRecord {
            record: Some(record(19)),
            version: second
        }
    );
    assert_eq!(
        lake.read_batch_record("transactions", 1).await.unwrap(),
        None
    );
}

async fn a_corrupt_batch_record_is_an_error_naming_it(lake: &Lake) {
    let path = layout::batch_record(lake.root(), "transactions", 2);
    lake.store()
        .put(&path, PutPayload::from_static(b"{\"range\":"))
        .await
        .unwrap();
    let error = lake.read_batch_record("transactions", 2).await.unwrap_err();
    assert!(
        matches!(error, LakeError::CorruptBatchRecord { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(path.as_ref()), "{error}");
}

async fn manifest_days_come_in_date_order_without_other_folders(lake: &Lake) {
    for (date, partition) in [(day(3), 0), (day(1), 1), (day(2), 2)] {
        let path = layout::manifest(lake.root(), date, &range(partition, 0, 0));
        assert!(lake.put_new(&path, b"{}".to_vec()).await.unwrap());
    }
    let stray = layout::manifests_root(lake.root(), "transactions").join("notes.txt");
    assert!(lake.put_new(&stray, b"x".to_vec()).await.unwrap());
    let days: Vec<NaiveDate> = lake
        .manifest_days("transactions")
        .await
        .unwrap()
        .into_iter()
        .map(|(date, _)| date)
        .collect();
    assert_eq!(days, [day(1), day(2), day(3)]);
    let (_, folder) = &lake.manifest_days("transactions").await.unwrap()[1];
    let manifests = lake.manifests_in(folder).await.unwrap();
    assert_eq!(manifests.len(), 1);
    assert!(manifests[0].as_ref().ends_with(".json"), "{}", manifests[0]);
}

async fn day_folders_are_listed_in_key_order_within_the_range(lake: &Lake) {
    for (date, partition) in [
        (day(4), 2),
        (day(2), 1),
        (day(2), 0),
        (day(1), 0),
        (day(3), 0),
    ] {
        let path = layout::dead_letter_file(lake.root(), date, &range(partition, 0, 0));
        assert!(lake.put_new(&path, b"x".to_vec()).await.unwrap());
    }
    let listed = lake
        .list_days(layout::DEAD_LETTER_PREFIX, day(2), day(3))
        .await
        .unwrap();
    let days: Vec<_> = listed
        .iter()
        .map(|p| layout::date_of_key(p).unwrap())
        .collect();
    assert_eq!(days, [day(2), day(2), day(3)]);
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
}

async fn stored_positions_name_every_row_of_every_file(lake: &Lake) {
    lake.publish(vec![batch(lake, 0, 100, 40), batch(lake, 1, 0, 25)])
        .await
        .unwrap();
    let mut positions = lake
        .stored_positions(layout::TRANSACTIONS_PREFIX)
        .await
        .unwrap();
    positions.sort_unstable();
    let expected: Vec<(i32, i64)> = (100..140)
        .map(|offset| (0, offset))
        .chain((0..25).map(|offset| (1, offset)))
        .collect();
    assert_eq!(positions, expected);
    assert!(
        lake.stored_positions(layout::DEAD_LETTER_PREFIX)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A file the Parquet reader panics on instead of returning an error (a column chunk at a
/// negative offset, found by the `bronze_reader` fuzz target) reads as unreadable Parquet,
/// which the loader sets aside, rather than stopping the process.
#[tokio::test]
async fn a_file_the_parquet_reader_panics_on_reads_as_unreadable() {
    let lake = common::stores::in_memory().lake;
    let path = layout::transactions_root(lake.root()).join("corrupt.parquet");
    let bytes = include_bytes!("fixtures/negative-column-offset.parquet");
    lake.store()
        .put(&path, PutPayload::from_static(bytes))
        .await
        .unwrap();
    let outcome = match lake.read_parquet(&path).await {
        Err(error) => Err(error),
        Ok(file) => file.batches().collect::<Result<Vec<_>, _>>().map(drop),
    };
    match outcome {
        Err(LakeError::Parquet { path: named, .. }) => assert_eq!(named, path.to_string()),
        other => panic!("expected unreadable Parquet, got {other:?}"),
    }
}

/// A footer whose unknown field 100 is a list of 1,000 lists, each declaring 2^31 - 1 booleans:
/// 6 KB the Parquet reader would spend about 2 x 10^12 steps skipping.
fn footer_declaring_billions_of_values() -> Vec<u8> {
    let mut metadata = vec![0x09, 0xc8, 0x01, 0xf9, 0xe8, 0x07];
    for _ in 0..1_000 {
        metadata.extend_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0xff, 0x07]);
    }
    metadata.push(0);
    let mut file = b"PAR1".to_vec();
    file.extend_from_slice(&metadata);
    file.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    file.extend_from_slice(b"PAR1");
    file
}

/// Reads `bytes` as a bronze file on a thread of its own, so that a reader stuck on it fails
/// the test after a minute instead of hanging it; returns why it is unreadable.
fn unreadable_within_a_minute(bytes: Vec<u8>) -> String {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(async {
            let lake = common::stores::in_memory().lake;
            let path = layout::transactions_root(lake.root()).join("costly-footer.parquet");
            lake.store().put(&path, bytes.into()).await.unwrap();
            match lake.read_parquet(&path).await {
                Err(LakeError::Parquet { source, .. }) => Ok(source.to_string()),
                Err(other) => Err(format!("another error: {other}")),
                Ok(_) => Err("the file opened".to_owned()),
            }
        });
        let _ = done.send(result);
    });
    outcome
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("reading the file took more than a minute")
        .unwrap()
}

/// A file whose footer declares far more values to skip than it has bytes reads as
/// unreadable Parquet at once, so the loader sets it aside instead of holding its run for
/// hours: a crafted footer of billions of values, and the file the `bronze_reader` fuzz
/// target found (the reader spends seconds to minutes on its 5 KB before failing).
#[test]
fn a_footer_that_would_keep_the_reader_busy_reads_as_unreadable_at_once() {
    for (name, bytes) in [
        ("crafted", footer_declaring_billions_of_values()),
        (
            "found by fuzzing",
            include_bytes!("fixtures/costly-footer.parquet").to_vec(),
        ),
    ] {
        let reason = unreadable_within_a_minute(bytes);
        assert!(reason.contains("footer of"), "{name}: {reason}");
    }
}
