//! `billing-ledger rebuild --preview`'s output: a table of what a rebuild would change per read
//! model, then each shown row (changed rows by the columns that differ), or with `--json` the
//! admin API's `GET /api/billing/admin/rebuilds/{rebuild_id}` answer.

use crate::http::admin::RebuildDetail;
use crate::projector::preview::{Diff, RowChange};
use crate::projector::status::RebuildRecord;
use poem_openapi::types::ToJSON;
use serde_json::Value;

/// Prints a finished preview.
pub fn print(record: &RebuildRecord, json: bool) -> anyhow::Result<()> {
    let detail = RebuildDetail::new(record.clone())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&detail.to_json())?);
        return Ok(());
    }
    let Some(diff) = &detail.diff else {
        anyhow::bail!(
            "rebuild {} has no diff (not a finished preview)",
            record.rebuild_id
        );
    };
    print!("{}", summary(record, diff));
    Ok(())
}

/// The human-readable report.
fn summary(record: &RebuildRecord, diff: &Diff) -> String {
    let mut out = format!(
        "preview {}: a rebuild at log position {} would change {} rows\n",
        record.rebuild_id,
        record.position_done,
        diff.total()
    );
    out.push_str(&format!(
        "  {:<20} {:>9} {:>9} {:>9}\n",
        "read model", "added", "removed", "changed"
    ));
    for model in &diff.read_models {
        out.push_str(&format!(
            "  {:<20} {:>9} {:>9} {:>9}\n",
            model.read_model, model.added.count, model.removed.count, model.changed.count
        ));
    }
    for model in &diff.read_models {
        for (kind, changes) in [
            ("added", &model.added),
            ("removed", &model.removed),
            ("changed", &model.changed),
        ] {
            for row in &changes.rows {
                out.push_str(&format!(
                    "  {kind} {} {}{}\n",
                    model.read_model,
                    row.key,
                    fields(row)
                ));
            }
            let hidden = changes.count - changes.rows.len() as i64;
            if hidden > 0 {
                out.push_str(&format!(
                    "  ... and {hidden} more {kind} in {}\n",
                    model.read_model
                ));
            }
        }
    }
    out
}

/// `: column before -> after, ...` for a changed row; nothing for an added or removed one.
fn fields(row: &RowChange) -> String {
    let (Some(Value::Object(before)), Some(Value::Object(after))) = (&row.before, &row.after)
    else {
        return String::new();
    };
    let differing: Vec<String> = after
        .iter()
        .filter(|(column, value)| before.get(*column) != Some(*value))
        .map(|(column, value)| {
            let old = before.get(column).unwrap_or(&Value::Null);
            format!("{column} {old} -> {value}")
        })
        .collect();
    format!(": {}", differing.join(", "))
}
