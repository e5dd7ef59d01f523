//! Store rows to domain types, shared by every SQL backend: a backend exposes a row's columns
//! through [`Columns`] and these functions rebuild the port's types through the core's validating
//! constructors, so a corrupt value is a `Backend` error, never a panic, and no driver type
//! reaches the domain. Integers are 64-bit, booleans are booleans, everything else is text.

use std::fmt::Display;

use offshoot_core::{
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus, Fingerprint,
    PullRequestStatus, RepositoryName, RevisionStatus, RunStatus, SnapshotBase, StepStatus,
    VariableScope,
};

use crate::{
    Activity, CommitDetails, Deployment, DeploymentId, Intake, IntakeId, Lease, Materialization,
    MaterializationId, PromotedFrom, Provenance, PullRequest, ReadMaterialization,
    RecordedMaterialization, Revision, RevisionId, Run, RunActivity, RunId, RunStep, ScheduleState,
    ScheduleTick, StepId, StoreError, StoreResult, StoredDataDiff, StoredVariable, Teardown,
    TickId, TickStatus, UpstreamProvenance,
};

/// One row's columns, by name; `None` is SQL NULL.
pub trait Columns {
    fn integer(&self, column: &str) -> StoreResult<Option<i64>>;
    fn text(&self, column: &str) -> StoreResult<Option<String>>;
    fn boolean(&self, column: &str) -> StoreResult<Option<bool>>;
}

pub fn deployment(row: &dyn Columns) -> StoreResult<Deployment> {
    let pull_request = match (
        optional_text(row, "pull_request_id")?,
        optional_text(row, "pull_request_url")?,
        parsed_optional(row, "pull_request_status", |text| {
            PullRequestStatus::parse(text).ok_or("unknown status")
        })?,
    ) {
        (Some(id), Some(url), Some(status)) => Some(PullRequest { id, url, status }),
        (None, None, None) => None,
        _ => return Err(corrupt("pull_request_*", "partly null")),
    };
    Ok(Deployment {
        id: DeploymentId(integer(row, "id")?),
        repository: parsed(row, "repository", RepositoryName::new)?,
        name: parsed(row, "name", DeploymentName::new)?,
        kind: parsed(row, "kind", |text| DeploymentKind::parse(text).ok_or("unknown kind"))?,
        branch: parsed(row, "branch", BranchName::new)?,
        status: parsed(row, "status", |text| {
            DeploymentStatus::parse(text).ok_or("unknown status")
        })?,
        pull_request,
        base_deployment: parsed_optional(row, "base_deployment", DeploymentName::new)?,
        snapshot_base: parsed(row, "snapshot_base", |text| {
            SnapshotBase::parse(text).ok_or("unknown snapshot base")
        })?,
        snapshot_base_commit: parsed_optional(row, "snapshot_base_commit", commit_sha)?,
        pinned: boolean(row, "pinned")?,
        current_revision: optional_integer(row, "current_revision_id")?.map(RevisionId),
        created_at: integer(row, "created_at")?,
        updated_at: integer(row, "updated_at")?,
        last_push_at: integer(row, "last_push_at")?,
        closed_at: optional_integer(row, "closed_at")?,
        close_reason: optional_text(row, "close_reason")?,
        version: integer(row, "version")?,
        head_revision: optional_integer(row, "head_revision_id")?.map(RevisionId),
        teardown: teardown(row)?,
        delete_requested: boolean(row, "delete_requested")?,
    })
}

pub fn revision(row: &dyn Columns) -> StoreResult<Revision> {
    Ok(Revision {
        id: RevisionId(integer(row, "id")?),
        deployment_id: DeploymentId(integer(row, "deployment_id")?),
        number: count(row, "number")?,
        commit: CommitDetails {
            sha: parsed(row, "commit_sha", commit_sha)?,
            message: text(row, "commit_message")?,
            author_name: text(row, "commit_author_name")?,
            author_email: text(row, "commit_author_email")?,
            time: integer(row, "commit_time")?,
        },
        status: parsed(row, "status", |text| RevisionStatus::parse(text).ok_or("unknown status"))?,
        error: optional_text(row, "error")?,
        diagnostics_json: optional_text(row, "diagnostics_json")?,
        base_commit: parsed_optional(row, "base_commit", commit_sha)?,
        changes_json: optional_text(row, "changes_json")?,
        asset_count: count(row, "asset_count")?,
        changed_count: count(row, "changed_count")?,
        impacted_count: count(row, "impacted_count")?,
        queued_at: integer(row, "queued_at")?,
        started_at: optional_integer(row, "started_at")?,
        finished_at: optional_integer(row, "finished_at")?,
        lease: lease(row)?,
    })
}

pub fn run(row: &dyn Columns) -> StoreResult<Run> {
    Ok(Run {
        id: RunId(integer(row, "id")?),
        deployment_id: DeploymentId(integer(row, "deployment_id")?),
        revision_id: RevisionId(integer(row, "revision_id")?),
        selection: text(row, "selection")?,
        status: parsed(row, "status", |text| RunStatus::parse(text).ok_or("unknown status"))?,
        error: optional_text(row, "error")?,
        created_at: integer(row, "created_at")?,
        started_at: optional_integer(row, "started_at")?,
        finished_at: optional_integer(row, "finished_at")?,
        cancel_requested: boolean(row, "cancel_requested")?,
        lease: lease(row)?,
        tags: parsed(row, "tags", |text| crate::tags_from_text(text).ok_or("not key=value lines"))?,
    })
}

pub fn step(row: &dyn Columns) -> StoreResult<RunStep> {
    Ok(RunStep {
        id: StepId(integer(row, "id")?),
        run_id: RunId(integer(row, "run_id")?),
        position: count(row, "position")?,
        asset_key: parsed(row, "asset_key", AssetKey::new)?,
        status: parsed(row, "status", |text| StepStatus::parse(text).ok_or("unknown status"))?,
        started_at: optional_integer(row, "started_at")?,
        finished_at: optional_integer(row, "finished_at")?,
        row_count: optional_integer(row, "row_count")?,
        error: optional_text(row, "error")?,
        log: text(row, "log")?,
        action: optional_text(row, "action")?,
        promoted_from: optional_integer(row, "promoted_from")?.map(MaterializationId),
    })
}

pub fn materialization(row: &dyn Columns) -> StoreResult<Materialization> {
    Ok(Materialization {
        deployment_id: DeploymentId(integer(row, "deployment_id")?),
        run_id: RunId(integer(row, "run_id")?),
        asset_key: parsed(row, "asset_key", AssetKey::new)?,
        commit: parsed(row, "commit_sha", commit_sha)?,
        row_count: optional_integer(row, "row_count")?,
        duration_ms: integer(row, "duration_ms")?,
        created_at: integer(row, "created_at")?,
    })
}

/// A row of `asset_key`, `id`, `deployment_id` and `run_id` of a materialization.
pub fn materialization_id(row: &dyn Columns) -> StoreResult<(AssetKey, ReadMaterialization)> {
    Ok((
        parsed(row, "asset_key", AssetKey::new)?,
        ReadMaterialization {
            id: MaterializationId(integer(row, "id")?),
            deployment_id: DeploymentId(integer(row, "deployment_id")?),
            run_id: RunId(integer(row, "run_id")?),
        },
    ))
}

/// A materialization row with its provenance's own columns; the upstream reads are added from
/// their rows with [`upstream_read`].
pub fn recorded_materialization(row: &dyn Columns) -> StoreResult<RecordedMaterialization> {
    let provenance = match optional_text(row, "fingerprint")? {
        None => None,
        Some(_) => Some(Provenance {
            fingerprint: parsed(row, "fingerprint", fingerprint)?,
            code_version: text(row, "code_version")?,
            partitions: text(row, "partitions")?,
            upstream: Vec::new(),
            promoted_from: match optional_integer(row, "promoted_from_id")? {
                None => None,
                Some(id) => Some(PromotedFrom {
                    materialization: ReadMaterialization {
                        id: MaterializationId(id),
                        deployment_id: DeploymentId(integer(row, "promoted_from_deployment_id")?),
                        run_id: RunId(integer(row, "promoted_from_run_id")?),
                    },
                    deployment: parsed(row, "promoted_from_deployment", DeploymentName::new)?,
                }),
            },
            built_against: match optional_integer(row, "built_against_id")? {
                None => None,
                Some(id) => Some(ReadMaterialization {
                    id: MaterializationId(id),
                    deployment_id: DeploymentId(integer(row, "built_against_deployment_id")?),
                    run_id: RunId(integer(row, "built_against_run_id")?),
                }),
            },
        }),
    };
    Ok(RecordedMaterialization {
        id: MaterializationId(integer(row, "id")?),
        materialization: materialization(row)?,
        provenance,
    })
}

/// A `data_diffs` row's value.
pub fn stored_data_diff(row: &dyn Columns) -> StoreResult<StoredDataDiff> {
    Ok(StoredDataDiff {
        diff_json: text(row, "diff_json")?,
        computed_at: integer(row, "computed_at")?,
    })
}

/// One row of `materialization_reads`: the materialization it belongs to and the read.
pub fn upstream_read(row: &dyn Columns) -> StoreResult<(MaterializationId, UpstreamProvenance)> {
    let read = match optional_integer(row, "read_id")? {
        None => None,
        Some(id) => Some(ReadMaterialization {
            id: MaterializationId(id),
            deployment_id: DeploymentId(integer(row, "read_deployment_id")?),
            run_id: RunId(integer(row, "read_run_id")?),
        }),
    };
    Ok((
        MaterializationId(integer(row, "materialization_id")?),
        UpstreamProvenance {
            key: parsed(row, "upstream_key", AssetKey::new)?,
            fingerprint: parsed(row, "upstream_fingerprint", fingerprint)?,
            read,
        },
    ))
}

/// Attaches upstream reads (any order) to their materializations; each list ends sorted by key.
pub fn attach_reads(
    materializations: &mut [RecordedMaterialization],
    reads: Vec<(MaterializationId, UpstreamProvenance)>,
) {
    for (id, read) in reads {
        let owner = materializations.iter_mut().find(|m| m.id == id);
        if let Some(provenance) = owner.and_then(|m| m.provenance.as_mut()) {
            provenance.upstream.push(read);
        }
    }
    for materialization in materializations {
        if let Some(provenance) = materialization.provenance.as_mut() {
            provenance.upstream.sort_by(|a, b| a.key.cmp(&b.key));
        }
    }
}

fn fingerprint(text: &str) -> Result<Fingerprint, &'static str> {
    Fingerprint::from_hex(text).ok_or("not 64 hex digits")
}

fn lease(row: &dyn Columns) -> StoreResult<Option<Lease>> {
    match (optional_text(row, "lease_owner")?, optional_integer(row, "lease_expires_at")?) {
        (Some(owner), Some(until)) => Ok(Some(Lease { owner, until })),
        _ => Ok(None),
    }
}

/// `teardown` is `done`, `pending`, `held` or `running` (with the `teardown_lease_*` columns).
fn teardown(row: &dyn Columns) -> StoreResult<Teardown> {
    match text(row, "teardown")?.as_str() {
        "done" => Ok(Teardown::Done),
        "pending" => Ok(Teardown::Pending),
        "held" => Ok(Teardown::Held),
        "running" => match (
            optional_text(row, "teardown_lease_owner")?,
            optional_integer(row, "teardown_lease_expires_at")?,
        ) {
            (Some(owner), Some(until)) => Ok(Teardown::Running(Lease { owner, until })),
            _ => Err(corrupt("teardown_lease_*", "NULL while running")),
        },
        other => Err(corrupt("teardown", other)),
    }
}

/// The `teardown` column's text for a teardown.
pub fn teardown_text(teardown: &Teardown) -> &'static str {
    match teardown {
        Teardown::Done => "done",
        Teardown::Pending => "pending",
        Teardown::Running(_) => "running",
        Teardown::Held => "held",
    }
}

pub fn intake(row: &dyn Columns) -> StoreResult<Intake> {
    Ok(Intake {
        id: IntakeId(integer(row, "id")?),
        source: text(row, "source")?,
        delivery: optional_text(row, "delivery")?,
        repository: parsed(row, "repository", RepositoryName::new)?,
        payload: text(row, "payload")?,
        received_by: text(row, "received_by")?,
        received_at: integer(row, "received_at")?,
        done_at: optional_integer(row, "done_at")?,
    })
}

pub fn schedule_state(row: &dyn Columns) -> StoreResult<ScheduleState> {
    Ok(ScheduleState {
        deployment_id: DeploymentId(integer(row, "deployment_id")?),
        schedule: text(row, "schedule")?,
        enabled: boolean(row, "enabled")?,
        since: integer(row, "since")?,
        updated_at: integer(row, "updated_at")?,
    })
}

pub fn schedule_tick(row: &dyn Columns) -> StoreResult<ScheduleTick> {
    Ok(ScheduleTick {
        id: TickId(integer(row, "id")?),
        deployment_id: DeploymentId(integer(row, "deployment_id")?),
        schedule: text(row, "schedule")?,
        tick_at: integer(row, "tick_at")?,
        manual: boolean(row, "manual")?,
        missed: u64::try_from(integer(row, "missed")?)
            .map_err(|_| corrupt("missed", "negative"))?,
        status: parsed(row, "status", |text| TickStatus::parse(text).ok_or("unknown status"))?,
        run_id: optional_integer(row, "run_id")?.map(RunId),
        message: optional_text(row, "message")?,
        claimed_by: text(row, "claimed_by")?,
        claimed_at: integer(row, "claimed_at")?,
    })
}

fn required<T>(value: Option<T>, column: &str) -> StoreResult<T> {
    value.ok_or_else(|| corrupt(column, "is NULL"))
}

fn integer(row: &dyn Columns, column: &str) -> StoreResult<i64> {
    required(row.integer(column)?, column)
}

fn optional_integer(row: &dyn Columns, column: &str) -> StoreResult<Option<i64>> {
    row.integer(column)
}

fn text(row: &dyn Columns, column: &str) -> StoreResult<String> {
    required(row.text(column)?, column)
}

fn optional_text(row: &dyn Columns, column: &str) -> StoreResult<Option<String>> {
    row.text(column)
}

fn boolean(row: &dyn Columns, column: &str) -> StoreResult<bool> {
    required(row.boolean(column)?, column)
}

/// A text column checked by `parse` (a validating constructor or an enum's `parse`).
fn parsed<T, E: Display>(
    row: &dyn Columns,
    column: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    parse(&text(row, column)?).map_err(|error| corrupt(column, error))
}

fn parsed_optional<T, E: Display>(
    row: &dyn Columns,
    column: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<Option<T>> {
    optional_text(row, column)?
        .map(|text| parse(&text).map_err(|error| corrupt(column, error)))
        .transpose()
}

/// Counts and positions are `u32` in the domain and 64-bit integers in the databases.
fn count(row: &dyn Columns, column: &str) -> StoreResult<u32> {
    u32::try_from(integer(row, column)?).map_err(|error| corrupt(column, error))
}

fn commit_sha(text: &str) -> Result<CommitSha, &'static str> {
    CommitSha::new(text).ok_or("not a commit id")
}

fn corrupt(column: &str, error: impl Display) -> StoreError {
    StoreError::Backend(format!("column {column} holds an invalid value: {error}"))
}

pub fn variable(row: &dyn Columns) -> StoreResult<StoredVariable> {
    let branch = text(row, "branch")?;
    Ok(StoredVariable {
        repository: parsed(row, "repository", RepositoryName::new)?,
        name: text(row, "name")?,
        scope: parsed(row, "scope", |text| VariableScope::parse(text).ok_or("unknown scope"))?,
        branch: match branch.is_empty() {
            true => None,
            false => Some(BranchName::new(&branch).map_err(|e| corrupt("branch", e))?),
        },
        value: text(row, "value")?,
        secret: boolean(row, "secret")?,
        updated_at: integer(row, "updated_at")?,
    })
}

/// [`crate::Store::activity`]'s queries, the same text for every SQL backend (no parameters):
/// every deployment's version, and the active runs' steps counted per status.
pub fn activity_queries() -> [String; 2] {
    [
        "SELECT id, version FROM deployments ORDER BY id".to_owned(),
        format!(
            "SELECT r.id AS run_id, r.status AS run_status, s.status AS step_status,
                 count(s.id) AS steps, count(s.action) AS with_action,
                 coalesce(sum(length(s.log)), 0) AS log_length
             FROM runs AS r LEFT JOIN run_steps AS s ON s.run_id = r.id
             WHERE r.status IN ('{}', '{}')
             GROUP BY r.id, r.status, s.status ORDER BY r.id, s.status",
            RunStatus::Queued.as_str(),
            RunStatus::Running.as_str()
        ),
    ]
}

/// A row of the first of [`activity_queries`].
pub fn deployment_version(row: &dyn Columns) -> StoreResult<(DeploymentId, i64)> {
    Ok((DeploymentId(integer(row, "id")?), integer(row, "version")?))
}

/// A row of the second of [`activity_queries`], ordered by run.
pub struct ActivityRow {
    run: RunId,
    run_status: String,
    /// `None` for a run without steps.
    step_status: Option<String>,
    counts: (i64, i64, i64),
}

pub fn activity_row(row: &dyn Columns) -> StoreResult<ActivityRow> {
    Ok(ActivityRow {
        run: RunId(integer(row, "run_id")?),
        run_status: text(row, "run_status")?,
        step_status: optional_text(row, "step_status")?,
        counts: (integer(row, "steps")?, integer(row, "with_action")?, integer(row, "log_length")?),
    })
}

/// Groups [`activity_row`]s (ordered by run) into runs.
pub fn activity(
    deployments: Vec<(DeploymentId, i64)>,
    rows: impl IntoIterator<Item = ActivityRow>,
) -> Activity {
    let mut runs: Vec<RunActivity> = Vec::new();
    for row in rows {
        if runs.last().is_none_or(|last| last.run != row.run) {
            runs.push(RunActivity { run: row.run, status: row.run_status, steps: Vec::new() });
        }
        if let (Some(status), Some(run)) = (row.step_status, runs.last_mut()) {
            let (steps, with_action, log_length) = row.counts;
            run.steps.push((status, steps, with_action, log_length));
        }
    }
    Activity { deployments, runs }
}
