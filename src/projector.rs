//! The projector: folds the log into the read models, on exactly one instance at a time.
//!
//! Election: a session-level advisory lock taken on a dedicated connection (never a pooled one,
//! whose session outlives its borrower); PostgreSQL releases it when that connection ends, so a
//! dead leader's lock frees itself and another instance takes over within [`ELECTION_RETRY`].
//!
//! On election the leader loads the latest fold-state snapshot ([`snapshot`]) and folds only
//! the events between it and the stored checkpoint (without a usable snapshot, the whole log up
//! to the checkpoint: the fold is deterministic, so either reproduces the state behind the
//! rows), then tails `position > checkpoint`, writing a new snapshot every
//! [`SNAPSHOT_EVERY_EVENTS`] events. Each batch's rows and the new checkpoint commit in one
//! transaction, and the checkpoint advances only by compare-and-set from the value this leader
//! read, so a deposed leader's write rolls back. Positions are dense and commit in order
//! (`event_log`), so tailing never skips an event.
//!
//! A rebuild ([`rebuild`]) folds the whole log into a fresh ledger and replaces every row and
//! the checkpoint in one transaction: readers see the old rows until the commit, and the live
//! loop resumes from the rebuilt checkpoint, so events appended meanwhile are folded right
//! after. A preview ([`preview`]) does the same and rolls back, keeping what would change.
//! What the projector reports (lag, typed states, read models' sizes) is in [`status`].

pub mod preview;
pub mod rebuild;
pub mod status;

pub use rebuild::{
    active_rebuild, claim_preview, rebuild, request_preview, request_rebuild, try_preview_lock,
    Progress,
};
pub use status::{lag, Lag};

mod snapshot;

pub use snapshot::SNAPSHOT_EVERY_EVENTS;

use crate::read_models;
use deadpool_postgres::Pool;
use futures_util::{StreamExt, TryStreamExt};
use projections::{Event, FoldError, Ledger, ReadEvent};
use rebuild::pending_rebuild;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;

/// The projection's name: one fold renders `tenant_pricing`, `checkout_sessions` and
/// `customers` together, because they share the tenant links learned from each other.
pub const PROJECTION_NAME: &str = "billing";
/// Bump when the fold's logic changes; the status then reports the stored rows as stale.
/// Version 3: a failed payment infers `incomplete` until the subscription has been live, and a
/// paid invoice infers `active` after `incomplete`, `past_due` or `unpaid`. Version 4: money
/// (invoices, payments, refunds, disputes, credit notes) and money events' tenants.
/// Version 5: `tenant_pricing.product_id`, the product of the price. Version 6: the revenue
/// read model (`revenue_streams`, `revenue_movements`). Version 7: the tenant Stripe names on
/// an object itself outranks an admin link.
pub const PROJECTION_VERSION: i32 = 7;
/// Events read and folded per transaction.
pub const FOLD_BATCH_EVENTS: i64 = 1_000;
/// Batches a rebuild reads ahead of its fold.
pub const READ_AHEAD_BATCHES: usize = 4;
/// How long a woken projector waits for more appends before folding (adds this to lag).
pub const LINGER: Duration = Duration::from_millis(5);
/// Shortest time between the starts of two passes that each folded less than a full batch:
/// under steady ingest every append would otherwise start a pass of its own (a read, a
/// transaction of read-model writes, a commit) for the few events it brought; pacing them
/// took a quarter to a third of PostgreSQL's CPU per event off at concurrency 4 and 16
/// (README, Performance, ingest). Adds at most this much to the projection's lag while events keep arriving.
pub const PASS_INTERVAL_MIN: Duration = Duration::from_millis(50);
/// How often an idle projector looks for new events when no wake-up arrives.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often a follower retries the projector lock.
pub const ELECTION_RETRY: Duration = Duration::from_secs(1);
/// Advisory lock key of the projector ("billproj").
pub const PROJECTOR_LOCK_KEY: i64 = 0x6269_6c6c_7072_6f6a;

/// PostgreSQL NOTIFY channel every append signals (payload: the new head position).
pub const APPEND_CHANNEL: &str = "ledger_events";

/// How this instance's projector runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub livemode: bool,
    /// Identifies this process in `projections.owner` and the lock connection's
    /// `application_name`.
    pub instance_id: String,
    /// Queue a rebuild on election when the stored rows come from another fold version.
    pub rebuild_stale: bool,
    /// Events folded between two snapshots of the fold state (default
    /// [`SNAPSHOT_EVERY_EVENTS`]).
    pub snapshot_every_events: i64,
}

/// Runs until `shutdown`: competes for the lock, projects while holding it, and competes again
/// after losing it. `wake` is notified by local appends; appends by other instances arrive by
/// LISTEN on the lock connection. Returning releases the lock (its connection closes).
pub async fn run(pool: Pool, settings: Settings, wake: Arc<Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let led = tokio::select! {
            result = lead(&pool, &settings, &wake, &shutdown) => result,
            () = shutdown.cancelled() => Ok(()),
        };
        if let Err(error) = led {
            if shutdown.is_cancelled() {
                // A follower waiting for the lock is told to stop: a normal shutdown.
                break;
            }
            let error = format!("{error:#}");
            tracing::warn!(%error, "projector stopped; competing again");
            record_failure(&pool, &error).await;
        }
        tokio::select! {
            () = tokio::time::sleep(ELECTION_RETRY) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Takes the lock on a fresh listening connection, waiting for it; returns the connection
/// holding it and its append notifications.
async fn acquire_lock(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<(tokio_postgres::Client, tokio::sync::mpsc::Receiver<()>)> {
    let (client, notifications) =
        crate::db::connect_listening(&settings.database_url, APPEND_CHANNEL).await?;
    let name = format!("billing-ledger projector {}", settings.instance_id);
    client
        .execute("SELECT set_config('application_name', $1, false)", &[&name])
        .await?;
    loop {
        if try_lock(&client).await? {
            return Ok((client, notifications));
        }
        tokio::select! {
            () = tokio::time::sleep(ELECTION_RETRY) => {}
            () = shutdown.cancelled() => anyhow::bail!("shutting down"),
        }
    }
}

/// One non-blocking attempt at the projector lock.
pub async fn try_lock(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&PROJECTOR_LOCK_KEY])
        .await?;
    Ok(row.get(0))
}

async fn lead(
    pool: &Pool,
    settings: &Settings,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (lock, mut appended) = acquire_lock(settings, shutdown).await?;
    tracing::info!(projection.name = PROJECTION_NAME, instance.id = %settings.instance_id, "projector elected");
    let owner = settings.instance_id.as_str();
    let stored_version = claim(pool, owner).await?;
    if settings.rebuild_stale && stored_version != PROJECTION_VERSION {
        if let Some(rebuild_id) = request_rebuild(pool).await? {
            tracing::info!(rebuild.id = %rebuild_id, stored_version, "stale projection: rebuild queued");
        }
    }
    let mut live = Live::resume(pool, settings.livemode, owner).await?;
    live.snapshots.every_events = settings.snapshot_every_events;
    let mut last_expiry = std::time::Instant::now();
    loop {
        anyhow::ensure!(!lock.is_closed(), "lost the projector lock connection");
        if let Some(rebuild_id) = pending_rebuild(pool).await? {
            live.collect_snapshot().await;
            if let Some(rebuilt) =
                rebuild(pool, settings.livemode, rebuild_id, owner, |_| {}).await?
            {
                live = rebuilt;
                live.snapshots.every_events = settings.snapshot_every_events;
            }
            continue;
        }
        if last_expiry.elapsed() >= crate::entitlements::EXPIRY_INTERVAL {
            crate::entitlements::expire_grace(pool).await?;
            last_expiry = std::time::Instant::now();
        }
        let pass_started = tokio::time::Instant::now();
        let folded = live.step(pool).await?;
        live.maybe_snapshot(pool).await?;
        if folded > 0 && (folded as i64) < FOLD_BATCH_EVENTS {
            // Events are still trickling in: let them gather into the next pass.
            tokio::time::sleep_until(pass_started + PASS_INTERVAL_MIN).await;
        } else if folded == 0 {
            tokio::select! {
                () = wake.notified() => {}
                _ = appended.recv() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            // Let a burst gather, so one transaction folds many events instead of one each.
            tokio::time::sleep(LINGER).await;
        }
    }
}

/// Makes a projector failure visible in the status (best effort: the database may be the
/// cause).
async fn record_failure(pool: &Pool, error: &str) {
    if let Ok(client) = pool.get().await {
        let _ = client
            .execute(
                "UPDATE projections SET last_failure = $2, last_failure_at = now() WHERE name = $1",
                &[&PROJECTION_NAME, &error],
            )
            .await;
    }
}

/// Records this instance as the projection's owner; returns the stored fold version.
async fn claim(pool: &Pool, owner: &str) -> anyhow::Result<i32> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO projections (name, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&PROJECTION_NAME, &PROJECTION_VERSION],
        )
        .await?;
    let row = client
        .query_one(
            "UPDATE projections SET owner = $2 WHERE name = $1 RETURNING version",
            &[&PROJECTION_NAME, &owner],
        )
        .await?;
    // Only the leader runs queued rebuilds (and previews), so one still `running` when a
    // leader is elected was left by a leader that died: queue it again, or it would block
    // every later request (409) for good.
    let requeued = client
        .execute(
            "UPDATE rebuilds SET status = $1, started_at = NULL, position_done = 0
             WHERE status = $2 AND NOT by_command",
            &[
                &status::RebuildStatus::Pending.as_str(),
                &status::RebuildStatus::Running.as_str(),
            ],
        )
        .await?;
    if requeued > 0 {
        tracing::warn!(
            projection.name = PROJECTION_NAME,
            "a rebuild left running by a stopped projector is queued again"
        );
    }
    Ok(row.get(0))
}

/// The leader's in-memory fold and the checkpoint its rows are at.
pub struct Live {
    ledger: Ledger,
    checkpoint: i64,
    owner: String,
    snapshots: snapshot::Snapshots,
}

impl Live {
    /// Rebuilds the in-memory state behind the stored rows: the latest usable snapshot plus
    /// the events after it, or else the whole log up to the checkpoint. Records the election
    /// (`projector_elections`) and logs how it resumed.
    async fn resume(pool: &Pool, livemode: bool, owner: &str) -> anyhow::Result<Live> {
        let started = std::time::Instant::now();
        let client = pool.get().await?;
        let checkpoint: i64 = client
            .query_one(
                "SELECT position FROM projections WHERE name = $1",
                &[&PROJECTION_NAME],
            )
            .await?
            .get(0);
        drop(client);
        let (mut ledger, from) = match snapshot::load(pool, livemode, checkpoint).await? {
            Ok(loaded) => (loaded.ledger, Ok(loaded.position)),
            Err(reason) => (Ledger::new(livemode), Err(reason)),
        };
        let after = *from.as_ref().unwrap_or(&0);
        fold_after(pool, &mut ledger, after, checkpoint).await?;
        ledger.take_changes();
        let election = snapshot::Election {
            instance_id: owner,
            snapshot: from,
            checkpoint,
            events_folded: checkpoint - after,
            duration: started.elapsed(),
        };
        log_resumed(&election);
        if let Err(error) = snapshot::record(pool, &election).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "projector election not recorded"
            );
        }
        Ok(Live {
            ledger,
            checkpoint,
            owner: owner.to_owned(),
            snapshots: snapshot::Snapshots::at(after),
        })
    }

    /// Folds and writes the next batch; returns how many events it folded.
    async fn step(&mut self, pool: &Pool) -> anyhow::Result<usize> {
        let batch = read_events(pool, self.checkpoint, FOLD_BATCH_EVENTS).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            return Ok(0);
        };
        let folded = batch.len();
        let errors = fold(&mut self.ledger, batch, true);
        let changes = self.ledger.take_changes();
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        read_models::write(&tx, &changes).await?;
        let tenants = changes.tenant_pricing.keys().map(String::as_str).collect();
        crate::entitlements::refresh(&tx, crate::entitlements::Scope::Tenants(tenants)).await?;
        read_models::record_errors(&tx, &errors).await?;
        let advance = tx
            .prepare_cached(
                "UPDATE projections SET position = $3, updated_at = now(), last_failure = NULL,
                     last_failure_at = NULL
                 WHERE name = $1 AND position = $2 AND owner = $4",
            )
            .await?;
        let advanced = tx
            .execute(
                &advance,
                &[&PROJECTION_NAME, &self.checkpoint, &last, &self.owner],
            )
            .await?;
        anyhow::ensure!(advanced == 1, "checkpoint moved under this projector");
        tx.commit().await?;
        assert!(last > self.checkpoint, "positions only move forward");
        self.checkpoint = last;
        Ok(folded)
    }
}

/// An event read back from the log and read for the fold (see [`ReadEvent`]); `Err` when the
/// stored body no longer parses as an event.
pub struct Stored {
    pub position: i64,
    pub event: Result<ReadEvent, String>,
}

/// Reads up to `limit` events after `after`, in log order.
pub async fn read_events(pool: &Pool, after: i64, limit: i64) -> anyhow::Result<Vec<Stored>> {
    Ok(parse_batch(read_raw(pool, after, limit).await?))
}

/// Up to `limit` rows `(position, body)` after `after`, in log order, unparsed.
async fn read_raw(pool: &Pool, after: i64, limit: i64) -> anyhow::Result<Vec<Row>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT position, body FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .await?;
    Ok(client.query(&statement, &[&after, &limit]).await?)
}

/// Parses and reads each body where it lies in the row buffer: everything about an event that
/// does not need the ledger. The parsed JSON is dropped here, so the fold holds only facts.
fn parse_batch(rows: Vec<Row>) -> Vec<Stored> {
    rows.iter()
        .map(|row| stored(row.get(0), row.get(1)))
        .collect()
}

fn stored(position: i64, body: &[u8]) -> Stored {
    Stored {
        position,
        event: Event::parse(body)
            .map(|event| ReadEvent::read(&event))
            .map_err(|e| e.to_string()),
    }
}

/// A fold failure with the position of its event.
pub struct RecordedError {
    pub position: i64,
    pub error: FoldError,
}

/// Folds a batch; returns the events the fold could not read (they stay in the log). Each
/// failure is logged once, when first met (`log`), not again when state is re-folded.
fn fold(ledger: &mut Ledger, batch: Vec<Stored>, log: bool) -> Vec<RecordedError> {
    let mut errors = Vec::new();
    for stored in batch {
        let result = match stored.event {
            Ok(event) => ledger.apply_read(event).map(|_| ()),
            Err(message) => Err(FoldError {
                event_id: format!("at position {}", stored.position),
                message,
            }),
        };
        if let Err(error) = result {
            if log {
                tracing::warn!(stripe.event_id = %error.event_id, log.position = stored.position,
                error = %error.message, "projection error recorded");
            }
            errors.push(RecordedError {
                position: stored.position,
                error,
            });
        }
    }
    errors
}

/// Logs how an elected projector got its fold state, once.
fn log_resumed(election: &snapshot::Election<'_>) {
    let duration_ms = election.duration.as_millis() as u64;
    match &election.snapshot {
        Ok(position) => tracing::info!(
            projection.name = PROJECTION_NAME,
            checkpoint = election.checkpoint,
            snapshot.position = position,
            events_folded = election.events_folded,
            duration_ms,
            "projector state loaded from a snapshot; tailing the log"
        ),
        Err(reason) if reason == snapshot::NO_SNAPSHOT => tracing::info!(
            projection.name = PROJECTION_NAME,
            checkpoint = election.checkpoint,
            events_folded = election.events_folded,
            duration_ms,
            "no projector snapshot stored: whole log folded; tailing the log"
        ),
        Err(reason) => tracing::warn!(projection.name = PROJECTION_NAME,
            checkpoint = election.checkpoint, reason = %reason,
            events_folded = election.events_folded, duration_ms,
            "projector snapshot not usable: whole log re-folded; tailing the log"),
    }
}

/// Folds the events after `after` through `up_to` into `ledger`: from the log's start by one
/// streamed read ([`fold_log`]), after a snapshot by batched reads (at most about
/// [`snapshot::SNAPSHOT_EVERY_EVENTS`] events).
async fn fold_after(
    pool: &Pool,
    ledger: &mut Ledger,
    after: i64,
    up_to: i64,
) -> anyhow::Result<()> {
    if after == 0 {
        fold_log(pool, ledger, up_to).await?;
        return Ok(());
    }
    let mut position = after;
    while position < up_to {
        let batch = read_events(pool, position, FOLD_BATCH_EVENTS.min(up_to - position)).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        fold(ledger, batch, false);
        position = last;
    }
    Ok(())
}

/// Folds every event with position `<= up_to` into `ledger`, in batches (never the whole log
/// in memory). Returns the fold errors.
async fn fold_log(
    pool: &Pool,
    ledger: &mut Ledger,
    up_to: i64,
) -> anyhow::Result<Vec<RecordedError>> {
    let mut errors = Vec::new();
    let mut batches = stream_log(pool.clone(), up_to);
    while let Some(batch) = batches.recv().await {
        errors.extend(fold(ledger, batch?, false));
    }
    Ok(errors)
}

/// Batches of the log from position 1 through `up_to`, read ahead while the caller folds, with
/// memory bounded by [`READ_AHEAD_BATCHES`].
///
/// The log is streamed by one `COPY ... TO STDOUT (FORMAT binary)`: PostgreSQL sends the bodies
/// as they lie, with no per-batch index descent and no text encoding of `bytea`. Parsing (the
/// costly part, see [`parse_batch`]) runs on [`PARSERS`] blocking threads at once; batches
/// still reach the caller in log order.
fn stream_log(pool: Pool, up_to: i64) -> tokio::sync::mpsc::Receiver<anyhow::Result<Vec<Stored>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(READ_AHEAD_BATCHES);
    tokio::spawn(async move {
        let parsed = copy_log(pool, up_to)
            .map(|raw| async move {
                let rows = raw?;
                Ok(tokio::task::spawn_blocking(move || parse_copied(rows)).await?)
            })
            .buffered(PARSERS);
        let mut parsed = std::pin::pin!(parsed);
        while let Some(batch) = parsed.next().await {
            let failed = batch.is_err();
            if sender.send(batch).await.is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// Threads parsing a rebuild's batches at once.
const PARSERS: usize = 2;

/// The rows of the log through `up_to` in batches of [`FOLD_BATCH_EVENTS`], unparsed, from one
/// binary `COPY` on a [`crate::db::bulk_connection`] (with planner settings of its own),
/// closed when the stream is dropped.
fn copy_log(
    pool: Pool,
    up_to: i64,
) -> impl futures_util::Stream<Item = anyhow::Result<Vec<BinaryCopyOutRow>>> {
    futures_util::stream::once(async move {
        let client = crate::db::bulk_connection(&pool).await?;
        // Walk the primary key: rows stream out at once in position order. Left to itself the
        // planner sorts the whole log first (a parallel scan and a sort of every body).
        client
            .batch_execute("SET enable_seqscan = off; SET enable_sort = off; SET jit = off;")
            .await?;
        let copy = client
            .copy_out(&format!(
                "COPY (SELECT position, body FROM events WHERE position <= {up_to}
                       ORDER BY position) TO STDOUT (FORMAT binary)"
            ))
            .await?;
        let rows = BinaryCopyOutStream::new(copy, &[Type::INT8, Type::BYTEA])
            .map(move |row| {
                let _connection = &client;
                row.map_err(anyhow::Error::from)
            })
            .chunks(FOLD_BATCH_EVENTS as usize)
            .map(|chunk| chunk.into_iter().collect());
        anyhow::Ok(rows)
    })
    .try_flatten()
}

/// [`parse_batch`] for rows read by [`copy_log`].
fn parse_copied(rows: Vec<BinaryCopyOutRow>) -> Vec<Stored> {
    rows.iter()
        .map(|row| stored(row.get(0), row.get(1)))
        .collect()
}
