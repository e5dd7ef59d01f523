//! `POST /hooks/github`: `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the
//! repository's webhook secret, computed while the body streams in), `ping`, `pull_request` and
//! `push` events, dedupe by `X-GitHub-Delivery`. Payload fields follow GitHub's documented
//! webhook payloads.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::body::{self, Limits};
use super::{
    answer, branch_name, branch_of_ref, commit_id, dispatch, header, hook_repositories, malformed,
    unauthorized, HeadTrigger, HookJob, Hooks, Interpretation, PayloadRepository, PullRequestRef,
    Route,
};
use crate::config::{ForgeKind, RepositoryConfig};
use crate::http::error::ApiError;
use crate::state::{Metrics, SharedState};

/// The `X-Hub-Signature-256` value GitHub sends for `body` signed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    let code = mac.finalize().into_bytes();
    format!("sha256={}", code.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Whether `header` (`sha256=<hex>`) is the HMAC of `body` under `secret`; constant-time.
pub fn signature_matches(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(mut check) = SignatureCheck::new(header, [secret]) else { return false };
    check.update(body);
    check.matching() == [0]
}

/// A presented signature checked against every candidate secret at once, fed the body chunk by
/// chunk as it streams in.
struct SignatureCheck {
    presented: Vec<u8>,
    macs: Vec<Hmac<Sha256>>,
}

impl SignatureCheck {
    /// `None` when the header is not `sha256=` and 64 hex digits: refused before the body is read.
    fn new<'a>(header: &str, secrets: impl IntoIterator<Item = &'a str>) -> Option<SignatureCheck> {
        let presented = decode_hex(header.strip_prefix("sha256=")?)?;
        let macs = secrets
            .into_iter()
            .map(|secret| {
                Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes a key of any length")
            })
            .collect();
        Some(SignatureCheck { presented, macs })
    }

    fn update(&mut self, chunk: &[u8]) {
        for mac in &mut self.macs {
            mac.update(chunk);
        }
    }

    /// The indexes of the secrets whose HMAC is the presented one.
    fn matching(self) -> Vec<usize> {
        let presented = self.presented;
        self.macs
            .into_iter()
            .enumerate()
            .filter(|(_, mac)| mac.clone().verify_slice(&presented).is_ok())
            .map(|(index, _)| index)
            .collect()
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

pub async fn receive(
    state: &SharedState,
    hooks: &Hooks,
    limits: &Limits,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    Metrics::increment(&state.metrics.http_requests);
    let candidates = hook_repositories(state, ForgeKind::GitHub);
    if candidates.is_empty() {
        return Err(unauthorized("no repository accepts GitHub webhooks: configure `forge = \"github\"` and a `webhook_secret`"));
    }
    // Everything the headers can refuse is refused before the body is read.
    let signature = header(headers, "x-hub-signature-256").ok_or_else(|| {
        unauthorized("the X-Hub-Signature-256 header is missing; set the webhook's secret")
    })?;
    let Some(mut check) =
        SignatureCheck::new(signature, candidates.iter().map(|(_, _, secret)| secret.expose()))
    else {
        return Err(unauthorized(
            "the X-Hub-Signature-256 header is not `sha256=` and 64 hex digits",
        ));
    };
    // Authenticated before anything in the body is looked at: the HMAC is computed as it streams.
    let received =
        match body::read(limits, headers, request_body, |chunk| check.update(chunk)).await {
            Ok(received) => received,
            Err(refused) => return Ok(refused.into_response()),
        };
    let verified: Vec<&RepositoryConfig> =
        check.matching().into_iter().map(|index| candidates[index].0).collect();
    if verified.is_empty() {
        return Err(unauthorized(
            "the X-Hub-Signature-256 signature does not match the webhook secret",
        ));
    }
    let event = header(headers, "x-github-event")
        .ok_or_else(|| malformed("the X-GitHub-Event header is missing"))?;
    if header(headers, "content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    {
        return Err(malformed("set the webhook's content type to application/json"));
    }
    let payload: serde_json::Value = serde_json::from_slice(&received.bytes)
        .map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
    drop(received);
    if event == "ping" {
        return Ok(answer(StatusCode::OK, "pong", "the webhook is set up"));
    }
    let configured: Vec<&RepositoryConfig> = candidates.iter().map(|(repo, _, _)| *repo).collect();
    let route = Route {
        kind: ForgeKind::GitHub,
        delivery: header(headers, "x-github-delivery"),
        mismatch:
            "the X-Hub-Signature-256 signature does not match this repository's webhook secret",
    };
    dispatch(state, hooks, &configured, &verified, interpret(event, payload)?, route).await
}

/// Translates one event; `Err` (400) when a field the event needs is missing or malformed.
pub fn interpret(event: &str, payload: serde_json::Value) -> Result<Interpretation, ApiError> {
    match event {
        "pull_request" => pull_request(payload),
        "push" => push(payload),
        other => {
            Ok(Interpretation::Ignored(format!("`{}` events are not used", other.escape_debug())))
        }
    }
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    clone_url: Option<String>,
    ssh_url: Option<String>,
    html_url: Option<String>,
}

impl Repository {
    fn describe(self) -> PayloadRepository {
        PayloadRepository {
            full_name: self.full_name,
            id: None,
            urls: [self.clone_url, self.ssh_url, self.html_url].into_iter().flatten().collect(),
        }
    }
}

#[derive(Deserialize)]
struct Action {
    action: String,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    number: u64,
    pull_request: PullRequestPayload,
    repository: Repository,
    #[serde(default)]
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    html_url: String,
    #[serde(default)]
    merged: Option<bool>,
    head: Side,
    base: Side,
}

#[derive(Deserialize)]
struct Side {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
    label: Option<String>,
    /// `null` when the head's fork was deleted.
    repo: Option<SideRepository>,
}

#[derive(Deserialize)]
struct SideRepository {
    id: Option<u64>,
    full_name: String,
}

#[derive(Deserialize)]
struct Changes {
    /// Present when the pull request's base branch was changed.
    base: Option<serde_json::Value>,
}

fn parse<T: serde::de::DeserializeOwned>(
    payload: serde_json::Value,
    event: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(payload).map_err(|e| malformed(format!("not a `{event}` payload: {e}")))
}

fn pull_request(payload: serde_json::Value) -> Result<Interpretation, ApiError> {
    let Action { action } = parse(payload.clone(), "pull_request")?;
    let trigger = match action.as_str() {
        "opened" | "reopened" => Some(HeadTrigger::Opened),
        "synchronize" => Some(HeadTrigger::NewCommit),
        "edited" => Some(HeadTrigger::BaseChanged),
        "closed" => None,
        other => {
            return Ok(Interpretation::Ignored(format!(
                "pull request action `{}` changes no deployment",
                other.escape_debug()
            )))
        }
    };
    let event: PullRequestEvent = parse(payload, "pull_request")?;
    if trigger == Some(HeadTrigger::BaseChanged)
        && event.changes.as_ref().and_then(|c| c.base.as_ref()).is_none()
    {
        return Ok(Interpretation::Ignored(
            "the pull request was edited but its base branch did not change".to_owned(),
        ));
    }
    let head = &event.pull_request.head;
    let from_fork = match (&head.repo, &event.pull_request.base.repo) {
        (Some(head_repo), Some(base_repo)) => match (head_repo.id, base_repo.id) {
            (Some(head_id), Some(base_id)) => head_id != base_id,
            _ => !head_repo.full_name.eq_ignore_ascii_case(&base_repo.full_name),
        },
        (None, _) => true,
        (Some(head_repo), None) => {
            !head_repo.full_name.eq_ignore_ascii_case(&event.repository.full_name)
        }
    };
    // A fork's branch is named `owner:branch`, as GitHub labels it, so it can never be taken for
    // a branch of the repository itself (its `main` is not production's).
    let branch = if from_fork {
        let label = head
            .label
            .clone()
            .filter(|l| l.contains(':'))
            .unwrap_or_else(|| format!("fork:{}", head.branch));
        branch_name(&label, "pull_request.head.label")?
    } else {
        branch_name(&head.branch, "pull_request.head.ref")?
    };
    let pull_request = PullRequestRef {
        branch,
        id: event.number.to_string(),
        url: event.pull_request.html_url.clone(),
        from_fork,
    };
    let job = match trigger {
        None => HookJob::PullRequestClosed {
            pull_request,
            merged: event.pull_request.merged.unwrap_or(false),
        },
        Some(trigger) => HookJob::PullRequestHead {
            pull_request,
            commit: commit_id(&head.sha, "pull_request.head.sha")?,
            base_branch: event.pull_request.base.branch.clone(),
            trigger,
        },
    };
    Ok(Interpretation::Job(event.repository.describe(), job))
}

#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
}

fn push(payload: serde_json::Value) -> Result<Interpretation, ApiError> {
    let event: PushEvent = parse(payload, "push")?;
    let Some(branch) = branch_of_ref(&event.reference) else {
        return Ok(Interpretation::Ignored("a push to a tag or another non-branch ref".to_owned()));
    };
    let branch = branch_name(branch, "ref")?;
    let job = if event.deleted {
        HookJob::BranchDeleted { branch }
    } else {
        HookJob::BranchPushed { branch, commit: commit_id(&event.after, "after")? }
    };
    Ok(Interpretation::Job(event.repository.describe(), job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(signature("It's a Secret to Everybody", b"Hello, World!"), header);
        assert!(signature_matches("It's a Secret to Everybody", b"Hello, World!", header));
        assert!(!signature_matches("It's a Secret to Everybody", b"Hello, World?", header));
        assert!(!signature_matches("another secret", b"Hello, World!", header));
        assert!(!signature_matches(
            "It's a Secret to Everybody",
            b"Hello, World!",
            "sha1=757107ea"
        ));
        assert!(!signature_matches("It's a Secret to Everybody", b"Hello, World!", "sha256=zz"));
        assert!(!signature_matches(
            "It's a Secret to Everybody",
            b"Hello, World!",
            "sha256=é57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"
        ));
    }
}
