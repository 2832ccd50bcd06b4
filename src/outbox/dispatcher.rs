//! The dispatcher: sends each endpoint the changes after its cursor, on one instance at a time.
//!
//! Election works as the projector's: a session advisory lock on a dedicated connection, freed
//! by PostgreSQL when that connection ends. Before each send the dispatcher checks that its
//! lock connection is still open, and every cursor move is a compare-and-set from the cursor it
//! read, so a deposed dispatcher can neither move a cursor nor start a new send once it knows;
//! the only overlap left is a send already in flight when the lock connection died (at most
//! [`SEND_TIMEOUT`]). Receivers deduplicate by `webhook-id`, as the specification asks.

use super::store::{self, Endpoint, Next, Outcome};
use super::OutboxMetrics;
use crate::feed::{self, Change, Filter, Watcher};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Advisory lock key of the dispatcher ("billdisp").
pub const DISPATCHER_LOCK_KEY: i64 = 0x6269_6c6c_6469_7370;
/// How often a follower retries the dispatcher lock.
pub const ELECTION_RETRY: Duration = Duration::from_secs(1);
/// Longest wait for a receiver's answer (the Standard Webhooks convention is 15 s or less).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Changes read per endpoint per round.
pub const BATCH_CHANGES: i64 = 100;
/// Longest `Retry-After` honoured: one day.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);

/// How this instance's dispatcher runs.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub instance_id: String,
    /// Delay before attempt n+1 (entry 0: the first attempt, normally 0); after the last
    /// entry's attempt fails, the endpoint is disabled.
    pub retry_schedule: Vec<Duration>,
    pub metrics: OutboxMetrics,
}

/// Runs until `stop`: competes for the lock, dispatches while holding it.
pub async fn run(pool: Pool, settings: Settings, watcher: Watcher, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let led = tokio::select! {
            result = lead(&pool, &settings, &watcher, &stop) => result,
            () = stop.cancelled() => Ok(()),
        };
        // An error that a shutdown caused is no failure: the instance is stopping.
        match led {
            Err(error) if !stop.is_cancelled() => tracing::warn!(
                error = format!("{error:#}"),
                "webhook dispatcher stopped; competing again"
            ),
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(ELECTION_RETRY) => {}
            () = stop.cancelled() => {}
        }
    }
}

async fn acquire(
    settings: &Settings,
    stop: &CancellationToken,
) -> anyhow::Result<tokio_postgres::Client> {
    let lock = crate::db::connect(&settings.database_url).await?;
    let name = format!("billing-ledger dispatcher {}", settings.instance_id);
    lock.execute("SELECT set_config('application_name', $1, false)", &[&name])
        .await?;
    loop {
        let held: bool = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&DISPATCHER_LOCK_KEY])
            .await?
            .get(0);
        if held {
            return Ok(lock);
        }
        tokio::select! {
            () = tokio::time::sleep(ELECTION_RETRY) => {}
            () = stop.cancelled() => anyhow::bail!("shutting down"),
        }
    }
}

async fn lead(
    pool: &Pool,
    settings: &Settings,
    watcher: &Watcher,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let lock = acquire(settings, stop).await?;
    tracing::info!(instance.id = %settings.instance_id, "webhook dispatcher elected");
    let http = reqwest::Client::builder().timeout(SEND_TIMEOUT).build()?;
    let dispatcher = Dispatcher {
        pool,
        settings,
        http,
        lock: &lock,
    };
    let mut subscription = watcher.subscribe();
    loop {
        anyhow::ensure!(!lock.is_closed(), "lost the dispatcher lock connection");
        let endpoints = store::list(&pool.get().await?).await?;
        let now = Utc::now();
        let due: Vec<Endpoint> = endpoints
            .into_iter()
            .filter(|e| e.disabled_at.is_none())
            .collect();
        let wake_at = due
            .iter()
            .filter_map(|e| e.next_attempt_at)
            .filter(|t| *t > now)
            .min();
        let rounds = due
            .into_iter()
            .filter(|e| e.next_attempt_at.is_none_or(|t| t <= now))
            .map(|e| dispatcher.round(e));
        let sent = futures_util::future::join_all(rounds).await;
        let mut busy = false;
        for result in sent {
            busy |= result?;
        }
        if !busy {
            let poll = tokio::time::Instant::now() + feed::watch::POLL_INTERVAL;
            let deadline = wake_at.map_or(poll, |at| {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                poll.min(tokio::time::Instant::now() + wait)
            });
            subscription.wait(deadline).await;
        }
    }
}

struct Dispatcher<'a> {
    pool: &'a Pool,
    settings: &'a Settings,
    http: reqwest::Client,
    lock: &'a tokio_postgres::Client,
}

/// What one send came to.
struct Sent {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
    duration_ms: i32,
}

impl Dispatcher<'_> {
    /// Sends `endpoint` the changes after its cursor, up to [`BATCH_CHANGES`], stopping at the
    /// first failure; returns whether the cursor moved (more may follow at once). Deliveries
    /// are recorded together, before a failure and at the end of the round.
    async fn round(&self, mut endpoint: Endpoint) -> anyhow::Result<bool> {
        let page = {
            let client = self.pool.get().await?;
            feed::page(&client, endpoint.cursor, BATCH_CHANGES, &Filter::default()).await?
        };
        let start = endpoint.cursor;
        let mut delivered: Vec<(i64, String, Sent)> = Vec::new();
        for change in &page.changes {
            let wanted = endpoint
                .read_models
                .as_ref()
                .is_none_or(|models| models.contains(&change.read_model));
            if !wanted {
                continue;
            }
            anyhow::ensure!(
                !self.lock.is_closed(),
                "lost the dispatcher lock connection"
            );
            let sent = self.send(&endpoint, change).await;
            let next = self.next_state(&endpoint, &sent);
            self.settings.metrics.attempt(match (&next, sent.status) {
                (Next::Advance, _) => "delivered",
                (_, Some(410)) => "gone",
                _ => "failed",
            });
            if matches!(next, Next::Advance) {
                delivered.push((change.id, super::message_id(change.id), sent));
                continue;
            }
            if !self.record_delivered(&mut endpoint, &delivered).await? {
                return Ok(false);
            }
            if let Next::Disable(reason) = &next {
                tracing::warn!(webhook.endpoint_id = %endpoint.endpoint_id, reason, "outgoing webhook endpoint disabled");
            }
            let message_id = super::message_id(change.id);
            let outcome = outcome(change.id, &message_id, &sent);
            store::record(
                self.pool,
                &endpoint,
                &outcome,
                next,
                &self.settings.instance_id,
            )
            .await?;
            return Ok(endpoint.cursor > start);
        }
        if !self.record_delivered(&mut endpoint, &delivered).await? {
            return Ok(false);
        }
        // The rest of the page was filtered out: move past it without an attempt.
        if page.next > endpoint.cursor {
            let outcome = Outcome {
                change_id: page.next,
                message_id: "",
                status_code: None,
                duration_ms: 0,
                error: None,
            };
            store::record(
                self.pool,
                &endpoint,
                &outcome,
                Next::Advance,
                &self.settings.instance_id,
            )
            .await?;
            endpoint.cursor = page.next;
        }
        Ok(endpoint.cursor > start)
    }

    /// Records `delivered` and moves `endpoint`'s cursor past them; false when the cursor had
    /// moved under this dispatcher (nothing was recorded).
    async fn record_delivered(
        &self,
        endpoint: &mut Endpoint,
        delivered: &[(i64, String, Sent)],
    ) -> anyhow::Result<bool> {
        let outcomes: Vec<Outcome> = delivered
            .iter()
            .map(|(id, message_id, sent)| outcome(*id, message_id, sent))
            .collect();
        let applied =
            store::record_delivered(self.pool, endpoint, &outcomes, &self.settings.instance_id)
                .await?;
        if let (true, Some(last)) = (applied, delivered.last()) {
            endpoint.cursor = last.0;
            endpoint.failed_attempts = 0;
        }
        Ok(applied)
    }

    /// Posts one change, signed; never fails (a failure is an outcome).
    async fn send(&self, endpoint: &Endpoint, change: &Change) -> Sent {
        let started = Instant::now();
        let body = super::message_body(change);
        let id = super::message_id(change.id);
        let timestamp = Utc::now().timestamp();
        let signature = match super::signing::SigningSecret::parse(&endpoint.secret) {
            Ok(secret) => secret.sign(&id, timestamp, &body),
            Err(problem) => {
                return Sent {
                    status: None,
                    retry_after: None,
                    error: Some(problem.to_owned()),
                    duration_ms: 0,
                }
            }
        };
        let answer = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let error = (!response.status().is_success()).then(|| format!("HTTP {status}"));
                Sent {
                    status: Some(status),
                    retry_after,
                    error,
                    duration_ms,
                }
            }
            Err(error) => Sent {
                status: None,
                retry_after: None,
                error: Some(describe(&error)),
                duration_ms,
            },
        }
    }

    /// The endpoint's next state after `sent`.
    fn next_state(&self, endpoint: &Endpoint, sent: &Sent) -> Next {
        match sent.status {
            Some(status) if (200..300).contains(&status) => return Next::Advance,
            Some(410) => return Next::Disable("the endpoint answered 410 Gone".into()),
            _ => {}
        }
        let failed = endpoint.failed_attempts as usize + 1;
        let schedule = &self.settings.retry_schedule;
        match schedule.get(failed) {
            None => Next::Disable(format!(
                "{failed} attempts failed; the last: {}",
                sent.error.as_deref().unwrap_or("?")
            )),
            Some(delay) => {
                let delay = sent.retry_after.map_or(*delay, |asked| asked.max(*delay));
                Next::RetryAt(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
            }
        }
    }
}

fn outcome<'a>(change_id: i64, message_id: &'a str, sent: &'a Sent) -> Outcome<'a> {
    Outcome {
        change_id,
        message_id,
        status_code: sent.status.map(i32::from),
        duration_ms: sent.duration_ms,
        error: sent.error.as_deref(),
    }
}

/// A send error in a few words (timeouts and refused connections are the common ones).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {} s", SEND_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// `Retry-After` (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date; capped at
/// [`RETRY_AFTER_MAX`].
fn parse_retry_after(value: &str) -> Option<Duration> {
    let delay = match value.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value.trim()).ok()?;
            (at.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(delay.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("999999999"), Some(RETRY_AFTER_MAX));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
