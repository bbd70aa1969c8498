//! Running the project: seeds, then models in dependency order (each in its own
//! transaction), then data tests; every step recorded in `metadata.transform_runs`.

use std::collections::BTreeSet;
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

/// Errors that stop a run before it records anything.
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
    /// The project or the selection is wrong.
    #[error(transparent)]
    Project(#[from] super::project::ProjectError),
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> TransformError {
    move |source| TransformError::Database { action, source }
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
    sqlx::query("select pg_advisory_lock($1)")
        .bind(TRANSFORM_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db("waiting for another transform run to finish"))?;
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
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(TRANSFORM_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db("releasing the transform lock"))?;
    result.map(|()| report)
}

/// What became of one node.
enum Outcome {
    /// Built or passed, with its row count (failing rows for a test: 0).
    Done(i64),
    /// Failed; a test reports its count of failing rows.
    Failed { rows: Option<i64>, error: String },
    /// Not run because something upstream failed.
    Skipped(&'static str),
}

impl From<Result<i64, String>> for Outcome {
    fn from(result: Result<i64, String>) -> Self {
        match result {
            Ok(rows) => Self::Done(rows),
            Err(error) => Self::Failed { rows: None, error },
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
            if matches!(outcome, Outcome::Failed { .. }) {
                broken.insert(model.name.clone());
            }
            self.record(&model.name, NodeKind::Model, started, outcome)
                .await?;
        }
        let tests = project
            .tests
            .iter()
            .filter(|t| t.depends_on.iter().any(|d| selected.contains(d)));
        for test in tests {
            let started = (Utc::now(), Instant::now());
            if test.depends_on.iter().any(|d| broken.contains(d)) {
                let outcome = Outcome::Skipped("a model it reads failed");
                self.record(&test.name, NodeKind::Test, started, outcome)
                    .await?;
                continue;
            }
            let outcome = self.check(test).await;
            self.record(&test.name, NodeKind::Test, started, outcome)
                .await?;
        }
        Ok(())
    }

    /// Records one node in `metadata.transform_runs` and in the report.
    async fn record(
        &mut self,
        node: &str,
        kind: NodeKind,
        (started_at, started): (chrono::DateTime<Utc>, Instant),
        outcome: Outcome,
    ) -> Result<(), TransformError> {
        let (status, rows, error) = match outcome {
            Outcome::Done(rows) => (NodeStatus::Success, Some(rows), None),
            Outcome::Failed { rows, error } => (NodeStatus::Failed, rows, Some(error)),
            Outcome::Skipped(reason) => (NodeStatus::Skipped, None, Some(reason.to_owned())),
        };
        let kind_text = kind.as_str();
        match status {
            NodeStatus::Failed => {
                let error = error.as_deref().unwrap_or("");
                tracing::error!(kind = kind_text, node, error, "failed")
            }
            NodeStatus::Skipped => tracing::warn!(kind = kind_text, node, "skipped"),
            NodeStatus::Success => tracing::info!(kind = kind_text, node, rows, "done"),
        }
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
        .map_err(db("recording a transform step"))?;
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
    async fn load_seed(&mut self, seed: &Seed) -> Result<i64, String> {
        let mut reader = csv::Reader::from_reader(seed.csv.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| format!("seed {}: {e}", seed.name))?
            .iter()
            .map(str::to_owned)
            .collect();
        let rows: Vec<csv::StringRecord> = reader
            .records()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("seed {}: {e}", seed.name))?;
        let mut columns = Vec::new();
        for (i, header) in headers.iter().enumerate() {
            let header = super::project::plain_identifier(header).ok_or_else(|| {
                format!(
                    "seed {}: column {header:?} is not a plain identifier",
                    seed.name
                )
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
            .map_err(|e| e.to_string())?;
        for statement in [
            format!("create schema if not exists {SEEDS_SCHEMA}"),
            format!("drop table if exists {table} cascade"),
            format!("create table {table} ({})", columns.join(", ")),
        ] {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut copy = tx
            .copy_in_raw(&format!("copy {table} from stdin (format text)"))
            .await
            .map_err(|e| e.to_string())?;
        copy.send(copy_text.as_slice())
            .await
            .map_err(|e| e.to_string())?;
        let rows = copy.finish().await.map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }

    /// Builds one model in its own transaction; returns the rows it holds (or, for an
    /// incremental merge, the rows it inserted or updated).
    async fn build(&mut self, model: &Model, options: &TransformOptions) -> Result<i64, String> {
        let name = &model.name;
        let mut tx = sqlx::Connection::begin(&mut *self.conn)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(&format!("create schema if not exists {}", model.schema))
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        let existing: Option<String> = sqlx::query_scalar(
            "select case c.relkind when 'v' then 'view' else 'table' end \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = $1 and c.relname = $2",
        )
        .bind(&model.schema)
        .bind(name.split('.').nth(1).unwrap_or_default())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        let drop = existing
            .as_deref()
            .map(|kind| format!("drop {kind} {name} cascade"));
        let incremental = model.materialized == Materialized::Incremental
            && existing.as_deref() == Some("table")
            && !options.full_refresh;
        let rows = if incremental {
            merge(&mut tx, model, options.lookback_days).await?
        } else {
            if let Some(drop) = drop {
                sqlx::query(&drop)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let create = match model.materialized {
                Materialized::View => format!("create view {name} as {}", model.select()),
                Materialized::Table | Materialized::Incremental => {
                    format!("create table {name} as {}", model.select())
                }
            };
            sqlx::query(&create)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            if let (Materialized::Incremental, Some(key)) = (model.materialized, &model.unique_key)
            {
                sqlx::query(&format!("alter table {name} add primary key ({key})"))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            sqlx::query_scalar(&format!("select count(*) from {name}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| e.to_string())?
        };
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(rows)
    }

    /// Runs a data test: it passes when its query returns no row; otherwise it fails with
    /// the count and a sample of the failing rows.
    async fn check(&mut self, test: &DataTest) -> Outcome {
        let sql = test.sql.trim().trim_end_matches(';');
        let failed = |e: sqlx::Error| Outcome::Failed {
            rows: None,
            error: format!("the test query failed: {e}"),
        };
        let count = sqlx::query_scalar(&format!("select count(*) from ({sql}) as failures"))
            .fetch_one(&mut *self.conn)
            .await;
        let failures: i64 = match count {
            Ok(0) => return Outcome::Done(0),
            Ok(n) => n,
            Err(e) => return failed(e),
        };
        let sample = sqlx::query_scalar::<_, String>(&format!(
            "select row_to_json(failures)::text from ({sql}) as failures limit {SAMPLE_ROWS}"
        ))
        .fetch_all(&mut *self.conn)
        .await;
        match sample {
            Ok(sample) => Outcome::Failed {
                rows: Some(failures),
                error: format!(
                    "{failures} failing row(s), for example:\n  {}",
                    sample.join("\n  ")
                ),
            },
            Err(e) => failed(e),
        }
    }
}

/// Merges the rows changed within the lookback window into an incremental model.
async fn merge(tx: &mut PgConnection, model: &Model, lookback_days: u32) -> Result<i64, String> {
    let name = &model.name;
    let (Some(key), Some(column)) = (&model.unique_key, &model.incremental_column) else {
        return Err(format!(
            "{name} is incremental without unique_key and incremental_column"
        ));
    };
    let columns: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns \
         where table_schema = $1 and table_name = $2 order by ordinal_position",
    )
    .bind(&model.schema)
    .bind(name.split('.').nth(1).unwrap_or_default())
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let list = columns.join(", ");
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| *c != key)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let statement = format!(
        "insert into {name} ({list}) \
         select {list} from ({sql}) as model \
         where model.{column} >= coalesce((select max({column}) from {name}), '-infinity') - make_interval(days => $1) \
         on conflict ({key}) do update set {updates}",
        sql = model.select(),
        updates = updates.join(", "),
    );
    let rows = sqlx::query(&statement)
        .bind(i32::try_from(lookback_days).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?
        .rows_affected();
    Ok(i64::try_from(rows).unwrap_or(i64::MAX))
}
