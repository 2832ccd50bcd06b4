//! The JSON shapes of the money routes (DESIGN.md "Money"), read from the objects
//! `store::money` returns. Amounts are integer minor units beside a lowercase ISO currency;
//! times RFC 3339 UTC.

use chrono::{DateTime, Utc};
use poem::{Body, IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::{ApiResponse, Object};
use serde::Deserialize;

/// One invoice.
#[derive(Debug, Clone, Object, Deserialize)]
pub struct InvoiceView {
    pub id: String,
    /// Null while the tenant is not known.
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub customer_id: Option<String>,
    #[oai(nullable)]
    pub number: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub status: String,
    /// Lowercase ISO 4217 code.
    #[oai(nullable)]
    pub currency: Option<String>,
    /// Minor units (cents; yen for `jpy`; fils for `kwd`), as every amount here.
    #[oai(nullable)]
    pub amount_due: Option<i64>,
    #[oai(nullable)]
    pub amount_paid: Option<i64>,
    #[oai(nullable)]
    pub amount_remaining: Option<i64>,
    #[oai(nullable)]
    pub subtotal: Option<i64>,
    #[oai(nullable)]
    pub total: Option<i64>,
    /// Total tax.
    #[oai(nullable)]
    pub tax: Option<i64>,
    /// Total discount.
    #[oai(nullable)]
    pub discount: Option<i64>,
    #[oai(nullable)]
    pub billing_reason: Option<String>,
    #[oai(nullable)]
    pub subscription_id: Option<String>,
    #[oai(nullable)]
    pub period_start: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub period_end: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finalized_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub paid_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub voided_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub attempt_count: Option<i64>,
    #[oai(nullable)]
    pub hosted_invoice_url: Option<String>,
    pub last_event_id: String,
}

/// One charge (`ch_`), PaymentIntent (`pi_`) or InvoicePayment (`inpay_`).
#[derive(Debug, Clone, Object, Deserialize)]
pub struct PaymentView {
    pub id: String,
    /// `charge`, `payment_intent` or `invoice_payment`.
    pub kind: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub customer_id: Option<String>,
    /// Stripe's status of that object.
    pub status: String,
    #[oai(nullable)]
    pub amount: Option<i64>,
    #[oai(nullable)]
    pub amount_captured: Option<i64>,
    #[oai(nullable)]
    pub amount_refunded: Option<i64>,
    #[oai(nullable)]
    pub currency: Option<String>,
    /// The invoice it paid, when known.
    #[oai(nullable)]
    pub invoice_id: Option<String>,
    #[oai(nullable)]
    pub failure_code: Option<String>,
    #[oai(nullable)]
    pub failure_message: Option<String>,
    #[oai(nullable)]
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_event_id: String,
}

/// One refund or dispute; `payment_id` is the charge (else the PaymentIntent).
#[derive(Debug, Clone, Object, Deserialize)]
pub struct RefundView {
    pub id: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub customer_id: Option<String>,
    #[oai(nullable)]
    pub payment_id: Option<String>,
    /// Refunds: `pending`, `requires_action`, `succeeded`, `failed`, `canceled`. Disputes:
    /// `warning_needs_response`, `warning_under_review`, `warning_closed`, `needs_response`,
    /// `under_review`, `won`, `lost`.
    pub status: String,
    #[oai(nullable)]
    pub amount: Option<i64>,
    #[oai(nullable)]
    pub currency: Option<String>,
    #[oai(nullable)]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_event_id: String,
}

/// One credit note.
#[derive(Debug, Clone, Object, Deserialize)]
pub struct CreditNoteView {
    pub id: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub customer_id: Option<String>,
    #[oai(nullable)]
    pub invoice_id: Option<String>,
    /// `issued` or `void`.
    pub status: String,
    /// `pre_payment`, `post_payment` or `mixed`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    #[oai(nullable)]
    pub credit_note_type: Option<String>,
    #[oai(nullable)]
    pub amount: Option<i64>,
    #[oai(nullable)]
    pub currency: Option<String>,
    /// The refunds it made.
    pub refund_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub voided_at: Option<DateTime<Utc>>,
    pub last_event_id: String,
}

/// An invoice with its payments, their refunds, and its credit notes.
#[derive(Debug, Clone, Object)]
pub struct InvoiceDetail {
    #[oai(flatten)]
    pub invoice: InvoiceView,
    pub payments: Vec<PaymentView>,
    pub refunds: Vec<RefundView>,
    pub credit_notes: Vec<CreditNoteView>,
}

#[derive(Debug, Clone, Object)]
pub struct InvoiceList {
    pub invoices: Vec<InvoiceView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct PaymentList {
    pub payments: Vec<PaymentView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct RefundList {
    pub refunds: Vec<RefundView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct DisputeList {
    pub disputes: Vec<RefundView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct CreditNoteList {
    pub credit_notes: Vec<CreditNoteView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// A tenant's balance in one currency, minor units (see README "For finance").
#[derive(Debug, Clone, Object)]
pub struct BalanceView {
    pub currency: String,
    /// `total` of finalized, non-void invoices.
    pub invoiced: i64,
    /// `amount_paid` of those invoices.
    pub paid: i64,
    /// Refunds that succeeded.
    pub refunded: i64,
    /// Disputes whose funds were withdrawn.
    pub disputed: i64,
    /// Disputes won: funds reinstated.
    pub won_back: i64,
    /// Credit notes issued (not void).
    pub credited: i64,
    /// `amount_remaining` of open invoices.
    pub outstanding: i64,
}

impl From<projections::money::Balance> for BalanceView {
    fn from(b: projections::money::Balance) -> BalanceView {
        BalanceView {
            currency: b.currency,
            invoiced: b.invoiced,
            paid: b.paid,
            refunded: b.refunded,
            disputed: b.disputed,
            won_back: b.won_back,
            credited: b.credited,
            outstanding: b.outstanding,
        }
    }
}

/// A tenant's balances, one per currency, never summed across currencies.
#[derive(Debug, Clone, Object)]
pub struct TenantBalance {
    pub tenant_id: String,
    /// The instant asked for; null for now.
    #[oai(nullable)]
    pub as_of: Option<DateTime<Utc>>,
    pub balances: Vec<BalanceView>,
}

/// A money list as JSON (one page) or CSV (every matching row, streamed).
pub enum ListOrCsv<T> {
    Json(Json<T>),
    Csv(Body),
}

impl<T: poem_openapi::types::ToJSON + Send> IntoResponse for ListOrCsv<T> {
    fn into_response(self) -> Response {
        match self {
            ListOrCsv::Json(json) => json.into_response(),
            ListOrCsv::Csv(body) => Response::builder()
                .content_type("text/csv; charset=utf-8")
                .body(body),
        }
    }
}

impl<T: poem_openapi::types::ToJSON + Send> ApiResponse for ListOrCsv<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "A page of rows (JSON), or with `Accept: text/csv` every matching \
                              row from `cursor` on, up to `limit` when given (CSV, RFC 4180, \
                              the JSON fields as columns).",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: <Json<T> as Payload>::schema_ref(),
                    },
                    MetaMediaType {
                        content_type: "text/csv; charset=utf-8",
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                    },
                ],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        <Json<T> as Payload>::register(registry);
    }
}
