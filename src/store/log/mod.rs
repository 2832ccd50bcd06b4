//! The log's readers: the statements that read `events`, `log_head` and `verifications` for
//! the projector, the chain's verification, the admin tenant links and the read API's
//! positions; [`reads`] has the read API's, history's and console's.
//!
//! The log's only writer is [`crate::event_log`] (and `ledger_append`, schema/V50); nothing
//! here writes `events` or `deliveries`, which triggers keep append-only anyway. The bodies are
//! handed out where they lie in the driver's row buffers ([`RawBatch`], [`CopiedBatch`],
//! [`ChainBatch`]): a body is never copied on its way to the parser or the hash.

pub mod reads;

use deadpool_postgres::{GenericClient, Pool};
use futures_util::{StreamExt, TryStreamExt};
use projections::{EventId, LogPosition};
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use tokio_postgres::Row;

/// A position read from a column whose CHECK keeps it at 0 or more (`events.position > 0`,
/// `log_head.position >= 0`, `projections.position`): a negative one is a broken invariant.
pub(crate) fn position(raw: i64) -> LogPosition {
    LogPosition::new(raw).expect("stored log positions are 0 or more")
}

/// Rows `(position, body)` of the log in log order, as read.
pub struct RawBatch(Vec<Row>);

impl RawBatch {
    /// Each event's position and stored body, in log order.
    pub fn iter(&self) -> impl Iterator<Item = (LogPosition, &[u8])> + '_ {
        self.0.iter().map(|row| (position(row.get(0)), row.get(1)))
    }
}

/// Up to `limit` events after `after`, in log order, unparsed (the live projector's batches).
pub async fn read_after(pool: &Pool, after: LogPosition, limit: i64) -> anyhow::Result<RawBatch> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT position, body FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .await?;
    let rows = client.query(&statement, &[&after.get(), &limit]).await?;
    Ok(RawBatch(rows))
}

/// Rows `(position, body)` of the log as one binary `COPY` sends them.
pub struct CopiedBatch(Vec<BinaryCopyOutRow>);

impl CopiedBatch {
    /// Each event's position and stored body, in log order.
    pub fn iter(&self) -> impl Iterator<Item = (LogPosition, &[u8])> + '_ {
        self.0.iter().map(|row| (position(row.get(0)), row.get(1)))
    }
}

/// The log from its start through `up_to` in batches of `batch_events`, unparsed, from one
/// `COPY (SELECT position, body ...) TO STDOUT (FORMAT binary)` on a
/// [`crate::db::bulk_connection`] (planner settings of its own), closed when the stream is
/// dropped. PostgreSQL sends the bodies as they lie: no per-batch index descent and no text
/// encoding of `bytea`.
pub fn copy_through(
    pool: Pool,
    up_to: LogPosition,
    batch_events: usize,
) -> impl futures_util::Stream<Item = anyhow::Result<CopiedBatch>> {
    futures_util::stream::once(async move {
        let client = crate::db::bulk_connection(&pool).await?;
        // Walk the primary key: rows stream out at once in position order. Left to itself the
        // planner sorts the whole log first (a parallel scan and a sort of every body).
        client
            .batch_execute("SET enable_seqscan = off; SET enable_sort = off; SET jit = off;")
            .await?;
        let copy = client
            .copy_out(&format!(
                "COPY (SELECT position, body FROM events WHERE position <= {}
                       ORDER BY position) TO STDOUT (FORMAT binary)",
                up_to.get()
            ))
            .await?;
        let rows = BinaryCopyOutStream::new(copy, &[Type::INT8, Type::BYTEA])
            .map(move |row| {
                let _connection = &client;
                row.map_err(anyhow::Error::from)
            })
            .chunks(batch_events)
            .map(|chunk| {
                chunk
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
                    .map(CopiedBatch)
            });
        anyhow::Ok(rows)
    })
    .try_flatten()
}

/// The log head as appends left it: its position (the event count) and its chain hash.
pub async fn head(client: &impl GenericClient) -> anyhow::Result<(LogPosition, Vec<u8>)> {
    let row = client
        .query_one("SELECT position, chain_hash FROM log_head", &[])
        .await?;
    Ok((position(row.get(0)), row.get(1)))
}

/// What the chain's verification reads of one event.
pub struct ChainLink<'a> {
    pub position: LogPosition,
    pub event_id: &'a str,
    pub body: &'a [u8],
    /// `events.body_sha256`, as recorded at append.
    pub body_sha256: &'a [u8],
    /// `events.chain_hash`, as sealed at append.
    pub chain_hash: &'a [u8],
}

/// A batch of the log as the chain's verification reads it.
pub struct ChainBatch(Vec<Row>);

impl ChainBatch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each event's link fields, in log order.
    pub fn iter(&self) -> impl Iterator<Item = ChainLink<'_>> + '_ {
        self.0.iter().map(|row| ChainLink {
            position: position(row.get(0)),
            event_id: row.get(1),
            body: row.get(2),
            body_sha256: row.get(3),
            chain_hash: row.get(4),
        })
    }
}

/// Up to `limit` events from `from` (included) through `through`, in log order.
pub async fn chain_batch(
    client: &impl GenericClient,
    from: LogPosition,
    through: LogPosition,
    limit: i64,
) -> anyhow::Result<ChainBatch> {
    let rows = client
        .query(
            "SELECT position, event_id, body, body_sha256, chain_hash FROM events
             WHERE position >= $1 AND position <= $3 ORDER BY position LIMIT $2",
            &[&from.get(), &limit, &through.get()],
        )
        .await?;
    Ok(ChainBatch(rows))
}

/// A verification as `verifications` (schema/V70) stores it: intact with the head hash (hex),
/// or broken at a position, with the event there if any and the problem.
#[derive(Debug, Clone)]
pub struct VerificationRow {
    pub verified_at: chrono::DateTime<chrono::Utc>,
    /// `cli`, `api` or `console`.
    pub ran_by: String,
    pub intact: bool,
    pub events_verified: i64,
    pub head_hash: Option<String>,
    pub broken_position: Option<i64>,
    pub broken_event_id: Option<String>,
    pub problem: Option<String>,
}

/// A verification to record (its `verified_at` is the database's `now()`); fields as in
/// [`VerificationRow`].
#[derive(Debug, Clone, Copy)]
pub struct NewVerification<'a> {
    pub ran_by: &'a str,
    pub intact: bool,
    pub events_verified: i64,
    pub head_hash: Option<&'a str>,
    pub broken_position: Option<i64>,
    pub broken_event_id: Option<&'a str>,
    pub problem: Option<&'a str>,
}

/// Records a verification.
pub async fn record_verification(pool: &Pool, row: &NewVerification<'_>) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO verifications (ran_by, intact, events_verified, head_hash,
                 broken_position, broken_event_id, problem)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &row.ran_by,
                &row.intact,
                &row.events_verified,
                &row.head_hash,
                &row.broken_position,
                &row.broken_event_id,
                &row.problem,
            ],
        )
        .await?;
    Ok(())
}

/// The latest recorded verification, if any.
pub async fn last_verification(pool: &Pool) -> anyhow::Result<Option<VerificationRow>> {
    let row = pool
        .get()
        .await?
        .query_opt(
            "SELECT verified_at, ran_by, intact, events_verified, head_hash, broken_position,
                    broken_event_id, problem
             FROM verifications ORDER BY verification_id DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(row.map(|row| VerificationRow {
        verified_at: row.get(0),
        ran_by: row.get(1),
        intact: row.get(2),
        events_verified: row.get(3),
        head_hash: row.get(4),
        broken_position: row.get(5),
        broken_event_id: row.get(6),
        problem: row.get(7),
    }))
}

/// An admin tenant link found in the log.
#[derive(Debug, Clone)]
pub struct AdminLink {
    pub event_id: EventId,
    pub position: LogPosition,
    /// The tenant the link names (`data.object.tenant_id`).
    pub tenant_id: String,
}

/// The earliest event of type `event_type` with `source` `admin` about `object_id` (by
/// `created`, then event ID: the order the fold ranks admin links in).
pub async fn earliest_admin_link(
    client: &impl GenericClient,
    object_id: &str,
    event_type: &str,
) -> anyhow::Result<Option<AdminLink>> {
    let row = client
        .query_opt(
            "SELECT event_id, position,
                    convert_from(body, 'UTF8')::jsonb #>> '{data,object,tenant_id}'
             FROM events WHERE object_id = $1 AND type = $2 AND source = 'admin'
             ORDER BY created, event_id LIMIT 1",
            &[&object_id, &event_type],
        )
        .await?;
    row.map(|r| {
        Ok(AdminLink {
            event_id: EventId::parse(r.get(0))?,
            position: position(r.get(1)),
            tenant_id: r.get(2),
        })
    })
    .transpose()
}

/// Serializes the admin links of one object, so two requests never append two links for it:
/// one attempt at a session advisory lock keyed by `hashtext('tenant_link:' || object_id)`,
/// held on `client` until [`unlock_object_links`]. Returns `false` when another request holds
/// it: the caller answers at once rather than wait on a pooled connection (many waiting
/// requests would take the pool from the webhooks).
pub async fn lock_object_links(
    client: &impl GenericClient,
    object_id: &str,
) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext($1))",
            &[&link_lock_key(object_id)],
        )
        .await?;
    Ok(row.get(0))
}

/// Releases [`lock_object_links`]'s lock. An error leaves the lock held: the caller must then
/// close the session (a pooled connection must not keep it).
pub async fn unlock_object_links(
    client: &impl GenericClient,
    object_id: &str,
) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT pg_advisory_unlock(hashtext($1))",
            &[&link_lock_key(object_id)],
        )
        .await?;
    Ok(())
}

fn link_lock_key(object_id: &str) -> String {
    format!("tenant_link:{object_id}")
}
