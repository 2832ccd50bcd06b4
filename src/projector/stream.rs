//! The log as the fold reads it: events parsed where they lie in the driver's buffers
//! ([`Stored`]), read in batches after a position ([`read_events`]) or streamed from the start
//! by one COPY with parsing on blocking threads ([`stream_log`]), and the fold of a batch
//! ([`fold`]) that records, rather than stops at, an event it cannot read. The statements are
//! [`crate::store::log`]'s.

use super::{FOLD_BATCH_EVENTS, READ_AHEAD_BATCHES};
use crate::store;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use projections::{Event, FoldError, Ledger, LogPosition, ReadEvent};

pub use crate::store::projector::RecordedError;

/// An event read back from the log and read for the fold (see [`ReadEvent`]); `Err` when the
/// stored body no longer parses as an event.
pub struct Stored {
    pub position: i64,
    pub event: Result<ReadEvent, String>,
}

/// Reads up to `limit` events after `after`, in log order.
pub async fn read_events(pool: &Pool, after: i64, limit: i64) -> anyhow::Result<Vec<Stored>> {
    let rows = store::log::read_after(pool, store::log::position(after), limit).await?;
    Ok(parse_batch(rows.iter()))
}

/// Parses and reads each body where it lies in the row buffer: everything about an event that
/// does not need the ledger. The parsed JSON is dropped here, so the fold holds only facts.
pub(super) fn parse_batch<'a>(rows: impl Iterator<Item = (LogPosition, &'a [u8])>) -> Vec<Stored> {
    rows.map(|(position, body)| stored(position.get(), body))
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

/// Folds a batch; returns the events the fold could not read (they stay in the log). Each
/// failure is logged once, when first met (`log`), not again when state is re-folded.
pub(super) fn fold(ledger: &mut Ledger, batch: Vec<Stored>, log: bool) -> Vec<RecordedError> {
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

/// Batches of the log from position 1 through `up_to`, read ahead while the caller folds, with
/// memory bounded by [`READ_AHEAD_BATCHES`].
///
/// The log is streamed by one `COPY ... TO STDOUT (FORMAT binary)`: PostgreSQL sends the bodies
/// as they lie, with no per-batch index descent and no text encoding of `bytea`. Parsing (the
/// costly part, see [`parse_batch`]) runs on [`PARSERS`] blocking threads at once; batches
/// still reach the caller in log order.
pub(super) fn stream_log(
    pool: Pool,
    up_to: i64,
) -> tokio::sync::mpsc::Receiver<anyhow::Result<Vec<Stored>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(READ_AHEAD_BATCHES);
    tokio::spawn(async move {
        let up_to = store::log::position(up_to);
        let parsed = store::log::copy_through(pool, up_to, FOLD_BATCH_EVENTS as usize)
            .map(|raw| async move {
                let rows = raw?;
                Ok(tokio::task::spawn_blocking(move || parse_batch(rows.iter())).await?)
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
