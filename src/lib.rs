//! billing-ledger: Stripe webhooks in, an immutable event log in PostgreSQL, read models out.
//!
//! Codemap:
//! - [`signature`]: Stripe's signature scheme, over raw bytes.
//! - [`event_log`]: appending events once by ID, recording every delivery.
//! - [`projector`]: electing one projector, tailing the log, rebuilding.
//! - [`store`]: the storage layer, one module per group of tables and the only SQL on them:
//!   the log's readers ([`store::log`]), the projector's bookkeeping ([`store::projector`]),
//!   the read models ([`store::read_models`], [`store::money`], [`store::revenue`]).
//! - [`feed`]: reading the change feed the database records at each read-model commit;
//!   [`entitlements`]: the plans file and what each tenant may use.
//! - [`outbox`]: outgoing webhooks (Standard Webhooks) driven from the feed.
//! - [`reads`]: where the read API reads (the primary or a replica) and what it reflects.
//! - [`http`]: routes, auth, errors; [`cli`]: the other commands; [`config`]: settings.
//! - [`console`]: the finance console's HTML pages over the same handlers.
//!
//! [`run`] starts exactly what `billing-ledger serve` starts, on a listener the caller bound, so
//! tests run the production service on `127.0.0.1:0`.

pub mod chain;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod entitlements;
pub mod event_log;
pub mod feed;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod projector;
pub mod reads;
pub mod reconcile;
pub mod signature;
pub mod store;
pub mod stripe;
pub mod timeline;
pub mod views;

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
    if let Some(path) = &config.platform.plans_file {
        let reloaded = entitlements::reload(&pool, path).await?;
        tracing::info!(
            plans = reloaded.plans,
            changed = reloaded.changed,
            "plans file loaded"
        );
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    let watcher = feed::Watcher::start(config.database_url.clone(), stop.clone());
    outbox::store::sync_config(&pool, &config.platform.webhook_endpoints).await?;
    let metrics = metrics::Metrics::default();
    let dispatcher = tokio::spawn(outbox::dispatcher::run(
        pool.clone(),
        outbox::dispatcher::Settings {
            database_url: config.database_url.clone(),
            instance_id: config.instance_id.clone(),
            retry_schedule: config.platform.retry_schedule(),
            metrics: metrics.outbox.clone(),
        },
        watcher.clone(),
        stop.clone(),
    ));
    if let Some(path) = config.platform.plans_file.clone() {
        tokio::spawn(reload_on_hangup(pool.clone(), path, stop.clone()));
    }
    let settings = projector::Settings {
        database_url: config.database_url.clone(),
        livemode: config.livemode,
        instance_id: config.instance_id.clone(),
        rebuild_stale: config.rebuild_stale,
        snapshot_every_events: config.snapshot_every_events,
        standby: config.projector_standby,
    };
    let projector = tokio::spawn(projector::run(
        pool.clone(),
        settings,
        wake.clone(),
        stop.clone(),
    ));
    let reconcile = config.reconcile.clone().map(|settings| {
        tokio::spawn(reconcile::service::run(
            reconcile::service::Runner {
                pool: pool.clone(),
                database_url: config.database_url.clone(),
                instance_id: config.instance_id.clone(),
                settings,
                metrics: metrics.reconcile.clone(),
            },
            stop.clone(),
        ))
    });
    let replica = match &config.read_database_url {
        Some(url) => Some(db::pool(url)?),
        None => None,
    };
    let state = Arc::new(http::AppState {
        appender: event_log::Appender::start(pool.clone()),
        metrics,
        reads: reads::ReadPools::new(pool.clone(), replica, config.read_fallback),
        config,
        pool,
        wake,
        watcher,
    });
    let limits = state.config.connections;
    let address = listener.local_addr()?;
    let acceptor = http::connections::GuardedAcceptor::new(
        poem::listener::TcpAcceptor::from_tokio(listener)?,
        limits,
        state.metrics.connections(),
    );
    // Logged once the database is migrated and the service is about to accept.
    tracing::info!(%address, livemode = state.config.livemode,
        max_connections = limits.max_connections, "billing-ledger listening");
    let served = poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(http::app(state), shutdown, Some(SHUTDOWN_GRACE))
        .await;
    stop.cancel();
    projector.await.ok();
    if let Some(reconcile) = reconcile {
        reconcile.await.ok();
    }
    dispatcher.await.ok();
    tracing::info!("stopped");
    Ok(served?)
}

/// Reloads the plans file at each SIGHUP until `stop`; a file that does not check is logged
/// and the plans in force stay.
async fn reload_on_hangup(
    pool: deadpool_postgres::Pool,
    path: std::path::PathBuf,
    stop: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload plans by the admin route");
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            () = stop.cancelled() => return,
        }
        match entitlements::reload(&pool, &path).await {
            Ok(r) => tracing::info!(plans = r.plans, changed = r.changed, "plans file reloaded"),
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "plans reload refused; the plans in force stay"
            ),
        }
    }
}

/// The OpenAPI document as YAML (what `billing-ledger openapi` prints and `openapi.yaml` holds).
pub fn openapi_yaml() -> String {
    // Building the service needs a state; nothing here connects to a database.
    let pool = db::pool(config::DATABASE_URL_DEFAULT).expect("the default URL parses");
    let config = Config {
        max_body_bytes: 1,
        ..Config::local("", Vec::new())
    };
    let state = Arc::new(http::AppState {
        appender: event_log::Appender::detached(),
        metrics: metrics::Metrics::default(),
        reads: reads::ReadPools::new(pool.clone(), None, reads::ReadFallback::Primary),
        config,
        pool,
        wake: Arc::default(),
        watcher: feed::Watcher::detached(),
    });
    http::service(state).spec_yaml()
}
