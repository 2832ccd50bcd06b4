//! Reading money objects out of events, across Stripe API versions, before anything is changed.
//!
//! Each handled event type becomes one [`MoneyFact`]: the snapshots of the objects it shows
//! (a `charge.refunded` shows its charge and the refunds embedded in it). A payload that cannot
//! be read is an error naming the field, and the fold leaves the ledger untouched. Shapes read
//! (Stripe's changelog, <https://docs.stripe.com/changelog>):
//! - Invoice subscription: `subscription` (before 2025-03-31.basil), else
//!   `parent.subscription_details.subscription`.
//! - Invoice tax: `total_taxes[].amount` (basil on), else `total_tax_amounts[].amount`, else the
//!   integer `tax` (before 2019).
//! - Invoice status: `status`; invoices rendered before it existed (2015) have only `paid`.
//! - Invoice to payment: the invoice's `charge` / `payment_intent` and the payment's `invoice`
//!   (both removed in basil), else `invoice_payment.paid` (`invoice` and `payment.charge` or
//!   `payment.payment_intent`).
//! - Refunds: their own events, and the `refunds.data` a `charge.refunded` embeds (versions
//!   before 2022-11-15 embed them; later ones send an empty or absent list).
//! - Credit note refunds: `refund` (before 2024-10-28.acacia) or `refunds[].refund`.

use crate::envelope::Event;
use crate::facts::{
    id_at, id_of, optional_seconds, optional_seconds_at, optional_string, storable, tenant_in,
    TenantClaim, OBJECT_ID_BYTES_MAX,
};
use crate::model::ResolvedBy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest free text kept from a money object (a failure message), in bytes.
pub const MESSAGE_BYTES_MAX: usize = 4_096;
/// Invoice statuses (<https://docs.stripe.com/api/invoices/object#invoice_object-status>).
pub const INVOICE_STATUSES: [&str; 5] = ["draft", "open", "paid", "uncollectible", "void"];

/// What one money event shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyFact {
    Invoice(Box<InvoiceSnapshot>),
    /// A charge and the refunds it embeds.
    Charge(Box<PaymentSnapshot>, Vec<RefundSnapshot>),
    Payment(Box<PaymentSnapshot>),
    Refund(Box<RefundSnapshot>),
    Dispute(Box<RefundSnapshot>),
    CreditNote(Box<CreditNoteSnapshot>),
}

/// An invoice as one event shows it; amounts in the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceSnapshot {
    pub id: String,
    /// `invoice.deleted`: a draft that is gone.
    pub deleted: bool,
    pub tenant: Option<TenantClaim>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub number: Option<String>,
    pub status: String,
    pub currency: Option<String>,
    pub amount_due: Option<i64>,
    pub amount_paid: Option<i64>,
    pub amount_remaining: Option<i64>,
    pub subtotal: Option<i64>,
    pub total: Option<i64>,
    pub tax: Option<i64>,
    pub discount: Option<i64>,
    pub billing_reason: Option<String>,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    pub created: Option<i64>,
    pub finalized_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub attempt_count: Option<i64>,
    pub hosted_invoice_url: Option<String>,
    /// Pre-basil links to the payment: `charge`, `payment_intent`.
    pub payment_ids: Vec<String>,
}

/// A charge, PaymentIntent or InvoicePayment as one event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSnapshot {
    pub id: String,
    pub kind: super::PaymentKind,
    pub status: String,
    pub customer_id: Option<String>,
    pub amount: Option<i64>,
    pub amount_captured: Option<i64>,
    pub amount_refunded: Option<i64>,
    pub currency: Option<String>,
    pub invoice_id: Option<String>,
    /// A charge's PaymentIntent; an InvoicePayment's charge or PaymentIntent.
    pub payment_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// An explicit paid time (InvoicePayment `status_transitions.paid_at`).
    pub paid_at: Option<i64>,
    pub created: Option<i64>,
}

/// A refund or a dispute as one event shows it (the two share their shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundSnapshot {
    pub id: String,
    pub status: String,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub charge_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub reason: Option<String>,
    pub created: Option<i64>,
}

/// A credit note as one event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteSnapshot {
    pub id: String,
    pub status: String,
    pub credit_note_type: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub invoice_id: Option<String>,
    pub customer_id: Option<String>,
    pub refund_ids: Vec<String>,
    pub created: Option<i64>,
    pub voided_at: Option<i64>,
}

/// Whether the money readers look at members named `key` (see `facts::reads_field`).
pub(crate) fn reads_field(key: &str) -> bool {
    matches!(
        key,
        "number"
            | "amount"
            | "amount_due"
            | "amount_paid"
            | "amount_remaining"
            | "amount_requested"
            | "amount_captured"
            | "amount_received"
            | "amount_refunded"
            | "subtotal"
            | "total"
            | "tax"
            | "total_taxes"
            | "total_tax_amounts"
            | "total_discount_amounts"
            | "period_start"
            | "period_end"
            | "finalized_at"
            | "voided_at"
            | "attempt_count"
            | "hosted_invoice_url"
            | "charge"
            | "payment_intent"
            | "payment"
            | "invoice"
            | "failure_code"
            | "failure_message"
            | "last_payment_error"
            | "code"
            | "message"
            | "refunds"
            | "refund"
            | "reason"
            | "date"
    )
}

/// Reads a money event; `Ok(None)` for any other type. Errors name the unreadable field.
pub fn read(event: &Event) -> Result<Option<MoneyFact>, String> {
    let object = &event.object;
    let fact = match event.event_type.as_str() {
        "invoice.created"
        | "invoice.finalized"
        | "invoice.updated"
        | "invoice.paid"
        | "invoice.payment_succeeded"
        | "invoice.payment_failed"
        | "invoice.payment_action_required"
        | "invoice.marked_uncollectible"
        | "invoice.voided"
        | "invoice.deleted"
        | "invoice.finalization_failed"
        | "invoice.sent"
        | "invoice.overdue" => MoneyFact::Invoice(Box::new(invoice(event)?)),
        "charge.succeeded" | "charge.failed" | "charge.pending" | "charge.captured"
        | "charge.updated" | "charge.refunded" | "charge.expired" => {
            let refunds = object.pointer("/refunds/data").and_then(Value::as_array);
            let refunds = refunds.into_iter().flatten().map(refund);
            MoneyFact::Charge(
                Box::new(charge(object)?),
                refunds.collect::<Result<_, _>>()?,
            )
        }
        "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled" => MoneyFact::Payment(Box::new(payment_intent(object)?)),
        "invoice_payment.paid" => MoneyFact::Payment(Box::new(invoice_payment(object)?)),
        "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
            MoneyFact::Refund(Box::new(refund(object)?))
        }
        "charge.dispute.created"
        | "charge.dispute.updated"
        | "charge.dispute.closed"
        | "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated" => MoneyFact::Dispute(Box::new(refund(object)?)),
        "credit_note.created" | "credit_note.updated" | "credit_note.voided" => {
            MoneyFact::CreditNote(Box::new(credit_note(event)?))
        }
        _ => return Ok(None),
    };
    Ok(Some(fact))
}

fn invoice(event: &Event) -> Result<InvoiceSnapshot, String> {
    let object = &event.object;
    let status = match optional_string(object, "status")? {
        Some(status) if INVOICE_STATUSES.contains(&status.as_str()) => status,
        // Some renderings of `invoice.deleted` say `"status": "deleted"`; only drafts are.
        Some(status) if status == "deleted" => "draft".to_owned(),
        Some(status) => return Err(format!("unknown invoice status {status:?}")),
        // 2015 renderings: no `status`, only `paid`.
        None if object.get("paid") == Some(&Value::Bool(true)) => "paid".to_owned(),
        None => "open".to_owned(),
    };
    let subscription_id = id_at(object, "subscription").or_else(|| {
        object
            .pointer("/parent/subscription_details/subscription")
            .and_then(id_of)
    });
    let tenant = tenant_in(
        object
            .pointer("/parent/subscription_details/metadata")
            .or_else(|| object.pointer("/subscription_details/metadata")),
        ResolvedBy::InvoiceSubscriptionDetails,
    )?;
    let tax = match (object.get("total_taxes"), object.get("total_tax_amounts")) {
        (Some(Value::Array(taxes)), _) | (_, Some(Value::Array(taxes))) => {
            Some(sum_amounts(taxes, "total_taxes")?)
        }
        _ => amount(object, "tax")?,
    };
    let discount = match object.get("total_discount_amounts") {
        Some(Value::Array(discounts)) => Some(sum_amounts(discounts, "total_discount_amounts")?),
        _ => None,
    };
    let payment_ids = ["charge", "payment_intent"]
        .iter()
        .filter_map(|field| id_at(object, field))
        .collect();
    Ok(InvoiceSnapshot {
        id: id_at(object, "id").ok_or("invoice `id` must be a string")?,
        deleted: event.event_type == "invoice.deleted",
        tenant,
        customer_id: id_at(object, "customer"),
        subscription_id,
        number: optional_string(object, "number")?,
        status,
        currency: currency(object)?,
        amount_due: amount(object, "amount_due")?,
        amount_paid: amount(object, "amount_paid")?,
        amount_remaining: amount(object, "amount_remaining")?,
        subtotal: amount(object, "subtotal")?,
        total: amount(object, "total")?,
        tax,
        discount,
        billing_reason: optional_string(object, "billing_reason")?,
        period_start: optional_seconds(object, "period_start")?,
        period_end: optional_seconds(object, "period_end")?,
        created: match optional_seconds(object, "created")? {
            Some(created) => Some(created),
            None => optional_seconds(object, "date")?,
        },
        finalized_at: optional_seconds_at(object, "/status_transitions/finalized_at")?,
        paid_at: optional_seconds_at(object, "/status_transitions/paid_at")?,
        voided_at: optional_seconds_at(object, "/status_transitions/voided_at")?,
        attempt_count: amount(object, "attempt_count")?,
        hosted_invoice_url: optional_string(object, "hosted_invoice_url")?,
        payment_ids,
    })
}

fn charge(object: &Value) -> Result<PaymentSnapshot, String> {
    Ok(PaymentSnapshot {
        id: id_at(object, "id").ok_or("charge `id` must be a string")?,
        kind: super::PaymentKind::Charge,
        status: required_string(object, "status")?,
        customer_id: id_at(object, "customer"),
        amount: amount(object, "amount")?,
        amount_captured: amount(object, "amount_captured")?,
        amount_refunded: amount(object, "amount_refunded")?,
        currency: currency(object)?,
        invoice_id: id_at(object, "invoice"),
        payment_id: id_at(object, "payment_intent"),
        failure_code: optional_string(object, "failure_code")?,
        failure_message: optional_string(object, "failure_message")?,
        paid_at: None,
        created: optional_seconds(object, "created")?,
    })
}

fn payment_intent(object: &Value) -> Result<PaymentSnapshot, String> {
    let error = object.get("last_payment_error").filter(|e| e.is_object());
    let error_field = |field| error.map_or(Ok(None), |e| optional_string(e, field));
    Ok(PaymentSnapshot {
        id: id_at(object, "id").ok_or("payment intent `id` must be a string")?,
        kind: super::PaymentKind::PaymentIntent,
        status: required_string(object, "status")?,
        customer_id: id_at(object, "customer"),
        amount: amount(object, "amount")?,
        amount_captured: amount(object, "amount_received")?,
        amount_refunded: None,
        currency: currency(object)?,
        invoice_id: id_at(object, "invoice"),
        payment_id: None,
        failure_code: error_field("code")?,
        failure_message: error_field("message")?,
        paid_at: None,
        created: optional_seconds(object, "created")?,
    })
}

fn invoice_payment(object: &Value) -> Result<PaymentSnapshot, String> {
    let payment = object.get("payment");
    let paid = payment.and_then(|p| id_at(p, "payment_intent").or_else(|| id_at(p, "charge")));
    let amount_paid = amount(object, "amount_paid")?;
    Ok(PaymentSnapshot {
        id: id_at(object, "id").ok_or("invoice payment `id` must be a string")?,
        kind: super::PaymentKind::InvoicePayment,
        status: required_string(object, "status")?,
        customer_id: None,
        amount: match amount_paid {
            Some(paid) => Some(paid),
            None => amount(object, "amount_requested")?,
        },
        amount_captured: amount_paid,
        amount_refunded: None,
        currency: currency(object)?,
        invoice_id: id_at(object, "invoice"),
        payment_id: paid,
        failure_code: None,
        failure_message: None,
        paid_at: optional_seconds_at(object, "/status_transitions/paid_at")?,
        created: optional_seconds(object, "created")?,
    })
}

fn refund(object: &Value) -> Result<RefundSnapshot, String> {
    Ok(RefundSnapshot {
        id: id_at(object, "id").ok_or("refund or dispute `id` must be a string")?,
        status: required_string(object, "status")?,
        amount: amount(object, "amount")?,
        currency: currency(object)?,
        charge_id: id_at(object, "charge"),
        payment_intent_id: id_at(object, "payment_intent"),
        reason: optional_string(object, "reason")?,
        created: optional_seconds(object, "created")?,
    })
}

fn credit_note(event: &Event) -> Result<CreditNoteSnapshot, String> {
    let object = &event.object;
    let mut refund_ids: Vec<String> = id_at(object, "refund").into_iter().collect();
    if let Some(Value::Array(refunds)) = object.get("refunds") {
        refund_ids.extend(refunds.iter().filter_map(|r| id_at(r, "refund")));
    }
    refund_ids.sort();
    refund_ids.dedup();
    let status = match required_string(object, "status")?.as_str() {
        _ if event.event_type == "credit_note.voided" => "void".to_owned(),
        status => status.to_owned(),
    };
    Ok(CreditNoteSnapshot {
        id: id_at(object, "id").ok_or("credit note `id` must be a string")?,
        status,
        credit_note_type: optional_string(object, "type")?,
        amount: amount(object, "amount")?,
        currency: currency(object)?,
        invoice_id: id_at(object, "invoice"),
        customer_id: id_at(object, "customer"),
        refund_ids,
        created: optional_seconds(object, "created")?,
        voided_at: optional_seconds(object, "voided_at")?,
    })
}

/// An amount in minor units: absent or null is `None`; anything but an integer is an error.
fn amount(object: &Value, field: &str) -> Result<Option<i64>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("`{field}` must be an integer amount")),
    }
}

/// The sum of `amount` over a list of tax or discount amounts; overflow is an error.
fn sum_amounts(items: &[Value], field: &str) -> Result<i64, String> {
    items.iter().try_fold(0i64, |sum, item| {
        let amount = amount(item, "amount")?.unwrap_or(0);
        sum.checked_add(amount)
            .ok_or_else(|| format!("`{field}` overflows"))
    })
}

/// A three-letter ISO currency code, lowercased (Stripe sends it lowercase).
fn currency(object: &Value) -> Result<Option<String>, String> {
    match optional_string(object, "currency")? {
        None => Ok(None),
        Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Some(code.to_ascii_lowercase()))
        }
        Some(code) => Err(format!(
            "`currency` {code:?} is not a three-letter ISO code"
        )),
    }
}

fn required_string(object: &Value, field: &str) -> Result<String, String> {
    let value = optional_string(object, field)?.ok_or(format!("`{field}` must be a string"))?;
    storable(&value, field, OBJECT_ID_BYTES_MAX)?;
    Ok(value)
}

/// Every string a money fact carries must be storable, as `facts::check_storable` requires.
pub(crate) fn check_storable(fact: &MoneyFact) -> Result<(), String> {
    let ids = |ids: &[Option<&String>]| {
        ids.iter()
            .flatten()
            .try_for_each(|id| storable(id, "an ID", OBJECT_ID_BYTES_MAX))
    };
    let texts = |texts: &[Option<&String>]| {
        texts
            .iter()
            .flatten()
            .try_for_each(|text| storable(text, "a text field", MESSAGE_BYTES_MAX))
    };
    match fact {
        MoneyFact::Invoice(i) => {
            ids(&[
                Some(&i.id),
                i.customer_id.as_ref(),
                i.subscription_id.as_ref(),
            ])?;
            ids(&i.payment_ids.iter().map(Some).collect::<Vec<_>>())?;
            texts(&[
                i.number.as_ref(),
                i.billing_reason.as_ref(),
                i.hosted_invoice_url.as_ref(),
            ])
        }
        MoneyFact::Charge(p, refunds) => {
            check_payment(p, &ids, &texts)?;
            refunds
                .iter()
                .try_for_each(|r| check_refund(r, &ids, &texts))
        }
        MoneyFact::Payment(p) => check_payment(p, &ids, &texts),
        MoneyFact::Refund(r) | MoneyFact::Dispute(r) => check_refund(r, &ids, &texts),
        MoneyFact::CreditNote(c) => {
            ids(&[Some(&c.id), c.invoice_id.as_ref(), c.customer_id.as_ref()])?;
            ids(&c.refund_ids.iter().map(Some).collect::<Vec<_>>())?;
            texts(&[Some(&c.status), c.credit_note_type.as_ref()])
        }
    }
}

type Check<'a> = dyn Fn(&[Option<&String>]) -> Result<(), String> + 'a;

fn check_payment(p: &PaymentSnapshot, ids: &Check, texts: &Check) -> Result<(), String> {
    ids(&[
        Some(&p.id),
        p.customer_id.as_ref(),
        p.invoice_id.as_ref(),
        p.payment_id.as_ref(),
    ])?;
    texts(&[p.failure_code.as_ref(), p.failure_message.as_ref()])
}

fn check_refund(r: &RefundSnapshot, ids: &Check, texts: &Check) -> Result<(), String> {
    ids(&[
        Some(&r.id),
        r.charge_id.as_ref(),
        r.payment_intent_id.as_ref(),
    ])?;
    texts(&[r.reason.as_ref()])
}
