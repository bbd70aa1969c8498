//! The Helm chart against the test environment's helm and API server: it lints; what it
//! renders (defaults, development infrastructure, sample pipeline) is accepted by a server-side
//! dry run and meets the restricted Pod Security Standard; its schema refuses bad values with
//! messages that name them; a real install creates the objects, keeps generated passwords
//! across an upgrade, and an uninstall removes them (the CRD stays); the RBAC grants the
//! operator exactly the verbs it needs, cluster-wide or in one namespace; the controller,
//! acting as the chart's ServiceAccount, does its whole job with the namespaced Role; and a
//! permission it lacks becomes a Warning Event that names the failed apply.
//!
//! The CRD is cluster-wide and shared with the other test files, which install it with
//! `kubectl apply --server-side`. Installs here do the same and pass `crds.create=false`, so
//! that no release takes ownership of it and no uninstall could touch it; the chart's CRD
//! template is checked by the dry runs and by comparing it with crds/. Every test works in a
//! namespace and release of its own, so tests run in parallel and reruns do not collide.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::testenv_var;
use serde::Deserialize;
use serde_yaml::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/fintech-operator");
const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crds/fintechpipelines.fintech.io.yaml"
);
const PLAIN_MANIFESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../manifests/operator/10-operator.yaml"
);
/// What a workload that breaks the restricted Pod Security Standard makes the API server say.
const POD_SECURITY_WARNING: &str = "would violate PodSecurity";

/// What a tool printed, and whether it succeeded.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the test environment's `tool` (`HELM` or `KUBECTL`) with `args`, feeding `stdin`.
fn run(tool: &str, args: &[&str], stdin: Option<&str>) -> Ran {
    let kubeconfig = testenv_var("KUBECONFIG");
    let mut child = Command::new(testenv_var(tool))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {tool}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `tool` and returns its stdout, failing the test with its stderr if it fails.
fn must(tool: &str, args: &[&str], stdin: Option<&str>) -> String {
    let ran = run(tool, args, stdin);
    assert!(
        ran.ok,
        "{tool} {}\n{}{}",
        args.join(" "),
        ran.stdout,
        ran.stderr
    );
    ran.stdout
}

/// A name no other test or earlier run uses: the process, a counter within it, and the time
/// (a rerun may get the same process id).
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        seconds % 100_000
    )
}

/// A namespace that enforces the restricted Pod Security Standard (so a non-compliant pod
/// is refused, and a dry run warns), deleted when dropped, also when the test fails.
struct TestNamespace(String);

impl TestNamespace {
    fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        must("KUBECTL", &["create", "namespace", &name], None);
        must(
            "KUBECTL",
            &[
                "label",
                "namespace",
                &name,
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/warn=restricted",
            ],
            None,
        );
        Self(name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        run(
            "KUBECTL",
            &[
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// An installed release, uninstalled when dropped unless the test already did.
struct Release {
    name: String,
    namespace: String,
    installed: bool,
}

impl Release {
    fn install(namespace: &TestNamespace, sets: &[&str]) -> Self {
        let name = unique("fintech");
        let mut args = vec!["install", &name, CHART, "--namespace", &namespace.0];
        for set in sets {
            args.extend(["--set", set]);
        }
        must("HELM", &args, None);
        Self {
            name,
            namespace: namespace.0.clone(),
            installed: true,
        }
    }

    /// The operator's objects' name, as the chart derives it from the release name.
    fn fullname(&self) -> String {
        format!("{}-fintech-operator", self.name)
    }

    fn service_account(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.fullname()
        )
    }

    fn uninstall(&mut self) {
        must(
            "HELM",
            &["uninstall", &self.name, "--namespace", &self.namespace],
            None,
        );
        self.installed = false;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            run(
                "HELM",
                &["uninstall", &self.name, "--namespace", &self.namespace],
                None,
            );
        }
    }
}

/// Installs the CRD from crds/ as the other test files do, and waits until it is served.
fn ensure_crd() {
    must("KUBECTL", &["apply", "--server-side", "-f", CRD], None);
    must(
        "KUBECTL",
        &[
            "wait",
            "--for=condition=Established",
            "crd/fintechpipelines.fintech.io",
            "--timeout=60s",
        ],
        None,
    );
}

/// `helm template` of the chart as release `release` in `namespace` with `sets`.
fn render(release: &str, namespace: &str, sets: &[&str]) -> String {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    must("HELM", &args, None)
}

/// `kubectl apply --dry-run=server` of `manifest` in `namespace`; returns the warnings.
fn dry_run(namespace: &str, manifest: &str) -> String {
    let ran = run(
        "KUBECTL",
        &[
            "apply",
            "--dry-run=server",
            "--namespace",
            namespace,
            "-f",
            "-",
        ],
        Some(manifest),
    );
    assert!(
        ran.ok,
        "the API server refused the rendered chart:\n{}",
        ran.stderr
    );
    ran.stderr
}

/// The YAML documents of a multi-document manifest (empty ones skipped).
fn documents(manifest: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(manifest)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|document| !document.is_null())
        .collect()
}

/// The `kind/name` of every object in a manifest.
fn kinds_and_names(manifest: &str) -> Vec<String> {
    documents(manifest)
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// `value` with every number a float: Helm's YAML round trip writes `1000.0` as `1000`.
fn numbers_as_floats(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Json::Number(n) => Json::from(n.as_f64().unwrap()),
        Json::Array(items) => Json::Array(items.into_iter().map(numbers_as_floats).collect()),
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Renders with `sets`, checks the API server accepts every object in a namespace of its own
/// with no Pod Security warning, and returns the manifest.
fn render_and_dry_run(prefix: &str, sets: &[&str]) -> String {
    ensure_crd();
    let namespace = TestNamespace::new(prefix);
    let manifest = render(&unique("fintech"), &namespace.0, sets);
    let warnings = dry_run(&namespace.0, &manifest);
    assert!(
        !warnings.contains(POD_SECURITY_WARNING),
        "a pod breaks the restricted Pod Security Standard:\n{warnings}"
    );
    manifest
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn helm_lint_passes_strictly_with_default_and_with_every_option_on() {
    must("HELM", &["lint", "--strict", CHART], None);
    must(
        "HELM",
        &[
            "lint",
            "--strict",
            CHART,
            "--set",
            "infra.enabled=true,infra.exposeNodePorts=true,samplePipeline.enabled=true",
            "--set",
            "rbac.scope=namespace,monitoring.serviceMonitor.enabled=true",
        ],
        None,
    );
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_default_render_is_accepted_by_the_api_server() {
    let manifest = render_and_dry_run("chart-default", &[]);
    let objects = kinds_and_names(&manifest);
    for expected in [
        "CustomResourceDefinition/fintechpipelines.fintech.io",
        "ServiceAccount/",
        "Role/",
        "RoleBinding/",
        "Service/",
        "Deployment/",
    ] {
        assert!(
            objects.iter().any(|o| o.starts_with(expected)),
            "no {expected} in {objects:?}"
        );
    }
    assert!(
        !objects
            .iter()
            .any(|o| o.starts_with("StatefulSet/") || o.starts_with("FintechPipeline/")),
        "infrastructure and the sample pipeline are off by default: {objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.starts_with("ClusterRoleBinding/")),
        "by default the operator is granted nothing beyond its namespace: {objects:?}"
    );
    let crd = documents(&manifest)
        .into_iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .unwrap();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
        Some("keep"),
        "uninstalling the chart must never delete the CRD (and every pipeline with it)"
    );
    let checked_in: Value = serde_yaml::from_str(&std::fs::read_to_string(CRD).unwrap()).unwrap();
    assert_eq!(
        numbers_as_floats(serde_json::to_value(&crd["spec"]).unwrap()),
        numbers_as_floats(serde_json::to_value(&checked_in["spec"]).unwrap()),
        "the chart renders a CRD spec different from crds/"
    );
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_render_with_the_development_infrastructure_is_accepted_by_the_api_server() {
    let manifest = render_and_dry_run(
        "chart-infra",
        &["infra.enabled=true", "infra.exposeNodePorts=true"],
    );
    let objects = kinds_and_names(&manifest);
    for expected in [
        "Service/fintech-kafka",
        "StatefulSet/fintech-kafka",
        "Service/fintech-postgres",
        "StatefulSet/fintech-postgres",
        "Secret/fintech-postgres",
        "Service/fintech-minio",
        "StatefulSet/fintech-minio",
        "Secret/fintech-minio",
        "Job/fintech-minio-bucket-1",
    ] {
        assert!(
            objects.iter().any(|o| o == expected),
            "no {expected} in {objects:?}"
        );
    }
    let docs = documents(&manifest);
    let secret = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)
            .unwrap()["stringData"]
            .clone()
    };
    // The keys the FintechPipeline defaults read.
    assert!(
        secret("fintech-postgres")["url"]
            .as_str()
            .unwrap()
            .starts_with("postgres://fintech:")
    );
    assert!(secret("fintech-minio")["AWS_ACCESS_KEY_ID"].is_string());
    assert!(secret("fintech-minio")["AWS_SECRET_ACCESS_KEY"].is_string());
    let node_ports: Vec<u64> = docs
        .iter()
        .filter(|d| d["kind"] == "Service" && d["spec"]["type"] == "NodePort")
        .flat_map(|d| d["spec"]["ports"].as_sequence().unwrap().clone())
        .filter_map(|p| p["nodePort"].as_u64())
        .collect();
    assert_eq!(node_ports.len(), 2, "PostgreSQL and the MinIO console");
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_render_with_the_sample_pipeline_is_accepted_by_the_api_server() {
    let manifest = render_and_dry_run(
        "chart-sample",
        &[
            "infra.enabled=true",
            "samplePipeline.enabled=true",
            "samplePipeline.spec.producer.rate=200",
            "rbac.scope=namespace",
        ],
    );
    let docs = documents(&manifest);
    let pipeline = docs
        .iter()
        .find(|d| d["kind"] == "FintechPipeline")
        .expect("a sample pipeline");
    assert_eq!(pipeline["metadata"]["name"].as_str(), Some("payments"));
    assert_eq!(pipeline["spec"]["producer"]["rate"].as_u64(), Some(200));
    assert_eq!(
        pipeline["spec"]["warehouse"]["urlSecret"].as_str(),
        Some("fintech-postgres")
    );
    assert_eq!(
        pipeline["spec"]["objectStore"]["bucketUrl"].as_str(),
        Some("s3://fintech/lake")
    );
    assert!(
        docs.iter().any(|d| d["kind"] == "Role")
            && !docs.iter().any(|d| d["kind"] == "ClusterRoleBinding"),
        "rbac.scope=namespace makes a Role and no cluster-wide binding"
    );
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn bad_values_are_refused_with_a_message_that_names_them() {
    let cases = [
        ("replicaCount=-1", "at '/replicaCount': minimum"),
        ("replicaCount=2", "at '/replicaCount': maximum"),
        (
            "image.pullPolicy=Sometimes",
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ("bogus=1", "additional properties 'bogus' not allowed"),
        (
            "infra.kafak.storage=1Gi",
            "additional properties 'kafak' not allowed",
        ),
        (
            "rbac.scope=everywhere",
            "at '/rbac/scope': value must be one of 'cluster', 'namespace'",
        ),
        (
            "samplePipeline.name=Payments_1",
            "at '/samplePipeline/name': 'Payments_1' does not match pattern",
        ),
        (
            "infra.postgres.nodePort=80",
            "at '/infra/postgres/nodePort': minimum",
        ),
        (
            "infra.kafka.clusterId=short",
            "at '/infra/kafka/clusterId': 'short' does not match pattern",
        ),
    ];
    for (set, message) in cases {
        let ran = run("HELM", &["template", "bad", CHART, "--set", set], None);
        assert!(!ran.ok, "--set {set} was accepted");
        assert!(
            ran.stderr
                .contains("values don't meet the specifications of the schema")
                && ran.stderr.contains(message),
            "--set {set}: expected {message:?} in\n{}",
            ran.stderr
        );
    }
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_service_monitor_is_rendered_only_when_enabled_and_scrapes_the_metrics_service() {
    let off = render("monitor", "default", &[]);
    assert!(
        !kinds_and_names(&off)
            .iter()
            .any(|o| o.starts_with("ServiceMonitor/"))
    );
    let on = render(
        "monitor",
        "default",
        &[
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.serviceMonitor.labels.release=prometheus",
        ],
    );
    let docs = documents(&on);
    let monitor = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(
        monitor["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );
    let service = docs
        .iter()
        .find(|d| {
            d["kind"] == "Service" && d["metadata"]["name"] == "monitor-fintech-operator-metrics"
        })
        .expect("the metrics Service");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    for (key, value) in selector {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor's selector {key:?} does not match the metrics Service"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true),
        "the per-pipeline metrics keep the pipeline's namespace"
    );
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port),
        "the ServiceMonitor scrapes port {port:?}, which the Service does not have"
    );
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_worker_monitor_alerts_and_dashboard_are_rendered_only_when_enabled() {
    let monitoring = |manifest: &str| {
        kinds_and_names(manifest)
            .into_iter()
            .filter(|o| {
                o.starts_with("PodMonitor/")
                    || o.starts_with("PrometheusRule/")
                    || o.ends_with("-dashboard")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        monitoring(&render("mon", "default", &[])),
        Vec::<String>::new()
    );
    let on = render(
        "mon",
        "analytics",
        &[
            "rbac.scope=namespace",
            "monitoring.podMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
            "monitoring.dashboard.enabled=true",
            "monitoring.dashboard.namespace=grafana",
        ],
    );
    assert_eq!(
        monitoring(&on),
        [
            "ConfigMap/mon-fintech-operator-dashboard",
            "PodMonitor/mon-fintech-operator-workers",
            "PrometheusRule/mon-fintech-operator-alerts",
        ]
    );
    let docs = documents(&on);
    let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();

    // The PodMonitor scrapes the worker pods of the release namespace and names the pipeline.
    let monitor = &find("PodMonitor")["spec"];
    assert_eq!(
        monitor["namespaceSelector"]["matchNames"][0].as_str(),
        Some("analytics")
    );
    assert_eq!(
        monitor["podMetricsEndpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    let relabelled: Vec<&str> = monitor["podMetricsEndpoints"][0]["relabelings"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["targetLabel"].as_str().unwrap())
        .collect();
    assert_eq!(relabelled, ["pipeline", "component"]);
    // The workers' pods carry the labels it selects by.
    let pipeline = fintech_operator::crd::FintechPipeline::new(
        "payments",
        serde_json::from_str("{}").unwrap(),
    );
    let pod_labels = fintech_operator::children::deployment(
        &pipeline,
        fintech_operator::children::Worker::Loader,
        "h",
    )
    .spec
    .template
    .metadata
    .unwrap()
    .labels
    .unwrap();
    for expression in monitor["selector"]["matchExpressions"]
        .as_sequence()
        .unwrap()
    {
        let value = &pod_labels[expression["key"].as_str().unwrap()];
        assert!(
            expression["values"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v.as_str() == Some(value)),
            "the loader's pod does not match {expression:?}"
        );
    }

    // The PrometheusRule holds exactly the rules promtool checks.
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{CHART}/files/monitoring/alerts.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(find("PrometheusRule")["spec"], rules);

    // The dashboard, where Grafana's sidecar looks for it.
    let dashboard = find("ConfigMap");
    assert_eq!(dashboard["metadata"]["namespace"].as_str(), Some("grafana"));
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["fintech-pipeline.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "fintech-pipeline");
}

/// The release and namespace the plain manifests are rendered for.
const PLAIN_RELEASE: [&str; 2] = ["fintech-operator", "fintech-system"];

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_plain_manifests_are_the_cluster_wide_render() {
    let rendered = render(
        PLAIN_RELEASE[0],
        PLAIN_RELEASE[1],
        &["crds.create=false", "rbac.scope=cluster"],
    );
    let header = "# The operator's objects as the Helm chart renders them with rbac.scope=cluster, for\n\
                  # clusters without Helm; see 00-namespace.yaml. Generated by operator/tests/chart.rs\n\
                  # (FINTECH_REGENERATE=1 rewrites it); do not edit.\n";
    let expected = format!("{header}{rendered}");
    if std::env::var_os("FINTECH_REGENERATE").is_some() {
        std::fs::write(PLAIN_MANIFESTS, &expected).unwrap();
    }
    let checked_in = std::fs::read_to_string(PLAIN_MANIFESTS).unwrap_or_default();
    assert!(
        checked_in == expected,
        "manifests/operator/10-operator.yaml differs from the chart's cluster-wide render; \
         regenerate it with `FINTECH_REGENERATE=1 cargo test -p fintech-operator --test chart \
         -- --include-ignored the_plain_manifests_are_the_cluster_wide_render`"
    );
    assert!(
        documents(&checked_in).iter().all(|d| {
            d["kind"] == "ClusterRole"
                || d["kind"] == "ClusterRoleBinding"
                || d["metadata"]["namespace"] == PLAIN_RELEASE[1]
        }),
        "every namespaced object must name its namespace, or `kubectl apply` puts it elsewhere"
    );
}

/// Waits up to 60 s until `kubectl get` finds none of `objects` in `namespace`.
fn wait_until_gone(namespace: &str, objects: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut args = vec![
            "get",
            "--namespace",
            namespace,
            "--ignore-not-found",
            "-o",
            "name",
        ];
        args.extend(objects.iter().map(String::as_str));
        let left = must("KUBECTL", &args, None);
        if left.trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still there after the uninstall:\n{left}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A key of a Secret, as stored (base64).
fn secret_key(namespace: &str, secret: &str, key: &str) -> String {
    must(
        "KUBECTL",
        &[
            "get",
            "secret",
            secret,
            "--namespace",
            namespace,
            "-o",
            &format!("jsonpath={{.data.{key}}}"),
        ],
        None,
    )
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn install_creates_the_objects_upgrade_keeps_the_passwords_and_uninstall_removes_them() {
    ensure_crd();
    let namespace = TestNamespace::new("chart-install");
    let ns = namespace.0.as_str();
    let mut release = Release::install(
        &namespace,
        &[
            "crds.create=false",
            "infra.enabled=true",
            "samplePipeline.enabled=true",
        ],
    );
    let fullname = release.fullname();
    let namespaced: Vec<String> = vec![
        format!("deployment/{fullname}"),
        format!("serviceaccount/{fullname}"),
        format!("service/{fullname}-metrics"),
        // Least privilege by default: the operator's grant is a Role in the namespace.
        format!("role/{fullname}"),
        format!("rolebinding/{fullname}"),
        "statefulset/fintech-kafka".into(),
        "service/fintech-kafka".into(),
        "statefulset/fintech-postgres".into(),
        "service/fintech-postgres".into(),
        "secret/fintech-postgres".into(),
        "statefulset/fintech-minio".into(),
        "service/fintech-minio".into(),
        "secret/fintech-minio".into(),
        "job/fintech-minio-bucket-1".into(),
    ];
    let cluster_wide: Vec<String> = vec![
        format!("clusterrole/{fullname}-view"),
        format!("clusterrole/{fullname}-edit"),
    ];
    let mut args = vec!["get", "--namespace", ns, "-o", "name"];
    args.extend(namespaced.iter().map(String::as_str));
    must("KUBECTL", &args, None);
    let mut args = vec!["get", "-o", "name"];
    args.extend(cluster_wide.iter().map(String::as_str));
    must("KUBECTL", &args, None);
    must(
        "KUBECTL",
        &["get", "--namespace", ns, "fintechpipeline/payments"],
        None,
    );

    // The namespace enforces the restricted standard, so every pod the controllers create
    // from the chart's workloads proves that its pod meets it (no kubelet runs them).
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = [
        "fintech-kafka-0",
        "fintech-postgres-0",
        "fintech-minio-0",
        "fintech-minio-bucket-1-",
        fullname.as_str(),
    ];
    loop {
        let pods = must(
            "KUBECTL",
            &["get", "pods", "--namespace", ns, "-o", "name"],
            None,
        );
        if wanted
            .iter()
            .all(|w| pods.lines().any(|p| p.starts_with(&format!("pod/{w}"))))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods missing (refused by Pod Security?); have:\n{pods}\nevents:\n{}",
            must("KUBECTL", &["get", "events", "--namespace", ns], None)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let password = secret_key(ns, "fintech-postgres", "password");
    let secret_key_before = secret_key(ns, "fintech-minio", "AWS_SECRET_ACCESS_KEY");
    assert!(!password.is_empty() && !secret_key_before.is_empty());
    must(
        "HELM",
        &[
            "upgrade",
            &release.name,
            CHART,
            "--namespace",
            ns,
            "--reuse-values",
        ],
        None,
    );
    assert_eq!(
        secret_key(ns, "fintech-postgres", "password"),
        password,
        "an upgrade must keep the generated PostgreSQL password (its data folder has it)"
    );
    assert_eq!(
        secret_key(ns, "fintech-minio", "AWS_SECRET_ACCESS_KEY"),
        secret_key_before
    );
    must(
        "KUBECTL",
        &["get", "--namespace", ns, "job/fintech-minio-bucket-2"],
        None,
    );

    release.uninstall();
    let mut gone = namespaced.clone();
    gone.push("job/fintech-minio-bucket-2".into());
    wait_until_gone(ns, &gone);
    // The StatefulSets' volumes go with them (their retention policy), through the garbage
    // collector.
    wait_until_gone(ns, &["persistentvolumeclaims".to_owned()]);
    let left = must(
        "KUBECTL",
        &[
            &["get", "-o", "name", "--ignore-not-found"][..],
            &cluster_wide.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ]
        .concat(),
        None,
    );
    assert!(left.trim().is_empty(), "cluster-wide objects left: {left}");
    must(
        "KUBECTL",
        &["get", "crd", "fintechpipelines.fintech.io"],
        None,
    );
    // Hook objects are not part of a release: the sample pipeline outlives the uninstall,
    // as values.yaml and NOTES.txt tell the user.
    must(
        "KUBECTL",
        &["delete", "--namespace", ns, "fintechpipeline/payments"],
        None,
    );
}

/// Whether `service_account` may `verb` `resource` (with `extra` arguments such as
/// `--subresource=status` or `--namespace=x`), as `kubectl auth can-i` answers.
fn can_i(service_account: &str, verb: &str, resource: &str, extra: &[&str]) -> bool {
    let as_flag = format!("--as={service_account}");
    let mut args = vec!["auth", "can-i", verb, resource, as_flag.as_str()];
    args.extend(extra);
    let ran = run("KUBECTL", &args, None);
    match ran.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl {}: {other}{}", args.join(" "), ran.stderr),
    }
}

/// Every permission the operator needs: (verb, resource, subresource).
const GRANTED: &[(&str, &str, &str)] = &[
    ("get", "fintechpipelines.fintech.io", ""),
    ("list", "fintechpipelines.fintech.io", ""),
    ("watch", "fintechpipelines.fintech.io", ""),
    ("get", "fintechpipelines.fintech.io", "status"),
    ("patch", "fintechpipelines.fintech.io", "status"),
    ("update", "fintechpipelines.fintech.io", "status"),
    ("update", "fintechpipelines.fintech.io", "finalizers"),
    ("get", "deployments.apps", ""),
    ("list", "deployments.apps", ""),
    ("watch", "deployments.apps", ""),
    ("create", "deployments.apps", ""),
    ("patch", "deployments.apps", ""),
    ("get", "cronjobs.batch", ""),
    ("list", "cronjobs.batch", ""),
    ("watch", "cronjobs.batch", ""),
    ("create", "cronjobs.batch", ""),
    ("patch", "cronjobs.batch", ""),
    ("get", "jobs.batch", ""),
    ("list", "jobs.batch", ""),
    ("watch", "jobs.batch", ""),
    ("create", "jobs.batch", ""),
    ("get", "configmaps", ""),
    ("list", "configmaps", ""),
    ("watch", "configmaps", ""),
    ("create", "configmaps", ""),
    ("patch", "configmaps", ""),
    ("get", "services", ""),
    ("list", "services", ""),
    ("watch", "services", ""),
    ("create", "services", ""),
    ("patch", "services", ""),
    ("get", "secrets", ""),
    ("list", "pods", ""),
    ("create", "events.events.k8s.io", ""),
    ("patch", "events.events.k8s.io", ""),
];

/// Permissions the operator must not have.
const DENIED: &[(&str, &str, &str)] = &[
    ("delete", "deployments.apps", ""),
    ("update", "deployments.apps", ""),
    ("delete", "cronjobs.batch", ""),
    ("patch", "jobs.batch", ""),
    ("delete", "jobs.batch", ""),
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("create", "secrets", ""),
    ("delete", "configmaps", ""),
    ("get", "pods", ""),
    ("watch", "pods", ""),
    ("get", "pods", "log"),
    ("create", "pods", "exec"),
    ("create", "fintechpipelines.fintech.io", ""),
    ("patch", "fintechpipelines.fintech.io", ""),
    ("delete", "fintechpipelines.fintech.io", ""),
    ("create", "events", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
];

/// Checks every permission of [`GRANTED`] and [`DENIED`] in `namespace`; `granted` says
/// whether the ones the operator needs are expected there.
fn check_permissions(service_account: &str, namespace: &str, granted: bool) {
    let namespace_flag = format!("--namespace={namespace}");
    for (verbs, expected) in [(GRANTED, granted), (DENIED, false)] {
        for (verb, resource, subresource) in verbs {
            let subresource_flag = format!("--subresource={subresource}");
            let mut extra = vec![namespace_flag.as_str()];
            if !subresource.is_empty() {
                extra.push(&subresource_flag);
            }
            assert_eq!(
                can_i(service_account, verb, resource, &extra),
                expected,
                "{service_account} {} {verb} {resource} {subresource} in {namespace}",
                if expected { "should" } else { "should not" }
            );
        }
    }
}

/// The operator Deployment's `FINTECH_OPERATOR_WATCH_NAMESPACE`.
fn watched_namespace(release: &Release) -> String {
    must(
        "KUBECTL",
        &[
            "get",
            "deployment",
            &release.fullname(),
            "--namespace",
            &release.namespace,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"FINTECH_OPERATOR_WATCH_NAMESPACE\")].value}",
        ],
        None,
    )
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_cluster_role_grants_the_operator_exactly_what_it_needs_in_every_namespace() {
    let namespace = TestNamespace::new("chart-rbac");
    let release = Release::install(&namespace, &["crds.create=false", "rbac.scope=cluster"]);
    let account = release.service_account();
    check_permissions(&account, &namespace.0, true);
    check_permissions(&account, "default", true);
    let watch = watched_namespace(&release);
    assert_eq!(watch, "", "a cluster-wide operator watches every namespace");
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn by_default_the_operator_is_granted_and_watches_its_own_namespace_only() {
    let namespace = TestNamespace::new("chart-rbac-ns");
    let release = Release::install(&namespace, &["crds.create=false"]);
    let account = release.service_account();
    check_permissions(&account, &namespace.0, true);
    check_permissions(&account, "default", false);
    assert!(
        !can_i(
            &account,
            "list",
            "fintechpipelines.fintech.io",
            &["--all-namespaces"]
        ),
        "a namespaced operator must not list pipelines cluster-wide"
    );
    let watch = watched_namespace(&release);
    assert_eq!(
        watch, namespace.0,
        "a namespaced operator must watch only the namespace its Role grants"
    );
}

/// A client that acts as `user`, as the operator's pod would with its ServiceAccount token.
async fn client_as(user: &str) -> kube::Client {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    kube::Client::try_from(config).unwrap()
}

/// Runs the controller in `namespace` as `user` until the returned sender is dropped.
fn spawn_controller_as(
    client: kube::Client,
    namespace: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    prometheus_client::registry::Registry,
) {
    use fintech_operator::controller::{self, Context};
    use fintech_operator::metrics::Metrics;
    let mut registry = prometheus_client::registry::Registry::default();
    let ctx = Context::new(client, Metrics::register(&mut registry));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(controller::run(ctx, Some(namespace.to_owned()), async {
        let _ = stopped.await;
    }));
    (stop, handle, registry)
}

/// Creates the two Secrets a default pipeline reads, and the pipeline `demo`, as the admin.
fn create_pipeline_and_secrets(namespace: &str) {
    let objects = "apiVersion: v1
kind: Secret
metadata: {name: fintech-minio}
stringData: {AWS_ACCESS_KEY_ID: x, AWS_SECRET_ACCESS_KEY: x}
---
apiVersion: v1
kind: Secret
metadata: {name: fintech-postgres}
stringData: {url: 'postgres://x@fintech-postgres/x'}
---
apiVersion: fintech.io/v1alpha1
kind: FintechPipeline
metadata: {name: demo}
spec: {}
";
    must(
        "KUBECTL",
        &["apply", "--namespace", namespace, "-f", "-"],
        Some(objects),
    );
}

/// Waits up to 60 s for the output of `kubectl args` to satisfy `check`.
fn wait_for_kubectl(args: &[&str], what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ran = run("KUBECTL", args, None);
        if ran.ok && check(&ran.stdout) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}{}",
            ran.stdout,
            ran.stderr
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn the_controller_does_its_whole_job_with_only_the_charts_namespaced_role() {
    ensure_crd();
    let namespace = TestNamespace::new("chart-run-as");
    let release = Release::install(&namespace, &["crds.create=false", "rbac.scope=namespace"]);
    let client = client_as(&release.service_account()).await;
    let (stop, controller, registry) = spawn_controller_as(client, &namespace.0);
    create_pipeline_and_secrets(&namespace.0);
    let ns = namespace.0.as_str();

    // Every child, the status, a manual run and the Events, all under the Role alone.
    wait_for_kubectl(
        &[
            "get",
            "fp",
            "demo",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.phase}",
        ],
        "the status",
        |phase| phase == "Pending",
    );
    let children = must(
        "KUBECTL",
        &[
            "get",
            "deployments,services,configmaps,cronjobs",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/instance=demo",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(children.lines().count(), 8, "{children}");
    must(
        "KUBECTL",
        &[
            "annotate",
            "fp",
            "demo",
            "-n",
            ns,
            "fintech.io/run-transform=rbac-check",
        ],
        None,
    );
    wait_for_kubectl(
        &[
            "get",
            "fp",
            "demo",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.transform.lastManualRunJob}",
        ],
        "the manual run",
        |job| job.starts_with("demo-transform-manual-"),
    );
    wait_for_kubectl(
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        "the Events",
        |reasons| reasons.contains("Created") && reasons.contains("ManualTransformRun"),
    );
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(
        !metrics.contains("fintech_operator_reconcile_failures_total{"),
        "no reconcile failed for lack of a permission:\n{metrics}"
    );
    drop(stop);
    controller.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_missing_permission_is_a_warning_event_that_names_what_failed() {
    ensure_crd();
    let namespace = TestNamespace::new("chart-forbidden");
    let ns = namespace.0.as_str();
    // Everything the operator needs but Services.
    let rbac = "apiVersion: v1
kind: ServiceAccount
metadata: {name: partial}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: partial}
rules:
- apiGroups: [fintech.io]
  resources: [fintechpipelines]
  verbs: [get, list, watch]
- apiGroups: [fintech.io]
  resources: [fintechpipelines/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create]
- apiGroups: ['']
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
- apiGroups: ['']
  resources: [secrets]
  verbs: [get]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: partial}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: partial}
subjects:
- {kind: ServiceAccount, name: partial}
";
    must("KUBECTL", &["apply", "-n", ns, "-f", "-"], Some(rbac));
    let client = client_as(&format!("system:serviceaccount:{ns}:partial")).await;
    let (stop, controller, registry) = spawn_controller_as(client, ns);
    create_pipeline_and_secrets(ns);

    wait_for_kubectl(
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "--field-selector",
            "reason=ApplyFailed",
            "-o",
            "jsonpath={.items[*].note}",
        ],
        "an ApplyFailed Event",
        |notes| notes.contains("applying Service demo-producer-metrics failed"),
    );
    let notes = must(
        "KUBECTL",
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "--field-selector",
            "reason=ApplyFailed",
            "-o",
            "jsonpath={.items[0].note}",
        ],
        None,
    );
    assert!(notes.contains("forbidden"), "{notes}");
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(
        metrics.contains(r#"fintech_operator_reconcile_failures_total{reason="ApplyFailed"}"#),
        "{metrics}"
    );
    drop(stop);
    controller.await.unwrap();
}
