//! Recording fold failures in `projection_errors` (schema/V2): the projector's bookkeeping,
//! written in the transaction that advances its checkpoint.

use crate::store::projector::{RecordedError, PROJECTION_NAME};
use deadpool_postgres::Transaction;

/// Records fold failures; an event's error is kept once (a rebuild re-records the same one).
pub async fn record_errors(tx: &Transaction<'_>, errors: &[RecordedError]) -> anyhow::Result<()> {
    for recorded in errors {
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO projection_errors (projection, event_id, position, error)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .await?,
            &[
                &PROJECTION_NAME,
                &recorded.error.event_id,
                &recorded.position,
                &recorded.error.message,
            ],
        )
        .await?;
    }
    Ok(())
}
