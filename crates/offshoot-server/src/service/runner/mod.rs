//! Runs: launching a selection in a deployment and executing it. Steps run in dependency order
//! with bounded parallelism; SQL assets build in the warehouse, command assets run in a checkout
//! of the revision's commit. A failed step skips its downstream; a cancel stops at step
//! boundaries and kills running commands. Production and branches have separate run pools.

mod catch_up;
mod executor;
mod tool;

pub use executor::executor;

use std::collections::BTreeMap;

use offshoot_core::lifecycle::Event;
use offshoot_core::{diff, ChangeSet, DeploymentKind, RunPlan, RunStatus, Selection};
use offshoot_store::{Deployment, Revision, Run, RunFilter};

use crate::adapters::project;
use crate::service::deployments::{self, Extras, Input, LifecycleError};
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::{AppState, SharedState};

/// Starts a run of `selection` in the deployment's serving revision. The plan is made from the
/// revision serving at the moment the run is written (a promote meanwhile makes the write stale
/// and the plan is made again).
pub async fn launch(
    state: &SharedState,
    deployment: &Deployment,
    selection_text: &str,
    tags: &BTreeMap<String, String>,
) -> ServiceResult<Run> {
    if selection_text == crate::service::catch_up::SELECTION {
        return Err(ServiceError::invalid(
            "invalid_selection",
            format!("`{selection_text}` is production's catch-up, not a selection; `offshoot deployment catch-up prod` starts one"),
        ));
    }
    let selection = Selection::parse(selection_text)
        .map_err(|e| ServiceError::invalid("invalid_selection", e.render(selection_text)))?;
    check_tags(tags)?;
    let run_tags: Vec<(String, String)> =
        tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for _ in 0..deployments::ATTEMPTS {
        let (record, view) = deployments::read(state, deployment.id).await?;
        if !view.machine.open {
            return Err(ServiceError::conflict(
                "deployment_closed",
                format!("`{}` is closed; reopen it to run", deployment.name),
            ));
        }
        let Some(serving) =
            view.machine.serving.and_then(|n| record.revisions.iter().find(|r| r.number == n))
        else {
            return Err(ServiceError::conflict(
                "deployment_not_ready",
                format!("`{}` has no ready revision yet", deployment.name),
            ));
        };
        let (project, changes) = head_and_changes(state, &record.deployment, serving).await?;
        let keys = selection.evaluate(&project.snapshot, &changes);
        let plan = RunPlan::new(&project.snapshot, &keys);
        if plan.steps.is_empty() {
            return Err(ServiceError::invalid(
                "empty_selection",
                format!("`{selection_text}` selects no asset that can be materialized"),
            ));
        }
        let steps = plan.steps.iter().map(|s| s.key.clone()).collect();
        let extras = Extras {
            run: Some((selection_text.to_owned(), steps)),
            run_tags: run_tags.clone(),
            ..Extras::default()
        };
        if let Some(outcome) =
            deployments::attempt(state, record, &view, Input { event: Event::LaunchRun, extras })
                .await?
        {
            return outcome
                .new_runs
                .into_iter()
                .next()
                .ok_or_else(|| ServiceError::internal("a launched run was not written"));
        }
    }
    Err(LifecycleError::Contended(deployments::ATTEMPTS).into())
}

/// The revision's project and its change set against the base it was deployed against.
pub async fn head_and_changes(
    state: &AppState,
    deployment: &Deployment,
    revision: &Revision,
) -> ServiceResult<(offshoot_project::Project, ChangeSet)> {
    let repo = crate::service::lookup::repository_config(state, &deployment.repository)?;
    let head = project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ServiceError::internal)?;
    let head = head
        .as_ref()
        .as_ref()
        .map_err(|_| ServiceError::internal("a ready revision has invalid definitions"))?
        .clone();
    let changes = match &revision.base_commit {
        Some(base_commit) => {
            let base = project::load(state, &repo.name, repo.path.clone(), base_commit)
                .await
                .map_err(ServiceError::internal)?;
            match base.as_ref() {
                Ok(base) => diff(&base.snapshot, &head.snapshot),
                Err(_) => ChangeSet::default(),
            }
        }
        None => ChangeSet::default(),
    };
    Ok((head, changes))
}

/// The tag limits a run's claim is checked against: the configured ones and, for a catch-up,
/// one catch-up at a time in the store.
pub(crate) fn run_limits(state: &AppState, run: &Run) -> Vec<offshoot_store::TagLimit> {
    let mut limits = state.config.tag_concurrency_limits.clone();
    if crate::service::catch_up::is_catch_up(run) {
        limits.push(crate::service::catch_up::catch_up_limit());
    }
    limits
}

/// Why a run's tags are refused: they are stored as `key=value` lines and shown as given.
fn check_tags(tags: &BTreeMap<String, String>) -> ServiceResult<()> {
    if tags.len() > 32 {
        return Err(ServiceError::invalid("invalid_request", "a run has at most 32 tags"));
    }
    for (key, value) in tags {
        if key == crate::service::catch_up::CATCH_UP_TAG {
            return Err(ServiceError::invalid(
                "invalid_request",
                format!("tag key `{key}` is reserved for production's catch-ups"),
            ));
        }
        let control = |text: &str| text.chars().any(char::is_control);
        if key.is_empty() || key.len() > 128 || key.contains('=') || control(key) {
            return Err(ServiceError::invalid(
                "invalid_request",
                format!(
                    "tag key {key:?} must be 1 to 128 characters without `=` or control characters"
                ),
            ));
        }
        if value.len() > 256 || control(value) {
            return Err(ServiceError::invalid(
                "invalid_request",
                format!("the value of tag `{key}` must be at most 256 characters without control characters"),
            ));
        }
    }
    Ok(())
}

/// What a queued run waits for, said in the API: a tag limit it is over, the branch
/// deployment's own run limit when it is reached, else a slot of its pool. `None` for a run
/// that is not queued.
pub async fn waiting_for(
    state: &AppState,
    run: &Run,
    deployment: &Deployment,
) -> ServiceResult<Option<String>> {
    if run.status != RunStatus::Queued {
        return Ok(None);
    }
    let limits = run_limits(state, run);
    if limits.iter().any(|l| l.matches(&run.tags)) {
        let filter =
            RunFilter { deployment_id: None, statuses: vec![RunStatus::Running], limit: 0 };
        let running: Vec<Vec<(String, String)>> =
            state.store.list_runs(&filter).await?.into_iter().map(|r| r.tags).collect();
        if let Some(reason) = offshoot_store::tag_limit_reached(&run.tags, &running, &limits) {
            let which = if crate::service::catch_up::is_catch_up(run) {
                "one catch-up at a time, across the servers sharing the store"
            } else {
                "tag_concurrency_limits"
            };
            return Ok(Some(format!("{reason} ({which}); it starts when one of them ends")));
        }
    }
    if deployment.kind == DeploymentKind::Production {
        return Ok(Some(format!(
            "a slot in the production run pool (production_run_concurrency = {})",
            state.config.production_run_concurrency
        )));
    }
    if let Some(limit) = state.config.max_concurrent_runs_per_branch_deployment {
        let filter = RunFilter {
            deployment_id: Some(deployment.id),
            statuses: vec![RunStatus::Running],
            limit: 0,
        };
        let running = state.store.list_runs(&filter).await?.len();
        if running >= limit {
            return Ok(Some(format!(
                "{running} runs of this branch deployment are running, its limit (max_concurrent_runs_per_branch_deployment = {limit}); it starts when one ends"
            )));
        }
    }
    Ok(Some(format!(
        "a slot in the branch run pool (branch_run_concurrency = {})",
        state.config.branch_run_concurrency
    )))
}

/// Cancels a queued run at once, or asks a running one to stop (its steps stop at the next
/// boundary and its commands are killed; it ends `canceled`).
pub async fn cancel(state: &SharedState, run: &Run) -> ServiceResult<()> {
    // The lifecycle knows only runs still active: one that finished is that, not unknown.
    if run.status.is_finished() {
        return Err(crate::service::error::ServiceError::conflict(
            "run_finished",
            format!("run {} has finished already ({})", run.id.0, run.status.as_str()),
        ));
    }
    match deployments::apply_event(state, run.deployment_id, Event::CancelRun { run: run.id.0 })
        .await
    {
        // It finished between the read and the cancel.
        Err(LifecycleError::Refused(offshoot_core::lifecycle::Refusal::UnknownRun(_))) => {
            Err(crate::service::error::ServiceError::conflict(
                "run_finished",
                format!("run {} has finished already", run.id.0),
            ))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}
