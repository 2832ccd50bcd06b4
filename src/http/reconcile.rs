//! `GET /api/billing/admin/reconcile` (admin token): the reconciliation timer's settings and
//! the latest runs, the service's and the `reconcile` command's, with their counts, the
//! differences they found and the errors that stopped them.

use super::auth::TokenAuth;
use super::error::ApiError;
use super::AppState;
use crate::reconcile::store::{self, RunRow};
use crate::stripe::events_api::STRIPE_VERSION;
use chrono::{DateTime, Utc};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs listed by the route, newest first.
pub const RUNS_LISTED: i64 = 20;

pub struct ReconcileApi {
    pub state: Arc<AppState>,
}

/// An event the log holds whose Stripe copy means something else; the log was not changed.
#[derive(Debug, Object)]
pub struct ReconcileDifferenceView {
    pub event_id: String,
    /// `type`, `created`, `object_id` or `livemode`.
    pub field: String,
    /// The log's value, as JSON text.
    pub log: String,
    /// Stripe's value, as JSON text.
    pub stripe: String,
}

/// An event Stripe listed that is not a readable Stripe event, or not one the run asked for
/// (out of scope); not stored.
#[derive(Debug, Object, serde::Deserialize)]
pub struct ReconcileUnreadableView {
    #[oai(nullable)]
    pub event_id: Option<String>,
    pub problem: String,
}

/// One reconciliation run.
#[derive(Debug, Object)]
pub struct ReconcileRunView {
    pub run_id: i64,
    /// `interval` (the service's timer) or `command` (`billing-ledger reconcile`).
    pub trigger: String,
    /// The `serve` instance (or command invocation) that ran it.
    pub instance_id: String,
    pub started_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `succeeded_with_problems` (the window was listed to its end,
    /// but some events were unreadable or out of scope) or `failed` (see `error`).
    pub status: String,
    /// The window of Stripe's `created` listed, both ends inclusive.
    pub window_since: DateTime<Utc>,
    pub window_until: DateTime<Utc>,
    /// Events Stripe listed in the window (while `running`: listed so far).
    pub listed_events: i64,
    /// Of those, already in the log.
    pub present_events: i64,
    /// Of those, missing and appended (source `reconcile`): each one a webhook that never
    /// arrived.
    pub appended_events: i64,
    /// `appended_events` per event type.
    pub appended_by_type: BTreeMap<String, i64>,
    pub differences: Vec<ReconcileDifferenceView>,
    /// The first 1,000 unreadable events.
    pub unreadable: Vec<ReconcileUnreadableView>,
    /// Unreadable events, all counted.
    pub unreadable_events: i64,
    /// The first 1,000 events outside what the run asked for: created outside the window, of
    /// the other mode than the key's, or of another account than `STRIPE_ACCOUNT`.
    pub out_of_scope: Vec<ReconcileUnreadableView>,
    /// Out-of-scope events, all counted.
    pub out_of_scope_events: i64,
    /// Why the run stopped early (Stripe refused the key, was unavailable, ...).
    #[oai(nullable)]
    pub error: Option<String>,
}

/// The reconciliation timer and its latest runs.
#[derive(Debug, Object)]
pub struct ReconcileStatus {
    /// Whether this instance runs the timer (`LEDGER_RECONCILE_INTERVAL` set).
    pub enabled: bool,
    /// `LEDGER_RECONCILE_INTERVAL`, seconds.
    #[oai(nullable)]
    pub interval_secs: Option<f64>,
    /// `LEDGER_RECONCILE_SETTLE`, seconds.
    #[oai(nullable)]
    pub settle_secs: Option<f64>,
    /// The `Stripe-Version` requests pin.
    pub stripe_version: String,
    /// The latest runs, newest first (at most 20).
    pub runs: Vec<ReconcileRunView>,
}

impl ReconcileRunView {
    fn from_row(row: RunRow) -> ReconcileRunView {
        ReconcileRunView {
            run_id: row.run_id,
            trigger: row.trigger,
            instance_id: row.instance_id,
            started_at: row.started_at,
            finished_at: row.finished_at,
            status: row.status,
            window_since: row.window_since,
            window_until: row.window_until,
            listed_events: row.listed_events,
            present_events: row.present_events,
            appended_events: row.appended_events,
            appended_by_type: serde_json::from_value(row.appended_by_type).unwrap_or_default(),
            differences: row
                .differences
                .into_iter()
                .map(|d| ReconcileDifferenceView {
                    event_id: d.event_id,
                    field: d.field,
                    log: d.log,
                    stripe: d.stripe,
                })
                .collect(),
            unreadable: serde_json::from_value(row.unreadable).unwrap_or_default(),
            unreadable_events: row.unreadable_events,
            out_of_scope: serde_json::from_value(row.out_of_scope).unwrap_or_default(),
            out_of_scope_events: row.out_of_scope_events,
            error: row.error,
        }
    }
}

#[OpenApi]
impl ReconcileApi {
    /// The reconciliation with Stripe's Events API: settings and the latest runs.
    #[oai(
        path = "/api/billing/admin/reconcile",
        method = "get",
        tag = "super::Tag::Admin"
    )]
    async fn reconcile(&self, auth: TokenAuth) -> Result<Json<ReconcileStatus>, ApiError> {
        auth.require_admin()?;
        let runs = store::recent_runs(&self.state.pool, RUNS_LISTED).await?;
        let timer = self.state.config.reconcile.as_ref();
        Ok(Json(ReconcileStatus {
            enabled: timer.is_some(),
            interval_secs: timer.map(|t| t.interval.as_secs_f64()),
            settle_secs: timer.map(|t| t.settle.as_secs_f64()),
            stripe_version: STRIPE_VERSION.into(),
            runs: runs.into_iter().map(ReconcileRunView::from_row).collect(),
        }))
    }
}
