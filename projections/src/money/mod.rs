//! The money fold: invoices, payments (charges, PaymentIntents, InvoicePayments), refunds,
//! disputes and credit notes, folded from the log with the same rules as subscriptions.
//!
//! Each object keeps the snapshot with the greatest [`Version`]: (1) terminal first, so terminal
//! states absorb (an invoice `paid`, `void` or deleted; a charge `failed`; a PaymentIntent
//! `canceled`; an InvoicePayment `paid` or `canceled`; a refund `failed` or `canceled`; a dispute `won`, `lost` or `warning_closed`; a credit note `void`); (2) Stripe's
//! event `created`; (3) within one second, creation before update before the closing event
//! (see [`type_rank`]); (4) the later lifecycle stage (see [`status_rank`]); (5) the greater
//! progress count (an invoice's `attempt_count`, a charge's `amount_refunded`), carried in
//! [`Version::period_end`]; (6) the event ID as bytes. Times a status was first reached
//! (`paid_at` when the object carries none) keep the earliest event showing it. So delivery
//! order and duplicates never change a row.
//!
//! The tenant of a money object is never stored in this state: it is found when rendering, on
//! the invoice itself (its subscription details metadata), else through the object's customer,
//! else through the subscription, invoice, charge or PaymentIntent it points at (see
//! [`Links`]). When a link changes, the objects depending on it are rendered again. This module
//! must not do I/O nor read a clock.

pub mod balance;
pub mod mrr;
mod packed;
pub mod pricing;
mod read;
mod render;
pub mod revenue;
#[cfg(test)]
mod revenue_tests;
mod rows;
#[cfg(test)]
mod tests;

pub use balance::{balances, Balance};
pub use mrr::{MrrHistory, TenantRevenue};
pub(crate) use read::{check_storable, read, reads_field};
pub use read::{
    CreditNoteSnapshot, InvoiceSnapshot, MoneyFact, PaymentSnapshot, RefundSnapshot,
    INVOICE_STATUSES, MESSAGE_BYTES_MAX,
};
pub use rows::{
    CreditNote, Dispute, Invoice, MoneyChanges, MoneyModels, Payment, PaymentKind, Refund,
};

use crate::facts::TenantClaim;
use crate::ledger::{keep_earliest, unresolved, Head};
use crate::ledger::{Version, Versioned};
use crate::model::Unresolved;
use packed::Packed;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The money columns the events CSV shows for an event's object: its customer (an ID or an
/// expanded object's), its amount (`amount_due` of an invoice, `amount_total` of a Checkout
/// Session, `amount_paid` of an InvoicePayment, else `amount`; integers only) and currency.
pub fn summary(object: &serde_json::Value) -> (Option<String>, Option<i64>, Option<String>) {
    let customer = crate::facts::id_at(object, "customer");
    let amount = ["amount_due", "amount_total", "amount_paid", "amount"]
        .iter()
        .find_map(|field| object.get(field).and_then(serde_json::Value::as_i64));
    let currency = object
        .get("currency")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    (customer, amount, currency)
}

/// The tenant links the subscription fold has learned, which money objects resolve through.
pub trait Links {
    /// The tenant claimed for a customer (rendered as `customer_link`).
    fn customer_tenant(&self, customer_id: &str) -> Option<TenantClaim>;
    /// The tenant of a subscription: claimed for it, else its customer's.
    fn subscription_tenant(&self, subscription_id: &str) -> Option<TenantClaim>;
}

/// The money read model an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MoneyKind {
    Invoice,
    Payment,
    Refund,
    Dispute,
    CreditNote,
}

impl MoneyKind {
    /// Every kind, in the order of the enum (the order rows are rendered in).
    pub const ALL: [MoneyKind; 5] = [
        MoneyKind::Invoice,
        MoneyKind::Payment,
        MoneyKind::Refund,
        MoneyKind::Dispute,
        MoneyKind::CreditNote,
    ];
}

/// One money object's folded state; its snapshot kept encoded ([`Packed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize + serde::de::DeserializeOwned",
    deserialize = "S: Serialize + serde::de::DeserializeOwned"
))]
struct Object<S> {
    snapshot: Option<Versioned<Packed<S>>>,
    /// Earliest `created` of an event showing the object paid (succeeded).
    paid_seen: Option<i64>,
    /// Earliest `created` of an event showing the object void.
    voided_seen: Option<i64>,
    /// Events folded while the tenant was unknown; attributed once it is known.
    pending: BTreeSet<Unresolved>,
    /// A hash of the row last rendered (`None`: never rendered), so that an object whose
    /// links changed is written again only when its row did.
    rendered: Option<u64>,
}

impl<S> Default for Object<S> {
    fn default() -> Self {
        Object {
            snapshot: None,
            paid_seen: None,
            voided_seen: None,
            pending: BTreeSet::new(),
            rendered: None,
        }
    }
}

/// Every money object folded so far, with the links between them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Money {
    /// Each object boxed: a map node then holds eleven pointers, not eleven snapshots, so the
    /// nodes' unused slots cost little.
    invoices: Objects<InvoiceSnapshot>,
    payments: Objects<PaymentSnapshot>,
    refunds: Objects<RefundSnapshot>,
    disputes: Objects<RefundSnapshot>,
    credit_notes: Objects<CreditNoteSnapshot>,
    /// Payment (charge or PaymentIntent) → the invoice it paid; the earliest claim wins.
    invoice_of_payment: BTreeMap<String, PaymentLink>,
    /// A customer, subscription, invoice or payment ID → the money objects resolving through it
    /// (most have one or two: a sorted vector, not a tree).
    dependents: BTreeMap<String, Vec<(MoneyKind, String)>>,
    /// Objects folded into since the last rendering, up to [`TOUCHED_MAX`].
    touched: BTreeSet<(MoneyKind, String)>,
    /// Whether every object is to be rendered at the next rendering: more than [`TOUCHED_MAX`]
    /// were folded into since the last (a rebuild, a resume), or [`Money::mark_all_changed`].
    all_touched: bool,
    /// Where a rendering of every row left for [`Money::render_chunk`] has come to: the kind's
    /// index in [`MoneyKind::ALL`] and the last ID rendered.
    deferred: Option<(usize, Option<String>)>,
}

/// Money objects of one kind, by ID.
type Objects<S> = BTreeMap<String, Box<Object<S>>>;

/// Beyond this many objects folded into between two renderings, every object is rendered
/// (one pass over the objects instead of a set as large as the state).
pub const TOUCHED_MAX: usize = 65_536;

/// A payment's claim to have paid an invoice, ordered as [`Version::of`] orders the events
/// making it: `created`, then the event ID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PaymentLink {
    created: i64,
    event_id: Box<str>,
    invoice_id: String,
}

/// Same-second order of event types: creation 1, updates 2, the closing event 3.
pub fn type_rank(event_type: &str) -> u8 {
    match event_type {
        "invoice.created"
        | "charge.pending"
        | "charge.succeeded"
        | "charge.failed"
        | "refund.created"
        | "charge.dispute.created"
        | "credit_note.created" => 1,
        "invoice.paid"
        | "invoice.payment_succeeded"
        | "invoice.voided"
        | "invoice.deleted"
        | "invoice.marked_uncollectible"
        | "charge.refunded"
        | "charge.expired"
        | "payment_intent.succeeded"
        | "payment_intent.canceled"
        | "invoice_payment.paid"
        | "refund.failed"
        | "charge.dispute.closed"
        | "credit_note.voided" => 3,
        _ => 2,
    }
}

/// A status's lifecycle stage within its kind, and whether it is terminal.
pub fn status_rank(kind: MoneyKind, status: &str) -> (bool, u8) {
    match (kind, status) {
        (MoneyKind::Invoice, "draft") => (false, 0),
        (MoneyKind::Invoice, "open") => (false, 1),
        (MoneyKind::Invoice, "uncollectible") => (false, 2),
        (MoneyKind::Invoice, "paid" | "void") => (true, 3),
        // A succeeded charge is still refunded, captured or disputed later: not terminal.
        (MoneyKind::Payment, "succeeded") => (false, 5),
        (MoneyKind::Payment, "failed" | "canceled" | "paid") => (true, 5),
        (MoneyKind::Payment, "requires_payment_method") => (false, 0),
        (MoneyKind::Payment, "requires_confirmation" | "open" | "pending") => (false, 1),
        (MoneyKind::Payment, "requires_action") => (false, 2),
        (MoneyKind::Payment, "processing") => (false, 3),
        (MoneyKind::Payment, "requires_capture") => (false, 4),
        (MoneyKind::Refund, "succeeded") => (false, 2),
        (MoneyKind::Refund, "requires_action") => (false, 1),
        (MoneyKind::Refund, "failed" | "canceled") => (true, 3),
        (MoneyKind::Dispute, "warning_needs_response") => (false, 0),
        (MoneyKind::Dispute, "warning_under_review") => (false, 1),
        (MoneyKind::Dispute, "needs_response") => (false, 2),
        (MoneyKind::Dispute, "under_review") => (false, 3),
        (MoneyKind::Dispute, "won" | "lost" | "warning_closed") => (true, 4),
        (MoneyKind::CreditNote, "void") => (true, 1),
        _ => (false, 0),
    }
}

fn version(event: &Head, kind: MoneyKind, status: &str, progress: Option<i64>) -> Version {
    let (terminal, status_rank) = status_rank(kind, status);
    Version {
        terminal,
        status_rank,
        period_end: progress.unwrap_or(0),
        ..Version::of(event, type_rank(&event.event_type))
    }
}

impl Money {
    /// Folds one money fact; returns the objects it touched.
    pub(crate) fn fold(&mut self, event: &Head, fact: MoneyFact) -> Vec<(MoneyKind, String)> {
        let mut touched = Vec::new();
        match fact {
            MoneyFact::Invoice(snapshot) => self.fold_invoice(event, *snapshot, &mut touched),
            MoneyFact::Charge(charge, refunds) => {
                self.fold_payment(event, *charge, &mut touched);
                for refund in refunds {
                    self.fold_refund(event, MoneyKind::Refund, refund, &mut touched);
                }
            }
            MoneyFact::Payment(payment) => self.fold_payment(event, *payment, &mut touched),
            MoneyFact::Refund(refund) => {
                self.fold_refund(event, MoneyKind::Refund, *refund, &mut touched)
            }
            MoneyFact::Dispute(dispute) => {
                self.fold_refund(event, MoneyKind::Dispute, *dispute, &mut touched)
            }
            MoneyFact::CreditNote(note) => self.fold_credit_note(event, *note, &mut touched),
        }
        if !self.all_touched {
            self.touched.extend(touched.iter().cloned());
            if self.touched.len() > TOUCHED_MAX {
                self.touched.clear();
                self.all_touched = true;
            }
        }
        touched
    }

    fn fold_invoice(
        &mut self,
        event: &Head,
        mut snapshot: InvoiceSnapshot,
        touched: &mut Vec<(MoneyKind, String)>,
    ) {
        // The map's key holds the ID: the kept snapshot does not hold it twice.
        let id = std::mem::take(&mut snapshot.id);
        let key = (MoneyKind::Invoice, id.clone());
        for link in [&snapshot.customer_id, &snapshot.subscription_id]
            .into_iter()
            .flatten()
        {
            index_dependent(&mut self.dependents, link, &key);
        }
        for payment in &snapshot.payment_ids {
            self.link_payment(event, payment, &id, touched);
        }
        let mut version = version(event, MoneyKind::Invoice, &snapshot.status, None);
        version.period_end = snapshot.attempt_count.unwrap_or(0);
        version.terminal |= snapshot.deleted;
        let object = self.invoices.entry(id.clone()).or_default();
        match snapshot.status.as_str() {
            "paid" => keep_earliest(&mut object.paid_seen, event.created),
            "void" => keep_earliest(&mut object.voided_seen, event.created),
            _ => {}
        }
        object.pending.insert(unresolved(event, &id));
        keep_packed(&mut object.snapshot, version, &snapshot);
        touched.push(key);
    }

    fn fold_payment(
        &mut self,
        event: &Head,
        mut snapshot: PaymentSnapshot,
        touched: &mut Vec<(MoneyKind, String)>,
    ) {
        // The map's key holds the ID: the kept snapshot does not hold it twice.
        let id = std::mem::take(&mut snapshot.id);
        let key = (MoneyKind::Payment, id.clone());
        if let Some(customer) = &snapshot.customer_id {
            index_dependent(&mut self.dependents, customer, &key);
        }
        if let Some(invoice) = &snapshot.invoice_id {
            index_dependent(&mut self.dependents, invoice, &key);
        }
        if let Some(paid) = &snapshot.payment_id {
            index_dependent(&mut self.dependents, paid, &key);
            if let (PaymentKind::InvoicePayment, Some(invoice)) =
                (snapshot.kind, &snapshot.invoice_id)
            {
                self.link_payment(event, paid, invoice, touched);
            }
        }
        if let (PaymentKind::Charge | PaymentKind::PaymentIntent, Some(invoice)) =
            (snapshot.kind, &snapshot.invoice_id)
        {
            let invoice = invoice.clone();
            self.link_payment(event, &id, &invoice, touched);
        }
        let progress = snapshot.amount_refunded;
        let version = version(event, MoneyKind::Payment, &snapshot.status, progress);
        let object = self.payments.entry(id.clone()).or_default();
        if matches!(snapshot.status.as_str(), "succeeded" | "paid") {
            keep_earliest(&mut object.paid_seen, event.created);
        }
        object.pending.insert(unresolved(event, &id));
        keep_packed(&mut object.snapshot, version, &snapshot);
        touched.push(key);
    }

    fn fold_refund(
        &mut self,
        event: &Head,
        kind: MoneyKind,
        mut snapshot: RefundSnapshot,
        touched: &mut Vec<(MoneyKind, String)>,
    ) {
        // The map's key holds the ID: the kept snapshot does not hold it twice.
        let id = std::mem::take(&mut snapshot.id);
        let key = (kind, id.clone());
        for link in [&snapshot.charge_id, &snapshot.payment_intent_id]
            .into_iter()
            .flatten()
        {
            index_dependent(&mut self.dependents, link, &key);
        }
        let version = version(event, kind, &snapshot.status, None);
        let objects = match kind {
            MoneyKind::Dispute => &mut self.disputes,
            _ => &mut self.refunds,
        };
        let object = objects.entry(id.clone()).or_default();
        object.pending.insert(unresolved(event, &id));
        keep_packed(&mut object.snapshot, version, &snapshot);
        touched.push(key);
    }

    fn fold_credit_note(
        &mut self,
        event: &Head,
        mut snapshot: CreditNoteSnapshot,
        touched: &mut Vec<(MoneyKind, String)>,
    ) {
        // The map's key holds the ID: the kept snapshot does not hold it twice.
        let id = std::mem::take(&mut snapshot.id);
        let key = (MoneyKind::CreditNote, id.clone());
        for link in [&snapshot.customer_id, &snapshot.invoice_id]
            .into_iter()
            .flatten()
        {
            index_dependent(&mut self.dependents, link, &key);
        }
        let version = version(event, MoneyKind::CreditNote, &snapshot.status, None);
        let object = self.credit_notes.entry(id.clone()).or_default();
        if snapshot.status == "void" {
            keep_earliest(&mut object.voided_seen, event.created);
        }
        object.pending.insert(unresolved(event, &id));
        keep_packed(&mut object.snapshot, version, &snapshot);
        touched.push(key);
    }

    /// Records that `payment_id` paid `invoice_id`; the earliest claim wins. The payment, and
    /// the charges of a PaymentIntent, render again (their `invoice_id` may change).
    fn link_payment(
        &mut self,
        event: &Head,
        payment_id: &str,
        invoice_id: &str,
        touched: &mut Vec<(MoneyKind, String)>,
    ) {
        let claim = (event.created, event.id.as_str());
        let changed = match self.invoice_of_payment.get_mut(payment_id) {
            Some(link) if (link.created, &*link.event_id) <= claim => false,
            Some(link) => {
                *link = PaymentLink::new(event, invoice_id);
                true
            }
            None => {
                let link = PaymentLink::new(event, invoice_id);
                self.invoice_of_payment.insert(payment_id.to_owned(), link);
                true
            }
        };
        let payment_key = (MoneyKind::Payment, payment_id.to_owned());
        index_dependent(&mut self.dependents, invoice_id, &payment_key);
        if changed {
            touched.push(payment_key);
            let charges = self.dependents.get(payment_id).into_iter().flatten();
            touched.extend(
                charges
                    .filter(|(kind, _)| *kind == MoneyKind::Payment)
                    .cloned(),
            );
        }
    }

    /// An object's events not attributed to a tenant yet.
    pub(crate) fn pending_mut(
        &mut self,
        key: &(MoneyKind, String),
    ) -> Option<&mut BTreeSet<Unresolved>> {
        self.meta_mut(key).map(|(pending, _)| pending)
    }

    /// An object's pending events and the hash of its last rendered row; `None` for an
    /// object only known through a link.
    fn meta_mut(&mut self, (kind, id): &(MoneyKind, String)) -> Option<Meta<'_>> {
        fn meta<S>(object: &mut Object<S>) -> Meta<'_> {
            (&mut object.pending, &mut object.rendered)
        }
        Some(match kind {
            MoneyKind::Invoice => meta(self.invoices.get_mut(id)?),
            MoneyKind::Payment => meta(self.payments.get_mut(id)?),
            MoneyKind::Refund => meta(self.refunds.get_mut(id)?),
            MoneyKind::Dispute => meta(self.disputes.get_mut(id)?),
            MoneyKind::CreditNote => meta(self.credit_notes.get_mut(id)?),
        })
    }
}

type Meta<'a> = (&'a mut BTreeSet<Unresolved>, &'a mut Option<u64>);

impl PaymentLink {
    fn new(event: &Head, invoice_id: &str) -> PaymentLink {
        PaymentLink {
            created: event.created,
            event_id: event.id.as_str().into(),
            invoice_id: invoice_id.to_owned(),
        }
    }
}

/// Records that `key` resolves through `on` (kept sorted, each key once).
fn index_dependent(
    dependents: &mut BTreeMap<String, Vec<(MoneyKind, String)>>,
    on: &str,
    key: &(MoneyKind, String),
) {
    let Some(set) = dependents.get_mut(on) else {
        dependents.insert(on.to_owned(), vec![key.clone()]);
        return;
    };
    if let Err(place) = set.binary_search(key) {
        // Most sets stay at one to four keys: grow those exactly, larger ones as usual.
        if set.len() < 4 {
            set.reserve_exact(1);
        }
        set.insert(place, key.clone());
    }
}

/// Keeps the observation with the greatest version, as [`crate::ledger::keep_greatest`] does,
/// encoding the snapshot only when it is kept.
fn keep_packed<S: Serialize + serde::de::DeserializeOwned>(
    slot: &mut Option<Versioned<Packed<S>>>,
    version: Version,
    snapshot: &S,
) {
    if slot.as_ref().is_some_and(|kept| kept.version >= version) {
        return;
    }
    *slot = Some(Versioned {
        version,
        value: Packed::pack(snapshot),
    });
}
