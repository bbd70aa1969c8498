//! `fintech-bench soak`: the whole pipeline for minutes under faults, then every message
//! accounted for.
//!
//! Two producers (one on a simulated timeline that started a week ago, so that settlements
//! fall due within minutes; one with its clock days behind, through libfaketime) write into one
//! topic, with malformed, mistyped, duplicated and invalid events among them. Two streamers
//! in one group write bronze; two loaders load it into one
//! database while replays of today's bronze and transform runs come and go. Every
//! `--kill-every-secs` one streamer or loader is killed with SIGKILL and started again, and
//! some transform runs are killed mid-run. At the end the producers stop, the streamers drain
//! the topic, and a last load and transform run; then the checks reconcile the layers:
//!
//! - every Kafka offset of the topic is in bronze or the dead-letter queue exactly once;
//! - every bronze row is in silver, or rejected with a reason, or a repeat of an event that
//!   is in silver; and silver holds nothing bronze does not;
//! - the fact table holds one row per payment in silver, and none silver does not know.
//!
//! Any check that fails makes the command fail, after printing what it found. The figures
//! (counts per layer, kills, runs) are the report.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;

use super::process;
use super::report::Report;
use super::scratch::{self, Scratch};
use fintech_workers::bronze::Lake;
use fintech_workers::storage::StorageOptions;

/// Partitions of the soak's topic.
const PARTITIONS: i32 = 3;

/// Flags of `fintech-bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The lake; the soak writes below a fresh prefix of it.
    #[command(flatten)]
    pub storage: StorageOptions,

    /// The PostgreSQL server; the soak creates a database of its own on it.
    #[arg(long, env = "FINTECH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Kafka; the soak creates a topic of its own.
    #[arg(long, env = "FINTECH_KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: String,

    /// Minutes the pipeline runs under faults before it is drained and checked.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub minutes: u64,

    /// Events per second of the first producer; the skewed one sends a tenth of that.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,

    /// Seconds between two SIGKILLs of a streamer or loader.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub kill_every_secs: u64,

    /// The second producer's clock offset, in libfaketime's notation (`-3d`: three days
    /// behind). Kafka refuses timestamps more than an hour ahead, so a producer running ahead
    /// is bounded there; one running behind sends events that reach silver late. Only the
    /// producer is skewed: libfaketime does not shift the deadlines of librdkafka's timed
    /// waits, so a consumer under it either sleeps for the skew (clock ahead) or spins without
    /// joining its group (clock behind); streamers with skewed clocks are covered by the
    /// loader's tests instead (`workers/tests/load.rs`, a manifest folder dated ahead).
    #[arg(long, default_value = "-3d", allow_hyphen_values = true)]
    pub producer_skew: String,

    /// libfaketime's preload library (Debian's `faketime` package).
    #[arg(
        long,
        env = "FINTECH_FAKETIME_LIB",
        default_value = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
    )]
    pub faketime_lib: PathBuf,

    /// Seed of the events and of the choice of what to kill.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Keep the lake prefix, the topic, the database and the workers' logs.
    #[arg(long)]
    pub keep: bool,
}

/// One long-running `fintech` process of the soak, started again whenever it is killed.
struct Worker {
    name: String,
    args: Vec<String>,
    skew: Option<String>,
    child: Option<Child>,
    starts: u32,
    unexpected_exits: u32,
}

/// What every worker is started with.
struct Launch {
    binary: PathBuf,
    logs: PathBuf,
    faketime_lib: PathBuf,
}

impl Launch {
    fn command(&self, name: &str, args: &[String], skew: Option<&str>) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .with_context(|| format!("opening the log of {name}"))?;
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(skew) = skew {
            command
                .env("LD_PRELOAD", &self.faketime_lib)
                .env("FAKETIME", skew)
                // Timers and timeouts keep real time; only the wall clock is off.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        Ok(command)
    }
}

impl Worker {
    fn new(name: &str, args: Vec<String>, skew: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            args,
            skew: skew.map(str::to_owned),
            child: None,
            starts: 0,
            unexpected_exits: 0,
        }
    }

    fn start(&mut self, launch: &Launch) -> anyhow::Result<()> {
        let child = launch
            .command(&self.name, &self.args, self.skew.as_deref())?
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Starts the worker again if it exited on its own, which counts against the soak.
    fn restart_if_exited(&mut self, launch: &Launch) -> anyhow::Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            tracing::warn!(worker = %self.name, %status, "worker exited on its own; starting it again");
            self.unexpected_exits += 1;
            self.start(launch)?;
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for a clean exit.
    async fn stop(&mut self, limit: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal_term(child.id())?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} on SIGTERM", self.name);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} did not stop within {limit:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn signal_term(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
    Ok(())
}

/// A small deterministic generator for the choice of victims.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Runs the soak.
pub async fn run(args: &SoakArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.faketime_lib.is_file(),
        "libfaketime is not at {}; install Debian's faketime package or set --faketime-lib",
        args.faketime_lib.display()
    );
    let mut report = Report::new(
        "soak",
        "the whole pipeline under kills, skewed clocks, replays and bad input, then reconciled",
    );
    let mut scratch = Scratch::default();
    let lake = scratch.lake(&args.storage, "soak");
    let database = scratch.database(&args.database_url, "soak").await?;
    let topic = scratch::unique_name("soak");
    let group = format!("{topic}-streamers");
    let logs = std::env::temp_dir().join(scratch::unique_name("fintech-soak-logs"));
    std::fs::create_dir_all(&logs)?;
    report
        .parameter("minutes", args.minutes)
        .parameter("rate", args.rate)
        .parameter("kill_every_secs", args.kill_every_secs)
        .parameter("producer_skew", args.producer_skew.clone())
        .parameter("topic", topic.clone())
        .parameter("lake_url", lake.lake_url.clone())
        .parameter("logs", logs.display().to_string());
    tracing::info!(logs = %logs.display(), %topic, lake = %lake.lake_url, "soak starting");

    let launch = Launch {
        binary: process::fintech_binary()?,
        logs: logs.clone(),
        faketime_lib: args.faketime_lib.clone(),
    };
    let outcome = soak(args, &launch, &lake, &database, &topic, &group, &mut report).await;
    if let Err(error) = &outcome {
        tracing::error!(logs = %logs.display(), "soak failed: {error:#}");
    }
    let keep = args.keep || outcome.is_err();
    scratch.remove(keep).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&logs);
    }
    outcome.map(|()| report)
}

async fn soak(
    args: &SoakArgs,
    launch: &Launch,
    lake: &StorageOptions,
    database: &str,
    topic: &str,
    group: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let kafka = vec![
        "--bootstrap-servers".to_owned(),
        args.bootstrap_servers.clone(),
        "--topic".to_owned(),
        topic.to_owned(),
    ];
    let warehouse = vec!["--database-url".to_owned(), database.to_owned()];
    let lake_flags = scratch::lake_flags(lake);
    let producer = |seed: u64, rate: u32| -> Vec<String> {
        let mut flags = strings(&["produce", "--partitions", &PARTITIONS.to_string()]);
        flags.extend(kafka.clone());
        flags.extend(strings(&[
            "--seed",
            &seed.to_string(),
            "--rate",
            &rate.to_string(),
        ]));
        flags.extend(strings(&[
            "--fault-malformed-json",
            "0.01",
            "--fault-wrong-type",
            "0.01",
            "--fault-duplicate",
            "0.02",
            "--fault-non-positive-amount",
            "0.005",
            "--fault-null-customer-id",
            "0.005",
        ]));
        flags
    };
    let streamer = || -> Vec<String> {
        let mut flags = strings(&["stream", "--group-id", group, "--batch-interval-secs", "5"]);
        flags.extend(kafka.clone());
        flags.extend(lake_flags.clone());
        flags
    };
    let loader = |extra: &[&str]| -> Vec<String> {
        let mut flags = strings(&["load", "--topic", topic]);
        flags.extend(strings(extra));
        flags.extend(warehouse.clone());
        flags.extend(lake_flags.clone());
        flags
    };
    let transform = {
        let mut flags = strings(&["transform"]);
        flags.extend(warehouse.clone());
        flags
    };

    // The first producer runs on a simulated timeline that started a week ago, a simulated
    // day every 50 s at the default rate, so that settlements fall due (one to three
    // simulated days after their payment) within minutes; the skewed one runs on its own
    // wall clock.
    let mut simulated = producer(args.seed, args.rate);
    let week_ago = (chrono::Utc::now() - chrono::Duration::days(7)).to_rfc3339();
    simulated.extend(strings(&["--start-time", &week_ago]));
    simulated.extend(strings(&[
        "--payments-per-day",
        &(args.rate * 50).to_string(),
    ]));
    let mut producers = [
        Worker::new("producer", simulated, None),
        Worker::new(
            "producer-skewed",
            producer(args.seed + 1, (args.rate / 10).max(1)),
            Some(&args.producer_skew),
        ),
    ];
    // Killed at random: the stages whose crashes the pipeline must absorb.
    let mut workers = [
        Worker::new("streamer-a", streamer(), None),
        Worker::new("streamer-b", streamer(), None),
        Worker::new("loader-a", loader(&["--interval-secs", "5"]), None),
        Worker::new("loader-b", loader(&["--interval-secs", "7"]), None),
    ];
    for worker in producers.iter_mut().chain(workers.iter_mut()) {
        worker.start(launch)?;
    }

    let mut dice = Dice(args.seed | 1);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let kill_every = Duration::from_secs(args.kill_every_secs);
    let mut next_kill = started + kill_every;
    let mut next_transform = started + Duration::from_secs(45);
    let mut next_replay = started + Duration::from_secs(100);
    let mut occasional: Vec<(&str, Child, Option<Instant>)> = Vec::new();
    let mut kills: HashMap<String, u32> = HashMap::new();
    let (mut transforms, mut transforms_killed, mut replays) = (0u32, 0u32, 0u32);
    let mut occasional_failures = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Instant::now();
        for worker in producers.iter_mut().chain(workers.iter_mut()) {
            worker.restart_if_exited(launch)?;
        }
        if now >= next_kill {
            next_kill = now + kill_every;
            let victim = &mut workers[dice.below(4)];
            tracing::info!(worker = %victim.name, "SIGKILL");
            victim.kill();
            *kills.entry(victim.name.clone()).or_default() += 1;
            victim.start(launch)?;
        }
        if now >= next_transform {
            next_transform = now + Duration::from_secs(60);
            // One run in three is killed a few seconds in, as a node lost mid-run would.
            let kill_at = (dice.below(3) == 0).then(|| now + Duration::from_secs(3));
            let child = launch.command("transform", &transform, None)?.spawn()?;
            occasional.push(("transform", child, kill_at));
            transforms += 1;
        }
        if now >= next_replay {
            next_replay = now + Duration::from_secs(120);
            let today = chrono::Utc::now().date_naive().to_string();
            let replay = loader(&["--replay-from", &today, "--replay-to", &today]);
            let child = launch.command("replay", &replay, None)?.spawn()?;
            occasional.push(("replay", child, None));
            replays += 1;
        }
        let mut still_running = Vec::new();
        for (what, mut child, kill_at) in occasional.drain(..) {
            match child.try_wait()? {
                Some(status) if !status.success() => {
                    occasional_failures.push(format!("{what} exited with {status}"));
                }
                Some(_) => {}
                None if kill_at.is_some_and(|at| now >= at) => {
                    tracing::info!(what, "SIGKILL");
                    let _ = child.kill();
                    let _ = child.wait();
                    transforms_killed += 1;
                }
                None => still_running.push((what, child, kill_at)),
            }
        }
        occasional = still_running;
    }
    for (_, child, _) in &mut occasional {
        child.wait()?;
    }

    // Drain: the producers stop, the streamers commit every offset, the loaders stop.
    for producer in &mut producers {
        producer.stop(Duration::from_secs(90)).await?;
    }
    let ends = end_offsets(&args.bootstrap_servers, topic)?;
    wait_for_commits(&args.bootstrap_servers, group, topic, &ends).await?;
    for worker in &mut workers {
        worker.stop(Duration::from_secs(120)).await?;
    }
    let once = loader(&["--once"]);
    let pool = PgPool::connect(database).await?;
    loop {
        process::run("a last load", launch.command("load-once", &once, None)?).await?;
        let loaded: i32 = sqlx::query_scalar(
            "select files_loaded from metadata.load_audit order by started_at desc limit 1",
        )
        .fetch_one(&pool)
        .await?;
        if loaded == 0 {
            break;
        }
    }
    process::run(
        "a last transform",
        launch.command("transform", &transform, None)?,
    )
    .await?;

    let duration = started.elapsed();
    report.number("duration_seconds", duration.as_secs_f64(), 0);
    for worker in producers.iter().chain(workers.iter()) {
        report.figure(&format!("{}_starts", worker.name), worker.starts);
    }
    let killed: u32 = kills.values().sum();
    let unexpected: u32 = producers
        .iter()
        .chain(workers.iter())
        .map(|w| w.unexpected_exits)
        .sum();
    report
        .figure("sigkills", killed)
        .figure("transform_runs", transforms)
        .figure("transform_runs_killed", transforms_killed)
        .figure("replays", replays)
        .figure("unexpected_exits", unexpected);

    let failures = reconcile(lake, &pool, &ends, report).await?;
    let failures: Vec<String> = occasional_failures.into_iter().chain(failures).collect();
    report.figure("checks_failed", failures.len() as u64);
    if !failures.is_empty() {
        bail!("the soak found:\n- {}", failures.join("\n- "));
    }
    Ok(())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn kafka_client(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .context("creating a Kafka client")
}

/// The end offset of every partition of `topic`.
fn end_offsets(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<i64>> {
    let client = kafka_client(bootstrap, &scratch::unique_name("soak-check"))?;
    (0..PARTITIONS)
        .map(|partition| {
            let (low, high) = client
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .with_context(|| format!("reading the offsets of partition {partition}"))?;
            anyhow::ensure!(low == 0, "partition {partition} starts at {low}, not 0");
            Ok(high)
        })
        .collect()
}

/// Waits until `group` has committed every partition up to its end.
async fn wait_for_commits(
    bootstrap: &str,
    group: &str,
    topic: &str,
    ends: &[i64],
) -> anyhow::Result<()> {
    let client = kafka_client(bootstrap, group)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut list = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            list.add_partition(topic, partition);
        }
        let committed: Vec<i64> = client
            .committed_offsets(list, Duration::from_secs(10))?
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            })
            .collect();
        if committed == ends {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the streamers committed {committed:?} of {ends:?} within 5 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The checks; returns what failed.
async fn reconcile(
    lake: &StorageOptions,
    pool: &PgPool,
    ends: &[i64],
    report: &mut Report,
) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    let messages: i64 = ends.iter().sum();
    report.figure("kafka_messages", messages);

    // Kafka → bronze and the dead-letter queue: every offset exactly once.
    let rows = bronze_rows(lake).await?;
    let dead = Lake::open(lake)?
        .stored_positions(fintech_workers::bronze::layout::DEAD_LETTER_PREFIX)
        .await?;
    report
        .figure("bronze_rows", rows.len() as u64)
        .figure("dead_letters", dead.len() as u64);
    let mut seen: HashMap<(i32, i64), u32> = HashMap::new();
    for position in rows.iter().map(|r| (r.0, r.1)).chain(dead.iter().copied()) {
        *seen.entry(position).or_default() += 1;
    }
    let twice = seen.values().filter(|n| **n > 1).count();
    let missing = (0..PARTITIONS)
        .flat_map(|p| (0..ends[p as usize]).map(move |o| (p, o)))
        .filter(|position| !seen.contains_key(position))
        .count();
    let outside = seen
        .keys()
        .filter(|(p, o)| *p >= PARTITIONS || *o >= ends[*p as usize])
        .count();
    if twice + missing + outside > 0 {
        failures.push(format!(
            "Kafka → bronze: {missing} offsets in neither bronze nor the dead-letter queue, \
             {twice} stored twice, {outside} beyond the topic's end"
        ));
    }

    // Bronze → silver: every row loaded, rejected, or a repeat of a loaded event.
    let mut tx = pool.begin().await?;
    sqlx::query(
        "create temporary table bronze_rows (kafka_partition int, kafka_offset bigint, event_id text) \
         on commit drop",
    )
    .execute(&mut *tx)
    .await?;
    for chunk in rows.chunks(50_000) {
        let partitions: Vec<i32> = chunk.iter().map(|r| r.0).collect();
        let offsets: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        let ids: Vec<Option<String>> = chunk.iter().map(|r| r.2.clone()).collect();
        sqlx::query(
            "insert into bronze_rows select * from unnest($1::int[], $2::bigint[], $3::text[])",
        )
        .bind(&partitions)
        .bind(&offsets)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    let (silver, rejected, repeats, unaccounted, from_nowhere, both): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "with s as (select kafka_partition, kafka_offset, event_id::text as event_id from raw.transactions),
                  r as (select distinct kafka_partition, kafka_offset from raw.rejected_transactions),
                  b as (select b.*,
                               exists (select 1 from s where (s.kafka_partition, s.kafka_offset) = (b.kafka_partition, b.kafka_offset)) as loaded,
                               exists (select 1 from r where (r.kafka_partition, r.kafka_offset) = (b.kafka_partition, b.kafka_offset)) as refused,
                               exists (select 1 from s where s.event_id = lower(b.event_id)) as known
                        from bronze_rows b)
             select (select count(*) from s),
                    (select count(*) from r),
                    (select count(*) from b where not loaded and not refused and known),
                    (select count(*) from b where not loaded and not refused and not known),
                    (select count(*) from s where not exists (select 1 from bronze_rows b
                        where (b.kafka_partition, b.kafka_offset) = (s.kafka_partition, s.kafka_offset))),
                    (select count(*) from b where loaded and refused)",
        )
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    report
        .figure("silver_rows", silver)
        .figure("rejected_rows", rejected)
        .figure("repeats_dropped", repeats);
    if unaccounted + from_nowhere + both > 0 {
        failures.push(format!(
            "bronze → silver: {unaccounted} bronze rows neither loaded, rejected nor repeats; \
             {from_nowhere} silver rows bronze does not hold; {both} both loaded and rejected"
        ));
    }
    let reasons: Vec<(String, i64)> = sqlx::query_as(
        "select reason, count(*) from raw.rejected_transactions group by reason order by reason",
    )
    .fetch_all(pool)
    .await?;
    for (reason, count) in reasons {
        report.figure(&format!("rejected_{reason}"), count);
    }

    // The runs, and silver → gold.
    let running: i64 =
        sqlx::query_scalar("select count(*) from metadata.load_audit where status = 'RUNNING'")
            .fetch_one(pool)
            .await?;
    let runs: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from metadata.load_audit group by status")
            .fetch_all(pool)
            .await?;
    for (status, count) in runs {
        report.figure(&format!("load_runs_{}", status.to_lowercase()), count);
    }
    // A loader killed in the middle of a run leaves its row RUNNING by design (the run's
    // transaction rolled back; `metadata.load_health` calls it stalled after an hour).
    report.figure("load_runs_left_running", running);
    let (payments, fact, fact_unknown): (i64, i64, i64) = sqlx::query_as(
        "select (select count(distinct transaction_id) from raw.transactions),
                (select count(*) from marts.fact_transactions),
                (select count(*) from marts.fact_transactions f
                  where not exists (select 1 from raw.transactions t where t.transaction_id = f.transaction_id))",
    )
    .fetch_one(pool)
    .await?;
    report
        .figure("payments_in_silver", payments)
        .figure("fact_rows", fact);
    if payments != fact || fact_unknown > 0 {
        failures.push(format!(
            "silver → gold: {payments} payments in silver, {fact} fact rows, {fact_unknown} of them unknown to silver"
        ));
    }
    Ok(failures)
}

/// (partition, offset, event id) of every bronze row of the lake.
async fn bronze_rows(lake: &StorageOptions) -> anyhow::Result<Vec<(i32, i64, Option<String>)>> {
    let reader = Lake::open(lake)?;
    let mut rows = Vec::new();
    let prefix = fintech_workers::bronze::layout::TRANSACTIONS_PREFIX;
    for object in scratch::list_lake(lake, prefix).await? {
        if !is_parquet(&object.location) {
            continue;
        }
        for batch in reader.read_parquet(&object.location).await?.batches() {
            let batch = batch?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .with_context(|| format!("{} has no column {name}", object.location))
            };
            let partitions = column("kafka_partition")?
                .as_primitive::<Int32Type>()
                .clone();
            let offsets = column("kafka_offset")?.as_primitive::<Int64Type>().clone();
            let ids = column("event_id")?.as_string::<i32>().clone();
            for i in 0..batch.num_rows() {
                let id = (!ids.is_null(i)).then(|| ids.value(i).to_owned());
                rows.push((partitions.value(i), offsets.value(i), id));
            }
        }
    }
    Ok(rows)
}

fn is_parquet(path: &object_store::path::Path) -> bool {
    FsPath::new(path.as_ref())
        .extension()
        .is_some_and(|e| e == "parquet")
}
