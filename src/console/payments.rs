//! `/console/payments`: charges, PaymentIntents and InvoicePayments with the API's filters
//! (status, currency, tenant, created from/to), a page at a time.

use super::layout::{self, Source};
use super::lists::{self, ListFilters};
use super::{html, respond, viewer, Console, PageError};
use crate::http::money_views::PaymentView;
use crate::store;
use maud::html as markup;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use std::sync::Arc;

/// `GET /console/payments`.
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
    let (payments, next) =
        lists::page_of::<PaymentView>(console, &store::money::PAYMENTS, &filters, after.as_ref())
            .await?;
    let body = markup! {
        (lists::form("/console/payments", &typed, None))
        section aria-labelledby="list-heading" {
            h2 #list-heading { "Payments" }
            p { "Stripe's status of each object (a charge's " code { "succeeded" } ", a PaymentIntent's "
                code { "requires_payment_method" } ", …)." }
            (super::tenant_money::payment_table(&payments, true))
            (lists::pager("/console/payments", &typed, payments.len(), next.as_deref()))
        }
    };
    let sources = [Source::new(
        "these payments (CSV with Accept: text/csv)",
        format!("/api/billing/payments?{}", ListFilters::api_query(&filters)),
    )];
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, "Payments", &sources, body),
    ))
}
