//! Nothing waits forever on the warehouse: every pooled connection starts with
//! `lock_timeout`, `idle_in_transaction_session_timeout` and TCP keepalives (the
//! `--lock-timeout-secs`, `--idle-in-transaction-timeout-secs` and `--tcp-keepalives-*`
//! flags of `WarehouseOptions`), so a transform or load run that waits for a lock held by a
//! stuck session fails with a clear error within the bound, and a session left idle in a
//! transaction is ended by the server, releasing its locks.
//!
//! The tokio timeouts below are safety nets that turn a hang into a failure; they assert no
//! speed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fresh_database, testenv_var};
use fintech_workers::bronze::Lake;
use fintech_workers::loader::{LOAD_LOCK, Loader, LoaderConfig, LoaderMetrics, RunStatus};
use fintech_workers::storage::StorageOptions;
use fintech_workers::transform::{self, Project, TransformError, TransformOptions};
use fintech_workers::warehouse::{EmbeddedWarehouse, WarehouseOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// The transform runner's advisory lock key (`TRANSFORM_LOCK` in
/// `workers/src/transform/runner.rs`, documented in docs/architecture.md).
const TRANSFORM_LOCK: i64 = 0x6669_6e74_6563_6802;
/// How long a test lets a bounded wait take before calling it a hang.
const SAFETY_NET: Duration = Duration::from_secs(60);

/// A fresh, migrated database on the test environment's server: its URL and a pool with
/// the default options.
async fn fresh_warehouse() -> (String, PgPool) {
    let url = fresh_database(&testenv_var("DATABASE_URL")).await;
    let pool = WarehouseOptions::url(&url, 2)
        .connect_and_migrate()
        .await
        .unwrap();
    (url, pool)
}

/// A connection outside any pool, as another process holding a lock would have.
async fn holder(url: &str) -> (PgConnection, i32) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (conn, pid)
}

async fn show(conn: &mut PgConnection, setting: &str) -> String {
    sqlx::query_scalar(&format!("show {setting}"))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_embedded_postgres_accepts_the_session_settings() {
    let folder = tempfile::tempdir().unwrap();
    let warehouse = EmbeddedWarehouse::start(folder.path()).unwrap();
    let options = warehouse.options();
    assert_eq!(options.lock_timeout_secs, 600);
    let pool = options.connect_and_migrate().await.unwrap();
    {
        let mut conn = pool.acquire().await.unwrap();
        assert_eq!(show(&mut conn, "lock_timeout").await, "10min");
        assert_eq!(
            show(&mut conn, "idle_in_transaction_session_timeout").await,
            "10min"
        );
    }
    pool.close().await;
    warehouse.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn every_pooled_connection_starts_with_the_session_settings() {
    let (url, defaults) = fresh_warehouse().await;
    {
        let mut conn = defaults.acquire().await.unwrap();
        assert_eq!(show(&mut conn, "lock_timeout").await, "10min");
        assert_eq!(
            show(&mut conn, "idle_in_transaction_session_timeout").await,
            "10min"
        );
        // 0 by default: not sent, so the server's own setting (none) applies.
        assert_eq!(show(&mut conn, "statement_timeout").await, "0");
        assert_eq!(show(&mut conn, "tcp_keepalives_idle").await, "60");
        assert_eq!(show(&mut conn, "tcp_keepalives_interval").await, "10");
        assert_eq!(show(&mut conn, "tcp_keepalives_count").await, "6");
    }
    defaults.close().await;

    let mut options = WarehouseOptions::url(&url, 3);
    options.lock_timeout_secs = 7;
    options.idle_in_transaction_timeout_secs = 8;
    options.statement_timeout_secs = 9;
    options.tcp_keepalives_idle_secs = 11;
    options.tcp_keepalives_interval_secs = 12;
    options.tcp_keepalives_count = 3;
    let pool = options.connect().await.unwrap();
    // Every connection of the pool, not only the first.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(pool.acquire().await.unwrap());
    }
    for conn in &mut conns {
        assert_eq!(show(conn, "lock_timeout").await, "7s");
        assert_eq!(
            show(conn, "idle_in_transaction_session_timeout").await,
            "8s"
        );
        assert_eq!(show(conn, "statement_timeout").await, "9s");
        assert_eq!(show(conn, "tcp_keepalives_idle").await, "11");
        assert_eq!(show(conn, "tcp_keepalives_interval").await, "12");
        assert_eq!(show(conn, "tcp_keepalives_count").await, "3");
    }
    drop(conns);
    pool.close().await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_transform_run_waiting_for_a_held_lock_fails_with_a_clear_error() {
    let (url, pool) = fresh_warehouse().await;
    pool.close().await;
    let (mut other_run, other_pid) = holder(&url).await;
    sqlx::query("select pg_advisory_lock($1)")
        .bind(TRANSFORM_LOCK)
        .execute(&mut other_run)
        .await
        .unwrap();

    let mut options = WarehouseOptions::url(&url, 1);
    options.lock_timeout_secs = 1;
    let pool = options.connect().await.unwrap();
    let project = Project::embedded().unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(
        SAFETY_NET,
        transform::run(&pool, &project, &TransformOptions::default()),
    )
    .await
    .expect("the transform run waited for the lock past its lock timeout");
    let error = result.expect_err("the transform run took a lock another session holds");
    assert!(started.elapsed() >= Duration::from_secs(1), "{error}");
    assert!(matches!(error, TransformError::Locked { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("another transform run holds the lock since "),
        "{message}"
    );
    assert!(message.contains(&format!("pid {other_pid},")), "{message}");
    assert!(message.contains("lock timeout"), "{message}");
    let recorded: i64 = sqlx::query_scalar("select count(*) from metadata.transform_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a run that never got the lock ran nothing");

    // Once the other run lets go, the next run takes the lock and runs.
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(TRANSFORM_LOCK)
        .execute(&mut other_run)
        .await
        .unwrap();
    let report = tokio::time::timeout(
        SAFETY_NET,
        transform::run(&pool, &project, &TransformOptions::default()),
    )
    .await
    .unwrap()
    .expect("the lock is free");
    assert!(!report.nodes.is_empty());
    other_run.close().await.unwrap();
    pool.close().await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn fintech_transform_gives_up_on_a_held_lock_after_the_configured_timeout() {
    let (url, pool) = fresh_warehouse().await;
    pool.close().await;
    let (mut other_run, other_pid) = holder(&url).await;
    sqlx::query("select pg_advisory_lock($1)")
        .bind(TRANSFORM_LOCK)
        .execute(&mut other_run)
        .await
        .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["transform", "--log-format", "text", "--database-url", &url])
        .env("FINTECH_DATABASE_LOCK_TIMEOUT_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + SAFETY_NET;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("fintech transform waited for the lock past its lock timeout");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("another transform run holds the lock since "),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {other_pid},")), "{stderr}");
    other_run.close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_load_run_waiting_for_a_held_lock_fails_audited_and_the_next_run_loads() {
    let (url, pool) = fresh_warehouse().await;
    pool.close().await;
    let (mut other_loader, _) = holder(&url).await;
    let mut other_transaction = other_loader.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(LOAD_LOCK)
        .execute(&mut *other_transaction)
        .await
        .unwrap();

    let mut options = WarehouseOptions::url(&url, 2);
    options.lock_timeout_secs = 1;
    let pool = options.connect().await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let loader = Loader::new(
        pool.clone(),
        Lake::open(&StorageOptions::local(folder.path()).unwrap()).unwrap(),
        LoaderConfig::default(),
        LoaderMetrics::default(),
    );
    let report = tokio::time::timeout(SAFETY_NET, loader.run_once())
        .await
        .expect("the load run waited for the lock past its lock timeout")
        .expect("the warehouse is up, so the run is audited");
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.clone().unwrap();
    assert!(error.contains("taking the load lock"), "{error}");
    assert!(error.contains("lock timeout"), "{error}");
    let (status, audited): (String, Option<String>) =
        sqlx::query_as("select status, error from metadata.load_audit where run_id = $1")
            .bind(report.run_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), audited), ("FAILED", Some(error)));

    // The other loader commits; the next run (the next interval) takes the lock.
    other_transaction.commit().await.unwrap();
    let next = tokio::time::timeout(SAFETY_NET, loader.run_once())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.status, RunStatus::Success, "{:?}", next.error);
    other_loader.close().await.unwrap();
    pool.close().await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_session_idle_in_a_transaction_is_ended_and_its_lock_released() {
    let (url, pool) = fresh_warehouse().await;
    pool.close().await;
    let mut options = WarehouseOptions::url(&url, 1);
    options.idle_in_transaction_timeout_secs = 1;
    let pool = options.connect().await.unwrap();
    // A loader whose client stops mid-transaction while holding the load lock.
    let mut stuck = pool.begin().await.unwrap();
    let stuck_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *stuck)
        .await
        .unwrap();
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(LOAD_LOCK)
        .execute(&mut *stuck)
        .await
        .unwrap();

    let (mut observer, _) = holder(&url).await;
    let held = || {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from pg_locks where locktype = 'advisory' and granted \
             and pid = $1)",
        )
        .bind(stuck_pid)
    };
    assert!(held().fetch_one(&mut observer).await.unwrap());
    let deadline = Instant::now() + SAFETY_NET;
    loop {
        let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(LOAD_LOCK)
            .fetch_one(&mut observer)
            .await
            .unwrap();
        if taken {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session idle in its transaction still holds the load lock"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alive: bool =
        sqlx::query_scalar("select exists (select 1 from pg_stat_activity where pid = $1)")
            .bind(stuck_pid)
            .fetch_one(&mut observer)
            .await
            .unwrap();
    assert!(!alive, "the server ended the idle session");
    let error = sqlx::query("select 1")
        .execute(&mut *stuck)
        .await
        .expect_err("the session was ended");
    assert!(
        error.to_string().contains("idle-in-transaction timeout")
            || matches!(error, sqlx::Error::Io(_)),
        "{error}"
    );
    drop(stuck);
    observer.close().await.unwrap();
    pool.close().await;
}
