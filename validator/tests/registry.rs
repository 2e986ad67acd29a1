//! `validator import-registry`: the real binary against a real database.

use std::io::Write as _;
use std::process::Command;

use shared::testing::TestEnv;
use tokio_util::sync::CancellationToken;

fn import(env: &TestEnv, csv: &str, strict: bool) -> std::process::Output {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(csv.as_bytes()).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_validator"));
    cmd.arg("import-registry")
        .arg(file.path())
        .env("DATABASE_URL", &env.database_url)
        .env("RUST_LOG", "warn");
    if strict {
        cmd.arg("--strict");
    }
    cmd.output().expect("runs")
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_good_rows_load() {
    let env = TestEnv::new().await;
    let csv = "\
account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh
1000001,M1,1,5,active,2026-10,45000,,,100
1000002,M2,7,5,active,,,,,
1000003,M3,2,6,active,2026-10,1,2,,
notanumber,M4,1,5,active,,,,,
1000005,\"M5, \"\"quoted\"\"\",1,5,closed,,,,,
";
    let out = import(&env, csv, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(":3: zones must be 1, 2 or 3"), "{stderr}");
    assert!(stderr.contains(":5: account `notanumber`"), "{stderr}");
    assert!(stdout.contains("imported 3 meters from 5 rows"), "{stdout}");
    assert!(stdout.contains("2 rows rejected"), "{stdout}");

    let pool = shared::db::pool(&env.database(), validator::SCHEMA).expect("pool");
    let meters: Vec<(String, String, String)> =
        sqlx::query_as("SELECT account, meter, status FROM registry_meters ORDER BY account")
            .fetch_all(&pool)
            .await
            .expect("q");
    assert_eq!(
        meters,
        vec![
            ("1000001".into(), "M1".into(), "active".into()),
            ("1000003".into(), "M3".into(), "active".into()),
            ("1000005".into(), "M5, \"quoted\"".into(), "closed".into()),
        ]
    );
    let strict = import(&env, csv, true);
    assert!(!strict.status.success(), "--strict fails on rejected rows");
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn reimport_upserts_and_a_bad_header_changes_nothing() {
    let env = TestEnv::new().await;
    let pool = shared::db::pool(&env.database(), validator::SCHEMA).expect("pool");
    validator::DATABASE
        .apply(&pool, &CancellationToken::new())
        .await
        .expect("migrate");
    let head =
        "account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh\n";
    let first =
        format!("{head}1000001,M1,1,5,active,2026-09,100,,,80\n1000001,M2,1,5,active,,,,,\n");
    let report = validator::registry::import(&pool, first.as_bytes())
        .await
        .expect("import");
    assert_eq!(report.meters_upserted, 2);
    // The same meter twice in one file: the last row wins.
    let second = format!(
        "{head}1000001,M1,2,6,closed,2026-10,200,300,,90.5\n1000001,M1,2,6,active,2026-10,200,300,,90.5\n"
    );
    let report = validator::registry::import(&pool, second.as_bytes())
        .await
        .expect("import");
    assert_eq!(report.meters_upserted, 1);
    let row: (i16, String, Option<String>, Option<Vec<i64>>) =
        sqlx::query_as("SELECT zones, status, baseline_period, baseline_values FROM meters WHERE account = '1000001' AND meter = 'M1'")
            .fetch_one(&pool)
            .await
            .expect("q");
    assert_eq!(
        row,
        (
            2,
            "active".into(),
            Some("2026-10".into()),
            Some(vec![200, 300])
        )
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM meters")
        .fetch_one(&pool)
        .await
        .expect("q");
    assert_eq!(count, 2, "M2 untouched by an import that does not list it");
    let err = validator::registry::import(&pool, "acct,meter\n1,2\n".as_bytes())
        .await
        .expect_err("bad header");
    assert!(err.to_string().contains("no `account` column"), "{err}");
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn average_kwh_is_imported_when_given_and_cleared_by_a_file_without_it() {
    let env = TestEnv::new().await;
    let with = "\
account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh,average_kwh
1000001,M1,1,5,active,2026-09,100,,,80,\"142,5\"
1000002,M2,1,5,active,,,,,80,
1000003,M3,1,5,active,,,,,80,-7
";
    let out = import(&env, with, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(":4: average_kwh `-7` is not a non-negative number"),
        "{stderr}"
    );
    let pool = shared::db::pool(&env.database(), validator::SCHEMA).expect("pool");
    // Read through the view billing-export reads, as it does (numeric as text).
    let averages = || async {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT account, average_kwh::text FROM registry_meters ORDER BY account",
        )
        .fetch_all(&pool)
        .await
        .expect("q");
        rows
    };
    assert_eq!(
        averages().await,
        vec![
            ("1000001".into(), Some("142.500".into())),
            ("1000002".into(), None),
        ]
    );
    // The same meters from a file without the column: no average is kept.
    let without = "\
account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh
1000001,M1,1,5,active,2026-09,100,,,80
";
    let out = import(&env, without, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        averages().await,
        vec![("1000001".into(), None), ("1000002".into(), None)]
    );
    pool.close().await;
    env.cleanup().await;
}
