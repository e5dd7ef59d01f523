//! The PostgreSQL store's integration tests: the port's contract suite on a real database, and
//! what only a server can show (reconnecting keeps the data, concurrent pushes get distinct
//! numbers, errors never show the password).
//!
//! Each test creates its own database on the server at `OFFSHOOT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`, no database part) and drops it afterwards, also when the
//! test fails. A server that is down fails the tests; `OFFSHOOT_SKIP_POSTGRES=1` skips them,
//! except under CI (`OFFSHOOT_CI=1`), where asking to skip fails them.

use std::time::{SystemTime, UNIX_EPOCH};

use offshoot_core::{
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, RepositoryName, RevisionStatus,
};
use offshoot_store::{
    Applied, CommitDetails, Deployment, DeploymentPatch, LifecycleWrite, NewDeployment,
    NewRevision, NewRun, Store, StoreError,
};
use offshoot_store_postgres::PostgresStore;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A database of its own on the test server, dropped (with `FORCE`, so open connections do not
/// keep it alive) when the guard is dropped, even while a failed test unwinds.
struct TestDatabase {
    server: String,
    name: String,
}

/// Whether the PostgreSQL tests are skipped on purpose (`OFFSHOOT_SKIP_POSTGRES=1`, on a machine
/// without PostgreSQL). Under CI (`OFFSHOOT_CI=1`, which `.ci/run` sets) nothing is skipped:
/// asking to fails the test.
fn postgres_skipped() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| value == "1");
    if !set("OFFSHOOT_SKIP_POSTGRES") {
        return false;
    }
    assert!(
        !set("OFFSHOOT_CI"),
        "OFFSHOOT_SKIP_POSTGRES=1 under CI (OFFSHOOT_CI=1): CI runs every PostgreSQL test; \
         unset OFFSHOOT_SKIP_POSTGRES and start PostgreSQL (`.ci/run` does)"
    );
    eprintln!("skipped: OFFSHOOT_SKIP_POSTGRES=1");
    true
}

impl TestDatabase {
    /// `None` when PostgreSQL tests are skipped on purpose; panics when the server is unreachable.
    async fn create() -> Option<TestDatabase> {
        if postgres_skipped() {
            return None;
        }
        let server = std::env::var("OFFSHOOT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let name = format!("offshoot_test_{}_{nanos}", std::process::id());
        let mut connection = maintenance_connection(&server).await.unwrap_or_else(|error| {
            panic!(
                "PostgreSQL at {server} is not reachable ({error}). Start it (`.ci/run` does), point \
                 OFFSHOOT_TEST_POSTGRES_URL at another server, or set OFFSHOOT_SKIP_POSTGRES=1 to skip these tests"
            )
        });
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .expect("create the test database");
        let _ = connection.close().await;
        Some(TestDatabase { server, name })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

async fn maintenance_connection(server: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(&format!("{server}/postgres")).await
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let drop_database = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // A runtime of its own on a thread of its own: this may run inside the test's runtime,
        // which cannot be blocked on from within.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut connection =
                    maintenance_connection(&server).await.map_err(|e| e.to_string())?;
                let result =
                    sqlx::raw_sql(AssertSqlSafe(drop_database)).execute(&mut connection).await;
                let _ = connection.close().await;
                result.map(|_| ()).map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the dropping thread panicked",
                self.name
            ),
        }
    }
}

fn new_deployment(name: &str) -> NewDeployment {
    NewDeployment {
        repository: RepositoryName::new("shop").expect("valid"),
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

#[tokio::test]
async fn contract() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = PostgresStore::connect(&database.url()).await.expect("connect to a new database");
    offshoot_store::contract::run_all(&store).await;
    store.close().await;
}

#[tokio::test]
async fn data_survives_reconnecting() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = PostgresStore::connect(&database.url()).await.expect("connect to a new database");
    let deployment = store.ensure_deployment(new_deployment("feature-1")).await.expect("create");
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

    // Connecting again runs the (already applied) migrations again: that must change nothing.
    let store = PostgresStore::connect(&database.url()).await.expect("reconnect");
    assert_eq!(store.get_deployment(deployment.id).await.expect("get"), deployment);
    assert_eq!(store.get_revision(revision.id).await.expect("get revision"), revision);
    assert_eq!(store.get_run(run.id).await.expect("get run"), run);
    assert_eq!(store.list_steps(run.id).await.expect("list steps"), listed_steps);
    let next = LifecycleWrite { new_revisions: vec![queued(2, 2)], ..write_on(&deployment, 4_000) };
    let applied = store.apply(next).await.expect("apply after reconnecting");
    assert!(
        matches!(applied, Applied::Done { version: 2, .. }),
        "the version read before reconnecting still applies: {applied:?}"
    );
    store.close().await;
}

/// Pushes to one deployment from 16 tasks on two threads, on several connections, each retrying
/// while stale: every push gets its own number, and concurrent runs with steps and logs do not
/// interfere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_get_distinct_numbers() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = PostgresStore::connect(&database.url()).await.expect("connect to a new database");
    let deployment = store.ensure_deployment(new_deployment("busy")).await.expect("create");

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
                    store.apply(write).await.expect("a contended write is stale, never an error")
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
                let log = store.list_steps(runs[0].id).await.expect("list steps").remove(0).log;
                assert_eq!(log, "0\n1\n2\n3\n4\n", "each run's log holds its own lines in order");
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

#[tokio::test]
async fn connection_errors_are_backend_errors_without_the_password() {
    // Needs no server: nothing listens on port 1; the password must not appear in the message.
    let result = PostgresStore::connect("postgres://alice:s3cret-pa55@127.0.0.1:1/offshoot").await;
    let Err(StoreError::Backend(message)) = result else {
        panic!("expected a backend error, got {result:?}")
    };
    assert!(!message.contains("s3cret-pa55"), "{message}");
    assert!(
        message.contains("alice@127.0.0.1:1/offshoot"),
        "the message names the server: {message}"
    );

    let result = PostgresStore::connect("not a url").await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
}
