//! The metadata store on PostgreSQL: a small connection pool, the schema's migrations embedded in
//! the binary and applied at connect, every multi-row write in one transaction. PostgreSQL commits
//! durably by default (`synchronous_commit = on`), which is what the port promises of an `Ok`.
//!
//! SQL lives in this file next to the method it serves; `rows` turns result rows back into the
//! port's types, and `translate` turns driver errors into the port's meaning. The tables live in
//! the connection's default schema (the first of its `search_path`, usually `public`), so the
//! store can share a database with the PostgreSQL warehouse, whose schemas are named
//! `<repository>__<deployment>`.

mod rows;

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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr};

/// Connections the pool keeps at most: the server's workers write one short statement at a time.
const MAX_CONNECTIONS: u32 = 5;

/// How long a method waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Store`] backed by a PostgreSQL database. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`) and
    /// brings its schema up to date. Several servers may connect at once: sqlx serializes their
    /// migrations with an advisory lock. Error messages never contain the password.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            // sqlx's message for a malformed URL quotes neither the URL nor the password.
            .map_err(|error| StoreError::Backend(format!("reading the PostgreSQL store URL: {error}")))?;
        let place = describe(&options);
        // One connection first, without the pool's retries: a server that is down or refuses us
        // fails at once, and the migrations run on it.
        let mut connection = PgConnection::connect_with(&options)
            .await
            .map_err(|error| StoreError::Backend(format!("connecting to {place}: {error}")))?;
        let migrated = migrator().run(&mut connection).await;
        // Closing only fails if the connection is already gone, which closes it too.
        let _ = connection.close().await;
        migrated.map_err(|error| StoreError::Backend(format!("migrating {place}: {error}")))?;
        let pool =
            PgPoolOptions::new().max_connections(MAX_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
        Ok(PostgresStore { pool })
    }

    /// Waits for every connection to finish and closes them; the store is unusable afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `user@host:port/database`, for messages: everything that helps find the database, no password.
fn describe(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => options.get_host().to_owned(),
    };
    format!(
        "PostgreSQL {}@{}:{}/{}",
        options.get_username(),
        host,
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}

/// The schema's migrations, embedded in the binary, built the way the SQLite store builds its
/// own (sqlx's `migrate!` would need the `derive` feature and its proc-macro build).
fn migrator() -> Migrator {
    let migration = |version: i64, description: &'static str, sql: &'static str| {
        Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    Migrator::with_migrations(vec![
        migration(1, "initial", include_str!("../migrations/0001_initial.sql")),
        migration(2, "leases", include_str!("../migrations/0002_leases.sql")),
    ])
}

/// PostgreSQL's `LIMIT NULL` means no limit, as the port's `0` does.
fn sql_limit(limit: u32) -> Option<i64> {
    (limit != 0).then(|| i64::from(limit))
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
fn touched(result: PgQueryResult, what: String) -> StoreResult<()> {
    if result.rows_affected() == 0 {
        return Err(StoreError::NotFound(what));
    }
    Ok(())
}

fn status_texts<T: Copy>(statuses: &[T], as_str: fn(T) -> &'static str) -> Vec<&'static str> {
    statuses.iter().map(|&status| as_str(status)).collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Deployment> {
        let pull_request = new.pull_request.as_ref();
        let row = sqlx::query(
            "INSERT INTO deployments (repository, name, kind, branch, status, pull_request_id, pull_request_url,
                 pull_request_status, base_deployment, pinned, created_at, updated_at, last_push_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, $10, $10, $10)
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
        let row = sqlx::query("SELECT * FROM deployments WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("deployment"))?
            .ok_or_else(|| StoreError::NotFound(format!("deployment {}", id.0)))?;
        rows::deployment(&row)
    }

    async fn find_deployment(&self, repository: &RepositoryName, name: &DeploymentName) -> StoreResult<Option<Deployment>> {
        let row = sqlx::query("SELECT * FROM deployments WHERE repository = $1 AND name = $2")
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
        let row = sqlx::query("SELECT * FROM deployments WHERE repository = $1 AND branch = $2")
            .bind(repository.as_str())
            .bind(branch.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("deployment by branch"))?;
        row.as_ref().map(rows::deployment).transpose()
    }

    async fn list_deployments(&self, filter: &DeploymentFilter) -> StoreResult<Vec<Deployment>> {
        // `COLLATE "C"`: byte order whatever the database's collation, as SQLite sorts.
        let found = sqlx::query(
            "SELECT * FROM deployments
             WHERE ($1::text IS NULL OR repository = $1) AND ($2 OR status = $3)
             ORDER BY CASE kind WHEN $4 THEN 0 ELSE 1 END, name COLLATE \"C\", repository COLLATE \"C\"",
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
        // An explicit transaction, so the deferred check of the current revision reports its
        // violation at our commit, as an error of this method.
        let mut transaction = self.pool.begin().await.map_err(translate("the deployment update"))?;
        let pull_request = deployment.pull_request.as_ref();
        let result = sqlx::query(
            "UPDATE deployments SET status = $1, pull_request_id = $2, pull_request_url = $3, pull_request_status = $4,
                 base_deployment = $5, pinned = $6, current_revision_id = $7, updated_at = $8, last_push_at = $9,
                 closed_at = $10, close_reason = $11
             WHERE id = $12",
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
        .execute(&mut *transaction)
        .await
        .map_err(translate("the deployment update"))?;
        touched(result, format!("deployment {}", deployment.id.0))?;
        transaction.commit().await.map_err(translate("the deployment update"))
    }

    async fn delete_deployment(&self, id: DeploymentId) -> StoreResult<()> {
        let mut transaction = self.pool.begin().await.map_err(translate("the deletion"))?;
        // Children before parents: the foreign keys are checked, not cascaded.
        let children = [
            "DELETE FROM materializations WHERE deployment_id = $1",
            "DELETE FROM run_steps WHERE run_id IN (SELECT id FROM runs WHERE deployment_id = $1)",
            "DELETE FROM runs WHERE deployment_id = $1",
            "DELETE FROM revisions WHERE deployment_id = $1",
        ];
        for statement in children {
            sqlx::query(statement).bind(id.0).execute(&mut *transaction).await.map_err(translate("the deletion"))?;
        }
        let result = sqlx::query("DELETE FROM deployments WHERE id = $1")
            .bind(id.0)
            .execute(&mut *transaction)
            .await
            .map_err(translate("the deletion"))?;
        // On NotFound the transaction is dropped, which rolls it back (it deleted nothing anyway).
        touched(result, format!("deployment {}", id.0))?;
        transaction.commit().await.map_err(translate("the deletion"))
    }

    async fn insert_revision(&self, new: NewRevision) -> StoreResult<Revision> {
        // Two pushes to one deployment take its row lock in turn; under READ COMMITTED the
        // second one's INSERT then sees the first one's revision, so numbers never collide.
        let mut transaction = self.pool.begin().await.map_err(translate("the new revision"))?;
        sqlx::query("SELECT id FROM deployments WHERE id = $1 FOR NO KEY UPDATE")
            .bind(new.deployment_id.0)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(translate("the new revision"))?
            .ok_or_else(|| StoreError::NotFound(format!("deployment {}", new.deployment_id.0)))?;
        let row = sqlx::query(
            "INSERT INTO revisions (deployment_id, number, commit_sha, commit_message, commit_author_name,
                 commit_author_email, commit_time, status, error, asset_count, changed_count, impacted_count, queued_at)
             SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3, $4, $5, $6, $7, $8, 0, 0, 0, $9
             FROM revisions WHERE deployment_id = $1
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
        .fetch_one(&mut *transaction)
        .await
        .map_err(translate("the new revision"))?;
        let revision = rows::revision(&row)?;
        transaction.commit().await.map_err(translate("the new revision"))?;
        Ok(revision)
    }

    async fn get_revision(&self, id: RevisionId) -> StoreResult<Revision> {
        let row = sqlx::query("SELECT * FROM revisions WHERE id = $1")
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
        let found = sqlx::query("SELECT * FROM revisions WHERE deployment_id = $1 ORDER BY number DESC LIMIT $2")
            .bind(deployment.0)
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(translate("revisions"))?;
        found.iter().map(rows::revision).collect()
    }

    async fn find_revision_by_commit(&self, deployment: DeploymentId, commit: &CommitSha) -> StoreResult<Option<Revision>> {
        let row =
            sqlx::query("SELECT * FROM revisions WHERE deployment_id = $1 AND commit_sha = $2 ORDER BY number DESC LIMIT 1")
                .bind(deployment.0)
                .bind(commit.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(translate("revision by commit"))?;
        row.as_ref().map(rows::revision).transpose()
    }

    async fn update_revision(&self, revision: &Revision) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE revisions SET status = $1, error = $2, diagnostics_json = $3, base_commit = $4, changes_json = $5,
                 asset_count = $6, changed_count = $7, impacted_count = $8, started_at = $9, finished_at = $10
             WHERE id = $11",
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
        let found = sqlx::query("SELECT * FROM revisions WHERE status = ANY($1) ORDER BY queued_at, id")
            .bind(status_texts(statuses, RevisionStatus::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(translate("revisions by status"))?;
        found.iter().map(rows::revision).collect()
    }

    async fn insert_run(&self, new: NewRun) -> StoreResult<Run> {
        let mut transaction = self.pool.begin().await.map_err(translate("the new run"))?;
        let row = sqlx::query(
            "INSERT INTO runs (deployment_id, revision_id, selection, status, created_at, cancel_requested)
             VALUES ($1, $2, $3, $4, $5, FALSE)
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
        // All steps in one statement: positions are the keys' 0-based places in the array.
        let keys: Vec<&str> = new.steps.iter().map(AssetKey::as_str).collect();
        sqlx::query(
            "INSERT INTO run_steps (run_id, position, asset_key, status, log)
             SELECT $1, plan.ordinality - 1, plan.asset_key, $3, ''
             FROM unnest($2::text[]) WITH ORDINALITY AS plan (asset_key, ordinality)",
        )
        .bind(run.id.0)
        .bind(keys)
        .bind(StepStatus::Pending.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(translate("the new run's steps"))?;
        transaction.commit().await.map_err(translate("the new run"))?;
        Ok(run)
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Run> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("run"))?
            .ok_or_else(|| StoreError::NotFound(format!("run {}", id.0)))?;
        rows::run(&row)
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let found = sqlx::query(
            "SELECT * FROM runs
             WHERE ($1::bigint IS NULL OR deployment_id = $1) AND (cardinality($2::text[]) = 0 OR status = ANY($2))
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(filter.deployment_id.map(|id| id.0))
        .bind(status_texts(&filter.statuses, RunStatus::as_str))
        .bind(sql_limit(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(translate("runs"))?;
        found.iter().map(rows::run).collect()
    }

    async fn update_run(&self, run: &Run) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE runs SET status = $1, error = $2, started_at = $3, finished_at = $4, cancel_requested = $5
             WHERE id = $6",
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
                "UPDATE {table} SET lease_expires_at = $1 WHERE lease_owner = $2 AND status = $3"
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
        let found = sqlx::query("SELECT * FROM run_steps WHERE run_id = $1 ORDER BY position")
            .bind(run.0)
            .fetch_all(&self.pool)
            .await
            .map_err(translate("steps"))?;
        found.iter().map(rows::step).collect()
    }

    async fn update_step(&self, step: &RunStep) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE run_steps SET status = $1, started_at = $2, finished_at = $3, row_count = $4, error = $5
             WHERE id = $6",
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
        let result = sqlx::query("UPDATE run_steps SET log = log || $1 WHERE id = $2")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        let found = sqlx::query(
            "SELECT * FROM materializations
             WHERE deployment_id = $1 AND ($2::text IS NULL OR asset_key = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(deployment.0)
        .bind(asset.map(AssetKey::as_str))
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(translate("materializations"))?;
        found.iter().map(rows::materialization).collect()
    }
}

impl PostgresStore {
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
    ) -> StoreResult<Option<(sqlx::postgres::PgRow, bool)>> {
        let before: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!("SELECT status FROM {table} WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(translate("the claim"))?;
        let Some(before) = before else { return Ok(None) };
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET status = $1, started_at = $2, lease_owner = $3, lease_expires_at = $4
             WHERE id = $5 AND (status = $6 OR (status = $7 AND (lease_expires_at IS NULL OR lease_expires_at < $8)))
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
