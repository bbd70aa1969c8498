//! The quickstart's embedded PostgreSQL (PGlite), behind the `embedded` feature: the images
//! leave it out, since pods always reach a PostgreSQL server.

use std::path::Path;
use std::time::Duration;

use super::{WarehouseError, WarehouseOptions};

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
                // Safe and expected now and then (see above): nothing for the user to do.
                tracing::debug!(grace = ?SHUTDOWN_GRACE, "the embedded PostgreSQL did not stop in time; leaving it to exit with the process");
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
