//! `/console/tenants`: every tenant's current subscription state, searchable by ID, filtered
//! by status and plan (price), sortable by column.
//!
//! `GET /api/billing/tenants` lists tenants by ID with status, price and plan filters but
//! neither searches nor sorts, so this page reads `tenant_pricing` itself, with the sort column
//! chosen from a fixed list (never from the request's text), and links to that route for the
//! same filters. MRR (each tenant's MRR after its last movement, from the revenue fold of
//! [`super::figures`]) and balance (outstanding: `amount_remaining` of open invoices) are shown
//! per currency; sorting by either orders by the amount in one currency (the `currency` field,
//! by default the first currency in code order that any listed tenant has), tenants without
//! that currency last. Amounts of two currencies are never added or compared.

use super::layout::{self, encode, Source};
use super::{html, respond, viewer, Console, PageError};
use crate::store::read_models::queries::{self, TenantOrder, TenantSearch};
use maud::{html as markup, Markup};
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most tenants listed on one page.
pub const TENANTS_SHOWN_MAX: i64 = 500;
/// Most tenants read to sort by MRR or balance (sorted in memory, then cut to the page).
pub const TENANTS_SORTED_MAX: i64 = 100_000;

/// Stripe's subscription statuses, for the filter.
const STATUSES: [&str; 8] = [
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
];

/// The sortable columns: the query parameter's value, its header, and the stored order it
/// asks for (`mrr` and `balance` sort in memory by one currency's amount; the store then
/// orders by ID).
const SORTS: [(&str, &str, TenantOrder); 6] = [
    ("tenant_id", "Tenant", TenantOrder::TenantId),
    ("status", "Status", TenantOrder::Status),
    ("period_end", "Period end", TenantOrder::CurrentPeriodEnd),
    ("mrr", "MRR", TenantOrder::TenantId),
    ("balance", "Balance", TenantOrder::TenantId),
    ("updated", "Last change", TenantOrder::UpdatedAt),
];

/// The page's query parameters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Filters {
    /// Part of the tenant ID, any case.
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub status: String,
    /// A price ID (the plan, until plans come from `LEDGER_PLANS_FILE`).
    #[serde(default)]
    pub plan: String,
    #[serde(default)]
    pub sort: String,
    /// `asc` or `desc`.
    #[serde(default)]
    pub dir: String,
    /// The currency whose amounts the MRR and balance sorts compare (ISO code, any case).
    #[serde(default)]
    pub currency: String,
}

/// One listed tenant.
pub struct TenantRow {
    pub tenant_id: String,
    pub status: Option<String>,
    pub price_id: Option<String>,
    pub quantity: Option<i64>,
    pub current_period_end: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub last_event_id: String,
    /// MRR now per currency, minor units (absent: never had any).
    pub mrr: BTreeMap<String, i64>,
    /// Outstanding per currency, minor units (absent: no open invoice).
    pub balance: BTreeMap<String, i64>,
}

impl Filters {
    fn sort(&self) -> (&'static str, TenantOrder) {
        let (name, _, order) = SORTS
            .iter()
            .find(|(name, _, _)| *name == self.sort)
            .unwrap_or(&SORTS[0]);
        (name, *order)
    }

    fn descending(&self) -> bool {
        self.dir == "desc"
    }

    fn nonempty(text: &str) -> Option<&str> {
        Some(text.trim()).filter(|t| !t.is_empty())
    }

    /// The currency the money sorts compare: the one asked for, else the first in code order
    /// that any of `rows` has.
    fn sort_currency(&self, rows: &[TenantRow]) -> Option<String> {
        if let Some(code) = Filters::nonempty(&self.currency) {
            return Some(code.to_ascii_lowercase());
        }
        rows.iter()
            .flat_map(|r| r.mrr.keys().chain(r.balance.keys()))
            .min()
            .cloned()
    }
}

/// The tenants matching `filters` with their MRR and balance, sorted, at most
/// [`TENANTS_SHOWN_MAX`] + 1 (one more tells that the list was cut); and the log position
/// the MRR reflects.
pub async fn list(
    console: &Console,
    filters: &Filters,
) -> Result<(Vec<TenantRow>, i64), PageError> {
    let by_money = matches!(filters.sort().0, "mrr" | "balance");
    let limit = if by_money {
        TENANTS_SORTED_MAX
    } else {
        TENANTS_SHOWN_MAX + 1
    };
    let mut rows = select(console, filters, limit).await?;
    let revenue = console.revenue.get(&console.state).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.tenant_id.clone()).collect();
    let mut balance = super::figures::outstanding(&console.state, Some(&ids)).await?;
    for row in &mut rows {
        row.mrr = revenue.mrr.get(&row.tenant_id).cloned().unwrap_or_default();
        row.balance = balance.remove(&row.tenant_id).unwrap_or_default();
    }
    if by_money {
        let currency = filters.sort_currency(&rows);
        let amount = |row: &TenantRow| {
            let figures = if filters.sort().0 == "mrr" {
                &row.mrr
            } else {
                &row.balance
            };
            currency.as_ref().and_then(|c| figures.get(c)).copied()
        };
        // Tenants without an amount in the currency go last in either direction.
        rows.sort_by(|a, b| match (amount(a), amount(b)) {
            (Some(x), Some(y)) if filters.descending() => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        rows.truncate(TENANTS_SHOWN_MAX as usize + 1);
    }
    Ok((rows, revenue.head))
}

async fn select(
    console: &Console,
    filters: &Filters,
    limit: i64,
) -> Result<Vec<TenantRow>, PageError> {
    let search = TenantSearch {
        contains: Filters::nonempty(&filters.q),
        status: Filters::nonempty(&filters.status),
        price_id: Filters::nonempty(&filters.plan),
        order: filters.sort().1,
        descending: filters.descending(),
        limit,
    };
    let rows = queries::tenants(&console.state.pool, &search).await?;
    Ok(rows
        .into_iter()
        .map(|row| TenantRow {
            tenant_id: row.tenant_id,
            status: row.status,
            price_id: row.price_id,
            quantity: row.quantity,
            current_period_end: row.current_period_end,
            updated_at: row.updated_at,
            last_event_id: row.last_event_id,
            mrr: BTreeMap::new(),
            balance: BTreeMap::new(),
        })
        .collect())
}

/// `GET /console/tenants`.
#[handler]
pub async fn page(
    request: &Request,
    console: Data<&Arc<Console>>,
    Query(filters): Query<Filters>,
) -> Response {
    respond(render(request, &console, filters).await)
}

async fn render(
    request: &Request,
    console: &Console,
    filters: Filters,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    let (mut rows, mrr_head) = list(console, &filters).await?;
    let cut = rows.len() as i64 > TENANTS_SHOWN_MAX;
    rows.truncate(TENANTS_SHOWN_MAX as usize);
    let body = markup! {
        (filter_form(&filters))
        section {
            p role="status" {
                @if cut { "The first " (TENANTS_SHOWN_MAX) " matching tenants; narrow the search to see others." }
                @else { (rows.len()) " tenants." }
                " MRR as folded from the log up to position " (mrr_head)
                " (folded again once the log has moved, at most every "
                (super::figures::REVENUE_FOLD_MAX_AGE_SECS) " s); balance: what remains on open invoices now."
            }
            (table(&filters, &rows))
        }
    };
    let sources = [
        Source::new(
            "these tenants by ID, without search or sort (CSV with Accept: text/csv)",
            format!(
                "/api/billing/tenants?status={}&price_id={}",
                encode(filters.status.trim()),
                encode(filters.plan.trim())
            ),
        ),
        Source::new(
            "MRR (revenue per month; per tenant with tenant_id)",
            "/api/billing/revenue?from=2020-01&to=2029-12".to_owned(),
        ),
        Source::new(
            "balances (outstanding: open invoices)",
            "/api/billing/invoices?status=open".to_owned(),
        ),
    ];
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, "Tenants", &sources, body),
    ))
}

fn filter_form(filters: &Filters) -> Markup {
    markup! {
        form.filters method="get" action="/console/tenants" role="search" {
            label { "Tenant ID contains" input type="search" name="q" value=(filters.q); }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for status in STATUSES {
                        option value=(status) selected[filters.status == status] { (status) }
                    }
                }
            }
            label { "Plan (price ID)" input type="text" name="plan" value=(filters.plan); }
            label { "Currency to sort MRR and balance by" input type="text" name="currency" size="5" value=(filters.currency); }
            input type="hidden" name="sort" value=(filters.sort().0);
            input type="hidden" name="dir" value=(if filters.descending() { "desc" } else { "asc" });
            button type="submit" { "Filter" }
        }
    }
}

fn table(filters: &Filters, rows: &[TenantRow]) -> Markup {
    markup! {
        table {
            caption.skip { "Tenants" }
            thead { tr {
                (sort_header(filters, "tenant_id"))
                (sort_header(filters, "status"))
                th scope="col" { "Plan" }
                (sort_header(filters, "period_end"))
                (sort_header(filters, "mrr"))
                (sort_header(filters, "balance"))
                (sort_header(filters, "updated"))
            } }
            tbody {
                @for row in rows {
                    tr {
                        td { (layout::tenant_link(&row.tenant_id)) }
                        td { @match &row.status { Some(s) => (layout::status(s)), None => (layout::none()) } }
                        td {
                            (layout::maybe_text(row.price_id.as_deref()))
                            @if let Some(q) = row.quantity { " × " (q) }
                        }
                        td { (layout::maybe_time(row.current_period_end)) }
                        td.num { (per_currency(&row.mrr)) }
                        td.num { (per_currency(&row.balance)) }
                        td { (layout::time(row.updated_at)) " " (layout::event_link(&row.last_event_id)) }
                    }
                }
            }
        }
    }
}

/// Amounts per currency, one a line, or an em dash.
fn per_currency(amounts: &BTreeMap<String, i64>) -> Markup {
    markup! {
        @if amounts.is_empty() { (layout::none()) } @else {
            @for (i, (currency, amount)) in amounts.iter().enumerate() {
                @if i > 0 { br; }
                (layout::money(*amount, currency))
            }
        }
    }
}

/// A column header that sorts by its column, toggling the direction when it already does.
fn sort_header(filters: &Filters, name: &'static str) -> Markup {
    let (current, _) = filters.sort();
    let label = SORTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(name, |s| s.1);
    let active = current == name;
    let next_dir = if active && !filters.descending() {
        "desc"
    } else {
        "asc"
    };
    let aria = match (active, filters.descending()) {
        (false, _) => "none",
        (true, false) => "ascending",
        (true, true) => "descending",
    };
    let href = format!(
        "/console/tenants?q={}&status={}&plan={}&currency={}&sort={name}&dir={next_dir}",
        encode(&filters.q),
        encode(&filters.status),
        encode(&filters.plan),
        encode(&filters.currency)
    );
    let class = if matches!(name, "mrr" | "balance") {
        "num"
    } else {
        ""
    };
    markup! {
        th scope="col" class=(class) aria-sort=(aria) {
            a href=(href) {
                (label)
                @if active { @if filters.descending() { " ↓" } @else { " ↑" } }
            }
        }
    }
}
