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
    /// Rows per side above which a keyed diff matches a sample: the rows of one key in every
    /// `m` by a hash of the key (the same keys on both sides). `None`: no limit.
    pub row_limit: Option<u64>,
}

impl Default for DiffOptions {
    fn default() -> DiffOptions {
        DiffOptions { key: KeyRequest::Infer, sample: 10, tolerance: 0.0, row_limit: None }
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

/// A keyed diff above the row limit matched the rows of one key in every `modulus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampled {
    pub modulus: u64,
    /// Rows in the sample, per side.
    pub production_rows: u64,
    pub branch_rows: u64,
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
    /// Set when the row counts by key, the equal shares and the samples are a sample's (the
    /// row totals and the numeric stats are always the whole tables').
    pub sampled: Option<Sampled>,
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
    /// Where the flavor is [`Flavor::loosely_typed`]: whether `column` may hold numbers at all
    /// (SQLite: every column but one of TEXT affinity, which turns numbers into text).
    fn may_hold_numbers(&self, column: &Column) -> bool {
        column.numeric
    }
    /// A query returning this connection's session id (a number), where statements running in
    /// it can be cancelled from another connection by [`Flavor::cancel_query`].
    fn session_query(&self) -> Option<&'static str> {
        None
    }
    /// Cancels the statement running in session `session` (a number).
    fn cancel_query(&self, session: &str) -> String {
        let _ = session;
        String::new()
    }
    /// A condition true for the rows of one key in every `modulus`, the same keys whichever
    /// table (a hash of the key's values; `columns` are quoted); `None` where the flavor cannot
    /// sample.
    fn key_sample(&self, columns: &[String], modulus: u64) -> Option<String> {
        let _ = (columns, modulus);
        None
    }
    /// Whether any column may hold numbers whatever its declared type (SQLite), so a tolerance
    /// applies to every column through [`Flavor::number`].
    fn loosely_typed(&self) -> bool {
        false
    }
    /// Whether rows are matched without a `FULL OUTER JOIN` (SQLite, which joins unindexed
    /// tables in nested loops there: a 100,000-row full join took 9 minutes here). Where the
    /// branch's rows have ids ([`Tables::branch_row_id`]) its keys and ids are indexed in a
    /// temporary table (which finds duplicates), production is `LEFT JOIN`ed to that index and
    /// the branch's rows fetched by id, and the branch's rows whose key production lacks are
    /// found with `NOT IN`. Otherwise the keys of both sides are grouped once (finding
    /// duplicates and the keys on one side only), then production is `LEFT JOIN`ed to the
    /// branch (SQLite indexes every branch column for it automatically) and the branch's own
    /// rows are fetched by key. PostgreSQL hash-joins.
    fn match_by_grouping(&self) -> bool {
        false
    }
}

/// Runs a query whose every column the caller cast to text; rows of optional texts.
#[async_trait]
pub trait SqlRunner: Send {
    async fn rows(&mut self, sql: &str) -> WarehouseResult<Vec<Row>>;
}

/// The connections one diff runs on: `main` for matching and samples (it holds the diff's
/// temporary tables), and one per side for that side's scan, which runs at the same time as the
/// other side's (and, where rows are matched by grouping, as the grouping of the keys).
pub struct Runners<'a> {
    pub main: &'a mut dyn SqlRunner,
    pub production: &'a mut dyn SqlRunner,
    pub branch: &'a mut dyn SqlRunner,
}

/// The two tables: their references in SQL (already quoted and qualified) and their columns;
/// `None` for a side that does not exist.
pub struct Tables {
    pub production: Option<(String, Vec<Column>)>,
    pub branch: Option<(String, Vec<Column>)>,
    /// Where the branch's table stores each row under an integer id that fetches it directly
    /// (SQLite's `rowid` of an ordinary table, under whichever of its names no column shadows):
    /// that name. Matching then indexes only the branch's keys and ids, instead of every
    /// column of the branch (see [`Flavor::match_by_grouping`]).
    pub branch_row_id: Option<String>,
}

const PRESENT: &str = "\"__offshoot_present\"";

/// The diff of two tables (see the module documentation).
pub async fn diff(
    runners: Runners<'_>,
    flavor: &dyn Flavor,
    tables: &Tables,
    options: &DiffOptions,
) -> WarehouseResult<DataDiff> {
    let Runners { main: runner, production: production_runner, branch: branch_runner } = runners;
    let count = |table: &str| format!("SELECT {} FROM {table}", flavor.text("count(*)"));
    let mut result = DataDiff {
        production_rows: None,
        branch_rows: None,
        schema: SchemaChange::default(),
        key: Vec::new(),
        key_source: KeySource::None,
        key_check: KeyCheck::default(),
        rows: None,
        columns: Vec::new(),
        samples: Samples::default(),
        notes: Vec::new(),
        sampled: None,
    };
    let (Some((production, production_columns)), Some((branch, branch_columns))) =
        (&tables.production, &tables.branch)
    else {
        // One side only: its rows, nothing to match.
        for (side, rows) in [
            (&tables.production, &mut result.production_rows),
            (&tables.branch, &mut result.branch_rows),
        ] {
            if let Some((table, _)) = side {
                *rows = Some(number(&first(runner.rows(&count(table)).await?))?);
            }
        }
        return Ok(result);
    };
    result.schema = schema_change(production_columns, branch_columns);
    let branch_names: BTreeSet<&str> = branch_columns.iter().map(|c| c.name.as_str()).collect();
    let common: Vec<&Column> =
        production_columns.iter().filter(|c| branch_names.contains(c.name.as_str())).collect();
    if common.is_empty() {
        let production_rows = number(&first(runner.rows(&count(production)).await?))?;
        let branch_rows = number(&first(runner.rows(&count(branch)).await?))?;
        result.production_rows = Some(production_rows);
        result.branch_rows = Some(branch_rows);
        result.notes.push("the two tables have no column in common".to_owned());
        result.rows = Some(RowCounts {
            only_in_production: production_rows,
            only_in_branch: branch_rows,
            ..RowCounts::default()
        });
        return Ok(result);
    }
    let row_id = tables.branch_row_id.as_deref();
    let plan = Plan { flavor, production, branch, common: &common, branch_columns, row_id };

    // The key: declared, or inferred from the data.
    let (key, source) = match &options.key {
        KeyRequest::Declared(columns) => {
            let missing: Vec<&String> =
                columns.iter().filter(|k| !common.iter().any(|c| &c.name == *k)).collect();
            if !missing.is_empty() {
                let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
                result.notes.push(format!(
                    "the key column {} is not in both tables; compared as whole rows",
                    names.join(", ")
                ));
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
    let key_usable = !key.is_empty();
    result.key = key.clone();
    result.key_source = source;
    let key_type_changed =
        key_usable && result.schema.type_changed.iter().any(|(name, _, _)| key.contains(name));
    if key_type_changed {
        result.notes.push("the key's type changed: key values are matched as text".to_owned());
    }
    // Where matching groups, the keys are grouped once (finding duplicates and the keys on one
    // side only) except when the key's type changed: then one grouping matches the whole rows.
    let matching = match (key_usable, flavor.match_by_grouping(), key_type_changed) {
        (false, _, _) => Matching::None,
        (true, false, _) => Matching::FullJoin,
        (true, true, true) => Matching::Grouping,
        (true, true, false) => Matching::KeysThenLeftJoin,
    };
    // Sums, min, max and NULLs of the compared numeric columns (the key's are not shown).
    let numeric: Vec<&Column> = common
        .iter()
        .copied()
        .filter(|c| !key.contains(&c.name))
        .filter(|c| {
            let branch = branch_columns.iter().find(|b| b.name == c.name).expect("common");
            if flavor.loosely_typed() {
                // SQLite: any column but a TEXT one may hold numbers (whatever it declares);
                // the ones with no number on either side are dropped below.
                flavor.may_hold_numbers(c) || flavor.may_hold_numbers(branch)
            } else {
                c.numeric && branch.numeric
            }
        })
        .collect();
    // One scan per side and the matching, all at once on their own connections: the scans
    // count rows and NULL keys and take the numeric stats; matching checks the key for
    // duplicates where it must (see `Plan::match_rows`) and writes the rows that differ.
    // Above the row limit a keyed diff matches a sample: the same keys on both sides.
    let mut modulus = None;
    if let (Some(limit), Matching::FullJoin | Matching::KeysThenLeftJoin) =
        (options.row_limit, matching)
    {
        let production_rows = number(&first(runner.rows(&count(production)).await?))?;
        let branch_rows = number(&first(runner.rows(&count(branch)).await?))?;
        let most = production_rows.max(branch_rows);
        if most > limit.max(1) {
            modulus = Some(most.div_ceil(limit.max(1)));
        }
    }
    let quoted_key: Vec<String> = key.iter().map(|k| flavor.quote(k)).collect();
    let condition = modulus.and_then(|m| flavor.key_sample(&quoted_key, m));
    if modulus.is_some() && condition.is_none() {
        result.notes.push(
            "the tables are above the row limit, but this warehouse cannot sample: compared whole"
                .to_owned(),
        );
    }
    let sampled_tables = condition.as_ref().map(|c| {
        (
            format!("(SELECT * FROM {production} AS t WHERE {c})"),
            format!("(SELECT * FROM {branch} AS t WHERE {c})"),
        )
    });
    let matching_plan = match &sampled_tables {
        Some((production, branch)) => {
            Plan { flavor, production, branch, common: &common, branch_columns, row_id: None }
        }
        None => Plan { flavor, production, branch, common: &common, branch_columns, row_id },
    };
    // Where the branch's rows can be fetched by their ids (and the whole tables are matched),
    // its keys are indexed with the ids instead of grouping both sides' keys and indexing every
    // branch column.
    let matching = match (matching, &condition, row_id) {
        (Matching::KeysThenLeftJoin, None, Some(_)) => Matching::IndexedBranchKeys,
        (matching, _, _) => matching,
    };
    // Where the flavor can cancel a running statement, the join starts at once and the
    // branch's key check runs beside it on the branch's connection, cancelling the join if it
    // finds duplicates (which could multiply rows); otherwise the check runs first.
    let session = match (matching, flavor.session_query()) {
        (Matching::FullJoin, Some(query)) => {
            first(runner.rows(query).await?).filter(|s| s.parse::<u32>().is_ok())
        }
        _ => None,
    };
    let (production_side, branch_side, matched) = match &session {
        Some(session) => {
            let (production_side, branch_side, joined) = tokio::join!(
                plan.side_summary(
                    production_runner,
                    production,
                    &key,
                    &numeric,
                    condition.as_deref()
                ),
                async {
                    let duplicates = matching_plan
                        .has_duplicates(&mut *branch_runner, matching_plan.branch, &key)
                        .await?;
                    if duplicates {
                        // A cancel that arrives after the statement ended finds the session
                        // idle and does nothing.
                        branch_runner.rows(&flavor.cancel_query(session)).await?;
                    }
                    let side = plan
                        .side_summary(branch_runner, branch, &key, &numeric, condition.as_deref())
                        .await?;
                    Ok::<_, WarehouseError>((side, duplicates))
                },
                matching_plan.keyed(
                    &mut *runner,
                    &key,
                    matching,
                    options.tolerance,
                    options.sample,
                    &result.schema
                ),
            );
            let (branch_side, duplicates) = branch_side?;
            let matched = if duplicates { Some(Matched::Duplicates(None)) } else { Some(joined?) };
            (production_side, Ok(branch_side), Ok(matched))
        }
        None => {
            tokio::join!(
                plan.side_summary(
                    production_runner,
                    production,
                    &key,
                    &numeric,
                    condition.as_deref()
                ),
                plan.side_summary(branch_runner, branch, &key, &numeric, condition.as_deref()),
                matching_plan.match_rows(&mut *runner, &key, matching, options, &result.schema),
            )
        }
    };
    let (production_side, branch_side, mut matched) = (production_side?, branch_side?, matched?);
    if session.is_some() && matches!(matched, Some(Matched::Duplicates(None))) {
        // The cancelled join may have left its temporary table half made.
        let _ = runner.rows(&format!("DROP TABLE IF EXISTS {DIFFERING}")).await;
    }
    if matching == Matching::KeysThenLeftJoin {
        let _ = runner.rows(&format!("DROP TABLE IF EXISTS {KEYS}")).await;
    }
    if matching == Matching::IndexedBranchKeys {
        let _ = runner.rows(&format!("DROP TABLE IF EXISTS {BRANCH_KEYS}")).await;
    }
    result.production_rows = Some(production_side.rows);
    result.branch_rows = Some(branch_side.rows);
    result.key_check.nulls_in_production = production_side.nulls;
    result.key_check.nulls_in_branch = branch_side.nulls;
    let nulls = production_side.nulls + branch_side.nulls;
    if matching == Matching::Grouping && nulls == 0 {
        // One grouping of the whole rows, which finds duplicates itself.
        matched = Some(
            plan.keyed(runner, &key, matching, options.tolerance, options.sample, &result.schema)
                .await?,
        );
    }
    // Whether matching by the key holds: no NULL keys, no duplicates on either side. Where
    // only the branch's keys were checked before joining, production's duplicates show as
    // more matched production rows than matched branch rows, or in the rows it alone has.
    let mut keyed = None;
    let mut duplicates = None;
    // The rows matching saw: the sample's where there is one.
    let (production_rows, branch_rows) = match condition {
        Some(_) => (production_side.sampled, branch_side.sampled),
        None => (production_side.rows, branch_side.rows),
    };
    match matched {
        Some(Matched::Rows(differing)) if nulls == 0 => {
            let matched_production = production_rows.saturating_sub(differing.only_in_production);
            let matched_branch = branch_rows.saturating_sub(differing.only_in_branch);
            if differing.production_only_duplicates == 0 && matched_production == matched_branch {
                keyed = Some((differing, matched_production));
            }
        }
        Some(Matched::Duplicates(Some(counts))) => duplicates = Some(counts),
        _ => {}
    }
    if key_usable && keyed.is_none() {
        let (production_duplicates, branch_duplicates) = match duplicates {
            Some(counts) => counts,
            None => (
                plan.count_duplicates(runner, production, &key).await?,
                plan.count_duplicates(runner, branch, &key).await?,
            ),
        };
        result.key_check.duplicates_in_production = production_duplicates;
        result.key_check.duplicates_in_branch = branch_duplicates;
    }
    let check = &result.key_check;
    if key_usable && keyed.is_none() {
        result.notes.push(format!(
            "the key {} has duplicates ({} in production, {} in the branch) or NULLs ({} in production, {} in the branch): compared as whole rows instead",
            key.join(", "),
            check.duplicates_in_production,
            check.duplicates_in_branch,
            check.nulls_in_production,
            check.nulls_in_branch
        ));
    }
    match keyed {
        Some((differing, matched)) => {
            if let Some(modulus) = modulus.filter(|_| condition.is_some()) {
                result.sampled = Some(Sampled { modulus, production_rows, branch_rows });
                result.notes.push(format!(
                    "sampled: the tables are above the row limit, so rows were matched for one key in every {modulus} by a hash of the key, {production_rows} of {} rows in production and {branch_rows} of {} in the branch; the counts by key, the shares of equal values, duplicate keys and the samples are the sample's, the row totals, NULL keys, sums, min, max and NULL counts the whole tables'",
                    production_side.rows, branch_side.rows
                ));
            }
            let changed = differing.changed;
            result.rows = Some(RowCounts {
                only_in_production: differing.only_in_production,
                only_in_branch: differing.only_in_branch,
                changed,
                equal: matched.saturating_sub(changed),
            });
            result.samples = differing.samples;
            let compared: Vec<&&Column> =
                common.iter().filter(|c| !key.contains(&c.name)).collect();
            result.columns = compared
                .iter()
                .zip(differing.differing_per_column)
                .map(|(c, d)| ColumnDiff {
                    name: c.name.clone(),
                    equal: Some(matched.saturating_sub(d)),
                    production: None,
                    branch: None,
                })
                .collect();
        }
        None => {
            result.rows = Some(plan.multiset_counts(runner).await?);
            result.samples = plan.multiset_samples(runner, options.sample).await?;
            result.columns = common
                .iter()
                .map(|c| ColumnDiff {
                    name: c.name.clone(),
                    equal: None,
                    production: None,
                    branch: None,
                })
                .collect();
        }
    }
    for column in result.columns.iter_mut() {
        if let Some(i) = numeric.iter().position(|c| c.name == column.name) {
            let (production, branch) = (&production_side.stats[i], &branch_side.stats[i]);
            if production.sum.is_some() || branch.sum.is_some() || !flavor.loosely_typed() {
                column.production = Some(production.clone());
                column.branch = Some(branch.clone());
            }
        }
    }
    Ok(result)
}

/// What one scan of a side says: its rows, NULL keys and the numeric columns' stats.
struct SideSummary {
    rows: u64,
    nulls: u64,
    /// Rows in the sample (0 without one).
    sampled: u64,
    stats: Vec<NumericStats>,
}

/// What matching found.
enum Matched {
    Rows(Differing),
    /// The key is not unique: (production, branch) duplicate keys where they were counted.
    Duplicates(Option<(u64, u64)>),
}

/// Counts and samples from the table of differing rows.
struct Differing {
    only_in_production: u64,
    only_in_branch: u64,
    changed: u64,
    /// Per compared column, the matched rows whose value differs.
    differing_per_column: Vec<u64>,
    samples: Samples,
    /// Keys production has more than once among the rows only it has (where only the branch's
    /// keys were checked before joining).
    production_only_duplicates: u64,
}

/// The temporary table of differing rows.
const DIFFERING: &str = "offshoot_differing_rows";

/// The temporary table of the keys not seen exactly once on each side (without NULLs), where
/// matching groups.
const KEYS: &str = "offshoot_unmatched_keys";

/// The temporary table of the branch's keys (without NULLs) and row ids, indexed by the keys,
/// where matching looks the branch's rows up by id.
const BRANCH_KEYS: &str = "offshoot_branch_keys";

/// How rows are matched by their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matching {
    /// No usable key: whole rows are compared as multisets.
    None,
    /// One `FULL OUTER JOIN` on the key (PostgreSQL).
    FullJoin,
    /// One grouping of both sides' whole rows by the key (SQLite, when the key's type changed
    /// and its values are matched as text, which no automatic index serves).
    Grouping,
    /// [`KEYS`] first (one grouping of both sides' keys), then production `LEFT JOIN` the branch
    /// and the branch's rows whose key production lacks (SQLite).
    KeysThenLeftJoin,
    /// [`BRANCH_KEYS`] first (checked for duplicates), then production `LEFT JOIN` it and the
    /// branch's rows by id, and the branch's rows whose key production lacks (`NOT IN`, which
    /// SQLite serves with a transient index of production's keys). Production's duplicates
    /// show in the counts, as after a full join.
    IndexedBranchKeys,
}

fn schema_change(production: &[Column], branch: &[Column]) -> SchemaChange {
    let find = |columns: &[Column], name: &str| columns.iter().find(|c| c.name == name).cloned();
    let added: Vec<Column> =
        branch.iter().filter(|c| find(production, &c.name).is_none()).cloned().collect();
    let removed: Vec<Column> =
        production.iter().filter(|c| find(branch, &c.name).is_none()).cloned().collect();
    let type_changed = production
        .iter()
        .filter_map(|p| {
            find(branch, &p.name)
                .filter(|b| !b.data_type.eq_ignore_ascii_case(&p.data_type))
                .map(|b| (p.name.clone(), p.data_type.clone(), b.data_type))
        })
        .collect();
    let order = |columns: &[Column], other: &[Column]| {
        columns
            .iter()
            .filter(|c| find(other, &c.name).is_some())
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
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
            trimmed.parse::<u64>().or_else(|_| trimmed.parse::<f64>().map(|f| f as u64)).map_err(
                |_| {
                    WarehouseError::Backend(format!("the data diff expected a count, got {text:?}"))
                },
            )
        }
    }
}

struct Plan<'a> {
    flavor: &'a dyn Flavor,
    production: &'a str,
    branch: &'a str,
    common: &'a [&'a Column],
    branch_columns: &'a [Column],
    /// [`Tables::branch_row_id`], where it is usable.
    row_id: Option<&'a str>,
}

impl Plan<'_> {
    fn q(&self, name: &str) -> String {
        self.flavor.quote(name)
    }

    /// Both sides joined on the key: `p_i` / `b_i` are the common columns, `p_present` /
    /// `b_present` say which side a row is in.
    fn joined(&self, key: &[String], schema: &SchemaChange) -> String {
        let mut select =
            vec![format!("p.{PRESENT} AS p_present"), format!("b.{PRESENT} AS b_present")];
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
                    format!(
                        "{} = {}",
                        self.flavor.text(&format!("p.{name}")),
                        self.flavor.text(&format!("b.{name}"))
                    )
                } else {
                    format!("p.{name} = b.{name}")
                }
            })
            .collect();
        format!(
            "SELECT {} FROM (SELECT 1 AS {PRESENT}, * FROM {} AS t) AS p FULL OUTER JOIN (SELECT 1 AS {PRESENT}, * FROM {} AS t) AS b ON {}",
            select.join(", "),
            self.production,
            self.branch,
            on.join(" AND ")
        )
    }

    /// The same rows as [`Plan::joined`], by grouping both sides on the key: each key has at most
    /// one row per side (checked before), so `max` over a side's rows is that row's value.
    fn grouped_by_key(&self, key: &[String], schema: &SchemaChange) -> String {
        let key_expr = |k: &String| {
            let name = self.q(k);
            if schema.type_changed.iter().any(|(c, _, _)| c == k) {
                self.flavor.text(&name)
            } else {
                name
            }
        };
        let keys: Vec<String> = key.iter().map(key_expr).collect();
        let key_aliases: Vec<String> = (0..key.len()).map(|i| format!("k_{i}")).collect();
        let columns: Vec<String> = self.common.iter().map(|c| self.q(&c.name)).collect();
        let side = |present_p: &str, present_b: &str, table: &str| {
            let mut select: Vec<String> =
                keys.iter().zip(&key_aliases).map(|(k, a)| format!("{k} AS {a}")).collect();
            select.push(format!("{present_p} AS p_present"));
            select.push(format!("{present_b} AS b_present"));
            select.extend(columns.iter().enumerate().map(|(i, c)| format!("{c} AS v_{i}")));
            format!("SELECT {} FROM {table}", select.join(", "))
        };
        let mut outer = vec![
            "max(u.p_present) AS p_present".to_owned(),
            "max(u.b_present) AS b_present".to_owned(),
            "count(u.p_present) AS p_count".to_owned(),
            "count(u.b_present) AS b_count".to_owned(),
        ];
        for i in 0..self.common.len() {
            outer.push(format!("max(CASE WHEN u.p_present = 1 THEN u.v_{i} END) AS p_{i}"));
            outer.push(format!("max(CASE WHEN u.b_present = 1 THEN u.v_{i} END) AS b_{i}"));
        }
        format!(
            "SELECT {} FROM ({} UNION ALL {}) AS u GROUP BY {}",
            outer.join(", "),
            side("1", "NULL", self.production),
            side("NULL", "1", self.branch),
            key_aliases.iter().map(|a| format!("u.{a}")).collect::<Vec<_>>().join(", ")
        )
    }

    /// Production's rows, each with the branch's row of its key if there is one, in the shape of
    /// [`Plan::joined`]. The key has no NULLs and no duplicates (checked before), so this is a
    /// plain lookup, which SQLite serves with an automatic index on the branch's key.
    fn left_joined(&self, key: &[String]) -> String {
        let first_key = self.q(&key[0]);
        let mut select = vec![
            "1 AS p_present".to_owned(),
            format!("CASE WHEN b.{first_key} IS NULL THEN NULL ELSE 1 END AS b_present"),
        ];
        for (i, column) in self.common.iter().enumerate() {
            let name = self.q(&column.name);
            select.push(format!("p.{name} AS p_{i}"));
            select.push(format!("b.{name} AS b_{i}"));
        }
        let on: Vec<String> = key
            .iter()
            .map(|k| {
                let name = self.q(k);
                format!("p.{name} = b.{name}")
            })
            .collect();
        format!(
            "SELECT {} FROM {} AS p LEFT JOIN {} AS b ON {}",
            select.join(", "),
            self.production,
            self.branch,
            on.join(" AND ")
        )
    }

    /// [`BRANCH_KEYS`]: the branch's keys (without NULLs) and row ids, indexed by the keys.
    /// Returns whether a key is there more than once (a scan of the index, no sort).
    async fn index_branch_keys(
        &self,
        runner: &mut dyn SqlRunner,
        key: &[String],
        row_id: &str,
    ) -> WarehouseResult<bool> {
        let columns: Vec<String> = key.iter().map(|k| self.q(k)).collect();
        let not_null =
            columns.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
        let aliases: Vec<String> = (0..key.len()).map(|i| format!("k_{i}")).collect();
        let renamed: Vec<String> =
            columns.iter().zip(&aliases).map(|(c, a)| format!("{c} AS {a}")).collect();
        let aliases = aliases.join(", ");
        let _ = runner.rows(&format!("DROP TABLE IF EXISTS {BRANCH_KEYS}")).await;
        runner
            .rows(&format!(
                "CREATE TEMPORARY TABLE {BRANCH_KEYS} AS SELECT {}, {row_id} AS r FROM {} AS t WHERE {not_null}",
                renamed.join(", "),
                self.branch
            ))
            .await?;
        runner
            .rows(&format!("CREATE INDEX {BRANCH_KEYS}_by_key ON {BRANCH_KEYS} ({aliases})"))
            .await?;
        let duplicates = number(&first(
            runner
                .rows(&format!(
                    "SELECT {} FROM (SELECT 1 AS x FROM {BRANCH_KEYS} GROUP BY {aliases} HAVING count(*) > 1 LIMIT 1) AS d",
                    self.flavor.text("count(*)")
                ))
                .await?,
        ))?;
        Ok(duplicates > 0)
    }

    /// Production's rows, each with the branch's row of its key (found in [`BRANCH_KEYS`] and
    /// fetched by id) if there is one, in the shape of [`Plan::joined`]. Keys compare as
    /// stored (`COLLATE BINARY`, as [`BRANCH_KEYS`]'s index and its duplicate check do): a
    /// production key column declared `COLLATE NOCASE` would otherwise make the index unusable
    /// (a nested loop) and match keys that [`Plan::branch_not_in_production`] does not.
    fn looked_up(&self, key: &[String], row_id: &str) -> String {
        let mut select = vec![
            "1 AS p_present".to_owned(),
            "CASE WHEN k.r IS NULL THEN NULL ELSE 1 END AS b_present".to_owned(),
        ];
        for (i, column) in self.common.iter().enumerate() {
            let name = self.q(&column.name);
            select.push(format!("p.{name} AS p_{i}"));
            select.push(format!("b.{name} AS b_{i}"));
        }
        let on: Vec<String> = key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("p.{} COLLATE BINARY = k.k_{i}", self.q(k)))
            .collect();
        format!(
            "SELECT {} FROM {} AS p LEFT JOIN {BRANCH_KEYS} AS k ON {} LEFT JOIN {} AS b ON b.{row_id} = k.r",
            select.join(", "),
            self.production,
            on.join(" AND "),
            self.branch
        )
    }

    /// The branch's rows whose key (without NULLs) production lacks, in the shape of
    /// [`Plan::joined`].
    fn branch_not_in_production(&self, key: &[String]) -> String {
        let mut select = vec!["NULL AS p_present".to_owned(), "1 AS b_present".to_owned()];
        for (i, column) in self.common.iter().enumerate() {
            select.push(format!("NULL AS p_{i}"));
            select.push(format!("b.{} AS b_{i}", self.q(&column.name)));
        }
        let columns: Vec<String> = key.iter().map(|k| self.q(k)).collect();
        let not_null =
            columns.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
        let in_branch: Vec<String> =
            columns.iter().map(|c| format!("b.{c} COLLATE BINARY")).collect();
        format!(
            "SELECT {} FROM {} AS b WHERE ({}) NOT IN (SELECT {} FROM {} AS t WHERE {not_null})",
            select.join(", "),
            self.branch,
            in_branch.join(", "),
            columns.join(", "),
            self.production
        )
    }

    /// The branch's rows whose key production lacks ([`KEYS`] with no production row), in the
    /// shape of [`Plan::joined`].
    fn branch_only(&self, key: &[String]) -> String {
        let mut select = vec!["NULL AS p_present".to_owned(), "1 AS b_present".to_owned()];
        for (i, column) in self.common.iter().enumerate() {
            select.push(format!("NULL AS p_{i}"));
            select.push(format!("b.{} AS b_{i}", self.q(&column.name)));
        }
        let columns: Vec<String> = key.iter().map(|k| format!("b.{}", self.q(k))).collect();
        let aliases: Vec<String> = (0..key.len()).map(|i| format!("k_{i}")).collect();
        format!(
            "SELECT {} FROM {} AS b WHERE ({}) IN (SELECT {} FROM {KEYS} WHERE p_count = 0)",
            select.join(", "),
            self.branch,
            columns.join(", "),
            aliases.join(", ")
        )
    }

    /// [`KEYS`]: one grouping of both sides' keys (NULLs left out: they are counted by the
    /// side scans), keeping the keys not seen exactly once on each side. Returns the keys
    /// production and the branch each have more than once.
    async fn group_keys(
        &self,
        runner: &mut dyn SqlRunner,
        key: &[String],
    ) -> WarehouseResult<(u64, u64)> {
        let columns: Vec<String> = key.iter().map(|k| self.q(k)).collect();
        let not_null =
            columns.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
        let aliases: Vec<String> = (0..key.len()).map(|i| format!("k_{i}")).collect();
        let renamed: Vec<String> =
            columns.iter().zip(&aliases).map(|(c, a)| format!("{c} AS {a}")).collect();
        let side = |p: &str, b: &str, table: &str| {
            format!(
                "SELECT {}, {p} AS pp, {b} AS bp FROM {table} AS t WHERE {not_null}",
                renamed.join(", ")
            )
        };
        let _ = runner.rows(&format!("DROP TABLE IF EXISTS {KEYS}")).await;
        runner
            .rows(&format!(
                "CREATE TEMPORARY TABLE {KEYS} AS SELECT {aliases}, count(u.pp) AS p_count, count(u.bp) AS b_count FROM ({} UNION ALL {}) AS u GROUP BY {aliases} HAVING count(u.pp) <> 1 OR count(u.bp) <> 1",
                side("1", "NULL", self.production),
                side("NULL", "1", self.branch),
                aliases = aliases.join(", ")
            ))
            .await?;
        let t = |e: &str| self.flavor.text(e);
        let row = runner
            .rows(&format!(
                "SELECT {}, {} FROM {KEYS}",
                t("sum(CASE WHEN p_count > 1 THEN 1 ELSE 0 END)"),
                t("sum(CASE WHEN b_count > 1 THEN 1 ELSE 0 END)")
            ))
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok((number(row.first().unwrap_or(&None))?, number(row.get(1).unwrap_or(&None))?))
    }

    fn index_of(&self, name: &str) -> usize {
        self.common.iter().position(|c| c.name == name).expect("a common column")
    }

    /// `p_i` equals `b_i` (NULL equals NULL; numbers within the tolerance).
    fn equal(&self, i: usize, tolerance: f64) -> String {
        let same = self.flavor.same(&format!("j.p_{i}"), &format!("j.b_{i}"));
        let numeric = self.common[i].numeric
            && self.branch_columns.iter().any(|c| c.name == self.common[i].name && c.numeric);
        if tolerance > 0.0 && (numeric || self.flavor.loosely_typed()) {
            let (p, b) =
                (self.flavor.number(&format!("j.p_{i}")), self.flavor.number(&format!("j.b_{i}")));
            format!("({same} OR abs({p} - {b}) <= {tolerance})")
        } else {
            format!("({same})")
        }
    }

    fn compared(&self, key: &[String]) -> Vec<usize> {
        (0..self.common.len()).filter(|&i| !key.contains(&self.common[i].name)).collect()
    }

    fn all_equal(&self, key: &[String], tolerance: f64) -> String {
        let parts: Vec<String> =
            self.compared(key).into_iter().map(|i| self.equal(i, tolerance)).collect();
        if parts.is_empty() {
            "1 = 1".to_owned()
        } else {
            parts.join(" AND ")
        }
    }

    /// One matching pass: the rows that differ (only on one side, or some value differs; and
    /// where matching groups, keys seen twice) into a temporary table, then counts and samples
    /// from it.
    /// Matching that runs while the sides are scanned: where it joins (PostgreSQL), the
    /// branch's keys are checked for duplicates first, so that the join stays linear (a key
    /// seen on both sides more than once would multiply rows); production's duplicates show in
    /// its result. Where it groups the keys (SQLite), the grouping finds duplicates. `None`
    /// where matching waits for the scans (the key's type changed) or there is no key.
    async fn match_rows(
        &self,
        runner: &mut dyn SqlRunner,
        key: &[String],
        matching: Matching,
        options: &DiffOptions,
        schema: &SchemaChange,
    ) -> WarehouseResult<Option<Matched>> {
        match matching {
            Matching::None | Matching::Grouping => return Ok(None),
            Matching::KeysThenLeftJoin => {
                let (production, branch) = self.group_keys(runner, key).await?;
                if production + branch > 0 {
                    return Ok(Some(Matched::Duplicates(Some((production, branch)))));
                }
            }
            Matching::FullJoin => {
                if self.has_duplicates(runner, self.branch, key).await? {
                    return Ok(Some(Matched::Duplicates(None)));
                }
            }
            Matching::IndexedBranchKeys => {
                let row_id = self.row_id.expect("chosen only with a row id");
                if self.index_branch_keys(runner, key, row_id).await? {
                    return Ok(Some(Matched::Duplicates(None)));
                }
            }
        }
        let keyed = self.keyed(runner, key, matching, options.tolerance, options.sample, schema);
        keyed.await.map(Some)
    }

    #[allow(clippy::too_many_arguments)]
    async fn keyed(
        &self,
        runner: &mut dyn SqlRunner,
        key: &[String],
        matching: Matching,
        tolerance: f64,
        limit: usize,
        schema: &SchemaChange,
    ) -> WarehouseResult<Matched> {
        let compared = self.compared(key);
        let mut select =
            vec!["j.p_present AS p_present".to_owned(), "j.b_present AS b_present".to_owned()];
        for i in 0..self.common.len() {
            select.push(format!("j.p_{i} AS p_{i}"));
            select.push(format!("j.b_{i} AS b_{i}"));
        }
        for &i in &compared {
            select
                .push(format!("CASE WHEN {} THEN 0 ELSE 1 END AS d_{i}", self.equal(i, tolerance)));
        }
        let mut differs = format!(
            "j.p_present IS NULL OR j.b_present IS NULL OR NOT ({})",
            self.all_equal(key, tolerance)
        );
        if matching == Matching::Grouping {
            select.push("j.p_count AS p_count".to_owned());
            select.push("j.b_count AS b_count".to_owned());
            differs.push_str(" OR j.p_count > 1 OR j.b_count > 1");
        }
        let _ = runner.rows(&format!("DROP TABLE IF EXISTS {DIFFERING}")).await;
        let source = match matching {
            Matching::KeysThenLeftJoin => self.left_joined(key),
            Matching::IndexedBranchKeys => {
                self.looked_up(key, self.row_id.expect("chosen only with a row id"))
            }
            Matching::Grouping => self.grouped_by_key(key, schema),
            Matching::FullJoin | Matching::None => self.joined(key, schema),
        };
        let select = select.join(", ");
        runner
            .rows(&format!(
                "CREATE TEMPORARY TABLE {DIFFERING} AS SELECT {select} FROM ({source}) AS j WHERE {differs}"
            ))
            .await?;
        let branch_only = match matching {
            Matching::KeysThenLeftJoin => Some(self.branch_only(key)),
            Matching::IndexedBranchKeys => Some(self.branch_not_in_production(key)),
            _ => None,
        };
        if let Some(branch_only) = branch_only {
            runner
                .rows(&format!("INSERT INTO {DIFFERING} SELECT {select} FROM ({branch_only}) AS j"))
                .await?;
        }
        let result = async {
            let t = |e: String| self.flavor.text(&e);
            if matching == Matching::Grouping {
                let row = runner
                    .rows(&format!(
                        "SELECT {}, {} FROM {DIFFERING}",
                        t("sum(CASE WHEN p_count > 1 THEN 1 ELSE 0 END)".to_owned()),
                        t("sum(CASE WHEN b_count > 1 THEN 1 ELSE 0 END)".to_owned())
                    ))
                    .await?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let (production, branch) =
                    (number(row.first().unwrap_or(&None))?, number(row.get(1).unwrap_or(&None))?);
                if production + branch > 0 {
                    return Ok(Matched::Duplicates(Some((production, branch))));
                }
            }
            let both = "p_present = 1 AND b_present = 1";
            let mut sums = vec![
                t("sum(CASE WHEN b_present IS NULL THEN 1 ELSE 0 END)".to_owned()),
                t("sum(CASE WHEN p_present IS NULL THEN 1 ELSE 0 END)".to_owned()),
                t(format!("sum(CASE WHEN {both} THEN 1 ELSE 0 END)")),
            ];
            for &i in &compared {
                sums.push(t(format!("sum(CASE WHEN {both} AND d_{i} = 1 THEN 1 ELSE 0 END)")));
            }
            let row = runner
                .rows(&format!("SELECT {} FROM {DIFFERING}", sums.join(", ")))
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            let value = |i: usize| number(row.get(i).unwrap_or(&None));
            let (only_in_production, only_in_branch, changed) = (value(0)?, value(1)?, value(2)?);
            let differing_per_column =
                (0..compared.len()).map(|k| value(3 + k)).collect::<WarehouseResult<Vec<u64>>>()?;
            let production_only_duplicates = if matches!(
                matching,
                Matching::FullJoin | Matching::IndexedBranchKeys
            ) {
                let keys: Vec<String> =
                    key.iter().map(|k| format!("p_{}", self.index_of(k))).collect();
                let not_null =
                    keys.iter().map(|k| format!("{k} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
                number(&first(
                    runner
                        .rows(&format!(
                            "SELECT {} FROM (SELECT 1 AS x FROM {DIFFERING} WHERE b_present IS NULL AND {not_null} GROUP BY {} HAVING count(*) > 1) AS d",
                            t("count(*)".to_owned()),
                            keys.join(", ")
                        ))
                        .await?,
                ))?
            } else {
                0
            };
            let samples = self.keyed_samples(runner, key, &compared, limit, schema).await?;
            Ok(Matched::Rows(Differing {
                only_in_production,
                only_in_branch,
                changed,
                differing_per_column,
                samples,
                production_only_duplicates,
            }))
        }
        .await;
        let _ = runner.rows(&format!("DROP TABLE IF EXISTS {DIFFERING}")).await;
        result
    }

    /// Samples from the table of differing rows: added, removed and changed, in key order.
    async fn keyed_samples(
        &self,
        runner: &mut dyn SqlRunner,
        key: &[String],
        compared: &[usize],
        limit: usize,
        schema: &SchemaChange,
    ) -> WarehouseResult<Samples> {
        let order: Vec<String> = key
            .iter()
            .map(|k| {
                let i = self.index_of(k);
                if schema.type_changed.iter().any(|(c, _, _)| c == k) {
                    format!(
                        "coalesce({}, {})",
                        self.flavor.text(&format!("p_{i}")),
                        self.flavor.text(&format!("b_{i}"))
                    )
                } else {
                    format!("coalesce(p_{i}, b_{i})")
                }
            })
            .collect();
        let order = order.join(", ");
        let side = |prefix: &str| {
            (0..self.common.len())
                .map(|i| self.flavor.text(&format!("{prefix}_{i}")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (added, removed) = if limit == 0 {
            (Vec::new(), Vec::new())
        } else {
            (
                runner.rows(&format!("SELECT {} FROM {DIFFERING} WHERE p_present IS NULL ORDER BY {order} LIMIT {limit}", side("b"))).await?,
                runner.rows(&format!("SELECT {} FROM {DIFFERING} WHERE b_present IS NULL ORDER BY {order} LIMIT {limit}", side("p"))).await?,
            )
        };
        let key_indexes: Vec<usize> = key.iter().map(|k| self.index_of(k)).collect();
        let mut select: Vec<String> =
            key_indexes.iter().map(|i| self.flavor.text(&format!("p_{i}"))).collect();
        for &i in compared {
            select.push(self.flavor.text(&format!("p_{i}")));
            select.push(self.flavor.text(&format!("b_{i}")));
            select.push(self.flavor.text(&format!("d_{i}")));
        }
        let changed_rows = if limit == 0 {
            Vec::new()
        } else {
            runner.rows(&format!("SELECT {} FROM {DIFFERING} WHERE p_present = 1 AND b_present = 1 ORDER BY {order} LIMIT {limit}", select.join(", "))).await?
        };
        let changed = changed_rows
            .into_iter()
            .map(|row| {
                let (key_values, rest) = row.split_at(key.len().min(row.len()));
                let cells = rest
                    .chunks(3)
                    .map(|c| {
                        (
                            c[0].clone(),
                            c.get(1).cloned().flatten(),
                            c.get(2).cloned().flatten().as_deref() == Some("1"),
                        )
                    })
                    .collect();
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
        let select: Vec<String> =
            columns.iter().zip(&aliases).map(|(c, a)| format!("{c} AS {a}")).collect();
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
        Ok(RowCounts {
            only_in_production: value(0)?,
            only_in_branch: value(1)?,
            changed: 0,
            equal: value(2)?,
        })
    }

    async fn multiset_samples(
        &self,
        runner: &mut dyn SqlRunner,
        limit: usize,
    ) -> WarehouseResult<Samples> {
        let columns = (0..self.common.len())
            .map(|i| self.flavor.text(&format!("g.c_{i}")))
            .collect::<Vec<_>>()
            .join(", ");
        let order =
            (0..self.common.len()).map(|i| format!("g.c_{i}")).collect::<Vec<_>>().join(", ");
        let grouped = self.grouped();
        let added = runner.rows(&format!("SELECT {columns} FROM ({grouped}) AS g WHERE g.bc > g.pc ORDER BY {order} LIMIT {limit}")).await?;
        let removed = runner.rows(&format!("SELECT {columns} FROM ({grouped}) AS g WHERE g.pc > g.bc ORDER BY {order} LIMIT {limit}")).await?;
        Ok(Samples {
            columns: self.common.iter().map(|c| c.name.clone()).collect(),
            added,
            removed,
            ..Samples::default()
        })
    }

    /// Whether `table` has a key (without NULLs) more than once: for one column by counting its
    /// distinct values (a sort, cheaper than grouping here), else by grouping.
    async fn has_duplicates(
        &self,
        runner: &mut dyn SqlRunner,
        table: &str,
        key: &[String],
    ) -> WarehouseResult<bool> {
        match key {
            [one] => {
                let one = self.q(one);
                let sql = format!(
                    "SELECT {} FROM {table} AS t",
                    self.flavor.text(&format!("count({one}) - count(DISTINCT {one})"))
                );
                Ok(number(&first(runner.rows(&sql).await?))? > 0)
            }
            _ => Ok(self.count_duplicates(runner, table, key).await? > 0),
        }
    }

    /// Keys (without NULLs) that `table` has more than once.
    async fn count_duplicates(
        &self,
        runner: &mut dyn SqlRunner,
        table: &str,
        key: &[String],
    ) -> WarehouseResult<u64> {
        let columns: Vec<String> = key.iter().map(|k| self.q(k)).collect();
        let nulls = columns.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR ");
        let sql = format!(
            "SELECT {} FROM (SELECT 1 AS x FROM {table} AS t WHERE NOT ({nulls}) GROUP BY {} HAVING count(*) > 1) AS d",
            self.flavor.text("count(*)"),
            columns.join(", ")
        );
        number(&first(runner.rows(&sql).await?))
    }

    /// One scan of `table`: its rows, NULL keys, and sum, min, max and NULLs of each `numeric`
    /// column. Where columns may mix numbers with text (SQLite), the scan takes the plain
    /// aggregates and the type of each column's maximum: numbers sort before text and blobs,
    /// so a number (or NULL) there means the column holds numbers only and the plain
    /// aggregates are its numbers'. Only columns holding something else are scanned again,
    /// counting their numbers alone.
    async fn side_summary(
        &self,
        runner: &mut dyn SqlRunner,
        table: &str,
        key: &[String],
        numeric: &[&Column],
        sample: Option<&str>,
    ) -> WarehouseResult<SideSummary> {
        let t = |e: String| self.flavor.text(&e);
        let columns: Vec<String> = key.iter().map(|k| self.q(k)).collect();
        let mut select = vec![t("count(*)".to_owned())];
        if key.is_empty() {
            select.push("'0'".to_owned());
        } else {
            let nulls =
                columns.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR ");
            select.push(t(format!("sum(CASE WHEN {nulls} THEN 1 ELSE 0 END)")));
        }
        select.push(match sample {
            Some(condition) => t(format!("sum(CASE WHEN {condition} THEN 1 ELSE 0 END)")),
            None => "'0'".to_owned(),
        });
        let loose = self.flavor.loosely_typed();
        let width = if loose { 5 } else { 4 };
        let aggregates = |value: &str, name: &str, select: &mut Vec<String>| {
            select.push(t(format!("sum({value})")));
            select.push(t(format!("min({value})")));
            select.push(t(format!("max({value})")));
            select.push(t(format!("count(*) - count({name})")));
        };
        for column in numeric {
            let name = self.q(&column.name);
            aggregates(&name, &name, &mut select);
            if loose {
                select.push(format!("typeof(max({name}))"));
            }
        }
        let row = runner
            .rows(&format!("SELECT {} FROM {table}", select.join(", ")))
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        let stats_at = |row: &Row, at: usize| {
            Ok(NumericStats {
                sum: row.get(at).cloned().flatten(),
                min: row.get(at + 1).cloned().flatten(),
                max: row.get(at + 2).cloned().flatten(),
                nulls: number(row.get(at + 3).unwrap_or(&None))?,
            })
        };
        let mut stats = (0..numeric.len())
            .map(|i| stats_at(&row, 3 + width * i))
            .collect::<WarehouseResult<Vec<_>>>()?;
        if loose {
            let mixed: Vec<usize> = (0..numeric.len())
                .filter(|i| {
                    let kind = row.get(3 + width * i + 4).cloned().flatten();
                    !matches!(kind.as_deref(), None | Some("null" | "integer" | "real"))
                })
                .collect();
            if !mixed.is_empty() {
                let mut select = Vec::new();
                for &i in &mixed {
                    let name = self.q(&numeric[i].name);
                    aggregates(&self.flavor.number(&name), &name, &mut select);
                }
                let again = runner
                    .rows(&format!("SELECT {} FROM {table}", select.join(", ")))
                    .await?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                for (k, &i) in mixed.iter().enumerate() {
                    stats[i] = stats_at(&again, 4 * k)?;
                }
            }
        }
        Ok(SideSummary {
            rows: number(row.first().unwrap_or(&None))?,
            nulls: number(row.get(1).unwrap_or(&None))?,
            sampled: number(row.get(2).unwrap_or(&None))?,
            stats,
        })
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
            let row = runner
                .rows(&format!("SELECT {} FROM {table}", select.join(", ")))
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            let total = number(row.first().unwrap_or(&None))?;
            for (i, candidate) in candidates.iter_mut().enumerate() {
                let distinct = number(row.get(1 + 2 * i).unwrap_or(&None))?;
                let non_null = number(row.get(2 + 2 * i).unwrap_or(&None))?;
                *candidate &= total > 0 && distinct == total && non_null == total;
            }
        }
        let names: Vec<&str> = self
            .common
            .iter()
            .zip(&candidates)
            .filter(|(_, ok)| **ok)
            .map(|(c, _)| c.name.as_str())
            .collect();
        let preferred = names
            .iter()
            .find(|n| n.eq_ignore_ascii_case("id") || n.to_ascii_lowercase().ends_with("_id"));
        Ok(preferred.or(names.first()).map(|n| n.to_string()))
    }
}
