//! Rows to domain types: reads `SELECT *` rows by column name and rebuilds the port's types
//! through the core's validating constructors, so no sqlx type leaves this crate and a corrupt
//! value is a `Backend` error, never a panic.

use std::fmt::Display;

use offshoot_core::{
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus, PullRequestStatus, RepositoryName,
    RevisionStatus, RunStatus, StepStatus,
};
use offshoot_store::{
    CommitDetails, Deployment, DeploymentId, Materialization, PullRequest, Revision, RevisionId, Run, RunId, RunStep, StepId,
    StoreError, StoreResult,
};
use sqlx::postgres::{PgRow, Postgres};
use sqlx::{Decode, Row, Type};

pub(crate) fn deployment(row: &PgRow) -> StoreResult<Deployment> {
    let pull_request = match (
        get::<Option<String>>(row, "pull_request_id")?,
        get::<Option<String>>(row, "pull_request_url")?,
        parsed_optional(row, "pull_request_status", |text| PullRequestStatus::parse(text).ok_or("unknown status"))?,
    ) {
        (Some(id), Some(url), Some(status)) => Some(PullRequest { id, url, status }),
        (None, None, None) => None,
        _ => return Err(corrupt("pull_request_*", "partly null")),
    };
    Ok(Deployment {
        id: DeploymentId(get(row, "id")?),
        repository: parsed(row, "repository", RepositoryName::new)?,
        name: parsed(row, "name", DeploymentName::new)?,
        kind: parsed(row, "kind", |text| DeploymentKind::parse(text).ok_or("unknown kind"))?,
        branch: parsed(row, "branch", BranchName::new)?,
        status: parsed(row, "status", |text| DeploymentStatus::parse(text).ok_or("unknown status"))?,
        pull_request,
        base_deployment: parsed_optional(row, "base_deployment", DeploymentName::new)?,
        pinned: get(row, "pinned")?,
        current_revision: get::<Option<i64>>(row, "current_revision_id")?.map(RevisionId),
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        last_push_at: get(row, "last_push_at")?,
        closed_at: get(row, "closed_at")?,
        close_reason: get(row, "close_reason")?,
    })
}

pub(crate) fn revision(row: &PgRow) -> StoreResult<Revision> {
    Ok(Revision {
        id: RevisionId(get(row, "id")?),
        deployment_id: DeploymentId(get(row, "deployment_id")?),
        number: count(row, "number")?,
        commit: CommitDetails {
            sha: parsed(row, "commit_sha", commit_sha)?,
            message: get(row, "commit_message")?,
            author_name: get(row, "commit_author_name")?,
            author_email: get(row, "commit_author_email")?,
            time: get(row, "commit_time")?,
        },
        status: parsed(row, "status", |text| RevisionStatus::parse(text).ok_or("unknown status"))?,
        error: get(row, "error")?,
        diagnostics_json: get(row, "diagnostics_json")?,
        base_commit: parsed_optional(row, "base_commit", commit_sha)?,
        changes_json: get(row, "changes_json")?,
        asset_count: count(row, "asset_count")?,
        changed_count: count(row, "changed_count")?,
        impacted_count: count(row, "impacted_count")?,
        queued_at: get(row, "queued_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
    })
}

pub(crate) fn run(row: &PgRow) -> StoreResult<Run> {
    Ok(Run {
        id: RunId(get(row, "id")?),
        deployment_id: DeploymentId(get(row, "deployment_id")?),
        revision_id: RevisionId(get(row, "revision_id")?),
        selection: get(row, "selection")?,
        status: parsed(row, "status", |text| RunStatus::parse(text).ok_or("unknown status"))?,
        error: get(row, "error")?,
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        cancel_requested: get(row, "cancel_requested")?,
    })
}

pub(crate) fn step(row: &PgRow) -> StoreResult<RunStep> {
    Ok(RunStep {
        id: StepId(get(row, "id")?),
        run_id: RunId(get(row, "run_id")?),
        position: count(row, "position")?,
        asset_key: parsed(row, "asset_key", AssetKey::new)?,
        status: parsed(row, "status", |text| StepStatus::parse(text).ok_or("unknown status"))?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        row_count: get(row, "row_count")?,
        error: get(row, "error")?,
        log: get(row, "log")?,
    })
}

pub(crate) fn materialization(row: &PgRow) -> StoreResult<Materialization> {
    Ok(Materialization {
        deployment_id: DeploymentId(get(row, "deployment_id")?),
        run_id: RunId(get(row, "run_id")?),
        asset_key: parsed(row, "asset_key", AssetKey::new)?,
        commit: parsed(row, "commit_sha", commit_sha)?,
        row_count: get(row, "row_count")?,
        duration_ms: get(row, "duration_ms")?,
        created_at: get(row, "created_at")?,
    })
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(column).map_err(|error| StoreError::Backend(format!("reading column {column}: {error}")))
}

/// A text column checked by `parse` (a validating constructor or an enum's `parse`).
fn parsed<T, E: Display>(row: &PgRow, column: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> StoreResult<T> {
    let text: String = get(row, column)?;
    parse(&text).map_err(|error| corrupt(column, error))
}

fn parsed_optional<T, E: Display>(row: &PgRow, column: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> StoreResult<Option<T>> {
    let text: Option<String> = get(row, column)?;
    text.map(|text| parse(&text).map_err(|error| corrupt(column, error))).transpose()
}

/// Counts and positions are `u32` in the domain and `BIGINT` (i64) in PostgreSQL.
fn count(row: &PgRow, column: &str) -> StoreResult<u32> {
    let value: i64 = get(row, column)?;
    u32::try_from(value).map_err(|error| corrupt(column, error))
}

fn commit_sha(text: &str) -> Result<CommitSha, &'static str> {
    CommitSha::new(text).ok_or("not a commit id")
}

fn corrupt(column: &str, error: impl Display) -> StoreError {
    StoreError::Backend(format!("column {column} holds an invalid value: {error}"))
}
