//! `/console/operations` (admin): each read model's status, rows, version and lag, the
//! projection's checkpoint and latest rebuild, "Preview rebuild" and "Rebuild" buttons (POST
//! forms with the CSRF token), the outgoing webhook endpoints with their recent failures, and
//! the events waiting for their tenant, each with a form linking its missing customer or
//! subscription to a tenant (the admin tenant-links route). Everything comes from the admin and read API's
//! handlers and the outbox store's reads. A preview's diff is on [`super::rebuilds`]' page.

use super::layout::{self, Source};
use super::sign_in::CsrfForm;
use super::{html, respond, see_other, viewer, Console, PageError};
use crate::http::admin::{ProjectionView, ReadModelView};
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
            @for projection in &projections.projections {
                (read_models_table(&projection.read_models))
                (projection_facts(projection))
            }
            form method="post" action="/console/operations/preview" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Preview rebuild" }
            }
            form method="post" action="/console/operations/rebuild" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Rebuild from the log" }
            }
            p { "A preview folds the whole log and lists the rows a rebuild would add, remove and change, swapping nothing. A rebuild folds the whole log into fresh tables and swaps them in; webhooks keep being accepted meanwhile." }
        }
        (super::outgoing::section(&console.state.pool).await?)
        section aria-labelledby="unresolved-heading" {
            h2 #unresolved-heading { "Events waiting for their tenant" }
            @if unresolved.unresolved.is_empty() { p { "None." } } @else {
                @if unresolved.next_cursor.is_some() { p { "The first " (UNRESOLVED_SHOWN_MAX) "." } }
                table {
                    thead { tr { th scope="col" { "Object" } th scope="col" { "Event" } th scope="col" { "Type" } th scope="col" { "Created" } th scope="col" class="num" { "Position" } th scope="col" { "Missing link" } } }
                    tbody { @for (i, u) in unresolved.unresolved.iter().enumerate() { tr {
                        td { code { (u.object_id) } }
                        td { (layout::event_link(&u.event_id)) }
                        td { code { (u.event_type) } }
                        td { (layout::time(u.created)) }
                        td.num { (u.position) }
                        td { (link_form(i, &u.missing_link, &viewer.csrf)) }
                    } } }
                }
            }
        }
    };
    let sources = [
        Source::new("projection status", "/api/billing/admin/projections"),
        Source::new("outgoing endpoints", "/api/billing/admin/endpoints"),
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
            dt { "Status" } dd { (layout::status(p.status.as_str())) }
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
                    @if r.preview { "preview " }
                    (layout::status(r.status.as_str())) " requested " (layout::time(r.requested_at))
                    "; " (r.position_done) " of " @match r.position_target { Some(t) => (t), None => "?" } " events"
                    @if let Some(finished) = r.finished_at { "; finished " (layout::time(finished)) }
                    @if let Some(error) = &r.error { "; " span.error { (error) } }
                    "; " a href={ "/console/operations/rebuilds/" (r.rebuild_id) } { "details" }
                }
            }
        }
    }
}

/// The read models, one row each.
/// The form linking an unresolved event's missing customer or subscription to a tenant
/// (a Checkout Session with neither has nothing an admin can link: named, no form).
fn link_form(row: usize, missing: &crate::views::MissingLink, csrf: &str) -> Markup {
    let linkable = matches!(missing.object.as_str(), "customer" | "subscription");
    let tenant = format!("link-tenant-{row}");
    let reason = format!("link-reason-{row}");
    markup! {
        (missing.object) " " code { (missing.id) }
        @if linkable {
            form.link method="post" action="/console/operations/tenant-links" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="object_id" value=(missing.id);
                label for=(tenant) { "Tenant" }
                input #(tenant) type="text" name="tenant_id" required maxlength="255";
                label for=(reason) { "Reason" }
                input #(reason) type="text" name="reason" required maxlength="1000";
                button type="submit" { "Link" }
            }
        }
    }
}

/// The link form's fields.
#[derive(serde::Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub object_id: String,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub reason: String,
}

/// `POST /console/operations/tenant-links` (admin, CSRF): links a customer or subscription to
/// a tenant through the admin route (an event of the ledger's own, appended to the log) and
/// returns to the operations page; 400 for bad input, 409 when an admin linked the object to
/// another tenant, as the route answers.
#[handler]
pub async fn link(
    request: &Request,
    console: Data<&Arc<Console>>,
    Form(form): Form<LinkForm>,
) -> Response {
    respond(append_link(request, &console, form).await)
}

async fn append_link(
    request: &Request,
    console: &Console,
    form: LinkForm,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    viewer.require_admin()?;
    viewer.check_csrf(console, &form.csrf)?;
    let body = crate::http::links::CreateTenantLink {
        object_id: crate::http::links::JsonText(form.object_id),
        tenant_id: crate::http::links::JsonText(form.tenant_id),
        reason: crate::http::links::JsonText(form.reason),
    };
    console
        .links_api()
        .create(viewer.auth(), poem_openapi::payload::Json(body))
        .await?;
    Ok(see_other("/console/operations"))
}

fn read_models_table(models: &[ReadModelView]) -> Markup {
    markup! {
        table {
            thead { tr {
                th scope="col" { "Read model" } th scope="col" { "Status" }
                th scope="col" class="num" { "Rows" } th scope="col" class="num" { "Version" }
                th scope="col" class="num" { "Checkpoint" } th scope="col" class="num" { "Lag (events)" }
            } }
            tbody { @for m in models { tr {
                td { code { (m.name) } }
                td { (layout::status(m.status.as_str())) }
                td.num { (m.rows) @if m.rows_counted_by == crate::projector::status::RowCountMethod::Estimate { " (estimate)" } }
                td.num { (m.version) }
                td.num { (m.checkpoint) }
                td.num { (m.lag_events) }
            } } }
        }
    }
}

/// `POST /console/operations/preview` (admin, CSRF): queues a rebuild preview through the
/// admin API and shows its page, which follows it and then shows its diff; 409 while a
/// rebuild or preview runs.
#[handler]
pub async fn preview(
    request: &Request,
    console: Data<&Arc<Console>>,
    Form(form): Form<CsrfForm>,
) -> Response {
    respond(queue_preview(request, &console, &form.csrf).await)
}

async fn queue_preview(
    request: &Request,
    console: &Console,
    csrf: &str,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    viewer.require_admin()?;
    viewer.check_csrf(console, csrf)?;
    let body = crate::http::admin::RebuildRequest {
        preview: Some(true),
    };
    let accepted = console
        .admin_api()
        .rebuild(viewer.auth(), crate::http::admin::OptionalJson(Some(body)))
        .await?;
    let crate::http::admin::RebuildResponse::Accepted(accepted) = accepted;
    Ok(see_other(&format!(
        "/console/operations/rebuilds/{}",
        accepted.0.rebuild_id
    )))
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
    console
        .admin_api()
        .rebuild(viewer.auth(), crate::http::admin::OptionalJson(None))
        .await?;
    Ok(see_other("/console/operations"))
}
