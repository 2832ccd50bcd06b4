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

use super::{run_recorded, store, within_retention, RunOutcome, RunSpec, Trigger, WINDOW_DEFAULT};
use crate::stripe::events_api::{ApiSettings, EventsClient, Window};
use chrono::{Duration as ChronoDuration, Utc};
use deadpool_postgres::Pool;
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
    last_success: Gauge,
}

impl Metrics {
    /// Adds the metrics to `registry` (prefixed `billing_ledger_reconcile_` there).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("reconcile");
        sub.register(
            "runs",
            "Reconciliation runs by outcome (succeeded, failed)",
            self.runs.clone(),
        );
        sub.register(
            "appended_events",
            "Events missing from the log that reconciliation appended, by event type: each is \
             a webhook that never arrived",
            self.appended.clone(),
        );
        sub.register(
            "differences",
            "Fields where the log and Stripe's copy of an event disagree",
            self.differences.clone(),
        );
        sub.register(
            "last_success_timestamp_seconds",
            "When this instance's last successful run finished, Unix seconds",
            self.last_success.clone(),
        );
    }

    /// Counts one finished run.
    pub fn record(&self, outcome: &RunOutcome) {
        let label = if outcome.error.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        self.runs.get_or_create(&Outcome { outcome: label }).inc();
        for (event_type, count) in &outcome.report.appended_by_type {
            self.appended
                .get_or_create(&EventType {
                    event_type: event_type.clone(),
                })
                .inc_by(*count);
        }
        let differences = outcome.report.differences.len() as u64;
        self.differences
            .inc_by(differences + outcome.report.differences_not_listed);
        if outcome.error.is_none() {
            self.last_success.set(Utc::now().timestamp());
        }
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
        tokio::select! {
            _ = stop.cancelled() => return,
            result = tick(&runner, &client) => if let Err(error) = result {
                runner.metrics.failed();
                tracing::warn!(error = format!("{error:#}"), "reconcile run could not start or be recorded");
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
    let until = now - chrono_duration(runner.settings.settle);
    let since = match store::last_success_until(&runner.pool, Trigger::Interval).await? {
        Some(previous_until) => previous_until - chrono_duration(OVERLAP),
        None => until - chrono_duration(WINDOW_DEFAULT),
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

fn chrono_duration(duration: Duration) -> ChronoDuration {
    ChronoDuration::from_std(duration).unwrap_or(ChronoDuration::MAX)
}
