//! Our own Stripe-shaped events for the tests, in the shapes Stripe renders for the API
//! versions named on each builder.

use serde_json::{json, Value};

pub fn envelope(id: &str, event_type: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    })
}

/// `checkout.session.completed` for a subscription, naming the tenant in `client_reference_id`.
pub fn checkout_completed(
    id: &str,
    created: i64,
    session: &str,
    tenant: &str,
    customer: &str,
    subscription: &str,
) -> Value {
    envelope(
        id,
        "checkout.session.completed",
        created,
        json!({
            "id": session,
            "object": "checkout.session",
            "amount_total": 4900,
            "client_reference_id": tenant,
            "created": created - 60,
            "currency": "eur",
            "customer": customer,
            "metadata": {},
            "mode": "subscription",
            "payment_status": "paid",
            "status": "complete",
            "subscription": subscription,
        }),
    )
}

/// A `customer.subscription.*` event in the pre-basil shape (period on the subscription).
pub fn subscription(
    id: &str,
    event_type: &str,
    created: i64,
    sub: &str,
    customer: &str,
    status: &str,
    period_end: i64,
) -> Value {
    envelope(
        id,
        event_type,
        created,
        json!({
            "id": sub,
            "object": "subscription",
            "cancel_at_period_end": false,
            "canceled_at": if status == "canceled" { json!(created) } else { Value::Null },
            "created": 1_700_000_000,
            "current_period_end": period_end,
            "current_period_start": period_end - 2_592_000,
            "customer": customer,
            "items": { "object": "list", "data": [
                { "id": "si_1", "object": "subscription_item", "price": { "id": "price_pro", "object": "price" }, "quantity": 3 }
            ]},
            "metadata": {},
            "status": status,
        }),
    )
}

/// An invoice event in the pre-basil shape (`invoice.subscription`).
#[allow(clippy::too_many_arguments)]
pub fn invoice(
    id: &str,
    event_type: &str,
    created: i64,
    invoice: &str,
    customer: &str,
    sub: &str,
    billing_reason: &str,
    paid: bool,
) -> Value {
    envelope(
        id,
        event_type,
        created,
        json!({
            "id": invoice,
            "object": "invoice",
            "billing_reason": billing_reason,
            "customer": customer,
            "paid": paid,
            "status": if paid { "paid" } else { "open" },
            "status_transitions": { "paid_at": if paid { json!(created) } else { Value::Null } },
            "subscription": sub,
        }),
    )
}
