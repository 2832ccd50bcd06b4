//! Money figures several console pages share: the revenue fold of every tenant (computed with
//! [`crate::revenue::revenue`], the function behind `GET /api/billing/revenue`, and kept until
//! the log's head moves), each tenant's MRR now, and each tenant's outstanding balance.
//!
//! Amounts stay per currency: nothing here adds amounts of two currencies. This module reads
//! the read pool only and never writes.

use super::PageError;
use crate::http::AppState;
use projections::money::revenue::Revenue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Per tenant, an amount per currency (minor units), currencies in code order.
pub type PerTenant = HashMap<String, BTreeMap<String, i64>>;

/// The revenue of every tenant, folded from the log, with each tenant's MRR as the last
/// movement left it.
pub struct RevenueNow {
    pub revenue: Revenue,
    /// Each tenant's MRR after its last movement, per currency (zero after a churn).
    pub mrr: PerTenant,
}

/// The last fold and the log head position it was made at. A fold of the whole log takes
/// time in proportion to the log; pages that need it share one until an event is appended.
#[derive(Default)]
pub struct RevenueCache(tokio::sync::Mutex<Option<(i64, Arc<RevenueNow>)>>);

impl RevenueCache {
    /// Every tenant's revenue as of the log's head now. Concurrent callers wait for one fold
    /// instead of each making their own. 503 when the database is unavailable.
    pub async fn get(&self, state: &AppState) -> Result<Arc<RevenueNow>, PageError> {
        let pool = state.read_pool().await?;
        let head: i64 = pool
            .get()
            .await?
            .query_one("SELECT position FROM log_head", &[])
            .await?
            .get(0);
        let mut slot = self.0.lock().await;
        if let Some((at, now)) = slot.as_ref() {
            if *at == head {
                return Ok(now.clone());
            }
        }
        // The fold may see events appended after `head` was read: the next request then sees
        // a newer head and folds again, so a cached fold is never older than its key.
        let revenue = crate::revenue::revenue(&pool, None, state.config.livemode).await?;
        let now = Arc::new(RevenueNow {
            mrr: mrr_now(&revenue),
            revenue,
        });
        *slot = Some((head, now.clone()));
        Ok(now)
    }
}

/// Each tenant's MRR after its last movement, per currency.
pub fn mrr_now(revenue: &Revenue) -> PerTenant {
    let mut mrr = PerTenant::new();
    // `movements` comes in time order, so the last write per tenant and currency wins.
    for movement in revenue.movements(i64::MIN, i64::MAX) {
        mrr.entry(movement.tenant_id.clone())
            .or_default()
            .insert(movement.currency.clone(), movement.after);
    }
    mrr
}

/// Outstanding balances per tenant and currency: `amount_remaining` of `open` invoices (the
/// `outstanding` of `GET /api/billing/tenants/{id}/balance`, read from the invoices read
/// model), for `tenants`, or for every tenant when `None`.
pub async fn outstanding(
    state: &AppState,
    tenants: Option<&[String]>,
) -> Result<PerTenant, PageError> {
    let client = state.read_pool().await?.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT tenant_id, currency, sum(amount_remaining)::int8 FROM invoices
             WHERE status = 'open' AND tenant_id IS NOT NULL AND currency IS NOT NULL
               AND amount_remaining IS NOT NULL
               AND ($1::text[] IS NULL OR tenant_id = ANY($1))
             GROUP BY tenant_id, currency",
        )
        .await?;
    let rows = client.query(&statement, &[&tenants]).await?;
    let mut out = PerTenant::new();
    for row in rows {
        out.entry(row.get(0))
            .or_default()
            .insert(row.get(1), row.get(2));
    }
    Ok(out)
}
