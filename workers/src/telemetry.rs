//! Logs and terminal progress: JSON logs in pods, readable text and progress bars on a
//! terminal.

use std::io::{IsTerminal, Write};
use std::sync::LazyLock;

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

/// What libraries say below the default level: PostgreSQL's notices ("table … does not
/// exist, skipping") are for whoever reads the SQL, not for the user of a command.
const QUIET_LIBRARIES: &str = "sqlx::postgres::notice=warn";

/// Installs the global subscriber. The filter comes from `FINTECH_LOG` (same syntax as
/// `RUST_LOG`), else `default_level` with library chatter below it. Log lines go above the
/// progress bars, never through them.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("FINTECH_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},{QUIET_LIBRARIES}")));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AboveTheBars);
    // A second init (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The process's progress bars, drawn together on stderr when it is a terminal and hidden
/// otherwise.
static BARS: LazyLock<MultiProgress> = LazyLock::new(|| {
    if std::io::stderr().is_terminal() {
        MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4))
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    }
});

/// Stderr with the progress bars put away while a log line is written (the formatter writes
/// each line at once), so that lines stack above the bars instead of breaking them.
struct AboveTheBars;

impl Write for AboveTheBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A progress bar among the process's bars. With a length it counts up to it (no ETA: the
/// first seconds of a stage say little about the rest); without, it is a spinner whose
/// message says what the stage is doing, with the time it has taken so far.
pub fn progress_bar(length: Option<u64>, label: &str) -> ProgressBar {
    let bar = match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {human_pos}/{human_len} {elapsed:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{prefix:>10} {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    BARS.add(bar.with_prefix(label.to_owned()))
}
