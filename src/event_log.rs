//! The event log: appending verified events once by Stripe event ID, and recording every
//! delivery.
//!
//! Appends from one instance go through a single writer task that commits them in batches: the
//! many requests waiting at once share one transaction and one WAL flush. Every batch takes the
//! `log_head` row lock, numbers its new events from it and advances it before committing, so
//! positions are dense and become visible in order (see `schema/V1__event_log.sql`). A request
//! is answered only after its batch's COMMIT returned. This module never updates or deletes a
//! log row; the database refuses that anyway.

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projections::Event;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most events committed in one transaction.
pub const BATCH_EVENTS_MAX: usize = 128;
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
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Import => "import",
            Source::Reconcile => "reconcile",
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

/// Why an append was not acknowledged; the webhook answers 503 and Stripe retries.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("the append did not commit within {0:?}")]
    Timeout(Duration),
    #[error("too many appends are waiting")]
    Overloaded,
}

struct Request {
    delivery: Delivery,
    /// When the webhook answers 503 if this request has not been answered.
    deadline: Instant,
    reply: oneshot::Sender<Result<Appended, String>>,
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
        tokio::spawn(write_batches(pool, receiver));
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
            Ok(Ok(result)) => result.map_err(|e| AppendError::Unavailable(anyhow::anyhow!(e))),
        }
    }
}

async fn write_batches(pool: Pool, mut receiver: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(BATCH_EVENTS_MAX);
    while receiver.recv_many(&mut batch, BATCH_EVENTS_MAX).await > 0 {
        // A request that already gave up (answered 503) must not be committed now.
        batch.retain(|request| !request.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let deliveries: Vec<&Delivery> = batch.iter().map(|r| &r.delivery).collect();
        let deadline = batch.iter().map(|r| r.deadline).min();
        let result = append_batch_by(&pool, &deliveries, deadline).await;
        match result {
            Ok(appended) => {
                for (request, appended) in batch.drain(..).zip(appended) {
                    let _ = request.reply.send(Ok(appended));
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    events = batch.len(),
                    "append failed"
                );
                let message = format!("{error:#}");
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Appends deliveries in one transaction, in order; returns one answer per delivery.
pub async fn append_batch(pool: &Pool, deliveries: &[&Delivery]) -> anyhow::Result<Vec<Appended>> {
    append_batch_by(pool, deliveries, None).await
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
    append_batch_by(pool, deliveries, Some(deadline)).await
}

async fn append_batch_by(
    pool: &Pool,
    deliveries: &[&Delivery],
    deadline: Option<Instant>,
) -> anyhow::Result<Vec<Appended>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // One round trip: lock the head and learn which IDs are already stored.
    let read = tx.prepare_cached(READ_HEAD).await?;
    let ids: Vec<&str> = deliveries.iter().map(|d| d.event.id.as_str()).collect();
    let stored = tx.query(&read, &[&ids]).await?;
    let first = stored.first().context("log_head has its row")?;
    let head: i64 = first.get(0);
    let mut chain_hash: Vec<u8> = first.get(1);
    let mut known: HashMap<String, (i64, Vec<u8>)> = stored
        .iter()
        .filter_map(|row| Some((row.get::<_, Option<String>>(2)?, (row.get(3), row.get(4)))))
        .collect();

    let mut events = EventColumns::default();
    let mut rows = DeliveryColumns::default();
    let mut answers = Vec::with_capacity(deliveries.len());
    let mut next = head;
    for delivery in deliveries {
        let digest = Sha256::digest(&delivery.body).to_vec();
        let answer = match known.get(&delivery.event.id) {
            Some((position, stored_digest)) => {
                // An import skips what is already stored; a webhook delivery is recorded.
                if delivery.source == Source::Webhook {
                    rows.push(delivery, true, &digest, stored_digest != &digest);
                }
                Appended {
                    position: *position,
                    duplicate: true,
                }
            }
            None => {
                next += 1;
                chain_hash = crate::chain::link(&chain_hash, next, &delivery.event.id, &digest);
                events.push(next, delivery, &digest, chain_hash.clone());
                rows.push(delivery, false, &digest, false);
                known.insert(delivery.event.id.clone(), (next, digest));
                Appended {
                    position: next,
                    duplicate: false,
                }
            }
        };
        answers.push(answer);
    }
    // One round trip: the events, the new head, the deliveries and the wake-up.
    let write = tx.prepare_cached(WRITE_BATCH).await?;
    let advanced = next > head;
    let head_text = next.to_string();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = events.params();
    let head_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&next, &chain_hash, &advanced, &head_text];
    params.extend(head_params);
    params.extend(rows.params());
    bound_by(&tx, deadline).await?;
    tx.query(&write, &params).await?;
    time_left(deadline)?;
    tx.commit().await?;
    Ok(answers)
}

/// Time left before `deadline` less [`COMMIT_MARGIN`] (`None` without a deadline). Errors
/// when none is left: the append must roll back.
fn time_left(deadline: Option<Instant>) -> anyhow::Result<Option<Duration>> {
    let Some(deadline) = deadline else {
        return Ok(None);
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(COMMIT_MARGIN);
    anyhow::ensure!(
        !left.is_zero(),
        "the answer deadline passed before the append finished"
    );
    Ok(Some(left))
}

/// Limits the transaction's next statement to [`time_left`] when that is shorter than the
/// pool's `statement_timeout`; PostgreSQL cancels it past that.
async fn bound_by(
    tx: &deadpool_postgres::Transaction<'_>,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    if let Some(left) = time_left(deadline)? {
        if left < Duration::from_millis(crate::db::STATEMENT_TIMEOUT_MS) {
            let milliseconds = left.as_millis().max(1);
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {milliseconds}"))
                .await?;
        }
    }
    Ok(())
}

/// Locks the head row and returns it once per already-stored event among `$1` (once with
/// nulls when none is).
const READ_HEAD: &str = "SELECT h.position, h.chain_hash, e.event_id, e.position, e.body_sha256
     FROM log_head h LEFT JOIN events e ON e.event_id = ANY($1::text[])
     FOR UPDATE OF h";

/// Inserts the batch's events and deliveries, advances the head and notifies the projector,
/// in one statement. The deliveries' foreign keys are checked at its end, when the events it
/// inserted are visible.
const WRITE_BATCH: &str = "WITH new_events AS (
         INSERT INTO events (position, event_id, type, created, api_version, livemode, account,
             object_id, object_type, body, body_sha256, received_at, source,
             signature_timestamp, secret_index, signature, chain_hash)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[],
             $5::text[], $6::boolean[], $7::text[], $8::text[], $9::text[], $10::bytea[],
             $11::bytea[], $12::timestamptz[], $13::text[], $14::timestamptz[],
             $15::smallint[], $16::text[], $17::bytea[])
     ), new_head AS (
         UPDATE log_head SET position = $18, chain_hash = $19 WHERE $20
     ), new_deliveries AS (
         INSERT INTO deliveries (event_id, received_at, duplicate, source,
             signature_timestamp, secret_index, signature, body_sha256, body)
         SELECT * FROM unnest($22::text[], $23::timestamptz[], $24::boolean[], $25::text[],
             $26::timestamptz[], $27::smallint[], $28::text[], $29::bytea[], $30::bytea[])
     )
     SELECT pg_notify('ledger_events', $21) WHERE $20";

#[derive(Default)]
struct EventColumns<'a> {
    position: Vec<i64>,
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
    chain_hash: Vec<Vec<u8>>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, position: i64, d: &'a Delivery, digest: &[u8], chain_hash: Vec<u8>) {
        self.chain_hash.push(chain_hash);
        self.position.push(position);
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
        self.body_sha256.push(digest.to_vec());
        self.received_at.push(d.received_at);
        self.source.push(d.source.as_str());
        self.signature_timestamp
            .push(d.signature_timestamp.map(unix));
        self.secret_index.push(d.secret_index.map(|i| i as i16));
        self.signature.push(d.signature.as_deref());
    }

    /// `$1` to `$17` of [`WRITE_BATCH`].
    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.position,
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
            &self.chain_hash,
        ]
    }
}

#[derive(Default)]
struct DeliveryColumns<'a> {
    event_id: Vec<&'a str>,
    received_at: Vec<DateTime<Utc>>,
    duplicate: Vec<bool>,
    source: Vec<&'static str>,
    signature_timestamp: Vec<Option<DateTime<Utc>>>,
    secret_index: Vec<Option<i16>>,
    signature: Vec<Option<&'a str>>,
    body_sha256: Vec<Vec<u8>>,
    body: Vec<Option<&'a [u8]>>,
}

impl<'a> DeliveryColumns<'a> {
    fn push(&mut self, d: &'a Delivery, duplicate: bool, digest: &[u8], body_differs: bool) {
        self.event_id.push(&d.event.id);
        self.received_at.push(d.received_at);
        self.duplicate.push(duplicate);
        self.source.push(d.source.as_str());
        self.signature_timestamp
            .push(d.signature_timestamp.map(unix));
        self.secret_index.push(d.secret_index.map(|i| i as i16));
        self.signature.push(d.signature.as_deref());
        self.body_sha256.push(digest.to_vec());
        self.body.push(body_differs.then_some(&d.body[..]));
    }

    /// `$22` to `$30` of [`WRITE_BATCH`].
    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.event_id,
            &self.received_at,
            &self.duplicate,
            &self.source,
            &self.signature_timestamp,
            &self.secret_index,
            &self.signature,
            &self.body_sha256,
            &self.body,
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
