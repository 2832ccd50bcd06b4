//! Command line and environment: every setting is an environment variable and a flag
//! (`../shared/DESIGN.md`, Configuration). Parsing here turns strings into checked values; a
//! missing or malformed setting stops start-up with one line naming it, never its value.

use crate::reads::ReadFallback;
use crate::signature::{WebhookSecret, TOLERANCE_SECS_DEFAULT};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    Serve(ServeArgs),
    /// Apply schema migrations and exit.
    Migrate(DatabaseArgs),
    /// Rebuild read models from the log, print progress, exit.
    Rebuild(RebuildArgs),
    /// Check the log's hash chain; exit non-zero on damage.
    Verify(DatabaseArgs),
    /// Backfill events from a JSON-lines export of Stripe's Events API (stored as imported).
    Import(ImportArgs),
    /// Print a valid Stripe-Signature header for FILE's bytes.
    Sign(SignArgs),
    /// Sign and POST event files like Stripe would, and report each answer.
    Send(SendArgs),
    /// Print the OpenAPI document (the committed openapi.yaml is this output).
    Openapi,
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
    /// Log format: text or json.
    #[arg(long, env = "LEDGER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// A streaming replica's connection string for the read API; webhooks, the projector and
    /// admin routes stay on DATABASE_URL.
    #[arg(long, env = "LEDGER_READ_DATABASE_URL", hide_env_values = true)]
    pub read_database_url: Option<String>,
    /// What reads do while the replica is down: `primary` (read there) or `unavailable` (503).
    #[arg(long, env = "LEDGER_READ_FALLBACK", default_value = "primary")]
    pub read_fallback: String,
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
    /// `LEDGER_READ_DATABASE_URL`: the read API's replica, if any.
    pub read_database_url: Option<String>,
    /// `LEDGER_READ_FALLBACK`.
    pub read_fallback: ReadFallback,
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
        let listen = args
            .listen
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError {
                setting: "LEDGER_LISTEN",
                problem: "must be an address and port such as 127.0.0.1:3000",
            })?;
        let livemode = match args.livemode.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ConfigError {
                    setting: "LEDGER_LIVEMODE",
                    problem: "must be true or false",
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
            read_database_url,
            read_fallback,
        })
    }
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

fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["billing-ledger", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(serve) => Config::from_args(&serve),
            _ => unreachable!(),
        }
    }

    #[test]
    fn each_bad_setting_is_named_without_its_value() {
        let secret = "--webhook-secret=whsec_a,whsec_b";
        assert_eq!(serve(&[secret]).unwrap().webhook_secrets.len(), 2);
        let cases = [
            (
                vec!["--webhook-secret=sk_live_oops"],
                "STRIPE_WEBHOOK_SECRET",
            ),
            (
                vec![secret, "--tolerance-secs=abc"],
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
            ),
            (vec![secret, "--max-body-bytes=0"], "LEDGER_MAX_BODY_BYTES"),
            (vec![secret, "--listen=nowhere"], "LEDGER_LISTEN"),
            (vec![secret, "--livemode=maybe"], "LEDGER_LIVEMODE"),
            (
                vec![secret, "--read-database-url=host=x port=notaport"],
                "LEDGER_READ_DATABASE_URL",
            ),
            (
                vec![secret, "--read-fallback=maybe"],
                "LEDGER_READ_FALLBACK",
            ),
        ];
        for (args, setting) in cases {
            let error = serve(&args).unwrap_err();
            assert_eq!(error.setting, setting);
            assert!(!error.to_string().contains("sk_live_oops"));
        }
    }
}
