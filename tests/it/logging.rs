//! Log lines cannot be forged: a value carrying a newline or other control characters is
//! escaped, in the text and the JSON format alike.

use crate::process::ServeProcess;
use crate::support::{signature_now, TestDb};
use serde_json::{json, Value};

/// An event ID that, printed raw, would end the line and forge another.
const FORGED_ID: &str = "evt_inject\n2026-01-01T00:00:00.000000Z  INFO forged line\r\u{1b}[2K";

async fn deliver_forged(process: &ServeProcess) {
    let body = json!({
        "id": FORGED_ID,
        "type": "customer.created",
        "created": 1_700_000_000,
        "data": {"object": {"id": "cus_inject", "object": "customer"}},
    })
    .to_string();
    let response = reqwest::Client::new()
        .post(process.url("/api/billing/webhook"))
        .header("stripe-signature", signature_now(body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_event_id_with_a_newline_logs_one_text_line() {
    let db = TestDb::new().await;
    let process = ServeProcess::start(&db.url, &[("LEDGER_LOG_FORMAT", "text")]).await;
    deliver_forged(&process).await;
    let (_, log) = process.terminate();
    let mentions: Vec<&str> = log.lines().filter(|l| l.contains("forged")).collect();
    assert_eq!(mentions.len(), 1, "{log}");
    assert!(mentions[0].contains("webhook stored"), "{log}");
    assert!(
        mentions[0]
            .contains(r"evt_inject\n2026-01-01T00:00:00.000000Z  INFO forged line\r\u{1b}[2K"),
        "{log}"
    );
    assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01")), "{log}");
}

#[tokio::test]
async fn an_event_id_with_a_newline_logs_one_json_line() {
    let db = TestDb::new().await;
    let process = ServeProcess::start(&db.url, &[("LEDGER_LOG_FORMAT", "json")]).await;
    deliver_forged(&process).await;
    let (_, log) = process.terminate();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let stored: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "webhook stored")
        .collect();
    assert_eq!(stored.len(), 1, "{log}");
    assert_eq!(stored[0]["stripe.event_id"], FORGED_ID);
    assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
}
