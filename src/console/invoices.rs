//! `/console/invoices`: invoices with the API's filters (status, currency, tenant, created
//! from/to), a page at a time, and above them the aging of open invoices per currency
//! ([`super::aging`], for the same tenant and currency).

use super::layout::{self, Source};
use super::lists::{self, ListFilters};
use super::{html, respond, viewer, Console, PageError};
use crate::http::money_views::InvoiceView;
use crate::store;
use maud::html as markup;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use std::sync::Arc;

/// Stripe's invoice statuses, for the filter.
const STATUSES: [&str; 5] = ["draft", "open", "paid", "uncollectible", "void"];

/// `GET /console/invoices`.
#[handler]
pub async fn page(
    request: &Request,
    console: Data<&Arc<Console>>,
    Query(typed): Query<ListFilters>,
) -> Response {
    respond(render(request, &console, typed).await)
}

async fn render(
    request: &Request,
    console: &Console,
    typed: ListFilters,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    let (filters, after) = typed.parse()?;
    let (invoices, next) =
        lists::page_of::<InvoiceView>(console, &store::money::INVOICES, &filters, after.as_ref())
            .await?;
    let aging = super::aging::load(
        console,
        filters.tenant_id.as_ref(),
        filters.currency,
        chrono::Utc::now(),
    )
    .await?;
    let body = markup! {
        (lists::form("/console/invoices", &typed, Some(&STATUSES)))
        (super::aging::section(&aging))
        section aria-labelledby="list-heading" {
            h2 #list-heading { "Invoices" }
            (super::tenant_money::invoice_table(&invoices, true))
            (lists::pager("/console/invoices", &typed, invoices.len(), next.as_deref()))
        }
    };
    let query = ListFilters::api_query(&filters);
    let mut open = store::money::Filters {
        status: Some("open".into()),
        ..filters.clone()
    };
    open.from = None;
    open.to = None;
    let sources = [
        Source::new(
            "these invoices (CSV with Accept: text/csv)",
            format!("/api/billing/invoices?{query}"),
        ),
        Source::new(
            "the open invoices the aging sums",
            format!("/api/billing/invoices?{}", ListFilters::api_query(&open)),
        ),
    ];
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, "Invoices", &sources, body),
    ))
}
