//! The web form's per-client rate limit (SPEC §4.9): a token bucket per client
//! ([`ClientKey`]: an IPv4 address or an IPv6 /64), `per_minute` posts a minute as a
//! burst of at most `per_minute`, in this process (N replicas allow N times as much).
//!
//! The buckets live in a bounded concurrent cache (moka, the Caffeine design) rather
//! than a map of our own, so that neither memory nor a request's cost grows with the
//! number of clients, whoever sends them:
//! - at most [`MAX_TRACKED`] clients are remembered. Past that, a client the cache
//!   has seen only once loses to those seen more often (TinyLFU admission): a flood of
//!   one-off addresses neither grows the table nor pushes out the clients that post
//!   again and again, who are the ones a limit is for;
//! - a bucket untouched for [`REFILL`] is full again, so it is forgotten then;
//! - a request touches its own entry under that entry's lock; eviction and expiry run
//!   in small batches amortised over requests — no request scans the table (the map
//!   this replaces was scanned whole, under one lock, on every post once it held
//!   100,000 clients).
//!
//! A governor-style keyed limiter was the other candidate: its GCRA is the same
//! arithmetic, but its store has no bound and must be swept by a timer.

use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;
use shared::client::ClientKey;

/// Clients remembered at most: about 18 MB of the pod's memory when full (measured,
/// 356 bytes a client: `cargo bench -p ingest --bench form_limit`).
pub const MAX_TRACKED: u64 = 50_000;

/// How long an empty bucket takes to fill (any `per_minute`): a bucket left alone that
/// long is as good as new, and forgetting it changes nothing.
pub const REFILL: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    per_minute: u32,
    buckets: Cache<ClientKey, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter::with_capacity(per_minute, MAX_TRACKED)
    }

    /// With room for `capacity` clients (tests and the benchmark use other sizes).
    pub fn with_capacity(per_minute: u32, capacity: u64) -> RateLimiter {
        RateLimiter {
            per_minute: per_minute.max(1),
            buckets: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(REFILL)
                .build(),
        }
    }

    /// `Ok` when `client` may post now (and counts the post), else how long until it
    /// may.
    pub fn admit(&self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / REFILL.as_secs_f64();
        let mut verdict = Ok(());
        self.buckets.entry(client).and_compute_with(|entry| {
            let mut bucket = entry.map(|e| e.into_value()).unwrap_or(Bucket {
                tokens: capacity,
                at: now,
            });
            let idle = now.saturating_duration_since(bucket.at);
            bucket.tokens = (bucket.tokens + idle.as_secs_f64() * per_second).min(capacity);
            bucket.at = bucket.at.max(now);
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
            } else {
                verdict = Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second));
            }
            Op::Put(bucket)
        });
        verdict
    }

    /// Clients remembered now (once the cache has done its pending evictions).
    pub fn tracked(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(n: u32) -> ClientKey {
        ClientKey::V4(std::net::Ipv4Addr::from_bits(n))
    }

    #[test]
    fn the_bucket_refills_over_a_minute() {
        let limiter = RateLimiter::new(2);
        let t = Instant::now();
        assert!(limiter.admit(v4(1), t).is_ok());
        assert!(limiter.admit(v4(1), t).is_ok());
        let wait = limiter.admit(v4(1), t).expect_err("a third post at once");
        assert_eq!(wait.as_secs(), 30, "{wait:?}");
        assert!(limiter.admit(v4(2), t).is_ok(), "per client");
        assert!(limiter.admit(v4(1), t + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn one_64_is_one_client() {
        let limiter = RateLimiter::new(2);
        let t = Instant::now();
        let ip = |s: &str| ClientKey::from(s.parse::<std::net::IpAddr>().expect("address"));
        assert!(limiter.admit(ip("2001:db8:7:8::1"), t).is_ok());
        assert!(limiter.admit(ip("2001:db8:7:8::2"), t).is_ok());
        assert!(
            limiter.admit(ip("2001:db8:7:8:a:b:c:d"), t).is_err(),
            "another address of the same /64"
        );
        assert!(limiter.admit(ip("2001:db8:7:9::1"), t).is_ok());
    }

    /// A flood of distinct clients — ten times what the table holds — leaves it at
    /// its bound, and a client that keeps posting through the flood is still held to
    /// its limit (give or take the posts it makes before the cache has seen it often
    /// enough to admit it).
    #[test]
    fn a_flood_of_distinct_clients_neither_grows_the_table_nor_frees_a_repeat_poster() {
        const CAPACITY: u64 = 2_000;
        let limiter = RateLimiter::with_capacity(10, CAPACITY);
        let t = Instant::now();
        let repeat = v4(u32::MAX);
        let mut admitted = 0;
        for n in 0..(10 * CAPACITY as u32) {
            assert!(limiter.admit(v4(n), t).is_ok(), "a first post is admitted");
            if n % 50 == 0 && limiter.admit(repeat, t).is_ok() {
                admitted += 1;
            }
        }
        let tracked = limiter.tracked();
        assert!(tracked <= CAPACITY, "{tracked} clients remembered");
        assert!(
            (10..=12).contains(&admitted),
            "{admitted} of 400 posts from one client admitted in one minute"
        );
    }
}
