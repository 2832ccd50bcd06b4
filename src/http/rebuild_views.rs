//! The admin API's views of rebuilds, previews and read models, and the optional JSON body
//! of `POST /api/billing/admin/projections/rebuild`.

use crate::projector::preview::Diff;
use crate::projector::status::{
    Lag, ProjectionStatus, ReadModelFacts, RebuildRecord, RebuildStatus, RowCountMethod,
};
use chrono::{DateTime, Utc};
use poem::{FromRequest, Request, RequestBody};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::ParseFromJSON;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, Object};
use uuid::Uuid;

/// What to rebuild.
#[derive(Debug, Clone, Default, Object)]
pub struct RebuildRequest {
    /// `true`: fold the whole log and report what a rebuild would change, without swapping
    /// anything (follow it at `GET /api/billing/admin/rebuilds/{rebuild_id}`). Default (absent
    /// or null) `false`.
    #[oai(nullable)]
    pub preview: Option<bool>,
}

/// A JSON request body that may be absent: an empty body (with or without a content type)
/// is `None`; anything else must be JSON of `T` sent as `application/json`, else 400.
pub struct OptionalJson<T>(pub Option<T>);

impl<'a, T: ParseFromJSON> ApiExtractor<'a> for OptionalJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json; charset=utf-8",
                schema: T::schema_ref(),
            }],
            required: false,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let bytes = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        let is_json = request.content_type().is_some_and(|c| {
            let essence = c.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
        });
        if !is_json {
            return Err(ParseRequestPayloadError {
                reason: "send it as `Content-Type: application/json`".into(),
            }
            .into());
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ParseRequestPayloadError {
                reason: e.to_string(),
            })?;
        let parsed = T::parse_from_json(Some(value)).map_err(|e| ParseRequestPayloadError {
            reason: e.into_message(),
        })?;
        Ok(OptionalJson(Some(parsed)))
    }
}

/// A rebuild's (or preview's) progress, in log positions.
#[derive(Debug, Object)]
pub struct RebuildView {
    pub rebuild_id: Uuid,
    /// A preview compares and never swaps.
    pub preview: bool,
    pub status: RebuildStatus,
    pub requested_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    pub position_done: i64,
    /// The log head when the rebuild started; events after it are folded right after the swap.
    #[oai(nullable)]
    pub position_target: Option<i64>,
    /// Events folded per second since the start (to the end once finished); null before.
    #[oai(nullable)]
    pub rate_events_per_second: Option<f64>,
    /// Seconds left at that rate (0 once finished); null until a rate is known.
    #[oai(nullable)]
    pub seconds_left: Option<f64>,
    #[oai(nullable)]
    pub error: Option<String>,
}

impl From<&RebuildRecord> for RebuildView {
    fn from(r: &RebuildRecord) -> RebuildView {
        RebuildView {
            rebuild_id: r.rebuild_id,
            preview: r.preview,
            status: r.status,
            requested_at: r.requested_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            position_done: r.position_done,
            position_target: r.position_target,
            rate_events_per_second: r.rate_events_per_second(),
            seconds_left: r.seconds_left(),
            error: r.error.clone(),
        }
    }
}

/// One rebuild with, for a finished preview, what the swap would change.
#[derive(Debug, Object)]
pub struct RebuildDetail {
    #[oai(flatten)]
    pub rebuild: RebuildView,
    /// Per read model: rows added, removed and changed (counts, and the first rows of each
    /// kind with their before and after values). Null unless a finished preview.
    #[oai(nullable)]
    pub diff: Option<Diff>,
}

impl RebuildDetail {
    pub fn new(record: RebuildRecord) -> anyhow::Result<RebuildDetail> {
        let diff = match &record.diff {
            Some(value) => Some(serde_json::from_value(value.clone())?),
            None => None,
        };
        Ok(RebuildDetail {
            rebuild: RebuildView::from(&record),
            diff,
        })
    }
}

/// One read model: its rows, the fold version behind them and the projector's position.
#[derive(Debug, Object)]
pub struct ReadModelView {
    /// The table's name (`tenant_pricing`, `invoices`, ...).
    pub name: String,
    pub status: ProjectionStatus,
    /// Rows in the table: exact, or the planner's estimate for tables over 100,000 rows (see
    /// `rows_counted_by`).
    pub rows: i64,
    pub rows_counted_by: RowCountMethod,
    /// The fold version that built the rows (set by each rebuild's swap).
    pub version: i32,
    #[oai(nullable)]
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// Last log position folded into the rows (one fold writes every read model).
    pub checkpoint: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
}

impl ReadModelView {
    /// `projection` is the projection's status; a read model differs only by its version.
    pub fn new(facts: ReadModelFacts, projection: ProjectionStatus, lag: &Lag) -> ReadModelView {
        let stale = facts.version != crate::projector::PROJECTION_VERSION;
        let status = match projection {
            ProjectionStatus::Live | ProjectionStatus::Idle if stale => ProjectionStatus::Stale,
            other => other,
        };
        ReadModelView {
            name: facts.name.to_owned(),
            status,
            rows: facts.rows,
            rows_counted_by: facts.rows_counted_by,
            version: facts.version,
            rebuilt_at: facts.rebuilt_at,
            checkpoint: lag.checkpoint.get(),
            lag_events: lag.events(),
            lag_seconds: lag.seconds,
        }
    }
}

/// Whether the rebuild `record` makes the read models `rebuilding` (a preview does not).
pub fn is_rebuilding(record: Option<&RebuildRecord>) -> bool {
    record.is_some_and(|r| !r.preview && r.status.is_active())
}
