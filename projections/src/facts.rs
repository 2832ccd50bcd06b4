//! Reading what an event says, across Stripe API versions, before anything is changed.
//!
//! Each handled event type is read into one [`Fact`]; a payload that cannot be read is a
//! [`FoldError`] and leaves the ledger untouched. Shapes read (all documented in Stripe's API
//! changelog, <https://docs.stripe.com/changelog>):
//! - An ID field may be a string or an expanded object with an `id`.
//! - Invoice → subscription: `subscription` (before 2025-03-31.basil), else
//!   `parent.subscription_details.subscription` (basil on), else the first line item's
//!   `subscription` or `parent.subscription_item_details.subscription`.
//! - Invoice → tenant: `subscription_details.metadata.tenant_id` (2023-08-16 to basil) or
//!   `parent.subscription_details.metadata.tenant_id` (basil on).
//! - Subscription period end: top-level `current_period_end` (before basil), else the earliest
//!   `current_period_end` among `items.data` (basil moved periods onto items; with several items
//!   the earliest end is when the next invoice falls, so access is never overstated).
//! - Price and quantity: the first item's `price.id` (or `plan.id` on old versions) and
//!   `quantity`, else the top-level `plan.id` / `quantity`.
//! - Product: the same price's `product` (`price.product`, or `plan.product` on old versions), a
//!   string or an expanded object with an `id`.
//! - Invoice paid: `paid` (removed in basil), else `status == "paid"`.

use crate::envelope::Event;
use crate::model::{ResolvedBy, SessionStatus, Status};
use serde_json::Value;
use std::fmt;

/// Longest tenant ID accepted from metadata, in bytes.
pub const TENANT_ID_BYTES_MAX: usize = 255;

/// An event the fold handles but cannot read: the event ID and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldError {
    pub event_id: String,
    pub message: String,
}

impl fmt::Display for FoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.event_id, self.message)
    }
}

impl std::error::Error for FoldError {}

/// The type of the ledger's own event that records an admin's tenant link
/// (`POST /api/billing/admin/tenant-links`). Its `data.object` is
/// `{"id": "cus_...|sub_...", "object": "ledger.tenant_link", "tenant_id": "...", "reason": "...",
/// "actor": "..."}`; the fold reads `id` and `tenant_id`.
pub const TENANT_LINK_EVENT_TYPE: &str = "ledger.tenant_link.created";

/// The ID prefix of the ledger's own events: never one Stripe makes (Stripe's event IDs are
/// `evt_` and letters and digits only).
pub const LEDGER_EVENT_ID_PREFIX: &str = "evt_ledger_";

/// Whether an event claims to be one of the ledger's own (its ID or its `ledger.` type): the
/// webhook refuses those, so only the admin API makes them.
pub fn is_ledger_own(event_id: &str, event_type: &str) -> bool {
    event_id.starts_with(LEDGER_EVENT_ID_PREFIX) || event_type.starts_with("ledger.")
}

/// The object an admin link ties to a tenant, told by its ID's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkedObject {
    /// `cus_...`
    Customer(String),
    /// `sub_...`
    Subscription(String),
}

impl LinkedObject {
    /// The object an ID names, when an admin may link it (a customer or a subscription).
    pub fn parse(id: &str) -> Option<LinkedObject> {
        let linkable = |prefix: &str| {
            id.strip_prefix(prefix).is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        };
        if id.len() > OBJECT_ID_BYTES_MAX {
            None
        } else if linkable("cus_") {
            Some(LinkedObject::Customer(id.to_owned()))
        } else if linkable("sub_") {
            Some(LinkedObject::Subscription(id.to_owned()))
        } else {
            None
        }
    }

    /// The object's ID.
    pub fn id(&self) -> &str {
        match self {
            LinkedObject::Customer(id) | LinkedObject::Subscription(id) => id,
        }
    }
}

/// A tenant claimed by an event, with the rule that found it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TenantClaim {
    pub tenant_id: String,
    pub resolved_by: ResolvedBy,
}

/// A subscription as one event shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionSnapshot {
    pub status: Status,
    pub customer_id: Option<String>,
    pub price_id: Option<String>,
    /// The product of `price_id` (`price.product`, or `plan.product` on old API versions).
    /// Defaulted when absent so ledgers serialized before it was read still load.
    #[serde(default)]
    pub product_id: Option<String>,
    pub quantity: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    /// The subscription object's own `created` (when it started).
    pub created: Option<i64>,
    /// Every item's price and quantity, and the discounts: what MRR is computed from
    /// ([`crate::money::revenue`]); `tenant_pricing` does not show them.
    pub pricing: crate::money::pricing::Pricing,
}

/// What an invoice event says about its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFact {
    pub subscription_id: String,
    pub customer_id: Option<String>,
    pub tenant: Option<TenantClaim>,
    pub outcome: InvoiceOutcome,
}

/// The part of an invoice event the fold acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceOutcome {
    /// `invoice.payment_failed`, with what its `billing_reason` says about the subscription.
    Failed(BillingReason),
    /// `invoice.paid` / `invoice.payment_succeeded`, paid at Unix seconds.
    Paid { paid_at: i64 },
    /// A payment event for an invoice that is not paid (a zero-amount or voided edge case).
    NotPaid,
}

/// What an invoice's `billing_reason` tells about its subscription's past
/// (<https://docs.stripe.com/api/invoices/object#invoice_object-billing_reason>).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum BillingReason {
    /// `subscription_create`: the subscription's first invoice, so it has never been active.
    First,
    /// Absent, or a reason that says nothing about the subscription's past (`manual`,
    /// `quote_accept`, ...): older API versions and test tools omit the field.
    Unstated,
    /// `subscription_cycle`, `subscription_update`, `subscription_threshold` or the older
    /// `subscription`: invoices of a subscription that has already been live.
    Renewal,
}

impl BillingReason {
    /// Reads `billing_reason` (absent, null or unknown is [`BillingReason::Unstated`]).
    pub fn parse(value: Option<&str>) -> BillingReason {
        match value {
            Some("subscription_create") => BillingReason::First,
            Some(
                "subscription_cycle"
                | "subscription_update"
                | "subscription_threshold"
                | "subscription",
            ) => BillingReason::Renewal,
            _ => BillingReason::Unstated,
        }
    }
}

/// A Checkout Session as one event shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSnapshot {
    pub status: SessionStatus,
    pub payment_status: Option<String>,
    pub mode: Option<String>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub created: Option<i64>,
}

/// A customer as one event shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CustomerSnapshot {
    pub email: Option<String>,
    pub name: Option<String>,
    pub deleted: bool,
}

/// What one event contributes to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Subscription {
        id: String,
        snapshot: SubscriptionSnapshot,
        tenant: Option<TenantClaim>,
    },
    Invoice(InvoiceFact),
    /// A money object (see [`crate::money`]); an invoice event also carries what it says
    /// about its subscription.
    Money {
        money: Box<crate::money::MoneyFact>,
        invoice: Option<InvoiceFact>,
    },
    Session {
        id: String,
        snapshot: SessionSnapshot,
        tenant: Option<TenantClaim>,
    },
    Customer {
        id: String,
        snapshot: CustomerSnapshot,
        tenant: Option<TenantClaim>,
    },
    /// An admin's link of a customer or subscription to a tenant (an event of the ledger's
    /// own, [`TENANT_LINK_EVENT_TYPE`]); the claim's rule is [`ResolvedBy::AdminLink`].
    TenantLink {
        object: LinkedObject,
        tenant: TenantClaim,
    },
    /// A type the fold does not handle, or an event with nothing to fold (an invoice with no
    /// subscription). Stored in the log, ignored here.
    Ignored,
}

/// Whether the readers here look at members named `key` (at some depth of some object).
/// [`Event::parse`] builds only these; a reader of a new field must add it here, or it reads
/// nothing (the fold tests parse their events through [`Event::parse`], so they would fail).
pub(crate) fn reads_field(key: &str) -> bool {
    matches!(
        key,
        "status"
            | "items"
            | "price"
            | "plan"
            | "product"
            | "quantity"
            | "customer"
            | "current_period_end"
            | "cancel_at_period_end"
            | "canceled_at"
            | "metadata"
            | "tenant_id"
            | "subscription"
            | "parent"
            | "subscription_details"
            | "subscription_item_details"
            | "lines"
            | "billing_reason"
            | "paid"
            | "status_transitions"
            | "paid_at"
            | "client_reference_id"
            | "amount_total"
            | "payment_status"
            | "mode"
            | "currency"
            | "email"
            | "name"
            | "deleted"
    ) || crate::money::reads_field(key)
        || crate::money::pricing::reads_field(key)
}

/// Longest Stripe object ID kept in a read model, in bytes (Stripe's are under 100).
pub const OBJECT_ID_BYTES_MAX: usize = 255;
/// Longest free-text value (a customer's name or email) kept in a read model, in bytes.
pub const TEXT_BYTES_MAX: usize = 4_096;

/// Checks a string the fold would write: PostgreSQL `text` cannot hold NUL, and an indexed ID
/// must stay far below the B-tree row limit (about 2.7 KB).
pub(crate) fn storable(value: &str, what: &str, bytes_max: usize) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    if value.len() > bytes_max {
        return Err(format!("{what} is longer than {bytes_max} bytes"));
    }
    Ok(())
}

fn storable_ids<'a>(ids: impl IntoIterator<Item = Option<&'a String>>) -> Result<(), String> {
    ids.into_iter()
        .flatten()
        .try_for_each(|id| storable(id, "an ID", OBJECT_ID_BYTES_MAX))
}

/// Every string a fact carries must be storable; otherwise the event is a projection error.
fn check_storable(fact: &Fact) -> Result<(), String> {
    let short = |v: Option<&String>, what: &str| match v {
        Some(v) => storable(v, what, OBJECT_ID_BYTES_MAX),
        None => Ok(()),
    };
    match fact {
        Fact::Subscription { id, snapshot, .. } => storable_ids([
            Some(id),
            snapshot.customer_id.as_ref(),
            snapshot.price_id.as_ref(),
            snapshot.product_id.as_ref(),
        ]),
        Fact::Invoice(f) => storable_ids([Some(&f.subscription_id), f.customer_id.as_ref()]),
        Fact::Session { id, snapshot, .. } => {
            storable_ids([
                Some(id),
                snapshot.customer_id.as_ref(),
                snapshot.subscription_id.as_ref(),
            ])?;
            short(snapshot.payment_status.as_ref(), "payment_status")?;
            short(snapshot.mode.as_ref(), "mode")?;
            short(snapshot.currency.as_ref(), "currency")
        }
        Fact::Customer { id, snapshot, .. } => {
            storable_ids([Some(id)])?;
            for (value, what) in [(&snapshot.email, "email"), (&snapshot.name, "name")] {
                if let Some(value) = value {
                    storable(value, what, TEXT_BYTES_MAX)?;
                }
            }
            Ok(())
        }
        Fact::Money { money, invoice } => {
            if let Some(f) = invoice {
                storable_ids([Some(&f.subscription_id), f.customer_id.as_ref()])?;
            }
            crate::money::check_storable(money)
        }
        Fact::TenantLink { object, .. } => storable_ids([Some(&object.id().to_owned())]),
        Fact::Ignored => Ok(()),
    }
}

/// Reads one event into a [`Fact`]. Errors name the field that could not be read, or the
/// value the read models cannot store.
pub fn read(event: &Event) -> Result<Fact, FoldError> {
    let fact = read_fact(event)?;
    let money = crate::money::read(event).map_err(|message| FoldError {
        event_id: event.id.clone(),
        message,
    })?;
    let fact = match (money, fact) {
        (None, fact) => fact,
        (Some(money), Fact::Invoice(invoice)) => Fact::Money {
            money: Box::new(money),
            invoice: Some(invoice),
        },
        (Some(money), _) => Fact::Money {
            money: Box::new(money),
            invoice: None,
        },
    };
    check_storable(&fact).map_err(|message| FoldError {
        event_id: event.id.clone(),
        message,
    })?;
    Ok(fact)
}

fn read_fact(event: &Event) -> Result<Fact, FoldError> {
    let fail = |message: String| FoldError {
        event_id: event.id.clone(),
        message,
    };
    let object = &event.object;
    let fact = match event.event_type.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed" => {
            let id = required_id(object, "id").map_err(fail)?;
            let snapshot = subscription_snapshot(object).map_err(fail)?;
            let tenant = tenant_in(object.get("metadata"), ResolvedBy::SubscriptionMetadata)
                .map_err(fail)?;
            Fact::Subscription {
                id,
                snapshot,
                tenant,
            }
        }
        TENANT_LINK_EVENT_TYPE => {
            let id = required_id(object, "id").map_err(fail)?;
            let object = LinkedObject::parse(&id).ok_or_else(|| {
                fail(format!(
                    "a tenant link's object {id:?} is not a customer or a subscription"
                ))
            })?;
            let tenant = tenant_claim(object_tenant(&event.object), ResolvedBy::AdminLink)
                .map_err(fail)?
                .ok_or_else(|| {
                    fail("a tenant link's `tenant_id` must be a non-empty string".into())
                })?;
            Fact::TenantLink { object, tenant }
        }
        "invoice.payment_failed" | "invoice.paid" | "invoice.payment_succeeded" => {
            match invoice_fact(event).map_err(fail)? {
                Some(fact) => Fact::Invoice(fact),
                None => Fact::Ignored,
            }
        }
        "checkout.session.completed"
        | "checkout.session.expired"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.async_payment_failed" => {
            let id = required_id(object, "id").map_err(fail)?;
            let snapshot = session_snapshot(&event.event_type, object).map_err(fail)?;
            let tenant = match tenant_claim(
                object.get("client_reference_id"),
                ResolvedBy::CheckoutClientReferenceId,
            )
            .map_err(fail)?
            {
                Some(claim) => Some(claim),
                None => {
                    tenant_in(object.get("metadata"), ResolvedBy::CheckoutMetadata).map_err(fail)?
                }
            };
            Fact::Session {
                id,
                snapshot,
                tenant,
            }
        }
        "customer.created" | "customer.updated" | "customer.deleted" => {
            let id = required_id(object, "id").map_err(fail)?;
            let snapshot = CustomerSnapshot {
                email: optional_string(object, "email").map_err(fail)?,
                name: optional_string(object, "name").map_err(fail)?,
                deleted: event.event_type == "customer.deleted"
                    || object.get("deleted") == Some(&Value::Bool(true)),
            };
            let tenant =
                tenant_in(object.get("metadata"), ResolvedBy::CustomerMetadata).map_err(fail)?;
            Fact::Customer {
                id,
                snapshot,
                tenant,
            }
        }
        _ => Fact::Ignored,
    };
    Ok(fact)
}

fn subscription_snapshot(object: &Value) -> Result<SubscriptionSnapshot, String> {
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
fn period_end(object: &Value) -> Result<Option<i64>, String> {
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

fn invoice_fact(event: &Event) -> Result<Option<InvoiceFact>, String> {
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

fn session_snapshot(event_type: &str, object: &Value) -> Result<SessionSnapshot, String> {
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
fn price_object<'v>(object: &'v Value, field: &str) -> Option<&'v Value> {
    object.get(field).filter(|v| id_of(v).is_some())
}

pub(crate) fn id_at(object: &Value, field: &str) -> Option<String> {
    object.get(field).and_then(id_of)
}

fn required_id(object: &Value, field: &str) -> Result<String, String> {
    id_at(object, field).ok_or_else(|| format!("object `{field}` must be a string"))
}

fn string_at<'v>(object: &'v Value, path: &[&str]) -> Option<&'v str> {
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

fn seconds(value: Option<&Value>, name: &str) -> Result<Option<i64>, String> {
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
fn tenant_claim(
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

fn object_tenant(object: &Value) -> Option<&Value> {
    object.get("tenant_id")
}

pub(crate) fn tenant_in(
    metadata: Option<&Value>,
    resolved_by: ResolvedBy,
) -> Result<Option<TenantClaim>, String> {
    tenant_claim(metadata.and_then(|m| m.get("tenant_id")), resolved_by)
}
