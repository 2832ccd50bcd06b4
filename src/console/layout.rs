//! The frame every console page shares (header, navigation, the API queries behind the page)
//! and the small renderers pages use for times, statuses, money and links. Maud escapes every
//! interpolated string, so text from events (names, IDs, bodies) can never become markup.

use super::Viewer;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use poem::handler;
use poem::http::header;
use poem::Response;

/// The console's stylesheet, embedded in the binary.
const STYLESHEET: &str = include_str!("assets/console.css");
/// The console's script (local times on hover), embedded in the binary.
const SCRIPT: &str = include_str!("assets/console.js");

/// The navigation: path, label, and whether only admins see it. A new page adds its line
/// here and its route in [`super::routes`].
pub const NAV: [(&str, &str, bool); 6] = [
    ("/console/tenants", "Tenants", false),
    ("/console/revenue", "Revenue", false),
    ("/console/invoices", "Invoices", false),
    ("/console/payments", "Payments", false),
    ("/console/integrity", "Integrity", false),
    ("/console/operations", "Operations", true),
];

/// An API route a page's content came from, shown as a link so finance can fetch the same
/// data as JSON (or CSV) with a bearer token.
pub struct Source {
    /// What the route gives, for a person (`"this tenant's history"`).
    pub label: &'static str,
    /// Path and query, starting `/api/billing/`.
    pub href: String,
}

impl Source {
    pub fn new(label: &'static str, href: impl Into<String>) -> Source {
        Source {
            label,
            href: href.into(),
        }
    }
}

/// A whole page: head, navigation for `viewer`, `body`, and the API queries it came from.
pub fn page(viewer: &Viewer, title: &str, sources: &[Source], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "billing-ledger" }
                    nav aria-label="Console" {
                        ul {
                            @for (href, label, admin_only) in NAV {
                                @if !admin_only || viewer.is_admin() {
                                    li { a href=(href) { (label) } }
                                }
                            }
                        }
                    }
                    span.role { "Signed in: " (role_word(viewer)) }
                    form.sign-out method="post" action="/console/sign-out" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                @if !sources.is_empty() {
                    footer.sources {
                        h2 { "Where this page comes from" }
                        p { "The same data from the API (send your token as "
                            code { "Authorization: Bearer …" } "):" }
                        ul {
                            @for source in sources {
                                li { (source.label) ": " a href=(source.href) { code { "GET " (source.href) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A page for someone not signed in (sign-in form, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/console" { "billing-ledger" } }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error page: what went wrong and the way back.
pub fn error_page(title: &str, message: &str) -> Markup {
    bare(
        title,
        html! {
            p.error role="alert" { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · billing-ledger console" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

fn role_word(viewer: &Viewer) -> &'static str {
    if viewer.is_admin() {
        "admin"
    } else {
        "finance"
    }
}

/// A time in UTC (`2025-01-01 10:00:00 UTC`); the script puts the viewer's local time in its
/// tooltip.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            title=(at.format("%Y-%m-%d %H:%M:%S UTC")) {
            (at.format("%Y-%m-%d %H:%M:%S UTC"))
        }
    }
}

/// An optional time, or an em dash.
pub fn maybe_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => none(),
    }
}

/// The mark for a missing value.
pub fn none() -> Markup {
    html! { span.none aria-label="none" { "—" } }
}

/// An optional text, or an em dash.
pub fn maybe_text(text: Option<&str>) -> Markup {
    match text {
        Some(text) => html! { (text) },
        None => none(),
    }
}

/// A status as its word, in a badge whose colour repeats (never replaces) the word. The
/// colour class comes from a fixed list, so a status string from an event cannot add a class.
pub fn status(word: &str) -> Markup {
    let tone = match word {
        "active" | "trialing" | "complete" | "paid" | "live" | "done" | "intact" | "full"
        | "succeeded" | "issued" | "won" => "good",
        "past_due" | "incomplete" | "unpaid" | "paused" | "open" | "pending" | "running"
        | "rebuilding" | "stale" | "idle" | "grace" | "draft" | "needs_response"
        | "under_review" => "warn",
        "canceled" | "incomplete_expired" | "expired" | "failed" | "broken" | "void"
        | "uncollectible" | "none" | "lost" => "bad",
        _ => "neutral",
    };
    html! { span class={ "status " (tone) } { (word) } }
}

/// An amount of money for people (see [`super::money::format`]).
pub fn money(amount_minor: i64, currency: &str) -> Markup {
    html! { span.money { (super::money::format(amount_minor, currency)) } }
}

/// A link to an event's page.
pub fn event_link(event_id: &str) -> Markup {
    html! { a href={ "/console/events/" (encode(event_id)) } { code { (event_id) } } }
}

/// A link to a tenant's page.
pub fn tenant_link(tenant_id: &str) -> Markup {
    html! { a href={ "/console/tenants/" (encode(tenant_id)) } { (tenant_id) } }
}

/// Percent-encodes `text` for a URL path segment or query value: everything but RFC 3986's
/// unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The stylesheet (cached for an hour: it changes only with the binary).
#[handler]
pub fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

/// The script.
#[handler]
pub fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, "private, max-age=3600")
        .body(text)
}
