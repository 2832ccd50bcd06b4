//! The one place errors become HTTP answers.
//!
//! Handlers return [`ApiError`]; its derive lists every status in `openapi.yaml`. An internal
//! error logs its whole cause chain once, here, and tells the client nothing internal.
//! [`json_errors`] turns the framework's own errors (unknown route, bad query parameter, missing
//! credentials) into the same `{"error": "..."}` shape.

use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use std::sync::Arc;

use super::routes::RouteTable;
use crate::store::StoreError;

/// The body of every error answer.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// What went wrong, for a person; never contains secrets, tokens or internal details.
    pub error: String,
}

/// Errors of the read and admin API.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// A parameter is malformed.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid bearer token.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// Always `Bearer` (RFC 6750).
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The token is valid but its role may not do this (a finance token on an admin route).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with work in progress (a rebuild already running).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// An error of our own (a bug): the body says nothing internal; the cause is logged.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is unavailable or too slow; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// Builds an error body.
pub fn body(message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: message.into(),
    })
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(body(message))
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound(body(format!("{what} not found")))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::Unauthorized(body("a valid bearer token is required"), "Bearer".into())
    }
}

/// The one mapping of storage failures to HTTP ([`StoreError`] says whose fault it is):
/// unavailable 503 (clients and Stripe retry), refused input 400, conflict 409, our own fault
/// 500. The cause chain is logged once, here, for 503, 409 and 500; the body never repeats it.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Refused(message) => ApiError::bad_request(message),
            StoreError::Unavailable(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "request failed: database unavailable"
                );
                ApiError::Unavailable(body("the database is unavailable; retry later"))
            }
            StoreError::Conflict(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "request refused: conflict");
                ApiError::Conflict(body("the request conflicts with stored data; retry"))
            }
            StoreError::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "request failed: internal error"
                );
                ApiError::Internal(body("internal error"))
            }
        }
    }
}

/// Any other error reaching a handler: classified by its cause chain ([`StoreError::classify`]).
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        ApiError::from(StoreError::classify(error))
    }
}

/// A raw value that is not a domain value (a tenant ID, an event ID, a currency): 400 with
/// the rule it breaks.
impl From<projections::domain::Invalid> for ApiError {
    fn from(error: projections::domain::Invalid) -> ApiError {
        ApiError::bad_request(error.0)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> ApiError {
        ApiError::from(anyhow::Error::from(error))
    }
}

impl From<crate::reads::ReadError> for ApiError {
    fn from(error: crate::reads::ReadError) -> ApiError {
        match error {
            crate::reads::ReadError::ReplicaDown => {
                ApiError::Unavailable(body("the read replica is unavailable; retry later"))
            }
            crate::reads::ReadError::Database(error) => ApiError::from(error),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> ApiError {
        ApiError::from(anyhow::Error::from(error))
    }
}

/// Middleware: any error or non-JSON error answer becomes `{"error": "..."}` in the user's
/// terms: a malformed parameter names the form it must take ([`parameter_message`]), a 405
/// lists the path's methods in `Allow` (RFC 9110 15.5.6), a 401 carries
/// `WWW-Authenticate: Bearer` (RFC 6750).
pub async fn json_errors<E: Endpoint>(next: E, request: Request) -> poem::Result<Response> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let routes = request.data::<Arc<RouteTable>>().cloned();
    let (response, message) = match next.call(request).await {
        Ok(response) => (response.into_response(), None),
        Err(error) => {
            let message = error_message(&error);
            (error.into_response(), Some(message))
        }
    };
    let mut status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(response);
    }
    // A body of another media type than the route's (or none at all) is a malformed request
    // like any other: 400, as every route documents, not the framework's 415.
    let unsupported = status == StatusCode::UNSUPPORTED_MEDIA_TYPE;
    if unsupported {
        status = StatusCode::BAD_REQUEST;
    }
    let is_json = response
        .content_type()
        .is_some_and(|c| c.starts_with("application/json"));
    if is_json && !unsupported {
        return Ok(response);
    }
    let allowed = match status {
        StatusCode::METHOD_NOT_ALLOWED => routes.and_then(|r| r.allowed(&path)),
        _ => None,
    };
    let message = match (status, message, &allowed) {
        (StatusCode::UNAUTHORIZED, _, _) => "a valid bearer token is required".to_owned(),
        (StatusCode::METHOD_NOT_ALLOWED, _, Some(allowed)) => {
            format!("{path} does not take {method}; it takes {allowed}")
        }
        (StatusCode::NOT_FOUND, _, _) => format!("no such route: {method} {path}"),
        (StatusCode::INTERNAL_SERVER_ERROR, _, _) => "internal error".to_owned(),
        (StatusCode::BAD_REQUEST, _, _) if unsupported => {
            "the request body must be JSON, sent with Content-Type: application/json".to_owned()
        }
        (_, Some(m), _) if !m.is_empty() => m,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut json = Json(ErrorBody { error: message }).into_response();
    json.set_status(status);
    if let Some(allowed) = allowed.and_then(|a| HeaderValue::from_str(&a).ok()) {
        json.headers_mut().insert(header::ALLOW, allowed);
    }
    // Our own 401s say what they need; this covers the framework's (a missing bearer token).
    if status == StatusCode::UNAUTHORIZED {
        json.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    Ok(json)
}

/// What a framework error says to the client: parameters and bodies in the user's terms, other
/// errors as the framework words them.
fn error_message(error: &poem::Error) -> String {
    use poem_openapi::error::{ParseParamError, ParsePathError, ParseRequestPayloadError};
    if let Some(e) = error.downcast_ref::<ParseParamError>() {
        parameter_message(e.name, &e.reason)
    } else if let Some(e) = error.downcast_ref::<ParsePathError>() {
        parameter_message(e.name, &e.reason)
    } else if let Some(e) = error.downcast_ref::<ParseRequestPayloadError>() {
        format!(
            "the request body must be a JSON object as documented: {}",
            e.reason
        )
    } else {
        error.to_string()
    }
}

/// The form a parameter must take, by name (the names are the API's own; every route that
/// shares a name shares its form). An absent required parameter is named as such.
pub fn parameter_message(name: &str, reason: &str) -> String {
    if reason.contains("expects an input value") || reason.contains("missing") {
        return format!("`{name}` is required");
    }
    if name == "cursor" {
        return super::paging::CURSOR_MALFORMED.to_owned();
    }
    // The revenue routes' `from` and `to` are months: their validator's pattern says so.
    if matches!(name, "from" | "to" | "month") && reason.contains("(0[1-9]|1[0-2])") {
        return format!("`{name}` must be a month, YYYY-MM, from 1970-01 to 9999-12");
    }
    let form = match name {
        "from" | "to" | "as_of" => "an RFC 3339 time such as 2025-01-31T00:00:00Z",
        "limit" => "a whole number from 1 to 1000",
        "as_of_position" => "a log position: a whole number, 0 or more",
        "rebuild_id" => "a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8",
        "livemode" => "true or false",
        "order" => "asc or desc",
        _ => return format!("`{name}` is malformed"),
    };
    format!("`{name}` must be {form}")
}
