//! Logs and terminal progress: JSON logs in pods, readable text and progress bars on a
//! terminal.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. The filter comes from `FINTECH_LOG` (same syntax as
/// `RUST_LOG`), default `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FINTECH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// A progress bar on stderr when it is a terminal, hidden otherwise. With a length it counts
/// up to it; without, it is a spinner with a running count.
pub fn progress_bar(length: Option<u64>, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{prefix:>10} {spinner} {human_pos} {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    bar.with_prefix(label.to_owned())
}

/// A group of progress bars drawn together on stderr when it is a terminal, hidden otherwise.
pub fn multi_progress() -> MultiProgress {
    if std::io::stderr().is_terminal() {
        MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4))
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    }
}
