//! `GET /api/v1/events`: live updates as server-sent events. The stream sends `change` whenever
//! a deployment's lifecycle moves (every lifecycle write bumps its version: revisions, closes,
//! runs) or a step of an active run changes or writes to its log, and `ready` once at the start.
//! Clients then refetch what they show; they poll only while the stream is down.
//!
//! Each stream watches the store itself (a few cheap reads per tick), so it also sees what other
//! servers sharing the store did, which an in-process notification would miss.

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
    // (state, the last pulse sent; None before the first event)
    let stream = stream::unfold((state, None::<String>), |(state, last)| async move {
        loop {
            if last.is_some() {
                tokio::time::sleep(TICK).await;
            }
            // A store that fails for a moment just skips a tick; the client keeps its data.
            let Ok(now) = pulse(&state).await else {
                tokio::time::sleep(TICK).await;
                continue;
            };
            match &last {
                None => {
                    return Some((
                        Ok(Event::default().event("ready").data("{}")),
                        (state, Some(now)),
                    ))
                }
                Some(previous) if *previous != now => {
                    return Some((
                        Ok(Event::default().event("change").data("{}")),
                        (state, Some(now)),
                    ))
                }
                Some(_) => {}
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
