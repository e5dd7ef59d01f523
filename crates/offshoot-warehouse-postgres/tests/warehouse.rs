//! Integration tests of the PostgreSQL warehouse: the port's contract
//! (`offshoot_warehouse::contract`) on a real server, and what only this backend shows:
//! production protected by the branch role, logins and credentials for commands, servers setting
//! up at once, PostgreSQL's dialect and types.
//!
//! Each test (and each contract story) creates its own database and branch role on the server at
//! `OFFSHOOT_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`, no database part;
//! the user must be able to create databases and roles) and drops both afterwards, also when the
//! test fails. A server that is down fails the tests; `OFFSHOOT_SKIP_POSTGRES=1` skips them,
//! except under CI (`OFFSHOOT_CI=1`), where asking to skip fails them.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use offshoot_core::{AssetKey, DeploymentName, RepositoryName, SchemaName};
use offshoot_warehouse::contract;
use offshoot_warehouse::{Target, Warehouse, WarehouseError};
use offshoot_warehouse_postgres::{
    PostgresWarehouse, PostgresWarehouseOptions, DEFAULT_BRANCH_ROLE,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A database and role names of its own on the test server (a branch role, and a login for tests
/// that need one); all are dropped (the database with `FORCE`, so open connections do not keep
/// it alive) when the guard is dropped, even while a failed test unwinds.
struct TestDatabase {
    server: String,
    name: String,
    role: String,
    login: String,
}

impl TestDatabase {
    /// `None` when PostgreSQL tests are skipped on purpose; panics when the server is unreachable.
    async fn create() -> Option<TestDatabase> {
        if postgres_skipped() {
            return None;
        }
        let server = std::env::var("OFFSHOOT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let name = format!("offshoot_test_{}_{nanos}", std::process::id());
        let mut connection = maintenance_connection(&server).await.unwrap_or_else(|error| {
            panic!(
                "PostgreSQL at {server} is not reachable ({error}). Start it (`.ci/run` does), point \
                 OFFSHOOT_TEST_POSTGRES_URL at another server, or set OFFSHOOT_SKIP_POSTGRES=1 to skip these tests"
            )
        });
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .expect("create the test database");
        let _ = connection.close().await;
        let role = format!("{name}_branch");
        let login = format!("{name}_login");
        Some(TestDatabase { server, name, role, login })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// The URL of the test database for another user.
    fn url_as(&self, user: &str, password: &str) -> String {
        let server: PgConnectOptions = self.server.parse().expect("a valid server URL");
        format!(
            "postgres://{user}:{password}@{}:{}/{}",
            server.get_host(),
            server.get_port(),
            self.name
        )
    }

    /// A connection of the test's own to its database, as the login user.
    async fn connection(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.expect("connect to the test database")
    }
}

/// Whether the PostgreSQL tests are skipped on purpose (`OFFSHOOT_SKIP_POSTGRES=1`, on a machine
/// without PostgreSQL). Under CI (`OFFSHOOT_CI=1`, which `.ci/run` sets) nothing is skipped:
/// asking to fails the test.
fn postgres_skipped() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| value == "1");
    if !set("OFFSHOOT_SKIP_POSTGRES") {
        return false;
    }
    assert!(
        !set("OFFSHOOT_CI"),
        "OFFSHOOT_SKIP_POSTGRES=1 under CI (OFFSHOOT_CI=1): CI runs every PostgreSQL test; \
         unset OFFSHOOT_SKIP_POSTGRES and start PostgreSQL (`.ci/run` does)"
    );
    eprintln!("skipped: OFFSHOOT_SKIP_POSTGRES=1");
    true
}

async fn maintenance_connection(server: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(&format!("{server}/postgres")).await
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let statements = [
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            // After the database: the roles' privileges and tables lived there. The branches'
            // login roles are the group role's name plus `_` and a hash.
            format!(
                "DO $$ DECLARE r text; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{}_') \
                 LOOP EXECUTE format('DROP ROLE %I', r); END LOOP; END $$",
                self.role
            ),
            format!("DROP ROLE IF EXISTS \"{}\"", self.role),
            format!("DROP ROLE IF EXISTS \"{}\"", self.login),
        ];
        // A runtime of its own on a thread of its own: this may run inside the test's runtime,
        // which cannot be blocked on from within.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut connection =
                    maintenance_connection(&server).await.map_err(|e| e.to_string())?;
                let mut result = Ok(());
                for statement in statements {
                    if let Err(error) =
                        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut connection).await
                    {
                        result = Err(error.to_string());
                        break;
                    }
                }
                let _ = connection.close().await;
                result
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the dropping thread panicked",
                self.name
            ),
        }
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
    CREATE TABLE raw_orders (id INTEGER, amount NUMERIC, customer TEXT);
    INSERT INTO raw_orders VALUES (1, 10.5, 'ada'), (2, 20.0, 'bob'), (3, -1.0, 'cy');
    CREATE TABLE orders AS SELECT id, amount, customer FROM raw_orders;
    CREATE TABLE \"Customers\" (name TEXT);
    INSERT INTO \"Customers\" VALUES ('ada'), ('bob');
";

/// A warehouse with production seeded and set up for branches, and one branch prepared. Fields
/// drop in order: the warehouse's pool before the database.
struct Fixture {
    warehouse: PostgresWarehouse,
    production: Target,
    branch: Target,
    database: TestDatabase,
}

impl Fixture {
    async fn new() -> Option<Fixture> {
        let database = TestDatabase::create().await?;
        let warehouse = connect(&database).await;
        let production = Target { schema: schema("prod"), production: schema("prod") };
        warehouse.prepare(&production).await.expect("prepare production");
        warehouse
            .execute_production_script(&production.schema, SEED)
            .await
            .expect("seed production");
        warehouse.setup_roles(&production.schema).await.expect("set up the branch role");
        let branch = branch_of("feature-1-ab12cd34");
        warehouse.prepare(&branch).await.expect("prepare branch");
        Some(Fixture { warehouse, production, branch, database })
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

    /// Checksums of every production table, by name.
    async fn production_checksums(&self) -> Vec<(String, String)> {
        let mut checksums = Vec::new();
        for table in self.own_tables(&self.production).await {
            let checksum = self.checksum(&self.production, &table).await;
            checksums.push((table, checksum));
        }
        checksums
    }

    /// Every table in the target's schema, staging tables included.
    async fn all_own_tables(&self, target: &Target) -> Vec<String> {
        all_own_tables(&self.database, target).await
    }

    /// A connection that sees the branch the way its materializations do: as the branch's own
    /// login role, with `search_path` branch first.
    async fn branch_role_connection(&self) -> PgConnection {
        branch_role_connection(&self.database, &self.warehouse, &self.branch).await
    }
}

/// Every table in the target's schema, staging tables included.
async fn all_own_tables(database: &TestDatabase, target: &Target) -> Vec<String> {
    let mut connection = database.connection().await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
    )
    .bind(target.schema.as_str())
    .fetch_all(&mut connection)
    .await
    .expect("list tables");
    connection.close().await.expect("close");
    names
}

/// A connection that sees `branch` the way its materializations do: as the branch's own login
/// role, with `search_path` branch first.
async fn branch_role_connection(
    database: &TestDatabase,
    warehouse: &PostgresWarehouse,
    branch: &Target,
) -> PgConnection {
    let mut connection = database.connection().await;
    let (login, _) = warehouse.branch_login(&branch.schema);
    let setup = format!(
        "SET ROLE \"{login}\"; SET search_path = \"{}\", \"{}\"",
        branch.schema, branch.production
    );
    sqlx::raw_sql(AssertSqlSafe(setup))
        .execute(&mut connection)
        .await
        .expect("become the branch role");
    connection
}

/// The contract's warehouses: each on a database (and branch role) of its own.
struct Postgres;

#[async_trait]
impl contract::Backend for Postgres {
    async fn fresh(&self, production: &Target) -> Box<dyn contract::Subject> {
        let database = TestDatabase::create().await.expect("not skipped: checked by the test");
        let warehouse = connect(&database).await;
        warehouse.prepare(production).await.expect("prepare production");
        warehouse.setup_roles(&production.schema).await.expect("set up the branch role");
        Box::new(Subject { warehouse, database })
    }
}

/// Fields drop in order: the warehouse's pool before the database.
struct Subject {
    warehouse: PostgresWarehouse,
    database: TestDatabase,
}

#[async_trait]
impl contract::Subject for Subject {
    fn warehouse(&self) -> &dyn Warehouse {
        &self.warehouse
    }

    async fn bytes_held(&self, target: &Target) -> u64 {
        let mut connection = self.database.connection().await;
        let bytes: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
        )
        .bind(target.schema.as_str())
        .fetch_one(&mut connection)
        .await
        .expect("the schema's size");
        connection.close().await.expect("close");
        u64::try_from(bytes).expect("a size is not negative")
    }

    async fn all_tables(&self, target: &Target) -> Vec<String> {
        all_own_tables(&self.database, target).await
    }

    async fn execute(&self, target: &Target, sql: &str) {
        let mut connection = if target.is_production() {
            let mut connection = self.database.connection().await;
            let path = format!("SET search_path = \"{}\"", target.schema);
            sqlx::raw_sql(AssertSqlSafe(path)).execute(&mut connection).await.expect("search path");
            connection
        } else {
            branch_role_connection(&self.database, &self.warehouse, target).await
        };
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        connection.close().await.expect("close");
    }
}

/// Several threads, so the contract's concurrent builds really run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warehouse_contract() {
    if postgres_skipped() {
        return;
    }
    contract::run_all(&Postgres).await;
}

async fn connect(database: &TestDatabase) -> PostgresWarehouse {
    let options = PostgresWarehouseOptions {
        branch_role: database.role.clone(),
        ..PostgresWarehouseOptions::default()
    };
    PostgresWarehouse::connect(&database.url(), options).await.expect("connect the warehouse")
}

/// `count(*)` of a query run afresh (simple protocol, nothing prepared) on `connection`.
async fn count(connection: &mut PgConnection, sql: &str) -> i64 {
    use sqlx::Row;
    let row = sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).fetch_one(connection).await.expect(sql);
    row.try_get(0).expect("a count")
}

#[tokio::test]
async fn a_connection_open_across_a_copy_on_write_reads_the_branch_table_next() {
    // The contract checks copy-on-write through the port; this is a session of the branch
    // role that was open before it (a command asset's, say): its next statement sees the
    // branch's own table, nothing cached resolves to production's.
    let Some(fixture) = Fixture::new().await else { return };
    let branch = &fixture.branch;
    let mut reader = fixture.branch_role_connection().await;
    assert_eq!(
        count(&mut reader, "SELECT count(*) FROM orders").await,
        3,
        "the branch reads production's orders"
    );
    assert_eq!(
        fixture.materialize(branch, "orders", "SELECT * FROM raw_orders WHERE id = 1").await,
        Ok(1)
    );
    assert_eq!(
        count(&mut reader, "SELECT count(*) FROM orders").await,
        1,
        "a fresh statement sees the branch's table"
    );
    reader.close().await.expect("close");
}

#[tokio::test]
async fn production_cannot_be_written_by_the_branch_role() {
    let Some(fixture) = Fixture::new().await else { return };
    let production_before = fixture.production_checksums().await;

    let mut connection = fixture.branch_role_connection().await;
    let prod = fixture.production.schema.as_str();
    let writes = [
        format!("INSERT INTO {prod}.orders VALUES (9, 9.0, 'eve')"),
        // Unqualified, `orders` resolves to production's table: still refused.
        "UPDATE orders SET amount = 0".to_owned(),
        "DELETE FROM orders".to_owned(),
        "TRUNCATE orders".to_owned(),
        format!("DROP TABLE {prod}.orders"),
        format!("ALTER TABLE {prod}.orders RENAME TO gone"),
        format!("CREATE TABLE {prod}.intruder (x int)"),
        format!("CREATE TABLE {prod}.intruder AS SELECT 1 AS x"),
        format!("DROP SCHEMA {prod} CASCADE"),
        format!("ALTER TABLE {prod}.orders ADD COLUMN intruder int"),
        format!("CREATE INDEX ON {prod}.orders (id)"),
        format!("COMMENT ON TABLE {prod}.orders IS 'owned'"),
    ];
    for write in &writes {
        let error = sqlx::raw_sql(AssertSqlSafe(write.clone()))
            .execute(&mut connection)
            .await
            .expect_err(write);
        let message = error.to_string();
        // Writes and CREATE say "permission denied"; DROP, ALTER, indexes and comments need ownership.
        assert!(
            message.contains("permission denied") || message.contains("must be owner"),
            "{write}: {message}"
        );
    }
    connection.close().await.expect("close");

    // The warehouse's own branch path, with SQL that tries to write production.
    let attempts = [
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone",
        "WITH moved AS (UPDATE orders SET amount = 0 RETURNING *) SELECT * FROM moved",
        "SELECT * FROM orders FOR UPDATE",
    ];
    for attempt in attempts {
        let result = fixture.materialize(&fixture.branch, "probe", attempt).await;
        let Err(WarehouseError::Query(message)) = &result else { panic!("{attempt}: {result:?}") };
        assert!(message.contains("permission denied"), "{attempt}: {message}");
    }

    // A whole branch run, rebuilding production's names in the branch.
    let branch = &fixture.branch;
    assert_eq!(
        fixture.materialize(branch, "orders", "SELECT * FROM raw_orders WHERE amount > 0").await,
        Ok(2)
    );
    assert_eq!(fixture.materialize(branch, "raw_orders", "SELECT 1 AS id").await, Ok(1));
    assert_eq!(fixture.materialize(branch, "Customers", "SELECT 'zed' AS name").await, Ok(1));
    assert_eq!(fixture.production_checksums().await, production_before, "production is unchanged");
    assert_eq!(
        fixture.own_tables(&fixture.production).await,
        ["Customers", "orders", "raw_orders"]
    );
}

#[tokio::test]
async fn production_can_drop_and_rebuild_its_table_while_a_branch_reads_it() {
    let Some(fixture) = Fixture::new().await else { return };
    let (production, branch) = (&fixture.production, &fixture.branch);
    assert_eq!(
        fixture.materialize(branch, "large_orders", "SELECT * FROM orders WHERE amount > 0").await,
        Ok(2)
    );

    // Nothing of the branch depends on production's table: production drops and recreates it.
    let rebuild = "DROP TABLE orders;
                   CREATE TABLE orders AS SELECT i AS id, i * 10.0 AS amount, 'x' AS customer FROM generate_series(1, 5) AS i;";
    fixture
        .warehouse
        .execute_production_script(&production.schema, rebuild)
        .await
        .expect("production rebuilds orders");
    assert_eq!(
        fixture.rows(branch, "orders").await,
        Some(5),
        "the branch sees production's new table"
    );
    assert_eq!(
        fixture.materialize(branch, "large_orders", "SELECT * FROM orders WHERE amount > 0").await,
        Ok(5)
    );

    // And production's own copy-on-write materialization, as the login user.
    assert_eq!(fixture.materialize(production, "orders", "SELECT * FROM raw_orders").await, Ok(3));
    assert_eq!(
        fixture.materialize(branch, "large_orders", "SELECT * FROM orders WHERE amount > 0").await,
        Ok(2)
    );
    assert_eq!(fixture.own_tables(branch).await, ["large_orders"]);
}

#[tokio::test]
async fn postgres_quoting_and_role_escapes_in_an_asset_select() {
    // The contract has the portable cases; these are PostgreSQL's own quotes and comments, and
    // SQL that tries to leave the branch role.
    let Some(fixture) = Fixture::new().await else { return };
    let (production, branch) = (&fixture.production, &fixture.branch);
    let production_before = fixture.production_checksums().await;

    let refused =
        |result: &Result<u64, WarehouseError>| matches!(result, Err(WarehouseError::Refused(_)));
    let cases: &[(&str, bool)] = &[
        ("SELECT E'\\';' AS x", false),
        ("SELECT $$;$$ AS x", false),
        ("SELECT $tag$ ; $$ ; $tag$ AS x", false),
        ("select 1; drop schema shop__prod cascade", true),
        ("SELECT 1 AS x; DELETE FROM shop__prod.orders", true),
        ("SELECT 1 AS x -- comment\r; DROP TABLE orders", true),
        // Leaving the branch role from inside the statement is noticed and rolled back.
        ("SELECT set_config('role', 'none', true) AS x", true),
        ("SELECT set_config('role', 'none', false) AS x", true),
    ];
    for &(select, expect_refused) in cases {
        let result = fixture.materialize(branch, "probe", select).await;
        assert_eq!(refused(&result), expect_refused, "{select:?}: {result:?}");
        if !expect_refused {
            assert_eq!(result, Ok(1), "{select:?}");
        }
    }
    for statement in ["DROP TABLE shop__prod.orders", "RESET ROLE", "SET ROLE NONE"] {
        let result = fixture.materialize(branch, "probe", statement).await;
        assert!(matches!(result, Err(WarehouseError::Query(_))), "{statement}: {result:?}");
    }
    // The database's own messages, as they are: while planning, and at run time after the
    // first rows were written.
    let failing = [
        ("SELECT * FROM no_such_table", "relation \"no_such_table\" does not exist"),
        ("SELECT 1 / (x - 2) AS b FROM generate_series(1, 3) AS x", "division by zero"),
    ];
    for (select, message) in failing {
        let result = fixture.materialize(branch, "probe", select).await;
        assert_eq!(result, Err(WarehouseError::Query(message.to_owned())), "{select}");
    }

    assert_eq!(fixture.production_checksums().await, production_before);
    assert_eq!(fixture.own_tables(production).await, ["Customers", "orders", "raw_orders"]);
    assert_eq!(fixture.all_own_tables(branch).await, ["probe"]);
}

#[tokio::test]
async fn quoted_identifiers_are_case_sensitive_and_so_are_lookups() {
    let Some(fixture) = Fixture::new().await else { return };
    let branch = &fixture.branch;
    assert_eq!(
        fixture.materialize(branch, "MixedCase", "SELECT * FROM \"Customers\"").await,
        Ok(2)
    );
    assert_eq!(fixture.rows(branch, "MixedCase").await, Some(2));
    assert_eq!(fixture.rows(branch, "mixedcase").await, None);
    assert_eq!(fixture.rows(branch, "customers").await, None);
}

#[tokio::test]
async fn checksums_tell_postgres_types_apart() {
    let Some(fixture) = Fixture::new().await else { return };
    let branch = &fixture.branch;
    let distinct = [
        "SELECT 1 AS v",
        "SELECT 1::bigint AS v",
        "SELECT 1.0 AS v",
        "SELECT '1'::text AS v",
        "SELECT '\\x31'::bytea AS v",
        "SELECT NULL::int AS v",
        "SELECT NULL::text AS v",
    ];
    let mut seen: Vec<(&str, String)> = Vec::new();
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
async fn schemas_lists_only_deployment_schemas() {
    let Some(fixture) = Fixture::new().await else { return };
    fixture.warehouse.prepare(&branch_of("another-one")).await.expect("prepare");
    let mut connection = fixture.database.connection().await;
    let strays =
        "CREATE SCHEMA \"Not__A_Schema\"; CREATE SCHEMA plain; CREATE SCHEMA \"shop__x;y\"";
    sqlx::raw_sql(strays).execute(&mut connection).await.expect("stray schemas");
    connection.close().await.expect("close");

    // None of them is a deployment's.
    let schemas = fixture.warehouse.schemas().await.expect("schemas");
    assert_eq!(schemas, [schema("another-one"), schema("feature-1-ab12cd34"), schema("prod")]);
}

#[tokio::test]
async fn commands_log_in_as_the_branch_and_resolve_branch_first() {
    let Some(fixture) = Fixture::new().await else { return };
    let (production, branch) = (&fixture.production, &fixture.branch);
    let environment = fixture.warehouse.command_environment(branch);
    let names: Vec<&str> = environment.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "OFFSHOOT_WAREHOUSE_URL",
            "OFFSHOOT_SCHEMA",
            "OFFSHOOT_PRODUCTION_SCHEMA",
            "PGOPTIONS",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD"
        ]
    );
    let value = |name: &str| {
        environment.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).expect(name)
    };
    let (login, password) = fixture.warehouse.branch_login(&branch.schema);
    assert_eq!(value("OFFSHOOT_SCHEMA"), "shop__feature_1_ab12cd34");
    assert_eq!(value("OFFSHOOT_PRODUCTION_SCHEMA"), "shop__prod");
    assert_eq!(value("PGOPTIONS"), "-c search_path=shop__feature_1_ab12cd34,shop__prod");
    assert_eq!((value("PGUSER"), value("PGPASSWORD")), (login.clone(), password.clone()));
    assert_eq!(value("PGDATABASE"), fixture.database.name);
    assert!(value("OFFSHOOT_WAREHOUSE_URL").starts_with(&format!("postgres://{login}:{password}@")));
    assert!(value("OFFSHOOT_WAREHOUSE_URL").ends_with(&format!("/{}", fixture.database.name)));
    assert!(
        !environment.iter().any(|(_, v)| v.contains("postgres@")),
        "the server's login is nowhere: {environment:?}"
    );
    // The role logs in with that password and can read production's `orders`.
    let mut own =
        PgConnection::connect(&value("OFFSHOOT_WAREHOUSE_URL")).await.expect("the branch logs in");
    let user: String =
        sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut own).await.expect("who");
    assert_eq!(user, login);
    own.close().await.expect("close");
    // Another branch's login cannot write this branch's schema.
    fixture.warehouse.prepare(&branch_of("intruder")).await.expect("prepare another branch");
    let other = fixture.warehouse.command_environment(&branch_of("intruder"));
    let other_url = other
        .iter()
        .find(|(n, _)| n == "OFFSHOOT_WAREHOUSE_URL")
        .map(|(_, v)| v.clone())
        .expect("url");
    let mut intruder = PgConnection::connect(&other_url).await.expect("the other branch logs in");
    let write = sqlx::raw_sql("CREATE TABLE shop__feature_1_ab12cd34.planted AS SELECT 1 AS x")
        .execute(&mut intruder)
        .await;
    assert!(
        write.is_err_and(|e| e.to_string().contains("permission denied")),
        "branches are apart"
    );
    intruder.close().await.expect("close");
    // Loads get a role that cannot log in at all.
    let inspection = fixture.warehouse.inspection_environment(&production.schema);
    assert!(!inspection.iter().any(|(n, _)| n == "PGPASSWORD"));
    let inspect_url = inspection
        .iter()
        .find(|(n, _)| n == "OFFSHOOT_WAREHOUSE_URL")
        .map(|(_, v)| v.clone())
        .expect("url");
    let refused = PgConnection::connect(&inspect_url).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("not permitted to log in")),
        "loads cannot connect"
    );
    let production_environment = fixture.warehouse.command_environment(production);
    assert!(production_environment
        .contains(&("PGOPTIONS".to_owned(), "-c search_path=shop__prod".to_owned())));

    // What a command asset does with them: psql connects, reads production's `orders`, builds
    // the branch's own `orders`, then reads that one; writing production is refused.
    let psql = |sql: &str| {
        let output = Command::new("psql")
            .arg(value("OFFSHOOT_WAREHOUSE_URL"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .envs(environment.iter().map(|(name, value)| (name.as_str(), value.as_str())))
            .output()
            .expect("psql runs (PostgreSQL's client must be installed for this test)");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    };
    let (ok, out, err) = psql("SELECT current_user, count(*) FROM orders GROUP BY 1");
    assert!(ok, "{err}");
    assert_eq!(out, format!("{login}|3"));
    let (ok, _, err) = psql("CREATE TABLE orders AS SELECT * FROM raw_orders WHERE id = 2");
    assert!(ok, "{err}");
    assert_eq!(fixture.own_tables(branch).await, ["orders"]);
    let (ok, out, err) = psql("SELECT count(*) FROM orders");
    assert!(ok, "{err}");
    assert_eq!(out, "1", "the command reads the branch's table once it exists");
    let (ok, _, err) = psql("DELETE FROM shop__prod.orders");
    assert!(!ok && err.contains("permission denied"), "{err}");
    assert_eq!(fixture.rows(production, "orders").await, Some(3));

    // The command's table belongs to the branch role, so an SQL asset can replace it.
    assert_eq!(fixture.materialize(branch, "orders", "SELECT * FROM raw_orders").await, Ok(3));
}

#[tokio::test]
async fn a_branch_needs_production_set_up_and_its_own_prepared_schema() {
    let Some(database) = TestDatabase::create().await else { return };
    let warehouse = connect(&database).await;
    let production = Target { schema: schema("prod"), production: schema("prod") };
    let branch = branch_of("feature");

    let missing_production = warehouse.prepare(&branch).await;
    assert!(
        matches!(missing_production, Err(WarehouseError::Refused(_))),
        "{missing_production:?}"
    );

    warehouse.execute_production_script(&production.schema, SEED).await.expect("seed");
    let not_set_up = warehouse.prepare(&branch).await;
    let Err(WarehouseError::Backend(message)) = &not_set_up else { panic!("{not_set_up:?}") };
    assert!(message.contains("setup_roles"), "{message}");

    warehouse.setup_roles(&production.schema).await.expect("setup roles");
    warehouse.setup_roles(&production.schema).await.expect("setup roles is idempotent");
    let unprepared = warehouse.materialize_sql(&branch, &key("orders"), "SELECT 1 AS x").await;
    assert!(matches!(unprepared, Err(WarehouseError::Backend(_))), "{unprepared:?}");

    warehouse.prepare(&branch).await.expect("prepare");
    assert_eq!(warehouse.row_count(&branch, "orders").await, Ok(Some(3)));
    assert_eq!(warehouse.materialize_sql(&branch, &key("orders"), "SELECT 1 AS x").await, Ok(1));
    assert_eq!(warehouse.row_count(&production, "orders").await, Ok(Some(3)));

    // Tables production creates after the setup are readable by branches too.
    warehouse
        .execute_production_script(&production.schema, "CREATE TABLE later AS SELECT 1 AS x")
        .await
        .expect("later");
    assert_eq!(
        warehouse.materialize_sql(&branch, &key("from_later"), "SELECT * FROM later").await,
        Ok(1)
    );
    warehouse.close().await;
}

/// Servers starting at once against one PostgreSQL (family F): every one prepares production,
/// sets up the branch role and prepares branches (a shared one and its own) at the same moment,
/// each on a warehouse of its own (its own pool, as separate servers have), while production
/// rebuilds a table. CREATE ROLE, GRANT, ALTER DEFAULT PRIVILEGES and CREATE SCHEMA race in the
/// catalog ("tuple concurrently updated/deleted", unique violations on pg_namespace) unless the
/// adapter serializes them. Each round starts from nothing: a new database and a new role.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_starting_at_once_set_up_without_failing() {
    const SERVERS: usize = 8;
    const ROUNDS: usize = 4;
    for round in 0..ROUNDS {
        let Some(database) = TestDatabase::create().await else { return };
        let production = Target { schema: schema("prod"), production: schema("prod") };
        let shared = branch_of("shared");
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(SERVERS));
        let mut servers = Vec::new();
        for server in 0..SERVERS {
            let warehouse = connect(&database).await;
            let (production, shared, start) = (production.clone(), shared.clone(), start.clone());
            servers.push(tokio::spawn(async move {
                let own = branch_of(&format!("feature-{server}"));
                let daily = key(&format!("daily_{}", server % 2));
                start.wait().await;
                let result = async {
                    warehouse
                        .prepare(&production)
                        .await
                        .map_err(|e| format!("prepare production: {e}"))?;
                    warehouse
                        .setup_roles(&production.schema)
                        .await
                        .map_err(|e| format!("setup_roles: {e}"))?;
                    let (a, b, c) = tokio::join!(
                        warehouse.prepare(&shared),
                        warehouse.prepare(&own),
                        // Production rebuilds a table while others grant SELECT on all of its tables.
                        warehouse.materialize_sql(&production, &daily, "SELECT 1 AS x"),
                    );
                    a.map_err(|e| format!("prepare the shared branch: {e}"))?;
                    b.map_err(|e| format!("prepare its own branch: {e}"))?;
                    c.map_err(|e| format!("materialize in production: {e}"))?;
                    warehouse
                        .setup_roles(&production.schema)
                        .await
                        .map_err(|e| format!("setup_roles again: {e}"))?;
                    warehouse.teardown(&own).await.map_err(|e| format!("teardown: {e}"))
                }
                .await;
                warehouse.close().await;
                result
            }));
        }
        let mut failures = Vec::new();
        for (server, task) in servers.into_iter().enumerate() {
            if let Err(error) = task.await.expect("the server task finished") {
                failures.push(format!("round {round}, server {server}: {error}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        let warehouse = connect(&database).await;
        assert_eq!(
            warehouse.schemas().await.expect("schemas"),
            [schema("prod"), shared.schema.clone()]
        );
        assert_eq!(
            warehouse.row_count(&shared, "daily_0").await,
            Ok(Some(1)),
            "the branch role reads production's rebuilt table"
        );
        warehouse.close().await;
    }
}

/// The recommended set-up: the warehouse logs in as a user that is no superuser, with CREATEROLE
/// and CREATE on its database only. Everything works as with a superuser, and SQL that leaves the
/// branch role is refused and rolled back.
#[tokio::test]
async fn a_login_that_is_not_a_superuser_runs_everything() {
    let Some(database) = TestDatabase::create().await else { return };
    let mut admin = database.connection().await;
    let create_login = format!(
        "CREATE ROLE \"{login}\" LOGIN CREATEROLE PASSWORD 'offshoot-test';
         GRANT CREATE ON DATABASE \"{name}\" TO \"{login}\"",
        login = database.login,
        name = database.name
    );
    sqlx::raw_sql(AssertSqlSafe(create_login)).execute(&mut admin).await.expect("create the login");
    let options = PostgresWarehouseOptions {
        branch_role: database.role.clone(),
        ..PostgresWarehouseOptions::default()
    };
    let url = database.url_as(&database.login, "offshoot-test");
    let warehouse = PostgresWarehouse::connect(&url, options).await.expect("connect as the login");

    let production = Target { schema: schema("prod"), production: schema("prod") };
    let branch = branch_of("feature");
    warehouse.prepare(&production).await.expect("prepare production");
    warehouse.execute_production_script(&production.schema, SEED).await.expect("seed");
    warehouse
        .setup_roles(&production.schema)
        .await
        .expect("the login creates the branch role and may become it");
    warehouse.prepare(&branch).await.expect("prepare the branch");
    let orders = warehouse.table_checksum(&production, "orders").await.expect("checksum");

    let materialize = |target: &Target, name: &str, select: &str| {
        let (warehouse, target, key, select) =
            (&warehouse, target.clone(), key(name), select.to_owned());
        async move { warehouse.materialize_sql(&target, &key, &select).await }
    };
    assert_eq!(
        materialize(&branch, "orders", "SELECT * FROM raw_orders WHERE id > 1").await,
        Ok(2)
    );
    assert_eq!(
        materialize(&branch, "large_orders", "SELECT * FROM orders WHERE amount > 0").await,
        Ok(1)
    );
    let escape =
        materialize(&branch, "probe", "SELECT set_config('role', 'none', true) AS x").await;
    assert!(matches!(escape, Err(WarehouseError::Refused(_))), "{escape:?}");
    let delete = materialize(
        &branch,
        "probe",
        "WITH gone AS (DELETE FROM shop__prod.orders RETURNING *) SELECT * FROM gone",
    )
    .await;
    assert!(
        matches!(&delete, Err(WarehouseError::Query(message)) if message.contains("permission denied")),
        "{delete:?}"
    );
    assert_eq!(
        materialize(&production, "orders", "SELECT * FROM raw_orders").await,
        Ok(3),
        "production rebuilds"
    );
    assert_eq!(
        materialize(&branch, "from_production", "SELECT * FROM shop__prod.orders").await,
        Ok(3)
    );
    assert_eq!(warehouse.table_checksum(&production, "orders").await.expect("checksum"), orders);

    warehouse
        .teardown(&branch)
        .await
        .expect("the login drops the branch schema and the role's tables in it");
    assert_eq!(warehouse.schemas().await.expect("schemas"), [schema("prod")]);
    warehouse.close().await;

    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
        .bind(&database.login)
        .fetch_one(&mut admin)
        .await
        .expect("read the login");
    assert!(!superuser);
    admin.close().await.expect("close");
}

#[tokio::test]
async fn a_role_that_could_write_production_is_refused() {
    let Some(database) = TestDatabase::create().await else { return };
    let options = PostgresWarehouseOptions {
        branch_role: "postgres".to_owned(),
        ..PostgresWarehouseOptions::default()
    };
    let warehouse = PostgresWarehouse::connect(&database.url(), options).await.expect("connect");
    let result = warehouse.setup_roles(&schema("prod")).await;
    assert!(matches!(result, Err(WarehouseError::Refused(_))), "{result:?}");
    warehouse.close().await;

    let options = PostgresWarehouseOptions {
        branch_role: "Bad-Name".to_owned(),
        ..PostgresWarehouseOptions::default()
    };
    let result = PostgresWarehouse::connect(&database.url(), options).await;
    assert!(matches!(result, Err(WarehouseError::Backend(_))), "{result:?}");
    assert_eq!(PostgresWarehouseOptions::default().branch_role, DEFAULT_BRANCH_ROLE);
    assert_eq!(DEFAULT_BRANCH_ROLE, "offshoot_branch");
}

#[tokio::test]
async fn connection_errors_do_not_show_the_password() {
    // Needs no server: nothing listens on port 1.
    let result = PostgresWarehouse::connect(
        "postgres://alice:s3cret-pa55@127.0.0.1:1/ware",
        Default::default(),
    )
    .await;
    let Err(WarehouseError::Backend(message)) = result else {
        panic!("expected a backend error, got {result:?}")
    };
    assert!(!message.contains("s3cret-pa55"), "{message}");
    assert!(
        message.contains("postgres://alice@127.0.0.1:1/ware"),
        "the message names the server: {message}"
    );
}

#[tokio::test]
async fn data_diffs_follow_the_warehouse_contract() {
    let Some(fixture) = Fixture::new().await else { return };
    offshoot_warehouse::contract::data_diff_stories(
        &fixture.warehouse,
        &fixture.production,
        &fixture.branch,
    )
    .await;
}

#[tokio::test]
async fn promotion_follows_the_warehouse_contract() {
    let Some(fixture) = Fixture::new().await else { return };
    offshoot_warehouse::contract::promotion_stories(
        &fixture.warehouse,
        &fixture.production,
        &fixture.branch,
    )
    .await;
}

/// The branch's table in production is production's: owned by the login, readable by branches,
/// and the branch role that built it can neither write nor drop it; tearing the branch down
/// leaves it; nothing of the branch's making is promoted.
#[tokio::test]
async fn a_promoted_table_is_production_and_branches_cannot_touch_it() {
    use offshoot_warehouse::{ArchiveId, Promotion};
    let Some(fixture) = Fixture::new().await else { return };
    let (production, branch) = (&fixture.production, &fixture.branch);
    fixture
        .materialize(branch, "orders", "SELECT * FROM raw_orders WHERE amount > 0")
        .await
        .expect("build");
    let built = fixture.checksum(branch, "orders").await;
    let promotions = [Promotion { key: key("orders"), from: branch.schema.clone() }];
    fixture
        .warehouse
        .promote(&production.schema, ArchiveId(1), &promotions, 1_000)
        .await
        .expect("promote");
    assert_eq!(fixture.checksum(production, "orders").await, built);
    assert_eq!(fixture.own_tables(branch).await, Vec::<String>::new(), "moved, not copied");

    let mut connection = fixture.database.connection().await;
    let (owner, branch_reads): (String, bool) = sqlx::query_as(
        "SELECT tableowner::text, has_table_privilege($2, format('%I.%I', schemaname, tablename), 'SELECT')
         FROM pg_tables WHERE schemaname = $1 AND tablename = 'orders'",
    )
    .bind(production.schema.as_str())
    .bind(&fixture.database.role)
    .fetch_one(&mut connection)
    .await
    .expect("the promoted table");
    assert_eq!(owner, "postgres", "owned by the login");
    assert!(branch_reads, "branches read it like production's own tables");
    connection.close().await.expect("close");

    let mut connection = fixture.branch_role_connection().await;
    let prod = production.schema.as_str();
    for write in [
        format!("INSERT INTO {prod}.orders VALUES (9, 9.0, 'eve')"),
        format!("DELETE FROM {prod}.orders"),
        format!("DROP TABLE {prod}.orders"),
        format!("ALTER TABLE {prod}.orders ADD COLUMN intruder int"),
        format!("CREATE TRIGGER t BEFORE INSERT ON {prod}.orders FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()"),
    ] {
        let error = sqlx::raw_sql(AssertSqlSafe(write.clone())).execute(&mut connection).await.expect_err(&write);
        let message = error.to_string();
        assert!(message.contains("permission denied") || message.contains("must be owner"), "{write}: {message}");
    }
    // A GRANT without the grant option only warns; it must have granted nothing.
    sqlx::raw_sql(AssertSqlSafe(format!("GRANT ALL ON {prod}.orders TO PUBLIC")))
        .execute(&mut connection)
        .await
        .expect("a warning, not an error");
    connection.close().await.expect("close");
    let mut connection = fixture.database.connection().await;
    let (login, _) = fixture.warehouse.branch_login(&branch.schema);
    let may_insert: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, 'INSERT')")
        .bind(&login)
        .bind(format!("{prod}.orders"))
        .fetch_one(&mut connection)
        .await
        .expect("privilege");
    assert!(!may_insert, "the branch's grant did nothing");
    connection.close().await.expect("close");
    fixture.warehouse.teardown(branch).await.expect("teardown");
    assert_eq!(
        fixture.checksum(production, "orders").await,
        built,
        "the branch's teardown leaves it"
    );
}

#[tokio::test]
async fn only_plain_tables_are_promoted() {
    use offshoot_warehouse::{ArchiveId, Promotion};
    let Some(fixture) = Fixture::new().await else { return };
    let (production, branch) = (&fixture.production, &fixture.branch);
    let before = fixture.production_checksums().await;
    let schema = branch.schema.as_str();
    // What a branch process logged in as the branch's role can make of its own tables.
    let makes = [
        ("a view", format!("CREATE VIEW {schema}.v AS SELECT 1 AS x")),
        ("a table with grants", format!("CREATE TABLE {schema}.v (x int); GRANT ALL ON {schema}.v TO PUBLIC")),
        ("a table with triggers", format!("CREATE TABLE {schema}.v (x int); CREATE TRIGGER t BEFORE UPDATE ON {schema}.v FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()")),
        ("a table with row-level security", format!("CREATE TABLE {schema}.v (x int); ALTER TABLE {schema}.v ENABLE ROW LEVEL SECURITY")),
        ("a table with column defaults or generated columns", format!("CREATE TABLE {schema}.v (x int DEFAULT 1)")),
        ("a table with expression or partial indexes", format!("CREATE TABLE {schema}.v (x int); CREATE INDEX ON {schema}.v ((x + 1))")),
        ("a table with check, foreign-key or exclusion constraints", format!("CREATE TABLE {schema}.v (x int CHECK (x > 0))")),
        ("a table with column types or collations from outside pg_catalog", format!("CREATE DOMAIN {schema}.d AS int; CREATE TABLE {schema}.v (x {schema}.d)")),
        ("a table that views depend on", format!("CREATE TABLE {schema}.v (x int); CREATE VIEW {schema}.w AS SELECT * FROM {schema}.v")),
        ("an unlogged or temporary table", format!("CREATE UNLOGGED TABLE {schema}.v (x int)")),
    ];
    for (why, make) in makes {
        fixture.warehouse.teardown(branch).await.expect("a fresh branch: teardown");
        fixture.warehouse.prepare(branch).await.expect("a fresh branch: prepare");
        let mut connection = fixture.branch_role_connection().await;
        sqlx::raw_sql(AssertSqlSafe(make.clone())).execute(&mut connection).await.expect(&make);
        connection.close().await.expect("close");
        assert_eq!(
            fixture.warehouse.promotable(branch, &key("v")).await.expect("promotable"),
            Some(why.to_owned()),
            "{make}"
        );
        let promotions = [Promotion { key: key("v"), from: branch.schema.clone() }];
        let result =
            fixture.warehouse.promote(&production.schema, ArchiveId(1), &promotions, 1_000).await;
        let Err(WarehouseError::Refused(message)) = &result else { panic!("{make}: {result:?}") };
        assert!(message.contains(why), "{message}");
        assert_eq!(fixture.production_checksums().await, before, "{make}: production unchanged");
    }
    // A view in production over the asset keeps the asset from being moved away under it.
    fixture
        .warehouse
        .execute_production_script(
            &production.schema,
            "CREATE VIEW orders_view AS SELECT * FROM orders",
        )
        .await
        .expect("a production view");
    fixture.materialize(branch, "orders", "SELECT * FROM raw_orders").await.expect("build");
    assert_eq!(
        fixture.warehouse.promotable(branch, &key("orders")).await.expect("promotable"),
        Some("production's table has views or foreign keys depending on it".to_owned())
    );
}
