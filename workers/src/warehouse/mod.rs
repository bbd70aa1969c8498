//! The PostgreSQL warehouse: connecting (a server, or, with the `embedded` feature, the
//! embedded PostgreSQL of the quickstart) and applying the migrations that ship inside the
//! binary.

pub mod copy_text;
#[cfg(feature = "embedded")]
mod embedded;

#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedWarehouse, SHUTDOWN_GRACE};

use std::path::PathBuf;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
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
}

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
    /// Options for `url` with the built-in migrations.
    pub fn url(url: &str, pool_size: u32) -> Self {
        Self {
            database_url: url.to_owned(),
            pool_size,
            migrations_dir: None,
        }
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
            .connect(&self.database_url)
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
}
