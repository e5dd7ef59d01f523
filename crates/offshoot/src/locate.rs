//! Loading a project for local commands through its code location: native projects straight
//! from the commit's tree (or the working directory), dbt and Dagster projects by running their
//! tool in a temporary checkout, as the server does.

use std::path::{Path, PathBuf};

use offshoot_location::{DiskParseCache, LocationError, ParseCacheOptions};
use offshoot_project::parse_cache::ParseCache;
use offshoot_project::Project;
use offshoot_repo::{GitRepository, WorkingDirectory};

/// A temporary folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> std::io::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("offshoot-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tools' environment: the caller's PATH, and a warehouse for dbt's profile. Loading never
/// connects; `OFFSHOOT_WAREHOUSE_URL` may name the real one.
fn environment() -> Vec<(String, String)> {
    let mut env = offshoot_location::base_environment();
    let url = std::env::var("OFFSHOOT_WAREHOUSE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    env.push(("OFFSHOOT_WAREHOUSE_URL".to_owned(), url));
    env.push(("OFFSHOOT_SCHEMA".to_owned(), "offshoot_cli".to_owned()));
    env
}

/// The CLI's parse cache ([`DiskParseCache`]): in the repository's own folder
/// (`.git/offshoot/parse-cache`), or under the user's cache folder
/// (`$XDG_CACHE_HOME/offshoot/parse-cache`, else `~/.cache/...`) when that cannot be written.
pub fn parse_cache(repo: &GitRepository) -> DiskParseCache {
    let in_repository = repo.git_dir().join("offshoot").join("parse-cache");
    if std::fs::create_dir_all(&in_repository).is_ok() {
        return DiskParseCache::open(&in_repository, ParseCacheOptions::default());
    }
    let user = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    DiskParseCache::open(&user.join("offshoot").join("parse-cache"), ParseCacheOptions::default())
}

/// Loads one commit; a native project reuses and fills `cache`, and starts from `previous`
/// (another commit's project) where it can.
pub fn load_commit(
    repo: &GitRepository,
    sha: &str,
    cache: Option<&dyn ParseCache>,
    previous: Option<&Project>,
) -> Result<Project, LocationError> {
    let files = repo.files_at(sha).map_err(|e| LocationError::Tool(e.to_string()))?;
    let scratch = Scratch::new(&format!("load-{}", &sha[..sha.len().min(12)]))
        .map_err(|e| LocationError::Tool(e.to_string()))?;
    let checkout_dir = scratch.0.join("checkout");
    let checkout = || {
        repo.export_tree(sha, &checkout_dir)
            .map(|()| checkout_dir.clone())
            .map_err(|e| e.to_string())
    };
    let work = scratch.0.join("work");
    offshoot_location::load_project(&files, checkout, &work, &environment(), None, cache, previous)
}

pub fn load_working_directory(root: &Path) -> Result<Project, LocationError> {
    let files = WorkingDirectory::new(root.to_path_buf());
    let scratch = Scratch::new("load-worktree").map_err(|e| LocationError::Tool(e.to_string()))?;
    offshoot_location::load_project(
        &files,
        || Ok(root.to_path_buf()),
        &scratch.0.join("work"),
        &environment(),
        None,
        None,
        None,
    )
}
