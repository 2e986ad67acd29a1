//! The four services as processes, on one test's vhost and database.
//!
//! Ports: a service is first started with `HTTP_ADDR=127.0.0.1:0` and the harness
//! reads the port it bound from `/proc` (`shared::testing::listening_port`), so no
//! port is ever chosen for it and released; a restart (`kill -9`, SIGTERM) asks for
//! the same port again, because clients (a drill's gateway stream, Kannel's get-url)
//! hold its URL. Kannel needs its four ports in its config file: they are leased
//! (`shared::testing::PortLease`) and held while it runs.
//!
//! A system may run on the project's own RabbitMQ cluster with several replicas of
//! every service ([`Scale`], SPEC §5 "past one machine"): each replica is an
//! *instance* named after its service (`validator`, `validator-2`, …) with its own
//! process, port and log; every `AMQP_URL` lists all the cluster's nodes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use shared::testing::{
    Metrics, PortLease, READY_WAIT, STOP_WAIT, TestBroker, TestEnv, listening_port, with_leases,
};

pub const TOKEN: &str = "e2e-ingest-token-0123";
/// The bearer token of the exports (EXPORT_TOKEN).
pub const EXPORT_TOKEN: &str = "e2e-export-token-0123";
/// The secrets the bots' webhooks take (`TELEGRAM_WEBHOOK_SECRET`, `MAX_WEBHOOK_SECRET`).
pub const TELEGRAM_SECRET: &str = "e2e-telegram-secret-0123";
pub const MAX_SECRET: &str = "e2e-max-secret-0123";
pub const SERVICES: [&str; 4] = ["ingest", "validator", "notifier", "billing-export"];

/// The most replicas of one service a system runs.
pub const MAX_REPLICAS: usize = 3;

/// Instance names, by service (as in [`SERVICES`]) and replica: the first replica
/// is the service's own name, so a one-replica system is what it always was.
const INSTANCES: [[&str; MAX_REPLICAS]; 4] = [
    ["ingest", "ingest-2", "ingest-3"],
    ["validator", "validator-2", "validator-3"],
    ["notifier", "notifier-2", "notifier-3"],
    ["billing-export", "billing-export-2", "billing-export-3"],
];

/// The instance of `service`'s replica `replica` (0-based).
pub fn instance(service: &str, replica: usize) -> &'static str {
    let row = SERVICES
        .iter()
        .position(|s| *s == service)
        .unwrap_or_else(|| panic!("no service `{service}`"));
    assert!(replica < MAX_REPLICAS, "at most {MAX_REPLICAS} replicas");
    INSTANCES[row][replica]
}

/// The service an instance is a replica of (its binary).
pub fn service_of(instance: &str) -> &'static str {
    INSTANCES
        .iter()
        .zip(SERVICES)
        .find(|(names, _)| names.contains(&instance))
        .map(|(_, service)| service)
        .unwrap_or_else(|| panic!("no instance `{instance}`"))
}

/// Where a system runs and how many replicas of each service.
#[derive(Debug, Clone)]
pub struct Scale {
    pub broker: TestBroker,
    pub replicas: usize,
}

impl Scale {
    /// The machine's broker, one process per service.
    pub fn single() -> Scale {
        Scale {
            broker: TestBroker::machine(),
            replicas: 1,
        }
    }

    /// The project's cluster (`scripts/cluster.sh start`) with `replicas` of each.
    pub fn cluster(replicas: usize) -> Scale {
        Scale {
            broker: TestBroker::cluster(),
            replicas: replicas.clamp(1, MAX_REPLICAS),
        }
    }
}

/// How the notifier sends SMS.
#[derive(Debug, Clone)]
pub enum Gateway {
    Log,
    /// A real Kannel started by the harness (scripts/kannel.sh).
    Kannel,
    /// An SMS aggregator's HTTP API (a test double's base URL).
    Http(String),
}

#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub gateway: Gateway,
    /// SMTP URL; `None` writes e-mails to a directory.
    pub smtp_url: Option<String>,
    pub billing_url: Option<String>,
    pub registry_csv: String,
    /// Extra environment for every service (e.g. window days).
    pub env: Vec<(String, String)>,
    /// Where the system's work directory (e-mails, exports) is made; `None`: the
    /// system's temporary directory.
    pub work_in: Option<PathBuf>,
}

pub struct Kannel {
    pub dir: tempfile::TempDir,
    pub smsc_port: u16,
    pub sendsms_port: u16,
    /// Held while Kannel runs, so no parallel test is given its ports.
    _ports: Vec<PortLease>,
}

pub struct System {
    pub env: TestEnv,
    /// Each service's HTTP port, known once it listened.
    pub ports: HashMap<&'static str, u16>,
    procs: HashMap<&'static str, tokio::process::Child>,
    pub kannel: Option<Kannel>,
    pub work: tempfile::TempDir,
    opts: SystemOptions,
    pub replicas: usize,
    http: reqwest::Client,
}

/// Where cargo put the service binaries: `$E2E_BIN_DIR`, else next to the running
/// executable when it is a binary of the workspace itself (`target/<profile>/loadgen`),
/// else one level up (a test executable lives in `target/<profile>/deps/`).
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("E2E_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    if let Some(here) = exe.parent()
        && here.file_name().is_none_or(|n| n != "deps")
        && here.join(name).is_file()
    {
        return here.join(name);
    }
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    dir.join(name)
}

impl System {
    pub async fn start(opts: SystemOptions) -> System {
        System::start_scaled(opts, Scale::single()).await
    }

    /// As [`System::start`], on `scale`'s broker with its replicas of each service.
    pub async fn start_scaled(opts: SystemOptions, scale: Scale) -> System {
        let env = TestEnv::on(scale.broker).await;
        let work = match &opts.work_in {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .expect("work dir");
        let mut system = System {
            env,
            ports: HashMap::new(),
            procs: HashMap::new(),
            kannel: None,
            work,
            opts,
            replicas: scale.replicas,
            http: reqwest::Client::new(),
        };
        system.import_registry().await;
        // ingest first: Kannel's get-url names its port, and the notifier's
        // configuration names Kannel's.
        for i in system.instances("ingest") {
            system.spawn(i).await;
        }
        if matches!(system.opts.gateway, Gateway::Kannel) {
            system.kannel = Some(system.start_kannel().await);
        }
        for s in &SERVICES[1..] {
            for i in system.instances(s) {
                system.spawn(i).await;
            }
        }
        for i in system.all_instances() {
            system.wait_ready(i).await;
        }
        system
    }

    /// The instances of `service`, first replica first.
    pub fn instances(&self, service: &str) -> Vec<&'static str> {
        (0..self.replicas).map(|r| instance(service, r)).collect()
    }

    /// Every instance of every service.
    pub fn all_instances(&self) -> Vec<&'static str> {
        SERVICES.iter().flat_map(|s| self.instances(s)).collect()
    }

    /// The base URL of every replica of `service` (a load balancer's backends).
    pub fn bases(&self, service: &str) -> Vec<String> {
        self.instances(service)
            .into_iter()
            .map(|i| self.base(i))
            .collect()
    }

    async fn start_kannel(&self) -> Kannel {
        let get_url = format!(
            "http://127.0.0.1:{}/v1/sms/kannel?token={TOKEN}&id=%I&from=%p&to=%P&ts=%T&text=%a",
            self.ports["ingest"]
        );
        // Leased ports, held by us: a failure is something outside the lease scheme
        // listening on one of them, and only then is Kannel tried on new ones.
        with_leases(4, 3, |ports| {
            let get_url = get_url.clone();
            async move {
                let dir = tempfile::tempdir().expect("kannel dir");
                let [admin, smsbox, smsc, sendsms] = [0, 1, 2, 3].map(|i| ports[i].port());
                let out = tokio::process::Command::new("bash")
                    .arg(crate::repo_root().join("scripts/kannel.sh"))
                    .arg("start")
                    .arg(dir.path())
                    .env("KANNEL_ADMIN_PORT", admin.to_string())
                    .env("KANNEL_SMSBOX_PORT", smsbox.to_string())
                    .env("KANNEL_SMSC_PORT", smsc.to_string())
                    .env("KANNEL_SENDSMS_PORT", sendsms.to_string())
                    .env("KANNEL_GET_URL", get_url)
                    .env("KANNEL_LOG_LEVEL", "1")
                    // A busy machine: the script's default (20 s) is for a quiet one.
                    .env("KANNEL_START_TIMEOUT", "60")
                    .output()
                    .await
                    .expect("scripts/kannel.sh runs");
                if !out.status.success() {
                    return Err(format!(
                        "Kannel did not start (scripts/kannel.sh install): {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                Ok(Kannel {
                    dir,
                    smsc_port: smsc,
                    sendsms_port: sendsms,
                    _ports: ports,
                })
            }
        })
        .await
    }

    async fn import_registry(&self) {
        let file = self.work.path().join("registry.csv");
        std::fs::write(&file, &self.opts.registry_csv).expect("write registry");
        let out = tokio::process::Command::new(bin("validator"))
            .arg("import-registry")
            .arg(&file)
            .arg("--strict")
            .env("DATABASE_URL", &self.env.database_url)
            .env("RUST_LOG", "warn")
            // The services' extra environment (another DATABASE_URL, say) applies too.
            .envs(self.opts.env.iter().cloned())
            .output()
            .await
            .expect("validator binary (cargo build --workspace)");
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The process id of a running service (for `/proc/<pid>/status`).
    pub fn pid(&self, service: &str) -> Option<u32> {
        self.procs.get(service)?.id()
    }

    pub fn base(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.work.path().join("mail")
    }

    pub fn export_dir(&self) -> PathBuf {
        self.work.path().join("exports")
    }

    pub fn log_path(&self, service: &str) -> PathBuf {
        self.work.path().join(format!("{service}.log"))
    }

    fn service_env(&self, service: &'static str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("AMQP_URL".into(), self.env.amqp_url.clone()),
            ("DATABASE_URL".into(), self.env.database_url.clone()),
            ("DATABASE_MAX_CONNECTIONS".into(), "5".into()),
            // Port 0 the first time; the same port again on a restart.
            (
                "HTTP_ADDR".into(),
                format!("127.0.0.1:{}", self.ports.get(service).unwrap_or(&0)),
            ),
            ("RUST_LOG".into(), "info".into()),
            ("SHUTDOWN_GRACE_SECONDS".into(), "30".into()),
            ("INGEST_TOKEN".into(), TOKEN.into()),
            ("EXPORT_TOKEN".into(), EXPORT_TOKEN.into()),
            ("TELEGRAM_WEBHOOK_SECRET".into(), TELEGRAM_SECRET.into()),
            ("MAX_WEBHOOK_SECRET".into(), MAX_SECRET.into()),
            // The gateways' token opens the cabinet's endpoint too here, so that a
            // client with one bearer (schemathesis) reaches every ingest operation.
            ("CABINET_TOKEN".into(), TOKEN.into()),
            ("EXPORT_DIR".into(), self.export_dir().display().to_string()),
            ("SMS_SENDER".into(), "7377".into()),
            (
                "EMAIL_FROM".into(),
                "Энергосбыт <meter@energo.example>".into(),
            ),
        ];
        match &self.opts.gateway {
            Gateway::Log => env.push(("SMS_GATEWAY".into(), "log".into())),
            Gateway::Http(base) => {
                env.push(("SMS_GATEWAY".into(), "http".into()));
                env.push(("SMS_HTTP_URL".into(), format!("{base}/sms")));
                env.push(("SMS_HTTP_TOKEN".into(), "sms-secret".into()));
            }
            Gateway::Kannel => {
                let port = self.kannel.as_ref().map(|k| k.sendsms_port).unwrap_or(0);
                env.push(("SMS_GATEWAY".into(), "kannel".into()));
                env.push((
                    "KANNEL_SENDSMS_URL".into(),
                    format!("http://127.0.0.1:{port}/cgi-bin/sendsms"),
                ));
                env.push(("KANNEL_USER".into(), "notifier".into()));
                env.push(("KANNEL_PASSWORD".into(), "secret".into()));
            }
        }
        match &self.opts.smtp_url {
            Some(url) => env.push(("SMTP_URL".into(), url.clone())),
            None => env.push(("EMAIL_DIR".into(), self.mail_dir().display().to_string())),
        }
        if let Some(url) = &self.opts.billing_url {
            env.push(("BILLING_URL".into(), url.clone()));
            env.push(("BILLING_TOKEN".into(), "billing-secret".into()));
        }
        env.extend(self.opts.env.iter().cloned());
        env
    }

    /// Starts (or restarts) one service process and returns once it listens. The
    /// first start binds port 0 and the port is read from `/proc`; a restart asks
    /// for the same port, which the clients of the system already hold.
    pub async fn spawn(&mut self, service: &'static str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(service))
            .expect("log file");
        let log2 = log.try_clone().expect("log file");
        let child = tokio::process::Command::new(bin(service_of(service)))
            .arg("serve")
            .envs(self.service_env(service))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {service} ({}): {e}",
                    bin(service_of(service)).display()
                )
            });
        let pid = child.id().expect("a started child has a pid");
        self.procs.insert(service, child);
        if !self.ports.contains_key(service) {
            let port = listening_port(pid, service).await;
            self.ports.insert(service, port);
        }
    }

    /// Waits until `service` answers its readiness probe; panics with where its log
    /// is if it exits first (on a restart: its port taken meanwhile, say).
    pub async fn wait_ready(&mut self, service: &'static str) {
        let url = format!("{}/readyz", self.base(service));
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            let exited = self
                .procs
                .get_mut(service)
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(
                !exited,
                "{service} exited while starting; its log: {}",
                self.log_path(service).display()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} not ready within {READY_WAIT:?}; its log: {}",
                self.log_path(service).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`: no shutdown, nothing acked.
    pub async fn kill9(&mut self, service: &'static str) {
        if let Some(mut child) = self.procs.remove(service) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM and the exit status.
    pub async fn terminate(&mut self, service: &'static str) -> Option<std::process::ExitStatus> {
        let mut child = self.procs.remove(service)?;
        let pid = child.id()?;
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        tokio::time::timeout(STOP_WAIT, child.wait())
            .await
            .ok()?
            .ok()
    }

    pub async fn restart(&mut self, service: &'static str) {
        self.kill9(service).await;
        self.spawn(service).await;
        self.wait_ready(service).await;
    }

    /// Sends an SMS the way an aggregator's webhook does; returns the HTTP status.
    pub async fn post_sms(&self, id: &str, from: &str, text: &str) -> u16 {
        self.post_sms_at(id, from, text, None).await
    }

    /// As `post_sms`, with the gateway's time of receipt.
    pub async fn post_sms_at(
        &self,
        id: &str,
        from: &str,
        text: &str,
        received_at: Option<&str>,
    ) -> u16 {
        let mut body =
            serde_json::json!({"message_id": id, "from": from, "to": "7377", "text": text});
        if let Some(at) = received_at {
            body["received_at"] = serde_json::Value::String(at.to_owned());
        }
        match self
            .http
            .post(format!("{}/v1/sms", self.base("ingest")))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// A service's `/metrics`, parsed (empty when it cannot be read).
    pub async fn metrics(&self, service: &str) -> Metrics {
        let text = match self
            .http
            .get(format!("{}/metrics", self.base(service)))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Metrics::parse(&text)
    }

    /// What every service's port serves to anyone, without a token — `/metrics`,
    /// `/healthz`, `/readyz` — as ("<service> <path>", body).
    pub async fn open_pages(&self) -> Vec<(String, String)> {
        let mut pages = Vec::new();
        for service in self.all_instances() {
            for path in ["/metrics", "/healthz", "/readyz"] {
                let body = match self
                    .http
                    .get(format!("{}{path}", self.base(service)))
                    .send()
                    .await
                {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => format!("(unreachable: {e})"),
                };
                pages.push((format!("{service} {path}"), body));
            }
        }
        pages
    }

    /// The sum of a service's samples called `name` that carry `labels`, over all
    /// its replicas.
    pub async fn metric(&self, service: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sum = 0.0;
        for i in self.instances(service_of(service)) {
            sum += self.metrics(i).await.sum(name, labels);
        }
        sum
    }

    /// Panics unless every service answers `GET /healthz` with 200 (`after`: what
    /// they just went through, for the message).
    pub async fn assert_all_alive(&self, after: &str) {
        for s in self.all_instances() {
            let r = self
                .http
                .get(format!("{}/healthz", self.base(s)))
                .send()
                .await;
            assert!(
                r.is_ok_and(|r| r.status() == 200),
                "{s} is not alive after {after}:\n{}",
                self.logs(s)
            );
        }
    }

    pub fn logs(&self, service: &str) -> String {
        std::fs::read_to_string(self.log_path(service)).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        for s in self.all_instances() {
            let _ = self.terminate(s).await;
        }
        if let Some(k) = self.kannel.take() {
            let _ = tokio::process::Command::new("bash")
                .arg(crate::repo_root().join("scripts/kannel.sh"))
                .arg("stop")
                .arg(k.dir.path())
                .output()
                .await;
        }
        self.env.cleanup().await;
    }
}
