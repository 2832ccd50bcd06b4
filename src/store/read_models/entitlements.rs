//! The `entitlements` read model and the `plans` document it is computed from: the only SQL on
//! them, and the read of `tenant_pricing` an entitlement is computed from. What a tenant may
//! use is decided by [`crate::entitlements`] (pure rules in [`crate::entitlements::plans`]);
//! this module reads and writes the rows.

use crate::entitlements::plans::{Entitlement, Plans, PricingFacts};
use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use projections::TenantId;

/// Records why the caller's transaction writes read models (`ledger.change_cause`, a
/// transaction-local setting the change feed's trigger reads into each change's `cause`).
pub async fn set_cause(client: &impl GenericClient, cause: &str) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT set_config('ledger.change_cause', $1, true)",
            &[&cause],
        )
        .await?;
    Ok(())
}

/// The plans in force, taking their row's lock shared (`FOR SHARE`) or exclusive (`FOR
/// UPDATE`); `None` when no plans file was ever loaded.
pub async fn plans_in_force(
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

/// Whether a plans file is loaded.
pub async fn plans_loaded(client: &impl GenericClient) -> anyhow::Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM plans", &[])
        .await?
        .is_some())
}

/// The SHA-256 (hex) of the plans file in force, if any.
pub async fn plans_sha256(client: &impl GenericClient) -> anyhow::Result<Option<String>> {
    Ok(client
        .query_opt("SELECT source_sha256 FROM plans", &[])
        .await?
        .map(|row| row.get(0)))
}

/// Stores `plans` (read from a file whose SHA-256 is `sha256`) as the plans in force.
pub async fn store_plans(
    client: &impl GenericClient,
    plans: &Plans,
    sha256: &str,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO plans (document, source_sha256) VALUES ($1, $2)
             ON CONFLICT (singleton) DO UPDATE SET document = $1, source_sha256 = $2,
                 loaded_at = now()",
            &[&serde_json::to_value(plans)?, &sha256],
        )
        .await?;
    Ok(())
}

/// A tenant's pricing as its entitlement is computed from it.
pub struct PricedTenant {
    pub tenant_id: String,
    pub facts: PricingFacts,
    pub last_event_id: String,
}

/// The pricing of `tenants` (every tenant when `None`) from `tenant_pricing`.
pub async fn priced_tenants(
    client: &impl GenericClient,
    tenants: Option<&[&str]>,
) -> anyhow::Result<Vec<PricedTenant>> {
    let rows = client
        .query(
            "SELECT tenant_id, status, price_id, last_payment_failed_at, updated_at, last_event_id,
                    product_id
             FROM tenant_pricing WHERE $1::text[] IS NULL OR tenant_id = ANY($1)",
            &[&tenants],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| PricedTenant {
            tenant_id: row.get(0),
            facts: PricingFacts {
                status: row.get(1),
                price_id: row.get(2),
                product_id: row.get(6),
                last_payment_failed_at: row.get(3),
                updated_at: row.get(4),
            },
            last_event_id: row.get(5),
        })
        .collect())
}

/// Deletes the entitlement rows of `tenants` (every tenant when `None`) that no longer have a
/// `tenant_pricing` row.
pub async fn delete_unpriced(
    client: &impl GenericClient,
    tenants: Option<&[&str]>,
) -> anyhow::Result<()> {
    client
        .execute(
            "DELETE FROM entitlements e WHERE ($1::text[] IS NULL OR e.tenant_id = ANY($1))
                 AND NOT EXISTS (SELECT 1 FROM tenant_pricing p WHERE p.tenant_id = e.tenant_id)",
            &[&tenants],
        )
        .await?;
    Ok(())
}

/// Entitlement rows as columns, for one `unnest` upsert.
#[derive(Default)]
pub struct EntitlementRows {
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

impl EntitlementRows {
    /// Adds the entitlement `e` of `tenant`, computed from its pricing.
    pub fn push(&mut self, tenant: PricedTenant, e: &Entitlement) {
        self.tenant_id.push(tenant.tenant_id);
        self.plan.push(e.plan.clone());
        self.features.push(serde_json::json!(e.features));
        self.access.push(e.access.as_str());
        self.reason.push(e.reason.clone());
        self.grace_until.push(e.grace_until);
        self.price_id.push(tenant.facts.price_id);
        self.status.push(tenant.facts.status);
        self.last_event_id.push(tenant.last_event_id);
    }

    /// Upserts the rows; a row whose entitlement is unchanged is not touched (so the change
    /// feed records only real changes).
    pub async fn upsert(self, client: &impl GenericClient) -> anyhow::Result<()> {
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

/// The tenants whose grace period has ended while their entitlement still says `grace`.
pub async fn grace_ended(client: &impl GenericClient) -> anyhow::Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT tenant_id FROM entitlements WHERE access = 'grace' AND grace_until <= now()",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// A tenant's full entitlement row, as the platform route answers it.
#[derive(Debug, Clone)]
pub struct StoredEntitlement {
    pub tenant_id: String,
    pub plan: Option<String>,
    pub features: Vec<String>,
    pub access: String,
    pub reason: String,
    pub grace_until: Option<DateTime<Utc>>,
    pub price_id: Option<String>,
    pub status: Option<String>,
    pub last_event_id: String,
}

/// The tenant's entitlement; `None` when it has none.
pub async fn entitlement(
    client: &impl GenericClient,
    tenant_id: &TenantId,
) -> anyhow::Result<Option<StoredEntitlement>> {
    let statement = client
        .prepare_cached(
            "SELECT tenant_id, plan, features, access, reason, grace_until, price_id, status,
                    last_event_id
             FROM entitlements WHERE tenant_id = $1",
        )
        .await?;
    let row = client.query_opt(&statement, &[&tenant_id.as_str()]).await?;
    Ok(row.map(|row| {
        let features: serde_json::Value = row.get(2);
        StoredEntitlement {
            tenant_id: row.get(0),
            plan: row.get(1),
            features: serde_json::from_value(features).unwrap_or_default(),
            access: row.get(3),
            reason: row.get(4),
            grace_until: row.get(5),
            price_id: row.get(6),
            status: row.get(7),
            last_event_id: row.get(8),
        }
    }))
}
