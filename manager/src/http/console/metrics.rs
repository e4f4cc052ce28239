//! Chart sections of the host, role and service pages: the time window a
//! page shows (`?range=1h|24h|7d`, or `?from=..&to=..` after zooming), its
//! navigation links, which metrics each page charts, and the queries
//! ([`domain::metrics::query`] with the viewer's actor) that fill them.
//!
//! The host, process and roles-up charts are tables here; the service
//! metrics charted for a service type are its descriptor's `[[dashboard]]`
//! ([`service_charts`]), so a new type brings its charts without a change
//! here, and a type without one gets process and `role_up` charts only.

use drover_service_types::dashboard::{ChartUnit as Unit, DashboardChart, LineStat};
use serde::Deserialize;
use serde_json::{Value, json};

use super::charts::{self, Chart, Line, Zoom};
use super::{human_bytes, url_encode};
use crate::AppState;
use crate::domain::metrics::{ENTITY_LABELS, MetricQuery, SeriesValues};
use crate::domain::{self, Actor, DomainError};

const HOUR: i64 = 3_600_000;

/// The ranges offered as links: name and span.
pub(crate) const RANGES: [(&str, i64); 3] = [("1h", HOUR), ("24h", 24 * HOUR), ("7d", 7 * 24 * HOUR)];

/// The narrowest window zooming reaches.
const MIN_SPAN: i64 = 5 * 60_000;
/// The widest window asked for with from/to.
const MAX_SPAN: i64 = 400 * 24 * HOUR;
/// About this many steps per line.
const TARGET_POINTS: i64 = 200;
/// The most lines drawn in one chart.
const MAX_LINES: usize = 12;

/// `?range=` or `?from=&to=` of a page with charts.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WindowQuery {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The time a page charts, Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    pub from: i64,
    pub to: i64,
    /// The named range, when not zoomed.
    pub range: Option<&'static str>,
    pub now: i64,
}

fn parse_time(what: &str, s: &str) -> Result<i64, DomainError> {
    chrono::DateTime::parse_from_rfc3339(s.trim()).map(|t| t.timestamp_millis()).map_err(|e| {
        DomainError::Invalid(format!("{what} must be an RFC 3339 time such as 2026-01-02T03:04:05Z, not {s:?}: {e}"))
    })
}

fn url_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn shown_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%d %H:%M UTC").to_string()
}

impl Window {
    /// The window a query asks for (the last hour when it asks nothing).
    pub fn parse(q: &WindowQuery, now: i64) -> Result<Window, DomainError> {
        let blank = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let (from, to) = (blank(&q.from), blank(&q.to));
        if from.is_none() && to.is_none() {
            let (name, span) = match blank(&q.range) {
                None => RANGES[0],
                Some(r) => RANGES.iter().copied().find(|(n, _)| *n == r).ok_or_else(|| {
                    DomainError::Invalid(format!("unknown range {r:?}: use 1h, 24h or 7d (or from and to)"))
                })?,
            };
            return Ok(Window::last(now, (name, span)));
        }
        let Some(from) = from else {
            return Err(DomainError::Invalid("to needs from: give both, or a range (1h, 24h or 7d)".into()));
        };
        let from = parse_time("from", &from)?;
        let to = to.map(|t| parse_time("to", &t)).transpose()?.unwrap_or(now);
        if from >= to {
            return Err(DomainError::Invalid(format!(
                "from ({}) must be before to ({})",
                url_time(from),
                url_time(to)
            )));
        }
        if to - from > MAX_SPAN {
            return Err(DomainError::Invalid("the charts show at most 400 days at once".into()));
        }
        Ok(Window::around(from, to, now))
    }

    /// The named range ending `now`.
    pub fn last(now: i64, (name, span): (&'static str, i64)) -> Window {
        Window { from: now - span, to: now, range: Some(name), now }
    }

    /// `from`..`to`, widened to the narrowest window around its middle.
    fn around(from: i64, to: i64, now: i64) -> Window {
        if to - from >= MIN_SPAN {
            return Window { from, to, range: None, now };
        }
        let mid = from + (to - from) / 2;
        Window { from: mid - MIN_SPAN / 2, to: mid + MIN_SPAN / 2, range: None, now }
    }

    fn span(&self) -> i64 {
        self.to - self.from
    }

    /// "last 1h" or "from .. to ..".
    pub fn label(&self) -> String {
        match self.range {
            Some(r) => format!("last {r}"),
            None => format!("{} to {}", shown_time(self.from), shown_time(self.to)),
        }
    }

    /// A link to `from`..`to` in whole seconds (`to` rounded up, so the
    /// newest point stays in).
    fn href(base: &str, from: i64, to: i64) -> String {
        let to = to.div_euclid(1000) * 1000 + if to.rem_euclid(1000) > 0 { 1000 } else { 0 };
        format!("{base}?from={}&to={}#metrics", url_encode(&url_time(from)), url_encode(&url_time(to)))
    }

    /// Zoomed into the first and the second half.
    pub fn zoom(&self, base: &str) -> Zoom {
        let mid = self.from + self.span() / 2;
        Zoom { left: Window::href(base, self.from, mid), right: Window::href(base, mid, self.to) }
    }

    /// The range links, zoom in and out (half and double the span around
    /// the middle), earlier and later (by half the span).
    pub fn nav(&self, base: &str) -> Value {
        let (span, mid) = (self.span(), self.from + self.span() / 2);
        let ranges: Vec<Value> = RANGES
            .iter()
            .map(|(name, _)| {
                json!({"name": name, "href": format!("{base}?range={name}#metrics"), "active": self.range == Some(*name)})
            })
            .collect();
        let zoom_in = (span > MIN_SPAN).then(|| {
            let half = (span / 2).max(MIN_SPAN);
            Window::href(base, mid - half / 2, mid + half / 2)
        });
        let out_to = (mid + span).min(self.now.max(self.to));
        let zoom_out = (span * 2 <= MAX_SPAN).then(|| Window::href(base, out_to - 2 * span, out_to));
        let later = (self.to < self.now).then(|| {
            let to = (self.to + span / 2).min(self.now);
            Window::href(base, to - span, to)
        });
        json!({
            "label": self.label(),
            "ranges": ranges,
            "zoom_in": zoom_in,
            "zoom_out": zoom_out,
            "earlier": Window::href(base, self.from - span / 2, self.to - span / 2),
            "later": later,
        })
    }
}

/// How a chart shows its values (the units a descriptor's charts name).
fn unit_format(unit: Unit) -> fn(f64) -> String {
    match unit {
        Unit::Percent => |v| format!("{v:.0}%"),
        Unit::Ratio => |v| format!("{:.0}%", v * 100.0),
        Unit::Bytes => human_bytes,
        Unit::BytesPerSecond => |v| format!("{}/s", human_bytes(v)),
        Unit::Count => |v| if v.fract().abs() < 0.05 { format!("{v:.0}") } else { format!("{v:.1}") },
        Unit::PerSecond => |v| if v >= 100.0 { format!("{v:.0}/s") } else { format!("{v:.1}/s") },
        Unit::Ms => |v| format!("{v:.0} ms"),
        Unit::Seconds => |v| match v.abs() {
            a if a < 60.0 => format!("{v:.1} s"),
            a if a < 3600.0 => format!("{:.1} min", v / 60.0),
            a if a < 86_400.0 => format!("{:.1} h", v / 3600.0),
            _ => format!("{:.1} d", v / 86_400.0),
        },
        Unit::Number => |v| format!("{v:.2}"),
    }
}

/// One metric drawn as one line per series it selects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineSpec<'a> {
    pub metric: &'a str,
    pub label: &'a str,
    /// How each step's value comes from its points (a rate from the last values).
    pub stat: LineStat,
    /// The sum over roles of each step's value, one line per value of the label.
    pub sum_by: Option<&'a str>,
    /// Leave out series that are 0 throughout (Redis' maxmemory when unset).
    pub hide_zero: bool,
}

const fn line(metric: &'static str, label: &'static str) -> LineSpec<'static> {
    LineSpec { metric, label, stat: LineStat::Avg, sum_by: None, hide_zero: false }
}

const fn rate(metric: &'static str, label: &'static str) -> LineSpec<'static> {
    LineSpec { stat: LineStat::Rate, ..line(metric, label) }
}

/// A chart: the tables below (`'static`) or a service type's dashboard
/// (borrowed from the catalog).
#[derive(Debug, Clone)]
pub(crate) struct ChartSpec<'a> {
    pub title: &'a str,
    pub unit: Unit,
    pub max: Option<f64>,
    pub lines: Lines<'a>,
}

/// A chart's lines: a table's, or built from a descriptor's chart.
#[derive(Debug, Clone)]
pub(crate) enum Lines<'a> {
    Fixed(&'a [LineSpec<'a>]),
    Built(Vec<LineSpec<'a>>),
}

impl<'a> std::ops::Deref for Lines<'a> {
    type Target = [LineSpec<'a>];

    fn deref(&self) -> &[LineSpec<'a>] {
        match self {
            Lines::Fixed(l) => l,
            Lines::Built(l) => l,
        }
    }
}

const fn chart(title: &'static str, unit: Unit, lines: &'static [LineSpec<'static>]) -> ChartSpec<'static> {
    ChartSpec { title, unit, max: None, lines: Lines::Fixed(lines) }
}

/// A chart whose value axis ends at `max`.
const fn bounded(title: &'static str, unit: Unit, max: f64, lines: &'static [LineSpec<'static>]) -> ChartSpec<'static> {
    ChartSpec { title, unit, max: Some(max), lines: Lines::Fixed(lines) }
}

pub(crate) const HOST_CHARTS: &[ChartSpec] = &[
    bounded("CPU used", Unit::Percent, 100.0, &[line("host_cpu_percent", "CPU")]),
    chart(
        "Memory used",
        Unit::Bytes,
        &[line("host_memory_used_bytes", "used"), line("host_memory_total_bytes", "total")],
    ),
    chart(
        "Load",
        Unit::Number,
        &[line("host_load1", "1 min"), line("host_load5", "5 min"), line("host_load15", "15 min")],
    ),
    bounded("Disk used per mount", Unit::Ratio, 1.0, &[line("host_disk_used_ratio", "used")]),
    chart(
        "Network per second",
        Unit::BytesPerSecond,
        &[rate("host_network_rx_bytes_total", "received"), rate("host_network_tx_bytes_total", "sent")],
    ),
];

/// A role's process, from the agent's supervisor.
pub(crate) const PROCESS_CHARTS: &[ChartSpec] = &[
    chart("CPU used", Unit::Percent, &[line("role_cpu_percent", "CPU")]),
    chart("Resident memory", Unit::Bytes, &[line("role_memory_rss_bytes", "RSS")]),
    chart("Threads", Unit::Count, &[line("role_threads", "threads")]),
    chart("Open files", Unit::Count, &[line("role_open_fds", "open files")]),
    chart(
        "Restarts",
        Unit::Count,
        &[LineSpec { stat: LineStat::Max, ..line("role_restarts_total", "restarts since the agent took charge") }],
    ),
];

/// How many roles of each type run, on a service's page.
pub(crate) const ROLES_UP_CHART: &[ChartSpec] =
    &[chart("Roles up by role type", Unit::Count, &[LineSpec { sum_by: Some("role_type"), ..line("role_up", "up") }])];

/// What a page says where a service type's dashboard would be when the type declares none.
pub(crate) const NO_DASHBOARD: &str = "This service type declares no dashboard.";

/// What a role's page says instead of its service charts when its type's
/// dashboard has none for its role type.
pub(crate) fn no_dashboard(state: &AppState, service_type: &str) -> &'static str {
    match state.catalog.get(service_type) {
        Some(st) if !st.dashboard.is_empty() => "This service type's dashboard has no chart for this role type.",
        _ => NO_DASHBOARD,
    }
}

/// A descriptor's chart as drawn.
fn dashboard_chart(c: &DashboardChart) -> ChartSpec<'_> {
    let lines: Vec<LineSpec> = c
        .lines
        .iter()
        .map(|l| LineSpec {
            metric: &l.metric,
            label: &l.label,
            stat: l.stat,
            sum_by: l.sum_by.as_deref(),
            hide_zero: l.hide_zero,
        })
        .collect();
    ChartSpec { title: &c.title, unit: c.unit, max: c.max, lines: Lines::Built(lines) }
}

/// The charts of a service type's dashboard (its descriptor's
/// `[[dashboard]]`), on a role's page only those of its `role_type`; none
/// for a type without dashboard or not in the catalog.
pub(crate) fn service_charts<'a>(
    state: &'a AppState,
    service_type: &str,
    role_type: Option<&str>,
) -> Vec<ChartSpec<'a>> {
    let Some(st) = state.catalog.get(service_type) else { return Vec::new() };
    st.dashboard.iter().filter(|c| role_type.is_none_or(|rt| c.applies_to(rt))).map(dashboard_chart).collect()
}

/// `metric{k="v",...}` with the values escaped.
fn selector(metric: &str, scope: &[(&str, &str)]) -> String {
    if scope.is_empty() {
        return metric.to_owned();
    }
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let m: Vec<String> = scope.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
    format!("{metric}{{{}}}", m.join(","))
}

/// The series of one line spec over the window; none when no series of
/// the metric exists yet.
async fn fetch(
    state: &AppState,
    actor: &Actor,
    spec: &LineSpec<'_>,
    scope: &[(&str, &str)],
    w: &Window,
) -> Result<Vec<SeriesValues>, DomainError> {
    let step = (w.span() / 1000 / TARGET_POINTS).max(1);
    let stat = match spec.stat {
        LineStat::Avg => "avg",
        LineStat::Max => "max",
        LineStat::Last | LineStat::Rate => "last",
    };
    let q = MetricQuery {
        series: selector(spec.metric, scope),
        from: Some(charts_time(w.from)),
        to: Some(charts_time(w.to)),
        step: Some(format!("{step}s")),
        agg: spec.sum_by.map(|_| "sum".to_owned()),
        by: spec.sum_by.map(str::to_owned),
        stat: Some(stat.to_owned()),
    };
    match domain::metrics::query(state, actor, &q).await {
        Ok(r) => Ok(r.series),
        // No series of that name anywhere yet, or none with the label to sum by.
        Err(DomainError::Invalid(m)) if m.starts_with("unknown metric") || m.starts_with("unknown label") => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

fn charts_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A line's name: the role (on a service page), the spec's label when the
/// chart has several, and the series' own labels (mount, db, mode).
fn line_label(
    chart: &ChartSpec<'_>,
    spec: &LineSpec<'_>,
    labels: &std::collections::BTreeMap<String, String>,
    per_role: bool,
) -> String {
    if let Some(by) = spec.sum_by {
        return labels.get(by).cloned().filter(|v| !v.is_empty()).unwrap_or_else(|| spec.label.to_owned());
    }
    let mut parts: Vec<&str> = Vec::new();
    if per_role && let Some(r) = labels.get("role") {
        parts.push(r);
    }
    if chart.lines.len() > 1 {
        parts.push(spec.label);
    }
    parts.extend(labels.iter().filter(|(k, _)| !ENTITY_LABELS.contains(&k.as_str())).map(|(_, v)| v.as_str()));
    if parts.is_empty() { spec.label.to_owned() } else { parts.join(" ") }
}

/// The charts of one section, with the titles of those without data.
#[derive(Debug, Default)]
pub(crate) struct Section {
    pub charts: Vec<Value>,
    pub missing: Vec<String>,
}

impl Section {
    /// The section for a template: its charts, what has no data, and the
    /// sentence shown instead when nothing has.
    pub fn to_json(&self, empty: &str) -> Value {
        json!({"charts": self.charts, "missing": self.missing, "empty": empty})
    }
}

/// Queries and draws `specs` for the series matching `scope`; `per_role`
/// names lines by role (a service's page).
pub(crate) async fn section(
    state: &AppState,
    actor: &Actor,
    specs: &[ChartSpec<'_>],
    scope: &[(&str, &str)],
    per_role: bool,
    w: &Window,
    base: &str,
) -> Result<Section, DomainError> {
    let wanted: Vec<(usize, &LineSpec<'_>)> =
        specs.iter().enumerate().flat_map(|(i, c)| c.lines.iter().map(move |l| (i, l))).collect();
    let fetched = futures::future::try_join_all(wanted.iter().map(|(_, l)| fetch(state, actor, l, scope, w))).await?;
    let zoom = w.zoom(base);
    let mut out = Section::default();
    for (i, spec) in specs.iter().enumerate() {
        let mut lines: Vec<Line> = Vec::new();
        for ((_, l), series) in wanted.iter().zip(&fetched).filter(|((c, _), _)| *c == i) {
            for s in series {
                if s.values.is_empty() || (l.hide_zero && s.values.iter().all(|v| *v == 0.0)) {
                    continue;
                }
                let points: Vec<(i64, f64)> = s.timestamps.iter().copied().zip(s.values.iter().copied()).collect();
                let points = if l.stat == LineStat::Rate { charts::rates(&points) } else { points };
                lines.push(Line { label: line_label(spec, l, &s.labels, per_role), points });
            }
        }
        lines.retain(|l| !l.points.is_empty());
        if lines.is_empty() {
            out.missing.push(spec.title.to_owned());
            continue;
        }
        let more = lines.len().saturating_sub(MAX_LINES);
        lines.truncate(MAX_LINES);
        let drawn = charts::svg(
            &Chart { title: spec.title, lines, format: unit_format(spec.unit), max: spec.max },
            w.from,
            w.to,
            Some(&zoom),
        );
        let legend: Vec<Value> = drawn
            .legend
            .iter()
            .map(|(label, class, latest)| json!({"label": label, "class": class, "latest": latest}))
            .collect();
        out.charts.push(
            json!({"title": spec.title, "svg": drawn.svg, "summary": drawn.summary, "legend": legend, "more": more}),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{MIN_SPAN, Window, WindowQuery, selector};

    fn q(range: Option<&str>, from: Option<&str>, to: Option<&str>) -> WindowQuery {
        WindowQuery { range: range.map(Into::into), from: from.map(Into::into), to: to.map(Into::into) }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn windows_come_from_ranges_or_from_and_to() {
        let w = Window::parse(&q(None, None, None), NOW).unwrap();
        assert_eq!((w.from, w.to, w.range), (NOW - 3_600_000, NOW, Some("1h")));
        let w = Window::parse(&q(Some("7d"), None, None), NOW).unwrap();
        assert_eq!(w.to - w.from, 7 * 24 * 3_600_000);
        let w = Window::parse(&q(None, Some("2027-01-01T00:00:00Z"), Some("2027-01-01T02:00:00Z")), NOW).unwrap();
        assert_eq!((w.to - w.from, w.range), (2 * 3_600_000, None));
        assert_eq!(w.label(), "2027-01-01 00:00 UTC to 2027-01-01 02:00 UTC");
        // Narrower than 5 minutes: widened around the middle.
        let w = Window::parse(&q(None, Some("2027-01-01T00:00:00Z"), Some("2027-01-01T00:01:00Z")), NOW).unwrap();
        assert_eq!(w.to - w.from, MIN_SPAN);
    }

    #[test]
    fn bad_windows_are_refused_by_name() {
        let err = |q: WindowQuery| Window::parse(&q, NOW).unwrap_err().to_string();
        assert!(err(q(Some("2w"), None, None)).contains("unknown range \"2w\""));
        assert!(err(q(None, Some("yesterday"), None)).contains("from must be an RFC 3339 time"));
        assert!(err(q(None, None, Some("2027-01-01T00:00:00Z"))).contains("to needs from"));
        assert!(err(q(None, Some("2027-01-02T00:00:00Z"), Some("2027-01-01T00:00:00Z"))).contains("must be before"));
    }

    #[test]
    fn zoom_halves_and_doubles_around_the_middle() {
        let w = Window::parse(&q(None, Some("2027-01-01T00:00:00Z"), Some("2027-01-01T04:00:00Z")), NOW).unwrap();
        let nav = w.nav("/hosts/h1");
        assert_eq!(nav["zoom_in"], "/hosts/h1?from=2027-01-01T01%3A00%3A00Z&to=2027-01-01T03%3A00%3A00Z#metrics");
        assert_eq!(nav["zoom_out"], "/hosts/h1?from=2026-12-31T22%3A00%3A00Z&to=2027-01-01T06%3A00%3A00Z#metrics");
        assert_eq!(nav["earlier"], "/hosts/h1?from=2026-12-31T22%3A00%3A00Z&to=2027-01-01T02%3A00%3A00Z#metrics");
        let z = w.zoom("/hosts/h1");
        assert_eq!(z.left, "/hosts/h1?from=2027-01-01T00%3A00%3A00Z&to=2027-01-01T02%3A00%3A00Z#metrics");
        // The last hour: no later, zoom out ends now.
        let w = Window::parse(&q(Some("1h"), None, None), NOW).unwrap();
        let nav = w.nav("/x");
        assert!(nav["later"].is_null());
        assert_eq!(nav["ranges"][0]["active"], true);
    }

    #[test]
    fn selectors_escape_values() {
        assert_eq!(selector("m", &[]), "m");
        assert_eq!(selector("m", &[("host", "a\"b"), ("role", "r")]), "m{host=\"a\\\"b\",role=\"r\"}");
    }
}
