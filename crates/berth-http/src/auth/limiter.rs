//! Failed logins, rate-limited per client address and per user name: after
//! [`BURST`] failures a key may try again once per [`REFILL`], and while it
//! is limited its attempts are refused before any password is checked (so a
//! guessing client cannot make berth spend bcrypt time either).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in a row before a key is limited.
const BURST: f64 = 10.0;
/// One more attempt is allowed after this long.
const REFILL: Duration = Duration::from_secs(6);
/// Keys tracked at most; past that, fully recovered keys are dropped first.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    User(String),
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let gained = now.duration_since(self.updated).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + gained).min(BURST);
        self.updated = now;
    }
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<Key, Bucket>>,
}

impl Limiter {
    /// Whether a login for `user` from `addr` may be checked now; when not,
    /// how long until it may.
    pub fn check(&self, addr: IpAddr, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        let mut wait = Duration::ZERO;
        for key in [Key::Addr(addr), Key::User(user.to_owned())] {
            if let Some(b) = buckets.get_mut(&key) {
                b.refill(now);
                if b.tokens < 1.0 {
                    wait = wait.max(REFILL.mul_f64(1.0 - b.tokens));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Records a failed login.
    pub fn failed(&self, addr: IpAddr, user: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < BURST
            });
            if buckets.len() >= MAX_KEYS {
                // Under a flood of distinct keys, forgetting is the bounded choice.
                buckets.clear();
            }
        }
        for key in [Key::Addr(addr), Key::User(user.to_owned())] {
            let b = buckets.entry(key).or_insert(Bucket {
                tokens: BURST,
                updated: now,
            });
            b.refill(now);
            b.tokens = (b.tokens - 1.0).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_per_user() {
        let l = Limiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..BURST as usize {
            assert!(l.check(a, "alice").is_ok());
            l.failed(a, "alice");
        }
        // The address is limited, for any user...
        let wait = l.check(a, "bob").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= REFILL, "{wait:?}");
        // ...and the user, from any address.
        assert!(l.check(b, "alice").is_err());
        // Others are not.
        assert!(l.check(b, "bob").is_ok());
    }
}
