//! Offshoot's pure core: the asset graph of one commit (a [`Snapshot`]), fingerprints, change
//! tracking between two snapshots ([`ChangeSet`]) and the selection language.
//!
//! Invariant: nothing in this crate does I/O, spawns, sleeps or knows about git, SQL drivers or
//! HTTP. Adapters feed it data and render its results.

pub mod asset;
pub mod change;
pub mod fingerprint;
pub mod graph;
pub mod selection;
pub mod snapshot;

pub use asset::{Asset, AssetKey, AssetKind, CodeVersion, InvalidAssetKey, Location, PartitionsDefinition, TimeCadence};
pub use change::{diff, AssetChange, ChangeDetails, ChangeReason, ChangeSet, CodeChange, Impacted, MapChange, SetChange};
pub use fingerprint::Fingerprint;
pub use selection::{Selection, SelectionError};
pub use snapshot::{Snapshot, SnapshotError};
