//! PostgreSQL connections: the pool every request borrows from, dedicated connections for the
//! projector's lock, and migrations (`schema/`, applied with refinery).
//!
//! Limits are named here. A borrowed connection runs with a server-side `statement_timeout`, so a
//! request that gives up also stops its statement: nothing commits after we answered 503.

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;

/// Connections in each instance's pool.
pub const POOL_SIZE_MAX: usize = 16;
/// Longest wait for a free pooled connection.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait to open a new connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Server-side limit on any one statement from a pooled connection, milliseconds.
pub const STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// Server-side limit on waiting for a lock (the log head, say), milliseconds: an append
/// batch stuck behind a lock fails fast, well inside the webhook's answer deadline, so it can
/// never commit after its requests were answered 503.
pub const LOCK_TIMEOUT_MS: u64 = 2_000;

/// Advisory lock key held while migrating (any 64-bit constant unique to this service).
const MIGRATION_LOCK_KEY: i64 = 0x6269_6c6c_6d69_6772; // "billmigr"

mod embedded {
    refinery::embed_migrations!("schema");
}

/// Parses `DATABASE_URL`, adding the timeouts above. Errors name the setting only.
pub fn pg_config(database_url: &str) -> anyhow::Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(database_url)
        .map_err(|_| anyhow::anyhow!("DATABASE_URL: not a valid PostgreSQL connection string"))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    // Read routes prepare their statements once per connection (`prepare_cached`); PostgreSQL
    // may then switch a statement to a generic plan, chosen without the parameters' values
    // (a tenant with a million events and one with ten would share a plan). Custom plans keep
    // the saved parse and round trip, and plan each execution for its values.
    config.options(format!(
        "-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} \
         -c plan_cache_mode=force_custom_plan"
    ));
    if config.get_application_name().is_none() {
        config.application_name("billing-ledger");
    }
    Ok(config)
}

/// A connection taken out of the pool for bulk work on a whole table (a rebuild's streaming
/// read and copy, its index builds): no `statement_timeout`, since one statement may last
/// the whole rebuild. It is closed when dropped, so the lifted limit never returns to the pool.
pub async fn bulk_connection(pool: &Pool) -> anyhow::Result<deadpool_postgres::ClientWrapper> {
    let client = deadpool_postgres::Object::take(pool.get().await?);
    client.batch_execute("SET statement_timeout = 0").await?;
    Ok(client)
}

/// Builds the pool; connections open lazily, so this succeeds with the database down.
pub fn pool(database_url: &str) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        pg_config(database_url)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE_MAX)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the connection pool")
}

/// Opens a connection outside the pool (for the projector's session-level advisory lock, which
/// must live exactly as long as its connection). The driver task is spawned.
pub async fn connect(database_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = pg_config(database_url)?
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "dedicated connection closed");
        }
    });
    Ok(client)
}

/// Connects, creating the database first when the server answers that it does not exist
/// (SQLSTATE 3D000), so a fresh server needs no manual `createdb`.
async fn connect_or_create(database_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let config = pg_config(database_url)?;
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            return Ok(client);
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {}
        Err(e) => return Err(anyhow::Error::from(e).context("connecting to PostgreSQL")),
    }
    let name = config.get_dbname().unwrap_or("postgres").to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let (admin, connection) = maintenance
        .connect(NoTls)
        .await
        .context("connecting to the `postgres` database to create the ledger's")?;
    tokio::spawn(connection);
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match admin
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => tracing::info!(database = %name, "database created"),
        // Another instance created it first.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
        Err(e) => return Err(anyhow::Error::from(e).context("creating the database")),
    }
    connect(database_url).await
}

/// Opens a dedicated connection that LISTENs on `channel`; every notification (and the
/// connection's end) is signalled on the returned receiver. PostgreSQL delivers NOTIFY at the
/// notifying transaction's commit, so a wake-up always finds its rows visible.
pub async fn connect_listening(
    database_url: &str,
    channel: &str,
) -> anyhow::Result<(tokio_postgres::Client, tokio::sync::mpsc::Receiver<()>)> {
    use futures_util::StreamExt;
    let (client, mut connection) = pg_config(database_url)?
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    let (wake, woken) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    let _ = wake.try_send(());
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "listening connection closed");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .context("listening for appends")?;
    Ok((client, woken))
}

/// What [`migrate_as`] may find, and do, before applying migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provision {
    /// Create the database when it does not exist (`serve` only: a fresh server needs no
    /// manual `createdb`).
    CreateDatabase,
    /// The database must exist; it may be empty (`migrate`).
    ExistingDatabase,
    /// The database must exist and already hold this service's schema, perhaps an older
    /// version of it (`verify`, `rebuild`, `import`): a mistyped URL must not look like an
    /// empty, intact ledger.
    ExistingSchema,
}

/// Refinery's record of applied migrations; its presence marks a billing-ledger database.
const SCHEMA_HISTORY_TABLE: &str = "refinery_schema_history";

/// Applies pending migrations under an advisory lock, so instances starting together take turns.
/// Creates the database when it does not exist yet (what `serve` does).
pub async fn migrate(database_url: &str) -> anyhow::Result<usize> {
    migrate_as(database_url, Provision::CreateDatabase).await
}

/// [`migrate`], creating nothing beyond what `provision` allows. Errors: one line naming
/// `DATABASE_URL` when the database does not exist or (for [`Provision::ExistingSchema`])
/// holds no billing-ledger schema.
pub async fn migrate_as(database_url: &str, provision: Provision) -> anyhow::Result<usize> {
    let mut client = match provision {
        Provision::CreateDatabase => connect_or_create(database_url).await?,
        _ => connect_existing(database_url).await?,
    };
    if provision == Provision::ExistingSchema {
        let present: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&SCHEMA_HISTORY_TABLE],
            )
            .await
            .context("reading the database's schema")?
            .get(0);
        anyhow::ensure!(
            present,
            "DATABASE_URL: database {:?} holds no billing-ledger schema; check the URL, or run \
             `billing-ledger migrate` on it first",
            database_name(database_url)
        );
    }
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("applying migrations");
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .ok();
    Ok(report?.applied_migrations().len())
}

/// The database a URL names (PostgreSQL's default: the user's name).
fn database_name(database_url: &str) -> String {
    let config = pg_config(database_url).ok();
    let config = config.as_ref();
    config
        .and_then(|c| c.get_dbname().or(c.get_user()))
        .unwrap_or("postgres")
        .to_owned()
}

/// Connects to a database that must exist; a missing one is named in one line, never created.
async fn connect_existing(database_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    match pg_config(database_url)?.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            anyhow::bail!(
                "DATABASE_URL: database {:?} does not exist; check the URL (only \
                 `billing-ledger serve` creates its database)",
                database_name(database_url)
            )
        }
        Err(e) => Err(anyhow::Error::from(e).context("DATABASE_URL: cannot connect to PostgreSQL")),
    }
}

/// The number of migrations this build carries; `/readyz` compares it with the database.
pub fn migrations_expected() -> i32 {
    embedded::migrations::runner().get_migrations().len() as i32
}
