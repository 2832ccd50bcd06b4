//! The aging of open invoices: `amount_remaining` of `open` invoices per currency, by days
//! past due (not yet due, 0-30, 31-60, 61-90, over 90), amounts summed only within a currency.
//!
//! The rule: an invoice is due at Stripe's `due_date` when it has one (invoices sent for
//! payment, `collection_method=send_invoice`), read from the body of the event that last
//! changed it (the invoices read model does not keep it); otherwise at `finalized_at` (a
//! charged automatically invoice is due when finalized), or at `created_at` if it has none.
//! Days past due are whole days from that instant to now (UTC): 0-30 means under 31 days.

use super::layout;
use super::{Console, PageError};
use crate::store::money::receivables;
use chrono::{DateTime, Utc};
use maud::{html as markup, Markup};
use projections::{Currency, TenantId};
use std::collections::BTreeMap;

/// The buckets' labels, by index: not yet due, then days past due.
pub const BUCKETS: [&str; 5] = [
    "Not yet due",
    "0-30 days",
    "31-60 days",
    "61-90 days",
    "Over 90 days",
];

/// The buckets' names in the page's markup (`data-bucket`), then the total's.
const BUCKET_NAMES: [&str; 6] = ["not-due", "0-30", "31-60", "61-90", "over-90", "total"];

/// One bucket: how many open invoices and how much remains on them (minor units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub invoices: i64,
    pub remaining: i64,
}

/// The aging of one currency.
#[derive(Debug, Clone, Default)]
pub struct CurrencyAging {
    pub buckets: [Bucket; 5],
    /// Invoices aged by their `due_date` (the others by finalization or creation).
    pub by_due_date: i64,
}

/// Per currency, in code order.
pub type Aging = BTreeMap<String, CurrencyAging>;

/// The aging of open invoices, optionally of one tenant and one currency, as of `now`.
pub async fn load(
    console: &Console,
    tenant_id: Option<&TenantId>,
    currency: Option<Currency>,
    now: DateTime<Utc>,
) -> Result<Aging, PageError> {
    let pool = console.state.read_pool().await?;
    let cells = receivables::aging(&pool, tenant_id, currency, now).await?;
    let mut aging = Aging::new();
    for cell in cells {
        let entry = aging.entry(cell.currency).or_default();
        entry.buckets[cell.bucket] = Bucket {
            invoices: cell.invoices,
            remaining: cell.remaining,
        };
        entry.by_due_date += cell.by_due_date;
    }
    Ok(aging)
}

/// The aging table: a row per currency, a column per bucket and the currency's total.
pub fn section(aging: &Aging) -> Markup {
    markup! {
        section aria-labelledby="aging-heading" {
            h2 #aging-heading { "Aging of open invoices" }
            p { "What remains on open invoices, by days past due. Due is Stripe's "
                code { "due_date" } " when the invoice has one, else when it was finalized (else created). "
                "Amounts are summed within a currency only." }
            @if aging.is_empty() { p { "No open invoice." } } @else {
                table.aging {
                    thead { tr {
                        th scope="col" { "Currency" }
                        @for label in BUCKETS { th scope="col" class="num" { (label) } }
                        th scope="col" class="num" { "Total" }
                    } }
                    tbody { @for (currency, row) in aging {
                        @let total = row.buckets.iter().fold(Bucket::default(), |sum, b| Bucket {
                            invoices: sum.invoices + b.invoices,
                            remaining: sum.remaining.saturating_add(b.remaining),
                        });
                        tr {
                            th scope="row" { (currency.to_ascii_uppercase())
                                br; small { (row.by_due_date) " by due date" } }
                            @for (index, bucket) in row.buckets.iter().chain(std::iter::once(&total)).enumerate() {
                                td.num data-bucket=(BUCKET_NAMES[index]) { (layout::money(bucket.remaining, currency)) br;
                                    small { (bucket.invoices) (if bucket.invoices == 1 { " invoice" } else { " invoices" }) } }
                            }
                        }
                    } }
                }
            }
        }
    }
}
