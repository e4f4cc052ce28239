//! Sign-in throttling: an exponential delay after repeated password
//! failures, per user name and per source address, held in memory.
//!
//! - A user name's first [`USER_FREE_FAILURES`] consecutive failures cost
//!   nothing; each further one holds the name for `base`, `2 * base`,
//!   `4 * base`... capped at [`MAX_DELAY`]. A source address gets the same
//!   after [`SOURCE_FREE_FAILURES`] failures (any user names, and unknown API
//!   tokens), so guessing many names from one place is slowed too.
//! - While held, an attempt is refused without checking the password and is
//!   not counted: the delay always ends by itself, and the right password
//!   after it works. A success clears the user name's failures.
//! - Never a lockout an attacker can use: a source that signed in as a user
//!   in the last [`KNOWN_SOURCE_TTL`] is not held by that user name's delay,
//!   so failures from elsewhere cannot keep the user out of their usual
//!   place (that source is still held by its own failures).
//! - IPv6 sources count per /64, the block a single host usually gets.
//! - Memory is bounded: each table holds at most [`MAX_ENTRIES`] entries,
//!   an entry is forgotten [`FORGET_AFTER`] after its last failure, and when
//!   a table is full the least recently failed entry goes first.
//!
//! The state is per manager process: a restart forgets it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures of one user name answered at once, before any delay.
pub const USER_FREE_FAILURES: u32 = 5;
/// Failures from one source address answered at once, before any delay.
pub const SOURCE_FREE_FAILURES: u32 = 20;
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// An entry without a failure for this long is forgotten (the count starts
/// again).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How long a successful sign-in exempts its source from the user name's
/// delay.
pub const KNOWN_SOURCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most entries of each table (user names, sources, known sources,
/// audit gates).
pub const MAX_ENTRIES: usize = 10_000;
/// At most one audit entry per key in this window (see [`SignInThrottle::audit_due`]).
pub const AUDIT_WINDOW: Duration = Duration::from_secs(60);
/// User names longer than this are keyed by their beginning (no user name
/// is that long; it only bounds memory).
const MAX_NAME_KEY: usize = 128;

/// Why an attempt is refused without checking it: how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub wait: Duration,
    /// Whether the source address (rather than the user name) is held.
    pub by_source: bool,
}

impl Held {
    /// The wait in whole seconds, rounded up (for `Retry-After`), at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self.wait.as_millis();
        (ms.div_ceil(1000) as u64).max(1)
    }
}

/// The in-memory throttle the REST API and the console share.
#[derive(Debug)]
pub struct SignInThrottle {
    base: Duration,
    users: Mutex<Table<String, Failures>>,
    sources: Mutex<Table<IpAddr, Failures>>,
    known: Mutex<Table<(String, IpAddr), Instant>>,
    audits: Mutex<Table<String, (Instant, u32)>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    held_until: Option<Instant>,
    last: Instant,
}

impl SignInThrottle {
    /// A throttle whose first delay is `base` (1s in production).
    pub fn new(base: Duration) -> SignInThrottle {
        SignInThrottle {
            base: base.max(Duration::from_millis(1)),
            users: Mutex::new(Table::new(MAX_ENTRIES)),
            sources: Mutex::new(Table::new(MAX_ENTRIES)),
            known: Mutex::new(Table::new(MAX_ENTRIES)),
            audits: Mutex::new(Table::new(MAX_ENTRIES)),
        }
    }

    /// Whether a password attempt for `user` from `source` must wait.
    pub fn check(&self, user: &str, source: IpAddr) -> Result<(), Held> {
        self.check_at(user, source, Instant::now())
    }

    /// Whether an attempt from `source` must wait (unknown API tokens).
    pub fn check_source(&self, source: IpAddr) -> Result<(), Held> {
        let source = source_key(source);
        held(lock(&self.sources).get(&source), Instant::now())
            .map_or(Ok(()), |wait| Err(Held { wait, by_source: true }))
    }

    /// Records a failed password attempt.
    pub fn failure(&self, user: &str, source: IpAddr) {
        self.failure_at(user, source, Instant::now())
    }

    /// Records a failure of the source alone (an unknown API token).
    pub fn source_failure(&self, source: IpAddr) {
        let now = Instant::now();
        fail(&mut lock(&self.sources), source_key(source), SOURCE_FREE_FAILURES, self.base, now);
    }

    /// Records a successful sign-in: the user name's failures are cleared
    /// and the source is known for it.
    pub fn success(&self, user: &str, source: IpAddr) {
        self.success_at(user, source, Instant::now())
    }

    /// Whether an audit entry for `key` may be written now: at most one per
    /// key in [`AUDIT_WINDOW`]. Answers how many were skipped since the
    /// last one written.
    pub fn audit_due(&self, key: &str) -> Option<u32> {
        let now = Instant::now();
        let mut audits = lock(&self.audits);
        audits.forget(|(at, _)| now.duration_since(*at) >= AUDIT_WINDOW);
        match audits.get_mut(&key.to_owned()) {
            Some((at, skipped)) if now.duration_since(*at) < AUDIT_WINDOW => {
                *skipped += 1;
                None
            }
            _ => {
                let skipped = audits.remove(&key.to_owned()).map_or(0, |(_, s)| s);
                audits.insert(key.to_owned(), (now, 0), |(at, _)| *at);
                Some(skipped)
            }
        }
    }

    fn check_at(&self, user: &str, source: IpAddr, now: Instant) -> Result<(), Held> {
        let source = source_key(source);
        if let Some(wait) = held(lock(&self.sources).get(&source), now) {
            return Err(Held { wait, by_source: true });
        }
        let name = name_key(user);
        let Some(wait) = held(lock(&self.users).get(&name), now) else {
            return Ok(());
        };
        let known = lock(&self.known).get(&(name, source)).is_some_and(|at| now.duration_since(*at) < KNOWN_SOURCE_TTL);
        if known { Ok(()) } else { Err(Held { wait, by_source: false }) }
    }

    fn failure_at(&self, user: &str, source: IpAddr, now: Instant) {
        fail(&mut lock(&self.users), name_key(user), USER_FREE_FAILURES, self.base, now);
        fail(&mut lock(&self.sources), source_key(source), SOURCE_FREE_FAILURES, self.base, now);
    }

    fn success_at(&self, user: &str, source: IpAddr, now: Instant) {
        let name = name_key(user);
        lock(&self.users).remove(&name);
        let mut known = lock(&self.known);
        known.forget(|at| now.duration_since(*at) >= KNOWN_SOURCE_TTL);
        known.insert((name, source_key(source)), now, |at| *at);
    }
}

/// Why a sign-in with a password did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInFailure {
    /// Too many failures: answered without checking the password.
    Held(Held),
    /// Wrong user name or password, or a disabled user.
    Refused(crate::auth::Refusal),
}

/// Checks a user name and password for the console (`via` console) or HTTP
/// Basic (`via` password): throttled as this module says, failures audited
/// as `session.sign_in_failed` with the reason (HTTP Basic failures and
/// throttled attempts at most once a minute per user name, source and
/// reason). The console audits its own success once the session exists.
pub async fn password_sign_in(
    state: &crate::AppState,
    user: &str,
    password: &str,
    source: IpAddr,
    via: crate::domain::Via,
) -> anyhow::Result<Result<crate::store::UserRecord, SignInFailure>> {
    let console = via == crate::domain::Via::Console;
    if let Err(held) = state.throttle.check(user, source) {
        let wait_ms = held.wait.as_millis() as u64;
        tracing::warn!(user, %source, wait_ms, by_source = held.by_source, via = via.as_str(), "sign-in throttled");
        audit_failure(state, user, source, via, "throttled", false).await;
        return Ok(Err(SignInFailure::Held(held)));
    }
    match state.basic_cache.check(&state.store, user, password).await? {
        Ok(rec) => {
            state.throttle.success(user, source);
            Ok(Ok(rec))
        }
        Err(refusal) => {
            state.throttle.failure(user, source);
            tracing::warn!(user, %source, reason = refusal.as_str(), via = via.as_str(), "sign-in failed");
            audit_failure(state, user, source, via, refusal.as_str(), console).await;
            Ok(Err(SignInFailure::Refused(refusal)))
        }
    }
}

/// Writes a `session.sign_in_failed` entry: always when `every`, else at
/// most one a minute per channel, user name, source and reason (naming how
/// many were skipped).
async fn audit_failure(
    state: &crate::AppState,
    user: &str,
    source: IpAddr,
    via: crate::domain::Via,
    reason: &str,
    every: bool,
) {
    let user = name_key(user);
    let skipped = if every {
        0
    } else {
        match state.throttle.audit_due(&format!("{}\0{user}\0{source}\0{reason}", via.as_str())) {
            Some(n) => n,
            None => return,
        }
    };
    let channel = if via == crate::domain::Via::Console { "console sign-in" } else { "HTTP Basic sign-in" };
    let mut summary = format!("{channel} failed: {reason}");
    if skipped > 0 {
        summary.push_str(&format!(" ({skipped} more like it in the minute before were not recorded)"));
    }
    let mut entry = crate::audit_entry(&user, &source.to_string(), "session.sign_in_failed", "user", &user, summary);
    entry.via = via.as_str().to_owned();
    state.audit(entry).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The tables stay consistent whatever panicked while one was held.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The remaining wait of an entry, if it is held at `now`.
fn held(f: Option<&Failures>, now: Instant) -> Option<Duration> {
    let until = f?.held_until?;
    (until > now).then(|| until - now)
}

fn fail<K: Eq + Hash + Clone>(table: &mut Table<K, Failures>, key: K, free: u32, base: Duration, now: Instant) {
    table.forget(|f| now.duration_since(f.last) >= FORGET_AFTER && held(Some(f), now).is_none());
    let mut f = table.remove(&key).unwrap_or(Failures { count: 0, held_until: None, last: now });
    f.count = f.count.saturating_add(1);
    f.last = now;
    if f.count >= free {
        f.held_until = Some(now + delay(base, f.count - free));
    }
    table.insert(key, f, |f| f.last);
}

/// The delay after the `n`th failure beyond the free ones (0-based):
/// `base * 2^n`, at most [`MAX_DELAY`].
pub fn delay(base: Duration, n: u32) -> Duration {
    base.checked_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX)).unwrap_or(MAX_DELAY).min(MAX_DELAY)
}

fn name_key(user: &str) -> String {
    let mut end = user.len().min(MAX_NAME_KEY);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_owned()
}

/// IPv4 as is; IPv6 by its /64 (IPv4-mapped IPv6 as the IPv4 address).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A map with at most `cap` entries: when full, expired entries are dropped
/// first, then the one with the oldest time.
#[derive(Debug)]
struct Table<K, V> {
    cap: usize,
    map: HashMap<K, V>,
}

impl<K: Eq + Hash + Clone, V> Table<K, V> {
    fn new(cap: usize) -> Self {
        Table { cap, map: HashMap::new() }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k)
    }

    /// Drops the entries `expired` says so, but only once the table is full
    /// (a scan per insert would cost more than it saves).
    fn forget(&mut self, expired: impl Fn(&V) -> bool) {
        if self.map.len() >= self.cap {
            self.map.retain(|_, v| !expired(v));
        }
    }

    fn insert(&mut self, k: K, v: V, time: impl Fn(&V) -> Instant) {
        if self.map.len() >= self.cap
            && !self.map.contains_key(&k)
            && let Some(oldest) = self.map.iter().min_by_key(|(_, v)| time(v)).map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
        self.map.insert(k, v);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_from_the_sixth_failure_and_stop_at_five_minutes() {
        let got: Vec<u64> = (0..12).map(|n| delay(S, n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(delay(S, u32::MAX), MAX_DELAY);
    }

    #[test]
    fn five_failures_hold_the_name_until_the_delay_ends_and_success_clears_it() {
        let t = SignInThrottle::new(S);
        let t0 = Instant::now();
        for i in 0..4 {
            t.failure_at("ann", A, t0);
            assert_eq!(t.check_at("ann", A, t0), Ok(()), "after {} failures", i + 1);
        }
        t.failure_at("ann", A, t0);
        assert_eq!(t.check_at("ann", A, t0), Err(Held { wait: S, by_source: false }));
        assert_eq!(t.check_at("ann", B, t0), Err(Held { wait: S, by_source: false }), "from anywhere");
        assert_eq!(t.check_at("bob", A, t0), Ok(()), "another name from the same source");
        let t1 = t0 + S;
        assert_eq!(t.check_at("ann", A, t1), Ok(()), "the delay ends by itself");
        t.failure_at("ann", A, t1);
        assert_eq!(t.check_at("ann", A, t1).unwrap_err().wait, 2 * S, "then doubles");
        t.success_at("ann", A, t1 + 2 * S);
        t.failure_at("ann", B, t1 + 2 * S);
        assert_eq!(t.check_at("ann", B, t1 + 2 * S), Ok(()), "success starts the count again");
    }

    #[test]
    fn a_source_that_signed_in_is_not_held_by_failures_elsewhere() {
        let t = SignInThrottle::new(S);
        let t0 = Instant::now();
        t.success_at("admin", A, t0);
        for _ in 0..USER_FREE_FAILURES {
            t.failure_at("admin", B, t0);
        }
        assert!(t.check_at("admin", B, t0).is_err());
        assert_eq!(t.check_at("admin", A, t0), Ok(()), "the admin's own place stays open");
    }

    #[test]
    fn a_source_is_held_after_its_own_failures_whatever_the_names() {
        let t = SignInThrottle::new(S);
        let t0 = Instant::now();
        for i in 0..SOURCE_FREE_FAILURES {
            t.failure_at(&format!("user{}", i / 4), A, t0);
        }
        assert_eq!(t.check_at("fresh", A, t0), Err(Held { wait: S, by_source: true }));
        assert_eq!(t.check_at("fresh", B, t0), Ok(()));
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for _ in 0..SOURCE_FREE_FAILURES {
            t.source_failure(v6a);
        }
        assert!(t.check_source(v6b).is_err(), "one /64 is one source");
    }

    #[test]
    fn tables_stay_bounded() {
        let mut table: Table<u32, Instant> = Table::new(3);
        let t0 = Instant::now();
        for i in 0..10u32 {
            table.insert(i, t0 + Duration::from_secs(u64::from(i)), |v| *v);
        }
        assert_eq!(table.len(), 3);
        assert!(table.get(&9).is_some() && table.get(&0).is_none(), "oldest evicted");
        let t = SignInThrottle::new(S);
        for i in 0..(MAX_ENTRIES + 50) {
            t.failure_at(&format!("n{i}"), A, t0);
        }
        assert!(lock(&t.users).len() <= MAX_ENTRIES);
    }

    #[test]
    fn audit_entries_are_gated_per_key() {
        let t = SignInThrottle::new(S);
        assert_eq!(t.audit_due("k"), Some(0));
        assert_eq!(t.audit_due("k"), None);
        assert_eq!(t.audit_due("k"), None);
        assert_eq!(t.audit_due("other"), Some(0));
    }

    #[test]
    fn retry_after_rounds_up() {
        let h = |ms| Held { wait: Duration::from_millis(ms), by_source: false }.retry_after_secs();
        assert_eq!((h(1), h(1000), h(1001), h(0)), (1, 1, 2, 1));
    }
}
