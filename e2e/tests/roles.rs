//! One PostgreSQL role and one broker user per service, as in production:
//! `deploy/sql/roles.sql` (the SQL the operator's docs give) run on a new database, a
//! broker user per service with `deploy/rabbitmq-permissions.conf`'s permissions on the
//! test's vhost, then every service migrated (in the migration Job's order) and served
//! under its own role and user, and a reading carried through all five — billing-export's missing-readings report reading the validator's
//! `registry_meters`, the console reading every owner's `console_*` views. Nothing
//! else across schemas is allowed: a role reading another's table is refused.
//!
//! The roles are the cluster's (PostgreSQL roles are global): the test sets them up
//! with fixed passwords, as re-running roles.sql would, and leaves them. The broker
//! users are the test's own (named after its vhost) and removed at the end.

use std::process::Stdio;
use std::time::Duration;

use e2e::fixtures;
use e2e::system::{EXPORT_TOKEN, TOKEN, bin};
use shared::testing::{READY_WAIT, TestEnv, WAIT, eventually, listening_port};
use sqlx::{Connection, PgConnection};

const API_TOKEN: &str = "roles-console-api-token-0123";

/// The five services, in the order they are started.
const SERVICES: [&str; 5] = [
    "ingest",
    "validator",
    "notifier",
    "billing-export",
    "console",
];

/// (service, role, its password for the test)
const ROLES: [(&str, &str, &str); 4] = [
    ("validator", "validator", "roles-test-validator"),
    ("notifier", "notifier", "roles-test-notifier"),
    ("billing-export", "billing_export", "roles-test-billing"),
    ("console", "console", "roles-test-console"),
];

/// `DATABASE_URL` of `role` on the test's database.
fn url_as(env: &TestEnv, role: &str, password: &str) -> String {
    let mut url = reqwest::Url::parse(&env.database_url).expect("database url");
    url.set_username(role).expect("user");
    url.set_password(Some(password)).expect("password");
    url.to_string()
}

fn role_url(env: &TestEnv, service: &str) -> String {
    let (_, role, password) = ROLES
        .iter()
        .find(|(s, _, _)| *s == service)
        .expect("a service with a role");
    url_as(env, role, password)
}

/// The broker user of `service` on the test's vhost.
fn broker_user(env: &TestEnv, service: &str) -> String {
    format!("{}-{service}", env.name)
}

/// `AMQP_URL` as `service`'s own broker user.
fn amqp_as(env: &TestEnv, service: &str) -> String {
    let mut url = reqwest::Url::parse(&env.amqp_url).expect("amqp url");
    url.set_username(&broker_user(env, service)).expect("user");
    url.set_password(Some(BROKER_PASSWORD)).expect("password");
    url.to_string()
}

const BROKER_PASSWORD: &str = "roles-test-broker";

/// CONFIGURE, WRITE, READ of deploy/rabbitmq-permissions.conf (shell assignments).
fn permissions() -> serde_json::Value {
    let text = std::fs::read_to_string(e2e::repo_root().join("deploy/rabbitmq-permissions.conf"))
        .expect("deploy/rabbitmq-permissions.conf");
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}='")))
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{name}= in deploy/rabbitmq-permissions.conf"))
            .to_owned()
    };
    serde_json::json!({"configure": value("CONFIGURE"), "write": value("WRITE"), "read": value("READ")})
}

/// The environment a service gets: its own role, its own broker user.
fn service_env(env: &TestEnv, service: &str, work: &std::path::Path) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = vec![
        ("AMQP_URL".into(), amqp_as(env, service)),
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("RUST_LOG".into(), "info".into()),
        ("INGEST_TOKEN".into(), TOKEN.into()),
        ("EXPORT_TOKEN".into(), EXPORT_TOKEN.into()),
        (
            "EXPORT_DIR".into(),
            work.join("exports").display().to_string(),
        ),
        ("EMAIL_DIR".into(), work.join("mail").display().to_string()),
        ("SMS_GATEWAY".into(), "log".into()),
        ("CONSOLE_API_TOKEN".into(), API_TOKEN.into()),
        ("CONSOLE_EXPORT_TOKEN".into(), EXPORT_TOKEN.into()),
    ];
    if service != "ingest" {
        vars.push(("DATABASE_URL".into(), role_url(env, service)));
    }
    vars.extend(fixtures::any_day());
    vars
}

async fn run(program: &str, args: &[&str], envs: Vec<(String, String)>) -> std::process::Output {
    tokio::process::Command::new(program)
        .args(args)
        .envs(envs)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn assert_ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn each_service_migrates_and_runs_under_its_own_role() {
    let env = TestEnv::new().await;
    let work = tempfile::tempdir().expect("work dir");

    // The docs' SQL, as the database's superuser, twice: it must be re-runnable.
    let admin_url = env.database_url.clone();
    let sql = e2e::repo_root().join("deploy/sql/roles.sql");
    let mut args = vec![
        admin_url.clone(),
        "-q".to_owned(),
        "-v".to_owned(),
        "ON_ERROR_STOP=1".to_owned(),
    ];
    for (_, role, password) in ROLES {
        args.push("-v".into());
        args.push(format!("{role}_password={password}"));
    }
    args.push("-f".into());
    args.push(sql.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for _ in 0..2 {
        assert_ok(
            "psql -f deploy/sql/roles.sql",
            &run("psql", &args, vec![]).await,
        );
    }

    // A broker user per service, with the documented permissions on the test's vhost.
    let http = reqwest::Client::new();
    let perms = permissions();
    for service in SERVICES {
        let user = broker_user(&env, service);
        for (path, body) in [
            (
                format!("users/{user}"),
                serde_json::json!({"password": BROKER_PASSWORD, "tags": ""}),
            ),
            (format!("permissions/{}/{user}", env.name), perms.clone()),
        ] {
            let resp = env
                .broker
                .api(&http, |h, api| {
                    h.put(format!("{api}/api/{path}")).json(&body)
                })
                .await
                .expect("management API");
            assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
        }
    }

    // The migration Job's order, each under its own role (ingest has none).
    for service in [
        "ingest",
        "validator",
        "notifier",
        "console",
        "billing-export",
    ] {
        let out = run(
            bin(service).to_str().expect("path"),
            &["migrate"],
            service_env(&env, service, work.path()),
        )
        .await;
        assert_ok(&format!("{service} migrate"), &out);
    }
    // The registry from standard input, as the docs load it into a pod
    // (`kubectl exec -i deploy/validator -- … import-registry - < FILE`).
    let mut import = tokio::process::Command::new(bin("validator"))
        .args(["import-registry", "-", "--strict"])
        .envs(service_env(&env, "validator", work.path()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("validator import-registry");
    let mut stdin = import.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, fixtures::REGISTRY.as_bytes())
        .await
        .expect("write the registry");
    drop(stdin);
    let out = import.wait_with_output().await.expect("import ends");
    assert_ok("validator import-registry -", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 6 meters from 6 rows"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Every schema belongs to its service's role, tables included.
    let mut admin = PgConnection::connect(&admin_url).await.expect("admin");
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT n.nspname::text, pg_get_userbyid(c.relowner)::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('validator', 'notifier', 'billing', 'console') ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .expect("owners");
    assert_eq!(
        owners,
        [
            ("billing".to_owned(), "billing_export".to_owned()),
            ("console".to_owned(), "console".to_owned()),
            ("notifier".to_owned(), "notifier".to_owned()),
            ("validator".to_owned(), "validator".to_owned()),
        ]
    );

    // The five services, each as its own role.
    let mut children = Vec::new();
    let mut ports = std::collections::HashMap::new();
    for service in SERVICES {
        let log = std::fs::File::create(work.path().join(format!("{service}.log"))).expect("log");
        let mut envs = service_env(&env, service, work.path());
        if service == "console" {
            envs.push((
                "BILLING_EXPORT_URL".into(),
                format!("http://127.0.0.1:{}", ports["billing-export"]),
            ));
        }
        let child = tokio::process::Command::new(bin(service))
            .arg("serve")
            .envs(envs)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {service}: {e}"));
        let port = listening_port(child.id().expect("pid"), service).await;
        ports.insert(service, port);
        children.push(child);
    }
    for (service, port) in &ports {
        let url = format!("http://127.0.0.1:{port}/readyz");
        eventually(&format!("{service} ready"), READY_WAIT, || async {
            let r = http.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    // A reading through all of them.
    let status = http
        .post(format!("http://127.0.0.1:{}/v1/sms", ports["ingest"]))
        .bearer_auth(TOKEN)
        .json(
            &serde_json::json!({"message_id": "roles-1", "from": "+79000001001",
                                  "to": "7377", "text": "1000001 45100"}),
        )
        .send()
        .await
        .expect("ingest")
        .status();
    assert_eq!(status, 202);
    let period = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Yekaterinburg)
        .format("%Y-%m")
        .to_string();
    let billing = format!("http://127.0.0.1:{}", ports["billing-export"]);
    let get = |url: String, token: &'static str| {
        let http = http.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.ok()?))
        }
    };
    eventually("the reading in billing-export's export", WAIT, || {
        let f = get(format!("{billing}/v1/exports/{period}.csv"), EXPORT_TOKEN);
        async move {
            let (status, body) = f.await?;
            (status == 200 && body.contains("1000001,")).then_some(())
        }
    })
    .await;
    // billing-export reads the validator's registry view under its own role.
    let (status, missing) = get(
        format!("{billing}/v1/exports/{period}/missing.csv"),
        EXPORT_TOKEN,
    )
    .await
    .expect("missing report");
    assert_eq!(status, 200, "missing-readings report: {missing}");
    assert!(missing.contains("1000002,"), "{missing}");
    // The console reads the owners' views under its own role: the message, its
    // decision, and billing's state.
    let console = format!("http://127.0.0.1:{}", ports["console"]);
    let timeline = eventually("the message in the console", WAIT, || {
        let f = get(format!("{console}/api/v1/messages/roles-1"), API_TOKEN);
        async move {
            let (status, body) = f.await?;
            (status == 200 && body.contains("accepted")).then_some(body)
        }
    })
    .await;
    assert!(timeline.contains("1000001"), "{timeline}");
    let (status, account) = get(format!("{console}/api/v1/accounts/1000001"), API_TOKEN)
        .await
        .expect("account page");
    assert_eq!(status, 200, "{account}");

    // Nothing else across schemas: another service's table is refused.
    for (role, table) in [
        ("console", "validator.meters"),
        ("billing_export", "validator.meters"),
        ("console", "notifier.deliveries"),
        ("notifier", "validator.readings"),
    ] {
        let (_, _, password) = ROLES.iter().find(|r| r.1 == role).expect("role");
        let mut conn = PgConnection::connect(&url_as(&env, role, password))
            .await
            .expect("connect as role");
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM {table} LIMIT 1"
        )))
        .execute(&mut conn)
        .await
        .expect_err("another service's table");
        assert!(
            refused.to_string().contains("permission denied"),
            "{role} on {table}: {refused}"
        );
    }

    for mut child in children {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    drop(admin);
    for service in SERVICES {
        let user = broker_user(&env, service);
        let _ = env
            .broker
            .api(&http, |h, api| h.delete(format!("{api}/api/users/{user}")))
            .await;
    }
    env.cleanup().await;
}
