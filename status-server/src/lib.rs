//! The HTTP endpoints of a long-running process: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive) and `/readyz` (it has connected and is doing its work).
//! The fintech workers and the operator serve the same three endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

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

struct ServerState {
    registry: Registry,
    readiness: Readiness,
}

/// Binds `address` and serves until `cancel` fires. Binding errors are returned at once,
/// so a port clash fails the process at start rather than silently.
pub async fn serve(
    address: SocketAddr,
    registry: Registry,
    readiness: Readiness,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let state = Arc::new(ServerState {
        registry,
        readiness,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
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
    let malformed = || Error::other(format!("malformed HTTP response: {response:?}"));
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(malformed)?;
    let body = response.split_once("\r\n\r\n").ok_or_else(malformed)?.1;
    Ok((status, body.to_owned()))
}
