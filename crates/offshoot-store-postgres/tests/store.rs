//! The PostgreSQL store's integration tests: the port's contract suite on a real database, and
//! what only a server can show (reconnecting keeps the data, concurrent pushes get distinct
//! numbers, errors never show the password).
//!
//! Each test creates its own database on the server at `OFFSHOOT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`, no database part) and drops it afterwards, also when the
//! test fails. A server that is down fails the tests; `OFFSHOOT_SKIP_POSTGRES=1` skips them.

use std::time::{SystemTime, UNIX_EPOCH};

use offshoot_core::{AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, RepositoryName, RevisionStatus};
use offshoot_store::{CommitDetails, Deployment, NewDeployment, NewRevision, NewRun, Store, StoreError};
use offshoot_store_postgres::PostgresStore;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A database of its own on the test server, dropped (with `FORCE`, so open connections do not
/// keep it alive) when the guard is dropped, even while a failed test unwinds.
struct TestDatabase {
    server: String,
    name: String,
}

impl TestDatabase {
    /// `None` when PostgreSQL tests are skipped on purpose; panics when the server is unreachable.
    async fn create() -> Option<TestDatabase> {
        if std::env::var("OFFSHOOT_SKIP_POSTGRES").is_ok_and(|value| value == "1") {
            eprintln!("skipped: OFFSHOOT_SKIP_POSTGRES=1");
            return None;
        }
        let server = std::env::var("OFFSHOOT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_nanos();
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
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut connection = maintenance_connection(&server).await.map_err(|e| e.to_string())?;
                let result = sqlx::raw_sql(AssertSqlSafe(drop_database)).execute(&mut connection).await;
                let _ = connection.close().await;
                result.map(|_| ()).map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!("could not drop test database {}: the dropping thread panicked", self.name),
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

fn new_revision(deployment: &Deployment, commit: u8, now: i64) -> NewRevision {
    let commit = CommitDetails {
        sha: CommitSha::new(&format!("{commit:02x}").repeat(20)).expect("valid"),
        message: format!("push {commit}"),
        author_name: "Alice".to_owned(),
        author_email: "alice@example.org".to_owned(),
        time: i64::from(commit),
    };
    NewRevision { deployment_id: deployment.id, commit, status: RevisionStatus::Queued, error: None, now }
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
    let deployment = store.create_deployment(new_deployment("feature-1")).await.expect("create");
    let revision = store.insert_revision(new_revision(&deployment, 1, 2_000)).await.expect("insert revision");
    let new = NewRun {
        deployment_id: deployment.id,
        revision_id: revision.id,
        selection: "*".to_owned(),
        steps: steps(&["orders", "revenue"]),
        now: 3_000,
    };
    let run = store.insert_run(new).await.expect("insert run");
    let listed_steps = store.list_steps(run.id).await.expect("list steps");
    store.append_step_log(listed_steps[0].id, "built orders\n").await.expect("append log");
    let listed_steps = store.list_steps(run.id).await.expect("list steps");
    store.close().await;

    // Connecting again runs the (already applied) migrations again: that must change nothing.
    let store = PostgresStore::connect(&database.url()).await.expect("reconnect");
    assert_eq!(store.get_deployment(deployment.id).await.expect("get"), deployment);
    assert_eq!(store.get_revision(revision.id).await.expect("get revision"), revision);
    assert_eq!(store.get_run(run.id).await.expect("get run"), run);
    assert_eq!(store.list_steps(run.id).await.expect("list steps"), listed_steps);
    let next = store.insert_revision(new_revision(&deployment, 2, 4_000)).await.expect("insert after reconnecting");
    assert_eq!(next.number, 2, "numbering continues");
    store.close().await;
}

/// Pushes to one deployment on several connections at once each get their own number, and
/// concurrent runs with steps and logs do not interfere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_get_distinct_numbers() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = PostgresStore::connect(&database.url()).await.expect("connect to a new database");
    let deployment = store.create_deployment(new_deployment("busy")).await.expect("create");

    let mut tasks = Vec::new();
    for i in 0..16_u8 {
        let store = store.clone();
        let deployment = deployment.clone();
        tasks.push(tokio::spawn(async move {
            let revision = store.insert_revision(new_revision(&deployment, i, 2_000)).await.expect("insert revision");
            let new = NewRun {
                deployment_id: deployment.id,
                revision_id: revision.id,
                selection: "*".to_owned(),
                steps: steps(&["a", "b"]),
                now: 3_000,
            };
            let run = store.insert_run(new).await.expect("insert run");
            let listed = store.list_steps(run.id).await.expect("list steps");
            for line in 0..5 {
                store.append_step_log(listed[0].id, &format!("{line}\n")).await.expect("append");
            }
            let log = store.list_steps(run.id).await.expect("list steps").remove(0).log;
            assert_eq!(log, "0\n1\n2\n3\n4\n", "each run's log holds its own lines in order");
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

#[tokio::test]
async fn connection_errors_are_backend_errors_without_the_password() {
    // Needs no server: nothing listens on port 1; the password must not appear in the message.
    let result = PostgresStore::connect("postgres://alice:s3cret-pa55@127.0.0.1:1/offshoot").await;
    let Err(StoreError::Backend(message)) = result else { panic!("expected a backend error, got {result:?}") };
    assert!(!message.contains("s3cret-pa55"), "{message}");
    assert!(message.contains("alice@127.0.0.1:1/offshoot"), "the message names the server: {message}");

    let result = PostgresStore::connect("not a url").await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
}
