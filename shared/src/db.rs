//! PostgreSQL access: a pool whose connections live in the service's own schema
//! (`search_path`), so each service's tables and its migration history stay apart
//! in one database, and a start-up that waits for the database instead of failing.

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
    // Two replicas starting together may race to create the schema: the loser's
    // unique violation is harmless, so one retry settles it.
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
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

/// `{1,2,3}`: a `bigint[]` literal, for passing arrays of arrays to `unnest` (which
/// flattens a two-dimensional array): bind them as `text[]` and cast each `::bigint[]`.
pub fn bigint_array_literal(values: impl IntoIterator<Item = i64>) -> String {
    let inner: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    format!("{{{}}}", inner.join(","))
}
