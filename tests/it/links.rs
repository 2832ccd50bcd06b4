//! Admin tenant links: a correction appended to the log as an event of the ledger's own, folded
//! like any event (live and in a rebuild alike), outranking links learned from Stripe.

use crate::events::{invoice, subscription};
use crate::support::{
    rebuild_and_wait, snapshot, TestApp, ADMIN_TOKEN, FINANCE_TOKEN, PLATFORM_TOKEN,
};
use serde_json::{json, Value};

const T0: i64 = 1_700_000_000;
const MONTH: i64 = 2_592_000;

async fn link(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/api/billing/admin/tenant-links"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn event_ids(page: &Value, key: &str) -> Vec<String> {
    page[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_admin_link_resolves_unresolved_events_live_and_after_a_rebuild() {
    let app = TestApp::start().await;
    // Stripe never names a tenant: a subscription and its renewal failure stay unresolved.
    let sub = subscription(
        "evt_k1",
        "customer.subscription.updated",
        T0,
        "sub_k1",
        "cus_k1",
        "active",
        T0 + MONTH,
    );
    app.deliver(&sub).await;
    app.deliver(&invoice(
        "evt_k2",
        "invoice.payment_failed",
        T0 + 10,
        "in_k1",
        "cus_k1",
        "sub_k1",
        "subscription_cycle",
        false,
    ))
    .await;
    app.wait_projected().await;
    let unresolved = app.get_json("/api/billing/unresolved").await;
    let rows = unresolved["unresolved"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{unresolved}");
    for row in rows {
        assert_eq!(
            row["missing_link"],
            json!({"object": "subscription", "id": "sub_k1"})
        );
    }

    let (status, created) = link(
        &app,
        ADMIN_TOKEN,
        json!({"object_id": "cus_k1", "tenant_id": "tenant-k", "reason": "support ticket 42"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let link_id = created["event_id"].as_str().unwrap().to_owned();
    assert!(link_id.starts_with("evt_ledger_"), "{link_id}");
    assert_eq!(created["position"], 3);
    app.wait_projected().await;

    let pricing = app.get_json("/api/billing/tenants/tenant-k/pricing").await;
    assert_eq!(pricing["status"], "past_due");
    assert_eq!(pricing["stripe_subscription_id"], "sub_k1");
    assert_eq!(pricing["resolved_by"], "admin_link");
    assert_eq!(
        app.get_json("/api/billing/unresolved").await["unresolved"],
        json!([])
    );
    // The link is an event like the others: listed, in the tenant's history, chained.
    let events = app.get_json("/api/billing/events?tenant_id=tenant-k").await;
    assert_eq!(event_ids(&events, "events"), ["evt_k1", "evt_k2", &link_id]);
    let detail = app
        .get_json(&format!("/api/billing/events/{link_id}"))
        .await;
    assert_eq!(detail["type"], "ledger.tenant_link.created", "{detail}");
    assert_eq!(detail["source"], "admin");
    assert_eq!(
        detail["payload"]["data"]["object"]["reason"],
        "support ticket 42"
    );
    let history = app.get_json("/api/billing/tenants/tenant-k/history").await;
    let steps: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["event_id"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&link_id.as_str()), "{steps:?}");
    let verify: Value = app
        .get("/api/billing/admin/verify", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["events_verified"], 3);

    // Linking again: the same tenant answers the existing link, another tenant is refused.
    let again = json!({"object_id": "cus_k1", "tenant_id": "tenant-k", "reason": "again"});
    let (status, existing) = link(&app, ADMIN_TOKEN, again).await;
    assert_eq!((status, &existing["event_id"]), (200, &json!(link_id)));
    let other = json!({"object_id": "cus_k1", "tenant_id": "tenant-x", "reason": "mistake"});
    assert_eq!(link(&app, ADMIN_TOKEN, other).await.0, 409);

    // A rebuild folds the same log into the same rows.
    let live = snapshot(&app.db).await;
    rebuild_and_wait(&app).await;
    assert_eq!(snapshot(&app.db).await, live);
}

#[tokio::test]
async fn an_admin_link_never_moves_a_tenant_stripe_names_and_bad_input_is_refused() {
    let app = TestApp::start().await;
    let mut sub = subscription(
        "evt_m1",
        "customer.subscription.updated",
        T0,
        "sub_m1",
        "cus_m1",
        "active",
        T0 + MONTH,
    );
    sub["data"]["object"]["metadata"]["tenant_id"] = "tenant-stripe".into();
    app.deliver(&sub).await;
    let body = json!({"object_id": "sub_m1", "tenant_id": "tenant-admin", "reason": "merged"});
    assert_eq!(link(&app, FINANCE_TOKEN, body.clone()).await.0, 403);
    assert_eq!(link(&app, PLATFORM_TOKEN, body.clone()).await.0, 403);
    for (bad, field) in [
        (
            json!({"object_id": "in_m1", "tenant_id": "t", "reason": "r"}),
            "object_id",
        ),
        (
            json!({"object_id": "evt_m1", "tenant_id": "t", "reason": "r"}),
            "object_id",
        ),
        (
            json!({"object_id": "sub_m1", "tenant_id": "", "reason": "r"}),
            "tenant_id",
        ),
        (
            json!({"object_id": "sub_m1", "tenant_id": "a\nb", "reason": "r"}),
            "tenant_id",
        ),
        // Invisible formatting characters make two tenant IDs look alike.
        (
            json!({"object_id": "sub_m1", "tenant_id": "tenant\u{200B}-acme", "reason": "r"}),
            "tenant_id",
        ),
        (
            json!({"object_id": "sub_m1", "tenant_id": "\u{202E}tenant", "reason": "r"}),
            "tenant_id",
        ),
        (
            json!({"object_id": "sub_m1", "tenant_id": "t", "reason": "  "}),
            "reason",
        ),
    ] {
        let (status, answer) = link(&app, ADMIN_TOKEN, bad).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    // A signed webhook cannot pose as the ledger's own event.
    let mut forged = sub.clone();
    forged["id"] = "evt_ledger_forged".into();
    let response = app.post_event(forged.to_string().as_bytes()).await;
    assert_eq!(response.status(), 400);
    forged["id"] = "evt_forged".into();
    forged["type"] = "ledger.tenant_link.created".into();
    let response = app.post_event(forged.to_string().as_bytes()).await;
    assert_eq!(response.status(), 400);

    let (status, _) = link(&app, ADMIN_TOKEN, body).await;
    assert_eq!(status, 201);
    app.wait_projected().await;
    // The link is in the log, but the tenant Stripe names on the subscription itself stands:
    // a link corrects only what Stripe left unnamed.
    let pricing = app
        .get_json("/api/billing/tenants/tenant-stripe/pricing")
        .await;
    assert_eq!(pricing["resolved_by"], "subscription_metadata");
    let response = app
        .get("/api/billing/tenants/tenant-admin/pricing", FINANCE_TOKEN)
        .await;
    assert_eq!(response.status(), 404);
    let live = snapshot(&app.db).await;
    rebuild_and_wait(&app).await;
    assert_eq!(snapshot(&app.db).await, live);
}

/// The console's operations page shows each unresolved event's missing link with a form; an
/// admin's link through it is the same event as the route's and resolves the event.
#[tokio::test]
async fn the_operations_page_links_an_unresolved_events_customer_to_a_tenant() {
    use crate::console::{csrf, page, post_form, sign_in};
    let app = TestApp::start().await;
    app.deliver(&json!({
        "id": "evt_console_link", "object": "event", "type": "customer.subscription.created",
        "created": 1_700_000_000, "livemode": false,
        "data": {"object": {"id": "sub_console_link", "object": "subscription",
            "customer": "cus_console_link", "status": "active", "metadata": {},
            "items": {"data": [{"price": {"id": "price_x"}, "quantity": 1}]}}},
    }))
    .await;
    app.wait_projected().await;
    let cookie = sign_in(&app, ADMIN_TOKEN).await;
    let (status, html) = page(&app, "/console/operations", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("action=\"/console/operations/tenant-links\""),
        "{html}"
    );
    let missing = if html.contains("value=\"cus_console_link\"") {
        "cus_console_link"
    } else {
        "sub_console_link"
    };
    let token = csrf(&html);
    let refused = post_form(
        &app,
        "/console/operations/tenant-links",
        Some(&cookie),
        &format!("csrf=0000&object_id={missing}&tenant_id=tenant-console&reason=support"),
    )
    .await;
    assert_eq!(refused.status(), 403, "a foreign CSRF token is refused");
    let linked = post_form(
        &app,
        "/console/operations/tenant-links",
        Some(&cookie),
        &format!("csrf={token}&object_id={missing}&tenant_id=tenant-console&reason=ticket+42"),
    )
    .await;
    assert_eq!(linked.status(), 303);
    app.wait_projected().await;
    let pricing = app
        .get_json("/api/billing/tenants/tenant-console/pricing")
        .await;
    assert_eq!(
        (&pricing["stripe_subscription_id"], &pricing["resolved_by"]),
        (&json!("sub_console_link"), &json!("admin_link")),
        "{pricing}"
    );
    let (_, html) = page(&app, "/console/operations", Some(&cookie)).await;
    assert!(!html.contains("evt_console_link"), "resolved: {html}");
}

/// A link request without a JSON body type is a 400 like any malformed request (the
/// framework's 415 was not in the spec; found by schemathesis).
#[tokio::test]
async fn a_link_request_without_json_is_a_400() {
    let app = TestApp::start().await;
    for content_type in [None, Some("text/plain")] {
        let mut request = reqwest::Client::new()
            .post(app.url("/api/billing/admin/tenant-links"))
            .bearer_auth(ADMIN_TOKEN)
            .body("object_id=cus_1");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{content_type:?}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("must be JSON"),
            "{body}"
        );
    }
}

/// A number or a boolean where the link takes text is refused, not turned into text (a link is
/// permanent: `"tenant_id": 123` became tenant "123"; found by the adversarial pass).
#[tokio::test]
async fn a_link_field_of_another_json_type_is_a_400() {
    let app = TestApp::start().await;
    for body in [
        json!({"object_id": "cus_typed", "tenant_id": 123, "reason": "r"}),
        json!({"object_id": "cus_typed", "tenant_id": "t", "reason": false}),
        json!({"object_id": 7, "tenant_id": "t", "reason": "r"}),
    ] {
        let response = reqwest::Client::new()
            .post(app.url("/api/billing/admin/tenant-links"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, 0);
}
