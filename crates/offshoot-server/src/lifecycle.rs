//! Branch deployment lifecycle beyond deploys: close (drop the branch's warehouse objects, keep
//! history), reopen, delete, the TTL sweep, and the start-up reconciliation after a crash.

use std::collections::BTreeSet;
use std::time::Duration;

use offshoot_core::{DeploymentKind, DeploymentStatus, RevisionStatus, RunStatus, SchemaName};
use offshoot_store::{Deployment, DeploymentFilter, RunFilter};

use crate::deploy;
use crate::error::{ApiError, ApiResult};
use crate::state::{now, AppState, SharedState};

fn refuse_production(deployment: &Deployment, action: &str) -> ApiResult<()> {
    if deployment.kind == DeploymentKind::Production {
        return Err(ApiError::conflict("production_protected", format!("`{}` is production; it cannot be {action}", deployment.name)));
    }
    Ok(())
}

/// Marks the deployment closed, cancels its runs and drops its warehouse objects. History stays.
pub async fn close(state: &AppState, mut deployment: Deployment, reason: &str) -> ApiResult<Deployment> {
    refuse_production(&deployment, "closed")?;
    cancel_active_runs(state, &deployment).await?;
    let time = now();
    for mut revision in state.store.list_revisions(deployment.id, 0).await? {
        if matches!(revision.status, RevisionStatus::Queued | RevisionStatus::Deploying) {
            revision.status = RevisionStatus::Superseded;
            revision.error = Some(format!("the deployment was closed ({reason})"));
            revision.finished_at = Some(time);
            state.store.update_revision(&revision).await?;
        }
    }
    if deployment.status != DeploymentStatus::Closed {
        deployment.status = DeploymentStatus::Closed;
        deployment.closed_at = Some(time);
        deployment.close_reason = Some(reason.to_owned());
        deployment.updated_at = time;
        // Durable first: if the teardown below is interrupted, start-up reconciliation finishes it.
        state.store.update_deployment(&deployment).await?;
    }
    state.warehouse.teardown(&state.target(&deployment)).await.map_err(ApiError::internal)?;
    tracing::info!("closed {}/{}: {reason}", deployment.repository, deployment.name);
    Ok(deployment)
}

/// Opens a closed deployment again and redeploys its newest commit.
pub async fn reopen(state: &SharedState, mut deployment: Deployment) -> ApiResult<Deployment> {
    if deployment.status == DeploymentStatus::Open {
        return Ok(deployment);
    }
    let open = state.store.list_deployments(&DeploymentFilter::default()).await?;
    if open.iter().filter(|d| d.kind == DeploymentKind::Branch).count() >= state.config.max_open_branch_deployments {
        return Err(ApiError::conflict("deployment_limit_reached", "too many open branch deployments; close one first"));
    }
    deployment.status = DeploymentStatus::Open;
    deployment.closed_at = None;
    deployment.close_reason = None;
    deployment.current_revision = None;
    deployment.last_push_at = now();
    deployment.updated_at = now();
    if let Some(pull_request) = deployment.pull_request.as_mut() {
        pull_request.status = offshoot_core::PullRequestStatus::Open;
    }
    state.store.update_deployment(&deployment).await?;
    let newest = state.store.list_revisions(deployment.id, 0).await?.into_iter().find(|r| r.status != RevisionStatus::Superseded);
    if let Some(newest) = newest {
        deploy::enqueue(state, &deployment, newest.commit).await?;
    }
    Ok(deployment)
}

/// Removes a branch deployment, its warehouse objects and its history.
pub async fn delete(state: &AppState, deployment: Deployment) -> ApiResult<()> {
    refuse_production(&deployment, "deleted")?;
    cancel_active_runs(state, &deployment).await?;
    state.warehouse.teardown(&state.target(&deployment)).await.map_err(ApiError::internal)?;
    state.store.delete_deployment(deployment.id).await?;
    tracing::info!("deleted {}/{}", deployment.repository, deployment.name);
    Ok(())
}

async fn cancel_active_runs(state: &AppState, deployment: &Deployment) -> ApiResult<()> {
    let filter = RunFilter { deployment_id: Some(deployment.id), statuses: vec![RunStatus::Queued, RunStatus::Running], limit: 0 };
    for run in state.store.list_runs(&filter).await? {
        crate::runs::cancel(state, run).await?;
    }
    Ok(())
}

/// Closes open branch deployments without a push for longer than the TTL, unless pinned.
pub async fn sweep_expired(state: &AppState) -> ApiResult<usize> {
    let cutoff = now() - state.config.ttl.as_millis() as i64;
    let mut closed = 0;
    for deployment in state.store.list_deployments(&DeploymentFilter::default()).await? {
        if deployment.kind == DeploymentKind::Branch && !deployment.pinned && deployment.last_push_at < cutoff {
            let days = state.config.ttl.as_secs() / 86_400;
            close(state, deployment, &format!("no push for {days} day(s) (TTL)")).await?;
            closed += 1;
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

/// Removes per-commit folders (`checkouts/<sha>`, `locations/<repo>/<sha>`) of commits no open
/// deployment serves, deploys or compares with, and run folders, once they are an hour old.
/// The grace period keeps a folder a load or run is writing right now.
pub async fn sweep_folders(state: &AppState) -> ApiResult<usize> {
    let mut live: BTreeSet<String> = BTreeSet::new();
    for deployment in state.store.list_deployments(&DeploymentFilter::default()).await? {
        for revision in state.store.list_revisions(deployment.id, 5).await? {
            let needed = deployment.current_revision == Some(revision.id) || matches!(revision.status, RevisionStatus::Queued | RevisionStatus::Deploying);
            if needed {
                live.insert(revision.commit.sha.to_string());
                live.extend(revision.base_commit.map(|c| c.to_string()));
            }
        }
    }
    let active = RunFilter { deployment_id: None, statuses: vec![RunStatus::Queued, RunStatus::Running], limit: 0 };
    for run in state.store.list_runs(&active).await? {
        live.insert(run.id.0.to_string());
        live.insert(state.store.get_revision(run.revision_id).await?.commit.sha.to_string());
    }
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
                let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > FOLDER_GRACE);
                if name == "runs" || live.contains(name.split('.').next().unwrap_or_default()) || !old || !entry.path().is_dir() {
                    continue;
                }
                if std::fs::remove_dir_all(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    })
    .await
    .unwrap_or(0);
    Ok(removed)
}

pub async fn ttl_loop(state: SharedState) {
    // Every minute, or more often for short TTLs, so nothing outlives its TTL by much.
    let interval = (state.config.ttl / 24).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if let Err(error) = sweep_expired(&state).await {
            tracing::error!("TTL sweep failed: {}", error.message);
        }
        if let Err(error) = sweep_folders(&state).await {
            tracing::error!("folder sweep failed: {}", error.message);
        }
        tokio::time::sleep(interval).await;
    }
}

/// After a crash or restart: deploys that were in flight are queued again (deploys are
/// idempotent), runs that were executing fail with a reason, closed deployments and schemas that
/// belong to no open deployment are dropped, and every repository has its `prod`.
pub async fn reconcile(state: &SharedState) -> ApiResult<()> {
    // Work this server (same id, before a restart) had claimed is given up at once: the deploy
    // worker deploys those revisions again (deploys are idempotent) and the run executor fails
    // those runs with the reason. Other servers' work is taken over only when its lease expires.
    let released = state.store.renew_leases(&state.config.server_id, 0).await?;
    if released > 0 {
        tracing::warn!("taking back {released} deploy(s) or run(s) this server was executing when it stopped");
    }
    for repo in &state.config.repositories {
        let production = deploy::ensure_production(state, repo).await?;
        // A repository nobody has deployed yet starts with its production branch's tip.
        if state.store.list_revisions(production.id, 1).await?.is_empty() {
            match crate::git::resolve(repo.path.clone(), repo.production_branch.clone()).await {
                Ok(commit) => {
                    deploy::enqueue(state, &production, commit).await?;
                }
                Err(error) => tracing::warn!("repository `{}`: cannot deploy prod yet: {error}", repo.name),
            }
        }
    }
    let all = state.store.list_deployments(&DeploymentFilter { repository: None, include_closed: true }).await?;
    let mut live: BTreeSet<SchemaName> = BTreeSet::new();
    for deployment in &all {
        let target = state.target(deployment);
        if deployment.status == DeploymentStatus::Closed {
            state.warehouse.teardown(&target).await.map_err(ApiError::internal)?;
        } else {
            live.insert(target.schema.clone());
        }
    }
    for schema in state.warehouse.schemas().await.map_err(ApiError::internal)? {
        let is_production = schema.as_str().ends_with("__prod");
        if !live.contains(&schema) && !is_production {
            tracing::warn!("dropping orphan warehouse schema {schema}");
            // Teardown refuses a target that is its own production; an orphan is nobody's.
            let nobody = SchemaName::parse("orphan__prod").expect("a valid schema name");
            let orphan = offshoot_warehouse::Target { schema, production: nobody };
            state.warehouse.teardown(&orphan).await.map_err(ApiError::internal)?;
        }
    }
    Ok(())
}
