//! Loads a project from [`ProjectFiles`] into a validated [`Snapshot`], collecting every problem.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use offshoot_core::fingerprint::sha256_hex;
use offshoot_core::graph::{self, Dependencies};
use offshoot_core::snapshot::{render_cycle, SnapshotError};
use offshoot_core::{
    Asset, AssetKey, AssetKind, CodeVersion, Location, PartitionsDefinition, Snapshot, TimeCadence,
};
use serde::Deserialize;
use toml::Spanned;

use crate::diagnostic::{
    closest, line_column, toml_error_message, toml_error_position, Diagnostic,
};
use crate::files::{FileId, FilesError, ProjectFiles};
use crate::manifest::{self, Manifest};
use crate::parse_cache::{CacheKey, ParseCache, ParsedFile};
use crate::sql::{self, TableReference};
use crate::{toml_value, ASSETS_DIR, MANIFEST_PATH};

/// A valid project at one version.
#[derive(Debug, Clone)]
pub struct Project {
    pub manifest: Manifest,
    pub snapshot: Snapshot,
    /// What a native load read, when every file had a content id: the next load of another
    /// commit ([`load_from`]) reuses the assets of the files whose content did not change.
    pub blobs: Option<Arc<Blobs>>,
}

impl Project {
    /// A project with nothing to reuse it by (a code location's tool loaded it).
    pub fn new(manifest: Manifest, snapshot: Snapshot) -> Project {
        Project { manifest, snapshot, blobs: None }
    }
}

/// The content ids a native load read, and the keys its references resolve to.
#[derive(Debug)]
pub struct Blobs {
    manifest: String,
    /// The `assets/` folder's id ([`ProjectFiles::assets_id`]): the next load asks the files
    /// what changed since, instead of listing every path.
    assets: Option<String>,
    /// Every asset file's path with its content id.
    files: HashMap<Arc<str>, Arc<str>>,
    /// Every key (sources included) by its lower-case spelling: where unquoted references
    /// resolve. A valid project has no two keys that differ only in case.
    folded: Arc<HashMap<String, AssetKey>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The definitions have problems; every one found is listed, sorted by path and position.
    #[error("{} problem(s) in the project", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// The files could not be read at all.
    #[error(transparent)]
    Files(#[from] FilesError),
}

/// The keys an asset file may set: a command asset's whole file, or an SQL asset's header.
#[derive(Default)]
struct AssetFile {
    command: Option<Spanned<String>>,
    inputs: Vec<Spanned<String>>,
    deps: Vec<Spanned<String>>,
    group: Option<String>,
    description: Option<String>,
    tags: BTreeMap<String, String>,
    metadata: BTreeMap<String, toml::Value>,
    code_version: Option<String>,
    partitions: Option<Spanned<PartitionsFile>>,
    owners: Vec<String>,
    /// The columns that identify a row (for data diffs).
    grain: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionsFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    keys: Option<Vec<String>>,
}

/// A dependency named explicitly (`deps = [...]`), with its position in the file.
#[derive(Debug, Clone)]
pub(crate) struct NamedDep {
    pub(crate) name: String,
    pub(crate) position: (u32, u32),
}

/// An asset before its references are resolved.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub(crate) asset: Asset,
    pub(crate) references: Vec<TableReference>,
    pub(crate) named_deps: Vec<NamedDep>,
}

/// Reads and validates `offshoot.toml` alone: what every code location starts from.
pub fn read_manifest(files: &dyn ProjectFiles) -> Result<Manifest, LoadError> {
    let mut diagnostics = Vec::new();
    match read_manifest_into(files, &mut diagnostics)? {
        Some(manifest) if diagnostics.is_empty() => Ok(manifest),
        _ => {
            diagnostics.sort();
            Err(LoadError::Invalid(diagnostics))
        }
    }
}

fn read_manifest_into(
    files: &dyn ProjectFiles,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<Manifest>, LoadError> {
    Ok(match files.read(MANIFEST_PATH)? {
        None => {
            diagnostics.push(
                Diagnostic::new(MANIFEST_PATH, (1, 1), "no offshoot.toml at the repository root")
                    .hint("run `offshoot init` to create one, or point --repo at the project's repository"),
            );
            None
        }
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(text) => manifest::parse(&text, diagnostics),
            Err(error) => {
                diagnostics.push(not_utf8(MANIFEST_PATH, &error));
                None
            }
        },
    })
}

/// Loads a native project (SQL and command assets under `assets/`).
pub fn load(files: &dyn ProjectFiles) -> Result<Project, LoadError> {
    load_from(files, None, None)
}

/// One SQL file waiting to be parsed: (position in the sorted paths, path, key, text, the
/// cache key it will be kept under).
type PendingSql<'p> = (usize, &'p str, AssetKey, String, Option<CacheKey>);

/// One file's parse for this load: (position in the sorted paths, key, kind, the parse).
type ParsedEntry = (usize, AssetKey, AssetKind, Arc<ParsedFile>);

/// [`load`], reusing what `cache` holds for files whose content id it has seen (see
/// [`crate::parse_cache`]) and keeping there what it had to parse.
pub fn load_cached(
    files: &dyn ProjectFiles,
    cache: Option<&dyn ParseCache>,
) -> Result<Project, LoadError> {
    load_from(files, cache, None)
}

/// [`load_cached`], starting from `previous`, a valid project loaded from other files (another
/// commit): when `offshoot.toml` is the same and the changed files leave every reference of the
/// unchanged ones resolving as before, only the changed files are parsed and resolved and the
/// snapshot is derived from `previous`'s ([`Snapshot::with_changes`]). Anything else (a
/// problem in a changed file, a duplicate, a key removed while still read, a cycle) loads the
/// whole graph as [`load_cached`] does, so the result, diagnostics included, is always the same.
pub fn load_from(
    files: &dyn ProjectFiles,
    cache: Option<&dyn ParseCache>,
    previous: Option<&Project>,
) -> Result<Project, LoadError> {
    if let Some(previous) = previous {
        if let Some(project) = load_changes(files, cache, previous)? {
            return Ok(project);
        }
    }
    load_whole(files, cache)
}

/// Files being parsed, through the cache where it can serve them.
#[derive(Default)]
struct Parsing<'p> {
    sql_files: Vec<PendingSql<'p>>,
    parsed: Vec<ParsedEntry>,
    new_entries: Vec<(CacheKey, Arc<ParsedFile>)>,
}

impl<'p> Parsing<'p> {
    /// Takes one asset file: from the cache, parsed now (a command asset), or queued (SQL).
    fn add(
        &mut self,
        files: &dyn ProjectFiles,
        cache: Option<&dyn ParseCache>,
        (index, path, key, kind): (usize, &'p str, AssetKey, AssetKind),
        cache_key: Option<CacheKey>,
    ) -> Result<(), FilesError> {
        if let (Some(cache), Some(cache_key)) = (cache, &cache_key) {
            if let Some(found) = cache.get(&cache_key.digest()) {
                if inputs_unchanged(&found, files)? {
                    self.parsed.push((index, key, kind, found));
                    return Ok(());
                }
            }
        }
        let Some(bytes) = files.read(path)? else { return Ok(()) };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                let file = ParsedFile {
                    draft: None,
                    diagnostics: vec![not_utf8(path, &error)],
                    inputs: Vec::new(),
                };
                self.remember((index, key, kind), cache_key, file);
                return Ok(());
            }
        };
        match kind {
            AssetKind::Sql => self.sql_files.push((index, path, key, text, cache_key)),
            _ => {
                let mut found = Vec::new();
                // The inputs' content ids, if there is an entry to check them later.
                let mut inputs = cache_key.as_ref().map(|_| Vec::new());
                let draft =
                    command_asset(path, key.clone(), &text, files, &mut found, &mut inputs)?;
                // An input without a content id cannot be checked later: keep no entry.
                let cache_key = cache_key.filter(|_| inputs.is_some());
                let file =
                    ParsedFile { draft, diagnostics: found, inputs: inputs.unwrap_or_default() };
                self.remember((index, key, kind), cache_key, file);
            }
        }
        Ok(())
    }

    /// Keeps one file's parse for this load and, under `cache_key`, for the cache.
    fn remember(
        &mut self,
        (index, key, kind): (usize, AssetKey, AssetKind),
        cache_key: Option<CacheKey>,
        file: ParsedFile,
    ) {
        let file = Arc::new(file);
        if let Some(cache_key) = cache_key {
            self.new_entries.push((cache_key, file.clone()));
        }
        self.parsed.push((index, key, kind, file));
    }

    /// Parses the queued SQL, keeps what was parsed in the cache, and returns every file's
    /// parse in path order.
    fn finish(
        mut self,
        cache: Option<&dyn ParseCache>,
        dialect: crate::Dialect,
    ) -> Vec<ParsedEntry> {
        let sql_files = std::mem::take(&mut self.sql_files);
        for (index, key, cache_key, file) in parse_sql_files(sql_files, dialect) {
            self.remember((index, key, AssetKind::Sql), cache_key, file);
        }
        if let Some(cache) = cache {
            if !self.new_entries.is_empty() {
                cache.insert(self.new_entries);
            }
        }
        self.parsed.sort_by_key(|(index, ..)| *index);
        self.parsed
    }
}

/// What one reference resolves to, with where it is written: the key, or the name as written.
type Resolution = (Result<AssetKey, String>, (u32, u32));

/// Resolves a draft's references (`find(name, exact)`: exact for quoted names and `deps`) and
/// named dependencies; references to declared external tables are skipped.
fn resolve(
    draft: &Draft,
    external: &[String],
    find: impl Fn(&str, bool) -> Option<AssetKey>,
) -> Vec<Resolution> {
    let mut out = Vec::with_capacity(draft.references.len() + draft.named_deps.len());
    for reference in &draft.references {
        if !external.is_empty()
            && (external.contains(&reference.written().to_lowercase())
                || external.contains(
                    &reference
                        .parts
                        .iter()
                        .map(|(v, _)| v.to_lowercase())
                        .collect::<Vec<_>>()
                        .join("."),
                ))
        {
            continue;
        }
        let (name, quoted) = reference.parts.last().expect("references have at least one part");
        let position = (reference.line, reference.column);
        out.push((find(name, *quoted).ok_or_else(|| reference.written()), position));
    }
    for named in &draft.named_deps {
        out.push((find(&named.name, true).ok_or_else(|| named.name.clone()), named.position));
    }
    out
}

/// [`load_from`]'s reuse of `previous`; `None` when the whole graph has to be loaded.
fn load_changes(
    files: &dyn ProjectFiles,
    cache: Option<&dyn ParseCache>,
    previous: &Project,
) -> Result<Option<Project>, LoadError> {
    let Some(blobs) = previous.blobs.as_ref() else { return Ok(None) };
    // Metadata normalised after the load is not what a file alone says.
    if !previous.manifest.untracked_metadata.is_empty() {
        return Ok(None);
    }
    match files.file_id(MANIFEST_PATH)? {
        FileId::Content(id) if id == blobs.manifest => {}
        _ => return Ok(None),
    }
    let dialect = previous.manifest.dialect;
    let Some((contents, changes)) = changed_files(files, blobs)? else { return Ok(None) };
    let mut changed: Vec<(&str, AssetKey, AssetKind, String)> = Vec::new();
    // The keys of files gone; a key whose file moved is changed, not removed.
    let mut removed: BTreeSet<AssetKey> = BTreeSet::new();
    let mut no_diagnostics = Vec::new();
    for (path, id) in &changes {
        let Some(kind) = asset_kind_of(path) else { continue };
        let Some(key) = key_of(path, &mut no_diagnostics) else { return Ok(None) };
        match id {
            Some(id) => changed.push((path.as_str(), key, kind, id.clone())),
            None => {
                removed.insert(key);
            }
        }
    }
    // Keys on new paths: a file moved (its key's old file is gone), a new key, or a duplicate.
    let mut added: BTreeSet<AssetKey> = BTreeSet::new();
    for (path, key, ..) in &changed {
        if blobs.files.contains_key(*path) {
            continue;
        }
        let fresh = if previous.snapshot.contains(key) {
            removed.remove(key)
        } else {
            added.insert(key.clone())
        };
        if !fresh {
            // Defined twice: the whole load reports where.
            return Ok(None);
        }
    }
    let folded = if added.is_empty() && removed.is_empty() {
        blobs.folded.clone()
    } else {
        let mut folded = (*blobs.folded).clone();
        for key in &removed {
            folded.remove(&key.as_str().to_lowercase());
        }
        for key in &added {
            // Two keys that differ only in case: the whole load reports the duplicate.
            if folded.insert(key.as_str().to_lowercase(), key.clone()).is_some() {
                return Ok(None);
            }
        }
        Arc::new(folded)
    };

    let mut parsing = Parsing::default();
    for (index, (path, key, kind, id)) in changed.iter().enumerate() {
        let cache_key =
            CacheKey { kind: *kind, dialect, path: (*path).to_owned(), content: id.clone() };
        parsing.add(files, cache, (index, path, key.clone(), *kind), Some(cache_key))?;
    }
    let external = &previous.manifest.external;
    let find = |name: &str, exact: bool| {
        let found = folded.get(&name.to_lowercase())?;
        (!exact || found.as_str() == name).then(|| found.clone())
    };
    let mut assets = Vec::with_capacity(changed.len());
    for (.., file) in parsing.finish(cache, dialect) {
        let Some(draft) = file.draft.as_ref().filter(|_| file.diagnostics.is_empty()) else {
            return Ok(None);
        };
        let mut asset = draft.asset.clone();
        for (found, _) in resolve(draft, external, find) {
            match found {
                Ok(key) => {
                    asset.deps.insert(key);
                }
                Err(_) => return Ok(None),
            }
        }
        assets.push(asset);
    }
    if assets.len() != changed.len() {
        // A file listed but gone before it was read.
        return Ok(None);
    }
    let Ok(snapshot) = previous.snapshot.with_changes(assets, &removed) else { return Ok(None) };
    let blobs = Blobs {
        manifest: blobs.manifest.clone(),
        assets: files.assets_id(),
        files: contents,
        folded,
    };
    Ok(Some(Project {
        manifest: previous.manifest.clone(),
        snapshot,
        blobs: Some(Arc::new(blobs)),
    }))
}

/// Every asset file's content id now, and the asset files that differ from `blobs`' (each
/// with its id now, `None` when gone), sorted by path. A command asset is always listed: its
/// inputs may have changed (the cache checks them). `None` when a file has no content id.
type ChangedFiles = (HashMap<Arc<str>, Arc<str>>, Vec<(String, Option<String>)>);

fn changed_files(
    files: &dyn ProjectFiles,
    blobs: &Blobs,
) -> Result<Option<ChangedFiles>, FilesError> {
    let mut changes: Vec<(String, Option<String>)> = Vec::new();
    let diff = match &blobs.assets {
        Some(since) => files.assets_changed_since(since)?,
        None => None,
    };
    let contents = if let Some(diff) = diff {
        let mut contents = blobs.files.clone();
        for (path, id) in diff {
            if asset_kind_of(&path).is_none() {
                continue;
            }
            match id {
                FileId::Content(id) => {
                    contents.insert(Arc::from(path.as_str()), Arc::from(id.as_str()));
                    changes.push((path, Some(id)));
                }
                FileId::Missing => {
                    if contents.remove(path.as_str()).is_some() {
                        changes.push((path, None));
                    }
                }
                FileId::Unavailable => return Ok(None),
            }
        }
        let listed: BTreeSet<String> = changes.iter().map(|(path, _)| path.clone()).collect();
        for (path, id) in &contents {
            if asset_kind_of(path) == Some(AssetKind::Command) && !listed.contains(&**path) {
                changes.push((path.to_string(), Some(id.to_string())));
            }
        }
        contents
    } else {
        let paths = files.asset_paths()?;
        let mut contents: HashMap<Arc<str>, Arc<str>> = HashMap::with_capacity(paths.len());
        for path in paths {
            let Some(kind) = asset_kind_of(&path) else { continue };
            let FileId::Content(id) = files.file_id(&path)? else { return Ok(None) };
            match blobs.files.get_key_value(path.as_str()) {
                Some((known, before)) if kind == AssetKind::Sql && **before == *id => {
                    contents.insert(known.clone(), before.clone());
                }
                _ => {
                    contents.insert(Arc::from(path.as_str()), Arc::from(id.as_str()));
                    changes.push((path, Some(id)));
                }
            }
        }
        for path in blobs.files.keys() {
            if !contents.contains_key(path) {
                changes.push((path.to_string(), None));
            }
        }
        contents
    };
    changes.sort();
    Ok(Some((contents, changes)))
}

/// The whole graph: every file from the cache or parsed, every reference resolved, every
/// problem reported.
fn load_whole(
    files: &dyn ProjectFiles,
    cache: Option<&dyn ParseCache>,
) -> Result<Project, LoadError> {
    let mut diagnostics = Vec::new();
    let manifest = read_manifest_into(files, &mut diagnostics)?;
    let dialect = manifest.as_ref().map_or(crate::Dialect::Generic, |m| m.dialect);
    let manifest_id = match (cache, files.file_id(MANIFEST_PATH)?) {
        (Some(_), FileId::Content(id)) => Some(id),
        _ => None,
    };

    let mut paths = files.asset_paths()?;
    paths.sort();
    // Reading stays on this thread (the files may be a git handle); SQL parsing, most of the
    // work, is pure and runs on every core.
    let mut parsing = Parsing::default();
    // Every asset file's content id, while every one has one.
    let mut contents: Option<HashMap<Arc<str>, Arc<str>>> =
        manifest_id.as_ref().map(|_| HashMap::with_capacity(paths.len()));
    for (index, path) in paths.iter().enumerate() {
        let Some(kind) = asset_kind_of(path) else { continue };
        let Some(key) = key_of(path, &mut diagnostics) else { continue };
        let cache_key = match cache {
            None => None,
            Some(_) => match files.file_id(path)? {
                FileId::Content(content) => {
                    if let Some(contents) = contents.as_mut() {
                        contents.insert(Arc::from(path.as_str()), Arc::from(content.as_str()));
                    }
                    Some(CacheKey { kind, dialect, path: path.clone(), content })
                }
                FileId::Missing => continue,
                FileId::Unavailable => {
                    contents = None;
                    None
                }
            },
        };
        parsing.add(files, cache, (index, path, key, kind), cache_key)?;
    }
    let drafts: Vec<Draft> = parsing
        .finish(cache, dialect)
        .into_iter()
        .map(|(index, key, kind, file)| {
            diagnostics.extend(file.diagnostics.iter().cloned());
            match &file.draft {
                Some(draft) => draft.clone(),
                None => placeholder(&paths[index], key, kind),
            }
        })
        .collect();

    let sources = manifest.as_ref().map(|m| m.sources.clone()).unwrap_or_default();
    let external: Vec<String> = manifest.as_ref().map(|m| m.external.clone()).unwrap_or_default();
    let (keys, drafts) = check_duplicates(&sources, drafts, &mut diagnostics);
    let mut assets: Vec<Asset> = sources;
    let mut reference_positions: ReferencePositions = BTreeMap::new();
    // One suggestion search per distinct unknown name: a deleted source read by thousands of
    // assets must not cost thousands of searches.
    let mut suggestions: BTreeMap<String, Option<String>> = BTreeMap::new();
    let find = |name: &str, exact: bool| {
        if exact { keys.exact.get(name) } else { keys.folded.get(&name.to_lowercase()) }.cloned()
    };
    for mut draft in drafts {
        let path = draft.asset.location.path.clone();
        for (found, position) in resolve(&draft, &external, find) {
            match found {
                Ok(key) => {
                    reference_positions
                        .entry((draft.asset.key.clone(), key.clone()))
                        .or_insert((path.clone(), position));
                    draft.asset.deps.insert(key);
                }
                Err(written) => diagnostics.push(unknown_reference(
                    &path,
                    position,
                    &written,
                    &keys,
                    &mut suggestions,
                )),
            }
        }
        assets.push(draft.asset);
    }

    // A valid project is ordered once, by `Snapshot::build`; the graph is ordered again only
    // to find cycles among other problems, or to report the cycles a snapshot refused.
    let assets = match manifest {
        Some(manifest) if diagnostics.is_empty() => match Snapshot::build(assets) {
            Ok(snapshot) => {
                let assets = files.assets_id();
                let blobs = manifest_id.zip(contents).map(|(manifest, files)| {
                    let folded = keys.folded.into_iter().collect();
                    Arc::new(Blobs { manifest, assets, files, folded: Arc::new(folded) })
                });
                return Ok(Project { manifest, snapshot, blobs });
            }
            Err((SnapshotError::Cycle(_), assets)) => assets,
            Err((error, _)) => {
                let at = Diagnostic::new(MANIFEST_PATH, (1, 1), error.to_string());
                return Err(LoadError::Invalid(vec![at]));
            }
        },
        _ => assets,
    };
    report_cycles(&assets, &reference_positions, &mut diagnostics);
    diagnostics.sort();
    diagnostics.dedup();
    Err(LoadError::Invalid(diagnostics))
}

/// Where each dependency (reader, read) is first written: (path, (line, column)).
type ReferencePositions = BTreeMap<(AssetKey, AssetKey), (String, (u32, u32))>;

/// One diagnostic per dependency cycle, at the reference that closes it.
fn report_cycles(
    assets: &[Asset],
    reference_positions: &ReferencePositions,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let dependencies: Dependencies =
        assets.iter().map(|a| (a.key.clone(), a.deps.clone())).collect();
    if graph::topological_order(&dependencies).is_ok() {
        return;
    }
    for cycle in graph::find_cycles(&dependencies) {
        let next = cycle.get(1).unwrap_or(&cycle[0]);
        let (path, position) = reference_positions
            .get(&(cycle[0].clone(), next.clone()))
            .cloned()
            .unwrap_or_else(|| (MANIFEST_PATH.to_owned(), (1, 1)));
        diagnostics.push(
            Diagnostic::new(&path, position, format!("dependency cycle: {}", render_cycle(&cycle)))
                .hint("an asset cannot read from itself, directly or through other assets; break the cycle"),
        );
    }
}

/// Whether every input file a cached command asset hashed still has the content it had.
fn inputs_unchanged(file: &ParsedFile, files: &dyn ProjectFiles) -> Result<bool, FilesError> {
    for (path, content) in &file.inputs {
        let now = match files.file_id(path)? {
            FileId::Content(id) => Some(id),
            FileId::Missing => None,
            FileId::Unavailable => return Ok(false),
        };
        if now != *content {
            return Ok(false);
        }
    }
    Ok(true)
}

type ParsedSqlFile = (usize, AssetKey, Option<CacheKey>, ParsedFile);

/// Stands in for an asset whose file has errors (already reported), so that references to it
/// resolve and one broken file does not make every reader report "not an asset" too. A project
/// with errors never becomes a snapshot, so the placeholder never reaches one.
fn placeholder(path: &str, key: AssetKey, kind: AssetKind) -> Draft {
    let mut asset = Asset::new(key, kind);
    asset.location = Location { path: path.to_owned(), line: 1 };
    Draft { asset, references: Vec::new(), named_deps: Vec::new() }
}

/// Parses SQL assets on up to four threads, in contiguous chunks so the results keep their order.
fn parse_sql_files(files: Vec<PendingSql<'_>>, dialect: crate::Dialect) -> Vec<ParsedSqlFile> {
    let parse = |(index, path, key, text, cache_key): PendingSql<'_>| {
        let mut found = Vec::new();
        let draft = sql_asset(path, key.clone(), &text, dialect, &mut found);
        (index, key, cache_key, ParsedFile { draft, diagnostics: found, inputs: Vec::new() })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if threads < 2 || files.len() < 64 {
        return files.into_iter().map(parse).collect();
    }
    let chunk = files.len().div_ceil(threads);
    let mut chunks: Vec<Vec<PendingSql<'_>>> = Vec::new();
    let mut rest = files.into_iter();
    loop {
        let part: Vec<_> = rest.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(part);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(parse).collect::<Vec<_>>()))
            .collect();
        // A panic in the parser is a bug; surface it rather than losing assets.
        handles.into_iter().flat_map(|h| h.join().expect("SQL parsing does not panic")).collect()
    })
}

fn asset_kind_of(path: &str) -> Option<AssetKind> {
    if path.ends_with(".sql") {
        Some(AssetKind::Sql)
    } else if path.ends_with(".toml") {
        Some(AssetKind::Command)
    } else {
        None
    }
}

fn key_of(path: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<AssetKey> {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    let stem = file_name.rsplit_once('.').map_or(file_name, |(stem, _)| stem);
    match AssetKey::identifier(stem) {
        Ok(key) => Some(key),
        Err(error) => {
            diagnostics.push(
                Diagnostic::new(path, (1, 1), format!("invalid asset file name `{file_name}`: {error}"))
                    .hint("the file name (without extension) is the asset's table name: rename it to letters, digits and `_`, like `stg_orders.sql`"),
            );
            None
        }
    }
}

/// The first folder under `assets/`, or `default`.
fn default_group(path: &str) -> String {
    let inner = path.strip_prefix(ASSETS_DIR).and_then(|p| p.strip_prefix('/')).unwrap_or(path);
    match inner.split_once('/') {
        Some((folder, _)) => folder.to_owned(),
        None => "default".to_owned(),
    }
}

fn not_utf8(path: &str, error: &std::string::FromUtf8Error) -> Diagnostic {
    let offset = error.utf8_error().valid_up_to();
    let text = String::from_utf8_lossy(&error.as_bytes()[..offset]);
    Diagnostic::new(path, line_column(&text, offset), "the file is not valid UTF-8")
        .hint("save the file as UTF-8")
}

/// The keys an asset file may set, in the order the hint lists them.
const ASSET_KEYS: [&str; 11] = [
    "command",
    "inputs",
    "deps",
    "group",
    "description",
    "tags",
    "metadata",
    "code_version",
    "partitions",
    "owners",
    "grain",
];

/// An asset file's keys as far as they could be read, and whether anything could not be.
struct ParsedAssetFile {
    file: AssetFile,
    /// A syntax error or a key whose value was invalid: what is missing may have been meant.
    incomplete: bool,
}

/// Reads an asset file's TOML (a command asset's whole file, or an SQL asset's header) and
/// reports every problem in it, not the first: TOML syntax errors with recovery, then each key
/// on its own (an unknown key, with the closest valid one; a value of the wrong shape), so one
/// mistake never hides another in the same file.
fn parse_asset_file(
    path: &str,
    file: &str,
    toml_text: &str,
    offset: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> ParsedAssetFile {
    let (table, syntax_errors) = toml::de::DeTable::parse_recoverable(toml_text);
    let mut incomplete = !syntax_errors.is_empty();
    let mut seen_lines = BTreeSet::new();
    for error in &syntax_errors {
        let position = toml_error_position(file, error, offset);
        // Recovery can report one broken line more than once; the first report is the clearest.
        if seen_lines.insert(position.0) {
            diagnostics.push(Diagnostic::new(path, position, toml_error_message(error)));
        }
    }
    let broken: Vec<usize> =
        syntax_errors.iter().filter_map(|e| e.span()).map(|span| span.start).collect();
    let mut entries: Vec<_> = table.into_inner().into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    let starts: Vec<usize> = entries.iter().map(|(key, _)| key.span().start).collect();
    let mut parsed = AssetFile::default();
    for (index, (key, value)) in entries.into_iter().enumerate() {
        let name = key.get_ref().as_ref();
        // A key with a syntax error between it and the next key holds what recovery made of
        // its value: that error is the one to fix, the value is not checked again.
        let until = starts.get(index + 1).copied().unwrap_or(usize::MAX);
        if broken.iter().any(|at| (starts[index]..until).contains(at)) {
            continue;
        }
        let key_position = line_column(file, offset + key.span().start);
        let value_position = line_column(file, offset + value.span().start);
        let mut problem = None;
        macro_rules! read {
            ($field:expr) => {
                match Deserialize::deserialize(toml::de::ValueDeserializer::from(value)) {
                    Ok(read) => $field = read,
                    Err(error) => problem = Some(error),
                }
            };
        }
        match name {
            "command" => read!(parsed.command),
            "inputs" => read!(parsed.inputs),
            "deps" => read!(parsed.deps),
            "group" => read!(parsed.group),
            "description" => read!(parsed.description),
            "tags" => read!(parsed.tags),
            "metadata" => read!(parsed.metadata),
            "code_version" => read!(parsed.code_version),
            "partitions" => read!(parsed.partitions),
            "owners" => read!(parsed.owners),
            "grain" => read!(parsed.grain),
            unknown => {
                incomplete = true;
                let message = match closest(unknown, ASSET_KEYS) {
                    Some(k) => format!("unknown key `{unknown}`; did you mean `{k}`?"),
                    None => format!("unknown key `{unknown}`"),
                };
                diagnostics.push(
                    Diagnostic::new(path, key_position, message)
                        .hint(format!("valid keys: {}", ASSET_KEYS.join(", "))),
                );
                continue;
            }
        }
        if let Some(error) = problem {
            incomplete = true;
            // The value's own error span is relative to the document; without one, the value.
            let position = match error.span() {
                Some(span) if span.start > 0 => line_column(file, offset + span.start),
                _ => value_position,
            };
            diagnostics.push(Diagnostic::new(
                path,
                position,
                format!("`{name}`: {}", toml_error_message(&error)),
            ));
        }
    }
    ParsedAssetFile { file: parsed, incomplete }
}

/// Applies the keys both kinds share; returns false if something was invalid.
fn apply_attributes(
    asset: &mut Asset,
    file: &AssetFile,
    path: &str,
    text: &str,
    offset: usize,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Some(group) = &file.group {
        asset.group = group.clone();
    }
    asset.description = file.description.clone();
    asset.tags = file.tags.clone();
    asset.metadata =
        file.metadata.iter().map(|(k, v)| (k.clone(), toml_value::canonical(v))).collect();
    asset.owners = file.owners.clone();
    asset.grain = file.grain.clone();
    if let Some(partitions) = &file.partitions {
        let position = line_column(text, offset + partitions.span().start);
        match partitions_definition(partitions.get_ref()) {
            Ok(definition) => asset.partitions = Some(definition),
            Err(message) => diagnostics.push(Diagnostic::new(path, position, message).hint(
                "write partitions = { type = \"daily\", start = \"2024-01-01\" } (hourly, daily, weekly, monthly) or { type = \"static\", keys = [\"eu\", \"us\"] }",
            )),
        }
    }
}

fn partitions_definition(file: &PartitionsFile) -> Result<PartitionsDefinition, String> {
    if file.kind == "static" {
        let keys = file.keys.clone().ok_or("static partitions need `keys`")?;
        if keys.is_empty() {
            return Err("static partitions need at least one key".into());
        }
        let unique: BTreeSet<&String> = keys.iter().collect();
        if unique.len() != keys.len() {
            return Err("static partition keys must be unique".into());
        }
        return Ok(PartitionsDefinition::Static { keys });
    }
    let cadence = TimeCadence::parse(&file.kind)
        .ok_or_else(|| format!("unknown partitions type `{}`", file.kind))?;
    let start = file
        .start
        .clone()
        .ok_or_else(|| format!("{} partitions need a `start` date", file.kind))?;
    if !looks_like_date(&start) {
        return Err(format!("partitions start `{start}` is not a date like 2024-01-01"));
    }
    if let Some(end) = &file.end {
        if !looks_like_date(end) || end.as_str() <= start.as_str() {
            return Err(format!("partitions end `{end}` must be a date after the start"));
        }
    }
    Ok(PartitionsDefinition::Time { cadence, start, end: file.end.clone() })
}

/// `YYYY-MM-DD`, optionally followed by a time.
fn looks_like_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

fn named_deps(file: &AssetFile, text: &str, offset: usize) -> Vec<NamedDep> {
    file.deps
        .iter()
        .map(|dep| NamedDep {
            name: dep.get_ref().clone(),
            position: line_column(text, offset + dep.span().start),
        })
        .collect()
}

fn sql_asset(
    path: &str,
    key: AssetKey,
    text: &str,
    dialect: crate::Dialect,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Draft> {
    let mut asset = Asset::new(key, AssetKind::Sql);
    asset.group = default_group(path);
    asset.location = Location { path: path.to_owned(), line: 1 };
    let (header, body) = match sql::split_header(text) {
        Ok(Some(header)) => {
            let parsed = parse_asset_file(path, text, header.toml, header.offset, diagnostics);
            (Some((parsed.file, header.offset)), header.body)
        }
        Ok(None) => (None, text),
        Err(position) => {
            diagnostics.push(
                Diagnostic::new(path, position, "the `/* offshoot` header is never closed")
                    .hint("end the header with `*/`"),
            );
            return None;
        }
    };
    let mut named = Vec::new();
    let mut explicit_version = None;
    if let Some((file, offset)) = &header {
        if let Some(command) = &file.command {
            diagnostics.push(
                Diagnostic::new(
                    path,
                    line_column(text, offset + command.span().start),
                    "`command` is not allowed in an SQL asset's header",
                )
                .hint("command assets are .toml files of their own"),
            );
        }
        if let Some(input) = file.inputs.first() {
            diagnostics.push(
                Diagnostic::new(
                    path,
                    line_column(text, offset + input.span().start),
                    "`inputs` is not allowed in an SQL asset's header",
                )
                .hint("only command assets declare input files"),
            );
        }
        apply_attributes(&mut asset, file, path, text, *offset, diagnostics);
        named = named_deps(file, text, *offset);
        explicit_version = file.code_version.clone();
    }
    let parsed = match sql::parse(path, text, dialect) {
        Ok(parsed) => parsed,
        Err(diagnostic) => {
            diagnostics.push(diagnostic);
            return None;
        }
    };
    let code = format!("{}\n", body.trim());
    asset.code = Arc::from(code);
    asset.code_version = match explicit_version {
        Some(version) => CodeVersion::explicit(version),
        None => CodeVersion::derived(sha256_hex(&[
            b"sql",
            crate::canonical::version().as_bytes(),
            parsed.canonical.as_bytes(),
        ])),
    };
    Some(Draft { asset, references: parsed.references, named_deps: named })
}

fn command_asset(
    path: &str,
    key: AssetKey,
    text: &str,
    files: &dyn ProjectFiles,
    diagnostics: &mut Vec<Diagnostic>,
    inputs: &mut Option<Vec<(String, Option<String>)>>,
) -> Result<Option<Draft>, FilesError> {
    let ParsedAssetFile { file, incomplete } = parse_asset_file(path, text, text, 0, diagnostics);
    let mut asset = Asset::new(key, AssetKind::Command);
    asset.group = default_group(path);
    asset.location = Location { path: path.to_owned(), line: 1 };
    apply_attributes(&mut asset, &file, path, text, 0, diagnostics);
    let Some(command) = file.command.as_ref().filter(|c| !c.get_ref().trim().is_empty()) else {
        if incomplete && file.command.is_none() {
            // Already reported: the `command` line may be the one that could not be read.
            return Ok(None);
        }
        diagnostics.push(
            Diagnostic::new(path, (1, 1), "a command asset needs a non-empty `command`").hint(
                "add command = \"python3 scripts/load.py\"; it runs in a checkout of the commit",
            ),
        );
        return Ok(None);
    };
    let mut version_parts: Vec<Vec<u8>> =
        vec![b"command".to_vec(), command.get_ref().as_bytes().to_vec()];
    for input in &file.inputs {
        let position = line_column(text, input.span().start);
        let input_path = input.get_ref();
        if !is_relative_path(input_path) {
            diagnostics.push(
                Diagnostic::new(
                    path,
                    position,
                    format!("input `{input_path}` must be a relative path inside the repository"),
                )
                .hint(
                    "write paths from the repository root without `..`, like \"scripts/load.py\"",
                ),
            );
            continue;
        }
        if let Some(recorded) = inputs.as_mut() {
            match files.file_id(input_path)? {
                FileId::Content(id) => recorded.push((input_path.clone(), Some(id))),
                FileId::Missing => recorded.push((input_path.clone(), None)),
                FileId::Unavailable => *inputs = None,
            }
        }
        match files.read(input_path)? {
            Some(content) => {
                version_parts.push(input_path.as_bytes().to_vec());
                version_parts.push(content);
            }
            None => diagnostics.push(
                Diagnostic::new(path, position, format!("input file `{input_path}` does not exist"))
                    .hint("inputs are files from the repository root whose content is part of the code version"),
            ),
        }
    }
    let parts: Vec<&[u8]> = version_parts.iter().map(Vec::as_slice).collect();
    asset.code_version = match &file.code_version {
        Some(version) => CodeVersion::explicit(version.clone()),
        None => CodeVersion::derived(sha256_hex(&parts)),
    };
    asset.code = Arc::from(format!("{}\n", command.get_ref().trim_end()));
    Ok(Some(Draft { asset, references: Vec::new(), named_deps: named_deps(&file, text, 0) }))
}

fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains('\0')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The keys references resolve to: exact (quoted) and case-folded (unquoted) lookups.
struct KnownKeys {
    exact: BTreeMap<String, AssetKey>,
    folded: BTreeMap<String, AssetKey>,
}

/// Reports every key defined twice (ignoring case) and keeps only the first definition, so one
/// duplicate does not hide the rest of the graph's problems.
fn check_duplicates(
    sources: &[Asset],
    drafts: Vec<Draft>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (KnownKeys, Vec<Draft>) {
    let mut known = KnownKeys { exact: BTreeMap::new(), folded: BTreeMap::new() };
    let mut first: BTreeMap<String, Location> = BTreeMap::new();
    let mut is_new = |asset: &Asset, diagnostics: &mut Vec<Diagnostic>| {
        let folded = asset.key.as_str().to_lowercase();
        if let Some(previous) = first.get(&folded) {
            diagnostics.push(
                Diagnostic::new(&asset.location.path, (asset.location.line, 1), format!("duplicate key `{}`", asset.key))
                    .hint(format!("`{}` is already defined at {}:{}; asset and source names must be unique (ignoring case)", asset.key, previous.path, previous.line)),
            );
            return false;
        }
        first.insert(folded.clone(), asset.location.clone());
        known.exact.insert(asset.key.as_str().to_owned(), asset.key.clone());
        known.folded.insert(folded, asset.key.clone());
        true
    };
    for source in sources {
        is_new(source, diagnostics);
    }
    let drafts = drafts.into_iter().filter(|d| is_new(&d.asset, diagnostics)).collect();
    (known, drafts)
}

fn unknown_reference(
    path: &str,
    position: (u32, u32),
    name: &str,
    keys: &KnownKeys,
    suggestions: &mut BTreeMap<String, Option<String>>,
) -> Diagnostic {
    let last = name.rsplit('.').next().unwrap_or(name).trim_matches('"').to_lowercase();
    let closest = suggestions.entry(last.clone()).or_insert_with(|| {
        keys.folded
            .keys()
            .filter(|k| k.len().abs_diff(last.len()) <= 2)
            .map(|k| (edit_distance(k, &last), k))
            .filter(|(d, k)| *d <= 2 && *d < k.len())
            .min()
            .map(|(_, k)| k.clone())
    });
    let suggestion =
        closest.as_ref().map(|k| format!("did you mean `{k}`? Otherwise ")).unwrap_or_default();
    Diagnostic::new(path, position, format!("`{name}` is not an asset, a source or a declared external table")).hint(format!(
        "{suggestion}add an asset file for it, declare it under [sources.{last}] in offshoot.toml, or list it in `external`"
    ))
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { previous } else { 1 + previous.min(row[j]).min(current) };
            previous = current;
        }
    }
    row[b.len()]
}
