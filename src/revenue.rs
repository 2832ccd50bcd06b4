//! Revenue for the finance routes: reads the events that say what subscriptions cost and
//! whose they are, and folds them with `projections::money::revenue` (the definitions live
//! there and in README "For finance"). Computed per request from the log, page by page.

use crate::timeline::{self, Bound};
use deadpool_postgres::Pool;
use projections::money::revenue::{Revenue, RevenueBuilder};
use projections::Event;

/// The event types revenue reads: subscription snapshots, and what links subscriptions and
/// customers to tenants.
pub const REVENUE_EVENT_TYPES: [&str; 16] = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.finalized",
];

/// Events read per query.
pub const REVENUE_PAGE_EVENTS: i64 = 5_000;

/// Every tenant's MRR movements (or one tenant's, folded from its own events).
pub async fn revenue(
    pool: &Pool,
    tenant_id: Option<&str>,
    livemode: bool,
) -> anyhow::Result<Revenue> {
    let mut builder = RevenueBuilder::new(livemode);
    if let Some(tenant_id) = tenant_id {
        timeline::for_each_event(pool, tenant_id, Bound::All, |event| builder.add(event)).await?;
        return Ok(builder.finish());
    }
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT position, body FROM events WHERE position > $1 AND type = ANY($2)
             ORDER BY position LIMIT $3",
        )
        .await?;
    let types: Vec<&str> = REVENUE_EVENT_TYPES.to_vec();
    let mut after = 0i64;
    loop {
        let rows = client
            .query(&statement, &[&after, &types, &REVENUE_PAGE_EVENTS])
            .await?;
        for row in &rows {
            // A body that no longer parses is reported by the projector and by `verify`.
            if let Ok(event) = Event::parse(row.get(1)) {
                builder.add(&event);
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == REVENUE_PAGE_EVENTS => after = last.get(0),
            _ => break,
        }
    }
    Ok(builder.finish())
}
