//! Finding what a request names: a repository's configuration, a repository by name (or the
//! only one configured), a deployment by name in one repository or in any.

use offshoot_core::{DeploymentName, RepositoryName};
use offshoot_store::Deployment;

use crate::config::RepositoryConfig;
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn repository_config<'a>(
    state: &'a AppState,
    name: &RepositoryName,
) -> ServiceResult<&'a RepositoryConfig> {
    state.repository(name).ok_or_else(|| {
        ServiceError::not_found(
            "repository_not_found",
            format!("no repository named `{name}` is configured"),
        )
    })
}

/// The named repository, or the only one configured.
pub fn pick_repository(state: &AppState, name: Option<&str>) -> ServiceResult<RepositoryName> {
    match name {
        Some(name) => {
            let name = RepositoryName::from_any(name).map_err(|e| {
                ServiceError::not_found(
                    "repository_not_found",
                    format!("`{name}` is not a repository name: {e}"),
                )
            })?;
            repository_config(state, &name).map(|r| r.name.clone())
        }
        None => match state.config.repositories.as_slice() {
            [only] => Ok(only.name.clone()),
            [] => {
                Err(ServiceError::not_found("repository_not_found", "no repository is configured"))
            }
            many => {
                let names: Vec<&str> = many.iter().map(|r| r.name.as_str()).collect();
                Err(ServiceError::invalid(
                    "invalid_request",
                    format!("name the repository: one of {}", names.join(", ")),
                ))
            }
        },
    }
}

/// The deployment `name` of the named repository; without a repository, of the one configured
/// repository that has a deployment of that name (several: an error naming them).
pub async fn find_deployment(
    state: &AppState,
    repository: Option<&str>,
    name: &str,
) -> ServiceResult<Deployment> {
    if repository.is_none() && state.config.repositories.len() > 1 {
        return find_deployment_in_any(state, name).await;
    }
    let repository = pick_repository(state, repository)?;
    let missing = || {
        ServiceError::not_found(
            "deployment_not_found",
            format!("no deployment named `{name}` in `{repository}`"),
        )
    };
    let name = DeploymentName::new(name).map_err(|_| missing())?;
    state.store.find_deployment(&repository, &name).await?.ok_or_else(missing)
}

async fn find_deployment_in_any(state: &AppState, name: &str) -> ServiceResult<Deployment> {
    let repositories: Vec<&str> =
        state.config.repositories.iter().map(|r| r.name.as_str()).collect();
    let missing = || {
        ServiceError::not_found(
            "deployment_not_found",
            format!("no deployment named `{name}` in any repository ({})", repositories.join(", ")),
        )
    };
    let deployment_name = DeploymentName::new(name).map_err(|_| missing())?;
    let mut found = Vec::new();
    for repo in &state.config.repositories {
        if let Some(deployment) = state.store.find_deployment(&repo.name, &deployment_name).await? {
            found.push(deployment);
        }
    }
    match found.len() {
        0 => Err(missing()),
        1 => Ok(found.pop().expect("one was found")),
        _ => {
            let candidates: Vec<String> = found.iter().map(|d| d.repository.to_string()).collect();
            Err(ServiceError::invalid(
                "ambiguous_deployment",
                format!("`{name}` names a deployment in several repositories: {}; name one with `?repository=` (CLI: `--repository`)", candidates.join(", ")),
            ))
        }
    }
}
