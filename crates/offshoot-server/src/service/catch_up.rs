//! Production's catch-up after a deploy, and its undo. When production serves a new revision
//! (a merge, any push to the production branch) every asset whose production table no longer
//! matches its fingerprint is, in topological order, either **promoted** (a branch deployment
//! built it with the identical fingerprint from what production serves, or from what this same
//! catch-up promotes: its table is taken without running code) or **rebuilt** in production;
//! the pure decision is `offshoot_core::catch_up`. The catch-up is a production run whose
//! selection is [`SELECTION`]; the runner carries it out (`runner::catch_up`).
//!
//! Also here: whether a merged branch's close keeps its tables for the catch-up (`Held`) and
//! when they are released, the rollback (`offshoot deployment rollback prod`: the archive of
//! the last catch-up restored, the previous revision serving again), the archives' expiry, and
//! recovery after a crash (a promotion that committed is recorded, an interrupted catch-up runs
//! again).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use offshoot_core::catch_up::{self, Action, BuildId, Candidate, CatchUp, Input};
use offshoot_core::lifecycle::{Event, Teardown, INTERRUPTED_RUN, SERVING_AGAIN};
use offshoot_core::{
    pushed_commit_is_newer, AssetKey, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus,
    PullRequestStatus, RevisionStatus, RunStatus, Snapshot, StepStatus,
};
use offshoot_store::{
    Deployment, DeploymentFilter, Materialization, MaterializationId, PromotedFrom, Provenance,
    ReadMaterialization, RecordedMaterialization, Revision, Run, RunFilter, RunId, RunStep,
};
use offshoot_warehouse::ArchiveId;
use tokio::sync::broadcast;

use crate::adapters::project;
use crate::config::OnDeploy;
use crate::notices::Notice;
use crate::service::deployments::{self, Extras, Input as EventInput, LifecycleError};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::lookup::repository_config;
use crate::state::{now, AppState, SharedState};

/// The selection of a catch-up run (no selection parses to it: runs of users never take it).
pub const SELECTION: &str = "catch-up";

/// A merged branch's tables are kept for production's catch-up at most this long after the
/// close (a merge commit that never deploys must not keep them forever).
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

/// Production runs looked at for catch-ups of the serving revision.
const RECENT_RUNS: u32 = 200;

pub fn is_catch_up(run: &Run) -> bool {
    run.selection == SELECTION
}

/// The tag every catch-up run carries (its value: the repository). Reserved: no other run may
/// carry it, so that the store can count running catch-ups when one is claimed.
pub const CATCH_UP_TAG: &str = "offshoot/catch-up";

/// At most one catch-up runs at a time in the store, across every server sharing it (each
/// replaces production's tables from what it decided): checked inside the claim's transaction,
/// as tag limits are. A second one stays queued until the first ends.
pub fn catch_up_limit() -> offshoot_store::TagLimit {
    offshoot_store::TagLimit { key: CATCH_UP_TAG.to_owned(), value: None, limit: 1 }
}

/// A branch materialization the catch-up may promote, with its deployment.
#[derive(Debug, Clone)]
pub struct Source {
    pub deployment: Deployment,
    pub materialization: RecordedMaterialization,
}

/// The catch-up decided on what the store and the warehouse hold now, with the branch
/// materializations its promotions name.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub catch_up: CatchUp,
    pub sources: BTreeMap<BuildId, Source>,
}

impl Plan {
    /// The branch materialization a promotion takes.
    pub fn source(&self, action: &Action) -> Option<&Source> {
        match action {
            Action::Promote { build, .. } => self.sources.get(build),
            _ => None,
        }
    }
}

/// Why the warehouse cannot move a branch's table, in the step's words.
fn unmovable(why: String) -> String {
    if why == "missing" {
        "not a table in its schema (dropped since, or stored elsewhere, e.g. by an IO manager)"
            .to_owned()
    } else {
        why
    }
}

/// Whether the branch deployment's tables may be promoted: open (and not being torn down), or
/// closed by a merge and held for this catch-up.
fn offers_tables(deployment: &Deployment) -> bool {
    deployment.kind == DeploymentKind::Branch
        && match deployment.status {
            DeploymentStatus::Open => deployment.teardown == Teardown::Done,
            DeploymentStatus::Closed => deployment.teardown == Teardown::Held,
        }
}

/// Decides production's catch-up to `snapshot`: production's and every branch's current
/// materializations (with their provenance), and which candidate tables the warehouse can move
/// (asked only of the promotions the decision would make, again until no new one is refused).
pub async fn plan(
    state: &AppState,
    production: &Deployment,
    snapshot: &Snapshot,
) -> ServiceResult<Plan> {
    let current = state.store.current_materializations(production.id).await?;
    let production_built: BTreeMap<AssetKey, catch_up::Built> = current
        .iter()
        .filter_map(|m| Some((m.materialization.asset_key.clone(), m.as_built(production.id)?)))
        .collect();
    let filter =
        DeploymentFilter { repository: Some(production.repository.clone()), include_closed: true };
    let mut candidates = Vec::new();
    let mut sources = BTreeMap::new();
    for branch in state.store.list_deployments(&filter).await? {
        if !offers_tables(&branch) {
            continue;
        }
        for recorded in state.store.current_materializations(branch.id).await? {
            let key = &recorded.materialization.asset_key;
            if !snapshot.get(key).is_some_and(|a| a.kind.is_materializable()) {
                continue;
            }
            let Some(built) = recorded.as_built(production.id) else { continue };
            candidates.push(Candidate {
                key: key.clone(),
                deployment: branch.name.clone(),
                run: recorded.materialization.run_id.0,
                built,
                unmovable: None,
            });
            let source = Source { deployment: branch.clone(), materialization: recorded };
            sources.insert(BuildId(source.materialization.id.0), source);
        }
    }
    let mut checked = BTreeSet::new();
    loop {
        let catch_up = catch_up::decide(Input {
            snapshot,
            production: &production_built,
            candidates: &candidates,
        });
        let mut refused = false;
        for decision in catch_up.promotions() {
            let Action::Promote { build, .. } = decision.action else { continue };
            if !checked.insert(build) {
                continue;
            }
            let source = &sources[&build];
            let target = state.target(&source.deployment);
            let why = match state.warehouse.promotable(&target, &decision.key).await {
                Ok(why) => why,
                Err(error) => Some(format!("not checkable ({error})")),
            };
            if let Some(why) = why {
                let candidate = candidates
                    .iter_mut()
                    .find(|c| c.built.id == build)
                    .expect("every source is a candidate");
                candidate.unmovable = Some(unmovable(why));
                refused = true;
            }
        }
        if !refused {
            return Ok(Plan { catch_up, sources });
        }
    }
}

/// Production's deployment of `repository`, if it has one.
async fn production_of(
    state: &AppState,
    repository: &offshoot_core::RepositoryName,
) -> ServiceResult<Option<Deployment>> {
    Ok(state.store.find_deployment(repository, &DeploymentName::production()).await?)
}

/// Production's recent catch-up runs, newest first.
async fn catch_up_runs(state: &AppState, production: &Deployment) -> ServiceResult<Vec<Run>> {
    let filter =
        RunFilter { deployment_id: Some(production.id), statuses: Vec::new(), limit: RECENT_RUNS };
    Ok(state.store.list_runs(&filter).await?.into_iter().filter(is_catch_up).collect())
}

/// The serving revision's snapshot.
async fn serving_snapshot(
    state: &AppState,
    production: &Deployment,
    revision: &Revision,
) -> ServiceResult<Snapshot> {
    let repo = repository_config(state, &production.repository)?;
    let loaded = project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ServiceError::internal)?;
    match loaded.as_ref() {
        Ok(project) => Ok(project.snapshot.clone()),
        Err(_) => Err(ServiceError::internal("a ready revision has invalid definitions")),
    }
}

/// Starts production's catch-up to the revision it serves: a production run of every asset the
/// decision promotes or rebuilds, each step saying which. `None` when production is up to
/// date. An active catch-up of the serving revision is returned instead of a second one.
pub async fn launch(state: &SharedState, production: &Deployment) -> ServiceResult<Option<Run>> {
    for _ in 0..deployments::ATTEMPTS {
        let (record, view) = deployments::read(state, production.id).await?;
        let Some(serving) = view
            .machine
            .serving
            .and_then(|n| record.revisions.iter().find(|r| r.number == n))
            .cloned()
        else {
            return Err(ServiceError::conflict(
                "deployment_not_ready",
                format!("`{}` has no ready revision yet", production.name),
            ));
        };
        let active = record.runs.iter().find(|r| is_catch_up(r) && r.revision_id == serving.id);
        if let Some(active) = active {
            return Ok(Some(active.clone()));
        }
        let snapshot = serving_snapshot(state, &record.deployment, &serving).await?;
        let plan = plan(state, &record.deployment, &snapshot).await?;
        if plan.catch_up.is_noop() {
            tracing::info!(
                "{}/prod is up to date with revision {}",
                production.repository,
                serving.number
            );
            return Ok(None);
        }
        let keys = plan.catch_up.steps().map(|d| d.key.clone()).collect();
        let extras = Extras {
            run: Some((SELECTION.to_owned(), keys)),
            run_tags: vec![(CATCH_UP_TAG.to_owned(), production.repository.to_string())],
            ..Extras::default()
        };
        let input = EventInput { event: Event::LaunchRun, extras };
        let Some(outcome) = deployments::attempt(state, record, &view, input).await? else {
            continue;
        };
        let run = outcome
            .new_runs
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::internal("a launched catch-up was not written"))?;
        // Each step says what it will do; the runner decides again when it starts.
        for mut step in state.store.list_steps(run.id).await? {
            if let Some(action) = plan.catch_up.action(&step.asset_key) {
                describe_step(&mut step, action, &plan);
                state.store.update_step(&step).await?;
            }
        }
        tracing::info!(
            "{}/prod catches up with revision {} in run {}: {} promoted, {} rebuilt",
            production.repository,
            serving.number,
            run.id.0,
            plan.catch_up.promotions().count(),
            plan.catch_up.rebuilds().count()
        );
        return Ok(Some(run));
    }
    Err(LifecycleError::Contended(deployments::ATTEMPTS).into())
}

/// Writes what the decision does with the step's asset into the step.
pub fn describe_step(step: &mut RunStep, action: &Action, plan: &Plan) {
    step.action = Some(action.to_string());
    step.promoted_from = plan.source(action).map(|s| s.materialization.id);
}

/// Runs forever: after production serves a new revision (not its first: there is nothing to
/// catch up from), starts its catch-up when `[production] on_deploy = "catch-up"`, and lets
/// go of merged branches' tables once nothing more can be taken.
pub async fn worker(state: SharedState) {
    let mut notices = state.notices.subscribe();
    loop {
        let (deployment, number) = match notices.recv().await {
            Ok(Notice::RevisionFinished { deployment, number }) => (deployment, number),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    "the catch-up worker missed {missed} notice(s); the sweep catches up"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Err(error) = after_deploy(&state, deployment, number).await {
            tracing::warn!("production's catch-up after a deploy: {}", error.message);
        }
    }
}

async fn after_deploy(
    state: &SharedState,
    deployment: offshoot_store::DeploymentId,
    number: u32,
) -> ServiceResult<()> {
    let production = state.store.get_deployment(deployment).await?;
    if production.kind != DeploymentKind::Production {
        return Ok(());
    }
    let Some(serving) = production.current_revision else { return Ok(()) };
    let serving = state.store.get_revision(serving).await?;
    if serving.number != number || serving.status != RevisionStatus::Ready {
        return Ok(());
    }
    if state.config.on_deploy == OnDeploy::CatchUp && serving.base_commit.is_some() {
        launch(state, &production).await?;
    }
    release_holds(state, &production.repository).await
}

/// Whether production has taken what it can of `branch`'s tables: it serves the branch's
/// commit or a newer one (a merge, squash or rebase of it), no catch-up is queued or running,
/// and the serving revision has had its catch-up (or needs none).
async fn caught_up(state: &AppState, branch: &Deployment) -> ServiceResult<bool> {
    let Some(head) = branch.current_revision else { return Ok(true) };
    let head = state.store.get_revision(head).await?;
    let Some(production) = production_of(state, &branch.repository).await? else {
        return Ok(true);
    };
    let Some(serving) = production.current_revision else { return Ok(false) };
    let serving = state.store.get_revision(serving).await?;
    let repo = repository_config(state, &branch.repository)?;
    let relation =
        project::relation(repo.path.clone(), serving.commit.clone(), head.commit.clone())
            .await
            .map_err(ServiceError::internal)?;
    if relation != offshoot_core::CommitRelation::Same && !pushed_commit_is_newer(relation) {
        return Ok(false);
    }
    let runs = catch_up_runs(state, &production).await?;
    if runs.iter().any(|r| !r.status.is_finished()) {
        return Ok(false);
    }
    if runs.iter().any(|r| r.revision_id == serving.id) || serving.base_commit.is_none() {
        return Ok(true);
    }
    // No catch-up of it yet: it needs one unless production is up to date already.
    let snapshot = serving_snapshot(state, &production, &serving).await?;
    Ok(plan(state, &production, &snapshot).await?.catch_up.is_noop())
}

/// Whether closing `branch` with `status` keeps its tables for production's catch-up: a merge,
/// with catch-ups on, of a branch that built something production has not taken yet. A
/// failure to tell keeps them (the sweep releases them later).
pub async fn hold_at_close(
    state: &AppState,
    branch: &Deployment,
    status: Option<PullRequestStatus>,
) -> bool {
    if status != Some(PullRequestStatus::Merged)
        || state.config.on_deploy != OnDeploy::CatchUp
        || branch.status == DeploymentStatus::Closed
    {
        return false;
    }
    let built = match state.store.current_materializations(branch.id).await {
        Ok(built) => !built.is_empty(),
        Err(error) => {
            tracing::warn!(
                "{}: {error}; keeping its tables for production's catch-up",
                branch.name
            );
            return true;
        }
    };
    if !built {
        return false;
    }
    match caught_up(state, branch).await {
        Ok(caught_up) => !caught_up,
        Err(error) => {
            tracing::warn!(
                "{}: {}; keeping its tables for production's catch-up",
                branch.name,
                error.message
            );
            true
        }
    }
}

/// Lets go of every held branch deployment of `repository` whose tables production has taken
/// what it can of (or that waited [`MAX_HOLD`], or when catch-ups are off): its teardown goes
/// ahead.
pub async fn release_holds(
    state: &SharedState,
    repository: &offshoot_core::RepositoryName,
) -> ServiceResult<()> {
    let filter = DeploymentFilter { repository: Some(repository.clone()), include_closed: true };
    for branch in state.store.list_deployments(&filter).await? {
        if branch.teardown != Teardown::Held {
            continue;
        }
        let expired = branch.closed_at.is_some_and(|at| at + MAX_HOLD.as_millis() as i64 <= now());
        let release = state.config.on_deploy == OnDeploy::Manual
            || expired
            || caught_up(state, &branch).await?;
        if release {
            deployments::apply_event(state, branch.id, Event::ReleaseTeardown).await?;
            tracing::info!(
                "{}/{}: production's catch-up has taken what it can; dropping its tables",
                branch.repository,
                branch.name
            );
        }
    }
    Ok(())
}

/// Production's current materializations as reads (what a read of each asset lands on).
pub async fn production_reads(
    state: &AppState,
    production: &Deployment,
) -> ServiceResult<BTreeMap<AssetKey, ReadMaterialization>> {
    Ok(state.store.current_materialization_ids(production.id, None).await?.into_iter().collect())
}

/// Records that production's `key` is now `source`'s table, promoted by catch-up `run`: the
/// branch build's provenance, its reads of its own deployment's tables translated to what
/// production now serves for them (promoted earlier in this catch-up, in topological order).
#[allow(clippy::too_many_arguments)]
pub async fn record_promotion(
    state: &AppState,
    production: &Deployment,
    run: RunId,
    commit: &CommitSha,
    key: &AssetKey,
    source: &Source,
    reads: &BTreeMap<AssetKey, ReadMaterialization>,
    duration_ms: i64,
) -> ServiceResult<MaterializationId> {
    let built = &source.materialization;
    let materialization = Materialization {
        deployment_id: production.id,
        run_id: run,
        asset_key: key.clone(),
        commit: commit.clone(),
        row_count: built.materialization.row_count,
        duration_ms,
        created_at: now(),
    };
    let Some(provenance) = &built.provenance else {
        // Never promoted without provenance (the decision needs it); recorded as unknown.
        state.store.record_materialization(&materialization).await?;
        return Err(ServiceError::internal("a promoted build had no provenance"));
    };
    let mut provenance = Provenance {
        promoted_from: Some(PromotedFrom {
            materialization: ReadMaterialization {
                id: built.id,
                deployment_id: source.deployment.id,
                run_id: built.materialization.run_id,
            },
            deployment: source.deployment.name.clone(),
        }),
        // Production's own materialization: what the branch built against is the branch's.
        built_against: None,
        ..provenance.clone()
    };
    for upstream in &mut provenance.upstream {
        if upstream.read.as_ref().is_some_and(|r| r.deployment_id == source.deployment.id) {
            upstream.read = reads.get(&upstream.key).cloned();
        }
    }
    Ok(state.store.record_provenance(&materialization, &provenance).await?)
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// The catch-up undone.
    pub catch_up: Run,
    /// The revision that serves again, and the one that was rolled back.
    pub serving: Revision,
    pub rolled_back: u32,
    /// The assets whose previous tables are back (or, for those production did not have, gone).
    pub restored: Vec<AssetKey>,
}

/// Undoes production's last catch-up: the tables it replaced come back from its archive (one
/// transaction; metadata only on PostgreSQL), each asset's previous materialization is current
/// again, and production serves the revision it served before. Safe to run again after a crash
/// part-way: each part checks what is done.
pub async fn rollback(state: &SharedState, production: &Deployment) -> ServiceResult<RolledBack> {
    if production.kind != DeploymentKind::Production {
        return Err(ServiceError::invalid(
            "not_production",
            format!("`{}` is a branch deployment; only production rolls back", production.name),
        ));
    }
    let _turn = state.catch_up_turn.lock().await;
    let production = state.store.get_deployment(production.id).await?;
    let Some(serving) = production.current_revision else {
        return Err(ServiceError::conflict(
            "deployment_not_ready",
            "production serves nothing yet",
        ));
    };
    let serving = state.store.get_revision(serving).await?;
    let runs = catch_up_runs(state, &production).await?;
    if let Some(active) = runs.iter().find(|r| !r.status.is_finished()) {
        return Err(ServiceError::conflict(
            "catch_up_running",
            format!(
                "catch-up run {} is {}; roll back once it has finished",
                active.id.0,
                active.status.as_str()
            ),
        ));
    }
    let Some(catch_up) = runs.into_iter().find(|r| r.revision_id == serving.id) else {
        return Err(ServiceError::conflict(
            "nothing_to_roll_back",
            format!(
                "production's revision {} had no catch-up: nothing of it is in the warehouse to undo",
                serving.number
            ),
        ));
    };
    let previous = previous_revision(state, &production, &serving).await?;
    // The assets whose current materialization is the catch-up's (already done ones are not).
    let changed: Vec<RecordedMaterialization> = state
        .store
        .current_materializations(production.id)
        .await?
        .into_iter()
        .filter(|m| m.materialization.run_id == catch_up.id)
        .collect();
    let schema = state.target(&production).production;
    let archive = ArchiveId(catch_up.id.0);
    let held = state.warehouse.archived(&schema).await.map_err(ServiceError::internal)?;
    let in_archive: BTreeSet<&AssetKey> =
        held.iter().filter(|a| a.archive == archive).map(|a| &a.key).collect();
    if !changed.is_empty() && in_archive.is_empty() {
        let hours = state.config.archive_retention.as_secs() / 3600;
        return Err(ServiceError::conflict(
            "archive_expired",
            format!(
                "the tables catch-up run {} replaced are no longer kept (retention_hours = {hours}); production cannot be rolled back",
                catch_up.id.0
            ),
        ));
    }
    let restored = if in_archive.is_empty() {
        Vec::new()
    } else {
        state.warehouse.restore(&schema, archive, now()).await.map_err(ServiceError::internal)?
    };
    // Each asset's materialization from before the catch-up is current again.
    for current in &changed {
        let key = &current.materialization.asset_key;
        let before = state.store.materialization_before(production.id, key, current.id).await?;
        match before {
            Some(before) => {
                let again = Materialization { created_at: now(), ..before.materialization.clone() };
                match &before.provenance {
                    Some(provenance) => {
                        state.store.record_provenance(&again, provenance).await?;
                    }
                    None => state.store.record_materialization(&again).await?,
                }
            }
            // Production had no table of it: it has none now, and nothing says otherwise.
            None => {
                let gone = Materialization {
                    row_count: None,
                    duration_ms: 0,
                    created_at: now(),
                    ..current.materialization.clone()
                };
                state.store.record_materialization(&gone).await?;
            }
        }
    }
    let mut keys: Vec<AssetKey> =
        changed.iter().map(|m| m.materialization.asset_key.clone()).collect();
    keys.extend(restored);
    keys.sort();
    keys.dedup();
    let serving_again = point_at(state, &production, &serving, &previous).await?;
    tracing::info!(
        "rolled production of {} back from revision {} to {} (catch-up run {}; {} table(s))",
        production.repository,
        serving.number,
        previous.number,
        catch_up.id.0,
        keys.len()
    );
    Ok(RolledBack { catch_up, serving: serving_again, rolled_back: serving.number, restored: keys })
}

/// The revision production served before `serving`: the newest earlier revision of the commit
/// `serving` was deployed over.
async fn previous_revision(
    state: &AppState,
    production: &Deployment,
    serving: &Revision,
) -> ServiceResult<Revision> {
    let none = || {
        ServiceError::conflict(
            "nothing_to_roll_back",
            format!("production served nothing before revision {}", serving.number),
        )
    };
    let base = serving.base_commit.as_ref().ok_or_else(none)?;
    state
        .store
        .list_revisions(production.id, 0)
        .await?
        .into_iter()
        .find(|r| r.number < serving.number && &r.commit.sha == base && r.started_at.is_some())
        .ok_or_else(none)
}

/// Production serves `previous` again (a lifecycle decision, with `previous` added to what the
/// machine sees). Done already: nothing changes.
async fn point_at(
    state: &SharedState,
    production: &Deployment,
    serving: &Revision,
    previous: &Revision,
) -> ServiceResult<Revision> {
    for _ in 0..deployments::ATTEMPTS {
        let (mut record, view) = deployments::read(state, production.id).await?;
        let next = view.machine.next_revision;
        if record.deployment.current_revision == Some(previous.id) {
            return Ok(state.store.get_revision(previous.id).await?);
        }
        if record.deployment.current_revision != Some(serving.id) {
            return Err(ServiceError::conflict(
                "deployment_changed",
                "production started serving another revision meanwhile; look again",
            ));
        }
        if !record.revisions.iter().any(|r| r.id == previous.id) {
            record.revisions.push(previous.clone());
        }
        let view = deployments::view(&record, next);
        let input = EventInput::from(Event::Rollback { to: previous.number });
        if deployments::attempt(state, record, &view, input).await?.is_some() {
            return Ok(state.store.get_revision(previous.id).await?);
        }
    }
    Err(LifecycleError::Contended(deployments::ATTEMPTS).into())
}

/// Drops the archives of every repository's production older than `[production]
/// retention_hours`.
pub async fn expire_archives(state: &AppState) -> ServiceResult<u64> {
    let before = now() - state.config.archive_retention.as_millis() as i64;
    let mut expired = 0;
    for repo in &state.config.repositories {
        let Some(production) = production_of(state, &repo.name).await? else { continue };
        let schema = state.target(&production).production;
        expired += state
            .warehouse
            .expire_archives(&schema, before)
            .await
            .map_err(ServiceError::internal)?;
    }
    Ok(expired)
}

/// What [`resume`] has looked at already.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Per serving revision, its newest catch-up run then.
    decided: BTreeSet<(offshoot_store::RevisionId, Option<RunId>)>,
    /// Interrupted catch-ups whose committed promotions were looked for.
    recovered: BTreeSet<RunId>,
}

/// After a restart: an interrupted catch-up whose promotion had committed (its archive holds
/// the promoted tables) gets its promotions recorded, and production catches up again where a
/// catch-up was interrupted or never started (the server stopped right after the deploy).
/// `seen` keeps it from deciding the same situation twice (production up to date needs no run).
pub async fn resume(state: &SharedState, seen: &mut Resumed) -> ServiceResult<()> {
    for repo in &state.config.repositories {
        let Some(production) = production_of(state, &repo.name).await? else { continue };
        let Some(serving) = production.current_revision else { continue };
        let serving = state.store.get_revision(serving).await?;
        let runs = catch_up_runs(state, &production).await?;
        for run in runs.iter().filter(|r| r.status == RunStatus::Failed) {
            if run.error.as_deref() == Some(INTERRUPTED_RUN) && !seen.recovered.contains(&run.id) {
                record_committed_promotions(state, &production, run).await?;
                seen.recovered.insert(run.id);
            }
        }
        if state.config.on_deploy != OnDeploy::CatchUp
            || serving.base_commit.is_none()
            || serving.error.as_deref().is_some_and(|e| e.starts_with(SERVING_AGAIN))
        {
            continue;
        }
        let of_serving: Vec<&Run> = runs.iter().filter(|r| r.revision_id == serving.id).collect();
        // One still going (or about to be failed as interrupted) is looked at again later.
        if of_serving.first().is_some_and(|r| !r.status.is_finished()) {
            continue;
        }
        if !seen.decided.insert((serving.id, of_serving.first().map(|r| r.id))) {
            continue;
        }
        let again = match of_serving.first() {
            None => true,
            Some(last) => {
                last.status == RunStatus::Failed && last.error.as_deref() == Some(INTERRUPTED_RUN)
            }
        };
        if again {
            tracing::info!(
                "production of {}: catching up with revision {} again",
                repo.name,
                serving.number
            );
            launch(state, &production).await?;
        }
    }
    Ok(())
}

/// The promotions of an interrupted catch-up that are in the warehouse (its archive has their
/// entries: the promotion committed) but not in the store.
async fn record_committed_promotions(
    state: &SharedState,
    production: &Deployment,
    run: &Run,
) -> ServiceResult<()> {
    let steps = state.store.list_steps(run.id).await?;
    let promotions: Vec<&RunStep> = steps
        .iter()
        .filter(|s| s.promoted_from.is_some() && s.status != StepStatus::Succeeded)
        .collect();
    if promotions.is_empty() {
        return Ok(());
    }
    let schema = state.target(production).production;
    let archived = state.warehouse.archived(&schema).await.map_err(ServiceError::internal)?;
    let archive = ArchiveId(run.id.0);
    let committed = promotions
        .iter()
        .all(|s| archived.iter().any(|a| a.archive == archive && a.key == s.asset_key));
    if !committed {
        return Ok(());
    }
    let revision = state.store.get_revision(run.revision_id).await?;
    let mut reads = production_reads(state, production).await?;
    // Steps are in topological order: an upstream promoted here is recorded first.
    for step in promotions {
        let id = step.promoted_from.expect("filtered on it");
        let built = match state.store.get_materialization(id).await {
            Ok(built) => built,
            Err(error) => {
                tracing::warn!(
                    "catch-up run {}: the build {} it promoted: {error}",
                    run.id.0,
                    id.0
                );
                continue;
            }
        };
        let deployment = state.store.get_deployment(built.materialization.deployment_id).await?;
        let source = Source { deployment, materialization: built };
        let recorded = record_promotion(
            state,
            production,
            run.id,
            &revision.commit.sha,
            &step.asset_key,
            &source,
            &reads,
            0,
        )
        .await?;
        reads.insert(
            step.asset_key.clone(),
            ReadMaterialization { id: recorded, deployment_id: production.id, run_id: run.id },
        );
        let mut step = (*step).clone();
        step.status = StepStatus::Succeeded;
        step.error = None;
        step.row_count = source.materialization.materialization.row_count;
        state.store.update_step(&step).await?;
        state
            .store
            .append_step_log(
                step.id,
                "the promotion had committed when the server stopped; recorded after the restart\n",
            )
            .await?;
    }
    tracing::info!("catch-up run {}: its promotion had committed; recorded it", run.id.0);
    Ok(())
}
