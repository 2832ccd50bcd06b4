//! The admin API (admin tokens only): rebuilding projections and watching them.

use super::auth::TokenAuth;
use super::error::{body, ApiError};
pub use super::rebuild_views::{
    OptionalJson, ReadModelView, RebuildDetail, RebuildRequest, RebuildView,
};
use super::AppState;
use crate::projector::status::{self, ProjectionStatus, RebuildStatus};
use crate::projector::{self, PROJECTION_NAME, PROJECTION_VERSION};
use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use std::sync::Arc;
use uuid::Uuid;

pub struct AdminApi {
    pub state: Arc<AppState>,
}

/// A queued rebuild.
#[derive(Debug, Object)]
pub struct RebuildAccepted {
    pub rebuild_id: Uuid,
    /// A preview: follow it, and read its diff, at `GET /api/billing/admin/rebuilds/{rebuild_id}`.
    pub preview: bool,
    /// `pending`: the instance holding the projector lock picks it up within a second.
    pub status: RebuildStatus,
}

#[derive(Debug, ApiResponse)]
pub enum RebuildResponse {
    /// The rebuild is queued; follow it at `GET /api/billing/admin/rebuilds/{rebuild_id}`.
    #[oai(status = 202)]
    Accepted(Json<RebuildAccepted>),
}

/// The latest fold failure.
#[derive(Debug, Object)]
pub struct ProjectionErrorView {
    pub event_id: String,
    pub position: i64,
    pub error: String,
    pub recorded_at: DateTime<Utc>,
}

/// One projection's state.
#[derive(Debug, Object)]
pub struct ProjectionView {
    pub name: String,
    /// The fold version the stored rows were written by.
    pub version: i32,
    /// The fold version this build runs.
    pub code_version: i32,
    /// `live`, `rebuilding`, `failed` (the projector stopped on an error, see
    /// `projector_failure`; it retries every second), `stale` (rows from another fold version:
    /// rebuild), or `idle` (no instance holds the projector lock).
    pub status: ProjectionStatus,
    /// Last log position folded into the rows.
    pub checkpoint: i64,
    /// Last log position appended.
    pub log_head: i64,
    pub lag_events: i64,
    /// Age of the oldest event not yet folded, seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Whether some instance holds the projector lock.
    pub projector_running: bool,
    /// Instance ID of the projector that last wrote the checkpoint (the lock holder while
    /// `projector_running`); each `serve` process logs its ID when elected.
    #[oai(nullable)]
    pub projector_instance: Option<String>,
    /// Why the projector last stopped, until its next successful batch.
    #[oai(nullable)]
    pub projector_failure: Option<String>,
    pub error_count: i64,
    #[oai(nullable)]
    pub last_error: Option<ProjectionErrorView>,
    /// The running or most recent rebuild or preview.
    #[oai(nullable)]
    pub rebuild: Option<RebuildView>,
    /// Every read model this projection writes, with its row count and version.
    pub read_models: Vec<ReadModelView>,
}

/// Every projection.
#[derive(Debug, Object)]
pub struct ProjectionList {
    pub projections: Vec<ProjectionView>,
}

/// The integrity report.
#[derive(Debug, Object)]
pub struct VerifyReport {
    /// True when every stored body and position matches the hash chain.
    pub intact: bool,
    /// Events verified (all of them when intact).
    pub events_verified: i64,
    /// The chain hash of the last event (hex) when intact: record it outside the database.
    #[oai(nullable)]
    pub head_hash: Option<String>,
    /// The first position that does not match, when broken.
    #[oai(nullable)]
    pub broken_position: Option<i64>,
    #[oai(nullable)]
    pub broken_event_id: Option<String>,
    /// What differs, when broken.
    #[oai(nullable)]
    pub problem: Option<String>,
}

#[OpenApi]
impl AdminApi {
    /// Recompute the log's hash chain and report the first damage, or the verified head.
    #[oai(
        path = "/api/billing/admin/verify",
        method = "get",
        tag = "super::Tag::Admin"
    )]
    pub async fn verify(&self, auth: TokenAuth) -> Result<Json<VerifyReport>, ApiError> {
        auth.require_admin()?;
        let verdict = crate::chain::verify(&self.state.pool).await?;
        crate::chain::record_or_warn(&self.state.pool, &verdict, crate::chain::RanBy::Api).await;
        let report = match verdict {
            crate::chain::Verdict::Intact { events, head_hash } => VerifyReport {
                intact: true,
                events_verified: events,
                head_hash: Some(head_hash),
                broken_position: None,
                broken_event_id: None,
                problem: None,
            },
            crate::chain::Verdict::Broken {
                position,
                event_id,
                problem,
                events_verified,
            } => {
                tracing::error!(log.position = position, stripe.event_id = event_id.as_deref().unwrap_or(""),
                    %problem, "log integrity check failed");
                VerifyReport {
                    intact: false,
                    events_verified,
                    head_hash: None,
                    broken_position: Some(position),
                    broken_event_id: event_id,
                    problem: Some(problem),
                }
            }
        };
        Ok(Json(report))
    }

    /// Queue a rebuild of the read models from the whole log, or a preview of one.
    ///
    /// The rows are rebuilt into memory from the log and swapped in, with the checkpoint, in
    /// one transaction; readers see the old rows until then and webhooks keep being accepted.
    /// With `{"preview": true}` nothing is swapped: the rebuild's writes are compared with the
    /// tables and rolled back, and the rows that would be added, removed and changed are kept
    /// for `GET /api/billing/admin/rebuilds/{rebuild_id}`. The body is optional.
    #[oai(
        path = "/api/billing/admin/projections/rebuild",
        method = "post",
        tag = "super::Tag::Admin"
    )]
    pub async fn rebuild(
        &self,
        auth: TokenAuth,
        request: OptionalJson<RebuildRequest>,
    ) -> Result<RebuildResponse, ApiError> {
        auth.require_admin()?;
        let preview = request.0.and_then(|r| r.preview).unwrap_or(false);
        let queued = if preview {
            projector::request_preview(&self.state.pool).await?
        } else {
            projector::request_rebuild(&self.state.pool).await?
        };
        match queued {
            Some(rebuild_id) => {
                tracing::info!(rebuild.id = %rebuild_id, projection.name = PROJECTION_NAME,
                    preview, "rebuild requested");
                Ok(RebuildResponse::Accepted(Json(RebuildAccepted {
                    rebuild_id,
                    preview,
                    status: RebuildStatus::Pending,
                })))
            }
            None => Err(ApiError::Conflict(body(
                "a rebuild is already pending or running",
            ))),
        }
    }

    /// One rebuild or preview: its state, progress, rate and time left, and a finished
    /// preview's diff.
    #[oai(
        path = "/api/billing/admin/rebuilds/:rebuild_id",
        method = "get",
        tag = "super::Tag::Admin"
    )]
    pub async fn rebuild_state(
        &self,
        auth: TokenAuth,
        /// The rebuild's ID, a UUID as `POST /api/billing/admin/projections/rebuild` gave it.
        #[oai(validator(
            pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
        ))]
        rebuild_id: Path<String>,
    ) -> Result<Json<RebuildDetail>, ApiError> {
        auth.require_admin()?;
        let rebuild_id = Uuid::parse_str(&rebuild_id.0).map_err(|_| {
            ApiError::bad_request(
                "`rebuild_id` must be a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8",
            )
        })?;
        let client = self.state.pool.get().await?;
        let record = status::rebuild_record(&client, rebuild_id)
            .await?
            .ok_or_else(|| ApiError::not_found("rebuild"))?;
        Ok(Json(RebuildDetail::new(record)?))
    }

    /// Each projection's version, checkpoint, lag, status, last error and rebuild progress.
    #[oai(
        path = "/api/billing/admin/projections",
        method = "get",
        tag = "super::Tag::Admin"
    )]
    pub async fn projections(&self, auth: TokenAuth) -> Result<Json<ProjectionList>, ApiError> {
        auth.require_admin()?;
        let client = self.state.pool.get().await?;
        let lag = projector::lag(&client).await?;
        let facts = status::projection(&client).await?;
        let rebuild = status::latest_rebuild(&client).await?;
        let status = ProjectionStatus::of(
            super::rebuild_views::is_rebuilding(rebuild.as_ref()),
            facts.last_failure.is_some(),
            facts.version,
            facts.projector_running,
        );
        let read_models = status::read_models(&client)
            .await?
            .into_iter()
            .map(|facts| ReadModelView::new(facts, status, &lag))
            .collect();
        Ok(Json(ProjectionList {
            projections: vec![ProjectionView {
                name: PROJECTION_NAME.into(),
                version: facts.version,
                code_version: PROJECTION_VERSION,
                status,
                checkpoint: lag.checkpoint.get(),
                log_head: lag.head.get(),
                lag_events: lag.events(),
                lag_seconds: lag.seconds,
                projector_running: facts.projector_running,
                projector_instance: facts.owner,
                projector_failure: facts.last_failure,
                error_count: facts.error_count,
                last_error: facts.last_error.map(|e| ProjectionErrorView {
                    event_id: e.event_id,
                    position: e.position,
                    error: e.error,
                    recorded_at: e.recorded_at,
                }),
                rebuild: rebuild.as_ref().map(RebuildView::from),
                read_models,
            }],
        }))
    }
}
