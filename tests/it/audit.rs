//! The finance audit trail: tenant history, time travel, tamper evidence, backfill.

use crate::events::{checkout_completed, envelope, invoice, subscription};
use crate::support::{TestApp, ADMIN_TOKEN};
use billing_ledger::config::{Command, DatabaseArgs};
use serde_json::{json, Value};

const T0: i64 = 1_700_000_000;
const DAY: i64 = 86_400;

/// A year of one tenant: checkout, trial, activation, renewals (one failing then recovering),
/// a plan change in the same second as a renewal, cancellation at period end.
fn long_history() -> Vec<Value> {
    let mut events = vec![
        checkout_completed("evt_h00", T0, "cs_h", "tenant-h", "cus_h", "sub_h"),
        subscription(
            "evt_h01",
            "customer.subscription.created",
            T0,
            "sub_h",
            "cus_h",
            "trialing",
            T0 + 14 * DAY,
        ),
        subscription(
            "evt_h02",
            "customer.subscription.updated",
            T0 + 14 * DAY,
            "sub_h",
            "cus_h",
            "active",
            T0 + 44 * DAY,
        ),
        invoice(
            "evt_h03",
            "invoice.paid",
            T0 + 14 * DAY,
            "in_h1",
            "cus_h",
            "sub_h",
            "subscription_cycle",
            true,
        ),
    ];
    for month in 1..=10 {
        let at = T0 + (14 + 30 * month) * DAY;
        let id = |n: i64| format!("evt_h{month:02}_{n}");
        if month == 4 {
            events.push(invoice(
                &id(1),
                "invoice.payment_failed",
                at,
                &format!("in_h{month}"),
                "cus_h",
                "sub_h",
                "subscription_cycle",
                false,
            ));
            events.push(subscription(
                &id(2),
                "customer.subscription.updated",
                at,
                "sub_h",
                "cus_h",
                "past_due",
                at + 30 * DAY,
            ));
            events.push(invoice(
                &id(3),
                "invoice.paid",
                at + 3 * DAY,
                &format!("in_h{month}"),
                "cus_h",
                "sub_h",
                "subscription_cycle",
                true,
            ));
            events.push(subscription(
                &id(4),
                "customer.subscription.updated",
                at + 3 * DAY,
                "sub_h",
                "cus_h",
                "active",
                at + 30 * DAY,
            ));
        } else {
            events.push(invoice(
                &id(1),
                "invoice.paid",
                at,
                &format!("in_h{month}"),
                "cus_h",
                "sub_h",
                "subscription_cycle",
                true,
            ));
            events.push(subscription(
                &id(2),
                "customer.subscription.updated",
                at,
                "sub_h",
                "cus_h",
                "active",
                at + 30 * DAY,
            ));
        }
    }
    let end = T0 + (14 + 330) * DAY;
    events.push(subscription(
        "evt_h99",
        "customer.subscription.deleted",
        end,
        "sub_h",
        "cus_h",
        "canceled",
        end,
    ));
    events
}

#[tokio::test]
async fn time_travel_matches_the_timeline_at_every_instant() {
    let app = TestApp::start().await;
    let mut events = long_history();
    events.reverse(); // delivered newest first: the timeline is in Stripe order regardless
    for event in &events {
        app.deliver(event).await;
    }
    app.wait_projected().await;
    let history = app
        .get_json("/api/billing/tenants/tenant-h/history?limit=1000")
        .await;
    let steps = history["history"].as_array().unwrap();
    assert_eq!(steps.len(), events.len());
    // The checkout and the creation share a second: log position breaks the tie.
    assert_eq!(steps[0]["created"], steps[1]["created"]);
    assert_eq!(steps[1]["state"]["status"], "trialing");
    assert!(steps[1]["changed"]
        .as_array()
        .unwrap()
        .contains(&json!("status")));
    assert_eq!(steps.last().unwrap()["state"]["status"], "canceled");
    for (i, step) in steps.iter().enumerate() {
        let created = step["created"].as_str().unwrap();
        // Several events can share a second; as_of sees all of them, so compare at the last.
        if steps
            .get(i + 1)
            .is_some_and(|next| next["created"] == created)
        {
            continue;
        }
        let as_of = app
            .get_json(&format!(
                "/api/billing/tenants/tenant-h/pricing?as_of={}",
                created.replace('+', "%2B")
            ))
            .await;
        assert_eq!(as_of, step["state"], "as_of {created}");
    }
    let live = app.get_json("/api/billing/tenants/tenant-h/pricing").await;
    let now = app
        .get_json("/api/billing/tenants/tenant-h/pricing?as_of=2100-01-01T00:00:00Z")
        .await;
    assert_eq!(now, live);
    let before = app
        .get(
            "/api/billing/tenants/tenant-h/pricing?as_of=2000-01-01T00:00:00Z",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(before.status(), 404);
    // Delivered newest first, the checkout that names the tenant came last: by log position,
    // the tenant was unknown until then.
    let last = events.len();
    let path = format!(
        "/api/billing/tenants/tenant-h/pricing?as_of_position={}",
        last - 1
    );
    assert_eq!(app.get(&path, ADMIN_TOKEN).await.status(), 404);
    let all = app
        .get_json(&format!(
            "/api/billing/tenants/tenant-h/pricing?as_of_position={last}"
        ))
        .await;
    assert_eq!(all, live);
    let page = app
        .get_json("/api/billing/tenants/tenant-h/history?limit=5")
        .await;
    assert_eq!(page["history"].as_array().unwrap().len(), 5);
    let next = page["next_cursor"].as_str().unwrap();
    let page2 = app
        .get_json(&format!(
            "/api/billing/tenants/tenant-h/history?limit=5&cursor={next}"
        ))
        .await;
    assert_eq!(page2["history"][0], steps[5]);
}

async fn verify(app: &TestApp) -> Value {
    let response = app.get("/api/billing/admin/verify", ADMIN_TOKEN).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn verify_cli(url: &str) -> std::process::ExitCode {
    let command = Command::Verify(DatabaseArgs {
        database_url: url.to_owned(),
    });
    billing_ledger::cli::execute(command).await.unwrap()
}

async fn tampered_app() -> TestApp {
    let app = TestApp::start().await;
    for i in 0..5 {
        let object = json!({"id": format!("cus_v{i}"), "object": "customer"});
        app.deliver(&envelope(
            &format!("evt_v{i}"),
            "customer.created",
            T0 + i,
            object,
        ))
        .await;
    }
    let report = verify(&app).await;
    assert_eq!(report["intact"], true);
    assert_eq!(report["events_verified"], 5);
    assert_eq!(report["head_hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        verify_cli(&app.db.url).await,
        std::process::ExitCode::SUCCESS
    );
    app
}

/// Runs `sql` as a superuser would to tamper: with the append-only triggers switched off.
async fn tamper(app: &TestApp, sql: &str) {
    let off = "ALTER TABLE events DISABLE TRIGGER events_append_only;
               ALTER TABLE deliveries DISABLE TRIGGER deliveries_append_only;";
    let on = "ALTER TABLE events ENABLE ALWAYS TRIGGER events_append_only;
              ALTER TABLE deliveries ENABLE ALWAYS TRIGGER deliveries_append_only;";
    let script = format!("{off} {sql}; {on}");
    app.db.client().await.batch_execute(&script).await.unwrap();
}

#[tokio::test]
async fn altered_bytes_are_named_by_verify() {
    let app = tampered_app().await;
    tamper(
        &app,
        "UPDATE events SET body = convert_to(replace(convert_from(body, 'UTF8'), 'cus_v2', 'cus_vX'), 'UTF8')
         WHERE position = 3",
    )
    .await;
    let report = verify(&app).await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["broken_position"], 3);
    assert_eq!(report["broken_event_id"], "evt_v2");
    assert!(report["problem"].as_str().unwrap().contains("body"));
    assert_eq!(report["events_verified"], 2);
    assert_eq!(
        verify_cli(&app.db.url).await,
        std::process::ExitCode::FAILURE
    );

    // Re-hashing the body to match is caught by the chain.
    tamper(
        &app,
        "UPDATE events SET body_sha256 = sha256(body) WHERE position = 3",
    )
    .await;
    let report = verify(&app).await;
    assert_eq!(report["broken_event_id"], "evt_v2");
    assert!(report["problem"].as_str().unwrap().contains("chain"));
}

#[tokio::test]
async fn a_deleted_row_is_named_by_verify() {
    let app = tampered_app().await;
    tamper(
        &app,
        "DELETE FROM deliveries WHERE event_id = 'evt_v3'; DELETE FROM events WHERE position = 4",
    )
    .await;
    let report = verify(&app).await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["broken_position"], 4);
    assert!(
        report["problem"].as_str().unwrap().contains("missing"),
        "{report}"
    );
}

#[tokio::test]
async fn import_backfills_skips_known_ids_and_reports_bad_lines() {
    let app = TestApp::start().await;
    let stored = checkout_completed("evt_im0", T0, "cs_im", "tenant-im", "cus_im", "sub_im");
    app.deliver(&stored).await;
    let sub = subscription(
        "evt_im1",
        "customer.subscription.created",
        T0 + 1,
        "sub_im",
        "cus_im",
        "active",
        T0 + 30 * DAY,
    );
    let paid = invoice(
        "evt_im2",
        "invoice.paid",
        T0 + 2,
        "in_im",
        "cus_im",
        "sub_im",
        "subscription_create",
        true,
    );
    let lines = [
        stored.to_string(),
        sub.to_string(),
        String::new(),
        "{\"id\": \"evt_broken\", \"type\": \"x\"".to_owned(),
        paid.to_string(),
        sub.to_string(),
        "{\"id\":\"evt_no_object\",\"type\":\"x\",\"created\":1,\"data\":{}}".to_owned(),
    ];
    let file = std::env::temp_dir().join(format!("import-{}.jsonl", app.db.name));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    let report = billing_ledger::cli::import_file(&pool, &file)
        .await
        .unwrap();
    assert_eq!(report.imported, 2);
    assert_eq!(report.already_present, 2);
    let bad: Vec<usize> = report.invalid.iter().map(|(line, _)| *line).collect();
    assert_eq!(bad, [4, 7]);
    assert_eq!(app.db.count("SELECT count(*) FROM events").await, 3);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM events WHERE source = 'import'")
            .await,
        2
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM deliveries").await,
        3,
        "known IDs add no delivery"
    );
    let body: Vec<u8> = app
        .db
        .client()
        .await
        .query_one("SELECT body FROM events WHERE event_id = 'evt_im1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        body,
        sub.to_string().as_bytes(),
        "the line is stored as read"
    );
    app.wait_projected().await;
    let pricing = app.get_json("/api/billing/tenants/tenant-im/pricing").await;
    assert_eq!(pricing["status"], "active");
    assert_eq!(pricing["last_paid_at"], "2023-11-14T22:13:22+00:00");
    assert_eq!(verify(&app).await["intact"], true);
    std::fs::remove_file(file).ok();
}

/// Verifying while events are appended never reports damage: it checks the log up to the head
/// it read first, and everything up to that head is committed.
#[tokio::test]
async fn verify_during_appends_reports_an_intact_log() {
    use billing_ledger::chain::{verify, Verdict};
    use billing_ledger::event_log::{append_batch, Delivery};
    let app = TestApp::start().await;
    let pool = billing_ledger::db::pool(&app.db.url).unwrap();
    let writer = tokio::spawn({
        let pool = pool.clone();
        async move {
            for batch in 0..150 {
                let deliveries: Vec<Delivery> = (0..4)
                    .map(|i| {
                        let event = envelope(
                            &format!("evt_v{batch}_{i}"),
                            "customer.created",
                            T0,
                            json!({"id": format!("cus_v{batch}"), "object": "customer"}),
                        );
                        Delivery::imported(event.to_string().into(), chrono::Utc::now()).unwrap()
                    })
                    .collect();
                append_batch(&pool, &deliveries.iter().collect::<Vec<_>>())
                    .await
                    .unwrap();
            }
        }
    });
    let mut verified = 0;
    while !writer.is_finished() {
        match verify(&pool).await.unwrap() {
            Verdict::Intact { .. } => verified += 1,
            broken => panic!("verify during appends: {broken:?}"),
        }
    }
    writer.await.unwrap();
    assert!(verified > 1, "verified {verified} times while appending");
    assert!(matches!(
        verify(&pool).await.unwrap(),
        Verdict::Intact { events: 600, .. }
    ));
}
