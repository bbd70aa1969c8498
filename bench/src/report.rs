//! A benchmark's report: the sizes it ran with, its figures in the order they were measured,
//! and the targets they are held against, written as a text summary or one JSON object.
//!
//! Units are in the figure names: `_seconds`, `_ms`, `rows_per_sec`, `_mb` and `mb_per_sec`
//! (1 MB = 10^6 bytes, the same unit for memory and throughput).

use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// Bytes in the MB of every figure.
pub const MB: f64 = 1_000_000.0;

/// Which side of a threshold a figure must be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The figure must be at least the threshold (throughput).
    AtLeast,
    /// The figure must be at most the threshold (memory, latency).
    AtMost,
}

/// A target from the benchmark issue, held against one figure of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The figure it applies to.
    pub figure: &'static str,
    /// Which side of the threshold is good.
    pub bound: Bound,
    /// The threshold.
    pub threshold: f64,
    /// The figure's unit, for the summary.
    pub unit: &'static str,
}

impl Target {
    /// The figure must be at least `threshold`.
    pub fn at_least(figure: &'static str, threshold: f64, unit: &'static str) -> Self {
        Self {
            figure,
            bound: Bound::AtLeast,
            threshold,
            unit,
        }
    }

    /// The figure must be at most `threshold`.
    pub fn at_most(figure: &'static str, threshold: f64, unit: &'static str) -> Self {
        Self {
            figure,
            bound: Bound::AtMost,
            threshold,
            unit,
        }
    }

    /// Peak memory of a worker at 100,000-row batches.
    pub fn peak_rss() -> Self {
        Self::at_most("peak_rss_mb", 150.0, "MB")
    }

    fn met_by(&self, value: f64) -> bool {
        match self.bound {
            Bound::AtLeast => value >= self.threshold,
            Bound::AtMost => value <= self.threshold,
        }
    }
}

/// A target with the figure it was held against; `met` is `None` when the figure is missing
/// (for example peak memory on a system without `/proc`).
#[derive(Debug, Clone, PartialEq)]
struct Checked {
    target: Target,
    value: Option<f64>,
}

impl Checked {
    fn met(&self) -> Option<bool> {
        self.value.map(|value| self.target.met_by(value))
    }
}

/// The figures of one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    stage: &'static str,
    title: String,
    parameters: Vec<(String, Value)>,
    figures: Vec<(String, Value)>,
    targets: Vec<Checked>,
}

impl Report {
    /// An empty report of `stage`, described by `title`.
    pub fn new(stage: &'static str, title: impl Into<String>) -> Self {
        Self {
            stage,
            title: title.into(),
            parameters: Vec::new(),
            figures: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Records a size or setting the stage ran with.
    pub fn parameter(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.parameters.push((name.to_owned(), value.into()));
        self
    }

    /// Records a measured figure; a figure recorded twice keeps its last value.
    pub fn figure(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        let value = value.into();
        match self.figures.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) => *old = value,
            None => self.figures.push((name.to_owned(), value)),
        }
        self
    }

    /// Records a measured number, rounded to `decimals` places so that the JSON stays legible.
    pub fn number(&mut self, name: &str, value: f64, decimals: u32) -> &mut Self {
        let rounded = round(value, decimals);
        if decimals == 0 && rounded.is_finite() && rounded.abs() < 1e15 {
            // A whole number reads better without a trailing `.0`.
            self.figure(name, rounded as i64)
        } else {
            self.figure(name, rounded)
        }
    }

    /// Records `rows`, `seconds`, `rows_per_sec` and, when `bytes` is given, `mb_per_sec`,
    /// under `prefix` (empty for the stage's headline figures).
    pub fn throughput(
        &mut self,
        prefix: &str,
        rows: u64,
        elapsed: Duration,
        bytes: Option<u64>,
    ) -> &mut Self {
        let seconds = elapsed.as_secs_f64();
        self.figure(&format!("{prefix}rows"), rows);
        self.number(&format!("{prefix}seconds"), seconds, 3);
        self.number(
            &format!("{prefix}rows_per_sec"),
            per_second(rows, seconds),
            0,
        );
        if let Some(bytes) = bytes {
            self.number(
                &format!("{prefix}mb_per_sec"),
                per_second(bytes, seconds) / MB,
                2,
            );
        }
        self
    }

    /// Records `<prefix>_p50_ms`, `_p95_ms` and `_max_ms` of `samples`, and their count.
    pub fn latencies(&mut self, prefix: &str, samples: &[Duration]) -> &mut Self {
        let mut millis: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        millis.sort_by(f64::total_cmp);
        self.figure(&format!("{prefix}_count"), millis.len());
        for (name, quantile) in [("p50", 0.50), ("p95", 0.95), ("max", 1.0)] {
            if let Some(value) = nearest_rank(&millis, quantile) {
                self.number(&format!("{prefix}_{name}_ms"), value, 1);
            }
        }
        self
    }

    /// Records `cpu_seconds`, the CPU time a stage used (see [`super::process::CpuClock`]),
    /// and `cpu_utilization`, that time over `wall`: near 1 on one core means the stage
    /// computes, well below 1 means it waits.
    pub fn cpu(&mut self, used: Option<f64>, wall: Duration) -> &mut Self {
        if let Some(used) = used {
            self.number("cpu_seconds", used, 2);
            if wall > Duration::ZERO {
                self.number("cpu_utilization", used / wall.as_secs_f64(), 2);
            }
        }
        self
    }

    /// Records this process's peak resident memory as `peak_rss_mb`, when the system says.
    pub fn peak_rss(&mut self) -> &mut Self {
        if let Some(mb) = super::process::own_peak_rss_mb() {
            self.number("peak_rss_mb", mb, 1);
        }
        self
    }

    /// Holds a figure against a target; call it after the figure is recorded.
    pub fn target(&mut self, target: Target) -> &mut Self {
        let value = self.get_f64(target.figure);
        self.targets.push(Checked { target, value });
        self
    }

    /// The value of a figure.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.figures.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value of a numeric figure.
    pub fn get_f64(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Value::as_f64)
    }

    /// The summary printed for a reader.
    pub fn text(&self) -> String {
        let mut text = format!("bench {}: {}\n", self.stage, self.title);
        if !self.parameters.is_empty() {
            let parameters: Vec<String> = self
                .parameters
                .iter()
                .map(|(name, value)| format!("{name}={}", plain(value)))
                .collect();
            text.push_str(&format!("  with {}\n", parameters.join(" ")));
        }
        for (name, value) in &self.figures {
            match value {
                Value::Object(entries) => {
                    text.push_str(&format!("  {name}:\n"));
                    for (key, inner) in entries {
                        text.push_str(&format!("    {key:<44} {:>14}\n", human(inner)));
                    }
                }
                _ => text.push_str(&format!("  {name:<46} {:>14}\n", human(value))),
            }
        }
        for checked in &self.targets {
            let target = &checked.target;
            let sign = match target.bound {
                Bound::AtLeast => ">=",
                Bound::AtMost => "<=",
            };
            let verdict = match checked.met() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            text.push_str(&format!(
                "  target {} {sign} {} {}: {verdict}\n",
                target.figure,
                human(&Value::from(target.threshold)),
                target.unit
            ));
        }
        text
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("stage", self.stage)?;
        map.serialize_entry("title", &self.title)?;
        map.serialize_entry("version", env!("CARGO_PKG_VERSION"))?;
        map.serialize_entry(
            "cores_available",
            &std::thread::available_parallelism().map_or(0, usize::from),
        )?;
        let parameters: serde_json::Map<String, Value> = self.parameters.iter().cloned().collect();
        map.serialize_entry("parameters", &parameters)?;
        for (name, value) in &self.figures {
            map.serialize_entry(name, value)?;
        }
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|checked| {
                let bound = match checked.target.bound {
                    Bound::AtLeast => "at_least",
                    Bound::AtMost => "at_most",
                };
                serde_json::json!({
                    "figure": checked.target.figure,
                    bound: checked.target.threshold,
                    "unit": checked.target.unit,
                    "value": checked.value,
                    "met": checked.met(),
                })
            })
            .collect();
        map.serialize_entry("targets", &targets)?;
        map.end()
    }
}

/// `count` per second of `seconds`, 0 when no time passed.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn round(value: f64, decimals: u32) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    (value * scale).round() / scale
}

/// The nearest-rank quantile of sorted samples.
fn nearest_rank(sorted: &[f64], quantile: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A value for the summary: numbers with thousands separators.
fn human(value: &Value) -> String {
    match value {
        Value::Number(number) if number.is_f64() => {
            let value = number.as_f64().unwrap_or_default();
            if value.fract() == 0.0 && value.abs() < 1e15 {
                group(&format!("{value:.0}"))
            } else {
                let text = format!("{value:.3}");
                let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
                let fraction = fraction.trim_end_matches('0');
                if fraction.is_empty() {
                    group(whole)
                } else {
                    format!("{}.{fraction}", group(whole))
                }
            }
        }
        Value::Number(number) => group(&number.to_string()),
        other => plain(other),
    }
}

fn group(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_empty_samples_give_none() {
        let sorted: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&sorted, 0.5), Some(10.0));
        assert_eq!(nearest_rank(&sorted, 0.95), Some(19.0));
        assert_eq!(nearest_rank(&sorted, 1.0), Some(20.0));
        assert_eq!(nearest_rank(&[3.0], 0.95), Some(3.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn targets_are_reported_met_or_missed_and_never_fail_the_report() {
        let mut report = Report::new("demo", "a demonstration");
        report
            .parameter("rows", 1_000)
            .throughput("", 1_000, Duration::from_millis(500), Some(2_000_000))
            .target(Target::at_least("rows_per_sec", 1_000_000.0, "rows/s"))
            .target(Target::at_most("seconds", 1.0, "s"))
            .target(Target::peak_rss());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"], 1_000);
        assert_eq!(json["rows_per_sec"], 2_000);
        assert_eq!(json["mb_per_sec"], 4.0);
        assert_eq!(json["parameters"]["rows"], 1_000);
        assert_eq!(json["targets"][0]["met"], false);
        assert_eq!(json["targets"][0]["at_least"], 1_000_000.0);
        assert_eq!(json["targets"][1]["met"], true);
        assert_eq!(json["targets"][2]["met"], Value::Null);
        let text = report.text();
        assert!(
            text.contains("rows_per_sec") && text.contains("2,000"),
            "{text}"
        );
        assert!(
            text.contains("MISSED") && text.contains("not measured"),
            "{text}"
        );
    }

    #[test]
    fn numbers_are_grouped_for_reading() {
        assert_eq!(human(&Value::from(1_234_567.0)), "1,234,567");
        assert_eq!(human(&Value::from(1_234.5)), "1,234.5");
        assert_eq!(human(&Value::from(-12_345)), "-12,345");
        assert_eq!(human(&Value::from(0.25)), "0.25");
    }
}
