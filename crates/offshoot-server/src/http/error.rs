//! The HTTP layer's one error type: a stable machine code, an HTTP status and a message for
//! people. Service errors become API errors here; internal details are logged once, here, and
//! never sent to clients.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use offshoot_store::StoreError;

use crate::config::Role;
use crate::service::error::{Kind, ServiceError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 401 and 403: the token role the request needs, sent as `error.required_role`.
    pub required_role: Option<Role>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), required_role: None }
    }

    pub fn with_required_role(self, role: Role) -> ApiError {
        ApiError { required_role: Some(role), ..self }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// Logs `detail` and answers with a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {detail}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; see the server log",
        )
    }
}

/// The table of codes, for the OpenAPI document and the docs.
pub const ERROR_CODES: &[(&str, u16, &str)] = &[
    ("unauthorized", 401, "missing or wrong bearer token"),
    ("forbidden", 403, "the token's role does not allow this; the message names the role it needs (read < deploy < admin)"),
    ("invalid_request", 400, "the body or a parameter is malformed"),
    ("invalid_branch_name", 400, "the branch name is empty, too long or has control characters"),
    ("invalid_selection", 400, "the selection does not parse; the message has the column"),
    ("empty_selection", 400, "the selection picks no asset that can be materialized"),
    ("repository_not_found", 404, "no configured repository has that name"),
    ("deployment_not_found", 404, "no deployment has that name"),
    ("ambiguous_deployment", 400, "several repositories have a deployment of that name; name the repository"),
    ("run_not_found", 404, "no run has that id"),
    ("asset_not_found", 404, "the serving revision has no asset with that key"),
    ("revision_not_found", 404, "no revision has that id"),
    ("commit_not_found", 422, "the commit is not in the repository"),
    ("production_protected", 409, "prod cannot be closed or deleted"),
    ("deployment_closed", 409, "the deployment is closed; reopen it first"),
    ("deployment_not_ready", 409, "the deployment has no ready revision yet"),
    ("deployment_limit_reached", 409, "too many open branch deployments"),
    ("run_finished", 409, "the run has finished already"),
    ("schedule_not_found", 404, "the serving revision has no schedule of that name"),
    ("production_schedule", 409, "production's schedules always run; they cannot be switched"),
    ("schedule_not_runnable", 422, "the schedule cannot run in Offshoot (the message says why: a Dagster job of ops, say)"),
    ("tick_exists", 409, "the schedule ticked at this very moment already"),
    ("not_production", 400, "only production rolls back or catches up; this is a branch deployment"),
    ("nothing_to_roll_back", 409, "production's serving revision had no catch-up to undo, or served nothing before"),
    ("archive_expired", 409, "the tables the catch-up replaced are no longer kept ([production] retention_hours)"),
    ("catch_up_running", 409, "a catch-up of production is queued or running; wait for it"),
    ("deployment_changed", 409, "the deployment changed while the request was carried out; look again"),
    ("repository_fetch_failed", 502, "fetching a remote repository failed; see the server log"),
    ("payload_too_large", 413, "a webhook body is larger than 25 MB"),
    ("request_timeout", 408, "a webhook body did not arrive within 30 s"),
    ("webhooks_busy", 503, "too many webhook requests or bodies at once; retry after `Retry-After` seconds"),
    ("not_a_branch_deployment", 400, "a data diff compares a branch deployment with production; this is production"),
    ("data_diff_failed", 422, "the warehouse could not compare the two tables; the message is the database's"),
    ("invalid_variable", 400, "a variable's name, scope, branch or value is refused; the message says which and why"),
    ("variable_not_found", 404, "no variable of that name, scope and branch was set through the API"),
    ("not_found", 404, "a row the request refers to no longer exists (e.g. deleted meanwhile)"),
    ("conflict", 409, "the request would break a uniqueness rule of the store"),
    ("internal_error", 500, "a server-side failure; details are in the server log"),
];

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body =
            serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(role) = self.required_role {
            body["error"]["required_role"] = serde_json::json!(role.as_str());
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        let status = match error.kind {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Upstream => StatusCode::BAD_GATEWAY,
            Kind::Internal => return ApiError::internal(error.message),
        };
        ApiError::new(status, error.code, error.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ServiceError::from(error).into()
    }
}

impl From<offshoot_warehouse::WarehouseError> for ApiError {
    fn from(error: offshoot_warehouse::WarehouseError) -> ApiError {
        ServiceError::from(error).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
