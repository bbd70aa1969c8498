//! The loader as a long-running service: audited runs on a schedule until shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Loader, RunReport, UnauditedFailure};
use crate::harness::Heartbeat;

/// When the loader runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// One run, then stop (a Job, a one-off command).
    Once,
    /// A run, then another this long after it ended, until shutdown.
    Every(Duration),
}

/// A run that failed, with its audit id; `metadata.load_audit` has the details whenever the
/// warehouse could take them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("load run {run_id} failed: {error}")]
pub struct RunFailed {
    /// The run's id in `metadata.load_audit`.
    pub run_id: Uuid,
    /// Why it failed.
    pub error: String,
}

impl From<UnauditedFailure> for RunFailed {
    fn from(failure: UnauditedFailure) -> Self {
        Self {
            run_id: failure.run_id,
            error: failure.error,
        }
    }
}

impl Loader {
    /// Runs on `schedule` until `cancel` fires. A run the warehouse could not even audit
    /// (it went away) is audited as soon as it answers again, before the next run. With
    /// [`Schedule::Once`] the run's failure is the result; on [`Schedule::Every`] a failed
    /// run is logged and audited, and the next run tries again.
    pub async fn serve(
        &self,
        schedule: Schedule,
        cancel: &CancellationToken,
    ) -> Result<(), RunFailed> {
        self.serve_with_heartbeat(schedule, cancel, &Heartbeat::default())
            .await
    }

    /// [`Loader::serve`], beating `heartbeat` before each run and throughout the pause after
    /// it: the pause is progress, a run that never ends is not.
    pub async fn serve_with_heartbeat(
        &self,
        schedule: Schedule,
        cancel: &CancellationToken,
        heartbeat: &Heartbeat,
    ) -> Result<(), RunFailed> {
        let mut unaudited: Vec<UnauditedFailure> = Vec::new();
        loop {
            heartbeat.beat();
            if !unaudited.is_empty() && self.audit_unreachable(&unaudited).await.is_ok() {
                unaudited.clear();
            }
            let mut outcome = self.run_once().await;
            log_outcome(&outcome);
            // The bank's files follow a successful run of the stream's, in a run of their own.
            if let (Some(files), Ok(RunReport { error: None, .. })) = (&self.bank_files, &outcome) {
                outcome = self.load_bank_files(files).await;
                log_outcome(&outcome);
            }
            let interval = match schedule {
                Schedule::Once => {
                    return match outcome {
                        Ok(RunReport {
                            run_id,
                            error: Some(error),
                            ..
                        }) => Err(RunFailed { run_id, error }),
                        Ok(_) => Ok(()),
                        Err(failure) => Err(failure.into()),
                    };
                }
                Schedule::Every(interval) => interval,
            };
            if let Err(failure) = outcome {
                unaudited.push(failure);
            }
            tokio::select! {
                () = heartbeat.beat_while(tokio::time::sleep(interval)) => {}
                () = cancel.cancelled() => return Ok(()),
            }
        }
    }
}

fn log_outcome(outcome: &Result<RunReport, UnauditedFailure>) {
    match outcome {
        Ok(report) => log_run(report),
        Err(failure) => tracing::error!(
            run_id = %failure.run_id,
            error = %failure.error,
            "load run failed and could not be audited yet"
        ),
    }
}

fn log_run(report: &RunReport) {
    tracing::info!(
        run_id = %report.run_id,
        status = %report.status,
        files_pending = report.files_pending,
        files_loaded = report.files_loaded,
        rows_read = report.stats.read,
        rows_loaded = report.rows_loaded,
        rows_rejected = report.stats.rejected_total(),
        rows_duplicate = report.rows_duplicate,
        "load run finished"
    );
}
