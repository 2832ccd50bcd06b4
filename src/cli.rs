//! The commands of the `billing-ledger` binary other than the HTTP service itself: each parses
//! its arguments, does one job, prints what happened and returns the exit code.

use crate::config::{Command, Config, LogFormat, RebuildArgs, SendArgs, SignArgs};
use crate::signature::{self, WebhookSecret};
use crate::{db, projector};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs one command.
pub async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let config = Config::from_args(&args)?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("LEDGER_LISTEN: cannot listen on {}", args.listen))?;
            let address = listener.local_addr()?;
            tracing::info!(%address, livemode = config.livemode, "billing-ledger listening");
            crate::run(config, listener, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => {
            let applied = db::migrate(&args.database_url).await?;
            println!("migrations applied: {applied}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild(args) => rebuild(args).await,
        Command::Sign(args) => sign(args),
        Command::Send(args) => send(args).await,
        Command::Openapi => {
            print!("{}", crate::openapi_yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Installs the global log subscriber (`RUST_LOG` filters, `info` by default). Logs go to
/// stderr, so a command's stdout is only its result.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
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
    db::migrate(url).await?;
    let pool = db::pool(url)?;
    let lock = db::connect(url).await?;
    if projector::try_lock(&lock).await? {
        // No service is projecting: rebuild here, holding the lock so none starts meanwhile.
        let rebuild_id = projector::request_rebuild(&pool)
            .await?
            .context("a rebuild is already queued; start `serve` to run it")?;
        projector::rebuild(&pool, args.livemode, rebuild_id, |p| {
            println!(
                "rebuild {rebuild_id}: {}/{} events",
                p.position_done, p.position_target
            );
        })
        .await?;
        println!("rebuild {rebuild_id}: done");
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
    let client = pool.get().await?;
    loop {
        let row = client
            .query_one(
                "SELECT status, position_done, position_target, error FROM rebuilds
                 WHERE rebuild_id = $1",
                &[&rebuild_id],
            )
            .await?;
        let status: String = row.get(0);
        let done: i64 = row.get(1);
        let target: Option<i64> = row.get(2);
        match status.as_str() {
            "done" => {
                println!("rebuild {rebuild_id}: done ({done} events)");
                return Ok(ExitCode::SUCCESS);
            }
            "failed" => {
                let error: Option<String> = row.get(3);
                println!(
                    "rebuild {rebuild_id}: failed: {}",
                    error.unwrap_or_default()
                );
                return Ok(ExitCode::FAILURE);
            }
            _ => println!(
                "rebuild {rebuild_id}: {status} {done}/{} events",
                target.unwrap_or(0)
            ),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
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
    println!("{}", signature::sign(&secret, timestamp, &body));
    Ok(ExitCode::SUCCESS)
}

/// Longest `send` waits for one answer.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let secret = parse_secret(&args.secret)?;
    let mut files = Vec::new();
    for path in &args.paths {
        collect_json(path, &mut files)?;
    }
    let client = reqwest::Client::builder().timeout(SEND_TIMEOUT).build()?;
    let (mut accepted, mut refused) = (0, 0);
    for file in &files {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let header = signature::sign(&secret, chrono::Utc::now().timestamp(), &body);
        let answer = client
            .post(&args.url)
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await;
        match answer {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                println!("{} {} {}", status.as_u16(), file.display(), text.trim());
                if status.is_success() {
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
            Err(error) => {
                println!("--- {} {error}", file.display());
                refused += 1;
            }
        }
    }
    println!("{accepted} accepted, {refused} refused");
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
