//! The warehouse port (PRODUCT.md section 6). A deployment's schema starts as a zero-copy clone of
//! production: it copies no data and reads production's table for every asset it has not built.
//! Materializing in a branch writes a branch-owned table (copy-on-write); production objects are
//! never written, altered or dropped through a branch target. Teardown drops exactly the branch's
//! own objects.

#[cfg(feature = "contract")]
pub mod contract;
pub mod data_diff;

use std::path::PathBuf;

use async_trait::async_trait;
use offshoot_core::{AssetKey, SchemaName, UnixMillis};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarehouseError {
    /// The asset's SQL failed in the warehouse; the message is the database's own.
    #[error("{0}")]
    Query(String),
    /// A branch target tried to write production, or production is missing.
    #[error("refused: {0}")]
    Refused(String),
    #[error("warehouse error: {0}")]
    Backend(String),
}

pub type WarehouseResult<T> = Result<T, WarehouseError>;

/// Where a deployment reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The deployment's own schema.
    pub schema: SchemaName,
    /// Production's schema, which a branch reads (never writes) for what it has not built.
    pub production: SchemaName,
}

impl Target {
    pub fn is_production(&self) -> bool {
        self.schema == self.production
    }
}

/// The archive of the production tables one catch-up replaced, named by the caller (the
/// catch-up's number). Rolling back restores one archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchiveId(pub i64);

/// One table a catch-up takes from a branch into production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub key: AssetKey,
    /// The branch schema that holds the table.
    pub from: SchemaName,
}

/// What an archive holds for one asset: production's table from before the catch-up, or the
/// fact that production had none (so restoring drops the asset's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedTable {
    pub archive: ArchiveId,
    pub key: AssetKey,
    /// Production had a table of the asset before.
    pub existed: bool,
    pub archived_at: UnixMillis,
}

#[async_trait]
pub trait Warehouse: Send + Sync + 'static {
    /// Makes the target's schema exist. Idempotent; copies no table data, so its cost does not
    /// grow with production's size.
    async fn prepare(&self, target: &Target) -> WarehouseResult<()>;

    /// Runs `select` (one SELECT; unqualified names resolve to the target's own tables first, then
    /// production's) and atomically replaces the target's table `key` with its result. Returns the
    /// number of rows.
    async fn materialize_sql(
        &self,
        target: &Target,
        key: &AssetKey,
        select: &str,
    ) -> WarehouseResult<u64>;

    /// Environment variables a command asset (or a location's build) needs to write its table
    /// into the target: at least `OFFSHOOT_WAREHOUSE_URL` and `OFFSHOOT_SCHEMA`. For a branch,
    /// credentials that can read production and write only the branch: never production's.
    fn command_environment(&self, target: &Target) -> Vec<(String, String)>;

    /// Environment variables for a process that only inspects a commit (a location's load: dbt
    /// parse, Dagster's definitions): they name production (dbt's manifest compiles against
    /// it) but carry no credential that can write anything.
    fn inspection_environment(&self, production: &SchemaName) -> Vec<(String, String)>;

    /// Files and folders a process building the target may write besides its own work folders
    /// (the SQLite warehouse: the target's database folder); empty when the warehouse is a
    /// server that checks credentials itself.
    fn writable_paths(&self, target: &Target) -> Vec<PathBuf>;

    /// Tables and views the target's schema owns (for a branch: what it built itself), sorted.
    async fn own_tables(&self, target: &Target) -> WarehouseResult<Vec<String>>;

    /// Rows of `table` as the target sees it (branch first, then production); `None` if absent.
    async fn row_count(&self, target: &Target, table: &str) -> WarehouseResult<Option<u64>>;

    /// A checksum of `table`'s content as the target sees it; `None` if absent. For tests and
    /// for proving production unchanged.
    async fn table_checksum(&self, target: &Target, table: &str)
        -> WarehouseResult<Option<String>>;

    /// Drops exactly the target's own objects. Idempotent. Refuses production.
    async fn teardown(&self, target: &Target) -> WarehouseResult<()>;

    /// Every deployment schema that exists, production included (to find orphans).
    async fn schemas(&self) -> WarehouseResult<Vec<SchemaName>>;

    /// `None` when the branch's table `key` can be promoted into production, else why not
    /// (`a view`, `missing`, `a table with triggers`...): only plain tables whose data is all
    /// there is to them move, so that nothing of a branch's making (code run on read, grants to
    /// others) reaches production.
    async fn promotable(&self, branch: &Target, key: &AssetKey) -> WarehouseResult<Option<String>>;

    /// Moves each branch table into `production`, all in one transaction, without running any
    /// asset code; production's table of the same key (or the fact that there was none) goes
    /// into `archive` first. PostgreSQL moves metadata only (`ALTER TABLE ... SET SCHEMA`, owner
    /// production's login, SELECT for the branch group as production's own tables have);
    /// SQLite copies the rows inside one transaction of production's file. Refused, with
    /// nothing changed, when any table is missing or not [`Warehouse::promotable`]. Done by
    /// production's own connection: no branch credential writes production.
    async fn promote(
        &self,
        production: &SchemaName,
        archive: ArchiveId,
        promotions: &[Promotion],
        now: UnixMillis,
    ) -> WarehouseResult<()>;

    /// Keeps a copy of production's current tables of `keys` in `archive` before a catch-up
    /// rebuilds them (absent ones are recorded as absent). A key the archive has already
    /// keeps its first entry, so a retried catch-up archives what was there before it.
    async fn archive(
        &self,
        production: &SchemaName,
        archive: ArchiveId,
        keys: &[AssetKey],
        now: UnixMillis,
    ) -> WarehouseResult<()>;

    /// Puts production back as `archive` recorded it, in one transaction: each archived table
    /// replaces the current one (PostgreSQL: metadata only), each asset recorded as absent
    /// loses its table. Returns the keys restored; an archive already restored restores nothing
    /// again. Refused when the archive holds nothing (never made, or expired).
    async fn restore(
        &self,
        production: &SchemaName,
        archive: ArchiveId,
        now: UnixMillis,
    ) -> WarehouseResult<Vec<AssetKey>>;

    /// What production's archives hold and have not restored, oldest first.
    async fn archived(&self, production: &SchemaName) -> WarehouseResult<Vec<ArchivedTable>>;

    /// Drops every archive entry of `production` archived before `before` (restored or not) and
    /// its table; returns how many.
    async fn expire_archives(
        &self,
        production: &SchemaName,
        before: UnixMillis,
    ) -> WarehouseResult<u64>;

    /// What the branch `target` did to `table`: its own table against production's (see
    /// [`data_diff`]). A side without the table is `None` in the result (for the branch: it has
    /// not built it and reads production's). Refuses production as the target.
    async fn data_diff(
        &self,
        target: &Target,
        table: &str,
        options: &data_diff::DiffOptions,
    ) -> WarehouseResult<data_diff::DataDiff>;
}
