//! Connection limits: what a client may hold open, and for how long, before it sends a request.
//!
//! poem 3 (on hyper) has no header-read timeout and no connection cap, so idle or slow-header
//! connections could pile up to the process's open-file limit, after which nothing is served and
//! the accept loop spins. [`GuardedAcceptor`] wraps the TCP acceptor and every connection:
//!
//! - a connection waiting for its next request (idle, after an answer) is closed after
//!   [`ConnectionLimits::idle_timeout`] without a byte;
//! - a request head (request line and headers) must arrive in full within
//!   [`ConnectionLimits::header_read_timeout`] of its first byte, and a new connection's first
//!   head within that time of the connection opening;
//! - at most [`ConnectionLimits::max_connections`] are open (kept below the open-file limit);
//!   at the cap, a new connection sheds the oldest one that is not being answered (idle or still
//!   sending its head), so a webhook gets through a flood of idle connections; when every
//!   connection is being answered, the new one is closed;
//! - accept errors (the file limit reached regardless) pause the loop instead of spinning;
//! - hyper's own empty answers to requests it cannot parse (400, 414, 431) get the contract's
//!   JSON `{"error": ...}` body ([`parser_refusal`]).
//!
//! A connection is "being answered" from the end of its request head until the server writes;
//! the body read has its own deadline (`webhook::BODY_READ_TIMEOUT`). The request head is found
//! by its blank line (`\r\n\r\n`, RFC 9112 2.1). This module never reads what a request says.

use crate::metrics::ConnectionMetrics;
use futures_util::task::AtomicWaker;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Default `LEDGER_HEADER_READ_TIMEOUT_SECS`.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default `LEDGER_IDLE_TIMEOUT_SECS`.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Default `LEDGER_MAX_CONNECTIONS` (lowered to fit the open-file limit, see [`fit_to_files`]).
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;
/// File descriptors kept free of client connections: the database pool, the projector's
/// connections, logs, and headroom for connections being shed.
pub const FILES_RESERVED: usize = 256;
/// Pause after a failed accept (the file limit reached despite the cap, say).
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The limits `serve` applies to client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: MAX_CONNECTIONS_DEFAULT,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
        }
    }
}

/// `max_connections` lowered to the process's soft open-file limit minus [`FILES_RESERVED`]
/// (`RLIMIT_NOFILE`, read from `/proc/self/limits`; unchanged where that cannot be read).
pub fn fit_to_files(max_connections: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    match limit {
        Some(files) => max_connections.min(files.saturating_sub(FILES_RESERVED).max(1)),
        None => max_connections,
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Reading a request head.
    Head,
    /// Head received; the server is reading the body or computing the answer.
    Answering,
}

/// What the acceptor and one connection share.
struct Shared {
    /// Phase and when it began.
    phase: Mutex<(Phase, Instant)>,
    shed: AtomicBool,
    waker: AtomicWaker,
}

/// The open connections, for shedding.
#[derive(Default)]
struct Registry {
    open: Mutex<HashMap<u64, Arc<Shared>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Marks the connection longest in `Idle` or `Head` to be closed; false when every open
    /// connection is being answered.
    fn shed_oldest(&self) -> bool {
        let open = self.open.lock().expect("registry lock");
        let oldest = open
            .values()
            .filter(|s| !s.shed.load(Ordering::Relaxed))
            .filter_map(|s| {
                let (phase, since) = *s.phase.lock().expect("phase lock");
                (phase != Phase::Answering).then_some((since, s))
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, shared)) => {
                shared.shed.store(true, Ordering::Relaxed);
                shared.waker.wake();
                true
            }
            None => false,
        }
    }
}

/// A TCP acceptor applying [`ConnectionLimits`].
pub struct GuardedAcceptor<A> {
    inner: A,
    limits: ConnectionLimits,
    registry: Arc<Registry>,
    metrics: ConnectionMetrics,
}

impl<A: Acceptor> GuardedAcceptor<A> {
    pub fn new(inner: A, limits: ConnectionLimits, metrics: ConnectionMetrics) -> Self {
        GuardedAcceptor {
            inner,
            limits,
            registry: Arc::default(),
            metrics,
        }
    }
}

impl<A: Acceptor> Acceptor for GuardedAcceptor<A> {
    type Io = GuardedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (io, local, remote, scheme) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let open = self.registry.open.lock().expect("registry lock").len();
            if open >= self.limits.max_connections && !self.registry.shed_oldest() {
                // Every connection is being answered: refuse this one (dropping closes it).
                self.metrics.closed("refused_at_cap");
                continue;
            }
            if open >= self.limits.max_connections {
                self.metrics.closed("shed_at_cap");
            }
            return Ok((self.guard(io), local, remote, scheme));
        }
    }
}

impl<A: Acceptor> GuardedAcceptor<A> {
    fn guard(&self, io: A::Io) -> GuardedIo<A::Io> {
        // A new connection owes its first request head within the header-read timeout.
        let now = Instant::now();
        let shared = Arc::new(Shared {
            phase: Mutex::new((Phase::Head, now)),
            shed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry
            .open
            .lock()
            .expect("registry lock")
            .insert(id, shared.clone());
        self.metrics.opened();
        GuardedIo {
            inner: io,
            id,
            shared,
            registry: self.registry.clone(),
            limits: self.limits,
            deadline: Box::pin(tokio::time::sleep_until(
                now + self.limits.header_read_timeout,
            )),
            tail: [0; 3],
            answer: None,
            metrics: self.metrics.clone(),
        }
    }
}

/// One client connection under [`ConnectionLimits`]; leaves the registry when dropped.
pub struct GuardedIo<S> {
    inner: S,
    id: u64,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    limits: ConnectionLimits,
    /// When the current phase's time runs out (unused while `Answering`).
    deadline: Pin<Box<Sleep>>,
    /// The last three bytes read in `Head`, to find `\r\n\r\n` across reads.
    tail: [u8; 3],
    /// A JSON answer replacing the parser's empty one, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
    metrics: ConnectionMetrics,
}

impl<S> GuardedIo<S> {
    fn phase(&self) -> Phase {
        self.shared.phase.lock().expect("phase lock").0
    }

    fn enter(&mut self, phase: Phase) {
        let now = Instant::now();
        *self.shared.phase.lock().expect("phase lock") = (phase, now);
        match phase {
            Phase::Idle => self.deadline.as_mut().reset(now + self.limits.idle_timeout),
            Phase::Head => {
                self.tail = [0; 3];
                let deadline = now + self.limits.header_read_timeout;
                self.deadline.as_mut().reset(deadline);
            }
            Phase::Answering => {}
        }
    }

    /// Follows the request cycle over bytes just read.
    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
        if self.phase() == Phase::Head {
            let mut window = Vec::with_capacity(self.tail.len() + bytes.len());
            window.extend_from_slice(&self.tail);
            window.extend_from_slice(bytes);
            if window.windows(4).any(|w| w == b"\r\n\r\n") {
                self.enter(Phase::Answering);
            } else {
                self.tail.copy_from_slice(&window[window.len() - 3..]);
            }
        }
    }

    /// Why this connection must close now, if it must.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        self.shared.waker.register(cx.waker());
        if self.shared.shed.load(Ordering::Relaxed) {
            return Some("shed");
        }
        match self.phase() {
            Phase::Answering => None,
            phase => self
                .deadline
                .as_mut()
                .poll(cx)
                .is_ready()
                .then_some(match phase {
                    Phase::Head => "header_read_timeout",
                    _ => "idle_timeout",
                }),
        }
    }
}

impl<S> Drop for GuardedIo<S> {
    fn drop(&mut self) {
        self.registry
            .open
            .lock()
            .expect("registry lock")
            .remove(&self.id);
        self.metrics.dropped();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(reason) = self.expired(cx) {
            self.metrics.closed(reason);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replaces(data) {
            return self.poll_write_answer(cx, data.len());
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = data
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        if self.replaces(first) {
            return self.poll_write_answer(cx, first.len());
        }
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncWrite + Unpin> GuardedIo<S> {
    /// Whether `data` is (still) the parser's empty refusal being replaced. Only the first
    /// write of an answer is looked at: later ones (`Idle`) continue an answer already begun.
    fn replaces(&mut self, data: &[u8]) -> bool {
        if self.answer.is_none() && self.phase() != Phase::Idle {
            self.answer = parser_refusal(data).map(|answer| (answer, 0));
        }
        self.answer.is_some()
    }

    /// After a write: an answer is being written, so the connection waits for its next request
    /// (a streamed answer keeps resetting the idle deadline while it writes).
    fn wrote(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.enter(Phase::Idle);
        }
    }

    /// Writes the JSON answer standing in for the parser's empty one; reports `replaced`
    /// bytes (the parser's whole answer) written once all of it is.
    fn poll_write_answer(
        &mut self,
        cx: &mut Context<'_>,
        replaced: usize,
    ) -> Poll<io::Result<usize>> {
        while let Some((answer, written)) = &mut self.answer {
            if *written == answer.len() {
                self.answer = None;
                return Poll::Ready(Ok(replaced));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(replaced))
    }
}

/// hyper answers a request it cannot parse (a bad request line or header: 400; a URI too long:
/// 414; headers too large: 431) itself, with an empty body and `connection: close`, before any
/// route or middleware sees it. The service's own 4xx answers always carry a JSON body
/// (`error::json_errors`), so an empty one of these statuses is the parser's; it gets the
/// contract's JSON body.
fn parser_refusal(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    let message = match status {
        "400" => {
            "the request line or a header is malformed; characters such as < > { } \" \
                  and spaces must be percent-encoded in a URI"
        }
        "414" => "the URI is longer than the server accepts",
        "431" => "the request headers are larger than the server accepts",
        _ => return None,
    };
    if !text.contains("\r\nconnection: close\r\n") {
        return None;
    }
    let (before, after) = text.split_once("\r\ncontent-length: 0\r\n")?;
    let body = serde_json::json!({ "error": message }).to_string();
    Some(
        format!(
            "{before}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n{after}{body}",
            body.len()
        )
        .into_bytes(),
    )
}
