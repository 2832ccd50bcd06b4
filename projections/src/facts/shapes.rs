//! Reading one Stripe object's shape into a fact's parts, across API versions, and the JSON
//! helpers every reader shares (IDs as strings or expanded objects, Unix seconds, tenant
//! claims in metadata).

use super::*;

pub(super) fn subscription_snapshot(object: &Value) -> Result<SubscriptionSnapshot, String> {
    let status = match object.get("status") {
        Some(Value::String(s)) => {
            Status::parse(s).ok_or_else(|| format!("unknown subscription status {s:?}"))?
        }
        _ => return Err("subscription `status` must be a string".into()),
    };
    let first_item = object.pointer("/items/data/0");
    // The price object the price ID came from, so its product is the same price's.
    let price = first_item
        .and_then(|item| price_object(item, "price").or_else(|| price_object(item, "plan")))
        .or_else(|| price_object(object, "plan"));
    let price_id = price.and_then(id_of);
    let product_id = price.and_then(|p| id_at(p, "product"));
    let quantity = match first_item.and_then(|item| item.get("quantity")) {
        Some(q) if !q.is_null() => Some(q),
        _ => object.get("quantity").filter(|q| !q.is_null()),
    };
    let quantity = match quantity {
        None => None,
        Some(q) => Some(
            q.as_i64()
                .ok_or("subscription `quantity` must be an integer")?,
        ),
    };
    Ok(SubscriptionSnapshot {
        status,
        customer_id: id_at(object, "customer"),
        price_id,
        product_id,
        quantity,
        current_period_end: period_end(object)?,
        cancel_at_period_end: object
            .get("cancel_at_period_end")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        canceled_at: optional_seconds(object, "canceled_at")?,
        created: optional_seconds(object, "created")?,
        pricing: crate::money::pricing::read(object)?,
    })
}

/// Top-level `current_period_end`, else the earliest among the items (see the module doc).
pub(super) fn period_end(object: &Value) -> Result<Option<i64>, String> {
    if let Some(end) = optional_seconds(object, "current_period_end")? {
        return Ok(Some(end));
    }
    let mut earliest: Option<i64> = None;
    let items = object.pointer("/items/data").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        if let Some(end) = optional_seconds(item, "current_period_end")? {
            earliest = Some(earliest.map_or(end, |e| e.min(end)));
        }
    }
    Ok(earliest)
}

pub(super) fn invoice_fact(event: &Event) -> Result<Option<InvoiceFact>, String> {
    let object = &event.object;
    let subscription_id = id_at(object, "subscription")
        .or_else(|| {
            object
                .pointer("/parent/subscription_details/subscription")
                .and_then(id_of)
        })
        .or_else(|| {
            let line = object.pointer("/lines/data/0")?;
            id_at(line, "subscription").or_else(|| {
                line.pointer("/parent/subscription_item_details/subscription")
                    .and_then(id_of)
            })
        });
    let Some(subscription_id) = subscription_id else {
        return Ok(None);
    };
    let tenant = tenant_in(
        object
            .pointer("/parent/subscription_details/metadata")
            .or_else(|| object.pointer("/subscription_details/metadata")),
        ResolvedBy::InvoiceSubscriptionDetails,
    )?;
    let outcome = if event.event_type == "invoice.payment_failed" {
        InvoiceOutcome::Failed(BillingReason::parse(string_at(object, &["billing_reason"])))
    } else {
        let paid = match (object.get("paid"), object.get("status")) {
            (Some(Value::Bool(paid)), _) => *paid,
            (_, Some(Value::String(status))) => status == "paid",
            _ => return Err("invoice has neither `paid` nor a string `status`".into()),
        };
        if paid {
            let paid_at = optional_seconds_at(object, "/status_transitions/paid_at")?;
            InvoiceOutcome::Paid {
                paid_at: paid_at.unwrap_or(event.created),
            }
        } else {
            InvoiceOutcome::NotPaid
        }
    };
    Ok(Some(InvoiceFact {
        subscription_id,
        customer_id: id_at(object, "customer"),
        tenant,
        outcome,
    }))
}

pub(super) fn session_snapshot(
    event_type: &str,
    object: &Value,
) -> Result<SessionSnapshot, String> {
    // Sessions rendered before `status` existed (2021) carry none; the event type says it.
    let status = match event_type {
        "checkout.session.expired" => SessionStatus::Expired,
        _ => SessionStatus::Complete,
    };
    let amount_total = match object.get("amount_total") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or("checkout session `amount_total` must be an integer")?,
        ),
    };
    Ok(SessionSnapshot {
        status,
        payment_status: optional_string(object, "payment_status")?,
        mode: optional_string(object, "mode")?,
        customer_id: id_at(object, "customer"),
        subscription_id: id_at(object, "subscription"),
        amount_total,
        currency: optional_string(object, "currency")?,
        created: optional_seconds(object, "created")?,
    })
}

/// A string ID, or the `id` of an expanded object.
pub(crate) fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        _ => None,
    }
}

/// `object[field]` when it holds an ID (a string or an object with an `id`).
pub(super) fn price_object<'v>(object: &'v Value, field: &str) -> Option<&'v Value> {
    object.get(field).filter(|v| id_of(v).is_some())
}

pub(crate) fn id_at(object: &Value, field: &str) -> Option<String> {
    object.get(field).and_then(id_of)
}

pub(super) fn required_id(object: &Value, field: &str) -> Result<String, String> {
    id_at(object, field).ok_or_else(|| format!("object `{field}` must be a string"))
}

pub(super) fn string_at<'v>(object: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter()
        .try_fold(object, |v, key| v.get(key))
        .and_then(Value::as_str)
}

pub(crate) fn optional_string(object: &Value, field: &str) -> Result<Option<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{field}` must be a string or null")),
    }
}

pub(crate) fn optional_seconds(object: &Value, field: &str) -> Result<Option<i64>, String> {
    seconds(object.get(field), field)
}

pub(crate) fn optional_seconds_at(object: &Value, pointer: &str) -> Result<Option<i64>, String> {
    seconds(object.pointer(pointer), pointer)
}

pub(super) fn seconds(value: Option<&Value>, name: &str) -> Result<Option<i64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|s| (0..=crate::envelope::CREATED_MAX).contains(s))
            .map(Some)
            .ok_or_else(|| format!("`{name}` must be Unix seconds")),
    }
}

/// A tenant ID as the metadata or `client_reference_id` holds it: absent, null, non-string or
/// empty is no claim; one that contains NUL or is longer than [`TENANT_ID_BYTES_MAX`] is an
/// error (Stripe allows metadata values of 500 characters; ignoring a long one would let
/// another rule attribute the event to some other tenant).
pub(super) fn tenant_claim(
    value: Option<&Value>,
    resolved_by: ResolvedBy,
) -> Result<Option<TenantClaim>, String> {
    let Some(raw) = value.and_then(Value::as_str).filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    let what = format!("tenant ID ({})", resolved_by.as_str());
    storable(raw, &what, TENANT_ID_BYTES_MAX)?;
    Ok(Some(TenantClaim {
        tenant_id: raw.to_owned(),
        resolved_by,
    }))
}

pub(super) fn object_tenant(object: &Value) -> Option<&Value> {
    object.get("tenant_id")
}

pub(crate) fn tenant_in(
    metadata: Option<&Value>,
    resolved_by: ResolvedBy,
) -> Result<Option<TenantClaim>, String> {
    tenant_claim(metadata.and_then(|m| m.get("tenant_id")), resolved_by)
}
