//! `/console/operations` (admin): each projection's status, checkpoint and lag, the latest
//! rebuild's progress, a rebuild button (a POST form with the CSRF token), and the events
//! waiting for their tenant. Everything comes from the admin and read API's handlers.

use super::layout::{self, Source};
use super::sign_in::CsrfForm;
use super::{html, respond, see_other, viewer, Console, PageError};
use crate::http::admin::ProjectionView;
use maud::{html as markup, Markup};
use poem::http::StatusCode;
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use poem_openapi::param::Query as ApiQuery;
use std::sync::Arc;

/// Unresolved events listed.
pub const UNRESOLVED_SHOWN_MAX: u32 = 100;

/// `GET /console/operations`.
#[handler]
pub async fn page(request: &Request, console: Data<&Arc<Console>>) -> Response {
    respond(render(request, &console).await)
}

async fn render(request: &Request, console: &Console) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    viewer.require_admin()?;
    let projections = console.admin_api().projections(viewer.auth()).await?.0;
    let read_slot = std::sync::Arc::new(crate::http::ReadSlot::default());
    let unresolved = console
        .read_api()
        .unresolved(
            viewer.auth(),
            Data(&read_slot),
            ApiQuery(Some(UNRESOLVED_SHOWN_MAX)),
            ApiQuery(None),
        )
        .await?
        .0;
    let body = markup! {
        section aria-labelledby="projections-heading" {
            h2 #projections-heading { "Read models" }
            @for projection in &projections.projections { (projection_facts(projection)) }
            form method="post" action="/console/operations/rebuild" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Rebuild from the log" }
            }
            p { "A rebuild folds the whole log into fresh tables and swaps them in; webhooks keep being accepted meanwhile." }
        }
        section aria-labelledby="unresolved-heading" {
            h2 #unresolved-heading { "Events waiting for their tenant" }
            @if unresolved.unresolved.is_empty() { p { "None." } } @else {
                @if unresolved.next_cursor.is_some() { p { "The first " (UNRESOLVED_SHOWN_MAX) "." } }
                table {
                    thead { tr { th scope="col" { "Object" } th scope="col" { "Event" } th scope="col" { "Type" } th scope="col" { "Created" } th scope="col" class="num" { "Position" } } }
                    tbody { @for u in &unresolved.unresolved { tr {
                        td { code { (u.object_id) } }
                        td { (layout::event_link(&u.event_id)) }
                        td { code { (u.event_type) } }
                        td { (layout::time(u.created)) }
                        td.num { (u.position) }
                    } } }
                }
            }
        }
    };
    let sources = [
        Source::new("projection status", "/api/billing/admin/projections"),
        Source::new(
            "unresolved events",
            format!("/api/billing/unresolved?limit={UNRESOLVED_SHOWN_MAX}"),
        ),
    ];
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, "Operations", &sources, body),
    ))
}

fn projection_facts(p: &ProjectionView) -> Markup {
    markup! {
        h3 { code { (p.name) } }
        dl.facts {
            dt { "Status" } dd { (layout::status(&p.status)) }
            dt { "Fold version" } dd { (p.version) " (this build: " (p.code_version) ")" }
            dt { "Checkpoint / log head" } dd { (p.checkpoint) " / " (p.log_head) }
            dt { "Lag" } dd { (p.lag_events) " events, " (format!("{:.2}", p.lag_seconds)) " s" }
            dt { "Projector" } dd { (if p.projector_running { "running" } else { "not running" })
                @if let Some(instance) = &p.projector_instance { " (instance " code { (instance) } ")" } }
            @if let Some(failure) = &p.projector_failure { dt { "Projector failure" } dd.error { (failure) } }
            dt { "Fold errors" } dd { (p.error_count)
                @if let Some(e) = &p.last_error { "; last: " (layout::event_link(&e.event_id)) " " (e.error) } }
            @if let Some(r) = &p.rebuild {
                dt { "Latest rebuild" } dd {
                    (layout::status(&r.status)) " requested " (layout::time(r.requested_at))
                    "; " (r.position_done) " of " @match r.position_target { Some(t) => (t), None => "?" } " events"
                    @if let Some(finished) = r.finished_at { "; finished " (layout::time(finished)) }
                    @if let Some(error) = &r.error { "; " span.error { (error) } }
                }
            }
        }
    }
}

/// `POST /console/operations/rebuild` (admin, CSRF): queues a rebuild through the admin API
/// and returns to the operations page, which shows its progress; 409 while one runs.
#[handler]
pub async fn rebuild(
    request: &Request,
    console: Data<&Arc<Console>>,
    Form(form): Form<CsrfForm>,
) -> Response {
    respond(queue(request, &console, &form.csrf).await)
}

async fn queue(request: &Request, console: &Console, csrf: &str) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    viewer.require_admin()?;
    viewer.check_csrf(console, csrf)?;
    console.admin_api().rebuild(viewer.auth()).await?;
    Ok(see_other("/console/operations"))
}
