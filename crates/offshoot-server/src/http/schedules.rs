//! The schedules API: a deployment's schedules with their next tick and last runs; switching a
//! branch deployment's schedule on or off; running one tick now (`service::schedules`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use offshoot_core::ScheduleOrigin;
use offshoot_store::{Deployment, ScheduleTick};
use serde::{Deserialize, Serialize};

use crate::http::auth::{Reader, Writer};
use crate::http::error::ApiResult;
use crate::service::lookup::find_deployment;
use crate::service::schedules::{self, ScheduleView};
use crate::state::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/deployments/{name}/schedules", get(list_schedules))
        .route("/api/v1/deployments/{name}/schedules/{schedule}/on", post(switch_on))
        .route("/api/v1/deployments/{name}/schedules/{schedule}/off", post(switch_off))
        .route("/api/v1/deployments/{name}/schedules/{schedule}/tick", post(tick_now))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RepositoryQuery {
    repository: Option<String>,
}

#[derive(Serialize)]
pub struct ScheduleJson {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub selection: String,
    /// `offshoot.toml` or `dagster`.
    pub defined_in: String,
    pub enabled: bool,
    /// Why Offshoot cannot run it (a Dagster job of ops, say); such a schedule never ticks.
    pub problem: Option<String>,
    /// Unix ms; null while off.
    pub next_tick_at: Option<i64>,
    /// Ticks after this moment (Unix ms) are owed: when the deployment first saw the schedule or
    /// it was switched on; null before the scheduler saw it.
    pub owed_since: Option<i64>,
    pub ticks: Vec<TickJson>,
}

#[derive(Serialize)]
pub struct TickJson {
    pub id: i64,
    pub schedule: String,
    pub tick_at: i64,
    pub manual: bool,
    pub missed: u64,
    /// `claimed`, `started`, `skipped` or `failed`.
    pub status: String,
    pub message: Option<String>,
    pub run_id: Option<i64>,
    pub run_status: Option<String>,
    pub server: String,
}

fn tick_json(tick: &ScheduleTick, run_status: Option<&str>) -> TickJson {
    TickJson {
        id: tick.id.0,
        schedule: tick.schedule.clone(),
        tick_at: tick.tick_at,
        manual: tick.manual,
        missed: tick.missed,
        status: tick.status.as_str().to_owned(),
        message: tick.message.clone(),
        run_id: tick.run_id.map(|r| r.0),
        run_status: run_status.map(str::to_owned),
        server: tick.claimed_by.clone(),
    }
}

fn schedule_json(view: &ScheduleView) -> ScheduleJson {
    let schedule = &view.schedule;
    ScheduleJson {
        name: schedule.name.clone(),
        cron: schedule.cron.pattern().to_owned(),
        timezone: schedule.cron.timezone().to_owned(),
        selection: schedule.selection.clone(),
        defined_in: match &schedule.origin {
            ScheduleOrigin::Manifest { line } => format!("offshoot.toml:{line}"),
            ScheduleOrigin::Dagster { job } => format!("dagster job {job}"),
        },
        enabled: view.enabled,
        problem: schedule.problem.clone(),
        next_tick_at: view.next_tick,
        owed_since: view.since,
        ticks: view
            .ticks
            .iter()
            .map(|(tick, run)| tick_json(tick, run.as_ref().map(|r| r.status.as_str())))
            .collect(),
    }
}

async fn deployment(
    state: &SharedState,
    query: &RepositoryQuery,
    name: &str,
) -> ApiResult<Deployment> {
    Ok(find_deployment(state, query.repository.as_deref(), name).await?)
}

pub(super) async fn list_schedules(
    State(state): State<SharedState>,
    _: Reader,
    Path(name): Path<String>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<Vec<ScheduleJson>>> {
    let deployment = deployment(&state, &query, &name).await?;
    let views = schedules::list(&state, &deployment).await?;
    Ok(Json(views.iter().map(schedule_json).collect()))
}

async fn switch(
    state: SharedState,
    caller: crate::http::auth::Caller,
    name: String,
    schedule: String,
    query: RepositoryQuery,
    enabled: bool,
) -> ApiResult<Json<ScheduleJson>> {
    let deployment = deployment(&state, &query, &name).await?;
    caller.require_for(&deployment, "switching a schedule of")?;
    let view = schedules::set_enabled(&state, &deployment, &schedule, enabled).await?;
    Ok(Json(schedule_json(&view)))
}

pub(super) async fn switch_on(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path((name, schedule)): Path<(String, String)>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<ScheduleJson>> {
    switch(state, caller, name, schedule, query, true).await
}

pub(super) async fn switch_off(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path((name, schedule)): Path<(String, String)>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<Json<ScheduleJson>> {
    switch(state, caller, name, schedule, query, false).await
}

pub(super) async fn tick_now(
    State(state): State<SharedState>,
    Writer(caller): Writer,
    Path((name, schedule)): Path<(String, String)>,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult<(StatusCode, Json<TickJson>)> {
    let deployment = deployment(&state, &query, &name).await?;
    caller.require_for(&deployment, "running a schedule's tick in")?;
    let tick = schedules::tick_now(&state, &deployment, &schedule).await?;
    let run_status = match tick.run_id {
        Some(id) => Some(state.store.get_run(id).await?.status.as_str().to_owned()),
        None => None,
    };
    Ok((StatusCode::CREATED, Json(tick_json(&tick, run_status.as_deref()))))
}
