//! Pull-request feedback: when a branch deployment's revision finishes, one comment per pull
//! request (found again by a hidden marker and edited in place; one note per merge request on
//! GitLab) shows the deployment's link, status and change summary, and a commit status marks the
//! commit. Only for repositories with a forge and an API token.
//!
//! Feedback is a subscriber: the deployer and the runner only announce that a revision finished
//! or that data diffs are ready ([`Notice`]); [`worker`] hands each notice to its deployment's
//! queue. Each deployment's updates are written one at a time, in order, by one task, and its
//! queue is bounded (beyond it, notices are dropped with a log line: the comment shows the
//! deployment's state when it is written, so the next update brings it up to date). Other
//! deployments never wait. HTTP is blocking (`adapters::forge`) inside `spawn_blocking`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use offshoot_core::{
    DeploymentKind, DeploymentName, DeploymentStatus, PullRequestStatus, RevisionStatus,
};
use offshoot_store::{Deployment, DeploymentId, Revision, Run, RunFilter, RunStep};
use tokio::sync::{broadcast, mpsc};

pub use crate::adapters::forge::{parse_pull_request_url, FeedbackTarget, TLS};
use crate::adapters::forge::{truncate, CommitStatus, ForgeClient, ForgeError};
use crate::changes::{ChangeSetJson, StoredSummary};
use crate::config::ForgeConfig;
use crate::notices::Notice;
use crate::service::data_diff::DiffSummaryJson;
use crate::state::SharedState;

/// Changed assets listed before the table folds into `<details>`.
const FOLD_AFTER: usize = 10;
/// Rows listed at most; the rest are counted ("and 12 more").
const MAX_ROWS: usize = 200;
/// Updates waiting per deployment at most.
pub const QUEUE: usize = 8;
/// A deployment's writer task ends after this long without updates.
const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("reading the store: {0}")]
    Store(#[from] offshoot_store::StoreError),
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error("background task failed: {0}")]
    Join(String),
}

/// One update to write for a deployment.
#[derive(Debug, Clone, Copy)]
enum Update {
    /// Revision `number` became ready or failed: comment and commit status.
    Revision(u32),
    /// The branch's data diffs were computed: the comment again, with them.
    DataDiffs,
    /// Production's catch-up took tables from the branch: the comment again, saying so.
    CatchUp,
}

/// Runs forever: routes notices to per-deployment writers.
pub async fn worker(state: SharedState) {
    let mut notices = state.notices.subscribe();
    let mut queues: HashMap<DeploymentId, mpsc::Sender<Update>> = HashMap::new();
    loop {
        let updates: Vec<(DeploymentId, Update)> = match notices.recv().await {
            Ok(Notice::RevisionFinished { deployment, number }) => {
                vec![(deployment, Update::Revision(number))]
            }
            Ok(Notice::DataDiffsReady { deployment }) => vec![(deployment, Update::DataDiffs)],
            Ok(Notice::CatchUpFinished { sources, .. }) => {
                sources.into_iter().map(|d| (d, Update::CatchUp)).collect()
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("pull-request feedback fell behind and missed {missed} notice(s)");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for (deployment, update) in updates {
            route(&state, &mut queues, deployment, update);
        }
        queues.retain(|_, queue| !queue.is_closed());
    }
}

/// Hands one update to its deployment's writer (started if it has none).
fn route(
    state: &SharedState,
    queues: &mut HashMap<DeploymentId, mpsc::Sender<Update>>,
    deployment: DeploymentId,
    update: Update,
) {
    {
        let sent = match queues.get(&deployment) {
            Some(queue) => queue.try_send(update),
            None => Err(mpsc::error::TrySendError::Closed(update)),
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(update)) => tracing::warn!(
                "pull-request feedback for deployment {}: {QUEUE} updates are waiting; dropping {update:?}",
                deployment.0
            ),
            Err(mpsc::error::TrySendError::Closed(update)) => {
                let (queue, updates) = mpsc::channel(QUEUE);
                queue.try_send(update).expect("a new queue has room");
                queues.insert(deployment, queue);
                tokio::spawn(writer(state.clone(), deployment, updates));
            }
        }
    }
}

/// Writes one deployment's updates in order until it has none for a while.
async fn writer(state: SharedState, deployment: DeploymentId, mut updates: mpsc::Receiver<Update>) {
    while let Ok(Some(update)) = tokio::time::timeout(IDLE, updates.recv()).await {
        if let Err(error) = write(&state, deployment, update).await {
            tracing::warn!(
                "pull-request feedback for deployment {} ({update:?}): {error}",
                deployment.0
            );
        }
    }
}

async fn write(
    state: &SharedState,
    deployment_id: DeploymentId,
    update: Update,
) -> Result<(), FeedbackError> {
    let deployment = state.store.get_deployment(deployment_id).await?;
    if deployment.kind != DeploymentKind::Branch {
        return Ok(());
    }
    let Some(forge) = state
        .repository(&deployment.repository)
        .and_then(|r| r.forge.clone())
        .filter(|f| f.token.is_some())
    else {
        return Ok(());
    };
    let revision = match update {
        Update::Revision(number) => {
            let revisions = state.store.list_revisions(deployment.id, 0).await?;
            match revisions.into_iter().find(|r| r.number == number) {
                Some(revision)
                    if matches!(
                        revision.status,
                        RevisionStatus::Ready | RevisionStatus::Failed
                    ) =>
                {
                    revision
                }
                _ => return Ok(()),
            }
        }
        Update::DataDiffs | Update::CatchUp => match deployment.current_revision {
            Some(serving) => state.store.get_revision(serving).await?,
            None => return Ok(()),
        },
    };
    publish(state, &forge, deployment_id, &revision).await
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
        Some(_) => {
            crate::service::data_diff::summaries(state, &deployment).await.unwrap_or_else(|error| {
                tracing::warn!(
                    "data diffs of {} for its comment: {}",
                    deployment.name,
                    error.message
                );
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    let catch_up = merged_into_production(state, &deployment).await.unwrap_or_else(|error| {
        tracing::warn!("production's catch-up for the comment of {}: {error}", deployment.name);
        None
    });
    let comment = target.number.map(|_| {
        let mut body = render_comment(&deployment, &shown, serving.as_ref(), &link, &diffs);
        if let Some((run, steps)) = &catch_up {
            // Above the footer, which stays the comment's last line.
            let mut section = String::new();
            render_catch_up(&mut section, &deployment, run, steps);
            insert_above_footer(&mut body, &section);
        }
        body
    });
    let status = CommitStatus::of(finished, &link);
    let client = ForgeClient::new(forge)?;
    tokio::task::spawn_blocking(move || {
        if let (Some(number), Some(body)) = (target.number, comment) {
            client
                .upsert_comment(&target.project, number, &marker(&deployment), &body)
                .map_err(FeedbackError::from)?;
        }
        client.post_status(&target.project, &status).map_err(FeedbackError::from)
    })
    .await
    .map_err(|e| FeedbackError::Join(e.to_string()))?
}

/// Production's newest catch-up that promoted a table of this merged branch, with its steps.
async fn merged_into_production(
    state: &SharedState,
    deployment: &Deployment,
) -> Result<Option<(Run, Vec<RunStep>)>, FeedbackError> {
    let merged =
        deployment.pull_request.as_ref().is_some_and(|p| p.status == PullRequestStatus::Merged);
    if !merged {
        return Ok(None);
    }
    let Some(production) =
        state.store.find_deployment(&deployment.repository, &DeploymentName::production()).await?
    else {
        return Ok(None);
    };
    let filter = RunFilter { deployment_id: Some(production.id), statuses: Vec::new(), limit: 50 };
    let from = format!("promoted (from {},", deployment.name);
    for run in state.store.list_runs(&filter).await? {
        if !crate::service::catch_up::is_catch_up(&run) || run.created_at < deployment.created_at {
            continue;
        }
        let steps = state.store.list_steps(run.id).await?;
        if steps.iter().any(|s| s.action.as_deref().is_some_and(|a| a.starts_with(&from))) {
            return Ok(Some((run, steps)));
        }
    }
    Ok(None)
}

/// What production's catch-up did after the merge: each asset promoted from a branch (without
/// running its code) or rebuilt, and why.
fn render_catch_up(out: &mut String, deployment: &Deployment, run: &Run, steps: &[RunStep]) {
    let from = format!("promoted (from {},", deployment.name);
    let promoted =
        steps.iter().filter(|s| s.action.as_deref().is_some_and(|a| a.starts_with(&from))).count();
    let rebuilt = steps
        .iter()
        .filter(|s| s.action.as_deref().is_some_and(|a| a.starts_with("built")))
        .count();
    let state = match run.status.as_str() {
        "succeeded" => "caught up",
        "failed" => "caught up with failures",
        "canceled" => "catch-up canceled",
        _ => "is catching up",
    };
    let _ = writeln!(
        out,
        "\n### 🚀 Merged: production {state} (run {})\n\n{promoted} promoted from `{}` without running their code, {rebuilt} rebuilt.\n",
        run.id.0, deployment.name
    );
    let mut table = String::from("| Asset | Production | Step |\n|---|---|---|\n");
    for step in steps.iter().take(MAX_ROWS) {
        let _ = writeln!(
            table,
            "| `{}` | {} | {} |",
            step.asset_key,
            step.action.as_deref().unwrap_or("").replace('|', "\\|"),
            step.status.as_str()
        );
    }
    if steps.len() > MAX_ROWS {
        let _ = writeln!(table, "\nand {} more", steps.len() - MAX_ROWS);
    }
    if steps.len() > FOLD_AFTER {
        let _ = writeln!(
            out,
            "<details><summary>{} assets</summary>\n\n{table}\n</details>",
            steps.len()
        );
    } else {
        let _ = writeln!(out, "{table}");
    }
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

/// The comment's last line.
const FOOTER: &str =
    "\n<sub>Offshoot updates this comment on every push and after every run.</sub>\n";

/// Adds a section to a rendered comment, above its footer (at the end if it has none).
fn insert_above_footer(body: &mut String, section: &str) {
    match body.rfind(FOOTER) {
        Some(at) => body.insert_str(at, section),
        None => body.push_str(section),
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
    out.push_str(FOOTER);
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
        // Above the row limit the counts by key are a sample's.
        let sampled = if diff.sampled { " (sampled: counts of a sample)" } else { "" };
        let columns = match (diff.columns_added, diff.columns_removed) {
            (0, 0) => String::new(),
            (added, removed) => format!("+{added} −{removed}"),
        };
        let _ = writeln!(
            table,
            "| `{}`{sampled} | {rows} | {} | {} | {changed} | {columns} |",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ForgeKind;

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
    fn a_sampled_data_diff_is_marked_in_the_comment_table() {
        let diff = |sampled| DiffSummaryJson {
            asset: "orders".to_owned(),
            state: "compared",
            production_rows: Some(2_000_000),
            branch_rows: Some(2_000_000),
            only_in_production: Some(5),
            only_in_branch: Some(6),
            changed: Some(7),
            columns_added: 0,
            columns_removed: 0,
            key_source: "declared",
            sampled,
        };
        let mut out = String::new();
        render_data_diffs(&mut out, &[diff(true)]);
        assert!(
            out.contains(
                "| `orders` (sampled: counts of a sample) | 2,000,000 → 2,000,000 | 6 | 5 | 7 |  |"
            ),
            "{out}"
        );
        let mut out = String::new();
        render_data_diffs(&mut out, &[diff(false)]);
        assert!(out.contains("| `orders` | 2,000,000 → 2,000,000 | 6 | 5 | 7 |  |"), "{out}");
    }

    #[test]
    fn a_section_goes_above_the_footer() {
        let mut body = format!("### headline\n\nchanges{FOOTER}");
        insert_above_footer(&mut body, "\n#### Production\n\npromoted\n");
        assert_eq!(body, format!("### headline\n\nchanges\n#### Production\n\npromoted\n{FOOTER}"));
        assert!(body.ends_with(FOOTER));
        let mut bare = String::from("no footer");
        insert_above_footer(&mut bare, " + section");
        assert_eq!(bare, "no footer + section");
    }

    #[test]
    fn the_comment_says_what_production_took_after_the_merge() {
        let deployment = Deployment {
            id: DeploymentId(2),
            repository: offshoot_core::RepositoryName::new("shop").expect("valid"),
            name: DeploymentName::new("feature-x").expect("valid"),
            kind: DeploymentKind::Branch,
            branch: offshoot_core::BranchName::new("feature/x").expect("valid"),
            status: DeploymentStatus::Closed,
            pull_request: None,
            base_deployment: None,
            pinned: false,
            current_revision: None,
            created_at: 0,
            updated_at: 0,
            last_push_at: 0,
            closed_at: Some(1),
            close_reason: Some("pull request merged".into()),
            version: 3,
            head_revision: None,
            teardown: offshoot_core::lifecycle::Teardown::Held,
            delete_requested: false,
            snapshot_base: offshoot_core::SnapshotBase::MergeBase,
            snapshot_base_commit: None,
        };
        let run = Run {
            id: offshoot_store::RunId(12),
            deployment_id: DeploymentId(1),
            revision_id: offshoot_store::RevisionId(4),
            selection: "catch-up".into(),
            status: offshoot_core::RunStatus::Succeeded,
            error: None,
            created_at: 0,
            started_at: Some(1),
            finished_at: Some(2),
            cancel_requested: false,
            lease: None,
            tags: Vec::new(),
        };
        let step = |key: &str, action: &str| RunStep {
            id: offshoot_store::StepId(1),
            run_id: run.id,
            position: 0,
            asset_key: offshoot_core::AssetKey::new(key).expect("valid"),
            status: offshoot_core::StepStatus::Succeeded,
            started_at: None,
            finished_at: None,
            row_count: None,
            error: None,
            log: String::new(),
            action: Some(action.into()),
            promoted_from: None,
        };
        let steps = [
            step("fct_orders", "promoted (from feature-x, run 7)"),
            step("daily", "built (changed; main changed upstream stg | x after the fork)"),
        ];
        let mut out = String::new();
        render_catch_up(&mut out, &deployment, &run, &steps);
        assert_eq!(
            out,
            "\n### 🚀 Merged: production caught up (run 12)\n\n1 promoted from `feature-x` without running their code, 1 rebuilt.\n\n\
             | Asset | Production | Step |\n|---|---|---|\n\
             | `fct_orders` | promoted (from feature-x, run 7) | succeeded |\n\
             | `daily` | built (changed; main changed upstream stg \\| x after the fork) | succeeded |\n\n"
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
