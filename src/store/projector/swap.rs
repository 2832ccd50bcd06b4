//! The statements a rebuild runs on the read models as a whole, in its swap transaction: the
//! staging table for `event_tenants`, clearing the tables it rewrites, suspending the change
//! feed's capture, and the bookkeeping that makes the rebuilt rows current (checkpoint,
//! versions, fold errors). The rows themselves are written by the read models' stores
//! ([`crate::store::read_models`], [`crate::store::money`]).

use super::PROJECTION_NAME;
use deadpool_postgres::{GenericClient, Pool, Transaction};
use projections::LogPosition;

/// Creates `staging` empty, shaped like `event_tenants` (dropping a leftover of a rebuild that
/// died). Not in the change feed: no capture trigger is bound to its oid.
pub async fn create_staging(pool: &Pool, staging: &str) -> anyhow::Result<()> {
    pool.get()
        .await?
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {staging};
             CREATE TABLE {staging} (LIKE event_tenants INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
        ))
        .await?;
    Ok(())
}

/// Drops `staging` (a preview's, once compared).
pub async fn drop_staging(client: &impl GenericClient, staging: &str) -> anyhow::Result<()> {
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {staging}"))
        .await?;
    Ok(())
}

/// Replaces `event_tenants` by `staging`, renaming its indexes to the names of
/// schema/V2__read_models.sql; last in the swap, so readers wait on its lock only for the
/// renames and the commit.
pub async fn rename_staging(tx: &Transaction<'_>, staging: &str) -> anyhow::Result<()> {
    tx.batch_execute(&format!(
        "DROP TABLE event_tenants;
         ALTER TABLE {staging} RENAME TO event_tenants;
         ALTER INDEX {staging}_pkey RENAME TO event_tenants_pkey;
         ALTER INDEX {staging}_event RENAME TO event_tenants_event;"
    ))
    .await?;
    Ok(())
}

/// Suspends the change feed's capture for the rest of `tx` (schema/V60).
pub async fn suspend_capture(tx: &Transaction<'_>) -> anyhow::Result<()> {
    tx.batch_execute("SELECT capture_suspend()").await?;
    Ok(())
}

/// Compares the captured tables with their snapshots and resumes capture (schema/V60).
pub async fn resume_capture(tx: &Transaction<'_>) -> anyhow::Result<()> {
    tx.batch_execute("SELECT capture_resume()").await?;
    Ok(())
}

/// Deletes every row of the ledger's read models (not the money tables, nor `event_tenants`,
/// staged apart), with no statement timeout. DELETE, not TRUNCATE, so readers keep the old
/// rows until the commit instead of waiting on a lock.
pub async fn clear_read_models(tx: &Transaction<'_>) -> anyhow::Result<()> {
    tx.batch_execute(
        "SET LOCAL statement_timeout = 0;
         SET LOCAL lock_timeout = '30s';
         DELETE FROM tenant_pricing; DELETE FROM checkout_sessions; DELETE FROM customers;
         DELETE FROM unresolved_events;",
    )
    .await?;
    Ok(())
}

/// Deletes the projection's recorded fold errors (the rebuild records its own).
pub async fn clear_errors(tx: &Transaction<'_>) -> anyhow::Result<()> {
    tx.execute(
        "DELETE FROM projection_errors WHERE projection = $1",
        &[&PROJECTION_NAME],
    )
    .await?;
    Ok(())
}

/// Sets the checkpoint to `target`, the stored version to `version` and the owner to `owner`
/// (creating the projection's row if needed), clearing the recorded failure.
pub async fn set_checkpoint(
    tx: &Transaction<'_>,
    target: LogPosition,
    version: i32,
    owner: &str,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO projections (name, version, position, owner) VALUES ($1, $3, $2, $4)
         ON CONFLICT (name) DO UPDATE SET position = $2, version = $3, owner = $4,
             updated_at = now(), last_failure = NULL, last_failure_at = NULL",
        &[&PROJECTION_NAME, &target.get(), &version, &owner],
    )
    .await?;
    Ok(())
}

/// Records that the read models `names` were rebuilt now by fold `version`.
pub async fn record_versions(
    tx: &Transaction<'_>,
    names: &[&str],
    version: i32,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO read_model_versions (read_model, version, rebuilt_at)
         SELECT name, $2, now() FROM unnest($1::text[]) AS name
         ON CONFLICT (read_model) DO UPDATE SET version = $2, rebuilt_at = now()",
        &[&names, &version],
    )
    .await?;
    Ok(())
}

/// Refreshes the planner's statistics of the ledger's read models after a bulk reload
/// (`event_tenants` was analyzed while staged; statistics follow the rename).
pub async fn analyze(client: &impl GenericClient) -> anyhow::Result<()> {
    client
        .batch_execute("ANALYZE tenant_pricing, checkout_sessions, customers, unresolved_events;")
        .await?;
    Ok(())
}
