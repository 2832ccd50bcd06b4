//! End-to-end flows: events in through the webhook, read models out through the API, and a
//! rebuild that reproduces them exactly.

use crate::events::{checkout_completed, invoice, subscription};
use crate::support::{snapshot, TestApp, ADMIN_TOKEN};
use billing_ledger::config::{Command, DatabaseArgs, RebuildArgs};
use serde_json::{json, Value};

const T0: i64 = 1_700_000_000;
const MONTH: i64 = 2_592_000;

async fn checkout_to_active(app: &TestApp) {
    for event in [
        checkout_completed("evt_f1", T0, "cs_f1", "tenant-1", "cus_f1", "sub_f1"),
        subscription(
            "evt_f2",
            "customer.subscription.created",
            T0,
            "sub_f1",
            "cus_f1",
            "incomplete",
            T0 + MONTH,
        ),
        subscription(
            "evt_f3",
            "customer.subscription.updated",
            T0 + 2,
            "sub_f1",
            "cus_f1",
            "active",
            T0 + MONTH,
        ),
        invoice(
            "evt_f4",
            "invoice.paid",
            T0 + 2,
            "in_f1",
            "cus_f1",
            "sub_f1",
            "subscription_create",
            true,
        ),
    ] {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
}

#[tokio::test]
async fn checkout_to_active_then_renewal_failure() {
    let app = TestApp::start().await;
    checkout_to_active(&app).await;
    let pricing = app.get_json("/api/billing/tenants/tenant-1/pricing").await;
    assert_eq!(pricing["status"], "active");
    assert_eq!(pricing["stripe_customer_id"], "cus_f1");
    assert_eq!(pricing["stripe_subscription_id"], "sub_f1");
    assert_eq!(pricing["price_id"], "price_pro");
    assert_eq!(pricing["quantity"], 3);
    assert_eq!(pricing["current_period_end"], "2023-12-14T22:13:20+00:00");
    assert_eq!(pricing["last_paid_at"], "2023-11-14T22:13:22+00:00");
    assert_eq!(pricing["resolved_by"], "checkout_client_reference_id");

    let session = app.get_json("/api/billing/checkout-sessions/cs_f1").await;
    assert_eq!(session["tenant_id"], "tenant-1");
    assert_eq!(session["status"], "complete");
    assert_eq!(session["amount_total"], 4900);
    let sessions = app
        .get_json("/api/billing/checkout-sessions?tenant_id=tenant-1")
        .await;
    assert_eq!(sessions["checkout_sessions"].as_array().unwrap().len(), 1);
    assert_eq!(sessions["next_cursor"], Value::Null);

    let renewal = T0 + MONTH + 10;
    app.deliver(&invoice(
        "evt_f5",
        "invoice.payment_failed",
        renewal,
        "in_f2",
        "cus_f1",
        "sub_f1",
        "subscription_cycle",
        false,
    ))
    .await;
    app.wait_projected().await;
    let pricing = app.get_json("/api/billing/tenants/tenant-1/pricing").await;
    assert_eq!(pricing["status"], "past_due");
    assert_eq!(
        pricing["last_payment_failed_at"],
        "2023-12-14T22:13:30+00:00"
    );
    assert_eq!(pricing["last_event_id"], "evt_f5");
}

#[tokio::test]
async fn a_failed_first_invoice_leaves_the_subscription_incomplete() {
    let app = TestApp::start().await;
    for event in [
        checkout_completed("evt_i1", T0, "cs_i1", "tenant-2", "cus_i1", "sub_i1"),
        invoice(
            "evt_i2",
            "invoice.payment_failed",
            T0 + 1,
            "in_i1",
            "cus_i1",
            "sub_i1",
            "subscription_create",
            false,
        ),
    ] {
        app.deliver(&event).await;
    }
    app.wait_projected().await;
    let pricing = app.get_json("/api/billing/tenants/tenant-2/pricing").await;
    assert_eq!(pricing["status"], "incomplete");
}

#[tokio::test]
async fn an_invoice_before_the_checkout_that_names_its_tenant_ends_applied() {
    let app = TestApp::start().await;
    app.deliver(&invoice(
        "evt_l1",
        "invoice.payment_failed",
        T0 + MONTH,
        "in_l1",
        "cus_l1",
        "sub_l1",
        "subscription_cycle",
        false,
    ))
    .await;
    app.wait_projected().await;
    let unresolved = app.get_json("/api/billing/unresolved").await;
    assert_eq!(unresolved["unresolved"][0]["event_id"], "evt_l1");
    assert_eq!(unresolved["unresolved"][0]["object_id"], "sub_l1");
    assert_eq!(
        app.get("/api/billing/tenants/tenant-3/pricing", ADMIN_TOKEN)
            .await
            .status(),
        404
    );

    app.deliver(&checkout_completed(
        "evt_l2", T0, "cs_l1", "tenant-3", "cus_l1", "sub_l1",
    ))
    .await;
    app.wait_projected().await;
    let pricing = app.get_json("/api/billing/tenants/tenant-3/pricing").await;
    assert_eq!(pricing["status"], "past_due");
    let unresolved = app.get_json("/api/billing/unresolved").await;
    assert_eq!(unresolved["unresolved"], json!([]));
    let events = app.get_json("/api/billing/events?tenant_id=tenant-3").await;
    let ids: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_l1", "evt_l2"]);
    let detail = app.get_json("/api/billing/events/evt_l1").await;
    assert_eq!(detail["projected"], true);
    assert_eq!(
        detail["tenants"],
        json!([{"tenant_id": "tenant-3", "resolved_by": "checkout_client_reference_id"}])
    );
}

#[tokio::test]
async fn our_fixtures_in_the_basil_shape_fold_into_tenant_pricing() {
    let app = TestApp::start().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let response = app.post_event(&std::fs::read(file).unwrap()).await;
        assert_eq!(response.status(), 200);
    }
    app.wait_projected().await;
    let pricing = app
        .get_json("/api/billing/tenants/tenant-acme/pricing")
        .await;
    assert_eq!(
        pricing["status"], "past_due",
        "renewal failure with the subscription under parent"
    );
    assert_eq!(pricing["price_id"], "price_fx_team");
    assert_eq!(pricing["quantity"], 12);
    assert_eq!(pricing["cancel_at_period_end"], true);
    assert_eq!(
        pricing["current_period_end"], "2025-02-01T10:00:00+00:00",
        "earliest item period end"
    );
    let customer = app.get_json("/api/billing/customers/cus_fx_1").await;
    assert_eq!(customer["email"], "billing@acme.example");
    assert_eq!(customer["tenant_id"], "tenant-acme");
    assert_eq!(customer["deleted"], false);
}

#[tokio::test]
async fn rebuild_reproduces_the_live_read_models() {
    let app = TestApp::start().await;
    checkout_to_active(&app).await;
    app.deliver(&invoice(
        "evt_r5",
        "invoice.payment_failed",
        T0 + MONTH,
        "in_r2",
        "cus_f1",
        "sub_f1",
        "subscription_cycle",
        false,
    ))
    .await;
    app.deliver(&invoice(
        "evt_r6",
        "invoice.paid",
        T0 + MONTH,
        "in_r3",
        "cus_orphan",
        "sub_orphan",
        "subscription_cycle",
        true,
    ))
    .await;
    app.wait_projected().await;
    let live = snapshot(&app.db).await;
    assert_eq!(live["tenant_pricing"].as_array().unwrap().len(), 1);
    assert_eq!(live["unresolved_events"].as_array().unwrap().len(), 1);

    crate::support::rebuild_and_wait(&app).await;
    assert_eq!(snapshot(&app.db).await, live, "API rebuild");

    // The command-line rebuild, with no service running, gives the same rows.
    let db = app.stop().await;
    let command = Command::Rebuild(RebuildArgs {
        database: DatabaseArgs {
            database_url: db.url.clone(),
        },
        projection: Some("billing".into()),
        livemode: false,
        preview: false,
        json: false,
    });
    let code = billing_ledger::cli::execute(command).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(snapshot(&db).await, live, "CLI rebuild");
    let rebuilds = db
        .count("SELECT count(*) FROM rebuilds WHERE status = 'done'")
        .await;
    assert_eq!(rebuilds, 2);
}
