//! What the projector reports about itself: lag, the typed states of projections, read models
//! and rebuilds, and each read model's row count and fold version.
//!
//! Read-only, and SQL-free: the statements are [`crate::store::projector`]'s; this module
//! adds what only the projector knows (its fold version, its list of read models).

use super::PROJECTION_VERSION;
use crate::store::projector as store;
use deadpool_postgres::GenericClient;
use uuid::Uuid;

pub use store::status::{
    lag, FoldFailure, Lag, ProjectionFacts, ReadModelFacts, RowCountMethod, ROW_COUNT_EXACT_MAX,
};
pub use store::{RebuildRecord, RebuildStatus};

/// A projection's or read model's state, as the status route reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum ProjectionStatus {
    /// A projector holds the lock and tails the log into these rows.
    Live,
    /// A rebuild (not a preview) is pending or running.
    Rebuilding,
    /// The projector stopped on an error (`projector_failure`); it retries every second.
    Failed,
    /// The rows were built by another fold version than this build's: rebuild.
    Stale,
    /// No instance holds the projector lock.
    Idle,
}

impl ProjectionStatus {
    /// The one rule, in order of precedence: a rebuild, a failure, a version, the lock.
    pub fn of(rebuilding: bool, failed: bool, version: i32, projector_running: bool) -> Self {
        if rebuilding {
            Self::Rebuilding
        } else if failed {
            Self::Failed
        } else if version != PROJECTION_VERSION {
            Self::Stale
        } else if !projector_running {
            Self::Idle
        } else {
            Self::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Rebuilding => "rebuilding",
            Self::Failed => "failed",
            Self::Stale => "stale",
            Self::Idle => "idle",
        }
    }
}

/// A read-model table the projector writes, and the columns of its primary key.
#[derive(Debug, Clone, Copy)]
pub struct ReadModel {
    pub name: &'static str,
    pub key: &'static [&'static str],
}

/// Every read model the projector writes (one fold renders them all). A table added to the
/// fold joins this list, and the rebuild previews and the status route follow.
pub const READ_MODELS: &[ReadModel] = &[
    ReadModel {
        name: "tenant_pricing",
        key: &["tenant_id"],
    },
    ReadModel {
        name: "checkout_sessions",
        key: &["id"],
    },
    ReadModel {
        name: "customers",
        key: &["id"],
    },
    ReadModel {
        name: "unresolved_events",
        key: &["object_id", "event_id"],
    },
    ReadModel {
        name: "event_tenants",
        key: &["tenant_id", "event_id"],
    },
    ReadModel {
        name: "entitlements",
        key: &["tenant_id"],
    },
    ReadModel {
        name: "invoices",
        key: &["id"],
    },
    ReadModel {
        name: "payments",
        key: &["id"],
    },
    ReadModel {
        name: "refunds",
        key: &["id"],
    },
    ReadModel {
        name: "disputes",
        key: &["id"],
    },
    ReadModel {
        name: "credit_notes",
        key: &["id"],
    },
    ReadModel {
        name: "revenue_streams",
        key: &["tenant_id", "currency"],
    },
    ReadModel {
        name: "revenue_movements",
        key: &["tenant_id", "currency", "at"],
    },
];

/// Row counts and versions of [`READ_MODELS`], in that order.
pub async fn read_models(client: &impl GenericClient) -> anyhow::Result<Vec<ReadModelFacts>> {
    let names: Vec<&'static str> = READ_MODELS.iter().map(|m| m.name).collect();
    store::status::read_models(client, &names, PROJECTION_VERSION).await
}

/// Rebuild `rebuild_id`, if it exists.
pub async fn rebuild_record(
    client: &impl GenericClient,
    rebuild_id: Uuid,
) -> anyhow::Result<Option<RebuildRecord>> {
    store::rebuilds::record(client, rebuild_id).await
}

/// The most recently requested rebuild or preview, if any.
pub async fn latest_rebuild(client: &impl GenericClient) -> anyhow::Result<Option<RebuildRecord>> {
    store::rebuilds::latest(client).await
}

/// Reads [`ProjectionFacts`] (this build's fold version when nothing is stored).
pub async fn projection(client: &impl GenericClient) -> anyhow::Result<ProjectionFacts> {
    store::status::projection(client, PROJECTION_VERSION).await
}
