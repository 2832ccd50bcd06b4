//! The operations page's "Outgoing webhooks" section: each endpoint, where its cursor is, and
//! its recent failed attempts. Read-only, through the outbox store's reads.

use super::layout;
use super::PageError;
use crate::outbox::store;
use deadpool_postgres::Pool;
use maud::{html as markup, Markup};

/// Attempts read per endpoint to find its recent failures.
pub const ATTEMPTS_READ_MAX: i64 = 50;
/// Failed attempts shown per endpoint.
pub const FAILURES_SHOWN_MAX: usize = 5;

/// An attempt failed when no answer came or the answer was not 2xx (Standard Webhooks).
fn failed(attempt: &store::Attempt) -> bool {
    !attempt
        .status_code
        .is_some_and(|code| (200..300).contains(&code))
}

/// The section, endpoints in creation order.
pub async fn section(pool: &Pool) -> Result<Markup, PageError> {
    let endpoints = store::list(&pool.get().await?).await?;
    let mut failures = Vec::with_capacity(endpoints.len());
    for endpoint in &endpoints {
        let attempts =
            store::attempts(pool, endpoint.endpoint_id, i64::MAX, ATTEMPTS_READ_MAX).await?;
        let recent: Vec<store::Attempt> = attempts
            .into_iter()
            .filter(failed)
            .take(FAILURES_SHOWN_MAX)
            .collect();
        failures.push(recent);
    }
    Ok(markup! {
        section aria-labelledby="outgoing-heading" {
            h2 #outgoing-heading { "Outgoing webhooks" }
            @if endpoints.is_empty() { p { "No endpoints." } }
            @for (endpoint, recent) in endpoints.iter().zip(&failures) {
                h3 { code { (endpoint.url) } }
                dl.facts {
                    dt { "Endpoint" } dd { code { (endpoint.endpoint_id) } " (" (endpoint.source) ")" }
                    dt { "Read models" } dd { @match &endpoint.read_models {
                        Some(models) => (models.join(", ")),
                        None => "all",
                    } }
                    dt { "Delivered through change" } dd { (endpoint.cursor) }
                    dt { "State" } dd {
                        @if let Some(disabled) = endpoint.disabled_at {
                            (layout::status("failed")) " disabled " (layout::time(disabled))
                            @if let Some(reason) = &endpoint.disabled_reason { ": " (reason) }
                        } @else if endpoint.failed_attempts > 0 {
                            (endpoint.failed_attempts) " failed attempts on the next message"
                            @if let Some(next) = endpoint.next_attempt_at { "; next try " (layout::time(next)) }
                        } @else { "delivering" }
                    }
                }
                @if recent.is_empty() { p { "No failed attempts among the last " (ATTEMPTS_READ_MAX) "." } } @else {
                    table {
                        caption { "Recent failed attempts" }
                        thead { tr { th scope="col" { "At" } th scope="col" class="num" { "Change" } th scope="col" { "Answer" } th scope="col" class="num" { "Duration (ms)" } th scope="col" { "Error" } } }
                        tbody { @for a in recent { tr {
                            td { (layout::time(a.attempted_at)) }
                            td.num { (a.change_id) }
                            td { @match a.status_code { Some(code) => (code), None => "no answer" } }
                            td.num { (a.duration_ms) }
                            td { (layout::maybe_text(a.error.as_deref())) }
                        } } }
                    }
                }
            }
        }
    })
}
