//! The revenue read model (schema/V72): the only SQL over `revenue_streams` and
//! `revenue_movements`. The fold renders each tenant's MRR movements
//! (`projections::money::mrr`, definitions in `projections::money::revenue` and README "For
//! finance"); the projector writes them here in the transaction that advances its checkpoint;
//! the revenue routes aggregate them per month in SQL, so a request costs one indexed query,
//! never a fold of the log.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use projections::money::revenue::{month_start, next_month, MonthRow, Movement, Revenue};
use projections::money::TenantRevenue;
use projections::{Currency, TenantId};
use serde::Serialize;
use std::collections::BTreeMap;

/// Rows sent per insert statement (a rebuild writes every tenant's movements at once).
pub const INSERT_ROWS_PER_STATEMENT: usize = 10_000;

/// The movement kinds, as stored and answered.
const KINDS: [&str; 5] = ["new", "reactivation", "expansion", "contraction", "churn"];

#[derive(Debug, Serialize)]
struct StreamRow<'a> {
    tenant_id: &'a str,
    currency: &'a str,
}

#[derive(Debug, Serialize)]
struct MovementRow<'a> {
    tenant_id: &'a str,
    currency: &'a str,
    /// Unix seconds.
    at: i64,
    kind: &'a str,
    mrr_before: i64,
    mrr_after: i64,
    event_id: &'a str,
}

/// Replaces the movements of every tenant in `tenants` by the ones given (an empty map
/// deletes the tenant's). Called by the projector inside its checkpoint's transaction.
pub async fn write(
    tx: &Transaction<'_>,
    tenants: &BTreeMap<String, TenantRevenue>,
) -> anyhow::Result<()> {
    if tenants.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = tenants.keys().map(String::as_str).collect();
    let delete = tx
        .prepare_cached(
            "WITH gone AS (DELETE FROM revenue_movements WHERE tenant_id = ANY($1))
             DELETE FROM revenue_streams WHERE tenant_id = ANY($1)",
        )
        .await?;
    tx.execute(&delete, &[&ids]).await?;
    let mut streams = Vec::new();
    let mut movements = Vec::new();
    for (tenant_id, currencies) in tenants {
        for (currency, list) in currencies {
            streams.push(StreamRow {
                tenant_id,
                currency,
            });
            movements.extend(list.iter().map(|m| MovementRow {
                tenant_id,
                currency,
                at: m.at,
                kind: m.kind,
                mrr_before: m.before,
                mrr_after: m.after,
                event_id: &m.event_id,
            }));
        }
    }
    let insert_streams = tx
        .prepare_cached(
            "INSERT INTO revenue_streams (tenant_id, currency)
             SELECT r.tenant_id, r.currency
             FROM jsonb_to_recordset($1::jsonb) AS r(tenant_id text, currency text)",
        )
        .await?;
    for chunk in streams.chunks(INSERT_ROWS_PER_STATEMENT) {
        tx.execute(&insert_streams, &[&tokio_postgres::types::Json(chunk)])
            .await?;
    }
    let insert_movements = tx
        .prepare_cached(
            "INSERT INTO revenue_movements
                 (tenant_id, currency, at, kind, mrr_before, mrr_after, event_id)
             SELECT r.tenant_id, r.currency, to_timestamp(r.at), r.kind, r.mrr_before,
                 r.mrr_after, r.event_id
             FROM jsonb_to_recordset($1::jsonb) AS r(tenant_id text, currency text, at bigint,
                 kind text, mrr_before bigint, mrr_after bigint, event_id text)",
        )
        .await?;
    for chunk in movements.chunks(INSERT_ROWS_PER_STATEMENT) {
        tx.execute(&insert_movements, &[&tokio_postgres::types::Json(chunk)])
            .await?;
    }
    Ok(())
}

/// Empties the revenue tables (a rebuild's swap, in its transaction).
pub async fn clear(tx: &Transaction<'_>) -> anyhow::Result<()> {
    tx.batch_execute("DELETE FROM revenue_movements; DELETE FROM revenue_streams;")
        .await?;
    Ok(())
}

/// The revenue tables, for `ANALYZE` after a rebuild.
pub const TABLES: [&str; 2] = ["revenue_streams", "revenue_movements"];

/// Which movements a revenue query covers: one currency and one tenant, or all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub currency: Option<Currency>,
    pub tenant_id: Option<&'a TenantId>,
}

impl Scope<'_> {
    /// The scope as SQL parameters: `(currency, tenant_id)`, NULL for all.
    fn params(&self) -> (Option<&str>, Option<&str>) {
        (
            self.currency.as_ref().map(Currency::as_str),
            self.tenant_id.map(TenantId::as_str),
        )
    }
}

fn utc(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// A month as a count of months since year 0 (`year * 12 + month - 1`).
fn month_index((year, month): (i64, u32)) -> i64 {
    year * 12 + i64::from(month) - 1
}

/// One row per month from `from` to `to` (inclusive, `(year, month)`) and currency in `scope`,
/// as [`Revenue::months`] computes them: sums of the stored movements grouped by month, a
/// month's opening the sum of every earlier movement (each moves MRR from its `mrr_before` to
/// its `mrr_after`), its subscribers the tenants that went above zero (`new`, `reactivation`)
/// less those that churned, up to its end.
pub async fn months(
    pool: &Pool,
    from: (i64, u32),
    to: (i64, u32),
    scope: Scope<'_>,
) -> anyhow::Result<Vec<MonthRow>> {
    let client = pool.get().await?;
    let (currency, tenant_id) = scope.params();
    let currencies = client
        .prepare_cached(
            "SELECT DISTINCT currency FROM revenue_streams
             WHERE ($1::text IS NULL OR currency = $1) AND ($2::text IS NULL OR tenant_id = $2)",
        )
        .await?;
    let mut currencies: Vec<String> = client
        .query(&currencies, &[&currency, &tenant_id])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Byte order, as the pure computation lists them (not the database's collation).
    currencies.sort_unstable();
    let sums = client
        .prepare_cached(
            "SELECT currency,
                 extract(year FROM at AT TIME ZONE 'UTC')::int8 * 12
                     + extract(month FROM at AT TIME ZONE 'UTC')::int8 - 1 AS month,
                 kind, sum(mrr_after - mrr_before)::int8, count(*)
             FROM revenue_movements
             WHERE at < $1 AND ($2::text IS NULL OR currency = $2)
                 AND ($3::text IS NULL OR tenant_id = $3)
             GROUP BY 1, 2, 3",
        )
        .await?;
    let end = utc(month_start(next_month(to)));
    let rows = client.query(&sums, &[&end, &currency, &tenant_id]).await?;
    // currency -> month -> kind -> (sum of mrr_after - mrr_before, count)
    let mut by_month: BTreeMap<(String, i64), [(i64, i64); 5]> = BTreeMap::new();
    for row in &rows {
        let kind: &str = row.get(2);
        let Some(k) = KINDS.iter().position(|x| *x == kind) else {
            anyhow::bail!("revenue_movements holds an unknown kind {kind:?}");
        };
        let slot = by_month.entry((row.get(0), row.get(1))).or_default();
        slot[k] = (row.get(3), row.get(4));
    }
    let (first, last) = (month_index(from), month_index(to));
    let mut out = Vec::new();
    let mut running: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for currency in &currencies {
        let (mut mrr, mut subscribers) = (0i64, 0i64);
        let earlier = by_month.range((currency.clone(), i64::MIN)..(currency.clone(), first));
        for (_, kinds) in earlier {
            mrr += kinds.iter().map(|(sum, _)| sum).sum::<i64>();
            subscribers += kinds[0].1 + kinds[1].1 - kinds[4].1;
        }
        running.insert(currency, (mrr, subscribers));
    }
    let mut month = from;
    for index in first..=last {
        for currency in &currencies {
            let (mrr, subscribers) = running.get_mut(currency.as_str()).expect("listed");
            let kinds = by_month
                .get(&(currency.clone(), index))
                .copied()
                .unwrap_or_default();
            let opening = *mrr;
            *mrr += kinds.iter().map(|(sum, _)| sum).sum::<i64>();
            *subscribers += kinds[0].1 + kinds[1].1 - kinds[4].1;
            out.push(MonthRow {
                month: format!("{:04}-{:02}", month.0, month.1),
                currency: currency.clone(),
                opening_mrr: opening,
                new: kinds[0].0,
                reactivation: kinds[1].0,
                expansion: kinds[2].0,
                contraction: -kinds[3].0,
                churn: -kinds[4].0,
                closing_mrr: *mrr,
                subscribers: *subscribers,
            });
        }
        month = next_month(month);
    }
    Ok(out)
}

/// Every movement in `scope` that took effect in `[start, end)` (Unix seconds), by time,
/// tenant and currency (byte order), as [`Revenue::movements`] lists them.
pub async fn movements(
    pool: &Pool,
    start: i64,
    end: i64,
    scope: Scope<'_>,
) -> anyhow::Result<Vec<Movement>> {
    let client = pool.get().await?;
    let (currency, tenant_id) = scope.params();
    let statement = client
        .prepare_cached(
            "SELECT tenant_id, currency, kind, mrr_before, mrr_after,
                 extract(epoch FROM at)::int8, event_id
             FROM revenue_movements
             WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR currency = $3)
                 AND ($4::text IS NULL OR tenant_id = $4)
             ORDER BY at, tenant_id COLLATE \"C\", currency COLLATE \"C\"",
        )
        .await?;
    let rows = client
        .query(&statement, &[&utc(start), &utc(end), &currency, &tenant_id])
        .await?;
    rows.iter().map(movement).collect()
}

fn movement(row: &tokio_postgres::Row) -> anyhow::Result<Movement> {
    let kind: &str = row.get(2);
    let Some(kind) = KINDS.iter().find(|k| **k == kind) else {
        anyhow::bail!("revenue_movements holds an unknown kind {kind:?}");
    };
    Ok(Movement {
        tenant_id: row.get(0),
        currency: row.get(1),
        kind,
        before: row.get(3),
        after: row.get(4),
        at: row.get(5),
        event_id: row.get(6),
    })
}

/// Every tenant's movements (or one tenant's), read back whole from the read model: for a
/// caller that computes several views from one [`Revenue`]. The read model holds the
/// deployment's mode only, so `_livemode` selects nothing (kept for the callers' signature).
pub async fn revenue(
    pool: &Pool,
    tenant_id: Option<&str>,
    _livemode: bool,
) -> anyhow::Result<Revenue> {
    let client = pool.get().await?;
    let streams = client
        .prepare_cached(
            "SELECT tenant_id, currency FROM revenue_streams
             WHERE $1::text IS NULL OR tenant_id = $1",
        )
        .await?;
    let mut tenants: BTreeMap<String, TenantRevenue> = BTreeMap::new();
    for row in client.query(&streams, &[&tenant_id]).await? {
        tenants
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), Vec::new());
    }
    let statement = client
        .prepare_cached(
            "SELECT tenant_id, currency, kind, mrr_before, mrr_after,
                 extract(epoch FROM at)::int8, event_id
             FROM revenue_movements WHERE $1::text IS NULL OR tenant_id = $1
             ORDER BY tenant_id, currency, at",
        )
        .await?;
    for row in client.query(&statement, &[&tenant_id]).await? {
        let movement = movement(&row)?;
        let list = tenants
            .entry(movement.tenant_id.clone())
            .or_default()
            .entry(movement.currency.clone())
            .or_default();
        list.push(movement);
    }
    Ok(Revenue::from_tenants(tenants))
}
