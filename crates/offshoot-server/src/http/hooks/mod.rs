//! Git host webhooks: `POST /hooks/github` and `POST /hooks/gitlab`.
//!
//! A request is authenticated before its body is parsed: GitLab's token header before the body is
//! even read; GitHub's HMAC-SHA256 signature computed chunk by chunk while the body streams in,
//! after its header was found well-formed (both compared in constant time). Bodies are capped,
//! the bytes held across requests are budgeted and concurrent requests are bounded ([`body`]), so
//! a flood of unsigned requests is refused at a bounded cost. An authenticated payload is
//! translated into a [`HookJob`], **recorded in the store** (`service::intake`: durable, replays
//! refused by delivery id), and only then answered (202); the intake worker carries it out.

pub mod body;
pub mod github;
pub mod gitlab;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use offshoot_core::{BranchName, RepositoryName};

use crate::config::{ForgeConfig, ForgeKind, RepositoryConfig, Secret};
use crate::http::error::ApiError;
use crate::service::intake::{self, admit, Recorded};
pub use crate::service::intake::{HeadTrigger, HookJob, PullRequestRef};
use crate::state::SharedState;

pub fn router() -> Router<SharedState> {
    let limits = body::Limits::default();
    let gitlab_limits = limits.clone();
    Router::new()
        .route(
            "/hooks/github",
            post(|State(state): State<SharedState>, headers: HeaderMap, request_body: Body| async move {
                // The slot is held until the answer: excess requests are refused, never queued.
                let _slot = match limits.admit() {
                    Ok(slot) => slot,
                    Err(refused) => return refused.into_response(),
                };
                github::receive(&state, &Hooks, &limits, &headers, request_body).await.unwrap_or_else(IntoResponse::into_response)
            }),
        )
        .route(
            "/hooks/gitlab",
            post(|State(state): State<SharedState>, headers: HeaderMap, request_body: Body| async move {
                let _slot = match gitlab_limits.admit() {
                    Ok(slot) => slot,
                    Err(refused) => return refused.into_response(),
                };
                gitlab::receive(&state, &Hooks, &gitlab_limits, &headers, request_body).await.unwrap_or_else(IntoResponse::into_response)
            }),
        )
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
/// fork and branch rules, and record the job (deduplicated by delivery id).
async fn dispatch(
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
    hooks.accept(state, repo, route.kind, route.delivery, job).await
}

/// The webhook receiver; its state (delivery ids, pending jobs) lives in the store.
pub struct Hooks;

impl Hooks {
    /// Records `job` durably unless the delivery was recorded before, then answers.
    async fn accept(
        &self,
        state: &SharedState,
        repo: &RepositoryConfig,
        kind: ForgeKind,
        delivery: Option<&str>,
        job: HookJob,
    ) -> Result<Response, ApiError> {
        Ok(match intake::record(state, repo, kind, delivery, job).await? {
            Recorded::Accepted(description) => {
                answer(StatusCode::ACCEPTED, "accepted", &description)
            }
            Recorded::Duplicate => {
                answer(StatusCode::OK, "duplicate", "this delivery was handled already")
            }
        })
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
fn hook_repositories(
    state: &SharedState,
    kind: ForgeKind,
) -> Vec<(&RepositoryConfig, &ForgeConfig, &Secret)> {
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
fn find_repository<'a>(
    candidates: &[&'a RepositoryConfig],
    payload: &PayloadRepository,
) -> Option<&'a RepositoryConfig> {
    candidates.iter().copied().find(|repo| {
        let Some(forge) = &repo.forge else { return false };
        if let Some(project) = &forge.project {
            return project.eq_ignore_ascii_case(&payload.full_name)
                || payload.id.is_some_and(|id| project == &id.to_string());
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
    let joined =
        if scp_like { without_user.replacen(':', "/", 1) } else { without_user.to_owned() };
    let trimmed = joined.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    match trimmed.split_once('/') {
        Some((host, path)) => format!("{}/{path}", host.to_ascii_lowercase()),
        None => trimmed.to_ascii_lowercase(),
    }
}

/// A full 40- or 64-digit commit id from a payload, naming a commit: the all-zero id, which
/// forges send only as the new head of a deleted branch, is refused (400) rather than accepted
/// and left to fail in the background.
fn commit_id(text: &str, field: &str) -> Result<String, ApiError> {
    let id = any_commit_id(text, field)?;
    if is_null_commit(&id) {
        return Err(malformed(format!("`{field}` is the all-zero commit id, which names no commit (only a branch deletion carries it)")));
    }
    Ok(id)
}

/// A full 40- or 64-digit commit id, the all-zero one included.
fn any_commit_id(text: &str, field: &str) -> Result<String, ApiError> {
    if matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(malformed(format!("`{field}` is not a commit id")))
    }
}

fn is_null_commit(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

fn branch_name(text: &str, field: &str) -> Result<BranchName, ApiError> {
    BranchName::new(text)
        .map_err(|e| ApiError::bad_request("invalid_branch_name", format!("`{field}`: {e}")))
}

/// The branch a ref names, or `None` for tags and other refs: the one place a forge's ref becomes
/// a branch name. `refs/heads/` is stripped exactly once, so `refs/heads/refs/heads/main` is the
/// branch `refs/heads/main`, never `main`.
fn branch_of_ref(reference: &str) -> Option<&str> {
    reference.strip_prefix("refs/heads/")
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
}
