//! The platform's settings: the change feed's and tenants' tokens, the plans file, outgoing
//! webhook endpoints and their retry schedule.

use super::{split_list, ConfigError};
use clap::Args;
use std::path::PathBuf;

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
