//! Parse once per blob: a load that reuses the parse cache gives exactly what a load from
//! scratch gives, over random sequences of real git commits (adds, edits, renames, deletes,
//! broken files, changed inputs and changes of offshoot.toml), across restarts; and an entry on
//! disk that is corrupt, foreign or of another version is ignored.

use std::path::{Path, PathBuf};

use offshoot_location::{load_project, DiskParseCache, ParseCacheOptions};
use offshoot_project::parse_cache::ParseCache;
use offshoot_project::{Project, ProjectFiles};
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

/// Runs `git` in `dir`; panics with its output when it fails.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@offshoot.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Every asset file with its content id, found by listing the whole tree.
fn listing(
    files: &dyn offshoot_project::ProjectFiles,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for path in files.asset_paths().expect("the tree lists") {
        match files.file_id(&path).expect("an id") {
            offshoot_project::FileId::Content(id) => {
                out.insert(path, id);
            }
            other => panic!("{path} listed without a content id: {other:?}"),
        }
    }
    out
}

/// A tree diff of `assets/` names exactly what listing both trees finds different, through
/// executable bits, symbolic links, a file turned into a folder, a submodule-like gitlink and
/// files outside `assets/`; and a load started from the previous commit's project equals a
/// load from scratch at every commit.
#[test]
fn the_assets_tree_diff_agrees_with_listing_both_trees() {
    let dir = TempDir::new("tree-diff");
    let work = dir.0.join("repo");
    std::fs::create_dir_all(&work).expect("a folder");
    git(&work, &["init", "-q", "-b", "main"]);
    let write = |path: &str, text: &str| {
        let full = work.join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("folders");
        std::fs::write(full, text).expect("a file");
    };
    write("offshoot.toml", "[project]\nname = \"p\"\n\n[sources.raw]\n");
    write("assets/staging/orders.sql", "SELECT * FROM raw\n");
    write("assets/staging/customers.sql", "SELECT * FROM orders\n");
    write("assets/marts/revenue.sql", "SELECT * FROM customers\n");
    write("assets/marts/notes.md", "not a definition\n");
    write("README.md", "outside assets\n");
    let steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| {}),
        // An edit, an executable bit, a file outside assets/.
        Box::new(|| {
            write("assets/staging/orders.sql", "SELECT * FROM raw WHERE 1 = 1\n");
            git(&work, &["update-index", "--chmod=+x", "assets/marts/revenue.sql"]);
            write("README.md", "changed\n");
        }),
        // A symbolic link where a definition was, and a new definition through a new folder.
        Box::new(|| {
            std::fs::remove_file(work.join("assets/marts/revenue.sql")).expect("removed");
            std::os::unix::fs::symlink(
                "../staging/orders.sql",
                work.join("assets/marts/revenue.sql"),
            )
            .expect("a link");
            write("assets/deep/er/still/margin.sql", "SELECT * FROM customers\n");
        }),
        // The link becomes a file again; a definition becomes a folder of one.
        Box::new(|| {
            std::fs::remove_file(work.join("assets/marts/revenue.sql")).expect("removed");
            write("assets/marts/revenue.sql", "SELECT * FROM orders\n");
            std::fs::remove_file(work.join("assets/deep/er/still/margin.sql")).expect("removed");
            write("assets/deep/er/still/margin.sql/kpis.sql", "SELECT * FROM revenue\n");
        }),
        // A rename across folders, a deleted folder and a gitlink (a submodule's entry).
        Box::new(|| {
            std::fs::rename(
                work.join("assets/staging/customers.sql"),
                work.join("assets/marts/customers.sql"),
            )
            .expect("renamed");
            std::fs::remove_dir_all(work.join("assets/deep")).expect("removed");
        }),
    ];
    let repo_dir = work.clone();
    let mut previous: Option<(String, Project)> = None;
    for (index, step) in steps.iter().enumerate() {
        step();
        git(&repo_dir, &["add", "-A"]);
        if index == 4 {
            let head = git(&repo_dir, &["rev-parse", "HEAD"]);
            let gitlink = format!("160000,{head},assets/vendor");
            git(&repo_dir, &["update-index", "--add", "--cacheinfo", &gitlink]);
        }
        git(&repo_dir, &["commit", "-q", "--allow-empty", "-m", &format!("step {index}")]);
        let sha = git(&repo_dir, &["rev-parse", "HEAD"]);
        let repo = GitRepository::open(&repo_dir).expect("the repository opens");
        let files = repo.files_at(&sha).expect("the commit");
        let now = listing(&files);
        if let Some((before_sha, _)) = &previous {
            let before_files = repo.files_at(before_sha).expect("the commit");
            let before = listing(&before_files);
            let since = before_files.assets_id().expect("an assets/ tree");
            let mut diffed: Vec<(String, offshoot_project::FileId)> = files
                .assets_changed_since(&since)
                .expect("the diff runs")
                .expect("both trees are in the repository");
            diffed.sort_by(|a, b| a.0.cmp(&b.0));
            let mut expected = Vec::new();
            for path in before.keys().chain(now.keys()).collect::<std::collections::BTreeSet<_>>() {
                match (before.get(path), now.get(path)) {
                    (Some(a), Some(b)) if a == b => {}
                    (_, Some(b)) => {
                        expected.push((path.clone(), offshoot_project::FileId::Content(b.clone())))
                    }
                    (Some(_), None) => {
                        expected.push((path.clone(), offshoot_project::FileId::Missing))
                    }
                    (None, None) => unreachable!(),
                }
            }
            // A changed mode alone is reported too; the loader treats it as an edit.
            diffed.retain(|(path, id)| {
                !matches!(id, offshoot_project::FileId::Content(id) if before.get(path).is_some_and(|b| b == id))
            });
            assert_eq!(diffed, expected, "step {index}");
        }
        let work_dir = dir.0.join("work");
        let cache = DiskParseCache::open(&dir.0.join("cache"), ParseCacheOptions::default());
        let (scratch, _) = load_and_show(&repo, &sha, &work_dir, None, None);
        let start = previous.as_ref().map(|(_, project)| project);
        let (derived, project) = load_and_show(&repo, &sha, &work_dir, Some(&cache), start);
        assert_eq!(derived, scratch, "step {index} from the previous commit's project");
        let project = project.expect("every step is a valid project");
        previous = Some((sha, project));
    }
}
