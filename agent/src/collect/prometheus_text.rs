//! A parser of the Prometheus text exposition format (version 0.0.4), for
//! metric sources of kind `prometheus` (an HTTP endpoint) and `command` (a
//! program's standard output).
//!
//! What it accepts: `# HELP` and `# TYPE` lines and any other comment (all
//! skipped; OpenMetrics' `# EOF` is a comment too), blank lines, and sample
//! lines `name{label="value",...} value [timestamp]` where label values may
//! hold `\\`, `\"` and `\n` escapes, a trailing comma in the label set is
//! allowed, the value is a Go-style float (`NaN`, `+Inf`, `-Inf`, `1e3`) and
//! the optional timestamp is milliseconds since the epoch. A line it cannot
//! read is skipped and named in the result's `errors` (first few only); the
//! other lines still count.

use std::collections::BTreeMap;

use super::{Sample, valid_label_name, valid_metric_name};

/// What a text exposition held: its samples (at most `limit`), how many
/// there were in all, and why lines were skipped.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub samples: Vec<Sample>,
    /// Samples in the text, including those beyond the limit.
    pub total: usize,
    /// `line N: why`, for the first [`MAX_ERRORS`] unreadable lines.
    pub errors: Vec<String>,
    /// Unreadable lines in all.
    pub bad_lines: usize,
}

/// Unreadable lines named in [`Parsed::errors`].
pub const MAX_ERRORS: usize = 3;

/// Parses `text`, keeping the first `limit` samples; samples without a
/// timestamp get `now_unix_ms`.
pub fn parse(text: &str, limit: usize, now_unix_ms: i64) -> Parsed {
    let mut out = Parsed::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line, now_unix_ms) {
            Ok(sample) => {
                out.total += 1;
                if out.samples.len() < limit {
                    out.samples.push(sample);
                }
            }
            Err(why) => {
                out.bad_lines += 1;
                if out.errors.len() < MAX_ERRORS {
                    out.errors.push(format!("line {}: {why}", n + 1));
                }
            }
        }
    }
    out
}

fn parse_line(line: &str, now_unix_ms: i64) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name}: {value:?} is not a number"))?;
    let at_unix_ms = match fields.next() {
        None => now_unix_ms,
        Some(ts) => ts.parse::<i64>().map_err(|_| format!("{name}: {ts:?} is not a timestamp in milliseconds"))?,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("{name}: unexpected {extra:?} after the timestamp"));
    }
    Ok(Sample { name: name.to_owned(), value, labels, at_unix_ms })
}

/// Reads `name="value",...}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("a label without '='")?;
        let name = s[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or_else(|| format!("label {name}: the value is not quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, c)) => {
                        // The format allows only three escapes; keep others as written.
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("label {name}: unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} appears twice"));
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("label {name}: expected ',' or '}}' after the value"));
        }
    }
}

/// A Go `ParseFloat` value: decimal or exponent notation, `NaN`, `Inf`,
/// `+Inf`, `-Inf` (any case).
fn parse_value(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => return Some(f64::NAN),
        "inf" | "+inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust also reads "infinity"; the format does not.
    if s.chars().any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E')) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of what a real node_exporter-style endpoint serves, with the
    /// awkward cases of the format mixed in.
    const TEXT: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
go_gc_duration_seconds{quantile="0.5",} NaN
process_open_fds -Inf
# EOF
"#;

    fn find<'a>(p: &'a Parsed, name: &str) -> &'a Sample {
        p.samples.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} in {:?}", p.samples))
    }

    #[test]
    fn the_reference_example_parses() {
        let p = parse(TEXT, 500, 42);
        assert_eq!(p.errors, Vec::<String>::new());
        assert_eq!((p.samples.len(), p.total, p.bad_lines), (11, 11, 0));
        let first = &p.samples[0];
        assert_eq!(
            (first.name.as_str(), first.value, first.at_unix_ms),
            ("http_requests_total", 1027.0, 1395066363000)
        );
        assert_eq!(first.labels["method"], "post");
        assert_eq!(p.samples[1].value, 3.0);
        let ms = find(&p, "msdos_file_access_time_seconds");
        assert_eq!(ms.labels["path"], r"C:\DIR\FILE.TXT");
        assert_eq!(ms.labels["error"], "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(ms.value, 1.458255915e9);
        let plain = find(&p, "metric_without_timestamp_and_labels");
        assert_eq!((plain.value, plain.at_unix_ms, plain.labels.len()), (12.47, 42, 0));
        let weird = find(&p, "something_weird");
        assert_eq!((weird.value, weird.at_unix_ms), (f64::INFINITY, -3982045));
        assert_eq!(p.samples[6].labels["le"], "+Inf");
        assert!(find(&p, "go_gc_duration_seconds").value.is_nan());
        assert_eq!(find(&p, "process_open_fds").value, f64::NEG_INFINITY);
    }

    #[test]
    fn the_limit_cuts_and_counts() {
        let text: String = (0..20).map(|i| format!("m{i} {i}\n")).collect();
        let p = parse(&text, 5, 0);
        assert_eq!((p.samples.len(), p.total), (5, 20));
        assert_eq!(p.samples[4].name, "m4");
    }

    #[test]
    fn bad_lines_are_named_and_skipped() {
        let text = "ok 1\n9bad 1\nx{a=\"1\" 2\ny{1a=\"x\"} 1\nz{a=\"1\",a=\"2\"} 1\nv abc\nw 1 2 3\nu{a=1} 2\nlast 7\n";
        let p = parse(text, 500, 0);
        assert_eq!(p.samples.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["ok", "last"]);
        assert_eq!(p.bad_lines, 7);
        assert_eq!(p.errors.len(), MAX_ERRORS);
        assert_eq!(p.errors[0], "line 2: \"9bad\" is not a metric name");
        assert!(p.errors[1].starts_with("line 3: label a"), "{:?}", p.errors);
        assert!(p.errors[2].contains("\"1a\" is not a label name"), "{:?}", p.errors);
        let one = |line: &str| parse_line(line, 0).expect_err(line);
        assert!(one("z{a=\"1\",a=\"2\"} 1").contains("twice"));
        assert!(one("v abc").contains("not a number"));
        assert!(one("v Infinity").contains("not a number"));
        assert!(one("w 1 2 3").contains("unexpected"));
        assert!(one("w 1 1.5").contains("timestamp"));
        assert!(one("u{a=1} 2").contains("not quoted"));
        assert!(one("v").contains("no value"));
    }

    #[test]
    fn values_in_every_spelling() {
        for (text, want) in
            [("1", 1.0), ("-2.5", -2.5), ("1e3", 1000.0), ("+Inf", f64::INFINITY), ("inf", f64::INFINITY)]
        {
            assert_eq!(parse_value(text), Some(want), "{text}");
        }
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("0x10"), None);
    }
}
