//! The pipeline's status, computed by a pure function from what the controller observed, and
//! the condition merge that moves `lastTransitionTime` only when a condition changes.

use k8s_openapi::api::batch::v1::{CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::children::Worker;
use crate::crd::{FintechPipeline, FintechPipelineStatus, JobResult, Phase, TransformStatus};
use crate::data::Judgement;
use crate::sharing::Refusal;

/// The `status` of a Kubernetes condition (the pipeline's own and its Jobs'), as the API
/// spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Whoever owns the condition cannot tell. The operator never writes it, and a Job
    /// condition in this state does not count as holding.
    Unknown,
}

impl ConditionStatus {
    /// The text of a condition's `status` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    /// Whether `status`, as read from the API, is this one.
    pub fn is(self, status: &str) -> bool {
        status == self.as_str()
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

/// Ready and desired replicas of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Availability {
    /// Pods ready.
    pub ready: i32,
    /// Pods wanted.
    pub desired: i32,
}

impl Availability {
    fn available(self) -> bool {
        self.ready >= self.desired
    }
}

/// What the controller saw of the children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The producer Deployment.
    pub producer: Availability,
    /// The streamer Deployment.
    pub streamer: Availability,
    /// The loader Deployment.
    pub loader: Availability,
    /// Whether the CronJob exists.
    pub cron_job_present: bool,
    /// The CronJob's status times.
    pub transform: TransformStatus,
    /// Secrets the spec names that do not exist, each with what it must hold.
    pub missing_secrets: Vec<String>,
    /// Why the pipeline is refused (another one uses its warehouse or lake), if it is.
    pub refusal: Option<Refusal>,
    /// Whether data flows, judged from the workers' `/status`; `None` when the workers were
    /// not read this time, which keeps the previous judgement.
    pub data: Option<Judgement>,
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: kind.to_owned(),
        status: ConditionStatus::from(ok).as_str().to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The status for `pipeline` given `observed`, keeping each condition's previous
/// `lastTransitionTime` unless its status changed.
pub fn compute(
    pipeline: &FintechPipeline,
    observed: &Observed,
    now: Timestamp,
) -> FintechPipelineStatus {
    let generation = pipeline.metadata.generation;
    let now = Time(now);
    let workers = [
        ("ProducerAvailable", Worker::Producer, observed.producer),
        ("StreamerAvailable", Worker::Streamer, observed.streamer),
        ("LoaderAvailable", Worker::Loader, observed.loader),
    ];
    let mut conditions: Vec<Condition> = workers
        .iter()
        .map(|(kind, worker, a)| {
            let name = worker.as_str();
            let mut message = format!("{}/{} {name} pods ready", a.ready, a.desired);
            let mut reason = if a.available() {
                "Available"
            } else {
                "PodsNotReady"
            };
            let partitions = pipeline.spec.kafka.partitions;
            if *worker == Worker::Streamer && a.desired > partitions {
                // Kafka gives each partition to one consumer of the group, so the rest idle.
                message.push_str(&format!(
                    "; {} idle: {} replicas for {partitions} Kafka partitions, lower \
                     streamer.replicas, or add partitions to the topic and raise \
                     kafka.partitions",
                    a.desired - partitions,
                    a.desired
                ));
                if a.available() {
                    reason = "MoreReplicasThanPartitions";
                }
            }
            condition(kind, a.available(), reason, message, generation, &now)
        })
        .collect();
    let scheduled =
        observed.cron_job_present && !(pipeline.spec.suspend || pipeline.spec.transform.suspend);
    conditions.push(condition(
        "TransformScheduled",
        scheduled,
        if scheduled { "Scheduled" } else { "Suspended" },
        format!("transforms run on {:?}", pipeline.spec.transform.schedule),
        generation,
        &now,
    ));
    let all_available = workers.iter().all(|(_, _, a)| a.available());
    let ready_workers = workers
        .iter()
        .filter(|(_, _, a)| a.desired > 0 && a.available())
        .count();
    let wanted_workers = workers.iter().filter(|(_, _, a)| a.desired > 0).count();
    let phase = if !observed.missing_secrets.is_empty() || observed.refusal.is_some() {
        Phase::Failed
    } else if pipeline.spec.suspend {
        Phase::Suspended
    } else if all_available {
        Phase::Running
    } else if workers.iter().all(|(_, _, a)| a.ready == 0) {
        Phase::Pending
    } else {
        Phase::Degraded
    };
    let namespace = pipeline.metadata.namespace.as_deref().unwrap_or("default");
    let (reason, message) = if let Some(refusal) = &observed.refusal {
        (refusal.reason.to_owned(), refusal.message.clone())
    } else if observed.missing_secrets.is_empty() {
        (
            phase.as_str().to_owned(),
            format!("{ready_workers}/{wanted_workers} components ready"),
        )
    } else {
        (
            "SecretMissing".to_owned(),
            format!(
                "missing in namespace {namespace}: {}; create them, or point the spec at existing Secrets",
                observed.missing_secrets.join("; ")
            ),
        )
    };
    let ready = all_available
        && !pipeline.spec.suspend
        && observed.missing_secrets.is_empty()
        && observed.refusal.is_none();
    let previous_status = pipeline.status.clone().unwrap_or_default();
    let previous = previous_status.conditions.as_slice();
    let (data_flowing, data) = match &observed.data {
        Some(judgement) => (
            Some(Condition {
                type_: DATA_FLOWING.to_owned(),
                status: judgement.status.as_str().to_owned(),
                reason: judgement.reason.to_owned(),
                message: judgement.message.clone(),
                observed_generation: generation,
                last_transition_time: now.clone(),
            }),
            Some(judgement.data.clone()),
        ),
        None => (
            previous.iter().find(|c| c.type_ == DATA_FLOWING).cloned(),
            previous_status.data.clone(),
        ),
    };
    conditions.splice(
        0..0,
        std::iter::once(condition(
            "Ready", ready, &reason, message, generation, &now,
        ))
        .chain(data_flowing),
    );
    FintechPipelineStatus {
        observed_generation: generation,
        phase: Some(phase),
        ready_components: Some(format!("{ready_workers}/{wanted_workers}")),
        conditions: merge_conditions(previous, conditions),
        transform: Some(observed.transform.clone()),
        data,
    }
}

/// The type of the condition that says whether data flows.
pub const DATA_FLOWING: &str = "DataFlowing";

/// How a Job is doing, from its conditions.
fn job_result(job: &Job) -> JobResult {
    let holds = |kinds: &[&str]| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    kinds.contains(&c.type_.as_str()) && ConditionStatus::True.is(&c.status)
                })
            })
    };
    if holds(&["Complete", "SuccessCriteriaMet"]) {
        JobResult::Succeeded
    } else if holds(&["Failed", "FailureTarget"]) {
        JobResult::Failed
    } else {
        JobResult::Running
    }
}

/// The transforms' last runs, from the CronJob's status and the transform Jobs (scheduled and
/// manual); the manual-run fields are left for the controller. A success reported before
/// (`previous_success`) is kept when it is newer, since a finished manual Job is deleted a
/// day later and the CronJob never knew of it.
pub fn transform_runs(
    cron: &CronJobStatus,
    jobs: &[Job],
    previous_success: Option<&str>,
) -> TransformStatus {
    let started = |job: &Job| {
        job.status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .or_else(|| job.metadata.creation_timestamp.clone())
            .map(|t| t.0)
    };
    let last = jobs.iter().max_by_key(|job| started(job));
    // A manual run's success counts too; the CronJob only knows the Jobs it started.
    let succeeded = jobs
        .iter()
        .filter(|job| job_result(job) == JobResult::Succeeded)
        .filter_map(|job| job.status.as_ref()?.completion_time.clone())
        .map(|t| t.0);
    let last_success = cron
        .last_successful_time
        .clone()
        .map(|t| t.0)
        .into_iter()
        .chain(succeeded)
        .chain(previous_success.and_then(|t| t.parse::<Timestamp>().ok()))
        .max();
    TransformStatus {
        last_schedule_time: cron.last_schedule_time.as_ref().map(|t| t.0.to_string()),
        last_successful_time: last_success.map(|t| t.to_string()),
        last_job: last.and_then(|job| job.metadata.name.clone()),
        last_job_result: last.map(job_result),
        ..TransformStatus::default()
    }
}

/// Keeps the previous `lastTransitionTime` of every condition whose status did not change.
pub fn merge_conditions(previous: &[Condition], next: Vec<Condition>) -> Vec<Condition> {
    next.into_iter()
        .map(|mut condition| {
            if let Some(old) = previous.iter().find(|old| old.type_ == condition.type_)
                && old.status == condition.status
            {
                condition.last_transition_time = old.last_transition_time.clone();
            }
            condition
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(spec: &str) -> FintechPipeline {
        let mut p = FintechPipeline::new("demo", serde_json::from_str(spec).unwrap());
        p.metadata.generation = Some(4);
        p
    }

    fn ready(n: i32) -> Availability {
        Availability {
            ready: n,
            desired: n,
        }
    }

    #[test]
    fn condition_statuses_keep_the_api_spelling() {
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
        assert_eq!(ConditionStatus::from(false).as_str(), "False");
        assert!(ConditionStatus::True.is("True") && !ConditionStatus::True.is("Unknown"));
    }

    #[test]
    fn phases_follow_the_workers() {
        let p = pipeline("{}");
        let now = Timestamp::UNIX_EPOCH;
        let pending = Observed {
            producer: Availability {
                ready: 0,
                desired: 1,
            },
            streamer: Availability {
                ready: 0,
                desired: 1,
            },
            loader: Availability {
                ready: 0,
                desired: 1,
            },
            cron_job_present: true,
            ..Observed::default()
        };
        assert_eq!(compute(&p, &pending, now).phase, Some(Phase::Pending));
        let degraded = Observed {
            producer: ready(1),
            ..pending.clone()
        };
        assert_eq!(compute(&p, &degraded, now).phase, Some(Phase::Degraded));
        let running = Observed {
            producer: ready(1),
            streamer: ready(1),
            loader: ready(1),
            ..pending.clone()
        };
        let status = compute(&p, &running, now);
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(status.ready_components.as_deref(), Some("3/3"));
        assert_eq!(status.observed_generation, Some(4));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
        let suspended = pipeline(r#"{"suspend": true}"#);
        let status = compute(
            &suspended,
            &Observed {
                cron_job_present: true,
                ..Observed::default()
            },
            now,
        );
        assert_eq!(status.phase, Some(Phase::Suspended));
        let scheduled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "TransformScheduled")
            .unwrap();
        assert_eq!(scheduled.status, ConditionStatus::False.as_str());
    }

    #[test]
    fn streamer_replicas_beyond_the_partitions_are_reported_idle() {
        let p = pipeline(r#"{"kafka": {"partitions": 2}, "streamer": {"replicas": 3}}"#);
        let observed = Observed {
            producer: ready(1),
            streamer: ready(3),
            loader: ready(1),
            cron_job_present: true,
            ..Observed::default()
        };
        let status = compute(&p, &observed, Timestamp::UNIX_EPOCH);
        let streamer = status
            .conditions
            .iter()
            .find(|c| c.type_ == "StreamerAvailable")
            .unwrap();
        assert_eq!(streamer.status, ConditionStatus::True.as_str());
        assert_eq!(streamer.reason, "MoreReplicasThanPartitions");
        assert!(
            streamer
                .message
                .contains("1 idle: 3 replicas for 2 Kafka partitions"),
            "{}",
            streamer.message
        );
        assert_eq!(status.phase, Some(Phase::Running));
    }

    fn job(name: &str, started: i64, condition: Option<&str>, completed: Option<i64>) -> Job {
        let time = |s: i64| Time(Timestamp::from_second(s).unwrap());
        let mut job = Job::default();
        job.metadata.name = Some(name.to_owned());
        job.status = Some(k8s_openapi::api::batch::v1::JobStatus {
            start_time: Some(time(started)),
            completion_time: completed.map(time),
            conditions: condition.map(|kind| {
                vec![k8s_openapi::api::batch::v1::JobCondition {
                    type_: kind.to_owned(),
                    status: ConditionStatus::True.as_str().to_owned(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        job
    }

    #[test]
    fn the_last_transform_run_comes_from_the_newest_job_and_any_success() {
        let cron = CronJobStatus {
            last_schedule_time: Some(Time(Timestamp::from_second(100).unwrap())),
            last_successful_time: Some(Time(Timestamp::from_second(150).unwrap())),
            ..Default::default()
        };
        let jobs = [
            job("demo-transform-1", 100, Some("Complete"), Some(150)),
            job("demo-transform-manual-1", 200, Some("Complete"), Some(260)),
            job("demo-transform-2", 300, Some("Failed"), None),
        ];
        let runs = transform_runs(&cron, &jobs, None);
        assert_eq!(runs.last_job.as_deref(), Some("demo-transform-2"));
        assert_eq!(runs.last_job_result, Some(JobResult::Failed));
        assert_eq!(
            runs.last_successful_time.as_deref(),
            Some("1970-01-01T00:04:20Z"),
            "the manual run's success is newer than the CronJob's"
        );
        assert_eq!(
            runs.last_schedule_time.as_deref(),
            Some("1970-01-01T00:01:40Z")
        );
        let running = transform_runs(&CronJobStatus::default(), &[job("j", 5, None, None)], None);
        assert_eq!(running.last_job_result, Some(JobResult::Running));
        assert_eq!(running.last_successful_time, None);
        assert_eq!(
            transform_runs(&CronJobStatus::default(), &[], None),
            TransformStatus::default()
        );
        // The manual Job has been cleaned up: its success, reported before, stays.
        let cleaned_up = transform_runs(&cron, &jobs[..1], Some("1970-01-01T00:04:20Z"));
        assert_eq!(
            cleaned_up.last_successful_time.as_deref(),
            Some("1970-01-01T00:04:20Z")
        );
    }

    #[test]
    fn a_missing_secret_fails_the_pipeline_with_what_to_create() {
        let mut p = pipeline("{}");
        p.metadata.namespace = Some("analytics".to_owned());
        let observed = Observed {
            missing_secrets: vec!["Secret fintech-postgres with key url".to_owned()],
            ..Observed::default()
        };
        let status = compute(&p, &observed, Timestamp::UNIX_EPOCH);
        assert_eq!(status.phase, Some(Phase::Failed));
        let ready = &status.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", ConditionStatus::False.as_str(), "SecretMissing")
        );
        assert!(
            ready
                .message
                .contains("namespace analytics: Secret fintech-postgres with key url"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn transition_times_move_only_when_a_condition_changes() {
        let mut p = pipeline("{}");
        let observed = Observed {
            producer: ready(1),
            streamer: ready(1),
            loader: Availability {
                ready: 0,
                desired: 1,
            },
            cron_job_present: true,
            ..Observed::default()
        };
        let first = compute(&p, &observed, Timestamp::UNIX_EPOCH);
        p.status = Some(first);
        let later = Timestamp::from_second(1_000).unwrap();
        let recovered = Observed {
            loader: ready(1),
            ..observed
        };
        let second = compute(&p, &recovered, later);
        let time_of = |kind: &str| {
            second
                .conditions
                .iter()
                .find(|c| c.type_ == kind)
                .unwrap()
                .last_transition_time
                .0
        };
        assert_eq!(
            time_of("ProducerAvailable"),
            Timestamp::UNIX_EPOCH,
            "unchanged"
        );
        assert_eq!(time_of("LoaderAvailable"), later, "changed");
        assert_eq!(time_of("Ready"), later, "changed");
    }

    #[test]
    fn the_data_judgement_follows_ready_and_is_kept_until_the_workers_are_read_again() {
        let mut p = pipeline("{}");
        let judgement = crate::data::Judgement {
            status: ConditionStatus::False,
            reason: "LoaderStalled",
            message: "no load into silver has succeeded for 5m".to_owned(),
            data: crate::crd::DataStatus {
                consumer_lag: Some(12),
                ..Default::default()
            },
        };
        let read = Observed {
            data: Some(judgement),
            ..Observed::default()
        };
        let first = compute(&p, &read, Timestamp::UNIX_EPOCH);
        let flowing = &first.conditions[1];
        assert_eq!(
            (
                flowing.type_.as_str(),
                flowing.status.as_str(),
                flowing.reason.as_str()
            ),
            (DATA_FLOWING, "False", "LoaderStalled")
        );
        assert_eq!(first.data.as_ref().and_then(|d| d.consumer_lag), Some(12));
        p.status = Some(first.clone());
        // Not read this time: the same condition, time and figures.
        let unread = compute(
            &p,
            &Observed::default(),
            Timestamp::from_second(10).unwrap(),
        );
        assert_eq!(unread.conditions[1], first.conditions[1]);
        assert_eq!(unread.data, first.data);
    }
}
