//! The deploy pipeline: a push becomes a delivery to the deployment's lifecycle (latest commit
//! wins, by ancestry), and the deploy worker turns queued revisions into ready ones: claim under
//! a lease, load the snapshot at the commit, validate, compute the change set against the base,
//! prepare the warehouse, and report the outcome to the lifecycle, which promotes it only if it
//! is still the newest commit of an open deployment.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use offshoot_core::lifecycle::{Commit, Event, Lease};
use offshoot_core::{
    deployment_name_for_branch, diff, BranchName, ChangeSet, CommitSha, DeploymentKind,
    DeploymentName, DeploymentStatus, PullRequestStatus, RepositoryName, RevisionStatus,
    SnapshotBase,
};
use offshoot_store::{
    CommitDetails, DeployOutput, Deployment, DeploymentFilter, NewDeployment, PullRequest,
    Revision, StoreError,
};
use tokio::sync::Semaphore;

use crate::adapters::project::{self as git, GitError};
use crate::changes::ChangeSetJson;
use crate::config::RepositoryConfig;
use crate::service::catch_up;
use crate::service::deployments::{self as lifecycle, Extras, Input, LifecycleError, Outcome};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::lookup::repository_config;
use crate::state::{now, AppState, Loaded, SharedState};

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
    /// Whether the push reopens a closed deployment (when it is of the newest commit or newer).
    pub opens: bool,
    /// Deploy the commit again even if it is ready (its base changed).
    pub redeploy: bool,
    /// Dagster+'s `--snapshot-base-condition` (or `merge-base`); `None` keeps the deployment's.
    pub snapshot_base: Option<SnapshotBase>,
}

pub struct PushOutcome {
    pub deployment: Deployment,
    /// The revision the push created or found; `None` when the push closed the deployment.
    pub revision: Option<Revision>,
}

fn git_failure(error: GitError) -> ServiceError {
    match error {
        GitError::Repo(offshoot_repo::RepoError::UnknownRevision { rev, .. }) => {
            ServiceError::unprocessable(
                "commit_not_found",
                format!("commit `{rev}` is not in the repository"),
            )
        }
        other => ServiceError::internal(other),
    }
}

/// `branch-deployment create-or-update`: finds or creates the branch's deployment and delivers
/// the commit to it; CLOSED or MERGED close it instead. A push to the production branch
/// deploys `prod`.
pub async fn create_or_update(state: &SharedState, push: Push) -> ServiceResult<PushOutcome> {
    let repo = repository_config(state, &push.repository)?.clone();
    let commit = git::resolve(repo.path.clone(), push.commit.clone()).await.map_err(git_failure)?;
    if push.branch.as_str() == repo.production_branch {
        let deployment = ensure_production(state, &repo).await?;
        return deliver(state, &deployment, commit, Delivery::default()).await;
    }
    let closing = matches!(
        push.pull_request_status,
        Some(PullRequestStatus::Closed | PullRequestStatus::Merged)
    );
    let deployment = match state.store.find_deployment_by_branch(&repo.name, &push.branch).await? {
        Some(deployment) => deployment,
        None if closing => {
            return Err(ServiceError::not_found(
                "deployment_not_found",
                format!("branch `{}` has no deployment to close", push.branch),
            ));
        }
        None => ensure_branch(state, &repo, &push).await?,
    };
    let pull_request = (push.pull_request_id.is_some()
        || push.pull_request_url.is_some()
        || push.pull_request_status.is_some())
    .then(|| {
        let previous = deployment.pull_request.clone();
        PullRequest {
            id: push
                .pull_request_id
                .clone()
                .or_else(|| previous.as_ref().map(|p| p.id.clone()))
                .unwrap_or_default(),
            url: push
                .pull_request_url
                .clone()
                .or_else(|| previous.as_ref().map(|p| p.url.clone()))
                .unwrap_or_default(),
            status: push.pull_request_status.unwrap_or(PullRequestStatus::Open),
        }
    });
    if closing {
        let status = push.pull_request_status.expect("closing means a status");
        let reason = format!("pull request {}", status.as_str().to_lowercase());
        let extras = Extras { pull_request, ..Extras::default() };
        let keep = match catch_up::hold_at_close(state, &deployment, Some(status)).await {
            true => lifecycle::Keep::TablesForCatchUp,
            false => lifecycle::Keep::Nothing,
        };
        let deployment =
            lifecycle::close_with(state, &deployment, &reason, Some(status), keep, extras).await?;
        return Ok(PushOutcome { deployment, revision: None });
    }
    // Reopening counts against the limit: the check and the reopen are one step here.
    let _turn = match deployment.status == DeploymentStatus::Closed && push.opens {
        true => {
            let turn = state.open_turn.lock().await;
            lifecycle::check_open_limit(state).await?;
            Some(turn)
        }
        false => None,
    };
    let snapshot_base = snapshot_base_for(state, &repo, &deployment, &push).await?;
    // A base that changed (another condition, or production moved under `on-update`): the
    // same commit's change set is computed again.
    let base_moved = snapshot_base.is_some();
    let delivery = Delivery {
        opens: push.opens,
        redeploy: push.redeploy || base_moved,
        pull_request,
        base_deployment: push.base_deployment.clone().map(Some),
        snapshot_base,
    };
    deliver(state, &deployment, commit, delivery).await
}

/// The snapshot base a push sets, when it differs from the deployment's: `on-create` takes the
/// base deployment's serving commit once (when the deployment is created, or when the condition
/// is first asked for) and keeps it; `on-update` takes it again on every push; `merge-base`
/// needs no commit (it is found per revision).
async fn snapshot_base_for(
    state: &SharedState,
    repo: &RepositoryConfig,
    deployment: &Deployment,
    push: &Push,
) -> ServiceResult<Option<(SnapshotBase, Option<CommitSha>)>> {
    let condition = push.snapshot_base.unwrap_or(deployment.snapshot_base);
    let kept = (deployment.snapshot_base == SnapshotBase::OnCreate)
        .then(|| deployment.snapshot_base_commit.clone())
        .flatten();
    let commit = match (condition, kept) {
        (SnapshotBase::MergeBase, _) => None,
        (SnapshotBase::OnCreate, Some(kept)) => Some(kept),
        (SnapshotBase::OnCreate | SnapshotBase::OnUpdate, _) => {
            let base = push.base_deployment.clone().or_else(|| deployment.base_deployment.clone());
            Some(
                serving_commit(state, repo, base.unwrap_or_else(DeploymentName::production))
                    .await?,
            )
        }
    };
    let wanted = (condition, commit);
    Ok((wanted != (deployment.snapshot_base, deployment.snapshot_base_commit.clone()))
        .then_some(wanted))
}

/// The commit a base deployment serves now; before its first ready revision, its branch's tip.
async fn serving_commit(
    state: &SharedState,
    repo: &RepositoryConfig,
    base_name: DeploymentName,
) -> ServiceResult<CommitSha> {
    let base = state.store.find_deployment(&repo.name, &base_name).await?;
    if let Some(current) = base.as_ref().and_then(|b| b.current_revision) {
        return Ok(state.store.get_revision(current).await?.commit.sha);
    }
    let branch = match base {
        Some(base) => base.branch.as_str().to_owned(),
        None if base_name.is_production() => repo.production_branch.clone(),
        None => {
            return Err(ServiceError::not_found(
                "deployment_not_found",
                format!("no base deployment named `{base_name}`"),
            ))
        }
    };
    Ok(git::resolve(repo.path.clone(), branch).await.map_err(git_failure)?.sha)
}

/// How a commit is delivered to a deployment.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub opens: bool,
    pub redeploy: bool,
    pub pull_request: Option<PullRequest>,
    pub base_deployment: Option<Option<DeploymentName>>,
    pub snapshot_base: Option<(SnapshotBase, Option<CommitSha>)>,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            opens: true,
            redeploy: false,
            pull_request: None,
            base_deployment: None,
            snapshot_base: None,
        }
    }
}

/// Delivers `commit` to the deployment's lifecycle: it is related to the newest delivered commit
/// (by ancestry, read in the same attempt as the state it is decided on) and queued, recorded as
/// superseded, or recognised as a duplicate.
pub async fn deliver(
    state: &SharedState,
    deployment: &Deployment,
    commit: CommitDetails,
    delivery: Delivery,
) -> ServiceResult<PushOutcome> {
    let repo = repository_config(state, &deployment.repository)?.clone();
    let mut written = None;
    for _ in 0..lifecycle::ATTEMPTS {
        let (record, view) = lifecycle::read(state, deployment.id).await?;
        let head = view.machine.head.and_then(|n| record.revisions.iter().find(|r| r.number == n));
        let relation = match head {
            None => None,
            Some(head) => Some(
                git::relation(repo.path.clone(), commit.clone(), head.commit.clone())
                    .await
                    .map_err(ServiceError::internal)?,
            ),
        };
        let event = Event::Push {
            commit: Commit { sha: commit.sha.clone(), time: commit.time },
            relation,
            opens: delivery.opens,
            redeploy: delivery.redeploy,
        };
        let extras = Extras {
            commit: Some(commit.clone()),
            pull_request: delivery.pull_request.clone(),
            base_deployment: delivery.base_deployment.clone(),
            snapshot_base: delivery.snapshot_base.clone(),
            ..Extras::default()
        };
        if let Some(outcome) =
            lifecycle::attempt(state, record, &view, Input { event, extras }).await?
        {
            written = Some(outcome);
            break;
        }
    }
    let outcome = written.ok_or(LifecycleError::Contended(lifecycle::ATTEMPTS))?;
    let deployment = outcome.deployment.clone().expect("a delivered-to deployment exists");
    let revision = match outcome.new_revisions.last() {
        Some(revision) => Some(revision.clone()),
        None => state.store.find_revision_by_commit(deployment.id, &commit.sha).await?,
    };
    Ok(PushOutcome { deployment, revision })
}

/// The branch's deployment, created on its first delivery. Concurrent first deliveries get the
/// same row; a name another branch took meanwhile gets a longer hash.
async fn ensure_branch(
    state: &SharedState,
    repo: &RepositoryConfig,
    push: &Push,
) -> ServiceResult<Deployment> {
    for _ in 0..4 {
        if let Some(existing) =
            state.store.find_deployment_by_branch(&repo.name, &push.branch).await?
        {
            return Ok(existing);
        }
        let all = state
            .store
            .list_deployments(&DeploymentFilter {
                repository: Some(repo.name.clone()),
                include_closed: true,
            })
            .await?;
        let taken: BTreeSet<DeploymentName> =
            all.into_iter().filter(|d| d.branch != push.branch).map(|d| d.name).collect();
        let name = deployment_name_for_branch(&push.branch, |n| taken.contains(n));
        let new = NewDeployment {
            repository: repo.name.clone(),
            name,
            kind: DeploymentKind::Branch,
            branch: push.branch.clone(),
            pull_request: None,
            base_deployment: push.base_deployment.clone(),
            now: now(),
        };
        // The store counts and creates in one step, for every server sharing it.
        match state
            .store
            .ensure_deployment_within(new, state.config.max_open_branch_deployments)
            .await
        {
            Ok(Some(deployment)) => return Ok(deployment),
            Ok(None) => return Err(lifecycle::open_limit_reached(state)),
            Err(StoreError::Conflict(_)) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ServiceError::conflict(
        "conflict",
        format!("could not find a free deployment name for branch `{}`", push.branch),
    ))
}

/// The repository's `prod` deployment, created on first use (concurrently: once).
pub async fn ensure_production(
    state: &AppState,
    repo: &RepositoryConfig,
) -> ServiceResult<Deployment> {
    let name = DeploymentName::production();
    if let Some(deployment) = state.store.find_deployment(&repo.name, &name).await? {
        return Ok(deployment);
    }
    let branch = BranchName::new(&repo.production_branch).map_err(|e| {
        ServiceError::invalid("invalid_branch_name", format!("production branch: {e}"))
    })?;
    Ok(state
        .store
        .ensure_deployment(NewDeployment {
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

fn lease(state: &AppState) -> Lease {
    Lease {
        owner: state.config.server_id.clone(),
        until: now() + state.config.lease.as_millis() as i64,
    }
}

/// Runs forever: claims queued revisions (and deploying ones whose server's lease expired) and
/// deploys them, several deployments at once. A claim is a lifecycle event: granted to exactly
/// one server, and only while no other revision of the deployment deploys.
pub async fn worker(state: SharedState) {
    let slots = Arc::new(Semaphore::new(state.config.deploy_concurrency.max(1)));
    loop {
        match state
            .store
            .revisions_with_status(&[RevisionStatus::Queued, RevisionStatus::Deploying])
            .await
        {
            Ok(candidates) => {
                for candidate in candidates {
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let event =
                        Event::ClaimDeploy { revision: candidate.number, lease: lease(&state) };
                    let claimed = match lifecycle::apply_event(
                        &state,
                        candidate.deployment_id,
                        event,
                    )
                    .await
                    {
                        Ok(outcome) if outcome.claimed_deploy(candidate.number) => outcome,
                        Ok(_) | Err(LifecycleError::Refused(_)) => continue,
                        Err(LifecycleError::Store(StoreError::NotFound(_))) => continue,
                        Err(error) => {
                            tracing::error!("claiming revision {}: {error}", candidate.id.0);
                            continue;
                        }
                    };
                    if candidate.status == RevisionStatus::Deploying {
                        tracing::warn!("revision {} was deploying on a server that stopped; deploying it again", candidate.id.0);
                    }
                    let state = state.clone();
                    tokio::spawn(async move {
                        let deployment =
                            claimed.deployment.expect("a claimed revision's deployment exists");
                        let id = candidate.id;
                        if let Err(error) = deploy(&state, deployment, candidate).await {
                            tracing::error!("deploy of revision {} stopped: {error}", id.0);
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

/// Deploys one claimed revision and reports the outcome to the lifecycle, which discards it if a
/// newer commit arrived or the deployment closed meanwhile.
async fn deploy(
    state: &SharedState,
    deployment: Deployment,
    revision: Revision,
) -> Result<Outcome, LifecycleError> {
    tracing::info!(
        "deploying {} of {}/{}",
        revision.commit.sha.short(),
        deployment.repository,
        deployment.name
    );
    let mut output = DeployOutput::default();
    let outcome = prepare(state, &deployment, &revision, &mut output).await;
    if let Err(message) = &outcome {
        tracing::warn!("revision {} of {} failed: {message}", revision.number, deployment.name);
    }
    let event = Event::DeployFinished {
        revision: revision.number,
        owner: state.config.server_id.clone(),
        outcome,
    };
    let extras = Extras { output: Some(output), ..Extras::default() };
    let result = lifecycle::report(state, deployment.id, event, extras).await;
    match &result {
        Ok(_) => tracing::info!("revision {} of {} finished", revision.number, deployment.name),
        Err(LifecycleError::Refused(refusal)) => tracing::warn!(
            "the result of revision {} of {} was refused: {refusal}",
            revision.number,
            deployment.name
        ),
        Err(_) => {}
    }
    result
}

/// Validation, change tracking and the warehouse; `Err` is the failure message for people.
async fn prepare(
    state: &SharedState,
    deployment: &Deployment,
    revision: &Revision,
    output: &mut DeployOutput,
) -> Result<(), String> {
    let repo = state
        .repository(&deployment.repository)
        .ok_or_else(|| format!("repository `{}` is no longer configured", deployment.repository))?
        .clone();
    // The base first: the commit's own load starts from it and parses only what differs.
    let base = base_of(state, deployment, &repo, &revision.commit.sha).await?;
    let previous = base.as_ref().map(|(_, loaded)| loaded.clone());
    let loaded = git::load_for(
        state,
        &repo.name,
        repo.path.clone(),
        &revision.commit.sha,
        Some(deployment),
        previous,
    )
    .await
    .map_err(|e| e.to_string())?;
    let project = match loaded.as_ref() {
        Ok(project) => project,
        Err(diagnostics) => {
            let list: Vec<serde_json::Value> = diagnostics
                .iter()
                .map(|d| serde_json::json!({"path": d.path, "line": d.line, "column": d.column, "message": d.message, "hint": d.hint}))
                .collect();
            output.diagnostics_json = Some(serde_json::Value::Array(list).to_string());
            let first = diagnostics.first().map(|d| d.to_string()).unwrap_or_default();
            return Err(format!(
                "{} problem(s) in the definitions; first: {}",
                diagnostics.len(),
                first.lines().next().unwrap_or("")
            ));
        }
    };
    output.asset_count = project.snapshot.len() as u32;

    if let Some((base_commit, base)) = base {
        if let Ok(base) = base.as_ref() {
            let changes = diff(&base.snapshot, &project.snapshot);
            record_changes(output, base_commit, &changes);
        }
    }

    let target = state.target(deployment);
    if !target.is_production() {
        // A branch reads production's tables; production's schema must exist first.
        let production = offshoot_warehouse::Target {
            schema: target.production.clone(),
            production: target.production.clone(),
        };
        state.warehouse.prepare(&production).await.map_err(|e| e.to_string())?;
    }
    state.warehouse.prepare(&target).await.map_err(|e| e.to_string())?;
    Ok(())
}

fn record_changes(output: &mut DeployOutput, base_commit: CommitSha, changes: &ChangeSet) {
    let json = ChangeSetJson::from(changes);
    output.changed_count = changes.changes.len() as u32;
    output.impacted_count = changes.impacted.len() as u32;
    output.changes_json = serde_json::to_string(&json).ok();
    output.base_commit = Some(base_commit);
}

/// What change tracking compares with. A branch: the merge-base of its commit with the base
/// deployment's branch, or the commit its snapshot base took (`on-create`, `on-update`). Production: its previous ready revision. An invalid base gives no
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
        DeploymentKind::Branch if deployment.snapshot_base != SnapshotBase::MergeBase => {
            match &deployment.snapshot_base_commit {
                Some(commit) => commit.clone(),
                None => return Err("the snapshot base has no production commit yet".to_owned()),
            }
        }
        DeploymentKind::Branch => {
            let base_name =
                deployment.base_deployment.clone().unwrap_or_else(DeploymentName::production);
            let base_branch = match state
                .store
                .find_deployment(&deployment.repository, &base_name)
                .await
                .map_err(|e| e.to_string())?
            {
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
    let loaded = git::load(state, &repo.name, repo.path.clone(), &base_commit)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some((base_commit, loaded)))
}
