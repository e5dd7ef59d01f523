//! The REST API's JSON types and their conversions from store rows. The store's and core's types
//! are never serialized directly.

use offshoot_core::{DeploymentKind, DeploymentStatus};
use offshoot_store::{CommitDetails, Deployment, Revision, Run, RunStep};
use serde::{Deserialize, Serialize};

use crate::changes::{ChangeSetJson, StoredSummary, SummaryJson};

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PullRequestJson {
    pub id: String,
    pub url: String,
    pub status: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CommitJson {
    pub sha: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// Seconds since the epoch.
    pub time: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RevisionJson {
    pub id: i64,
    pub number: u32,
    pub commit: CommitJson,
    pub status: String,
    pub error: Option<String>,
    /// `[{path, line, column, message, hint}]` when the definitions were invalid.
    pub diagnostics: Option<serde_json::Value>,
    pub base_commit: Option<String>,
    pub asset_count: u32,
    /// Every change (new, changed and removed together).
    pub changed_count: u32,
    pub impacted_count: u32,
    /// The one definition of the counts (new, changed, removed, impacted; disjoint), once deployed
    /// with a base; `changes_summary` says it in words, zero counts left out.
    pub counts: Option<SummaryJson>,
    pub changes_summary: Option<String>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// From queued to finished, in milliseconds.
    pub duration_ms: Option<i64>,
    /// The server that claimed the deploy (see `server_id`).
    pub server: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DeploymentJson {
    pub name: String,
    pub repository: String,
    pub kind: String,
    /// Verbatim, as pushed.
    pub branch: String,
    pub status: String,
    pub pull_request: Option<PullRequestJson>,
    pub base_deployment: Option<String>,
    /// What a branch deployment's change tracking compares with; `None` for production (its
    /// previous revision).
    pub snapshot_base: Option<SnapshotBaseJson>,
    pub pinned: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_push_at: i64,
    pub closed_at: Option<i64>,
    pub close_reason: Option<String>,
    /// The revision serving now; `None` while the deployment is closed (nothing serves then).
    pub current_revision: Option<RevisionJson>,
    /// A closed deployment's revision that served when it closed; `None` while open.
    pub last_served_revision: Option<RevisionJson>,
    /// The newest revision, whatever its status (deploying, failed, ...).
    pub latest_revision: Option<RevisionJson>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SnapshotBaseJson {
    /// `merge-base`, `on-create` or `on-update`.
    pub condition: String,
    /// The commit compared with: the serving revision's, else the one the condition took.
    pub commit: Option<String>,
    /// For people: "merge base abc123", "production at creation, abc123", ...
    pub description: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StepJson {
    pub asset_key: String,
    pub status: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub row_count: Option<i64>,
    pub error: Option<String>,
    pub log: String,
    /// In a catch-up run: what the step does to production's table, `promoted (from
    /// feature-x, run 7)` or `built (changed; ...)` with the reason; `None` in other runs.
    pub action: Option<String>,
    /// In a catch-up run: the branch materialization a promotion takes.
    pub promoted_from: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RunJson {
    pub id: i64,
    pub deployment: String,
    pub repository: String,
    pub revision_id: i64,
    /// `run`, or `catch-up` (production's catch-up after a deploy: its steps say what each does).
    pub kind: String,
    pub selection: String,
    pub status: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub cancel_requested: bool,
    /// Counted by `tag_concurrency_limits`.
    pub tags: std::collections::BTreeMap<String, String>,
    /// The server that claimed the run (see `server_id`).
    pub server: Option<String>,
    /// For a queued run: what it waits for (`runs::waiting_for`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub steps: Vec<StepJson>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ChangesJson {
    pub deployment: String,
    pub revision: Option<RevisionJson>,
    /// `None` until a revision with change tracking is ready.
    pub changes: Option<ChangeSetJson>,
}

pub fn commit_json(commit: &CommitDetails) -> CommitJson {
    CommitJson {
        sha: commit.sha.to_string(),
        message: commit.message.clone(),
        author_name: commit.author_name.clone(),
        author_email: commit.author_email.clone(),
        time: commit.time,
    }
}

pub fn revision_json(revision: &Revision) -> RevisionJson {
    let counts = revision
        .changes_json
        .as_deref()
        .and_then(|json| serde_json::from_str::<StoredSummary>(json).ok())
        .map(|stored| stored.summary);
    RevisionJson {
        id: revision.id.0,
        number: revision.number,
        commit: commit_json(&revision.commit),
        status: revision.status.as_str().to_owned(),
        error: revision.error.clone(),
        diagnostics: revision
            .diagnostics_json
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok()),
        base_commit: revision.base_commit.as_ref().map(|c| c.to_string()),
        asset_count: revision.asset_count,
        changed_count: revision.changed_count,
        impacted_count: revision.impacted_count,
        counts: counts.clone(),
        changes_summary: counts.map(|c| c.counts().phrase()),
        queued_at: revision.queued_at,
        started_at: revision.started_at,
        finished_at: revision.finished_at,
        duration_ms: revision.finished_at.map(|f| f - revision.queued_at),
        server: revision.lease.as_ref().map(|l| l.owner.clone()),
    }
}

/// `current` is the store's `current_revision`: the revision serving now, or, once closed, the one
/// that served last (the store keeps it; its schema is gone). The JSON keeps the two apart so no
/// client reads a closed deployment as serving.
pub fn deployment_json(
    deployment: &Deployment,
    current: Option<&Revision>,
    latest: Option<&Revision>,
) -> DeploymentJson {
    let closed = deployment.status == DeploymentStatus::Closed;
    DeploymentJson {
        name: deployment.name.to_string(),
        repository: deployment.repository.to_string(),
        kind: deployment.kind.as_str().to_owned(),
        branch: deployment.branch.to_string(),
        status: deployment.status.as_str().to_owned(),
        pull_request: deployment.pull_request.as_ref().map(|p| PullRequestJson {
            id: p.id.clone(),
            url: p.url.clone(),
            status: p.status.as_str().to_owned(),
        }),
        base_deployment: deployment.base_deployment.as_ref().map(|d| d.to_string()),
        snapshot_base: snapshot_base_json(deployment, current),
        pinned: deployment.pinned,
        created_at: deployment.created_at,
        updated_at: deployment.updated_at,
        last_push_at: deployment.last_push_at,
        closed_at: deployment.closed_at,
        close_reason: deployment.close_reason.clone(),
        current_revision: current.filter(|_| !closed).map(revision_json),
        last_served_revision: current.filter(|_| closed).map(revision_json),
        latest_revision: latest.map(revision_json),
    }
}

fn snapshot_base_json(
    deployment: &Deployment,
    current: Option<&Revision>,
) -> Option<SnapshotBaseJson> {
    if deployment.kind == DeploymentKind::Production {
        return None;
    }
    let commit =
        current.and_then(|r| r.base_commit.as_ref()).or(deployment.snapshot_base_commit.as_ref());
    Some(SnapshotBaseJson {
        condition: deployment.snapshot_base.as_str().to_owned(),
        commit: commit.map(|c| c.to_string()),
        description: deployment.snapshot_base.describe(commit),
    })
}

pub fn step_json(step: &RunStep) -> StepJson {
    StepJson {
        asset_key: step.asset_key.to_string(),
        status: step.status.as_str().to_owned(),
        started_at: step.started_at,
        finished_at: step.finished_at,
        duration_ms: match (step.started_at, step.finished_at) {
            (Some(s), Some(f)) => Some(f - s),
            _ => None,
        },
        row_count: step.row_count,
        error: step.error.clone(),
        log: step.log.clone(),
        action: step.action.clone(),
        promoted_from: step.promoted_from.map(|m| m.0),
    }
}

pub fn run_json(run: &Run, deployment: &Deployment, steps: &[RunStep]) -> RunJson {
    RunJson {
        id: run.id.0,
        deployment: deployment.name.to_string(),
        repository: deployment.repository.to_string(),
        revision_id: run.revision_id.0,
        kind: if crate::service::catch_up::is_catch_up(run) { "catch-up" } else { "run" }
            .to_owned(),
        selection: run.selection.clone(),
        status: run.status.as_str().to_owned(),
        error: run.error.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        cancel_requested: run.cancel_requested,
        tags: run.tags.iter().cloned().collect(),
        server: run.lease.as_ref().map(|l| l.owner.clone()),
        waiting_for: None,
        steps: steps.iter().map(step_json).collect(),
    }
}
