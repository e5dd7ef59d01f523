//! The deploy pipeline: a push becomes a queued revision (latest commit wins), and the deploy
//! worker turns queued revisions into ready ones: load the snapshot at the commit, validate,
//! compute the change set against the base, prepare the warehouse, mark ready.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use offshoot_core::{
    deployment_name_for_branch, diff, pushed_commit_is_newer, BranchName, ChangeSet, CommitSha, DeploymentKind, DeploymentName,
    DeploymentStatus, PullRequestStatus, RepositoryName, RevisionStatus,
};
use offshoot_store::{CommitDetails, Deployment, DeploymentFilter, NewDeployment, NewRevision, PullRequest, Revision};
use tokio::sync::Semaphore;

use crate::changes::ChangeSetJson;
use crate::config::RepositoryConfig;
use crate::error::{ApiError, ApiResult};
use crate::git::{self, GitError};
use crate::lifecycle;
use crate::state::{now, AppState, Loaded, Metrics, SharedState};

/// A push, from the API, a webhook or the watcher.
#[derive(Debug, Clone)]
pub struct Push {
    pub repository: RepositoryName,
    pub branch: BranchName,
    /// A full or abbreviated SHA (or any revision the repository resolves).
    pub commit: String,
    pub pull_request_id: Option<String>,
    pub pull_request_url: Option<String>,
    pub pull_request_status: Option<PullRequestStatus>,
    pub base_deployment: Option<DeploymentName>,
}

pub struct PushOutcome {
    pub deployment: Deployment,
    /// The revision the push created or found; `None` when the push closed the deployment.
    pub revision: Option<Revision>,
}

pub fn repository_config<'a>(state: &'a AppState, name: &RepositoryName) -> ApiResult<&'a RepositoryConfig> {
    state
        .repository(name)
        .ok_or_else(|| ApiError::not_found("repository_not_found", format!("no repository named `{name}` is configured")))
}

fn git_failure(error: GitError) -> ApiError {
    match error {
        GitError::Repo(offshoot_repo::RepoError::UnknownRevision { rev, .. }) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "commit_not_found", format!("commit `{rev}` is not in the repository"))
        }
        other => ApiError::internal(other),
    }
}

/// `branch-deployment create-or-update`: finds or creates the branch's deployment, applies the
/// pull request's status (CLOSED or MERGED close it; OPEN reopens it) and queues the commit.
/// A push to the production branch deploys `prod`.
pub async fn create_or_update(state: &SharedState, push: Push) -> ApiResult<PushOutcome> {
    let repo = repository_config(state, &push.repository)?.clone();
    let commit = git::resolve(repo.path.clone(), push.commit.clone()).await.map_err(git_failure)?;
    if push.branch.as_str() == repo.production_branch {
        let deployment = ensure_production(state, &repo).await?;
        let revision = enqueue(state, &deployment, commit).await?;
        return Ok(PushOutcome { deployment, revision: Some(revision) });
    }
    let time = now();
    let existing = state.store.find_deployment_by_branch(&repo.name, &push.branch).await?;
    let mut deployment = match existing {
        Some(deployment) => deployment,
        None => {
            if matches!(push.pull_request_status, Some(PullRequestStatus::Closed | PullRequestStatus::Merged)) {
                return Err(ApiError::not_found(
                    "deployment_not_found",
                    format!("branch `{}` has no deployment to close", push.branch),
                ));
            }
            check_open_limit(state).await?;
            let all = state.store.list_deployments(&DeploymentFilter { repository: Some(repo.name.clone()), include_closed: true }).await?;
            let taken: BTreeSet<DeploymentName> = all.into_iter().map(|d| d.name).collect();
            let name = deployment_name_for_branch(&push.branch, |n| taken.contains(n));
            state
                .store
                .create_deployment(NewDeployment {
                    repository: repo.name.clone(),
                    name,
                    kind: DeploymentKind::Branch,
                    branch: push.branch.clone(),
                    pull_request: None,
                    base_deployment: push.base_deployment.clone(),
                    now: time,
                })
                .await?
        }
    };
    if push.pull_request_id.is_some() || push.pull_request_url.is_some() || push.pull_request_status.is_some() {
        let previous = deployment.pull_request.clone();
        deployment.pull_request = Some(PullRequest {
            id: push.pull_request_id.clone().or_else(|| previous.as_ref().map(|p| p.id.clone())).unwrap_or_default(),
            url: push.pull_request_url.clone().or_else(|| previous.as_ref().map(|p| p.url.clone())).unwrap_or_default(),
            status: push.pull_request_status.or(previous.map(|p| p.status)).unwrap_or(PullRequestStatus::Open),
        });
    }
    if push.base_deployment.is_some() {
        deployment.base_deployment = push.base_deployment.clone();
    }
    match push.pull_request_status {
        Some(PullRequestStatus::Closed | PullRequestStatus::Merged) => {
            state.store.update_deployment(&deployment).await?;
            let reason = format!("pull request {}", push.pull_request_status.map(|s| s.as_str().to_lowercase()).unwrap_or_default());
            let deployment = lifecycle::close(state, deployment, &reason).await?;
            return Ok(PushOutcome { deployment, revision: None });
        }
        _ => {
            if deployment.status == DeploymentStatus::Closed {
                check_open_limit(state).await?;
                deployment.status = DeploymentStatus::Open;
                deployment.closed_at = None;
                deployment.close_reason = None;
                // The schema was dropped: the next ready revision prepares it again.
                deployment.current_revision = None;
            }
        }
    }
    deployment.last_push_at = time;
    deployment.updated_at = time;
    state.store.update_deployment(&deployment).await?;
    let revision = enqueue(state, &deployment, commit).await?;
    Ok(PushOutcome { deployment, revision: Some(revision) })
}

async fn check_open_limit(state: &AppState) -> ApiResult<()> {
    let open = state.store.list_deployments(&DeploymentFilter::default()).await?;
    let branches = open.iter().filter(|d| d.kind == DeploymentKind::Branch).count();
    if branches >= state.config.max_open_branch_deployments {
        return Err(ApiError::conflict(
            "deployment_limit_reached",
            format!("{branches} branch deployments are open, the configured maximum; close one first"),
        ));
    }
    Ok(())
}

/// The repository's `prod` deployment, created on first use.
pub async fn ensure_production(state: &AppState, repo: &RepositoryConfig) -> ApiResult<Deployment> {
    let name = DeploymentName::production();
    if let Some(deployment) = state.store.find_deployment(&repo.name, &name).await? {
        return Ok(deployment);
    }
    let branch = BranchName::new(&repo.production_branch)
        .map_err(|e| ApiError::bad_request("invalid_branch_name", format!("production branch: {e}")))?;
    Ok(state
        .store
        .create_deployment(NewDeployment {
            repository: repo.name.clone(),
            name,
            kind: DeploymentKind::Production,
            branch,
            pull_request: None,
            base_deployment: None,
            now: now(),
        })
        .await?)
}

/// Queues `commit` for `deployment` unless an equal or newer commit is already known. A push of
/// an older commit is recorded as superseded, so replays and out-of-order deliveries are visible
/// but never deploy over a newer commit.
pub async fn enqueue(state: &SharedState, deployment: &Deployment, commit: CommitDetails) -> ApiResult<Revision> {
    let repo = repository_config(state, &deployment.repository)?.clone();
    let revisions = state.store.list_revisions(deployment.id, 0).await?;
    let newest = revisions.iter().find(|r| r.status != RevisionStatus::Superseded);
    let time = now();
    if let Some(newest) = newest {
        let relation = git::relation(repo.path.clone(), commit.clone(), newest.commit.clone()).await.map_err(ApiError::internal)?;
        // The same commit deploys again after a reopen (its schema was dropped) or a failure (a
        // retry: the failure may have been the warehouse's, not the definitions').
        let redeploy_same = newest.commit.sha == commit.sha
            && ((deployment.current_revision.is_none() && newest.status == RevisionStatus::Ready) || newest.status == RevisionStatus::Failed);
        if !pushed_commit_is_newer(relation) && !redeploy_same {
            if newest.commit.sha == commit.sha {
                return Ok(newest.clone());
            }
            let error = format!("{} is older than {}, which this deployment already has", commit.sha.short(), newest.commit.sha.short());
            let revision = state
                .store
                .insert_revision(NewRevision { deployment_id: deployment.id, commit, status: RevisionStatus::Superseded, error: Some(error), now: time })
                .await?;
            Metrics::increment(&state.metrics.deploys_superseded);
            return Ok(revision);
        }
    }
    for mut older in revisions.into_iter().filter(|r| matches!(r.status, RevisionStatus::Queued | RevisionStatus::Deploying)) {
        older.status = RevisionStatus::Superseded;
        older.error = Some(format!("superseded by {}", commit.sha.short()));
        older.finished_at = Some(time);
        state.store.update_revision(&older).await?;
        Metrics::increment(&state.metrics.deploys_superseded);
    }
    let revision = state
        .store
        .insert_revision(NewRevision { deployment_id: deployment.id, commit, status: RevisionStatus::Queued, error: None, now: time })
        .await?;
    state.deploy_wakeup.notify_one();
    Ok(revision)
}

/// Runs forever: claims queued revisions (and deploying ones whose server's lease expired) and
/// deploys them, several deployments at once. A claim succeeds for exactly one server.
pub async fn worker(state: SharedState) {
    let slots = Arc::new(Semaphore::new(state.config.deploy_concurrency.max(1)));
    loop {
        match state.store.revisions_with_status(&[RevisionStatus::Queued, RevisionStatus::Deploying]).await {
            Ok(candidates) => {
                for candidate in candidates {
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let time = now();
                    let lease_until = time + state.config.lease.as_millis() as i64;
                    let claimed = match state.store.claim_revision(candidate.id, &state.config.server_id, time, lease_until).await {
                        Ok(Some(claimed)) => claimed,
                        Ok(None) => continue,
                        Err(error) => {
                            tracing::error!("claiming revision {}: {error}", candidate.id.0);
                            continue;
                        }
                    };
                    if claimed.taken_over {
                        tracing::warn!("revision {} was deploying on a server that stopped; deploying it again", candidate.id.0);
                    }
                    let state = state.clone();
                    tokio::spawn(async move {
                        let id = claimed.row.id;
                        if let Err(error) = deploy(&state, claimed.row).await {
                            tracing::error!("deploy of revision {} failed unexpectedly: {error}", id.0);
                        }
                        drop(permit);
                        state.deploy_wakeup.notify_one();
                    });
                }
            }
            Err(error) => tracing::error!("deploy worker cannot read the queue: {error}"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), state.deploy_wakeup.notified()).await;
    }
}

/// Deploys one revision. Failures are recorded on the revision; `Err` only for store failures.
pub async fn deploy(state: &SharedState, mut revision: Revision) -> Result<(), offshoot_store::StoreError> {
    let deployment = state.store.get_deployment(revision.deployment_id).await?;
    if deployment.status == DeploymentStatus::Closed {
        revision.status = RevisionStatus::Superseded;
        revision.error = Some("the deployment was closed".into());
        revision.finished_at = Some(now());
        return state.store.update_revision(&revision).await;
    }
    // The claim made it `deploying` under this server's lease.
    tracing::info!("deploying {} of {}/{}", revision.commit.sha.short(), deployment.repository, deployment.name);

    let outcome = prepare(state, &deployment, &mut revision).await;
    // Re-read: a newer push may have superseded this revision while it deployed.
    let latest = state.store.get_revision(revision.id).await?;
    revision.finished_at = Some(now());
    if latest.status == RevisionStatus::Superseded {
        revision.status = RevisionStatus::Superseded;
        revision.error = latest.error;
        return state.store.update_revision(&revision).await;
    }
    match outcome {
        Err(message) => {
            revision.status = RevisionStatus::Failed;
            revision.error = Some(message);
            state.store.update_revision(&revision).await?;
            Metrics::increment(&state.metrics.deploys_failed);
            tracing::warn!("revision {} of {} failed: {}", revision.number, deployment.name, revision.error.as_deref().unwrap_or(""));
        }
        Ok(()) => {
            // Serving first, then ready: a client never sees a ready newest revision that does not
            // serve, and a kill in between leaves a deploying revision that is deployed again.
            promote(state, &revision).await?;
            revision.status = RevisionStatus::Ready;
            state.store.update_revision(&revision).await?;
            Metrics::increment(&state.metrics.deploys_ready);
            tracing::info!("revision {} of {} is ready", revision.number, deployment.name);
        }
    }
    crate::feedback::revision_finished(state, &deployment, &revision);
    Ok(())
}

/// Makes a ready revision the one serving, unless a newer one serves already.
async fn promote(state: &AppState, revision: &Revision) -> Result<(), offshoot_store::StoreError> {
    let mut deployment = state.store.get_deployment(revision.deployment_id).await?;
    if let Some(current_id) = deployment.current_revision {
        if current_id == revision.id {
            return Ok(());
        }
        let mut current = state.store.get_revision(current_id).await?;
        if current.number > revision.number {
            return Ok(());
        }
        current.status = RevisionStatus::Superseded;
        current.error = Some(format!("replaced by revision {}", revision.number));
        state.store.update_revision(&current).await?;
    }
    deployment.current_revision = Some(revision.id);
    deployment.updated_at = now();
    state.store.update_deployment(&deployment).await
}

/// Validation, change tracking and the warehouse; `Err` is the failure message for people.
async fn prepare(state: &SharedState, deployment: &Deployment, revision: &mut Revision) -> Result<(), String> {
    let repo = state
        .repository(&deployment.repository)
        .ok_or_else(|| format!("repository `{}` is no longer configured", deployment.repository))?
        .clone();
    let loaded = git::load(state, &repo.name, repo.path.clone(), &revision.commit.sha).await.map_err(|e| e.to_string())?;
    let project = match loaded.as_ref() {
        Ok(project) => project,
        Err(diagnostics) => {
            let list: Vec<serde_json::Value> = diagnostics
                .iter()
                .map(|d| serde_json::json!({"path": d.path, "line": d.line, "column": d.column, "message": d.message, "hint": d.hint}))
                .collect();
            revision.diagnostics_json = Some(serde_json::Value::Array(list).to_string());
            let first = diagnostics.first().map(|d| d.to_string()).unwrap_or_default();
            return Err(format!("{} problem(s) in the definitions; first: {}", diagnostics.len(), first.lines().next().unwrap_or("")));
        }
    };
    revision.asset_count = project.snapshot.len() as u32;

    if let Some((base_commit, base)) = base_of(state, deployment, &repo, &revision.commit.sha).await? {
        if let Ok(base) = base.as_ref() {
            let changes = diff(&base.snapshot, &project.snapshot);
            record_changes(revision, base_commit, &changes);
        }
    }

    let target = state.target(deployment);
    if !target.is_production() {
        // A branch reads production's tables; production's schema must exist first.
        let production = offshoot_warehouse::Target { schema: target.production.clone(), production: target.production.clone() };
        state.warehouse.prepare(&production).await.map_err(|e| e.to_string())?;
    }
    state.warehouse.prepare(&target).await.map_err(|e| e.to_string())?;
    Ok(())
}

fn record_changes(revision: &mut Revision, base_commit: CommitSha, changes: &ChangeSet) {
    let json = ChangeSetJson::from(changes);
    revision.changed_count = changes.changes.len() as u32;
    revision.impacted_count = changes.impacted.len() as u32;
    revision.changes_json = serde_json::to_string(&json).ok();
    revision.base_commit = Some(base_commit);
}

/// What change tracking compares with. A branch: the merge-base of its commit with the base
/// deployment's branch. Production: its previous ready revision. An invalid base gives no
/// change set (the revision still deploys), rather than a misleading one.
async fn base_of(
    state: &SharedState,
    deployment: &Deployment,
    repo: &RepositoryConfig,
    commit: &CommitSha,
) -> Result<Option<(CommitSha, Loaded)>, String> {
    let base_commit = match deployment.kind {
        DeploymentKind::Production => {
            let Some(current) = deployment.current_revision else { return Ok(None) };
            state.store.get_revision(current).await.map_err(|e| e.to_string())?.commit.sha
        }
        DeploymentKind::Branch => {
            let base_name = deployment.base_deployment.clone().unwrap_or_else(DeploymentName::production);
            let base_branch = match state.store.find_deployment(&deployment.repository, &base_name).await.map_err(|e| e.to_string())? {
                Some(base) => base.branch.as_str().to_owned(),
                None if base_name.is_production() => repo.production_branch.clone(),
                None => return Err(format!("base deployment `{base_name}` does not exist")),
            };
            let head = commit.clone();
            git::blocking(repo.path.clone(), move |r| {
                let tip = r.resolve(&base_branch)?;
                let merge_base = r.merge_base(&tip.sha, head.as_str())?;
                Ok(CommitSha::new(&merge_base.sha))
            })
            .await
            .map_err(|e| format!("cannot find where the branch forked: {e}"))?
            .ok_or("the merge-base is not a full commit id")?
        }
    };
    let loaded = git::load(state, &repo.name, repo.path.clone(), &base_commit).await.map_err(|e| e.to_string())?;
    Ok(Some((base_commit, loaded)))
}
