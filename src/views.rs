//! The JSON shapes the API returns for the log and the read models, built from the rows the
//! store reads. Field names are the contract's (`../shared/DESIGN.md`, Read models); times are
//! RFC 3339 UTC, money integer minor units. The store ([`crate::store`]), the routes
//! ([`crate::http`]) and the console share them, so the store depends on no HTTP module.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use tokio_postgres::Row;

/// An event in the log, without its body.
#[derive(Debug, Clone, Object)]
pub struct EventSummary {
    /// Position in the log: dense, starting at 1, in commit order.
    pub position: i64,
    pub event_id: String,
    #[oai(rename = "type")]
    pub event_type: String,
    /// Stripe's `created`.
    pub created: DateTime<Utc>,
    #[oai(nullable)]
    pub api_version: Option<String>,
    pub livemode: bool,
    /// Connected account, for Connect events.
    #[oai(nullable)]
    pub account: Option<String>,
    /// `data.object.id`.
    #[oai(nullable)]
    pub object_id: Option<String>,
    /// `data.object.object`.
    #[oai(nullable)]
    pub object_type: Option<String>,
    /// When the first delivery was committed.
    pub received_at: DateTime<Utc>,
    /// `webhook` (signature-verified), `import` (backfilled from an export, not verified) or
    /// `reconcile` (fetched from Stripe's Events API with the account's key, not verified).
    pub source: String,
    /// The CSV export's money columns (not in the JSON answer).
    #[oai(skip)]
    pub money: Option<MoneyColumns>,
}

/// The events CSV's extra columns, where the event's object has them.
#[derive(Debug, Clone, Default)]
pub struct MoneyColumns {
    /// The tenants the event was attributed to, `;`-separated.
    pub tenant_ids: Option<String>,
    pub customer_id: Option<String>,
    /// Minor units of `currency` (see `projections::money::summary`).
    pub amount: Option<i64>,
    pub currency: Option<String>,
}

impl EventSummary {
    /// From `position, event_id, type, created, api_version, livemode, account, object_id,
    /// object_type, received_at, source` (columns 0 to 10).
    pub fn from_row(row: &Row) -> EventSummary {
        EventSummary {
            position: row.get(0),
            event_id: row.get(1),
            event_type: row.get(2),
            created: row.get(3),
            api_version: row.get(4),
            livemode: row.get(5),
            account: row.get(6),
            object_id: row.get(7),
            object_type: row.get(8),
            received_at: row.get(9),
            source: row.get(10),
            // The CSV query adds the tenants (11, named `csv_tenant_ids`) and the body (12).
            money: (row.columns().get(11).map(|c| c.name()) == Some("csv_tenant_ids")).then(|| {
                let object = projections::Event::parse(row.get(12)).map(|e| e.object);
                let (customer_id, amount, currency) = object
                    .as_ref()
                    .map_or((None, None, None), projections::money::summary);
                MoneyColumns {
                    tenant_ids: row.get(11),
                    customer_id,
                    amount,
                    currency,
                }
            }),
        }
    }
}

/// A page of events.
#[derive(Debug, Object)]
pub struct EventList {
    pub events: Vec<EventSummary>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// One delivery of an event (the first, and every retry or duplicate).
#[derive(Debug, Object)]
pub struct DeliveryView {
    pub delivery_id: i64,
    pub received_at: DateTime<Utc>,
    /// The event ID was already in the log when this delivery arrived.
    pub duplicate: bool,
    pub source: String,
    /// `t` of the verifying `Stripe-Signature`.
    #[oai(nullable)]
    pub signature_timestamp: Option<DateTime<Utc>>,
    /// Position (0-based) in `STRIPE_WEBHOOK_SECRET` of the secret that matched.
    #[oai(nullable)]
    pub secret_index: Option<i16>,
    /// The matching `v1` signature, for re-verification.
    #[oai(nullable)]
    pub signature: Option<String>,
    /// SHA-256 of the delivered body, hex.
    pub body_sha256: String,
    /// The delivered body, present only when it differs from the event's stored body.
    #[oai(nullable)]
    pub body: Option<String>,
}

impl DeliveryView {
    pub fn from_row(row: &Row) -> DeliveryView {
        let digest: Vec<u8> = row.get(7);
        let body: Option<Vec<u8>> = row.get(8);
        DeliveryView {
            delivery_id: row.get(0),
            received_at: row.get(1),
            duplicate: row.get(2),
            source: row.get(3),
            signature_timestamp: row.get(4),
            secret_index: row.get(5),
            signature: row.get(6),
            body_sha256: hex::encode(digest),
            body: body.map(|b| String::from_utf8_lossy(&b).into_owned()),
        }
    }
}

/// One event exactly as received, with its deliveries and what the projection made of it.
#[derive(Debug, Object)]
pub struct EventDetail {
    #[oai(flatten)]
    pub summary: EventSummary,
    /// The body exactly as received (the signed bytes), as a string.
    pub body: String,
    /// The same body, parsed.
    pub payload: serde_json::Value,
    #[oai(nullable)]
    pub signature_timestamp: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub secret_index: Option<i16>,
    #[oai(nullable)]
    pub signature: Option<String>,
    /// How the event reached the log and what vouches for it, in a sentence.
    pub provenance: String,
    pub deliveries: Vec<DeliveryView>,
    /// Tenants the projection attributed this event to, and how it found each.
    pub tenants: Vec<EventTenant>,
    /// Whether the projection has folded this event (its position is at or below the
    /// checkpoint). A folded event may still have a `projection_error`.
    pub projected: bool,
    /// Why the projection could not fold this event, if it could not.
    #[oai(nullable)]
    pub projection_error: Option<String>,
    /// What the projection made of it: `applied` (folded and attributed to `tenants`),
    /// `unresolved` (folded, no tenant known yet for its object), `stored_only` (a type the
    /// read models do not fold), `other_mode` (not `LEDGER_LIVEMODE`'s mode), `unreadable`
    /// (see `projection_error`) or `pending` (not folded yet).
    pub effect: String,
    /// Why the event touched no tenant's read model, in words; null when `applied`.
    #[oai(nullable)]
    pub note: Option<String>,
}

/// The sentence [`EventDetail::provenance`] gives for a `source`.
pub fn provenance(source: &str) -> &'static str {
    match source {
        "webhook" => {
            "delivered by Stripe as a webhook; its Stripe-Signature was verified over \
                      these exact bytes"
        }
        "import" => {
            "imported from a JSON-lines export of Stripe's Events API (billing-ledger \
                     import); not signature-verified"
        }
        "reconcile" => {
            "fetched from Stripe's Events API with the account's secret key by \
                        reconciliation (no webhook delivered it); not signature-verified, and \
                        the bytes are the API's rendering"
        }
        _ => "unknown source",
    }
}

/// A tenant an event was attributed to.
#[derive(Debug, Object)]
pub struct EventTenant {
    pub tenant_id: String,
    /// The rule that found it (`checkout_client_reference_id`, `customer_link`, ...).
    pub resolved_by: String,
}

impl EventDetail {
    pub fn from_rows(
        row: &Row,
        deliveries: Vec<DeliveryView>,
        tenants: Vec<EventTenant>,
        projection_error: Option<String>,
        checkpoint: i64,
        livemode: bool,
    ) -> EventDetail {
        let raw: Vec<u8> = row.get(11);
        let summary = EventSummary::from_row(row);
        let projected = summary.position <= checkpoint;
        let (effect, note) = crate::timeline::event_effect(
            &raw,
            livemode,
            projected,
            projection_error.as_deref(),
            !tenants.is_empty(),
        );
        EventDetail {
            provenance: provenance(&summary.source).into(),
            effect: effect.to_owned(),
            note,
            projected,
            summary,
            payload: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
            body: String::from_utf8_lossy(&raw).into_owned(),
            signature_timestamp: row.get(12),
            secret_index: row.get(13),
            signature: row.get(14),
            deliveries,
            tenants,
            projection_error,
        }
    }
}

/// A tenant's current subscription state.
#[derive(Debug, Clone, PartialEq, Object, serde::Serialize, serde::Deserialize)]
pub struct TenantPricingView {
    pub tenant_id: String,
    /// Stripe's subscription status; null until an event carrying it has been folded.
    #[oai(nullable)]
    pub status: Option<String>,
    #[oai(nullable)]
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: String,
    #[oai(nullable)]
    pub price_id: Option<String>,
    /// The Stripe product of `price_id` (the plans file may map it).
    #[oai(nullable)]
    pub product_id: Option<String>,
    #[oai(nullable)]
    pub quantity: Option<i64>,
    #[oai(nullable)]
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    #[oai(nullable)]
    pub canceled_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_payment_failed_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_paid_at: Option<DateTime<Utc>>,
    pub last_event_id: String,
    /// `created` of `last_event_id`: when Stripe last changed this state.
    pub updated_at: DateTime<Utc>,
    /// The rule that found the tenant (`subscription_metadata`, `customer_link`, ...).
    pub resolved_by: String,
}

impl TenantPricingView {
    pub fn from_row(row: &Row) -> TenantPricingView {
        TenantPricingView {
            tenant_id: row.get(0),
            status: row.get(1),
            stripe_customer_id: row.get(2),
            stripe_subscription_id: row.get(3),
            price_id: row.get(4),
            quantity: row.get(5),
            current_period_end: row.get(6),
            cancel_at_period_end: row.get(7),
            canceled_at: row.get(8),
            last_payment_failed_at: row.get(9),
            last_paid_at: row.get(10),
            last_event_id: row.get(11),
            updated_at: row.get(12),
            resolved_by: row.get(13),
            product_id: row.get(14),
        }
    }
}

impl TenantPricingView {
    /// From the fold's row (as-of and history answers).
    pub fn from_model(row: &projections::TenantPricing) -> TenantPricingView {
        let time = |s: Option<i64>| s.map(crate::event_log::unix);
        TenantPricingView {
            tenant_id: row.tenant_id.clone(),
            status: row.status.map(|s| s.as_str().to_owned()),
            stripe_customer_id: row.stripe_customer_id.clone(),
            stripe_subscription_id: row.stripe_subscription_id.clone(),
            price_id: row.price_id.clone(),
            product_id: row.product_id.clone(),
            quantity: row.quantity,
            current_period_end: time(row.current_period_end),
            cancel_at_period_end: row.cancel_at_period_end,
            canceled_at: time(row.canceled_at),
            last_payment_failed_at: time(row.last_payment_failed_at),
            last_paid_at: time(row.last_paid_at),
            last_event_id: row.last_event_id.clone(),
            updated_at: crate::event_log::unix(row.updated_at),
            resolved_by: row.resolved_by.as_str().to_owned(),
        }
    }
}

/// One step of a tenant's history: the event, what it did to the tenant, and the state after.
#[derive(Debug, Object)]
pub struct HistoryEntry {
    pub position: i64,
    pub event_id: String,
    #[oai(rename = "type")]
    pub event_type: String,
    /// Stripe's `created`.
    pub created: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The tenant's `tenant_pricing` after this event (null while no subscription is known).
    #[oai(nullable)]
    pub state: Option<TenantPricingView>,
    /// What the event did: `changed` (fields of `state` changed, listed in `changes`),
    /// `unchanged` (folded, nothing in the tenant's pricing changed), `unresolved` (its tenant
    /// was not known yet at this point; a later entry's `resolves` names it), `stored_only`
    /// (a type the read models do not fold), `other_mode` (not `LEDGER_LIVEMODE`'s mode),
    /// `unreadable` (the fold could not read it).
    pub effect: String,
    /// Why the event changed nothing, in words; null when it changed something.
    #[oai(nullable)]
    pub note: Option<String>,
    /// The fields of `state` this event changed, each with its value before and after (as in
    /// `state`; null when absent). A field null before and after is not listed; nor are the
    /// bookkeeping `last_event_id` and `updated_at`.
    pub changes: Vec<FieldChange>,
    /// The names of the fields in `changes`.
    pub changed: Vec<String>,
    /// Earlier events of the tenant that apply at this step, because this event linked their
    /// subscription or customer to the tenant.
    pub resolves: Vec<String>,
}

/// One field of the tenant's state that an event changed.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct FieldChange {
    pub field: String,
    /// The value before the event (JSON exactly as in `state`, times with `+00:00`; null when
    /// it had none).
    pub before: serde_json::Value,
    /// The value after the event (JSON as in `state`; null when it has none).
    pub after: serde_json::Value,
}

impl FieldChange {
    /// The fields that differ between two states, in field order, leaving out the bookkeeping
    /// `last_event_id` and `updated_at`. An absent state counts as every field null, so a field
    /// that stays null is never a change.
    pub fn between(
        before: Option<&TenantPricingView>,
        after: Option<&TenantPricingView>,
    ) -> Vec<FieldChange> {
        // Rendered as the API renders `state` (times RFC 3339 with `+00:00`, as every other
        // time the API answers), not by serde's `Z` form.
        let as_map = |row: Option<&TenantPricingView>| match row
            .and_then(poem_openapi::types::ToJSON::to_json)
        {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let (before, after) = (as_map(before), as_map(after));
        let null = serde_json::Value::Null;
        let fields = after.keys().chain(before.keys());
        let mut seen = std::collections::BTreeSet::new();
        fields
            .filter(|field| seen.insert(field.as_str()))
            .filter(|field| !matches!(field.as_str(), "last_event_id" | "updated_at"))
            .filter_map(|field| {
                let old = before.get(field).unwrap_or(&null);
                let new = after.get(field).unwrap_or(&null);
                (old != new).then(|| FieldChange {
                    field: field.clone(),
                    before: old.clone(),
                    after: new.clone(),
                })
            })
            .collect()
    }
}

impl HistoryEntry {
    pub fn from_step(step: crate::timeline::Step) -> HistoryEntry {
        let before = step.before.as_ref().map(TenantPricingView::from_model);
        let state = step.state.as_ref().map(TenantPricingView::from_model);
        let changes = FieldChange::between(before.as_ref(), state.as_ref());
        let event = step.event.event;
        HistoryEntry {
            position: step.event.position.get(),
            created: crate::event_log::unix(event.created),
            event_id: event.id,
            event_type: event.event_type,
            received_at: step.event.received_at,
            state,
            effect: step.effect.as_str().to_owned(),
            note: step.note,
            changed: changes.iter().map(|c| c.field.clone()).collect(),
            changes,
            resolves: step.resolves,
        }
    }
}

/// A page of a tenant's history.
#[derive(Debug, Object)]
pub struct HistoryList {
    pub history: Vec<HistoryEntry>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// One Checkout Session.
#[derive(Debug, Object)]
pub struct CheckoutSessionView {
    pub id: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub resolved_by: Option<String>,
    /// `open`, `complete` or `expired`.
    pub status: String,
    #[oai(nullable)]
    pub payment_status: Option<String>,
    #[oai(nullable)]
    pub mode: Option<String>,
    #[oai(nullable)]
    pub customer_id: Option<String>,
    #[oai(nullable)]
    pub subscription_id: Option<String>,
    /// Minor units of `currency`.
    #[oai(nullable)]
    pub amount_total: Option<i64>,
    #[oai(nullable)]
    pub currency: Option<String>,
    #[oai(nullable)]
    pub created_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub completed_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub expired_at: Option<DateTime<Utc>>,
    pub last_event_id: String,
}

impl CheckoutSessionView {
    /// From the columns [`crate::store::read_models::queries`] selects, in the table's order.
    pub fn from_row(row: &Row) -> CheckoutSessionView {
        CheckoutSessionView {
            id: row.get(0),
            tenant_id: row.get(1),
            resolved_by: row.get(2),
            status: row.get(3),
            payment_status: row.get(4),
            mode: row.get(5),
            customer_id: row.get(6),
            subscription_id: row.get(7),
            amount_total: row.get(8),
            currency: row.get(9),
            created_at: row.get(10),
            completed_at: row.get(11),
            expired_at: row.get(12),
            last_event_id: row.get(13),
        }
    }
}

/// A page of Checkout Sessions.
#[derive(Debug, Object)]
pub struct CheckoutSessionList {
    pub checkout_sessions: Vec<CheckoutSessionView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// One Stripe customer.
#[derive(Debug, Object)]
pub struct CustomerView {
    pub id: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub email: Option<String>,
    #[oai(nullable)]
    pub name: Option<String>,
    pub deleted: bool,
    pub last_event_id: String,
}

impl CustomerView {
    pub fn from_row(row: &Row) -> CustomerView {
        CustomerView {
            id: row.get(0),
            tenant_id: row.get(1),
            email: row.get(2),
            name: row.get(3),
            deleted: row.get(4),
            last_event_id: row.get(5),
        }
    }
}

/// An event whose tenant is not known yet.
#[derive(Debug, Object)]
pub struct UnresolvedView {
    pub event_id: String,
    /// The subscription or Checkout Session the event is about.
    pub object_id: String,
    #[oai(rename = "type")]
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub position: i64,
    /// The object whose link to a tenant is missing: the subscription itself; for a Checkout
    /// Session its customer, else its subscription (else the session, which no admin link
    /// covers).
    pub missing_link: MissingLink,
}

/// An object whose tenant is not known.
#[derive(Debug, Object)]
pub struct MissingLink {
    /// `customer`, `subscription` or `checkout_session`.
    pub object: String,
    /// Its Stripe ID.
    pub id: String,
}

impl UnresolvedView {
    pub fn from_row(row: &Row) -> UnresolvedView {
        UnresolvedView {
            event_id: row.get(0),
            object_id: row.get(1),
            event_type: row.get(2),
            created: row.get(3),
            position: row.get(4),
            missing_link: MissingLink {
                object: row.get(5),
                id: row.get(6),
            },
        }
    }
}

/// A page of unresolved events.
#[derive(Debug, Object)]
pub struct UnresolvedList {
    pub unresolved: Vec<UnresolvedView>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}
