//! The console on a database of its own, with the owners' schemas (and so their
//! views) made by their own migrations, as in production.

#![allow(dead_code)]

use clap::Parser;
use shared::testing::{Service, TestEnv};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "пароль-для-теста-1";
/// billing-export's EXPORT_TOKEN in the tests, and the console's CONSOLE_EXPORT_TOKEN.
pub const EXPORT_TOKEN: &str = "export-token-for-console-tests";

#[derive(Parser)]
struct ConsoleArgs {
    #[command(flatten)]
    config: console::Config,
}

#[derive(Parser)]
struct BillingArgs {
    #[command(flatten)]
    config: billing_export::Config,
}

pub fn billing_config(env: &TestEnv, addr: std::net::SocketAddr) -> billing_export::Config {
    let addr = addr.to_string();
    BillingArgs::try_parse_from([
        "billing-export",
        "--http-addr",
        &addr,
        "--amqp-url",
        &env.amqp_url,
        "--database-url",
        &env.database_url,
        "--export-token",
        EXPORT_TOKEN,
    ])
    .expect("billing-export config")
    .config
}

#[derive(Parser)]
struct ValidatorArgs {
    #[command(flatten)]
    config: validator::Config,
}

pub fn console_config(
    env: &TestEnv,
    addr: std::net::SocketAddr,
    extra: &[&str],
) -> console::Config {
    let addr = addr.to_string();
    let mut args = vec![
        "console",
        "--http-addr",
        &addr,
        "--amqp-url",
        &env.amqp_url,
        "--database-url",
        &env.database_url,
        "--database-max-connections",
        "5",
    ];
    args.extend_from_slice(extra);
    ConsoleArgs::try_parse_from(args)
        .expect("console config")
        .config
}

/// A validator that takes readings on every day of the month.
pub fn validator_config(env: &TestEnv, addr: std::net::SocketAddr) -> validator::Config {
    let addr = addr.to_string();
    ValidatorArgs::try_parse_from([
        "validator",
        "--http-addr",
        &addr,
        "--amqp-url",
        &env.amqp_url,
        "--database-url",
        &env.database_url,
        "--window-start-day",
        "1",
        "--window-end-day",
        "31",
    ])
    .expect("validator config")
    .config
}

pub struct Console {
    pub env: TestEnv,
    pub service: Service,
    /// A pool on the console's schema (search_path = console).
    pub pool: PgPool,
    /// A pool that may write the owners' tables: the tests' fixtures.
    pub owners: PgPool,
}

impl Console {
    pub async fn start(extra: &[&str]) -> Console {
        Console::start_in(TestEnv::new().await, extra).await
    }

    /// The console on `env` (where a test has started other services first).
    pub async fn start_in(env: TestEnv, extra: &[&str]) -> Console {
        let none = CancellationToken::new();
        for schema in [
            validator::DATABASE,
            notifier::DATABASE,
            billing_export::DATABASE,
        ] {
            schema
                .open(&env.database(), &none)
                .await
                .expect("owner's migrations")
                .close()
                .await;
        }
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let service = Service::start(
            "console",
            |addr| {
                let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
                console_config(&env, addr, &refs)
            },
            console::run,
        )
        .await;
        let pool = shared::db::pool(&env.database(), console::SCHEMA).expect("pool");
        let owners = shared::db::pool(&env.database(), "public").expect("pool");
        Console {
            env,
            service,
            pool,
            owners,
        }
    }

    pub async fn add_user(&self, login: &str, role: console::users::Role) {
        let login = console::users::Login::parse(login).expect("login");
        console::users::add_user(&self.pool, &login, role, PASSWORD)
            .await
            .expect("user added");
    }

    /// A client that keeps cookies and does not follow redirects.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    /// The login form's CSRF token (and its cookie, kept by `client`).
    pub async fn login_token(&self, client: &reqwest::Client) -> String {
        let page = client
            .get(self.url("/login"))
            .send()
            .await
            .expect("GET /login")
            .text()
            .await
            .expect("body");
        hidden(&page, "csrf").expect("a csrf field on the login form")
    }

    pub async fn try_login(
        &self,
        client: &reqwest::Client,
        login: &str,
        password: &str,
    ) -> reqwest::Response {
        let token = self.login_token(client).await;
        client
            .post(self.url("/login"))
            .form(&[
                ("csrf", token.as_str()),
                ("username", login),
                ("password", password),
            ])
            .send()
            .await
            .expect("POST /login")
    }

    /// A logged-in client and its session's CSRF token.
    pub async fn logged_in(&self, login: &str) -> (reqwest::Client, String) {
        let client = self.browser();
        let r = self.try_login(&client, login, PASSWORD).await;
        assert_eq!(r.status(), 303, "login of {login}");
        let page = self.page(&client, "/paper").await;
        let csrf = hidden(&page, "csrf").expect("the session's csrf token");
        (client, csrf)
    }

    /// A supervisor's click on one letter's re-queue button: the status and the page.
    pub async fn requeue_letter(
        &self,
        client: &reqwest::Client,
        csrf: &str,
        key: &str,
    ) -> (u16, String) {
        let r = client
            .post(self.url("/dead/requeue"))
            .form(&[("csrf", csrf), ("queue", "billing-export"), ("key", key)])
            .send()
            .await
            .expect("POST /dead/requeue");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    pub async fn page(&self, client: &reqwest::Client, path: &str) -> String {
        let r = client.get(self.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.expect("body")
    }

    pub async fn stop(self) {
        self.pool.close().await;
        self.owners.close().await;
        self.service.stop().await;
        self.env.cleanup().await;
    }
}

/// The value of the hidden input `name` in an HTML page.
pub fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].to_owned())
}

/// Stores a message as the validator would have decided it (a fixture in the
/// owners' tables; the paper-slip test goes through the real validator instead).
/// One argument per column of the row, as a reader of a test expects to see them.
#[allow(clippy::too_many_arguments)]
pub async fn decided(
    owners: &PgPool,
    id: &str,
    sender: &str,
    text: &str,
    reason: Option<&str>,
    account: Option<&str>,
    reading: Option<uuid::Uuid>,
    reply: Option<&str>,
) {
    sqlx::query(
        "INSERT INTO validator.messages
           (message_id, sender, recipient, body, received_at, channel, outcome, reason, account, reading_id, reply)
         VALUES ($1, $2, '+79037672060', $3, now() - interval '1 minute', 'sms', $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(sender)
    .bind(text)
    .bind(if reason.is_some() { "rejected" } else { "accepted" })
    .bind(reason)
    .bind(account)
    .bind(reading)
    .bind(reply)
    .execute(owners)
    .await
    .expect("message stored");
}

/// A link to the broker for putting dead letters in place: its connection, and a
/// channel in confirm mode.
pub async fn dead_letter_link(env: &TestEnv) -> (lapin::Connection, lapin::Channel) {
    let conn = shared::broker::connect(
        &env.amqp_url,
        "test-dead",
        &shared::topology::system_queues(),
    )
    .await
    .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (conn, channel)
}

/// The re-queue key of the letter `id` on the dead-letter page.
pub fn letter_key(page: &str, id: &str) -> String {
    let at = page
        .find(id)
        .unwrap_or_else(|| panic!("{id} listed in {page}"));
    hidden(&page[at..], "key").expect("its key")
}

/// Puts a letter into `billing-export.dead` as the consumer loop would have: its last
/// error, attempt, routing key and time (`channel` in confirm mode).
pub async fn dead_letter(broker: &lapin::Channel, id: &str) {
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "x-last-error".into(),
        lapin::types::AMQPValue::LongString("billing answered 400: bad period".into()),
    );
    headers.insert("x-attempt".into(), lapin::types::AMQPValue::LongLongInt(1));
    headers.insert(
        "x-original-routing-key".into(),
        lapin::types::AMQPValue::LongString("reading.accepted".into()),
    );
    headers.insert(
        "x-failed-at".into(),
        lapin::types::AMQPValue::LongLongInt(chrono::Utc::now().timestamp_millis()),
    );
    shared::broker::publish_confirmed(
        broker,
        shared::topology::DEAD_LETTER_EXCHANGE,
        "billing-export",
        format!(r#"{{"schema":"reading.accepted/v1","message_id":"{id}"}}"#).as_bytes(),
        shared::broker::persistent_json(id, headers),
        shared::testing::CONFIRM_WAIT,
    )
    .await
    .expect("dead letter published");
}
