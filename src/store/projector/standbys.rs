//! Warm standbys' bookkeeping ([`crate::projector`]'s `standby`): the checkpoint a standby
//! follows with the rows' generation, and `projector_standbys` (schema/V92), where each
//! follower records the position its standby stands at.

use super::PROJECTION_NAME;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projections::LogPosition;

/// What the stored rows were built from: the fold version and the last swap
/// (`read_model_versions.rebuilt_at`, stamped by every rebuild's swap). A standby whose marker
/// differs from the stored one is folding toward rows that no longer exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub version: i32,
    pub rebuilt_at: Option<DateTime<Utc>>,
}

/// The leader's checkpoint (0 before any) and the rows' generation, read in one statement so
/// the two agree; `version` stands in for the fold version before any projection row exists.
pub async fn checkpoint(pool: &Pool, version: i32) -> anyhow::Result<(LogPosition, Generation)> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT coalesce(max(p.position), 0), coalesce(max(p.version), $2),
                    (SELECT max(rebuilt_at) FROM read_model_versions)
             FROM projections p WHERE p.name = $1",
            &[&PROJECTION_NAME, &version],
        )
        .await?;
    let generation = Generation {
        version: row.get(1),
        rebuilt_at: row.get(2),
    };
    Ok((crate::store::log::position(row.get(0)), generation))
}

/// Records where `instance_id`'s standby stands, or with `None` that it has none (an elected
/// follower); the latter also removes the rows of instances silent for a day.
pub async fn record(
    pool: &Pool,
    instance_id: &str,
    position: Option<LogPosition>,
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let position = position.map(LogPosition::get);
    client
        .execute(
            "DELETE FROM projector_standbys
             WHERE projection = $1 AND (instance_id = $2 OR updated_at < now() - interval '1 day')
               AND $3::int8 IS NULL",
            &[&PROJECTION_NAME, &instance_id, &position],
        )
        .await?;
    client
        .execute(
            "INSERT INTO projector_standbys (projection, instance_id, position)
             SELECT $1::text, $2::text, $3::int8 WHERE $3::int8 IS NOT NULL
             ON CONFLICT (projection, instance_id)
                 DO UPDATE SET position = excluded.position, updated_at = now()",
            &[&PROJECTION_NAME, &instance_id, &position],
        )
        .await?;
    Ok(())
}
