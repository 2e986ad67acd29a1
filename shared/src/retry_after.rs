//! A peer's `Retry-After` (RFC 9110 §10.2.3), for the clients that honour it (the SMS
//! gateway, billing): how long it asked us to wait before trying again.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::RETRY_AFTER;
use chrono::{DateTime, Utc};

/// Longest wait taken from a peer: a misconfigured one must not park a message for a
/// day; past this the retry schedule is the better guess.
pub const MAX: Duration = Duration::from_secs(3600);

/// The wait a response's `Retry-After` asks for, as seconds or an HTTP date (read
/// against `now`), capped at [`MAX`]; `None` when absent or unreadable.
pub fn parse(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, value.parse().expect("header value"));
        h
    }

    #[test]
    fn seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(parse(&headers("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse(&headers("Fri, 20 Nov 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        // A date in the past: now.
        assert_eq!(
            parse(&headers("Fri, 20 Nov 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse(&headers("86400"), now), Some(MAX));
        assert_eq!(parse(&headers("soon"), now), None);
        assert_eq!(parse(&HeaderMap::new(), now), None);
    }
}
