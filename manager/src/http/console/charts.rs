//! Line charts drawn on the server as inline SVG: they need no script, no
//! third-party library and no second request, and a screen reader gets the
//! chart's summary (latest, lowest, highest) as text.

use std::fmt::Write;

/// One series over time: (milliseconds since the epoch, value).
pub struct Series<'a> {
    pub title: &'a str,
    pub points: Vec<(i64, f64)>,
    /// Formats a value for the axis and the summary.
    pub format: fn(f64) -> String,
    /// A fixed upper bound (100 for percentages), else the data's maximum.
    pub max: Option<f64>,
}

const W: f64 = 560.0;
const H: f64 = 150.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// Per-second rates from a cumulative counter (a reset counts as 0).
pub fn rates(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    points
        .windows(2)
        .filter_map(|w| {
            let dt = (w[1].0 - w[0].0) as f64 / 1000.0;
            (dt > 0.0).then(|| (w[1].0, ((w[1].1 - w[0].1) / dt).max(0.0)))
        })
        .collect()
}

fn time_label(ms: i64, span_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    if span_ms > 2 * 24 * 3_600_000 { t.format("%b %d %H:%M").to_string() } else { t.format("%H:%M").to_string() }
}

/// The chart as an `<svg>` element with a `<figcaption>`-ready summary.
/// `from`..`to` is the time range shown, whatever the points cover.
pub fn svg(series: &Series<'_>, from: i64, to: i64) -> (String, String) {
    let esc = super::html_escape;
    let span = (to - from).max(1);
    let max_v = series.max.unwrap_or_else(|| series.points.iter().map(|p| p.1).fold(0.0, f64::max)).max(f64::EPSILON);
    let x = |t: i64| LEFT + (t - from) as f64 / span as f64 * (W - LEFT - 4.0);
    let y = |v: f64| TOP + (1.0 - (v / max_v).clamp(0.0, 1.0)) * (H - TOP - BOTTOM);
    let mut out = String::with_capacity(256 + series.points.len() * 16);
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" preserveAspectRatio=\"none\">",
        esc(series.title)
    );
    // Grid: baseline, middle and top with their values.
    for frac in [0.0, 0.5, 1.0] {
        let yy = y(max_v * frac);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            W - 4.0,
            LEFT - 4.0,
            yy + 4.0,
            esc(&(series.format)(max_v * frac))
        );
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" class=\"axis\">{}</text><text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">{}</text>",
        H - 4.0,
        time_label(from, span),
        W - 4.0,
        H - 4.0,
        time_label(to, span)
    );
    if !series.points.is_empty() {
        out.push_str("<polyline class=\"line\" points=\"");
        for (t, v) in &series.points {
            let _ = write!(out, "{:.1},{:.1} ", x(*t), y(*v));
        }
        out.push_str("\"/>");
    }
    out.push_str("</svg>");
    let summary = match series.points.last() {
        None => "no data in this range".to_owned(),
        Some((_, last)) => {
            let lo = series.points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = series.points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            format!(
                "latest {}, lowest {}, highest {} ({} points)",
                (series.format)(*last),
                (series.format)(lo),
                (series.format)(hi),
                series.points.len()
            )
        }
    };
    (out, summary)
}

#[cfg(test)]
mod tests {
    use super::{Series, rates, svg};

    #[test]
    fn rates_come_from_counter_differences() {
        let r = rates(&[(0, 100.0), (1000, 300.0), (3000, 700.0), (4000, 10.0)]);
        assert_eq!(r, vec![(1000, 200.0), (3000, 200.0), (4000, 0.0)]);
    }

    #[test]
    fn a_chart_has_its_points_and_a_summary() {
        let s = Series {
            title: "CPU",
            points: vec![(0, 10.0), (30_000, 50.0), (60_000, 20.0)],
            format: |v| format!("{v:.0}%"),
            max: Some(100.0),
        };
        let (svg, summary) = svg(&s, 0, 60_000);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("aria-label=\"CPU\""));
        assert_eq!(summary, "latest 20%, lowest 10%, highest 50% (3 points)");
        let empty = Series { title: "CPU", points: vec![], format: |v| format!("{v}"), max: None };
        assert_eq!(super::svg(&empty, 0, 1).1, "no data in this range");
    }
}
