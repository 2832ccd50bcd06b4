//! The rebuild queue: the only code issuing SQL on `rebuilds` (schema/V2, V80), and its typed
//! states.
//!
//! At most one rebuild or preview is pending or running at a time (a partial unique index);
//! only the projector's leader runs queued ones, and a `rebuild --preview` command runs its
//! own (`by_command`, guarded by [`super::PREVIEW_LOCK_KEY`]).

use super::{PREVIEW_LOCK_KEY, PROJECTION_NAME};
use crate::store::log::position;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use projections::LogPosition;
use serde_json::Value;
use uuid::Uuid;

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
    /// A finished preview's diff (see [`crate::projector::preview`]).
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
pub async fn record(
    client: &impl GenericClient,
    rebuild_id: Uuid,
) -> anyhow::Result<Option<RebuildRecord>> {
    let sql = format!("SELECT {REBUILD_COLUMNS} FROM rebuilds WHERE rebuild_id = $1");
    let row = client.query_opt(sql.as_str(), &[&rebuild_id]).await?;
    Ok(row.as_ref().map(record_of))
}

/// The most recently requested rebuild or preview, if any.
pub async fn latest(client: &impl GenericClient) -> anyhow::Result<Option<RebuildRecord>> {
    let sql = format!(
        "SELECT {REBUILD_COLUMNS} FROM rebuilds WHERE projection = $1
         ORDER BY requested_at DESC LIMIT 1"
    );
    let row = client.query_opt(sql.as_str(), &[&PROJECTION_NAME]).await?;
    Ok(row.as_ref().map(record_of))
}

/// The oldest rebuild waiting to run, if any.
pub async fn oldest_pending(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT rebuild_id FROM rebuilds WHERE status = $1 ORDER BY requested_at LIMIT 1",
            &[&RebuildStatus::Pending.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The pending or running rebuild, if any.
pub async fn active(pool: &Pool) -> anyhow::Result<Option<Uuid>> {
    let client = pool.get().await?;
    let active = [
        RebuildStatus::Pending.as_str(),
        RebuildStatus::Running.as_str(),
    ];
    let row = client
        .query_opt(
            "SELECT rebuild_id FROM rebuilds WHERE status = ANY($1)",
            &[&&active[..]],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// How an abandoned command preview is closed (`$2`: the failed status).
const ABANDONED: &str = "status = $2, finished_at = now(),
    error = 'abandoned: the rebuild --preview command running it ended'";

/// Marks failed every `running` command preview whose command ended: the caller holds
/// [`PREVIEW_LOCK_KEY`], so any such preview is another process's, and that process is gone.
pub async fn close_abandoned_previews(pool: &Pool) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute(
            &format!("UPDATE rebuilds SET {ABANDONED} WHERE status = $1 AND by_command"),
            &[
                &RebuildStatus::Running.as_str(),
                &RebuildStatus::Failed.as_str(),
            ],
        )
        .await?;
    Ok(())
}

/// Marks failed a `running` command preview whose [`PREVIEW_LOCK_KEY`] is free (its process
/// ended: a transaction-level try, released at once), so it does not hold the queue forever.
pub async fn close_unlocked_previews(pool: &Pool) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute(
            &format!(
                "WITH free AS (SELECT pg_try_advisory_xact_lock($3) AS yes)
                 UPDATE rebuilds SET {ABANDONED}
                 WHERE status = $1 AND by_command AND (SELECT yes FROM free)"
            ),
            &[
                &RebuildStatus::Running.as_str(),
                &RebuildStatus::Failed.as_str(),
                &PREVIEW_LOCK_KEY,
            ],
        )
        .await?;
    Ok(())
}

/// Records a new rebuild in `status` (`pending` for the leader to run; `running` for one the
/// calling command runs itself, `by_command`); `None` when one is already pending or running.
pub async fn insert(
    pool: &Pool,
    preview: bool,
    status: RebuildStatus,
) -> anyhow::Result<Option<Uuid>> {
    let rebuild_id = Uuid::new_v4();
    let by_command = status == RebuildStatus::Running;
    let client = pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO rebuilds (rebuild_id, projection, status, preview, by_command)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[
                &rebuild_id,
                &PROJECTION_NAME,
                &status.as_str(),
                &preview,
                &by_command,
            ],
        )
        .await?;
    Ok((inserted == 1).then_some(rebuild_id))
}

/// Queues again the rebuilds a leader left `running` (not a command's): only the leader runs
/// queued rebuilds, so one still running at an election belongs to a leader that died.
/// Returns how many.
pub async fn requeue_orphaned(pool: &Pool) -> anyhow::Result<u64> {
    let requeued = pool
        .get()
        .await?
        .execute(
            "UPDATE rebuilds SET status = $1, started_at = NULL, position_done = 0
             WHERE status = $2 AND NOT by_command",
            &[
                &RebuildStatus::Pending.as_str(),
                &RebuildStatus::Running.as_str(),
            ],
        )
        .await?;
    Ok(requeued)
}

/// Marks the rebuild running with the log's head as its target; returns that target and
/// whether it is a preview.
pub async fn start(pool: &Pool, rebuild_id: Uuid) -> anyhow::Result<(LogPosition, bool)> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "UPDATE rebuilds SET status = $2, started_at = now(),
                 position_target = (SELECT position FROM log_head)
             WHERE rebuild_id = $1 RETURNING position_target, preview",
            &[&rebuild_id, &RebuildStatus::Running.as_str()],
        )
        .await?;
    Ok((position(row.get(0)), row.get(1)))
}

/// Records how far the rebuild has folded.
pub async fn record_progress(
    client: &impl GenericClient,
    rebuild_id: Uuid,
    position_done: LogPosition,
) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE rebuilds SET position_done = $2 WHERE rebuild_id = $1",
            &[&rebuild_id, &position_done.get()],
        )
        .await?;
    Ok(())
}

/// Marks the rebuild failed with `error` (its cause chain, as text).
pub async fn fail(pool: &Pool, rebuild_id: Uuid, error: &str) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute(
            "UPDATE rebuilds SET status = $3, finished_at = now(), error = $2
             WHERE rebuild_id = $1",
            &[&rebuild_id, &error, &RebuildStatus::Failed.as_str()],
        )
        .await?;
    Ok(())
}

/// Marks the rebuild done through `target`, storing a preview's `diff` (JSON) if given.
pub async fn finish(
    client: &impl GenericClient,
    rebuild_id: Uuid,
    target: LogPosition,
    diff: Option<&Value>,
) -> anyhow::Result<()> {
    let done = RebuildStatus::Done.as_str();
    match diff {
        None => {
            client
                .execute(
                    "UPDATE rebuilds SET status = $3, finished_at = now(), position_done = $2
                     WHERE rebuild_id = $1",
                    &[&rebuild_id, &target.get(), &done],
                )
                .await?
        }
        Some(diff) => {
            client
                .execute(
                    "UPDATE rebuilds SET status = $3, finished_at = now(), position_done = $2,
                         diff = $4
                     WHERE rebuild_id = $1",
                    &[&rebuild_id, &target.get(), &done, diff],
                )
                .await?
        }
    };
    Ok(())
}
