//! Runs of a dbt or Dagster location: one invocation of the location's tool builds the whole
//! selection (the tool orders it), its output goes to the first step's log, and each step ends
//! as the tool reports its asset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use offshoot_core::{AssetKey, DeploymentKind, DeploymentName, Snapshot, StepStatus};
use offshoot_location::BuildOutcome;
use offshoot_store::RunStep;
use tokio::sync::watch;

use super::executor::{
    append_log, deployment_environment, ensure_checkout, record_materialization, RunContext,
    StepError, StepLog,
};
use crate::adapters::{confine, process, project};
use crate::state::{now, Metrics};

type Outcomes = BTreeMap<AssetKey, BuildOutcome>;

/// The same outcome for every key.
fn every(keys: &[AssetKey], outcome: &BuildOutcome) -> Outcomes {
    keys.iter().map(|k| (k.clone(), outcome.clone())).collect()
}

/// The tool's outcomes, or, when reading them failed (the reader panicked), a failure of every
/// step that says so: never "the tool reported nothing".
fn outcomes_or_failure(read: Result<Outcomes, String>, keys: &[AssetKey]) -> Outcomes {
    match read {
        Ok(outcomes) => outcomes,
        Err(reason) => every(
            keys,
            &BuildOutcome::Failed {
                message: format!("reading the tool's results failed: {reason}"),
            },
        ),
    }
}

/// A run of a dbt or Dagster location: one invocation of the location's tool builds the whole
/// selection (the tool orders it), its output goes to the first step's log, and each step ends
/// as the tool reports its asset. Returns the steps' statuses.
pub(super) async fn build_with_tool(
    context: &Arc<RunContext>,
    location: Box<dyn offshoot_location::CodeLocation>,
    snapshot: &Snapshot,
    steps: &mut [RunStep],
    mut cancelled: watch::Receiver<bool>,
) -> Result<Vec<StepStatus>, offshoot_store::StoreError> {
    let state = &context.state;
    let started = Instant::now();
    for step in steps.iter_mut() {
        step.status = StepStatus::Running;
        step.started_at = Some(now());
        state.store.update_step(step).await?;
    }
    Metrics::add(&state.metrics.steps_executed, steps.len() as u64);
    let Some(first) = steps.first().cloned() else { return Ok(Vec::new()) };
    let location: Arc<dyn offshoot_location::CodeLocation> = Arc::from(location);
    let keys: Vec<AssetKey> = steps.iter().map(|s| s.asset_key.clone()).collect();
    let prepared = prepare_tool_build(context, &location, snapshot, &keys).await;
    let mut canceled = false;
    let mut timings = BTreeMap::new();
    let outcomes = match prepared {
        Err(message) => {
            append_log(context, &first, &format!("error: {message}\n")).await;
            every(&keys, &offshoot_location::BuildOutcome::Failed { message })
        }
        Ok(build) => {
            append_log(context, &first, &format!("$ {}\n", build.command.display())).await;
            match stream_tool(context, &first, &build.command, &mut cancelled).await {
                Err(StepError::Canceled) => {
                    canceled = true;
                    BTreeMap::new()
                }
                Err(StepError::Failed(message)) => {
                    every(&keys, &offshoot_location::BuildOutcome::Failed { message })
                }
                Ok(output) => {
                    let location = location.clone();
                    let snapshot = snapshot.clone();
                    let read_keys = keys.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        let request = build.inputs.request(&read_keys, &snapshot);
                        (
                            location.build_outcomes(&request, &output),
                            location.build_timings(&request),
                        )
                    })
                    .await;
                    let read = read.map(|(outcomes, times)| {
                        timings = times;
                        outcomes
                    });
                    outcomes_or_failure(read.map_err(|e| e.to_string()), &keys)
                }
            }
        }
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    let canceled = canceled || *cancelled.borrow();
    let mut statuses = Vec::with_capacity(steps.len());
    for step in steps.iter_mut() {
        step.finished_at = Some(now());
        // The tool's own times for the asset, where it tells (dbt's run_results.json).
        let duration_ms = match timings.get(&step.asset_key) {
            Some(timing) => {
                step.started_at = Some(timing.started_at);
                step.finished_at = Some(timing.finished_at);
                timing.finished_at - timing.started_at
            }
            None => duration_ms,
        };
        match outcomes.get(&step.asset_key) {
            Some(BuildOutcome::Succeeded { rows }) => {
                step.status = StepStatus::Succeeded;
                let rows = match rows {
                    Some(rows) => Some(*rows),
                    // A Dagster asset's table is named like its key's last part.
                    None => {
                        let table = step.asset_key.parts().last().unwrap_or_default().to_owned();
                        state.warehouse.row_count(&context.target, &table).await.ok().flatten()
                    }
                };
                step.row_count = rows.map(|r| r as i64);
                let note = rows.map(|r| format!(", {r} rows")).unwrap_or_default();
                append_log(
                    context,
                    step,
                    &format!("{}: built by the tool{note}\n", step.asset_key),
                )
                .await;
                record_materialization(context, step, duration_ms).await;
            }
            Some(BuildOutcome::Failed { message }) => {
                step.status = StepStatus::Failed;
                append_log(context, step, &format!("{}: error: {message}\n", step.asset_key)).await;
                step.error = Some(message.clone());
            }
            Some(BuildOutcome::Skipped { .. }) | None if canceled => {
                step.status = StepStatus::Canceled;
                step.error = Some("canceled".into());
            }
            Some(BuildOutcome::Skipped { message }) => {
                step.status = StepStatus::Skipped;
                step.error = Some(message.clone());
            }
            None => {
                step.status = StepStatus::Skipped;
                step.error = Some("the tool reported nothing for it".into());
            }
        }
        if step.id != first.id && step.status != StepStatus::Canceled {
            append_log(
                context,
                step,
                &format!(
                    "(built in one run of the tool; its output is in the log of {})\n",
                    first.asset_key
                ),
            )
            .await;
        }
        state.store.update_step(step).await?;
        statuses.push(step.status);
    }
    Ok(statuses)
}

/// What a tool build needs, owned, so the outcomes can be read on a blocking thread.
struct ToolBuild {
    command: offshoot_location::ToolCommand,
    inputs: BuildInputs,
}

/// The folders and environment of one tool build.
struct BuildInputs {
    checkout: PathBuf,
    work_dir: PathBuf,
    production_state: Option<PathBuf>,
    env: Vec<(String, String)>,
    sandbox: Option<offshoot_location::Sandbox>,
}

impl BuildInputs {
    fn request<'a>(
        &'a self,
        keys: &'a [AssetKey],
        snapshot: &'a Snapshot,
    ) -> offshoot_location::BuildRequest<'a> {
        offshoot_location::BuildRequest {
            keys,
            snapshot,
            checkout: &self.checkout,
            work_dir: &self.work_dir,
            production_state: self.production_state.as_deref(),
            env: &self.env,
            sandbox: self.sandbox.as_ref(),
        }
    }
}

async fn prepare_tool_build(
    context: &RunContext,
    location: &Arc<dyn offshoot_location::CodeLocation>,
    snapshot: &Snapshot,
    keys: &[AssetKey],
) -> Result<ToolBuild, String> {
    let state = &context.state;
    let checkout = ensure_checkout(context).await?;
    let locations = state.config.locations_dir(&context.deployment.repository);
    let work_dir = locations.join("runs").join(context.run_id.0.to_string());
    let _ = tokio::fs::remove_dir_all(&work_dir).await;
    tokio::fs::create_dir_all(&work_dir)
        .await
        .map_err(|e| format!("{}: {e}", work_dir.display()))?;
    // A branch defers what it has not built to production's manifest (dbt's --state).
    let production_state = if context.deployment.kind == DeploymentKind::Branch {
        production_state(context, &locations).await
    } else {
        None
    };
    let mut env = offshoot_location::base_environment();
    env.extend(deployment_environment(context, None));
    let sandbox = confine::sandbox(
        state,
        confine::Purpose::Build(&context.target),
        std::slice::from_ref(&work_dir),
    )?;
    env.push(("TMPDIR".to_owned(), work_dir.join("tmp").to_string_lossy().into_owned()));
    let inputs = BuildInputs { checkout, work_dir, production_state, env, sandbox };
    let location = location.clone();
    let snapshot = snapshot.clone();
    let keys = keys.to_vec();
    tokio::task::spawn_blocking(move || {
        let command = location
            .build_command(&inputs.request(&keys, &snapshot))
            .unwrap_or_else(|| Err("this location builds step by step".into()))?;
        Ok(ToolBuild { command, inputs })
    })
    .await
    .map_err(|e| format!("preparing the build: {e}"))?
}

/// Production's load folder for the commit it serves, when it has one.
async fn production_state(context: &RunContext, locations: &Path) -> Option<PathBuf> {
    let state = &context.state;
    let production = state
        .store
        .find_deployment(&context.deployment.repository, &DeploymentName::production())
        .await
        .ok()??;
    let revision = state.store.get_revision(production.current_revision?).await.ok()?;
    let repo = state.repository(&context.deployment.repository)?;
    // Loading makes sure the folder is there (a restart keeps it; this re-creates it if not).
    let _ = project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha).await;
    let dir = locations.join(revision.commit.sha.as_str());
    dir.exists().then_some(dir)
}

/// Runs a tool command, its output streamed into `step`'s log.
async fn stream_tool(
    context: &RunContext,
    step: &RunStep,
    command: &offshoot_location::ToolCommand,
    cancelled: &mut watch::Receiver<bool>,
) -> Result<offshoot_location::ToolOutput, StepError> {
    let child = process::spawn(command)?;
    let mut output = StepLog::new(context, step).keeping();
    let ended = process::stream_child(child, cancelled, command.timeout, &mut output).await?;
    let status = output.ended(ended).await?;
    let text = offshoot_location::tail(output.kept.unwrap_or_default().as_bytes());
    Ok(match status.success() {
        true => offshoot_location::ToolOutput { success: true, failure: None, text },
        false => offshoot_location::ToolOutput {
            success: false,
            failure: Some(format!("`{}` exited with {status}", command.program)),
            text,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while reading the tool's results fails every step with the reason.
    #[test]
    fn a_failed_read_fails_every_step_with_the_reason() {
        let keys = vec![AssetKey::new("a").expect("valid"), AssetKey::new("b").expect("valid")];
        let outcomes = outcomes_or_failure(Err("task panicked".into()), &keys);
        assert_eq!(outcomes.len(), 2);
        for key in &keys {
            match &outcomes[key] {
                BuildOutcome::Failed { message } => {
                    assert_eq!(message, "reading the tool's results failed: task panicked")
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        let read = every(&keys[..1], &BuildOutcome::Succeeded { rows: Some(3) });
        assert_eq!(outcomes_or_failure(Ok(read.clone()), &keys), read);
    }
}
