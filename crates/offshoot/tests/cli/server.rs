//! The server as a real process: deployments driven by the CLI and the REST API against git
//! repositories built by real `git`, and crash safety by SIGKILL.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use offshoot_core::{DeploymentName, RepositoryName, SchemaName};
use offshoot_warehouse::{Target, Warehouse};
use offshoot_warehouse_sqlite::SqliteWarehouse;
use serde_json::json;

use crate::support::*;

/// `offshoot` as a client of `server`.
pub(crate) fn client(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args(args)
        .env("OFFSHOOT_URL", &server.url)
        .env("OFFSHOOT_API_TOKEN", TOKEN)
        .output()
        .expect("offshoot runs")
}

pub(crate) fn production_target() -> Target {
    let production = SchemaName::for_deployment(
        &RepositoryName::new("shop").expect("valid"),
        &DeploymentName::production(),
    );
    Target { schema: production.clone(), production }
}

pub(crate) fn branch_target(name: &str) -> Target {
    let repository = RepositoryName::new("shop").expect("valid");
    Target {
        schema: SchemaName::for_deployment(&repository, &DeploymentName::new(name).expect("valid")),
        production: production_target().production,
    }
}

pub(crate) fn warehouse(server: &Server) -> SqliteWarehouse {
    SqliteWarehouse::new(server.data_dir.join("warehouse")).expect("warehouse")
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

const SEED: &str = "
CREATE TABLE raw_customers AS SELECT 1 AS id, 'A@x.example' AS email, 'DE' AS country, '2024-01-01' AS created_at
  UNION ALL SELECT 2, 'b@x.example', 'US', '2024-02-01';
CREATE TABLE raw_orders AS SELECT 1 AS id, 1 AS customer_id, 'completed' AS status, '2024-03-01 10:00' AS ordered_at, 'EUR' AS currency, 0 AS is_test
  UNION ALL SELECT 2, 2, 'completed', '2024-03-02 11:00', 'USD', 0
  UNION ALL SELECT 3, 2, 'completed', '2024-03-03 12:00', 'USD', 0;
CREATE TABLE raw_payments AS SELECT 1 AS id, 1 AS order_id, 'card' AS method, 1000 AS amount_cents, 'succeeded' AS status
  UNION ALL SELECT 2, 2, 'card', 0, 'succeeded'
  UNION ALL SELECT 3, 3, 'paypal', 2500, 'succeeded';
";

pub(crate) fn seed_production(server: &Server) {
    runtime().block_on(async {
        warehouse(server)
            .execute_production_script(&production_target().production, SEED)
            .await
            .expect("seed");
    });
}

/// Deploys prod at main's tip (the server does so at start) and waits for it.
pub(crate) fn wait_for_prod(server: &Server, repo: &Path) -> serde_json::Value {
    let main = git(repo, &["rev-parse", "main"]);
    server.wait_for_deployment("prod", "ready at main", |d| serving_commit(d) == main)
}

pub(crate) fn create_or_update(server: &Server, branch: &str, sha: &str) -> String {
    let output = client(
        server,
        &["branch-deployment", "create-or-update", "--branch-name", branch, "--commit-hash", sha],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

pub(crate) fn commit_file(
    repo: &Path,
    branch: &str,
    path: &str,
    content: &str,
    message: &str,
) -> String {
    git(repo, &["checkout", "-q", branch]);
    let full = repo.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(&full, content).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    let sha = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "-q", "main"]);
    sha
}

#[test]
fn branch_deployment_lifecycle() {
    let (dir, repo) = shop_repo("lifecycle");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);

    // Create: the CLI prints the deployment name; the branch is shown verbatim.
    let first = git(&repo, &["rev-parse", "feature/eur"]);
    let output = client(
        &server,
        &[
            "branch-deployment",
            "create-or-update",
            "--git-repo-name",
            "acme/shop",
            "--branch-name",
            "feature/eur",
            "--commit-hash",
            &first,
            "--pull-request-id",
            "7",
            "--pull-request-url",
            "https://git.example/acme/shop/pull/7",
            "--pull-request-status",
            "OPEN",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let name = stdout(&output).trim().to_owned();
    assert!(name.starts_with("feature-eur-") && name.len() == "feature-eur-".len() + 8, "{name}");
    let deployment = server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == first);
    assert_eq!(deployment["branch"], "feature/eur");
    assert_eq!(
        deployment["pull_request"],
        json!({"id": "7", "url": "https://git.example/acme/shop/pull/7", "status": "OPEN"})
    );
    assert_eq!(deployment["current_revision"]["changed_count"], 4);
    assert_eq!(deployment["current_revision"]["impacted_count"], 2);
    let changes = server.get(&format!("/api/v1/deployments/{name}/changes"));
    let keys: Vec<&str> = changes["changes"]["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| a["key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        ["customer_lifetime_value", "fct_orders", "orders_by_country", "weekly_revenue"]
    );
    let status = client(&server, &["deployment", "status", &name, "--wait"]);
    assert!(
        status.status.success() && stdout(&status).contains("serving: revision 1 ready"),
        "{}",
        stdout(&status)
    );

    // A second push deploys; the first revision is replaced.
    let second = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/big_orders.sql",
        "SELECT * FROM fct_orders WHERE amount_eur > 100\n",
        "Big orders",
    );
    assert_eq!(create_or_update(&server, "feature/eur", &second), name);
    server.wait_for_deployment(&name, "ready at the second push", |d| serving_commit(d) == second);

    // The first push delivered again, late: recorded, superseded, never serving.
    create_or_update(&server, "feature/eur", &first);
    let revisions = server.get(&format!("/api/v1/deployments/{name}/revisions"));
    let statuses: Vec<(u64, &str)> = revisions
        .as_array()
        .expect("list")
        .iter()
        .map(|r| (r["number"].as_u64().expect("n"), r["status"].as_str().expect("s")))
        .collect();
    assert_eq!(statuses, [(3, "superseded"), (2, "ready"), (1, "superseded")]);
    assert!(
        revisions[0]["error"].as_str().expect("why").contains("older than"),
        "{}",
        revisions[0]
    );
    assert_eq!(serving_commit(&server.get(&format!("/api/v1/deployments/{name}"))), second);

    // Invalid definitions fail the revision with diagnostics; the previous one keeps serving.
    let broken = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/broken.sql",
        "SELECT id FROM\nWHERE 1\n",
        "Broken",
    );
    create_or_update(&server, "feature/eur", &broken);
    let deployment =
        server.wait_for_deployment(&name, "failed", |d| d["latest_revision"]["status"] == "failed");
    assert_eq!(serving_commit(&deployment), second);
    let diagnostic = &deployment["latest_revision"]["diagnostics"][0];
    assert_eq!(
        (diagnostic["path"].as_str(), diagnostic["line"].as_u64(), diagnostic["column"].as_u64()),
        (Some("assets/marts/broken.sql"), Some(2), Some(1))
    );
    let status = client(&server, &["deployment", "status", &name]);
    assert!(
        stdout(&status).contains("assets/marts/broken.sql:2:1: error: SQL syntax error"),
        "{}",
        stdout(&status)
    );

    // Close (merged): the branch's warehouse file is dropped, history stays, runs are refused.
    let fixed = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/broken.sql",
        "SELECT order_id FROM fct_orders\n",
        "Fix",
    );
    create_or_update(&server, "feature/eur", &fixed);
    server.wait_for_deployment(&name, "ready at the fix", |d| serving_commit(d) == fixed);
    let branch_file = warehouse(&server).file_of(&branch_target(&name));
    assert!(branch_file.exists());
    let output =
        client(&server, &["branch-deployment", "close", &name, "--pull-request-status", "MERGED"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let closed = server.get(&format!("/api/v1/deployments/{name}"));
    assert_eq!(
        (closed["status"].as_str(), closed["pull_request"]["status"].as_str()),
        (Some("closed"), Some("MERGED"))
    );
    assert!(!branch_file.exists(), "closing drops the branch's warehouse objects");
    assert_eq!(
        server
            .get(&format!("/api/v1/deployments/{name}/revisions"))
            .as_array()
            .expect("list")
            .len(),
        5
    );
    let (status, body) = server.request(
        "POST",
        &format!("/api/v1/deployments/{name}/runs"),
        Some(json!({"selection": "key:*"})),
        Some(TOKEN),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("deployment_closed")));
    let listed = client(&server, &["branch-deployment", "list"]);
    assert!(!stdout(&listed).contains(&name), "closed deployments are hidden by default");
    let listed = client(&server, &["branch-deployment", "list", "--include-closed"]);
    assert!(stdout(&listed).contains(&name), "{}", stdout(&listed));

    // Reopen redeploys the newest commit.
    server.post(&format!("/api/v1/deployments/{name}/reopen"), json!({}));
    server.wait_for_deployment(&name, "ready after reopening", |d| {
        d["status"] == "open" && serving_commit(d) == fixed
    });
    assert!(branch_file.exists());

    // Production cannot be closed or deleted.
    let (status, body) =
        server.request("POST", "/api/v1/deployments/prod/close", None, Some(TOKEN));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("production_protected")));
    let output = client(&server, &["branch-deployment", "delete", "prod"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("production_protected"), "{}", stderr(&output));

    // Delete removes everything.
    let output = client(&server, &["branch-deployment", "delete", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (status, body) = server.request("GET", &format!("/api/v1/deployments/{name}"), None, None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("deployment_not_found")));
    assert!(!branch_file.exists());
}

/// A closed deployment serves nothing: the API, `deployment status` (text and JSON) and `deployment
/// list` say closed and what it last served (the ready revision, not a newer failed one), never
/// "serving".
#[test]
fn a_closed_deployment_says_closed_and_what_it_last_served() {
    let (dir, repo) = shop_repo("closed-status");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    let first = git(&repo, &["rev-parse", "feature/eur"]);
    let output = client(
        &server,
        &[
            "branch-deployment",
            "create-or-update",
            "--branch-name",
            "feature/eur",
            "--commit-hash",
            &first,
            "--pull-request-id",
            "7",
            "--pull-request-url",
            "https://git.example/acme/shop/pull/7",
            "--pull-request-status",
            "OPEN",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let name = stdout(&output).trim().to_owned();
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == first);
    // A newer revision that fails: revision 1 keeps serving, so it is what served last.
    let broken = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/broken.sql",
        "SELECT id FROM\nWHERE 1\n",
        "Broken",
    );
    create_or_update(&server, "feature/eur", &broken);
    server.wait_for_deployment(&name, "failed at the broken push", |d| {
        d["latest_revision"]["status"] == "failed"
    });
    let status = client(&server, &["deployment", "status", &name]);
    assert!(stdout(&status).contains("serving: revision 1 ready"), "{}", stdout(&status));

    let output =
        client(&server, &["branch-deployment", "close", &name, "--pull-request-status", "MERGED"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let deployment = server.get(&format!("/api/v1/deployments/{name}"));
    assert_eq!(deployment["status"], "closed", "{deployment:#}");
    assert_eq!(deployment["close_reason"], "pull request merged");
    assert!(deployment["current_revision"].is_null(), "nothing serves once closed: {deployment:#}");
    assert_eq!(deployment["last_served_revision"]["number"], 1, "{deployment:#}");
    assert_eq!(deployment["last_served_revision"]["commit"]["sha"], first.as_str());
    assert_eq!(deployment["latest_revision"]["number"], 2);

    // The text: when (UTC, to the minute; GNU date is the oracle), why, and what served last.
    let closed_at = deployment["closed_at"].as_i64().expect("closed_at");
    let date = Command::new("date")
        .args(["-u", "-d", &format!("@{}", closed_at / 1000), "+%Y-%m-%d %H:%M"])
        .output()
        .expect("date runs");
    let when = String::from_utf8_lossy(&date.stdout).trim().to_owned();
    let status = client(&server, &["deployment", "status", &name]);
    let text = stdout(&status);
    assert!(status.status.success(), "{}", stderr(&status));
    let expected = format!(
        "  closed {when} UTC (pull request merged); last served revision 1 ({})\n",
        &first[..12]
    );
    assert!(text.contains(&expected), "expected {expected:?} in:\n{text}");
    assert!(!text.contains("serving"), "a closed deployment never reads as serving:\n{text}");
    assert!(text.contains("  latest: revision 2 failed"), "{text}");

    let status = client(&server, &["deployment", "status", &name, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert!(json["current_revision"].is_null(), "{json:#}");
    assert_eq!(json["last_served_revision"]["number"], 1, "{json:#}");

    let listed = client(&server, &["deployment", "list", "--include-closed"]);
    let text = stdout(&listed);
    let row =
        text.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{name} in:\n{text}"));
    assert_eq!(row.split_whitespace().nth(1), Some("closed"), "{row}");
    let listed = client(&server, &["deployment", "list", "--include-closed", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let entry =
        list.as_array().expect("list").iter().find(|d| d["name"] == name.as_str()).expect("listed");
    assert!(
        entry["current_revision"].is_null() && entry["last_served_revision"]["number"] == 1,
        "{entry:#}"
    );
    let prod = list.as_array().expect("list").iter().find(|d| d["name"] == "prod").expect("prod");
    assert!(
        prod["current_revision"].is_object() && prod["last_served_revision"].is_null(),
        "an open one serves: {prod:#}"
    );

    // Reopened: open, so nothing is "last served" any more (it serves again once deployed).
    let reopened = server.post(&format!("/api/v1/deployments/{name}/reopen"), json!({}));
    assert_eq!(reopened["status"], "open", "{reopened:#}");
    assert!(reopened["last_served_revision"].is_null(), "{reopened:#}");
}

#[test]
fn materializing_changed_and_downstream_never_touches_production() {
    let (dir, repo) = shop_repo("materialize");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    seed_production(&server);
    let output =
        client(&server, &["materialize", "--deployment", "prod", "--select", "key:*", "--wait"]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));

    let warehouse = warehouse(&server);
    let rt = runtime();
    let checksums = || -> Vec<(String, Option<String>)> {
        rt.block_on(async {
            let target = production_target();
            let mut all = Vec::new();
            for table in warehouse.own_tables(&target).await.expect("tables") {
                let checksum = warehouse.table_checksum(&target, &table).await.expect("checksum");
                all.push((table, checksum));
            }
            all
        })
    };
    let before = checksums();
    assert!(before.len() >= 12, "production has its tables: {before:?}");

    let name = create_or_update(&server, "feature/eur", &git(&repo, &["rev-parse", "feature/eur"]));
    server.wait_for_deployment(&name, "ready", |d| d["current_revision"].is_object());
    let output = client(
        &server,
        &["materialize", "--deployment", &name, "--select", "changed_in_branch:ANY+", "--wait"],
    );
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let runs = server.get(&format!("/api/v1/runs?deployment={name}"));
    let run = server.get(&format!("/api/v1/runs/{}", runs[0]["id"]));
    let built: BTreeSet<&str> = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["asset_key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        built,
        BTreeSet::from([
            "customer_lifetime_value",
            "daily_revenue",
            "dim_customers",
            "fct_orders",
            "weekly_revenue"
        ])
    );
    assert!(
        run["steps"].as_array().expect("steps").iter().all(|s| s["status"] == "succeeded"),
        "{run:#}"
    );

    assert_eq!(checksums(), before, "branch runs leave every production table as it was");
    rt.block_on(async {
        let branch = branch_target(&name);
        let own = warehouse.own_tables(&branch).await.expect("tables");
        assert_eq!(
            own,
            [
                "customer_lifetime_value",
                "daily_revenue",
                "dim_customers",
                "fct_orders",
                "weekly_revenue"
            ],
            "copy-on-write: only rebuilt assets"
        );
        // The branch skips unpaid orders; production still counts them.
        let production_rows =
            warehouse.row_count(&production_target(), "fct_orders").await.expect("count");
        let branch_rows = warehouse.row_count(&branch, "fct_orders").await.expect("count");
        assert_eq!((production_rows, branch_rows), (Some(3), Some(2)));
        // Unbuilt assets are read from production.
        assert_eq!(warehouse.row_count(&branch, "stg_orders").await.expect("count"), Some(3));
    });

    // A failing step skips its downstream and fails the run.
    let broken = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/fct_orders.sql",
        "SELECT no_such_column FROM int_order_payments\n",
        "Break fct_orders at run time",
    );
    create_or_update(&server, "feature/eur", &broken);
    server
        .wait_for_deployment(&name, "ready at the broken commit", |d| serving_commit(d) == broken);
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:fct_orders+"}));
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "failed");
    let step = |key: &str| {
        run["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["asset_key"] == key)
            .expect("step")
            .clone()
    };
    assert_eq!(step("fct_orders")["status"], "failed");
    assert!(
        step("fct_orders")["error"].as_str().expect("error").contains("no_such_column"),
        "{run:#}"
    );
    assert_eq!(step("daily_revenue")["status"], "skipped");
    assert_eq!(checksums(), before);
}

#[test]
fn hostile_branch_names_and_requests() {
    let (dir, repo) = shop_repo("hostile");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    let sha = git(&repo, &["rev-parse", "feature/eur"]);
    let long = "a".repeat(300);
    let branches = [
        "x'; DROP TABLE raw_orders; --",
        "a\"b",
        "ünïcødé/ブランチ",
        long.as_str(),
        "feature/x",
        "feature_x",
        "feature-x",
        "prod",
        "../../etc/passwd",
        "$(rm -rf /)",
    ];
    let mut names = BTreeSet::new();
    for branch in branches {
        let (status, body) = server.request(
            "POST",
            "/api/v1/branch-deployments",
            Some(json!({"branch_name": branch, "commit_hash": sha})),
            Some(TOKEN),
        );
        assert_eq!(status, 200, "{branch}: {body}");
        let name = body["name"].as_str().expect("name").to_owned();
        assert!(DeploymentName::new(&name).is_ok(), "{branch} -> {name}");
        assert_eq!(body["deployment"]["branch"], branch, "shown verbatim");
        names.insert(name);
    }
    assert_eq!(names.len(), branches.len(), "names never collide: {names:?}");
    assert!(names.contains("feature-x"), "a lossless slug is the branch itself");
    assert!(!names.contains("prod"));
    for name in &names {
        server.wait_for_deployment(name, "ready", |d| d["current_revision"]["status"] == "ready");
    }
    let files: BTreeSet<String> = std::fs::read_dir(server.data_dir.join("warehouse"))
        .expect("warehouse dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), branches.len() + 1, "{files:?}");
    assert!(
        files.iter().all(|f| f
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')),
        "{files:?}"
    );

    let bad_requests = [
        (json!({"branch_name": "", "commit_hash": sha}), 400, "invalid_branch_name"),
        (json!({"branch_name": "a\nb", "commit_hash": sha}), 400, "invalid_branch_name"),
        (json!({"branch_name": "x", "commit_hash": sha, "colour": "red"}), 400, "invalid_request"),
        (json!({"branch_name": "x"}), 400, "invalid_request"),
        (json!({"branch_name": "x", "commit_hash": "not hex"}), 400, "invalid_request"),
        (
            json!({"branch_name": "x", "commit_hash": "0123456789abcdef0123456789abcdef01234567"}),
            422,
            "commit_not_found",
        ),
        (
            json!({"branch_name": "x", "commit_hash": sha, "pull_request_status": "REOPENED"}),
            400,
            "invalid_request",
        ),
        (
            json!({"branch_name": "x", "commit_hash": sha, "git_repo_name": "other"}),
            404,
            "repository_not_found",
        ),
        (
            json!({"branch_name": "x", "commit_hash": sha, "base_deployment_name": "nope"}),
            404,
            "deployment_not_found",
        ),
    ];
    for (body, status, code) in bad_requests {
        let (got, answer) =
            server.request("POST", "/api/v1/branch-deployments", Some(body.clone()), Some(TOKEN));
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, _) = server.request(
        "POST",
        "/api/v1/branch-deployments",
        Some(json!({"branch_name": "y", "commit_hash": sha})),
        None,
    );
    assert_eq!(status, 401);
    let (status, body) = server.request(
        "POST",
        "/api/v1/branch-deployments",
        Some(json!({"branch_name": "y", "commit_hash": sha})),
        Some("wrong"),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert!(!server.log().contains(TOKEN), "secrets never reach the log");
    let (status, body) = server.request(
        "POST",
        "/api/v1/deployments/prod/runs",
        Some(json!({"selection": "key:a and"})),
        Some(TOKEN),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_selection")));
    assert!(body["error"]["message"].as_str().expect("message").contains("column 10"), "{body}");
    let openapi = server.get("/api/v1/openapi.json");
    assert_eq!(openapi["openapi"], "3.0.3");
    let metrics = ureq::get(&format!("{}/metrics", server.url))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(metrics.contains("offshoot_deploys_total{status=\"ready\"}"), "{metrics}");
    // Deploys after production's reuse its parsed files (parse once per blob).
    let hits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("offshoot_parse_cache_lookups_total{result=\"hit\"} "))
        .and_then(|n| n.parse().ok())
        .expect("parse cache hits in /metrics");
    assert!(hits > 0, "{metrics}");
}

/// Generates `count` SQL assets so that loading takes long enough to be interrupted.
fn commit_big_project(repo: &Path, branch: &str, count: usize) -> String {
    git(repo, &["checkout", "-q", "-b", branch, "main"]);
    let folder = repo.join("assets/generated");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for i in 0..count {
        let upstream = if i == 0 { "stg_orders".to_owned() } else { format!("gen_{}", i / 2) };
        std::fs::write(
            folder.join(format!("gen_{i}.sql")),
            format!("SELECT order_id, {i} AS n FROM {upstream} WHERE order_id > {i}\n"),
        )
        .expect("write");
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "Generated"]);
    let sha = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "-q", "main"]);
    sha
}

#[test]
fn sigkill_during_a_deploy_and_during_a_run_converges_after_restart() {
    let (dir, repo) = shop_repo("crash");
    let mut server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    seed_production(&server);
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(server.wait_for_run(run["id"].as_i64().expect("id"))["status"], "succeeded");

    // A run whose command asset takes long: kill the server while it executes.
    let slow = commit_file(
        &repo,
        "feature/eur",
        "assets/ops/slow_export.toml",
        "command = \"sleep 30\"\ndeps = [\"fct_orders\"]\n",
        "Slow export",
    );
    let name = create_or_update(&server, "feature/eur", &slow);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == slow);
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:slow_export"}));
    let run_id = run["id"].as_i64().expect("id");
    let started = std::time::Instant::now();
    while server.get(&format!("/api/v1/runs/{run_id}"))["steps"][0]["status"] != "running" {
        assert!(started.elapsed().as_secs() < 30, "the step never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.kill();
    server.restart();
    let run = server.wait_for_run(run_id);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(run["error"].as_str().expect("reason").contains("server stopped"), "{run:#}");
    assert_eq!(run["steps"][0]["status"], "failed");

    // A deploy: kill while the revision is deploying; after restart it resumes and converges.
    let big = commit_big_project(&repo, "feature/big", 3000);
    let big_name = create_or_update(&server, "feature/big", &big);
    let started = std::time::Instant::now();
    let mut caught_deploying = false;
    while started.elapsed().as_secs() < 30 {
        let (_, deployment) =
            server.request("GET", &format!("/api/v1/deployments/{big_name}"), None, None);
        match deployment["latest_revision"]["status"].as_str() {
            Some("deploying") => {
                caught_deploying = true;
                break;
            }
            Some("ready") => break,
            _ => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
    assert!(
        caught_deploying,
        "the 3,000-asset deploy finished before it could be interrupted; make it bigger"
    );
    server.kill();
    // Meanwhile a closed deployment's file reappears and an orphan appears: reconciliation drops both.
    let warehouse_dir = server.data_dir.join("warehouse");
    std::fs::write(warehouse_dir.join("shop__ghost.db"), b"").expect("orphan");
    std::fs::create_dir_all(warehouse_dir.join("shop__phantom")).expect("orphan branch folder");
    std::fs::write(warehouse_dir.join("shop__phantom/shop__phantom.db"), b"")
        .expect("orphan branch file");
    server.restart();
    let deployment = server
        .wait_for_deployment(&big_name, "ready after the restart", |d| serving_commit(d) == big);
    assert_eq!(deployment["current_revision"]["asset_count"], 3013);
    server.wait_for_deployment(&name, "still serving", |d| serving_commit(d) == slow);
    assert!(server.log().contains("was deploying on a server that stopped"), "{}", server.log());
    assert!(!warehouse_dir.join("shop__ghost.db").exists(), "orphan schemas are dropped at start");
    assert!(!warehouse_dir.join("shop__phantom").exists(), "orphan branch folders too");

    // Everything still works: a new run succeeds.
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:fct_orders"}));
    assert_eq!(server.wait_for_run(run["id"].as_i64().expect("id"))["status"], "succeeded");
}

pub(crate) fn psql(database: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs (PostgreSQL's client is on the machine)");
    assert!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Drops the branch group role `role` and the branches' login roles (`role_<hash>`); call after
/// the database they had privileges in is dropped (roles are cluster-wide).
pub(crate) fn drop_branch_roles(role: &str) {
    psql(
        "postgres",
        &format!(
            "DO $$ DECLARE r text; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE rolname = '{role}' OR starts_with(rolname, '{role}_') \
             ORDER BY length(rolname) DESC LOOP EXECUTE format('DROP ROLE %I', r); END LOOP; END $$"
        ),
    );
}

/// A fresh database, dropped when the test ends (also on failure).
pub(crate) struct Database(pub(crate) String);

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
            ])
            .output();
    }
}

#[test]
fn postgres_store_and_warehouse_serve_branch_deployments() {
    if postgres_skipped() {
        return;
    }
    let database = Database(format!("offshoot_cli_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let dir = TempDir::new("postgres");
    let repo = dir.0.join("repo");
    native_repo(
        &repo,
        "postgres",
        &["raw_orders"],
        &[
            ("orders.sql", "SELECT id, amount FROM raw_orders WHERE amount > 0\n"),
            ("big_orders.sql", "SELECT id, amount FROM orders WHERE amount > 10\n"),
        ],
    );
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let server = Server::start(&dir.0, &repo, &format!("metadata_url = \"{url}\"\nwarehouse_url = \"{url}\"\nbranch_role = \"offshoot_branch_{}\"", std::process::id()));
    wait_for_prod(&server, &repo);
    psql(&database.0, "CREATE TABLE shop__prod.raw_orders AS SELECT g AS id, g * 3 AS amount FROM generate_series(0, 9) AS g");
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(server.wait_for_run(run["id"].as_i64().expect("id"))["status"], "succeeded");
    let production_before = psql(
        &database.0,
        "SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM shop__prod.big_orders",
    );

    git(&repo, &["branch", "feature/bigger"]);
    let sha = commit_file(
        &repo,
        "feature/bigger",
        "assets/big_orders.sql",
        "SELECT id, amount FROM orders WHERE amount > 20\n",
        "Bigger orders only",
    );
    let name = create_or_update(&server, "feature/bigger", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let run = server.post(
        &format!("/api/v1/deployments/{name}/runs"),
        json!({"selection": "changed_in_branch:ANY+"}),
    );
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let schema = branch_target(&name).schema;
    assert_eq!(psql(&database.0, &format!("SELECT count(*) FROM \"{schema}\".big_orders")), "3");
    assert_eq!(psql(&database.0, "SELECT count(*) FROM shop__prod.big_orders"), "6");
    assert_eq!(psql(&database.0, &format!("SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = '{schema}'")), "big_orders");
    assert_eq!(psql(&database.0, "SELECT md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM shop__prod.big_orders"), production_before);

    server.post(&format!("/api/v1/deployments/{name}/close"), json!({}));
    assert_eq!(
        psql(
            &database.0,
            &format!(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'"
            )
        ),
        "0"
    );
    drop(server);
    psql("postgres", &format!("DROP DATABASE {} WITH (FORCE)", database.0));
    drop_branch_roles(&format!("offshoot_branch_{}", std::process::id()));
}

#[test]
fn cap_ttl_cancel_and_watched_branch_deletion() {
    let (dir, repo) = shop_repo("limits");
    let sha = git(&repo, &["rev-parse", "feature/eur"]);

    // The cap on open branch deployments.
    let server = Server::start(&dir.0, &repo, "max_open_branch_deployments = 1");
    wait_for_prod(&server, &repo);
    let first = create_or_update(&server, "feature/eur", &sha);
    let (status, body) = server.request(
        "POST",
        "/api/v1/branch-deployments",
        Some(json!({"branch_name": "feature/two", "commit_hash": sha})),
        Some(TOKEN),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("deployment_limit_reached")),
        "{body}"
    );
    server.wait_for_deployment(&first, "ready", |d| d["current_revision"].is_object());

    // Cancel: a running command is killed and the run ends canceled.
    seed_production(&server);
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(server.wait_for_run(run["id"].as_i64().expect("id"))["status"], "succeeded");
    let slow = commit_file(
        &repo,
        "feature/eur",
        "assets/ops/slow_export.toml",
        "command = \"sleep 30\"\n",
        "Slow export",
    );
    create_or_update(&server, "feature/eur", &slow);
    server.wait_for_deployment(&first, "ready at the slow commit", |d| serving_commit(d) == slow);
    let run = server.post(
        &format!("/api/v1/deployments/{first}/runs"),
        json!({"selection": "key:slow_export or key:fct_orders+"}),
    );
    let id = run["id"].as_i64().expect("id");
    let started = std::time::Instant::now();
    while !server.get(&format!("/api/v1/runs/{id}"))["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .any(|s| s["asset_key"] == "slow_export" && s["status"] == "running")
    {
        assert!(started.elapsed().as_secs() < 30, "the slow step never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = client(&server, &["runs", "cancel", &id.to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let run = server.wait_for_run(id);
    assert_eq!(run["status"], "canceled", "{run:#}");
    let slow_step = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["asset_key"] == "slow_export")
        .expect("step")
        .clone();
    assert_eq!(slow_step["status"], "canceled");
    assert!(started.elapsed().as_secs() < 25, "the command was killed, not waited for");
    drop(server);

    // TTL: with a TTL of zero days, branch deployments close at the next sweep; pinned ones stay.
    let ttl_dir = TempDir::new("limits-ttl");
    let server = Server::start(&ttl_dir.0, &repo, "ttl_days = 0");
    wait_for_prod(&server, &repo);
    let pinned = create_or_update(&server, "feature/eur", &sha);
    server.post(&format!("/api/v1/deployments/{pinned}/pin"), json!({"pinned": true}));
    let expiring = create_or_update(&server, "broken", &git(&repo, &["rev-parse", "main"]));
    let closed =
        server.wait_for_deployment(&expiring, "closed by the TTL", |d| d["status"] == "closed");
    assert!(closed["close_reason"].as_str().expect("reason").contains("TTL"), "{closed}");
    assert_eq!(server.get(&format!("/api/v1/deployments/{pinned}"))["status"], "open");
    drop(server);

    // Watch mode: a new branch deploys, a deleted branch closes its deployment.
    let watch_dir = TempDir::new("limits-watch");
    let server = Server::start_with_config(
        &watch_dir.0,
        &format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\napi_tokens = [{TOKEN:?}]\n[[repositories]]\nname = \"shop\"\npath = {:?}\nwatch = true\nbranches = \"feature/*\"\npoll_interval_ms = 100\n",
            watch_dir.0.join("data").to_str().expect("utf-8"),
            repo.to_str().expect("utf-8")
        ),
    );
    git(&repo, &["branch", "feature/watched", "main"]);
    let started = std::time::Instant::now();
    let name = loop {
        let list = server.get("/api/v1/deployments");
        if let Some(d) =
            list.as_array().expect("list").iter().find(|d| d["branch"] == "feature/watched")
        {
            break d["name"].as_str().expect("name").to_owned();
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "the watcher never deployed the new branch: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let deployments = server.get("/api/v1/deployments");
    assert!(
        !deployments.as_array().expect("list").iter().any(|d| d["branch"] == "broken"),
        "branches outside the glob are ignored"
    );
    git(&repo, &["branch", "-D", "feature/watched"]);
    let closed = server.wait_for_deployment(&name, "closed after the branch was deleted", |d| {
        d["status"] == "closed"
    });
    assert_eq!(closed["close_reason"], "the branch was deleted");
}

fn shared_postgres_config(dir: &Path, repo: &Path, url: &str, server_id: &str) -> String {
    format!(
        "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\napi_tokens = [{TOKEN:?}]\nserver_id = \"{server_id}\"\nlease_seconds = 2\nmetadata_url = \"{url}\"\nwarehouse_url = \"{url}\"\nbranch_role = \"offshoot_branch_two_{}\"\n[[repositories]]\nname = \"shop\"\npath = {:?}\nproduction_branch = \"main\"\n",
        dir.join("data").to_str().expect("utf-8"),
        std::process::id(),
        repo.to_str().expect("utf-8")
    )
}

#[test]
fn two_servers_on_one_postgres_store_execute_work_once_and_take_over_from_a_killed_one() {
    if postgres_skipped() {
        return;
    }
    let database = Database(format!("offshoot_two_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let dir = TempDir::new("two-servers");
    let repo = dir.0.join("repo");
    std::fs::create_dir_all(repo.join("assets")).expect("mkdir");
    std::fs::write(
        repo.join("offshoot.toml"),
        "[project]\nname = \"shop\"\ndialect = \"postgres\"\n\n[sources.raw_orders]\n",
    )
    .expect("manifest");
    std::fs::write(repo.join("assets/orders.sql"), "SELECT id, amount FROM raw_orders\n")
        .expect("asset");
    std::fs::write(repo.join("assets/slow.toml"), "command = \"sleep 30\"\ndeps = [\"orders\"]\n")
        .expect("asset");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "Orders"]);
    let main = git(&repo, &["rev-parse", "main"]);
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let (dir_a, dir_b) = (dir.0.join("a"), dir.0.join("b"));
    std::fs::create_dir_all(&dir_a).expect("mkdir");
    std::fs::create_dir_all(&dir_b).expect("mkdir");
    let mut a =
        Server::start_with_config(&dir_a, &shared_postgres_config(&dir_a, &repo, &url, "server-a"));
    wait_for_prod(&a, &repo);
    psql(&database.0, "CREATE TABLE shop__prod.raw_orders AS SELECT g AS id, g * 3 AS amount FROM generate_series(1, 10) AS g");
    let mut b =
        Server::start_with_config(&dir_b, &shared_postgres_config(&dir_b, &repo, &url, "server-b"));

    // Many deploys and runs: each executes on exactly one server, once.
    let names: Vec<String> =
        (0..6).map(|i| create_or_update(&a, &format!("feature/{i}"), &main)).collect();
    for name in &names {
        let deployment =
            b.wait_for_deployment(name, "ready", |d| d["current_revision"]["status"] == "ready");
        let revisions = b.get(&format!("/api/v1/deployments/{name}/revisions"));
        assert_eq!(revisions.as_array().expect("list").len(), 1, "{revisions:#}");
        assert!(deployment["current_revision"]["server"].is_string(), "{deployment}");
    }
    let runs: Vec<i64> = names
        .iter()
        .map(|n| {
            b.post(&format!("/api/v1/deployments/{n}/runs"), json!({"selection": "key:orders"}))
                ["id"]
                .as_i64()
                .expect("id")
        })
        .collect();
    let mut servers = BTreeSet::new();
    for id in &runs {
        let run = a.wait_for_run(*id);
        assert_eq!(run["status"], "succeeded", "{run:#}");
        servers.insert(run["server"].as_str().expect("server").to_owned());
    }
    for name in &names {
        let asset = a.get(&format!("/api/v1/deployments/{name}/assets/orders"));
        assert_eq!(
            asset["materializations"].as_array().expect("list").len(),
            1,
            "built once: {asset}"
        );
    }
    let logs = a.log() + &b.log();
    for name in &names {
        assert_eq!(
            logs.matches(&format!("deploying {} of shop/{name}", &main[..12])).count(),
            1,
            "deployed once: {name}"
        );
    }
    assert!(!servers.is_empty());

    // Kill the server executing a run: the other takes it over when the lease expires.
    let run =
        a.post(&format!("/api/v1/deployments/{}/runs", names[0]), json!({"selection": "key:slow"}));
    let id = run["id"].as_i64().expect("id");
    let started = std::time::Instant::now();
    let owner = loop {
        let run = a.get(&format!("/api/v1/runs/{id}"));
        if run["steps"][0]["status"] == "running" {
            break run["server"].as_str().expect("server").to_owned();
        }
        assert!(started.elapsed().as_secs() < 30, "the slow step never started: {run:#}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (victim, survivor) = if owner == "server-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    victim.kill();
    let run = survivor.wait_for_run(id);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(run["error"].as_str().expect("reason").contains("server stopped"), "{run:#}");
    assert!(
        started.elapsed().as_secs() < 20,
        "taken over after the 2 s lease, not at the end of the command"
    );
    let deployment = survivor.get(&format!("/api/v1/deployments/{}", names[1]));
    assert_eq!(deployment["current_revision"]["status"], "ready");
    drop(a);
    drop(b);
    psql("postgres", &format!("DROP DATABASE {} WITH (FORCE)", database.0));
    drop_branch_roles(&format!("offshoot_branch_two_{}", std::process::id()));
}

#[test]
fn examples_shop_runs_on_postgres_by_setting_the_warehouse_url() {
    if postgres_skipped() {
        return;
    }
    let database = Database(format!("offshoot_shop_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let (dir, repo) = shop_repo("shop-postgres");
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let role = format!("offshoot_branch_shop_{}", std::process::id());
    let server = Server::start(
        &dir.0,
        &repo,
        &format!("warehouse_url = \"{url}\"\nbranch_role = \"{role}\""),
    );
    wait_for_prod(&server, &repo);
    let seed = Command::new("psql")
        .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-f"])
        .arg(workspace().join("examples/shop/data/seed_postgres.sql"))
        .output()
        .expect("psql runs");
    assert!(seed.status.success(), "{}", String::from_utf8_lossy(&seed.stderr));

    let output =
        client(&server, &["materialize", "--deployment", "prod", "--select", "key:*", "--wait"]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let checksum = || {
        psql(
            &database.0,
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop__prod.fct_orders AS t",
        )
    };
    let before = checksum();

    git(&repo, &["branch", "feature/paid", "main"]);
    let sha = commit_file(
        &repo,
        "feature/paid",
        "assets/marts/fct_orders.sql",
        &std::fs::read_to_string(repo.join("assets/marts/fct_orders.sql")).expect("read").replace(
            "LEFT JOIN fx_rates AS fx ON fx.currency = p.currency\n",
            "LEFT JOIN fx_rates AS fx ON fx.currency = p.currency\nWHERE p.amount_cents > 0\n",
        ),
        "Skip unpaid orders",
    );
    let name = create_or_update(&server, "feature/paid", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let output = client(
        &server,
        &[
            "materialize",
            "--deployment",
            &name,
            "--select",
            "changed_in_branch:ANY+ or key:fx_rates",
            "--wait",
        ],
    );
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let schema = branch_target(&name).schema;
    let branch_rows: i64 =
        psql(&database.0, &format!("SELECT count(*) FROM \"{schema}\".fct_orders"))
            .parse()
            .expect("count");
    let production_rows: i64 =
        psql(&database.0, "SELECT count(*) FROM shop__prod.fct_orders").parse().expect("count");
    assert!(
        branch_rows < production_rows,
        "the branch skips unpaid orders: {branch_rows} vs {production_rows}"
    );
    assert_eq!(
        psql(&database.0, &format!("SELECT count(*) FROM \"{schema}\".fx_rates")),
        "4",
        "the command asset wrote the branch's own table"
    );
    assert_eq!(checksum(), before, "production is unchanged");
    drop(server);
    psql("postgres", &format!("DROP DATABASE {} WITH (FORCE)", database.0));
    drop_branch_roles(&role);
}

/// Concurrent pushes of new branches race for the last places under the cap: exactly the cap's
/// number open, every other push refused with `deployment_limit_reached`.
#[test]
fn concurrent_pushes_never_exceed_the_open_cap() {
    let (dir, repo) = shop_repo("cap-race");
    let sha = git(&repo, &["rev-parse", "feature/eur"]);
    let server = Server::start(&dir.0, &repo, "max_open_branch_deployments = 3");
    wait_for_prod(&server, &repo);
    let start = std::sync::Barrier::new(10);
    let answers: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let pushes: Vec<_> = (0..10)
            .map(|i| {
                let (server, start, sha) = (&server, &start, &sha);
                scope.spawn(move || {
                    start.wait();
                    let (status, body) = server.request(
                        "POST",
                        "/api/v1/branch-deployments",
                        Some(json!({"branch_name": format!("race-{i}"), "commit_hash": sha})),
                        Some(TOKEN),
                    );
                    (status, body["error"]["code"].as_str().map(str::to_owned))
                })
            })
            .collect();
        pushes.into_iter().map(|p| p.join().expect("push thread")).collect()
    });
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
    let refused = answers
        .iter()
        .filter(|(status, code)| {
            *status == 409 && code.as_deref() == Some("deployment_limit_reached")
        })
        .count();
    assert_eq!((accepted, refused), (3, 7), "{answers:?}");
    let (_, open) = server.request("GET", "/api/v1/deployments", None, Some(TOKEN));
    let branches =
        open.as_array().expect("a list").iter().filter(|d| d["kind"] == "branch").count();
    assert_eq!(branches, 3, "{open}");
}

/// Dagster+'s `tag_concurrency_limits` across two servers sharing one PostgreSQL store: runs of
/// two branch deployments tagged `export=nightly` under a limit of 1 run one at a time, whichever
/// server claims them; the queued one says which tag limit it waits for; a run with another tag
/// value is not held back; when the running one ends, the queued one starts.
#[test]
fn two_servers_on_one_store_keep_a_tag_concurrency_limit() {
    if postgres_skipped() {
        return;
    }
    let database = Database(format!("offshoot_tags_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let dir = TempDir::new("two-servers-tags");
    let repo = dir.0.join("repo");
    std::fs::create_dir_all(repo.join("assets")).expect("mkdir");
    std::fs::write(
        repo.join("offshoot.toml"),
        "[project]\nname = \"shop\"\ndialect = \"postgres\"\n",
    )
    .expect("manifest");
    std::fs::write(repo.join("assets/slow.toml"), "command = \"sleep 30\"\n").expect("asset");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "Slow"]);
    let main = git(&repo, &["rev-parse", "main"]);
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let limits = "\n[[tag_concurrency_limits]]\nkey = \"export\"\nvalue = \"nightly\"\nlimit = 1\n";
    let (dir_a, dir_b) = (dir.0.join("a"), dir.0.join("b"));
    std::fs::create_dir_all(&dir_a).expect("mkdir");
    std::fs::create_dir_all(&dir_b).expect("mkdir");
    let config = |dir: &Path, id: &str| {
        format!("{}{limits}", shared_postgres_config(dir, &repo, &url, id))
            .replace("offshoot_branch_two_", "offshoot_branch_tags_")
    };
    let a = Server::start_with_config(&dir_a, &config(&dir_a, "server-a"));
    wait_for_prod(&a, &repo);
    let b = Server::start_with_config(&dir_b, &config(&dir_b, "server-b"));
    let one = create_or_update(&a, "feature/one", &main);
    let two = create_or_update(&b, "feature/two", &main);
    for name in [&one, &two] {
        a.wait_for_deployment(name, "ready", |d| d["current_revision"]["status"] == "ready");
    }

    // Launched with Offshoot's CLI, one through each server.
    let launch = |server: &Server, deployment: &str, tag: &str| -> i64 {
        let output = client(
            server,
            &["materialize", "--deployment", deployment, "--select", "key:slow", "--tag", tag],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let runs = server.get(&format!("/api/v1/runs?deployment={deployment}&limit=1"));
        runs[0]["id"].as_i64().expect("id")
    };
    let first = launch(&a, &one, "export=nightly");
    let second = launch(&b, &two, "export=nightly");
    let other = launch(&b, &two, "export=hourly");
    assert_eq!(a.get(&format!("/api/v1/runs/{first}"))["tags"], json!({"export": "nightly"}));
    // The tag that counts production's catch-ups (one at a time) is no user's to set.
    let reserved = client(
        &a,
        &[
            "materialize",
            "--deployment",
            &one,
            "--select",
            "key:slow",
            "--tag",
            "offshoot/catch-up=x",
        ],
    );
    assert!(!reserved.status.success(), "{}", stdout(&reserved));
    assert!(
        stderr(&reserved).contains("reserved for production's catch-ups"),
        "{}",
        stderr(&reserved)
    );

    // Both servers' executors pass several times (every 2 s at the latest).
    let started = std::time::Instant::now();
    loop {
        let statuses: Vec<String> = [first, second, other]
            .iter()
            .map(|id| {
                a.get(&format!("/api/v1/runs/{id}"))["status"].as_str().unwrap_or("").to_owned()
            })
            .collect();
        if statuses.iter().filter(|s| *s == "running").count() == 2 {
            break;
        }
        assert!(started.elapsed().as_secs() < 30, "runs never started: {statuses:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let runs: Vec<serde_json::Value> =
        [first, second].iter().map(|id| b.get(&format!("/api/v1/runs/{id}"))).collect();
    let running: Vec<&serde_json::Value> =
        runs.iter().filter(|r| r["status"] == "running").collect();
    let queued: Vec<&serde_json::Value> = runs.iter().filter(|r| r["status"] == "queued").collect();
    assert_eq!((running.len(), queued.len()), (1, 1), "one nightly run at a time: {runs:#?}");
    assert_eq!(
        queued[0]["waiting_for"],
        "1 running run is tagged export=nightly (limit 1): the tag limit (tag_concurrency_limits); it starts when one of them ends"
    );
    assert_eq!(b.get(&format!("/api/v1/runs/{other}"))["status"], "running", "another value runs");

    // The running one ends; the queued one starts on whichever server claims it.
    let (running_id, queued_id) =
        (running[0]["id"].as_i64().expect("id"), queued[0]["id"].as_i64().expect("id"));
    a.post(&format!("/api/v1/runs/{running_id}/cancel"), json!({}));
    assert_eq!(a.wait_for_run(running_id)["status"], "canceled");
    let started = std::time::Instant::now();
    while a.get(&format!("/api/v1/runs/{queued_id}"))["status"] != "running" {
        assert!(started.elapsed().as_secs() < 30, "the queued run never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for id in [queued_id, other] {
        a.post(&format!("/api/v1/runs/{id}/cancel"), json!({}));
        assert_eq!(a.wait_for_run(id)["status"], "canceled");
    }
}
