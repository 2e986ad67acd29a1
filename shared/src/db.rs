//! PostgreSQL access: a pool whose connections live in the service's own schema
//! (`search_path`), so each service's tables and its migration history stay apart
//! in one database, and a start-up that waits for the database instead of failing.
//!
//! Also the one place where a database error is judged ([`classify`]): whether trying
//! again can help, or the data itself is what the database refuses — and, for a batch
//! stored in one transaction, how to find the one message it refuses ([`isolate`])
//! without taking the others down with it (SPEC §5).

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::broker::reconnect_backoff;
use crate::config::DatabaseConfig;

/// A lazy pool on `schema`: connections are made on first use and replaced after a
/// database restart, so the service never needs restarting for the database's sake.
pub fn pool(config: &DatabaseConfig, schema: &'static str) -> Result<PgPool, sqlx::Error> {
    // Custom plans only: a generic plan cached while a table was nearly empty (a fresh
    // system, the first minutes of a reading window) joins a batch against it with a
    // sequential scan, and keeps doing so as the table grows, until the next
    // analyze. Planning each statement costs little next to a batch's work.
    let options = PgConnectOptions::from_str(config.url())?
        .options([
            ("search_path", schema),
            ("plan_cache_mode", "force_custom_plan"),
        ])
        .application_name(schema);
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// How a batch's transaction begins: with generic plans and without sequential scans,
/// in the one round trip of `BEGIN`.
///
/// A batch's statements look rows up by key (`= ANY($1)`, joins against `unnest` of the
/// batch's arrays) and write rows. Planned at every execution (the pool's default,
/// above), planning was about a quarter of the database's CPU under load
/// (`pg_stat_statements`, docs/performance.md). With `force_generic_plan` each is
/// planned once per connection and the plan kept; with `enable_seqscan = off` that
/// plan is an index plan even if it was made while a table was nearly empty, so the
/// trap described above cannot close. Both settings end with the transaction.
pub const BEGIN_BATCH: &str =
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";

/// Begins a transaction for a batch's key look-ups and writes ([`BEGIN_BATCH`]).
pub async fn begin_batch(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with(BEGIN_BATCH).await
}

/// Creates the schema if needed and applies the service's migrations, retrying
/// while the database is unreachable (until `shutdown`).
pub async fn migrate(
    pool: &PgPool,
    schema: &'static str,
    migrator: &Migrator,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = reconnect_backoff();
    loop {
        match try_migrate(pool, schema, migrator).await {
            Ok(()) => return Ok(()),
            Err(e) if is_connection_problem(&e) && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, "database not reachable; retrying migrations");
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => anyhow::bail!("shut down before the database came up"),
                }
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("migrating schema {schema}")));
            }
        }
    }
}

async fn try_migrate(pool: &PgPool, schema: &str, migrator: &Migrator) -> Result<(), sqlx::Error> {
    // In production the schema exists before the service first runs, made by the
    // database's owner for the service's own role (deploy/sql/roles.sql), and that role
    // may not create schemas: PostgreSQL checks CREATE on the database even for
    // `CREATE SCHEMA IF NOT EXISTS` of one that exists, so look first.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(pool)
            .await?;
    // Two replicas starting together may race to create the schema: the loser's
    // unique violation is harmless, so one retry settles it.
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    if !exists
        && let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(pool)
            .await
        && !is_unique_violation(&e)
    {
        return Err(e);
    }
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => e,
        other => sqlx::Error::Migrate(Box::new(other)),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "23505" || c == "42P06")
}

/// Whether an error means "the database is not there now" (retry) rather than
/// "the statement is wrong" (a bug).
pub fn is_connection_problem(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now,
            // class 08 connection exceptions, 53300 too many connections.
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }),
        _ => false,
    }
}

/// Whether a failed statement can succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is away, busy or lost a race (a connection error, a deadlock, a
    /// serialization failure, a timeout): the same statement may succeed later.
    Transient,
    /// The data is what the database refuses — SQLSTATE class 22 (data exception: a
    /// NUL in a text, a value out of range), 23 (integrity constraint violation: a
    /// CHECK, NOT NULL, a foreign or unique key) or 54 (program limit exceeded: a key
    /// too large for its index), or a value that cannot be encoded at all. The same
    /// data fails the same way every time: never retried.
    Permanent,
}

/// Judges a database error once, by its SQLSTATE class (see [`Failure`]). Anything
/// not known to be the data's fault is transient — a statement that is wrong for
/// every message (a bug, a missing migration) is not one message's fault, and
/// retrying it with back-off leaves the messages for a fixed release to take.
pub fn classify(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Encode(_) => Failure::Permanent,
        sqlx::Error::Database(d) => match d.code() {
            Some(code)
                if ["22", "23", "54"]
                    .iter()
                    .any(|class| code.starts_with(class)) =>
            {
                Failure::Permanent
            }
            _ => Failure::Transient,
        },
        _ => Failure::Transient,
    }
}

/// Whether `e` can never succeed ([`classify`]).
pub fn is_permanent(e: &sqlx::Error) -> bool {
    classify(e) == Failure::Permanent
}

/// What [`isolate`] made of one part of a batch: the items `range` of it and how
/// storing them ended.
pub type Part<R> = (std::ops::Range<usize>, Result<R, sqlx::Error>);

/// Stores `items` with `store` (one transaction for all of them) and, when the
/// database refuses them permanently ([`classify`]), stores the two halves apart, and
/// so on down: the parts that the database takes are stored, and each item it refuses
/// ends alone, with its own error. One bad item among `n` costs about `2·log2 n`
/// more transactions, not `n`. A transient failure ends its whole part (retry later).
///
/// The parts are stored in order, front to back, so a later item still sees what the
/// earlier ones wrote (the validator's rounds rely on it). Returns the parts in order;
/// together they cover `items` exactly once.
pub async fn isolate<'a, T, R, F, Fut>(items: &'a [T], mut store: F) -> Vec<Part<R>>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<R, sqlx::Error>>,
{
    let mut parts = Vec::new();
    // Still to store, front first.
    let mut todo = std::collections::VecDeque::new();
    todo.push_back(0..items.len());
    while let Some(range) = todo.pop_front() {
        if range.is_empty() {
            continue;
        }
        match store(&items[range.clone()]).await {
            Err(e) if range.len() > 1 && is_permanent(&e) => {
                let mid = range.start + range.len() / 2;
                tracing::warn!(error = %e, items = range.len(),
                    "the database refuses part of a batch for good; storing its halves apart");
                todo.push_front(mid..range.end);
                todo.push_front(range.start..mid);
            }
            result => parts.push((range, result)),
        }
    }
    parts
}

/// Text as PostgreSQL can store it: a `text` column refuses the NUL character, so
/// each NUL becomes the visible `␀` (U+2400 SYMBOL FOR NULL). Other text is returned
/// as it is. For what is kept as a record of what arrived (the validator's audit),
/// never for what is decided on.
pub fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{2400}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// `{1,2,3}`: a `bigint[]` literal, for passing arrays of arrays to `unnest` (which
/// flattens a two-dimensional array): bind them as `text[]` and cast each `::bigint[]`.
pub fn bigint_array_literal(values: impl IntoIterator<Item = i64>) -> String {
    let inner: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_visible_symbol_and_nothing_else_changes() {
        assert_eq!(storable_text("1000001\u{0}45100"), "1000001\u{2400}45100");
        assert_eq!(storable_text("\u{0}\u{0}"), "\u{2400}\u{2400}");
        let plain = "1000001 45100\t\u{200B}";
        assert!(matches!(storable_text(plain), std::borrow::Cow::Borrowed(s) if s == plain));
    }

    #[test]
    fn errors_without_a_database_answer_are_transient_except_encoding() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Transient);
        assert_eq!(
            classify(&sqlx::Error::Io(std::io::Error::other("reset"))),
            Failure::Transient
        );
        assert_eq!(
            classify(&sqlx::Error::Encode("too big".into())),
            Failure::Permanent
        );
    }
}
