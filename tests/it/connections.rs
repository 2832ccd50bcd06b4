//! Connection limits: a flood of idle and slow-header connections cannot starve webhooks, and
//! the service lets go of them (header-read and idle timeouts, a cap that sheds the oldest).

use crate::support::{test_config, TestApp, TestDb};
use billing_ledger::http::connections::ConnectionLimits;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CAP: usize = 300;
const TIMEOUT: Duration = Duration::from_secs(2);

async fn start() -> TestApp {
    let db = TestDb::new().await;
    let mut config = test_config(&db.url);
    config.connections = ConnectionLimits {
        max_connections: CAP,
        header_read_timeout: TIMEOUT,
        idle_timeout: TIMEOUT,
    };
    TestApp::start_with(db, config).await
}

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(stream: &mut TcpStream, started: Instant) -> Duration {
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {}
    });
    closed.await.expect("the server closes the connection");
    started.elapsed()
}

/// A metric's value from `/metrics` (0 when absent).
async fn metric(app: &TestApp, line_start: &str) -> f64 {
    let text = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn silent_and_slow_header_connections_are_closed_on_time() {
    let app = start().await;
    // Says nothing: closed once the header-read timeout passes.
    let started = Instant::now();
    let mut silent = TcpStream::connect(address(&app)).await.unwrap();
    let took = closed_after(&mut silent, started).await;
    assert!(
        took >= TIMEOUT - Duration::from_millis(100) && took < TIMEOUT * 3,
        "{took:?}"
    );
    // Sends its head one byte every 100 ms, forever: activity does not keep it open.
    let started = Instant::now();
    let mut slow = TcpStream::connect(address(&app)).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ".repeat(10);
    let dribble = async {
        for byte in head {
            if slow.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    };
    let took = dribble.await;
    assert!(took < TIMEOUT * 3, "the slow head was cut off: {took:?}");
    // After an answer, an idle keep-alive connection is closed after the idle timeout.
    let mut idle = TcpStream::connect(address(&app)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 64];
    let read = idle.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    let took = closed_after(&mut idle, Instant::now()).await;
    assert!(took < TIMEOUT * 3, "{took:?}");
    assert!(
        metric(
            &app,
            "billing_ledger_http_connections_closed_by_limit_total{reason=\"header_read_timeout\"}"
        )
        .await
            >= 2.0
    );
    assert!(
        metric(
            &app,
            "billing_ledger_http_connections_closed_by_limit_total{reason=\"idle_timeout\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn webhooks_are_answered_through_a_flood_of_idle_connections() {
    let app = start().await;
    let mut flood = Vec::new();
    // 2,500 connections, 250 at a time; one in five starts a head it never finishes.
    for batch in 0..10 {
        let address = address(&app);
        let connects = (0..250).map(|i| {
            let address = address.clone();
            async move {
                let connect = TcpStream::connect(address);
                let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
                    .await
                    .ok()?
                    .ok()?;
                if (batch + i) % 5 == 0 {
                    let head = b"POST /api/billing/webhook HTTP/1.1\r\nHost: x\r\n";
                    let _ = stream.write_all(head).await;
                }
                Some(stream)
            }
        });
        flood.extend(
            futures_util::future::join_all(connects)
                .await
                .into_iter()
                .flatten(),
        );
    }
    assert!(
        flood.len() >= 2_000,
        "only {} connections opened",
        flood.len()
    );
    // Every webhook gets through, on a fresh connection each, while the flood is held.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..20 {
        let body = json!({"id": format!("evt_flood_{i}"), "type": "customer.created",
            "created": 1_700_000_000, "data": {"object": {"id": "cus_flood", "object": "customer"}}})
        .to_string();
        let status = crate::support::post_to(&http, &app.url("/api/billing/webhook"), body).await;
        assert_eq!(status, 200, "webhook {i} during the flood");
    }
    let open = metric(&app, "billing_ledger_http_connections_open").await;
    assert!(
        open <= (CAP + 50) as f64,
        "{open} connections open, cap {CAP}"
    );
    assert!(
        metric(
            &app,
            "billing_ledger_http_connections_closed_by_limit_total{reason=\"shed_at_cap\"}"
        )
        .await
            > 0.0
    );
    // The clients leave (or time out): the service lets go of every connection.
    drop(flood);
    let deadline = Instant::now() + TIMEOUT * 3;
    loop {
        let open = metric(&app, "billing_ledger_http_connections_open").await;
        if open <= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
