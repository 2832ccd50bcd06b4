//! A preview's comparison of read-model tables: copies of the tables taken before the swap's
//! rewrite, and the rows that differ between two tables with the same primary key. Runs in
//! the caller's (a preview's) transaction, which rolls back.

use deadpool_postgres::Transaction;
use serde_json::Value;

/// Copies each of `tables` into a temporary table named `prefix` + its name, dropped at the end
/// of the transaction.
pub async fn copy_tables(
    tx: &Transaction<'_>,
    tables: &[&str],
    prefix: &str,
) -> anyhow::Result<()> {
    let mut sql = String::new();
    for table in tables {
        sql.push_str(&format!(
            "CREATE TEMP TABLE {prefix}{table} ON COMMIT DROP AS SELECT * FROM {table};"
        ));
    }
    tx.batch_execute(&sql).await?;
    Ok(())
}

/// Sets what the comparisons need for the rest of the transaction: times rendered in UTC, and
/// room to hash-join in memory.
pub async fn prepare(tx: &Transaction<'_>) -> anyhow::Result<()> {
    tx.batch_execute("SET LOCAL timezone = 'UTC'; SET LOCAL work_mem = '64MB';")
        .await?;
    Ok(())
}

/// Two tables of the same shape to compare on the primary key `key` (columns NOT NULL).
pub struct Compared<'a> {
    pub key: &'a [&'a str],
    pub before: &'a str,
    pub after: &'a str,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only in `after`.
    Added,
    /// Only in `before`.
    Removed,
    /// In both under the same key, with other values.
    Changed,
}

/// The rows of one kind: how many, and the first ones by key as a JSON array of
/// `{"key", "before", "after"}` (the key's columns joined by `/`, each side the whole row as a
/// JSON object, null where missing).
pub struct KindRows {
    pub kind: Kind,
    pub count: i64,
    pub rows: Value,
}

/// The differing rows of `tables`, one entry per kind present, at most `shown_max` rows shown
/// per kind.
pub async fn rows(
    tx: &Transaction<'_>,
    tables: &Compared<'_>,
    shown_max: i64,
) -> anyhow::Result<Vec<KindRows>> {
    let rows = tx.query(&diff_sql(tables), &[&shown_max]).await?;
    Ok(rows
        .iter()
        .map(|row| KindRows {
            kind: match row.get::<_, &str>(0) {
                "added" => Kind::Added,
                "removed" => Kind::Removed,
                "changed" => Kind::Changed,
                other => unreachable!("the diff query names no kind {other:?}"),
            },
            count: row.get(1),
            rows: row.get(2),
        })
        .collect())
}

/// One row per kind present: `(kind, count, first rows as a JSON array of RowChange)`.
/// `b` is the snapshot (before), `a` the rewritten table (after); key columns are NOT NULL,
/// so a null key marks the side a row is missing from.
fn diff_sql(tables: &Compared<'_>) -> String {
    let (before, after) = (tables.before, tables.after);
    let first = tables.key[0];
    let join: Vec<String> = tables
        .key
        .iter()
        .map(|k| format!("b.{k} = a.{k}"))
        .collect();
    let key: Vec<String> = tables
        .key
        .iter()
        .map(|k| format!("coalesce(a.{k}, b.{k})"))
        .collect();
    format!(
        "SELECT kind, count(*),
                coalesce(jsonb_agg(jsonb_build_object('key', key, 'before', before,
                    'after', after) ORDER BY key) FILTER (WHERE n <= $1), '[]'::jsonb)
         FROM (SELECT d.*, row_number() OVER (PARTITION BY kind ORDER BY key) AS n
               FROM (SELECT CASE WHEN b.{first} IS NULL THEN 'added'
                                 WHEN a.{first} IS NULL THEN 'removed'
                                 ELSE 'changed' END AS kind,
                            concat_ws('/', {key}) AS key,
                            CASE WHEN b.{first} IS NULL THEN NULL ELSE to_jsonb(b) END AS before,
                            CASE WHEN a.{first} IS NULL THEN NULL ELSE to_jsonb(a) END AS after
                     FROM {before} b FULL JOIN {after} a ON {join}
                     WHERE b IS DISTINCT FROM a) d) r
         GROUP BY kind",
        key = key.join(", "),
        join = join.join(" AND "),
    )
}
