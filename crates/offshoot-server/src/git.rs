//! Git access from async code: libgit2 handles are not `Sync`, so each operation opens the
//! repository inside `spawn_blocking` (opening is cheap) and returns owned data.

use std::path::PathBuf;
use std::sync::Arc;

use offshoot_core::{CommitRelation, CommitSha, RepositoryName};
use offshoot_project::LoadError;
use offshoot_repo::{CommitInfo, GitRepository, RepoError};
use offshoot_store::CommitDetails;

use crate::state::{AppState, Loaded};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{0}")]
    Files(String),
    #[error("background task failed: {0}")]
    Join(String),
}

pub async fn blocking<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce(&GitRepository) -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    tokio::task::spawn_blocking(move || {
        let repo = GitRepository::open(&path)?;
        work(&repo)
    })
    .await
    .map_err(|e| GitError::Join(e.to_string()))?
}

pub fn commit_details(info: &CommitInfo) -> Result<CommitDetails, GitError> {
    Ok(CommitDetails {
        sha: CommitSha::new(&info.sha).ok_or_else(|| GitError::Files(format!("`{}` is not a full commit id", info.sha)))?,
        message: info.summary.clone(),
        author_name: info.author_name.clone(),
        author_email: info.author_email.clone(),
        time: info.time,
    })
}

/// Resolves a revision (full or abbreviated SHA, branch) of the repository at `path`.
pub async fn resolve(path: PathBuf, rev: String) -> Result<CommitDetails, GitError> {
    blocking(path, move |repo| commit_details(&repo.resolve(&rev)?)).await
}

/// How `pushed` relates to `known` in history.
pub async fn relation(path: PathBuf, pushed: CommitDetails, known: CommitDetails) -> Result<CommitRelation, GitError> {
    blocking(path, move |repo| {
        if pushed.sha == known.sha {
            return Ok(CommitRelation::Same);
        }
        if repo.is_ancestor(pushed.sha.as_str(), known.sha.as_str())? {
            return Ok(CommitRelation::Ancestor);
        }
        if repo.is_ancestor(known.sha.as_str(), pushed.sha.as_str())? {
            return Ok(CommitRelation::Descendant);
        }
        Ok(CommitRelation::Diverged { pushed_time: pushed.time, known_time: known.time })
    })
    .await
}

/// The project at a commit, from the cache or loaded from the object database.
pub async fn load(state: &AppState, repository: &RepositoryName, path: PathBuf, commit: &CommitSha) -> Result<Loaded, GitError> {
    if let Some(loaded) = state.snapshots.get(repository, commit) {
        return Ok(loaded);
    }
    let sha = commit.clone();
    let loaded = blocking(path, move |repo| {
        let files = repo.files_at(sha.as_str())?;
        match offshoot_project::load(&files) {
            Ok(project) => Ok(Ok(project)),
            Err(LoadError::Invalid(diagnostics)) => Ok(Err(diagnostics)),
            Err(LoadError::Files(error)) => Err(GitError::Files(error.to_string())),
        }
    })
    .await?;
    let loaded: Loaded = Arc::new(loaded);
    state.snapshots.insert(repository.clone(), commit.clone(), loaded.clone());
    Ok(loaded)
}
