//! The money tables (schema/V40): the only SQL over `invoices`, `payments`, `refunds`,
//! `disputes` and `credit_notes`.
//!
//! Writes come from the projector, inside the transaction that advances its checkpoint: one
//! upsert per table per batch (rows sent as one JSON array, expanded by `jsonb_to_recordset`),
//! so a hook on a table's changes has one place to go. Reads return each row as a JSON
//! object built by PostgreSQL (column names are the API's field names, times RFC 3339 UTC), which
//! the HTTP layer turns into its views. This module never decides what a row holds: the fold
//! does.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use projections::money::MoneyChanges;
use projections::{Currency, Ledger, TenantId};
use serde_json::Value;
use tokio_postgres::types::ToSql;

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Text,
    /// `bigint`: an amount in minor units or a count.
    Int,
    /// `timestamptz`, written from Unix seconds.
    Time,
    /// `text[]`.
    TextList,
}

/// A money table: its name and its columns in order (the CSV's order too). The first column
/// is the primary key `id`.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Column)],
}

use Column::{Int, Text, TextList, Time};

pub mod receivables;

pub const INVOICES: Table = Table {
    name: "invoices",
    columns: &[
        ("id", Text),
        ("tenant_id", Text),
        ("customer_id", Text),
        ("number", Text),
        ("status", Text),
        ("currency", Text),
        ("amount_due", Int),
        ("amount_paid", Int),
        ("amount_remaining", Int),
        ("subtotal", Int),
        ("total", Int),
        ("tax", Int),
        ("discount", Int),
        ("billing_reason", Text),
        ("subscription_id", Text),
        ("period_start", Time),
        ("period_end", Time),
        ("created_at", Time),
        ("finalized_at", Time),
        ("paid_at", Time),
        ("voided_at", Time),
        ("attempt_count", Int),
        ("hosted_invoice_url", Text),
        ("last_event_id", Text),
    ],
};

pub const PAYMENTS: Table = Table {
    name: "payments",
    columns: &[
        ("id", Text),
        ("kind", Text),
        ("tenant_id", Text),
        ("customer_id", Text),
        ("status", Text),
        ("amount", Int),
        ("amount_captured", Int),
        ("amount_refunded", Int),
        ("currency", Text),
        ("invoice_id", Text),
        ("failure_code", Text),
        ("failure_message", Text),
        ("paid_at", Time),
        ("created_at", Time),
        ("last_event_id", Text),
    ],
};

const REFUND_COLUMNS: &[(&str, Column)] = &[
    ("id", Text),
    ("tenant_id", Text),
    ("customer_id", Text),
    ("payment_id", Text),
    ("status", Text),
    ("amount", Int),
    ("currency", Text),
    ("reason", Text),
    ("created_at", Time),
    ("last_event_id", Text),
];

pub const REFUNDS: Table = Table {
    name: "refunds",
    columns: REFUND_COLUMNS,
};

pub const DISPUTES: Table = Table {
    name: "disputes",
    columns: REFUND_COLUMNS,
};

pub const CREDIT_NOTES: Table = Table {
    name: "credit_notes",
    columns: &[
        ("id", Text),
        ("tenant_id", Text),
        ("customer_id", Text),
        ("invoice_id", Text),
        ("status", Text),
        ("type", Text),
        ("amount", Int),
        ("currency", Text),
        ("refund_ids", TextList),
        ("created_at", Time),
        ("voided_at", Time),
        ("last_event_id", Text),
    ],
};

/// Every money table, for the rebuild's swap.
pub const TABLES: [Table; 5] = [INVOICES, PAYMENTS, REFUNDS, DISPUTES, CREDIT_NOTES];

impl Table {
    /// A `jsonb` object of the row aliased `t`, named by column; times as RFC 3339 UTC text
    /// whatever the session's `TimeZone` (`2025-01-31T12:00:00+00:00`, as chrono renders them).
    fn json_row(&self) -> String {
        let members: Vec<String> = self
            .columns
            .iter()
            .map(|(name, column)| match column {
                Time => format!(
                    "'{name}', to_char(t.\"{name}\" AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')"
                ),
                _ => format!("'{name}', t.\"{name}\""),
            })
            .collect();
        format!("jsonb_build_object({})", members.join(", "))
    }

    /// `INSERT ... ON CONFLICT (id) DO UPDATE` of the rows in `$1`, a JSON array of objects
    /// named like the columns (times in Unix seconds).
    fn upsert_sql(&self) -> String {
        let quoted = |name: &str| format!("\"{name}\"");
        let names: Vec<String> = self.columns.iter().map(|(n, _)| quoted(n)).collect();
        let definitions: Vec<String> = self
            .columns
            .iter()
            .map(|(name, column)| {
                let kind = match column {
                    Text => "text",
                    Int | Time => "bigint",
                    TextList => "text[]",
                };
                format!("{} {kind}", quoted(name))
            })
            .collect();
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|(name, column)| match column {
                Time => format!("to_timestamp(r.{})", quoted(name)),
                _ => format!("r.{}", quoted(name)),
            })
            .collect();
        let updates: Vec<String> = names[1..]
            .iter()
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        format!(
            "INSERT INTO {table} ({names}) SELECT {values}
             FROM jsonb_to_recordset($1::jsonb) AS r({definitions})
             ON CONFLICT (id) DO UPDATE SET {updates}",
            table = self.name,
            names = names.join(", "),
            values = values.join(", "),
            definitions = definitions.join(", "),
            updates = updates.join(", "),
        )
    }
}

/// Rows sent per upsert statement: a rebuild writes every row at once, and each statement's
/// JSON is built in memory (about 1 KB a row).
pub const UPSERT_ROWS_PER_STATEMENT: usize = 5_000;

async fn upsert<T: serde::Serialize + std::fmt::Debug + Sync>(
    tx: &Transaction<'_>,
    table: &Table,
    rows: &[T],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let statement = tx.prepare_cached(&table.upsert_sql()).await?;
    for chunk in rows.chunks(UPSERT_ROWS_PER_STATEMENT) {
        // Serialized straight into the statement's buffer, never as a `serde_json::Value`.
        tx.execute(&statement, &[&tokio_postgres::types::Json(chunk)])
            .await?;
    }
    Ok(())
}

/// Applies the fold's money changes: upserts every changed row and deletes deleted drafts;
/// the revenue movements go to [`crate::store::revenue::write`].
pub async fn write(tx: &Transaction<'_>, changes: &MoneyChanges) -> anyhow::Result<()> {
    let deleted: Vec<&str> = changes
        .invoices
        .iter()
        .filter(|(_, row)| row.is_none())
        .map(|(id, _)| id.as_str())
        .collect();
    if !deleted.is_empty() {
        let statement = tx
            .prepare_cached("DELETE FROM invoices WHERE id = ANY($1)")
            .await?;
        tx.execute(&statement, &[&deleted]).await?;
    }
    let invoices: Vec<_> = changes.invoices.values().flatten().collect();
    upsert(tx, &INVOICES, &invoices).await?;
    upsert(tx, &PAYMENTS, &changes.payments).await?;
    upsert(tx, &REFUNDS, &changes.refunds).await?;
    upsert(tx, &DISPUTES, &changes.disputes).await?;
    upsert(tx, &CREDIT_NOTES, &changes.credit_notes).await?;
    crate::store::revenue::write(tx, &changes.revenue).await?;
    Ok(())
}

/// Money rows rendered per chunk when a rebuild writes every row (so the rows of the whole
/// ledger are never in memory at once; about 1 KB a row).
pub const RENDER_ROWS_PER_CHUNK: usize = 10_000;

/// Writes the money rows a [`projections::Ledger::take_changes_deferring_money`] left out,
/// rendering them [`RENDER_ROWS_PER_CHUNK`] at a time (a rebuild's swap, in its transaction,
/// after [`clear`] emptied the tables). The tables are empty and each object renders once, so
/// the rows go in by binary `COPY`, not by upsert: at the benchmark's 1,000,000-event log the
/// upserts took about 24 s of a 66 s rebuild. A deleted draft renders no row (`None`) and is
/// skipped; the revenue movements are not deferred (they went with the other changes).
pub async fn write_deferred(tx: &Transaction<'_>, ledger: &mut Ledger) -> anyhow::Result<()> {
    while let Some(changes) = ledger.take_money_rows(RENDER_ROWS_PER_CHUNK) {
        let invoices: Vec<_> = changes.invoices.values().flatten().collect();
        copy_rows(tx, &INVOICES, &invoices).await?;
        copy_rows(tx, &PAYMENTS, &changes.payments).await?;
        copy_rows(tx, &REFUNDS, &changes.refunds).await?;
        copy_rows(tx, &DISPUTES, &changes.disputes).await?;
        copy_rows(tx, &CREDIT_NOTES, &changes.credit_notes).await?;
    }
    Ok(())
}

/// Appends `rows` to `table` by one binary `COPY`: each row is read by its JSON names, which
/// are the columns' (as [`upsert`] reads them), times from Unix seconds.
async fn copy_rows<T: serde::Serialize>(
    tx: &Transaction<'_>,
    table: &Table,
    rows: &[T],
) -> anyhow::Result<()> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            table.name,
            names.join(", ")
        ))
        .await?;
    let types: Vec<Type> = table
        .columns
        .iter()
        .map(|(_, column)| match column {
            Text => Type::TEXT,
            Int => Type::INT8,
            Time => Type::TIMESTAMPTZ,
            TextList => Type::TEXT_ARRAY,
        })
        .collect();
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    for row in rows {
        let values = copy_values(table, serde_json::to_value(row)?)?;
        let refs: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// One row's values in `table`'s column order, typed for [`copy_rows`].
fn copy_values(table: &Table, row: Value) -> anyhow::Result<Vec<Box<dyn ToSql + Sync + Send>>> {
    let Value::Object(mut row) = row else {
        anyhow::bail!("a {} row is not a JSON object", table.name);
    };
    table
        .columns
        .iter()
        .map(|(name, column)| {
            let value = row.remove(*name).unwrap_or(Value::Null);
            let typed: Box<dyn ToSql + Sync + Send> = match (column, value) {
                (Text, Value::String(text)) => Box::new(Some(text)),
                (Int, Value::Number(n)) => Box::new(Some(n.as_i64().ok_or_else(|| {
                    anyhow::anyhow!("{}.{name}: {n} is not a bigint", table.name)
                })?)),
                (Time, Value::Number(n)) => {
                    let at = n
                        .as_i64()
                        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
                    Box::new(Some(at.ok_or_else(|| {
                        anyhow::anyhow!("{}.{name}: {n} is not a time", table.name)
                    })?))
                }
                (TextList, Value::Array(items)) => Box::new(
                    items
                        .into_iter()
                        .map(|item| match item {
                            Value::String(text) => Ok(text),
                            other => Err(anyhow::anyhow!("{}.{name}: {other}", table.name)),
                        })
                        .collect::<anyhow::Result<Vec<String>>>()?,
                ),
                (Text, Value::Null) => Box::new(None::<String>),
                (Int, Value::Null) => Box::new(None::<i64>),
                (Time, Value::Null) => Box::new(None::<DateTime<Utc>>),
                (TextList, Value::Null) => Box::new(None::<Vec<String>>),
                (_, other) => anyhow::bail!("{}.{name}: unexpected {other}", table.name),
            };
            Ok(typed)
        })
        .collect()
}

/// Empties every money table and the revenue tables (a rebuild's swap, in its transaction; DELETE keeps readers on
/// the old rows until the commit).
pub async fn clear(tx: &Transaction<'_>) -> anyhow::Result<()> {
    for table in TABLES {
        tx.batch_execute(&format!("DELETE FROM {}", table.name))
            .await?;
    }
    crate::store::revenue::clear(tx).await?;
    Ok(())
}

/// `ANALYZE` of every money table and the revenue tables, after a rebuild reloaded them.
pub fn analyze_sql() -> String {
    let mut names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    names.extend(crate::store::revenue::TABLES);
    format!("ANALYZE {};", names.join(", "))
}

/// The filters of a money list; each applies only to tables that have the column.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub tenant_id: Option<TenantId>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub invoice_id: Option<String>,
    pub payment_id: Option<String>,
    pub status: Option<String>,
    pub currency: Option<Currency>,
    /// `created_at` at or after.
    pub from: Option<DateTime<Utc>>,
    /// `created_at` at or before.
    pub to: Option<DateTime<Utc>>,
}

/// Where a page starts: after this `(created_at, id)`, in that order.
pub type After = (DateTime<Utc>, String);

/// One page of `table`'s rows matching `filters`, ordered by `(created_at, id)`, after `after`,
/// at most `limit`; each row as a JSON object.
pub async fn list(
    client: &deadpool_postgres::Client,
    table: &Table,
    filters: &Filters,
    after: Option<&After>,
    limit: i64,
) -> anyhow::Result<Vec<Value>> {
    let mut sql = format!(
        "SELECT {} FROM {} t WHERE true",
        table.json_row(),
        table.name
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let has = |column: &str| table.columns.iter().any(|(name, _)| *name == column);
    let text_filters: [(&str, Option<&str>); 7] = [
        (
            "tenant_id",
            filters.tenant_id.as_ref().map(TenantId::as_str),
        ),
        ("customer_id", filters.customer_id.as_deref()),
        ("subscription_id", filters.subscription_id.as_deref()),
        ("invoice_id", filters.invoice_id.as_deref()),
        ("payment_id", filters.payment_id.as_deref()),
        ("status", filters.status.as_deref()),
        ("currency", filters.currency.as_ref().map(Currency::as_str)),
    ];
    for (column, value) in &text_filters {
        if let (true, Some(value)) = (has(column), value) {
            params.push(value);
            sql.push_str(&format!(" AND {column} = ${}", params.len()));
        }
    }
    for (operator, bound) in [(">=", &filters.from), ("<=", &filters.to)] {
        if let Some(bound) = bound {
            params.push(bound);
            sql.push_str(&format!(" AND created_at {operator} ${}", params.len()));
        }
    }
    if let Some((created_at, id)) = after {
        params.push(created_at);
        params.push(id);
        let n = params.len();
        sql.push_str(&format!(" AND (created_at, id) > (${}, ${n})", n - 1));
    }
    params.push(&limit);
    sql.push_str(&format!(" ORDER BY created_at, id LIMIT ${}", params.len()));
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &params).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// One row of `table` by ID, as a JSON object.
pub async fn get(
    client: &deadpool_postgres::Client,
    table: &Table,
    id: &str,
) -> anyhow::Result<Option<Value>> {
    let sql = format!(
        "SELECT {} FROM {} t WHERE id = $1",
        table.json_row(),
        table.name
    );
    let statement = client.prepare_cached(&sql).await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    Ok(row.map(|row| row.get(0)))
}

/// The refunds of an invoice's payments (by charge or PaymentIntent), as JSON objects.
pub async fn refunds_of_invoice(
    client: &deadpool_postgres::Client,
    invoice_id: &str,
) -> anyhow::Result<Vec<Value>> {
    let sql = format!(
        "SELECT {} FROM refunds t
         WHERE t.payment_id IN (SELECT id FROM payments WHERE invoice_id = $1)
         ORDER BY t.created_at, t.id",
        REFUNDS.json_row()
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &[&invoice_id]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
