//! Parse once per blob: a load that reuses the parse cache gives exactly what a load from
//! scratch gives, over random sequences of real git commits (adds, edits, renames, deletes,
//! broken files, changed inputs and changes of offshoot.toml), across restarts; and an entry on
//! disk that is corrupt, foreign or of another version is ignored.

use std::path::{Path, PathBuf};

use offshoot_location::{load_project, DiskParseCache, ParseCacheOptions};
use offshoot_project::parse_cache::ParseCache;
use offshoot_project::Project;
use offshoot_repo::write::Tree;
use offshoot_repo::GitRepository;
use proptest::prelude::*;

const AUTHOR: (&str, &str) = ("Test", "test@offshoot.invalid");

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "offshoot-location-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the temporary folder can be made");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const NAMES: &[&str] = &["orders", "customers", "revenue", "Orders", "bad-name"];
const FOLDERS: &[&str] = &["staging", "marts"];

const SQL: &[&[u8]] = &[
    b"SELECT 1 AS x\n",
    b"SELECT * FROM raw_orders\n",
    b"SELECT * FROM orders\n",
    b"SELECT * FROM customers JOIN revenue ON true\n",
    b"/* offshoot\ntags = { tier = \"gold\" }\n*/\nselect   *  from ORDERS -- comment\n",
    b"SELEC broken\n",
    b"SELECT '\xff'\n",
    b"WITH orders AS (SELECT 1 AS x) SELECT * FROM orders\n",
    b"/* offshoot\ngroup = \"core\"\ndeps = [\"customers\"]\n*/\nSELECT * FROM raw_customers\n",
    b"/* offshoot\npartitions = { type = \"daily\", start = \"2024-01-01\" }\n*/\nSELECT * FROM \"revenue\"\n",
    b"/* offshoot\nunknown = 1\n*/\nSELECT 1\n",
    b"/* offshoot never closed\nSELECT 1\n",
    b"SELECT * FROM nowhere\n",
    b"SELECT 1; SELECT 2\n",
];

const COMMANDS: &[&[u8]] = &[
    b"command = \"python3 scripts/load.py\"\ninputs = [\"scripts/load.py\"]\n",
    b"command = \"true\"\ndeps = [\"orders\"]\ntags = { kind = \"py\" }\n",
    b"command = \"\"\n",
    b"command = \"x\"\ninputs = [\"../etc/passwd\"]\n",
    b"nonsense = [\n",
    b"command = \"python3 scripts/load.py\"\ninputs = [\"scripts/load.py\", \"scripts\"]\ncode_version = \"7\"\n",
];

const MANIFESTS: &[&str] = &[
    "[project]\nname = \"p\"\n\n[sources.raw_orders]\n\n[sources.raw_customers]\n",
    "[project]\nname = \"p\"\ndialect = \"sqlite\"\n\n[sources.raw_orders]\n",
    "[project]\nname = \"p\"\ndialect = \"postgres\"\nexternal = [\"nowhere\"]\n\n[sources.raw_customers]\n",
    "[project\nname = ",
];

const INPUT: &str = "scripts/load.py";

#[derive(Debug, Clone)]
enum Change {
    /// Writes a file (a new one or an edit) at the path `(folder, name, is_sql)`.
    Write {
        folder: usize,
        name: usize,
        sql: bool,
        content: usize,
    },
    Delete {
        file: usize,
    },
    Rename {
        file: usize,
        folder: usize,
        name: usize,
    },
    Manifest(usize),
    /// Edits the command assets' input, or deletes it (`None`).
    Input(Option<u8>),
    /// Drops the in-memory cache and opens the folder again, as a restarted process does.
    Restart,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..FOLDERS.len(), 0..NAMES.len(), any::<bool>(), 0..SQL.len().max(COMMANDS.len()))
            .prop_map(|(folder, name, sql, content)| Change::Write { folder, name, sql, content }),
        1 => (0..8usize).prop_map(|file| Change::Delete { file }),
        1 => (0..8usize, 0..FOLDERS.len(), 0..NAMES.len())
            .prop_map(|(file, folder, name)| Change::Rename { file, folder, name }),
        1 => (0..MANIFESTS.len()).prop_map(Change::Manifest),
        1 => proptest::option::of(any::<u8>()).prop_map(Change::Input),
        1 => Just(Change::Restart),
    ]
}

fn asset_path(folder: usize, name: usize, sql: bool) -> String {
    format!("assets/{}/{}.{}", FOLDERS[folder], NAMES[name], if sql { "sql" } else { "toml" })
}

/// Applies `change` to the tree; returns false for a restart (the tree is unchanged).
fn apply(tree: &mut Tree, change: &Change) -> bool {
    match change {
        Change::Write { folder, name, sql, content } => {
            let bytes =
                if *sql { SQL[content % SQL.len()] } else { COMMANDS[content % COMMANDS.len()] };
            tree.insert(asset_path(*folder, *name, *sql), bytes.to_vec());
        }
        Change::Delete { file } => {
            let assets: Vec<String> =
                tree.keys().filter(|p| p.starts_with("assets/")).cloned().collect();
            if !assets.is_empty() {
                tree.remove(&assets[file % assets.len()]);
            }
        }
        Change::Rename { file, folder, name } => {
            let assets: Vec<String> =
                tree.keys().filter(|p| p.starts_with("assets/")).cloned().collect();
            if !assets.is_empty() {
                let from = &assets[file % assets.len()];
                let content = tree.remove(from).expect("the path comes from the tree");
                tree.insert(asset_path(*folder, *name, from.ends_with(".sql")), content);
            }
        }
        Change::Manifest(index) => {
            tree.insert("offshoot.toml".into(), MANIFESTS[*index].as_bytes().to_vec());
        }
        Change::Input(Some(byte)) => {
            tree.insert(INPUT.into(), format!("print({byte})\n").into_bytes());
        }
        Change::Input(None) => {
            tree.remove(INPUT);
        }
        Change::Restart => return false,
    }
    true
}

/// A load's outcome in a comparable form: every asset with its fingerprint, or the diagnostics;
/// with the project, for the next load to start from.
fn load_and_show(
    repo: &GitRepository,
    sha: &str,
    work: &Path,
    cache: Option<&dyn ParseCache>,
    previous: Option<&Project>,
) -> (Result<Vec<String>, Vec<String>>, Option<Project>) {
    let files = repo.files_at(sha).expect("the commit exists");
    let checkout = || Err("native projects need no checkout".to_owned());
    match load_project(&files, checkout, work, &[], None, cache, previous) {
        Ok(project) => {
            let shown = project
                .snapshot
                .assets()
                .map(|asset| format!("{asset:?} {:?}", project.snapshot.fingerprint(&asset.key)))
                .chain([format!("{:?}", project.manifest)])
                .collect();
            (Ok(shown), Some(project))
        }
        Err(offshoot_location::LocationError::Invalid(diagnostics)) => {
            (Err(diagnostics.iter().map(|d| d.to_string()).collect()), None)
        }
        Err(offshoot_location::LocationError::Tool(message)) => (Err(vec![message]), None),
    }
}

fn outcome(
    repo: &GitRepository,
    sha: &str,
    work: &Path,
    cache: Option<&dyn ParseCache>,
) -> Result<Vec<String>, Vec<String>> {
    load_and_show(repo, sha, work, cache, None).0
}

/// The order and the readers of every asset: what a derived snapshot works out on its own.
fn structure(project: &Option<Project>) -> Vec<String> {
    let Some(project) = project else { return Vec::new() };
    let snapshot = &project.snapshot;
    let order = snapshot.topological_order().iter();
    order.map(|k| format!("{k} <- {:?}", snapshot.downstream_of(k))).collect()
}

fn check_sequence(changes: &[Change]) {
    let dir = TempDir::new("incremental");
    let repo = GitRepository::init(&dir.0.join("repo"), "main").expect("a repository");
    let cache_dir = dir.0.join("cache");
    // Tiny bounds, so eviction and compaction happen within a sequence.
    let options = ParseCacheOptions { max_entries: 6, max_segments: 3, max_bytes: 1 << 20 };
    let mut cache = DiskParseCache::open(&cache_dir, options);
    let mut tree = Tree::new();
    apply(&mut tree, &Change::Manifest(0));
    apply(&mut tree, &Change::Input(Some(0)));
    let mut steps = vec![Change::Write { folder: 0, name: 0, sql: true, content: 1 }];
    steps.extend(changes.iter().cloned());
    // The last valid project: each load starts from it, as the server's loads start from the
    // snapshot it loaded last.
    let mut previous: Option<Project> = None;
    for (index, change) in steps.iter().enumerate() {
        if !apply(&mut tree, change) {
            cache = DiskParseCache::open(&cache_dir, options);
        }
        let sha = repo
            .commit_tree("main", None, &tree, &format!("step {index}"), AUTHOR)
            .expect("the commit is written");
        let work = dir.0.join("work");
        let (scratch, whole) = load_and_show(&repo, &sha, &work, None, None);
        let cached = outcome(&repo, &sha, &work, Some(&cache));
        assert_eq!(cached, scratch, "step {index} ({change:?}) of {steps:?}");
        let (derived, project) = load_and_show(&repo, &sha, &work, Some(&cache), previous.as_ref());
        assert_eq!(derived, scratch, "step {index} ({change:?}) from the last valid project");
        assert_eq!(structure(&project), structure(&whole), "the order and readers of step {index}");
        // Loading the same commit again is served from the cache and still the same.
        let (again, _) = load_and_show(&repo, &sha, &work, Some(&cache), project.as_ref());
        assert_eq!(again, scratch, "the repeated load of step {index} ({change:?})");
        previous = project.or(previous);
    }
    assert_eq!(cache.stats().rejected, 0, "nothing on disk was corrupt");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn incremental_loads_equal_loads_from_scratch(changes in proptest::collection::vec(change(), 1..14)) {
        check_sequence(&changes);
    }
}

/// A project of three files committed once, with its cache written to `cache_dir`.
fn cached_project(dir: &Path) -> (GitRepository, String, PathBuf) {
    let repo = GitRepository::init(&dir.join("repo"), "main").expect("a repository");
    let mut tree = Tree::new();
    apply(&mut tree, &Change::Manifest(0));
    apply(&mut tree, &Change::Input(Some(1)));
    // orders reads a source, customers reads orders, revenue is a command with an input.
    apply(&mut tree, &Change::Write { folder: 0, name: 0, sql: true, content: 1 });
    apply(&mut tree, &Change::Write { folder: 0, name: 1, sql: true, content: 2 });
    apply(&mut tree, &Change::Write { folder: 1, name: 2, sql: false, content: 0 });
    let sha = repo.commit_tree("main", None, &tree, "project", AUTHOR).expect("a commit");
    let cache_dir = dir.join("cache");
    let cache = DiskParseCache::open(&cache_dir, ParseCacheOptions::default());
    let first = outcome(&repo, &sha, &dir.join("work"), Some(&cache));
    assert_eq!(first.map(|assets| assets.len()), Ok(6), "two sources, three assets, the manifest");
    assert_eq!(cache.stats().entries, 3, "the load kept an entry per file");
    (repo, sha, cache_dir)
}

fn segments(cache_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache_dir)
        .expect("the cache folder exists")
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    found.sort();
    found
}

/// Opens the cache after `damage` changed its one segment; the load must equal a load from
/// scratch, the cache must have rejected `rejected` entries and parsed `parsed` files again.
fn check_damage(damage: impl FnOnce(&mut Vec<u8>), rejected: u64, parsed: u64) {
    let dir = TempDir::new("damage");
    let (repo, sha, cache_dir) = cached_project(&dir.0);
    let [segment] = segments(&cache_dir).try_into().expect("one load wrote one segment");
    let mut bytes = std::fs::read(&segment).expect("the segment is readable");
    damage(&mut bytes);
    std::fs::write(&segment, &bytes).expect("the segment is writable");
    let cache = DiskParseCache::open(&cache_dir, ParseCacheOptions::default());
    let scratch = outcome(&repo, &sha, &dir.0.join("work"), None);
    assert_eq!(outcome(&repo, &sha, &dir.0.join("work"), Some(&cache)), scratch);
    // Checksums are checked when the cache opens, keys when an entry is read.
    assert_eq!(cache.stats().rejected, rejected, "rejected entries");
    assert_eq!(cache.stats().misses, parsed, "files parsed again");
    assert_eq!(cache.stats().hits, 3 - parsed, "files reused");
}

/// Where the records of a segment start: after the magic, the format version and the
/// canonical version.
fn records_start(bytes: &[u8]) -> usize {
    let magic = b"OFFSHOOT-PARSE-CACHE\n".len();
    let length = u16::from_le_bytes([bytes[magic + 4], bytes[magic + 5]]) as usize;
    magic + 6 + length
}

/// The byte ranges of each record.
fn records(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut at = records_start(bytes);
    let mut out = Vec::new();
    while at < bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        out.push(at..at + 4 + 64 + length);
        at += 4 + 64 + length;
    }
    out
}

#[test]
fn an_undamaged_cache_is_used_as_it_is() {
    check_damage(|_| {}, 0, 0);
}

#[test]
fn a_corrupt_entry_is_ignored_and_counted() {
    // One byte of the first record's payload flipped: its checksum no longer matches.
    check_damage(
        |bytes| {
            let first = records(bytes)[0].clone();
            bytes[first.start + 4 + 64 + 10] ^= 0x20;
        },
        1,
        1,
    );
}

#[test]
fn a_foreign_entry_is_ignored_and_counted() {
    // Two records swap their keys: each payload (checksum intact) now sits under a key that
    // is not its own, as an entry copied in from elsewhere would.
    check_damage(
        |bytes| {
            let all = records(bytes);
            let (a, b) = (all[0].start + 4, all[1].start + 4);
            let key_a: Vec<u8> = bytes[a..a + 32].to_vec();
            let key_b: Vec<u8> = bytes[b..b + 32].to_vec();
            bytes[a..a + 32].copy_from_slice(&key_b);
            bytes[b..b + 32].copy_from_slice(&key_a);
        },
        2,
        2,
    );
}

#[test]
fn a_segment_of_another_version_is_ignored() {
    check_damage(
        |bytes| {
            let magic = b"OFFSHOOT-PARSE-CACHE\n".len();
            bytes[magic] = bytes[magic].wrapping_add(1);
        },
        1,
        3,
    );
}

#[test]
fn a_truncated_segment_keeps_its_whole_records() {
    check_damage(
        |bytes| {
            let last = records(bytes).pop().expect("records");
            bytes.truncate(last.end - 3);
        },
        1,
        1,
    );
}

#[test]
fn a_file_that_is_not_a_segment_is_ignored() {
    check_damage(|bytes| *bytes = b"{\"not\": \"a cache\"}".to_vec(), 1, 3);
}
