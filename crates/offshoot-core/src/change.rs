//! Change tracking: why each asset of a head snapshot differs from a base snapshot, and which
//! unchanged assets are downstream of a change.
//!
//! Reason names are Dagster's (`NEW`, `CODE_VERSION`, ...) so users recognise them; every reason
//! carries its details. Computing a change set does not diff text: code diffs are rendered on
//! demand by [`CodeChange::unified_diff`], which keeps `diff` linear in the number of assets.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::{Asset, AssetKey, CodeVersion, PartitionsDefinition, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeReason {
    New,
    Removed,
    CodeVersion,
    Dependencies,
    PartitionsDefinition,
    Tags,
    Metadata,
}

impl ChangeReason {
    pub const ALL: [ChangeReason; 7] = [
        ChangeReason::New,
        ChangeReason::Removed,
        ChangeReason::CodeVersion,
        ChangeReason::Dependencies,
        ChangeReason::PartitionsDefinition,
        ChangeReason::Tags,
        ChangeReason::Metadata,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeReason::New => "NEW",
            ChangeReason::Removed => "REMOVED",
            ChangeReason::CodeVersion => "CODE_VERSION",
            ChangeReason::Dependencies => "DEPENDENCIES",
            ChangeReason::PartitionsDefinition => "PARTITIONS_DEFINITION",
            ChangeReason::Tags => "TAGS",
            ChangeReason::Metadata => "METADATA",
        }
    }

    /// Whether the change can alter the asset's data. Tag and metadata edits cannot, so they do
    /// not make anything downstream IMPACTED.
    pub fn affects_data(self) -> bool {
        !matches!(self, ChangeReason::Tags | ChangeReason::Metadata | ChangeReason::Removed)
    }

    pub fn parse(name: &str) -> Option<ChangeReason> {
        ChangeReason::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ChangeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Old and new code of an asset whose code version changed.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeChange {
    pub old_version: CodeVersion,
    pub new_version: CodeVersion,
    pub old_code: Arc<str>,
    pub new_code: Arc<str>,
}

impl CodeChange {
    /// A unified diff of the code as written, with three lines of context.
    pub fn unified_diff(&self, old_name: &str, new_name: &str) -> String {
        similar::TextDiff::from_lines(&*self.old_code, &*self.new_code)
            .unified_diff()
            .context_radius(3)
            .header(old_name, new_name)
            .to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SetChange {
    pub added: Vec<AssetKey>,
    pub removed: Vec<AssetKey>,
}

/// Added, changed (old, new) and removed keys of a string map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MapChange {
    pub added: BTreeMap<String, String>,
    pub changed: BTreeMap<String, (String, String)>,
    pub removed: BTreeMap<String, String>,
}

impl MapChange {
    fn between(
        old: &BTreeMap<String, String>,
        new: &BTreeMap<String, String>,
    ) -> Option<MapChange> {
        if old == new {
            return None;
        }
        let mut change = MapChange::default();
        for (key, value) in new {
            match old.get(key) {
                None => {
                    change.added.insert(key.clone(), value.clone());
                }
                Some(previous) if previous != value => {
                    change.changed.insert(key.clone(), (previous.clone(), value.clone()));
                }
                Some(_) => {}
            }
        }
        for (key, value) in old {
            if !new.contains_key(key) {
                change.removed.insert(key.clone(), value.clone());
            }
        }
        Some(change)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChangeDetails {
    pub code: Option<CodeChange>,
    pub dependencies: Option<SetChange>,
    pub partitions: Option<(Option<PartitionsDefinition>, Option<PartitionsDefinition>)>,
    pub tags: Option<MapChange>,
    pub metadata: Option<MapChange>,
}

/// One asset that is new, removed or changed in head.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetChange {
    pub key: AssetKey,
    pub reasons: Vec<ChangeReason>,
    pub details: ChangeDetails,
}

/// An unchanged asset downstream of a change; `path` runs from the nearest changed asset to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Impacted {
    pub key: AssetKey,
    pub path: Vec<AssetKey>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChangeSet {
    /// Sorted by key.
    pub changes: Vec<AssetChange>,
    /// Sorted by key.
    pub impacted: Vec<Impacted>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn change(&self, key: &AssetKey) -> Option<&AssetChange> {
        self.changes.binary_search_by(|c| c.key.cmp(key)).ok().map(|i| &self.changes[i])
    }

    pub fn impacted(&self, key: &AssetKey) -> Option<&Impacted> {
        self.impacted.binary_search_by(|c| c.key.cmp(key)).ok().map(|i| &self.impacted[i])
    }

    /// How many changes carry `reason`.
    pub fn count(&self, reason: ChangeReason) -> usize {
        self.changes.iter().filter(|c| c.reasons.contains(&reason)).count()
    }

    pub fn counts(&self) -> ChangeCounts {
        let new = self.count(ChangeReason::New);
        let removed = self.count(ChangeReason::Removed);
        ChangeCounts {
            new,
            changed: self.changes.len() - new - removed,
            removed,
            impacted: self.impacted.len(),
        }
    }
}

/// The one definition of a change set's counts, shown alike by the UI (deployments list and
/// deployment page), the CLI and the pull-request comment. The four are disjoint: `changed` is
/// an asset both sides have that differs, never a new or removed one, and `impacted` is an
/// unchanged asset downstream of a change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    pub new: usize,
    pub changed: usize,
    pub removed: usize,
    pub impacted: usize,
}

impl ChangeCounts {
    /// "1 new, 2 changed, 1 removed, 2 impacted downstream", leaving out the zero counts;
    /// "no changes" when every count is zero.
    pub fn phrase(&self) -> String {
        let parts: Vec<String> = [
            (self.new, "new"),
            (self.changed, "changed"),
            (self.removed, "removed"),
            (self.impacted, "impacted downstream"),
        ]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, word)| format!("{count} {word}"))
        .collect();
        if parts.is_empty() {
            "no changes".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Compares every asset of `head` with `base`.
pub fn diff(base: &Snapshot, head: &Snapshot) -> ChangeSet {
    let mut changes = Vec::new();
    // Both iterate in key order: merge them.
    let mut base_assets = base.shared_assets().peekable();
    let mut head_assets = head.shared_assets().peekable();
    loop {
        let change = match (base_assets.peek(), head_assets.peek()) {
            (None, None) => break,
            // A snapshot derived from the other shares what it did not change.
            (Some(b), Some(h)) if Arc::ptr_eq(b, h) => {
                base_assets.next();
                head_assets.next();
                None
            }
            (Some(b), Some(h)) if b.key == h.key => {
                let change = compare(b, h);
                base_assets.next();
                head_assets.next();
                change
            }
            (Some(b), h) if h.is_none_or(|h| b.key < h.key) => {
                let key = b.key.clone();
                base_assets.next();
                Some(AssetChange {
                    key,
                    reasons: vec![ChangeReason::Removed],
                    details: ChangeDetails::default(),
                })
            }
            (_, Some(h)) => {
                let key = h.key.clone();
                head_assets.next();
                Some(AssetChange {
                    key,
                    reasons: vec![ChangeReason::New],
                    details: ChangeDetails::default(),
                })
            }
            (Some(_), None) => unreachable!("handled by the arm above"),
        };
        changes.extend(change);
    }
    let impacted = impacted_by(head, &changes);
    ChangeSet { changes, impacted }
}

fn compare(old: &Asset, new: &Asset) -> Option<AssetChange> {
    let mut reasons = Vec::new();
    let mut details = ChangeDetails::default();
    // A kind change (SQL to command) always changes the code version too, since derived versions
    // carry the kind; an explicit version equal across kinds is the user's word.
    if old.code_version.value != new.code_version.value {
        reasons.push(ChangeReason::CodeVersion);
        details.code = Some(CodeChange {
            old_version: old.code_version.clone(),
            new_version: new.code_version.clone(),
            old_code: old.code.clone(),
            new_code: new.code.clone(),
        });
    }
    if old.deps != new.deps {
        reasons.push(ChangeReason::Dependencies);
        details.dependencies = Some(SetChange {
            added: new.deps.difference(&old.deps).cloned().collect(),
            removed: old.deps.difference(&new.deps).cloned().collect(),
        });
    }
    if old.partitions != new.partitions {
        reasons.push(ChangeReason::PartitionsDefinition);
        details.partitions = Some((old.partitions.clone(), new.partitions.clone()));
    }
    if let Some(tags) = MapChange::between(&old.tags, &new.tags) {
        reasons.push(ChangeReason::Tags);
        details.tags = Some(tags);
    }
    // The description is metadata, not code (a docstring edit is no CODE_VERSION). Keys either
    // side leaves untracked are not compared.
    let tracked = |asset: &Asset| {
        let mut map = with_description(asset);
        map.retain(|k, _| {
            !old.untracked_metadata.contains(k) && !new.untracked_metadata.contains(k)
        });
        map
    };
    if let Some(metadata) = MapChange::between(&tracked(old), &tracked(new)) {
        reasons.push(ChangeReason::Metadata);
        details.metadata = Some(metadata);
    }
    (!reasons.is_empty()).then(|| AssetChange { key: new.key.clone(), reasons, details })
}

/// The asset's metadata plus its description under `description` (`(description)` if the
/// metadata has a key of that name).
fn with_description(asset: &Asset) -> BTreeMap<String, String> {
    let mut map = asset.metadata.clone();
    if let Some(description) = &asset.description {
        let key = if map.contains_key("description") { "(description)" } else { "description" };
        map.insert(key.to_owned(), description.clone());
    }
    map
}

/// Multi-source breadth-first search downstream from every asset of head whose data may change,
/// so each impacted asset gets a shortest path from its nearest change. Assets with any change
/// are reported as changed, never as impacted.
fn impacted_by(head: &Snapshot, changes: &[AssetChange]) -> Vec<Impacted> {
    let changed: HashSet<&AssetKey> = changes.iter().map(|c| &c.key).collect();
    let sources: Vec<&AssetKey> = changes
        .iter()
        .filter(|c| c.reasons.iter().any(|r| r.affects_data()))
        .map(|c| &c.key)
        .collect();
    // Hashed, not ordered: at 100,000 assets the walk is most of a change set's cost.
    let mut came_from: HashMap<&AssetKey, Option<&AssetKey>> =
        sources.iter().map(|k| (*k, None)).collect();
    let mut queue: VecDeque<&AssetKey> = sources.into_iter().collect();
    while let Some(key) = queue.pop_front() {
        for child in head.downstream_of(key) {
            if !came_from.contains_key(child) {
                came_from.insert(child, Some(key));
                queue.push_back(child);
            }
        }
    }
    let mut reached: Vec<(&AssetKey, &AssetKey)> = came_from
        .iter()
        .filter_map(|(key, parent)| Some((*key, (*parent)?)))
        .filter(|(key, _)| !changed.contains(key))
        .collect();
    reached.sort_unstable();
    let mut impacted = Vec::with_capacity(reached.len());
    for (key, parent) in reached {
        let parent = Some(parent);
        let mut path = vec![key.clone()];
        let mut cursor = parent;
        while let Some(step) = cursor {
            path.push(step.clone());
            cursor = came_from[step];
        }
        path.reverse();
        impacted.push(Impacted { key: key.clone(), path });
    }
    impacted
}
