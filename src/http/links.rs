//! Admin tenant links (`POST /api/billing/admin/tenant-links`): a correction is an event too.
//!
//! An admin links a customer or a subscription to a tenant for events whose tenant Stripe never
//! named. The link is appended to the log as an event of the ledger's own (ID `evt_ledger_` +
//! 32 hex digits, type [`TENANT_LINK_EVENT_TYPE`], `source` `admin`, who and why in its body)
//! through the same appender and `ledger_append` as a webhook, so it is hash-chained, listed by
//! `/events` and folded by the projector like any event (`projections::facts`, rule
//! `admin_link`). This module never writes a read model.
//!
//! Re-linking: an object an admin already linked to another tenant is refused (409); linking it
//! again to the same tenant answers 200 with the existing link. Requests on one object are
//! serialized by a session advisory lock held from the check to the append's commit, so two
//! admins cannot link one object to two tenants at once; a request that finds it held answers
//! 409 at once (waiting would hold a pooled connection the webhooks need). (Were two such links in the log
//! anyway, the fold keeps the earliest by `created`, then event ID: the same whatever order.)

use super::auth::{Role, TokenAuth};
use super::error::ApiError;
use super::AppState;
use crate::event_log::{Delivery, Source};
use crate::store::log;
use bytes::Bytes;
use chrono::Utc;
use deadpool_postgres::Object as Client;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use projections::facts::{LinkedObject, LEDGER_EVENT_ID_PREFIX, TENANT_LINK_EVENT_TYPE};
use projections::Event;
use serde_json::json;
use std::sync::Arc;

/// Longest `reason`, bytes.
pub const REASON_BYTES_MAX: usize = 1_000;

/// The admin routes that append events of the ledger's own.
pub struct LinksApi {
    pub state: Arc<AppState>,
}

/// A JSON string and only a string: poem-openapi's `String` also takes a number or a boolean
/// and turns it into text, and a link is permanent, so `"tenant_id": 123` must be refused (400)
/// rather than recorded as tenant `"123"`. Documented and validated as a string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct JsonText(pub String);

impl std::ops::Deref for JsonText {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl std::fmt::Display for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl poem_openapi::types::Type for JsonText {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl poem_openapi::types::ParseFromJSON for JsonText {
    fn parse_from_json(
        value: Option<serde_json::Value>,
    ) -> poem_openapi::types::ParseResult<JsonText> {
        match value {
            Some(serde_json::Value::String(text)) => Ok(JsonText(text)),
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

impl poem_openapi::types::ToJSON for JsonText {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

/// A tenant link to make.
#[derive(Debug, Object)]
pub struct CreateTenantLink {
    /// The Stripe customer (`cus_...`) or subscription (`sub_...`) to link: the prefix, then
    /// letters, digits and underscores.
    #[oai(validator(pattern = r"^(cus|sub)_[A-Za-z0-9_]+$", max_length = 255))]
    pub object_id: JsonText,
    /// The tenant its events belong to: 1 to 63 characters (at most 255 bytes), no control
    /// characters, no invisible formatting characters (zero-width and bidirectional marks,
    /// which make two IDs look alike), no surrounding spaces.
    #[oai(validator(
        pattern = r"^[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff](?:[^\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff])?$",
        max_length = 63
    ))]
    pub tenant_id: JsonText,
    /// Why, for the record: 1 to 250 characters (at most 1,000 bytes), not only spaces, no
    /// NUL; kept in the event's body.
    #[oai(validator(pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$", max_length = 250))]
    pub reason: JsonText,
}

/// The event that records a link.
#[derive(Debug, Object)]
pub struct TenantLinkView {
    /// `evt_ledger_...`: the event's ID in the log.
    pub event_id: String,
    /// Its log position.
    pub position: i64,
    pub object_id: String,
    pub tenant_id: String,
}

#[derive(Debug, ApiResponse)]
pub enum TenantLinkResponse {
    /// Appended to the log; the projector folds it like any event.
    #[oai(status = 201)]
    Created(Json<TenantLinkView>),
    /// The object is already linked by an admin to this tenant: that link's event.
    #[oai(status = 200)]
    Existing(Json<TenantLinkView>),
}

fn check(body: &CreateTenantLink) -> Result<LinkedObject, ApiError> {
    let object = LinkedObject::parse(&body.object_id).ok_or_else(|| {
        ApiError::bad_request("object_id must be a customer (cus_...) or a subscription (sub_...)")
    })?;
    projections::TenantId::parse_typed(&body.tenant_id)
        .map_err(|invalid| ApiError::bad_request(invalid.to_string()))?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > REASON_BYTES_MAX || reason.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "reason must be 1 to {REASON_BYTES_MAX} bytes of text"
        )));
    }
    Ok(object)
}

/// The link event's body, shaped as a Stripe event so the log, the fold and every reader take
/// it as they take Stripe's.
fn link_event(state: &AppState, body: &CreateTenantLink, role: Role) -> anyhow::Result<Delivery> {
    let now = Utc::now();
    let event_id = format!("{LEDGER_EVENT_ID_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let bytes = serde_json::to_vec(&json!({
        "id": event_id,
        "object": "event",
        "type": TENANT_LINK_EVENT_TYPE,
        "created": now.timestamp(),
        "livemode": state.config.livemode,
        "data": {"object": {
            "id": body.object_id,
            "object": "ledger.tenant_link",
            "tenant_id": body.tenant_id,
            "reason": body.reason.trim(),
            "actor": {"role": format!("{role:?}").to_lowercase()},
        }},
    }))?;
    Ok(Delivery {
        event: Event::parse(&bytes)?,
        body: Bytes::from(bytes),
        received_at: now,
        source: Source::Admin,
        signature_timestamp: None,
        secret_index: None,
        signature: None,
    })
}

#[OpenApi]
impl LinksApi {
    /// Links a customer or a subscription to a tenant (admin token), as an event of the
    /// ledger's own appended to the log. The link outranks every link learned from Stripe and
    /// resolves the unresolved events it covers (see README, "The fold").
    #[oai(
        path = "/api/billing/admin/tenant-links",
        method = "post",
        tag = "super::Tag::Admin"
    )]
    pub async fn create(
        &self,
        auth: TokenAuth,
        body: Json<CreateTenantLink>,
    ) -> Result<TenantLinkResponse, ApiError> {
        auth.require_admin()?;
        let object = check(&body.0)?;
        let client = self.state.pool.get().await?;
        if !log::lock_object_links(&client, object.id()).await? {
            return Err(ApiError::Conflict(super::error::body(format!(
                "another link request for {} is in progress; retry when it ends",
                body.object_id
            ))));
        }
        let answer = self.create_locked(&client, &body.0, auth.0).await;
        let unlocked = log::unlock_object_links(&client, object.id()).await;
        if unlocked.is_err() {
            // The session's lock must not outlive this request on a pooled connection.
            drop(deadpool_postgres::Object::take(client));
        }
        answer
    }
}

impl LinksApi {
    async fn create_locked(
        &self,
        client: &Client,
        body: &CreateTenantLink,
        role: Role,
    ) -> Result<TenantLinkResponse, ApiError> {
        let view = |event_id, position| TenantLinkView {
            event_id,
            position,
            object_id: body.object_id.0.clone(),
            tenant_id: body.tenant_id.0.clone(),
        };
        if let Some(link) =
            log::earliest_admin_link(client, &body.object_id, TENANT_LINK_EVENT_TYPE).await?
        {
            if link.tenant_id != *body.tenant_id {
                return Err(ApiError::Conflict(super::error::body(format!(
                    "{} is already linked to another tenant by {}",
                    body.object_id, link.event_id
                ))));
            }
            let (event_id, position) = (link.event_id.as_str().to_owned(), link.position.get());
            return Ok(TenantLinkResponse::Existing(Json(view(event_id, position))));
        }
        let delivery = link_event(&self.state, body, role)?;
        let event_id = delivery.event.id.clone();
        let appended = self
            .state
            .appender
            .append(delivery)
            .await
            .map_err(anyhow::Error::from)?;
        self.state.wake.notify_one();
        tracing::info!(
            ledger.event_id = %event_id,
            stripe.object_id = %body.object_id,
            tenant.id = %body.tenant_id,
            "admin tenant link appended"
        );
        Ok(TenantLinkResponse::Created(Json(view(
            event_id,
            appended.position,
        ))))
    }
}
