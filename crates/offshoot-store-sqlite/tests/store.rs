//! The SQLite store's integration tests: the port's contract suite on a real database file, and
//! what only a file can show (data survives reopening, the journal is in WAL mode).

use std::path::{Path, PathBuf};

use offshoot_core::{AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, RepositoryName, RevisionStatus};
use offshoot_store::{CommitDetails, NewDeployment, NewRevision, NewRun, Store, StoreError};
use offshoot_store_sqlite::SqliteStore;
use sqlx::{Connection, SqliteConnection};

/// A database file in the temp directory, unique to this process and test, removed (with its
/// WAL and shared-memory files) when dropped, even if the test panics.
struct TempDatabase {
    path: PathBuf,
}

impl TempDatabase {
    fn new(test: &str) -> TempDatabase {
        let path = std::env::temp_dir().join(format!("offshoot-store-sqlite-{}-{test}.db", std::process::id()));
        let database = TempDatabase { path };
        database.remove();
        database
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            // Missing files are fine: not every test creates all three.
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        self.remove();
    }
}

#[tokio::test]
async fn contract() {
    let database = TempDatabase::new("contract");
    let store = SqliteStore::open(database.path()).await.expect("open a new database");
    offshoot_store::contract::run_all(&store).await;
    store.close().await;
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let database = TempDatabase::new("reopen");
    let repository = RepositoryName::new("shop").expect("valid");

    let store = SqliteStore::open(database.path()).await.expect("open a new database");
    let new = NewDeployment {
        repository: repository.clone(),
        name: DeploymentName::new("feature-1").expect("valid"),
        kind: DeploymentKind::Branch,
        branch: BranchName::new("feature/1").expect("valid"),
        pull_request: None,
        base_deployment: None,
        now: 1_000,
    };
    let deployment = store.create_deployment(new).await.expect("create");
    let commit = CommitDetails {
        sha: CommitSha::new(&"ab".repeat(20)).expect("valid"),
        message: "first".to_owned(),
        author_name: "Alice".to_owned(),
        author_email: "alice@example.org".to_owned(),
        time: 1_700_000_000,
    };
    let new = NewRevision { deployment_id: deployment.id, commit, status: RevisionStatus::Queued, error: None, now: 2_000 };
    let revision = store.insert_revision(new).await.expect("insert revision");
    let steps = vec![AssetKey::new("orders").expect("valid"), AssetKey::new("revenue").expect("valid")];
    let new = NewRun { deployment_id: deployment.id, revision_id: revision.id, selection: "*".to_owned(), steps, now: 3_000 };
    let run = store.insert_run(new).await.expect("insert run");
    let steps = store.list_steps(run.id).await.expect("list steps");
    store.append_step_log(steps[0].id, "built orders\n").await.expect("append log");
    let steps = store.list_steps(run.id).await.expect("list steps");
    store.close().await;

    // Opening again runs the (already applied) migrations again: that must change nothing.
    let store = SqliteStore::open(database.path()).await.expect("reopen");
    assert_eq!(store.find_deployment_by_branch(&repository, &deployment.branch).await.expect("find"), Some(deployment.clone()));
    assert_eq!(store.get_revision(revision.id).await.expect("get revision"), revision);
    assert_eq!(store.get_run(run.id).await.expect("get run"), run);
    assert_eq!(store.list_steps(run.id).await.expect("list steps"), steps);
    let next = NewRevision {
        deployment_id: deployment.id,
        commit: revision.commit.clone(),
        status: RevisionStatus::Queued,
        error: None,
        now: 4_000,
    };
    assert_eq!(store.insert_revision(next).await.expect("insert after reopening").number, 2, "numbering continues");
    store.close().await;
}

#[tokio::test]
async fn the_database_file_is_created_in_wal_mode() {
    let database = TempDatabase::new("wal");
    assert!(!database.path().exists());
    let store = SqliteStore::open(database.path()).await.expect("open a new database");
    assert!(database.path().exists(), "open creates the file");

    // WAL is recorded in the file itself, so a connection of our own sees it.
    let url = format!("sqlite://{}", database.path().display());
    let mut connection = SqliteConnection::connect(&url).await.expect("connect to the store's file");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut connection).await.expect("read the journal mode");
    assert_eq!(mode, "wal");
    connection.close().await.expect("close our connection");
    store.close().await;
}

#[tokio::test]
async fn a_database_in_a_missing_directory_is_a_backend_error() {
    let path = std::env::temp_dir().join(format!("offshoot-store-sqlite-{}-missing", std::process::id())).join("store.db");
    let result = SqliteStore::open(&path).await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
}

/// Writers on several connections wait for each other (busy timeout, `BEGIN IMMEDIATE`) instead
/// of failing, and revision numbers stay unique under concurrent pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_wait_for_each_other() {
    let database = TempDatabase::new("concurrent");
    let store = SqliteStore::open(database.path()).await.expect("open a new database");
    let new = NewDeployment {
        repository: RepositoryName::new("shop").expect("valid"),
        name: DeploymentName::new("busy").expect("valid"),
        kind: DeploymentKind::Branch,
        branch: BranchName::new("busy").expect("valid"),
        pull_request: None,
        base_deployment: None,
        now: 1_000,
    };
    let deployment = store.create_deployment(new).await.expect("create");

    let mut tasks = Vec::new();
    for i in 0..16_u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let commit = CommitDetails {
                sha: CommitSha::new(&format!("{i:02x}").repeat(20)).expect("valid"),
                message: format!("push {i}"),
                author_name: "Alice".to_owned(),
                author_email: "alice@example.org".to_owned(),
                time: i64::from(i),
            };
            let new =
                NewRevision { deployment_id: deployment.id, commit, status: RevisionStatus::Queued, error: None, now: 2_000 };
            let revision = store.insert_revision(new).await.expect("insert revision");
            let steps = vec![AssetKey::new("a").expect("valid"), AssetKey::new("b").expect("valid")];
            let new =
                NewRun { deployment_id: deployment.id, revision_id: revision.id, selection: "*".to_owned(), steps, now: 3_000 };
            let run = store.insert_run(new).await.expect("insert run");
            let steps = store.list_steps(run.id).await.expect("list steps");
            for line in 0..5 {
                store.append_step_log(steps[0].id, &format!("{line}\n")).await.expect("append");
            }
            revision.number
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.push(task.await.expect("the task finished"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=16).collect::<Vec<u32>>(), "every push got its own number");
    store.close().await;
}
