//! The Offshoot server: REST API, deploy pipeline, branch deployment lifecycle, runs and local
//! watch mode, on injected `Store` and `Warehouse` implementations (the binary picks them).
//!
//! Three layers with arrows pointing one way, `http` → `service` → `adapters`, all on the
//! foundation (`config`, `state`, `notices`, ...); ARCHITECTURE.md draws them.
//!
//! `router` builds the HTTP app without a socket (tests call it directly); `serve` reconciles
//! after a restart, starts the background workers and serves until `shutdown` resolves.

// Foundation: what every layer may use.
pub mod changes;
pub mod clock;
pub mod config;
pub mod notices;
pub mod secret;
pub mod state;
pub mod variables;

// Adapters: the world outside (git, the project's code, mirrors, forges); foundation only.
pub mod adapters;
// Services: the deployments, their deploys, runs and upkeep; adapters and foundation, no HTTP.
pub mod service;
// HTTP: the routes, their extractors and DTOs; everything below.
pub mod http;

use std::future::Future;

pub use config::{ApiToken, OnDeploy, RepositoryConfig, Role, ServerConfig, WatchConfig};
pub use http::router;
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
    match adapters::confine::describe(&state) {
        (true, text) => tracing::info!("{text}"),
        (false, text) => tracing::warn!("{text}"),
    }
    service::maintenance::reconcile(&state).await.map_err(|e| ServeError::Reconcile(e.message))?;
    let mut workers = tokio::task::JoinSet::new();
    // Subscribers first, so they hear everything the others announce.
    workers.spawn(service::feedback::worker(state.clone()));
    workers.spawn(service::data_diff::worker(state.clone()));
    workers.spawn(service::catch_up::worker(state.clone()));
    workers.spawn(service::deployer::worker(state.clone()));
    workers.spawn(service::runner::executor(state.clone()));
    workers.spawn(service::maintenance::maintenance_loop(state.clone()));
    workers.spawn(service::maintenance::heartbeat(state.clone()));
    workers.spawn(service::intake::intake_worker(state.clone()));
    workers.spawn(service::schedules::worker(state.clone()));
    workers.spawn({
        let state = state.clone();
        async move { service::remotes::prepare_all(&state).await }
    });
    for repo in &state.config.repositories {
        if let Some(watch) = &repo.watch {
            workers.spawn(service::watch::watch_loop(state.clone(), repo.clone(), watch.clone()));
        }
    }
    let app = router(state.clone());
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    workers.abort_all();
    result.map_err(ServeError::Http)
}
