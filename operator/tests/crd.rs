//! The FintechPipeline CRD against the real API server: it installs with kubectl, explains
//! itself, defaults an empty spec, and refuses invalid resources with readable messages.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::testenv_var;
use fintech_operator::crd::FintechPipeline;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    testenv_var("KUBECONFIG");
    let mut child = Command::new(testenv_var("KUBECTL"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn install_crd() {
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/fintechpipelines.fintech.io.yaml"
    );
    let applied = kubectl(&["apply", "--server-side", "-f", crd], None);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let established = kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/fintechpipelines.fintech.io",
            "--timeout=60s",
        ],
        None,
    );
    assert!(established.status.success());
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn the_crd_installs_explains_itself_and_defaults_an_empty_spec() {
    install_crd();
    // kubectl's discovery may lag the CRD by a moment.
    let mut explained = String::new();
    for _ in 0..20 {
        let output = kubectl(&["explain", "fintechpipeline.spec.transform"], None);
        explained = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(explained.contains("Cron schedule"), "{explained}");
    // The newer fields explain themselves too: the Kaggle export, the bank files and the data
    // status.
    let kaggle = kubectl(
        &["explain", "fintechpipeline.spec.producer.kaggleCsv"],
        None,
    );
    let kaggle = String::from_utf8_lossy(&kaggle.stdout);
    assert!(kaggle.contains("fraudTrain.csv"), "{kaggle}");
    let bank = kubectl(
        &["explain", "fintechpipeline.spec.loader.bankFilesUrl"],
        None,
    );
    let bank = String::from_utf8_lossy(&bank.stdout);
    assert!(
        bank.contains("settlements-YYYY-MM-DD.csv") && bank.contains("bank_reconciliation"),
        "{bank}"
    );
    let data = kubectl(&["explain", "fintechpipeline.status.data"], None);
    let data = String::from_utf8_lossy(&data.stdout);
    assert!(
        data.contains("consumerLag") && data.contains("lastLoadHealth"),
        "{data}"
    );

    let client = Client::try_default().await.unwrap();
    let pipelines: Api<FintechPipeline> = Api::namespaced(client, "default");
    let name = format!("defaults-{}", std::process::id());
    let created = pipelines
        .create(
            &PostParams::default(),
            &FintechPipeline {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: serde_json::from_str("{}").unwrap(),
                status: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(created.spec.transform.schedule, "0 2 * * *");
    assert_eq!(created.spec.kafka.partitions, 3);
    let listed = kubectl(&["get", "fp", &name], None);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        ["PHASE", "DATA", "LAG", "SILVER/MIN", "LAST LOAD", "GOLD"]
            .iter()
            .all(|column| table.contains(column)),
        "{table}"
    );
    pipelines
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn invalid_pipelines_are_refused_with_readable_messages() {
    install_crd();
    let bad = "apiVersion: fintech.io/v1alpha1
kind: FintechPipeline
metadata:
  name: invalid
spec:
  streamer:
    replicas: -1
  transform:
    schedule: every day
  image:
    pullPolicy: Sometimes
";
    let output = kubectl(&["apply", "-f", "-"], Some(bad));
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("spec.streamer.replicas"), "{message}");
    assert!(message.contains("greater than or equal to 0"), "{message}");
    assert!(message.contains("spec.transform.schedule"), "{message}");
    assert!(
        message.contains("supported values: \"Always\", \"IfNotPresent\", \"Never\""),
        "{message}"
    );
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn cel_rules_refuse_fewer_partitions_and_a_time_zone_in_the_schedule() {
    install_crd();
    let name = format!("cel-{}", std::process::id());
    let pipeline = |partitions: i32, schedule: &str| {
        format!(
            "apiVersion: fintech.io/v1alpha1
kind: FintechPipeline
metadata:
  name: {name}
  namespace: default
spec:
  kafka:
    partitions: {partitions}
  transform:
    schedule: \"{schedule}\"
"
        )
    };
    let created = kubectl(&["apply", "-f", "-"], Some(&pipeline(6, "0 2 * * *")));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let fewer = kubectl(&["apply", "-f", "-"], Some(&pipeline(3, "0 2 * * *")));
    assert!(!fewer.status.success());
    let message = String::from_utf8_lossy(&fewer.stderr);
    assert!(
        message.contains("kafka.partitions cannot decrease"),
        "{message}"
    );
    let more = kubectl(&["apply", "-f", "-"], Some(&pipeline(12, "0 2 * * *")));
    assert!(more.status.success(), "raising partitions is allowed");
    let zoned = kubectl(
        &["apply", "-f", "-"],
        Some(&pipeline(12, "CRON_TZ=Asia/Kolkata 0 2 * * *")),
    );
    assert!(!zoned.status.success());
    let message = String::from_utf8_lossy(&zoned.stderr);
    assert!(
        message.contains("set transform.timeZone instead"),
        "{message}"
    );
    let deleted = kubectl(&["delete", "fp", &name, "-n", "default"], None);
    assert!(deleted.status.success());
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn a_kaggle_share_without_the_export_is_refused_and_with_it_accepted() {
    install_crd();
    let name = format!("kaggle-{}", std::process::id());
    let pipeline = |kaggle: &str| {
        format!(
            "apiVersion: fintech.io/v1alpha1
kind: FintechPipeline
metadata:
  name: {name}
  namespace: default
spec:
  producer:
    syntheticShare: 0.3
    kaggleCsv: \"{kaggle}\"
"
        )
    };
    let missing = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&pipeline("")),
    );
    assert!(!missing.status.success());
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(
        message.contains("producer.syntheticShare below 1 replays the Kaggle export"),
        "{message}"
    );
    let local = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&pipeline("/data/fraudTrain.csv")),
    );
    assert!(!local.status.success(), "a pod has no local file to read");
    let object = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&pipeline("s3://fintech/seeds/fraudTrain.csv")),
    );
    assert!(
        object.status.success(),
        "{}",
        String::from_utf8_lossy(&object.stderr)
    );
}
