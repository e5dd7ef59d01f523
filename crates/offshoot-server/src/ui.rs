//! The web UI served at `/`. Not implemented yet: the router is empty.

use axum::Router;

use crate::state::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
}
