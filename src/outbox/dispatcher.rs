//! The dispatcher: sends each endpoint the changes after its cursor, on one instance at a time;
//! to one endpoint, the changes of up to [`SENDS_IN_FLIGHT_MAX`] tenants at once, each tenant's
//! in feed order (see `Dispatcher::round` for how the cursor stays at-least-once).
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
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Advisory lock key of the dispatcher ("billdisp").
pub const DISPATCHER_LOCK_KEY: i64 = 0x6269_6c6c_6469_7370;
/// How often a follower retries the dispatcher lock.
pub const ELECTION_RETRY: Duration = Duration::from_secs(1);
/// Longest wait for a receiver's answer (the Standard Webhooks convention is 15 s or less).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Changes read per endpoint per round.
pub const BATCH_CHANGES: i64 = 100;
/// Sends in flight at once to one endpoint, each for a different tenant (a tenant's messages
/// go one at a time, in order). Measured in README (For the platform, Figures): one at a time
/// fell behind at 300 events/s.
pub const SENDS_IN_FLIGHT_MAX: usize = 8;
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
        ahead: Mutex::new(HashMap::new()),
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
    /// Per endpoint, deliveries beyond its cursor (see [`Ahead`]).
    ahead: Mutex<HashMap<Uuid, Ahead>>,
}

/// Changes an endpoint received beyond its cursor in a round that failed elsewhere, so the
/// next round does not send them again. Valid only while the endpoint's cursor and failure
/// count are still those the round left.
struct Ahead {
    cursor: i64,
    failed_attempts: i32,
    delivered: BTreeSet<i64>,
}

/// Whether `endpoint`'s filter takes `change`.
fn wants(endpoint: &Endpoint, change: &Change) -> bool {
    (endpoint.read_models.as_ref()).is_none_or(|models| models.contains(&change.read_model))
}

/// Splits changes (in feed order) into lanes that may be sent concurrently, each in feed
/// order, the lanes in the order of their first change. Two changes share a lane when they
/// share a tenant or a row (a row whose tenant became known, or changed, links the two
/// tenants' lanes), so neither a tenant's nor a row's messages can overtake each other.
fn lanes(changes: Vec<&Change>) -> Vec<Vec<&Change>> {
    let mut parent: Vec<usize> = Vec::new();
    let mut key_index: HashMap<String, usize> = HashMap::new();
    let mut index_of = |key: String, parent: &mut Vec<usize>| {
        *key_index.entry(key).or_insert_with(|| {
            parent.push(parent.len());
            parent.len() - 1
        })
    };
    let mut change_key = Vec::with_capacity(changes.len());
    for change in &changes {
        let row = index_of(
            format!("row:{}:{}", change.read_model, change.key),
            &mut parent,
        );
        if let Some(tenant) = &change.tenant_id {
            let tenant = index_of(format!("tenant:{tenant}"), &mut parent);
            let (a, b) = (root(&mut parent, row), root(&mut parent, tenant));
            parent[a.max(b)] = a.min(b);
        }
        change_key.push(row);
    }
    let mut lanes: Vec<Vec<&Change>> = Vec::new();
    let mut lane_of: HashMap<usize, usize> = HashMap::new();
    for (change, key) in changes.into_iter().zip(change_key) {
        let lane = *lane_of.entry(root(&mut parent, key)).or_insert_with(|| {
            lanes.push(Vec::new());
            lanes.len() - 1
        });
        lanes[lane].push(change);
    }
    lanes
}

/// The representative of `key`'s set (union-find with path halving).
fn root(parent: &mut [usize], mut key: usize) -> usize {
    while parent[key] != key {
        parent[key] = parent[parent[key]];
        key = parent[key];
    }
    key
}

/// What one send came to.
struct Sent {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
    duration_ms: i32,
}

impl Sent {
    /// Whether the receiver answered 2xx.
    fn is_success(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }
}

impl Dispatcher<'_> {
    /// Sends `endpoint` the changes after its cursor, up to [`BATCH_CHANGES`]: changes of
    /// different tenants concurrently (up to [`SENDS_IN_FLIGHT_MAX`] at once), each tenant's in
    /// feed order, one at a time (see [`lanes`]). A tenant's lane stops at its first failure,
    /// and after any failure no lane starts another send. Returns whether the cursor moved
    /// (more may follow at once).
    ///
    /// The cursor moves past the longest run of the page whose wanted changes were all
    /// delivered (the rest skipped by the filter), so it never passes an undelivered change:
    /// after a failure, changes of other tenants delivered beyond that run are sent again only
    /// if this dispatcher loses track of them (it remembers them, see [`Ahead`], until the
    /// cursor passes them; a new dispatcher after a failover does not). Attempts are recorded
    /// together at the end of the round.
    async fn round(&self, mut endpoint: Endpoint) -> anyhow::Result<bool> {
        let page = {
            let client = self.pool.get().await?;
            feed::page(&client, endpoint.cursor, BATCH_CHANGES, &Filter::default()).await?
        };
        let start = endpoint.cursor;
        let ahead = self.take_ahead(&endpoint);
        let wanted: Vec<&Change> = page
            .changes
            .iter()
            .filter(|c| wants(&endpoint, c))
            .collect();
        let to_send: Vec<&Change> = (wanted.iter().copied())
            .filter(|c| !ahead.contains(&c.id))
            .collect();
        let sent = self.send_lanes(&endpoint, to_send).await?;
        let mut delivered = ahead;
        delivered.extend(
            sent.iter()
                .filter(|(_, s)| s.is_success())
                .map(|(c, _)| c.id),
        );
        // The first wanted change not delivered blocks the cursor; without one it passes the
        // whole page, filtered changes included.
        let blocked = wanted.iter().find(|c| !delivered.contains(&c.id));
        let cursor_to = blocked.map_or(page.next, |c| c.id - 1).max(endpoint.cursor);
        let first_failure = sent.iter().position(|(_, s)| !s.is_success());
        for (_, sent) in &sent {
            self.settings.metrics.attempt(match sent.status {
                _ if sent.is_success() => "delivered",
                Some(410) => "gone",
                _ => "failed",
            });
        }
        let messages: Vec<String> = sent.iter().map(|(c, _)| super::message_id(c.id)).collect();
        let recorded: Vec<Outcome> = (sent.iter().zip(&messages).enumerate())
            .filter(|(index, _)| Some(*index) != first_failure)
            .map(|(_, ((change, sent), message_id))| outcome(change.id, message_id, sent))
            .collect();
        if !self
            .record_round(&mut endpoint, cursor_to, &recorded)
            .await?
        {
            return Ok(false);
        }
        if let Some(index) = first_failure {
            let (change, sent) = &sent[index];
            let next = self.next_state(&endpoint, sent);
            if let Next::Disable(reason) = &next {
                tracing::warn!(webhook.endpoint_id = %endpoint.endpoint_id, reason, "outgoing webhook endpoint disabled");
            }
            let outcome = outcome(change.id, &messages[index], sent);
            store::record(
                self.pool,
                &endpoint,
                &outcome,
                next,
                &self.settings.instance_id,
            )
            .await?;
            endpoint.failed_attempts += 1;
        }
        delivered.retain(|id| *id > endpoint.cursor);
        self.keep_ahead(&endpoint, delivered);
        Ok(endpoint.cursor > start)
    }

    /// Sends each lane's changes in order, lanes concurrently (at most
    /// [`SENDS_IN_FLIGHT_MAX`]); returns every attempt, by change ID.
    async fn send_lanes<'c>(
        &self,
        endpoint: &Endpoint,
        changes: Vec<&'c Change>,
    ) -> anyhow::Result<Vec<(&'c Change, Sent)>> {
        let failed = AtomicBool::new(false);
        let mut waiting = lanes(changes).into_iter();
        let mut running = FuturesUnordered::new();
        let mut sent = Vec::new();
        loop {
            while running.len() < SENDS_IN_FLIGHT_MAX {
                let Some(lane) = waiting.next() else { break };
                running.push(self.send_lane(endpoint, lane, &failed));
            }
            match running.next().await {
                Some(result) => sent.extend(result?),
                None => break,
            }
        }
        sent.sort_by_key(|(change, _)| change.id);
        Ok(sent)
    }

    /// Sends one lane's changes one after the other, stopping at its first failure or once
    /// another lane failed (`failed`).
    async fn send_lane<'c>(
        &self,
        endpoint: &Endpoint,
        lane: Vec<&'c Change>,
        failed: &AtomicBool,
    ) -> anyhow::Result<Vec<(&'c Change, Sent)>> {
        let mut sent = Vec::with_capacity(lane.len());
        for change in lane {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            anyhow::ensure!(
                !self.lock.is_closed(),
                "lost the dispatcher lock connection"
            );
            let answer = self.send(endpoint, change).await;
            let success = answer.is_success();
            sent.push((change, answer));
            if !success {
                failed.store(true, Ordering::Relaxed);
                break;
            }
        }
        Ok(sent)
    }

    /// The changes after `endpoint`'s cursor this dispatcher delivered in an earlier round,
    /// when the endpoint is as that round left it (a replay, a takeover or a removal forgets
    /// them).
    fn take_ahead(&self, endpoint: &Endpoint) -> BTreeSet<i64> {
        let mut ahead = self.ahead.lock().expect("not poisoned");
        match ahead.remove(&endpoint.endpoint_id) {
            Some(kept)
                if kept.cursor == endpoint.cursor
                    && kept.failed_attempts == endpoint.failed_attempts =>
            {
                kept.delivered
            }
            _ => BTreeSet::new(),
        }
    }

    fn keep_ahead(&self, endpoint: &Endpoint, delivered: BTreeSet<i64>) {
        if delivered.is_empty() {
            return;
        }
        self.ahead.lock().expect("not poisoned").insert(
            endpoint.endpoint_id,
            Ahead {
                cursor: endpoint.cursor,
                failed_attempts: endpoint.failed_attempts,
                delivered,
            },
        );
    }

    /// Records the round's attempts and moves `endpoint`'s cursor to `cursor_to`
    /// (compare-and-set); false when the cursor had moved under this dispatcher (nothing was
    /// recorded).
    async fn record_round(
        &self,
        endpoint: &mut Endpoint,
        cursor_to: i64,
        attempts: &[Outcome<'_>],
    ) -> anyhow::Result<bool> {
        if cursor_to == endpoint.cursor && attempts.is_empty() {
            return Ok(true);
        }
        let applied = store::record_round(
            self.pool,
            endpoint,
            cursor_to,
            attempts,
            &self.settings.instance_id,
        )
        .await?;
        if applied && cursor_to > endpoint.cursor {
            endpoint.cursor = cursor_to;
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

    fn change(id: i64, read_model: &str, key: &str, tenant: Option<&str>) -> Change {
        Change {
            id,
            read_model: read_model.into(),
            key: key.into(),
            tenant_id: tenant.map(Into::into),
            cause: "event".into(),
            event_id: None,
            position: None,
            before: None,
            after: None,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn lanes_keep_each_tenants_and_each_rows_changes_together_in_order() {
        let changes = [
            change(1, "tenant_pricing", "a", Some("a")),
            change(2, "customers", "cus_1", None),
            change(3, "tenant_pricing", "b", Some("b")),
            change(4, "entitlements", "a", Some("a")),
            // cus_1's tenant becomes known: its row joins tenant c's lane.
            change(5, "customers", "cus_1", Some("c")),
            change(6, "tenant_pricing", "c", Some("c")),
            change(7, "customers", "cus_2", None),
        ];
        let ids: Vec<Vec<i64>> = lanes(changes.iter().collect())
            .iter()
            .map(|lane| lane.iter().map(|c| c.id).collect())
            .collect();
        assert_eq!(ids, [vec![1, 4], vec![2, 5, 6], vec![3], vec![7]]);
    }

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
