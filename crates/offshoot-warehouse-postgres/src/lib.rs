//! The PostgreSQL warehouse (PRODUCT.md section 6): one schema per deployment, named by its
//! [`SchemaName`] (`shop__feature_1_ab12cd34`; production's is the target's `production`).
//!
//! - **Zero-copy clone**: preparing a branch is `CREATE SCHEMA IF NOT EXISTS`; nothing is copied,
//!   and there are no views onto production (a view would keep production from dropping and
//!   rebuilding its own table).
//! - **Branch-first reads**: a materialization runs with `search_path = "<branch>", "<prod>"`, set
//!   with `SET LOCAL` inside its transaction on a connection opened for it alone and closed after,
//!   so no pooled connection ever carries a search path, a role, or a plan from before a
//!   copy-on-write.
//! - **Copy-on-write**: `CREATE TABLE "<schema>"."<key>__offshoot_new" AS <select>`, then drop the
//!   old table and rename, in one transaction.
//! - **Production protected, branches apart**: every branch schema has a LOGIN role of its own
//!   ([`PostgresWarehouse::branch_login`]), a member of the NOLOGIN group role that
//!   [`PostgresWarehouse::setup_roles`] grants USAGE and SELECT on production (now and, through
//!   default privileges, for production's future tables). [`Warehouse::prepare`] creates it and
//!   grants it USAGE and CREATE on its branch schema only. Branch SQL materializations run under
//!   `SET LOCAL ROLE` to it; branch processes (command assets, dbt, Dagster) log in as it, with a
//!   password derived from a key only the server's login can read (`offshoot_internal`), so the
//!   server's own credentials never reach them. The tables a branch creates are its role's, so it
//!   can drop and rename them; production's and other branches' it cannot touch. Production's
//!   own materializations run as the login user. Loads (dbt parse, Dagster definitions) get the
//!   group role's name, which cannot log in. A barrier only if the server asks for passwords:
//!   with `trust` authentication any local process may log in as anyone.
//! - **Several servers, one database**: PostgreSQL's catalog is not safe against two CREATE
//!   SCHEMA, CREATE ROLE or GRANT statements on one object at once, so every schema change takes
//!   an advisory lock of its schema, and the role setup one of its own ([`ROLE_SETUP_LOCK`]).
//!
//! A role set with `SET ROLE` can be left again by SQL that calls `set_config('role', …)`: a
//! session may take any role its *login* user may take. The adapter refuses, and rolls back, a
//! statement after which the role changed; while that one statement runs, though, what it calls
//! runs with the login's privileges. Table privileges are checked before the select runs (as the
//! branch role), so this reaches only functions: with a superuser login that includes writing
//! server files (`lo_export`). Connect as a user that is not a superuser: CREATEROLE and CREATE on
//! the database are enough (tested), or a DBA runs `setup_roles` once.

mod promotion;
mod sql_text;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use offshoot_core::fingerprint::sha256_hex;
use offshoot_core::{AssetKey, SchemaName, UnixMillis};
use offshoot_warehouse::data_diff::{
    self, Column, DataDiff, DiffOptions, Flavor, Row, Runners, SqlRunner, Tables,
};
use offshoot_warehouse::{
    ArchiveId, ArchivedTable, Promotion, Target, Warehouse, WarehouseError, WarehouseResult,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{AssertSqlSafe, Connection, PgExecutor, Row as _};

use crate::sql_text::{quote_identifier, single_statement};

/// The role branch materializations run as unless configured otherwise.
pub const DEFAULT_BRANCH_ROLE: &str = "offshoot_branch";

/// The advisory lock `setup_roles` holds while it creates the branch role and grants it
/// production: the bytes of "offshoot" in ASCII, fixed so that every server (every version) takes
/// the same one. Advisory locks are per database, so it serializes the servers sharing this
/// warehouse database; another application's lock with the same number would only make the two
/// wait for each other.
pub const ROLE_SETUP_LOCK: i64 = 0x6f66_6673_686f_6f74;

/// The schema holding the key branch passwords are derived from; only the login user can read it.
const INTERNAL_SCHEMA: &str = "offshoot_internal";

/// PostgreSQL's `work_mem` for a data diff's connection.
const DIFF_WORK_MEM: &str = "256MB";

/// Suffix of the table a materialization builds before it replaces the asset's table.
const STAGING_SUFFIX: &str = "__offshoot_new";

/// How long opening a connection, or waiting for a pooled one, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The relation kinds a name can resolve to in a `SELECT`: tables, partitioned tables, views,
/// materialized views and foreign tables.
const READABLE_KINDS: &str = "('r', 'p', 'v', 'm', 'f')";

/// Behaviour knobs; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresWarehouseOptions {
    /// The NOLOGIN group role of every branch's login role (it reads production):
    /// `[a-z_][a-z0-9_]*`, at most 50 bytes (branch roles append `_` and 12 hex digits), not
    /// `pg_…`. Default [`DEFAULT_BRANCH_ROLE`].
    pub branch_role: String,
    /// Connections kept for catalog reads, counts, checksums and schema changes (materializations
    /// open their own). Default 4.
    pub max_connections: u32,
}

impl Default for PostgresWarehouseOptions {
    fn default() -> PostgresWarehouseOptions {
        PostgresWarehouseOptions { branch_role: DEFAULT_BRANCH_ROLE.to_owned(), max_connections: 4 }
    }
}

/// A [`Warehouse`] in one PostgreSQL database; see the crate documentation. Cloning shares the
/// connection pool.
#[derive(Clone)]
pub struct PostgresWarehouse {
    /// For the connections materializations open for themselves.
    connect_options: PgConnectOptions,
    pool: PgPool,
    branch_role: String,
    /// The connection URL without its password, for production's commands and logs.
    command_url: String,
    /// The key branch login passwords are derived from (read from [`INTERNAL_SCHEMA`]).
    login_key: String,
}

/// Hand-written so that no password can reach a log through `{:?}`.
impl fmt::Debug for PostgresWarehouse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresWarehouse")
            .field("url", &self.command_url)
            .field("branch_role", &self.branch_role)
            .finish_non_exhaustive()
    }
}

impl PostgresWarehouse {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`),
    /// failing at once if it cannot. Error messages never contain the password.
    pub async fn connect(
        url: &str,
        options: PostgresWarehouseOptions,
    ) -> WarehouseResult<PostgresWarehouse> {
        check_role_name(&options.branch_role)?;
        let connect_options: PgConnectOptions = url
            .parse()
            // sqlx's message for a malformed URL quotes neither the URL nor the password.
            .map_err(|error| {
                WarehouseError::Backend(format!("reading the PostgreSQL warehouse URL: {error}"))
            })?;
        let command_url = url_without_password(&connect_options);
        let connection = open(&connect_options).await.map_err(|error| {
            WarehouseError::Backend(format!("connecting to {command_url}: {error}"))
        })?;
        close(connection).await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(connect_options.clone());
        let login_key = load_login_key(&pool).await?;
        Ok(PostgresWarehouse {
            connect_options,
            pool,
            branch_role: options.branch_role,
            command_url,
            login_key,
        })
    }

    /// The group role of every branch's login role: it reads production.
    pub fn branch_role(&self) -> &str {
        &self.branch_role
    }

    /// The login role of the branch `schema` and its password. The name is the group role plus
    /// a hash of the database and schema (roles are cluster-wide; two databases' branches of the
    /// same name must not share one), so it is a plain identifier whatever the schema is.
    pub fn branch_login(&self, schema: &SchemaName) -> (String, String) {
        let database = self
            .connect_options
            .get_database()
            .unwrap_or_else(|| self.connect_options.get_username());
        let name_hash = sha256_hex(&[database.as_bytes(), schema.as_str().as_bytes()]);
        let role = format!("{}_{}", self.branch_role, &name_hash[..12]);
        // The role name first, the key last: nobody without the key can compute it.
        let password = sha256_hex(&[role.as_bytes(), self.login_key.as_bytes()]);
        (role, password)
    }

    /// A libpq URL for `user`, with `password` if given.
    fn url_for(&self, user: &str, password: Option<&str>) -> String {
        libpq_url(&self.connect_options, user, password)
    }

    /// Makes the branch role exist (NOLOGIN, created if missing) with what branches need of
    /// `production`: USAGE on the schema (created if missing) and SELECT on its tables, today's
    /// and, through default privileges, those the login user creates later. Makes the login user
    /// a member of the role, so it can `SET ROLE` to it. Idempotent; call it once per production
    /// schema before preparing branches. Needs CREATEROLE (or superuser) the first time.
    ///
    /// Safe to run from several servers at once: PostgreSQL updates catalog rows for CREATE ROLE,
    /// GRANT and ALTER DEFAULT PRIVILEGES without row locks, so two of them at once (or a GRANT
    /// on all of production's tables while production replaces one) fail with "tuple
    /// concurrently updated/deleted". Everything runs in one transaction that first takes
    /// [`ROLE_SETUP_LOCK`], then production's schema and grant locks, and what already exists
    /// counts as done.
    pub async fn setup_roles(&self, production: &SchemaName) -> WarehouseResult<()> {
        let mut transaction = self.pool.begin().await.map_err(backend_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROLE_SETUP_LOCK)
            .execute(&mut *transaction)
            .await
            .map_err(backend_error)?;
        lock_schema(&mut transaction, production).await?;
        lock_grants(&mut transaction, production, LockMode::Exclusive).await?;

        let role = quote_identifier(&self.branch_role);
        // In a DO block, so a role created first by another setup (on another database of the
        // cluster, which the advisory lock does not reach: roles are cluster-wide) is not an
        // error. The name is checked to be a plain identifier, so it is safe inside the block's
        // dollar quotes.
        let create = format!(
            "DO $offshoot$ BEGIN CREATE ROLE {role} NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $offshoot$"
        );
        execute(&mut *transaction, create).await.map_err(backend_error)?;

        // From PostgreSQL 16 on, membership alone does not allow `SET ROLE`: the grant needs its
        // SET option (off in the grant a CREATEROLE user gets for a role it creates).
        let (too_powerful, is_login, may_set_role, version): (bool, bool, bool, i32) = sqlx::query_as(
            "SELECT rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb, rolname = session_user,
                    CASE WHEN current_setting('server_version_num')::int >= 160000
                         THEN pg_has_role(session_user, oid, 'SET') ELSE pg_has_role(session_user, oid, 'MEMBER') END,
                    current_setting('server_version_num')::int
             FROM pg_roles WHERE rolname = $1",
        )
        .bind(&self.branch_role)
        .fetch_one(&mut *transaction)
        .await
        .map_err(backend_error)?;
        if too_powerful || is_login {
            // Dropping the transaction rolls it back; the role existed before, so nothing is lost.
            return Err(WarehouseError::Refused(format!(
                "the branch role `{}` is the login user or may bypass privileges; branches would not be read-only",
                self.branch_role
            )));
        }
        if !may_set_role {
            // A DO block for the same reason as the role: a membership granted at the same
            // moment from another database is a unique violation, and counts as granted.
            let with_set = if version >= 160_000 { " WITH SET TRUE" } else { "" };
            let grant = format!(
                "DO $offshoot$ BEGIN GRANT {role} TO SESSION_USER{with_set}; \
                 EXCEPTION WHEN unique_violation THEN NULL; END $offshoot$"
            );
            execute(&mut *transaction, grant).await.map_err(backend_error)?;
        }

        let schema = quote_identifier(production.as_str());
        for statement in [
            format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
            format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
            format!("GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"),
            // For tables the login user creates from now on: production's rebuilds.
            format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role}"),
        ] {
            execute(&mut *transaction, statement).await.map_err(backend_error)?;
        }
        transaction.commit().await.map_err(backend_error)
    }

    /// Runs a multi-statement script as the login user with `search_path` set to `production`,
    /// creating the schema if missing: seeding source tables for the demo and tests. Never give
    /// it a branch's input.
    pub async fn execute_production_script(
        &self,
        production: &SchemaName,
        sql: &str,
    ) -> WarehouseResult<()> {
        let schema = quote_identifier(production.as_str());
        let mut connection = self.open().await?;
        let result = async {
            // Session-level locks (the script may have transactions of its own), released when
            // the connection closes: the schema's, as `prepare` takes it, and its grants', since
            // the script creates and drops production tables.
            sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0)), pg_advisory_lock(hashtextextended($2, 0))")
                .persistent(false)
                .bind(schema_lock_key(production))
                .bind(grants_lock_key(production))
                .execute(&mut connection)
                .await
                .map_err(backend_error)?;
            execute(&mut connection, format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.map_err(backend_error)?;
            // Session-wide is fine: this connection is closed right after.
            execute(&mut connection, format!("SET search_path = {schema}")).await.map_err(backend_error)?;
            execute(&mut connection, sql.to_owned()).await.map_err(query_error)
        }
        .await;
        close(connection).await;
        result
    }

    /// Waits for pooled connections to finish and closes them; the warehouse is unusable
    /// afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The variables a process gets to reach `target` as `user`: libpq's own (`PG*`, so `psql`
    /// and drivers need nothing else), the URL, and the schemas.
    fn environment(
        &self,
        target: &Target,
        user: &str,
        password: Option<&str>,
        url: &str,
    ) -> Vec<(String, String)> {
        let path: Vec<&str> = search_path(target).iter().map(|schema| schema.as_str()).collect();
        let options = &self.connect_options;
        let host = match options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => options.get_host().to_owned(),
        };
        let mut env = vec![
            ("OFFSHOOT_WAREHOUSE_URL".to_owned(), url.to_owned()),
            ("OFFSHOOT_SCHEMA".to_owned(), target.schema.as_str().to_owned()),
            ("OFFSHOOT_PRODUCTION_SCHEMA".to_owned(), target.production.as_str().to_owned()),
            // Schema names are plain identifiers: no spaces or backslashes to escape.
            ("PGOPTIONS".to_owned(), format!("-c search_path={}", path.join(","))),
            ("PGHOST".to_owned(), host),
            ("PGPORT".to_owned(), options.get_port().to_string()),
            ("PGUSER".to_owned(), user.to_owned()),
            (
                "PGDATABASE".to_owned(),
                options.get_database().unwrap_or(options.get_username()).to_owned(),
            ),
        ];
        if let Some(password) = password {
            env.push(("PGPASSWORD".to_owned(), password.to_owned()));
        }
        env
    }

    /// Makes the branch's login role exist with its current password, able to use and create in
    /// the branch schema only, and takeable by the login user (for SQL materializations).
    /// Revokes what older versions granted the shared group role on the schema. Runs in the
    /// caller's transaction, under the schema's lock.
    async fn prepare_branch_login(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        schema: &SchemaName,
    ) -> WarehouseResult<()> {
        let (login, password) = self.branch_login(schema);
        let role = quote_identifier(&login);
        let group = quote_identifier(&self.branch_role);
        // The password is hex and the names plain identifiers: safe inside quotes and the DO
        // block's dollar quotes. A role created at the same moment by another database's
        // server cannot exist: the name hashes the database.
        let create = format!(
            "DO $offshoot$ BEGIN CREATE ROLE {role} LOGIN INHERIT PASSWORD '{password}' IN ROLE {group}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $offshoot$"
        );
        let comment = format!(
            "COMMENT ON ROLE {role} IS 'Offshoot: the login of branch schema {}'",
            schema.as_str()
        );
        let schema_name = quote_identifier(schema.as_str());
        for statement in [
            create,
            // INHERIT, so it reads production through the group role; the password again, in
            // case the role predates the key.
            format!("ALTER ROLE {role} LOGIN INHERIT PASSWORD '{password}'"),
            comment,
            format!("REVOKE ALL ON SCHEMA {schema_name} FROM {group}"),
            format!("GRANT USAGE, CREATE ON SCHEMA {schema_name} TO {role}"),
        ] {
            execute(&mut **transaction, statement).await.map_err(backend_error)?;
        }
        let (may_set_role, version): (bool, i32) = sqlx::query_as(
            "SELECT CASE WHEN current_setting('server_version_num')::int >= 160000
                         THEN pg_has_role(session_user, oid, 'SET') ELSE pg_has_role(session_user, oid, 'MEMBER') END,
                    current_setting('server_version_num')::int
             FROM pg_roles WHERE rolname = $1",
        )
        .bind(&login)
        .fetch_one(&mut **transaction)
        .await
        .map_err(backend_error)?;
        if !may_set_role {
            let with_set = if version >= 160_000 { " WITH SET TRUE" } else { "" };
            execute(&mut **transaction, format!("GRANT {role} TO SESSION_USER{with_set}"))
                .await
                .map_err(backend_error)?;
        }
        Ok(())
    }

    async fn open(&self) -> WarehouseResult<PgConnection> {
        open(&self.connect_options).await.map_err(backend_error)
    }

    async fn schema_exists(&self, schema: &SchemaName) -> WarehouseResult<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
            .bind(schema.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)
    }

    /// Fails unless the target's own schema exists: operations on a torn-down or unprepared
    /// branch fail instead of silently re-creating it or reading production alone.
    async fn require_own_schema(&self, target: &Target) -> WarehouseResult<()> {
        if !self.schema_exists(&target.schema).await? {
            return Err(WarehouseError::Backend(format!(
                "schema `{}` does not exist; prepare it first",
                target.schema
            )));
        }
        Ok(())
    }

    /// The schema and oid of the relation `table` names for `target`, looked up the way an
    /// unqualified name is (own schema first, then production's); `None` if neither has it.
    async fn resolve(
        &self,
        target: &Target,
        table: &str,
    ) -> WarehouseResult<Option<(String, i64)>> {
        self.require_own_schema(target).await?;
        if table.contains('\0') {
            return Ok(None);
        }
        let path: Vec<&str> = search_path(target).iter().map(|schema| schema.as_str()).collect();
        let sql = format!(
            "SELECT n.nspname::text, c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = $1 AND n.nspname = ANY($2::text[]) AND c.relkind IN {READABLE_KINDS}
             ORDER BY array_position($2::text[], n.nspname::text) LIMIT 1"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(table)
            .bind(path)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)
    }
}

#[async_trait]
impl Warehouse for PostgresWarehouse {
    async fn prepare(&self, target: &Target) -> WarehouseResult<()> {
        let schema = quote_identifier(target.schema.as_str());
        if !target.is_production() {
            if !self.schema_exists(&target.production).await? {
                return Err(WarehouseError::Refused(format!(
                    "production schema `{}` does not exist",
                    target.production
                )));
            }
            let (role_exists, reads_production): (bool, bool) = sqlx::query_as(
                "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1),
                        EXISTS (SELECT FROM pg_roles WHERE rolname = $1 AND has_schema_privilege(oid, $2, 'USAGE'))",
            )
            .bind(&self.branch_role)
            .bind(target.production.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
            if !role_exists || !reads_production {
                return Err(WarehouseError::Backend(format!(
                    "the branch role `{}` cannot read production schema `{}`; run setup_roles for it first",
                    self.branch_role, target.production
                )));
            }
        }
        let mut transaction = self.pool.begin().await.map_err(backend_error)?;
        lock_schema(&mut transaction, &target.schema).await?;
        execute(&mut *transaction, format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(backend_error)?;
        if !target.is_production() {
            self.prepare_branch_login(&mut transaction, &target.schema).await?;
        }
        transaction.commit().await.map_err(backend_error)
    }

    async fn materialize_sql(
        &self,
        target: &Target,
        key: &AssetKey,
        select: &str,
    ) -> WarehouseResult<u64> {
        if key.as_str().ends_with(STAGING_SUFFIX) {
            return Err(WarehouseError::Refused(format!(
                "asset keys ending in `{STAGING_SUFFIX}` are reserved"
            )));
        }
        let statement = single_statement(select)?;
        self.require_own_schema(target).await?;
        let login = (!target.is_production()).then(|| self.branch_login(&target.schema).0);
        let mut connection = self.open().await?;
        let result =
            replace_table(&mut connection, target, login.as_deref(), key.as_str(), statement).await;
        close(connection).await;
        result
    }

    fn command_environment(&self, target: &Target) -> Vec<(String, String)> {
        if target.is_production() {
            return self.environment(
                target,
                self.connect_options.get_username(),
                None,
                &self.command_url,
            );
        }
        let (role, password) = self.branch_login(&target.schema);
        let url = self.url_for(&role, Some(&password));
        self.environment(target, &role, Some(&password), &url)
    }

    fn inspection_environment(&self, production: &SchemaName) -> Vec<(String, String)> {
        // The group role cannot log in: a load that tries to connect fails instead of writing.
        let target = Target { schema: production.clone(), production: production.clone() };
        let url = self.url_for(&self.branch_role, None);
        self.environment(&target, &self.branch_role, None, &url)
    }

    fn writable_paths(&self, _target: &Target) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    async fn own_tables(&self, target: &Target) -> WarehouseResult<Vec<String>> {
        self.require_own_schema(target).await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm')",
        )
        .bind(target.schema.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        let mut tables: Vec<String> =
            names.into_iter().filter(|name| !name.ends_with(STAGING_SUFFIX)).collect();
        tables.sort();
        Ok(tables)
    }

    async fn row_count(&self, target: &Target, table: &str) -> WarehouseResult<Option<u64>> {
        let Some((schema, _)) = self.resolve(target, table).await? else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_identifier(&schema),
            quote_identifier(table)
        );
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(Some(count_to_u64(rows)))
    }

    async fn table_checksum(
        &self,
        target: &Target,
        table: &str,
    ) -> WarehouseResult<Option<String>> {
        let Some((schema, oid)) = self.resolve(target, table).await? else {
            return Ok(None);
        };
        // md5 over: the columns with their types (so `1`, `1.0` and `'1'` differ, as do column
        // names), the row count, and each row's md5 in byte order of the row's text. A row's
        // text is PostgreSQL's record output, which tells NULL (`()`) from '' (`("")`).
        let sql = format!(
            "SELECT md5(
                 (SELECT string_agg(quote_ident(attname) || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                  FROM pg_attribute WHERE attrelid = $1::bigint::oid AND attnum > 0 AND NOT attisdropped)
                 || E'\\n' || count(*)::text || E'\\n'
                 || coalesce(string_agg(md5(row_text), '' ORDER BY row_text COLLATE \"C\"), ''))
             FROM (SELECT t::text AS row_text FROM {}.{} AS t) AS table_rows",
            quote_identifier(&schema),
            quote_identifier(table)
        );
        let checksum: String = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(oid)
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(Some(checksum))
    }

    async fn teardown(&self, target: &Target) -> WarehouseResult<()> {
        if target.is_production() {
            return Err(WarehouseError::Refused(format!(
                "`{}` is production; it is never torn down",
                target.schema
            )));
        }
        let mut transaction = self.pool.begin().await.map_err(backend_error)?;
        lock_schema(&mut transaction, &target.schema).await?;
        let drop =
            format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_identifier(target.schema.as_str()));
        execute(&mut *transaction, drop).await.map_err(backend_error)?;
        let (role, _) = self.branch_login(&target.schema);
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
                .bind(&role)
                .fetch_one(&mut *transaction)
                .await
                .map_err(backend_error)?;
        if role_exists {
            let role = quote_identifier(&role);
            execute(&mut *transaction, format!("DROP OWNED BY {role}"))
                .await
                .map_err(backend_error)?;
            execute(&mut *transaction, format!("DROP ROLE IF EXISTS {role}"))
                .await
                .map_err(backend_error)?;
        }
        transaction.commit().await.map_err(backend_error)
    }

    async fn schemas(&self) -> WarehouseResult<Vec<SchemaName>> {
        let names: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace")
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        let mut schemas: Vec<SchemaName> =
            names.iter().filter_map(|name| SchemaName::parse(name)).collect();
        schemas.sort();
        Ok(schemas)
    }

    async fn promotable(&self, branch: &Target, key: &AssetKey) -> WarehouseResult<Option<String>> {
        promotion::promotable(self, branch, key).await
    }

    async fn promote(
        &self,
        production: &SchemaName,
        archive: ArchiveId,
        promotions: &[Promotion],
        now: UnixMillis,
    ) -> WarehouseResult<()> {
        promotion::promote(self, production, archive, promotions, now).await
    }

    async fn archive(
        &self,
        production: &SchemaName,
        archive: ArchiveId,
        keys: &[AssetKey],
        now: UnixMillis,
    ) -> WarehouseResult<()> {
        promotion::archive(self, production, archive, keys, now).await
    }

    async fn restore(
        &self,
        production: &SchemaName,
        archive: ArchiveId,
        now: UnixMillis,
    ) -> WarehouseResult<Vec<AssetKey>> {
        promotion::restore(self, production, archive, now).await
    }

    async fn archived(&self, production: &SchemaName) -> WarehouseResult<Vec<ArchivedTable>> {
        promotion::archived(self, production).await
    }

    async fn expire_archives(
        &self,
        production: &SchemaName,
        before: UnixMillis,
    ) -> WarehouseResult<u64> {
        promotion::expire(self, production, before).await
    }

    async fn data_diff(
        &self,
        target: &Target,
        table: &str,
        options: &DiffOptions,
    ) -> WarehouseResult<DataDiff> {
        if target.is_production() {
            return Err(WarehouseError::Refused(
                "a data diff compares a branch with production; the target is production"
                    .to_owned(),
            ));
        }
        self.require_own_schema(target).await?;
        // Three connections: the two sides' scans run at the same time (each its own backend
        // process), then matching on the first.
        let (mut connection, mut production_scan, mut branch_scan) =
            tokio::try_join!(self.open(), self.open(), self.open())?;
        let result = async {
            // Matching hashes whole rows and the scans sort keys: give them the memory to do so
            // in one batch instead of spilling to disk (these connections are the diff's own and
            // close after it).
            for c in [&mut connection, &mut production_scan, &mut branch_scan] {
                execute(c, format!("SET work_mem = '{DIFF_WORK_MEM}'"))
                    .await
                    .map_err(backend_error)?;
            }
            let production = describe(&mut connection, &target.production, table).await?;
            let branch = describe(&mut connection, &target.schema, table).await?;
            let tables = Tables { production, branch, branch_row_id: None };
            let runners = Runners {
                main: &mut Runner(&mut connection),
                production: &mut Runner(&mut production_scan),
                branch: &mut Runner(&mut branch_scan),
            };
            data_diff::diff(runners, &PostgresFlavor, &tables, options).await
        }
        .await;
        close(production_scan).await;
        close(branch_scan).await;
        close(connection).await;
        result
    }
}

/// Builds `key` from `statement` under a staging name and swaps it in, all in one transaction on
/// a connection of its own: a failing select leaves the previous table as it was and no staging
/// table behind. `role` is the role to run as (a branch's), `None` for the login user.
async fn replace_table(
    connection: &mut PgConnection,
    target: &Target,
    role: Option<&str>,
    key: &str,
    statement: &str,
) -> WarehouseResult<u64> {
    let schema = quote_identifier(target.schema.as_str());
    let table = format!("{schema}.{}", quote_identifier(key));
    let staging = format!("{schema}.{}", quote_identifier(&format!("{key}{STAGING_SUFFIX}")));
    let path: Vec<String> =
        search_path(target).iter().map(|schema| quote_identifier(schema.as_str())).collect();

    let mut transaction = connection.begin().await.map_err(backend_error)?;
    let result = async {
        if target.is_production() {
            // A GRANT on all of production's tables (`setup_roles`) must not meet this build
            // dropping or renaming one of them; builds among themselves do not wait.
            lock_grants(&mut transaction, &target.schema, LockMode::Shared).await?;
        }
        // Two builds of one table wait for each other instead of racing for the staging name.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .persistent(false)
            .bind(format!("offshoot table {}.{key}", target.schema))
            .execute(&mut *transaction)
            .await
            .map_err(backend_error)?;
        // The statement scan in `sql_text` assumes backslashes in '…' are plain characters.
        execute(&mut *transaction, "SET LOCAL standard_conforming_strings = on".to_owned())
            .await
            .map_err(backend_error)?;
        execute(&mut *transaction, format!("SET LOCAL search_path = {}", path.join(", ")))
            .await
            .map_err(backend_error)?;
        if let Some(role) = role {
            execute(&mut *transaction, format!("SET LOCAL ROLE {}", quote_identifier(role)))
                .await
                .map_err(backend_error)?;
        }
        let runs_as = current_user(&mut transaction).await?;
        execute(&mut *transaction, format!("DROP TABLE IF EXISTS {staging}"))
            .await
            .map_err(backend_error)?;
        // The extended protocol (an unnamed statement, not cached) runs exactly one statement.
        let created = sqlx::query(AssertSqlSafe(format!("CREATE TABLE {staging} AS {statement}")))
            .persistent(false)
            .execute(&mut *transaction)
            .await
            .map_err(query_error)?;
        if current_user(&mut transaction).await? != runs_as {
            return Err(WarehouseError::Refused(
                "the asset's SQL changed the role it runs as".to_owned(),
            ));
        }
        execute(&mut *transaction, format!("DROP TABLE IF EXISTS {table}"))
            .await
            .map_err(backend_error)?;
        execute(
            &mut *transaction,
            format!("ALTER TABLE {staging} RENAME TO {}", quote_identifier(key)),
        )
        .await
        .map_err(backend_error)?;
        Ok(created.rows_affected())
    }
    .await;
    match result {
        Ok(rows) => {
            transaction.commit().await.map_err(backend_error)?;
            Ok(rows)
        }
        Err(error) => {
            // Rolling back can only fail if the connection is gone, which rolls back too.
            let _ = transaction.rollback().await;
            Err(error)
        }
    }
}

async fn current_user(connection: &mut PgConnection) -> WarehouseResult<String> {
    sqlx::query_scalar("SELECT current_user::text")
        .persistent(false)
        .fetch_one(connection)
        .await
        .map_err(backend_error)
}

/// Serializes schema changes (prepare, setup, teardown) of one schema across connections and
/// servers, until the transaction ends: `CREATE SCHEMA IF NOT EXISTS` run twice at once fails
/// with a unique violation on `pg_namespace`, and two GRANTs on one schema with "tuple
/// concurrently updated".
async fn lock_schema(connection: &mut PgConnection, schema: &SchemaName) -> WarehouseResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(schema_lock_key(schema))
        .execute(connection)
        .await
        .map(|_| ())
        .map_err(backend_error)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockMode {
    Shared,
    Exclusive,
}

/// Keeps a GRANT on every table of `schema` (exclusive) apart from the statements that create,
/// drop and rename its tables (shared), until the transaction ends. Separate from the schema's
/// lock, so preparing a branch (which prepares production too) never waits for a production
/// build.
async fn lock_grants(
    connection: &mut PgConnection,
    schema: &SchemaName,
    mode: LockMode,
) -> WarehouseResult<()> {
    let sql = match mode {
        LockMode::Shared => "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))",
        LockMode::Exclusive => "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
    };
    // Not prepared: the builds that take it run on connections opened for them alone.
    sqlx::query(sql)
        .persistent(false)
        .bind(grants_lock_key(schema))
        .execute(connection)
        .await
        .map(|_| ())
        .map_err(backend_error)
}

fn schema_lock_key(schema: &SchemaName) -> String {
    format!("offshoot schema {schema}")
}

fn grants_lock_key(schema: &SchemaName) -> String {
    format!("offshoot grants {schema}")
}

/// The schemas an unqualified name is looked up in, in order.
fn search_path(target: &Target) -> Vec<&SchemaName> {
    if target.is_production() {
        vec![&target.schema]
    } else {
        vec![&target.schema, &target.production]
    }
}

/// Runs `sql` (one or several statements) with the simple protocol: nothing is prepared or cached
/// on the connection.
async fn execute<'c>(executor: impl PgExecutor<'c>, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(executor).await.map(|_| ())
}

async fn open(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Closes a connection whose operation is over. A failure to close changes nothing about the
/// outcome: committed work is committed, uncommitted work is rolled back when the server sees
/// the connection go.
async fn close(connection: PgConnection) {
    let _ = connection.close().await;
}

/// `[a-z_][a-z0-9_]*`, at most 63 bytes (PostgreSQL's limit), and not a reserved `pg_` name.
fn check_role_name(name: &str) -> WarehouseResult<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 50
        && !name.starts_with("pg_");
    if !valid {
        return Err(WarehouseError::Backend(format!(
            "invalid branch role name {name:?}: use lower-case letters, digits and `_`, at most 50, not starting with a digit or `pg_`"
        )));
    }
    Ok(())
}

/// The libpq URL of the connection without its password: what a command needs to find the
/// database, and what may appear in logs.
fn url_without_password(options: &PgConnectOptions) -> String {
    libpq_url(options, options.get_username(), None)
}

/// The libpq URL of the connection's database for `user` (with `password` if given).
/// (`PGPASSWORD`, `~/.pgpass`, trust or peer authentication).
fn libpq_url(options: &PgConnectOptions, user: &str, password: Option<&str>) -> String {
    let user = match password {
        Some(password) => format!("{}:{}", percent_encode(user), percent_encode(password)),
        None => percent_encode(user),
    };
    let database = options
        .get_database()
        .map(|database| format!("/{}", percent_encode(database)))
        .unwrap_or_default();
    let mut query = Vec::new();
    let host = match options.get_socket() {
        Some(socket) => {
            query.push(format!("host={}", percent_encode(&socket.display().to_string())));
            String::new()
        }
        None if options.get_host().contains(':') && !options.get_host().starts_with('[') => {
            format!("[{}]", options.get_host())
        }
        None => options.get_host().to_owned(),
    };
    let ssl_mode = match options.get_ssl_mode() {
        PgSslMode::Prefer => None,
        PgSslMode::Disable => Some("disable"),
        PgSslMode::Allow => Some("allow"),
        PgSslMode::Require => Some("require"),
        PgSslMode::VerifyCa => Some("verify-ca"),
        PgSslMode::VerifyFull => Some("verify-full"),
    };
    if let Some(ssl_mode) = ssl_mode {
        query.push(format!("sslmode={ssl_mode}"));
    }
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    format!("postgres://{user}@{host}:{}{database}{query}", options.get_port())
}

/// Percent-encodes everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The table `table` of `schema` as a quoted reference and its columns; `None` if absent.
async fn describe(
    connection: &mut PgConnection,
    schema: &SchemaName,
    table: &str,
) -> WarehouseResult<Option<(String, Vec<Column>)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind(schema.as_str())
    .bind(table)
    .fetch_all(&mut *connection)
    .await
    .map_err(backend_error)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let numeric = |t: &str| {
        let base = t.split('(').next().unwrap_or(t).trim();
        matches!(
            base,
            "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" | "decimal"
        )
    };
    let columns = rows
        .into_iter()
        .map(|(name, data_type)| Column { numeric: numeric(&data_type), name, data_type })
        .collect();
    Ok(Some((
        format!("{}.{}", quote_identifier(schema.as_str()), quote_identifier(table)),
        columns,
    )))
}

struct PostgresFlavor;

impl Flavor for PostgresFlavor {
    fn quote(&self, name: &str) -> String {
        quote_identifier(name)
    }
    fn same(&self, a: &str, b: &str) -> String {
        format!("{a} IS NOT DISTINCT FROM {b}")
    }
    fn text(&self, expr: &str) -> String {
        format!("({expr})::text")
    }
    fn session_query(&self) -> Option<&'static str> {
        Some("SELECT pg_backend_pid()::text")
    }
    fn cancel_query(&self, session: &str) -> String {
        // `session` is a number (checked by the caller).
        format!("SELECT pg_cancel_backend({session})::text")
    }
    fn key_sample(&self, columns: &[String], modulus: u64) -> Option<String> {
        // hashtext: PostgreSQL's 32-bit hash of text, the same for the same text on a server.
        let texts: Vec<String> = columns.iter().map(|c| format!("({c})::text")).collect();
        Some(format!(
            "(hashtext(concat_ws(chr(31), {})) & 2147483647) % {modulus} = 0",
            texts.join(", ")
        ))
    }
}

struct Runner<'a>(&'a mut PgConnection);

#[async_trait]
impl SqlRunner for Runner<'_> {
    async fn rows(&mut self, sql: &str) -> WarehouseResult<Vec<Row>> {
        let rows = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .persistent(false)
            .fetch_all(&mut *self.0)
            .await
            .map_err(query_error)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<Option<String>, _>(i).map_err(backend_error))
                    .collect()
            })
            .collect()
    }
}

/// Reads (creating it the first time) the random key branch passwords are derived from, in a
/// schema only the login user can use. Under [`ROLE_SETUP_LOCK`], so servers starting together
/// agree on one key.
async fn load_login_key(pool: &PgPool) -> WarehouseResult<String> {
    let mut transaction = pool.begin().await.map_err(backend_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ROLE_SETUP_LOCK)
        .execute(&mut *transaction)
        .await
        .map_err(backend_error)?;
    for statement in [
        format!("CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}"),
        format!("REVOKE ALL ON SCHEMA {INTERNAL_SCHEMA} FROM PUBLIC"),
        format!("CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.login_key (id integer PRIMARY KEY CHECK (id = 1), key text NOT NULL)"),
        // gen_random_uuid draws from the server's strong random source (PostgreSQL 13+).
        format!(
            "INSERT INTO {INTERNAL_SCHEMA}.login_key VALUES (1, md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text)) \
             ON CONFLICT (id) DO NOTHING"
        ),
    ] {
        execute(&mut *transaction, statement).await.map_err(|error| {
            WarehouseError::Backend(format!("setting up {INTERNAL_SCHEMA} (the login needs CREATE on the database): {error}"))
        })?;
    }
    let key: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT key FROM {INTERNAL_SCHEMA}.login_key WHERE id = 1"
    )))
    .fetch_one(&mut *transaction)
    .await
    .map_err(backend_error)?;
    transaction.commit().await.map_err(backend_error)?;
    Ok(key)
}

fn count_to_u64(count: i64) -> u64 {
    u64::try_from(count).expect("count(*) is never negative")
}

/// For SQL the asset wrote: the database's own message.
fn query_error(error: sqlx::Error) -> WarehouseError {
    match error {
        sqlx::Error::Database(error) => WarehouseError::Query(error.message().to_owned()),
        other => WarehouseError::Backend(other.to_string()),
    }
}

/// For SQL the adapter wrote.
fn backend_error(error: sqlx::Error) -> WarehouseError {
    WarehouseError::Backend(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        for good in [DEFAULT_BRANCH_ROLE, "_x", "branch_2"] {
            assert!(check_role_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2x", "Branch", "a-b", "a\"b", "pg_read_all_data", &"x".repeat(51)] {
            assert!(check_role_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_urls_leave_the_password_out() {
        let check = |url: &str, expect: &str| {
            let options: PgConnectOptions = url.parse().expect("a valid URL");
            assert_eq!(url_without_password(&options), expect, "{url}");
        };
        check(
            "postgres://alice:s3cret@db.example:6543/ware",
            "postgres://alice@db.example:6543/ware",
        );
        check(
            "postgres://al%40ice:p%40ss@127.0.0.1/my%20db",
            "postgres://al%40ice@127.0.0.1:5432/my%20db",
        );
        check(
            "postgres://bob:x@[::1]:5432/w?sslmode=require",
            "postgres://bob@[::1]:5432/w?sslmode=require",
        );
        check(
            "postgres://carol@localhost/w?host=/var/run/postgresql",
            "postgres://carol@:5432/w?host=%2Fvar%2Frun%2Fpostgresql",
        );
    }
}
