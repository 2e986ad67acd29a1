//! What one post costs the web form's rate limit (`ingest::form::limit`) as the table
//! fills, and what the full table weighs: `cargo bench -p ingest --bench form_limit`.
//! A benchmark, not a test: it prints figures and asserts nothing about speed.
//!
//! Each phase runs a number of admissions and reports the mean per admission:
//! - `repeat, table empty`: one client posting again and again;
//! - `flood, table filling`: a new client each time, up to the bound;
//! - `flood, table full`: new clients past the bound (each evicts or is refused);
//! - `repeat, table full`: one client again, with the table full.
//!
//! The resident set is read from `/proc/self/statm` before and after the table fills.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ingest::form::limit::{MAX_TRACKED, RateLimiter};
use shared::client::ClientKey;

fn client(n: u32) -> ClientKey {
    ClientKey::V4(Ipv4Addr::from_bits(n))
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn phase(name: &str, count: u32, mut admit: impl FnMut(u32)) {
    let started = Instant::now();
    for n in 0..count {
        admit(n);
    }
    let per = started.elapsed() / count;
    println!("{name:<24} {count:>9} admissions  {per:>10.1?} each");
}

fn main() {
    let limiter = RateLimiter::new(10);
    let now = Instant::now();
    let capacity = u32::try_from(MAX_TRACKED).unwrap_or(u32::MAX);
    let repeat = client(u32::MAX);
    // A steady clock for the repeat phases: the client is refused after 10, as a
    // flooding client would be.
    let mut t = now;
    let mut tick = || {
        t += Duration::from_micros(1);
        t
    };

    phase("repeat, table empty", 200_000, |_| {
        let _ = limiter.admit(repeat, tick());
    });
    let before = resident_bytes();
    phase("flood, table filling", capacity, |n| {
        let _ = limiter.admit(client(n), now);
    });
    let filled = limiter.tracked();
    let after = resident_bytes();
    phase("flood, table full", 4 * capacity, |n| {
        let _ = limiter.admit(client(capacity + n), now);
    });
    phase("repeat, table full", 200_000, |_| {
        let _ = limiter.admit(repeat, tick());
    });
    let tracked = limiter.tracked();
    println!(
        "clients remembered: {filled} after filling, {tracked} after the flood (bound {MAX_TRACKED})"
    );
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        println!(
            "resident set grew {:.1} MB filling the table ({} bytes a client)",
            grown as f64 / 1e6,
            grown / u64::from(capacity.max(1))
        );
    }
}
