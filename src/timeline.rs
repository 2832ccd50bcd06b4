//! A tenant's past: its events in Stripe order and the state the fold gives after each, and the
//! state as of an instant or a log position. Both fold the tenant's events with the same code the
//! projector runs, so `as_of` now equals the live row.
//!
//! The tenant's events are those the projector attributed to it (`event_tenants`), so history is
//! as current as the projection. Events are ordered by Stripe's `created`, then log position.
//!
//! Neither has a cap on the number of events. `as_of` streams every event up to its bound
//! through the fold (its cost grows with the tenant's events). History is read a page at a
//! time: each page's cursor carries the fold's state after the page's last event
//! ([`HistoryCursor`]), so the next page reads and folds only its own events, and a page costs
//! about the same at the hundredth event as at the hundred-thousandth.

//! The SQL is [`crate::store::log::reads`]'s; this module folds what it reads.

use crate::store::log::reads as event_reads;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projections::{Event, Ledger, LogPosition, Outcome, TenantId, TenantPricing};
use serde::{Deserialize, Serialize};

/// Which of the tenant's events to fold.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// Every event of the tenant's.
    All,
    /// Events Stripe created at or before this instant.
    CreatedAtOrBefore(DateTime<Utc>),
    /// Events at or before this log position.
    PositionAtOrBefore(LogPosition),
}

/// An event of the tenant's, as stored.
pub struct TenantEvent {
    pub position: LogPosition,
    pub received_at: DateTime<Utc>,
    pub event: Event,
}

/// What one event of the history did to the tenant, and if nothing, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Some field of the tenant's `tenant_pricing` changed.
    Changed,
    /// Folded, but no field of the tenant's pricing changed (see [`Step::note`]).
    Unchanged,
    /// Folded while the tenant of its subscription or customer was not known yet at this point
    /// of Stripe's order; a later event's [`Step::resolves`] names it when it applies.
    Unresolved,
    /// Stored in the log; the read models do not fold this type.
    StoredOnly,
    /// Stored in the log; of the other mode than `LEDGER_LIVEMODE`, so never folded.
    OtherMode,
    /// The fold could not read it (the projection error names why).
    Unreadable,
}

impl Effect {
    /// The snake_case name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Changed => "changed",
            Effect::Unchanged => "unchanged",
            Effect::Unresolved => "unresolved",
            Effect::StoredOnly => "stored_only",
            Effect::OtherMode => "other_mode",
            Effect::Unreadable => "unreadable",
        }
    }
}

/// One step of a tenant's history.
pub struct Step {
    pub event: TenantEvent,
    /// The tenant's state before this event (`None` while no subscription is known).
    pub before: Option<TenantPricing>,
    /// The tenant's state after this event.
    pub state: Option<TenantPricing>,
    pub effect: Effect,
    /// Why an event changed nothing, in words; `None` when it changed something.
    pub note: Option<String>,
    /// Earlier events of the tenant whose subscription or customer this event linked to it:
    /// they apply at this step.
    pub resolves: Vec<String>,
}

/// Where a page of history ends: the key of its last event and the fold's state after it.
/// Opaque to clients (base64url JSON); a cursor altered by hand only misleads its holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryCursor {
    /// Stripe's `created` of the last event, Unix seconds.
    created: i64,
    /// Log position of the last event.
    position: i64,
    ledger: Ledger,
}

impl HistoryCursor {
    /// Whether the cursor could have come from this API for a deployment in `livemode`: its
    /// fold state is of that mode and holds together ([`Ledger::is_consistent`]).
    pub fn is_sound(&self, livemode: bool) -> bool {
        self.ledger.livemode() == livemode && self.ledger.is_consistent()
    }
}

/// A page of history, and the cursor of the next page when more events follow.
pub struct HistoryPage {
    pub steps: Vec<Step>,
    pub next: Option<HistoryCursor>,
}

/// Stripe's `created` before any event (the first page starts after it).
const CREATED_BEFORE_ALL: i64 = -1;

/// The page of `tenant_id`'s history after `cursor` (from the start when `None`): at most
/// `limit` events in Stripe order, each with the state after it. `None` when the tenant has no
/// event at all.
pub async fn history_page(
    pool: &Pool,
    tenant_id: &TenantId,
    livemode: bool,
    cursor: Option<HistoryCursor>,
    limit: usize,
) -> anyhow::Result<Option<HistoryPage>> {
    let first_page = cursor.is_none();
    let cursor = cursor.unwrap_or_else(|| HistoryCursor {
        created: CREATED_BEFORE_ALL,
        position: 0,
        ledger: Ledger::new(livemode),
    });
    let after = (
        crate::event_log::unix(cursor.created),
        // Positions start at 1, so a (hand-made) negative one bounds nothing more than 0 does.
        LogPosition::new(cursor.position.max(0))?,
    );
    let rows = event_reads::tenant_events_after(pool, tenant_id, after, limit as i64 + 1).await?;
    if first_page && rows.is_empty() {
        return Ok(None);
    }
    let more = rows.len() > limit;
    let events = rows.into_iter().take(limit).filter_map(|row| {
        let event = parse_stored(&row.body)?;
        Some(TenantEvent {
            position: row.position,
            received_at: row.received_at,
            event,
        })
    });
    let mut ledger = cursor.ledger;
    let steps: Vec<Step> = events
        .map(|event| step(&mut ledger, tenant_id.as_str(), event))
        .collect();
    let next = match steps.last() {
        Some(last) if more => Some(HistoryCursor {
            created: last.event.event.created,
            position: last.event.position.get(),
            ledger,
        }),
        _ => None,
    };
    Ok(Some(HistoryPage { steps, next }))
}

/// Stored bodies parsed when they were appended; one that no longer does is skipped here and
/// reported by the projector and by `verify`.
fn parse_stored(body: &[u8]) -> Option<Event> {
    Event::parse(body).ok()
}

/// Folds one event of the tenant's into `ledger` and says what it did.
fn step(ledger: &mut Ledger, tenant_id: &str, event: TenantEvent) -> Step {
    let before = ledger.tenant_pricing(tenant_id);
    let outcome = ledger.apply(&event.event);
    // Rendering settles the pending events of every object whose tenant became known (not
    // only those this event touched), and keeps the ledger's bookkeeping drained.
    let attributed = ledger.take_changes().event_tenants;
    let mut resolves: Vec<String> = attributed
        .iter()
        .filter(|(tenant, event_id, _)| tenant == tenant_id && *event_id != event.event.id)
        .map(|(_, event_id, _)| event_id.clone())
        .collect();
    resolves.dedup();
    let state = ledger.tenant_pricing(tenant_id);
    let (effect, note) = match outcome {
        Err(error) => (Effect::Unreadable, Some(error.message)),
        Ok(Outcome::IgnoredType) => (
            Effect::StoredOnly,
            Some(format!(
                "the read models do not fold {}",
                event.event.event_type
            )),
        ),
        Ok(Outcome::IgnoredMode) => (
            Effect::OtherMode,
            Some("of the other mode than LEDGER_LIVEMODE: stored, never folded".to_owned()),
        ),
        Ok(Outcome::Applied) => {
            let resolved = attributed
                .iter()
                .any(|(tenant, event_id, _)| tenant == tenant_id && *event_id == event.event.id);
            if !resolved {
                (Effect::Unresolved, Some(unresolved_note()))
            } else if changed(before.as_ref(), state.as_ref()) {
                (Effect::Changed, None)
            } else {
                (
                    Effect::Unchanged,
                    Some(unchanged_note(&event.event.event_type)),
                )
            }
        }
    };
    Step {
        event,
        before,
        state,
        effect,
        note,
        resolves,
    }
}

/// Whether a field other than the bookkeeping `last_event_id` and `updated_at` differs.
fn changed(before: Option<&TenantPricing>, after: Option<&TenantPricing>) -> bool {
    let strip = |row: Option<&TenantPricing>| {
        row.map(|row| TenantPricing {
            last_event_id: String::new(),
            updated_at: 0,
            ..row.clone()
        })
    };
    strip(before) != strip(after)
}

fn unresolved_note() -> String {
    "its tenant was not known yet at this point in Stripe's order; it applies at the later \
     event that links its subscription or customer to the tenant (that event's `resolves` \
     names it)"
        .to_owned()
}

fn unchanged_note(event_type: &str) -> String {
    if event_type.starts_with("checkout.session.") {
        "it changed the Checkout Session (checkout_sessions), not the tenant's pricing".to_owned()
    } else if event_type.starts_with("customer.")
        && !event_type.starts_with("customer.subscription.")
    {
        "it changed the customer (customers), not the tenant's pricing".to_owned()
    } else {
        "an observation of the same or a later time already stood (see the tie-break rules), \
         or it repeated the state"
            .to_owned()
    }
}

/// The tenant's state folded from every one of its events within `bound`, streamed from the
/// database (no cap on their number). `None` when none of them gives the tenant a
/// subscription.
pub async fn state_at(
    pool: &Pool,
    tenant_id: &TenantId,
    livemode: bool,
    bound: Bound,
) -> anyhow::Result<Option<TenantPricing>> {
    let mut ledger = Ledger::new(livemode);
    for_each_event(pool, tenant_id, bound, |event| {
        let _ = ledger.apply(event);
    })
    .await?;
    Ok(ledger.tenant_pricing(tenant_id.as_str()))
}

/// Calls `visit` with every one of the tenant's events within `bound`, streamed from the
/// database in no particular order (the folds do not depend on it), and returns how many there
/// were. Stored bodies that no longer parse are skipped (the projector and `verify` report
/// them).
pub async fn for_each_event(
    pool: &Pool,
    tenant_id: &TenantId,
    bound: Bound,
    mut visit: impl FnMut(&Event),
) -> anyhow::Result<usize> {
    let (created, position) = match bound {
        Bound::All => (None, None),
        Bound::CreatedAtOrBefore(t) => (Some(t), None),
        Bound::PositionAtOrBefore(p) => (None, Some(p)),
    };
    event_reads::for_each_tenant_body(pool, tenant_id, created, position, |body| {
        if let Some(event) = parse_stored(body) {
            visit(&event);
        }
    })
    .await
}

/// What the projection made of one stored event, for the event detail: `pending` (not folded
/// yet), `unreadable` (a projection error), `other_mode`, `stored_only` (a type the read
/// models do not fold, or an invoice that names no subscription), `unresolved` (folded, but no
/// tenant is known for its object yet) or `applied`; with why in words when it touched no
/// read model's tenant.
pub fn event_effect(
    body: &[u8],
    livemode: bool,
    projected: bool,
    projection_error: Option<&str>,
    attributed: bool,
) -> (&'static str, Option<String>) {
    let Some(event) = parse_stored(body) else {
        return (
            "unreadable",
            Some("the stored body no longer parses".to_owned()),
        );
    };
    if !projected {
        return (
            "pending",
            Some("the projection has not reached it yet".to_owned()),
        );
    }
    if let Some(error) = projection_error {
        return ("unreadable", Some(error.to_owned()));
    }
    if event.livemode != livemode {
        let note = "of the other mode than LEDGER_LIVEMODE: stored, never folded";
        return ("other_mode", Some(note.to_owned()));
    }
    if matches!(
        projections::facts::read(&event),
        Ok(projections::facts::Fact::Ignored)
    ) {
        let note = format!(
            "stored only: the read models do not fold {} (or, for an invoice, it names no \
             subscription)",
            event.event_type
        );
        return ("stored_only", Some(note));
    }
    if !attributed {
        let note = "folded, but no tenant is known yet for its subscription, Checkout Session \
                    or customer; it applies when an event links one (see /unresolved)";
        return ("unresolved", Some(note.to_owned()));
    }
    ("applied", None)
}

/// The tenant's balances per currency folded from its events within `bound` (see
/// [`projections::money::balances`]), and how many events there were.
pub async fn balances(
    pool: &Pool,
    tenant_id: &TenantId,
    livemode: bool,
    bound: Bound,
) -> anyhow::Result<(Vec<projections::money::Balance>, usize)> {
    let mut ledger = Ledger::new(livemode);
    let count = for_each_event(pool, tenant_id, bound, |event| {
        let _ = ledger.apply(event);
    })
    .await?;
    let balances = projections::money::balances(&ledger.read_models().money, tenant_id.as_str());
    Ok((balances, count))
}
