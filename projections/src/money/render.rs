//! Rendering money rows from the folded state: tenants found through links at render time,
//! incremental changes, and every row from scratch (what a rebuild writes).

use super::{
    CreditNote, Dispute, Invoice, Links, Meta, Money, MoneyChanges, MoneyKind, MoneyModels, Object,
    Payment, PaymentKind, PaymentSnapshot, Refund, RefundSnapshot,
};
use crate::facts::TenantClaim;
use crate::ledger::attribute;
use crate::model::ResolvedBy;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// How many payment-to-payment hops a tenant is looked for through (a refund's charge, that
/// charge's PaymentIntent, an InvoicePayment's PaymentIntent): Stripe's links are shallower.
const PAYMENT_HOPS_MAX: usize = 2;

/// An object's kept snapshot, decoded.
fn snapshot<S: Serialize + DeserializeOwned>(
    objects: &BTreeMap<String, Box<Object<S>>>,
    id: &str,
) -> Option<S> {
    Some(objects.get(id)?.snapshot.as_ref()?.value.unpack())
}

impl Money {
    /// The invoice payment `id` (its snapshot `own`, decoded) paid: its own `invoice`, else a
    /// link from the invoice or an InvoicePayment, else (a charge) its PaymentIntent's.
    fn payment_invoice_of(&self, id: &str, own: Option<&PaymentSnapshot>) -> Option<String> {
        let linked = |id: &str| {
            self.invoice_of_payment
                .get(id)
                .map(|v| v.invoice_id.clone())
        };
        own.and_then(|p| p.invoice_id.clone())
            .or_else(|| linked(id))
            .or_else(|| linked(own?.payment_id.as_deref()?))
    }

    fn invoice_tenant(&self, id: &str, links: &dyn Links) -> Option<TenantClaim> {
        let invoice = snapshot(&self.invoices, id)?;
        if let Some(claim) = invoice.tenant {
            return Some(claim);
        }
        let by_customer = invoice.customer_id.as_deref();
        by_customer
            .and_then(|c| links.customer_tenant(c))
            .or_else(|| links.subscription_tenant(invoice.subscription_id.as_deref()?))
    }

    fn payment_tenant(&self, id: &str, links: &dyn Links, hops: usize) -> Option<TenantClaim> {
        let payment = snapshot(&self.payments, id);
        let customer = payment.as_ref().and_then(|p| p.customer_id.as_deref());
        if let Some(claim) = customer.and_then(|c| links.customer_tenant(c)) {
            return Some(claim);
        }
        if let Some(claim) = self
            .payment_invoice_of(id, payment.as_ref())
            .and_then(|invoice| self.invoice_tenant(&invoice, links))
        {
            return Some(claim);
        }
        let paid = payment?.payment_id?;
        (hops > 0).then(|| self.payment_tenant(&paid, links, hops - 1))?
    }

    fn payment_customer(&self, id: &str, hops: usize) -> Option<String> {
        self.payment_customer_of(id, snapshot(&self.payments, id).as_ref(), hops)
    }

    /// [`Money::payment_customer`] of payment `id` whose snapshot (`payment`) is decoded
    /// already.
    fn payment_customer_of(
        &self,
        id: &str,
        payment: Option<&PaymentSnapshot>,
        hops: usize,
    ) -> Option<String> {
        if let Some(customer) = payment.and_then(|p| p.customer_id.clone()) {
            return Some(customer);
        }
        let invoice = self.payment_invoice_of(id, payment);
        if let Some(customer) = invoice.and_then(|i| snapshot(&self.invoices, &i)?.customer_id) {
            return Some(customer);
        }
        let paid = payment?.payment_id.as_deref()?;
        (hops > 0).then(|| self.payment_customer(paid, hops - 1))?
    }

    fn refund_tenant(&self, refund: &RefundSnapshot, links: &dyn Links) -> Option<TenantClaim> {
        [&refund.charge_id, &refund.payment_intent_id]
            .into_iter()
            .flatten()
            .find_map(|p| self.payment_tenant(p, links, PAYMENT_HOPS_MAX))
    }

    fn refund_customer(&self, refund: &RefundSnapshot) -> Option<String> {
        [&refund.charge_id, &refund.payment_intent_id]
            .into_iter()
            .flatten()
            .find_map(|p| self.payment_customer(p, PAYMENT_HOPS_MAX))
    }

    /// The tenant of a money object, through its links (see the module doc).
    pub(crate) fn tenant_of(
        &self,
        (kind, id): &(MoneyKind, String),
        links: &dyn Links,
    ) -> Option<TenantClaim> {
        self.tenant_of_id(*kind, id, links)
    }

    fn tenant_of_id(&self, kind: MoneyKind, id: &str, links: &dyn Links) -> Option<TenantClaim> {
        match kind {
            MoneyKind::Invoice => self.invoice_tenant(id, links),
            MoneyKind::Payment => self.payment_tenant(id, links, PAYMENT_HOPS_MAX),
            MoneyKind::Refund => self.refund_tenant(&snapshot(&self.refunds, id)?, links),
            MoneyKind::Dispute => self.refund_tenant(&snapshot(&self.disputes, id)?, links),
            MoneyKind::CreditNote => {
                let note = snapshot(&self.credit_notes, id)?;
                let customer = note.customer_id.as_deref();
                customer
                    .and_then(|c| links.customer_tenant(c))
                    .or_else(|| self.invoice_tenant(note.invoice_id.as_deref()?, links))
            }
        }
    }

    fn render_invoice(&self, id: &str, tenant_id: Option<String>) -> Option<Invoice> {
        let object = self.invoices.get(id)?;
        let versioned = object.snapshot.as_ref()?;
        let s = &versioned.value.unpack();
        if s.deleted {
            return None;
        }
        let settled = |explicit: Option<i64>, seen: Option<i64>, status: &str| {
            explicit.or(seen.filter(|_| s.status == status))
        };
        Some(Invoice {
            id: id.to_owned(),
            tenant_id,
            customer_id: s.customer_id.clone(),
            number: s.number.clone(),
            status: s.status.clone(),
            currency: s.currency.clone(),
            amount_due: s.amount_due,
            amount_paid: s.amount_paid,
            amount_remaining: s.amount_remaining,
            subtotal: s.subtotal,
            total: s.total,
            tax: s.tax,
            discount: s.discount,
            billing_reason: s.billing_reason.clone(),
            subscription_id: s.subscription_id.clone(),
            period_start: s.period_start,
            period_end: s.period_end,
            created_at: s.created.unwrap_or(versioned.version.created),
            finalized_at: s.finalized_at,
            paid_at: settled(s.paid_at, object.paid_seen, "paid"),
            voided_at: settled(s.voided_at, object.voided_seen, "void"),
            attempt_count: s.attempt_count,
            hosted_invoice_url: s.hosted_invoice_url.clone(),
            last_event_id: versioned.version.event_id.clone(),
        })
    }

    fn render_payment(&self, id: &str, tenant_id: Option<String>) -> Option<Payment> {
        let object = self.payments.get(id)?;
        let versioned = object.snapshot.as_ref()?;
        let s = &versioned.value.unpack();
        let paid = matches!(s.status.as_str(), "succeeded" | "paid");
        Some(Payment {
            id: id.to_owned(),
            kind: s.kind,
            tenant_id,
            customer_id: self.payment_customer_of(id, Some(s), PAYMENT_HOPS_MAX),
            status: s.status.clone(),
            amount: s.amount,
            amount_captured: s.amount_captured,
            amount_refunded: s.amount_refunded,
            currency: s.currency.clone(),
            invoice_id: match s.kind {
                PaymentKind::InvoicePayment => s.invoice_id.clone(),
                _ => self.payment_invoice_of(id, Some(s)),
            },
            failure_code: s.failure_code.clone(),
            failure_message: s.failure_message.clone(),
            paid_at: s.paid_at.or(object.paid_seen.filter(|_| paid)),
            created_at: s.created.unwrap_or(versioned.version.created),
            last_event_id: versioned.version.event_id.clone(),
        })
    }

    fn render_refund(
        &self,
        kind: MoneyKind,
        id: &str,
        tenant_id: Option<String>,
    ) -> Option<Refund> {
        let objects = match kind {
            MoneyKind::Dispute => &self.disputes,
            _ => &self.refunds,
        };
        let versioned = objects.get(id)?.snapshot.as_ref()?;
        let s = &versioned.value.unpack();
        Some(Refund {
            id: id.to_owned(),
            tenant_id,
            customer_id: self.refund_customer(s),
            payment_id: s.charge_id.clone().or_else(|| s.payment_intent_id.clone()),
            status: s.status.clone(),
            amount: s.amount,
            currency: s.currency.clone(),
            reason: s.reason.clone(),
            created_at: s.created.unwrap_or(versioned.version.created),
            last_event_id: versioned.version.event_id.clone(),
        })
    }

    fn render_credit_note(&self, id: &str, tenant_id: Option<String>) -> Option<CreditNote> {
        let object = self.credit_notes.get(id)?;
        let versioned = object.snapshot.as_ref()?;
        let s = &versioned.value.unpack();
        let customer_id = s
            .customer_id
            .clone()
            .or_else(|| snapshot(&self.invoices, s.invoice_id.as_deref()?)?.customer_id);
        Some(CreditNote {
            id: id.to_owned(),
            tenant_id,
            customer_id,
            invoice_id: s.invoice_id.clone(),
            status: s.status.clone(),
            credit_note_type: s.credit_note_type.clone(),
            amount: s.amount,
            currency: s.currency.clone(),
            refund_ids: s.refund_ids.clone(),
            created_at: s.created.unwrap_or(versioned.version.created),
            voided_at: s
                .voided_at
                .or(object.voided_seen.filter(|_| s.status == "void")),
            last_event_id: versioned.version.event_id.clone(),
        })
    }

    /// One object's row (an invoice's is `None` once deleted); `None` for an object known only
    /// through a link.
    fn render_row(&self, key: &(MoneyKind, String), tenant_id: Option<String>) -> Option<Row> {
        self.render_row_id(key.0, &key.1, tenant_id)
    }

    fn render_row_id(&self, kind: MoneyKind, id: &str, tenant_id: Option<String>) -> Option<Row> {
        Some(match kind {
            MoneyKind::Invoice => {
                self.invoices.get(id)?;
                Row::Invoice(id.to_owned(), self.render_invoice(id, tenant_id))
            }
            MoneyKind::Payment => Row::Payment(self.render_payment(id, tenant_id)?),
            MoneyKind::Refund => {
                Row::Refund(self.render_refund(MoneyKind::Refund, id, tenant_id)?)
            }
            MoneyKind::Dispute => Row::Dispute(dispute(self.render_refund(
                MoneyKind::Dispute,
                id,
                tenant_id,
            )?)),
            MoneyKind::CreditNote => Row::CreditNote(self.render_credit_note(id, tenant_id)?),
        })
    }

    /// The rows changed since the last call: the objects folded into since, and those whose
    /// tenant may have moved because a link they resolve through changed (`changed_links`:
    /// customer and subscription IDs the subscription fold re-rendered). Pending events of
    /// every object whose tenant is known are attributed to it.
    pub(crate) fn take_changes(
        &mut self,
        links: &dyn Links,
        changed_links: &BTreeSet<String>,
        attributions: &mut BTreeSet<(String, String, ResolvedBy)>,
    ) -> MoneyChanges {
        if std::mem::take(&mut self.all_touched) {
            self.touched.clear();
            return self.render_all(links, attributions);
        }
        let forced = std::mem::take(&mut self.touched);
        let mut candidates = forced.clone();
        let mut queue: Vec<&String> = changed_links.iter().collect();
        queue.extend(forced.iter().map(|(_, id)| id));
        let mut seen: BTreeSet<&String> = BTreeSet::new();
        while let Some(id) = queue.pop() {
            if !seen.insert(id) {
                continue;
            }
            for dependent in self.dependents.get(id).into_iter().flatten() {
                if !candidates.contains(dependent) {
                    candidates.insert(dependent.clone());
                }
                queue.push(&dependent.1);
            }
        }
        let mut changes = MoneyChanges::default();
        for key in candidates {
            let tenant = self.tenant_of(&key, links);
            let tenant_id = tenant.as_ref().map(|t| t.tenant_id.clone());
            let Some(row) = self.render_row(&key, tenant_id) else {
                continue;
            };
            let hash = row.hash_value();
            let (pending, rendered) = self.meta_mut(&key).expect("rendered objects exist");
            if let Some(tenant) = &tenant {
                attribute(attributions, tenant, pending);
            }
            if rendered.replace(hash) != Some(hash) || forced.contains(&key) {
                row.push(&mut changes);
            }
        }
        changes
    }

    /// Every object's row, each sent whatever was rendered before (a rebuild, or more objects
    /// folded into than [`super::TOUCHED_MAX`]): one pass over the objects, kind by kind,
    /// without the sets an incremental rendering builds.
    fn render_all(
        &mut self,
        links: &dyn Links,
        attributions: &mut BTreeSet<(String, String, ResolvedBy)>,
    ) -> MoneyChanges {
        let mut changes = MoneyChanges::default();
        for kind in MoneyKind::ALL {
            let rendered: Vec<(Option<TenantClaim>, Option<Row>)> = self
                .ids(kind)
                .map(|id| {
                    let tenant = self.tenant_of_id(kind, id, links);
                    let tenant_id = tenant.as_ref().map(|t| t.tenant_id.clone());
                    (tenant, self.render_row_id(kind, id, tenant_id))
                })
                .collect();
            for ((pending, last), (tenant, row)) in self.metas_mut(kind).zip(rendered) {
                let Some(row) = row else { continue };
                if let Some(tenant) = &tenant {
                    attribute(attributions, tenant, pending);
                }
                *last = Some(row.hash_value());
                row.push(&mut changes);
            }
        }
        changes
    }

    /// As [`Money::take_changes`], except that when every object is to be rendered the rows
    /// are left for [`Money::render_chunk`]; pending events are attributed here all the same
    /// (the rows' tenants do not change in between: nothing is folded meanwhile).
    pub(crate) fn take_changes_deferred(
        &mut self,
        links: &dyn Links,
        changed_links: &BTreeSet<String>,
        attributions: &mut BTreeSet<(String, String, ResolvedBy)>,
    ) -> MoneyChanges {
        if !std::mem::take(&mut self.all_touched) {
            return self.take_changes(links, changed_links, attributions);
        }
        self.touched.clear();
        for kind in MoneyKind::ALL {
            let tenants: Vec<Option<TenantClaim>> = self
                .ids(kind)
                .map(|id| self.tenant_of_id(kind, id, links))
                .collect();
            for ((pending, _), tenant) in self.metas_mut(kind).zip(tenants) {
                if let Some(tenant) = &tenant {
                    attribute(attributions, tenant, pending);
                }
            }
        }
        self.deferred = Some((0, None));
        MoneyChanges::default()
    }

    /// The next rows of a rendering left by [`Money::take_changes_deferred`], at most
    /// `rows_max` of them, in the order of kinds then IDs; `None` once every row was given.
    pub(crate) fn render_chunk(
        &mut self,
        links: &dyn Links,
        rows_max: usize,
    ) -> Option<MoneyChanges> {
        let (mut kind_index, mut after) = self.deferred.take()?;
        let mut changes = MoneyChanges::default();
        let mut rows = 0;
        while kind_index < MoneyKind::ALL.len() {
            let kind = MoneyKind::ALL[kind_index];
            let ids: Vec<&String> = match &after {
                Some(last) => self.ids_after(kind, last).take(rows_max - rows).collect(),
                None => self.ids(kind).take(rows_max - rows).collect(),
            };
            let exhausted = ids.len() < rows_max - rows;
            let rendered: Vec<(String, Option<Row>)> = ids
                .into_iter()
                .map(|id| {
                    let tenant_id = self.tenant_of_id(kind, id, links).map(|t| t.tenant_id);
                    (id.clone(), self.render_row_id(kind, id, tenant_id))
                })
                .collect();
            rows += rendered.len();
            after = rendered.last().map(|(id, _)| id.clone()).or(after);
            for (id, row) in rendered {
                let Some(row) = row else { continue };
                if let Some((_, last)) = self.meta_mut(&(kind, id)) {
                    *last = Some(row.hash_value());
                }
                row.push(&mut changes);
            }
            if !exhausted {
                self.deferred = Some((kind_index, after));
                return Some(changes);
            }
            (kind_index, after) = (kind_index + 1, None);
        }
        (rows > 0).then_some(changes)
    }

    /// The IDs of one kind's objects after `last`, in order.
    fn ids_after<'a>(
        &'a self,
        kind: MoneyKind,
        last: &str,
    ) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        use std::ops::Bound::{Excluded, Unbounded};
        let range = (Excluded(last), Unbounded);
        match kind {
            MoneyKind::Invoice => Box::new(self.invoices.range::<str, _>(range).map(|(k, _)| k)),
            MoneyKind::Payment => Box::new(self.payments.range::<str, _>(range).map(|(k, _)| k)),
            MoneyKind::Refund => Box::new(self.refunds.range::<str, _>(range).map(|(k, _)| k)),
            MoneyKind::Dispute => Box::new(self.disputes.range::<str, _>(range).map(|(k, _)| k)),
            MoneyKind::CreditNote => {
                Box::new(self.credit_notes.range::<str, _>(range).map(|(k, _)| k))
            }
        }
    }

    /// The IDs of one kind's objects, in order.
    fn ids(&self, kind: MoneyKind) -> Box<dyn Iterator<Item = &String> + '_> {
        match kind {
            MoneyKind::Invoice => Box::new(self.invoices.keys()),
            MoneyKind::Payment => Box::new(self.payments.keys()),
            MoneyKind::Refund => Box::new(self.refunds.keys()),
            MoneyKind::Dispute => Box::new(self.disputes.keys()),
            MoneyKind::CreditNote => Box::new(self.credit_notes.keys()),
        }
    }

    /// One kind's objects' pending events and last rendered hashes, in the order of
    /// [`Money::ids`].
    fn metas_mut(&mut self, kind: MoneyKind) -> Box<dyn Iterator<Item = Meta<'_>> + '_> {
        fn meta<S>(object: &mut Box<Object<S>>) -> Meta<'_> {
            (&mut object.pending, &mut object.rendered)
        }
        match kind {
            MoneyKind::Invoice => Box::new(self.invoices.values_mut().map(meta)),
            MoneyKind::Payment => Box::new(self.payments.values_mut().map(meta)),
            MoneyKind::Refund => Box::new(self.refunds.values_mut().map(meta)),
            MoneyKind::Dispute => Box::new(self.disputes.values_mut().map(meta)),
            MoneyKind::CreditNote => Box::new(self.credit_notes.values_mut().map(meta)),
        }
    }

    /// Marks every object for rendering (as a rebuild writes them).
    pub(crate) fn mark_all_changed(&mut self) {
        self.touched.clear();
        self.all_touched = true;
    }

    /// Every money row, rendered from scratch.
    pub(crate) fn read_models(&self, links: &dyn Links) -> MoneyModels {
        let mut changes = MoneyChanges::default();
        let keys = self
            .invoices
            .keys()
            .map(|id| (MoneyKind::Invoice, id))
            .chain(self.payments.keys().map(|id| (MoneyKind::Payment, id)))
            .chain(self.refunds.keys().map(|id| (MoneyKind::Refund, id)))
            .chain(self.disputes.keys().map(|id| (MoneyKind::Dispute, id)))
            .chain(
                self.credit_notes
                    .keys()
                    .map(|id| (MoneyKind::CreditNote, id)),
            );
        for (kind, id) in keys {
            let key = (kind, id.clone());
            let tenant_id = self.tenant_of(&key, links).map(|t| t.tenant_id);
            if let Some(row) = self.render_row(&key, tenant_id) {
                row.push(&mut changes);
            }
        }
        let mut models = MoneyModels::default();
        models.apply(changes);
        models
    }
}

/// One rendered money row.
#[derive(Hash)]
enum Row {
    Invoice(String, Option<Invoice>),
    Payment(Payment),
    Refund(Refund),
    Dispute(Dispute),
    CreditNote(CreditNote),
}

impl Row {
    /// A hash of the row (`DefaultHasher::new` hashes alike within a process, which is all
    /// the comparison with the last rendered row needs).
    fn hash_value(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }

    fn push(self, changes: &mut MoneyChanges) {
        match self {
            Row::Invoice(id, row) => {
                changes.invoices.insert(id, row);
            }
            Row::Payment(row) => changes.payments.push(row),
            Row::Refund(row) => changes.refunds.push(row),
            Row::Dispute(row) => changes.disputes.push(row),
            Row::CreditNote(row) => changes.credit_notes.push(row),
        }
    }
}

/// A dispute row from the shape it shares with refunds.
fn dispute(row: Refund) -> Dispute {
    Dispute {
        id: row.id,
        tenant_id: row.tenant_id,
        customer_id: row.customer_id,
        payment_id: row.payment_id,
        status: row.status,
        amount: row.amount,
        currency: row.currency,
        reason: row.reason,
        created_at: row.created_at,
        last_event_id: row.last_event_id,
    }
}
