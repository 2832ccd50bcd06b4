//! The finance routes over money (finance or admin token): invoices, payments, refunds,
//! disputes, credit notes and a tenant's balances. Lists page by keyset on
//! `(created_at, id)` with an opaque cursor; `Accept: text/csv` streams every match as CSV.
//! SQL stays in `store::money`; this module parses parameters and shapes answers.

use super::auth::TokenAuth;
use super::error::ApiError;
use super::money_views::{
    CreditNoteList, CreditNoteView, DisputeList, InvoiceDetail, InvoiceList, InvoiceView,
    ListOrCsv, PaymentList, PaymentView, RefundList, RefundView, TenantBalance,
};
use super::paging::{cursor_or, encode_cursor};
use super::AppState;
use crate::store::{
    self,
    money::{After, Filters, Table},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use poem::{Body, Request, RequestBody};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaParamIn, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, Object, OpenApi};
use projections::{Currency, TenantId};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// Default rows per page of a money list.
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// Most rows per page of a money list.
pub const PAGE_SIZE_MAX: u32 = 1000;
/// Rows fetched per query while streaming CSV.
pub const CSV_PAGE_ROWS: i64 = 1_000;

/// The query parameters of the money lists. Each filter combines with AND; a filter the list's
/// rows do not have (`subscription_id` on refunds, say) is refused with 400.
#[derive(Debug, Clone, Default, Object, serde::Deserialize)]
pub struct MoneyQuery {
    pub tenant_id: Option<String>,
    pub customer_id: Option<String>,
    /// Invoices only.
    pub subscription_id: Option<String>,
    /// Payments and credit notes.
    pub invoice_id: Option<String>,
    /// Refunds and disputes: the charge or PaymentIntent.
    pub payment_id: Option<String>,
    pub status: Option<String>,
    /// Lowercase ISO 4217 code.
    pub currency: Option<String>,
    /// `created_at` at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// `created_at` at or before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Rows per page, 1 to 1000 (default 100); with CSV, the most rows exported.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// [`MoneyQuery`] as one OpenAPI query parameter of object type (`style: form`,
/// `explode: true`: each member is its own `?name=value`), since poem-openapi binds one
/// parameter per argument.
pub struct ListQuery(pub MoneyQuery);

impl<'a> ApiExtractor<'a> for ListQuery {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    type ParamType = MoneyQuery;
    type ParamRawType = MoneyQuery;

    fn register(registry: &mut Registry) {
        MoneyQuery::register(registry);
    }

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Query)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(MoneyQuery::schema_ref())
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _options: ExtractParamOptions<MoneyQuery>,
    ) -> poem::Result<ListQuery> {
        let query: MoneyQuery = request
            .params()
            .map_err(|e| ApiError::bad_request(format!("query parameters: {e}")))?;
        if query
            .limit
            .is_some_and(|l| !(1..=PAGE_SIZE_MAX).contains(&l))
        {
            return Err(ApiError::bad_request("limit must be between 1 and 1000").into());
        }
        Ok(ListQuery(query))
    }
}

impl MoneyQuery {
    /// The filters, refusing those `table` has no column for.
    fn filters(&self, table: &Table) -> Result<Filters, ApiError> {
        let has = |column: &str| table.columns.iter().any(|(name, _)| *name == column);
        for (column, given) in [
            ("customer_id", self.customer_id.is_some()),
            ("subscription_id", self.subscription_id.is_some()),
            ("invoice_id", self.invoice_id.is_some()),
            ("payment_id", self.payment_id.is_some()),
        ] {
            if given && !has(column) {
                let message = format!("{} cannot be filtered by {column}", table.name);
                return Err(ApiError::bad_request(message));
            }
        }
        Ok(Filters {
            tenant_id: self.tenant_id.as_deref().map(TenantId::parse).transpose()?,
            customer_id: self.customer_id.clone(),
            subscription_id: self.subscription_id.clone(),
            invoice_id: self.invoice_id.clone(),
            payment_id: self.payment_id.clone(),
            status: self.status.clone(),
            currency: self.currency.as_deref().map(Currency::parse).transpose()?,
            from: self.from,
            to: self.to,
        })
    }
}

pub struct MoneyApi {
    pub state: Arc<AppState>,
}

/// The keyset position of a row returned by `store::money`.
fn after_key(row: &Value) -> Option<After> {
    let created_at = row.get("created_at")?.as_str()?.parse().ok()?;
    Some((created_at, row.get("id")?.as_str()?.to_owned()))
}

/// Rows read back from `store::money` as views; a row that does not fit is a bug (500).
fn views<V: DeserializeOwned>(rows: Vec<Value>) -> Result<Vec<V>, ApiError> {
    rows.into_iter()
        .map(|row| serde_json::from_value(row).map_err(|e| anyhow::Error::from(e).into()))
        .collect()
}

/// A page of views and the cursor after it, or the CSV export.
enum Listed<V> {
    Page(Vec<V>, Option<String>),
    Csv(Body),
}

impl MoneyApi {
    async fn list<V: DeserializeOwned>(
        &self,
        request: &Request,
        table: Table,
        query: MoneyQuery,
    ) -> Result<Listed<V>, ApiError> {
        let filters = query.filters(&table)?;
        let after: Option<After> = cursor_or(query.cursor.as_deref(), None)?;
        let wants_csv = request
            .header("accept")
            .is_some_and(|accept| accept.contains("text/csv"));
        if wants_csv {
            let total = query.limit.map(i64::from);
            let body =
                stream_csv(self.state.read_pool().await?, table, filters, after, total).await?;
            return Ok(Listed::Csv(body));
        }
        let limit = i64::from(query.limit.unwrap_or(PAGE_SIZE_DEFAULT));
        let client = self.state.read_pool().await?.get().await?;
        let mut rows =
            store::money::list(&client, &table, &filters, after.as_ref(), limit + 1).await?;
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .and_then(after_key)
                .map(|key| encode_cursor(Some(key)))
        } else {
            None
        };
        Ok(Listed::Page(views(rows)?, next_cursor))
    }
}

/// Streams every row of `table` matching `filters` after `after` (up to `total`) as CSV. The
/// first page is read before answering, so a refused query gets its 400 or 503; a later
/// failure ends the body abruptly, so a broken export cannot pass for a complete one.
async fn stream_csv(
    pool: Pool,
    table: Table,
    filters: Filters,
    after: Option<After>,
    total: Option<i64>,
) -> Result<Body, ApiError> {
    let mut remaining = total.unwrap_or(i64::MAX);
    let page = move |after: Option<After>, limit: i64| {
        let (pool, filters) = (pool.clone(), filters.clone());
        async move {
            let client = pool.get().await?;
            store::money::list(&client, &table, &filters, after.as_ref(), limit).await
        }
    };
    let first = page(after, CSV_PAGE_ROWS.min(remaining)).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let header = super::csv::money_header(&table);
        let _ = sender.send(Ok(Bytes::from(header))).await;
        let mut rows = first;
        loop {
            let mut chunk = String::new();
            for row in &rows {
                super::csv::money_record(&mut chunk, &table, row);
            }
            if !chunk.is_empty() && sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // the client went away
            }
            let full = rows.len() as i64 == CSV_PAGE_ROWS.min(remaining);
            remaining -= rows.len() as i64;
            if !full || remaining == 0 {
                return;
            }
            let after = rows.last().and_then(after_key);
            rows = match page(after, CSV_PAGE_ROWS.min(remaining)).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        table = table.name,
                        "CSV export failed mid-stream"
                    );
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

/// Builds a list answer from [`Listed`].
fn answer<V, L: poem_openapi::types::ToJSON + Send>(
    listed: Listed<V>,
    wrap: impl FnOnce(Vec<V>, Option<String>) -> L,
) -> ListOrCsv<L> {
    match listed {
        Listed::Page(rows, next_cursor) => ListOrCsv::Json(Json(wrap(rows, next_cursor))),
        Listed::Csv(body) => ListOrCsv::Csv(body),
    }
}

#[OpenApi]
impl MoneyApi {
    /// List invoices, oldest `created_at` first.
    ///
    /// Filters: `tenant_id`, `customer_id`, `subscription_id`, `status`, `currency`,
    /// `from`/`to` (`created_at`, inclusive). Pass `next_cursor` back as `cursor`.
    #[oai(
        path = "/api/billing/invoices",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn invoices(
        &self,
        request: &Request,
        _auth: TokenAuth,
        query: ListQuery,
    ) -> Result<ListOrCsv<InvoiceList>, ApiError> {
        let listed = self.list(request, store::money::INVOICES, query.0).await?;
        Ok(answer(listed, |invoices, next_cursor| InvoiceList {
            invoices,
            next_cursor,
        }))
    }

    /// One invoice, with the payments that paid it, their refunds, and its credit notes.
    #[oai(
        path = "/api/billing/invoices/:id",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn invoice(
        &self,
        _auth: TokenAuth,
        id: Path<String>,
    ) -> Result<Json<InvoiceDetail>, ApiError> {
        let client = self.state.read_pool().await?.get().await?;
        let invoice = store::money::get(&client, &store::money::INVOICES, &id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("invoice"))?;
        let by_invoice = Filters {
            invoice_id: Some(id.0.clone()),
            ..Filters::default()
        };
        let rows = |table| store::money::list(&client, table, &by_invoice, None, i64::MAX);
        let payments = rows(&store::money::PAYMENTS).await?;
        let credit_notes = rows(&store::money::CREDIT_NOTES).await?;
        let refunds = store::money::refunds_of_invoice(&client, &id.0).await?;
        Ok(Json(InvoiceDetail {
            invoice: serde_json::from_value::<InvoiceView>(invoice).map_err(anyhow::Error::from)?,
            payments: views(payments)?,
            refunds: views(refunds)?,
            credit_notes: views(credit_notes)?,
        }))
    }

    /// List payments (charges, PaymentIntents, InvoicePayments), oldest first.
    ///
    /// Filters: `tenant_id`, `customer_id`, `invoice_id`, `status`, `currency`, `from`/`to`.
    #[oai(
        path = "/api/billing/payments",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn payments(
        &self,
        request: &Request,
        _auth: TokenAuth,
        query: ListQuery,
    ) -> Result<ListOrCsv<PaymentList>, ApiError> {
        let listed = self.list::<PaymentView>(request, store::money::PAYMENTS, query.0);
        Ok(answer(listed.await?, |payments, next_cursor| PaymentList {
            payments,
            next_cursor,
        }))
    }

    /// List refunds, oldest first.
    ///
    /// Filters: `tenant_id`, `customer_id`, `payment_id`, `status`, `currency`, `from`/`to`.
    #[oai(
        path = "/api/billing/refunds",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn refunds(
        &self,
        request: &Request,
        _auth: TokenAuth,
        query: ListQuery,
    ) -> Result<ListOrCsv<RefundList>, ApiError> {
        let listed = self.list::<RefundView>(request, store::money::REFUNDS, query.0);
        Ok(answer(listed.await?, |refunds, next_cursor| RefundList {
            refunds,
            next_cursor,
        }))
    }

    /// List disputes, oldest first.
    ///
    /// Filters: `tenant_id`, `customer_id`, `payment_id`, `status`, `currency`, `from`/`to`.
    #[oai(
        path = "/api/billing/disputes",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn disputes(
        &self,
        request: &Request,
        _auth: TokenAuth,
        query: ListQuery,
    ) -> Result<ListOrCsv<DisputeList>, ApiError> {
        let listed = self.list::<RefundView>(request, store::money::DISPUTES, query.0);
        Ok(answer(listed.await?, |disputes, next_cursor| DisputeList {
            disputes,
            next_cursor,
        }))
    }

    /// List credit notes, oldest first.
    ///
    /// Filters: `tenant_id`, `customer_id`, `invoice_id`, `status`, `currency`, `from`/`to`.
    #[oai(
        path = "/api/billing/credit-notes",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn credit_notes(
        &self,
        request: &Request,
        _auth: TokenAuth,
        query: ListQuery,
    ) -> Result<ListOrCsv<CreditNoteList>, ApiError> {
        let listed = self.list::<CreditNoteView>(request, store::money::CREDIT_NOTES, query.0);
        Ok(answer(listed.await?, |credit_notes, next_cursor| {
            CreditNoteList {
                credit_notes,
                next_cursor,
            }
        }))
    }

    /// A tenant's balances, one per currency: invoiced, paid, refunded, disputed, won back,
    /// credited and outstanding (README "For finance" defines each).
    ///
    /// Folded from the tenant's events with the projector's code: all of them, or with
    /// `as_of` (RFC 3339) those Stripe created up to that instant. A tenant without money
    /// gets an empty list; one the log does not know, 404.
    #[oai(
        path = "/api/billing/tenants/:tenant_id/balance",
        method = "get",
        tag = "super::Tag::Read"
    )]
    async fn balance(
        &self,
        _auth: TokenAuth,
        tenant_id: Path<String>,
        as_of: Query<Option<DateTime<Utc>>>,
    ) -> Result<Json<TenantBalance>, ApiError> {
        use crate::timeline::{self, Bound};
        let bound = as_of.0.map_or(Bound::All, Bound::CreatedAtOrBefore);
        let livemode = self.state.config.livemode;
        let tenant = projections::TenantId::parse(&tenant_id.0)?;
        let (balances, events) =
            timeline::balances(&self.state.read_pool().await?, &tenant, livemode, bound).await?;
        if events == 0 && as_of.0.is_none() {
            return Err(ApiError::not_found("tenant"));
        }
        Ok(Json(TenantBalance {
            tenant_id: tenant_id.0,
            as_of: as_of.0,
            balances: balances.into_iter().map(Into::into).collect(),
        }))
    }
}
