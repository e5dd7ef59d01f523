//! Behaviour every warehouse must show, run by each backend's tests (cargo feature `contract`,
//! so none of it is compiled into the server). Tables are built through the port itself
//! (`materialize_sql` on production and on the branch) with portable SQL, so both backends get
//! the same data and must give the same, exact numbers.

use crate::data_diff::{DataDiff, DiffOptions, KeyRequest, KeySource, RowCounts};
use crate::{Target, Warehouse};
use offshoot_core::AssetKey;

/// `WITH RECURSIVE` rows 1..=n as `n`, in both SQLite and PostgreSQL.
fn series(n: u32, select: &str) -> String {
    format!(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) {select}"
    )
}

async fn build(warehouse: &dyn Warehouse, target: &Target, table: &str, select: &str) {
    let key = AssetKey::new(table).expect("a valid key");
    warehouse
        .materialize_sql(target, &key, select)
        .await
        .unwrap_or_else(|e| panic!("building {table} in {}: {e}\n{select}", target.schema));
}

async fn diff(
    warehouse: &dyn Warehouse,
    branch: &Target,
    table: &str,
    options: DiffOptions,
) -> DataDiff {
    warehouse
        .data_diff(branch, table, &options)
        .await
        .unwrap_or_else(|e| panic!("diff of {table}: {e}"))
}

fn declared(key: &[&str]) -> DiffOptions {
    DiffOptions {
        key: KeyRequest::Declared(key.iter().map(|k| k.to_string()).collect()),
        ..DiffOptions::default()
    }
}

fn rows(
    only_in_production: u64,
    only_in_branch: u64,
    changed: u64,
    equal: u64,
) -> Option<RowCounts> {
    Some(RowCounts { only_in_production, only_in_branch, changed, equal })
}

/// Every data-diff story; `production` and `branch` are prepared targets of one warehouse.
pub async fn data_diff_stories(warehouse: &dyn Warehouse, production: &Target, branch: &Target) {
    // Keyed: ids 1..100 in production; the branch drops 1..5, adds 101..105 and changes the
    // amount of every tenth row (10, 20, ..., 100: ten rows).
    let base = "CAST(n AS INTEGER) AS id, CAST(n * 10 AS INTEGER) AS amount, CAST('name ' || n AS TEXT) AS name";
    build(warehouse, production, "orders", &series(100, &format!("SELECT {base} FROM s"))).await;
    let branch_sql = "SELECT CAST(n AS INTEGER) AS id, CAST(CASE WHEN n % 10 = 0 THEN n * 10 + 1 ELSE n * 10 END AS INTEGER) AS amount, CAST('name ' || n AS TEXT) AS name FROM s WHERE n > 5";
    build(warehouse, branch, "orders", &series(105, branch_sql)).await;
    let result = diff(warehouse, branch, "orders", declared(&["id"])).await;
    assert_eq!((result.production_rows, result.branch_rows), (Some(100), Some(100)));
    assert_eq!(result.rows, rows(5, 5, 10, 85));
    assert_eq!(
        (result.key.clone(), result.key_source),
        (vec!["id".to_owned()], KeySource::Declared)
    );
    let amount = result.columns.iter().find(|c| c.name == "amount").expect("amount");
    assert_eq!(amount.equal, Some(85), "95 matched rows, 10 changed");
    let name = result.columns.iter().find(|c| c.name == "name").expect("name");
    assert_eq!(name.equal, Some(95));
    // sum(10n) over 1..100 = 50,500; over 6..105 = 55,500, plus 1 for each of the ten changed rows.
    let stats = |s: &Option<crate::data_diff::NumericStats>| {
        s.as_ref().map(|s| (s.sum.clone(), s.min.clone(), s.max.clone(), s.nulls))
    };
    assert_eq!(
        stats(&amount.production),
        Some((Some("50500".into()), Some("10".into()), Some("1000".into()), 0))
    );
    assert_eq!(
        stats(&amount.branch),
        Some((Some("55510".into()), Some("60".into()), Some("1050".into()), 0))
    );
    assert_eq!(result.samples.added.len(), 5);
    assert_eq!(result.samples.added[0][0].as_deref(), Some("101"));
    assert_eq!(
        result.samples.removed.iter().map(|r| r[0].clone().unwrap_or_default()).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(result.samples.changed.len(), 10);
    let first = &result.samples.changed[0];
    assert_eq!(first.key, [Some("10".to_owned())]);
    assert_eq!(result.samples.changed_columns, ["amount", "name"]);
    assert_eq!(first.cells[0], (Some("100".to_owned()), Some("101".to_owned()), true));
    assert!(!first.cells[1].2, "the name is unchanged");
    // A smaller sample.
    let small =
        diff(warehouse, branch, "orders", DiffOptions { sample: 2, ..declared(&["id"]) }).await;
    assert_eq!((small.samples.added.len(), small.samples.changed.len()), (2, 2));

    // Inferred: `id` is unique and never NULL on both sides, and said so.
    let inferred = diff(warehouse, branch, "orders", DiffOptions::default()).await;
    assert_eq!(
        (inferred.key.clone(), inferred.key_source),
        (vec!["id".to_owned()], KeySource::Inferred)
    );
    assert_eq!(inferred.rows, rows(5, 5, 10, 85));
    assert!(inferred.notes.iter().any(|n| n.contains("`id` is unique")), "{:?}", inferred.notes);

    // NULL equals NULL; a duplicate key is reported and not joined on.
    build(warehouse, production, "people", "SELECT CAST(1 AS INTEGER) AS id, CAST(NULL AS TEXT) AS nick UNION ALL SELECT 2, 'b' UNION ALL SELECT 3, 'c'").await;
    build(warehouse, branch, "people", "SELECT CAST(1 AS INTEGER) AS id, CAST(NULL AS TEXT) AS nick UNION ALL SELECT 2, 'B' UNION ALL SELECT 3, 'c'").await;
    let people = diff(warehouse, branch, "people", declared(&["id"])).await;
    assert_eq!(people.rows, rows(0, 0, 1, 2), "NULL = NULL, 'b' <> 'B'");
    build(warehouse, branch, "people", "SELECT CAST(1 AS INTEGER) AS id, CAST(NULL AS TEXT) AS nick UNION ALL SELECT 2, 'b' UNION ALL SELECT 2, 'b' UNION ALL SELECT CAST(NULL AS INTEGER), 'n'").await;
    let duplicated = diff(warehouse, branch, "people", declared(&["id"])).await;
    assert_eq!(
        (duplicated.key_check.duplicates_in_branch, duplicated.key_check.nulls_in_branch),
        (1, 1)
    );
    assert!(duplicated.notes.iter().any(|n| n.contains("duplicates")), "{:?}", duplicated.notes);
    // As whole rows: production (1,NULL) (2,b) (3,c); branch (1,NULL) (2,b) (2,b) (NULL,n).
    assert_eq!(duplicated.rows, rows(1, 2, 0, 2));
    assert_eq!(duplicated.samples.removed, [vec![Some("3".to_owned()), Some("c".to_owned())]]);

    // Duplicates without NULLs (found by the matching pass itself where it groups).
    build(warehouse, branch, "people", "SELECT CAST(1 AS INTEGER) AS id, CAST(NULL AS TEXT) AS nick UNION ALL SELECT 2, 'b' UNION ALL SELECT 2, 'b' UNION ALL SELECT 3, 'c'").await;
    let twice = diff(warehouse, branch, "people", declared(&["id"])).await;
    assert_eq!((twice.key_check.duplicates_in_branch, twice.key_check.nulls_in_branch), (1, 0));
    assert_eq!(twice.rows, rows(0, 1, 0, 3), "as whole rows: the second (2, b) is extra");

    // No key anywhere: a multiset of whole rows, and the report says so.
    build(
        warehouse,
        production,
        "events",
        "SELECT CAST('a' AS TEXT) AS kind UNION ALL SELECT 'a' UNION ALL SELECT 'b'",
    )
    .await;
    build(warehouse, branch, "events", "SELECT CAST('a' AS TEXT) AS kind UNION ALL SELECT 'b' UNION ALL SELECT 'b' UNION ALL SELECT 'c'").await;
    let events = diff(warehouse, branch, "events", DiffOptions::default()).await;
    assert_eq!(events.key_source, KeySource::None);
    assert_eq!(events.rows, rows(1, 2, 0, 2));
    assert!(events.notes.iter().any(|n| n.contains("whole rows")), "{:?}", events.notes);

    // Schema: a column added, one removed, a type changed, the order changed.
    build(warehouse, production, "shapes", "SELECT CAST(1 AS INTEGER) AS id, CAST(2 AS INTEGER) AS size, CAST('x' AS TEXT) AS old_label").await;
    build(warehouse, branch, "shapes", "SELECT CAST(2.5 AS REAL) AS size, CAST(1 AS INTEGER) AS id, CAST('y' AS TEXT) AS new_label").await;
    let shapes = diff(warehouse, branch, "shapes", declared(&["id"])).await;
    assert_eq!(
        shapes.schema.added.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["new_label"]
    );
    assert_eq!(
        shapes.schema.removed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["old_label"]
    );
    assert_eq!(
        shapes.schema.type_changed.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["size"]
    );
    assert!(shapes.schema.order_changed);
    assert_eq!(shapes.rows, rows(0, 0, 1, 0));

    // Hostile names: reserved words and quotes in column names.
    let hostile = "SELECT CAST(1 AS INTEGER) AS \"select\", CAST(2 AS INTEGER) AS \"we\"\"ird\" UNION ALL SELECT 2, 3";
    build(warehouse, production, "hostile", hostile).await;
    build(warehouse, branch, "hostile", "SELECT CAST(1 AS INTEGER) AS \"select\", CAST(9 AS INTEGER) AS \"we\"\"ird\" UNION ALL SELECT 2, 3").await;
    let result = diff(warehouse, branch, "hostile", declared(&["select"])).await;
    assert_eq!(result.rows, rows(0, 0, 1, 1));
    assert_eq!(result.columns[0].name, "we\"ird");

    // Floating-point noise: exact by default, equal within a tolerance.
    build(
        warehouse,
        production,
        "floats",
        "SELECT CAST(1 AS INTEGER) AS id, CAST(0.3 AS DOUBLE PRECISION) AS x",
    )
    .await;
    build(warehouse, branch, "floats", "SELECT CAST(1 AS INTEGER) AS id, CAST(0.1 AS DOUBLE PRECISION) + CAST(0.2 AS DOUBLE PRECISION) AS x").await;
    assert_eq!(diff(warehouse, branch, "floats", declared(&["id"])).await.rows, rows(0, 0, 1, 0));
    let tolerant =
        diff(warehouse, branch, "floats", DiffOptions { tolerance: 1e-9, ..declared(&["id"]) })
            .await;
    assert_eq!(tolerant.rows, rows(0, 0, 0, 1));

    // A key whose type changed (integer to text) is matched as text.
    build(
        warehouse,
        production,
        "codes",
        "SELECT CAST(1 AS INTEGER) AS id, CAST('a' AS TEXT) AS v UNION ALL SELECT 2, 'b'",
    )
    .await;
    build(
        warehouse,
        branch,
        "codes",
        "SELECT CAST('1' AS TEXT) AS id, CAST('a' AS TEXT) AS v UNION ALL SELECT '3', 'c'",
    )
    .await;
    let codes = diff(warehouse, branch, "codes", declared(&["id"])).await;
    assert_eq!(codes.rows, rows(1, 1, 0, 1));
    assert!(codes.notes.iter().any(|n| n.contains("type changed")), "{:?}", codes.notes);

    // Zero rows on both sides.
    build(
        warehouse,
        production,
        "empty",
        "SELECT CAST(1 AS INTEGER) AS id FROM orders WHERE 1 = 0",
    )
    .await;
    build(warehouse, branch, "empty", "SELECT CAST(1 AS INTEGER) AS id FROM orders WHERE 1 = 0")
        .await;
    let empty = diff(warehouse, branch, "empty", DiffOptions::default()).await;
    assert_eq!(
        (empty.production_rows, empty.branch_rows, empty.rows),
        (Some(0), Some(0), rows(0, 0, 0, 0))
    );

    // One side only: a new asset (no production table), one the branch has not built.
    build(warehouse, branch, "brand_new", "SELECT CAST(1 AS INTEGER) AS id").await;
    let new = diff(warehouse, branch, "brand_new", DiffOptions::default()).await;
    assert_eq!((new.production_rows, new.branch_rows, new.rows), (None, Some(1), None));
    build(warehouse, production, "untouched", "SELECT CAST(1 AS INTEGER) AS id").await;
    let untouched = diff(warehouse, branch, "untouched", DiffOptions::default()).await;
    assert_eq!(
        (untouched.production_rows, untouched.branch_rows, untouched.rows),
        (Some(1), None, None)
    );

    // Production is never a diff's target.
    assert!(warehouse.data_diff(production, "orders", &DiffOptions::default()).await.is_err());
}

async fn checksum_of(warehouse: &dyn Warehouse, target: &Target, table: &str) -> Option<String> {
    warehouse
        .table_checksum(target, table)
        .await
        .unwrap_or_else(|e| panic!("checksum of {table} in {}: {e}", target.schema))
}

/// Checksums of every table production owns, by name.
async fn production_state(warehouse: &dyn Warehouse, production: &Target) -> Vec<(String, String)> {
    let mut state = Vec::new();
    for table in warehouse.own_tables(production).await.expect("production's tables") {
        let checksum = checksum_of(warehouse, production, &table).await.expect("listed, so there");
        state.push((table, checksum));
    }
    state
}

/// The tables of the promotion story (`p_*`) the target owns.
async fn story_tables(warehouse: &dyn Warehouse, target: &Target) -> Vec<String> {
    let tables = warehouse.own_tables(target).await.expect("own tables");
    tables.into_iter().filter(|t| t.starts_with("p_")).collect()
}

/// Promotion, archive, restore and expiry: a branch's tables land in production with the
/// branch's checksums, production's replaced tables (and the absence of new ones) are archived,
/// restoring gives production back exactly, and a promotion that cannot be done changes nothing.
pub async fn promotion_stories(warehouse: &dyn Warehouse, production: &Target, branch: &Target) {
    use crate::{ArchiveId, Promotion};
    let key = |k: &str| AssetKey::new(k).expect("a valid key");
    let orders = "SELECT CAST(n AS INTEGER) AS id, CAST(n * 10 AS INTEGER) AS amount FROM s";
    build(warehouse, production, "p_orders", &series(50, orders)).await;
    build(warehouse, production, "p_revenue", "SELECT sum(amount) AS total FROM p_orders").await;
    let before = production_state(warehouse, production).await;
    let branch_orders = "SELECT CAST(n AS INTEGER) AS id, CAST(n * 11 AS INTEGER) AS amount FROM s";
    build(warehouse, branch, "p_orders", &series(60, branch_orders)).await;
    build(warehouse, branch, "p_churn", "SELECT CAST(1 AS INTEGER) AS customer, 'gone' AS why")
        .await;
    let branch_orders_sum = checksum_of(warehouse, branch, "p_orders").await;
    let branch_churn_sum = checksum_of(warehouse, branch, "p_churn").await;
    assert_eq!(warehouse.promotable(branch, &key("p_orders")).await.expect("promotable"), None);
    assert_eq!(
        warehouse.promotable(branch, &key("p_missing")).await.expect("promotable"),
        Some("missing".to_owned())
    );

    // Anything missing refuses the whole promotion: production is as it was.
    let archive = ArchiveId(1);
    let promote = |keys: &[&str]| {
        keys.iter()
            .map(|k| Promotion { key: key(k), from: branch.schema.clone() })
            .collect::<Vec<_>>()
    };
    let refused = warehouse
        .promote(&production.schema, archive, &promote(&["p_orders", "p_missing"]), 1_000)
        .await;
    assert!(matches!(refused, Err(crate::WarehouseError::Refused(_))), "{refused:?}");
    assert_eq!(production_state(warehouse, production).await, before, "nothing promoted");
    assert_eq!(warehouse.archived(&production.schema).await.expect("archived"), []);

    // Promoted: production serves the branch's tables, checksums equal.
    warehouse
        .promote(&production.schema, archive, &promote(&["p_orders", "p_churn"]), 1_000)
        .await
        .expect("promote");
    assert_eq!(checksum_of(warehouse, production, "p_orders").await, branch_orders_sum);
    assert_eq!(checksum_of(warehouse, production, "p_churn").await, branch_churn_sum);
    assert_eq!(
        warehouse.row_count(production, "p_orders").await.expect("rows"),
        Some(60),
        "the branch's rows"
    );
    // The branch reads the same data (its own copy or, moved, production's).
    assert_eq!(checksum_of(warehouse, branch, "p_orders").await, branch_orders_sum);
    assert_eq!(
        story_tables(warehouse, production).await,
        ["p_churn", "p_orders", "p_revenue"],
        "archived tables are no asset's"
    );

    // The catch-up then rebuilds revenue, archiving it first; a second archive of a key keeps
    // the first entry.
    warehouse
        .archive(&production.schema, archive, &[key("p_revenue")], 2_000)
        .await
        .expect("archive");
    build(warehouse, production, "p_revenue", "SELECT sum(amount) AS total FROM p_orders").await;
    warehouse
        .archive(&production.schema, archive, &[key("p_revenue")], 3_000)
        .await
        .expect("again");
    let archived = warehouse.archived(&production.schema).await.expect("archived");
    let entries: Vec<(i64, &str, bool, i64)> =
        archived.iter().map(|a| (a.archive.0, a.key.as_str(), a.existed, a.archived_at)).collect();
    assert_eq!(
        entries,
        [(1, "p_orders", true, 1_000), (1, "p_churn", false, 1_000), (1, "p_revenue", true, 2_000)]
    );

    // Restored: production exactly as before, p_churn gone; restoring again changes nothing.
    let mut restored =
        warehouse.restore(&production.schema, archive, 4_000).await.expect("restore");
    restored.sort();
    assert_eq!(restored, [key("p_churn"), key("p_orders"), key("p_revenue")]);
    assert_eq!(production_state(warehouse, production).await, before, "rolled back exactly");
    assert_eq!(warehouse.restore(&production.schema, archive, 5_000).await.expect("again"), []);
    assert_eq!(warehouse.archived(&production.schema).await.expect("archived"), []);
    let unknown = warehouse.restore(&production.schema, ArchiveId(99), 5_000).await;
    assert!(matches!(unknown, Err(crate::WarehouseError::Refused(_))), "{unknown:?}");

    // A second catch-up's archive expires after its retention; a younger one stays.
    build(warehouse, branch, "p_revenue", "SELECT CAST(7 AS INTEGER) AS total").await;
    warehouse
        .promote(&production.schema, ArchiveId(2), &promote(&["p_revenue"]), 10_000)
        .await
        .expect("promote again");
    warehouse
        .archive(&production.schema, ArchiveId(3), &[key("p_orders")], 20_000)
        .await
        .expect("archive");
    // Archive 1's three restored entries and archive 2's one.
    assert_eq!(warehouse.expire_archives(&production.schema, 15_000).await.expect("expire"), 4);
    let left: Vec<i64> = warehouse
        .archived(&production.schema)
        .await
        .expect("archived")
        .iter()
        .map(|a| a.archive.0)
        .collect();
    assert_eq!(left, [3]);
    let expired = warehouse.restore(&production.schema, ArchiveId(2), 30_000).await;
    assert!(
        matches!(expired, Err(crate::WarehouseError::Refused(_))),
        "an expired archive: {expired:?}"
    );
    assert_eq!(warehouse.expire_archives(&production.schema, 30_000).await.expect("expire"), 1);
    assert_eq!(
        story_tables(warehouse, production).await,
        ["p_orders", "p_revenue"],
        "expired archives leave nothing behind"
    );
}
