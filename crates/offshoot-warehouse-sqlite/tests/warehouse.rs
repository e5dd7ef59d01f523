//! Integration tests of the SQLite warehouse: zero-copy clones, copy-on-write, production
//! protection, atomic replacement, teardown, identifier quoting and listing schemas.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use offshoot_core::{AssetKey, DeploymentName, RepositoryName, SchemaName};
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
        Fixture::with_seed(SEED).await
    }

    async fn with_seed(seed: &str) -> Fixture {
        let folder = TempFolder::new();
        let warehouse =
            SqliteWarehouse::new(folder.path.join("warehouse")).expect("warehouse folder");
        let production = Target { schema: schema("prod"), production: schema("prod") };
        warehouse.prepare(&production).await.expect("prepare production");
        warehouse
            .execute_production_script(&production.schema, seed)
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
        let mut connection = self.warehouse.open_connection(target).await.expect("connection");
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name",
        )
        .fetch_all(&mut connection)
        .await
        .expect("list tables");
        connection.close().await.expect("close");
        names
    }

    fn file(&self, target: &Target) -> PathBuf {
        self.warehouse.file_of(target)
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("the file exists").len()
}

#[tokio::test]
async fn a_branch_reads_production_without_copying_it() {
    // About 22 MB in production: 200 000 rows of 100 random bytes.
    let seed = "CREATE TABLE big AS
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
        SELECT i AS id, randomblob(100) AS payload FROM n;
        CREATE TABLE small AS SELECT id, hex(payload) AS payload FROM big WHERE id <= 100;";
    let fixture = Fixture::with_seed(seed).await;
    let (production, branch) = (&fixture.production, &fixture.branch);

    assert!(file_size(&fixture.file(production)) > 20_000_000);
    let branch_size = file_size(&fixture.file(branch));
    assert!(branch_size <= 8 * 1024, "a prepared branch is {branch_size} bytes");
    assert_eq!(fixture.own_tables(branch).await, Vec::<String>::new());

    // Before building anything, the branch sees production's table.
    assert_eq!(fixture.rows(branch, "big").await, Some(200_000));
    assert_eq!(
        fixture.checksum(branch, "small").await,
        fixture.checksum(production, "small").await
    );
    assert_eq!(
        fixture.materialize(branch, "big_summary", "SELECT count(*) AS n FROM big").await,
        Ok(1)
    );
    assert_eq!(fixture.own_tables(branch).await, ["big_summary"]);

    // Preparing again keeps what the branch built.
    fixture.warehouse.prepare(branch).await.expect("prepare is idempotent");
    assert_eq!(fixture.own_tables(branch).await, ["big_summary"]);
    assert!(file_size(&fixture.file(branch)) <= 16 * 1024);
}

#[tokio::test]
async fn materializing_in_a_branch_writes_the_branch_and_leaves_production_alone() {
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    let production_orders = fixture.checksum(production, "orders").await;

    // `large_orders` reads production's `orders` while the branch has none of its own.
    let downstream = "SELECT * FROM orders WHERE amount > 0";
    assert_eq!(fixture.materialize(branch, "large_orders", downstream).await, Ok(2));

    // Copy-on-write: the branch gets its own `orders` and from now on reads it.
    assert_eq!(
        fixture.materialize(branch, "orders", "SELECT * FROM raw_orders WHERE id = 1").await,
        Ok(1)
    );
    assert_eq!(fixture.own_tables(branch).await, ["large_orders", "orders"]);
    assert_eq!(fixture.rows(branch, "orders").await, Some(1));
    assert_ne!(fixture.checksum(branch, "orders").await, production_orders);

    // The same downstream SQL now resolves `orders` to the branch's table.
    assert_eq!(fixture.materialize(branch, "large_orders", downstream).await, Ok(1));

    // Production is exactly as it was.
    assert_eq!(fixture.rows(production, "orders").await, Some(3));
    assert_eq!(fixture.checksum(production, "orders").await, production_orders);
    assert_eq!(fixture.own_tables(production).await, ["Customers", "orders", "raw_orders"]);
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

#[tokio::test]
async fn an_asset_select_is_one_statement_and_cannot_write() {
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    let production_orders = fixture.checksum(production, "orders").await;

    let refused =
        |result: Result<u64, WarehouseError>| matches!(result, Err(WarehouseError::Refused(_)));
    let cases: &[(&str, bool)] = &[
        ("SELECT 1 AS x", false),
        ("SELECT 1 AS x;", false),
        ("SELECT 1 AS x; ;\n -- done\n /* really */", false),
        ("/* leading; comment */ SELECT 1 AS x", false),
        ("SELECT ';' AS x", false),
        ("SELECT 1 AS \"x;y\"", false),
        ("SELECT 1 AS [x;y]", false),
        ("SELECT 1 AS `x;y`", false),
        ("SELECT 'it''s; fine' AS x -- trailing; comment", false),
        ("SELECT 1 AS x; DELETE FROM prod.orders", true),
        ("SELECT 1 AS x; DETACH prod", true),
        ("SELECT 1 AS x /* ; */ ; DROP TABLE prod.orders", true),
        ("SELECT 'a'';' AS x; DROP TABLE orders", true),
        ("SELECT 1 AS x\0; DROP TABLE orders", true),
    ];
    for &(select, expect_refused) in cases {
        let result = fixture.materialize(branch, "probe", select).await;
        assert_eq!(refused(result.clone()), expect_refused, "{select:?}: {result:?}");
        if !expect_refused {
            assert_eq!(result, Ok(1), "{select:?}");
        }
    }

    // A single statement spliced after `CREATE TABLE … AS` can only be a select.
    for statement in ["DELETE FROM orders", "DROP TABLE prod.orders", "DETACH prod"] {
        let result = fixture.materialize(branch, "probe", statement).await;
        assert!(matches!(result, Err(WarehouseError::Query(_))), "{statement}: {result:?}");
    }

    assert_eq!(fixture.checksum(production, "orders").await, production_orders);
    assert_eq!(fixture.own_tables(production).await, ["Customers", "orders", "raw_orders"]);
    assert_eq!(fixture.own_tables(branch).await, ["probe"]);
}

#[tokio::test]
async fn rematerializing_replaces_the_table_and_a_failure_keeps_the_previous_one() {
    let fixture = Fixture::new().await;
    let branch = &fixture.branch;

    assert_eq!(
        fixture.materialize(branch, "totals", "SELECT 1 AS a UNION ALL SELECT 2").await,
        Ok(2)
    );
    assert_eq!(fixture.materialize(branch, "totals", "SELECT 5 AS b").await, Ok(1));
    let replaced = fixture.checksum(branch, "totals").await;

    // Fails while planning, and fails at run time after the first row was written.
    let failing = [
        ("SELECT * FROM no_such_table", "no such table: no_such_table"),
        (
            "SELECT abs(x) AS b FROM (SELECT 1 AS x UNION ALL SELECT -9223372036854775808)",
            "integer overflow",
        ),
    ];
    for (select, message) in failing {
        let result = fixture.materialize(branch, "totals", select).await;
        assert_eq!(result, Err(WarehouseError::Query(message.to_owned())), "{select}");
        assert_eq!(fixture.checksum(branch, "totals").await, replaced, "{select}");
        assert_eq!(fixture.all_own_tables(branch).await, ["totals"], "{select}");
    }

    // A staging table left by a crash is ignored by `own_tables` and replaced by the next build.
    let mut connection = fixture.warehouse.open_connection(branch).await.expect("connection");
    sqlx::raw_sql("CREATE TABLE main.totals__offshoot_new AS SELECT 'stale' AS c")
        .execute(&mut connection)
        .await
        .expect("leave a staging table behind");
    connection.close().await.expect("close");
    assert_eq!(fixture.own_tables(branch).await, ["totals"]);
    assert_eq!(fixture.materialize(branch, "totals", "SELECT 7 AS b").await, Ok(1));
    assert_eq!(fixture.all_own_tables(branch).await, ["totals"]);

    let reserved = fixture.materialize(branch, "totals__offshoot_new", "SELECT 1 AS b").await;
    assert!(matches!(reserved, Err(WarehouseError::Refused(_))), "{reserved:?}");
}

#[tokio::test]
async fn parallel_materializations_wait_for_each_other() {
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    let heavy = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) SELECT i FROM n";
    let (a, b, c, d) = tokio::join!(
        fixture.materialize(branch, "a", heavy),
        fixture.materialize(branch, "b", heavy),
        fixture.materialize(branch, "a", "SELECT * FROM orders"),
        // Production writes while the branch reads it.
        fixture.materialize(production, "daily", heavy),
    );
    assert_eq!((b, d), (Ok(20_000), Ok(20_000)));
    assert!(
        matches!((a, c), (Ok(20_000), Ok(3))),
        "both builds of `a` succeed, one after the other"
    );
    assert_eq!(fixture.own_tables(branch).await, ["a", "b"]);
}

#[tokio::test]
async fn teardown_deletes_the_branch_file_only() {
    let fixture = Fixture::new().await;
    let (production, branch) = (&fixture.production, &fixture.branch);
    let other = branch_of("other-branch");
    fixture.warehouse.prepare(&other).await.expect("prepare other");
    assert_eq!(fixture.materialize(branch, "orders", "SELECT * FROM raw_orders").await, Ok(3));
    assert_eq!(
        fixture.materialize(&other, "orders", "SELECT * FROM raw_orders LIMIT 1").await,
        Ok(1)
    );
    let production_orders = fixture.checksum(production, "orders").await;

    let branch_file = fixture.file(branch);
    let journal = PathBuf::from(format!("{}-journal", branch_file.display()));
    std::fs::write(&journal, b"").expect("a leftover journal");

    fixture.warehouse.teardown(branch).await.expect("teardown");
    assert!(!branch_file.exists());
    assert!(!journal.exists());
    fixture.warehouse.teardown(branch).await.expect("teardown is idempotent");

    assert_eq!(fixture.checksum(production, "orders").await, production_orders);
    assert_eq!(fixture.rows(&other, "orders").await, Some(1));
    assert_eq!(
        fixture.warehouse.schemas().await.expect("schemas"),
        [schema("other-branch"), schema("prod")]
    );

    let refused = fixture.warehouse.teardown(production).await;
    assert!(matches!(refused, Err(WarehouseError::Refused(_))), "{refused:?}");
    assert!(fixture.file(production).exists());

    // Operations on a torn-down branch fail instead of silently re-creating it.
    let gone = fixture.warehouse.own_tables(branch).await;
    assert!(matches!(gone, Err(WarehouseError::Backend(_))), "{gone:?}");
    assert!(!branch_file.exists());
}

#[tokio::test]
async fn identifiers_are_quoted() {
    let fixture = Fixture::new().await;
    let branch = &fixture.branch;

    assert_eq!(fixture.materialize(branch, "select", "SELECT * FROM orders").await, Ok(3));
    assert_eq!(
        fixture.materialize(branch, "order", "SELECT * FROM \"select\" WHERE id > 1").await,
        Ok(2)
    );
    assert_eq!(
        fixture.materialize(branch, "MixedCase", "SELECT * FROM \"Customers\"").await,
        Ok(2)
    );
    assert_eq!(fixture.own_tables(branch).await, ["MixedCase", "order", "select"]);
    assert_eq!(fixture.rows(branch, "order").await, Some(2));
    assert_eq!(fixture.rows(branch, "MixedCase").await, Some(2));
    // SQLite identifiers match ASCII case-insensitively, and so does the lookup.
    assert_eq!(fixture.rows(branch, "mixedcase").await, Some(2));
    assert_eq!(fixture.rows(branch, "Customers").await, Some(2));

    // Table names given to lookups are data, never SQL.
    for hostile in
        ["a\"b", "orders\"; DROP TABLE orders; --", "orders; DROP TABLE orders", "sqlite_master"]
    {
        assert_eq!(fixture.rows(branch, hostile).await, None, "{hostile}");
        assert_eq!(fixture.warehouse.table_checksum(branch, hostile).await, Ok(None), "{hostile}");
    }
    assert_eq!(fixture.rows(&fixture.production, "orders").await, Some(3));
}

#[tokio::test]
async fn checksums_are_stable_and_see_every_change() {
    let fixture = Fixture::new().await;
    let branch = &fixture.branch;
    let distinct = [
        "SELECT 1 AS v",
        "SELECT 1.0 AS v",
        "SELECT '1' AS v",
        "SELECT x'31' AS v",
        "SELECT NULL AS v",
        "SELECT 2 AS v",
        "SELECT 1 AS w",
        "SELECT 'ab' AS v",
        "SELECT 'a' AS v UNION ALL SELECT 'b'",
        "SELECT 1 AS v UNION ALL SELECT 1",
        "SELECT 1 AS v, 2 AS w",
        "SELECT 12 AS v",
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

    // Same content, built in another order or again: same checksum.
    fixture
        .materialize(
            branch,
            "t",
            "SELECT 2 AS v, 'b' AS w UNION ALL SELECT 1, 'a' UNION ALL SELECT 1, NULL",
        )
        .await
        .expect("t");
    let first = fixture.checksum(branch, "t").await;
    fixture
        .materialize(
            branch,
            "t",
            "SELECT 1 AS v, NULL AS w UNION ALL SELECT 1, 'a' UNION ALL SELECT 2, 'b'",
        )
        .await
        .expect("t");
    assert_eq!(fixture.checksum(branch, "t").await, first);
    assert_eq!(fixture.checksum(branch, "t").await, first);
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
async fn a_branch_needs_production_and_its_own_prepared_file() {
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
    let unprepared = warehouse.materialize_sql(&branch, &key("orders"), "SELECT 1 AS x").await;
    assert!(matches!(unprepared, Err(WarehouseError::Backend(_))), "{unprepared:?}");

    warehouse.prepare(&branch).await.expect("prepare");
    assert_eq!(warehouse.row_count(&branch, "orders").await, Ok(Some(3)));
    assert_eq!(warehouse.materialize_sql(&branch, &key("orders"), "SELECT 1 AS x").await, Ok(1));
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
