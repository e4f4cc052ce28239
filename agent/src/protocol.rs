//! The agent's side of one `Session` stream as a plain state machine:
//! `handle(now, Event) -> Vec<Effect>`. It decides what to send and when, and
//! when the session is dead; the async driver in `session` does the I/O, samples
//! metrics, persists state and feeds events back. Keeping time and I/O out makes
//! every rule here testable in microseconds.
//!
//! Rules:
//! - the agent opens with `Hello` and waits for `Welcome` for at most the
//!   welcome timeout;
//! - after `Welcome` it sends a `Heartbeat` at once and then every heartbeat
//!   interval the manager announced, numbering them 1, 2, 3, ...;
//! - `Ping` is answered with `Pong`, `HeartbeatAck` gives a round-trip time,
//!   `DesiredState` is recorded as applied and answered with `StatusReport`:
//!   at once by an agent without a supervisor; by one with a supervisor, once
//!   the supervisor has taken it in (the driver's `RolesChanged`), so that one
//!   report carries both the generation and what it did to the roles, instead
//!   of one report before the files are written and another after;
//! - a change of the roles' observed state (driver event `RolesChanged`) is
//!   reported with a `StatusReport` once the session is established;
//! - messages the agent does not understand are ignored, but any message proves
//!   the manager alive: three heartbeat intervals without one end the session.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::parcels::ParcelSpec;
use crate::roles::RoleSpec;

/// Used when the manager announces no heartbeat interval.
pub(crate) const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Bounds on the heartbeat interval the manager may ask for.
pub(crate) const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);
pub(crate) const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(600);
/// The session is dead after this many heartbeat intervals without a message.
pub(crate) const SILENT_INTERVALS: u32 = 3;
/// Heartbeats remembered for round-trip times; older ones are forgotten.
const MAX_IN_FLIGHT: usize = 32;

/// The manager's `Welcome`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WelcomeInfo {
    pub host_id: String,
    pub heartbeat_interval_ms: u64,
    pub server_time_unix_ms: i64,
    pub manager_version: String,
}

/// A message from the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    Welcome(WelcomeInfo),
    DesiredState {
        generation: u64,
        roles: Vec<RoleSpec>,
        parcels: Vec<ParcelSpec>,
    },
    Ping {
        nonce: u64,
    },
    HeartbeatAck {
        seq: u64,
    },
    /// A message kind this agent does not know (a newer manager's).
    Unknown,
}

/// A message to the manager; the driver fills in facts and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outbound {
    Hello { applied_generation: u64 },
    Heartbeat { seq: u64 },
    Pong { nonce: u64 },
    Status { applied_generation: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Received(Inbound),
    /// The roles' observed state changed; report it if the session is up.
    RolesChanged,
    /// The deadline returned by [`Protocol::deadline`] may have passed.
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Send(Outbound),
    /// The manager welcomed us; heartbeats run at `heartbeat_interval`.
    Established {
        welcome: WelcomeInfo,
        heartbeat_interval: Duration,
    },
    /// Heartbeat `seq` was acknowledged after `rtt`.
    Acked {
        seq: u64,
        rtt: Duration,
    },
    /// Desired state `generation` is now the applied one; `changed` if it differs
    /// from the previous one (and so must be persisted).
    Applied {
        generation: u64,
        changed: bool,
        roles: Vec<RoleSpec>,
        parcels: Vec<ParcelSpec>,
    },
    /// The session is dead; no further effects follow.
    Close(String),
}

#[derive(Debug)]
pub(crate) struct Protocol {
    welcome_timeout: Duration,
    established: Option<Established>,
    /// When the session is declared dead unless a message arrives.
    liveness_deadline: Instant,
    applied_generation: u64,
    /// `DesiredState` is answered by the driver's `RolesChanged`, not at once.
    answer_later: bool,
    seq: u64,
    in_flight: VecDeque<(u64, Instant)>,
    closed: bool,
}

#[derive(Debug)]
struct Established {
    at: Instant,
    interval: Duration,
    next_heartbeat: Instant,
}

impl Protocol {
    /// Starts a session at `now`; the effects send the `Hello`. With
    /// `answer_later` (an agent that supervises roles) a `DesiredState` is not
    /// answered at once: the driver sends `RolesChanged` once the supervisor
    /// has taken it in.
    pub(crate) fn new(
        now: Instant,
        applied_generation: u64,
        welcome_timeout: Duration,
        answer_later: bool,
    ) -> (Self, Vec<Effect>) {
        let protocol = Protocol {
            welcome_timeout,
            established: None,
            liveness_deadline: now + welcome_timeout,
            applied_generation,
            answer_later,
            seq: 0,
            in_flight: VecDeque::new(),
            closed: false,
        };
        let hello = Effect::Send(Outbound::Hello { applied_generation });
        (protocol, vec![hello])
    }

    /// The next time [`Event::Tick`] must be delivered.
    pub(crate) fn deadline(&self) -> Instant {
        match &self.established {
            Some(e) => e.next_heartbeat.min(self.liveness_deadline),
            None => self.liveness_deadline,
        }
    }

    /// When the manager's `Welcome` arrived, if it did.
    pub(crate) fn established_at(&self) -> Option<Instant> {
        self.established.as_ref().map(|e| e.at)
    }

    #[cfg(test)]
    pub(crate) fn applied_generation(&self) -> u64 {
        self.applied_generation
    }

    pub(crate) fn handle(&mut self, now: Instant, event: Event) -> Vec<Effect> {
        if self.closed {
            return Vec::new();
        }
        match event {
            Event::Received(msg) => self.received(now, msg),
            Event::Tick => self.tick(now),
            Event::RolesChanged if self.established.is_some() => {
                vec![Effect::Send(Outbound::Status { applied_generation: self.applied_generation })]
            }
            Event::RolesChanged => Vec::new(),
        }
    }

    fn received(&mut self, now: Instant, msg: Inbound) -> Vec<Effect> {
        if let Some(e) = &self.established {
            self.liveness_deadline = now + e.interval * SILENT_INTERVALS;
        }
        match msg {
            Inbound::Welcome(welcome) => self.welcome(now, welcome),
            Inbound::Ping { nonce } => vec![Effect::Send(Outbound::Pong { nonce })],
            Inbound::HeartbeatAck { seq } => {
                let Some(pos) = self.in_flight.iter().position(|(s, _)| *s == seq) else {
                    return Vec::new();
                };
                let sent = self.in_flight[pos].1;
                self.in_flight.drain(..=pos);
                vec![Effect::Acked { seq, rtt: now.saturating_duration_since(sent) }]
            }
            Inbound::DesiredState { generation, roles, parcels } => {
                let changed = generation != self.applied_generation;
                self.applied_generation = generation;
                let mut effects = vec![Effect::Applied { generation, changed, roles, parcels }];
                if !self.answer_later {
                    effects.push(Effect::Send(Outbound::Status { applied_generation: generation }));
                }
                effects
            }
            Inbound::Unknown => Vec::new(),
        }
    }

    fn welcome(&mut self, now: Instant, welcome: WelcomeInfo) -> Vec<Effect> {
        let interval = heartbeat_interval(welcome.heartbeat_interval_ms);
        self.liveness_deadline = now + interval * SILENT_INTERVALS;
        if let Some(e) = &mut self.established {
            // A repeated welcome may change the pace, nothing else.
            e.interval = interval;
            e.next_heartbeat = e.next_heartbeat.min(now + interval);
            return Vec::new();
        }
        self.established = Some(Established { at: now, interval, next_heartbeat: now + interval });
        vec![Effect::Established { welcome, heartbeat_interval: interval }, Effect::Send(self.heartbeat(now))]
    }

    fn tick(&mut self, now: Instant) -> Vec<Effect> {
        if now >= self.liveness_deadline {
            self.closed = true;
            let reason = match &self.established {
                Some(e) => format!(
                    "no message from the manager for {} ({SILENT_INTERVALS} heartbeat intervals)",
                    humantime::format_duration(e.interval * SILENT_INTERVALS)
                ),
                None => {
                    format!("no welcome from the manager within {}", humantime::format_duration(self.welcome_timeout))
                }
            };
            return vec![Effect::Close(reason)];
        }
        let Some(e) = &mut self.established else {
            return Vec::new();
        };
        if now < e.next_heartbeat {
            return Vec::new();
        }
        // Stay on the original cadence, but never send a burst after a stall.
        e.next_heartbeat += e.interval;
        if e.next_heartbeat <= now {
            e.next_heartbeat = now + e.interval;
        }
        vec![Effect::Send(self.heartbeat(now))]
    }

    fn heartbeat(&mut self, now: Instant) -> Outbound {
        self.seq += 1;
        self.in_flight.push_back((self.seq, now));
        if self.in_flight.len() > MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        Outbound::Heartbeat { seq: self.seq }
    }
}

/// The heartbeat interval to use for the one the manager announced.
pub(crate) fn heartbeat_interval(announced_ms: u64) -> Duration {
    if announced_ms == 0 {
        return DEFAULT_HEARTBEAT_INTERVAL;
    }
    Duration::from_millis(announced_ms).clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
    const SEC: Duration = Duration::from_secs(1);

    fn welcome(interval_ms: u64) -> Event {
        Event::Received(Inbound::Welcome(WelcomeInfo {
            host_id: "h-1".into(),
            heartbeat_interval_ms: interval_ms,
            server_time_unix_ms: 0,
            manager_version: "0.1.0".into(),
        }))
    }

    fn sends(effects: &[Effect]) -> Vec<Outbound> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(o) => Some(o.clone()),
                _ => None,
            })
            .collect()
    }

    fn established(t0: Instant, interval_ms: u64) -> Protocol {
        let (mut p, _) = Protocol::new(t0, 0, WELCOME_TIMEOUT, false);
        p.handle(t0, welcome(interval_ms));
        p
    }

    #[test]
    fn opens_with_hello_carrying_the_applied_generation() {
        let (p, effects) = Protocol::new(Instant::now(), 7, WELCOME_TIMEOUT, false);
        assert_eq!(effects, vec![Effect::Send(Outbound::Hello { applied_generation: 7 })]);
        assert_eq!(p.applied_generation(), 7);
        assert_eq!(p.established_at(), None);
    }

    #[test]
    fn gives_up_without_welcome() {
        let t0 = Instant::now();
        let (mut p, _) = Protocol::new(t0, 0, WELCOME_TIMEOUT, false);
        assert_eq!(p.deadline(), t0 + WELCOME_TIMEOUT);
        assert!(p.handle(t0 + 29 * SEC, Event::Tick).is_empty());
        // Messages before the welcome do not postpone it.
        p.handle(t0 + 29 * SEC, Event::Received(Inbound::Unknown));
        let effects = p.handle(t0 + WELCOME_TIMEOUT, Event::Tick);
        assert!(matches!(&effects[..], [Effect::Close(r)] if r.contains("no welcome")), "{effects:?}");
        assert!(p.handle(t0 + 31 * SEC, Event::Tick).is_empty(), "closed sessions stay quiet");
    }

    #[test]
    fn welcome_starts_heartbeats_at_once_then_every_interval() {
        let t0 = Instant::now();
        let (mut p, _) = Protocol::new(t0, 0, WELCOME_TIMEOUT, false);
        let t1 = t0 + SEC;
        let effects = p.handle(t1, welcome(5_000));
        assert!(
            matches!(&effects[0], Effect::Established { heartbeat_interval, .. } if *heartbeat_interval == 5 * SEC)
        );
        assert_eq!(sends(&effects), vec![Outbound::Heartbeat { seq: 1 }]);
        assert_eq!(p.established_at(), Some(t1));
        assert_eq!(p.deadline(), t1 + 5 * SEC);
        assert!(p.handle(t1 + 4 * SEC, Event::Tick).is_empty());
        p.handle(t1 + 4 * SEC, Event::Received(Inbound::Unknown));
        assert_eq!(sends(&p.handle(t1 + 5 * SEC, Event::Tick)), vec![Outbound::Heartbeat { seq: 2 }]);
        p.handle(t1 + 9 * SEC, Event::Received(Inbound::Unknown));
        assert_eq!(sends(&p.handle(t1 + 10 * SEC, Event::Tick)), vec![Outbound::Heartbeat { seq: 3 }]);
        assert_eq!(p.deadline(), t1 + 15 * SEC);
    }

    #[test]
    fn a_late_tick_sends_one_heartbeat_not_a_burst() {
        let t0 = Instant::now();
        let mut p = established(t0, 1_000);
        // The manager keeps talking, but the driver was stalled for 2.5 intervals.
        p.handle(t0 + 2 * SEC, Event::Received(Inbound::Unknown));
        let late = t0 + Duration::from_millis(2_500);
        assert_eq!(sends(&p.handle(late, Event::Tick)).len(), 1);
        assert!(p.handle(late, Event::Tick).is_empty());
        assert_eq!(p.deadline(), late + SEC);
    }

    #[test]
    fn silence_for_three_intervals_ends_the_session() {
        let t0 = Instant::now();
        let mut p = established(t0, 1_000);
        // Heartbeats go out, nothing comes back.
        for s in 1..3 {
            assert_eq!(sends(&p.handle(t0 + s * SEC, Event::Tick)).len(), 1, "second {s}");
        }
        assert_eq!(p.deadline(), t0 + 3 * SEC);
        let effects = p.handle(t0 + 3 * SEC, Event::Tick);
        assert!(
            matches!(&effects[..], [Effect::Close(r)] if r.contains("no message from the manager for 3s")),
            "{effects:?}"
        );
    }

    #[test]
    fn any_message_proves_the_manager_alive() {
        let t0 = Instant::now();
        let mut p = established(t0, 1_000);
        p.handle(t0 + 2 * SEC, Event::Received(Inbound::Unknown));
        p.handle(t0 + 2 * SEC, Event::Tick);
        assert!(!p.handle(t0 + 3 * SEC, Event::Tick).iter().any(|e| matches!(e, Effect::Close(_))));
        let effects = p.handle(t0 + 5 * SEC, Event::Tick);
        assert!(effects.iter().any(|e| matches!(e, Effect::Close(_))), "{effects:?}");
    }

    #[test]
    fn answers_pings() {
        let mut p = established(Instant::now(), 1_000);
        let effects = p.handle(Instant::now(), Event::Received(Inbound::Ping { nonce: 99 }));
        assert_eq!(effects, vec![Effect::Send(Outbound::Pong { nonce: 99 })]);
    }

    #[test]
    fn acks_give_round_trip_times() {
        let t0 = Instant::now();
        let mut p = established(t0, 1_000);
        p.handle(t0 + SEC, Event::Tick); // seq 2
        let effects = p.handle(t0 + SEC + Duration::from_millis(30), Event::Received(Inbound::HeartbeatAck { seq: 2 }));
        assert_eq!(effects, vec![Effect::Acked { seq: 2, rtt: Duration::from_millis(30) }]);
        // Seq 1 was forgotten with 2; duplicate and unknown acks are ignored.
        for seq in [1, 2, 77] {
            assert!(p.handle(t0 + 2 * SEC, Event::Received(Inbound::HeartbeatAck { seq })).is_empty());
        }
    }

    #[test]
    fn desired_state_is_applied_and_reported() {
        let mut p = established(Instant::now(), 1_000);
        let now = Instant::now();
        assert_eq!(
            p.handle(
                now,
                Event::Received(Inbound::DesiredState { generation: 5, roles: Vec::new(), parcels: Vec::new() })
            ),
            vec![
                Effect::Applied { generation: 5, changed: true, roles: Vec::new(), parcels: Vec::new() },
                Effect::Send(Outbound::Status { applied_generation: 5 }),
            ]
        );
        assert_eq!(p.applied_generation(), 5);
        let again = p.handle(
            now,
            Event::Received(Inbound::DesiredState { generation: 5, roles: Vec::new(), parcels: Vec::new() }),
        );
        assert_eq!(again[0], Effect::Applied { generation: 5, changed: false, roles: Vec::new(), parcels: Vec::new() });
        assert_eq!(sends(&again), vec![Outbound::Status { applied_generation: 5 }]);
    }

    #[test]
    fn a_supervising_agent_answers_desired_state_with_its_role_report() {
        let t0 = Instant::now();
        let (mut p, _) = Protocol::new(t0, 0, WELCOME_TIMEOUT, true);
        p.handle(t0, welcome(1_000));
        let desired = Inbound::DesiredState { generation: 5, roles: Vec::new(), parcels: Vec::new() };
        assert_eq!(
            p.handle(t0, Event::Received(desired)),
            vec![Effect::Applied { generation: 5, changed: true, roles: Vec::new(), parcels: Vec::new() }],
            "nothing sent before the supervisor took it in"
        );
        // The driver's next role report carries the new generation.
        assert_eq!(p.handle(t0, Event::RolesChanged), vec![Effect::Send(Outbound::Status { applied_generation: 5 })]);
    }

    #[test]
    fn role_changes_are_reported_once_established() {
        let t0 = Instant::now();
        let (mut p, _) = Protocol::new(t0, 3, WELCOME_TIMEOUT, false);
        assert!(p.handle(t0, Event::RolesChanged).is_empty(), "not before the welcome");
        p.handle(t0, welcome(1_000));
        assert_eq!(p.handle(t0, Event::RolesChanged), vec![Effect::Send(Outbound::Status { applied_generation: 3 })]);
    }

    #[test]
    fn unknown_messages_change_nothing() {
        let mut p = established(Instant::now(), 1_000);
        assert!(p.handle(Instant::now(), Event::Received(Inbound::Unknown)).is_empty());
    }

    #[test]
    fn a_second_welcome_only_changes_the_pace() {
        let t0 = Instant::now();
        let mut p = established(t0, 10_000);
        assert!(p.handle(t0 + SEC, welcome(2_000)).is_empty());
        assert_eq!(p.deadline(), t0 + 3 * SEC);
        assert_eq!(p.established_at(), Some(t0));
    }

    #[test]
    fn heartbeat_intervals_are_bounded() {
        assert_eq!(heartbeat_interval(0), DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(heartbeat_interval(1), MIN_HEARTBEAT_INTERVAL);
        assert_eq!(heartbeat_interval(5_000), Duration::from_secs(5));
        assert_eq!(heartbeat_interval(u64::MAX), MAX_HEARTBEAT_INTERVAL);
    }
}
