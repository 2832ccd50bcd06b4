//! The fold: per-object state built from events, and the read models rendered from it.
//!
//! Every piece of state is a register that keeps either the greatest or the least observation by
//! [`Version`]. Taking a maximum is commutative, associative and idempotent, so the state after
//! folding a set of events is the same whatever order they arrive in and however often each
//! arrives: delivery order never reaches the read models. Rendering is then a pure function of
//! that state.
//!
//! Subscriptions are folded per Stripe subscription; a tenant's `tenant_pricing` row shows its
//! current subscription (see [`Ledger::current_subscription`]).

use crate::envelope::Event;
use crate::facts::{
    self, BillingReason, CustomerSnapshot, Fact, FoldError, InvoiceFact, InvoiceOutcome,
    LinkedObject, SessionSnapshot, SubscriptionSnapshot, TenantClaim,
};
use crate::model::{
    CheckoutSession, Customer, ResolvedBy, SessionStatus, Status, TenantPricing, Unresolved,
};
use crate::money::{Links, Money, MoneyChanges, MoneyModels, MrrHistory, TenantRevenue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod fold;
mod render;
pub mod snapshot;
mod tenants;

/// Orders the observations of one object. Fields compare in declaration order:
///
/// 1. `terminal`: a terminal observation (a `canceled` or `incomplete_expired` subscription, a
///    deleted customer) outranks every other, so terminal states absorb whatever arrives later.
/// 2. `created`: Stripe's event `created`, whole seconds.
/// 3. `type_rank`: within one second, creation before update before deletion
///    (`*.created` 1, `*.updated`/`paused`/`resumed` 2, `*.deleted` 3; for Checkout Sessions
///    `completed` 1, `async_payment_*` 2, `expired` 3); an invoice's inference about its
///    subscription's status ranks 0, below any subscription snapshot of the same second.
/// 4. `status_rank`: within one second and type, the later lifecycle stage
///    ([`Status::lifecycle_rank`]); between two inferences from invoices of one second, a
///    failed first invoice 0, a failure of unstated reason 1, a failed renewal 2, a payment 3
///    (a retry that succeeds follows the failure it recovers from).
/// 5. `period_end`: then the later `current_period_end` (a renewal moves it forward).
/// 6. `event_id`: finally Stripe's event ID, compared as bytes: arbitrary but fixed, and read
///    from the events alone, never from arrival order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub terminal: bool,
    pub created: i64,
    pub type_rank: u8,
    pub status_rank: u8,
    pub period_end: i64,
    pub event_id: String,
}

/// An event read for the fold: what [`facts::read`] made of its object, with the envelope
/// fields the fold orders and records by. Reading is the costly part of folding and needs no
/// ledger, so a rebuild reads events on other tasks ahead of the fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEvent {
    pub head: Head,
    pub fact: Result<Fact, FoldError>,
}

/// The envelope fields the fold uses: Stripe's `id`, `type`, `created` (Unix seconds) and
/// `livemode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
}

impl ReadEvent {
    /// Reads `event`'s object (see [`facts::read`]); a failure is kept for the fold to report.
    pub fn read(event: &Event) -> ReadEvent {
        ReadEvent {
            head: Head {
                id: event.id.clone(),
                event_type: event.event_type.clone(),
                created: event.created,
                livemode: event.livemode,
            },
            fact: facts::read(event),
        }
    }
}

impl Version {
    pub(crate) fn of(event: &Head, type_rank: u8) -> Version {
        Version {
            terminal: false,
            created: event.created,
            type_rank,
            status_rank: 0,
            period_end: 0,
            event_id: event.id.clone(),
        }
    }
}

/// A value with the version of the observation that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Versioned<T> {
    pub(crate) version: Version,
    pub(crate) value: T,
}

/// Keeps the observation with the greatest version; returns whether the slot changed.
pub(crate) fn keep_greatest<T>(
    slot: &mut Option<Versioned<T>>,
    version: Version,
    value: T,
) -> bool {
    match slot {
        Some(current) if current.version >= version => false,
        _ => {
            *slot = Some(Versioned { version, value });
            true
        }
    }
}

/// Keeps the observation with the least version (the earliest claim wins); returns whether the
/// slot changed.
pub(crate) fn keep_least<T>(slot: &mut Option<Versioned<T>>, version: Version, value: T) -> bool {
    match slot {
        Some(current) if current.version <= version => false,
        _ => {
            *slot = Some(Versioned { version, value });
            true
        }
    }
}

fn keep_latest_version(slot: &mut Option<Version>, version: &Version) {
    if slot.as_ref() < Some(version) {
        *slot = Some(version.clone());
    }
}

fn keep_latest(slot: &mut Option<i64>, seconds: i64) {
    *slot = Some(slot.map_or(seconds, |s| s.max(seconds)));
}

pub(crate) fn keep_earliest(slot: &mut Option<i64>, seconds: i64) {
    *slot = Some(slot.map_or(seconds, |s| s.min(seconds)));
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SubscriptionState {
    snapshot: Option<Versioned<SubscriptionSnapshot>>,
    /// The greatest `invoice.payment_failed`, with what its billing reason says.
    payment_failed: Option<Versioned<BillingReason>>,
    /// The greatest `invoice.paid` / `invoice.payment_succeeded` of a paid invoice.
    payment_succeeded: Option<Version>,
    /// Whether any event shows the subscription live at some point: a snapshot in a live
    /// status ([`Status::is_live`]), a paid invoice, or a failed renewal. An OR over the
    /// events, so it does not depend on their order.
    been_live: bool,
    customer_id: Option<Versioned<String>>,
    tenant: Option<Versioned<TenantClaim>>,
    /// The earliest admin link of this subscription ([`ResolvedBy::AdminLink`]); outranks
    /// `tenant` and every link learned from Stripe.
    #[serde(default)]
    admin_tenant: Option<Versioned<TenantClaim>>,
    last_payment_failed_at: Option<i64>,
    last_paid_at: Option<i64>,
    last_event: Option<Version>,
    /// Events folded while the tenant was unknown; emptied once it is known.
    pending: BTreeSet<Unresolved>,
}

impl SubscriptionState {
    /// The subscription's status: the greatest observation by [`Version`] among its snapshots
    /// and its invoices' inferences.
    ///
    /// - A failed payment infers `incomplete` for a subscription that has never been live and
    ///   `past_due` for one that has (a first invoice's failure, `billing_reason`
    ///   `subscription_create`, is always `incomplete`; a renewal's always `past_due`). So the
    ///   answer does not depend on whether the failure falls in the subscription's first second
    ///   or later, nor on whether the invoice carries a `billing_reason`.
    /// - A paid invoice that outranks every snapshot and failure infers `active` when the
    ///   status it outranks is `incomplete`, `past_due` or `unpaid`
    ///   ([`Status::recovers_on_payment`]): Stripe activates the subscription when its invoice
    ///   is paid, and its `customer.subscription.updated` may come late or never. Over any
    ///   other status (`trialing`, whose first invoice is a paid zero-amount one, `paused`,
    ///   terminal) it changes nothing.
    fn status(&self) -> Option<Status> {
        let from_snapshot = self.snapshot.as_ref().map(|s| (&s.version, s.value.status));
        let from_failure = self
            .payment_failed
            .as_ref()
            .map(|f| (&f.version, self.failed_status(f.value)));
        let (version, status) = from_snapshot.max(from_failure)?;
        match &self.payment_succeeded {
            Some(paid) if paid > version && status.recovers_on_payment() => Some(Status::Active),
            _ => Some(status),
        }
    }

    /// The status a failed payment infers (see [`SubscriptionState::status`]).
    fn failed_status(&self, reason: BillingReason) -> Status {
        match reason {
            BillingReason::First => Status::Incomplete,
            BillingReason::Renewal => Status::PastDue,
            BillingReason::Unstated if self.been_live => Status::PastDue,
            BillingReason::Unstated => Status::Incomplete,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SessionState {
    snapshot: Option<Versioned<SessionSnapshot>>,
    tenant: Option<Versioned<TenantClaim>>,
    completed_at: Option<i64>,
    expired_at: Option<i64>,
    pending: BTreeSet<Unresolved>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerState {
    snapshot: Option<Versioned<CustomerSnapshot>>,
    tenant: Option<Versioned<TenantClaim>>,
    /// The earliest admin link of this customer ([`ResolvedBy::AdminLink`]); outranks `tenant`.
    #[serde(default)]
    admin_tenant: Option<Versioned<TenantClaim>>,
    last_event: Option<Version>,
    /// Events not yet attributed to a tenant (customers are not listed as unresolved).
    pending: BTreeSet<Unresolved>,
}

/// Everything the read models are rendered from, as of the events folded so far.
///
/// Serializes (with serde) to its folded state only: the incremental rendering bookkeeping is
/// left out, so a deserialized ledger renders from scratch ([`Ledger::tenant_pricing`],
/// [`Ledger::read_models`]) exactly as the original, and folds on from where it was (a tenant's
/// history pages carry it this way).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    livemode: bool,
    subscriptions: BTreeMap<String, SubscriptionState>,
    sessions: BTreeMap<String, SessionState>,
    customers: BTreeMap<String, CustomerState>,
    subscriptions_by_customer: BTreeMap<String, BTreeSet<String>>,
    sessions_by_customer: BTreeMap<String, BTreeSet<String>>,
    sessions_by_subscription: BTreeMap<String, BTreeSet<String>>,
    /// Invoices, payments, refunds, disputes and credit notes (see [`crate::money`]). Not
    /// carried through serde: a history cursor holds the subscription side only (a tenant's
    /// money objects would grow it past what a URL holds), and history shows `tenant_pricing`.
    #[serde(skip)]
    money: Money,
    /// Every subscription snapshot's MRR, for the revenue read model (see
    /// [`crate::money::mrr`]); not carried in a history cursor, as `money` (a snapshot carries
    /// both).
    #[serde(skip)]
    revenue: MrrHistory,
    /// Bookkeeping for incremental rendering; not part of the folded state.
    #[serde(skip)]
    render: RenderState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Subscription,
    Session,
    Customer,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RenderState {
    subscriptions: BTreeSet<String>,
    sessions: BTreeSet<String>,
    customers: BTreeSet<String>,
    tenants: BTreeSet<String>,
    /// The tenant each subscription was last rendered under.
    tenant_of_subscription: BTreeMap<String, String>,
    /// Objects the current event was folded into, settled at the end of `apply` (so always
    /// empty between events, and never carried in a snapshot).
    #[serde(skip)]
    touched: Vec<(ObjectKind, String)>,
    /// Objects whose unresolved events were last rendered non-empty (so rows exist for them).
    listed_unresolved: BTreeSet<String>,
    /// `(tenant_id, event_id, rule)` attributions not yet taken.
    attributions: BTreeSet<(String, String, ResolvedBy)>,
    subscriptions_by_tenant: BTreeMap<String, BTreeSet<String>>,
}

/// What folding one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The event changed (or confirmed) state.
    Applied,
    /// The event's type is not folded here; it stays in the log.
    IgnoredType,
    /// The event's `livemode` is not the deployment's; it stays in the log.
    IgnoredMode,
}

/// The rows that changed since the last [`Ledger::take_changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Upserts; a `None` value deletes the tenant's row (its last subscription moved away).
    pub tenant_pricing: BTreeMap<String, Option<TenantPricing>>,
    pub checkout_sessions: Vec<CheckoutSession>,
    pub customers: Vec<Customer>,
    /// For each object: the full set of its unresolved events (empty once resolved).
    pub unresolved: BTreeMap<String, Vec<Unresolved>>,
    /// `(tenant_id, event_id, rule)`: events newly attributed to a tenant, and how.
    pub event_tenants: BTreeSet<(String, String, ResolvedBy)>,
    /// Invoices, payments, refunds, disputes and credit notes.
    pub money: MoneyChanges,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.tenant_pricing.is_empty()
            && self.checkout_sessions.is_empty()
            && self.customers.is_empty()
            && self.unresolved.is_empty()
            && self.event_tenants.is_empty()
            && self.money.is_empty()
    }
}

/// Every read model, complete; used to compare folds and to check incremental rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadModels {
    pub tenant_pricing: BTreeMap<String, TenantPricing>,
    pub checkout_sessions: BTreeMap<String, CheckoutSession>,
    pub customers: BTreeMap<String, Customer>,
    pub unresolved: BTreeSet<Unresolved>,
    pub money: MoneyModels,
}

impl ReadModels {
    /// Applies incremental changes, as the database does.
    pub fn apply(&mut self, changes: Changes) {
        for (tenant_id, row) in changes.tenant_pricing {
            match row {
                Some(row) => self.tenant_pricing.insert(tenant_id, row),
                None => self.tenant_pricing.remove(&tenant_id),
            };
        }
        for row in changes.checkout_sessions {
            self.checkout_sessions.insert(row.id.clone(), row);
        }
        for row in changes.customers {
            self.customers.insert(row.id.clone(), row);
        }
        for (object_id, events) in changes.unresolved {
            self.unresolved.retain(|u| u.object_id != object_id);
            self.unresolved.extend(events);
        }
        self.money.apply(changes.money);
    }
}

pub(crate) fn unresolved(event: &Head, object_id: &str) -> Unresolved {
    Unresolved {
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        created: event.created,
        object_id: object_id.to_owned(),
    }
}

/// At rendering: attributes an object's pending events once its tenant is known, and lists
/// what stays unresolved.
fn settle(
    render: &mut RenderState,
    changes: &mut Changes,
    object_id: &str,
    tenant: Option<&TenantClaim>,
    pending: &mut BTreeSet<Unresolved>,
) {
    if let Some(tenant) = tenant {
        attribute(&mut render.attributions, tenant, pending);
    }
    list_unresolved(changes, &mut render.listed_unresolved, object_id, pending);
}

/// Renders an object's unresolved events when they exist or existed: an object never listed
/// with nothing pending needs no change, which keeps the projector's writes small.
fn list_unresolved(
    changes: &mut Changes,
    listed: &mut BTreeSet<String>,
    object_id: &str,
    pending: &BTreeSet<Unresolved>,
) {
    let was_listed = listed.remove(object_id);
    if !pending.is_empty() {
        listed.insert(object_id.to_owned());
    }
    if was_listed || !pending.is_empty() {
        changes
            .unresolved
            .insert(object_id.to_owned(), pending.iter().cloned().collect());
    }
}

/// Once an object's tenant is known, its pending events are attributed to it and forgotten.
pub(crate) fn attribute(
    attributions: &mut BTreeSet<(String, String, ResolvedBy)>,
    tenant: &TenantClaim,
    pending: &mut BTreeSet<Unresolved>,
) {
    for event in std::mem::take(pending) {
        attributions.insert((tenant.tenant_id.clone(), event.event_id, tenant.resolved_by));
    }
}

/// Adds `id` to `set`, allocating only when it is new (most events touch known objects).
pub(crate) fn mark(set: &mut BTreeSet<String>, id: &str) {
    if !set.contains(id) {
        set.insert(id.to_owned());
    }
}

pub(crate) fn index(map: &mut BTreeMap<String, BTreeSet<String>>, key: &str, value: &str) {
    match map.get_mut(key) {
        Some(values) => mark(values, value),
        None => {
            map.insert(key.to_owned(), BTreeSet::from([value.to_owned()]));
        }
    }
}

fn unindex(map: &mut BTreeMap<String, BTreeSet<String>>, key: &str, value: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Links for Ledger {
    fn customer_tenant(&self, customer_id: &str) -> Option<TenantClaim> {
        Ledger::customer_tenant(self, Some(customer_id))
    }

    fn subscription_tenant(&self, subscription_id: &str) -> Option<TenantClaim> {
        self.subscription_tenant(self.subscriptions.get(subscription_id)?)
    }
}
