//! A snapshot: the validated asset graph of one commit, with fingerprints and a downstream index.
//!
//! Assets are shared (`Arc`), so a snapshot derived from another by a few changed files
//! ([`Snapshot::with_changes`]) holds the rest of its assets in common with it: the work and the
//! memory of a derived snapshot are in proportion to what changed and what is downstream of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

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

/// One asset of a snapshot with what the snapshot knows of it.
#[derive(Debug, Clone)]
struct Node {
    asset: Arc<Asset>,
    fingerprint: Fingerprint,
    /// The keys that read this asset directly, sorted.
    downstream: Arc<[AssetKey]>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    nodes: BTreeMap<AssetKey, Node>,
    /// Worked out on first use: a derived snapshot is often only diffed, never ordered.
    order: OnceLock<Vec<AssetKey>>,
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
        let mut downstream = graph::downstream_index(&deps);
        let mut fingerprints: HashMap<AssetKey, Fingerprint> = HashMap::with_capacity(order.len());
        for key in &order {
            let asset = &assets[key];
            let upstream: Vec<&Fingerprint> = asset.deps.iter().map(|d| &fingerprints[d]).collect();
            fingerprints.insert(key.clone(), Fingerprint::compute(asset, upstream));
        }
        let nodes = assets
            .into_iter()
            .map(|(key, asset)| {
                let mut readers = downstream.remove(&key).unwrap_or_default();
                readers.sort();
                let node = Node {
                    fingerprint: fingerprints[&key],
                    asset: Arc::new(asset),
                    downstream: readers.into(),
                };
                (key, node)
            })
            .collect();
        Ok(Snapshot { nodes, order: OnceLock::from(order) })
    }

    /// This snapshot with `changed` assets added or replacing those of the same key and the
    /// `removed` keys gone. The same as [`Snapshot::new`] over the resulting assets, with work in
    /// proportion to the change: only the changed assets' edges are checked for cycles, only
    /// they and what is downstream of them get new fingerprints, and every other asset is shared
    /// with `self`.
    pub fn with_changes(
        &self,
        changed: Vec<Asset>,
        removed: &BTreeSet<AssetKey>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut nodes = self.nodes.clone();
        // Edges whose reader changed: (read, reader, added?).
        let mut edge_changes: BTreeMap<AssetKey, (BTreeSet<AssetKey>, BTreeSet<AssetKey>)> =
            BTreeMap::new();
        let no_deps = BTreeSet::new();
        for key in removed {
            if let Some(node) = nodes.remove(key) {
                for dep in &node.asset.deps {
                    edge_changes.entry(dep.clone()).or_default().1.insert(key.clone());
                }
            }
        }
        let mut changed_keys: Vec<AssetKey> = Vec::with_capacity(changed.len());
        // The changed assets that read something they did not: every new cycle goes through one.
        let mut grew: Vec<AssetKey> = Vec::new();
        for asset in changed {
            let old_deps = self.nodes.get(&asset.key).map_or(&no_deps, |n| &n.asset.deps);
            if !asset.deps.is_subset(old_deps) {
                grew.push(asset.key.clone());
            }
            for dep in old_deps.difference(&asset.deps) {
                edge_changes.entry(dep.clone()).or_default().1.insert(asset.key.clone());
            }
            for dep in asset.deps.difference(old_deps) {
                edge_changes.entry(dep.clone()).or_default().0.insert(asset.key.clone());
            }
            let downstream =
                self.nodes.get(&asset.key).map_or_else(|| Arc::from([]), |n| n.downstream.clone());
            changed_keys.push(asset.key.clone());
            let key = asset.key.clone();
            // The fingerprint is worked out below, once every upstream has its own.
            let fingerprint =
                self.nodes.get(&key).map_or(Fingerprint::compute(&asset, []), |n| n.fingerprint);
            nodes.insert(key, Node { asset: Arc::new(asset), fingerprint, downstream });
        }
        for key in &changed_keys {
            let asset = &nodes[key].asset;
            if let Some(dep) = asset.deps.iter().find(|d| !nodes.contains_key(*d)) {
                return Err(SnapshotError::UnknownDependency {
                    key: key.clone(),
                    dep: dep.clone(),
                });
            }
        }
        for (read, (added, gone)) in edge_changes {
            let Some(node) = nodes.get_mut(&read) else {
                // A removed asset's reader that is still here reads what is gone.
                if let Some(reader) = added.iter().next() {
                    return Err(SnapshotError::UnknownDependency {
                        key: reader.clone(),
                        dep: read,
                    });
                }
                continue;
            };
            let mut readers: BTreeSet<AssetKey> =
                node.downstream.iter().filter(|k| !gone.contains(*k)).cloned().collect();
            readers.extend(added);
            node.downstream = readers.into_iter().collect::<Vec<_>>().into();
        }
        // What read a removed key and is neither removed nor changed now reads nothing there.
        for key in removed {
            if let Some(old) = self.nodes.get(key) {
                if let Some(reader) = old
                    .downstream
                    .iter()
                    .find(|r| nodes.get(*r).is_some_and(|n| n.asset.deps.contains(key)))
                {
                    return Err(SnapshotError::UnknownDependency {
                        key: reader.clone(),
                        dep: key.clone(),
                    });
                }
            }
        }
        let mut snapshot = Snapshot { nodes, order: OnceLock::new() };
        if let Some(cycle) = snapshot.cycle_through(&grew) {
            return Err(SnapshotError::Cycle(cycle));
        }
        snapshot.refingerprint(&changed_keys);
        Ok(snapshot)
    }

    /// A cycle through any of `start`, if there is one: every cycle a change can make goes
    /// through an edge it added, so the search goes upstream from those edges' readers only.
    fn cycle_through(&self, start: &[AssetKey]) -> Option<Vec<AssetKey>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            OnStack,
            Done,
        }
        let mut marks: HashMap<&AssetKey, Mark> = HashMap::new();
        for first in start {
            if marks.contains_key(first) {
                continue;
            }
            let mut stack: Vec<(&AssetKey, std::collections::btree_set::Iter<'_, AssetKey>)> =
                vec![(first, self.nodes[first].asset.deps.iter())];
            marks.insert(first, Mark::OnStack);
            while let Some((_, pending)) = stack.last_mut() {
                match pending.next() {
                    Some(next) => match marks.get(next) {
                        None => {
                            marks.insert(next, Mark::OnStack);
                            stack.push((next, self.nodes[next].asset.deps.iter()));
                        }
                        Some(Mark::OnStack) => {
                            // Reported as the full search reports it, from the lowest key.
                            let deps: Dependencies = self
                                .nodes
                                .iter()
                                .map(|(k, n)| (k.clone(), n.asset.deps.clone()))
                                .collect();
                            return graph::find_cycles(&deps).into_iter().next();
                        }
                        Some(Mark::Done) => {}
                    },
                    None => {
                        let (done, _) = stack.pop().expect("non-empty");
                        marks.insert(done, Mark::Done);
                    }
                }
            }
        }
        None
    }

    /// New fingerprints for `changed` and everything downstream of them, each after its
    /// upstream's (Kahn's algorithm over that part of the graph only).
    fn refingerprint(&mut self, changed: &[AssetKey]) {
        let mut index: HashMap<AssetKey, usize> = HashMap::new();
        let mut affected: Vec<(AssetKey, Arc<Asset>, Arc<[AssetKey]>)> = Vec::new();
        let mut pending: Vec<AssetKey> = changed.to_vec();
        while let Some(key) = pending.pop() {
            if index.contains_key(&key) {
                continue;
            }
            let node = &self.nodes[&key];
            pending.extend(node.downstream.iter().cloned());
            index.insert(key.clone(), affected.len());
            affected.push((key, node.asset.clone(), node.downstream.clone()));
        }
        let mut waiting: Vec<usize> = affected
            .iter()
            .map(|(_, asset, _)| asset.deps.iter().filter(|d| index.contains_key(*d)).count())
            .collect();
        let mut ready: Vec<usize> = (0..affected.len()).filter(|i| waiting[*i] == 0).collect();
        let mut fresh: Vec<Option<Fingerprint>> = vec![None; affected.len()];
        while let Some(at) = ready.pop() {
            let (_, asset, readers) = &affected[at];
            let upstream: Vec<Fingerprint> = asset
                .deps
                .iter()
                .map(|d| match index.get(d) {
                    Some(i) => fresh[*i].expect("an affected dep is done before its readers"),
                    None => self.nodes[d].fingerprint,
                })
                .collect();
            fresh[at] = Some(Fingerprint::compute(asset, upstream.iter()));
            for reader in readers.iter() {
                let i = index[reader];
                waiting[i] -= 1;
                if waiting[i] == 0 {
                    ready.push(i);
                }
            }
        }
        for ((key, ..), fingerprint) in affected.iter().zip(fresh) {
            self.nodes.get_mut(key).expect("affected keys are nodes").fingerprint =
                fingerprint.expect("a snapshot is acyclic, so every affected key is done");
        }
    }

    pub fn get(&self, key: &AssetKey) -> Option<&Asset> {
        self.nodes.get(key).map(|n| &*n.asset)
    }

    /// The asset as this snapshot shares it: two snapshots hold the same `Arc` for an asset a
    /// derived one did not change.
    pub fn shared(&self, key: &AssetKey) -> Option<&Arc<Asset>> {
        self.nodes.get(key).map(|n| &n.asset)
    }

    pub fn contains(&self, key: &AssetKey) -> bool {
        self.nodes.contains_key(key)
    }

    /// The key spelled exactly `name`, if there is one.
    pub fn key_named(&self, name: &str) -> Option<&AssetKey> {
        self.nodes.get_key_value(name).map(|(k, _)| k)
    }

    /// Assets by key, as this snapshot shares them.
    pub fn shared_assets(&self) -> impl Iterator<Item = &Arc<Asset>> {
        self.nodes.values().map(|n| &n.asset)
    }

    /// Assets by key.
    pub fn assets(&self) -> impl Iterator<Item = &Asset> {
        self.nodes.values().map(|n| &*n.asset)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Keys with every dependency before its dependents.
    pub fn topological_order(&self) -> &[AssetKey] {
        self.order.get_or_init(|| {
            let deps: Dependencies =
                self.nodes.iter().map(|(k, n)| (k.clone(), n.asset.deps.clone())).collect();
            graph::topological_order(&deps).expect("a snapshot is acyclic")
        })
    }

    /// The keys that read `key` directly.
    pub fn downstream_of(&self, key: &AssetKey) -> &[AssetKey] {
        self.nodes.get(key).map(|n| &*n.downstream).unwrap_or(&[])
    }

    /// The keys `key` reads directly.
    pub fn upstream_of(&self, key: &AssetKey) -> impl Iterator<Item = &AssetKey> {
        self.nodes.get(key).into_iter().flat_map(|n| n.asset.deps.iter())
    }

    pub fn fingerprint(&self, key: &AssetKey) -> Option<Fingerprint> {
        self.nodes.get(key).map(|n| n.fingerprint)
    }
}

/// Two snapshots are equal when they hold equal assets with equal fingerprints (the order and
/// the downstream index follow from the assets).
impl PartialEq for Snapshot {
    fn eq(&self, other: &Snapshot) -> bool {
        self.nodes.len() == other.nodes.len()
            && self.nodes.iter().zip(&other.nodes).all(|((k, a), (l, b))| {
                k == l
                    && a.fingerprint == b.fingerprint
                    && a.downstream == b.downstream
                    && (Arc::ptr_eq(&a.asset, &b.asset) || a.asset == b.asset)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AssetKind, CodeVersion};
    use proptest::prelude::*;

    const KEYS: usize = 8;

    fn key(i: usize) -> AssetKey {
        AssetKey::new(&format!("k{i}")).expect("key")
    }

    /// An asset `k{i}` reading the keys in `deps`, with a code version.
    fn asset(i: usize, deps: &[usize], version: u8) -> Asset {
        let mut asset = Asset::new(key(i), AssetKind::Sql);
        asset.deps = deps.iter().map(|d| key(*d)).collect();
        asset.code_version = CodeVersion::explicit(version.to_string());
        asset
    }

    #[derive(Debug, Clone)]
    enum Edit {
        /// Adds or replaces `k{i}`; its deps may be any key, so cycles and unknown keys happen.
        Put(usize, Vec<usize>, u8),
        Remove(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            3 => (0..KEYS + 2, proptest::collection::vec(0..KEYS + 2, 0..3), 0..3u8)
                .prop_map(|(i, deps, v)| Edit::Put(i, deps, v)),
            1 => (0..KEYS + 2).prop_map(Edit::Remove),
        ]
    }

    /// A DAG: each key reads some lower ones.
    fn base() -> impl Strategy<Value = Vec<Asset>> {
        proptest::collection::vec(
            (proptest::collection::vec(any::<prop::sample::Index>(), 0..3), 0..3u8),
            KEYS,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (deps, v))| {
                    let deps: Vec<usize> =
                        if i == 0 { Vec::new() } else { deps.iter().map(|d| d.index(i)).collect() };
                    asset(i, &deps, v)
                })
                .collect()
        })
    }

    fn same_error(a: &SnapshotError, b: &SnapshotError) -> bool {
        match (a, b) {
            (SnapshotError::Cycle(x), SnapshotError::Cycle(y)) => x == y,
            (SnapshotError::UnknownDependency { .. }, SnapshotError::UnknownDependency { .. }) => {
                true
            }
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn a_derived_snapshot_equals_one_built_from_scratch(
            assets in base(),
            edits in proptest::collection::vec(proptest::collection::vec(edit(), 0..5), 1..5),
        ) {
            let mut current = Snapshot::new(assets).expect("a DAG");
            for batch in edits {
                let mut all: BTreeMap<AssetKey, Asset> =
                    current.assets().map(|a| (a.key.clone(), a.clone())).collect();
                let mut changed: BTreeMap<AssetKey, Asset> = BTreeMap::new();
                let mut removed = BTreeSet::new();
                for edit in batch {
                    match edit {
                        Edit::Put(i, deps, v) => {
                            let asset = asset(i, &deps, v);
                            removed.remove(&asset.key);
                            all.insert(asset.key.clone(), asset.clone());
                            changed.insert(asset.key.clone(), asset);
                        }
                        Edit::Remove(i) => {
                            changed.remove(&key(i));
                            if all.remove(&key(i)).is_some() {
                                removed.insert(key(i));
                            }
                        }
                    }
                }
                let scratch = Snapshot::new(all.into_values());
                let derived = current.with_changes(changed.into_values().collect(), &removed);
                match (&scratch, &derived) {
                    (Ok(s), Ok(d)) => {
                        prop_assert!(s == d, "{s:?} != {d:?}");
                        prop_assert_eq!(s.topological_order(), d.topological_order());
                        for k in s.topological_order() {
                            prop_assert_eq!(s.downstream_of(k), d.downstream_of(k));
                        }
                    }
                    (Err(s), Err(d)) => prop_assert!(same_error(s, d), "{s:?} vs {d:?}"),
                    _ => prop_assert!(false, "scratch {scratch:?}, derived {derived:?}"),
                }
                if let Ok(next) = derived {
                    current = next;
                }
            }
        }
    }

    #[test]
    fn unchanged_assets_are_shared_with_the_snapshot_derived_from() {
        let base =
            Snapshot::new([asset(0, &[], 0), asset(1, &[0], 0), asset(2, &[1], 0)]).expect("a DAG");
        let derived = base.with_changes(vec![asset(1, &[0], 1)], &BTreeSet::new()).expect("valid");
        assert!(Arc::ptr_eq(
            base.shared(&key(0)).expect("k0"),
            derived.shared(&key(0)).expect("k0")
        ));
        assert_ne!(base.fingerprint(&key(2)), derived.fingerprint(&key(2)), "downstream moves too");
        assert_eq!(base.fingerprint(&key(0)), derived.fingerprint(&key(0)));
    }
}
