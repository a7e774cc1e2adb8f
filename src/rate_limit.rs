//! `checkout.rate_limit_per_minute`: how many checkout and portal requests
//! one client IP may make per minute, so a loop of anonymous checkouts
//! cannot burn the account's Stripe rate limit for everyone.
//!
//! A fixed one-minute window per IP, kept in a bounded moka cache (idle
//! windows expire, and at most [`MAX_CLIENTS`] are kept, so memory is
//! bounded whatever the number of addresses). Hand-written on moka rather
//! than with `governor`, whose keyed limiter grows until swept by a task of
//! its own; the rule is ten lines. The client IP is the one the contract's
//! Proxying section defines (`proxy::client_ip`), so it works behind a
//! trusted ingress.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::future::Cache;

const WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at most; the least recently seen go first.
const MAX_CLIENTS: u64 = 100_000;

pub struct RateLimit {
    per_minute: u32,
    windows: Cache<IpAddr, Arc<Mutex<Window>>>,
}

struct Window {
    started: Instant,
    count: u32,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            windows: Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(WINDOW)
                .build(),
        }
    }

    /// Counts one request from `client`: `Err` with the time until its
    /// window ends when it is over the limit.
    pub async fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let window = self
            .windows
            .get_with(client, async move {
                Arc::new(Mutex::new(Window {
                    started: now,
                    count: 0,
                }))
            })
            .await;
        // Nothing can panic while the lock is held: a poisoned one is fine.
        let mut window = window.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= WINDOW {
            window.started = now;
            window.count = 0;
        }
        if window.count >= self.per_minute {
            return Err(WINDOW.saturating_sub(elapsed.min(WINDOW)));
        }
        window.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_client_gets_its_own_allowance() {
        let limit = RateLimit::new(3);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limit.check(a).await, Ok(()));
        }
        let wait = limit.check(a).await.unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= WINDOW, "{wait:?}");
        assert_eq!(
            limit.check(b).await,
            Ok(()),
            "another client is not limited"
        );
    }
}
