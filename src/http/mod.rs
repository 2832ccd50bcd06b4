//! The HTTP edge: routes, auth, and the one place errors become answers.
//!
//! Raw strings stop here: handlers parse headers, bodies and parameters into checked types and
//! hand them to `event_log` and the queries. This module never writes read models.

pub mod admin;
pub mod auth;
pub mod connections;
pub mod csv;
pub mod endpoints;
pub mod error;
pub mod feed;
pub mod links;
pub mod money;
pub mod money_views;
pub mod ops;
pub mod paging;
pub mod platform;
pub mod read;
pub mod rebuild_views;
pub mod reconcile;
pub mod revenue;
pub mod routes;

pub mod webhook;

use crate::config::Config;
use crate::event_log::Appender;
use deadpool_postgres::Pool;
use poem::{EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};
use std::sync::Arc;
use tokio::sync::Notify;

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub pool: Pool,
    pub appender: Appender,
    pub metrics: crate::metrics::Metrics,
    /// Wakes this instance's projector after an append.
    pub wake: Arc<Notify>,
    /// Tells long-polls and streams that the change feed moved.
    pub watcher: crate::feed::Watcher,
    /// Where the read routes read (the primary, or `LEDGER_READ_DATABASE_URL`'s replica).
    pub reads: crate::reads::ReadPools,
}

/// What one read answer reflects: the read routes record it when they choose their pool
/// ([`ReadSlot::choose`]), and [`read_headers`] sends it. Requests that never read (webhooks,
/// admin, an unauthenticated read) leave it empty and get no such headers.
#[derive(Default)]
pub struct ReadSlot(std::sync::Mutex<Option<crate::reads::Reflected>>);

impl AppState {
    /// The pool a read route without a [`ReadSlot`] reads from: the replica when one is
    /// configured and up, else as `LEDGER_READ_FALLBACK` says (no position headers).
    pub async fn read_pool(&self) -> Result<Pool, error::ApiError> {
        Ok(self.reads.choose().await?.0)
    }
}

impl ReadSlot {
    /// Chooses the read pool for this request and records what it reflects.
    pub async fn choose(&self, state: &AppState) -> Result<Pool, error::ApiError> {
        let (pool, reflected) = state.reads.choose().await?;
        *self.0.lock().expect("not poisoned") = Some(reflected);
        Ok(pool)
    }
}

#[derive(Tags)]
pub enum Tag {
    /// Stripe's deliveries.
    Webhook,
    /// Finance reads (finance or admin token).
    Read,
    /// Administration (admin token).
    Admin,
    /// What the platform reads: the change feed, tenants, entitlements (platform, finance or
    /// admin token).
    Platform,
    /// Probes.
    Operations,
}

type Apis = (
    webhook::WebhookApi,
    read::ReadApi,
    money::MoneyApi,
    revenue::RevenueApi,
    admin::AdminApi,
    ops::OpsApi,
    reconcile::ReconcileApi,
    (
        platform::PlatformApi,
        feed::FeedApi,
        endpoints::EndpointsApi,
        links::LinksApi,
    ),
);

/// The OpenAPI service over every route.
pub fn service(state: Arc<AppState>) -> OpenApiService<Apis, ()> {
    let apis = (
        webhook::WebhookApi {
            state: state.clone(),
        },
        read::ReadApi {
            state: state.clone(),
        },
        money::MoneyApi {
            state: state.clone(),
        },
        revenue::RevenueApi {
            state: state.clone(),
        },
        admin::AdminApi {
            state: state.clone(),
        },
        ops::OpsApi {
            state: state.clone(),
        },
        reconcile::ReconcileApi {
            state: state.clone(),
        },
        (
            platform::PlatformApi {
                state: state.clone(),
            },
            feed::FeedApi {
                state: state.clone(),
            },
            endpoints::EndpointsApi {
                state: state.clone(),
            },
            links::LinksApi { state },
        ),
    );
    OpenApiService::new(apis, "billing-ledger", env!("CARGO_PKG_VERSION")).description(
        "An event-sourced ledger of Stripe billing webhooks: every verified event is appended \
         once to an immutable log in PostgreSQL and folded into read models.",
    )
}

/// The whole application: the API, Swagger UI at `/docs`, the spec at `/openapi.yaml`, the
/// console at `/console`.
pub fn app(state: Arc<AppState>) -> impl poem::Endpoint {
    let service = service(state.clone());
    let routes = Arc::new(routes::RouteTable::from_spec(&service.spec()));
    let docs = service.swagger_ui();
    let spec = service.spec_endpoint_yaml();
    let tokens = auth::Tokens {
        finance: state.config.finance_tokens.clone(),
        admin: state.config.admin_tokens.clone(),
        platform: state.config.platform.platform_tokens.clone(),
    };
    let api = Route::new()
        .nest("/", service)
        .nest("/docs", docs)
        .at("/openapi.yaml", spec)
        .around({
            let routes = routes.clone();
            let state = state.clone();
            move |next, request| measured(state.clone(), routes.clone(), next, request)
        })
        .around(error::json_errors)
        .data(routes);
    // The console answers its errors as HTML pages, so it stays outside `json_errors` (and
    // outside the per-route metrics, which name the API's routes).
    Route::new()
        .nest("/console", crate::console::routes(state.clone()))
        .nest("/", api)
        .data(tokens)
        .data(webhook::BodyLimit(state.config.max_body_bytes))
        .around(limit_bodies)
        .around(read_headers)
        .around(request_span)
}

/// Middleware: counts every request and its latency by route pattern (see
/// [`crate::metrics::Metrics::request`]). It runs inside [`error::json_errors`], where the
/// matched pattern is still attached to the answer or the framework's error.
async fn measured<E: poem::Endpoint>(
    state: Arc<AppState>,
    routes: Arc<routes::RouteTable>,
    next: Arc<E>,
    request: poem::Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    use poem::PathPattern;
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let result = next.call(request).await.map(IntoResponse::into_response);
    let (pattern, status) = match &result {
        Ok(response) => (response.data::<PathPattern>(), response.status()),
        Err(error) => (error.data::<PathPattern>(), error.status()),
    };
    let route = match pattern.map(|p| &*p.0) {
        None | Some("") => crate::metrics::ROUTE_UNMATCHED,
        Some(pattern) => routes.template(pattern),
    };
    state
        .metrics
        .request(route, &method, status.as_u16(), started.elapsed());
    result
}

/// Longest `X-Request-Id` taken from a client, bytes; longer or odd ones are replaced.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// Middleware: every request runs in a span carrying its request ID (the client's
/// `X-Request-Id` when sane, else a fresh UUID), echoed in the response's `X-Request-Id`.
async fn request_span<E: poem::Endpoint>(
    next: E,
    request: poem::Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    use tracing::Instrument;
    let id = request
        .header("x-request-id")
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_BYTES_MAX
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request.id = %id, http.method = %request.method(),
        http.path = %request.uri().path());
    let mut response = next.call(request).instrument(span).await?.into_response();
    if let Ok(value) = poem::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// Longest request body of any route but the webhook (which has its own limit,
/// `LEDGER_MAX_BODY_BYTES`, and answers 408 and 413 itself): the console's forms and the admin
/// API's JSON bodies are a few KB. Bytes.
pub const REQUEST_BODY_BYTES_MAX: u64 = 1024 * 1024;

/// Middleware: a body over [`REQUEST_BODY_BYTES_MAX`] is refused before any handler reads it:
/// 413 when its `Content-Length` says so; a body without one (chunked) is cut after the limit,
/// so its handler sees a truncated form or JSON document and answers 400. Unauthenticated
/// requests (the console's sign-in form) can therefore never make the service buffer more.
async fn limit_bodies<E: poem::Endpoint>(
    next: E,
    mut request: poem::Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    use tokio::io::AsyncReadExt;
    if request.uri().path() == webhook::WEBHOOK_PATH {
        return Ok(next.call(request).await?.into_response());
    }
    let declared = request
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > REQUEST_BODY_BYTES_MAX => {
            let mut answer = poem_openapi::payload::Json(error::ErrorBody {
                error: format!(
                    "the request body is larger than this route accepts ({REQUEST_BODY_BYTES_MAX} bytes)"
                ),
            })
            .into_response();
            answer.set_status(poem::http::StatusCode::PAYLOAD_TOO_LARGE);
            answer.headers_mut().insert(
                poem::http::header::CONNECTION,
                poem::http::HeaderValue::from_static("close"),
            );
            return Ok(answer);
        }
        Some(_) => {}
        None => {
            let body = request.take_body().into_async_read();
            request.set_body(poem::Body::from_async_read(
                body.take(REQUEST_BODY_BYTES_MAX),
            ));
        }
    }
    Ok(next.call(request).await?.into_response())
}

/// Middleware: gives each request an empty [`ReadSlot`] and, when a read route filled it,
/// answers with `X-Ledger-Read-Source` (`primary` or `replica`), `X-Ledger-Position` (the log
/// head the answer includes at least), `X-Ledger-Checkpoint` (the projection checkpoint the
/// read models reflect) and, from a replica, `X-Ledger-Replica-Lag-Events` (how many events it
/// is behind the primary's head).
async fn read_headers<E: poem::Endpoint>(
    next: E,
    mut request: poem::Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    let slot = Arc::new(ReadSlot::default());
    request.extensions_mut().insert(slot.clone());
    let mut response = next.call(request).await?.into_response();
    let reflected = *slot.0.lock().expect("not poisoned");
    if let Some(reflected) = reflected {
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = poem::http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        set("x-ledger-read-source", reflected.source.as_str().to_owned());
        set("x-ledger-position", reflected.position.to_string());
        set("x-ledger-checkpoint", reflected.checkpoint.to_string());
        if let Some(lag) = reflected.lag_events {
            set("x-ledger-replica-lag-events", lag.to_string());
        }
    }
    Ok(response)
}
