//! The log's hash chain: tamper evidence for every stored byte and position.
//!
//! `chain_hash(p) = SHA-256(chain_hash(p - 1) || p as 8 big-endian bytes || len(event_id) as 4
//! big-endian bytes || event_id || SHA-256(body))`, starting from 32 zero bytes at position 0.
//! Appends compute it inside `ledger_append` (`schema/V50__append_function.sql`, the same link
//! in SQL) while they hold the `log_head` row lock (positions are assigned there anyway), so
//! sealing costs no extra round trip and never reorders ingestion; every test that appends and
//! then runs `verify` checks that the SQL and [`link`] agree. Verifying
//! recomputes the chain from the stored bodies alone and names the first event that disagrees.
//! Anyone with superuser rights can rewrite a whole chain, so record the verified head hash
//! somewhere the database's administrators cannot write (README, "Integrity"). The statements
//! are [`crate::store::log`]'s.

use crate::store::log;
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

/// The chain hash before the first event.
pub const GENESIS: [u8; 32] = [0; 32];
/// Events read per query while verifying.
pub const VERIFY_BATCH_EVENTS: i64 = 2_000;

/// One link: the chain hash of the event at `position`.
pub fn link(previous: &[u8], position: i64, event_id: &str, body_sha256: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(position.to_be_bytes());
    hasher.update((event_id.len() as u32).to_be_bytes());
    hasher.update(event_id.as_bytes());
    hasher.update(body_sha256);
    hasher.finalize().to_vec()
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event matches; `head_hash` is the chain hash of the last one (hex).
    Intact { events: i64, head_hash: String },
    /// The first event (or position) that does not match, and how.
    Broken {
        position: i64,
        event_id: Option<String>,
        problem: String,
        events_verified: i64,
    },
}

/// Recomputes the chain over the log up to the head read when it starts, in batches (never the
/// whole log in memory). Events appended meanwhile are left for the next run: the head row and
/// the events it covers commit together (under the `log_head` row lock), so everything up to
/// the head read first is committed and no concurrent append can look like damage.
pub async fn verify(pool: &Pool) -> anyhow::Result<Verdict> {
    let client = pool.get().await?;
    let (head_position, head_hash) = log::head(&client).await?;
    let head_position = head_position.get();
    let mut previous = GENESIS.to_vec();
    let mut expected_position = 1;
    loop {
        let batch = log::chain_batch(
            &client,
            log::position(expected_position),
            log::position(head_position),
            VERIFY_BATCH_EVENTS,
        )
        .await?;
        if batch.is_empty() {
            break;
        }
        for stored in batch.iter() {
            previous = match check(&stored, expected_position, &previous) {
                Ok(chained) => chained,
                Err(broken) => return Ok(broken),
            };
            expected_position += 1;
        }
    }
    let events = expected_position - 1;
    if head_position != events || head_hash != previous {
        return Ok(Verdict::Broken {
            position: head_position,
            event_id: None,
            problem: format!(
                "log head says position {head_position}, but the chain ends at {events} with another hash"
            ),
            events_verified: events,
        });
    }
    Ok(Verdict::Intact {
        events,
        head_hash: hex::encode(previous),
    })
}

/// Checks one stored event against the chain so far (`previous`, the chain hash at
/// `expected_position - 1`): returns its chain hash, or the verdict naming what is wrong.
fn check(
    stored: &log::ChainLink<'_>,
    expected_position: i64,
    previous: &[u8],
) -> Result<Vec<u8>, Verdict> {
    let position = stored.position.get();
    let broken = |problem: &str| Verdict::Broken {
        position,
        event_id: Some(stored.event_id.to_owned()),
        problem: problem.to_owned(),
        events_verified: expected_position - 1,
    };
    if position != expected_position {
        return Err(Verdict::Broken {
            position: expected_position,
            event_id: None,
            problem: format!("position {expected_position} is missing (next stored is {position})"),
            events_verified: expected_position - 1,
        });
    }
    let digest = Sha256::digest(stored.body).to_vec();
    if digest != stored.body_sha256 {
        return Err(broken("stored body does not match its recorded SHA-256"));
    }
    let chained = link(previous, position, stored.event_id, &digest);
    if chained != stored.chain_hash {
        return Err(broken("chain hash does not match the recomputed chain"));
    }
    Ok(chained)
}

/// Who ran a verification, as recorded in `verifications.ran_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RanBy {
    Cli,
    Api,
    Console,
}

impl RanBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RanBy::Cli => "cli",
            RanBy::Api => "api",
            RanBy::Console => "console",
        }
    }
}

/// A recorded verification.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub verified_at: chrono::DateTime<chrono::Utc>,
    pub ran_by: String,
    pub verdict: Verdict,
}

/// Records `verdict` in `verifications`, so the console can show the last one.
pub async fn record(pool: &Pool, verdict: &Verdict, ran_by: RanBy) -> anyhow::Result<()> {
    let row = match verdict {
        Verdict::Intact { events, head_hash } => log::NewVerification {
            ran_by: ran_by.as_str(),
            intact: true,
            events_verified: *events,
            head_hash: Some(head_hash),
            broken_position: None,
            broken_event_id: None,
            problem: None,
        },
        Verdict::Broken {
            position,
            event_id,
            problem,
            events_verified,
        } => log::NewVerification {
            ran_by: ran_by.as_str(),
            intact: false,
            events_verified: *events_verified,
            head_hash: None,
            broken_position: Some(*position),
            broken_event_id: event_id.as_deref(),
            problem: Some(problem),
        },
    };
    log::record_verification(pool, &row).await
}

/// [`record`], where the verdict itself is the answer (the command, the API): a verification
/// that could not be recorded (a read-only connection, say) is logged, not failed.
pub async fn record_or_warn(pool: &Pool, verdict: &Verdict, ran_by: RanBy) {
    if let Err(error) = record(pool, verdict, ran_by).await {
        tracing::warn!(
            error = format!("{error:#}"),
            verification.ran_by = ran_by.as_str(),
            "could not record the verification; the verdict stands"
        );
    }
}

/// The latest recorded verification, if any.
pub async fn last_recorded(pool: &Pool) -> anyhow::Result<Option<Recorded>> {
    let row = log::last_verification(pool).await?;
    Ok(row.map(|row| Recorded {
        verified_at: row.verified_at,
        ran_by: row.ran_by,
        verdict: if row.intact {
            Verdict::Intact {
                events: row.events_verified,
                head_hash: row.head_hash.unwrap_or_default(),
            }
        } else {
            Verdict::Broken {
                position: row.broken_position.unwrap_or_default(),
                event_id: row.broken_event_id,
                problem: row.problem.unwrap_or_default(),
                events_verified: row.events_verified,
            }
        },
    }))
}

/// The log head as appends left it: its position (the event count) and chain hash (hex).
/// Not a verification: it says what the chain claims, not that the bytes still match.
pub async fn head(pool: &Pool) -> anyhow::Result<(i64, String)> {
    let (position, hash) = log::head(&pool.get().await?).await?;
    Ok((position.get(), hex::encode(hash)))
}
