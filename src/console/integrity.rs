//! `/console/integrity`: the hash chain's head (event count and head hash, as appends left
//! them) and the last verification's verdict; admins can verify now (a POST form with the
//! CSRF token), which recomputes the chain like `billing-ledger verify` and records the result.

use super::layout::{self, Source};
use super::sign_in::CsrfForm;
use super::{html, respond, see_other, viewer, Console, PageError};
use crate::chain::{self, Verdict};
use maud::html as markup;
use poem::http::StatusCode;
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use std::sync::Arc;

/// `GET /console/integrity`.
#[handler]
pub async fn page(request: &Request, console: Data<&Arc<Console>>) -> Response {
    respond(render(request, &console).await)
}

async fn render(request: &Request, console: &Console) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    let (events, head_hash) = chain::head(&console.state.pool).await?;
    let last = chain::last_recorded(&console.state.pool).await?;
    let body = markup! {
        section aria-labelledby="head-heading" {
            h2 #head-heading { "Log head" }
            dl.facts {
                dt { "Events in the log" } dd { (events) }
                dt { "Head hash" } dd { code { (head_hash) } }
            }
            p { "What the chain claims now. Record the verified head hash somewhere the database's administrators cannot write." }
        }
        section aria-labelledby="last-heading" {
            h2 #last-heading { "Last verification" }
            @match &last {
                None => p { "The chain has not been verified yet." },
                Some(recorded) => {
                    dl.facts {
                        dt { "When" } dd { (layout::time(recorded.verified_at)) " (run by " (recorded.ran_by) ")" }
                        @match &recorded.verdict {
                            Verdict::Intact { events, head_hash } => {
                                dt { "Verdict" } dd { (layout::status("intact")) }
                                dt { "Events verified" } dd { (events) }
                                dt { "Head hash" } dd { code { (head_hash) } }
                            }
                            Verdict::Broken { position, event_id, problem, events_verified } => {
                                dt { "Verdict" } dd { (layout::status("broken")) }
                                dt { "First damage at position" } dd { (position) }
                                dt { "Event" } dd { @match event_id { Some(id) => (layout::event_link(id)), None => (layout::none()) } }
                                dt { "Problem" } dd { (problem) }
                                dt { "Events verified before it" } dd { (events_verified) }
                            }
                        }
                    }
                }
            }
            @if viewer.is_admin() {
                form method="post" action="/console/integrity/verify" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button type="submit" { "Verify now" }
                }
            }
        }
    };
    let sources = if viewer.is_admin() {
        vec![Source::new(
            "a verification (admin)",
            "/api/billing/admin/verify",
        )]
    } else {
        vec![]
    };
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, "Integrity", &sources, body),
    ))
}

/// `POST /console/integrity/verify` (admin, CSRF): recomputes the chain, records the verdict,
/// and shows the integrity page again.
#[handler]
pub async fn verify_now(
    request: &Request,
    console: Data<&Arc<Console>>,
    Form(form): Form<CsrfForm>,
) -> Response {
    respond(run(request, &console, &form.csrf).await)
}

async fn run(request: &Request, console: &Console, csrf: &str) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    viewer.require_admin()?;
    viewer.check_csrf(console, csrf)?;
    let verdict = chain::verify(&console.state.pool).await?;
    if let Verdict::Broken {
        position, problem, ..
    } = &verdict
    {
        tracing::error!(log.position = position, %problem, "log integrity check failed (console)");
    }
    chain::record(&console.state.pool, &verdict, chain::RanBy::Console).await?;
    Ok(see_other("/console/integrity"))
}
