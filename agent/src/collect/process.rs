//! Process figures of running roles, read from `/proc` at each heartbeat.
//!
//! A role's process runs in its own process group (the supervisor starts it
//! with `setpgid(0, 0)`), so its figures are those of the group: every live
//! process whose process group id is the role's pid (nginx's workers, a shell
//! script's children), plus the role's process itself should it have left
//! its group. One pass over `/proc/*/stat` serves every role, and happens
//! only while some role runs. CPU use is the growth of the members'
//! `utime + stime` between two heartbeats, so the CPU of a member that exited
//! in between is not counted.

use std::collections::HashMap;
use std::time::Instant;

use super::ProcessMetrics;

/// A running role's process as the supervisor knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningRole {
    pub role_id: String,
    pub pid: u32,
    pub started_at_unix_ms: i64,
    pub restarts: u32,
    pub last_exit_status: i32,
}

/// One process's line of `/proc/PID/stat`, the fields used here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stat {
    pgrp: u32,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    threads: u32,
    rss_pages: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field N is f[N - 3].
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        pgrp: u32::try_from(n(5)?).ok()?,
        cpu_ticks: n(14)?.saturating_add(n(15)?),
        threads: u32::try_from(n(20)?).unwrap_or(u32::MAX),
        rss_pages: n(24)?,
    })
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    cpu_ticks: u64,
    threads: u32,
    rss_pages: u64,
    fds: u32,
    found: bool,
}

impl Totals {
    fn add(&mut self, pid: u32, s: &Stat) {
        self.cpu_ticks = self.cpu_ticks.saturating_add(s.cpu_ticks);
        self.threads = self.threads.saturating_add(s.threads);
        self.rss_pages = self.rss_pages.saturating_add(s.rss_pages);
        self.fds = self.fds.saturating_add(count_fds(pid));
        self.found = true;
    }
}

fn count_fds(pid: u32) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| u32::try_from(d.count()).unwrap_or(u32::MAX)).unwrap_or(0)
}

/// Samples the process groups of running roles; keeps each role's previous
/// CPU ticks to measure CPU use between heartbeats.
#[derive(Debug)]
pub struct ProcessSampler {
    ticks_per_second: f64,
    page_size: u64,
    /// By role: the pid measured, its group's CPU ticks and when.
    previous: HashMap<String, (u32, u64, Instant)>,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessSampler {
    pub fn new() -> Self {
        use nix::unistd::{SysconfVar, sysconf};
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0).unwrap_or(100);
        let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten().filter(|p| *p > 0).unwrap_or(4096);
        ProcessSampler {
            ticks_per_second: ticks as f64,
            page_size: u64::try_from(page).unwrap_or(4096),
            previous: HashMap::new(),
        }
    }

    /// The figures of each role in `running` whose process still exists, by
    /// role id; `now_unix_ms` gives the uptimes.
    pub fn sample(&mut self, running: &[RunningRole], now_unix_ms: i64) -> HashMap<String, ProcessMetrics> {
        self.previous.retain(|role, _| running.iter().any(|r| &r.role_id == role));
        if running.is_empty() {
            return HashMap::new();
        }
        let mut totals: HashMap<u32, Totals> = running.iter().map(|r| (r.pid, Totals::default())).collect();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
                let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_stat(&t))
                else {
                    continue;
                };
                // The group's leader, or the role's process having left its group.
                let group = if totals.contains_key(&stat.pgrp) { stat.pgrp } else { pid };
                if let Some(t) = totals.get_mut(&group) {
                    t.add(pid, &stat);
                }
            }
        }
        let now = Instant::now();
        let mut out = HashMap::new();
        for r in running {
            let Some(t) = totals.get(&r.pid).filter(|t| t.found) else {
                self.previous.remove(&r.role_id);
                continue;
            };
            let uptime_ms = now_unix_ms.saturating_sub(r.started_at_unix_ms).max(0);
            let busy_seconds = |ticks: u64| ticks as f64 / self.ticks_per_second;
            let cpu_percent = match self.previous.get(&r.role_id) {
                Some((pid, ticks, at)) if *pid == r.pid => {
                    let elapsed = now.duration_since(*at).as_secs_f64();
                    if elapsed > 0.0 { busy_seconds(t.cpu_ticks.saturating_sub(*ticks)) / elapsed * 100.0 } else { 0.0 }
                }
                // First sample of this process: its average since it started.
                _ if uptime_ms > 0 => busy_seconds(t.cpu_ticks) / (uptime_ms as f64 / 1000.0) * 100.0,
                _ => 0.0,
            };
            self.previous.insert(r.role_id.clone(), (r.pid, t.cpu_ticks, now));
            out.insert(
                r.role_id.clone(),
                ProcessMetrics {
                    cpu_percent: if cpu_percent.is_finite() { cpu_percent.max(0.0) } else { 0.0 },
                    rss_bytes: t.rss_pages.saturating_mul(self.page_size),
                    threads: t.threads,
                    open_fds: t.fds,
                    uptime_seconds: u64::try_from(uptime_ms / 1000).unwrap_or_default(),
                    restarts: r.restarts,
                    last_exit_status: r.last_exit_status,
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 300 0 0 0 150 25 0 0 20 0 4 0 98765 12345678 2048 \
18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(Stat { pgrp: 1234, cpu_ticks: 175, threads: 4, rss_pages: 2048 }));
        assert_eq!(parse_stat("1 (z) Z 1 1 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_process_group_is_measured_whole() {
        use std::os::unix::process::CommandExt;
        // A shell (the group's leader) with two sleeping children, and a busy child.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30 & while :; do :; done"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        let role = RunningRole {
            role_id: "r".into(),
            pid,
            started_at_unix_ms: super::super::unix_ms_now() - 1000,
            restarts: 2,
            last_exit_status: -9,
        };
        let mut sampler = ProcessSampler::new();
        // Until the shell has started its children (slow on a loaded machine).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let first = loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let s = sampler.sample(std::slice::from_ref(&role), super::super::unix_ms_now());
            if s.get("r").is_some_and(|m| m.threads >= 3) || std::time::Instant::now() > deadline {
                break s;
            }
        };
        std::thread::sleep(std::time::Duration::from_millis(500));
        let second = sampler.sample(std::slice::from_ref(&role), super::super::unix_ms_now());
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        for m in [&first["r"], &second["r"]] {
            assert!(m.threads >= 3, "the shell and its two sleeps: {m:?}");
            assert!(m.open_fds >= 3, "{m:?}");
            assert!(m.rss_bytes > 1024 * 1024, "{m:?}");
            assert!(m.uptime_seconds >= 1, "{m:?}");
            assert_eq!((m.restarts, m.last_exit_status), (2, -9));
        }
        assert!(second["r"].cpu_percent > 20.0, "a busy shell loop: {:?}", second["r"]);
        // A process that is gone has no figures, and its previous sample is forgotten.
        // The shell is reaped; its sleeps die of the SIGKILL soon after (later on a
        // loaded machine), and until then they are the group.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let gone = loop {
            let s = sampler.sample(std::slice::from_ref(&role), super::super::unix_ms_now());
            if s.is_empty() || std::time::Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(gone.is_empty(), "{gone:?}");
        assert!(sampler.previous.is_empty());
        assert!(sampler.sample(&[], 0).is_empty());
    }
}
