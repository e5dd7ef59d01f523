//! The asset catalog of a deployment for the UI and API: every asset of the serving revision with
//! its change badge, where its data comes from right now, one asset in detail, and selection
//! evaluation (`changed_in_branch:ANY+` and friends).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use offshoot_core::StepStatus;
use offshoot_core::{
    AssetKey, ChangeReason, ChangeSet, DeploymentKind, PartitionsDefinition, Selection,
};
use offshoot_store::{Deployment, DeploymentId, Materialization, Revision, RunFilter};
use offshoot_warehouse::Target;
use serde::{Deserialize, Serialize};

use crate::changes::AssetChangeJson;
use crate::http::auth::Reader;
use crate::http::dto::{self, RevisionJson};
use crate::http::error::{ApiError, ApiResult};
use crate::service::lookup::find_deployment;
use crate::service::runner::head_and_changes;
use crate::state::{AppState, SharedState};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/deployments/{name}/graph", get(graph))
        .route("/api/v1/deployments/{name}/select", get(select))
        .route("/api/v1/deployments/{name}/assets/{key}", get(asset))
}

#[derive(Deserialize, Default)]
pub struct CatalogQuery {
    repository: Option<String>,
    selection: Option<String>,
}

#[derive(Serialize)]
pub struct GraphNodeJson {
    key: String,
    kind: &'static str,
    /// What it is made with (`dbt`, `postgres`, `python`...).
    kinds: Vec<String>,
    group: String,
    description: Option<String>,
    deps: Vec<String>,
    tags: BTreeMap<String, String>,
    /// Reasons this asset differs from the base, when it does.
    reasons: Option<Vec<&'static str>>,
    /// For an unchanged asset downstream of a change: the path from that change.
    impacted_via: Option<Vec<String>>,
    /// Where a read of this asset in this deployment lands: "branch" (its own table),
    /// "production", or "none" (not materialized anywhere yet). Sources report "production".
    data: &'static str,
    /// The asset's step in the newest of this deployment's recent runs that planned it, if any.
    last_step: Option<LastStepJson>,
    /// Its own table was built from other definitions than the serving revision's: the
    /// fingerprint recorded with that materialization differs (code, partitions or an
    /// upstream's definition changed since). False when nothing was recorded to compare.
    stale: bool,
}

/// An asset's latest step: "queued" (pending in an active run), "running", "succeeded",
/// "failed", "skipped" or "canceled", with the run's progress while it is active.
#[derive(Serialize, Clone)]
pub struct LastStepJson {
    run_id: i64,
    status: &'static str,
    error: Option<String>,
    finished_at: Option<i64>,
    /// While the run is active: its finished and planned step counts.
    run_progress: Option<[usize; 2]>,
}

/// How many of a deployment's newest runs the graph looks through for each asset's last step.
const RUNS_FOR_STATE: u32 = 20;

async fn last_steps(
    state: &AppState,
    deployment: DeploymentId,
) -> ApiResult<BTreeMap<String, LastStepJson>> {
    let runs = state
        .store
        .list_runs(&RunFilter {
            deployment_id: Some(deployment),
            statuses: Vec::new(),
            limit: RUNS_FOR_STATE,
        })
        .await?;
    let mut last = BTreeMap::new();
    for run in runs {
        let active = !run.status.is_finished();
        let steps = state.store.list_steps(run.id).await?;
        let progress =
            active.then(|| [steps.iter().filter(|s| s.status.is_finished()).count(), steps.len()]);
        for step in steps {
            // A pending step of a finished run never ran: it says nothing about the asset.
            if step.status == StepStatus::Pending && !active {
                continue;
            }
            last.entry(step.asset_key.to_string()).or_insert_with(|| LastStepJson {
                run_id: run.id.0,
                status: if step.status == StepStatus::Pending {
                    "queued"
                } else {
                    step.status.as_str()
                },
                error: step.error.clone(),
                finished_at: step.finished_at,
                run_progress: progress,
            });
        }
    }
    Ok(last)
}

#[derive(Serialize)]
pub struct GraphJson {
    deployment: String,
    kind: &'static str,
    revision: Option<RevisionJson>,
    base_commit: Option<String>,
    assets: Vec<GraphNodeJson>,
    /// Assets the base has and this revision removed.
    removed: Vec<String>,
}

/// Tables owned by the deployment and by production, to say where each asset's data is.
struct DataLocations {
    own: BTreeSet<String>,
    production: BTreeSet<String>,
    is_production: bool,
}

impl DataLocations {
    async fn read(state: &AppState, target: &Target) -> DataLocations {
        let production_target =
            Target { schema: target.production.clone(), production: target.production.clone() };
        // A schema that does not exist (closed, never prepared) simply owns nothing.
        let own =
            state.warehouse.own_tables(target).await.unwrap_or_default().into_iter().collect();
        let production = if target.is_production() {
            BTreeSet::new()
        } else {
            state
                .warehouse
                .own_tables(&production_target)
                .await
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        DataLocations { own, production, is_production: target.is_production() }
    }

    fn of(&self, key: &AssetKey, is_source: bool) -> &'static str {
        // A path key's table (a Dagster asset's) is named like its last part.
        let key = key.parts().last().unwrap_or_default();
        if is_source {
            return "production";
        }
        match (self.own.contains(key), self.is_production, self.production.contains(key)) {
            (true, true, _) => "production",
            (true, false, _) => "branch",
            (false, false, true) => "production",
            _ => "none",
        }
    }
}

async fn serving_revision(
    state: &AppState,
    deployment: &Deployment,
) -> ApiResult<Option<Revision>> {
    match deployment.current_revision {
        Some(id) => Ok(Some(state.store.get_revision(id).await?)),
        None => Ok(None),
    }
}

fn reasons(changes: &ChangeSet, key: &AssetKey) -> Option<Vec<&'static str>> {
    changes.change(key).map(|c| c.reasons.iter().map(|r| r.as_str()).collect())
}

async fn graph(
    State(state): State<SharedState>,
    _: Reader,
    Path(name): Path<String>,
    Query(query): Query<CatalogQuery>,
) -> ApiResult<Json<GraphJson>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    let kind = deployment.kind.as_str();
    let Some(revision) = serving_revision(&state, &deployment).await? else {
        return Ok(Json(GraphJson {
            deployment: deployment.name.to_string(),
            kind,
            revision: None,
            base_commit: None,
            assets: Vec::new(),
            removed: Vec::new(),
        }));
    };
    let (project, changes) = head_and_changes(&state, &deployment, &revision).await?;
    let locations = DataLocations::read(&state, &state.target(&deployment)).await;
    let mut steps = last_steps(&state, deployment.id).await?;
    let built: BTreeMap<AssetKey, _> = state
        .store
        .current_materializations(deployment.id)
        .await?
        .into_iter()
        .filter_map(|m| Some((m.materialization.asset_key, m.provenance?.fingerprint)))
        .collect();
    let own_table = |key: &AssetKey, data: &str| match deployment.kind {
        DeploymentKind::Production => data == "production",
        DeploymentKind::Branch => data == "branch",
    } && built.contains_key(key);
    let assets = project
        .snapshot
        .assets()
        .map(|asset| {
            let data = locations.of(&asset.key, !asset.kind.is_materializable());
            let stale = own_table(&asset.key, data)
                && built.get(&asset.key).copied() != project.snapshot.fingerprint(&asset.key);
            (asset, data, stale)
        })
        .map(|(asset, data, stale)| GraphNodeJson {
            key: asset.key.to_string(),
            kind: asset.kind.as_str(),
            kinds: asset.kinds.iter().cloned().collect(),
            group: asset.group.clone(),
            description: asset.description.clone(),
            deps: asset.deps.iter().map(|d| d.to_string()).collect(),
            tags: asset.tags.clone(),
            reasons: reasons(&changes, &asset.key),
            impacted_via: changes
                .impacted(&asset.key)
                .map(|i| i.path.iter().map(|k| k.to_string()).collect()),
            data,
            last_step: steps.remove(&asset.key.to_string()),
            stale,
        })
        .collect();
    let removed = changes
        .changes
        .iter()
        .filter(|c| c.reasons == [ChangeReason::Removed])
        .map(|c| c.key.to_string())
        .collect();
    Ok(Json(GraphJson {
        deployment: deployment.name.to_string(),
        kind,
        base_commit: revision.base_commit.as_ref().map(|c| c.to_string()),
        revision: Some(dto::revision_json(&revision)),
        assets,
        removed,
    }))
}

async fn select(
    State(state): State<SharedState>,
    _: Reader,
    Path(name): Path<String>,
    Query(query): Query<CatalogQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let text = query.selection.unwrap_or_default();
    let selection = Selection::parse(&text)
        .map_err(|e| ApiError::bad_request("invalid_selection", e.render(&text)))?;
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    let Some(revision) = serving_revision(&state, &deployment).await? else {
        return Err(ApiError::conflict(
            "deployment_not_ready",
            format!("`{}` has no ready revision yet", deployment.name),
        ));
    };
    let (project, changes) = head_and_changes(&state, &deployment, &revision).await?;
    let keys: Vec<String> =
        selection.evaluate(&project.snapshot, &changes).iter().map(|k| k.to_string()).collect();
    Ok(Json(serde_json::json!({ "selection": text, "keys": keys })))
}

#[derive(Serialize)]
pub struct MaterializationJson {
    run_id: i64,
    commit: String,
    row_count: Option<i64>,
    duration_ms: i64,
    created_at: i64,
}

fn materialization_json(m: &Materialization) -> MaterializationJson {
    MaterializationJson {
        run_id: m.run_id.0,
        commit: m.commit.to_string(),
        row_count: m.row_count,
        duration_ms: m.duration_ms,
        created_at: m.created_at,
    }
}

/// A materialization another one read or was promoted from.
#[derive(Serialize)]
pub struct ReadJson {
    deployment: String,
    run_id: i64,
    materialization_id: i64,
}

#[derive(Serialize)]
pub struct UpstreamReadJson {
    upstream: String,
    /// The upstream's fingerprint when the materialization was built.
    fingerprint: String,
    /// What the read landed on; null for a source or a table no recorded run built.
    read: Option<ReadJson>,
    source: bool,
}

/// Where the table a read of the asset lands on came from: its fingerprint, the commit and
/// deployment whose code built it (the branch, for a promoted one), and what it read.
#[derive(Serialize)]
pub struct ProvenanceJson {
    materialization_id: i64,
    /// Whose materialization it is (the deployment whose table it is now).
    deployment: String,
    run_id: i64,
    commit: String,
    created_at: i64,
    fingerprint: String,
    code_version: String,
    partitions: String,
    /// Exactly what the serving revision would build (the same fingerprint).
    matches_definition: bool,
    /// Where its code ran: a promoted table was built in the branch it came from.
    built_in: String,
    built_commit: String,
    built_run_id: i64,
    promoted_from: Option<ReadJson>,
    reads: Vec<UpstreamReadJson>,
    /// In words: `built in feature-x from commit abc1234 (run 7), promoted into production by
    /// run 12; reading production's fct_orders of run 12`.
    summary: String,
}

/// The provenance of the materialization a read of `key` lands on in `deployment`.
async fn provenance(
    state: &AppState,
    deployment: &Deployment,
    snapshot: &offshoot_core::Snapshot,
    key: &AssetKey,
    lands_in_branch: bool,
) -> ApiResult<Option<ProvenanceJson>> {
    let production = match deployment.kind {
        DeploymentKind::Production => Some(deployment.clone()),
        DeploymentKind::Branch => {
            state
                .store
                .find_deployment(
                    &deployment.repository,
                    &offshoot_core::DeploymentName::production(),
                )
                .await?
        }
    };
    let owner = if lands_in_branch { Some(deployment) } else { production.as_ref() };
    let Some(owner) = owner else { return Ok(None) };
    let current = state.store.current_materializations(owner.id).await?;
    let Some(recorded) = current.into_iter().find(|m| &m.materialization.asset_key == key) else {
        return Ok(None);
    };
    let Some(provenance) = &recorded.provenance else { return Ok(None) };
    let filter = offshoot_store::DeploymentFilter {
        repository: Some(deployment.repository.clone()),
        include_closed: true,
    };
    let names: BTreeMap<DeploymentId, String> = state
        .store
        .list_deployments(&filter)
        .await?
        .into_iter()
        .map(|d| (d.id, d.name.to_string()))
        .collect();
    let production_id = production.as_ref().map(|p| p.id);
    let name_of = |id: DeploymentId| {
        names.get(&id).cloned().unwrap_or_else(|| "a deleted deployment".to_owned())
    };
    let whose = |id: DeploymentId| {
        if Some(id) == production_id {
            "production".to_owned()
        } else {
            name_of(id)
        }
    };
    let read_json = |read: &offshoot_store::ReadMaterialization| ReadJson {
        deployment: name_of(read.deployment_id),
        run_id: read.run_id.0,
        materialization_id: read.id.0,
    };
    let m = &recorded.materialization;
    let (built_in, built_commit, built_run_id) = match &provenance.promoted_from {
        Some(from) => {
            let commit = state
                .store
                .get_materialization(from.materialization.id)
                .await
                .map(|b| b.materialization.commit.to_string())
                .unwrap_or_else(|_| m.commit.to_string());
            (from.deployment.to_string(), commit, from.materialization.run_id.0)
        }
        None => (name_of(m.deployment_id), m.commit.to_string(), m.run_id.0),
    };
    let reads: Vec<UpstreamReadJson> = provenance
        .upstream
        .iter()
        .map(|u| UpstreamReadJson {
            upstream: u.key.to_string(),
            fingerprint: u.fingerprint.to_hex(),
            read: u.read.as_ref().map(read_json),
            source: snapshot.get(&u.key).is_some_and(|a| !a.kind.is_materializable()),
        })
        .collect();
    let mut summary = format!(
        "built in {built_in} from commit {} (run {built_run_id})",
        &built_commit[..built_commit.len().min(12)]
    );
    if provenance.promoted_from.is_some() {
        summary.push_str(&format!(", promoted into production by run {}", m.run_id.0));
    }
    let read_words: Vec<String> = provenance
        .upstream
        .iter()
        .zip(&reads)
        .map(|(u, json)| match &u.read {
            Some(read) => {
                format!("{}'s {} of run {}", whose(read.deployment_id), u.key, read.run_id.0)
            }
            None if json.source => format!("the source {}", u.key),
            None => format!("{} (no recorded materialization)", u.key),
        })
        .collect();
    if !read_words.is_empty() {
        summary.push_str(&format!("; reading {}", read_words.join(", ")));
    }
    Ok(Some(ProvenanceJson {
        materialization_id: recorded.id.0,
        deployment: name_of(m.deployment_id),
        run_id: m.run_id.0,
        commit: m.commit.to_string(),
        created_at: m.created_at,
        fingerprint: provenance.fingerprint.to_hex(),
        code_version: provenance.code_version.clone(),
        partitions: provenance.partitions.clone(),
        matches_definition: snapshot.fingerprint(key) == Some(provenance.fingerprint),
        built_in,
        built_commit,
        built_run_id,
        promoted_from: provenance.promoted_from.as_ref().map(|p| read_json(&p.materialization)),
        reads,
        summary,
    }))
}

#[derive(Serialize)]
pub struct AssetJson {
    key: String,
    kind: &'static str,
    kinds: Vec<String>,
    group: String,
    description: Option<String>,
    path: String,
    code: String,
    code_version: String,
    code_version_derived: bool,
    fingerprint: Option<String>,
    upstream: Vec<String>,
    downstream: Vec<String>,
    tags: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    /// Keys of `metadata` change tracking ignores (`[project] untracked_metadata`).
    untracked_metadata: Vec<String>,
    owners: Vec<String>,
    partitions: Option<String>,
    change: Option<AssetChangeJson>,
    impacted_via: Option<Vec<String>>,
    data: &'static str,
    /// Removed by this revision: everything above is the base's definition, `downstream` the
    /// assets that read it there.
    removed: bool,
    materializations: Vec<MaterializationJson>,
    /// In a branch deployment: production's history of this asset.
    production_materializations: Vec<MaterializationJson>,
    /// Where the table a read of it lands on came from; null when none is recorded with it.
    provenance: Option<ProvenanceJson>,
}

async fn asset(
    State(state): State<SharedState>,
    _: Reader,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<CatalogQuery>,
) -> ApiResult<Json<AssetJson>> {
    let deployment = find_deployment(&state, query.repository.as_deref(), &name).await?;
    let missing =
        || ApiError::not_found("asset_not_found", format!("no asset `{key}` in `{name}`"));
    let key = AssetKey::new(&key).map_err(|_| missing())?;
    let revision = serving_revision(&state, &deployment).await?.ok_or_else(missing)?;
    let (project, changes) = head_and_changes(&state, &deployment, &revision).await?;
    // A removed asset is shown as the base defined it, with its former downstream.
    let base_loaded;
    let (asset, snapshot, removed) = match project.snapshot.get(&key) {
        Some(asset) => (asset, &project.snapshot, false),
        None if changes.change(&key).is_some_and(|c| c.reasons == [ChangeReason::Removed]) => {
            let base_commit = revision.base_commit.as_ref().ok_or_else(missing)?;
            let repo = crate::service::lookup::repository_config(&state, &deployment.repository)?;
            base_loaded =
                crate::adapters::project::load(&state, &repo.name, repo.path.clone(), base_commit)
                    .await
                    .map_err(ApiError::internal)?;
            let base = base_loaded.as_ref().as_ref().map_err(|_| missing())?;
            (base.snapshot.get(&key).ok_or_else(missing)?, &base.snapshot, true)
        }
        None => return Err(missing()),
    };
    let locations = DataLocations::read(&state, &state.target(&deployment)).await;
    let materializations = state.store.list_materializations(deployment.id, Some(&key), 20).await?;
    let production_materializations = if deployment.kind == DeploymentKind::Branch {
        match state
            .store
            .find_deployment(&deployment.repository, &offshoot_core::DeploymentName::production())
            .await?
        {
            Some(production) => {
                state.store.list_materializations(production.id, Some(&key), 20).await?
            }
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let data = locations.of(&key, !asset.kind.is_materializable());
    let provenance = match data {
        "none" => None,
        _ => provenance(&state, &deployment, snapshot, &key, data == "branch").await?,
    };
    Ok(Json(AssetJson {
        provenance,
        key: asset.key.to_string(),
        kind: asset.kind.as_str(),
        kinds: asset.kinds.iter().cloned().collect(),
        group: asset.group.clone(),
        description: asset.description.clone(),
        path: asset.location.path.clone(),
        code: asset.code.to_string(),
        code_version: asset.code_version.value.clone(),
        code_version_derived: asset.code_version.derived,
        fingerprint: snapshot.fingerprint(&key).map(|f| f.to_hex()),
        upstream: asset.deps.iter().map(|d| d.to_string()).collect(),
        downstream: snapshot.downstream_of(&key).iter().map(|d| d.to_string()).collect(),
        removed,
        tags: asset.tags.clone(),
        metadata: asset.metadata.clone(),
        untracked_metadata: asset.untracked_metadata.iter().cloned().collect(),
        owners: asset.owners.clone(),
        partitions: asset.partitions.as_ref().map(PartitionsDefinition::to_string),
        change: changes.change(&key).map(AssetChangeJson::from),
        impacted_via: changes
            .impacted(&key)
            .map(|i| i.path.iter().map(|k| k.to_string()).collect()),
        data,
        materializations: materializations.iter().map(materialization_json).collect(),
        production_materializations: production_materializations
            .iter()
            .map(materialization_json)
            .collect(),
    }))
}
