//! The catch-up decision: after production deploys a new snapshot, what becomes of each asset.
//! Pure: the caller reads production's and the branches' current materializations (with their
//! provenance) and carries the decision out.
//!
//! Per asset, in topological order:
//! - **up to date**: production's current materialization has the asset's fingerprint and no
//!   upstream of it is replaced in this catch-up;
//! - **promote** a branch's table: some branch deployment's current materialization has the
//!   identical fingerprint, its table can be moved, and every upstream it read is what
//!   production serves now (and keeps serving: that upstream is up to date) or is the very
//!   materialization promoted for that upstream in this same catch-up;
//! - **rebuild** otherwise, with the reason the best candidate could not be taken.
//!
//! Sources are external tables: nobody builds them, so they are not steps and reading one is
//! always valid. The rules are checked against a reference model by proptest (`tests`).

use std::collections::BTreeMap;
use std::fmt;

use crate::fingerprint::{Fingerprint, FingerprintParts};
use crate::{AssetKey, AssetKind, DeploymentName, Snapshot};

/// A materialization's id in the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BuildId(pub i64);

/// What a materialization read for one of its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Production's materialization of the upstream.
    Production(BuildId),
    /// A materialization of the building deployment itself (production reading its own is
    /// `Production`).
    Own(BuildId),
    /// Nothing Offshoot recorded: a source, or a table that no recorded run built.
    External,
}

/// One upstream of a materialization: its fingerprint then and what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamRead {
    pub fingerprint: Fingerprint,
    pub read: Read,
}

/// A materialization as the catch-up sees it: its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub id: BuildId,
    pub fingerprint: Fingerprint,
    pub code_version: String,
    pub partitions: String,
    pub upstream: BTreeMap<AssetKey, UpstreamRead>,
}

/// A branch deployment's current materialization of `key`: the table in its schema now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: AssetKey,
    pub deployment: DeploymentName,
    pub run: i64,
    pub built: Built,
    /// Why its table cannot be moved into production (`a view`, `stored by an IO manager`);
    /// `None` when it can.
    pub unmovable: Option<String>,
}

/// What the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Production's new snapshot.
    pub snapshot: &'a Snapshot,
    /// Production's current materialization of each asset.
    pub production: &'a BTreeMap<AssetKey, Built>,
    /// Every branch deployment's current materializations, in any order.
    pub candidates: &'a [Candidate],
}

/// Why production's table of an asset must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Production has never materialized it.
    NotInProduction,
    /// Production's table was built from another fingerprint (other code, partitions or
    /// upstreams).
    Changed,
    /// Same fingerprint, but this upstream is replaced in this catch-up.
    UpstreamReplaced(AssetKey),
}

/// Why an asset is rebuilt instead of promoted: what was wrong with the best candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildReason {
    /// No branch deployment has a table of it.
    NotBuiltInABranch,
    /// The branch's table cannot be moved (a view, stored elsewhere...).
    NotMovable {
        deployment: DeploymentName,
        why: String,
    },
    /// The branch built it from another code version.
    OtherCode {
        deployment: DeploymentName,
    },
    OtherPartitions {
        deployment: DeploymentName,
    },
    /// Its upstream set differs.
    OtherDependencies {
        deployment: DeploymentName,
    },
    /// The branch read production's `upstream`, whose definition changed since (main moved
    /// ahead after the fork).
    MainChangedUpstream {
        deployment: DeploymentName,
        upstream: AssetKey,
    },
    /// The branch read its own `upstream`, built from another definition than production's now.
    UpstreamChanged {
        deployment: DeploymentName,
        upstream: AssetKey,
    },
    /// The branch read a materialization of `upstream` that production no longer serves.
    ProductionRefreshed {
        deployment: DeploymentName,
        upstream: AssetKey,
    },
    /// The branch read production's `upstream`, which this catch-up replaces.
    UpstreamReplaced {
        deployment: DeploymentName,
        upstream: AssetKey,
    },
    /// The branch read its own `upstream`, which this catch-up does not promote.
    UpstreamNotPromoted {
        deployment: DeploymentName,
        upstream: AssetKey,
    },
    /// The branch read `upstream` without a recorded materialization.
    UpstreamNotRecorded {
        deployment: DeploymentName,
        upstream: AssetKey,
    },
}

impl fmt::Display for RebuildReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebuildReason::NotBuiltInABranch => f.write_str("never built in a branch"),
            RebuildReason::NotMovable { deployment, why } => {
                write!(f, "not movable: {deployment}'s is {why}")
            }
            RebuildReason::OtherCode { deployment } => {
                write!(f, "{deployment} built it from other code")
            }
            RebuildReason::OtherPartitions { deployment } => {
                write!(f, "{deployment} built it with other partitions")
            }
            RebuildReason::OtherDependencies { deployment } => {
                write!(f, "{deployment} built it with other dependencies")
            }
            RebuildReason::MainChangedUpstream { upstream, .. } => {
                write!(f, "main changed upstream {upstream} after the fork")
            }
            RebuildReason::UpstreamChanged { deployment, upstream } => {
                write!(f, "upstream {upstream} changed after {deployment} built it")
            }
            RebuildReason::ProductionRefreshed { deployment, upstream } => {
                write!(f, "production refreshed {upstream} after {deployment} built it")
            }
            RebuildReason::UpstreamReplaced { upstream, .. } => {
                write!(f, "production's {upstream}, which it read, is replaced in this catch-up")
            }
            RebuildReason::UpstreamNotPromoted { deployment, upstream } => {
                write!(f, "{deployment}'s {upstream}, which it read, is not promoted")
            }
            RebuildReason::UpstreamNotRecorded { deployment, upstream } => {
                write!(f, "{deployment} read {upstream} without a recorded materialization")
            }
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::NotInProduction => f.write_str("not in production yet"),
            Need::Changed => f.write_str("changed"),
            Need::UpstreamReplaced(upstream) => write!(f, "upstream {upstream} is replaced"),
        }
    }
}

/// What happens to one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    UpToDate,
    /// Take `deployment`'s table (materialization `build`, run `run`) without running code.
    Promote {
        need: Need,
        deployment: DeploymentName,
        run: i64,
        build: BuildId,
    },
    /// Run the asset's code in production.
    Rebuild {
        need: Need,
        reason: RebuildReason,
    },
}

impl fmt::Display for Action {
    /// What a catch-up step says: `promoted (from feature-x, run 7)`, `built (...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::UpToDate => f.write_str("up to date"),
            Action::Promote { deployment, run, .. } => {
                write!(f, "promoted (from {deployment}, run {run})")
            }
            Action::Rebuild { need, reason } => write!(f, "built ({need}; {reason})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: AssetKey,
    pub action: Action,
}

/// The whole catch-up: one decision per non-source asset of the snapshot, in topological order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatchUp {
    pub decisions: Vec<Decision>,
}

impl CatchUp {
    /// The decisions that change production (promotions and rebuilds), in order.
    pub fn steps(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.action != Action::UpToDate)
    }

    pub fn promotions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| matches!(d.action, Action::Promote { .. }))
    }

    pub fn rebuilds(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| matches!(d.action, Action::Rebuild { .. }))
    }

    /// Nothing to do: production is up to date.
    pub fn is_noop(&self) -> bool {
        self.steps().next().is_none()
    }

    pub fn action(&self, key: &AssetKey) -> Option<&Action> {
        self.decisions.iter().find(|d| &d.key == key).map(|d| &d.action)
    }
}

/// Decides the catch-up; see the module documentation for the rules.
pub fn decide(input: Input<'_>) -> CatchUp {
    let mut by_key: BTreeMap<&AssetKey, Vec<&Candidate>> = BTreeMap::new();
    for candidate in input.candidates {
        by_key.entry(&candidate.key).or_default().push(candidate);
    }
    // Newest first: a later build is the better candidate when several are valid.
    for list in by_key.values_mut() {
        list.sort_by_key(|candidate| std::cmp::Reverse(candidate.built.id));
    }
    let mut actions: BTreeMap<AssetKey, Action> = BTreeMap::new();
    let mut decisions = Vec::new();
    for key in input.snapshot.topological_order() {
        let asset = input.snapshot.get(key).expect("the order lists the snapshot's keys");
        if asset.kind == AssetKind::Source {
            continue;
        }
        let fingerprint = input.snapshot.fingerprint(key).expect("every asset has a fingerprint");
        let replaced_upstream = asset
            .deps
            .iter()
            .find(|dep| actions.get(*dep).is_some_and(|action| *action != Action::UpToDate));
        let need = match input.production.get(key) {
            None => Some(Need::NotInProduction),
            Some(built) if built.fingerprint != fingerprint => Some(Need::Changed),
            Some(_) => replaced_upstream.map(|dep| Need::UpstreamReplaced(dep.clone())),
        };
        let action = match need {
            None => Action::UpToDate,
            Some(need) => {
                let candidates = by_key.get(key).map(Vec::as_slice).unwrap_or(&[]);
                choose(&input, &actions, key, fingerprint, candidates, need)
            }
        };
        actions.insert(key.clone(), action.clone());
        decisions.push(Decision { key: key.clone(), action });
    }
    CatchUp { decisions }
}

/// The newest valid candidate, or a rebuild saying why the most relevant one is not.
fn choose(
    input: &Input<'_>,
    actions: &BTreeMap<AssetKey, Action>,
    key: &AssetKey,
    fingerprint: Fingerprint,
    candidates: &[&Candidate],
    need: Need,
) -> Action {
    let mut first_reason = None;
    // Candidates with the right fingerprint explain better than those without.
    let (same, other): (Vec<&Candidate>, Vec<&Candidate>) =
        candidates.iter().partition(|c| c.built.fingerprint == fingerprint);
    for candidate in &same {
        match valid(input, actions, candidate) {
            Ok(()) => {
                return Action::Promote {
                    need,
                    deployment: candidate.deployment.clone(),
                    run: candidate.run,
                    build: candidate.built.id,
                }
            }
            Err(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    let reason = first_reason
        .or_else(|| other.first().map(|candidate| mismatch(input, key, candidate)))
        .unwrap_or(RebuildReason::NotBuiltInABranch);
    Action::Rebuild { need, reason }
}

/// Whether a candidate with the right fingerprint may be promoted, given the decisions of its
/// upstreams (made before, in topological order).
fn valid(
    input: &Input<'_>,
    actions: &BTreeMap<AssetKey, Action>,
    candidate: &Candidate,
) -> Result<(), RebuildReason> {
    let deployment = || candidate.deployment.clone();
    if let Some(why) = &candidate.unmovable {
        return Err(RebuildReason::NotMovable { deployment: deployment(), why: why.clone() });
    }
    let asset = input.snapshot.get(&candidate.key).expect("candidates are of snapshot assets");
    for dep in &asset.deps {
        let upstream = || dep.clone();
        let source = input.snapshot.get(dep).is_some_and(|a| a.kind == AssetKind::Source);
        if source {
            continue;
        }
        let Some(read) = candidate.built.upstream.get(dep) else {
            return Err(RebuildReason::OtherDependencies { deployment: deployment() });
        };
        match read.read {
            Read::External => {
                return Err(RebuildReason::UpstreamNotRecorded {
                    deployment: deployment(),
                    upstream: upstream(),
                })
            }
            Read::Production(id) => {
                if input.production.get(dep).map(|built| built.id) != Some(id) {
                    return Err(RebuildReason::ProductionRefreshed {
                        deployment: deployment(),
                        upstream: upstream(),
                    });
                }
                if actions.get(dep) != Some(&Action::UpToDate) {
                    return Err(RebuildReason::UpstreamReplaced {
                        deployment: deployment(),
                        upstream: upstream(),
                    });
                }
            }
            Read::Own(id) => {
                let promoted =
                    matches!(actions.get(dep), Some(Action::Promote { build, .. }) if *build == id);
                if !promoted {
                    return Err(RebuildReason::UpstreamNotPromoted {
                        deployment: deployment(),
                        upstream: upstream(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// What differs between the candidate's fingerprint and the snapshot's: code, partitions,
/// dependencies, or (the first, in order) upstream whose fingerprint differs. An upstream the
/// branch built itself is followed to the root of the difference, so a change main made further
/// up is named as such.
fn mismatch(input: &Input<'_>, key: &AssetKey, candidate: &Candidate) -> RebuildReason {
    let deployment = candidate.deployment.clone();
    let mut key = key;
    let mut built = &candidate.built;
    // Iterative: a hostile chain of own builds cannot overflow the stack, and each step goes one
    // asset up a DAG, so it ends.
    loop {
        let parts = FingerprintParts::of(input.snapshot, key).expect("the snapshot has the asset");
        if built.code_version != parts.code_version {
            return RebuildReason::OtherCode { deployment };
        }
        if built.partitions != parts.partitions {
            return RebuildReason::OtherPartitions { deployment };
        }
        if !built.upstream.keys().eq(parts.upstream.keys()) {
            return RebuildReason::OtherDependencies { deployment };
        }
        let differing = parts.upstream.iter().find_map(|(dep, fingerprint)| {
            let read = &built.upstream[dep];
            (read.fingerprint != *fingerprint).then_some((dep, read.read))
        });
        let Some((dep, read)) = differing else {
            // Same parts, different fingerprint: only the kind can differ (a command asset that
            // became SQL with the same code version).
            return RebuildReason::OtherCode { deployment };
        };
        let upstream = dep.clone();
        match read {
            Read::Production(_) => {
                return RebuildReason::MainChangedUpstream { deployment, upstream };
            }
            Read::External => return RebuildReason::UpstreamChanged { deployment, upstream },
            Read::Own(id) => {
                let own = input.candidates.iter().find(|c| &c.key == dep && c.built.id == id);
                match own {
                    // Only while the root is not found yet; an own upstream built from what
                    // production has now changed in the branch after this build.
                    Some(own) if Some(own.built.fingerprint) != input.snapshot.fingerprint(dep) => {
                        key = &own.key;
                        built = &own.built;
                    }
                    _ => return RebuildReason::UpstreamChanged { deployment, upstream },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
