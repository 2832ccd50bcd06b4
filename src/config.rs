//! Command line and environment: every setting is an environment variable and a flag
//! (`../shared/DESIGN.md`, Configuration). Parsing here turns strings into checked values; a
//! missing or malformed setting stops start-up with one line naming it, never its value.

use crate::http::connections::{self, ConnectionLimits};
use crate::reads::ReadFallback;
use crate::reconcile::service::{Settings as ReconcileSettings, SETTLE_DEFAULT, SETTLE_MAX};
use crate::signature::{WebhookSecret, TOLERANCE_SECS_DEFAULT};
use crate::stripe::events_api::{ApiSettings, SecretKey, API_BASE_DEFAULT};
use clap::{Args, Parser, Subcommand};

mod platform;
pub use platform::{PlatformArgs, PlatformConfig, RETRY_SCHEDULE_DEFAULT};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default `DATABASE_URL`: the local cluster that `./dev` provisions under `.data/`.
pub const DATABASE_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:54329/billing_ledger";

/// Default `LEDGER_MAX_BODY_BYTES`: 1 MiB. Stripe events are a few KiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1_048_576;

/// Default `LEDGER_LISTEN`.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:3000";

#[derive(Debug, Parser)]
#[command(
    name = "billing-ledger",
    version,
    about = "An event-sourced ledger of Stripe billing webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (and the projector, on the instance holding its lock).
    Serve(Box<ServeArgs>),
    /// Apply schema migrations to an existing database and exit (only `serve` creates one).
    Migrate(DatabaseArgs),
    /// Rebuild read models from the log, print progress, exit.
    Rebuild(RebuildArgs),
    /// Check the log's hash chain; exit non-zero on damage (or on a database without the schema).
    Verify(DatabaseArgs),
    /// Backfill events from a JSON-lines export of Stripe's Events API (stored as imported).
    Import(ImportArgs),
    /// Print the value of a valid Stripe-Signature header for FILE's bytes (`t=...,v1=...`);
    /// with --header, the whole header line.
    Sign(SignArgs),
    /// Sign and POST event files like Stripe would, and report each answer.
    Send(SendArgs),
    /// Print the OpenAPI document (the committed openapi.yaml is this output).
    Openapi,
    /// List Stripe's events for a window with STRIPE_SECRET_KEY and append those the log lacks.
    Reconcile(ReconcileArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string.
    #[arg(long, env = "DATABASE_URL", default_value = DATABASE_URL_DEFAULT, hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// One or more whsec_... secrets, comma-separated; any may match (rotation).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Largest accepted age (and future skew) of the signature timestamp, seconds.
    #[arg(long, env = "STRIPE_WEBHOOK_TOLERANCE_SECS", default_value_t = TOLERANCE_SECS_DEFAULT.to_string())]
    pub tolerance_secs: String,
    /// Listen address.
    #[arg(long, env = "LEDGER_LISTEN", default_value = LISTEN_DEFAULT)]
    pub listen: String,
    /// Bearer tokens allowed to read, comma-separated.
    #[arg(
        long,
        env = "LEDGER_FINANCE_TOKENS",
        hide_env_values = true,
        default_value = ""
    )]
    pub finance_tokens: String,
    /// Bearer tokens allowed to read and administer, comma-separated.
    #[arg(
        long,
        env = "LEDGER_ADMIN_TOKENS",
        hide_env_values = true,
        default_value = ""
    )]
    pub admin_tokens: String,
    /// Largest accepted webhook body, bytes.
    #[arg(long, env = "LEDGER_MAX_BODY_BYTES", default_value_t = BODY_BYTES_MAX_DEFAULT.to_string())]
    pub max_body_bytes: String,
    /// Which mode's events the read models take: true (live) or false (test).
    #[arg(long, env = "LEDGER_LIVEMODE", default_value = "false")]
    pub livemode: String,
    /// On election, rebuild the read models when they come from another fold version.
    #[arg(long)]
    pub rebuild_stale: bool,
    /// Events the projector folds between two snapshots of its fold state (a new leader
    /// resumes from the latest).
    #[arg(long, env = "LEDGER_SNAPSHOT_EVERY_EVENTS",
        default_value_t = crate::projector::SNAPSHOT_EVERY_EVENTS.to_string())]
    pub snapshot_every_events: String,
    /// Whether a follower keeps a warm standby of the fold state (true or false): elected, it
    /// goes live after folding the last second's events instead of loading a snapshot.
    #[arg(long, env = "LEDGER_PROJECTOR_STANDBY", default_value = "true")]
    pub projector_standby: String,
    /// Log format: text or json.
    #[arg(long, env = "LEDGER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub platform: PlatformArgs,
    /// Key (32 bytes or more) the console's session cookies are signed with; the same on
    /// every instance behind one address. Unset: a random key per process.
    #[arg(long, env = "LEDGER_CONSOLE_SESSION_KEY", hide_env_values = true)]
    pub console_session_key: Option<String>,
    /// Most client connections open at once (lowered to fit the open-file limit).
    #[arg(long, env = "LEDGER_MAX_CONNECTIONS", default_value_t = connections::MAX_CONNECTIONS_DEFAULT.to_string())]
    pub max_connections: String,
    /// Longest a client may take to send a request's line and headers, seconds.
    #[arg(long, env = "LEDGER_HEADER_READ_TIMEOUT_SECS", default_value_t = connections::HEADER_READ_TIMEOUT_DEFAULT.as_secs().to_string())]
    pub header_read_timeout_secs: String,
    /// Longest a connection may wait idle for its next request, seconds.
    #[arg(long, env = "LEDGER_IDLE_TIMEOUT_SECS", default_value_t = connections::IDLE_TIMEOUT_DEFAULT.as_secs().to_string())]
    pub idle_timeout_secs: String,
    #[command(flatten)]
    pub stripe: StripeApiArgs,
    /// Reconcile with Stripe's Events API this often (15m, 1h, ...), on one instance at a
    /// time; off when empty or `off`.
    #[arg(long, env = "LEDGER_RECONCILE_INTERVAL", default_value = "")]
    pub reconcile_interval: String,
    /// The timer leaves events younger than this to their webhook (0s to fetch at once).
    #[arg(long, env = "LEDGER_RECONCILE_SETTLE", default_value = SETTLE_DEFAULT)]
    pub reconcile_settle: String,
    /// A streaming replica's connection string for the read API; webhooks, the projector and
    /// admin routes stay on DATABASE_URL.
    #[arg(long, env = "LEDGER_READ_DATABASE_URL", hide_env_values = true)]
    pub read_database_url: Option<String>,
    /// What reads do while the replica is down: `primary` (read there) or `unavailable` (503).
    #[arg(long, env = "LEDGER_READ_FALLBACK", default_value = "primary")]
    pub read_fallback: String,
}

/// How to reach Stripe's API (reconciliation).
#[derive(Debug, Clone, Args)]
pub struct StripeApiArgs {
    /// Secret (sk_...) or restricted (rk_...) key with read access to Events.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    /// Base URL of Stripe's API (an emulator or a proxy).
    #[arg(long, env = "STRIPE_API_BASE", default_value = API_BASE_DEFAULT)]
    pub stripe_api_base: String,
    /// Connected account (acct_...) whose events to list, sent as Stripe-Account.
    #[arg(long, env = "STRIPE_ACCOUNT")]
    pub stripe_account: Option<String>,
}

impl StripeApiArgs {
    /// Checks the settings; the key is required.
    pub fn settings(&self) -> Result<ApiSettings, ConfigError> {
        let key = SecretKey::parse(self.stripe_secret_key.as_deref().unwrap_or("")).map_err(
            |problem| ConfigError {
                setting: "STRIPE_SECRET_KEY",
                problem,
            },
        )?;
        let base = self.stripe_api_base.trim().trim_end_matches('/');
        if !api_base_is_plain(base) {
            return Err(ConfigError {
                setting: "STRIPE_API_BASE",
                problem: "must be an http:// or https:// URL with a host and no query, fragment \
                          or credentials, such as https://api.stripe.com",
            });
        }
        let account = match self.stripe_account.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id)
                if id.starts_with("acct_")
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Some(id.to_owned())
            }
            Some(_) => {
                return Err(ConfigError {
                    setting: "STRIPE_ACCOUNT",
                    problem: "must be a connected account ID (acct_...)",
                })
            }
        };
        Ok(ApiSettings {
            base: base.to_owned(),
            key,
            account,
        })
    }
}

/// Whether `base` is an `http(s)://host[:port][/path]` URL: parsable, with a host, and no
/// query, fragment or user info (which would garble or leak through every request's URL).
fn api_base_is_plain(base: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty())
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && !base.contains(['?', '#'])
}

/// Shortest `LEDGER_RECONCILE_INTERVAL`.
pub const RECONCILE_INTERVAL_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub stripe: StripeApiArgs,
    /// Start of the window of Stripe's `created`: an RFC 3339 time or a duration before now
    /// (72h if absent).
    #[arg(long)]
    pub since: Option<String>,
    /// End of the window (inclusive): an RFC 3339 time or a duration before now; now if absent.
    #[arg(long)]
    pub until: Option<String>,
    /// Compare and report only; append nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The projection to rebuild; `billing` (the one fold behind every read model).
    #[arg(long)]
    pub projection: Option<String>,
    /// Which mode's events the read models take (must match the running service's).
    #[arg(long, env = "LEDGER_LIVEMODE", default_value_t = false, action = clap::ArgAction::Set)]
    pub livemode: bool,
    /// Fold the whole log and print what a rebuild would change, swapping nothing.
    #[arg(long)]
    pub preview: bool,
    /// With --preview: print the rebuild and its diff as JSON (the admin API's
    /// `GET /api/billing/admin/rebuilds/{rebuild_id}` shape) instead of a summary.
    #[arg(long, requires = "preview")]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// One Stripe event object per line.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// The endpoint secret (whsec_...).
    #[arg(long)]
    pub secret: String,
    /// Unix seconds to sign at; now when absent.
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Print the whole header line (`Stripe-Signature: t=...,v1=...`), as curl's -H takes it.
    #[arg(long)]
    pub header: bool,
    /// The file whose exact bytes are signed.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The webhook URL, e.g. http://127.0.0.1:3000/api/billing/webhook.
    #[arg(long)]
    pub url: String,
    /// The endpoint secret (whsec_...).
    #[arg(long)]
    pub secret: String,
    /// Retry a delivery that failed (no answer, 408, 429 or 5xx), re-signed each time, with
    /// exponential backoff, as Stripe does.
    #[arg(long)]
    pub retry: bool,
    /// With --retry, how long to keep retrying one file, seconds.
    #[arg(long, default_value_t = 60)]
    pub retry_for_secs: u64,
    /// Event files, or directories searched recursively for *.json files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Largest accepted `STRIPE_WEBHOOK_TOLERANCE_SECS`: one day. Stripe signs every retry anew,
/// so a larger window only widens replay.
pub const TOLERANCE_SECS_MAX: u64 = 86_400;

/// Everything `serve` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub webhook_secrets: Vec<WebhookSecret>,
    pub tolerance_secs: u64,
    pub finance_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
    pub max_body_bytes: usize,
    pub livemode: bool,
    /// A fresh ID per process: who holds the projector (`projections.owner`).
    pub instance_id: String,
    pub rebuild_stale: bool,
    /// `LEDGER_SNAPSHOT_EVERY_EVENTS`.
    pub snapshot_every_events: i64,
    /// `LEDGER_PROJECTOR_STANDBY`: followers keep a warm standby of the fold state.
    pub projector_standby: bool,
    /// `LEDGER_READ_DATABASE_URL`: the read API's replica, if any.
    pub read_database_url: Option<String>,
    /// `LEDGER_READ_FALLBACK`.
    pub read_fallback: ReadFallback,
    /// The reconciliation timer, when `LEDGER_RECONCILE_INTERVAL` is set.
    pub reconcile: Option<ReconcileSettings>,
    /// Client connection limits (`http::connections`).
    pub connections: ConnectionLimits,
    /// `LEDGER_CONSOLE_SESSION_KEY`, checked; `None`: a random key per process.
    pub console_session_key: Option<String>,
    /// Feed, tenants, entitlements and outgoing webhooks.
    pub platform: PlatformConfig,
}

impl Config {
    /// A configuration with every optional setting at its default, for code that builds one
    /// in-process (tests, benchmarks, the OpenAPI document): listening on `127.0.0.1:0` (the
    /// caller passes its own listener to [`crate::run`]), no tokens, test mode, a fresh
    /// instance ID. Set the rest with struct update syntax.
    pub fn local(database_url: &str, webhook_secrets: Vec<WebhookSecret>) -> Config {
        Config {
            database_url: database_url.to_owned(),
            listen: ([127, 0, 0, 1], 0).into(),
            webhook_secrets,
            tolerance_secs: TOLERANCE_SECS_DEFAULT,
            finance_tokens: Vec::new(),
            admin_tokens: Vec::new(),
            max_body_bytes: BODY_BYTES_MAX_DEFAULT,
            livemode: false,
            instance_id: uuid::Uuid::new_v4().to_string(),
            rebuild_stale: false,
            snapshot_every_events: crate::projector::SNAPSHOT_EVERY_EVENTS,
            projector_standby: true,
            read_database_url: None,
            read_fallback: ReadFallback::Primary,
            reconcile: None,
            connections: ConnectionLimits::default(),
            console_session_key: None,
            platform: PlatformConfig::default(),
        }
    }
}

/// A setting that stops start-up; the message names the setting, never its value.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: &'static str,
}

impl Config {
    /// Checks `serve`'s settings.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        let raw = args.webhook_secret.as_deref().unwrap_or("");
        let webhook_secrets = split_list(raw)
            .map(|s| {
                WebhookSecret::parse(s).map_err(|problem| ConfigError {
                    setting: "STRIPE_WEBHOOK_SECRET",
                    problem,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if webhook_secrets.is_empty() {
            return Err(ConfigError {
                setting: "STRIPE_WEBHOOK_SECRET",
                problem: "required: one or more whsec_... secrets, comma-separated",
            });
        }
        let tolerance_secs = args
            .tolerance_secs
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|t| *t <= TOLERANCE_SECS_MAX)
            .ok_or(ConfigError {
                setting: "STRIPE_WEBHOOK_TOLERANCE_SECS",
                problem: "must be a whole number of seconds from 0 to 86400",
            })?;
        let max_body_bytes = args
            .max_body_bytes
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|b| *b > 0)
            .ok_or(ConfigError {
                setting: "LEDGER_MAX_BODY_BYTES",
                problem: "must be a positive whole number of bytes",
            })?;
        let snapshot_every_events = args
            .snapshot_every_events
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(ConfigError {
                setting: "LEDGER_SNAPSHOT_EVERY_EVENTS",
                problem: "must be a positive whole number of events",
            })?;
        let listen = args
            .listen
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError {
                setting: "LEDGER_LISTEN",
                problem: "must be an address and port such as 127.0.0.1:3000",
            })?;
        let livemode = flag(&args.livemode, "LEDGER_LIVEMODE")?;
        let projector_standby = flag(&args.projector_standby, "LEDGER_PROJECTOR_STANDBY")?;
        let console_session_key = match args.console_session_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(key) if key.len() >= crate::console::session::SESSION_KEY_BYTES_MIN => {
                Some(key.to_owned())
            }
            Some(_) => {
                return Err(ConfigError {
                    setting: "LEDGER_CONSOLE_SESSION_KEY",
                    problem: "must be at least 32 bytes (for example: openssl rand -hex 32)",
                })
            }
        };
        let (read_database_url, read_fallback) = read_settings(args)?;
        Ok(Config {
            database_url: args.database.database_url.clone(),
            listen,
            webhook_secrets,
            tolerance_secs,
            finance_tokens: split_list(&args.finance_tokens)
                .map(str::to_owned)
                .collect(),
            admin_tokens: split_list(&args.admin_tokens).map(str::to_owned).collect(),
            max_body_bytes,
            livemode,
            instance_id: uuid::Uuid::new_v4().to_string(),
            rebuild_stale: args.rebuild_stale,
            snapshot_every_events,
            projector_standby,
            reconcile: reconcile_settings(args)?,
            connections: connection_limits(args)?,
            console_session_key,
            platform: PlatformConfig::from_args(&args.platform)?,
            read_database_url,
            read_fallback,
        })
    }
}

/// The reconciliation timer's settings: `None` when the interval is unset; the key is then
/// required.
fn reconcile_settings(args: &ServeArgs) -> Result<Option<ReconcileSettings>, ConfigError> {
    let raw = args.reconcile_interval.trim();
    if raw.is_empty() || raw == "off" {
        return Ok(None);
    }
    let interval = humantime::parse_duration(raw)
        .ok()
        .filter(|i| *i >= RECONCILE_INTERVAL_MIN)
        .ok_or(ConfigError {
            setting: "LEDGER_RECONCILE_INTERVAL",
            problem: "must be a duration of at least 1s, such as 15m or 1h, or off",
        })?;
    let settle = humantime::parse_duration(args.reconcile_settle.trim())
        .ok()
        .filter(|settle| *settle <= SETTLE_MAX)
        .ok_or(ConfigError {
            setting: "LEDGER_RECONCILE_SETTLE",
            problem: "must be a duration of at most 1d, such as 5m or 0s",
        })?;
    let api = args
        .stripe
        .settings()
        .map_err(|error| match error.setting {
            "STRIPE_SECRET_KEY" => ConfigError {
                setting: "STRIPE_SECRET_KEY",
                problem: "required when LEDGER_RECONCILE_INTERVAL is set: a secret (sk_...) or \
                      restricted (rk_...) key with read access to Events",
            },
            _ => error,
        })?;
    Ok(Some(ReconcileSettings {
        interval,
        settle,
        api,
    }))
}

/// Largest accepted connection timeout, seconds: one hour.
pub const CONNECTION_TIMEOUT_SECS_MAX: u64 = 3_600;

/// Checks the connection limits; the cap is lowered to fit the open-file limit.
fn connection_limits(args: &ServeArgs) -> Result<ConnectionLimits, ConfigError> {
    let seconds = |raw: &str, setting: &'static str| {
        raw.trim()
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=CONNECTION_TIMEOUT_SECS_MAX).contains(s))
            .map(std::time::Duration::from_secs)
            .ok_or(ConfigError {
                setting,
                problem: "must be a whole number of seconds from 1 to 3600",
            })
    };
    let max_connections = args
        .max_connections
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(ConfigError {
            setting: "LEDGER_MAX_CONNECTIONS",
            problem: "must be a positive whole number",
        })?;
    Ok(ConnectionLimits {
        max_connections: connections::fit_to_files(max_connections),
        header_read_timeout: seconds(
            &args.header_read_timeout_secs,
            "LEDGER_HEADER_READ_TIMEOUT_SECS",
        )?,
        idle_timeout: seconds(&args.idle_timeout_secs, "LEDGER_IDLE_TIMEOUT_SECS")?,
    })
}

/// `LEDGER_READ_DATABASE_URL` (empty means none) and `LEDGER_READ_FALLBACK`, checked.
fn read_settings(args: &ServeArgs) -> Result<(Option<String>, ReadFallback), ConfigError> {
    let url = args
        .read_database_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty());
    if url.is_some_and(|url| url.parse::<tokio_postgres::Config>().is_err()) {
        return Err(ConfigError {
            setting: "LEDGER_READ_DATABASE_URL",
            problem: "not a valid PostgreSQL connection string",
        });
    }
    let fallback = match args.read_fallback.trim() {
        "primary" => ReadFallback::Primary,
        "unavailable" => ReadFallback::Unavailable,
        _ => {
            return Err(ConfigError {
                setting: "LEDGER_READ_FALLBACK",
                problem: "must be primary or unavailable",
            })
        }
    };
    Ok((url.map(str::to_owned), fallback))
}

/// A true/false setting (`true`/`1`, `false`/`0`).
fn flag(value: &str, setting: &'static str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ConfigError {
            setting,
            problem: "must be true or false",
        }),
    }
}

pub(crate) fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
