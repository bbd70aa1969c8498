//! Smoke test of the test environment's Kubernetes API server: the API is ready, and kube-rs
//! can create and read objects through it.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{create_namespace, testenv_var};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

/// Runs the tool named by the env var `tool` with `args` and returns its stdout.
fn run_tool(tool: &str, args: &[&str]) -> String {
    testenv_var("KUBECONFIG");
    let output = Command::new(testenv_var(tool)).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn kubectl_reports_the_api_server_ready() {
    assert_eq!(
        run_tool("KUBECTL", &["get", "--raw", "/readyz"]).trim(),
        "ok"
    );
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn helm_reaches_the_api_server() {
    assert!(run_tool("HELM", &["list", "--all-namespaces"]).starts_with("NAME"));
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn kube_client_creates_and_reads_a_config_map() {
    testenv_var("KUBECONFIG");
    let client = Client::try_default().await.unwrap();
    let namespace = format!("smoke-{}", std::process::id());
    create_namespace(&client, &namespace).await;

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let data = BTreeMap::from([("greeting".to_owned(), "hello".to_owned())]);
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("smoke".to_owned()),
                    ..ObjectMeta::default()
                },
                data: Some(data.clone()),
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    let read = config_maps.get("smoke").await.unwrap();
    assert_eq!(read.data, Some(data));

    Api::<Namespace>::all(client)
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}
