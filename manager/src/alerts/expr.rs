//! Rule and health-test expressions: the subset of PromQL the manager evaluates itself, parsed
//! by `promql-parser` and compiled into [`Condition`]. What is supported:
//!
//! - a selector, `redis_memory_used_ratio{service="cache"}`;
//! - a range function over a selector: `rate`, `increase`, `delta`, `changes`, `avg_over_time`,
//!   `min_over_time`, `max_over_time`, `last_over_time`, `count_over_time`
//!   (`increase(role_restarts_total[10m])`);
//! - an aggregation of either: `sum`, `avg`, `min`, `max`, `count`, with `by (...)` or
//!   `without (...)` (`max by (service) (redis_connected_clients)`);
//! - optionally compared with a number: `>`, `>=`, `<`, `<=`, `==`, `!=`.
//!
//! Anything else (binary operators between vectors, subqueries, `offset`, `@`) is refused at
//! compile time with a message naming it, as is a metric the manager does not know.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier};

/// A series' labels, without the metric name.
pub type Labels = BTreeMap<String, String>;

/// What [`SeriesSource::range`] calls with each series' labels and points.
pub type EachWindow<'a> = dyn FnMut(&Arc<Labels>, &[(i64, f64)]) + 'a;

/// Where an expression reads values: the manager's in-memory latest values and recent windows.
/// Series are handed to a callback by reference to their shared labels, so that a cycle over
/// hundreds of thousands of series copies the labels of the few that hold only. A source is
/// read by several threads at once: a cycle evaluates its rules in parallel.
pub trait SeriesSource: Sync {
    /// Calls `each` with the latest value of every series named `name` whose labels match all
    /// `matchers`.
    fn instant(&self, name: &str, matchers: &[Matcher], each: &mut dyn FnMut(&Arc<Labels>, f64));
    /// Calls `each` with the points (unix ms, value), oldest first, of every matching series
    /// within `range` before now.
    fn range(&self, name: &str, matchers: &[Matcher], range: Duration, each: &mut EachWindow<'_>);

    /// The labels the source keeps for an entity's own series (`kind` `host` or `role`, by
    /// id, without extra labels), for the health series to share rather than copy; `None`
    /// when it keeps none.
    fn entity_labels(&self, _kind: &str, _id: &str) -> Option<Arc<Labels>> {
        None
    }

    /// The latest values of `name{matchers}` accumulated by `grouping`, the groups in the
    /// order of their labels. A source may keep the grouping of series it has seen before;
    /// by default the series are grouped anew.
    fn aggregate(&self, name: &str, matchers: &[Matcher], grouping: &Grouping) -> Groups {
        let mut series = Vec::new();
        self.instant(name, matchers, &mut |labels, value| series.push((labels.clone(), value)));
        grouped(&series, grouping)
    }
}

fn owned(key: Vec<(&str, &str)>) -> Labels {
    key.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// An aggregation's groups: their labels, in order, and what each accumulated.
#[derive(Debug, Clone)]
pub struct Groups {
    pub labels: Arc<Vec<Arc<Labels>>>,
    pub accs: Vec<Acc>,
}

impl Groups {
    /// The values of series accumulated into the groups `of` gives, by position.
    pub fn accumulate(labels: Arc<Vec<Arc<Labels>>>, of: &[u32], values: impl Iterator<Item = f64>) -> Groups {
        let mut accs = vec![EMPTY_ACC; labels.len()];
        for (g, v) in of.iter().zip(values) {
            accumulate(&mut accs[*g as usize], v);
        }
        Groups { labels, accs }
    }
}

/// `series` accumulated by `grouping`.
pub fn grouped(series: &[(Arc<Labels>, f64)], grouping: &Grouping) -> Groups {
    let (of, keys) = group(series.iter().map(|(l, _)| &**l), grouping);
    Groups::accumulate(Arc::new(keys.into_iter().map(Arc::new).collect()), &of, series.iter().map(|(_, v)| *v))
}

/// A metric name and the label matchers that pick its series.
#[derive(Debug, Clone)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFn {
    Rate,
    Increase,
    Delta,
    Changes,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    LastOverTime,
    CountOverTime,
}

impl WindowFn {
    const ALL: [(&'static str, WindowFn); 9] = [
        ("rate", WindowFn::Rate),
        ("increase", WindowFn::Increase),
        ("delta", WindowFn::Delta),
        ("changes", WindowFn::Changes),
        ("avg_over_time", WindowFn::AvgOverTime),
        ("min_over_time", WindowFn::MinOverTime),
        ("max_over_time", WindowFn::MaxOverTime),
        ("last_over_time", WindowFn::LastOverTime),
        ("count_over_time", WindowFn::CountOverTime),
    ];

    fn named(name: &str) -> Option<WindowFn> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The function over points oldest first; `None` when they do not say (e.g. a rate of one
    /// point).
    fn apply(self, points: &[(i64, f64)], range: Duration) -> Option<f64> {
        let (first, last) = (points.first()?, points.last()?);
        let values = points.iter().map(|p| p.1);
        Some(match self {
            WindowFn::Rate => increase(points)? / range.as_secs_f64().max(f64::EPSILON),
            WindowFn::Increase => increase(points)?,
            WindowFn::Delta => last.1 - first.1,
            WindowFn::Changes => points.windows(2).filter(|w| w[0].1 != w[1].1).count() as f64,
            WindowFn::AvgOverTime => values.sum::<f64>() / points.len() as f64,
            WindowFn::MinOverTime => values.fold(f64::INFINITY, f64::min),
            WindowFn::MaxOverTime => values.fold(f64::NEG_INFINITY, f64::max),
            WindowFn::LastOverTime => last.1,
            WindowFn::CountOverTime => points.len() as f64,
        })
    }
}

/// How much a counter went up over the points: a drop is a reset, after which the new value
/// counts whole (as Prometheus does, without extrapolating to the window's edges).
fn increase(points: &[(i64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    Some(points.windows(2).map(|w| if w[1].1 >= w[0].1 { w[1].1 - w[0].1 } else { w[1].1 }).sum())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// Keep only these labels.
    By(Vec<String>),
    /// Keep every label but these.
    Without(Vec<String>),
}

#[derive(Debug, Clone)]
pub enum Vector {
    Select(Selector),
    Window { func: WindowFn, selector: Selector, range: Duration },
    Aggregate { op: AggOp, grouping: Grouping, inner: Box<Vector> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Cmp {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Cmp::Gt => value > threshold,
            Cmp::Ge => value >= threshold,
            Cmp::Lt => value < threshold,
            Cmp::Le => value <= threshold,
            Cmp::Eq => value == threshold,
            Cmp::Ne => value != threshold,
        }
    }

    fn parse(op: &str) -> Option<Cmp> {
        Some(match op {
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            "==" => Cmp::Eq,
            "!=" => Cmp::Ne,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

/// A compiled expression: a vector, optionally compared with a number. Without a comparison
/// every series the vector yields holds.
#[derive(Debug, Clone)]
pub struct Condition {
    pub text: String,
    pub vector: Vector,
    pub test: Option<(Cmp, f64)>,
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError(pub String);

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExprError {}

fn refuse<T>(msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError(msg.into()))
}

impl Condition {
    /// Parses and checks `text`; `known` says whether a metric name exists.
    pub fn compile(text: &str, known: &dyn Fn(&str) -> bool) -> Result<Condition, ExprError> {
        let expr = parser::parse(text).map_err(|e| ExprError(format!("cannot parse {text:?}: {e}")))?;
        let (vector, test) = match strip(expr) {
            Expr::Binary(b) => {
                let op = b.op.to_string();
                let cmp = Cmp::parse(&op).ok_or_else(|| {
                    ExprError(format!("operator `{op}` is not supported; compare with a number (>, >=, <, <=, ==, !=)"))
                })?;
                if b.modifier.as_ref().is_some_and(|m| m.return_bool) {
                    return refuse("the `bool` modifier is not supported");
                }
                match (strip(*b.lhs), strip(*b.rhs)) {
                    (lhs, Expr::NumberLiteral(n)) => (vector(lhs, known)?, Some((cmp, n.val))),
                    (Expr::NumberLiteral(n), rhs) => (vector(rhs, known)?, Some((flip(cmp), n.val))),
                    _ => return refuse("only comparisons of a series with a number are supported"),
                }
            }
            other => (vector(other, known)?, None),
        };
        Ok(Condition { text: text.to_owned(), vector, test })
    }

    /// The series for which the condition holds now, with the vector's value.
    pub fn eval(&self, src: &dyn SeriesSource) -> Vec<(Labels, f64)> {
        self.eval_shared(src).into_iter().map(|(l, v)| (Arc::unwrap_or_clone(l), v)).collect()
    }

    /// As [`Condition::eval`], with the labels shared with the source: the comparison is
    /// applied as each series is read, so the series that do not hold cost no copy.
    pub fn eval_shared(&self, src: &dyn SeriesSource) -> Vec<(Arc<Labels>, f64)> {
        let keep = |v: f64| self.test.is_none_or(|(cmp, threshold)| cmp.holds(v, threshold));
        eval(&self.vector, src, &keep)
    }

    /// Every metric name the expression reads, with the longest window it needs.
    pub fn metrics(&self) -> Vec<(String, Duration)> {
        let mut out = Vec::new();
        collect(&self.vector, &mut out);
        out
    }
}

fn collect(v: &Vector, out: &mut Vec<(String, Duration)>) {
    match v {
        Vector::Select(s) => out.push((s.name.clone(), Duration::ZERO)),
        Vector::Window { selector, range, .. } => out.push((selector.name.clone(), *range)),
        Vector::Aggregate { inner, .. } => collect(inner, out),
    }
}

/// `3 < x` is `x > 3`.
fn flip(c: Cmp) -> Cmp {
    match c {
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        other => other,
    }
}

fn strip(e: Expr) -> Expr {
    match e {
        Expr::Paren(p) => strip(*p.expr),
        other => other,
    }
}

fn selector(vs: parser::VectorSelector, known: &dyn Fn(&str) -> bool) -> Result<Selector, ExprError> {
    if vs.offset.is_some() || vs.at.is_some() {
        return refuse("`offset` and `@` are not supported");
    }
    if !vs.matchers.or_matchers.is_empty() {
        return refuse("`or` between label matchers is not supported");
    }
    let mut name = vs.name;
    let mut matchers = Vec::new();
    for m in vs.matchers.matchers {
        if m.name == "__name__" {
            match m.op {
                MatchOp::Equal => name = Some(m.value.clone()),
                _ => return refuse("match the metric name exactly (`__name__=\"...\"`)"),
            }
        } else {
            matchers.push(m);
        }
    }
    let name = name.ok_or_else(|| ExprError("a selector needs a metric name".into()))?;
    if !known(&name) {
        return refuse(format!("unknown metric {name:?}"));
    }
    Ok(Selector { name, matchers })
}

fn vector(e: Expr, known: &dyn Fn(&str) -> bool) -> Result<Vector, ExprError> {
    match strip(e) {
        Expr::VectorSelector(vs) => Ok(Vector::Select(selector(vs, known)?)),
        Expr::Call(call) => {
            let name = call.func.name;
            let func = WindowFn::named(name).ok_or_else(|| {
                let names: Vec<&str> = WindowFn::ALL.iter().map(|(n, _)| *n).collect();
                ExprError(format!("function `{name}` is not supported; use one of {}", names.join(", ")))
            })?;
            let mut args = call.args.args.into_iter();
            match (args.next().map(|a| strip(*a)), args.next()) {
                (Some(Expr::MatrixSelector(ms)), None) => {
                    if ms.range.is_zero() {
                        return refuse(format!("`{name}` needs a range longer than 0s"));
                    }
                    Ok(Vector::Window { func, selector: selector(ms.vs, known)?, range: ms.range })
                }
                _ => refuse(format!("`{name}` takes one range selector, e.g. {name}(metric[5m])")),
            }
        }
        Expr::Aggregate(a) => {
            let op = match a.op.to_string().as_str() {
                "sum" => AggOp::Sum,
                "avg" => AggOp::Avg,
                "min" => AggOp::Min,
                "max" => AggOp::Max,
                "count" => AggOp::Count,
                other => {
                    return refuse(format!("aggregation `{other}` is not supported; use sum, avg, min, max or count"));
                }
            };
            let grouping = match a.modifier {
                Some(LabelModifier::Include(l)) => Grouping::By(l.labels),
                Some(LabelModifier::Exclude(l)) => Grouping::Without(l.labels),
                None => Grouping::By(Vec::new()),
            };
            Ok(Vector::Aggregate { op, grouping, inner: Box::new(vector(*a.expr, known)?) })
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => refuse("an expression needs a metric, not only a literal"),
        Expr::MatrixSelector(_) => refuse("a range selector needs a function, e.g. avg_over_time(metric[5m])"),
        Expr::Binary(_) => refuse("only one comparison with a number is supported"),
        Expr::Subquery(_) => refuse("subqueries are not supported"),
        Expr::Unary(_) => refuse("unary minus is not supported"),
        _ => refuse("this kind of expression is not supported"),
    }
}

/// An aggregation's running sum, min, max and count.
pub type Acc = (f64, f64, f64, usize);

/// An empty group's accumulator.
const EMPTY_ACC: Acc = (0.0, f64::INFINITY, f64::NEG_INFINITY, 0);

/// Adds `value` to a group.
fn accumulate(g: &mut Acc, value: f64) {
    g.0 += value;
    g.1 = g.1.min(value);
    g.2 = g.2.max(value);
    g.3 += 1;
}

/// The vector's series whose value `keep` accepts.
fn eval(v: &Vector, src: &dyn SeriesSource, keep: &dyn Fn(f64) -> bool) -> Vec<(Arc<Labels>, f64)> {
    let mut out = Vec::new();
    match v {
        Vector::Select(s) => src.instant(&s.name, &s.matchers, &mut |labels, value| {
            if keep(value) {
                out.push((labels.clone(), value));
            }
        }),
        Vector::Window { func, selector, range } => {
            src.range(&selector.name, &selector.matchers, *range, &mut |labels, points| {
                if let Some(value) = func.apply(points, *range)
                    && keep(value)
                {
                    out.push((labels.clone(), value));
                }
            })
        }
        Vector::Aggregate { op, grouping, inner } => {
            let value = |(sum, min, max, n): Acc| match op {
                AggOp::Sum => sum,
                AggOp::Avg => sum / n as f64,
                AggOp::Min => min,
                AggOp::Max => max,
                AggOp::Count => n as f64,
            };
            // In the order of the groups' label maps, as a map keyed by them would give.
            let groups = match &**inner {
                Vector::Select(s) => src.aggregate(&s.name, &s.matchers, grouping),
                inner => grouped(&eval(inner, src, &|_| true), grouping),
            };
            for (labels, acc) in groups.labels.iter().zip(groups.accs) {
                let v = value(acc);
                if keep(v) {
                    out.push((labels.clone(), v));
                }
            }
        }
    }
    out
}

/// The group of each series (by position) and the groups' labels, in the order of the
/// labels. A group's labels are the series' labels that `grouping` keeps (borrowed while
/// grouping; a series lacking a `by` label has no such label in its group's, as in PromQL).
/// Each series' key is built in one reused buffer and found by its hash; only a new group's
/// key is copied.
pub fn group<'a>(series: impl Iterator<Item = &'a Labels>, grouping: &Grouping) -> (Vec<u32>, Vec<Labels>) {
    let by: Vec<&str> = match grouping {
        Grouping::By(keep) => {
            let mut names: Vec<&str> = keep.iter().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            names
        }
        Grouping::Without(_) => Vec::new(),
    };
    let mut at: super::FastMap<Vec<(&str, &str)>, u32> = Default::default();
    let mut of = Vec::new();
    let mut key: Vec<(&str, &str)> = Vec::new();
    for labels in series {
        key.clear();
        match grouping {
            // `by` looks up each kept name instead of comparing every label with the list.
            Grouping::By(_) => key.extend(
                by.iter().filter_map(|name| labels.get_key_value(*name)).map(|(k, v)| (k.as_str(), v.as_str())),
            ),
            Grouping::Without(drop) => {
                key.extend(labels.iter().filter(|(k, _)| !drop.contains(k)).map(|(k, v)| (k.as_str(), v.as_str())))
            }
        }
        let g = match at.get(key.as_slice()) {
            Some(&g) => g,
            None => {
                let g = at.len() as u32;
                at.insert(key.clone(), g);
                g
            }
        };
        of.push(g);
    }
    // Renumbered in the order of the keys.
    let mut keys: Vec<(Vec<(&str, &str)>, u32)> = at.into_iter().collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut rank = vec![0u32; keys.len()];
    for (r, (_, g)) in keys.iter().enumerate() {
        rank[*g as usize] = r as u32;
    }
    of.iter_mut().for_each(|g| *g = rank[*g as usize]);
    (of, keys.into_iter().map(|(k, _)| owned(k)).collect())
}

/// Parses a duration as rules write them (`5m`, `1h30m`, `90s`), refusing 0 where `nonzero`.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, ExprError> {
    humantime::parse_duration(text.trim()).map_err(|e| ExprError(format!("{field}: invalid duration {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Series by name: (labels, points oldest first); the latest point is the instant value.
    /// One series: its name, labels and points.
    type FixedSeries = (&'static str, Labels, Vec<(i64, f64)>);

    struct Fixed(Vec<FixedSeries>);

    impl Fixed {
        fn matching(&self, name: &str, matchers: &[Matcher]) -> impl Iterator<Item = &FixedSeries> {
            self.0.iter().filter(move |(n, labels, _)| {
                *n == name && matchers.iter().all(|m| m.is_match(labels.get(&m.name).map(String::as_str).unwrap_or("")))
            })
        }
    }

    impl SeriesSource for Fixed {
        fn instant(&self, name: &str, matchers: &[Matcher], each: &mut dyn FnMut(&Arc<Labels>, f64)) {
            for (_, l, p) in self.matching(name, matchers) {
                if let Some(last) = p.last() {
                    each(&Arc::new(l.clone()), last.1);
                }
            }
        }
        fn range(&self, name: &str, matchers: &[Matcher], _range: Duration, each: &mut EachWindow<'_>) {
            for (_, l, p) in self.matching(name, matchers) {
                each(&Arc::new(l.clone()), p);
            }
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn known(name: &str) -> bool {
        name.starts_with("redis_") || name.starts_with("role_") || name.starts_with("host_")
    }

    fn fleet() -> Fixed {
        Fixed(vec![
            ("redis_memory_used_ratio", labels(&[("service", "cache"), ("role", "r1")]), vec![(0, 0.5), (1, 0.95)]),
            ("redis_memory_used_ratio", labels(&[("service", "cache"), ("role", "r2")]), vec![(0, 0.2)]),
            ("redis_memory_used_ratio", labels(&[("service", "sessions"), ("role", "r3")]), vec![(0, 0.99)]),
            (
                "role_restarts_total",
                labels(&[("role", "r1")]),
                vec![(0, 1.0), (60_000, 3.0), (120_000, 0.0), (180_000, 4.0)],
            ),
            ("role_restarts_total", labels(&[("role", "r2")]), vec![(0, 7.0), (60_000, 7.0)]),
        ])
    }

    #[test]
    fn comparisons_keep_the_series_that_hold() {
        let c = Condition::compile(r#"redis_memory_used_ratio{service="cache"} > 0.9"#, &known).expect("compile");
        let hits = c.eval(&fleet());
        assert_eq!(hits, vec![(labels(&[("service", "cache"), ("role", "r1")]), 0.95)]);
        // A number on the left flips the comparison.
        let c = Condition::compile("0.9 < redis_memory_used_ratio", &known).expect("compile");
        assert_eq!(c.eval(&fleet()).len(), 2);
    }

    #[test]
    fn increase_counts_resets_and_aggregations_group() {
        let c = Condition::compile("increase(role_restarts_total[10m]) > 3", &known).expect("compile");
        // 1→3 (+2), 3→0 (reset: +0), 0→4 (+4): 6.
        assert_eq!(c.eval(&fleet()), vec![(labels(&[("role", "r1")]), 6.0)]);
        assert_eq!(c.metrics(), vec![("role_restarts_total".to_owned(), Duration::from_secs(600))]);

        let c = Condition::compile("max by (service) (redis_memory_used_ratio)", &known).expect("compile");
        assert_eq!(
            c.eval(&fleet()),
            vec![(labels(&[("service", "cache")]), 0.95), (labels(&[("service", "sessions")]), 0.99)]
        );
        let c = Condition::compile("count(redis_memory_used_ratio) == 3", &known).expect("compile");
        assert_eq!(c.eval(&fleet()), vec![(Labels::new(), 3.0)]);
        let c = Condition::compile("avg without (role) (redis_memory_used_ratio{service=\"cache\"})", &known)
            .expect("compile");
        let got = c.eval(&fleet());
        assert_eq!(got.len(), 1);
        assert!((got[0].1 - 0.575).abs() < 1e-9, "{got:?}");
    }

    #[test]
    fn groups_are_those_of_the_kept_label_maps_in_their_order() {
        let series: Vec<(Arc<Labels>, f64)> = [
            (labels(&[("host", "b"), ("service", "cache"), ("role", "r1")]), 1.0),
            (labels(&[("host", "a"), ("service", "cache"), ("role", "r2")]), 2.0),
            (labels(&[("host", "b"), ("service", "web"), ("role", "r3")]), 4.0),
            // No `host` label, and an empty one: two groups, as two label maps.
            (labels(&[("service", "cache"), ("role", "r4")]), 8.0),
            (labels(&[("host", ""), ("service", "cache"), ("role", "r5")]), 16.0),
        ]
        .into_iter()
        .map(|(l, v)| (Arc::new(l), v))
        .collect();
        // What a map keyed by each series' kept labels gives.
        let reference = |keeps: &dyn Fn(&str) -> bool| -> Vec<(Labels, Acc)> {
            let mut m: BTreeMap<Labels, Acc> = BTreeMap::new();
            for (l, v) in &series {
                let key: Labels = l.iter().filter(|(k, _)| keeps(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
                let g = m.entry(key).or_insert((0.0, f64::INFINITY, f64::NEG_INFINITY, 0));
                *g = (g.0 + v, g.1.min(*v), g.2.max(*v), g.3 + 1);
            }
            m.into_iter().collect()
        };
        let owned =
            |g: Groups| -> Vec<(Labels, Acc)> { g.labels.iter().map(|l| Labels::clone(l)).zip(g.accs).collect() };
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let by = Grouping::By(names(&["service", "host", "host"]));
        assert_eq!(owned(grouped(&series, &by)), reference(&|k| k == "service" || k == "host"));
        let without = Grouping::Without(names(&["role"]));
        assert_eq!(owned(grouped(&series, &without)), reference(&|k| k != "role"));
        let all = Grouping::By(Vec::new());
        assert_eq!(owned(grouped(&series, &all)), reference(&|_| false));
        assert_eq!(owned(grouped(&series, &all)), [(Labels::new(), (31.0, 1.0, 16.0, 5))]);
        // Each series' group, by position.
        let (of, keys) = group(series.iter().map(|(l, _)| &**l), &by);
        let want = reference(&|k| k == "service" || k == "host");
        assert_eq!(keys, want.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>());
        for ((labels, _), g) in series.iter().zip(&of) {
            assert!(
                keys[*g as usize].iter().all(|(k, v)| labels.get(k) == Some(v)),
                "{labels:?} in {:?}",
                keys[*g as usize]
            );
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let err = |text: &str| Condition::compile(text, &known).expect_err(text).0;
        assert!(err("nosuch_metric > 1").contains("unknown metric \"nosuch_metric\""));
        assert!(err("redis_memory_used_ratio{").contains("cannot parse"));
        assert!(err("redis_memory_used_ratio + role_restarts_total").contains("operator `+`"));
        assert!(err("redis_memory_used_ratio > role_restarts_total").contains("with a number"));
        assert!(err("histogram_quantile(0.9, redis_memory_used_ratio)").contains("function `histogram_quantile`"));
        assert!(err("topk(3, redis_memory_used_ratio)").contains("aggregation `topk`"));
        assert!(err("redis_memory_used_ratio offset 5m > 1").contains("offset"));
        assert!(err("role_restarts_total[5m]").contains("needs a function"));
        assert!(err("42").contains("needs a metric"));
        assert!(!err("1 > 0").is_empty());
    }
}
