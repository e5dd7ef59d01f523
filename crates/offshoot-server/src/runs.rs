//! Runs: launching a selection in a deployment and executing it. Steps run in dependency order
//! with bounded parallelism; SQL assets build in the warehouse, command assets run in a checkout
//! of the revision's commit. A failed step skips its downstream; a cancel stops at step
//! boundaries and kills running commands. Production and branches have separate run pools.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offshoot_core::lifecycle::{Event, Lease};
use offshoot_core::{
    diff, Asset, AssetKey, AssetKind, ChangeSet, DeploymentKind, DeploymentName, RunPlan,
    RunStatus, Selection, Snapshot, StepStatus,
};
use offshoot_store::{
    Deployment, Materialization, Revision, Run, RunFilter, RunId, RunStep, StoreError,
};
use offshoot_warehouse::Target;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::error::{ApiError, ApiResult};
use crate::git;
use crate::lifecycle::{self, Extras, Input, LifecycleError};
use crate::state::{now, AppState, Metrics, SharedState};

/// A step's log is cut beyond this many bytes.
const MAX_LOG_BYTES: usize = 1 << 20;

/// Starts a run of `selection` in the deployment's serving revision. The plan is made from the
/// revision serving at the moment the run is written (a promote meanwhile makes the write stale
/// and the plan is made again).
pub async fn launch(
    state: &SharedState,
    deployment: &Deployment,
    selection_text: &str,
) -> ApiResult<Run> {
    let selection = Selection::parse(selection_text)
        .map_err(|e| ApiError::bad_request("invalid_selection", e.render(selection_text)))?;
    for _ in 0..lifecycle::ATTEMPTS {
        let (record, view) = lifecycle::read(state, deployment.id).await?;
        if !view.machine.open {
            return Err(ApiError::conflict(
                "deployment_closed",
                format!("`{}` is closed; reopen it to run", deployment.name),
            ));
        }
        let Some(serving) =
            view.machine.serving.and_then(|n| record.revisions.iter().find(|r| r.number == n))
        else {
            return Err(ApiError::conflict(
                "deployment_not_ready",
                format!("`{}` has no ready revision yet", deployment.name),
            ));
        };
        let (project, changes) = head_and_changes(state, &record.deployment, serving).await?;
        let keys = selection.evaluate(&project.snapshot, &changes);
        let plan = RunPlan::new(&project.snapshot, &keys);
        if plan.steps.is_empty() {
            return Err(ApiError::bad_request(
                "empty_selection",
                format!("`{selection_text}` selects no asset that can be materialized"),
            ));
        }
        let steps = plan.steps.iter().map(|s| s.key.clone()).collect();
        let extras = Extras { run: Some((selection_text.to_owned(), steps)), ..Extras::default() };
        if let Some(outcome) =
            lifecycle::attempt(state, record, &view, Input { event: Event::LaunchRun, extras })
                .await?
        {
            return outcome
                .new_runs
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("a launched run was not written"));
        }
    }
    Err(LifecycleError::Contended(lifecycle::ATTEMPTS).into())
}

/// The revision's project and its change set against the base it was deployed against.
pub async fn head_and_changes(
    state: &AppState,
    deployment: &Deployment,
    revision: &Revision,
) -> ApiResult<(offshoot_project::Project, ChangeSet)> {
    let repo = crate::deploy::repository_config(state, &deployment.repository)?;
    let head = git::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ApiError::internal)?;
    let head = head
        .as_ref()
        .as_ref()
        .map_err(|_| ApiError::internal("a ready revision has invalid definitions"))?
        .clone();
    let changes = match &revision.base_commit {
        Some(base_commit) => {
            let base = git::load(state, &repo.name, repo.path.clone(), base_commit)
                .await
                .map_err(ApiError::internal)?;
            match base.as_ref() {
                Ok(base) => diff(&base.snapshot, &head.snapshot),
                Err(_) => ChangeSet::default(),
            }
        }
        None => ChangeSet::default(),
    };
    Ok((head, changes))
}

/// What a queued run waits for, said in the API: the branch deployment's own run limit when it
/// is reached, else a slot of its pool. `None` for a run that is not queued.
pub async fn waiting_for(
    state: &AppState,
    run: &Run,
    deployment: &Deployment,
) -> ApiResult<Option<String>> {
    if run.status != RunStatus::Queued {
        return Ok(None);
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
pub async fn cancel(state: &SharedState, run: &Run) -> ApiResult<()> {
    // The lifecycle knows only runs still active: one that finished is that, not unknown.
    if run.status.is_finished() {
        return Err(crate::error::ApiError::conflict(
            "run_finished",
            format!("run {} has finished already ({})", run.id.0, run.status.as_str()),
        ));
    }
    match lifecycle::apply_event(state, run.deployment_id, Event::CancelRun { run: run.id.0 }).await
    {
        // It finished between the read and the cancel.
        Err(LifecycleError::Refused(offshoot_core::lifecycle::Refusal::UnknownRun(_))) => {
            Err(crate::error::ApiError::conflict(
                "run_finished",
                format!("run {} has finished already", run.id.0),
            ))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// Runs forever: claims queued runs as their pool has room, and fails runs whose server died
/// (its lease expired) with the reason. A claim succeeds for exactly one server, so each step of
/// a run executes on one server, once.
pub async fn executor(state: SharedState) {
    let production_pool = Arc::new(Semaphore::new(state.config.production_run_concurrency.max(1)));
    let branch_pool = Arc::new(Semaphore::new(state.config.branch_run_concurrency.max(1)));
    let in_flight: Arc<std::sync::Mutex<BTreeSet<RunId>>> = Arc::default();
    loop {
        let filter = RunFilter {
            deployment_id: None,
            statuses: vec![RunStatus::Queued, RunStatus::Running],
            limit: 0,
        };
        match state.store.list_runs(&filter).await {
            Ok(mut candidates) => {
                candidates.reverse(); // oldest first
                for run in candidates {
                    if !in_flight.lock().expect("never poisoned").insert(run.id) {
                        continue;
                    }
                    let kind = match state.store.get_deployment(run.deployment_id).await {
                        Ok(d) => d.kind,
                        Err(error) => {
                            tracing::error!("run {}: {error}", run.id.0);
                            in_flight.lock().expect("never poisoned").remove(&run.id);
                            continue;
                        }
                    };
                    let pool = if kind == DeploymentKind::Production {
                        production_pool.clone()
                    } else {
                        branch_pool.clone()
                    };
                    let state = state.clone();
                    let in_flight = in_flight.clone();
                    tokio::spawn(async move {
                        let Ok(permit) = pool.acquire_owned().await else { return };
                        let id = run.id;
                        if let Err(error) = claim_and_execute(&state, run).await {
                            tracing::error!("run {} stopped on a store error: {error}", id.0);
                        }
                        drop(permit);
                        in_flight.lock().expect("never poisoned").remove(&id);
                    });
                }
            }
            Err(error) => tracing::error!("run executor cannot read the queue: {error}"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), state.run_wakeup.notified()).await;
    }
}

fn lease(state: &AppState) -> Lease {
    Lease {
        owner: state.config.server_id.clone(),
        until: now() + state.config.lease.as_millis() as i64,
    }
}

/// Claims a run (a lifecycle event: granted to one server, only while the deployment is open)
/// and executes it. A run found running under an expired lease is failed by the claim itself.
async fn claim_and_execute(state: &SharedState, run: Run) -> Result<(), LifecycleError> {
    let outcome = match lifecycle::apply_event(
        state,
        run.deployment_id,
        Event::ClaimRun {
            run: run.id.0,
            lease: lease(state),
            max_running: state.config.max_concurrent_runs_per_branch_deployment,
        },
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(LifecycleError::Refused(_)) | Err(LifecycleError::Store(StoreError::NotFound(_))) => {
            return Ok(())
        }
        Err(error) => return Err(error),
    };
    if !outcome.claimed_run(run.id) {
        if run.status == RunStatus::Running {
            tracing::warn!("run {} was executing on a server that stopped; it failed", run.id.0);
        }
        return Ok(());
    }
    let run = state.store.get_run(run.id).await?;
    execute(state, run).await
}

/// What every step of one run shares.
struct RunContext {
    state: SharedState,
    deployment: Deployment,
    revision: Revision,
    target: Target,
    run_id: RunId,
    checkout_dir: PathBuf,
    repository_path: PathBuf,
}

/// Executes a run this server has claimed (it is `running` under this server's lease).
async fn execute(state: &SharedState, run: Run) -> Result<(), LifecycleError> {
    let deployment = state.store.get_deployment(run.deployment_id).await?;
    let revision = state.store.get_revision(run.revision_id).await?;
    let mut steps = state.store.list_steps(run.id).await?;
    let (switch, cancelled) = watch::channel(false);
    state.cancel_switches.lock().expect("never poisoned").insert(run.id, switch);

    let prepared = match state.repository(&deployment.repository) {
        None => Err(format!("repository `{}` is no longer configured", deployment.repository)),
        Some(repo) => {
            match git::load(state, &repo.name, repo.path.clone(), &revision.commit.sha).await {
                Ok(loaded) => match loaded.as_ref() {
                    Ok(project) => {
                        Ok((project.snapshot.clone(), project.manifest.clone(), repo.path.clone()))
                    }
                    Err(_) => Err("the revision's definitions are invalid".to_owned()),
                },
                Err(error) => Err(error.to_string()),
            }
        }
    };
    let (snapshot, manifest, repository_path) = match prepared {
        Ok(prepared) => prepared,
        Err(message) => return finish_early(state, run, steps, message).await,
    };
    let keys: BTreeSet<_> = steps.iter().map(|s| s.asset_key.clone()).collect();
    let plan = RunPlan::new(&snapshot, &keys);
    // Steps are stored in plan order; keep them aligned by key anyway.
    let by_key: BTreeMap<_, _> = steps.drain(..).map(|s| (s.asset_key.clone(), s)).collect();
    let mut steps: Vec<RunStep> =
        plan.steps.iter().filter_map(|p| by_key.get(&p.key).cloned()).collect();
    if steps.len() != plan.steps.len() {
        return finish_early(
            state,
            run,
            steps,
            "the run's steps no longer match the revision".to_owned(),
        )
        .await;
    }
    let context = Arc::new(RunContext {
        state: state.clone(),
        target: state.target(&deployment),
        checkout_dir: state.config.checkouts_dir().join(revision.commit.sha.as_str()),
        deployment,
        revision,
        run_id: run.id,
        repository_path,
    });

    let location = offshoot_location::for_manifest(&manifest);
    if location.kind() != "native" {
        let statuses =
            build_with_tool(&context, location, &snapshot, &mut steps, cancelled).await?;
        return finish(state, run, &context, &steps, &statuses).await;
    }

    let mut statuses: Vec<StepStatus> = steps.iter().map(|s| s.status).collect();
    let mut running: JoinSet<(usize, RunStep)> = JoinSet::new();
    let parallelism = state.config.step_parallelism.max(1);
    loop {
        let cancel_now = *cancelled.borrow() || state.store.get_run(run.id).await?.cancel_requested;
        if cancel_now {
            for (i, status) in statuses.iter_mut().enumerate() {
                if *status == StepStatus::Pending {
                    *status = StepStatus::Canceled;
                    steps[i].status = StepStatus::Canceled;
                    steps[i].finished_at = Some(now());
                    state.store.update_step(&steps[i]).await?;
                }
            }
        } else {
            for index in plan.ready(&statuses) {
                if running.len() >= parallelism {
                    break;
                }
                let Some(asset) = snapshot.get(&plan.steps[index].key).cloned() else { continue };
                statuses[index] = StepStatus::Running;
                let step = steps[index].clone();
                let context = context.clone();
                let cancelled = cancelled.clone();
                running.spawn(
                    async move { (index, run_step(&context, step, asset, cancelled).await) },
                );
            }
        }
        let Some(joined) = running.join_next().await else { break };
        match joined {
            Ok((index, step)) => {
                statuses[index] = step.status;
                steps[index] = step;
            }
            Err(error) => tracing::error!("a step task of run {} panicked: {error}", run.id.0),
        }
        for index in plan.skip_downstream_of_failures(&mut statuses) {
            steps[index].status = StepStatus::Skipped;
            steps[index].error = Some("an upstream step did not succeed".into());
            steps[index].finished_at = Some(now());
            state.store.update_step(&steps[index]).await?;
        }
    }
    state.cancel_switches.lock().expect("never poisoned").remove(&run.id);
    // Anything still pending here was never reachable (e.g. a step task panicked).
    for (i, status) in statuses.iter_mut().enumerate() {
        if !status.is_finished() {
            *status = StepStatus::Skipped;
            steps[i].status = StepStatus::Skipped;
            steps[i].finished_at = Some(now());
            state.store.update_step(&steps[i]).await?;
        }
    }
    finish(state, run, &context, &steps, &statuses).await
}

/// Reports a run's outcome (from its steps') to the lifecycle: `canceled` if a cancel was
/// asked for, whatever the steps did; a closed deployment's teardown may go ahead after it.
async fn finish(
    state: &SharedState,
    run: Run,
    context: &RunContext,
    steps: &[RunStep],
    statuses: &[StepStatus],
) -> Result<(), LifecycleError> {
    state.cancel_switches.lock().expect("never poisoned").remove(&run.id);
    let succeeded = RunPlan::outcome(statuses) == Some(RunStatus::Succeeded);
    // Each failed step with the first line of its error (dbt's or Python's message).
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .map(|s| match s.error.as_deref().and_then(|e| e.lines().find(|l| !l.trim().is_empty())) {
            Some(line) => format!("{} ({})", s.asset_key, line.trim()),
            None => s.asset_key.to_string(),
        })
        .collect();
    let error = (!succeeded).then(|| {
        if failed.is_empty() {
            "canceled".to_owned()
        } else {
            format!("failed: {}", failed.join(", "))
        }
    });
    report(state, &run, succeeded, error).await?;
    tracing::info!("run {} in {} finished", run.id.0, context.deployment.name);
    crate::data_diff::run_finished(state, &context.deployment);
    Ok(())
}

async fn report(
    state: &SharedState,
    run: &Run,
    succeeded: bool,
    error: Option<String>,
) -> Result<(), LifecycleError> {
    let event =
        Event::RunFinished { run: run.id.0, owner: state.config.server_id.clone(), succeeded };
    let extras = Extras { run_error: error, ..Extras::default() };
    lifecycle::report(state, run.deployment_id, event, extras).await?;
    Ok(())
}

async fn finish_early(
    state: &SharedState,
    run: Run,
    steps: Vec<RunStep>,
    message: String,
) -> Result<(), LifecycleError> {
    for mut step in steps {
        step.status = StepStatus::Skipped;
        step.finished_at = Some(now());
        state.store.update_step(&step).await?;
    }
    state.cancel_switches.lock().expect("never poisoned").remove(&run.id);
    report(state, &run, false, Some(message)).await
}

/// Executes one step and records its outcome; returns the step as stored.
async fn run_step(
    context: &RunContext,
    mut step: RunStep,
    asset: Asset,
    cancelled: watch::Receiver<bool>,
) -> RunStep {
    let store = &context.state.store;
    let started = Instant::now();
    step.status = StepStatus::Running;
    step.started_at = Some(now());
    if let Err(error) = store.update_step(&step).await {
        tracing::error!("step {}: {error}", step.id.0);
    }
    Metrics::increment(&context.state.metrics.steps_executed);
    let outcome = match asset.kind {
        AssetKind::Sql => run_sql(context, &step, &asset).await,
        AssetKind::Command => run_command(context, &step, &asset, cancelled).await,
        AssetKind::Source => Err("a source is not materialized".to_owned()),
        AssetKind::Tool => Err("built by the code location's tool, not step by step".to_owned()),
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    step.finished_at = Some(now());
    match outcome {
        Ok(rows) => {
            step.status = StepStatus::Succeeded;
            step.row_count = rows.map(|r| r as i64);
            record_materialization(context, &step, duration_ms).await;
        }
        Err(message) if message == CANCELED => {
            step.status = StepStatus::Canceled;
            step.error = Some("canceled".into());
        }
        Err(message) => {
            step.status = StepStatus::Failed;
            append_log(context, &step, &format!("error: {message}\n")).await;
            step.error = Some(message);
        }
    }
    if let Err(error) = store.update_step(&step).await {
        tracing::error!("step {}: {error}", step.id.0);
    }
    step
}

const CANCELED: &str = "canceled";

async fn record_materialization(context: &RunContext, step: &RunStep, duration_ms: i64) {
    let materialization = Materialization {
        deployment_id: context.deployment.id,
        run_id: context.run_id,
        asset_key: step.asset_key.clone(),
        commit: context.revision.commit.sha.clone(),
        row_count: step.row_count,
        duration_ms,
        created_at: now(),
    };
    if let Err(error) = context.state.store.record_materialization(&materialization).await {
        tracing::error!("recording the materialization of {}: {error}", step.asset_key);
    }
}

/// A run of a dbt or Dagster location: one invocation of the location's tool builds the whole
/// selection (the tool orders it), its output goes to the first step's log, and each step ends
/// as the tool reports its asset. Returns the steps' statuses.
async fn build_with_tool(
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
    let mut timings = BTreeMap::new();
    let outcomes = match prepared {
        Err(message) => {
            append_log(context, &first, &format!("error: {message}\n")).await;
            keys.iter()
                .map(|k| {
                    (
                        k.clone(),
                        offshoot_location::BuildOutcome::Failed { message: message.clone() },
                    )
                })
                .collect()
        }
        Ok(build) => {
            append_log(context, &first, &format!("$ {}\n", build.command.display())).await;
            match stream_tool(context, &first, &build.command, &mut cancelled).await {
                Err(message) if message == CANCELED => keys
                    .iter()
                    .map(|k| {
                        (
                            k.clone(),
                            offshoot_location::BuildOutcome::Skipped {
                                message: CANCELED.to_owned(),
                            },
                        )
                    })
                    .collect(),
                Err(message) => keys
                    .iter()
                    .map(|k| {
                        (
                            k.clone(),
                            offshoot_location::BuildOutcome::Failed { message: message.clone() },
                        )
                    })
                    .collect(),
                Ok(output) => {
                    let location = location.clone();
                    let snapshot = snapshot.clone();
                    let keys = keys.clone();
                    let (outcomes, times) = tokio::task::spawn_blocking(move || {
                        let request = build.inputs.request(&keys, &snapshot);
                        (
                            location.build_outcomes(&request, &output),
                            location.build_timings(&request),
                        )
                    })
                    .await
                    .unwrap_or_default();
                    timings = times;
                    outcomes
                }
            }
        }
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    let canceled = *cancelled.borrow()
        || outcomes.values().any(|o| matches!(o, offshoot_location::BuildOutcome::Skipped { message } if message == CANCELED));
    let mut statuses = Vec::with_capacity(steps.len());
    for step in steps.iter_mut() {
        use offshoot_location::BuildOutcome;
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
    let sandbox = crate::confine::sandbox(
        state,
        crate::confine::Purpose::Build(&context.target),
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
    let _ = git::load(state, &repo.name, repo.path.clone(), &revision.commit.sha).await;
    let dir = locations.join(revision.commit.sha.as_str());
    dir.exists().then_some(dir)
}

/// Runs a tool command, its output streamed into `step`'s log; `Err(CANCELED)` when cancelled.
async fn stream_tool(
    context: &RunContext,
    step: &RunStep,
    command: &offshoot_location::ToolCommand,
    cancelled: &mut watch::Receiver<bool>,
) -> Result<offshoot_location::ToolOutput, String> {
    let mut child = tokio::process::Command::from(command.to_command()?);
    child.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = child.spawn().map_err(|e| format!("cannot start `{}`: {e}", command.program))?;
    let mut text = String::new();
    let status =
        stream_child(context, step, child, cancelled, command.timeout, Some(&mut text)).await?;
    let text = offshoot_location::tail(text.as_bytes());
    Ok(match status.success() {
        true => offshoot_location::ToolOutput { success: true, failure: None, text },
        false => offshoot_location::ToolOutput {
            success: false,
            failure: Some(format!("`{}` exited with {status}", command.program)),
            text,
        },
    })
}

async fn append_log(context: &RunContext, step: &RunStep, text: &str) {
    // Command output is arbitrary bytes; PostgreSQL text cannot hold NUL. A command that prints
    // a configured variable's value does not put it in the log.
    let text =
        crate::variables::redact(&context.state.config.variables, &text.replace('\0', "\u{fffd}"));
    if let Err(error) = context.state.store.append_step_log(step.id, &text).await {
        tracing::error!("step {} log: {error}", step.id.0);
    }
}

async fn run_sql(
    context: &RunContext,
    step: &RunStep,
    asset: &Asset,
) -> Result<Option<u64>, String> {
    append_log(
        context,
        step,
        &format!("building {}.{} from SQL\n", context.target.schema, asset.key),
    )
    .await;
    let rows = context
        .state
        .warehouse
        .materialize_sql(&context.target, &asset.key, &asset.code)
        .await
        .map_err(|e| e.to_string())?;
    append_log(context, step, &format!("{rows} rows\n")).await;
    Ok(Some(rows))
}

/// The environment of a command asset: only what it needs, never the server's own secrets.
fn command_environment(context: &RunContext, asset: &Asset) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
    env.extend(deployment_environment(context, Some(&asset.key)));
    env
}

/// The deployment's variables (and its warehouse's) for commands and location tools.
fn deployment_environment(context: &RunContext, asset: Option<&AssetKey>) -> Vec<(String, String)> {
    let deployment = &context.deployment;
    // The scoped variables first: Offshoot's own names are refused for them (`variables::check_name`).
    let mut env: Vec<(String, String)> =
        crate::variables::for_deployment(&context.state.config.variables, deployment)
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.expose().to_owned()))
            .collect();
    // The same variables loading the commit gets (`git::load_for`).
    env.extend(offshoot_location::deployment_environment(&git::deployment_context(
        &context.state,
        &deployment.repository,
        Some(deployment),
        Some(&context.revision.commit),
    )));
    env.extend([
        ("OFFSHOOT_ASSET_KEY".to_owned(), asset.map(AssetKey::to_string).unwrap_or_default()),
        // Runs materialize whole assets; per-partition runs are not supported yet.
        ("OFFSHOOT_PARTITION_KEY".to_owned(), String::new()),
        ("OFFSHOOT_RUN_ID".to_owned(), context.run_id.0.to_string()),
    ]);
    env.extend(context.state.warehouse.command_environment(&context.target));
    env
}

/// The commit's files for command assets and location tools, exported once per commit.
async fn ensure_checkout(context: &RunContext) -> Result<PathBuf, String> {
    if context.checkout_dir.exists() {
        return Ok(context.checkout_dir.clone());
    }
    let sha = context.revision.commit.sha.clone();
    let checkouts = context.state.config.checkouts_dir();
    git::blocking(context.repository_path.clone(), move |repo| {
        git::export_checkout(repo, &sha, &checkouts).map_err(git::GitError::Files)
    })
    .await
    .map_err(|e| e.to_string())
}

async fn run_command(
    context: &RunContext,
    step: &RunStep,
    asset: &Asset,
    mut cancelled: watch::Receiver<bool>,
) -> Result<Option<u64>, String> {
    let checkout = ensure_checkout(context).await?;
    let command_line = asset.code.trim_end().to_owned();
    append_log(context, step, &format!("$ {command_line}\n")).await;
    // A folder of the step's own for scratch files; the checkout is read-only when confined.
    let work_dir = context
        .state
        .config
        .locations_dir(&context.deployment.repository)
        .join("runs")
        .join(context.run_id.0.to_string())
        .join(format!("step-{}", step.id.0));
    let sandbox = crate::confine::sandbox(
        &context.state,
        crate::confine::Purpose::Build(&context.target),
        std::slice::from_ref(&work_dir),
    )?;
    let mut env = command_environment(context, asset);
    env.push(("TMPDIR".to_owned(), work_dir.join("tmp").to_string_lossy().into_owned()));
    let child = spawn_command(&command_line, &checkout, env, sandbox.as_ref())?;
    let status = stream_child(context, step, child, &mut cancelled, COMMAND_TIMEOUT, None).await?;
    if !status.success() {
        return Err(format!("the command exited with {status}"));
    }
    let own =
        context.state.warehouse.own_tables(&context.target).await.map_err(|e| e.to_string())?;
    if !own.iter().any(|t| t == asset.key.as_str()) {
        return Err(format!(
            "the command succeeded but did not create the table `{}` in {}",
            asset.key, context.target.schema
        ));
    }
    let rows = context
        .state
        .warehouse
        .row_count(&context.target, asset.key.as_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows)
}

/// The command runs in its own process group: a cancel ends the shell or tool and its children.
async fn kill_for_cancel(
    context: &RunContext,
    step: &RunStep,
    process_group: Option<u32>,
) -> String {
    if let Some(group) = process_group {
        offshoot_location::kill_group(group);
    }
    append_log(context, step, "canceled: the command was killed\n").await;
    CANCELED.to_owned()
}

/// Command assets have a day; tools have their location's `timeout_seconds`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Waits for a child that leads its own process group, its output lines appended to `step`'s
/// log (and to `keep`). A cancel or the timeout kills the whole group.
async fn stream_child(
    context: &RunContext,
    step: &RunStep,
    mut child: tokio::process::Child,
    cancelled: &mut watch::Receiver<bool>,
    timeout: Duration,
    mut keep: Option<&mut String>,
) -> Result<std::process::ExitStatus, String> {
    let process_group = child.id();
    let (lines_tx, mut lines) = mpsc::channel::<String>(256);
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    {
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(lines_tx);
    let mut logged = 0usize;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // A cancel through another server reaches this one only through the store.
    let mut store_check = tokio::time::interval(Duration::from_secs(1));
    store_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wait = Box::pin(child.wait());
    let mut log_line = |line: String| {
        if let Some(keep) = keep.as_deref_mut() {
            if keep.len() < 4 * offshoot_location::MAX_OUTPUT {
                keep.push_str(&line);
                keep.push('\n');
            }
        }
        if logged >= MAX_LOG_BYTES {
            return None;
        }
        logged += line.len() + 1;
        Some(if logged >= MAX_LOG_BYTES {
            "[log truncated]\n".to_owned()
        } else {
            format!("{line}\n")
        })
    };
    let status = loop {
        tokio::select! {
            status = &mut wait => break status.map_err(|e| format!("waiting for the command: {e}"))?,
            Some(line) = lines.recv() => {
                if let Some(text) = log_line(line) {
                    append_log(context, step, &text).await;
                }
            }
            _ = &mut deadline => {
                drop(wait);
                if let Some(group) = process_group {
                    offshoot_location::kill_group(group);
                }
                let message = format!("did not finish within {} s and was killed", timeout.as_secs());
                append_log(context, step, &format!("{message}\n")).await;
                return Err(message);
            }
            _ = store_check.tick() => {
                if context.state.store.get_run(context.run_id).await.is_ok_and(|r| r.cancel_requested) {
                    drop(wait);
                    return Err(kill_for_cancel(context, step, process_group).await);
                }
            }
            changed = cancelled.changed() => {
                if changed.is_ok() && *cancelled.borrow() {
                    drop(wait);
                    return Err(kill_for_cancel(context, step, process_group).await);
                }
            }
        }
    };
    while let Ok(line) = lines.try_recv() {
        if let Some(text) = log_line(line) {
            append_log(context, step, &text).await;
        }
    }
    Ok(status)
}

fn spawn_command(
    command_line: &str,
    dir: &Path,
    env: Vec<(String, String)>,
    sandbox: Option<&offshoot_location::Sandbox>,
) -> Result<tokio::process::Child, String> {
    let command = offshoot_location::ToolCommand {
        program: "sh".to_owned(),
        args: vec!["-c".to_owned(), command_line.to_owned()],
        cwd: dir.to_path_buf(),
        env,
        timeout: COMMAND_TIMEOUT,
        sandbox: sandbox.cloned(),
    };
    let mut command = tokio::process::Command::from(command.to_command()?);
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command.spawn().map_err(|e| format!("starting `{command_line}`: {e}"))
}
