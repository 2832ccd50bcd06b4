//! Rebuild previews: what a rebuild's swap would change, read model by read model.
//!
//! A preview runs the rebuild's own write path (same fold, same statements) inside the swap's
//! transaction, compares every read model with a snapshot taken before the rewrite, and rolls
//! the transaction back, so the real rebuild that follows writes exactly what was compared. The
//! comparison is SQL: a FULL JOIN of the snapshot and the rewritten table on the primary key,
//! rows kept where `IS DISTINCT FROM` holds ([`crate::store::projector::diff`] runs it); this
//! module chooses the tables and shapes the result.

use super::status::{ReadModel, READ_MODELS};
use crate::store::projector::diff;
use deadpool_postgres::Transaction;
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Rows of each kind (added, removed, changed) kept per read model with their values.
pub const DIFF_ROWS_SHOWN_MAX: i64 = 100;

/// Prefix of the temporary snapshots a preview compares with (dropped at the rollback).
const SNAPSHOT_PREFIX: &str = "preview_before_";

/// One row a swap would change, as JSON objects of the whole row (column names as in the
/// table, times RFC 3339 UTC).
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct RowChange {
    /// The primary key, its columns joined by `/` (`tenant_id/event_id` for `event_tenants`).
    pub key: String,
    /// The row as it is now; null for an added row.
    pub before: Option<Value>,
    /// The row as the rebuild would write it; null for a removed row.
    pub after: Option<Value>,
}

/// The rows of one kind: how many, and the first [`DIFF_ROWS_SHOWN_MAX`] by key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct RowChanges {
    pub count: i64,
    pub rows: Vec<RowChange>,
}

/// What a swap would do to one read model.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct ReadModelDiff {
    pub read_model: String,
    /// Rows the rebuild writes that the table lacks.
    pub added: RowChanges,
    /// Rows in the table that the rebuild does not write.
    pub removed: RowChanges,
    /// Rows under the same key whose values differ.
    pub changed: RowChanges,
}

impl ReadModelDiff {
    pub fn total(&self) -> i64 {
        self.added.count + self.removed.count + self.changed.count
    }
}

/// A preview's result, stored in `rebuilds.diff`.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct Diff {
    /// Every read model, in the status route's order (unchanged ones with zero counts).
    pub read_models: Vec<ReadModelDiff>,
    /// Rows shown per kind and read model at most.
    pub rows_shown_max: i64,
}

impl Diff {
    /// Rows a swap would change, over all read models.
    pub fn total(&self) -> i64 {
        self.read_models.iter().map(ReadModelDiff::total).sum()
    }
}

/// Snapshots every read model except `event_tenants` (which a rebuild stages in a table of
/// its own) into temporary tables, before the swap rewrites them.
pub async fn snapshot(tx: &Transaction<'_>) -> anyhow::Result<()> {
    let tables: Vec<&str> = READ_MODELS
        .iter()
        .filter(|m| m.name != "event_tenants")
        .map(|m| m.name)
        .collect();
    diff::copy_tables(tx, &tables, SNAPSHOT_PREFIX).await
}

/// Compares every read model with its snapshot (`event_tenants` with the rebuild's staging
/// table `staged_event_tenants`); call after the swap's writes, before the rollback.
pub async fn compare(tx: &Transaction<'_>, staged_event_tenants: &str) -> anyhow::Result<Diff> {
    diff::prepare(tx).await?;
    let mut read_models = Vec::with_capacity(READ_MODELS.len());
    for model in READ_MODELS {
        let (before, after) = if model.name == "event_tenants" {
            (model.name.to_owned(), staged_event_tenants.to_owned())
        } else {
            (
                format!("{SNAPSHOT_PREFIX}{}", model.name),
                model.name.to_owned(),
            )
        };
        read_models.push(compare_one(tx, model, &before, &after).await?);
    }
    Ok(Diff {
        read_models,
        rows_shown_max: DIFF_ROWS_SHOWN_MAX,
    })
}

async fn compare_one(
    tx: &Transaction<'_>,
    model: &ReadModel,
    before: &str,
    after: &str,
) -> anyhow::Result<ReadModelDiff> {
    let tables = diff::Compared {
        key: model.key,
        before,
        after,
    };
    let kinds = diff::rows(tx, &tables, DIFF_ROWS_SHOWN_MAX).await?;
    let mut diff = ReadModelDiff {
        read_model: model.name.to_owned(),
        added: RowChanges::default(),
        removed: RowChanges::default(),
        changed: RowChanges::default(),
    };
    for kind in kinds {
        let changes = RowChanges {
            count: kind.count,
            rows: serde_json::from_value(kind.rows)?,
        };
        match kind.kind {
            diff::Kind::Added => diff.added = changes,
            diff::Kind::Removed => diff.removed = changes,
            diff::Kind::Changed => diff.changed = changes,
        }
    }
    Ok(diff)
}
