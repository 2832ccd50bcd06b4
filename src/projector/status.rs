//! What the projector reports about itself: lag, the typed states of projections, read models
//! and rebuilds, and each read model's row count and fold version.
//!
//! Read-only: the only writes to the tables read here come from the projector's tailing and
//! rebuild paths ([`super::rebuild`]).

use super::{PROJECTION_NAME, PROJECTION_VERSION};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use uuid::Uuid;

/// How far the projection trails the log.
#[derive(Debug, Clone, Copy)]
pub struct Lag {
    /// Last position appended.
    pub head: i64,
    /// Last position folded into the read models.
    pub checkpoint: i64,
    /// Age of the oldest event not folded yet, seconds (0 when caught up).
    pub seconds: f64,
}

impl Lag {
    pub fn events(&self) -> i64 {
        self.head - self.checkpoint
    }
}

/// Reads the projection's lag (for the status route and the metrics).
pub async fn lag(client: &impl GenericClient) -> anyhow::Result<Lag> {
    let row = client
        .query_one(
            "SELECT h.position, coalesce(p.position, 0),
                coalesce(extract(epoch FROM now() - (SELECT received_at FROM events
                    WHERE position = coalesce(p.position, 0) + 1))::float8, 0)
             FROM log_head h LEFT JOIN projections p ON p.name = $1",
            &[&PROJECTION_NAME],
        )
        .await?;
    let (head, checkpoint): (i64, i64) = (row.get(0), row.get(1));
    Ok(Lag {
        head,
        checkpoint,
        seconds: if head > checkpoint { row.get(2) } else { 0.0 },
    })
}

/// A projection's or read model's state, as the status route reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum ProjectionStatus {
    /// A projector holds the lock and tails the log into these rows.
    Live,
    /// A rebuild (not a preview) is pending or running.
    Rebuilding,
    /// The projector stopped on an error (`projector_failure`); it retries every second.
    Failed,
    /// The rows were built by another fold version than this build's: rebuild.
    Stale,
    /// No instance holds the projector lock.
    Idle,
}

impl ProjectionStatus {
    /// The one rule, in order of precedence: a rebuild, a failure, a version, the lock.
    pub fn of(rebuilding: bool, failed: bool, version: i32, projector_running: bool) -> Self {
        if rebuilding {
            Self::Rebuilding
        } else if failed {
            Self::Failed
        } else if version != PROJECTION_VERSION {
            Self::Stale
        } else if !projector_running {
            Self::Idle
        } else {
            Self::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Rebuilding => "rebuilding",
            Self::Failed => "failed",
            Self::Stale => "stale",
            Self::Idle => "idle",
        }
    }
}

/// A rebuild's state in the `rebuilds` table (its CHECK constraint, schema/V2, lists the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum RebuildStatus {
    /// Queued; the instance holding the projector lock picks it up within a second.
    Pending,
    Running,
    Done,
    Failed,
}

impl RebuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored word; anything else is a bug (the table's CHECK refuses it).
    pub fn parse(stored: &str) -> Self {
        match stored {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            other => panic!("rebuilds.status holds {other:?}, which its CHECK forbids"),
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

/// A read-model table the projector writes, and the columns of its primary key.
#[derive(Debug, Clone, Copy)]
pub struct ReadModel {
    pub name: &'static str,
    pub key: &'static [&'static str],
}

/// Every read model the projector writes (one fold renders them all). A table added to the
/// fold joins this list, and the rebuild previews and the status route follow.
pub const READ_MODELS: &[ReadModel] = &[
    ReadModel {
        name: "tenant_pricing",
        key: &["tenant_id"],
    },
    ReadModel {
        name: "checkout_sessions",
        key: &["id"],
    },
    ReadModel {
        name: "customers",
        key: &["id"],
    },
    ReadModel {
        name: "unresolved_events",
        key: &["object_id", "event_id"],
    },
    ReadModel {
        name: "event_tenants",
        key: &["tenant_id", "event_id"],
    },
    ReadModel {
        name: "entitlements",
        key: &["tenant_id"],
    },
    ReadModel {
        name: "invoices",
        key: &["id"],
    },
    ReadModel {
        name: "payments",
        key: &["id"],
    },
    ReadModel {
        name: "refunds",
        key: &["id"],
    },
    ReadModel {
        name: "disputes",
        key: &["id"],
    },
    ReadModel {
        name: "credit_notes",
        key: &["id"],
    },
    ReadModel {
        name: "revenue_streams",
        key: &["tenant_id", "currency"],
    },
    ReadModel {
        name: "revenue_movements",
        key: &["tenant_id", "currency", "at"],
    },
];

/// Tables estimated to hold more rows than this are counted from the planner's estimate
/// (`pg_class.reltuples`, refreshed by ANALYZE and autovacuum) instead of `count(*)`, which
/// reads the whole table.
pub const ROW_COUNT_EXACT_MAX: f32 = 100_000.0;

/// How a row count was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum RowCountMethod {
    /// `count(*)`.
    Exact,
    /// `pg_class.reltuples`: the planner's estimate as of the last ANALYZE or VACUUM.
    Estimate,
}

/// One read model's size and the fold version behind its rows.
#[derive(Debug, Clone)]
pub struct ReadModelFacts {
    pub name: &'static str,
    pub rows: i64,
    pub rows_counted_by: RowCountMethod,
    /// Fold version that built the rows (`read_model_versions`, written at a rebuild's swap;
    /// the projection's stored version when never rebuilt since schema/V80).
    pub version: i32,
    pub rebuilt_at: Option<DateTime<Utc>>,
}

/// Row counts and versions of [`READ_MODELS`], in that order.
pub async fn read_models(client: &impl GenericClient) -> anyhow::Result<Vec<ReadModelFacts>> {
    let names: Vec<&str> = READ_MODELS.iter().map(|m| m.name).collect();
    let rows = client
        .query(
            "SELECT m.name, c.reltuples,
                    coalesce(v.version, p.version, $3), v.rebuilt_at
             FROM unnest($1::text[]) WITH ORDINALITY AS m(name, n)
             JOIN pg_class c ON c.oid = m.name::regclass
             LEFT JOIN read_model_versions v ON v.read_model = m.name
             LEFT JOIN projections p ON p.name = $2
             ORDER BY m.n",
            &[&names, &PROJECTION_NAME, &PROJECTION_VERSION],
        )
        .await?;
    let mut facts = Vec::with_capacity(READ_MODELS.len());
    for (model, row) in READ_MODELS.iter().zip(&rows) {
        let estimate: f32 = row.get(1);
        // -1: never analyzed, no estimate; count it.
        let (rows, rows_counted_by) = if estimate > ROW_COUNT_EXACT_MAX {
            (estimate as i64, RowCountMethod::Estimate)
        } else {
            let sql = format!("SELECT count(*) FROM {}", model.name);
            let count: i64 = client.query_one(sql.as_str(), &[]).await?.get(0);
            (count, RowCountMethod::Exact)
        };
        facts.push(ReadModelFacts {
            name: model.name,
            rows,
            rows_counted_by,
            version: row.get(2),
            rebuilt_at: row.get(3),
        });
    }
    Ok(facts)
}

/// A rebuild's row in `rebuilds`.
#[derive(Debug, Clone)]
pub struct RebuildRecord {
    pub rebuild_id: Uuid,
    pub preview: bool,
    pub status: RebuildStatus,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub position_done: i64,
    pub position_target: Option<i64>,
    pub error: Option<String>,
    /// A finished preview's diff (see [`super::preview`]).
    pub diff: Option<Value>,
    /// Seconds since it started (to its end once finished), from the database's clock.
    pub elapsed_seconds: Option<f64>,
}

impl RebuildRecord {
    /// Events folded per second so far; `None` before the start or when nothing was folded.
    pub fn rate_events_per_second(&self) -> Option<f64> {
        let elapsed = self.elapsed_seconds?;
        (elapsed > 0.0 && self.position_done > 0).then(|| self.position_done as f64 / elapsed)
    }

    /// Seconds left at the rate so far: 0 once finished, `None` until a rate is known.
    pub fn seconds_left(&self) -> Option<f64> {
        if !self.status.is_active() {
            return Some(0.0);
        }
        let left = self.position_target? - self.position_done;
        Some(left.max(0) as f64 / self.rate_events_per_second()?)
    }
}

const REBUILD_COLUMNS: &str = "rebuild_id, preview, status, requested_at, started_at,
    finished_at, position_done, position_target, error, diff,
    extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8";

fn record_of(row: &tokio_postgres::Row) -> RebuildRecord {
    RebuildRecord {
        rebuild_id: row.get(0),
        preview: row.get(1),
        status: RebuildStatus::parse(row.get(2)),
        requested_at: row.get(3),
        started_at: row.get(4),
        finished_at: row.get(5),
        position_done: row.get(6),
        position_target: row.get(7),
        error: row.get(8),
        diff: row.get(9),
        elapsed_seconds: row.get(10),
    }
}

/// Rebuild `rebuild_id`, if it exists.
pub async fn rebuild_record(
    client: &impl GenericClient,
    rebuild_id: Uuid,
) -> anyhow::Result<Option<RebuildRecord>> {
    let sql = format!("SELECT {REBUILD_COLUMNS} FROM rebuilds WHERE rebuild_id = $1");
    let row = client.query_opt(sql.as_str(), &[&rebuild_id]).await?;
    Ok(row.as_ref().map(record_of))
}

/// The most recently requested rebuild or preview, if any.
pub async fn latest_rebuild(client: &impl GenericClient) -> anyhow::Result<Option<RebuildRecord>> {
    let sql = format!(
        "SELECT {REBUILD_COLUMNS} FROM rebuilds WHERE projection = $1
         ORDER BY requested_at DESC LIMIT 1"
    );
    let row = client.query_opt(sql.as_str(), &[&PROJECTION_NAME]).await?;
    Ok(row.as_ref().map(record_of))
}

/// The latest fold failure recorded for an event.
#[derive(Debug, Clone)]
pub struct FoldFailure {
    pub event_id: String,
    pub position: i64,
    pub error: String,
    pub recorded_at: DateTime<Utc>,
}

/// The projection's bookkeeping, as the status route shows it.
#[derive(Debug, Clone)]
pub struct ProjectionFacts {
    /// Fold version the stored rows were written by (this build's when nothing is stored).
    pub version: i32,
    /// Whether some session holds [`super::PROJECTOR_LOCK_KEY`].
    pub projector_running: bool,
    /// Instance that last wrote the checkpoint.
    pub owner: Option<String>,
    /// Why the projector last stopped, until its next successful batch.
    pub last_failure: Option<String>,
    pub error_count: i64,
    pub last_error: Option<FoldFailure>,
}

/// Reads [`ProjectionFacts`]. Whether the lock is held is read from `pg_locks`, where
/// PostgreSQL shows a bigint advisory key as its high half in `classid`, its low half in
/// `objid`, and `objsubid` 1 (PostgreSQL docs, "pg_locks").
pub async fn projection(client: &impl GenericClient) -> anyhow::Result<ProjectionFacts> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT version FROM projections WHERE name = $1), $2),
                EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                    AND classid = ($3::int8 >> 32)::oid AND objid = ($3::int8 & 4294967295)::oid
                    AND objsubid = 1),
                (SELECT count(*) FROM projection_errors WHERE projection = $1),
                (SELECT owner FROM projections WHERE name = $1),
                (SELECT last_failure FROM projections WHERE name = $1)",
            &[
                &PROJECTION_NAME,
                &PROJECTION_VERSION,
                &super::PROJECTOR_LOCK_KEY,
            ],
        )
        .await?;
    let last_error = client
        .query_opt(
            "SELECT event_id, position, error, recorded_at FROM projection_errors
             WHERE projection = $1 ORDER BY position DESC LIMIT 1",
            &[&PROJECTION_NAME],
        )
        .await?
        .map(|r| FoldFailure {
            event_id: r.get(0),
            position: r.get(1),
            error: r.get(2),
            recorded_at: r.get(3),
        });
    Ok(ProjectionFacts {
        version: row.get(0),
        projector_running: row.get(1),
        error_count: row.get(2),
        owner: row.get(3),
        last_failure: row.get(4),
        last_error,
    })
}
