//! The process around a long-running stage: signals, the status server and readiness.
//!
//! Every worker process starts the same way (install the signal handlers, serve `/metrics`,
//! `/healthz` and `/readyz` when asked to, report ready once the stage can work) and ends the
//! same way (stop the status server, then exit with the stage's outcome). [`Harness`] does
//! both, so a stage only implements its own `run(cancel)`.

use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use fintech_status_server::Readiness;

/// Why a worker process could not start.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The SIGTERM and SIGINT handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// The status server's address is taken or not ours.
    #[error("binding the metrics address {address}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running worker process: its shutdown token, its readiness and its status server.
pub struct Harness {
    cancel: CancellationToken,
    readiness: Readiness,
    server: Option<JoinHandle<()>>,
}

impl Harness {
    /// Installs the signal handlers and, when `metrics_addr` is given, serves the metrics
    /// `register` adds with the health and readiness endpoints. The process is not ready
    /// until [`Harness::ready`].
    pub async fn start(
        metrics_addr: Option<SocketAddr>,
        register: impl FnOnce(&mut Registry),
    ) -> Result<Self, HarnessError> {
        let cancel = on_signal().map_err(HarnessError::Signals)?;
        let readiness = Readiness::default();
        let server = match metrics_addr {
            None => None,
            Some(address) => {
                let mut registry = Registry::default();
                register(&mut registry);
                let server = fintech_status_server::serve(
                    address,
                    registry,
                    readiness.clone(),
                    cancel.clone(),
                )
                .await
                .map_err(|source| HarnessError::Bind { address, source })?;
                Some(server)
            }
        };
        Ok(Self {
            cancel,
            readiness,
            server,
        })
    }

    /// The token SIGTERM and SIGINT cancel; stages finish their unit of work when it is.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Reports the stage ready: `/readyz` answers 200 from now on.
    pub fn ready(&self) {
        self.readiness.set(true);
    }

    /// Stops the status server and returns the stage's `outcome`, so that a scrape during
    /// the stage's last moments still answers.
    pub async fn finish<T>(self, outcome: T) -> T {
        self.cancel.cancel();
        if let Some(server) = self.server {
            // The server task only ends with the token; a panic in it has been logged.
            let _ = server.await;
        }
        outcome
    }
}

/// A token cancelled on the first SIGTERM (Kubernetes) or SIGINT (a terminal).
fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down after the current work");
        cancel.cancel();
    });
    Ok(token)
}
