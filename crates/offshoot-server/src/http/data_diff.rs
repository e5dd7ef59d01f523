//! The data-diff API: one asset's diff in full, and the one-line summaries of every asset a
//! branch built (computed by `service::data_diff`).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use offshoot_core::{AssetKey, DeploymentKind};
use offshoot_store::Deployment;
use offshoot_warehouse::data_diff::{DiffOptions, KeyRequest, NumericStats};
use serde::{Deserialize, Serialize};

use crate::http::auth::Reader;
use crate::http::error::{ApiError, ApiResult};
use crate::service::data_diff::{
    compute, grain_of, state_of, summaries, Against, ComputedDiff, DiffSummaryJson,
};
use crate::service::lookup::find_deployment;
use crate::state::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/deployments/{name}/assets/{key}/data-diff", get(asset_diff))
        .route("/api/v1/deployments/{name}/data-diffs", get(deployment_diffs))
}

/// Most rows a sample may ask for.
const MAX_SAMPLE: usize = 100;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    repository: Option<String>,
    /// Comma-separated key columns; default the asset's declared grain, else inferred.
    key: Option<String>,
    sample: Option<usize>,
    tolerance: Option<f64>,
    /// `current` (default), `built-against` or a production run's id.
    against: Option<String>,
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
        Ok(DiffOptions { key, sample, tolerance, row_limit: None })
    }

    fn against(&self) -> ApiResult<Against> {
        match self.against.as_deref() {
            None => Ok(Against::Current),
            Some(text) => Against::parse(text).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "`against` is `current`, `built-against` or a production run's id, not {text:?}"
                    ),
                )
            }),
        }
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
    /// Which production table the diff compared with.
    against: AgainstJson,
    /// Served from the store's cache (computed earlier, at `computed_at`).
    cached: bool,
    /// When the diff was computed, in milliseconds since the epoch.
    computed_at: i64,
    key: KeyJson,
    rows: Option<RowsJson>,
    schema: SchemaJson,
    columns: Vec<ColumnJson>,
    samples: SamplesJson,
    notes: Vec<String>,
    /// Set above `[data_diff] row_limit`: `rows`, the columns' `equal` and the samples are of
    /// the rows of one key in every `modulus` (`production_rows` / `branch_rows` of them).
    sampled: Option<SampledJson>,
}

#[derive(Serialize)]
struct AgainstJson {
    /// What was asked for: `current` (the default), `built-against` or a production run's id.
    requested: String,
    /// What the diff compared with: the request, or `current` when that table is gone (a note
    /// says why).
    compared: String,
    /// The request could not be met and the diff compares with production's current table.
    fell_back: bool,
}

#[derive(Serialize)]
struct SampledJson {
    modulus: u64,
    production_rows: u64,
    branch_rows: u64,
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

fn diff_json(deployment: &Deployment, asset: &AssetKey, computed: &ComputedDiff) -> DataDiffJson {
    let diff = &computed.diff;
    let matched = diff.rows.as_ref().map(|r| r.changed + r.equal);
    DataDiffJson {
        asset: asset.to_string(),
        deployment: deployment.name.to_string(),
        state: state_of(diff),
        production_rows: diff.production_rows,
        branch_rows: diff.branch_rows,
        branch_run: computed.branch_run,
        production_run: computed.production_run,
        against: AgainstJson {
            requested: computed.requested.as_text(),
            compared: computed.compared.as_text(),
            fell_back: computed.requested != computed.compared,
        },
        cached: computed.cached,
        computed_at: computed.computed_at,
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
        sampled: diff.sampled.as_ref().map(|s| SampledJson {
            modulus: s.modulus,
            production_rows: s.production_rows,
            branch_rows: s.branch_rows,
        }),
    }
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
    let against = query.against()?;
    let computed = compute(&state, &deployment, &asset_key, &options, against).await?;
    Ok(Json(diff_json(&deployment, &asset_key, &computed)))
}

#[derive(Serialize)]
struct SummariesJson {
    deployment: String,
    diffs: Vec<DiffSummaryJson>,
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
