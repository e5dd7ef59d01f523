//! The run executor: claims queued runs as their pool has room (production and branches have
//! separate pools) and executes them. Steps run in dependency order with bounded parallelism;
//! SQL assets build in the warehouse, command assets run in a checkout of the revision's
//! commit. A failed step skips its downstream; a cancel stops at step boundaries and kills
//! running commands. Claims and results are lifecycle events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offshoot_core::fingerprint::FingerprintParts;
use offshoot_core::lifecycle::{Event, Lease};
use offshoot_core::{
    Asset, AssetKey, AssetKind, DeploymentKind, DeploymentName, RunPlan, RunStatus, Snapshot,
    StepStatus,
};
use offshoot_store::{
    Deployment, DeploymentId, Materialization, MaterializationId, Provenance, ReadMaterialization,
    Revision, Run, RunFilter, RunId, RunStep, StoreError, UpstreamProvenance,
};
use offshoot_warehouse::Target;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use super::tool::build_with_tool;
use crate::adapters::{confine, process, project};
use crate::notices::Notice;
use crate::service::deployments::{self, Extras, LifecycleError};
use crate::state::{now, AppState, Metrics, SharedState};

/// A step's log is cut beyond this many bytes.
const MAX_LOG_BYTES: usize = 1 << 20;

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
    let event = Event::ClaimRun {
        run: run.id.0,
        lease: lease(state),
        max_running: state.config.max_concurrent_runs_per_branch_deployment,
    };
    // Tag limits count every running run of the store, inside the claim's transaction (a
    // catch-up's too: one at a time).
    let extras = deployments::Extras {
        run_limits: super::run_limits(state, &run),
        ..deployments::Extras::default()
    };
    let outcome = match deployments::apply_with(state, run.deployment_id, event, extras).await {
        Ok(outcome) => outcome,
        Err(LifecycleError::Refused(_))
        | Err(LifecycleError::Limited(_))
        | Err(LifecycleError::Store(StoreError::NotFound(_))) => return Ok(()),
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
pub(super) struct RunContext {
    pub(super) state: SharedState,
    pub(super) deployment: Deployment,
    pub(super) revision: Revision,
    pub(super) target: Target,
    pub(super) run_id: RunId,
    pub(super) checkout_dir: PathBuf,
    pub(super) repository_path: PathBuf,
    /// The variables in force when the run started (API-set and configured).
    pub(super) variables: Vec<crate::variables::Variable>,
    /// The revision's asset graph: every materialization is recorded with its fingerprint.
    pub(super) snapshot: Arc<Snapshot>,
    /// What a step's read of each upstream lands on, for its provenance.
    pub(super) reads: std::sync::Mutex<Reads>,
}

/// The materialization behind each table a run's steps read: production's current ones and, in
/// a branch, the branch's own (what it has built), as the run started and as it records more.
pub(super) struct Reads {
    production: BTreeMap<AssetKey, ReadMaterialization>,
    own: BTreeMap<AssetKey, ReadMaterialization>,
    /// In a branch: the tables its schema holds; a read of anything else lands in production's.
    own_tables: BTreeSet<String>,
    is_production: bool,
}

/// The table an asset's key names (a path key's, a Dagster asset's, is its last part).
pub(super) fn table_of(key: &AssetKey) -> &str {
    key.parts().last().unwrap_or_default()
}

impl Reads {
    /// As a run of `keys` starts: only those keys' and their upstreams' materializations
    /// matter to its provenance, so only theirs are read (not the whole graph's).
    async fn load(
        state: &AppState,
        deployment: &Deployment,
        target: &Target,
        snapshot: &Snapshot,
        keys: &BTreeSet<AssetKey>,
    ) -> Reads {
        let mut wanted = keys.clone();
        wanted.extend(keys.iter().flat_map(|key| snapshot.upstream_of(key)).cloned());
        let wanted = &wanted;
        let current = |id: DeploymentId| async move {
            match state.store.current_materialization_ids(id, Some(wanted)).await {
                Ok(current) => current.into_iter().collect(),
                Err(error) => {
                    tracing::warn!("reading current materializations for provenance: {error}");
                    BTreeMap::new()
                }
            }
        };
        let is_production = deployment.kind == DeploymentKind::Production;
        let production = async {
            let production_id = if is_production {
                Some(deployment.id)
            } else {
                state
                    .store
                    .find_deployment(&deployment.repository, &DeploymentName::production())
                    .await
                    .ok()
                    .flatten()
                    .map(|p| p.id)
            };
            match production_id {
                Some(id) => current(id).await,
                None => BTreeMap::new(),
            }
        };
        let own = async {
            if is_production {
                return (BTreeMap::new(), BTreeSet::new());
            }
            let (tables, own) =
                tokio::join!(state.warehouse.own_tables(target), current(deployment.id));
            let tables = tables.unwrap_or_else(|error| {
                tracing::warn!("listing {}'s tables for provenance: {error}", target.schema);
                Vec::new()
            });
            (own, tables.into_iter().collect())
        };
        // Production's side, the branch's materializations and its tables are independent
        // reads: at once, not one after another, before the run's first step.
        let (production, (own, own_tables)) = tokio::join!(production, own);
        Reads { production, own, own_tables, is_production }
    }

    /// What a read of `key` lands on now; `None`: a source, or a table no recorded run built.
    pub(super) fn read(&self, key: &AssetKey) -> Option<ReadMaterialization> {
        if !self.is_production && self.own_tables.contains(table_of(key)) {
            return self.own.get(key).cloned();
        }
        self.production.get(key).cloned()
    }

    /// In a branch: production's materialization of `key` as the run started, the one a branch
    /// build of `key` is "built against"; `None` in production.
    pub(super) fn built_against(&self, key: &AssetKey) -> Option<ReadMaterialization> {
        if self.is_production {
            return None;
        }
        self.production.get(key).cloned()
    }

    /// Production's current materializations, as the run started and as it recorded more.
    pub(super) fn production(&self) -> &BTreeMap<AssetKey, ReadMaterialization> {
        &self.production
    }

    /// The run recorded `read` for `key`: later reads of it land there.
    pub(super) fn recorded(&mut self, key: &AssetKey, read: ReadMaterialization) {
        if self.is_production {
            self.production.insert(key.clone(), read);
        } else {
            self.own_tables.insert(table_of(key).to_owned());
            self.own.insert(key.clone(), read);
        }
    }
}

/// Executes a run this server has claimed (it is `running` under this server's lease).
async fn execute(state: &SharedState, run: Run) -> Result<(), LifecycleError> {
    let preparing = Instant::now();
    // Independent reads, at once: each is a round trip to the store.
    let (deployment, revision, steps, variables) = tokio::join!(
        state.store.get_deployment(run.deployment_id),
        state.store.get_revision(run.revision_id),
        state.store.list_steps(run.id),
        crate::variables::in_force(state.store.as_ref(), &state.config.variables),
    );
    let (deployment, revision, mut steps, variables) = (deployment?, revision?, steps?, variables?);
    let (switch, cancelled) = watch::channel(false);
    state.cancel_switches.lock().expect("never poisoned").insert(run.id, switch);

    let prepared = match state.repository(&deployment.repository) {
        None => Err(format!("repository `{}` is no longer configured", deployment.repository)),
        Some(repo) => {
            match project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha).await {
                Ok(loaded) => match loaded.as_ref() {
                    Ok(project) => {
                        // Ordered once in the cache, so that no run sorts the graph again.
                        project.snapshot.topological_order();
                        let snapshot = Arc::new(project.snapshot.clone());
                        Ok((snapshot, project.manifest.clone(), repo.path.clone()))
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
    let target = state.target(&deployment);
    let loaded = preparing.elapsed();
    let reads = Reads::load(state, &deployment, &target, &snapshot, &keys).await;
    tracing::debug!(
        "run {}: its project and steps read in {} ms, its reads in {} ms",
        run.id.0,
        loaded.as_millis(),
        (preparing.elapsed() - loaded).as_millis()
    );
    let context = Arc::new(RunContext {
        variables,
        state: state.clone(),
        target,
        checkout_dir: state.config.checkouts_dir().join(revision.commit.sha.as_str()),
        deployment,
        revision,
        run_id: run.id,
        repository_path,
        snapshot: snapshot.clone(),
        reads: std::sync::Mutex::new(reads),
    });

    let location = offshoot_location::for_manifest(&manifest);
    if crate::service::catch_up::is_catch_up(&run) {
        return super::catch_up::execute(&context, run, location, steps, cancelled).await;
    }
    if location.kind() != "native" {
        let statuses =
            build_with_tool(&context, location, &snapshot, &mut steps, cancelled).await?;
        return finish(state, run, &context, &steps, &statuses).await;
    }

    let mut statuses: Vec<StepStatus> = steps.iter().map(|s| s.status).collect();
    run_native(&context, &plan, &mut steps, &mut statuses, &cancelled).await?;
    finish(state, run, &context, &steps, &statuses).await
}

/// Executes the steps of a plan of SQL and command assets, in dependency order with bounded
/// parallelism, until each has finished (a failure skips its downstream; a cancel stops at the
/// next boundary).
pub(super) async fn run_native(
    context: &Arc<RunContext>,
    plan: &RunPlan,
    steps: &mut [RunStep],
    statuses: &mut [StepStatus],
    cancelled: &watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let state = &context.state;
    let snapshot = &context.snapshot;
    let run_id = context.run_id;
    let mut running: JoinSet<(usize, RunStep)> = JoinSet::new();
    let (to_record, finished) = mpsc::unbounded_channel();
    let recording = tokio::spawn(recorder(context.clone(), finished));
    let parallelism = state.config.step_parallelism.max(1);
    // A cancel asked on this server flips `cancelled` at once; one asked on another server is
    // in the store, looked at between steps but at most every CANCEL_LOOK.
    let mut looked = None::<Instant>;
    let mut cancel_now = false;
    loop {
        if !cancel_now && looked.is_none_or(|at| at.elapsed() >= CANCEL_LOOK) {
            looked = Some(Instant::now());
            cancel_now = state.store.get_run(run_id).await?.cancel_requested;
        }
        cancel_now |= *cancelled.borrow();
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
            for index in plan.ready(statuses) {
                if running.len() >= parallelism {
                    break;
                }
                let Some(asset) = snapshot.get(&plan.steps[index].key).cloned() else { continue };
                statuses[index] = StepStatus::Running;
                let step = steps[index].clone();
                let context = context.clone();
                let cancelled = cancelled.clone();
                let to_record = to_record.clone();
                running.spawn(async move {
                    (index, run_step(&context, step, asset, cancelled, &to_record).await)
                });
            }
        }
        let Some(joined) = running.join_next().await else { break };
        match joined {
            Ok((index, step)) => {
                statuses[index] = step.status;
                steps[index] = step;
            }
            Err(error) => tracing::error!("a step task of run {} panicked: {error}", run_id.0),
        }
        for index in plan.skip_downstream_of_failures(statuses) {
            steps[index].status = StepStatus::Skipped;
            steps[index].error = Some("an upstream step did not succeed".into());
            steps[index].finished_at = Some(now());
            state.store.update_step(&steps[index]).await?;
        }
    }
    // Every finished step stored before the run reports its outcome.
    drop(to_record);
    if let Err(error) = recording.await {
        tracing::error!("the recorder of run {} panicked: {error}", run_id.0);
    }
    state.cancel_switches.lock().expect("never poisoned").remove(&run_id);
    // Anything still pending here was never reachable (e.g. a step task panicked).
    for (i, status) in statuses.iter_mut().enumerate() {
        if !status.is_finished() {
            *status = StepStatus::Skipped;
            steps[i].status = StepStatus::Skipped;
            steps[i].finished_at = Some(now());
            state.store.update_step(&steps[i]).await?;
        }
    }
    Ok(())
}

/// Reports a run's outcome (from its steps') to the lifecycle: `canceled` if a cancel was
/// asked for, whatever the steps did; a closed deployment's teardown may go ahead after it.
pub(super) async fn finish(
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
    state.notices.send(Notice::RunFinished { deployment: context.deployment.id });
    Ok(())
}

pub(super) async fn report(
    state: &SharedState,
    run: &Run,
    succeeded: bool,
    error: Option<String>,
) -> Result<(), LifecycleError> {
    let event =
        Event::RunFinished { run: run.id.0, owner: state.config.server_id.clone(), succeeded };
    let extras = Extras { run_error: error, ..Extras::default() };
    deployments::report(state, run.deployment_id, event, extras).await?;
    Ok(())
}

pub(super) async fn finish_early(
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

/// How often a run looks in the store for a cancel asked on another server.
pub(super) const CANCEL_LOOK: Duration = Duration::from_millis(250);

/// A step still running after this long is written as `running` (with its start) so that the
/// UI shows it; a quicker one goes from pending to its outcome in one store write.
const SHOW_RUNNING_AFTER: Duration = Duration::from_millis(100);

/// A step that has finished its work, for the run's recorder to write.
struct Finished {
    step: RunStep,
    log: String,
    built: Option<Materialization>,
}

/// Writes the run's finished steps in the order they finished, one store transaction each
/// (`Store::finish_step`: outcome, log and materialization together), while the steps they
/// unblocked already execute: a step's commit to the store overlaps its downstream's statement
/// instead of delaying its start. The order is what provenance needs: a step is sent here
/// before any downstream of it starts, so by the time the downstream is recorded, the read of
/// its upstream lands on the materialization just recorded.
async fn recorder(context: Arc<RunContext>, mut finished: mpsc::UnboundedReceiver<Finished>) {
    let store = &context.state.store;
    while let Some(Finished { step, log, built }) = finished.recv().await {
        let provenance = built.as_ref().and_then(|_| provenance_of(&context, &step.asset_key));
        match store.finish_step(&step, &log, built.as_ref().zip(provenance.as_ref())).await {
            Ok(Some(id)) => recorded_read(&context, &step.asset_key, id),
            Ok(None) => {
                // A key the revision does not have gets no provenance: recorded without it.
                if let (Some(materialization), None) = (&built, &provenance) {
                    if let Err(error) = store.record_materialization(materialization).await {
                        tracing::error!(
                            "recording the materialization of {}: {error}",
                            step.asset_key
                        );
                    }
                }
            }
            Err(error) => tracing::error!("step {}: {error}", step.id.0),
        }
    }
}

/// Executes one step and hands its outcome to the run's recorder (`recorder`); returns the step
/// as it will be stored. A command's output is appended as it comes, and a step that runs
/// longer than `SHOW_RUNNING_AFTER` is shown running first.
async fn run_step(
    context: &RunContext,
    mut step: RunStep,
    asset: Asset,
    cancelled: watch::Receiver<bool>,
    recorder: &mpsc::UnboundedSender<Finished>,
) -> RunStep {
    let store = &context.state.store;
    let started = Instant::now();
    step.status = StepStatus::Running;
    step.started_at = Some(now());
    Metrics::increment(&context.state.metrics.steps_executed);
    let mut log = String::new();
    let outcome = {
        let running = &step;
        let work = async {
            match asset.kind {
                AssetKind::Sql => run_sql(context, &asset, &mut log).await,
                AssetKind::Command => run_command(context, running, &asset, cancelled).await,
                AssetKind::Source => Err(StepError::failed("a source is not materialized")),
                AssetKind::Tool => {
                    Err(StepError::failed("built by the code location's tool, not step by step"))
                }
            }
        };
        tokio::pin!(work);
        tokio::select! {
            outcome = &mut work => outcome,
            () = tokio::time::sleep(SHOW_RUNNING_AFTER) => {
                if let Err(error) = store.update_step(running).await {
                    tracing::error!("step {}: {error}", running.id.0);
                }
                work.await
            }
        }
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    step.finished_at = Some(now());
    let mut built = None;
    match outcome {
        Ok(rows) => {
            step.status = StepStatus::Succeeded;
            step.row_count = rows.map(|r| r as i64);
            built = Some(materialization_of(context, &step, duration_ms));
        }
        Err(StepError::Canceled) => {
            step.status = StepStatus::Canceled;
            step.error = Some("canceled".into());
        }
        Err(StepError::Failed(message)) => {
            step.status = StepStatus::Failed;
            log.push_str(&format!("error: {message}\n"));
            step.error = Some(message);
        }
    }
    let log = log_text(context, &log);
    if recorder.send(Finished { step: step.clone(), log, built }).is_err() {
        tracing::error!(
            "step {}: the run's recorder stopped; its outcome is not stored",
            step.id.0
        );
    }
    step
}

/// Why a step did not succeed: canceled (a type, never a magic message) or failed with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StepError {
    Canceled,
    Failed(String),
}

impl StepError {
    pub(super) fn failed(message: impl Into<String>) -> StepError {
        StepError::Failed(message.into())
    }
}

impl From<String> for StepError {
    fn from(message: String) -> StepError {
        StepError::Failed(message)
    }
}

/// Records what a step built, with its provenance: the asset's fingerprint and parts, and the
/// materialization each upstream read landed on.
pub(super) async fn record_materialization(context: &RunContext, step: &RunStep, duration_ms: i64) {
    let materialization = materialization_of(context, step, duration_ms);
    let provenance = provenance_of(context, &step.asset_key);
    let recorded = match &provenance {
        Some(provenance) => {
            context.state.store.record_provenance(&materialization, provenance).await.map(Some)
        }
        None => context.state.store.record_materialization(&materialization).await.map(|()| None),
    };
    match recorded {
        Ok(Some(id)) => recorded_read(context, &step.asset_key, id),
        Ok(None) => {}
        Err(error) => {
            tracing::error!("recording the materialization of {}: {error}", step.asset_key)
        }
    }
}

/// What a step that succeeded built, as the store records it.
fn materialization_of(context: &RunContext, step: &RunStep, duration_ms: i64) -> Materialization {
    Materialization {
        deployment_id: context.deployment.id,
        run_id: context.run_id,
        asset_key: step.asset_key.clone(),
        commit: context.revision.commit.sha.clone(),
        row_count: step.row_count,
        duration_ms,
        created_at: now(),
    }
}

/// Later reads of `key` in this run land on its materialization `id`.
pub(super) fn recorded_read(context: &RunContext, key: &AssetKey, id: MaterializationId) {
    let read =
        ReadMaterialization { id, deployment_id: context.deployment.id, run_id: context.run_id };
    context.reads.lock().expect("never poisoned").recorded(key, read);
}

/// What `key` is built from in this run: its fingerprint's parts and what each upstream read
/// lands on now. `None` for a key the revision does not have.
fn provenance_of(context: &RunContext, key: &AssetKey) -> Option<Provenance> {
    let parts = FingerprintParts::of(&context.snapshot, key)?;
    let fingerprint = context.snapshot.fingerprint(key)?;
    let reads = context.reads.lock().expect("never poisoned");
    let upstream = parts
        .upstream
        .iter()
        .map(|(dep, fingerprint)| UpstreamProvenance {
            key: dep.clone(),
            fingerprint: *fingerprint,
            read: reads.read(dep),
        })
        .collect();
    Some(Provenance {
        fingerprint,
        code_version: parts.code_version,
        partitions: parts.partitions,
        upstream,
        promoted_from: None,
        built_against: reads.built_against(key),
    })
}

pub(super) async fn append_log(context: &RunContext, step: &RunStep, text: &str) {
    // Command output is arbitrary bytes; PostgreSQL text cannot hold NUL. A command that prints
    // a configured variable's value does not put it in the log.
    let text = log_text(context, text);
    if let Err(error) = context.state.store.append_step_log(step.id, &text).await {
        tracing::error!("step {} log: {error}", step.id.0);
    }
}

/// A log line as stored: no NUL (PostgreSQL text cannot hold it), variables' values redacted.
pub(super) fn log_text(context: &RunContext, text: &str) -> String {
    crate::variables::redact(&context.variables, &text.replace('\0', "\u{fffd}"))
}

/// Builds an SQL asset; its log lines go to `log`, written with the step's outcome.
async fn run_sql(
    context: &RunContext,
    asset: &Asset,
    log: &mut String,
) -> Result<Option<u64>, StepError> {
    log.push_str(&format!("building {}.{} from SQL\n", context.target.schema, asset.key));
    let rows = context
        .state
        .warehouse
        .materialize_sql(&context.target, &asset.key, &asset.code)
        .await
        .map_err(|e| e.to_string())?;
    log.push_str(&format!("{rows} rows\n"));
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
pub(super) fn deployment_environment(
    context: &RunContext,
    asset: Option<&AssetKey>,
) -> Vec<(String, String)> {
    let deployment = &context.deployment;
    // The scoped variables first: Offshoot's own names are refused for them (`variables::check_name`).
    let mut env: Vec<(String, String)> =
        crate::variables::for_deployment(&context.variables, deployment)
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.expose().to_owned()))
            .collect();
    // The same variables loading the commit gets (`project::load_for`).
    env.extend(offshoot_location::deployment_environment(&project::deployment_context(
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
pub(super) async fn ensure_checkout(context: &RunContext) -> Result<PathBuf, String> {
    if context.checkout_dir.exists() {
        return Ok(context.checkout_dir.clone());
    }
    let sha = context.revision.commit.sha.clone();
    let checkouts = context.state.config.checkouts_dir();
    project::blocking(context.repository_path.clone(), move |repo| {
        project::export_checkout(repo, &sha, &checkouts).map_err(project::GitError::Files)
    })
    .await
    .map_err(|e| e.to_string())
}

async fn run_command(
    context: &RunContext,
    step: &RunStep,
    asset: &Asset,
    mut cancelled: watch::Receiver<bool>,
) -> Result<Option<u64>, StepError> {
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
    let sandbox = confine::sandbox(
        &context.state,
        confine::Purpose::Build(&context.target),
        std::slice::from_ref(&work_dir),
    )?;
    let mut env = command_environment(context, asset);
    env.push(("TMPDIR".to_owned(), work_dir.join("tmp").to_string_lossy().into_owned()));
    let child =
        process::spawn_shell(&command_line, &checkout, env, COMMAND_TIMEOUT, sandbox.as_ref())?;
    let mut output = StepLog::new(context, step);
    let ended = process::stream_child(child, &mut cancelled, COMMAND_TIMEOUT, &mut output).await?;
    match output.ended(ended).await? {
        status if !status.success() => {
            return Err(StepError::Failed(format!("the command exited with {status}")))
        }
        _ => {}
    }
    let own =
        context.state.warehouse.own_tables(&context.target).await.map_err(|e| e.to_string())?;
    if !own.iter().any(|t| t == asset.key.as_str()) {
        return Err(StepError::Failed(format!(
            "the command succeeded but did not create the table `{}` in {}",
            asset.key, context.target.schema
        )));
    }
    let rows = context
        .state
        .warehouse
        .row_count(&context.target, asset.key.as_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows)
}

/// A step's log as a child process's output: lines appended (cut beyond `MAX_LOG_BYTES`), a
/// copy kept for the tool's own result parsing, and cancels requested through the store seen.
pub(super) struct StepLog<'a> {
    context: &'a RunContext,
    step: &'a RunStep,
    logged: usize,
    /// The output kept for the location to read (`None`: not kept).
    pub(super) kept: Option<String>,
}

impl<'a> StepLog<'a> {
    pub(super) fn new(context: &'a RunContext, step: &'a RunStep) -> StepLog<'a> {
        StepLog { context, step, logged: 0, kept: None }
    }

    pub(super) fn keeping(mut self) -> StepLog<'a> {
        self.kept = Some(String::new());
        self
    }

    /// The exit status, or the step's error for a cancel or timeout (logged).
    pub(super) async fn ended(&self, ended: process::Ended) -> Result<ExitStatus, StepError> {
        match ended {
            process::Ended::Exited(status) => Ok(status),
            process::Ended::Canceled => {
                append_log(self.context, self.step, "canceled: the command was killed\n").await;
                Err(StepError::Canceled)
            }
            process::Ended::TimedOut(timeout) => {
                let message =
                    format!("did not finish within {} s and was killed", timeout.as_secs());
                append_log(self.context, self.step, &format!("{message}\n")).await;
                Err(StepError::Failed(message))
            }
        }
    }
}

#[async_trait::async_trait]
impl process::Output for StepLog<'_> {
    async fn line(&mut self, line: String) {
        if let Some(kept) = self.kept.as_mut() {
            if kept.len() < 4 * offshoot_location::MAX_OUTPUT {
                kept.push_str(&line);
                kept.push('\n');
            }
        }
        if self.logged >= MAX_LOG_BYTES {
            return;
        }
        self.logged += line.len() + 1;
        let text = if self.logged >= MAX_LOG_BYTES {
            "[log truncated]\n".to_owned()
        } else {
            format!("{line}\n")
        };
        append_log(self.context, self.step, &text).await;
    }

    async fn cancel_requested(&mut self) -> bool {
        // A cancel through another server reaches this one only through the store.
        self.context
            .state
            .store
            .get_run(self.context.run_id)
            .await
            .is_ok_and(|r| r.cancel_requested)
    }
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
