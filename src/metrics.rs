//! Prometheus metrics (`GET /metrics`, text format 0.0.4).
//!
//! Counters and the append-latency histogram are this instance's; the log and projection
//! gauges are read from the database at scrape time, so every instance reports the same
//! shared truth (the projector may run elsewhere).

use deadpool_postgres::Pool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// Labels of the HTTP request metrics: the route's path as `openapi.yaml` names it (never the raw path,
/// whose IDs would make a series per resource), the method and the answer's status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseReason {
    reason: &'static str,
}

/// The client-connection metrics the acceptor updates (`http::connections`): open
/// connections, and connections closed by a limit, by reason (`idle_timeout`,
/// `header_read_timeout`, `shed`, `shed_at_cap`, `refused_at_cap`).
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    closed: Family<CloseReason, Counter>,
}

impl ConnectionMetrics {
    pub fn opened(&self) {
        self.open.inc();
    }

    pub fn dropped(&self) {
        self.open.dec();
    }

    pub fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&CloseReason { reason }).inc();
    }
}

/// The `route` label of a request no route matched (404s for unknown paths).
pub const ROUTE_UNMATCHED: &str = "unmatched";

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Latency buckets in seconds: 0.5 ms doubling to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What a webhook delivery came to; the `outcome` label of `billing_ledger_webhooks_total`.
#[derive(Debug, Clone, Copy)]
pub enum WebhookOutcome {
    Stored,
    Duplicate,
    BadSignature,
    NotAnEvent,
    TooLarge,
    /// The body did not arrive in full within the read timeout (408).
    TooSlow,
    /// The body could not be read (a broken chunked encoding, a connection ended mid-body).
    Unreadable,
    Unavailable,
    /// Not stored because of an error of our own (500).
    Internal,
}

impl WebhookOutcome {
    fn label(self) -> &'static str {
        match self {
            WebhookOutcome::Stored => "stored",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::BadSignature => "bad_signature",
            WebhookOutcome::NotAnEvent => "not_an_event",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::TooSlow => "too_slow",
            WebhookOutcome::Unreadable => "unreadable",
            WebhookOutcome::Unavailable => "unavailable",
            WebhookOutcome::Internal => "internal",
        }
    }
}

/// This instance's metrics.
pub struct Metrics {
    registry: Registry,
    webhooks: Family<Outcome, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: LatencyFamily,
    connections: ConnectionMetrics,
    append_seconds: Histogram,
    log_head: Gauge,
    projection_position: Gauge,
    projection_lag_events: Gauge,
    projection_lag_seconds: Gauge<f64, AtomicU64>,
    projection_errors: Gauge,
    unresolved_events: Gauge,
    rebuild_progress: Gauge<f64, AtomicU64>,
    /// Reconciliation runs, appended events by type, differences (`billing_ledger_reconcile_*`).
    pub reconcile: crate::reconcile::service::Metrics,
    /// Outgoing webhooks; the dispatcher holds a clone.
    pub outbox: crate::outbox::OutboxMetrics,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("billing_ledger");
        let webhooks = Family::<Outcome, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by outcome",
            webhooks.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status",
            requests.clone(),
        );
        let request_seconds = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer's headers, by route pattern and method",
            request_seconds.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "http_connections_open",
            "Client connections open",
            connections.open.clone(),
        );
        registry.register(
            "http_connections_closed_by_limit",
            "Client connections closed by a connection limit, by reason",
            connections.closed.clone(),
        );
        let append_seconds = latency_histogram();
        registry.register(
            "append_duration_seconds",
            "Time from a verified delivery to its committed append",
            append_seconds.clone(),
        );
        let log_head = Gauge::default();
        registry.register(
            "log_head_position",
            "Last position appended to the log",
            log_head.clone(),
        );
        let projection_position = Gauge::default();
        registry.register(
            "projection_position",
            "Last log position folded into the read models",
            projection_position.clone(),
        );
        let projection_lag_events = Gauge::default();
        registry.register(
            "projection_lag_events",
            "Events appended but not yet folded",
            projection_lag_events.clone(),
        );
        let projection_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "projection_lag_seconds",
            "Age of the oldest event not yet folded",
            projection_lag_seconds.clone(),
        );
        let projection_errors = Gauge::default();
        registry.register(
            "projection_errors",
            "Events the fold could not read",
            projection_errors.clone(),
        );
        let unresolved_events = Gauge::default();
        registry.register(
            "unresolved_events",
            "Events whose tenant is not known yet",
            unresolved_events.clone(),
        );
        let rebuild_progress = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "rebuild_progress_ratio",
            "Progress of the running rebuild, 0 to 1 (1 when none runs)",
            rebuild_progress.clone(),
        );
        let reconcile = crate::reconcile::service::Metrics::default();
        reconcile.register(&mut registry);
        let outbox = crate::outbox::OutboxMetrics::default();
        outbox.register(&mut registry);
        Metrics {
            reconcile,
            outbox,
            registry,
            webhooks,
            requests,
            request_seconds,
            connections,
            append_seconds,
            log_head,
            projection_position,
            projection_lag_events,
            projection_lag_seconds,
            projection_errors,
            unresolved_events,
            rebuild_progress,
        }
    }
}

impl Metrics {
    /// Counts one webhook delivery.
    pub fn webhook(&self, outcome: WebhookOutcome) {
        self.webhooks
            .get_or_create(&Outcome {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts one answered HTTP request and its latency. `route` is the matched path as the
    /// spec names it (`/api/billing/events/{event_id}`), or [`ROUTE_UNMATCHED`].
    pub fn request(&self, route: &str, method: &str, status: u16, duration: std::time::Duration) {
        let (route, method) = (route.to_owned(), method.to_owned());
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method: method.clone(),
            })
            .observe(duration.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// The client-connection metrics, for the acceptor.
    pub fn connections(&self) -> ConnectionMetrics {
        self.connections.clone()
    }

    /// Records one committed append's latency.
    pub fn append_latency(&self, duration: std::time::Duration) {
        self.append_seconds.observe(duration.as_secs_f64());
    }

    /// Renders every metric, refreshing the shared gauges from the database first (left as
    /// they were when it does not answer).
    pub async fn render(&self, pool: &Pool) -> String {
        if let Err(error) = self.refresh(pool).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "metrics: database gauges not refreshed"
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    async fn refresh(&self, pool: &Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        let lag = crate::store::projector::status::lag(&client).await?;
        let (errors, unresolved, rebuild_progress) =
            crate::store::projector::gauges(&client).await?;
        self.log_head.set(lag.head.get());
        self.projection_position.set(lag.checkpoint.get());
        self.projection_lag_events.set(lag.events());
        self.projection_lag_seconds.set(lag.seconds);
        self.projection_errors.set(errors);
        self.unresolved_events.set(unresolved);
        self.rebuild_progress.set(rebuild_progress.unwrap_or(1.0));
        self.outbox.refresh(&client).await?;
        Ok(())
    }
}
