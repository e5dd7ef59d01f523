//! The HTTP layer: the REST API under `/api/v1`, plus `/healthz` and `/metrics`, the Dagster+
//! GraphQL endpoint, webhooks, server-sent events and the web UI. Writes need a bearer token whose
//! role allows them (`auth`: `deploy` for branch deployments, `admin` for production, delete and
//! pin); reads need any token unless `public_reads`. Errors are `{"error": {code, message}}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

pub mod auth;
pub mod catalog;
pub mod dagster_cloud;
pub mod data_diff;
pub mod deployments;
pub mod dto;
pub mod error;
pub mod events;
pub mod hooks;
pub mod openapi;
pub mod schedules;
pub mod ui;
pub mod variables;

use crate::http::deployments::*;
use crate::http::error::ApiError;
use crate::state::SharedState;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/api/v1/deployments", get(list_deployments))
        .route("/api/v1/branch-deployments", post(create_or_update))
        .route("/api/v1/deployments/{name}", get(show_deployment).delete(delete_deployment))
        .route("/api/v1/deployments/{name}/close", post(close_deployment))
        .route("/api/v1/deployments/{name}/reopen", post(reopen_deployment))
        .route("/api/v1/deployments/{name}/pin", post(pin_deployment))
        .route("/api/v1/deployments/{name}/revisions", get(list_revisions))
        .route("/api/v1/deployments/{name}/changes", get(show_changes))
        .route("/api/v1/deployments/{name}/runs", post(launch_run))
        .route("/api/v1/deployments/{name}/catch-up", post(catch_up_deployment))
        .route("/api/v1/deployments/{name}/rollback", post(rollback_deployment))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/variables", get(variables::list_variables))
        .route("/api/v1/local-variables", get(variables::export_local))
        .route(
            "/api/v1/variables/{name}",
            axum::routing::put(variables::set_variable).delete(variables::unset_variable),
        )
        .merge(dagster_cloud::router())
        .merge(hooks::router())
        .merge(catalog::router())
        .merge(data_diff::router())
        .merge(schedules::router())
        .merge(events::router())
        .merge(ui::router())
        .with_state(state)
}

/// A JSON body whose rejection is one of our errors, not axum's plain text.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::bad_request("invalid_request", body_error(&rejection))),
        }
    }
}

fn body_error(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with `Content-Type: application/json`".to_owned()
        }
        other => format!("invalid JSON body: {}", other.body_text()),
    }
}
