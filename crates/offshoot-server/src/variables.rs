//! Environment variables and secrets scoped like Dagster+'s: a value is for production, for
//! branch deployments (all of them, or one branch's), or for local development, and reaches the
//! processes of the matching deployments only (command assets, dbt and Dagster builds). Values
//! come from the server's configuration (secrets from the environment or a file, never the
//! repository) or from the API (kept in the store), are `Secret`s, never returned by the API;
//! secrets are redacted from step logs. A value set through the API wins over the
//! configuration's for the same name, scope and branch.

use offshoot_core::{BranchName, DeploymentKind, RepositoryName, VariableScope};
use offshoot_store::{Deployment, Store, StoreResult, StoredVariable};

use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `prod` (Dagster+'s "full deployment").
    Production,
    /// Every branch deployment, or with `branch` set only that branch's.
    Branches,
    /// Developers' machines: only `offshoot env export --scope local`, never a deployment.
    Local,
}

impl From<VariableScope> for Scope {
    fn from(scope: VariableScope) -> Scope {
        match scope {
            VariableScope::Production => Scope::Production,
            VariableScope::Branches => Scope::Branches,
            VariableScope::Local => Scope::Local,
        }
    }
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "production" | "prod" | "full" => Some(Scope::Production),
            "branches" | "branch" => Some(Scope::Branches),
            "local" => Some(Scope::Local),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub value: Secret,
    pub scopes: Vec<Scope>,
    /// Only this branch's deployment (with the `branches` scope); it wins over a value for all
    /// branches of the same name.
    pub branch: Option<BranchName>,
    /// Only this repository's deployments; `None`: every repository.
    pub repository: Option<RepositoryName>,
    /// From the environment or a file (a secret: redacted from step logs), not a plain `value`.
    pub secret: bool,
}

/// Why a variable's name is refused: it must be a portable environment name, and Offshoot's own
/// and Dagster+'s built-in names are Offshoot's to set.
pub fn check_name(name: &str) -> Result<(), String> {
    let portable = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !portable {
        return Err(format!("`{name}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"));
    }
    if name.starts_with("OFFSHOOT_")
        || name.starts_with("DAGSTER_CLOUD_")
        || name == "PATH"
        || name == "HOME"
    {
        return Err(format!("`{name}` is set by Offshoot itself; choose another name"));
    }
    Ok(())
}

fn applies(variable: &Variable, deployment: &Deployment) -> Option<u8> {
    if variable.repository.as_ref().is_some_and(|r| *r != deployment.repository) {
        return None;
    }
    match deployment.kind {
        DeploymentKind::Production => variable.scopes.contains(&Scope::Production).then_some(0),
        DeploymentKind::Branch if variable.scopes.contains(&Scope::Branches) => {
            match &variable.branch {
                None => Some(0),
                Some(branch) if *branch == deployment.branch => Some(1),
                Some(_) => None,
            }
        }
        DeploymentKind::Branch => None,
    }
}

/// The variables a process of `deployment` gets: for each name the most specific value (one
/// branch's over all branches').
pub fn for_deployment<'a>(
    variables: &'a [Variable],
    deployment: &Deployment,
) -> Vec<(&'a str, &'a Secret)> {
    let mut chosen: Vec<(&str, &Secret, u8)> = Vec::new();
    for variable in variables {
        let Some(rank) = applies(variable, deployment) else { continue };
        match chosen.iter_mut().find(|(name, _, _)| *name == variable.name) {
            Some(entry) if entry.2 < rank => *entry = (&variable.name, &variable.value, rank),
            Some(_) => {}
            None => chosen.push((&variable.name, &variable.value, rank)),
        }
    }
    chosen.into_iter().map(|(name, value, _)| (name, value)).collect()
}

/// The variables for local development.
pub fn for_local(variables: &[Variable]) -> Vec<(&str, &Secret)> {
    variables
        .iter()
        .filter(|v| v.scopes.contains(&Scope::Local))
        .map(|v| (v.name.as_str(), &v.value))
        .collect()
}

/// `text` with every secret's value redacted (for step logs).
pub fn redact(variables: &[Variable], text: &str) -> String {
    variables
        .iter()
        .filter(|v| v.secret)
        .fold(text.to_owned(), |text, variable| variable.value.redact_from(&text))
}

/// A variable set through the API, as the processes get it (`None`: a blank value, which the
/// API refuses to set).
pub fn from_stored(stored: &StoredVariable) -> Option<Variable> {
    Some(Variable {
        name: stored.name.clone(),
        value: Secret::new(stored.value.clone())?,
        scopes: vec![stored.scope.into()],
        branch: stored.branch.clone(),
        repository: Some(stored.repository.clone()),
        secret: stored.secret,
    })
}

/// Every variable in force now: those set through the API (first, so they win) and the
/// configuration's.
pub async fn in_force(store: &dyn Store, configured: &[Variable]) -> StoreResult<Vec<Variable>> {
    let stored = store.list_variables(None).await?;
    Ok(stored.iter().filter_map(from_stored).chain(configured.iter().cloned()).collect())
}
