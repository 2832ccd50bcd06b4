//! What the projector's bookkeeping says about it: lag, the projection's row and failures,
//! and each read model's size and fold version (`read_model_versions`, schema/V80). Read-only.

use super::{PROJECTION_NAME, PROJECTOR_LOCK_KEY};
use crate::store::log::position;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use projections::LogPosition;

/// How far the projection trails the log.
#[derive(Debug, Clone, Copy)]
pub struct Lag {
    /// Last position appended.
    pub head: LogPosition,
    /// Last position folded into the read models.
    pub checkpoint: LogPosition,
    /// Age of the oldest event not folded yet, seconds (0 when caught up).
    pub seconds: f64,
}

impl Lag {
    /// Events appended but not folded yet.
    pub fn events(&self) -> i64 {
        self.head.get() - self.checkpoint.get()
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
    let (head, checkpoint) = (position(row.get(0)), position(row.get(1)));
    Ok(Lag {
        head,
        checkpoint,
        seconds: if head > checkpoint { row.get(2) } else { 0.0 },
    })
}

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
    /// the projection's stored version when never rebuilt since schema/V80, else `version`).
    pub version: i32,
    pub rebuilt_at: Option<DateTime<Utc>>,
}

/// Row counts and versions of the read-model tables `names`, in that order; `version` is
/// reported for a table no row names a version for.
pub async fn read_models(
    client: &impl GenericClient,
    names: &[&'static str],
    version: i32,
) -> anyhow::Result<Vec<ReadModelFacts>> {
    let rows = client
        .query(
            "SELECT m.name, c.reltuples,
                    coalesce(v.version, p.version, $3), v.rebuilt_at
             FROM unnest($1::text[]) WITH ORDINALITY AS m(name, n)
             JOIN pg_class c ON c.oid = m.name::regclass
             LEFT JOIN read_model_versions v ON v.read_model = m.name
             LEFT JOIN projections p ON p.name = $2
             ORDER BY m.n",
            &[&names, &PROJECTION_NAME, &version],
        )
        .await?;
    let mut facts = Vec::with_capacity(names.len());
    for (name, row) in names.iter().zip(&rows) {
        let estimate: f32 = row.get(1);
        // -1: never analyzed, no estimate; count it.
        let (rows, rows_counted_by) = if estimate > ROW_COUNT_EXACT_MAX {
            (estimate as i64, RowCountMethod::Estimate)
        } else {
            let sql = format!("SELECT count(*) FROM {name}");
            let count: i64 = client.query_one(sql.as_str(), &[]).await?.get(0);
            (count, RowCountMethod::Exact)
        };
        facts.push(ReadModelFacts {
            name,
            rows,
            rows_counted_by,
            version: row.get(2),
            rebuilt_at: row.get(3),
        });
    }
    Ok(facts)
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
    /// Fold version the stored rows were written by (the caller's when nothing is stored).
    pub version: i32,
    /// Whether some session holds [`PROJECTOR_LOCK_KEY`].
    pub projector_running: bool,
    /// Instance that last wrote the checkpoint.
    pub owner: Option<String>,
    /// Why the projector last stopped, until its next successful batch.
    pub last_failure: Option<String>,
    pub error_count: i64,
    pub last_error: Option<FoldFailure>,
}

/// Reads [`ProjectionFacts`] (`version` when no row is stored). Whether the lock is held is
/// read from `pg_locks`, where PostgreSQL shows a bigint advisory key as its high half in
/// `classid`, its low half in `objid`, and `objsubid` 1 (PostgreSQL docs, "pg_locks").
pub async fn projection(
    client: &impl GenericClient,
    version: i32,
) -> anyhow::Result<ProjectionFacts> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT version FROM projections WHERE name = $1), $2),
                EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                    AND classid = ($3::int8 >> 32)::oid AND objid = ($3::int8 & 4294967295)::oid
                    AND objsubid = 1),
                (SELECT count(*) FROM projection_errors WHERE projection = $1),
                (SELECT owner FROM projections WHERE name = $1),
                (SELECT last_failure FROM projections WHERE name = $1)",
            &[&PROJECTION_NAME, &version, &PROJECTOR_LOCK_KEY],
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
