//! Reading role logs for the manager (tail, window, limit, follow across a
//! rotation) and diagnostics archives (redaction, byte share), on real files.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use drover_agent::diagnostics::{self, DiagnosticsRequest, HostState, RedactionRule};
use drover_agent::files::{self, LogRotation};
use drover_agent::journal::{ExitRecord, Journal};
use drover_agent::logs::{self, Gone, Level, LineParser, LineSink, LogLine, LogRequest, Stream, Zone};
use drover_agent::roles::{ConfigFile, HealthCheck, LogFormat, LogSpec, Probe, RoleSpec, RoleStatus};

const WAIT: Duration = Duration::from_secs(10);

fn redis_format() -> LogFormat {
    LogFormat {
        name: "redis".into(),
        pattern: r"^\d+:[XCSM] (?P<time>\d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}) (?P<level>[.\-*#])".into(),
        time_format: "%d %b %Y %H:%M:%S%.3f".into(),
        levels: [(".", "debug"), ("-", "info"), ("*", "info"), ("#", "warn")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

fn zookeeper_format() -> LogFormat {
    LogFormat {
        name: "zookeeper".into(),
        pattern: r"^(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) \[myid:\d*\] - (?P<level>[A-Z]+)".into(),
        time_format: "%Y-%m-%d %H:%M:%S,%3f".into(),
        levels: Default::default(),
    }
}

fn nginx_format() -> LogFormat {
    LogFormat {
        name: "nginx".into(),
        pattern: r"^(?P<time>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>\w+)\]".into(),
        time_format: "%Y/%m/%d %H:%M:%S".into(),
        levels: [("notice", "info"), ("crit", "error")].into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
    }
}

/// 2026-12-04T03:18:39Z in unix ms.
const T0: i64 = 1_796_354_319_000;

#[test]
fn redis_zookeeper_and_nginx_lines_parse() {
    let redis = LineParser::new(&redis_format()).expect("redis");
    let h = redis.parse(b"1:M 04 Dec 2026 03:18:39.123 * Ready to accept connections tcp").expect("match");
    assert_eq!((h.time_unix_ms, h.level), (Some(T0 + 123), Some(Level::Info)));
    let h = redis.parse(b"1:M 04 Dec 2026 03:18:40.000 # Warning: no config file").expect("match");
    assert_eq!((h.time_unix_ms, h.level), (Some(T0 + 1000), Some(Level::Warn)));
    assert!(redis.parse(b"  a continuation").is_none());

    let zk = LineParser::new(&zookeeper_format()).expect("zk");
    let h =
        zk.parse(b"2026-12-04 03:18:39,123 [myid:1] - INFO  [main:o.a.z.s.ZooKeeperServer@123] - text").expect("match");
    assert_eq!((h.time_unix_ms, h.level), (Some(T0 + 123), Some(Level::Info)));
    let h = zk.parse(b"2026-12-04 03:18:39,123 [myid:] - WARN  [x] - y").expect("match");
    assert_eq!(h.level, Some(Level::Warn));

    let nginx = LineParser::new(&nginx_format()).expect("nginx");
    let h = nginx.parse(b"2026/12/04 03:18:39 [error] 12#12: *1 text").expect("match");
    assert_eq!((h.time_unix_ms, h.level), (Some(T0), Some(Level::Error)));
    let h = nginx.parse(b"2026/12/04 03:18:39 [notice] 1#1: start").expect("match");
    assert_eq!(h.level, Some(Level::Info));

    let bad = LogFormat { name: "x".into(), pattern: "(".into(), ..LogFormat::default() };
    let err = LineParser::new(&bad).expect_err("bad pattern");
    assert!(err.contains("\"x\"") && err.contains("does not compile"), "{err}");
}

#[test]
fn times_without_an_offset_are_read_in_the_host_zone() {
    // Redis writes its local time: on a host at UTC+1, 04:18:39 is 03:18:39Z.
    let plus_one = chrono::FixedOffset::east_opt(3600).expect("offset");
    let redis = LineParser::with_zone(&redis_format(), Zone::Fixed(plus_one)).expect("redis");
    let h = redis.parse(b"1:M 04 Dec 2026 04:18:39.000 * Ready").expect("match");
    assert_eq!(h.time_unix_ms, Some(T0));
    // A time with its own offset keeps it, whatever the zone.
    let iso = LogFormat {
        name: "iso".into(),
        pattern: r"^(?P<time>\S+) (?P<level>\w+)".into(),
        time_format: "%Y-%m-%dT%H:%M:%S%.f%:z".into(),
        levels: Default::default(),
    };
    let p = LineParser::with_zone(&iso, Zone::Fixed(plus_one)).expect("iso");
    assert_eq!(p.parse(b"2026-12-04T03:18:39.000+00:00 INFO x").and_then(|h| h.time_unix_ms), Some(T0));
    // A bad time format is refused when the parser is made.
    let bad = LogFormat { time_format: "%Q".into(), ..iso };
    assert!(LineParser::new(&bad).expect_err("bad time format").contains("time format"));
}

fn role(id: &str, format: Option<LogFormat>) -> RoleSpec {
    RoleSpec {
        role_id: id.into(),
        name: format!("{id}-name"),
        service: "prod/cache".into(),
        role_type: "redis".into(),
        log: LogSpec { max_bytes: 0, max_files: 3, format },
        ..RoleSpec::default()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// `n` Redis lines, one a second from `start` seconds after T0.
fn redis_lines(start: i64, n: i64, word: &str) -> String {
    (start..start + n)
        .map(|i| {
            let t = chrono::DateTime::from_timestamp_millis(T0 + i * 1000).expect("time");
            let level = if i % 10 == 0 { '#' } else { '*' };
            format!("1:M {} {level} {word} {i}\n", t.format("%d %b %Y %H:%M:%S%.3f"))
        })
        .collect()
}

/// A role with rotated stdout copies: .2 has 0..10, .1 has 10..20, current 20..30.
fn rotated_role(data: &Path) -> RoleSpec {
    let logs = data.join("roles/r1/logs");
    write(&logs.join("stdout.log.2"), &redis_lines(0, 10, "line"));
    write(&logs.join("stdout.log.1"), &redis_lines(10, 10, "line"));
    write(&logs.join("stdout.log"), &(redis_lines(20, 10, "line") + "   continued text\n"));
    write(&logs.join("stderr.log"), "oops on stderr\n");
    role("r1", Some(redis_format()))
}

fn ask(data: &Path, roles: &[RoleSpec], req: LogRequest) -> (Vec<LogLine>, logs::ReplyEnd) {
    let mut lines = Vec::new();
    let end = logs::answer(&req, Some(data), roles, &mut lines, || false);
    (lines, end)
}

fn texts(lines: &[LogLine]) -> Vec<String> {
    lines.iter().map(|l| l.text.rsplit(' ').next().unwrap_or_default().to_owned()).collect()
}

#[test]
fn tail_reads_across_rotated_files_oldest_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let roles = [rotated_role(tmp.path())];
    let req = LogRequest { role_ids: vec!["r1".into()], streams: vec![Stream::Stdout], tail: 13, ..Default::default() };
    let (lines, end) = ask(tmp.path(), &roles, req);
    assert_eq!(end.error, "");
    assert!(!end.truncated);
    let got = texts(&lines);
    assert_eq!(got.len(), 13, "{got:?}");
    assert_eq!(got[0], "18");
    assert_eq!(got[11], "29");
    assert_eq!(lines[0].file, "logs/stdout.log.1");
    assert_eq!(lines[0].line_number, 9);
    let cont = &lines[12];
    assert_eq!(
        (cont.file.as_str(), cont.line_number, cont.text.as_str()),
        ("logs/stdout.log", 11, "   continued text")
    );
    assert_eq!(cont.time_unix_ms, T0 + 29_000, "a continuation inherits the time of its line");
    assert_eq!(cont.level, Some(Level::Info));
    assert!(end.scanned_bytes > 0);
}

#[test]
fn the_window_level_and_pattern_select_lines_and_unknown_roles_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let roles = [rotated_role(tmp.path())];
    let req = LogRequest {
        role_ids: vec!["r1".into(), "nope".into()],
        since_unix_ms: T0 + 5_000,
        until_unix_ms: T0 + 25_000,
        streams: vec![Stream::Stdout],
        ..Default::default()
    };
    let (lines, end) = ask(tmp.path(), &roles, req.clone());
    let got = texts(&lines);
    assert_eq!(got.first().map(String::as_str), Some("5"));
    assert_eq!(got.last().map(String::as_str), Some("24"));
    assert_eq!(got.len(), 20);
    assert!(end.error.contains("unknown role nope"), "{}", end.error);

    let warn = LogRequest { min_level: "warn".into(), since_unix_ms: 0, until_unix_ms: 0, ..req.clone() };
    assert_eq!(texts(&ask(tmp.path(), &roles, warn).0), ["0", "10", "20"]);
    let grep = LogRequest { pattern: r"line 1\d$".into(), since_unix_ms: 0, until_unix_ms: 0, ..req.clone() };
    assert_eq!(ask(tmp.path(), &roles, grep).0.len(), 10);
    let bad = LogRequest { pattern: "(".into(), ..req.clone() };
    let (none, end) = ask(tmp.path(), &roles, bad);
    assert!(none.is_empty() && end.error.contains("does not compile"), "{}", end.error);
    let level = LogRequest { min_level: "loud".into(), ..req };
    assert!(ask(tmp.path(), &roles, level).1.error.contains("unknown level"));

    // Without a format, lines take their file's modification time.
    let all = LogRequest { role_ids: vec!["r1".into()], streams: vec![Stream::Stderr], ..Default::default() };
    let (lines, _) = ask(tmp.path(), &[role("r1", None)], all);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].stream, Stream::Stderr);
    assert!(lines[0].time_unix_ms > T0 - 400 * 86_400_000, "mtime: {}", lines[0].time_unix_ms);
}

#[test]
fn the_limit_truncates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let roles = [rotated_role(tmp.path())];
    let req = LogRequest { role_ids: vec!["r1".into()], limit: 7, ..Default::default() };
    let (lines, end) = ask(tmp.path(), &roles, req);
    assert_eq!(texts(&lines), ["0", "1", "2", "3", "4", "5", "6"]);
    assert!(end.truncated);
}

#[test]
fn a_last_line_without_newline_is_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(&tmp.path().join("roles/r1/logs/stdout.log"), "first\nstill being written");
    let req = LogRequest { role_ids: vec!["r1".into()], ..Default::default() };
    let (lines, _) = ask(tmp.path(), &[role("r1", None)], req);
    let got: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(got, ["first", "still being written"]);
}

#[test]
fn batches_stay_small_over_a_big_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("roles/r1/logs/stdout.log");
    write(&path, &redis_lines(0, 3000, "many"));
    struct Count(Vec<usize>);
    impl LineSink for Count {
        fn send(&mut self, lines: Vec<LogLine>) -> Result<(), Gone> {
            self.0.push(lines.len());
            Ok(())
        }
    }
    let mut sink = Count(Vec::new());
    let req = LogRequest { role_ids: vec!["r1".into()], ..Default::default() };
    let end = logs::answer(&req, Some(tmp.path()), &[role("r1", Some(redis_format()))], &mut sink, || false);
    assert!(!end.truncated);
    assert_eq!(sink.0.iter().sum::<usize>(), 3000);
    assert!(sink.0.iter().all(|n| *n <= logs::BATCH_LINES), "{:?}", sink.0);
}

#[test]
fn a_waiting_batch_is_sent_after_the_batch_delay_not_only_when_full() {
    let (tx, rx) = mpsc::channel();
    let mut sink = ChannelSink(tx);
    let mut batcher = logs::Batcher::new(&mut sink, 10);
    let line = LogLine {
        role_id: "r1".into(),
        file: "logs/stdout.log".into(),
        line_number: 1,
        time_unix_ms: T0,
        stream: Stream::Stdout,
        level: None,
        text: "a sparse match".into(),
    };
    batcher.push(line.clone()).expect("push");
    batcher.poll().expect("poll");
    assert!(rx.try_recv().is_err(), "a fresh batch waits for more lines");
    std::thread::sleep(logs::BATCH_DELAY);
    batcher.poll().expect("poll");
    assert_eq!(rx.try_recv().ok(), Some(line), "the line waited its delay and went alone");
}

struct ChannelSink(mpsc::Sender<LogLine>);

impl LineSink for ChannelSink {
    fn send(&mut self, lines: Vec<LogLine>) -> Result<(), Gone> {
        for l in lines {
            self.0.send(l).map_err(|_| Gone)?;
        }
        Ok(())
    }
}

fn next_line(rx: &mpsc::Receiver<LogLine>) -> LogLine {
    rx.recv_timeout(WAIT).expect("a line within the wait")
}

#[test]
fn follow_sees_new_lines_and_survives_rotation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().to_path_buf();
    let dir = data.join("roles/r1");
    let (mut out, _err) = files::open_logs(&dir).expect("open");
    writeln!(out, "old 1").expect("write");
    let roles = vec![role("r1", None)];
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let req =
        LogRequest { role_ids: vec!["r1".into()], streams: vec![Stream::Stdout], follow: true, ..Default::default() };
    let reader = std::thread::spawn(move || {
        let mut sink = ChannelSink(tx);
        logs::answer(&req, Some(&data), &roles, &mut sink, || stop_rx.try_recv().is_ok())
    });
    assert_eq!(next_line(&rx).text, "old 1");
    writeln!(out, "new 2").expect("write");
    let l = next_line(&rx);
    assert_eq!((l.text.as_str(), l.line_number), ("new 2", 2));
    // Written just before a rotation, then the copy-and-truncate, then after.
    writeln!(out, "before rotation 3").expect("write");
    assert!(files::rotate_log(&dir, LogRotation { max_bytes: 1, keep: 2 }).expect("rotate"));
    writeln!(out, "after rotation").expect("write");
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 2 && Instant::now() < deadline {
        seen.push(next_line(&rx));
    }
    let got: Vec<(&str, &str)> = seen.iter().map(|l| (l.text.as_str(), l.file.as_str())).collect();
    // The rotation may come before the poll saw line 3 (then it is read from
    // the copy) or after; either way both lines arrive once, in order.
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), ["before rotation 3", "after rotation"], "{got:?}");
    assert_eq!(seen[1].line_number, 1, "the new file starts over");
    let _ = stop_tx.send(());
    let end = reader.join().expect("reader");
    assert_eq!(end.error, "");
}

#[test]
fn a_gone_reader_stops_following() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().to_path_buf();
    write(&data.join("roles/r1/logs/stdout.log"), "x\n");
    let (tx, rx) = mpsc::channel();
    let req = LogRequest { role_ids: vec!["r1".into()], follow: true, ..Default::default() };
    let reader = std::thread::spawn(move || {
        let mut sink = ChannelSink(tx.clone());
        logs::answer(&req, Some(&data), &[role("r1", None)], &mut sink, || {
            tx.send(LogLine {
                role_id: String::new(),
                file: String::new(),
                line_number: 0,
                time_unix_ms: 0,
                stream: Stream::Agent,
                level: None,
                text: "probe".into(),
            })
            .is_err()
        })
    });
    assert_eq!(next_line(&rx).text, "x");
    drop(rx);
    let end = reader.join().expect("the reader ends once nobody reads");
    assert_eq!(end.error, "");
}

fn untar(bytes: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("read");
        out.push((path, text));
    }
    out
}

fn diag_host(data: &Path) -> HostState {
    let mut spec = rotated_role(data);
    spec.files = vec![ConfigFile { path: "redis.conf".into(), content: vec![], sha256: String::new(), mode: 0 }];
    spec.health_checks = vec![
        HealthCheck {
            probe: Probe::Tcp { host: String::new(), port: 6379 },
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
        },
        HealthCheck {
            probe: Probe::Command { program: "redis-cli".into(), args: vec!["ping".into()] },
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            failure_threshold: 1,
        },
    ];
    let journal = Journal::default();
    journal.exited(
        "r1",
        ExitRecord { at_unix_ms: T0, code: -9, description: "was killed by signal 9".into(), uptime_ms: Some(4000) },
    );
    journal.checks_started("r1", 2);
    journal.checked("r1", 0, T0 + 5000, &Err("connect 127.0.0.1:6379: connection refused".into()));
    write(
        &data.join("roles/r1/redis.conf"),
        "port 6379\nrequirepass hunter2secret\nmasterauth hunter2secret\nreplica-of redis://admin:pa55w0rd@db:6379\n",
    );
    let logs = data.join("roles/r1/logs");
    write(&logs.join("stderr.log"), "auth failed for hunter2secret\n");
    HostState {
        data_dir: Some(data.to_path_buf()),
        roles: vec![spec],
        statuses: vec![RoleStatus {
            role_id: "r1".into(),
            pid: std::process::id(),
            restart_count: 2,
            ..Default::default()
        }],
        facts: serde_json::json!({"hostname": "h1"}),
        metrics: serde_json::json!({"host": {}}),
        journal: journal.snapshot(),
    }
}

fn diag_request() -> DiagnosticsRequest {
    DiagnosticsRequest {
        request_id: "d1".into(),
        role_ids: vec!["r1".into()],
        secrets: vec!["hunter2secret".into()],
        rules: vec![RedactionRule {
            name: "password-in-url".into(),
            pattern: r"://[^:/@\s]+:(?P<secret>[^@\s]+)@".into(),
        }],
        ..Default::default()
    }
}

#[test]
fn diagnostics_archive_is_redacted_and_has_its_manifest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = diag_host(tmp.path());
    let mut chunks = Vec::new();
    let end = diagnostics::build(&diag_request(), &host, |c| {
        chunks.push(c);
        true
    });
    assert_eq!(end.error, "");
    let bytes: Vec<u8> = chunks.concat();
    let entries = untar(&bytes);
    let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "host/facts.json",
        "host/metrics.json",
        "roles/r1/role.json",
        "roles/r1/process.json",
        "roles/r1/health.json",
        "roles/r1/config/redis.conf",
        "roles/r1/logs/stdout.log",
        "roles/r1/logs/stdout.log.2",
        "roles/r1/logs/stderr.log",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for (path, text) in &entries {
        assert!(!text.contains("hunter2secret") && !text.contains("pa55w0rd"), "{path} leaks: {text}");
    }
    let conf = &entries.iter().find(|(p, _)| p == "roles/r1/config/redis.conf").expect("conf").1;
    assert!(conf.contains("requirepass [REDACTED]") && conf.contains("redis://admin:[REDACTED]@db"), "{conf}");
    let process: serde_json::Value =
        serde_json::from_str(&entries.iter().find(|(p, _)| p == "roles/r1/process.json").expect("p").1).expect("json");
    assert_eq!(process["restarts"], 2);
    let exits = process["last_exits"].as_array().expect("last_exits");
    assert_eq!(exits.len(), 1, "{process}");
    assert_eq!((exits[0]["exit_status"].as_i64(), exits[0]["uptime_ms"].as_i64()), (Some(-9), Some(4000)));
    assert_eq!(exits[0]["at"], "2026-12-04T03:18:39.000Z");
    let health: serde_json::Value =
        serde_json::from_str(&entries.iter().find(|(p, _)| p == "roles/r1/health.json").expect("h").1).expect("json");
    let checks = health["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 2, "{health}");
    assert_eq!(checks[0]["latest"]["ok"], false, "{health}");
    assert_eq!(checks[0]["latest"]["consecutive_failures"], 1);
    assert!(checks[0]["latest"]["error"].as_str().is_some_and(|e| e.contains("connection refused")), "{health}");
    assert_eq!(checks[1]["latest"], serde_json::Value::Null, "not run yet: {health}");
    assert!(process["command_line"].as_str().is_some_and(|c| !c.is_empty()), "{process}");
    let manifest: serde_json::Value = serde_json::from_str(&end.manifest_json).expect("manifest");
    assert_eq!(manifest["redactions"]["secret-values"], 3, "{manifest}");
    assert_eq!(manifest["redactions"]["password-in-url"], 1, "{manifest}");
    assert_eq!(manifest["bytes"], bytes.len() as u64);
    assert_eq!(manifest["truncated"], false);
    assert!(manifest["files"].as_array().is_some_and(|f| f.iter().any(|f| f["path"] == "roles/r1/config/redis.conf")));
}

#[test]
fn diagnostics_respect_the_byte_share() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = diag_host(tmp.path());
    // Logs that do not compress much and do not all fit.
    let noise: String = (0..4000).map(|i| format!("{:x}\n", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
    write(&tmp.path().join("roles/r1/logs/stdout.log.3"), &noise);
    let mut req = diag_request();
    req.max_bytes = 40_000;
    let mut chunks = Vec::new();
    let end = diagnostics::build(&req, &host, |c| {
        chunks.push(c);
        true
    });
    let bytes = chunks.concat();
    assert!(bytes.len() as u64 <= req.max_bytes, "{} bytes", bytes.len());
    let manifest: serde_json::Value = serde_json::from_str(&end.manifest_json).expect("manifest");
    assert!(end.truncated);
    let skipped = manifest["skipped"].as_array().expect("skipped");
    assert!(skipped.iter().any(|s| s["reason"] == "byte share used"), "{manifest}");
    // The newest log, bigger than what was left, went in with its newest whole lines.
    let kept = skipped
        .iter()
        .find(|s| s["what"] == "roles/r1/logs/stdout.log.3")
        .and_then(|s| s["reason"].as_str())
        .unwrap_or_default();
    assert!(kept.starts_with("byte share used: kept the newest "), "{manifest}");
    let entries = untar(&bytes);
    let tail = &entries.iter().find(|(p, _)| p == "roles/r1/logs/stdout.log.3").expect("the newest log").1;
    assert!(tail.len() > 10_000 && tail.len() < noise.len(), "{} bytes kept", tail.len());
    assert!(noise.ends_with(tail.as_str()) && noise[..noise.len() - tail.len()].ends_with('\n'), "whole lines");

    let bad = DiagnosticsRequest { rules: vec![RedactionRule { name: "r".into(), pattern: "(".into() }], ..req };
    let end = diagnostics::build(&bad, &host, |_| true);
    assert!(end.error.contains("redaction rule \"r\""), "{}", end.error);
}
