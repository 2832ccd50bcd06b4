//! `/console/operations/rebuilds/{rebuild_id}` (admin): one rebuild or preview, its progress,
//! rate and time left, and for a finished preview the rows a rebuild would add, remove and
//! change per read model (before and after side by side), with the "Rebuild" form after it.
//! Everything comes from the admin API's `GET /api/billing/admin/rebuilds/{rebuild_id}`.

use super::layout::{self, Source};
use super::{html, respond, viewer, Console, PageError};
use crate::http::admin::RebuildDetail;
use crate::projector::preview::{ReadModelDiff, RowChange, RowChanges};
use maud::{html as markup, Markup};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Request, Response};
use std::sync::Arc;

/// `GET /console/operations/rebuilds/:rebuild_id`.
#[handler]
pub async fn page(
    request: &Request,
    console: Data<&Arc<Console>>,
    Path(rebuild_id): Path<String>,
) -> Response {
    respond(render(request, &console, rebuild_id).await)
}

async fn render(
    request: &Request,
    console: &Console,
    rebuild_id: String,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    viewer.require_admin()?;
    let source = format!("/api/billing/admin/rebuilds/{rebuild_id}");
    let detail = console
        .admin_api()
        .rebuild_state(viewer.auth(), poem_openapi::param::Path(rebuild_id))
        .await?
        .0;
    let body = markup! {
        (facts(&detail))
        @if let Some(diff) = &detail.diff {
            section aria-labelledby="diff-heading" {
                h2 #diff-heading { "What a rebuild would change" }
                p { (diff.total()) " rows in all; at most " (diff.rows_shown_max) " of each kind are shown per read model." }
                (counts(&diff.read_models))
                @for model in diff.read_models.iter().filter(|m| m.total() > 0) { (model_rows(model)) }
            }
            form method="post" action="/console/operations/rebuild" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Rebuild" }
            }
            p { "If no event arrives in between, the rebuild changes exactly these rows." }
        }
    };
    let title = if detail.rebuild.preview {
        "Rebuild preview"
    } else {
        "Rebuild"
    };
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, title, &[Source::new("rebuild", source)], body),
    ))
}

fn facts(detail: &RebuildDetail) -> Markup {
    let r = &detail.rebuild;
    markup! {
        dl.facts {
            dt { "Rebuild" } dd { code { (r.rebuild_id) } @if r.preview { " (preview: swaps nothing)" } }
            dt { "Status" } dd { (layout::status(r.status.as_str())) }
            dt { "Requested" } dd { (layout::time(r.requested_at)) }
            dt { "Progress" } dd { (r.position_done) " of " @match r.position_target { Some(t) => (t), None => "?" } " events" }
            dt { "Rate" } dd { @match r.rate_events_per_second { Some(rate) => (format!("{rate:.0} events/s")), None => (layout::none()) } }
            dt { "Time left" } dd { @match r.seconds_left { Some(left) => (format!("{left:.1} s")), None => (layout::none()) } }
            @if let Some(finished) = r.finished_at { dt { "Finished" } dd { (layout::time(finished)) } }
            @if let Some(error) = &r.error { dt { "Error" } dd.error { (error) } }
        }
    }
}

fn counts(models: &[ReadModelDiff]) -> Markup {
    markup! {
        table {
            thead { tr { th scope="col" { "Read model" } th scope="col" class="num" { "Added" } th scope="col" class="num" { "Removed" } th scope="col" class="num" { "Changed" } } }
            tbody { @for m in models { tr {
                td { code { (m.read_model) } }
                td.num { (m.added.count) } td.num { (m.removed.count) } td.num { (m.changed.count) }
            } } }
        }
    }
}

fn model_rows(model: &ReadModelDiff) -> Markup {
    markup! {
        h3 { code { (model.read_model) } }
        @for (kind, changes) in [("Added", &model.added), ("Removed", &model.removed), ("Changed", &model.changed)] {
            @if changes.count > 0 { (kind_table(kind, changes)) }
        }
    }
}

fn kind_table(kind: &str, changes: &RowChanges) -> Markup {
    markup! {
        table.diff {
            caption { (kind) " (" (changes.count) ")" }
            thead { tr { th scope="col" { "Key" } th scope="col" { "Before" } th scope="col" { "After" } } }
            tbody { @for row in &changes.rows { (row_line(row)) } }
        }
    }
}

fn row_line(row: &RowChange) -> Markup {
    let side = |value: &Option<serde_json::Value>| match value {
        Some(value) => markup! { pre { code { (super::json::pretty(&value.to_string())) } } },
        None => layout::none(),
    };
    markup! {
        tr { td { code { (row.key) } } td { (side(&row.before)) } td { (side(&row.after)) } }
    }
}
