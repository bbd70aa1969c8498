//! Stage 4: the loader, bronze Parquet in object storage into PostgreSQL, against a
//! row-by-row `INSERT` baseline on the same data.
//!
//! A child process fills a fresh lake prefix with bronze files ([`super::fill`]). The real
//! [`Loader`] then loads them in one audited run into a fresh database (`COPY` into a staging
//! table, then `INSERT … SELECT … ON CONFLICT DO NOTHING`). The baseline reads the first files
//! again, validates their rows with the loader's own code ([`RunRows`]) and inserts them one
//! prepared `INSERT` per row, in one transaction, into a second fresh database: what a loader
//! without `COPY` would do. Both figures include reading and validating the files.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sqlx::PgPool;

use super::process;
use super::report::{MB, Report, Target};
use super::scratch::{self, Scratch};
use fintech_workers::bronze::Lake;
use fintech_workers::loader::rows::{COPY_COLUMNS, RunRows};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics};
use fintech_workers::storage::StorageOptions;
use fintech_workers::warehouse::WarehouseOptions;

/// Flags of `fintech-bench load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The lake; the benchmark writes below a fresh prefix of it.
    #[command(flatten)]
    pub storage: StorageOptions,

    /// The PostgreSQL server; the benchmark creates databases of its own on it (the user
    /// needs CREATEDB) and drops them at the end.
    #[arg(long, env = "FINTECH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Rows to load with COPY.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// Rows per streamer batch when filling the lake.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: u64,

    /// Rows of the row-by-row INSERT baseline: the first rows of the same files.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub insert_rows: u64,

    /// The loader's --max-files-per-run.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_files_per_run: u64,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Keep the bronze files and the databases instead of deleting them.
    #[arg(long)]
    pub keep: bool,
}

/// Runs the benchmark.
pub async fn run(args: &LoadArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "load",
        "the loader: bronze Parquet in object storage into PostgreSQL with COPY, against row-by-row INSERT",
    );
    let mut scratch = Scratch::default();
    let lake = scratch.lake(&args.storage, "bench-load");
    report
        .parameter("rows", args.rows)
        .parameter("batch_rows", args.batch_rows)
        .parameter("insert_rows", args.insert_rows)
        .parameter("max_files_per_run", args.max_files_per_run)
        .parameter("lake_url", lake.lake_url.clone());
    let result = measure(args, &lake, &mut scratch, &mut report).await;
    scratch.remove(args.keep).await;
    result?;
    Ok(report)
}

/// Fills `lake` with `rows` messages of the benchmarks' stream after `skip`, in a child
/// process, and checks it wrote them all.
pub async fn fill(
    lake: &StorageOptions,
    rows: u64,
    skip: u64,
    batch_rows: u64,
    seed: u64,
) -> anyhow::Result<process::Finished> {
    let mut command = Command::new(process::bench_binary()?);
    command
        .args(["fill-lake", "--format", "json", "--log-format", "json"])
        .args(scratch::lake_flags(lake))
        .args(["--rows", &rows.to_string()])
        .args(["--skip", &skip.to_string()])
        .args(["--batch-rows", &batch_rows.to_string()])
        .args(["--seed", &seed.to_string()]);
    let finished = process::run("filling the lake (fintech-bench fill-lake)", command).await?;
    let written = finished.json()?["rows"].as_u64().unwrap_or_default();
    if written != rows {
        bail!("the fill wrote {written} rows instead of {rows}");
    }
    Ok(finished)
}

async fn measure(
    args: &LoadArgs,
    lake: &StorageOptions,
    scratch: &mut Scratch,
    report: &mut Report,
) -> anyhow::Result<()> {
    let filled = fill(lake, args.rows, 0, args.batch_rows, args.seed).await?;
    report.number("fill_seconds", filled.wall.as_secs_f64(), 3);
    let copy_url = scratch.database(&args.database_url, "load_copy").await?;
    let insert_url = scratch.database(&args.database_url, "load_insert").await?;

    let lake = Lake::open(lake)?;
    let store = lake.store().clone();
    let pool = WarehouseOptions::url(&copy_url, 4)
        .connect_and_migrate()
        .await?;
    let config = LoaderConfig {
        max_files_per_run: usize::try_from(args.max_files_per_run)?,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(pool.clone(), lake, config, LoaderMetrics::default());
    let cpu = process::CpuClock::start();
    let started = Instant::now();
    let (mut rows, mut runs) = (0u64, 0u64);
    // More files than one run takes wait for the next run, as with `fintech load`.
    loop {
        let run = loader
            .run_once()
            .await
            .map_err(|failure| anyhow::anyhow!("load run failed: {}", failure.error))?;
        if let Some(error) = run.error {
            bail!("load run {} failed: {error}", run.run_id);
        }
        rows += run.rows_loaded;
        runs += 1;
        if run.files_loaded == 0 || rows >= args.rows {
            break;
        }
    }
    let elapsed = started.elapsed();
    let cpu_used = cpu.used();
    if rows != args.rows {
        bail!(
            "the loader loaded {rows} rows of the {} in bronze",
            args.rows
        );
    }
    let (bronze_bytes, files): (i64, i64) = sqlx::query_as(
        "select coalesce(sum(size_bytes), 0)::bigint, count(*) from metadata.loaded_files",
    )
    .fetch_one(&pool)
    .await?;
    let paths: Vec<String> =
        sqlx::query_scalar("select path from metadata.loaded_files order by path")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    report
        .throughput(
            "",
            rows,
            elapsed,
            Some(u64::try_from(bronze_bytes).unwrap_or_default()),
        )
        .cpu(cpu_used, elapsed)
        .figure("runs", runs)
        .figure("files", files)
        .number("bronze_mb", bronze_bytes as f64 / MB, 1)
        .peak_rss();

    let pool = WarehouseOptions::url(&insert_url, 1)
        .connect_and_migrate()
        .await?;
    let (inserted, elapsed) = insert_row_by_row(&pool, &store, &paths, args.insert_rows).await?;
    pool.close().await;
    report.throughput("insert_", inserted, elapsed, None);
    let copy_rate = report.get_f64("rows_per_sec").unwrap_or_default();
    let insert_rate = report.get_f64("insert_rows_per_sec").unwrap_or_default();
    if insert_rate > 0.0 {
        report.number("copy_speedup", copy_rate / insert_rate, 1);
    }
    report
        .target(Target::at_least("rows_per_sec", 200_000.0, "rows/s"))
        .target(Target::peak_rss());
    Ok(())
}

/// The baseline: the first `rows` valid rows of `files`, one prepared `INSERT` each, in one
/// transaction. Returns the rows inserted and the time from the first read to the commit.
async fn insert_row_by_row(
    pool: &PgPool,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    files: &[String],
    rows: u64,
) -> anyhow::Result<(u64, std::time::Duration)> {
    let statement = insert_statement(pool).await?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut valid = RunRows::default();
    for file in files {
        if valid.stats.accepted >= rows {
            break;
        }
        let bytes = store
            .get(&Path::from(file.as_str()))
            .await?
            .bytes()
            .await
            .with_context(|| format!("reading {file}"))?;
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            valid.add_batch(file, &batch?, &run_id)?;
        }
    }
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    let lines = valid
        .copy_text
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty());
    for line in lines.take(usize::try_from(rows)?) {
        let line = std::str::from_utf8(line)?;
        let mut query = sqlx::query(&statement);
        for field in line.split('\t') {
            query = query.bind(copy_field(field));
        }
        inserted += query.execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok((inserted, started.elapsed()))
}

/// `INSERT INTO raw.transactions (<COPY_COLUMNS>) VALUES ($1::<type>, …)`, with each column's
/// type read from the catalog, so that the baseline binds the very text `COPY` receives.
async fn insert_statement(pool: &PgPool) -> anyhow::Result<String> {
    let types: HashMap<String, String> = sqlx::query_as(
        "select attname::text, format_type(atttypid, atttypmod) from pg_attribute \
         where attrelid = 'raw.transactions'::regclass and attnum > 0 and not attisdropped",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let mut values = Vec::new();
    for (i, column) in COPY_COLUMNS.split(',').map(str::trim).enumerate() {
        let kind = types
            .get(column)
            .with_context(|| format!("raw.transactions has no column {column}"))?;
        values.push(format!("${}::{kind}", i + 1));
    }
    Ok(format!(
        "insert into raw.transactions ({}) values ({}) on conflict (event_id) do nothing",
        COPY_COLUMNS.as_str(),
        values.join(", ")
    ))
}

/// One field of a `COPY … (FORMAT text)` line as the value it stands for.
fn copy_field(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    let mut value = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => value.push('\t'),
            Some('n') => value.push('\n'),
            Some('r') => value.push('\r'),
            Some(other) => value.push(other),
            None => value.push('\\'),
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fintech_workers::warehouse::copy_text::push_text;

    #[test]
    fn copy_fields_read_back_what_the_loader_escaped() {
        let original = "tab\there\nnewline \\ backslash\r";
        let mut line = Vec::new();
        push_text(&mut line, original);
        let field = std::str::from_utf8(&line).unwrap().trim_end_matches('\t');
        assert_eq!(copy_field(field).as_deref(), Some(original));
        assert_eq!(copy_field("\\N"), None);
        assert_eq!(copy_field("plain").as_deref(), Some("plain"));
    }
}
