//! Command line and environment: every setting is an environment variable and a flag
//! (`../shared/DESIGN.md`, Configuration). Parsing here turns strings into checked values; a
//! missing or malformed setting stops start-up with one line naming it, never its value.

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
    Serve(Box<ServeArgs>),
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
    #[command(flatten)]
    pub platform: PlatformArgs,
}

/// Settings of what the platform reads and receives (feed, tenants, entitlements, outgoing
/// webhooks).
#[derive(Debug, Clone, Args)]
pub struct PlatformArgs {
    /// Bearer tokens allowed to read the change feed, tenants and entitlements (not finance
    /// data), comma-separated.
    #[arg(
        long,
        env = "LEDGER_PLATFORM_TOKENS",
        hide_env_values = true,
        default_value = ""
    )]
    pub platform_tokens: String,
    /// The plans file (TOML) mapping Stripe prices to plans and features.
    #[arg(long, env = "LEDGER_PLANS_FILE")]
    pub plans_file: Option<PathBuf>,
    /// Outgoing webhook endpoints from configuration: `URL=whsec_...` pairs, comma-separated
    /// (the secret as the Standard Webhooks specification shapes it).
    #[arg(
        long,
        env = "LEDGER_WEBHOOK_ENDPOINTS",
        hide_env_values = true,
        default_value = ""
    )]
    pub webhook_endpoints: String,
    /// Outgoing webhook retry delays after each failed attempt, seconds, comma-separated.
    #[arg(long, env = "LEDGER_WEBHOOK_RETRY_SCHEDULE", default_value = RETRY_SCHEDULE_DEFAULT)]
    pub webhook_retry_schedule: String,
}

/// Default `LEDGER_WEBHOOK_RETRY_SCHEDULE`: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
/// 10 h (the Standard Webhooks specification's suggestion, as Svix retries).
pub const RETRY_SCHEDULE_DEFAULT: &str = "0,5,300,1800,7200,18000,36000,36000";

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
    /// Feed, tenants, entitlements and outgoing webhooks.
    pub platform: PlatformConfig,
}

/// The platform's settings, checked. Its `Debug` shows neither tokens nor signing secrets.
#[derive(Clone, Default)]
pub struct PlatformConfig {
    pub platform_tokens: Vec<String>,
    pub plans_file: Option<PathBuf>,
    /// Endpoints from configuration: `(url, secret)`.
    pub webhook_endpoints: Vec<(String, String)>,
    /// Delay before each retry of a failed outgoing message (empty: the default schedule).
    pub retry_schedule: Vec<std::time::Duration>,
}

impl std::fmt::Debug for PlatformConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self
            .webhook_endpoints
            .iter()
            .map(|(url, _)| url.as_str())
            .collect();
        f.debug_struct("PlatformConfig")
            .field(
                "platform_tokens",
                &format_args!("{} redacted", self.platform_tokens.len()),
            )
            .field("plans_file", &self.plans_file)
            .field("webhook_endpoints", &urls)
            .field("retry_schedule", &self.retry_schedule)
            .finish()
    }
}

impl PlatformConfig {
    /// Checks the platform's settings.
    pub fn from_args(args: &PlatformArgs) -> Result<PlatformConfig, ConfigError> {
        let retry_schedule = parse_schedule(&args.webhook_retry_schedule).ok_or(ConfigError {
            setting: "LEDGER_WEBHOOK_RETRY_SCHEDULE",
            problem: "must be one or more whole numbers of seconds, comma-separated",
        })?;
        let webhook_endpoints = split_list(&args.webhook_endpoints)
            .map(|pair| {
                let (url, secret) = pair.split_once('=').ok_or(ConfigError {
                    setting: "LEDGER_WEBHOOK_ENDPOINTS",
                    problem: "each endpoint must be URL=whsec_... ",
                })?;
                let valid = (url.starts_with("http://") || url.starts_with("https://"))
                    && crate::outbox::signing::SigningSecret::parse(secret).is_ok();
                if !valid {
                    return Err(ConfigError {
                        setting: "LEDGER_WEBHOOK_ENDPOINTS",
                        problem:
                            "each endpoint must be an http(s) URL, '=', and a whsec_ base64 secret",
                    });
                }
                Ok((url.to_owned(), secret.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PlatformConfig {
            platform_tokens: split_list(&args.platform_tokens)
                .map(str::to_owned)
                .collect(),
            plans_file: args.plans_file.clone(),
            webhook_endpoints,
            retry_schedule,
        })
    }

    /// The retry schedule in force.
    pub fn retry_schedule(&self) -> Vec<std::time::Duration> {
        if self.retry_schedule.is_empty() {
            parse_schedule(RETRY_SCHEDULE_DEFAULT).expect("the default schedule parses")
        } else {
            self.retry_schedule.clone()
        }
    }
}

/// Seconds, comma-separated (fractions allowed, for tests), into durations.
fn parse_schedule(raw: &str) -> Option<Vec<std::time::Duration>> {
    let delays: Option<Vec<_>> = split_list(raw)
        .map(|s| {
            s.parse::<f64>()
                .ok()
                .filter(|d| d.is_finite() && *d >= 0.0)
                .map(std::time::Duration::from_secs_f64)
        })
        .collect();
    delays.filter(|d| !d.is_empty())
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
            platform: PlatformConfig::from_args(&args.platform)?,
        })
    }
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
        ];
        for (args, setting) in cases {
            let error = serve(&args).unwrap_err();
            assert_eq!(error.setting, setting);
            assert!(!error.to_string().contains("sk_live_oops"));
        }
    }

    #[test]
    fn platform_settings_are_checked_and_never_shown() {
        let secret = "--webhook-secret=whsec_a";
        let hook =
            "--webhook-endpoints=http://127.0.0.1:9/hook=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let config = serve(&[secret, hook, "--platform-tokens=tok_platform"]).unwrap();
        assert_eq!(config.platform.webhook_endpoints.len(), 1);
        assert_eq!(config.platform.retry_schedule().len(), 8);
        let shown = format!("{:?}", config.platform);
        assert!(
            !shown.contains("MfKQ") && !shown.contains("tok_platform"),
            "{shown}"
        );
        let cases = [
            (
                "--webhook-endpoints=http://x/hook",
                "LEDGER_WEBHOOK_ENDPOINTS",
            ),
            (
                "--webhook-endpoints=ftp://x=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "LEDGER_WEBHOOK_ENDPOINTS",
            ),
            (
                "--webhook-retry-schedule=soon",
                "LEDGER_WEBHOOK_RETRY_SCHEDULE",
            ),
        ];
        for (arg, setting) in cases {
            assert_eq!(serve(&[secret, arg]).unwrap_err().setting, setting, "{arg}");
        }
    }
}
