//! `/console/events/{event_id}`: one event as the API's event route gives it. The body exactly
//! as received, indented (tokens untouched, see [`super::json`]) and raw; every delivery with
//! its signature time and which configured secret matched (its position, never the secret);
//! the tenants the projection attributed it to and by which rule; any projection error.

use super::layout::{self, encode, Source};
use super::{html, json, respond, viewer, Console, PageError};
use crate::views::EventDetail;
use maud::{html as markup, Markup};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Request, Response};
use poem_openapi::param::Path as ApiPath;
use std::sync::Arc;

/// `GET /console/events/{event_id}`.
#[handler]
pub async fn page(
    request: &Request,
    console: Data<&Arc<Console>>,
    Path(event_id): Path<String>,
) -> Response {
    respond(render(request, &console, event_id).await)
}

async fn render(
    request: &Request,
    console: &Console,
    event_id: String,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    let read_slot = std::sync::Arc::new(crate::http::ReadSlot::default());
    let event = console
        .read_api()
        .get_event(viewer.auth(), Data(&read_slot), ApiPath(event_id))
        .await?
        .0;
    let body = markup! {
        (summary(&event))
        (projection(&event))
        (deliveries(&event))
        section aria-labelledby="body-heading" {
            h2 #body-heading { "Body as received" }
            p { (event.body.len()) " bytes, indented below; the raw view shows them unchanged." }
            pre.body tabindex="0" aria-label="Body, indented" { code { (json::pretty(&event.body)) } }
            details {
                summary { "Raw body (the signed bytes)" }
                pre.body tabindex="0" aria-label="Raw body" { code { (event.body) } }
            }
        }
    };
    let sources = [Source::new(
        "this event, its deliveries and tenants",
        format!("/api/billing/events/{}", encode(&event.summary.event_id)),
    )];
    let title = format!("Event {}", event.summary.event_id);
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, &title, &sources, body),
    ))
}

fn summary(event: &EventDetail) -> Markup {
    let s = &event.summary;
    markup! {
        section aria-labelledby="summary-heading" {
            h2 #summary-heading { "Event" }
            dl.facts {
                dt { "Type" } dd { code { (s.event_type) } }
                dt { "Created (Stripe)" } dd { (layout::time(s.created)) }
                dt { "Received" } dd { (layout::time(s.received_at)) }
                dt { "Log position" } dd { (s.position) }
                dt { "Object" } dd { (layout::maybe_text(s.object_type.as_deref())) " " code { (layout::maybe_text(s.object_id.as_deref())) } }
                dt { "API version" } dd { (layout::maybe_text(s.api_version.as_deref())) }
                dt { "Mode" } dd { (if s.livemode { "live" } else { "test" }) }
                dt { "Connected account" } dd { (layout::maybe_text(s.account.as_deref())) }
                dt { "Source" } dd { (s.source) @if s.source == "import" { " (backfilled, not signature-verified)" } }
                dt { "Signature time" } dd { (layout::maybe_time(event.signature_timestamp)) }
                dt { "Secret that matched" } dd { (secret(event.secret_index)) }
            }
        }
    }
}

/// Which configured secret matched, by its place in `STRIPE_WEBHOOK_SECRET` (1-based for
/// people; the API's `secret_index` is 0-based).
fn secret(index: Option<i16>) -> Markup {
    match index {
        Some(i) => markup! { "secret " (i + 1) " of " code { "STRIPE_WEBHOOK_SECRET" } },
        None => layout::none(),
    }
}

fn projection(event: &EventDetail) -> Markup {
    markup! {
        section aria-labelledby="projection-heading" {
            h2 #projection-heading { "Tenants and projection" }
            p { "Projected: " (if event.projected { "yes" } else { "not yet" }) }
            @if let Some(error) = &event.projection_error {
                p.error { "Projection error: " (error) }
            }
            @if event.tenants.is_empty() {
                p { "Touched no tenant (yet: an event whose tenant is unknown waits among the unresolved)." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Tenant" } th scope="col" { "Found by" } } }
                    tbody { @for t in &event.tenants { tr {
                        td { (layout::tenant_link(&t.tenant_id)) }
                        td { code { (t.resolved_by) } }
                    } } }
                }
            }
        }
    }
}

fn deliveries(event: &EventDetail) -> Markup {
    markup! {
        section aria-labelledby="deliveries-heading" {
            h2 #deliveries-heading { "Deliveries" }
            table {
                thead { tr { th scope="col" { "#" } th scope="col" { "Received" } th scope="col" { "Duplicate" }
                    th scope="col" { "Source" } th scope="col" { "Signature time" } th scope="col" { "Secret" }
                    th scope="col" { "Body SHA-256" } } }
                tbody { @for d in &event.deliveries { tr {
                    td.num { (d.delivery_id) }
                    td { (layout::time(d.received_at)) }
                    td { (if d.duplicate { "duplicate" } else { "first" }) }
                    td { (d.source) }
                    td { (layout::maybe_time(d.signature_timestamp)) }
                    td { (secret(d.secret_index)) }
                    td { code { (d.body_sha256) } @if d.body.is_some() { " (differs from the stored body)" } }
                } } }
            }
        }
    }
}
