//! The forges' REST APIs (GitHub and GitLab), blocking `ureq`: where a deployment's pull
//! request lives on the host ([`FeedbackTarget`]), comments found by a marker and edited in
//! place, commit statuses. Without the `tls` feature only plain-HTTP API URLs work. The token
//! goes in a header and never into an error, even when the host's answer echoes it.

use std::time::Duration;

use offshoot_store::Deployment;

use crate::config::{ForgeConfig, ForgeKind};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("cannot tell which project and pull request to write to: {0}")]
    Target(String),
    #[error("{0} is https, but this build has no TLS; build with the `tls` feature or use a plain-HTTP proxy")]
    NoTls(String),
    #[error("{method} {path}: {detail}")]
    Http { method: &'static str, path: String, detail: String },
}

/// Whether this build can call `https://` APIs.
pub const TLS: bool = cfg!(feature = "tls");

const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Comment pages read looking for the marker (100 comments each).
const MAX_PAGES: u32 = 20;

/// Where to write: the project on the host and, when there is one, the pull request's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackTarget {
    /// `owner/repo` (GitHub) or the project's path or numeric id (GitLab).
    pub project: String,
    pub number: Option<u64>,
}

impl FeedbackTarget {
    /// From the configured project or else the pull request's URL, and the pull request's id or
    /// else its URL.
    pub fn resolve(
        forge: &ForgeConfig,
        deployment: &Deployment,
    ) -> Result<FeedbackTarget, ForgeError> {
        let pull_request = deployment.pull_request.as_ref();
        let from_url = pull_request.and_then(|p| parse_pull_request_url(forge.kind, &p.url));
        let project = match (&forge.project, &from_url) {
            (Some(project), _) => project.clone(),
            (None, Some((project, _))) => project.clone(),
            (None, None) => {
                return Err(ForgeError::Target(
                    "set `project` on the repository, or pass the pull request's URL".to_owned(),
                ))
            }
        };
        if !valid_project(&project) {
            return Err(ForgeError::Target(format!("{project:?} is not a project path")));
        }
        let number = pull_request
            .and_then(|p| p.id.parse::<u64>().ok())
            .or(from_url.map(|(_, number)| number));
        Ok(FeedbackTarget { project, number })
    }
}

/// `https://host/owner/repo/pull/7` (GitHub) or `https://host/group/sub/project/-/merge_requests/7`
/// (GitLab) → (project, number).
pub fn parse_pull_request_url(kind: ForgeKind, url: &str) -> Option<(String, u64)> {
    let path = url.split_once("://")?.1.split_once('/')?.1;
    let path = path.split(['?', '#']).next()?.trim_end_matches('/');
    let (project, number) = match kind {
        ForgeKind::GitHub => {
            let segments: Vec<&str> = path.split('/').collect();
            let index = segments.iter().rposition(|s| *s == "pull" || *s == "pulls")?;
            if index != 2 {
                return None;
            }
            (segments[..2].join("/"), *segments.get(index + 1)?)
        }
        ForgeKind::GitLab => {
            let (project, rest) = path.rsplit_once("/-/merge_requests/")?;
            (project.to_owned(), rest.split('/').next()?)
        }
    };
    let number = number.parse().ok()?;
    valid_project(&project).then_some((project, number))
}

/// Segments of letters, digits, `.`, `_`, `-`, never `.` or `..`: nothing that could leave the
/// API path it is put into.
fn valid_project(project: &str) -> bool {
    !project.is_empty()
        && project.len() <= 512
        && project.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

pub struct CommitStatus {
    pub sha: String,
    pub success: bool,
    pub description: String,
    pub target_url: String,
}

pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The host's REST API, blocking.
pub struct ForgeClient {
    kind: ForgeKind,
    base: String,
    token: Option<Secret>,
    agent: ureq::Agent,
}

#[derive(Debug)]
pub struct Comment {
    id: u64,
    body: String,
}

impl ForgeClient {
    pub fn new(forge: &ForgeConfig) -> Result<ForgeClient, ForgeError> {
        let base = forge.api_url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") && !TLS {
            return Err(ForgeError::NoTls(base));
        }
        let token = forge.token.clone();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .user_agent("offshoot")
            .build();
        Ok(ForgeClient {
            kind: forge.kind,
            base,
            token,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// `/repos/owner/repo` or `/projects/group%2Fproject`.
    fn project_path(&self, project: &str) -> String {
        match self.kind {
            ForgeKind::GitHub => format!("/repos/{project}"),
            ForgeKind::GitLab => format!("/projects/{}", project.replace('/', "%2F")),
        }
    }

    fn comments_path(&self, project: &str, number: u64) -> String {
        match self.kind {
            ForgeKind::GitHub => format!("{}/issues/{number}/comments", self.project_path(project)),
            ForgeKind::GitLab => {
                format!("{}/merge_requests/{number}/notes", self.project_path(project))
            }
        }
    }

    fn comment_path(&self, project: &str, number: u64, id: u64) -> String {
        match self.kind {
            ForgeKind::GitHub => format!("{}/issues/comments/{id}", self.project_path(project)),
            ForgeKind::GitLab => {
                format!("{}/merge_requests/{number}/notes/{id}", self.project_path(project))
            }
        }
    }

    /// Edits our comment if there is one (the first with the marker that we may edit), or
    /// creates it.
    pub fn upsert_comment(
        &self,
        project: &str,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<(), ForgeError> {
        let ours: Vec<Comment> = self
            .comments(project, number)?
            .into_iter()
            .filter(|c| c.body.starts_with(marker))
            .collect();
        let payload = serde_json::json!({ "body": body });
        for comment in &ours {
            if comment.body == body {
                return Ok(());
            }
            let method = if self.kind == ForgeKind::GitHub { "PATCH" } else { "PUT" };
            match self.call(method, &self.comment_path(project, number, comment.id), Some(&payload))
            {
                Ok(_) => return Ok(()),
                // Someone else's comment carrying our marker: try the next, or write our own.
                Err(ForgeError::Http { detail, .. })
                    if detail.starts_with("403") || detail.starts_with("404") =>
                {
                    continue
                }
                Err(error) => return Err(error),
            }
        }
        self.call("POST", &self.comments_path(project, number), Some(&payload)).map(|_| ())
    }

    fn comments(&self, project: &str, number: u64) -> Result<Vec<Comment>, ForgeError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("{}?per_page=100&page={page}", self.comments_path(project, number));
            let answer = self.call("GET", &path, None)?;
            let items = answer.as_array().cloned().unwrap_or_default();
            let count = items.len();
            all.extend(items.into_iter().filter_map(|item| {
                Some(Comment { id: item["id"].as_u64()?, body: item["body"].as_str()?.to_owned() })
            }));
            if count < 100 {
                break;
            }
        }
        Ok(all)
    }

    pub fn post_status(&self, project: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        let path = format!("{}/statuses/{}", self.project_path(project), status.sha);
        let body = match self.kind {
            ForgeKind::GitHub => serde_json::json!({
                "state": if status.success { "success" } else { "failure" },
                "target_url": status.target_url,
                "description": status.description,
                "context": "offshoot",
            }),
            ForgeKind::GitLab => serde_json::json!({
                "state": if status.success { "success" } else { "failed" },
                "target_url": status.target_url,
                "description": status.description,
                "name": "offshoot",
            }),
        };
        self.call("POST", &path, Some(&body)).map(|_| ())
    }

    /// One request; the answer's JSON (or `null`). The token goes in a header and is never part
    /// of an error, even when the host's answer echoes it.
    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ForgeError> {
        let url = format!("{}{path}", self.base);
        let failure = |detail: String| ForgeError::Http { method, path: path.to_owned(), detail };
        let response = match (method, body) {
            ("GET", _) => self.authorize(self.agent.get(&url)).call(),
            (_, body) => {
                let request = match method {
                    "PATCH" => self.agent.patch(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                let text = body.map(|b| b.to_string()).unwrap_or_default();
                self.authorize(request).header("Content-Type", "application/json").send(text)
            }
        };
        let redact = |text: &str| {
            self.token.as_ref().map_or_else(|| text.to_owned(), |token| token.redact_from(text))
        };
        let mut response = response.map_err(|e| failure(redact(&e.to_string())))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            // Redacted before it is cut short, so no part of the token survives either.
            return Err(failure(format!("{status} {}", truncate(redact(&text).trim(), 300))));
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let token = self.token.as_ref().map_or("", Secret::expose);
        match self.kind {
            ForgeKind::GitHub => request
                .header("Authorization", &format!("Bearer {token}"))
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            ForgeKind::GitLab => request.header("PRIVATE-TOKEN", token),
        }
    }
}
