//! Tells waiting readers (long-polls, streams, the webhook dispatcher) that the feed moved.
//!
//! One dedicated connection per instance LISTENs on [`super::CHANNEL`]; every notification
//! bumps a `tokio::sync::watch` value. Readers re-read the database on a bump and at least
//! every [`POLL_INTERVAL`], so a lost connection delays them, never loses a change.

use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a waiting reader re-reads when no notification arrives.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the listener waits before reconnecting.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A handle readers clone to wait for the feed to move.
#[derive(Clone)]
pub struct Watcher {
    receiver: watch::Receiver<u64>,
}

impl Watcher {
    /// Starts the listener on its own connection, until `stop`.
    pub fn start(database_url: String, stop: CancellationToken) -> Watcher {
        let (sender, receiver) = watch::channel(0u64);
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Ok((_client, mut notified)) =
                    crate::db::connect_listening(&database_url, super::CHANNEL).await
                {
                    loop {
                        tokio::select! {
                            got = notified.recv() => {
                                if got.is_none() { break; }
                                sender.send_modify(|n| *n += 1);
                            }
                            () = stop.cancelled() => return,
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT_DELAY) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
        Watcher { receiver }
    }

    /// A watcher that never fires (building the OpenAPI document); readers still poll.
    pub fn detached() -> Watcher {
        let (_, receiver) = watch::channel(0u64);
        Watcher { receiver }
    }

    /// A subscription: [`Subscription::wait`] returns after a notification or the poll
    /// interval, whichever comes first, but never later than `deadline`.
    pub fn subscribe(&self) -> Subscription {
        let mut receiver = self.receiver.clone();
        receiver.mark_unchanged();
        Subscription { receiver }
    }
}

/// One reader's view of the notifications.
pub struct Subscription {
    receiver: watch::Receiver<u64>,
}

impl Subscription {
    /// Waits for a notification, [`POLL_INTERVAL`], or `deadline`, whichever comes first.
    pub async fn wait(&mut self, deadline: tokio::time::Instant) {
        let poll = tokio::time::Instant::now() + POLL_INTERVAL;
        let until = poll.min(deadline);
        tokio::select! {
            changed = self.receiver.changed() => {
                if changed.is_err() {
                    // The listener ended (shutdown): fall back to polling.
                    tokio::time::sleep_until(until).await;
                }
            }
            () = tokio::time::sleep_until(until) => {}
        }
    }
}
