//! The controller against the real API server: a pipeline gets every child with an owner
//! reference and a status; spec changes reach the children; a deleted or hand-edited child
//! comes back; a rotated Secret rolls the workers; a manual run starts one Job; what happened shows in Events; suspend scales to
//! zero; deleting the pipeline lets the garbage collector remove the rest.

mod common;

use std::time::{Duration, Instant};

use common::{create_namespace, testenv_var};
use fintech_operator::controller::Context;
use fintech_operator::crd::{FintechPipeline, JobResult, Phase};
use fintech_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

/// Waits up to 60 s for `check` to hold.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|d| d.spec.replicas)
}

/// Applies the CRD to the test environment's API server and waits until it is served.
fn install_crd() {
    testenv_var("KUBECONFIG");
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/fintechpipelines.fintech.io.yaml"
    );
    let applied = std::process::Command::new(testenv_var("KUBECTL"))
        .args(["apply", "--server-side", "-f", crd])
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    std::process::Command::new(testenv_var("KUBECTL"))
        .args([
            "wait",
            "--for=condition=Established",
            "crd/fintechpipelines.fintech.io",
            "--timeout=60s",
        ])
        .status()
        .unwrap();
}

/// The controller, running in this process on `namespace` until the sender is used.
fn start_controller(
    client: &Client,
    namespace: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut registry = prometheus_client::registry::Registry::default();
    let ctx = Context::new(client.clone(), Metrics::register(&mut registry));
    let controller = tokio::spawn(fintech_operator::controller::run(
        ctx,
        Some(namespace.to_owned()),
        async {
            let _ = stopped.await;
        },
    ));
    (stop, controller)
}

/// Creates Secret `name` in `namespace` with `data`.
async fn create_secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn the_controller_reconciles_a_pipeline_into_its_children() {
    install_crd();
    let client = Client::try_default().await.unwrap();
    let namespace = format!("controller-{}", std::process::id());
    create_namespace(&client, &namespace).await;
    let (stop, controller) = start_controller(&client, &namespace);

    let pipelines: Api<FintechPipeline> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
    pipelines
        .create(
            &PostParams::default(),
            &FintechPipeline::new("demo", serde_json::from_str("{}").unwrap()),
        )
        .await
        .unwrap();

    // Without its Secrets the pipeline is Failed, with a message saying what to create.
    eventually("a status for generation 1", || async {
        let status = pipelines.get("demo").await.unwrap().status;
        status.is_some_and(|s| s.observed_generation == Some(1))
    })
    .await;
    let status = pipelines.get("demo").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    let message = &status.conditions[0].message;
    assert!(
        message.contains("Secret fintech-postgres with key(s) url"),
        "{message}"
    );
    create_secret(
        &client,
        &namespace,
        "fintech-minio",
        &[("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x")],
    )
    .await;
    create_secret(&client, &namespace, "fintech-postgres", &[("url", "x")]).await;
    // With them, every child exists, owned by the pipeline, and the phase is Pending.
    eventually("the Secrets noticed", || async {
        let status = pipelines.get("demo").await.unwrap().status;
        status.and_then(|s| s.phase) == Some(Phase::Pending)
    })
    .await;
    let pipeline = pipelines.get("demo").await.unwrap();
    let status = pipeline.status.unwrap();
    assert_eq!(
        status.phase,
        Some(Phase::Pending),
        "no kubelet runs, so no pod is ready"
    );
    assert_eq!(status.ready_components.as_deref(), Some("0/3"));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "Ready",
            "DataFlowing",
            "ProducerAvailable",
            "StreamerAvailable",
            "LoaderAvailable",
            "TransformScheduled"
        ]
    );
    // No pod runs, so no data can flow, and the condition says which.
    let flowing = &status.conditions[1];
    assert_eq!(
        (flowing.status.as_str(), flowing.reason.as_str()),
        ("False", "NotRunning")
    );
    assert!(
        flowing
            .message
            .starts_with("no producer or streamer or loader pod is running"),
        "{}",
        flowing.message
    );
    let uid = pipeline.metadata.uid.unwrap();
    for name in ["demo-producer", "demo-streamer", "demo-loader"] {
        let owners = deployments
            .get(name)
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap();
        assert_eq!(owners[0].uid, uid);
    }
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .get("demo-config")
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), &namespace)
        .get("demo-streamer-metrics")
        .await
        .unwrap();
    let cron = cron_jobs.get("demo-transform").await.unwrap();
    assert_eq!(cron.spec.schedule, "0 2 * * *");
    assert_eq!(cron.spec.concurrency_policy.as_deref(), Some("Forbid"));

    // A spec change reaches the children and the observed generation.
    let patch = serde_json::json!({"spec": {"streamer": {"replicas": 4}}});
    pipelines
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the streamer scaled to 4", || async {
        replicas(&deployments, "demo-streamer").await == Some(4)
    })
    .await;
    eventually("generation 2 observed", || async {
        pipelines
            .get("demo")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.observed_generation == Some(2))
    })
    .await;
    // More streamers than partitions is allowed, and the status says one will idle.
    let status = pipelines.get("demo").await.unwrap().status.unwrap();
    let streamer = status
        .conditions
        .iter()
        .find(|c| c.type_ == "StreamerAvailable")
        .unwrap();
    assert!(
        streamer
            .message
            .contains("1 idle: 4 replicas for 3 Kafka partitions"),
        "{}",
        streamer.message
    );

    // A hand edit of a child is undone.
    let scale = serde_json::json!({"spec": {"replicas": 9}});
    deployments
        .patch(
            "demo-streamer",
            &PatchParams::default(),
            &Patch::Merge(&scale),
        )
        .await
        .unwrap();
    eventually("the hand edit undone", || async {
        replicas(&deployments, "demo-streamer").await == Some(4)
    })
    .await;

    // A rotated Secret rolls the workers: its version is part of the configuration hash.
    let config_hash = || async {
        deployments
            .get("demo-loader")
            .await
            .unwrap()
            .spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("fintech.io/config-hash").cloned())
    };
    let before = config_hash().await;
    let rotate = serde_json::json!({"stringData": {"url": "postgres://rotated"}});
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(
            "fintech-postgres",
            &PatchParams::default(),
            &Patch::Merge(&rotate),
        )
        .await
        .unwrap();
    // Secrets are not watched; the resync would notice within a minute, a touch at once.
    let touch = serde_json::json!({"metadata": {"annotations": {"test/touch": "1"}}});
    pipelines
        .patch("demo", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    eventually("the workers rolled for the rotated Secret", || async {
        config_hash().await != before
    })
    .await;

    // A deleted child comes back.
    deployments
        .delete("demo-loader", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the loader restored", || async {
        replicas(&deployments, "demo-loader").await == Some(1)
    })
    .await;

    // A manual run: one Job per token, however often the pipeline is reconciled.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let annotate =
        serde_json::json!({"metadata": {"annotations": {"fintech.io/run-transform": "run-1"}}});
    pipelines
        .patch("demo", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    eventually("the manual run reported", || async {
        let status = pipelines.get("demo").await.unwrap().status;
        status
            .and_then(|s| s.transform)
            .and_then(|t| t.last_manual_run_token)
            .as_deref()
            == Some("run-1")
    })
    .await;
    let touch = serde_json::json!({"spec": {"loader": {"intervalSeconds": 30}}});
    pipelines
        .patch("demo", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    eventually("generation 3 observed", || async {
        pipelines
            .get("demo")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.observed_generation == Some(3))
    })
    .await;
    let manual: Vec<Job> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|job| {
            job.annotations()
                .get("fintech.io/run-transform")
                .map(String::as_str)
                == Some("run-1")
        })
        .collect();
    assert_eq!(manual.len(), 1, "exactly one Job for one token");
    let transform = pipelines
        .get("demo")
        .await
        .unwrap()
        .status
        .and_then(|s| s.transform)
        .unwrap();
    assert_eq!(transform.last_job, manual[0].metadata.name);
    assert_eq!(
        transform.last_job_result,
        Some(JobResult::Running),
        "no kubelet runs the Job's pod"
    );

    // What happened is told in Events on the pipeline.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &namespace);
    eventually("the events", || async {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("demo"))
            .filter_map(|e| e.reason)
            .collect();
        ["ManualTransformRun", "PhaseChanged", "Created", "Updated"]
            .iter()
            .all(|wanted| reasons.iter().any(|r| r == wanted))
    })
    .await;

    // Suspend scales every worker to zero and suspends the schedule.
    let patch = serde_json::json!({"spec": {"suspend": true}});
    pipelines
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("everything suspended", || async {
        let mut zero = true;
        for name in ["demo-producer", "demo-streamer", "demo-loader"] {
            zero &= replicas(&deployments, name).await == Some(0);
        }
        let suspended = cron_jobs.get("demo-transform").await.unwrap().spec.suspend == Some(true);
        let phase = pipelines
            .get("demo")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase);
        zero && suspended && phase == Some(Phase::Suspended)
    })
    .await;

    // Deleting the pipeline lets the garbage collector remove its children.
    pipelines
        .delete("demo", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the children collected", || async {
        deployments
            .get_opt("demo-streamer")
            .await
            .unwrap()
            .is_none()
            && cron_jobs.get_opt("demo-transform").await.unwrap().is_none()
    })
    .await;

    let _ = stop.send(());
    controller.await.unwrap();
    Api::<Namespace>::all(client)
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}

/// Two pipelines pointed at one warehouse database (through two Secrets with different users)
/// would share its schemas: the younger is refused, scaled to zero with a condition naming the
/// older, and takes over once the older is gone.
#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_second_pipeline_on_the_same_warehouse_waits_scaled_to_zero_until_the_first_is_gone() {
    install_crd();
    let client = Client::try_default().await.unwrap();
    let namespace = format!("shared-{}", std::process::id());
    create_namespace(&client, &namespace).await;
    let (stop, controller) = start_controller(&client, &namespace);
    create_secret(
        &client,
        &namespace,
        "fintech-minio",
        &[("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")],
    )
    .await;
    create_secret(
        &client,
        &namespace,
        "payments-db",
        &[(
            "url",
            "postgres://payments:s3cr3t-one@warehouse:5432/fintech",
        )],
    )
    .await;
    create_secret(
        &client,
        &namespace,
        "refunds-db",
        &[(
            "url",
            "postgres://refunds:other@WAREHOUSE/fintech?sslmode=require",
        )],
    )
    .await;
    let pipelines: Api<FintechPipeline> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let create = |name: &'static str, secret: &'static str| {
        let pipelines = pipelines.clone();
        async move {
            let spec = serde_json::json!({
                "warehouse": {"urlSecret": secret},
                "objectStore": {"bucketUrl": format!("s3://fintech/{name}")},
            });
            pipelines
                .create(
                    &PostParams::default(),
                    &FintechPipeline::new(name, serde_json::from_value(spec).unwrap()),
                )
                .await
                .unwrap();
        }
    };
    create("payments", "payments-db").await;
    eventually("the first pipeline's children", || async {
        replicas(&deployments, "payments-loader").await == Some(1)
    })
    .await;
    // Creation times have a one-second grain: the second is created a second later.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    create("refunds", "refunds-db").await;

    eventually("the second pipeline refused", || async {
        let status = pipelines.get("refunds").await.unwrap().status;
        status.is_some_and(|s| s.phase == Some(Phase::Failed))
    })
    .await;
    let status = pipelines.get("refunds").await.unwrap().status.unwrap();
    let ready = &status.conditions[0];
    assert_eq!(ready.reason, "WarehouseInUse");
    assert!(
        ready.message.starts_with(&format!(
            "database warehouse:5432/fintech is the warehouse of pipeline {namespace}/payments"
        )),
        "{}",
        ready.message
    );
    assert!(
        !ready.message.contains("s3cr3t"),
        "no password in a condition"
    );
    for worker in ["producer", "streamer", "loader"] {
        assert_eq!(
            replicas(&deployments, &format!("refunds-{worker}")).await,
            Some(0),
            "{worker}"
        );
    }
    let first = pipelines.get("payments").await.unwrap().status.unwrap();
    assert_ne!(
        first.phase,
        Some(Phase::Failed),
        "the first keeps its warehouse"
    );

    // Once the first pipeline is gone, the second one runs.
    pipelines
        .delete("payments", &DeleteParams::default())
        .await
        .unwrap();
    // Nothing watches the other pipeline's deletion for this one: touch it, as a resync would.
    eventually("the second pipeline takes over", || async {
        let now = format!("{:?}", std::time::SystemTime::now());
        let touch = serde_json::json!({"metadata": {"annotations": {"touched": now}}});
        let _ = pipelines
            .patch("refunds", &PatchParams::default(), &Patch::Merge(&touch))
            .await;
        replicas(&deployments, "refunds-loader").await == Some(1)
    })
    .await;
    let _ = stop.send(());
    let _ = controller.await;
    let _ = Api::<Namespace>::all(client)
        .delete(&namespace, &DeleteParams::default())
        .await;
}
