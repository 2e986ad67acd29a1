//! Staff accounts: a login, a role and an Argon2id password hash (PHC string, with
//! its salt and parameters), created by `console add-user`.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;
use sqlx::PgPool;

/// What a member of staff may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The contact centre: search, timelines, accounts, paper slips.
    Operator,
    /// Also the dead letters and their re-queue.
    Supervisor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "supervisor" => Some(Role::Supervisor),
            _ => None,
        }
    }

    /// The role's name on the pages.
    pub fn title(self) -> &'static str {
        match self {
            Role::Operator => "оператор",
            Role::Supervisor => "руководитель",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A login name: 1–64 letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login(String);

impl Login {
    pub fn parse(raw: &str) -> Result<Login, String> {
        let s = raw.trim();
        let ok = !s.is_empty()
            && s.chars().count() <= 64
            && s.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Login(s.to_lowercase()))
        } else {
            Err("a login is 1–64 letters, digits, `.`, `_` or `-`".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shortest password `add-user` accepts.
pub const MIN_PASSWORD: usize = 10;

/// Argon2id with OWASP's second recommended setting (19 MiB, 2 passes): about 30 ms
/// per login on one core here, and a guessed password costs an attacker the same.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Creates the user, or sets the role and password of an existing one.
pub async fn add_user(
    pool: &PgPool,
    login: &Login,
    role: Role,
    password: &str,
) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD {
        anyhow::bail!("the password must have at least {MIN_PASSWORD} characters");
    }
    let hash = hash_password(password)?;
    sqlx::query(
        "INSERT INTO users (login, role, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (login) DO UPDATE
         SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash, updated_at = now()",
    )
    .bind(login.as_str())
    .bind(role.as_str())
    .bind(hash)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a member of staff; their sessions end with them (`ON DELETE CASCADE`).
/// Whether there was such a user.
pub async fn remove_user(pool: &PgPool, login: &Login) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM users WHERE login = $1")
        .bind(login.as_str())
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A member of staff, as the users page lists them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub login: String,
    pub role: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

pub async fn list(pool: &PgPool) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as("SELECT login, role, created_at, updated_at FROM users ORDER BY login")
        .fetch_all(pool)
        .await
}

#[derive(sqlx::FromRow)]
struct UserRow {
    role: String,
    password_hash: String,
}

/// The user's role if `password` is theirs. An unknown login costs the same hash
/// as a known one, so the answer's timing does not tell which logins exist.
pub async fn check_password(
    pool: &PgPool,
    login: &str,
    password: &str,
) -> Result<Option<Role>, sqlx::Error> {
    let row: Option<UserRow> =
        sqlx::query_as("SELECT role, password_hash FROM users WHERE login = $1")
            .bind(login)
            .fetch_optional(pool)
            .await?;
    let hash = row
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.clone());
    let password = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || password_matches(&hash, &password))
        .await
        .unwrap_or(false);
    Ok(row.filter(|_| matches).and_then(|r| Role::parse(&r.role)))
}

/// A hash of a random password with the same parameters, verified for unknown
/// logins (made once per process: it holds no secret anyone could use).
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let random = uuid::Uuid::new_v4().to_string();
    hash_password(&random).unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_and_checks_only_its_password() {
        let hash = hash_password("correct horse battery").expect("hashes");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(password_matches(&hash, "correct horse battery"));
        assert!(!password_matches(&hash, "correct horse batterY"));
        assert!(!password_matches("not a hash", "x"));
    }

    #[test]
    fn the_dummy_hash_parses_with_the_same_parameters() {
        let parsed = PasswordHash::new(&DUMMY_HASH).expect("parses");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert!(DUMMY_HASH.contains("m=19456,t=2,p=1"));
    }

    #[test]
    fn logins_are_checked_and_lowercased() {
        assert_eq!(Login::parse(" Ivanova ").map(|l| l.0), Ok("ivanova".into()));
        assert!(Login::parse("").is_err());
        assert!(Login::parse("a b").is_err());
        assert!(Login::parse("x;drop").is_err());
    }
}
