//! The event log: appending verified events once by Stripe event ID, and recording every
//! delivery.
//!
//! Appends from one instance go through a writer task that commits them in batches: the many
//! requests waiting at once share one transaction and one WAL flush, and up to
//! [`BATCHES_IN_FLIGHT_MAX`] batches are in flight (one, as measured). A batch is one call of the server-side
//! function `ledger_append` (`schema/V50__append_function.sql`), one round trip: it takes the
//! `log_head` row lock, decides duplicates under it (so the same event arriving at two
//! instances at once is stored once and answered as a duplicate by the second), numbers the new
//! events from the head and chains them, and advances the head before its commit; positions are
//! dense and become visible in order (see `schema/V1__event_log.sql`). A request is answered
//! only after its batch committed. Projectors (of every instance) are told of appends by a
//! `NOTIFY ledger_events` sent after the commit, from a transaction of its own ([`announce`];
//! `schema/V91__append_notify_after_commit.sql` says why not inside the append). This module
//! never updates or deletes a log row; the database refuses that anyway.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projections::Event;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::store::{DeadlinePassed, StoreError};

/// Most events committed in one transaction.
pub const BATCH_EVENTS_MAX: usize = 128;
/// Batches one instance has in flight at once, each on its own pooled connection. Measured
/// (README, Performance): 2 made more, smaller batches that each wait for the other's WAL
/// flush under the head lock, for no more throughput and a worse p99; with one, the requests
/// arriving during a commit all join the next batch.
pub const BATCHES_IN_FLIGHT_MAX: usize = 1;
/// Requests that may wait for the writer before new ones are refused (503).
pub const QUEUE_EVENTS_MAX: usize = 4096;
/// Longest a request waits for its event to be committed before answering 503.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(8);
/// Time kept free before a batch's answer deadline for the commit's own WAL flush: the
/// batch's statements (deferred triggers at commit included) must finish by then or roll back.
pub const COMMIT_MARGIN: Duration = Duration::from_millis(500);

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A signed webhook delivery.
    Webhook,
    /// A line of an Events API export (`billing-ledger import`), not signature-verified.
    Import,
    /// Fetched from Stripe's Events API with the account's key (`billing-ledger reconcile`),
    /// not signature-verified.
    Reconcile,
    /// An event of the ledger's own made by an admin (a tenant link, `src/http/links.rs`).
    Admin,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Import => "import",
            Source::Reconcile => "reconcile",
            Source::Admin => "admin",
        }
    }
}

/// One delivery of one event, ready to append.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Event,
    /// The body exactly as received.
    pub body: Bytes,
    pub received_at: DateTime<Utc>,
    pub source: Source,
    /// `t` of the verifying signature, Unix seconds.
    pub signature_timestamp: Option<i64>,
    pub secret_index: Option<usize>,
    pub signature: Option<String>,
}

impl Delivery {
    /// An event read from an Events API export (or generated), not signature-verified.
    /// Errors: the body is not a Stripe event.
    pub fn imported(
        body: Bytes,
        received_at: DateTime<Utc>,
    ) -> Result<Delivery, projections::EnvelopeError> {
        Ok(Delivery {
            event: Event::parse(&body)?,
            body,
            received_at,
            source: Source::Import,
            signature_timestamp: None,
            secret_index: None,
            signature: None,
        })
    }
}

/// The log's answer for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub position: i64,
    /// The event ID was already in the log; only the delivery was recorded.
    pub duplicate: bool,
}

/// Why an append was not acknowledged; nothing was stored. The webhook answers 503 (500 for
/// [`AppendError::Internal`]) and Stripe retries either way.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The append failed for a reason of our own (a bug); nothing was stored.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    #[error("the append did not commit within {0:?}")]
    Timeout(Duration),
    #[error("too many appends are waiting")]
    Overloaded,
}

struct Request {
    delivery: Delivery,
    /// When the webhook answers 503 if this request has not been answered.
    deadline: Instant,
    reply: oneshot::Sender<Result<Appended, BatchFailure>>,
}

/// A handle to this instance's writer task. Cloning is cheap.
#[derive(Clone)]
pub struct Appender {
    requests: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts the writer task on `pool`.
    pub fn start(pool: Pool) -> Appender {
        let (requests, receiver) = mpsc::channel(QUEUE_EVENTS_MAX);
        let (head, heads) = watch::channel(0);
        tokio::spawn(announce_heads(pool.clone(), heads));
        tokio::spawn(write_batches(pool, receiver, head));
        Appender { requests }
    }

    /// A handle with no writer behind it (for building the OpenAPI document); every append
    /// fails as unavailable.
    pub fn detached() -> Appender {
        let (requests, _) = mpsc::channel(1);
        Appender { requests }
    }

    /// Appends one delivery and waits for its commit.
    pub async fn append(&self, delivery: Delivery) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + APPEND_TIMEOUT;
        self.requests
            .try_send(Request {
                delivery,
                deadline,
                reply,
            })
            .map_err(|_| AppendError::Overloaded)?;
        match tokio::time::timeout(APPEND_TIMEOUT, answer).await {
            Err(_) => Err(AppendError::Timeout(APPEND_TIMEOUT)),
            Ok(Err(_)) => Err(AppendError::Unavailable(anyhow::anyhow!("writer stopped"))),
            Ok(Ok(result)) => result.map_err(|failure| {
                let cause = anyhow::anyhow!(failure.message);
                if failure.unavailable {
                    AppendError::Unavailable(cause)
                } else {
                    AppendError::Internal(cause)
                }
            }),
        }
    }
}

/// Takes the waiting requests as batches, up to [`BATCHES_IN_FLIGHT_MAX`] at once, each on its
/// own pooled connection. Batches in flight commit one after the other on the head lock (a
/// second one's transfer and planning would overlap the first's commit); requests that arrive
/// while every slot is busy wait and join the next batch.
async fn write_batches(
    pool: Pool,
    mut receiver: mpsc::Receiver<Request>,
    head: watch::Sender<i64>,
) {
    let head = Arc::new(head);
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = Vec::with_capacity(BATCH_EVENTS_MAX);
        if receiver.recv_many(&mut batch, BATCH_EVENTS_MAX).await == 0 {
            break;
        }
        let (pool, head) = (pool.clone(), head.clone());
        tokio::spawn(async move {
            write_batch(&pool, batch, &head).await;
            drop(slot);
        });
    }
}

/// Commits one batch, answers its requests and hands the new head to [`announce_heads`].
async fn write_batch(pool: &Pool, mut batch: Vec<Request>, head: &watch::Sender<i64>) {
    // A request that already gave up (answered 503) must not be committed now.
    batch.retain(|request| !request.reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let deliveries: Vec<&Delivery> = batch.iter().map(|r| &r.delivery).collect();
    let deadline = batch.iter().map(|r| r.deadline).min();
    match append_batch_by(pool, &deliveries, deadline).await {
        Ok(appended) => {
            if let Some(new_head) = new_head(&appended) {
                head.send_if_modified(|announced| {
                    let newer = new_head > *announced;
                    *announced = (*announced).max(new_head);
                    newer
                });
            }
            for (request, appended) in batch.into_iter().zip(appended) {
                let _ = request.reply.send(Ok(appended));
            }
        }
        Err(error) => {
            let message = format!("{error:#}");
            let unavailable = StoreError::classify(error).is_unavailable();
            tracing::warn!(error = %message, events = batch.len(), unavailable, "append batch failed");
            let failure = BatchFailure {
                message,
                unavailable,
            };
            for request in batch {
                let _ = request.reply.send(Err(failure.clone()));
            }
        }
    }
}

/// Why a batch failed, as told to each of its requests: the cause, and whether the database
/// was unavailable ([`StoreError::classify`]) rather than our own code at fault.
#[derive(Debug, Clone)]
struct BatchFailure {
    message: String,
    unavailable: bool,
}

/// Appends deliveries in one transaction, in order, and announces them ([`announce`]) before
/// returning; returns one answer per delivery.
pub async fn append_batch(pool: &Pool, deliveries: &[&Delivery]) -> anyhow::Result<Vec<Appended>> {
    let appended = append_batch_by(pool, deliveries, None).await?;
    if let Some(head) = new_head(&appended) {
        if let Err(error) = announce(pool, head).await {
            // Committed all the same; projectors poll for what they were not told.
            tracing::warn!(error = format!("{error:#}"), "append not announced");
        }
    }
    Ok(appended)
}

/// The highest position a batch stored anew, if it stored any.
fn new_head(appended: &[Appended]) -> Option<i64> {
    appended
        .iter()
        .filter(|a| !a.duplicate)
        .map(|a| a.position)
        .max()
}

/// Sends the heads committed by this instance's writer to [`announce`], one at a time: heads
/// that arrive while one is being sent are coalesced into the next (only the latest is sent).
async fn announce_heads(pool: Pool, mut heads: watch::Receiver<i64>) {
    while heads.changed().await.is_ok() {
        let head = *heads.borrow_and_update();
        if let Err(error) = announce(&pool, head).await {
            // Projectors poll (`projector::POLL_INTERVAL`) for what they were not told.
            tracing::warn!(error = format!("{error:#}"), head, "appends not announced");
        }
    }
}

/// Tells every instance's projector that the log's head reached `head`: `NOTIFY
/// ledger_events` (payload the position, as text), after the append's commit, so a woken
/// listener finds the rows visible. Its own transaction commits with `synchronous_commit =
/// off`: a notification is not data, and waiting for its WAL flush would cost a flush per
/// announcement. (Inside the append it serialized the head lock's holder behind every other
/// notifying commit: `schema/V91__append_notify_after_commit.sql`.)
pub async fn announce(pool: &Pool, head: i64) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    transaction
        .batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    transaction
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&crate::projector::APPEND_CHANNEL, &head.to_string()],
        )
        .await?;
    transaction.commit().await?;
    Ok(())
}

/// [`append_batch`], rolled back unless its statements finish [`COMMIT_MARGIN`] before
/// `deadline` (errors then): a webhook answered 503 at its deadline must not have its event
/// commit later. Waits for a pooled connection (2 s at most) and for the `log_head` lock (2 s)
/// count against it. What remains possible: a `COMMIT` that itself outlasts the margin (its
/// WAL flush, or deferred triggers, which PostgreSQL runs outside `statement_timeout`; the
/// schema has none); Stripe's retry of such an event is answered as a duplicate.
pub async fn append_batch_before(
    pool: &Pool,
    deliveries: &[&Delivery],
    deadline: Instant,
) -> anyhow::Result<Vec<Appended>> {
    let appended = append_batch_by(pool, deliveries, Some(deadline)).await?;
    if let Some(head) = new_head(&appended) {
        if let Err(error) = announce(pool, head).await {
            tracing::warn!(error = format!("{error:#}"), "append not announced");
        }
    }
    Ok(appended)
}

async fn append_batch_by(
    pool: &Pool,
    deliveries: &[&Delivery],
    deadline: Option<Instant>,
) -> anyhow::Result<Vec<Appended>> {
    let client = pool.get().await?;
    let append = client.prepare_cached(APPEND).await?;
    let columns = Columns::new(deliveries);
    let params = columns.params();
    let rows = match statement_bound(deadline)? {
        // One round trip: the call commits in its own implicit transaction, bounded by the
        // pool's `statement_timeout`.
        None => client.query(&append, &params).await?,
        // Still one round trip: BEGIN, the tighter bound, the call and COMMIT are pipelined
        // (tokio-postgres sends requests polled together without waiting for answers). A
        // failed call aborts the transaction and the COMMIT then rolls it back.
        Some(milliseconds) => {
            let bound = format!("BEGIN; SET LOCAL statement_timeout = {milliseconds}");
            let begin = client.batch_execute(&bound);
            let call = client.query(&append, &params);
            let commit = client.batch_execute("COMMIT");
            let (begun, rows, committed) = tokio::join!(begin, call, commit);
            begun?;
            let rows = rows?;
            committed?;
            rows
        }
    };
    anyhow::ensure!(
        rows.len() == deliveries.len(),
        "ledger_append answered {} rows for {} deliveries",
        rows.len(),
        deliveries.len()
    );
    Ok(rows
        .iter()
        .map(|row| Appended {
            position: row.get(0),
            duplicate: row.get(1),
        })
        .collect())
}

/// Time left before `deadline` less [`COMMIT_MARGIN`] (`None` without a deadline). Errors
/// when none is left: the append must not start.
fn time_left(deadline: Option<Instant>) -> anyhow::Result<Option<Duration>> {
    let Some(deadline) = deadline else {
        return Ok(None);
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(COMMIT_MARGIN);
    if left.is_zero() {
        return Err(DeadlinePassed("the answer deadline passed before the append started").into());
    }
    Ok(Some(left))
}

/// The `statement_timeout` (milliseconds) the append must run under when [`time_left`] is
/// shorter than the pool's own; PostgreSQL cancels the call past it, so it rolls back.
fn statement_bound(deadline: Option<Instant>) -> anyhow::Result<Option<u128>> {
    Ok(time_left(deadline)?
        .filter(|left| *left < Duration::from_millis(crate::db::STATEMENT_TIMEOUT_MS))
        .map(|left| left.as_millis().max(1)))
}

/// The whole append, in one statement (`schema/V50__append_function.sql`, replaced by
/// `V91__append_notify_after_commit.sql`): lock the head, decide duplicates, number and chain
/// the new events, insert events and deliveries, advance the head. Announcing it is
/// [`announce`]'s job, after the commit. One row per delivery, in order: (position, duplicate).
const APPEND: &str = "SELECT appended_position, appended_duplicate FROM ledger_append(
         $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::boolean[], $6::text[],
         $7::text[], $8::text[], $9::bytea[], $10::bytea[], $11::timestamptz[], $12::text[],
         $13::timestamptz[], $14::smallint[], $15::text[])";

/// The batch as parallel arrays, the arguments of `ledger_append`.
#[derive(Default)]
struct Columns<'a> {
    event_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    created: Vec<DateTime<Utc>>,
    api_version: Vec<Option<&'a str>>,
    livemode: Vec<bool>,
    account: Vec<Option<&'a str>>,
    object_id: Vec<Option<&'a str>>,
    object_type: Vec<Option<&'a str>>,
    body: Vec<&'a [u8]>,
    body_sha256: Vec<Vec<u8>>,
    received_at: Vec<DateTime<Utc>>,
    source: Vec<&'static str>,
    signature_timestamp: Vec<Option<DateTime<Utc>>>,
    secret_index: Vec<Option<i16>>,
    signature: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn new(deliveries: &[&'a Delivery]) -> Columns<'a> {
        let mut columns = Columns::default();
        for d in deliveries {
            columns.push(d);
        }
        columns
    }

    fn push(&mut self, d: &'a Delivery) {
        self.event_id.push(&d.event.id);
        self.event_type.push(&d.event.event_type);
        self.created.push(unix(d.event.created));
        self.api_version.push(d.event.api_version.as_deref());
        self.livemode.push(d.event.livemode);
        self.account.push(d.event.account.as_deref());
        self.object_id
            .push(d.event.object_id().filter(|s| clean(s)));
        self.object_type
            .push(d.event.object_type().filter(|s| clean(s)));
        self.body.push(&d.body);
        self.body_sha256.push(Sha256::digest(&d.body).to_vec());
        self.received_at.push(d.received_at);
        self.source.push(d.source.as_str());
        self.signature_timestamp
            .push(d.signature_timestamp.map(unix));
        self.secret_index.push(d.secret_index.map(|i| i as i16));
        self.signature.push(d.signature.as_deref());
    }

    /// `$1` to `$15` of [`APPEND`].
    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.event_id,
            &self.event_type,
            &self.created,
            &self.api_version,
            &self.livemode,
            &self.account,
            &self.object_id,
            &self.object_type,
            &self.body,
            &self.body_sha256,
            &self.received_at,
            &self.source,
            &self.signature_timestamp,
            &self.secret_index,
            &self.signature,
        ]
    }
}

/// Object IDs are kept only when PostgreSQL `text` can hold them (no NUL) and they are short.
fn clean(s: &str) -> bool {
    !s.contains('\0') && s.len() <= projections::envelope::IDENTIFIER_BYTES_MAX
}

/// Unix seconds (already range-checked by the envelope) as a UTC instant.
pub fn unix(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).expect("seconds within chrono's range")
}
