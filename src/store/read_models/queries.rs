//! The read models' queries: what the read API, the platform routes and the console read from
//! `tenant_pricing`, `checkout_sessions`, `customers`, `unresolved_events` and `entitlements`.
//! Every function takes a pool (the primary or a replica, as the caller chose) and the
//! parsed domain values; rows come back as the API's views or as the console's rows.

use crate::views::{CheckoutSessionView, CustomerView, TenantPricingView, UnresolvedView};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projections::TenantId;

/// The columns [`TenantPricingView::from_row`] reads, in its order.
const TENANT_PRICING_COLUMNS: &str = "tenant_id, status, stripe_customer_id,
    stripe_subscription_id, price_id, quantity, current_period_end, cancel_at_period_end,
    canceled_at, last_payment_failed_at, last_paid_at, last_event_id, updated_at, resolved_by,
    product_id";

/// The tenant's current `tenant_pricing` row; `None` when it has none.
pub async fn tenant_pricing(
    pool: &Pool,
    tenant_id: &TenantId,
) -> anyhow::Result<Option<TenantPricingView>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {TENANT_PRICING_COLUMNS} FROM tenant_pricing WHERE tenant_id = $1"
        ))
        .await?;
    let row = client.query_opt(&statement, &[&tenant_id.as_str()]).await?;
    Ok(row.as_ref().map(TenantPricingView::from_row))
}

/// The sortable columns of the console's tenant list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantOrder {
    TenantId,
    Status,
    CurrentPeriodEnd,
    UpdatedAt,
}

impl TenantOrder {
    fn column(self) -> &'static str {
        match self {
            TenantOrder::TenantId => "tenant_id",
            TenantOrder::Status => "status",
            TenantOrder::CurrentPeriodEnd => "current_period_end",
            TenantOrder::UpdatedAt => "updated_at",
        }
    }
}

/// What the console's tenant list asks for; each filter applies when given.
#[derive(Debug, Clone)]
pub struct TenantSearch<'a> {
    /// Part of the tenant ID, any case.
    pub contains: Option<&'a str>,
    /// Stripe's subscription status, exactly.
    pub status: Option<&'a str>,
    pub price_id: Option<&'a str>,
    /// Ordered by this column (nulls last), then by tenant ID.
    pub order: TenantOrder,
    pub descending: bool,
    pub limit: i64,
}

/// A tenant as the console lists it: part of its `tenant_pricing` row.
#[derive(Debug, Clone)]
pub struct TenantListed {
    pub tenant_id: String,
    pub status: Option<String>,
    pub price_id: Option<String>,
    pub quantity: Option<i64>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub last_event_id: String,
}

/// The tenants matching `search`, in its order, at most `search.limit`.
pub async fn tenants(pool: &Pool, search: &TenantSearch<'_>) -> anyhow::Result<Vec<TenantListed>> {
    let column = search.order.column();
    let direction = if search.descending { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT tenant_id, status, price_id, quantity, current_period_end, updated_at,
                last_event_id
         FROM tenant_pricing
         WHERE ($1::text IS NULL OR strpos(lower(tenant_id), lower($1)) > 0)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR price_id = $3)
         ORDER BY {column} {direction} NULLS LAST, tenant_id LIMIT $4"
    );
    let client = pool.get().await?;
    let statement = client.prepare_cached(&sql).await?;
    let rows = client
        .query(
            &statement,
            &[
                &search.contains,
                &search.status,
                &search.price_id,
                &search.limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TenantListed {
            tenant_id: row.get(0),
            status: row.get(1),
            price_id: row.get(2),
            quantity: row.get(3),
            current_period_end: row.get(4),
            updated_at: row.get(5),
            last_event_id: row.get(6),
        })
        .collect())
}

/// The columns [`CheckoutSessionView::from_row`] reads, in its order.
const CHECKOUT_SESSION_SELECT: &str = "SELECT id, tenant_id, resolved_by, status,
    payment_status, mode, customer_id, subscription_id, amount_total, currency, created_at,
    completed_at, expired_at, last_event_id FROM checkout_sessions";

/// One Checkout Session by its Stripe ID.
pub async fn checkout_session(
    pool: &Pool,
    id: &str,
) -> anyhow::Result<Option<CheckoutSessionView>> {
    let client = pool.get().await?;
    let sql = format!("{CHECKOUT_SESSION_SELECT} WHERE id = $1");
    let row = client.query_opt(&sql, &[&id]).await?;
    Ok(row.as_ref().map(CheckoutSessionView::from_row))
}

/// The tenant's Checkout Sessions with an ID after `after`, by ID, at most `limit`.
pub async fn checkout_sessions(
    pool: &Pool,
    tenant_id: &TenantId,
    after: &str,
    limit: i64,
) -> anyhow::Result<Vec<CheckoutSessionView>> {
    let client = pool.get().await?;
    let sql =
        format!("{CHECKOUT_SESSION_SELECT} WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3");
    let rows = client
        .query(&sql, &[&tenant_id.as_str(), &after, &limit])
        .await?;
    Ok(rows.iter().map(CheckoutSessionView::from_row).collect())
}

/// One Stripe customer by its ID.
pub async fn customer(pool: &Pool, id: &str) -> anyhow::Result<Option<CustomerView>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT id, tenant_id, email, name, deleted, last_event_id FROM customers
             WHERE id = $1",
        )
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    Ok(row.as_ref().map(CustomerView::from_row))
}

/// A customer of a tenant, as the console shows it.
#[derive(Debug, Clone)]
pub struct CustomerRow {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub deleted: bool,
    pub last_event_id: String,
}

/// The tenant's customers, by ID, at most `limit`.
pub async fn customers_of(
    pool: &Pool,
    tenant_id: &TenantId,
    limit: i64,
) -> anyhow::Result<Vec<CustomerRow>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT id, email, name, deleted, last_event_id FROM customers
             WHERE tenant_id = $1 ORDER BY id LIMIT $2",
        )
        .await?;
    let rows = client
        .query(&statement, &[&tenant_id.as_str(), &limit])
        .await?;
    Ok(rows
        .iter()
        .map(|row| CustomerRow {
            id: row.get(0),
            email: row.get(1),
            name: row.get(2),
            deleted: row.get(3),
            last_event_id: row.get(4),
        })
        .collect())
}

/// Unresolved events after the key `(object_id, event_id)`, in that order, at most `limit`,
/// each with the object whose link to a tenant is missing.
pub async fn unresolved(
    pool: &Pool,
    after: (&str, &str),
    limit: i64,
) -> anyhow::Result<Vec<UnresolvedView>> {
    let client = pool.get().await?;
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
        .query(&statement, &[&after.0, &after.1, &limit])
        .await?;
    Ok(rows.iter().map(UnresolvedView::from_row).collect())
}

/// The filters of the platform's tenant list; each applies when given.
#[derive(Debug, Clone, Default)]
pub struct PricedTenantFilters {
    /// Stripe's subscription status, exactly.
    pub status: Option<String>,
    pub price_id: Option<String>,
    /// The plan the plans file maps the price to.
    pub plan: Option<String>,
    /// `updated_at` at or after.
    pub updated_since: Option<DateTime<Utc>>,
}

/// A tenant's pricing with its plan and access (`entitlements`; null without a plans file).
#[derive(Debug)]
pub struct PricedTenantRow {
    pub pricing: TenantPricingView,
    pub plan: Option<String>,
    pub access: Option<String>,
}

/// The tenants with a tenant ID after `after` matching `filters`, by tenant ID, at most
/// `limit`.
pub async fn priced_tenants(
    pool: &Pool,
    filters: &PricedTenantFilters,
    after: &str,
    limit: i64,
) -> anyhow::Result<Vec<PricedTenantRow>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT p.tenant_id, p.status, p.stripe_customer_id, p.stripe_subscription_id,
                    p.price_id, p.quantity, p.current_period_end, p.cancel_at_period_end,
                    p.canceled_at, p.last_payment_failed_at, p.last_paid_at, p.last_event_id,
                    p.updated_at, p.resolved_by, p.product_id, e.plan, e.access
             FROM tenant_pricing p LEFT JOIN entitlements e USING (tenant_id)
             WHERE p.tenant_id > $1
                 AND ($2::text IS NULL OR p.status = $2)
                 AND ($3::text IS NULL OR p.price_id = $3)
                 AND ($4::text IS NULL OR e.plan = $4)
                 AND ($5::timestamptz IS NULL OR p.updated_at >= $5)
             ORDER BY p.tenant_id LIMIT $6",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &after,
                &filters.status,
                &filters.price_id,
                &filters.plan,
                &filters.updated_since,
                &limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| PricedTenantRow {
            pricing: TenantPricingView::from_row(row),
            plan: row.get(15),
            access: row.get(16),
        })
        .collect())
}
