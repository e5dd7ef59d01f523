//! Data diffs end to end: a branch rebuilds an asset with fewer rows, a changed value and a new
//! column; the API, the CLI (text, JSON, markdown) and the summaries give the exact numbers.
//! Diffs are cached in the store (they survive a restart, on SQLite and PostgreSQL; a corrupt
//! entry is recomputed), and compare with production's table now, as the branch built against,
//! or as a production run built it.

use std::process::Command;

use serde_json::{json, Value};

use crate::server::{
    client, commit_file, create_or_update, drop_branch_roles, production_target, psql, runtime,
    wait_for_prod, warehouse, Database,
};
use crate::support::*;

/// raw_orders: ids 0..9 with amount = 3 × id.
const SEED: &str = "CREATE TABLE raw_orders AS WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 9) SELECT CAST(n AS INTEGER) AS id, CAST(n * 3 AS INTEGER) AS amount FROM s;";

/// A native SQLite repository of `assets` over the source `raw_orders`, served with `extra`
/// configuration, production ready and `raw_orders` seeded.
fn seeded_server(
    dir: &TempDir,
    assets: &[(&str, &str)],
    extra: &str,
) -> (Server, std::path::PathBuf) {
    let repo = dir.0.join("repo");
    native_repo(&repo, "sqlite", &["raw_orders"], assets);
    let server = Server::start(&dir.0, &repo, extra);
    wait_for_prod(&server, &repo);
    runtime().block_on(async {
        warehouse(&server)
            .execute_production_script(&production_target().production, SEED)
            .await
            .expect("seed")
    });
    (server, repo)
}

#[test]
fn a_branch_data_diff_counts_rows_columns_and_samples_exactly() {
    let dir = TempDir::new("data-diff");
    // Production: ids 1..9 (amount > 0).
    let orders =
        "/* offshoot\ngrain = [\"id\"]\n*/\nSELECT id, amount FROM raw_orders WHERE amount > 0\n";
    let (server, repo) =
        seeded_server(&dir, &[("orders.sql", orders), ("ids.sql", "SELECT id FROM orders\n")], "");
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(
        server.wait_for_run(run["id"].as_i64().expect("id"))["status"],
        "succeeded",
        "{}",
        server.log()
    );

    // The branch: ids 4..9 (amount > 10), id 9's amount set to 0, a new column.
    git(&repo, &["branch", "feature/fewer", "main"]);
    let edited = "/* offshoot\ngrain = [\"id\"]\n*/\nSELECT id, CASE WHEN id = 9 THEN 0 ELSE amount END AS amount, 'x' AS note FROM raw_orders WHERE amount > 10\n";
    let sha = commit_file(&repo, "feature/fewer", "assets/orders.sql", edited, "Fewer orders");
    let name = create_or_update(&server, "feature/fewer", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let (status, body) = server.request(
        "GET",
        &format!("/api/v1/deployments/{name}/assets/orders/data-diff"),
        None,
        None,
    );
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("not_built_in_branch")),
        "before a branch run it reads production's: {body:#}"
    );
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:orders"}));
    assert_eq!(
        server.wait_for_run(run["id"].as_i64().expect("id"))["status"],
        "succeeded",
        "{}",
        server.log()
    );

    let diff = server.get(&format!("/api/v1/deployments/{name}/assets/orders/data-diff"));
    assert_eq!(diff["state"], "compared", "{diff:#}");
    assert_eq!(
        (diff["production_rows"].as_u64(), diff["branch_rows"].as_u64()),
        (Some(9), Some(6))
    );
    assert_eq!(
        diff["rows"],
        json!({"only_in_production": 3, "only_in_branch": 0, "changed": 1, "equal": 5})
    );
    assert_eq!(diff["key"]["columns"], json!(["id"]));
    assert_eq!(diff["key"]["source"], "declared");
    assert_eq!(diff["schema"]["added"][0]["name"], "note");
    let amount = diff["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "amount")
        .expect("amount")
        .clone();
    assert_eq!(amount["equal"], 5);
    assert!((amount["equal_share"].as_f64().expect("share") - 5.0 / 6.0).abs() < 1e-9);
    // Production sums 3 × (1..9) = 135; the branch 3 × (4..8) + 0 = 90.
    assert_eq!(
        (amount["production"]["sum"].as_str(), amount["branch"]["sum"].as_str()),
        (Some("135"), Some("90"))
    );
    assert_eq!(diff["samples"]["removed"], json!([["1", "3"], ["2", "6"], ["3", "9"]]));
    assert_eq!(
        diff["samples"]["changed"],
        json!([{"key": ["9"], "cells": [{"production": "27", "branch": "0", "changed": true}]}])
    );
    assert!(
        diff["branch_run"].as_i64().is_some() && diff["production_run"].as_i64().is_some(),
        "{diff:#}"
    );
    // A key given in the request, and a smaller sample.
    let by_amount = server
        .get(&format!("/api/v1/deployments/{name}/assets/orders/data-diff?key=amount&sample=1"));
    assert_eq!(by_amount["key"]["source"], "declared");
    assert_eq!(by_amount["samples"]["removed"].as_array().map(Vec::len), Some(1));
    // Refusals: production, a bad sample, an unknown asset.
    assert_eq!(
        server.request("GET", "/api/v1/deployments/prod/assets/orders/data-diff", None, None).0,
        400
    );
    assert_eq!(
        server
            .request(
                "GET",
                &format!("/api/v1/deployments/{name}/assets/orders/data-diff?sample=100000"),
                None,
                None
            )
            .0,
        400
    );
    assert_eq!(
        server
            .request(
                "GET",
                &format!("/api/v1/deployments/{name}/assets/nope/data-diff"),
                None,
                None
            )
            .0,
        404
    );

    // The summaries: one line per asset the branch built.
    let summaries = server.get(&format!("/api/v1/deployments/{name}/data-diffs"));
    assert_eq!(summaries["diffs"].as_array().map(Vec::len), Some(1), "{summaries:#}");
    assert_eq!(summaries["diffs"][0]["asset"], "orders");
    assert_eq!(
        (
            summaries["diffs"][0]["only_in_production"].as_u64(),
            summaries["diffs"][0]["changed"].as_u64()
        ),
        (Some(3), Some(1))
    );

    // The CLI.
    let output = client(&server, &["data-diff", "--deployment", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("orders: 9 rows in production, 6 in the branch"), "{text}");
    assert!(text.contains("by id (declared): 3 removed, 0 added, 1 changed, 5 equal"), "{text}");
    assert!(text.contains("columns added: note") && text.contains("9: amount 27 -> 0"), "{text}");
    let branch_run = diff["branch_run"].as_i64().expect("the branch's run");
    let production_run = diff["production_run"].as_i64().expect("production's run");
    assert!(
        text.contains(&format!(
            "the branch's table (run {branch_run}) against production's (run {production_run})"
        )),
        "{text}"
    );
    let output = client(&server, &["data-diff", "--deployment", &name, "--format", "markdown"]);
    assert!(
        stdout(&output).contains("| `orders` | 9 → 6 | 0 | 3 | 1 | declared |"),
        "{}",
        stdout(&output)
    );
    let output = client(
        &server,
        &["data-diff", "--deployment", &name, "--select", "key:orders", "--format", "json"],
    );
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(parsed[0]["rows"]["changed"], 1);

    // Production rebuilds orders after the branch built its own: the diff is of production's
    // table as it is now, and says so, naming both runs.
    let rebuilt = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:orders"}));
    let rebuilt = rebuilt["id"].as_i64().expect("id");
    assert_eq!(server.wait_for_run(rebuilt)["status"], "succeeded", "{}", server.log());
    let again = server.get(&format!("/api/v1/deployments/{name}/assets/orders/data-diff"));
    assert_eq!(again["production_run"].as_i64(), Some(rebuilt), "{again:#}");
    let note = format!("production's table was rebuilt by run {rebuilt} after the branch built its own (run {branch_run})");
    assert!(
        again["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n.as_str().is_some_and(|n| n.starts_with(&note))),
        "{again:#}"
    );
    assert_eq!(
        diff["notes"]
            .as_array()
            .map(|n| n.iter().any(|n| n.as_str().is_some_and(|n| n.contains("rebuilt")))),
        Some(false),
        "{diff:#}"
    );
}

/// Above `[data_diff] row_limit` the server's diffs match a sample of keys and say so. SQLite
/// samples integer keys by `id × 48271 mod (2³¹ − 1)`, which for small ids leaves the ids
/// divisible by 3 when one key in 3 is kept.
#[test]
fn above_the_row_limit_a_data_diff_is_a_sample_and_says_so() {
    let dir = TempDir::new("data-diff-sampled");
    let orders =
        "/* offshoot\ngrain = [\"id\"]\n*/\nSELECT id, amount FROM raw_orders WHERE amount > 0\n";
    let (server, repo) =
        seeded_server(&dir, &[("orders.sql", orders)], "[data_diff]\nrow_limit = 4\n");
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(server.wait_for_run(run["id"].as_i64().expect("id"))["status"], "succeeded");
    git(&repo, &["branch", "feature/fewer", "main"]);
    let edited = "/* offshoot\ngrain = [\"id\"]\n*/\nSELECT id, CASE WHEN id = 9 THEN 0 ELSE amount END AS amount FROM raw_orders WHERE amount > 10\n";
    let sha = commit_file(&repo, "feature/fewer", "assets/orders.sql", edited, "Fewer orders");
    let name = create_or_update(&server, "feature/fewer", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:orders"}));
    assert_eq!(server.wait_for_run(run["id"].as_i64().expect("id"))["status"], "succeeded");

    // 9 rows in production, at most 4: one key in 3, ids 3, 6, 9 (the branch: 6, 9).
    let diff = server.get(&format!("/api/v1/deployments/{name}/assets/orders/data-diff"));
    assert_eq!(
        diff["sampled"],
        json!({"modulus": 3, "production_rows": 3, "branch_rows": 2}),
        "{diff:#}"
    );
    assert_eq!(
        diff["rows"],
        json!({"only_in_production": 1, "only_in_branch": 0, "changed": 1, "equal": 1})
    );
    assert_eq!(
        (diff["production_rows"].as_u64(), diff["branch_rows"].as_u64()),
        (Some(9), Some(6))
    );
    let summaries = server.get(&format!("/api/v1/deployments/{name}/data-diffs"));
    assert_eq!(summaries["diffs"][0]["sampled"], true, "{summaries:#}");
    let output = client(&server, &["data-diff", "--deployment", &name]);
    let text = stdout(&output);
    assert!(text.contains("sampled: the tables are above the row limit"), "{text}");
    assert!(text.contains("3 of 9 rows in production and 2 of 6 in the branch"), "{text}");
    let output = client(&server, &["data-diff", "--deployment", &name, "--format", "markdown"]);
    assert!(
        stdout(&output)
            .contains("| `orders` | 9 → 6 | 0 | 1 | 1 | declared (sampled: 1 key in 3) |"),
        "{}",
        stdout(&output)
    );
}

/// A table built from definitions the serving revision no longer has is "stale" in the graph
/// (the fingerprint recorded with its materialization differs), until it is built again.
#[test]
fn a_table_built_from_older_definitions_is_stale_until_rebuilt() {
    let dir = TempDir::new("stale");
    let orders = "SELECT id, amount FROM raw_orders WHERE amount > 0\n";
    let (server, repo) =
        seeded_server(&dir, &[("orders.sql", orders), ("ids.sql", "SELECT id FROM orders\n")], "");
    let run_to_success = |deployment: &str, selection: &str| {
        let run = server.post(
            &format!("/api/v1/deployments/{deployment}/runs"),
            json!({"selection": selection}),
        );
        let id = run["id"].as_i64().expect("id");
        assert_eq!(server.wait_for_run(id)["status"], "succeeded", "{}", server.log());
    };
    let stale = |deployment: &str| -> Vec<(String, bool, String)> {
        let graph = server.get(&format!("/api/v1/deployments/{deployment}/graph"));
        graph["assets"]
            .as_array()
            .expect("assets")
            .iter()
            .filter(|a| a["kind"] != "source")
            .map(|a| {
                let key = a["key"].as_str().expect("key").to_owned();
                (key, a["stale"].as_bool().expect("stale"), a["data"].as_str().unwrap_or("").into())
            })
            .collect()
    };
    run_to_success("prod", "key:*");
    let fresh = |data: &str| {
        vec![("ids".into(), false, data.into()), ("orders".into(), false, data.into())]
    };
    assert_eq!(stale("prod"), fresh("production"));

    git(&repo, &["branch", "feature/stale", "main"]);
    let edited = "SELECT id, amount FROM raw_orders WHERE amount > 10\n";
    let sha = commit_file(&repo, "feature/stale", "assets/orders.sql", edited, "Fewer orders");
    let name = create_or_update(&server, "feature/stale", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    run_to_success(&name, "key:orders");
    assert_eq!(
        stale(&name),
        vec![("ids".into(), false, "production".into()), ("orders".into(), false, "branch".into())]
    );
    // Another push changes orders again: the branch's table is from the older definition.
    let again = "SELECT id, amount FROM raw_orders WHERE amount > 20\n";
    let sha = commit_file(&repo, "feature/stale", "assets/orders.sql", again, "Fewer still");
    create_or_update(&server, "feature/stale", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    assert_eq!(
        stale(&name),
        vec![("ids".into(), false, "production".into()), ("orders".into(), true, "branch".into())],
        "orders was built from the previous push's SQL"
    );
    run_to_success(&name, "key:orders");
    assert_eq!(
        stale(&name),
        vec![("ids".into(), false, "production".into()), ("orders".into(), false, "branch".into())]
    );
}

/// Where a cache test's server keeps its store and warehouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A server on `backend` serving one asset `orders` over a seeded `raw_orders` (ids 0..9,
/// amount 3 × id), automatic diffs off (so every computation is the test's own), production
/// built, and a branch `feature/fewer` that keeps ids 4..9 and sets id 9's amount to 0, built.
struct CacheSetup {
    server: Server,
    backend: Backend,
    database: Option<Database>,
    /// PostgreSQL's branch group role, dropped with the setup (roles are cluster-wide).
    branch_role: String,
    name: String,
    _dir: TempDir,
}

fn cache_setup(test: &str, backend: Backend) -> CacheSetup {
    let dir = TempDir::new(&format!("data-diff-{test}-{backend:?}"));
    let repo = dir.0.join("repo");
    let orders =
        "/* offshoot\ngrain = [\"id\"]\n*/\nSELECT id, amount FROM raw_orders WHERE amount > 0\n";
    let dialect = if backend == Backend::Sqlite { "sqlite" } else { "postgres" };
    native_repo(&repo, dialect, &["raw_orders"], &[("orders.sql", orders)]);
    let branch_role = format!("offshoot_branch_dd_{test}_{}", std::process::id());
    let role = &branch_role;
    let (database, extra) = match backend {
        Backend::Sqlite => (None, String::new()),
        Backend::Postgres => {
            let database = Database(format!("offshoot_dd_{test}_{}", std::process::id()));
            psql("postgres", &format!("CREATE DATABASE {}", database.0));
            let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
            let extra = format!(
                "metadata_url = \"{url}\"\nwarehouse_url = \"{url}\"\nbranch_role = \"{role}\"\n"
            );
            (Some(database), extra)
        }
    };
    let server = Server::start(&dir.0, &repo, &format!("{extra}[data_diff]\nauto = false\n"));
    wait_for_prod(&server, &repo);
    match &database {
        None => runtime().block_on(async {
            warehouse(&server)
                .execute_production_script(&production_target().production, SEED)
                .await
                .expect("seed")
        }),
        Some(database) => {
            psql(&database.0, "CREATE TABLE shop__prod.raw_orders AS SELECT g AS id, g * 3 AS amount FROM generate_series(0, 9) AS g");
        }
    }
    let mut setup =
        CacheSetup { server, backend, database, branch_role, name: String::new(), _dir: dir };
    setup.run_to_success("prod", "key:*");
    git(&repo, &["branch", "feature/fewer", "main"]);
    let edited = "/* offshoot\ngrain = [\"id\"]\n*/\nSELECT id, CASE WHEN id = 9 THEN 0 ELSE amount END AS amount FROM raw_orders WHERE amount > 10\n";
    let sha = commit_file(&repo, "feature/fewer", "assets/orders.sql", edited, "Fewer orders");
    let name = create_or_update(&setup.server, "feature/fewer", &sha);
    setup.server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    setup.run_to_success(&name, "key:orders");
    setup.name = name;
    setup
}

impl CacheSetup {
    fn run_to_success(&self, deployment: &str, selection: &str) -> i64 {
        let run = self.server.post(
            &format!("/api/v1/deployments/{deployment}/runs"),
            json!({"selection": selection}),
        );
        let id = run["id"].as_i64().expect("id");
        assert_eq!(self.server.wait_for_run(id)["status"], "succeeded", "{}", self.server.log());
        id
    }

    fn diff(&self, query: &str) -> Value {
        self.server
            .get(&format!("/api/v1/deployments/{}/assets/orders/data-diff{query}", self.name))
    }

    /// SQL on the metadata store.
    fn store_sql(&self, sql: &str) -> String {
        match &self.database {
            Some(database) => psql(&database.0, sql),
            None => {
                let output = Command::new("sqlite3")
                    .arg(self.server.data_dir.join("offshoot.db"))
                    .arg(sql)
                    .output()
                    .expect("sqlite3 runs");
                assert!(output.status.success(), "sqlite3: {}", stderr(&output));
                stdout(&output).trim().to_owned()
            }
        }
    }

    /// Drops production's `orders` table behind the server's back.
    fn drop_production_orders(&self) {
        match &self.database {
            Some(database) => {
                psql(&database.0, "DROP TABLE shop__prod.orders");
            }
            None => runtime().block_on(async {
                warehouse(&self.server)
                    .execute_production_script(&production_target().production, "DROP TABLE orders")
                    .await
                    .expect("drop production's orders")
            }),
        }
    }
}

impl Drop for CacheSetup {
    fn drop(&mut self) {
        if self.backend == Backend::Postgres {
            // The server first: its connections would keep the database.
            let _ = self.server.child.kill();
            let _ = self.server.child.wait();
            drop(self.database.take());
            drop_branch_roles(&self.branch_role);
        }
    }
}

/// The exact diff of the setup's branch: production ids 1..9, the branch 4..9 with id 9 changed.
fn assert_fewer_orders(diff: &Value) {
    assert_eq!(diff["state"], "compared", "{diff:#}");
    assert_eq!(
        diff["rows"],
        json!({"only_in_production": 3, "only_in_branch": 0, "changed": 1, "equal": 5}),
        "{diff:#}"
    );
    assert_eq!(
        (diff["production_rows"].as_u64(), diff["branch_rows"].as_u64()),
        (Some(9), Some(6))
    );
}

/// A diff computed once is in the store: asked again, and after a restart, it is served from
/// there (`cached`, the same `computed_at`), even with production's table dropped behind the
/// server's back (a computation would now find no production table); a corrupt entry is
/// computed again, never an error.
fn a_data_diff_is_cached_across_restarts_and_a_corrupt_entry_recomputed(backend: Backend) {
    let mut setup = cache_setup("cache", backend);
    let first = setup.diff("");
    assert_fewer_orders(&first);
    assert_eq!(first["cached"], false, "{first:#}");
    let computed_at = first["computed_at"].as_i64().expect("computed_at");
    let second = setup.diff("");
    assert_eq!(
        (second["cached"].as_bool(), second["computed_at"].as_i64()),
        (Some(true), Some(computed_at))
    );
    assert_eq!(setup.store_sql("SELECT count(*) FROM data_diffs"), "1");

    setup.server.kill();
    setup.server.restart();
    let after_restart = setup.diff("");
    assert_fewer_orders(&after_restart);
    assert_eq!(
        (after_restart["cached"].as_bool(), after_restart["computed_at"].as_i64()),
        (Some(true), Some(computed_at)),
        "a restarted server serves the stored diff: {after_restart:#}"
    );

    // Corrupt entries (cut short; another format) are computed again and replaced.
    for corrupt in ["{\"version\":1,\"production_rows\":", "{\"version\":999}"] {
        setup.store_sql(&format!("UPDATE data_diffs SET diff_json = '{corrupt}'"));
        let recomputed = setup.diff("");
        assert_fewer_orders(&recomputed);
        assert_eq!(recomputed["cached"], false, "{corrupt}: {recomputed:#}");
        let again = setup.diff("");
        assert_eq!(again["cached"], true, "the recomputed diff replaced the corrupt one");
        assert_eq!(again["computed_at"], recomputed["computed_at"]);
    }

    // Without its production table, only the cache can still answer the cached request; a
    // request with other options is computed and sees the table gone.
    setup.drop_production_orders();
    let cached = setup.diff("");
    assert_fewer_orders(&cached);
    assert_eq!(cached["cached"], true);
    let other = setup.diff("?sample=1");
    assert_eq!(
        (other["cached"].as_bool(), other["state"].as_str()),
        (Some(false), Some("new_in_branch")),
        "{other:#}"
    );
}

#[test]
fn a_data_diff_is_cached_across_restarts_and_a_corrupt_entry_recomputed_on_sqlite() {
    a_data_diff_is_cached_across_restarts_and_a_corrupt_entry_recomputed(Backend::Sqlite);
}

#[test]
fn a_data_diff_is_cached_across_restarts_and_a_corrupt_entry_recomputed_on_postgres() {
    if postgres_skipped() {
        return;
    }
    a_data_diff_is_cached_across_restarts_and_a_corrupt_entry_recomputed(Backend::Postgres);
}

/// `against`: while production's table is the one the branch built against, `built-against`
/// compares with it; once production rebuilds it (with other data), that table is gone
/// (production rebuilds in place), so `built-against` and the old run's id compare with the
/// current table and say so, with the current table's exact numbers; the current run's id is
/// that table.
fn a_data_diff_compares_with_the_production_table_asked_for(backend: Backend) {
    let setup = cache_setup("against", backend);
    let built = setup.diff("?against=built-against");
    assert_fewer_orders(&built);
    assert_eq!(
        built["against"],
        json!({"requested": "built-against", "compared": "built-against", "fell_back": false}),
        "{built:#}"
    );
    let old_run = built["production_run"].as_i64().expect("production's run");
    let current = setup.diff("");
    assert_eq!(
        current["against"],
        json!({"requested": "current", "compared": "current", "fell_back": false})
    );
    assert_eq!(setup.diff(&format!("?against={old_run}"))["against"]["fell_back"], false);

    // Production rebuilds orders from changed data: amounts of ids 1..3 doubled, id 10 added.
    let change = "UPDATE raw_orders SET amount = amount * 2 WHERE id <= 3; INSERT INTO raw_orders (id, amount) VALUES (10, 30);";
    match &setup.database {
        Some(database) => {
            psql(&database.0, &change.replace("raw_orders", "shop__prod.raw_orders"));
        }
        None => runtime().block_on(async {
            warehouse(&setup.server)
                .execute_production_script(&production_target().production, change)
                .await
                .expect("change raw_orders")
        }),
    }
    let rebuilt = setup.run_to_success("prod", "key:orders");
    // Production now has ids 1..10; the branch 4..9 with id 9 changed.
    let now_rows = json!({"only_in_production": 4, "only_in_branch": 0, "changed": 1, "equal": 5});
    let current = setup.diff("");
    assert_eq!(
        (current["rows"].clone(), current["production_rows"].as_u64()),
        (now_rows.clone(), Some(10)),
        "{current:#}"
    );
    assert_eq!(current["production_run"].as_i64(), Some(rebuilt));
    let notes = |diff: &Value| -> Vec<String> {
        diff["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    };
    for (query, gone) in [
        ("?against=built-against".to_owned(), format!("production's table the branch was built against (run {old_run}) has been replaced since")),
        (format!("?against={old_run}"), format!("production's table built by run {old_run} has been replaced since")),
    ] {
        let diff = setup.diff(&query);
        assert_eq!((diff["rows"].clone(), diff["production_rows"].as_u64()), (now_rows.clone(), Some(10)), "{query}: {diff:#}");
        assert_eq!(diff["against"]["compared"], "current", "{query}: {diff:#}");
        assert_eq!(diff["against"]["fell_back"], true, "{query}");
        let expected = format!("{gone}: the diff compares with production's current table (run {rebuilt})");
        assert!(notes(&diff).contains(&expected), "{query}: {:#?}", notes(&diff));
        assert!(!notes(&diff).iter().any(|n| n.contains("was rebuilt by run")), "one note, not two: {:#?}", notes(&diff));
    }
    let by_current_run = setup.diff(&format!("?against={rebuilt}"));
    assert_eq!(by_current_run["against"]["fell_back"], false);
    assert_eq!(by_current_run["rows"], now_rows);
    // Refusals: a run that did not build orders, and a value that is none of the three.
    let path =
        |query: &str| format!("/api/v1/deployments/{}/assets/orders/data-diff{query}", setup.name);
    let (status, body) = setup.server.request("GET", &path("?against=999999"), None, None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("run_not_found")), "{body:#}");
    let (status, body) = setup.server.request("GET", &path("?against=yesterday"), None, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body:#}"
    );

    // The CLI says what it compared.
    let output = client(
        &setup.server,
        &["data-diff", "--deployment", &setup.name, "--against", "built-against"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(
            "asked for production's table the branch was built against; compared with as it is now"
        ),
        "{text}"
    );
    assert!(text.contains("by id (declared): 4 removed, 0 added, 1 changed, 5 equal"), "{text}");
    let output =
        client(&setup.server, &["data-diff", "--deployment", &setup.name, "--against", "nope"]);
    assert_eq!(output.status.code(), Some(2), "a usage error: {}", stderr(&output));
}

#[test]
fn a_data_diff_compares_with_the_production_table_asked_for_on_sqlite() {
    a_data_diff_compares_with_the_production_table_asked_for(Backend::Sqlite);
}

#[test]
fn a_data_diff_compares_with_the_production_table_asked_for_on_postgres() {
    if postgres_skipped() {
        return;
    }
    a_data_diff_compares_with_the_production_table_asked_for(Backend::Postgres);
}

/// `offshoot_data_diffs_computed_total` from `/metrics`.
fn diffs_computed(server: &Server) -> u64 {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).build(),
    );
    let mut response = agent
        .get(&format!("{}/metrics", server.url))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("the server answers");
    let text = response.body_mut().read_to_string().expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix("offshoot_data_diffs_computed_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no data diff counter in /metrics:\n{text}"))
}

/// Five branch runs launched back to back: the automatic diffs do not pile up behind them (a
/// pass per run, every asset each time, all at once). Runs finishing during a pass coalesce into
/// one more, a pass stops while a run is queued, and the last pass diffs what the last run
/// built, so the deployment's summaries are then served from the cache.
#[test]
fn automatic_data_diffs_after_back_to_back_runs_coalesce_into_one_final_pass() {
    let dir = TempDir::new("data-diff-auto");
    let names = ["a", "b", "c", "d", "e", "f"];
    let files: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("{n}.sql"), "SELECT id, amount FROM raw_orders\n".to_owned()))
        .collect();
    let assets: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let (server, repo) = seeded_server(&dir, &assets, "");
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(server.wait_for_run(run["id"].as_i64().expect("id"))["status"], "succeeded");
    git(&repo, &["branch", "feature/many-runs", "main"]);
    let edited = "SELECT id, amount + 1 AS amount FROM raw_orders\n";
    let sha = commit_file(&repo, "feature/many-runs", "assets/a.sql", edited, "Edit a");
    let name = create_or_update(&server, "feature/many-runs", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let before = diffs_computed(&server);
    let runs: Vec<i64> = (0..5)
        .map(|_| {
            let run = server
                .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:*"}));
            run["id"].as_i64().expect("id")
        })
        .collect();
    for id in &runs {
        assert_eq!(server.wait_for_run(*id)["status"], "succeeded", "{}", server.log());
    }
    // Until the counter has not moved for two seconds (a minute at most).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut last, mut since) = (diffs_computed(&server), std::time::Instant::now());
    while since.elapsed() < std::time::Duration::from_secs(2) {
        assert!(std::time::Instant::now() < deadline, "the diffs never settled");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = diffs_computed(&server);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
    }
    let computed = last - before;
    // One full pass for the last run, and at most one asset for each run it yielded to.
    assert!(
        computed >= names.len() as u64 && computed <= (names.len() + runs.len()) as u64,
        "{computed} diffs computed for {} assets after {} runs",
        names.len(),
        runs.len()
    );
    // The deployment's summaries (what the page and the pull-request comment show) are the
    // last pass's: served from the cache, nothing computed again.
    let summaries = server.get(&format!("/api/v1/deployments/{name}/data-diffs"));
    let listed: Vec<&str> = summaries["diffs"]
        .as_array()
        .expect("diffs")
        .iter()
        .filter_map(|d| d["asset"].as_str())
        .collect();
    assert_eq!(listed, names, "{summaries:#}");
    assert_eq!(diffs_computed(&server), last, "nothing was left to compute");
}
