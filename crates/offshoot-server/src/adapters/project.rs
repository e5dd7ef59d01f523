//! Git access from async code: libgit2 handles are not `Sync`, so each operation opens the
//! repository inside `spawn_blocking` (opening is cheap) and returns owned data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use offshoot_core::{CommitRelation, CommitSha, DeploymentName, RepositoryName, SchemaName};
use offshoot_location::LocationError;
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
        sha: CommitSha::new(&info.sha)
            .ok_or_else(|| GitError::Files(format!("`{}` is not a full commit id", info.sha)))?,
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
pub async fn relation(
    path: PathBuf,
    pushed: CommitDetails,
    known: CommitDetails,
) -> Result<CommitRelation, GitError> {
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

/// The project at a commit, from the cache or loaded by its code location: the native format
/// from the object database, dbt and Dagster by their tools in a checkout. One load per commit
/// at a time (the tools write into the commit's own folder).
pub async fn load(
    state: &AppState,
    repository: &RepositoryName,
    path: PathBuf,
    commit: &CommitSha,
) -> Result<Loaded, GitError> {
    load_for(state, repository, path, commit, None, None).await
}

/// [`load`], telling the tool the deployment it loads for (`None`: production), as Dagster+
/// does; the result is still one per commit, shared by every deployment that serves it. A
/// native project starts from `previous` (a commit close to this one, such as the deploy's
/// base), else from the snapshot loaded last, so a push that changes a few files costs a few
/// files ([`offshoot_project::load_from`]); the result is the same either way.
pub async fn load_for(
    state: &AppState,
    repository: &RepositoryName,
    path: PathBuf,
    commit: &CommitSha,
    deployment: Option<&offshoot_store::Deployment>,
    previous: Option<Loaded>,
) -> Result<Loaded, GitError> {
    // A cached snapshot is trusted only while the commit's folder exists: a dbt branch build
    // defers to the manifest in it, so a folder swept away is rebuilt by loading again.
    let work_dir = state.config.locations_dir(repository).join(commit.as_str());
    let cached = || state.snapshots.get(repository, commit).filter(|_| work_dir.is_dir());
    if let Some(loaded) = cached() {
        return Ok(loaded);
    }
    let lock = state.load_lock(repository, commit);
    let _guard = lock.lock().await;
    if let Some(loaded) = cached() {
        return Ok(loaded);
    }
    let sha = commit.clone();
    let checkouts = state.config.checkouts_dir();
    let mut env = tool_environment(state, repository);
    let sandbox = crate::adapters::confine::sandbox(
        state,
        crate::adapters::confine::Purpose::Load,
        std::slice::from_ref(&work_dir),
    );
    env.push(("TMPDIR".to_owned(), work_dir.join("tmp").to_string_lossy().into_owned()));
    // Parse once per blob, across commits, branches and restarts.
    let parse_cache = parse_cache_dir(state);
    let mut context = deployment_context(state, repository, deployment, None);
    let previous = previous
        .filter(|p| p.as_ref().as_ref().is_ok_and(|p| p.blobs.is_some()))
        .or_else(|| state.snapshots.latest_reusable(repository));
    let loaded = blocking(path, move |repo| {
        // The same variables a build of this commit gets (`service::runner`'s `deployment_environment`).
        context.commit = commit_context(&commit_details(&repo.resolve(sha.as_str())?)?);
        env.extend(offshoot_location::deployment_environment(&context));
        let files = repo.files_at(sha.as_str())?;
        let checkout = || export_checkout(repo, &sha, &checkouts);
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| GitError::Files(format!("{}: {e}", work_dir.display())))?;
        let sandbox = sandbox.map_err(GitError::Files)?;
        let cache = offshoot_location::DiskParseCache::shared(&parse_cache);
        let loaded = offshoot_location::load_project(
            &files,
            checkout,
            &work_dir,
            &env,
            sandbox.as_ref(),
            Some(cache.as_ref()),
            previous.as_ref().and_then(|p| p.as_ref().as_ref().ok()),
        );
        // The parse threads' freed memory, about 200 MB at 100,000 assets.
        offshoot_location::release_freed_memory();
        match loaded {
            Ok(project) => Ok(Ok(project)),
            Err(LocationError::Invalid(diagnostics)) => Ok(Err(diagnostics)),
            Err(LocationError::Tool(message)) => Err(GitError::Files(message)),
        }
    })
    .await?;
    let loaded: Loaded = Arc::new(loaded);
    state.snapshots.insert(repository.clone(), commit.clone(), loaded.clone());
    Ok(loaded)
}

/// The environment of a location's tool when it loads a commit: production's warehouse by name
/// (so dbt's manifest of production's commit is the state branch runs defer to), with no
/// credential that can write: any commit's code runs here, a branch's too.
fn tool_environment(state: &AppState, repository: &RepositoryName) -> Vec<(String, String)> {
    let production = SchemaName::for_deployment(repository, &DeploymentName::production());
    let mut env = offshoot_location::base_environment();
    env.extend(state.warehouse.inspection_environment(&production));
    env
}

/// Who a tool runs for, as Dagster+ tells code (`DAGSTER_CLOUD_*`): the deployment (`None`:
/// production), its repository and the commit. Loading and building build it here, so both
/// see the same values.
pub fn deployment_context(
    state: &AppState,
    repository: &RepositoryName,
    deployment: Option<&offshoot_store::Deployment>,
    commit: Option<&CommitDetails>,
) -> offshoot_location::DeploymentContext {
    let config = state.repository(repository);
    let forge_project = config
        .and_then(|c| c.forge.as_ref())
        .and_then(|f| f.project.clone())
        .filter(|p| !p.bytes().all(|b| b.is_ascii_digit()));
    let git_url = config.and_then(|c| {
        c.git_url
            .clone()
            .or_else(|| {
                let forge = c.forge.as_ref()?;
                offshoot_location::forge_web_url(&forge.api_url, forge.project.as_deref()?)
            })
            .or_else(|| offshoot_location::web_url(&c.remote.as_ref()?.url))
    });
    let (name, is_branch, branch, pull_request) = match deployment {
        Some(d) => (
            d.name.to_string(),
            d.kind == offshoot_core::DeploymentKind::Branch,
            d.branch.to_string(),
            d.pull_request.as_ref().map(|p| (p.id.clone(), p.status.as_str().to_owned())),
        ),
        None => (
            DeploymentName::production().to_string(),
            false,
            config.map(|c| c.production_branch.clone()).unwrap_or_else(|| "main".to_owned()),
            None,
        ),
    };
    offshoot_location::DeploymentContext {
        location_name: repository.to_string(),
        deployment_name: name,
        is_branch_deployment: is_branch,
        branch,
        git_url,
        git_repo: forge_project.unwrap_or_else(|| repository.to_string()),
        commit: commit.map(commit_context).unwrap_or_default(),
        pull_request,
    }
}

pub fn commit_context(commit: &CommitDetails) -> offshoot_location::CommitContext {
    offshoot_location::CommitContext {
        sha: commit.sha.to_string(),
        timestamp: commit.time,
        author_name: commit.author_name.clone(),
        author_email: commit.author_email.clone(),
        message: commit.message.clone(),
    }
}

/// The commit's files on disk under `checkouts/<sha>`, exported once (staged, then renamed, so
/// a half-written checkout is never used).
pub fn export_checkout(
    repo: &GitRepository,
    sha: &CommitSha,
    checkouts: &Path,
) -> Result<PathBuf, String> {
    let dir = checkouts.join(sha.as_str());
    if dir.exists() {
        return Ok(dir);
    }
    static STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = STAGING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = dir.with_extension(format!("partial-{}-{unique}", std::process::id()));
    repo.export_tree(sha.as_str(), &staging)
        .map_err(|e| format!("checking out {}: {e}", sha.short()))?;
    if std::fs::rename(&staging, &dir).is_err() {
        // Another load or run exported the same commit first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if dir.exists() {
        Ok(dir)
    } else {
        Err(format!("could not prepare the checkout at {}", dir.display()))
    }
}

/// Where the server's parse cache lives (one per data directory, shared by every load).
fn parse_cache_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("parse-cache")
}

/// The parse cache's counters since start (for `/metrics`).
pub fn parse_cache_stats(state: &AppState) -> offshoot_project::parse_cache::CacheStats {
    offshoot_location::DiskParseCache::shared(&parse_cache_dir(state)).stats()
}
