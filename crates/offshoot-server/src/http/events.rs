//! `GET /api/v1/events`: live updates as server-sent events. The stream sends `change` whenever
//! a deployment's lifecycle moves (every lifecycle write bumps its version: revisions, closes,
//! runs) or a step of an active run changes or writes to its log, and `ready` once at the start.
//! Clients then refetch what they show; they poll only while the stream is down.
//!
//! Each stream watches the store itself (a few cheap reads per tick), so it also sees what other
//! servers sharing the store did, which an in-process notification would miss. A lifecycle write
//! on this server (`Notices::lifecycle_written`) wakes every stream at once, so waiting clients (`--wait` in the CLI)
//! hear of it within milliseconds instead of at the next tick.

use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use offshoot_core::RunStatus;
use offshoot_store::{DeploymentFilter, RunFilter, StoreResult};

use crate::http::auth::Reader;
use crate::state::{AppState, SharedState};

/// How often a stream looks for changes: well under the UI's old polling intervals (1–3 s).
const TICK: Duration = Duration::from_millis(400);

/// Until the next tick or the next nudge, whichever comes first.
async fn next_look(nudges: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::select! {
        _ = tokio::time::sleep(TICK) => {}
        _ = nudges.changed() => {}
    }
}

pub fn router() -> Router<SharedState> {
    Router::new().route("/api/v1/events", get(events))
}

/// What a client's view depends on, in a form that changes whenever that view would.
async fn pulse(state: &AppState) -> StoreResult<String> {
    let mut pulse = String::new();
    for deployment in state
        .store
        .list_deployments(&DeploymentFilter { repository: None, include_closed: true })
        .await?
    {
        pulse.push_str(&format!("d{}:{};", deployment.id.0, deployment.version));
    }
    let active = RunFilter {
        deployment_id: None,
        statuses: vec![RunStatus::Queued, RunStatus::Running],
        limit: 0,
    };
    for run in state.store.list_runs(&active).await? {
        pulse.push_str(&format!("r{}:{};", run.id.0, run.status.as_str()));
        for step in state.store.list_steps(run.id).await? {
            pulse.push_str(&format!("s{}:{}:{};", step.id.0, step.status.as_str(), step.log.len()));
        }
    }
    Ok(pulse)
}

async fn events(
    State(state): State<SharedState>,
    _: Reader,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    // (state, nudges, the last pulse sent; None before the first event). Subscribed before the
    // first pulse, so a write between that pulse and the first wait still wakes the stream.
    let nudges = state.notices.lifecycle_writes();
    let start = (state, nudges, None::<String>);
    let stream = stream::unfold(start, |(state, mut nudges, last)| async move {
        loop {
            if last.is_some() {
                next_look(&mut nudges).await;
            }
            // A store that fails for a moment just skips a tick; the client keeps its data.
            let Ok(now) = pulse(&state).await else {
                next_look(&mut nudges).await;
                continue;
            };
            match &last {
                None => {
                    return Some((
                        Ok(Event::default().event("ready").data("{}")),
                        (state, nudges, Some(now)),
                    ))
                }
                Some(previous) if *previous != now => {
                    return Some((
                        Ok(Event::default().event("change").data("{}")),
                        (state, nudges, Some(now)),
                    ))
                }
                Some(_) => {}
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
