//! Reconciliation: proving the log holds every event Stripe sent, and fetching what it lacks.
//!
//! A run lists Stripe's events for a window of `created` with the Events API
//! ([`crate::stripe::events_api`]), compares their IDs with the log, and appends the missing
//! ones through the same path as every event ([`crate::event_log::append_batch`]: deduplicated
//! by ID, hash-chained, then folded by the projector) with the source `reconcile`. An event the
//! log already holds is never rewritten: when Stripe's copy disagrees in meaning (type,
//! `created`, object ID, mode, account) the run reports it as a [`Difference`] and changes
//! nothing. The bytes always differ (the API renders JSON its own way), so they are not
//! compared.
//!
//! What Stripe lists is checked against the request before anything is appended: an event
//! created outside the window, of the other mode than the key's, or naming another account
//! than `STRIPE_ACCOUNT` (any account, when none is configured) is reported as out of scope
//! and not stored; an ID listed twice in a page is taken once (a second copy meaning something
//! else is a difference); an ID or cursor seen on an earlier page means the pagination loops,
//! and the run stops ([`StripeApiError::PaginationLoop`]). Everything a report quotes from
//! Stripe is [`printable`].
//!
//! `billing-ledger reconcile` runs it once ([`run_recorded`]); `serve` with
//! `LEDGER_RECONCILE_INTERVAL` runs it on a timer on one instance at a time ([`service`]).
//! Runs are recorded in `reconcile_runs` ([`store`]).

pub mod command;
pub mod service;
pub mod store;

use crate::event_log::{append_batch, Delivery, Source};
pub use crate::stripe::events_api::printable;
use crate::stripe::events_api::{EventsClient, StripeApiError, Window, PAGE_EVENTS_MAX};
use bytes::Bytes;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Default window of `billing-ledger reconcile`, and of the service's first run: the last 72
/// hours (Stripe retries a failing webhook for up to three days).
pub const WINDOW_DEFAULT: std::time::Duration = std::time::Duration::from_secs(72 * 3600);
/// How long Stripe keeps events behind the Events API (Stripe's API reference, "Events"):
/// a window reaching further back is cut to this.
pub const STRIPE_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
/// Most pages one run lists (100 events each): ten million events.
pub const PAGES_MAX: usize = 100_000;
/// Most differences and unreadable events a run keeps in its report; the counts go on.
pub const REPORTED_MAX: usize = 1_000;

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The service's timer (`LEDGER_RECONCILE_INTERVAL`).
    Interval,
    /// `billing-ledger reconcile`.
    Command,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Interval => "interval",
            Trigger::Command => "command",
        }
    }
}

/// An event the log holds whose Stripe copy means something else. The log is not changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub event_id: String,
    /// `type`, `created`, `object_id`, `livemode` or `account`. When Stripe listed the ID
    /// twice in one page with different meanings, the field ends in ` (listed twice)`, `log`
    /// holds the first copy's value and `stripe` the second's.
    pub field: String,
    /// The log's value, as JSON text.
    pub log: String,
    /// Stripe's value, as JSON text.
    pub stripe: String,
}

/// An event Stripe listed that is not a readable Stripe event, or not one the request asked
/// for (out of scope); nothing of it is stored. Both fields are [`printable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// Its `id`, when it has one.
    pub event_id: Option<String>,
    pub problem: String,
}

/// What a run found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Events Stripe listed in the window.
    pub listed: u64,
    /// Of those, already in the log (a webhook that arrived during the run included).
    pub present: u64,
    /// Of those, appended by this run (with `--dry-run`: the ones that would be).
    pub appended: u64,
    /// `appended` per event type.
    pub appended_by_type: BTreeMap<String, u64>,
    pub differences: Vec<Difference>,
    /// Differences beyond [`REPORTED_MAX`], counted only.
    pub differences_not_listed: u64,
    /// The first [`REPORTED_MAX`] unreadable events.
    pub unreadable: Vec<Unreadable>,
    /// Unreadable events, all counted.
    pub unreadable_events: u64,
    /// The first [`REPORTED_MAX`] events outside what was asked for: created outside the
    /// window, of the other mode than the key's, or naming another account than
    /// `STRIPE_ACCOUNT`.
    pub out_of_scope: Vec<Unreadable>,
    /// Out-of-scope events, all counted.
    pub out_of_scope_events: u64,
}

impl Report {
    /// Whether Stripe listed something the run could not take: unreadable or out-of-scope
    /// events (the run is then `succeeded_with_problems`).
    pub fn has_problems(&self) -> bool {
        self.unreadable_events > 0 || self.out_of_scope_events > 0
    }
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    #[error("the log is unavailable: {0:#}")]
    Log(anyhow::Error),
}

/// Lists Stripe's events in `window` and appends those the log lacks (none with `dry_run`),
/// page by page, so a run stopped half-way keeps what it appended. On error the report holds
/// what was done so far.
pub async fn reconcile(
    pool: &Pool,
    client: &EventsClient,
    window: &Window,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), RunError> {
    reconcile_recorded(pool, client, window, dry_run, report, None).await
}

/// [`reconcile`], recording after each page how many events run `run_id` has listed so far.
async fn reconcile_recorded(
    pool: &Pool,
    client: &EventsClient,
    window: &Window,
    dry_run: bool,
    report: &mut Report,
    run_id: Option<i64>,
) -> Result<(), RunError> {
    let scope = Scope {
        window: *window,
        livemode: client.livemode(),
        account: client.account(),
    };
    let mut seen = HashSet::new();
    let mut starting_after: Option<String> = None;
    for _ in 0..PAGES_MAX {
        let page = client.list_page(window, starting_after.as_deref()).await?;
        report.listed += page.events.len() as u64;
        if page.events.len() > PAGE_EVENTS_MAX as usize {
            tracing::warn!(
                events = page.events.len(),
                "Stripe listed more events in a page than asked for"
            );
        }
        reconcile_page(pool, &scope, page.events, dry_run, report, &mut seen).await?;
        if let Some(run_id) = run_id.filter(|_| page.has_more) {
            store::progress(pool, run_id, report.listed)
                .await
                .map_err(RunError::Log)?;
        }
        if !page.has_more {
            return Ok(());
        }
        if let Some(cursor) = &page.last_id {
            if starting_after.as_ref() == Some(cursor) || !seen.insert(format!("cursor {cursor}")) {
                return Err(pagination_loop(format!(
                    "the page after {} ends with the same event again",
                    printable(cursor)
                )));
            }
        }
        starting_after = page.last_id;
    }
    Err(RunError::Log(anyhow::anyhow!(
        "more than {PAGES_MAX} pages of events in one window; reconcile a shorter one"
    )))
}

fn pagination_loop(problem: String) -> RunError {
    RunError::Stripe(StripeApiError::PaginationLoop(problem))
}

/// What a run asked Stripe for: each listed event is checked against it.
struct Scope<'a> {
    window: Window,
    /// The key's mode (`sk_live_`/`rk_live_`: live).
    livemode: bool,
    account: Option<&'a str>,
}

impl Scope<'_> {
    /// Why `event` is not one the request asked for, if it is not.
    fn problem(&self, event: &projections::Event) -> Option<String> {
        let (since, until) = (self.window.since.timestamp(), self.window.until.timestamp());
        if event.created < since || event.created > until {
            return Some(format!(
                "created {} outside the requested window {since}..{until}",
                event.created
            ));
        }
        if event.livemode != self.livemode {
            return Some(format!(
                "livemode {} while the key is a {} key",
                event.livemode,
                if self.livemode { "live" } else { "test" }
            ));
        }
        // Stripe may leave `account` out of a connected account's own listing; one naming
        // another account (or any, when none is configured) is not what was asked for.
        if event.account.is_some() && event.account.as_deref() != self.account {
            return Some(format!(
                "account {} while STRIPE_ACCOUNT is {}",
                json(&event.account),
                json(&self.account)
            ));
        }
        None
    }
}

/// Compares one page with the log and appends what it lacks. `seen` holds the IDs of the
/// earlier pages (one listed again means the pagination loops) and gets this page's.
async fn reconcile_page(
    pool: &Pool,
    scope: &Scope<'_>,
    events: Vec<Bytes>,
    dry_run: bool,
    report: &mut Report,
    seen: &mut HashSet<String>,
) -> Result<(), RunError> {
    let deliveries = readable_in_scope(scope, events, report, seen)?;
    let ids: Vec<&str> = deliveries.iter().map(|d| d.event.id.as_str()).collect();
    let stored = store::meanings(pool, &ids).await.map_err(RunError::Log)?;
    let mut missing = Vec::new();
    for delivery in &deliveries {
        match stored.get(&delivery.event.id) {
            Some(meaning) => {
                report.present += 1;
                compare(report, meaning, &delivery.event, "");
            }
            None => missing.push(delivery),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if dry_run {
        missing.iter().for_each(|d| count_appended(report, d));
        return Ok(());
    }
    let answers = append_batch(pool, &missing).await.map_err(RunError::Log)?;
    for (delivery, answer) in missing.iter().zip(answers) {
        if answer.duplicate {
            // Stored meanwhile (a webhook, another runner): present, not ours.
            report.present += 1;
        } else {
            tracing::debug!(stripe.event_id = %delivery.event.id, stripe.event_type = %printable(&delivery.event.event_type),
                log.position = answer.position, "reconcile appended an event missing from the log");
            count_appended(report, delivery);
        }
    }
    Ok(())
}

/// The page's readable, in-scope events, each ID once (a second copy is compared with the
/// first); the rest is reported. Errors: an ID an earlier page listed.
fn readable_in_scope(
    scope: &Scope<'_>,
    events: Vec<Bytes>,
    report: &mut Report,
    seen: &mut HashSet<String>,
) -> Result<Vec<Delivery>, RunError> {
    let received_at = Utc::now();
    let mut deliveries: Vec<Delivery> = Vec::with_capacity(events.len());
    let mut in_page: HashMap<String, usize> = HashMap::new();
    for body in events {
        let event = match projections::Event::parse(&body) {
            Ok(event) => event,
            Err(problem) => {
                unreadable(report, &body, problem.to_string());
                continue;
            }
        };
        if seen.contains(&event.id) {
            return Err(pagination_loop(format!(
                "{} was listed on an earlier page",
                printable(&event.id)
            )));
        }
        if let Some(&first) = in_page.get(&event.id) {
            let first = meaning_of(&deliveries[first].event);
            compare(report, &first, &event, " (listed twice)");
            continue;
        }
        if let Some(problem) = scope.problem(&event) {
            out_of_scope(report, &event.id, problem);
            continue;
        }
        in_page.insert(event.id.clone(), deliveries.len());
        deliveries.push(Delivery {
            event,
            body,
            received_at,
            source: Source::Reconcile,
            signature_timestamp: None,
            secret_index: None,
            signature: None,
        });
    }
    seen.extend(in_page.into_keys());
    Ok(deliveries)
}

fn count_appended(report: &mut Report, delivery: &Delivery) {
    report.appended += 1;
    *report
        .appended_by_type
        .entry(delivery.event.event_type.clone())
        .or_default() += 1;
}

fn unreadable(report: &mut Report, body: &[u8], problem: String) {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let event_id = serde_json::from_slice::<IdOnly>(body)
        .ok()
        .map(|e| printable(&e.id));
    let problem = printable(&problem);
    tracing::warn!(stripe.event_id = event_id.as_deref().unwrap_or(""), %problem,
        "Stripe listed an event that is not readable; not stored");
    report.unreadable_events += 1;
    if report.unreadable.len() < REPORTED_MAX {
        report.unreadable.push(Unreadable { event_id, problem });
    }
}

fn out_of_scope(report: &mut Report, event_id: &str, problem: String) {
    let event_id = printable(event_id);
    tracing::warn!(stripe.event_id = %event_id, %problem,
        "Stripe listed an event outside what was asked for; not stored");
    report.out_of_scope_events += 1;
    if report.out_of_scope.len() < REPORTED_MAX {
        report.out_of_scope.push(Unreadable {
            event_id: Some(event_id),
            problem,
        });
    }
}

/// What an event means, as the log would store it.
fn meaning_of(event: &projections::Event) -> store::Meaning {
    store::Meaning {
        event_type: event.event_type.clone(),
        created: event.created,
        object_id: stored_object_id(event),
        livemode: event.livemode,
        account: event.account.clone(),
    }
}

/// The object ID as the log stores it (none when it could not be an identifier).
fn stored_object_id(event: &projections::Event) -> Option<String> {
    event
        .object_id()
        .filter(|id| !id.contains('\0') && id.len() <= projections::envelope::IDENTIFIER_BYTES_MAX)
        .map(str::to_owned)
}

/// Records each field where `event` and `log` (the log's copy, or an earlier copy in the same
/// page; `suffix` then says so) disagree.
fn compare(report: &mut Report, log: &store::Meaning, event: &projections::Event, suffix: &str) {
    let fields = [
        ("type", json(&log.event_type), json(&event.event_type)),
        ("created", json(&log.created), json(&event.created)),
        (
            "object_id",
            json(&log.object_id),
            json(&stored_object_id(event)),
        ),
        ("livemode", json(&log.livemode), json(&event.livemode)),
        ("account", json(&log.account), json(&event.account)),
    ];
    for (field, log, stripe) in fields {
        // A listing may leave `account` out where the webhook had it: only a named one counts.
        if log == stripe || (field == "account" && event.account.is_none()) {
            continue;
        }
        let event_id = printable(&event.id);
        tracing::warn!(stripe.event_id = %event_id, field, log = %log, stripe = %stripe, suffix,
            "the log and Stripe disagree about an event; the log is left as it is");
        if report.differences.len() < REPORTED_MAX {
            report.differences.push(Difference {
                event_id,
                field: format!("{field}{suffix}"),
                log,
                stripe,
            });
        } else {
            report.differences_not_listed += 1;
        }
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain values serialize")
}

/// What one recorded run needs.
pub struct RunSpec<'a> {
    pub pool: &'a Pool,
    pub client: &'a EventsClient,
    pub trigger: Trigger,
    pub instance_id: &'a str,
    pub window: Window,
}

/// What a recorded run came to: its ID, report, and the error that stopped it, if any.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: i64,
    pub report: Report,
    pub error: Option<RunError>,
}

/// Runs [`reconcile`] recorded in `reconcile_runs`: marks runs a dead runner left `running`
/// as abandoned, records this one as started, reconciles, records the result. `lock` is the
/// connection holding [`store::RECONCILE_LOCK_KEY`] (from [`store::try_lock`]); it is closed,
/// releasing the lock, once the result is recorded. Errors: the run could not be recorded (a
/// failed reconciliation is in [`RunOutcome::error`], recorded).
pub async fn run_recorded(
    spec: &RunSpec<'_>,
    lock: tokio_postgres::Client,
) -> anyhow::Result<RunOutcome> {
    store::close_abandoned(spec.pool).await?;
    let run_id = store::start_run(spec.pool, spec.trigger, spec.instance_id, &spec.window).await?;
    let started = std::time::Instant::now();
    let mut report = Report::default();
    let result = reconcile_recorded(
        spec.pool,
        spec.client,
        &spec.window,
        false,
        &mut report,
        Some(run_id),
    )
    .await;
    let error = result.err();
    let message = error.as_ref().map(|e| e.to_string());
    store::finish_run(spec.pool, run_id, &report, message.as_deref()).await?;
    drop(lock);
    log_run(
        run_id,
        spec.trigger,
        &report,
        message.as_deref(),
        started.elapsed(),
    );
    Ok(RunOutcome {
        run_id,
        report,
        error,
    })
}

/// One line per run; a warning when the run appended events, since each one is a webhook
/// that never arrived (the types say which).
fn log_run(
    run_id: i64,
    trigger: Trigger,
    report: &Report,
    error: Option<&str>,
    elapsed: std::time::Duration,
) {
    let by_type = json(&report.appended_by_type);
    let duration_ms = elapsed.as_millis() as u64;
    if report.appended > 0 {
        tracing::warn!(reconcile.run_id = run_id, reconcile.trigger = trigger.as_str(),
            listed = report.listed, present = report.present, appended = report.appended,
            appended_by_type = %by_type, differences = report.differences.len(), duration_ms,
            error = error.unwrap_or(""),
            "reconcile run appended events no webhook delivered");
    } else {
        tracing::info!(
            reconcile.run_id = run_id,
            reconcile.trigger = trigger.as_str(),
            listed = report.listed,
            present = report.present,
            appended = 0,
            differences = report.differences.len(),
            duration_ms,
            error = error.unwrap_or(""),
            "reconcile run finished"
        );
    }
}

/// Parses `--since`/`--until`: an RFC 3339 time, or a duration before `now` (`72h`, `30m`,
/// `2d`, as humantime reads them). Errors name the flag.
pub fn parse_instant(flag: &str, raw: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw.trim()) {
        return Ok(time.with_timezone(&Utc));
    }
    let duration = humantime::parse_duration(raw.trim()).map_err(|_| {
        anyhow::anyhow!("{flag}: expected an RFC 3339 time or a duration such as 72h, got {raw:?}")
    })?;
    let duration = ChronoDuration::from_std(duration)
        .map_err(|_| anyhow::anyhow!("{flag}: duration too long"))?;
    now.checked_sub_signed(duration)
        .ok_or_else(|| anyhow::anyhow!("{flag}: duration too long"))
}

/// Cuts a window's start to Stripe's retention; says so on stderr's log when it did.
pub fn within_retention(since: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let oldest = now - ChronoDuration::from_std(STRIPE_RETENTION).expect("30 days fits");
    if since < oldest {
        tracing::warn!(%since, %oldest, "Stripe keeps events for 30 days; the window starts at the oldest instead");
        return oldest;
    }
    since
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_times_or_durations_before_now() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let since = parse_instant("--since", "72h", now).unwrap();
        assert_eq!((now - since).num_hours(), 72);
        let at = parse_instant("--since", "2026-11-30T00:00:00Z", now).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-30T00:00:00+00:00");
        let error = parse_instant("--until", "yesterday", now).unwrap_err();
        assert!(error.to_string().starts_with("--until:"));
        let old = now - ChronoDuration::days(40);
        assert_eq!((now - within_retention(old, now)).num_days(), 30);
    }
}
