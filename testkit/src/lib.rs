//! Test helpers shared by every Drover test crate (manager, agent, the
//! end-to-end tests), so there is one way to wait: poll with a deadline,
//! never sleep as synchronisation; a real Prometheus server ([`prometheus`]);
//! webhook, SMTP and Alertmanager receivers for alert notifications ([`receivers`]).

pub mod prometheus;
pub mod receivers;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after
/// `within`. The pause between polls starts at 10 ms and doubles up to 250 ms.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// [`eventually`] for a condition that needs no await.
pub async fn eventually_true(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    eventually(within, what, || std::future::ready(cond().then_some(()))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "n reaches 3", || {
            n += 1;
            std::future::ready((n >= 3).then_some(n))
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for: never")]
    async fn panics_at_the_deadline() {
        eventually_true(Duration::from_millis(50), "never", || false).await;
    }
}
