//! Money figures several console pages share: the revenue fold of every tenant (computed with
//! [`crate::store::revenue::revenue`], the function behind `GET /api/billing/revenue`, and shared
//! between requests, see [`RevenueCache`]), each tenant's MRR now, and each tenant's
//! outstanding balance.
//!
//! Amounts stay per currency: nothing here adds amounts of two currencies. This module reads
//! the read pool only and never writes.

use super::PageError;
use crate::http::AppState;
use crate::store::money::receivables;
use projections::money::revenue::{MonthRow, Revenue};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per tenant, an amount per currency (minor units), currencies in code order.
pub use receivables::PerTenant;

/// How long a fold of every tenant's revenue is shown after the log moved on: pages that need
/// it reuse it this long, then the next request folds again (and the others keep showing the
/// older fold meanwhile, instead of waiting for it). Seconds.
pub const REVENUE_FOLD_MAX_AGE_SECS: u64 = 60;

/// The revenue of every tenant, read from the revenue read model, with each tenant's MRR as
/// the last movement left it.
pub struct RevenueNow {
    pub revenue: Revenue,
    /// Each tenant's MRR after its last movement, per currency (zero after a churn).
    pub mrr: PerTenant,
    /// The log's head position when the fold started: the fold reflects at least this.
    pub head: i64,
    folded_at: Instant,
    /// Month rows already computed from this fold, by selection (at most
    /// [`MONTH_SELECTIONS_KEPT_MAX`]; the fold never changes, so neither do they).
    months: std::sync::Mutex<HashMap<MonthsKey, Arc<Vec<MonthRow>>>>,
}

/// Month selections whose rows a fold keeps.
pub const MONTH_SELECTIONS_KEPT_MAX: usize = 64;

/// A selection of months: first, last, currency.
type MonthsKey = ((i64, u32), (i64, u32), Option<String>);

impl RevenueNow {
    /// Every tenant's rows per month and currency from `first` to `last` (inclusive),
    /// optionally one currency's: [`Revenue::months`], computed once per selection.
    pub fn months(
        &self,
        first: (i64, u32),
        last: (i64, u32),
        currency: Option<&str>,
    ) -> Arc<Vec<MonthRow>> {
        let key = (first, last, currency.map(str::to_owned));
        if let Some(rows) = self.months.lock().expect("not poisoned").get(&key) {
            return rows.clone();
        }
        let rows = Arc::new(self.revenue.months(first, last, currency, None));
        let mut kept = self.months.lock().expect("not poisoned");
        if kept.len() >= MONTH_SELECTIONS_KEPT_MAX {
            kept.clear();
        }
        kept.insert(key, rows.clone());
        rows
    }
}

/// The last read of every tenant's revenue. A read loads every movement of every tenant
/// (`revenue_movements`) and the month rows are computed from it, so pages share one: while the log has not moved, or for [`REVENUE_FOLD_MAX_AGE_SECS`] after
/// it did (pages say which position their figures reflect). One request folds at a time.
#[derive(Default)]
pub struct RevenueCache {
    last: std::sync::Mutex<Option<Arc<RevenueNow>>>,
    folding: tokio::sync::Mutex<()>,
}

impl RevenueCache {
    fn last(&self) -> Option<Arc<RevenueNow>> {
        self.last.lock().expect("not poisoned").clone()
    }

    /// Every tenant's revenue, at the log's head or at most [`REVENUE_FOLD_MAX_AGE_SECS`]
    /// older. 503 when the database is unavailable.
    pub async fn get(&self, state: &AppState) -> Result<Arc<RevenueNow>, PageError> {
        let pool = state.read_pool().await?;
        let head = crate::store::log::reads::log_head(&pool).await?.get();
        let max_age = Duration::from_secs(REVENUE_FOLD_MAX_AGE_SECS);
        let fresh = |fold: &RevenueNow| fold.head == head || fold.folded_at.elapsed() < max_age;
        if let Some(fold) = self.last().filter(|f| fresh(f)) {
            return Ok(fold);
        }
        let _folding = match self.folding.try_lock() {
            Ok(guard) => guard,
            // Another request is folding: show the last fold meanwhile, or wait for the first.
            Err(_) => match self.last() {
                Some(stale) => return Ok(stale),
                None => self.folding.lock().await,
            },
        };
        if let Some(fold) = self.last().filter(|f| fresh(f)) {
            return Ok(fold); // folded while this request waited
        }
        let revenue = crate::store::revenue::revenue(&pool, None, state.config.livemode).await?;
        let fold = Arc::new(RevenueNow {
            mrr: mrr_now(&revenue),
            revenue,
            head,
            folded_at: Instant::now(),
            months: Default::default(),
        });
        *self.last.lock().expect("not poisoned") = Some(fold.clone());
        Ok(fold)
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
    let pool = state.read_pool().await?;
    Ok(receivables::outstanding(&pool, tenants).await?)
}
