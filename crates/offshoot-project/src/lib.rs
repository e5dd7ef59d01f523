//! The native project format: `offshoot.toml`, SQL assets (`assets/**/*.sql`) and command assets
//! (`assets/**/*.toml`), loaded from any [`ProjectFiles`] and validated into a [`Snapshot`].
//!
//! This crate does no I/O of its own: a git tree, a working directory or a test's in-memory map
//! supplies the files. Every problem is reported in one pass as a [`Diagnostic`] with
//! `path:line:col`.

pub mod canonical;
pub mod diagnostic;
pub mod files;
mod loader;
pub mod manifest;
pub mod parse_cache;
pub mod scaffold;
mod sql;
mod toml_value;

pub use diagnostic::Diagnostic;
pub use files::{FileId, FilesError, MemoryFiles, ProjectFiles};
pub use loader::{load, load_cached, load_from, read_manifest, Blobs, LoadError, Project};
pub use manifest::{DagsterConfig, DbtConfig, Dialect, LocationConfig, Manifest};
pub use offshoot_core::Snapshot;

/// Where the manifest lives, relative to the repository root.
pub const MANIFEST_PATH: &str = "offshoot.toml";
/// The folder that holds asset definitions.
pub const ASSETS_DIR: &str = "assets";
