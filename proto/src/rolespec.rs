//! The one set of conversions between the role spec (`drover-role-spec`) and its wire form in
//! `drover.agent.v1`, used by the manager to send a role and by the agent to read it (and to
//! persist it in the same encoding).
//!
//! Reading never fails: a 0 duration or threshold means the default of `drover-role-spec`, and a
//! probe this side does not know, or a TCP port out of range, is [`Probe::Unknown`], which is
//! never healthy.

use std::time::Duration;

use drover_role_spec::{
    ConfigCheck, ConfigFile, DEFAULT_CHECK_TIMEOUT, DEFAULT_FAILURE_THRESHOLD, DEFAULT_LOG_MAX_BYTES,
    DEFAULT_LOG_MAX_FILES, DEFAULT_METRICS_INTERVAL, DEFAULT_METRICS_TIMEOUT, DEFAULT_PROBE_INTERVAL,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_STOP_GRACE, HealthCheck, LogFormat, LogSpec, MetricSource, MetricSourceKind, Probe,
    ProcessSpec,
};

use crate::v1;
use crate::v1::health_check;
use crate::v1::metric_source;

/// Milliseconds on the wire, saturated (a role spec never holds 584 million years).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `ms`, or `default` when the wire says 0.
fn millis_or(ms: u64, default: Duration) -> Duration {
    if ms == 0 { default } else { Duration::from_millis(ms) }
}

impl From<&ConfigFile> for v1::ConfigFile {
    fn from(f: &ConfigFile) -> Self {
        v1::ConfigFile { path: f.path.clone(), content: f.content.clone(), sha256: f.sha256.clone(), mode: f.mode }
    }
}

impl From<v1::ConfigFile> for ConfigFile {
    fn from(f: v1::ConfigFile) -> Self {
        ConfigFile { path: f.path, content: f.content, sha256: f.sha256, mode: f.mode }
    }
}

impl From<&ProcessSpec> for v1::ProcessSpec {
    fn from(p: &ProcessSpec) -> Self {
        v1::ProcessSpec {
            program: p.program.clone(),
            args: p.args.clone(),
            env: p.env.clone().into_iter().collect(),
            working_dir: p.working_dir.clone(),
            stop_signal: p.stop_signal.clone(),
            stop_grace_ms: millis(p.stop_grace),
            reload_signal: p.reload_signal.clone(),
            config_check: p.config_check.as_ref().map(v1::ConfigCheck::from),
        }
    }
}

impl From<v1::ProcessSpec> for ProcessSpec {
    fn from(p: v1::ProcessSpec) -> Self {
        ProcessSpec {
            program: p.program,
            args: p.args,
            env: p.env.into_iter().collect(),
            working_dir: p.working_dir,
            stop_signal: p.stop_signal,
            stop_grace: millis_or(p.stop_grace_ms, DEFAULT_STOP_GRACE),
            reload_signal: p.reload_signal,
            config_check: p.config_check.map(ConfigCheck::from),
        }
    }
}

impl From<&ConfigCheck> for v1::ConfigCheck {
    fn from(c: &ConfigCheck) -> Self {
        v1::ConfigCheck { program: c.program.clone(), args: c.args.clone(), timeout_ms: millis(c.timeout) }
    }
}

impl From<v1::ConfigCheck> for ConfigCheck {
    fn from(c: v1::ConfigCheck) -> Self {
        ConfigCheck { program: c.program, args: c.args, timeout: millis_or(c.timeout_ms, DEFAULT_CHECK_TIMEOUT) }
    }
}

impl From<&HealthCheck> for v1::HealthCheck {
    fn from(h: &HealthCheck) -> Self {
        let probe = match &h.probe {
            Probe::Tcp { host, port } => {
                Some(health_check::Probe::Tcp(v1::TcpProbe { host: host.clone(), port: u32::from(*port) }))
            }
            Probe::Http { url, expect_status } => Some(health_check::Probe::Http(v1::HttpProbe {
                url: url.clone(),
                expect_status: u32::from(*expect_status),
            })),
            Probe::Command { program, args } => {
                Some(health_check::Probe::Command(v1::CommandProbe { program: program.clone(), args: args.clone() }))
            }
            Probe::Unknown => None,
        };
        v1::HealthCheck {
            probe,
            interval_ms: millis(h.interval),
            timeout_ms: millis(h.timeout),
            failure_threshold: h.failure_threshold,
        }
    }
}

impl From<v1::HealthCheck> for HealthCheck {
    fn from(h: v1::HealthCheck) -> Self {
        let probe = match h.probe {
            Some(health_check::Probe::Tcp(t)) => match u16::try_from(t.port) {
                Ok(port) => Probe::Tcp { host: t.host, port },
                Err(_) => Probe::Unknown,
            },
            Some(health_check::Probe::Http(p)) => {
                Probe::Http { url: p.url, expect_status: u16::try_from(p.expect_status).unwrap_or(0) }
            }
            Some(health_check::Probe::Command(c)) => Probe::Command { program: c.program, args: c.args },
            None => Probe::Unknown,
        };
        HealthCheck {
            probe,
            interval: millis_or(h.interval_ms, DEFAULT_PROBE_INTERVAL),
            timeout: millis_or(h.timeout_ms, DEFAULT_PROBE_TIMEOUT),
            failure_threshold: if h.failure_threshold == 0 { DEFAULT_FAILURE_THRESHOLD } else { h.failure_threshold },
        }
    }
}

impl From<&MetricSource> for v1::MetricSource {
    fn from(m: &MetricSource) -> Self {
        let source = match &m.kind {
            MetricSourceKind::Redis { host, port, password } => Some(metric_source::Source::Redis(v1::RedisSource {
                host: host.clone(),
                port: u32::from(*port),
                password: password.clone(),
            })),
            MetricSourceKind::Zookeeper { host, port } => Some(metric_source::Source::Zookeeper(v1::ZooKeeperSource {
                host: host.clone(),
                port: u32::from(*port),
            })),
            MetricSourceKind::NginxStubStatus { url } => {
                Some(metric_source::Source::NginxStubStatus(v1::HttpSource { url: url.clone() }))
            }
            MetricSourceKind::Prometheus { url } => {
                Some(metric_source::Source::Prometheus(v1::HttpSource { url: url.clone() }))
            }
            MetricSourceKind::Command { program, args } => {
                Some(metric_source::Source::Command(v1::CommandProbe { program: program.clone(), args: args.clone() }))
            }
            MetricSourceKind::Unknown => None,
        };
        v1::MetricSource { source, interval_ms: millis(m.interval), timeout_ms: millis(m.timeout) }
    }
}

impl From<v1::MetricSource> for MetricSource {
    fn from(m: v1::MetricSource) -> Self {
        let kind = match m.source {
            Some(metric_source::Source::Redis(r)) => match u16::try_from(r.port) {
                Ok(port) => MetricSourceKind::Redis { host: r.host, port, password: r.password },
                Err(_) => MetricSourceKind::Unknown,
            },
            Some(metric_source::Source::Zookeeper(z)) => match u16::try_from(z.port) {
                Ok(port) => MetricSourceKind::Zookeeper { host: z.host, port },
                Err(_) => MetricSourceKind::Unknown,
            },
            Some(metric_source::Source::NginxStubStatus(h)) => MetricSourceKind::NginxStubStatus { url: h.url },
            Some(metric_source::Source::Prometheus(h)) => MetricSourceKind::Prometheus { url: h.url },
            Some(metric_source::Source::Command(c)) => MetricSourceKind::Command { program: c.program, args: c.args },
            None => MetricSourceKind::Unknown,
        };
        MetricSource {
            kind,
            interval: millis_or(m.interval_ms, DEFAULT_METRICS_INTERVAL),
            timeout: millis_or(m.timeout_ms, DEFAULT_METRICS_TIMEOUT),
        }
    }
}

impl From<&LogSpec> for v1::LogSpec {
    fn from(l: &LogSpec) -> Self {
        v1::LogSpec {
            max_bytes: l.max_bytes,
            max_files: l.max_files,
            format: l.format.as_ref().map(|f| v1::LogFormat {
                name: f.name.clone(),
                pattern: f.pattern.clone(),
                time_format: f.time_format.clone(),
                levels: f.levels.clone().into_iter().collect(),
            }),
        }
    }
}

/// 0s read as the defaults; an absent spec (older manager) is `LogSpec::default()`.
impl From<v1::LogSpec> for LogSpec {
    fn from(l: v1::LogSpec) -> Self {
        LogSpec {
            max_bytes: if l.max_bytes == 0 { DEFAULT_LOG_MAX_BYTES } else { l.max_bytes },
            max_files: if l.max_files == 0 { DEFAULT_LOG_MAX_FILES } else { l.max_files },
            format: l.format.filter(|f| !f.pattern.is_empty()).map(|f| LogFormat {
                name: f.name,
                pattern: f.pattern,
                time_format: f.time_format,
                levels: f.levels.into_iter().collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_spec_parts_round_trip() {
        let process = ProcessSpec {
            program: "${PARCELS_ROOT}/nginx/usr/sbin/nginx".into(),
            args: vec!["-c".into(), "${ROLE_DIR}/nginx.conf".into()],
            env: [("A".to_owned(), "1".to_owned())].into(),
            working_dir: "data".into(),
            stop_signal: "SIGQUIT".into(),
            stop_grace: Duration::from_millis(2500),
            reload_signal: "SIGHUP".into(),
            config_check: Some(ConfigCheck {
                program: "nginx".into(),
                args: vec!["-t".into()],
                timeout: Duration::from_secs(7),
            }),
        };
        assert_eq!(ProcessSpec::from(v1::ProcessSpec::from(&process)), process);
        let file = ConfigFile { path: "a".into(), content: b"x".to_vec(), sha256: "h".into(), mode: 0o600 };
        assert_eq!(ConfigFile::from(v1::ConfigFile::from(&file)), file);
        for probe in [
            Probe::Tcp { host: "h".into(), port: 6379 },
            Probe::Http { url: "http://h/".into(), expect_status: 204 },
            Probe::Command { program: "p".into(), args: vec!["a".into()] },
            Probe::Unknown,
        ] {
            let hc = HealthCheck {
                probe,
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                failure_threshold: 4,
            };
            assert_eq!(HealthCheck::from(v1::HealthCheck::from(&hc)), hc);
        }
        for kind in [
            MetricSourceKind::Redis { host: "h".into(), port: 6379, password: "pw".into() },
            MetricSourceKind::Zookeeper { host: "".into(), port: 2181 },
            MetricSourceKind::NginxStubStatus { url: "http://127.0.0.1:8080/nginx_status".into() },
            MetricSourceKind::Prometheus { url: "http://127.0.0.1:9100/metrics".into() },
            MetricSourceKind::Command { program: "p".into(), args: vec!["a".into()] },
            MetricSourceKind::Unknown,
        ] {
            let m = MetricSource { kind, interval: Duration::from_secs(15), timeout: Duration::from_secs(2) };
            assert_eq!(MetricSource::from(v1::MetricSource::from(&m)), m);
        }
    }

    #[test]
    fn log_specs_round_trip_and_default() {
        let spec = LogSpec {
            max_bytes: 1 << 20,
            max_files: 3,
            format: Some(LogFormat {
                name: "redis".into(),
                pattern: r"^\d+:\w (?P<time>\d+ \w+ \d+ [\d:.]+) (?P<level>[.\-*#])".into(),
                time_format: "%d %b %Y %H:%M:%S%.3f".into(),
                levels: [("#".to_owned(), "warn".to_owned())].into(),
            }),
        };
        assert_eq!(LogSpec::from(v1::LogSpec::from(&spec)), spec);
        let zero = LogSpec::from(v1::LogSpec::default());
        assert_eq!((zero.max_bytes, zero.max_files, zero.format), (DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES, None));
    }

    #[test]
    fn metric_sources_default_their_durations_and_hide_passwords() {
        let m = MetricSource::from(v1::MetricSource {
            source: Some(metric_source::Source::Redis(v1::RedisSource {
                host: String::new(),
                port: 70000,
                password: String::new(),
            })),
            ..v1::MetricSource::default()
        });
        assert_eq!(m.kind, MetricSourceKind::Unknown, "a port out of range is no source");
        assert_eq!((m.interval, m.timeout), (DEFAULT_METRICS_INTERVAL, DEFAULT_METRICS_TIMEOUT));
        let shown = format!("{:?}", MetricSourceKind::Redis { host: "h".into(), port: 1, password: "s3cret".into() });
        assert!(!shown.contains("s3cret") && shown.contains("set"), "{shown}");
    }

    #[test]
    fn zero_and_out_of_range_wire_values_get_safe_defaults() {
        let p = ProcessSpec::from(v1::ProcessSpec {
            config_check: Some(v1::ConfigCheck { program: "p".into(), args: vec![], timeout_ms: 0 }),
            ..v1::ProcessSpec::default()
        });
        assert_eq!(p.stop_grace, DEFAULT_STOP_GRACE);
        assert_eq!(p.config_check.map(|c| c.timeout), Some(DEFAULT_CHECK_TIMEOUT));
        let hc = HealthCheck::from(v1::HealthCheck {
            probe: Some(health_check::Probe::Tcp(v1::TcpProbe { host: "h".into(), port: 70000 })),
            ..v1::HealthCheck::default()
        });
        assert_eq!(hc.probe, Probe::Unknown);
        assert_eq!(
            (hc.interval, hc.timeout, hc.failure_threshold),
            (DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT, DEFAULT_FAILURE_THRESHOLD)
        );
    }
}
