//! Redaction of what goes into a diagnostic bundle: literal secret values
//! (sensitive parameters) and regex rules, each match becoming `[REDACTED]`
//! (only the capture group named `secret` when a rule has one). The agents
//! apply the same to their part before it leaves the host; the manager
//! applies it to its own part and, again, to the hosts' files it re-packs.

use std::collections::BTreeMap;

use regex::Regex;

use crate::agent_requests::RedactionRule;

pub const REDACTED: &str = "[REDACTED]";
/// The manifest's name for literal secret values.
pub const SECRET_VALUES: &str = "secret-values";

/// The rules used until an administrator sets others.
pub fn default_rules() -> Vec<RedactionRule> {
    let rule = |name: &str, pattern: &str| RedactionRule { name: name.into(), pattern: pattern.into() };
    vec![
        rule("password-in-url", r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]+:(?P<secret>[^\s@/]+)@"),
        rule(
            "password-key-value",
            r#"(?i)\b(?:password|passwd|pwd|secret|token)\b["']?\s*[:=]\s*["']?(?P<secret>[^\s"',;&]+)"#,
        ),
        rule("authorization-header", r"(?i)\bauthorization\s*:\s*(?:(?:basic|bearer|token)\s+)?(?P<secret>\S+)"),
        rule("pem-private-key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ]
}

/// Checks rules before they are stored or used: names given and unique,
/// patterns that compile. Err names the bad rule.
pub fn check_rules(rules: &[RedactionRule]) -> Result<Vec<(String, Regex)>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for r in rules {
        if r.name.trim().is_empty() {
            return Err(format!("redaction rule with pattern {:?} has no name", r.pattern));
        }
        if r.name == SECRET_VALUES {
            return Err(format!("redaction rule name {SECRET_VALUES:?} is reserved for sensitive parameter values"));
        }
        if !seen.insert(r.name.clone()) {
            return Err(format!("redaction rule {:?} is named twice", r.name));
        }
        if r.pattern.is_empty() {
            return Err(format!("redaction rule {:?} has an empty pattern", r.name));
        }
        let re = regex::RegexBuilder::new(&r.pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("redaction rule {:?}: pattern {:?} does not compile: {e}", r.name, r.pattern))?;
        out.push((r.name.clone(), re));
    }
    Ok(out)
}

/// Literal secrets and compiled rules, with a count of what they replaced.
#[derive(Debug, Default)]
pub struct Redactor {
    literals: Vec<String>,
    rules: Vec<(String, Regex)>,
    pub counts: BTreeMap<String, u64>,
}

impl Redactor {
    /// `secrets`: literal values (empty ones and duplicates are dropped);
    /// `rules` must have passed [`check_rules`] (a bad one is skipped).
    pub fn new(secrets: &[String], rules: &[RedactionRule]) -> Redactor {
        let mut literals: Vec<String> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        // Longest first, so a secret containing another is replaced whole.
        literals.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        literals.dedup();
        let rules = rules.iter().filter_map(|r| check_rules(std::slice::from_ref(r)).ok()).flatten().collect();
        Redactor { literals, rules, counts: BTreeMap::new() }
    }

    /// `text` with every secret and rule match replaced.
    pub fn redact(&mut self, text: &str) -> String {
        let mut out = text.to_owned();
        for lit in &self.literals {
            let n = out.matches(lit.as_str()).count() as u64;
            if n > 0 {
                out = out.replace(lit.as_str(), REDACTED);
                *self.counts.entry(SECRET_VALUES.into()).or_default() += n;
            }
        }
        for (name, re) in &self.rules {
            let mut n = 0u64;
            let replaced = re.replace_all(&out, |caps: &regex::Captures<'_>| {
                let whole = caps.get(0).map(|m| m.as_str()).unwrap_or_default();
                match caps.name("secret") {
                    // Already redacted: leave it (and do not count it twice).
                    Some(s) if s.as_str() == REDACTED => whole.to_owned(),
                    Some(s) => {
                        n += 1;
                        let start = s.start() - caps.get(0).map_or(0, |m| m.start());
                        format!("{}{REDACTED}{}", &whole[..start], &whole[start + s.len()..])
                    }
                    None => {
                        n += 1;
                        REDACTED.to_owned()
                    }
                }
            });
            if n > 0 {
                out = replaced.into_owned();
                *self.counts.entry(name.clone()).or_default() += n;
            }
        }
        out
    }

    /// Bytes that may not be UTF-8: text is redacted (lossily decoded when
    /// it mostly is text), binary data is left as it is unless it holds a
    /// literal secret, which is then replaced byte-wise.
    pub fn redact_bytes(&mut self, data: &[u8]) -> Vec<u8> {
        match std::str::from_utf8(data) {
            Ok(text) => self.redact(text).into_bytes(),
            Err(_) => {
                let mut out = data.to_vec();
                for lit in &self.literals {
                    let needle = lit.as_bytes();
                    let mut i = 0;
                    let mut replaced = Vec::with_capacity(out.len());
                    let mut n = 0;
                    while i < out.len() {
                        if out[i..].starts_with(needle) {
                            replaced.extend_from_slice(REDACTED.as_bytes());
                            i += needle.len();
                            n += 1;
                        } else {
                            replaced.push(out[i]);
                            i += 1;
                        }
                    }
                    if n > 0 {
                        *self.counts.entry(SECRET_VALUES.into()).or_default() += n;
                    }
                    out = replaced;
                }
                out
            }
        }
    }

    /// Every string in a JSON value redacted (keys too).
    pub fn redact_json(&mut self, v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.redact(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| self.redact_json(v)).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (self.redact(&k), self.redact_json(v))).collect())
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_rules_are_replaced_and_counted() {
        let mut r = Redactor::new(&["s3cret-pw".into(), String::new()], &default_rules());
        let text = "requirepass s3cret-pw\nurl redis://app:hunter2@db:6379/0\nPassword = abc;\n\
                    Authorization: Bearer tok123\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n";
        let out = r.redact(text);
        assert_eq!(
            out,
            "requirepass [REDACTED]\nurl redis://app:[REDACTED]@db:6379/0\nPassword = [REDACTED];\n\
             Authorization: Bearer [REDACTED]\n[REDACTED]\n"
        );
        let counts: Vec<(&str, u64)> = r.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            counts,
            vec![
                ("authorization-header", 1),
                ("password-in-url", 1),
                ("password-key-value", 1),
                ("pem-private-key", 1),
                ("secret-values", 1)
            ]
        );
        // A secret already replaced is not counted again by a rule.
        let mut r = Redactor::new(&["abc".into()], &default_rules());
        assert_eq!(r.redact("password=abc"), "password=[REDACTED]");
        assert_eq!(r.counts.len(), 1);
        assert_eq!(r.redact_bytes(b"\xff\x00abc\xfe"), b"\xff\x00[REDACTED]\xfe".to_vec());
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = vec![RedactionRule { name: "broken".into(), pattern: "(unclosed".into() }];
        let e = check_rules(&bad).unwrap_err();
        assert!(e.contains("broken") && e.contains("(unclosed"), "{e}");
        assert!(check_rules(&default_rules()).is_ok());
        let twice = vec![default_rules()[0].clone(), default_rules()[0].clone()];
        assert!(check_rules(&twice).unwrap_err().contains("named twice"));
    }
}
