//! Fault drills (SPEC §5): the whole system takes a stream of SMS whose every outcome
//! is known in advance ([`plan`]), posted by a gateway that retries what was not taken
//! ([`stream`]), while a fault is applied — a service killed with `kill -9`, the broker
//! or the database restarted, a peer down or answering `503`. Afterwards every message
//! and every effect is accounted for ([`account`]) and the drill prints one line of the
//! drill table (and appends it to `$DRILL_REPORT`, for `scripts/drills.sh`).
//!
//! Sizes come from the environment: `DRILL_MESSAGES` (1000), `DRILL_RATE` (messages
//! per second, 100), `DRILL_IN_FLIGHT` (32), `DRILL_OUTAGE_SECONDS` (5),
//! `DRILL_KILL_DOWN_SECONDS` (1: how long a killed service stays down), `DRILL_KILLS`
//! (3: kills per kill drill, spread over the stream),
//! `DRILL_DEADLINE_SECONDS` (to become quiet after the stream; 120 + 3 × outage),
//! `DRILL_SEED` (1), `DRILL_ACCOUNTS` (300), `DRILL_WEB_PERCENT` (20: the share of the
//! stream sent through the resident web form, on `DRILL_WEB_ACCOUNTS` accounts of
//! their own, 25 % of `DRILL_ACCOUNTS` by default, 20 at least).
//!
//! Web forms are received when they are posted, so a drill's window
//! (`WINDOW_START_DAY`, `WINDOW_END_DAY`) holds today: [`plan::Mix::for_today`].

pub mod account;
pub mod cluster;
pub mod plan;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use account::{Observed, Tally};
use chrono::Datelike as _;
use plan::{Mix, Plan, Registry, Rng};
use stream::{Stream, StreamConfig};

use crate::system::{Scale, TOKEN};
use crate::{BillingDouble, Gateway, SmtpSink, System, SystemOptions};

/// A drill's sizes and durations.
#[derive(Debug, Clone)]
pub struct Settings {
    pub messages: usize,
    pub rate_per_sec: f64,
    pub in_flight: usize,
    /// How long a peer or server stays down (or answers 503).
    pub outage: Duration,
    /// How long a killed service stays down before it is started again.
    pub kill_down: Duration,
    /// How many times a kill drill kills its service during the stream.
    pub kills: usize,
    /// How long the system may take to become quiet after the stream.
    pub deadline: Duration,
    pub seed: u64,
    pub accounts: usize,
    /// Share of the stream sent through the web form, in percent.
    pub web_percent: u64,
    /// Accounts written to only through the web form.
    pub web_accounts: usize,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    pub fn from_env() -> Settings {
        let outage = Duration::from_secs_f64(env_num("DRILL_OUTAGE_SECONDS", 5.0));
        // A message that failed throughout the outage, or found a killed notifier's
        // lease, is retried on the back-off schedule: the deadline covers the first
        // retry after either.
        let recovery = retried_past(outage).max(lease_recovery(SEND_TIMEOUT));
        let deadline = Duration::from_secs(120) + outage * 3 + recovery;
        let accounts = env_num("DRILL_ACCOUNTS", 300);
        Settings {
            messages: env_num("DRILL_MESSAGES", 1000),
            rate_per_sec: env_num("DRILL_RATE", 100.0),
            in_flight: env_num("DRILL_IN_FLIGHT", 32),
            outage,
            kill_down: Duration::from_secs_f64(env_num("DRILL_KILL_DOWN_SECONDS", 1.0)),
            kills: env_num("DRILL_KILLS", 3),
            deadline: Duration::from_secs_f64(env_num(
                "DRILL_DEADLINE_SECONDS",
                deadline.as_secs_f64(),
            )),
            seed: env_num("DRILL_SEED", 1),
            accounts,
            web_percent: env_num::<u64>("DRILL_WEB_PERCENT", 20).min(100),
            // 20 at least: one account of every kind (the kinds cycle by twenty).
            web_accounts: env_num("DRILL_WEB_ACCOUNTS", accounts / 4).max(20),
        }
    }
}

/// The notifier's `SEND_TIMEOUT_SECONDS` in a drill (a killed notifier's leases run
/// out sooner than with the default).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a delivery leased by a killed notifier can hold its message back. The
/// redelivered message finds the lease held and is retried on the consumer's
/// back-off schedule (`RetryPolicy::standard`: 1, 5, 30, 120 s…), so it is sent at
/// the first retry after the lease ran out — not when the lease runs out. The lease
/// is the notifier's: `SEND_TIMEOUT` per round of 16 sends, four rounds for a batch of
/// 64, plus a 20 s margin (notifier/src/handler.rs); with 5 s that is 40 s, and the
/// first retry after it comes 156 s after the redelivery. A quiet deadline below that
/// failed the `kill -9 notifier` drill whenever a kill left such a lease.
pub fn lease_recovery(send_timeout: Duration) -> Duration {
    retried_past(send_timeout * 4 + Duration::from_secs(20))
}

/// When the first retry after `busy` comes, for a message that fails from the start
/// of it (`RetryPolicy::standard`, whose last delay repeats).
pub fn retried_past(busy: Duration) -> Duration {
    let policy = shared::topology::RetryPolicy::standard();
    let mut waited = Duration::ZERO;
    for attempt in 1.. {
        let Some(delay) = policy.delay_for(attempt) else {
            break;
        };
        waited += delay;
        if waited > busy {
            break;
        }
    }
    waited
}

/// A system under drill, its peers, and what it is sent.
pub struct Drill {
    pub name: String,
    pub system: System,
    pub billing: BillingDouble,
    /// The SMS aggregator's HTTP API (`SMS_GATEWAY=http`).
    pub sms: BillingDouble,
    pub smtp: SmtpSink,
    pub plan: Arc<Plan>,
    pub settings: Settings,
    /// The window the system runs with and the share of web forms.
    pub mix: Mix,
    /// The period the web forms fall in (today's, company time).
    pub web_period: String,
    started: Instant,
}

/// The company's time zone in a drill (the services' default `TIMEZONE`).
const ZONE: chrono_tz::Tz = chrono_tz::Asia::Yekaterinburg;

/// Today's day of the month and period, company time.
fn today() -> (u32, shared::events::Period) {
    let now = chrono::Utc::now().with_timezone(&ZONE);
    (now.day(), shared::events::Period::of(&now))
}

impl Drill {
    /// Starts a system with a generated registry; billing and the SMS gateway as
    /// doubles that deduplicate by `Idempotency-Key`, as the real peers do.
    pub async fn start(name: &str) -> Drill {
        Drill::start_scaled(name, Scale::single()).await
    }

    /// As [`Drill::start`], on `scale`'s broker with its replicas of every service.
    pub async fn start_scaled(name: &str, scale: Scale) -> Drill {
        let settings = Settings::from_env();
        // The seed mixes in the name, so drills differ but each is reproducible.
        let seed = name
            .bytes()
            .fold(settings.seed, |h, b| h.rotate_left(5) ^ u64::from(b));
        let mut rng = Rng::new(seed);
        // A form posted today falls in today's period; its accounts' registry
        // readings are of the month before (the SMS ones stay at 2026-10).
        let (day, period) = today();
        let mix = Mix::for_today(day, settings.web_percent);
        let registry = Registry::generate_mixed(
            settings.accounts,
            settings.web_accounts,
            &period.previous().to_string(),
            &mut rng,
        );
        let prefix: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let plan = Plan::generate_mixed(&registry, settings.messages, &prefix, mix, &mut rng);
        let billing = BillingDouble::start().await;
        billing.conflict_on_repeat();
        let sms = BillingDouble::start().await;
        sms.conflict_on_repeat();
        let smtp = SmtpSink::start(&[]).await;
        let options = SystemOptions {
            gateway: Gateway::Http(sms.url.clone()),
            smtp_url: Some(smtp.url()),
            billing_url: Some(billing.url.clone()),
            registry_csv: registry.csv(),
            env: vec![
                // The stream's replies are not what the cost guards are for.
                ("REPLY_HOURLY_BUDGET".into(), "1000000".into()),
                // A killed notifier's lease runs out sooner (see `lease_recovery`).
                (
                    "SEND_TIMEOUT_SECONDS".into(),
                    SEND_TIMEOUT.as_secs().to_string(),
                ),
                // The window holds today, for the web forms (`Mix::for_today`).
                ("WINDOW_START_DAY".into(), mix.window.0.to_string()),
                ("WINDOW_END_DAY".into(), mix.window.1.to_string()),
                // The stream posts the forms as the reverse proxy in front of ingest
                // would pass them on: each resident's address in X-Forwarded-For, so
                // the per-address rate limit (FORM_RATE_PER_MINUTE, its default)
                // holds for each resident rather than for all of them on 127.0.0.1.
                ("FORM_CLIENT_IP_HEADER".into(), "X-Forwarded-For".into()),
            ],
            work_in: None,
        };
        let system = System::start_scaled(options, scale).await;
        Drill {
            name: name.to_owned(),
            system,
            billing,
            sms,
            smtp,
            plan: Arc::new(plan),
            settings,
            mix,
            web_period: period.to_string(),
            started: Instant::now(),
        }
    }

    /// Starts the gateway posting the plan.
    pub fn stream(&self) -> Stream {
        Stream::start(
            self.system.bases("ingest"),
            TOKEN,
            self.plan.clone(),
            StreamConfig {
                rate_per_sec: self.settings.rate_per_sec,
                max_in_flight: self.settings.in_flight,
                give_up_after: self.settings.deadline,
            },
        )
    }

    /// Resolves once the stream is `fraction` under way: the moment to start a fault.
    pub async fn when_under_way(&self, stream: &Stream, fraction: f64) {
        let expected = self.settings.messages as f64 / self.settings.rate_per_sec.max(0.1);
        stream
            .started_fraction(fraction, Duration::from_secs_f64(expected * 3.0 + 60.0))
            .await;
    }

    /// The length of the fault (a peer down, a server stopped): the fault itself, not
    /// a wait for a condition.
    pub async fn outage(&self) {
        tokio::time::sleep(self.settings.outage).await;
    }

    /// `kill -9`, down for `kill_down`, started again and ready.
    pub async fn kill9_and_restart(&mut self, service: &'static str) {
        self.system.kill9(service).await;
        tokio::time::sleep(self.settings.kill_down).await;
        self.system.spawn(service).await;
        self.system.wait_ready(service).await;
    }

    /// Waits for the stream and for quiet, accounts, prints the table line, and stops
    /// the system. Returns the tally; the caller asserts on it.
    pub async fn finish(mut self, stream: Stream) -> Tally {
        let report = stream.finish().await;
        let pool = shared::testing::eventually("drill database", Duration::from_secs(60), || {
            let url = self.system.env.database_url.clone();
            async move { sqlx::PgPool::connect(&url).await.ok() }
        })
        .await;
        let observed = Observed {
            system: &self.system,
            plan: &self.plan,
            billing: &self.billing,
            sms: &self.sms,
            smtp: &self.smtp,
            web_period: &self.web_period,
        };
        let quiet = account::wait_quiet(&observed, &pool, self.settings.deadline).await;
        let mut tally = account::account(&self.name, &observed, &pool, &report, quiet).await;
        tally.seconds = self.started.elapsed().as_secs_f64();
        println!("{}\n{}", Tally::HEADER, tally.row());
        append_report(&tally);
        if !tally.is_clean() {
            for p in &tally.problems {
                eprintln!("  {p}");
            }
            self.keep_logs();
        }
        pool.close().await;
        self.smtp.stop().await;
        self.billing.stop();
        self.sms.stop();
        self.system.stop().await;
        tally
    }

    /// Copies the services' logs out of the work directory (removed at stop) for the
    /// evidence of a failed drill.
    fn keep_logs(&self) {
        let dir = std::env::temp_dir().join("meter-drills").join(format!(
            "{}-{}",
            self.name.replace(' ', "_"),
            std::process::id()
        ));
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        for s in self.system.all_instances() {
            let _ = std::fs::copy(self.system.log_path(s), dir.join(format!("{s}.log")));
        }
        eprintln!("service logs kept in {}", dir.display());
    }
}

/// Appends the line to `$DRILL_REPORT` (the header first if the file is empty), for
/// `scripts/drills.sh`, which runs the drills one at a time and prints the file.
fn append_report(tally: &Tally) {
    use std::io::Write as _;
    let Ok(path) = std::env::var("DRILL_REPORT") else {
        return;
    };
    let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        if fresh {
            let _ = writeln!(f, "{}", Tally::HEADER);
        }
        let _ = writeln!(f, "{}", tally.row());
    }
}

/// Panics with the discrepancies unless the drill lost, duplicated and misrouted nothing.
pub fn assert_clean(tally: &Tally) {
    assert!(
        tally.is_clean(),
        "drill `{}`: lost {}, duplicated {}, wrong {}, dead letters {}, left in queues {}, quiet {}\n{}",
        tally.drill,
        tally.lost,
        tally.duplicated,
        tally.wrong,
        tally.dead_letters,
        tally.left_in_queues,
        tally.quiet,
        tally.problems.join("\n")
    );
}

/// A server taken away from every test (the broker or PostgreSQL). Dropping the guard
/// brings it back — also when the test fails half-way — so one failed drill cannot
/// leave the machine without a broker or a database.
pub struct ServerOutage {
    what: Server,
    restored: bool,
}

#[derive(Debug, Clone, Copy)]
enum Server {
    Broker,
    Postgres,
}

fn postgres_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions.pop().unwrap_or_else(|| "15".into())
}

fn run(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `check` every 500 ms until it succeeds or `deadline` passes (blocking: also
/// used from `Drop`).
fn retry_until(deadline: Duration, check: impl Fn() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl ServerOutage {
    /// `rabbitmqctl stop_app`.
    pub async fn broker() -> ServerOutage {
        Self::begin(Server::Broker).await
    }

    /// `pg_ctlcluster … main stop -m fast`.
    pub async fn postgres() -> ServerOutage {
        Self::begin(Server::Postgres).await
    }

    async fn begin(what: Server) -> ServerOutage {
        // The guard exists before the stop, so even a half-done stop is undone.
        let guard = ServerOutage {
            what,
            restored: false,
        };
        let stopped = tokio::task::spawn_blocking(move || match what {
            Server::Broker => run("rabbitmqctl", &["-q", "stop_app"]),
            Server::Postgres => run(
                "pg_ctlcluster",
                &[
                    "--skip-systemctl-redirect",
                    &postgres_version(),
                    "main",
                    "stop",
                    "-m",
                    "fast",
                ],
            ),
        })
        .await
        .unwrap_or(false);
        assert!(stopped, "could not stop {what:?}");
        guard
    }

    /// Starts the server again and waits until it takes connections.
    pub async fn end(mut self) {
        let what = self.what;
        let back = tokio::task::spawn_blocking(move || restore(what))
            .await
            .unwrap_or(false);
        self.restored = true;
        assert!(back, "{what:?} did not come back");
    }
}

fn restore(what: Server) -> bool {
    match what {
        Server::Broker => {
            run("rabbitmqctl", &["-q", "start_app"]);
            retry_until(Duration::from_secs(60), || {
                run("rabbitmqctl", &["-q", "await_startup"])
            })
        }
        Server::Postgres => {
            // `start` fails when it is running already; what counts is pg_isready.
            run(
                "pg_ctlcluster",
                &[
                    "--skip-systemctl-redirect",
                    &postgres_version(),
                    "main",
                    "start",
                ],
            );
            retry_until(Duration::from_secs(60), || {
                run("pg_isready", &["-q", "-h", "127.0.0.1", "-p", "5432"])
            })
        }
    }
}

impl Drop for ServerOutage {
    fn drop(&mut self) {
        if !self.restored && !restore(self.what) {
            eprintln!("{:?} could not be restarted: start it by hand", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_outlasted_at_the_first_retry_after_it() {
        // Lease 40 s; retries at 1, 6, 36, 156 s.
        assert_eq!(lease_recovery(SEND_TIMEOUT), Duration::from_secs(156));
        // Lease 24 s: the third retry, at 36 s.
        assert_eq!(
            lease_recovery(Duration::from_secs(1)),
            Duration::from_secs(36)
        );
        // A 5 s outage: the third retry, at 6 s.
        assert_eq!(retried_past(Duration::from_secs(5)), Duration::from_secs(6));
    }
}
