//! The read API (finance and admin tokens): the log, each tenant's pricing, Checkout Sessions,
//! customers and unresolved events. Lists page by keyset with an opaque cursor, so a page is
//! stable while the log grows.

use super::auth::TokenAuth;
use super::csv::{self, EventsResponse};
use super::error::ApiError;
use super::views::{
    cursor_or, decode_cursor, encode_cursor, page, CheckoutSessionList, CheckoutSessionView,
    CustomerView, DeliveryView, EventDetail, EventList, EventTenant, HistoryEntry, HistoryList,
    TenantPricingView, UnresolvedList, UnresolvedView,
};
use super::{AppState, ReadSlot};
use crate::timeline::{self, Bound, HistoryCursor};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use std::sync::Arc;
use tokio_postgres::types::ToSql;

/// Default page size of list routes.
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// Largest page size of list routes.
pub const PAGE_SIZE_MAX: u32 = 1000;

pub struct ReadApi {
    pub state: Arc<AppState>,
}

impl ReadApi {
    async fn current_pricing(
        &self,
        pool: &Pool,
        tenant_id: &str,
    ) -> Result<Json<TenantPricingView>, ApiError> {
        let client = pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT tenant_id, status, stripe_customer_id, stripe_subscription_id, price_id,
                        quantity, current_period_end, cancel_at_period_end, canceled_at,
                        last_payment_failed_at, last_paid_at, last_event_id, updated_at,
                        resolved_by, product_id
                 FROM tenant_pricing WHERE tenant_id = $1",
            )
            .await?;
        let row = client
            .query_opt(&statement, &[&tenant_id])
            .await?
            .ok_or_else(|| ApiError::not_found("tenant"))?;
        Ok(Json(TenantPricingView::from_row(&row)))
    }
}

/// Query parameters, owned so a streaming export can outlive the request.
pub type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The order of `GET /api/billing/events`, by log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first (the default).
    Asc,
    /// Newest first.
    Desc,
}

/// The filters of `GET /api/billing/events`.
struct EventFilters {
    descending: bool,
    /// Select the CSV's money columns too (the tenants and the body).
    csv: bool,
    event_type: Option<String>,
    tenant_id: Option<String>,
    object_id: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    livemode: Option<bool>,
}

impl EventFilters {
    /// The page of events past position `after` (in the chosen order), at most `limit` rows.
    fn query(&self, after: i64, limit: i64) -> (String, Params) {
        let money = if self.csv {
            ", (SELECT string_agg(t.tenant_id, ';' ORDER BY t.tenant_id) FROM event_tenants t
                WHERE t.event_id = events.event_id) AS csv_tenant_ids, body"
        } else {
            ""
        };
        let mut sql = format!(
            "SELECT position, event_id, type, created, api_version, livemode, account, object_id,
                    object_type, received_at, source{money}
             FROM events WHERE position {} $1",
            if self.descending { "<" } else { ">" }
        );
        let mut params: Params = vec![Box::new(after)];
        let mut filter = |clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(v) = &self.event_type {
            filter(" AND type = ?", Box::new(v.clone()));
        }
        if let Some(v) = &self.object_id {
            filter(" AND object_id = ?", Box::new(v.clone()));
        }
        if let Some(v) = &self.tenant_id {
            filter(
                " AND event_id IN (SELECT event_id FROM event_tenants WHERE tenant_id = ?)",
                Box::new(v.clone()),
            );
        }
        if let Some(v) = self.from {
            filter(" AND created >= ?", Box::new(v));
        }
        if let Some(v) = self.to {
            filter(" AND created <= ?", Box::new(v));
        }
        if let Some(v) = self.livemode {
            filter(" AND livemode = ?", Box::new(v));
        }
        let order = if self.descending {
            " ORDER BY position DESC LIMIT ?"
        } else {
            " ORDER BY position LIMIT ?"
        };
        filter(order, Box::new(limit));
        (sql, params)
    }
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
            tenant_id: tenant_id.0,
            object_id: object_id.0,
            from: from.0,
            to: to.0,
            livemode: livemode.0,
        };
        let query: csv::PageQuery = Box::new(move |after, limit| filters.query(after, limit));
        let pool = slot.choose(&self.state).await?;
        if wants_csv {
            let total = limit.0.map(i64::from);
            return Ok(EventsResponse::Csv(
                csv::stream(pool, query, after, total).await?,
            ));
        }
        let limit = page_size(limit.0);
        let events = csv::fetch(&pool, &query, after, limit + 1).await?;
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
        let client = slot.choose(&self.state).await?.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT position, event_id, type, created, api_version, livemode, account,
                        object_id, object_type, received_at, source, body, signature_timestamp,
                        secret_index, signature
                 FROM events WHERE event_id = $1",
            )
            .await?;
        let row = client
            .query_opt(&statement, &[&event_id.0])
            .await?
            .ok_or_else(|| ApiError::not_found("event"))?;
        let statement = client
            .prepare_cached(
                "SELECT delivery_id, received_at, duplicate, source, signature_timestamp,
                        secret_index, signature, body_sha256, body
                 FROM deliveries WHERE event_id = $1 ORDER BY delivery_id",
            )
            .await?;
        let deliveries = client.query(&statement, &[&event_id.0]).await?;
        let statement = client
            .prepare_cached(
                "SELECT tenant_id, resolved_by FROM event_tenants WHERE event_id = $1
                 ORDER BY tenant_id",
            )
            .await?;
        let tenants = client.query(&statement, &[&event_id.0]).await?;
        let checkpoint: i64 = client
            .query_one(
                "SELECT coalesce((SELECT position FROM projections WHERE name = $1), 0)",
                &[&crate::projector::PROJECTION_NAME],
            )
            .await?
            .get(0);
        let statement = client
            .prepare_cached("SELECT error FROM projection_errors WHERE event_id = $1")
            .await?;
        let error = client.query_opt(&statement, &[&event_id.0]).await?;
        Ok(Json(EventDetail::from_rows(
            &row,
            deliveries.iter().map(DeliveryView::from_row).collect(),
            tenants
                .iter()
                .map(|r| EventTenant {
                    tenant_id: r.get(0),
                    resolved_by: r.get(1),
                })
                .collect(),
            error.map(|r| r.get(0)),
            checkpoint,
            self.state.config.livemode,
        )))
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
        let bound = match (as_of.0, as_of_position.0) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give `as_of` or `as_of_position`, not both",
                ))
            }
            (Some(instant), None) => Bound::CreatedAtOrBefore(instant),
            (None, Some(position)) => Bound::PositionAtOrBefore(position),
            (None, None) => {
                let pool = slot.choose(&self.state).await?;
                return self.current_pricing(&pool, &tenant_id.0).await;
            }
        };
        timeline::state_at(
            &slot.choose(&self.state).await?,
            &tenant_id.0,
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
        let livemode = self.state.config.livemode;
        let cursor: Option<HistoryCursor> = cursor.0.as_deref().map(decode_cursor).transpose()?;
        if cursor.as_ref().is_some_and(|c| !c.is_sound(livemode)) {
            return Err(ApiError::bad_request(super::views::CURSOR_MALFORMED));
        }
        let limit = page_size(limit.0) as usize;
        let page = timeline::history_page(
            &slot.choose(&self.state).await?,
            &tenant_id.0,
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
        let client = slot.choose(&self.state).await?.get().await?;
        let sql = format!("{} WHERE id = $1", CheckoutSessionView::SELECT);
        let row = client
            .query_opt(&sql, &[&id.0])
            .await?
            .ok_or_else(|| ApiError::not_found("checkout session"))?;
        Ok(Json(CheckoutSessionView::from_row(&row)))
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
        let after: String = cursor_or(cursor.0.as_deref(), String::new())?;
        let limit = page_size(limit.0);
        let client = slot.choose(&self.state).await?.get().await?;
        let sql = format!(
            "{} WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            CheckoutSessionView::SELECT
        );
        let rows = client
            .query(&sql, &[&tenant_id.0, &after, &(limit + 1)])
            .await?;
        let sessions: Vec<_> = rows.iter().map(CheckoutSessionView::from_row).collect();
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
        let client = slot.choose(&self.state).await?.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, tenant_id, email, name, deleted, last_event_id FROM customers
                 WHERE id = $1",
            )
            .await?;
        let row = client
            .query_opt(&statement, &[&id.0])
            .await?
            .ok_or_else(|| ApiError::not_found("customer"))?;
        Ok(Json(CustomerView::from_row(&row)))
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
        let client = slot.choose(&self.state).await?.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT u.event_id, u.object_id, u.type, u.created, e.position,
                        CASE WHEN s.id IS NULL THEN 'subscription'
                             WHEN s.customer_id IS NOT NULL THEN 'customer'
                             WHEN s.subscription_id IS NOT NULL THEN 'subscription'
                             ELSE 'checkout_session' END,
                        CASE WHEN s.id IS NULL THEN u.object_id
                             ELSE coalesce(s.customer_id, s.subscription_id, s.id) END
                 FROM unresolved_events u JOIN events e USING (event_id)
                     LEFT JOIN checkout_sessions s ON s.id = u.object_id
                 WHERE (u.object_id, u.event_id) > ($1, $2)
                 ORDER BY u.object_id, u.event_id LIMIT $3",
            )
            .await?;
        let rows = client
            .query(&statement, &[&after_object, &after_event, &(limit + 1)])
            .await?;
        let unresolved: Vec<_> = rows.iter().map(UnresolvedView::from_row).collect();
        let (unresolved, next_cursor) = page(unresolved, limit, |u| {
            (u.object_id.clone(), u.event_id.clone())
        });
        Ok(Json(UnresolvedList {
            unresolved,
            next_cursor,
        }))
    }
}
