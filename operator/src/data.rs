//! Whether data flows: the `DataFlowing` condition and `status.data`, judged by a pure
//! function from the `/status` documents of the worker pods (which the controller reads),
//! so that `kubectl get fp` tells a pipeline whose pods run but whose rows stopped.
//!
//! A layer is late when it has moved nothing for three of its own periods plus a minute:
//! the streamer's batch interval, the loader's run interval. Each judgement names the
//! command or table to look at next.

use std::time::Duration;

use fintech_status_server::report::{RunOutcome, WorkerStatus};
use k8s_openapi::jiff::Timestamp;

use crate::children::Worker;
use crate::crd::{DataStatus, FintechPipelineSpec};
use crate::status::ConditionStatus;

/// How long the producer may go without an acknowledged message.
const PRODUCER_QUIET: Duration = Duration::from_secs(120);

/// What the controller read from one worker's pods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Pods of the worker that run and have an address.
    pub pods: usize,
    /// The documents read, one per pod that answered.
    pub statuses: Vec<WorkerStatus>,
    /// Why the other pods did not answer, one line per pod.
    pub errors: Vec<String>,
}

/// The readings of a pipeline's workers, in [`Worker::ALL`] order.
pub type Readings = [Reading; 3];

/// The `DataFlowing` condition and `status.data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The condition's status.
    pub status: ConditionStatus,
    /// The condition's reason: `Flowing`, `Idle`, `Suspended`, `StatusUnavailable`,
    /// `NotRunning`, `ProducerStalled`, `StreamerStalled`, `LoadFailed`, `LoadSilentFailure`
    /// or `LoaderStalled`.
    pub reason: &'static str,
    /// What is wrong and where to look, or how much flows.
    pub message: String,
    /// The figures behind it.
    pub data: DataStatus,
}

impl Judgement {
    /// Nothing could be read: the condition is Unknown, with `message` saying why.
    pub fn unreadable(message: String, now: Timestamp) -> Self {
        Self {
            status: ConditionStatus::Unknown,
            reason: "StatusUnavailable",
            message,
            data: DataStatus {
                observed_time: Some(now.to_string()),
                ..DataStatus::default()
            },
        }
    }
}

/// A problem found in one layer.
struct Problem {
    reason: &'static str,
    message: String,
}

/// Judges whether data flows through the pipeline `name` with `spec`, from `readings` taken
/// at `now`. `wanted` says which workers should run (their Deployments want pods).
pub fn judge(
    name: &str,
    spec: &FintechPipelineSpec,
    wanted: [bool; 3],
    readings: &Readings,
    now: Timestamp,
) -> Judgement {
    let [producer, streamer, loader] = readings;
    let now_s = now.as_second();
    let data = figures(streamer, loader, producer, now);
    let judged = |status, reason, message| Judgement {
        status,
        reason,
        message,
        data: data.clone(),
    };
    if spec.suspend {
        return judged(
            ConditionStatus::False,
            "Suspended",
            "the pipeline is suspended; set spec.suspend to false to resume".to_owned(),
        );
    }
    // Which pods could not be read: with none read for a worker, nothing can be judged.
    let mut unreadable = Vec::new();
    let mut not_running = Vec::new();
    for ((worker, reading), wanted) in Worker::ALL.iter().zip(readings).zip(wanted) {
        if !wanted {
            continue;
        }
        if reading.pods == 0 {
            not_running.push(worker.as_str());
        } else if reading.statuses.is_empty() {
            unreadable.push(format!(
                "{}: {}",
                worker.as_str(),
                reading.errors.join("; ")
            ));
        }
    }
    if !not_running.is_empty() {
        return judged(
            ConditionStatus::False,
            "NotRunning",
            format!(
                "no {} pod is running; the *Available conditions say why",
                not_running.join(" or ")
            ),
        );
    }
    if !unreadable.is_empty() {
        return judged(
            ConditionStatus::Unknown,
            "StatusUnavailable",
            format!(
                "cannot read the workers' /status: {}",
                unreadable.join("; ")
            ),
        );
    }

    let mut problems = Vec::new();
    if wanted[0] {
        let quiet = stale(producer, PRODUCER_QUIET, now_s);
        if let Some(for_s) = quiet {
            problems.push(Problem {
                reason: "ProducerStalled",
                message: format!(
                    "Kafka has acknowledged no message from the producer for {}; see \
                     `kubectl logs deploy/{name}-producer`",
                    human(for_s)
                ),
            });
        }
    }
    if wanted[1] {
        let batch = Duration::from_secs(spec.streamer.batch_interval_seconds.unsigned_abs().into());
        let lag = data.consumer_lag.unwrap_or(0);
        if lag > 0
            && let Some(for_s) = stale(streamer, late_after(batch), now_s)
        {
            problems.push(Problem {
                reason: "StreamerStalled",
                message: format!(
                    "the streamer has committed nothing to bronze for {} while {lag} messages \
                     wait in Kafka (batches close every {}s); see `kubectl logs \
                     deploy/{name}-streamer`",
                    human(for_s),
                    batch.as_secs()
                ),
            });
        }
    }
    if wanted[2] {
        problems.extend(loader_problem(name, spec, loader, now_s));
    }
    match problems.first() {
        Some(first) => judged(
            ConditionStatus::False,
            first.reason,
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        None => {
            let moving = [data.bronze_rows_per_minute, data.silver_rows_per_minute]
                .iter()
                .any(|rate| rate.is_some_and(|r| r > 0));
            let message = format!(
                "{} rows/min into bronze, {} into silver; {} messages in Kafka and {} bronze \
                 files not yet loaded",
                shown(data.bronze_rows_per_minute),
                shown(data.silver_rows_per_minute),
                shown(data.consumer_lag),
                shown(data.files_pending),
            );
            judged(
                ConditionStatus::True,
                if moving { "Flowing" } else { "Idle" },
                message,
            )
        }
    }
}

/// The loader's problem, if it has one: its last run failed or loaded nothing of what it
/// found, or no run has succeeded for too long.
fn loader_problem(
    name: &str,
    spec: &FintechPipelineSpec,
    loader: &Reading,
    now_s: i64,
) -> Option<Problem> {
    let last_run = last_run(loader);
    let look = format!("see `kubectl logs deploy/{name}-loader` and metadata.load_health");
    let interval = Duration::from_secs(spec.loader.interval_seconds.unsigned_abs().into());
    if let Some(for_s) = stale(loader, late_after(interval), now_s) {
        let running = loader
            .statuses
            .iter()
            .filter_map(|s| s.running_since)
            .min()
            .map(|since| {
                format!(
                    "; the run in progress started {} ago (waiting for a lock, or a slow \
                     warehouse?)",
                    human(now_s - since)
                )
            })
            .unwrap_or_default();
        let last = last_run
            .and_then(|run| {
                run.error
                    .as_ref()
                    .map(|e| format!("; the last run failed: {e}"))
            })
            .unwrap_or_default();
        return Some(Problem {
            reason: "LoaderStalled",
            message: format!(
                "no load into silver has succeeded for {} (runs every {}s){running}{last}; {look}",
                human(for_s),
                interval.as_secs()
            ),
        });
    }
    let run = last_run?;
    match run.health.as_str() {
        "explicit_failure" => Some(Problem {
            reason: "LoadFailed",
            message: format!(
                "the last load run {} failed: {}; {look}",
                run.id,
                run.error.as_deref().unwrap_or("no error recorded")
            ),
        }),
        "silent_failure" => Some(Problem {
            reason: "LoadSilentFailure",
            message: format!(
                "the last load run {} found bronze files to load but loaded no row; {look}",
                run.id
            ),
        }),
        _ => None,
    }
}

/// The newest finished run among the loader's pods.
fn last_run(loader: &Reading) -> Option<&RunOutcome> {
    loader
        .statuses
        .iter()
        .filter_map(|s| s.last_run.as_ref())
        .max_by_key(|run| run.finished_at)
}

/// Three periods and a minute: a layer that has moved nothing for longer is late.
fn late_after(period: Duration) -> Duration {
    period * 3 + Duration::from_secs(60)
}

/// Seconds since the newest progress of any pod of `reading` (or, before any, since the
/// oldest pod started), when that is longer than `limit`.
fn stale(reading: &Reading, limit: Duration, now_s: i64) -> Option<i64> {
    let since = reading
        .statuses
        .iter()
        .filter_map(|s| s.last_progress_at)
        .max()
        .or_else(|| reading.statuses.iter().map(|s| s.started_at).min())?;
    let for_s = now_s - since;
    (for_s > i64::try_from(limit.as_secs()).unwrap_or(i64::MAX)).then_some(for_s)
}

/// The figures of `status.data`, summed over the pods of each worker.
fn figures(streamer: &Reading, loader: &Reading, producer: &Reading, now: Timestamp) -> DataStatus {
    let rate = |reading: &Reading| {
        let rates: Vec<f64> = reading
            .statuses
            .iter()
            .filter_map(|s| s.rows_per_minute)
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum::<f64>().round() as i64)
    };
    let backlog = |reading: &Reading| {
        let backlogs: Vec<u64> = reading.statuses.iter().filter_map(|s| s.backlog).collect();
        (!backlogs.is_empty())
            .then(|| i64::try_from(backlogs.iter().sum::<u64>()).unwrap_or(i64::MAX))
    };
    let latest = |reading: &Reading| {
        reading
            .statuses
            .iter()
            .filter_map(|s| s.last_progress_at)
            .max()
            .and_then(|at| Timestamp::from_second(at).ok())
            .map(|at| at.to_string())
    };
    let last_run = last_run(loader);
    DataStatus {
        observed_time: Some(now.to_string()),
        produced_per_minute: rate(producer),
        bronze_rows_per_minute: rate(streamer),
        silver_rows_per_minute: rate(loader),
        consumer_lag: backlog(streamer),
        files_pending: backlog(loader),
        last_commit_time: latest(streamer),
        last_load_time: latest(loader),
        last_load_health: last_run.map(|run| run.health.clone()),
    }
}

fn shown(value: Option<i64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// `95s`, `12m`, `3h`: how long, as a person reads it.
fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn spec() -> FintechPipelineSpec {
        // Batches every 30 s, loads every 60 s: late after 150 s and 240 s.
        serde_json::from_str("{}").unwrap()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    fn read(status: WorkerStatus) -> Reading {
        Reading {
            pods: 1,
            statuses: vec![status],
            errors: vec![],
        }
    }

    fn producer(last_delivery_ago: i64) -> WorkerStatus {
        WorkerStatus {
            worker: "producer".to_owned(),
            started_at: NOW - 3_600,
            rows_total: 1_000,
            rows_per_minute: Some(3_000.0),
            last_progress_at: Some(NOW - last_delivery_ago),
            ..WorkerStatus::default()
        }
    }

    fn streamer(last_commit_ago: i64, lag: u64) -> WorkerStatus {
        WorkerStatus {
            worker: "streamer".to_owned(),
            started_at: NOW - 3_600,
            rows_total: 1_000,
            rows_per_minute: Some(2_990.4),
            last_progress_at: Some(NOW - last_commit_ago),
            backlog: Some(lag),
            ..WorkerStatus::default()
        }
    }

    fn loader(last_success_ago: i64, health: &str) -> WorkerStatus {
        WorkerStatus {
            worker: "loader".to_owned(),
            started_at: NOW - 3_600,
            rows_total: 900,
            rows_per_minute: Some(3_000.0),
            last_progress_at: Some(NOW - last_success_ago),
            backlog: Some(2),
            last_run: Some(RunOutcome {
                id: "run-1".to_owned(),
                finished_at: NOW - 5,
                health: health.to_owned(),
                rows: 100,
                error: (health == "explicit_failure").then(|| "disk full".to_owned()),
            }),
            running_since: None,
        }
    }

    fn healthy() -> Readings {
        [
            read(producer(1)),
            read(streamer(10, 40)),
            read(loader(20, "healthy")),
        ]
    }

    fn judged(readings: &Readings) -> Judgement {
        judge("payments", &spec(), [true; 3], readings, now())
    }

    #[test]
    fn rows_moving_through_every_layer_are_flowing_with_the_figures() {
        let judgement = judged(&healthy());
        assert_eq!(judgement.status, ConditionStatus::True);
        assert_eq!(judgement.reason, "Flowing");
        assert_eq!(
            judgement.message,
            "2990 rows/min into bronze, 3000 into silver; 40 messages in Kafka and 2 bronze \
             files not yet loaded"
        );
        let data = judgement.data;
        assert_eq!(data.consumer_lag, Some(40));
        assert_eq!(data.last_load_health.as_deref(), Some("healthy"));
        assert_eq!(
            data.last_commit_time.as_deref(),
            Some("2027-01-15T07:59:50Z")
        );
    }

    #[test]
    fn a_loader_with_no_success_for_three_intervals_and_a_minute_stops_the_flow_while_it_runs() {
        let mut readings = healthy();
        let mut stuck = loader(241, "healthy");
        stuck.running_since = Some(NOW - 200);
        readings[2] = read(stuck);
        let judgement = judged(&readings);
        assert_eq!(judgement.status, ConditionStatus::False);
        assert_eq!(judgement.reason, "LoaderStalled");
        assert_eq!(
            judgement.message,
            "no load into silver has succeeded for 4m (runs every 60s); the run in progress \
             started 3m ago (waiting for a lock, or a slow warehouse?); see `kubectl logs \
             deploy/payments-loader` and metadata.load_health"
        );
        // Just inside the limit it still flows.
        readings[2] = read(loader(240, "healthy"));
        assert_eq!(judged(&readings).reason, "Flowing");
    }

    #[test]
    fn a_failed_or_silent_load_stops_the_flow_with_its_run() {
        let mut readings = healthy();
        readings[2] = read(loader(20, "explicit_failure"));
        let failed = judged(&readings);
        assert_eq!(
            (failed.status, failed.reason),
            (ConditionStatus::False, "LoadFailed")
        );
        assert!(
            failed
                .message
                .starts_with("the last load run run-1 failed: disk full;"),
            "{}",
            failed.message
        );
        readings[2] = read(loader(20, "silent_failure"));
        let silent = judged(&readings);
        assert_eq!(silent.reason, "LoadSilentFailure");
        assert!(
            silent.message.contains("loaded no row"),
            "{}",
            silent.message
        );
        // Quarantined files are reported by metrics and alerts; rows still flow.
        readings[2] = read(loader(20, "quarantined_files"));
        assert_eq!(judged(&readings).status, ConditionStatus::True);
    }

    #[test]
    fn a_streamer_late_with_messages_waiting_stops_the_flow_and_one_with_none_does_not() {
        let mut readings = healthy();
        readings[1] = read(streamer(151, 5_000));
        let late = judged(&readings);
        assert_eq!(late.reason, "StreamerStalled");
        assert!(
            late.message
                .contains("for 2m while 5000 messages wait in Kafka"),
            "{}",
            late.message
        );
        // Nothing to read: an old commit is no problem.
        readings[1] = read(streamer(3_000, 0));
        assert_eq!(judged(&readings).status, ConditionStatus::True);
    }

    #[test]
    fn every_late_layer_is_named_and_the_first_gives_the_reason() {
        let readings = [
            read(producer(600)),
            read(streamer(600, 10)),
            read(loader(600, "healthy")),
        ];
        let judgement = judged(&readings);
        assert_eq!(judgement.reason, "ProducerStalled");
        let parts: Vec<&str> = judgement.message.split("; see").collect();
        assert_eq!(parts.len(), 4, "{}", judgement.message);
        assert!(
            judgement
                .message
                .contains("the streamer has committed nothing")
        );
        assert!(
            judgement
                .message
                .contains("no load into silver has succeeded for 10m")
        );
    }

    #[test]
    fn a_new_worker_counts_from_its_start_until_it_first_moves_data() {
        let mut readings = healthy();
        let mut fresh = loader(0, "healthy");
        fresh.last_progress_at = None;
        fresh.last_run = None;
        fresh.started_at = NOW - 30;
        readings[2] = read(fresh.clone());
        assert_eq!(judged(&readings).status, ConditionStatus::True);
        fresh.started_at = NOW - 600;
        readings[2] = read(fresh);
        assert_eq!(judged(&readings).reason, "LoaderStalled");
    }

    #[test]
    fn nothing_moving_and_nothing_waiting_is_idle() {
        let mut readings = healthy();
        readings[0] = Reading::default();
        for reading in &mut readings[1..] {
            reading.statuses[0].rows_per_minute = Some(0.0);
        }
        readings[1].statuses[0].backlog = Some(0);
        let judgement = judge("payments", &spec(), [false, true, true], &readings, now());
        assert_eq!(
            (judgement.status, judgement.reason),
            (ConditionStatus::True, "Idle")
        );
    }

    #[test]
    fn unreadable_workers_make_the_flow_unknown_and_missing_pods_stop_it() {
        let mut readings = healthy();
        readings[2] = Reading {
            pods: 1,
            statuses: vec![],
            errors: vec!["10.0.0.7:9090: connection refused".to_owned()],
        };
        let unknown = judged(&readings);
        assert_eq!(
            (unknown.status, unknown.reason),
            (ConditionStatus::Unknown, "StatusUnavailable")
        );
        assert!(
            unknown
                .message
                .contains("loader: 10.0.0.7:9090: connection refused")
        );
        readings[2] = Reading::default();
        let stopped = judged(&readings);
        assert_eq!(
            (stopped.status, stopped.reason),
            (ConditionStatus::False, "NotRunning")
        );
        assert!(stopped.message.starts_with("no loader pod is running"));
    }

    #[test]
    fn a_suspended_pipeline_is_not_flowing_by_choice() {
        let mut suspended = spec();
        suspended.suspend = true;
        let judgement = judge("payments", &suspended, [true; 3], &healthy(), now());
        assert_eq!(
            (judgement.status, judgement.reason),
            (ConditionStatus::False, "Suspended")
        );
    }

    #[test]
    fn several_streamers_add_up() {
        let mut readings = healthy();
        readings[1] = Reading {
            pods: 2,
            statuses: vec![streamer(10, 40), streamer(100, 60)],
            errors: vec![],
        };
        let data = judged(&readings).data;
        assert_eq!(data.consumer_lag, Some(100));
        assert_eq!(data.bronze_rows_per_minute, Some(5_981));
    }
}
