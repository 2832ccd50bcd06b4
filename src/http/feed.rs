//! `GET /api/billing/changes`: the change feed as pages (with long-poll) or Server-Sent Events
//! (platform, finance or admin token). Reads only; the feed is written by the database at each
//! read-model commit (`crate::feed`).

use super::auth::PlatformAuth;
use super::error::ApiError;
use super::AppState;
use crate::feed::{self, Change, Filter};
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use poem::web::sse::Event;
use poem::{IntoResponse, Response};
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::{EventStream, Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Interval of the SSE heartbeat comment (`:`), so proxies keep an idle stream open.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// The change feed's route.
pub struct FeedApi {
    pub state: Arc<AppState>,
}

/// One change of one read-model row.
#[derive(Debug, Clone, Object)]
pub struct ChangeView {
    /// Where this change is in the feed: pass it as `after` (or `Last-Event-ID`) to read what
    /// follows it. Opaque; today the change's number, dense and in commit order.
    pub cursor: String,
    /// `tenant_pricing`, `entitlements`, `checkout_sessions`, `customers`, ...
    pub read_model: String,
    /// The row's key in its read model (`tenant_id`, or `id`).
    pub key: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    /// The row before the change (null when it was created) and after (null when deleted),
    /// with the read model's column names; times RFC 3339 UTC, money integer minor units.
    #[oai(nullable)]
    pub before: Option<serde_json::Value>,
    #[oai(nullable)]
    pub after: Option<serde_json::Value>,
    /// The event the row last took (for a deletion, before it).
    #[oai(nullable)]
    pub event_id: Option<String>,
    /// That event's log position.
    #[oai(nullable)]
    pub position: Option<i64>,
    /// `event` (the projector folded an event), `rebuild`, `plans_reload` or `grace_expired`.
    pub cause: String,
    pub recorded_at: DateTime<Utc>,
}

impl ChangeView {
    /// The view of a change read by `crate::feed` (the same fields as `Change::to_json`).
    pub fn from_change(change: Change) -> ChangeView {
        ChangeView {
            cursor: change.id.to_string(),
            read_model: change.read_model,
            key: change.key,
            tenant_id: change.tenant_id,
            before: change.before,
            after: change.after,
            event_id: change.event_id,
            position: change.position,
            cause: change.cause,
            recorded_at: change.recorded_at,
        }
    }
}

/// A page of the feed.
#[derive(Debug, Object)]
pub struct ChangeList {
    pub changes: Vec<ChangeView>,
    /// Where to continue: past every change this read scanned, including those the filters
    /// skipped. Never null; equal to `after` when nothing new arrived.
    pub next_cursor: String,
}

type ChangeStream = BoxStream<'static, ChangeView>;

/// The feed as a JSON page, or with `Accept: text/event-stream` an endless SSE stream.
pub enum ChangesResponse {
    Json(Json<ChangeList>),
    Stream(EventStream<ChangeStream>),
}

impl IntoResponse for ChangesResponse {
    fn into_response(self) -> Response {
        match self {
            ChangesResponse::Json(json) => json.into_response(),
            ChangesResponse::Stream(stream) => stream.into_response(),
        }
    }
}

impl ApiResponse for ChangesResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "A page of changes (JSON), or with `Accept: text/event-stream` \
                              Server-Sent Events: each change as an event whose `id:` is its \
                              cursor, and a `:` comment every 15 s.",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: <Json<ChangeList> as Payload>::schema_ref(),
                    },
                    MetaMediaType {
                        content_type: "text/event-stream",
                        schema: <EventStream<ChangeStream> as Payload>::schema_ref(),
                    },
                ],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        <Json<ChangeList> as Payload>::register(registry);
    }
}

/// Reads a feed cursor; 400 for anything else.
fn parse_cursor(cursor: Option<&str>) -> Result<i64, ApiError> {
    match cursor {
        None | Some("") => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| ApiError::bad_request("cursor is not one this API returned")),
    }
}

#[OpenApi]
impl FeedApi {
    /// Read-model changes in commit order (the change feed).
    ///
    /// Each change names its read model and row, the row before and after, the event that
    /// caused it with its log position, and its cursor. Start with no `after` (the feed's
    /// beginning; cursors never expire) and pass `next_cursor` back. With `wait` (seconds, up
    /// to 60) an empty page waits until a change arrives. Filters `read_model` and `tenant_id`
    /// skip other changes, and `next_cursor` still moves past them. With
    /// `Accept: text/event-stream` the answer is an endless SSE stream from `after` (or the
    /// `Last-Event-ID` header, which wins), with a heartbeat comment every 15 s.
    #[oai(
        path = "/api/billing/changes",
        method = "get",
        tag = "super::Tag::Platform"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn changes(
        &self,
        request: &poem::Request,
        _auth: PlatformAuth,
        after: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<u32>>,
        #[oai(validator(minimum(value = "0"), maximum(value = "60")))] wait: Query<Option<u32>>,
        read_model: Query<Option<String>>,
        tenant_id: Query<Option<String>>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<String>>,
    ) -> Result<ChangesResponse, ApiError> {
        let filter = Filter {
            read_model: read_model.0,
            tenant_id: tenant_id.0,
        };
        let limit = limit.0.map_or(feed::PAGE_SIZE_DEFAULT, i64::from);
        let wants_stream = request
            .header("accept")
            .is_some_and(|accept| accept.contains("text/event-stream"));
        if wants_stream {
            let from = parse_cursor(last_event_id.0.as_deref().or(after.0.as_deref()))?;
            // The first page is read before answering, so an outage is a 503, not a dead stream.
            let client = self.state.pool.get().await?;
            let first = feed::page(&client, from, limit, &filter).await?;
            let stream = stream_changes(self.state.clone(), first, filter, limit);
            return Ok(ChangesResponse::Stream(
                EventStream::new(stream)
                    .keep_alive(HEARTBEAT_INTERVAL)
                    .to_event(|change| {
                        Event::message(change.to_json_string()).id(change.cursor.clone())
                    }),
            ));
        }
        let after = parse_cursor(after.0.as_deref())?;
        let wait = Duration::from_secs(u64::from(wait.0.unwrap_or(0).min(feed::WAIT_SECS_MAX)));
        let page = long_poll(&self.state, after, limit, &filter, wait).await?;
        Ok(ChangesResponse::Json(Json(ChangeList {
            changes: page
                .changes
                .into_iter()
                .map(ChangeView::from_change)
                .collect(),
            next_cursor: page.next.to_string(),
        })))
    }
}

/// A page after `after`; when it has no change, re-reads on each feed notification until one
/// arrives or `wait` has passed.
async fn long_poll(
    state: &AppState,
    after: i64,
    limit: i64,
    filter: &Filter,
    wait: Duration,
) -> Result<feed::Page, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut subscription = state.watcher.subscribe();
    let mut after = after;
    loop {
        let page = {
            let client = state.pool.get().await?;
            feed::page(&client, after, limit, filter).await?
        };
        if !page.changes.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(page);
        }
        // A filtered reader skips what it scanned, so the wait resumes past it.
        after = page.next;
        subscription.wait(deadline).await;
    }
}

/// The endless stream of changes from `first` on; ends (the client reconnects with
/// `Last-Event-ID`) when the database fails.
fn stream_changes(
    state: Arc<AppState>,
    first: feed::Page,
    filter: Filter,
    limit: i64,
) -> ChangeStream {
    struct Cursor {
        state: Arc<AppState>,
        filter: Filter,
        buffered: VecDeque<Change>,
        next: i64,
        subscription: crate::feed::watch::Subscription,
    }
    let cursor = Cursor {
        subscription: state.watcher.subscribe(),
        state,
        filter,
        buffered: first.changes.into(),
        next: first.next,
    };
    Box::pin(futures_util::stream::unfold(
        cursor,
        move |mut c| async move {
            loop {
                if let Some(change) = c.buffered.pop_front() {
                    return Some((ChangeView::from_change(change), c));
                }
                let page = match c.state.pool.get().await {
                    Ok(client) => feed::page(&client, c.next, limit, &c.filter).await,
                    Err(error) => Err(error.into()),
                };
                match page {
                    Ok(page) => {
                        let empty = page.changes.is_empty();
                        c.buffered = page.changes.into();
                        c.next = page.next;
                        if empty {
                            let far = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
                            c.subscription.wait(far).await;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "change stream ended: database error"
                        );
                        return None;
                    }
                }
            }
        },
    ))
}
