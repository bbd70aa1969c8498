//! The pipeline's status, computed by a pure function from what the controller observed, and
//! the condition merge that moves `lastTransitionTime` only when a condition changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{FintechPipeline, FintechPipelineStatus, TransformStatus};

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
        status: if ok { "True" } else { "False" }.to_owned(),
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
        ("ProducerAvailable", "producer", observed.producer),
        ("StreamerAvailable", "streamer", observed.streamer),
        ("LoaderAvailable", "loader", observed.loader),
    ];
    let mut conditions: Vec<Condition> = workers
        .iter()
        .map(|(kind, name, a)| {
            let message = format!("{}/{} {name} pods ready", a.ready, a.desired);
            let reason = if a.available() {
                "Available"
            } else {
                "PodsNotReady"
            };
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
    let phase = if !observed.missing_secrets.is_empty() {
        "Failed"
    } else if pipeline.spec.suspend {
        "Suspended"
    } else if all_available {
        "Running"
    } else if workers.iter().all(|(_, _, a)| a.ready == 0) {
        "Pending"
    } else {
        "Degraded"
    };
    let namespace = pipeline.metadata.namespace.as_deref().unwrap_or("default");
    let (reason, message) = if observed.missing_secrets.is_empty() {
        (
            phase.to_owned(),
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
    let ready = all_available && !pipeline.spec.suspend && observed.missing_secrets.is_empty();
    conditions.insert(
        0,
        condition("Ready", ready, &reason, message, generation, &now),
    );
    let previous = pipeline
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    FintechPipelineStatus {
        observed_generation: generation,
        phase: Some(phase.to_owned()),
        ready_components: Some(format!("{ready_workers}/{wanted_workers}")),
        conditions: merge_conditions(previous, conditions),
        transform: Some(observed.transform.clone()),
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
        assert_eq!(compute(&p, &pending, now).phase.as_deref(), Some("Pending"));
        let degraded = Observed {
            producer: ready(1),
            ..pending.clone()
        };
        assert_eq!(
            compute(&p, &degraded, now).phase.as_deref(),
            Some("Degraded")
        );
        let running = Observed {
            producer: ready(1),
            streamer: ready(1),
            loader: ready(1),
            ..pending.clone()
        };
        let status = compute(&p, &running, now);
        assert_eq!(status.phase.as_deref(), Some("Running"));
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
        assert_eq!(status.phase.as_deref(), Some("Suspended"));
        let scheduled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "TransformScheduled")
            .unwrap();
        assert_eq!(scheduled.status, "False");
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
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let ready = &status.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "False", "SecretMissing")
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
}
