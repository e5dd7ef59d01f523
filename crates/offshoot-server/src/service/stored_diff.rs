//! The stored form of a data diff: how `offshoot_warehouse::data_diff::DataDiff` is kept in the
//! store's data-diff cache (JSON text), with conversions both ways. Its own types, so the
//! warehouse's are not shaped by JSON; [`FORMAT_VERSION`] changes with any change of this form,
//! and an entry that does not decode (corrupt, another version) is simply not a cache hit.

use offshoot_warehouse::data_diff::{
    ChangedRow, Column, ColumnDiff, DataDiff, KeyCheck, KeySource, NumericStats, RowCounts,
    Sampled, Samples, SchemaChange,
};
use serde::{Deserialize, Serialize};

/// The version of this form, part of every cache key: bump it when a field changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredDiff {
    version: u32,
    production_rows: Option<u64>,
    branch_rows: Option<u64>,
    schema: StoredSchema,
    key: Vec<String>,
    key_source: StoredKeySource,
    key_check: [u64; 4],
    rows: Option<[u64; 4]>,
    columns: Vec<StoredColumnDiff>,
    samples: StoredSamples,
    notes: Vec<String>,
    sampled: Option<[u64; 3]>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum StoredKeySource {
    Declared,
    Inferred,
    None,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredColumn {
    name: String,
    data_type: String,
    numeric: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSchema {
    added: Vec<StoredColumn>,
    removed: Vec<StoredColumn>,
    type_changed: Vec<(String, String, String)>,
    order_changed: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredStats {
    sum: Option<String>,
    min: Option<String>,
    max: Option<String>,
    nulls: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredColumnDiff {
    name: String,
    equal: Option<u64>,
    production: Option<StoredStats>,
    branch: Option<StoredStats>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredChangedRow {
    key: Vec<Option<String>>,
    cells: Vec<(Option<String>, Option<String>, bool)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSamples {
    columns: Vec<String>,
    added: Vec<Vec<Option<String>>>,
    removed: Vec<Vec<Option<String>>>,
    changed_columns: Vec<String>,
    changed: Vec<StoredChangedRow>,
}

fn column_out(c: &Column) -> StoredColumn {
    StoredColumn { name: c.name.clone(), data_type: c.data_type.clone(), numeric: c.numeric }
}

fn column_in(c: StoredColumn) -> Column {
    Column { name: c.name, data_type: c.data_type, numeric: c.numeric }
}

fn stats_out(s: &NumericStats) -> StoredStats {
    StoredStats { sum: s.sum.clone(), min: s.min.clone(), max: s.max.clone(), nulls: s.nulls }
}

fn stats_in(s: StoredStats) -> NumericStats {
    NumericStats { sum: s.sum, min: s.min, max: s.max, nulls: s.nulls }
}

/// The JSON text the cache keeps for `diff`.
pub fn encode(diff: &DataDiff) -> String {
    let stored = StoredDiff {
        version: FORMAT_VERSION,
        production_rows: diff.production_rows,
        branch_rows: diff.branch_rows,
        schema: StoredSchema {
            added: diff.schema.added.iter().map(column_out).collect(),
            removed: diff.schema.removed.iter().map(column_out).collect(),
            type_changed: diff.schema.type_changed.clone(),
            order_changed: diff.schema.order_changed,
        },
        key: diff.key.clone(),
        key_source: match diff.key_source {
            KeySource::Declared => StoredKeySource::Declared,
            KeySource::Inferred => StoredKeySource::Inferred,
            KeySource::None => StoredKeySource::None,
        },
        key_check: [
            diff.key_check.duplicates_in_production,
            diff.key_check.duplicates_in_branch,
            diff.key_check.nulls_in_production,
            diff.key_check.nulls_in_branch,
        ],
        rows: diff
            .rows
            .as_ref()
            .map(|r| [r.only_in_production, r.only_in_branch, r.changed, r.equal]),
        columns: diff
            .columns
            .iter()
            .map(|c| StoredColumnDiff {
                name: c.name.clone(),
                equal: c.equal,
                production: c.production.as_ref().map(stats_out),
                branch: c.branch.as_ref().map(stats_out),
            })
            .collect(),
        samples: StoredSamples {
            columns: diff.samples.columns.clone(),
            added: diff.samples.added.clone(),
            removed: diff.samples.removed.clone(),
            changed_columns: diff.samples.changed_columns.clone(),
            changed: diff
                .samples
                .changed
                .iter()
                .map(|r| StoredChangedRow { key: r.key.clone(), cells: r.cells.clone() })
                .collect(),
        },
        notes: diff.notes.clone(),
        sampled: diff.sampled.as_ref().map(|s| [s.modulus, s.production_rows, s.branch_rows]),
    };
    serde_json::to_string(&stored).expect("a diff of strings and numbers always serializes")
}

/// The diff `text` holds; `None` when it is not this version's form (corrupt, older, newer).
pub fn decode(text: &str) -> Option<DataDiff> {
    let stored: StoredDiff = serde_json::from_str(text).ok()?;
    if stored.version != FORMAT_VERSION {
        return None;
    }
    let [duplicates_in_production, duplicates_in_branch, nulls_in_production, nulls_in_branch] =
        stored.key_check;
    Some(DataDiff {
        production_rows: stored.production_rows,
        branch_rows: stored.branch_rows,
        schema: SchemaChange {
            added: stored.schema.added.into_iter().map(column_in).collect(),
            removed: stored.schema.removed.into_iter().map(column_in).collect(),
            type_changed: stored.schema.type_changed,
            order_changed: stored.schema.order_changed,
        },
        key: stored.key,
        key_source: match stored.key_source {
            StoredKeySource::Declared => KeySource::Declared,
            StoredKeySource::Inferred => KeySource::Inferred,
            StoredKeySource::None => KeySource::None,
        },
        key_check: KeyCheck {
            duplicates_in_production,
            duplicates_in_branch,
            nulls_in_production,
            nulls_in_branch,
        },
        rows: stored.rows.map(|[only_in_production, only_in_branch, changed, equal]| RowCounts {
            only_in_production,
            only_in_branch,
            changed,
            equal,
        }),
        columns: stored
            .columns
            .into_iter()
            .map(|c| ColumnDiff {
                name: c.name,
                equal: c.equal,
                production: c.production.map(stats_in),
                branch: c.branch.map(stats_in),
            })
            .collect(),
        samples: Samples {
            columns: stored.samples.columns,
            added: stored.samples.added,
            removed: stored.samples.removed,
            changed_columns: stored.samples.changed_columns,
            changed: stored
                .samples
                .changed
                .into_iter()
                .map(|r| ChangedRow { key: r.key, cells: r.cells })
                .collect(),
        },
        notes: stored.notes,
        sampled: stored.sampled.map(|[modulus, production_rows, branch_rows]| Sampled {
            modulus,
            production_rows,
            branch_rows,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_diff() -> DataDiff {
        let column = |name: &str, data_type: &str, numeric| Column {
            name: name.to_owned(),
            data_type: data_type.to_owned(),
            numeric,
        };
        let stats = |sum: &str, nulls| NumericStats {
            sum: Some(sum.to_owned()),
            min: None,
            max: Some("9.5".to_owned()),
            nulls,
        };
        DataDiff {
            production_rows: Some(2_700),
            branch_rows: Some(2_345),
            schema: SchemaChange {
                added: vec![column("new \"col\"", "TEXT", false)],
                removed: vec![column("select", "INT", true)],
                type_changed: vec![("amount".into(), "INT".into(), "REAL".into())],
                order_changed: true,
            },
            key: vec!["order_id".into()],
            key_source: KeySource::Inferred,
            key_check: KeyCheck {
                duplicates_in_production: 1,
                duplicates_in_branch: 2,
                nulls_in_production: 3,
                nulls_in_branch: 4,
            },
            rows: Some(RowCounts {
                only_in_production: 355,
                only_in_branch: 0,
                changed: 7,
                equal: 8,
            }),
            columns: vec![ColumnDiff {
                name: "amount".into(),
                equal: Some(5),
                production: Some(stats("10", 0)),
                branch: None,
            }],
            samples: Samples {
                columns: vec!["order_id".into(), "amount".into()],
                added: vec![vec![Some("1".into()), None]],
                removed: vec![vec![Some("2".into()), Some("\u{e9}\u{1f600}".into())]],
                changed_columns: vec!["amount".into()],
                changed: vec![ChangedRow {
                    key: vec![Some("3".into())],
                    cells: vec![(Some("1".into()), None, true)],
                }],
            },
            notes: vec!["key inferred".into()],
            sampled: Some(Sampled { modulus: 4, production_rows: 675, branch_rows: 586 }),
        }
    }

    #[test]
    fn a_diff_round_trips_through_its_stored_form() {
        let diff = full_diff();
        assert_eq!(decode(&encode(&diff)), Some(diff));
        let bare =
            DataDiff { rows: None, sampled: None, key_source: KeySource::None, ..full_diff() };
        assert_eq!(decode(&encode(&bare)), Some(bare));
    }

    #[test]
    fn corrupt_and_other_version_entries_do_not_decode() {
        let text = encode(&full_diff());
        assert_eq!(decode(&text[..text.len() / 2]), None, "cut short");
        assert_eq!(decode(""), None);
        assert_eq!(decode("{}"), None, "another shape");
        let other_version = text.replacen(
            &format!("\"version\":{FORMAT_VERSION}"),
            &format!("\"version\":{}", FORMAT_VERSION + 1),
            1,
        );
        assert_ne!(other_version, text);
        assert_eq!(decode(&other_version), None, "a newer version");
        let extra = text.replacen('{', "{\"extra\":1,", 1);
        assert_eq!(decode(&extra), None, "an unknown field");
    }
}
