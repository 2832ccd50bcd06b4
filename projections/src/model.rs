//! Read-model rows, as the fold renders them. Times are Unix seconds taken from the events
//! (never a clock); `src/` renders them as RFC 3339 UTC.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stripe's subscription status (<https://docs.stripe.com/api/subscriptions/object#subscription_object-status>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl Status {
    /// All statuses, in Stripe's documentation order.
    pub const ALL: [Status; 8] = [
        Status::Incomplete,
        Status::IncompleteExpired,
        Status::Trialing,
        Status::Active,
        Status::PastDue,
        Status::Canceled,
        Status::Unpaid,
        Status::Paused,
    ];

    /// Stripe's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Incomplete => "incomplete",
            Status::IncompleteExpired => "incomplete_expired",
            Status::Trialing => "trialing",
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Canceled => "canceled",
            Status::Unpaid => "unpaid",
            Status::Paused => "paused",
        }
    }

    /// Parses Stripe's spelling; `None` for a status this code does not know.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Terminal statuses absorb: Stripe never moves a subscription out of them
    /// (<https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses>).
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Canceled | Status::IncompleteExpired)
    }

    /// Whether a subscription in this status has been live: started (`trialing`) or billed
    /// (`active`, `past_due`, `unpaid`, `paused`). A payment failure after such a status is a
    /// renewal's, so `past_due` (see `SubscriptionState::status` in [`crate::ledger`]).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Status::Trialing | Status::Active | Status::PastDue | Status::Unpaid | Status::Paused
        )
    }

    /// Whether a paid invoice of the subscription makes it `active` again: Stripe activates an
    /// `incomplete` subscription when its first invoice is paid, and a `past_due` or `unpaid`
    /// one when its open invoice is
    /// (<https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses>).
    pub fn recovers_on_payment(self) -> bool {
        matches!(self, Status::Incomplete | Status::PastDue | Status::Unpaid)
    }

    /// Position in a subscription's usual life, used only to break same-second ties
    /// (see [`crate::ledger::Version`]): later stages rank higher.
    pub fn lifecycle_rank(self) -> u8 {
        match self {
            Status::Incomplete => 0,
            Status::Trialing => 1,
            Status::Active => 2,
            Status::PastDue => 3,
            Status::Unpaid => 4,
            Status::Paused => 5,
            Status::Canceled | Status::IncompleteExpired => 6,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a tenant was found for an object; recorded on every row that carries a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedBy {
    /// An admin's explicit link of the object (or of its customer or subscription) to the
    /// tenant: an event of the ledger's own (`ledger.tenant_link.created`), outranking every
    /// link learned from Stripe.
    AdminLink,
    /// Checkout Session `client_reference_id`.
    CheckoutClientReferenceId,
    /// Checkout Session `metadata.tenant_id`.
    CheckoutMetadata,
    /// Subscription `metadata.tenant_id`.
    SubscriptionMetadata,
    /// Invoice subscription details metadata (`subscription_details.metadata` before
    /// 2025-03-31.basil, `parent.subscription_details.metadata` from it on).
    InvoiceSubscriptionDetails,
    /// Customer `metadata.tenant_id`.
    CustomerMetadata,
    /// Through the tenant learned earlier for the object's customer.
    CustomerLink,
    /// Through the tenant learned earlier for the object's subscription.
    SubscriptionLink,
}

impl ResolvedBy {
    /// Every rule, in order: when several rules attribute one event to one tenant, the first
    /// of them in this order is the one recorded (live and in a rebuild alike).
    pub const ALL: [ResolvedBy; 8] = [
        ResolvedBy::AdminLink,
        ResolvedBy::CheckoutClientReferenceId,
        ResolvedBy::CheckoutMetadata,
        ResolvedBy::SubscriptionMetadata,
        ResolvedBy::InvoiceSubscriptionDetails,
        ResolvedBy::CustomerMetadata,
        ResolvedBy::CustomerLink,
        ResolvedBy::SubscriptionLink,
    ];

    /// The snake_case name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedBy::AdminLink => "admin_link",
            ResolvedBy::CheckoutClientReferenceId => "checkout_client_reference_id",
            ResolvedBy::CheckoutMetadata => "checkout_metadata",
            ResolvedBy::SubscriptionMetadata => "subscription_metadata",
            ResolvedBy::InvoiceSubscriptionDetails => "invoice_subscription_details",
            ResolvedBy::CustomerMetadata => "customer_metadata",
            ResolvedBy::CustomerLink => "customer_link",
            ResolvedBy::SubscriptionLink => "subscription_link",
        }
    }
}

/// One tenant's current subscription (`tenant_pricing`). Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPricing {
    pub tenant_id: String,
    /// `None` until an event carrying the subscription's status has been folded.
    pub status: Option<Status>,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: String,
    pub price_id: Option<String>,
    /// The product of `price_id`; defaulted when absent (rows serialized before it was read).
    #[serde(default)]
    pub product_id: Option<String>,
    pub quantity: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    pub last_payment_failed_at: Option<i64>,
    pub last_paid_at: Option<i64>,
    pub last_event_id: String,
    /// `created` of `last_event_id`: when Stripe last changed this state.
    pub updated_at: i64,
    pub resolved_by: ResolvedBy,
}

/// Checkout Session status (<https://docs.stripe.com/api/checkout/sessions/object#checkout_session_object-status>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Open,
    Complete,
    Expired,
}

impl SessionStatus {
    /// Stripe's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Complete => "complete",
            SessionStatus::Expired => "expired",
        }
    }
}

/// One Checkout Session (`checkout_sessions`). Times are Unix seconds; money in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub tenant_id: Option<String>,
    pub resolved_by: Option<ResolvedBy>,
    pub status: SessionStatus,
    pub payment_status: Option<String>,
    pub mode: Option<String>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub created_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub last_event_id: String,
}

/// One Stripe customer (`customers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub tenant_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub deleted: bool,
    pub last_event_id: String,
}

/// An event folded into an object whose tenant is not known yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unresolved {
    pub event_id: String,
    pub event_type: String,
    pub created: i64,
    /// The subscription or Checkout Session the event is about.
    pub object_id: String,
}
