//! What a branch does to an asset's data: its table in the branch against production's, computed
//! inside the warehouse with SQL (only counts and a bounded sample leave it). The queries are
//! built here from the two tables' columns, for any backend through a [`Flavor`]; each backend
//! runs them with a [`SqlRunner`] and describes its tables.
//!
//! With a key (declared, or inferred from the data and said so) rows are matched by it: only in
//! production, only in the branch, in both and changed, in both and equal, and per column the
//! share of matched rows whose value is equal (NULL equals NULL). A key with duplicates or NULLs
//! on either side is reported and not joined on. Without a key the rows are compared as
//! multisets (whole rows), and nothing can be "changed".

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::{WarehouseError, WarehouseResult};

/// One column of a table, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The type as the engine declares it (`INT`, `text`, `numeric(12,2)`; empty if none).
    pub data_type: String,
    pub numeric: bool,
}

/// Which columns identify a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRequest {
    /// Declared (`grain` in the asset header, dbt's `unique_key`, ...) or asked for.
    Declared(Vec<String>),
    /// Look for a column that is unique and never NULL on both sides.
    Infer,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiffOptions {
    pub key: KeyRequest,
    /// Rows per sample (added, removed, changed). Default 10.
    pub sample: usize,
    /// Numeric values closer than this are equal. Default 0: exact.
    pub tolerance: f64,
}

impl Default for DiffOptions {
    fn default() -> DiffOptions {
        DiffOptions { key: KeyRequest::Infer, sample: 10, tolerance: 0.0 }
    }
}

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Declared,
    Inferred,
    None,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Declared => "declared",
            KeySource::Inferred => "inferred",
            KeySource::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchemaChange {
    pub added: Vec<Column>,
    pub removed: Vec<Column>,
    /// (column, production's type, the branch's type)
    pub type_changed: Vec<(String, String, String)>,
    /// The common columns are in another order.
    pub order_changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyCheck {
    pub duplicates_in_production: u64,
    pub duplicates_in_branch: u64,
    pub nulls_in_production: u64,
    pub nulls_in_branch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowCounts {
    pub only_in_production: u64,
    pub only_in_branch: u64,
    /// In both, some value differs (keyed diffs only).
    pub changed: u64,
    pub equal: u64,
}

/// Sum, min, max and NULL count of a numeric column on one side (as the engine prints them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NumericStats {
    pub sum: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub nulls: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDiff {
    pub name: String,
    /// Matched rows (keyed) whose value in this column is equal; `None` without a key.
    pub equal: Option<u64>,
    pub production: Option<NumericStats>,
    pub branch: Option<NumericStats>,
}

/// One sample row: its values as text (NULL is `None`), in the order of [`Samples::columns`].
pub type Row = Vec<Option<String>>;

/// A matched row whose values differ: the key's values, then per compared column (production,
/// branch, differs).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedRow {
    pub key: Row,
    pub cells: Vec<(Option<String>, Option<String>, bool)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Samples {
    /// The columns of added and removed rows.
    pub columns: Vec<String>,
    pub added: Vec<Row>,
    pub removed: Vec<Row>,
    /// The columns of a changed row's cells (the compared, non-key columns).
    pub changed_columns: Vec<String>,
    pub changed: Vec<ChangedRow>,
}

/// The whole diff of one asset.
#[derive(Debug, Clone, PartialEq)]
pub struct DataDiff {
    /// `None` where the table does not exist (a new asset; one not yet built in the branch is
    /// reported by the caller, who knows what the branch built).
    pub production_rows: Option<u64>,
    pub branch_rows: Option<u64>,
    pub schema: SchemaChange,
    pub key: Vec<String>,
    pub key_source: KeySource,
    pub key_check: KeyCheck,
    /// `None` when one side is missing.
    pub rows: Option<RowCounts>,
    pub columns: Vec<ColumnDiff>,
    pub samples: Samples,
    /// What a reader must know: no key, why a key was not used, an inferred key, ...
    pub notes: Vec<String>,
}

/// How a backend's SQL differs where the diff needs it.
pub trait Flavor: Send + Sync {
    fn quote(&self, name: &str) -> String;
    /// `a` and `b` are equal or both NULL.
    fn same(&self, a: &str, b: &str) -> String;
    /// The value as text (NULL stays NULL).
    fn text(&self, expr: &str) -> String;
    /// The value where it is a number, NULL otherwise (SQLite columns may mix types).
    fn number(&self, expr: &str) -> String {
        expr.to_owned()
    }
    /// Whether any column may hold numbers whatever its declared type (SQLite), so a tolerance
    /// applies to every column through [`Flavor::number`].
    fn loosely_typed(&self) -> bool {
        false
    }
}

/// Runs a query whose every column the caller cast to text; rows of optional texts.
#[async_trait]
pub trait SqlRunner: Send {
    async fn rows(&mut self, sql: &str) -> WarehouseResult<Vec<Row>>;
}

/// The two tables: their references in SQL (already quoted and qualified) and their columns;
/// `None` for a side that does not exist.
pub struct Tables {
    pub production: Option<(String, Vec<Column>)>,
    pub branch: Option<(String, Vec<Column>)>,
}

const PRESENT: &str = "\"__offshoot_present\"";

/// The diff of two tables (see the module documentation).
pub async fn diff(runner: &mut dyn SqlRunner, flavor: &dyn Flavor, tables: &Tables, options: &DiffOptions) -> WarehouseResult<DataDiff> {
    let count = |table: &str| format!("SELECT {} FROM {table}", flavor.text("count(*)"));
    let production_rows = match &tables.production {
        Some((table, _)) => Some(number(&first(runner.rows(&count(table)).await?))?),
        None => None,
    };
    let branch_rows = match &tables.branch {
        Some((table, _)) => Some(number(&first(runner.rows(&count(table)).await?))?),
        None => None,
    };
    let mut result = DataDiff {
        production_rows,
        branch_rows,
        schema: SchemaChange::default(),
        key: Vec::new(),
        key_source: KeySource::None,
        key_check: KeyCheck::default(),
        rows: None,
        columns: Vec::new(),
        samples: Samples::default(),
        notes: Vec::new(),
    };
    let (Some((production, production_columns)), Some((branch, branch_columns))) = (&tables.production, &tables.branch) else {
        return Ok(result);
    };
    result.schema = schema_change(production_columns, branch_columns);
    let branch_names: BTreeSet<&str> = branch_columns.iter().map(|c| c.name.as_str()).collect();
    let common: Vec<&Column> = production_columns.iter().filter(|c| branch_names.contains(c.name.as_str())).collect();
    if common.is_empty() {
        result.notes.push("the two tables have no column in common".to_owned());
        result.rows = Some(RowCounts { only_in_production: production_rows.unwrap_or(0), only_in_branch: branch_rows.unwrap_or(0), ..RowCounts::default() });
        return Ok(result);
    }
    let plan = Plan { flavor, production, branch, common: &common, branch_columns };

    // The key: declared, or inferred from the data.
    let (key, source) = match &options.key {
        KeyRequest::Declared(columns) => {
            let missing: Vec<&String> = columns.iter().filter(|k| !common.iter().any(|c| &c.name == *k)).collect();
            if !missing.is_empty() {
                let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
                result.notes.push(format!("the key column {} is not in both tables; compared as whole rows", names.join(", ")));
                (Vec::new(), KeySource::None)
            } else {
                (columns.clone(), KeySource::Declared)
            }
        }
        KeyRequest::Infer => match plan.infer_key(runner).await? {
            Some(column) => {
                result.notes.push(format!("no key is declared; `{column}` is unique and never NULL on both sides, so rows are matched by it"));
                (vec![column], KeySource::Inferred)
            }
            None => {
                result.notes.push("no key is declared and no column is unique and never NULL on both sides: compared as whole rows".to_owned());
                (Vec::new(), KeySource::None)
            }
        },
    };
    let mut key_usable = !key.is_empty();
    if key_usable {
        result.key_check = plan.check_key(runner, &key).await?;
        let check = &result.key_check;
        if check.duplicates_in_production + check.duplicates_in_branch + check.nulls_in_production + check.nulls_in_branch > 0 {
            result.notes.push(format!(
                "the key {} has duplicates ({} in production, {} in the branch) or NULLs ({} in production, {} in the branch): compared as whole rows instead",
                key.join(", "),
                check.duplicates_in_production,
                check.duplicates_in_branch,
                check.nulls_in_production,
                check.nulls_in_branch
            ));
            key_usable = false;
        }
        if result.schema.type_changed.iter().any(|(name, _, _)| key.contains(name)) {
            result.notes.push("the key's type changed: key values are matched as text".to_owned());
        }
    }
    result.key = key.clone();
    result.key_source = source;

    if key_usable {
        let (counts, equal) = plan.keyed_counts(runner, &key, options.tolerance, &result.schema).await?;
        result.rows = Some(counts);
        result.samples = plan.keyed_samples(runner, &key, options.tolerance, options.sample, &result.schema).await?;
        let compared: Vec<&&Column> = common.iter().filter(|c| !key.contains(&c.name)).collect();
        result.columns = compared.iter().zip(equal).map(|(c, e)| ColumnDiff { name: c.name.clone(), equal: Some(e), production: None, branch: None }).collect();
    } else {
        result.rows = Some(plan.multiset_counts(runner).await?);
        result.samples = plan.multiset_samples(runner, options.sample).await?;
        result.columns = common.iter().map(|c| ColumnDiff { name: c.name.clone(), equal: None, production: None, branch: None }).collect();
    }
    // Numeric columns: sum, min, max and NULLs on each side.
    for column in result.columns.iter_mut() {
        let Some(info) = common.iter().find(|c| c.name == column.name) else { continue };
        let in_branch = branch_columns.iter().find(|c| c.name == column.name);
        let branch_numeric = in_branch.is_some_and(|c| c.numeric);
        // SQLite's columns built from expressions have no declared type: one numeric side is
        // enough there, since `Flavor::number` skips what is not a number.
        if (info.numeric && branch_numeric) || (flavor.loosely_typed() && (info.numeric || branch_numeric)) {
            column.production = Some(plan.numeric_stats(runner, production, &info.name).await?);
            column.branch = Some(plan.numeric_stats(runner, branch, &info.name).await?);
        }
    }
    Ok(result)
}

fn schema_change(production: &[Column], branch: &[Column]) -> SchemaChange {
    let find = |columns: &[Column], name: &str| columns.iter().find(|c| c.name == name).cloned();
    let added: Vec<Column> = branch.iter().filter(|c| find(production, &c.name).is_none()).cloned().collect();
    let removed: Vec<Column> = production.iter().filter(|c| find(branch, &c.name).is_none()).cloned().collect();
    let type_changed = production
        .iter()
        .filter_map(|p| find(branch, &p.name).filter(|b| !b.data_type.eq_ignore_ascii_case(&p.data_type)).map(|b| (p.name.clone(), p.data_type.clone(), b.data_type)))
        .collect();
    let order = |columns: &[Column], other: &[Column]| columns.iter().filter(|c| find(other, &c.name).is_some()).map(|c| c.name.clone()).collect::<Vec<_>>();
    let order_changed = order(production, branch) != order(branch, production);
    SchemaChange { added, removed, type_changed, order_changed }
}

fn first(rows: Vec<Row>) -> Option<String> {
    rows.into_iter().next().and_then(|row| row.into_iter().next()).flatten()
}

/// A count the engine printed (NULL, from a sum over no rows, is 0).
fn number(text: &Option<String>) -> WarehouseResult<u64> {
    match text {
        None => Ok(0),
        Some(text) => {
            let trimmed = text.trim();
            trimmed
                .parse::<u64>()
                .or_else(|_| trimmed.parse::<f64>().map(|f| f as u64))
                .map_err(|_| WarehouseError::Backend(format!("the data diff expected a count, got {text:?}")))
        }
    }
}

struct Plan<'a> {
    flavor: &'a dyn Flavor,
    production: &'a str,
    branch: &'a str,
    common: &'a [&'a Column],
    branch_columns: &'a [Column],
}

impl Plan<'_> {
    fn q(&self, name: &str) -> String {
        self.flavor.quote(name)
    }

    /// Both sides joined on the key: `p_i` / `b_i` are the common columns, `p_present` /
    /// `b_present` say which side a row is in.
    fn joined(&self, key: &[String], schema: &SchemaChange) -> String {
        let mut select = vec![format!("p.{PRESENT} AS p_present"), format!("b.{PRESENT} AS b_present")];
        for (i, column) in self.common.iter().enumerate() {
            let name = self.q(&column.name);
            select.push(format!("p.{name} AS p_{i}"));
            select.push(format!("b.{name} AS b_{i}"));
        }
        let on: Vec<String> = key
            .iter()
            .map(|k| {
                let name = self.q(k);
                if schema.type_changed.iter().any(|(c, _, _)| c == k) {
                    format!("{} = {}", self.flavor.text(&format!("p.{name}")), self.flavor.text(&format!("b.{name}")))
                } else {
                    format!("p.{name} = b.{name}")
                }
            })
            .collect();
        format!(
            "SELECT {} FROM (SELECT 1 AS {PRESENT}, * FROM {}) AS p FULL OUTER JOIN (SELECT 1 AS {PRESENT}, * FROM {}) AS b ON {}",
            select.join(", "),
            self.production,
            self.branch,
            on.join(" AND ")
        )
    }

    fn index_of(&self, name: &str) -> usize {
        self.common.iter().position(|c| c.name == name).expect("a common column")
    }

    /// `p_i` equals `b_i` (NULL equals NULL; numbers within the tolerance).
    fn equal(&self, i: usize, tolerance: f64) -> String {
        let same = self.flavor.same(&format!("j.p_{i}"), &format!("j.b_{i}"));
        let numeric = self.common[i].numeric && self.branch_columns.iter().any(|c| c.name == self.common[i].name && c.numeric);
        if tolerance > 0.0 && (numeric || self.flavor.loosely_typed()) {
            let (p, b) = (self.flavor.number(&format!("j.p_{i}")), self.flavor.number(&format!("j.b_{i}")));
            format!("({same} OR abs({p} - {b}) <= {tolerance})")
        } else {
            format!("({same})")
        }
    }

    fn compared(&self, key: &[String]) -> Vec<usize> {
        (0..self.common.len()).filter(|&i| !key.contains(&self.common[i].name)).collect()
    }

    fn all_equal(&self, key: &[String], tolerance: f64) -> String {
        let parts: Vec<String> = self.compared(key).into_iter().map(|i| self.equal(i, tolerance)).collect();
        if parts.is_empty() {
            "1 = 1".to_owned()
        } else {
            parts.join(" AND ")
        }
    }

    async fn keyed_counts(&self, runner: &mut dyn SqlRunner, key: &[String], tolerance: f64, schema: &SchemaChange) -> WarehouseResult<(RowCounts, Vec<u64>)> {
        let both = "j.p_present = 1 AND j.b_present = 1";
        let all = self.all_equal(key, tolerance);
        let sum = |condition: String| self.flavor.text(&format!("sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"));
        let mut select = vec![
            sum("j.b_present IS NULL".to_owned()),
            sum("j.p_present IS NULL".to_owned()),
            sum(format!("{both} AND NOT ({all})")),
            sum(format!("{both} AND ({all})")),
        ];
        for i in self.compared(key) {
            select.push(sum(format!("{both} AND {}", self.equal(i, tolerance))));
        }
        let sql = format!("SELECT {} FROM ({}) AS j", select.join(", "), self.joined(key, schema));
        let row = runner.rows(&sql).await?.into_iter().next().unwrap_or_default();
        let value = |i: usize| number(row.get(i).unwrap_or(&None));
        let counts = RowCounts { only_in_production: value(0)?, only_in_branch: value(1)?, changed: value(2)?, equal: value(3)? };
        let equal = (4..row.len()).map(value).collect::<WarehouseResult<Vec<u64>>>()?;
        Ok((counts, equal))
    }

    async fn keyed_samples(&self, runner: &mut dyn SqlRunner, key: &[String], tolerance: f64, limit: usize, schema: &SchemaChange) -> WarehouseResult<Samples> {
        let joined = self.joined(key, schema);
        let order: Vec<String> = key
            .iter()
            .map(|k| {
                let i = self.index_of(k);
                if schema.type_changed.iter().any(|(c, _, _)| c == k) {
                    format!("coalesce({}, {})", self.flavor.text(&format!("j.p_{i}")), self.flavor.text(&format!("j.b_{i}")))
                } else {
                    format!("coalesce(j.p_{i}, j.b_{i})")
                }
            })
            .collect();
        let order = order.join(", ");
        let side = |prefix: &str| (0..self.common.len()).map(|i| self.flavor.text(&format!("j.{prefix}_{i}"))).collect::<Vec<_>>().join(", ");
        let added = runner.rows(&format!("SELECT {} FROM ({joined}) AS j WHERE j.p_present IS NULL ORDER BY {order} LIMIT {limit}", side("b"))).await?;
        let removed = runner.rows(&format!("SELECT {} FROM ({joined}) AS j WHERE j.b_present IS NULL ORDER BY {order} LIMIT {limit}", side("p"))).await?;
        let compared = self.compared(key);
        let key_indexes: Vec<usize> = key.iter().map(|k| self.index_of(k)).collect();
        let mut select: Vec<String> = key_indexes.iter().map(|i| self.flavor.text(&format!("j.p_{i}"))).collect();
        for &i in &compared {
            select.push(self.flavor.text(&format!("j.p_{i}")));
            select.push(self.flavor.text(&format!("j.b_{i}")));
            select.push(format!("CASE WHEN {} THEN '0' ELSE '1' END", self.equal(i, tolerance)));
        }
        let changed_rows = runner
            .rows(&format!(
                "SELECT {} FROM ({joined}) AS j WHERE j.p_present = 1 AND j.b_present = 1 AND NOT ({}) ORDER BY {order} LIMIT {limit}",
                select.join(", "),
                self.all_equal(key, tolerance)
            ))
            .await?;
        let changed = changed_rows
            .into_iter()
            .map(|row| {
                let (key_values, rest) = row.split_at(key.len().min(row.len()));
                let cells = rest.chunks(3).map(|c| (c[0].clone(), c.get(1).cloned().flatten(), c.get(2).cloned().flatten().as_deref() == Some("1"))).collect();
                ChangedRow { key: key_values.to_vec(), cells }
            })
            .collect();
        Ok(Samples {
            columns: self.common.iter().map(|c| c.name.clone()).collect(),
            added,
            removed,
            changed_columns: compared.iter().map(|&i| self.common[i].name.clone()).collect(),
            changed,
        })
    }

    /// Both sides' common columns with a count per side, grouped by the whole row.
    fn grouped(&self) -> String {
        let columns: Vec<String> = self.common.iter().map(|c| self.q(&c.name)).collect();
        let aliases: Vec<String> = (0..self.common.len()).map(|i| format!("c_{i}")).collect();
        let select: Vec<String> = columns.iter().zip(&aliases).map(|(c, a)| format!("{c} AS {a}")).collect();
        format!(
            "SELECT {aliases}, sum(pc) AS pc, sum(bc) AS bc FROM (SELECT {select}, 1 AS pc, 0 AS bc FROM {p} UNION ALL SELECT {select}, 0 AS pc, 1 AS bc FROM {b}) AS u GROUP BY {aliases}",
            aliases = aliases.join(", "),
            select = select.join(", "),
            p = self.production,
            b = self.branch
        )
    }

    async fn multiset_counts(&self, runner: &mut dyn SqlRunner) -> WarehouseResult<RowCounts> {
        let t = |e: &str| self.flavor.text(&format!("coalesce(sum({e}), 0)"));
        let sql = format!(
            "SELECT {}, {}, {} FROM ({}) AS g",
            t("CASE WHEN g.pc > g.bc THEN g.pc - g.bc ELSE 0 END"),
            t("CASE WHEN g.bc > g.pc THEN g.bc - g.pc ELSE 0 END"),
            t("CASE WHEN g.pc < g.bc THEN g.pc ELSE g.bc END"),
            self.grouped()
        );
        let row = runner.rows(&sql).await?.into_iter().next().unwrap_or_default();
        let value = |i: usize| number(row.get(i).unwrap_or(&None));
        Ok(RowCounts { only_in_production: value(0)?, only_in_branch: value(1)?, changed: 0, equal: value(2)? })
    }

    async fn multiset_samples(&self, runner: &mut dyn SqlRunner, limit: usize) -> WarehouseResult<Samples> {
        let columns = (0..self.common.len()).map(|i| self.flavor.text(&format!("g.c_{i}"))).collect::<Vec<_>>().join(", ");
        let order = (0..self.common.len()).map(|i| format!("g.c_{i}")).collect::<Vec<_>>().join(", ");
        let grouped = self.grouped();
        let added = runner.rows(&format!("SELECT {columns} FROM ({grouped}) AS g WHERE g.bc > g.pc ORDER BY {order} LIMIT {limit}")).await?;
        let removed = runner.rows(&format!("SELECT {columns} FROM ({grouped}) AS g WHERE g.pc > g.bc ORDER BY {order} LIMIT {limit}")).await?;
        Ok(Samples { columns: self.common.iter().map(|c| c.name.clone()).collect(), added, removed, ..Samples::default() })
    }

    async fn check_key(&self, runner: &mut dyn SqlRunner, key: &[String]) -> WarehouseResult<KeyCheck> {
        let columns: Vec<String> = key.iter().map(|k| self.q(k)).collect();
        let nulls = columns.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR ");
        let mut values = Vec::new();
        for table in [self.production, self.branch] {
            let sql = format!(
                "SELECT {}, {} FROM {table}",
                self.flavor.text(&format!(
                    "(SELECT count(*) FROM (SELECT 1 AS x FROM {table} WHERE NOT ({nulls}) GROUP BY {} HAVING count(*) > 1) AS d)",
                    columns.join(", ")
                )),
                self.flavor.text(&format!("sum(CASE WHEN {nulls} THEN 1 ELSE 0 END)"))
            );
            let row = runner.rows(&format!("{sql} LIMIT 1")).await?.into_iter().next().unwrap_or_default();
            values.push((number(row.first().unwrap_or(&None))?, number(row.get(1).unwrap_or(&None))?));
        }
        Ok(KeyCheck { duplicates_in_production: values[0].0, nulls_in_production: values[0].1, duplicates_in_branch: values[1].0, nulls_in_branch: values[1].1 })
    }

    /// A common column unique and never NULL on both sides (both non-empty): `id` or `*_id`
    /// first, then the first in table order.
    async fn infer_key(&self, runner: &mut dyn SqlRunner) -> WarehouseResult<Option<String>> {
        let mut candidates: Vec<bool> = vec![true; self.common.len()];
        for table in [self.production, self.branch] {
            let mut select = vec![self.flavor.text("count(*)")];
            for column in self.common {
                let name = self.q(&column.name);
                select.push(self.flavor.text(&format!("count(DISTINCT {name})")));
                select.push(self.flavor.text(&format!("count({name})")));
            }
            let row = runner.rows(&format!("SELECT {} FROM {table}", select.join(", "))).await?.into_iter().next().unwrap_or_default();
            let total = number(row.first().unwrap_or(&None))?;
            for (i, candidate) in candidates.iter_mut().enumerate() {
                let distinct = number(row.get(1 + 2 * i).unwrap_or(&None))?;
                let non_null = number(row.get(2 + 2 * i).unwrap_or(&None))?;
                *candidate &= total > 0 && distinct == total && non_null == total;
            }
        }
        let names: Vec<&str> = self.common.iter().zip(&candidates).filter(|(_, ok)| **ok).map(|(c, _)| c.name.as_str()).collect();
        let preferred = names.iter().find(|n| n.eq_ignore_ascii_case("id") || n.to_ascii_lowercase().ends_with("_id"));
        Ok(preferred.or(names.first()).map(|n| n.to_string()))
    }

    async fn numeric_stats(&self, runner: &mut dyn SqlRunner, table: &str, column: &str) -> WarehouseResult<NumericStats> {
        let value = self.flavor.number(&self.q(column));
        let t = |e: String| self.flavor.text(&e);
        let sql = format!(
            "SELECT {}, {}, {}, {} FROM {table}",
            t(format!("sum({value})")),
            t(format!("min({value})")),
            t(format!("max({value})")),
            t(format!("sum(CASE WHEN {} IS NULL THEN 1 ELSE 0 END)", self.q(column)))
        );
        let row = runner.rows(&sql).await?.into_iter().next().unwrap_or_default();
        Ok(NumericStats {
            sum: row.first().cloned().flatten(),
            min: row.get(1).cloned().flatten(),
            max: row.get(2).cloned().flatten(),
            nulls: number(row.get(3).unwrap_or(&None))?,
        })
    }
}
