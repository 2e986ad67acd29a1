//! The pool's planner settings against the real PostgreSQL: custom plans by default,
//! generic plans without sequential scans inside a batch's transaction only.

use shared::testing::TestEnv;

async fn settings(conn: &mut sqlx::PgConnection) -> (String, String) {
    sqlx::query_as("SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')")
        .fetch_one(conn)
        .await
        .expect("settings")
}

#[tokio::test]
async fn batch_transactions_plan_generically_and_the_setting_ends_with_them() {
    let env = TestEnv::new().await;
    // One connection, so the batch's transaction and the checks after it share it.
    let config = shared::config::DatabaseConfig {
        database_max_connections: 1,
        ..env.database()
    };
    let pool = shared::db::pool(&config, "public").expect("pool");
    let mut conn = pool.acquire().await.expect("connection");
    assert_eq!(
        settings(&mut conn).await,
        ("force_custom_plan".to_owned(), "on".to_owned())
    );
    drop(conn);

    let mut tx = shared::db::begin_batch(&pool).await.expect("begin");
    assert_eq!(
        settings(&mut tx).await,
        ("force_generic_plan".to_owned(), "off".to_owned())
    );
    tx.commit().await.expect("commit");

    let tx = shared::db::begin_batch(&pool).await.expect("begin again");
    tx.rollback().await.expect("rollback");

    let mut conn = pool.acquire().await.expect("the same connection");
    assert_eq!(
        settings(&mut conn).await,
        ("force_custom_plan".to_owned(), "on".to_owned()),
        "back to the pool's settings after commit and rollback"
    );
    drop(conn);
    pool.close().await;
    env.cleanup().await;
}

/// What the real PostgreSQL answers for data it refuses and for trouble that passes.
#[tokio::test]
async fn database_errors_are_classified_by_what_the_server_answers() {
    use shared::db::{Failure, classify};
    let env = TestEnv::new().await;
    let pool = shared::db::pool(&env.database(), "public").expect("pool");
    sqlx::raw_sql(
        "CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v >= 0), s varchar(3), body text)",
    )
    .execute(&pool)
    .await
    .expect("table");
    let err = |sql: &'static str, text: Option<&'static str>| {
        let pool = pool.clone();
        async move {
            let mut q = sqlx::query(sql);
            if let Some(text) = text {
                q = q.bind(text);
            }
            q.execute(&pool).await.expect_err(sql)
        }
    };
    let cases = [
        // 22021: a text column refuses NUL.
        (
            err("INSERT INTO t (id, body) VALUES (1, $1)", Some("a\0b")).await,
            Failure::Permanent,
        ),
        // 22001: too long for the column.
        (
            err("INSERT INTO t (id, s) VALUES (2, $1)", Some("abcd")).await,
            Failure::Permanent,
        ),
        // 23514: a CHECK.
        (
            err("INSERT INTO t (id, v) VALUES (3, -1)", None).await,
            Failure::Permanent,
        ),
        // 22003: out of range.
        (
            err("INSERT INTO t (id, v) VALUES (4, 3000000000)", None).await,
            Failure::Permanent,
        ),
        // 42P01: a statement wrong for every message is not one message's fault.
        (
            err("SELECT * FROM no_such_table", None).await,
            Failure::Transient,
        ),
    ];
    for (e, expected) in &cases {
        assert_eq!(classify(e), *expected, "{e}");
    }
    sqlx::query("INSERT INTO t (id) VALUES (5)")
        .execute(&pool)
        .await
        .expect("row");
    let unique = err("INSERT INTO t (id) VALUES (5)", None).await;
    assert_eq!(classify(&unique), Failure::Permanent, "{unique}");
    // 57014: statement timeout (last: the setting stays on its connection).
    let timeout = sqlx::raw_sql("SET statement_timeout = 10; SELECT pg_sleep(1)")
        .execute(&pool)
        .await
        .expect_err("times out");
    assert_eq!(classify(&timeout), Failure::Transient, "{timeout}");
    pool.close().await;
    env.cleanup().await;
}

/// One value a CHECK refuses in a batch of seven: the others are stored, in order, the
/// refused one ends alone with its error.
#[tokio::test]
async fn isolate_stores_the_batch_without_the_one_value_refused() {
    let env = TestEnv::new().await;
    let pool = shared::db::pool(&env.database(), "public").expect("pool");
    sqlx::raw_sql("CREATE TABLE t (n bigserial, v int CHECK (v >= 0))")
        .execute(&pool)
        .await
        .expect("table");
    let values = [1, 2, 3, -4, 5, 6, 7];
    let mut transactions = 0;
    let parts = shared::db::isolate(&values, |part: &[i32]| {
        transactions += 1;
        let pool = pool.clone();
        let part = part.to_vec();
        async move {
            sqlx::query("INSERT INTO t (v) SELECT * FROM unnest($1::int[])")
                .bind(&part)
                .execute(&pool)
                .await
                .map(|_| part.len())
        }
    })
    .await;
    let failed: Vec<_> = parts.iter().filter(|(_, r)| r.is_err()).collect();
    assert_eq!(failed.len(), 1, "{parts:?}");
    assert_eq!(failed[0].0, 3..4, "only the refused value fails");
    let covered: Vec<usize> = parts.iter().flat_map(|(r, _)| r.clone()).collect();
    assert_eq!(
        covered,
        (0..values.len()).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert!(transactions <= 7, "{transactions} transactions");
    let stored: Vec<i32> = sqlx::query_scalar("SELECT v FROM t ORDER BY n")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(
        stored,
        vec![1, 2, 3, 5, 6, 7],
        "stored in order, the refused one left out"
    );
    pool.close().await;
    env.cleanup().await;
}

/// SPEC §4.7: the purge deletes what is older than the retention period, in batches
/// of `retention::BATCH` until none is left, keeps newer rows and those its condition
/// protects, and counts what went.
#[tokio::test]
async fn purge_deletes_old_rows_in_batches_and_keeps_the_rest() {
    use shared::retention::{BATCH, Purge, RetentionMetrics, purge_once, purge_table};
    let env = TestEnv::new().await;
    let pool = shared::db::pool(&env.database(), "public").expect("pool");
    sqlx::raw_sql(
        "CREATE TABLE audit (id bigserial, at timestamptz NOT NULL, keep boolean NOT NULL DEFAULT false);
         INSERT INTO audit (at) SELECT now() - interval '31 days' FROM generate_series(1, 2500);
         INSERT INTO audit (at, keep) VALUES (now() - interval '40 days', true);
         INSERT INTO audit (at) SELECT now() - interval '29 days' FROM generate_series(1, 10);",
    )
    .execute(&pool)
    .await
    .expect("rows");
    let purge = Purge {
        table: "audit",
        aged_by: "at",
        only_if: "NOT r.keep",
    };
    const { assert!(2500 > 2 * BATCH, "more than two batches") };
    assert_eq!(purge_table(&pool, &purge, 30).await.expect("purge"), 2500);
    let left: Vec<(bool, i64)> =
        sqlx::query_as("SELECT keep, count(*) FROM audit GROUP BY keep ORDER BY keep")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(left, [(false, 10), (true, 1)]);

    let mut registry = prometheus_client::registry::Registry::with_prefix("test");
    let metrics = RetentionMetrics::register(&mut registry);
    sqlx::raw_sql(
        "INSERT INTO audit (at) SELECT now() - interval '31 days' FROM generate_series(1, 3)",
    )
    .execute(&pool)
    .await
    .expect("rows");
    purge_once(&pool, &[purge], 30, &metrics).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics");
    assert!(
        text.contains("test_retention_purged_rows_total{table=\"audit\"} 3"),
        "{text}"
    );
    pool.close().await;
    env.cleanup().await;
}
