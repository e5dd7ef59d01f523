//! Loads that start from another commit's project (`load_from`): the same result as a load
//! from scratch in every case that makes the whole graph matter (duplicates, removed keys still
//! read, cycles, a changed manifest), and assets shared with the previous project otherwise.

use std::sync::Arc;

use offshoot_core::AssetKey;
use offshoot_project::parse_cache::MemoryParseCache;
use offshoot_project::{load, load_from, FileId, FilesError, MemoryFiles, Project, ProjectFiles};

use crate::{files, MANIFEST};

/// Files with content ids, as a git tree has.
struct WithIds(MemoryFiles);

impl ProjectFiles for WithIds {
    fn asset_paths(&self) -> Result<Vec<String>, FilesError> {
        self.0.asset_paths()
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        self.0.read(path)
    }

    fn file_id(&self, path: &str) -> Result<FileId, FilesError> {
        Ok(match self.0.files.get(path) {
            Some(bytes) => FileId::Content(offshoot_core::fingerprint::sha256_hex(&[bytes])),
            None => FileId::Missing,
        })
    }
}

fn shown(loaded: &Result<Project, offshoot_project::LoadError>) -> Result<String, Vec<String>> {
    match loaded {
        Ok(project) => {
            let snapshot = &project.snapshot;
            Ok(snapshot
                .assets()
                .map(|a| {
                    format!(
                        "{a:?} {:?} {:?}\n",
                        snapshot.fingerprint(&a.key),
                        snapshot.downstream_of(&a.key)
                    )
                })
                .collect())
        }
        Err(offshoot_project::LoadError::Invalid(d)) => {
            Err(d.iter().map(|d| d.to_string()).collect())
        }
        Err(error) => Err(vec![error.to_string()]),
    }
}

/// Loads `before`, then `after` from it; checks the result against a load of `after` from
/// scratch and returns it, with whether `shared_key` is the very asset `before` held.
fn check(
    before: &[(&str, &str)],
    after: &[(&str, &str)],
    shared_key: &str,
) -> (Result<String, Vec<String>>, bool) {
    let cache = MemoryParseCache::new(1000);
    let previous =
        load_from(&WithIds(files(before)), Some(&cache), None).expect("the first commit is valid");
    assert!(previous.blobs.is_some(), "a load with content ids can be started from");
    let derived = load_from(&WithIds(files(after)), Some(&cache), Some(&previous));
    let scratch = load(&files(after));
    assert_eq!(shown(&derived), shown(&scratch), "from {before:?} to {after:?}");
    let key = AssetKey::new(shared_key).expect("a key");
    let shared = derived
        .as_ref()
        .ok()
        .and_then(|p| p.snapshot.shared(&key))
        .zip(previous.snapshot.shared(&key));
    (shown(&derived), shared.is_some_and(|(a, b)| Arc::ptr_eq(a, b)))
}

const ORDERS: (&str, &str) = ("assets/staging/orders.sql", "SELECT * FROM raw_orders");
const CUSTOMERS: (&str, &str) = ("assets/staging/customers.sql", "SELECT * FROM raw_customers");
const REVENUE: (&str, &str) =
    ("assets/marts/revenue.sql", "SELECT * FROM orders JOIN customers ON true");

#[test]
fn an_edit_reuses_every_other_asset() {
    let edited = ("assets/staging/customers.sql", "SELECT id FROM raw_customers");
    let (result, shared) =
        check(&[ORDERS, CUSTOMERS, REVENUE], &[ORDERS, edited, REVENUE], "orders");
    assert!(result.is_ok());
    assert!(shared, "the unchanged asset is shared, not parsed again");
}

#[test]
fn a_moved_file_keeps_its_key() {
    let moved = ("assets/marts/orders.sql", ORDERS.1);
    let (result, shared) =
        check(&[ORDERS, CUSTOMERS, REVENUE], &[moved, CUSTOMERS, REVENUE], "customers");
    assert!(result.is_ok_and(|r| r.contains("assets/marts/orders.sql")));
    assert!(shared);
}

#[test]
fn a_key_added_twice_or_in_another_case_is_a_duplicate() {
    for added in [
        ("assets/marts/Orders.sql", "SELECT 1"),
        ("assets/marts/orders.sql", "SELECT 1"),
        ("assets/marts/raw_orders.sql", "SELECT 1"),
        ("assets/marts/RAW_ORDERS.sql", "SELECT 1"),
    ] {
        let (result, _) = check(&[ORDERS, CUSTOMERS], &[ORDERS, CUSTOMERS, added], "customers");
        let diagnostics = result.expect_err("a duplicate");
        assert!(
            diagnostics.iter().any(|d| d.contains("duplicate key")),
            "{added:?}: {diagnostics:?}"
        );
    }
}

#[test]
fn a_removed_key_still_read_is_reported() {
    let (result, _) = check(&[ORDERS, CUSTOMERS, REVENUE], &[ORDERS, REVENUE], "orders");
    let diagnostics = result.expect_err("an unknown reference");
    assert!(
        diagnostics.iter().any(|d| d.contains("`customers` is not an asset")),
        "{diagnostics:?}"
    );
}

#[test]
fn an_edit_that_closes_a_cycle_is_reported() {
    let cyclic = ("assets/staging/orders.sql", "SELECT * FROM revenue");
    let (result, _) =
        check(&[ORDERS, CUSTOMERS, REVENUE], &[cyclic, CUSTOMERS, REVENUE], "customers");
    let diagnostics = result.expect_err("a cycle");
    assert!(diagnostics.iter().any(|d| d.contains("dependency cycle")), "{diagnostics:?}");
}

#[test]
fn a_new_key_can_be_read_by_an_edit_and_a_new_manifest_loads_everything() {
    let reads_new = ("assets/marts/revenue.sql", "SELECT * FROM orders JOIN refunds ON true");
    let refunds = ("assets/staging/refunds.sql", "SELECT 1 AS id");
    let (result, shared) =
        check(&[ORDERS, CUSTOMERS, REVENUE], &[ORDERS, CUSTOMERS, reads_new, refunds], "orders");
    assert!(result.is_ok_and(|r| r.contains("\"refunds\"")));
    assert!(shared);
    let manifest = (
        "offshoot.toml",
        "[project]\nname = \"t\"\nexternal = [\"refunds\"]\n\n[sources.raw_orders]\n",
    );
    let (result, shared) = check(&[ORDERS, CUSTOMERS], &[manifest, ORDERS], "orders");
    assert!(result.is_ok());
    assert!(!shared, "another manifest: every file is loaded again");
    assert!(
        MANIFEST.contains("raw_customers"),
        "the first commit's manifest declares what the second drops"
    );
}
