//! Git host webhooks (`POST /hooks/github`, `POST /hooks/gitlab`). Not implemented yet: the
//! router is empty, so these paths answer 404.

use axum::Router;

use crate::state::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
}
