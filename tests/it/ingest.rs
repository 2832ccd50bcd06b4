//! Appends under contention between instances: the same event delivered to two instances at
//! the same moment, mixed with unrelated events in the same batches.

use crate::events::envelope;
use crate::support::{signature_now, TestApp};
use billing_ledger::chain::Verdict;
use serde_json::{json, Value};

/// Races run; each delivers one event to both instances at once and one distinct event to each.
const RACES: usize = 150;

fn customer(id: &str, n: usize) -> String {
    envelope(
        id,
        "customer.created",
        1_700_000_000 + n as i64,
        json!({"id": format!("cus_{id}"), "object": "customer", "metadata": {"tenant_id": format!("t{}", n % 5)}}),
    )
    .to_string()
}

/// Posts `body` to `app`, signed now; (status, answer).
fn post(app: &TestApp, body: String) -> tokio::task::JoinHandle<(u16, Value)> {
    let (http, url) = (app.http.clone(), app.url("/api/billing/webhook"));
    tokio::spawn(async move {
        let response = http
            .post(url)
            .header("stripe-signature", signature_now(body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

async fn metric(app: &TestApp, line_start: &str) -> Option<String> {
    let text = app.metrics().await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(str::to_owned)
}

#[tokio::test]
async fn the_same_event_at_two_instances_at_once_is_stored_once_and_spoils_no_batch() {
    let first = TestApp::start().await;
    let second = TestApp::start_second(&first).await;
    let mut shared = Vec::new();
    let mut distinct = Vec::new();
    for race in 0..RACES {
        let id = format!("evt_race_{race}");
        let body = customer(&id, race);
        shared.push((post(&first, body.clone()), post(&second, body)));
        for (side, app) in [("a", &first), ("b", &second)] {
            let id = format!("evt_solo_{race}_{side}");
            distinct.push(post(app, customer(&id, race)));
        }
    }
    for (race, (at_first, at_second)) in shared.into_iter().enumerate() {
        let (a, b) = (at_first.await.unwrap(), at_second.await.unwrap());
        assert_eq!((a.0, b.0), (200, 200), "race {race}: {a:?} {b:?}");
        let duplicates = [&a.1, &b.1]
            .iter()
            .filter(|answer| answer["duplicate"] == true)
            .count();
        assert_eq!(duplicates, 1, "race {race}: exactly one is the duplicate");
    }
    for answer in distinct {
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["duplicate"], false);
    }

    let events = (3 * RACES) as i64;
    let db = &first.db;
    assert_eq!(db.count("SELECT count(*) FROM events").await, events);
    assert_eq!(
        db.count("SELECT count(DISTINCT position) FROM events WHERE position BETWEEN 1 AND (SELECT position FROM log_head)")
            .await,
        events,
        "positions are dense from 1 to the head"
    );
    assert_eq!(db.count("SELECT position FROM log_head").await, events);
    assert_eq!(
        db.count("SELECT count(*) FROM deliveries").await,
        (4 * RACES) as i64,
        "every delivery recorded"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM deliveries WHERE duplicate")
            .await,
        RACES as i64
    );
    let pool = billing_ledger::db::pool(&db.url).unwrap();
    let verdict = billing_ledger::chain::verify(&pool).await.unwrap();
    assert!(
        matches!(verdict, Verdict::Intact { events: n, .. } if n == events),
        "{verdict:?}"
    );
    for app in [&first, &second] {
        assert_eq!(
            metric(
                app,
                "billing_ledger_webhooks_total{outcome=\"unavailable\"}"
            )
            .await,
            None,
            "nothing counted as an outage"
        );
    }
    first.wait_projected().await;
    assert_eq!(db.count("SELECT count(*) FROM customers").await, events);
}

/// Within one batch, a repeated event ID is stored once and its later delivery is the
/// duplicate, and a delivery whose bytes differ keeps its own body.
#[tokio::test]
async fn a_batch_holding_the_same_event_twice_stores_it_once() {
    use billing_ledger::event_log::{append_batch, Delivery, Source};
    let app = TestApp::start().await;
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    let webhook = |body: String| Delivery {
        source: Source::Webhook,
        signature_timestamp: Some(1_700_000_000),
        secret_index: Some(0),
        signature: Some("v1=00".into()),
        ..Delivery::imported(body.into(), chrono::Utc::now()).unwrap()
    };
    let one = webhook(customer("evt_twice", 1));
    let other = webhook(customer("evt_other", 2));
    let mut reworded: Value = serde_json::from_str(&customer("evt_twice", 1)).unwrap();
    reworded["api_version"] = json!("2025-03-31.basil");
    let again = webhook(reworded.to_string());
    let answers = append_batch(&pool, &[&one, &other, &again]).await.unwrap();
    let positions: Vec<(i64, bool)> = answers.iter().map(|a| (a.position, a.duplicate)).collect();
    assert_eq!(positions, [(1, false), (2, false), (1, true)]);
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, 2);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM deliveries WHERE duplicate AND body IS NOT NULL")
            .await,
        1,
        "the differing bytes are kept with the duplicate delivery"
    );
    // An import of a stored event records no delivery.
    let imported = Delivery::imported(customer("evt_other", 2).into(), chrono::Utc::now()).unwrap();
    let answers = append_batch(&pool, &[&imported]).await.unwrap();
    assert_eq!((answers[0].position, answers[0].duplicate), (2, true));
    assert_eq!(app.db.count("SELECT count(*) FROM deliveries").await, 3);
    let verdict = billing_ledger::chain::verify(&pool).await.unwrap();
    assert!(
        matches!(verdict, Verdict::Intact { events: 2, .. }),
        "{verdict:?}"
    );
}

/// Appends are announced on `ledger_events` (other instances' projectors listen there) after
/// their commit, by the writer rather than inside the append (V91): a listener is told the new
/// head and finds the event stored when told.
#[tokio::test]
async fn a_stored_webhook_is_announced_after_its_commit() {
    use futures_util::StreamExt;
    let app = TestApp::start().await;
    let (client, mut connection) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (told, mut heard) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = told.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client.batch_execute("LISTEN ledger_events").await.unwrap();
    let (status, answer) = post(&app, customer("evt_announced", 1)).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let (channel, payload) = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
        .await
        .expect("announced within 5 s")
        .unwrap();
    assert_eq!(channel, "ledger_events");
    let stored = client
        .query_one(
            "SELECT position::text FROM events WHERE event_id = 'evt_announced'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        payload,
        stored.get::<_, String>(0),
        "the payload is the new head"
    );
}
