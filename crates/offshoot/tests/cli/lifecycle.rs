//! The lifecycle's failure families against the real server binary, each as a short event
//! script, on SQLite and on PostgreSQL (store and warehouse): late and duplicated deliveries,
//! closes racing deploys and runs, concurrent first deliveries, and two servers starting on one
//! PostgreSQL store. Each ends in the state "latest commit wins, closed stays closed until
//! reopened" says, checked through the API and the warehouse itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{branch_target, commit_file, psql, warehouse, Database};
use crate::support::*;

/// Where a test's server keeps its state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

fn skip(backend: Backend) -> bool {
    backend == Backend::Postgres && postgres_skipped()
}

/// A repository with one SQL asset and a slow command asset (for runs that are still going).
fn tiny_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("assets")).expect("mkdir");
    std::fs::write(
        repo.join("offshoot.toml"),
        "[project]\nname = \"shop\"\n\n[sources.raw_orders]\n",
    )
    .expect("manifest");
    std::fs::write(
        repo.join("assets/orders.sql"),
        "SELECT id, amount FROM raw_orders WHERE amount > 0\n",
    )
    .expect("asset");
    std::fs::write(repo.join("assets/slow.toml"), "command = \"sleep 60\"\ndeps = [\"orders\"]\n")
        .expect("asset");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "Orders"]);
    git(&repo, &["branch", "feature"]);
    repo
}

/// Commits `count` more commits on `feature`, each a descendant of the one before.
fn feature_commits(repo: &Path, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            commit_file(
                repo,
                "feature",
                &format!("assets/extra_{i}.sql"),
                &format!("SELECT id FROM orders WHERE id > {i}\n"),
                &format!("Extra {i}"),
            )
        })
        .collect()
}

/// A server on `backend`, with its database (dropped with it) for PostgreSQL.
struct Setup {
    server: Server,
    backend: Backend,
    database: Option<Database>,
    _dir: TempDir,
    repo: PathBuf,
}

fn setup(name: &str, backend: Backend) -> Setup {
    let dir = TempDir::new(&format!("lifecycle-{name}-{backend:?}"));
    let repo = tiny_repo(&dir.0);
    let (database, extra) = match backend {
        Backend::Sqlite => (None, String::new()),
        Backend::Postgres => {
            let database = Database(format!("offshoot_lc_{name}_{}", std::process::id()));
            psql("postgres", &format!("CREATE DATABASE {}", database.0));
            let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
            let extra = format!("metadata_url = \"{url}\"\nwarehouse_url = \"{url}\"\nbranch_role = \"offshoot_branch_lc_{name}\"");
            (Some(database), extra)
        }
    };
    let server = Server::start(&dir.0, &repo, &extra);
    let main = git(&repo, &["rev-parse", "main"]);
    server.wait_for_deployment("prod", "ready", |d| serving_commit(d) == main);
    Setup { server, backend, database, _dir: dir, repo }
}

impl Setup {
    fn push(&self, sha: &str, status: Option<&str>) -> (u16, Value) {
        let mut body = json!({"branch_name": "feature", "commit_hash": sha});
        if let Some(status) = status {
            body["pull_request_status"] = json!(status);
            body["pull_request_id"] = json!("7");
            body["pull_request_url"] = json!("https://git.example/acme/shop/pull/7");
        }
        self.server.request("POST", "/api/v1/branch-deployments", Some(body), Some(TOKEN))
    }

    fn push_ok(&self, sha: &str) -> String {
        let (status, body) = self.push(sha, Some("OPEN"));
        assert_eq!(status, 200, "{body}");
        body["name"].as_str().expect("name").to_owned()
    }

    fn deployment(&self, name: &str) -> Value {
        self.server.get(&format!("/api/v1/deployments/{name}"))
    }

    fn revisions(&self, name: &str) -> Vec<Value> {
        self.server
            .get(&format!("/api/v1/deployments/{name}/revisions"))
            .as_array()
            .expect("list")
            .clone()
    }

    fn schema_exists(&self, name: &str) -> bool {
        let schema = branch_target(name).schema;
        match (self.backend, &self.database) {
            (Backend::Postgres, Some(database)) => {
                psql(&database.0, &format!("SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'")) == "1"
            }
            _ => {
                use offshoot_warehouse::Warehouse;
                crate::server::runtime().block_on(async { warehouse(&self.server).schemas().await.expect("schemas").contains(&schema) })
            }
        }
    }

    /// Waits until nothing of the deployment is queued or deploying.
    fn wait_quiet(&self, name: &str) -> Value {
        let started = Instant::now();
        loop {
            let busy = self
                .revisions(name)
                .iter()
                .any(|r| matches!(r["status"].as_str(), Some("queued" | "deploying")));
            if !busy {
                return self.deployment(name);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} never became quiet: {:#?}\n{}",
                self.revisions(name),
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// A closed deployment converges: nothing queued or deploying, its schema dropped.
    fn assert_closed_and_clean(&self, name: &str) {
        let deployment = self.wait_quiet(name);
        assert_eq!(deployment["status"], "closed", "{deployment:#}");
        let started = Instant::now();
        while self.schema_exists(name) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name}'s schema outlived its close\n{}",
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn family_a_a_late_older_delivery_after_a_close_never_reopens(backend: Backend) {
    if skip(backend) {
        return;
    }
    let s = setup("a", backend);
    let commits = feature_commits(&s.repo, 3);
    let name = s.push_ok(&commits[1]);
    s.server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == commits[1]);
    s.server.post(
        &format!("/api/v1/deployments/{name}/close"),
        json!({"pull_request_status": "CLOSED"}),
    );
    // c0's delivery, held back, arrives now with the status it had then.
    let (status, _) = s.push(&commits[0], Some("OPEN"));
    assert_eq!(status, 200);
    s.assert_closed_and_clean(&name);
    assert_eq!(s.revisions(&name)[0]["status"], "superseded");
    // Reopen deploys the newest delivered commit.
    s.server.post(&format!("/api/v1/deployments/{name}/reopen"), json!({}));
    s.server.wait_for_deployment(&name, "serving the newest commit", |d| {
        serving_commit(d) == commits[1]
    });
    assert!(s.schema_exists(&name));

    // A close while the newest commit is in flight, then reopen: the newest commit serves.
    s.push_ok(&commits[2]);
    s.server.post(&format!("/api/v1/deployments/{name}/close"), json!({}));
    s.server.post(&format!("/api/v1/deployments/{name}/reopen"), json!({}));
    let deployment = s.server.wait_for_deployment(&name, "serving the in-flight commit", |d| {
        serving_commit(d) == commits[2]
    });
    assert_eq!(deployment["status"], "open");
    assert!(s.schema_exists(&name), "a ready deployment has its schema");
}

fn family_b_closes_racing_deploys_and_duplicate_deliveries_lose_nothing(backend: Backend) {
    if skip(backend) {
        return;
    }
    let s = setup("b", backend);
    let commits = feature_commits(&s.repo, 6);
    let name = s.push_ok(&commits[0]);
    s.server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == commits[0]);
    // A close lands while a deploy runs: the close is never lost, the schema never kept.
    for (i, commit) in commits.iter().enumerate().skip(1).take(3) {
        s.push_ok(commit);
        std::thread::sleep(Duration::from_millis(5 * i as u64));
        s.server.post(&format!("/api/v1/deployments/{name}/close"), json!({}));
        s.assert_closed_and_clean(&name);
        s.server.post(&format!("/api/v1/deployments/{name}/reopen"), json!({}));
        let deployment =
            s.server.wait_for_deployment(&name, "serving again", |d| serving_commit(d) == *commit);
        assert_eq!(deployment["status"], "open");
        assert!(s.schema_exists(&name), "ready means the schema exists: {deployment:#}");
    }
    // The same delivery eight times at once, then two newer ones at once: one revision each,
    // the newest serves, no older revision left serving or deploying.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| assert_eq!(s.push(&commits[4], Some("OPEN")).0, 200));
        }
    });
    std::thread::scope(|scope| {
        scope.spawn(|| assert_eq!(s.push(&commits[4], Some("OPEN")).0, 200));
        scope.spawn(|| assert_eq!(s.push(&commits[5], Some("OPEN")).0, 200));
    });
    let deployment = s
        .server
        .wait_for_deployment(&name, "serving the newest", |d| serving_commit(d) == commits[5]);
    s.wait_quiet(&name);
    let revisions = s.revisions(&name);
    let of = |sha: &str, status: &str| {
        revisions.iter().filter(|r| r["commit"]["sha"] == sha && r["status"] == status).count()
    };
    assert!(of(&commits[4], "queued") + of(&commits[4], "deploying") == 0);
    assert!(
        revisions.iter().filter(|r| r["commit"]["sha"] == commits[4].as_str()).count() <= 2,
        "a duplicate is not a revision: {revisions:#?}"
    );
    assert_eq!(
        revisions.iter().filter(|r| r["status"] == "ready").count(),
        1,
        "one ready revision: {revisions:#?}"
    );
    assert_eq!(deployment["current_revision"]["status"], "ready");
}

fn family_c_a_close_during_a_run_cancels_it_and_drops_the_schema_after_it_stopped(
    backend: Backend,
) {
    if skip(backend) {
        return;
    }
    let s = setup("c", backend);
    let commits = feature_commits(&s.repo, 1);
    let name = s.push_ok(&commits[0]);
    s.server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == commits[0]);
    let run = s
        .server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:slow"}));
    let id = run["id"].as_i64().expect("id");
    let started = Instant::now();
    while s.server.get(&format!("/api/v1/runs/{id}"))["steps"][0]["status"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(30), "the slow step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let closed = s.server.post(&format!("/api/v1/deployments/{name}/close"), json!({}));
    assert_eq!(closed["status"], "closed");
    let run = s.server.wait_for_run(id);
    assert_eq!(run["status"], "canceled", "a cancel, not a failure: {run:#}");
    s.assert_closed_and_clean(&name);
    assert!(started.elapsed() < Duration::from_secs(30), "the command was killed, not waited for");
}

fn family_d_a_close_remembers_the_newest_commit(backend: Backend) {
    if skip(backend) {
        return;
    }
    let s = setup("d", backend);
    let commits = feature_commits(&s.repo, 2);
    let name = s.push_ok(&commits[0]);
    s.server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == commits[0]);
    // The newest commit is queued or deploying when the close arrives.
    s.push_ok(&commits[1]);
    s.server.post(&format!("/api/v1/deployments/{name}/close"), json!({}));
    // The older one is delivered late: recorded, never deployed, the deployment stays closed.
    s.push(&commits[0], Some("OPEN"));
    s.assert_closed_and_clean(&name);
    assert!(s.revisions(&name).iter().all(|r| r["status"] != "ready"
        || r["commit"]["sha"] != commits[0].as_str()
        || r["number"] == 1));
    s.server.post(&format!("/api/v1/deployments/{name}/reopen"), json!({}));
    s.server.wait_for_deployment(&name, "serving the newest commit", |d| {
        serving_commit(d) == commits[1]
    });
}

fn family_e_concurrent_first_deliveries_of_an_older_and_a_newer_commit(backend: Backend) {
    if skip(backend) {
        return;
    }
    let s = setup("e", backend);
    let commits = feature_commits(&s.repo, 2);
    for round in 0..4 {
        let branch = format!("race-{round}");
        git(&s.repo, &["branch", &branch, &commits[1]]);
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let older = scope.spawn(|| {
                s.server.request(
                    "POST",
                    "/api/v1/branch-deployments",
                    Some(json!({"branch_name": branch, "commit_hash": commits[0]})),
                    Some(TOKEN),
                )
            });
            let newer = scope.spawn(|| {
                s.server.request(
                    "POST",
                    "/api/v1/branch-deployments",
                    Some(json!({"branch_name": branch, "commit_hash": commits[1]})),
                    Some(TOKEN),
                )
            });
            vec![older.join().expect("older"), newer.join().expect("newer")]
        });
        for (status, body) in &answers {
            assert_eq!(*status, 200, "one creates, the other updates: {body}");
        }
        assert_eq!(answers[0].1["name"], answers[1].1["name"]);
        let name = answers[0].1["name"].as_str().expect("name");
        s.server.wait_for_deployment(name, "serving the newer commit", |d| {
            serving_commit(d) == commits[1]
        });
        s.wait_quiet(name);
        assert_eq!(
            serving_commit(&s.deployment(name)),
            commits[1],
            "the older one never replaces it"
        );
    }
}

#[test]
fn family_a_sqlite() {
    family_a_a_late_older_delivery_after_a_close_never_reopens(Backend::Sqlite);
}

#[test]
fn family_a_postgres() {
    family_a_a_late_older_delivery_after_a_close_never_reopens(Backend::Postgres);
}

#[test]
fn family_b_sqlite() {
    family_b_closes_racing_deploys_and_duplicate_deliveries_lose_nothing(Backend::Sqlite);
}

#[test]
fn family_b_postgres() {
    family_b_closes_racing_deploys_and_duplicate_deliveries_lose_nothing(Backend::Postgres);
}

#[test]
fn family_c_sqlite() {
    family_c_a_close_during_a_run_cancels_it_and_drops_the_schema_after_it_stopped(Backend::Sqlite);
}

#[test]
fn family_c_postgres() {
    family_c_a_close_during_a_run_cancels_it_and_drops_the_schema_after_it_stopped(
        Backend::Postgres,
    );
}

#[test]
fn family_d_sqlite() {
    family_d_a_close_remembers_the_newest_commit(Backend::Sqlite);
}

#[test]
fn family_d_postgres() {
    family_d_a_close_remembers_the_newest_commit(Backend::Postgres);
}

#[test]
fn family_e_sqlite() {
    family_e_concurrent_first_deliveries_of_an_older_and_a_newer_commit(Backend::Sqlite);
}

#[test]
fn family_e_postgres() {
    family_e_concurrent_first_deliveries_of_an_older_and_a_newer_commit(Backend::Postgres);
}

/// Family F: servers starting (and restarting) at once on one PostgreSQL store and warehouse
/// while the others deploy: every start succeeds, and the deployments converge.
#[test]
fn family_f_two_servers_start_and_restart_at_once_on_one_postgres() {
    if skip(Backend::Postgres) {
        return;
    }
    let database = Database(format!("offshoot_lc_f_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let dir = TempDir::new("lifecycle-f");
    let repo = tiny_repo(&dir.0);
    let commits = feature_commits(&repo, 2);
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let config = |server: &str| {
        let data = dir.0.join(server);
        std::fs::create_dir_all(&data).expect("mkdir");
        let text = format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\napi_tokens = [{TOKEN:?}]\nserver_id = \"{server}\"\nlease_seconds = 2\nmetadata_url = \"{url}\"\nwarehouse_url = \"{url}\"\nbranch_role = \"offshoot_branch_lc_f_{}\"\n[[repositories]]\nname = \"shop\"\npath = {:?}\nproduction_branch = \"main\"\n",
            data.join("data").to_str().expect("utf-8"),
            std::process::id(),
            repo.to_str().expect("utf-8")
        );
        (data, text)
    };
    let (dir_a, config_a) = config("server-a");
    let (dir_b, config_b) = config("server-b");
    // Both start at the same moment: both set up the branch role and production at once.
    let (mut a, mut b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Server::start_with_config(&dir_a, &config_a));
        let b = scope.spawn(|| Server::start_with_config(&dir_b, &config_b));
        (a.join().expect("a starts"), b.join().expect("b starts"))
    });
    let main = git(&repo, &["rev-parse", "main"]);
    a.wait_for_deployment("prod", "ready", |d| serving_commit(d) == main);
    for round in 0..3 {
        let branch = format!("f-{round}");
        git(&repo, &["branch", &branch, &commits[round % 2]]);
        let name = create_or_update_on(&a, &branch, &commits[round % 2]);
        // Restart both at once while the deploy is in flight.
        std::thread::scope(|scope| {
            scope.spawn(|| a.restart());
            scope.spawn(|| b.restart());
        });
        b.wait_for_deployment(&name, "ready after the restarts", |d| {
            serving_commit(d) == commits[round % 2]
        });
    }
    let logs = a.log() + &b.log();
    assert!(!logs.contains("concurrently"), "no start-up race: {logs}");
    drop(a);
    drop(b);
    drop(database);
    crate::server::drop_branch_roles(&format!("offshoot_branch_lc_f_{}", std::process::id()));
}

fn create_or_update_on(server: &Server, branch: &str, sha: &str) -> String {
    let (status, body) = server.request(
        "POST",
        "/api/v1/branch-deployments",
        Some(json!({"branch_name": branch, "commit_hash": sha})),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    body["name"].as_str().expect("name").to_owned()
}
