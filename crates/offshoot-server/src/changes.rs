//! The change set's JSON shape: shared by `offshoot diff --format json`, the REST API and the
//! stored revisions. Stable: fields are added, never renamed or removed.

use std::collections::BTreeMap;

use offshoot_core::{AssetChange, ChangeSet, MapChange};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChangeSetJson {
    pub summary: SummaryJson,
    pub assets: Vec<AssetChangeJson>,
    pub impacted: Vec<ImpactedJson>,
}

/// The change set's counts ([`offshoot_core::ChangeCounts`]), as every revision also reports them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SummaryJson {
    pub new: usize,
    pub changed: usize,
    pub removed: usize,
    pub impacted: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AssetChangeJson {
    pub key: String,
    pub reasons: Vec<String>,
    pub details: DetailsJson,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct DetailsJson {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<CodeJson>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dependencies: Option<DependenciesJson>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partitions: Option<PartitionsJson>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<MapJson>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<MapJson>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CodeJson {
    pub old_version: String,
    pub new_version: String,
    pub derived: bool,
    /// A unified diff of the code as written.
    pub diff: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DependenciesJson {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PartitionsJson {
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MapJson {
    pub added: BTreeMap<String, String>,
    pub changed: BTreeMap<String, OldNewJson>,
    pub removed: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OldNewJson {
    pub old: String,
    pub new: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ImpactedJson {
    pub key: String,
    /// From the nearest changed asset to this one.
    pub path: Vec<String>,
}

/// The unified diff of an asset's code, if its code version changed.
pub fn code_diff(change: &AssetChange) -> Option<String> {
    let code = change.details.code.as_ref()?;
    Some(code.unified_diff(&format!("base/{}", change.key), &format!("head/{}", change.key)))
}

fn map_json(change: &MapChange) -> MapJson {
    MapJson {
        added: change.added.clone(),
        changed: change
            .changed
            .iter()
            .map(|(k, (o, n))| (k.clone(), OldNewJson { old: o.clone(), new: n.clone() }))
            .collect(),
        removed: change.removed.clone(),
    }
}

impl From<&AssetChange> for AssetChangeJson {
    fn from(change: &AssetChange) -> AssetChangeJson {
        let d = &change.details;
        AssetChangeJson {
            key: change.key.to_string(),
            reasons: change.reasons.iter().map(|r| r.as_str().to_owned()).collect(),
            details: DetailsJson {
                code: d.code.as_ref().map(|code| CodeJson {
                    old_version: code.old_version.value.clone(),
                    new_version: code.new_version.value.clone(),
                    derived: code.new_version.derived,
                    diff: code_diff(change).unwrap_or_default(),
                }),
                dependencies: d.dependencies.as_ref().map(|deps| DependenciesJson {
                    added: deps.added.iter().map(|k| k.to_string()).collect(),
                    removed: deps.removed.iter().map(|k| k.to_string()).collect(),
                }),
                partitions: d.partitions.as_ref().map(|(old, new)| PartitionsJson {
                    old: old.as_ref().map(|p| p.to_string()),
                    new: new.as_ref().map(|p| p.to_string()),
                }),
                tags: d.tags.as_ref().map(map_json),
                metadata: d.metadata.as_ref().map(map_json),
            },
        }
    }
}

impl From<&ChangeSet> for ChangeSetJson {
    fn from(changes: &ChangeSet) -> ChangeSetJson {
        let counts = changes.counts();
        ChangeSetJson {
            summary: SummaryJson {
                new: counts.new,
                removed: counts.removed,
                changed: counts.changed,
                impacted: counts.impacted,
            },
            assets: changes.changes.iter().map(AssetChangeJson::from).collect(),
            impacted: changes
                .impacted
                .iter()
                .map(|i| ImpactedJson {
                    key: i.key.to_string(),
                    path: i.path.iter().map(|k| k.to_string()).collect(),
                })
                .collect(),
        }
    }
}

impl SummaryJson {
    pub fn counts(&self) -> offshoot_core::ChangeCounts {
        offshoot_core::ChangeCounts {
            new: self.new,
            changed: self.changed,
            removed: self.removed,
            impacted: self.impacted,
        }
    }
}

/// Just the summary of a stored change set, without parsing its assets.
#[derive(Deserialize)]
pub struct StoredSummary {
    pub summary: SummaryJson,
}
