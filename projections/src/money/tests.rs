//! The money fold's guarantees: every scenario of issue 12 gives the same rows in every order
//! and with duplicates, both API shapes read, and incremental rendering equals a rebuild.

use crate::tests::{checkout, event, fold, in_every_order};
use crate::{Event, Ledger, ReadModels};
use proptest::prelude::*;
use serde_json::{json, Value};

const T: i64 = 1_700_000_000;

/// A checkout that ties `tenant` to `cus` and `sub`.
fn tenant_link(tenant: &str, cus: &str, sub: &str) -> Event {
    checkout(
        &format!("evt_cs_{tenant}"),
        T,
        &format!("cs_{tenant}"),
        tenant,
        cus,
        sub,
    )
}

fn charge(id: &str, event_type: &str, created: i64, fields: Value) -> Event {
    let mut object = json!({
        "id": "ch_1", "object": "charge", "amount": 2000, "amount_captured": 2000,
        "amount_refunded": 0, "currency": "usd", "customer": "cus_1", "status": "succeeded",
        "created": T, "payment_intent": "pi_1", "invoice": null,
        "failure_code": null, "failure_message": null,
    });
    merge(&mut object, fields);
    event(id, event_type, created, object)
}

fn refund(id: &str, event_type: &str, created: i64, status: &str) -> Event {
    event(
        id,
        event_type,
        created,
        json!({"id": "re_1", "object": "refund", "amount": 500, "currency": "usd",
               "charge": "ch_1", "payment_intent": "pi_1", "status": status,
               "reason": "requested_by_customer", "created": T + 10}),
    )
}

fn merge(object: &mut Value, fields: Value) {
    for (k, v) in fields.as_object().unwrap() {
        object[k] = v.clone();
    }
}

/// A pre-basil invoice (`subscription`, `paid`, `charge`, `total_tax_amounts`).
fn old_invoice(id: &str, event_type: &str, created: i64, fields: Value) -> Event {
    let mut object = json!({
        "id": "in_1", "object": "invoice", "number": "A-0001", "customer": "cus_1",
        "subscription": "sub_1", "status": "open", "paid": false, "currency": "usd",
        "amount_due": 2200, "amount_paid": 0, "amount_remaining": 2200, "subtotal": 2000,
        "total": 2200, "total_tax_amounts": [{"amount": 200, "inclusive": false}],
        "total_discount_amounts": [], "billing_reason": "subscription_cycle",
        "period_start": T - 2_592_000, "period_end": T, "created": T, "attempt_count": 0,
        "status_transitions": {"finalized_at": T + 5, "paid_at": null, "voided_at": null},
        "hosted_invoice_url": "https://invoice.stripe.com/i/1", "charge": "ch_1",
    });
    merge(&mut object, fields);
    event(id, event_type, created, object)
}

#[test]
fn refund_before_its_charge_reaches_the_tenant_through_the_charge() {
    let rows = in_every_order(&[
        tenant_link("t1", "cus_1", "sub_1"),
        charge("evt_ch", "charge.succeeded", T + 1, json!({})),
        refund("evt_re", "refund.created", T + 10, "succeeded"),
        charge(
            "evt_ch_ref",
            "charge.refunded",
            T + 10,
            json!({"amount_refunded": 500}),
        ),
    ]);
    let refund = &rows.money.refunds["re_1"];
    assert_eq!(refund.tenant_id.as_deref(), Some("t1"));
    assert_eq!(refund.payment_id.as_deref(), Some("ch_1"));
    assert_eq!(
        (refund.amount, refund.status.as_str()),
        (Some(500), "succeeded")
    );
    let charge = &rows.money.payments["ch_1"];
    assert_eq!(charge.amount_refunded, Some(500));
    assert_eq!(charge.paid_at, Some(T + 1));
    assert_eq!(charge.tenant_id.as_deref(), Some("t1"));
}

#[test]
fn a_refund_that_later_fails_stays_failed() {
    let rows = in_every_order(&[
        refund("evt_re_1", "refund.created", T + 10, "succeeded"),
        refund("evt_re_2", "charge.refund.updated", T + 20, "failed"),
        refund("evt_re_3", "refund.updated", T + 30, "succeeded"),
    ]);
    assert_eq!(rows.money.refunds["re_1"].status, "failed");
    assert_eq!(rows.money.refunds["re_1"].tenant_id, None);
}

#[test]
fn refunds_embedded_in_charge_refunded_are_read() {
    let embedded = json!({"refunds": {"object": "list", "data": [
        {"id": "re_a", "object": "refund", "amount": 300, "currency": "usd", "charge": "ch_1",
         "status": "succeeded", "reason": null, "created": T + 3},
        {"id": "re_b", "object": "refund", "amount": 200, "currency": "usd", "charge": "ch_1",
         "status": "pending", "reason": "duplicate", "created": T + 4}]},
        "amount_refunded": 500});
    let rows = in_every_order(&[
        tenant_link("t1", "cus_1", "sub_1"),
        charge("evt_ch_ref", "charge.refunded", T + 5, embedded),
        refund("evt_re_b", "refund.updated", T + 6, "succeeded"),
    ]);
    let money = &rows.money;
    assert_eq!(money.refunds["re_a"].amount, Some(300));
    assert_eq!(money.refunds["re_a"].tenant_id.as_deref(), Some("t1"));
    assert_eq!(money.refunds["re_b"].status, "pending");
    assert_eq!(money.refunds["re_1"].status, "succeeded");
}

#[test]
fn invoice_paid_before_finalized_stays_paid() {
    let rows = in_every_order(&[
        tenant_link("t1", "cus_1", "sub_1"),
        old_invoice("evt_in_1", "invoice.created", T, json!({"status": "draft"})),
        old_invoice("evt_in_2", "invoice.finalized", T + 5, json!({})),
        old_invoice(
            "evt_in_3",
            "invoice.paid",
            T + 5,
            json!({"status": "paid", "paid": true, "amount_paid": 2200, "amount_remaining": 0,
                   "attempt_count": 1,
                   "status_transitions": {"finalized_at": T + 5, "paid_at": T + 5}}),
        ),
    ]);
    let invoice = &rows.money.invoices["in_1"];
    assert_eq!(invoice.status, "paid");
    assert_eq!(invoice.tenant_id.as_deref(), Some("t1"));
    assert_eq!(
        (
            invoice.amount_due,
            invoice.amount_paid,
            invoice.amount_remaining
        ),
        (Some(2200), Some(2200), Some(0))
    );
    assert_eq!((invoice.tax, invoice.discount), (Some(200), Some(0)));
    assert_eq!(
        (invoice.finalized_at, invoice.paid_at),
        (Some(T + 5), Some(T + 5))
    );
    assert_eq!(invoice.last_event_id, "evt_in_3");
    // The invoice names its charge: the payment row shows which invoice it paid.
    assert_eq!(rows.money.payments.get("ch_1"), None);
}

#[test]
fn a_payment_that_fails_then_succeeds() {
    let pi = |id: &str, event_type: &str, created: i64, status: &str, error: Value| {
        event(
            id,
            event_type,
            created,
            json!({"id": "pi_1", "object": "payment_intent", "amount": 5000, "amount_received":
                   if status == "succeeded" { 5000 } else { 0 }, "currency": "jpy",
                   "customer": "cus_1", "status": status, "created": T,
                   "last_payment_error": error}),
        )
    };
    let declined = json!({"code": "card_declined", "message": "Your card was declined."});
    let rows = in_every_order(&[
        tenant_link("t1", "cus_1", "sub_1"),
        pi(
            "evt_pi_1",
            "payment_intent.payment_failed",
            T + 1,
            "requires_payment_method",
            declined,
        ),
        pi(
            "evt_pi_2",
            "payment_intent.succeeded",
            T + 60,
            "succeeded",
            Value::Null,
        ),
        old_invoice(
            "evt_in",
            "invoice.paid",
            T + 60,
            json!({"status": "paid", "paid": true, "charge": null, "payment_intent": "pi_1",
                   "currency": "jpy"}),
        ),
    ]);
    let payment = &rows.money.payments["pi_1"];
    assert_eq!(payment.status, "succeeded");
    assert_eq!(
        (payment.amount, payment.amount_captured),
        (Some(5000), Some(5000))
    );
    assert_eq!(payment.currency.as_deref(), Some("jpy"));
    assert_eq!(payment.failure_code, None);
    assert_eq!(payment.paid_at, Some(T + 60));
    assert_eq!(payment.invoice_id.as_deref(), Some("in_1"));
    assert_eq!(payment.tenant_id.as_deref(), Some("t1"));
}

#[test]
fn disputes_lost_and_won_reach_the_tenant_through_the_charge() {
    let dispute = |id: &str, event_type: &str, created: i64, dp: &str, status: &str| {
        event(
            id,
            event_type,
            created,
            json!({"id": dp, "object": "dispute", "amount": 2000, "currency": "kwd",
                   "charge": "ch_1", "status": status, "reason": "fraudulent", "created": T}),
        )
    };
    let rows = in_every_order(&[
        tenant_link("t1", "cus_1", "sub_1"),
        charge("evt_ch", "charge.succeeded", T, json!({"currency": "kwd"})),
        dispute(
            "evt_d1",
            "charge.dispute.created",
            T + 1,
            "dp_lost",
            "needs_response",
        ),
        dispute("evt_d2", "charge.dispute.closed", T + 9, "dp_lost", "lost"),
        dispute("evt_d3", "charge.dispute.closed", T + 9, "dp_won", "won"),
        dispute(
            "evt_d4",
            "charge.dispute.updated",
            T + 9,
            "dp_won",
            "under_review",
        ),
    ]);
    let disputes = &rows.money.disputes;
    assert_eq!(disputes["dp_lost"].status, "lost");
    assert_eq!(disputes["dp_won"].status, "won");
    assert_eq!(disputes["dp_won"].tenant_id.as_deref(), Some("t1"));
    assert_eq!(disputes["dp_won"].customer_id.as_deref(), Some("cus_1"));
    assert_eq!(disputes["dp_lost"].currency.as_deref(), Some("kwd"));
}

#[test]
fn a_credit_note_then_voided() {
    let note = |id: &str, event_type: &str, created: i64, status: &str| {
        event(
            id,
            event_type,
            created,
            json!({"id": "cn_1", "object": "credit_note", "amount": 700, "currency": "usd",
                   "invoice": "in_1", "customer": null, "status": status,
                   "type": "post_payment", "refunds": [{"refund": "re_9", "amount_refunded": 700}],
                   "created": T, "voided_at": null}),
        )
    };
    let rows = in_every_order(&[
        tenant_link("t1", "cus_1", "sub_1"),
        old_invoice(
            "evt_in",
            "invoice.paid",
            T,
            json!({"status": "paid", "paid": true}),
        ),
        note("evt_cn_1", "credit_note.created", T + 1, "issued"),
        note("evt_cn_2", "credit_note.voided", T + 50, "void"),
        note("evt_cn_3", "credit_note.updated", T + 50, "issued"),
    ]);
    let note = &rows.money.credit_notes["cn_1"];
    assert_eq!(note.status, "void");
    assert_eq!(note.voided_at, Some(T + 50));
    assert_eq!(note.refund_ids, vec!["re_9".to_owned()]);
    assert_eq!(note.tenant_id.as_deref(), Some("t1"));
    assert_eq!(note.customer_id.as_deref(), Some("cus_1"));
}

#[test]
fn basil_invoice_with_invoice_payment_and_total_taxes() {
    let invoice = |id: &str, event_type: &str, created: i64, status: &str, paid: i64| {
        event(
            id,
            event_type,
            created,
            json!({"id": "in_b", "object": "invoice", "customer": "cus_b", "status": status,
                   "currency": "usd", "amount_due": 34800, "amount_paid": paid,
                   "amount_remaining": 34800 - paid, "subtotal": 30000, "total": 34800,
                   "total_taxes": [{"amount": 4800, "tax_behavior": "exclusive"}],
                   "total_discount_amounts": [{"amount": 1000, "discount": "di_1"}],
                   "billing_reason": "subscription_create", "created": T,
                   "parent": {"type": "subscription_details", "subscription_details":
                       {"subscription": "sub_b", "metadata": {"tenant_id": "t_basil"}}},
                   "status_transitions": {"finalized_at": T + 1, "paid_at": null}}),
        )
    };
    let inpay = event(
        "evt_inpay",
        "invoice_payment.paid",
        T + 2,
        json!({"id": "inpay_1", "object": "invoice_payment", "amount_paid": 34800,
               "amount_requested": 34800, "currency": "usd", "invoice": "in_b",
               "payment": {"type": "payment_intent", "payment_intent": "pi_b"},
               "status": "paid", "status_transitions": {"paid_at": T + 2}, "created": T + 2}),
    );
    let pi = event(
        "evt_pi_b",
        "payment_intent.succeeded",
        T + 2,
        json!({"id": "pi_b", "object": "payment_intent", "amount": 34800,
               "amount_received": 34800, "currency": "usd", "customer": null,
               "status": "succeeded", "created": T + 1}),
    );
    let rows = in_every_order(&[
        invoice("evt_b1", "invoice.finalized", T + 1, "open", 0),
        invoice("evt_b2", "invoice.paid", T + 2, "paid", 34800),
        inpay,
        pi,
    ]);
    let money = &rows.money;
    let inv = &money.invoices["in_b"];
    assert_eq!(inv.subscription_id.as_deref(), Some("sub_b"));
    assert_eq!(inv.tenant_id.as_deref(), Some("t_basil"));
    assert_eq!((inv.tax, inv.discount), (Some(4800), Some(1000)));
    assert_eq!(inv.status, "paid");
    assert_eq!(
        inv.paid_at,
        Some(T + 2),
        "no paid_at transition: the first paid event"
    );
    let inpay = &money.payments["inpay_1"];
    assert_eq!(inpay.invoice_id.as_deref(), Some("in_b"));
    assert_eq!(inpay.paid_at, Some(T + 2));
    assert_eq!(inpay.tenant_id.as_deref(), Some("t_basil"));
    let pi = &money.payments["pi_b"];
    assert_eq!(
        pi.invoice_id.as_deref(),
        Some("in_b"),
        "linked by the InvoicePayment"
    );
    assert_eq!(pi.tenant_id.as_deref(), Some("t_basil"));
    assert_eq!(pi.customer_id.as_deref(), Some("cus_b"));
    // The invoice still tells the subscription fold about the tenant.
    assert_eq!(
        rows.tenant_pricing["t_basil"].stripe_subscription_id,
        "sub_b"
    );
}

#[test]
fn a_deleted_draft_is_gone_and_2015_invoices_read() {
    let draft = |id: &str, event_type: &str, created: i64| {
        old_invoice(
            id,
            event_type,
            created,
            json!({"id": "in_d", "status": "draft"}),
        )
    };
    let old = event(
        "evt_2015",
        "invoice.payment_succeeded",
        T,
        json!({"id": "in_2015", "object": "invoice", "date": T - 7, "paid": true,
               "amount_due": 5000, "total": 5000, "subtotal": 5000, "tax": null,
               "currency": "usd", "customer": "cus_1", "subscription": "sub_1",
               "attempt_count": 4, "charge": "ch_2015", "metadata": []}),
    );
    let rows = in_every_order(&[
        draft("evt_d1", "invoice.created", T),
        draft("evt_d2", "invoice.updated", T + 1),
        draft("evt_d3", "invoice.deleted", T + 1),
        old,
    ]);
    assert!(!rows.money.invoices.contains_key("in_d"));
    let old = &rows.money.invoices["in_2015"];
    assert_eq!((old.status.as_str(), old.created_at), ("paid", T - 7));
    assert_eq!(
        (old.amount_due, old.tax, old.paid_at),
        (Some(5000), None, Some(T))
    );
}

#[test]
fn unreadable_money_is_an_error_naming_the_field() {
    let mut ledger = Ledger::new(false);
    let bad = event(
        "evt_bad",
        "charge.succeeded",
        T,
        json!({"id": "ch_x", "status": "succeeded", "amount": 10.5, "currency": "usd"}),
    );
    let err = ledger.apply(&bad).unwrap_err();
    assert!(err.message.contains("`amount`"), "{err}");
    let bad = old_invoice(
        "evt_bad2",
        "invoice.updated",
        T,
        json!({"currency": "us dollars"}),
    );
    assert!(ledger.apply(&bad).unwrap_err().message.contains("currency"));
    assert_eq!(ledger.read_models(), ReadModels::default());
}

// ---- random histories: any order, duplicates, incremental rendering ----

/// A random money history of one customer: a charge with refunds summing to its
/// `amount_refunded`, a dispute, an invoice, a credit note, and maybe the tenant link.
fn money_history(n: usize) -> impl Strategy<Value = Vec<Event>> {
    let refunds = proptest::collection::vec((1i64..500, 0u8..3, 0i64..5), 0..4);
    (refunds, any::<bool>(), 0u8..4, 0i64..5).prop_map(move |(refunds, linked, stage, dt)| {
        let (cus, ch) = (format!("cus_{n}"), format!("ch_{n}"));
        let mut events = Vec::new();
        if linked {
            events.push(tenant_link(&format!("t{n}"), &cus, &format!("sub_{n}")));
        }
        let succeeded: i64 = refunds
            .iter()
            .filter(|(_, s, _)| *s == 0)
            .map(|(a, _, _)| a)
            .sum();
        for (i, (amount, status, offset)) in refunds.iter().enumerate() {
            let status = ["succeeded", "pending", "failed"][*status as usize];
            events.push(event(
                &format!("evt_re_{n}_{i}"),
                "refund.updated",
                T + offset,
                json!({"id": format!("re_{n}_{i}"), "object": "refund", "amount": amount,
                       "currency": "usd", "charge": ch, "status": status, "created": T}),
            ));
        }
        let ch_fields = json!({"id": ch, "customer": cus, "amount": 10_000,
                               "amount_refunded": succeeded, "invoice": format!("in_{n}")});
        events.push(charge(
            &format!("evt_ch_{n}"),
            "charge.refunded",
            T + dt,
            ch_fields,
        ));
        let dispute_status = ["needs_response", "under_review", "won", "lost"][stage as usize];
        events.push(event(
            &format!("evt_dp_{n}"),
            "charge.dispute.updated",
            T + dt,
            json!({"id": format!("dp_{n}"), "object": "dispute", "amount": 10_000,
                   "currency": "usd", "charge": ch, "status": dispute_status, "created": T}),
        ));
        events.push(old_invoice(
            &format!("evt_in_{n}"),
            "invoice.paid",
            T + dt,
            json!({"id": format!("in_{n}"), "customer": cus, "subscription": format!("sub_{n}"),
                   "status": "paid", "paid": true, "charge": ch}),
        ));
        events
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn money_in_any_order_with_duplicates_and_incrementally_equals_a_rebuild(
        (events, cuts, dups) in (money_history(0), money_history(1))
            .prop_map(|(a, b)| [a, b].concat())
            .prop_flat_map(|events| {
                let n = events.len();
                (Just(events).prop_shuffle(), proptest::collection::vec(0..n, 0..6),
                 proptest::collection::vec(0..n, 0..4))
            })
    ) {
        let in_order: Vec<&Event> = events.iter().collect();
        let mut delivered = in_order.clone();
        delivered.extend(dups.iter().map(|&i| &events[i]));
        let expected = fold(&in_order);
        prop_assert_eq!(&fold(&delivered), &expected);
        let mut ledger = Ledger::new(false);
        let mut rows = ReadModels::default();
        for (i, e) in delivered.iter().enumerate() {
            ledger.apply(e).unwrap();
            if cuts.contains(&i) {
                rows.apply(ledger.take_changes());
            }
        }
        rows.apply(ledger.take_changes());
        prop_assert_eq!(&rows, &expected);
        let mut rebuilt = Ledger::new(false);
        for e in &delivered {
            rebuilt.apply(e).unwrap();
        }
        let mut chunked = rebuilt.clone();
        rebuilt.mark_all_changed();
        let mut rebuilt_rows = ReadModels::default();
        let all = rebuilt.take_changes();
        let attributed = all.event_tenants.clone();
        rebuilt_rows.apply(all);
        prop_assert_eq!(&rebuilt_rows, &expected);
        // A rebuild that renders the money rows a few at a time writes the same rows.
        chunked.mark_all_changed();
        let mut chunked_rows = ReadModels::default();
        let changes = chunked.take_changes_deferring_money();
        prop_assert!(changes.money.invoices.is_empty() && changes.money.payments.is_empty());
        prop_assert_eq!(&changes.event_tenants, &attributed);
        chunked_rows.apply(changes);
        while let Some(money) = chunked.take_money_rows(3) {
            prop_assert!(money.invoices.len() + money.payments.len() + money.refunds.len()
                + money.disputes.len() + money.credit_notes.len() <= 3);
            chunked_rows.money.apply(money);
        }
        prop_assert_eq!(&chunked_rows, &expected);
        // Refunds that succeeded on a charge sum to its amount_refunded.
        for (id, payment) in &expected.money.payments {
            let refunded: i64 = expected.money.refunds.values()
                .filter(|r| r.payment_id.as_ref() == Some(id) && r.status == "succeeded")
                .filter_map(|r| r.amount)
                .sum();
            prop_assert_eq!(payment.amount_refunded, Some(refunded));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Balances never mix currencies: each currency's figures are the sums over that
    /// currency's rows alone (zero-decimal `jpy` and three-decimal `kwd` beside `usd`).
    #[test]
    fn balances_never_mix_currencies(
        invoices in proptest::collection::vec((0usize..3, 1i64..1_000_000, any::<bool>()), 1..12)
    ) {
        let currencies = ["usd", "jpy", "kwd"];
        let mut events = vec![tenant_link("t1", "cus_1", "sub_1")];
        for (i, (c, total, paid)) in invoices.iter().enumerate() {
            let status = if *paid { "paid" } else { "open" };
            events.push(old_invoice(
                &format!("evt_{i}"),
                "invoice.updated",
                T + i as i64,
                json!({"id": format!("in_{i}"), "currency": currencies[*c], "total": total,
                       "amount_due": total, "amount_paid": if *paid { *total } else { 0 },
                       "amount_remaining": if *paid { 0 } else { *total }, "status": status}),
            ));
        }
        let rows = fold(&events.iter().collect::<Vec<_>>());
        let balances = crate::money::balances(&rows.money, "t1");
        for balance in &balances {
            let mine = invoices.iter().filter(|(c, _, _)| currencies[*c] == balance.currency);
            let invoiced: i64 = mine.clone().map(|(_, t, _)| t).sum();
            let outstanding: i64 = mine.filter(|(_, _, p)| !p).map(|(_, t, _)| t).sum();
            prop_assert_eq!(balance.invoiced, invoiced);
            prop_assert_eq!(balance.outstanding, outstanding);
        }
        let used: std::collections::BTreeSet<_> =
            invoices.iter().map(|(c, _, _)| currencies[*c]).collect();
        prop_assert_eq!(balances.len(), used.len());
    }
}
