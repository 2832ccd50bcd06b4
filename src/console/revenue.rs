//! `/console/revenue`: MRR per month and currency with its movements (new, reactivation,
//! expansion, contraction, churn), as a chart per currency ([`super::chart`], SVG rendered
//! here) and a table; a month's drill-down lists the tenants that moved and the events that
//! moved them; `/console/revenue.csv` downloads the table.
//!
//! The figures are `GET /api/billing/revenue`'s and `/revenue/movements`'s: the same fold
//! ([`crate::store::revenue::revenue`]) and the same rows. Every tenant's fold is shared with the
//! tenants page until the log moves ([`super::figures::RevenueCache`]); one tenant's is
//! folded from its own events per request.

use super::layout::{self, encode, Source};
use super::{html, respond, viewer, Console, PageError};
use crate::http::revenue::{MovementView, RevenueRow, REVENUE_MONTHS_MAX};
use chrono::{Datelike, Utc};
use maud::{html as markup, Markup};
use poem::http::{header, StatusCode};
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use projections::money::revenue::{month_start, next_month, parse_month, MonthRow, Revenue};
use std::sync::Arc;

/// Months shown when the form gives none: this month and the eleven before it.
pub const REVENUE_MONTHS_DEFAULT: u32 = 12;

/// The movement kinds in the order they are stacked and listed, with their labels.
pub const KINDS: [(&str, &str); 5] = [
    ("new", "New"),
    ("reactivation", "Reactivation"),
    ("expansion", "Expansion"),
    ("contraction", "Contraction"),
    ("churn", "Churn"),
];

/// The form's fields, as typed.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RevenueQuery {
    /// `YYYY-MM`, the first month.
    #[serde(default)]
    pub from: String,
    /// `YYYY-MM`, the last month (inclusive).
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub tenant_id: String,
    /// `YYYY-MM`: the month whose movements are listed.
    #[serde(default)]
    pub month: String,
}

/// What the page shows, parsed.
#[derive(Debug, Clone)]
pub struct Selection {
    pub first: (i64, u32),
    pub last: (i64, u32),
    pub currency: Option<String>,
    pub tenant_id: Option<String>,
    pub month: Option<(i64, u32)>,
}

fn text((year, month): (i64, u32)) -> String {
    format!("{year:04}-{month:02}")
}

fn nonempty(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

impl RevenueQuery {
    /// The selection; 400 for a malformed month, `from` after `to`, or more than
    /// [`REVENUE_MONTHS_MAX`] months (the API's limits).
    pub fn select(&self) -> Result<Selection, PageError> {
        let month = |typed: &str, name: &str| match nonempty(typed) {
            None => Ok(None),
            Some(t) => parse_month(&t).map(Some).ok_or_else(|| {
                PageError::BadRequest(format!("{name} must be a month such as 2025-01"))
            }),
        };
        let today = Utc::now();
        let last = month(&self.to, "to")?.unwrap_or((i64::from(today.year()), today.month()));
        let index = last.0 * 12 + i64::from(last.1) - 1 - i64::from(REVENUE_MONTHS_DEFAULT - 1);
        let default_first = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
        let first = month(&self.from, "from")?.unwrap_or(default_first);
        if first > last {
            return Err(PageError::BadRequest("from must not be after to".into()));
        }
        let months = (last.0 - first.0) * 12 + i64::from(last.1) - i64::from(first.1) + 1;
        if months as usize > REVENUE_MONTHS_MAX {
            return Err(PageError::BadRequest(format!(
                "at most {REVENUE_MONTHS_MAX} months at once"
            )));
        }
        Ok(Selection {
            first,
            last,
            currency: nonempty(&self.currency).map(|c| c.to_ascii_lowercase()),
            tenant_id: nonempty(&self.tenant_id),
            month: month(&self.month, "month")?,
        })
    }
}

impl Selection {
    /// The months shown, in order.
    pub fn months(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut month = self.first;
        while month <= self.last {
            out.push(text(month));
            month = next_month(month);
        }
        out
    }

    /// The filters as a query string (`from`, `to`, `currency`, `tenant_id`).
    fn query(&self) -> String {
        let mut query = format!("from={}&to={}", text(self.first), text(self.last));
        if let Some(c) = &self.currency {
            query.push_str(&format!("&currency={}", encode(c)));
        }
        if let Some(t) = &self.tenant_id {
            query.push_str(&format!("&tenant_id={}", encode(t)));
        }
        query
    }
}

/// The rows of the selection (per month and currency) and the drill-down month's movements.
pub struct Figures {
    pub rows: Vec<RevenueRow>,
    pub movements: Option<Vec<MovementView>>,
    /// The log position a shared fold reflects (`None`: folded for this request).
    pub head: Option<i64>,
}

/// The figures of `selection` from `revenue`, given its month `rows`.
fn figures(revenue: &Revenue, selection: &Selection, rows: Vec<MonthRow>) -> Figures {
    let (currency, tenant) = (
        selection.currency.as_deref(),
        selection.tenant_id.as_deref(),
    );
    let movements = selection.month.map(|month| {
        let (start, end) = (month_start(month), month_start(next_month(month)));
        revenue
            .movements(start, end)
            .into_iter()
            .filter(|m| currency.is_none_or(|c| c == m.currency))
            .filter(|m| tenant.is_none_or(|t| t == m.tenant_id))
            .map(MovementView::from)
            .collect()
    });
    Figures {
        rows: rows.into_iter().map(Into::into).collect(),
        movements,
        head: None,
    }
}

/// The selection's figures: every tenant's from the shared fold, one tenant's from its events.
pub async fn load(console: &Console, selection: &Selection) -> Result<Figures, PageError> {
    match &selection.tenant_id {
        None => {
            let now = console.revenue.get(&console.state).await?;
            let currency = selection.currency.as_deref();
            let rows = now.months(selection.first, selection.last, currency);
            Ok(Figures {
                head: Some(now.head),
                ..figures(&now.revenue, selection, rows.as_ref().clone())
            })
        }
        Some(tenant) => {
            let state = &console.state;
            let pool = state.read_pool().await?;
            let revenue =
                crate::store::revenue::revenue(&pool, Some(tenant), state.config.livemode).await?;
            let currency = selection.currency.as_deref();
            let rows = revenue.months(selection.first, selection.last, currency, Some(tenant));
            Ok(figures(&revenue, selection, rows))
        }
    }
}

/// `GET /console/revenue`.
#[handler]
pub async fn page(
    request: &Request,
    console: Data<&Arc<Console>>,
    Query(query): Query<RevenueQuery>,
) -> Response {
    respond(render(request, &console, query).await)
}

async fn render(
    request: &Request,
    console: &Console,
    query: RevenueQuery,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    let selection = query.select()?;
    let figures = load(console, &selection).await?;
    let months = selection.months();
    // The rows come month by month, each month's currencies in code order.
    let currencies: std::collections::BTreeSet<&str> =
        figures.rows.iter().map(|r| r.currency.as_str()).collect();
    let body = markup! {
        (form(&selection))
        p { a href={ "/console/revenue.csv?" (selection.query()) } download { "Download this table as CSV" }
            " (minor units, one row per month and currency)."
            @if let Some(head) = figures.head {
                " Folded from the log up to position " (head) " (folded again once the log has moved, at most every "
                (super::figures::REVENUE_FOLD_MAX_AGE_SECS) " s)."
            } }
        @if currencies.is_empty() { section { p { "No MRR in any currency for this selection." } } }
        @for (index, currency) in currencies.iter().enumerate() {
            @let rows: Vec<&RevenueRow> = figures.rows.iter().filter(|r| r.currency == *currency).collect();
            section aria-labelledby={ "mrr-" (index) } {
                h2 id={ "mrr-" (index) } { "MRR in " (currency.to_ascii_uppercase()) }
                (super::chart::mrr_chart(index, currency, &rows))
                (table(&selection, currency, &rows))
            }
        }
        @if let (Some(month), Some(movements)) = (selection.month, &figures.movements) {
            (movements_section(month, movements))
        }
    };
    let mut sources = vec![Source::new(
        "these months",
        format!("/api/billing/revenue?{}", selection.query()),
    )];
    if let Some(month) = selection.month {
        let mut href = format!("/api/billing/revenue/movements?month={}", text(month));
        if let Some(c) = &selection.currency {
            href.push_str(&format!("&currency={}", encode(c)));
        }
        if let Some(t) = &selection.tenant_id {
            href.push_str(&format!("&tenant_id={}", encode(t)));
        }
        sources.push(Source::new("this month's movements", href));
    }
    let title = format!("Revenue, {} to {}", months[0], months[months.len() - 1]);
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, &title, &sources, body),
    ))
}

fn form(selection: &Selection) -> Markup {
    markup! {
        form.filters method="get" action="/console/revenue" role="search" {
            label { "From (month)" input type="month" name="from" value=(text(selection.first)); }
            label { "To (month)" input type="month" name="to" value=(text(selection.last)); }
            label { "Currency (ISO code)" input type="text" name="currency" size="5"
                value=(selection.currency.as_deref().unwrap_or_default()); }
            label { "Tenant ID" input type="text" name="tenant_id"
                value=(selection.tenant_id.as_deref().unwrap_or_default()); }
            button type="submit" { "Show" }
        }
    }
}

fn table(selection: &Selection, currency: &str, rows: &[&RevenueRow]) -> Markup {
    let mut drill = selection.clone();
    drill.currency = Some(currency.to_owned());
    markup! {
        table.revenue {
            caption { "MRR per month in " (currency.to_ascii_uppercase()) " (closing = opening + new + reactivation + expansion − contraction − churn)" }
            thead { tr {
                th scope="col" { "Month" } th scope="col" class="num" { "Opening" }
                @for (_, label) in KINDS { th scope="col" class="num" { (label) } }
                th scope="col" class="num" { "Closing" } th scope="col" class="num" { "Subscribers" }
                th scope="col" { "Who moved" }
            } }
            tbody { @for r in rows { tr {
                th scope="row" { (r.month) }
                td.num { (layout::money(r.opening_mrr, currency)) }
                td.num { (layout::money(r.new, currency)) }
                td.num { (layout::money(r.reactivation, currency)) }
                td.num { (layout::money(r.expansion, currency)) }
                td.num { @if r.contraction > 0 { "−" } (layout::money(r.contraction, currency)) }
                td.num { @if r.churn > 0 { "−" } (layout::money(r.churn, currency)) }
                td.num { (layout::money(r.closing_mrr, currency)) }
                td.num { (r.subscribers) }
                td { a href={ "/console/revenue?" (drill.query()) "&month=" (r.month) "#movements-heading" } {
                    "Movements" span.skip { " of " (r.month) } } }
            } } }
        }
    }
}

fn movements_section(month: (i64, u32), movements: &[MovementView]) -> Markup {
    markup! {
        section aria-labelledby="movements-heading" {
            h2 #movements-heading { "Movements in " (text(month)) }
            @if movements.is_empty() { p { "No tenant's MRR moved that month." } } @else {
                table.movements {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Tenant" } th scope="col" { "Movement" }
                        th scope="col" class="num" { "Amount" } th scope="col" class="num" { "MRR before" }
                        th scope="col" class="num" { "MRR after" } th scope="col" { "Event" } } }
                    tbody { @for m in movements { tr {
                        td { (layout::time(m.at)) }
                        td { (layout::tenant_link(&m.tenant_id)) }
                        td { (m.kind) }
                        td.num { (layout::money(m.amount, &m.currency)) }
                        td.num { (layout::money(m.mrr_before, &m.currency)) }
                        td.num { (layout::money(m.mrr_after, &m.currency)) }
                        td { (layout::event_link(&m.event_id)) }
                    } } }
                }
            }
        }
    }
}

/// `GET /console/revenue.csv`: the table of the same selection as CSV (RFC 4180), amounts in
/// minor units.
#[handler]
pub async fn csv(
    request: &Request,
    console: Data<&Arc<Console>>,
    Query(query): Query<RevenueQuery>,
) -> Response {
    respond(csv_response(request, &console, query).await)
}

async fn csv_response(
    request: &Request,
    console: &Console,
    query: RevenueQuery,
) -> Result<Response, PageError> {
    viewer(request, console)?;
    let selection = query.select()?;
    let figures = load(console, &selection).await?;
    let mut out = String::from(
        "month,currency,opening_mrr,new,reactivation,expansion,contraction,churn,closing_mrr,subscribers\r\n",
    );
    for r in &figures.rows {
        crate::http::csv::field(&mut out, &r.month);
        out.push(',');
        crate::http::csv::field(&mut out, &r.currency);
        for n in [
            r.opening_mrr,
            r.new,
            r.reactivation,
            r.expansion,
            r.contraction,
            r.churn,
            r.closing_mrr,
            r.subscribers,
        ] {
            out.push_str(&format!(",{n}"));
        }
        out.push_str("\r\n");
    }
    let file = format!(
        "attachment; filename=\"revenue-{}-{}.csv\"",
        text(selection.first),
        text(selection.last)
    );
    Ok(Response::builder()
        .content_type("text/csv; charset=utf-8")
        .header(header::CONTENT_DISPOSITION, file)
        .body(out))
}
