//! A client for Stripe's Events API (`GET /v1/events`), as Stripe asks clients to use it.
//!
//! - Base URL [`API_BASE_DEFAULT`] unless `STRIPE_API_BASE` names another (an emulator in tests,
//!   a proxy in production).
//! - Every request pins `Stripe-Version` to [`STRIPE_VERSION`]. The events' own `data` is
//!   rendered in the API version each event was created with (its `api_version`), whatever the
//!   header says (Stripe's API reference, "List all events"); the pin fixes the shape of the
//!   list envelope and of error answers, so an account upgrade cannot change what this client
//!   reads.
//! - `Stripe-Account` is sent when a connected account is configured (Connect).
//! - Timeouts on connecting and on each request; `429` and `5xx` answers and transport errors
//!   are retried with exponential backoff, waiting `Retry-After` seconds when Stripe sends it,
//!   and never when Stripe says `Stripe-Should-Retry: false`.
//! - The key travels only in the `Authorization` header, marked sensitive; [`SecretKey`]'s
//!   `Debug` redacts it, and every piece of an answer quoted in an error has the configured
//!   key, and anything shaped like a Stripe secret or restricted key, replaced ([`redact`]),
//!   and its control characters escaped.
//! - Redirects are not followed (a `3xx` is an error naming it: a listing from another host is
//!   not Stripe's), and an answer larger than [`ANSWER_BYTES_MAX`] is refused.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;

/// Stripe's API, the default `STRIPE_API_BASE`.
pub const API_BASE_DEFAULT: &str = "https://api.stripe.com";
/// The `Stripe-Version` every request pins: the version whose shapes the repository's own
/// fixtures use. It governs the list envelope and errors, not the events' `data` (see above).
pub const STRIPE_VERSION: &str = "2025-03-31.basil";
/// Events per page: Stripe's maximum `limit`.
pub const PAGE_EVENTS_MAX: u32 = 100;
/// Longest wait to open a connection to Stripe.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per request, the first included, before the request fails as unavailable.
pub const ATTEMPTS_MAX: u32 = 6;
/// First pause between attempts when Stripe gives no `Retry-After`; it doubles each time.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest pause between attempts without `Retry-After`.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured; a longer one is cut to this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// Longest piece of an error answer quoted in an error message, bytes.
const ERROR_QUOTE_BYTES_MAX: usize = 300;
/// Largest answer read, bytes (16 MiB; a full page of 100 events is rarely over 1 MiB).
pub const ANSWER_BYTES_MAX: usize = 16 << 20;

/// A Stripe secret (`sk_...`) or restricted (`rk_...`) key. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Checks the key's shape. Errors (naming the setting, never the value): empty, not
    /// `sk_`/`rk_`, or containing whitespace.
    pub fn parse(raw: &str) -> Result<SecretKey, &'static str> {
        let key = raw.trim();
        if key.is_empty() {
            return Err("required: a secret (sk_...) or restricted (rk_...) key");
        }
        let shaped = (key.starts_with("sk_") || key.starts_with("rk_"))
            && key.len() > 3
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !shaped {
            return Err("must be a secret (sk_...) or restricted (rk_...) key");
        }
        Ok(SecretKey(key.to_owned()))
    }

    /// `sk_test`, `rk_live`, ...: the key's kind and mode, safe to print.
    pub fn kind(&self) -> &str {
        let end = self.0.match_indices('_').nth(1).map_or(2, |(i, _)| i);
        &self.0[..end]
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}_<redacted>)", self.kind())
    }
}

/// Where and as whom to call Stripe (`STRIPE_SECRET_KEY`, `STRIPE_API_BASE`, `STRIPE_ACCOUNT`).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL without a trailing slash, e.g. `https://api.stripe.com`.
    pub base: String,
    pub key: SecretKey,
    /// A connected account (`acct_...`) to act as, sent as `Stripe-Account`.
    pub account: Option<String>,
}

/// Why a request to Stripe failed for good.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// 401: the key is wrong, revoked or of another account.
    #[error("Stripe refused STRIPE_SECRET_KEY (401 Unauthorized): {message}")]
    KeyRefused { message: String },
    /// 403: a restricted key without read access to events (or to the connected account).
    #[error(
        "STRIPE_SECRET_KEY may not list events (403 Forbidden): {message}; a restricted key \
         needs Read access to Events (see README, Reconciliation)"
    )]
    PermissionDenied { message: String },
    /// Another answer that retrying cannot change (400, 404, ...).
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Stripe did not answer usefully within [`ATTEMPTS_MAX`] attempts.
    #[error("Stripe is unavailable: {attempts} attempts failed, the last with: {last}")]
    Unavailable { attempts: u32, last: String },
    /// The answer was not a list of events, or it was larger than [`ANSWER_BYTES_MAX`].
    #[error("Stripe's answer is not a list of events: {0}")]
    Malformed(String),
    /// A `3xx`: redirects are not followed.
    #[error("Stripe's API answered with a redirect ({status}) to {location}; redirects are not followed (check STRIPE_API_BASE)")]
    Redirected { status: u16, location: String },
    /// The pages do not advance: a page repeats an event of an earlier one, or its cursor.
    #[error("Stripe's pagination loops: {0}")]
    PaginationLoop(String),
}

impl StripeApiError {
    /// Whether the key itself was refused (401 or 403), as opposed to Stripe failing.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            StripeApiError::KeyRefused { .. } | StripeApiError::PermissionDenied { .. }
        )
    }
}

/// The events Stripe created within a window, both ends inclusive (Stripe's `created`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// One page of `GET /v1/events`.
#[derive(Debug)]
pub struct EventPage {
    /// Each event exactly as the API rendered it inside the list.
    pub events: Vec<Bytes>,
    pub has_more: bool,
    /// The last event's ID: the next page's `starting_after`.
    pub last_id: Option<String>,
}

/// A client of the Events API. Cloning is cheap.
#[derive(Clone)]
pub struct EventsClient {
    http: reqwest::Client,
    settings: ApiSettings,
}

impl std::fmt::Debug for EventsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsClient")
            .field("settings", &self.settings)
            .finish()
    }
}

#[derive(Deserialize)]
struct ListBody<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    has_more: bool,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// What one attempt came to.
enum Attempt {
    Done(Bytes),
    Fatal(StripeApiError),
    /// Worth another attempt, after Stripe's `Retry-After` when it gave one.
    Retry {
        problem: String,
        retry_after: Option<Duration>,
    },
}

impl EventsClient {
    /// Builds the HTTP client (TLS with the bundled web PKI roots). Errors: the TLS back end
    /// cannot start.
    pub fn new(settings: ApiSettings) -> anyhow::Result<EventsClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("billing-ledger/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(EventsClient { http, settings })
    }

    /// The key's mode: `true` for a live key (`sk_live_`, `rk_live_`).
    pub fn livemode(&self) -> bool {
        self.settings.key.kind().ends_with("_live")
    }

    /// The connected account configured (`STRIPE_ACCOUNT`), if any.
    pub fn account(&self) -> Option<&str> {
        self.settings.account.as_deref()
    }

    /// Lists one page of the events created within `window`, after `starting_after` (an
    /// event ID from the previous page). Stripe lists newest first and keeps events for 30
    /// days. Errors: see [`StripeApiError`]; transient failures are retried first.
    pub async fn list_page(
        &self,
        window: &Window,
        starting_after: Option<&str>,
    ) -> Result<EventPage, StripeApiError> {
        let mut query = vec![
            ("limit", PAGE_EVENTS_MAX.to_string()),
            ("created[gte]", window.since.timestamp().to_string()),
            ("created[lte]", window.until.timestamp().to_string()),
        ];
        if let Some(id) = starting_after {
            query.push(("starting_after", id.to_owned()));
        }
        let body = self.get("/v1/events", &query).await?;
        parse_page(&body)
    }

    /// GETs `path` with retries (see the module's documentation).
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Bytes, StripeApiError> {
        let mut backoff = BACKOFF_FIRST;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS_MAX {
            let (problem, retry_after) = match self.attempt(path, query).await {
                Attempt::Done(body) => return Ok(body),
                Attempt::Fatal(error) => return Err(error),
                Attempt::Retry {
                    problem,
                    retry_after,
                } => (problem, retry_after),
            };
            last = problem;
            if attempt == ATTEMPTS_MAX {
                break;
            }
            let pause = retry_after.map_or(backoff, |wait| wait.min(RETRY_AFTER_MAX));
            tracing::warn!(
                stripe.path = path,
                attempt,
                pause_ms = pause.as_millis() as u64,
                problem = %last,
                "Stripe API request failed; retrying"
            );
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        Err(StripeApiError::Unavailable {
            attempts: ATTEMPTS_MAX,
            last,
        })
    }

    async fn attempt(&self, path: &str, query: &[(&str, String)]) -> Attempt {
        let mut request = self
            .http
            .get(format!("{}{path}", self.settings.base))
            .query(query)
            .bearer_auth(&self.settings.key.0)
            .header("Stripe-Version", STRIPE_VERSION);
        if let Some(account) = &self.settings.account {
            request = request.header("Stripe-Account", account);
        }
        let key = self.settings.key.0.as_str();
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    problem: transport_problem(&error, key),
                    retry_after: None,
                }
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_redirection() {
            let location = headers
                .get("location")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_else(|| "nowhere".into());
            return Attempt::Fatal(StripeApiError::Redirected {
                status: status.as_u16(),
                location: quote(&location, key),
            });
        }
        let body = match read_capped(response, ANSWER_BYTES_MAX).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                return Attempt::Fatal(StripeApiError::Malformed(format!(
                    "the answer is larger than {ANSWER_BYTES_MAX} bytes"
                )))
            }
            Err(error) => {
                return Attempt::Retry {
                    problem: transport_problem(&error, key),
                    retry_after: None,
                }
            }
        };
        if status.is_success() {
            return Attempt::Done(body);
        }
        classify(status, &headers, &body, key)
    }
}

/// The body, read chunk by chunk; `None` as soon as it exceeds `max` bytes (announced by
/// `Content-Length` or read), so an oversized answer is never held in memory.
async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// Sorts a failed answer into retry or give up. Stripe's `Stripe-Should-Retry` header, when
/// present, decides (Stripe's own libraries do the same); else `429` and `5xx` are retried.
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], key: &str) -> Attempt {
    let message = error_message(body, key);
    let should_retry = headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("true"));
    let retry =
        should_retry.unwrap_or(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error());
    if retry {
        return Attempt::Retry {
            problem: format!("{status}: {message}"),
            retry_after: retry_after(headers.get("retry-after")),
        };
    }
    Attempt::Fatal(match status {
        StatusCode::UNAUTHORIZED => StripeApiError::KeyRefused { message },
        StatusCode::FORBIDDEN => StripeApiError::PermissionDenied { message },
        _ => StripeApiError::Refused {
            status: status.as_u16(),
            message,
        },
    })
}

/// `Retry-After` in delta-seconds (the form Stripe sends); an HTTP date is ignored and the
/// backoff applies.
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e6)))
}

/// Stripe's `error.message`, else the start of the body.
fn error_message(body: &[u8], key: &str) -> String {
    #[derive(Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let text = match serde_json::from_slice::<Wrapper>(body) {
        Ok(Wrapper { error }) => error
            .message
            .or(error.kind)
            .unwrap_or_else(|| "no message".into()),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    quote(&text, key)
}

/// A transport error without its source chain's noise; reqwest's message names the URL
/// (base and path, never the key) and what failed.
fn transport_problem(error: &reqwest::Error, key: &str) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    quote(&text, key)
}

/// Text from an answer made safe to print, log and store: the key and key-shaped words
/// removed ([`redact`]), control characters escaped ([`printable`]), cut to
/// [`ERROR_QUOTE_BYTES_MAX`] bytes.
fn quote(text: &str, key: &str) -> String {
    let text = printable(&redact(text, key));
    if text.len() <= ERROR_QUOTE_BYTES_MAX {
        return text;
    }
    let mut end = ERROR_QUOTE_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// `text` without `key` (when not empty) and without any word shaped like a Stripe secret or
/// restricted key (`sk_` or `rk_` and what follows up to a space, quote or bracket), each
/// replaced by its kind and `<redacted>` (`sk_test_<redacted>`). An echoed key is never shown,
/// whatever the server that echoes it.
pub fn redact(text: &str, key: &str) -> String {
    let text = if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, "<redacted>")
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = find_key_start(rest) {
        out.push_str(&rest[..at]);
        let word = &rest[at..];
        let end = word
            .find(|c: char| !c.is_ascii_graphic() || "\"'`<>()[]{},;".contains(c))
            .unwrap_or(word.len());
        let kind_end = match word[3..end].find('_') {
            Some(i) if word[3..3 + i].chars().all(|c| c.is_ascii_lowercase()) => 3 + i + 1,
            _ => 3,
        };
        out.push_str(&word[..kind_end]);
        out.push_str("<redacted>");
        rest = &word[end..];
    }
    out.push_str(rest);
    out
}

/// Where the next `sk_`/`rk_` starting a word is.
fn find_key_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(2)).find(|&i| {
        (bytes[i] == b's' || bytes[i] == b'r')
            && bytes[i + 1] == b'k'
            && bytes[i + 2] == b'_'
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
    })
}

/// `text` with its control characters (newlines and NUL included) escaped as `\n`,
/// `\u{0}`..., so it prints on one line, cannot forge output lines, and fits in `jsonb`
/// and `text` columns (which refuse NUL).
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn parse_page(body: &[u8]) -> Result<EventPage, StripeApiError> {
    let list: ListBody<'_> =
        serde_json::from_slice(body).map_err(|e| StripeApiError::Malformed(e.to_string()))?;
    let last_id = match list.data.last() {
        Some(raw) => Some(
            serde_json::from_str::<IdOnly>(raw.get())
                .map_err(|e| StripeApiError::Malformed(format!("an event without an ID: {e}")))?
                .id,
        ),
        None => None,
    };
    Ok(EventPage {
        events: list
            .data
            .iter()
            .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes()))
            .collect(),
        has_more: list.has_more && last_id.is_some(),
        last_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_never_shown() {
        let key = SecretKey::parse(" sk_test_abc123 ").unwrap();
        assert_eq!(key.kind(), "sk_test");
        assert!(!format!("{key:?}").contains("abc123"));
        assert!(SecretKey::parse("rk_live_x").is_ok());
        for bad in ["", "whsec_x", "sk_", "sk_test abc", "pk_test_x"] {
            assert!(SecretKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_are_sorted_into_retry_or_final() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        let retry = classify(StatusCode::TOO_MANY_REQUESTS, &headers, b"{}", "");
        assert!(
            matches!(retry, Attempt::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(2))
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"", ""),
            Attempt::Retry {
                retry_after: None,
                ..
            }
        ));
        let body = br#"{"error":{"message":"Invalid API Key provided: sk_test_****1234","type":"invalid_request_error"}}"#;
        match classify(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            body,
            "sk_test_abc",
        ) {
            Attempt::Fatal(e @ StripeApiError::KeyRefused { .. }) => {
                assert!(e.to_string().contains("Invalid API Key provided"));
                assert!(e.is_key_problem());
            }
            _ => panic!("401 is final"),
        }
        headers.insert("stripe-should-retry", HeaderValue::from_static("false"));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &headers, b"", ""),
            Attempt::Fatal(StripeApiError::Refused { status: 503, .. })
        ));
    }

    #[test]
    fn a_page_keeps_each_event_as_rendered() {
        let body = br#"{"object":"list","data":[{"id":"evt_1", "type":"a"},{"id":"evt_2","type":"b"}],"has_more":true}"#;
        let page = parse_page(body).unwrap();
        assert_eq!(page.events.len(), 2);
        assert_eq!(&page.events[0][..], br#"{"id":"evt_1", "type":"a"}"#);
        assert_eq!(page.last_id.as_deref(), Some("evt_2"));
        assert!(page.has_more);
        assert!(parse_page(b"[]").is_err());
    }

    #[test]
    fn quoted_answers_carry_no_key_and_no_control_characters() {
        let key = "sk_live_SECRET+/=42";
        let echoed = format!("bad key {key}, also rk_test_Other9 and 'sk_test_x'\nforged\0");
        let quoted = quote(&echoed, key);
        for secret in ["SECRET", "Other9", "sk_test_x'"] {
            assert!(!quoted.contains(secret), "{quoted}");
        }
        assert!(quoted.contains("rk_test_<redacted>"), "{quoted}");
        assert!(!quoted.contains('\n') && !quoted.contains('\0'), "{quoted}");
        assert!(quoted.contains("\\nforged\\u{0}"), "{quoted}");
        assert_eq!(
            redact("task_id and risk_x stay", ""),
            "task_id and risk_x stay"
        );
    }
}
