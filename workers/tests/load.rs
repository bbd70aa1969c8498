//! The loader on the embedded PostgreSQL and on the real server: every count of the audit and
//! the quality tables, idempotent reloads, a failed run that leaves nothing behind, the
//! silent-failure view, and the replay of a date range.

mod common;

use std::collections::HashSet;

use chrono::Utc;
use common::{fresh_database, testenv_var};
use fintech_workers::bronze::decode;
use fintech_workers::bronze::layout::{self, BatchRange};
use fintech_workers::bronze::schema::{Nullability, TRANSACTION_COLUMNS};
use fintech_workers::bronze::{BatchRecord, Lake};
use fintech_workers::event::PaymentEvent;
use fintech_workers::harness::Exposed;
use fintech_workers::loader::{
    LOAD_LOCK, Loader, LoaderConfig, LoaderMetrics, RunReport, RunStatus, Schedule,
    UnauditedFailure,
};
use fintech_workers::producer::{EventStream, ProducerMetrics};
use fintech_workers::source::CommittedPositions;
use fintech_workers::storage::StorageOptions;
use fintech_workers::warehouse::{EmbeddedWarehouse, WarehouseOptions};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// What the loader must find in a lake, computed from the producer's own stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    bronze_rows: u64,
    rejected: u64,
    loaded: u64,
    duplicate: u64,
}

fn expected(seed: u64, count: usize) -> Expected {
    let mut stream = EventStream::new(
        &common::fill::faulty_stream(seed),
        ProducerMetrics::default(),
    )
    .unwrap();
    let mut expected = Expected::default();
    let mut seen = HashSet::new();
    for _ in 0..count {
        let payload = stream.next_message().unwrap().message.payload;
        let Ok(event) = decode::decode(Some(&payload), 1 << 20) else {
            continue;
        };
        expected.bronze_rows += 1;
        if !valid(&event) {
            expected.rejected += 1;
        } else if seen.insert(event.event_id) {
            expected.loaded += 1;
        } else {
            expected.duplicate += 1;
        }
    }
    expected
}

fn valid(event: &PaymentEvent) -> bool {
    event.customer_id.as_deref().is_some_and(|c| !c.is_empty()) && event.amount > Decimal::ZERO
}

/// Fills `lake` with `count` messages of `seed`, in batches of 700.
async fn fill_lake(lake: &StorageOptions, positions: &CommittedPositions, seed: u64, count: u64) {
    common::fill::fill_lake(lake, positions, seed, count, 700).await;
}

fn loader(pool: &PgPool, lake: &StorageOptions) -> Loader {
    Loader::new(
        pool.clone(),
        Lake::open(lake).unwrap(),
        LoaderConfig::default(),
        LoaderMetrics::default(),
    )
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn health(pool: &PgPool, run: &RunReport) -> String {
    sqlx::query_scalar("select health from metadata.load_health where run_id = $1")
        .bind(run.run_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A lake of `count` messages of seed 7, and what the loader must find in it.
async fn filled_lake(
    count: u64,
) -> (
    tempfile::TempDir,
    StorageOptions,
    CommittedPositions,
    Expected,
) {
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    let positions = CommittedPositions::default();
    fill_lake(&lake, &positions, 7, count).await;
    (folder, lake, positions, expected(7, count as usize))
}

on_every_warehouse!(every_value_reaches_silver_as_the_event_holds_it);
on_every_warehouse!(a_run_accounts_for_every_row_in_the_audit_and_quality_tables);
on_every_warehouse!(a_second_run_loads_nothing_twice);
on_every_warehouse!(a_failed_run_is_audited_and_leaves_no_row_behind);
on_every_warehouse!(an_unreadable_bronze_file_is_set_aside_and_the_others_load);
on_every_warehouse!(an_unreachable_object_store_fails_the_run_and_the_next_one_loads);
on_every_warehouse!(the_loader_status_names_each_run_with_the_health_the_audit_gives_it);

/// Incremental transforms read silver from the latest `loaded_at` they merged, so a run that
/// commits after another must never stamp its rows before it: a run that waited for the
/// load lock stamps its rows when it took the lock, not when its transaction began.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_run_that_waited_for_the_load_lock_stamps_its_rows_after_the_run_it_waited_for() {
    use sqlx::Connection as _;
    let url = fresh_database(&testenv_var("DATABASE_URL")).await;
    let pool = WarehouseOptions::url(&url, 2)
        .connect_and_migrate()
        .await
        .unwrap();
    let (_folder, lake, _, expected) = filled_lake(1_000).await;
    // Another loader's run, holding the lock.
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut other_run = other.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(LOAD_LOCK)
        .execute(&mut *other_run)
        .await
        .unwrap();

    let waiting = tokio::spawn({
        let loader = loader(&pool, &lake);
        async move { loader.run_once().await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while scalar(
        &pool,
        "select count(*) from pg_locks where locktype = 'advisory' and not granted",
    )
    .await
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never waited for the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let released: chrono::DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&mut *other_run)
        .await
        .unwrap();
    other_run.commit().await.unwrap();

    let run = waiting.await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.rows_loaded),
        (RunStatus::Success, expected.loaded)
    );
    let (earliest, latest): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        sqlx::query_as("select min(loaded_at), max(loaded_at) from raw.transactions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        earliest >= released,
        "rows stamped {earliest}, before the run they waited for released the lock at {released}"
    );
    assert_eq!(earliest, latest, "one run stamps its rows with one time");
    other.close().await.unwrap();
    pool.close().await;
}

/// The object store cannot be reached while a run reads bronze: that is no bad file to set
/// aside but an outage. The run fails, audited and rolled back, and the next run, once the
/// store answers, loads everything.
async fn an_unreachable_object_store_fails_the_run_and_the_next_one_loads(
    options: WarehouseOptions,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, _, expected) = filled_lake(1_000).await;
    let (store, root) = lake.open().unwrap();
    let down = Arc::new(AtomicBool::new(true));
    let outage = common::outage::StoreOutage::bronze_reads_while(store, down.clone());
    let loader = Loader::new(
        pool.clone(),
        Lake::new(Arc::new(outage), root),
        LoaderConfig::default(),
        LoaderMetrics::default(),
    );
    let failed = loader.run_once().await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("connection refused"),
        "{failed:?}"
    );
    assert_eq!((failed.files_quarantined, failed.rows_loaded), (0, 0));
    assert_eq!(health(&pool, &failed).await, "explicit_failure");
    assert_eq!(
        scalar(&pool, "select count(*) from raw.transactions").await,
        0
    );

    down.store(false, Ordering::SeqCst);
    let next = loader.run_once().await.unwrap();
    assert_eq!(next.status, RunStatus::Success, "{:?}", next.error);
    assert_eq!(next.rows_loaded, expected.loaded);
    pool.close().await;
}
on_every_warehouse!(a_run_whose_files_hold_nothing_new_is_a_silent_failure);
on_every_warehouse!(a_replayed_date_range_restores_lost_rows_once);
on_every_warehouse!(the_declared_columns_are_those_of_raw_transactions);
on_every_warehouse!(a_run_the_warehouse_lost_mid_way_is_audited_as_failed_once_it_is_back);
on_every_warehouse!(rows_postgresql_would_refuse_are_quarantined_and_loading_goes_on);
on_every_warehouse!(a_manifest_folder_dated_ahead_hides_no_later_manifest);

/// A writer whose clock runs a week ahead leaves a manifest folder dated then. It is loaded,
/// and the batches correctly dated folders receive afterwards are loaded too.
async fn a_manifest_folder_dated_ahead_hides_no_later_manifest(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, positions, _) = filled_lake(500).await;
    let first = loader(&pool, &lake).run_once().await.unwrap();
    assert!(first.rows_loaded > 0);

    // A copy of a loaded file, announced from a week ahead: nothing new in it, but its
    // manifest is loaded and recorded with the future date.
    let (store, root) = lake.open().unwrap();
    use futures::TryStreamExt;
    let loaded: Vec<_> = store
        .list(Some(&layout::transactions_root(&root)))
        .try_collect()
        .await
        .unwrap();
    let bytes = store
        .get(&loaded[0].location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let week_ahead = Utc::now().date_naive() + chrono::Duration::days(7);
    put_batch_on(
        store.as_ref(),
        &root,
        97,
        PutPayload::from(bytes),
        week_ahead,
    )
    .await;
    let ahead = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!((ahead.status, ahead.files_loaded), (RunStatus::Success, 1));

    // Later payments in today's folders still reach silver.
    fill_lake(&lake, &positions, 8, 300).await;
    let later = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(later.status, RunStatus::Success, "{:?}", later.error);
    assert!(later.files_loaded > 0 && later.rows_loaded > 0, "{later:?}");
    pool.close().await;
}

/// A bronze file as a writer before the decoder's checks could leave it: a merchant name
/// with NUL, an event in year 0 and one in 2099, among good rows. The run succeeds, those
/// rows are rejected with their reasons and stored whole, and the good rows load; the next
/// file loads too.
async fn rows_postgresql_would_refuse_are_quarantined_and_loading_goes_on(
    options: WarehouseOptions,
) {
    use fintech_workers::bronze::decode::TransactionColumns;
    use fintech_workers::source::SourceMessage;
    use fintech_workers::synthetic::SyntheticGenerator;

    let pool = options.connect_and_migrate().await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    let (store, root) = lake.open().unwrap();
    let mut generator = SyntheticGenerator::new(5, 0.0);
    let mut columns = TransactionColumns::default();
    for offset in 0..10 {
        let mut event = generator.next_payment(Utc::now());
        match offset {
            1 => event.merchant_name = "Ac\u{0}me".to_owned(),
            2 => event.event_time = "0000-01-01T00:00:00Z".parse().unwrap(),
            3 => event.event_time = "2099-01-01T00:00:00Z".parse().unwrap(),
            _ => {}
        }
        let message = SourceMessage {
            partition: 0,
            offset,
            timestamp_ms: Some(-62_167_219_200_000), // a broker clock in year 0
            key: None,
            payload: None,
        };
        columns.append_event(&event, &message);
    }
    let batch = columns.finish(Utc::now().timestamp_micros());
    let mut parquet = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut parquet, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    put_batch(store.as_ref(), &root, 0, PutPayload::from(parquet)).await;

    let run = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(run.status, RunStatus::Success, "{:?}", run.error);
    assert_eq!((run.rows_loaded, run.stats.rejected_total()), (7, 3));
    let rejected: Vec<(i64, String, String)> = sqlx::query_as(
        "select kafka_offset, reason, row_data->>'merchant_name' \
         from raw.rejected_transactions order by kafka_offset",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rejected
            .iter()
            .map(|(o, r, _)| (*o, r.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "unstorable_text"),
            (2, "implausible_event_time"),
            (3, "implausible_event_time")
        ]
    );
    assert_eq!(rejected[0].2, "Ac\u{fffd}me");
    let infinite: i64 = scalar(
        &pool,
        "select count(*) from raw.transactions where kafka_timestamp = '-infinity'",
    )
    .await;
    assert_eq!(
        infinite, 7,
        "a broker time PostgreSQL cannot hold is kept as -infinity"
    );

    fill_lake(&lake, &CommittedPositions::default(), 3, 300).await;
    let next = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(next.status, RunStatus::Success, "{:?}", next.error);
    assert!(next.rows_loaded > 0);
    pool.close().await;
}

/// A run whose `RUNNING` row was written before the warehouse went away, and a replay run
/// that never got a row, are both audited as FAILED when it answers again; a finished row
/// is left alone.
async fn a_run_the_warehouse_lost_mid_way_is_audited_as_failed_once_it_is_back(
    options: WarehouseOptions,
) {
    let pool = options.connect_and_migrate().await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    let loader = loader(&pool, &lake);
    let finished = loader.run_once().await.unwrap();
    let lost_mid_way = uuid::Uuid::new_v4();
    sqlx::query(
        "insert into metadata.load_audit (run_id, started_at, status, loader_version, host, mode) \
         values ($1, now() - interval '5 seconds', 'RUNNING', 'test', 'test', 'incremental')",
    )
    .bind(lost_mid_way)
    .execute(&pool)
    .await
    .unwrap();
    let failure = |run_id, mode| UnauditedFailure {
        run_id,
        started_at: Utc::now(),
        mode,
        error: "the warehouse went away".to_owned(),
    };
    let never_recorded = uuid::Uuid::new_v4();
    loader
        .audit_unreachable(&[
            failure(lost_mid_way, "incremental"),
            failure(never_recorded, "replay"),
            failure(finished.run_id, "incremental"),
        ])
        .await
        .unwrap();
    let row = |run_id: uuid::Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, Option<String>, bool)>(
                "select status, mode, error, finished_at is not null \
                 from metadata.load_audit where run_id = $1",
            )
            .bind(run_id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let failed = |mode: &str| {
        (
            "FAILED".to_owned(),
            mode.to_owned(),
            Some("the warehouse went away".to_owned()),
            true,
        )
    };
    assert_eq!(row(lost_mid_way).await, failed("incremental"));
    assert_eq!(row(never_recorded).await, failed("replay"));
    assert_eq!(
        row(finished.run_id).await,
        ("SUCCESS".to_owned(), "incremental".to_owned(), None, true)
    );
    pool.close().await;
}

/// The one declaration of a payment event's columns matches the silver table the migrations
/// make: every column, its type and where it may be null; silver adds only lineage.
async fn the_declared_columns_are_those_of_raw_transactions(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text, is_nullable::text \
         from information_schema.columns \
         where table_schema = 'raw' and table_name = 'transactions'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut silver: std::collections::HashMap<String, (String, bool)> = rows
        .into_iter()
        .map(|(name, data_type, nullable)| (name, (data_type, nullable == "YES")))
        .collect();
    for column in TRANSACTION_COLUMNS {
        let (data_type, nullable) = silver
            .remove(column.name)
            .unwrap_or_else(|| panic!("raw.transactions has no column {}", column.name));
        assert_eq!(data_type, column.silver, "the type of {}", column.name);
        assert_eq!(
            nullable,
            column.nullability == Nullability::Optional,
            "whether {} may be null in silver",
            column.name
        );
    }
    let mut lineage: Vec<String> = silver.into_keys().collect();
    lineage.sort();
    assert_eq!(lineage, ["bronze_file", "load_run_id", "loaded_at"]);
    pool.close().await;
}

async fn a_run_accounts_for_every_row_in_the_audit_and_quality_tables(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, _, expected) = filled_lake(3_000).await;
    assert!(
        expected.rejected > 100 && expected.duplicate > 50,
        "{expected:?}"
    );

    let first = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(first.status, RunStatus::Success, "{:?}", first.error);
    assert!(first.files_loaded > 3);
    assert_eq!(first.files_pending, first.files_loaded);
    assert_eq!(first.stats.read, expected.bronze_rows);
    assert_eq!(first.stats.rejected_total(), expected.rejected);
    assert_eq!(first.rows_loaded, expected.loaded);
    assert_eq!(first.rows_duplicate, expected.duplicate);
    assert_eq!(
        scalar(&pool, "select count(*) from raw.transactions").await,
        expected.loaded as i64
    );
    assert_eq!(
        scalar(&pool, "select count(*) from raw.rejected_transactions").await,
        expected.rejected as i64
    );
    let audit: (String, i32, i64, i64, i64, i64) = sqlx::query_as(
        "select status, files_loaded, rows_read, rows_loaded, rows_rejected, rows_duplicate \
         from metadata.load_audit where run_id = $1",
    )
    .bind(first.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        (
            "SUCCESS".to_owned(),
            first.files_loaded as i32,
            expected.bronze_rows as i64,
            expected.loaded as i64,
            expected.rejected as i64,
            expected.duplicate as i64
        )
    );
    let metric = |name: &'static str, dimension: &'static str| {
        let pool = pool.clone();
        let run = first.run_id;
        async move {
            sqlx::query_scalar::<_, i64>(
                "select value from metadata.data_quality_metrics \
                 where run_id = $1 and metric = $2 and dimension = $3",
            )
            .bind(run)
            .bind(name)
            .bind(dimension)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        metric("duplicates_in_run", "").await,
        expected.duplicate as i64
    );
    assert_eq!(metric("invalid_rows", "").await, expected.rejected as i64);
    assert!(metric("invalid_rows", "missing_customer_id").await > 0);
    assert!(metric("invalid_rows", "non_positive_amount").await > 0);
    assert!(metric("nulls", "customer_id").await > 0);
    assert_eq!(health(&pool, &first).await, "healthy");
    pool.close().await;
}

/// The loader writes PostgreSQL's binary form by hand (numerics in base 10,000, times from
/// 2000-01-01, UUIDs as 16 bytes); each column of each loaded row reads back as the first
/// event with that id holds it.
async fn every_value_reaches_silver_as_the_event_holds_it(options: WarehouseOptions) {
    use sqlx::Row as _;
    let pool = options.connect_and_migrate().await.unwrap();
    let count = 1_000;
    let (_folder, lake, _, expected) = filled_lake(count).await;
    let run = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(run.rows_loaded, expected.loaded);

    let mut stream =
        EventStream::new(&common::fill::faulty_stream(7), ProducerMetrics::default()).unwrap();
    let mut checked = HashSet::new();
    for _ in 0..count {
        let payload = stream.next_message().unwrap().message.payload;
        let Ok(event) = decode::decode(Some(&payload), 1 << 20) else {
            continue;
        };
        if !valid(&event) || !checked.insert(event.event_id) {
            continue;
        }
        let row = sqlx::query("select * from raw.transactions where event_id = $1")
            .bind(event.event_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        let text = |column: &str| row.get::<String, _>(column);
        let id = event.event_id;
        assert_eq!(
            row.get::<i32, _>("schema_version"),
            i32::from(event.schema_version),
            "{id}"
        );
        assert_eq!(text("transaction_id"), event.transaction_id, "{id}");
        assert_eq!(text("status"), event.status.as_str(), "{id}");
        assert_eq!(
            row.get::<chrono::DateTime<Utc>, _>("event_time")
                .timestamp_micros(),
            event.event_time.timestamp_micros(),
            "{id}"
        );
        assert_eq!(Some(text("customer_id")), event.customer_id, "{id}");
        assert_eq!(text("merchant_id"), event.merchant_id, "{id}");
        assert_eq!(text("merchant_name"), event.merchant_name, "{id}");
        assert_eq!(text("category"), event.category, "{id}");
        assert_eq!(row.get::<Decimal, _>("amount"), event.amount, "{id}");
        assert_eq!(text("currency"), event.currency.as_str(), "{id}");
        assert_eq!(
            text("payment_method"),
            event.payment_method.as_str(),
            "{id}"
        );
        assert_eq!(text("city"), event.city, "{id}");
        assert_eq!(text("state"), event.state, "{id}");
        assert_eq!(text("country"), event.country, "{id}");
        assert_eq!(
            row.get::<Option<f64>, _>("latitude"),
            event.latitude,
            "{id}"
        );
        assert_eq!(
            row.get::<Option<f64>, _>("longitude"),
            event.longitude,
            "{id}"
        );
        assert_eq!(row.get::<bool, _>("is_fraud"), event.is_fraud, "{id}");
        assert_eq!(text("source"), event.source.as_str(), "{id}");
        assert_eq!(row.get::<uuid::Uuid, _>("load_run_id"), run.run_id, "{id}");
        assert!(
            text("bronze_file").starts_with("bronze/transactions/"),
            "{id}"
        );
        let ingested = row.get::<chrono::DateTime<Utc>, _>("ingested_at");
        assert!(
            (Utc::now() - ingested).num_minutes() < 10,
            "{id}: ingested at {ingested}"
        );
    }
    assert_eq!(checked.len() as u64, expected.loaded);
    pool.close().await;
}

async fn a_second_run_loads_nothing_twice(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, _, expected) = filled_lake(1_000).await;
    let first = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(first.rows_loaded, expected.loaded);

    let second = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(
        (second.status, second.files_pending, second.rows_loaded),
        (RunStatus::Success, 0, 0)
    );
    assert_eq!(
        scalar(&pool, "select count(*) from raw.transactions").await,
        expected.loaded as i64
    );
    assert_eq!(health(&pool, &second).await, "healthy");
    pool.close().await;
}

/// New data arrives and the warehouse refuses it mid-run, as when its disk is full: the run
/// fails, is audited as FAILED, and leaves no row of the new data behind; once the warehouse
/// takes writes again the next run loads it.
async fn a_failed_run_is_audited_and_leaves_no_row_behind(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, positions, expected) = filled_lake(1_000).await;
    loader(&pool, &lake).run_once().await.unwrap();

    // The warehouse refuses the new rows half way through the run, with the error
    // PostgreSQL gives when its disk is full (raised by a trigger; in life also a
    // constraint or a dropped connection).
    fill_lake(&lake, &positions, 8, 500).await;
    sqlx::raw_sql(
        "create function raw.refuse() returns trigger language plpgsql as \
             $$ begin raise exception using errcode = 'disk_full', \
                message = 'could not extend file \"base/16384/16385\": No space left on device'; \
             end $$; \
         create trigger refuse before insert on raw.transactions \
             for each row execute function raw.refuse();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let failed = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("No space left on device"),
        "{failed:?}"
    );
    assert_eq!(
        scalar(&pool, "select count(*) from raw.transactions").await,
        expected.loaded as i64
    );
    assert_eq!(
        scalar(&pool, "select count(*) from metadata.loaded_files where run_id = (select run_id from metadata.load_audit where status = 'FAILED')").await,
        0
    );
    assert_eq!(health(&pool, &failed).await, "explicit_failure");

    sqlx::raw_sql("drop trigger refuse on raw.transactions")
        .execute(&pool)
        .await
        .unwrap();
    let recovered = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(recovered.status, RunStatus::Success);
    assert!(recovered.rows_loaded > 0);
    pool.close().await;
}

/// Among new batches: a file that is not Parquet, a Parquet file of other columns, a
/// manifest naming an object that is not there, and a manifest that is not JSON. The run
/// loads every other file and sets those aside with their reasons, saying so in
/// `metadata.load_health`; once the missing object is restored, a replay of its day loads it
/// and takes it out of the quarantine.
async fn an_unreadable_bronze_file_is_set_aside_and_the_others_load(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, positions, _) = filled_lake(500).await;
    loader(&pool, &lake).run_once().await.unwrap();
    let (store, root) = lake.open().unwrap();
    let today = Utc::now().date_naive();

    fill_lake(&lake, &positions, 8, 500).await;
    let (not_parquet, _) = corrupt_batch(store.as_ref(), &root).await;
    let other = arrow_array::RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(arrow_array::Int32Array::from(vec![1])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, other.schema(), None).unwrap();
    writer.write(&other).unwrap();
    writer.close().unwrap();
    let (wrong_schema, _) = put_batch(store.as_ref(), &root, 96, PutPayload::from(bytes)).await;
    let (missing, _) = put_batch(store.as_ref(), &root, 95, PutPayload::from_static(b"x")).await;
    store.delete(&missing).await.unwrap();
    let bad_manifest = layout::manifest(
        &root,
        today,
        &BatchRange {
            topic: "transactions".to_owned(),
            partition: 94,
            first_offset: 0,
            last_offset: 0,
        },
    );
    store
        .put(&bad_manifest, PutPayload::from_static(b"{ not json"))
        .await
        .unwrap();

    let run = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(run.status, RunStatus::Success, "{:?}", run.error);
    assert!(run.rows_loaded > 0, "{run:?}");
    assert_eq!(run.files_quarantined, 4);
    assert_eq!(health(&pool, &run).await, "quarantined_files");
    let set_aside: Vec<(String, String)> =
        sqlx::query_as("select path, reason from metadata.quarantined_files order by reason, path")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut expected = vec![
        (missing.to_string(), "missing".to_owned()),
        (not_parquet.to_string(), "unreadable".to_owned()),
        (bad_manifest.to_string(), "unreadable".to_owned()),
        (wrong_schema.to_string(), "wrong_schema".to_owned()),
    ];
    expected.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    assert_eq!(set_aside, expected);

    // Nothing is retried by later runs, which are healthy again.
    let next = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!((next.files_pending, next.files_quarantined), (0, 0));
    assert_eq!(health(&pool, &next).await, "healthy");

    // The missing object comes back (as the valid copy of a loaded file): a replay loads it.
    let loaded: Vec<String> = sqlx::query_scalar("select path from metadata.loaded_files limit 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    let copy = store
        .get(&Path::from(loaded[0].as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    store.put(&missing, PutPayload::from(copy)).await.unwrap();
    let replayed = loader(&pool, &lake).replay(today, today).await.unwrap();
    assert!(replayed.iter().all(|r| r.status == RunStatus::Success));
    let still: Vec<String> =
        sqlx::query_scalar("select path from metadata.quarantined_files order by path")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!still.contains(&missing.to_string()), "{still:?}");
    pool.close().await;
}

/// A copy of an already-loaded file arrives: a run whose only file holds nothing new stands
/// out in `metadata.load_health`.
async fn a_run_whose_files_hold_nothing_new_is_a_silent_failure(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, _, _) = filled_lake(1_000).await;
    loader(&pool, &lake).run_once().await.unwrap();

    let (store, root) = lake.open().unwrap();
    let replayed = replay_loaded_file(store.as_ref(), &root).await;
    let silent = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(
        (silent.status, silent.files_pending, silent.rows_loaded),
        (RunStatus::Success, 1, 0),
        "{replayed}"
    );
    assert_eq!(health(&pool, &silent).await, "silent_failure");
    pool.close().await;
}

/// The loader's `/status` document, which the operator reads: the rows it moved into silver,
/// and its last run with the health `metadata.load_health` gives that run.
async fn the_loader_status_names_each_run_with_the_health_the_audit_gives_it(
    options: WarehouseOptions,
) {
    let pool = options.connect_and_migrate().await.unwrap();
    let (_folder, lake, _, expected) = filled_lake(1_000).await;
    let metrics = LoaderMetrics::default();
    let loader = Loader::new(
        pool.clone(),
        Lake::open(&lake).unwrap(),
        LoaderConfig::default(),
        metrics.clone(),
    );
    let before = metrics.status();
    assert_eq!((before.last_run, before.backlog), (None, None));

    let first = loader.run_once().await.unwrap();
    let status = metrics.status();
    assert_eq!(status.worker, "loader");
    assert_eq!(status.rows_total, expected.loaded);
    assert_eq!(status.backlog, Some(first.files_pending));
    assert!(status.last_progress_at.is_some() && status.running_since.is_none());
    let run = status.last_run.unwrap();
    assert_eq!(
        (run.id, run.health.as_str(), run.rows, run.error),
        (first.run_id.to_string(), "healthy", expected.loaded, None)
    );

    // A copy of a loaded file: the run succeeds, loads nothing, and the audit calls it silent.
    let (store, root) = lake.open().unwrap();
    replay_loaded_file(store.as_ref(), &root).await;
    let silent = loader.run_once().await.unwrap();
    assert_eq!(silent.health, health(&pool, &silent).await);
    let run = metrics.status().last_run.unwrap();
    assert_eq!(
        (run.id, run.health.as_str()),
        (silent.run_id.to_string(), "silent_failure")
    );
    pool.close().await;
}

/// Stores `body` as the only file of a new batch of `partition`, with its manifest, the way
/// the streamer would; returns the file and the manifest.
async fn put_batch(
    store: &dyn ObjectStore,
    root: &Path,
    partition: i32,
    body: PutPayload,
) -> (Path, Path) {
    put_batch_on(store, root, partition, body, Utc::now().date_naive()).await
}

/// [`put_batch`] into the folders of `date`, as a writer whose clock says `date` would.
async fn put_batch_on(
    store: &dyn ObjectStore,
    root: &Path,
    partition: i32,
    body: PutPayload,
    date: chrono::NaiveDate,
) -> (Path, Path) {
    let range = BatchRange {
        topic: "transactions".to_owned(),
        partition,
        first_offset: 0,
        last_offset: 0,
    };
    let file = layout::transactions_file(root, date, &range);
    store.put(&file, body).await.unwrap();
    let record = BatchRecord {
        range: range.clone(),
        files: vec![file.to_string()],
    };
    let manifest = layout::manifest(root, date, &range);
    let record = PutPayload::from(serde_json::to_vec(&record).unwrap());
    store.put(&manifest, record).await.unwrap();
    (file, manifest)
}

/// Adds a batch whose only file is not Parquet, as a buggy writer might leave.
async fn corrupt_batch(store: &dyn ObjectStore, root: &Path) -> (Path, Path) {
    put_batch(store, root, 99, PutPayload::from_static(b"not parquet")).await
}

/// Copies a loaded file under a new batch: data delivered twice.
async fn replay_loaded_file(store: &dyn ObjectStore, root: &Path) -> String {
    use futures::TryStreamExt;
    let files: Vec<_> = store
        .list(Some(&layout::transactions_root(root)))
        .try_collect()
        .await
        .unwrap();
    let original = &files[0].location;
    let bytes = store.get(original).await.unwrap().bytes().await.unwrap();
    put_batch(store, root, 98, PutPayload::from(bytes)).await;
    original.to_string()
}

/// SIGTERM while `fintech load` serves: it finishes its run, exits 0, and leaves no audit row
/// unfinished.
#[tokio::test]
async fn the_loader_exits_cleanly_on_sigterm_with_every_run_audited() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("warehouse");
    let warehouse = EmbeddedWarehouse::start(&data).unwrap();
    let options = warehouse.options();
    let lake = StorageOptions::local(&folder.path().join("lake")).unwrap();
    fill_lake(&lake, &CommittedPositions::default(), 5, 2_000).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["load", "--log-format", "text", "--interval-secs", "1"])
        .args(["--max-files-per-run", "2", "--pool-size", "1"])
        .args(["--database-url", &options.database_url])
        .args(["--lake-url", &lake.lake_url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its log, line by line, until it has finished a run.
    let (lines, log) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|line: &String| line.contains("load run finished"))
    {
        match log.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no run finished: {seen:#?}"),
        }
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(log.try_iter());
    assert!(status.success(), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|line| line.contains("shutting down after the current work")),
        "{seen:#?}"
    );

    let pool = options.connect().await.unwrap();
    let (runs, unfinished): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where status = 'RUNNING') from metadata.load_audit",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(runs >= 1);
    assert_eq!(unfinished, 0, "every run the loader began is finished");
    pool.close().await;
    warehouse.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_warehouse_fails_the_once_run_with_a_clear_error() {
    let folder = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args([
            "load",
            "--once",
            "--log-format",
            "text",
            "--connect-timeout-secs",
            "2",
        ])
        .args(["--database-url", "postgres://fintech:x@127.0.0.1:1/fintech"])
        .args(["--lake-url", &format!("file://{}", folder.path().display())])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("giving up on the warehouse"), "{stderr}");
    assert!(
        stderr.contains("fintech:***@"),
        "the password is redacted: {stderr}"
    );
}

#[tokio::test]
async fn a_run_while_postgres_is_down_is_audited_once_it_is_back() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("warehouse");
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let warehouse = EmbeddedWarehouse::start_on(&data, Some(address)).unwrap();
    let options = warehouse.options();
    options.connect_and_migrate().await.unwrap().close().await;
    warehouse.shutdown().await.unwrap();

    // The loader starts serving while PostgreSQL is down: its runs fail and cannot be audited.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy(&options.database_url)
        .unwrap();
    let lake = StorageOptions::local(&folder.path().join("lake")).unwrap();
    let loader = loader(&pool, &lake);
    let cancel = CancellationToken::new();
    let serving = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            let every = Schedule::Every(std::time::Duration::from_millis(200));
            loader.serve(every, &cancel).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        !serving.is_finished(),
        "a failed run does not stop the loader"
    );

    // Back on the same address: the failures are audited, and the next run succeeds. The
    // embedded server takes one connection at a time, so the test shares the loader's pool.
    let warehouse = EmbeddedWarehouse::start_on(&data, Some(address)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (failed, succeeded) = loop {
        let counts: Result<(i64, i64), _> = sqlx::query_as(
            "select count(*) filter (where status = 'FAILED' and error like '%writing the audit row%'), \
                    count(*) filter (where status = 'SUCCESS') from metadata.load_audit",
        )
        .fetch_one(&pool)
        .await;
        match counts {
            Ok((failed, succeeded)) if succeeded > 0 => break (failed, succeeded),
            _ if std::time::Instant::now() > deadline => panic!("no successful run: {counts:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    };
    assert!(failed >= 1, "the runs while it was down are audited");
    assert!(succeeded >= 1);
    cancel.cancel();
    assert!(
        serving.await.unwrap().is_ok(),
        "shutdown ends the loader cleanly"
    );
    pool.close().await;
    warehouse.shutdown().await.unwrap();
}

/// Replay of a date range: rows lost from silver come back, nothing is loaded twice, old
/// rejections are replaced rather than doubled, and every replay run is audited as one.
async fn a_replayed_date_range_restores_lost_rows_once(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    fill_lake(&lake, &CommittedPositions::default(), 11, 1_500).await;
    let first = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!(first.status, RunStatus::Success, "{:?}", first.error);
    let loaded = scalar(&pool, "select count(*) from raw.transactions").await;
    let rejected = scalar(&pool, "select count(*) from raw.rejected_transactions").await;

    // Rows of one event date are lost from silver, say by a mistaken delete.
    let lost = sqlx::query(
        "delete from raw.transactions where (event_time at time zone 'UTC')::date = '2026-11-01'",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert!(lost > 100, "{lost}");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let replayed = loader(&pool, &lake).replay(day, day).await.unwrap();
    assert!(!replayed.is_empty());
    assert!(replayed.iter().all(|r| r.status == RunStatus::Success));
    let restored: u64 = replayed.iter().map(|r| r.rows_loaded).sum();
    assert_eq!(restored, lost, "exactly the lost rows come back");
    assert_eq!(
        scalar(&pool, "select count(*) from raw.transactions").await,
        loaded
    );
    assert_eq!(
        scalar(&pool, "select count(*) from raw.rejected_transactions").await,
        rejected,
        "the replayed files' rejections are replaced, not added again"
    );
    assert_eq!(
        scalar(
            &pool,
            "select count(*) from metadata.load_audit where mode = 'replay' and status = 'SUCCESS'"
        )
        .await,
        replayed.len() as i64
    );

    // A second replay finds everything in place, and incremental runs go on as before.
    let again = loader(&pool, &lake).replay(day, day).await.unwrap();
    assert_eq!(again.iter().map(|r| r.rows_loaded).sum::<u64>(), 0);
    let next = loader(&pool, &lake).run_once().await.unwrap();
    assert_eq!((next.status, next.files_pending), (RunStatus::Success, 0));
    pool.close().await;
}

#[test]
fn a_replay_needs_both_ends_in_order() {
    let fintech = || std::process::Command::new(env!("CARGO_BIN_EXE_fintech"));
    let half = fintech()
        .args(["load", "--database-url", "postgres://unused@127.0.0.1:1/x"])
        .args(["--replay-from", "2026-11-02"])
        .output()
        .unwrap();
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("--replay-to"));
    let reversed = fintech()
        .args(["load", "--database-url", "postgres://unused@127.0.0.1:1/x"])
        .args(["--replay-from", "2026-11-02", "--replay-to", "2026-11-01"])
        .output()
        .unwrap();
    assert!(!reversed.status.success());
    let message = String::from_utf8_lossy(&reversed.stderr);
    assert!(
        message.contains("--replay-from 2026-11-02 is after --replay-to 2026-11-01"),
        "{message}"
    );
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_replay_runs_beside_a_loader_that_holds_the_metrics_port() {
    let url = fresh_database(&testenv_var("DATABASE_URL")).await;
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    // The running loader's port, as in `kubectl exec deploy/<pipeline>-loader -- fintech load
    // --replay-…`, where the pod's environment sets FINTECH_METRICS_ADDR.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["load", "--database-url", &url, "--lake-url", &lake.lake_url])
        .args(["--replay-from", "2026-11-01", "--replay-to", "2026-11-02"])
        .env(
            "FINTECH_METRICS_ADDR",
            taken.local_addr().unwrap().to_string(),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("replayed 2026-11-01..=2026-11-02"));
}
