//! Signing in and out, and the home page. A finance or admin token posted once becomes the
//! session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS); the token itself is
//! never stored, echoed or logged.

use super::layout::{self, Source};
use super::session::{COOKIE_NAME, SESSION_SECS};
use super::{html, respond, see_other, viewer, Console, PageError};
use crate::http::auth::{Role, Tokens};
use maud::{html as markup, Markup};
use poem::http::{header, StatusCode};
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use std::sync::Arc;

/// The sign-in form, with an error line when a sign-in just failed.
pub fn form(error: Option<&str>, notice: Option<&str>) -> Markup {
    layout::bare(
        "Sign in",
        markup! {
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/console/sign-in" {
                label for="token" { "Finance or admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p { button type="submit" { "Sign in" } }
            }
            p { "The token is one of " code { "LEDGER_FINANCE_TOKENS" } " or "
                code { "LEDGER_ADMIN_TOKENS" } ". It becomes a session cookie for "
                (SESSION_SECS / 3600) " hours." }
        },
    )
}

/// `GET /console`: the home page, or the sign-in form when signed out.
#[handler]
pub async fn home(request: &Request, console: Data<&Arc<Console>>) -> Response {
    let viewer = match viewer(request, &console) {
        Ok(viewer) => viewer,
        Err(_) => return html(StatusCode::OK, form(None, None)),
    };
    let body = markup! {
        section {
            h2 { "Pages" }
            ul {
                li { a href="/console/tenants" { "Tenants" } ": every tenant's subscription state; search, filter, sort." }
                li { "A tenant: its state now or as of any instant or log position, its customers, Checkout Sessions and timeline." }
                li { "An event: the body exactly as received, every delivery, its signature and the tenants it touched." }
                li { a href="/console/integrity" { "Integrity" } ": the hash chain's head and the last verification." }
                @if viewer.is_admin() {
                    li { a href="/console/operations" { "Operations" } ": projection status and lag, rebuild, unresolved events." }
                }
            }
        }
    };
    let sources = [Source::new(
        "the log, newest first",
        "/api/billing/events?order=desc&limit=100",
    )];
    html(
        StatusCode::OK,
        layout::page(&viewer, "Console", &sources, body),
    )
}

#[derive(serde::Deserialize)]
pub struct SignInForm {
    token: String,
}

/// `POST /console/sign-in`: a configured token becomes a session; anything else is 401 with
/// the form again. Refused (403) when the form was posted from another origin.
#[handler]
pub async fn sign_in(
    request: &Request,
    console: Data<&Arc<Console>>,
    Form(form_data): Form<SignInForm>,
) -> Response {
    if !same_origin(request) {
        return respond(Err(PageError::Forbidden(
            "sign-in forms must come from this console".into(),
        )));
    }
    let tokens = request.data::<Tokens>().cloned().unwrap_or_default();
    let token = form_data.token.trim();
    // A platform token reads the feed, not finance data: the console is not for it.
    let role = tokens.role_of(token);
    if !matches!(role, Some(Role::Finance | Role::Admin)) {
        return html(
            StatusCode::UNAUTHORIZED,
            form(Some("That token is not a finance or admin token."), None),
        );
    }
    let value = console.key.issue(token, chrono::Utc::now().timestamp());
    let secure = if super::over_tls(request) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path=/console; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict{secure}"
    );
    let mut response = see_other("/console");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
    response
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /console/sign-out`: clears the session cookie and shows the sign-in form.
#[handler]
pub async fn sign_out(
    request: &Request,
    console: Data<&Arc<Console>>,
    Form(form_data): Form<CsrfForm>,
) -> Response {
    let result = viewer(request, &console)
        .and_then(|viewer| viewer.check_csrf(&console, &form_data.csrf))
        .map(|()| {
            let mut response = html(StatusCode::OK, form(None, Some("You are signed out.")));
            let cookie =
                format!("{COOKIE_NAME}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict");
            response
                .headers_mut()
                .insert(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
            response
        });
    respond(result)
}

/// False when the browser says the form came from another origin. Browsers that send
/// `Sec-Fetch-Site` (a header pages cannot set) are believed; for others the `Origin` must
/// name this host (`Host`, or `X-Forwarded-Host` behind a proxy that rewrites `Host`). A
/// request with neither header (curl, scripts) passes: it carries no ambient credentials.
fn same_origin(request: &Request) -> bool {
    if let Some(site) = request.header("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    let Some(origin) = request.header("origin") else {
        return true;
    };
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    [request.header("host"), request.header("x-forwarded-host")]
        .into_iter()
        .flatten()
        .any(|host| host.eq_ignore_ascii_case(authority))
}
