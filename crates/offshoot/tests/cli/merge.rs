//! Merging lands in production (issue 14), against the real server on SQLite and on PostgreSQL
//! (store and warehouse): after a production deploy, production catches up by promoting what a
//! branch built exactly as production would (its tables taken without running code: a model
//! with `random()` keeps the branch's very rows) and rebuilding the rest, each step saying
//! which; a merged branch's tables are kept until then whichever of the close and the push
//! comes first; provenance is in the asset API; a rollback gives the previous tables back;
//! a kill -9 during a catch-up converges after the restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{branch_target, client, commit_file, drop_branch_roles, psql, Database};
use crate::support::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The project: a source, `orders` from it, `big_orders` with a column of `random()` (a
/// rebuild gives other rows, a promotion the branch's own), `totals` over it, and `report`
/// (also random) over `orders`.
const ORDERS: &str = "SELECT id, amount FROM raw_orders WHERE amount > 0\n";
const BIG_ORDERS: &str = "SELECT id, amount, random() AS noise FROM orders WHERE amount > 10\n";
const TOTALS: &str =
    "SELECT count(*) AS n, sum(amount) AS total, min(noise) AS noise FROM big_orders\n";
const REPORT: &str = "SELECT id, random() AS noise FROM orders\n";

fn repo(dir: &Path, backend: Backend) -> PathBuf {
    let repo = dir.join("repo");
    let dialect = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    native_repo(
        &repo,
        dialect,
        &["raw_orders"],
        &[
            ("orders.sql", ORDERS),
            ("big_orders.sql", BIG_ORDERS),
            ("totals.sql", TOTALS),
            ("report.sql", REPORT),
        ],
    );
    repo
}

struct Setup {
    server: Server,
    backend: Backend,
    database: Option<Database>,
    role: Option<String>,
    repo: PathBuf,
    _dir: TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        if let Some(database) = self.database.take() {
            drop(database);
            if let Some(role) = &self.role {
                drop_branch_roles(role);
            }
        }
    }
}

const SEED_SQLITE: &str = "CREATE TABLE raw_orders AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) SELECT i AS id, i % 50 AS amount FROM n;";

fn setup(name: &str, backend: Backend, extra: &str) -> Setup {
    let dir = TempDir::new(&format!("merge-{name}-{backend:?}"));
    let repo = repo(&dir.0, backend);
    let (database, role, backends) = match backend {
        Backend::Sqlite => (None, None, String::new()),
        Backend::Postgres => {
            let database = Database(format!("offshoot_merge_{name}_{}", std::process::id()));
            psql("postgres", &format!("CREATE DATABASE {}", database.0));
            let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
            let role = format!("offshoot_branch_merge_{name}_{}", std::process::id());
            let config = format!(
                "metadata_url = \"{url}\"\nwarehouse_url = \"{url}\"\nbranch_role = \"{role}\"\n"
            );
            (Some(database), Some(role), config)
        }
    };
    let server = Server::start(&dir.0, &repo, &format!("{backends}{extra}"));
    let main = git(&repo, &["rev-parse", "main"]);
    server.wait_for_deployment("prod", "ready", |d| serving_commit(d) == main);
    let setup = Setup { server, backend, database, role, repo, _dir: dir };
    match backend {
        Backend::Sqlite => crate::server::runtime().block_on(async {
            crate::server::warehouse(&setup.server)
                .execute_production_script(
                    &crate::server::production_target().production,
                    SEED_SQLITE,
                )
                .await
                .expect("seed");
        }),
        Backend::Postgres => {
            psql(
                &setup.db(),
                "CREATE TABLE shop__prod.raw_orders AS SELECT g AS id, g % 50 AS amount FROM generate_series(1, 200) AS g",
            );
        }
    }
    setup
}

impl Setup {
    fn db(&self) -> String {
        self.database.as_ref().expect("a PostgreSQL setup").0.clone()
    }

    /// A checksum of `table` in `deployment`'s own schema; `None` when it has no such table.
    fn checksum(&self, deployment: &str, table: &str) -> Option<String> {
        let target = if deployment == "prod" {
            crate::server::production_target()
        } else {
            branch_target(deployment)
        };
        match self.backend {
            Backend::Sqlite => {
                use offshoot_warehouse::Warehouse;
                crate::server::runtime().block_on(async {
                    let warehouse = crate::server::warehouse(&self.server);
                    let own = warehouse.own_tables(&target).await.unwrap_or_default();
                    if !own.iter().any(|t| t == table) {
                        return None;
                    }
                    warehouse.table_checksum(&target, table).await.expect("checksum")
                })
            }
            Backend::Postgres => {
                let schema = target.schema;
                let exists = psql(
                    &self.db(),
                    &format!("SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = '{table}'"),
                );
                (exists == "1").then(|| {
                    psql(
                        &self.db(),
                        &format!("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM \"{schema}\".\"{table}\" AS t"),
                    )
                })
            }
        }
    }

    fn run(&self, deployment: &str, selection: &str) -> Value {
        let run = self.server.post(
            &format!("/api/v1/deployments/{deployment}/runs"),
            json!({ "selection": selection }),
        );
        let run = self.server.wait_for_run(run["id"].as_i64().expect("id"));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        run
    }

    /// A branch off `main` with `files` changed, deployed; its deployment name.
    fn branch(&self, branch: &str, files: &[(&str, &str)]) -> (String, String) {
        git(&self.repo, &["branch", branch, "main"]);
        let mut sha = String::new();
        for (path, text) in files {
            sha = commit_file(
                &self.repo,
                branch,
                &format!("assets/{path}"),
                text,
                &format!("Change {path}"),
            );
        }
        let name = self.push(branch, &sha, Some("OPEN"));
        self.server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
        (name, sha)
    }

    fn push(&self, branch: &str, sha: &str, status: Option<&str>) -> String {
        let mut body = json!({"branch_name": branch, "commit_hash": sha});
        if let Some(status) = status {
            body["pull_request_status"] = json!(status);
            body["pull_request_id"] = json!("7");
            body["pull_request_url"] = json!("https://git.example/acme/shop/pull/7");
        }
        let answer = self.server.post("/api/v1/branch-deployments", body);
        answer["name"].as_str().expect("name").to_owned()
    }

    /// Merges `branch` into main (a merge commit) and pushes main: production deploys it. The
    /// revision id that serves it.
    fn merge_and_push(&self, branch: &str) -> i64 {
        git(&self.repo, &["checkout", "-q", "main"]);
        git(&self.repo, &["merge", "-q", "--no-ff", "-m", &format!("Merge {branch}"), branch]);
        self.push_main()
    }

    fn push_main(&self) -> i64 {
        let main = git(&self.repo, &["rev-parse", "main"]);
        self.push("main", &main, None);
        let prod =
            self.server.wait_for_deployment("prod", "serving main", |d| serving_commit(d) == main);
        prod["current_revision"]["id"].as_i64().expect("revision id")
    }

    fn close_merged(&self, name: &str) -> Value {
        self.server.post(
            &format!("/api/v1/deployments/{name}/close"),
            json!({"pull_request_status": "MERGED"}),
        )
    }

    /// Production's catch-up of revision `revision`, once finished.
    fn catch_up(&self, revision: i64) -> Value {
        catch_up_of(&self.server, revision)
    }

    fn schema_exists(&self, name: &str) -> bool {
        let schema = branch_target(name).schema;
        match self.backend {
            Backend::Postgres => {
                psql(&self.db(), &format!("SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'")) == "1"
            }
            Backend::Sqlite => {
                use offshoot_warehouse::Warehouse;
                crate::server::runtime().block_on(async {
                    crate::server::warehouse(&self.server).schemas().await.expect("schemas").contains(&schema)
                })
            }
        }
    }

    fn wait_torn_down(&self, name: &str) {
        let started = Instant::now();
        while self.schema_exists(name) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name}'s tables outlived the catch-up\n{}",
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Production's catch-up of revision `revision`, once finished.
fn catch_up_of(server: &Server, revision: i64) -> Value {
    let started = Instant::now();
    loop {
        let runs = server.get("/api/v1/runs?deployment=prod&limit=50");
        let found = runs
            .as_array()
            .expect("runs")
            .iter()
            .find(|r| r["kind"] == "catch-up" && r["revision_id"] == revision);
        if let Some(run) = found {
            let run = server.wait_for_run(run["id"].as_i64().expect("id"));
            assert_eq!(run["selection"], "catch-up");
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no catch-up of revision {revision}: {runs:#}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Merges `branch` into main (a merge commit), pushes main and returns production's catch-up
/// of the merge, once finished.
fn merge_and_catch_up(server: &Server, repo: &Path, branch: &str) -> Value {
    git(repo, &["checkout", "-q", "main"]);
    git(repo, &["merge", "-q", "--no-ff", "-m", &format!("Merge {branch}"), branch]);
    let main = git(repo, &["rev-parse", "main"]);
    crate::server::create_or_update(server, "main", &main);
    let prod =
        server.wait_for_deployment("prod", "serving the merge", |d| serving_commit(d) == main);
    catch_up_of(server, prod["current_revision"]["id"].as_i64().expect("revision id"))
}

/// What each step of a catch-up did, by asset: its action and status.
fn steps(run: &Value) -> Vec<(String, String, String)> {
    run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["asset_key"].as_str().unwrap_or("").to_owned(),
                s["action"].as_str().unwrap_or("").to_owned(),
                s["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn action<'a>(steps: &'a [(String, String, String)], key: &str) -> &'a str {
    steps.iter().find(|(k, _, _)| k == key).map(|(_, a, _)| a.as_str()).unwrap_or("(no step)")
}

fn merge_promotes_the_branch_and_rebuilds_the_rest(backend: Backend) {
    if backend == Backend::Postgres && postgres_skipped() {
        return;
    }
    let s = setup("demo", backend, "");
    s.run("prod", "key:*");
    let before = |table: &str| s.checksum("prod", table).expect("prod has it");
    let (big_before, totals_before, report_before) =
        (before("big_orders"), before("totals"), before("report"));

    // The push comes first, the close after: the branch is still open when production takes
    // its tables; the close then tears it down at once.
    let (name, _) =
        s.branch("feature/bigger", &[("big_orders.sql", &BIG_ORDERS.replace("> 10", "> 20"))]);
    let branch_run = s.run(&name, "changed_in_branch:ANY+");
    let branch_run_id = branch_run["id"].as_i64().expect("id");
    let big_branch = s.checksum(&name, "big_orders").expect("the branch built it");
    let totals_branch = s.checksum(&name, "totals").expect("the branch built it");
    assert_ne!(big_branch, big_before);
    let revision = s.merge_and_push("feature/bigger");
    let run = s.catch_up(revision);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let steps = steps(&run);
    let promoted = format!("promoted (from {name}, run {branch_run_id})");
    assert_eq!(
        steps,
        [
            ("big_orders".to_owned(), promoted.clone(), "succeeded".to_owned()),
            ("totals".to_owned(), promoted, "succeeded".to_owned()),
        ],
        "only what changed, each promoted: {run:#}"
    );
    // No model code ran: random() would have given other rows.
    assert_eq!(s.checksum("prod", "big_orders").as_deref(), Some(big_branch.as_str()));
    assert_eq!(s.checksum("prod", "totals").as_deref(), Some(totals_branch.as_str()));
    assert_eq!(
        s.checksum("prod", "report").as_deref(),
        Some(report_before.as_str()),
        "up to date: untouched"
    );
    let log = run["steps"][0]["log"].as_str().unwrap_or("");
    assert!(log.contains("without running the asset's code"), "{log}");

    // The CLI shows the same.
    let shown = client(&s.server, &["runs", "show", &run["id"].to_string()]);
    assert!(stdout(&shown).contains("promoted (from"), "{}", stdout(&shown));

    // Provenance: where production's table came from and what it read.
    let asset = s.server.get("/api/v1/deployments/prod/assets/totals");
    let provenance = &asset["provenance"];
    assert_eq!(provenance["built_in"], name.as_str(), "{provenance:#}");
    assert_eq!(provenance["matches_definition"], true);
    let summary = provenance["summary"].as_str().expect("summary");
    assert!(summary.starts_with(&format!("built in {name} from commit ")), "{summary}");
    assert!(
        summary.contains(&format!("promoted into production by run {}", run["id"])),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("reading production's big_orders of run {}", run["id"])),
        "{summary}"
    );
    let orders =
        s.server.get("/api/v1/deployments/prod/assets/big_orders")["provenance"]["summary"].clone();
    assert!(
        orders.as_str().unwrap_or("").contains("reading production's orders of run"),
        "{orders}"
    );

    // The close after the catch-up: nothing more to take, torn down at once.
    let closed = s.close_merged(&name);
    assert_eq!(closed["status"], "closed");
    s.wait_torn_down(&name);

    // Rollback: the previous tables and revision.
    let output = client(&s.server, &["deployment", "rollback", "prod"]);
    assert!(output.status.success(), "{}\n{}", stderr(&output), s.server.log());
    let text = stdout(&output);
    assert!(text.contains(&format!("undid catch-up run {}", run["id"])), "{text}");
    assert_eq!(s.checksum("prod", "big_orders").as_deref(), Some(big_before.as_str()));
    assert_eq!(s.checksum("prod", "totals").as_deref(), Some(totals_before.as_str()));
    let prod = s.server.get("/api/v1/deployments/prod");
    assert_ne!(
        prod["current_revision"]["id"].as_i64(),
        Some(revision),
        "the previous revision serves"
    );
    // Production's current materialization is the one from before again.
    let asset = s.server.get("/api/v1/deployments/prod/assets/totals");
    assert!(
        asset["provenance"]["summary"].as_str().unwrap_or("").starts_with("built in prod "),
        "{asset:#}"
    );
    let again = client(&s.server, &["deployment", "rollback", "prod"]);
    assert!(!again.status.success(), "a second rollback has nothing to undo");
    assert!(
        stderr(&again).contains("no catch-up") || stderr(&again).contains("nothing"),
        "{}",
        stderr(&again)
    );
}

fn close_first_keeps_the_tables_until_the_catch_up(backend: Backend) {
    if backend == Backend::Postgres && postgres_skipped() {
        return;
    }
    let s = setup("close", backend, "");
    s.run("prod", "key:*");
    let (name, _) =
        s.branch("feature/totals", &[("totals.sql", &TOTALS.replace("count(*)", "count(id)"))]);
    s.run(&name, "changed_in_branch:ANY+");
    let totals_branch = s.checksum(&name, "totals").expect("built");
    // The merge's close arrives before the push to main: the tables stay.
    let closed = s.close_merged(&name);
    assert_eq!(closed["status"], "closed");
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.schema_exists(&name), "held for production's catch-up\n{}", s.server.log());
    let revision = s.merge_and_push("feature/totals");
    let run = s.catch_up(revision);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let steps = steps(&run);
    assert!(
        action(&steps, "totals").starts_with(&format!("promoted (from {name}, run ")),
        "{steps:?}"
    );
    assert_eq!(s.checksum("prod", "totals").as_deref(), Some(totals_branch.as_str()));
    s.wait_torn_down(&name);
}

/// Main moved ahead and changed an upstream after the fork; production refreshed an upstream
/// after the branch built; a branch built only part of what changed.
fn what_differs_is_rebuilt(backend: Backend) {
    if backend == Backend::Postgres && postgres_skipped() {
        return;
    }
    let s = setup("rebuilt", backend, "");
    s.run("prod", "key:*");

    // Main moved ahead: `orders` changes on main after the branch forked and built.
    let (moved, _) =
        s.branch("feature/moved", &[("big_orders.sql", &BIG_ORDERS.replace("> 10", "> 30"))]);
    s.run(&moved, "changed_in_branch:ANY+");
    let big_branch = s.checksum(&moved, "big_orders").expect("built");
    commit_file(
        &s.repo,
        "main",
        "assets/orders.sql",
        &ORDERS.replace("> 0", ">= 0"),
        "Zero orders too",
    );
    let revision = s.push_main();
    let run = s.catch_up(revision);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(action(&steps(&run), "orders").starts_with("built ("), "{:?}", steps(&run));
    let revision = s.merge_and_push("feature/moved");
    let run = s.catch_up(revision);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let done = steps(&run);
    assert!(
        action(&done, "big_orders").contains("main changed upstream orders after the fork"),
        "{done:?}"
    );
    assert_ne!(s.checksum("prod", "big_orders"), Some(big_branch), "rebuilt, not promoted");

    // Production refreshed an upstream after the branch built.
    let (refreshed, _) =
        s.branch("feature/refreshed", &[("big_orders.sql", &BIG_ORDERS.replace("> 10", "> 40"))]);
    s.run(&refreshed, "changed_in_branch:ANY+");
    s.run("prod", "key:orders");
    let revision = s.merge_and_push("feature/refreshed");
    let run = s.catch_up(revision);
    let done = steps(&run);
    assert!(action(&done, "big_orders").contains("production refreshed orders after"), "{done:?}");

    // Partly built: big_orders built in the branch, report changed but never built there.
    let (partial, _) = s.branch(
        "feature/partial",
        &[
            ("big_orders.sql", &BIG_ORDERS.replace("> 10", "> 45")),
            ("report.sql", &REPORT.replace("random()", "random() + 1")),
        ],
    );
    s.run(&partial, "key:big_orders");
    let big_branch = s.checksum(&partial, "big_orders").expect("built");
    let revision = s.merge_and_push("feature/partial");
    let run = s.catch_up(revision);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let done = steps(&run);
    assert!(
        action(&done, "big_orders").starts_with(&format!("promoted (from {partial}, run ")),
        "{done:?}"
    );
    assert!(
        action(&done, "totals").starts_with("built ("),
        "downstream, never built in the branch: {done:?}"
    );
    assert!(action(&done, "report").contains("never built in a branch"), "{done:?}");
    assert_eq!(s.checksum("prod", "big_orders"), Some(big_branch));
}

#[test]
fn merge_promotes_the_branch_and_rebuilds_the_rest_sqlite() {
    merge_promotes_the_branch_and_rebuilds_the_rest(Backend::Sqlite);
}

#[test]
fn merge_promotes_the_branch_and_rebuilds_the_rest_postgres() {
    merge_promotes_the_branch_and_rebuilds_the_rest(Backend::Postgres);
}

#[test]
fn close_first_keeps_the_tables_until_the_catch_up_sqlite() {
    close_first_keeps_the_tables_until_the_catch_up(Backend::Sqlite);
}

#[test]
fn close_first_keeps_the_tables_until_the_catch_up_postgres() {
    close_first_keeps_the_tables_until_the_catch_up(Backend::Postgres);
}

#[test]
fn what_differs_is_rebuilt_sqlite() {
    what_differs_is_rebuilt(Backend::Sqlite);
}

#[test]
fn what_differs_is_rebuilt_postgres() {
    what_differs_is_rebuilt(Backend::Postgres);
}

/// A run's steps are stored while their downstream steps already execute (the run's recorder):
/// down a chain built in one branch run (orders, big_orders, totals), each step's provenance
/// still names the materialization its upstream's step recorded in that same run, and the run
/// is reported finished only once every step is stored.
fn a_chain_reads_what_its_own_run_recorded(backend: Backend) {
    if backend == Backend::Postgres && postgres_skipped() {
        return;
    }
    let s = setup("chain", backend, "");
    s.run("prod", "key:*");
    let (name, _) = s.branch("feature/chain", &[("orders.sql", &ORDERS.replace("> 0", "> 1"))]);
    let run = s.run(&name, "changed_in_branch:ANY+");
    let run_id = run["id"].as_i64().expect("id");
    let stored = s.server.get(&format!("/api/v1/runs/{run_id}"));
    let statuses: Vec<(String, String)> = stored["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| {
            (
                step["asset_key"].as_str().unwrap_or("").to_owned(),
                step["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(statuses.len(), 4, "orders and its three downstream: {statuses:?}");
    assert!(statuses.iter().all(|(_, status)| status == "succeeded"), "{statuses:?}");
    let provenance = |key: &str| {
        s.server.get(&format!("/api/v1/deployments/{name}/assets/{key}"))["provenance"].clone()
    };
    for (key, upstream) in
        [("big_orders", "orders"), ("totals", "big_orders"), ("report", "orders")]
    {
        let built = provenance(key);
        assert_eq!(built["run_id"].as_i64(), Some(run_id), "{key}: {built:#}");
        let read = built["reads"]
            .as_array()
            .expect("reads")
            .iter()
            .find(|r| r["upstream"] == upstream)
            .unwrap_or_else(|| panic!("{key} reads {upstream}: {built:#}"))["read"]
            .clone();
        let upstream_built = provenance(upstream);
        assert_eq!(read["deployment"], name.as_str(), "{key}: {built:#}");
        assert_eq!(read["run_id"].as_i64(), Some(run_id), "{key}: {built:#}");
        assert_eq!(
            read["materialization_id"], upstream_built["materialization_id"],
            "{key} read {upstream}'s materialization of this run: {built:#}\n{upstream_built:#}"
        );
    }
}

#[test]
fn a_chain_reads_what_its_own_run_recorded_sqlite() {
    a_chain_reads_what_its_own_run_recorded(Backend::Sqlite);
}

#[test]
fn a_chain_reads_what_its_own_run_recorded_postgres() {
    a_chain_reads_what_its_own_run_recorded(Backend::Postgres);
}

/// A model that takes seconds: a catch-up is still rebuilding it when the server is killed.
fn slow_model(backend: Backend) -> String {
    let rows = match backend {
        Backend::Sqlite => 6_000_000,
        Backend::Postgres => 4_000_000,
    };
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) SELECT count(*) AS c, (SELECT count(*) FROM orders) AS orders FROM n\n")
}

fn kill_during_a_catch_up_converges_after_the_restart(backend: Backend) {
    if backend == Backend::Postgres && postgres_skipped() {
        return;
    }
    let mut s = setup("kill", backend, "");
    s.run("prod", "key:*");
    let big_before = s.checksum("prod", "big_orders").expect("built");
    let totals_before = s.checksum("prod", "totals").expect("built");
    // The branch changes big_orders (built there: promoted) and adds the slow model (not built
    // there: rebuilt, after the promotion).
    let (name, _) = s.branch(
        "feature/slow",
        &[
            ("big_orders.sql", &BIG_ORDERS.replace("> 10", "> 25")),
            ("slow.sql", &slow_model(backend)),
        ],
    );
    s.run(&name, "key:big_orders+");
    let big_branch = s.checksum(&name, "big_orders").expect("built");
    let totals_branch = s.checksum(&name, "totals").expect("built");
    let revision = s.merge_and_push("feature/slow");

    // Kill -9 while the catch-up rebuilds the slow model.
    let started = Instant::now();
    let interrupted = loop {
        let runs = s.server.get("/api/v1/runs?deployment=prod&limit=50");
        let run = runs.as_array().expect("runs").iter().find(|r| r["kind"] == "catch-up").cloned();
        if let Some(run) = run {
            let run = s.server.get(&format!("/api/v1/runs/{}", run["id"]));
            let slow = run["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .find(|s| s["asset_key"] == "slow")
                .cloned();
            if slow.is_some_and(|step| step["status"] == "running") {
                s.server.kill();
                break run;
            }
            assert!(run["status"] != "succeeded", "the slow model was not slow enough: {run:#}");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no catch-up ran\n{}", s.server.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    // Production holds either all of the promotion or none of it, never part.
    let (big, totals) = (s.checksum("prod", "big_orders"), s.checksum("prod", "totals"));
    let after = big.as_deref() == Some(big_branch.as_str())
        && totals.as_deref() == Some(totals_branch.as_str());
    let before = big.as_deref() == Some(big_before.as_str())
        && totals.as_deref() == Some(totals_before.as_str());
    assert!(after || before, "production is part-way: {big:?} {totals:?}");
    assert!(s.checksum("prod", "slow").is_none(), "the slow model was not rebuilt yet");

    // After the restart the catch-up runs again and production ends as the merge says.
    s.server.restart();
    let first = s.server.wait_for_run(interrupted["id"].as_i64().expect("id"));
    assert_eq!(first["status"], "failed", "{first:#}");
    let started = Instant::now();
    let again = loop {
        let runs = s.server.get("/api/v1/runs?deployment=prod&limit=50");
        let again = runs
            .as_array()
            .expect("runs")
            .iter()
            .find(|r| {
                r["kind"] == "catch-up" && r["revision_id"] == revision && r["id"] != first["id"]
            })
            .cloned();
        if let Some(again) = again {
            break s.server.wait_for_run(again["id"].as_i64().expect("id"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no second catch-up\n{}",
            s.server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(again["status"], "succeeded", "{again:#}");
    let done = steps(&again);
    assert!(action(&done, "slow").starts_with("built ("), "{done:?}");
    assert_eq!(s.checksum("prod", "big_orders"), Some(big_branch), "{done:?}");
    assert_eq!(s.checksum("prod", "totals"), Some(totals_branch));
    assert!(s.checksum("prod", "slow").is_some());
    let provenance =
        s.server.get("/api/v1/deployments/prod/assets/big_orders")["provenance"].clone();
    assert_eq!(provenance["built_in"], name.as_str(), "promoted, not rebuilt: {provenance:#}");
}

/// One catch-up at a time in the store: one launched while another runs stays queued (its
/// claim is refused inside the claim's transaction, whichever server asks) and says why, and a
/// cancel while it waits ends it at once, not after the other one.
#[test]
fn a_second_catch_up_waits_for_the_first_and_is_canceled_at_once() {
    let s = setup("turns", Backend::Sqlite, "");
    s.run("prod", "key:*");
    let (_, _) = s.branch("feature/slow", &[("slow.sql", &slow_model(Backend::Sqlite))]);
    let first_revision = s.merge_and_push("feature/slow");
    let catch_up_of_revision = |revision: i64| {
        let runs = s.server.get("/api/v1/runs?deployment=prod&limit=50");
        runs.as_array()
            .expect("runs")
            .iter()
            .find(|r| r["kind"] == "catch-up" && r["revision_id"] == revision)
            .map(|r| s.server.get(&format!("/api/v1/runs/{}", r["id"])))
    };
    let step_of = |run: &Value, key: &str| {
        run["steps"].as_array().expect("steps").iter().find(|s| s["asset_key"] == key).cloned()
    };
    // The first catch-up rebuilds the slow model...
    let started = Instant::now();
    let first = loop {
        if let Some(run) = catch_up_of_revision(first_revision) {
            if step_of(&run, "slow").is_some_and(|step| step["status"] == "running") {
                break run;
            }
            assert!(run["status"] != "succeeded", "the slow model was not slow enough: {run:#}");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no catch-up\n{}", s.server.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    // ...while production deploys another commit, whose catch-up has to wait for it.
    commit_file(&s.repo, "main", "assets/report.sql", &REPORT.replace("random()", "1"), "Report");
    let second_revision = s.push_main();
    let started = Instant::now();
    let second = loop {
        if let Some(run) = catch_up_of_revision(second_revision) {
            assert_eq!(run["status"], "queued", "it waits for the first: {run:#}");
            assert!(step_of(&run, "report").is_some(), "the changed model is a step: {run:#}");
            let waiting = run["waiting_for"].as_str().unwrap_or("");
            assert!(waiting.contains("one catch-up at a time"), "{run:#}");
            break run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no waiting catch-up\n{}",
            s.server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    s.server.post(&format!("/api/v1/runs/{}/cancel", second["id"]), json!({}));
    let second = s.server.wait_for_run(second["id"].as_i64().expect("id"));
    assert_eq!(second["status"], "canceled", "{second:#}");
    let step = step_of(&second, "report").expect("step");
    assert_eq!(step["status"], "canceled", "{second:#}");
    let first = s.server.wait_for_run(first["id"].as_i64().expect("id"));
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert!(
        second["finished_at"].as_i64() < first["finished_at"].as_i64(),
        "the canceled catch-up ended before the one it waited for: {second:#}\n{first:#}"
    );
}

#[test]
fn kill_during_a_catch_up_converges_after_the_restart_sqlite() {
    kill_during_a_catch_up_converges_after_the_restart(Backend::Sqlite);
}

#[test]
fn kill_during_a_catch_up_converges_after_the_restart_postgres() {
    kill_during_a_catch_up_converges_after_the_restart(Backend::Postgres);
}

/// A dbt project (examples/dbt_shop on PostgreSQL): a changed table model is promoted; a changed
/// view (staging) cannot move, so it and what read it are rebuilt by `dbt build`, each step
/// saying why.
#[test]
fn dbt_tables_are_promoted_and_views_rebuilt() {
    if postgres_skipped() {
        return;
    }
    python_tools();
    let database = Database(format!("offshoot_merge_dbt_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let seed = std::process::Command::new("psql")
        .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-f"])
        .arg(workspace().join("examples/dbt_shop/data/seed_raw.sql"))
        .output()
        .expect("psql runs");
    assert!(seed.status.success(), "{}", String::from_utf8_lossy(&seed.stderr));
    let dir = TempDir::new("merge-dbt");
    let repo = dir.0.join("repo");
    example_repo("dbt_shop", &repo);
    let role = format!("offshoot_branch_merge_dbt_{}", std::process::id());
    let server = Server::start(
        &dir.0,
        &repo,
        &format!("warehouse_url = \"{url}\"\nbranch_role = \"{role}\""),
    );
    psql(&database.0, &format!("GRANT USAGE ON SCHEMA shop_raw TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA shop_raw TO {role}"));
    crate::server::wait_for_prod(&server, &repo);
    let run = |deployment: &str, selection: &str| {
        let run = server.post(
            &format!("/api/v1/deployments/{deployment}/runs"),
            json!({ "selection": selection }),
        );
        let run = server.wait_for_run(run["id"].as_i64().expect("id"));
        assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    };
    run("prod", "key:*");

    git(&repo, &["branch", "feature/dbt", "main"]);
    let revenue =
        std::fs::read_to_string(repo.join("models/marts/revenue_daily.sql")).expect("read");
    commit_file(
        &repo,
        "feature/dbt",
        "models/marts/revenue_daily.sql",
        &revenue.replace("count(*) as orders", "count(*) + 0 as orders"),
        "Revenue",
    );
    let customers =
        std::fs::read_to_string(repo.join("models/staging/stg_customers.sql")).expect("read");
    let sha = commit_file(
        &repo,
        "feature/dbt",
        "models/staging/stg_customers.sql",
        &customers.replace("lower(email)", "lower(trim(email))"),
        "Customers",
    );
    let name = crate::server::create_or_update(&server, "feature/dbt", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    run(&name, "changed_in_branch:ANY+");
    let schema = branch_target(&name).schema;
    let checksum = |schema: &str| {
        psql(&database.0, &format!("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM \"{schema}\".revenue_daily AS t"))
    };
    let branch_revenue = checksum(schema.as_str());
    let branch_oid =
        psql(&database.0, &format!("SELECT '\"{schema}\".revenue_daily'::regclass::oid"));

    let catch_up = merge_and_catch_up(&server, &repo, "feature/dbt");
    assert_eq!(catch_up["status"], "succeeded", "{catch_up:#}\n{}", server.log());
    let done = steps(&catch_up);
    assert!(
        action(&done, "revenue_daily").starts_with(&format!("promoted (from {name}, run ")),
        "{done:?}"
    );
    assert!(
        action(&done, "stg_customers").contains(&format!("not movable: {name}'s is a view")),
        "{done:?}"
    );
    assert!(action(&done, "customer_orders").starts_with("built ("), "{done:?}");
    assert_eq!(checksum("shop__prod"), branch_revenue);
    // Metadata only: production's table is the branch's very table.
    assert_eq!(psql(&database.0, "SELECT 'shop__prod.revenue_daily'::regclass::oid"), branch_oid);
    drop(server);
    drop(database);
    drop_branch_roles(&role);
}

#[test]
fn on_deploy_manual_waits_for_the_command_and_bad_values_are_refused() {
    let dir = TempDir::new("merge-config");
    for (production, expected) in [
        (
            "on_deploy = \"sometimes\"",
            "[production] on_deploy `sometimes` is not one of catch-up, manual",
        ),
        ("retention_hours = 0", "[production] retention_hours must be at least 1"),
        ("on_deploy = \"manual\"\nschedule = 1", "unknown field `schedule`"),
    ] {
        let config = dir.0.join("bad.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[production]\n{production}\n",
                dir.0.join("data").display()
            ),
        )
        .expect("write");
        let output = offshoot(&["serve", "--config", config.to_str().expect("utf-8")]);
        assert!(!output.status.success(), "{production}");
        assert!(stderr(&output).contains(expected), "{production}: {}", stderr(&output));
    }

    let s = setup(
        "manual",
        Backend::Sqlite,
        "[production]\non_deploy = \"manual\"\nretention_hours = 2\n",
    );
    s.run("prod", "key:*");
    let (name, _) =
        s.branch("feature/manual", &[("totals.sql", &TOTALS.replace("count(*)", "count(id)"))]);
    s.run(&name, "changed_in_branch:ANY+");
    let built = s.checksum(&name, "totals");
    // A merge in manual mode: the close tears down at once (no catch-up will come for it)...
    s.close_merged(&name);
    s.wait_torn_down(&name);
    let revision = s.merge_and_push("feature/manual");
    std::thread::sleep(Duration::from_millis(500));
    let runs = s.server.get("/api/v1/runs?deployment=prod");
    assert!(!runs.as_array().expect("runs").iter().any(|r| r["kind"] == "catch-up"), "{runs:#}");
    // ...and production catches up when asked: rebuilt, since the branch's tables are gone.
    let output = client(&s.server, &["deployment", "catch-up", "prod", "--wait"]);
    assert!(output.status.success(), "{}\n{}", stderr(&output), stdout(&output));
    assert!(stdout(&output).contains("built ("), "{}", stdout(&output));
    let run = s.catch_up(revision);
    assert_eq!(action(&steps(&run), "totals").split(';').next(), Some("built (changed"), "{run:#}");
    assert_ne!(s.checksum("prod", "totals"), None);
    let _ = built;
    let again = client(&s.server, &["deployment", "catch-up", "prod"]);
    assert!(stdout(&again).contains("prod is up to date"), "{}", stdout(&again));
}

/// The demo's shop (examples/shop, the fixture's feature branch rebased on main): merged, every
/// asset it changed or impacted is promoted from the branch, checksums equal to the branch's
/// tables, and no model's SQL runs in production.
#[test]
fn merging_the_demo_branch_promotes_what_it_built() {
    let (dir, repo) = shop_repo("merge-shop");
    let server = Server::start(&dir.0, &repo, "");
    crate::server::wait_for_prod(&server, &repo);
    crate::server::seed_production(&server);
    let run = |deployment: &str, selection: &str| {
        let run = server.post(
            &format!("/api/v1/deployments/{deployment}/runs"),
            json!({ "selection": selection }),
        );
        let run = server.wait_for_run(run["id"].as_i64().expect("id"));
        assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
        run
    };
    run("prod", "key:*");
    git(&repo, &["rebase", "-q", "main", "feature/eur"]);
    git(&repo, &["checkout", "-q", "main"]);
    let sha = git(&repo, &["rev-parse", "feature/eur"]);
    let name = crate::server::create_or_update(&server, "feature/eur", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let built = run(&name, "changed_in_branch:ANY+");
    let keys: Vec<String> = built["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["asset_key"].as_str().expect("key").to_owned())
        .collect();
    assert!(
        keys.contains(&"fct_orders".to_owned()) && keys.contains(&"weekly_revenue".to_owned()),
        "{keys:?}"
    );
    let checksum = |deployment: &str, table: &str| {
        use offshoot_warehouse::Warehouse;
        let target = if deployment == "prod" {
            crate::server::production_target()
        } else {
            branch_target(deployment)
        };
        crate::server::runtime()
            .block_on(crate::server::warehouse(&server).table_checksum(&target, table))
            .expect("checksum")
    };
    let branch: Vec<_> = keys.iter().map(|k| checksum(&name, k)).collect();

    let catch_up = merge_and_catch_up(&server, &repo, "feature/eur");
    assert_eq!(catch_up["status"], "succeeded", "{catch_up:#}");
    let done = steps(&catch_up);
    let caught_up: Vec<&str> = done.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(caught_up.len(), keys.len(), "{done:?} vs {keys:?}");
    for (key, action, _) in &done {
        assert!(
            action.starts_with(&format!("promoted (from {name}, run {})", built["id"])),
            "{key}: {action}"
        );
    }
    for step in catch_up["steps"].as_array().expect("steps") {
        assert!(!step["log"].as_str().unwrap_or("").contains("from SQL"), "no SQL ran: {step:#}");
    }
    let production: Vec<_> = keys.iter().map(|k| checksum("prod", k)).collect();
    assert_eq!(production, branch, "production holds the branch's tables: {keys:?}");
}

/// A Dagster code location (examples/dagster_shop on SQLite): the assets its IO manager stores
/// in the branch's own file are promoted like native tables.
#[test]
fn dagster_assets_in_the_branch_schema_are_promoted() {
    python_tools();
    let dir = TempDir::new("merge-dagster");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    let server = Server::start(&dir.0, &repo, "");
    crate::server::wait_for_prod(&server, &repo);
    let run = |deployment: &str, selection: &str| {
        let run = server.post(
            &format!("/api/v1/deployments/{deployment}/runs"),
            json!({ "selection": selection }),
        );
        let run = server.wait_for_run(run["id"].as_i64().expect("id"));
        assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
        run
    };
    run("prod", "key:*");
    git(&repo, &["branch", "feature/dagster", "main"]);
    let staging = std::fs::read_to_string(repo.join("dagster_shop/staging.py")).expect("read");
    let changed = staging.replacen("code_version=\"2\"", "code_version=\"3\"", 1);
    assert_ne!(changed, staging, "the example changed shape; update this test");
    let sha = commit_file(
        &repo,
        "feature/dagster",
        "dagster_shop/staging.py",
        &changed,
        "Version stg_orders",
    );
    let name = crate::server::create_or_update(&server, "feature/dagster", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let built = run(&name, "changed_in_branch:ANY+");
    let catch_up = merge_and_catch_up(&server, &repo, "feature/dagster");
    assert_eq!(catch_up["status"], "succeeded", "{catch_up:#}\n{}", server.log());
    let done = steps(&catch_up);
    assert!(
        action(&done, "stg_orders")
            .starts_with(&format!("promoted (from {name}, run {})", built["id"])),
        "{done:?}"
    );
    assert_eq!(done.len(), built["steps"].as_array().expect("steps").len(), "{done:?}");
}
