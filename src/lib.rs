//! billing-ledger: Stripe webhooks in, an immutable event log in PostgreSQL, read models out.
//!
//! Codemap:
//! - [`signature`]: Stripe's signature scheme, over raw bytes.
//! - [`event_log`]: appending events once by ID, recording every delivery.
//! - [`projector`]: electing one projector, tailing the log, rebuilding.
//! - [`read_models`]: writing the rows the pure fold (`projections/`) renders.
//! - [`reads`]: where the read API reads (the primary or a replica) and what it reflects.
//! - [`http`]: routes, auth, errors; [`cli`]: the other commands; [`config`]: settings.
//!
//! [`run`] starts exactly what `billing-ledger serve` starts, on a listener the caller bound, so
//! tests run the production service on `127.0.0.1:0`.

pub mod chain;
pub mod cli;
pub mod config;
pub mod db;
pub mod event_log;
pub mod http;
pub mod metrics;
pub mod projector;
pub mod read_models;
pub mod reads;
pub mod signature;
pub mod timeline;

use config::Config;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Applies migrations, starts the appender and the projector, and serves HTTP on `listener`
/// until `shutdown` completes; then finishes requests in flight (up to [`SHUTDOWN_GRACE`]) and
/// stops the projector, releasing its lock. Errors: the database is unreachable at start, or
/// the listener fails.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    db::migrate(&config.database_url).await?;
    let pool = db::pool(&config.database_url)?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    let settings = projector::Settings {
        database_url: config.database_url.clone(),
        livemode: config.livemode,
        instance_id: config.instance_id.clone(),
        rebuild_stale: config.rebuild_stale,
    };
    let projector = tokio::spawn(projector::run(
        pool.clone(),
        settings,
        wake.clone(),
        stop.clone(),
    ));
    let replica = match &config.read_database_url {
        Some(url) => Some(db::pool(url)?),
        None => None,
    };
    let state = Arc::new(http::AppState {
        appender: event_log::Appender::start(pool.clone()),
        metrics: metrics::Metrics::default(),
        reads: reads::ReadPools::new(pool.clone(), replica, config.read_fallback),
        config,
        pool,
        wake,
    });
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
    let served = poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(http::app(state), shutdown, Some(SHUTDOWN_GRACE))
        .await;
    stop.cancel();
    projector.await.ok();
    tracing::info!("stopped");
    Ok(served?)
}

/// The OpenAPI document as YAML (what `billing-ledger openapi` prints and `openapi.yaml` holds).
pub fn openapi_yaml() -> String {
    // Building the service needs a state; nothing here connects to a database.
    let pool = db::pool(config::DATABASE_URL_DEFAULT).expect("the default URL parses");
    let config = Config {
        database_url: String::new(),
        listen: ([127, 0, 0, 1], 0).into(),
        webhook_secrets: Vec::new(),
        tolerance_secs: 0,
        finance_tokens: Vec::new(),
        admin_tokens: Vec::new(),
        max_body_bytes: 1,
        livemode: false,
        instance_id: String::new(),
        rebuild_stale: false,
        read_database_url: None,
        read_fallback: reads::ReadFallback::Primary,
    };
    let state = Arc::new(http::AppState {
        appender: event_log::Appender::detached(),
        metrics: metrics::Metrics::default(),
        reads: reads::ReadPools::new(pool.clone(), None, reads::ReadFallback::Primary),
        config,
        pool,
        wake: Arc::default(),
    });
    http::service(state).spec_yaml()
}
