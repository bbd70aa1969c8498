//! Running the project: seeds, then models in dependency order (each in its own
//! transaction), then data tests; every step recorded in `metadata.transform_runs`.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use chrono::Utc;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::warehouse::copy_text::{end_copy_row, push_text};

use super::project::{DataTest, Materialized, Model, Project, SEEDS_SCHEMA, Seed};

/// Key of the session advisory lock that keeps two transform runs apart.
const TRANSFORM_LOCK: i64 = 0x6669_6e74_6563_6802;
/// Failing rows shown per failed test.
const SAMPLE_ROWS: i64 = 5;

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformOptions {
    /// Run this model and its descendants only.
    pub select: Option<String>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Days before the latest loaded change that an incremental run re-reads.
    pub lookback_days: u32,
}

/// What a node of the run is; the `kind` of `metadata.transform_runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A CSV loaded into `seeds`.
    Seed,
    /// A SQL model built into its schema.
    Model,
    /// A data test: a query that must return no row.
    Test,
}

impl NodeKind {
    /// The table's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Model => "model",
            Self::Test => "test",
        }
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a node ended; the `status` of `metadata.transform_runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// Built, loaded, or (a test) no failing row.
    Success,
    /// An error, or (a test) failing rows.
    Failed,
    /// Not run because something upstream failed.
    Skipped,
}

impl NodeStatus {
    /// The table's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::Skipped => "SKIPPED",
        }
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Outcome of one seed, model or test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResult {
    /// Seed, model or test name.
    pub node: String,
    /// What it is.
    pub kind: NodeKind,
    /// How it ended.
    pub status: NodeStatus,
    /// Rows built (models, seeds) or failing rows (tests).
    pub rows: Option<i64>,
    /// The error, or a failed test's sample rows.
    pub error: Option<String>,
}

/// Outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformReport {
    /// The run's id in `metadata.transform_runs`.
    pub run_id: Uuid,
    /// Every node, in the order it ran.
    pub nodes: Vec<NodeResult>,
}

impl TransformReport {
    /// The result of the seed, model or test named `name`, if the run reached it.
    pub fn node(&self, name: &str) -> Option<&NodeResult> {
        self.nodes.iter().find(|n| n.node == name)
    }

    /// Whether anything failed.
    pub fn failed(&self) -> bool {
        self.nodes.iter().any(|n| n.status == NodeStatus::Failed)
    }

    /// A report of what failed, naming each failed node with its error or failing rows.
    pub fn failures(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Failed)
            .map(|n| {
                format!(
                    "{} {} failed: {}",
                    n.kind,
                    n.node,
                    n.error.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Errors that stop a run: before it starts, or when its steps can no longer be recorded.
/// A seed, model or test that fails does not stop the run; see [`NodeError`].
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The warehouse could not be used.
    #[error("database operation failed while {action}: {source}")]
    Database {
        /// What the runner was doing.
        action: &'static str,
        /// Why.
        source: sqlx::Error,
    },
    /// A node ran but its row in `metadata.transform_runs` could not be written; the run
    /// stops, since a run that is not recorded would be invisible.
    #[error("recording {kind} {node} in metadata.transform_runs failed: {source}")]
    Record {
        /// What the node is.
        kind: NodeKind,
        /// Its name.
        node: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The project or the selection is wrong.
    #[error(transparent)]
    Project(#[from] super::project::ProjectError),
    /// Another transform run held the lock for longer than this run would wait
    /// (`lock_timeout`, the workers' `--lock-timeout-secs`); nothing ran.
    #[error(
        "another transform run holds the lock {holder}; gave up after waiting {waited:.1?}: {source}"
    )]
    Locked {
        /// Who holds it and since when, as far as `pg_stat_activity` tells.
        holder: String,
        /// How long this run waited.
        waited: std::time::Duration,
        /// The error that ended the wait (`canceling statement due to lock timeout`).
        source: sqlx::Error,
    },
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> TransformError {
    move |source| TransformError::Database { action, source }
}

/// Why one seed, model or test failed. The run goes on without it (and without what depends
/// on it); the error reaches `metadata.transform_runs` and the report as its text.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A statement of the node failed.
    #[error("database operation failed while {action} ({kind} {node}): {source}")]
    Database {
        /// What the node is.
        kind: NodeKind,
        /// Its name.
        node: String,
        /// What the runner was doing.
        action: &'static str,
        /// Why.
        source: sqlx::Error,
    },
    /// A seed's file is not valid CSV.
    #[error("seed {seed} is not valid CSV: {source}")]
    SeedCsv {
        /// The seed.
        seed: String,
        /// Why.
        source: csv::Error,
    },
    /// A seed's header names a column that generated SQL could not use as it is.
    #[error("seed {seed}: column {column:?} is not a plain identifier")]
    SeedColumn {
        /// The seed.
        seed: String,
        /// The column header.
        column: String,
    },
    /// An incremental model lacks its merge key or filter column. The project refuses such
    /// models when it is parsed, so only a [`Project`] built by hand gets here.
    #[error("{model} is incremental without unique_key and incremental_column")]
    IncompleteIncremental {
        /// The model.
        model: String,
    },
    /// A data test's query returned rows: the data breaks the rule the test states.
    #[error("{count} failing row(s), for example:\n  {}", sample.join("\n  "))]
    FailingRows {
        /// How many rows the query returned.
        count: i64,
        /// The first few, as JSON.
        sample: Vec<String>,
    },
}

impl NodeError {
    /// Rows to record for the failed node: a test's count of failing rows.
    fn rows(&self) -> Option<i64> {
        match self {
            Self::FailingRows { count, .. } => Some(*count),
            _ => None,
        }
    }
}

/// Wraps a database error of the node `node` with what was being done.
fn node_db(
    kind: NodeKind,
    node: &str,
    action: &'static str,
) -> impl FnOnce(sqlx::Error) -> NodeError {
    move |source| NodeError::Database {
        kind,
        node: node.to_owned(),
        action,
        source,
    }
}

/// Runs `project` against the warehouse of `pool`.
pub async fn run(
    pool: &PgPool,
    project: &Project,
    options: &TransformOptions,
) -> Result<TransformReport, TransformError> {
    let selected = project.selection(options.select.as_deref())?;
    // One connection for the whole run: it holds the session lock, and the embedded
    // PostgreSQL serves one connection anyway.
    let mut conn: PoolConnection<Postgres> = pool.acquire().await.map_err(db("connecting"))?;
    take_transform_lock(&mut conn).await?;
    let mut runner = Runner {
        conn: &mut conn,
        run_id: Uuid::new_v4(),
        nodes: Vec::new(),
    };
    let result = runner.run(project, &selected, options).await;
    let report = TransformReport {
        run_id: runner.run_id,
        nodes: runner.nodes,
    };
    let unlocked = sqlx::query("select pg_advisory_unlock($1)")
        .bind(TRANSFORM_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db("releasing the transform lock"));
    // The error that stopped the run says more than the failed unlock that likely followed
    // it on the same broken connection.
    result?;
    unlocked?;
    Ok(report)
}

/// Takes the session lock that keeps transform runs apart. When another run holds it, waits
/// for it as long as the connection's `lock_timeout` allows, then fails with
/// [`TransformError::Locked`], naming the session that holds it.
async fn take_transform_lock(conn: &mut PgConnection) -> Result<(), TransformError> {
    let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(TRANSFORM_LOCK)
        .fetch_one(&mut *conn)
        .await
        .map_err(db("taking the transform lock"))?;
    if taken {
        return Ok(());
    }
    let holder = transform_lock_holder(conn).await;
    tracing::warn!(
        holder = holder.as_deref().unwrap_or("unknown"),
        "another transform run holds the lock; waiting for it (up to lock_timeout)"
    );
    let started = Instant::now();
    let waited = sqlx::query("select pg_advisory_lock($1)")
        .bind(TRANSFORM_LOCK)
        .execute(&mut *conn)
        .await;
    match waited {
        Ok(_) => Ok(()),
        // 55P03 lock_not_available: `lock_timeout`; 57014 query_canceled: `statement_timeout`.
        Err(source)
            if source
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "55P03" || code == "57014") =>
        {
            let holder = match transform_lock_holder(conn).await {
                Some(now) => now,
                None => holder.unwrap_or_else(|| "(its session is no longer visible)".to_owned()),
            };
            Err(TransformError::Locked {
                holder,
                waited: started.elapsed(),
                source,
            })
        }
        Err(source) => Err(db("waiting for another transform run to finish")(source)),
    }
}

/// Who holds the transform lock, from `pg_locks` and `pg_stat_activity`: "since <when the
/// holding session connected> (… pid …, user …, application …, client …, <state> since …)".
/// `None` when no session holds it any more or the lookup fails; the lookup only serves
/// the error message.
async fn transform_lock_holder(conn: &mut PgConnection) -> Option<String> {
    // A bigint advisory key is split into classid (high half) and objid (low half).
    let high = (TRANSFORM_LOCK >> 32) & 0xffff_ffff;
    let low = TRANSFORM_LOCK & 0xffff_ffff;
    let row: Option<(String,)> = sqlx::query_as(
        "select format('since %s (when its session connected: pid %s, user %s, application %L, \
                client %s, %s since %s)', \
                coalesce(a.backend_start::text, 'an unknown time'), l.pid, \
                coalesce(a.usename::text, '?'), coalesce(a.application_name, ''), \
                coalesce(host(a.client_addr), 'local'), coalesce(a.state, '?'), \
                coalesce(a.state_change::text, '?')) \
         from pg_locks l left join pg_stat_activity a on a.pid = l.pid \
         where l.locktype = 'advisory' and l.granted and l.objsubid = 1 \
           and l.classid::bigint = $1 and l.objid::bigint = $2 \
           and l.database = (select oid from pg_database where datname = current_database()) \
         limit 1",
    )
    .bind(high)
    .bind(low)
    .fetch_optional(&mut *conn)
    .await
    .ok()?;
    row.map(|(holder,)| holder)
}

/// What became of one node.
enum Outcome {
    /// Built or passed, with its row count (failing rows for a test: 0).
    Done(i64),
    /// Failed.
    Failed(NodeError),
    /// Not run because something upstream failed.
    Skipped(&'static str),
}

impl From<Result<i64, NodeError>> for Outcome {
    fn from(result: Result<i64, NodeError>) -> Self {
        match result {
            Ok(rows) => Self::Done(rows),
            Err(error) => Self::Failed(error),
        }
    }
}

struct Runner<'c> {
    conn: &'c mut PgConnection,
    run_id: Uuid,
    nodes: Vec<NodeResult>,
}

impl Runner<'_> {
    async fn run(
        &mut self,
        project: &Project,
        selected: &BTreeSet<String>,
        options: &TransformOptions,
    ) -> Result<(), TransformError> {
        for seed in &project.seeds {
            let started = (Utc::now(), Instant::now());
            let outcome = self.load_seed(seed).await.into();
            self.record(&seed.name, NodeKind::Seed, started, outcome)
                .await?;
        }
        let mut broken: BTreeSet<String> = BTreeSet::new();
        for model in project.models.iter().filter(|m| selected.contains(&m.name)) {
            let started = (Utc::now(), Instant::now());
            if model.depends_on.iter().any(|d| broken.contains(d)) {
                broken.insert(model.name.clone());
                let outcome = Outcome::Skipped("an upstream model failed");
                self.record(&model.name, NodeKind::Model, started, outcome)
                    .await?;
                continue;
            }
            let outcome: Outcome = self.build(model, options).await.into();
            if matches!(outcome, Outcome::Failed(_)) {
                broken.insert(model.name.clone());
            }
            self.record(&model.name, NodeKind::Model, started, outcome)
                .await?;
        }
        let tests: Vec<&DataTest> = project
            .tests
            .iter()
            .filter(|t| t.depends_on.iter().any(|d| selected.contains(d)))
            .collect();
        let runnable = |test: &DataTest| !test.depends_on.iter().any(|d| broken.contains(d));
        // Failures of each screened test, by table, counted at the table's first test (whose
        // duration then includes the one scan).
        let mut screened: HashMap<&str, HashMap<&str, i64>> = HashMap::new();
        for test in &tests {
            let started = (Utc::now(), Instant::now());
            if !runnable(test) {
                let outcome = Outcome::Skipped("a model it reads failed");
                self.record(&test.name, NodeKind::Test, started, outcome)
                    .await?;
                continue;
            }
            let failures = match &test.screen {
                Some(screen) => {
                    if !screened.contains_key(screen.table.as_str()) {
                        let same_table: Vec<&DataTest> = tests
                            .iter()
                            .copied()
                            .filter(|t| runnable(t))
                            .filter(|t| t.screen.as_ref().is_some_and(|s| s.table == screen.table))
                            .collect();
                        let counts = self.screen(&screen.table, &same_table).await;
                        screened.insert(&screen.table, counts);
                    }
                    screened[screen.table.as_str()]
                        .get(test.name.as_str())
                        .copied()
                }
                None => None,
            };
            // A test the scan found clean passes; one with failures (or one the scan could
            // not count) runs its own query, for the count and a sample of its rows.
            let outcome = match failures {
                Some(0) => Outcome::Done(0),
                _ => self.check(test).await.into(),
            };
            self.record(&test.name, NodeKind::Test, started, outcome)
                .await?;
        }
        Ok(())
    }

    /// Counts the failing rows of each of `tests`, all screened on `table`, in one scan.
    /// A query that fails counts nothing: each test then runs its own query and reports its
    /// own error.
    async fn screen<'t>(&mut self, table: &str, tests: &[&'t DataTest]) -> HashMap<&'t str, i64> {
        use sqlx::Row as _;
        let counts: Vec<String> = tests
            .iter()
            .filter_map(|test| test.screen.as_ref())
            .map(|screen| format!("count(*) filter (where {})", screen.failing))
            .collect();
        let query = format!("select {} from {table}", counts.join(", "));
        match sqlx::query(&query).fetch_one(&mut *self.conn).await {
            Ok(row) => tests
                .iter()
                .enumerate()
                .filter_map(|(i, test)| Some((test.name.as_str(), row.try_get(i).ok()?)))
                .collect(),
            Err(error) => {
                tracing::warn!(%table, %error, "counting the column tests' failures in one scan failed; each test runs alone");
                HashMap::new()
            }
        }
    }

    /// Records one node in `metadata.transform_runs` and in the report.
    async fn record(
        &mut self,
        node: &str,
        kind: NodeKind,
        (started_at, started): (chrono::DateTime<Utc>, Instant),
        outcome: Outcome,
    ) -> Result<(), TransformError> {
        let kind_text = kind.as_str();
        // The table and the report keep the error as text: the typed error ends here.
        let (status, rows, error) = match outcome {
            Outcome::Done(rows) => {
                tracing::info!(kind = kind_text, node, rows, "done");
                (NodeStatus::Success, Some(rows), None)
            }
            Outcome::Failed(error) => {
                tracing::error!(kind = kind_text, node, %error, "failed");
                (NodeStatus::Failed, error.rows(), Some(error.to_string()))
            }
            Outcome::Skipped(reason) => {
                tracing::warn!(kind = kind_text, node, "skipped");
                (NodeStatus::Skipped, None, Some(reason.to_owned()))
            }
        };
        sqlx::query(
            "insert into metadata.transform_runs \
             (run_id, node, kind, status, rows, duration_ms, error, started_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(self.run_id)
        .bind(node)
        .bind(kind.as_str())
        .bind(status.as_str())
        .bind(rows)
        .bind(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
        .bind(&error)
        .bind(started_at)
        .execute(&mut *self.conn)
        .await
        .map_err(|source| TransformError::Record {
            kind,
            node: node.to_owned(),
            source,
        })?;
        self.nodes.push(NodeResult {
            node: node.to_owned(),
            kind,
            status,
            rows,
            error,
        });
        Ok(())
    }

    /// Replaces `seeds.<name>` with the CSV's rows; column types are inferred (bigint,
    /// numeric, else text).
    async fn load_seed(&mut self, seed: &Seed) -> Result<i64, NodeError> {
        let not_csv = |source| NodeError::SeedCsv {
            seed: seed.name.clone(),
            source,
        };
        let db = |action| node_db(NodeKind::Seed, &seed.name, action);
        let mut reader = csv::Reader::from_reader(seed.csv.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .map_err(not_csv)?
            .iter()
            .map(str::to_owned)
            .collect();
        let rows: Vec<csv::StringRecord> = reader
            .records()
            .collect::<Result<_, _>>()
            .map_err(not_csv)?;
        let mut columns = Vec::new();
        for (i, header) in headers.iter().enumerate() {
            let header =
                super::project::plain_identifier(header).ok_or_else(|| NodeError::SeedColumn {
                    seed: seed.name.clone(),
                    column: header.clone(),
                })?;
            let values = || rows.iter().map(|r| r.get(i).unwrap_or(""));
            let kind = if values().all(|v| v.parse::<i64>().is_ok()) {
                "bigint"
            } else if values().all(|v| v.parse::<rust_decimal::Decimal>().is_ok()) {
                "numeric"
            } else {
                "text"
            };
            columns.push(format!("{header} {kind}"));
        }
        let table = format!("{SEEDS_SCHEMA}.{}", seed.name);
        let mut copy_text = Vec::new();
        for row in &rows {
            for field in row {
                push_text(&mut copy_text, field);
            }
            end_copy_row(&mut copy_text);
        }
        let mut tx = sqlx::Connection::begin(&mut *self.conn)
            .await
            .map_err(db("starting a transaction"))?;
        for (action, statement) in [
            (
                "creating the seeds schema",
                format!("create schema if not exists {SEEDS_SCHEMA}"),
            ),
            (
                "dropping the old table",
                format!("drop table if exists {table} cascade"),
            ),
            (
                "creating the table",
                format!("create table {table} ({})", columns.join(", ")),
            ),
        ] {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(db(action))?;
        }
        let mut copy = tx
            .copy_in_raw(&format!("copy {table} from stdin (format text)"))
            .await
            .map_err(db("starting the copy of the rows"))?;
        copy.send(copy_text.as_slice())
            .await
            .map_err(db("copying the rows"))?;
        let rows = copy.finish().await.map_err(db("copying the rows"))?;
        tx.commit().await.map_err(db("committing"))?;
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }

    /// Builds one model in its own transaction; returns the rows it holds (or, for an
    /// incremental merge, the rows it inserted or updated).
    async fn build(&mut self, model: &Model, options: &TransformOptions) -> Result<i64, NodeError> {
        let name = &model.name;
        let db = |action| node_db(NodeKind::Model, name, action);
        let mut tx = sqlx::Connection::begin(&mut *self.conn)
            .await
            .map_err(db("starting a transaction"))?;
        sqlx::query(&format!("create schema if not exists {}", model.schema))
            .execute(&mut *tx)
            .await
            .map_err(db("creating the schema"))?;
        let existing: Option<String> = sqlx::query_scalar(
            "select case c.relkind when 'v' then 'view' else 'table' end \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = $1 and c.relname = $2",
        )
        .bind(&model.schema)
        .bind(name.split('.').nth(1).unwrap_or_default())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("looking up the existing relation"))?;
        let drop = existing
            .as_deref()
            .map(|kind| format!("drop {kind} {name} cascade"));
        let mut incremental = model.materialized == Materialized::Incremental
            && existing.as_deref() == Some("table")
            && !options.full_refresh;
        // A merge can only fill the columns the table has: after the model's columns change
        // (a new release, an edited model), the table is rebuilt once in full.
        if incremental && !same_columns(&mut tx, model).await? {
            tracing::info!(model = %name, "the model's columns changed; rebuilding it in full");
            incremental = false;
        }
        // A table built before the model became incremental has no key to merge on.
        if incremental && !has_primary_key(&mut tx, model).await? {
            tracing::info!(model = %name, "the model's table has no primary key yet; rebuilding it in full");
            incremental = false;
        }
        // Merging costs several times what building costs per row, so a window that holds
        // most of the table (after a backfill, or history loaded at once) is cheaper to
        // rebuild; a rebuild reads everything again, so it never gives less than the merge.
        if incremental && window_share(&mut tx, model, options.lookback_days).await? > 0.5 {
            tracing::info!(model = %name, "the window holds most of the table; rebuilding it in full");
            incremental = false;
        }
        let rows = if incremental {
            merge(&mut tx, model, options.lookback_days).await?
        } else {
            if let Some(drop) = drop {
                sqlx::query(&drop)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("dropping the old relation"))?;
            }
            let create = match model.materialized {
                Materialized::View => format!("create view {name} as {}", model.select()),
                Materialized::Table | Materialized::Incremental => {
                    format!("create table {name} as {}", model.select())
                }
            };
            let creating = match model.materialized {
                Materialized::View => "creating the view",
                Materialized::Table | Materialized::Incremental => "creating the table",
            };
            sqlx::query(&create)
                .execute(&mut *tx)
                .await
                .map_err(db(creating))?;
            if let (Materialized::Incremental, Some(key)) = (model.materialized, &model.unique_key)
            {
                sqlx::query(&format!("alter table {name} add primary key ({key})"))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("adding the primary key"))?;
            }
            sqlx::query_scalar(&format!("select count(*) from {name}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(db("counting the rows"))?
        };
        tx.commit().await.map_err(db("committing"))?;
        Ok(rows)
    }

    /// Runs a data test: it passes when its query returns no row; otherwise it fails with
    /// the count and a sample of the failing rows. Returns 0, the failing rows of a pass.
    async fn check(&mut self, test: &DataTest) -> Result<i64, NodeError> {
        let sql = test.sql.trim().trim_end_matches(';');
        let db = |action| node_db(NodeKind::Test, &test.name, action);
        let count: i64 = sqlx::query_scalar(&format!("select count(*) from ({sql}) as failures"))
            .fetch_one(&mut *self.conn)
            .await
            .map_err(db("running the test query"))?;
        if count == 0 {
            return Ok(0);
        }
        let sample = sqlx::query_scalar::<_, String>(&format!(
            "select row_to_json(failures)::text from ({sql}) as failures limit {SAMPLE_ROWS}"
        ))
        .fetch_all(&mut *self.conn)
        .await
        .map_err(db("sampling the failing rows"))?;
        Err(NodeError::FailingRows { count, sample })
    }
}

/// The start of an incremental model's window: `lookback_days` (bound as `$1`) before the
/// latest change its table holds.
fn window_start(model: &Model, column: &str) -> String {
    let name = &model.name;
    format!(
        "(coalesce((select max({column}) from {name}), '-infinity') - make_interval(days => $1))"
    )
}

/// The share of the rows of an incremental model's table that fall in its window.
async fn window_share(
    tx: &mut PgConnection,
    model: &Model,
    lookback_days: u32,
) -> Result<f64, NodeError> {
    let Some(column) = &model.incremental_column else {
        return Ok(0.0);
    };
    let since = window_start(model, column);
    let (inside, all): (i64, i64) = sqlx::query_as(&format!(
        "select count(*) filter (where {column} >= {since}), count(*) from {}",
        model.name
    ))
    .bind(i32::try_from(lookback_days).unwrap_or(i32::MAX))
    .fetch_one(&mut *tx)
    .await
    .map_err(node_db(
        NodeKind::Model,
        &model.name,
        "measuring the window",
    ))?;
    Ok(if all == 0 {
        1.0
    } else {
        inside as f64 / all as f64
    })
}

/// Whether the table of `model` has a primary key.
async fn has_primary_key(tx: &mut PgConnection, model: &Model) -> Result<bool, NodeError> {
    sqlx::query_scalar(
        "select exists (select 1 from pg_constraint c \
         join pg_class t on t.oid = c.conrelid join pg_namespace n on n.oid = t.relnamespace \
         where n.nspname = $1 and t.relname = $2 and c.contype = 'p')",
    )
    .bind(&model.schema)
    .bind(model.name.split('.').nth(1).unwrap_or_default())
    .fetch_one(&mut *tx)
    .await
    .map_err(node_db(
        NodeKind::Model,
        &model.name,
        "looking up the primary key",
    ))
}

/// Whether the table of `model` has exactly the columns its query returns, in any order.
async fn same_columns(tx: &mut PgConnection, model: &Model) -> Result<bool, NodeError> {
    use sqlx::Executor as _;
    let db = |action| node_db(NodeKind::Model, &model.name, action);
    let mut table: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns \
         where table_schema = $1 and table_name = $2",
    )
    .bind(&model.schema)
    .bind(model.name.split('.').nth(1).unwrap_or_default())
    .fetch_all(&mut *tx)
    .await
    .map_err(db("listing the columns"))?;
    let described = (&mut *tx)
        .describe(model.select())
        .await
        .map_err(db("describing the model's columns"))?;
    let mut query: Vec<String> = described
        .columns()
        .iter()
        .map(|column| sqlx::Column::name(column).to_owned())
        .collect();
    table.sort();
    query.sort();
    Ok(table == query)
}

/// Merges the rows changed within the lookback window into an incremental model; returns the
/// rows it inserted or changed.
async fn merge(tx: &mut PgConnection, model: &Model, lookback_days: u32) -> Result<i64, NodeError> {
    let name = &model.name;
    let db = |action| node_db(NodeKind::Model, name, action);
    let (Some(key), Some(column)) = (&model.unique_key, &model.incremental_column) else {
        return Err(NodeError::IncompleteIncremental {
            model: name.clone(),
        });
    };
    let columns: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns \
         where table_schema = $1 and table_name = $2 order by ordinal_position",
    )
    .bind(&model.schema)
    .bind(name.split('.').nth(1).unwrap_or_default())
    .fetch_all(&mut *tx)
    .await
    .map_err(db("listing the columns"))?;
    let list = columns.join(", ");
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| *c != key)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    // A row the window brings back unchanged is left as it is: rewriting it would cost a new
    // row version and index entries for every payment in the window, which after a backfill
    // is most of the table.
    // The window starts the lookback before the latest change the model has merged; the
    // model's `-- incremental:` lines read only what changed since then, and its output is
    // held to the same window.
    let since = window_start(model, column);
    let statement = format!(
        "insert into {name} as target ({list}) \
         select {list} from ({sql}) as model \
         where model.{column} >= {since} \
         on conflict ({key}) do update set {updates} \
         where (target.*) is distinct from (excluded.*)",
        sql = model.incremental_select(&since),
        updates = updates.join(", "),
    );
    let rows = sqlx::query(&statement)
        .bind(i32::try_from(lookback_days).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .map_err(db("merging the changed rows"))?
        .rows_affected();
    Ok(i64::try_from(rows).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_keep_their_source_and_read_as_before() {
        let csv_error = csv::Reader::from_reader("a,b\n1\n".as_bytes())
            .records()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        let error = NodeError::SeedCsv {
            seed: "fx_rates".to_owned(),
            source: csv_error,
        };
        assert!(
            error
                .to_string()
                .starts_with("seed fx_rates is not valid CSV: "),
            "{error}"
        );
        assert!(std::error::Error::source(&error).is_some());

        let error =
            node_db(NodeKind::Model, "marts.fact", "creating the table")(sqlx::Error::PoolTimedOut);
        assert_eq!(
            error.to_string(),
            format!(
                "database operation failed while creating the table (model marts.fact): {}",
                sqlx::Error::PoolTimedOut
            )
        );
        assert!(std::error::Error::source(&error).is_some());
        assert_eq!(error.rows(), None);

        let error = NodeError::FailingRows {
            count: 7,
            sample: vec!["{\"a\":1}".to_owned(), "{\"a\":2}".to_owned()],
        };
        assert_eq!(
            error.to_string(),
            "7 failing row(s), for example:\n  {\"a\":1}\n  {\"a\":2}"
        );
        assert_eq!(error.rows(), Some(7));
    }
}
