//! The objects a `FintechPipeline` owns, built from its spec by pure functions: a ConfigMap
//! with the pipeline's configuration, a Deployment and a metrics Service per long-running
//! worker, and the transform CronJob. The controller applies them with server-side apply;
//! these builders decide what they contain and are unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::FintechPipeline;

/// Port of the workers' `/metrics`, `/healthz` and `/readyz`.
pub const METRICS_PORT: i32 = 9090;
/// Annotation with a hash of the configuration, so a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "fintech.io/config-hash";
/// Annotation that requests a manual transform run: each new value starts one Job.
pub const RUN_TRANSFORM_ANNOTATION: &str = "fintech.io/run-transform";
/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "fintech-operator";

/// A long-running worker of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// `fintech produce`.
    Producer,
    /// `fintech stream`.
    Streamer,
    /// `fintech load`.
    Loader,
}

impl Worker {
    /// Every worker.
    pub const ALL: [Worker; 3] = [Worker::Producer, Worker::Streamer, Worker::Loader];

    /// The component name, in labels and object names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Streamer => "streamer",
            Self::Loader => "loader",
        }
    }

    /// The `fintech` subcommand it runs.
    fn command(self) -> &'static str {
        match self {
            Self::Producer => "produce",
            Self::Streamer => "stream",
            Self::Loader => "load",
        }
    }
}

/// Name of a child: the pipeline's name and the component.
pub fn child_name(pipeline: &FintechPipeline, component: &str) -> String {
    format!("{}-{component}", pipeline.name_any())
}

/// The label selector of a pipeline's children of one component.
pub fn selector(pipeline: &FintechPipeline, component: &str) -> String {
    format!(
        "app.kubernetes.io/name=fintech,app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
        pipeline.name_any()
    )
}

/// The standard labels of a child.
pub fn labels(pipeline: &FintechPipeline, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "fintech".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), pipeline.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "fintech-pipeline".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
    ])
}

fn metadata(pipeline: &FintechPipeline, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(pipeline, component)),
        namespace: pipeline.namespace(),
        labels: Some(labels(pipeline, component)),
        owner_references: pipeline.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The pipeline's configuration as the workers' `FINTECH_*` environment variables.
pub fn config_map(pipeline: &FintechPipeline) -> ConfigMap {
    let spec = &pipeline.spec;
    let mut data = BTreeMap::from([
        ("FINTECH_LOG_FORMAT", "json".to_owned()),
        ("FINTECH_METRICS_ADDR", format!("0.0.0.0:{METRICS_PORT}")),
        (
            "FINTECH_KAFKA_BOOTSTRAP_SERVERS",
            spec.kafka.bootstrap_servers.clone(),
        ),
        ("FINTECH_KAFKA_TOPIC", spec.kafka.topic.clone()),
        (
            "FINTECH_KAFKA_PARTITIONS",
            spec.kafka.partitions.to_string(),
        ),
        ("FINTECH_LAKE_URL", spec.object_store.bucket_url.clone()),
        ("FINTECH_S3_REGION", spec.object_store.region.clone()),
        ("FINTECH_RATE", spec.producer.rate.to_string()),
        (
            "FINTECH_KAGGLE_SHARE",
            (1.0 - spec.producer.synthetic_share).to_string(),
        ),
        (
            "FINTECH_SETTLEMENT_SHARE",
            spec.producer.settlement_share.to_string(),
        ),
        (
            "FINTECH_FAULT_MALFORMED_JSON",
            spec.producer.malformed_rate.to_string(),
        ),
        (
            "FINTECH_FAULT_DUPLICATE",
            spec.producer.duplicate_rate.to_string(),
        ),
        (
            "FINTECH_BATCH_INTERVAL_SECS",
            spec.streamer.batch_interval_seconds.to_string(),
        ),
        (
            "FINTECH_BATCH_MAX_ROWS",
            spec.streamer.max_batch_rows.to_string(),
        ),
        (
            "FINTECH_LOAD_INTERVAL_SECS",
            spec.loader.interval_seconds.to_string(),
        ),
        (
            "FINTECH_LOOKBACK_SECONDS",
            spec.transform.lookback_seconds.to_string(),
        ),
    ]);
    if !spec.object_store.endpoint.is_empty() {
        data.insert("FINTECH_S3_ENDPOINT", spec.object_store.endpoint.clone());
    }
    if !spec.producer.kaggle_csv.is_empty() {
        data.insert("FINTECH_KAGGLE_CSV", spec.producer.kaggle_csv.clone());
    }
    if !spec.loader.bank_files_url.is_empty() {
        data.insert("FINTECH_BANK_FILES_URL", spec.loader.bank_files_url.clone());
    }
    ConfigMap {
        metadata: metadata(pipeline, "config"),
        data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        ..ConfigMap::default()
    }
}

/// FNV-1a of `bytes`: stable across builds and platforms, unlike the standard hasher.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// A stable hash of the ConfigMap's data and of the versions of the Secrets the workers read,
/// for [`CONFIG_HASH_ANNOTATION`]: a change to either rolls the pods, so a rotated password
/// reaches them without a restart by hand. Only the Secrets' `resourceVersion`s go in, never
/// their contents, since the annotation is readable by anyone who can read a Deployment.
pub fn config_hash(config: &ConfigMap, secret_versions: &[String]) -> String {
    let data = config
        .data
        .iter()
        .flatten()
        .flat_map(|(key, value)| key.bytes().chain([0]).chain(value.bytes()).chain([0]));
    let secrets = secret_versions
        .iter()
        .flat_map(|version| version.bytes().chain([0]));
    format!("{:016x}", fnv1a(data.chain(secrets)))
}

fn image(pipeline: &FintechPipeline) -> String {
    let tag = match pipeline.spec.image.tag.as_str() {
        "" => env!("CARGO_PKG_VERSION"),
        tag => tag,
    };
    format!("{}:{tag}", pipeline.spec.image.repository)
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn default_resources(cpu: &str, memory: &str) -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities(cpu, memory)),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(METRICS_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The worker container: arguments, environment from the ConfigMap and Secrets, probes, a
/// locked-down security context.
fn container(
    pipeline: &FintechPipeline,
    name: &str,
    args: Vec<String>,
    resources: ResourceRequirements,
    probes: bool,
) -> Container {
    let spec = &pipeline.spec;
    let mut env = vec![
        secret_env(
            "AWS_ACCESS_KEY_ID",
            &spec.object_store.credentials_secret,
            "AWS_ACCESS_KEY_ID",
        ),
        secret_env(
            "AWS_SECRET_ACCESS_KEY",
            &spec.object_store.credentials_secret,
            "AWS_SECRET_ACCESS_KEY",
        ),
        secret_env(
            "FINTECH_DATABASE_URL",
            &spec.warehouse.url_secret,
            &spec.warehouse.url_key,
        ),
    ];
    if spec.object_store.endpoint.starts_with("http://") {
        env.push(EnvVar {
            name: "AWS_ALLOW_HTTP".to_owned(),
            value: Some("true".to_owned()),
            ..EnvVar::default()
        });
    }
    Container {
        name: name.to_owned(),
        image: Some(image(pipeline)),
        image_pull_policy: Some(format!("{:?}", spec.image.pull_policy)),
        args: Some(args),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: child_name(pipeline, "config"),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: probes.then(|| {
            vec![ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: METRICS_PORT,
                ..ContainerPort::default()
            }]
        }),
        liveness_probe: probes.then(|| probe("/healthz")),
        readiness_probe: probes.then(|| probe("/readyz")),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65_532),
        run_as_group: Some(65_532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The replicas a worker should have: zero when the pipeline is suspended (or the producer
/// disabled), the spec's count for the streamer, one otherwise.
pub fn desired_replicas(pipeline: &FintechPipeline, worker: Worker) -> i32 {
    let spec = &pipeline.spec;
    if spec.suspend {
        return 0;
    }
    match worker {
        Worker::Producer if !spec.producer.enabled => 0,
        Worker::Streamer => spec.streamer.replicas,
        _ => 1,
    }
}

/// The Deployment of one worker; `config_hash` rolls its pods when the configuration changes.
pub fn deployment(pipeline: &FintechPipeline, worker: Worker, config_hash: &str) -> Deployment {
    let spec = &pipeline.spec;
    let component = worker.as_str();
    let (resources, defaults) = match worker {
        Worker::Producer => (&spec.producer.resources, default_resources("100m", "128Mi")),
        Worker::Streamer => (&spec.streamer.resources, default_resources("250m", "256Mi")),
        Worker::Loader => (&spec.loader.resources, default_resources("250m", "256Mi")),
    };
    let mut args = vec![worker.command().to_owned()];
    if worker == Worker::Streamer {
        args.push(format!("--group-id={}", child_name(pipeline, "streamer")));
    }
    let selector = BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), pipeline.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
    ]);
    Deployment {
        metadata: metadata(pipeline, component),
        spec: DeploymentSpec {
            replicas: Some(desired_replicas(pipeline, worker)),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            // The streamer must drain and commit before its replacement joins the group.
            strategy: (worker != Worker::Loader).then(|| DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(pipeline, component)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(
                        pipeline,
                        component,
                        args,
                        resources.clone().unwrap_or(defaults),
                        true,
                    )],
                    security_context: Some(pod_security()),
                    // The workers never call the API server, so they get no token to lose.
                    automount_service_account_token: Some(false),
                    // Service links would add `<SERVICE>_PORT`-style variables, and a Service
                    // named fintech-kafka would inject FINTECH_KAFKA_* into the workers' flags.
                    enable_service_links: Some(false),
                    // Long enough for the streamer to write and commit its open batch.
                    termination_grace_period_seconds: Some(120),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The metrics Service of one worker.
pub fn metrics_service(pipeline: &FintechPipeline, worker: Worker) -> Service {
    let component = worker.as_str();
    Service {
        metadata: metadata(pipeline, &format!("{component}-metrics")),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                ("app.kubernetes.io/instance".to_owned(), pipeline.name_any()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    component.to_owned(),
                ),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("metrics".to_owned()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The transform CronJob: one run at a time, a short history, suspended with the pipeline.
pub fn transform_cron_job(pipeline: &FintechPipeline, config_hash: &str) -> CronJob {
    let spec = &pipeline.spec;
    let resources = spec
        .transform
        .resources
        .clone()
        .unwrap_or_else(|| default_resources("250m", "256Mi"));
    CronJob {
        metadata: metadata(pipeline, "transform"),
        spec: CronJobSpec {
            schedule: spec.transform.schedule.clone(),
            time_zone: (!spec.transform.time_zone.is_empty())
                .then(|| spec.transform.time_zone.clone()),
            concurrency_policy: Some("Forbid".to_owned()),
            suspend: Some(spec.suspend || spec.transform.suspend),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            starting_deadline_seconds: Some(3_600),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(pipeline, "transform")),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    // Bounds the run, retries included: under `Forbid` a hung Job would skip
                    // every later schedule.
                    active_deadline_seconds: Some(i64::from(
                        spec.transform.active_deadline_seconds,
                    )),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels(pipeline, "transform")),
                            annotations: Some(BTreeMap::from([(
                                CONFIG_HASH_ANNOTATION.to_owned(),
                                config_hash.to_owned(),
                            )])),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(PodSpec {
                            containers: vec![container(
                                pipeline,
                                "transform",
                                vec!["transform".to_owned()],
                                resources,
                                false,
                            )],
                            restart_policy: Some("Never".to_owned()),
                            security_context: Some(pod_security()),
                            automount_service_account_token: Some(false),
                            enable_service_links: Some(false),
                            ..PodSpec::default()
                        }),
                    },
                    ..JobSpec::default()
                }),
            },
        },
        ..CronJob::default()
    }
}

/// A one-off transform Job for the manual-run `token`, from the CronJob's template. Its name
/// is a function of the token, so asking twice with one token makes one Job.
pub fn manual_transform_job(
    pipeline: &FintechPipeline,
    token: &str,
    config_hash: &str,
) -> k8s_openapi::api::batch::v1::Job {
    let template = transform_cron_job(pipeline, config_hash).spec.job_template;
    let hash = fnv1a(token.bytes()) as u32;
    let mut meta = metadata(pipeline, &format!("transform-manual-{hash:08x}"));
    // Labelled like the scheduled Jobs, so the status finds the last run among both.
    meta.labels = Some(labels(pipeline, "transform"));
    meta.annotations = Some(BTreeMap::from([(
        RUN_TRANSFORM_ANNOTATION.to_owned(),
        token.to_owned(),
    )]));
    // The CronJob's history limits clean up the Jobs it starts; a manual Job is removed a
    // day after it finishes, and its result stays in the status.
    let spec = template.spec.map(|spec| JobSpec {
        ttl_seconds_after_finished: Some(MANUAL_JOB_TTL_SECONDS),
        ..spec
    });
    k8s_openapi::api::batch::v1::Job {
        metadata: meta,
        spec,
        ..k8s_openapi::api::batch::v1::Job::default()
    }
}

/// How long a finished manual transform Job (and its pod and logs) stays: a day.
pub const MANUAL_JOB_TTL_SECONDS: i32 = 86_400;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FintechPipelineSpec;

    fn pipeline(spec: &str) -> FintechPipeline {
        let spec: FintechPipelineSpec = serde_json::from_str(spec).unwrap();
        let mut pipeline = FintechPipeline::new("demo", spec);
        pipeline.metadata.namespace = Some("analytics".to_owned());
        pipeline.metadata.uid = Some("1234".to_owned());
        pipeline
    }

    #[test]
    fn every_child_is_owned_labelled_and_named_after_the_pipeline() {
        let p = pipeline("{}");
        let hash = config_hash(&config_map(&p), &[]);
        let metas = [
            config_map(&p).metadata,
            deployment(&p, Worker::Streamer, &hash).metadata,
            metrics_service(&p, Worker::Loader).metadata,
            transform_cron_job(&p, &hash).metadata,
        ];
        for meta in metas {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("FintechPipeline", "1234", Some(true))
            );
            assert_eq!(meta.namespace.as_deref(), Some("analytics"));
            assert!(meta.name.unwrap().starts_with("demo-"));
            assert_eq!(meta.labels.unwrap()["app.kubernetes.io/instance"], "demo");
        }
    }

    #[test]
    fn workers_are_locked_down_probed_and_configured_from_the_config_map_and_secrets() {
        let p = pipeline("{}");
        let deployment = deployment(&p, Worker::Streamer, "abc");
        let pod = deployment.spec.template;
        assert_eq!(
            pod.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION],
            "abc"
        );
        let pod = pod.spec.unwrap();
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            pod.security_context.unwrap().seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(
            container
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        assert_eq!(container.args.as_ref().unwrap()[0], "stream");
        let env = container.env.as_ref().unwrap();
        let database = env
            .iter()
            .find(|e| e.name == "FINTECH_DATABASE_URL")
            .unwrap();
        let secret = database
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("fintech-postgres", "url")
        );
        assert!(
            env.iter().any(|e| e.name == "AWS_ALLOW_HTTP"),
            "the default MinIO endpoint is plain HTTP"
        );
        assert_eq!(
            container.image.as_deref(),
            Some(concat!("fintech/workers:", env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn suspend_scales_to_zero_and_suspends_the_schedule() {
        let running = pipeline(r#"{"streamer": {"replicas": 3}}"#);
        assert_eq!(desired_replicas(&running, Worker::Streamer), 3);
        assert_eq!(transform_cron_job(&running, "h").spec.suspend, Some(false));
        let suspended = pipeline(r#"{"suspend": true, "streamer": {"replicas": 3}}"#);
        for worker in Worker::ALL {
            assert_eq!(desired_replicas(&suspended, worker), 0);
        }
        let cron = transform_cron_job(&suspended, "h").spec;
        assert_eq!(cron.suspend, Some(true));
        assert_eq!(cron.concurrency_policy.as_deref(), Some("Forbid"));
        let no_producer = pipeline(r#"{"producer": {"enabled": false}}"#);
        assert_eq!(desired_replicas(&no_producer, Worker::Producer), 0);
    }

    #[test]
    fn a_manual_run_job_is_named_by_its_token() {
        let p = pipeline("{}");
        let a = manual_transform_job(&p, "2026-11-24T10:00", "h");
        assert_eq!(
            a.metadata.name,
            manual_transform_job(&p, "2026-11-24T10:00", "h")
                .metadata
                .name
        );
        assert_ne!(
            a.metadata.name,
            manual_transform_job(&p, "another", "h").metadata.name
        );
        assert_eq!(
            a.spec.unwrap().template.spec.unwrap().containers[0]
                .args
                .as_ref()
                .unwrap()[0],
            "transform"
        );
    }

    #[test]
    fn a_finished_manual_run_job_is_removed_after_a_day_and_no_job_mounts_a_token() {
        let p = pipeline("{}");
        let manual = manual_transform_job(&p, "token", "h").spec.unwrap();
        assert_eq!(manual.ttl_seconds_after_finished, Some(86_400));
        let scheduled = transform_cron_job(&p, "h").spec.job_template.spec.unwrap();
        // Scheduled Jobs are kept by the CronJob's history limits instead.
        assert_eq!(scheduled.ttl_seconds_after_finished, None);
        for job in [manual, scheduled] {
            assert_eq!(
                job.template.spec.unwrap().automount_service_account_token,
                Some(false)
            );
        }
    }

    #[test]
    fn transform_jobs_carry_the_active_deadline_of_the_spec_or_the_default() {
        let deadline = |p: &FintechPipeline| {
            let template = transform_cron_job(p, "h").spec.job_template.spec.unwrap();
            let manual = manual_transform_job(p, "token", "h").spec.unwrap();
            assert_eq!(
                manual.active_deadline_seconds,
                template.active_deadline_seconds
            );
            template.active_deadline_seconds
        };
        assert_eq!(deadline(&pipeline("{}")), Some(3_600));
        assert_eq!(
            deadline(&pipeline(
                r#"{"transform": {"activeDeadlineSeconds": 900}}"#
            )),
            Some(900)
        );
        let cron = transform_cron_job(&pipeline("{}"), "h").spec;
        assert_eq!(cron.concurrency_policy.as_deref(), Some("Forbid"));
    }

    #[test]
    fn a_configuration_or_secret_change_changes_the_hash() {
        let versions = ["100".to_owned(), "200".to_owned()];
        let a = config_hash(&config_map(&pipeline("{}")), &versions);
        let b = config_hash(
            &config_map(&pipeline(r#"{"loader": {"intervalSeconds": 5}}"#)),
            &versions,
        );
        assert_ne!(a, b);
        assert_eq!(a, config_hash(&config_map(&pipeline("{}")), &versions));
        let rotated = ["100".to_owned(), "201".to_owned()];
        assert_ne!(a, config_hash(&config_map(&pipeline("{}")), &rotated));
    }
}
