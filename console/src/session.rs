//! Server-side sessions, the session cookie, CSRF tokens and login throttling.
//!
//! The cookie carries 256 random bits; the database keeps only their SHA-256, the
//! login, the session's CSRF token and its expiry, so every replica knows every
//! session and a copy of the table lets nobody in. Failed logins are rows too
//! (per login and per client address), so the throttle holds across replicas.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use crate::users::Role;

/// The session cookie's name.
pub const COOKIE: &str = "console_session";
/// The login form's own CSRF cookie (double submit: there is no session yet).
pub const LOGIN_COOKIE: &str = "console_login";

/// Failures of one login within [`THROTTLE_WINDOW`] after which it must wait.
pub const LOGIN_FAILURES: i64 = 5;
/// Failures from one address: higher, since a whole office may share one (a proxy).
pub const ADDRESS_FAILURES: i64 = 20;
/// How far back failures count, and so the longest wait.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A logged-in member of staff.
#[derive(Debug, Clone)]
pub struct Session {
    pub login: String,
    pub role: Role,
    pub csrf: String,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        same(&self.csrf, presented)
    }
}

pub use shared::token::same;

/// 256 random bits, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    shared::hex::encode(&bytes)
}

fn digest(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens a session for `login`; returns the cookie's value.
pub async fn open(pool: &PgPool, login: &str, ttl: Duration) -> Result<String, sqlx::Error> {
    let id = random_token();
    let expires =
        Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
    sqlx::query("INSERT INTO sessions (id_hash, login, csrf, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(digest(&id))
        .bind(login)
        .bind(random_token())
        .bind(expires)
        .execute(pool)
        .await?;
    // Expired sessions go with each new one: no separate sweeper needed.
    sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
        .execute(pool)
        .await?;
    Ok(id)
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    login: String,
    role: String,
    csrf: String,
}

/// The live session the cookie names, if any.
pub async fn find(pool: &PgPool, id: &str) -> Result<Option<Session>, sqlx::Error> {
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT s.login, u.role, s.csrf FROM sessions s JOIN users u USING (login)
         WHERE s.id_hash = $1 AND s.expires_at > now()",
    )
    .bind(digest(id))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| {
        Some(Session {
            role: Role::parse(&r.role)?,
            login: r.login,
            csrf: r.csrf,
        })
    }))
}

pub async fn close(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(digest(id))
        .execute(pool)
        .await?;
    Ok(())
}

pub use shared::http::cookie;

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure unless `insecure`.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, insecure: bool) -> String {
    let secure = if insecure { "" } else { "; Secure" };
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// A `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(name: &str, insecure: bool) -> String {
    set_cookie(name, "", Duration::ZERO, insecure)
}

/// Until when a login from `address` as `login` must wait, if it must.
pub async fn throttled_until(
    pool: &PgPool,
    login: &str,
    address: Option<IpAddr>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let mut until = wait_for(pool, &format!("login:{login}"), LOGIN_FAILURES).await?;
    if let Some(ip) = address {
        let by_address = wait_for(pool, &format!("ip:{ip}"), ADDRESS_FAILURES).await?;
        until = until.max(by_address);
    }
    Ok(until)
}

/// When the oldest of the last `limit` failures of `key` leaves the window, if there
/// are that many within it.
async fn wait_for(
    pool: &PgPool,
    key: &str,
    limit: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let window = THROTTLE_WINDOW.as_secs_f64();
    let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(at) FROM (
             SELECT at FROM login_failures
             WHERE key = $1 AND at > now() - make_interval(secs => $2)
             ORDER BY at DESC LIMIT $3
         ) last
         HAVING count(*) >= $3",
    )
    .bind(key)
    .bind(window)
    .bind(limit)
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok(oldest.map(|at| at + chrono::Duration::seconds(THROTTLE_WINDOW.as_secs() as i64)))
}

pub async fn record_failure(
    pool: &PgPool,
    login: &str,
    address: Option<IpAddr>,
) -> Result<(), sqlx::Error> {
    let mut keys = vec![format!("login:{login}")];
    if let Some(ip) = address {
        keys.push(format!("ip:{ip}"));
    }
    sqlx::query("INSERT INTO login_failures (key) SELECT unnest($1::text[])")
        .bind(&keys)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)")
        .bind(THROTTLE_WINDOW.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(())
}

/// A successful login forgets the login's failures (not the address's).
pub async fn clear_failures(pool: &PgPool, login: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1")
        .bind(format!("login:{login}"))
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::{HeaderMap, header};

    #[test]
    fn cookies_carry_the_flags() {
        let c = set_cookie(COOKIE, "abc", Duration::from_secs(60), false);
        assert_eq!(
            c,
            "console_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let c = set_cookie(COOKIE, "abc", Duration::from_secs(60), true);
        assert!(!c.contains("Secure") && c.contains("HttpOnly") && c.contains("SameSite=Strict"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; console_session=xyz"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, ""));
    }
}
