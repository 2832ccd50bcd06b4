//! What the platform reads (platform, finance or admin token): tenants by status, price or plan,
//! and each tenant's entitlements; and the admin route that reloads the plans file.

use super::auth::{PlatformAuth, TokenAuth};
use super::error::ApiError;
use super::paging::{cursor_or, page};
use super::AppState;
use crate::entitlements::ReloadError;
use crate::store::read_models::entitlements;
use crate::store::read_models::queries::{self, PricedTenantFilters};
use crate::views::TenantPricingView;
use chrono::{DateTime, Utc};
use poem::{Body, IntoResponse, Response};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::{ApiResponse, Object, OpenApi};
use projections::TenantId;
use std::sync::Arc;

/// Largest page of tenants.
pub const TENANT_PAGE_SIZE_MAX: i64 = 1_000;
/// Page size of tenants when the client gives none.
pub const TENANT_PAGE_SIZE_DEFAULT: i64 = 100;

/// Tenants, entitlements and the plans reload.
pub struct PlatformApi {
    pub state: Arc<AppState>,
}

/// A tenant's pricing with the plan and access its entitlement gives (null without a plans file).
#[derive(Debug, Object)]
pub struct TenantView {
    #[oai(flatten)]
    pub pricing: TenantPricingView,
    #[oai(nullable)]
    pub plan: Option<String>,
    /// `full`, `grace` or `none`.
    #[oai(nullable)]
    pub access: Option<String>,
}

/// A page of tenants, by tenant ID.
#[derive(Debug, Object)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// What a tenant may use.
#[derive(Debug, Object)]
pub struct EntitlementView {
    pub tenant_id: String,
    /// The plan the tenant's price maps to; null when the price is in no plan.
    #[oai(nullable)]
    pub plan: Option<String>,
    /// The plan's features while access is `full` or `grace`; empty otherwise.
    pub features: Vec<String>,
    /// `full`, `grace` (past_due, inside the plan's grace period) or `none`.
    pub access: String,
    /// The subscription status behind `access`, or `past_due_grace_expired`, `unknown_price`
    /// (the price is in no plan of the plans file), `no_price`.
    pub reason: String,
    /// End of the grace period of a `past_due` subscription.
    #[oai(nullable)]
    pub grace_until: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub price_id: Option<String>,
    #[oai(nullable)]
    pub status: Option<String>,
    pub last_event_id: String,
}

/// The result of a plans reload.
#[derive(Debug, Object)]
pub struct PlansReloaded {
    /// Plans in the file.
    pub plans: u32,
    /// Whether the file differed from the plans in force (entitlements were rewritten).
    pub changed: bool,
}

/// Tenants as JSON (one page) or CSV (that page's rows).
pub enum TenantsResponse {
    Json(Json<TenantList>),
    Csv(String),
}

impl IntoResponse for TenantsResponse {
    fn into_response(self) -> Response {
        match self {
            TenantsResponse::Json(json) => json.into_response(),
            TenantsResponse::Csv(text) => Response::builder()
                .content_type("text/csv; charset=utf-8")
                .body(Body::from_string(text)),
        }
    }
}

impl ApiResponse for TenantsResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "A page of tenants (JSON), or with `Accept: text/csv` the same page \
                              as CSV (RFC 4180; follow `cursor` with the JSON form).",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: <Json<TenantList> as Payload>::schema_ref(),
                    },
                    MetaMediaType {
                        content_type: "text/csv; charset=utf-8",
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                    },
                ],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        <Json<TenantList> as Payload>::register(registry);
    }
}

/// The CSV header of tenants.
const TENANT_CSV_HEADER: &str = "tenant_id,status,price_id,quantity,plan,access,current_period_end,cancel_at_period_end,stripe_customer_id,stripe_subscription_id,updated_at,product_id\r\n";

fn tenants_csv(tenants: &[TenantView]) -> String {
    let mut out = String::from(TENANT_CSV_HEADER);
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    for t in tenants {
        let p = &t.pricing;
        let fields = [
            p.tenant_id.clone(),
            p.status.clone().unwrap_or_default(),
            p.price_id.clone().unwrap_or_default(),
            p.quantity.map(|q| q.to_string()).unwrap_or_default(),
            t.plan.clone().unwrap_or_default(),
            t.access.clone().unwrap_or_default(),
            time(p.current_period_end),
            p.cancel_at_period_end.to_string(),
            p.stripe_customer_id.clone().unwrap_or_default(),
            p.stripe_subscription_id.clone(),
            time(Some(p.updated_at)),
            p.product_id.clone().unwrap_or_default(),
        ];
        for (i, value) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            super::csv::field(&mut out, value);
        }
        out.push_str("\r\n");
    }
    out
}

async fn tenant_page(
    state: &AppState,
    filters: &PricedTenantFilters,
    after: &str,
    limit: i64,
) -> Result<Vec<TenantView>, ApiError> {
    let pool = state.read_pool().await?;
    let rows = queries::priced_tenants(&pool, filters, after, limit).await?;
    Ok(rows
        .into_iter()
        .map(|row| TenantView {
            pricing: row.pricing,
            plan: row.plan,
            access: row.access,
        })
        .collect())
}

#[OpenApi]
impl PlatformApi {
    /// Tenants (their current pricing, plan and access), by tenant ID, filtered.
    ///
    /// Filters combine with AND: `status` (Stripe's subscription status), `price_id`, `plan`
    /// (from the plans file), `updated_since` (RFC 3339: `updated_at` at or after it). Pass
    /// `next_cursor` back as `cursor`; it is `null` on the last page. With `Accept: text/csv`
    /// the page is CSV.
    #[oai(
        path = "/api/billing/tenants",
        method = "get",
        tag = "super::Tag::Platform"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn tenants(
        &self,
        request: &poem::Request,
        _auth: PlatformAuth,
        status: Query<Option<String>>,
        price_id: Query<Option<String>>,
        plan: Query<Option<String>>,
        updated_since: Query<Option<DateTime<Utc>>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
        cursor: Query<Option<String>>,
    ) -> Result<TenantsResponse, ApiError> {
        let after: String = cursor_or(cursor.0.as_deref(), String::new())?;
        let limit = limit.0.map_or(TENANT_PAGE_SIZE_DEFAULT, i64::from);
        let filters = PricedTenantFilters {
            status: status.0,
            price_id: price_id.0,
            plan: plan.0,
            updated_since: updated_since.0,
        };
        let rows = tenant_page(&self.state, &filters, &after, limit + 1).await?;
        let (tenants, next_cursor) = page(rows, limit, |t| t.pricing.tenant_id.clone());
        let wants_csv = request
            .header("accept")
            .is_some_and(|accept| accept.contains("text/csv"));
        if wants_csv {
            return Ok(TenantsResponse::Csv(tenants_csv(&tenants)));
        }
        Ok(TenantsResponse::Json(Json(TenantList {
            tenants,
            next_cursor,
        })))
    }

    /// What a tenant may use, from its subscription and the plans file (`LEDGER_PLANS_FILE`).
    ///
    /// 404 when the tenant has no pricing, or when no plans file is loaded.
    #[oai(
        path = "/api/billing/tenants/:tenant_id/entitlements",
        method = "get",
        tag = "super::Tag::Platform"
    )]
    async fn entitlements(
        &self,
        _auth: PlatformAuth,
        tenant_id: Path<String>,
    ) -> Result<Json<EntitlementView>, ApiError> {
        let tenant_id = TenantId::parse(&tenant_id.0)?;
        let client = self.state.read_pool().await?.get().await?;
        let Some(row) = entitlements::entitlement(&client, &tenant_id).await? else {
            return Err(if entitlements::plans_loaded(&client).await? {
                ApiError::not_found("tenant")
            } else {
                ApiError::NotFound(super::error::body(
                    "no plans file is loaded (LEDGER_PLANS_FILE)",
                ))
            });
        };
        Ok(Json(EntitlementView {
            tenant_id: row.tenant_id,
            plan: row.plan,
            features: row.features,
            access: row.access,
            reason: row.reason,
            grace_until: row.grace_until,
            price_id: row.price_id,
            status: row.status,
            last_event_id: row.last_event_id,
        }))
    }

    /// Re-reads the plans file (`LEDGER_PLANS_FILE`, as SIGHUP does) and rewrites the
    /// entitlements it changes; they appear in the change feed with cause `plans_reload`.
    ///
    /// 400 when the file does not check (the message names the line); nothing changes then.
    #[oai(
        path = "/api/billing/admin/plans/reload",
        method = "post",
        tag = "super::Tag::Admin"
    )]
    async fn reload_plans(&self, auth: TokenAuth) -> Result<Json<PlansReloaded>, ApiError> {
        auth.require_admin()?;
        let Some(path) = &self.state.config.platform.plans_file else {
            return Err(ApiError::bad_request(
                "no plans file is configured (LEDGER_PLANS_FILE)",
            ));
        };
        match crate::entitlements::reload(&self.state.pool, path).await {
            Ok(reloaded) => Ok(Json(PlansReloaded {
                plans: reloaded.plans as u32,
                changed: reloaded.changed,
            })),
            Err(ReloadError::File(message)) => Err(ApiError::bad_request(message)),
            Err(ReloadError::Database(error)) => Err(error.into()),
        }
    }
}
