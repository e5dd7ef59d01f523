//! Code locations: what turns one commit of a repository into a [`Snapshot`] and knows how to
//! build a selection of it in a deployment. The native format reads the commit's tree; dbt and
//! Dagster run the project's own tool in a checkout of the commit, in the project's environment.
//!
//! The location is chosen per project by `[location] type` in `offshoot.toml`
//! ([`LocationConfig`]); [`for_manifest`] gives the implementation.
//!
//! Locations do blocking I/O (child processes, files) and hold no state between calls: callers
//! run them on blocking threads and cache what they load.

mod dagster;
mod dbt;
mod deployment;
mod native;
pub mod parse_cache;
mod prepare;
mod process;
mod sandbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use offshoot_core::{AssetKey, Snapshot};
use offshoot_project::parse_cache::ParseCache;
use offshoot_project::{Diagnostic, LoadError, LocationConfig, Manifest, Project, ProjectFiles};

pub use dagster::{DagsterLocation, ENTRY_POINT as DAGSTER_ENTRY_POINT};
pub use dbt::{DbtLocation, PROFILES_YML as DBT_PROFILES_YML};
pub use deployment::{
    deployment_environment, forge_web_url, web_url, CommitContext, DeploymentContext,
};
pub use native::NativeLocation;
pub use parse_cache::{DiskParseCache, ParseCacheOptions};
pub use process::{
    base_environment, kill_group, release_freed_memory, tail, ToolCommand, ToolOutput, MAX_OUTPUT,
};
pub use sandbox::{support as sandbox_support, Sandbox};

/// What a location needs to load one commit.
pub struct LoadInput<'a> {
    /// The commit's tree (always available, cheap).
    pub files: &'a dyn ProjectFiles,
    /// The commit's files on disk; present when [`CodeLocation::needs_checkout`] said so.
    pub checkout: Option<&'a Path>,
    /// A folder of this commit's own for the tool's output (dbt's `target/`), kept afterwards:
    /// production's is the state that branch runs defer to. The folders beside it are other
    /// commits' of the same repository (dbt starts from the newest one's partial-parse state).
    pub work_dir: &'a Path,
    /// The environment of the tool: PATH and friends plus the deployment's warehouse variables.
    pub env: &'a [(String, String)],
    /// Where the tool may write (`work_dir` at least); `None` runs it unconfined.
    pub sandbox: Option<&'a Sandbox>,
}

/// A selection to build with the location's tool.
pub struct BuildRequest<'a> {
    pub keys: &'a [AssetKey],
    pub snapshot: &'a Snapshot,
    pub checkout: &'a Path,
    /// A fresh folder of this run's own.
    pub work_dir: &'a Path,
    /// For a branch: production's load folder (its `manifest.json`), to defer unbuilt
    /// references to production. `None` for production itself, or before production deployed.
    pub production_state: Option<&'a Path>,
    pub env: &'a [(String, String)],
    /// Where the tool may write (`work_dir` and the target's warehouse files); `None` runs it
    /// unconfined.
    pub sandbox: Option<&'a Sandbox>,
}

/// How one asset of a tool build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    Succeeded {
        rows: Option<u64>,
    },
    Failed {
        message: String,
    },
    /// The tool did not build it (an upstream failed, or it stopped early).
    Skipped {
        message: String,
    },
}

/// When the tool says it built one asset (dbt's `run_results.json` timings), in Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTiming {
    pub started_at: i64,
    pub finished_at: i64,
}

/// The location's problems with a commit, or a tool that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("{} problem(s) in the definitions", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error("{0}")]
    Tool(String),
}

impl From<LoadError> for LocationError {
    fn from(error: LoadError) -> LocationError {
        match error {
            LoadError::Invalid(diagnostics) => LocationError::Invalid(diagnostics),
            LoadError::Files(error) => LocationError::Tool(error.to_string()),
        }
    }
}

/// One kind of code location.
pub trait CodeLocation: Send + Sync {
    /// `native`, `dbt` or `dagster`.
    fn kind(&self) -> &'static str;

    /// Whether [`CodeLocation::load`] needs the commit's files on disk.
    fn needs_checkout(&self) -> bool;

    /// The commit's assets. Problems in the definitions are `Invalid` with the tool's own
    /// message; `Tool` means the tool could not be run at all (not installed, timed out).
    fn load(&self, manifest: &Manifest, input: &LoadInput<'_>) -> Result<Snapshot, LocationError>;

    /// `None`: the server builds asset by asset (native SQL and commands). `Some`: one run of
    /// the location's tool builds the whole selection.
    fn build_command(&self, request: &BuildRequest<'_>) -> Option<Result<ToolCommand, String>>;

    /// After the build command exited: how each requested asset ended.
    fn build_outcomes(
        &self,
        request: &BuildRequest<'_>,
        output: &ToolOutput,
    ) -> BTreeMap<AssetKey, BuildOutcome>;

    /// The schedules the location's own definitions declare (Dagster's `ScheduleDefinition`s),
    /// read after a successful [`CodeLocation::load`] with the same input.
    fn schedules(&self, _input: &LoadInput<'_>) -> Vec<offshoot_core::Schedule> {
        Vec::new()
    }

    /// After the build: when each asset was built, where the tool says so (else the whole
    /// build's time is each step's).
    fn build_timings(&self, _request: &BuildRequest<'_>) -> BTreeMap<AssetKey, StepTiming> {
        BTreeMap::new()
    }
}

/// The implementation for a project's `[location]`.
pub fn for_manifest(manifest: &Manifest) -> Box<dyn CodeLocation> {
    match &manifest.location {
        LocationConfig::Native => Box::new(NativeLocation),
        LocationConfig::Dbt(config) => Box::new(DbtLocation::new(config.clone())),
        LocationConfig::Dagster(config) => Box::new(DagsterLocation::new(config.clone())),
    }
}

/// Reads the manifest and loads the commit with its location: the one entry point for every
/// caller (server, CLI). `checkout` is called only when the location needs the files on disk.
/// A native project reuses `cache` for every file whose content id it has seen (parse once per
/// blob), and starts from `previous` (another commit's project, see
/// [`offshoot_project::load_from`]) where it can; the tool locations use neither.
pub fn load_project(
    files: &dyn ProjectFiles,
    checkout: impl FnOnce() -> Result<PathBuf, String>,
    work_dir: &Path,
    env: &[(String, String)],
    sandbox: Option<&Sandbox>,
    cache: Option<&dyn ParseCache>,
    previous: Option<&Project>,
) -> Result<Project, LocationError> {
    let manifest = offshoot_project::read_manifest(files)?;
    if manifest.location == LocationConfig::Native {
        let mut project = offshoot_project::load_from(files, cache, previous)?;
        if !project.manifest.untracked_metadata.is_empty() {
            project.snapshot = normalized(&project.manifest, project.snapshot, &[])?;
            // What a file says is no longer what the snapshot holds: nothing to start from.
            project.blobs = None;
        }
        return Ok(project);
    }
    let location = for_manifest(&manifest);
    let dir = if location.needs_checkout() {
        Some(checkout().map_err(LocationError::Tool)?)
    } else {
        None
    };
    let input = LoadInput { files, checkout: dir.as_deref(), work_dir, env, sandbox };
    let snapshot = location.load(&manifest, &input)?;
    let mut manifest = manifest;
    // `[[schedules]]` in offshoot.toml win over the location's of the same name.
    for schedule in location.schedules(&input) {
        if !manifest.schedules.iter().any(|s| s.name == schedule.name) {
            manifest.schedules.push(schedule);
        }
    }
    let replacements = environment_values(dir.as_deref(), work_dir, env);
    let snapshot = normalized(&manifest, snapshot, &replacements)?;
    Ok(Project::new(manifest, snapshot))
}

/// What ties a load to where and as which commit it ran, and what stands for it in a snapshot:
/// the checkout's path (made relative to the repository root), the work folder's, and the
/// commit's SHA (Dagster+'s git-linked code references name it).
fn environment_values(
    checkout: Option<&Path>,
    work_dir: &Path,
    env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut values = Vec::new();
    let mut add = |path: &Path, by: &str| {
        let mut forms = vec![path.to_path_buf()];
        if let Ok(canonical) = std::fs::canonicalize(path) {
            forms.push(canonical);
        }
        for form in forms {
            let text = form.to_string_lossy().trim_end_matches('/').to_owned();
            if text.len() > 1 && !values.iter().any(|(t, _)| *t == text) {
                values.push((text, by.to_owned()));
            }
        }
    };
    add(work_dir, WORK_DIR_TOKEN);
    if let Some(checkout) = checkout {
        add(checkout, ".");
    }
    // Longest first: a work folder inside the checkout, say.
    values.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
    if let Some(sha) = lookup(env, "OFFSHOOT_GIT_SHA").filter(|s| s.len() == 40) {
        values.push((sha, GIT_SHA_TOKEN.to_owned()));
    }
    values
}

/// What stands for the load's own work folder in a snapshot.
pub const WORK_DIR_TOKEN: &str = "${OFFSHOOT_WORK_DIR}";
/// What stands for the loaded commit's SHA in a snapshot.
pub const GIT_SHA_TOKEN: &str = "${OFFSHOOT_GIT_SHA}";

/// `text` with every value of `replacements` replaced: a path by its stand-in (`.` for the
/// checkout, so `/checkout/a.py` becomes `a.py`), the SHA by its token.
pub fn replace_environment_values(text: &str, replacements: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (value, by) in replacements {
        if !text.contains(value.as_str()) {
            continue;
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(value.as_str()) {
            let after = &rest[at + value.len()..];
            // Only whole path components: `/x/checkout2` is not below `/x/checkout`.
            let boundary = after
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
            out.push_str(&rest[..at]);
            if !boundary {
                out.push_str(value);
                rest = after;
                continue;
            }
            if by == "." && after.starts_with('/') {
                rest = &after[1..]; // repository-relative
            } else {
                out.push_str(by);
                rest = after;
            }
        }
        out.push_str(rest);
        text = out;
    }
    text
}

/// The snapshot with environment values replaced in what it reports (metadata, tag values,
/// descriptions) and `[project] untracked_metadata` marked on each asset.
fn normalized(
    manifest: &offshoot_project::Manifest,
    snapshot: Snapshot,
    replacements: &[(String, String)],
) -> Result<Snapshot, LocationError> {
    let replace = |text: &str| replace_environment_values(text, replacements);
    let assets = snapshot.assets().cloned().map(|mut asset| {
        if !replacements.is_empty() {
            for value in asset.metadata.values_mut() {
                *value = replace(value);
            }
            for value in asset.tags.values_mut() {
                *value = replace(value);
            }
            asset.description = asset.description.as_deref().map(replace);
        }
        asset.untracked_metadata =
            asset.metadata.keys().filter(|k| manifest.untracked(k)).cloned().collect();
        asset
    });
    Snapshot::new(assets.collect::<Vec<_>>()).map_err(|e| LocationError::Tool(e.to_string()))
}

/// The last value of `name` in an environment list (later entries win, as for a child process).
pub(crate) fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// A diagnostic for a whole-project problem reported by a tool, placed at `path` (line 1).
pub(crate) fn tool_diagnostic(path: &str, message: impl Into<String>, hint: &str) -> Diagnostic {
    Diagnostic::new(path, (1, 1), message).hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_become_stand_ins() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let replacements = vec![
            ("/data/locations/shop/abc".to_owned(), WORK_DIR_TOKEN.to_owned()),
            ("/data/checkouts/abc".to_owned(), ".".to_owned()),
            (sha.to_owned(), GIT_SHA_TOKEN.to_owned()),
        ];
        let text = format!(
            r#"{{"code_references": [{{"file_path": "/data/checkouts/abc/shop/raw.py"}}, {{"url": "https://github.com/o/r/tree/{sha}/shop/raw.py#L3"}}], "root": "/data/checkouts/abc", "other": "/data/checkouts/abcd/x", "target": "/data/locations/shop/abc/target"}}"#
        );
        assert_eq!(
            replace_environment_values(&text, &replacements),
            r#"{"code_references": [{"file_path": "shop/raw.py"}, {"url": "https://github.com/o/r/tree/${OFFSHOOT_GIT_SHA}/shop/raw.py#L3"}], "root": ".", "other": "/data/checkouts/abcd/x", "target": "${OFFSHOOT_WORK_DIR}/target"}"#
        );
    }
}
