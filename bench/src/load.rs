//! Stage 4: the loader, bronze Parquet in object storage into PostgreSQL, against a
//! row-by-row `INSERT` baseline on the same data.
//!
//! A child process fills a fresh lake prefix with bronze files ([`super::fill`]). The real
//! [`Loader`] then loads them in one audited run into a fresh database (a binary `COPY` per
//! file straight into `raw.transactions`, after asking which of its events are loaded
//! already). The baseline reads the first files
//! again, validates their rows with the loader's own code ([`RunRows`]) and inserts them one
//! prepared `INSERT` per row, in one transaction, into a second fresh database: what a loader
//! without `COPY` would do. Both figures include reading and validating the files.

use std::collections::{HashMap, HashSet};
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
use fintech_workers::loader::rows::{COPY_COLUMNS, Lineage, RunRows};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics};
use fintech_workers::storage::StorageOptions;
use fintech_workers::warehouse::WarehouseOptions;
use fintech_workers::warehouse::copy_binary;

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
    let replay_url = scratch.database(&args.database_url, "load_replay").await?;

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

    // The bound: the server's own time for the same rows.
    let server = server_copy_time(&copy_url, &replay_url, rows).await?;
    report
        .number("server_copy_seconds", server.as_secs_f64(), 3)
        .number(
            "server_share",
            server.as_secs_f64() / elapsed.as_secs_f64().max(f64::EPSILON),
            2,
        );

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
        .target(Target::at_least("rows_per_sec", 400_000.0, "rows/s"))
        .target(Target::peak_rss());
    Ok(())
}

/// The server's own time for the `rows` rows the loader stored in `copy_url`: they are read
/// back as binary `COPY` data into a file, then copied from it in one `COPY` and one
/// transaction into `replay_url`, a fresh database with the same schema. What a load takes
/// beyond this is the loader's own: reading, validating and encoding bronze, and asking
/// which events are loaded already.
async fn server_copy_time(
    copy_url: &str,
    replay_url: &str,
    rows: u64,
) -> anyhow::Result<std::time::Duration> {
    use futures::TryStreamExt as _;
    use sqlx::Connection as _;
    use tokio::io::AsyncWriteExt as _;

    let columns = COPY_COLUMNS.as_str();
    let spool =
        std::env::temp_dir().join(format!("fintech-bench-load-{}.copy", std::process::id()));
    let replay = async {
        let mut source = sqlx::PgConnection::connect(copy_url).await?;
        let mut file = tokio::fs::File::create(&spool).await?;
        let mut data = source
            .copy_out_raw(&format!(
                "copy (select {columns} from raw.transactions) to stdout (format binary)"
            ))
            .await?;
        while let Some(chunk) = data.try_next().await? {
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        drop(data);
        source.close().await?;

        let pool = WarehouseOptions::url(replay_url, 1)
            .connect_and_migrate()
            .await?;
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "copy raw.transactions ({columns}) from stdin (format binary)"
            ))
            .await?;
        copy.read_from(tokio::fs::File::open(&spool).await?).await?;
        let stored = copy.finish().await?;
        tx.commit().await?;
        let elapsed = started.elapsed();
        pool.close().await;
        if stored != rows {
            bail!("the replay stored {stored} rows of {rows}");
        }
        Ok(elapsed)
    }
    .await;
    let _ = std::fs::remove_file(&spool);
    replay
}

/// The baseline: the first `rows` valid rows of `files`, one prepared `INSERT` each, in one
/// transaction. Returns the rows inserted and the time from the first read to the commit.
async fn insert_row_by_row(
    pool: &PgPool,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    files: &[String],
    rows: u64,
) -> anyhow::Result<(u64, std::time::Duration)> {
    let (statement, types) = insert_statement(pool).await?;
    let lineage = Lineage {
        run_id: uuid::Uuid::new_v4(),
        loaded_at: chrono::Utc::now(),
    };
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
            valid.add_batch(file, &batch?, lineage)?;
        }
    }
    let Some((data, _)) = valid.take_copy_data(&HashSet::new()) else {
        bail!("the files hold no valid row");
    };
    let copied = copy_binary::read_rows(&data).context("reading back the loader's COPY rows")?;
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for row in copied.iter().take(usize::try_from(rows)?) {
        let mut query = sqlx::query(&statement);
        for (field, kind) in row.iter().zip(&types) {
            query = bind_field(query, *kind, *field)?;
        }
        inserted += query.execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok((inserted, started.elapsed()))
}

/// The PostgreSQL types of the loader's `COPY` columns, as far as the baseline binds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Uuid,
    Text,
    Integer,
    BigInt,
    Boolean,
    Double,
    Timestamp,
    Numeric,
}

/// `INSERT INTO raw.transactions (<COPY_COLUMNS>) VALUES ($1, …) ON CONFLICT DO NOTHING`, and
/// each column's type as the catalog gives it.
async fn insert_statement(pool: &PgPool) -> anyhow::Result<(String, Vec<FieldType>)> {
    let types: HashMap<String, String> = sqlx::query_as(
        "select attname::text, format_type(atttypid, atttypmod) from pg_attribute \
         where attrelid = 'raw.transactions'::regclass and attnum > 0 and not attisdropped",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let mut kinds = Vec::new();
    for column in COPY_COLUMNS.split(',').map(str::trim) {
        let name = types
            .get(column)
            .with_context(|| format!("raw.transactions has no column {column}"))?;
        kinds.push(match name.as_str() {
            "uuid" => FieldType::Uuid,
            "text" => FieldType::Text,
            "integer" => FieldType::Integer,
            "bigint" => FieldType::BigInt,
            "boolean" => FieldType::Boolean,
            "double precision" => FieldType::Double,
            "timestamp with time zone" => FieldType::Timestamp,
            numeric if numeric.starts_with("numeric") => FieldType::Numeric,
            other => bail!("the baseline does not bind {column} of type {other}"),
        });
    }
    let values: Vec<String> = (1..=kinds.len()).map(|i| format!("${i}")).collect();
    let statement = format!(
        "insert into raw.transactions ({}) values ({}) on conflict (event_id) do nothing",
        COPY_COLUMNS.as_str(),
        values.join(", ")
    );
    Ok((statement, kinds))
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds one binary `COPY` field (`None` for NULL) as the typed value it stands for.
fn bind_field<'q>(
    query: Query<'q>,
    kind: FieldType,
    field: Option<&[u8]>,
) -> anyhow::Result<Query<'q>> {
    Ok(match kind {
        FieldType::Uuid => query.bind(field.map(uuid::Uuid::from_slice).transpose()?),
        FieldType::Text => query.bind(field.map(|f| String::from_utf8(f.to_vec())).transpose()?),
        FieldType::Integer => query.bind(
            field
                .map(|f| fixed(f).map(i32::from_be_bytes))
                .transpose()?,
        ),
        FieldType::BigInt => query.bind(
            field
                .map(|f| fixed(f).map(i64::from_be_bytes))
                .transpose()?,
        ),
        FieldType::Boolean => query.bind(field.map(|f| f == [1])),
        FieldType::Double => query.bind(
            field
                .map(|f| fixed(f).map(f64::from_be_bytes))
                .transpose()?,
        ),
        FieldType::Timestamp => query.bind(field.map(|f| fixed(f).map(timestamp)).transpose()?),
        FieldType::Numeric => query.bind(field.map(numeric).transpose()?),
    })
}

/// A fixed-width binary field as its `N` bytes.
fn fixed<const N: usize>(bytes: &[u8]) -> anyhow::Result<[u8; N]> {
    bytes
        .try_into()
        .with_context(|| format!("a field of {} bytes, not {N}", bytes.len()))
}

/// A binary `timestamptz` (µs since 2000-01-01) as a time; the infinities as the ends of
/// chrono's range, which the loader's rows never hold.
fn timestamp(bytes: [u8; 8]) -> chrono::DateTime<chrono::Utc> {
    let micros = i64::from_be_bytes(bytes).saturating_add(copy_binary::POSTGRES_EPOCH_MICROS);
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// A binary `numeric` (base-10,000 digits) as a decimal.
fn numeric(bytes: &[u8]) -> anyhow::Result<rust_decimal::Decimal> {
    let word = |i: usize| -> anyhow::Result<i16> {
        let bytes = bytes.get(i..i + 2).context("a numeric field cut short")?;
        Ok(i16::from_be_bytes(fixed(bytes)?))
    };
    let (ndigits, weight, sign) = (word(0)?, word(2)?, word(4)? as u16);
    // value × 10,000 = Σ digit × 10,000^(weight − i + 1): every digit the loader writes
    // stands for 10,000^-1 or more.
    let mut scaled: i128 = 0;
    for i in 0..ndigits {
        let power =
            u32::try_from(weight - i + 1).context("a numeric with more than four places")?;
        scaled += i128::from(word(8 + 2 * i as usize)?) * 10_000_i128.pow(power);
    }
    if sign == 0x4000 {
        scaled = -scaled;
    }
    Ok(rust_decimal::Decimal::from_i128_with_scale(scaled, 4).round_dp(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_reads_amounts_and_times_as_the_loader_wrote_them() {
        use fintech_workers::warehouse::copy_binary::{push_hundredths, push_timestamp};
        for (cents, text) in [
            (123_456, "1234.56"),
            (5, "0.05"),
            (1_000_000, "10000.00"),
            (-1_205, "-12.05"),
        ] {
            let mut field = Vec::new();
            push_hundredths(&mut field, cents);
            assert_eq!(numeric(&field[4..]).unwrap().to_string(), text);
        }
        let mut field = Vec::new();
        push_timestamp(&mut field, 1_795_484_072_091_362);
        assert_eq!(
            timestamp(field[4..].try_into().unwrap()).timestamp_micros(),
            1_795_484_072_091_362
        );
    }
}
