//! The SQLite store's integration tests: the port's contract suite on a real database file, and
//! what only a file can show (data survives reopening, the journal is in WAL mode).

use std::path::{Path, PathBuf};

use offshoot_core::{
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, RepositoryName, RevisionStatus,
};
use offshoot_store::{
    Applied, CommitDetails, Deployment, DeploymentPatch, LifecycleWrite, NewDeployment,
    NewRevision, NewRun, Store, StoreError,
};
use offshoot_store_sqlite::SqliteStore;
use sqlx::{Connection, SqliteConnection};

/// A database file in the temp directory, unique to this process and test, removed (with its
/// WAL and shared-memory files) when dropped, even if the test panics.
struct TempDatabase {
    path: PathBuf,
}

impl TempDatabase {
    fn new(test: &str) -> TempDatabase {
        let path = std::env::temp_dir()
            .join(format!("offshoot-store-sqlite-{}-{test}.db", std::process::id()));
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
    let deployment =
        store.ensure_deployment(new_deployment(&repository, "feature-1")).await.expect("create");
    let write = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![NewRun {
            tags: Vec::new(),
            revision: 1,
            selection: "*".to_owned(),
            steps: steps(&["orders", "revenue"]),
        }],
        deployment_patch: DeploymentPatch {
            head: Some(1),
            pushed: true,
            ..DeploymentPatch::default()
        },
        ..write_on(&deployment, 2_000)
    };
    let Applied::Done { revisions, runs, .. } = store.apply(write).await.expect("apply") else {
        panic!("nothing else writes")
    };
    let (revision, run) = (revisions[0].clone(), runs[0].clone());
    let listed_steps = store.list_steps(run.id).await.expect("list steps");
    store.append_step_log(listed_steps[0].id, "built orders\n").await.expect("append log");
    let listed_steps = store.list_steps(run.id).await.expect("list steps");
    let deployment = store.get_deployment(deployment.id).await.expect("get");
    store.close().await;

    // Opening again runs the (already applied) migrations again: that must change nothing.
    let store = SqliteStore::open(database.path()).await.expect("reopen");
    assert_eq!(
        store.find_deployment_by_branch(&repository, &deployment.branch).await.expect("find"),
        Some(deployment.clone())
    );
    assert_eq!(store.get_revision(revision.id).await.expect("get revision"), revision);
    assert_eq!(store.get_run(run.id).await.expect("get run"), run);
    assert_eq!(store.list_steps(run.id).await.expect("list steps"), listed_steps);
    let next = LifecycleWrite { new_revisions: vec![queued(2, 2)], ..write_on(&deployment, 4_000) };
    let applied = store.apply(next).await.expect("apply after reopening");
    assert!(
        matches!(applied, Applied::Done { version: 2, .. }),
        "the version read before closing still applies: {applied:?}"
    );
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
    let mut connection =
        SqliteConnection::connect(&url).await.expect("connect to the store's file");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .expect("read the journal mode");
    assert_eq!(mode, "wal");
    connection.close().await.expect("close our connection");
    store.close().await;
}

#[tokio::test]
async fn a_database_in_a_missing_directory_is_a_backend_error() {
    let path = std::env::temp_dir()
        .join(format!("offshoot-store-sqlite-{}-missing", std::process::id()))
        .join("store.db");
    let result = SqliteStore::open(&path).await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
}

/// Writers on several connections wait for each other (busy timeout, `BEGIN IMMEDIATE`) instead
/// of failing: 16 tasks on two threads push to one deployment, each retrying while stale, and
/// every push gets its own number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_wait_for_each_other() {
    let database = TempDatabase::new("concurrent");
    let store = SqliteStore::open(database.path()).await.expect("open a new database");
    let repository = RepositoryName::new("shop").expect("valid");
    let deployment =
        store.ensure_deployment(new_deployment(&repository, "busy")).await.expect("create");

    let mut tasks = Vec::new();
    for i in 0..16_u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let record = store.lifecycle(deployment.id).await.expect("read the lifecycle");
                let number = record.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
                let write = LifecycleWrite {
                    version: record.deployment.version,
                    new_revisions: vec![queued(number, i)],
                    new_runs: vec![NewRun {
                        tags: Vec::new(),
                        revision: number,
                        selection: "*".to_owned(),
                        steps: steps(&["a", "b"]),
                    }],
                    deployment_patch: DeploymentPatch {
                        head: Some(number),
                        ..DeploymentPatch::default()
                    },
                    ..write_on(&record.deployment, 2_000)
                };
                let Applied::Done { runs, .. } =
                    store.apply(write).await.expect("a busy database waits, never fails")
                else {
                    continue;
                };
                let listed = store.list_steps(runs[0].id).await.expect("list steps");
                for line in 0..5 {
                    store
                        .append_step_log(listed[0].id, &format!("{line}\n"))
                        .await
                        .expect("append");
                }
                return number;
            }
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.push(task.await.expect("the task finished"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=16).collect::<Vec<u32>>(), "every push got its own number");
    assert_eq!(
        store.get_deployment(deployment.id).await.expect("get").version,
        16,
        "one version per push"
    );
    store.close().await;
}

fn new_deployment(repository: &RepositoryName, name: &str) -> NewDeployment {
    NewDeployment {
        repository: repository.clone(),
        name: DeploymentName::new(name).expect("valid"),
        kind: DeploymentKind::Branch,
        branch: BranchName::new(name).expect("valid"),
        pull_request: None,
        base_deployment: None,
        now: 1_000,
    }
}

/// A write of nothing yet on the version `deployment` was read at.
fn write_on(deployment: &Deployment, now: i64) -> LifecycleWrite {
    LifecycleWrite {
        run_limits: Vec::new(),
        deployment: deployment.id,
        version: deployment.version,
        now,
        deployment_patch: DeploymentPatch::default(),
        new_revisions: Vec::new(),
        revisions: Vec::new(),
        new_runs: Vec::new(),
        runs: Vec::new(),
        delete: false,
    }
}

fn queued(number: u32, commit: u32) -> NewRevision {
    let commit = CommitDetails {
        sha: CommitSha::new(&format!("{commit:040x}")).expect("valid"),
        message: format!("push {commit}"),
        author_name: "Alice".to_owned(),
        author_email: "alice@example.org".to_owned(),
        time: i64::from(commit),
    };
    NewRevision { number, commit, status: RevisionStatus::Queued, error: None }
}

fn steps(keys: &[&str]) -> Vec<AssetKey> {
    keys.iter().map(|key| AssetKey::new(key).expect("valid")).collect()
}
