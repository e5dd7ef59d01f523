//! Remote repositories as the services use them: every mirror prepared at start-up, a commit
//! fetched on demand when CI names one before any webhook arrived, and `prod` deployed when a
//! fetch brought a new production tip. The git work itself is `adapters::mirror`.

use offshoot_core::RepositoryName;

use crate::adapters::mirror::{display_url, fetch};
use crate::adapters::project;
use crate::config::RepositoryConfig;
use crate::service::deployer::{self, Push};
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::SharedState;

/// For start-up: fetches every repository configured by URL and deploys `prod` at the
/// production branch's tip where it has never deployed. Failures are logged, never fatal: the
/// next hook event fetches again.
pub async fn prepare_all(state: &SharedState) {
    for repo in state.config.repositories.iter().filter(|r| r.remote.is_some()) {
        match fetch(&state.config.data_dir, repo).await {
            Ok(()) => deploy_production_if_new(state, repo).await,
            Err(error) => tracing::warn!(
                "repository `{}`: fetching {}: {error}",
                repo.name,
                display_url(repo)
            ),
        }
    }
}

/// For the REST API (`branch-deployment create-or-update` from CI): a repository configured by
/// URL is fetched when `commit` is not in its mirror yet. Local repositories are left alone.
pub async fn ensure_commit(
    state: &SharedState,
    repository: &RepositoryName,
    commit: &str,
) -> ServiceResult<()> {
    let Some(repo) = state.repository(repository).filter(|r| r.remote.is_some()) else {
        return Ok(());
    };
    if project::resolve(repo.path.clone(), commit.to_owned()).await.is_ok() {
        return Ok(());
    }
    if let Err(error) = fetch(&state.config.data_dir, repo).await {
        tracing::error!("repository `{}`: fetching {}: {error}", repo.name, display_url(repo));
        return Err(ServiceError::upstream(
            "repository_fetch_failed",
            "fetching the repository failed; see the server log",
        ));
    }
    deploy_production_if_new(state, repo).await;
    Ok(())
}

/// After a mirror's first fetch, `prod` has nothing deployed yet: deploy the production tip.
pub async fn deploy_production_if_new(state: &SharedState, repo: &RepositoryConfig) {
    let production = match deployer::ensure_production(state, repo).await {
        Ok(production) => production,
        Err(error) => return tracing::warn!("repository `{}`: {}", repo.name, error.message),
    };
    match state.store.list_revisions(production.id, 1).await {
        Ok(revisions) if revisions.is_empty() => {}
        Ok(_) => return,
        Err(error) => return tracing::warn!("repository `{}`: {error}", repo.name),
    }
    let Ok(branch) = offshoot_core::BranchName::new(&repo.production_branch) else { return };
    let push = Push {
        repository: repo.name.clone(),
        branch,
        commit: repo.production_branch.clone(),
        pull_request_id: None,
        pull_request_url: None,
        pull_request_status: None,
        base_deployment: None,
        opens: true,
        redeploy: false,
        snapshot_base: None,
    };
    if let Err(error) = deployer::create_or_update(state, push).await {
        tracing::warn!("repository `{}`: cannot deploy prod yet: {}", repo.name, error.message);
    }
}
