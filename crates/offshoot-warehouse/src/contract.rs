//! Behaviour every warehouse must show, run by each backend's tests (cargo feature `contract`,
//! so none of it is compiled into the server). Tables are built through the port itself
//! (`materialize_sql` on production and on the branch) with portable SQL, so both backends get
//! the same data and must give the same, exact numbers.
//!
//! [`run_all`] runs the stories of the port's core (prepare, copy-on-write, the one-statement
//! rule, atomic replacement, teardown, lookups, checksums, listing, environments), each on a new
//! warehouse from the backend's [`Backend`]. [`data_diff_stories`] and the stories after it take a
//! warehouse and two prepared targets; each backend runs them as tests of their own.
//!
//! What is not here because it differs by design: how production is protected below the port
//! (SQLite's read-only attach, PostgreSQL's roles), dialect-specific SQL, file layout and
//! credentials. Those stay in the backends' own tests.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use async_trait::async_trait;

use crate::data_diff::{DataDiff, DiffOptions, KeyRequest, KeySource, RowCounts};
use crate::{Target, Warehouse, WarehouseError};
use offshoot_core::{AssetKey, DeploymentName, RepositoryName, SchemaName};

/// A backend under test: makes warehouses of its own for the stories.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new warehouse that shares nothing with any other (a new folder, a new database), with
    /// `production` prepared and ready for branches (for PostgreSQL: the branch role set up).
    async fn fresh(&self, production: &Target) -> Box<dyn Subject>;
}

/// One warehouse under test, and the few things the contract must see below the port.
#[async_trait]
pub trait Subject: Send + Sync {
    fn warehouse(&self) -> &dyn Warehouse;

    /// Bytes of storage the target's own schema holds (its file; its relations).
    async fn bytes_held(&self, target: &Target) -> u64;

    /// Every table in the target's own schema, the port's staging tables included, sorted.
    async fn all_tables(&self, target: &Target) -> Vec<String>;

    /// Runs `sql` the way the target's own SQL runs (for a branch: as the branch, names
    /// resolving to its own tables first); panics if it fails.
    async fn execute(&self, target: &Target, sql: &str);
}

/// Runs every story of the port's core on `backend`, each on a fresh warehouse.
pub async fn run_all(backend: &dyn Backend) {
    a_prepared_branch_copies_nothing_and_reads_production(&*fresh(backend).await).await;
    materializing_in_a_branch_is_copy_on_write_and_leaves_production_alone(&*fresh(backend).await)
        .await;
    a_table_production_rebuilds_is_what_branches_read_next(&*fresh(backend).await).await;
    an_asset_select_is_one_statement(&*fresh(backend).await).await;
    rematerializing_replaces_the_table_and_a_failure_keeps_the_previous_one(&*fresh(backend).await)
        .await;
    parallel_materializations_wait_for_each_other(&*fresh(backend).await).await;
    teardown_removes_exactly_the_branch(&*fresh(backend).await).await;
    identifiers_are_quoted_and_lookups_are_data(&*fresh(backend).await).await;
    checksums_are_stable_and_see_every_change(&*fresh(backend).await).await;
    schemas_lists_production_and_every_prepared_branch(&*fresh(backend).await).await;
    a_branch_needs_production_and_its_own_prepared_schema(&*fresh(backend).await).await;
    processes_get_their_target_and_loads_get_production(&*fresh(backend).await).await;
}

/// The deployment schema of `deployment` in the repository `shop`.
pub fn schema(deployment: &str) -> SchemaName {
    SchemaName::for_deployment(
        &RepositoryName::new("shop").expect("a valid repository in the contract"),
        &DeploymentName::new(deployment).expect("a valid deployment in the contract"),
    )
}

/// Production: `shop__prod`.
pub fn production() -> Target {
    Target { schema: schema("prod"), production: schema("prod") }
}

/// A branch of [`production`].
pub fn branch_of(deployment: &str) -> Target {
    Target { schema: schema(deployment), production: schema("prod") }
}

/// A fresh warehouse with production seeded (`raw_orders`, `orders`, `Customers`) through the
/// port, and the branch `feature-1-ab12cd34` prepared.
async fn fresh(backend: &dyn Backend) -> Box<dyn Subject> {
    let subject = backend.fresh(&production()).await;
    seed(subject.warehouse(), &production()).await;
    prepare(subject.warehouse(), &branch()).await;
    subject
}

fn branch() -> Target {
    branch_of("feature-1-ab12cd34")
}

/// Three orders (one with a negative amount) and two customers, in `production`.
async fn seed(warehouse: &dyn Warehouse, production: &Target) {
    let raw_orders = "SELECT CAST(1 AS INTEGER) AS id, CAST(10.5 AS DOUBLE PRECISION) AS amount, \
                      CAST('ada' AS TEXT) AS customer \
                      UNION ALL SELECT 2, 20.0, 'bob' UNION ALL SELECT 3, -1.0, 'cy'";
    build(warehouse, production, "raw_orders", raw_orders).await;
    build(warehouse, production, "orders", "SELECT id, amount, customer FROM raw_orders").await;
    let customers = "SELECT CAST('ada' AS TEXT) AS name UNION ALL SELECT 'bob'";
    build(warehouse, production, "Customers", customers).await;
}

async fn prepare(warehouse: &dyn Warehouse, target: &Target) {
    warehouse.prepare(target).await.unwrap_or_else(|e| panic!("preparing {}: {e}", target.schema));
}

async fn materialize(
    warehouse: &dyn Warehouse,
    target: &Target,
    table: &str,
    select: &str,
) -> Result<u64, WarehouseError> {
    warehouse.materialize_sql(target, &key(table), select).await
}

fn key(table: &str) -> AssetKey {
    AssetKey::new(table).expect("a valid asset key in the contract")
}

async fn count_rows(warehouse: &dyn Warehouse, target: &Target, table: &str) -> Option<u64> {
    warehouse
        .row_count(target, table)
        .await
        .unwrap_or_else(|e| panic!("counting {table} in {}: {e}", target.schema))
}

async fn checksum(warehouse: &dyn Warehouse, target: &Target, table: &str) -> String {
    warehouse
        .table_checksum(target, table)
        .await
        .unwrap_or_else(|e| panic!("checksum of {table} in {}: {e}", target.schema))
        .unwrap_or_else(|| panic!("{table} is not in {}", target.schema))
}

async fn own_tables(warehouse: &dyn Warehouse, target: &Target) -> Vec<String> {
    warehouse
        .own_tables(target)
        .await
        .unwrap_or_else(|e| panic!("own tables of {}: {e}", target.schema))
}

/// Every production table with its checksum, by name: equal before and after means production
/// is exactly as it was.
async fn production_checksums(warehouse: &dyn Warehouse) -> Vec<(String, String)> {
    let production = production();
    let mut checksums = Vec::new();
    for table in own_tables(warehouse, &production).await {
        let checksum = checksum(warehouse, &production, &table).await;
        checksums.push((table, checksum));
    }
    checksums
}

async fn schemas(warehouse: &dyn Warehouse) -> Vec<SchemaName> {
    warehouse.schemas().await.unwrap_or_else(|e| panic!("listing schemas: {e}"))
}

fn refused<T: std::fmt::Debug>(result: &Result<T, WarehouseError>) -> bool {
    matches!(result, Err(WarehouseError::Refused(_)))
}

/// Drives every future at once on the calling task and returns their outputs in order, so their
/// statements interleave in the warehouse (the port crate needs no runtime of its own).
async fn all_at_once<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<dyn Future<Output = T> + 'a>>>> =
        futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |context| {
        let mut unfinished = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => unfinished = true,
                }
            }
        }
        if unfinished {
            Poll::Pending
        } else {
            Poll::Ready(
                outputs
                    .iter_mut()
                    .map(|output| output.take().expect("every future finished"))
                    .collect(),
            )
        }
    })
    .await
}

/// Zero-copy: a prepared branch holds no data, reads production's tables until it builds its
/// own, and preparing again keeps what it built.
pub async fn a_prepared_branch_copies_nothing_and_reads_production(subject: &dyn Subject) {
    let (warehouse, production, branch) = (subject.warehouse(), production(), branch());
    // About 7 MB: 100,000 rows of some 70 characters.
    let big = "SELECT CAST(n AS INTEGER) AS id, \
               CAST('a payload of some seventy characters, for a table of a few megabytes: ' || n AS TEXT) AS payload FROM s";
    build(warehouse, &production, "big", &series(100_000, big)).await;
    build(warehouse, &production, "small", "SELECT * FROM big WHERE id <= 100").await;

    let production_bytes = subject.bytes_held(&production).await;
    assert!(production_bytes > 5_000_000, "production holds {production_bytes} bytes");
    let branch_bytes = subject.bytes_held(&branch).await;
    assert!(branch_bytes <= 16 * 1024, "a prepared branch holds {branch_bytes} bytes");
    assert_eq!(own_tables(warehouse, &branch).await, Vec::<String>::new());

    // Before building anything, the branch sees production's tables.
    assert_eq!(count_rows(warehouse, &branch, "big").await, Some(100_000));
    assert_eq!(
        checksum(warehouse, &branch, "small").await,
        checksum(warehouse, &production, "small").await
    );
    let summary = materialize(warehouse, &branch, "big_summary", "SELECT count(*) AS n FROM big");
    assert_eq!(summary.await, Ok(1));
    assert_eq!(own_tables(warehouse, &branch).await, ["big_summary"]);

    // Preparing again keeps what the branch built and still copies nothing.
    prepare(warehouse, &branch).await;
    assert_eq!(own_tables(warehouse, &branch).await, ["big_summary"]);
    let branch_bytes = subject.bytes_held(&branch).await;
    assert!(branch_bytes <= 64 * 1024, "a branch with one small table holds {branch_bytes} bytes");
}

/// A branch builds its own table under production's name (copy-on-write) and from then on reads
/// it; production's tables keep their checksums, whatever the branch builds.
pub async fn materializing_in_a_branch_is_copy_on_write_and_leaves_production_alone(
    subject: &dyn Subject,
) {
    let (warehouse, production, branch) = (subject.warehouse(), production(), branch());
    let production_before = production_checksums(warehouse).await;

    // `large_orders` reads production's `orders` while the branch has none of its own.
    let downstream = "SELECT * FROM orders WHERE amount > 0";
    assert_eq!(materialize(warehouse, &branch, "large_orders", downstream).await, Ok(2));

    // Copy-on-write: the branch gets its own `orders` and from now on reads it.
    let own_orders = "SELECT * FROM raw_orders WHERE id = 1";
    assert_eq!(materialize(warehouse, &branch, "orders", own_orders).await, Ok(1));
    assert_eq!(own_tables(warehouse, &branch).await, ["large_orders", "orders"]);
    assert_eq!(count_rows(warehouse, &branch, "orders").await, Some(1));
    assert_ne!(
        checksum(warehouse, &branch, "orders").await,
        checksum(warehouse, &production, "orders").await
    );

    // The same downstream SQL now resolves `orders` to the branch's table.
    assert_eq!(materialize(warehouse, &branch, "large_orders", downstream).await, Ok(1));
    assert_eq!(count_rows(warehouse, &branch, "large_orders").await, Some(1));

    // A whole branch run rebuilding every one of production's names.
    let rebuilt = [
        ("orders", "SELECT * FROM raw_orders WHERE amount > 0", 2),
        ("raw_orders", "SELECT 1 AS id", 1),
        ("Customers", "SELECT 'zed' AS name", 1),
    ];
    for (table, select, expected) in rebuilt {
        assert_eq!(materialize(warehouse, &branch, table, select).await, Ok(expected), "{table}");
    }

    // Production is exactly as it was.
    assert_eq!(count_rows(warehouse, &production, "orders").await, Some(3));
    assert_eq!(production_checksums(warehouse).await, production_before);
    assert_eq!(own_tables(warehouse, &production).await, ["Customers", "orders", "raw_orders"]);
}

/// Production replaces a table a branch reads (its own copy-on-write): the branch reads the new
/// one next, and keeps what it built itself.
pub async fn a_table_production_rebuilds_is_what_branches_read_next(subject: &dyn Subject) {
    let (warehouse, production, branch) = (subject.warehouse(), production(), branch());
    let downstream = "SELECT * FROM orders WHERE amount > 0";
    assert_eq!(materialize(warehouse, &branch, "large_orders", downstream).await, Ok(2));

    let five = series(5, "SELECT CAST(n AS INTEGER) AS id, CAST(n * 10.0 AS DOUBLE PRECISION) AS amount, CAST('x' AS TEXT) AS customer FROM s");
    assert_eq!(materialize(warehouse, &production, "orders", &five).await, Ok(5));
    assert_eq!(
        count_rows(warehouse, &branch, "orders").await,
        Some(5),
        "the branch reads the new table"
    );
    assert_eq!(materialize(warehouse, &branch, "large_orders", downstream).await, Ok(5));
    assert_eq!(own_tables(warehouse, &branch).await, ["large_orders"]);
}

/// An asset's SQL is one SELECT: a second statement is refused before anything runs, however it
/// hides (comments, quotes, a NUL); a lone statement that is no query fails as a query.
pub async fn an_asset_select_is_one_statement(subject: &dyn Subject) {
    let (warehouse, production, branch) = (subject.warehouse(), production(), branch());
    let production_before = production_checksums(warehouse).await;

    let cases: &[(&str, bool)] = &[
        ("SELECT 1 AS x", false),
        ("SELECT 1 AS x;", false),
        ("SELECT 1 AS x; ;\n -- done\n /* really */", false),
        ("/* leading; comment */ SELECT 1 AS x", false),
        ("SELECT ';' AS x", false),
        ("SELECT 1 AS \"x;y\"", false),
        ("SELECT 'it''s; fine' AS x -- trailing; comment", false),
        ("SELECT 1 AS x; DELETE FROM orders", true),
        ("select 1; drop table orders", true),
        ("SELECT 1 AS x /* ; */ ; DROP TABLE orders", true),
        ("SELECT 'a'';' AS x; DROP TABLE orders", true),
        ("SELECT 1 AS x\0; DROP TABLE orders", true),
    ];
    for &(select, expect_refused) in cases {
        let result = materialize(warehouse, &branch, "probe", select).await;
        assert_eq!(refused(&result), expect_refused, "{select:?}: {result:?}");
        if !expect_refused {
            assert_eq!(result, Ok(1), "{select:?}");
        }
    }

    // A single statement spliced after `CREATE TABLE … AS` can only be a query.
    for statement in ["DELETE FROM orders", "DROP TABLE orders", "UPDATE orders SET amount = 0"] {
        let result = materialize(warehouse, &branch, "probe", statement).await;
        assert!(matches!(result, Err(WarehouseError::Query(_))), "{statement}: {result:?}");
    }

    assert_eq!(production_checksums(warehouse).await, production_before);
    assert_eq!(own_tables(warehouse, &production).await, ["Customers", "orders", "raw_orders"]);
    assert_eq!(subject.all_tables(&branch).await, ["probe"]);
}

/// Building a table again replaces it atomically: a build that fails (while planning or halfway
/// through) keeps the previous table and leaves no staging table behind.
pub async fn rematerializing_replaces_the_table_and_a_failure_keeps_the_previous_one(
    subject: &dyn Subject,
) {
    let (warehouse, branch) = (subject.warehouse(), branch());
    let two_rows = "SELECT 1 AS a UNION ALL SELECT 2";
    assert_eq!(materialize(warehouse, &branch, "totals", two_rows).await, Ok(2));
    assert_eq!(materialize(warehouse, &branch, "totals", "SELECT 5 AS b").await, Ok(1));
    let replaced = checksum(warehouse, &branch, "totals").await;

    // Fails while planning, and fails at run time after the first row was computed (the
    // absolute value of the smallest 64-bit integer overflows).
    let failing = [
        ("SELECT * FROM no_such_table", Some("no_such_table")),
        (
            "SELECT abs(x) AS b FROM (SELECT CAST(1 AS BIGINT) AS x \
             UNION ALL SELECT CAST(-9223372036854775807 AS BIGINT) - 1) AS t",
            None,
        ),
    ];
    for (select, names) in failing {
        let result = materialize(warehouse, &branch, "totals", select).await;
        let Err(WarehouseError::Query(message)) = &result else {
            panic!("{select}: the database's own error, got {result:?}")
        };
        if let Some(name) = names {
            assert!(message.contains(name), "{select}: {message}");
        }
        assert_eq!(checksum(warehouse, &branch, "totals").await, replaced, "{select}");
        assert_eq!(subject.all_tables(&branch).await, ["totals"], "{select}");
    }

    // A staging table left behind (by a crash; by hand here) is ignored by `own_tables` and
    // replaced by the next build.
    subject.execute(&branch, "CREATE TABLE totals__offshoot_new AS SELECT 'stale' AS c").await;
    assert_eq!(own_tables(warehouse, &branch).await, ["totals"]);
    assert_eq!(materialize(warehouse, &branch, "totals", "SELECT 7 AS b").await, Ok(1));
    assert_eq!(subject.all_tables(&branch).await, ["totals"]);

    let reserved = materialize(warehouse, &branch, "totals__offshoot_new", "SELECT 1 AS b").await;
    assert!(refused(&reserved), "the staging suffix is reserved: {reserved:?}");
}

/// Builds of one table wait for each other; builds of others and production's go on at once.
pub async fn parallel_materializations_wait_for_each_other(subject: &dyn Subject) {
    let (warehouse, production, branch) = (subject.warehouse(), production(), branch());
    let heavy = series(100_000, "SELECT n AS i FROM s");
    let results = all_at_once(vec![
        Box::pin(materialize(warehouse, &branch, "a", &heavy)),
        Box::pin(materialize(warehouse, &branch, "b", &heavy)),
        Box::pin(materialize(warehouse, &branch, "a", "SELECT * FROM orders")),
        // Production writes while the branch reads it.
        Box::pin(materialize(warehouse, &production, "daily", &heavy)),
    ])
    .await;
    assert_eq!(
        results,
        [Ok(100_000), Ok(100_000), Ok(3), Ok(100_000)],
        "both builds of `a` succeed, one after the other"
    );
    assert_eq!(subject.all_tables(&branch).await, ["a", "b"]);
}

/// Teardown drops the branch's own objects and nothing else; it is idempotent, refuses
/// production, and a torn-down branch is not silently re-created by later calls.
pub async fn teardown_removes_exactly_the_branch(subject: &dyn Subject) {
    let (warehouse, production, branch) = (subject.warehouse(), production(), branch());
    let other = branch_of("other-branch");
    prepare(warehouse, &other).await;
    assert_eq!(materialize(warehouse, &branch, "orders", "SELECT * FROM raw_orders").await, Ok(3));
    let one = "SELECT * FROM raw_orders WHERE id = 1";
    assert_eq!(materialize(warehouse, &other, "orders", one).await, Ok(1));
    let production_before = production_checksums(warehouse).await;

    warehouse.teardown(&branch).await.expect("teardown");
    assert_eq!(schemas(warehouse).await, [schema("other-branch"), schema("prod")]);
    warehouse.teardown(&branch).await.expect("teardown is idempotent");

    assert_eq!(production_checksums(warehouse).await, production_before);
    assert_eq!(count_rows(warehouse, &other, "orders").await, Some(1));
    assert_eq!(own_tables(warehouse, &other).await, ["orders"]);

    let refused_teardown = warehouse.teardown(&production).await;
    assert!(refused(&refused_teardown), "{refused_teardown:?}");
    assert_eq!(production_checksums(warehouse).await, production_before);

    // Operations on a torn-down branch fail instead of silently re-creating it.
    let gone = [
        warehouse.own_tables(&branch).await.map(|_| ()),
        warehouse.row_count(&branch, "orders").await.map(|_| ()),
        warehouse.materialize_sql(&branch, &key("orders"), "SELECT 1 AS x").await.map(|_| ()),
    ];
    for result in gone {
        assert!(matches!(result, Err(WarehouseError::Backend(_))), "{result:?}");
    }
    assert_eq!(schemas(warehouse).await, [schema("other-branch"), schema("prod")]);
}

/// Asset keys that are reserved words or mixed case become quoted identifiers; table names given
/// to lookups are data, never SQL.
pub async fn identifiers_are_quoted_and_lookups_are_data(subject: &dyn Subject) {
    let (warehouse, production, branch) = (subject.warehouse(), production(), branch());
    let builds = [
        ("select", "SELECT * FROM orders", 3),
        ("order", "SELECT * FROM \"select\" WHERE id > 1", 2),
        ("MixedCase", "SELECT * FROM \"Customers\"", 2),
        ("user", "SELECT * FROM \"order\"", 2),
    ];
    for (table, select, expected) in builds {
        assert_eq!(materialize(warehouse, &branch, table, select).await, Ok(expected), "{table}");
    }
    assert_eq!(own_tables(warehouse, &branch).await, ["MixedCase", "order", "select", "user"]);
    assert_eq!(count_rows(warehouse, &branch, "order").await, Some(2));
    assert_eq!(count_rows(warehouse, &branch, "MixedCase").await, Some(2));
    assert_eq!(count_rows(warehouse, &branch, "Customers").await, Some(2));

    let hostile = [
        "a\"b",
        "orders\"; DROP TABLE orders; --",
        "orders; DROP TABLE orders",
        "x\0y",
        "sqlite_master",
        "pg_class",
        "",
    ];
    for table in hostile {
        assert_eq!(count_rows(warehouse, &branch, table).await, None, "{table:?}");
        assert_eq!(warehouse.table_checksum(&branch, table).await, Ok(None), "{table:?}");
    }
    assert_eq!(count_rows(warehouse, &production, "orders").await, Some(3));
}

/// A checksum tells apart every change of content (values, types the SQL states, column names,
/// row counts) and does not depend on row order.
pub async fn checksums_are_stable_and_see_every_change(subject: &dyn Subject) {
    let (warehouse, branch) = (subject.warehouse(), branch());
    let distinct = [
        "SELECT 1 AS v",
        "SELECT 1.5 AS v",
        "SELECT CAST('1' AS TEXT) AS v",
        "SELECT CAST(NULL AS INTEGER) AS v",
        "SELECT CAST('' AS TEXT) AS v",
        "SELECT 2 AS v",
        "SELECT 1 AS w",
        "SELECT CAST('ab' AS TEXT) AS v",
        "SELECT CAST('a' AS TEXT) AS v UNION ALL SELECT 'b'",
        "SELECT 1 AS v UNION ALL SELECT 1",
        "SELECT 1 AS v, 2 AS w",
        "SELECT 12 AS v",
        "SELECT 1 AS v WHERE 1 = 0",
    ];
    let mut seen: Vec<(&str, String)> = Vec::new();
    for select in distinct {
        materialize(warehouse, &branch, "t", select).await.expect(select);
        let checksum = checksum(warehouse, &branch, "t").await;
        assert!(
            !seen.iter().any(|(_, earlier)| earlier == &checksum),
            "{select} collides with {seen:?}"
        );
        seen.push((select, checksum));
    }

    // Same content, built in another order or again: same checksum.
    let first_order =
        "SELECT 2 AS v, CAST('b' AS TEXT) AS w UNION ALL SELECT 1, 'a' UNION ALL SELECT 1, NULL";
    materialize(warehouse, &branch, "t", first_order).await.expect("t");
    let first = checksum(warehouse, &branch, "t").await;
    let other_order =
        "SELECT 1 AS v, CAST(NULL AS TEXT) AS w UNION ALL SELECT 1, 'a' UNION ALL SELECT 2, 'b'";
    materialize(warehouse, &branch, "t", other_order).await.expect("t");
    assert_eq!(checksum(warehouse, &branch, "t").await, first);
    assert_eq!(checksum(warehouse, &branch, "t").await, first);
}

/// `schemas` lists production and every prepared branch, sorted, and nothing torn down.
pub async fn schemas_lists_production_and_every_prepared_branch(subject: &dyn Subject) {
    let warehouse = subject.warehouse();
    prepare(warehouse, &branch_of("another-one")).await;
    prepare(warehouse, &branch_of("zz-last")).await;
    let all =
        [schema("another-one"), schema("feature-1-ab12cd34"), schema("prod"), schema("zz-last")];
    assert_eq!(schemas(warehouse).await, all);
    warehouse.teardown(&branch_of("zz-last")).await.expect("teardown");
    assert_eq!(schemas(warehouse).await, all[..3]);
}

/// A branch needs its production prepared, and its own schema prepared before anything is
/// built in it; preparing creates nothing when it is refused.
pub async fn a_branch_needs_production_and_its_own_prepared_schema(subject: &dyn Subject) {
    let warehouse = subject.warehouse();
    let elsewhere = SchemaName::for_deployment(
        &RepositoryName::new("elsewhere").expect("valid"),
        &DeploymentName::new("prod").expect("valid"),
    );
    let orphan = Target { schema: schema("orphan"), production: elsewhere };
    let missing_production = warehouse.prepare(&orphan).await;
    assert!(refused(&missing_production), "{missing_production:?}");
    assert!(!schemas(warehouse).await.contains(&orphan.schema));

    let unprepared = branch_of("unprepared");
    let result = materialize(warehouse, &unprepared, "orders", "SELECT 1 AS x").await;
    assert!(matches!(result, Err(WarehouseError::Backend(_))), "{result:?}");
    assert!(!schemas(warehouse).await.contains(&unprepared.schema));

    prepare(warehouse, &unprepared).await;
    assert_eq!(count_rows(warehouse, &unprepared, "orders").await, Some(3));
    assert_eq!(materialize(warehouse, &unprepared, "orders", "SELECT 1 AS x").await, Ok(1));
    assert_eq!(count_rows(warehouse, &production(), "orders").await, Some(3));
}

/// Processes building a target are told where it is; loads are told where production is.
pub async fn processes_get_their_target_and_loads_get_production(subject: &dyn Subject) {
    let warehouse = subject.warehouse();
    let value = |environment: &[(String, String)], name: &str| {
        let values: Vec<&str> =
            environment.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
        assert_eq!(values.len(), 1, "{name} once in {environment:?}");
        values[0].to_owned()
    };
    for target in [production(), branch()] {
        let environment = warehouse.command_environment(&target);
        assert_eq!(value(&environment, "OFFSHOOT_SCHEMA"), target.schema.as_str());
        assert!(!value(&environment, "OFFSHOOT_WAREHOUSE_URL").is_empty());
    }
    let branch_url = value(&warehouse.command_environment(&branch()), "OFFSHOOT_WAREHOUSE_URL");
    let production_url =
        value(&warehouse.command_environment(&production()), "OFFSHOOT_WAREHOUSE_URL");
    assert_ne!(branch_url, production_url, "a branch process is never handed production's own URL");
    let inspection = warehouse.inspection_environment(&production().schema);
    assert_eq!(value(&inspection, "OFFSHOOT_SCHEMA"), production().schema.as_str());
    assert!(!value(&inspection, "OFFSHOOT_WAREHOUSE_URL").is_empty());
}

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

    // Duplicates in production only: a key matched to one branch row (rows equal, so only
    // the counts can tell), and a key the branch lacks.
    build(warehouse, production, "twins", "SELECT CAST(1 AS INTEGER) AS id, CAST('a' AS TEXT) AS v UNION ALL SELECT 2, 'b' UNION ALL SELECT 2, 'b' UNION ALL SELECT 3, 'c'").await;
    build(warehouse, branch, "twins", "SELECT CAST(1 AS INTEGER) AS id, CAST('a' AS TEXT) AS v UNION ALL SELECT 2, 'b' UNION ALL SELECT 3, 'c'").await;
    let twins = diff(warehouse, branch, "twins", declared(&["id"])).await;
    assert_eq!(
        (twins.key_check.duplicates_in_production, twins.key_check.duplicates_in_branch),
        (1, 0)
    );
    assert_eq!(twins.rows, rows(1, 0, 0, 3), "as whole rows: one (2, b) too many in production");
    build(warehouse, production, "twins", "SELECT CAST(1 AS INTEGER) AS id, CAST('a' AS TEXT) AS v UNION ALL SELECT 4, 'd' UNION ALL SELECT 4, 'd' UNION ALL SELECT 5, 'e' UNION ALL SELECT 5, 'e'").await;
    let unmatched = diff(warehouse, branch, "twins", declared(&["id"])).await;
    assert_eq!(
        (unmatched.key_check.duplicates_in_production, unmatched.key_check.duplicates_in_branch),
        (2, 0),
        "keys 4 and 5, which the branch does not have"
    );
    assert_eq!(unmatched.rows, rows(4, 2, 0, 1));

    // A declared key with two values on both sides: joined, its 100,000 rows would make
    // 5,000,000,000; the duplicates are reported at once instead.
    let grain = "SELECT CAST(n % 2 AS INTEGER) AS country, CAST(n AS INTEGER) AS v FROM s";
    build(warehouse, production, "by_country", &series(100_000, grain)).await;
    build(warehouse, branch, "by_country", &series(100_000, grain)).await;
    let started = std::time::Instant::now();
    let by_country = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        diff(warehouse, branch, "by_country", declared(&["country"])),
    )
    .await
    .expect("no join multiplies the duplicated keys' rows");
    assert_eq!(
        (by_country.key_check.duplicates_in_production, by_country.key_check.duplicates_in_branch),
        (2, 2),
        "after {:?}",
        started.elapsed()
    );
    assert_eq!(by_country.rows, rows(0, 0, 0, 100_000));

    // A key of two columns.
    build(warehouse, production, "pairs", &series(20, "SELECT CAST(n % 4 AS INTEGER) AS a, CAST(n / 4 AS INTEGER) AS b, CAST(n AS INTEGER) AS v FROM s")).await;
    build(warehouse, branch, "pairs", &series(22, "SELECT CAST(n % 4 AS INTEGER) AS a, CAST(n / 4 AS INTEGER) AS b, CAST(CASE WHEN n = 7 THEN 70 ELSE n END AS INTEGER) AS v FROM s WHERE n > 1")).await;
    let pairs = diff(warehouse, branch, "pairs", declared(&["a", "b"])).await;
    assert_eq!(pairs.rows, rows(1, 2, 1, 18), "n = 1 removed, 21 and 22 added, 7 changed");
    assert_eq!(pairs.samples.changed[0].key, [Some("3".to_owned()), Some("1".to_owned())]);

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

    // Above the row limit: a sample of keys, the same on both sides, and said so; the totals
    // and the numeric stats stay the whole tables'.
    let whole = diff(warehouse, branch, "orders", declared(&["id"])).await;
    let sampled =
        diff(warehouse, branch, "orders", DiffOptions { row_limit: Some(40), ..declared(&["id"]) })
            .await;
    let sample = sampled.sampled.clone().expect("sampled above 40 rows");
    assert_eq!(sample.modulus, 3, "100 rows, at most 40: one key in 3");
    let counts = sampled.rows.clone().expect("rows");
    assert_eq!(
        counts.only_in_production + counts.changed + counts.equal,
        sample.production_rows,
        "{sampled:?}"
    );
    assert_eq!(counts.only_in_branch + counts.changed + counts.equal, sample.branch_rows);
    assert!(sample.production_rows > 0 && sample.production_rows < 100, "{sample:?}");
    assert_eq!((sampled.production_rows, sampled.branch_rows), (Some(100), Some(100)));
    let amount = |d: &DataDiff| {
        d.columns
            .iter()
            .find(|c| c.name == "amount")
            .map(|c| (c.production.clone(), c.branch.clone()))
    };
    assert_eq!(amount(&sampled), amount(&whole), "stats of the whole tables");
    assert!(sampled.notes.iter().any(|n| n.starts_with("sampled:")), "{:?}", sampled.notes);
    assert_eq!(whole.sampled, None);
    let at_limit = diff(
        warehouse,
        branch,
        "orders",
        DiffOptions { row_limit: Some(100), ..declared(&["id"]) },
    )
    .await;
    assert_eq!(
        (at_limit.sampled, at_limit.rows),
        (None, whole.rows.clone()),
        "100 rows is not above 100"
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
