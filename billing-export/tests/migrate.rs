//! `billing-export migrate` (a Kubernetes Job) applies the schema and exits.

use shared::testing::TestEnv;

#[tokio::test]
async fn migrate_subcommand_applies_the_schema_and_exits() {
    let env = TestEnv::new().await;
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_billing-export"))
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", &env.database_url)
            .env("RUST_LOG", "warn")
            .output()
    };
    let out = run().await.expect("binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = shared::db::pool(&env.database(), billing_export::SCHEMA).expect("pool");
    let tables: Vec<String> = sqlx::query_scalar(
        // Tables only: the schema also publishes views (console_deliveries, for the console).
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'billing' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert_eq!(tables, ["_sqlx_migrations", "period_exports", "readings"]);
    // Twice is harmless (the Job may run on every deploy).
    assert!(run().await.expect("binary runs").status.success());
    pool.close().await;
    env.cleanup().await;
}
