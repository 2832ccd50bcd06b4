//! Outgoing webhooks (Standard Webhooks) for platforms that would rather be told than poll.
//!
//! The change feed is the outbox: each endpoint has a cursor into it, and the [`dispatcher`]
//! (one per deployment, elected by an advisory lock) sends each change after the cursor as one
//! signed message, several tenants' at once but each tenant's in feed order, moving the cursor
//! only past changes the receiver answered 2xx. So delivery is at least once and in order per
//! tenant; a message is retried
//! on the schedule of `LEDGER_WEBHOOK_RETRY_SCHEDULE` before the endpoint is disabled, and a
//! 410 disables it at once. [`store`] owns the SQL; [`signing`] the signature scheme.

pub mod dispatcher;
pub mod signing;
pub mod store;

use crate::feed::Change;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `webhook-id` of a change's message: the same for every attempt and every endpoint, so
/// receivers can deduplicate.
pub fn message_id(change_id: i64) -> String {
    format!("msg_{change_id}")
}

/// The message body of a change: `{"type": "<read_model>.<created|updated|deleted>",
/// "timestamp": RFC 3339, "data": <the change as in the feed>}`, the shape the Standard
/// Webhooks specification recommends.
pub fn message_body(change: &Change) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("{}.{}", change.read_model, change.action()),
        "timestamp": change.recorded_at.to_rfc3339(),
        "data": change.to_json(),
    });
    serde_json::to_vec(&body).expect("JSON values serialize")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result {
    result: &'static str,
}

/// Outgoing webhook metrics: attempts by result (this instance's), and endpoint health read
/// from the database at scrape time.
#[derive(Clone, Default)]
pub struct OutboxMetrics {
    attempts: Family<Result, Counter>,
    endpoints_failing: Gauge,
    endpoints_disabled: Gauge,
    messages_pending: Gauge,
}

impl OutboxMetrics {
    /// Registers the metrics under `registry`'s prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "outgoing_webhook_attempts",
            "Outgoing webhook attempts by result (delivered, failed, gone)",
            self.attempts.clone(),
        );
        registry.register(
            "outgoing_webhook_endpoints_failing",
            "Enabled endpoints whose current message has failed at least once",
            self.endpoints_failing.clone(),
        );
        registry.register(
            "outgoing_webhook_endpoints_disabled",
            "Endpoints disabled (410 Gone, or retries exhausted)",
            self.endpoints_disabled.clone(),
        );
        registry.register(
            "outgoing_webhook_changes_pending",
            "Changes not yet delivered to enabled endpoints, summed over endpoints",
            self.messages_pending.clone(),
        );
    }

    /// Counts one attempt: `delivered`, `failed` or `gone`.
    pub fn attempt(&self, result: &'static str) {
        self.attempts.get_or_create(&Result { result }).inc();
    }

    /// Refreshes the endpoint gauges from the database.
    pub async fn refresh(
        &self,
        client: &impl deadpool_postgres::GenericClient,
    ) -> anyhow::Result<()> {
        let (failing, disabled, pending) = store::health(client).await?;
        self.endpoints_failing.set(failing);
        self.endpoints_disabled.set(disabled);
        self.messages_pending.set(pending);
        Ok(())
    }
}
