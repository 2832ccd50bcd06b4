//! `/console/tenants/{tenant_id}`: one tenant's story on one page. Its subscription state now,
//! or as of an instant (`as_of`) or a log position (`as_of_position`), through the API's own
//! time travel; its customers and Checkout Sessions; and its timeline, each event with the
//! fields it changed, old -> new.
//!
//! The page is a list of sections, each a function of [`TenantData`]; the money sections
//! (entitlements, balance, invoices, payments, refunds, disputes, credit notes) live in
//! [`super::tenant_money`].

use super::layout::{self, encode, Source};
use super::{html, respond, viewer, Console, PageError, Viewer};
use crate::http::error::ApiError;
use crate::store::read_models::queries;
use crate::views::{CheckoutSessionView, HistoryEntry, TenantPricingView};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html as markup, Markup};
use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{handler, Request, Response};
use poem_openapi::param::{Path as ApiPath, Query as ApiQuery};
use projections::{LogPosition, TenantId};
use serde_json::Value;
use std::sync::Arc;

/// Timeline entries shown (the history route's largest page).
pub const TIMELINE_ENTRIES_MAX: u32 = 1000;
/// Checkout Sessions shown.
pub const SESSIONS_SHOWN_MAX: u32 = 100;
/// Customers shown.
pub const CUSTOMERS_SHOWN_MAX: i64 = 100;

/// The "as of" picker's fields, as typed.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AsOf {
    #[serde(default)]
    pub as_of: String,
    #[serde(default)]
    pub as_of_position: String,
}

/// Which state the page shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    Now,
    Instant(DateTime<Utc>),
    Position(LogPosition),
}

impl AsOf {
    /// The point asked for: 400 for a malformed or doubly given one. An instant is RFC 3339, or
    /// `YYYY-MM-DDTHH:MM[:SS]` (what a browser's date-time field sends) read as UTC.
    pub fn point(&self) -> Result<Point, PageError> {
        let instant = self.as_of.trim();
        let position = self.as_of_position.trim();
        match (instant.is_empty(), position.is_empty()) {
            (true, true) => Ok(Point::Now),
            (false, false) => Err(PageError::BadRequest(
                "give an instant or a position, not both".into(),
            )),
            (false, true) => parse_instant(instant).map(Point::Instant).ok_or_else(|| {
                PageError::BadRequest(
                    "as_of must be an instant such as 2025-01-15T00:00:00Z".into(),
                )
            }),
            (true, false) => position
                .parse::<i64>()
                .ok()
                .and_then(|p| LogPosition::new(p).ok())
                .map(Point::Position)
                .ok_or_else(|| {
                    PageError::BadRequest("as_of_position must be a whole number, 0 or more".into())
                }),
        }
    }
}

fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .map(|naive| naive.and_utc())
        })
}

/// A customer of the tenant.
pub use crate::store::read_models::queries::CustomerRow;

/// Everything the sections render.
pub struct TenantData {
    pub tenant_id: TenantId,
    pub point: Point,
    /// The state at `point`; `None` when no subscription was known then.
    pub state: Option<TenantPricingView>,
    pub customers: Vec<CustomerRow>,
    pub sessions: Vec<CheckoutSessionView>,
    /// The history up to `point`, in Stripe order.
    pub timeline: Vec<HistoryEntry>,
    /// The history had more entries than shown.
    pub timeline_cut: bool,
    pub money: super::tenant_money::TenantMoney,
}

/// `GET /console/tenants/{tenant_id}`.
#[handler]
pub async fn page(
    request: &Request,
    console: Data<&Arc<Console>>,
    Path(tenant_id): Path<String>,
    Query(as_of): Query<AsOf>,
) -> Response {
    respond(render(request, &console, tenant_id, as_of).await)
}

async fn render(
    request: &Request,
    console: &Console,
    tenant_id: String,
    as_of: AsOf,
) -> Result<Response, PageError> {
    let viewer = viewer(request, console)?;
    let point = as_of.point()?;
    let tenant_id = TenantId::parse(&tenant_id)?;
    let data = load(console, &viewer, tenant_id, point).await?;
    let body = markup! {
        (as_of_form(&data, &as_of))
        (state_section(&data))
        (customers_section(&data))
        (sessions_section(&data))
        (super::tenant_money::sections(&data.money, data.tenant_id.as_str(), data.point))
        (timeline_section(&data))
    };
    let title = format!("Tenant {}", data.tenant_id);
    Ok(html(
        StatusCode::OK,
        layout::page(&viewer, &title, &sources(&data), body),
    ))
}

/// Reads every section's data through the API's handlers (and the customers query).
pub async fn load(
    console: &Console,
    viewer: &Viewer,
    tenant_id: TenantId,
    point: Point,
) -> Result<TenantData, PageError> {
    let api = console.read_api();
    let (instant, position) = match point {
        Point::Now => (None, None),
        Point::Instant(t) => (Some(t), None),
        Point::Position(p) => (None, Some(p.get())),
    };
    // The read routes choose the replica or the primary through a slot (its headers unused).
    let read_slot = std::sync::Arc::new(crate::http::ReadSlot::default());
    // Five independent reads, each on its own pooled connection, at once.
    let (state, history, sessions, customers, money) = tokio::join!(
        api.tenant_pricing(
            viewer.auth(),
            Data(&read_slot),
            ApiPath(tenant_id.to_string()),
            ApiQuery(instant),
            ApiQuery(position),
        ),
        api.tenant_history(
            viewer.auth(),
            Data(&read_slot),
            ApiPath(tenant_id.to_string()),
            ApiQuery(Some(TIMELINE_ENTRIES_MAX)),
            ApiQuery(None),
        ),
        api.checkout_sessions(
            viewer.auth(),
            Data(&read_slot),
            ApiQuery(tenant_id.to_string()),
            ApiQuery(Some(SESSIONS_SHOWN_MAX)),
            ApiQuery(None),
        ),
        customers(console, &tenant_id),
        super::tenant_money::load(console, &tenant_id, point),
    );
    let (state, history) = (found(state)?, found(history)?);
    let sessions = sessions?.0.checkout_sessions;
    let customers = customers?;
    let money = money?;
    if state.is_none() && history.is_none() {
        return Err(PageError::NotFound(format!(
            "no tenant {:?} in the ledger",
            tenant_id.as_str()
        )));
    }
    let (timeline, timeline_cut) = history.map_or((Vec::new(), false), |h| {
        let cut = h.next_cursor.is_some();
        let shown = h.history.into_iter().filter(|entry| match point {
            Point::Now => true,
            Point::Instant(t) => entry.created <= t,
            Point::Position(p) => entry.position <= p.get(),
        });
        (shown.collect(), cut)
    });
    Ok(TenantData {
        tenant_id,
        point,
        state,
        customers,
        sessions,
        timeline,
        timeline_cut,
        money,
    })
}

/// An API answer, `None` for its 404.
fn found<T>(
    answer: Result<poem_openapi::payload::Json<T>, ApiError>,
) -> Result<Option<T>, PageError> {
    match answer {
        Ok(json) => Ok(Some(json.0)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The tenant's customers (no API route lists them yet).
async fn customers(console: &Console, tenant_id: &TenantId) -> Result<Vec<CustomerRow>, PageError> {
    Ok(queries::customers_of(&console.state.pool, tenant_id, CUSTOMERS_SHOWN_MAX).await?)
}

fn sources(data: &TenantData) -> Vec<Source> {
    let id = encode(data.tenant_id.as_str());
    let pricing = match data.point {
        Point::Now => format!("/api/billing/tenants/{id}/pricing"),
        Point::Instant(t) => format!(
            "/api/billing/tenants/{id}/pricing?as_of={}",
            encode(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        ),
        Point::Position(p) => format!("/api/billing/tenants/{id}/pricing?as_of_position={p}"),
    };
    let mut sources = vec![
        Source::new("the state", pricing),
        Source::new(
            "the timeline",
            format!("/api/billing/tenants/{id}/history?limit={TIMELINE_ENTRIES_MAX}"),
        ),
        Source::new(
            "Checkout Sessions",
            format!("/api/billing/checkout-sessions?tenant_id={id}"),
        ),
        Source::new(
            "the tenant's events (CSV with Accept: text/csv)",
            format!("/api/billing/events?tenant_id={id}"),
        ),
    ];
    sources.extend(super::tenant_money::sources(
        data.tenant_id.as_str(),
        data.point,
    ));
    sources
}

fn as_of_form(data: &TenantData, typed: &AsOf) -> Markup {
    let here = format!("/console/tenants/{}", encode(data.tenant_id.as_str()));
    markup! {
        section aria-labelledby="as-of-heading" {
            h2 #as-of-heading { "As of" }
            form.as-of method="get" action=(here) {
                label { "Instant (UTC, e.g. 2025-01-15T00:00:00Z)"
                    input #as-of type="text" name="as_of" value=(typed.as_of); }
                label { "or log position"
                    input #as-of-position type="number" min="0" name="as_of_position" value=(typed.as_of_position); }
                button type="submit" { "Show state" }
                a href=(here) { "Now" }
            }
        }
    }
}

fn state_section(data: &TenantData) -> Markup {
    let heading = match data.point {
        Point::Now => "Current state".to_owned(),
        Point::Instant(t) => format!("State as of {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
        Point::Position(p) => format!("State as the ledger knew it at log position {p}"),
    };
    markup! {
        section aria-labelledby="state-heading" {
            h2 #state-heading { (heading) }
            @match &data.state {
                None => p { "No subscription known for this tenant at that point." },
                Some(s) => dl.facts {
                    dt { "Status" } dd { @match &s.status { Some(w) => (layout::status(w)), None => (layout::none()) } }
                    dt { "Subscription" } dd { code { (s.stripe_subscription_id) } }
                    dt { "Customer" } dd { (layout::maybe_text(s.stripe_customer_id.as_deref())) }
                    dt { "Price" } dd { (layout::maybe_text(s.price_id.as_deref())) @if let Some(q) = s.quantity { " × " (q) } }
                    dt { "Current period ends" } dd { (layout::maybe_time(s.current_period_end)) }
                    dt { "Cancels at period end" } dd { (if s.cancel_at_period_end { "yes" } else { "no" }) }
                    dt { "Canceled at" } dd { (layout::maybe_time(s.canceled_at)) }
                    dt { "Last payment failed" } dd { (layout::maybe_time(s.last_payment_failed_at)) }
                    dt { "Last paid" } dd { (layout::maybe_time(s.last_paid_at)) }
                    dt { "Last changed" } dd { (layout::time(s.updated_at)) " by " (layout::event_link(&s.last_event_id)) }
                    dt { "Tenant found by" } dd { code { (s.resolved_by) } }
                }
            }
        }
    }
}

fn customers_section(data: &TenantData) -> Markup {
    markup! {
        section aria-labelledby="customers-heading" {
            h2 #customers-heading { "Customers" }
            @if data.customers.is_empty() { p { "None known." } } @else {
                table {
                    thead { tr { th scope="col" { "Customer" } th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Deleted" } th scope="col" { "Last event" } } }
                    tbody { @for c in &data.customers { tr {
                        td { code { (c.id) } }
                        td { (layout::maybe_text(c.name.as_deref())) }
                        td { (layout::maybe_text(c.email.as_deref())) }
                        td { (if c.deleted { "deleted" } else { "no" }) }
                        td { (layout::event_link(&c.last_event_id)) }
                    } } }
                }
            }
        }
    }
}

fn sessions_section(data: &TenantData) -> Markup {
    markup! {
        section aria-labelledby="sessions-heading" {
            h2 #sessions-heading { "Checkout Sessions" }
            @if data.sessions.is_empty() { p { "None." } } @else {
                table {
                    thead { tr { th scope="col" { "Session" } th scope="col" { "Status" } th scope="col" { "Payment" }
                        th scope="col" class="num" { "Amount" } th scope="col" { "Created" } th scope="col" { "Completed" } th scope="col" { "Last event" } } }
                    tbody { @for s in &data.sessions { tr {
                        td { code { (s.id) } }
                        td { (layout::status(&s.status)) }
                        td { (layout::maybe_text(s.payment_status.as_deref())) }
                        td.num { @match (s.amount_total, &s.currency) {
                            (Some(amount), Some(currency)) => (layout::money(amount, currency)),
                            _ => (layout::none()),
                        } }
                        td { (layout::maybe_time(s.created_at)) }
                        td { (layout::maybe_time(s.completed_at)) }
                        td { (layout::event_link(&s.last_event_id)) }
                    } } }
                }
            }
        }
    }
}

/// One field an event changed: its name, and its value before and after.
pub struct Change {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// Each entry's changes, old -> new, from consecutive states.
pub fn changes(timeline: &[HistoryEntry]) -> Vec<Vec<Change>> {
    let mut before = Value::Null;
    timeline
        .iter()
        .map(|entry| {
            let after = entry
                .state
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null);
            let list = entry
                .changed
                .iter()
                .map(|field| Change {
                    field: field.clone(),
                    old: before.get(field).cloned().unwrap_or(Value::Null),
                    new: after.get(field).cloned().unwrap_or(Value::Null),
                })
                .collect();
            before = after;
            list
        })
        .collect()
}

fn value(v: &Value) -> Markup {
    match v {
        Value::Null => layout::none(),
        Value::String(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => layout::time(t.with_timezone(&Utc)),
            Err(_) => markup! { (s) },
        },
        other => markup! { (other.to_string()) },
    }
}

fn timeline_section(data: &TenantData) -> Markup {
    let changes = changes(&data.timeline);
    let here = format!("/console/tenants/{}", encode(data.tenant_id.as_str()));
    markup! {
        section aria-labelledby="timeline-heading" {
            h2 #timeline-heading { "Timeline" }
            p { "Newest first, in Stripe's order (" code { "created" } ", then log position)."
                @if data.timeline_cut { " Only the first " (TIMELINE_ENTRIES_MAX) " events of the history are shown." } }
            table.timeline {
                thead { tr { th scope="col" { "Created" } th scope="col" { "Event" } th scope="col" { "Position" }
                    th scope="col" { "What changed" } th scope="col" { "State then" } } }
                tbody {
                    @for (entry, change) in data.timeline.iter().zip(&changes).rev() { tr {
                        td { (layout::time(entry.created)) }
                        td { code { (entry.event_type) } br; (layout::event_link(&entry.event_id)) }
                        td.num { (entry.position) }
                        td { @if change.is_empty() { span.none { "nothing" } } @else {
                            ul.changes { @for c in change { li {
                                code { (c.field) } ": " span.old { (value(&c.old)) } " → " (value(&c.new))
                            } } }
                        } }
                        td { a href={ (here) "?as_of=" (encode(&entry.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))) } { "as of this event" } }
                    } }
                }
            }
        }
    }
}
