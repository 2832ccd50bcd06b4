//! Statuses inferred from invoices (issue 11, points 8 and 9), in every delivery order: a
//! failed payment leaves a never-live subscription `incomplete` whatever the seconds between
//! the events and whether `billing_reason` is present; a paid invoice recovers `incomplete`,
//! `past_due` and `unpaid` to `active`, ranked below any snapshot of the same or a later second.

use super::*;

/// An invoice payment event whose invoice carries `reason` as `billing_reason` (`None`: the
/// field is absent, as older API versions and test tools send it; `Some(Value::Null)`: null).
fn invoice_with(
    id: &str,
    event_type: &str,
    created: i64,
    sub: &str,
    reason: Option<Value>,
) -> Event {
    let mut object = json!({
        "id": format!("in_{id}"), "object": "invoice", "customer": "cus_1",
        "subscription": sub, "paid": event_type != "invoice.payment_failed",
    });
    if let Some(reason) = reason {
        object["billing_reason"] = reason;
    }
    event(id, event_type, created, object)
}

fn failed(id: &str, created: i64, reason: Option<Value>) -> Event {
    invoice_with(id, "invoice.payment_failed", created, "sub_1", reason)
}

fn paid(id: &str, event_type: &str, created: i64) -> Event {
    invoice_with(
        id,
        event_type,
        created,
        "sub_1",
        Some(json!("subscription_cycle")),
    )
}

fn snapshot(id: &str, event_type: &str, created: i64, status: &str) -> Event {
    sub_event(
        id,
        event_type,
        created,
        "sub_1",
        "cus_1",
        status,
        T + MONTH,
        "p",
    )
}

fn created(status: &str) -> Event {
    snapshot("evt_s", "customer.subscription.created", T, status)
}

fn tenant() -> Event {
    checkout("evt_c", T, "cs_1", "t1", "cus_1", "sub_1")
}

/// The reasons a first invoice's failure may carry: absent, null, unknown to us, and the one
/// Stripe sends today.
fn first_invoice_reasons() -> [Option<Value>; 4] {
    [
        None,
        Some(Value::Null),
        Some(json!("manual")),
        Some(json!("subscription_create")),
    ]
}

#[test]
fn a_failed_first_payment_stays_incomplete_at_any_distance_and_any_billing_reason() {
    for delay in [0, 1, 2, 59, 3600, MONTH] {
        for reason in first_invoice_reasons() {
            let models = in_every_order(&[
                tenant(),
                created("incomplete"),
                failed("evt_f", T + delay, reason.clone()),
            ]);
            let row = &models.tenant_pricing["t1"];
            assert_eq!(
                row.status,
                Some(Status::Incomplete),
                "failure {delay} s after creation, billing_reason {reason:?}"
            );
            assert_eq!(row.last_payment_failed_at, Some(T + delay));
        }
    }
}

#[test]
fn a_failed_payment_alone_infers_incomplete() {
    for reason in first_invoice_reasons() {
        let models = in_every_order(&[tenant(), failed("evt_f", T + 2, reason)]);
        assert_eq!(status(&models, "t1"), Some(Status::Incomplete));
    }
}

#[test]
fn a_failed_payment_after_the_subscription_was_live_is_past_due_without_billing_reason() {
    // Live by a snapshot: active, or a trial whose first real invoice fails.
    for live in ["active", "trialing", "past_due", "unpaid"] {
        for reason in [None, Some(Value::Null), Some(json!("subscription_cycle"))] {
            let models = in_every_order(&[
                tenant(),
                created(live),
                failed("evt_f", T + MONTH, reason.clone()),
            ]);
            assert_eq!(
                status(&models, "t1"),
                Some(Status::PastDue),
                "after {live}, billing_reason {reason:?}"
            );
        }
    }
    // Live by a paid invoice only: the subscription's snapshots never said `active`.
    let models = in_every_order(&[
        tenant(),
        created("incomplete"),
        paid("evt_p", "invoice.paid", T + 1),
        failed("evt_f", T + MONTH, None),
    ]);
    assert_eq!(status(&models, "t1"), Some(Status::PastDue));
}

#[test]
fn a_renewal_failure_is_past_due_even_when_no_live_snapshot_was_seen() {
    let models = in_every_order(&[
        tenant(),
        failed("evt_f", T + MONTH, Some(json!("subscription_cycle"))),
    ]);
    assert_eq!(status(&models, "t1"), Some(Status::PastDue));
}

#[test]
fn a_paid_invoice_recovers_past_due_and_incomplete() {
    for event_type in ["invoice.paid", "invoice.payment_succeeded"] {
        // past_due inferred from the failure, then paid (a retry or the customer paying).
        let models = in_every_order(&[
            tenant(),
            created("active"),
            failed("evt_f", T + MONTH, Some(json!("subscription_cycle"))),
            paid("evt_p", event_type, T + MONTH + 3),
        ]);
        let row = &models.tenant_pricing["t1"];
        assert_eq!(row.status, Some(Status::Active), "{event_type}");
        assert_eq!(row.last_paid_at, Some(T + MONTH + 3));
        assert_eq!(row.last_payment_failed_at, Some(T + MONTH));
        // past_due from a snapshot, then paid.
        let models = in_every_order(&[
            tenant(),
            created("active"),
            snapshot(
                "evt_u",
                "customer.subscription.updated",
                T + MONTH,
                "past_due",
            ),
            paid("evt_p", event_type, T + MONTH + 1),
        ]);
        assert_eq!(status(&models, "t1"), Some(Status::Active), "{event_type}");
        // incomplete, its first invoice failed, then paid.
        let models = in_every_order(&[
            tenant(),
            created("incomplete"),
            failed("evt_f", T + 1, None),
            paid("evt_p", event_type, T + 2),
        ]);
        assert_eq!(status(&models, "t1"), Some(Status::Active), "{event_type}");
        // unpaid, then paid.
        let models = in_every_order(&[
            tenant(),
            snapshot("evt_u", "customer.subscription.updated", T, "unpaid"),
            paid("evt_p", event_type, T + 60),
        ]);
        assert_eq!(status(&models, "t1"), Some(Status::Active), "{event_type}");
    }
}

#[test]
fn a_payment_and_a_failure_in_one_second_end_paid() {
    for reason in [None, Some(json!("subscription_cycle"))] {
        let models = in_every_order(&[
            tenant(),
            created("active"),
            failed("evt_f", T + MONTH, reason),
            paid("evt_p", "invoice.paid", T + MONTH),
        ]);
        assert_eq!(status(&models, "t1"), Some(Status::Active));
    }
}

#[test]
fn a_snapshot_of_the_same_or_a_later_second_outranks_a_payment() {
    // Same second: the snapshot's status stands.
    let models = in_every_order(&[
        tenant(),
        created("active"),
        snapshot("evt_u", "customer.subscription.updated", T + 50, "past_due"),
        paid("evt_p", "invoice.paid", T + 50),
    ]);
    assert_eq!(status(&models, "t1"), Some(Status::PastDue));
    // Later: the subscription fell past due again after the payment.
    let models = in_every_order(&[
        tenant(),
        created("active"),
        paid("evt_p", "invoice.paid", T + 50),
        snapshot("evt_u", "customer.subscription.updated", T + 51, "past_due"),
    ]);
    assert_eq!(status(&models, "t1"), Some(Status::PastDue));
    // A later failure outranks an earlier payment too.
    let models = in_every_order(&[
        tenant(),
        created("active"),
        paid("evt_p", "invoice.paid", T + 50),
        failed("evt_f", T + MONTH, None),
    ]);
    assert_eq!(status(&models, "t1"), Some(Status::PastDue));
}

#[test]
fn a_payment_changes_no_other_status() {
    // A trial's first invoice is a paid zero-amount one: the subscription stays trialing.
    for status_before in ["trialing", "paused", "canceled", "incomplete_expired"] {
        let models = in_every_order(&[
            tenant(),
            created(status_before),
            invoice_with(
                "evt_p",
                "invoice.paid",
                T + 2,
                "sub_1",
                Some(json!("subscription_create")),
            ),
        ]);
        assert_eq!(
            status(&models, "t1").map(Status::as_str),
            Some(status_before)
        );
    }
    // Paid alone says nothing about the status.
    let models = in_every_order(&[tenant(), paid("evt_p", "invoice.paid", T + 2)]);
    assert_eq!(status(&models, "t1"), None);
    assert_eq!(models.tenant_pricing["t1"].last_paid_at, Some(T + 2));
}
