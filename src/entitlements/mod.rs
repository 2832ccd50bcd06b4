//! Entitlements: what each tenant may use, from its `tenant_pricing` row and the plans file.
//!
//! The `entitlements` table is a read model like the others (it is in the change feed). It is
//! rewritten, for the tenants whose pricing changed, inside the projector's transaction
//! ([`refresh`]); for every tenant by a plans reload ([`reload`], at start, on SIGHUP and by
//! the admin route); and for tenants whose grace period ended ([`expire_grace`], run by the
//! projector between batches). The plans in force live in the `plans` table, so every
//! instance and the projector read the same; a reload holds that row's lock, and every refresh
//! takes it shared, so a reload never interleaves with a pricing change. The SQL is
//! [`crate::store::read_models::entitlements`]'s; this module decides.

pub mod plans;

use crate::store::read_models::entitlements as stored;
use chrono::Utc;
use deadpool_postgres::{GenericClient, Pool};
use plans::{entitle, Plans};
use std::path::Path;

/// How often the projector looks for grace periods that ended.
pub const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Which tenants a refresh rewrites.
pub enum Scope<'a> {
    Tenants(Vec<&'a str>),
    All,
}

/// Why a transaction writes read models; recorded as each change's `cause` in the feed.
pub async fn set_cause(client: &impl GenericClient, cause: &str) -> anyhow::Result<()> {
    stored::set_cause(client, cause).await
}

/// Rewrites the entitlements of `scope` from their pricing rows, inside the caller's
/// transaction; a tenant without a pricing row loses its entitlement row. Rows whose
/// entitlement is unchanged are not touched. Does nothing when no plans file is loaded.
pub async fn refresh(client: &impl GenericClient, scope: Scope<'_>) -> anyhow::Result<()> {
    if matches!(&scope, Scope::Tenants(t) if t.is_empty()) {
        return Ok(());
    }
    let Some(plans) = stored::plans_in_force(client, false).await? else {
        return Ok(());
    };
    write(client, &plans, scope).await
}

async fn write(client: &impl GenericClient, plans: &Plans, scope: Scope<'_>) -> anyhow::Result<()> {
    let tenants: Option<Vec<&str>> = match scope {
        Scope::Tenants(tenants) => Some(tenants),
        Scope::All => None,
    };
    let priced = stored::priced_tenants(client, tenants.as_deref()).await?;
    let now = Utc::now();
    let mut rows = stored::EntitlementRows::default();
    for tenant in priced {
        let entitlement = entitle(plans, &tenant.facts, now);
        rows.push(tenant, &entitlement);
    }
    stored::delete_unpriced(client, tenants.as_deref()).await?;
    rows.upsert(client).await
}

/// What a reload did.
#[derive(Debug, Clone, Copy)]
pub struct Reloaded {
    pub plans: usize,
    /// Whether the file differed from the plans in force (when not, nothing was rewritten).
    pub changed: bool,
}

/// Why a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or does not check; the message names the setting, the file
    /// and the line.
    #[error("{0}")]
    File(String),
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

/// Reads and checks the plans file at `path`.
pub async fn read_file(path: &Path) -> Result<(Plans, String), ReloadError> {
    let shown = path.display();
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| ReloadError::File(format!("LEDGER_PLANS_FILE: cannot read {shown}: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ReloadError::File(format!("LEDGER_PLANS_FILE: {shown} is not UTF-8")))?;
    let plans = Plans::parse(text)
        .map_err(|e| ReloadError::File(format!("LEDGER_PLANS_FILE: {shown}: {e}")))?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    Ok((plans, sha256))
}

/// Reads and checks the plans file at `path`, then (when it differs from the plans in force)
/// stores it and rewrites every entitlement in one transaction, with cause `plans_reload`.
/// Nothing changes on error.
pub async fn reload(pool: &Pool, path: &Path) -> Result<Reloaded, ReloadError> {
    let (plans, sha256) = read_file(path).await?;
    let changed = store(pool, &plans, &sha256).await?;
    Ok(Reloaded {
        plans: plans.plans.len(),
        changed,
    })
}

async fn store(pool: &Pool, plans: &Plans, sha256: &str) -> anyhow::Result<bool> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    set_cause(&tx, "plans_reload").await?;
    stored::plans_in_force(&tx, true).await?;
    let in_force = stored::plans_sha256(&tx).await?;
    let changed = in_force.as_deref() != Some(sha256);
    if changed {
        stored::store_plans(&tx, plans, sha256).await?;
        write(&tx, plans, Scope::All).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Rewrites the entitlements whose grace period has ended (cause `grace_expired`); returns how
/// many. Run by the projector between batches (every [`EXPIRY_INTERVAL`]), so it never races a
/// pricing change.
pub async fn expire_grace(pool: &Pool) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let expired = stored::grace_ended(&client).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let tx = client.transaction().await?;
    set_cause(&tx, "grace_expired").await?;
    refresh(
        &tx,
        Scope::Tenants(expired.iter().map(String::as_str).collect()),
    )
    .await?;
    tx.commit().await?;
    Ok(expired.len())
}
