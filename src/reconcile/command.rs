//! `billing-ledger reconcile [--since DURATION|TIME] [--until ...] [--dry-run]`: one
//! reconciliation, printed. A real run takes the reconciliation lock (waiting for a running
//! one) and is recorded in `reconcile_runs` like the service's; a dry run only reads (it
//! neither creates the database nor applies migrations).
//!
//! Everything printed that came from Stripe is [`printable`]: an event type or ID holding a
//! newline cannot forge a line of the report.

use super::STRIPE_RETENTION;
use super::{parse_instant, printable, reconcile, run_recorded, store, Report, RunError};
use super::{RunSpec, Trigger};
use crate::config::ReconcileArgs;
use crate::stripe::events_api::{EventsClient, Window};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code: the log and Stripe disagree about some event, or Stripe listed an unreadable or
/// out-of-scope one. (Other failures, such as the database being unreachable, exit 1 too.)
pub const EXIT_DIFFERENCES: u8 = 1;
/// Exit code: an argument or setting is wrong (as clap exits for its own usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: Stripe refused the key (401, or 403 for a restricted key without Events access).
pub const EXIT_KEY_REFUSED: u8 = 3;
/// Exit code: Stripe was unavailable (after retries) or refused the request otherwise.
pub const EXIT_STRIPE_FAILED: u8 = 4;
/// Longest the command waits for a running reconciliation (the service's) to finish.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(600);
const LOCK_POLL: Duration = Duration::from_secs(1);
/// `--since` when absent: 72 hours ago ([`super::WINDOW_DEFAULT`]).
pub const SINCE_DEFAULT: &str = "72h";

/// Runs the command; returns its exit code (see the `EXIT_` constants; other failures, such
/// as the database being unreachable, are errors: exit 1).
pub async fn execute(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let checked = args
        .stripe
        .settings()
        .map_err(|e| e.to_string())
        .and_then(|settings| Ok((settings, window(&args, chrono::Utc::now())?)));
    let (settings, window) = match checked {
        Ok(checked) => checked,
        Err(problem) => {
            eprintln!("billing-ledger reconcile: {problem}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let url = &args.database.database_url;
    if !args.dry_run {
        crate::db::migrate(url).await?;
    }
    let pool = crate::db::pool(url)?;
    if args.dry_run {
        store::check_schema(&pool).await?;
    }
    let client = EventsClient::new(settings)?;
    println!(
        "reconcile {} .. {}{}",
        window
            .since
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        window
            .until
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
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

/// The window `--since`/`--until` ask for, cut to Stripe's 30 days. Errors name the real
/// cause: an `--until` beyond the 30 days, or before the default `--since` (72 hours ago).
pub fn window(args: &ReconcileArgs, now: DateTime<Utc>) -> Result<Window, String> {
    let until = match &args.until {
        Some(raw) => parse_instant("--until", raw, now).map_err(|e| e.to_string())?,
        None => now,
    };
    let since_raw = args.since.as_deref().unwrap_or(SINCE_DEFAULT);
    let since = parse_instant("--since", since_raw, now).map_err(|e| e.to_string())?;
    let oldest = now - ChronoDuration::from_std(STRIPE_RETENTION).expect("30 days fits");
    if until < oldest {
        return Err(format!(
            "--until: {} is more than 30 days ago; Stripe keeps events for 30 days, so there \
             is nothing to list",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if since > until {
        return Err(match args.since {
            None => format!(
                "--until: {} is before the default --since ({SINCE_DEFAULT} ago); give --since \
                 too",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Some(_) => "--since: must not be later than --until".to_owned(),
        });
    }
    Ok(Window {
        since: super::within_retention(since, now),
        until,
    })
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
        println!("  {verb} {count} {}", printable(event_type));
    }
    for d in &report.differences {
        println!(
            "difference {}: {} is {} in the log, {} at Stripe (the log is left as it is)",
            printable(&d.event_id),
            printable(&d.field),
            printable(&d.log),
            printable(&d.stripe)
        );
    }
    if report.differences_not_listed > 0 {
        println!("... and {} more differences", report.differences_not_listed);
    }
    let lists = [
        ("unreadable", &report.unreadable, report.unreadable_events),
        (
            "out of scope",
            &report.out_of_scope,
            report.out_of_scope_events,
        ),
    ];
    for (label, listed, count) in lists {
        for u in listed {
            let id = u.event_id.as_deref().map_or("(no id)".into(), printable);
            println!("{label} {id}: {} (not stored)", printable(&u.problem));
        }
        if count > listed.len() as u64 {
            println!("... and {} more {label}", count - listed.len() as u64);
        }
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
        None if !report.differences.is_empty() || report.has_problems() => {
            ExitCode::from(EXIT_DIFFERENCES)
        }
        None => ExitCode::SUCCESS,
    }
}
