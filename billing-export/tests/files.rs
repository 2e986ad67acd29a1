//! EXPORT_DIR: the period's two files are written when its window has closed, are
//! the same as the HTTP exports, appear atomically, and are written once per period
//! (also across restarts and between concurrent writers).

mod common;

use std::path::Path;

use billing_export::export::files::{Outcome, PeriodFiles};
use chrono::Utc;
use common::{Events, Options, billing_pool, import_registry, reading, spawn_app, wait_stored};
use shared::calendar::Calendar;
use shared::testing::{TestEnv, WAIT, eventually};

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn closed_period_files_are_written_once() {
    let env = TestEnv::new().await;
    let window = Calendar::default().window().expect("window");
    let period = window.latest_closed(Utc::now());
    let p = period.to_string();
    import_registry(
        &env,
        "account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh\n\
         1000001,M-1,1,6,active,,,,,85\n\
         1000002,M-2,1,6,active,,,,,70\n",
    )
    .await;

    // Readings of the closed period arrive while no EXPORT_DIR is configured.
    let first = spawn_app(&env, Options::default()).await;
    let events = Events::connect(&env).await;
    events
        .publish(&reading(
            "1000001",
            "M-1",
            &p,
            &[4242],
            &format!("{p}-20T10:00:00+05:00"),
        ))
        .await;
    let pool = billing_pool(&env);
    wait_stored(&pool, 1).await;
    first.stop().await;

    // A start with EXPORT_DIR writes the closed period's files at once.
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        export_dir: Some(dir.path().to_owned()),
        ..Options::default()
    };
    let app = spawn_app(&env, options.clone()).await;
    let readings_file = dir.path().join(format!("readings-{p}.csv"));
    let missing_file = dir.path().join(format!("missing-{p}.csv"));
    eventually("period recorded", WAIT, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM period_exports WHERE period = $1")
            .bind(&p)
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(
        names_in(dir.path()),
        [format!("missing-{p}.csv"), format!("readings-{p}.csv")],
        "both files, no temporary left over"
    );
    let on_disk = std::fs::read_to_string(&readings_file).expect("readings file");
    let served = app
        .get(&format!("/v1/exports/{p}.csv"))
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(on_disk, served);
    assert!(on_disk.contains(",4242,"), "{on_disk}");
    let missing = std::fs::read_to_string(&missing_file).expect("missing file");
    assert_eq!(
        missing,
        "account,meter,months_missing,method,estimate_kwh\n1000002,M-2,,normative,70\n"
    );
    assert_eq!(
        app.metric("billing_files_written_total", &[("report", "readings")])
            .await,
        Some(1.0)
    );
    app.stop().await;

    // Restart: the period is recorded, so nothing is written again.
    std::fs::remove_file(&readings_file).expect("remove");
    std::fs::remove_file(&missing_file).expect("remove");
    let again = spawn_app(&env, options).await;
    let files = PeriodFiles {
        pool: pool.clone(),
        dir: dir.path().to_owned(),
        window,
        metrics: billing_export::metrics::BillingMetrics::register(&mut Default::default()),
    };
    assert_eq!(
        files.write_period(period).await.expect("check"),
        Outcome::AlreadyWritten
    );
    assert!(names_in(dir.path()).is_empty());
    assert_eq!(
        again
            .metric("billing_files_written_total", &[("report", "readings")])
            .await,
        None
    );
    again.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_writers_write_a_period_once() {
    let env = TestEnv::new().await;
    import_registry(
        &env,
        "account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh\n",
    )
    .await;
    // Migrations only: the app is not needed to write files directly.
    let app = spawn_app(&env, Options::default()).await;
    app.stop().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let files = PeriodFiles {
        pool: billing_pool(&env),
        dir: dir.path().to_owned(),
        window: Calendar::default().window().expect("window"),
        metrics: billing_export::metrics::BillingMetrics::register(&mut Default::default()),
    };
    let period = "2026-11".parse().expect("period");
    let (a, b) = tokio::join!(files.write_period(period), files.write_period(period));
    let outcomes = [a.expect("first"), b.expect("second")];
    let written = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Written { .. }))
        .count();
    assert_eq!(written, 1, "{outcomes:?}");
    assert_eq!(
        names_in(dir.path()),
        ["missing-2026-11.csv", "readings-2026-11.csv"]
    );
    assert_eq!(
        files.write_period(period).await.expect("third"),
        Outcome::AlreadyWritten
    );
    env.cleanup().await;
}

/// SPEC §4.7: readings received more than `RETENTION_DAYS` ago are purged at start
/// (and daily), and so are the period files last written that long ago; other files
/// in EXPORT_DIR and newer ones stay.
#[tokio::test]
async fn readings_and_period_files_past_the_retention_period_expire() {
    let env = TestEnv::new().await;
    import_registry(
        &env,
        "account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh\n\
         1000001,M-1,1,6,active,,,,,85\n",
    )
    .await;
    let pool = billing_pool(&env);
    billing_export::DATABASE
        .apply(&pool, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("migrations");
    sqlx::query(
        "INSERT INTO readings (reading_id, message_id, account, meter, period, vals, received_at, channel, delivery)
         VALUES (gen_random_uuid(), 'gw-old', '1000001', 'M-1', '2022-11', '{100}', now() - interval '1096 days', 'sms', 'delivered'),
                (gen_random_uuid(), 'gw-new', '1000001', 'M-1', '2022-12', '{200}', now() - interval '1094 days', 'sms', 'delivered')",
    )
    .execute(&pool)
    .await
    .expect("readings");

    let dir = tempfile::tempdir().expect("temp dir");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(1096 * 24 * 3600);
    let recent = std::time::SystemTime::now() - std::time::Duration::from_secs(1094 * 24 * 3600);
    for (name, modified) in [
        ("readings-2022-11.csv", old),
        ("missing-2022-11.csv", old),
        ("notes.txt", old),
        ("readings-2022-12.csv", recent),
    ] {
        let file = std::fs::File::create(dir.path().join(name)).expect("file");
        file.set_modified(modified).expect("mtime");
    }
    let app = spawn_app(
        &env,
        Options {
            export_dir: Some(dir.path().to_owned()),
            ..Options::default()
        },
    )
    .await;
    for (what, n) in [("readings", 1.0), ("export_files", 2.0)] {
        eventually(&format!("{what} purged"), WAIT, || async {
            let got = app
                .metric("billing_retention_purged_rows_total", &[("table", what)])
                .await;
            (got == Some(n)).then_some(())
        })
        .await;
    }
    let kept: Vec<String> = sqlx::query_scalar("SELECT message_id FROM readings")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(kept, ["gw-new"]);
    let names = names_in(dir.path());
    assert!(
        !names.contains(&"readings-2022-11.csv".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"missing-2022-11.csv".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"notes.txt".to_owned()), "{names:?}");
    assert!(
        names.contains(&"readings-2022-12.csv".to_owned()),
        "{names:?}"
    );
    app.stop().await;
    env.cleanup().await;
}
