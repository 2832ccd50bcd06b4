//! The commands of the `billing-ledger` binary other than the HTTP service itself: each parses
//! its arguments, does one job, prints what happened and returns the exit code.

use crate::config::{Command, Config, ImportArgs, LogFormat, RebuildArgs, SendArgs, SignArgs};
use crate::signature::{self, WebhookSecret};
use crate::{db, projector};
use anyhow::Context;

mod preview_report;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs one command.
pub async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let config = Config::from_args(&args)?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("LEDGER_LISTEN: cannot listen on {}", config.listen))?;
            crate::run(config, listener, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => {
            let applied =
                db::migrate_as(&args.database_url, db::Provision::ExistingDatabase).await?;
            println!("migrations applied: {applied}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild(args) => rebuild(args).await,
        Command::Verify(args) => {
            db::migrate_as(&args.database_url, db::Provision::ExistingSchema).await?;
            let pool = db::pool(&args.database_url)?;
            let verdict = crate::chain::verify(&pool).await?;
            crate::chain::record_or_warn(&pool, &verdict, crate::chain::RanBy::Cli).await;
            println!("{}", verdict_line(&verdict));
            Ok(match verdict {
                crate::chain::Verdict::Intact { .. } => ExitCode::SUCCESS,
                crate::chain::Verdict::Broken { .. } => ExitCode::FAILURE,
            })
        }
        Command::Import(args) => import(args).await,
        Command::Sign(args) => sign(args),
        Command::Send(args) => send(args).await,
        Command::Reconcile(args) => crate::reconcile::command::execute(args).await,
        Command::Openapi => {
            print!("{}", crate::openapi_yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Installs the global log subscriber (see [`crate::logging`]).
pub fn init_logging(format: LogFormat) {
    crate::logging::init(format);
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.projection {
        anyhow::ensure!(
            name == projector::PROJECTION_NAME,
            "--projection: unknown projection {name:?}; the only one is {:?}",
            projector::PROJECTION_NAME
        );
    }
    let url = &args.database.database_url;
    db::migrate_as(url, db::Provision::ExistingSchema).await?;
    let pool = db::pool(url)?;
    let lock = db::connect(url).await?;
    if args.preview {
        anyhow::ensure!(
            projector::try_preview_lock(&lock).await?,
            "another rebuild --preview is running; retry when it ends"
        );
        return preview(&pool, &args).await;
    }
    if projector::try_lock(&lock).await? {
        // No service is projecting: rebuild here, holding the lock so none starts meanwhile.
        let started = std::time::Instant::now();
        let rebuild_id = projector::request_rebuild(&pool)
            .await?
            .context("a rebuild is already queued; start `serve` to run it")?;
        let owner = format!("rebuild command {}", uuid::Uuid::new_v4());
        projector::rebuild(&pool, args.livemode, rebuild_id, &owner, |p| {
            println!(
                "rebuild {rebuild_id}: {}/{} events",
                p.position_done, p.position_target
            );
        })
        .await?;
        println!(
            "rebuild {rebuild_id}: done in {:.1} s, peak memory {}",
            started.elapsed().as_secs_f64(),
            peak_memory().unwrap_or_else(|| "unknown".into())
        );
        return Ok(ExitCode::SUCCESS);
    }
    // A running service holds the projector: queue the rebuild there and follow it.
    let rebuild_id = match projector::request_rebuild(&pool).await? {
        Some(id) => id,
        None => projector::active_rebuild(&pool)
            .await?
            .context("a rebuild finished while queuing; run again")?,
    };
    println!("rebuild {rebuild_id}: queued on the instance running the projector");
    Ok(if follow(&pool, rebuild_id).await? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `rebuild --preview`: always folds here, with this binary's fold (so a changed fold can be
/// previewed before it is deployed), whether or not a service is projecting; it swaps nothing.
/// Rows the service's projector writes meanwhile wait for the preview's compare phase, and
/// may appear in the diff as events that arrived in between.
async fn preview(pool: &deadpool_postgres::Pool, args: &RebuildArgs) -> anyhow::Result<ExitCode> {
    let rebuild_id = projector::claim_preview(pool)
        .await?
        .context("a rebuild or preview is already pending or running; retry when it ends")?;
    let started = std::time::Instant::now();
    let owner = format!("rebuild command {}", uuid::Uuid::new_v4());
    projector::rebuild(pool, args.livemode, rebuild_id, &owner, |p| {
        if !args.json {
            println!(
                "preview {rebuild_id}: {}/{} events",
                p.position_done, p.position_target
            );
        }
    })
    .await?;
    if !args.json {
        println!(
            "preview {rebuild_id}: done in {:.1} s, peak memory {}",
            started.elapsed().as_secs_f64(),
            peak_memory().unwrap_or_else(|| "unknown".into())
        );
    }
    let client = pool.get().await?;
    let record = projector::status::rebuild_record(&client, rebuild_id)
        .await?
        .context("the preview's record vanished")?;
    preview_report::print(&record, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a queued rebuild's progress every second until it ends; `false` when it failed.
async fn follow(pool: &deadpool_postgres::Pool, rebuild_id: uuid::Uuid) -> anyhow::Result<bool> {
    use projector::status::RebuildStatus;
    let client = pool.get().await?;
    loop {
        let record = projector::status::rebuild_record(&client, rebuild_id)
            .await?
            .context("the rebuild's record vanished")?;
        let done = record.position_done;
        match record.status {
            RebuildStatus::Done => {
                println!("rebuild {rebuild_id}: done ({done} events)");
                return Ok(true);
            }
            RebuildStatus::Failed => {
                println!(
                    "rebuild {rebuild_id}: failed: {}",
                    record.error.unwrap_or_default()
                );
                return Ok(false);
            }
            status => println!(
                "rebuild {rebuild_id}: {} {done}/{} events",
                status.as_str(),
                record.position_target.unwrap_or(0)
            ),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// This process's peak resident memory (`VmHWM` in /proc/self/status, Linux), e.g. `84 MiB`.
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{} MiB", kib / 1024))
}

fn parse_secret(raw: &str) -> anyhow::Result<WebhookSecret> {
    WebhookSecret::parse(raw).map_err(|problem| anyhow::anyhow!("--secret: {problem}"))
}

fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let secret = parse_secret(&args.secret)?;
    let body =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let timestamp = args
        .timestamp
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    let value = signature::sign(&secret, timestamp, &body);
    if args.header {
        println!("Stripe-Signature: {value}");
    } else {
        println!("{value}");
    }
    Ok(ExitCode::SUCCESS)
}

/// First and longest pause between `send --retry` attempts.
const SEND_BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const SEND_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest `send` waits for one answer.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let secret = parse_secret(&args.secret)?;
    let mut files = Vec::new();
    for path in &args.paths {
        collect_json(path, &mut files)?;
    }
    let client = reqwest::Client::builder().timeout(SEND_TIMEOUT).build()?;
    let (mut accepted, mut duplicates, mut refused) = (0, 0, 0);
    for file in &files {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_secs(args.retry_for_secs);
        let mut backoff = SEND_BACKOFF_FIRST;
        loop {
            let header = signature::sign(&secret, chrono::Utc::now().timestamp(), &body);
            let answer = client
                .post(&args.url)
                .header("content-type", "application/json")
                .header("stripe-signature", header)
                .body(body.clone())
                .send()
                .await;
            let (line, retryable, ok) = match answer {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() && text.contains("\"duplicate\":true") {
                        duplicates += 1;
                    }
                    let retryable = status.is_server_error()
                        || status.as_u16() == 408
                        || status.as_u16() == 429;
                    (
                        format!("{} {} {}", status.as_u16(), file.display(), text.trim()),
                        retryable,
                        status.is_success(),
                    )
                }
                Err(error) => (
                    format!("--- {} {}", file.display(), error_chain(&error)),
                    true,
                    false,
                ),
            };
            if args.retry && retryable && std::time::Instant::now() < deadline {
                eprintln!("{line} (retrying in {backoff:?})");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(SEND_BACKOFF_MAX);
                continue;
            }
            println!("{line}");
            if ok {
                accepted += 1;
            } else {
                refused += 1;
            }
            break;
        }
    }
    println!("{accepted} accepted ({duplicates} duplicate), {refused} refused");
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An error and its causes, `: `-separated (reqwest's own message names only the URL; the
/// cause says why: connection refused, DNS failure, timeout).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A file as given, or every `*.json` under a directory, sorted by path.
fn collect_json(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            if entry.is_dir() || entry.extension().is_some_and(|e| e == "json") {
                collect_json(&entry, files)?;
            }
        }
    } else {
        anyhow::ensure!(path.exists(), "{}: no such file", path.display());
        files.push(path.to_owned());
    }
    Ok(())
}

/// The one-line summary `verify` prints.
pub fn verdict_line(verdict: &crate::chain::Verdict) -> String {
    match verdict {
        crate::chain::Verdict::Intact { events, head_hash } => {
            format!("intact: {events} events, head hash {head_hash}")
        }
        crate::chain::Verdict::Broken {
            position,
            event_id,
            problem,
            events_verified,
        } => format!(
            "BROKEN at position {position} (event {}): {problem}; {events_verified} events verified before it",
            event_id.as_deref().unwrap_or("none")
        ),
    }
}

/// Lines appended per transaction by `import`.
pub const IMPORT_BATCH_EVENTS: usize = 500;
/// Longest line `import` reads, bytes (Stripe events are a few KiB).
pub const IMPORT_LINE_BYTES_MAX: usize = 1_048_576;

/// What `import` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: usize,
    pub already_present: usize,
    /// `(line number, why)` for every line not stored.
    pub invalid: Vec<(usize, String)>,
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let url = &args.database.database_url;
    db::migrate_as(url, db::Provision::ExistingSchema).await?;
    let pool = db::pool(url)?;
    let report = import_file(&pool, &args.file).await?;
    for (line, why) in &report.invalid {
        println!("line {line}: not imported: {why}");
    }
    println!(
        "imported {}, already present {}, invalid {}",
        report.imported,
        report.already_present,
        report.invalid.len()
    );
    Ok(if report.invalid.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Appends every valid line of a JSON-lines file as an imported event; a bad line is reported
/// by number and nothing of it is stored. IDs already in the log are skipped.
pub async fn import_file(
    pool: &deadpool_postgres::Pool,
    file: &Path,
) -> anyhow::Result<ImportReport> {
    use crate::event_log::{append_batch, Delivery};
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut report = ImportReport::default();
    let mut batch: Vec<Delivery> = Vec::new();
    let received_at = chrono::Utc::now();
    for (index, raw) in text.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.len() > IMPORT_LINE_BYTES_MAX {
            report.invalid.push((
                index + 1,
                format!("longer than {IMPORT_LINE_BYTES_MAX} bytes"),
            ));
            continue;
        }
        match Delivery::imported(bytes::Bytes::copy_from_slice(line), received_at) {
            Ok(delivery) => batch.push(delivery),
            Err(error) => report.invalid.push((index + 1, error.to_string())),
        }
        if batch.len() == IMPORT_BATCH_EVENTS {
            count(
                &mut report,
                &append_batch(pool, &batch.iter().collect::<Vec<_>>()).await?,
            );
            batch.clear();
        }
    }
    if !batch.is_empty() {
        count(
            &mut report,
            &append_batch(pool, &batch.iter().collect::<Vec<_>>()).await?,
        );
    }
    Ok(report)
}

fn count(report: &mut ImportReport, appended: &[crate::event_log::Appended]) {
    for a in appended {
        if a.duplicate {
            report.already_present += 1;
        } else {
            report.imported += 1;
        }
    }
}
