//! Pull-request feedback: when a branch deployment's revision finishes, one comment per pull
//! request (found again by a hidden marker and edited in place; one note per merge request on
//! GitLab) shows the deployment's link, status and change summary, and a commit status marks the
//! commit. Only for repositories with a forge and an API token.
//!
//! The comment always shows the deployment's state when it is written, not the revision that
//! triggered it, and writers take turns: so a slow update for an older revision can never
//! overwrite a newer one. HTTP is blocking `ureq` inside `spawn_blocking`; without the `tls`
//! feature only plain-HTTP API URLs work.

use std::fmt::Write as _;
use std::time::Duration;

use offshoot_core::{DeploymentKind, DeploymentStatus, RevisionStatus};
use offshoot_store::{Deployment, DeploymentId, Revision};

use crate::changes::{ChangeSetJson, StoredSummary};
use crate::config::{ForgeConfig, ForgeKind, Secret};
use crate::data_diff::DiffSummaryJson;
use crate::state::SharedState;

/// Whether this build can call `https://` APIs.
pub const TLS: bool = cfg!(feature = "tls");

/// Changed assets listed before the table folds into `<details>`.
const FOLD_AFTER: usize = 10;
/// Rows listed at most; the rest are counted ("and 12 more").
const MAX_ROWS: usize = 200;
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Comment pages read looking for the marker (100 comments each).
const MAX_PAGES: u32 = 20;

/// Writers take turns, one update at a time in this process.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("reading the store: {0}")]
    Store(#[from] offshoot_store::StoreError),
    #[error("cannot tell which project and pull request to write to: {0}")]
    Target(String),
    #[error("{0} is https, but this build has no TLS; build with the `tls` feature or use a plain-HTTP proxy")]
    NoTls(String),
    #[error("{method} {path}: {detail}")]
    Http { method: &'static str, path: String, detail: String },
    #[error("background task failed: {0}")]
    Join(String),
}

/// Called by the deploy pipeline once a revision is ready or failed; returns at once.
pub fn revision_finished(state: &SharedState, deployment: &Deployment, revision: &Revision) {
    if deployment.kind != DeploymentKind::Branch
        || !matches!(revision.status, RevisionStatus::Ready | RevisionStatus::Failed)
    {
        return;
    }
    let Some(forge) = state
        .repository(&deployment.repository)
        .and_then(|r| r.forge.clone())
        .filter(|f| f.token.is_some())
    else {
        return;
    };
    let (state, deployment_id, revision) = (state.clone(), deployment.id, revision.clone());
    tokio::spawn(async move {
        let _turn = TURN.lock().await;
        if let Err(error) = publish(&state, &forge, deployment_id, &revision).await {
            tracing::warn!(
                "pull-request feedback for revision {} of deployment {}: {error}",
                revision.number,
                deployment_id.0
            );
        }
    });
}

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
    ) -> Result<FeedbackTarget, FeedbackError> {
        let pull_request = deployment.pull_request.as_ref();
        let from_url = pull_request.and_then(|p| parse_pull_request_url(forge.kind, &p.url));
        let project = match (&forge.project, &from_url) {
            (Some(project), _) => project.clone(),
            (None, Some((project, _))) => project.clone(),
            (None, None) => {
                return Err(FeedbackError::Target(
                    "set `project` on the repository, or pass the pull request's URL".to_owned(),
                ))
            }
        };
        if !valid_project(&project) {
            return Err(FeedbackError::Target(format!("{project:?} is not a project path")));
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

async fn publish(
    state: &SharedState,
    forge: &ForgeConfig,
    deployment_id: DeploymentId,
    finished: &Revision,
) -> Result<(), FeedbackError> {
    let deployment = state.store.get_deployment(deployment_id).await?;
    let revisions = state.store.list_revisions(deployment_id, 50).await?;
    let shown = revisions
        .iter()
        .find(|r| matches!(r.status, RevisionStatus::Ready | RevisionStatus::Failed))
        .unwrap_or(finished)
        .clone();
    let serving = match deployment.current_revision {
        Some(id) => match revisions.iter().find(|r| r.id == id) {
            Some(revision) => Some(revision.clone()),
            None => Some(state.store.get_revision(id).await?),
        },
        None => None,
    };
    let target = FeedbackTarget::resolve(forge, &deployment)?;
    let link = deployment_link(&state.config.public_url, &deployment);
    // Data diffs of what the branch built (cached after each run; computed here otherwise).
    let diffs = match &serving {
        Some(_) => crate::data_diff::summaries(state, &deployment).await.unwrap_or_else(|error| {
            tracing::warn!("data diffs of {} for its comment: {}", deployment.name, error.message);
            Vec::new()
        }),
        None => Vec::new(),
    };
    let comment =
        target.number.map(|_| render_comment(&deployment, &shown, serving.as_ref(), &link, &diffs));
    let status = CommitStatus::of(finished, &link);
    let client = ForgeClient::new(forge)?;
    tokio::task::spawn_blocking(move || {
        if let (Some(number), Some(body)) = (target.number, comment) {
            client.upsert_comment(&target.project, number, &marker(&deployment), &body)?;
        }
        client.post_status(&target.project, &status)
    })
    .await
    .map_err(|e| FeedbackError::Join(e.to_string()))?
}

/// The UI's page of the deployment.
pub fn deployment_link(public_url: &str, deployment: &Deployment) -> String {
    format!(
        "{}/#/d/{}/{}",
        public_url.trim_end_matches('/'),
        deployment.repository,
        deployment.name
    )
}

/// The hidden line that finds the comment again.
pub fn marker(deployment: &Deployment) -> String {
    format!("<!-- offshoot:deployment={} -->", deployment.name)
}

pub struct CommitStatus {
    pub sha: String,
    pub success: bool,
    pub description: String,
    pub target_url: String,
}

impl CommitStatus {
    fn of(revision: &Revision, link: &str) -> CommitStatus {
        let success = revision.status == RevisionStatus::Ready;
        let description = if success {
            let summary = revision
                .changes_json
                .as_deref()
                .and_then(|json| serde_json::from_str::<StoredSummary>(json).ok());
            format!(
                "Branch deployment ready: {}",
                summary.map_or_else(
                    || "no base to compare with".to_owned(),
                    |s| s.summary.counts().phrase()
                )
            )
        } else {
            let reason = revision
                .error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("see the deployment");
            format!("Branch deployment failed: {reason}")
        };
        CommitStatus {
            sha: revision.commit.sha.to_string(),
            success,
            description: truncate(&description, 140),
            target_url: link.to_owned(),
        }
    }
}

/// The comment's Markdown: marker, headline, link, changes (folded when long) or the failure.
pub fn render_comment(
    deployment: &Deployment,
    shown: &Revision,
    serving: Option<&Revision>,
    link: &str,
    diffs: &[DiffSummaryJson],
) -> String {
    let mut out = String::new();
    let name = &deployment.name;
    let commit = shown.commit.sha.short();
    let _ = writeln!(out, "{}", marker(deployment));
    match shown.status {
        RevisionStatus::Ready => {
            let _ = writeln!(out, "### ✅ Branch deployment `{name}` is ready\n");
        }
        _ => {
            let _ = writeln!(out, "### ❌ Branch deployment `{name}` failed\n");
        }
    }
    let _ = write!(
        out,
        "[Open `{name}` in Offshoot]({link}) · commit `{commit}` · revision {}",
        shown.number
    );
    if shown.status == RevisionStatus::Ready {
        let _ = write!(out, " · {} assets", shown.asset_count);
    }
    out.push_str("\n\n");
    if shown.status != RevisionStatus::Ready {
        render_failure(&mut out, deployment, shown, serving);
    }
    let changes_of = if shown.status == RevisionStatus::Ready { Some(shown) } else { serving };
    if let Some(revision) = changes_of {
        let changes: Option<ChangeSetJson> =
            revision.changes_json.as_deref().and_then(|json| serde_json::from_str(json).ok());
        match changes {
            Some(changes) => render_changes(
                &mut out,
                &changes,
                link,
                revision.base_commit.as_ref().map(|c| c.short()),
            ),
            None => out
                .push_str("No change tracking for this revision (its base could not be loaded).\n"),
        }
    }
    render_data_diffs(&mut out, diffs);
    out.push_str("\n<sub>Offshoot updates this comment on every push and after every run.</sub>\n");
    out
}

/// Most data-diff rows shown before the table folds.
const DIFF_ROWS_UNFOLDED: usize = 10;

/// What the branch's runs did to the data: one row per asset the branch built.
fn render_data_diffs(out: &mut String, diffs: &[DiffSummaryJson]) {
    if diffs.is_empty() {
        return;
    }
    let count = |n: Option<u64>| n.map(group_digits).unwrap_or_else(|| "–".to_owned());
    let mut table = String::from("| Asset | Rows (production → branch) | Added | Removed | Changed | Columns |\n|---|---:|---:|---:|---:|---|\n");
    for diff in diffs {
        let rows = match diff.state {
            "new_in_branch" => format!("new · {}", count(diff.branch_rows)),
            _ => format!("{} → {}", count(diff.production_rows), count(diff.branch_rows)),
        };
        let changed =
            if diff.key_source == "none" { "no key".to_owned() } else { count(diff.changed) };
        let columns = match (diff.columns_added, diff.columns_removed) {
            (0, 0) => String::new(),
            (added, removed) => format!("+{added} −{removed}"),
        };
        let _ = writeln!(
            table,
            "| `{}` | {rows} | {} | {} | {changed} | {columns} |",
            diff.asset,
            count(diff.only_in_branch),
            count(diff.only_in_production)
        );
    }
    if diffs.len() > DIFF_ROWS_UNFOLDED {
        let _ = writeln!(
            out,
            "\n<details><summary>Data changes in {} built assets</summary>\n\n{table}\n</details>",
            diffs.len()
        );
    } else {
        let _ = writeln!(
            out,
            "\n**Data changes** (the branch's tables against production's):\n\n{table}"
        );
    }
}

/// `12345` as `12,345`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Called after a branch run once its data diffs are computed: refreshes the comment. Returns
/// at once.
pub fn data_diffs_ready(state: &SharedState, deployment: &Deployment) {
    let Some(forge) = state
        .repository(&deployment.repository)
        .and_then(|r| r.forge.clone())
        .filter(|f| f.token.is_some())
    else {
        return;
    };
    let (state, deployment_id, serving) =
        (state.clone(), deployment.id, deployment.current_revision);
    tokio::spawn(async move {
        let Some(serving) = serving else { return };
        let _turn = TURN.lock().await;
        let result = async {
            let revision = state.store.get_revision(serving).await?;
            publish(&state, &forge, deployment_id, &revision).await
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(
                "pull-request feedback after a run of deployment {}: {error}",
                deployment_id.0
            );
        }
    });
}

fn render_failure(
    out: &mut String,
    deployment: &Deployment,
    shown: &Revision,
    serving: Option<&Revision>,
) {
    let diagnostics: Vec<serde_json::Value> = shown
        .diagnostics_json
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    // The error sums the diagnostics up when there are some: show them instead.
    if diagnostics.is_empty() {
        if let Some(error) = &shown.error {
            let _ = writeln!(out, "{}", fenced(&truncate(error, 4000)));
        }
    } else {
        let _ = writeln!(out, "{} problem(s) in the definitions:\n", diagnostics.len());
        let mut lines = String::new();
        for diagnostic in diagnostics.iter().take(50) {
            let text = |key: &str| {
                diagnostic[key]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| diagnostic[key].to_string())
            };
            let _ = writeln!(
                lines,
                "{}:{}:{}: {}",
                text("path"),
                text("line"),
                text("column"),
                text("message")
            );
        }
        if diagnostics.len() > 50 {
            let _ = writeln!(lines, "... and {} more", diagnostics.len() - 50);
        }
        let _ = writeln!(out, "{}", fenced(&truncate(&lines, 8000)));
    }
    // A closed deployment's `current_revision` is the one that served last: it serves nothing now.
    let closed = deployment.status == DeploymentStatus::Closed;
    match (serving, closed) {
        (Some(serving), false) => {
            let _ = writeln!(
                out,
                "Still serving revision {} (`{}`); the changes below are that revision's.\n",
                serving.number,
                serving.commit.sha.short()
            );
        }
        (Some(served), true) => {
            let reason =
                deployment.close_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            let _ = writeln!(out, "Closed{reason}; it last served revision {} (`{}`); the changes below are that revision's.\n", served.number, served.commit.sha.short());
        }
        (None, false) => out.push_str("Nothing is serving yet.\n"),
        (None, true) => out.push_str("Closed before anything served.\n"),
    }
}

fn render_changes(out: &mut String, changes: &ChangeSetJson, link: &str, base: Option<&str>) {
    let summary = &changes.summary;
    let changed = changes.assets.len();
    if changed == 0 {
        out.push_str("No asset changes against the base.\n");
        return;
    }
    let _ = write!(out, "**{}**", summary.counts().phrase());
    match base {
        Some(base) => {
            let _ = writeln!(out, " · compared with `{base}`\n");
        }
        None => out.push_str("\n\n"),
    }
    let mut table = String::from("| Asset | Reasons |\n|---|---|\n");
    for asset in changes.assets.iter().take(MAX_ROWS) {
        // Keys are SQL identifiers and reasons fixed words: nothing in them needs escaping.
        let _ = writeln!(
            table,
            "| [`{key}`]({link}/a/{key}) | {} |",
            asset.reasons.join(", "),
            key = asset.key
        );
    }
    if changed > MAX_ROWS {
        let _ = writeln!(table, "| … and {} more | |", changed - MAX_ROWS);
    }
    if changed > FOLD_AFTER {
        let _ = writeln!(
            out,
            "<details><summary>{changed} changed assets</summary>\n\n{table}\n</details>\n"
        );
    } else {
        let _ = writeln!(out, "{table}");
    }
    if !changes.impacted.is_empty() {
        let mut list = String::new();
        for impacted in changes.impacted.iter().take(MAX_ROWS) {
            let path: Vec<String> = impacted.path.iter().map(|k| format!("`{k}`")).collect();
            let _ = writeln!(list, "- `{}` (via {})", impacted.key, path.join(" → "));
        }
        if changes.impacted.len() > MAX_ROWS {
            let _ = writeln!(list, "- … and {} more", changes.impacted.len() - MAX_ROWS);
        }
        let _ = writeln!(
            out,
            "<details><summary>{} impacted downstream</summary>\n\n{list}\n</details>",
            changes.impacted.len()
        );
    }
}

/// A fenced code block that no backtick run in `text` can close.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}\n{}\n{fence}\n", text.trim_end())
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The host's REST API, blocking.
struct ForgeClient {
    kind: ForgeKind,
    base: String,
    token: Option<Secret>,
    agent: ureq::Agent,
}

#[derive(Debug)]
struct Comment {
    id: u64,
    body: String,
}

impl ForgeClient {
    fn new(forge: &ForgeConfig) -> Result<ForgeClient, FeedbackError> {
        let base = forge.api_url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") && !TLS {
            return Err(FeedbackError::NoTls(base));
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
    fn upsert_comment(
        &self,
        project: &str,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<(), FeedbackError> {
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
                Err(FeedbackError::Http { detail, .. })
                    if detail.starts_with("403") || detail.starts_with("404") =>
                {
                    continue
                }
                Err(error) => return Err(error),
            }
        }
        self.call("POST", &self.comments_path(project, number), Some(&payload)).map(|_| ())
    }

    fn comments(&self, project: &str, number: u64) -> Result<Vec<Comment>, FeedbackError> {
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

    fn post_status(&self, project: &str, status: &CommitStatus) -> Result<(), FeedbackError> {
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
    ) -> Result<serde_json::Value, FeedbackError> {
        let url = format!("{}{path}", self.base);
        let failure =
            |detail: String| FeedbackError::Http { method, path: path.to_owned(), detail };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_urls_name_project_and_number() {
        assert_eq!(
            parse_pull_request_url(ForgeKind::GitHub, "https://github.com/acme/shop/pull/7"),
            Some(("acme/shop".into(), 7))
        );
        assert_eq!(
            parse_pull_request_url(
                ForgeKind::GitHub,
                "https://ghe.example/acme/shop/pull/12/files#x"
            ),
            Some(("acme/shop".into(), 12))
        );
        assert_eq!(
            parse_pull_request_url(
                ForgeKind::GitLab,
                "https://gitlab.example/group/sub/shop/-/merge_requests/5"
            ),
            Some(("group/sub/shop".into(), 5))
        );
        assert_eq!(
            parse_pull_request_url(ForgeKind::GitHub, "https://github.com/../x/pull/7"),
            None
        );
        assert_eq!(
            parse_pull_request_url(ForgeKind::GitHub, "https://github.com/acme/shop/issues/7"),
            None
        );
        assert_eq!(
            parse_pull_request_url(
                ForgeKind::GitLab,
                "https://gitlab.example/a%2F../-/merge_requests/5"
            ),
            None
        );
    }

    #[test]
    fn code_blocks_cannot_be_closed_by_their_content() {
        assert_eq!(fenced("a ``` b"), "````\na ``` b\n````\n");
        assert_eq!(fenced("plain"), "```\nplain\n```\n");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hé", 3), "hé");
    }
}
