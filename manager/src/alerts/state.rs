//! The life of one rule's alerts, as Prometheus runs it: a series whose condition holds is
//! *pending*; once it has held for the rule's `for` it is *firing*; when it stops holding it
//! keeps firing for `keep_firing_for`, then is *resolved*. A pending alert whose condition
//! stops holding is dropped without a notification.
//!
//! [`RuleState::step`] is pure: given what holds now it returns the transitions, which the
//! engine turns into events and notifications.

use std::collections::HashMap;
use std::time::Duration;

use super::expr::Labels;

/// How long a condition must hold before firing, and keep firing after it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    pub for_: Duration,
    pub keep_firing_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Firing,
}

/// One alert of a rule: a series (its labels) for which the condition holds or held.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub labels: Labels,
    pub value: f64,
    pub phase: Phase,
    /// When the condition began to hold (unix ms).
    pub active_since: i64,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// The last evaluation at which the condition held.
    pub last_held: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Pending(Instance),
    Firing(Instance),
    /// Held no longer (and `keep_firing_for` passed); the instance as it was last.
    Resolved {
        instance: Instance,
        at: i64,
    },
}

/// The alerts of one rule, by their labels.
#[derive(Debug, Default)]
pub struct RuleState {
    instances: HashMap<Labels, Instance>,
}

impl RuleState {
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// Advances to `now` given the series for which the condition holds.
    pub fn step(&mut self, timing: Timing, holding: Vec<(Labels, f64)>, now: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        let for_ms = millis(timing.for_);
        let keep_ms = millis(timing.keep_firing_for);
        let mut seen = std::collections::HashSet::with_capacity(holding.len());
        for (labels, value) in holding {
            seen.insert(labels.clone());
            let inst = self.instances.entry(labels.clone()).or_insert_with(|| Instance {
                labels,
                value,
                phase: Phase::Pending,
                active_since: now,
                fired_at: None,
                last_held: now,
            });
            let new = inst.last_held == now && inst.active_since == now && inst.fired_at.is_none();
            inst.value = value;
            inst.last_held = now;
            if inst.phase == Phase::Pending && now - inst.active_since >= for_ms {
                inst.phase = Phase::Firing;
                inst.fired_at = Some(now);
                out.push(Transition::Firing(inst.clone()));
            } else if new {
                out.push(Transition::Pending(inst.clone()));
            }
        }
        self.instances.retain(|labels, inst| {
            if seen.contains(labels) {
                return true;
            }
            match inst.phase {
                // A pending alert that stops holding never fired: dropped quietly.
                Phase::Pending => false,
                Phase::Firing if now - inst.last_held >= keep_ms => {
                    out.push(Transition::Resolved { instance: inst.clone(), at: now });
                    false
                }
                Phase::Firing => true,
            }
        });
        out
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &str) -> Labels {
        [("host".to_owned(), v.to_owned())].into()
    }

    fn kinds(t: &[Transition]) -> Vec<String> {
        t.iter()
            .map(|t| match t {
                Transition::Pending(i) => format!("pending {}", i.labels["host"]),
                Transition::Firing(i) => format!("firing {}", i.labels["host"]),
                Transition::Resolved { instance, .. } => format!("resolved {}", instance.labels["host"]),
            })
            .collect()
    }

    #[test]
    fn pending_then_firing_then_resolved_after_keep_firing_for() {
        let timing = Timing { for_: Duration::from_secs(60), keep_firing_for: Duration::from_secs(30) };
        let mut s = RuleState::default();
        assert_eq!(kinds(&s.step(timing, vec![(l("a"), 1.0)], 0)), ["pending a"]);
        assert!(s.step(timing, vec![(l("a"), 1.0)], 30_000).is_empty());
        assert_eq!(kinds(&s.step(timing, vec![(l("a"), 2.0)], 60_000)), ["firing a"]);
        // Stops holding: still firing within keep_firing_for, resolved after it.
        assert!(s.step(timing, vec![], 70_000).is_empty());
        assert_eq!(s.instances().count(), 1);
        let t = s.step(timing, vec![], 90_000);
        assert_eq!(kinds(&t), ["resolved a"]);
        match &t[0] {
            Transition::Resolved { instance, at } => assert_eq!((instance.value, *at), (2.0, 90_000)),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.instances().count(), 0);
    }

    #[test]
    fn a_pending_alert_that_clears_never_fires_and_zero_for_fires_at_once() {
        let timing = Timing { for_: Duration::from_secs(60), keep_firing_for: Duration::ZERO };
        let mut s = RuleState::default();
        s.step(timing, vec![(l("a"), 1.0)], 0);
        assert!(s.step(timing, vec![], 10_000).is_empty(), "dropped quietly");
        assert_eq!(s.instances().count(), 0);

        let now = Timing::default();
        let mut s = RuleState::default();
        assert_eq!(kinds(&s.step(now, vec![(l("a"), 1.0), (l("b"), 1.0)], 0)).len(), 2);
        assert_eq!(kinds(&s.step(now, vec![(l("b"), 1.0)], 1_000)), ["resolved a"]);
        // Holding again after resolving starts over.
        assert_eq!(kinds(&s.step(now, vec![(l("a"), 1.0), (l("b"), 1.0)], 2_000)), ["firing a"]);
    }
}
