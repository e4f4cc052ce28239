//! nginx's `stub_status` page:
//!
//! ```text
//! Active connections: 291
//! server accepts handled requests
//!  16630948 16630948 31070465
//! Reading: 6 Writing: 179 Waiting: 106
//! ```

use std::collections::BTreeMap;

use super::Sample;

/// The figures of one `stub_status` page.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StubStatus {
    pub active: f64,
    pub accepts: f64,
    pub handled: f64,
    pub requests: f64,
    pub reading: f64,
    pub writing: f64,
    pub waiting: f64,
}

pub fn parse(text: &str) -> Result<StubStatus, String> {
    let bad = || format!("not an nginx stub_status page: {:?}", text.chars().take(80).collect::<String>());
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let active = lines.next().and_then(|l| l.strip_prefix("Active connections:")).ok_or_else(bad)?;
    if lines.next().is_none_or(|l| !l.starts_with("server accepts handled requests")) {
        return Err(bad());
    }
    let counts: Vec<f64> = lines
        .next()
        .ok_or_else(bad)?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [accepts, handled, requests] = counts[..] else { return Err(bad()) };
    let rww: Vec<&str> = lines.next().ok_or_else(bad)?.split_whitespace().collect();
    let field = |name: &str| {
        rww.iter().position(|w| *w == name).and_then(|i| rww.get(i + 1)).and_then(|v| v.parse().ok()).ok_or_else(bad)
    };
    Ok(StubStatus {
        active: active.trim().parse().map_err(|_| bad())?,
        accepts,
        handled,
        requests,
        reading: field("Reading:")?,
        writing: field("Writing:")?,
        waiting: field("Waiting:")?,
    })
}

/// The `nginx_*` samples of `now`; `previous` (requests and the time they
/// were read) gives the request rate. A count that went down (nginx
/// restarted) gives no rate.
pub fn samples(now: &StubStatus, at_unix_ms: i64, previous: Option<(f64, i64)>) -> Vec<Sample> {
    let s = |name: &str, value: f64| Sample { name: name.to_owned(), value, labels: BTreeMap::new(), at_unix_ms };
    let mut out = vec![
        s("nginx_active_connections", now.active),
        s("nginx_accepted_connections_total", now.accepts),
        s("nginx_handled_connections_total", now.handled),
        s("nginx_requests_total", now.requests),
        s("nginx_reading", now.reading),
        s("nginx_writing", now.writing),
        s("nginx_waiting", now.waiting),
    ];
    if let Some((requests, at)) = previous
        && at_unix_ms > at
        && now.requests >= requests
    {
        let seconds = (at_unix_ms - at) as f64 / 1000.0;
        out.push(s("nginx_requests_per_second", (now.requests - requests) / seconds));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As served by nginx 1.22 (note the trailing spaces).
    const PAGE: &str = "Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 31070465 \n\
Reading: 6 Writing: 179 Waiting: 106 \n";

    #[test]
    fn a_real_page() {
        let p = parse(PAGE).expect("parse");
        assert_eq!(
            p,
            StubStatus {
                active: 291.0,
                accepts: 16630948.0,
                handled: 16630948.0,
                requests: 31070465.0,
                reading: 6.0,
                writing: 179.0,
                waiting: 106.0
            }
        );
    }

    #[test]
    fn a_page_of_a_real_nginx() {
        let p = parse(include_str!("testdata/nginx-1.22-stub-status.txt")).expect("parse");
        assert_eq!((p.active, p.accepts, p.handled, p.requests), (1.0, 2.0, 2.0, 2.0));
        assert_eq!((p.reading, p.writing, p.waiting), (0.0, 1.0, 0.0));
    }

    #[test]
    fn the_rate_comes_from_the_previous_collection() {
        let p = parse(PAGE).expect("parse");
        let first = samples(&p, 10_000, None);
        assert_eq!(first.len(), 7);
        assert!(first.iter().all(|s| s.name != "nginx_requests_per_second"));
        let second = samples(&p, 12_000, Some((p.requests - 500.0, 10_000)));
        let rate = second.iter().find(|s| s.name == "nginx_requests_per_second").expect("rate");
        assert_eq!(rate.value, 250.0);
        let restarted = samples(&StubStatus { requests: 3.0, ..p }, 12_000, Some((p.requests, 10_000)));
        assert!(restarted.iter().all(|s| s.name != "nginx_requests_per_second"));
    }

    #[test]
    fn other_pages_are_refused() {
        for bad in
            ["", "<html>Welcome to nginx!</html>", "Active connections: 1\nserver accepts handled requests\n 1 2\n"]
        {
            assert!(parse(bad).unwrap_err().contains("not an nginx stub_status page"), "{bad}");
        }
    }
}
