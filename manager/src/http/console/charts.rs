//! Line charts drawn on the server as inline SVG: they need no script, no
//! third-party library and no second request, and a screen reader gets the
//! chart's summary (latest, lowest, highest) as text.
//!
//! A chart holds one or more lines (one per role, mount, ...), each with its
//! own CSS class (`s0` .. `s7`) and a legend entry. Every point carries an
//! SVG `<title>` (its time and value), which browsers show on hover; the
//! left and right halves of the plot are links that zoom into them.

use std::fmt::Write;

/// One line over time: (milliseconds since the epoch, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(i64, f64)>,
}

/// A chart of one or more lines sharing an axis.
pub struct Chart<'a> {
    pub title: &'a str,
    pub lines: Vec<Line>,
    /// Formats a value for the axis, the points' titles and the summary.
    pub format: fn(f64) -> String,
    /// A fixed upper bound (100 for percentages), else the data's maximum.
    pub max: Option<f64>,
}

/// Where clicking a chart's left or right half leads.
pub struct Zoom {
    pub left: String,
    pub right: String,
}

/// A drawn chart: the `<svg>`, a text summary and the legend (label,
/// CSS class, latest value) when it has more than one line.
pub struct Drawn {
    pub svg: String,
    pub summary: String,
    pub legend: Vec<(String, String, String)>,
}

/// Distinct line classes; more lines reuse them.
pub const LINE_CLASSES: usize = 8;

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

fn point_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The summary of one line: latest, lowest, highest and the point count.
fn line_summary(points: &[(i64, f64)], format: fn(f64) -> String) -> String {
    match points.last() {
        None => "no data in this range".to_owned(),
        Some((_, last)) => {
            let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            format!("latest {}, lowest {}, highest {} ({} points)", format(*last), format(lo), format(hi), points.len())
        }
    }
}

/// The chart as an `<svg>` element with its summary and legend.
/// `from`..`to` is the time range shown, whatever the points cover.
pub fn svg(chart: &Chart<'_>, from: i64, to: i64, zoom: Option<&Zoom>) -> Drawn {
    let esc = super::html_escape;
    let span = (to - from).max(1);
    let data_max = chart.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let max_v = chart.max.unwrap_or(data_max).max(f64::EPSILON);
    let x = |t: i64| LEFT + (t - from).clamp(0, span) as f64 / span as f64 * (W - LEFT - 4.0);
    let y = |v: f64| TOP + (1.0 - (v / max_v).clamp(0.0, 1.0)) * (H - TOP - BOTTOM);
    let npoints: usize = chart.lines.iter().map(|l| l.points.len()).sum();
    let mut out = String::with_capacity(1024 + npoints * 110);
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" preserveAspectRatio=\"none\"><title>{t}</title>",
        t = esc(chart.title)
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
            esc(&(chart.format)(max_v * frac))
        );
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{y}\" class=\"axis\">{}</text>\
         <text x=\"{}\" y=\"{y}\" class=\"axis\" text-anchor=\"middle\">{}</text>\
         <text x=\"{}\" y=\"{y}\" class=\"axis\" text-anchor=\"end\">{}</text>",
        time_label(from, span),
        (LEFT + W - 4.0) / 2.0,
        time_label(from + span / 2, span),
        W - 4.0,
        time_label(to, span),
        y = H - 4.0,
    );
    // The halves as zoom links, under the points so that their titles show.
    if let Some(z) = zoom {
        let half = (W - 4.0 - LEFT) / 2.0;
        for (href, x0, which) in [(&z.left, LEFT, "first"), (&z.right, LEFT + half, "second")] {
            let _ = write!(
                out,
                "<a href=\"{}\" class=\"zoom-half\"><rect x=\"{x0:.1}\" y=\"0\" width=\"{half:.1}\" height=\"{}\" fill=\"transparent\"/>\
                 <title>Zoom into the {which} half</title></a>",
                esc(href),
                H - BOTTOM,
            );
        }
    }
    for (i, line) in chart.lines.iter().enumerate() {
        if line.points.is_empty() {
            continue;
        }
        let class = i % LINE_CLASSES;
        let _ = write!(out, "<g class=\"s{class}\"><polyline class=\"line\" points=\"");
        for (t, v) in &line.points {
            let _ = write!(out, "{:.1},{:.1} ", x(*t), y(*v));
        }
        out.push_str("\"/>");
        let who = if chart.lines.len() > 1 { format!("{}: ", esc(&line.label)) } else { String::new() };
        // A lone point draws no line: show it as a dot.
        let pt = if line.points.len() == 1 { "pt one" } else { "pt" };
        for (t, v) in &line.points {
            let _ = write!(
                out,
                "<circle class=\"{pt}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{} {who}{}</title></circle>",
                x(*t),
                y(*v),
                point_time(*t),
                esc(&(chart.format)(*v))
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    let (summary, legend) = if chart.lines.len() == 1 {
        (line_summary(&chart.lines[0].points, chart.format), Vec::new())
    } else {
        let legend: Vec<(String, String, String)> = chart
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let latest = l.points.last().map(|p| (chart.format)(p.1)).unwrap_or_else(|| "no data".into());
                (l.label.clone(), format!("s{}", i % LINE_CLASSES), latest)
            })
            .collect();
        let summary = if legend.is_empty() {
            "no data in this range".to_owned()
        } else {
            legend.iter().map(|(l, _, v)| format!("{l} latest {v}")).collect::<Vec<_>>().join("; ")
        };
        (summary, legend)
    };
    Drawn { svg: out, summary, legend }
}

#[cfg(test)]
mod tests {
    use super::{Chart, Line, Zoom, rates, svg};

    #[test]
    fn rates_come_from_counter_differences() {
        let r = rates(&[(0, 100.0), (1000, 300.0), (3000, 700.0), (4000, 10.0)]);
        assert_eq!(r, vec![(1000, 200.0), (3000, 200.0), (4000, 0.0)]);
    }

    fn line(label: &str, points: Vec<(i64, f64)>) -> Line {
        Line { label: label.into(), points }
    }

    #[test]
    fn a_chart_has_its_points_and_a_summary() {
        let c = Chart {
            title: "CPU",
            lines: vec![line("cpu", vec![(0, 10.0), (30_000, 50.0), (60_000, 20.0)])],
            format: |v| format!("{v:.0}%"),
            max: Some(100.0),
        };
        let d = svg(&c, 0, 60_000, None);
        assert!(d.svg.starts_with("<svg") && d.svg.ends_with("</svg>"), "{}", d.svg);
        assert_eq!(d.svg.matches("<polyline").count(), 1);
        assert!(d.svg.contains("aria-label=\"CPU\"") && d.svg.contains("<title>CPU</title>"));
        // Each point has its time and value as a title.
        assert_eq!(d.svg.matches("<circle").count(), 3);
        assert!(d.svg.contains("<title>1970-01-01 00:00:30 UTC 50%</title>"), "{}", d.svg);
        assert_eq!(d.summary, "latest 20%, lowest 10%, highest 50% (3 points)");
        assert!(d.legend.is_empty());
        let empty = Chart { title: "CPU", lines: vec![line("cpu", vec![])], format: |v| format!("{v}"), max: None };
        assert_eq!(svg(&empty, 0, 1, None).summary, "no data in this range");
    }

    #[test]
    fn several_lines_get_classes_a_legend_and_zoom_halves() {
        let c = Chart {
            title: "Used <memory>",
            lines: vec![line("a", vec![(0, 1.0), (10, 2.0)]), line("b", vec![(0, 4.0)])],
            format: |v| format!("{v:.0}"),
            max: None,
        };
        let zoom = Zoom { left: "/x?from=a&to=b".into(), right: "/x?from=b&to=c".into() };
        let d = svg(&c, 0, 10, Some(&zoom));
        assert!(d.svg.contains("<g class=\"s0\">") && d.svg.contains("<g class=\"s1\">"));
        assert!(d.svg.contains("aria-label=\"Used &lt;memory&gt;\""));
        assert!(d.svg.contains("href=\"/x?from&#x3D;a&amp;to&#x3D;b\"") && d.svg.contains("Zoom into the second half"));
        assert!(d.svg.contains("<title>1970-01-01 00:00:00 UTC b: 4</title>"), "{}", d.svg);
        assert_eq!(d.summary, "a latest 2; b latest 4");
        assert_eq!(d.legend[1], ("b".to_owned(), "s1".to_owned(), "4".to_owned()));
    }
}
