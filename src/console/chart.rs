//! The MRR chart of the revenue page: an SVG per currency, rendered here (no script, no asset
//! from the network). Each month is a group (`g.month`, `data-month="YYYY-MM"`) with its
//! movements as stacked bars, new, reactivation and expansion above the axis, contraction and
//! churn below, and the closing MRR as a line with a dot per month.
//!
//! Colour is never the only signal: each movement kind has its own fill pattern (solid,
//! stripes, dots, lines, cross-hatching) shown in the legend beside its name, every bar has a
//! tooltip naming its kind, month and amount, and the table under the chart gives every
//! figure. Amounts stay integers; only pixel positions are computed in floating point.

use super::revenue::KINDS;
use crate::http::revenue::RevenueRow;
use maud::{html as markup, Markup, PreEscaped};

/// Width of the plot area, SVG units (the chart scales to its container).
const PLOT_WIDTH: f64 = 720.0;
/// Height of the plot area, SVG units.
const PLOT_HEIGHT: f64 = 220.0;
/// Room left of the plot for the axis labels.
const LEFT: f64 = 110.0;
/// Room above the plot.
const TOP: f64 = 12.0;
/// Room below the plot for the month labels.
const BOTTOM: f64 = 28.0;
/// Most month labels written under the axis (every k-th month beyond that).
const MONTH_LABELS_MAX: usize = 12;

/// The fill patterns, by kind: SVG pattern content on a 8x8 tile.
fn pattern(kind: &str) -> &'static str {
    match kind {
        "new" => r##"<rect width="8" height="8" fill="#2e7d4f"/>"##,
        "reactivation" => {
            r##"<rect width="8" height="8" fill="#d7efe0"/><path d="M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4" stroke="#1f6b3f" stroke-width="2"/>"##
        }
        "expansion" => {
            r##"<rect width="8" height="8" fill="#cfe3f7"/><circle cx="4" cy="4" r="1.8" fill="#0b57d0"/>"##
        }
        "contraction" => {
            r##"<rect width="8" height="8" fill="#fde9c9"/><path d="M0,2 h8 M0,6 h8" stroke="#8a5300" stroke-width="1.5"/>"##
        }
        _ => {
            r##"<rect width="8" height="8" fill="#fbd5d5"/><path d="M0,0 l8,8 M8,0 l-8,8" stroke="#9b1c1c" stroke-width="1.5"/>"##
        }
    }
}

fn pattern_id(chart: usize, kind: &str) -> String {
    format!("mrr{chart}-{kind}")
}

/// The amounts of a row by kind, in [`KINDS`] order.
fn amounts(row: &RevenueRow) -> [i64; 5] {
    [
        row.new,
        row.reactivation,
        row.expansion,
        row.contraction,
        row.churn,
    ]
}

/// The chart of `rows` (one currency, one row per month in order); `chart` numbers the
/// charts of a page so their pattern IDs differ.
pub fn mrr_chart(chart: usize, currency: &str, rows: &[&RevenueRow]) -> Markup {
    let months = rows.len().max(1);
    // The axis runs from the largest stack below zero to the largest value above it.
    let up = rows
        .iter()
        .map(|r| {
            (r.new
                .saturating_add(r.reactivation)
                .saturating_add(r.expansion))
            .max(r.closing_mrr)
        })
        .max()
        .unwrap_or(0)
        .max(0);
    let down = rows
        .iter()
        .map(|r| r.contraction.saturating_add(r.churn))
        .max()
        .unwrap_or(0)
        .max(0);
    let span = (up as f64 + down as f64).max(1.0);
    let scale = PLOT_HEIGHT / span;
    let zero_y = TOP + up as f64 * scale;
    let slot = PLOT_WIDTH / months as f64;
    let bar = (slot * 0.6).max(2.0);
    let label_every = months.div_ceil(MONTH_LABELS_MAX);
    let width = LEFT + PLOT_WIDTH + 10.0;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let centre = |i: usize| LEFT + i as f64 * slot + slot / 2.0;
    let closing_points: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "{:.1},{:.1}",
                centre(i),
                zero_y - r.closing_mrr as f64 * scale
            )
        })
        .collect();
    let code = currency.to_ascii_uppercase();
    markup! {
        figure.chart {
            svg.revenue-chart xmlns="http://www.w3.org/2000/svg" role="img"
                viewBox={ "0 0 " (width) " " (height) } preserveAspectRatio="xMinYMin meet"
                aria-labelledby={ "mrr" (chart) "-title mrr" (chart) "-desc" } {
                title id={ "mrr" (chart) "-title" } { "MRR per month in " (code) }
                desc id={ "mrr" (chart) "-desc" } {
                    "Stacked bars per month: new, reactivation and expansion above the axis; contraction and churn below it. "
                    "The line is the closing MRR. The table below gives every figure."
                }
                defs {
                    @for (kind, _) in KINDS {
                        pattern id=(pattern_id(chart, kind)) width="8" height="8" patternUnits="userSpaceOnUse" {
                            (PreEscaped(pattern(kind)))
                        }
                    }
                }
                g.axis {
                    line x1=(LEFT) x2=(LEFT + PLOT_WIDTH) y1=(format!("{zero_y:.1}")) y2=(format!("{zero_y:.1}")) stroke="#1d2330" {}
                    line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(TOP + PLOT_HEIGHT) stroke="#9aa1ad" {}
                    text x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" font-size="11" { (super::money::format(up, currency)) }
                    @if down > 0 {
                        text x=(LEFT - 6.0) y=(format!("{:.1}", zero_y + 4.0)) text-anchor="end" font-size="11" { (super::money::format(0, currency)) }
                        text x=(LEFT - 6.0) y=(TOP + PLOT_HEIGHT) text-anchor="end" font-size="11" { (super::money::format(-down, currency)) }
                    }
                }
                @for (i, row) in rows.iter().enumerate() {
                    g.month data-month=(row.month) {
                        (bars(chart, row, LEFT + i as f64 * slot + (slot - bar) / 2.0, bar, zero_y, scale, currency))
                        circle.closing cx=(format!("{:.1}", centre(i))) cy=(format!("{:.1}", zero_y - row.closing_mrr as f64 * scale)) r="3" fill="#1d2330" {
                            title { (row.month) " closing MRR: " (super::money::format(row.closing_mrr, currency)) }
                        }
                        @if i % label_every == 0 {
                            text x=(format!("{:.1}", centre(i))) y=(TOP + PLOT_HEIGHT + 18.0) text-anchor="middle" font-size="11" { (row.month) }
                        }
                    }
                }
                polyline.closing points=(closing_points.join(" ")) fill="none" stroke="#1d2330" stroke-width="2" {}
            }
            figcaption { (legend(chart)) }
        }
    }
}

/// One month's stacked bars, starting at `x`.
fn bars(
    chart: usize,
    row: &RevenueRow,
    x: f64,
    bar: f64,
    zero_y: f64,
    scale: f64,
    currency: &str,
) -> Markup {
    let mut above = zero_y;
    let mut below = zero_y;
    let mut out = String::new();
    for ((kind, label), amount) in KINDS.iter().zip(amounts(row)) {
        if amount <= 0 {
            continue;
        }
        let h = amount as f64 * scale;
        let y = if matches!(*kind, "contraction" | "churn") {
            let y = below;
            below += h;
            y
        } else {
            above -= h;
            above
        };
        let sign = if matches!(*kind, "contraction" | "churn") {
            "−"
        } else {
            "+"
        };
        let segment = markup! {
            rect class={ "segment " (kind) } x=(format!("{x:.1}")) y=(format!("{y:.1}"))
                width=(format!("{bar:.1}")) height=(format!("{h:.1}"))
                fill={ "url(#" (pattern_id(chart, kind)) ")" } stroke="#1d2330" stroke-width="0.5" {
                title { (row.month) " " (label) ": " (sign) (super::money::format(amount, currency)) }
            }
        };
        out.push_str(&segment.into_string());
    }
    PreEscaped(out)
}

/// The legend: each kind's pattern beside its name, and the closing line.
fn legend(chart: usize) -> Markup {
    markup! {
        ul.legend {
            @for (kind, label) in KINDS {
                li {
                    svg width="18" height="12" aria-hidden="true" {
                        rect width="18" height="12" fill={ "url(#" (pattern_id(chart, kind)) ")" } stroke="#1d2330" stroke-width="0.5" {}
                    }
                    " " (label)
                    @if matches!(kind, "contraction" | "churn") { " (below the axis)" }
                }
            }
            li {
                svg width="18" height="12" aria-hidden="true" {
                    line x1="0" x2="18" y1="6" y2="6" stroke="#1d2330" stroke-width="2" {}
                    circle cx="9" cy="6" r="3" fill="#1d2330" {}
                }
                " Closing MRR (line)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(month: &str, new: i64, churn: i64, closing: i64) -> RevenueRow {
        RevenueRow {
            month: month.into(),
            currency: "usd".into(),
            opening_mrr: closing - new + churn,
            new,
            reactivation: 0,
            expansion: 0,
            contraction: 0,
            churn,
            closing_mrr: closing,
            subscribers: 1,
        }
    }

    #[test]
    fn a_month_group_per_row_bars_above_and_below_and_labelled_axis() {
        let rows = [row("2025-01", 4900, 0, 4900), row("2025-02", 0, 1000, 3900)];
        let refs: Vec<&RevenueRow> = rows.iter().collect();
        let svg = mrr_chart(0, "usd", &refs).into_string();
        assert_eq!(svg.matches("<g class=\"month\"").count(), 2);
        assert!(svg.contains(">$49.00</text>"), "the axis's top");
        assert!(svg.contains(">-$10.00</text>"), "the axis's bottom");
        assert!(svg.contains("<title>2025-02 Churn: −$10.00</title>"));
        assert!(svg.contains("fill=\"url(#mrr0-churn)\""));
        // Inside HTML, an SVG element left open swallows what follows: none is.
        for element in ["line", "polyline", "rect", "circle"] {
            let opened = svg
                .match_indices(&format!("<{element} "))
                .filter(|(at, _)| {
                    let end = svg[*at..].find('>').unwrap();
                    !svg[*at..*at + end].ends_with('/')
                })
                .count();
            assert_eq!(
                opened,
                svg.matches(&format!("</{element}>")).count(),
                "{element}"
            );
        }
    }
}
