//! `/console/tenants`: every tenant's current subscription state, searchable by ID, filtered
//! by status and plan (price), sortable by column.
//!
//! The API has no tenant list yet (`GET /api/billing/tenants` is planned), so this page reads
//! `tenant_pricing` itself, with the sort column chosen from a fixed list (never from the
//! request's text). MRR and balance columns are slots for the money read models.

use super::layout::{self, encode, Source};
use super::{html, respond, viewer, Console, PageError};
use maud::{html as markup, Markup};
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use std::sync::Arc;

/// Most tenants listed on one page.
pub const TENANTS_SHOWN_MAX: i64 = 500;

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

/// The sortable columns: the query parameter's value and the SQL it selects.
const SORTS: [(&str, &str, &str); 4] = [
    ("tenant_id", "Tenant", "tenant_id"),
    ("status", "Status", "status"),
    ("period_end", "Period end", "current_period_end"),
    ("updated", "Last change", "updated_at"),
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
}

impl Filters {
    fn sort(&self) -> (&'static str, &'static str) {
        let (name, _, column) = SORTS
            .iter()
            .find(|(name, _, _)| *name == self.sort)
            .unwrap_or(&SORTS[0]);
        (name, column)
    }

    fn descending(&self) -> bool {
        self.dir == "desc"
    }

    fn nonempty(text: &str) -> Option<&str> {
        Some(text.trim()).filter(|t| !t.is_empty())
    }
}

/// The tenants matching `filters`, at most [`TENANTS_SHOWN_MAX`] + 1 (one more tells that the
/// list was cut).
pub async fn list(console: &Console, filters: &Filters) -> Result<Vec<TenantRow>, PageError> {
    let (_, column) = filters.sort();
    let direction = if filters.descending() { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT tenant_id, status, price_id, quantity, current_period_end, updated_at,
                last_event_id
         FROM tenant_pricing
         WHERE ($1::text IS NULL OR strpos(lower(tenant_id), lower($1)) > 0)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR price_id = $3)
         ORDER BY {column} {direction} NULLS LAST, tenant_id LIMIT $4"
    );
    let client = console.state.pool.get().await?;
    let statement = client.prepare_cached(&sql).await?;
    let rows = client
        .query(
            &statement,
            &[
                &Filters::nonempty(&filters.q),
                &Filters::nonempty(&filters.status),
                &Filters::nonempty(&filters.plan),
                &(TENANTS_SHOWN_MAX + 1),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TenantRow {
            tenant_id: row.get(0),
            status: row.get(1),
            price_id: row.get(2),
            quantity: row.get(3),
            current_period_end: row.get(4),
            updated_at: row.get(5),
            last_event_id: row.get(6),
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
    let mut rows = list(console, &filters).await?;
    let cut = rows.len() as i64 > TENANTS_SHOWN_MAX;
    rows.truncate(TENANTS_SHOWN_MAX as usize);
    let body = markup! {
        (filter_form(&filters))
        section {
            p role="status" {
                @if cut { "The first " (TENANTS_SHOWN_MAX) " matching tenants; narrow the search to see others." }
                @else { (rows.len()) " tenants." }
            }
            (table(&filters, &rows))
        }
    };
    // TODO(issue 13): the tenant list route, once merged, is this page's source:
    // Source::new("this list", format!("/api/billing/tenants?status={}&plan={}", ...)).
    let sources: [Source; 0] = [];
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
                // TODO(money, issue 12): MRR per currency from the revenue read model.
                th scope="col" class="num" { "MRR" }
                // TODO(money, issue 12): outstanding balance per currency.
                th scope="col" class="num" { "Balance" }
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
                        td.num.todo { "not yet available" }
                        td.num.todo { "not yet available" }
                        td { (layout::time(row.updated_at)) " " (layout::event_link(&row.last_event_id)) }
                    }
                }
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
        "/console/tenants?q={}&status={}&plan={}&sort={name}&dir={next_dir}",
        encode(&filters.q),
        encode(&filters.status),
        encode(&filters.plan)
    );
    markup! {
        th scope="col" aria-sort=(aria) {
            a href=(href) {
                (label)
                @if active { @if filters.descending() { " ↓" } @else { " ↑" } }
            }
        }
    }
}
