//! The monitoring that ships with the chart (`helm/fintech-operator/files/monitoring`): the
//! alert rules pass `promtool check rules` and their unit tests (`promtool test rules`, which
//! include a stopped loader), and every metric the rules, their tests and the Grafana dashboard
//! name is one the workers or the operator really export.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::testenv_var;
use fintech_workers::harness::Exposed;
use fintech_workers::kafka::PartitionLabels;
use fintech_workers::loader::LoaderMetrics;
use fintech_workers::producer::ProducerMetrics;
use fintech_workers::streamer::StreamerMetrics;
use prometheus_client::registry::Registry;

const MONITORING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../helm/fintech-operator/files/monitoring"
);

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{MONITORING}/{file}"))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"))
}

/// The series names a Prometheus scrape of the workers and the operator can hold, from the
/// registries they serve at `/metrics`: a counter `x` is scraped as `x_total`, a histogram as
/// `x_bucket`, `x_sum` and `x_count`.
fn exported_series() -> BTreeSet<String> {
    let mut registry = Registry::default();
    let streamer = StreamerMetrics::default();
    streamer.register(&mut registry);
    LoaderMetrics::default().register(&mut registry);
    ProducerMetrics::default().register(&mut registry);
    let operator = fintech_operator::metrics::Metrics::register(&mut registry);
    // A family is exported once it has a series; these two get theirs from what they observe
    // (a partition, a pipeline).
    let _ = streamer.lag.partitions().get_or_create(&PartitionLabels {
        partition: "0".to_owned(),
    });
    operator.transform_result("fintech", "payments", false);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        let Some(declaration) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = declaration.split_once(' ').unwrap();
        match kind {
            "counter" => {
                series.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["bucket", "sum", "count"] {
                    series.insert(format!("{name}_{suffix}"));
                }
            }
            _ => {
                series.insert(name.to_owned());
            }
        }
    }
    series
}

/// Every `fintech_…` metric name in `text`.
fn fintech_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("fintech_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The PromQL expressions of the dashboard's panels and variables.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(&read("dashboard.json")).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_that_are_exported() {
    let exported = exported_series();
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    let mut named = BTreeSet::new();
    for query in &queries {
        named.extend(fintech_names(query));
    }
    let dashboard_names = named.len();
    for file in ["alerts.yaml", "alerts.test.yaml"] {
        named.extend(fintech_names(&read(file)));
    }
    let unknown: Vec<&String> = named.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "named but not exported: {unknown:?}\nexported: {exported:#?}"
    );
    // The dashboard shows rows through every layer, lag, dead letters, rejects and durations.
    for wanted in [
        "fintech_producer_delivered_total",
        "fintech_streamer_rows_total",
        "fintech_loader_rows_loaded_total",
        "fintech_streamer_consumer_lag",
        "fintech_streamer_dead_letters_total",
        "fintech_loader_rows_rejected_total",
        "fintech_loader_run_duration_seconds_bucket",
    ] {
        assert!(
            queries.iter().any(|q| q.contains(wanted)),
            "the dashboard does not show {wanted}"
        );
    }
    assert!(dashboard_names >= 10, "{named:?}");
}

#[test]
fn every_panel_has_a_unit_a_title_and_a_place() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("dashboard.json")).unwrap();
    assert_eq!(dashboard["uid"], "fintech-pipeline");
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(!title.is_empty());
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0, "{title}");
        if panel["type"] != "row" {
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].as_str().is_some(),
                "{title} has no unit"
            );
        }
    }
}

/// Runs the test environment's promtool in the monitoring folder.
fn promtool(args: &[&str]) -> String {
    let output = Command::new(testenv_var("PROMTOOL"))
        .args(args)
        .current_dir(MONITORING)
        .output()
        .unwrap_or_else(|e| panic!("cannot start promtool: {e}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("$ promtool {}\n{printed}", args.join(" "));
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{printed}"
    );
    printed
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_alert_rules_are_valid() {
    let checked = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_alerts_fire_as_their_unit_tests_expect_a_stopped_loader_included() {
    let tested = promtool(&["test", "rules", "alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    assert!(read("alerts.test.yaml").contains("name: a stopped loader"));
}
