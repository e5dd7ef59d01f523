//! A snapshot: the validated asset graph of one commit, with fingerprints and a downstream index.

use std::collections::BTreeMap;

use crate::fingerprint::Fingerprint;
use crate::graph::{self, Dependencies};
use crate::{Asset, AssetKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("asset `{key}` depends on `{dep}`, which is not in the snapshot")]
    UnknownDependency { key: AssetKey, dep: AssetKey },
    #[error("the dependencies form a cycle: {}", render_cycle(.0))]
    Cycle(Vec<AssetKey>),
}

/// `a -> b -> a`: how cycles are printed everywhere.
pub fn render_cycle(cycle: &[AssetKey]) -> String {
    let mut parts: Vec<&str> = cycle.iter().map(|k| k.as_str()).collect();
    if let Some(first) = cycle.first() {
        parts.push(first.as_str());
    }
    parts.join(" -> ")
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    assets: BTreeMap<AssetKey, Asset>,
    order: Vec<AssetKey>,
    downstream: BTreeMap<AssetKey, Vec<AssetKey>>,
    fingerprints: BTreeMap<AssetKey, Fingerprint>,
}

impl Snapshot {
    /// Builds the graph. Loaders report unknown references and cycles as diagnostics first; this
    /// check is the invariant's guard, so a `Snapshot` is always a DAG over its own keys.
    pub fn new(assets: impl IntoIterator<Item = Asset>) -> Result<Snapshot, SnapshotError> {
        Snapshot::build(assets).map_err(|(error, _)| error)
    }

    /// [`Snapshot::new`], handing the assets back with the error, so a loader that builds the
    /// snapshot first (ordering the graph once) can still report every cycle with its position.
    pub fn build(
        assets: impl IntoIterator<Item = Asset>,
    ) -> Result<Snapshot, (SnapshotError, Vec<Asset>)> {
        let assets: BTreeMap<AssetKey, Asset> =
            assets.into_iter().map(|a| (a.key.clone(), a)).collect();
        for asset in assets.values() {
            if let Some(dep) = asset.deps.iter().find(|d| !assets.contains_key(*d)) {
                let error =
                    SnapshotError::UnknownDependency { key: asset.key.clone(), dep: dep.clone() };
                return Err((error, assets.into_values().collect()));
            }
        }
        let deps: Dependencies = assets.iter().map(|(k, a)| (k.clone(), a.deps.clone())).collect();
        let order = match graph::topological_order(&deps) {
            Ok(order) => order,
            Err(_) => {
                let cycle = graph::find_cycles(&deps)
                    .into_iter()
                    .next()
                    .expect("a failed order has a cycle");
                return Err((SnapshotError::Cycle(cycle), assets.into_values().collect()));
            }
        };
        let mut fingerprints: BTreeMap<AssetKey, Fingerprint> = BTreeMap::new();
        for key in &order {
            let asset = &assets[key];
            let upstream: Vec<&Fingerprint> = asset.deps.iter().map(|d| &fingerprints[d]).collect();
            let fingerprint = Fingerprint::compute(asset, upstream);
            fingerprints.insert(key.clone(), fingerprint);
        }
        let downstream = graph::downstream_index(&deps);
        Ok(Snapshot { assets, order, downstream, fingerprints })
    }

    pub fn get(&self, key: &AssetKey) -> Option<&Asset> {
        self.assets.get(key)
    }

    pub fn contains(&self, key: &AssetKey) -> bool {
        self.assets.contains_key(key)
    }

    /// Assets by key.
    pub fn assets(&self) -> impl Iterator<Item = &Asset> {
        self.assets.values()
    }

    pub fn len(&self) -> usize {
        self.assets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.assets.is_empty()
    }

    /// Keys with every dependency before its dependents.
    pub fn topological_order(&self) -> &[AssetKey] {
        &self.order
    }

    /// The keys that read `key` directly.
    pub fn downstream_of(&self, key: &AssetKey) -> &[AssetKey] {
        self.downstream.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The keys `key` reads directly.
    pub fn upstream_of(&self, key: &AssetKey) -> impl Iterator<Item = &AssetKey> {
        self.assets.get(key).into_iter().flat_map(|a| a.deps.iter())
    }

    pub fn fingerprint(&self, key: &AssetKey) -> Option<Fingerprint> {
        self.fingerprints.get(key).copied()
    }
}
