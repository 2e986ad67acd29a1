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
