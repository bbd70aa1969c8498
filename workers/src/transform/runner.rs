//! Running the project: seeds, then models in dependency order (each in its own
//! transaction), then data tests; every step recorded in `metadata.transform_runs`.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

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

/// How far before the latest merged change an incremental run starts by default: ten minutes
/// of the warehouse's clock stepping back.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(600);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformOptions {
    /// Run this model and its descendants only.
    pub select: Option<String>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// How long before the latest change an incremental model holds its next run starts
    /// re-reading. Loads stamp their rows in the order they commit, so this only has to
    /// cover the warehouse's clock stepping back.
    pub lookback: Duration,
}

impl Default for TransformOptions {
    /// Every model, incrementally, with the [`DEFAULT_LOOKBACK`].
    fn default() -> Self {
        Self {
            select: None,
            full_refresh: false,
            lookback: DEFAULT_LOOKBACK,
        }
    }
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

    /// One line for a person: models built and tests passed, or how many failed.
    pub fn summary_line(&self) -> String {
        let count = |kind: NodeKind, status: NodeStatus| {
            self.nodes
                .iter()
                .filter(|n| n.kind == kind && n.status == status)
                .count()
        };
        let failed = self
            .nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Failed)
            .count();
        let mut line = format!(
            "{} models built, {} data tests passed",
            count(NodeKind::Model, NodeStatus::Success),
            count(NodeKind::Test, NodeStatus::Success)
        );
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        line
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
        windows: HashMap::new(),
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
    /// The start of the window of each model this run merged, as an SQL literal.
    windows: HashMap<String, String>,
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
            self.record(&seed.name, NodeKind::Seed, started, outcome, None)
                .await?;
        }
        let mut broken: BTreeSet<String> = BTreeSet::new();
        for model in project.models.iter().filter(|m| selected.contains(&m.name)) {
            let started = (Utc::now(), Instant::now());
            if model.depends_on.iter().any(|d| broken.contains(d)) {
                broken.insert(model.name.clone());
                let outcome = Outcome::Skipped("an upstream model failed");
                self.record(&model.name, NodeKind::Model, started, outcome, None)
                    .await?;
                continue;
            }
            let built = self.build(model, options).await;
            if let Ok(Built {
                window: Some(since),
                ..
            }) = &built
            {
                self.windows.insert(model.name.clone(), since.clone());
            }
            let outcome: Outcome = built.map(|built| built.rows).into();
            if matches!(outcome, Outcome::Failed(_)) {
                broken.insert(model.name.clone());
            }
            self.record(&model.name, NodeKind::Model, started, outcome, None)
                .await?;
        }
        let tests: Vec<&DataTest> = project
            .tests
            .iter()
            .filter(|t| t.depends_on.iter().any(|d| selected.contains(d)))
            .collect();
        let runnable = |test: &DataTest| !test.depends_on.iter().any(|d| broken.contains(d));
        let mut plans: HashMap<&str, TestPlan> = HashMap::new();
        for test in tests.iter().filter(|t| runnable(t)) {
            plans.insert(&test.name, self.plan(test).await?);
        }
        // Failures of each screened test, by table and rows checked, counted at the first
        // test of the group (whose duration then includes the one scan).
        let mut screened: HashMap<(&str, Option<&str>), HashMap<&str, i64>> = HashMap::new();
        for test in &tests {
            let started = (Utc::now(), Instant::now());
            let Some(plan) = plans.get(test.name.as_str()) else {
                let outcome = Outcome::Skipped("a model it reads failed");
                self.record(&test.name, NodeKind::Test, started, outcome, None)
                    .await?;
                continue;
            };
            let failures = match &test.screen {
                Some(screen) => {
                    let group = (screen.table.as_str(), plan.window_rows.as_deref());
                    if let Entry::Vacant(slot) = screened.entry(group) {
                        let same_group: Vec<&DataTest> = tests
                            .iter()
                            .copied()
                            .filter(|t| t.screen.as_ref().is_some_and(|s| s.table == group.0))
                            .filter(|t| {
                                plans
                                    .get(t.name.as_str())
                                    .is_some_and(|p| p.window_rows.as_deref() == group.1)
                            })
                            .collect();
                        let counts = self.screen(group.0, group.1, &same_group).await;
                        slot.insert(counts);
                    }
                    screened[&group].get(test.name.as_str()).copied()
                }
                None => None,
            };
            // A test the scan found clean passes; one with failures (or one the scan could
            // not count) runs its own query, for the count and a sample of its rows.
            let outcome = match failures {
                Some(0) => Outcome::Done(0),
                _ => self.check(&test.name, &plan.query).await.into(),
            };
            let ran = TestRun {
                scope: plan.scope(),
                query: &test.sql,
            };
            self.record(&test.name, NodeKind::Test, started, outcome, Some(ran))
                .await?;
        }
        Ok(())
    }

    /// What `test` checks in this run. A test of an incremental model that this run merged
    /// checks only the merged rows when the same test (the same query) passed the last time
    /// it ran: every earlier row was then checked by a run that passed, and has not changed
    /// since. Otherwise (the first run, a full refresh, a changed test, or one that failed
    /// last time, whose failing rows would otherwise drop out of sight) it checks every row.
    async fn plan(&mut self, test: &DataTest) -> Result<TestPlan, TransformError> {
        let window = test
            .window
            .as_ref()
            .and_then(|window| Some((window, self.windows.get(&window.model)?)));
        if let Some((window, since)) = window {
            let passed: Option<bool> = sqlx::query_scalar(
                "select status = 'SUCCESS' and query_md5 is not distinct from md5($2) \
                 from metadata.transform_runs \
                 where node = $1 and kind = 'test' and run_id <> $3 \
                 order by started_at desc limit 1",
            )
            .bind(&test.name)
            .bind(&test.sql)
            .bind(self.run_id)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(db("looking up the tests' previous results"))?;
            if passed == Some(true) {
                return Ok(TestPlan {
                    query: window.sql.replace("{since}", since),
                    window_rows: Some(format!("{} >= {since}", window.column)),
                });
            }
        }
        Ok(TestPlan {
            query: test.sql.clone(),
            window_rows: None,
        })
    }

    /// Counts the failing rows of each of `tests`, all screened on `table`, in one scan of
    /// the rows `window_rows` picks (every row when `None`). A query that fails counts
    /// nothing: each test then runs its own query and reports its own error.
    async fn screen<'t>(
        &mut self,
        table: &str,
        window_rows: Option<&str>,
        tests: &[&'t DataTest],
    ) -> HashMap<&'t str, i64> {
        use sqlx::Row as _;
        let counts: Vec<String> = tests
            .iter()
            .filter_map(|test| test.screen.as_ref())
            .map(|screen| format!("count(*) filter (where {})", screen.failing))
            .collect();
        let rows = window_rows
            .map(|rows| format!(" where {rows}"))
            .unwrap_or_default();
        let query = format!("select {} from {table}{rows}", counts.join(", "));
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
        test: Option<TestRun<'_>>,
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
             (run_id, node, kind, status, rows, duration_ms, error, started_at, scope, query_md5) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, md5($10))",
        )
        .bind(self.run_id)
        .bind(node)
        .bind(kind.as_str())
        .bind(status.as_str())
        .bind(rows)
        .bind(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
        .bind(&error)
        .bind(started_at)
        .bind(test.as_ref().map(|test| test.scope.as_str()))
        .bind(test.as_ref().map(|test| test.query))
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

    /// Builds one model in its own transaction.
    async fn build(
        &mut self,
        model: &Model,
        options: &TransformOptions,
    ) -> Result<Built, NodeError> {
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
        // A table built before the model became incremental (or before its incremental
        // column was indexed) lacks the key to merge on or the index its window reads.
        if incremental && !ready_for_merges(&mut tx, model).await? {
            tracing::info!(model = %name, "the model's table lacks its primary key or the index on its incremental column; rebuilding it in full");
            incremental = false;
        }
        let mut window = None;
        if incremental {
            let since = window_start(&mut tx, model, options.lookback).await?;
            // Merging costs several times what building costs per row, so a window that
            // holds most of the table (after a backfill, or history loaded at once) is
            // cheaper to rebuild; a rebuild reads everything again, so it never gives less
            // than the merge.
            if window_share(&mut tx, model, &since).await? > 0.5 {
                tracing::info!(model = %name, "the window holds most of the table; rebuilding it in full");
            } else {
                window = Some(since);
            }
        }
        let rows = if let Some(since) = &window {
            merge(&mut tx, model, since).await?
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
            if model.materialized == Materialized::Incremental {
                index_for_merges(&mut tx, model).await?;
            }
            sqlx::query_scalar(&format!("select count(*) from {name}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(db("counting the rows"))?
        };
        tx.commit().await.map_err(db("committing"))?;
        Ok(Built { rows, window })
    }

    /// Runs the data test `name`, whose query is `sql`: it passes when the query returns no
    /// row; otherwise it fails with the count and a sample of the failing rows. Returns 0,
    /// the failing rows of a pass.
    async fn check(&mut self, name: &str, sql: &str) -> Result<i64, NodeError> {
        let sql = sql.trim().trim_end_matches(';');
        let db = |action| node_db(NodeKind::Test, name, action);
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

/// What a data test checks in a run: see `Runner::plan`.
struct TestPlan {
    /// The query that returns its failing rows.
    query: String,
    /// For a test held to the rows its model merged: the condition that picks them.
    window_rows: Option<String>,
}

impl TestPlan {
    /// The `scope` of `metadata.transform_runs`.
    fn scope(&self) -> Scope {
        match self.window_rows {
            Some(_) => Scope::Window,
            None => Scope::All,
        }
    }
}

/// Which rows a data test checked; the `scope` of `metadata.transform_runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every row of what it reads.
    All,
    /// The rows its incremental model merged in this run.
    Window,
}

impl Scope {
    /// The table's spelling.
    fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Window => "window",
        }
    }
}

/// A data test that ran, as `metadata.transform_runs` records it beside its result.
struct TestRun<'q> {
    /// Which rows it checked.
    scope: Scope,
    /// Its query over every row, whose md5 identifies the test's definition.
    query: &'q str,
}

/// What building a model did.
struct Built {
    /// The rows the model holds, or for a merge the rows it inserted or changed.
    rows: i64,
    /// For a merge, the start of its window as an SQL literal.
    window: Option<String>,
}

/// The start of an incremental model's window, as an SQL literal: `lookback` before the
/// latest change its table holds (read through the index on the incremental column).
async fn window_start(
    tx: &mut PgConnection,
    model: &Model,
    lookback: Duration,
) -> Result<String, NodeError> {
    let Some(column) = &model.incremental_column else {
        return Err(NodeError::IncompleteIncremental {
            model: model.name.clone(),
        });
    };
    // Text the server wrote for its own type, so it reads back exactly in this session.
    let since: String = sqlx::query_scalar(&format!(
        "select (coalesce(max({column}), '-infinity') - make_interval(secs => $1))::text \
         from {}",
        model.name
    ))
    .bind(lookback.as_secs_f64())
    .fetch_one(&mut *tx)
    .await
    .map_err(node_db(
        NodeKind::Model,
        &model.name,
        "finding the start of the window",
    ))?;
    Ok(format!("'{since}'::timestamptz"))
}

/// The share of the rows of an incremental model's table that fall in the window starting
/// at `since`. The rows in the window are counted through the index on the incremental
/// column, and no further than what decides the answer; the table's size is the planner's
/// estimate once the table has been analysed.
async fn window_share(tx: &mut PgConnection, model: &Model, since: &str) -> Result<f64, NodeError> {
    let Some(column) = &model.incremental_column else {
        return Ok(0.0);
    };
    let db = |action| node_db(NodeKind::Model, &model.name, action);
    let estimate: f32 =
        sqlx::query_scalar("select reltuples from pg_class where oid = $1::regclass")
            .bind(&model.name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the table's size"))?;
    let all: i64 = if estimate >= 0.0 {
        estimate as i64
    } else {
        sqlx::query_scalar(&format!("select count(*) from {}", model.name))
            .fetch_one(&mut *tx)
            .await
            .map_err(db("counting the table"))?
    };
    let inside: i64 = sqlx::query_scalar(&format!(
        "select count(*) from (select from {} where {column} >= {since} limit $1) as window_rows",
        model.name
    ))
    .bind(all / 2 + 1)
    .fetch_one(&mut *tx)
    .await
    .map_err(db("measuring the window"))?;
    Ok(if all == 0 {
        1.0
    } else {
        inside as f64 / all as f64
    })
}

/// Gives a freshly built incremental model's table what its merges and windows read: its
/// unique key as the primary key, an index on its incremental column, and statistics.
async fn index_for_merges(tx: &mut PgConnection, model: &Model) -> Result<(), NodeError> {
    let name = &model.name;
    let (Some(key), Some(column)) = (&model.unique_key, &model.incremental_column) else {
        return Err(NodeError::IncompleteIncremental {
            model: name.clone(),
        });
    };
    let table = name.split('.').nth(1).unwrap_or_default();
    for (action, statement) in [
        (
            "adding the primary key",
            format!("alter table {name} add primary key ({key})"),
        ),
        (
            "indexing the incremental column",
            format!("create index {table}_{column} on {name} ({column})"),
        ),
        ("analysing the table", format!("analyze {name}")),
    ] {
        sqlx::query(&statement)
            .execute(&mut *tx)
            .await
            .map_err(node_db(NodeKind::Model, name, action))?;
    }
    Ok(())
}

/// Whether the table of `model` has what [`index_for_merges`] gives it: a primary key and an
/// index led by the incremental column.
async fn ready_for_merges(tx: &mut PgConnection, model: &Model) -> Result<bool, NodeError> {
    sqlx::query_scalar(
        "select exists (select 1 from pg_index where indrelid = $1::regclass and indisprimary) \
            and exists (select 1 from pg_index i \
                join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0] \
                where i.indrelid = $1::regclass and a.attname = $2)",
    )
    .bind(&model.name)
    .bind(model.incremental_column.as_deref().unwrap_or_default())
    .fetch_one(&mut *tx)
    .await
    .map_err(node_db(
        NodeKind::Model,
        &model.name,
        "looking up the table's indexes",
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

/// Merges the rows changed within the window starting at `since` into an incremental model;
/// returns the rows it inserted or changed.
async fn merge(tx: &mut PgConnection, model: &Model, since: &str) -> Result<i64, NodeError> {
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
    let statement = format!(
        "insert into {name} as target ({list}) \
         select {list} from ({sql}) as model \
         where model.{column} >= {since} \
         on conflict ({key}) do update set {updates} \
         where (target.*) is distinct from (excluded.*)",
        sql = model.incremental_select(since),
        updates = updates.join(", "),
    );
    let rows = sqlx::query(&statement)
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
