//! Label arguments: `key=value` pairs, `hosts list` selectors and the merge
//! patch of `hosts label`. The rules are the manager's own
//! ([`validate_label`], [`parse_selector`]), so a bad label fails before any
//! request is sent.

use std::collections::BTreeMap;

use drover_api::hosts::{PatchHost, parse_selector, validate_label};
use drover_api::model::Labels;

/// Parses one `key=value` argument. The value is taken verbatim and may
/// contain `=` and `,`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    validate_label(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// A `hosts list --label` selector: every (key, value) must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(pub Vec<(String, String)>);

/// Parses `key=value[,key=value...]`.
pub fn parse_selector_arg(s: &str) -> Result<Selector, String> {
    let pairs = parse_selector(s)?;
    if pairs.is_empty() {
        return Err("empty label selector; expected key=value[,key=value...]".into());
    }
    Ok(Selector(pairs))
}

/// The `label` query parameter for selectors given once or repeated.
pub fn selector_query(selectors: &[Selector]) -> Option<String> {
    let parts: Vec<String> = selectors.iter().flat_map(|s| &s.0).map(|(k, v)| format!("{k}={v}")).collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Collects `key=value` arguments into labels; a key given twice is an error.
pub fn labels_map(pairs: &[(String, String)]) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for (k, v) in pairs {
        if labels.insert(k.clone(), v.clone()).is_some() {
            return Err(format!("label {k:?} is given more than once"));
        }
    }
    Ok(labels)
}

/// The JSON merge patch body of `PATCH /hosts/{id}`: a string sets a label,
/// null removes it.
pub fn label_patch(set: &[(String, String)], remove: &[String]) -> Result<PatchHost, String> {
    let mut labels: BTreeMap<String, Option<String>> =
        labels_map(set)?.into_iter().map(|(k, v)| (k, Some(v))).collect();
    for key in remove {
        validate_label(key, "")?;
        if labels.get(key).is_some_and(Option::is_some) {
            return Err(format!("label {key:?} is both set and removed"));
        }
        labels.insert(key.clone(), None);
    }
    if labels.is_empty() {
        return Err("nothing to change: give key=value labels to set or --remove KEY".into());
    }
    Ok(PatchHost { labels })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn single_labels() {
        assert_eq!(parse_label("rack=r1"), Ok(pair("rack", "r1")));
        assert_eq!(parse_label("note=a=b,c"), Ok(pair("note", "a=b,c")));
        assert_eq!(parse_label("empty="), Ok(pair("empty", "")));
        assert!(parse_label("rack").unwrap_err().contains("expected key=value"));
        assert!(parse_label("bad key=1").unwrap_err().contains("invalid label key"));
    }

    #[test]
    fn selectors() {
        let a = parse_selector_arg("a=1, b=2").unwrap();
        let c = parse_selector_arg("c=3").unwrap();
        assert_eq!(a, Selector(vec![pair("a", "1"), pair("b", "2")]));
        assert_eq!(selector_query(&[a, c]).as_deref(), Some("a=1,b=2,c=3"));
        assert_eq!(selector_query(&[]), None);
        assert!(parse_selector_arg("").is_err());
        assert!(parse_selector_arg("a").is_err());
    }

    #[test]
    fn patches() {
        let body = |p: PatchHost| serde_json::to_value(p).unwrap();
        let patch = label_patch(&[pair("rack", "r1")], &["old".into(), "old".into()]).unwrap();
        assert_eq!(body(patch), json!({ "labels": { "rack": "r1", "old": null } }));
        assert_eq!(body(label_patch(&[], &["x".into()]).unwrap()), json!({ "labels": { "x": null } }));
        assert!(label_patch(&[], &[]).unwrap_err().contains("nothing to change"));
        assert!(label_patch(&[pair("a", "1")], &["a".into()]).unwrap_err().contains("both set and removed"));
        assert!(label_patch(&[pair("a", "1"), pair("a", "2")], &[]).unwrap_err().contains("more than once"));
        assert!(label_patch(&[], &["bad key".into()]).is_err());
    }
}
