//! The catch-up rules, one small story per rule (`check(story, expect)`), and a property test:
//! over random histories of production and branch builds (with sources whose data changes), the
//! decision agrees with a recursive reference model, and every promoted table holds exactly the
//! data production would have computed in its place.

use std::collections::{BTreeMap, BTreeSet};

use expect_test::{expect, Expect};
use proptest::prelude::*;

use super::*;
use crate::{Asset, CodeVersion};

fn key(name: &str) -> AssetKey {
    AssetKey::new(name).expect("a valid key")
}

/// `raw_*` are sources; every other asset is SQL with code version `v0` unless `versions` says.
fn snapshot(edges: &[(&str, &[&str])], versions: &[(&str, &str)]) -> Snapshot {
    Snapshot::new(edges.iter().map(|(name, deps)| {
        let kind = if name.starts_with("raw") { AssetKind::Source } else { AssetKind::Sql };
        let mut asset = Asset::new(key(name), kind);
        asset.deps = deps.iter().map(|d| key(d)).collect();
        let version = versions.iter().find(|(k, _)| k == name).map_or("v0", |(_, v)| v);
        asset.code_version = CodeVersion::explicit(version);
        asset
    }))
    .expect("a valid snapshot")
}

/// Production, branches and what each build holds: a little simulator that records provenance
/// the way the runner does (own table first, then production's).
#[derive(Default)]
struct World {
    next_id: i64,
    next_run: i64,
    production: BTreeMap<AssetKey, Built>,
    branches: BTreeMap<String, BTreeMap<AssetKey, (i64, Built)>>,
    unmovable: BTreeSet<(String, AssetKey)>,
    /// The data of every build: a hash of its code and of the data it read.
    data: BTreeMap<BuildId, u64>,
    /// Each source's current data.
    sources: BTreeMap<AssetKey, u64>,
    /// The source data each build read.
    source_reads: BTreeMap<BuildId, BTreeMap<AssetKey, u64>>,
}

impl World {
    fn read(&self, own: Option<&str>, snapshot: &Snapshot, dep: &AssetKey) -> (UpstreamRead, u64) {
        let fingerprint = snapshot.fingerprint(dep).expect("a dep");
        if snapshot.get(dep).is_some_and(|a| a.kind == AssetKind::Source) {
            let data = self.sources.get(dep).copied().unwrap_or(0);
            return (UpstreamRead { fingerprint, read: Read::External }, data);
        }
        if let Some((_, built)) = own.and_then(|b| self.branches.get(b)?.get(dep)) {
            let read = UpstreamRead { fingerprint: built.fingerprint, read: Read::Own(built.id) };
            return (read, self.data[&built.id]);
        }
        match self.production.get(dep) {
            Some(built) => (
                UpstreamRead { fingerprint: built.fingerprint, read: Read::Production(built.id) },
                self.data[&built.id],
            ),
            None => (UpstreamRead { fingerprint, read: Read::External }, 0),
        }
    }

    /// One run building `keys` (in the snapshot's order) in `branch`, or production for `None`.
    fn build(&mut self, branch: Option<&str>, snapshot: &Snapshot, keys: &[&str]) -> i64 {
        self.next_run += 1;
        let run = self.next_run;
        for k in snapshot.topological_order() {
            if !keys.contains(&k.as_str()) {
                continue;
            }
            let asset = snapshot.get(k).expect("in the snapshot");
            let mut upstream = BTreeMap::new();
            let mut source_reads = BTreeMap::new();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            use std::hash::{Hash, Hasher};
            (k.as_str(), &asset.code_version.value).hash(&mut hasher);
            for dep in &asset.deps {
                let (read, data) = self.read(branch, snapshot, dep);
                if snapshot.get(dep).is_some_and(|a| a.kind == AssetKind::Source) {
                    source_reads.insert(dep.clone(), data);
                }
                (dep.as_str(), data).hash(&mut hasher);
                upstream.insert(dep.clone(), read);
            }
            self.next_id += 1;
            let id = BuildId(self.next_id);
            let built = Built {
                id,
                fingerprint: snapshot.fingerprint(k).expect("a fingerprint"),
                code_version: asset.code_version.value.clone(),
                partitions: String::new(),
                upstream,
            };
            self.data.insert(id, hasher.finish());
            self.source_reads.insert(id, source_reads);
            match branch {
                None => {
                    self.production.insert(k.clone(), built);
                }
                Some(b) => {
                    self.branches.entry(b.to_owned()).or_default().insert(k.clone(), (run, built));
                }
            }
        }
        run
    }

    fn candidates(&self) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        for (branch, builds) in &self.branches {
            for (k, (run, built)) in builds {
                let unmovable = self.unmovable.contains(&(branch.clone(), k.clone()));
                candidates.push(Candidate {
                    key: k.clone(),
                    deployment: DeploymentName::new(branch).expect("a valid name"),
                    run: *run,
                    built: built.clone(),
                    unmovable: unmovable.then(|| "a view".to_owned()),
                });
            }
        }
        candidates
    }

    fn catch_up(&self, snapshot: &Snapshot) -> CatchUp {
        let candidates = self.candidates();
        decide(Input { snapshot, production: &self.production, candidates: &candidates })
    }

    /// Carries a catch-up out: promotions take the branch's build, rebuilds compute afresh from
    /// what production serves at that point.
    fn apply(&mut self, snapshot: &Snapshot, catch_up: &CatchUp) {
        for decision in catch_up.steps() {
            match &decision.action {
                Action::Promote { build, .. } => {
                    let built = self
                        .branches
                        .values()
                        .flat_map(|b| b.values())
                        .find(|(_, built)| built.id == *build)
                        .map(|(_, built)| built.clone())
                        .expect("a promoted build exists");
                    self.production.insert(decision.key.clone(), built);
                }
                Action::Rebuild { .. } => {
                    self.build(None, snapshot, &[decision.key.as_str()]);
                }
                Action::UpToDate => unreachable!("steps() leaves them out"),
            }
        }
    }

    /// What a build of `k` in production would hold now, reading the tables production serves
    /// and the sources as `sources` says (external data Offshoot cannot version: a promoted
    /// table is what production would have built when the branch read them).
    fn fresh_data(
        &self,
        snapshot: &Snapshot,
        k: &AssetKey,
        sources: &BTreeMap<AssetKey, u64>,
    ) -> u64 {
        use std::hash::{Hash, Hasher};
        let asset = snapshot.get(k).expect("in the snapshot");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (k.as_str(), &asset.code_version.value).hash(&mut hasher);
        for dep in &asset.deps {
            let (_, data) = self.read(None, snapshot, dep);
            let data = sources.get(dep).copied().unwrap_or(data);
            (dep.as_str(), data).hash(&mut hasher);
        }
        hasher.finish()
    }
}

fn render(catch_up: &CatchUp) -> String {
    let mut out = String::new();
    for decision in &catch_up.decisions {
        out.push_str(&format!("{}: {}\n", decision.key, decision.action));
    }
    out
}

fn check(story: impl FnOnce(&mut World) -> Snapshot, expect: Expect) {
    let mut world = World::default();
    let target = story(&mut world);
    expect.assert_eq(&render(&world.catch_up(&target)));
}

/// raw_orders, raw_customers → orders, customers → revenue → report.
const SHOP: &[(&str, &[&str])] = &[
    ("raw_orders", &[]),
    ("raw_customers", &[]),
    ("orders", &["raw_orders"]),
    ("customers", &["raw_customers"]),
    ("revenue", &["orders", "customers"]),
    ("report", &["revenue"]),
];

const ALL: &[&str] = &["orders", "customers", "revenue", "report"];

#[test]
fn nothing_changed_is_up_to_date() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            main
        },
        expect![[r#"
            customers: up to date
            orders: up to date
            revenue: up to date
            report: up to date
        "#]],
    );
}

#[test]
fn a_fresh_production_builds_everything() {
    check(
        |_| snapshot(SHOP, &[]),
        expect![[r#"
            customers: built (not in production yet; never built in a branch)
            orders: built (not in production yet; never built in a branch)
            revenue: built (not in production yet; never built in a branch)
            report: built (not in production yet; never built in a branch)
        "#]],
    );
}

#[test]
fn what_the_branch_built_is_promoted() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let branch = snapshot(SHOP, &[("orders", "v1")]);
            world.build(Some("feature-x"), &branch, &["orders", "revenue", "report"]);
            branch
        },
        expect![[r#"
            customers: up to date
            orders: promoted (from feature-x, run 2)
            revenue: promoted (from feature-x, run 2)
            report: promoted (from feature-x, run 2)
        "#]],
    );
}

#[test]
fn a_partially_built_branch_is_mixed() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let branch = snapshot(SHOP, &[("orders", "v1")]);
            world.build(Some("feature-x"), &branch, &["orders", "revenue"]);
            branch
        },
        expect![[r#"
            customers: up to date
            orders: promoted (from feature-x, run 2)
            revenue: promoted (from feature-x, run 2)
            report: built (changed; never built in a branch)
        "#]],
    );
}

#[test]
fn main_changed_an_upstream_after_the_fork() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let branch = snapshot(SHOP, &[("orders", "v1")]);
            world.build(Some("feature-x"), &branch, &["orders", "revenue", "report"]);
            // Main moves ahead: customers changes and production catches up with it.
            let ahead = snapshot(SHOP, &[("customers", "v1")]);
            world.build(None, &ahead, &["customers", "revenue", "report"]);
            snapshot(SHOP, &[("orders", "v1"), ("customers", "v1")])
        },
        expect![[r#"
            customers: up to date
            orders: promoted (from feature-x, run 2)
            revenue: built (changed; main changed upstream customers after the fork)
            report: built (changed; main changed upstream customers after the fork)
        "#]],
    );
}

#[test]
fn production_refreshed_an_upstream_after_the_branch_built() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let branch = snapshot(SHOP, &[("revenue", "v1")]);
            world.build(Some("feature-x"), &branch, &["revenue", "report"]);
            world.sources.insert(key("raw_customers"), 7);
            world.build(None, &main, &["customers"]);
            branch
        },
        expect![[r#"
            customers: up to date
            orders: up to date
            revenue: built (changed; production refreshed customers after feature-x built it)
            report: built (changed; feature-x's revenue, which it read, is not promoted)
        "#]],
    );
}

#[test]
fn a_view_is_not_movable() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let branch = snapshot(SHOP, &[("orders", "v1")]);
            world.build(Some("feature-x"), &branch, &["orders", "revenue", "report"]);
            world.unmovable.insert(("feature-x".to_owned(), key("revenue")));
            branch
        },
        expect![[r#"
            customers: up to date
            orders: promoted (from feature-x, run 2)
            revenue: built (changed; not movable: feature-x's is a view)
            report: built (changed; feature-x's revenue, which it read, is not promoted)
        "#]],
    );
}

#[test]
fn a_build_of_older_branch_code_is_not_taken() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let first = snapshot(SHOP, &[("orders", "v1")]);
            world.build(Some("feature-x"), &first, &["orders"]);
            // The branch pushed v2 and merged without building it.
            snapshot(SHOP, &[("orders", "v2")])
        },
        expect![[r#"
            customers: up to date
            orders: built (changed; feature-x built it from other code)
            revenue: built (changed; never built in a branch)
            report: built (changed; never built in a branch)
        "#]],
    );
}

#[test]
fn the_newest_valid_build_of_several_branches_wins() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let branch = snapshot(SHOP, &[("orders", "v1")]);
            world.build(Some("feature-a"), &branch, &["orders", "revenue"]);
            world.build(Some("feature-b"), &branch, &["orders"]);
            branch
        },
        // feature-b's orders is newer; feature-a's revenue read feature-a's own orders, which is
        // not the one promoted.
        expect![[r#"
            customers: up to date
            orders: promoted (from feature-b, run 3)
            revenue: built (changed; feature-a's orders, which it read, is not promoted)
            report: built (changed; never built in a branch)
        "#]],
    );
}

#[test]
fn a_new_asset_built_in_the_branch_is_promoted() {
    const GROWN: &[(&str, &[&str])] = &[
        ("raw_orders", &[]),
        ("raw_customers", &[]),
        ("orders", &["raw_orders"]),
        ("customers", &["raw_customers"]),
        ("revenue", &["orders", "customers"]),
        ("report", &["revenue"]),
        ("churn", &["customers"]),
    ];
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            let branch = snapshot(GROWN, &[]);
            world.build(Some("feature-x"), &branch, &["churn"]);
            branch
        },
        expect![[r#"
            customers: up to date
            orders: up to date
            churn: promoted (from feature-x, run 2)
            revenue: up to date
            report: up to date
        "#]],
    );
}

#[test]
fn a_production_table_the_branch_read_is_replaced_in_this_catch_up() {
    check(
        |world| {
            let main = snapshot(SHOP, &[]);
            world.build(None, &main, ALL);
            // The branch changes report only, reading production's revenue. Production's orders
            // has no record (built outside Offshoot), so the catch-up builds it and then
            // revenue, whose fingerprint is unchanged.
            let branch = snapshot(SHOP, &[("report", "v1")]);
            world.build(Some("feature-x"), &branch, &["report"]);
            world.production.remove(&key("orders"));
            branch
        },
        expect![[r#"
            customers: up to date
            orders: built (not in production yet; never built in a branch)
            revenue: built (upstream orders is replaced; never built in a branch)
            report: built (changed; production's revenue, which it read, is replaced in this catch-up)
        "#]],
    );
}

// The property test.

/// A linear-ish random DAG: asset `i` may depend on any earlier one; `raw_0` and `raw_1` are
/// sources.
fn graph_names(n: usize) -> Vec<String> {
    let mut names = vec!["raw_0".to_owned(), "raw_1".to_owned()];
    names.extend((0..n).map(|i| format!("a{i}")));
    names
}

#[derive(Debug, Clone)]
enum Event {
    /// Production builds the assets in `mask` from code versions `versions`.
    Production { versions: u8, mask: u8 },
    /// Branch `branch` builds the masked assets from `versions`.
    Branch { branch: u8, versions: u8, mask: u8 },
    /// A source's data changes.
    Source { source: u8 },
    /// A branch table becomes unmovable (a view).
    View { branch: u8, asset: u8 },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (0..4u8, any::<u8>()).prop_map(|(versions, mask)| Event::Production { versions, mask }),
        4 => (0..2u8, 0..4u8, any::<u8>()).prop_map(|(branch, versions, mask)| Event::Branch { branch, versions, mask }),
        1 => (0..2u8).prop_map(|source| Event::Source { source }),
        1 => (0..2u8, 0..6u8).prop_map(|(branch, asset)| Event::View { branch, asset }),
    ]
}

#[derive(Debug, Clone)]
struct Graph {
    names: Vec<String>,
    deps: Vec<Vec<usize>>,
}

impl Graph {
    /// Code versions from the bits of `versions`: asset `i` is `v1` when bit `i % 2` is set and
    /// `i` is even, so the choice touches a few assets at once.
    fn snapshot(&self, versions: u8) -> Snapshot {
        let mut edges: Vec<(&str, Vec<&str>)> = Vec::new();
        let mut changed = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            let deps = self.deps[i].iter().map(|d| self.names[*d].as_str()).collect();
            edges.push((name.as_str(), deps));
            if i >= 2 && (versions >> ((i - 2) % 2)) & 1 == 1 && (i - 2) % 3 != 1 {
                changed.push((name.as_str(), "v1"));
            }
        }
        let edges: Vec<(&str, &[&str])> = edges.iter().map(|(k, d)| (*k, d.as_slice())).collect();
        snapshot(&edges, &changed)
    }
}

fn graph() -> impl Strategy<Value = Graph> {
    (1..6usize).prop_flat_map(|n| {
        let names = graph_names(n);
        let total = names.len();
        proptest::collection::vec(any::<u8>(), n).prop_map(move |bits| {
            let mut deps = vec![Vec::new(), Vec::new()];
            for (i, b) in bits.iter().enumerate() {
                let me = i + 2;
                let mut mine: Vec<usize> = (0..me).filter(|d| (b >> (d % 8)) & 1 == 1).collect();
                if mine.is_empty() {
                    mine.push(b.count_ones() as usize % me);
                }
                deps.push(mine);
            }
            debug_assert_eq!(deps.len(), total);
            Graph { names: names.clone(), deps }
        })
    })
}

/// The reference: each asset's action defined recursively through its upstreams, in whatever
/// order the recursion visits them; only the kind of action and the promoted build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    UpToDate,
    Promote(BuildId),
    Rebuild,
}

fn model(
    snapshot: &Snapshot,
    production: &BTreeMap<AssetKey, Built>,
    candidates: &[Candidate],
    k: &AssetKey,
    memo: &mut BTreeMap<AssetKey, Model>,
) -> Model {
    if let Some(m) = memo.get(k) {
        return *m;
    }
    let asset = snapshot.get(k).expect("in the snapshot");
    let fingerprint = snapshot.fingerprint(k).expect("a fingerprint");
    let built_deps: Vec<&AssetKey> = asset
        .deps
        .iter()
        .filter(|d| snapshot.get(d).is_some_and(|a| a.kind != AssetKind::Source))
        .collect();
    let deps: Vec<(AssetKey, Model)> = built_deps
        .iter()
        .map(|d| ((*d).clone(), model(snapshot, production, candidates, d, memo)))
        .collect();
    let fresh = production.get(k).is_some_and(|b| b.fingerprint == fingerprint);
    let result = if fresh && deps.iter().all(|(_, m)| *m == Model::UpToDate) {
        Model::UpToDate
    } else {
        let mut mine: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| &c.key == k && c.built.fingerprint == fingerprint && c.unmovable.is_none())
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(c.built.id));
        let ok = |c: &Candidate| {
            deps.iter().all(|(d, m)| match c.built.upstream.get(d).map(|u| u.read) {
                Some(Read::Production(id)) => {
                    *m == Model::UpToDate && production.get(d).map(|b| b.id) == Some(id)
                }
                Some(Read::Own(id)) => *m == Model::Promote(id),
                Some(Read::External) | None => false,
            })
        };
        mine.into_iter().find(|c| ok(c)).map_or(Model::Rebuild, |c| Model::Promote(c.built.id))
    };
    memo.insert(k.clone(), result);
    result
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decisions_match_the_model_and_promotions_hold_what_production_would_build(
        graph in graph(),
        events in proptest::collection::vec(event(), 0..12),
        target in 0..4u8,
    ) {
        let mut world = World::default();
        let branches = ["feature-a", "feature-b"];
        for event in &events {
            match *event {
                Event::Production { versions, mask } | Event::Branch { versions, mask, .. } => {
                    let snapshot = graph.snapshot(versions);
                    let keys: Vec<&str> = graph.names[2..]
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| (mask >> i) & 1 == 1)
                        .map(|(_, n)| n.as_str())
                        .collect();
                    let branch = match *event {
                        Event::Branch { branch, .. } => Some(branches[usize::from(branch)]),
                        _ => None,
                    };
                    world.build(branch, &snapshot, &keys);
                }
                Event::Source { source } => {
                    *world.sources.entry(key(&format!("raw_{source}"))).or_default() += 1;
                }
                Event::View { branch, asset } => {
                    if let Some(name) = graph.names.get(2 + usize::from(asset)) {
                        world.unmovable.insert((branches[usize::from(branch)].to_owned(), key(name)));
                    }
                }
            }
        }
        let snapshot = graph.snapshot(target);
        let catch_up = world.catch_up(&snapshot);
        let candidates = world.candidates();

        // One decision per built asset, in topological order.
        let order: Vec<&AssetKey> = snapshot
            .topological_order()
            .iter()
            .filter(|k| snapshot.get(k).is_some_and(|a| a.kind != AssetKind::Source))
            .collect();
        let decided: Vec<&AssetKey> = catch_up.decisions.iter().map(|d| &d.key).collect();
        prop_assert_eq!(decided, order);

        // The same actions as the reference model.
        let mut memo = BTreeMap::new();
        for decision in &catch_up.decisions {
            let expected = model(&snapshot, &world.production, &candidates, &decision.key, &mut memo);
            let actual = match &decision.action {
                Action::UpToDate => Model::UpToDate,
                Action::Promote { build, .. } => Model::Promote(*build),
                Action::Rebuild { .. } => Model::Rebuild,
            };
            prop_assert_eq!(actual, expected, "{}", decision.key);
            if let Action::Rebuild { reason: RebuildReason::NotBuiltInABranch, .. } = &decision.action {
                prop_assert!(candidates.iter().all(|c| c.key != decision.key));
            }
        }

        // Carried out, every promoted table holds what a rebuild in its place would have.
        let promoted: BTreeSet<AssetKey> = catch_up.promotions().map(|d| d.key.clone()).collect();
        world.apply(&snapshot, &catch_up);
        for k in &promoted {
            let built = &world.production[k];
            prop_assert_eq!(built.fingerprint, snapshot.fingerprint(k).expect("a fingerprint"));
            let sources = &world.source_reads[&built.id];
            prop_assert_eq!(world.data[&built.id], world.fresh_data(&snapshot, k, sources), "{}", k);
        }
        // And afterwards production is up to date: a second catch-up does nothing.
        let again = world.catch_up(&snapshot);
        prop_assert!(again.is_noop(), "{}", render(&again));
    }
}
