//! `fintech quickstart`: the whole pipeline in one process, nothing to install.
//!
//! The same stage code as the cluster, with embedded endpoints: the producer writes into a
//! bounded in-process channel instead of Kafka, the streamer writes bronze into a local
//! folder instead of S3, and the loader and the transforms use the embedded PostgreSQL. A
//! second run on the same folder continues: new events on a later stretch of the timeline,
//! new bronze files, an incremental load and merge.

pub mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, Utc};

use crate::bank::file::file_name;
use crate::bank::load::BankFiles;
use crate::bank::statement::{BankFaults, DayStatement};
use crate::bronze::{Lake, layout};
use crate::faults::FaultRates;
use crate::in_process::{Flowed, InProcessPipeline, TOPIC};
use crate::kaggle::KaggleLocation;
use crate::loader::rows::EventTimeBounds;
use crate::loader::{Loader, LoaderConfig, LoaderMetrics, RunFailed, RunReport, count};
use crate::producer::{EventStream, KaggleTime, ProducerMetrics, StreamConfig};
use crate::source::CommittedPositions;
use crate::storage::StorageOptions;
use crate::streamer::{BatchPolicy, StreamSummary, StreamerMetrics};
use crate::transform::{self, NodeKind, NodeStatus, Project, TransformOptions, TransformReport};
use crate::warehouse::EmbeddedWarehouse;

/// Partitions of the in-process topic.
const PARTITIONS: i32 = 3;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickstartConfig {
    /// Folder for the lake, the warehouse, the state and the report.
    pub out: PathBuf,
    /// Messages to produce in this run.
    pub events: u64,
    /// Days of payments those messages cover.
    pub days: u32,
    /// Seed of the first run; later runs derive theirs from it.
    pub seed: u64,
    /// A Kaggle export to mix in.
    pub kaggle_csv: Option<PathBuf>,
    /// Fault injection rates.
    pub faults: FaultRates,
    /// Share of payments that settle later.
    pub settlement_share: f64,
}

/// What a run did, for the summary.
#[derive(Debug)]
pub struct QuickstartSummary {
    /// Which run on this folder this was (1 for the first).
    pub run: u32,
    /// Messages produced.
    pub produced: u64,
    /// What the streamer wrote.
    pub streamed: StreamSummary,
    /// The load run.
    pub load: RunReport,
    /// The transform run.
    pub transform: TransformReport,
    /// Rows per layer, in pipeline order, over all runs.
    pub layers: Vec<(String, i64)>,
    /// The first lines of `marts.daily_revenue_summary`.
    pub daily_summary: Vec<String>,
    /// The bank-file load run.
    pub bank_load: RunReport,
    /// `marts.bank_reconciliation_daily` summed over every day, one line per outcome.
    pub reconciliation: Vec<String>,
    /// The report file.
    pub report: PathBuf,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// What a folder remembers between runs.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    runs: u32,
    /// Where the simulated timeline stopped.
    timeline_end: Option<DateTime<Utc>>,
    /// The in-process topic's committed offsets, so a new run never reuses an offset (and
    /// therefore a bronze file name) of an earlier one.
    offsets: HashMap<i32, i64>,
}

/// Any error of a stage, kept with its sources so that the command prints the whole chain.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the quickstart.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    /// The output folder or its state could not be used.
    #[error("{action} {path}")]
    Folder {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A stage failed.
    #[error("the {stage} stage failed")]
    Stage {
        /// Which stage.
        stage: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
}

fn stage<E: Into<BoxError>>(stage: &'static str) -> impl Fn(E) -> QuickstartError {
    move |error| QuickstartError::Stage {
        stage,
        source: error.into(),
    }
}

fn folder_error<'a, E: Into<BoxError>>(
    action: &'static str,
    path: &'a Path,
) -> impl Fn(E) -> QuickstartError + 'a {
    move |error| QuickstartError::Folder {
        action,
        path: path.display().to_string(),
        source: error.into(),
    }
}

/// Runs the pipeline once on `config.out`.
pub async fn run(config: &QuickstartConfig) -> Result<QuickstartSummary, QuickstartError> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.out).map_err(folder_error("creating", &config.out))?;
    let out = config
        .out
        .canonicalize()
        .map_err(folder_error("resolving", &config.out))?;
    let state_path = out.join("quickstart-state.json");
    let mut state = read_state(&state_path)?;
    let run_number = state.runs + 1;

    let lake = StorageOptions::local(&out.join("lake"))
        .and_then(|options| Lake::open(&options))
        .map_err(stage("lake"))?;
    let warehouse = EmbeddedWarehouse::start(&out.join("warehouse")).map_err(stage("warehouse"))?;
    let pool = warehouse
        .options()
        .connect_and_migrate()
        .await
        .map_err(stage("warehouse"))?;

    // Produce and stream concurrently through the bounded channel.
    let start = state.timeline_end.unwrap_or_else(|| {
        let today = Utc::now().date_naive();
        let first = today
            .checked_sub_days(Days::new(u64::from(config.days)))
            .unwrap_or(today);
        first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
    });
    let stream_config = StreamConfig {
        // Each run draws new events, so a rerun adds payments instead of repeating them.
        seed: config
            .seed
            .wrapping_add(u64::from(run_number - 1).wrapping_mul(1_000_003)),
        kaggle_csv: config.kaggle_csv.clone().map(KaggleLocation::File),
        kaggle_time: KaggleTime::Rebased,
        simulated_start: Some(start),
        payments_per_day: u32::try_from(config.events / u64::from(config.days.max(1)))
            .unwrap_or(u32::MAX)
            .max(1),
        settlement_share: config.settlement_share,
        faults: config.faults,
        ..StreamConfig::default()
    };
    let mut events =
        EventStream::new(&stream_config, ProducerMetrics::default()).map_err(stage("produce"))?;
    // The in-process topic cannot replay, so a new run never reuses an offset: it starts
    // after the last committed offset and after any batch an interrupted run wrote.
    let mut offsets = state.offsets.clone();
    for partition in 0..PARTITIONS {
        let record = lake
            .read_batch_record(TOPIC, partition)
            .await
            .map_err(stage("stream"))?;
        if let Some(record) = record {
            let next = offsets.entry(partition).or_insert(0);
            *next = (*next).max(record.range.last_offset + 1);
        }
    }
    let positions = CommittedPositions::default();
    if let Ok(mut committed) = positions.lock() {
        committed.extend(offsets);
    }
    let streamer_metrics = StreamerMetrics::default();
    let pipeline = InProcessPipeline::new(lake.clone(), PARTITIONS)
        .with_positions(positions.clone())
        .with_policy(BatchPolicy {
            max_rows: 50_000,
            ..BatchPolicy::default()
        })
        .with_metrics(streamer_metrics.clone());

    let produce_bar = crate::telemetry::progress_bar(Some(config.events), "produce");
    let stream_bar = crate::telemetry::progress_bar(Some(config.events), "stream");
    let watcher = {
        let stream_bar = stream_bar.clone();
        tokio::spawn(async move {
            loop {
                stream_bar.set_position(streamer_metrics.messages_read());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let flowed = pipeline.run(&mut events, config.events, &produce_bar).await;
    watcher.abort();
    let Flowed { produced, streamed } = flowed.map_err(stage("stream"))?;
    stream_bar.set_position(streamed.messages);
    stream_bar.finish();
    tracing::info!(
        produced = produced.sent,
        rows = streamed.rows,
        dead_letters = streamed.dead_letters,
        "produced and streamed"
    );

    let bank_files = write_bank_files(&out, &stream_config, config.events, start, events.now())?;

    // Load and transform on the embedded warehouse.
    let load_bar = crate::telemetry::progress_bar(None, "load");
    load_bar.set_message("bronze files into silver: reading, validating, de-duplicating");
    load_bar.enable_steady_tick(Duration::from_millis(120));
    // The simulated timeline of a later run reaches past today: its payments are dated as
    // far ahead as the timeline went, which the loader must accept here.
    let mut bounds = EventTimeBounds::default();
    bounds.max_lead = bounds
        .max_lead
        .max(events.now() - Utc::now() + bounds.max_lead);
    let config = LoaderConfig {
        event_time_bounds: bounds,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(pool.clone(), lake.clone(), config, LoaderMetrics::default());
    let load = loader
        .run_once()
        .await
        .map_err(|failure| stage("load")(RunFailed::from(failure)))?;
    tracing::info!(
        status = %load.status,
        rows_loaded = load.rows_loaded,
        "loaded"
    );
    audited_success(&load)?;
    let bank_load = loader
        .load_bank_files(&bank_files)
        .await
        .map_err(|failure| stage("load")(RunFailed::from(failure)))?;
    audited_success(&bank_load)?;
    load_bar.finish_with_message(format!(
        "{} files, {} rows into silver, {} rejected, {} already there; {} bank files, {} lines",
        load.files_loaded,
        load.rows_loaded,
        load.stats.rejected_total(),
        load.rows_duplicate,
        bank_load.files_loaded,
        bank_load.rows_loaded
    ));
    let transform_bar = crate::telemetry::progress_bar(None, "transform");
    let project = Project::embedded().map_err(stage("transform"))?;
    transform_bar.set_message(format!(
        "{} models and {} data tests into gold",
        project.models.len(),
        project.tests.len()
    ));
    transform_bar.enable_steady_tick(Duration::from_millis(120));
    let options = TransformOptions::default();
    let transform = transform::run(&pool, &project, &options)
        .await
        .map_err(stage("transform"))?;
    transform_bar.finish_with_message(transform.summary_line());
    tracing::info!(failed = transform.failed(), "transformed");

    // Totals over every run, and the report.
    let bronze_rows = lake
        .stored_positions(layout::TRANSACTIONS_PREFIX)
        .await
        .map_err(stage("summary"))?
        .len();
    let dead_letters = lake
        .stored_positions(layout::DEAD_LETTER_PREFIX)
        .await
        .map_err(stage("summary"))?
        .len();
    let mut conn = pool.acquire().await.map_err(stage("summary"))?;
    let mut layers = vec![
        ("produced (this run)".to_owned(), count(produced.sent)),
        ("bronze rows".to_owned(), count(bronze_rows as u64)),
        ("dead letters".to_owned(), count(dead_letters as u64)),
    ];
    for (label, sql) in [
        (
            "silver rows (raw.transactions)",
            "select count(*) from raw.transactions",
        ),
        (
            "rejected rows (raw.rejected_transactions)",
            "select count(*) from raw.rejected_transactions",
        ),
        (
            "gold payments (marts.fact_transactions)",
            "select count(*) from marts.fact_transactions",
        ),
        (
            "gold days x methods (marts.daily_revenue_summary)",
            "select count(*) from marts.daily_revenue_summary",
        ),
    ] {
        let rows: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(stage("summary"))?;
        layers.push((label.to_owned(), rows));
    }
    let daily_summary: Vec<String> = sqlx::query_scalar(
        "select format('%s  %-10s  %6s payments  %6s successful  ₹%14s gross  ₹%10s avg  fraud %s', \
         payment_date, payment_method, count_transactions, count_successful, gross_value_inr, \
         average_ticket_inr, fraud_rate) \
         from marts.daily_revenue_summary order by payment_date, payment_method limit 12",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(stage("summary"))?;
    let reconciliation: Vec<String> = sqlx::query_scalar(
        "select format('%-20s  %8s transactions  bank %16s  stream %16s  %s', outcome, \
         sum(count_items), sum(bank_amount), sum(stream_amount), currency) \
         from marts.bank_reconciliation_daily group by outcome, currency \
         order by outcome = 'matched' desc, outcome, currency",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(stage("summary"))?;
    let dead_letters_by_kind = lake
        .count_by(layout::DEAD_LETTER_PREFIX, "error_kind")
        .await
        .map_err(stage("report"))?
        .into_iter()
        .map(|(label, count)| report::Bar {
            label,
            value: count as f64,
        })
        .collect();
    let data = report::gather(&mut conn, layers.clone(), dead_letters_by_kind)
        .await
        .map_err(stage("report"))?;
    let report_path = out.join("report.html");
    std::fs::write(
        &report_path,
        report::render(&data, &Utc::now().to_rfc3339()),
    )
    .map_err(folder_error("writing", &report_path))?;
    tracing::info!(report = %report_path.display(), "report written");
    // Flush everything to the data files, so the next start needs no recovery.
    sqlx::query("checkpoint")
        .execute(&mut *conn)
        .await
        .map_err(stage("warehouse"))?;
    drop(conn);
    pool.close().await;
    warehouse.shutdown().await.map_err(stage("warehouse"))?;
    tracing::info!("warehouse stopped");

    state.runs = run_number;
    state.timeline_end = Some(events.now());
    state.offsets = positions.lock().map(|p| p.clone()).unwrap_or_default();
    write_state(&state_path, &state)?;
    Ok(QuickstartSummary {
        run: run_number,
        produced: produced.sent,
        streamed,
        load,
        transform,
        layers,
        daily_summary,
        bank_load,
        reconciliation,
        report: report_path,
        elapsed: started.elapsed(),
    })
}

/// Writes the settlement file a bank would send for every day this run's timeline covered
/// whole (`start` to `end`), into `batch_files/` of the folder, from the same messages the
/// producer made (`stream` is deterministic, so it is made again). Each file carries one fault
/// of every kind when the day has enough settlements, so the reconciliation has something to
/// find. A day the timeline cut (a later run's first) gets no file.
fn write_bank_files(
    out: &Path,
    stream: &StreamConfig,
    messages: u64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<BankFiles, QuickstartError> {
    let folder = out.join("batch_files");
    let files = StorageOptions::local(&folder)
        .and_then(|options| BankFiles::at(&options))
        .map_err(stage("bank files"))?;
    let first = if start.time() == chrono::NaiveTime::MIN {
        start.date_naive()
    } else {
        start.date_naive() + Days::new(1)
    };
    let mut days: Vec<DayStatement> = first
        .iter_days()
        .take_while(|day| *day < end.date_naive())
        .map(DayStatement::new)
        .collect();
    if days.is_empty() {
        return Ok(files);
    }
    let mut again =
        EventStream::new(stream, ProducerMetrics::default()).map_err(stage("bank files"))?;
    for _ in 0..messages {
        let event = again.next_message().map_err(stage("bank files"))?.event;
        let date = event.event_time.date_naive();
        if let Some(day) = days.iter_mut().find(|d| d.day() == date) {
            day.record(&event);
        }
    }
    for (n, day) in days.iter().enumerate() {
        let faults = if day.len() >= 50 {
            BankFaults::ONE_OF_EACH
        } else {
            BankFaults::default()
        };
        let (text, injected) = day
            .render(&faults, stream.seed.wrapping_add(n as u64))
            .map_err(stage("bank files"))?;
        let path = folder.join(file_name(day.day()));
        std::fs::write(&path, text).map_err(folder_error("writing", &path))?;
        tracing::info!(file = %path.display(), settled = day.len(), faults = injected.len(), "bank file written");
    }
    Ok(files)
}

/// A load run the audit records as failed, as the load stage's error.
fn audited_success(report: &RunReport) -> Result<(), QuickstartError> {
    match &report.error {
        Some(error) => Err(stage("load")(RunFailed {
            run_id: report.run_id,
            error: error.clone(),
        })),
        None => Ok(()),
    }
}

fn read_state(path: &Path) -> Result<State, QuickstartError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(folder_error("reading", path)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(error) => Err(folder_error("reading", path)(error)),
    }
}

fn write_state(path: &Path, state: &State) -> Result<(), QuickstartError> {
    let text = serde_json::to_vec_pretty(state)
        .unwrap_or_else(|e| unreachable!("the state serialises: {e}"));
    std::fs::write(path, text).map_err(folder_error("writing", path))
}

impl QuickstartSummary {
    /// The summary printed at the end of a run.
    pub fn render(&self) -> String {
        let mut text = format!(
            "\nfintech quickstart, run {} on this folder, {:.1} s\n\nRows per layer\n",
            self.run,
            self.elapsed.as_secs_f64()
        );
        for (layer, rows) in &self.layers {
            text.push_str(&format!("  {layer:<52} {rows:>10}\n"));
        }
        let load = &self.load;
        text.push_str(&format!(
            "\nLoad audit (metadata.load_audit)\n  run {}  {}  files {}/{}  read {}  loaded {}  rejected {}  duplicate {}\n",
            load.run_id,
            load.status,
            load.files_loaded,
            load.files_pending,
            load.stats.read,
            load.rows_loaded,
            load.stats.rejected_total(),
            load.rows_duplicate
        ));
        let tests: Vec<_> = self
            .transform
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Test)
            .collect();
        let passed = tests
            .iter()
            .filter(|n| n.status == NodeStatus::Success)
            .count();
        text.push_str(&format!(
            "\nData tests: {passed} of {} passed\n",
            tests.len()
        ));
        for failed in tests.iter().filter(|n| n.status != NodeStatus::Success) {
            text.push_str(&format!(
                "  {} {}: {}\n",
                failed.status,
                failed.node,
                failed.error.as_deref().unwrap_or("")
            ));
        }
        text.push_str("\nmarts.daily_revenue_summary (first lines)\n");
        for line in &self.daily_summary {
            text.push_str(&format!("  {line}\n"));
        }
        text.push_str(&format!(
            "\nBank reconciliation (marts.bank_reconciliation_daily, every day; this run loaded {} bank files, {} lines, {} unreadable)\n",
            self.bank_load.files_loaded,
            self.bank_load.rows_loaded,
            self.bank_load.stats.rejected_total()
        ));
        for line in &self.reconciliation {
            text.push_str(&format!("  {line}\n"));
        }
        text.push_str(&format!("\nReport: {}\n", self.report.display()));
        text
    }
}
