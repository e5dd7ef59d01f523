//! Where project files come from: the tree of any commit of a local Git repository, read from the
//! object database without a checkout, or a working directory with its uncommitted edits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use offshoot_project::{FileId, FilesError, ProjectFiles, ASSETS_DIR};

pub mod write;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{path} is not a git repository (or any parent of it): {message}")]
    NotARepository { path: String, message: String },
    #[error("unknown revision `{rev}`: {message}")]
    UnknownRevision { rev: String, message: String },
    #[error("`{a}` and `{b}` have no common ancestor")]
    NoMergeBase { a: String, b: String },
    #[error("git: {0}")]
    Git(String),
}

fn git_error(error: git2::Error) -> RepoError {
    RepoError::Git(error.message().to_owned())
}

/// What the UI and reports show of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// Full hex SHA.
    pub sha: String,
    pub summary: String,
    pub author_name: String,
    pub author_email: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

pub struct GitRepository {
    repo: Repository,
}

impl GitRepository {
    /// Opens the repository at `path` or the first parent of it that is one.
    pub fn open(path: &Path) -> Result<GitRepository, RepoError> {
        Repository::discover(path).map(|repo| GitRepository { repo }).map_err(|e| {
            RepoError::NotARepository {
                path: path.display().to_string(),
                message: e.message().to_owned(),
            }
        })
    }

    /// The repository's own folder (`.git`, or the bare repository itself).
    pub fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    /// The working directory, if the repository is not bare.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// Resolves a branch, tag, SHA or any `git rev-parse` expression to a commit.
    pub fn resolve(&self, rev: &str) -> Result<CommitInfo, RepoError> {
        let unknown = |e: git2::Error| RepoError::UnknownRevision {
            rev: rev.to_owned(),
            message: e.message().to_owned(),
        };
        if rev.is_empty() || rev.starts_with('-') || rev.contains('\0') {
            return Err(RepoError::UnknownRevision {
                rev: rev.to_owned(),
                message: "not a revision".to_owned(),
            });
        }
        let commit =
            self.repo.revparse_single(rev).and_then(|o| o.peel_to_commit()).map_err(unknown)?;
        let author = commit.author();
        Ok(CommitInfo {
            sha: commit.id().to_string(),
            summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or(b"")).into_owned(),
            author_name: author.name().unwrap_or("").to_owned(),
            author_email: author.email().unwrap_or("").to_owned(),
            time: commit.time().seconds(),
        })
    }

    /// The best common ancestor of two commits (full SHAs or revisions).
    pub fn merge_base(&self, a: &str, b: &str) -> Result<CommitInfo, RepoError> {
        let a_id = Oid::from_str(&self.resolve(a)?.sha).map_err(git_error)?;
        let b_id = Oid::from_str(&self.resolve(b)?.sha).map_err(git_error)?;
        match self.repo.merge_base(a_id, b_id) {
            Ok(base) => self.resolve(&base.to_string()),
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                Err(RepoError::NoMergeBase { a: a.to_owned(), b: b.to_owned() })
            }
            Err(e) => Err(git_error(e)),
        }
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors (both full SHAs or revisions).
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, RepoError> {
        let a = Oid::from_str(&self.resolve(ancestor)?.sha).map_err(git_error)?;
        let d = Oid::from_str(&self.resolve(descendant)?.sha).map_err(git_error)?;
        if a == d {
            return Ok(true);
        }
        self.repo.graph_descendant_of(d, a).map_err(git_error)
    }

    /// Writes the files of commit `sha` into `target` (which must not exist yet), without touching
    /// the repository's own working directory or index. Command assets run there.
    pub fn export_tree(&self, sha: &str, target: &Path) -> Result<(), RepoError> {
        let oid = Oid::from_str(&self.resolve(sha)?.sha).map_err(git_error)?;
        let tree = self.repo.find_commit(oid).and_then(|c| c.tree()).map_err(git_error)?;
        std::fs::create_dir_all(target)
            .map_err(|e| RepoError::Git(format!("{}: {e}", target.display())))?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        // update_index(false): by default libgit2 writes the exported tree into the repository's own
        // index, which would stage it in a watched working copy.
        checkout.target_dir(target).force().recreate_missing(true).update_index(false);
        self.repo.checkout_tree(tree.as_object(), Some(&mut checkout)).map_err(git_error)
    }

    /// The project files of one commit, read from the object database.
    pub fn files_at(&self, sha: &str) -> Result<CommitFiles<'_>, RepoError> {
        let oid = Oid::from_str(&self.resolve(sha)?.sha).map_err(git_error)?;
        let tree = self.repo.find_commit(oid).and_then(|c| c.tree()).map_err(git_error)?;
        Ok(CommitFiles { repo: &self.repo, tree, blobs: RefCell::new(HashMap::new()) })
    }

    /// Local branch names with the SHA each points at.
    pub fn branches(&self) -> Result<Vec<(String, String)>, RepoError> {
        let mut out = Vec::new();
        for branch in self.repo.branches(Some(git2::BranchType::Local)).map_err(git_error)? {
            let (branch, _) = branch.map_err(git_error)?;
            let name =
                String::from_utf8_lossy(branch.name_bytes().map_err(git_error)?).into_owned();
            if let Some(target) = branch.get().resolve().ok().and_then(|r| r.target()) {
                out.push((name, target.to_string()));
            }
        }
        Ok(out)
    }
}

/// The files of one commit. Blob ids found while listing are kept so reads do not walk again.
pub struct CommitFiles<'r> {
    repo: &'r Repository,
    tree: git2::Tree<'r>,
    blobs: RefCell<HashMap<String, Oid>>,
}

impl ProjectFiles for CommitFiles<'_> {
    fn asset_paths(&self) -> Result<Vec<String>, FilesError> {
        let entry = match self.tree.get_path(Path::new(ASSETS_DIR)) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FilesError(e.message().to_owned())),
        };
        let assets = self
            .repo
            .find_tree(entry.id())
            .map_err(|e| FilesError(format!("{ASSETS_DIR} is not a folder: {}", e.message())))?;
        let mut paths = Vec::new();
        let mut blobs = self.blobs.borrow_mut();
        assets
            .walk(TreeWalkMode::PreOrder, |folder, entry| {
                // Symbolic links (0o120000) and submodules are not definitions.
                if entry.kind() == Some(ObjectType::Blob) && entry.filemode() != 0o120000 {
                    let name = String::from_utf8_lossy(entry.name_bytes());
                    let path = format!("{ASSETS_DIR}/{folder}{name}");
                    blobs.insert(path.clone(), entry.id());
                    paths.push(path);
                }
                TreeWalkResult::Ok
            })
            .map_err(|e| FilesError(e.message().to_owned()))?;
        Ok(paths)
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        let Some(id) = self.blob_id(path)? else { return Ok(None) };
        let blob =
            self.repo.find_blob(id).map_err(|e| FilesError(format!("{path}: {}", e.message())))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// The blob id from the tree: what parse caches key by, known without reading the blob.
    fn file_id(&self, path: &str) -> Result<FileId, FilesError> {
        Ok(match self.blob_id(path)? {
            Some(id) => FileId::Content(id.to_string()),
            None => FileId::Missing,
        })
    }

    /// The id of the commit's `assets/` tree.
    fn assets_id(&self) -> Option<String> {
        let entry = self.tree.get_path(Path::new(ASSETS_DIR)).ok()?;
        (entry.kind() == Some(ObjectType::Tree)).then(|| entry.id().to_string())
    }

    /// A diff of two `assets/` trees: libgit2 skips every subtree whose id both share, so a
    /// push that edits a few files costs those files, not the project's size.
    fn assets_changed_since(
        &self,
        since: &str,
    ) -> Result<Option<Vec<(String, FileId)>>, FilesError> {
        let Some(now) = self.assets_id() else { return Ok(None) };
        let (Ok(before), Ok(now)) = (Oid::from_str(since), Oid::from_str(&now)) else {
            return Ok(None);
        };
        // Not in this repository's object database: the caller lists every path.
        let Ok(before) = self.repo.find_tree(before) else { return Ok(None) };
        let now = self.repo.find_tree(now).map_err(|e| FilesError(e.message().to_owned()))?;
        let mut options = git2::DiffOptions::new();
        options.include_typechange(true).skip_binary_check(true);
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&before), Some(&now), Some(&mut options))
            .map_err(|e| FilesError(e.message().to_owned()))?;
        let definition = |file: &git2::DiffFile<'_>| {
            matches!(
                file.mode(),
                git2::FileMode::Blob
                    | git2::FileMode::BlobGroupWritable
                    | git2::FileMode::BlobExecutable
            )
        };
        let mut changes = Vec::with_capacity(diff.deltas().len());
        let mut blobs = self.blobs.borrow_mut();
        for delta in diff.deltas() {
            let (old, new) = (delta.old_file(), delta.new_file());
            if definition(&old) {
                if let Some(name) = old.path_bytes() {
                    let path = format!("{ASSETS_DIR}/{}", String::from_utf8_lossy(name));
                    if !definition(&new) {
                        changes.push((path, FileId::Missing));
                    }
                }
            }
            if definition(&new) {
                if let Some(name) = new.path_bytes() {
                    let path = format!("{ASSETS_DIR}/{}", String::from_utf8_lossy(name));
                    blobs.insert(path.clone(), new.id());
                    changes.push((path, FileId::Content(new.id().to_string())));
                }
            }
        }
        Ok(Some(changes))
    }
}

impl CommitFiles<'_> {
    /// The id of the blob at `path`, `None` if there is none (or it is a folder or submodule).
    fn blob_id(&self, path: &str) -> Result<Option<Oid>, FilesError> {
        if let Some(id) = self.blobs.borrow().get(path).copied() {
            return Ok(Some(id));
        }
        match self.tree.get_path(Path::new(path)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => Ok(Some(entry.id())),
            Ok(_) => Ok(None),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(FilesError(e.message().to_owned())),
        }
    }
}

/// A project as it is on disk, uncommitted edits included. Symbolic links are not followed.
pub struct WorkingDirectory {
    root: PathBuf,
}

impl WorkingDirectory {
    pub fn new(root: impl Into<PathBuf>) -> WorkingDirectory {
        WorkingDirectory { root: root.into() }
    }
}

impl ProjectFiles for WorkingDirectory {
    fn asset_paths(&self) -> Result<Vec<String>, FilesError> {
        let mut paths = Vec::new();
        let mut pending = vec![(self.root.join(ASSETS_DIR), ASSETS_DIR.to_owned())];
        while let Some((dir, prefix)) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FilesError(format!("{}: {e}", dir.display()))),
            };
            for entry in entries {
                let entry = entry.map_err(|e| FilesError(format!("{}: {e}", dir.display())))?;
                let kind = entry
                    .file_type()
                    .map_err(|e| FilesError(format!("{}: {e}", entry.path().display())))?;
                let path = format!("{prefix}/{}", entry.file_name().to_string_lossy());
                if kind.is_dir() {
                    pending.push((entry.path(), path));
                } else if kind.is_file() {
                    paths.push(path);
                }
            }
        }
        Ok(paths)
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        // Loaders validate paths, but this is the last line before the file system.
        if path.split('/').any(|p| p == ".." || p.is_empty()) || path.starts_with('/') {
            return Ok(None);
        }
        let full = self.root.join(path);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FilesError(format!("{path}: {e}"))),
        }
        std::fs::read(&full).map(Some).map_err(|e| FilesError(format!("{path}: {e}")))
    }
}
