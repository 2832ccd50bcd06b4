//! The projector's durable fold state: the only code issuing SQL on `projection_snapshots` and
//! `projector_elections` (schema/V84). Whether a stored snapshot is usable is the projector's
//! decision ([`crate::projector`]'s `snapshot` module); this module stores and returns bytes.

use super::PROJECTION_NAME;
use crate::store::log::position;
use bytes::{BufMut, Bytes, BytesMut};
use deadpool_postgres::Pool;
use futures_util::SinkExt;
use projections::LogPosition;

/// A stored snapshot, as written: the fold version and snapshot format that wrote it, its
/// mode, the checkpoint it was taken at, and the state's bytes.
pub struct StoredSnapshot {
    pub version: i32,
    pub format: i32,
    pub livemode: bool,
    pub position: LogPosition,
    pub state: Vec<u8>,
}

/// Stores `snapshot`, unless one of the same version and format at a later position is already
/// there (one at the same position is replaced: it may be the unreadable one this leader
/// could not load). Runs on a [`crate::db::bulk_connection`]: writing the whole state may
/// outlast the pool's statement_timeout.
///
/// The state goes to the server by binary `COPY` into a temporary table, in slices of
/// [`UPLOAD_CHUNK_BYTES`] of the caller's own buffer, and from there into the table by one
/// statement: sent as a statement parameter, it would first be copied whole into the
/// driver's message buffer, which made the rebuild's memory peak the state, its encoding and
/// that copy at once. Errors: the database, or a state of 1 GiB or more (PostgreSQL's largest
/// field).
pub async fn write(pool: &Pool, snapshot: StoredSnapshot) -> anyhow::Result<()> {
    let mut client = crate::db::bulk_connection(pool).await?;
    let tx = client.transaction().await?;
    tx.batch_execute("CREATE TEMPORARY TABLE snapshot_upload (state bytea) ON COMMIT DROP")
        .await?;
    let sink = tx
        .copy_in("COPY snapshot_upload (state) FROM STDIN (FORMAT binary)")
        .await?;
    futures_util::pin_mut!(sink);
    for chunk in copy_rows(snapshot.state)? {
        sink.send(chunk).await?;
    }
    sink.finish().await?;
    tx.execute(
        "INSERT INTO projection_snapshots (projection, version, format, livemode, position, state)
         SELECT $1, $2, $3, $4, $5, state FROM snapshot_upload
         ON CONFLICT (projection) DO UPDATE SET version = excluded.version,
             format = excluded.format, livemode = excluded.livemode,
             position = excluded.position, state = excluded.state, written_at = now()
         WHERE projection_snapshots.position <= excluded.position
            OR projection_snapshots.version <> excluded.version
            OR projection_snapshots.format <> excluded.format",
        &[
            &PROJECTION_NAME,
            &snapshot.version,
            &snapshot.format,
            &snapshot.livemode,
            &snapshot.position.get(),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Bytes of the state sent in one `COPY` message.
pub const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

/// `state` as the body of a binary `COPY` of one row of one `bytea` field (PostgreSQL's
/// "COPY", "Binary Format": the signature, flags and header extension, the row's field count
/// and the field's length, the bytes, the trailer), in slices of the same allocation.
fn copy_rows(state: Vec<u8>) -> anyhow::Result<Vec<Bytes>> {
    let length = i32::try_from(state.len())
        .ok()
        .filter(|length| *length < 1 << 30)
        .ok_or_else(|| anyhow::anyhow!("snapshot of {} bytes is too large", state.len()))?;
    let mut head = BytesMut::with_capacity(25);
    head.put_slice(b"PGCOPY\n\xff\r\n\0");
    head.put_i32(0);
    head.put_i32(0);
    head.put_i16(1);
    head.put_i32(length);
    let state = Bytes::from(state);
    let mut chunks = vec![head.freeze()];
    let mut start = 0;
    while start < state.len() {
        let end = (start + UPLOAD_CHUNK_BYTES).min(state.len());
        chunks.push(state.slice(start..end));
        start = end;
    }
    // The trailer: a field count of -1.
    chunks.push(Bytes::from_static(&[0xff, 0xff]));
    Ok(chunks)
}

/// Deletes the projection's snapshot, in the caller's transaction (a rebuild's swap: the rows
/// it writes are not what the old fold state rendered).
pub async fn invalidate(tx: &tokio_postgres::Transaction<'_>) -> anyhow::Result<()> {
    tx.execute(
        "DELETE FROM projection_snapshots WHERE projection = $1",
        &[&PROJECTION_NAME],
    )
    .await?;
    Ok(())
}

/// The stored snapshot, if any (read on a [`crate::db::bulk_connection`]: it may be large).
pub async fn latest(pool: &Pool) -> anyhow::Result<Option<StoredSnapshot>> {
    let client = crate::db::bulk_connection(pool).await?;
    let row = client
        .query_opt(
            "SELECT version, format, livemode, position, state FROM projection_snapshots
             WHERE projection = $1",
            &[&PROJECTION_NAME],
        )
        .await?;
    Ok(row.map(|row| StoredSnapshot {
        version: row.get(0),
        format: row.get(1),
        livemode: row.get(2),
        position: position(row.get(3)),
        state: row.get(4),
    }))
}

/// A row of `projector_elections`: how an elected leader got its fold state.
pub struct ElectionRow<'a> {
    pub instance_id: &'a str,
    /// The snapshot's position, or why none was loaded.
    pub snapshot: Result<LogPosition, &'a str>,
    pub checkpoint: LogPosition,
    pub events_folded: i64,
    pub duration_ms: i64,
    /// Where the elected follower's warm standby stood; `None` for a cold resume.
    pub standby_position: Option<LogPosition>,
}

/// Records an election.
pub async fn record_election(pool: &Pool, election: &ElectionRow<'_>) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let (position, reason) = match election.snapshot {
        Ok(position) => (Some(position.get()), None),
        Err(reason) => (None, Some(reason)),
    };
    client
        .execute(
            "INSERT INTO projector_elections (projection, instance_id, snapshot_position,
                 fallback_reason, checkpoint, events_folded, duration_ms, standby_position)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &PROJECTION_NAME,
                &election.instance_id,
                &position,
                &reason,
                &election.checkpoint.get(),
                &election.events_folded,
                &election.duration_ms,
                &election.standby_position.map(LogPosition::get),
            ],
        )
        .await?;
    Ok(())
}
