//! Runs as data: the plan (selected materializable assets in dependency order) and the pure
//! scheduler that says which steps may start, and which to skip after a failure.

use std::collections::{BTreeMap, BTreeSet};

use crate::deployment::string_enum;
use crate::{AssetKey, AssetKind, Snapshot};

string_enum!(RunStatus {
    Queued = "queued",
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
    Canceled = "canceled",
});

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Canceled)
    }
}

string_enum!(StepStatus {
    Pending = "pending",
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
    Skipped = "skipped",
    Canceled = "canceled",
});

impl StepStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    pub key: AssetKey,
    pub kind: AssetKind,
    /// Indices (into the plan) of the steps this one reads from.
    pub upstream: Vec<usize>,
}

/// The steps of a run in topological order. Sources are never steps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunPlan {
    pub steps: Vec<PlannedStep>,
}

impl RunPlan {
    pub fn new(snapshot: &Snapshot, selected: &BTreeSet<AssetKey>) -> RunPlan {
        let mut index: BTreeMap<&AssetKey, usize> = BTreeMap::new();
        let mut steps = Vec::new();
        for key in snapshot.topological_order() {
            let Some(asset) = snapshot.get(key) else { continue };
            if !selected.contains(key) || !asset.kind.is_materializable() {
                continue;
            }
            let upstream = asset.deps.iter().filter_map(|d| index.get(d).copied()).collect();
            index.insert(key, steps.len());
            steps.push(PlannedStep { key: key.clone(), kind: asset.kind, upstream });
        }
        RunPlan { steps }
    }

    /// Steps that may start now: pending, with every upstream step succeeded.
    pub fn ready(&self, statuses: &[StepStatus]) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| statuses[i] == StepStatus::Pending)
            .filter(|&i| {
                self.steps[i].upstream.iter().all(|&u| statuses[u] == StepStatus::Succeeded)
            })
            .collect()
    }

    /// Marks every pending step downstream of a failed, skipped or canceled step as skipped.
    /// Returns the indices it changed.
    pub fn skip_downstream_of_failures(&self, statuses: &mut [StepStatus]) -> Vec<usize> {
        let mut changed = Vec::new();
        // Topological order: one forward pass sees every upstream's final state first.
        for i in 0..self.steps.len() {
            if statuses[i] != StepStatus::Pending {
                continue;
            }
            let blocked = self.steps[i].upstream.iter().any(|&u| {
                matches!(
                    statuses[u],
                    StepStatus::Failed | StepStatus::Skipped | StepStatus::Canceled
                )
            });
            if blocked {
                statuses[i] = StepStatus::Skipped;
                changed.push(i);
            }
        }
        changed
    }

    /// The run's final status once every step is finished.
    pub fn outcome(statuses: &[StepStatus]) -> Option<RunStatus> {
        if !statuses.iter().all(|s| s.is_finished()) {
            return None;
        }
        Some(if statuses.contains(&StepStatus::Canceled) {
            RunStatus::Canceled
        } else if statuses.iter().any(|s| matches!(s, StepStatus::Failed | StepStatus::Skipped)) {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Asset;

    fn snapshot(edges: &[(&str, &[&str])]) -> Snapshot {
        let key = |k: &str| AssetKey::new(k).expect("key");
        Snapshot::new(edges.iter().map(|(k, deps)| {
            let kind = if k.starts_with("raw") { AssetKind::Source } else { AssetKind::Sql };
            let mut asset = Asset::new(key(k), kind);
            asset.deps = deps.iter().map(|d| key(d)).collect();
            asset
        }))
        .expect("valid graph")
    }

    #[test]
    fn plans_selected_assets_in_order_and_skips_after_failure() {
        let s = snapshot(&[
            ("raw", &[]),
            ("a", &["raw"]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
            ("e", &[]),
        ]);
        let selected: BTreeSet<AssetKey> =
            ["raw", "a", "b", "c", "d"].iter().map(|k| AssetKey::new(k).expect("key")).collect();
        let plan = RunPlan::new(&s, &selected);
        let keys: Vec<&str> = plan.steps.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        let mut statuses = vec![StepStatus::Pending; 4];
        assert_eq!(plan.ready(&statuses), [0]);
        statuses[0] = StepStatus::Succeeded;
        assert_eq!(plan.ready(&statuses), [1, 2]);
        statuses[1] = StepStatus::Failed;
        statuses[2] = StepStatus::Succeeded;
        assert_eq!(plan.skip_downstream_of_failures(&mut statuses), [3]);
        assert_eq!(RunPlan::outcome(&statuses), Some(RunStatus::Failed));
    }
}
