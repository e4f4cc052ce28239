//! Host label rules shared by the agent, the manager and the `drover` CLI.
//! The agent parses `--labels k=v,k2=v2` into the labels it asks for at
//! enrollment with the same rules the manager applies, so a typo fails there
//! with a clear message instead of burning a one-time token on a refused
//! enrollment; the CLI checks labels and selectors before sending them.
//!
//! A crate of its own, with no dependency but `thiserror`, so that both
//! `drover-proto` (the agent's side) and `drover-api` (the REST side, which
//! the CLI links without any of gRPC) can use it.

use std::collections::BTreeMap;

/// Longest label key the manager accepts.
pub const MAX_KEY_LEN: usize = 63;
/// Longest label value the manager accepts, in characters.
pub const MAX_VALUE_LEN: usize = 253;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelsError {
    #[error("empty label in {0:?}: write labels as key=value pairs separated by commas")]
    Empty(String),
    #[error("label {0:?} has no '=': write labels as key=value, e.g. rack=r1")]
    NoEquals(String),
    #[error("invalid label key {0:?}: use 1-63 letters, digits, '.', '_', '-' or '/', starting with a letter or digit")]
    Key(String),
    #[error("invalid value for label {0:?}: use at most 253 characters and no control characters")]
    Value(String),
    #[error("label {0:?} is given twice")]
    Duplicate(String),
}

/// Parses `key=value` pairs separated by commas. Whitespace around pairs, keys and
/// values is ignored; an empty string gives no labels. Values may contain `=` but
/// not `,`.
pub fn parse_labels(input: &str) -> Result<BTreeMap<String, String>, LabelsError> {
    let mut labels = BTreeMap::new();
    if input.trim().is_empty() {
        return Ok(labels);
    }
    for pair in input.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            return Err(LabelsError::Empty(input.to_owned()));
        }
        let (key, value) = pair.split_once('=').ok_or_else(|| LabelsError::NoEquals(pair.to_owned()))?;
        let (key, value) = (key.trim(), value.trim());
        validate(key, value)?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(LabelsError::Duplicate(key.to_owned()));
        }
    }
    Ok(labels)
}

/// Checks one label against the manager's rules.
pub fn validate(key: &str, value: &str) -> Result<(), LabelsError> {
    let key_ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !key_ok {
        return Err(LabelsError::Key(key.to_owned()));
    }
    if value.chars().count() > MAX_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(LabelsError::Value(key.to_owned()));
    }
    Ok(())
}

/// One requirement of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`: the host has the label with this value.
    Equals(String, String),
    /// `key!=value`: the host does not have the label with this value (a host
    /// without the label matches, as in Kubernetes).
    NotEquals(String, String),
}

/// A label selector such as `zk=true,rack!=r1`: every requirement must hold.
/// The empty selector matches every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("invalid label selector {0:?}: write key=value or key!=value, separated by commas")]
    Syntax(String),
    #[error("invalid label selector: {0}")]
    Label(LabelsError),
}

/// Parses a label selector: `key=value` and `key!=value` requirements
/// separated by commas, keys and values under the label rules of
/// [`validate`]. Whitespace around parts is ignored; empty parts are skipped.
pub fn parse_selector(input: &str) -> Result<Selector, SelectorError> {
    let mut requirements = Vec::new();
    for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value, negated) = match part.split_once('=') {
            Some((k, v)) if k.ends_with('!') => (&k[..k.len() - 1], v, true),
            Some((k, v)) => (k, v, false),
            None => return Err(SelectorError::Syntax(part.to_owned())),
        };
        let (key, value) = (key.trim(), value.trim());
        validate(key, value).map_err(SelectorError::Label)?;
        requirements.push(if negated {
            Requirement::NotEquals(key.to_owned(), value.to_owned())
        } else {
            Requirement::Equals(key.to_owned(), value.to_owned())
        });
    }
    Ok(Selector { requirements })
}

impl Selector {
    /// Whether a host with these labels matches every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
        })
    }

    /// The `key=value` requirements alone.
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.requirements.iter().filter_map(|r| match r {
            Requirement::Equals(k, v) => Some((k.as_str(), v.as_str())),
            Requirement::NotEquals(..) => None,
        })
    }

    /// The `key!=value` requirements alone.
    pub fn inequalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.requirements.iter().filter_map(|r| match r {
            Requirement::NotEquals(k, v) => Some((k.as_str(), v.as_str())),
            Requirement::Equals(..) => None,
        })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_good_input() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("   ", &[]),
            ("rack=r1", &[("rack", "r1")]),
            ("rack=r1,zone=eu-1", &[("rack", "r1"), ("zone", "eu-1")]),
            (" rack = r1 , zone=eu-1 ", &[("rack", "r1"), ("zone", "eu-1")]),
            ("team=", &[("team", "")]),
            ("drover.io/role=db", &[("drover.io/role", "db")]),
            ("expr=a=b", &[("expr", "a=b")]),
            ("note=two words", &[("note", "two words")]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_labels(input), Ok(map(want)), "{input:?}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let long_key = "k".repeat(64);
        let long_value = format!("k={}", "v".repeat(254));
        let cases = [
            ("rack", LabelsError::NoEquals("rack".into())),
            ("rack=r1,", LabelsError::Empty("rack=r1,".into())),
            ("a=1,,b=2", LabelsError::Empty("a=1,,b=2".into())),
            ("=r1", LabelsError::Key("".into())),
            ("-rack=r1", LabelsError::Key("-rack".into())),
            ("ra ck=r1", LabelsError::Key("ra ck".into())),
            ("räck=r1", LabelsError::Key("räck".into())),
            (&format!("{long_key}=v"), LabelsError::Key(long_key.clone())),
            (&long_value, LabelsError::Value("k".into())),
            ("k=a\u{7}b", LabelsError::Value("k".into())),
            ("rack=r1,rack=r2", LabelsError::Duplicate("rack".into())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_labels(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let msg = parse_labels("rack").unwrap_err().to_string();
        assert!(msg.contains("key=value"), "{msg}");
    }

    #[test]
    fn selectors_parse_and_match() {
        let sel = parse_selector(" zk=true , rack!=r1 ").unwrap();
        assert_eq!(
            sel.requirements,
            vec![Requirement::Equals("zk".into(), "true".into()), Requirement::NotEquals("rack".into(), "r1".into())]
        );
        assert_eq!(sel.to_string(), "zk=true,rack!=r1");
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("zk", "true")], true),
            (&[("zk", "true"), ("rack", "r2")], true),
            (&[("zk", "true"), ("rack", "r1")], false),
            (&[("zk", "false")], false),
            (&[], false),
        ];
        for (labels, want) in cases {
            assert_eq!(sel.matches(&map(labels)), *want, "{labels:?}");
        }
        assert!(parse_selector("").unwrap().matches(&map(&[])));
        assert_eq!(parse_selector("a=b=c").unwrap().requirements, vec![Requirement::Equals("a".into(), "b=c".into())]);
    }

    #[test]
    fn bad_selectors_are_refused() {
        assert_eq!(parse_selector("zk"), Err(SelectorError::Syntax("zk".into())));
        assert_eq!(parse_selector("bad key=1"), Err(SelectorError::Label(LabelsError::Key("bad key".into()))));
        assert_eq!(parse_selector("!=1"), Err(SelectorError::Label(LabelsError::Key("".into()))));
        let msg = parse_selector("zk").unwrap_err().to_string();
        assert!(msg.contains("key!=value"), "{msg}");
    }
}
