//! ZooKeeper from the outside, for end-to-end tests: asking servers `srvr` (on
//! this machine's ports, or at container addresses with the `_at` variants), waiting for a
//! quorum, and a client that polls an ensemble through a rolling restart and
//! judges what it saw (never two servers down, each restart only while the
//! whole ensemble served).

use std::io::ErrorKind::ConnectionRefused;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::resp;

/// A server that does not answer a four-letter word within this is not serving.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one server said to `srvr`.
#[derive(Debug, Clone, PartialEq)]
pub enum Srvr {
    /// Nothing listens on its client port.
    Down,
    /// It runs but does not serve: no quorum, or it dropped the connection
    /// (a follower does when its leader goes away).
    NotServing,
    /// It serves clients in this mode (`leader`, `follower`).
    Serving(String),
}

/// `srvr` to the server on 127.0.0.1:`port`.
pub async fn srvr(port: u16) -> Srvr {
    srvr_at(local(port)).await
}

/// `srvr` to the server at `addr`.
pub async fn srvr_at(addr: SocketAddr) -> Srvr {
    match tokio::time::timeout(PROBE_TIMEOUT, resp::four_letter_word_at(addr, "srvr")).await {
        Ok(Ok(text)) => match text.lines().find_map(|l| l.strip_prefix("Mode: ")) {
            Some(mode) => Srvr::Serving(mode.trim().to_owned()),
            None => Srvr::NotServing,
        },
        Ok(Err(e)) if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == Some(ConnectionRefused) => {
            Srvr::Down
        }
        Ok(Err(_)) | Err(_) => Srvr::NotServing,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until the servers on `ports` of 127.0.0.1 are one leader and followers.
pub async fn wait_for_quorum(ports: &[u16], within: Duration, what: &str) {
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| local(*p)).collect();
    wait_for_quorum_at(&addrs, within, what).await
}

/// Waits until the three servers at `addrs` are one leader and two followers.
pub async fn wait_for_quorum_at(addrs: &[SocketAddr], within: Duration, what: &str) {
    crate::eventually(within, what, || async {
        let mut modes = Vec::new();
        for &addr in addrs {
            let Srvr::Serving(mode) = srvr_at(addr).await else { return None };
            modes.push(mode);
        }
        modes.sort();
        (modes == ["follower", "follower", "leader"]).then_some(())
    })
    .await;
}

/// One round of the polling client: per server, whether it was up (accepted
/// the connection) and whether it was serving (in a quorum).
#[derive(Debug)]
pub struct Round {
    pub at: Duration,
    pub up: [bool; 3],
    pub serving: [bool; 3],
}

impl Round {
    pub fn all_serving(&self) -> bool {
        self.serving.iter().all(|s| *s)
    }
}

/// A client asking every server `srvr` about every 100 ms, recording rounds.
pub struct Client {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Round>>,
}

impl Client {
    /// Starts polling the servers on `ports` of 127.0.0.1 and returns once
    /// the first round is recorded.
    pub async fn start(ports: [u16; 3]) -> Client {
        Client::start_at(ports.map(local)).await
    }

    /// Starts polling the servers at `addrs` and returns once the first
    /// round is recorded.
    pub async fn start_at(addrs: [SocketAddr; 3]) -> Client {
        let done = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let done = done.clone();
            async move {
                let start = Instant::now();
                let mut first_tx = Some(first_tx);
                let mut rounds = Vec::new();
                let mut pace = tokio::time::interval(Duration::from_millis(100));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !done.load(Ordering::SeqCst) {
                    pace.tick().await;
                    let replies = futures::future::join_all(addrs.map(srvr_at)).await;
                    rounds.push(Round {
                        at: start.elapsed(),
                        up: std::array::from_fn(|i| replies[i] != Srvr::Down),
                        serving: std::array::from_fn(|i| matches!(replies[i], Srvr::Serving(_))),
                    });
                    if let Some(tx) = first_tx.take() {
                        let _ = tx.send(());
                    }
                }
                rounds
            }
        });
        first_rx.await.expect("the client's first round");
        Client { done, task }
    }

    pub async fn finish(self) -> Vec<Round> {
        self.done.store(true, Ordering::SeqCst);
        self.task.await.expect("client task")
    }
}

/// The rounds in which not every server served, one line each: per server
/// `S` serving, `u` up but not serving, `-` down.
pub fn timeline(rounds: &[Round]) -> String {
    let mut out = String::new();
    for r in rounds.iter().filter(|r| !r.all_serving()) {
        let marks: String = (0..3)
            .map(|i| {
                if r.serving[i] {
                    'S'
                } else if r.up[i] {
                    'u'
                } else {
                    '-'
                }
            })
            .collect();
        out.push_str(&format!("  {:>8.3}s {marks}\n", r.at.as_secs_f64()));
    }
    out
}

/// What is wrong with what the client saw during a rolling restart of three
/// servers, if anything. Each server must have gone down; never two at once;
/// and each must have been taken down only while the whole ensemble served,
/// i.e. after the one before it had rejoined the quorum. (While the leader
/// restarts, the others elect a new one and serve nobody for a moment.)
pub fn rolling_restart_violation(rounds: &[Round]) -> Option<String> {
    if rounds.len() < 10 {
        return Some(format!("the client polled only {} times", rounds.len()));
    }
    if !rounds[0].all_serving() {
        return Some("the ensemble was not serving when the rolling restart began".into());
    }
    if let Some(i) = (0..3).find(|&i| rounds.iter().all(|r| r.up[i])) {
        return Some(format!("the client never saw zk-{} down", i + 1));
    }
    if let Some(r) = rounds.iter().find(|r| r.up.iter().filter(|u| **u).count() < 2) {
        return Some(format!("two servers were down at once at {:?}", r.at));
    }
    // A server's restart is a run of rounds in which it does not serve and
    // is down in some; the round before the run must show all serving.
    for i in 0..3 {
        let mut k = 1;
        while k < rounds.len() {
            if rounds[k].serving[i] {
                k += 1;
                continue;
            }
            let end = rounds[k..].iter().position(|r| r.serving[i]).map_or(rounds.len(), |n| k + n);
            if rounds[k..end].iter().any(|r| !r.up[i]) && !rounds[k - 1].all_serving() {
                return Some(format!(
                    "zk-{} went down at {:?} while the ensemble was not serving",
                    i + 1,
                    rounds[k].at
                ));
            }
            k = end;
        }
    }
    None
}

/// The longest time in which no server served.
pub fn longest_outage(rounds: &[Round]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since = None;
    for r in rounds {
        match (r.serving.iter().any(|s| *s), since) {
            (false, None) => since = Some(r.at),
            (true, Some(s)) => {
                longest = longest.max(r.at - s);
                since = None;
            }
            _ => {}
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds 100 ms apart from marks as `timeline` prints them.
    fn rounds_from(marks: &[&str]) -> Vec<Round> {
        let mut rounds: Vec<Round> = marks
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let m: Vec<char> = m.chars().collect();
                Round {
                    at: Duration::from_millis(100 * k as u64),
                    up: std::array::from_fn(|i| m[i] != '-'),
                    serving: std::array::from_fn(|i| m[i] == 'S'),
                }
            })
            .collect();
        while rounds.len() < 10 {
            rounds.push(Round {
                at: Duration::from_millis(100 * rounds.len() as u64),
                up: [true; 3],
                serving: [true; 3],
            });
        }
        rounds
    }

    #[test]
    fn rolling_restart_checks() {
        let ok = ["SSS", "-SS", "uSS", "SSS", "S-S", "SuS", "SSS", "SSu", "uu-", "SS-", "SSu", "SSS"];
        assert_eq!(rolling_restart_violation(&rounds_from(&ok)), None);
        assert_eq!(longest_outage(&rounds_from(&ok)), Duration::from_millis(100));
        let cases: &[(&[&str], &str)] = &[
            (&["SSS", "-SS", "uSS", "SSS", "S-S", "SSS"], "never saw zk-3 down"),
            (&["SSS", "-SS", "--S", "SSS", "SS-", "SSS"], "two servers were down at once"),
            (&["SSS", "-SS", "uSS", "u-S", "SuS", "SSS", "SS-", "SSS"], "zk-2 went down at 300ms while"),
            (&["uSS", "-SS", "SSS", "S-S", "SSS", "SS-", "SSS"], "not serving when the rolling restart began"),
        ];
        for (marks, why) in cases {
            let got = rolling_restart_violation(&rounds_from(marks)).unwrap_or_default();
            assert!(got.contains(why), "{marks:?}: expected {why:?}, got {got:?}");
        }
    }
}
