//! Data diffs of a branch deployment's assets against production (the warehouse computes them,
//! see `offshoot_warehouse::data_diff`): one asset in full, or a one-line summary of every asset
//! the branch built. Results are cached per pair of materializations (the newest run that built
//! the asset in the branch, and in production) and options, and computed after every branch run
//! for what it built, so pages and the pull-request comment find them ready.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use offshoot_core::{AssetKey, DeploymentKind, DeploymentName};
use offshoot_store::Deployment;
use offshoot_warehouse::data_diff::{DataDiff, DiffOptions, KeyRequest, NumericStats};
use serde::{Deserialize, Serialize};

use crate::api::find_deployment;
use crate::auth::Reader;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, SharedState};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/deployments/{name}/assets/{key}/data-diff", get(asset_diff))
        .route("/api/v1/deployments/{name}/data-diffs", get(deployment_diffs))
}

/// Most cached diffs kept; the oldest go first.
const CACHE_ENTRIES: usize = 512;
/// Most rows a sample may ask for.
const MAX_SAMPLE: usize = 100;

/// Diffs already computed, by (deployment, asset, branch run, production run, options), with
/// the tick each was last used at; the tick counter first.
#[derive(Default)]
pub struct DiffCache {
    entries: Mutex<(u64, CacheEntries)>,
}

type CacheEntries = HashMap<CacheKey, (u64, std::sync::Arc<DataDiff>)>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    deployment: i64,
    asset: String,
    branch_run: Option<i64>,
    production_run: Option<i64>,
    options: String,
}

impl DiffCache {
    fn get(&self, key: &CacheKey) -> Option<std::sync::Arc<DataDiff>> {
        let mut entries = self.entries.lock().expect("never poisoned");
        entries.0 += 1;
        let tick = entries.0;
        entries.1.get_mut(key).map(|(used, diff)| {
            *used = tick;
            diff.clone()
        })
    }

    fn put(&self, key: CacheKey, diff: std::sync::Arc<DataDiff>) {
        let mut entries = self.entries.lock().expect("never poisoned");
        entries.0 += 1;
        let tick = entries.0;
        if entries.1.len() >= CACHE_ENTRIES {
            if let Some(oldest) =
                entries.1.iter().min_by_key(|(_, (used, _))| *used).map(|(k, _)| k.clone())
            {
                entries.1.remove(&oldest);
            }
        }
        entries.1.insert(key, (tick, diff));
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    repository: Option<String>,
    /// Comma-separated key columns; default the asset's declared grain, else inferred.
    key: Option<String>,
    sample: Option<usize>,
    tolerance: Option<f64>,
}

impl DiffQuery {
    fn options(&self, grain: &[String]) -> ApiResult<DiffOptions> {
        let key = match self.key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            Some(text) => KeyRequest::Declared(
                text.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect(),
            ),
            None if !grain.is_empty() => KeyRequest::Declared(grain.to_vec()),
            None => KeyRequest::Infer,
        };
        let sample = self.sample.unwrap_or(10);
        if sample > MAX_SAMPLE {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("`sample` is at most {MAX_SAMPLE}"),
            ));
        }
        let tolerance = self.tolerance.unwrap_or(0.0);
        if !tolerance.is_finite() || tolerance < 0.0 {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`tolerance` is a number of at least 0",
            ));
        }
        Ok(DiffOptions { key, sample, tolerance })
    }
}

/// The state of an asset's data in the branch against production.
fn state_of(diff: &DataDiff) -> &'static str {
    match (diff.production_rows.is_some(), diff.branch_rows.is_some()) {
        (true, true) => "compared",
        (false, true) => "new_in_branch",
        (true, false) => "not_built_in_branch",
        (false, false) => "not_built",
    }
}

#[derive(Serialize)]
pub struct DataDiffJson {
    asset: String,
    deployment: String,
    /// `compared`, `new_in_branch` (production has no table), `not_built_in_branch` (the branch
    /// reads production's), `not_built` (neither has one).
    state: &'static str,
    production_rows: Option<u64>,
    branch_rows: Option<u64>,
    /// The run that built the branch's table and production's, when known.
    branch_run: Option<i64>,
    production_run: Option<i64>,
    key: KeyJson,
    rows: Option<RowsJson>,
    schema: SchemaJson,
    columns: Vec<ColumnJson>,
    samples: SamplesJson,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct KeyJson {
    columns: Vec<String>,
    /// `declared`, `inferred` or `none`.
    source: &'static str,
    duplicates_in_production: u64,
    duplicates_in_branch: u64,
    nulls_in_production: u64,
    nulls_in_branch: u64,
}

#[derive(Serialize)]
struct RowsJson {
    only_in_production: u64,
    only_in_branch: u64,
    changed: u64,
    equal: u64,
}

#[derive(Serialize)]
struct ColumnTypeJson {
    name: String,
    data_type: String,
}

#[derive(Serialize)]
struct TypeChangeJson {
    name: String,
    production: String,
    branch: String,
}

#[derive(Serialize)]
struct SchemaJson {
    added: Vec<ColumnTypeJson>,
    removed: Vec<ColumnTypeJson>,
    type_changed: Vec<TypeChangeJson>,
    order_changed: bool,
}

#[derive(Serialize)]
struct StatsJson {
    sum: Option<String>,
    min: Option<String>,
    max: Option<String>,
    nulls: u64,
}

#[derive(Serialize)]
struct ColumnJson {
    name: String,
    /// Matched rows whose value is equal (keyed diffs), and that as a share of matched rows.
    equal: Option<u64>,
    equal_share: Option<f64>,
    production: Option<StatsJson>,
    branch: Option<StatsJson>,
}

#[derive(Serialize)]
struct CellJson {
    production: Option<String>,
    branch: Option<String>,
    changed: bool,
}

#[derive(Serialize)]
struct ChangedRowJson {
    key: Vec<Option<String>>,
    cells: Vec<CellJson>,
}

#[derive(Serialize)]
struct SamplesJson {
    columns: Vec<String>,
    added: Vec<Vec<Option<String>>>,
    removed: Vec<Vec<Option<String>>>,
    changed_columns: Vec<String>,
    changed: Vec<ChangedRowJson>,
}

fn stats_json(stats: &Option<NumericStats>) -> Option<StatsJson> {
    stats.as_ref().map(|s| StatsJson {
        sum: s.sum.clone(),
        min: s.min.clone(),
        max: s.max.clone(),
        nulls: s.nulls,
    })
}

fn diff_json(
    deployment: &Deployment,
    asset: &AssetKey,
    runs: (Option<i64>, Option<i64>),
    diff: &DataDiff,
) -> DataDiffJson {
    let matched = diff.rows.as_ref().map(|r| r.changed + r.equal);
    DataDiffJson {
        asset: asset.to_string(),
        deployment: deployment.name.to_string(),
        state: state_of(diff),
        production_rows: diff.production_rows,
        branch_rows: diff.branch_rows,
        branch_run: runs.0,
        production_run: runs.1,
        key: KeyJson {
            columns: diff.key.clone(),
            source: diff.key_source.as_str(),
            duplicates_in_production: diff.key_check.duplicates_in_production,
            duplicates_in_branch: diff.key_check.duplicates_in_branch,
            nulls_in_production: diff.key_check.nulls_in_production,
            nulls_in_branch: diff.key_check.nulls_in_branch,
        },
        rows: diff.rows.as_ref().map(|r| RowsJson {
            only_in_production: r.only_in_production,
            only_in_branch: r.only_in_branch,
            changed: r.changed,
            equal: r.equal,
        }),
        schema: SchemaJson {
            added: diff
                .schema
                .added
                .iter()
                .map(|c| ColumnTypeJson { name: c.name.clone(), data_type: c.data_type.clone() })
                .collect(),
            removed: diff
                .schema
                .removed
                .iter()
                .map(|c| ColumnTypeJson { name: c.name.clone(), data_type: c.data_type.clone() })
                .collect(),
            type_changed: diff
                .schema
                .type_changed
                .iter()
                .map(|(n, p, b)| TypeChangeJson {
                    name: n.clone(),
                    production: p.clone(),
                    branch: b.clone(),
                })
                .collect(),
            order_changed: diff.schema.order_changed,
        },
        columns: diff
            .columns
            .iter()
            .map(|c| ColumnJson {
                name: c.name.clone(),
                equal: c.equal,
                equal_share: c
                    .equal
                    .zip(matched)
                    .and_then(|(e, m)| (m > 0).then(|| e as f64 / m as f64)),
                production: stats_json(&c.production),
                branch: stats_json(&c.branch),
            })
            .collect(),
        samples: SamplesJson {
            columns: diff.samples.columns.clone(),
            added: diff.samples.added.clone(),
            removed: diff.samples.removed.clone(),
            changed_columns: diff.samples.changed_columns.clone(),
            changed: diff
                .samples
                .changed
                .iter()
                .map(|r| ChangedRowJson {
                    key: r.key.clone(),
                    cells: r
                        .cells
                        .iter()
                        .map(|(p, b, c)| CellJson {
                            production: p.clone(),
                            branch: b.clone(),
                            changed: *c,
                        })
                        .collect(),
                })
                .collect(),
        },
        notes: diff.notes.clone(),
    }
}

/// The newest runs that built `asset` in the branch and in production.
async fn materialization_runs(
    state: &AppState,
    deployment: &Deployment,
    asset: &AssetKey,
) -> ApiResult<(Option<i64>, Option<i64>)> {
    let branch = state
        .store
        .list_materializations(deployment.id, Some(asset), 1)
        .await?
        .first()
        .map(|m| m.run_id.0);
    let production = match state
        .store
        .find_deployment(&deployment.repository, &DeploymentName::production())
        .await?
    {
        Some(production) => state
            .store
            .list_materializations(production.id, Some(asset), 1)
            .await?
            .first()
            .map(|m| m.run_id.0),
        None => None,
    };
    Ok((branch, production))
}

/// The diff of `asset` (cached), with the runs it compares.
async fn compute(
    state: &AppState,
    deployment: &Deployment,
    asset: &AssetKey,
    options: &DiffOptions,
) -> ApiResult<(std::sync::Arc<DataDiff>, (Option<i64>, Option<i64>))> {
    if deployment.kind != DeploymentKind::Branch {
        return Err(ApiError::bad_request(
            "not_a_branch_deployment",
            format!(
                "`{}` is production; a data diff compares a branch deployment with it",
                deployment.name
            ),
        ));
    }
    let runs = materialization_runs(state, deployment, asset).await?;
    let key = CacheKey {
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
        .map_err(ApiError::from)?;
    let diff = std::sync::Arc::new(diff);
    // Only diffs of recorded materializations are cached: an unrecorded table may still change.
    if runs.0.is_some() || diff.branch_rows.is_none() {
        state.data_diffs.put(key, diff.clone());
    }
    Ok((diff, runs))
}

async fn asset_diff(
    State(state): State<SharedState>,
    _: Reader,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<DiffQuery>,
) -> ApiResult<Json<DataDiffJson>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    let missing =
        || ApiError::not_found("asset_not_found", format!("no asset `{key}` in `{name}`"));
    let asset_key = AssetKey::new(&key).map_err(|_| missing())?;
    let grain = grain_of(&state, &deployment, &asset_key).await?.ok_or_else(missing)?;
    let options = query.options(&grain)?;
    let (diff, runs) = compute(&state, &deployment, &asset_key, &options).await?;
    Ok(Json(diff_json(&deployment, &asset_key, runs, &diff)))
}

/// The declared grain of `asset` in the deployment's serving revision; `None` if it has no such
/// asset.
async fn grain_of(
    state: &AppState,
    deployment: &Deployment,
    asset: &AssetKey,
) -> ApiResult<Option<Vec<String>>> {
    let Some(revision_id) = deployment.current_revision else { return Ok(None) };
    let revision = state.store.get_revision(revision_id).await?;
    let repo = state
        .repository(&deployment.repository)
        .ok_or_else(|| ApiError::internal("the repository is not configured"))?;
    let loaded = crate::git::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ApiError::internal)?;
    let project = loaded
        .as_ref()
        .as_ref()
        .map_err(|_| ApiError::internal("the serving revision does not load"))?;
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
}

#[derive(Serialize)]
struct SummariesJson {
    deployment: String,
    diffs: Vec<DiffSummaryJson>,
}

/// Summaries for every asset of the serving revision the branch has a table of.
pub async fn summaries(
    state: &AppState,
    deployment: &Deployment,
) -> ApiResult<Vec<DiffSummaryJson>> {
    let Some(revision_id) = deployment.current_revision else { return Ok(Vec::new()) };
    let revision = state.store.get_revision(revision_id).await?;
    let repo = state
        .repository(&deployment.repository)
        .ok_or_else(|| ApiError::internal("the repository is not configured"))?;
    let loaded = crate::git::load(state, &repo.name, repo.path.clone(), &revision.commit.sha)
        .await
        .map_err(ApiError::internal)?;
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
        let options = DiffOptions { key, sample: 0, tolerance: 0.0 };
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
        });
    }
    Ok(out)
}

async fn deployment_diffs(
    State(state): State<SharedState>,
    _: Reader,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> ApiResult<Json<SummariesJson>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    if deployment.kind != DeploymentKind::Branch {
        return Err(ApiError::bad_request(
            "not_a_branch_deployment",
            format!("`{name}` is production; data diffs compare a branch deployment with it"),
        ));
    }
    Ok(Json(SummariesJson {
        deployment: deployment.name.to_string(),
        diffs: summaries(&state, &deployment).await?,
    }))
}

/// After a branch run: compute the summaries (filling the cache) and refresh the pull-request
/// comment with them. Returns at once.
pub fn run_finished(state: &SharedState, deployment: &Deployment) {
    if deployment.kind != DeploymentKind::Branch || !state.config.data_diff_auto {
        return;
    }
    let (state, deployment) = (state.clone(), deployment.clone());
    tokio::spawn(async move {
        match summaries(&state, &deployment).await {
            Ok(_) => crate::feedback::data_diffs_ready(&state, &deployment),
            Err(error) => tracing::warn!("data diffs of {}: {}", deployment.name, error.message),
        }
    });
}
