//! The restore drill of docs/operations-deploy.md ("Backups and a restore"), on the
//! real binaries: a system that has taken readings, replied and pushed to billing is
//! dumped with `pg_dump -Fc` (every schema of the one database), stopped, and the dump
//! restored with `pg_restore` into a new database; the services are started on the
//! restored database. Nothing is lost (every table's rows, the period's export) and
//! nothing is sent twice (no reply SMS, e-mail or billing push again, an SMS sent
//! again is recognised); new SMS are taken as before. The figures (dump size and
//! time, restore time, rows per schema) are printed (`--no-capture` shows them).

use std::collections::BTreeMap;
use std::time::Instant;

use e2e::system::EXPORT_TOKEN;
use e2e::{BillingDouble, Gateway, System, fixtures};
use shared::testing::{WAIT, eventually};
use sqlx::{Connection, PgConnection};

/// Accepted readings (each from its own phone, so no reply cap or rate limit applies).
const ACCEPTED: u32 = 30;
/// Wrong SMS, each answered with one reply.
const WRONG: u32 = 20;

/// Rows of every table of the services' schemas.
async fn rows(url: &str) -> BTreeMap<String, i64> {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables
         WHERE schemaname IN ('validator', 'notifier', 'billing', 'console') ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\""
        )))
        .fetch_one(&mut conn)
        .await
        .expect("count");
        counts.insert(format!("{schema}.{table}"), n);
    }
    counts
}

async fn tool(program: &str, args: &[&str]) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `console ARGS` on `database`, `input` on its standard input.
async fn console(database: &str, args: &[&str], input: &str) {
    let mut child = tokio::process::Command::new(e2e::system::bin("console"))
        .args(args)
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("console binary (cargo build --workspace)");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, input.as_bytes())
        .await
        .expect("stdin");
    drop(stdin);
    let out = child.wait_with_output().await.expect("console ends");
    assert!(
        out.status.success(),
        "console {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn period() -> String {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Yekaterinburg)
        .format("%Y-%m")
        .to_string()
}

async fn export(system: &System) -> String {
    reqwest::Client::new()
        .get(format!(
            "{}/v1/exports/{}.csv",
            system.base("billing-export"),
            period()
        ))
        .bearer_auth(EXPORT_TOKEN)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("export body")
}

#[tokio::test]
async fn a_restored_dump_loses_nothing_and_sends_nothing_twice() {
    let billing = BillingDouble::start().await;
    let sms = BillingDouble::start().await;
    let work = tempfile::tempdir().expect("work dir");
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    opts.billing_url = Some(billing.url.clone());
    opts.work_in = Some(work.path().to_owned());
    let system = System::start(opts.clone()).await;
    // The console's schema too (the harness runs four services): a staff member.
    let source = system.env.database_url.clone();
    console(&source, &["migrate"], "").await;
    console(
        &source,
        &["add-user", "restore-drill", "--role", "supervisor"],
        "a-long-password\n",
    )
    .await;

    // Readings of 1000001 only rise; each accepted one from a phone of its own.
    for i in 0..ACCEPTED {
        let text = format!("1000001 {} mail{i}@example.ru", 45_001 + i);
        let status = system
            .post_sms(&format!("before-{i}"), &format!("+7900100{i:04}"), &text)
            .await;
        assert_eq!(status, 202);
    }
    for i in 0..WRONG {
        let status = system
            .post_sms(
                &format!("wrong-{i}"),
                &format!("+7900200{i:04}"),
                "1000002 1",
            )
            .await;
        assert_eq!(status, 202);
    }
    eventually("every push and reply before the backup", WAIT, || async {
        (billing.delivered().len() == ACCEPTED as usize && sms.posts().len() == WRONG as usize)
            .then_some(())
    })
    .await;
    let mails = eventually("every confirmation e-mail", WAIT, || async {
        let n = std::fs::read_dir(system.mail_dir()).ok()?.count();
        (n == ACCEPTED as usize).then_some(n)
    })
    .await;

    // The backup: one dump of the database, every schema, while the services run.
    let before = rows(&source).await;
    let dump = work.path().join("meter.dump");
    let started = Instant::now();
    tool(
        "pg_dump",
        &["-Fc", "-d", &source, "-f", dump.to_str().expect("path")],
    )
    .await;
    let dump_time = started.elapsed();
    let dump_size = std::fs::metadata(&dump).expect("dump").len();
    let export_before = export(&system).await;
    system.stop().await;

    // The restore: a new database, the dump into it.
    // PostgreSQL keeps 63 bytes of a name; the test's own prefix, so that a run that
    // dies leaves a database the next run's sweep removes.
    let restored_name = format!(
        "{}_r",
        &system_db_name(&source)[..system_db_name(&source).len().min(60)]
    );
    let admin = source.rsplit_once('/').expect("url").0.to_owned();
    let restored = format!("{admin}/{restored_name}");
    let mut conn = PgConnection::connect(&format!("{admin}/postgres"))
        .await
        .expect("admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{restored_name}\""
    )))
    .execute(&mut conn)
    .await
    .expect("create the restored database");
    let started = Instant::now();
    tool(
        "pg_restore",
        &["--no-owner", "-d", &restored, dump.to_str().expect("path")],
    )
    .await;
    let restore_time = started.elapsed();
    let after = rows(&restored).await;
    assert_eq!(after, before, "every table's rows restored");
    assert_eq!(before.get("console.users"), Some(&1), "{before:?}");

    // The services on the restored database (a new vhost: the queues were empty).
    opts.env.push(("DATABASE_URL".into(), restored.clone()));
    let system = System::start(opts).await;
    assert_eq!(
        export(&system).await,
        export_before,
        "the export, as before"
    );

    // An SMS sent again is recognised; a new one goes through.
    assert_eq!(
        system
            .post_sms("before-0", "+79001000000", "1000001 45001 mail0@example.ru")
            .await,
        202
    );
    assert_eq!(
        system
            .post_sms("after-1", "+79003000001", "1000001 46000")
            .await,
        202
    );
    assert_eq!(
        system
            .post_sms("after-2", "+79003000002", "1000002 1")
            .await,
        202
    );
    eventually(
        "the new reading pushed, the new wrong SMS answered",
        WAIT,
        || async {
            (billing.delivered().len() == ACCEPTED as usize + 1
                && sms.posts().len() == WRONG as usize + 1)
                .then_some(())
        },
    )
    .await;
    let twice: Vec<_> = billing
        .delivered()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "pushed twice: {twice:?}");
    assert_eq!(
        billing.posts().len(),
        ACCEPTED as usize + 1,
        "no push repeated"
    );
    let to: std::collections::HashSet<String> = sms
        .posts()
        .iter()
        .map(|p| p.2["to"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(to.len(), WRONG as usize + 1, "one reply per wrong SMS");
    let mails_after = std::fs::read_dir(system.mail_dir())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(mails_after, 0, "no confirmation e-mail sent again");
    let messages: i64 = {
        let mut c = PgConnection::connect(&restored).await.expect("restored");
        sqlx::query_scalar("SELECT count(*) FROM validator.messages")
            .fetch_one(&mut c)
            .await
            .expect("messages")
    };
    assert_eq!(
        messages,
        before["validator.messages"] + 2,
        "the repeated SMS was not taken again"
    );

    let per_schema = before.iter().fold(BTreeMap::new(), |mut m, (t, n)| {
        *m.entry(t.split('.').next().unwrap_or("").to_owned())
            .or_insert(0) += n;
        m
    });
    println!(
        "restore drill: {} accepted + {} wrong SMS, {mails} e-mails; pg_dump -Fc {:.0} ms, {} bytes; \
         pg_restore {:.0} ms; rows per schema {per_schema:?}; after the restart: 0 pushes, \
         replies or e-mails repeated, the repeated SMS recognised, 2 new SMS taken",
        ACCEPTED,
        WRONG,
        dump_time.as_secs_f64() * 1000.0,
        dump_size,
        restore_time.as_secs_f64() * 1000.0,
    );

    system.stop().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{restored_name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("drop the restored database");
    billing.stop();
    sms.stop();
}

/// The database's name, the last segment of its URL.
fn system_db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}
