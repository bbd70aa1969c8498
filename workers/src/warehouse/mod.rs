//! The PostgreSQL warehouse: connecting (a server, or, with the `embedded` feature, the
//! embedded PostgreSQL of the quickstart) and applying the migrations that ship inside the
//! binary.

pub mod copy_binary;
pub mod copy_text;
#[cfg(feature = "embedded")]
mod embedded;

#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedWarehouse, SHUTDOWN_GRACE};

use std::path::PathBuf;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// The longest wait between two attempts to reach a warehouse that is down.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The migrations in `sql/migrations`, embedded at build time so a pod needs no volume.
pub static MIGRATIONS: Migrator = sqlx::migrate!("../sql/migrations");

/// How to reach the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct WarehouseOptions {
    /// PostgreSQL URL, e.g. `postgres://user:password@host:5432/fintech`.
    #[arg(long, env = "FINTECH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Connections in the pool.
    #[arg(long, env = "FINTECH_DATABASE_POOL_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pool_size: u32,

    /// Apply migrations from this folder instead of the ones built in (for development).
    #[arg(long, env = "FINTECH_MIGRATIONS_DIR")]
    pub migrations_dir: Option<PathBuf>,

    /// Seconds a statement waits for a lock before it fails with `canceling statement due to
    /// lock timeout` (PostgreSQL's `lock_timeout`); 0 leaves the server's setting (by default
    /// none: wait forever). It bounds every lock wait: the loader's advisory lock, the
    /// transform runner's, the migrator's, a row or a table lock. The default, 10 minutes, is
    /// well above what a run holds a lock for in steady state (a load run takes seconds, a
    /// catch-up run of `--max-files-per-run` files minutes), so only a holder that is stuck
    /// or far behind makes a waiter give up: the waiting load run then fails, audited, and
    /// the next interval tries again; a waiting transform run fails and its Job retries.
    #[arg(long, env = "FINTECH_DATABASE_LOCK_TIMEOUT_SECS", default_value_t = DEFAULT_LOCK_TIMEOUT_SECS, value_parser = clap::value_parser!(u32).range(0..=MAX_TIMEOUT_SECS))]
    pub lock_timeout_secs: u32,

    /// Seconds a session may stay idle inside an open transaction before the server ends it
    /// (PostgreSQL's `idle_in_transaction_session_timeout`), rolling the transaction back and
    /// releasing its locks; 0 leaves the server's setting (by default none). Catches a client
    /// that is alive but stuck mid-transaction. The workers are idle in a transaction only
    /// while the loader reads manifests from the object store (each read retried for at most
    /// about 3 minutes), so the default, 10 minutes, never ends a healthy run.
    #[arg(long, env = "FINTECH_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS", default_value_t = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECS, value_parser = clap::value_parser!(u32).range(0..=MAX_TIMEOUT_SECS))]
    pub idle_in_transaction_timeout_secs: u32,

    /// Seconds any one statement may run before the server cancels it (PostgreSQL's
    /// `statement_timeout`); 0, the default, leaves the server's setting (by default none).
    /// Off by default: a catch-up load's COPY and a full refresh of a large model run for
    /// many minutes, and the transform Job's `activeDeadlineSeconds` already bounds a run.
    #[arg(long, env = "FINTECH_DATABASE_STATEMENT_TIMEOUT_SECS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_TIMEOUT_SECS))]
    pub statement_timeout_secs: u32,

    /// Seconds of silence on a connection after which the server sends TCP keepalive probes
    /// (PostgreSQL's `tcp_keepalives_idle`; sqlx has no client-side keepalive); 0 leaves the
    /// server's setting (by default the kernel's, 2 hours on Linux). With the interval and
    /// count below, the server notices a client whose node vanished within about 2 minutes,
    /// ends its session and releases its locks, instead of holding them for hours.
    #[arg(long, env = "FINTECH_DATABASE_TCP_KEEPALIVES_IDLE_SECS", default_value_t = DEFAULT_TCP_KEEPALIVES_IDLE_SECS, value_parser = clap::value_parser!(u32).range(0..=MAX_KEEPALIVE_SECS))]
    pub tcp_keepalives_idle_secs: u32,

    /// Seconds between two unanswered keepalive probes (PostgreSQL's
    /// `tcp_keepalives_interval`); 0 leaves the server's setting (the kernel's, 75 s on Linux).
    #[arg(long, env = "FINTECH_DATABASE_TCP_KEEPALIVES_INTERVAL_SECS", default_value_t = DEFAULT_TCP_KEEPALIVES_INTERVAL_SECS, value_parser = clap::value_parser!(u32).range(0..=MAX_KEEPALIVE_SECS))]
    pub tcp_keepalives_interval_secs: u32,

    /// Unanswered keepalive probes after which the server drops the connection (PostgreSQL's
    /// `tcp_keepalives_count`); 0 leaves the server's setting (the kernel's, 9 on Linux).
    #[arg(long, env = "FINTECH_DATABASE_TCP_KEEPALIVES_COUNT", default_value_t = DEFAULT_TCP_KEEPALIVES_COUNT, value_parser = clap::value_parser!(u32).range(0..=127))]
    pub tcp_keepalives_count: u32,
}

/// Default of `--lock-timeout-secs`: 10 minutes.
pub const DEFAULT_LOCK_TIMEOUT_SECS: u32 = 600;
/// Default of `--idle-in-transaction-timeout-secs`: 10 minutes.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECS: u32 = 600;
/// Default of `--tcp-keepalives-idle-secs`.
pub const DEFAULT_TCP_KEEPALIVES_IDLE_SECS: u32 = 60;
/// Default of `--tcp-keepalives-interval-secs`.
pub const DEFAULT_TCP_KEEPALIVES_INTERVAL_SECS: u32 = 10;
/// Default of `--tcp-keepalives-count`.
pub const DEFAULT_TCP_KEEPALIVES_COUNT: u32 = 6;
/// The largest timeout the flags take: one day.
const MAX_TIMEOUT_SECS: i64 = 86_400;
/// The largest keepalive idle time or interval Linux accepts.
const MAX_KEEPALIVE_SECS: i64 = 32_767;

/// Errors reaching or preparing the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// No connection could be made.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        /// The URL without its password.
        target: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The migrations could not be read or applied.
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The embedded PostgreSQL could not start.
    #[error("starting the embedded PostgreSQL in {path} failed: {reason}")]
    Embedded {
        /// Its data folder.
        path: String,
        /// Why.
        reason: String,
    },
}

impl WarehouseOptions {
    /// Options for `url` with the built-in migrations and the flags' default timeouts.
    pub fn url(url: &str, pool_size: u32) -> Self {
        Self {
            database_url: url.to_owned(),
            pool_size,
            migrations_dir: None,
            lock_timeout_secs: DEFAULT_LOCK_TIMEOUT_SECS,
            idle_in_transaction_timeout_secs: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECS,
            statement_timeout_secs: 0,
            tcp_keepalives_idle_secs: DEFAULT_TCP_KEEPALIVES_IDLE_SECS,
            tcp_keepalives_interval_secs: DEFAULT_TCP_KEEPALIVES_INTERVAL_SECS,
            tcp_keepalives_count: DEFAULT_TCP_KEEPALIVES_COUNT,
        }
    }

    /// The server settings every pooled connection starts with (sent as `-c name=value`
    /// startup options, so they hold from the first statement, migrations included); a
    /// setting whose flag is 0 is left out, so the server's own configuration applies. They
    /// come after any `options` in the URL and so take precedence over it.
    pub fn session_settings(&self) -> Vec<(&'static str, String)> {
        let seconds = |value: u32| format!("{value}s");
        [
            (
                "lock_timeout",
                self.lock_timeout_secs,
                seconds(self.lock_timeout_secs),
            ),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout_secs,
                seconds(self.idle_in_transaction_timeout_secs),
            ),
            (
                "statement_timeout",
                self.statement_timeout_secs,
                seconds(self.statement_timeout_secs),
            ),
            (
                "tcp_keepalives_idle",
                self.tcp_keepalives_idle_secs,
                self.tcp_keepalives_idle_secs.to_string(),
            ),
            (
                "tcp_keepalives_interval",
                self.tcp_keepalives_interval_secs,
                self.tcp_keepalives_interval_secs.to_string(),
            ),
            (
                "tcp_keepalives_count",
                self.tcp_keepalives_count,
                self.tcp_keepalives_count.to_string(),
            ),
        ]
        .into_iter()
        .filter(|(_, flag, _)| *flag != 0)
        .map(|(name, _, value)| (name, value))
        .collect()
    }

    /// The connection options of every pooled connection: the URL's, plus
    /// [`session_settings`](Self::session_settings). A URL that does not parse is a
    /// [`WarehouseError::Connect`], as it was when sqlx parsed it while connecting.
    pub fn connect_options(&self) -> Result<PgConnectOptions, WarehouseError> {
        let options: PgConnectOptions =
            self.database_url
                .parse()
                .map_err(|source| WarehouseError::Connect {
                    target: redact(&self.database_url),
                    source,
                })?;
        // Statement timings are the audit tables' business (load_audit, transform_runs);
        // a transform's statements run for seconds by design, so sqlx's slow-statement
        // warnings would only be noise.
        Ok(options
            .options(self.session_settings())
            .log_statements(log::LevelFilter::Trace)
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1)))
    }

    /// Connects and applies the migrations; every worker does this at start (the migrator
    /// holds an advisory lock, so concurrent starts are safe).
    pub async fn connect_and_migrate(&self) -> Result<PgPool, WarehouseError> {
        let pool = self.connect().await?;
        match &self.migrations_dir {
            Some(dir) => Migrator::new(dir.as_path()).await?.run(&pool).await?,
            None => MIGRATIONS.run(&pool).await?,
        }
        Ok(pool)
    }

    /// [`connect_and_migrate`](Self::connect_and_migrate), retried with a doubling delay
    /// (1 s up to 30 s) while it fails: a warehouse that is down when a worker starts is
    /// waited out rather than turned into a crash loop. With `give_up_after`, the last error
    /// is returned once that much time has passed; `Ok(None)` means `cancel` fired first.
    pub async fn connect_and_migrate_patiently(
        &self,
        give_up_after: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<Option<PgPool>, WarehouseError> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_secs(1);
        loop {
            match self.connect_and_migrate().await {
                Ok(pool) => return Ok(Some(pool)),
                Err(error) if give_up_after.is_some_and(|limit| started.elapsed() > limit) => {
                    return Err(error);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "warehouse not reachable; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return Ok(None),
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    /// Connects without migrating.
    pub async fn connect(&self) -> Result<PgPool, WarehouseError> {
        PgPoolOptions::new()
            .max_connections(self.pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.connect_options()?)
            .await
            .map_err(|source| WarehouseError::Connect {
                target: redact(&self.database_url),
                source,
            })
    }
}

/// A URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://fintech:secret@db:5432/fintech"),
            "postgres://fintech:***@db:5432/fintech"
        );
        assert_eq!(redact("postgres://db/fintech"), "postgres://db/fintech");
    }

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        warehouse: WarehouseOptions,
    }

    fn parse(args: &[&str]) -> Result<WarehouseOptions, clap::Error> {
        use clap::Parser as _;
        Flags::try_parse_from(
            ["fintech", "--database-url", "postgres://db/x"]
                .iter()
                .chain(args),
        )
        .map(|flags| flags.warehouse)
    }

    #[test]
    fn the_flags_defaults_are_those_of_url_and_reach_the_session_settings() {
        assert_eq!(
            parse(&[]).unwrap(),
            WarehouseOptions::url("postgres://db/x", 4)
        );
        assert_eq!(
            WarehouseOptions::url("postgres://db/x", 1).session_settings(),
            [
                ("lock_timeout", "600s".to_owned()),
                ("idle_in_transaction_session_timeout", "600s".to_owned()),
                ("tcp_keepalives_idle", "60".to_owned()),
                ("tcp_keepalives_interval", "10".to_owned()),
                ("tcp_keepalives_count", "6".to_owned()),
            ]
        );
        let options = parse(&[
            "--lock-timeout-secs=0",
            "--statement-timeout-secs=30",
            "--tcp-keepalives-count=0",
        ])
        .unwrap();
        let names: Vec<_> = options
            .session_settings()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "idle_in_transaction_session_timeout",
                "statement_timeout",
                "tcp_keepalives_idle",
                "tcp_keepalives_interval"
            ]
        );
        assert!(parse(&["--lock-timeout-secs=86401"]).is_err());
        assert!(parse(&["--tcp-keepalives-count=128"]).is_err());
        let with = options.connect_options().unwrap();
        assert_eq!(
            with.get_options(),
            Some(
                "-c idle_in_transaction_session_timeout=600s -c statement_timeout=30s \
                 -c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10"
            )
        );
    }
}
