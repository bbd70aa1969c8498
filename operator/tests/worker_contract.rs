//! The operator writes the workers' subcommands, flags and `FINTECH_*` environment; the
//! workers' own command-line definition parses every command line it renders, so the two
//! cannot drift apart unnoticed.

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};
use fintech_operator::children::{self, Worker};
use fintech_operator::crd::FintechPipeline;
use fintech_workers::cli::Cli;
use k8s_openapi::api::core::v1::{ConfigMap, Container};

/// What a Secret the operator refers to would hold, for the variables filled from one.
const SECRET_VALUE: &str = "postgres://fintech:secret@warehouse:5432/fintech";

/// Pipelines with the defaults, with every optional setting given, and with every bounded
/// field at the lower and at the upper limit the CRD lets the API server accept.
fn pipelines() -> Vec<FintechPipeline> {
    let specs = [
        "{}",
        r#"{
            "kafka": {"partitions": 1},
            "producer": {"rate": 1, "syntheticShare": 0, "settlementShare": 0,
                         "malformedRate": 0, "duplicateRate": 0},
            "streamer": {"replicas": 0, "batchIntervalSeconds": 1, "maxBatchRows": 1},
            "loader": {"intervalSeconds": 1},
            "transform": {"lookbackSeconds": 0}
        }"#,
        r#"{
            "kafka": {"partitions": 1000},
            "producer": {"rate": 1000000, "syntheticShare": 1, "settlementShare": 1,
                         "malformedRate": 1, "duplicateRate": 1},
            "streamer": {"replicas": 1000, "batchIntervalSeconds": 3600,
                         "maxBatchRows": 10000000},
            "loader": {"intervalSeconds": 86400},
            "transform": {"lookbackSeconds": 31536000}
        }"#,
        r#"{
            "objectStore": {"endpoint": "http://minio:9000", "bucketUrl": "s3://lake/x"},
            "producer": {"rate": 250, "syntheticShare": 0.3, "settlementShare": 0.5,
                         "malformedRate": 0.01, "duplicateRate": 0.02},
            "streamer": {"replicas": 2, "batchIntervalSeconds": 5, "maxBatchRows": 500},
            "loader": {"intervalSeconds": 15, "bankFilesUrl": "s3://lake/batch_files"},
            "transform": {"lookbackSeconds": 3600, "timeZone": "Asia/Kolkata"}
        }"#,
    ];
    specs
        .iter()
        .map(|spec| {
            let mut pipeline =
                FintechPipeline::new("contract", serde_json::from_str(spec).unwrap());
            pipeline.metadata.namespace = Some("default".to_owned());
            pipeline
        })
        .collect()
}

/// The `FINTECH_*` variables `subcommand` reads (its own and the global ones), each with the
/// flag it fills and whether that flag takes a value.
fn variables_read_by(subcommand: &str) -> BTreeMap<String, (String, bool)> {
    let root = Cli::command();
    let command = root
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("the workers have no `{subcommand}` command"));
    root.get_arguments()
        .chain(command.get_arguments())
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let long = arg.get_long()?.to_owned();
            Some((env, (long, arg.get_action().takes_values())))
        })
        .collect()
}

/// The environment of `container`: the pipeline's ConfigMap, then its own variables (a
/// Secret's value stands in for those filled from one).
fn environment(container: &Container, config: &ConfigMap) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = config.data.clone().unwrap_or_default();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(_)) => SECRET_VALUE.to_owned(),
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// The command line `container` runs, with every `FINTECH_*` variable its command reads
/// turned into the flag it fills; variables it does not read are returned apart.
fn command_line(container: &Container, config: &ConfigMap) -> (Vec<String>, Vec<String>) {
    let args = container
        .args
        .clone()
        .expect("the operator sets the arguments");
    let read = variables_read_by(&args[0]);
    let mut line = vec!["fintech".to_owned()];
    line.extend(args);
    let mut unread = Vec::new();
    for (name, value) in environment(container, config) {
        match read.get(&name) {
            Some((long, true)) => line.push(format!("--{long}={value}")),
            Some((long, false)) if value == "true" => line.push(format!("--{long}")),
            Some((_, false)) => {}
            None if name.starts_with("FINTECH_") => unread.push(name),
            None => {}
        }
    }
    (line, unread)
}

/// Every container the operator runs a worker in, with the ConfigMap it reads.
fn worker_containers(pipeline: &FintechPipeline) -> Vec<(Container, ConfigMap)> {
    let config = children::config_map(pipeline);
    let hash = children::config_hash(&config, &[]);
    let mut containers: Vec<Container> = Worker::ALL
        .into_iter()
        .flat_map(|worker| {
            children::deployment(pipeline, worker, &hash)
                .spec
                .template
                .spec
                .map(|pod| pod.containers)
                .unwrap_or_default()
        })
        .collect();
    let transform = children::transform_cron_job(pipeline, &hash);
    containers.extend(
        transform
            .spec
            .job_template
            .spec
            .and_then(|job| job.template.spec)
            .map(|pod| pod.containers)
            .unwrap_or_default(),
    );
    assert_eq!(containers.len(), 4, "three workers and the transform");
    containers
        .into_iter()
        .map(|container| (container, config.clone()))
        .collect()
}

#[test]
fn every_worker_command_line_the_operator_renders_parses_with_the_workers_cli() {
    for pipeline in pipelines() {
        for (container, config) in worker_containers(&pipeline) {
            let (line, _) = command_line(&container, &config);
            if let Err(error) = Cli::try_parse_from(&line) {
                panic!(
                    "the {} container's command line does not parse: {line:?}\n{error}",
                    container.name
                );
            }
        }
    }
}

#[test]
fn every_fintech_variable_the_operator_sets_is_read_by_a_worker_it_reaches() {
    for pipeline in pipelines() {
        let containers = worker_containers(&pipeline);
        let mut unread_everywhere: Option<Vec<String>> = None;
        for (container, config) in &containers {
            let (_, unread) = command_line(container, config);
            unread_everywhere = Some(match unread_everywhere {
                None => unread,
                Some(before) => before.into_iter().filter(|v| unread.contains(v)).collect(),
            });
        }
        assert_eq!(
            unread_everywhere.unwrap_or_default(),
            Vec::<String>::new(),
            "variables no worker reads (a misspelling, or a flag renamed in the workers)"
        );
    }
}
