//! Promotion, archives and restore on PostgreSQL: metadata only, as the login user (production's
//! owner), never as a branch role.
//!
//! - **Promote**, per table, in one transaction for the whole catch-up: take ownership of the
//!   branch's table (`OWNER TO SESSION_USER`, which also locks it, so the branch can change
//!   nothing after the check), check that it is a plain table (below), move production's table
//!   into the archive, `SET SCHEMA` the branch's table into production and grant SELECT to the
//!   branch group as production's own tables have.
//! - **Plain** means nothing a branch made can act in production afterwards: an ordinary,
//!   logged table without triggers, rules, policies, expression or partial indexes, defaults or
//!   generated columns, check, foreign-key or exclusion constraints, extended statistics,
//!   inheritance, grants to anyone, views depending on it, or column types and collations from
//!   outside `pg_catalog` (a branch's type or function would run as production, or be dropped
//!   with the branch's schema).
//! - **Archive**: one schema, `offshoot_archive` (no `__`, so never taken for a deployment's),
//!   with no privileges for anyone but the login; tables `offshoot archive <n>` (a space: no
//!   asset key can be one) and the manifest `archives` saying which production and asset each
//!   was, or that production had none.

use offshoot_core::{AssetKey, SchemaName, UnixMillis};
use offshoot_warehouse::{
    ArchiveId, ArchivedTable, Promotion, Target, WarehouseError, WarehouseResult,
};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::sql_text::quote_identifier;
use crate::{backend_error, execute, lock_grants, LockMode, PostgresWarehouse};

pub(crate) const ARCHIVE_SCHEMA: &str = "offshoot_archive";
const ARCHIVE_PREFIX: &str = "offshoot archive ";

/// Why `schema.table` cannot move into production, `None` if it can. `owner` is the role that
/// must own it. One query over the catalog; see the module documentation for the rules.
async fn check_plain(
    connection: &mut PgConnection,
    schema: &SchemaName,
    table: &str,
    owner: &str,
) -> WarehouseResult<Option<String>> {
    let row: Option<(String, String, bool, bool, bool, Vec<bool>)> = sqlx::query_as(
        "SELECT c.relkind::text, c.relpersistence::text, c.relowner = (SELECT oid FROM pg_roles WHERE rolname = $3),
                c.relacl IS NOT NULL OR EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL),
                c.relrowsecurity OR EXISTS (SELECT FROM pg_policy WHERE polrelid = c.oid),
                ARRAY[
                  EXISTS (SELECT FROM pg_trigger WHERE tgrelid = c.oid),
                  EXISTS (SELECT FROM pg_rewrite WHERE ev_class = c.oid),
                  EXISTS (SELECT FROM pg_index WHERE indrelid = c.oid AND (indexprs IS NOT NULL OR indpred IS NOT NULL)),
                  EXISTS (SELECT FROM pg_attrdef WHERE adrelid = c.oid),
                  EXISTS (SELECT FROM pg_constraint WHERE (conrelid = c.oid AND contype NOT IN ('p', 'u', 'n')) OR confrelid = c.oid),
                  EXISTS (SELECT FROM pg_statistic_ext WHERE stxrelid = c.oid),
                  EXISTS (SELECT FROM pg_inherits WHERE inhrelid = c.oid OR inhparent = c.oid),
                  EXISTS (SELECT FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND (t.typnamespace <> 'pg_catalog'::regnamespace
                                 OR (a.attcollation <> 0 AND a.attcollation NOT IN
                                     (SELECT oid FROM pg_collation WHERE collnamespace = 'pg_catalog'::regnamespace)))),
                  EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
                          WHERE d.refobjid = c.oid AND r.ev_class <> c.oid)
                ]
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema.as_str())
    .bind(table)
    .bind(owner)
    .fetch_optional(&mut *connection)
    .await
    .map_err(backend_error)?;
    let Some((kind, persistence, owned, granted, secured, found)) = row else {
        return Ok(Some("missing".to_owned()));
    };
    let reason = match kind.as_str() {
        "r" => None,
        "v" => Some("a view".to_owned()),
        "m" => Some("a materialized view".to_owned()),
        "p" => Some("a partitioned table".to_owned()),
        "f" => Some("a foreign table".to_owned()),
        other => Some(format!("a relation of kind `{other}`, not a table")),
    };
    if reason.is_some() {
        return Ok(reason);
    }
    const WHAT: [&str; 9] = [
        "a table with triggers",
        "a table with rules",
        "a table with expression or partial indexes",
        "a table with column defaults or generated columns",
        "a table with check, foreign-key or exclusion constraints",
        "a table with extended statistics",
        "a table with inheritance",
        "a table with column types or collations from outside pg_catalog",
        "a table that views depend on",
    ];
    let reason = if persistence != "p" {
        Some("an unlogged or temporary table".to_owned())
    } else if !owned {
        Some(format!("a table not owned by `{owner}`"))
    } else if granted {
        Some("a table with grants".to_owned())
    } else if secured {
        Some("a table with row-level security".to_owned())
    } else {
        found.iter().zip(WHAT).find(|(found, _)| **found).map(|(_, what)| what.to_owned())
    };
    Ok(reason)
}

/// Whether production's table of `key` (if any) can move into the archive: nothing depends on
/// it (a view would follow it there).
async fn check_replaceable(
    connection: &mut PgConnection,
    production: &SchemaName,
    key: &str,
) -> WarehouseResult<Option<String>> {
    let depended: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        JOIN pg_depend d ON d.refobjid = c.oid
                        LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
                        LEFT JOIN pg_constraint k ON d.classid = 'pg_constraint'::regclass AND k.oid = d.objid
                        WHERE n.nspname = $1 AND c.relname = $2
                          AND ((r.oid IS NOT NULL AND r.ev_class <> c.oid) OR (k.oid IS NOT NULL AND k.confrelid = c.oid)))",
    )
    .bind(production.as_str())
    .bind(key)
    .fetch_one(&mut *connection)
    .await
    .map_err(backend_error)?;
    Ok(depended.then(|| "production's table has views or foreign keys depending on it".to_owned()))
}

pub(crate) async fn promotable(
    warehouse: &PostgresWarehouse,
    branch: &Target,
    key: &AssetKey,
) -> WarehouseResult<Option<String>> {
    if branch.is_production() {
        return Err(WarehouseError::Refused("promotion takes tables from a branch".to_owned()));
    }
    let (login, _) = warehouse.branch_login(&branch.schema);
    let mut connection = warehouse.pool.acquire().await.map_err(backend_error)?;
    if let Some(why) = check_plain(&mut connection, &branch.schema, key.as_str(), &login).await? {
        return Ok(Some(why));
    }
    check_replaceable(&mut connection, &branch.production, key.as_str()).await
}

/// Creates the archive schema and manifest if missing, then locks `production`'s archive for
/// the transaction (one catch-up or restore at a time per production).
async fn lock_archive(
    connection: &mut PgConnection,
    production: &SchemaName,
) -> WarehouseResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("offshoot schema {ARCHIVE_SCHEMA}"))
        .execute(&mut *connection)
        .await
        .map_err(backend_error)?;
    for statement in [
        format!("CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}"),
        format!("REVOKE ALL ON SCHEMA {ARCHIVE_SCHEMA} FROM PUBLIC"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ARCHIVE_SCHEMA}.archives (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
             production text NOT NULL, archive bigint NOT NULL, asset_key text NOT NULL, archived_table text, \
             archived_at bigint NOT NULL, restored_at bigint, UNIQUE (production, archive, asset_key))"
        ),
    ] {
        execute(&mut *connection, statement).await.map_err(backend_error)?;
    }
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("offshoot archive {production}"))
        .execute(&mut *connection)
        .await
        .map_err(backend_error)?;
    lock_grants(connection, production, LockMode::Shared).await
}

async fn lock_table(
    connection: &mut PgConnection,
    schema: &SchemaName,
    key: &str,
) -> WarehouseResult<()> {
    // The same lock `replace_table` takes: builds of this table wait for the move.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("offshoot table {schema}.{key}"))
        .execute(&mut *connection)
        .await
        .map(|_| ())
        .map_err(backend_error)
}

async fn archive_exists(connection: &mut PgConnection) -> WarehouseResult<bool> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{ARCHIVE_SCHEMA}.archives"))
        .fetch_one(connection)
        .await
        .map_err(backend_error)
}

async fn table_exists(
    connection: &mut PgConnection,
    schema: &SchemaName,
    table: &str,
) -> WarehouseResult<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))",
    )
    .bind(schema.as_str())
    .bind(table)
    .fetch_one(connection)
    .await
    .map_err(backend_error)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Move production's table into the archive (it is about to be replaced).
    Move,
    /// Copy it (it is about to be rebuilt, and must serve until then).
    Copy,
}

/// Records production's table of `key` in the archive unless the archive has the key already.
/// Returns whether production still has a table of `key`.
async fn archive_one(
    connection: &mut PgConnection,
    production: &SchemaName,
    archive: ArchiveId,
    key: &str,
    now: UnixMillis,
    keep: Keep,
) -> WarehouseResult<bool> {
    let exists = table_exists(connection, production, key).await?;
    let inserted: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO {ARCHIVE_SCHEMA}.archives (production, archive, asset_key, archived_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (production, archive, asset_key) DO NOTHING RETURNING id"
    )))
    .bind(production.as_str())
    .bind(archive.0)
    .bind(key)
    .bind(now)
    .fetch_optional(&mut *connection)
    .await
    .map_err(backend_error)?;
    let Some(id) = inserted else { return Ok(exists) };
    if !exists {
        return Ok(false);
    }
    let archived = format!("{ARCHIVE_PREFIX}{id}");
    let prod = quote_identifier(production.as_str());
    match keep {
        Keep::Move => {
            execute(
                &mut *connection,
                format!(
                    "ALTER TABLE {prod}.{} RENAME TO {}",
                    quote_identifier(key),
                    quote_identifier(&archived)
                ),
            )
            .await
            .map_err(backend_error)?;
            execute(
                &mut *connection,
                format!(
                    "ALTER TABLE {prod}.{} SET SCHEMA {ARCHIVE_SCHEMA}",
                    quote_identifier(&archived)
                ),
            )
            .await
            .map_err(backend_error)?;
        }
        Keep::Copy => {
            execute(
                &mut *connection,
                format!(
                    "CREATE TABLE {ARCHIVE_SCHEMA}.{} AS TABLE {prod}.{}",
                    quote_identifier(&archived),
                    quote_identifier(key)
                ),
            )
            .await
            .map_err(backend_error)?;
        }
    }
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {ARCHIVE_SCHEMA}.archives SET archived_table = $1 WHERE id = $2"
    )))
    .bind(&archived)
    .bind(id)
    .execute(&mut *connection)
    .await
    .map_err(backend_error)?;
    Ok(keep == Keep::Copy)
}

pub(crate) async fn promote(
    warehouse: &PostgresWarehouse,
    production: &SchemaName,
    archive: ArchiveId,
    promotions: &[Promotion],
    now: UnixMillis,
) -> WarehouseResult<()> {
    let mut transaction = warehouse.pool.begin().await.map_err(backend_error)?;
    let outcome = async {
        lock_archive(&mut transaction, production).await?;
        let prod = quote_identifier(production.as_str());
        let group = quote_identifier(warehouse.branch_role());
        let session_user: String = sqlx::query_scalar("SELECT session_user::text")
            .fetch_one(&mut *transaction)
            .await
            .map_err(backend_error)?;
        for promotion in promotions {
            let key = promotion.key.as_str();
            let branch = &promotion.from;
            if branch == production {
                return Err(WarehouseError::Refused(
                    "promotion takes tables from a branch, not from production".to_owned(),
                ));
            }
            let refuse = |why: String| {
                WarehouseError::Refused(format!("`{key}` of `{branch}` cannot be promoted: {why}"))
            };
            lock_table(&mut transaction, branch, key).await?;
            lock_table(&mut transaction, production, key).await?;
            let (login, _) = warehouse.branch_login(branch);
            // Owned by the branch before; ours (and locked) after, so the check below holds.
            if let Some(why) = check_plain(&mut transaction, branch, key, &login).await? {
                return Err(refuse(why));
            }
            let table = format!("{}.{}", quote_identifier(branch.as_str()), quote_identifier(key));
            execute(&mut *transaction, format!("ALTER TABLE {table} OWNER TO SESSION_USER"))
                .await
                .map_err(backend_error)?;
            if let Some(why) = check_plain(&mut transaction, branch, key, &session_user).await? {
                return Err(refuse(why));
            }
            if let Some(why) = check_replaceable(&mut transaction, production, key).await? {
                return Err(refuse(why));
            }
            if archive_one(&mut transaction, production, archive, key, now, Keep::Move).await? {
                execute(&mut *transaction, format!("DROP TABLE {prod}.{}", quote_identifier(key)))
                    .await
                    .map_err(backend_error)?;
            }
            execute(&mut *transaction, format!("ALTER TABLE {table} SET SCHEMA {prod}"))
                .await
                .map_err(backend_error)?;
            execute(
                &mut *transaction,
                format!("GRANT SELECT ON {prod}.{} TO {group}", quote_identifier(key)),
            )
            .await
            .map_err(backend_error)?;
        }
        Ok(())
    }
    .await;
    finish(transaction, outcome).await
}

pub(crate) async fn archive(
    warehouse: &PostgresWarehouse,
    production: &SchemaName,
    archive: ArchiveId,
    keys: &[AssetKey],
    now: UnixMillis,
) -> WarehouseResult<()> {
    let mut transaction = warehouse.pool.begin().await.map_err(backend_error)?;
    let outcome = async {
        lock_archive(&mut transaction, production).await?;
        for key in keys {
            lock_table(&mut transaction, production, key.as_str()).await?;
            archive_one(&mut transaction, production, archive, key.as_str(), now, Keep::Copy)
                .await?;
        }
        Ok(())
    }
    .await;
    finish(transaction, outcome).await
}

pub(crate) async fn restore(
    warehouse: &PostgresWarehouse,
    production: &SchemaName,
    archive: ArchiveId,
    now: UnixMillis,
) -> WarehouseResult<Vec<AssetKey>> {
    let mut transaction = warehouse.pool.begin().await.map_err(backend_error)?;
    let outcome = async {
        lock_archive(&mut transaction, production).await?;
        let entries: Vec<(i64, String, Option<String>, Option<i64>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, asset_key, archived_table, restored_at FROM {ARCHIVE_SCHEMA}.archives
             WHERE production = $1 AND archive = $2 ORDER BY id"
        )))
        .bind(production.as_str())
        .bind(archive.0)
        .fetch_all(&mut *transaction)
        .await
        .map_err(backend_error)?;
        if entries.is_empty() {
            return Err(WarehouseError::Refused(format!(
                "`{production}` has no archive {} (never made, or expired)",
                archive.0
            )));
        }
        let prod = quote_identifier(production.as_str());
        let mut restored = Vec::new();
        for (id, key, archived_table, restored_at) in entries {
            if restored_at.is_some() {
                continue;
            }
            lock_table(&mut transaction, production, &key).await?;
            execute(&mut *transaction, format!("DROP TABLE IF EXISTS {prod}.{}", quote_identifier(&key)))
                .await
                .map_err(backend_error)?;
            if let Some(archived_table) = archived_table {
                let archived = quote_identifier(&archived_table);
                execute(&mut *transaction, format!("ALTER TABLE {ARCHIVE_SCHEMA}.{archived} SET SCHEMA {prod}"))
                    .await
                    .map_err(backend_error)?;
                execute(
                    &mut *transaction,
                    format!("ALTER TABLE {prod}.{archived} RENAME TO {}", quote_identifier(&key)),
                )
                .await
                .map_err(backend_error)?;
            }
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {ARCHIVE_SCHEMA}.archives SET restored_at = $1, archived_table = NULL WHERE id = $2"
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

pub(crate) async fn archived(
    warehouse: &PostgresWarehouse,
    production: &SchemaName,
) -> WarehouseResult<Vec<ArchivedTable>> {
    let mut connection = warehouse.pool.acquire().await.map_err(backend_error)?;
    if !archive_exists(&mut connection).await? {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, Option<String>, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT archive, asset_key, archived_table, archived_at FROM {ARCHIVE_SCHEMA}.archives
         WHERE production = $1 AND restored_at IS NULL ORDER BY id"
    )))
    .bind(production.as_str())
    .fetch_all(&mut *connection)
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

pub(crate) async fn expire(
    warehouse: &PostgresWarehouse,
    production: &SchemaName,
    before: UnixMillis,
) -> WarehouseResult<u64> {
    let mut transaction = warehouse.pool.begin().await.map_err(backend_error)?;
    let outcome = async {
        lock_archive(&mut transaction, production).await?;
        let expired: Vec<(i64, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
            "DELETE FROM {ARCHIVE_SCHEMA}.archives WHERE production = $1 AND archived_at < $2 RETURNING id, archived_table"
        )))
        .bind(production.as_str())
        .bind(before)
        .fetch_all(&mut *transaction)
        .await
        .map_err(backend_error)?;
        for (_, table) in &expired {
            if let Some(table) = table {
                execute(&mut *transaction, format!("DROP TABLE IF EXISTS {ARCHIVE_SCHEMA}.{}", quote_identifier(table)))
                    .await
                    .map_err(backend_error)?;
            }
        }
        Ok(expired.len() as u64)
    }
    .await;
    finish(transaction, outcome).await
}

fn asset_key(text: &str) -> WarehouseResult<AssetKey> {
    AssetKey::new(text).map_err(|error| {
        WarehouseError::Backend(format!("the archive manifest names {text:?}: {error}"))
    })
}

async fn finish<T>(
    transaction: sqlx::Transaction<'_, sqlx::Postgres>,
    outcome: WarehouseResult<T>,
) -> WarehouseResult<T> {
    match outcome {
        Ok(value) => {
            transaction.commit().await.map_err(backend_error)?;
            Ok(value)
        }
        Err(error) => {
            // Rolling back can only fail if the connection is gone, which rolls back too.
            let _ = transaction.rollback().await;
            Err(error)
        }
    }
}
