//! `/status`: what a worker last did, when, and how far behind it is, as a small JSON
//! document. The operator reads it from every worker pod and writes what it learns into the
//! pipeline's `status.data`; this module owns both sides of that contract (the document, the
//! rate it carries and the client that reads it), so they cannot drift apart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `/status` document of one worker process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// `producer`, `streamer` or `loader`.
    pub worker: String,
    /// When the process started (Unix seconds).
    pub started_at: i64,
    /// Rows this process moved into its layer since it started: messages Kafka acknowledged
    /// (producer), rows written to bronze (streamer), rows inserted into silver (loader).
    pub rows_total: u64,
    /// Rows per minute over the last five minutes (less right after start); `None` until two
    /// samples a few seconds apart exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_minute: Option<f64>,
    /// When the process last moved data (Unix seconds): the last acknowledged delivery
    /// (producer), the last offset commit (streamer), the end of the last successful load run
    /// (loader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_at: Option<i64>,
    /// What waits for this process: messages behind the end of its partitions (streamer),
    /// bronze files the last load run found not yet loaded (loader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// The last finished run, for a worker that runs in rounds (the loader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunOutcome>,
    /// When the run in progress started (Unix seconds), if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<i64>,
}

/// How a worker's last run ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    /// The run's id (the loader's `metadata.load_audit.run_id`).
    pub id: String,
    /// When it ended (Unix seconds).
    pub finished_at: i64,
    /// `healthy`, `quarantined_files`, `silent_failure` or `explicit_failure`, as
    /// `metadata.load_health` calls it.
    pub health: String,
    /// Rows it moved.
    pub rows: u64,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How far back [`RateWindow`] looks.
pub const RATE_WINDOW: Duration = Duration::from_secs(300);

/// The shortest span of samples a rate is computed over; shorter spans say more about when
/// the samples fell than about the flow.
const SHORTEST_SPAN: Duration = Duration::from_secs(5);

/// A per-minute rate from samples of a growing total, over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct RateWindow {
    /// (time since an arbitrary origin, total), oldest first.
    samples: VecDeque<(Duration, u64)>,
}

impl RateWindow {
    /// Records `total` at `at` (time since the caller's fixed origin, never decreasing) and
    /// returns the rate per minute over the window, when the samples span long enough. A
    /// total below the previous one (a counter that restarted) starts the window again.
    pub fn record(&mut self, at: Duration, total: u64) -> Option<f64> {
        if self.samples.back().is_some_and(|&(_, last)| total < last) {
            self.samples.clear();
        }
        self.samples.push_back((at, total));
        // Keep the newest sample at or before the window's start, so the span covers it.
        let start = at.saturating_sub(RATE_WINDOW);
        while self.samples.len() > 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
        let &(first_at, first) = self.samples.front()?;
        let span = at.saturating_sub(first_at);
        (span >= SHORTEST_SPAN).then(|| (total - first) as f64 * 60.0 / span.as_secs_f64())
    }
}

/// The source of a worker's `/status`: a function that describes the process now, and the
/// window that turns its `rows_total` into `rows_per_minute`. Clones share the window.
#[derive(Clone)]
pub struct StatusSource {
    describe: Arc<dyn Fn() -> WorkerStatus + Send + Sync>,
    origin: tokio::time::Instant,
    started_at: i64,
    window: Arc<Mutex<RateWindow>>,
}

impl StatusSource {
    /// A source, created as the process starts, that calls `describe` for each document;
    /// `describe` leaves `started_at` and `rows_per_minute` to the source.
    pub fn new(describe: impl Fn() -> WorkerStatus + Send + Sync + 'static) -> Self {
        Self {
            describe: Arc::new(describe),
            origin: tokio::time::Instant::now(),
            started_at: unix_now(),
            window: Arc::default(),
        }
    }

    /// The document now, with the rate over the window including this sample.
    pub fn snapshot(&self) -> WorkerStatus {
        let mut status = (self.describe)();
        status.started_at = self.started_at;
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        status.rows_per_minute = window.record(self.origin.elapsed(), status.rows_total);
        status
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Why a worker's `/status` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The connection or the exchange failed, or took longer than the timeout.
    #[error("reading http://{address}/status failed: {source}")]
    Io {
        /// The address asked.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker answered something other than a status document.
    #[error("http://{address}/status answered {answer}")]
    Answer {
        /// The address asked.
        address: String,
        /// What came back, shortened.
        answer: String,
    },
}

/// Reads the `/status` document of the worker at `address` (`host:port`), giving up after
/// `timeout`. A plain HTTP/1.0 exchange: the document is small, and the server closes the
/// connection after it.
pub async fn fetch(address: &str, timeout: Duration) -> Result<WorkerStatus, FetchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET /status HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        // A status document is a few hundred bytes; anything far larger is not one.
        stream
            .take(1 << 20)
            .read_to_end(&mut response)
            .await
            .map(|_| response)
    };
    let io = |source| FetchError::Io {
        address: address.to_owned(),
        source,
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
        .map_err(io)?;
    let response = String::from_utf8_lossy(&response);
    let answer = || FetchError::Answer {
        address: address.to_owned(),
        answer: response.chars().take(200).collect(),
    };
    match crate::parse_response(&response) {
        Some((200, body)) => serde_json::from_str(body).map_err(|_| answer()),
        _ => Err(answer()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_rate_needs_samples_a_few_seconds_apart() {
        let mut window = RateWindow::default();
        assert_eq!(window.record(Duration::ZERO, 0), None);
        assert_eq!(window.record(2 * SECOND, 100), None);
        assert_eq!(window.record(10 * SECOND, 500), Some(3_000.0));
    }

    #[test]
    fn the_rate_covers_the_last_five_minutes_only() {
        let mut window = RateWindow::default();
        // A burst in the first minute, then a steady 60 rows a minute.
        window.record(Duration::ZERO, 0);
        window.record(60 * SECOND, 100_000);
        let mut total = 100_000;
        let mut rate = None;
        for minute in 2..=10 {
            total += 60;
            rate = window.record(minute * 60 * SECOND, total);
        }
        assert_eq!(rate, Some(60.0));
    }

    #[test]
    fn a_counter_that_restarted_starts_the_window_again() {
        let mut window = RateWindow::default();
        window.record(Duration::ZERO, 0);
        window.record(60 * SECOND, 6_000);
        assert_eq!(window.record(61 * SECOND, 10), None);
        assert_eq!(window.record(121 * SECOND, 70), Some(60.0));
    }

    #[test]
    fn a_status_document_keeps_its_wire_names() {
        let status = WorkerStatus {
            worker: "loader".to_owned(),
            started_at: 1,
            rows_total: 2,
            rows_per_minute: Some(3.0),
            last_progress_at: Some(4),
            backlog: Some(5),
            last_run: Some(RunOutcome {
                id: "r".to_owned(),
                finished_at: 6,
                health: "healthy".to_owned(),
                rows: 7,
                error: None,
            }),
            running_since: None,
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"worker":"loader","startedAt":1,"rowsTotal":2,"rowsPerMinute":3.0,"lastProgressAt":4,"backlog":5,"lastRun":{"id":"r","finishedAt":6,"health":"healthy","rows":7}}"#
        );
        assert_eq!(serde_json::from_str::<WorkerStatus>(&json).unwrap(), status);
    }
}
