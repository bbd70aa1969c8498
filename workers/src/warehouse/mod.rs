//! The PostgreSQL warehouse: connecting (a server, or the embedded PostgreSQL of the
//! quickstart) and applying the migrations that ship inside the binary.

pub mod copy_text;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

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

/// How long [`EmbeddedWarehouse::shutdown`] waits for the server thread.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The embedded PostgreSQL (PGlite, PostgreSQL 17 in WebAssembly) of the quickstart, with its
/// data kept in a folder. It serves one connection at a time.
pub struct EmbeddedWarehouse {
    server: Option<pglite_oxide::PgliteServer>,
}

impl EmbeddedWarehouse {
    /// Starts it on a free loopback port, keeping its data in `folder`.
    pub fn start(folder: &Path) -> Result<Self, WarehouseError> {
        Self::start_on(folder, None)
    }

    /// Starts it on `address` (a free port when `None`).
    pub fn start_on(
        folder: &Path,
        address: Option<std::net::SocketAddr>,
    ) -> Result<Self, WarehouseError> {
        let embedded_error = |reason: String| WarehouseError::Embedded {
            path: folder.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(folder).map_err(|e| embedded_error(e.to_string()))?;
        let address = match address {
            Some(address) => address,
            None => std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| embedded_error(e.to_string()))?,
        };
        let server = pglite_oxide::PgliteServer::builder()
            .path(folder)
            .tcp(address)
            .start()
            .map_err(|e| embedded_error(e.to_string()))?;
        Ok(Self {
            server: Some(server),
        })
    }

    /// Options to reach it: one connection, the built-in migrations.
    pub fn options(&self) -> WarehouseOptions {
        let url = self
            .server
            .as_ref()
            .map(pglite_oxide::PgliteServer::database_url)
            .unwrap_or_default();
        WarehouseOptions::url(&url, 1)
    }

    /// Stops it. Close every pool connected to it first: the server waits for its client
    /// to leave. The server thread occasionally does not notice a closed client; after
    /// [`SHUTDOWN_GRACE`] the process goes on without it, which is safe because PostgreSQL
    /// has already written every committed transaction to its write-ahead log in the folder
    /// (callers that can, run `CHECKPOINT` first so that no recovery is needed either).
    pub async fn shutdown(mut self) -> Result<(), WarehouseError> {
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        let stopping = tokio::task::spawn_blocking(move || server.shutdown());
        match tokio::time::timeout(SHUTDOWN_GRACE, stopping).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(WarehouseError::Embedded {
                path: String::new(),
                reason: error.to_string(),
            }),
            Ok(Err(error)) => Err(WarehouseError::Embedded {
                path: String::new(),
                reason: error.to_string(),
            }),
            Err(_) => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "the embedded PostgreSQL did not stop in time; leaving it to exit with the process");
                Ok(())
            }
        }
    }
}

impl Drop for EmbeddedWarehouse {
    fn drop(&mut self) {
        // Dropping the server joins its thread; never block the dropping thread on it.
        if let Some(server) = self.server.take() {
            std::thread::spawn(move || {
                if let Err(error) = server.shutdown() {
                    tracing::warn!(%error, "stopping the embedded PostgreSQL failed");
                }
            });
        }
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
