//! The part of Dagster+'s GraphQL API that the real `dagster-cloud` CLI uses for branch
//! deployments, served at `POST /graphql` so a team's CI can point `DAGSTER_CLOUD_URL` at
//! Offshoot unchanged. A typed schema (async-graphql) with the operations of dagster-cloud-cli's
//! `gql.py`: `createOrUpdateBranchDeployment`, `getBranchDeploymentName`, `deploymentByName`,
//! `deleteDeployment` and `fullDeployments`; anything else fails validation with an error that
//! says Offshoot does not implement it. Not a GraphQL API of Offshoot's own: the REST API is.
//!
//! Authentication is dagster-cloud's `Dagster-Cloud-Api-Token` header (or a bearer token),
//! holding one of the server's API tokens with its role (`auth`): the same checks as the REST
//! handlers, through the same functions. Failures are GraphQL errors whose `extensions.code` is
//! the REST API's stable code; an internal failure is a `PythonError` (what Dagster+ answers for
//! a server-side exception), its detail only in the server log.

use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, InputObject, Object, Schema, ServerError,
    SimpleObject, Union,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use offshoot_core::{BranchName, DeploymentKind, DeploymentName, SnapshotBase};
use offshoot_store::{Deployment, DeploymentFilter, DeploymentId, StoreError};

use crate::config::Role;
use crate::http::auth::{self, Caller};
use crate::http::deployments::{create_or_update_branch, CreateOrUpdate};
use crate::http::error::{ApiError, ApiResult};
use crate::service::deployments as lifecycle;
use crate::state::{Metrics, SharedState};

/// Nesting deeper than dagster-cloud's documents (3 levels) is refused before execution.
const MAX_DEPTH: usize = 8;

pub type DagsterCloudSchema = Schema<Query, Mutation, EmptySubscription>;

pub fn schema() -> DagsterCloudSchema {
    Schema::build(Query, Mutation, EmptySubscription).limit_depth(MAX_DEPTH).finish()
}

pub fn router() -> Router<SharedState> {
    let schema = schema();
    Router::new().route(
        "/graphql",
        post(move |state, headers, body| graphql(schema.clone(), state, headers, body)),
    )
}

/// What a resolver knows about the request.
struct Session {
    state: SharedState,
    caller: Option<Caller>,
}

impl Session {
    fn reader(&self) -> ApiResult<()> {
        match self.caller {
            Some(_) => Ok(()),
            None if self.state.config.public_reads => Ok(()),
            None => Err(auth::no_token(Role::Read)),
        }
    }

    fn writer(&self) -> ApiResult<Caller> {
        self.caller.ok_or_else(|| auth::no_token(Role::Deploy))
    }
}

async fn graphql(
    schema: DagsterCloudSchema,
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    Metrics::increment(&state.metrics.http_requests);
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            let message = format!("the body is not a GraphQL request (JSON with `query` and optional `variables`): {error}");
            return (StatusCode::BAD_REQUEST, Json(errors_only(message, "invalid_request")))
                .into_response();
        }
    };
    let caller = match auth::dagster_cloud_caller(&state, &headers) {
        Ok(caller) => caller,
        Err(error) => {
            return (error.status, Json(errors_only(error.message, error.code))).into_response()
        }
    };
    let mut response = schema.execute(request.data(Session { state, caller })).await;
    for error in &mut response.errors {
        explain_unimplemented(error);
    }
    Json(response).into_response()
}

fn errors_only(message: String, code: &str) -> serde_json::Value {
    serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
}

/// Validation names an unknown field, type or argument; say why it is unknown.
fn explain_unimplemented(error: &mut ServerError) {
    let unknown = ["Unknown field", "Unknown type", "Unknown argument", "Unknown operation"];
    if !unknown.iter().any(|prefix| error.message.starts_with(prefix)) {
        return;
    }
    error.message = format!(
        "{} Offshoot does not implement this part of the Dagster+ GraphQL API: it serves only what `dagster-cloud branch-deployment create-or-update` and `delete` use (createOrUpdateBranchDeployment, getBranchDeploymentName, deploymentByName, deleteDeployment, fullDeployments); use Offshoot's REST API (/api/v1) or its CLI for the rest.",
        error.message.trim_end_matches('.').to_owned() + "."
    );
    error.extensions.get_or_insert_with(Default::default).set("code", "not_implemented");
}

/// An API error as a GraphQL error with the REST code in `extensions`.
fn graphql_error(error: impl Into<ApiError>) -> async_graphql::Error {
    let error: ApiError = error.into();
    let code = error.code;
    let role = error.required_role;
    async_graphql::Error::new(error.message).extend_with(move |_, extensions| {
        extensions.set("code", code);
        if let Some(role) = role {
            extensions.set("requiredRole", role.as_str());
        }
    })
}

fn session<'a>(context: &'a Context<'_>) -> &'a Session {
    context.data_unchecked::<Session>()
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentType {
    Production,
    Branch,
}

/// When Dagster+ snapshots the base deployment for change tracking.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotBaseDeploymentCondition {
    OnCreate,
    OnUpdate,
}

#[derive(SimpleObject, Clone)]
pub struct DagsterCloudDeployment {
    deployment_id: i32,
    deployment_name: String,
    deployment_type: DeploymentType,
}

impl DagsterCloudDeployment {
    fn of(deployment: &Deployment) -> Result<DagsterCloudDeployment, ApiError> {
        let deployment_id = i32::try_from(deployment.id.0).map_err(|_| {
            ApiError::internal(format!(
                "deployment id {} does not fit a GraphQL Int",
                deployment.id.0
            ))
        })?;
        let deployment_type = match deployment.kind {
            DeploymentKind::Production => DeploymentType::Production,
            DeploymentKind::Branch => DeploymentType::Branch,
        };
        Ok(DagsterCloudDeployment {
            deployment_id,
            deployment_name: deployment.name.to_string(),
            deployment_type,
        })
    }
}

/// A server-side failure, as Dagster+ reports one; the detail is in the server log only.
#[derive(SimpleObject)]
pub struct PythonError {
    message: String,
    stack: Vec<String>,
}

#[derive(SimpleObject)]
pub struct DeploymentNotFoundError {
    message: String,
}

#[derive(Union)]
pub enum DeploymentResult {
    DagsterCloudDeployment(DagsterCloudDeployment),
    PythonError(PythonError),
}

#[derive(Union)]
pub enum DeploymentByNameResult {
    DagsterCloudDeployment(DagsterCloudDeployment),
    DeploymentNotFoundError(DeploymentNotFoundError),
    PythonError(PythonError),
}

/// A mutation's result: a deployment, a `PythonError` for an internal failure, else an error.
fn mutation_result(
    result: ApiResult<DagsterCloudDeployment>,
) -> async_graphql::Result<DeploymentResult> {
    match result {
        Ok(deployment) => Ok(DeploymentResult::DagsterCloudDeployment(deployment)),
        Err(error) if error.status == StatusCode::INTERNAL_SERVER_ERROR => {
            Ok(DeploymentResult::PythonError(PythonError {
                message: error.message,
                stack: Vec::new(),
            }))
        }
        Err(error) => Err(graphql_error(error)),
    }
}

#[derive(InputObject)]
pub struct CreateOrUpdateBranchDeploymentInput {
    repo_name: String,
    branch_name: String,
    branch_url: Option<String>,
    pull_request_url: Option<String>,
    pull_request_status: Option<String>,
    pull_request_number: Option<String>,
}

#[derive(InputObject)]
pub struct DeploymentCommitInput {
    commit_hash: String,
    timestamp: Option<f64>,
    commit_message: Option<String>,
    commit_url: Option<String>,
    author_name: Option<String>,
    author_email: Option<String>,
    author_avatar_url: Option<String>,
}

pub struct Query;

#[Object]
impl Query {
    /// Every open deployment, production first.
    async fn full_deployments(
        &self,
        context: &Context<'_>,
    ) -> async_graphql::Result<Vec<DagsterCloudDeployment>> {
        let session = session(context);
        session.reader().map_err(graphql_error)?;
        let deployments = session
            .state
            .store
            .list_deployments(&DeploymentFilter::default())
            .await
            .map_err(graphql_error)?;
        deployments.iter().map(|d| DagsterCloudDeployment::of(d).map_err(graphql_error)).collect()
    }

    /// The deployment with this name, in whichever configured repository has it.
    async fn deployment_by_name(
        &self,
        context: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<DeploymentByNameResult> {
        let session = session(context);
        session.reader().map_err(graphql_error)?;
        let not_found = || {
            DeploymentByNameResult::DeploymentNotFoundError(DeploymentNotFoundError {
                message: format!("no deployment named `{name}`"),
            })
        };
        let Ok(deployment_name) = DeploymentName::new(&name) else {
            return Ok(not_found());
        };
        let mut found = Vec::new();
        for repository in &session.state.config.repositories {
            if let Some(deployment) = session
                .state
                .store
                .find_deployment(&repository.name, &deployment_name)
                .await
                .map_err(graphql_error)?
            {
                found.push(deployment);
            }
        }
        match found.as_slice() {
            [] => Ok(not_found()),
            [only] => Ok(DeploymentByNameResult::DagsterCloudDeployment(
                DagsterCloudDeployment::of(only).map_err(graphql_error)?,
            )),
            many => {
                let repositories: Vec<String> =
                    many.iter().map(|d| d.repository.to_string()).collect();
                Err(graphql_error(ApiError::conflict(
                    "conflict",
                    format!("`{name}` names a deployment in several repositories ({}); use Offshoot's CLI with --repository", repositories.join(", ")),
                )))
            }
        }
    }

    /// The name of the branch's deployment, if it has one.
    async fn get_branch_deployment_name(
        &self,
        context: &Context<'_>,
        repo_name: String,
        branch_name: String,
    ) -> async_graphql::Result<String> {
        let session = session(context);
        session.reader().map_err(graphql_error)?;
        let repository = crate::service::lookup::pick_repository(&session.state, Some(&repo_name))
            .map_err(graphql_error)?;
        let branch = BranchName::new(&branch_name).map_err(|e| {
            graphql_error(ApiError::bad_request("invalid_branch_name", e.to_string()))
        })?;
        match session
            .state
            .store
            .find_deployment_by_branch(&repository, &branch)
            .await
            .map_err(graphql_error)?
        {
            Some(deployment) => Ok(deployment.name.to_string()),
            None => Err(graphql_error(ApiError::not_found(
                "deployment_not_found",
                format!("branch `{branch_name}` of `{repository}` has no deployment"),
            ))),
        }
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Create the branch's deployment or deploy a new commit in it (Offshoot's
    /// `branch-deployment create-or-update`).
    async fn create_or_update_branch_deployment(
        &self,
        context: &Context<'_>,
        branch_data: CreateOrUpdateBranchDeploymentInput,
        commit: DeploymentCommitInput,
        base_deployment_name: Option<String>,
        snapshot_base_condition: Option<SnapshotBaseDeploymentCondition>,
    ) -> async_graphql::Result<DeploymentResult> {
        let session = session(context);
        let caller = session.writer().map_err(graphql_error)?;
        let request = CreateOrUpdate {
            git_repo_name: Some(branch_data.repo_name),
            branch_name: branch_data.branch_name,
            branch_url: branch_data.branch_url,
            pull_request_url: branch_data.pull_request_url,
            pull_request_id: branch_data.pull_request_number,
            pull_request_status: branch_data.pull_request_status,
            commit_hash: commit.commit_hash,
            timestamp: commit.timestamp,
            commit_message: commit.commit_message,
            commit_url: commit.commit_url,
            author_name: commit.author_name,
            author_email: commit.author_email,
            author_avatar_url: commit.author_avatar_url,
            base_deployment_name,
            snapshot_base_condition: snapshot_base_condition.map(|condition| {
                match condition {
                    SnapshotBaseDeploymentCondition::OnCreate => SnapshotBase::OnCreate,
                    SnapshotBaseDeploymentCondition::OnUpdate => SnapshotBase::OnUpdate,
                }
                .as_str()
                .to_owned()
            }),
        };
        let result = create_or_update_branch(&session.state, caller, request).await;
        mutation_result(result.and_then(|outcome| DagsterCloudDeployment::of(&outcome.deployment)))
    }

    /// Delete a deployment with its warehouse objects and history: `admin`, like the REST
    /// API's delete; production is refused.
    async fn delete_deployment(
        &self,
        context: &Context<'_>,
        deployment_id: i32,
    ) -> async_graphql::Result<DeploymentResult> {
        let session = session(context);
        let caller = session.writer().map_err(graphql_error)?;
        let result = async {
            caller.require(Role::Admin, "deleting a deployment")?;
            let deployment = match session
                .state
                .store
                .get_deployment(DeploymentId(i64::from(deployment_id)))
                .await
            {
                Ok(deployment) => deployment,
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(
                        "deployment_not_found",
                        format!("no deployment has id {deployment_id}"),
                    ))
                }
                Err(error) => return Err(error.into()),
            };
            let answer = DagsterCloudDeployment::of(&deployment)?;
            lifecycle::delete(&session.state, &deployment).await?;
            Ok(answer)
        }
        .await;
        mutation_result(result)
    }
}
