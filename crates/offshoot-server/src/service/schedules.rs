//! Schedules: the scheduler worker and the operations behind the API. A schedule comes from the
//! serving revision's project (`[[schedules]]` in `offshoot.toml`); a tick is a run of its
//! selection in the deployment. Production's schedules are always on; a branch deployment's are
//! off until switched on (Dagster+ does the same), and any can run one tick now.
//!
//! Rules, each kept by the store rather than by this server's memory, so they hold across
//! restarts and across servers sharing one store:
//! - a tick runs once: it is claimed by inserting (deployment, schedule, tick time, manual),
//!   which only one server can do; the claimer starts the run and records its outcome;
//! - ticks missed while no server ran are caught up once: after a start the latest owed tick
//!   runs and the ones before it are counted on it (`missed`), not run;
//! - a tick whose schedule's previous run is still queued or running is skipped, and recorded
//!   with the run it waited for;
//! - ticks are owed from when the deployment first saw the schedule, or a branch switched it on.

use offshoot_core::{DeploymentKind, Schedule, UnixMillis};
use offshoot_store::{Deployment, DeploymentFilter, NewTick, Run, ScheduleTick, TickStatus};

use crate::adapters::project;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::runner;
use crate::state::{AppState, SharedState};

/// How many recent ticks a listing shows per schedule.
pub const RECENT_TICKS: u32 = 5;

/// One schedule of a deployment as the API shows it.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub schedule: Schedule,
    /// Production's always are; a branch deployment's once switched on.
    pub enabled: bool,
    /// When it ticks next (an owed tick not yet started is that); `None` while off.
    pub next_tick: Option<UnixMillis>,
    /// Ticks after this are owed: when the deployment first saw it or a branch switched it on;
    /// `None` before the scheduler has seen it.
    pub since: Option<UnixMillis>,
    /// The newest ticks first, with their runs.
    pub ticks: Vec<(ScheduleTick, Option<Run>)>,
}

/// The serving revision's schedules; none before a revision is ready.
pub async fn schedules_of(
    state: &AppState,
    deployment: &Deployment,
) -> ServiceResult<Vec<Schedule>> {
    let Some(revision) = deployment.current_revision else { return Ok(Vec::new()) };
    let revision = state.store.get_revision(revision).await?;
    let repo = crate::service::lookup::repository_config(state, &deployment.repository)?;
    let loaded = project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ServiceError::internal)?;
    Ok(match loaded.as_ref() {
        Ok(project) => project.manifest.schedules.clone(),
        Err(_) => Vec::new(),
    })
}

/// Every schedule of the deployment with its state, next tick and recent ticks.
pub async fn list(state: &AppState, deployment: &Deployment) -> ServiceResult<Vec<ScheduleView>> {
    let schedules = schedules_of(state, deployment).await?;
    let mut views = Vec::with_capacity(schedules.len());
    for schedule in schedules {
        views.push(view(state, deployment, schedule).await?);
    }
    Ok(views)
}

async fn view(
    state: &AppState,
    deployment: &Deployment,
    schedule: Schedule,
) -> ServiceResult<ScheduleView> {
    let now = state.clock.now();
    let recorded = state
        .store
        .schedule_states(deployment.id)
        .await?
        .into_iter()
        .find(|s| s.schedule == schedule.name);
    let enabled = match deployment.kind {
        DeploymentKind::Production => true,
        DeploymentKind::Branch => recorded.as_ref().is_some_and(|s| s.enabled),
    };
    let next_tick = if enabled && schedule.problem.is_none() {
        let since = recorded.as_ref().map_or(now, |s| s.since);
        let last = state.store.last_scheduled_tick(deployment.id, &schedule.name).await?;
        let handled = last.map_or(since, |last| last.max(since));
        match schedule.cron.due(handled, now) {
            Some(due) => Some(due.tick_at),
            None => schedule.cron.next_after(handled.max(now)),
        }
    } else {
        None
    };
    let mut ticks = Vec::new();
    for tick in state.store.list_ticks(deployment.id, Some(&schedule.name), RECENT_TICKS).await? {
        let run = match tick.run_id {
            Some(id) => Some(state.store.get_run(id).await?),
            None => None,
        };
        ticks.push((tick, run));
    }
    let since = recorded.map(|s| s.since);
    Ok(ScheduleView { schedule, enabled, next_tick, since, ticks })
}

async fn find(state: &AppState, deployment: &Deployment, name: &str) -> ServiceResult<Schedule> {
    let schedules = schedules_of(state, deployment).await?;
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let missing = ServiceError::not_found(
        "schedule_not_found",
        if names.is_empty() {
            format!("`{}` has no schedules", deployment.name)
        } else {
            format!("`{}` has no schedule `{name}`; it has {}", deployment.name, names.join(", "))
        },
    );
    schedules.iter().find(|s| s.name == name).cloned().ok_or(missing)
}

/// Switches a branch deployment's schedule on (ticks are owed from now) or off.
pub async fn set_enabled(
    state: &AppState,
    deployment: &Deployment,
    name: &str,
    enabled: bool,
) -> ServiceResult<ScheduleView> {
    if deployment.kind == DeploymentKind::Production {
        return Err(ServiceError::conflict(
            "production_schedule",
            "production's schedules always run; change `[[schedules]]` in offshoot.toml to change them",
        ));
    }
    let schedule = find(state, deployment, name).await?;
    state.store.set_schedule_enabled(deployment.id, name, enabled, state.clock.now()).await?;
    tracing::info!(
        "schedule `{name}` of `{}` switched {}",
        deployment.name,
        if enabled { "on" } else { "off" }
    );
    view(state, deployment, schedule).await
}

/// Runs one tick of the schedule now, on or off; skipped like any tick while its previous run
/// is still active.
pub async fn tick_now(
    state: &SharedState,
    deployment: &Deployment,
    name: &str,
) -> ServiceResult<ScheduleTick> {
    let schedule = find(state, deployment, name).await?;
    if let Some(problem) = &schedule.problem {
        return Err(ServiceError::unprocessable(
            "schedule_not_runnable",
            format!("schedule `{name}` cannot run in Offshoot: {problem}"),
        ));
    }
    let now = state.clock.now();
    let claimed = state
        .store
        .claim_tick(NewTick {
            deployment_id: deployment.id,
            schedule: schedule.name.clone(),
            tick_at: now,
            manual: true,
            missed: 0,
            claimed_by: state.config.server_id.clone(),
            now,
        })
        .await?
        .ok_or_else(|| {
            ServiceError::conflict(
                "tick_exists",
                format!("schedule `{name}` already ticked at this moment; try again"),
            )
        })?;
    fire(state, deployment, &schedule, claimed).await
}

/// Looks for due ticks every `schedule_check_interval`.
pub async fn worker(state: SharedState) {
    loop {
        if let Err(error) = check(&state).await {
            tracing::warn!("checking schedules: {}", error.message);
        }
        tokio::time::sleep(state.config.schedule_check_interval).await;
    }
}

/// One pass over every open deployment of the served repositories.
pub async fn check(state: &SharedState) -> ServiceResult<()> {
    for repo in &state.config.repositories {
        let filter =
            DeploymentFilter { repository: Some(repo.name.clone()), include_closed: false };
        for deployment in state.store.list_deployments(&filter).await? {
            if let Err(error) = check_deployment(state, &deployment).await {
                tracing::warn!(
                    "checking the schedules of `{}`: {}",
                    deployment.name,
                    error.message
                );
            }
        }
    }
    Ok(())
}

async fn check_deployment(state: &SharedState, deployment: &Deployment) -> ServiceResult<()> {
    let production = deployment.kind == DeploymentKind::Production;
    let recorded = state.store.schedule_states(deployment.id).await?;
    // A branch deployment without a schedule switched on owes nothing: no need to load it.
    if !production && !recorded.iter().any(|s| s.enabled) {
        return Ok(());
    }
    for schedule in schedules_of(state, deployment).await? {
        if schedule.problem.is_some() {
            continue;
        }
        let now = state.clock.now();
        let record = match recorded.iter().find(|s| s.schedule == schedule.name) {
            Some(record) => record.clone(),
            None => {
                state
                    .store
                    .ensure_schedule_state(deployment.id, &schedule.name, production, now)
                    .await?
            }
        };
        if !(production || record.enabled) {
            continue;
        }
        let last = state.store.last_scheduled_tick(deployment.id, &schedule.name).await?;
        let handled = last.map_or(record.since, |last| last.max(record.since));
        let Some(due) = schedule.cron.due(handled, now) else { continue };
        let claimed = state
            .store
            .claim_tick(NewTick {
                deployment_id: deployment.id,
                schedule: schedule.name.clone(),
                tick_at: due.tick_at,
                manual: false,
                missed: due.missed,
                claimed_by: state.config.server_id.clone(),
                now,
            })
            .await?;
        // Another server claimed it first.
        let Some(claimed) = claimed else { continue };
        if due.missed > 0 {
            tracing::info!(
                "schedule `{}` of `{}` missed {} tick(s) while no server ran; running the latest once",
                schedule.name,
                deployment.name,
                due.missed
            );
        }
        fire(state, deployment, &schedule, claimed).await?;
    }
    Ok(())
}

/// Starts the claimed tick's run, or skips it while the schedule's previous run is active, and
/// records which.
async fn fire(
    state: &SharedState,
    deployment: &Deployment,
    schedule: &Schedule,
    tick: ScheduleTick,
) -> ServiceResult<ScheduleTick> {
    let (status, run, message) = match active_run(state, deployment, schedule).await? {
        Some(active) => (
            TickStatus::Skipped,
            None,
            Some(format!(
                "run {} of the previous tick is still {}",
                active.id.0,
                active.status.as_str()
            )),
        ),
        // Tagged with its schedule (as Dagster tags `dagster/schedule_name`), so tag concurrency
        // limits can name schedules.
        None => match runner::launch(
            state,
            deployment,
            &schedule.selection,
            &[("offshoot/schedule".to_owned(), schedule.name.clone())].into(),
        )
        .await
        {
            Ok(run) => (TickStatus::Started, Some(run.id), None),
            Err(error) => (TickStatus::Failed, None, Some(error.message)),
        },
    };
    state.store.finish_tick(tick.id, status, run, message.as_deref()).await?;
    tracing::info!(
        "schedule `{}` of `{}`: tick at {} {}{}",
        schedule.name,
        deployment.name,
        tick.tick_at,
        status.as_str(),
        match (run, &message) {
            (Some(run), _) => format!(" run {}", run.0),
            (None, Some(message)) => format!(": {message}"),
            (None, None) => String::new(),
        }
    );
    Ok(ScheduleTick { status, run_id: run, message, ..tick })
}

/// The schedule's newest run, when it has not finished.
async fn active_run(
    state: &AppState,
    deployment: &Deployment,
    schedule: &Schedule,
) -> ServiceResult<Option<Run>> {
    let Some(previous) = state.store.last_tick_run(deployment.id, &schedule.name).await? else {
        return Ok(None);
    };
    let run = state.store.get_run(previous).await?;
    Ok((!run.status.is_finished()).then_some(run))
}
