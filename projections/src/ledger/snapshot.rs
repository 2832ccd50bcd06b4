//! The whole fold state as bytes, so a newly elected projector resumes from it instead of
//! re-folding the log (`src/projector/snapshot.rs` stores it).
//!
//! Unlike the serde form of [`Ledger`] (a history cursor: the subscription side only), a
//! snapshot carries everything: the money objects, every subscription's MRR history (the
//! revenue read model's source) and the rendering bookkeeping (which tenant
//! each subscription was last rendered under, which objects have unresolved rows, the hash of
//! each money row last written). A ledger read back from one therefore renders exactly the
//! changes the ledger that wrote it would have rendered next, not a full re-render.
//!
//! The encoding is bincode 1 with [`bincode::DefaultOptions`] (variable-width integers,
//! little-endian, length-prefixed strings and collections; reading is limited to the input's
//! own length, so a corrupt length cannot make it allocate more). The state is read back only
//! by this crate; JSON made the benchmark's 1,000,000-event state 332 MiB against 86 MiB (the
//! field names repeated in every object, every number in text), and an election waits on
//! reading it.
//!
//! A snapshot must be taken between batches, after [`Ledger::take_changes`]: what is not
//! rendered yet would be rendered again by the reader (harmless upserts, but not what a
//! snapshot is for).

use super::{Ledger, RenderState};
use crate::money::mrr::MrrHistory;
use crate::money::Money;
use bincode::Options;
use serde::{Deserialize, Serialize};

/// The shape of the bytes [`Ledger::to_snapshot`] writes. Bump it when the fold state's types
/// change shape: a reader of another format never tries to parse it. (A shape that no longer
/// parses is refused anyway, see [`SnapshotError`].)
/// Format 1 was JSON; 2 is bincode; 3 carries the revenue read model's MRR history too; 4
/// holds each money object's snapshot as the bytes the fold keeps it in (`money::packed`).
pub const SNAPSHOT_FORMAT: i32 = 4;

/// Why snapshot bytes could not become a ledger; the caller folds the log instead.
#[derive(Debug)]
pub enum SnapshotError {
    /// The bytes do not parse as this format's fold state.
    Unreadable(String),
    /// They parse, but an index names an object that is not there (never made by folding).
    Inconsistent,
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Unreadable(error) => write!(f, "snapshot does not parse: {error}"),
            SnapshotError::Inconsistent => {
                f.write_str("snapshot indexes name objects it does not hold")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

#[derive(Serialize)]
struct Saved<'a> {
    ledger: &'a Ledger,
    money: &'a Money,
    revenue: &'a MrrHistory,
    render: &'a RenderState,
}

#[derive(Deserialize)]
struct Loaded {
    ledger: Ledger,
    money: Money,
    revenue: MrrHistory,
    render: RenderState,
}

impl Ledger {
    /// The whole fold state as bytes ([`SNAPSHOT_FORMAT`]); size proportional to the number of
    /// objects folded, not to the number of events.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let saved = Saved {
            ledger: self,
            money: &self.money,
            revenue: &self.revenue,
            render: &self.render,
        };
        bincode::DefaultOptions::new()
            .serialize(&saved)
            .expect("the fold state has no type bincode cannot encode")
    }

    /// A ledger from [`Ledger::to_snapshot`]'s bytes. Errors: [`SnapshotError`] when they do
    /// not parse or do not hold together.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        let loaded: Loaded = bincode::DefaultOptions::new()
            .with_limit(bytes.len() as u64)
            .deserialize(bytes)
            .map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
        let mut ledger = loaded.ledger;
        ledger.money = loaded.money;
        ledger.revenue = loaded.revenue;
        ledger.render = loaded.render;
        if !ledger.is_consistent() {
            return Err(SnapshotError::Inconsistent);
        }
        Ok(ledger)
    }
}
