//! The quickstart's self-contained HTML report: figures from the gold tables drawn as inline
//! SVG bar charts with axes, units and values, and the data-quality record (dead letters,
//! rejected rows, the load audit, the data tests), with no script and nothing fetched from
//! the network.

use std::fmt::Write as _;

use sqlx::PgConnection;

/// One labelled value of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The label under the bar.
    pub label: String,
    /// The value.
    pub value: f64,
}

/// What a chart's values measure, which decides how they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Indian rupees: `₹1.8M`.
    Inr,
    /// A percentage: `1.25%`.
    Percent,
    /// A count: `1,969`.
    Count,
}

impl Unit {
    /// `value` as an axis tick or a bar's label.
    pub fn show(self, value: f64) -> String {
        match self {
            Self::Inr => format!("₹{}", compact(value)),
            Self::Percent => format!("{value:.2}%"),
            Self::Count => compact(value),
        }
    }
}

/// `1.8M`, `250k`, `1,969` is `2.0k`, `12`: short enough for an axis.
fn compact(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e9 {
        format!("{:.1}B", value / 1e9)
    } else if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// One load run, as `metadata.load_health` shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LoadRun {
    /// When it started.
    pub started_at: String,
    /// SUCCESS or FAILED.
    pub status: String,
    /// healthy, quarantined_files, silent_failure or explicit_failure.
    pub health: String,
    /// Files loaded.
    pub files_loaded: i64,
    /// Rows read from bronze.
    pub rows_read: i64,
    /// Rows inserted into silver.
    pub rows_loaded: i64,
    /// Rows refused by validation.
    pub rows_rejected: i64,
    /// Rows already in silver.
    pub rows_duplicate: i64,
}

/// One data test of the last transform run.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// SUCCESS, FAILED or SKIPPED.
    pub status: String,
    /// Failing rows.
    pub failing_rows: Option<i64>,
}

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportData {
    /// Rows per layer, in pipeline order.
    pub layers: Vec<(String, i64)>,
    /// Gross value of successful payments per day, INR.
    pub daily_revenue: Vec<Bar>,
    /// Fraud rate per category, percent.
    pub fraud_by_category: Vec<Bar>,
    /// Fraud rate per payment method, percent.
    pub fraud_by_method: Vec<Bar>,
    /// Payments that went through PENDING, by their status now.
    pub settlement: Vec<Bar>,
    /// Dead letters in the lake, by why they could not be decoded.
    pub dead_letters_by_kind: Vec<Bar>,
    /// Rows in `raw.rejected_transactions`, by reason.
    pub rejects_by_reason: Vec<Bar>,
    /// Every load run, oldest first.
    pub load_runs: Vec<LoadRun>,
    /// The data tests of the last transform run.
    pub data_tests: Vec<TestResult>,
    /// Transactions of every reconciled bank day, by outcome.
    pub reconciliation: Vec<Bar>,
    /// Each reconciled day: its outcomes' counts.
    pub reconciliation_days: Vec<ReconciledDay>,
}

/// One day of `marts.bank_reconciliation_daily`, its outcomes side by side.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReconciledDay {
    /// The settlement day.
    pub settlement_date: String,
    /// Transactions the bank and the stream agree on.
    pub matched: i64,
    /// Settled in the stream, not in the bank's file.
    pub missing_at_bank: i64,
    /// In the bank's file, never in the stream.
    pub missing_in_stream: i64,
    /// Amounts (or currencies) differ.
    pub amount_mismatch: i64,
    /// Statuses differ.
    pub status_mismatch: i64,
    /// Listed more than once by the bank.
    pub duplicated_at_bank: i64,
}

/// Reads the figures from the warehouse; `dead_letters_by_kind` comes from the lake.
pub async fn gather(
    conn: &mut PgConnection,
    layers: Vec<(String, i64)>,
    dead_letters_by_kind: Vec<Bar>,
) -> Result<ReportData, sqlx::Error> {
    let bars = |rows: Vec<(String, f64)>| {
        rows.into_iter()
            .map(|(label, value)| Bar { label, value })
            .collect()
    };
    let daily_revenue = sqlx::query_as(
        "select payment_date::text, sum(gross_value_inr)::float8 from marts.daily_revenue_summary \
         group by payment_date order by payment_date",
    )
    .fetch_all(&mut *conn)
    .await?;
    let fraud_by_category = sqlx::query_as(
        "select category, (100.0 * count(*) filter (where is_fraud) / count(*))::float8 \
         from marts.fact_transactions group by category order by 2 desc, 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let fraud_by_method = sqlx::query_as(
        "select payment_method, (100.0 * count(*) filter (where is_fraud) / count(*))::float8 \
         from marts.fact_transactions group by payment_method order by 2 desc, 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let settlement = sqlx::query_as(
        "select fact.status, count(*)::float8 from marts.fact_transactions as fact \
         where exists (select 1 from raw.transactions as raw \
                       where raw.transaction_id = fact.transaction_id and raw.status = 'PENDING') \
         group by fact.status order by fact.status",
    )
    .fetch_all(&mut *conn)
    .await?;
    let rejects_by_reason = sqlx::query_as(
        "select reason, count(*)::float8 from raw.rejected_transactions \
         group by reason order by 2 desc, 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let reconciliation = sqlx::query_as(
        "select outcome, sum(count_items)::float8 from marts.bank_reconciliation_daily \
         group by outcome order by outcome = 'matched' desc, 2 desc, 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let reconciliation_days = sqlx::query_as(
        "select settlement_date::text, \
         coalesce(sum(count_items) filter (where outcome = 'matched'), 0)::bigint as matched, \
         coalesce(sum(count_items) filter (where outcome = 'missing_at_bank'), 0)::bigint as missing_at_bank, \
         coalesce(sum(count_items) filter (where outcome = 'missing_in_stream'), 0)::bigint as missing_in_stream, \
         coalesce(sum(count_items) filter (where outcome = 'amount_mismatch'), 0)::bigint as amount_mismatch, \
         coalesce(sum(count_items) filter (where outcome = 'status_mismatch'), 0)::bigint as status_mismatch, \
         coalesce(sum(count_items) filter (where outcome = 'duplicated_at_bank'), 0)::bigint as duplicated_at_bank \
         from marts.bank_reconciliation_daily group by settlement_date order by settlement_date",
    )
    .fetch_all(&mut *conn)
    .await?;
    let load_runs = sqlx::query_as(
        "select to_char(started_at, 'YYYY-MM-DD HH24:MI:SS') as started_at, status, health, \
         coalesce(files_loaded, 0)::bigint as files_loaded, \
         coalesce(rows_read, 0)::bigint as rows_read, \
         coalesce(rows_loaded, 0)::bigint as rows_loaded, \
         coalesce(rows_rejected, 0)::bigint as rows_rejected, \
         coalesce(rows_duplicate, 0)::bigint as rows_duplicate \
         from metadata.load_health order by started_at",
    )
    .fetch_all(&mut *conn)
    .await?;
    let data_tests = sqlx::query_as(
        "select node as name, status, rows::bigint as failing_rows from metadata.transform_runs \
         where kind = 'test' and run_id = (select run_id from metadata.transform_runs \
                                           order by started_at desc limit 1) \
         order by status = 'SUCCESS', node",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(ReportData {
        layers,
        daily_revenue: bars(daily_revenue),
        fraud_by_category: bars(fraud_by_category),
        fraud_by_method: bars(fraud_by_method),
        settlement: bars(settlement),
        dead_letters_by_kind,
        rejects_by_reason: bars(rejects_by_reason),
        load_runs,
        data_tests,
        reconciliation: bars(reconciliation),
        reconciliation_days,
    })
}

/// A chart: its title, bars, unit and axis titles.
struct Chart<'a> {
    title: &'a str,
    bars: &'a [Bar],
    unit: Unit,
    x_title: &'a str,
    y_title: &'a str,
}

/// The report as one HTML document.
pub fn render(data: &ReportData, generated_at: &str) -> String {
    let mut html = String::new();
    html.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>fintech quickstart report</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2933;max-width:1100px}\
         table{border-collapse:collapse}td,th{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:right}\
         th:first-child,td:first-child{text-align:left}section{margin:2rem 0}\
         svg text{font-size:11px;fill:#1f2933}svg .value{font-size:10px}svg .axis-title{font-size:12px;font-weight:600}\
         .FAILED,.explicit_failure,.silent_failure{color:#b91c1c;font-weight:600}\
         </style></head><body>\n<h1>fintech quickstart report</h1>\n",
    );
    let _ = writeln!(html, "<p>Generated {}.</p>", escape(generated_at));
    html.push_str("<section><h2>Rows per layer</h2><table><tr><th>layer</th><th>rows</th></tr>");
    for (layer, rows) in &data.layers {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(layer),
            grouped(*rows)
        );
    }
    html.push_str("</table></section>\n");
    let business = [
        Chart {
            title: "Daily revenue (successful payments)",
            bars: &data.daily_revenue,
            unit: Unit::Inr,
            x_title: "payment date",
            y_title: "gross value (INR)",
        },
        Chart {
            title: "Fraud rate by category",
            bars: &data.fraud_by_category,
            unit: Unit::Percent,
            x_title: "merchant category",
            y_title: "payments labelled fraud (%)",
        },
        Chart {
            title: "Fraud rate by payment method",
            bars: &data.fraud_by_method,
            unit: Unit::Percent,
            x_title: "payment method",
            y_title: "payments labelled fraud (%)",
        },
        Chart {
            title: "Payments that were PENDING, by status now",
            bars: &data.settlement,
            unit: Unit::Count,
            x_title: "status now",
            y_title: "payments",
        },
    ];
    for chart in &business {
        section(&mut html, chart);
    }
    html.push_str("<h2>Data quality</h2>\n");
    let quality = [
        Chart {
            title: "Dead letters by kind (messages that could not be decoded)",
            bars: &data.dead_letters_by_kind,
            unit: Unit::Count,
            x_title: "why",
            y_title: "messages",
        },
        Chart {
            title: "Rejected rows by reason (raw.rejected_transactions)",
            bars: &data.rejects_by_reason,
            unit: Unit::Count,
            x_title: "reason",
            y_title: "rows",
        },
    ];
    for chart in &quality {
        section(&mut html, chart);
    }
    html.push_str("<h2>Bank reconciliation</h2>\n");
    section(
        &mut html,
        &Chart {
            title: "Transactions by outcome, every reconciled day (marts.bank_reconciliation)",
            bars: &data.reconciliation,
            unit: Unit::Count,
            x_title: "outcome",
            y_title: "transactions",
        },
    );
    html.push_str(
        "<section><h3>Per settlement day (marts.bank_reconciliation_daily)</h3><table><tr>\
         <th>day</th><th>matched</th><th>missing at bank</th><th>missing in stream</th>\
         <th>amount mismatch</th><th>status mismatch</th><th>duplicated at bank</th></tr>",
    );
    for day in &data.reconciliation_days {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&day.settlement_date),
            grouped(day.matched),
            grouped(day.missing_at_bank),
            grouped(day.missing_in_stream),
            grouped(day.amount_mismatch),
            grouped(day.status_mismatch),
            grouped(day.duplicated_at_bank),
        );
    }
    html.push_str("</table></section>\n");
    html.push_str(
        "<section><h2>Load audit (metadata.load_health)</h2><table><tr><th>started</th>\
         <th>status</th><th>health</th><th>files</th><th>rows read</th><th>loaded</th>\
         <th>rejected</th><th>already in silver</th></tr>",
    );
    for run in &data.load_runs {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{status}\">{status}</td><td class=\"{health}\">{health}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&run.started_at),
            grouped(run.files_loaded),
            grouped(run.rows_read),
            grouped(run.rows_loaded),
            grouped(run.rows_rejected),
            grouped(run.rows_duplicate),
            status = escape(&run.status),
            health = escape(&run.health),
        );
    }
    html.push_str("</table></section>\n");
    let passed = data
        .data_tests
        .iter()
        .filter(|t| t.status == "SUCCESS")
        .count();
    let _ = write!(
        html,
        "<section><h2>Data tests of the last transform run: {passed} of {} passed</h2>\
         <table><tr><th>test</th><th>status</th><th>failing rows</th></tr>",
        data.data_tests.len()
    );
    for test in &data.data_tests {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{status}\">{status}</td><td>{}</td></tr>",
            escape(&test.name),
            test.failing_rows.map(grouped).unwrap_or_default(),
            status = escape(&test.status),
        );
    }
    html.push_str("</table></section>\n</body></html>\n");
    html
}

fn section(html: &mut String, chart: &Chart<'_>) {
    let _ = writeln!(
        html,
        "<section><h3>{}</h3>{}</section>",
        escape(chart.title),
        bar_chart(chart)
    );
}

/// `19,656`.
fn grouped(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0 {
        out.insert(0, '-');
    }
    out
}

/// A step of 1, 2, 2.5 or 5 times a power of ten that splits `max` into about five ticks.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// A vertical bar chart as inline SVG: a value axis with ticks, gridlines and its title, a
/// category axis with rotated labels and its title, and each bar's value above it.
fn bar_chart(chart: &Chart<'_>) -> String {
    let bars = chart.bars;
    if bars.is_empty() {
        return "<p>None.</p>".to_owned();
    }
    let (width, height, top, bottom, left, right) = (1000.0, 340.0, 24.0, 110.0, 86.0, 10.0);
    let plot_height = height - top - bottom;
    let plot_width = width - left - right;
    let largest = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let step = if largest > 0.0 {
        tick_step(largest)
    } else {
        1.0
    };
    let axis_max = (largest / step).ceil().max(1.0) * step;
    let y_of = |value: f64| top + plot_height - value / axis_max * plot_height;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(chart.title)
    );
    // Value axis: gridlines and ticks.
    let mut tick = 0.0;
    while tick <= axis_max + step / 2.0 {
        let y = y_of(tick);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - right,
            left - 6.0,
            y + 4.0,
            escape(&chart.unit.show(tick)),
        );
        tick += step;
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#6b7280\"/>\
         <line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#6b7280\"/>\
         <text class=\"axis-title\" x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 14 {:.1})\">{}</text>\
         <text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        top + plot_height,
        top + plot_height,
        width - right,
        top + plot_height,
        top + plot_height / 2.0,
        top + plot_height / 2.0,
        escape(chart.y_title),
        left + plot_width / 2.0,
        height - 6.0,
        escape(chart.x_title),
    );
    let slot = plot_width / bars.len() as f64;
    let bar_width = (slot * 0.7).max(1.0);
    // Values fit across a wide bar, and go upright above a narrow one.
    let upright = slot < 52.0;
    for (i, bar) in bars.iter().enumerate() {
        let value = bar.value.max(0.0);
        let y = y_of(value);
        let x = left + i as f64 * slot + (slot - bar_width) / 2.0;
        let middle = x + bar_width / 2.0;
        let label_y = top + plot_height + 14.0;
        let shown = chart.unit.show(bar.value);
        let value_label = if upright {
            format!(
                "<text class=\"value\" x=\"{middle:.1}\" y=\"{:.1}\" \
                 transform=\"rotate(-90 {middle:.1} {:.1})\" dy=\"0.35em\">{}</text>",
                y - 4.0,
                y - 4.0,
                escape(&shown)
            )
        } else {
            format!(
                "<text class=\"value\" x=\"{middle:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y - 4.0,
                escape(&shown)
            )
        };
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{:.1}\" fill=\"#3b82f6\">\
             <title>{label}: {title_value}</title></rect>{value_label}\
             <text x=\"{middle:.1}\" y=\"{label_y:.1}\" text-anchor=\"end\" \
             transform=\"rotate(-40 {middle:.1} {label_y:.1})\">{label}</text>",
            top + plot_height - y,
            label = escape(&bar.label),
            title_value = escape(&shown),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: f64) -> Bar {
        Bar {
            label: label.to_owned(),
            value,
        }
    }

    fn data() -> ReportData {
        ReportData {
            layers: vec![("bronze".to_owned(), 19_931)],
            daily_revenue: vec![
                bar("2026-11-02", 1_791_380.45),
                bar("2026-11-03", 604_442.85),
            ],
            fraud_by_category: vec![bar("<script>", 1.5)],
            fraud_by_method: vec![bar("UPI", 0.5)],
            settlement: vec![],
            dead_letters_by_kind: vec![bar("invalid_json", 69.0)],
            rejects_by_reason: vec![bar("missing_customer_id", 41.0)],
            load_runs: vec![LoadRun {
                started_at: "2026-12-03 08:15:02".to_owned(),
                status: "SUCCESS".to_owned(),
                health: "healthy".to_owned(),
                files_loaded: 36,
                rows_read: 19_931,
                rows_loaded: 19_656,
                rows_rejected: 82,
                rows_duplicate: 193,
            }],
            data_tests: vec![TestResult {
                name: "not_null_fact_transactions_amount_inr".to_owned(),
                status: "SUCCESS".to_owned(),
                failing_rows: Some(0),
            }],
            reconciliation: vec![bar("matched", 7_120.0), bar("amount_mismatch", 1.0)],
            reconciliation_days: vec![ReconciledDay {
                settlement_date: "2026-11-02".to_owned(),
                matched: 7_120,
                missing_at_bank: 0,
                missing_in_stream: 3,
                amount_mismatch: 1,
                status_mismatch: 0,
                duplicated_at_bank: 0,
            }],
        }
    }

    #[test]
    fn every_chart_has_axes_with_units_and_each_bar_its_value() {
        let html = render(&data(), "now");
        // Four business charts (one without data), two data-quality charts and the
        // reconciliation's.
        assert_eq!(html.matches("<svg").count(), 6);
        assert!(html.contains("None."));
        assert!(
            html.contains(">gross value (INR)</text>") && html.contains(">payment date</text>")
        );
        // Ticks of the revenue axis up to ₹2.0M, and the bars' own values.
        assert!(
            html.contains(">₹2.0M</text>") && html.contains(">₹0</text>"),
            "{html}"
        );
        assert!(html.contains(">₹1.8M</text>") && html.contains(">₹604k</text>"));
        assert!(html.contains(">1.50%</text>"));
        assert!(html.contains(">69</text>") && html.contains(">missing_customer_id</text>"));
    }

    #[test]
    fn the_data_quality_section_lists_the_load_audit_and_the_data_tests() {
        let html = render(&data(), "now");
        assert!(html.contains("<h2>Data quality</h2>"));
        assert!(html.contains("<td>19,931</td><td>19,656</td><td>82</td><td>193</td>"));
        assert!(html.contains("Data tests of the last transform run: 1 of 1 passed"));
        assert!(html.contains("not_null_fact_transactions_amount_inr"));
    }

    #[test]
    fn the_reconciliation_section_shows_each_day_by_outcome() {
        let html = render(&data(), "now");
        assert!(html.contains("<h2>Bank reconciliation</h2>"));
        assert!(html.contains(">amount_mismatch</text>"));
        assert!(html.contains(
            "<tr><td>2026-11-02</td><td>7,120</td><td>0</td><td>3</td><td>1</td><td>0</td><td>0</td></tr>"
        ));
    }

    #[test]
    fn labels_are_escaped_and_nothing_is_fetched() {
        let html = render(&data(), "now");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(!html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(1_791_380.0), 500_000.0);
        assert_eq!(tick_step(1.5), 0.5);
        assert_eq!(tick_step(69.0), 20.0);
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-12), "-12");
        assert_eq!(compact(19_656.0), "20k");
        assert_eq!(compact(1_969.0), "2.0k");
    }
}
