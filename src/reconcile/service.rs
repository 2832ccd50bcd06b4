//! The service's reconciliation timer (`LEDGER_RECONCILE_INTERVAL`, off by default).
//!
//! Every instance started with the interval wakes every [`CHECK_PERIOD_MAX`] (or the interval,
//! if shorter) and tries the reconciliation lock ([`super::store::try_lock`], a session
//! advisory lock on a dedicated connection). The holder runs only when the latest interval run,
//! on any instance, started at least one interval ago by the database's clock; so the cluster
//! runs once per interval, one run at a time, on whichever instance gets there first. Each run
//! lists from the end of the last successful run's window less [`OVERLAP`] (the last 72 hours
//! on the first run, or after a run failed for good: Stripe's 30 days at most) to now less the
//! settle delay, so events Stripe is still delivering are not fetched behind its back.
//!
//! The timer never stops silently: a run that fails, or even panics, is logged, counted as
//! `failed` and tried again at the next interval.

use super::{run_recorded, store, within_retention, RunOutcome, RunSpec, Trigger, WINDOW_DEFAULT};
use crate::stripe::events_api::{ApiSettings, EventsClient, Window};
use chrono::{Duration as ChronoDuration, Utc};
use deadpool_postgres::Pool;
use futures_util::FutureExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest pause between two checks of whether a run is due.
pub const CHECK_PERIOD_MAX: Duration = Duration::from_secs(10);
/// How far each run's window reaches back before the previous run's end: events Stripe makes
/// visible a little late, and clocks that disagree, are still listed.
pub const OVERLAP: Duration = Duration::from_secs(600);
/// Default `LEDGER_RECONCILE_SETTLE`: events younger than this are left to their webhook.
pub const SETTLE_DEFAULT: &str = "5m";
/// Longest `LEDGER_RECONCILE_SETTLE`: a day, well inside the first run's 72-hour window and
/// Stripe's 30 days.
pub const SETTLE_MAX: Duration = Duration::from_secs(86_400);
/// Most distinct `event_type` label values of `billing_ledger_reconcile_appended_events`;
/// further types are counted as `other`.
pub const EVENT_TYPE_LABELS_MAX: usize = 200;

/// The timer's settings, from `serve`'s configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub settle: Duration,
    pub api: ApiSettings,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventType {
    event_type: String,
}

/// This instance's reconciliation metrics (the runs it did; sum over instances).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    runs: Family<Outcome, Counter>,
    appended: Family<EventType, Counter>,
    differences: Counter,
    unreadable: Counter,
    out_of_scope: Counter,
    /// The `event_type` label values in use (at most [`EVENT_TYPE_LABELS_MAX`]).
    labels: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    last_success: Gauge,
}

impl Metrics {
    /// Adds the metrics to `registry` (prefixed `billing_ledger_reconcile_` there).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("reconcile");
        sub.register(
            "runs",
            "Reconciliation runs by outcome (succeeded, succeeded_with_problems, failed)",
            self.runs.clone(),
        );
        sub.register(
            "appended_events",
            "Events missing from the log that reconciliation appended, by event type (other for \
             a type not shaped like Stripe's): each is a webhook that never arrived",
            self.appended.clone(),
        );
        sub.register(
            "differences",
            "Fields where the log and Stripe's copy of an event disagree",
            self.differences.clone(),
        );
        sub.register(
            "unreadable_events",
            "Events Stripe listed that are not readable Stripe events (not stored)",
            self.unreadable.clone(),
        );
        sub.register(
            "out_of_scope_events",
            "Events Stripe listed outside what was asked for (window, mode, account; not stored)",
            self.out_of_scope.clone(),
        );
        sub.register(
            "last_success_timestamp_seconds",
            "When this instance's last successful run finished, Unix seconds",
            self.last_success.clone(),
        );
    }

    /// Counts one finished run.
    pub fn record(&self, outcome: &RunOutcome) {
        let report = &outcome.report;
        let label = if outcome.error.is_some() {
            "failed"
        } else if report.has_problems() {
            "succeeded_with_problems"
        } else {
            "succeeded"
        };
        self.runs.get_or_create(&Outcome { outcome: label }).inc();
        for (event_type, count) in &report.appended_by_type {
            self.appended
                .get_or_create(&EventType {
                    event_type: self.label(event_type),
                })
                .inc_by(*count);
        }
        let differences = report.differences.len() as u64;
        self.differences
            .inc_by(differences + report.differences_not_listed);
        self.unreadable.inc_by(report.unreadable_events);
        self.out_of_scope.inc_by(report.out_of_scope_events);
        if outcome.error.is_none() {
            self.last_success.set(Utc::now().timestamp());
        }
    }

    /// `event_type` as a label value: itself when shaped like Stripe's types
    /// (`^[a-z0-9_.]{1,100}$`) and the family has room, else `other`, so a listing cannot
    /// flood the metrics with made-up types.
    fn label(&self, event_type: &str) -> String {
        let shaped = (1..=100).contains(&event_type.len())
            && event_type
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        let room = labels.contains(event_type) || labels.len() < EVENT_TYPE_LABELS_MAX;
        if !(shaped && room) {
            return "other".to_owned();
        }
        labels.insert(event_type.to_owned());
        event_type.to_owned()
    }

    fn failed(&self) {
        self.runs
            .get_or_create(&Outcome { outcome: "failed" })
            .inc();
    }
}

/// Where the timer runs: this instance's pool, its identity and its metrics.
pub struct Runner {
    pub pool: Pool,
    pub database_url: String,
    pub instance_id: String,
    pub settings: Settings,
    pub metrics: Metrics,
}

/// Runs the timer until `stop` is cancelled (a run in progress is dropped; the next run marks
/// it abandoned).
pub async fn run(runner: Runner, stop: CancellationToken) {
    let client = match EventsClient::new(runner.settings.api.clone()) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "reconcile timer not started: no HTTP client"
            );
            return;
        }
    };
    let period = runner.settings.interval.min(CHECK_PERIOD_MAX);
    tracing::info!(
        interval_secs = runner.settings.interval.as_secs_f64(),
        "reconcile timer started"
    );
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let ticked = std::panic::AssertUnwindSafe(tick(&runner, &client)).catch_unwind();
        tokio::select! {
            _ = stop.cancelled() => return,
            result = ticked => match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    runner.metrics.failed();
                    tracing::warn!(error = format!("{error:#}"), "reconcile run could not start or be recorded");
                }
                Err(_) => {
                    runner.metrics.failed();
                    tracing::error!("reconcile run panicked; the timer goes on");
                }
            }
        }
    }
}

/// Runs once if this instance gets the lock and a run is due.
async fn tick(runner: &Runner, client: &EventsClient) -> anyhow::Result<()> {
    let Some(lock) = store::try_lock(&runner.database_url).await? else {
        return Ok(());
    };
    let interval = runner.settings.interval;
    if store::since_last_start(&runner.pool, Trigger::Interval)
        .await?
        .is_some_and(|ago| ago < interval)
    {
        return Ok(());
    }
    let now = Utc::now();
    let until = before(now, runner.settings.settle)?;
    let since = match store::last_success_until(&runner.pool, Trigger::Interval).await? {
        Some(previous_until) => before(previous_until, OVERLAP)?,
        None => before(until, WINDOW_DEFAULT)?,
    };
    let window = Window {
        since: within_retention(since.min(until), now),
        until,
    };
    let spec = RunSpec {
        pool: &runner.pool,
        client,
        trigger: Trigger::Interval,
        instance_id: &runner.instance_id,
        window,
    };
    let outcome = run_recorded(&spec, lock).await?;
    if let Some(error) = &outcome.error {
        tracing::error!(reconcile.run_id = outcome.run_id, error = %error, "reconcile run failed");
    }
    runner.metrics.record(&outcome);
    Ok(())
}

/// `duration` before `time`. Errors: out of chrono's range (a settle delay of centuries).
fn before(
    time: chrono::DateTime<Utc>,
    duration: Duration,
) -> anyhow::Result<chrono::DateTime<Utc>> {
    ChronoDuration::from_std(duration)
        .ok()
        .and_then(|d| time.checked_sub_signed(d))
        .ok_or_else(|| anyhow::anyhow!("{duration:?} before {time} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_labels_are_shaped_and_bounded() {
        let metrics = Metrics::default();
        assert_eq!(metrics.label("invoice.paid"), "invoice.paid");
        for forged in [
            "invoice.paid\"} 1\nx{a=\"",
            "Invoice.Paid",
            "",
            &"a".repeat(101),
        ] {
            assert_eq!(metrics.label(forged), "other", "{forged:?}");
        }
        for n in 0..EVENT_TYPE_LABELS_MAX {
            metrics.label(&format!("made.up_{n}"));
        }
        assert_eq!(metrics.label("one.more"), "other", "the family is full");
        assert_eq!(
            metrics.label("invoice.paid"),
            "invoice.paid",
            "known ones stay"
        );
    }
}
