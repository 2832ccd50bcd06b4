//! The money sections of a tenant's page: entitlements, balance per currency, invoices,
//! payments, refunds, disputes and credit notes, each line linking to the event that last
//! changed it and to its JSON route.
//!
//! "As of": the balance is folded from the tenant's events up to the instant or position (the
//! function behind `GET /api/billing/tenants/{id}/balance`). The money lists and the
//! entitlement are read models with no history: as of an instant they leave out documents
//! Stripe created after it, but show today's status; as of a position they show today's rows.

use super::layout::{self, encode, Source};
use super::tenant::Point;
use super::{Console, PageError};
use crate::http::money_views::{CreditNoteView, InvoiceView, PaymentView, RefundView};
use crate::store::read_models::entitlements;
use crate::store::{
    self,
    money::{Filters, Table},
};
use crate::timeline::{self, Bound};
use maud::{html as markup, Markup};
use projections::money::Balance;
use projections::TenantId;
use serde::de::DeserializeOwned;

/// Rows shown per money list on a tenant's page (oldest first, as the API lists them); the
/// console's invoices and payments pages page through the rest.
pub const MONEY_ROWS_SHOWN_MAX: i64 = 100;

/// What the tenant may use (the `entitlements` read model; only with a plans file).
pub use crate::store::read_models::entitlements::StoredEntitlement as EntitlementRow;

/// A list and whether it had more rows than shown.
pub struct Shown<V> {
    pub rows: Vec<V>,
    pub cut: bool,
}

/// The tenant's money, as the sections render it.
pub struct TenantMoney {
    pub entitlement: Option<EntitlementRow>,
    /// Per currency, at the page's point.
    pub balances: Vec<Balance>,
    pub invoices: Shown<InvoiceView>,
    pub payments: Shown<PaymentView>,
    pub refunds: Shown<RefundView>,
    pub disputes: Shown<RefundView>,
    pub credit_notes: Shown<CreditNoteView>,
}

/// Reads the tenant's money at `point`: the balance folded from its events, the lists and
/// the entitlement from the read models (on one pooled connection), at once.
pub async fn load(
    console: &Console,
    tenant_id: &TenantId,
    point: Point,
) -> Result<TenantMoney, PageError> {
    let state = &console.state;
    let pool = state.read_pool().await?;
    let bound = match point {
        Point::Now => Bound::All,
        Point::Instant(t) => Bound::CreatedAtOrBefore(t),
        Point::Position(p) => Bound::PositionAtOrBefore(p),
    };
    let filters = Filters {
        tenant_id: Some(tenant_id.clone()),
        to: match point {
            Point::Instant(t) => Some(t),
            _ => None,
        },
        ..Filters::default()
    };
    let lists = async {
        let client = pool.get().await?;
        let invoices = shown(&client, &store::money::INVOICES, &filters).await?;
        let payments = shown(&client, &store::money::PAYMENTS, &filters).await?;
        let refunds = shown(&client, &store::money::REFUNDS, &filters).await?;
        let disputes = shown(&client, &store::money::DISPUTES, &filters).await?;
        let credit_notes = shown(&client, &store::money::CREDIT_NOTES, &filters).await?;
        let entitlement = entitlements::entitlement(&client, tenant_id).await?;
        Ok::<_, PageError>((
            entitlement,
            invoices,
            payments,
            refunds,
            disputes,
            credit_notes,
        ))
    };
    let balances = timeline::balances(&pool, tenant_id, state.config.livemode, bound);
    let (lists, balances) = tokio::join!(lists, balances);
    let (entitlement, invoices, payments, refunds, disputes, credit_notes) = lists?;
    Ok(TenantMoney {
        entitlement,
        balances: balances?.0,
        invoices,
        payments,
        refunds,
        disputes,
        credit_notes,
    })
}

async fn shown<V: DeserializeOwned>(
    client: &deadpool_postgres::Client,
    table: &Table,
    filters: &Filters,
) -> Result<Shown<V>, PageError> {
    let mut rows =
        store::money::list(client, table, filters, None, MONEY_ROWS_SHOWN_MAX + 1).await?;
    let cut = rows.len() as i64 > MONEY_ROWS_SHOWN_MAX;
    rows.truncate(MONEY_ROWS_SHOWN_MAX as usize);
    let rows = rows
        .into_iter()
        .map(|row| serde_json::from_value(row).map_err(anyhow::Error::from))
        .collect::<Result<Vec<V>, _>>()?;
    Ok(Shown { rows, cut })
}

/// The API routes the money sections come from.
pub fn sources(tenant_id: &str, point: Point) -> Vec<Source> {
    let id = encode(tenant_id);
    let balance = match point {
        Point::Instant(t) => format!(
            "/api/billing/tenants/{id}/balance?as_of={}",
            encode(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        ),
        _ => format!("/api/billing/tenants/{id}/balance"),
    };
    vec![
        Source::new(
            "the entitlement",
            format!("/api/billing/tenants/{id}/entitlements"),
        ),
        Source::new("the balance", balance),
        Source::new(
            "invoices (CSV with Accept: text/csv)",
            format!("/api/billing/invoices?tenant_id={id}"),
        ),
        Source::new("payments", format!("/api/billing/payments?tenant_id={id}")),
        Source::new("refunds", format!("/api/billing/refunds?tenant_id={id}")),
        Source::new("disputes", format!("/api/billing/disputes?tenant_id={id}")),
        Source::new(
            "credit notes",
            format!("/api/billing/credit-notes?tenant_id={id}"),
        ),
    ]
}

/// An optional amount in an optional currency, or an em dash.
pub fn amount(amount_minor: Option<i64>, currency: Option<&str>) -> Markup {
    match (amount_minor, currency) {
        (Some(amount), Some(currency)) => layout::money(amount, currency),
        _ => layout::none(),
    }
}

/// Every money section, in the page's order.
pub fn sections(money: &TenantMoney, tenant_id: &str, point: Point) -> Markup {
    let note = match point {
        Point::Now => None,
        Point::Instant(_) => Some(
            "Documents Stripe created up to the instant, with their status today \
             (these read models keep no history).",
        ),
        Point::Position(_) => Some("Today's rows (these read models keep no history)."),
    };
    let all = |page: &str| format!("/console/{page}?tenant_id={}", encode(tenant_id));
    markup! {
        (entitlement_section(money.entitlement.as_ref()))
        (balance_section(&money.balances, point))
        section aria-labelledby="invoices-heading" {
            h2 #invoices-heading { "Invoices" }
            @if let Some(note) = note { p.note { (note) } }
            (invoice_table(&money.invoices.rows, false))
            (cut_note(money.invoices.cut, &all("invoices")))
        }
        section aria-labelledby="payments-heading" {
            h2 #payments-heading { "Payments" }
            @if let Some(note) = note { p.note { (note) } }
            (payment_table(&money.payments.rows, false))
            (cut_note(money.payments.cut, &all("payments")))
        }
        (refund_section("refunds", "Refunds", &money.refunds))
        (refund_section("disputes", "Disputes", &money.disputes))
        (credit_note_section(&money.credit_notes))
    }
}

fn cut_note(cut: bool, href: &str) -> Markup {
    markup! {
        @if cut {
            p { "The first " (MONEY_ROWS_SHOWN_MAX) " are shown; " a href=(href) { "all of them" } "." }
        }
    }
}

fn entitlement_section(entitlement: Option<&EntitlementRow>) -> Markup {
    markup! {
        section aria-labelledby="entitlement-heading" {
            h2 #entitlement-heading { "Entitlements (now)" }
            @match entitlement {
                None => p { "None: no plans file is loaded (LEDGER_PLANS_FILE), or the tenant has no subscription." },
                Some(e) => dl.facts {
                    dt { "Plan" } dd { (layout::maybe_text(e.plan.as_deref())) }
                    dt { "Access" } dd { (layout::status(&e.access)) }
                    dt { "Reason" } dd { code { (e.reason) } }
                    dt { "Grace until" } dd { (layout::maybe_time(e.grace_until)) }
                    dt { "Features" } dd { @if e.features.is_empty() { (layout::none()) } @else { (e.features.join(", ")) } }
                    dt { "Last changed by" } dd { (layout::event_link(&e.last_event_id)) }
                }
            }
        }
    }
}

fn balance_section(balances: &[Balance], point: Point) -> Markup {
    let heading = match point {
        Point::Now => "Balance per currency".to_owned(),
        Point::Instant(t) => format!(
            "Balance per currency as of {}",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        Point::Position(p) => format!("Balance per currency at log position {p}"),
    };
    markup! {
        section aria-labelledby="balance-heading" {
            h2 #balance-heading { (heading) }
            @if balances.is_empty() { p { "No money in any currency." } } @else {
                table.balance {
                    thead { tr { th scope="col" { "Currency" }
                        @for label in ["Invoiced", "Paid", "Refunded", "Disputed", "Won back", "Credited", "Outstanding"] {
                            th scope="col" class="num" { (label) }
                        } } }
                    tbody { @for b in balances { tr {
                        th scope="row" { (b.currency.to_ascii_uppercase()) }
                        @for value in [b.invoiced, b.paid, b.refunded, b.disputed, b.won_back, b.credited, b.outstanding] {
                            td.num { (layout::money(value, &b.currency)) }
                        }
                    } } }
                }
            }
        }
    }
}

/// The invoices table (also the console's invoices page; `with_tenant` adds the tenant column).
pub fn invoice_table(invoices: &[InvoiceView], with_tenant: bool) -> Markup {
    markup! {
        @if invoices.is_empty() { p { "None." } } @else {
            table.invoices {
                thead { tr {
                    th scope="col" { "Invoice" }
                    @if with_tenant { th scope="col" { "Tenant" } }
                    th scope="col" { "Customer" } th scope="col" { "Status" }
                    th scope="col" class="num" { "Total" } th scope="col" class="num" { "Paid" }
                    th scope="col" class="num" { "Remaining" } th scope="col" { "Created" }
                    th scope="col" { "Finalized" } th scope="col" { "Last event" }
                } }
                tbody { @for i in invoices { tr {
                    td { (layout::maybe_text(i.number.as_deref())) br;
                        a href={ "/api/billing/invoices/" (encode(&i.id)) } { code { (i.id) } } }
                    @if with_tenant { td { @match &i.tenant_id { Some(t) => (layout::tenant_link(t)), None => (layout::none()) } } }
                    td { (layout::maybe_text(i.customer_id.as_deref())) }
                    td { (layout::status(&i.status)) }
                    td.num { (amount(i.total, i.currency.as_deref())) }
                    td.num { (amount(i.amount_paid, i.currency.as_deref())) }
                    td.num { (amount(i.amount_remaining, i.currency.as_deref())) }
                    td { (layout::time(i.created_at)) }
                    td { (layout::maybe_time(i.finalized_at)) }
                    td { (layout::event_link(&i.last_event_id)) }
                } } }
            }
        }
    }
}

/// The payments table (also the console's payments page).
pub fn payment_table(payments: &[PaymentView], with_tenant: bool) -> Markup {
    markup! {
        @if payments.is_empty() { p { "None." } } @else {
            table.payments {
                thead { tr {
                    th scope="col" { "Payment" }
                    @if with_tenant { th scope="col" { "Tenant" } }
                    th scope="col" { "Kind" } th scope="col" { "Status" }
                    th scope="col" class="num" { "Amount" } th scope="col" class="num" { "Refunded" }
                    th scope="col" { "Invoice" } th scope="col" { "Failure" }
                    th scope="col" { "Created" } th scope="col" { "Last event" }
                } }
                tbody { @for p in payments { tr {
                    td { code { (p.id) } }
                    @if with_tenant { td { @match &p.tenant_id { Some(t) => (layout::tenant_link(t)), None => (layout::none()) } } }
                    td { (p.kind) }
                    td { (layout::status(&p.status)) }
                    td.num { (amount(p.amount, p.currency.as_deref())) }
                    td.num { (amount(p.amount_refunded, p.currency.as_deref())) }
                    td { @match &p.invoice_id {
                        Some(id) => a href={ "/api/billing/invoices/" (encode(id)) } { code { (id) } },
                        None => (layout::none()),
                    } }
                    td { (layout::maybe_text(p.failure_message.as_deref().or(p.failure_code.as_deref()))) }
                    td { (layout::time(p.created_at)) }
                    td { (layout::event_link(&p.last_event_id)) }
                } } }
            }
        }
    }
}

fn refund_section(id: &str, title: &str, list: &Shown<RefundView>) -> Markup {
    let heading = format!("{id}-heading");
    markup! {
        section aria-labelledby=(heading) {
            h2 id=(heading) { (title) }
            @if list.rows.is_empty() { p { "None." } } @else {
                table {
                    thead { tr { th scope="col" { "ID" } th scope="col" { "Status" } th scope="col" class="num" { "Amount" }
                        th scope="col" { "Reason" } th scope="col" { "Payment" } th scope="col" { "Created" } th scope="col" { "Last event" } } }
                    tbody { @for r in &list.rows { tr {
                        td { code { (r.id) } }
                        td { (layout::status(&r.status)) }
                        td.num { (amount(r.amount, r.currency.as_deref())) }
                        td { (layout::maybe_text(r.reason.as_deref())) }
                        td { (layout::maybe_text(r.payment_id.as_deref())) }
                        td { (layout::time(r.created_at)) }
                        td { (layout::event_link(&r.last_event_id)) }
                    } } }
                }
            }
            @if list.cut { p { "The first " (MONEY_ROWS_SHOWN_MAX) " are shown; the API lists them all." } }
        }
    }
}

fn credit_note_section(list: &Shown<CreditNoteView>) -> Markup {
    markup! {
        section aria-labelledby="credit-notes-heading" {
            h2 #credit-notes-heading { "Credit notes" }
            @if list.rows.is_empty() { p { "None." } } @else {
                table {
                    thead { tr { th scope="col" { "ID" } th scope="col" { "Type" } th scope="col" { "Status" } th scope="col" class="num" { "Amount" }
                        th scope="col" { "Invoice" } th scope="col" { "Created" } th scope="col" { "Last event" } } }
                    tbody { @for c in &list.rows { tr {
                        td { code { (c.id) } }
                        td { (layout::maybe_text(c.credit_note_type.as_deref())) }
                        td { (layout::status(&c.status)) }
                        td.num { (amount(c.amount, c.currency.as_deref())) }
                        td { @match &c.invoice_id {
                            Some(id) => a href={ "/api/billing/invoices/" (encode(id)) } { code { (id) } },
                            None => (layout::none()),
                        } }
                        td { (layout::time(c.created_at)) }
                        td { (layout::event_link(&c.last_event_id)) }
                    } } }
                }
            }
            @if list.cut { p { "The first " (MONEY_ROWS_SHOWN_MAX) " are shown; the API lists them all." } }
        }
    }
}
