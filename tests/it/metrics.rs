//! `/metrics` tells outcomes apart: a stalled body and an unreadable one are their own webhook
//! outcomes, and every route has request counts and latency by its pattern.

use crate::support::{TestApp, FINANCE_TOKEN};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metrics(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// Writes `raw` on a fresh connection and returns the answer's first bytes.
async fn exchange(app: &TestApp, raw: &[u8]) -> String {
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("the server answers")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn a_stalled_body_and_an_unreadable_one_are_their_own_outcomes() {
    let app = TestApp::start().await;
    // Promises 100 bytes, sends 3, then goes quiet: 408 after the body read timeout.
    let stalled = exchange(
        &app,
        b"POST /api/billing/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    )
    .await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    // A chunk size that is not hexadecimal: the body cannot be read.
    let broken = exchange(
        &app,
        b"POST /api/billing/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(broken.starts_with("HTTP/1.1 400"), "{broken}");
    let text = metrics(&app).await;
    assert_lines(
        &text,
        &[
            "billing_ledger_webhooks_total{outcome=\"too_slow\"} 1",
            "billing_ledger_webhooks_total{outcome=\"unreadable\"} 1",
        ],
    );
    assert!(!text.contains("outcome=\"not_an_event\""), "{text}");
}

#[tokio::test]
async fn read_routes_are_counted_and_timed_by_pattern() {
    let app = TestApp::start().await;
    for _ in 0..2 {
        assert_eq!(
            app.get("/api/billing/events", FINANCE_TOKEN).await.status(),
            200
        );
    }
    for tenant in ["tenant-a", "tenant-b"] {
        let path = format!("/api/billing/tenants/{tenant}/pricing");
        assert_eq!(app.get(&path, FINANCE_TOKEN).await.status(), 404);
    }
    assert_eq!(app.get("/api/billing/events", "wrong").await.status(), 401);
    assert_eq!(app.get("/nowhere", FINANCE_TOKEN).await.status(), 404);
    let text = metrics(&app).await;
    assert_lines(
        &text,
        &[
            "billing_ledger_http_requests_total{route=\"/api/billing/events\",method=\"GET\",status=\"200\"} 2",
            "billing_ledger_http_requests_total{route=\"/api/billing/events\",method=\"GET\",status=\"401\"} 1",
            "billing_ledger_http_requests_total{route=\"/api/billing/tenants/{tenant_id}/pricing\",method=\"GET\",status=\"404\"} 2",
            "billing_ledger_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
            "billing_ledger_http_request_duration_seconds_count{route=\"/api/billing/events\",method=\"GET\"} 3",
            "billing_ledger_http_request_duration_seconds_count{route=\"/api/billing/tenants/{tenant_id}/pricing\",method=\"GET\"} 2",
        ],
    );
    assert!(!text.contains("tenant-a"), "raw paths never become labels");
}
