//! Money read-model rows, as the fold renders them (the JSON names of DESIGN.md "Money").
//!
//! Amounts are integer counts of the currency's minor unit (cents for `usd`, yen for `jpy`,
//! fils for `kwd`: Stripe already sends them so, <https://docs.stripe.com/currencies#zero-decimal>),
//! always beside their lowercase ISO currency; nothing here converts, rounds or sums across
//! currencies. Times are Unix seconds taken from the events; `src/` renders RFC 3339 UTC.

use super::TenantRevenue;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One invoice (`invoices`). Stripe's invoice object:
/// <https://docs.stripe.com/api/invoices/object>.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub tenant_id: Option<String>,
    pub customer_id: Option<String>,
    pub number: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible` or `void` (a deleted draft has no row).
    pub status: String,
    pub currency: Option<String>,
    pub amount_due: Option<i64>,
    pub amount_paid: Option<i64>,
    pub amount_remaining: Option<i64>,
    pub subtotal: Option<i64>,
    pub total: Option<i64>,
    /// Total tax: `total_taxes` (2025-03-31.basil on), else `total_tax_amounts`, else `tax`.
    pub tax: Option<i64>,
    /// Total discount: the sum of `total_discount_amounts`.
    pub discount: Option<i64>,
    pub billing_reason: Option<String>,
    pub subscription_id: Option<String>,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    /// The object's `created`, else the `created` of the event its row comes from.
    pub created_at: i64,
    pub finalized_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub attempt_count: Option<i64>,
    pub hosted_invoice_url: Option<String>,
    pub last_event_id: String,
}

/// Which Stripe object a payment row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// A charge (`ch_`, `py_`).
    Charge,
    /// A PaymentIntent (`pi_`).
    PaymentIntent,
    /// An InvoicePayment (`inpay_`), 2025-03-31.basil's link from an invoice to its payment.
    InvoicePayment,
}

impl PaymentKind {
    /// The snake_case name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Charge => "charge",
            PaymentKind::PaymentIntent => "payment_intent",
            PaymentKind::InvoicePayment => "invoice_payment",
        }
    }
}

/// One charge, PaymentIntent or InvoicePayment (`payments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub kind: PaymentKind,
    pub tenant_id: Option<String>,
    pub customer_id: Option<String>,
    /// Stripe's status of that object (`succeeded`, `failed`, `pending` for charges;
    /// `succeeded`, `canceled`, `requires_payment_method`... for PaymentIntents; `paid`,
    /// `open`, `canceled` for InvoicePayments).
    pub status: String,
    /// Charge `amount`, PaymentIntent `amount`, InvoicePayment `amount_paid` (else
    /// `amount_requested`).
    pub amount: Option<i64>,
    /// Charge `amount_captured`, PaymentIntent `amount_received`.
    pub amount_captured: Option<i64>,
    /// Charge `amount_refunded`.
    pub amount_refunded: Option<i64>,
    pub currency: Option<String>,
    /// The invoice paid: the object's own `invoice` (before basil), the invoice's `charge` or
    /// `payment_intent`, or an InvoicePayment naming this payment.
    pub invoice_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub paid_at: Option<i64>,
    /// The object's `created`, else the `created` of the event its row comes from.
    pub created_at: i64,
    pub last_event_id: String,
}

/// One refund (`refunds`); `payment_id` is its charge, else its PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub tenant_id: Option<String>,
    pub customer_id: Option<String>,
    pub payment_id: Option<String>,
    pub status: String,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub reason: Option<String>,
    /// The object's `created`, else the `created` of the event its row comes from.
    pub created_at: i64,
    pub last_event_id: String,
}

/// One dispute (`disputes`); `payment_id` is its charge, else its PaymentIntent. A dispute
/// carries no customer: `customer_id` and the tenant come through the charge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub tenant_id: Option<String>,
    pub customer_id: Option<String>,
    pub payment_id: Option<String>,
    pub status: String,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub reason: Option<String>,
    /// The object's `created`, else the `created` of the event its row comes from.
    pub created_at: i64,
    pub last_event_id: String,
}

/// One credit note (`credit_notes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CreditNote {
    pub id: String,
    pub tenant_id: Option<String>,
    pub customer_id: Option<String>,
    pub invoice_id: Option<String>,
    /// `issued` or `void`.
    pub status: String,
    /// `pre_payment`, `post_payment` or `mixed`.
    #[serde(rename = "type")]
    pub credit_note_type: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// The refunds it made: `refund` (older versions) or `refunds[].refund`.
    pub refund_ids: Vec<String>,
    /// The object's `created`, else the `created` of the event its row comes from.
    pub created_at: i64,
    pub voided_at: Option<i64>,
    pub last_event_id: String,
}

/// Money rows changed since the last rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyChanges {
    /// Upserts; `None` deletes the row (a deleted draft).
    pub invoices: BTreeMap<String, Option<Invoice>>,
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
    pub disputes: Vec<Dispute>,
    pub credit_notes: Vec<CreditNote>,
    /// Each tenant whose MRR movements changed, with all of them (an empty map: none left).
    pub revenue: BTreeMap<String, TenantRevenue>,
}

impl MoneyChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.revenue.is_empty()
            && self.invoices.is_empty()
            && self.payments.is_empty()
            && self.refunds.is_empty()
            && self.disputes.is_empty()
            && self.credit_notes.is_empty()
    }
}

/// Every money row, by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyModels {
    pub invoices: BTreeMap<String, Invoice>,
    pub payments: BTreeMap<String, Payment>,
    pub refunds: BTreeMap<String, Refund>,
    pub disputes: BTreeMap<String, Dispute>,
    pub credit_notes: BTreeMap<String, CreditNote>,
    /// Every tenant's MRR movements (tenants with none are absent).
    pub revenue: BTreeMap<String, TenantRevenue>,
}

impl MoneyModels {
    /// Applies incremental changes, as the database does.
    pub fn apply(&mut self, changes: MoneyChanges) {
        for (id, row) in changes.invoices {
            match row {
                Some(row) => self.invoices.insert(id, row),
                None => self.invoices.remove(&id),
            };
        }
        for row in changes.payments {
            self.payments.insert(row.id.clone(), row);
        }
        for row in changes.refunds {
            self.refunds.insert(row.id.clone(), row);
        }
        for row in changes.disputes {
            self.disputes.insert(row.id.clone(), row);
        }
        for row in changes.credit_notes {
            self.credit_notes.insert(row.id.clone(), row);
        }
        for (tenant_id, revenue) in changes.revenue {
            match revenue.is_empty() {
                true => self.revenue.remove(&tenant_id),
                false => self.revenue.insert(tenant_id, revenue),
            };
        }
    }
}
