//! Upkeep: start-up reconciliation, the lease heartbeat, and the sweeps (TTL, merged branches
//! held for production's catch-up, waiting teardowns, production's interrupted catch-ups and
//! expired archives, per-commit folders). Each applies lifecycle events through `deployments`; which
//! folders are live is the pure `offshoot_core::upkeep::live_folders`.

use std::collections::BTreeSet;
use std::time::Duration;

use offshoot_core::lifecycle::{Change, Event};
use offshoot_core::upkeep::{live_folders, removable, RevisionUse};
use offshoot_core::{DeploymentKind, DeploymentStatus, RevisionStatus, RunStatus, SchemaName};
use offshoot_store::LifecycleRecord;
use offshoot_store::{DeploymentFilter, RunFilter};

use crate::adapters::project;
use crate::service::deployments::{apply, teardown, Input, View};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::{catch_up, deployer};
use crate::state::{now, AppState, SharedState};

/// Closes open branch deployments without a push for longer than the TTL, unless pinned. The
/// close re-checks nothing here: a push or pin that lands first makes the close's write stale,
/// and the TTL is checked again on the next sweep.
pub async fn sweep_expired(state: &SharedState) -> ServiceResult<usize> {
    let cutoff = now() - state.config.ttl.as_millis() as i64;
    let mut closed = 0;
    for deployment in state.store.list_deployments(&DeploymentFilter::default()).await? {
        if deployment.kind == DeploymentKind::Branch
            && !deployment.pinned
            && deployment.last_push_at < cutoff
        {
            let days = state.config.ttl.as_secs() / 86_400;
            let reason = format!("no push for {days} day(s) (TTL)");
            // Decided on the row as it is at write time: a push or a pin meanwhile wins.
            let outcome = apply(state, deployment.id, |record: &LifecycleRecord, _: &View| {
                let current = &record.deployment;
                let still_expired = current.status == DeploymentStatus::Open
                    && !current.pinned
                    && current.last_push_at < cutoff;
                Ok(still_expired.then(|| {
                    Input::from(Event::Close {
                        reason: reason.clone(),
                        pull_request: None,
                        hold: false,
                    })
                }))
            })
            .await?;
            if outcome.decision.changes.iter().any(|c| matches!(c, Change::Close { .. })) {
                closed += 1;
            }
        }
    }
    Ok(closed)
}

/// Renews this server's leases every third of their length, so live work is never taken over.
pub async fn heartbeat(state: SharedState) {
    let interval = (state.config.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(interval).await;
        let until = now() + state.config.lease.as_millis() as i64;
        if let Err(error) = state.store.renew_leases(&state.config.server_id, until).await {
            tracing::error!("renewing leases failed: {error}");
        }
    }
}

/// Folders older than this that no open deployment needs are removed.
const FOLDER_GRACE: Duration = Duration::from_secs(3600);

/// Revisions looked at per deployment for work in progress (older ones are superseded).
const IN_PROGRESS_WINDOW: u32 = 20;

/// Removes per-commit folders (`checkouts/<sha>`, `locations/<repo>/<sha>`) of commits no
/// deployment serves, deploys or compares with, and run folders, once they are an hour old.
/// Every serving revision counts, however many revisions came after it (a failed newer one
/// does not replace it). The grace period keeps a folder a load or run is writing right now.
pub async fn sweep_folders(state: &AppState) -> ServiceResult<usize> {
    let mut revisions = Vec::new();
    for deployment in state.store.list_deployments(&DeploymentFilter::default()).await? {
        let recent = state.store.list_revisions(deployment.id, IN_PROGRESS_WINDOW).await?;
        let serving = match deployment.current_revision {
            Some(id) => match recent.iter().find(|r| r.id == id) {
                Some(revision) => Some(revision.clone()),
                None => Some(state.store.get_revision(id).await?),
            },
            None => None,
        };
        for revision in recent.iter().chain(serving.iter()) {
            revisions.push(RevisionUse {
                commit: revision.commit.sha.to_string(),
                base_commit: revision.base_commit.as_ref().map(|c| c.to_string()),
                serving: deployment.current_revision == Some(revision.id),
                in_progress: matches!(
                    revision.status,
                    RevisionStatus::Queued | RevisionStatus::Deploying
                ),
            });
        }
    }
    let active = RunFilter {
        deployment_id: None,
        statuses: vec![RunStatus::Queued, RunStatus::Running],
        limit: 0,
    };
    let mut runs = Vec::new();
    for run in state.store.list_runs(&active).await? {
        runs.push((
            run.id.0,
            state.store.get_revision(run.revision_id).await?.commit.sha.to_string(),
        ));
    }
    let live = live_folders(&revisions, runs.iter().map(|(id, sha)| (*id, sha.as_str())));
    let mut folders = vec![state.config.checkouts_dir()];
    for repository in &state.config.repositories {
        folders.push(state.config.locations_dir(&repository.name));
        folders.push(state.config.locations_dir(&repository.name).join("runs"));
    }
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        for folder in folders {
            let Ok(entries) = std::fs::read_dir(&folder) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > FOLDER_GRACE);
                if removable(&name, &live, old, entry.path().is_dir())
                    && std::fs::remove_dir_all(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    })
    .await
    .map_err(ServiceError::internal)?;
    Ok(removed)
}

/// Teardowns that are waiting (their runs stopped on another server, a server died mid-way, a
/// start-up): each is claimed and carried out, or left for later if work still runs.
pub async fn sweep_teardowns(state: &SharedState) -> ServiceResult<usize> {
    let mut done = 0;
    let all = state
        .store
        .list_deployments(&DeploymentFilter { repository: None, include_closed: true })
        .await?;
    for deployment in all.iter().filter(|d| d.teardown != offshoot_core::lifecycle::Teardown::Done)
    {
        match teardown(state, deployment.id).await {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!("teardown of {}/{}: {error}", deployment.repository, deployment.name)
            }
        }
    }
    Ok(done)
}

pub async fn maintenance_loop(state: SharedState) {
    // Every minute, or more often for short TTLs, so nothing outlives its TTL by much; teardowns
    // that wait for another server's runs are retried at the same pace (or at least every 5 s).
    let interval = (state.config.ttl / 24).clamp(Duration::from_secs(1), Duration::from_secs(5));
    let mut last_folder_sweep = tokio::time::Instant::now() - Duration::from_secs(3600);
    // The first look at production's catch-ups waits for the run executor to have failed the
    // runs this server was executing when it stopped.
    let mut last_catch_up_sweep = tokio::time::Instant::now() - Duration::from_secs(57);
    let mut resumed = catch_up::Resumed::default();
    loop {
        if let Err(error) = sweep_expired(&state).await {
            tracing::error!("TTL sweep failed: {}", error.message);
        }
        for repo in &state.config.repositories {
            if let Err(error) = catch_up::release_holds(&state, &repo.name).await {
                tracing::error!("releasing merged branches of {}: {}", repo.name, error.message);
            }
        }
        if let Err(error) = sweep_teardowns(&state).await {
            tracing::error!("teardown sweep failed: {}", error.message);
        }
        if last_catch_up_sweep.elapsed() >= Duration::from_secs(60) {
            last_catch_up_sweep = tokio::time::Instant::now();
            if let Err(error) = catch_up::resume(&state, &mut resumed).await {
                tracing::error!("resuming production's catch-up failed: {}", error.message);
            }
            match catch_up::expire_archives(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("dropped {n} archived production table(s) past retention"),
                Err(error) => tracing::error!("expiring archives failed: {}", error.message),
            }
        }
        if last_folder_sweep.elapsed() >= Duration::from_secs(60) {
            last_folder_sweep = tokio::time::Instant::now();
            if let Err(error) = sweep_folders(&state).await {
                tracing::error!("folder sweep failed: {}", error.message);
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// After a crash or restart: work this server had claimed is given up (deploys are claimed again,
/// interrupted runs fail with the reason, teardowns are redone), every repository has its `prod`,
/// waiting teardowns are carried out, and schemas that belong to no deployment are dropped.
pub async fn reconcile(state: &SharedState) -> ServiceResult<()> {
    // Other servers' work is taken over only when its lease expires.
    let released = state.store.renew_leases(&state.config.server_id, 0).await?;
    if released > 0 {
        tracing::warn!(
            "taking back {released} piece(s) of work this server was doing when it stopped"
        );
    }
    let abandoned = state
        .store
        .abandon_claimed_ticks(
            &state.config.server_id,
            "the server stopped after claiming this tick, before its run started",
        )
        .await?;
    if abandoned > 0 {
        tracing::warn!(
            "{abandoned} schedule tick(s) were claimed when this server stopped; marked failed"
        );
    }
    for repo in &state.config.repositories {
        let production = deployer::ensure_production(state, repo).await?;
        // A repository nobody has deployed yet starts with its production branch's tip.
        if state.store.list_revisions(production.id, 1).await?.is_empty() {
            match project::resolve(repo.path.clone(), repo.production_branch.clone()).await {
                Ok(commit) => {
                    deployer::deliver(state, &production, commit, deployer::Delivery::default())
                        .await?;
                }
                Err(error) => {
                    tracing::warn!("repository `{}`: cannot deploy prod yet: {error}", repo.name)
                }
            }
        }
    }
    sweep_teardowns(state).await?;
    // Schemas first, deployments second: a schema seen here belongs to a deployment row that
    // existed before it was prepared, so a deployment another server creates meanwhile is never
    // mistaken for an orphan.
    let schemas = state.warehouse.schemas().await.map_err(ServiceError::internal)?;
    let all = state
        .store
        .list_deployments(&DeploymentFilter { repository: None, include_closed: true })
        .await?;
    let known: BTreeSet<SchemaName> = all.iter().map(|d| state.target(d).schema).collect();
    for schema in schemas {
        let is_production = schema.as_str().ends_with("__prod");
        if !known.contains(&schema) && !is_production {
            tracing::warn!("dropping orphan warehouse schema {schema}");
            // Teardown refuses a target that is its own production; an orphan is nobody's.
            let nobody = SchemaName::parse("orphan__prod").expect("a valid schema name");
            let orphan = offshoot_warehouse::Target { schema, production: nobody };
            state.warehouse.teardown(&orphan).await.map_err(ServiceError::internal)?;
        }
    }
    Ok(())
}
