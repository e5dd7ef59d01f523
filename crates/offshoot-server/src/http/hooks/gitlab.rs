//! `POST /hooks/gitlab`: `X-Gitlab-Token` (the repository's webhook secret, compared in constant
//! time, before the body is read), `Merge Request Hook` and `Push Hook` events, dedupe by `X-Gitlab-Event-UUID`. Payload
//! fields follow GitLab's documented webhook events.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::body::{self, Limits};
use super::{
    any_commit_id, branch_name, branch_of_ref, commit_id, dispatch, header, hook_repositories,
    is_null_commit, malformed, unauthorized, HeadTrigger, HookJob, Hooks, Interpretation,
    PayloadRepository, PullRequestRef, Route,
};
use crate::config::{ForgeKind, RepositoryConfig};
use crate::http::error::ApiError;
use crate::state::{Metrics, SharedState};

pub async fn receive(
    state: &SharedState,
    hooks: &Hooks,
    limits: &Limits,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    Metrics::increment(&state.metrics.http_requests);
    let candidates = hook_repositories(state, ForgeKind::GitLab);
    if candidates.is_empty() {
        return Err(unauthorized("no repository accepts GitLab webhooks: configure `forge = \"gitlab\"` and a `webhook_secret`"));
    }
    let token = header(headers, "x-gitlab-token").ok_or_else(|| {
        unauthorized("the X-Gitlab-Token header is missing; set the webhook's secret token")
    })?;
    let verified: Vec<&RepositoryConfig> = candidates
        .iter()
        .filter(|(_, _, secret)| secret.matches(token.as_bytes()))
        .map(|(repo, _, _)| *repo)
        .collect();
    if verified.is_empty() {
        return Err(unauthorized("the X-Gitlab-Token does not match the webhook secret"));
    }
    let event = header(headers, "x-gitlab-event")
        .ok_or_else(|| malformed("the X-Gitlab-Event header is missing"))?;
    // Only an authenticated request's body is read at all.
    let received = match body::read(limits, headers, request_body, |_| ()).await {
        Ok(received) => received,
        Err(refused) => return Ok(refused.into_response()),
    };
    let payload: serde_json::Value = serde_json::from_slice(&received.bytes)
        .map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
    drop(received);
    let configured: Vec<&RepositoryConfig> = candidates.iter().map(|(repo, _, _)| *repo).collect();
    let route = Route {
        kind: ForgeKind::GitLab,
        delivery: header(headers, "x-gitlab-event-uuid"),
        mismatch: "the X-Gitlab-Token does not match this repository's webhook secret",
    };
    dispatch(state, hooks, &configured, &verified, interpret(event, payload)?, route).await
}

/// Translates one event; `Err` (400) when a field the event needs is missing or malformed.
pub fn interpret(event: &str, payload: serde_json::Value) -> Result<Interpretation, ApiError> {
    match event {
        "Merge Request Hook" => merge_request(payload),
        "Push Hook" => push(payload),
        other => {
            Ok(Interpretation::Ignored(format!("`{}` events are not used", other.escape_debug())))
        }
    }
}

#[derive(Deserialize)]
struct Project {
    /// Absent from the `project` of push events in GitLab's published examples (system hooks,
    /// and project hooks before `project.id` was added), which carry only the top-level
    /// `project_id`.
    id: Option<u64>,
    path_with_namespace: String,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
}

impl Project {
    fn describe(self) -> PayloadRepository {
        PayloadRepository {
            full_name: self.path_with_namespace,
            id: self.id,
            urls: [self.git_http_url, self.git_ssh_url, self.web_url]
                .into_iter()
                .flatten()
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct MergeRequestEvent {
    project: Project,
    object_attributes: MergeRequest,
    #[serde(default)]
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    action: Option<String>,
    source_branch: String,
    target_branch: String,
    source_project_id: u64,
    target_project_id: u64,
    url: String,
    last_commit: LastCommit,
    /// Present on `update` when new commits were pushed.
    oldrev: Option<String>,
    source: Option<SourceProject>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

#[derive(Deserialize)]
struct SourceProject {
    path_with_namespace: String,
}

#[derive(Deserialize)]
struct Changes {
    target_branch: Option<serde_json::Value>,
}

fn parse<T: serde::de::DeserializeOwned>(
    payload: serde_json::Value,
    event: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(payload).map_err(|e| malformed(format!("not a `{event}` payload: {e}")))
}

fn merge_request(payload: serde_json::Value) -> Result<Interpretation, ApiError> {
    let event: MergeRequestEvent = parse(payload, "Merge Request Hook")?;
    let attributes = &event.object_attributes;
    let base_changed = event.changes.as_ref().and_then(|c| c.target_branch.as_ref()).is_some();
    let trigger = match attributes.action.as_deref() {
        Some("open" | "reopen") => Some(HeadTrigger::Opened),
        Some("update") if base_changed => Some(HeadTrigger::BaseChanged),
        Some("update") if attributes.oldrev.is_some() => Some(HeadTrigger::NewCommit),
        Some("update") => {
            return Ok(Interpretation::Ignored(
                "the merge request was updated without new commits or a new target branch"
                    .to_owned(),
            ))
        }
        Some("close" | "merge") => None,
        other => {
            let action = other.unwrap_or("(none)").escape_debug().to_string();
            return Ok(Interpretation::Ignored(format!(
                "merge request action `{action}` changes no deployment"
            )));
        }
    };
    let from_fork = attributes.source_project_id != attributes.target_project_id;
    // A fork's branch is named `namespace/project:branch`, so it can never be taken for a branch
    // of the project itself.
    let branch = if from_fork {
        let owner = attributes
            .source
            .as_ref()
            .map(|s| s.path_with_namespace.clone())
            .unwrap_or_else(|| format!("fork-{}", attributes.source_project_id));
        branch_name(
            &format!("{owner}:{}", attributes.source_branch),
            "object_attributes.source_branch",
        )?
    } else {
        branch_name(&attributes.source_branch, "object_attributes.source_branch")?
    };
    let pull_request = PullRequestRef {
        branch,
        id: attributes.iid.to_string(),
        url: attributes.url.clone(),
        from_fork,
    };
    let job = match trigger {
        None => HookJob::PullRequestClosed {
            pull_request,
            merged: attributes.action.as_deref() == Some("merge"),
        },
        Some(trigger) => HookJob::PullRequestHead {
            pull_request,
            commit: commit_id(&attributes.last_commit.id, "object_attributes.last_commit.id")?,
            base_branch: attributes.target_branch.clone(),
            trigger,
        },
    };
    Ok(Interpretation::Job(event.project.describe(), job))
}

#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    project_id: Option<u64>,
    project: Project,
}

impl PushEvent {
    /// The project, with its id from `project.id` or else the top-level `project_id`.
    fn project_of_push(self) -> PayloadRepository {
        let fallback = self.project_id;
        let mut repository = self.project.describe();
        repository.id = repository.id.or(fallback);
        repository
    }
}

fn push(payload: serde_json::Value) -> Result<Interpretation, ApiError> {
    let event: PushEvent = parse(payload, "Push Hook")?;
    let Some(branch) = branch_of_ref(&event.reference) else {
        return Ok(Interpretation::Ignored("a push to a tag or another non-branch ref".to_owned()));
    };
    let branch = branch_name(branch, "ref")?;
    let commit = any_commit_id(&event.after, "after")?;
    // GitLab announces a deleted branch as a push whose `after` is all zeros.
    let job = if is_null_commit(&commit) {
        HookJob::BranchDeleted { branch }
    } else {
        HookJob::BranchPushed { branch, commit }
    };
    Ok(Interpretation::Job(event.project_of_push(), job))
}
