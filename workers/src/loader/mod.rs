//! `fintech load`: bronze Parquet into the silver tables of PostgreSQL, audited.
//!
//! A run finds the bronze files not loaded yet through the streamer's manifests, reads them,
//! validates and de-duplicates their rows, and loads them file by file with a binary `COPY`
//! straight into `raw.transactions`, leaving out the events it holds already.
//! [`Loader::load_in_one_transaction`] holds
//! the rule that makes every file load exactly once; every run, successful or not, leaves a
//! row in `metadata.load_audit`.

pub mod rows;
mod service;

pub use service::{RunFailed, Schedule};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use chrono::{DateTime, NaiveDate, Utc};
use object_store::path::Path;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use fintech_status_server::report::{RunOutcome, WorkerStatus};

use crate::bank::file::LineReason;
use crate::bank::load::{BankFiles, BankFilesError};
use crate::bronze::lake::{Lake, LakeError};
use crate::bronze::layout;
use crate::harness::Exposed;
use rows::{COPY_COLUMNS, EventTimeBounds, Lineage, RejectReason, RowStats, RunRows};

/// Key of the advisory lock that serialises load transactions across loaders.
pub const LOAD_LOCK: i64 = 0x6669_6e74_6563_6801;

/// What a run looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// The topic whose manifests are read.
    pub topic: String,
    /// At most this many files per run; the rest waits for the next run.
    pub max_files_per_run: usize,
    /// Event times trusted, relative to ingestion; other rows are rejected.
    pub event_time_bounds: EventTimeBounds,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            topic: "transactions".to_owned(),
            max_files_per_run: 2_000,
            event_time_bounds: EventTimeBounds::default(),
        }
    }
}

/// Errors of a load run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A statement failed or the warehouse is unreachable.
    #[error("database operation failed while {action}: {source}")]
    Database {
        /// What the loader was doing.
        action: &'static str,
        /// Why.
        source: sqlx::Error,
    },
    /// Listing or reading bronze failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// A file's columns are not the bronze schema's.
    #[error(transparent)]
    Schema(#[from] rows::SchemaMismatch),
    /// The bank's settlement files could not be read or stored.
    #[error(transparent)]
    BankFiles(#[from] BankFilesError),
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> LoadError {
    move |source| LoadError::Database { action, source }
}

/// How a finished run ended; the `status` of `metadata.load_audit` (where a run that has not
/// finished is `RUNNING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Every pending file found was loaded, or there was none.
    Success,
    /// The run's transaction was rolled back; its files stay pending.
    Failed,
}

impl RunStatus {
    /// The audit table's and the metrics' spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Outcome of one run, as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The audit row's id.
    pub run_id: Uuid,
    /// How it ended.
    pub status: RunStatus,
    /// Files found not yet loaded.
    pub files_pending: u64,
    /// Files loaded.
    pub files_loaded: u64,
    /// Files set aside in `metadata.quarantined_files` because they cannot be read.
    pub files_quarantined: u64,
    /// Rows inserted into `raw.transactions`.
    pub rows_loaded: u64,
    /// Rows already in the warehouse or repeated within the run.
    pub rows_duplicate: u64,
    /// Row counts.
    pub stats: RowStats,
    /// The error of a failed run.
    pub error: Option<String>,
    /// How `metadata.load_health` judges the run: `healthy`, `quarantined_files`,
    /// `silent_failure` or `explicit_failure`.
    pub health: String,
}

/// A run that could not even be audited, because the warehouse was unreachable; it is
/// audited as soon as the warehouse answers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnauditedFailure {
    /// The run's id.
    pub run_id: Uuid,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The audit row's `mode`: `incremental` or `replay`.
    pub mode: &'static str,
    /// Why it failed.
    pub error: String,
}

/// Metrics of the loader, under `fintech_loader_*`.
#[derive(Clone)]
pub struct LoaderMetrics {
    runs: Family<RunLabels, Counter>,
    files_loaded: Counter,
    files_quarantined: Counter,
    files_pending: Gauge,
    rows_loaded: Counter,
    rows_rejected: Family<ReasonLabels, Counter>,
    rows_duplicate: Counter,
    last_success: Gauge,
    run_duration: Histogram,
    /// When the run in progress started (Unix seconds); 0 between runs.
    running_since: Gauge,
    /// The last finished run, for `/status`.
    last_run: Arc<Mutex<Option<RunOutcome>>>,
    bank_files_loaded: Counter,
    bank_lines_loaded: Counter,
    bank_lines_rejected: Family<ReasonLabels, Counter>,
    bank_unreconciled: Family<OutcomeLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The outcomes of `marts.bank_reconciliation` other than `matched`.
pub const UNRECONCILED_OUTCOMES: [&str; 5] = [
    "missing_at_bank",
    "missing_in_stream",
    "amount_mismatch",
    "status_mismatch",
    "duplicated_at_bank",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    status: &'static str,
    health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

impl Default for LoaderMetrics {
    fn default() -> Self {
        let metrics = Self {
            runs: Family::default(),
            files_loaded: Counter::default(),
            files_quarantined: Counter::default(),
            files_pending: Gauge::default(),
            rows_loaded: Counter::default(),
            rows_rejected: Family::default(),
            rows_duplicate: Counter::default(),
            last_success: Gauge::default(),
            run_duration: Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            running_since: Gauge::default(),
            last_run: Arc::default(),
            bank_files_loaded: Counter::default(),
            bank_lines_loaded: Counter::default(),
            bank_lines_rejected: Family::default(),
            bank_unreconciled: Family::default(),
        };
        // Every outcome and reason starts at 0, so that the first failed or silent run, or
        // the first rejection, is an increase that alerts and rates see, not a new series.
        for (status, health) in [
            (RunStatus::Success, "healthy"),
            (RunStatus::Success, "quarantined_files"),
            (RunStatus::Success, "silent_failure"),
            (RunStatus::Failed, EXPLICIT_FAILURE),
        ] {
            let _ = metrics.runs.get_or_create(&RunLabels {
                status: status.as_str(),
                health: health.to_owned(),
            });
        }
        for reason in RejectReason::ALL {
            let _ = metrics.rows_rejected.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        for reason in LineReason::ALL {
            let _ = metrics.bank_lines_rejected.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        metrics.set_unreconciled(&[]);
        metrics
    }
}

/// The health of a run the warehouse could not even audit.
const EXPLICIT_FAILURE: &str = "explicit_failure";

impl LoaderMetrics {
    fn run_started(&self) {
        self.running_since.set(Utc::now().timestamp());
    }

    fn run_ended(&self, outcome: &Result<RunReport, UnauditedFailure>) {
        self.running_since.set(0);
        let finished_at = Utc::now().timestamp();
        let last = match outcome {
            Ok(report) => {
                self.run_finished(report);
                RunOutcome {
                    id: report.run_id.to_string(),
                    finished_at,
                    health: report.health.clone(),
                    rows: report.rows_loaded,
                    error: report.error.clone(),
                }
            }
            Err(failure) => {
                self.runs
                    .get_or_create(&RunLabels {
                        status: RunStatus::Failed.as_str(),
                        health: EXPLICIT_FAILURE.to_owned(),
                    })
                    .inc();
                RunOutcome {
                    id: failure.run_id.to_string(),
                    finished_at,
                    health: EXPLICIT_FAILURE.to_owned(),
                    rows: 0,
                    error: Some(failure.error.clone()),
                }
            }
        };
        *self.last_run.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }

    fn run_finished(&self, report: &RunReport) {
        self.runs
            .get_or_create(&RunLabels {
                status: report.status.as_str(),
                health: report.health.clone(),
            })
            .inc();
        self.files_pending
            .set(i64::try_from(report.files_pending).unwrap_or(i64::MAX));
        self.files_loaded.inc_by(report.files_loaded);
        self.files_quarantined.inc_by(report.files_quarantined);
        self.rows_loaded.inc_by(report.rows_loaded);
        for (reason, rows) in &report.stats.rejected {
            self.rows_rejected
                .get_or_create(&ReasonLabels { reason })
                .inc_by(*rows);
        }
        self.rows_duplicate.inc_by(report.rows_duplicate);
        if report.status == RunStatus::Success {
            self.last_success.set(Utc::now().timestamp());
        }
    }
}

impl LoaderMetrics {
    fn bank_run_finished(&self, report: &RunReport) {
        self.bank_files_loaded.inc_by(report.files_loaded);
        self.bank_lines_loaded.inc_by(report.rows_loaded);
        for (reason, lines) in &report.stats.rejected {
            self.bank_lines_rejected
                .get_or_create(&ReasonLabels { reason })
                .inc_by(*lines);
        }
    }

    /// Sets the unreconciled items of the latest reconciled day; outcomes not given are 0.
    fn set_unreconciled(&self, items: &[(String, i64)]) {
        for outcome in UNRECONCILED_OUTCOMES {
            let n = items
                .iter()
                .find(|(o, _)| o == outcome)
                .map_or(0, |(_, n)| *n);
            self.bank_unreconciled
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                })
                .set(n);
        }
    }
}

impl Exposed for LoaderMetrics {
    /// Registers the metrics under `fintech_loader_*`.
    fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("fintech_loader");
        registry.register(
            "runs",
            "Load runs, by status (SUCCESS, FAILED) and health as metadata.load_health calls \
             it (healthy, quarantined_files, silent_failure, explicit_failure)",
            self.runs.clone(),
        );
        registry.register(
            "files_pending",
            "Bronze files the last run found not yet loaded",
            self.files_pending.clone(),
        );
        registry.register(
            "files_loaded",
            "Bronze files loaded",
            self.files_loaded.clone(),
        );
        registry.register(
            "files_quarantined",
            "Bronze files set aside because they cannot be read (see metadata.quarantined_files)",
            self.files_quarantined.clone(),
        );
        registry.register(
            "rows_loaded",
            "Rows inserted into raw.transactions",
            self.rows_loaded.clone(),
        );
        registry.register(
            "rows_rejected",
            "Rows refused by validation, by reason (see raw.rejected_transactions)",
            self.rows_rejected.clone(),
        );
        registry.register(
            "rows_duplicate",
            "Rows already loaded or repeated",
            self.rows_duplicate.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When a run last succeeded (Unix time)",
            self.last_success.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Time a load run took, audit included",
            self.run_duration.clone(),
        );
        registry.register(
            "bank_files_loaded",
            "Bank settlement files loaded (see metadata.loaded_bank_files)",
            self.bank_files_loaded.clone(),
        );
        registry.register(
            "bank_lines_loaded",
            "Bank settlement lines inserted into raw.bank_settlements",
            self.bank_lines_loaded.clone(),
        );
        registry.register(
            "bank_lines_rejected",
            "Bank settlement lines that cannot be read, by reason (see raw.rejected_bank_lines)",
            self.bank_lines_rejected.clone(),
        );
        registry.register(
            "bank_unreconciled_items",
            "Transactions of the latest reconciled day that the bank and the stream disagree \
             on, by outcome, as the last transform left marts.bank_reconciliation_daily",
            self.bank_unreconciled.clone(),
        );
    }

    /// What the loader last did, for its `/status`: rows inserted into silver, the last
    /// successful run, the files waiting, the last run and the one in progress.
    fn status(&self) -> WorkerStatus {
        let last_run = self
            .last_run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        WorkerStatus {
            worker: "loader".to_owned(),
            rows_total: self.rows_loaded.get(),
            last_progress_at: Some(self.last_success.get()).filter(|&at| at > 0),
            backlog: last_run
                .is_some()
                .then(|| u64::try_from(self.files_pending.get()).unwrap_or(0)),
            last_run,
            running_since: Some(self.running_since.get()).filter(|&at| at > 0),
            ..WorkerStatus::default()
        }
    }
}

/// Which files a run loads.
#[derive(Debug)]
enum Mode {
    /// Those the manifests announce and no run has loaded.
    Incremental,
    /// These, loaded before or not.
    Replay(Vec<Path>),
    /// The bank's settlement files not loaded yet.
    BankFiles(BankFiles),
}

impl Mode {
    /// The `mode` of the audit row.
    fn as_str(&self) -> &'static str {
        match self {
            Mode::Incremental => "incremental",
            Mode::Replay(_) => "replay",
            Mode::BankFiles(_) => "bank_files",
        }
    }
}

/// A bronze file to load.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingFile {
    path: Path,
}

/// What discovery found.
#[derive(Debug, Default)]
struct Discovery {
    files: Vec<PendingFile>,
    /// Manifests (path, date) that are complete once this run's files are loaded.
    manifests: Vec<(String, NaiveDate)>,
    /// Manifests that cannot be read, set aside.
    quarantined: Vec<Quarantined>,
}

/// Counts of a load transaction.
#[derive(Debug, Default)]
struct Loaded {
    files_pending: u64,
    files_loaded: u64,
    files_quarantined: u64,
    rows_loaded: u64,
    stats: RowStats,
}

/// The loader: one warehouse, one lake.
pub struct Loader {
    pool: PgPool,
    lake: Lake,
    config: LoaderConfig,
    metrics: LoaderMetrics,
    bank_files: Option<BankFiles>,
}

impl Loader {
    /// A loader from `lake` into the warehouse of `pool`.
    pub fn new(pool: PgPool, lake: Lake, config: LoaderConfig, metrics: LoaderMetrics) -> Self {
        Self {
            pool,
            lake,
            config,
            metrics,
            bank_files: None,
        }
    }

    /// The same loader, also loading the bank's settlement files from `files` after each
    /// scheduled run ([`Loader::load_bank_files`]).
    pub fn with_bank_files(mut self, files: BankFiles) -> Self {
        self.bank_files = Some(files);
        self
    }

    /// One audited run (mode `bank_files`) that loads the settlement files under `files`
    /// that no run has loaded or set aside yet: each exactly once, its good lines into
    /// `raw.bank_settlements`, its bad ones into `raw.rejected_bank_lines`, a file without
    /// the header into `metadata.quarantined_files`. Then reads how many items the last
    /// reconciliation left unmatched, for the metrics.
    pub async fn load_bank_files(&self, files: &BankFiles) -> Result<RunReport, UnauditedFailure> {
        let outcome = self.run_audited(Mode::BankFiles(files.clone())).await;
        if let Ok(report) = &outcome {
            self.metrics.bank_run_finished(report);
            match unreconciled(&self.pool).await {
                Ok(items) => self.metrics.set_unreconciled(&items),
                Err(error) => tracing::warn!(%error, "cannot read the last reconciliation"),
            }
        }
        outcome
    }

    /// One audited run of the files the manifests announce and no run has loaded yet.
    /// `Err` means the warehouse could not even take the audit row.
    pub async fn run_once(&self) -> Result<RunReport, UnauditedFailure> {
        self.run(Mode::Incremental).await
    }

    /// Loads every bronze file of the event dates `from..=to` again, whether loaded before or
    /// not, in audited runs of at most `max_files_per_run` files. Rows already in silver are
    /// kept as they are (counted as duplicates); rows rejected before are validated again, so
    /// after a fix to validation they are accepted and their old rejections removed. It stops
    /// at the first failed run and returns the reports so far.
    pub async fn replay(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<RunReport>, UnauditedFailure> {
        let files = self
            .lake
            .list_days(layout::TRANSACTIONS_PREFIX, from, to)
            .await
            .map_err(|e| self.unaudited(e.into()))?;
        let mut reports = Vec::new();
        for chunk in files.chunks(self.config.max_files_per_run.max(1)) {
            let report = self.run(Mode::Replay(chunk.to_vec())).await?;
            let failed = report.status == RunStatus::Failed;
            reports.push(report);
            if failed {
                break;
            }
        }
        Ok(reports)
    }

    /// An [`UnauditedFailure`] for an error met before a replay run could start.
    fn unaudited(&self, error: LoadError) -> UnauditedFailure {
        UnauditedFailure {
            run_id: Uuid::new_v4(),
            started_at: Utc::now(),
            mode: Mode::Replay(Vec::new()).as_str(),
            error: error.to_string(),
        }
    }

    /// One audited run, reported in the metrics and `/status` from its start to its end.
    async fn run(&self, mode: Mode) -> Result<RunReport, UnauditedFailure> {
        self.metrics.run_started();
        let started = Instant::now();
        let outcome = self.run_audited(mode).await;
        self.metrics
            .run_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.run_ended(&outcome);
        outcome
    }

    /// One audited run. The audit row is written first (status `RUNNING`) and completed in
    /// its own transaction whatever happens, so a failed run is as visible as a good one.
    async fn run_audited(&self, mode: Mode) -> Result<RunReport, UnauditedFailure> {
        let run_id = Uuid::new_v4();
        let started_at = Utc::now();
        let started = Instant::now();
        let mode_name = mode.as_str();
        let unaudited = |error: LoadError| UnauditedFailure {
            run_id,
            started_at,
            mode: mode_name,
            error: error.to_string(),
        };
        sqlx::query(
            "insert into metadata.load_audit (run_id, started_at, status, loader_version, host, mode) \
             values ($1, $2, 'RUNNING', $3, $4, $5)",
        )
        .bind(run_id)
        .bind(started_at)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(host())
        .bind(mode.as_str())
        .execute(&self.pool)
        .await
        .map_err(db("writing the audit row"))
        .map_err(unaudited)?;

        let result = self.load_in_one_transaction(run_id, mode).await;
        let (loaded, error) = match result {
            Ok(loaded) => (loaded, None),
            Err(error) => {
                tracing::error!(%run_id, %error, "load run failed");
                (Loaded::default(), Some(error.to_string()))
            }
        };
        let rows_duplicate =
            loaded.stats.duplicate_in_run + (loaded.stats.accepted - loaded.rows_loaded);
        let mut report = RunReport {
            run_id,
            status: if error.is_none() {
                RunStatus::Success
            } else {
                RunStatus::Failed
            },
            files_pending: loaded.files_pending,
            files_loaded: loaded.files_loaded,
            files_quarantined: loaded.files_quarantined,
            rows_loaded: loaded.rows_loaded,
            rows_duplicate,
            stats: loaded.stats,
            error,
            health: String::new(),
        };
        report.health = self
            .finish_audit(&report, started.elapsed())
            .await
            .map_err(unaudited)?;
        Ok(report)
    }

    /// Audits runs that failed while the warehouse was unreachable. A run whose `RUNNING`
    /// row was written before the warehouse went away is marked FAILED; a run that never got
    /// its row gets one. A row that is finished already is left as it is.
    pub async fn audit_unreachable(&self, failures: &[UnauditedFailure]) -> Result<(), LoadError> {
        for failure in failures {
            sqlx::query(
                "insert into metadata.load_audit \
                 (run_id, started_at, finished_at, duration_ms, status, error, loader_version, host, mode) \
                 values ($1, $2, now(), 0, 'FAILED', $3, $4, $5, $6) \
                 on conflict (run_id) do update set \
                     finished_at = excluded.finished_at, \
                     duration_ms = (extract(epoch from excluded.finished_at - load_audit.started_at) * 1000)::bigint, \
                     status = 'FAILED', \
                     error = excluded.error \
                 where load_audit.status = 'RUNNING'",
            )
            .bind(failure.run_id)
            .bind(failure.started_at)
            .bind(&failure.error)
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(host())
            .bind(failure.mode)
            .execute(&self.pool)
            .await
            .map_err(db("auditing a run that failed while the warehouse was unreachable"))?;
        }
        Ok(())
    }

    /// Completes the audit row and its quality metrics; returns the run's health, as
    /// `metadata.load_health` judges the completed row (the view owns that judgement).
    async fn finish_audit(
        &self,
        report: &RunReport,
        duration: Duration,
    ) -> Result<String, LoadError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("completing the audit row"))?;
        sqlx::query(
            "update metadata.load_audit set finished_at = now(), duration_ms = $2, status = $3, \
             files_pending = $4, files_loaded = $5, rows_read = $6, rows_loaded = $7, \
             rows_rejected = $8, rows_duplicate = $9, error = $10, files_quarantined = $11 \
             where run_id = $1",
        )
        .bind(report.run_id)
        .bind(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        .bind(report.status.as_str())
        .bind(count(report.files_pending))
        .bind(count(report.files_loaded))
        .bind(count(report.stats.read))
        .bind(count(report.rows_loaded))
        .bind(count(report.stats.rejected_total()))
        .bind(count(report.rows_duplicate))
        .bind(&report.error)
        .bind(count(report.files_quarantined))
        .execute(&mut *tx)
        .await
        .map_err(db("completing the audit row"))?;

        let mut metrics: Vec<(&str, String, u64)> = vec![
            ("rows_read", String::new(), report.stats.read),
            (
                "duplicates_in_run",
                String::new(),
                report.stats.duplicate_in_run,
            ),
            (
                "duplicates_already_loaded",
                String::new(),
                report.rows_duplicate - report.stats.duplicate_in_run,
            ),
            ("invalid_rows", String::new(), report.stats.rejected_total()),
        ];
        for (reason, n) in &report.stats.rejected {
            metrics.push(("invalid_rows", (*reason).to_owned(), *n));
        }
        for (column, n) in &report.stats.nulls {
            metrics.push(("nulls", (*column).to_owned(), *n));
        }
        let (names, dimensions, values): (Vec<&str>, Vec<String>, Vec<i64>) =
            metrics.into_iter().fold(
                (vec![], vec![], vec![]),
                |(mut a, mut b, mut c), (name, dimension, value)| {
                    a.push(name);
                    b.push(dimension);
                    c.push(count(value));
                    (a, b, c)
                },
            );
        sqlx::query(
            "insert into metadata.data_quality_metrics (run_id, metric, dimension, value) \
             select $1, * from unnest($2::text[], $3::text[], $4::bigint[])",
        )
        .bind(report.run_id)
        .bind(&names)
        .bind(&dimensions)
        .bind(&values)
        .execute(&mut *tx)
        .await
        .map_err(db("writing the quality metrics"))?;
        let health: String =
            sqlx::query_scalar("select health from metadata.load_health where run_id = $1")
                .bind(report.run_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("reading the run's health"))?;
        tx.commit().await.map_err(db("completing the audit row"))?;
        Ok(health)
    }

    /// Loads every pending file in one transaction.
    ///
    /// **Invariant: incremental runs load a bronze file exactly once.** Discovery, the rows and the
    /// `metadata.loaded_files` rows of a run commit together, under an advisory lock that
    /// serialises loaders: a run that dies half way leaves nothing, a second loader sees the
    /// first one's files as loaded, and an event that arrives in two files (a producer retry)
    /// stays one row: before each file's `COPY`, the run asks for the event ids
    /// `raw.transactions` holds already and leaves those rows out. The lock is what makes that
    /// question's answer hold until the commit; a writer that skipped it would meet the
    /// primary key, which fails the run rather than store an event twice.
    ///
    /// A replay names its files instead of discovering them; it replaces their rejections,
    /// since validation may have changed, and records them as loaded again.
    async fn load_in_one_transaction(&self, run_id: Uuid, mode: Mode) -> Result<Loaded, LoadError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting the load transaction"))?;
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(LOAD_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db("taking the load lock"))?;
        // The server's clock once the lock is held, not the transaction's start: see
        // `Lineage::loaded_at`.
        let loaded_at: DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the warehouse's clock"))?;
        let lineage = Lineage { run_id, loaded_at };
        let replay = matches!(mode, Mode::Replay(_));
        let discovery = match mode {
            Mode::Incremental => self.discover(&mut tx).await?,
            Mode::Replay(files) => Discovery {
                files: files.into_iter().map(|path| PendingFile { path }).collect(),
                ..Discovery::default()
            },
            Mode::BankFiles(files) => {
                let load = files.load_new(&mut tx, run_id).await?;
                let quarantined: Vec<Quarantined> = load
                    .set_aside
                    .into_iter()
                    .map(|(path, reason, error)| Quarantined {
                        path,
                        reason,
                        error,
                    })
                    .collect();
                insert_quarantined(&mut tx, &quarantined, run_id).await?;
                tx.commit().await.map_err(db("committing the bank files"))?;
                let rejected: u64 = load.rejected.values().sum();
                return Ok(Loaded {
                    files_pending: load.files_pending,
                    files_loaded: load.files_loaded,
                    files_quarantined: quarantined.len() as u64,
                    rows_loaded: load.lines_loaded,
                    stats: RowStats {
                        read: load.lines_read,
                        accepted: load.lines_read - rejected,
                        rejected: load.rejected,
                        ..RowStats::default()
                    },
                });
            }
        };
        let mut loaded = Loaded {
            files_pending: discovery.files.len() as u64,
            ..Loaded::default()
        };
        // Rows go to the server file by file, so a run holds one file's rows, not all of them.
        let mut rows = RunRows::new(self.config.event_time_bounds);
        let (files, mut quarantined) = self
            .copy_files(&discovery.files, &mut tx, &mut rows, lineage, &mut loaded)
            .await?;

        if replay {
            let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
            sqlx::query("delete from raw.rejected_transactions where bronze_file = any($1)")
                .bind(&paths)
                .execute(&mut *tx)
                .await
                .map_err(db("removing the replayed files' old rejections"))?;
        }
        insert_rejections(&mut tx, &rows, run_id).await?;
        insert_loaded(&mut tx, &files, &discovery.manifests, run_id).await?;
        quarantined.extend(discovery.quarantined);
        for set_aside in &quarantined {
            tracing::warn!(
                object = %set_aside.path,
                reason = set_aside.reason.as_str(),
                error = %set_aside.error,
                "bronze object set aside; the others load"
            );
        }
        insert_quarantined(&mut tx, &quarantined, run_id).await?;
        tx.commit().await.map_err(db("committing the load"))?;
        loaded.files_loaded = files.len() as u64;
        loaded.files_quarantined = quarantined.len() as u64;
        loaded.stats = rows.stats;
        Ok(loaded)
    }

    /// Reads `pending`, validates their rows into `rows` and copies the accepted ones the
    /// warehouse does not hold yet into `raw.transactions`, one file at a time, counting them
    /// in `loaded`. Returns each loaded file's record and the files set aside because they
    /// cannot be read.
    ///
    /// The server stores one file's rows while the next file is read and validated: the
    /// server's side is most of a load's time, and this hides the loader's own behind it.
    async fn copy_files(
        &self,
        pending: &[PendingFile],
        tx: &mut PgConnection,
        rows: &mut RunRows,
        lineage: Lineage,
        loaded: &mut Loaded,
    ) -> Result<(Vec<LoadedFile>, Vec<Quarantined>), LoadError> {
        let mut files = Vec::with_capacity(pending.len());
        let mut quarantined = Vec::new();
        let mut following = pending.iter();
        let mut next = match following.next() {
            Some(file) => Some(self.read_and_validate(file, rows, lineage).await?),
            None => None,
        };
        while let Some(read) = next.take() {
            match read {
                Ok(file) => files.push(file),
                Err(set_aside) => quarantined.push(set_aside),
            }
            let ids = rows.pending_event_ids();
            let data = if ids.is_empty() {
                None
            } else {
                let held: HashSet<Uuid> = sqlx::query_scalar(
                    "select event_id from raw.transactions where event_id = any($1)",
                )
                .bind(ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("looking up the events loaded already"))?
                .into_iter()
                .collect();
                rows.take_copy_data(&held).map(|(data, _)| data)
            };
            next = match (data, following.next()) {
                (Some(data), Some(file)) => {
                    let (copied, read) = tokio::join!(
                        copy_rows(&mut *tx, data),
                        self.read_and_validate(file, rows, lineage)
                    );
                    loaded.rows_loaded += copied?;
                    Some(read?)
                }
                (Some(data), None) => {
                    loaded.rows_loaded += copy_rows(&mut *tx, data).await?;
                    None
                }
                (None, Some(file)) => Some(self.read_and_validate(file, rows, lineage).await?),
                (None, None) => None,
            };
        }
        Ok((files, quarantined))
    }

    /// Reads `file` and validates its rows into `rows`: the file's record, or why it is set
    /// aside.
    async fn read_and_validate(
        &self,
        file: &PendingFile,
        rows: &mut RunRows,
        lineage: Lineage,
    ) -> Result<Result<LoadedFile, Quarantined>, LoadError> {
        let WholeFile {
            size,
            etag,
            batches,
        } = match self.read_whole(&file.path).await? {
            Ok(read) => read,
            Err(set_aside) => return Ok(Err(set_aside)),
        };
        let before = rows.stats.read;
        for batch in &batches {
            rows.add_batch(file.path.as_ref(), batch, lineage)?;
        }
        Ok(Ok((
            file.path.to_string(),
            size,
            etag,
            count(rows.stats.read - before),
        )))
    }

    /// Reads a whole bronze file and checks its columns before any of its rows is used, so
    /// that a file that cannot be read adds nothing to the run. `Ok(Err(_))` is a file to set
    /// aside; `Err(_)` fails the run (the store could not be reached: retried next run).
    async fn read_whole(&self, path: &Path) -> Result<Result<WholeFile, Quarantined>, LoadError> {
        let set_aside = |reason, error: &dyn std::fmt::Display| Quarantined {
            path: path.to_string(),
            reason,
            error: error.to_string(),
        };
        let parquet = match self.lake.read_parquet(path).await {
            Ok(parquet) => parquet,
            Err(
                error @ LakeError::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                },
            ) => return Ok(Err(set_aside(QuarantineReason::Missing, &error))),
            Err(error @ LakeError::Parquet { .. }) => {
                return Ok(Err(set_aside(QuarantineReason::Unreadable, &error)));
            }
            Err(error) => return Err(error.into()),
        };
        let (size, etag) = (parquet.size as i64, parquet.etag.clone());
        let batches = match parquet.batches().collect::<Result<Vec<_>, _>>() {
            Ok(batches) => batches,
            Err(error) => return Ok(Err(set_aside(QuarantineReason::Unreadable, &error))),
        };
        if let Err(error) = batches
            .iter()
            .try_for_each(|batch| rows::check_columns(path.as_ref(), batch))
        {
            return Ok(Err(set_aside(QuarantineReason::WrongSchema, &error)));
        }
        Ok(Ok(WholeFile {
            size,
            etag,
            batches,
        }))
    }

    /// Finds the files not loaded yet. Manifests are listed only in the folders of the
    /// latest loaded day and after (one day of overlap covers batches written around
    /// midnight); a manifest already loaded is skipped without being read.
    ///
    /// Folder dates come from the writers' clocks, so the mark is the latest loaded day no
    /// later than today by the warehouse's clock: a folder a skewed writer dated days ahead
    /// is loaded like any other, but it cannot move the mark past today and hide the
    /// correctly dated folders written after it.
    async fn discover(&self, tx: &mut PgConnection) -> Result<Discovery, LoadError> {
        let (latest, today): (Option<NaiveDate>, NaiveDate) = sqlx::query_as(
            "select (select max(manifest_date) from metadata.loaded_manifests \
                     where manifest_date <= (now() at time zone 'UTC')::date), \
                    (now() at time zone 'UTC')::date",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db("reading the latest loaded manifest date"))?;
        let since = latest.map(|date| date - chrono::Duration::days(1));
        let dates = self.lake.manifest_days(&self.config.topic).await?;
        if let Some((ahead, _)) = dates
            .last()
            .filter(|(date, _)| *date > today + chrono::Duration::days(1))
        {
            tracing::warn!(
                folder_date = %ahead,
                %today,
                "a manifest folder is dated ahead of the warehouse's clock; a writer's clock is wrong"
            );
        }
        let dates = dates
            .into_iter()
            .filter(|(date, _)| since.is_none_or(|since| *date >= since));

        let mut discovery = Discovery::default();
        let mut announced = HashSet::new();
        for (date, folder) in dates {
            let manifests = self.lake.manifests_in(&folder).await?;
            let names: Vec<String> = manifests.iter().map(ToString::to_string).collect();
            let done: HashSet<String> = sqlx::query_scalar(
                "select path from metadata.loaded_manifests where path = any($1)",
            )
            .bind(&names)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading loaded manifests"))?
            .into_iter()
            .collect();
            for manifest in manifests.into_iter().filter(|m| !done.contains(m.as_ref())) {
                if discovery.files.len() >= self.config.max_files_per_run {
                    return Ok(discovery);
                }
                let record = match self.lake.read_manifest(&manifest).await {
                    Ok(record) => record,
                    Err(error @ LakeError::CorruptManifest { .. }) => {
                        // Its files are still in bronze's day folders, where a replay of
                        // the day finds them.
                        discovery.quarantined.push(Quarantined {
                            path: manifest.to_string(),
                            reason: QuarantineReason::Unreadable,
                            error: error.to_string(),
                        });
                        discovery.manifests.push((manifest.to_string(), date));
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let candidates: Vec<String> = record
                    .files
                    .into_iter()
                    .filter(|f| self.lake.is_transactions_file(f))
                    .collect();
                let already: HashSet<String> = sqlx::query_scalar(
                    "select path from metadata.loaded_files where path = any($1)",
                )
                .bind(&candidates)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("reading loaded files"))?
                .into_iter()
                .collect();
                // Two manifests may announce one file (a batch replayed across midnight, a
                // redrive announced twice); it is loaded once.
                discovery.files.extend(
                    candidates
                        .into_iter()
                        .filter(|f| !already.contains(f) && announced.insert(f.clone()))
                        .map(|f| PendingFile {
                            path: Path::from(f),
                        }),
                );
                discovery.manifests.push((manifest.to_string(), date));
            }
        }
        Ok(discovery)
    }
}

/// Why a bronze file was set aside; the `reason` of `metadata.quarantined_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineReason {
    /// Not readable Parquet: corrupt or truncated.
    Unreadable,
    /// Parquet, but without the bronze columns and types.
    WrongSchema,
    /// A manifest announces it, but the store has no such object.
    Missing,
}

impl QuarantineReason {
    /// The stored reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::WrongSchema => "wrong_schema",
            Self::Missing => "missing",
        }
    }
}

/// A bronze file read whole: its size, ETag and record batches.
/// A loaded file's row of `metadata.loaded_files`: its path, size, ETag and rows read.
type LoadedFile = (String, i64, Option<String>, i64);

struct WholeFile {
    size: i64,
    etag: Option<String>,
    batches: Vec<RecordBatch>,
}

/// A bronze file set aside by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quarantined {
    path: String,
    reason: QuarantineReason,
    error: String,
}

/// Records the files set aside; a file set aside again keeps one row, with the latest run.
async fn insert_quarantined(
    tx: &mut PgConnection,
    quarantined: &[Quarantined],
    run_id: Uuid,
) -> Result<(), LoadError> {
    if quarantined.is_empty() {
        return Ok(());
    }
    let paths: Vec<&str> = quarantined.iter().map(|q| q.path.as_str()).collect();
    let reasons: Vec<&str> = quarantined.iter().map(|q| q.reason.as_str()).collect();
    let errors: Vec<&str> = quarantined.iter().map(|q| q.error.as_str()).collect();
    sqlx::query(
        "insert into metadata.quarantined_files (path, reason, error, run_id) \
         select path, reason, error, $4 from unnest($1::text[], $2::text[], $3::text[]) \
             as q(path, reason, error) \
         on conflict (path) do update set reason = excluded.reason, error = excluded.error, \
             run_id = excluded.run_id, quarantined_at = now()",
    )
    .bind(&paths)
    .bind(&reasons)
    .bind(&errors)
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(db("recording the files set aside"))?;
    Ok(())
}

async fn insert_rejections(
    tx: &mut PgConnection,
    rows: &RunRows,
    run_id: Uuid,
) -> Result<(), LoadError> {
    if rows.rejections.is_empty() {
        return Ok(());
    }
    let r = &rows.rejections;
    sqlx::query(
        "insert into raw.rejected_transactions \
         (bronze_file, kafka_partition, kafka_offset, event_id, transaction_id, reason, row_data, load_run_id) \
         select f, p, o, e, t, r, d::jsonb, $8 \
         from unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) \
              as u(f, p, o, e, t, r, d) \
         on conflict do nothing",
    )
    .bind(r.iter().map(|x| x.bronze_file.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.partition).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.offset).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.event_id.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.transaction_id.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.reason.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.row.to_string()).collect::<Vec<_>>())
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(db("inserting rejected rows"))?;
    Ok(())
}

async fn insert_loaded(
    tx: &mut PgConnection,
    files: &[LoadedFile],
    manifests: &[(String, NaiveDate)],
    run_id: Uuid,
) -> Result<(), LoadError> {
    sqlx::query(
        "insert into metadata.loaded_files (path, size_bytes, etag, rows_read, run_id) \
         select p, s, e, r, $5 from unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) as u(p, s, e, r) \
         on conflict (path) do update set size_bytes = excluded.size_bytes, etag = excluded.etag, \
         rows_read = excluded.rows_read, run_id = excluded.run_id, loaded_at = now()",
    )
    .bind(files.iter().map(|f| f.0.clone()).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.1).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.2.clone()).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.3).collect::<Vec<_>>())
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(db("recording loaded files"))?;
    // A file set aside before and loaded now (by a replay, after it was restored) is no
    // longer quarantined.
    sqlx::query("delete from metadata.quarantined_files where path = any($1)")
        .bind(files.iter().map(|f| f.0.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(db("clearing loaded files from the quarantine"))?;
    sqlx::query(
        "insert into metadata.loaded_manifests (path, manifest_date, run_id) \
         select p, d, $3 from unnest($1::text[], $2::date[]) as u(p, d) on conflict do nothing",
    )
    .bind(manifests.iter().map(|m| m.0.clone()).collect::<Vec<_>>())
    .bind(manifests.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(db("recording loaded manifests"))?;
    Ok(())
}

/// Copies binary `COPY` rows into `raw.transactions`; returns how many the server stored.
async fn copy_rows(tx: &mut PgConnection, data: Vec<u8>) -> Result<u64, LoadError> {
    let mut copy = tx
        .copy_in_raw(&format!(
            "copy raw.transactions ({}) from stdin (format binary)",
            COPY_COLUMNS.as_str()
        ))
        .await
        .map_err(db("starting COPY"))?;
    if let Err(error) = copy.send(data).await {
        // The transaction rolls back anyway; failing the COPY keeps the connection usable
        // for it.
        let _ = copy.abort(error.to_string()).await;
        return Err(db("sending COPY data")(error));
    }
    copy.finish().await.map_err(db("finishing COPY"))
}

/// Items of the latest reconciled day that did not match, by outcome, as the last transform
/// left `marts.bank_reconciliation_daily`; empty before the first transform.
async fn unreconciled(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let built: bool =
        sqlx::query_scalar("select to_regclass('marts.bank_reconciliation_daily') is not null")
            .fetch_one(pool)
            .await?;
    if !built {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "select outcome, sum(count_items)::bigint from marts.bank_reconciliation_daily \
         where settlement_date = (select max(settlement_date) from marts.bank_reconciliation_daily) \
         group by outcome",
    )
    .fetch_all(pool)
    .await
}

/// A count as PostgreSQL's `bigint`, saturating instead of wrapping.
pub fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn host() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".to_owned())
}
