//! The routing tree: which receivers an alert goes to and how it is grouped
//! there, as Alertmanager's `route` block does.
//!
//! An alert enters at the root (which matches everything) and goes down the
//! first child whose matchers all hold; with `continue: true` on that child
//! it also tries the next siblings. A node none of whose children matched is
//! where the alert lands. Children inherit `receiver`, `group_by` and the
//! three intervals from their parent unless they set them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};

use super::NotifyError;

/// Alertmanager's defaults.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// One node of the routing tree as written in the configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The receiver the alerts that land here go to (inherited if unset;
    /// the root must set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// Label matchers, all of which must hold: `severity="critical"`,
    /// `cluster=~"prod-.*"`, `service!=redis`, `host!~"test.*"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Matcher>,
    /// Whether an alert that matched this route also tries the next siblings.
    #[serde(default, rename = "continue", skip_serializing_if = "std::ops::Not::not")]
    pub continue_: bool,
    /// The labels alerts are grouped by; `["..."]` groups by all labels (one
    /// group per alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub group_wait: Option<Duration>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub group_interval: Option<Duration>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// `name op "value"`. A missing label has the empty value, as in
/// Alertmanager (so `service=""` matches alerts without a service).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// The value anchored (`^(?:value)$`), for `=~` and `!~`.
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?} (letters, digits and _, not starting with a digit)"));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                // The parser's message is several lines: the pattern, a caret, then the problem.
                let e = e.to_string();
                let why = e.lines().last().unwrap_or_default().trim().trim_start_matches("error: ").to_owned();
                format!("invalid regular expression {value:?}: {why}")
            })?),
            _ => None,
        };
        Ok(Matcher { name: name.to_owned(), op, value: value.to_owned(), regex })
    }

    /// Parses `name=value`, `name!="value"`, `name=~"re"`, `name!~re`.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let end = s.find(['=', '!']).ok_or_else(|| format!("matcher {s:?} has no operator (=, !=, =~ or !~)"))?;
        let name = s[..end].trim();
        let rest = &s[end..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(format!("matcher {s:?} has no operator (=, !=, =~ or !~)"));
        };
        let value = unquote(value.trim()).map_err(|e| format!("matcher {s:?}: {e}"))?;
        Matcher::new(name, op, &value).map_err(|e| format!("matcher {s:?}: {e}"))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(MatcherVisitor)
    }
}

/// Raises the error where the value is, so that it names the matcher's place.
struct MatcherVisitor;

impl serde::de::Visitor<'_> for MatcherVisitor {
    type Value = Matcher;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a matcher such as severity="critical" or cluster=~"prod-.*""#)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Matcher, E> {
        Matcher::parse(v).map_err(E::custom)
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A double-quoted value with `\"` and `\\` escapes, or a bare one.
fn unquote(v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        if v.contains('"') {
            return Err("a value with a quote must be quoted as a whole".into());
        }
        return Ok(v.to_owned());
    };
    let inner = inner.strip_suffix('"').ok_or("unterminated quoted value")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => return Err("quoted value ends with a backslash".into()),
            },
            '"' => return Err("unescaped quote inside a quoted value".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Durations in humantime form (`30s`, `5m`, `4h`, `250ms`), never zero.
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::de::Visitor;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Through visitors, so the error is raised where the value is and the
    /// YAML error names the field (`route.group_wait: invalid duration ...`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_option(OptVisitor)
    }

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as 30s, 5m or 4h")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(DurationVisitor).map(Some)
        }
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as 30s, 5m or 4h")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }

    pub fn parse(s: &str) -> Result<Duration, String> {
        let d = humantime::parse_duration(s.trim())
            .map_err(|e| format!("invalid duration {s:?}: {e} (write it as 30s, 5m, 4h or 250ms)"))?;
        if d.is_zero() {
            return Err(format!("invalid duration {s:?}: must be more than zero"));
        }
        Ok(d)
    }
}

/// How alerts are grouped on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// By these labels (an empty list puts every alert of the route in one group).
    Labels(Vec<String>),
    /// `...`: by all labels.
    All,
}

/// A node of the compiled tree, with everything inherited filled in.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where in the tree: `{}` for the root, `{}/0{severity="critical"}` for
    /// its first child, and so on. Part of every group key.
    pub id: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub continue_: bool,
    pub group_by: GroupBy,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub routes: Vec<Route>,
}

impl Route {
    /// Compiles the root route; `receiver_exists` checks receiver names.
    /// Errors name the route by its path (`route.routes[1].receiver`).
    pub fn compile(config: &RouteConfig, receiver_exists: &dyn Fn(&str) -> bool) -> Result<Route, NotifyError> {
        if !config.matchers.is_empty() {
            return Err(NotifyError::Config(
                "route.matchers: the root route matches every alert and takes no matchers".into(),
            ));
        }
        if config.continue_ {
            return Err(NotifyError::Config("route.continue: the root route cannot continue".into()));
        }
        let Some(receiver) = config.receiver.as_deref().filter(|r| !r.is_empty()) else {
            return Err(NotifyError::Config("route.receiver: the root route needs a default receiver".into()));
        };
        let root = Route {
            id: "{}".into(),
            receiver: receiver.to_owned(),
            matchers: Vec::new(),
            continue_: false,
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            routes: Vec::new(),
        };
        Route::compile_node(config, &root, "route", "{}".into(), receiver_exists)
    }

    fn compile_node(
        config: &RouteConfig,
        parent: &Route,
        path: &str,
        id: String,
        receiver_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Route, NotifyError> {
        let receiver = config.receiver.clone().unwrap_or_else(|| parent.receiver.clone());
        if !receiver_exists(&receiver) {
            return Err(NotifyError::Config(format!("{path}.receiver: no receiver is named {receiver:?}")));
        }
        let group_by = match &config.group_by {
            None => parent.group_by.clone(),
            Some(labels) if labels.iter().any(|l| l == "...") => {
                if labels.len() > 1 {
                    return Err(NotifyError::Config(format!(
                        "{path}.group_by: \"...\" (all labels) cannot be combined with other labels"
                    )));
                }
                GroupBy::All
            }
            Some(labels) => {
                if let Some(bad) = labels.iter().find(|l| !valid_label_name(l)) {
                    return Err(NotifyError::Config(format!("{path}.group_by: invalid label name {bad:?}")));
                }
                let mut labels = labels.clone();
                labels.sort();
                labels.dedup();
                GroupBy::Labels(labels)
            }
        };
        let mut route = Route {
            id: id.clone(),
            receiver,
            matchers: config.matchers.clone(),
            continue_: config.continue_,
            group_by,
            group_wait: config.group_wait.unwrap_or(parent.group_wait),
            group_interval: config.group_interval.unwrap_or(parent.group_interval),
            repeat_interval: config.repeat_interval.unwrap_or(parent.repeat_interval),
            routes: Vec::new(),
        };
        for (i, child) in config.routes.iter().enumerate() {
            let matchers = child.matchers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
            let child_id = format!("{id}/{i}{{{matchers}}}");
            let child_path = format!("{path}.routes[{i}]");
            route.routes.push(Route::compile_node(child, &route, &child_path, child_id, receiver_exists)?);
        }
        Ok(route)
    }

    /// The routes an alert with these labels lands on, in tree order.
    pub fn matching<'a>(&'a self, labels: &BTreeMap<String, String>) -> Vec<&'a Route> {
        let mut out = Vec::new();
        self.collect(labels, &mut out);
        out
    }

    fn collect<'a>(&'a self, labels: &BTreeMap<String, String>, out: &mut Vec<&'a Route>) -> bool {
        if !self.matchers.iter().all(|m| m.matches(labels)) {
            return false;
        }
        let before = out.len();
        for child in &self.routes {
            if child.collect(labels, out) && !child.continue_ {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }

    /// The labels of an alert its group is keyed by on this route.
    pub fn group_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => {
                names.iter().filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone()))).collect()
            }
        }
    }

    /// The group key: the route's id and the group labels,
    /// `{}/0{severity="critical"}:{alertname="HostLost",cluster="prod"}`.
    pub fn group_key(&self, group_labels: &BTreeMap<String, String>) -> String {
        let labels = group_labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(",");
        format!("{}:{{{labels}}}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_matchers() {
        let m = Matcher::parse(r#"severity="critical""#).unwrap();
        assert_eq!((m.name.as_str(), m.op, m.value.as_str()), ("severity", MatchOp::Equal, "critical"));
        let m = Matcher::parse("cluster=~prod-.*").unwrap();
        assert!(m.matches(&labels(&[("cluster", "prod-1")])));
        assert!(!m.matches(&labels(&[("cluster", "xprod-1")])), "regexes are anchored");
        assert!(!m.matches(&labels(&[("cluster", "prod-1x\n")])));
        let m = Matcher::parse(r#"host!~"test.*""#).unwrap();
        assert!(m.matches(&labels(&[("host", "db1")])));
        assert!(m.matches(&labels(&[])));
        assert!(!m.matches(&labels(&[("host", "test1")])));
        let m = Matcher::parse("service!=redis").unwrap();
        assert!(m.matches(&labels(&[])));
        assert!(!m.matches(&labels(&[("service", "redis")])));
        let m = Matcher::parse(r#"a="x\"y""#).unwrap();
        assert_eq!(m.value, "x\"y");
        assert_eq!(m.to_string(), r#"a="x\"y""#);
        assert_eq!(Matcher::parse(&m.to_string()).unwrap(), m);

        for (bad, want) in [
            ("severity", "no operator"),
            ("1x=y", "invalid label name"),
            ("x=~(", "invalid regular expression \"(\": unclosed group"),
            (r#"x="y"#, "unterminated"),
            ("=y", "invalid label name"),
        ] {
            let e = Matcher::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    fn tree() -> Route {
        let config: RouteConfig = serde_norway::from_str(
            r#"
receiver: default
group_by: [alertname]
routes:
  - matchers: ['severity="critical"']
    receiver: pager
    continue: true
    group_by: [alertname, cluster]
    group_wait: 1s
  - matchers: ['cluster=~"prod-.*"']
    receiver: prod
    routes:
      - matchers: [service=redis]
        receiver: redis-team
  - matchers: ['severity="critical"']
    receiver: never
"#,
        )
        .unwrap();
        Route::compile(&config, &|_| true).unwrap()
    }

    #[test]
    fn routes_alerts_like_alertmanager() {
        let t = tree();
        let recv = |l: &[(&str, &str)]| t.matching(&labels(l)).iter().map(|r| r.receiver.clone()).collect::<Vec<_>>();
        assert_eq!(recv(&[("alertname", "A")]), ["default"]);
        assert_eq!(recv(&[("severity", "critical"), ("cluster", "prod-1")]), ["pager", "prod"]);
        assert_eq!(recv(&[("severity", "critical")]), ["pager", "never"]);
        assert_eq!(recv(&[("cluster", "prod-1"), ("service", "redis")]), ["redis-team"]);
        assert_eq!(recv(&[("cluster", "dev")]), ["default"]);

        let pager = &t.matching(&labels(&[("severity", "critical")]))[0];
        assert_eq!(pager.group_wait, Duration::from_secs(1));
        assert_eq!(pager.group_interval, DEFAULT_GROUP_INTERVAL, "inherited");
        let redis = &t.matching(&labels(&[("cluster", "prod-1"), ("service", "redis")]))[0];
        assert_eq!(redis.group_by, GroupBy::Labels(vec!["alertname".into()]), "inherited");
        let gl = redis.group_labels(&labels(&[("alertname", "RoleDown"), ("host", "h1")]));
        assert_eq!(redis.group_key(&gl), r#"{}/1{cluster=~"prod-.*"}/0{service="redis"}:{alertname="RoleDown"}"#);
    }

    #[test]
    fn bad_routes_name_the_field() {
        let cases = [
            ("group_by: [x]", "route.receiver: the root route needs a default receiver"),
            ("receiver: a\nroutes: [{receiver: nope}]", r#"route.routes[0].receiver: no receiver is named "nope""#),
            ("receiver: a\nroutes: [{routes: [{group_by: ['...', x]}]}]", "route.routes[0].routes[0].group_by"),
            ("receiver: a\nmatchers: [x=y]", "route.matchers"),
        ];
        for (yaml, want) in cases {
            let config: RouteConfig = serde_norway::from_str(yaml).unwrap();
            let e = Route::compile(&config, &|r| r == "a").unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let e = serde_norway::from_str::<RouteConfig>("receiver: a\nroutes: [{group_wait: 5 minutes please}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("routes[0].group_wait") && e.contains("invalid duration"), "{e}");
        let e = serde_norway::from_str::<RouteConfig>("receiver: a\ngroup_wiat: 5m").unwrap_err().to_string();
        assert!(e.contains("unknown field `group_wiat`"), "{e}");
    }
}
