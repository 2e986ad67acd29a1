//! A service run in-process, the way its tests call it: `run(config, listener,
//! shutdown)` on a listener the harness bound to `127.0.0.1:0` (the kernel picks the
//! port, so parallel tests never race for one), its readiness awaited on `/readyz`,
//! its `/metrics` read with the one parser ([`Metrics`]), and a stop that cancels
//! and joins it within a deadline.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::{READY_WAIT, STOP_WAIT, WAIT, eventually};

/// A service running in this test process.
pub struct Service {
    name: String,
    addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, for building request URLs.
    pub base: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl Service {
    /// Binds `127.0.0.1:0`, builds the configuration for the bound address and
    /// spawns `run`. Returns at once; [`Service::ready`] waits for `/readyz`.
    pub async fn spawn<C, R, Fut>(
        name: &str,
        config: impl FnOnce(SocketAddr) -> C,
        run: R,
    ) -> Service
    where
        R: FnOnce(C, TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config(addr), listener, shutdown.clone()));
        Service {
            name: name.to_owned(),
            addr,
            base: format!("http://{addr}"),
            shutdown,
            task,
            http: reqwest::Client::new(),
        }
    }

    /// [`Service::spawn`], then [`Service::ready`].
    pub async fn start<C, R, Fut>(
        name: &str,
        config: impl FnOnce(SocketAddr) -> C,
        run: R,
    ) -> Service
    where
        R: FnOnce(C, TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let service = Service::spawn(name, config, run).await;
        service.ready().await;
        service
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/readyz` answers 200 (broker and database reachable, consumers
    /// running). Panics, naming the service, if it exits first.
    pub async fn ready(&self) {
        let what = format!("{} ready", self.name);
        eventually(&what, READY_WAIT, || async {
            assert!(
                !self.task.is_finished(),
                "{} exited while starting",
                self.name
            );
            let r = self.http.get(self.url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// A GET on the service.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.name))
    }

    /// The service's `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        Metrics::parse(&text)
    }

    /// The sum of the samples of `name` carrying `labels` (see [`Metrics::sum`]).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().await.sum(name, labels)
    }

    /// Waits until the sample reaches at least `value`; returns what it read.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) -> f64 {
        let what = format!("{}: {name}{labels:?} ≥ {value}", self.name);
        eventually(&what, WAIT, || async {
            let now = self.metric(name, labels).await;
            (now >= value).then_some(now)
        })
        .await
    }

    /// Cancels the shutdown token and waits for `run` to return, which must be `Ok`.
    pub async fn stop(self) {
        let name = self.name.clone();
        if let Err(e) = self.stop_result().await {
            panic!("{name} did not exit cleanly: {e:#}");
        }
    }

    /// Cancels the shutdown token and returns what `run` returned. Panics if it
    /// panicked or did not return within [`STOP_WAIT`].
    pub async fn stop_result(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.finished().await
    }

    /// Waits (within [`STOP_WAIT`]) for `run` to return by itself, without cancelling.
    pub async fn finished(self) -> anyhow::Result<()> {
        match tokio::time::timeout(STOP_WAIT, self.task).await {
            Err(_) => panic!("{} still running {STOP_WAIT:?} after shutdown", self.name),
            Ok(Err(e)) => panic!("{} panicked: {e}", self.name),
            Ok(Ok(result)) => result,
        }
    }

    /// The token `run` was given, for tests that cancel it at a moment of their own.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
