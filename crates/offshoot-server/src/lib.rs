//! The Offshoot server: REST API, deploy pipeline, branch deployment lifecycle, runs and local
//! watch mode, on injected `Store` and `Warehouse` implementations (the binary picks them).
//!
//! `router` builds the HTTP app without a socket (tests call it directly); `serve` reconciles
//! after a restart, starts the background workers and serves until `shutdown` resolves.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod changes;
pub mod config;
pub mod confine;
pub mod dagster_cloud;
pub mod data_diff;
pub mod deploy;
pub mod dto;
pub mod error;
pub mod events;
pub mod feedback;
pub mod git;
pub mod hooks;
pub mod lifecycle;
pub mod mirror;
pub mod openapi;
pub mod runs;
pub mod state;
pub mod ui;
pub mod variables;
pub mod watch;

use std::future::Future;

pub use api::router;
pub use config::{ApiToken, RepositoryConfig, Role, ServerConfig, WatchConfig};
pub use state::{AppState, SharedState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reconciling state at start-up: {0}")]
    Reconcile(String),
    #[error("serving HTTP: {0}")]
    Http(#[from] std::io::Error),
}

/// Reconciles, starts the deploy worker, run executor, TTL sweep and watchers, and serves the
/// API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: SharedState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    match confine::describe(&state) {
        (true, text) => tracing::info!("{text}"),
        (false, text) => tracing::warn!("{text}"),
    }
    lifecycle::reconcile(&state).await.map_err(|e| ServeError::Reconcile(e.message))?;
    let mut workers = tokio::task::JoinSet::new();
    workers.spawn(deploy::worker(state.clone()));
    workers.spawn(runs::executor(state.clone()));
    workers.spawn(lifecycle::maintenance_loop(state.clone()));
    workers.spawn(lifecycle::heartbeat(state.clone()));
    workers.spawn(hooks::intake_worker(state.clone()));
    workers.spawn({
        let state = state.clone();
        async move { mirror::prepare_all(&state).await }
    });
    for repo in &state.config.repositories {
        if let Some(watch) = &repo.watch {
            workers.spawn(watch::watch_loop(state.clone(), repo.clone(), watch.clone()));
        }
    }
    let app = router(state.clone());
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    workers.abort_all();
    result.map_err(ServeError::Http)
}
