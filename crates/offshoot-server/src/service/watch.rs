//! Local watch mode: polls a repository's branches. The production branch deploys to `prod`;
//! every other branch matching the glob gets a branch deployment, redeployed when it moves; a
//! deleted branch closes its deployment. A deployment closed by hand stays closed.

use std::collections::BTreeSet;

use offshoot_core::selection::glob_match;
use offshoot_core::{BranchName, DeploymentKind, DeploymentStatus};
use offshoot_store::{Deployment, DeploymentFilter};

use crate::adapters::project as git;
use crate::config::{RepositoryConfig, WatchConfig};
use crate::service::deployer::{self, Push};
use crate::service::deployments as lifecycle;
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::SharedState;

pub async fn watch_loop(state: SharedState, repo: RepositoryConfig, watch: WatchConfig) {
    loop {
        if let Err(error) = poll_once(&state, &repo, &watch).await {
            tracing::warn!("watching {}: {}", repo.path.display(), error.message);
        }
        tokio::time::sleep(watch.interval).await;
    }
}

/// The newest commit the deployment was delivered (its head).
async fn newest_commit(
    state: &SharedState,
    deployment: &Deployment,
) -> ServiceResult<Option<String>> {
    let Some(head) = deployment.head_revision else { return Ok(None) };
    Ok(Some(state.store.get_revision(head).await?.commit.sha.to_string()))
}

pub async fn poll_once(
    state: &SharedState,
    repo: &RepositoryConfig,
    watch: &WatchConfig,
) -> ServiceResult<()> {
    let branches = git::blocking(repo.path.clone(), |r| Ok(r.branches()?))
        .await
        .map_err(ServiceError::internal)?;
    let mut present: BTreeSet<String> = BTreeSet::new();
    for (name, sha) in branches {
        present.insert(name.clone());
        let Ok(branch) = BranchName::new(&name) else { continue };
        let existing = if name == repo.production_branch {
            Some(deployer::ensure_production(state, repo).await?)
        } else if glob_match(&watch.branches, &name) {
            state.store.find_deployment_by_branch(&repo.name, &branch).await?
        } else {
            continue;
        };
        if let Some(deployment) = &existing {
            if deployment.status == DeploymentStatus::Closed
                || newest_commit(state, deployment).await?.as_deref() == Some(sha.as_str())
            {
                continue;
            }
        }
        let push = Push {
            repository: repo.name.clone(),
            branch,
            commit: sha,
            pull_request_id: None,
            pull_request_url: None,
            pull_request_status: None,
            base_deployment: None,
            // A deployment closed by hand stays closed.
            opens: false,
            redeploy: false,
            snapshot_base: None,
        };
        if let Err(error) = deployer::create_or_update(state, push).await {
            tracing::warn!("watch: branch `{name}`: {}", error.message);
        }
    }
    let open = state
        .store
        .list_deployments(&DeploymentFilter {
            repository: Some(repo.name.clone()),
            include_closed: false,
        })
        .await?;
    for deployment in open {
        if deployment.kind == DeploymentKind::Branch
            && !present.contains(deployment.branch.as_str())
        {
            lifecycle::close(state, &deployment, "the branch was deleted", None).await?;
        }
    }
    Ok(())
}
