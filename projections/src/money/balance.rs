//! A tenant's balance per currency, computed from the money rows: one definition for the
//! current balance and for the balance as of an instant (the caller folds the events it wants).

use super::MoneyModels;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a tenant owes and paid in one currency, in that currency's minor unit. Sums saturate
/// at `i64::MAX` rather than wrap (no real ledger comes near).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub currency: String,
    /// `total` of finalized invoices that are not void (`open`, `paid`, `uncollectible`).
    pub invoiced: i64,
    /// `amount_paid` of those invoices.
    pub paid: i64,
    /// `amount` of refunds that `succeeded` (a refund that failed later is not counted).
    pub refunded: i64,
    /// `amount` of disputes whose funds were withdrawn (`needs_response`, `under_review`,
    /// `won`, `lost`; inquiries, `warning_*`, withdraw nothing).
    pub disputed: i64,
    /// `amount` of disputes `won`: withdrawn, then reinstated.
    pub won_back: i64,
    /// `amount` of credit notes `issued` (not void).
    pub credited: i64,
    /// `amount_remaining` of `open` invoices.
    pub outstanding: i64,
}

/// The tenant's balances, one per currency (sorted by currency), never summed across them.
pub fn balances(models: &MoneyModels, tenant_id: &str) -> Vec<Balance> {
    let mut by_currency: BTreeMap<String, Balance> = BTreeMap::new();
    let mut add =
        |currency: &Option<String>, amount: Option<i64>, field: fn(&mut Balance) -> &mut i64| {
            let (Some(currency), Some(amount)) = (currency, amount) else {
                return;
            };
            let balance = by_currency
                .entry(currency.clone())
                .or_insert_with(|| Balance {
                    currency: currency.clone(),
                    ..Balance::default()
                });
            let slot = field(balance);
            *slot = slot.saturating_add(amount);
        };
    let mine = |tenant: &Option<String>| tenant.as_deref() == Some(tenant_id);
    for invoice in models.invoices.values().filter(|i| mine(&i.tenant_id)) {
        if matches!(invoice.status.as_str(), "open" | "paid" | "uncollectible") {
            add(&invoice.currency, invoice.total, |b| &mut b.invoiced);
            add(&invoice.currency, invoice.amount_paid, |b| &mut b.paid);
        }
        if invoice.status == "open" {
            add(&invoice.currency, invoice.amount_remaining, |b| {
                &mut b.outstanding
            });
        }
    }
    for refund in models.refunds.values().filter(|r| mine(&r.tenant_id)) {
        if refund.status == "succeeded" {
            add(&refund.currency, refund.amount, |b| &mut b.refunded);
        }
    }
    for dispute in models.disputes.values().filter(|d| mine(&d.tenant_id)) {
        if matches!(
            dispute.status.as_str(),
            "needs_response" | "under_review" | "won" | "lost"
        ) {
            add(&dispute.currency, dispute.amount, |b| &mut b.disputed);
        }
        if dispute.status == "won" {
            add(&dispute.currency, dispute.amount, |b| &mut b.won_back);
        }
    }
    for note in models.credit_notes.values().filter(|n| mine(&n.tenant_id)) {
        if note.status == "issued" {
            add(&note.currency, note.amount, |b| &mut b.credited);
        }
    }
    by_currency.into_values().collect()
}
