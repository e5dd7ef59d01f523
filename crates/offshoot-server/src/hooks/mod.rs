//! Git host webhooks: `POST /hooks/github` and `POST /hooks/gitlab`.
//!
//! A request is authenticated (GitHub: HMAC-SHA256 of the raw body, GitLab: the shared token;
//! both compared in constant time) before its body is even parsed, then translated into a
//! [`HookJob`] and answered at once (202); the job runs in the background on its repository's
//! queue, one job at a time and in arrival order, so a close followed by a reopen cannot swap.
//!
//! Replays: delivery ids seen recently are kept in memory (a bounded list), and every job is
//! idempotent on its own (the same commit twice is one revision; an older commit never replaces
//! a newer one; closing a closed deployment changes nothing), so a replay after a restart is a
//! no-op too.

pub mod github;
pub mod gitlab;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use offshoot_core::{BranchName, DeploymentKind, DeploymentName, DeploymentStatus, PullRequestStatus, RepositoryName, RevisionStatus};
use offshoot_store::{NewRevision, PullRequest};
use tokio::sync::mpsc;

use crate::config::{ForgeConfig, ForgeKind, RepositoryConfig, Secret};
use crate::deploy::{self, Push};
use crate::error::ApiError;
use crate::state::{now, SharedState};
use crate::{lifecycle, mirror};

/// GitHub caps payloads at 25 MB; a larger body is refused before it is read.
const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
/// Delivery ids remembered for replay detection.
const REMEMBERED_DELIVERIES: usize = 10_000;
/// Jobs waiting per repository before new deliveries are refused with 503 (the host retries).
const QUEUE_CAPACITY: usize = 1_000;

pub fn router() -> Router<SharedState> {
    let hooks = Arc::new(Hooks::default());
    let for_gitlab = hooks.clone();
    Router::new()
        .route(
            "/hooks/github",
            post(move |State(state): State<SharedState>, headers: HeaderMap, body: Bytes| {
                let hooks = hooks.clone();
                async move { github::receive(&state, &hooks, &headers, &body).await.unwrap_or_else(IntoResponse::into_response) }
            }),
        )
        .route(
            "/hooks/gitlab",
            post(move |State(state): State<SharedState>, headers: HeaderMap, body: Bytes| {
                let hooks = for_gitlab.clone();
                async move { gitlab::receive(&state, &hooks, &headers, &body).await.unwrap_or_else(IntoResponse::into_response) }
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// What a webhook asks for, once authenticated and parsed. Branch names are verbatim (hostile:
/// they only ever become deployment names through `deployment_name_for_branch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookJob {
    /// Deploy a pull request's head commit.
    PullRequestHead { pull_request: PullRequestRef, commit: String, base_branch: String, trigger: HeadTrigger },
    /// The pull request was closed or merged: close its deployment.
    PullRequestClosed { pull_request: PullRequestRef, merged: bool },
    /// A push to a branch (deploys `prod` when it is the production branch; other branches
    /// deploy through their pull requests).
    BranchPushed { branch: BranchName, commit: String },
    /// The branch was deleted: close its deployment.
    BranchDeleted { branch: BranchName },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestRef {
    /// The head branch; `owner:branch` for a fork, so a fork's `main` is never production's.
    pub branch: BranchName,
    pub id: String,
    pub url: String,
    pub from_fork: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadTrigger {
    /// Opened or reopened: reopens a closed deployment.
    Opened,
    /// A new head commit: deploys, but a closed deployment stays closed.
    NewCommit,
    /// The target branch changed: change tracking is recomputed against the new base.
    BaseChanged,
}

/// How a payload names its repository, to find it among the configured ones.
#[derive(Debug, Default)]
pub struct PayloadRepository {
    /// `owner/repo` on GitHub, `path_with_namespace` on GitLab.
    pub full_name: String,
    /// GitLab's numeric project id.
    pub id: Option<u64>,
    /// Clone URLs (https and ssh) and the web URL.
    pub urls: Vec<String>,
}

/// What an authenticated payload asks for.
#[derive(Debug)]
pub enum Interpretation {
    Ignored(String),
    Job(PayloadRepository, HookJob),
}

/// How one provider's hook routes an authenticated payload.
pub struct Route<'a> {
    kind: ForgeKind,
    delivery: Option<&'a str>,
    /// The 401 message when the payload names a repository whose secret did not sign it.
    mismatch: &'static str,
}

/// The part both providers share once the request is authenticated and parsed: find the
/// repository the payload names, require that its own secret verified the request, apply the
/// fork and branch rules, and queue the job (deduplicated by delivery id).
fn dispatch(
    state: &SharedState,
    hooks: &Hooks,
    configured: &[&RepositoryConfig],
    verified: &[&RepositoryConfig],
    interpretation: Interpretation,
    route: Route<'_>,
) -> Result<Response, ApiError> {
    let (repository, job) = match interpretation {
        Interpretation::Ignored(reason) => return Ok(ignored(&reason)),
        Interpretation::Job(repository, job) => (repository, job),
    };
    let Some(repo) = find_repository(configured, &repository) else {
        return Ok(ignored(&format!("no configured repository is {:?}", repository.full_name)));
    };
    if !verified.iter().any(|v| v.name == repo.name) {
        return Err(unauthorized(route.mismatch));
    }
    let forge = repo.forge.as_ref().expect("hook repositories have a forge");
    if let Err(reason) = admit(repo, forge, &job) {
        return Ok(ignored(&reason));
    }
    hooks.accept(state, repo, route.kind, route.delivery, job)
}

/// In-process hook state: recent delivery ids and one job queue per repository.
#[derive(Default)]
pub struct Hooks {
    deliveries: Mutex<DeliveryLog>,
    queues: Mutex<HashMap<RepositoryName, mpsc::Sender<HookJob>>>,
}

/// A bounded set of delivery ids, oldest forgotten first.
#[derive(Default)]
struct DeliveryLog {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl DeliveryLog {
    /// `false` if the id was seen already.
    fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= REMEMBERED_DELIVERIES {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back(id.to_owned());
        self.seen.insert(id.to_owned());
        true
    }

    fn forget(&mut self, id: &str) {
        self.seen.remove(id);
        self.order.retain(|seen| seen != id);
    }
}

impl Hooks {
    /// Queues `job` on the repository's queue unless the delivery was seen before.
    fn accept(&self, state: &SharedState, repo: &RepositoryConfig, kind: ForgeKind, delivery: Option<&str>, job: HookJob) -> Result<Response, ApiError> {
        // Scoped by host kind, so a GitHub and a GitLab id can never collide.
        let delivery = delivery.filter(|d| !d.is_empty() && d.len() <= 200).map(|d| format!("{}:{d}", kind.as_str()));
        if let Some(id) = &delivery {
            if !self.deliveries.lock().expect("never poisoned: no panics inside").insert(id) {
                tracing::info!("webhook for `{}`: delivery already handled; ignoring the replay", repo.name);
                return Ok(answer(StatusCode::OK, "duplicate", "this delivery was handled already"));
            }
        }
        let description = job.describe();
        if let Err(refused) = self.queue(state, repo).try_send(job) {
            if let Some(id) = &delivery {
                self.deliveries.lock().expect("never poisoned: no panics inside").forget(id);
            }
            let reason = match refused {
                mpsc::error::TrySendError::Full(_) => "too many webhook events are waiting; retry later",
                mpsc::error::TrySendError::Closed(_) => "the webhook worker stopped; retry later",
            };
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "hook_queue_full", reason));
        }
        tracing::info!("webhook for `{}`: {description}", repo.name);
        Ok(answer(StatusCode::ACCEPTED, "accepted", &description))
    }

    fn queue(&self, state: &SharedState, repo: &RepositoryConfig) -> mpsc::Sender<HookJob> {
        let mut queues = self.queues.lock().expect("never poisoned: no panics inside");
        if let Some(sender) = queues.get(&repo.name).filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(work_through(state.clone(), repo.clone(), receiver));
        queues.insert(repo.name.clone(), sender.clone());
        sender
    }
}

/// A JSON answer: `{"status": ..., "detail": ...}`.
fn answer(status: StatusCode, outcome: &str, detail: &str) -> Response {
    (status, Json(serde_json::json!({ "status": outcome, "detail": detail }))).into_response()
}

/// 202 for an event that changes nothing; logged, so a misconfigured hook can be diagnosed.
fn ignored(detail: &str) -> Response {
    tracing::info!("webhook ignored: {detail}");
    answer(StatusCode::ACCEPTED, "ignored", detail)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Repositories that accept webhooks from this kind of host (those with a secret).
fn hook_repositories(state: &SharedState, kind: ForgeKind) -> Vec<(&RepositoryConfig, &ForgeConfig, &Secret)> {
    state
        .config
        .repositories
        .iter()
        .filter_map(|repo| {
            let forge = repo.forge.as_ref().filter(|f| f.kind == kind)?;
            Some((repo, forge, forge.webhook_secret.as_ref()?))
        })
        .collect()
}

/// The configured repository a payload names: by `project` when configured, else by the remote
/// URL, else by the repository name (`acme/shop` → `shop`).
fn find_repository<'a>(candidates: &[&'a RepositoryConfig], payload: &PayloadRepository) -> Option<&'a RepositoryConfig> {
    candidates.iter().copied().find(|repo| {
        let Some(forge) = &repo.forge else { return false };
        if let Some(project) = &forge.project {
            return project.eq_ignore_ascii_case(&payload.full_name) || payload.id.is_some_and(|id| project == &id.to_string());
        }
        if let Some(remote) = &repo.remote {
            let configured = normalize_url(&remote.url);
            return payload.urls.iter().any(|url| normalize_url(url) == configured);
        }
        RepositoryName::from_any(&payload.full_name).is_ok_and(|name| name == repo.name)
    })
}

/// `https://user@Host/a/b.git/`, `ssh://git@host/a/b`, `git@host:a/b.git` → `host/a/b`.
fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let without_scheme = match url.find("://") {
        Some(index) => &url[index + 3..],
        // scp-like `user@host:path`
        None => url,
    };
    let without_user = match without_scheme.split_once('@') {
        Some((user, rest)) if !user.contains('/') => rest,
        _ => without_scheme,
    };
    let scp_like = !url.contains("://");
    let joined = if scp_like { without_user.replacen(':', "/", 1) } else { without_user.to_owned() };
    let trimmed = joined.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    match trimmed.split_once('/') {
        Some((host, path)) => format!("{}/{path}", host.to_ascii_lowercase()),
        None => trimmed.to_ascii_lowercase(),
    }
}

/// A full 40- or 64-digit commit id from a payload.
fn commit_id(text: &str, field: &str) -> Result<String, ApiError> {
    if matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(malformed(format!("`{field}` is not a commit id")))
    }
}

fn branch_name(text: &str, field: &str) -> Result<BranchName, ApiError> {
    BranchName::new(text).map_err(|e| ApiError::bad_request("invalid_branch_name", format!("`{field}`: {e}")))
}

/// The branch a ref names, or `None` for tags and other refs.
fn branch_of_ref(reference: &str) -> Option<&str> {
    reference.strip_prefix("refs/heads/")
}

impl HookJob {
    fn describe(&self) -> String {
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
                format!("pull request {} {}: closing its deployment", pull_request.id, if *merged { "merged" } else { "closed" })
            }
            HookJob::BranchPushed { commit, .. } => format!("push to the production branch: deploying {}", short(commit)),
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
fn admit(repo: &RepositoryConfig, forge: &ForgeConfig, job: &HookJob) -> Result<(), String> {
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

/// One repository's queue: jobs run one at a time, in the order they were accepted.
async fn work_through(state: SharedState, repo: RepositoryConfig, mut jobs: mpsc::Receiver<HookJob>) {
    while let Some(job) = jobs.recv().await {
        if let Err(message) = run(&state, &repo, job).await {
            tracing::warn!("webhook for `{}`: {message}", repo.name);
        }
    }
}

/// Carries out one job. `Err` is a message for the log.
pub async fn run(state: &SharedState, repo: &RepositoryConfig, job: HookJob) -> Result<(), String> {
    if job.needs_fetch() && repo.remote.is_some() {
        mirror::fetch(&state.config.data_dir, repo).await.map_err(|e| format!("fetching {}: {e}", mirror::display_url(repo)))?;
        mirror::deploy_production_if_new(state, repo).await;
    }
    match job {
        HookJob::PullRequestHead { pull_request, commit, base_branch, trigger } => deploy_head(state, repo, pull_request, commit, &base_branch, trigger).await,
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
            };
            deploy::create_or_update(state, push).await.map(|_| ()).map_err(|e| e.message)
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
    let existing = state.store.find_deployment_by_branch(&repo.name, &pull_request.branch).await.map_err(|e| e.to_string())?;
    if let Some(deployment) = &existing {
        if deployment.status == DeploymentStatus::Closed && trigger != HeadTrigger::Opened {
            tracing::info!("pull request {}: `{}` is closed and stays closed until the pull request is reopened", pull_request.id, deployment.name);
            return Ok(());
        }
    }
    let base_deployment = base_deployment(state, repo, base_branch, trigger).await?;
    let base_changed = trigger == HeadTrigger::BaseChanged
        && existing.as_ref().is_some_and(|d| d.base_deployment.clone().unwrap_or_else(DeploymentName::production) != base_deployment.clone().unwrap_or_else(DeploymentName::production));
    let push = Push {
        repository: repo.name.clone(),
        branch: pull_request.branch.clone(),
        commit,
        pull_request_id: Some(pull_request.id.clone()),
        pull_request_url: Some(pull_request.url.clone()),
        pull_request_status: Some(PullRequestStatus::Open),
        base_deployment,
    };
    let outcome = deploy::create_or_update(state, push).await.map_err(|e| e.message)?;
    // The same commit is already deployed, against the old base: deploy it again so change
    // tracking compares with the new one.
    if let (true, Some(revision)) = (base_changed, outcome.revision) {
        if matches!(revision.status, RevisionStatus::Ready | RevisionStatus::Failed) {
            state
                .store
                .insert_revision(NewRevision { deployment_id: outcome.deployment.id, commit: revision.commit, status: RevisionStatus::Queued, error: None, now: now() })
                .await
                .map_err(|e| e.to_string())?;
            state.deploy_wakeup.notify_one();
        }
    }
    Ok(())
}

/// The deployment change tracking compares a pull request with: the open deployment of its
/// target branch, or prod. `None` keeps the default (prod) without recording it, except when
/// the base changed, where prod must replace an earlier base explicitly.
async fn base_deployment(state: &SharedState, repo: &RepositoryConfig, base_branch: &str, trigger: HeadTrigger) -> Result<Option<DeploymentName>, String> {
    let explicit_production = (trigger == HeadTrigger::BaseChanged).then(DeploymentName::production);
    if base_branch == repo.production_branch {
        return Ok(explicit_production);
    }
    let Ok(branch) = BranchName::new(base_branch) else { return Ok(explicit_production) };
    match state.store.find_deployment_by_branch(&repo.name, &branch).await.map_err(|e| e.to_string())? {
        Some(base) if base.status == DeploymentStatus::Open => Ok(Some(base.name)),
        _ => {
            tracing::info!("the target branch of a pull request has no open deployment; comparing with prod");
            Ok(explicit_production)
        }
    }
}

async fn close_branch(state: &SharedState, repo: &RepositoryConfig, branch: &BranchName, pull_request: Option<(&PullRequestRef, PullRequestStatus)>) -> Result<(), String> {
    let Some(mut deployment) = state.store.find_deployment_by_branch(&repo.name, branch).await.map_err(|e| e.to_string())? else {
        tracing::info!("webhook for `{}`: the branch has no deployment to close", repo.name);
        return Ok(());
    };
    if deployment.kind == DeploymentKind::Production {
        return Ok(());
    }
    let reason = match pull_request {
        Some((pull_request, status)) => {
            deployment.pull_request = Some(PullRequest { id: pull_request.id.clone(), url: pull_request.url.clone(), status });
            format!("pull request {}", status.as_str().to_lowercase())
        }
        None => "the branch was deleted".to_owned(),
    };
    if deployment.status == DeploymentStatus::Closed {
        // Already closed: record a merge that followed a close, change nothing else.
        if pull_request.is_some() {
            state.store.update_deployment(&deployment).await.map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    state.store.update_deployment(&deployment).await.map_err(|e| e.to_string())?;
    lifecycle::close(state, deployment, &reason).await.map(|_| ()).map_err(|e| e.message)
}

/// Compares two secrets in time independent of their content: both are hashed first, so neither
/// the position of a difference nor the length shows.
fn same_secret(presented: &[u8], configured: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(presented), Sha256::digest(configured));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalize_to_host_and_path() {
        for url in [
            "https://github.com/acme/shop.git",
            "https://token@GitHub.com/acme/shop/",
            "git@github.com:acme/shop.git",
            "ssh://git@github.com/acme/shop",
        ] {
            assert_eq!(normalize_url(url), "github.com/acme/shop", "{url}");
        }
        assert_eq!(normalize_url("file:///srv/git/shop.git"), "/srv/git/shop");
    }

    #[test]
    fn delivery_log_forgets_the_oldest() {
        let mut log = DeliveryLog::default();
        assert!(log.insert("a"));
        assert!(!log.insert("a"));
        for i in 0..REMEMBERED_DELIVERIES {
            log.insert(&i.to_string());
        }
        assert!(log.insert("a"), "the oldest id was forgotten");
        assert_eq!(log.seen.len(), REMEMBERED_DELIVERIES);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cres"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
