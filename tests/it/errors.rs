//! The framework's own answers follow the contract: JSON `{"error": ...}` bodies in the user's
//! terms for malformed parameters, unknown routes and wrong methods (with `Allow`).

use crate::support::{TestApp, FINANCE_TOKEN};
use serde_json::Value;

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn malformed_parameters_are_named_with_the_form_they_take() {
    let app = TestApp::start().await;
    let cursor = "`cursor` must be a `next_cursor` this API returned, unchanged";
    let time = "must be an RFC 3339 time such as 2025-01-31T00:00:00Z";
    let cases = [
        ("/api/billing/events?from=2025", format!("`from` {time}")),
        ("/api/billing/events?to=yesterday", format!("`to` {time}")),
        (
            "/api/billing/events?limit=abc",
            "`limit` must be a whole number from 1 to 1000".into(),
        ),
        (
            "/api/billing/events?limit=0",
            "`limit` must be a whole number from 1 to 1000".into(),
        ),
        (
            "/api/billing/events?limit=1001",
            "`limit` must be a whole number from 1 to 1000".into(),
        ),
        (
            "/api/billing/events?livemode=maybe",
            "`livemode` must be true or false".into(),
        ),
        (
            "/api/billing/events?order=up",
            "`order` must be asc or desc".into(),
        ),
        (
            "/api/billing/tenants/t/pricing?as_of=2025-01-31",
            format!("`as_of` {time}"),
        ),
        (
            "/api/billing/tenants/t/pricing?as_of_position=-1",
            "`as_of_position` must be a log position: a whole number, 0 or more".into(),
        ),
        (
            "/api/billing/checkout-sessions",
            "`tenant_id` is required".into(),
        ),
        ("/api/billing/events?cursor=abc%24", cursor.into()),
        ("/api/billing/events?cursor=xyz", cursor.into()),
        (
            "/api/billing/unresolved?cursor=%7Bnext_cursor%7D",
            cursor.into(),
        ),
        (
            "/api/billing/tenants/t/pricing?as_of=2025-01-31T00:00:00Z&as_of_position=3",
            "give `as_of` or `as_of_position`, not both".into(),
        ),
    ];
    for (path, expected) in cases {
        let (status, error) = error_of(app.get(path, FINANCE_TOKEN).await).await;
        assert_eq!((status, error.as_str()), (400, expected.as_str()), "{path}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow_and_an_unknown_route_404() {
    let app = TestApp::start().await;
    let response = app
        .http
        .delete(app.url("/api/billing/events"))
        .bearer_auth(FINANCE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    let (status, error) = error_of(response).await;
    assert_eq!(status, 405);
    assert_eq!(
        error,
        "/api/billing/events does not take DELETE; it takes GET"
    );
    let response = app.get("/api/billing/webhook", FINANCE_TOKEN).await;
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(error_of(response).await.0, 405);
    let response = app
        .http
        .put(app.url("/api/billing/events/evt_1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(error_of(response).await.0, 405);
    let (status, error) = error_of(app.get("/api/billing/nowhere", FINANCE_TOKEN).await).await;
    assert_eq!(
        (status, error.as_str()),
        (404, "no such route: GET /api/billing/nowhere")
    );
}

/// Writes `head` on a fresh connection and returns the whole answer (the server closes).
async fn raw_answer(app: &TestApp, head: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(&head).await; // the server may answer before reading it all
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the server answers and closes");
    // A server closing with request bytes it never read makes the kernel send a reset after
    // the answer; the answer read before it is what counts (`read_to_end` keeps it).
    if let Err(error) = read {
        assert!(!answer.is_empty(), "no answer before {error}");
    }
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn requests_the_parser_refuses_get_json_bodies_too() {
    let app = TestApp::start().await;
    let get = |target: String, extra: String| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    };
    let cases = [
        (
            get(
                "/api/billing/events?cursor=<next_cursor>".into(),
                String::new(),
            ),
            "HTTP/1.1 400",
            "must be percent-encoded",
        ),
        (
            get(
                format!("/api/billing/events?type={}", "a".repeat(70_000)),
                String::new(),
            ),
            "HTTP/1.1 414",
            "the URI is longer than the server accepts",
        ),
        (
            get(
                "/api/billing/events".into(),
                format!("X-Big: {}\r\n", "a".repeat(500_000)),
            ),
            "HTTP/1.1 431",
            "the request headers are larger than the server accepts",
        ),
    ];
    for (head, status, message) in cases {
        let answer = raw_answer(&app, head).await;
        assert!(answer.starts_with(status), "{answer}");
        assert!(
            answer.contains("\r\ncontent-type: application/json; charset=utf-8\r\n"),
            "{answer}"
        );
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(message),
            "{answer}"
        );
    }
    // Ordinary answers pass untouched, on the same kind of connection.
    let answer = raw_answer(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Issue 10, errors by layer: what is our fault answers 500 with a body that says nothing
/// internal and logs the cause once; an unavailable database still answers 503 (retry). The
/// fault is forced by dropping what our SQL relies on, a table for a read route and the append
/// function for the webhook: PostgreSQL answers "does not exist" (SQLSTATE 42P01, 42883),
/// which no retry can fix.
#[tokio::test]
async fn our_own_faults_answer_500_and_log_the_cause_while_an_outage_answers_503() {
    use crate::process::ServeProcess;
    use crate::support::{cut_connections, signature_now, TestDb};
    let db = TestDb::new().await;
    let process = ServeProcess::start(&db.url, &[("LEDGER_FINANCE_TOKENS", FINANCE_TOKEN)]).await;
    let http = reqwest::Client::new();
    let sessions = || {
        http.get(process.url("/api/billing/checkout-sessions?tenant_id=tenant-acme"))
            .bearer_auth(FINANCE_TOKEN)
            .send()
    };
    assert_eq!(sessions().await.unwrap().status(), 200);

    let client = db.client().await;
    client
        .batch_execute(
            "DROP TABLE checkout_sessions CASCADE;
             DROP FUNCTION ledger_append CASCADE;",
        )
        .await
        .unwrap();
    let (status, error) = error_of(sessions().await.unwrap()).await;
    assert_eq!((status, error.as_str()), (500, "internal error"));

    let event = serde_json::json!({
        "id": "evt_internal_fault", "object": "event", "type": "customer.created",
        "created": 1_700_000_000, "livemode": false,
        "data": {"object": {"id": "cus_internal_fault", "object": "customer"}},
    })
    .to_string();
    let webhook = http
        .post(process.url("/api/billing/webhook"))
        .header("stripe-signature", signature_now(event.as_bytes()))
        .body(event.clone())
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(webhook).await;
    assert_eq!(status, 500);
    assert!(!error.contains("ledger_append"), "{error}");
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        0,
        "nothing stored for the 500"
    );

    cut_connections(&db.name, false).await;
    let (status, _) = error_of(sessions().await.unwrap()).await;
    assert_eq!(status, 503, "an outage is not our fault: retry later");
    cut_connections(&db.name, true).await;

    let (_, log) = process.terminate();
    let internal: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("internal error"))
        .collect();
    assert!(
        internal.iter().any(
            |l| l.contains(r#"relation \"checkout_sessions\" does not exist"#)
                || l.contains(r#"relation "checkout_sessions" does not exist"#)
        ),
        "the read route's cause is logged: {log}"
    );
    assert!(
        internal.iter().any(|l| l.contains("ledger_append")),
        "the webhook's cause is logged: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("database unavailable")),
        "the outage is logged as such: {log}"
    );
}

/// Every route but the webhook refuses a body over 1 MiB before reading it (found by the
/// adversarial pass: six 200 MB sign-in forms, unauthenticated, raised the service to 1.3 GB).
/// The requests declare their length and send none of it: the answer comes from the headers.
#[tokio::test]
async fn bodies_over_the_limit_are_refused_before_they_are_read() {
    use crate::support::ADMIN_TOKEN;
    let app = TestApp::start().await;
    let declared = 200 * 1024 * 1024;
    for (path, extra) in [
        (
            "/console/sign-in",
            "Content-Type: application/x-www-form-urlencoded\r\n".to_owned(),
        ),
        (
            "/api/billing/admin/tenant-links",
            format!("Content-Type: application/json\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"),
        ),
    ] {
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {declared}\r\n\r\n");
        let answer = raw_answer(&app, head.into_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(
            answer.contains("larger than this route accepts"),
            "{answer}"
        );
    }
    // A small form still reaches its handler.
    let small = reqwest::Client::new()
        .post(app.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .await
        .unwrap();
    assert_ne!(small.status(), 413);
}

/// The revenue routes' months are named as months when malformed (they shared the events'
/// `from`/`to` message, which asked for an RFC 3339 time; found by the adversarial pass).
#[tokio::test]
async fn a_malformed_revenue_month_is_named_as_a_month() {
    let app = TestApp::start().await;
    for path in [
        "/api/billing/revenue?from=2025-13&to=2026-01",
        "/api/billing/revenue?from=2025-01&to=2025-01-31T00:00:00Z",
        "/api/billing/revenue/movements?month=2025-1",
    ] {
        let (status, error) = error_of(app.get(path, FINANCE_TOKEN).await).await;
        assert_eq!(status, 400, "{path}");
        assert!(
            error.contains("must be a month, YYYY-MM"),
            "{path}: {error}"
        );
    }
}
