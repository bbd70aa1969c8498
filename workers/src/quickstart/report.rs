//! The quickstart's self-contained HTML report: figures from the gold tables drawn as inline
//! SVG bar charts, with no script and nothing fetched from the network.

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
}

/// Reads the figures from the gold tables.
pub async fn gather(
    conn: &mut PgConnection,
    layers: Vec<(String, i64)>,
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
    Ok(ReportData {
        layers,
        daily_revenue: bars(daily_revenue),
        fraud_by_category: bars(fraud_by_category),
        fraud_by_method: bars(fraud_by_method),
        settlement: bars(settlement),
    })
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
         svg text{font-size:11px;fill:#1f2933}\
         </style></head><body>\n<h1>fintech quickstart report</h1>\n",
    );
    let _ = writeln!(html, "<p>Generated {}.</p>", escape(generated_at));
    html.push_str("<section><h2>Rows per layer</h2><table><tr><th>layer</th><th>rows</th></tr>");
    for (layer, rows) in &data.layers {
        let _ = write!(html, "<tr><td>{}</td><td>{rows}</td></tr>", escape(layer));
    }
    html.push_str("</table></section>\n");
    for (title, bars, unit) in [
        (
            "Daily revenue (successful payments, INR)",
            &data.daily_revenue,
            "₹",
        ),
        ("Fraud rate by category (%)", &data.fraud_by_category, "%"),
        (
            "Fraud rate by payment method (%)",
            &data.fraud_by_method,
            "%",
        ),
        (
            "Payments that were PENDING, by status now",
            &data.settlement,
            "",
        ),
    ] {
        let _ = writeln!(
            html,
            "<section><h2>{}</h2>{}</section>",
            escape(title),
            bar_chart(bars, unit)
        );
    }
    html.push_str("</body></html>\n");
    html
}

/// A vertical bar chart as inline SVG.
fn bar_chart(bars: &[Bar], unit: &str) -> String {
    if bars.is_empty() {
        return "<p>No data yet.</p>".to_owned();
    }
    let (width, height, top, bottom, left) = (1000.0, 300.0, 20.0, 90.0, 10.0);
    let max = bars
        .iter()
        .map(|b| b.value)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let slot = (width - left) / bars.len() as f64;
    let bar_width = (slot * 0.7).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\">"
    );
    for (i, bar) in bars.iter().enumerate() {
        let plot = height - top - bottom;
        let h = (bar.value / max * plot).max(0.0);
        let x = left + i as f64 * slot + (slot - bar_width) / 2.0;
        let y = top + plot - h;
        let label_x = x + bar_width / 2.0;
        let label_y = height - bottom + 12.0;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{h:.1}\" fill=\"#3b82f6\">\
             <title>{label}: {unit}{value:.2}</title></rect>\
             <text x=\"{label_x:.1}\" y=\"{label_y:.1}\" transform=\"rotate(45 {label_x:.1} {label_y:.1})\">{label}</text>",
            label = escape(&bar.label),
            value = bar.value,
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

    #[test]
    fn renders_every_chart_as_inline_svg_and_escapes_labels() {
        let bar = |label: &str, value| Bar {
            label: label.to_owned(),
            value,
        };
        let data = ReportData {
            layers: vec![("bronze".to_owned(), 10)],
            daily_revenue: vec![bar("2026-11-02", 100.0), bar("2026-11-03", 50.0)],
            fraud_by_category: vec![bar("<script>", 1.5)],
            fraud_by_method: vec![bar("UPI", 0.5)],
            settlement: vec![],
        };
        let html = render(&data, "now");
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("No data yet."));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        // Nothing is fetched: no script, stylesheet or image references.
        assert!(!html.contains("src=") && !html.contains("href="));
    }
}
