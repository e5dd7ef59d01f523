//! Integration tests of the SQLite warehouse: the port's contract (`offshoot_warehouse::contract`)
//! on real files, and what only this backend shows: production attached read-only, the file
//! layout (a folder per branch, journals, stray files), SQLite's dialect and type system.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use offshoot_core::{AssetKey, DeploymentName, RepositoryName, SchemaName};
use offshoot_warehouse::contract;
use offshoot_warehouse::{Target, Warehouse, WarehouseError};
use offshoot_warehouse_sqlite::SqliteWarehouse;
use sqlx::Connection;

/// A folder under the system's temporary folder, removed when dropped.
struct TempFolder {
    path: PathBuf,
}

impl TempFolder {
    fn new() -> TempFolder {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "offshoot-warehouse-sqlite-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the temporary folder is writable");
        TempFolder { path }
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn schema(deployment: &str) -> SchemaName {
    SchemaName::for_deployment(
        &RepositoryName::new("shop").expect("valid repository"),
        &DeploymentName::new(deployment).expect("valid deployment"),
    )
}

fn key(name: &str) -> AssetKey {
    AssetKey::new(name).expect("valid asset key")
}

fn branch_of(deployment: &str) -> Target {
    Target { schema: schema(deployment), production: schema("prod") }
}

const SEED: &str = "
    CREATE TABLE raw_orders (id INTEGER, amount REAL, customer TEXT);
    INSERT INTO raw_orders VALUES (1, 10.5, 'ada'), (2, 20.0, 'bob'), (3, -1.0, 'cy');
    CREATE TABLE orders AS SELECT id, amount, customer FROM raw_orders;
    CREATE TABLE \"Customers\" (name TEXT);
    INSERT INTO \"Customers\" VALUES ('ada'), ('bob');
";

/// A warehouse with production seeded and one branch prepared.
struct Fixture {
    _folder: TempFolder,
    warehouse: SqliteWarehouse,
    production: Target,
    branch: Target,
}

impl Fixture {
    async fn new() -> Fixture {
        let folder = TempFolder::new();
        let warehouse =
            SqliteWarehouse::new(folder.path.join("warehouse")).expect("warehouse folder");
        let production = Target { schema: schema("prod"), production: schema("prod") };
        warehouse.prepare(&production).await.expect("prepare production");
        warehouse
            .execute_production_script(&production.schema, SEED)
            .await
            .expect("seed production");
        let branch = branch_of("feature-1-ab12cd34");
        warehouse.prepare(&branch).await.expect("prepare branch");
        Fixture { _folder: folder, warehouse, production, branch }
    }

    async fn materialize(
        &self,
        target: &Target,
        name: &str,
        select: &str,
    ) -> Result<u64, WarehouseError> {
        self.warehouse.materialize_sql(target, &key(name), select).await
    }

    async fn rows(&self, target: &Target, table: &str) -> Option<u64> {
        self.warehouse.row_count(target, table).await.expect("row count")
    }

    async fn checksum(&self, target: &Target, table: &str) -> String {
        self.warehouse
            .table_checksum(target, table)
            .await
            .expect("checksum")
            .expect("the table exists")
    }

    async fn own_tables(&self, target: &Target) -> Vec<String> {
        self.warehouse.own_tables(target).await.expect("own tables")
    }

    /// Every table in the target's own file, staging tables included.
    async fn all_own_tables(&self, target: &Target) -> Vec<String> {
        all_own_tables(&self.warehouse, target).await
    }

    fn file(&self, target: &Target) -> PathBuf {
        self.warehouse.file_of(target)
    }
}

/// Every table in the target's own file, staging tables included.
async fn all_own_tables(warehouse: &SqliteWarehouse, target: &Target) -> Vec<String> {
    let mut connection = warehouse.open_connection(target).await.expect("connection");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .fetch_all(&mut connection)
    .await
    .expect("list tables");
    connection.close().await.expect("close");
    names
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("the file exists").len()
}

/// The contract's warehouses: each in a folder of its own, removed with it.
struct Sqlite;

#[async_trait]
impl contract::Backend for Sqlite {
    async fn fresh(&self, production: &Target) -> Box<dyn contract::Subject> {
        let folder = TempFolder::new();
        let warehouse =
            SqliteWarehouse::new(folder.path.join("warehouse")).expect("warehouse folder");
        warehouse.prepare(production).await.expect("prepare production");
        Box::new(Subject { warehouse, _folder: folder })
    }
}

/// Fields drop in order: the warehouse before its folder.
struct Subject {
    warehouse: SqliteWarehouse,
    _folder: TempFolder,
}

#[async_trait]
impl contract::Subject for Subject {
    fn warehouse(&self) -> &dyn Warehouse {
        &self.warehouse
    }

    async fn bytes_held(&self, target: &Target) -> u64 {
        file_size(&self.warehouse.file_of(target))
    }

    async fn all_tables(&self, target: &Target) -> Vec<String> {
        all_own_tables(&self.warehouse, target).await
    }

    async fn execute(&self, target: &Target, sql: &str) {
        let mut connection = self.warehouse.open_connection(target).await.expect("connection");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        connection.close().await.expect("close");
    }
}

#[tokio::test]
async fn the_warehouse_contract() {
    contract::run_all(&Sqlite).await;
}

#[tokio::test]
async fn production_cannot_be_written_through_a_branch_connection() {
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    let production_orders = fixture.checksum(production, "orders").await;

    let mut connection =
        fixture.warehouse.open_connection(branch).await.expect("branch connection");
    let writes = [
        "INSERT INTO prod.orders VALUES (9, 9.0, 'eve')",
        // Unqualified, `orders` resolves to production's table: still refused.
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
        "DROP TABLE prod.orders",
        "ALTER TABLE prod.orders RENAME TO gone",
        "CREATE TABLE prod.intruder (x)",
    ];
    for write in writes {
        let error = sqlx::raw_sql(sqlx::AssertSqlSafe(write))
            .execute(&mut connection)
            .await
            .expect_err(write);
        assert!(error.to_string().contains("readonly database"), "{write}: {error}");
    }
    connection.close().await.expect("close");

    assert_eq!(fixture.checksum(production, "orders").await, production_orders);
    assert_eq!(fixture.own_tables(production).await, ["Customers", "orders", "raw_orders"]);
}

/// Materializations keep their connection between steps; what other connections do to either
/// file in between must still be what the next step sees: a table production adds, a table
/// another process creates in the branch (which then shadows production's), a teardown and a
/// new prepare under the same name.
#[tokio::test]
async fn a_kept_connection_resolves_names_as_a_fresh_one_would() {
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    // The branch's first step keeps its connection, having read both schemas.
    assert_eq!(fixture.materialize(branch, "first", "SELECT * FROM orders").await.unwrap(), 3);
    // Production gains a table after that.
    fixture
        .warehouse
        .execute_production_script(&production.schema, "CREATE TABLE late AS SELECT 1 AS x")
        .await
        .expect("production adds a table");
    assert_eq!(fixture.materialize(branch, "reads_late", "SELECT * FROM late").await.unwrap(), 1);
    // Another process (a command asset) creates the branch's own `orders`.
    let mut other = fixture.warehouse.open_connection(branch).await.expect("connection");
    sqlx::raw_sql("CREATE TABLE main.orders AS SELECT 42 AS id")
        .execute(&mut other)
        .await
        .expect("the branch writes its own file");
    other.close().await.expect("close");
    assert_eq!(
        fixture.materialize(branch, "reads_orders", "SELECT id FROM orders").await.unwrap(),
        1,
        "the branch's own orders (one row) shadows production's (three)"
    );
    // Torn down and prepared again: the kept connection's file is gone.
    fixture.warehouse.teardown(branch).await.expect("teardown");
    fixture.warehouse.prepare(branch).await.expect("prepare again");
    assert_eq!(fixture.materialize(branch, "again", "SELECT * FROM orders").await.unwrap(), 3);
    assert_eq!(fixture.own_tables(branch).await, ["again"]);
    // Production's kept connection sees a table another connection replaced.
    assert_eq!(fixture.materialize(production, "p1", "SELECT * FROM orders").await.unwrap(), 3);
    fixture
        .warehouse
        .execute_production_script(
            &production.schema,
            "DROP TABLE orders; CREATE TABLE orders AS SELECT 1 AS id",
        )
        .await
        .expect("production replaces orders");
    assert_eq!(fixture.materialize(production, "p2", "SELECT * FROM orders").await.unwrap(), 1);
}

/// Steps of one target materialized at once queue for its connection: all succeed.
#[tokio::test]
async fn parallel_materializations_of_one_target_all_succeed() {
    let fixture = Fixture::new().await;
    let branch = fixture.branch.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let warehouse = fixture.warehouse.clone();
        let branch = branch.clone();
        tasks.spawn(async move {
            warehouse
                .materialize_sql(&branch, &key(&format!("t{i}")), "SELECT * FROM raw_orders")
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("no panic").expect("materialized"), 3);
    }
    assert_eq!(fixture.own_tables(&branch).await.len(), 16);
}

#[tokio::test]
async fn sqlite_quoting_and_detach_in_an_asset_select() {
    // The contract has the portable cases; these are SQLite's own quotes and its DETACH.
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    let production_orders = fixture.checksum(production, "orders").await;
    let cases: &[(&str, bool)] = &[
        ("SELECT 1 AS [x;y]", false),
        ("SELECT 1 AS `x;y`", false),
        ("SELECT 1 AS x; DELETE FROM prod.orders", true),
        ("SELECT 1 AS x; DETACH prod", true),
        ("SELECT 1 AS x /* ; */ ; DROP TABLE prod.orders", true),
    ];
    for &(select, expect_refused) in cases {
        let result = fixture.materialize(branch, "probe", select).await;
        let refused = matches!(result, Err(WarehouseError::Refused(_)));
        assert_eq!(refused, expect_refused, "{select:?}: {result:?}");
        if !expect_refused {
            assert_eq!(result, Ok(1), "{select:?}");
        }
    }
    for statement in ["DROP TABLE prod.orders", "DETACH prod"] {
        let result = fixture.materialize(branch, "probe", statement).await;
        assert!(matches!(result, Err(WarehouseError::Query(_))), "{statement}: {result:?}");
    }
    // The database's own messages, as they are.
    let failing = [
        ("SELECT * FROM no_such_table", "no such table: no_such_table"),
        (
            "SELECT abs(x) AS b FROM (SELECT 1 AS x UNION ALL SELECT -9223372036854775808)",
            "integer overflow",
        ),
    ];
    for (select, message) in failing {
        let result = fixture.materialize(branch, "probe", select).await;
        assert_eq!(result, Err(WarehouseError::Query(message.to_owned())), "{select}");
    }
    assert_eq!(fixture.checksum(production, "orders").await, production_orders);
    assert_eq!(fixture.all_own_tables(branch).await, ["probe"]);
}

#[tokio::test]
async fn lookups_match_case_insensitively_as_sqlite_does() {
    let fixture = Fixture::new().await;
    let branch = &fixture.branch;
    assert_eq!(
        fixture.materialize(branch, "MixedCase", "SELECT * FROM \"Customers\"").await,
        Ok(2)
    );
    assert_eq!(fixture.rows(branch, "mixedcase").await, Some(2));
    assert_eq!(fixture.rows(branch, "customers").await, Some(2));
}

#[tokio::test]
async fn checksums_tell_sqlite_storage_classes_apart() {
    let fixture = Fixture::new().await;
    let branch = &fixture.branch;
    let distinct = [
        "SELECT 1 AS v",
        "SELECT 1.0 AS v",
        "SELECT '1' AS v",
        "SELECT x'31' AS v",
        "SELECT NULL AS v",
    ];
    let mut seen = Vec::new();
    for select in distinct {
        fixture.materialize(branch, "t", select).await.expect(select);
        let checksum = fixture.checksum(branch, "t").await;
        assert!(
            !seen.iter().any(|(_, earlier)| earlier == &checksum),
            "{select} collides with {seen:?}"
        );
        seen.push((select, checksum));
    }
}

#[tokio::test]
async fn a_prepared_branch_is_one_small_file() {
    let fixture = Fixture::new().await;
    let branch_size = file_size(&fixture.file(&fixture.branch));
    assert!(branch_size <= 8 * 1024, "a prepared branch is {branch_size} bytes");
}

#[tokio::test]
async fn teardown_deletes_the_branch_folder_its_file_and_journals() {
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    assert_eq!(fixture.materialize(branch, "orders", "SELECT * FROM raw_orders").await, Ok(3));
    let branch_file = fixture.file(branch);
    let journal = PathBuf::from(format!("{}-journal", branch_file.display()));
    std::fs::write(&journal, b"").expect("a leftover journal");

    fixture.warehouse.teardown(branch).await.expect("teardown");
    assert!(!branch_file.exists());
    assert!(!journal.exists());
    assert!(fixture.file(production).exists());
    let gone = fixture.warehouse.row_count(branch, "orders").await;
    assert!(matches!(gone, Err(WarehouseError::Backend(_))), "{gone:?}");
    assert!(!branch_file.exists(), "not re-created");
}

#[tokio::test]
async fn schemas_lists_the_deployment_files() {
    let fixture = Fixture::new().await;
    fixture.warehouse.prepare(&branch_of("another-one")).await.expect("prepare");
    for stray in ["notes.txt", "Not-A-Schema.db", "plain.db", "shop__prod.db-journal"] {
        std::fs::write(fixture.warehouse.root().join(stray), b"").expect("stray file");
    }
    std::fs::create_dir(fixture.warehouse.root().join("shop__folder.db")).expect("stray folder");
    std::fs::create_dir(fixture.warehouse.root().join("Not_A_Schema")).expect("stray folder");
    // A branch file from before branches had folders of their own is still listed (and
    // dropped by teardown).
    std::fs::write(fixture.warehouse.root().join("shop__old_branch.db"), b"").expect("legacy file");

    let schemas = fixture.warehouse.schemas().await.expect("schemas");
    assert_eq!(
        schemas,
        [schema("another-one"), schema("feature-1-ab12cd34"), schema("old-branch"), schema("prod")]
    );

    fixture.warehouse.teardown(&branch_of("old-branch")).await.expect("teardown");
    assert!(!fixture.warehouse.root().join("shop__old_branch.db").exists());
}

#[tokio::test]
async fn a_branch_keeps_its_file_and_journals_in_a_folder_of_its_own() {
    let fixture = Fixture::new().await;
    let own = fixture.warehouse.file_of(&fixture.branch);
    let folder = own.parent().expect("a folder").to_path_buf();
    assert_ne!(folder, fixture.warehouse.root(), "never beside production's file");
    assert_eq!(fixture.warehouse.writable_paths(&fixture.branch), std::slice::from_ref(&folder));
    let production = Target { schema: schema("prod"), production: schema("prod") };
    assert_eq!(
        fixture.warehouse.writable_paths(&production),
        [fixture.warehouse.root().to_path_buf()]
    );
    fixture.warehouse.teardown(&fixture.branch).await.expect("teardown");
    assert!(!folder.exists(), "teardown removes the folder");
}

#[tokio::test]
async fn command_environment_points_at_the_files() {
    let fixture = Fixture::new().await;
    let environment = fixture.warehouse.command_environment(&fixture.branch);
    let root = fixture.warehouse.root().display().to_string();
    assert!(root.starts_with('/'), "{root}");
    let expected = [
        (
            "OFFSHOOT_WAREHOUSE_URL",
            format!("sqlite://{root}/shop__feature_1_ab12cd34/shop__feature_1_ab12cd34.db"),
        ),
        ("OFFSHOOT_SCHEMA", "shop__feature_1_ab12cd34".to_owned()),
        ("OFFSHOOT_PRODUCTION_URL", format!("sqlite://{root}/shop__prod.db")),
    ];
    let expected: Vec<(String, String)> =
        expected.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    assert_eq!(environment, expected);
}

#[tokio::test]
async fn production_is_attached_read_only_from_any_folder_name() {
    let folder = TempFolder::new();
    // A folder name that needs percent-encoding in the read-only attach URI.
    let warehouse = SqliteWarehouse::new(folder.path.join("ware house?#%")).expect("warehouse");
    let branch = branch_of("feature");

    let missing_production = warehouse.prepare(&branch).await;
    assert!(
        matches!(missing_production, Err(WarehouseError::Refused(_))),
        "{missing_production:?}"
    );
    assert!(!warehouse.file_of(&branch).exists());

    warehouse.execute_production_script(&schema("prod"), SEED).await.expect("seed");
    warehouse.prepare(&branch).await.expect("prepare");
    assert_eq!(warehouse.row_count(&branch, "orders").await, Ok(Some(3)));
    assert_eq!(warehouse.materialize_sql(&branch, &key("orders"), "SELECT 1 AS x").await, Ok(1));
    let mut connection = warehouse.open_connection(&branch).await.expect("connection");
    let write = sqlx::raw_sql("DELETE FROM prod.orders").execute(&mut connection).await;
    assert!(write.is_err_and(|e| e.to_string().contains("readonly database")));
    connection.close().await.expect("close");
    assert_eq!(
        warehouse
            .row_count(&Target { schema: schema("prod"), production: schema("prod") }, "orders")
            .await,
        Ok(Some(3))
    );
}

#[tokio::test]
async fn data_diffs_follow_the_warehouse_contract() {
    let fixture = Fixture::new().await;
    offshoot_warehouse::contract::data_diff_stories(
        &fixture.warehouse,
        &fixture.production,
        &fixture.branch,
    )
    .await;
}

/// SQLite samples integer keys by `id × 48271 mod (2³¹ − 1)`: below 44,488 that is `id × 48271`,
/// and 48271 leaves 1 when divided by 3, so one key in 3 means the ids divisible by 3.
#[tokio::test]
async fn a_sampled_data_diff_counts_exactly_the_keys_it_sampled() {
    let fixture = Fixture::new().await;
    let series = |n: u32, select: &str| {
        format!("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) {select}")
    };
    let production =
        series(100, "SELECT CAST(n AS INTEGER) AS id, CAST(n * 10 AS INTEGER) AS amount FROM s");
    let branch = series(105, "SELECT CAST(n AS INTEGER) AS id, CAST(CASE WHEN n % 10 = 0 THEN n * 10 + 1 ELSE n * 10 END AS INTEGER) AS amount FROM s WHERE n > 5");
    fixture.materialize(&fixture.production, "orders", &production).await.expect("production");
    fixture.materialize(&fixture.branch, "orders", &branch).await.expect("branch");
    let options = offshoot_warehouse::data_diff::DiffOptions {
        key: offshoot_warehouse::data_diff::KeyRequest::Declared(vec!["id".to_owned()]),
        row_limit: Some(40),
        ..Default::default()
    };
    let diff =
        fixture.warehouse.data_diff(&fixture.branch, "orders", &options).await.expect("diff");
    let sampled = diff.sampled.expect("sampled");
    // Production 3, 6, ..., 99 (33); the branch 6, 9, ..., 105 (34). Only in production: 3;
    // only in the branch: 102, 105; changed: 30, 60, 90; equal: the other 29.
    assert_eq!((sampled.modulus, sampled.production_rows, sampled.branch_rows), (3, 33, 34));
    let counts = diff.rows.expect("rows");
    assert_eq!(
        (counts.only_in_production, counts.only_in_branch, counts.changed, counts.equal),
        (1, 2, 3, 29)
    );
    let keys: Vec<_> =
        diff.samples.changed.iter().map(|r| r.key[0].clone().unwrap_or_default()).collect();
    assert_eq!(keys, ["30", "60", "90"]);
    assert_eq!(diff.columns[0].equal, Some(29));
}

/// Matching fetches the branch's rows by their `rowid` where the table has one under a name no
/// column shadows; a `WITHOUT ROWID` table, a view and columns named `rowid`, `_rowid_` and
/// `oid` (here with repeated values, which would match wrong rows if taken for ids) take the
/// other ways and count the same.
#[tokio::test]
async fn a_data_diff_counts_the_same_whatever_the_branch_tables_row_ids() {
    let fixture = Fixture::new().await;
    let series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 105)";
    // Production 1..100; the branch drops 1..5, adds 101..105 and changes every tenth amount.
    let production = format!("{series} SELECT CAST(n % 7 AS INTEGER) AS \"rowid\", CAST(n % 7 AS INTEGER) AS \"_rowid_\", CAST(n AS INTEGER) AS id, CAST(n * 10 AS INTEGER) AS amount FROM s WHERE n <= 100");
    let branch_rows = format!("{series} SELECT n % 7, n % 7, n, CASE WHEN n % 10 = 0 THEN n * 10 + 1 ELSE n * 10 END FROM s WHERE n > 5");
    let tables = [
        ("plain", "CREATE TABLE main.plain (\"rowid\" INTEGER, \"_rowid_\" INTEGER, id INTEGER, amount INTEGER)".to_owned()),
        ("without_rowid", "CREATE TABLE main.without_rowid (\"rowid\" INTEGER, \"_rowid_\" INTEGER, id INTEGER PRIMARY KEY, amount INTEGER) WITHOUT ROWID".to_owned()),
        ("shadowed", "CREATE TABLE main.shadowed (\"rowid\" INTEGER, \"_rowid_\" INTEGER, id INTEGER, amount INTEGER, oid INTEGER)".to_owned()),
    ];
    let mut connection =
        fixture.warehouse.open_connection(&fixture.branch).await.expect("branch connection");
    for (name, create) in &tables {
        fixture.materialize(&fixture.production, name, &production).await.expect("production");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create.as_str()))
            .execute(&mut connection)
            .await
            .expect(name);
        let insert = if *name == "shadowed" {
            format!("INSERT INTO main.shadowed (\"rowid\", \"_rowid_\", id, amount) {branch_rows}")
        } else {
            format!("INSERT INTO main.{name} {branch_rows}")
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(insert)).execute(&mut connection).await.expect(name);
    }
    fixture.materialize(&fixture.production, "viewed", &production).await.expect("production");
    sqlx::raw_sql(sqlx::AssertSqlSafe("CREATE VIEW main.viewed AS SELECT * FROM main.plain"))
        .execute(&mut connection)
        .await
        .expect("view");
    connection.close().await.expect("close");
    let options = offshoot_warehouse::data_diff::DiffOptions {
        key: offshoot_warehouse::data_diff::KeyRequest::Declared(vec!["id".to_owned()]),
        ..Default::default()
    };
    for name in ["plain", "without_rowid", "shadowed", "viewed"] {
        let diff = fixture.warehouse.data_diff(&fixture.branch, name, &options).await.expect(name);
        let counts = diff.rows.expect("rows");
        assert_eq!(
            (counts.only_in_production, counts.only_in_branch, counts.changed, counts.equal),
            (5, 5, 10, 85),
            "{name}"
        );
        let amount = diff.columns.iter().find(|c| c.name == "amount").expect("amount");
        assert_eq!(amount.equal, Some(85), "{name}");
        let rowid = diff.columns.iter().find(|c| c.name == "rowid").expect("rowid");
        assert_eq!(rowid.equal, Some(95), "{name}: the column named rowid is compared as data");
        let keys: Vec<_> =
            diff.samples.added.iter().map(|r| r[2].clone().unwrap_or_default()).collect();
        assert_eq!(keys, ["101", "102", "103", "104", "105"], "{name}");
    }
}

/// Keys compare as stored: production's `COLLATE NOCASE` key column does not make `a` match
/// the branch's `A` (nor leave `A` counted both as matched and as the branch's own).
#[tokio::test]
async fn a_data_diff_matches_keys_as_stored_whatever_their_collation() {
    let fixture = Fixture::new().await;
    fixture
        .warehouse
        .execute_production_script(
            &fixture.production.schema,
            "CREATE TABLE cased (id TEXT COLLATE NOCASE, v INTEGER); INSERT INTO cased VALUES ('a', 1), ('B', 2), ('c', 3);",
        )
        .await
        .expect("production");
    fixture
        .materialize(
            &fixture.branch,
            "cased",
            "SELECT CAST('A' AS TEXT) AS id, CAST(1 AS INTEGER) AS v UNION ALL SELECT 'b', 2 UNION ALL SELECT 'c', 3",
        )
        .await
        .expect("branch");
    let options = offshoot_warehouse::data_diff::DiffOptions {
        key: offshoot_warehouse::data_diff::KeyRequest::Declared(vec!["id".to_owned()]),
        ..Default::default()
    };
    let diff = fixture.warehouse.data_diff(&fixture.branch, "cased", &options).await.expect("diff");
    let counts = diff.rows.expect("rows");
    assert_eq!(
        (counts.only_in_production, counts.only_in_branch, counts.changed, counts.equal),
        (2, 2, 0, 1)
    );
}

#[tokio::test]
async fn a_data_diff_handles_columns_of_mixed_types() {
    // SQLite only: one column holds numbers and text.
    let fixture = Fixture::new().await;
    fixture
        .materialize(
            &fixture.production,
            "mixed",
            "SELECT 1 AS id, 10 AS v UNION ALL SELECT 2, 'ten' UNION ALL SELECT 3, 2.5",
        )
        .await
        .expect("mixed");
    fixture
        .materialize(
            &fixture.branch,
            "mixed",
            "SELECT 1 AS id, 10 AS v UNION ALL SELECT 2, 'ten' UNION ALL SELECT 3, 3.5",
        )
        .await
        .expect("mixed");
    let options = offshoot_warehouse::data_diff::DiffOptions::default();
    let diff = fixture.warehouse.data_diff(&fixture.branch, "mixed", &options).await.expect("diff");
    let counts = diff.rows.expect("rows");
    assert_eq!((counts.changed, counts.equal), (1, 2));
    // The stats count the numbers alone: 'ten' is neither summed nor the maximum.
    let v = diff.columns.iter().find(|c| c.name == "v").expect("v");
    let stats = |s: &Option<offshoot_warehouse::data_diff::NumericStats>| {
        s.as_ref().map(|s| (s.sum.clone(), s.min.clone(), s.max.clone(), s.nulls))
    };
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(stats(&v.production), Some((text("12.5"), text("2.5"), text("10"), 0)));
    assert_eq!(stats(&v.branch), Some((text("13.5"), text("3.5"), text("10"), 0)));
}

#[tokio::test]
async fn promotion_follows_the_warehouse_contract() {
    let fixture = Fixture::new().await;
    offshoot_warehouse::contract::promotion_stories(
        &fixture.warehouse,
        &fixture.production,
        &fixture.branch,
    )
    .await;
}

/// SQLite's own promotion rules: a view does not move, and production's views keep reading the
/// asset's name (not the archived table) through a promotion and a restore.
#[tokio::test]
async fn promotion_keeps_production_views_on_the_asset_and_refuses_views() {
    use offshoot_warehouse::{ArchiveId, Promotion};
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    fixture
        .warehouse
        .execute_production_script(
            &production.schema,
            "CREATE VIEW orders_view AS SELECT * FROM orders",
        )
        .await
        .expect("a production view");
    let mut connection = fixture.warehouse.open_connection(branch).await.expect("connection");
    sqlx::raw_sql("CREATE VIEW main.v AS SELECT 1 AS x")
        .execute(&mut connection)
        .await
        .expect("a view");
    connection.close().await.expect("close");
    assert_eq!(
        fixture.warehouse.promotable(branch, &key("v")).await.expect("promotable"),
        Some("a view".to_owned())
    );
    let refused = fixture
        .warehouse
        .promote(
            &production.schema,
            ArchiveId(1),
            &[Promotion { key: key("v"), from: branch.schema.clone() }],
            1,
        )
        .await;
    assert!(matches!(refused, Err(WarehouseError::Refused(_))), "{refused:?}");

    // Checksums and counts read tables; the view is read directly.
    let view = || async {
        let mut connection =
            fixture.warehouse.open_connection(production).await.expect("connection");
        let ids: Option<String> = sqlx::query_scalar(
            "SELECT group_concat(id, ',') FROM (SELECT id FROM orders_view ORDER BY id)",
        )
        .fetch_one(&mut connection)
        .await
        .expect("read the view");
        connection.close().await.expect("close");
        ids
    };
    assert_eq!(view().await.as_deref(), Some("1,2,3"));
    fixture
        .materialize(branch, "orders", "SELECT * FROM orders WHERE amount > 0")
        .await
        .expect("build");
    let promotions = [Promotion { key: key("orders"), from: branch.schema.clone() }];
    fixture
        .warehouse
        .promote(&production.schema, ArchiveId(1), &promotions, 1)
        .await
        .expect("promote");
    assert_eq!(view().await.as_deref(), Some("1,2"), "the view reads the new table");
    fixture.warehouse.restore(&production.schema, ArchiveId(1), 2).await.expect("restore");
    assert_eq!(view().await.as_deref(), Some("1,2,3"), "and the restored one");
    assert_eq!(
        fixture.own_tables(production).await,
        ["Customers", "orders", "orders_view", "raw_orders"]
    );
}
