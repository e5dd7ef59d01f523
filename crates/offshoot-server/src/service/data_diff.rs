//! Data diffs of a branch deployment's assets against production (the warehouse computes them,
//! see `offshoot_warehouse::data_diff`): one asset in full, or a one-line summary of every asset
//! the branch built. Results are cached per pair of materializations (the newest run that built
//! the asset in the branch, and in production) and options in the store, so they survive a
//! restart, and computed after every branch run for what it built, so pages and the
//! pull-request comment find them ready. A diff compares with production's table as it is now
//! (the default), as it was when the branch built (`Against::BuiltAgainst`) or as a production
//! run built it; production rebuilds its tables in place, so when that table has been replaced
//! the diff compares with the current one and says so in a note.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use offshoot_core::{AssetKey, DeploymentKind, DeploymentName, RunStatus, UnixMillis};
use offshoot_store::{
    DataDiffKey, Deployment, DeploymentId, MaterializationId, RecordedMaterialization, RunFilter,
    RunId, StoredDataDiff, DATA_DIFF_CACHE_ENTRIES,
};
use offshoot_warehouse::data_diff::{DataDiff, DiffOptions, KeyRequest};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::adapters::project;
use crate::notices::Notice;
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::stored_diff;
use crate::state::{now, AppState, Metrics, SharedState};

/// The state of an asset's data in the branch against production.
pub fn state_of(diff: &DataDiff) -> &'static str {
    match (diff.production_rows.is_some(), diff.branch_rows.is_some()) {
        (true, true) => "compared",
        (false, true) => "new_in_branch",
        (true, false) => "not_built_in_branch",
        (false, false) => "not_built",
    }
}

/// What the branch's table is compared with: a production table of the same asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    /// Production's table as it is now (the default).
    Current,
    /// Production's table as it was when the branch built its own (recorded with the branch's
    /// materialization).
    BuiltAgainst,
    /// The table a given production run built.
    Run(RunId),
}

impl Against {
    /// `current`, `built-against` or a production run's id.
    pub fn parse(text: &str) -> Option<Against> {
        match text.trim() {
            "current" => Some(Against::Current),
            "built-against" => Some(Against::BuiltAgainst),
            other => {
                other.parse::<i64>().ok().filter(|id| *id > 0).map(|id| Against::Run(RunId(id)))
            }
        }
    }

    pub fn as_text(self) -> String {
        match self {
            Against::Current => "current".to_owned(),
            Against::BuiltAgainst => "built-against".to_owned(),
            Against::Run(run) => run.0.to_string(),
        }
    }
}

/// A diff with what it compared: the materializations (by their runs), what was asked and
/// what was used (production's current table when the one asked for is gone), and whether it
/// came from the cache.
pub struct ComputedDiff {
    pub diff: DataDiff,
    pub branch_run: Option<i64>,
    pub production_run: Option<i64>,
    pub requested: Against,
    /// What the diff compared with: the request, or `Current` when that table is gone.
    pub compared: Against,
    pub cached: bool,
    pub computed_at: UnixMillis,
}

/// The current (last recorded) materialization of `asset` in `deployment`, with its provenance.
async fn current_materialization(
    state: &AppState,
    deployment: DeploymentId,
    asset: &AssetKey,
) -> ServiceResult<Option<RecordedMaterialization>> {
    Ok(state.store.materialization_before(deployment, asset, MaterializationId(i64::MAX)).await?)
}

/// What a reader must know about the production table a diff compared with: production's
/// table is the one it has now, which a production run may have rebuilt after the branch built
/// its own (the branch was then built against an older production).
fn production_note(
    branch: Option<&RecordedMaterialization>,
    production: Option<&RecordedMaterialization>,
) -> Option<String> {
    let (branch, production) = (branch?, production?);
    let built_against = branch.provenance.as_ref().and_then(|p| p.built_against.as_ref());
    let rebuilt = match built_against {
        Some(against) => against.id != production.id,
        None => production.materialization.created_at > branch.materialization.created_at,
    };
    rebuilt.then(|| {
        format!(
            "production's table was rebuilt by run {} after the branch built its own (run {}): the diff compares with production's table as it is now",
            production.materialization.run_id.0, branch.materialization.run_id.0
        )
    })
}

/// Why the production table asked for cannot be compared with, so the diff compares with
/// production's current table; `None` when the one asked for is the current one.
async fn fallback_note(
    state: &AppState,
    production_id: Option<DeploymentId>,
    asset: &AssetKey,
    against: Against,
    branch: Option<&RecordedMaterialization>,
    production: Option<&RecordedMaterialization>,
) -> ServiceResult<Option<String>> {
    let current_run = production.map(|p| p.materialization.run_id.0);
    let now_text = match current_run {
        Some(run) => format!("production's current table (run {run})"),
        None => "production as it is now (no recorded table)".to_owned(),
    };
    match against {
        Against::Current => Ok(None),
        Against::BuiltAgainst => {
            let Some(branch) = branch else {
                return Ok(Some(format!(
                    "the branch has no recorded build of `{asset}`, so nothing says what it was built against: the diff compares with {now_text}"
                )));
            };
            let built_against = branch.provenance.as_ref().and_then(|p| p.built_against.as_ref());
            Ok(match built_against {
                None => Some(format!(
                    "the branch's table (run {}) was built when production had no recorded table of `{asset}` (or before Offshoot recorded it): the diff compares with {now_text}",
                    branch.materialization.run_id.0
                )),
                Some(against) if production.is_some_and(|p| p.id == against.id) => None,
                // Production rebuilds a table in place: the one the branch saw is gone.
                Some(against) => Some(format!(
                    "production's table the branch was built against (run {}) has been replaced since: the diff compares with {now_text}",
                    against.run_id.0
                )),
            })
        }
        Against::Run(run) => {
            if current_run == Some(run.0) {
                return Ok(None);
            }
            let built = match production_id {
                Some(id) => state.store.list_materializations(id, Some(asset), 0).await?,
                None => Vec::new(),
            };
            if !built.iter().any(|m| m.run_id == run) {
                return Err(ServiceError::not_found(
                    "run_not_found",
                    format!("production's run {} did not build `{asset}`", run.0),
                ));
            }
            Ok(Some(format!(
                "production's table built by run {} has been replaced since: the diff compares with {now_text}",
                run.0
            )))
        }
    }
}

/// The cache key of a diff of these materializations with `options`.
fn cache_key(
    production: &RecordedMaterialization,
    branch: &RecordedMaterialization,
    options: &DiffOptions,
) -> DataDiffKey {
    DataDiffKey {
        production: production.id,
        branch: branch.id,
        key_columns: match &options.key {
            KeyRequest::Declared(columns) => Some(columns.clone()),
            KeyRequest::Infer => None,
        },
        tolerance: options.tolerance,
        row_limit: options.row_limit,
        sample: u32::try_from(options.sample).unwrap_or(u32::MAX),
        format_version: stored_diff::FORMAT_VERSION,
    }
}

/// The diff of `asset` against the production table `against` names (production's current
/// one when that is gone, said in a note). Diffs of two recorded materializations are cached in
/// the store; an entry that does not decode is recomputed.
pub async fn compute(
    state: &AppState,
    deployment: &Deployment,
    asset: &AssetKey,
    options: &DiffOptions,
    against: Against,
) -> ServiceResult<ComputedDiff> {
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
    let branch = current_materialization(state, deployment.id, asset).await?;
    let production_id = state
        .store
        .find_deployment(&deployment.repository, &DeploymentName::production())
        .await?
        .map(|p| p.id);
    let production = match production_id {
        Some(id) => current_materialization(state, id, asset).await?,
        None => None,
    };
    let fallback =
        fallback_note(state, production_id, asset, against, branch.as_ref(), production.as_ref())
            .await?;
    let compared = if fallback.is_some() { Against::Current } else { against };
    let key = branch.as_ref().zip(production.as_ref()).map(|(b, p)| cache_key(p, b, options));
    let mut cached = None;
    if let Some(key) = &key {
        match state.store.cached_data_diff(key).await {
            Ok(Some(stored)) => match stored_diff::decode(&stored.diff_json) {
                Some(diff) => cached = Some((diff, stored.computed_at)),
                None => tracing::warn!(
                    "a cached data diff of {asset} does not decode (corrupt or of another version): computing it again"
                ),
            },
            Ok(None) => {}
            Err(error) => tracing::warn!("reading the data diff cache: {error}"),
        }
    }
    let was_cached = cached.is_some();
    let (mut diff, computed_at) = match cached {
        Some(found) => found,
        None => {
            // A path key's table (a Dagster asset's) is named like its last part.
            let table = asset.parts().last().unwrap_or_default().to_owned();
            Metrics::increment(&state.metrics.data_diffs_computed);
            let diff = state
                .warehouse
                .data_diff(&state.target(deployment), &table, options)
                .await
                .map_err(ServiceError::from)?;
            let computed_at = now();
            // Only diffs of two recorded materializations are cached: an unrecorded table may
            // still change.
            if let Some(key) = &key {
                let stored = StoredDataDiff { diff_json: stored_diff::encode(&diff), computed_at };
                if let Err(error) =
                    state.store.cache_data_diff(key, &stored, DATA_DIFF_CACHE_ENTRIES).await
                {
                    tracing::warn!("caching the data diff of {asset}: {error}");
                }
            }
            (diff, computed_at)
        }
    };
    // Notes about what was compared depend on the request, so they are added after the cache.
    if diff.production_rows.is_some() && diff.branch_rows.is_some() {
        match fallback {
            Some(note) => diff.notes.push(note),
            None if compared == Against::Current => {
                diff.notes.extend(production_note(branch.as_ref(), production.as_ref()))
            }
            None => {}
        }
    } else {
        diff.notes.extend(fallback);
    }
    Ok(ComputedDiff {
        diff,
        branch_run: branch.as_ref().map(|m| m.materialization.run_id.0),
        production_run: production.as_ref().map(|m| m.materialization.run_id.0),
        requested: against,
        compared,
        cached: was_cached,
        computed_at,
    })
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
    Ok(summaries_unless(state, deployment, false).await?.unwrap_or_default())
}

/// [`summaries`]; with `yield_to_runs`, `None` as soon as a run of the deployment is queued or
/// running: it would rebuild the tables being compared, and its end starts the diffs again.
async fn summaries_unless(
    state: &AppState,
    deployment: &Deployment,
    yield_to_runs: bool,
) -> ServiceResult<Option<Vec<DiffSummaryJson>>> {
    let run_active = || async {
        let filter = RunFilter {
            deployment_id: Some(deployment.id),
            statuses: vec![RunStatus::Queued, RunStatus::Running],
            limit: 1,
        };
        state.store.list_runs(&filter).await.map(|runs| !runs.is_empty())
    };
    let Some(revision_id) = deployment.current_revision else { return Ok(Some(Vec::new())) };
    let revision = state.store.get_revision(revision_id).await?;
    let repo = state
        .repository(&deployment.repository)
        .ok_or_else(|| ServiceError::internal("the repository is not configured"))?;
    let loaded = project::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ServiceError::internal)?;
    let Ok(project) = loaded.as_ref().as_ref() else { return Ok(Some(Vec::new())) };
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
        if yield_to_runs && run_active().await? {
            return Ok(None);
        }
        let key = if asset.grain.is_empty() {
            KeyRequest::Infer
        } else {
            KeyRequest::Declared(asset.grain.clone())
        };
        let options = DiffOptions { key, sample: 0, tolerance: 0.0, row_limit: None };
        let diff = compute(state, deployment, &asset.key, &options, Against::Current).await?.diff;
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
    Ok(Some(out))
}

/// Runs forever: after every branch run, computes the summaries of what it built (filling the
/// cache) and announces them, so the pull-request comment shows them. Background work that
/// must not crowd out runs: one deployment's diffs at a time, a deployment's runs finishing
/// while its diffs are computed coalesce into one more pass, and a pass stops when a run of
/// the deployment is queued (that run's end starts the next).
pub async fn worker(state: SharedState) {
    let mut notices = state.notices.subscribe();
    // Deployments with a pass under way, each with whether a run finished since it began.
    let passes: Arc<Mutex<HashMap<DeploymentId, bool>>> = Arc::default();
    let turn = Arc::new(tokio::sync::Semaphore::new(1));
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
        {
            let mut passes = passes.lock().expect("never poisoned");
            if let Some(again) = passes.get_mut(&deployment) {
                *again = true;
                continue;
            }
            passes.insert(deployment, false);
        }
        let (state, passes, turn) = (state.clone(), passes.clone(), turn.clone());
        tokio::spawn(async move {
            loop {
                let Ok(permit) = turn.acquire().await else { return };
                let result = async {
                    let deployment = state.store.get_deployment(deployment).await?;
                    if deployment.kind != DeploymentKind::Branch {
                        return Ok(None);
                    }
                    summaries_unless(&state, &deployment, true).await
                }
                .await;
                drop(permit);
                match result {
                    Ok(Some(_)) => state.notices.send(Notice::DataDiffsReady { deployment }),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(
                            "data diffs of deployment {}: {}",
                            deployment.0,
                            error.message
                        )
                    }
                }
                let mut passes = passes.lock().expect("never poisoned");
                if passes.get(&deployment) == Some(&true) {
                    passes.insert(deployment, false);
                } else {
                    passes.remove(&deployment);
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn against_is_current_built_against_or_a_run_id() {
        for (text, expected) in [
            ("current", Some(Against::Current)),
            ("built-against", Some(Against::BuiltAgainst)),
            (" 42 ", Some(Against::Run(RunId(42)))),
            ("0", None),
            ("-3", None),
            ("Current", None),
            ("built_against", None),
            ("", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(Against::parse(text), expected, "{text:?}");
            if let Some(against) = expected {
                assert_eq!(Against::parse(&against.as_text()), Some(against), "round trip");
            }
        }
    }
}
