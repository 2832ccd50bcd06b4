//! The read API's, history's and console's reads of the log (`events`, `deliveries`) with the
//! projection's view of each event (`event_tenants`, `projection_errors`, the checkpoint in
//! `projections`).
//!
//! Part of the log's store module ([`super`]); the appender ([`crate::event_log`]) owns the
//! writes. Nothing above the store issues SQL on these tables for the read API. Lists page by
//! log position (keyset), so a page is stable while the log grows.

use crate::views::{DeliveryView, EventDetail, EventSummary, EventTenant};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projections::{EventId, LogPosition, TenantId};
use tokio_postgres::types::ToSql;

/// Query parameters, owned so a streaming export can outlive the request.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The filters of `GET /api/billing/events`; they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct EventFilters {
    /// Newest first (by log position) instead of oldest first.
    pub descending: bool,
    /// Select the CSV's money columns too (the tenants and the body).
    pub csv: bool,
    /// Stripe's event `type`, exactly.
    pub event_type: Option<String>,
    /// Events the projection attributed to this tenant (`event_tenants`).
    pub tenant_id: Option<TenantId>,
    /// The ID of the event's `data.object`.
    pub object_id: Option<String>,
    /// Stripe's `created`, at or after.
    pub from: Option<DateTime<Utc>>,
    /// Stripe's `created`, at or before.
    pub to: Option<DateTime<Utc>>,
    pub livemode: Option<bool>,
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
                Box::new(v.as_str().to_owned()),
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

/// One page of events matching `filters` past position `after` (below it when descending; a
/// raw keyset bound, so `i64::MAX` starts a descending list), at most `limit`. Errors keep
/// PostgreSQL's cause, so a refused parameter still maps to 400.
pub async fn events_page(
    pool: &Pool,
    filters: &EventFilters,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<EventSummary>> {
    let (sql, params) = filters.query(after, limit);
    let client = pool.get().await?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &refs).await?;
    Ok(rows.iter().map(EventSummary::from_row).collect())
}

/// One event exactly as stored, with every delivery of it, the tenants it was attributed to,
/// its projection error if any, and whether the checkpoint has passed it (`livemode` decides
/// what the projection made of it). `None` when the log does not hold it.
pub async fn event_detail(
    pool: &Pool,
    event_id: &EventId,
    livemode: bool,
) -> anyhow::Result<Option<EventDetail>> {
    let client = pool.get().await?;
    let event_id = event_id.as_str();
    let statement = client
        .prepare_cached(
            "SELECT position, event_id, type, created, api_version, livemode, account,
                    object_id, object_type, received_at, source, body, signature_timestamp,
                    secret_index, signature
             FROM events WHERE event_id = $1",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&event_id]).await? else {
        return Ok(None);
    };
    let statement = client
        .prepare_cached(
            "SELECT delivery_id, received_at, duplicate, source, signature_timestamp,
                    secret_index, signature, body_sha256, body
             FROM deliveries WHERE event_id = $1 ORDER BY delivery_id",
        )
        .await?;
    let deliveries = client.query(&statement, &[&event_id]).await?;
    let statement = client
        .prepare_cached(
            "SELECT tenant_id, resolved_by FROM event_tenants WHERE event_id = $1
             ORDER BY tenant_id",
        )
        .await?;
    let tenants = client.query(&statement, &[&event_id]).await?;
    let checkpoint: i64 = client
        .query_one(
            "SELECT coalesce((SELECT position FROM projections WHERE name = $1), 0)",
            &[&crate::store::projector::PROJECTION_NAME],
        )
        .await?
        .get(0);
    let statement = client
        .prepare_cached("SELECT error FROM projection_errors WHERE event_id = $1")
        .await?;
    let error = client.query_opt(&statement, &[&event_id]).await?;
    Ok(Some(EventDetail::from_rows(
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
        livemode,
    )))
}

/// An event of a tenant as stored: its position, when it was received, its body's bytes.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: LogPosition,
    pub received_at: DateTime<Utc>,
    pub body: Vec<u8>,
}

/// The tenant's events in Stripe order (`created`, then position) strictly after
/// `(created, position)`, at most `limit`. Walks the log in that order from the bound, keeping
/// the tenant's events: with `LIMIT`, PostgreSQL stops after the page (or, for a tenant with
/// few events, reads just those and sorts them).
pub async fn tenant_events_after(
    pool: &Pool,
    tenant_id: &TenantId,
    after: (DateTime<Utc>, LogPosition),
    limit: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT e.position, e.received_at, e.body FROM events e
             WHERE (e.created, e.position) > ($2, $3)
               AND EXISTS (SELECT 1 FROM event_tenants t
                           WHERE t.tenant_id = $1 AND t.event_id = e.event_id)
             ORDER BY e.created, e.position LIMIT $4",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&tenant_id.as_str(), &after.0, &after.1.get(), &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredEvent {
                position: LogPosition::new(row.get(0))?,
                received_at: row.get(1),
                body: row.get(2),
            })
        })
        .collect()
}

/// Bodies fetched from the database at a time by [`for_each_tenant_body`].
pub const TENANT_BODIES_FETCH_ROWS: i32 = 1_000;

/// Calls `visit` with the body of every one of the tenant's events created at or before
/// `created` (when given) and at or before `position` (when given), in no particular order,
/// and returns how many there were. Read through a portal in pages of
/// [`TENANT_BODIES_FETCH_ROWS`]: each fetch is its own statement for `statement_timeout`, so a
/// long read is not cut off by the limit meant for one query, and no count caps it.
pub async fn for_each_tenant_body(
    pool: &Pool,
    tenant_id: &TenantId,
    created: Option<DateTime<Utc>>,
    position: Option<LogPosition>,
    mut visit: impl FnMut(&[u8]),
) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT e.body FROM event_tenants t
             JOIN events e ON e.event_id = t.event_id
             WHERE t.tenant_id = $1
               AND ($2::timestamptz IS NULL OR e.created <= $2)
               AND ($3::int8 IS NULL OR e.position <= $3)",
        )
        .await?;
    let position = position.map(LogPosition::get);
    let tx = client.build_transaction().read_only(true).start().await?;
    let portal = tx
        .bind(&statement, &[&tenant_id.as_str(), &created, &position])
        .await?;
    let mut count = 0;
    loop {
        let rows = tx.query_portal(&portal, TENANT_BODIES_FETCH_ROWS).await?;
        count += rows.len();
        for row in &rows {
            visit(row.get(0));
        }
        if rows.len() < TENANT_BODIES_FETCH_ROWS as usize {
            break;
        }
    }
    tx.commit().await?;
    Ok(count)
}

/// The log's head: the position of the last event appended (0 for an empty log).
pub async fn log_head(pool: &Pool) -> anyhow::Result<LogPosition> {
    let position: i64 = pool
        .get()
        .await?
        .query_one("SELECT position FROM log_head", &[])
        .await?
        .get(0);
    Ok(LogPosition::new(position)?)
}
