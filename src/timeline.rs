//! A tenant's past: its events in Stripe order and the state the fold gives after each, and the
//! state as of an instant or a log position. Both fold the tenant's events with the same code the
//! projector runs, so `as_of` now equals the live row.
//!
//! The tenant's events are those the projector attributed to it (`event_tenants`), so history is
//! as current as the projection. Events are ordered by Stripe's `created`, then log position.

use deadpool_postgres::Pool;
use projections::{Event, Ledger, TenantPricing};

/// Most events folded for one history or as-of request.
pub const TENANT_EVENTS_MAX: i64 = 100_000;

/// Which of the tenant's events to fold.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    All,
    /// Events Stripe created at or before this instant.
    CreatedAtOrBefore(chrono::DateTime<chrono::Utc>),
    /// Events at or before this log position.
    PositionAtOrBefore(i64),
}

/// An event of the tenant's, as stored.
pub struct TenantEvent {
    pub position: i64,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub event: Event,
}

/// One step of a tenant's history.
pub struct Step<'e> {
    pub event: &'e TenantEvent,
    pub state: Option<TenantPricing>,
    pub changed: Vec<String>,
}

/// The tenant's events within `bound`, in Stripe order.
pub async fn tenant_events(
    pool: &Pool,
    tenant_id: &str,
    bound: Bound,
) -> anyhow::Result<Vec<TenantEvent>> {
    let client = pool.get().await?;
    let (created, position) = match bound {
        Bound::All => (None, None),
        Bound::CreatedAtOrBefore(t) => (Some(t), None),
        Bound::PositionAtOrBefore(p) => (None, Some(p)),
    };
    let statement = client
        .prepare_cached(
            "SELECT e.position, e.received_at, e.body FROM event_tenants t
             JOIN events e ON e.event_id = t.event_id
             WHERE t.tenant_id = $1
               AND ($2::timestamptz IS NULL OR e.created <= $2)
               AND ($3::int8 IS NULL OR e.position <= $3)
             ORDER BY e.created, e.position LIMIT $4",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&tenant_id, &created, &position, &TENANT_EVENTS_MAX],
        )
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        // Stored bodies parsed when they were appended; one that no longer does is skipped
        // here and reported by the projector and by `verify`.
        if let Ok(event) = Event::parse(row.get(2)) {
            events.push(TenantEvent {
                position: row.get(0),
                received_at: row.get(1),
                event,
            });
        }
    }
    Ok(events)
}

/// The tenant's state after folding all of `events`.
pub fn state(events: &[TenantEvent], tenant_id: &str, livemode: bool) -> Option<TenantPricing> {
    let mut ledger = Ledger::new(livemode);
    for e in events {
        let _ = ledger.apply(&e.event);
    }
    ledger.tenant_pricing(tenant_id)
}

/// The state after each event, with the fields it changed.
pub fn history<'e>(events: &'e [TenantEvent], tenant_id: &str, livemode: bool) -> Vec<Step<'e>> {
    let mut ledger = Ledger::new(livemode);
    let mut before: Option<TenantPricing> = None;
    let mut steps = Vec::with_capacity(events.len());
    for e in events {
        let _ = ledger.apply(&e.event);
        let state = ledger.tenant_pricing(tenant_id);
        let changed = TenantPricing::changed_fields(before.as_ref(), state.as_ref());
        before = state.clone();
        steps.push(Step {
            event: e,
            state,
            changed,
        });
    }
    steps
}

/// The tenant's balances per currency after folding all of `events` (see
/// [`projections::money::balances`]).
pub fn balances(
    events: &[TenantEvent],
    tenant_id: &str,
    livemode: bool,
) -> Vec<projections::money::Balance> {
    let mut ledger = Ledger::new(livemode);
    for e in events {
        let _ = ledger.apply(&e.event);
    }
    projections::money::balances(&ledger.read_models().money, tenant_id)
}
