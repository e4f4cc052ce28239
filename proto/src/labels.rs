//! Host label rules shared by the agent and the manager. The agent parses
//! `--labels k=v,k2=v2` into the labels it asks for at enrollment,
//! with the same rules the manager applies, so a typo fails here with a clear
//! message instead of burning a one-time token on a refused enrollment.

use std::collections::BTreeMap;

/// Longest label key the manager accepts.
pub const MAX_KEY_LEN: usize = 63;
/// Longest label value the manager accepts.
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
    if value.len() > MAX_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(LabelsError::Value(key.to_owned()));
    }
    Ok(())
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
}
