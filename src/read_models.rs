//! Writing the rows the fold renders into the read-model tables.
//!
//! Called only by the projector, inside the transaction that also advances its checkpoint, so
//! rows and checkpoint are always consistent. Rows are upserted in bulk with `unnest`, one
//! statement per table.

use crate::event_log::unix;
use crate::store::projector::{RecordedError, PROJECTION_NAME};
use deadpool_postgres::{Pool, Transaction};
use projections::{Changes, ResolvedBy};
use tokio_postgres::error::SqlState;

/// Applies `changes`: upserts and deletes `tenant_pricing`, upserts `checkout_sessions` and
/// `customers`, replaces each object's unresolved events, records event-tenant attributions,
/// and writes the money tables (through [`crate::money_store`], their one writer).
pub async fn write(tx: &Transaction<'_>, changes: &Changes) -> anyhow::Result<()> {
    write_tenant_pricing(tx, changes).await?;
    write_checkout_sessions(tx, changes).await?;
    write_customers(tx, changes).await?;
    write_unresolved(tx, changes).await?;
    write_event_tenants(tx, &changes.event_tenants).await?;
    crate::money_store::write(tx, &changes.money).await?;
    Ok(())
}

/// Rows inserted per statement when attributions are written in bulk.
const ATTRIBUTION_ROWS_PER_STATEMENT: usize = 20_000;

/// Event-tenant attributions: (tenant ID, event ID, rule), as the fold hands them over.
pub type Attributions = std::collections::BTreeSet<(String, String, projections::ResolvedBy)>;

/// `attributions` with one rule per (tenant, event): the least by [`ResolvedBy::ALL`]'s order
/// (the set is sorted, so it comes first).
fn least_rules(attributions: &Attributions) -> impl Iterator<Item = (&str, &str, ResolvedBy)> {
    let mut previous: Option<(&str, &str)> = None;
    attributions
        .iter()
        .filter_map(move |(tenant_id, event_id, rule)| {
            let pair = (tenant_id.as_str(), event_id.as_str());
            (previous.replace(pair) != Some(pair)).then_some((pair.0, pair.1, *rule))
        })
}

/// `ARRAY['checkout_client_reference_id', ...]`: the rules in [`ResolvedBy::ALL`]'s order, for
/// ranking them in SQL with `array_position`.
fn rule_order() -> String {
    let names: Vec<String> = ResolvedBy::ALL
        .iter()
        .map(|rule| format!("'{}'", rule.as_str()))
        .collect();
    format!("ARRAY[{}]", names.join(", "))
}

/// Records event-tenant attributions in `event_tenants`, in statements of bounded size. When
/// several rules attribute one event to one tenant, over any number of calls, the least by
/// [`ResolvedBy::ALL`] is kept, so the table does not depend on how events were batched (a
/// rebuild ends with the same rules).
async fn write_event_tenants(
    tx: &Transaction<'_>,
    attributions: &Attributions,
) -> anyhow::Result<()> {
    let rows: Vec<_> = least_rules(attributions).collect();
    let order = rule_order();
    for chunk in rows.chunks(ATTRIBUTION_ROWS_PER_STATEMENT) {
        let tenants: Vec<&str> = chunk.iter().map(|(t, _, _)| *t).collect();
        let events: Vec<&str> = chunk.iter().map(|(_, e, _)| *e).collect();
        let rules: Vec<&str> = chunk.iter().map(|(_, _, r)| r.as_str()).collect();
        tx.execute(
            &format!(
                "INSERT INTO event_tenants AS t (tenant_id, event_id, resolved_by)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (tenant_id, event_id) DO UPDATE SET resolved_by = excluded.resolved_by
                 WHERE array_position({order}, excluded.resolved_by)
                     < array_position({order}, t.resolved_by)"
            ),
            &[&tenants, &events, &rules],
        )
        .await?;
    }
    Ok(())
}

/// Streams a rebuild's attributions into the unindexed staging table `table` with one binary
/// `COPY` (several times cheaper for PostgreSQL than `INSERT ... ON CONFLICT` into an indexed
/// table), taking sets from `batches` until the sender is dropped. The `COPY` lasts the whole
/// fold, so it runs on a [`crate::db::bulk_connection`].
///
/// Of several rules attributing one event to one tenant within a set, only the least is
/// copied, as [`write_event_tenants`] keeps it; pairs repeated across sets are reduced the
/// same way by [`index_staged_event_tenants`].
pub async fn copy_event_tenants(
    pool: &Pool,
    table: &str,
    mut batches: tokio::sync::mpsc::Receiver<Attributions>,
) -> anyhow::Result<()> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let client = crate::db::bulk_connection(pool).await?;
    let sink = client
        .copy_in(&format!(
            "COPY {table} (tenant_id, event_id, resolved_by) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::TEXT, Type::TEXT, Type::TEXT]
    ));
    while let Some(attributions) = batches.recv().await {
        for (tenant_id, event_id, rule) in least_rules(&attributions) {
            writer
                .as_mut()
                .write(&[&tenant_id, &event_id, &rule.as_str()])
                .await?;
        }
    }
    writer.finish().await?;
    Ok(())
}

/// Gives the staging table `table` the indexes of `event_tenants` (schema/V2), named
/// `{table}_pkey` and `{table}_event`, and fresh planner statistics. Built once the rows are
/// in, which costs PostgreSQL far less than maintaining them row by row; the two indexes are
/// built at once on two connections (`CREATE INDEX` takes a SHARE lock, which does not
/// conflict with itself; `ANALYZE` and `ALTER TABLE` do conflict, so they come after).
///
/// If a (tenant, event) pair was copied twice (attributed again in a later batch), all but the
/// least rule by [`ResolvedBy::ALL`] are deleted first, as [`write_event_tenants`] would keep.
pub async fn index_staged_event_tenants(pool: &Pool, table: &str) -> anyhow::Result<()> {
    let (first, second) = tokio::try_join!(
        crate::db::bulk_connection(pool),
        crate::db::bulk_connection(pool)
    )?;
    let unique = format!("CREATE UNIQUE INDEX {table}_pkey ON {table} (tenant_id, event_id)");
    let unique_index = async {
        match first.batch_execute(&unique).await {
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let order = rule_order();
                let deduplicate = format!(
                    "DELETE FROM {table} WHERE ctid IN (
                         SELECT ctid FROM (SELECT ctid, row_number() OVER
                             (PARTITION BY tenant_id, event_id
                              ORDER BY array_position({order}, resolved_by)) AS n
                             FROM {table}) d
                         WHERE n > 1);
                     {unique}"
                );
                first.batch_execute(&deduplicate).await
            }
            other => other,
        }
    };
    let by_event = format!("CREATE INDEX {table}_event ON {table} (event_id)");
    tokio::try_join!(unique_index, second.batch_execute(&by_event))?;
    first
        .batch_execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY USING INDEX {table}_pkey;
             ANALYZE {table};"
        ))
        .await?;
    Ok(())
}

async fn write_tenant_pricing(tx: &Transaction<'_>, changes: &Changes) -> anyhow::Result<()> {
    let deleted: Vec<&str> = changes
        .tenant_pricing
        .iter()
        .filter(|(_, row)| row.is_none())
        .map(|(tenant, _)| tenant.as_str())
        .collect();
    if !deleted.is_empty() {
        tx.execute(
            &tx.prepare_cached("DELETE FROM tenant_pricing WHERE tenant_id = ANY($1)")
                .await?,
            &[&deleted],
        )
        .await?;
    }
    let rows: Vec<_> = changes.tenant_pricing.values().flatten().collect();
    if rows.is_empty() {
        return Ok(());
    }
    let tenant_id: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    let status: Vec<Option<&str>> = rows.iter().map(|r| r.status.map(|s| s.as_str())).collect();
    let customer: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.stripe_customer_id.as_deref())
        .collect();
    let subscription: Vec<&str> = rows
        .iter()
        .map(|r| r.stripe_subscription_id.as_str())
        .collect();
    let price: Vec<Option<&str>> = rows.iter().map(|r| r.price_id.as_deref()).collect();
    let product: Vec<Option<&str>> = rows.iter().map(|r| r.product_id.as_deref()).collect();
    let quantity: Vec<Option<i64>> = rows.iter().map(|r| r.quantity).collect();
    let period_end: Vec<_> = rows
        .iter()
        .map(|r| r.current_period_end.map(unix))
        .collect();
    let cancel: Vec<bool> = rows.iter().map(|r| r.cancel_at_period_end).collect();
    let canceled_at: Vec<_> = rows.iter().map(|r| r.canceled_at.map(unix)).collect();
    let failed_at: Vec<_> = rows
        .iter()
        .map(|r| r.last_payment_failed_at.map(unix))
        .collect();
    let paid_at: Vec<_> = rows.iter().map(|r| r.last_paid_at.map(unix)).collect();
    let last_event: Vec<&str> = rows.iter().map(|r| r.last_event_id.as_str()).collect();
    let updated_at: Vec<_> = rows.iter().map(|r| unix(r.updated_at)).collect();
    let resolved_by: Vec<&str> = rows.iter().map(|r| r.resolved_by.as_str()).collect();
    tx.execute(&tx.prepare_cached("INSERT INTO tenant_pricing (tenant_id, status, stripe_customer_id, stripe_subscription_id,
             price_id, quantity, current_period_end, cancel_at_period_end, canceled_at,
             last_payment_failed_at, last_paid_at, last_event_id, updated_at, resolved_by,
             product_id)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::bigint[], $7::timestamptz[], $8::boolean[], $9::timestamptz[],
             $10::timestamptz[], $11::timestamptz[], $12::text[], $13::timestamptz[], $14::text[],
             $15::text[])
         ON CONFLICT (tenant_id) DO UPDATE SET status = excluded.status,
             stripe_customer_id = excluded.stripe_customer_id,
             stripe_subscription_id = excluded.stripe_subscription_id,
             price_id = excluded.price_id, quantity = excluded.quantity,
             current_period_end = excluded.current_period_end,
             cancel_at_period_end = excluded.cancel_at_period_end,
             canceled_at = excluded.canceled_at,
             last_payment_failed_at = excluded.last_payment_failed_at,
             last_paid_at = excluded.last_paid_at, last_event_id = excluded.last_event_id,
             updated_at = excluded.updated_at, resolved_by = excluded.resolved_by,
             product_id = excluded.product_id").await?,
        &[
            &tenant_id,
            &status,
            &customer,
            &subscription,
            &price,
            &quantity,
            &period_end,
            &cancel,
            &canceled_at,
            &failed_at,
            &paid_at,
            &last_event,
            &updated_at,
            &resolved_by,
            &product,
        ],
    )
    .await?;
    Ok(())
}

async fn write_checkout_sessions(tx: &Transaction<'_>, changes: &Changes) -> anyhow::Result<()> {
    let rows = &changes.checkout_sessions;
    if rows.is_empty() {
        return Ok(());
    }
    let id: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let tenant: Vec<Option<&str>> = rows.iter().map(|r| r.tenant_id.as_deref()).collect();
    let resolved_by: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.resolved_by.map(|b| b.as_str()))
        .collect();
    let status: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let payment_status: Vec<Option<&str>> =
        rows.iter().map(|r| r.payment_status.as_deref()).collect();
    let mode: Vec<Option<&str>> = rows.iter().map(|r| r.mode.as_deref()).collect();
    let customer: Vec<Option<&str>> = rows.iter().map(|r| r.customer_id.as_deref()).collect();
    let subscription: Vec<Option<&str>> =
        rows.iter().map(|r| r.subscription_id.as_deref()).collect();
    let amount: Vec<Option<i64>> = rows.iter().map(|r| r.amount_total).collect();
    let currency: Vec<Option<&str>> = rows.iter().map(|r| r.currency.as_deref()).collect();
    let created_at: Vec<_> = rows.iter().map(|r| r.created_at.map(unix)).collect();
    let completed_at: Vec<_> = rows.iter().map(|r| r.completed_at.map(unix)).collect();
    let expired_at: Vec<_> = rows.iter().map(|r| r.expired_at.map(unix)).collect();
    let last_event: Vec<&str> = rows.iter().map(|r| r.last_event_id.as_str()).collect();
    tx.execute(&tx.prepare_cached("INSERT INTO checkout_sessions (id, tenant_id, resolved_by, status, payment_status, mode,
             customer_id, subscription_id, amount_total, currency, created_at, completed_at,
             expired_at, last_event_id)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::timestamptz[],
             $12::timestamptz[], $13::timestamptz[], $14::text[])
         ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id,
             resolved_by = excluded.resolved_by, status = excluded.status,
             payment_status = excluded.payment_status, mode = excluded.mode,
             customer_id = excluded.customer_id, subscription_id = excluded.subscription_id,
             amount_total = excluded.amount_total, currency = excluded.currency,
             created_at = excluded.created_at, completed_at = excluded.completed_at,
             expired_at = excluded.expired_at, last_event_id = excluded.last_event_id").await?,
        &[
            &id,
            &tenant,
            &resolved_by,
            &status,
            &payment_status,
            &mode,
            &customer,
            &subscription,
            &amount,
            &currency,
            &created_at,
            &completed_at,
            &expired_at,
            &last_event,
        ],
    )
    .await?;
    Ok(())
}

async fn write_customers(tx: &Transaction<'_>, changes: &Changes) -> anyhow::Result<()> {
    let rows = &changes.customers;
    if rows.is_empty() {
        return Ok(());
    }
    let id: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let tenant: Vec<Option<&str>> = rows.iter().map(|r| r.tenant_id.as_deref()).collect();
    let email: Vec<Option<&str>> = rows.iter().map(|r| r.email.as_deref()).collect();
    let name: Vec<Option<&str>> = rows.iter().map(|r| r.name.as_deref()).collect();
    let deleted: Vec<bool> = rows.iter().map(|r| r.deleted).collect();
    let last_event: Vec<&str> = rows.iter().map(|r| r.last_event_id.as_str()).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO customers (id, tenant_id, email, name, deleted, last_event_id)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::boolean[],
             $6::text[])
         ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, email = excluded.email,
             name = excluded.name, deleted = excluded.deleted,
             last_event_id = excluded.last_event_id",
        )
        .await?,
        &[&id, &tenant, &email, &name, &deleted, &last_event],
    )
    .await?;
    Ok(())
}

async fn write_unresolved(tx: &Transaction<'_>, changes: &Changes) -> anyhow::Result<()> {
    if changes.unresolved.is_empty() {
        return Ok(());
    }
    let objects: Vec<&str> = changes.unresolved.keys().map(String::as_str).collect();
    tx.execute(
        &tx.prepare_cached("DELETE FROM unresolved_events WHERE object_id = ANY($1)")
            .await?,
        &[&objects],
    )
    .await?;
    let rows: Vec<_> = changes.unresolved.values().flatten().collect();
    if rows.is_empty() {
        return Ok(());
    }
    let event_id: Vec<&str> = rows.iter().map(|u| u.event_id.as_str()).collect();
    let object_id: Vec<&str> = rows.iter().map(|u| u.object_id.as_str()).collect();
    let event_type: Vec<&str> = rows.iter().map(|u| u.event_type.as_str()).collect();
    let created: Vec<_> = rows.iter().map(|u| unix(u.created)).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO unresolved_events (event_id, object_id, type, created)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])",
        )
        .await?,
        &[&event_id, &object_id, &event_type, &created],
    )
    .await?;
    Ok(())
}

/// Records fold failures; an event's error is kept once (a rebuild re-records the same one).
pub async fn record_errors(tx: &Transaction<'_>, errors: &[RecordedError]) -> anyhow::Result<()> {
    for recorded in errors {
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO projection_errors (projection, event_id, position, error)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .await?,
            &[
                &PROJECTION_NAME,
                &recorded.error.event_id,
                &recorded.position,
                &recorded.error.message,
            ],
        )
        .await?;
    }
    Ok(())
}
