//! Executing production's catch-up (`service::catch_up` decides and launches it). The decision
//! is made again when the run starts, on what is there then; every step says what it does.
//! First every promotion, in one warehouse transaction (metadata only on PostgreSQL, a copy
//! inside one transaction on SQLite; production's replaced tables go to the archive named by
//! the run), recorded with the branch build's provenance; a promotion the warehouse refuses is
//! rebuilt instead. Then the rebuilds, after their production tables are archived, built as any
//! production run builds (SQL and commands step by step, dbt and Dagster in one invocation of
//! the tool). A promotion never reads a rebuilt table (the decision only promotes what reads
//! what production serves or what this catch-up promotes), so promotions can all go first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use offshoot_core::catch_up::Action;
use offshoot_core::{RunPlan, StepStatus};
use offshoot_location::CodeLocation;
use offshoot_store::{Run, RunStep};
use offshoot_warehouse::{ArchiveId, Promotion};
use tokio::sync::watch;

use super::executor::{
    append_log, finish_early, log_text, recorded_read, report, run_native, RunContext, CANCEL_LOOK,
};
use super::tool::build_with_tool;
use crate::notices::Notice;
use crate::service::catch_up::{self, describe_step};
use crate::service::deployments::LifecycleError;
use crate::state::{now, SharedState};

/// What a step says when the decision, made again at the start, finds nothing to do.
const UP_TO_DATE: &str = "up to date";

/// A catch-up canceled while it waited for its turn: nothing was decided or moved.
async fn cancel_waiting(
    state: &SharedState,
    run: Run,
    mut steps: Vec<RunStep>,
) -> Result<(), LifecycleError> {
    for step in &mut steps {
        step.status = StepStatus::Canceled;
        step.finished_at = Some(now());
    }
    let canceled: Vec<(&RunStep, &str)> =
        steps.iter().map(|step| (step, "canceled before it started\n")).collect();
    state.store.update_steps(&canceled).await?;
    state.cancel_switches.lock().expect("never poisoned").remove(&run.id);
    report(state, &run, false, Some("canceled".to_owned())).await
}

pub(super) async fn execute(
    context: &Arc<RunContext>,
    run: Run,
    location: Box<dyn CodeLocation>,
    mut steps: Vec<RunStep>,
    cancelled: watch::Receiver<bool>,
) -> Result<(), LifecycleError> {
    let state = &context.state;
    // One catch-up or rollback at a time on this server. One that has to wait says so in its
    // steps' logs, and a cancel while it waits ends it: at once when asked on this server,
    // within CANCEL_LOOK when asked on another one (seen in the store).
    let _turn = match state.catch_up_turn.try_lock() {
        Ok(turn) => turn,
        Err(_) => {
            let log = "waiting: another catch-up or a rollback is running on this server; this one starts when it ends\n";
            let waiting: Vec<(&RunStep, &str)> = steps.iter().map(|step| (step, log)).collect();
            state.store.update_steps(&waiting).await?;
            let mut cancel = cancelled.clone();
            tokio::select! {
                turn = state.catch_up_turn.lock() => turn,
                // (The switch is dropped only when the run ends; never a cancel by itself.)
                () = async {
                    if cancel.wait_for(|asked| *asked).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    return cancel_waiting(state, run, steps).await;
                }
                () = async {
                    loop {
                        tokio::time::sleep(CANCEL_LOOK).await;
                        if state.store.get_run(run.id).await.is_ok_and(|r| r.cancel_requested) {
                            break;
                        }
                    }
                } => {
                    return cancel_waiting(state, run, steps).await;
                }
            }
        }
    };
    let production = state.store.get_deployment(context.deployment.id).await?;
    if production.current_revision != Some(context.revision.id) {
        let message = "production serves another revision now; its own catch-up takes over";
        return finish_early(state, run, steps, message.to_owned()).await;
    }
    let plan = match catch_up::plan(state, &production, &context.snapshot).await {
        Ok(plan) => plan,
        Err(error) => {
            let message = format!("deciding the catch-up failed: {}", error.message);
            return finish_early(state, run, steps, message).await;
        }
    };
    // The decision again, on what is there now (a branch may have built since the launch).
    let mut promotions = Vec::new();
    let mut rebuilds = Vec::new();
    for (index, step) in steps.iter_mut().enumerate() {
        match plan.catch_up.action(&step.asset_key) {
            Some(action @ Action::Promote { .. }) => {
                describe_step(step, action, &plan);
                promotions.push(index);
            }
            Some(action @ Action::Rebuild { .. }) => {
                describe_step(step, action, &plan);
                rebuilds.push(index);
            }
            Some(Action::UpToDate) | None => {
                step.action = Some(UP_TO_DATE.to_owned());
                step.promoted_from = None;
                step.status = StepStatus::Skipped;
                step.finished_at = Some(now());
            }
        }
    }
    // Every step's decision in one write: a catch-up launched while another one ran can find
    // hundreds of its steps up to date by now.
    let nothing_to_do = "production's table is up to date now: nothing to do\n";
    let decided: Vec<(&RunStep, &str)> = steps
        .iter()
        .map(|step| {
            let log = if step.action.as_deref() == Some(UP_TO_DATE) { nothing_to_do } else { "" };
            (step, log)
        })
        .collect();
    state.store.update_steps(&decided).await?;
    let unplanned: Vec<String> = plan
        .catch_up
        .steps()
        .filter(|d| !steps.iter().any(|s| s.asset_key == d.key))
        .map(|d| d.key.to_string())
        .collect();
    if !unplanned.is_empty() {
        tracing::warn!(
            "catch-up run {}: {} more asset(s) need catching up since it was launched ({}); the next catch-up takes them",
            run.id.0,
            unplanned.len(),
            unplanned.join(", ")
        );
    }
    let canceled = || async {
        *cancelled.borrow() || state.store.get_run(run.id).await.is_ok_and(|r| r.cancel_requested)
    };
    let schema = context.target.production.clone();
    let archive = ArchiveId(run.id.0);
    let mut sources = BTreeSet::new();

    if !promotions.is_empty() && !canceled().await {
        let started = Instant::now();
        let mut moves = Vec::with_capacity(promotions.len());
        for &index in &promotions {
            let step = &mut steps[index];
            step.status = StepStatus::Running;
            step.started_at = Some(now());
            let action = plan.catch_up.action(&step.asset_key).expect("planned");
            let source = plan.source(action).expect("a promotion has its source");
            moves.push(Promotion {
                key: step.asset_key.clone(),
                from: state.target(&source.deployment).schema,
            });
        }
        let running: Vec<(&RunStep, &str)> =
            promotions.iter().map(|&index| (&steps[index], "")).collect();
        state.store.update_steps(&running).await?;
        match state.warehouse.promote(&schema, archive, &moves, now()).await {
            Ok(()) => {
                let each = started.elapsed().as_millis() as i64 / promotions.len() as i64;
                let mut logs = Vec::with_capacity(promotions.len());
                for &index in &promotions {
                    let step = &mut steps[index];
                    let action = plan.catch_up.action(&step.asset_key).expect("planned");
                    let source = plan.source(action).expect("a promotion has its source");
                    sources.insert(source.deployment.id);
                    let reads = context.reads.lock().expect("never poisoned").production().clone();
                    let recorded = catch_up::record_promotion(
                        state,
                        &production,
                        run.id,
                        &context.revision.commit.sha,
                        &step.asset_key,
                        source,
                        &reads,
                        each,
                    )
                    .await;
                    step.finished_at = Some(now());
                    let text = match recorded {
                        Ok(id) => {
                            recorded_read(context, &step.asset_key, id);
                            step.status = StepStatus::Succeeded;
                            step.row_count = source.materialization.materialization.row_count;
                            format!(
                                "promoted {}'s table (run {}, commit {}) into {schema} without running the asset's code; production's previous table is kept in the archive of catch-up run {} for a rollback\n",
                                source.deployment.name,
                                source.materialization.materialization.run_id.0,
                                source.materialization.materialization.commit.short(),
                                run.id.0
                            )
                        }
                        Err(error) => {
                            step.status = StepStatus::Failed;
                            let message =
                                format!("promoted, but recording it failed: {}", error.message);
                            let text = format!("error: {message}\n");
                            step.error = Some(message);
                            text
                        }
                    };
                    logs.push(log_text(context, &text));
                }
                // The promoted steps' outcomes and logs in one write (each promotion's own
                // record is its materialization, written above).
                let outcomes: Vec<(&RunStep, &str)> = promotions
                    .iter()
                    .zip(&logs)
                    .map(|(&index, log)| (&steps[index], log.as_str()))
                    .collect();
                state.store.update_steps(&outcomes).await?;
            }
            Err(error) => {
                // Nothing moved: the warehouse refused the whole transaction. Rebuild them.
                tracing::warn!(
                    "catch-up run {}: promotion refused ({error}); rebuilding",
                    run.id.0
                );
                for &index in &promotions {
                    let step = &mut steps[index];
                    step.action = Some(format!("built (the promotion failed: {error})"));
                    step.promoted_from = None;
                    step.status = StepStatus::Pending;
                    step.started_at = None;
                }
                let log = log_text(context, &format!("promotion refused: {error}\n"));
                let refused: Vec<(&RunStep, &str)> =
                    promotions.iter().map(|&index| (&steps[index], log.as_str())).collect();
                state.store.update_steps(&refused).await?;
                rebuilds.extend(promotions.iter().copied());
                rebuilds.sort_unstable();
            }
        }
    }

    if !rebuilds.is_empty() && !canceled().await {
        let keys: Vec<_> = rebuilds.iter().map(|&i| steps[i].asset_key.clone()).collect();
        match state.warehouse.archive(&schema, archive, &keys, now()).await {
            Err(error) => {
                let message = format!(
                    "production's table could not be kept for a rollback ({error}); not rebuilt"
                );
                for &index in &rebuilds {
                    let step = &mut steps[index];
                    step.status = StepStatus::Failed;
                    step.finished_at = Some(now());
                    append_log(context, step, &format!("error: {message}\n")).await;
                    step.error = Some(message.clone());
                    state.store.update_step(step).await?;
                }
            }
            Ok(()) => {
                let mut built: Vec<RunStep> = rebuilds.iter().map(|&i| steps[i].clone()).collect();
                if location.kind() == "native" {
                    let selected = keys.iter().cloned().collect();
                    let sub_plan = RunPlan::new(&context.snapshot, &selected);
                    // The sub-plan keeps the run's (topological) order.
                    debug_assert!(sub_plan.steps.iter().map(|p| &p.key).eq(keys.iter()));
                    let mut statuses: Vec<StepStatus> = built.iter().map(|s| s.status).collect();
                    run_native(context, &sub_plan, &mut built, &mut statuses, &cancelled).await?;
                } else {
                    let snapshot = context.snapshot.clone();
                    build_with_tool(context, location, &snapshot, &mut built, cancelled.clone())
                        .await?;
                }
                for (&index, step) in rebuilds.iter().zip(built) {
                    steps[index] = step;
                }
            }
        }
    }

    // Whatever was not started (a cancel) ends canceled.
    let canceled = canceled().await;
    for step in steps.iter_mut().filter(|s| !s.status.is_finished()) {
        step.status = StepStatus::Canceled;
        step.finished_at = Some(now());
        state.store.update_step(step).await?;
    }
    state.cancel_switches.lock().expect("never poisoned").remove(&run.id);
    let work: Vec<&RunStep> =
        steps.iter().filter(|s| s.action.as_deref() != Some(UP_TO_DATE)).collect();
    let succeeded = !canceled && work.iter().all(|s| s.status == StepStatus::Succeeded);
    let failed: Vec<String> = work
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .map(|s| match s.error.as_deref().and_then(|e| e.lines().find(|l| !l.trim().is_empty())) {
            Some(line) => format!("{} ({})", s.asset_key, line.trim()),
            None => s.asset_key.to_string(),
        })
        .collect();
    let error = (!succeeded).then(|| match (canceled, failed.is_empty()) {
        (true, _) => "canceled".to_owned(),
        (false, true) => "some steps did not finish".to_owned(),
        (false, false) => format!("failed: {}", failed.join(", ")),
    });
    report(state, &run, succeeded, error).await?;
    let promoted = steps
        .iter()
        .filter(|s| s.promoted_from.is_some() && s.status == StepStatus::Succeeded)
        .count();
    tracing::info!(
        "catch-up run {} of {}/prod finished: {promoted} promoted, {} rebuilt",
        run.id.0,
        production.repository,
        work.iter()
            .filter(|s| s.promoted_from.is_none() && s.status == StepStatus::Succeeded)
            .count()
    );
    state.notices.send(Notice::RunFinished { deployment: production.id });
    state.notices.send(Notice::CatchUpFinished {
        production: production.id,
        run: run.id,
        sources: sources.into_iter().collect(),
    });
    if let Err(error) = catch_up::release_holds(state, &production.repository).await {
        tracing::warn!(
            "releasing merged branches after catch-up run {}: {}",
            run.id.0,
            error.message
        );
    }
    Ok(())
}
