//! The loader failing at every step of a run, and killed at random moments. Afterwards
//! silver holds exactly the distinct valid events of bronze, every refused row once, every
//! bronze file is recorded as loaded once, and no audit row is left `RUNNING` (except those
//! of killed processes, which `metadata.load_health` calls `stalled` after an hour).

mod common;

use std::collections::HashSet;

use fintech_workers::bronze::{Lake, layout};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics, RunStatus};
use fintech_workers::source::CommittedPositions;
use fintech_workers::storage::StorageOptions;
use fintech_workers::warehouse::WarehouseOptions;
use futures::TryStreamExt;
use sqlx::PgPool;

/// Each step of a run, as the statement that fails there: a trigger raising on it. The
/// last one fails the load transaction's commit (a deferred constraint trigger).
const FAILPOINTS: &[(&str, &str)] = &[
    ("insert", "metadata.load_audit"),
    ("insert", "raw.transactions"),
    ("insert", "raw.rejected_transactions"),
    ("insert", "metadata.loaded_files"),
    ("insert", "metadata.loaded_manifests"),
    ("commit", "metadata.loaded_manifests"),
    ("update", "metadata.load_audit"),
    ("insert", "metadata.data_quality_metrics"),
];

/// Adds `count` messages (some malformed, duplicated or invalid) of `seed` to the lake.
async fn fill(lake: &StorageOptions, positions: &CommittedPositions, seed: u64, count: u64) {
    common::fill::fill_lake(lake, positions, seed, count, 150).await;
}

/// What bronze holds, read independently of the loader: the distinct valid event ids, the
/// number of invalid rows and the files.
struct Truth {
    valid_events: HashSet<String>,
    invalid_rows: usize,
    files: usize,
}

async fn truth(lake: &StorageOptions) -> Truth {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Decimal128Type;
    let lake = Lake::open(lake).unwrap();
    let files: Vec<_> = lake
        .store()
        .list(Some(&layout::transactions_root(lake.root())))
        .try_collect()
        .await
        .unwrap();
    let mut truth = Truth {
        valid_events: HashSet::new(),
        invalid_rows: 0,
        files: files.len(),
    };
    for file in files {
        for batch in lake.read_parquet(&file.location).await.unwrap().batches() {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("event_id").unwrap().as_string::<i32>();
            let customers = batch
                .column_by_name("customer_id")
                .unwrap()
                .as_string::<i32>();
            let amounts = batch
                .column_by_name("amount")
                .unwrap()
                .as_primitive::<Decimal128Type>();
            for row in 0..batch.num_rows() {
                let valid = !customers.is_null(row)
                    && !customers.value(row).is_empty()
                    && amounts.value(row) > 0;
                if valid {
                    truth.valid_events.insert(ids.value(row).to_owned());
                } else {
                    truth.invalid_rows += 1;
                }
            }
        }
    }
    truth
}

/// Checks silver, the quarantine of refused rows and the loaded files against bronze, and
/// that at most `running` audit rows are unfinished.
async fn assert_exactly_once(pool: &PgPool, lake: &StorageOptions, running: i64, context: &str) {
    let truth = truth(lake).await;
    let silver: Vec<String> = sqlx::query_scalar("select event_id::text from raw.transactions")
        .fetch_all(pool)
        .await
        .unwrap();
    let distinct: HashSet<String> = silver.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        silver.len(),
        "{context}: an event twice in silver"
    );
    assert!(
        distinct == truth.valid_events,
        "{context}: silver has {} events, bronze {} distinct valid ones",
        distinct.len(),
        truth.valid_events.len()
    );
    let rejected: i64 = sqlx::query_scalar("select count(*) from raw.rejected_transactions")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        rejected as usize, truth.invalid_rows,
        "{context}: refused rows"
    );
    let files: i64 = sqlx::query_scalar("select count(*) from metadata.loaded_files")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(files as usize, truth.files, "{context}: loaded files");
    let unfinished: i64 =
        sqlx::query_scalar("select count(*) from metadata.load_audit where status = 'RUNNING'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        unfinished <= running,
        "{context}: {unfinished} audit rows left RUNNING"
    );
}

async fn arm(pool: &PgPool, (event, table): (&str, &str)) {
    let trigger = match event {
        "commit" => format!(
            "create constraint trigger failpoint after insert on {table} \
             deferrable initially deferred for each row execute function public.failpoint()"
        ),
        _ => format!(
            "create trigger failpoint before {event} on {table} \
             for each row execute function public.failpoint()"
        ),
    };
    sqlx::raw_sql(&format!(
        "create or replace function public.failpoint() returns trigger language plpgsql as \
             $$ begin raise exception 'failpoint {event} {table}'; end $$; {trigger};"
    ))
    .execute(pool)
    .await
    .unwrap();
}

async fn disarm(pool: &PgPool, table: &str) {
    sqlx::raw_sql(&format!("drop trigger failpoint on {table}"))
        .execute(pool)
        .await
        .unwrap();
}

on_every_warehouse!(a_load_run_failing_at_any_step_loses_and_duplicates_nothing);

async fn a_load_run_failing_at_any_step_loses_and_duplicates_nothing(options: WarehouseOptions) {
    let pool = options.connect_and_migrate().await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    let positions = CommittedPositions::default();
    let loader = Loader::new(
        pool.clone(),
        Lake::open(&lake).unwrap(),
        LoaderConfig::default(),
        LoaderMetrics::default(),
    );
    for (seed, failpoint) in (1..).zip(FAILPOINTS) {
        let context = format!("failing at {} {}", failpoint.0, failpoint.1);
        fill(&lake, &positions, seed, 400).await;
        arm(&pool, *failpoint).await;
        let outcome = loader.run_once().await;
        disarm(&pool, failpoint.1).await;
        match outcome {
            Ok(report) => assert_eq!(report.status, RunStatus::Failed, "{context}"),
            // The audit could not be written: the loader audits it once it can.
            Err(failure) => loader.audit_unreachable(&[failure]).await.unwrap(),
        }
        let next = loader.run_once().await.unwrap();
        assert_eq!(
            next.status,
            RunStatus::Success,
            "{context}: {:?}",
            next.error
        );
        assert_exactly_once(&pool, &lake, 0, &context).await;
    }
    pool.close().await;
}

/// `fintech load` killed with SIGKILL at random moments while new data keeps arriving, then
/// run to the end: each kill rolls its run back, and what is loaded in the end is exactly
/// bronze.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_loader_killed_at_random_moments_loses_and_duplicates_nothing() {
    use rand::{RngExt, SeedableRng};
    let url = common::fresh_database(&common::testenv_var("DATABASE_URL")).await;
    let pool = WarehouseOptions::url(&url, 2)
        .connect_and_migrate()
        .await
        .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    let positions = CommittedPositions::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let loader = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
            .args(["load", "--log-format", "text", "--interval-secs", "1"])
            .args(["--max-files-per-run", "3"])
            .args(["--database-url", &url, "--lake-url", &lake.lake_url])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let kills = 6;
    for seed in 0..kills {
        fill(&lake, &positions, 100 + seed, 600).await;
        let mut child = loader();
        let after = std::time::Duration::from_millis(rng.random_range(200..2_500));
        tokio::time::sleep(after).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let finished = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["load", "--once", "--max-files-per-run", "100000"])
        .args(["--database-url", &url, "--lake-url", &lake.lake_url])
        .output()
        .unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert_exactly_once(&pool, &lake, i64::from(kills as u8), "after the kills").await;
    pool.close().await;
}

/// Gold as text, table by table, for comparing two states.
async fn gold(pool: &PgPool) -> Vec<String> {
    let mut tables = Vec::new();
    for (table, key) in [
        ("marts.fact_transactions", "transaction_id"),
        (
            "marts.daily_revenue_summary",
            "payment_date, payment_method",
        ),
        ("marts.dim_customers", "customer_id"),
        ("marts.dim_merchants", "merchant_id"),
    ] {
        let rows: String = sqlx::query_scalar(&format!(
            "select coalesce(string_agg(t::text, E'\\n' order by {key}), '') from {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        tables.push(format!("{table}\n{rows}"));
    }
    tables
}

/// `fintech transform` killed with SIGKILL at random moments, on a silver that grows between
/// the kills, then run to the end: gold is what a full refresh builds from the same silver.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_transform_killed_at_random_moments_leaves_gold_as_a_full_refresh_builds_it() {
    use rand::{RngExt, SeedableRng};
    let url = common::fresh_database(&common::testenv_var("DATABASE_URL")).await;
    let pool = WarehouseOptions::url(&url, 2)
        .connect_and_migrate()
        .await
        .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let lake = StorageOptions::local(folder.path()).unwrap();
    let positions = CommittedPositions::default();
    let loader = Loader::new(
        pool.clone(),
        Lake::open(&lake).unwrap(),
        LoaderConfig::default(),
        LoaderMetrics::default(),
    );
    let transform = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
            .args(["transform", "--log-format", "text", "--database-url", &url])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for seed in 0..5 {
        fill(&lake, &positions, 200 + seed, 3_000).await;
        loader.run_once().await.unwrap();
        let mut child = transform(&[]);
        let after = std::time::Duration::from_millis(rng.random_range(100..2_000));
        tokio::time::sleep(after).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let finished = transform(&[]).wait_with_output().unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let incremental = gold(&pool).await;
    let refreshed = transform(&["--full-refresh"]).wait_with_output().unwrap();
    assert!(refreshed.status.success());
    assert!(
        gold(&pool).await == incremental,
        "gold after the kills differs from a full refresh of the same silver"
    );
    pool.close().await;
}
