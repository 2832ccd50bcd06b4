//! The revenue routes (finance or admin token): MRR per month and currency with its
//! movements, and the movements of one month (which tenant moved, how much, why).

use super::auth::TokenAuth;
use super::error::ApiError;
use super::AppState;
use crate::store::revenue::Scope;
use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use projections::money::revenue::{month_start, next_month, parse_month, MonthRow, Movement};
use projections::{Currency, TenantId};
use std::sync::Arc;

/// Most months one `GET /revenue` covers.
pub const REVENUE_MONTHS_MAX: usize = 120;

/// One month and currency, minor units; `closing_mrr = opening_mrr + new + reactivation +
/// expansion - contraction - churn`.
#[derive(Debug, Clone, Object)]
pub struct RevenueRow {
    /// `YYYY-MM`, UTC.
    pub month: String,
    pub currency: String,
    pub opening_mrr: i64,
    pub new: i64,
    pub reactivation: i64,
    pub expansion: i64,
    pub contraction: i64,
    pub churn: i64,
    pub closing_mrr: i64,
    /// Tenants with MRR above zero at the month's end.
    pub subscribers: i64,
}

impl From<MonthRow> for RevenueRow {
    fn from(r: MonthRow) -> RevenueRow {
        RevenueRow {
            month: r.month,
            currency: r.currency,
            opening_mrr: r.opening_mrr,
            new: r.new,
            reactivation: r.reactivation,
            expansion: r.expansion,
            contraction: r.contraction,
            churn: r.churn,
            closing_mrr: r.closing_mrr,
            subscribers: r.subscribers,
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct RevenueList {
    pub revenue: Vec<RevenueRow>,
}

/// One movement of a tenant's MRR.
#[derive(Debug, Clone, Object)]
pub struct MovementView {
    pub tenant_id: String,
    pub currency: String,
    /// `new`, `reactivation`, `expansion`, `contraction` or `churn`.
    pub kind: String,
    /// How much MRR moved, minor units (positive).
    pub amount: i64,
    pub mrr_before: i64,
    pub mrr_after: i64,
    /// When it took effect: its first change (changes within an hour merge).
    pub at: DateTime<Utc>,
    /// The event of its last change.
    pub event_id: String,
}

impl From<&Movement> for MovementView {
    fn from(m: &Movement) -> MovementView {
        MovementView {
            tenant_id: m.tenant_id.clone(),
            currency: m.currency.clone(),
            kind: m.kind.to_owned(),
            amount: m.amount(),
            mrr_before: m.before,
            mrr_after: m.after,
            at: DateTime::from_timestamp(m.at, 0).unwrap_or_default(),
            event_id: m.event_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct MovementList {
    pub month: String,
    pub movements: Vec<MovementView>,
}

fn month(text: &str, name: &str) -> Result<(i64, u32), ApiError> {
    parse_month(text).ok_or_else(|| ApiError::bad_request(format!("{name} must be YYYY-MM")))
}

pub struct RevenueApi {
    pub state: Arc<AppState>,
}

#[OpenApi]
impl RevenueApi {
    /// MRR per month and currency, in minor units, with its movements.
    ///
    /// MRR counts `active` and `past_due` subscriptions' licensed prices normalized to a month,
    /// less active recurring discounts, tax excluded (README "For finance"). A currency
    /// appears once some tenant had MRR in it. Aggregated from the revenue read model (the
    /// projector keeps it with the other read models).
    #[oai(
        path = "/api/billing/revenue",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn revenue(
        &self,
        _auth: TokenAuth,
        #[oai(validator(pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"))] from: Query<
            String,
        >,
        #[oai(validator(pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"))] to: Query<
            String,
        >,
        /// One currency, ISO 4217 (three letters, any case).
        #[oai(validator(pattern = r"^[A-Za-z]{3}$"))]
        currency: Query<Option<String>>,
        /// One tenant (no NUL).
        #[oai(validator(pattern = r"^[^\u0000]+$"))]
        tenant_id: Query<Option<String>>,
    ) -> Result<Json<RevenueList>, ApiError> {
        let (first, last) = (month(&from.0, "from")?, month(&to.0, "to")?);
        if first > last {
            return Err(ApiError::bad_request("from must not be after to"));
        }
        let months = (last.0 - first.0) * 12 + i64::from(last.1) - i64::from(first.1) + 1;
        if months as usize > REVENUE_MONTHS_MAX {
            return Err(ApiError::bad_request("at most 120 months at once"));
        }
        let tenant_id = tenant_id.0.as_deref().map(TenantId::parse).transpose()?;
        let scope = Scope {
            currency: currency.0.as_deref().map(Currency::parse).transpose()?,
            tenant_id: tenant_id.as_ref(),
        };
        let pool = self.state.read_pool().await?;
        let rows = crate::store::revenue::months(&pool, first, last, scope).await?;
        Ok(Json(RevenueList {
            revenue: rows.into_iter().map(Into::into).collect(),
        }))
    }

    /// The movements of one month: which tenant's MRR moved, how much, of what kind, and the
    /// event that caused it.
    #[oai(
        path = "/api/billing/revenue/movements",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn movements(
        &self,
        _auth: TokenAuth,
        #[oai(
            name = "month",
            validator(pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$")
        )]
        month_text: Query<String>,
        /// One currency, ISO 4217 (three letters, any case).
        #[oai(validator(pattern = r"^[A-Za-z]{3}$"))]
        currency: Query<Option<String>>,
        /// One tenant (no NUL).
        #[oai(validator(pattern = r"^[^\u0000]+$"))]
        tenant_id: Query<Option<String>>,
    ) -> Result<Json<MovementList>, ApiError> {
        let which = month(&month_text.0, "month")?;
        let (start, end) = (month_start(which), month_start(next_month(which)));
        let tenant_id = tenant_id.0.as_deref().map(TenantId::parse).transpose()?;
        let scope = Scope {
            currency: currency.0.as_deref().map(Currency::parse).transpose()?,
            tenant_id: tenant_id.as_ref(),
        };
        let pool = self.state.read_pool().await?;
        let movements = crate::store::revenue::movements(&pool, start, end, scope).await?;
        let movements = movements.iter().map(MovementView::from).collect();
        Ok(Json(MovementList {
            month: month_text.0,
            movements,
        }))
    }
}
