//! The `fintech-operator run` binary against the real API server: it becomes ready, serves
//! its metrics, reconciles a pipeline in the namespace it watches, and stops cleanly on
//! SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{create_namespace, testenv_var};
use fintech_operator::crd::FintechPipeline;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 200 ms for up to 60 s.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn the_operator_binary_serves_health_and_metrics_and_stops_on_sigterm() {
    let kubeconfig = testenv_var("KUBECONFIG");
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/fintechpipelines.fintech.io.yaml"
    );
    let applied = Command::new(testenv_var("KUBECTL"))
        .args(["apply", "--server-side", "-f", crd])
        .output()
        .unwrap();
    assert!(applied.status.success());
    let client = Client::try_default().await.unwrap();
    let namespace = format!("operator-binary-{}", std::process::id());
    create_namespace(&client, &namespace).await;

    let port = free_port();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_fintech-operator"))
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", kubeconfig)
        .env("FINTECH_OPERATOR_WATCH_NAMESPACE", &namespace)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("/healthz", || {
        fintech_status_server::http_get(port, "/healthz").is_ok_and(|(code, _)| code == 200)
    });
    wait_for("/readyz", || {
        fintech_status_server::http_get(port, "/readyz").is_ok_and(|(code, _)| code == 200)
    });

    let pipelines: Api<FintechPipeline> = Api::namespaced(client.clone(), &namespace);
    pipelines
        .create(
            &PostParams::default(),
            &FintechPipeline::new("watched", serde_json::from_str("{}").unwrap()),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pipelines.get("watched").await.unwrap().status.is_none() {
        assert!(Instant::now() < deadline, "timed out waiting for a status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A missing Secret is reported in the status, not as a failed reconcile. The status is
    // written during the reconcile and the counter counted after it, so wait for the count.
    wait_for("a successful reconcile in /metrics", || {
        fintech_status_server::http_get(port, "/metrics").is_ok_and(|(code, body)| {
            code == 200 && body.contains(r#"fintech_operator_reconciles_total{result="ok"}"#)
        })
    });
    let (_, body) = fintech_status_server::http_get(port, "/metrics").unwrap();
    assert!(body.contains("fintech_operator_reconcile_duration_seconds_bucket"));

    let pid = operator.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = operator.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the operator ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut operator.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(status.success(), "{status}: {logs}");
    let first = logs.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "logs are JSON lines: {first}"
    );
    assert!(logs.contains("controller stopped"), "{logs}");

    Api::<Namespace>::all(client)
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}
