//! The read API (finance and admin tokens): the log, each tenant's pricing, Checkout Sessions,
//! customers and unresolved events. Lists page by keyset with an opaque cursor, so a page is
//! stable while the log grows.

use super::auth::TokenAuth;
use super::csv::{self, EventsResponse};
use super::error::ApiError;
use super::paging::{cursor_or, decode_cursor, encode_cursor, page};
use super::{AppState, ReadSlot};
use crate::store::log::reads::{self as event_reads, EventFilters};
use crate::store::read_models::queries;
use crate::timeline::{self, Bound, HistoryCursor};
use crate::views::{
    CheckoutSessionList, CheckoutSessionView, CustomerView, EventDetail, EventList, HistoryEntry,
    HistoryList, TenantPricingView, UnresolvedList,
};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use projections::{EventId, LogPosition, TenantId};
use std::sync::Arc;

/// Default page size of list routes.
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// Largest page size of list routes.
pub const PAGE_SIZE_MAX: u32 = 1000;

pub struct ReadApi {
    pub state: Arc<AppState>,
}

/// The order of `GET /api/billing/events`, by log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first (the default).
    Asc,
    /// Newest first.
    Desc,
}

fn page_size(limit: Option<u32>) -> i64 {
    i64::from(limit.unwrap_or(PAGE_SIZE_DEFAULT))
}

#[OpenApi]
impl ReadApi {
    /// List events in log order (oldest first, or newest first with `order=desc`), filtered.
    ///
    /// Filters combine with AND. `tenant_id` matches events attributed to the tenant by the
    /// projection; `from`/`to` bound Stripe's `created` (inclusive). Pass `next_cursor` back as
    /// `cursor` for the next page; it is `null` on the last page. With `Accept: text/csv` the
    /// answer is CSV: every matching event from `cursor` on (up to `limit` when given), streamed.
    #[oai(path = "/api/billing/events", method = "get", tag = "super::Tag::Read")]
    #[allow(clippy::too_many_arguments)]
    async fn list_events(
        &self,
        request: &poem::Request,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        #[oai(name = "type")] event_type: Query<Option<String>>,
        tenant_id: Query<Option<String>>,
        object_id: Query<Option<String>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        livemode: Query<Option<bool>>,
        order: Query<Option<Order>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page, unchanged (base64url). Give the same
        /// filters as for that page; absent for the first page.
        #[oai(validator(pattern = r"^[A-Za-z0-9_-]+$"))]
        cursor: Query<Option<String>>,
    ) -> Result<EventsResponse, ApiError> {
        let descending = order.0 == Some(Order::Desc);
        let after: i64 = cursor_or(cursor.0.as_deref(), if descending { i64::MAX } else { 0 })?;
        let wants_csv = request
            .header("accept")
            .is_some_and(|accept| accept.contains("text/csv"));
        let filters = EventFilters {
            descending,
            csv: wants_csv,
            event_type: event_type.0,
            tenant_id: tenant_id.0.as_deref().map(TenantId::parse).transpose()?,
            object_id: object_id.0,
            from: from.0,
            to: to.0,
            livemode: livemode.0,
        };
        let pool = slot.choose(&self.state).await?;
        if wants_csv {
            let total = limit.0.map(i64::from);
            return Ok(EventsResponse::Csv(
                csv::stream(pool, filters, after, total).await?,
            ));
        }
        let limit = page_size(limit.0);
        let events = event_reads::events_page(&pool, &filters, after, limit + 1).await?;
        let (events, next_cursor) = page(events, limit, |e| e.position);
        Ok(EventsResponse::Json(Json(EventList {
            events,
            next_cursor,
        })))
    }

    /// One event exactly as received, with every delivery of it.
    #[oai(
        path = "/api/billing/events/:event_id",
        method = "get",
        tag = "super::Tag::Read"
    )]
    pub async fn get_event(
        &self,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        event_id: Path<String>,
    ) -> Result<Json<EventDetail>, ApiError> {
        let event_id = EventId::parse(&event_id.0)?;
        let pool = slot.choose(&self.state).await?;
        event_reads::event_detail(&pool, &event_id, self.state.config.livemode)
            .await?
            .map(Json)
            .ok_or_else(|| ApiError::not_found("event"))
    }

    /// A tenant's current subscription state (`tenant_pricing`), or its state in the past.
    ///
    /// With `as_of` (RFC 3339), the state folded from the tenant's events Stripe created up to
    /// that instant; with `as_of_position`, from its events up to that log position. Both use
    /// the projector's fold, so `as_of` now equals the current row.
    #[oai(
        path = "/api/billing/tenants/:tenant_id/pricing",
        method = "get",
        tag = "super::Tag::Read"
    )]
    pub async fn tenant_pricing(
        &self,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        tenant_id: Path<String>,
        /// The state folded from the events Stripe created up to this instant (RFC 3339).
        /// Not with `as_of_position`.
        as_of: Query<Option<DateTime<Utc>>>,
        /// The state folded from the events the log held up to this position. Not with
        /// `as_of`.
        #[oai(validator(minimum(value = "0")))]
        as_of_position: Query<Option<i64>>,
    ) -> Result<Json<TenantPricingView>, ApiError> {
        let tenant_id = TenantId::parse(&tenant_id.0)?;
        let bound = match (as_of.0, as_of_position.0) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give `as_of` or `as_of_position`, not both",
                ))
            }
            (Some(instant), None) => Bound::CreatedAtOrBefore(instant),
            (None, Some(position)) => Bound::PositionAtOrBefore(LogPosition::new(position)?),
            (None, None) => {
                let pool = slot.choose(&self.state).await?;
                return queries::tenant_pricing(&pool, &tenant_id)
                    .await?
                    .map(Json)
                    .ok_or_else(|| ApiError::not_found("tenant"));
            }
        };
        timeline::state_at(
            &slot.choose(&self.state).await?,
            &tenant_id,
            self.state.config.livemode,
            bound,
        )
        .await?
        .map(|row| Json(TenantPricingView::from_model(&row)))
        .ok_or_else(|| ApiError::not_found("tenant state at that point"))
    }

    /// Every event that touched a tenant, in Stripe order (`created`, then log position), each
    /// with what it did to the tenant (`effect`, and `note` when it changed nothing), the
    /// fields it changed with their values before and after, and the tenant's state after it.
    ///
    /// Pages of `limit` events (default 100); pass `next_cursor` back as `cursor`. The cursor
    /// carries the fold's state after the page, so every page costs about the same however
    /// long the history; a history read page by page is exact for the events the log held
    /// when each page was read.
    #[oai(
        path = "/api/billing/tenants/:tenant_id/history",
        method = "get",
        tag = "super::Tag::Read"
    )]
    pub async fn tenant_history(
        &self,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        tenant_id: Path<String>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page, unchanged (base64url). Give the same
        /// filters as for that page; absent for the first page.
        #[oai(validator(pattern = r"^[A-Za-z0-9_-]+$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<HistoryList>, ApiError> {
        let tenant_id = TenantId::parse(&tenant_id.0)?;
        let livemode = self.state.config.livemode;
        let cursor: Option<HistoryCursor> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        if cursor.as_ref().is_some_and(|c| !c.is_sound(livemode)) {
            return Err(ApiError::bad_request(super::paging::CURSOR_MALFORMED));
        }
        let limit = page_size(limit.0) as usize;
        let page = timeline::history_page(
            &slot.choose(&self.state).await?,
            &tenant_id,
            livemode,
            cursor,
            limit,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
        Ok(Json(HistoryList {
            history: page
                .steps
                .into_iter()
                .map(HistoryEntry::from_step)
                .collect(),
            next_cursor: page.next.map(encode_cursor),
        }))
    }

    /// One Checkout Session.
    #[oai(
        path = "/api/billing/checkout-sessions/:id",
        method = "get",
        tag = "super::Tag::Read"
    )]
    pub async fn checkout_session(
        &self,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        id: Path<String>,
    ) -> Result<Json<CheckoutSessionView>, ApiError> {
        let pool = slot.choose(&self.state).await?;
        queries::checkout_session(&pool, &id.0)
            .await?
            .map(Json)
            .ok_or_else(|| ApiError::not_found("checkout session"))
    }

    /// A tenant's Checkout Sessions, by ID.
    #[oai(
        path = "/api/billing/checkout-sessions",
        method = "get",
        tag = "super::Tag::Read"
    )]
    pub async fn checkout_sessions(
        &self,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        tenant_id: Query<String>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page, unchanged (base64url). Give the same
        /// filters as for that page; absent for the first page.
        #[oai(validator(pattern = r"^[A-Za-z0-9_-]+$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<CheckoutSessionList>, ApiError> {
        let tenant_id = TenantId::parse(&tenant_id.0)?;
        let after: String = cursor_or(cursor.0.as_deref(), String::new())?;
        let limit = page_size(limit.0);
        let pool = slot.choose(&self.state).await?;
        let sessions = queries::checkout_sessions(&pool, &tenant_id, &after, limit + 1).await?;
        let (sessions, next_cursor) = page(sessions, limit, |s| s.id.clone());
        Ok(Json(CheckoutSessionList {
            checkout_sessions: sessions,
            next_cursor,
        }))
    }

    /// One Stripe customer.
    #[oai(
        path = "/api/billing/customers/:id",
        method = "get",
        tag = "super::Tag::Read"
    )]
    pub async fn customer(
        &self,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        id: Path<String>,
    ) -> Result<Json<CustomerView>, ApiError> {
        let pool = slot.choose(&self.state).await?;
        queries::customer(&pool, &id.0)
            .await?
            .map(Json)
            .ok_or_else(|| ApiError::not_found("customer"))
    }

    /// Events folded into a subscription or Checkout Session whose tenant is not known yet.
    ///
    /// They are applied to `tenant_pricing` as soon as an event links the object to a tenant;
    /// `missing_link` names the object an admin can link (`POST /api/billing/admin/tenant-links`).
    #[oai(
        path = "/api/billing/unresolved",
        method = "get",
        tag = "super::Tag::Read"
    )]
    pub async fn unresolved(
        &self,
        _auth: TokenAuth,
        slot: Data<&Arc<ReadSlot>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page, unchanged (base64url). Give the same
        /// filters as for that page; absent for the first page.
        #[oai(validator(pattern = r"^[A-Za-z0-9_-]+$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<UnresolvedList>, ApiError> {
        let (after_object, after_event): (String, String) =
            cursor_or(cursor.0.as_deref(), (String::new(), String::new()))?;
        let limit = page_size(limit.0);
        let pool = slot.choose(&self.state).await?;
        let unresolved =
            queries::unresolved(&pool, (&after_object, &after_event), limit + 1).await?;
        let (unresolved, next_cursor) = page(unresolved, limit, |u| {
            (u.object_id.clone(), u.event_id.clone())
        });
        Ok(Json(UnresolvedList {
            unresolved,
            next_cursor,
        }))
    }
}
