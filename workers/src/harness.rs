//! The process around a long-running stage: signals, the status server and readiness.
//!
//! Every worker process starts the same way (install the signal handlers, serve `/metrics`,
//! `/healthz`, `/readyz` and `/status` when asked to, report ready once the stage can work)
//! and ends the same way (stop the status server, then exit with the stage's outcome).
//! [`Harness`] does both, so a stage only implements its own `run(cancel)`.
//!
//! Liveness: a stage started with [`Harness::start_with_stall_limit`] beats the
//! [`Harness::heartbeat`] at least once per iteration of its loop, and `/healthz` answers 503
//! once the last beat is older than the stall limit, so that the kubelet restarts a loop that
//! is stuck (a hung call, a deadlock) rather than one that merely answers HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use indicatif::ProgressBar;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fintech_status_server::Heartbeat;
use fintech_status_server::Readiness;
use fintech_status_server::report::{StatusSource, WorkerStatus};

use crate::source::{MessageSource, SourceError, SourceEvent};

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

/// A running worker process: its shutdown token, its readiness, its heartbeat and its status
/// server.
pub struct Harness {
    cancel: CancellationToken,
    readiness: Readiness,
    heartbeat: Heartbeat,
    server: Option<JoinHandle<()>>,
}

/// What a stage shows on its status server besides its health and readiness: its metrics
/// at `/metrics`, and what it last did at `/status` (which the operator reads).
pub trait Exposed: Clone + Send + Sync + 'static {
    /// Registers the stage's metrics.
    fn register(&self, registry: &mut Registry);
    /// The stage's `/status` document now (the status server adds its start and its rate).
    fn status(&self) -> WorkerStatus;
}

impl Harness {
    /// Installs the signal handlers and nothing else: for a process that serves no status.
    pub async fn without_server() -> Result<Self, HarnessError> {
        let cancel = on_signal().map_err(HarnessError::Signals)?;
        Ok(Self {
            cancel,
            readiness: Readiness::default(),
            heartbeat: Heartbeat::default(),
            server: None,
        })
    }

    /// Installs the signal handlers and, when `metrics_addr` is given, serves what `exposed`
    /// shows with the health and readiness endpoints. The process is not ready until
    /// [`Harness::ready`]. The stage's loop beats [`Harness::heartbeat`]: `/healthz` answers
    /// 503 once the last beat is older than `stall_limit`. The clock starts now, so the
    /// stage's start-up counts until its first beat.
    pub async fn start_with_stall_limit(
        metrics_addr: Option<SocketAddr>,
        stall_limit: Duration,
        exposed: &impl Exposed,
    ) -> Result<Self, HarnessError> {
        let cancel = on_signal().map_err(HarnessError::Signals)?;
        let readiness = Readiness::default();
        let heartbeat = Heartbeat::new(stall_limit);
        let server = match metrics_addr {
            None => None,
            Some(address) => {
                let mut registry = Registry::default();
                exposed.register(&mut registry);
                let status = StatusSource::new({
                    let exposed = exposed.clone();
                    move || exposed.status()
                });
                let server = fintech_status_server::serve_with_heartbeat(
                    address,
                    registry,
                    readiness.clone(),
                    heartbeat.clone(),
                    Some(status),
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
            heartbeat,
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

    /// The heartbeat `/healthz` watches, for the stage's loop to beat.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
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

/// What a stage's loop reports per unit of work done: a terminal progress bar, a heartbeat,
/// or both as a pair.
pub trait Progress {
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The work is over.
    fn finish(&self);
}

impl Progress for ProgressBar {
    fn advance(&self, n: u64) {
        self.inc(n);
    }

    fn finish(&self) {
        // The finished bar stays on screen: it is the stage's record of what it did.
        ProgressBar::finish(self);
    }
}

impl Progress for Heartbeat {
    fn advance(&self, _: u64) {
        self.beat();
    }

    fn finish(&self) {}
}

impl<A: Progress, B: Progress> Progress for (A, B) {
    fn advance(&self, n: u64) {
        self.0.advance(n);
        self.1.advance(n);
    }

    fn finish(&self) {
        self.0.finish();
        self.1.finish();
    }
}

/// A [`MessageSource`] that beats a heartbeat whenever its reader asks for the next event and
/// while it waits for one (an empty topic is not a stall). The streamer asks once per
/// iteration of its loop, so a loop stuck elsewhere (storing a batch, committing) stops the
/// beats.
pub struct BeatingSource<S> {
    inner: S,
    heartbeat: Heartbeat,
}

impl<S> BeatingSource<S> {
    /// `inner`, beating `heartbeat`.
    pub fn new(inner: S, heartbeat: Heartbeat) -> Self {
        Self { inner, heartbeat }
    }
}

impl<S: MessageSource + Send> MessageSource for BeatingSource<S> {
    fn topic(&self) -> &str {
        self.inner.topic()
    }

    fn next(&mut self) -> impl Future<Output = Result<Option<SourceEvent>, SourceError>> + Send {
        self.heartbeat.beat_while(self.inner.next())
    }

    fn commit(
        &mut self,
        positions: &[(i32, i64)],
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        self.inner.commit(positions)
    }

    fn rewind(
        &mut self,
        positions: &[(i32, i64)],
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        self.inner.rewind(positions)
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
