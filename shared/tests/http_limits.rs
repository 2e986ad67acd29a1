//! The HTTP server's bounds (SPEC §5, `shared::http::serve`): a client that sends its
//! headers byte by byte is cut off, a body that does not arrive in time is `408`, and
//! no more than `HTTP_MAX_CONNECTIONS` connections are served at once — the rest wait
//! to be accepted and are served once one closes. Small configured limits keep the
//! tests short; the assertions are on outcomes, with a busy machine's deadlines.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use shared::config::{HttpLimits, RuntimeConfig};
use shared::service::Service;
use shared::testing::{Metrics, WAIT};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A service with no broker or database: the skeleton's server, its operational
/// routes and `POST /echo`, which reads the whole body.
struct Server {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(http: HttpLimits) -> Server {
        let runtime = RuntimeConfig {
            shutdown_grace_seconds: 5,
            http,
            ..RuntimeConfig::default()
        };
        let mut service = Service::new("limits-test", "limits_test", &runtime);
        service.routes(Router::new().route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(service.run(listener, shutdown.clone()));
        Server {
            addr,
            shutdown,
            running,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `/metrics` on a connection of its own that is closed afterwards.
    async fn metrics(&self) -> Metrics {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let text = client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        Metrics::parse(&text)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let ended = tokio::time::timeout(WAIT, self.running)
            .await
            .expect("the server stops")
            .expect("task");
        assert!(ended.is_ok(), "{ended:?}");
    }
}

fn limits(header: u64, body: u64, connections: u32) -> HttpLimits {
    HttpLimits {
        http_header_timeout_seconds: header,
        http_body_timeout_seconds: body,
        http_max_connections: connections,
    }
}

/// Reads until the peer closes (or fails); what came.
async fn read_to_close(stream: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_client_sending_its_headers_byte_by_byte_is_cut_off() {
    let server = Server::start(limits(1, 30, 64)).await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    // At one byte per 20 ms the head takes over a minute: far past the 1 s bound.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(3000)
    );
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        for byte in head.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (sent, head.len())
    });
    let answer = tokio::time::timeout(WAIT, read_to_close(&mut read))
        .await
        .expect("the server closes the connection");
    assert!(
        answer.is_empty(),
        "no answer to a head never finished: {answer}"
    );
    // Writing to the closed connection fails soon after: the head was cut off.
    let (sent, whole) = tokio::time::timeout(WAIT, sender)
        .await
        .expect("the writes fail once the server closed")
        .expect("sender");
    assert!(sent < whole, "cut off after {sent} of {whole} bytes");
    eprintln!(
        "slowloris cut off after {sent} bytes, {:?}",
        started.elapsed()
    );
    let timeouts = server
        .metrics()
        .await
        .sum("limits_test_http_header_timeouts_total", &[]);
    assert!(timeouts >= 1.0, "counted: {timeouts}");
    // A normal request is still served.
    let ok = reqwest::get(server.url("/healthz")).await.expect("healthz");
    assert_eq!(ok.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closed() {
    let server = Server::start(limits(10, 1, 64)).await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        let head = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n";
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        // One byte per 100 ms: the 1,000 bytes would take 100 s.
        for _ in 0..1000 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let answer = tokio::time::timeout(WAIT, read_to_close(&mut read))
        .await
        .expect("the server answers and closes");
    sender.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(
        server
            .metrics()
            .await
            .sum("limits_test_http_body_timeouts_total", &[]),
        1.0
    );
    // A body sent at once is read as always.
    let echoed = reqwest::Client::new()
        .post(server.url("/echo"))
        .body(vec![b'y'; 1000])
        .send()
        .await
        .expect("echo");
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.expect("body"), "1000");
    server.stop().await;
}

/// A keep-alive connection that has had its answer and stays open.
async fn held_connection(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the held connection is served");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    stream
}

#[tokio::test]
async fn no_more_connections_than_the_limit_are_served_the_next_waits_its_turn() {
    // Headers may take an hour here, so the held connections stay open.
    let server = Server::start(limits(3600, 30, 2)).await;
    let first = held_connection(&server).await;
    let second = held_connection(&server).await;

    let url = server.url("/healthz");
    let third = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .timeout(WAIT)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Both slots are taken: the third is not served while they are held. (Only a
    // lower bound: however slow the machine, it cannot be served early.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!third.is_finished(), "served beyond the limit: {third:?}");

    drop(first);
    let status = tokio::time::timeout(WAIT, third)
        .await
        .expect("served once a slot is free")
        .expect("task")
        .expect("answered");
    assert_eq!(status, 200);
    drop(second);
    let metrics = shared::testing::eventually("the held connections closed", WAIT, || async {
        let m = server.metrics().await;
        // The scrape's own connection is the one open.
        (m.sum("limits_test_http_connections", &[]) <= 1.0).then_some(m)
    })
    .await;
    assert!(
        metrics.sum("limits_test_http_connection_limit_waits_total", &[]) >= 1.0,
        "{}",
        metrics.text
    );
    server.stop().await;
}
