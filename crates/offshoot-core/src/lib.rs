//! Offshoot's pure core: the asset graph of one commit (a [`Snapshot`]), fingerprints, change
//! tracking between two snapshots ([`ChangeSet`]) and the selection language.
//!
//! Invariant: nothing in this crate does I/O, spawns, sleeps or knows about git, SQL drivers or
//! HTTP. Adapters feed it data and render its results.

pub mod asset;
pub mod catch_up;
pub mod change;
pub mod deployment;
pub mod fingerprint;
pub mod graph;
pub mod lifecycle;
pub mod run;
pub mod schedule;
pub mod selection;
pub mod snapshot;
pub mod upkeep;

pub use asset::{
    Asset, AssetKey, AssetKind, CodeVersion, InvalidAssetKey, Location, PartitionsDefinition,
    TimeCadence,
};
pub use change::{
    diff, AssetChange, ChangeCounts, ChangeDetails, ChangeReason, ChangeSet, CodeChange, Impacted,
    MapChange, SetChange,
};
pub use deployment::{
    deployment_name_for_branch, pushed_commit_is_newer, BranchName, CommitRelation, CommitSha,
    DeploymentKind, DeploymentName, DeploymentStatus, InvalidName, PullRequestStatus,
    RepositoryName, RevisionStatus, SchemaName, SnapshotBase, UnixMillis, VariableScope,
};
pub use fingerprint::{Fingerprint, FingerprintParts};
pub use run::{PlannedStep, RunPlan, RunStatus, StepStatus};
pub use schedule::{CronSchedule, Schedule, ScheduleError, ScheduleOrigin};
pub use selection::{Selection, SelectionError};
pub use snapshot::{Snapshot, SnapshotError};
