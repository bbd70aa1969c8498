//! `fintech-bench`: every stage runs at tiny sizes and writes the JSON report its readers
//! expect, with the counts it was asked for, positive rates, and its scratch data removed.
//! No figure is held against a time here: benchmarks print figures, tests do not time them.
//! The stages that run `fintech` commands find the binary beside `fintech-bench`, where
//! `cargo test --workspace` builds both.

// The workers' test helpers, shared rather than copied.
#[path = "../../workers/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{testenv_var, unique_name};
use fintech_workers::storage::StorageOptions;
use futures::TryStreamExt;
use serde_json::Value;

/// Runs `fintech-bench <args> --format json` and returns its report.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_fintech-bench"))
        .args(["--log-format", "text", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fintech-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// Checks what every report has: the stage, the rows asked for, positive figures, and each
/// target either met or missed.
fn assert_report(report: &Value, stage: &str, rows: u64, positive: &[&str]) {
    assert_eq!(report["stage"], stage, "{report:#}");
    assert_eq!(report["rows"], rows, "{report:#}");
    for name in ["seconds", "rows_per_sec"].iter().chain(positive) {
        let value = report[*name].as_f64();
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{name} is {:?} in {report:#}",
            report[*name]
        );
    }
    for target in report["targets"].as_array().unwrap() {
        assert!(target["met"].is_boolean(), "{target:#}");
    }
}

/// A lake below a fresh prefix of the test environment's bucket.
fn lake() -> String {
    testenv_var("AWS_ENDPOINT_URL");
    format!(
        "s3://{}/{}",
        testenv_var("FINTECH_TEST_BUCKET"),
        unique_name("bench")
    )
}

/// Objects left in the scratch lake a report names.
async fn objects_left(report: &Value) -> usize {
    let lake = StorageOptions {
        lake_url: report["parameters"]["lake_url"]
            .as_str()
            .unwrap()
            .to_owned(),
        s3_endpoint: None,
        s3_region: None,
    };
    let (store, root) = lake.open().unwrap();
    let objects: Vec<_> = store.list(Some(&root)).try_collect().await.unwrap();
    objects.len()
}

#[test]
fn generate_reports_every_event_and_the_breakdown() {
    let report = bench(&["generate", "--events", "2000", "--chunk", "700"]);
    assert_report(
        &report,
        "generate",
        2_000,
        &[
            "mb_per_sec",
            "generate_rows_per_sec",
            "json_encode_rows_per_sec",
            "peak_rss_mb",
        ],
    );
}

#[test]
fn bronze_reports_decode_and_encode_and_writes_the_json_file() {
    let folder = tempfile::tempdir().unwrap();
    let json = folder.path().join("bronze.json");
    let report = bench(&[
        "bronze",
        "--rows",
        "3000",
        "--batch-rows",
        "1000",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_report(
        &report,
        "bronze",
        3_000,
        &[
            "decode_rows_per_sec",
            "reference_decode_rows_per_sec",
            "decode_speedup",
            "encode_rows_per_sec",
            "codec_zstd1_rows_per_sec",
            "codec_lz4_mb",
            "parquet_mb",
            "peak_rss_mb",
        ],
    );
    assert_eq!(report["dead_letters"], 0);
    // Decode alone, and decode with encode.
    assert_eq!(report["targets"].as_array().unwrap().len(), 2);
    let written: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(written, report);
}

/// The stream stage over 3,000 messages in 1,000-row batches, with `extra` flags.
fn stream(extra: &[&str]) -> Value {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let lake = lake();
    let mut args = vec![
        "stream",
        "--bootstrap-servers",
        &bootstrap,
        "--lake-url",
        &lake,
        "--messages",
        "3000",
        "--batch-max-rows",
        "1000",
    ];
    args.extend_from_slice(extra);
    bench(&args)
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn stream_reports_throughput_and_batch_latency_against_kafka_and_s3() {
    let report = stream(&[]);
    assert_report(
        &report,
        "stream",
        3_000,
        &[
            "mb_per_sec",
            "produce_rows_per_sec",
            "batch_commit_latency_p50_ms",
            "batch_commit_latency_p95_ms",
            "batch_commit_latency_max_ms",
            "peak_rss_mb",
        ],
    );
    assert_eq!(report["bronze_rows"], 3_000);
    assert_eq!(report["batches"], 3);
    assert_eq!(report["batch_commit_latency_count"], 3);
    assert_eq!(objects_left(&report).await, 0);
}

/// Two streamers in one group share the topic and, between them, write every message to
/// bronze once.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn stream_with_two_streamers_in_one_group_reads_every_message() {
    let report = stream(&["--partitions", "4", "--streamers", "2"]);
    assert_report(&report, "stream", 3_000, &["mb_per_sec", "peak_rss_mb"]);
    assert_eq!(report["parameters"]["streamers"], 2);
    assert_eq!(report["bronze_rows"], 3_000);
    // The targets are for one streamer on one core.
    assert_eq!(report["targets"].as_array().map(Vec::len).unwrap_or(0), 0);
    assert_eq!(objects_left(&report).await, 0);
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn load_reports_copy_against_the_row_by_row_baseline() {
    let database = testenv_var("DATABASE_URL");
    let lake = lake();
    let report = bench(&[
        "load",
        "--database-url",
        &database,
        "--lake-url",
        &lake,
        "--rows",
        "3000",
        "--batch-rows",
        "1000",
        "--insert-rows",
        "500",
    ]);
    assert_report(
        &report,
        "load",
        3_000,
        &[
            "mb_per_sec",
            "insert_rows_per_sec",
            "copy_speedup",
            "server_copy_seconds",
            "server_share",
            "peak_rss_mb",
        ],
    );
    assert_eq!(report["insert_rows"], 500);
    assert_eq!(report["runs"], 1);
    assert_eq!(objects_left(&report).await, 0);
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn transform_reports_a_full_refresh_and_an_incremental_run() {
    let database = testenv_var("DATABASE_URL");
    let lake = lake();
    let report = bench(&[
        "transform",
        "--database-url",
        &database,
        "--lake-url",
        &lake,
        "--rows",
        "3000",
        "--increment-rows",
        "500",
    ]);
    assert_report(
        &report,
        "transform",
        3_000,
        &[
            "incremental_seconds",
            "incremental_fact_rows_merged",
            "incremental_share",
        ],
    );
    assert_eq!(report["incremental_new_rows"], 500);
    assert_eq!(report["data_tests_failed"], 0);
    assert_eq!(report["incremental_data_tests_failed"], 0);
    let steps = report["full_refresh_steps"].as_object().unwrap();
    assert!(
        steps.keys().any(|k| k.ends_with("marts.fact_transactions")),
        "{steps:#?}"
    );
    assert_eq!(objects_left(&report).await, 0);
}

#[test]
#[ignore = "slow (two quickstart runs on the embedded PostgreSQL); scripts/test.sh runs it"]
fn quickstart_reports_wall_time_memory_and_phases_of_each_run() {
    let report = bench(&["quickstart", "--events", "300", "--runs", "2"]);
    assert_report(
        &report,
        "quickstart",
        300,
        &["peak_rss_mb", "run_2_seconds", "run_2_peak_rss_mb"],
    );
    assert!(report["run_2_silver_rows_after"].as_u64() > report["silver_rows_after"].as_u64());
    let phases = report["phases"].as_object().unwrap();
    assert!(
        phases
            .keys()
            .any(|k| k.ends_with("transform and data tests")),
        "{phases:#?}"
    );
}
