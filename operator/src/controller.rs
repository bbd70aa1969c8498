//! The controller: reconciles each `FintechPipeline` into its children with server-side
//! apply, and writes what it observed to the status subresource.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::children::{self, FIELD_MANAGER, METRICS_PORT, Worker};
use crate::crd::{FintechPipeline, JobResult, Phase};
use crate::data::{self, Judgement, Readings};
use crate::metrics::Metrics;
use crate::sharing::{self, Claim, Refusal};
use crate::status::{self, Availability, Observed};

/// How often a pipeline is reconciled when nothing changes, to refresh its status.
const RESYNC: Duration = Duration::from_secs(60);

/// How soon a pipeline whose Secrets are missing is reconciled again.
const WAITING_FOR_SECRETS: Duration = Duration::from_secs(5);

/// How often, at most, the workers' `/status` is read. Between reads the last judgement
/// stands; without this, the status patch of each read would start the next reconcile, and
/// with it the next read, at once.
const DATA_READ_EVERY: i64 = 30;

/// How long one pod's `/status` may take to answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of a reconcile, named for the failed action.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resource has no namespace (it is namespaced, so this means a broken object).
    #[error("the FintechPipeline has no namespace")]
    MissingNamespace,
    /// Applying a child failed.
    #[error("applying {kind} {name} failed: {source}")]
    ApplyChild {
        /// The child's kind.
        kind: &'static str,
        /// The child's name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Reading a Secret the spec names failed (other than it being absent).
    #[error("reading a Secret failed: {0}")]
    ReadSecret(#[source] kube::Error),
    /// Listing the transform Jobs failed.
    #[error("listing the transform Jobs failed: {0}")]
    ReadJobs(#[source] kube::Error),
    /// Listing the other pipelines failed.
    #[error("listing the pipelines that could share a warehouse or lake failed: {0}")]
    ReadPipelines(#[source] kube::Error),
    /// Writing the status failed.
    #[error("writing the status failed: {0}")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// The reason of the Warning Event and the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingNamespace => "InvalidResource",
            Error::ApplyChild { .. } => "ApplyFailed",
            Error::ReadSecret(_) => "SecretUnreadable",
            Error::ReadJobs(_) => "JobsUnreadable",
            Error::ReadPipelines(_) => "PipelinesUnreadable",
            Error::PatchStatus(_) => "StatusUpdateFailed",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Kubernetes Events about pipelines.
    pub recorder: Recorder,
    /// Reconcile counters and durations.
    pub metrics: Metrics,
    /// Consecutive failed reconciles per pipeline (namespace/name), for the back-off.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The namespace watched, or `None` for every namespace: where other pipelines that
    /// could share a warehouse or lake are looked for.
    watch_namespace: Option<String>,
}

impl Context {
    /// A context whose Events name this operator (and its pod, when `POD_NAME` is set).
    pub fn new(client: Client, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Default::default(),
            watch_namespace: None,
        }
    }
}

/// An API for `K` in `namespace`, or across the cluster when it is `None`.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` resolves, watching pipelines and their children in
/// `namespace`, or in every namespace when it is `None`.
pub async fn run(
    ctx: Context,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ctx = Context {
        watch_namespace: namespace.clone(),
        ..ctx
    };
    let namespace = namespace.as_deref();
    // Only the operator's own children are cached, not every Deployment of the cluster.
    let children =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    Controller::new(
        scoped::<FintechPipeline>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(scoped::<Deployment>(&client, namespace), children.clone())
    .owns(scoped::<CronJob>(&client, namespace), children.clone())
    .owns(scoped::<Job>(&client, namespace), children.clone())
    .owns(scoped::<ConfigMap>(&client, namespace), children.clone())
    .owns(scoped::<Service>(&client, namespace), children)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, Arc::new(ctx))
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(pipeline = %object.name, "reconciled"),
            Err(error) => tracing::warn!(%error, "reconcile failed"),
        }
    })
    .await;
}

/// Applies every child, then writes the status; failures become Warning Events on the
/// pipeline as well as errors.
pub async fn reconcile(pipeline: Arc<FintechPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = apply_and_report(&pipeline, &ctx).await;
    if result.is_ok() {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&key(&pipeline));
    }
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err().map(Error::reason));
    if let Err(error) = &result {
        publish(
            &ctx,
            &pipeline,
            EventType::Warning,
            error.reason(),
            "Reconcile",
            error.to_string(),
        )
        .await;
    }
    result
}

/// Publishes an Event about `pipeline`; a failure to publish is logged, never fatal.
async fn publish(
    ctx: &Context,
    pipeline: &FintechPipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx
        .recorder
        .publish(&event, &pipeline.object_ref(&()))
        .await
    {
        tracing::warn!(%error, reason, "publishing an event failed");
    }
}

async fn apply_and_report(pipeline: &FintechPipeline, ctx: &Context) -> Result<Action, Error> {
    let namespace = pipeline.namespace().ok_or(Error::MissingNamespace)?;
    let previous = pipeline.status.clone().unwrap_or_default();
    let secrets = read_secrets(&ctx.client, &namespace, pipeline).await?;
    let refusal = refusal(ctx, pipeline, secrets.warehouse_url.as_deref()).await?;
    // A refused pipeline keeps its children, scaled to zero as if suspended.
    let suspended;
    let pipeline_as_applied = if refusal.is_some() {
        let mut copy = pipeline.clone();
        copy.spec.suspend = true;
        suspended = copy;
        &suspended
    } else {
        pipeline
    };
    let config = children::config_map(pipeline_as_applied);
    let hash = children::config_hash(&config, &secrets.versions);
    apply(ctx, pipeline, &namespace, "ConfigMap", &config).await?;
    let mut availability = [Availability::default(); 3];
    for (slot, worker) in availability.iter_mut().zip(Worker::ALL) {
        let deployment = children::deployment(pipeline_as_applied, worker, &hash);
        let applied = apply(ctx, pipeline, &namespace, "Deployment", &deployment).await?;
        *slot = Availability {
            ready: applied
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            desired: applied.spec.replicas.unwrap_or(0),
        };
        let service = children::metrics_service(pipeline, worker);
        apply(ctx, pipeline, &namespace, "Service", &service).await?;
    }
    let cron_job = children::transform_cron_job(pipeline_as_applied, &hash);
    let cron_job = apply(ctx, pipeline, &namespace, "CronJob", &cron_job).await?;

    let manual = manual_run(&ctx.client, &namespace, pipeline, &hash).await?;
    if let Some((token, job)) = &manual
        && previous
            .transform
            .as_ref()
            .and_then(|t| t.last_manual_run_token.as_deref())
            != Some(token.as_str())
    {
        let note = format!("started Job {job} for token {token}");
        publish(
            ctx,
            pipeline,
            EventType::Normal,
            "ManualTransformRun",
            "RunTransform",
            note,
        )
        .await;
    }
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().labels(&children::selector(pipeline, "transform")))
        .await
        .map_err(Error::ReadJobs)?;
    let previous_success = previous
        .transform
        .as_ref()
        .and_then(|t| t.last_successful_time.as_deref());
    let mut transform = status::transform_runs(
        &cron_job.status.unwrap_or_default(),
        &jobs.items,
        previous_success,
    );
    (
        transform.last_manual_run_token,
        transform.last_manual_run_job,
    ) = manual.unzip();
    ctx.metrics.transform_result(
        &namespace,
        &pipeline.name_any(),
        transform.last_job_result == Some(JobResult::Failed),
    );
    let previous_job = previous
        .transform
        .as_ref()
        .and_then(|t| t.last_job.as_ref());
    if transform.last_job_result == Some(JobResult::Failed)
        && (previous_job != transform.last_job.as_ref()
            || previous.transform.as_ref().and_then(|t| t.last_job_result)
                != Some(JobResult::Failed))
    {
        let job = transform.last_job.clone().unwrap_or_default();
        let note = format!("transform Job {job} failed; `kubectl logs job/{job}` shows why");
        publish(
            ctx,
            pipeline,
            EventType::Warning,
            "TransformFailed",
            "RunTransform",
            note,
        )
        .await;
    }
    let now = Timestamp::now();
    let data = if let Some(refused) = &refusal {
        Some(Judgement {
            status: status::ConditionStatus::False,
            reason: refused.reason,
            message: refused.message.clone(),
            data: Default::default(),
        })
    } else if data_due(pipeline, now) {
        let wanted = availability.map(|a| a.desired > 0);
        Some(
            match read_workers(&ctx.client, &namespace, pipeline).await {
                Ok(readings) => {
                    data::judge(&pipeline.name_any(), &pipeline.spec, wanted, &readings, now)
                }
                Err(error) => {
                    Judgement::unreadable(format!("listing the worker pods failed: {error}"), now)
                }
            },
        )
    } else {
        None
    };
    let [producer, streamer, loader] = availability;
    let observed = Observed {
        producer,
        streamer,
        loader,
        cron_job_present: true,
        missing_secrets: secrets.missing,
        refusal,
        transform,
        data,
    };
    // A pipeline waiting for its Secrets is checked again soon; Secrets are not watched.
    let requeue = if observed.missing_secrets.is_empty() {
        RESYNC
    } else {
        WAITING_FOR_SECRETS
    };
    let status = status::compute(pipeline, &observed, now);
    let patch = serde_json::json!({
        "apiVersion": FintechPipeline::api_version(&()),
        "kind": FintechPipeline::kind(&()),
        "status": status,
    });
    Api::<FintechPipeline>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &pipeline.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(Error::PatchStatus)?;
    if status.phase != previous.phase {
        let name = |phase: Option<Phase>| phase.map_or("none", Phase::as_str);
        let note = format!("phase {} -> {}", name(previous.phase), name(status.phase));
        publish(
            ctx,
            pipeline,
            EventType::Normal,
            "PhaseChanged",
            "Reconcile",
            note,
        )
        .await;
    }
    Ok(Action::requeue(requeue))
}

/// Whether the workers' `/status` is due to be read: the last read is older than
/// [`DATA_READ_EVERY`], or the spec changed since.
fn data_due(pipeline: &FintechPipeline, now: Timestamp) -> bool {
    let Some(status) = &pipeline.status else {
        return true;
    };
    let last_read = status
        .data
        .as_ref()
        .and_then(|d| d.observed_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    status.observed_generation != pipeline.metadata.generation
        || last_read.is_none_or(|t| now.as_second() - t.as_second() >= DATA_READ_EVERY)
}

/// Reads the `/status` of every running pod of each worker, through the pod's address (a
/// Service would pick one pod, and each streamer knows only its own partitions).
async fn read_workers(
    client: &Client,
    namespace: &str,
    pipeline: &FintechPipeline,
) -> Result<Readings, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut readings = Readings::default();
    for (reading, worker) in readings.iter_mut().zip(Worker::ALL) {
        let listed = pods
            .list(&ListParams::default().labels(&children::selector(pipeline, worker.as_str())))
            .await?;
        let addresses: Vec<String> = listed
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| pod.status.as_ref())
            .filter(|status| status.phase.as_deref() == Some("Running"))
            .filter_map(|status| status.pod_ip.as_deref())
            .map(|ip| match ip.contains(':') {
                true => format!("[{ip}]:{METRICS_PORT}"),
                false => format!("{ip}:{METRICS_PORT}"),
            })
            .collect();
        reading.pods = addresses.len();
        let read = futures::future::join_all(
            addresses
                .iter()
                .map(|address| fintech_status_server::report::fetch(address, STATUS_TIMEOUT)),
        )
        .await;
        for result in read {
            match result {
                Ok(status) => reading.statuses.push(status),
                Err(error) => reading.errors.push(error.to_string()),
            }
        }
    }
    Ok(readings)
}

/// Starts the Job of a manual run when the annotation carries a token; returns the token
/// and the Job's name. The Job's name follows from the token, so a token runs once.
async fn manual_run(
    client: &Client,
    namespace: &str,
    pipeline: &FintechPipeline,
    hash: &str,
) -> Result<Option<(String, String)>, Error> {
    let Some(token) = pipeline
        .annotations()
        .get(children::RUN_TRANSFORM_ANNOTATION)
    else {
        return Ok(None);
    };
    // A token already reported has run; its Job may since have been cleaned up.
    let reported = pipeline.status.as_ref().and_then(|s| s.transform.as_ref());
    if let Some(reported) = reported
        && reported.last_manual_run_token.as_deref() == Some(token.as_str())
    {
        return Ok(Some((
            token.clone(),
            reported.last_manual_run_job.clone().unwrap_or_default(),
        )));
    }
    let job = children::manual_transform_job(pipeline, token, hash);
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    match jobs.create(&kube::api::PostParams::default(), &job).await {
        Ok(_) => {
            tracing::info!(pipeline = %pipeline.name_any(), job = %name, "started a manual transform run")
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(source) => {
            return Err(Error::ApplyChild {
                kind: "Job",
                name,
                source,
            });
        }
    }
    Ok(Some((token.clone(), name)))
}

/// What the controller read of the Secrets the spec names.
struct SecretsSeen {
    /// Those missing or lacking a key, described for the user.
    missing: Vec<String>,
    /// The `resourceVersion` of each one present, in the spec's order.
    versions: Vec<String>,
    /// The warehouse URL, when its Secret holds it; compared with other pipelines', never
    /// logged or written anywhere.
    warehouse_url: Option<String>,
}

/// The value of `key` in `secret`, from `data` or `stringData`.
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .or_else(|| secret.string_data.as_ref()?.get(key).cloned())
}

/// Why `pipeline` must give way to an older pipeline with the same warehouse database or
/// lake, if it must. Other pipelines are looked for where the operator watches; their
/// warehouse Secrets are read for the comparison only.
async fn refusal(
    ctx: &Context,
    pipeline: &FintechPipeline,
    warehouse_url: Option<&str>,
) -> Result<Option<Refusal>, Error> {
    let others = scoped::<FintechPipeline>(&ctx.client, ctx.watch_namespace.as_deref())
        .list(&ListParams::default())
        .await
        .map_err(Error::ReadPipelines)?;
    let mine = Claim::of(pipeline, warehouse_url);
    let mut claims = Vec::new();
    for other in &others.items {
        if other.metadata.uid == pipeline.metadata.uid {
            continue;
        }
        let Some(namespace) = other.namespace() else {
            continue;
        };
        let warehouse = &other.spec.warehouse;
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&warehouse.url_secret)
            .await
            .map_err(Error::ReadSecret)?;
        let url = secret.and_then(|s| secret_value(&s, &warehouse.url_key));
        claims.push(Claim::of(other, url.as_deref()));
    }
    Ok(sharing::refusal(&mine, &claims))
}

/// Reads the Secrets the spec names. Secrets are not watched (that would need list and
/// watch on every Secret of the namespace), so a rotation is seen at the next resync.
async fn read_secrets(
    client: &Client,
    namespace: &str,
    pipeline: &FintechPipeline,
) -> Result<SecretsSeen, Error> {
    let spec = &pipeline.spec;
    let wanted = [
        (
            spec.object_store.credentials_secret.as_str(),
            vec!["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        ),
        (
            spec.warehouse.url_secret.as_str(),
            vec![spec.warehouse.url_key.as_str()],
        ),
    ];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut missing = Vec::new();
    let mut versions = Vec::new();
    let mut warehouse_url = None;
    for (name, keys) in wanted {
        let secret = secrets.get_opt(name).await.map_err(Error::ReadSecret)?;
        if let Some(version) = secret.as_ref().and_then(|s| s.resource_version()) {
            versions.push(version);
        }
        let present = |key: &str| {
            secret
                .as_ref()
                .is_some_and(|s| secret_value(s, key).is_some())
        };
        if !keys.iter().all(|key| present(key)) {
            missing.push(format!("Secret {name} with key(s) {}", keys.join(", ")));
        }
        if name == spec.warehouse.url_secret {
            warehouse_url = secret
                .as_ref()
                .and_then(|s| secret_value(s, &spec.warehouse.url_key));
        }
    }
    Ok(SecretsSeen {
        missing,
        versions,
        warehouse_url,
    })
}

/// The pause before retrying a pipeline that failed `failures` reconciles in a row: 5 s,
/// doubling up to 5 minutes, so a broken pipeline does not hammer the API server.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(5 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(300))
}

fn key(pipeline: &FintechPipeline) -> String {
    format!(
        "{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

/// Retries a failed reconcile after a pause that grows with each failure in a row.
pub fn error_policy(pipeline: Arc<FintechPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key(&pipeline)).or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(failures);
    tracing::warn!(pipeline = %pipeline.name_any(), %error, failures, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Server-side applies `object` with the operator's field manager and returns what the API
/// server stored. A child that had to be created or changed (a first apply, a spec change, a
/// hand edit undone) gets a Normal Event on the pipeline.
async fn apply<K>(
    ctx: &Context,
    pipeline: &FintechPipeline,
    namespace: &str,
    kind: &'static str,
    object: &K,
) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    let failed = |source| Error::ApplyChild {
        kind,
        name: name.clone(),
        source,
    };
    // An apply that changes nothing keeps the resourceVersion, which tells a change apart.
    let before = api.get_opt(&name).await.map_err(failed)?;
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(failed)?;
    let change = match &before {
        None => Some("Created"),
        Some(before) if before.resource_version() != applied.resource_version() => Some("Updated"),
        Some(_) => None,
    };
    if let Some(reason) = change {
        let note = format!("{} {kind} {name}", reason.to_lowercase());
        tracing::info!(pipeline = %pipeline.name_any(), kind, name, "{note}");
        publish(ctx, pipeline, EventType::Normal, reason, "Apply", note).await;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use prometheus_client::registry::Registry;
    use tower_test::mock::{self, Handle};

    /// A pipeline in namespace `ns` as the API server would hand it over.
    fn pipeline() -> Arc<FintechPipeline> {
        let mut pipeline = FintechPipeline::new("demo", serde_json::from_str("{}").unwrap());
        pipeline.metadata.namespace = Some("ns".to_owned());
        pipeline.metadata.uid = Some("uid-1".to_owned());
        pipeline.metadata.generation = Some(1);
        Arc::new(pipeline)
    }

    /// A context whose client talks to a mock API server, and the mock's handle.
    fn mocked() -> (
        Arc<Context>,
        Handle<Request<Body>, Response<Body>>,
        Registry,
    ) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let mut registry = Registry::default();
        let client = Client::new(service, "default");
        let ctx = Context::new(client, Metrics::register(&mut registry));
        (Arc::new(ctx), handle, registry)
    }

    /// Answers the next request, which must be `method` on a path ending in `path_end`.
    async fn answer(
        handle: &mut Handle<Request<Body>, Response<Body>>,
        method: &str,
        path_end: &str,
        status: StatusCode,
        body: serde_json::Value,
    ) -> Request<Body> {
        let (request, respond) = handle.next_request().await.expect("a request");
        assert_eq!(request.method().as_str(), method, "{}", request.uri());
        assert!(
            request.uri().path().ends_with(path_end),
            "expected {method} …{path_end}, got {}",
            request.uri()
        );
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        respond.send_response(response);
        request
    }

    /// Accepts the next request, which must publish an Event, and returns the Event.
    async fn published_event(
        handle: &mut Handle<Request<Body>, Response<Body>>,
    ) -> serde_json::Value {
        let request = answer(
            handle,
            "POST",
            "/namespaces/ns/events",
            StatusCode::CREATED,
            serde_json::json!({}),
        )
        .await;
        let body = request.into_body().collect_bytes().await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn status(code: u16, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "code": code, "reason": reason, "message": message,
        })
    }

    #[tokio::test]
    async fn an_unreadable_secret_fails_the_reconcile_with_a_warning_event_and_a_metric() {
        let (ctx, mut handle, registry) = mocked();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                "GET",
                "/namespaces/ns/secrets/fintech-minio",
                StatusCode::INTERNAL_SERVER_ERROR,
                status(500, "InternalError", "etcd is unavailable"),
            )
            .await;
            published_event(&mut handle).await
        });
        let error = reconcile(pipeline(), ctx.clone()).await.unwrap_err();
        assert!(matches!(error, Error::ReadSecret(_)), "{error}");
        let event = server.await.unwrap();
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "SecretUnreadable");
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("etcd is unavailable"),
            "{event}"
        );
        assert_eq!(event["regarding"]["name"], "demo");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"fintech_operator_reconcile_failures_total{reason="SecretUnreadable"} 1"#
            ),
            "{text}"
        );
        assert_eq!(
            error_policy(pipeline(), &error, ctx.clone()),
            Action::requeue(backoff(1))
        );
        assert_eq!(
            error_policy(pipeline(), &error, ctx),
            Action::requeue(backoff(2))
        );
    }

    #[tokio::test]
    async fn a_refused_apply_names_the_child_and_the_pipeline_gets_a_warning() {
        let (ctx, mut handle, _registry) = mocked();
        let server = tokio::spawn(async move {
            let secret = |name: &str, keys: &[&str]| {
                let data: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .map(|k| (k.to_string(), "eA==".into()))
                    .collect();
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7"},
                    "data": data,
                })
            };
            answer(
                &mut handle,
                "GET",
                "/secrets/fintech-minio",
                StatusCode::OK,
                secret(
                    "fintech-minio",
                    &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
                ),
            )
            .await;
            answer(
                &mut handle,
                "GET",
                "/secrets/fintech-postgres",
                StatusCode::OK,
                secret("fintech-postgres", &["url"]),
            )
            .await;
            // No other pipeline shares its warehouse or lake.
            answer(
                &mut handle,
                "GET",
                "/fintechpipelines",
                StatusCode::OK,
                serde_json::json!({
                    "apiVersion": "fintech.io/v1alpha1", "kind": "FintechPipelineList",
                    "metadata": {}, "items": [],
                }),
            )
            .await;
            answer(
                &mut handle,
                "GET",
                "/configmaps/demo-config",
                StatusCode::NOT_FOUND,
                status(404, "NotFound", "configmaps \"demo-config\" not found"),
            )
            .await;
            let apply = answer(
                &mut handle,
                "PATCH",
                "/configmaps/demo-config",
                StatusCode::UNPROCESSABLE_ENTITY,
                status(422, "Invalid", "ConfigMap \"demo-config\" is invalid"),
            )
            .await;
            let query = apply.uri().query().unwrap_or_default().to_owned();
            (query, published_event(&mut handle).await)
        });
        let error = reconcile(pipeline(), ctx).await.unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("applying ConfigMap demo-config failed"),
            "{error}"
        );
        let (query, event) = server.await.unwrap();
        assert!(
            query.contains("fieldManager=fintech-operator") && query.contains("force=true"),
            "server-side apply with the operator's field manager: {query}"
        );
        assert_eq!(event["reason"], "ApplyFailed");
        assert!(
            event["note"].as_str().unwrap().contains("is invalid"),
            "{event}"
        );
    }

    #[test]
    fn the_back_off_doubles_from_five_seconds_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
