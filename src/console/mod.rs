//! The finance console: server-rendered HTML pages at `/console`, served by the same binary,
//! with no asset from the network (its own CSS and a few lines of JavaScript, embedded).
//!
//! It adds no new truth: pages call the read and admin API's own handlers (so roles, limits
//! and errors are the API's) and render their answers; only lists the API does not have yet
//! (tenants, a tenant's customers) query the read models here. A signed-in browser holds a
//! session cookie ([`session`]) instead of a bearer token; admin actions are POST forms with a
//! CSRF token. One small module per page; [`layout`] holds the frame every page shares. This
//! module never writes read models and never renders a token.

pub mod aging;
pub mod chart;
pub mod event;
pub mod figures;
pub mod integrity;
pub mod invoices;
pub mod json;
pub mod layout;
pub mod lists;
pub mod money;
pub mod operations;
pub mod outgoing;
pub mod payments;
pub mod rebuilds;
pub mod revenue;
pub mod session;
pub mod sign_in;
pub mod tenant;
pub mod tenant_money;
pub mod tenants;

use crate::http::auth::{Role, Tokens};
use crate::http::error::ApiError;
use crate::http::AppState;
use maud::Markup;
use poem::http::{header, HeaderValue, StatusCode};
use poem::{get, post, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use session::SessionKey;
use std::sync::Arc;

/// What every console page shares.
pub struct Console {
    pub state: Arc<AppState>,
    pub key: SessionKey,
    /// The revenue fold the tenants and revenue pages share, until the log moves.
    pub revenue: figures::RevenueCache,
}

impl Console {
    /// The read API's handlers, called directly.
    pub fn read_api(&self) -> crate::http::read::ReadApi {
        crate::http::read::ReadApi {
            state: self.state.clone(),
        }
    }

    /// The admin API's handlers, called directly.
    pub fn links_api(&self) -> crate::http::links::LinksApi {
        crate::http::links::LinksApi {
            state: self.state.clone(),
        }
    }

    pub fn admin_api(&self) -> crate::http::admin::AdminApi {
        crate::http::admin::AdminApi {
            state: self.state.clone(),
        }
    }
}

/// The signed-in person: their role and the CSRF token their forms carry.
pub struct Viewer {
    pub role: Role,
    pub csrf: String,
    cookie: String,
}

impl Viewer {
    /// The bearer auth the API's handlers take, for this viewer's role.
    pub fn auth(&self) -> crate::http::auth::TokenAuth {
        crate::http::auth::TokenAuth(self.role)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses (403) anything but an admin.
    pub fn require_admin(&self) -> Result<(), PageError> {
        self.auth().require_admin().map_err(PageError::from)
    }

    /// Refuses (403) a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, console: &Console, presented: &str) -> Result<(), PageError> {
        if console.key.csrf_matches(&self.cookie, presented) {
            Ok(())
        } else {
            Err(PageError::Forbidden(
                "this form is not from your current console session; reload the page and retry"
                    .into(),
            ))
        }
    }
}

/// Why a page cannot be shown; each becomes an HTML page with its status.
#[derive(Debug)]
pub enum PageError {
    /// Not signed in, or the session expired (401, with the sign-in form).
    SignedOut,
    BadRequest(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// The database is unavailable (503).
    Unavailable,
    /// An error of our own (500); logged by the API's mapping.
    Internal,
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        match error {
            ApiError::BadRequest(body) => PageError::BadRequest(body.0.error),
            ApiError::Unauthorized(..) => PageError::SignedOut,
            ApiError::Forbidden(body) => PageError::Forbidden(body.0.error),
            ApiError::NotFound(body) => PageError::NotFound(body.0.error),
            ApiError::Conflict(body) => PageError::Conflict(body.0.error),
            ApiError::Unavailable(_) => PageError::Unavailable,
            ApiError::Internal(_) => PageError::Internal,
        }
    }
}

/// Errors of the console's own queries: classified and logged by the API's mapping.
impl From<anyhow::Error> for PageError {
    fn from(error: anyhow::Error) -> PageError {
        PageError::from(ApiError::from(error))
    }
}

/// A raw value that is not a domain value: 400 with the rule it breaks.
impl From<projections::domain::Invalid> for PageError {
    fn from(error: projections::domain::Invalid) -> PageError {
        PageError::BadRequest(error.0)
    }
}

impl From<deadpool_postgres::PoolError> for PageError {
    fn from(error: deadpool_postgres::PoolError) -> PageError {
        PageError::from(ApiError::from(error))
    }
}

impl From<tokio_postgres::Error> for PageError {
    fn from(error: tokio_postgres::Error) -> PageError {
        PageError::from(ApiError::from(error))
    }
}

/// The HTML answer of a page's result.
pub fn respond(result: Result<Response, PageError>) -> Response {
    result.unwrap_or_else(|error| {
        let (status, title, message) = match error {
            PageError::SignedOut => {
                return html(StatusCode::UNAUTHORIZED, sign_in::form(None, None));
            }
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            PageError::Conflict(m) => (StatusCode::CONFLICT, "Conflict", m),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "the database is unavailable; retry later".into(),
            ),
            PageError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "internal error; it has been logged".into(),
            ),
        };
        html(status, layout::error_page(title, &message))
    })
}

/// An HTML response.
pub fn html(status: StatusCode, markup: Markup) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

/// A `303 See Other` to `location` (after a form POST).
pub fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .finish()
}

/// The viewer of `request`, from its session cookie; [`PageError::SignedOut`] without a
/// valid one.
pub fn viewer(request: &Request, console: &Console) -> Result<Viewer, PageError> {
    let cookie = session_cookie(request).ok_or(PageError::SignedOut)?;
    let tokens = request.data::<Tokens>().cloned().unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let role = console
        .key
        .role(&cookie, &tokens, now)
        .ok_or(PageError::SignedOut)?;
    Ok(Viewer {
        role,
        csrf: console.key.csrf(&cookie),
        cookie,
    })
}

fn session_cookie(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == session::COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

/// Whether the request reached us over TLS (directly or, as deployed, through a proxy that
/// says so in `X-Forwarded-Proto`): the session cookie is then marked `Secure`.
pub fn over_tls(request: &Request) -> bool {
    request.uri().scheme_str() == Some("https")
        || request
            .header("x-forwarded-proto")
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// The console's routes, to nest at `/console`.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let key = SessionKey::new(state.config.console_session_key.as_deref());
    let console = Arc::new(Console {
        state,
        key,
        revenue: figures::RevenueCache::default(),
    });
    Route::new()
        .at("/", get(sign_in::home))
        .at("/sign-in", post(sign_in::sign_in))
        .at("/sign-out", post(sign_in::sign_out))
        .at("/tenants", get(tenants::page))
        .at("/tenants/:tenant_id", get(tenant::page))
        .at("/events/:event_id", get(event::page))
        .at("/revenue", get(revenue::page))
        .at("/revenue.csv", get(revenue::csv))
        .at("/invoices", get(invoices::page))
        .at("/payments", get(payments::page))
        .at("/integrity", get(integrity::page))
        .at("/integrity/verify", post(integrity::verify_now))
        .at("/operations", get(operations::page))
        .at("/operations/rebuild", post(operations::rebuild))
        .at("/operations/preview", post(operations::preview))
        .at("/operations/tenant-links", post(operations::link))
        .at("/operations/rebuilds/:rebuild_id", get(rebuilds::page))
        .at("/assets/console.css", get(layout::stylesheet))
        .at("/assets/console.js", get(layout::script))
        .data(console)
        .around(security_headers)
}

/// Middleware: every console answer forbids framing, outside resources, inline script and
/// caching, and sends no referrer to other sites (URLs carry tenant and event IDs).
async fn security_headers<E: Endpoint>(next: E, request: Request) -> poem::Result<Response> {
    let mut response = next.call(request).await?.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with
    // form posts, and the sign-in's origin check could not tell them from a foreign site.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}
