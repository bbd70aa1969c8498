//! The operator's Prometheus metrics: reconciles by result, failures by reason, how long a
//! reconcile takes, and per pipeline whether its newest transform Job failed.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `ok` or `error`.
    result: &'static str,
}

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// The Event reason of the failure, e.g. `ApplyFailed`.
    reason: &'static str,
}

/// Labels of a per-pipeline metric. The ServiceMonitor keeps this `namespace` (the
/// pipeline's) over the scrape's own (the operator's) with `honorLabels`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabels {
    namespace: String,
    pipeline: String,
}

/// Counters, gauges and a histogram, cheap to clone into the reconciler.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ResultLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    duration: Histogram,
    transform_failed: Family<PipelineLabels, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them under the `fintech_operator` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            transform_failed: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("fintech_operator");
        registry.register(
            "reconciles",
            "Reconciles of FintechPipelines, by result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by the reason their Warning Event carries",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Wall time of one reconcile",
            metrics.duration.clone(),
        );
        registry.register(
            "transform_failed",
            "1 while the newest transform Job of a pipeline (scheduled or manual) has failed, \
             else 0",
            metrics.transform_failed.clone(),
        );
        metrics
    }

    /// Records whether the newest transform Job of the pipeline `namespace/pipeline` failed.
    pub fn transform_result(&self, namespace: &str, pipeline: &str, failed: bool) {
        self.transform_failed
            .get_or_create(&PipelineLabels {
                namespace: namespace.to_owned(),
                pipeline: pipeline.to_owned(),
            })
            .set(i64::from(failed));
    }

    /// Records one reconcile: its duration and, when it failed, why.
    pub fn observe(&self, took: Duration, failure: Option<&'static str>) {
        self.duration.observe(took.as_secs_f64());
        let result = if failure.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(reason) = failure {
            self.failures.get_or_create(&ReasonLabels { reason }).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_reason() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.observe(Duration::from_millis(20), None);
        metrics.observe(Duration::from_millis(30), Some("ApplyFailed"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"fintech_operator_reconciles_total{result="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"fintech_operator_reconciles_total{result="error"} 1"#));
        assert!(
            text.contains(r#"fintech_operator_reconcile_failures_total{reason="ApplyFailed"} 1"#)
        );
        assert!(text.contains("fintech_operator_reconcile_duration_seconds_count 2"));
    }

    #[test]
    fn a_failed_transform_is_1_per_pipeline_until_a_newer_run_succeeds() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.transform_result("fintech", "payments", true);
        metrics.transform_result("fintech", "refunds", false);
        let text = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        let failed = text(&registry);
        assert!(
            failed.contains(
                r#"fintech_operator_transform_failed{namespace="fintech",pipeline="payments"} 1"#
            ),
            "{failed}"
        );
        assert!(failed.contains(
            r#"fintech_operator_transform_failed{namespace="fintech",pipeline="refunds"} 0"#
        ));
        metrics.transform_result("fintech", "payments", false);
        assert!(text(&registry).contains(
            r#"fintech_operator_transform_failed{namespace="fintech",pipeline="payments"} 0"#
        ));
    }
}
