//! The metadata store on SQLite: one database file in WAL mode, `synchronous=FULL` so every
//! committed method survives a crash or power loss, foreign keys on, and the schema's migrations
//! embedded in the binary and applied at open.
//!
//! SQL lives in this file next to the method it serves; `rows` turns result rows back into the
//! port's types, and `translate` turns driver errors into the port's meaning.

mod rows;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use offshoot_core::{
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus,
    RepositoryName, RevisionStatus, RunStatus, StepStatus, UnixMillis, VariableScope,
};
use offshoot_store::{
    Activity, Applied, DataDiffKey, Deployment, DeploymentFilter, DeploymentId, Intake, IntakeId,
    LifecycleRecord, LifecycleWrite, Materialization, MaterializationId, NewDeployment, NewIntake,
    NewTick, Provenance, RecordedMaterialization, Revision, RevisionId, Run, RunFilter, RunId,
    RunStep, ScheduleState, ScheduleTick, StepId, Store, StoreError, StoreResult, StoredDataDiff,
    StoredVariable, Teardown, TickId, TickStatus,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row as _, SqlSafeStr, Sqlite, SqliteConnection};

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
        migrator().run(&pool).await.map_err(|error| {
            StoreError::Backend(format!("migrating {}: {error}", path.display()))
        })?;
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
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(1, "initial", include_str!("../migrations/0001_initial.sql")),
        migration(2, "leases", include_str!("../migrations/0002_leases.sql")),
        migration(3, "lifecycle", include_str!("../migrations/0003_lifecycle.sql")),
        migration(4, "provenance", include_str!("../migrations/0004_provenance.sql")),
        migration(5, "catch_up", include_str!("../migrations/0005_catch_up.sql")),
        migration(6, "schedules", include_str!("../migrations/0006_schedules.sql")),
        migration(7, "dagster_plus", include_str!("../migrations/0007_dagster_plus.sql")),
        migration(8, "data_diffs", include_str!("../migrations/0008_data_diffs.sql")),
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
    async fn ensure_deployment_within(
        &self,
        new: NewDeployment,
        max_open: usize,
    ) -> StoreResult<Option<Deployment>> {
        if let Some(existing) = self.find_deployment_by_branch(&new.repository, &new.branch).await?
        {
            return offshoot_store::existing_deployment(&new, Some(existing)).map(Some);
        }
        let pull_request = new.pull_request.as_ref();
        let mut transaction = self.pool.begin().await.map_err(translate("the new deployment"))?;
        // Counted and inserted in one statement, inside the transaction: no other writer can
        // open a branch deployment between the count and the insert.
        let inserted = sqlx::query(
            "INSERT INTO deployments (repository, name, kind, branch, status, pull_request_id, pull_request_url,
                 pull_request_status, base_deployment, pinned, created_at, updated_at, last_push_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, FALSE, ?10, ?10, ?10
             WHERE (SELECT count(*) FROM deployments WHERE kind = ?3 AND status = ?5) < ?11
             ON CONFLICT DO NOTHING
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
        .bind(i64::try_from(max_open).unwrap_or(i64::MAX))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(translate("the new deployment"))?;
        transaction.commit().await.map_err(translate("the new deployment"))?;
        if let Some(row) = inserted {
            return rows::deployment(&row).map(Some);
        }
        offshoot_store::not_inserted_within(self, &new, max_open).await
    }

    async fn ensure_deployment(&self, new: NewDeployment) -> StoreResult<Deployment> {
        let pull_request = new.pull_request.as_ref();
        // DO NOTHING on either unique rule: a concurrent first delivery of the branch inserted it
        // (then it is returned below), or another branch has the name (a conflict).
        let inserted = sqlx::query(
            "INSERT INTO deployments (repository, name, kind, branch, status, pull_request_id, pull_request_url,
                 pull_request_status, base_deployment, pinned, created_at, updated_at, last_push_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, FALSE, ?10, ?10, ?10)
             ON CONFLICT DO NOTHING
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
        .fetch_optional(&self.pool)
        .await
        .map_err(translate("the new deployment"))?;
        if let Some(row) = inserted {
            return rows::deployment(&row);
        }
        let existing = self.find_deployment_by_branch(&new.repository, &new.branch).await?;
        offshoot_store::existing_deployment(&new, existing)
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

    async fn find_deployment(
        &self,
        repository: &RepositoryName,
        name: &DeploymentName,
    ) -> StoreResult<Option<Deployment>> {
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

    async fn set_pinned(&self, id: DeploymentId, pinned: bool, now: UnixMillis) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE deployments SET pinned = ?, version = version + 1, updated_at = ? WHERE id = ?",
        )
        .bind(pinned)
        .bind(now)
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(translate("pinning"))?;
        touched(result, format!("deployment {}", id.0))
    }

    async fn lifecycle(&self, id: DeploymentId) -> StoreResult<LifecycleRecord> {
        // One read transaction: a consistent snapshot (WAL); the version check of `apply` would
        // catch a torn read anyway.
        let mut transaction = self.pool.begin().await.map_err(translate("the lifecycle"))?;
        let row = sqlx::query("SELECT * FROM deployments WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(translate("deployment"))?
            .ok_or_else(|| StoreError::NotFound(format!("deployment {}", id.0)))?;
        let deployment = rows::deployment(&row)?;
        let revisions = sqlx::query(
            "SELECT * FROM revisions WHERE deployment_id = ?1
               AND (status IN ('queued', 'deploying') OR id = ?2 OR id = ?3)
             ORDER BY number",
        )
        .bind(id.0)
        .bind(deployment.current_revision.map(|r| r.0))
        .bind(deployment.head_revision.map(|r| r.0))
        .fetch_all(&mut *transaction)
        .await
        .map_err(translate("the lifecycle's revisions"))?;
        let runs = sqlx::query("SELECT * FROM runs WHERE deployment_id = ? AND status IN ('queued', 'running') ORDER BY id")
            .bind(id.0)
            .fetch_all(&mut *transaction)
            .await
            .map_err(translate("the lifecycle's runs"))?;
        transaction.commit().await.map_err(translate("the lifecycle"))?;
        Ok(LifecycleRecord {
            deployment,
            revisions: revisions.iter().map(rows::revision).collect::<StoreResult<_>>()?,
            runs: runs.iter().map(rows::run).collect::<StoreResult<_>>()?,
        })
    }

    async fn apply(&self, write: LifecycleWrite) -> StoreResult<Applied> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(translate("the lifecycle write"))?;
        let bumped: Option<i64> =
            sqlx::query_scalar("UPDATE deployments SET version = version + 1, updated_at = ? WHERE id = ? AND version = ? RETURNING version")
                .bind(write.now)
                .bind(write.deployment.0)
                .bind(write.version)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(translate("the lifecycle write"))?;
        let Some(version) = bumped else {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM deployments WHERE id = ?")
                .bind(write.deployment.0)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(translate("the lifecycle write"))?;
            return match exists {
                Some(_) => Ok(Applied::Stale),
                None => Err(StoreError::NotFound(format!("deployment {}", write.deployment.0))),
            };
        };
        if !write.run_limits.is_empty() && write.runs.iter().any(|r| r.status == RunStatus::Running)
        {
            // BEGIN IMMEDIATE holds the write lock: the count below and the claim commit together.
            if let Some(reason) = tag_limit_reached_in(&mut transaction, &write).await? {
                return Ok(Applied::Limited(reason));
            }
        }
        let (revisions, runs) = apply_in(&mut transaction, &write).await?;
        transaction.commit().await.map_err(translate("the lifecycle write"))?;
        Ok(Applied::Done { version, revisions, runs })
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

    async fn list_revisions(
        &self,
        deployment: DeploymentId,
        limit: u32,
    ) -> StoreResult<Vec<Revision>> {
        // The limit is written into the text: SQLite re-prepares a statement whose bound LIMIT
        // changes, so a bound one defeats the statement cache on the hottest read.
        let sql = format!(
            "SELECT * FROM revisions WHERE deployment_id = ? ORDER BY number DESC LIMIT {}",
            sql_limit(limit)
        );
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(deployment.0)
            .fetch_all(&self.pool)
            .await
            .map_err(translate("revisions"))?;
        found.iter().map(rows::revision).collect()
    }

    async fn find_revision_by_commit(
        &self,
        deployment: DeploymentId,
        commit: &CommitSha,
    ) -> StoreResult<Option<Revision>> {
        let row = sqlx::query("SELECT * FROM revisions WHERE deployment_id = ? AND commit_sha = ? ORDER BY number DESC LIMIT 1")
            .bind(deployment.0)
            .bind(commit.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("revision by commit"))?;
        row.as_ref().map(rows::revision).transpose()
    }

    async fn revisions_with_status(
        &self,
        statuses: &[RevisionStatus],
    ) -> StoreResult<Vec<Revision>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM revisions WHERE status IN (");
        let mut list = query.separated(", ");
        for status in statuses {
            list.push_bind(status.as_str());
        }
        query.push(") ORDER BY queued_at, id");
        let found =
            query.build().fetch_all(&self.pool).await.map_err(translate("revisions by status"))?;
        found.iter().map(rows::revision).collect()
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

    async fn renew_leases(&self, owner: &str, lease_until: UnixMillis) -> StoreResult<u64> {
        let mut held = 0;
        for (table, lease, status_column, status) in offshoot_store::LEASED_WORK {
            let result = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET {lease}_expires_at = ? WHERE {lease}_owner = ? AND {status_column} = ?"
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
        // The same write as a batch of one, with nothing appended to the log.
        self.update_steps(&[(step, "")]).await
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

    async fn update_steps(&self, steps: &[(&RunStep, &str)]) -> StoreResult<()> {
        let mut transaction = self.pool.begin().await.map_err(translate("the step updates"))?;
        for (step, log) in steps {
            let result = sqlx::query(
                "UPDATE run_steps SET status = ?, started_at = ?, finished_at = ?, row_count = ?, error = ?, action = ?, promoted_from = ?, log = log || ? WHERE id = ?",
            )
            .bind(step.status.as_str())
            .bind(step.started_at)
            .bind(step.finished_at)
            .bind(step.row_count)
            .bind(step.error.as_deref())
            .bind(step.action.as_deref())
            .bind(step.promoted_from.map(|m| m.0))
            .bind(*log)
            .bind(step.id.0)
            .execute(&mut *transaction)
            .await
            .map_err(translate("the step updates"))?;
            touched(result, format!("step {}", step.id.0))?;
        }
        transaction.commit().await.map_err(translate("the step updates"))
    }

    async fn activity(&self) -> StoreResult<Activity> {
        let [deployments, runs] = offshoot_store::rows::activity_queries();
        // One read transaction: the deployments and the runs of one moment.
        let mut transaction = self.pool.begin().await.map_err(translate("activity"))?;
        let deployments = sqlx::query(AssertSqlSafe(deployments))
            .fetch_all(&mut *transaction)
            .await
            .map_err(translate("activity"))?;
        let runs = sqlx::query(AssertSqlSafe(runs))
            .fetch_all(&mut *transaction)
            .await
            .map_err(translate("activity"))?;
        transaction.commit().await.map_err(translate("activity"))?;
        let deployments =
            deployments.iter().map(rows::deployment_version).collect::<StoreResult<Vec<_>>>()?;
        let runs = runs.iter().map(rows::activity_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(offshoot_store::rows::activity(deployments, runs))
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

    async fn record_provenance(
        &self,
        materialization: &Materialization,
        provenance: &Provenance,
    ) -> StoreResult<MaterializationId> {
        let mut transaction = self.pool.begin().await.map_err(translate("the materialization"))?;
        let id = insert_provenance(&mut transaction, materialization, provenance).await?;
        transaction.commit().await.map_err(translate("the materialization"))?;
        Ok(id)
    }

    async fn finish_step(
        &self,
        step: &RunStep,
        log: &str,
        built: Option<(&Materialization, &Provenance)>,
    ) -> StoreResult<Option<MaterializationId>> {
        let mut transaction = self.pool.begin().await.map_err(translate("the step update"))?;
        let result = sqlx::query(SQL_FINISH_STEP)
            .bind(step.status.as_str())
            .bind(step.started_at)
            .bind(step.finished_at)
            .bind(step.row_count)
            .bind(step.error.as_deref())
            .bind(log)
            .bind(step.id.0)
            .execute(&mut *transaction)
            .await
            .map_err(translate("the step update"))?;
        touched(result, format!("step {}", step.id.0))?;
        let id = match built {
            Some((materialization, provenance)) => {
                Some(insert_provenance(&mut transaction, materialization, provenance).await?)
            }
            None => None,
        };
        transaction.commit().await.map_err(translate("the step update"))?;
        Ok(id)
    }

    async fn current_materializations(
        &self,
        deployment: DeploymentId,
    ) -> StoreResult<Vec<RecordedMaterialization>> {
        let found = sqlx::query(
            "SELECT m.* FROM materializations AS m
             WHERE m.deployment_id = ?1 AND m.id = (SELECT max(id) FROM materializations WHERE deployment_id = ?1 AND asset_key = m.asset_key)",
        )
        .bind(deployment.0)
        .fetch_all(&self.pool)
        .await
        .map_err(translate("materializations"))?;
        let reads = sqlx::query(
            "SELECT r.* FROM materialization_reads AS r JOIN materializations AS m ON m.id = r.materialization_id
             WHERE m.deployment_id = ?1 AND m.id = (SELECT max(id) FROM materializations WHERE deployment_id = ?1 AND asset_key = m.asset_key)",
        )
        .bind(deployment.0)
        .fetch_all(&self.pool)
        .await
        .map_err(translate("materialization reads"))?;
        let mut current =
            found.iter().map(rows::recorded_materialization).collect::<StoreResult<Vec<_>>>()?;
        let reads = reads.iter().map(rows::upstream_read).collect::<StoreResult<Vec<_>>>()?;
        offshoot_store::rows::attach_reads(&mut current, reads);
        current.sort_by(|a, b| a.materialization.asset_key.cmp(&b.materialization.asset_key));
        Ok(current)
    }

    async fn current_materialization_ids(
        &self,
        deployment: DeploymentId,
        keys: Option<&BTreeSet<AssetKey>>,
    ) -> StoreResult<Vec<(AssetKey, offshoot_store::ReadMaterialization)>> {
        let found = match keys {
            None => sqlx::query(
                "SELECT m.asset_key, m.id, m.deployment_id, m.run_id FROM materializations AS m
                 WHERE m.deployment_id = ?1
                 AND m.id = (SELECT max(id) FROM materializations WHERE deployment_id = ?1 AND asset_key = m.asset_key)",
            )
            .bind(deployment.0),
            // One index search per key asked for, however many the deployment has.
            Some(keys) => sqlx::query(
                "SELECT m.asset_key, m.id, m.deployment_id, m.run_id FROM json_each(?2) AS k
                 JOIN materializations AS m
                 ON m.id = (SELECT max(id) FROM materializations WHERE deployment_id = ?1 AND asset_key = k.value)",
            )
            .bind(deployment.0)
            .bind(
                serde_json::Value::from(keys.iter().map(AssetKey::as_str).collect::<Vec<_>>())
                    .to_string(),
            ),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(translate("materializations"))?;
        let mut ids =
            found.iter().map(rows::materialization_id).collect::<StoreResult<Vec<_>>>()?;
        // By key as Rust orders it, whatever the database's collation.
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(ids)
    }

    async fn get_materialization(
        &self,
        id: MaterializationId,
    ) -> StoreResult<RecordedMaterialization> {
        let found = sqlx::query("SELECT * FROM materializations WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("the materialization"))?
            .ok_or_else(|| StoreError::NotFound(format!("materialization {}", id.0)))?;
        let reads = sqlx::query("SELECT * FROM materialization_reads WHERE materialization_id = ?")
            .bind(id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(translate("materialization reads"))?;
        let mut one = [rows::recorded_materialization(&found)?];
        let reads = reads.iter().map(rows::upstream_read).collect::<StoreResult<Vec<_>>>()?;
        offshoot_store::rows::attach_reads(&mut one, reads);
        let [recorded] = one;
        Ok(recorded)
    }

    async fn materialization_before(
        &self,
        deployment: DeploymentId,
        asset: &AssetKey,
        before: MaterializationId,
    ) -> StoreResult<Option<RecordedMaterialization>> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT max(id) FROM materializations WHERE deployment_id = ? AND asset_key = ? AND id < ?",
        )
        .bind(deployment.0)
        .bind(asset.as_str())
        .bind(before.0)
        .fetch_one(&self.pool)
        .await
        .map_err(translate("materializations"))?;
        match id {
            Some(id) => self.get_materialization(MaterializationId(id)).await.map(Some),
            None => Ok(None),
        }
    }

    async fn cached_data_diff(&self, key: &DataDiffKey) -> StoreResult<Option<StoredDataDiff>> {
        let found = sqlx::query(
            "SELECT diff_json, computed_at FROM data_diffs
             WHERE production_materialization_id = ? AND branch_materialization_id = ? AND key_columns = ?
               AND tolerance = ? AND row_limit = ? AND sample = ? AND format_version = ?",
        )
        .bind(key.production.0)
        .bind(key.branch.0)
        .bind(offshoot_store::key_columns_text(key.key_columns.as_deref()))
        .bind(key.tolerance)
        .bind(data_diff_row_limit(key)?)
        .bind(i64::from(key.sample))
        .bind(i64::from(key.format_version))
        .fetch_optional(&self.pool)
        .await
        .map_err(translate("the cached data diff"))?;
        found.as_ref().map(rows::stored_data_diff).transpose()
    }

    async fn cache_data_diff(
        &self,
        key: &DataDiffKey,
        diff: &StoredDataDiff,
        keep: u32,
    ) -> StoreResult<()> {
        let mut transaction = self.pool.begin().await.map_err(translate("the data diff"))?;
        sqlx::query(
            "INSERT INTO data_diffs (production_materialization_id, branch_materialization_id, key_columns, tolerance,
                 row_limit, sample, format_version, diff_json, computed_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (production_materialization_id, branch_materialization_id, key_columns, tolerance, row_limit, sample, format_version)
             DO UPDATE SET diff_json = excluded.diff_json, computed_at = excluded.computed_at",
        )
        .bind(key.production.0)
        .bind(key.branch.0)
        .bind(offshoot_store::key_columns_text(key.key_columns.as_deref()))
        .bind(key.tolerance)
        .bind(data_diff_row_limit(key)?)
        .bind(i64::from(key.sample))
        .bind(i64::from(key.format_version))
        .bind(&diff.diff_json)
        .bind(diff.computed_at)
        .execute(&mut *transaction)
        .await
        .map_err(translate("the data diff"))?;
        // A materialization is current while no later one of its deployment's asset exists.
        for side in ["production_materialization_id", "branch_materialization_id"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM data_diffs WHERE NOT EXISTS (
                     SELECT 1 FROM materializations AS m WHERE m.id = data_diffs.{side}
                       AND NOT EXISTS (SELECT 1 FROM materializations AS later
                                       WHERE later.deployment_id = m.deployment_id AND later.asset_key = m.asset_key AND later.id > m.id))"
            )))
            .execute(&mut *transaction)
            .await
            .map_err(translate("the data diff cache"))?;
        }
        sqlx::query(
            "DELETE FROM data_diffs WHERE computed_at < (
                 SELECT min(computed_at) FROM (SELECT computed_at FROM data_diffs ORDER BY computed_at DESC LIMIT ?) AS kept)",
        )
        .bind(i64::from(keep))
        .execute(&mut *transaction)
        .await
        .map_err(translate("the data diff cache"))?;
        transaction.commit().await.map_err(translate("the data diff"))?;
        Ok(())
    }

    async fn record_intake(&self, new: NewIntake) -> StoreResult<Option<Intake>> {
        let row = sqlx::query(
            "INSERT INTO intake (source, delivery, repository, payload, received_by, received_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING
             RETURNING *",
        )
        .bind(new.source.as_str())
        .bind(new.delivery.as_deref())
        .bind(new.repository.as_str())
        .bind(new.payload.as_str())
        .bind(new.received_by.as_str())
        .bind(new.now)
        .fetch_optional(&self.pool)
        .await
        .map_err(translate("the intake"))?;
        row.as_ref().map(rows::intake).transpose()
    }

    async fn pending_intake(&self) -> StoreResult<Vec<Intake>> {
        let found = sqlx::query("SELECT * FROM intake WHERE done_at IS NULL ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(translate("the pending intake"))?;
        found.iter().map(rows::intake).collect()
    }

    async fn finish_intake(&self, id: IntakeId, now: UnixMillis) -> StoreResult<()> {
        let result = sqlx::query("UPDATE intake SET done_at = ? WHERE id = ?")
            .bind(now)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(translate("the intake"))?;
        touched(result, format!("intake {}", id.0))
    }

    async fn schedule_states(&self, deployment: DeploymentId) -> StoreResult<Vec<ScheduleState>> {
        let found =
            sqlx::query("SELECT * FROM schedule_states WHERE deployment_id = ? ORDER BY schedule")
                .bind(deployment.0)
                .fetch_all(&self.pool)
                .await
                .map_err(translate("the schedules"))?;
        found.iter().map(rows::schedule_state).collect()
    }

    async fn ensure_schedule_state(
        &self,
        deployment: DeploymentId,
        schedule: &str,
        enabled: bool,
        since: UnixMillis,
    ) -> StoreResult<ScheduleState> {
        sqlx::query(
            "INSERT INTO schedule_states (deployment_id, schedule, enabled, since, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(deployment.0)
        .bind(schedule)
        .bind(enabled)
        .bind(since)
        .bind(since)
        .execute(&self.pool)
        .await
        .map_err(translate("the schedule"))?;
        let row =
            sqlx::query("SELECT * FROM schedule_states WHERE deployment_id = ? AND schedule = ?")
                .bind(deployment.0)
                .bind(schedule)
                .fetch_one(&self.pool)
                .await
                .map_err(translate("the schedule"))?;
        rows::schedule_state(&row)
    }

    async fn set_schedule_enabled(
        &self,
        deployment: DeploymentId,
        schedule: &str,
        enabled: bool,
        now: UnixMillis,
    ) -> StoreResult<ScheduleState> {
        let row = sqlx::query(
            "INSERT INTO schedule_states (deployment_id, schedule, enabled, since, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (deployment_id, schedule) DO UPDATE SET
                 since = CASE WHEN excluded.enabled AND NOT schedule_states.enabled
                              THEN excluded.since ELSE schedule_states.since END,
                 enabled = excluded.enabled,
                 updated_at = excluded.updated_at
             RETURNING *",
        )
        .bind(deployment.0)
        .bind(schedule)
        .bind(enabled)
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(translate("the schedule"))?;
        rows::schedule_state(&row)
    }

    async fn claim_tick(&self, new: NewTick) -> StoreResult<Option<ScheduleTick>> {
        let missed = i64::try_from(new.missed).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "INSERT INTO schedule_ticks (deployment_id, schedule, tick_at, manual, missed, status,
                 claimed_by, claimed_at)
             VALUES (?, ?, ?, ?, ?, 'claimed', ?, ?)
             ON CONFLICT DO NOTHING
             RETURNING *",
        )
        .bind(new.deployment_id.0)
        .bind(new.schedule.as_str())
        .bind(new.tick_at)
        .bind(new.manual)
        .bind(missed)
        .bind(new.claimed_by.as_str())
        .bind(new.now)
        .fetch_optional(&self.pool)
        .await
        .map_err(translate("the tick"))?;
        row.as_ref().map(rows::schedule_tick).transpose()
    }

    async fn finish_tick(
        &self,
        id: TickId,
        status: TickStatus,
        run: Option<RunId>,
        message: Option<&str>,
    ) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE schedule_ticks SET status = ?, run_id = ?, message = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(run.map(|r| r.0))
        .bind(message)
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(translate("the tick"))?;
        touched(result, format!("tick {}", id.0))
    }

    async fn list_ticks(
        &self,
        deployment: DeploymentId,
        schedule: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleTick>> {
        let limit = if limit == 0 { -1 } else { i64::from(limit) };
        let found = sqlx::query(
            "SELECT * FROM schedule_ticks WHERE deployment_id = ? AND (? IS NULL OR schedule = ?)
             ORDER BY tick_at DESC, id DESC LIMIT ?",
        )
        .bind(deployment.0)
        .bind(schedule)
        .bind(schedule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(translate("the ticks"))?;
        found.iter().map(rows::schedule_tick).collect()
    }

    async fn abandon_claimed_ticks(&self, claimed_by: &str, message: &str) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE schedule_ticks SET status = 'failed', message = ? WHERE claimed_by = ? AND status = 'claimed'",
        )
        .bind(message)
        .bind(claimed_by)
        .execute(&self.pool)
        .await
        .map_err(translate("the ticks"))?;
        Ok(result.rows_affected())
    }

    async fn last_tick_run(
        &self,
        deployment: DeploymentId,
        schedule: &str,
    ) -> StoreResult<Option<RunId>> {
        let row = sqlx::query(
            "SELECT run_id FROM schedule_ticks
             WHERE deployment_id = ? AND schedule = ? AND run_id IS NOT NULL
             ORDER BY tick_at DESC, id DESC LIMIT 1",
        )
        .bind(deployment.0)
        .bind(schedule)
        .fetch_optional(&self.pool)
        .await
        .map_err(translate("the ticks"))?;
        match row {
            None => Ok(None),
            Some(row) => row
                .try_get::<i64, _>("run_id")
                .map(|id| Some(RunId(id)))
                .map_err(|e| StoreError::Backend(format!("reading a tick's run: {e}"))),
        }
    }

    async fn last_scheduled_tick(
        &self,
        deployment: DeploymentId,
        schedule: &str,
    ) -> StoreResult<Option<UnixMillis>> {
        let row = sqlx::query(
            "SELECT MAX(tick_at) AS tick_at FROM schedule_ticks
             WHERE deployment_id = ? AND schedule = ? AND NOT manual",
        )
        .bind(deployment.0)
        .bind(schedule)
        .fetch_one(&self.pool)
        .await
        .map_err(translate("the ticks"))?;
        row.try_get::<Option<i64>, _>("tick_at")
            .map_err(|e| StoreError::Backend(format!("reading the last tick: {e}")))
    }
    async fn set_variable(&self, variable: &StoredVariable) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO variables (repository, name, scope, branch, value, secret, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (repository, name, scope, branch) DO UPDATE SET
                 value = excluded.value, secret = excluded.secret, updated_at = excluded.updated_at",
        )
        .bind(variable.repository.as_str())
        .bind(&variable.name)
        .bind(variable.scope.as_str())
        .bind(variable.branch.as_ref().map_or("", BranchName::as_str))
        .bind(&variable.value)
        .bind(variable.secret)
        .bind(variable.updated_at)
        .execute(&self.pool)
        .await
        .map_err(translate("the variable"))?;
        Ok(())
    }

    async fn unset_variable(
        &self,
        repository: &RepositoryName,
        name: &str,
        scope: VariableScope,
        branch: Option<&BranchName>,
    ) -> StoreResult<()> {
        let result = sqlx::query(
            "DELETE FROM variables WHERE repository = ? AND name = ? AND scope = ? AND branch = ?",
        )
        .bind(repository.as_str())
        .bind(name)
        .bind(scope.as_str())
        .bind(branch.map_or("", BranchName::as_str))
        .execute(&self.pool)
        .await
        .map_err(translate("the variable"))?;
        touched(result, format!("variable {name} ({scope})"))
    }

    async fn list_variables(
        &self,
        repository: Option<&RepositoryName>,
    ) -> StoreResult<Vec<StoredVariable>> {
        let found = sqlx::query("SELECT * FROM variables WHERE ?1 IS NULL OR repository = ?1")
            .bind(repository.map(RepositoryName::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(translate("the variables"))?;
        let mut variables = found.iter().map(rows::variable).collect::<StoreResult<Vec<_>>>()?;
        // Sorted here, not by SQL, so both backends order text the same (bytes, not a locale).
        variables.sort_by(|a, b| {
            (
                a.repository.as_str(),
                a.name.as_str(),
                a.scope,
                a.branch.as_ref().map(BranchName::as_str),
            )
                .cmp(&(
                    b.repository.as_str(),
                    b.name.as_str(),
                    b.scope,
                    b.branch.as_ref().map(BranchName::as_str),
                ))
        });
        Ok(variables)
    }
}

/// Whether a run this write starts would exceed a tag limit, counted over the running runs.
async fn tag_limit_reached_in(
    connection: &mut SqliteConnection,
    write: &LifecycleWrite,
) -> StoreResult<Option<String>> {
    let found = sqlx::query("SELECT * FROM runs WHERE status = ?")
        .bind(RunStatus::Running.as_str())
        .fetch_all(&mut *connection)
        .await
        .map_err(translate("the running runs' tags"))?;
    let found = found.iter().map(rows::run).collect::<StoreResult<Vec<Run>>>()?;
    let running_ids: Vec<i64> = found.iter().map(|run| run.id.0).collect();
    let mut running: Vec<Vec<(String, String)>> = found.into_iter().map(|run| run.tags).collect();
    for patch in write.runs.iter().filter(|r| r.status == RunStatus::Running) {
        if running_ids.contains(&patch.id.0) {
            continue;
        }
        let text: Option<String> = sqlx::query_scalar("SELECT tags FROM runs WHERE id = ?")
            .bind(patch.id.0)
            .fetch_optional(&mut *connection)
            .await
            .map_err(translate("the claimed run's tags"))?;
        let claimed = text.as_deref().and_then(offshoot_store::tags_from_text).unwrap_or_default();
        if let Some(reason) =
            offshoot_store::tag_limit_reached(&claimed, &running, &write.run_limits)
        {
            return Ok(Some(reason));
        }
        running.push(claimed);
    }
    Ok(None)
}

/// The writes of one lifecycle decision, inside the transaction that bumped the version.
async fn apply_in(
    connection: &mut SqliteConnection,
    write: &LifecycleWrite,
) -> StoreResult<(Vec<Revision>, Vec<Run>)> {
    let deployment = write.deployment.0;
    let now = write.now;
    let mut revisions = Vec::with_capacity(write.new_revisions.len());
    for new in &write.new_revisions {
        let finished = new.status.is_finished().then_some(now);
        let row = sqlx::query(
            "INSERT INTO revisions (deployment_id, number, commit_sha, commit_message, commit_author_name,
                 commit_author_email, commit_time, status, error, asset_count, changed_count, impacted_count, queued_at, finished_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?)
             RETURNING *",
        )
        .bind(deployment)
        .bind(i64::from(new.number))
        .bind(new.commit.sha.as_str())
        .bind(new.commit.message.as_str())
        .bind(new.commit.author_name.as_str())
        .bind(new.commit.author_email.as_str())
        .bind(new.commit.time)
        .bind(new.status.as_str())
        .bind(new.error.as_deref())
        .bind(now)
        .bind(finished)
        .fetch_one(&mut *connection)
        .await
        .map_err(translate("the new revision"))?;
        revisions.push(rows::revision(&row)?);
    }
    for patch in &write.revisions {
        let result = sqlx::query(
            "UPDATE revisions SET status = ?1, error = COALESCE(?2, error),
                 started_at = CASE WHEN ?3 THEN ?4 ELSE started_at END,
                 finished_at = CASE WHEN ?5 THEN ?4 ELSE finished_at END,
                 lease_owner = CASE WHEN ?5 THEN lease_owner ELSE ?6 END, lease_expires_at = CASE WHEN ?5 THEN lease_expires_at ELSE ?7 END
             WHERE deployment_id = ?8 AND number = ?9",
        )
        .bind(patch.status.as_str())
        .bind(patch.error.as_deref())
        .bind(patch.status == RevisionStatus::Deploying)
        .bind(now)
        .bind(patch.status.is_finished())
        .bind(patch.lease.as_ref().map(|l| l.owner.as_str()))
        .bind(patch.lease.as_ref().map(|l| l.until))
        .bind(deployment)
        .bind(i64::from(patch.number))
        .execute(&mut *connection)
        .await
        .map_err(translate("the revision update"))?;
        touched(result, format!("revision {} of deployment {deployment}", patch.number))?;
        if let Some(output) = &patch.output {
            sqlx::query(
                "UPDATE revisions SET diagnostics_json = ?, base_commit = ?, changes_json = ?, asset_count = ?, changed_count = ?,
                     impacted_count = ?
                 WHERE deployment_id = ? AND number = ?",
            )
            .bind(output.diagnostics_json.as_deref())
            .bind(output.base_commit.as_ref().map(CommitSha::as_str))
            .bind(output.changes_json.as_deref())
            .bind(i64::from(output.asset_count))
            .bind(i64::from(output.changed_count))
            .bind(i64::from(output.impacted_count))
            .bind(deployment)
            .bind(i64::from(patch.number))
            .execute(&mut *connection)
            .await
            .map_err(translate("the revision's output"))?;
        }
    }
    let mut runs = Vec::with_capacity(write.new_runs.len());
    for new in &write.new_runs {
        let revision = revision_id(connection, deployment, new.revision).await?;
        let row = sqlx::query(
            "INSERT INTO runs (deployment_id, revision_id, selection, status, created_at, cancel_requested, tags)
             VALUES (?, ?, ?, ?, ?, FALSE, ?)
             RETURNING *",
        )
        .bind(deployment)
        .bind(revision)
        .bind(new.selection.as_str())
        .bind(RunStatus::Queued.as_str())
        .bind(now)
        .bind(offshoot_store::tags_text(&new.tags))
        .fetch_one(&mut *connection)
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
                .execute(&mut *connection)
                .await
                .map_err(translate("the new run's steps"))?;
        }
        runs.push(run);
    }
    for patch in &write.runs {
        let result = sqlx::query(
            // `status` on the right is the old one: a run that stays running (a cancel request)
            // keeps its start.
            "UPDATE runs SET status = ?1, cancel_requested = ?2, error = COALESCE(?3, error),
                 started_at = CASE WHEN ?4 AND status <> ?1 THEN ?5 ELSE started_at END,
                 finished_at = CASE WHEN ?6 THEN ?5 ELSE finished_at END,
                 lease_owner = CASE WHEN ?6 THEN lease_owner ELSE ?7 END, lease_expires_at = CASE WHEN ?6 THEN lease_expires_at ELSE ?8 END
             WHERE id = ?9 AND deployment_id = ?10",
        )
        .bind(patch.status.as_str())
        .bind(patch.cancel_requested)
        .bind(patch.error.as_deref())
        .bind(patch.status == RunStatus::Running)
        .bind(now)
        .bind(patch.status.is_finished())
        .bind(patch.lease.as_ref().map(|l| l.owner.as_str()))
        .bind(patch.lease.as_ref().map(|l| l.until))
        .bind(patch.id.0)
        .bind(deployment)
        .execute(&mut *connection)
        .await
        .map_err(translate("the run update"))?;
        touched(result, format!("run {} of deployment {deployment}", patch.id.0))?;
        for (from, to, error) in offshoot_store::step_endings(patch.steps) {
            sqlx::query("UPDATE run_steps SET status = ?, finished_at = ?, error = COALESCE(?, error) WHERE run_id = ? AND status = ?")
                .bind(to.as_str())
                .bind(now)
                .bind(*error)
                .bind(patch.id.0)
                .bind(from.as_str())
                .execute(&mut *connection)
                .await
                .map_err(translate("the run's steps"))?;
        }
    }
    patch_deployment(connection, write).await?;
    if write.delete {
        // Children before parents: the foreign keys are checked, not cascaded.
        let children = [
            "DELETE FROM materialization_reads WHERE materialization_id IN (SELECT id FROM materializations WHERE deployment_id = ?)",
            "DELETE FROM materializations WHERE deployment_id = ?",
            "DELETE FROM schedule_ticks WHERE deployment_id = ?",
            "DELETE FROM schedule_states WHERE deployment_id = ?",
            "DELETE FROM run_steps WHERE run_id IN (SELECT id FROM runs WHERE deployment_id = ?)",
            "DELETE FROM runs WHERE deployment_id = ?",
            "UPDATE deployments SET current_revision_id = NULL, head_revision_id = NULL WHERE id = ?",
            "DELETE FROM revisions WHERE deployment_id = ?",
            "DELETE FROM deployments WHERE id = ?",
        ];
        for statement in children {
            sqlx::query(statement)
                .bind(deployment)
                .execute(&mut *connection)
                .await
                .map_err(translate("the deletion"))?;
        }
    }
    Ok((revisions, runs))
}

async fn revision_id(
    connection: &mut SqliteConnection,
    deployment: i64,
    number: u32,
) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT id FROM revisions WHERE deployment_id = ? AND number = ?")
        .bind(deployment)
        .bind(i64::from(number))
        .fetch_optional(&mut *connection)
        .await
        .map_err(translate("a revision by number"))?
        .ok_or_else(|| {
            StoreError::NotFound(format!("revision {number} of deployment {deployment}"))
        })
}

/// The deployment patch: one statement, every field either its new value or left as it is.
async fn patch_deployment(
    connection: &mut SqliteConnection,
    write: &LifecycleWrite,
) -> StoreResult<()> {
    let deployment = write.deployment.0;
    let patch = &write.deployment_patch;
    let head = match patch.head {
        Some(number) => Some(revision_id(connection, deployment, number).await?),
        None => None,
    };
    let serving = match patch.serving {
        Some(Some(number)) => Some(revision_id(connection, deployment, number).await?),
        _ => None,
    };
    let teardown_lease = match &patch.teardown {
        Some(Teardown::Running(lease)) => Some(lease),
        _ => None,
    };
    sqlx::query(
        "UPDATE deployments SET
             status = COALESCE(?1, status),
             closed_at = CASE WHEN ?1 IS NULL THEN closed_at WHEN ?1 = 'closed' THEN ?2 END,
             close_reason = CASE WHEN ?1 IS NULL THEN close_reason WHEN ?1 = 'closed' THEN ?3 END,
             pull_request_id = CASE WHEN ?4 THEN ?5 ELSE pull_request_id END,
             pull_request_url = CASE WHEN ?4 THEN ?6 ELSE pull_request_url END,
             pull_request_status = CASE WHEN ?4 THEN ?7 ELSE pull_request_status END,
             base_deployment = CASE WHEN ?8 THEN ?9 ELSE base_deployment END,
             head_revision_id = COALESCE(?10, head_revision_id),
             current_revision_id = CASE WHEN ?11 THEN ?12 ELSE current_revision_id END,
             last_push_at = CASE WHEN ?13 THEN ?2 ELSE last_push_at END,
             teardown = COALESCE(?14, teardown),
             teardown_lease_owner = CASE WHEN ?14 IS NULL THEN teardown_lease_owner ELSE ?15 END,
             teardown_lease_expires_at = CASE WHEN ?14 IS NULL THEN teardown_lease_expires_at ELSE ?16 END,
             delete_requested = delete_requested OR ?17,
             snapshot_base = COALESCE(?19, snapshot_base),
             snapshot_base_commit = CASE WHEN ?19 IS NULL THEN snapshot_base_commit ELSE ?20 END
         WHERE id = ?18",
    )
    .bind(patch.status.map(DeploymentStatus::as_str))
    .bind(write.now)
    .bind(patch.close_reason.as_deref())
    .bind(patch.pull_request.is_some())
    .bind(patch.pull_request.as_ref().map(|p| p.id.as_str()))
    .bind(patch.pull_request.as_ref().map(|p| p.url.as_str()))
    .bind(patch.pull_request.as_ref().map(|p| p.status.as_str()))
    .bind(patch.base_deployment.is_some())
    .bind(patch.base_deployment.as_ref().and_then(|b| b.as_ref().map(DeploymentName::as_str)))
    .bind(head)
    .bind(patch.serving.is_some())
    .bind(serving)
    .bind(patch.pushed)
    .bind(patch.teardown.as_ref().map(offshoot_store::rows::teardown_text))
    .bind(teardown_lease.map(|l| l.owner.as_str()))
    .bind(teardown_lease.map(|l| l.until))
    .bind(patch.delete_requested)
    .bind(deployment)
    .bind(patch.snapshot_base.as_ref().map(|(base, _)| base.as_str()))
    .bind(patch.snapshot_base.as_ref().and_then(|(_, commit)| commit.as_ref().map(CommitSha::as_str)))
    .execute(&mut *connection)
    .await
    .map_err(translate("the deployment update"))?;
    Ok(())
}

/// `DataDiffKey::row_limit` as stored: 0 for no limit.
fn data_diff_row_limit(key: &DataDiffKey) -> StoreResult<i64> {
    i64::try_from(key.row_limit.unwrap_or(0))
        .map_err(|_| StoreError::Backend("a data diff's row limit past i64".to_owned()))
}

/// A step's outcome with the rest of its log, in one statement.
const SQL_FINISH_STEP: &str = "UPDATE run_steps SET status = ?, started_at = ?, finished_at = ?, row_count = ?, error = ?, log = log || ? WHERE id = ?";

/// Inserts a materialization with its provenance (the row and every upstream read) inside the
/// caller's transaction; returns its id.
async fn insert_provenance(
    connection: &mut sqlx::SqliteConnection,
    materialization: &Materialization,
    provenance: &Provenance,
) -> StoreResult<MaterializationId> {
    let promoted = provenance.promoted_from.as_ref();
    let against = provenance.built_against.as_ref();
    let id: i64 = sqlx::query_scalar(
            "INSERT INTO materializations (deployment_id, run_id, asset_key, commit_sha, row_count, duration_ms, created_at,
                 fingerprint, code_version, partitions, promoted_from_id, promoted_from_deployment_id, promoted_from_deployment, promoted_from_run_id,
                 built_against_id, built_against_deployment_id, built_against_run_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(materialization.deployment_id.0)
        .bind(materialization.run_id.0)
        .bind(materialization.asset_key.as_str())
        .bind(materialization.commit.as_str())
        .bind(materialization.row_count)
        .bind(materialization.duration_ms)
        .bind(materialization.created_at)
        .bind(provenance.fingerprint.to_hex())
        .bind(&provenance.code_version)
        .bind(&provenance.partitions)
        .bind(promoted.map(|p| p.materialization.id.0))
        .bind(promoted.map(|p| p.materialization.deployment_id.0))
        .bind(promoted.map(|p| p.deployment.as_str()))
        .bind(promoted.map(|p| p.materialization.run_id.0))
        .bind(against.map(|a| a.id.0))
        .bind(against.map(|a| a.deployment_id.0))
        .bind(against.map(|a| a.run_id.0))
        .fetch_one(&mut *connection)
        .await
        .map_err(translate("the materialization"))?;
    for upstream in &provenance.upstream {
        let read = upstream.read.as_ref();
        sqlx::query(
                "INSERT INTO materialization_reads (materialization_id, upstream_key, upstream_fingerprint, read_id, read_deployment_id, read_run_id)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(upstream.key.as_str())
            .bind(upstream.fingerprint.to_hex())
            .bind(read.map(|r| r.id.0))
            .bind(read.map(|r| r.deployment_id.0))
            .bind(read.map(|r| r.run_id.0))
            .execute(&mut *connection)
            .await
            .map_err(translate("the materialization's reads"))?;
    }
    Ok(MaterializationId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-connection settings, which a second connection to the file cannot see.
    #[tokio::test]
    async fn connections_are_durable_and_check_foreign_keys() {
        let path = std::env::temp_dir()
            .join(format!("offshoot-store-sqlite-{}-pragmas.db", std::process::id()));
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
