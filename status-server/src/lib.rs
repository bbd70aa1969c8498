//! The HTTP endpoints of a long-running process: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive: its work loop beats a [`Heartbeat`] often enough) and
//! `/readyz` (it has connected and is doing its work). The fintech workers and the operator
//! serve the same three endpoints; the workers also serve `/status` ([`report`]), which the
//! operator reads.

pub mod report;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::report::StatusSource;

/// Whether the process is ready; shared between its work and the server.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether the process is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Liveness: when a process's work loop last made progress, and how long it may go without.
///
/// The loop calls [`Heartbeat::beat`] at least once per iteration (a clock read and an atomic
/// store), and waits it knows to be legitimate (an empty topic, the pause between two runs)
/// go through [`Heartbeat::beat_while`]. `/healthz` answers 503 once the last beat is older
/// than the stall limit, so the kubelet restarts a loop stuck on a hung call or a deadlock.
/// The clock starts at creation: until the first beat, the time since then counts.
/// Clones share the same beat.
#[derive(Clone)]
pub struct Heartbeat(Arc<Pulse>);

struct Pulse {
    origin: tokio::time::Instant,
    /// Milliseconds from `origin` to the last beat.
    last: AtomicI64,
    /// `None`: never stalled (a process without a liveness check).
    stall_limit: Option<Duration>,
}

/// The loop has not beaten for longer than the stall limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// Time since the last beat.
    pub since_last_beat: Duration,
    /// The stall limit.
    pub stall_limit: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stalled: no progress for {:?} (limit {:?})",
            self.since_last_beat, self.stall_limit
        )
    }
}

impl Default for Heartbeat {
    /// A heartbeat that never stalls.
    fn default() -> Self {
        Self::with_limit(None)
    }
}

impl Heartbeat {
    /// A heartbeat that stalls once its last beat is older than `stall_limit`; it beats now.
    pub fn new(stall_limit: Duration) -> Self {
        Self::with_limit(Some(stall_limit))
    }

    fn with_limit(stall_limit: Option<Duration>) -> Self {
        Self(Arc::new(Pulse {
            origin: tokio::time::Instant::now(),
            last: AtomicI64::new(0),
            stall_limit,
        }))
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// The loop made progress.
    pub fn beat(&self) {
        self.0.last.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn since_last_beat(&self) -> Duration {
        let since = self
            .now_ms()
            .saturating_sub(self.0.last.load(Ordering::Relaxed));
        Duration::from_millis(u64::try_from(since).unwrap_or(0))
    }

    /// The stall limit; `None` when it never stalls.
    pub fn stall_limit(&self) -> Option<Duration> {
        self.0.stall_limit
    }

    /// `Err` when the last beat is older than the stall limit.
    pub fn check(&self) -> Result<(), Stalled> {
        let Some(stall_limit) = self.0.stall_limit else {
            return Ok(());
        };
        let since_last_beat = self.since_last_beat();
        if since_last_beat > stall_limit {
            Err(Stalled {
                since_last_beat,
                stall_limit,
            })
        } else {
            Ok(())
        }
    }

    /// Awaits `future`, beating now, every quarter of the stall limit (at most every second)
    /// while it is pending, and when it is done: for waits that are progress themselves (the
    /// pause between two runs, polling an empty topic). The beats come from the waiting task,
    /// so a runtime that no longer schedules it still stalls.
    pub async fn beat_while<F: Future>(&self, future: F) -> F::Output {
        self.beat();
        let Some(stall_limit) = self.0.stall_limit else {
            return future.await;
        };
        let every = (stall_limit / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => {
                    self.beat();
                    return output;
                }
                () = tokio::time::sleep(every) => self.beat(),
            }
        }
    }

    /// Moves the last beat `by` into the past, for tests of a stale heartbeat.
    #[cfg(test)]
    fn age(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.last.fetch_sub(by, Ordering::Relaxed);
    }
}

struct ServerState {
    registry: Registry,
    readiness: Readiness,
    heartbeat: Heartbeat,
    status: Option<StatusSource>,
}

/// How often a worker's rows are sampled for the rate in its `/status`, between requests.
const STATUS_SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Binds `address` and serves until `cancel` fires, with a `/healthz` that always answers
/// 200 (the process is alive when it answers). Binding errors are returned at once, so a
/// port clash fails the process at start rather than silently.
pub async fn serve(
    address: SocketAddr,
    registry: Registry,
    readiness: Readiness,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_with_heartbeat(
        address,
        registry,
        readiness,
        Heartbeat::default(),
        None,
        cancel,
    )
    .await
}

/// [`serve`], with a `/healthz` that answers 503 while `heartbeat` is stalled, and, given a
/// `status` source, a `/status` document (sampled every 15 s for its rate).
pub async fn serve_with_heartbeat(
    address: SocketAddr,
    registry: Registry,
    readiness: Readiness,
    heartbeat: Heartbeat,
    status: Option<StatusSource>,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, stall_limit = ?heartbeat.stall_limit(), status = status.is_some(), "serving /metrics, /healthz and /readyz");
    if let Some(status) = status.clone() {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(STATUS_SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => { status.snapshot(); }
                    () = cancel.cancelled() => return,
                }
            }
        });
    }
    let state = Arc::new(ServerState {
        registry,
        readiness,
        heartbeat,
        status,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/status", get(status_document))
        .with_state(state);
    Ok(tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(%error, "status server stopped");
        }
    }))
}

async fn metrics(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {error}"),
        ),
    }
}

async fn status_document(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    match &state.status {
        Some(status) => match serde_json::to_string(&status.snapshot()) {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            ),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("encoding the status failed: {error}"),
            ),
        },
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "this process serves no status document".to_owned(),
        ),
    }
}

async fn health(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    match state.heartbeat.check() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(stalled) => {
            tracing::warn!(
                since_last_beat = ?stalled.since_last_beat,
                stall_limit = ?stalled.stall_limit,
                "liveness check failed: the work loop has made no progress"
            );
            (StatusCode::SERVICE_UNAVAILABLE, stalled.to_string())
        }
    }
}

async fn ready(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// A plain HTTP/1.0 GET of `path` on `127.0.0.1:port`, returning the status code and body:
/// the smallest client of these endpoints, for tests and health checks that have no curl.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Error, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (status, body) = parse_response(&response)
        .ok_or_else(|| Error::other(format!("malformed HTTP response: {response:?}")))?;
    Ok((status, body.to_owned()))
}

/// The status code and body of an HTTP/1.x response; `None` when it is not one.
fn parse_response(response: &str) -> Option<(u16, &str)> {
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap()
    }

    /// Serves `heartbeat` on a free loopback port and returns the port.
    async fn serve_on_free_port(heartbeat: Heartbeat, cancel: &CancellationToken) -> u16 {
        let port = free_port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        serve_with_heartbeat(
            address,
            Registry::default(),
            Readiness::default(),
            heartbeat,
            None,
            cancel.clone(),
        )
        .await
        .unwrap();
        port
    }

    async fn get(port: u16, path: &'static str) -> (u16, String) {
        tokio::task::spawn_blocking(move || http_get(port, path))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn healthz_turns_503_when_the_heartbeat_is_stale_and_200_when_it_beats_again() {
        let cancel = CancellationToken::new();
        let heartbeat = Heartbeat::new(Duration::from_secs(60));
        let port = serve_on_free_port(heartbeat.clone(), &cancel).await;

        // A new heartbeat counts from its creation.
        assert_eq!(get(port, "/healthz").await, (200, "ok".to_owned()));

        heartbeat.age(Duration::from_secs(61));
        let (status, body) = get(port, "/healthz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("stalled: no progress for 61"), "{body}");
        assert!(body.ends_with("(limit 60s)"), "{body}");
        // Readiness is a separate matter.
        assert_eq!(get(port, "/readyz").await.0, 503);

        heartbeat.beat();
        assert_eq!(get(port, "/healthz").await, (200, "ok".to_owned()));
        cancel.cancel();
    }

    #[tokio::test]
    async fn without_a_stall_limit_healthz_always_answers_ok() {
        let cancel = CancellationToken::new();
        let heartbeat = Heartbeat::default();
        let port = serve_on_free_port(heartbeat.clone(), &cancel).await;
        heartbeat.age(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(get(port, "/healthz").await, (200, "ok".to_owned()));
        cancel.cancel();
    }

    #[tokio::test]
    async fn the_status_document_a_worker_serves_is_what_fetch_reads() {
        use crate::report::{StatusSource, WorkerStatus, fetch};
        let cancel = CancellationToken::new();
        let port = free_port();
        let source = StatusSource::new(|| WorkerStatus {
            worker: "streamer".to_owned(),
            rows_total: 42,
            backlog: Some(7),
            ..WorkerStatus::default()
        });
        serve_with_heartbeat(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Registry::default(),
            Readiness::default(),
            Heartbeat::default(),
            Some(source),
            cancel.clone(),
        )
        .await
        .unwrap();
        let read = fetch(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(read.worker, "streamer");
        assert!(read.started_at > 1_700_000_000, "{read:?}");
        assert_eq!((read.rows_total, read.backlog), (42, Some(7)));
        // One sample so far: no rate yet.
        assert_eq!(read.rows_per_minute, None);
        cancel.cancel();
    }

    #[tokio::test]
    async fn reading_the_status_of_a_process_without_one_fails_with_its_answer() {
        let cancel = CancellationToken::new();
        let port = serve_on_free_port(Heartbeat::default(), &cancel).await;
        let error = report::fetch(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("404"), "{error}");
        assert!(error.contains("serves no status document"), "{error}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn reading_the_status_of_nothing_fails_with_the_address() {
        let port = free_port();
        let error = report::fetch(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("127.0.0.1:{port}/status")),
            "{error}"
        );
    }

    #[test]
    fn a_beat_is_fresh_until_the_stall_limit() {
        let heartbeat = Heartbeat::new(Duration::from_secs(10));
        assert_eq!(heartbeat.check(), Ok(()));
        heartbeat.age(Duration::from_secs(9));
        assert_eq!(heartbeat.check(), Ok(()));
        heartbeat.age(Duration::from_millis(1_001));
        let stalled = heartbeat.check().unwrap_err();
        assert_eq!(stalled.stall_limit, Duration::from_secs(10));
        assert!(stalled.since_last_beat > Duration::from_secs(10));
        // Clones share the beat.
        heartbeat.clone().beat();
        assert_eq!(heartbeat.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_is_progress_keeps_the_heartbeat_fresh_and_a_hung_one_does_not() {
        let limit = Duration::from_secs(8);
        let heartbeat = Heartbeat::new(limit);
        // Ten stall limits of waiting, beaten through.
        heartbeat.beat_while(tokio::time::sleep(limit * 10)).await;
        assert_eq!(heartbeat.check(), Ok(()));
        // The same wait, not beaten through.
        tokio::time::sleep(limit * 10).await;
        assert!(heartbeat.check().is_err());
    }
}
