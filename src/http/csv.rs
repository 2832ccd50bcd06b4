//! `GET /api/billing/events` as CSV (RFC 4180): a header row, then the rows in log order,
//! streamed page by page from the database so an export of any size is never held in memory.

use crate::store::log::reads::{events_page, EventFilters};
use crate::store::money::Table;
use crate::views::{EventList, EventSummary};

use bytes::Bytes;
use deadpool_postgres::Pool;
use poem::{Body, IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::ApiResponse;

/// Rows fetched per query while streaming CSV.
pub const CSV_PAGE_ROWS: i64 = 1_000;

/// The CSV header: the JSON fields of an event, in order, then the money columns (the
/// event's tenants, `;`-separated, and its object's customer, amount and currency).
pub const HEADER: &str = "position,event_id,type,created,api_version,livemode,account,object_id,object_type,received_at,source,tenant_id,customer_id,amount,currency\r\n";

/// A list of events as JSON (one page) or CSV (every matching row, streamed).
pub enum EventsResponse {
    Json(Json<EventList>),
    Csv(Body),
}

impl IntoResponse for EventsResponse {
    fn into_response(self) -> Response {
        match self {
            EventsResponse::Json(json) => json.into_response(),
            EventsResponse::Csv(body) => Response::builder()
                .content_type("text/csv; charset=utf-8")
                .body(body),
        }
    }
}

impl ApiResponse for EventsResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "A page of events (JSON), or with `Accept: text/csv` every matching \
                              event from `cursor` on, up to `limit` when given (CSV, RFC 4180).",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: <Json<EventList> as Payload>::schema_ref(),
                    },
                    MetaMediaType {
                        content_type: "text/csv; charset=utf-8",
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                    },
                ],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        <Json<EventList> as Payload>::register(registry);
    }
}

/// One field, quoted when it holds a comma, quote or line break (RFC 4180 section 2).
///
/// Text that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return, and not a number) is written with a leading `'`, as OWASP's "CSV
/// Injection" advice says: a tenant ID or a metadata value comes from whoever could edit a
/// Stripe object, and finance opens these files in a spreadsheet. Numbers, negative amounts
/// included, are written as they are.
pub fn field(out: &mut String, value: &str) {
    let neutralized;
    let value = if runs_as_formula(value) {
        neutralized = format!("'{value}");
        neutralized.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Whether a spreadsheet would take `value` for a formula (see [`field`]).
fn runs_as_formula(value: &str) -> bool {
    value.starts_with(['=', '+', '-', '@', '\t', '\r']) && value.parse::<i64>().is_err()
}

/// One event as a CSV record, CRLF-terminated.
pub fn record(out: &mut String, e: &EventSummary) {
    // The same rendering as the JSON answers (chrono's RFC 3339, `+00:00`).
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339();
    let money = e.money.clone().unwrap_or_default();
    let fields = [
        e.position.to_string(),
        e.event_id.clone(),
        e.event_type.clone(),
        time(&e.created),
        e.api_version.clone().unwrap_or_default(),
        e.livemode.to_string(),
        e.account.clone().unwrap_or_default(),
        e.object_id.clone().unwrap_or_default(),
        e.object_type.clone().unwrap_or_default(),
        time(&e.received_at),
        e.source.clone(),
        money.tenant_ids.clone().unwrap_or_default(),
        money.customer_id.clone().unwrap_or_default(),
        money.amount.map(|a| a.to_string()).unwrap_or_default(),
        money.currency.clone().unwrap_or_default(),
    ];
    for (i, value) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, value);
    }
    out.push_str("\r\n");
}

/// Streams every event matching `filters`, from `after` on, up to `total` rows when given.
///
/// The first page is read before answering, so a query PostgreSQL refuses (a bad parameter, an
/// outage) gets its status line (400, 503) like the JSON answer. A later page that fails ends
/// the transfer abruptly (no final chunk), so a client cannot mistake a broken export for a
/// complete one.
pub async fn stream(
    pool: Pool,
    filters: EventFilters,
    after: i64,
    total: Option<i64>,
) -> Result<Body, super::error::ApiError> {
    let mut remaining = total.unwrap_or(i64::MAX);
    let first = events_page(&pool, &filters, after, CSV_PAGE_ROWS.min(remaining)).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let _ = sender.send(Ok(Bytes::from_static(HEADER.as_bytes()))).await;
        let mut rows = first;
        let mut after = after;
        loop {
            let mut chunk = String::new();
            for event in &rows {
                after = event.position;
                record(&mut chunk, event);
            }
            if !chunk.is_empty() && sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // the client went away
            }
            if (rows.len() as i64) < CSV_PAGE_ROWS.min(remaining) {
                return;
            }
            remaining -= rows.len() as i64;
            if remaining == 0 {
                return;
            }
            rows = match events_page(&pool, &filters, after, CSV_PAGE_ROWS.min(remaining)).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "CSV export failed mid-stream");
                    let _ = sender
                        .send(Err(std::io::Error::other("export failed")))
                        .await;
                    return;
                }
            };
        }
    });
    Ok(Body::from_bytes_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    )))
}

/// One money row (a JSON object from [`crate::store::money::list`]) as a CSV record in `table`'s column order,
/// CRLF-terminated (RFC 4180, with text a spreadsheet would run as a formula neutralized, see
/// [`field`]): null is empty, a list is its JSON text.
pub fn money_record(out: &mut String, table: &Table, row: &serde_json::Value) {
    for (i, (name, _)) in table.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = match row.get(*name) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        field(out, &text);
    }
    out.push_str("\r\n");
}

/// `table`'s CSV header row.
pub fn money_header(table: &Table) -> String {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    format!("{}\r\n", names.join(","))
}

#[cfg(test)]
mod tests {
    use super::field;

    fn written(value: &str) -> String {
        let mut out = String::new();
        field(&mut out, value);
        out
    }

    #[test]
    fn formulas_are_neutralized_and_numbers_kept() {
        assert_eq!(written("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(written("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(written("+1+2"), "'+1+2");
        assert_eq!(written("-4900"), "-4900");
        assert_eq!(written("+4900"), "+4900");
        assert_eq!(written("tenant-acme"), "tenant-acme");
        assert_eq!(written("a,b"), "\"a,b\"");
    }
}
