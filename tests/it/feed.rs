//! The change feed: every committed read-model change exactly once, in commit order, across
//! pages, long-polls and Server-Sent Events; a rebuild emits only what it changed.

use crate::events::{checkout_completed, subscription};
use crate::support::{rebuild_and_wait, TestApp, FINANCE_TOKEN, PLATFORM_TOKEN};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const T0: i64 = 1_700_000_000;
const MONTH: i64 = 2_592_000;

/// Three events per tenant (checkout, subscription created, then active), `tenants` tenants.
pub fn burst(tenants: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for t in 0..tenants {
        let (sub, cus) = (format!("sub_fd{t}"), format!("cus_fd{t}"));
        let tenant = format!("tenant-fd{t}");
        events.push(checkout_completed(
            &format!("evt_fd{t}_1"),
            T0 + t as i64,
            &format!("cs_fd{t}"),
            &tenant,
            &cus,
            &sub,
        ));
        events.push(subscription(
            &format!("evt_fd{t}_2"),
            "customer.subscription.created",
            T0 + t as i64,
            &sub,
            &cus,
            "incomplete",
            T0 + MONTH,
        ));
        events.push(subscription(
            &format!("evt_fd{t}_3"),
            "customer.subscription.updated",
            T0 + t as i64 + 5,
            &sub,
            &cus,
            "active",
            T0 + MONTH,
        ));
    }
    events
}

/// Deterministic shuffle (no randomness in tests): a fixed permutation by stride.
fn shuffled(mut events: Vec<Value>) -> Vec<Value> {
    let n = events.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while !events.is_empty() {
        i = (i + 7) % events.len();
        out.push(events.remove(i));
    }
    assert_eq!(out.len(), n);
    out
}

/// Reads the whole feed from `after` by pages of `limit`.
pub async fn read_all(app: &TestApp, query: &str, limit: u32) -> (Vec<Value>, String) {
    let mut cursor = String::new();
    let mut changes = Vec::new();
    loop {
        let page: Value = app
            .get(
                &format!("/api/billing/changes?limit={limit}&after={cursor}{query}"),
                PLATFORM_TOKEN,
            )
            .await
            .json()
            .await
            .unwrap();
        let got = page["changes"].as_array().unwrap().clone();
        let next = page["next_cursor"].as_str().unwrap().to_owned();
        let done = got.is_empty();
        changes.extend(got);
        cursor = next;
        if done {
            return (changes, cursor);
        }
    }
}

/// Checks the feed's invariants: cursors dense from 1, each row's changes chain (a change's
/// `before` is the previous change's `after`), and the last `after` of each row is the row now.
async fn assert_feed_is_complete(app: &TestApp, changes: &[Value]) {
    let mut last: HashMap<(String, String), Value> = HashMap::new();
    for (i, change) in changes.iter().enumerate() {
        assert_eq!(
            change["cursor"],
            (i + 1).to_string(),
            "dense, in order, no repeats"
        );
        let key = (
            change["read_model"].as_str().unwrap().to_owned(),
            change["key"].as_str().unwrap().to_owned(),
        );
        let previous = last.get(&key).cloned().unwrap_or(Value::Null);
        assert_eq!(
            change["before"], previous,
            "change {} of {key:?} follows the previous",
            change["cursor"]
        );
        assert_ne!(change["before"], change["after"]);
        last.insert(key, change["after"].clone());
    }
    let client = app.db.client().await;
    for ((table, key), after) in last {
        let column = if table == "tenant_pricing" || table == "entitlements" {
            "tenant_id"
        } else {
            "id"
        };
        let sql = format!("SELECT to_jsonb(t)::text FROM {table} t WHERE {column} = $1");
        let row = client.query_opt(&sql, &[&key]).await.unwrap();
        let now: Value = row.map_or(Value::Null, |r| {
            let text: String = r.get(0);
            serde_json::from_str(&text).unwrap()
        });
        // Times are compared as instants: the feed renders them in UTC.
        assert_eq!(
            normalize(&now),
            normalize(&after),
            "{table} {key}: the feed ends at the row"
        );
    }
}

fn normalize(row: &Value) -> Value {
    let mut row = row.clone();
    if let Some(object) = row.as_object_mut() {
        for value in object.values_mut() {
            if let Some(t) = value
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            {
                *value = Value::from(t.timestamp());
            }
        }
    }
    row
}

#[tokio::test]
async fn a_shuffled_burst_appears_once_in_order_across_pages_and_a_long_poll() {
    let app = TestApp::start().await;
    // A long-poll that starts before anything happened returns with the first change.
    let waiting = {
        let (http, url) = (app.http.clone(), app.url("/api/billing/changes?wait=30"));
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let page: Value = http
                .get(url)
                .bearer_auth(PLATFORM_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (page, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = shuffled(burst(12));
    let posts: Vec<_> = events
        .iter()
        .map(|e| {
            crate::support::spawn_post(&app.http, app.url("/api/billing/webhook"), e.to_string())
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.unwrap(), 200);
    }
    let (first, waited) = waiting.await.unwrap();
    assert!(
        !first["changes"].as_array().unwrap().is_empty(),
        "the long-poll returned a change"
    );
    assert!(
        waited < Duration::from_secs(25),
        "it returned when the change came, not at its timeout"
    );
    assert_eq!(first["changes"][0]["cursor"], "1");
    app.wait_projected().await;

    let (changes, next) = read_all(&app, "", 7).await;
    assert_feed_is_complete(&app, &changes).await;
    assert_eq!(next, changes.len().to_string());
    let pricing: Vec<_> = changes
        .iter()
        .filter(|c| c["read_model"] == "tenant_pricing")
        .collect();
    let tenants: std::collections::HashSet<_> = pricing.iter().map(|c| c["key"].clone()).collect();
    assert_eq!(tenants.len(), 12, "every tenant's pricing row appears");
    // Changes caused by events come in log order.
    let positions: Vec<i64> = changes
        .iter()
        .filter_map(|c| c["position"].as_i64())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    assert!(changes
        .iter()
        .all(|c| c["cause"] == "event" && c["event_id"].is_string()));

    // Filters skip, and the cursor still moves past what they skipped.
    let (only, next) = read_all(&app, "&tenant_id=tenant-fd3&read_model=tenant_pricing", 2).await;
    assert!(!only.is_empty() && only.iter().all(|c| c["key"] == "tenant-fd3"));
    assert_eq!(next, changes.len().to_string());
    // An empty long-poll waits its time and hands back the same cursor.
    let page: Value = app
        .get(
            &format!("/api/billing/changes?wait=1&after={next}"),
            FINANCE_TOKEN,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["changes"], serde_json::json!([]));
    assert_eq!(page["next_cursor"], next);
    let bad = app
        .get("/api/billing/changes?after=abc", PLATFORM_TOKEN)
        .await;
    assert_eq!(bad.status(), 400);
}

/// Reads `count` SSE events from `response`; returns their (id, data) pairs.
async fn read_sse(response: &mut reqwest::Response, count: usize) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

async fn open_sse(app: &TestApp, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .get(app.url("/api/billing/changes?limit=3"))
        .bearer_auth(PLATFORM_TOKEN)
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    response
}

#[tokio::test]
async fn server_sent_events_resume_from_last_event_id_without_gaps_or_repeats() {
    let app = TestApp::start().await;
    let events = burst(4);
    for event in &events[..6] {
        app.deliver(event).await;
    }
    app.wait_projected().await;
    let mut stream = open_sse(&app, None).await;
    let first = read_sse(&mut stream, 4).await;
    drop(stream);
    // More changes while disconnected; the resumed stream picks up after the last one seen.
    for event in &events[6..] {
        app.deliver(event).await;
    }
    app.wait_projected().await;
    let (all, _) = read_all(&app, "", 1000).await;
    let mut stream = open_sse(&app, Some(&first.last().unwrap().0)).await;
    let rest = read_sse(&mut stream, all.len() - first.len()).await;
    let seen: Vec<Value> = first
        .iter()
        .chain(rest.iter())
        .map(|(_, data)| data.clone())
        .collect();
    assert_eq!(
        seen, all,
        "the two streams together are the feed, once each"
    );
    for (id, data) in first.iter().chain(rest.iter()) {
        assert_eq!(&data["cursor"], id);
    }
}

#[tokio::test]
async fn a_rebuild_emits_exactly_the_rows_it_changed() {
    let app = TestApp::start().await;
    for event in burst(3) {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    let (before, head) = read_all(&app, "", 1000).await;
    // A rebuild that changes nothing adds nothing to the feed.
    rebuild_and_wait(&app).await;
    let (after, same_head) = read_all(&app, "", 1000).await;
    assert_eq!((after.len(), &same_head), (before.len(), &head));
    // A row that drifted (as a changed fold would find) is put back: one change, cause rebuild.
    let client = app.db.client().await;
    client
        .execute(
            "UPDATE tenant_pricing SET quantity = 99 WHERE tenant_id = 'tenant-fd1'",
            &[],
        )
        .await
        .unwrap();
    rebuild_and_wait(&app).await;
    let page: Value = app
        .get(
            &format!("/api/billing/changes?after={head}"),
            PLATFORM_TOKEN,
        )
        .await
        .json()
        .await
        .unwrap();
    let changes = page["changes"].as_array().unwrap();
    assert_eq!(
        changes.len(),
        2,
        "the drift, then the rebuild's repair: {changes:?}"
    );
    assert_eq!(changes[1]["cause"], "rebuild");
    assert_eq!(changes[1]["key"], "tenant-fd1");
    assert_eq!(changes[1]["before"]["quantity"], 99);
    assert_eq!(changes[1]["after"]["quantity"], 3);
}
