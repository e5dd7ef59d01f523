//! The REST handlers for variables and secrets set through the API (`offshoot env set`, `unset`,
//! `list`): setting and unsetting need `admin` (a value reaches production's runs, or every
//! branch's, and a `deploy` token lives in every pull request's CI); listing needs `read` and
//! shows names, scopes and where each came from, never a value. The one answer with values is
//! `local` (`offshoot env export --scope local --server`), for `deploy` tokens: those values are
//! meant for developers' machines and never reach a deployment.

use axum::extract::{Path, Query, State};
use axum::Json;
use offshoot_core::{BranchName, VariableScope};
use offshoot_store::StoredVariable;
use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::http::auth::{Reader, Writer};
use crate::http::error::{ApiError, ApiResult};
use crate::http::Body;
use crate::service::lookup::pick_repository;
use crate::state::{now, SharedState};
use crate::variables::{check_name, Scope};

/// The longest value accepted (a certificate or a service-account key fits).
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// One variable as the API shows it: everything but the value.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct VariableJson {
    pub name: String,
    /// `None`: every repository (only from the configuration).
    pub repository: Option<String>,
    /// `production`, `branches` or `local`.
    pub scope: String,
    /// With `branches`: only this branch's deployment.
    pub branch: Option<String>,
    pub secret: bool,
    /// `api` (set with `offshoot env set`) or `config` (`[[variables]]`, read-only here).
    pub source: String,
    pub updated_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVariable {
    pub repository: Option<String>,
    pub scope: String,
    #[serde(default)]
    pub branch: Option<String>,
    pub value: String,
    /// Redacted from step logs; the CLI sets it for values from the environment or a file.
    #[serde(default)]
    pub secret: bool,
}

#[derive(Deserialize)]
pub struct VariableQuery {
    repository: Option<String>,
    scope: Option<String>,
    branch: Option<String>,
}

fn scope_of(text: &str) -> ApiResult<VariableScope> {
    match Scope::parse(text) {
        Some(Scope::Production) => Ok(VariableScope::Production),
        Some(Scope::Branches) => Ok(VariableScope::Branches),
        Some(Scope::Local) => Ok(VariableScope::Local),
        None => Err(ApiError::bad_request(
            "invalid_variable",
            format!("scope `{text}` is not production, branches or local"),
        )),
    }
}

fn branch_of(scope: VariableScope, branch: Option<&str>) -> ApiResult<Option<BranchName>> {
    match (scope, branch) {
        (_, None) => Ok(None),
        (VariableScope::Branches, Some(text)) => Ok(Some(
            BranchName::new(text)
                .map_err(|e| ApiError::bad_request("invalid_branch_name", e.to_string()))?,
        )),
        (other, Some(_)) => Err(ApiError::bad_request(
            "invalid_variable",
            format!("a branch goes with the `branches` scope only, not `{other}`"),
        )),
    }
}

fn stored_json(variable: &StoredVariable) -> VariableJson {
    VariableJson {
        name: variable.name.clone(),
        repository: Some(variable.repository.to_string()),
        scope: variable.scope.as_str().to_owned(),
        branch: variable.branch.as_ref().map(|b| b.to_string()),
        secret: variable.secret,
        source: "api".to_owned(),
        updated_at: Some(variable.updated_at),
    }
}

pub(super) async fn list_variables(
    State(state): State<SharedState>,
    _: Reader,
    Query(query): Query<VariableQuery>,
) -> ApiResult<Json<Vec<VariableJson>>> {
    let repository = match query.repository.as_deref() {
        Some(name) => Some(pick_repository(&state, Some(name))?),
        None => None,
    };
    let mut list: Vec<VariableJson> =
        state.store.list_variables(repository.as_ref()).await?.iter().map(stored_json).collect();
    for variable in &state.config.variables {
        if repository.is_some()
            && variable.repository.is_some()
            && variable.repository != repository
        {
            continue;
        }
        for scope in &variable.scopes {
            let scope = match scope {
                Scope::Production => VariableScope::Production,
                Scope::Branches => VariableScope::Branches,
                Scope::Local => VariableScope::Local,
            };
            list.push(VariableJson {
                name: variable.name.clone(),
                repository: variable.repository.as_ref().map(|r| r.to_string()),
                scope: scope.as_str().to_owned(),
                branch: variable.branch.as_ref().map(|b| b.to_string()),
                secret: variable.secret,
                source: "config".to_owned(),
                updated_at: None,
            });
        }
    }
    Ok(Json(list))
}

pub(super) async fn set_variable(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Body(body): Body<SetVariable>,
) -> ApiResult<Json<VariableJson>> {
    caller.require(Role::Admin, "setting a variable")?;
    check_name(&name).map_err(|message| ApiError::bad_request("invalid_variable", message))?;
    let repository = pick_repository(&state, body.repository.as_deref())?;
    let scope = scope_of(&body.scope)?;
    let branch = branch_of(scope, body.branch.as_deref())?;
    if body.value.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_variable",
            format!("the value of `{name}` is empty; unset it instead"),
        ));
    }
    if body.value.len() > MAX_VALUE_BYTES || body.value.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_variable",
            format!("the value of `{name}` is longer than 64 KiB or holds a NUL character"),
        ));
    }
    let variable = StoredVariable {
        repository,
        name,
        scope,
        branch,
        value: body.value,
        secret: body.secret,
        updated_at: now(),
    };
    state.store.set_variable(&variable).await?;
    tracing::info!(
        "variable {} set for {} ({}{})",
        variable.name,
        variable.repository,
        variable.scope,
        variable.branch.as_ref().map(|b| format!(" of branch {b}")).unwrap_or_default()
    );
    Ok(Json(stored_json(&variable)))
}

pub(super) async fn unset_variable(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<VariableQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(Role::Admin, "unsetting a variable")?;
    let repository = pick_repository(&state, query.repository.as_deref())?;
    let scope = scope_of(query.scope.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_variable",
            "say which scope: `?scope=production|branches|local`",
        )
    })?)?;
    let branch = branch_of(scope, query.branch.as_deref())?;
    match state.store.unset_variable(&repository, &name, scope, branch.as_ref()).await {
        Ok(()) => Ok(Json(serde_json::json!({"name": name, "unset": true}))),
        Err(offshoot_store::StoreError::NotFound(_)) => Err(ApiError::not_found(
            "variable_not_found",
            format!(
                "no variable `{name}` was set through the API for scope `{scope}`{}",
                branch.map(|b| format!(" of branch `{b}`")).unwrap_or_default()
            ),
        )),
        Err(error) => Err(error.into()),
    }
}

/// `GET /api/v1/local-variables`: the local-scope values set through the API, as name/value
/// pairs, for a developer's `.env`.
pub(super) async fn export_local(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Query(query): Query<VariableQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    caller.require(Role::Deploy, "exporting the local-scope variables")?;
    let repository = pick_repository(&state, query.repository.as_deref())?;
    let stored = state.store.list_variables(Some(&repository)).await?;
    Ok(Json(
        stored
            .iter()
            .filter(|v| v.scope == VariableScope::Local)
            .map(|v| serde_json::json!({"name": v.name, "value": v.value}))
            .collect(),
    ))
}
