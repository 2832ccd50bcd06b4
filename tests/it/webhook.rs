//! `POST /api/billing/webhook`: every row of the contract's table.

use crate::events::{envelope, subscription};
use crate::support::{now, test_config, TestApp, TestDb, SECRET, SECRET_OLD};
use billing_ledger::signature::{sign, WebhookSecret};
use serde_json::{json, Value};

fn key(secret: &str) -> WebhookSecret {
    WebhookSecret::parse(secret).unwrap()
}

fn body(id: &str) -> Vec<u8> {
    envelope(
        id,
        "customer.created",
        1_700_000_000,
        json!({"id": "cus_1", "object": "customer"}),
    )
    .to_string()
    .into_bytes()
}

async fn stored(app: &TestApp) -> i64 {
    app.db.count("SELECT count(*) FROM events").await
}

#[tokio::test]
async fn signatures_are_checked_like_stripe_does() {
    let app = TestApp::start().await;
    let t = now();
    let b = body("evt_sig_1");
    let good = sign(&key(SECRET), t, &b);
    let mac = |secret: &str, t: i64| {
        sign(&key(secret), t, &b)
            .split_once("v1=")
            .unwrap()
            .1
            .to_owned()
    };

    // Refused: each of these is a 401 and stores nothing.
    let refused = [
        sign(&key("whsec_someone_else"), t, &b),
        format!("t={t}"),
        format!("v1={}", mac(SECRET, t)),
        "garbage".to_owned(),
        String::new(),
        format!("t={t},v0={}", mac(SECRET, t)),
        format!("t={},v1={}", t - 301, mac(SECRET, t - 301)),
        format!("t={},v1={}", t + 301, mac(SECRET, t + 301)),
        format!("t={t}, v1={}", mac(SECRET, t)),
        format!("t={t},V1={}", mac(SECRET, t)),
    ];
    for header in &refused {
        let response = app.post_signed(&b, Some(header)).await;
        assert_eq!(response.status(), 401, "header {header:?}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string());
    }
    assert_eq!(app.post_signed(&b, None).await.status(), 401, "no header");
    let mut changed = b.clone();
    changed[10] ^= 1;
    assert_eq!(
        app.post_signed(&changed, Some(&good)).await.status(),
        401,
        "body changed after signing"
    );
    assert_eq!(stored(&app).await, 0);

    // Accepted: just inside the tolerance, past and future; rotation; extra schemes.
    let accepted = [
        format!("t={},v1={}", t - 290, mac(SECRET, t - 290)),
        format!("t={},v1={}", t + 290, mac(SECRET, t + 290)),
        format!("t={t},v1={}", mac(SECRET_OLD, t)),
        format!("t={t},v1={},v1={}", "0".repeat(64), mac(SECRET, t)),
        format!("t={t},v0={},v1={}", "ab".repeat(32), mac(SECRET, t)),
        format!("{good},"),
    ];
    for header in &accepted {
        let response = app.post_signed(&b, Some(header)).await;
        assert_eq!(response.status(), 200, "header {header:?}");
    }
    assert_eq!(stored(&app).await, 1);
    let client = app.db.client().await;
    let indexes: Vec<i16> = client
        .query(
            "SELECT secret_index FROM deliveries ORDER BY delivery_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes,
        [0, 0, 1, 0, 0, 0],
        "which secret matched is recorded by position"
    );
}

#[tokio::test]
async fn bodies_are_stored_byte_for_byte() {
    let app = TestApp::start().await;
    let pretty = "{\n  \"id\": \"evt_pretty\",\n  \"type\": \"customer.updated\",\n  \"created\": 1700000000,\n  \"livemode\": false,\n  \"data\": {\"object\": {\"id\": \"cus_ü\", \"object\": \"customer\", \"name\": \"Zoë Ångström 日本\"}}\n}\n";
    let response = app.post_event(pretty.as_bytes()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"received": true, "event_id": "evt_pretty", "duplicate": false})
    );
    let row = app
        .db
        .client()
        .await
        .query_one("SELECT body, type, object_id, object_type FROM events", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), pretty.as_bytes());
    assert_eq!(row.get::<_, String>(1), "customer.updated");
    assert_eq!(row.get::<_, String>(2), "cus_ü");
    assert_eq!(row.get::<_, String>(3), "customer");
    let detail = app.get_json("/api/billing/events/evt_pretty").await;
    assert_eq!(detail["body"], pretty);
    assert_eq!(
        detail["payload"]["data"]["object"]["name"],
        "Zoë Ångström 日本"
    );
}

#[tokio::test]
async fn duplicates_are_stored_once_sequentially_and_concurrently() {
    let app = TestApp::start().await;
    let event = subscription(
        "evt_dup",
        "customer.subscription.created",
        1_700_000_000,
        "sub_dup",
        "cus_dup",
        "active",
        1_702_592_000,
    );
    let first = app.deliver(&event).await;
    assert_eq!(first["duplicate"], false);
    let again = app.deliver(&event).await;
    assert_eq!(again["duplicate"], true);

    let concurrent = subscription(
        "evt_dup_many",
        "customer.subscription.updated",
        1_700_000_100,
        "sub_dup",
        "cus_dup",
        "past_due",
        1_702_592_000,
    );
    let bytes = concurrent.to_string().into_bytes();
    let answers = futures_join(&app, &bytes, 20).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    let fresh = answers
        .iter()
        .filter(|(_, a)| a["duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "exactly one delivery stored the event");
    assert_eq!(stored(&app).await, 2);
    assert_eq!(app.db.count("SELECT count(*) FROM deliveries").await, 22);
    let positions = app.db.count("SELECT max(position) FROM events").await;
    assert_eq!(positions, 2, "duplicates take no position");
}

async fn futures_join(app: &TestApp, body: &[u8], n: usize) -> Vec<(u16, Value)> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let http = app.http.clone();
        let url = app.url("/api/billing/webhook");
        let header = sign(&key(SECRET), now(), body);
        let body = body.to_vec();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("stripe-signature", header)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn unknown_types_are_stored_and_ignored() {
    let app = TestApp::start().await;
    let event = envelope(
        "evt_unknown",
        "radar.early_fraud_warning.created",
        1_700_000_000,
        json!({"id": "issfr_1", "object": "radar.early_fraud_warning"}),
    );
    app.deliver(&event).await;
    app.wait_projected().await;
    assert_eq!(stored(&app).await, 1);
    for table in [
        "tenant_pricing",
        "checkout_sessions",
        "customers",
        "unresolved_events",
        "projection_errors",
    ] {
        assert_eq!(
            app.db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
}

#[tokio::test]
async fn bad_bodies_are_refused_and_nothing_is_stored() {
    let app = TestApp::start().await;
    let huge = vec![b' '; 64 * 1024 + 1];
    let response = app.post_event(&huge).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("larger"));

    for not_an_event in [
        &b"this is not json"[..],
        br#"{"id":"evt_1","type":"x","created":1}"#,
        br#"{"type":"x","created":1,"data":{"object":{}}}"#,
        br#"{"id":"evt_1","type":"x","created":"yesterday","data":{"object":{}}}"#,
        br#"[1,2,3]"#,
    ] {
        let response = app.post_event(not_an_event).await;
        assert_eq!(
            response.status(),
            400,
            "{}",
            String::from_utf8_lossy(not_an_event)
        );
    }
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(app.post_event(deep.as_bytes()).await.status(), 400);
    assert_eq!(stored(&app).await, 0);
    assert_eq!(app.db.count("SELECT count(*) FROM deliveries").await, 0);
}

#[tokio::test]
async fn database_down_answers_503_and_stores_nothing() {
    let app = TestApp::start().await;
    crate::support::cut_connections(&app.db.name, false).await;
    let response = app.post_event(&body("evt_while_down")).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("retry"));
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    crate::support::cut_connections(&app.db.name, true).await;
    assert_eq!(stored(&app).await, 0, "nothing stored while down");
    // Stripe's retry then lands.
    let mut status = 0;
    for _ in 0..50 {
        status = app
            .post_event(&body("evt_while_down"))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(stored(&app).await, 1);
}

#[tokio::test]
async fn start_up_refuses_an_unreachable_database_with_a_clear_error() {
    let db = TestDb {
        name: "unused".into(),
        url: "host=127.0.0.1 port=1 user=postgres dbname=nothing".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = billing_ledger::run(test_config(&db.url), listener, async {})
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("connecting to PostgreSQL"),
        "{error:#}"
    );
}

#[tokio::test]
async fn a_value_the_read_models_cannot_store_is_a_projection_error_not_a_stall() {
    let app = TestApp::start().await;
    let nul = envelope(
        "evt_nul_name",
        "customer.created",
        1_700_000_000,
        json!({"id": "cus_n", "object": "customer", "name": "Bob\u{0}"}),
    );
    let long = envelope(
        "evt_long_id",
        "customer.created",
        1_700_000_001,
        json!({"id": "c".repeat(3000), "object": "customer"}),
    );
    let fine = envelope(
        "evt_fine",
        "customer.created",
        1_700_000_002,
        json!({"id": "cus_f", "object": "customer", "name": "Zoë"}),
    );
    for event in [&nul, &long, &fine] {
        app.deliver(event).await;
    }
    app.wait_projected().await;
    let errors: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT event_id FROM projection_errors ORDER BY position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(errors, ["evt_nul_name", "evt_long_id"]);
    assert_eq!(
        app.get_json("/api/billing/customers/cus_f").await["name"],
        "Zoë"
    );
    let detail = app.get_json("/api/billing/events/evt_nul_name").await;
    assert!(detail["projection_error"].as_str().unwrap().contains("NUL"));
    let status: Value = app
        .get(
            "/api/billing/admin/projections",
            crate::support::ADMIN_TOKEN,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["projections"][0]["status"], "live");
    assert_eq!(status["projections"][0]["lag_events"], 0);
    assert_eq!(status["projections"][0]["error_count"], 2);
    assert_eq!(
        status["projections"][0]["last_error"]["event_id"],
        "evt_long_id"
    );
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_nothing_is_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // Promises 100 bytes, sends 3, then goes quiet.
    stream
        .write_all(b"POST /api/billing/webhook HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1,v1=00\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("the server answers a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(stored(&app).await, 0);
}

/// Members the fold does not read are skipped while parsing, but the whole body must still be
/// UTF-8 JSON within serde_json's nesting bound; past that, skipped members hold any JSON.
#[tokio::test]
async fn bodies_at_the_edges_of_the_limits() {
    let app = TestApp::start().await;
    let with_description = |id: &str, description: &str| {
        let template = String::from_utf8(body(id)).unwrap();
        template.replacen(
            r#""object":"customer""#,
            &format!(r#""object":"customer","description":{description}"#),
            1,
        )
    };
    // Invalid UTF-8 inside a member the fold never reads: still not a JSON text (RFC 8259 8.1).
    let mut invalid = with_description("evt_utf8", r#""caf\u00e9""#).into_bytes();
    let at = invalid.windows(3).position(|w| w == b"caf").unwrap();
    invalid[at + 1] = 0xff;
    let response = app.post_event(&invalid).await;
    assert_eq!(response.status(), 400);
    // Nesting past serde_json's bound of 128 in a member the fold reads.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep_metadata = String::from_utf8(body("evt_deep")).unwrap().replacen(
        r#""object":"customer""#,
        &format!(r#""object":"customer","metadata":{deep}"#),
        1,
    );
    assert_eq!(app.post_event(deep_metadata.as_bytes()).await.status(), 400);
    assert_eq!(stored(&app).await, 0);

    // Skipped members are walked without recursion, so any nesting the body limit allows is
    // safe there; a number past f64's range and a lone surrogate escape are valid JSON syntax.
    // All are stored as sent.
    for (id, description) in [
        ("evt_deep", deep.as_str()),
        ("evt_huge", "1e400"),
        ("evt_surrogate", r#""\ud800""#),
    ] {
        let sent = with_description(id, description);
        let response = app.post_event(sent.as_bytes()).await;
        assert_eq!(response.status(), 200, "{description}");
        let detail = app.get_json(&format!("/api/billing/events/{id}")).await;
        assert_eq!(detail["body"], sent);
    }
    // A number past range where the envelope needs an integer is refused.
    let huge_created = String::from_utf8(body("evt_created"))
        .unwrap()
        .replace("1700000000", "1e400");
    assert_eq!(app.post_event(huge_created.as_bytes()).await.status(), 400);

    // Duplicate keys: the last value counts, as in serde_json.
    let twice =
        String::from_utf8(body("evt_first"))
            .unwrap()
            .replacen('{', r#"{"id":"evt_ignored","#, 1);
    let response = app.post_event(twice.as_bytes()).await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["event_id"], "evt_first");

    // A body of exactly the limit is read and stored.
    let limit = test_config(&app.db.url).max_body_bytes;
    let short = with_description("evt_limit", r#""""#);
    let padded = with_description(
        "evt_limit",
        &format!("\"{}\"", "x".repeat(limit - short.len())),
    );
    assert_eq!(padded.len(), limit);
    assert_eq!(app.post_event(padded.as_bytes()).await.status(), 200);
    assert_eq!(stored(&app).await, 5);
    app.wait_projected().await;
    let status = crate::support::projection_status(&app).await;
    assert_eq!(status["status"], "live", "{status}");
}
