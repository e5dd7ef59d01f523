//! The port through which project files are read: a commit's tree, a working directory, or a map.

use std::collections::BTreeMap;

/// An I/O failure of the underlying store, already worded for a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilesError(pub String);

/// Read access to one version of a project. Paths are relative to the repository root and use `/`.
pub trait ProjectFiles {
    /// Every file path under `assets/`, in any order.
    fn asset_paths(&self) -> Result<Vec<String>, FilesError>;
    /// The file's bytes, or `None` if there is no file at `path`.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError>;
    /// An id of the file's content that changes whenever the content does (a git blob id),
    /// without reading it; [`FileId::Unavailable`] where there is none to be had cheaply. Parse
    /// caches key what they keep by it.
    fn file_id(&self, _path: &str) -> Result<FileId, FilesError> {
        Ok(FileId::Unavailable)
    }
    /// An id of the whole `assets/` folder that changes whenever anything in it does (a git
    /// tree id), `None` where there is none to be had cheaply.
    fn assets_id(&self) -> Option<String> {
        None
    }
    /// The files under `assets/` that differ from the `assets/` folder whose
    /// [`ProjectFiles::assets_id`] was `since`: each path with its content id now
    /// ([`FileId::Missing`] when it is gone), in any order. `None` when this source cannot
    /// tell (no ids, or `since` is not known to it); the caller then lists every path.
    fn assets_changed_since(
        &self,
        _since: &str,
    ) -> Result<Option<Vec<(String, FileId)>>, FilesError> {
        Ok(None)
    }
}

/// What [`ProjectFiles::file_id`] knows of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileId {
    /// This source has no content ids (a working directory, a map).
    Unavailable,
    /// There is no file at the path.
    Missing,
    /// The content's id, e.g. a git blob id in hex.
    Content(String),
}

/// Files held in memory, for tests and generated projects.
#[derive(Debug, Clone, Default)]
pub struct MemoryFiles {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemoryFiles {
    pub fn new<P: Into<String>, C: Into<Vec<u8>>>(
        files: impl IntoIterator<Item = (P, C)>,
    ) -> MemoryFiles {
        MemoryFiles { files: files.into_iter().map(|(p, c)| (p.into(), c.into())).collect() }
    }
}

impl ProjectFiles for MemoryFiles {
    fn asset_paths(&self) -> Result<Vec<String>, FilesError> {
        let prefix = format!("{}/", crate::ASSETS_DIR);
        Ok(self.files.keys().filter(|p| p.starts_with(&prefix)).cloned().collect())
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        Ok(self.files.get(path).cloned())
    }
}
