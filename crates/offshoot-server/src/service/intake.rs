//! Durable webhook intake: what an authenticated webhook asks for (a [`HookJob`]), recorded in the
//! store before the answer (deduplicated by delivery id, scoped by host), then carried out by
//! one worker in arrival order, so a close followed by a reopen cannot swap, and a crash after
//! the answer loses nothing: start-up resumes what was not done.
//!
//! Every job is idempotent on its own (the lifecycle's rules: the same commit twice is one
//! revision; an older commit never replaces a newer one; closing a closed deployment changes
//! nothing).

use std::time::Duration;

use offshoot_core::{
    BranchName, DeploymentKind, DeploymentName, DeploymentStatus, PullRequestStatus,
};
use offshoot_store::{Intake, NewIntake, PullRequest};
use serde::{Deserialize, Serialize};

use crate::adapters::mirror;
use crate::config::{ForgeConfig, ForgeKind, RepositoryConfig};
use crate::service::deployer::{self, Push};
use crate::service::deployments::{self, Extras};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::remotes;
use crate::state::{now, SharedState};

/// What recording a job did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded for the worker; the description is for the answer and the log.
    Accepted(String),
    /// The same delivery was recorded before: a replay, ignored.
    Duplicate,
}

/// Records `job` durably unless the delivery was recorded before, and wakes the worker.
pub async fn record(
    state: &SharedState,
    repo: &RepositoryConfig,
    kind: ForgeKind,
    delivery: Option<&str>,
    job: HookJob,
) -> ServiceResult<Recorded> {
    let delivery = delivery.filter(|d| !d.is_empty() && d.len() <= 200).map(str::to_owned);
    let description = job.describe();
    let payload = serde_json::to_string(&job).map_err(ServiceError::internal)?;
    let new = NewIntake {
        source: kind.as_str().to_owned(),
        delivery,
        repository: repo.name.clone(),
        payload,
        received_by: state.config.server_id.clone(),
        now: now(),
    };
    if state.store.record_intake(new).await?.is_none() {
        tracing::info!(
            "webhook for `{}`: delivery already handled; ignoring the replay",
            repo.name
        );
        return Ok(Recorded::Duplicate);
    }
    state.intake_wakeup.notify_one();
    tracing::info!("webhook for `{}`: {description}", repo.name);
    Ok(Recorded::Accepted(description))
}

/// What a webhook asks for, once authenticated and parsed. Branch names are verbatim (hostile:
/// they only ever become deployment names through `deployment_name_for_branch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookJob {
    /// Deploy a pull request's head commit.
    PullRequestHead {
        pull_request: PullRequestRef,
        commit: String,
        base_branch: String,
        trigger: HeadTrigger,
    },
    /// The pull request was closed or merged: close its deployment.
    PullRequestClosed { pull_request: PullRequestRef, merged: bool },
    /// A push to a branch (deploys `prod` when it is the production branch; other branches
    /// deploy through their pull requests).
    BranchPushed {
        #[serde(with = "branch_text")]
        branch: BranchName,
        commit: String,
    },
    /// The branch was deleted: close its deployment.
    BranchDeleted {
        #[serde(with = "branch_text")]
        branch: BranchName,
    },
}

/// A branch name in the intake's JSON: its text, checked again when read back.
mod branch_text {
    use offshoot_core::BranchName;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(branch: &BranchName, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(branch.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BranchName, D::Error> {
        let text = String::deserialize(deserializer)?;
        BranchName::new(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestRef {
    /// The head branch; `owner:branch` for a fork, so a fork's `main` is never production's.
    #[serde(with = "branch_text")]
    pub branch: BranchName,
    pub id: String,
    pub url: String,
    pub from_fork: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadTrigger {
    /// Opened or reopened: reopens a closed deployment.
    Opened,
    /// A new head commit: deploys, but a closed deployment stays closed.
    NewCommit,
    /// The target branch changed: change tracking is recomputed against the new base.
    BaseChanged,
}

/// Runs forever: carries out recorded webhook jobs in the order they were accepted: this server's
/// own, and any other server's that it has not done within two lease lengths (it stopped). A
/// start-up resumes what a crash interrupted.
pub async fn intake_worker(state: SharedState) {
    loop {
        match state.store.pending_intake().await {
            Ok(pending) => {
                let abandoned_before = now() - 2 * state.config.lease.as_millis() as i64;
                for intake in pending.into_iter().filter(|i| {
                    i.received_by == state.config.server_id || i.received_at < abandoned_before
                }) {
                    carry_out(&state, &intake).await;
                    if let Err(error) = state.store.finish_intake(intake.id, now()).await {
                        tracing::error!("webhook job {}: {error}", intake.id.0);
                    }
                }
            }
            Err(error) => tracing::error!("the webhook worker cannot read its intake: {error}"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), state.intake_wakeup.notified()).await;
    }
}

async fn carry_out(state: &SharedState, intake: &Intake) {
    let Some(repo) = state.repository(&intake.repository).cloned() else {
        return tracing::warn!(
            "webhook job {}: repository `{}` is no longer configured",
            intake.id.0,
            intake.repository
        );
    };
    let job: HookJob = match serde_json::from_str(&intake.payload) {
        Ok(job) => job,
        Err(error) => {
            return tracing::error!("webhook job {} cannot be read back: {error}", intake.id.0)
        }
    };
    if let Err(message) = run(state, &repo, job).await {
        tracing::warn!("webhook for `{}`: {message}", repo.name);
    }
}

impl HookJob {
    pub fn describe(&self) -> String {
        match self {
            HookJob::PullRequestHead { pull_request, commit, trigger, .. } => {
                let what = match trigger {
                    HeadTrigger::Opened => "opened",
                    HeadTrigger::NewCommit => "new commit",
                    HeadTrigger::BaseChanged => "base branch changed",
                };
                format!("pull request {} ({what}): deploying {}", pull_request.id, short(commit))
            }
            HookJob::PullRequestClosed { pull_request, merged } => {
                format!(
                    "pull request {} {}: closing its deployment",
                    pull_request.id,
                    if *merged { "merged" } else { "closed" }
                )
            }
            HookJob::BranchPushed { commit, .. } => {
                format!("push to the production branch: deploying {}", short(commit))
            }
            HookJob::BranchDeleted { .. } => "branch deleted: closing its deployment".to_owned(),
        }
    }

    fn needs_fetch(&self) -> bool {
        matches!(self, HookJob::PullRequestHead { .. } | HookJob::BranchPushed { .. })
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Decides what to do with a job once the repository is known: forks and pull requests from the
/// production branch are refused here. `Err` is the reason for ignoring it.
pub fn admit(repo: &RepositoryConfig, forge: &ForgeConfig, job: &HookJob) -> Result<(), String> {
    match job {
        HookJob::PullRequestHead { pull_request, .. } | HookJob::PullRequestClosed { pull_request, .. } => {
            if pull_request.from_fork && !forge.deploy_forks {
                return Err(format!(
                    "pull request {} comes from a fork; set `deploy_forks = true` on repository `{}` to deploy forks",
                    pull_request.id, repo.name
                ));
            }
            if pull_request.branch.as_str() == repo.production_branch {
                return Err(format!("pull request {} is from the production branch, which deploys to prod", pull_request.id));
            }
            Ok(())
        }
        HookJob::BranchPushed { branch, .. } if branch.as_str() != repo.production_branch => {
            Err("a push to a branch other than the production branch; branches deploy through their pull requests".to_owned())
        }
        HookJob::BranchDeleted { branch } if branch.as_str() == repo.production_branch => Err("the production branch was deleted".to_owned()),
        _ => Ok(()),
    }
}

/// Carries out one job. `Err` is a message for the log.
pub async fn run(state: &SharedState, repo: &RepositoryConfig, job: HookJob) -> Result<(), String> {
    if job.needs_fetch() && repo.remote.is_some() {
        mirror::fetch(&state.config.data_dir, repo)
            .await
            .map_err(|e| format!("fetching {}: {e}", mirror::display_url(repo)))?;
        remotes::deploy_production_if_new(state, repo).await;
    }
    match job {
        HookJob::PullRequestHead { pull_request, commit, base_branch, trigger } => {
            deploy_head(state, repo, pull_request, commit, &base_branch, trigger).await
        }
        HookJob::PullRequestClosed { pull_request, merged } => {
            let status = if merged { PullRequestStatus::Merged } else { PullRequestStatus::Closed };
            close_branch(state, repo, &pull_request.branch, Some((&pull_request, status))).await
        }
        HookJob::BranchPushed { branch, commit } => {
            let push = Push {
                repository: repo.name.clone(),
                branch,
                commit,
                pull_request_id: None,
                pull_request_url: None,
                pull_request_status: None,
                base_deployment: None,
                opens: true,
                redeploy: false,
                snapshot_base: None,
            };
            deployer::create_or_update(state, push).await.map(|_| ()).map_err(|e| e.message)
        }
        HookJob::BranchDeleted { branch } => close_branch(state, repo, &branch, None).await,
    }
}

async fn deploy_head(
    state: &SharedState,
    repo: &RepositoryConfig,
    pull_request: PullRequestRef,
    commit: String,
    base_branch: &str,
    trigger: HeadTrigger,
) -> Result<(), String> {
    let existing = state
        .store
        .find_deployment_by_branch(&repo.name, &pull_request.branch)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(deployment) = existing
        .as_ref()
        .filter(|d| d.status == DeploymentStatus::Closed && trigger != HeadTrigger::Opened)
    {
        tracing::info!(
            "pull request {}: `{}` is closed and stays closed until the pull request is reopened; reopening deploys its newest commit",
            pull_request.id,
            deployment.name
        );
    }
    let base_deployment = base_deployment(state, repo, base_branch, trigger).await?;
    let base_changed = trigger == HeadTrigger::BaseChanged
        && existing.as_ref().is_some_and(|d| {
            d.base_deployment.clone().unwrap_or_else(DeploymentName::production)
                != base_deployment.clone().unwrap_or_else(DeploymentName::production)
        });
    let push = Push {
        repository: repo.name.clone(),
        branch: pull_request.branch.clone(),
        commit,
        pull_request_id: Some(pull_request.id.clone()),
        pull_request_url: Some(pull_request.url.clone()),
        pull_request_status: Some(PullRequestStatus::Open),
        base_deployment,
        // Only an opened or reopened pull request reopens a closed deployment; a new commit on a
        // closed one is remembered (reopening deploys it).
        opens: trigger == HeadTrigger::Opened,
        // The same commit against a new base: change tracking compares with the new one.
        redeploy: base_changed,
        snapshot_base: None,
    };
    deployer::create_or_update(state, push).await.map(|_| ()).map_err(|e| e.message)
}

/// The deployment change tracking compares a pull request with: the open deployment of its
/// target branch, or prod. `None` keeps the default (prod) without recording it, except when
/// the base changed, where prod must replace an earlier base explicitly.
async fn base_deployment(
    state: &SharedState,
    repo: &RepositoryConfig,
    base_branch: &str,
    trigger: HeadTrigger,
) -> Result<Option<DeploymentName>, String> {
    let explicit_production =
        (trigger == HeadTrigger::BaseChanged).then(DeploymentName::production);
    if base_branch == repo.production_branch {
        return Ok(explicit_production);
    }
    let Ok(branch) = BranchName::new(base_branch) else { return Ok(explicit_production) };
    match state
        .store
        .find_deployment_by_branch(&repo.name, &branch)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(base) if base.status == DeploymentStatus::Open => Ok(Some(base.name)),
        _ => {
            tracing::info!(
                "the target branch of a pull request has no open deployment; comparing with prod"
            );
            Ok(explicit_production)
        }
    }
}

async fn close_branch(
    state: &SharedState,
    repo: &RepositoryConfig,
    branch: &BranchName,
    pull_request: Option<(&PullRequestRef, PullRequestStatus)>,
) -> Result<(), String> {
    let Some(deployment) = state
        .store
        .find_deployment_by_branch(&repo.name, branch)
        .await
        .map_err(|e| e.to_string())?
    else {
        tracing::info!("webhook for `{}`: the branch has no deployment to close", repo.name);
        return Ok(());
    };
    if deployment.kind == DeploymentKind::Production {
        return Ok(());
    }
    let (reason, status, extras) = match pull_request {
        Some((pull_request, status)) => {
            let known =
                PullRequest { id: pull_request.id.clone(), url: pull_request.url.clone(), status };
            (
                format!("pull request {}", status.as_str().to_lowercase()),
                Some(status),
                Extras { pull_request: Some(known), ..Extras::default() },
            )
        }
        // A deleted branch ends its pull request too: one still open shows closed (a merged
        // one stays merged).
        None => {
            let open_pull_request = deployment
                .pull_request
                .as_ref()
                .is_some_and(|p| p.status == PullRequestStatus::Open);
            (
                "the branch was deleted".to_owned(),
                open_pull_request.then_some(PullRequestStatus::Closed),
                Extras::default(),
            )
        }
    };
    // Closing a closed deployment records a merge that followed a close and changes nothing else.
    let keep = match crate::service::catch_up::hold_at_close(state, &deployment, status).await {
        true => deployments::Keep::TablesForCatchUp,
        false => deployments::Keep::Nothing,
    };
    deployments::close_with(state, &deployment, &reason, status, keep, extras)
        .await
        .map(|_| ())
        .map_err(|e| e.message)
}
