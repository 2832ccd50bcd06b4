//! `POST /api/billing/webhook`: Stripe's deliveries in, the log's answer out.
//!
//! Order of checks, each before the next is attempted: the body's size (413, read no further
//! than the limit), the signature over the exact bytes (401), the event envelope (400), the
//! durable append (200 once committed, else 503 so Stripe retries). Nothing is stored for a
//! rejected delivery; rejections are logged and counted, never stored.

use super::error::{body, ErrorBody};
use super::AppState;
use crate::event_log::{AppendError, Delivery, Source};
use crate::metrics::WebhookOutcome;
use crate::signature;
use bytes::Bytes;
use poem::{Request, RequestBody};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
};
use projections::Event;
use std::sync::Arc;

/// Longest wait for a webhook body to arrive in full: a client that stalls mid-body (or sends
/// less than its Content-Length) is answered 408 and its connection freed.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest accepted body, in request data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The request body exactly as received, or why it could not be read. Reading never fails the
/// extraction, so the handler decides every status itself.
pub struct RawBody(Result<Bytes, BodyProblem>);

pub enum BodyProblem {
    TooLarge(usize),
    Unreadable(String),
    TooSlow,
}

impl Payload for RawBody {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("A Stripe event object, signed as the exact bytes sent."),
            ..MetaSchema::new("object")
        }))
    }
}

impl<'a> ApiExtractor<'a> for RawBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("The event as Stripe sends it."),
            content: vec![MetaMediaType {
                content_type: Self::CONTENT_TYPE,
                schema: Self::schema_ref(),
            }],
            required: true,
        })
    }

    fn register(_registry: &mut Registry) {}

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let limit = request.data::<BodyLimit>().map_or(usize::MAX, |l| l.0);
        let declared = request
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Ok(RawBody(Err(BodyProblem::TooLarge(limit))));
        }
        let read = match body.take() {
            Ok(body) => {
                match tokio::time::timeout(BODY_READ_TIMEOUT, body.into_bytes_limit(limit)).await {
                    Err(_) => Err(BodyProblem::TooSlow),
                    Ok(read) => read.map_err(|e| match e {
                        poem::error::ReadBodyError::PayloadTooLarge => BodyProblem::TooLarge(limit),
                        other => BodyProblem::Unreadable(other.to_string()),
                    }),
                }
            }
            Err(e) => Err(BodyProblem::Unreadable(e.to_string())),
        };
        Ok(RawBody(read))
    }
}

/// The answer to a stored delivery.
#[derive(Debug, Object)]
pub struct Received {
    /// Always true: the event is durably committed to the log.
    pub received: bool,
    /// Stripe's event ID.
    pub event_id: String,
    /// True when the event ID was already in the log; it is not applied again.
    pub duplicate: bool,
}

/// Every answer the webhook gives.
#[derive(Debug, ApiResponse)]
pub enum WebhookResponse {
    /// The event is committed to the log (now or by an earlier delivery).
    #[oai(status = 200)]
    Received(Json<Received>),
    /// The signature verified, but the body is not a Stripe event.
    #[oai(status = 400)]
    NotAnEvent(Json<ErrorBody>),
    /// Missing, malformed, unmatched or expired `Stripe-Signature`.
    #[oai(status = 401)]
    BadSignature(Json<ErrorBody>),
    /// The body did not arrive in full within 10 seconds.
    #[oai(status = 408)]
    TooSlow(Json<ErrorBody>),
    /// The body is larger than `LEDGER_MAX_BODY_BYTES`.
    #[oai(status = 413)]
    TooLarge(Json<ErrorBody>),
    /// Nothing was stored because of an error of our own (a bug, logged with its cause);
    /// the body says nothing internal. Stripe will retry.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// Nothing was stored (database unavailable or too slow); Stripe will retry.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The webhook's path (Stripe is given `https://<host>` + this).
pub const WEBHOOK_PATH: &str = "/api/billing/webhook";

pub struct WebhookApi {
    pub state: Arc<AppState>,
}

#[OpenApi]
impl WebhookApi {
    /// Receive a Stripe webhook delivery.
    ///
    /// Verifies the `Stripe-Signature` header (`t=<unix>,v1=<hex>[,v1=...]`) over the exact
    /// body with every configured secret, then appends the event once by its ID. Unknown event
    /// types are stored and answered 200 like any other.
    #[oai(
        path = "/api/billing/webhook",
        method = "post",
        tag = "super::Tag::Webhook"
    )]
    async fn receive(&self, request: &Request, raw: RawBody) -> WebhookResponse {
        let state = &self.state;
        let bytes = match raw.0 {
            Ok(bytes) => bytes,
            Err(BodyProblem::TooLarge(limit)) => {
                state.metrics.webhook(WebhookOutcome::TooLarge);
                tracing::warn!(
                    webhook.outcome = "too_large",
                    limit_bytes = limit,
                    "webhook refused"
                );
                return WebhookResponse::TooLarge(body(format!("body larger than {limit} bytes")));
            }
            Err(BodyProblem::TooSlow) => {
                state.metrics.webhook(WebhookOutcome::TooSlow);
                tracing::warn!(webhook.outcome = "too_slow", "webhook refused");
                return WebhookResponse::TooSlow(body(format!(
                    "body not received within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                )));
            }
            Err(BodyProblem::Unreadable(cause)) => {
                state.metrics.webhook(WebhookOutcome::Unreadable);
                tracing::warn!(webhook.outcome = "unreadable", %cause, "webhook refused");
                return WebhookResponse::NotAnEvent(body("the body could not be read"));
            }
        };
        // A header that is not visible ASCII is as malformed as one without `t`.
        let header = request
            .headers()
            .get("stripe-signature")
            .map(|v| v.to_str().unwrap_or(""));
        let now = chrono::Utc::now().timestamp();
        let secrets = &state.config.webhook_secrets;
        let verified = match signature::verify(
            header,
            &bytes,
            secrets,
            state.config.tolerance_secs,
            now,
        ) {
            Ok(verified) => verified,
            Err(error) => {
                state.metrics.webhook(WebhookOutcome::BadSignature);
                tracing::warn!(webhook.outcome = "bad_signature", reason = %error, "webhook refused");
                return WebhookResponse::BadSignature(body(error.to_string()));
            }
        };
        let event = match Event::parse(&bytes) {
            Ok(event) => event,
            Err(error) => {
                state.metrics.webhook(WebhookOutcome::NotAnEvent);
                tracing::warn!(webhook.outcome = "not_an_event", reason = %error, "webhook refused");
                return WebhookResponse::NotAnEvent(body(format!("not a Stripe event: {error}")));
            }
        };
        if projections::facts::is_ledger_own(&event.id, &event.event_type) {
            state.metrics.webhook(WebhookOutcome::NotAnEvent);
            tracing::warn!(webhook.outcome = "not_an_event", stripe.event_id = %event.id, "webhook refused: an ID or type reserved for the ledger's own events");
            return WebhookResponse::NotAnEvent(body(
                "not a Stripe event: `evt_ledger_` IDs and `ledger.` types are the ledger's own (admin API)",
            ));
        }
        let event_id = event.id.clone();
        let delivery = Delivery {
            event,
            body: bytes,
            received_at: chrono::Utc::now(),
            source: Source::Webhook,
            signature_timestamp: Some(verified.timestamp),
            secret_index: Some(verified.secret_index),
            signature: Some(verified.signature),
        };
        let started = std::time::Instant::now();
        match state.appender.append(delivery).await {
            Ok(appended) => {
                state.wake.notify_one();
                state.metrics.append_latency(started.elapsed());
                state.metrics.webhook(if appended.duplicate {
                    WebhookOutcome::Duplicate
                } else {
                    WebhookOutcome::Stored
                });
                tracing::info!(stripe.event_id = %event_id, log.position = appended.position,
                    duplicate = appended.duplicate,
                    duration_ms = started.elapsed().as_millis() as u64, "webhook stored");
                WebhookResponse::Received(Json(Received {
                    received: true,
                    event_id,
                    duplicate: appended.duplicate,
                }))
            }
            Err(AppendError::Internal(cause)) => {
                state.metrics.webhook(WebhookOutcome::Internal);
                tracing::error!(stripe.event_id = %event_id, webhook.outcome = "internal",
                    error = format!("{cause:#}"), "webhook not stored: internal error");
                WebhookResponse::Internal(body("event not stored (internal error); retry later"))
            }
            Err(error) => {
                state.metrics.webhook(WebhookOutcome::Unavailable);
                let cause = match &error {
                    AppendError::Unavailable(source) => format!("{source:#}"),
                    other => other.to_string(),
                };
                tracing::error!(stripe.event_id = %event_id, webhook.outcome = "unavailable",
                    error = %cause, "webhook not stored");
                WebhookResponse::Unavailable(body(format!(
                    "event not stored ({error}); retry later"
                )))
            }
        }
    }
}
