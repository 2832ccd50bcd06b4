//! Entitlements: what each tenant may use, from its `tenant_pricing` row and the plans file.
//!
//! The `entitlements` table is a read model like the others (it is in the change feed). It is
//! rewritten, for the tenants whose pricing changed, inside the projector's transaction
//! ([`refresh`]); for every tenant by a plans reload ([`reload`], at start, on SIGHUP and by
//! the admin route); and for tenants whose grace period ended ([`expire_grace`], run by the
//! projector between batches). The plans in force live in the `plans` table, so every
//! instance and the projector read the same; a reload holds that row's lock, and every refresh
//! takes it shared, so a reload never interleaves with a pricing change.

pub mod plans;

use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use plans::{entitle, Plans, PricingFacts};
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
    client
        .execute(
            "SELECT set_config('ledger.change_cause', $1, true)",
            &[&cause],
        )
        .await?;
    Ok(())
}

/// The plans in force, taking their row's lock shared (`FOR SHARE`) or exclusive.
async fn plans_in_force(
    client: &impl GenericClient,
    exclusive: bool,
) -> anyhow::Result<Option<Plans>> {
    let sql = if exclusive {
        "SELECT document FROM plans FOR UPDATE"
    } else {
        "SELECT document FROM plans FOR SHARE"
    };
    let row = client.query_opt(sql, &[]).await?;
    row.map(|row| {
        serde_json::from_value(row.get(0)).context("the stored plans document does not read")
    })
    .transpose()
}

/// Rewrites the entitlements of `scope` from their pricing rows, inside the caller's
/// transaction; a tenant without a pricing row loses its entitlement row. Rows whose
/// entitlement is unchanged are not touched. Does nothing when no plans file is loaded.
pub async fn refresh(client: &impl GenericClient, scope: Scope<'_>) -> anyhow::Result<()> {
    if matches!(&scope, Scope::Tenants(t) if t.is_empty()) {
        return Ok(());
    }
    let Some(plans) = plans_in_force(client, false).await? else {
        return Ok(());
    };
    write(client, &plans, scope).await
}

async fn write(client: &impl GenericClient, plans: &Plans, scope: Scope<'_>) -> anyhow::Result<()> {
    let tenants: Option<Vec<&str>> = match scope {
        Scope::Tenants(tenants) => Some(tenants),
        Scope::All => None,
    };
    let rows = client
        .query(
            "SELECT tenant_id, status, price_id, last_payment_failed_at, updated_at, last_event_id,
                    product_id
             FROM tenant_pricing WHERE $1::text[] IS NULL OR tenant_id = ANY($1)",
            &[&tenants],
        )
        .await?;
    let now = Utc::now();
    let mut columns = Columns::default();
    for row in &rows {
        let facts = PricingFacts {
            status: row.get(1),
            price_id: row.get(2),
            product_id: row.get(6),
            last_payment_failed_at: row.get(3),
            updated_at: row.get(4),
        };
        let entitlement = entitle(plans, &facts, now);
        columns.push(row.get(0), &entitlement, facts, row.get(5));
    }
    client
        .execute(
            "DELETE FROM entitlements e WHERE ($1::text[] IS NULL OR e.tenant_id = ANY($1))
                 AND NOT EXISTS (SELECT 1 FROM tenant_pricing p WHERE p.tenant_id = e.tenant_id)",
            &[&tenants],
        )
        .await?;
    columns.upsert(client).await
}

/// Entitlement rows as columns, for one `unnest` upsert.
#[derive(Default)]
struct Columns {
    tenant_id: Vec<String>,
    plan: Vec<Option<String>>,
    features: Vec<serde_json::Value>,
    access: Vec<&'static str>,
    reason: Vec<String>,
    grace_until: Vec<Option<DateTime<Utc>>>,
    price_id: Vec<Option<String>>,
    status: Vec<Option<String>>,
    last_event_id: Vec<String>,
}

impl Columns {
    fn push(&mut self, tenant_id: String, e: &plans::Entitlement, f: PricingFacts, event: String) {
        self.tenant_id.push(tenant_id);
        self.plan.push(e.plan.clone());
        self.features.push(serde_json::json!(e.features));
        self.access.push(e.access.as_str());
        self.reason.push(e.reason.clone());
        self.grace_until.push(e.grace_until);
        self.price_id.push(f.price_id);
        self.status.push(f.status);
        self.last_event_id.push(event);
    }

    async fn upsert(self, client: &impl GenericClient) -> anyhow::Result<()> {
        if self.tenant_id.is_empty() {
            return Ok(());
        }
        let statement = client
            .prepare_cached(
                "INSERT INTO entitlements AS e (tenant_id, plan, features, access, reason,
                     grace_until, price_id, status, last_event_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::text[], $8::text[], $9::text[])
                 ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan,
                     features = excluded.features, access = excluded.access,
                     reason = excluded.reason, grace_until = excluded.grace_until,
                     price_id = excluded.price_id, status = excluded.status,
                     last_event_id = excluded.last_event_id
                 WHERE (e.plan, e.features, e.access, e.reason, e.grace_until, e.price_id,
                        e.status, e.last_event_id)
                     IS DISTINCT FROM (excluded.plan, excluded.features, excluded.access,
                        excluded.reason, excluded.grace_until, excluded.price_id,
                        excluded.status, excluded.last_event_id)",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &self.tenant_id,
                    &self.plan,
                    &self.features,
                    &self.access,
                    &self.reason,
                    &self.grace_until,
                    &self.price_id,
                    &self.status,
                    &self.last_event_id,
                ],
            )
            .await?;
        Ok(())
    }
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
    plans_in_force(&tx, true).await?;
    let stored = tx
        .query_opt("SELECT source_sha256 FROM plans", &[])
        .await?
        .map(|row| row.get::<_, String>(0));
    let changed = stored.as_deref() != Some(sha256);
    if changed {
        tx.execute(
            "INSERT INTO plans (document, source_sha256) VALUES ($1, $2)
             ON CONFLICT (singleton) DO UPDATE SET document = $1, source_sha256 = $2,
                 loaded_at = now()",
            &[&serde_json::to_value(plans)?, &sha256],
        )
        .await?;
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
    let expired: Vec<String> = client
        .query(
            "SELECT tenant_id FROM entitlements WHERE access = 'grace' AND grace_until <= now()",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
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
