//! Promotion, archives and restore on SQLite, all inside production's own file so that each is
//! one transaction of one database (atomic whatever its journal mode; a transaction across
//! attached files is not atomic in WAL mode).
//!
//! - **Promote** copies each branch table's rows into production (`CREATE TABLE … AS SELECT *`
//!   from the branch file attached read-only: values keep their storage classes, so checksums
//!   match; no asset code runs). Production's previous table is renamed into the archive.
//! - **Archive**: tables named `offshoot archive <n>` (a space: no asset key can be one) and the
//!   manifest `offshoot archives` saying which asset each was, or that production had none.
//! - Renames run with `legacy_alter_table = ON`, so that production's views keep reading the
//!   asset's name instead of following the table into the archive.

use std::collections::BTreeMap;

use offshoot_core::{AssetKey, SchemaName, UnixMillis};
use offshoot_warehouse::{
    ArchiveId, ArchivedTable, Promotion, Target, WarehouseError, WarehouseResult,
};
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::sql_text::quote_identifier;
use crate::{backend_error, execute, read_only_uri, SqliteWarehouse, WhenMissing, STAGING_SUFFIX};

/// The manifest of production's archives.
pub(crate) const MANIFEST: &str = "offshoot archives";
/// Archived tables are this plus the manifest row's id.
pub(crate) const ARCHIVE_PREFIX: &str = "offshoot archive ";

/// SQLite's default limit of attached databases is 10; production's connection keeps one for
/// itself and a margin.
const MAX_BRANCHES: usize = 8;

/// Production's file, its connection, a transaction: what every operation here runs in.
async fn production_connection(
    warehouse: &SqliteWarehouse,
    production: &SchemaName,
) -> WarehouseResult<SqliteConnection> {
    let target = Target { schema: production.clone(), production: production.clone() };
    let mut connection = warehouse.connect(&target, WhenMissing::Fail).await?;
    execute(&mut connection, "PRAGMA legacy_alter_table = ON".to_owned())
        .await
        .map_err(backend_error)?;
    Ok(connection)
}

pub(crate) async fn promotable(
    warehouse: &SqliteWarehouse,
    branch: &Target,
    key: &AssetKey,
) -> WarehouseResult<Option<String>> {
    if branch.is_production() {
        return Err(WarehouseError::Refused("promotion takes tables from a branch".to_owned()));
    }
    let mut connection = warehouse.connect(branch, WhenMissing::Fail).await?;
    let kind = object_kind(&mut connection, "main", key.as_str()).await;
    crate::close(connection).await;
    Ok(reason_not_promotable(kind?.as_deref()))
}

fn reason_not_promotable(kind: Option<&str>) -> Option<String> {
    match kind {
        Some("table") => None,
        Some("view") => Some("a view".to_owned()),
        Some(other) => Some(format!("a {other}, not a table")),
        None => Some("missing".to_owned()),
    }
}

/// `table`, `view`... of `name` in the attached database `schema`; `None` if absent.
async fn object_kind(
    connection: &mut SqliteConnection,
    schema: &str,
    name: &str,
) -> WarehouseResult<Option<String>> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT type FROM {}.sqlite_master WHERE name = ?1 COLLATE NOCASE AND type IN ('table', 'view')",
        quote_identifier(schema)
    )))
    .bind(name)
    .fetch_optional(&mut *connection)
    .await
    .map_err(backend_error)
}

async fn ensure_manifest(connection: &mut SqliteConnection) -> WarehouseResult<()> {
    execute(
        connection,
        format!(
            "CREATE TABLE IF NOT EXISTS main.{} (id INTEGER PRIMARY KEY AUTOINCREMENT, archive INTEGER NOT NULL, \
             asset_key TEXT NOT NULL, archived_table TEXT, archived_at INTEGER NOT NULL, restored_at INTEGER, \
             UNIQUE (archive, asset_key))",
            quote_identifier(MANIFEST)
        ),
    )
    .await
    .map_err(backend_error)
}

async fn manifest_exists(connection: &mut SqliteConnection) -> WarehouseResult<bool> {
    Ok(object_kind(connection, "main", MANIFEST).await?.is_some())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Rename production's table into the archive (it is about to be replaced).
    Move,
    /// Copy it (it is about to be rebuilt, which needs it no more than a failure would).
    Copy,
}

/// Records production's table of `key` in the archive unless the archive has the key already.
/// Returns whether production's table is still in place (to be replaced by the caller).
async fn archive_one(
    connection: &mut SqliteConnection,
    archive: ArchiveId,
    key: &str,
    now: UnixMillis,
    keep: Keep,
) -> WarehouseResult<bool> {
    let manifest = quote_identifier(MANIFEST);
    let known: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM main.{manifest} WHERE archive = ?1 AND asset_key = ?2"
    )))
    .bind(archive.0)
    .bind(key)
    .fetch_optional(&mut *connection)
    .await
    .map_err(backend_error)?;
    let exists = object_kind(connection, "main", key).await?.is_some();
    if known.is_some() {
        return Ok(exists);
    }
    let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO main.{manifest} (archive, asset_key, archived_table, archived_at) VALUES (?1, ?2, NULL, ?3) RETURNING id"
    )))
    .bind(archive.0)
    .bind(key)
    .bind(now)
    .fetch_one(&mut *connection)
    .await
    .map_err(backend_error)?;
    if !exists {
        return Ok(false);
    }
    let archived = format!("{ARCHIVE_PREFIX}{id}");
    let from = format!("main.{}", quote_identifier(key));
    match keep {
        Keep::Move => execute(
            connection,
            format!("ALTER TABLE {from} RENAME TO {}", quote_identifier(&archived)),
        )
        .await
        .map_err(backend_error)?,
        Keep::Copy => execute(
            connection,
            format!("CREATE TABLE main.{} AS SELECT * FROM {from}", quote_identifier(&archived)),
        )
        .await
        .map_err(backend_error)?,
    }
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE main.{manifest} SET archived_table = ?1 WHERE id = ?2"
    )))
    .bind(&archived)
    .bind(id)
    .execute(&mut *connection)
    .await
    .map_err(backend_error)?;
    Ok(keep == Keep::Copy)
}

pub(crate) async fn promote(
    warehouse: &SqliteWarehouse,
    production: &SchemaName,
    archive: ArchiveId,
    promotions: &[Promotion],
    now: UnixMillis,
) -> WarehouseResult<()> {
    let mut aliases: BTreeMap<&SchemaName, String> = BTreeMap::new();
    for promotion in promotions {
        if &promotion.from == production {
            return Err(WarehouseError::Refused(
                "promotion takes tables from a branch, not from production".to_owned(),
            ));
        }
        let next = format!("branch_{}", aliases.len());
        aliases.entry(&promotion.from).or_insert(next);
    }
    if aliases.len() > MAX_BRANCHES {
        return Err(WarehouseError::Refused(format!(
            "one promotion takes tables from at most {MAX_BRANCHES} branches (here {})",
            aliases.len()
        )));
    }
    let mut connection = production_connection(warehouse, production).await?;
    let result = async {
        for (schema, alias) in &aliases {
            let branch = Target { schema: (*schema).clone(), production: production.clone() };
            let file = warehouse.file_of(&branch);
            if !crate::file_exists(&file).await? {
                return Err(WarehouseError::Refused(format!(
                    "branch schema `{schema}` does not exist"
                )));
            }
            sqlx::query(AssertSqlSafe(format!(
                "ATTACH DATABASE ?1 AS {}",
                quote_identifier(alias)
            )))
            .bind(read_only_uri(&file)?)
            .execute(&mut connection)
            .await
            .map_err(backend_error)?;
        }
        let mut transaction =
            connection.begin_with("BEGIN IMMEDIATE").await.map_err(backend_error)?;
        let outcome = async {
            ensure_manifest(&mut transaction).await?;
            for promotion in promotions {
                let alias = &aliases[&promotion.from];
                let key = promotion.key.as_str();
                let kind = object_kind(&mut transaction, alias, key).await?;
                if let Some(why) = reason_not_promotable(kind.as_deref()) {
                    return Err(WarehouseError::Refused(format!(
                        "`{key}` of `{}` cannot be promoted: {why}",
                        promotion.from
                    )));
                }
                let staging =
                    format!("main.{}", quote_identifier(&format!("{key}{STAGING_SUFFIX}")));
                execute(&mut transaction, format!("DROP TABLE IF EXISTS {staging}"))
                    .await
                    .map_err(backend_error)?;
                execute(
                    &mut transaction,
                    format!(
                        "CREATE TABLE {staging} AS SELECT * FROM {}.{}",
                        quote_identifier(alias),
                        quote_identifier(key)
                    ),
                )
                .await
                .map_err(backend_error)?;
                if archive_one(&mut transaction, archive, key, now, Keep::Move).await? {
                    execute(&mut transaction, format!("DROP TABLE main.{}", quote_identifier(key)))
                        .await
                        .map_err(backend_error)?;
                }
                execute(
                    &mut transaction,
                    format!("ALTER TABLE {staging} RENAME TO {}", quote_identifier(key)),
                )
                .await
                .map_err(backend_error)?;
            }
            Ok(())
        }
        .await;
        finish(transaction, outcome).await
    }
    .await;
    crate::close(connection).await;
    result
}

pub(crate) async fn archive(
    warehouse: &SqliteWarehouse,
    production: &SchemaName,
    archive: ArchiveId,
    keys: &[AssetKey],
    now: UnixMillis,
) -> WarehouseResult<()> {
    let mut connection = production_connection(warehouse, production).await?;
    let result = async {
        let mut transaction =
            connection.begin_with("BEGIN IMMEDIATE").await.map_err(backend_error)?;
        let outcome = async {
            ensure_manifest(&mut transaction).await?;
            for key in keys {
                archive_one(&mut transaction, archive, key.as_str(), now, Keep::Copy).await?;
            }
            Ok(())
        }
        .await;
        finish(transaction, outcome).await
    }
    .await;
    crate::close(connection).await;
    result
}

pub(crate) async fn restore(
    warehouse: &SqliteWarehouse,
    production: &SchemaName,
    archive: ArchiveId,
    now: UnixMillis,
) -> WarehouseResult<Vec<AssetKey>> {
    let mut connection = production_connection(warehouse, production).await?;
    let result = async {
        let mut transaction =
            connection.begin_with("BEGIN IMMEDIATE").await.map_err(backend_error)?;
        let outcome = async {
            if !manifest_exists(&mut transaction).await? {
                return Err(nothing_to_restore(production, archive));
            }
            let manifest = quote_identifier(MANIFEST);
            let entries: Vec<(i64, String, Option<String>, Option<i64>)> =
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT id, asset_key, archived_table, restored_at FROM main.{manifest} WHERE archive = ?1 ORDER BY id"
                )))
                .bind(archive.0)
                .fetch_all(&mut *transaction)
                .await
                .map_err(backend_error)?;
            if entries.is_empty() {
                return Err(nothing_to_restore(production, archive));
            }
            let mut restored = Vec::new();
            for (id, key, archived_table, restored_at) in entries {
                if restored_at.is_some() {
                    continue;
                }
                execute(&mut transaction, format!("DROP TABLE IF EXISTS main.{}", quote_identifier(&key)))
                    .await
                    .map_err(backend_error)?;
                if let Some(archived_table) = archived_table {
                    execute(
                        &mut transaction,
                        format!(
                            "ALTER TABLE main.{} RENAME TO {}",
                            quote_identifier(&archived_table),
                            quote_identifier(&key)
                        ),
                    )
                    .await
                    .map_err(backend_error)?;
                }
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE main.{manifest} SET restored_at = ?1, archived_table = NULL WHERE id = ?2"
                )))
                .bind(now)
                .bind(id)
                .execute(&mut *transaction)
                .await
                .map_err(backend_error)?;
                restored.push(asset_key(&key)?);
            }
            Ok(restored)
        }
        .await;
        finish(transaction, outcome).await
    }
    .await;
    crate::close(connection).await;
    result
}

pub(crate) async fn archived(
    warehouse: &SqliteWarehouse,
    production: &SchemaName,
) -> WarehouseResult<Vec<ArchivedTable>> {
    let mut connection = production_connection(warehouse, production).await?;
    let result = async {
        if !manifest_exists(&mut connection).await? {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, String, Option<String>, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT archive, asset_key, archived_table, archived_at FROM main.{} WHERE restored_at IS NULL ORDER BY id",
            quote_identifier(MANIFEST)
        )))
        .fetch_all(&mut connection)
        .await
        .map_err(backend_error)?;
        rows.into_iter()
            .map(|(archive, key, table, archived_at)| {
                Ok(ArchivedTable {
                    archive: ArchiveId(archive),
                    key: asset_key(&key)?,
                    existed: table.is_some(),
                    archived_at,
                })
            })
            .collect()
    }
    .await;
    crate::close(connection).await;
    result
}

pub(crate) async fn expire(
    warehouse: &SqliteWarehouse,
    production: &SchemaName,
    before: UnixMillis,
) -> WarehouseResult<u64> {
    let mut connection = production_connection(warehouse, production).await?;
    let result = async {
        if !manifest_exists(&mut connection).await? {
            return Ok(0);
        }
        let mut transaction =
            connection.begin_with("BEGIN IMMEDIATE").await.map_err(backend_error)?;
        let outcome = async {
            let manifest = quote_identifier(MANIFEST);
            let expired: Vec<(i64, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT id, archived_table FROM main.{manifest} WHERE archived_at < ?1"
            )))
            .bind(before)
            .fetch_all(&mut *transaction)
            .await
            .map_err(backend_error)?;
            for (id, table) in &expired {
                if let Some(table) = table {
                    execute(
                        &mut transaction,
                        format!("DROP TABLE IF EXISTS main.{}", quote_identifier(table)),
                    )
                    .await
                    .map_err(backend_error)?;
                }
                sqlx::query(AssertSqlSafe(format!("DELETE FROM main.{manifest} WHERE id = ?1")))
                    .bind(id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(backend_error)?;
            }
            Ok(expired.len() as u64)
        }
        .await;
        finish(transaction, outcome).await
    }
    .await;
    crate::close(connection).await;
    result
}

fn nothing_to_restore(production: &SchemaName, archive: ArchiveId) -> WarehouseError {
    WarehouseError::Refused(format!(
        "`{production}` has no archive {} (never made, or expired)",
        archive.0
    ))
}

fn asset_key(text: &str) -> WarehouseResult<AssetKey> {
    AssetKey::new(text).map_err(|error| {
        WarehouseError::Backend(format!("the archive manifest names {text:?}: {error}"))
    })
}

/// Commits on success, rolls back on failure (a failed rollback means the connection is gone,
/// which rolls back too).
async fn finish<T>(
    transaction: sqlx::Transaction<'_, sqlx::Sqlite>,
    outcome: WarehouseResult<T>,
) -> WarehouseResult<T> {
    match outcome {
        Ok(value) => {
            transaction.commit().await.map_err(backend_error)?;
            Ok(value)
        }
        Err(error) => {
            let _ = transaction.rollback().await;
            Err(error)
        }
    }
}
