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
//! The state is two sections, each its length and its encoding ([`Ledger::to_snapshot`]). The
//! encoding is bincode 1 with [`bincode::DefaultOptions`] (variable-width integers,
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
/// holds each money object's snapshot as the bytes the fold keeps it in (`money::packed`); 5
/// splits the state in two sections read on two threads (see [`Ledger::to_snapshot`]).
pub const SNAPSHOT_FORMAT: i32 = 5;

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

/// The subscription side with the revenue and rendering bookkeeping: one section of a
/// snapshot; the money objects are the other (see [`Ledger::to_snapshot`]).
#[derive(Serialize)]
struct Saved<'a> {
    ledger: &'a Ledger,
    revenue: &'a MrrHistory,
    render: &'a RenderState,
}

#[derive(Deserialize)]
struct Loaded {
    ledger: Ledger,
    revenue: MrrHistory,
    render: RenderState,
}

/// bincode's options for every section: see the module's documentation.
fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Bytes of the length that precedes each section (a little-endian `u64`).
const SECTION_LENGTH_BYTES: usize = 8;

/// Splits off the section at the start of `bytes` (its length, then that many bytes); returns
/// it and the rest. Errors: a length that runs past the end.
fn section(bytes: &[u8]) -> Result<(&[u8], &[u8]), SnapshotError> {
    let truncated = || SnapshotError::Unreadable("a section runs past the end".into());
    let (length, rest) = bytes
        .split_first_chunk::<SECTION_LENGTH_BYTES>()
        .ok_or_else(truncated)?;
    let length = usize::try_from(u64::from_le_bytes(*length)).map_err(|_| truncated())?;
    if length > rest.len() {
        return Err(truncated());
    }
    Ok(rest.split_at(length))
}

/// Bytes `value` takes as a section (its length and its encoding).
fn section_size<T: Serialize>(value: &T) -> usize {
    let encoded = options()
        .serialized_size(value)
        .expect("the fold state has no type bincode cannot encode");
    SECTION_LENGTH_BYTES + encoded as usize
}

/// Appends `value` to `bytes` as a section: its encoded length, then its encoding.
fn append_section<T: Serialize>(bytes: &mut Vec<u8>, value: &T) {
    let start = bytes.len();
    bytes.extend_from_slice(&[0; SECTION_LENGTH_BYTES]);
    options()
        .serialize_into(&mut *bytes, value)
        .expect("the fold state has no type bincode cannot encode");
    let length = (bytes.len() - start - SECTION_LENGTH_BYTES) as u64;
    bytes[start..start + SECTION_LENGTH_BYTES].copy_from_slice(&length.to_le_bytes());
}

/// One section decoded, reading no more than its own bytes, all of which it must use.
fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, SnapshotError> {
    options()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| SnapshotError::Unreadable(e.to_string()))
}

impl Ledger {
    /// The whole fold state as bytes ([`SNAPSHOT_FORMAT`]); size proportional to the number of
    /// objects folded, not to the number of events. Two sections, each its length (8 bytes,
    /// little-endian) and its bincode: the money objects, then the rest, which
    /// [`Ledger::from_snapshot`] reads back on two threads at once (an election waits on it).
    pub fn to_snapshot(&self) -> Vec<u8> {
        let saved = Saved {
            ledger: self,
            revenue: &self.revenue,
            render: &self.render,
        };
        // One buffer of the exact size, each section encoded in place after room for its
        // length: the snapshot is made while the whole state is in memory, so neither a second
        // copy nor a doubled buffer's slack is added to it.
        let size = section_size(&self.money) + section_size(&saved);
        let mut bytes = Vec::with_capacity(size);
        append_section(&mut bytes, &self.money);
        append_section(&mut bytes, &saved);
        bytes
    }

    /// A ledger from [`Ledger::to_snapshot`]'s bytes. Errors: [`SnapshotError`] when they do
    /// not parse or do not hold together.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        let (money, rest) = section(bytes)?;
        let (rest, trailing) = section(rest)?;
        if !trailing.is_empty() {
            return Err(SnapshotError::Unreadable(
                "bytes after the last section".into(),
            ));
        }
        let (money, loaded) = std::thread::scope(|scope| {
            let money = scope.spawn(|| decode::<Money>(money));
            let loaded = decode::<Loaded>(rest);
            (
                money
                    .join()
                    .expect("decoding the money objects does not panic"),
                loaded,
            )
        });
        let (money, loaded) = (money?, loaded?);
        let mut ledger = loaded.ledger;
        ledger.money = money;
        ledger.revenue = loaded.revenue;
        ledger.render = loaded.render;
        if !ledger.is_consistent() {
            return Err(SnapshotError::Inconsistent);
        }
        Ok(ledger)
    }
}
