//! `billing-ledger reconcile [--since DURATION|TIME] [--until ...] [--dry-run]`: one
//! reconciliation, printed. A real run takes the reconciliation lock (waiting for a running
//! one) and is recorded in `reconcile_runs` like the service's; a dry run only reads.

use super::{parse_instant, reconcile, run_recorded, store, within_retention, Report, RunError};
use super::{RunSpec, Trigger};
use crate::config::ReconcileArgs;
use crate::stripe::events_api::{EventsClient, Window};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code: the log and Stripe disagree about some event, or Stripe listed an unreadable one.
pub const EXIT_DIFFERENCES: u8 = 1;
/// Exit code: Stripe refused the key (401, or 403 for a restricted key without Events access).
pub const EXIT_KEY_REFUSED: u8 = 3;
/// Exit code: Stripe was unavailable (after retries) or refused the request otherwise.
pub const EXIT_STRIPE_FAILED: u8 = 4;
/// Longest the command waits for a running reconciliation (the service's) to finish.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(600);
const LOCK_POLL: Duration = Duration::from_secs(1);

/// Runs the command; returns its exit code (see the `EXIT_` constants; other failures, such
/// as the database being unreachable, are errors: exit 1).
pub async fn execute(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let settings = args.stripe.settings()?;
    let now = chrono::Utc::now();
    let until = match &args.until {
        Some(raw) => parse_instant("--until", raw, now)?,
        None => now,
    };
    let since = within_retention(parse_instant("--since", &args.since, now)?, now);
    anyhow::ensure!(since <= until, "--since: must not be later than --until");
    let window = Window { since, until };
    let url = &args.database.database_url;
    crate::db::migrate(url).await?;
    let pool = crate::db::pool(url)?;
    let client = EventsClient::new(settings)?;
    println!(
        "reconcile {} .. {}{}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        if args.dry_run {
            " (dry run: nothing is appended)"
        } else {
            ""
        }
    );
    let (report, error) = if args.dry_run {
        let mut report = Report::default();
        let result = reconcile(&pool, &client, &window, true, &mut report).await;
        (report, result.err())
    } else {
        let lock = wait_for_lock(url).await?;
        let instance_id = format!("reconcile command {}", uuid::Uuid::new_v4());
        let spec = RunSpec {
            pool: &pool,
            client: &client,
            trigger: Trigger::Command,
            instance_id: &instance_id,
            window,
        };
        let outcome = run_recorded(&spec, lock).await?;
        println!("run {} recorded", outcome.run_id);
        (outcome.report, outcome.error)
    };
    print_report(&report, args.dry_run);
    Ok(exit_code(&report, error))
}

async fn wait_for_lock(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = std::time::Instant::now() + LOCK_WAIT_MAX;
    let mut said = false;
    loop {
        if let Some(lock) = store::try_lock(url).await? {
            return Ok(lock);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "another reconciliation held the lock for {LOCK_WAIT_MAX:?}; try again later"
        );
        if !said {
            println!("another reconciliation is running; waiting for it to finish");
            said = true;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

fn print_report(report: &Report, dry_run: bool) {
    let verb = if dry_run { "would append" } else { "appended" };
    println!(
        "listed {}, already in the log {}, {verb} {}",
        report.listed, report.present, report.appended
    );
    for (event_type, count) in &report.appended_by_type {
        println!("  {verb} {count} {event_type}");
    }
    for d in &report.differences {
        println!(
            "difference {}: {} is {} in the log, {} at Stripe (the log is left as it is)",
            d.event_id, d.field, d.log, d.stripe
        );
    }
    if report.differences_not_listed > 0 {
        println!("... and {} more differences", report.differences_not_listed);
    }
    for u in &report.unreadable {
        println!(
            "unreadable {}: {} (not stored)",
            u.event_id.as_deref().unwrap_or("(no id)"),
            u.problem
        );
    }
}

fn exit_code(report: &Report, error: Option<RunError>) -> ExitCode {
    match error {
        Some(RunError::Stripe(error)) => {
            eprintln!("billing-ledger reconcile: {error}");
            ExitCode::from(if error.is_key_problem() {
                EXIT_KEY_REFUSED
            } else {
                EXIT_STRIPE_FAILED
            })
        }
        Some(error @ RunError::Log(_)) => {
            eprintln!("billing-ledger reconcile: {error}");
            ExitCode::FAILURE
        }
        None if !report.differences.is_empty() || !report.unreadable.is_empty() => {
            ExitCode::from(EXIT_DIFFERENCES)
        }
        None => ExitCode::SUCCESS,
    }
}
