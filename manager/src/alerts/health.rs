//! Health tests, as Cloudera Manager runs them: each test looks at one entity (a host or a
//! role) and says good, concerning or bad, with the value that decided it. An entity is as
//! healthy as its worst test; a service as its worst role, a cluster as its worst service or
//! host (any bad makes the parent bad; otherwise any concerning makes it concerning).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::expr::{Cmp, Condition, Labels, SeriesSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Good,
    Concerning,
    Bad,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Good => "good",
            Status::Concerning => "concerning",
            Status::Bad => "bad",
        }
    }

    /// As a metric value: 0 good, 1 concerning, 2 bad.
    pub fn level(self) -> f64 {
        match self {
            Status::Good => 0.0,
            Status::Concerning => 1.0,
            Status::Bad => 2.0,
        }
    }
}

/// The parent's status from its children's: the worst of them, good when there are none.
pub fn roll_up(children: impl IntoIterator<Item = Status>) -> Status {
    children.into_iter().max().unwrap_or(Status::Good)
}

/// One test's verdict on one entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    pub test: Text,
    pub status: Status,
    /// The value that decided it, when a metric did.
    pub value: Option<f64>,
    /// Says what was seen, e.g. "disk / 93% used (critical at 90%)".
    pub summary: Text,
}

/// A test's name or summary: fixed text, or text made once and shared by every result that
/// says the same. A cycle judges tens of thousands of roles that mostly say the same few
/// things ("running", "health checks pass", a restarts test's `= 0`): one copy each, not one
/// per role. Reads and serializes as the string it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Fixed(&'static str),
    Shared(Arc<str>),
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Text::Fixed(s) => s,
            Text::Shared(s) => s,
        }
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::Fixed(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::Shared(s.into())
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

/// A metric threshold test: `value <direction> critical` is bad, else `value <direction>
/// warning` is concerning, else good.
#[derive(Debug, Clone)]
pub struct ThresholdTest {
    pub name: String,
    pub description: String,
    pub vector: Condition,
    pub direction: Cmp,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
}

impl ThresholdTest {
    pub fn classify(&self, value: f64) -> Status {
        if self.critical.is_some_and(|c| self.direction.holds(value, c)) {
            Status::Bad
        } else if self.warning.is_some_and(|w| self.direction.holds(value, w)) {
            Status::Concerning
        } else {
            Status::Good
        }
    }

    /// The verdict on every series the test's expression yields.
    pub fn run(&self, src: &dyn SeriesSource) -> Vec<(Labels, TestResult)> {
        self.run_shared(src).into_iter().map(|(labels, result)| (Arc::unwrap_or_clone(labels), result)).collect()
    }

    /// As [`ThresholdTest::run`], with the labels shared with the source; a value seen before
    /// shares its summary (a fleet's roles mostly share a few values, e.g. no restarts), and
    /// every result shares the test's name.
    pub fn run_shared(&self, src: &dyn SeriesSource) -> Vec<(Arc<Labels>, TestResult)> {
        let name = Text::from(self.name.clone());
        let mut summaries: HashMap<u64, (Status, Text)> = HashMap::new();
        self.vector
            .eval_shared(src)
            .into_iter()
            .map(|(labels, value)| {
                let (status, summary) = summaries.entry(value.to_bits()).or_insert_with(|| self.verdict(value));
                let result =
                    TestResult { test: name.clone(), status: *status, value: Some(value), summary: summary.clone() };
                (labels, result)
            })
            .collect()
    }

    /// The status of `value` and the summary that says why.
    fn verdict(&self, value: f64) -> (Status, Text) {
        let status = self.classify(value);
        let level = match status {
            Status::Bad => self.critical.map(|c| format!(" (bad {} {c})", self.direction.symbol())),
            Status::Concerning => self.warning.map(|w| format!(" (concerning {} {w})", self.direction.symbol())),
            Status::Good => None,
        };
        (status, format!("{} = {}{}", self.vector.text, short(value), level.unwrap_or_default()).into())
    }
}

/// A value as people read it: up to 3 decimals, no trailing zeros.
pub fn short(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".to_owned() } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_child_decides() {
        assert_eq!(roll_up([]), Status::Good);
        assert_eq!(roll_up([Status::Good, Status::Concerning]), Status::Concerning);
        assert_eq!(roll_up([Status::Concerning, Status::Bad, Status::Good]), Status::Bad);
    }

    #[test]
    fn thresholds_classify_in_their_direction() {
        let any = |_: &str| true;
        let t = ThresholdTest {
            name: "disk".into(),
            description: String::new(),
            vector: Condition::compile("host_disk_used_ratio", &any).expect("compile"),
            direction: Cmp::Ge,
            warning: Some(0.8),
            critical: Some(0.9),
        };
        assert_eq!(t.classify(0.5), Status::Good);
        assert_eq!(t.classify(0.8), Status::Concerning);
        assert_eq!(t.classify(0.95), Status::Bad);
        let low = ThresholdTest { direction: Cmp::Lt, warning: Some(2.0), critical: Some(1.0), ..t };
        assert_eq!(low.classify(0.0), Status::Bad);
        assert_eq!(low.classify(1.5), Status::Concerning);
        assert_eq!(short(0.9), "0.9");
        assert_eq!(short(3.0), "3");
    }

    #[test]
    fn text_reads_and_serializes_as_its_string() {
        let fixed = Text::from("running");
        let shared = Text::from(String::from("running"));
        assert_eq!(&*fixed, &*shared);
        assert_eq!(shared, "running");
        assert_eq!(shared.to_string(), "running");
        let json = |t: &Text| serde_json::to_string(t).expect("serialize");
        assert_eq!(json(&fixed), json(&shared));
        assert_eq!(json(&shared), serde_json::to_string("running").expect("serialize"));
    }
}
