//! The change feed: every committed change of a read-model row, in commit order.
//!
//! Changes are captured by the database itself (schema/V60): any table that called
//! `capture_changes` has its row changes netted per transaction and numbered at commit, in the
//! transaction that wrote them, so the feed never shows a change that did not commit and never
//! misses one. This module owns the SQL that reads `changes`, and [`Watcher`], which tells
//! long-polls and streams when the head moves. It never writes the feed.

pub mod watch;

pub use watch::Watcher;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;

/// Largest page of changes.
pub const PAGE_SIZE_MAX: i64 = 1_000;
/// Page size when the client gives none.
pub const PAGE_SIZE_DEFAULT: i64 = 100;
/// Longest long-poll (`wait`), seconds.
pub const WAIT_SECS_MAX: u32 = 60;
/// PostgreSQL NOTIFY channel the feed's commits signal (payload: the new head ID).
pub const CHANNEL: &str = "ledger_changes";

/// One change of one read-model row.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Dense, from 1, in commit order: the feed's cursor.
    pub id: i64,
    /// The table: `tenant_pricing`, `checkout_sessions`, `customers`, `entitlements`, ...
    pub read_model: String,
    /// The row's key (`tenant_id` or `id`).
    pub key: String,
    pub tenant_id: Option<String>,
    /// `event`, `rebuild`, `plans_reload` or `grace_expired`.
    pub cause: String,
    /// The row's `last_event_id` after the change (before it, for a deletion).
    pub event_id: Option<String>,
    /// That event's log position.
    pub position: Option<i64>,
    /// The row before (null: inserted) and after (null: deleted), as JSON, times RFC 3339 UTC.
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub recorded_at: DateTime<Utc>,
}

/// What a reader wants from the feed.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub read_model: Option<String>,
    pub tenant_id: Option<String>,
}

/// A page: the matching changes after the cursor, and the cursor to continue from. The next
/// cursor passes every change scanned, matching or not, so a filtered reader moves on.
#[derive(Debug)]
pub struct Page {
    pub changes: Vec<Change>,
    pub next: i64,
}

/// Reads up to `limit` changes after `after` that match `filter`, in ID order. Errors: the
/// database's.
pub async fn page(
    client: &impl GenericClient,
    after: i64,
    limit: i64,
    filter: &Filter,
) -> anyhow::Result<Page> {
    // One statement, one snapshot: the head and the rows are read as of the same commits.
    let statement = client
        .prepare_cached(
            "SELECT h.id, c.id, c.read_model, c.key, c.tenant_id, c.cause, c.event_id,
                    c.position, c.before, c.after, c.recorded_at
             FROM change_head h LEFT JOIN LATERAL (
                 SELECT * FROM changes WHERE id > $1 AND id <= h.id
                     AND ($3::text IS NULL OR read_model = $3)
                     AND ($4::text IS NULL OR tenant_id = $4)
                 ORDER BY id LIMIT $2) c ON true
             ORDER BY c.id",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&after, &limit, &filter.read_model, &filter.tenant_id],
        )
        .await?;
    let head: i64 = rows.first().map_or(after, |row| row.get(0));
    let changes: Vec<Change> = rows
        .iter()
        .filter(|row| row.get::<_, Option<i64>>(1).is_some())
        .map(|row| Change {
            id: row.get(1),
            read_model: row.get(2),
            key: row.get(3),
            tenant_id: row.get(4),
            cause: row.get(5),
            event_id: row.get(6),
            position: row.get(7),
            before: row.get(8),
            after: row.get(9),
            recorded_at: row.get(10),
        })
        .collect();
    let next = if (changes.len() as i64) < limit {
        head.max(after)
    } else {
        changes.last().map_or(after, |c| c.id)
    };
    Ok(Page { changes, next })
}

/// The last change ID committed.
pub async fn head(client: &impl GenericClient) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT id FROM change_head", &[])
        .await?
        .get(0))
}

impl Change {
    /// The change as the API and outgoing webhooks render it (`ChangeView` in the HTTP layer
    /// has the same fields): `cursor` is the ID as a string.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "cursor": self.id.to_string(),
            "read_model": self.read_model,
            "key": self.key,
            "tenant_id": self.tenant_id,
            "before": self.before,
            "after": self.after,
            "event_id": self.event_id,
            "position": self.position,
            "cause": self.cause,
            "recorded_at": self.recorded_at.to_rfc3339(),
        })
    }

    /// `created`, `updated` or `deleted`: what happened to the row.
    pub fn action(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, _) => "created",
            (_, None) => "deleted",
            _ => "updated",
        }
    }
}
