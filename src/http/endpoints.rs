//! Outgoing webhook endpoints (admin token): register, list, remove, list attempts, replay.
//! The SQL is `crate::outbox::store`'s; sending is the dispatcher's.

use super::auth::TokenAuth;
use super::error::ApiError;
use super::AppState;
use crate::outbox::signing::SigningSecret;
use crate::outbox::store::{self, Attempt, Endpoint, NewEndpoint};
use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use std::sync::Arc;
use uuid::Uuid;

/// Longest endpoint URL, bytes.
pub const URL_BYTES_MAX: usize = 2_048;

/// The outgoing webhook endpoints' admin routes.
pub struct EndpointsApi {
    pub state: Arc<AppState>,
}

/// A new endpoint.
#[derive(Debug, Object)]
pub struct CreateEndpoint {
    /// Where messages are POSTed (`http://` or `https://`).
    pub url: String,
    /// Read models whose changes it receives (`tenant_pricing`, `entitlements`, ...); all when
    /// absent.
    #[oai(nullable)]
    pub read_models: Option<Vec<String>>,
    /// Feed cursor to start after; the feed's current head (changes from now on) when absent.
    #[oai(nullable)]
    pub after: Option<String>,
}

/// An endpoint, without its secret.
#[derive(Debug, Object)]
pub struct EndpointView {
    pub endpoint_id: Uuid,
    pub url: String,
    #[oai(nullable)]
    pub read_models: Option<Vec<String>>,
    /// `api` or `config` (`LEDGER_WEBHOOK_ENDPOINTS`).
    pub source: String,
    /// The last feed cursor delivered (or skipped by the filter).
    pub cursor: String,
    /// Failed attempts of the message after `cursor`.
    pub failed_attempts: i32,
    #[oai(nullable)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Set when the endpoint answered 410 or retries were exhausted; replay to enable it again.
    #[oai(nullable)]
    pub disabled_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl EndpointView {
    fn from_endpoint(e: Endpoint) -> EndpointView {
        EndpointView {
            endpoint_id: e.endpoint_id,
            url: e.url,
            read_models: e.read_models,
            source: e.source,
            cursor: e.cursor.to_string(),
            failed_attempts: e.failed_attempts,
            next_attempt_at: e.next_attempt_at,
            disabled_at: e.disabled_at,
            disabled_reason: e.disabled_reason,
            created_at: e.created_at,
        }
    }
}

/// A created endpoint, with its signing secret: shown this once.
#[derive(Debug, Object)]
pub struct CreatedEndpoint {
    #[oai(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` + base64: verify each message's `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
}

#[derive(Debug, ApiResponse)]
pub enum CreateResponse {
    /// Registered; messages start with the next change after `cursor`.
    #[oai(status = 201)]
    Created(Json<CreatedEndpoint>),
}

#[derive(Debug, ApiResponse)]
pub enum DeleteResponse {
    /// Removed; nothing more is sent to it.
    #[oai(status = 204)]
    Deleted,
}

/// Every endpoint.
#[derive(Debug, Object)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// One attempt to deliver one message.
#[derive(Debug, Object)]
pub struct AttemptView {
    pub attempt_id: i64,
    /// The change's feed cursor.
    pub cursor: String,
    /// The message's `webhook-id`.
    pub message_id: String,
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status; null when no answer came.
    #[oai(nullable)]
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    #[oai(nullable)]
    pub error: Option<String>,
}

/// An endpoint's attempts, newest first.
#[derive(Debug, Object)]
pub struct AttemptList {
    pub attempts: Vec<AttemptView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// Where to replay from.
#[derive(Debug, Object)]
pub struct Replay {
    /// Feed cursor: every change after it is sent again (`"0"`: from the beginning).
    pub after: String,
}

fn parse_after(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or_else(|| ApiError::bad_request("after is not a feed cursor"))
}

#[OpenApi]
impl EndpointsApi {
    /// Registers an outgoing webhook endpoint; the answer carries its signing secret, once.
    #[oai(
        path = "/api/billing/admin/endpoints",
        method = "post",
        tag = "super::Tag::Admin"
    )]
    async fn create(
        &self,
        auth: TokenAuth,
        body: Json<CreateEndpoint>,
    ) -> Result<CreateResponse, ApiError> {
        auth.require_admin()?;
        let url = body.0.url.trim();
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        if parsed.is_none() || url.len() > URL_BYTES_MAX {
            return Err(ApiError::bad_request(
                "url must be an http:// or https:// URL",
            ));
        }
        let after = body.0.after.as_deref().map(parse_after).transpose()?;
        let secret = SigningSecret::generate();
        let endpoint = store::create(
            &self.state.pool,
            NewEndpoint {
                url,
                secret: &secret,
                read_models: body.0.read_models,
                after,
            },
        )
        .await?;
        tracing::info!(webhook.endpoint_id = %endpoint.endpoint_id, "outgoing webhook endpoint registered");
        Ok(CreateResponse::Created(Json(CreatedEndpoint {
            endpoint: EndpointView::from_endpoint(endpoint),
            secret,
        })))
    }

    /// Every endpoint with its cursor, retry state and whether it is disabled.
    #[oai(
        path = "/api/billing/admin/endpoints",
        method = "get",
        tag = "super::Tag::Admin"
    )]
    async fn list(&self, auth: TokenAuth) -> Result<Json<EndpointList>, ApiError> {
        auth.require_admin()?;
        let endpoints = store::list(&self.state.pool.get().await?).await?;
        Ok(Json(EndpointList {
            endpoints: endpoints
                .into_iter()
                .map(EndpointView::from_endpoint)
                .collect(),
        }))
    }

    /// Removes an endpoint (and its attempts). One from configuration comes back at the next
    /// start unless removed from `LEDGER_WEBHOOK_ENDPOINTS`.
    #[oai(
        path = "/api/billing/admin/endpoints/:endpoint_id",
        method = "delete",
        tag = "super::Tag::Admin"
    )]
    async fn delete(
        &self,
        auth: TokenAuth,
        endpoint_id: Path<Uuid>,
    ) -> Result<DeleteResponse, ApiError> {
        auth.require_admin()?;
        if !store::delete(&self.state.pool, endpoint_id.0).await? {
            return Err(ApiError::not_found("endpoint"));
        }
        Ok(DeleteResponse::Deleted)
    }

    /// An endpoint's delivery attempts, newest first (status, latency, error).
    #[oai(
        path = "/api/billing/admin/endpoints/:endpoint_id/attempts",
        method = "get",
        tag = "super::Tag::Admin"
    )]
    async fn attempts(
        &self,
        auth: TokenAuth,
        endpoint_id: Path<Uuid>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<AttemptList>, ApiError> {
        auth.require_admin()?;
        if store::get(&self.state.pool, endpoint_id.0).await?.is_none() {
            return Err(ApiError::not_found("endpoint"));
        }
        let before: i64 = super::paging::cursor_or(cursor.0.as_deref(), i64::MAX)?;
        let limit = i64::from(limit.0.unwrap_or(100));
        let rows = store::attempts(&self.state.pool, endpoint_id.0, before, limit + 1).await?;
        let (rows, next_cursor) = super::paging::page(rows, limit, |a: &Attempt| a.attempt_id);
        Ok(Json(AttemptList {
            attempts: rows
                .into_iter()
                .map(|a| AttemptView {
                    attempt_id: a.attempt_id,
                    cursor: a.change_id.to_string(),
                    message_id: a.message_id,
                    attempted_at: a.attempted_at,
                    status_code: a.status_code,
                    duration_ms: a.duration_ms,
                    error: a.error,
                })
                .collect(),
            next_cursor,
        }))
    }

    /// Sends again every change after a feed cursor (and enables a disabled endpoint).
    #[oai(
        path = "/api/billing/admin/endpoints/:endpoint_id/replay",
        method = "post",
        tag = "super::Tag::Admin"
    )]
    async fn replay(
        &self,
        auth: TokenAuth,
        endpoint_id: Path<Uuid>,
        body: Json<Replay>,
    ) -> Result<Json<EndpointView>, ApiError> {
        auth.require_admin()?;
        let after = parse_after(&body.0.after)?;
        if !store::replay(&self.state.pool, endpoint_id.0, after).await? {
            return Err(ApiError::not_found("endpoint"));
        }
        let endpoint = store::get(&self.state.pool, endpoint_id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        Ok(Json(EndpointView::from_endpoint(endpoint)))
    }
}
