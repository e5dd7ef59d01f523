//! `GET /api/v1/events`: live updates as server-sent events. The stream sends `change` whenever
//! a deployment's lifecycle moves (every lifecycle write bumps its version: revisions, closes,
//! runs) or a step of an active run changes or writes to its log, and `ready` once at the start.
//! Clients then refetch what they show; they poll only while the stream is down.
//!
//! Each stream watches the store itself (one aggregate read per tick, `Store::activity`), so it also sees what other
//! servers sharing the store did, which an in-process notification would miss. A lifecycle write
//! on this server (`Notices::lifecycle_written`) wakes every stream at once, so waiting clients (`--wait` in the CLI)
//! hear of it within milliseconds instead of at the next tick.

use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use offshoot_store::{Activity, StoreResult};

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

/// What a client's view depends on, in a form that changes whenever that view would: one
/// aggregate read of the store, however many steps the active runs have.
async fn pulse(state: &AppState) -> StoreResult<Activity> {
    state.store.activity().await
}

async fn events(
    State(state): State<SharedState>,
    _: Reader,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    // (state, nudges, the last pulse sent; None before the first event). Subscribed before the
    // first pulse, so a write between that pulse and the first wait still wakes the stream.
    let nudges = state.notices.lifecycle_writes();
    let start = (state, nudges, None::<Activity>);
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
