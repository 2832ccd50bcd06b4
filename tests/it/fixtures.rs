//! Real Stripe events captured by other projects (`../shared/fixtures/stripe-events`, or
//! `LEDGER_FIXTURES_DIR`), plus our own: each is accepted, stored byte for byte, and its type
//! and object ID extracted. Several captured files share placeholder event IDs, so each file
//! gets a fresh database.

use crate::support::TestApp;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The captured events' folder: `LEDGER_FIXTURES_DIR` (which must exist when set), else
/// `../shared/fixtures/stripe-events` when present.
fn captured_dir() -> Option<PathBuf> {
    match std::env::var_os("LEDGER_FIXTURES_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "LEDGER_FIXTURES_DIR {} is not a folder",
                dir.display()
            );
            Some(dir)
        }
        None => {
            let default =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/stripe-events");
            default.is_dir().then_some(default)
        }
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let dir = captured_dir();
    let mut files = Vec::new();
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for dir in dir.iter().chain([&ours]) {
        collect(dir, &mut files);
    }
    files.sort();
    files
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
}

#[tokio::test]
async fn every_fixture_is_accepted_and_stored_byte_for_byte() {
    let files = fixture_files();
    assert!(files.len() >= 3, "fixtures found: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        let app = TestApp::start().await;
        let response = app.post_event(&bytes).await;
        assert_eq!(response.status(), 200, "{}", file.display());
        let row = app
            .db
            .client()
            .await
            .query_one(
                "SELECT event_id, type, object_id, object_type, body FROM events",
                &[],
            )
            .await
            .unwrap();
        let expect = |pointer: &str| {
            parsed
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        assert_eq!(
            Some(row.get::<_, String>(0)),
            expect("/id"),
            "{}",
            file.display()
        );
        assert_eq!(
            Some(row.get::<_, String>(1)),
            expect("/type"),
            "{}",
            file.display()
        );
        assert_eq!(
            row.get::<_, Option<String>>(2),
            expect("/data/object/id"),
            "{}",
            file.display()
        );
        assert_eq!(
            row.get::<_, Option<String>>(3),
            expect("/data/object/object"),
            "{}",
            file.display()
        );
        assert_eq!(row.get::<_, Vec<u8>>(4), bytes, "{}", file.display());
        app.wait_projected().await;
        let errors = app.db.count("SELECT count(*) FROM projection_errors").await;
        assert_eq!(
            errors,
            0,
            "{} folds without a projection error",
            file.display()
        );
        app.stop().await;
    }
}

/// Every captured money event (invoices, charges, PaymentIntents, InvoicePayments, refunds,
/// disputes, credit notes) folds alone without a projection error, and its row shows the
/// amounts and currency the file holds.
#[test]
fn every_money_fixture_folds_with_its_amounts() {
    let mut folded = 0;
    for file in fixture_files() {
        let bytes = std::fs::read(&file).unwrap();
        let event = projections::Event::parse(&bytes).unwrap();
        let object = serde_json::from_slice::<Value>(&bytes).unwrap()["data"]["object"].clone();
        let mut ledger = projections::Ledger::new(event.livemode);
        let outcome = ledger.apply(&event);
        assert!(outcome.is_ok(), "{}: {outcome:?}", file.display());
        let money = ledger.read_models().money;
        let amount = |field: &str| object.get(field).and_then(Value::as_i64);
        let currency = object["currency"].as_str().map(str::to_owned);
        let id = object["id"].as_str().unwrap_or_default();
        let name = file.display();
        match event.object_type() {
            Some("invoice") if event.event_type == "invoice.deleted" => {
                assert!(!money.invoices.contains_key(id), "{name}");
            }
            Some("invoice") if event.event_type != "invoice.upcoming" => {
                let row = &money.invoices[id];
                assert_eq!(row.amount_due, amount("amount_due"), "{name}");
                assert_eq!(row.amount_paid, amount("amount_paid"), "{name}");
                assert_eq!(row.total, amount("total"), "{name}");
                assert_eq!(row.currency, currency, "{name}");
            }
            Some("charge" | "payment_intent") => {
                let row = &money.payments[id];
                assert_eq!(row.amount, amount("amount"), "{name}");
                assert_eq!(row.currency, currency, "{name}");
            }
            Some("invoice_payment") => {
                let row = &money.payments[id];
                assert_eq!(row.amount, amount("amount_paid"), "{name}");
                assert_eq!(
                    row.invoice_id.as_deref(),
                    object["invoice"].as_str(),
                    "{name}"
                );
            }
            _ => continue,
        }
        folded += 1;
    }
    let captured = fixture_files()
        .iter()
        .any(|f| f.to_string_lossy().contains("stripe-events"));
    assert!(
        folded >= if captured { 17 } else { 0 },
        "money fixtures folded: {folded}"
    );
}

/// Amounts read from particular captured files, by hand.
#[test]
fn captured_money_amounts() {
    let dir = captured_dir().expect("the captured Stripe events (LEDGER_FIXTURES_DIR)");
    let fold = |file: &str| {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let mut ledger = projections::Ledger::new(false);
        ledger
            .apply(&projections::Event::parse(&bytes).unwrap())
            .unwrap();
        ledger.read_models().money
    };
    let paid = fold("stripe-ruby-mock__stripe-ruby-mock/invoice.paid.json");
    let invoice = &paid.invoices["in_000000000000000000000000"];
    assert_eq!(
        (invoice.status.as_str(), invoice.amount_paid),
        ("paid", Some(2000))
    );
    let old = fold("teamtnt__php-stripe-webhook-tester/2015-03-24/invoice.payment_succeeded.json");
    let invoice = &old.invoices["sub_00000000000000"];
    assert_eq!(
        (invoice.status.as_str(), invoice.amount_due),
        ("paid", Some(5000))
    );
    assert_eq!(invoice.attempt_count, Some(4));
    let inpay = fold("supabase__stripe-sync-engine/invoice_payment_paid.json");
    let payment = &inpay.payments["inpay_1M3USa2eZvKYlo2CBjuwbq0N"];
    assert_eq!(
        (payment.amount, payment.paid_at),
        (Some(2000), Some(1391288554))
    );
    assert_eq!(
        payment.invoice_id.as_deref(),
        Some("in_103Q0w2eZvKYlo2C5PYwf6Wf")
    );
}
