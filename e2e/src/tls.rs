//! The TLS backends of `scripts/tls-backends.sh`: a RabbitMQ node with only a TLS
//! listener and a PostgreSQL cluster that refuses connections without TLS, with a test
//! CA and an unrelated one. Started (idempotently) by the first test that needs them;
//! each test takes a vhost and a database of its own there.

use std::collections::HashMap;
use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection};

pub struct TlsBackends {
    vars: HashMap<String, String>,
}

impl TlsBackends {
    /// Runs `scripts/tls-backends.sh start` (idempotent, serialised by the script) and
    /// reads what it wrote.
    pub async fn start() -> TlsBackends {
        shared::tls::install_provider();
        let out = tokio::process::Command::new("bash")
            .arg(crate::repo_root().join("scripts/tls-backends.sh"))
            .arg("start")
            .output()
            .await
            .expect("bash scripts/tls-backends.sh runs");
        assert!(
            out.status.success(),
            "scripts/tls-backends.sh start failed (scripts/tls-backends.sh install?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = tokio::process::Command::new("bash")
            .arg(crate::repo_root().join("scripts/tls-backends.sh"))
            .arg("env")
            .output()
            .await
            .expect("scripts/tls-backends.sh env");
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        TlsBackends { vars }
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("scripts/tls-backends.sh env has no {name}"))
    }

    /// The test CA: what `SSL_CERT_FILE` names for the links to be trusted.
    pub fn ca_file(&self) -> PathBuf {
        self.var("TLS_CA_FILE").into()
    }

    /// A CA that signed none of the servers' certificates.
    pub fn other_ca_file(&self) -> PathBuf {
        self.var("TLS_OTHER_CA_FILE").into()
    }

    /// The servers' certificate and key (signed by the test CA), for a TLS peer.
    pub fn server_cert(&self) -> (String, String) {
        (
            self.var("TLS_SERVER_CERT").into(),
            self.var("TLS_SERVER_KEY").into(),
        )
    }

    /// A server certificate and key signed by the other CA.
    pub fn other_server_cert(&self) -> (String, String) {
        (
            self.var("TLS_OTHER_SERVER_CERT").into(),
            self.var("TLS_OTHER_SERVER_KEY").into(),
        )
    }

    /// A vhost `name` on the TLS node; its `amqps://` URL.
    pub async fn vhost(&self, name: &str) -> String {
        let out = tokio::process::Command::new("bash")
            .arg(crate::repo_root().join("scripts/tls-backends.sh"))
            .args(["vhost", name])
            .output()
            .await
            .expect("scripts/tls-backends.sh vhost");
        assert!(
            out.status.success(),
            "cannot create vhost {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}/{name}", self.var("TLS_AMQPS_BASE"))
    }

    /// The admin connection: verified against the test CA (`sslrootcert`), not through
    /// the environment, which the services get.
    async fn admin(&self) -> PgConnection {
        let url = format!(
            "{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.var("TLS_PG_BASE"),
            self.ca_file().display()
        );
        PgConnection::connect(&url)
            .await
            .expect("the TLS PostgreSQL answers")
    }

    /// A database `name` on the TLS cluster; its URL with `sslmode=verify-full` (the
    /// CA comes from `SSL_CERT_FILE`).
    pub async fn database(&self, name: &str) -> String {
        let mut admin = self.admin().await;
        admin
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{name}\""
            ))))
            .await
            .expect("create database");
        format!("{}/{name}?sslmode=verify-full", self.var("TLS_PG_BASE"))
    }

    /// Connections to database `name`, as (over TLS, in clear).
    pub async fn connections(&self, name: &str) -> (i64, i64) {
        let mut admin = self.admin().await;
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
        )
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_ssl")
    }

    /// A query on database `name` (verified like the admin connection).
    pub async fn count(&self, name: &str, sql: &str) -> i64 {
        let url = format!(
            "{}/{name}?sslmode=verify-full&sslrootcert={}",
            self.var("TLS_PG_BASE"),
            self.ca_file().display()
        );
        let mut conn = PgConnection::connect(&url).await.expect("connect");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut conn)
            .await
            .unwrap_or(0)
    }

    /// Drops vhost and database `name`.
    pub async fn cleanup(&self, name: &str) {
        let _ = tokio::process::Command::new("bash")
            .arg(crate::repo_root().join("scripts/tls-backends.sh"))
            .args(["drop-vhost", name])
            .output()
            .await;
        let mut admin = self.admin().await;
        let _ = admin
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            ))))
            .await;
    }
}
