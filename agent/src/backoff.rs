//! Reconnect delays: exponential backoff with full jitter, so that thousands of
//! agents cut off by a manager restart do not all come back in the same second.
//!
//! The n-th retry (from 0) waits a uniformly random time in `[0, min(max,
//! initial * 2^n)]`. The session resets the sequence once a session has stayed up
//! for `reset_after`.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Backoff parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling any delay can have.
    pub max: Duration,
    /// A session that stayed up this long resets the backoff to `initial`.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    /// 500 ms, growing to 30 s, reset after a session stayed up 60 s.
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The state of one retry sequence.
#[derive(Debug)]
pub struct Backoff<R = StdRng> {
    config: BackoffConfig,
    attempt: u32,
    rng: R,
}

impl Backoff<StdRng> {
    /// A backoff seeded from the operating system's randomness.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff::with_rng(config, StdRng::from_entropy())
    }
}

impl<R: Rng> Backoff<R> {
    /// A backoff drawing its jitter from `rng` (tests pass a seeded one).
    pub fn with_rng(config: BackoffConfig, rng: R) -> Self {
        Backoff { config, attempt: 0, rng }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        // 2^31 * 500 ms is far beyond any sensible max, so stop doubling there.
        let factor = 1u32 << self.attempt.min(31);
        self.config.initial.checked_mul(factor).unwrap_or(self.config.max).min(self.config.max)
    }

    /// The delay before the next attempt, in whole milliseconds; each call moves
    /// one step up.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.gen_range(0..=millis))
    }

    /// Starts over from `initial`, after a connection proved healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Whether a session that stayed up for `up_for` should reset the sequence.
    pub fn should_reset(&self, up_for: Duration) -> bool {
        up_for > self.config.reset_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(seed: u64) -> Backoff<StdRng> {
        Backoff::with_rng(BackoffConfig::default(), StdRng::seed_from_u64(seed))
    }

    #[test]
    fn ceilings_double_from_500ms_and_cap_at_30s() {
        let mut b = seeded(1);
        let want_ms = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        for want in want_ms {
            assert_eq!(b.ceiling(), Duration::from_millis(want));
            b.next_delay();
        }
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30), "no overflow after many attempts");
    }

    #[test]
    fn delays_stay_within_bounds_and_are_jittered() {
        for seed in 0..50 {
            let mut b = seeded(seed);
            let mut seen = Vec::new();
            for _ in 0..40 {
                let ceiling = b.ceiling();
                let d = b.next_delay();
                assert!(d <= ceiling, "seed {seed}: {d:?} > {ceiling:?}");
                assert!(d <= Duration::from_secs(30));
                seen.push(d);
            }
            // Full jitter: the capped delays are spread out, not all at the cap.
            let capped = &seen[10..];
            let distinct: std::collections::BTreeSet<_> = capped.iter().collect();
            assert!(distinct.len() > capped.len() / 2, "seed {seed}: {capped:?}");
            assert!(capped.iter().any(|d| *d < Duration::from_secs(20)), "seed {seed}");
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = seeded(7);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn resets_only_after_a_session_stayed_up_60s() {
        let b = seeded(0);
        assert!(!b.should_reset(Duration::from_secs(59)));
        assert!(!b.should_reset(Duration::from_secs(60)));
        assert!(b.should_reset(Duration::from_secs(61)));
    }
}
