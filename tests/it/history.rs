//! A tenant's history as a story (issue 11, point 11): each entry says what the event did, the
//! fields it changed with their values before and after, and why when it changed nothing; and
//! history and `as_of` at any length (issue 10, point 6): complete past 100,000 events.

use crate::events::{envelope, invoice, subscription};
use crate::support::{TestApp, ADMIN_TOKEN};
use billing_ledger::event_log::{append_batch, Delivery};
use serde_json::{json, Value};
use std::time::Duration;

const T0: i64 = 1_700_000_000;
const MONTH: i64 = 2_592_000;

fn customer(id: &str, event_type: &str, created: i64, tenant: Option<&str>) -> Value {
    let metadata = match tenant {
        Some(tenant) => json!({"tenant_id": tenant}),
        None => json!({}),
    };
    envelope(
        id,
        event_type,
        created,
        json!({"id": "cus_s", "object": "customer", "email": "a@s.example", "metadata": metadata}),
    )
}

/// The fields an entry lists as changed, with their values.
fn changes(entry: &Value) -> Vec<(String, Value, Value)> {
    entry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_owned(),
                c["before"].clone(),
                c["after"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn history_reads_like_a_story() {
    let app = TestApp::start().await;
    let mut failed = invoice(
        "evt_s5",
        "invoice.payment_failed",
        T0 + MONTH,
        "in_s2",
        "cus_s",
        "sub_s",
        "",
        false,
    );
    // As older API versions and test tools send it: no billing_reason.
    failed["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("billing_reason");
    let events = [
        customer("evt_s1", "customer.created", T0, None),
        subscription(
            "evt_s2",
            "customer.subscription.created",
            T0 + 1,
            "sub_s",
            "cus_s",
            "active",
            T0 + MONTH,
        ),
        customer("evt_s3", "customer.updated", T0 + 2, Some("tenant-s")),
        subscription(
            "evt_s4",
            "customer.subscription.updated",
            T0 + 3,
            "sub_s",
            "cus_s",
            "active",
            T0 + MONTH,
        ),
        failed,
        invoice(
            "evt_s6",
            "invoice.paid",
            T0 + MONTH + 60,
            "in_s2",
            "cus_s",
            "sub_s",
            "subscription_cycle",
            true,
        ),
        envelope(
            "evt_s7",
            "customer.subscription.updated",
            T0 + MONTH + 61,
            json!({"id": "sub_s", "object": "subscription", "customer": "cus_s",
                   "status": "not_a_status"}),
        ),
    ];
    for event in &events {
        app.deliver(event).await;
    }
    app.wait_projected().await;
    let history = app.get_json("/api/billing/tenants/tenant-s/history").await;
    let steps = history["history"].as_array().unwrap();
    let effects: Vec<&str> = steps
        .iter()
        .map(|s| s["effect"].as_str().unwrap())
        .collect();
    assert_eq!(
        effects,
        [
            "unresolved",
            "unresolved",
            "changed",
            "unchanged",
            "changed",
            "changed"
        ],
        "{steps:#?}"
    );
    // Before the customer named its tenant, the events had no tenant to apply to.
    assert_eq!(steps[0]["state"], Value::Null);
    assert!(steps[0]["note"].as_str().unwrap().contains("not known yet"));
    assert_eq!(steps[0]["changes"], json!([]));
    // The customer's update names the tenant: the two earlier events apply here, and the
    // fields that stay null (canceled_at, last_paid_at, ...) are not listed as changed.
    assert_eq!(steps[2]["resolves"], json!(["evt_s1", "evt_s2"]));
    let first = changes(&steps[2]);
    let period_end = first.iter().find(|(f, _, _)| f == "current_period_end");
    assert_eq!(
        period_end.unwrap().2,
        steps[2]["state"]["current_period_end"],
        "a changed time reads as the state shows it"
    );
    let fields: Vec<&str> = first.iter().map(|(f, _, _)| f.as_str()).collect();
    for field in [
        "cancel_at_period_end",
        "current_period_end",
        "price_id",
        "quantity",
        "resolved_by",
        "status",
        "stripe_customer_id",
        "stripe_subscription_id",
        "tenant_id",
    ] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    for field in [
        "canceled_at",
        "last_paid_at",
        "last_payment_failed_at",
        "updated_at",
    ] {
        assert!(!fields.contains(&field), "{field} in {fields:?}");
    }
    assert!(first.contains(&("status".into(), Value::Null, json!("active"))));
    assert_eq!(steps[2]["changed"].as_array().unwrap().len(), first.len());
    // The same snapshot again changes nothing, and says why.
    assert_eq!(steps[3]["changes"], json!([]));
    assert!(steps[3]["note"].as_str().is_some());
    // A renewal's failure without billing_reason, then the payment that recovers it.
    let failure = changes(&steps[4]);
    assert!(failure.contains(&("status".into(), json!("active"), json!("past_due"))));
    assert!(failure
        .iter()
        .any(|(f, before, _)| f == "last_payment_failed_at" && before.is_null()));
    assert_eq!(steps[4]["note"], Value::Null);
    // A page of one event goes on from its cursor exactly as the whole history.
    let one = app
        .get_json("/api/billing/tenants/tenant-s/history?limit=1")
        .await;
    let next = one["next_cursor"].as_str().unwrap();
    let rest = app
        .get_json(&format!(
            "/api/billing/tenants/tenant-s/history?limit=1000&cursor={next}"
        ))
        .await;
    assert_eq!(rest["history"].as_array().unwrap(), &steps[1..]);
    let payment = changes(&steps[5]);
    assert!(payment.contains(&("status".into(), json!("past_due"), json!("active"))));
    // The unreadable update is stored, kept off the history's tenant (its fold failed, so the
    // projection never attributed it) and shown by the event detail.
    assert_eq!(steps.len(), 6);
    let detail = app.get_json("/api/billing/events/evt_s7").await;
    assert!(detail["projection_error"].as_str().is_some());
    assert_eq!(detail["effect"], "unreadable");
    assert_eq!(
        app.get_json("/api/billing/events/evt_s4").await["effect"],
        "applied"
    );
}

#[tokio::test]
async fn the_event_detail_says_why_an_event_touched_no_read_model() {
    let app = TestApp::start().await;
    let mut live = customer("evt_w1", "customer.updated", T0, Some("tenant-w"));
    live["livemode"] = json!(true);
    let trial_end = envelope(
        "evt_w2",
        "customer.subscription.trial_will_end",
        T0,
        json!({"id": "sub_w", "object": "subscription", "customer": "cus_s", "status": "trialing"}),
    );
    let orphan = invoice(
        "evt_w3",
        "invoice.paid",
        T0,
        "in_w",
        "cus_nobody",
        "sub_nobody",
        "subscription_cycle",
        true,
    );
    for event in [&live, &trial_end, &orphan] {
        app.deliver(event).await;
    }
    app.wait_projected().await;
    for (id, effect, words) in [
        ("evt_w1", "other_mode", "LEDGER_LIVEMODE"),
        (
            "evt_w2",
            "stored_only",
            "customer.subscription.trial_will_end",
        ),
        ("evt_w3", "unresolved", "no tenant is known yet"),
    ] {
        let detail = app.get_json(&format!("/api/billing/events/{id}")).await;
        assert_eq!(detail["effect"], effect, "{id}");
        assert!(
            detail["note"].as_str().unwrap().contains(words),
            "{id}: {}",
            detail["note"]
        );
    }
}

/// The delivery of one generated event of the long history: a subscription update per second,
/// alternating between two prices.
fn long_history_event(i: i64) -> Delivery {
    let status = if i % 3 == 2 { "past_due" } else { "active" };
    let body = json!({
        "id": format!("evt_long_{i:06}"), "object": "event", "type": "customer.subscription.updated",
        "created": T0 + i, "livemode": false, "api_version": "2024-06-20",
        "data": {"object": {
            "id": "sub_long", "object": "subscription", "customer": "cus_long",
            "status": status, "current_period_end": T0 + i + MONTH, "created": T0,
            "items": {"data": [{"price": {"id": format!("price_{}", i % 2)}, "quantity": 1}]},
            "metadata": {"tenant_id": "tenant-long"},
        }},
    });
    Delivery::imported(body.to_string().into(), chrono::Utc::now()).unwrap()
}

/// Over 100,000 events, so that the former silent cap would show.
const LONG_HISTORY_EVENTS: i64 = 100_050;

#[tokio::test]
async fn history_and_as_of_are_complete_past_100000_events_of_one_tenant() {
    let app = TestApp::start().await;
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    // Appended newest first in batches, through the append path.
    let ids: Vec<i64> = (0..LONG_HISTORY_EVENTS).rev().collect();
    for chunk in ids.chunks(2_000) {
        let deliveries: Vec<Delivery> = chunk.iter().map(|&i| long_history_event(i)).collect();
        append_batch(&pool, &deliveries.iter().collect::<Vec<_>>())
            .await
            .unwrap();
    }
    wait_projected_for(&app, Duration::from_secs(600)).await;
    let mut seen = 0i64;
    let mut path = "/api/billing/tenants/tenant-long/history?limit=1000".to_owned();
    loop {
        let page = app.get_json(&path).await;
        for step in page["history"].as_array().unwrap() {
            assert_eq!(step["event_id"], format!("evt_long_{seen:06}"));
            let price = format!("price_{}", seen % 2);
            assert_eq!(step["state"]["price_id"], price.as_str());
            let status = if seen % 3 == 2 { "past_due" } else { "active" };
            assert_eq!(step["state"]["status"], status, "after evt_long_{seen:06}");
            assert_eq!(step["effect"], "changed");
            seen += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => {
                path = format!("/api/billing/tenants/tenant-long/history?limit=1000&cursor={next}")
            }
            None => break,
        }
    }
    assert_eq!(seen, LONG_HISTORY_EVENTS, "every event is in the history");
    let live = app
        .get_json("/api/billing/tenants/tenant-long/pricing")
        .await;
    assert_eq!(
        live["last_event_id"],
        format!("evt_long_{:06}", LONG_HISTORY_EVENTS - 1)
    );
    let everything = app
        .get_json("/api/billing/tenants/tenant-long/pricing?as_of=2100-01-01T00:00:00Z")
        .await;
    assert_eq!(everything, live, "as_of folds every event, past 100,000");
    let last = app
        .get_json(&format!(
            "/api/billing/tenants/tenant-long/pricing?as_of_position={LONG_HISTORY_EVENTS}"
        ))
        .await;
    assert_eq!(last, live);
    // The position just before the last append holds the newest events but the oldest one.
    let without_oldest = app
        .get(
            &format!(
                "/api/billing/tenants/tenant-long/pricing?as_of_position={}",
                LONG_HISTORY_EVENTS - 1
            ),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(without_oldest.status(), 200);
    let without_oldest: Value = without_oldest.json().await.unwrap();
    assert_eq!(without_oldest["last_event_id"], live["last_event_id"]);
}

async fn wait_projected_for(app: &TestApp, limit: Duration) {
    let started = std::time::Instant::now();
    let client = app.db.client().await;
    while started.elapsed() < limit {
        let row = client
            .query_one(
                "SELECT (SELECT position FROM log_head),
                        coalesce((SELECT position FROM projections WHERE name = 'billing'), -1)",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == row.get::<_, i64>(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the projector did not catch up in {limit:?}");
}

#[tokio::test]
async fn a_history_cursor_not_made_by_the_api_is_refused() {
    use billing_ledger::http::paging::encode_cursor;
    let app = TestApp::start().await;
    let ledger = |livemode: bool, by_customer: Value| {
        json!({"created": 0, "position": 0, "ledger": {
            "livemode": livemode, "subscriptions": {}, "sessions": {}, "customers": {},
            "subscriptions_by_customer": by_customer, "sessions_by_customer": {},
            "sessions_by_subscription": {}}})
    };
    for (forged, why) in [
        (json!({"created": 0}), "not a cursor of this route"),
        (ledger(true, json!({})), "the other mode's fold"),
        (
            ledger(false, json!({"cus_c": ["sub_missing"]})),
            "an index naming no object",
        ),
    ] {
        let path = format!(
            "/api/billing/tenants/tenant-c/history?cursor={}",
            encode_cursor(forged)
        );
        let response = app.get(&path, ADMIN_TOKEN).await;
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"],
            billing_ledger::http::paging::CURSOR_MALFORMED
        );
    }
}
