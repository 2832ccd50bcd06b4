//! Money through the real service: invoices, payments, refunds, disputes and credit notes in
//! through the webhook, out through the finance routes (JSON and CSV), balances now and as of
//! an instant, and a rebuild that reproduces the money tables.

use crate::events::{checkout_completed, envelope};
use crate::support::{snapshot, TestApp, FINANCE_TOKEN};
use serde_json::{json, Value};

const T0: i64 = 1_700_000_000;
const DAY: i64 = 86_400;

fn invoice(id: &str, event_type: &str, created: i64, invoice: &str, status: &str) -> Value {
    let paid = status == "paid";
    envelope(
        id,
        event_type,
        created,
        json!({"id": invoice, "object": "invoice", "number": format!("N-{invoice}"),
               "customer": "cus_m", "subscription": "sub_m", "status": status, "paid": paid,
               "currency": "eur", "amount_due": 11900, "amount_paid": if paid { 11900 } else { 0 },
               "amount_remaining": if paid { 0 } else { 11900 }, "subtotal": 10000,
               "total": 11900, "total_tax_amounts": [{"amount": 1900}],
               "billing_reason": "subscription_cycle", "created": created, "charge": "ch_m",
               "period_start": created - 30 * DAY, "period_end": created, "attempt_count": 1,
               "status_transitions": {"finalized_at": created, "paid_at": if paid { json!(created) } else { json!(null) }}}),
    )
}

fn money_events() -> Vec<Value> {
    vec![
        checkout_completed("evt_m0", T0, "cs_m", "tenant-m", "cus_m", "sub_m"),
        invoice("evt_m1", "invoice.finalized", T0, "in_m1", "open"),
        invoice("evt_m2", "invoice.paid", T0 + 60, "in_m1", "paid"),
        invoice(
            "evt_m3",
            "invoice.finalized",
            T0 + 30 * DAY,
            "in_m2",
            "open",
        ),
        envelope(
            "evt_m4",
            "charge.succeeded",
            T0 + 60,
            json!({"id": "ch_m", "object": "charge", "amount": 11900, "amount_captured": 11900,
                   "amount_refunded": 0, "currency": "eur", "customer": "cus_m",
                   "status": "succeeded", "created": T0 + 60, "invoice": "in_m1"}),
        ),
        envelope(
            "evt_m5",
            "refund.created",
            T0 + DAY,
            json!({"id": "re_m", "object": "refund", "amount": 1900, "currency": "eur",
                   "charge": "ch_m", "status": "succeeded", "reason": "requested_by_customer",
                   "created": T0 + DAY}),
        ),
        envelope(
            "evt_m6",
            "charge.dispute.closed",
            T0 + 2 * DAY,
            json!({"id": "dp_m", "object": "dispute", "amount": 10000, "currency": "eur",
                   "charge": "ch_m", "status": "lost", "reason": "fraudulent",
                   "created": T0 + 2 * DAY}),
        ),
        envelope(
            "evt_m7",
            "credit_note.created",
            T0 + DAY,
            json!({"id": "cn_m", "object": "credit_note", "amount": 1900, "currency": "eur",
                   "invoice": "in_m1", "customer": "cus_m", "status": "issued",
                   "type": "post_payment", "refund": "re_m", "created": T0 + DAY}),
        ),
    ]
}

async fn with_money() -> TestApp {
    let app = TestApp::start().await;
    for event in money_events() {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    app
}

#[tokio::test]
async fn finance_routes_show_a_tenants_money() {
    let app = with_money().await;
    let list = app
        .get_json("/api/billing/invoices?tenant_id=tenant-m&currency=EUR")
        .await;
    let invoices = list["invoices"].as_array().unwrap();
    assert_eq!(invoices.len(), 2);
    assert_eq!(invoices[0]["id"], "in_m1");
    assert_eq!(invoices[0]["status"], "paid");
    assert_eq!(invoices[0]["amount_paid"], 11900);
    assert_eq!(invoices[0]["tax"], 1900);
    assert_eq!(invoices[0]["paid_at"], "2023-11-14T22:14:20+00:00");
    assert_eq!(invoices[1]["status"], "open");
    assert_eq!(list["next_cursor"], Value::Null);

    let open = app.get_json("/api/billing/invoices?status=open").await;
    assert_eq!(open["invoices"].as_array().unwrap().len(), 1);

    let detail = app.get_json("/api/billing/invoices/in_m1").await;
    assert_eq!(detail["tenant_id"], "tenant-m");
    assert_eq!(detail["payments"][0]["id"], "ch_m");
    assert_eq!(detail["payments"][0]["invoice_id"], "in_m1");
    assert_eq!(detail["refunds"][0]["id"], "re_m");
    assert_eq!(detail["credit_notes"][0]["type"], "post_payment");
    assert_eq!(detail["credit_notes"][0]["refund_ids"], json!(["re_m"]));

    let payments = app
        .get_json("/api/billing/payments?tenant_id=tenant-m")
        .await;
    assert_eq!(payments["payments"][0]["kind"], "charge");
    let refunds = app.get_json("/api/billing/refunds?payment_id=ch_m").await;
    assert_eq!(refunds["refunds"][0]["tenant_id"], "tenant-m");
    let disputes = app
        .get_json("/api/billing/disputes?tenant_id=tenant-m")
        .await;
    assert_eq!(disputes["disputes"][0]["status"], "lost");
    assert_eq!(disputes["disputes"][0]["customer_id"], "cus_m");
    let notes = app
        .get_json("/api/billing/credit-notes?invoice_id=in_m1")
        .await;
    assert_eq!(notes["credit_notes"][0]["amount"], 1900);

    let missing = app
        .get("/api/billing/invoices/in_nope", FINANCE_TOKEN)
        .await;
    assert_eq!(missing.status(), 404);
    let wrong = app
        .get("/api/billing/refunds?subscription_id=sub_m", FINANCE_TOKEN)
        .await;
    assert_eq!(wrong.status(), 400);
    let error: Value = wrong.json().await.unwrap();
    assert_eq!(
        error["error"],
        "refunds cannot be filtered by subscription_id"
    );
    let too_many = app
        .get("/api/billing/invoices?limit=1001", FINANCE_TOKEN)
        .await;
    assert_eq!(too_many.status(), 400);
    let anonymous = app.http.get(app.url("/api/billing/payments")).send().await;
    assert_eq!(anonymous.unwrap().status(), 401);
}

#[tokio::test]
async fn balances_now_and_as_of_an_instant() {
    let app = with_money().await;
    let now = app.get_json("/api/billing/tenants/tenant-m/balance").await;
    assert_eq!(
        now["balances"],
        json!([{"currency": "eur", "invoiced": 23800, "paid": 11900, "refunded": 1900,
                "disputed": 10000, "won_back": 0, "credited": 1900, "outstanding": 11900}])
    );
    let early = app
        .get_json("/api/billing/tenants/tenant-m/balance?as_of=2023-11-14T22:14:00Z")
        .await;
    assert_eq!(
        early["balances"],
        json!([{"currency": "eur", "invoiced": 11900, "paid": 0, "refunded": 0,
                "disputed": 0, "won_back": 0, "credited": 0, "outstanding": 11900}])
    );
    let unknown = app
        .get("/api/billing/tenants/nobody/balance", FINANCE_TOKEN)
        .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn money_lists_page_and_export_csv() {
    let app = with_money().await;
    let first = app.get_json("/api/billing/invoices?limit=1").await;
    assert_eq!(first["invoices"][0]["id"], "in_m1");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get_json(&format!("/api/billing/invoices?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(second["invoices"][0]["id"], "in_m2");
    assert_eq!(second["next_cursor"], Value::Null);

    let csv = app
        .http
        .get(app.url("/api/billing/invoices?tenant_id=tenant-m"))
        .bearer_auth(FINANCE_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(lines[0].starts_with("id,tenant_id,customer_id,number,status,currency,amount_due"));
    assert!(lines[1].starts_with("in_m1,tenant-m,cus_m,N-in_m1,paid,eur,11900,11900,0,"));
    assert_eq!(
        lines.len(),
        4,
        "header, two rows, and the final CRLF: {text}"
    );
}

#[tokio::test]
async fn rebuild_reproduces_the_money_tables() {
    let app = with_money().await;
    let live = snapshot(&app.db).await;
    assert_eq!(live["invoices"].as_array().unwrap().len(), 2);
    assert_eq!(live["refunds"].as_array().unwrap().len(), 1);
    crate::support::rebuild_and_wait(&app).await;
    assert_eq!(snapshot(&app.db).await, live);
}

fn priced_subscription(id: &str, created: i64, status: &str, quantity: i64) -> Value {
    let event_type = match status {
        "canceled" => "customer.subscription.deleted",
        _ => "customer.subscription.updated",
    };
    envelope(
        id,
        event_type,
        created,
        json!({"id": "sub_m", "object": "subscription", "customer": "cus_m", "status": status,
               "created": T0, "current_period_end": created + 30 * DAY,
               "items": {"data": [{"quantity": quantity, "price": {"id": "price_y",
                   "unit_amount": 120_000, "currency": "eur",
                   "recurring": {"interval": "year", "interval_count": 1}}}]},
               "metadata": {}}),
    )
}

#[tokio::test]
async fn revenue_per_month_and_its_movements() {
    let app = TestApp::start().await;
    for event in [
        checkout_completed("evt_r0", T0, "cs_m", "tenant-m", "cus_m", "sub_m"),
        priced_subscription("evt_r1", T0, "active", 1),
        priced_subscription("evt_r2", T0 + 20 * DAY, "active", 3),
        priced_subscription("evt_r3", T0 + 40 * DAY, "canceled", 3),
    ] {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    let revenue = app
        .get_json("/api/billing/revenue?from=2023-11&to=2023-12&currency=EUR")
        .await;
    let rows = revenue["revenue"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // 1,200.00 a year is 100.00 a month; three seats from 2023-12-04.
    assert_eq!(rows[0]["month"], "2023-11");
    assert_eq!(
        (rows[0]["new"].as_i64(), rows[0]["closing_mrr"].as_i64()),
        (Some(10_000), Some(10_000))
    );
    assert_eq!(rows[1]["expansion"], 20_000);
    assert_eq!(rows[1]["churn"], 30_000);
    assert_eq!(
        (
            rows[1]["closing_mrr"].as_i64(),
            rows[1]["subscribers"].as_i64()
        ),
        (Some(0), Some(0))
    );
    let tenant = app
        .get_json("/api/billing/revenue?from=2023-11&to=2023-11&tenant_id=tenant-m")
        .await;
    assert_eq!(tenant["revenue"][0]["closing_mrr"], 10_000);

    let movements = app
        .get_json("/api/billing/revenue/movements?month=2023-12")
        .await;
    let movements = movements["movements"].as_array().unwrap();
    assert_eq!(movements.len(), 2);
    assert_eq!(movements[0]["kind"], "expansion");
    assert_eq!(movements[0]["event_id"], "evt_r2");
    assert_eq!(movements[0]["tenant_id"], "tenant-m");
    assert_eq!(movements[1]["kind"], "churn");
    assert_eq!(movements[1]["amount"], 30_000);
    let bad = app
        .get(
            "/api/billing/revenue?from=2023-13&to=2024-01",
            FINANCE_TOKEN,
        )
        .await;
    assert_eq!(bad.status(), 400);
}

/// The revenue read model takes a snapshot delivered late into its place, carries a month's
/// opening from the months before the asked range, and is reproduced by a rebuild.
#[tokio::test]
async fn revenue_follows_late_events_and_survives_a_rebuild() {
    let app = TestApp::start().await;
    for event in [
        checkout_completed("evt_r0", T0, "cs_m", "tenant-m", "cus_m", "sub_m"),
        priced_subscription("evt_r1", T0, "active", 1),
        priced_subscription("evt_r3", T0 + 40 * DAY, "canceled", 3),
    ] {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    let december = "/api/billing/revenue/movements?month=2023-12";
    let movements = app.get_json(december).await;
    assert_eq!(movements["movements"][0]["kind"], "churn");
    assert_eq!(movements["movements"][0]["amount"], 10_000);
    // The seats added on 2023-12-04, delivered after the cancellation.
    app.deliver(&priced_subscription("evt_r2", T0 + 20 * DAY, "active", 3))
        .await;
    app.wait_projected().await;
    let movements = app.get_json(december).await;
    let kinds: Vec<(&Value, &Value)> = movements["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (&m["kind"], &m["amount"]))
        .collect();
    assert_eq!(
        kinds,
        [
            (&json!("expansion"), &json!(20_000)),
            (&json!("churn"), &json!(30_000))
        ]
    );
    let months = "/api/billing/revenue?from=2023-12&to=2024-01";
    let revenue = app.get_json(months).await;
    let rows = revenue["revenue"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0]["opening_mrr"].as_i64(),
            rows[0]["closing_mrr"].as_i64()
        ),
        (Some(10_000), Some(0))
    );
    assert_eq!(
        (rows[1]["opening_mrr"].as_i64(), rows[1]["churn"].as_i64()),
        (Some(0), Some(0))
    );
    crate::support::rebuild_and_wait(&app).await;
    assert_eq!(app.get_json(months).await, revenue);
    assert_eq!(app.get_json(december).await, movements);
    let other = app
        .get_json("/api/billing/revenue?from=2023-12&to=2023-12&tenant_id=tenant-none")
        .await;
    assert_eq!(other["revenue"], json!([]));
}

#[tokio::test]
async fn the_events_csv_shows_tenant_customer_amount_and_currency() {
    let app = with_money().await;
    let response = app
        .http
        .get(app.url("/api/billing/events?type=invoice.paid"))
        .bearer_auth(FINANCE_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(lines[0].ends_with(",source,tenant_id,customer_id,amount,currency"));
    assert!(
        lines[1].ends_with(",webhook,tenant-m,cus_m,11900,eur"),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn money_rows_are_in_the_change_feed() {
    let app = with_money().await;
    let (changes, _) = crate::feed::read_all(&app, "&read_model=invoices", 100).await;
    let paid: Vec<&Value> = changes
        .iter()
        .filter(|c| c["key"] == "in_m1" && c["after"]["status"] == "paid")
        .collect();
    assert_eq!(paid.len(), 1, "{changes:#?}");
    assert_eq!(paid[0]["tenant_id"], "tenant-m");
    assert_eq!(paid[0]["after"]["amount_paid"], 11900);
    for read_model in ["payments", "refunds", "disputes", "credit_notes"] {
        let (changes, _) =
            crate::feed::read_all(&app, &format!("&read_model={read_model}"), 100).await;
        assert!(!changes.is_empty(), "no {read_model} change in the feed");
        assert!(changes.iter().all(|c| c["read_model"] == read_model));
    }
}
