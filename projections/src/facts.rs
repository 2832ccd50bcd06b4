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

mod shapes;
use shapes::*;
pub(crate) use shapes::{
    id_at, id_of, optional_seconds, optional_seconds_at, optional_string, tenant_in,
};

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
