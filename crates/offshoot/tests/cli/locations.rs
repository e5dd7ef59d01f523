//! dbt and Dagster code locations end to end, with the real tools (tests/python/requirements.txt,
//! installed by .ci/run): loading, change tracking across commits, building changed and
//! downstream in a branch without touching production, and broken projects.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::server::{branch_target, commit_file, create_or_update, psql, wait_for_prod, Database};
use crate::support::*;

fn reasons_by_key(changes: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let mut list: Vec<(String, Vec<String>)> = changes["changes"]["assets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["key"].as_str().unwrap_or("").to_owned(),
                        c["reasons"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| r.as_str().unwrap().to_owned())
                            .collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    list
}

fn step_keys(run: &serde_json::Value) -> BTreeSet<String> {
    run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["asset_key"].as_str().expect("key").to_owned())
        .collect()
}

fn run_selection(server: &Server, deployment: &str, selection: &str) -> serde_json::Value {
    let run = server
        .post(&format!("/api/v1/deployments/{deployment}/runs"), json!({ "selection": selection }));
    server.wait_for_run(run["id"].as_i64().unwrap_or_else(|| panic!("no run: {run:#}")))
}

fn newest_revision(server: &Server, name: &str, sha: &str) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let revisions = server.get(&format!("/api/v1/deployments/{name}/revisions"));
        let list = revisions["revisions"]
            .as_array()
            .cloned()
            .or_else(|| revisions.as_array().cloned())
            .unwrap_or_default();
        if let Some(revision) = list.into_iter().find(|r| {
            r["commit"]["sha"] == sha && matches!(r["status"].as_str(), Some("ready" | "failed"))
        }) {
            return revision;
        }
        assert!(
            started.elapsed().as_secs() < 90,
            "{name} never finished deploying {sha}: {revisions:#}\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn dbt_project_branch_deployment_builds_changed_and_downstream_deferring_to_production() {
    if postgres_skipped() {
        return;
    }
    python_tools();
    let database = Database(format!("offshoot_dbt_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let seed = Command::new("psql")
        .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-f"])
        .arg(workspace().join("examples/dbt_shop/data/seed_raw.sql"))
        .output()
        .expect("psql runs");
    assert!(seed.status.success(), "{}", String::from_utf8_lossy(&seed.stderr));
    let dir = TempDir::new("dbt");
    let repo = dir.0.join("repo");
    example_repo("dbt_shop", &repo);
    let role = format!("offshoot_branch_dbt_{}", std::process::id());
    let server = Server::start(
        &dir.0,
        &repo,
        &format!("warehouse_url = \"{url}\"\nbranch_role = \"{role}\""),
    );

    // Sources live outside Offshoot's schemas: branch builds run as the branch role, which reads
    // them only when granted (README: "dbt projects").
    psql(&database.0, &format!("GRANT USAGE ON SCHEMA shop_raw TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA shop_raw TO {role}"));

    // Loading: dbt parse's manifest becomes the snapshot (models, seed, sources as `raw/...`).
    let prod = wait_for_prod(&server, &repo);
    assert!(prod["current_revision"]["asset_count"].as_u64().expect("count") >= 10, "{prod:#}");
    let source = server.get("/api/v1/deployments/prod/assets/raw%2Forders");
    assert_eq!(source["key"], "raw/orders", "{source:#}");
    let model = server.get("/api/v1/deployments/prod/assets/stg_orders");
    assert!(model["code"].as_str().unwrap_or("").contains("source('raw', 'orders')"), "{model:#}");

    // Production builds everything with `dbt build`.
    let run = run_selection(&server, "prod", "key:*");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let checksum = || {
        psql(&database.0, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop__prod.customer_orders AS t")
    };
    let before = checksum();

    // A branch changes one staging model: CODE_VERSION for it, its downstream impacted.
    git(&repo, &["branch", "feature/no-shipping", "main"]);
    let stg_orders =
        std::fs::read_to_string(repo.join("models/staging/stg_orders.sql")).expect("read");
    let changed = stg_orders.replace(
        "(shipping_cents / 100.0)::numeric(12, 2) as shipping_amount",
        "0::numeric(12, 2) as shipping_amount",
    );
    assert_ne!(changed, stg_orders, "the example's stg_orders changed shape; update this test");
    let sha = commit_file(
        &repo,
        "feature/no-shipping",
        "models/staging/stg_orders.sql",
        &changed,
        "Drop shipping",
    );
    let name = create_or_update(&server, "feature/no-shipping", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let changes = server.get(&format!("/api/v1/deployments/{name}/changes"));
    assert_eq!(
        reasons_by_key(&changes),
        vec![("stg_orders".to_owned(), vec!["CODE_VERSION".to_owned()])],
        "{changes:#}"
    );
    let impacted: BTreeSet<String> = changes["changes"]["impacted"]
        .as_array()
        .expect("impacted")
        .iter()
        .map(|i| i["key"].as_str().expect("key").to_owned())
        .collect();
    assert!(
        impacted.contains("order_payments") && !impacted.contains("stg_customers"),
        "{impacted:?}"
    );

    // Changed and downstream: exactly those build in the branch schema; the rest is read from
    // production through dbt's --defer.
    let run = run_selection(&server, &name, "changed_in_branch:ANY+");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let built = step_keys(&run);
    let mut expected: BTreeSet<String> = impacted.clone();
    expected.insert("stg_orders".to_owned());
    assert_eq!(built, expected);
    let schema = branch_target(&name).schema;
    let tables: BTreeSet<String> = psql(
        &database.0,
        &format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
        ),
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(tables, expected, "the branch schema holds what the run built, nothing else");
    assert_eq!(checksum(), before, "production is unchanged");
    let branch_shipping = psql(
        &database.0,
        &format!("SELECT count(*) FROM \"{schema}\".stg_orders WHERE shipping_amount <> 0"),
    );
    assert_eq!(branch_shipping, "0");

    // A tag-only edit is a TAGS change and impacts nothing.
    let schema_yml = std::fs::read_to_string(repo.join("models/marts/schema.yml")).expect("read");
    let tagged = schema_yml.replacen(
        "owner: \"finance@example.com\"\n      tags: [\"finance\"]",
        "owner: \"finance@example.com\"\n      tags: [\"finance\", \"reviewed\"]",
        1,
    );
    assert_ne!(
        tagged, schema_yml,
        "the example's marts/schema.yml changed shape; update this test"
    );
    let sha = commit_file(
        &repo,
        "feature/no-shipping",
        "models/marts/schema.yml",
        &tagged,
        "Tag revenue_daily",
    );
    create_or_update(&server, "feature/no-shipping", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let changes = server.get(&format!("/api/v1/deployments/{name}/changes"));
    assert_eq!(
        reasons_by_key(&changes),
        vec![
            ("revenue_daily".to_owned(), vec!["TAGS".to_owned()]),
            ("stg_orders".to_owned(), vec!["CODE_VERSION".to_owned()])
        ],
        "{changes:#}"
    );

    // A broken project fails the revision with dbt's own message; the previous one keeps serving.
    git(&repo, &["branch", "feature/broken", "main"]);
    let broken =
        stg_orders.replace("{{ source('raw', 'orders') }}", "{{ source('raw', 'orders' }}");
    let sha_broken = commit_file(
        &repo,
        "feature/broken",
        "models/staging/stg_orders.sql",
        &broken,
        "Break the Jinja",
    );
    let broken_name = create_or_update(&server, "feature/broken", &sha_broken);
    let revision = newest_revision(&server, &broken_name, &sha_broken);
    assert_eq!(revision["status"], "failed", "{revision:#}");
    let diagnostics = revision["diagnostics"].to_string();
    assert!(
        diagnostics.contains("models/staging/stg_orders.sql")
            && diagnostics.contains("Compilation Error"),
        "{revision:#}"
    );

    // A model that tries to write production (a pre-hook, as the branch's own login role) fails
    // with PostgreSQL's "permission denied"; production is unchanged.
    git(&repo, &["branch", "feature/attack", "main"]);
    let attack = "{{ config(materialized='table', pre_hook=\"delete from shop__prod.customer_orders\") }}\nselect 1 as x\n";
    let sha_attack = commit_file(
        &repo,
        "feature/attack",
        "models/marts/attack.sql",
        attack,
        "Attack production",
    );
    let attack_name = create_or_update(&server, "feature/attack", &sha_attack);
    server.wait_for_deployment(&attack_name, "ready", |d| serving_commit(d) == sha_attack);
    let run = run_selection(&server, &attack_name, "key:attack");
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["steps"][0]["error"].as_str().unwrap_or("").contains("permission denied"),
        "{run:#}"
    );
    assert_eq!(checksum(), before, "production is unchanged");

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
    assert_eq!(
        git(&repo, &["status", "--porcelain"]),
        "",
        "checkouts never touch the repository's own index or files"
    );
    drop(server);
    psql("postgres", &format!("DROP DATABASE {} WITH (FORCE)", database.0));
    crate::server::drop_branch_roles(&role);
}

/// Dagster's own differ on two checkouts of a Dagster project: key → reasons.
fn dagster_reasons(base: &Path, head: &Path, module: &str) -> Vec<(String, Vec<String>)> {
    let output = Command::new(python_tools().join("bin/python"))
        .arg(workspace().join("crates/offshoot-location/python/dagster_differ.py"))
        .args([base, head])
        .arg(module)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "dagster_differ.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("json");
    let mut list: Vec<(String, Vec<String>)> = map
        .into_iter()
        .map(|(k, v)| {
            let mut reasons: Vec<String> = v
                .as_array()
                .expect("list")
                .iter()
                .map(|r| r.as_str().expect("reason").to_owned())
                .collect();
            reasons.sort();
            (k, reasons)
        })
        .collect();
    list.sort();
    list
}

/// A table of the SQLite warehouse as sorted text rows (Python's sqlite3, as the example uses).
fn sqlite_rows(file: &Path, sql: &str) -> Vec<String> {
    let output = Command::new("python3")
        .args(["-c", "import sqlite3, sys\nfor row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print('|'.join(map(str, row)))"])
        .arg(file)
        .arg(sql)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut rows: Vec<String> =
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    rows.sort();
    rows
}

const DEPLOYMENT_ENV_ASSET: &str = r#"

@dg.asset(group_name="marts", kinds={"python"})
def deployment_env(warehouse: Warehouse) -> dg.MaterializeResult:
    """Which deployment built this, as Dagster+ code reads it."""
    import os

    names = ["DAGSTER_CLOUD_DEPLOYMENT_NAME", "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT", "DAGSTER_CLOUD_GIT_SHA"]
    rows = warehouse.load_rows("deployment_env", [("name", "TEXT"), ("value", "TEXT")], [(n, os.environ.get(n, "")) for n in names])
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})
"#;

#[test]
fn dagster_project_branch_deployment_tracks_changes_like_dagster_and_builds_in_its_own_schema() {
    python_tools();
    let dir = TempDir::new("dagster");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    let server = Server::start(&dir.0, &repo, "");

    // Loading: the entry point's asset specs, with path keys and external assets as sources.
    let prod = wait_for_prod(&server, &repo);
    assert_eq!(prod["current_revision"]["asset_count"], 9, "{prod:#}");
    let raw = server.get("/api/v1/deployments/prod/assets/raw%2Forders");
    assert_eq!(raw["key"], "raw/orders", "{raw:#}");
    let run = run_selection(&server, "prod", "key:*");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let production_file = server.data_dir.join("warehouse/shop__prod.db");
    let production_before = sqlite_rows(&production_file, "SELECT * FROM fct_orders");
    assert!(!production_before.is_empty());

    // A branch bumps a code version, edits metadata and adds an asset.
    git(&repo, &["branch", "feature/clv", "main"]);
    let staging = std::fs::read_to_string(repo.join("dagster_shop/staging.py")).expect("read");
    let marts = std::fs::read_to_string(repo.join("dagster_shop/marts.py")).expect("read");
    let staging_changed = staging.replacen("code_version=\"2\"", "code_version=\"3\"", 1);
    let marts_changed = marts.replacen("\"lookback_days\": 365", "\"lookback_days\": 730", 1)
        + DEPLOYMENT_ENV_ASSET;
    assert!(
        staging_changed != staging && !marts_changed.contains("365}"),
        "the example changed shape; update this test"
    );
    commit_file(
        &repo,
        "feature/clv",
        "dagster_shop/staging.py",
        &staging_changed,
        "Version stg_orders",
    );
    let sha = commit_file(
        &repo,
        "feature/clv",
        "dagster_shop/marts.py",
        &marts_changed,
        "Longer lookback, deployment_env",
    );
    let name = create_or_update(&server, "feature/clv", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let ours = reasons_by_key(&server.get(&format!("/api/v1/deployments/{name}/changes")));

    // The same reasons as Dagster's own differ (AssetGraphDiffer) on the same two commits.
    let base_dir = dir.0.join("base");
    let head_dir = dir.0.join("head");
    git(
        &dir.0,
        &[
            "clone",
            "-q",
            "--branch",
            "main",
            repo.to_str().expect("utf-8"),
            base_dir.to_str().expect("utf-8"),
        ],
    );
    git(
        &dir.0,
        &[
            "clone",
            "-q",
            "--branch",
            "feature/clv",
            repo.to_str().expect("utf-8"),
            head_dir.to_str().expect("utf-8"),
        ],
    );
    let dagsters = dagster_reasons(&base_dir, &head_dir, "dagster_shop.definitions");
    assert_eq!(ours, dagsters);
    assert_eq!(
        ours,
        vec![
            ("customer_lifetime_value".to_owned(), vec!["METADATA".to_owned()]),
            ("deployment_env".to_owned(), vec!["NEW".to_owned()]),
            ("stg_orders".to_owned(), vec!["CODE_VERSION".to_owned()]),
        ]
    );

    // Changed and downstream build in the branch's own file; production reads stay production's.
    let run = run_selection(&server, &name, "changed_in_branch:ANY+");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let built = step_keys(&run);
    assert!(
        built.contains("stg_orders")
            && built.contains("fct_orders")
            && built.contains("deployment_env")
            && !built.contains("stg_customers"),
        "{built:?}"
    );
    let branch_file = crate::server::warehouse(&server).file_of(&branch_target(&name));
    let tables: BTreeSet<String> =
        sqlite_rows(&branch_file, "SELECT name FROM sqlite_master WHERE type = 'table'")
            .into_iter()
            .collect();
    assert_eq!(tables, built, "the branch holds exactly what the run built");
    assert_eq!(
        sqlite_rows(&production_file, "SELECT * FROM fct_orders"),
        production_before,
        "production is unchanged"
    );
    // Code that switches on Dagster+'s variables sees a branch deployment.
    assert_eq!(
        sqlite_rows(&branch_file, "SELECT name, value FROM deployment_env"),
        vec![
            format!("DAGSTER_CLOUD_DEPLOYMENT_NAME|{name}"),
            format!("DAGSTER_CLOUD_GIT_SHA|{sha}"),
            "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT|1".to_owned()
        ]
    );

    // A Python import error fails the revision with Python's own message at the file.
    git(&repo, &["branch", "feature/broken", "main"]);
    let broken = staging.replacen(
        "import dagster as dg\n",
        "import dagster as dg\nimport no_such_module\n",
        1,
    );
    let sha_broken = commit_file(
        &repo,
        "feature/broken",
        "dagster_shop/staging.py",
        &broken,
        "Import a missing module",
    );
    let broken_name = create_or_update(&server, "feature/broken", &sha_broken);
    let revision = newest_revision(&server, &broken_name, &sha_broken);
    assert_eq!(revision["status"], "failed", "{revision:#}");
    let diagnostic = &revision["diagnostics"][0];
    assert_eq!(diagnostic["path"], "dagster_shop/staging.py", "{revision:#}");
    assert!(
        diagnostic["message"].as_str().unwrap_or("").contains("No module named 'no_such_module'"),
        "{revision:#}"
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // Cancelling a tool run kills the tool's whole process group.
    git(&repo, &["branch", "feature/slow", "main"]);
    let slow = marts.clone() + SLOW_ASSET;
    let sha_slow =
        commit_file(&repo, "feature/slow", "dagster_shop/marts.py", &slow, "A slow asset");
    let slow_name = create_or_update(&server, "feature/slow", &sha_slow);
    server.wait_for_deployment(&slow_name, "ready", |d| serving_commit(d) == sha_slow);
    let run = server.post(
        &format!("/api/v1/deployments/{slow_name}/runs"),
        json!({ "selection": "key:slow_asset" }),
    );
    let id = run["id"].as_i64().expect("id");
    let started = std::time::Instant::now();
    while !Command::new("pgrep")
        .args(["-f", "offshoot-slow-asset"])
        .output()
        .expect("pgrep")
        .status
        .success()
    {
        assert!(started.elapsed().as_secs() < 60, "the slow asset never started: {}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, _) =
        server.request("POST", &format!("/api/v1/runs/{id}/cancel"), Some(json!({})), Some(TOKEN));
    assert_eq!(status, 200);
    let run = server.wait_for_run(id);
    assert_eq!(run["status"], "canceled", "{run:#}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The asset's own child (a grandchild of the tool) went with the group.
    let left = Command::new("pgrep").args(["-f", "offshoot-slow-asset"]).output().expect("pgrep");
    assert!(
        !left.status.success(),
        "processes of the canceled run are still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

const SLOW_ASSET: &str = r#"

@dg.asset(group_name="marts")
def slow_asset() -> None:
    """Sleeps in a child process named for the test, so the test can see it."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "import time; time.sleep(120)  # offshoot-slow-asset"], check=True)
"#;

fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example changed shape; update this test: {from:?} not found");
    text.replacen(from, to, 1)
}

/// Every reason Dagster's differ defines, on one pair of commits: `offshoot diff` (local, no
/// server) gives what Dagster's own `AssetGraphDiffer` gives.
#[test]
fn dagster_change_reasons_match_dagsters_own_differ_for_every_reason() {
    python_tools();
    let dir = TempDir::new("dagster-parity");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    let read = |path: &str| std::fs::read_to_string(repo.join(path)).expect("read");
    let (raw, staging, marts) = (
        read("dagster_shop/raw.py"),
        read("dagster_shop/staging.py"),
        read("dagster_shop/marts.py"),
    );
    let raw = replaced(&raw, "deps=[orders_export],", "deps=[orders_export, customers_export],");
    let staging = replaced(&staging, "code_version=\"2\"", "code_version=\"3\"");
    let staging = replaced(
        &staging,
        "metadata={\"grain\": \"one row per customer\"}",
        "metadata={\"grain\": \"one row per customer account\"}",
    );
    let marts = replaced(&marts, "\"tier\": \"gold\"},\n    code_version=\"1\",\n    metadata={\n        \"grain\": \"one row per order\"", "\"tier\": \"platinum\"},\n    code_version=\"1\",\n    metadata={\n        \"grain\": \"one row per order\"");
    let marts = replaced(&marts, "start_date=\"2024-01-01\"", "start_date=\"2023-12-01\"");
    let removed_at = marts
        .find("@dg.asset(\n    deps=[fct_orders, stg_customers],")
        .expect("customer_lifetime_value is the last asset");
    let marts = marts[..removed_at].to_owned() + DEPLOYMENT_ENV_ASSET;
    git(&repo, &["checkout", "-q", "-b", "feature/everything"]);
    for (path, text) in [
        ("dagster_shop/raw.py", &raw),
        ("dagster_shop/staging.py", &staging),
        ("dagster_shop/marts.py", &marts),
    ] {
        std::fs::write(repo.join(path), text).expect("write");
    }
    git(&repo, &["commit", "-q", "-am", "Every kind of change"]);
    git(&repo, &["checkout", "-q", "main"]);

    let output = Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args([
            "diff",
            "--repo",
            repo.to_str().expect("utf-8"),
            "--base",
            "main",
            "--head",
            "feature/everything",
            "--format",
            "json",
        ])
        .env("PATH", path_with_python_tools())
        .output()
        .expect("offshoot runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let ours = reasons_by_key(&json!({ "changes": report }));

    let base_dir = dir.0.join("base");
    let head_dir = dir.0.join("head");
    git(
        &dir.0,
        &[
            "clone",
            "-q",
            "--branch",
            "main",
            repo.to_str().expect("utf-8"),
            base_dir.to_str().expect("utf-8"),
        ],
    );
    git(
        &dir.0,
        &[
            "clone",
            "-q",
            "--branch",
            "feature/everything",
            repo.to_str().expect("utf-8"),
            head_dir.to_str().expect("utf-8"),
        ],
    );
    let dagsters = dagster_reasons(&base_dir, &head_dir, "dagster_shop.definitions");
    let expected: Vec<(String, Vec<String>)> = [
        ("customer_lifetime_value", "REMOVED"),
        ("daily_revenue", "PARTITIONS_DEFINITION"),
        ("deployment_env", "NEW"),
        ("fct_orders", "TAGS"),
        ("raw/orders", "DEPENDENCIES"),
        ("stg_customers", "METADATA"),
        ("stg_orders", "CODE_VERSION"),
    ]
    .iter()
    .map(|(k, r)| (k.to_string(), vec![r.to_string()]))
    .collect();
    assert_eq!(dagsters, expected, "Dagster's own differ");
    assert_eq!(ours, expected, "Offshoot");
}

/// The Dagster example on the PostgreSQL warehouse: assets write the deployment's schema as the
/// branch role and read production's tables through the search path.
#[test]
fn dagster_project_on_the_postgres_warehouse_builds_only_in_the_branch_schema() {
    if postgres_skipped() {
        return;
    }
    python_tools();
    let database = Database(format!("offshoot_dagster_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let dir = TempDir::new("dagster-postgres");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    let role = format!("offshoot_branch_dagster_{}", std::process::id());
    let server = Server::start(
        &dir.0,
        &repo,
        &format!("warehouse_url = \"{url}\"\nbranch_role = \"{role}\""),
    );
    wait_for_prod(&server, &repo);
    let run = run_selection(&server, "prod", "key:*");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let checksum = || {
        psql(
            &database.0,
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop__prod.fct_orders AS t",
        )
    };
    let before = checksum();

    git(&repo, &["branch", "feature/v3", "main"]);
    let staging = std::fs::read_to_string(repo.join("dagster_shop/staging.py")).expect("read");
    let sha = commit_file(
        &repo,
        "feature/v3",
        "dagster_shop/staging.py",
        &replaced(&staging, "code_version=\"2\"", "code_version=\"3\""),
        "stg_orders v3",
    );
    let name = create_or_update(&server, "feature/v3", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let run = run_selection(&server, &name, "changed_in_branch:ANY+");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let built: BTreeSet<String> = step_keys(&run);
    assert_eq!(
        built,
        ["customer_lifetime_value", "daily_revenue", "fct_orders", "stg_orders"]
            .iter()
            .map(|k| k.to_string())
            .collect()
    );
    let schema = branch_target(&name).schema;
    let tables: BTreeSet<String> = psql(
        &database.0,
        &format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
        ),
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(tables, built, "the branch schema holds what the run built, nothing else");
    // Built by the branch's own login role (a member of `role`, which reads production).
    let owner = psql(&database.0, &format!("SELECT tableowner FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'stg_orders'"));
    assert!(owner.starts_with(&format!("{role}_")), "{owner}");
    assert_eq!(checksum(), before, "production is unchanged");
    drop(server);
    psql("postgres", &format!("DROP DATABASE {} WITH (FORCE)", database.0));
    crate::server::drop_branch_roles(&role);
}

/// The dagster_shop example as Dagster+ projects write their definitions (Dagster's project
/// template, hooli): local code references, linked to the git host when Dagster+'s variables say
/// so, and one metadata value built from the deployment (dagster-io/dagster#30768).
const DAGSTER_PLUS_DEFINITIONS: &str = r#""""The code location, as a Dagster+ project writes it."""

import os
from pathlib import Path

import dagster as dg
from dagster_cloud.metadata.source_code import link_code_references_to_git_if_cloud

from dagster_shop import marts, raw, staging
from dagster_shop.warehouse import Warehouse


def in_deployment(assets):
    """Names the deployment in each asset's metadata, as code that builds table names does."""
    name = os.environ.get("DAGSTER_CLOUD_DEPLOYMENT_NAME", "local")
    return [
        a.map_asset_specs(lambda spec: spec.merge_attributes(metadata={"shop/deployment": name}))
        if isinstance(a, dg.AssetsDefinition)
        else a
        for a in assets
    ]


defs = dg.Definitions(
    assets=link_code_references_to_git_if_cloud(
        dg.with_source_code_references(
            in_deployment(dg.load_assets_from_modules([raw, staging, marts], include_specs=True))
        ),
        file_path_mapping=dg.AnchorBasedFilePathMapping(
            local_file_anchor=Path(__file__),
            file_anchor_path_in_repository="dagster_shop/definitions.py",
        ),
    ),
    resources={"warehouse": Warehouse()},
    executor=dg.in_process_executor,
)
"#;

/// A Dagster+ project with `with_source_code_references` and
/// `link_code_references_to_git_if_cloud` loads with git-linked references that name no folder
/// and no commit, a docs-only branch is no change, metadata built from the deployment is left
/// out of change tracking by `untracked_metadata`, and the branch runs with the same variables
/// it loaded with.
#[test]
fn dagster_plus_project_with_git_linked_code_references_loads_diffs_and_runs_in_a_branch() {
    python_tools();
    let dir = TempDir::new("dagster-plus");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    std::fs::write(repo.join("dagster_shop/definitions.py"), DAGSTER_PLUS_DEFINITIONS)
        .expect("write");
    let manifest = std::fs::read_to_string(repo.join("offshoot.toml")).expect("read");
    std::fs::write(
        repo.join("offshoot.toml"),
        manifest.replacen(
            "production_branch = \"main\"\n",
            "production_branch = \"main\"\nuntracked_metadata = [\"shop/deployment\"]\n",
            1,
        ),
    )
    .expect("write");
    git(&repo, &["commit", "-qam", "Dagster+ definitions"]);
    let server = Server::start_with_repository(
        &dir.0,
        &format!(
            "path = {:?}\ngit_url = \"https://github.com/example/dagster-shop\"",
            repo.to_str().expect("utf-8")
        ),
        "",
    );
    let prod = wait_for_prod(&server, &repo);
    assert_eq!(prod["current_revision"]["status"], "ready", "{prod:#}\n{}", server.log());
    let asset = server.get("/api/v1/deployments/prod/assets/stg_orders");
    let references = asset["metadata"]["dagster/code_references"].as_str().unwrap_or("");
    assert!(
        references.contains(
            "https://github.com/example/dagster-shop/tree/${OFFSHOOT_GIT_SHA}/dagster_shop/staging.py#L"
        ),
        "{asset:#}"
    );
    assert_eq!(asset["metadata"]["shop/deployment"], "prod", "{asset:#}");
    assert_eq!(asset["untracked_metadata"], json!(["shop/deployment"]), "{asset:#}");
    let run = run_selection(&server, "prod", "key:*");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());

    // Docs only: no asset changed, though every asset names another deployment and commit.
    git(&repo, &["branch", "docs/readme", "main"]);
    let sha = commit_file(&repo, "docs/readme", "docs/notes.md", "# Notes\n", "Document the shop");
    let name = create_or_update(&server, "docs/readme", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let changes = server.get(&format!("/api/v1/deployments/{name}/changes"));
    assert_eq!(reasons_by_key(&changes), vec![], "{changes:#}");
    let branch_asset = server.get(&format!("/api/v1/deployments/{name}/assets/stg_orders"));
    assert_eq!(branch_asset["metadata"]["shop/deployment"], name.as_str(), "{branch_asset:#}");

    // The branch runs: Dagster+'s variables at run time are the ones it loaded with.
    let run = run_selection(&server, &name, "key:stg_orders");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
}

/// Loading is independent of where it happens: one commit of every example, loaded from two
/// folders (as two servers, or two deployments of one, do) with Dagster+'s variables, gives the
/// same snapshot byte for byte.
#[test]
fn every_example_loads_the_same_from_any_folder() {
    python_tools();
    let dir = TempDir::new("independent");
    // dagster_plus_local: the same without Dagster+'s variables (local file references).
    for example in [
        "shop",
        "dbt_shop",
        "dagster_shop",
        "dagster_plus",
        "dagster_plus_local",
        "dagster_dbt_shop",
    ] {
        let repo = dir.0.join(example).join("repo");
        let sha = if example.starts_with("dagster_plus") {
            example_repo("dagster_shop", &repo);
            std::fs::write(repo.join("dagster_shop/definitions.py"), DAGSTER_PLUS_DEFINITIONS)
                .expect("write");
            git(&repo, &["commit", "-qam", "Dagster+ definitions"]);
            git(&repo, &["rev-parse", "HEAD"])
        } else {
            example_repo(example, &repo)
        };
        let git_repo = offshoot_repo::GitRepository::open(&repo).expect("open");
        let context = offshoot_location::DeploymentContext {
            location_name: "shop".into(),
            deployment_name: "prod".into(),
            branch: "main".into(),
            git_url: Some("https://github.com/example/shop".into()),
            git_repo: "example/shop".into(),
            commit: offshoot_location::CommitContext { sha: sha.clone(), ..Default::default() },
            ..Default::default()
        };
        let mut env = vec![
            ("PATH".to_owned(), path_with_python_tools()),
            (
                "OFFSHOOT_WAREHOUSE_URL".to_owned(),
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            ),
            ("OFFSHOOT_SCHEMA".to_owned(), "shop__prod".to_owned()),
        ];
        if example != "dagster_plus_local" {
            env.extend(offshoot_location::deployment_environment(&context));
        }
        let load = |folder: &str| {
            let base = dir.0.join(example).join(folder);
            let checkout = base.join("checkouts").join(&sha);
            let work = base.join("locations").join(&sha);
            std::fs::create_dir_all(&work).expect("mkdir");
            let mut env = env.clone();
            env.push(("TMPDIR".to_owned(), work.to_string_lossy().into_owned()));
            let files = git_repo.files_at(&sha).expect("files");
            let project = offshoot_location::load_project(
                &files,
                || {
                    git_repo.export_tree(&sha, &checkout).map_err(|e| e.to_string())?;
                    Ok(checkout.clone())
                },
                &work,
                &env,
                None,
                None,
                None,
            )
            .unwrap_or_else(|e| panic!("{example} loads from {folder}: {e:?}"));
            format!("{:#?}", project.snapshot.assets().collect::<Vec<_>>())
        };
        let first = load("a");
        let second = load("another/folder/b");
        assert!(first.len() > 100, "{first}");
        assert_eq!(first, second, "{example}: the same commit loads the same from any folder");
        assert!(!first.contains(dir.0.to_str().expect("utf-8")), "{example}: {first}");
        if example == "dagster_dbt_shop" {
            // dagster-dbt's code references, linked to the git host, name no commit.
            assert!(
                first.contains("https://github.com/example/shop/tree/${OFFSHOOT_GIT_SHA}/dbt_shop/models/staging/stg_orders.sql"),
                "{first}"
            );
        }
        if example == "dagster_plus_local" {
            assert!(first.contains(r#"\"file_path\": \"dagster_shop/staging.py\""#), "{first}");
        }
    }
}

/// `data_dir` (and `--data-dir`) relative to the folder the server starts in: resolved once, at
/// start, so the checkouts and work folders handed to tools that run elsewhere still resolve.
#[test]
fn a_relative_data_dir_is_resolved_against_the_working_directory_at_start() {
    python_tools();
    let dir = TempDir::new("relative-data");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    let cwd = dir.0.join("serve1");
    std::fs::create_dir_all(&cwd).expect("mkdir");
    let config = format!(
        "data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\napi_tokens = [{TOKEN:?}]\n[[repositories]]\nname = \"shop\"\nproduction_branch = \"main\"\npath = {:?}\n",
        repo.to_str().expect("utf-8")
    );
    let server = Server::start_in(&cwd, &config, &cwd.join("data"));
    let prod = wait_for_prod(&server, &repo);
    assert_eq!(prod["current_revision"]["asset_count"], 9, "{prod:#}\n{}", server.log());
    let run = run_selection(&server, "prod", "key:*");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    assert!(
        server.log().contains(&format!("data in {}", cwd.join("data").display())),
        "{}",
        server.log()
    );
    assert!(cwd.join("data/checkouts").is_dir() && cwd.join("data/warehouse").is_dir());
}

/// examples/dagster_dbt_shop in a server: its prepare step writes dbt's manifest in the
/// checkout (confined, as the load), dagster-dbt's assets load with code references linked to
/// the git host, and a docs-only branch changes nothing.
#[test]
fn dagster_dbt_shop_prepares_each_checkout_and_loads_dbt_assets_with_git_links() {
    python_tools();
    let dir = TempDir::new("dagster-dbt");
    let repo = dir.0.join("repo");
    example_repo("dagster_dbt_shop", &repo);
    let server = Server::start_with_repository(
        &dir.0,
        &format!(
            "path = {:?}\ngit_url = \"https://github.com/example/dagster-dbt-shop\"",
            repo.to_str().expect("utf-8")
        ),
        "",
    );
    let prod = wait_for_prod(&server, &repo);
    assert_eq!(prod["current_revision"]["status"], "ready", "{prod:#}\n{}", server.log());
    let model = server.get("/api/v1/deployments/prod/assets/stg_orders");
    assert!(
        model["metadata"]["dagster/code_references"].as_str().unwrap_or("").contains(
            "https://github.com/example/dagster-dbt-shop/tree/${OFFSHOOT_GIT_SHA}/dbt_shop/models/staging/stg_orders.sql"
        ),
        "{model:#}"
    );
    let source = server.get("/api/v1/deployments/prod/assets/raw%2Forders");
    assert_eq!(source["key"], "raw/orders", "{source:#}");

    git(&repo, &["branch", "docs/models", "main"]);
    let sha = commit_file(&repo, "docs/models", "docs/models.md", "# Models\n", "Document");
    let name = create_or_update(&server, "docs/models", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let changes = server.get(&format!("/api/v1/deployments/{name}/changes"));
    assert_eq!(reasons_by_key(&changes), vec![], "{changes:#}");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the repository is untouched");
}
