//! The embedded warehouse (PRODUCT.md section 6): one SQLite database file per deployment schema:
//! production's is `<root>/<schema>.db`, a branch's `<root>/<schema>/<schema>.db`, in a folder of
//! its own so that a process confined to writing its branch's folder (SQLite creates journals
//! beside the database) can neither write production's file nor plant a journal beside it. A
//! branch target opens its own file as `main` and attaches production's file read-only as
//! `prod`, so unqualified names resolve to the branch's own table first and to production's
//! otherwise, and SQLite itself refuses writes to production ("readonly database").
//!
//! Fresh resolution: every operation opens its own connection and closes it at the end (cheap
//! for SQLite: one file open, no server), except materializations (below). Checked with the
//! bundled SQLite 3.51.3: a statement prepared while `t` meant `prod.t` keeps that meaning after
//! the branch creates `main.t`, and a connection that was open when *another* connection created
//! `main.t` resolves `t` to production even in statements it prepares afresh (it re-reads a
//! schema only when a statement touches that database). So `persistent(false)` alone would not
//! do, nor would a plain pool.
//!
//! Materializations keep one connection per target file (`Writers`): a run's steps queue for it
//! in this process instead of contending for SQLite's write lock (whose busy handler sleeps in
//! steps of up to 100 ms), and a step opens no file and attaches nothing. Each materialization
//! first reads `main.sqlite_master` (and `prod.sqlite_master`) inside its write transaction, so
//! that both schemas are checked against their cookies before the `CREATE TABLE ... AS` is
//! prepared, and the transaction's locks keep both as they were read until it commits. The
//! test `a_kept_connection_resolves_names_as_a_fresh_one_would` covers a table production adds,
//! a branch table another process creates (shadowing production's), a table production
//! replaces, and a teardown with a new prepare. A kept connection whose files were replaced is
//! closed and opened
//! afresh, and teardown closes the branch's.
//!
//! Not here: views onto production (SQLite views cannot reference an attached database) and any
//! copying of data.

mod checksum;
mod promotion;
mod sql_text;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use offshoot_core::{AssetKey, SchemaName, UnixMillis};
use offshoot_warehouse::data_diff::{
    self, Column, DataDiff, DiffOptions, Flavor, Row, Runners, SqlRunner, Tables,
};
use offshoot_warehouse::{
    ArchiveId, ArchivedTable, Promotion, Target, Warehouse, WarehouseError, WarehouseResult,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row as _};

use crate::sql_text::{quote_identifier, single_statement};

/// The schema name under which a branch connection sees production.
const PRODUCTION_ALIAS: &str = "prod";

/// Suffix of the table a promotion builds before it replaces the asset's table (reserved).
const STAGING_SUFFIX: &str = "__offshoot_new";

/// How long an operation waits for another connection's lock on the same file (a parallel
/// materialization in the same deployment, or production committing while a branch reads it).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The files a deployment schema may leave beside `<schema>.db`.
const SIDE_FILE_SUFFIXES: [&str; 3] = ["-journal", "-wal", "-shm"];

/// SQLite warehouse rooted at one folder; see the crate documentation.
#[derive(Debug, Clone)]
pub struct SqliteWarehouse {
    /// Absolute, so file URLs handed to commands and the read-only attach URI are absolute.
    root: PathBuf,
    /// The connection kept per target file for materializations (shared by clones).
    writers: Arc<Writers>,
}

/// What opening a connection does when the target's own file does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenMissing {
    Create,
    Fail,
}

impl SqliteWarehouse {
    /// A warehouse keeping its files in `root`, which is created if missing.
    pub fn new(root: PathBuf) -> WarehouseResult<SqliteWarehouse> {
        std::fs::create_dir_all(&root)
            .map_err(|error| file_error("create the warehouse folder", &root, error))?;
        let root = std::fs::canonicalize(&root)
            .map_err(|error| file_error("resolve the warehouse folder", &root, error))?;
        Ok(SqliteWarehouse { root, writers: Arc::default() })
    }

    /// The (absolute) folder holding one `<schema>.db` per deployment schema.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The database file of the target's own schema, whether or not it exists.
    pub fn file_of(&self, target: &Target) -> PathBuf {
        if target.is_production() {
            self.production_file(&target.production)
        } else {
            self.branch_folder(&target.schema).join(format!("{}.db", target.schema.as_str()))
        }
    }

    /// Production's database file, whether or not it exists.
    pub fn production_file(&self, production: &SchemaName) -> PathBuf {
        self.root.join(format!("{}.db", production.as_str()))
    }

    /// The folder holding a branch's file and its journals: all a branch process may write.
    fn branch_folder(&self, schema: &SchemaName) -> PathBuf {
        self.root.join(schema.as_str())
    }

    /// Where a branch file lived before branches had folders of their own: removed on teardown.
    fn legacy_branch_file(&self, schema: &SchemaName) -> PathBuf {
        self.root.join(format!("{}.db", schema.as_str()))
    }

    /// Runs a multi-statement script read-write against production's file, creating it if
    /// missing: seeding source tables for the demo and tests. Never give it a branch's input.
    pub async fn execute_production_script(
        &self,
        production: &SchemaName,
        sql: &str,
    ) -> WarehouseResult<()> {
        let target = Target { schema: production.clone(), production: production.clone() };
        let mut connection = self.connect(&target, WhenMissing::Create).await?;
        let result = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut connection)
            .await
            .map_err(query_error);
        close(connection).await;
        result.map(|_| ())
    }

    /// A connection exactly like the ones every operation opens for `target` (for a branch: its
    /// own file as `main`, production's attached read-only as `prod`). The target's file must
    /// exist. For tests and tools. It resolves names as of when it opened: after a
    /// copy-on-write in the same target, open a new one.
    pub async fn open_connection(&self, target: &Target) -> WarehouseResult<SqliteConnection> {
        self.connect(target, WhenMissing::Fail).await
    }

    async fn connect(
        &self,
        target: &Target,
        when_missing: WhenMissing,
    ) -> WarehouseResult<SqliteConnection> {
        let own_path = self.file_of(target);
        let production_path = self.production_file(&target.production);
        if !target.is_production() && !file_exists(&production_path).await? {
            return Err(WarehouseError::Refused(format!(
                "production schema `{}` does not exist",
                target.production
            )));
        }
        if when_missing == WhenMissing::Fail && !file_exists(&own_path).await? {
            return Err(WarehouseError::Backend(format!(
                "schema `{}` does not exist; prepare it first",
                target.schema
            )));
        }

        if when_missing == WhenMissing::Create && !target.is_production() {
            let folder = self.branch_folder(&target.schema);
            tokio::fs::create_dir_all(&folder)
                .await
                .map_err(|error| file_error("create the branch folder", &folder, error))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&own_path)
            .create_if_missing(when_missing == WhenMissing::Create)
            .busy_timeout(BUSY_TIMEOUT);
        let mut connection = options.connect().await.map_err(backend_error)?;
        if !target.is_production() {
            // Bound as a parameter, not spliced: the path may hold any character. sqlx opens
            // every connection with SQLITE_OPEN_URI, so ATTACH honours `mode=ro`.
            let attach = format!("ATTACH DATABASE ?1 AS {}", quote_identifier(PRODUCTION_ALIAS));
            let uri = read_only_uri(&production_path)?;
            if let Err(error) =
                sqlx::query(AssertSqlSafe(attach)).bind(uri).execute(&mut connection).await
            {
                close(connection).await;
                return Err(backend_error(error));
            }
        }
        Ok(connection)
    }

    /// The connection kept for `target`'s materializations (its slot locked by the caller),
    /// opened if there is none and reopened if a file it opened was replaced since.
    async fn kept_writer<'a>(
        &self,
        target: &Target,
        kept: &'a mut Option<Writer>,
    ) -> WarehouseResult<&'a mut Writer> {
        let mut files = vec![self.file_of(target)];
        if !target.is_production() {
            files.push(self.production_file(&target.production));
        }
        let identity = identities(&files);
        if kept.as_ref().is_some_and(|writer| Some(&writer.files) != identity.as_ref()) {
            if let Some(writer) = kept.take() {
                close(writer.connection).await;
            }
        }
        if kept.is_none() {
            let connection = self.connect(target, WhenMissing::Fail).await?;
            match identities(&files) {
                Some(files) => {
                    *kept = Some(Writer { connection, files, used: std::time::Instant::now() })
                }
                None => {
                    close(connection).await;
                    return Err(WarehouseError::Backend(format!(
                        "schema `{}` disappeared while it was opened",
                        target.schema
                    )));
                }
            }
        }
        let writer = kept.as_mut().expect("opened above");
        writer.used = std::time::Instant::now();
        Ok(writer)
    }

    /// The schema (`main`, then `prod` for a branch) in which `table` resolves for `target`,
    /// the way an unqualified name does; `None` if neither has it.
    async fn resolve(
        connection: &mut SqliteConnection,
        target: &Target,
        table: &str,
    ) -> WarehouseResult<Option<&'static str>> {
        for &schema in search_path(target) {
            // Identifiers match ASCII case-insensitively in SQLite; so does NOCASE.
            let sql = format!(
                "SELECT count(*) FROM {}.sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
                quote_identifier(schema)
            );
            let found: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(table)
                .fetch_one(&mut *connection)
                .await
                .map_err(backend_error)?;
            if found > 0 {
                return Ok(Some(schema));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    async fn prepare(&self, target: &Target) -> WarehouseResult<()> {
        // Opening creates the (empty) file; reading each schema proves the files are databases
        // and, for a branch, that production attaches. Nothing is copied.
        let mut connection = self.connect(target, WhenMissing::Create).await?;
        let mut result = Ok(());
        for &schema in search_path(target) {
            let sql = format!("SELECT count(*) FROM {}.sqlite_master", quote_identifier(schema));
            if let Err(error) =
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).fetch_one(&mut connection).await
            {
                result = Err(backend_error(error));
                break;
            }
        }
        close(connection).await;
        result
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
        let slot = self.writers.slot(&self.file_of(target));
        let mut kept = slot.lock().await;
        let writer = self.kept_writer(target, &mut kept).await?;
        let result =
            replace_table(&mut writer.connection, search_path(target), key.as_str(), statement)
                .await;
        if result.is_err() {
            // Whatever went wrong, the next materialization starts from a fresh connection.
            if let Some(writer) = kept.take() {
                close(writer.connection).await;
            }
        }
        result
    }

    fn command_environment(&self, target: &Target) -> Vec<(String, String)> {
        vec![
            ("OFFSHOOT_WAREHOUSE_URL".to_owned(), sqlite_url(&self.file_of(target))),
            ("OFFSHOOT_SCHEMA".to_owned(), target.schema.as_str().to_owned()),
            (
                "OFFSHOOT_PRODUCTION_URL".to_owned(),
                sqlite_url(&self.production_file(&target.production)),
            ),
        ]
    }

    fn inspection_environment(&self, production: &SchemaName) -> Vec<(String, String)> {
        // Production's file, for reading: a confined load cannot write it (see `writable_paths`).
        let target = Target { schema: production.clone(), production: production.clone() };
        self.command_environment(&target)
    }

    fn writable_paths(&self, target: &Target) -> Vec<PathBuf> {
        // Production writes its file and journals in the root; a branch only its own folder.
        if target.is_production() {
            vec![self.root.clone()]
        } else {
            vec![self.branch_folder(&target.schema)]
        }
    }

    async fn own_tables(&self, target: &Target) -> WarehouseResult<Vec<String>> {
        // Over the kept connection a run's steps materialize with: a fresh one would attach
        // production's file and parse its whole schema (a few ms at 1,000 tables) at the start
        // of every run, where the kept one has it parsed already.
        let slot = self.writers.slot(&self.file_of(target));
        let mut kept = slot.lock().await;
        let writer = self.kept_writer(target, &mut kept).await?;
        let result = sqlx::query_scalar::<_, String>(
            "SELECT name FROM main.sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .fetch_all(&mut writer.connection)
        .await
        .map_err(backend_error);
        if result.is_err() {
            if let Some(writer) = kept.take() {
                close(writer.connection).await;
            }
        }
        // Staging tables are a materialization's inside; the archive is no asset's.
        let mut tables: Vec<String> = result?
            .into_iter()
            .filter(|name| {
                !name.ends_with(STAGING_SUFFIX)
                    && !name.starts_with(promotion::ARCHIVE_PREFIX)
                    && name != promotion::MANIFEST
            })
            .collect();
        tables.sort();
        Ok(tables)
    }

    async fn row_count(&self, target: &Target, table: &str) -> WarehouseResult<Option<u64>> {
        let mut connection = self.connect(target, WhenMissing::Fail).await?;
        let result = async {
            let Some(schema) = Self::resolve(&mut connection, target, table).await? else {
                return Ok(None);
            };
            let sql = format!(
                "SELECT count(*) FROM {}.{}",
                quote_identifier(schema),
                quote_identifier(table)
            );
            let rows: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut connection)
                .await
                .map_err(backend_error)?;
            Ok(Some(count_to_u64(rows)))
        }
        .await;
        close(connection).await;
        result
    }

    async fn table_checksum(
        &self,
        target: &Target,
        table: &str,
    ) -> WarehouseResult<Option<String>> {
        let mut connection = self.connect(target, WhenMissing::Fail).await?;
        let result = async {
            let Some(schema) = Self::resolve(&mut connection, target, table).await? else {
                return Ok(None);
            };
            checksum::table_checksum(&mut connection, schema, table)
                .await
                .map(Some)
                .map_err(backend_error)
        }
        .await;
        close(connection).await;
        result
    }

    async fn teardown(&self, target: &Target) -> WarehouseResult<()> {
        if target.is_production() {
            return Err(WarehouseError::Refused(format!(
                "`{}` is production; it is never torn down",
                target.schema
            )));
        }
        if let Some(slot) = self.writers.remove(&self.file_of(target)) {
            if let Some(writer) = slot.lock().await.take() {
                close(writer.connection).await;
            }
        }
        let folder = self.branch_folder(&target.schema);
        match tokio::fs::remove_dir_all(&folder).await {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(file_error("remove", &folder, error)),
        }
        let path = self.legacy_branch_file(&target.schema);
        // Side files first: a journal left behind would be "rolled back" into a database later
        // created under the same name.
        for suffix in SIDE_FILE_SUFFIXES {
            let mut side_file = path.clone().into_os_string();
            side_file.push(suffix);
            remove_if_present(Path::new(&side_file)).await?;
        }
        remove_if_present(&path).await
    }

    async fn schemas(&self) -> WarehouseResult<Vec<SchemaName>> {
        let mut entries = tokio::fs::read_dir(&self.root)
            .await
            .map_err(|error| file_error("list the warehouse folder", &self.root, error))?;
        let mut schemas = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|error| file_error("list the warehouse folder", &self.root, error))?
        {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else { continue };
            let kind = entry.file_type().await.ok();
            // Production (and branches from before folders): `<schema>.db`.
            if let Some(schema) = name.strip_suffix(".db").and_then(SchemaName::parse) {
                if kind.is_some_and(|kind| kind.is_file()) {
                    schemas.push(schema);
                }
                continue;
            }
            // A branch: `<schema>/`, which holds `<schema>.db` once prepared (a folder left
            // without it by an interrupted teardown is listed too, so it is dropped).
            if let Some(schema) = SchemaName::parse(name) {
                if kind.is_some_and(|kind| kind.is_dir()) {
                    schemas.push(schema);
                }
            }
        }
        schemas.sort();
        schemas.dedup();
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
        // Three connections: the two sides' scans run at the same time (SQLite runs each
        // connection on its own thread) as the grouping of the keys.
        let (mut connection, mut production_scan, mut branch_scan) = tokio::try_join!(
            self.connect(target, WhenMissing::Fail),
            self.connect(target, WhenMissing::Fail),
            self.connect(target, WhenMissing::Fail)
        )?;
        let result = async {
            let production = describe(&mut connection, PRODUCTION_ALIAS, table).await?;
            let branch = describe(&mut connection, "main", table).await?;
            let branch_row_id = match &branch {
                Some((reference, columns)) => row_id(&mut connection, reference, columns).await,
                None => None,
            };
            let tables = Tables { production, branch, branch_row_id };
            let runners = Runners {
                main: &mut Runner(&mut connection),
                production: &mut Runner(&mut production_scan),
                branch: &mut Runner(&mut branch_scan),
            };
            data_diff::diff(runners, &SqliteFlavor, &tables, options).await
        }
        .await;
        close(connection).await;
        close(production_scan).await;
        close(branch_scan).await;
        result
    }
}

/// Drops `key` and builds it again from `statement`, in one transaction: a failing select
/// leaves the previous table as it was.
async fn replace_table(
    connection: &mut SqliteConnection,
    schemas: &[&str],
    key: &str,
    statement: &str,
) -> WarehouseResult<u64> {
    let table = format!("main.{}", quote_identifier(key));
    // IMMEDIATE takes the write lock up front, so a concurrent writer waits (busy timeout)
    // instead of failing on a lock upgrade halfway through. The transaction is what keeps the
    // old table when the new one cannot be built: no staging table and no `ALTER TABLE ...
    // RENAME`, which makes SQLite parse and reload every table's definition in the file (a
    // cost that grew with the schema, 20 ms a step at 1,000 tables).
    let mut transaction = connection.begin_with("BEGIN IMMEDIATE").await.map_err(backend_error)?;
    let result = async {
        // Touching every schema the statement may read makes SQLite check their cookies and
        // re-read any another connection changed, before the statement is prepared.
        let touch = schemas
            .iter()
            .map(|schema| {
                format!("(SELECT count(*) FROM {}.sqlite_master)", quote_identifier(schema))
            })
            .collect::<Vec<_>>()
            .join(" + ");
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!("SELECT {touch}")))
            .fetch_one(&mut *transaction)
            .await
            .map_err(backend_error)?;
        // A staging table a crashed promotion (or an older Offshoot) left behind goes too.
        let staging = format!("main.{}", quote_identifier(&format!("{key}{STAGING_SUFFIX}")));
        for stale in [&table, &staging] {
            execute(&mut transaction, format!("DROP TABLE IF EXISTS {stale}"))
                .await
                .map_err(backend_error)?;
        }
        execute(&mut transaction, format!("CREATE TABLE {table} AS {statement}"))
            .await
            .map_err(query_error)?;
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut *transaction)
            .await
            .map_err(backend_error)?;
        Ok(count_to_u64(rows))
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

/// The schemas an unqualified name is looked up in, in order.
/// The table `table` in the attached database `schema` (`main` or `prod`) as a quoted reference
/// and its columns; `None` if it is not there. Names match case-insensitively, as in SQLite.
async fn describe(
    connection: &mut SqliteConnection,
    schema: &str,
    table: &str,
) -> WarehouseResult<Option<(String, Vec<Column>)>> {
    let found: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT name FROM {}.sqlite_master WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE",
        quote_identifier(schema)
    )))
    .bind(table)
    .fetch_optional(&mut *connection)
    .await
    .map_err(backend_error)?;
    let Some(name) = found else { return Ok(None) };
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM pragma_table_info(?1, ?2) ORDER BY cid")
            .bind(&name)
            .bind(schema)
            .fetch_all(&mut *connection)
            .await
            .map_err(backend_error)?;
    let columns = rows
        .into_iter()
        .map(|(name, data_type)| Column { numeric: numeric_affinity(&data_type), name, data_type })
        .collect();
    Ok(Some((format!("{}.{}", quote_identifier(schema), quote_identifier(&name)), columns)))
}

/// The name under which `table`'s rows have their integer ids (`rowid`, `_rowid_` or `oid`,
/// whichever no column shadows); `None` for a view or a `WITHOUT ROWID` table, which have none
/// (selecting it fails there).
async fn row_id(
    connection: &mut SqliteConnection,
    table: &str,
    columns: &[Column],
) -> Option<String> {
    let name = ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|name| !columns.iter().any(|c| c.name.eq_ignore_ascii_case(name)))?;
    sqlx::query(AssertSqlSafe(format!("SELECT {name} FROM {table} LIMIT 0")))
        .fetch_all(&mut *connection)
        .await
        .ok()
        .map(|_| name.to_owned())
}

/// TEXT affinity (section 3.1 of SQLite's datatype documentation): a number stored in such a
/// column becomes text.
fn text_affinity(declared: &str) -> bool {
    let upper = declared.to_ascii_uppercase();
    !upper.contains("INT")
        && (upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT"))
}

/// SQLite's affinity rules (section 3.1 of its datatype documentation): INTEGER, REAL and
/// NUMERIC affinity are numbers; TEXT and BLOB (or no type) are not.
fn numeric_affinity(declared: &str) -> bool {
    let upper = declared.to_ascii_uppercase();
    if upper.contains("INT") {
        return true;
    }
    if upper.contains("CHAR")
        || upper.contains("CLOB")
        || upper.contains("TEXT")
        || upper.contains("BLOB")
        || upper.is_empty()
    {
        return false;
    }
    true
}

struct SqliteFlavor;

impl Flavor for SqliteFlavor {
    fn quote(&self, name: &str) -> String {
        quote_identifier(name)
    }
    fn same(&self, a: &str, b: &str) -> String {
        format!("{a} IS {b}")
    }
    fn text(&self, expr: &str) -> String {
        format!("CAST({expr} AS TEXT)")
    }
    fn number(&self, expr: &str) -> String {
        // A column may hold text in one row and a number in the next.
        format!("(CASE WHEN typeof({expr}) IN ('integer', 'real') THEN {expr} END)")
    }
    fn loosely_typed(&self) -> bool {
        true
    }
    fn key_sample(&self, columns: &[String], modulus: u64) -> Option<String> {
        // SQLite has no hash function: an integer key is mixed by a multiplicative step modulo
        // the prime 2^31 - 1 (Park and Miller's); any other value by its length and its last
        // three characters first. The same value gives the same answer on both sides.
        const P: &str = "2147483647";
        let part = |c: &String| {
            format!(
                "(CASE WHEN typeof({c}) = 'integer' THEN ({c} % {P} + {P}) % {P} ELSE (length(CAST({c} AS TEXT)) * 16777259 + coalesce(unicode(substr(CAST({c} AS TEXT), -1)), 0) * 65599 + coalesce(unicode(substr(CAST({c} AS TEXT), -2, 1)), 0) * 257 + coalesce(unicode(substr(CAST({c} AS TEXT), -3, 1)), 0)) % {P} END)"
            )
        };
        let mut mixed = "0".to_owned();
        for column in columns {
            mixed = format!("((({mixed}) * 31 + {}) % {P}) * 48271 % {P}", part(column));
        }
        Some(format!("({mixed}) % {modulus} = 0"))
    }
    fn may_hold_numbers(&self, column: &Column) -> bool {
        !text_affinity(&column.data_type)
    }
    fn match_by_grouping(&self) -> bool {
        true
    }
}

struct Runner<'a>(&'a mut SqliteConnection);

#[async_trait]
impl SqlRunner for Runner<'_> {
    async fn rows(&mut self, sql: &str) -> WarehouseResult<Vec<Row>> {
        let rows = sqlx::query(AssertSqlSafe(sql.to_owned()))
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

fn search_path(target: &Target) -> &'static [&'static str] {
    if target.is_production() {
        &["main"]
    } else {
        &["main", PRODUCTION_ALIAS]
    }
}

async fn execute(connection: &mut SqliteConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(sql)).execute(connection).await.map(|_| ())
}

/// Closes a connection whose operation is over. A failure to close changes nothing about the
/// outcome: committed work is on disk, uncommitted work is rolled back when the handle goes.
async fn close(connection: SqliteConnection) {
    let _ = connection.close().await;
}

/// `file:` URI of `path` opened read-only, percent-encoding everything but unreserved characters
/// and `/` (a `?` or `#` in a folder name would otherwise end the path).
fn read_only_uri(path: &Path) -> WarehouseResult<String> {
    let text = path
        .to_str()
        .ok_or_else(|| WarehouseError::Backend(format!("path {} is not UTF-8", path.display())))?;
    let mut uri = String::from("file:");
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'.' | b'_' | b'~') {
            uri.push(char::from(byte));
        } else {
            write!(uri, "%{byte:02X}").expect("writing to a String cannot fail");
        }
    }
    uri.push_str("?mode=ro");
    Ok(uri)
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn count_to_u64(count: i64) -> u64 {
    u64::try_from(count).expect("count(*) is never negative")
}

async fn file_exists(path: &Path) -> WarehouseResult<bool> {
    tokio::fs::try_exists(path).await.map_err(|error| file_error("check", path, error))
}

async fn remove_if_present(path: &Path) -> WarehouseResult<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(file_error("delete", path, error)),
    }
}

fn file_error(action: &str, path: &Path, error: io::Error) -> WarehouseError {
    WarehouseError::Backend(format!("cannot {action} {}: {error}", path.display()))
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

/// A connection kept for the next materialization of one target, with the identity (device,
/// inode) of the files it opened: its own and, for a branch, production's.
struct Writer {
    connection: SqliteConnection,
    files: Vec<(u64, u64)>,
    used: std::time::Instant,
}

/// A kept connection unused this long is closed: a run's steps come moments apart, and a
/// hundred idle branches must not each hold a page cache.
const WRITER_IDLE: Duration = Duration::from_secs(30);

/// The kept connections, one slot per target file; a slot's lock orders that file's
/// materializations in this process.
#[derive(Default)]
struct Writers(Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<Option<Writer>>>>>);

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files = self.0.lock().map(|slots| slots.len()).unwrap_or(0);
        f.debug_struct("Writers").field("files", &files).finish()
    }
}

impl Writers {
    /// The slot of `file`; closes the other slots' connections that have been idle too long.
    fn slot(&self, file: &Path) -> Arc<tokio::sync::Mutex<Option<Writer>>> {
        let mut slots = self.0.lock().expect("never poisoned: no panics inside");
        slots.retain(|path, slot| {
            if path == file {
                return true;
            }
            match slot.try_lock() {
                Ok(mut kept) => {
                    if kept.as_ref().is_some_and(|w| w.used.elapsed() > WRITER_IDLE) {
                        // Dropping a connection closes it on sqlx's worker thread.
                        kept.take();
                    }
                    kept.is_some()
                }
                Err(_) => true,
            }
        });
        slots.entry(file.to_path_buf()).or_default().clone()
    }

    fn remove(&self, file: &Path) -> Option<Arc<tokio::sync::Mutex<Option<Writer>>>> {
        self.0.lock().expect("never poisoned: no panics inside").remove(file)
    }
}

/// The (device, inode) of each file, or `None` if one is missing.
/// A `stat` each: quick on the local files a warehouse is, so not worth a blocking-pool trip
/// per materialization.
fn identities(files: &[PathBuf]) -> Option<Vec<(u64, u64)>> {
    let mut found = Vec::with_capacity(files.len());
    for file in files {
        let metadata = std::fs::metadata(file).ok()?;
        found.push((metadata.dev(), metadata.ino()));
    }
    Some(found)
}
