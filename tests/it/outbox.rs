//! Outgoing webhooks: signed per Standard Webhooks (checked by an independent implementation
//! in the receiver), every change delivered in order through failures, Retry-After honoured,
//! 410 disabling, replay, one dispatcher across instances, and nothing lost when the service is
//! killed mid-retry.

use crate::feed::{burst, read_all};
use crate::receiver::Receiver;
use crate::support::{test_config, TestApp, TestDb, ADMIN_TOKEN, SECRET};
use billing_ledger::config::Config;
use billing_ledger::outbox::dispatcher::SENDS_IN_FLIGHT_MAX;
use serde_json::{json, Value};
use std::time::Duration;

/// Retries 0.2 s apart, ten attempts in all: the production schedule, scaled down.
fn fast_retries(config: &mut Config) {
    config.platform.retry_schedule = std::iter::once(Duration::ZERO)
        .chain(std::iter::repeat_n(Duration::from_millis(200), 9))
        .collect();
}

async fn start_fast(db: TestDb) -> TestApp {
    let mut config = test_config(&db.url);
    fast_retries(&mut config);
    TestApp::start_with(db, config).await
}

/// Registers `receiver` (from the feed's beginning) and gives it the secret; returns the ID.
async fn register(app: &TestApp, receiver: &Receiver) -> String {
    let response = app
        .http
        .post(app.url("/api/billing/admin/endpoints"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": receiver.url, "after": "0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    receiver.with(|s| s.secret = Some(secret));
    created["endpoint_id"].as_str().unwrap().to_owned()
}

async fn endpoint(app: &TestApp, id: &str) -> Value {
    let list: Value = app
        .get("/api/billing/admin/endpoints", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let found = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint_id"] == id)
        .cloned();
    let endpoint = found.expect("the endpoint is listed");
    assert!(
        endpoint.get("secret").is_none(),
        "the secret is shown once, at creation"
    );
    endpoint
}

/// The webhook-ids in first-arrival order, without repeats (delivery is at least once).
fn first_arrivals(delivered: &[(String, Value)]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    delivered
        .iter()
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(id, _)| id.clone())
        .collect()
}

fn expected_ids(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("msg_{i}")).collect()
}

/// Every message of the feed's first `count` changes arrived, and the first arrivals of each
/// tenant's messages, and of each row's, are in feed order (messages of different tenants may
/// be sent concurrently, so only those orders are promised).
fn assert_complete_and_in_order(delivered: &[(String, Value)], count: usize) {
    let cursor = |id: &str| id.trim_start_matches("msg_").parse::<i64>().unwrap();
    let mut arrivals = first_arrivals(delivered);
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for id in &arrivals {
        let message = &delivered.iter().find(|(i, _)| i == id).unwrap().1;
        let change = &message["data"];
        assert_eq!(change["cursor"], cursor(id).to_string());
        let row = format!("{}/{}", change["read_model"], change["key"]);
        let tenant = change["tenant_id"].as_str().map(|t| format!("tenant {t}"));
        for key in std::iter::once(row).chain(tenant) {
            if let Some(before) = last.insert(key.clone(), cursor(id)) {
                assert!(
                    before < cursor(id),
                    "{key}: {id} arrived after msg_{before}"
                );
            }
        }
    }
    arrivals.sort_by_key(|id| cursor(id));
    assert_eq!(arrivals, expected_ids(count));
}

#[tokio::test]
async fn every_change_arrives_signed_and_in_order_through_failures() {
    let app = start_fast(TestDb::new().await).await;
    let receiver = Receiver::start().await;
    receiver.with(|s| s.fail_next = 5);
    let id = register(&app, &receiver).await;
    for event in burst(4) {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    let (changes, _) = read_all(&app, "", 1000).await;
    let delivered = receiver.wait_delivered(changes.len()).await;
    assert_complete_and_in_order(&delivered, changes.len());
    assert_eq!(
        delivered.len(),
        changes.len(),
        "no repeats without a failover"
    );
    let mut delivered = delivered;
    delivered.sort_by_key(|(id, _)| id.trim_start_matches("msg_").parse::<i64>().unwrap());
    for ((_, message), change) in delivered.iter().zip(&changes) {
        assert_eq!(
            &message["data"], change,
            "the message carries the change as the feed has it"
        );
        let action = if change["before"].is_null() {
            "created"
        } else {
            "updated"
        };
        assert_eq!(
            message["type"],
            format!("{}.{action}", change["read_model"].as_str().unwrap())
        );
    }
    assert_eq!(receiver.with(|s| s.bad_signatures), 0);
    // The receiver sees a message before the dispatcher records its attempt: wait until every
    // delivery is recorded (or 30 s pass, and the assertions below say what is missing).
    let mut statuses: Vec<i64> = Vec::new();
    for _ in 0..300 {
        let attempts: Value = app
            .get(
                &format!("/api/billing/admin/endpoints/{id}/attempts?limit=1000"),
                ADMIN_TOKEN,
            )
            .await
            .json()
            .await
            .unwrap();
        statuses = attempts["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status_code"].as_i64().unwrap())
            .collect();
        if statuses.iter().filter(|s| **s == 204).count() >= changes.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 5);
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        changes.len()
    );
    let state = endpoint(&app, &id).await;
    assert_eq!(
        (&state["cursor"], &state["failed_attempts"]),
        (&json!(changes.len().to_string()), &json!(0))
    );

    // A Retry-After longer than the schedule's delay is honoured.
    receiver.with(|s| {
        s.fail_next = 1;
        s.retry_after = Some("2".into());
    });
    app.deliver(&crate::events::subscription(
        "evt_ob_late",
        "customer.subscription.updated",
        1_700_100_000,
        "sub_fd0",
        "cus_fd0",
        "past_due",
        1_702_592_000,
    ))
    .await;
    receiver.wait_delivered(delivered.len() + 1).await;
    let requests = receiver.with(|s| s.requests.clone());
    let failed = requests.iter().rev().find(|r| r.1 == 500).unwrap();
    let retried = requests
        .iter()
        .rev()
        .find(|r| r.0 == failed.0 && r.1 == 204)
        .unwrap();
    assert!(
        retried.2 - failed.2 >= Duration::from_secs(2),
        "waited {:?}",
        retried.2 - failed.2
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("billing_ledger_outgoing_webhook_attempts_total{result=\"failed\"} 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_410_disables_the_endpoint_until_a_replay() {
    let app = start_fast(TestDb::new().await).await;
    let receiver = Receiver::start().await;
    receiver.with(|s| s.gone = true);
    let id = register(&app, &receiver).await;
    for event in burst(1) {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    let mut state = Value::Null;
    for _ in 0..200 {
        state = endpoint(&app, &id).await;
        if !state["disabled_at"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        state["disabled_reason"].as_str().unwrap().contains("410"),
        "{state}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.with(|s| s.requests.len()),
        1,
        "nothing more is sent to a disabled endpoint"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("billing_ledger_outgoing_webhook_endpoints_disabled 1"),
        "{metrics}"
    );

    receiver.with(|s| s.gone = false);
    let replay = app
        .http
        .post(app.url(&format!("/api/billing/admin/endpoints/{id}/replay")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"after": "0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    let (changes, _) = read_all(&app, "", 1000).await;
    let delivered = receiver.wait_delivered(changes.len()).await;
    assert_complete_and_in_order(&delivered, changes.len());
    let deleted = app
        .http
        .delete(app.url(&format!("/api/billing/admin/endpoints/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}

#[tokio::test]
async fn two_instances_never_send_at_once_and_lose_nothing_when_the_sender_stops() {
    let db = TestDb::new().await;
    let first = start_fast(TestDb {
        name: db.name.clone(),
        url: db.url.clone(),
    })
    .await;
    let second = start_fast(db).await;
    let receiver = Receiver::start().await;
    receiver.with(|s| s.delay = Duration::from_millis(20));
    register(&first, &receiver).await;
    let events = burst(6);
    for event in &events[..9] {
        first.deliver(event).await;
    }
    first.wait_projected().await;
    receiver.wait_delivered(3).await;
    // Stop whichever instance is sending; the other must take over.
    let sender = dispatcher_instance(&first.db).await;
    let (sending, staying) = if sending_is(&first, &sender).await {
        (first, second)
    } else {
        (second, first)
    };
    let db = sending.stop().await;
    for event in &events[9..] {
        staying.deliver(event).await;
    }
    staying.wait_projected().await;
    let (changes, _) = read_all(&staying, "", 1000).await;
    let delivered = receiver.wait_delivered(changes.len()).await;
    assert_complete_and_in_order(&delivered, changes.len());
    assert_eq!(
        receiver.with(|s| s.same_message_in_flight),
        0,
        "one dispatcher: never one message twice at once"
    );
    assert!(receiver.with(|s| s.max_in_flight) <= SENDS_IN_FLIGHT_MAX);
    // What came after the stop (the second half of the burst) was sent by the other.
    let client = db.client().await;
    let last: String = client
        .query_one(
            "SELECT instance FROM webhook_attempts ORDER BY attempt_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        last, staying.instance_id,
        "the remaining instance took over"
    );
    assert_ne!(sender, staying.instance_id);
}

/// The instance ID of the dispatcher holding the lock (its lock connection's application name),
/// waiting up to 10 s for one to hold it.
async fn dispatcher_instance(db: &TestDb) -> String {
    let client = db.client().await;
    for _ in 0..400 {
        let row = client
            .query_opt(
                "SELECT substr(a.application_name, length('billing-ledger dispatcher ') + 1)
                 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                 WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
                     AND a.application_name LIKE 'billing-ledger dispatcher %'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no dispatcher holds the lock");
}

/// Whether `app` is the instance `instance`.
async fn sending_is(app: &TestApp, instance: &str) -> bool {
    app.instance_id == instance
}

#[tokio::test]
async fn a_service_killed_mid_retry_delivers_everything_after_restart() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let secret = billing_ledger::outbox::signing::SigningSecret::generate();
    receiver.with(|s| {
        s.secret = Some(secret.clone());
        s.fail_next = usize::MAX;
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_billing-ledger"))
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("LEDGER_WEBHOOK_ENDPOINTS", format!("{}={secret}", receiver.url))
            .env("LEDGER_WEBHOOK_RETRY_SCHEDULE", "0,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let wait_up = || async {
        for _ in 0..400 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("service did not start");
    };
    let mut child = spawn();
    wait_up().await;
    for event in burst(2) {
        let status = crate::support::post_to(
            &http,
            &format!("{base}/api/billing/webhook"),
            event.to_string(),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Killed while the first message is being retried (its second failure recorded; with
    // several tenants' messages sent at once, a request count no longer tells the rounds).
    let client = db.client().await;
    for _ in 0..400 {
        let failed = client
            .query_opt("SELECT failed_attempts FROM webhook_endpoints", &[])
            .await
            .unwrap()
            .map_or(0, |row| row.get::<_, i32>(0));
        if failed >= 2 && receiver.with(|s| s.requests.len()) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let row = client
        .query_one("SELECT cursor, failed_attempts FROM webhook_endpoints", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "nothing was delivered before the kill"
    );
    assert!(row.get::<_, i32>(1) >= 2, "the kill came mid-retry");
    receiver.with(|s| s.fail_next = 0);
    let mut child = spawn();
    wait_up().await;
    let head: i64 = client
        .query_one("SELECT id FROM change_head", &[])
        .await
        .unwrap()
        .get(0);
    assert!(head > 0);
    let delivered = receiver.wait_delivered(head as usize).await;
    assert_complete_and_in_order(&delivered, head as usize);
    assert_eq!(receiver.with(|s| s.bad_signatures), 0);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn many_tenants_through_a_slow_receiver_are_sent_concurrently_each_in_order() {
    let app = start_fast(TestDb::new().await).await;
    let receiver = Receiver::start().await;
    receiver.with(|s| {
        s.delay = Duration::from_millis(40);
        s.fail_next = 3;
    });
    let id = register(&app, &receiver).await;
    for event in burst(24) {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    let (changes, _) = read_all(&app, "", 1000).await;
    let delivered = receiver.wait_delivered(changes.len()).await;
    assert_complete_and_in_order(&delivered, changes.len());
    assert_eq!(
        delivered.len(),
        changes.len(),
        "what was delivered beyond a failure is not sent again"
    );
    let (max_in_flight, same) = receiver.with(|s| (s.max_in_flight, s.same_message_in_flight));
    assert!(
        (2..=SENDS_IN_FLIGHT_MAX).contains(&max_in_flight),
        "{max_in_flight} in flight"
    );
    assert_eq!(same, 0);
    let mut state = endpoint(&app, &id).await;
    for _ in 0..200 {
        if state["cursor"] == json!(changes.len().to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        state = endpoint(&app, &id).await;
    }
    assert_eq!(
        (&state["cursor"], &state["failed_attempts"]),
        (&json!(changes.len().to_string()), &json!(0))
    );
}
