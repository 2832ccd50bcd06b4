//! What the invoices and payments pages share: the money API's own filters (`status`,
//! `currency`, `tenant_id`, `from`/`to` on `created_at`) typed in a GET form, and paging by
//! the API's cursor (oldest first, 100 rows a page), so each page's "next" is the API's
//! `next_cursor` and its source link fetches the same rows.

use super::layout::encode;
use super::{Console, PageError};
use crate::http::paging::{cursor_or, encode_cursor};
use crate::store::{
    self,
    money::{After, Filters, Table},
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use maud::{html as markup, Markup};
use projections::{Currency, TenantId};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Rows per page of the console's invoices and payments lists.
pub const LIST_PAGE_ROWS: i64 = 100;

/// The form's fields, as typed.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ListFilters {
    #[serde(default)]
    pub status: String,
    /// ISO 4217 code, any case.
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub tenant_id: String,
    /// `created_at` at or after: a day (`2025-01-31`, from its start, UTC) or RFC 3339.
    #[serde(default)]
    pub from: String,
    /// `created_at` at or before: a day (to its end, UTC) or RFC 3339.
    #[serde(default)]
    pub to: String,
    /// The API's `next_cursor`.
    #[serde(default)]
    pub cursor: String,
}

fn nonempty(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// A day or an instant as typed; `end_of_day` reads a bare day as its last second. 400 for
/// anything else, naming the field.
fn bound(text: &str, name: &str, end_of_day: bool) -> Result<Option<DateTime<Utc>>, PageError> {
    let Some(text) = nonempty(text) else {
        return Ok(None);
    };
    let parsed = DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M")
                .ok()
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            let day = NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok()?;
            let time = if end_of_day {
                NaiveTime::from_hms_opt(23, 59, 59)?
            } else {
                NaiveTime::MIN
            };
            Some(day.and_time(time).and_utc())
        });
    parsed.map(Some).ok_or_else(|| {
        PageError::BadRequest(format!(
            "{name} must be a day such as 2025-01-31 or an instant such as 2025-01-31T00:00:00Z"
        ))
    })
}

impl ListFilters {
    /// The store's filters and where the page starts; 400 for a malformed date or cursor.
    pub fn parse(&self) -> Result<(Filters, Option<After>), PageError> {
        let filters = Filters {
            tenant_id: nonempty(&self.tenant_id)
                .map(|t| TenantId::parse(&t))
                .transpose()?,
            status: nonempty(&self.status),
            currency: nonempty(&self.currency)
                .map(|c| Currency::parse(&c))
                .transpose()?,
            from: bound(&self.from, "from", false)?,
            to: bound(&self.to, "to", true)?,
            ..Filters::default()
        };
        let after: Option<After> = cursor_or(nonempty(&self.cursor).as_deref(), None)?;
        Ok((filters, after))
    }

    /// The filters as the API's query string (times in RFC 3339), without the cursor.
    pub fn api_query(filters: &Filters) -> String {
        let mut pairs = Vec::new();
        let texts = [
            (
                "tenant_id",
                filters.tenant_id.as_ref().map(TenantId::as_str),
            ),
            ("status", filters.status.as_deref()),
            ("currency", filters.currency.as_ref().map(Currency::as_str)),
        ];
        for (name, value) in texts {
            if let Some(value) = value {
                pairs.push(format!("{name}={}", encode(value)));
            }
        }
        for (name, value) in [("from", filters.from), ("to", filters.to)] {
            if let Some(value) = value {
                let text = value.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                pairs.push(format!("{name}={}", encode(&text)));
            }
        }
        pairs.join("&")
    }

    /// The fields as typed, as this page's query string, without the cursor.
    pub fn console_query(&self) -> String {
        [
            ("status", &self.status),
            ("currency", &self.currency),
            ("tenant_id", &self.tenant_id),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// A page of `table`'s rows as views, and the cursor of the next page when there is one.
pub async fn page_of<V: DeserializeOwned>(
    console: &Console,
    table: &Table,
    filters: &Filters,
    after: Option<&After>,
) -> Result<(Vec<V>, Option<String>), PageError> {
    let client = console.state.read_pool().await?.get().await?;
    let mut rows = store::money::list(&client, table, filters, after, LIST_PAGE_ROWS + 1).await?;
    let next = if rows.len() as i64 > LIST_PAGE_ROWS {
        rows.truncate(LIST_PAGE_ROWS as usize);
        rows.last()
            .and_then(after_key)
            .map(|k| encode_cursor(Some(k)))
    } else {
        None
    };
    let views = rows
        .into_iter()
        .map(|row| serde_json::from_value(row).map_err(anyhow::Error::from))
        .collect::<Result<Vec<V>, _>>()?;
    Ok((views, next))
}

/// The keyset position of a row from `store::money::list`, as the API's cursor holds it.
fn after_key(row: &Value) -> Option<After> {
    let created_at = row.get("created_at")?.as_str()?.parse().ok()?;
    Some((created_at, row.get("id")?.as_str()?.to_owned()))
}

/// The filter form; `statuses` makes the status a list to choose from.
pub fn form(action: &str, typed: &ListFilters, statuses: Option<&[&str]>) -> Markup {
    markup! {
        form.filters method="get" action=(action) role="search" {
            @match statuses {
                Some(statuses) => label { "Status"
                    select name="status" {
                        option value="" { "any" }
                        @for status in statuses {
                            option value=(status) selected[typed.status == *status] { (status) }
                        }
                    }
                },
                None => label { "Status" input type="text" name="status" value=(typed.status); },
            }
            label { "Currency (ISO code)" input type="text" name="currency" size="5" value=(typed.currency); }
            label { "Tenant ID" input type="text" name="tenant_id" value=(typed.tenant_id); }
            label { "Created from (UTC day)" input type="date" name="from" value=(typed.from); }
            label { "Created to (UTC day)" input type="date" name="to" value=(typed.to); }
            button type="submit" { "Filter" }
        }
    }
}

/// The links to the first and the next page.
pub fn pager(action: &str, typed: &ListFilters, shown: usize, next: Option<&str>) -> Markup {
    let query = typed.console_query();
    markup! {
        nav.pager aria-label="Pages" {
            p role="status" { (shown) " on this page, oldest first." }
            @if !typed.cursor.trim().is_empty() {
                a href={ (action) "?" (query) } { "First page" } " "
            }
            @if let Some(next) = next {
                a rel="next" href={ (action) "?" (query) "&cursor=" (encode(next)) } { "Next page" }
            }
        }
    }
}
