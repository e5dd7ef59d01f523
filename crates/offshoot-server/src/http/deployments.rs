//! The REST handlers for deployments, their revisions and changes, and runs.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use offshoot_core::{BranchName, DeploymentName, PullRequestStatus, SnapshotBase};
use offshoot_store::{Deployment, DeploymentFilter, RunFilter, RunId};
use serde::Deserialize;

use crate::changes::ChangeSetJson;
use crate::config::Role;
use crate::http::auth::{Caller, Reader, Writer};
use crate::http::dto::{self, ChangesJson, DeploymentJson, RunJson};
use crate::http::error::{ApiError, ApiResult};
use crate::http::Body;
use crate::service::deployer::{self, Push, PushOutcome};
use crate::service::lookup::{find_deployment, pick_repository};
use crate::service::{catch_up, deployments, remotes, runner};
use crate::state::{AppState, SharedState};

#[derive(Deserialize, Default)]
pub struct RepositoryQuery {
    repository: Option<String>,
    #[serde(default)]
    include_closed: bool,
}

pub(crate) async fn deployment_view(
    state: &AppState,
    deployment: &Deployment,
) -> ApiResult<DeploymentJson> {
    let latest = state.store.list_revisions(deployment.id, 1).await?.into_iter().next();
    let current = match deployment.current_revision {
        Some(id) if latest.as_ref().is_some_and(|l| l.id == id) => latest.clone(),
        Some(id) => Some(state.store.get_revision(id).await?),
        None => None,
    };
    Ok(dto::deployment_json(deployment, current.as_ref(), latest.as_ref()))
}

pub(super) async fn metrics(State(state): State<SharedState>, _: Reader) -> ApiResult<Response> {
    let open = state.store.list_deployments(&DeploymentFilter::default()).await?.len();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(open, &crate::adapters::project::parse_cache_stats(&state)),
    )
        .into_response())
}

pub(super) async fn list_deployments(
    State(state): State<SharedState>,
    _: Reader,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<Vec<DeploymentJson>>> {
    let repository = match query.repository.as_deref() {
        Some(name) => Some(pick_repository(&state, Some(name))?),
        None => None,
    };
    let deployments = state
        .store
        .list_deployments(&DeploymentFilter { repository, include_closed: query.include_closed })
        .await?;
    // One query for every deployment's newest revision; the serving one is almost always it.
    let newest: std::collections::HashMap<_, _> =
        state.store.newest_revisions().await?.into_iter().map(|r| (r.deployment_id, r)).collect();
    let mut views = Vec::with_capacity(deployments.len());
    for deployment in &deployments {
        let latest = newest.get(&deployment.id);
        let current = match deployment.current_revision {
            Some(id) if latest.is_some_and(|l| l.id == id) => latest.cloned(),
            Some(id) => Some(state.store.get_revision(id).await?),
            None => None,
        };
        views.push(dto::deployment_json(deployment, current.as_ref(), latest));
    }
    Ok(Json(views))
}

/// The body of `branch-deployment create-or-update`; names mirror dagster-cloud's flags. The
/// Dagster+ GraphQL mutation (`dagster_cloud`) fills the same struct.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrUpdate {
    pub git_repo_name: Option<String>,
    pub branch_name: String,
    pub commit_hash: String,
    #[serde(default)]
    pub timestamp: Option<f64>,
    pub pull_request_url: Option<String>,
    pub pull_request_id: Option<String>,
    pub pull_request_status: Option<String>,
    #[serde(default)]
    pub commit_message: Option<String>,
    #[serde(default)]
    pub author_name: Option<String>,
    #[serde(default)]
    pub author_email: Option<String>,
    pub base_deployment_name: Option<String>,
    #[serde(default)]
    pub branch_url: Option<String>,
    #[serde(default)]
    pub commit_url: Option<String>,
    #[serde(default)]
    pub author_avatar_url: Option<String>,
    /// `merge-base` (the default), or Dagster+'s `on-create` / `on-update`.
    #[serde(default)]
    pub snapshot_base_condition: Option<String>,
}

pub(super) async fn create_or_update(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Body(body): Body<CreateOrUpdate>,
) -> ApiResult<Json<serde_json::Value>> {
    let outcome = create_or_update_branch(&state, caller, body).await?;
    let view = deployment_view(&state, &outcome.deployment).await?;
    Ok(Json(serde_json::json!({
        "name": outcome.deployment.name.to_string(),
        "deployment": view,
        "revision": outcome.revision.as_ref().map(dto::revision_json),
    })))
}

/// `create-or-update` for both front doors (REST and the Dagster+ GraphQL API): checks the
/// caller's role against the target (the production branch deploys `prod`: admin only).
pub async fn create_or_update_branch(
    state: &SharedState,
    caller: Caller,
    body: CreateOrUpdate,
) -> ApiResult<PushOutcome> {
    // Commit message, author, timestamp and the URLs come from git and the forge; the fields are
    // accepted so the dagster-cloud flags can be passed through unchanged.
    let _ = (&body.timestamp, &body.commit_message, &body.author_name, &body.author_email);
    let _ = (&body.branch_url, &body.commit_url, &body.author_avatar_url);
    let repository = pick_repository(state, body.git_repo_name.as_deref())?;
    let branch = BranchName::new(&body.branch_name)
        .map_err(|e| ApiError::bad_request("invalid_branch_name", e.to_string()))?;
    let production_branch =
        &crate::service::lookup::repository_config(state, &repository)?.production_branch;
    if branch.as_str() == production_branch {
        caller.require(
            Role::Admin,
            &format!("deploying the production branch `{production_branch}` (to `prod`)"),
        )?;
    } else {
        caller.require(Role::Deploy, "creating or updating a branch deployment")?;
    }
    let pull_request_status = match body.pull_request_status.as_deref() {
        None => None,
        Some(text) => Some(PullRequestStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("pull_request_status `{text}` is not OPEN, CLOSED or MERGED"),
            )
        })?),
    };
    let base_deployment = match body.base_deployment_name.as_deref() {
        None => None,
        Some(text) => Some(DeploymentName::new(text).map_err(|_| {
            ApiError::not_found(
                "deployment_not_found",
                format!("no base deployment named `{text}`"),
            )
        })?),
    };
    if let Some(base) = &base_deployment {
        if state.store.find_deployment(&repository, base).await?.is_none() {
            return Err(ApiError::not_found(
                "deployment_not_found",
                format!("no base deployment named `{base}`"),
            ));
        }
    }
    let snapshot_base = match body.snapshot_base_condition.as_deref() {
        None => None,
        Some(text) => Some(SnapshotBase::parse_flag(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!(
                    "snapshot_base_condition `{text}` is not on-create, on-update or merge-base"
                ),
            )
        })?),
    };
    if body.commit_hash.is_empty()
        || body.commit_hash.len() > 64
        || !body.commit_hash.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "commit_hash must be a hexadecimal commit id",
        ));
    }
    // A remote repository may not have fetched the commit yet: CI often calls before any webhook.
    remotes::ensure_commit(state, &repository, &body.commit_hash).await?;
    Ok(deployer::create_or_update(
        state,
        Push {
            repository,
            branch,
            commit: body.commit_hash,
            pull_request_id: body.pull_request_id,
            pull_request_url: body.pull_request_url,
            pull_request_status,
            base_deployment,
            // dagster-cloud's create-or-update reopens a closed deployment (an older commit never does).
            opens: true,
            redeploy: false,
            snapshot_base,
        },
    )
    .await?)
}

pub(super) async fn show_deployment(
    State(state): State<SharedState>,
    _: Reader,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<DeploymentJson>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    Ok(Json(deployment_view(&state, &deployment).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    pull_request_status: Option<String>,
}

pub(super) async fn close_deployment(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Json<DeploymentJson>> {
    // The body is optional: an empty one closes without a pull-request status.
    let body: CloseBody = if body.iter().all(u8::is_ascii_whitespace) {
        CloseBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("invalid JSON body: {e}"))
        })?
    };
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    caller.require_for(&deployment, "closing")?;
    let status = match body.pull_request_status {
        None => None,
        Some(text) => Some(
            PullRequestStatus::parse(&text).filter(|s| *s != PullRequestStatus::Open).ok_or_else(
                || {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("pull_request_status `{text}` must be CLOSED or MERGED"),
                    )
                },
            )?,
        ),
    };
    let reason = status.map_or("closed by request".to_owned(), |s| {
        format!("pull request {}", s.as_str().to_lowercase())
    });
    let keep = match catch_up::hold_at_close(&state, &deployment, status).await {
        true => deployments::Keep::TablesForCatchUp,
        false => deployments::Keep::Nothing,
    };
    let deployment = deployments::close_with(
        &state,
        &deployment,
        &reason,
        status,
        keep,
        deployments::Extras::default(),
    )
    .await?;
    Ok(Json(deployment_view(&state, &deployment).await?))
}

pub(super) async fn reopen_deployment(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<DeploymentJson>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    caller.require_for(&deployment, "reopening")?;
    let deployment = deployments::reopen(&state, &deployment).await?;
    Ok(Json(deployment_view(&state, &deployment).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    pinned: bool,
}

pub(super) async fn pin_deployment(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
    Body(body): Body<PinBody>,
) -> ApiResult<Json<DeploymentJson>> {
    // Pinning keeps a deployment (and what it holds in the warehouse) past its TTL.
    caller.require(Role::Admin, "pinning a deployment")?;
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    state.store.set_pinned(deployment.id, body.pinned, crate::state::now()).await?;
    let deployment = state.store.get_deployment(deployment.id).await?;
    Ok(Json(deployment_view(&state, &deployment).await?))
}

/// 204 once the deployment is gone; 202 while its runs are still stopping (it goes after them).
pub(super) async fn delete_deployment(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin, "deleting a deployment")?;
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    let gone = deployments::delete(&state, &deployment).await?;
    Ok(if gone { StatusCode::NO_CONTENT } else { StatusCode::ACCEPTED })
}

pub(super) async fn list_revisions(
    State(state): State<SharedState>,
    _: Reader,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<Vec<dto::RevisionJson>>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    let revisions = state.store.list_revisions(deployment.id, 0).await?;
    Ok(Json(revisions.iter().map(dto::revision_json).collect()))
}

pub(super) async fn show_changes(
    State(state): State<SharedState>,
    _: Reader,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<ChangesJson>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    let revision = match deployment.current_revision {
        Some(id) => Some(state.store.get_revision(id).await?),
        None => None,
    };
    let changes: Option<ChangeSetJson> = revision
        .as_ref()
        .and_then(|r| r.changes_json.as_deref())
        .and_then(|j| serde_json::from_str(j).ok());
    Ok(Json(ChangesJson {
        deployment: deployment.name.to_string(),
        revision: revision.as_ref().map(dto::revision_json),
        changes,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchBody {
    selection: String,
    /// Counted by `tag_concurrency_limits`.
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
}

pub(super) async fn launch_run(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
    Body(body): Body<LaunchBody>,
) -> ApiResult<(StatusCode, Json<RunJson>)> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    caller.require_for(&deployment, "launching a run in")?;
    let run = runner::launch(&state, &deployment, &body.selection, &body.tags).await?;
    let steps = state.store.list_steps(run.id).await?;
    let mut view = dto::run_json(&run, &deployment, &steps);
    view.waiting_for = runner::waiting_for(&state, &run, &deployment).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    repository: Option<String>,
    deployment: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn list_runs(
    State(state): State<SharedState>,
    _: Reader,
    Query(query): Query<RunsQuery>,
) -> ApiResult<Json<Vec<RunJson>>> {
    let deployment = match query.deployment.as_deref() {
        Some(name) => Some(find_deployment(&state, query.repository.as_deref(), name).await?),
        None => None,
    };
    let filter = RunFilter {
        deployment_id: deployment.as_ref().map(|d| d.id),
        statuses: Vec::new(),
        limit: query.limit.unwrap_or(50).min(500),
    };
    let mut out = Vec::new();
    for run in state.store.list_runs(&filter).await? {
        let owner = match &deployment {
            Some(d) => d.clone(),
            None => state.store.get_deployment(run.deployment_id).await?,
        };
        let mut view = dto::run_json(&run, &owner, &[]);
        view.waiting_for = runner::waiting_for(&state, &run, &owner).await?;
        out.push(view);
    }
    Ok(Json(out))
}

pub(super) async fn run_view(state: &AppState, id: i64) -> ApiResult<RunJson> {
    let run = state
        .store
        .get_run(RunId(id))
        .await
        .map_err(|_| ApiError::not_found("run_not_found", format!("no run {id}")))?;
    let deployment = state.store.get_deployment(run.deployment_id).await?;
    let steps = state.store.list_steps(run.id).await?;
    let mut view = dto::run_json(&run, &deployment, &steps);
    view.waiting_for = runner::waiting_for(state, &run, &deployment).await?;
    Ok(view)
}

pub(super) async fn show_run(
    State(state): State<SharedState>,
    _: Reader,
    Path(id): Path<i64>,
) -> ApiResult<Json<RunJson>> {
    Ok(Json(run_view(&state, id).await?))
}

pub(super) async fn cancel_run(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<Json<RunJson>> {
    let run = state
        .store
        .get_run(RunId(id))
        .await
        .map_err(|_| ApiError::not_found("run_not_found", format!("no run {id}")))?;
    caller
        .require_for(&state.store.get_deployment(run.deployment_id).await?, "canceling a run of")?;
    runner::cancel(&state, &run).await?;
    Ok(Json(run_view(&state, id).await?))
}

/// Production's catch-up to the revision it serves (`[production] on_deploy = "manual"` runs it
/// only this way): 201 with the run, or 200 with `run` null when production is up to date.
pub(super) async fn catch_up_deployment(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    caller.require(Role::Admin, "catching up production")?;
    if deployment.kind != offshoot_core::DeploymentKind::Production {
        return Err(ApiError::bad_request(
            "not_production",
            format!("`{name}` is a branch deployment; only production catches up"),
        ));
    }
    match catch_up::launch(&state, &deployment).await? {
        Some(run) => {
            let steps = state.store.list_steps(run.id).await?;
            let mut view = dto::run_json(&run, &deployment, &steps);
            view.waiting_for = runner::waiting_for(&state, &run, &deployment).await?;
            Ok((StatusCode::CREATED, Json(serde_json::json!({ "up_to_date": false, "run": view }))))
        }
        None => Ok((StatusCode::OK, Json(serde_json::json!({ "up_to_date": true, "run": null })))),
    }
}

/// Undoes production's last catch-up: its replaced tables come back from the archive and the
/// previous revision serves again.
pub(super) async fn rollback_deployment(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    caller.require(Role::Admin, "rolling back production")?;
    let done = catch_up::rollback(&state, &deployment).await?;
    Ok(Json(serde_json::json!({
        "deployment": deployment.name.to_string(),
        "catch_up_run": done.catch_up.id.0,
        "rolled_back_revision": done.rolled_back,
        "serving_revision": dto::revision_json(&done.serving),
        "restored": done.restored.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
    })))
}
