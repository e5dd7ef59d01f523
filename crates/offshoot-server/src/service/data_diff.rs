//! Data diffs of a branch deployment's assets against production (the warehouse computes them,
//! see `offshoot_warehouse::data_diff`): one asset in full, or a one-line summary of every asset
//! the branch built. Results are cached per pair of materializations (the newest run that built
//! the asset in the branch, and in production) and options, and computed after every branch run
//! for what it built, so pages and the pull-request comment find them ready.

use offshoot_core::{AssetKey, DeploymentKind, DeploymentName};
use offshoot_store::{Deployment, Materialization};
use offshoot_warehouse::data_diff::{DataDiff, DiffOptions, KeyRequest};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::adapters::project;
use crate::notices::Notice;
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::{AppState, DiffCacheKey, SharedState};

/// The state of an asset's data in the branch against production.
pub fn state_of(diff: &DataDiff) -> &'static str {
    match (diff.production_rows.is_some(), diff.branch_rows.is_some()) {
        (true, true) => "compared",
        (false, true) => "new_in_branch",
        (true, false) => "not_built_in_branch",
        (false, false) => "not_built",
    }
}

/// The newest materializations of `asset` in the branch and in production.
async fn materializations(
    state: &AppState,
    deployment: &Deployment,
    asset: &AssetKey,
) -> ServiceResult<(Option<Materialization>, Option<Materialization>)> {
    let branch =
        state.store.list_materializations(deployment.id, Some(asset), 1).await?.into_iter().next();
    let production = match state
        .store
        .find_deployment(&deployment.repository, &DeploymentName::production())
        .await?
    {
        Some(production) => state
            .store
            .list_materializations(production.id, Some(asset), 1)
            .await?
            .into_iter()
            .next(),
        None => None,
    };
    Ok((branch, production))
}

/// What a reader must know about the production table a diff compared with: production's
/// table is the one it has now, which a production run may have rebuilt after the branch built
/// its own (the branch was then built against an older production).
fn production_note(
    branch: Option<&Materialization>,
    production: Option<&Materialization>,
) -> Option<String> {
    let (branch, production) = (branch?, production?);
    (production.created_at > branch.created_at).then(|| {
        format!(
            "production's table was rebuilt by run {} after the branch built its own (run {}): the diff compares with production's table as it is now",
            production.run_id.0, branch.run_id.0
        )
    })
}

/// The diff of `asset` (cached), with the runs it compares.
pub async fn compute(
    state: &AppState,
    deployment: &Deployment,
    asset: &AssetKey,
    options: &DiffOptions,
) -> ServiceResult<(std::sync::Arc<DataDiff>, (Option<i64>, Option<i64>))> {
    if deployment.kind != DeploymentKind::Branch {
        return Err(ServiceError::invalid(
            "not_a_branch_deployment",
            format!(
                "`{}` is production; a data diff compares a branch deployment with it",
                deployment.name
            ),
        ));
    }
    let options = &DiffOptions { row_limit: state.config.data_diff_row_limit, ..options.clone() };
    let (branch_materialization, production_materialization) =
        materializations(state, deployment, asset).await?;
    let runs = (
        branch_materialization.as_ref().map(|m| m.run_id.0),
        production_materialization.as_ref().map(|m| m.run_id.0),
    );
    let key = DiffCacheKey {
        deployment: deployment.id.0,
        asset: asset.to_string(),
        branch_run: runs.0,
        production_run: runs.1,
        options: format!("{:?}", options),
    };
    if let Some(diff) = state.data_diffs.get(&key) {
        return Ok((diff, runs));
    }
    // A path key's table (a Dagster asset's) is named like its last part.
    let table = asset.parts().last().unwrap_or_default().to_owned();
    let diff = state
        .warehouse
        .data_diff(&state.target(deployment), &table, options)
        .await
        .map_err(ServiceError::from)?;
    let mut diff = diff;
    if diff.production_rows.is_some() && diff.branch_rows.is_some() {
        diff.notes.extend(production_note(
            branch_materialization.as_ref(),
            production_materialization.as_ref(),
        ));
    }
    let diff = std::sync::Arc::new(diff);
    // Only diffs of recorded materializations are cached: an unrecorded table may still change.
    if runs.0.is_some() || diff.branch_rows.is_none() {
        state.data_diffs.put(key, diff.clone());
    }
    Ok((diff, runs))
}

/// The declared grain of `asset` in the deployment's serving revision; `None` if it has no such
/// asset.
pub async fn grain_of(
    state: &AppState,
    deployment: &Deployment,
    asset: &AssetKey,
) -> ServiceResult<Option<Vec<String>>> {
    let Some(revision_id) = deployment.current_revision else { return Ok(None) };
    let revision = state.store.get_revision(revision_id).await?;
    let repo = state
        .repository(&deployment.repository)
        .ok_or_else(|| ServiceError::internal("the repository is not configured"))?;
    let loaded = project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ServiceError::internal)?;
    let project = loaded
        .as_ref()
        .as_ref()
        .map_err(|_| ServiceError::internal("the serving revision does not load"))?;
    Ok(project.snapshot.get(asset).map(|a| a.grain.clone()))
}

/// One line per asset the branch built: what the pull-request comment and the deployment page
/// show.
#[derive(Serialize, Clone)]
pub struct DiffSummaryJson {
    pub asset: String,
    pub state: &'static str,
    pub production_rows: Option<u64>,
    pub branch_rows: Option<u64>,
    pub only_in_production: Option<u64>,
    pub only_in_branch: Option<u64>,
    pub changed: Option<u64>,
    pub columns_added: usize,
    pub columns_removed: usize,
    pub key_source: &'static str,
    /// The counts by key are a sample's (above `[data_diff] row_limit`).
    pub sampled: bool,
}

/// Summaries for every asset of the serving revision the branch has a table of.
pub async fn summaries(
    state: &AppState,
    deployment: &Deployment,
) -> ServiceResult<Vec<DiffSummaryJson>> {
    let Some(revision_id) = deployment.current_revision else { return Ok(Vec::new()) };
    let revision = state.store.get_revision(revision_id).await?;
    let repo = state
        .repository(&deployment.repository)
        .ok_or_else(|| ServiceError::internal("the repository is not configured"))?;
    let loaded = project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ServiceError::internal)?;
    let Ok(project) = loaded.as_ref().as_ref() else { return Ok(Vec::new()) };
    let own: std::collections::BTreeSet<String> = state
        .warehouse
        .own_tables(&state.target(deployment))
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut out = Vec::new();
    for asset in project.snapshot.assets().filter(|a| a.kind.is_materializable()) {
        let table = asset.key.parts().last().unwrap_or_default();
        if !own.contains(table) {
            continue;
        }
        let key = if asset.grain.is_empty() {
            KeyRequest::Infer
        } else {
            KeyRequest::Declared(asset.grain.clone())
        };
        let options = DiffOptions { key, sample: 0, tolerance: 0.0, row_limit: None };
        let (diff, _) = compute(state, deployment, &asset.key, &options).await?;
        out.push(DiffSummaryJson {
            asset: asset.key.to_string(),
            state: state_of(&diff),
            production_rows: diff.production_rows,
            branch_rows: diff.branch_rows,
            only_in_production: diff.rows.as_ref().map(|r| r.only_in_production),
            only_in_branch: diff.rows.as_ref().map(|r| r.only_in_branch),
            changed: diff.rows.as_ref().map(|r| r.changed),
            columns_added: diff.schema.added.len(),
            columns_removed: diff.schema.removed.len(),
            key_source: diff.key_source.as_str(),
            sampled: diff.sampled.is_some(),
        });
    }
    Ok(out)
}

/// Runs forever: after every branch run, computes the summaries of what it built (filling the
/// cache) and announces them, so the pull-request comment shows them.
pub async fn worker(state: SharedState) {
    let mut notices = state.notices.subscribe();
    loop {
        let deployment = match notices.recv().await {
            Ok(Notice::RunFinished { deployment }) => deployment,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("data diffs fell behind and missed {missed} notice(s)");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !state.config.data_diff_auto {
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let result = async {
                let deployment = state.store.get_deployment(deployment).await?;
                if deployment.kind != DeploymentKind::Branch {
                    return Ok(false);
                }
                summaries(&state, &deployment).await.map(|_| true)
            }
            .await;
            match result {
                Ok(true) => state.notices.send(Notice::DataDiffsReady { deployment }),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!("data diffs of deployment {}: {}", deployment.0, error.message)
                }
            }
        });
    }
}
