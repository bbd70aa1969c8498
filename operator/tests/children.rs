//! The children the builders make are valid objects for the real API server (a server-side
//! dry run of each, so nothing is created).

mod common;

use common::testenv_var;
use fintech_operator::children::{self, Worker};
use fintech_operator::crd::FintechPipeline;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::PostParams;
use kube::{Api, Client};

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn every_child_passes_the_api_servers_validation() {
    testenv_var("KUBECONFIG");
    let client = Client::try_default().await.unwrap();
    let mut pipeline = FintechPipeline::new(
        "dry",
        serde_json::from_str(r#"{"transform": {"timeZone": "Asia/Kolkata"}}"#).unwrap(),
    );
    pipeline.metadata.namespace = Some("default".to_owned());
    pipeline.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
    let dry_run = PostParams {
        dry_run: true,
        field_manager: Some(children::FIELD_MANAGER.to_owned()),
    };
    let config = children::config_map(&pipeline);
    let hash = children::config_hash(&config, &[]);
    Api::<ConfigMap>::default_namespaced(client.clone())
        .create(&dry_run, &config)
        .await
        .unwrap();
    let deployments = Api::<Deployment>::default_namespaced(client.clone());
    let services = Api::<Service>::default_namespaced(client.clone());
    for worker in Worker::ALL {
        deployments
            .create(&dry_run, &children::deployment(&pipeline, worker, &hash))
            .await
            .unwrap();
        services
            .create(&dry_run, &children::metrics_service(&pipeline, worker))
            .await
            .unwrap();
    }
    Api::<CronJob>::default_namespaced(client)
        .create(&dry_run, &children::transform_cron_job(&pipeline, &hash))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn the_transform_jobs_deadline_at_either_bound_passes_the_api_servers_validation() {
    testenv_var("KUBECONFIG");
    let client = Client::try_default().await.unwrap();
    let cron_jobs = Api::<CronJob>::default_namespaced(client);
    let dry_run = PostParams {
        dry_run: true,
        field_manager: Some(children::FIELD_MANAGER.to_owned()),
    };
    for (spec, expected) in [
        ("{}", 3_600),
        (r#"{"transform": {"activeDeadlineSeconds": 60}}"#, 60),
        (r#"{"transform": {"activeDeadlineSeconds": 86400}}"#, 86_400),
    ] {
        let mut pipeline = FintechPipeline::new("deadline", serde_json::from_str(spec).unwrap());
        pipeline.metadata.namespace = Some("default".to_owned());
        pipeline.metadata.uid = Some("00000000-0000-0000-0000-000000000002".to_owned());
        let created = cron_jobs
            .create(&dry_run, &children::transform_cron_job(&pipeline, "hash"))
            .await
            .unwrap();
        let job = created.spec.job_template.spec.unwrap();
        assert_eq!(job.active_deadline_seconds, Some(expected), "{spec}");
    }
}
