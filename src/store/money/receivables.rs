//! What remains to be collected on open invoices, read from `invoices`: the outstanding amount
//! per tenant and currency, and the aging of open invoices by days past due. The rules (what
//! is outstanding, when an invoice is due) are README "For finance"'s and the console's aging
//! section's; amounts are only ever summed within one currency.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projections::{Currency, TenantId};
use std::collections::{BTreeMap, HashMap};

/// Per tenant, an amount per currency (minor units), currencies in code order.
pub type PerTenant = HashMap<String, BTreeMap<String, i64>>;

/// Outstanding balances per tenant and currency: `amount_remaining` of `open` invoices, for
/// `tenants`, or for every tenant when `None`.
pub async fn outstanding(pool: &Pool, tenants: Option<&[String]>) -> anyhow::Result<PerTenant> {
    let client = pool.get().await?;
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

/// One cell of the aging table: open invoices of one currency in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgingCell {
    /// As stored (Stripe's lower-case code).
    pub currency: String,
    /// 0 not yet due; 1 0-30 days past due; 2 31-60; 3 61-90; 4 over 90.
    pub bucket: usize,
    pub invoices: i64,
    /// Sum of `amount_remaining`, minor units of `currency`.
    pub remaining: i64,
    /// How many of `invoices` are aged by Stripe's `due_date` (the others by finalization or
    /// creation).
    pub by_due_date: i64,
}

/// The aging of open invoices as of `now`, optionally of one tenant and one currency. An
/// invoice is due at Stripe's `due_date` when it has one, read from the body of the event that
/// last changed it (the invoices read model does not keep it); otherwise at `finalized_at`, or
/// at `created_at` if it has none. Days past due are whole days from then to `now`.
pub async fn aging(
    pool: &Pool,
    tenant_id: Option<&TenantId>,
    currency: Option<Currency>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<AgingCell>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT currency,
                    CASE WHEN due_at > $3 THEN 0
                         WHEN $3 - due_at < interval '31 days' THEN 1
                         WHEN $3 - due_at < interval '61 days' THEN 2
                         WHEN $3 - due_at < interval '91 days' THEN 3
                         ELSE 4 END,
                    count(*)::int8, sum(remaining)::int8,
                    count(*) FILTER (WHERE by_due_date)::int8
             FROM (
                 SELECT i.currency, coalesce(i.amount_remaining, 0) AS remaining,
                        coalesce(d.due_at, i.finalized_at, i.created_at) AS due_at,
                        d.due_at IS NOT NULL AS by_due_date
                 FROM invoices i
                 LEFT JOIN events e ON e.event_id = i.last_event_id
                 LEFT JOIN LATERAL (
                     SELECT CASE WHEN o ->> 'object' = 'invoice'
                                  AND json_typeof(o -> 'due_date') = 'number'
                                 THEN to_timestamp((o ->> 'due_date')::float8) END AS due_at
                     FROM (SELECT convert_from(e.body, 'UTF8')::json -> 'data' -> 'object' AS o) j
                 ) d ON true
                 WHERE i.status = 'open' AND i.currency IS NOT NULL
                   AND ($1::text IS NULL OR i.tenant_id = $1)
                   AND ($2::text IS NULL OR i.currency = $2)
             ) open
             GROUP BY 1, 2",
        )
        .await?;
    let tenant_id = tenant_id.map(TenantId::as_str);
    let currency = currency.as_ref().map(Currency::as_str);
    let rows = client
        .query(&statement, &[&tenant_id, &currency, &now])
        .await?;
    Ok(rows
        .iter()
        .map(|row| AgingCell {
            currency: row.get(0),
            bucket: row.get::<_, i32>(1) as usize,
            invoices: row.get(2),
            remaining: row.get(3),
            by_due_date: row.get(4),
        })
        .collect())
}
