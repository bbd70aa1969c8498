//! The `FintechPipeline` custom resource (`fintech.io/v1alpha1`, short name `fp`).
//!
//! The spec describes one pipeline: where its Kafka, object store and warehouse are, and how
//! the producer, streamer, loader and transform schedule run. Every field has a default that
//! fits the Helm chart's development infrastructure, so a minimal resource is almost empty.
//! Ranges, enums and formats are in the schema, so the API server refuses what it can check;
//! what only the operator can check (a missing Secret) is reported in the status.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A payment-analytics pipeline: producer, streamer and loader Deployments and a CronJob for
/// the transforms, reconciled by fintech-operator.
// Several `printcolumn(...)` entries repeat `type_`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fintech.io",
    version = "v1alpha1",
    kind = "FintechPipeline",
    namespaced,
    shortname = "fp",
    status = "FintechPipelineStatus",
    derive = "PartialEq",
    doc = "A payment-analytics pipeline: Kafka to bronze Parquet to PostgreSQL silver and gold, reconciled by fintech-operator.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Degraded, Suspended or Failed"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.readyComponents",
        description = "Components ready out of those desired"
    ),
    printcolumn(
        name = "Data",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"DataFlowing\")].reason",
        description = "Whether rows flow: Flowing, Idle, or what stopped them (the DataFlowing condition's reason)"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.data.consumerLag",
        description = "Messages in Kafka not yet in bronze"
    ),
    printcolumn(
        name = "Silver/min",
        type_ = "integer",
        json_path = ".status.data.silverRowsPerMinute",
        description = "Rows per minute into silver over the last five minutes"
    ),
    printcolumn(
        name = "Last load",
        type_ = "date",
        json_path = ".status.data.lastLoadTime",
        description = "When a load into silver last succeeded"
    ),
    printcolumn(
        name = "Gold",
        type_ = "date",
        json_path = ".status.transform.lastSuccessfulTime",
        description = "When a transform run last succeeded: how fresh gold is"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FintechPipelineSpec {
    /// The workers' container image.
    #[serde(default)]
    pub image: ImageSpec,
    /// The Kafka cluster and topic.
    #[serde(default)]
    pub kafka: KafkaSpec,
    /// The object store that holds bronze.
    #[serde(default)]
    pub object_store: ObjectStoreSpec,
    /// The PostgreSQL warehouse.
    #[serde(default)]
    pub warehouse: WarehouseSpec,
    /// The event producer.
    #[serde(default)]
    pub producer: ProducerSpec,
    /// The Kafka-to-bronze streamer.
    #[serde(default)]
    pub streamer: StreamerSpec,
    /// The bronze-to-silver loader.
    #[serde(default)]
    pub loader: LoaderSpec,
    /// The scheduled transforms (gold).
    #[serde(default)]
    pub transform: TransformSpec,
    /// Scale every component to zero and suspend the transform schedule. Data and offsets are
    /// kept; setting it back to false resumes where the pipeline stopped.
    #[serde(default)]
    pub suspend: bool,
}

/// A container image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository, without tag.
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1))]
    pub repository: String,
    /// Image tag; the operator's own version when empty.
    #[serde(default)]
    pub tag: String,
    /// When the kubelet pulls the image.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

/// When the kubelet pulls an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Every time a pod starts.
    Always,
    /// Only when the node does not have it.
    #[default]
    IfNotPresent,
    /// Never; the image must be on the node.
    Never,
}

/// Where Kafka is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.partitions >= oldSelf.partitions").message(
    "kafka.partitions cannot decrease: Kafka cannot take partitions away from a topic"
))]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Comma-separated bootstrap servers.
    #[serde(default = "default_bootstrap_servers")]
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// The topic payment events flow through.
    #[serde(default = "default_topic")]
    #[schemars(length(min = 1, max = 249), pattern(r"^[a-zA-Z0-9._-]+$"))]
    pub topic: String,
    /// Partitions of the topic when the producer creates it; streamer replicas beyond this
    /// number would stay idle.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1000))]
    pub partitions: i32,
}

/// Where bronze is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// Root of the lake, `s3://bucket/prefix`.
    #[serde(default = "default_lake_url")]
    #[schemars(pattern(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"))]
    pub bucket_url: String,
    /// S3 endpoint for S3-compatible servers such as MinIO; empty for AWS.
    #[serde(default = "default_s3_endpoint")]
    pub endpoint: String,
    /// S3 region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Secret in the pipeline's namespace with keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    #[serde(default = "default_s3_secret")]
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
}

/// Where the warehouse is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseSpec {
    /// Secret in the pipeline's namespace holding the PostgreSQL URL (never a password in
    /// the spec).
    #[serde(default = "default_warehouse_secret")]
    #[schemars(length(min = 1))]
    pub url_secret: String,
    /// Key of the URL in that Secret.
    #[serde(default = "default_url_key")]
    #[schemars(length(min = 1))]
    pub url_key: String,
}

/// The producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.syntheticShare >= 1.0 || self.kaggleCsv != ''").message(
    "producer.syntheticShare below 1 replays the Kaggle export: set producer.kaggleCsv to it (s3://bucket/key in the pipeline's object store)"
))]
#[serde(rename_all = "camelCase")]
pub struct ProducerSpec {
    /// Run a producer (turn off when real payments arrive from elsewhere).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Events per second.
    #[serde(default = "default_rate")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub rate: i32,
    /// Share of payments that are synthetic Indian payments rather than Kaggle replay, 0-1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub synthetic_share: f64,
    /// The Kaggle `fraudTrain.csv` export the rest of the payments replay, as
    /// `s3://bucket/key` in the pipeline's object store (same endpoint and credentials); the
    /// producer streams it, never loading it whole, and after its last row goes on with
    /// synthetic payments only. Required when syntheticShare is below 1.
    #[serde(default)]
    #[schemars(pattern(r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+)?$"))]
    pub kaggle_csv: String,
    /// Share of payments first emitted PENDING and settled 1-3 days later, 0-1.
    #[serde(default = "default_settlement_share")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub settlement_share: f64,
    /// Share of messages made undecodable on purpose (testing the dead-letter queue), 0-1.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub malformed_rate: f64,
    /// Share of messages sent twice on purpose (testing de-duplication), 0-1.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub duplicate_rate: f64,
    /// CPU and memory of the producer pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The streamer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamerSpec {
    /// Replicas in the consumer group; more than the topic's partitions would idle.
    #[serde(default = "default_one_replica")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Seconds after its first message that a batch closes.
    #[serde(default = "default_batch_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub batch_interval_seconds: i32,
    /// Messages at which a batch closes earlier.
    #[serde(default = "default_batch_rows")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_batch_rows: i32,
    /// CPU and memory of each streamer pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The loader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoaderSpec {
    /// Seconds between two load runs.
    #[serde(default = "default_load_interval")]
    #[schemars(range(min = 1, max = 86_400))]
    pub interval_seconds: i32,
    /// Folder of the bank's daily settlement files (`settlements-YYYY-MM-DD.csv`), as
    /// `s3://bucket/prefix` in the pipeline's object store (same endpoint and credentials),
    /// for example `s3://fintech/batch_files`. After each successful run the loader loads
    /// the new ones into `raw.bank_settlements`, each exactly once, and the transforms
    /// reconcile them with the payments in `marts.bank_reconciliation`. Empty: none.
    #[serde(default)]
    #[schemars(pattern(r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)?$"))]
    pub bank_files_url: String,
    /// CPU and memory of the loader pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The transform schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformSpec {
    /// Cron schedule (five fields, or a macro such as `@daily`).
    #[serde(default = "default_schedule")]
    #[x_kube(validation = Rule::new("!self.contains('TZ')").message(
        "transform.schedule cannot carry a time zone; set transform.timeZone instead"
    ))]
    #[schemars(pattern(
        r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
    ))]
    pub schedule: String,
    /// IANA time zone of the schedule; UTC when empty.
    #[serde(default)]
    pub time_zone: String,
    /// Seconds before the latest change already merged at which an incremental run starts
    /// re-reading. Loads stamp their rows in the order they commit, so this only has to
    /// cover the warehouse's clock stepping back.
    #[serde(default = "default_lookback")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub lookback_seconds: i32,
    /// Suspend the schedule (manual runs still work).
    #[serde(default)]
    pub suspend: bool,
    /// Seconds a transform Job (scheduled or manual) may run, retries included, before
    /// Kubernetes stops it and marks it failed (the Job's `activeDeadlineSeconds`). Under the
    /// `Forbid` concurrency policy a hung run would otherwise skip every later schedule.
    #[serde(default = "default_active_deadline")]
    #[schemars(range(min = 60, max = 86_400))]
    pub active_deadline_seconds: i32,
    /// CPU and memory of the transform Job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// What the operator observed, written through the status subresource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FintechPipelineStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Degraded, Suspended or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready components out of desired, e.g. `3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_components: Option<String>,
    /// Ready, DataFlowing, ProducerAvailable, StreamerAvailable, LoaderAvailable,
    /// TransformScheduled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Schedule and success times of the transforms: how fresh gold is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformStatus>,
    /// How data moves through Kafka, bronze and silver, read from the workers' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataStatus>,
}

/// How data moves through the layers: `status.data`, read by the operator from every worker
/// pod's `/status` at most every 30 seconds. Rates are over the last five minutes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataStatus {
    /// When the operator read the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<String>,
    /// Messages per minute Kafka acknowledged from the producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produced_per_minute: Option<i64>,
    /// Rows per minute written to bronze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bronze_rows_per_minute: Option<i64>,
    /// Rows per minute inserted into silver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silver_rows_per_minute: Option<i64>,
    /// Messages in Kafka not yet in bronze: the streamers' consumer lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_lag: Option<i64>,
    /// Bronze files the last load run found not yet loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_pending: Option<i64>,
    /// When a streamer last committed a batch to bronze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_time: Option<String>,
    /// When a load into silver last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_load_time: Option<String>,
    /// The last load run's health as `metadata.load_health` calls it: healthy,
    /// quarantined_files, silent_failure or explicit_failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_load_health: Option<String>,
}

/// Where a pipeline stands: `status.phase`, the `Phase` printer column and the Ready
/// condition's reason. [`crate::status::compute`] picks the first that applies in the order
/// Failed, Suspended, Running, Pending, Degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Keeps this doc out of the CRD: for an optional enum field kube would put it in place of
// the field's own description.
#[schemars(description = "")]
pub enum Phase {
    /// Some worker has fewer ready pods than it wants and no worker has a ready pod yet,
    /// e.g. right after creation or while images pull.
    Pending,
    /// Every worker has as many ready pods as it wants (wanting none counts).
    Running,
    /// Some pods are ready, but some worker has fewer ready pods than it wants.
    Degraded,
    /// `spec.suspend` is set (and no Secret is missing): every worker is scaled to zero and
    /// the transform schedule is suspended.
    Suspended,
    /// A Secret the spec names is missing or lacks a key; the pods cannot start until it
    /// exists. Takes precedence over every other phase.
    Failed,
}

impl Phase {
    /// The name written to `status.phase` and the Ready condition's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Degraded => "Degraded",
            Self::Suspended => "Suspended",
            Self::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a transform Job is doing: `status.transform.lastJobResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Keeps this doc out of the CRD: for an optional enum field kube would put it in place of
// the field's own description.
#[schemars(description = "")]
pub enum JobResult {
    /// Neither finished condition holds yet: the Job is pending, running or retrying.
    Running,
    /// The Job has the `Complete` or `SuccessCriteriaMet` condition.
    Succeeded,
    /// The Job has the `Failed` or `FailureTarget` condition (and no success condition).
    Failed,
}

impl JobResult {
    /// The name written to `status.transform.lastJobResult`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The transforms' last runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformStatus {
    /// When the CronJob last started a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When a transform Job (scheduled or manual) last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// The most recently started transform Job, scheduled or manual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// Running, Succeeded or Failed: how that Job is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_result: Option<JobResult>,
    /// The token of the last manual run requested with the `fintech.io/run-transform`
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_run_token: Option<String>,
    /// The Job that manual run created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_run_job: Option<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            tag: String::new(),
            pull_policy: PullPolicy::default(),
        }
    }
}

impl Default for KafkaSpec {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap_servers(),
            topic: default_topic(),
            partitions: default_partitions(),
        }
    }
}

impl Default for ObjectStoreSpec {
    fn default() -> Self {
        Self {
            bucket_url: default_lake_url(),
            endpoint: default_s3_endpoint(),
            region: default_region(),
            credentials_secret: default_s3_secret(),
        }
    }
}

impl Default for WarehouseSpec {
    fn default() -> Self {
        Self {
            url_secret: default_warehouse_secret(),
            url_key: default_url_key(),
        }
    }
}

impl Default for ProducerSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            rate: default_rate(),
            synthetic_share: 1.0,
            kaggle_csv: String::new(),
            settlement_share: default_settlement_share(),
            malformed_rate: 0.0,
            duplicate_rate: 0.0,
            resources: None,
        }
    }
}

impl Default for StreamerSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            batch_interval_seconds: default_batch_interval(),
            max_batch_rows: default_batch_rows(),
            resources: None,
        }
    }
}

impl Default for LoaderSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_load_interval(),
            bank_files_url: String::new(),
            resources: None,
        }
    }
}

impl Default for TransformSpec {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            time_zone: String::new(),
            lookback_seconds: default_lookback(),
            suspend: false,
            active_deadline_seconds: default_active_deadline(),
            resources: None,
        }
    }
}

fn default_repository() -> String {
    "fintech/workers".to_owned()
}
fn default_bootstrap_servers() -> String {
    "fintech-kafka:9092".to_owned()
}
fn default_topic() -> String {
    "transactions".to_owned()
}
fn default_partitions() -> i32 {
    3
}
fn default_lake_url() -> String {
    "s3://fintech/lake".to_owned()
}
fn default_s3_endpoint() -> String {
    "http://fintech-minio:9000".to_owned()
}
fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_s3_secret() -> String {
    "fintech-minio".to_owned()
}
fn default_warehouse_secret() -> String {
    "fintech-postgres".to_owned()
}
fn default_url_key() -> String {
    "url".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_rate() -> i32 {
    50
}
fn default_one() -> f64 {
    1.0
}
fn default_settlement_share() -> f64 {
    0.2
}
fn default_one_replica() -> i32 {
    1
}
fn default_batch_interval() -> i32 {
    30
}
fn default_batch_rows() -> i32 {
    100_000
}
fn default_load_interval() -> i32 {
    60
}
fn default_schedule() -> String {
    "0 2 * * *".to_owned()
}
/// Ten minutes, the workers' own default.
fn default_lookback() -> i32 {
    600
}
/// An hour: a full refresh of a million silver rows with every data test takes about 15 s
/// (docs/benchmarks.md), and a run waiting for another one's lock gives up after the
/// workers' 10-minute `lock_timeout`, so only a hung run gets near it.
fn default_active_deadline() -> i32 {
    3_600
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn an_empty_spec_gets_the_defaults() {
        let spec: FintechPipelineSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.kafka.topic, "transactions");
        assert_eq!(spec.streamer.replicas, 1);
        assert_eq!(spec.transform.schedule, "0 2 * * *");
        assert!(spec.producer.enabled && !spec.suspend);
    }

    #[test]
    fn phases_and_job_results_keep_their_wire_text() {
        let phases = [
            Phase::Pending,
            Phase::Running,
            Phase::Degraded,
            Phase::Suspended,
            Phase::Failed,
        ];
        assert_eq!(
            serde_json::to_string(&phases).unwrap(),
            r#"["Pending","Running","Degraded","Suspended","Failed"]"#
        );
        let results = [JobResult::Running, JobResult::Succeeded, JobResult::Failed];
        assert_eq!(
            serde_json::to_string(&results).unwrap(),
            r#"["Running","Succeeded","Failed"]"#
        );
        for phase in phases {
            assert_eq!(phase.to_string(), phase.as_str());
        }
        for result in results {
            assert_eq!(result.to_string(), result.as_str());
        }
        assert_eq!(format!("[{:>9}]", Phase::Running), "[  Running]");
        assert_eq!(format!("[{:<8}]", JobResult::Failed), "[Failed  ]");
        // A status written before the enums reads back unchanged.
        let written = r#"{"phase":"Degraded","transform":{"lastJobResult":"Succeeded"}}"#;
        let status: FintechPipelineStatus = serde_json::from_str(written).unwrap();
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert_eq!(
            status.transform.as_ref().and_then(|t| t.last_job_result),
            Some(JobResult::Succeeded)
        );
        assert_eq!(serde_json::to_string(&status).unwrap(), written);
    }

    #[test]
    fn the_generated_crd_matches_the_checked_in_file() {
        let generated = crate::crd_yaml();
        let checked_in = include_str!("../../crds/fintechpipelines.fintech.io.yaml");
        assert!(
            generated == checked_in,
            "crds/fintechpipelines.fintech.io.yaml is stale; regenerate it with \
             `cargo run -p fintech-operator -- crd > crds/fintechpipelines.fintech.io.yaml`"
        );
        let crd = FintechPipeline::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["fp".to_owned()]));
    }
}
