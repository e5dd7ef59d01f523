//! The metadata store on SQLite: one database file in WAL mode, `synchronous=FULL` so every
//! committed method survives a crash or power loss, foreign keys on, and the schema's migrations
//! embedded in the binary and applied at open.
//!
//! SQL lives in this file next to the method it serves; `rows` turns result rows back into the
//! port's types, and `translate` turns driver errors into the port's meaning.

mod rows;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use offshoot_core::{
    UnixMillis,
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus, RepositoryName, RevisionStatus, RunStatus,
    StepStatus,
};
use offshoot_store::{
    Claimed, Deployment, DeploymentFilter, DeploymentId, Materialization, NewDeployment, NewRevision, NewRun, Revision, RevisionId, Run,
    RunFilter, RunId, RunStep, StepId, Store, StoreError, StoreResult,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, SqlSafeStr, Sqlite};

/// How long a write waits for another connection's write to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] backed by one SQLite database file. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode may lose the last commits on power loss; the port promises
            // that a returned `Ok` is durable.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .map_err(|error| StoreError::Backend(format!("opening {}: {error}", path.display())))?;
        migrator().run(&pool).await.map_err(|error| StoreError::Backend(format!("migrating {}: {error}", path.display())))?;
        Ok(SqliteStore { pool })
    }

    /// Waits for every connection to finish and closes them; the store is unusable afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The schema's migrations, embedded in the binary. The files follow `sqlx migrate`'s naming
/// (`<version>_<description>.sql`) and the same checksum, so `sqlx::migrate!` could replace this
/// list without re-running anything; it is not used because it needs sqlx's `derive` feature,
/// which builds a second sqlx and SQLite for the proc-macro.
fn migrator() -> Migrator {
    let migration = |version: i64, description: &'static str, sql: &'static str| {
        Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    Migrator::with_migrations(vec![
        migration(1, "initial", include_str!("../migrations/0001_initial.sql")),
        migration(2, "leases", include_str!("../migrations/0002_leases.sql")),
    ])
}

/// SQLite's `LIMIT -1` means no limit, as the port's `0` does.
fn sql_limit(limit: u32) -> i64 {
    if limit == 0 {
        -1
    } else {
        i64::from(limit)
    }
}

/// Translates a driver error into the port's meaning; `subject` names what was being read or
/// written ("the new revision").
fn translate(subject: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            StoreError::Conflict(format!("{subject}: {}", database.message()))
        }
        // Only writes that refer to other rows break foreign keys: the row referred to is missing.
        sqlx::Error::Database(database) if database.is_foreign_key_violation() => {
            StoreError::NotFound(format!("a row that {subject} refers to"))
        }
        sqlx::Error::RowNotFound => StoreError::NotFound(subject.to_owned()),
        _ => StoreError::Backend(format!("{subject}: {error}")),
    }
}

/// `Ok` when an `UPDATE` or `DELETE` by id touched its row.
fn touched(result: sqlx::sqlite::SqliteQueryResult, what: String) -> StoreResult<()> {
    if result.rows_affected() == 0 {
        return Err(StoreError::NotFound(what));
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Deployment> {
        let pull_request = new.pull_request.as_ref();
        let row = sqlx::query(
            "INSERT INTO deployments (repository, name, kind, branch, status, pull_request_id, pull_request_url,
                 pull_request_status, base_deployment, pinned, created_at, updated_at, last_push_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, FALSE, ?10, ?10, ?10)
             RETURNING *",
        )
        .bind(new.repository.as_str())
        .bind(new.name.as_str())
        .bind(new.kind.as_str())
        .bind(new.branch.as_str())
        .bind(DeploymentStatus::Open.as_str())
        .bind(pull_request.map(|p| p.id.as_str()))
        .bind(pull_request.map(|p| p.url.as_str()))
        .bind(pull_request.map(|p| p.status.as_str()))
        .bind(new.base_deployment.as_ref().map(DeploymentName::as_str))
        .bind(new.now)
        .fetch_one(&self.pool)
        .await
        .map_err(translate("the new deployment"))?;
        rows::deployment(&row)
    }

    async fn get_deployment(&self, id: DeploymentId) -> StoreResult<Deployment> {
        let row = sqlx::query("SELECT * FROM deployments WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("deployment"))?
            .ok_or_else(|| StoreError::NotFound(format!("deployment {}", id.0)))?;
        rows::deployment(&row)
    }

    async fn find_deployment(&self, repository: &RepositoryName, name: &DeploymentName) -> StoreResult<Option<Deployment>> {
        let row = sqlx::query("SELECT * FROM deployments WHERE repository = ? AND name = ?")
            .bind(repository.as_str())
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("deployment by name"))?;
        row.as_ref().map(rows::deployment).transpose()
    }

    async fn find_deployment_by_branch(
        &self,
        repository: &RepositoryName,
        branch: &BranchName,
    ) -> StoreResult<Option<Deployment>> {
        let row = sqlx::query("SELECT * FROM deployments WHERE repository = ? AND branch = ?")
            .bind(repository.as_str())
            .bind(branch.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("deployment by branch"))?;
        row.as_ref().map(rows::deployment).transpose()
    }

    async fn list_deployments(&self, filter: &DeploymentFilter) -> StoreResult<Vec<Deployment>> {
        let found = sqlx::query(
            "SELECT * FROM deployments
             WHERE (?1 IS NULL OR repository = ?1) AND (?2 OR status = ?3)
             ORDER BY CASE kind WHEN ?4 THEN 0 ELSE 1 END, name, repository",
        )
        .bind(filter.repository.as_ref().map(RepositoryName::as_str))
        .bind(filter.include_closed)
        .bind(DeploymentStatus::Open.as_str())
        .bind(DeploymentKind::Production.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(translate("deployments"))?;
        found.iter().map(rows::deployment).collect()
    }

    async fn update_deployment(&self, deployment: &Deployment) -> StoreResult<()> {
        let pull_request = deployment.pull_request.as_ref();
        let result = sqlx::query(
            "UPDATE deployments SET status = ?, pull_request_id = ?, pull_request_url = ?, pull_request_status = ?,
                 base_deployment = ?, pinned = ?, current_revision_id = ?, updated_at = ?, last_push_at = ?,
                 closed_at = ?, close_reason = ?
             WHERE id = ?",
        )
        .bind(deployment.status.as_str())
        .bind(pull_request.map(|p| p.id.as_str()))
        .bind(pull_request.map(|p| p.url.as_str()))
        .bind(pull_request.map(|p| p.status.as_str()))
        .bind(deployment.base_deployment.as_ref().map(DeploymentName::as_str))
        .bind(deployment.pinned)
        .bind(deployment.current_revision.map(|id| id.0))
        .bind(deployment.updated_at)
        .bind(deployment.last_push_at)
        .bind(deployment.closed_at)
        .bind(deployment.close_reason.as_deref())
        .bind(deployment.id.0)
        .execute(&self.pool)
        .await
        .map_err(translate("the deployment update"))?;
        touched(result, format!("deployment {}", deployment.id.0))
    }

    async fn delete_deployment(&self, id: DeploymentId) -> StoreResult<()> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(translate("the deletion"))?;
        // Children before parents: the foreign keys are checked, not cascaded.
        let children = [
            "DELETE FROM materializations WHERE deployment_id = ?",
            "DELETE FROM run_steps WHERE run_id IN (SELECT id FROM runs WHERE deployment_id = ?)",
            "DELETE FROM runs WHERE deployment_id = ?",
            "DELETE FROM revisions WHERE deployment_id = ?",
        ];
        for statement in children {
            sqlx::query(statement).bind(id.0).execute(&mut *transaction).await.map_err(translate("the deletion"))?;
        }
        let result = sqlx::query("DELETE FROM deployments WHERE id = ?")
            .bind(id.0)
            .execute(&mut *transaction)
            .await
            .map_err(translate("the deletion"))?;
        // On NotFound the transaction is dropped, which rolls it back (it deleted nothing anyway).
        touched(result, format!("deployment {}", id.0))?;
        transaction.commit().await.map_err(translate("the deletion"))
    }

    async fn insert_revision(&self, new: NewRevision) -> StoreResult<Revision> {
        // One statement numbers and inserts, so two pushes cannot take the same number.
        let row = sqlx::query(
            "INSERT INTO revisions (deployment_id, number, commit_sha, commit_message, commit_author_name,
                 commit_author_email, commit_time, status, error, asset_count, changed_count, impacted_count, queued_at)
             SELECT ?1, COALESCE(MAX(number), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, 0, ?9
             FROM revisions WHERE deployment_id = ?1
             RETURNING *",
        )
        .bind(new.deployment_id.0)
        .bind(new.commit.sha.as_str())
        .bind(new.commit.message.as_str())
        .bind(new.commit.author_name.as_str())
        .bind(new.commit.author_email.as_str())
        .bind(new.commit.time)
        .bind(new.status.as_str())
        .bind(new.error.as_deref())
        .bind(new.now)
        .fetch_one(&self.pool)
        .await
        .map_err(translate("the new revision"))?;
        rows::revision(&row)
    }

    async fn get_revision(&self, id: RevisionId) -> StoreResult<Revision> {
        let row = sqlx::query("SELECT * FROM revisions WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("revision"))?
            .ok_or_else(|| StoreError::NotFound(format!("revision {}", id.0)))?;
        rows::revision(&row)
    }

    async fn newest_revisions(&self) -> StoreResult<Vec<Revision>> {
        let found = sqlx::query(
            "SELECT r.* FROM revisions AS r
             JOIN (SELECT deployment_id, MAX(number) AS number FROM revisions GROUP BY deployment_id) AS newest
               ON newest.deployment_id = r.deployment_id AND newest.number = r.number",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(translate("newest revisions"))?;
        found.iter().map(rows::revision).collect()
    }

    async fn list_revisions(&self, deployment: DeploymentId, limit: u32) -> StoreResult<Vec<Revision>> {
        // The limit is written into the text: SQLite re-prepares a statement whose bound LIMIT
        // changes, so a bound one defeats the statement cache on the hottest read.
        let sql = format!("SELECT * FROM revisions WHERE deployment_id = ? ORDER BY number DESC LIMIT {}", sql_limit(limit));
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(deployment.0)
            .fetch_all(&self.pool)
            .await
            .map_err(translate("revisions"))?;
        found.iter().map(rows::revision).collect()
    }

    async fn find_revision_by_commit(&self, deployment: DeploymentId, commit: &CommitSha) -> StoreResult<Option<Revision>> {
        let row = sqlx::query("SELECT * FROM revisions WHERE deployment_id = ? AND commit_sha = ? ORDER BY number DESC LIMIT 1")
            .bind(deployment.0)
            .bind(commit.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("revision by commit"))?;
        row.as_ref().map(rows::revision).transpose()
    }

    async fn update_revision(&self, revision: &Revision) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE revisions SET status = ?, error = ?, diagnostics_json = ?, base_commit = ?, changes_json = ?,
                 asset_count = ?, changed_count = ?, impacted_count = ?, started_at = ?, finished_at = ?
             WHERE id = ?",
        )
        .bind(revision.status.as_str())
        .bind(revision.error.as_deref())
        .bind(revision.diagnostics_json.as_deref())
        .bind(revision.base_commit.as_ref().map(CommitSha::as_str))
        .bind(revision.changes_json.as_deref())
        .bind(i64::from(revision.asset_count))
        .bind(i64::from(revision.changed_count))
        .bind(i64::from(revision.impacted_count))
        .bind(revision.started_at)
        .bind(revision.finished_at)
        .bind(revision.id.0)
        .execute(&self.pool)
        .await
        .map_err(translate("the revision update"))?;
        touched(result, format!("revision {}", revision.id.0))
    }

    async fn revisions_with_status(&self, statuses: &[RevisionStatus]) -> StoreResult<Vec<Revision>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM revisions WHERE status IN (");
        let mut list = query.separated(", ");
        for status in statuses {
            list.push_bind(status.as_str());
        }
        query.push(") ORDER BY queued_at, id");
        let found = query.build().fetch_all(&self.pool).await.map_err(translate("revisions by status"))?;
        found.iter().map(rows::revision).collect()
    }

    async fn insert_run(&self, new: NewRun) -> StoreResult<Run> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(translate("the new run"))?;
        let row = sqlx::query(
            "INSERT INTO runs (deployment_id, revision_id, selection, status, created_at, cancel_requested)
             VALUES (?, ?, ?, ?, ?, FALSE)
             RETURNING *",
        )
        .bind(new.deployment_id.0)
        .bind(new.revision_id.0)
        .bind(new.selection.as_str())
        .bind(RunStatus::Queued.as_str())
        .bind(new.now)
        .fetch_one(&mut *transaction)
        .await
        .map_err(translate("the new run"))?;
        let run = rows::run(&row)?;
        for (position, asset_key) in new.steps.iter().enumerate() {
            let position = i64::try_from(position).expect("a Vec's length is at most isize::MAX");
            sqlx::query("INSERT INTO run_steps (run_id, position, asset_key, status, log) VALUES (?, ?, ?, ?, '')")
                .bind(run.id.0)
                .bind(position)
                .bind(asset_key.as_str())
                .bind(StepStatus::Pending.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(translate("the new run's steps"))?;
        }
        transaction.commit().await.map_err(translate("the new run"))?;
        Ok(run)
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Run> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("run"))?
            .ok_or_else(|| StoreError::NotFound(format!("run {}", id.0)))?;
        rows::run(&row)
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM runs WHERE TRUE");
        if let Some(deployment) = filter.deployment_id {
            query.push(" AND deployment_id = ").push_bind(deployment.0);
        }
        if !filter.statuses.is_empty() {
            query.push(" AND status IN (");
            let mut list = query.separated(", ");
            for status in &filter.statuses {
                list.push_bind(status.as_str());
            }
            query.push(")");
        }
        query.push(format!(" ORDER BY created_at DESC, id DESC LIMIT {}", sql_limit(filter.limit)));
        let found = query.build().fetch_all(&self.pool).await.map_err(translate("runs"))?;
        found.iter().map(rows::run).collect()
    }

    async fn update_run(&self, run: &Run) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE runs SET status = ?, error = ?, started_at = ?, finished_at = ?, cancel_requested = ?
             WHERE id = ?",
        )
        .bind(run.status.as_str())
        .bind(run.error.as_deref())
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(run.cancel_requested)
        .bind(run.id.0)
        .execute(&self.pool)
        .await
        .map_err(translate("the run update"))?;
        touched(result, format!("run {}", run.id.0))
    }

    async fn claim_revision(&self, id: RevisionId, owner: &str, now: UnixMillis, lease_until: UnixMillis) -> StoreResult<Option<Claimed<Revision>>> {
        self.claim("revisions", "deploying", "queued", id.0, owner, now, lease_until).await?.map(|(row, taken_over)| Ok(Claimed { row: rows::revision(&row)?, taken_over })).transpose()
    }

    async fn claim_run(&self, id: RunId, owner: &str, now: UnixMillis, lease_until: UnixMillis) -> StoreResult<Option<Claimed<Run>>> {
        self.claim("runs", "running", "queued", id.0, owner, now, lease_until).await?.map(|(row, taken_over)| Ok(Claimed { row: rows::run(&row)?, taken_over })).transpose()
    }

    async fn renew_leases(&self, owner: &str, lease_until: UnixMillis) -> StoreResult<u64> {
        let mut held = 0;
        for (table, status) in [("revisions", "deploying"), ("runs", "running")] {
            let result = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET lease_expires_at = ? WHERE lease_owner = ? AND status = ?"
            )))
            .bind(lease_until)
            .bind(owner)
            .bind(status)
            .execute(&self.pool)
            .await
            .map_err(translate("renewing leases"))?;
            held += result.rows_affected();
        }
        Ok(held)
    }

    async fn list_steps(&self, run: RunId) -> StoreResult<Vec<RunStep>> {
        let found = sqlx::query("SELECT * FROM run_steps WHERE run_id = ? ORDER BY position")
            .bind(run.0)
            .fetch_all(&self.pool)
            .await
            .map_err(translate("steps"))?;
        found.iter().map(rows::step).collect()
    }

    async fn update_step(&self, step: &RunStep) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE run_steps SET status = ?, started_at = ?, finished_at = ?, row_count = ?, error = ?
             WHERE id = ?",
        )
        .bind(step.status.as_str())
        .bind(step.started_at)
        .bind(step.finished_at)
        .bind(step.row_count)
        .bind(step.error.as_deref())
        .bind(step.id.0)
        .execute(&self.pool)
        .await
        .map_err(translate("the step update"))?;
        touched(result, format!("step {}", step.id.0))
    }

    async fn append_step_log(&self, step: StepId, text: &str) -> StoreResult<()> {
        let result = sqlx::query("UPDATE run_steps SET log = log || ? WHERE id = ?")
            .bind(text)
            .bind(step.0)
            .execute(&self.pool)
            .await
            .map_err(translate("the step's log"))?;
        touched(result, format!("step {}", step.0))
    }

    async fn record_materialization(&self, materialization: &Materialization) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO materializations (deployment_id, run_id, asset_key, commit_sha, row_count, duration_ms, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(materialization.deployment_id.0)
        .bind(materialization.run_id.0)
        .bind(materialization.asset_key.as_str())
        .bind(materialization.commit.as_str())
        .bind(materialization.row_count)
        .bind(materialization.duration_ms)
        .bind(materialization.created_at)
        .execute(&self.pool)
        .await
        .map_err(translate("the materialization"))?;
        Ok(())
    }

    async fn list_materializations(
        &self,
        deployment: DeploymentId,
        asset: Option<&AssetKey>,
        limit: u32,
    ) -> StoreResult<Vec<Materialization>> {
        let sql = format!(
            "SELECT * FROM materializations
             WHERE deployment_id = ?1 AND (?2 IS NULL OR asset_key = ?2)
             ORDER BY created_at DESC, id DESC LIMIT {}",
            sql_limit(limit)
        );
        let found = sqlx::query(AssertSqlSafe(sql))
        .bind(deployment.0)
        .bind(asset.map(AssetKey::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(translate("materializations"))?;
        found.iter().map(rows::materialization).collect()
    }
}


impl SqliteStore {
    /// The one claim rule for revisions and runs: `from` → `working` under a new lease, or a
    /// `working` row whose lease expired (or never had one) taken over. Returns the row as
    /// claimed and whether it was taken over; `None` if someone else holds it or it moved on.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        table: &'static str,
        working: &'static str,
        from: &'static str,
        id: i64,
        owner: &str,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> StoreResult<Option<(sqlx::sqlite::SqliteRow, bool)>> {
        let before: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!("SELECT status FROM {table} WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("the claim"))?;
        let Some(before) = before else { return Ok(None) };
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET status = ?, started_at = ?, lease_owner = ?, lease_expires_at = ?
             WHERE id = ? AND (status = ? OR (status = ? AND (lease_expires_at IS NULL OR lease_expires_at < ?)))
             RETURNING *"
        )))
        .bind(working)
        .bind(now)
        .bind(owner)
        .bind(lease_until)
        .bind(id)
        .bind(from)
        .bind(working)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(translate("the claim"))?;
        Ok(row.map(|row| (row, before == working)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-connection settings, which a second connection to the file cannot see.
    #[tokio::test]
    async fn connections_are_durable_and_check_foreign_keys() {
        let path = std::env::temp_dir().join(format!("offshoot-store-sqlite-{}-pragmas.db", std::process::id()));
        let store = SqliteStore::open(&path).await.expect("open a new database");
        let pragma = |name: &'static str| sqlx::query_scalar::<_, i64>(name).fetch_one(&store.pool);
        assert_eq!(pragma("PRAGMA synchronous").await.expect("synchronous"), 2, "FULL");
        assert_eq!(pragma("PRAGMA foreign_keys").await.expect("foreign_keys"), 1);
        assert_eq!(pragma("PRAGMA busy_timeout").await.expect("busy_timeout"), 5_000);
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}
