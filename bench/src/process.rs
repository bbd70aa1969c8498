//! Processes of a benchmark: this process's peak memory, and child processes (`fintech`
//! commands, or this binary running a setup step) with their wall time and peak memory.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How often a child's peak memory is sampled. The kernel keeps the peak itself (`VmHWM`), so
/// sampling only risks missing growth in the child's last few milliseconds.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Lines of a failed child's stderr shown in the error.
const ERROR_TAIL_LINES: usize = 30;

/// Clock ticks per second of the CPU times in `/proc`: `USER_HZ`, 100 on every Linux
/// architecture the product runs on.
const USER_HZ: f64 = 100.0;

/// CPU time (user and system, every thread) this process has used so far, in seconds, to
/// tell a stage that computes from one that waits; `None` without `/proc`.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses; what follows the last
    // parenthesis are plain numbers, starting with field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(14 - 3)?.parse().ok()?;
    let system: f64 = fields.get(15 - 3)?.parse().ok()?;
    Some((user + system) / USER_HZ)
}

/// Measures the CPU time this process uses from its start to [`Self::used`].
#[derive(Debug, Clone, Copy)]
pub struct CpuClock(Option<f64>);

impl CpuClock {
    /// Starts measuring.
    pub fn start() -> Self {
        Self(own_cpu_seconds())
    }

    /// CPU seconds used since the start; `None` without `/proc`.
    pub fn used(&self) -> Option<f64> {
        Some((own_cpu_seconds()? - self.0?).max(0.0))
    }
}

/// This process's peak resident memory so far, in MB.
pub fn own_peak_rss_mb() -> Option<f64> {
    peak_rss_mb_of("self")
}

/// The peak resident memory of process `pid` (or `"self"`) so far, in MB; `None` when the
/// process is gone or the system has no `/proc`.
fn peak_rss_mb_of(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / super::report::MB)
}

/// A child process that ran to success.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// From spawn to exit.
    pub wall: Duration,
    /// Its peak resident memory, in MB, as last sampled before it exited.
    pub peak_rss_mb: Option<f64>,
    /// When it was spawned, for relating its log timestamps to its start.
    pub spawned_at: chrono::DateTime<chrono::Utc>,
}

impl Finished {
    /// Its stdout parsed as the JSON object of a `fintech-bench … --format json` run.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "the child's output is not a JSON report:\n{}",
                self.stdout.trim()
            )
        })
    }
}

/// The `fintech` binary whose commands (`produce`, `load --once`, `quickstart`) are measured or
/// prepare a stage: `$FINTECH_BIN`, else the `fintech` beside this binary (cargo builds both
/// into one folder).
pub fn fintech_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FINTECH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let this = bench_binary()?;
    let beside = this.with_file_name("fintech");
    if !beside.is_file() {
        bail!(
            "no fintech binary beside {}; build it with `cargo build --release -p fintech-workers`, \
             or name one in FINTECH_BIN",
            this.display()
        );
    }
    Ok(beside)
}

/// This binary, to run a stage's setup (`fill-lake`) in a process of its own.
pub fn bench_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the fintech-bench binary to run setup steps with")
}

/// Runs `command` to completion, sampling its peak memory while it runs. Its output goes to
/// files rather than pipes, so a chatty child never blocks on a full pipe. A child that fails
/// is an error quoting the end of its stderr; `what` names it in that message.
pub async fn run(what: &str, mut command: Command) -> anyhow::Result<Finished> {
    let scratch = std::env::temp_dir().join(super::scratch::unique_name("fintech-bench-child"));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("creating the scratch folder {}", scratch.display()))?;
    let stdout_path = scratch.join("stdout");
    let stderr_path = scratch.join("stderr");
    let stdout = std::fs::File::create(&stdout_path)?;
    let stderr = std::fs::File::create(&stderr_path)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let spawned_at = chrono::Utc::now();
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {what}: {command:?}"))?;
    let pid = child.id().to_string();
    let (status, peak) = tokio::task::spawn_blocking(move || {
        let mut peak: Option<f64> = None;
        loop {
            if let Some(mb) = peak_rss_mb_of(&pid) {
                peak = Some(peak.map_or(mb, |p: f64| p.max(mb)));
            }
            match child.try_wait() {
                Ok(Some(status)) => return Ok((status, peak)),
                Ok(None) => std::thread::sleep(SAMPLE_EVERY),
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .context("watching a child process")?
    .with_context(|| format!("waiting for {what}"))?;
    let wall = started.elapsed();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.success() {
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(ERROR_TAIL_LINES)..].join("\n");
        bail!("{what} failed ({status}); the end of its stderr:\n{tail}");
    }
    Ok(Finished {
        stdout,
        stderr,
        wall,
        peak_rss_mb: peak,
        spawned_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_time() {
        let before = own_cpu_seconds().expect("Linux has /proc/self/stat");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let used = own_cpu_seconds().unwrap() - before;
        assert!((0.05..5.0).contains(&used), "{used} ({x})");
    }

    #[test]
    fn reads_this_process_peak_memory() {
        let mb = own_peak_rss_mb().expect("Linux has /proc/self/status");
        assert!((0.1..100_000.0).contains(&mb), "{mb}");
    }

    #[tokio::test]
    async fn a_failing_child_is_an_error_quoting_its_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo 'something broke' >&2; exit 3"]);
        let error = run("a failing step", command)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a failing step failed") && error.contains("something broke"),
            "{error}"
        );
        let mut command = Command::new("sh");
        command.args(["-c", "echo '{\"rows\": 3}'"]);
        let finished = run("a good step", command).await.unwrap();
        assert_eq!(finished.json().unwrap()["rows"], 3);
    }
}
