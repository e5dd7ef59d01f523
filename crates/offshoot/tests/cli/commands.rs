//! The local commands: init, validate, diff, demo.

use expect_test::expect;

use crate::support::*;

#[test]
fn diff_against_merge_base_ignores_later_commits_on_base() {
    let (_dir, repo) = shop_repo("merge-base");
    let repo = repo.to_str().expect("utf-8 path");
    let output = offshoot(&["diff", "--repo", repo, "--base", "main", "--head", "feature/eur"]);
    assert!(output.status.success(), "{}", stderr(&output));
    expect![[r#"
        feature/eur (<sha>) against main at merge-base (<sha>)
          CHANGED   customer_lifetime_value  TAGS
                      tag changed tier: silver -> gold
          CHANGED   fct_orders  CODE_VERSION
                      code version derived <sha> -> derived <sha>
                      --- base/fct_orders
                      +++ head/fct_orders
                      @@ -2,3 +2,4 @@
                              round(p.amount_cents / 100.0 * coalesce(fx.rate_to_eur, 1.0), 2) AS amount_eur
                       FROM int_order_payments AS p
                       LEFT JOIN fx_rates AS fx ON fx.currency = p.currency
                      +WHERE p.amount_cents > 0
          REMOVED   orders_by_country  REMOVED
          NEW       weekly_revenue  NEW
          IMPACTED  daily_revenue  via fct_orders -> daily_revenue
          IMPACTED  dim_customers  via fct_orders -> dim_customers
        1 new, 2 changed, 1 removed, 2 impacted downstream
    "#]]
    .assert_eq(&redact(&stdout(&output)));

    // Against the tip, main's later stg_payments edit shows up as if the branch had made it.
    let output = offshoot(&[
        "diff",
        "--repo",
        repo,
        "--base",
        "main",
        "--head",
        "feature/eur",
        "--against",
        "tip",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["against"], "tip");
    assert_eq!(json["base"]["commit"], json["base"]["tip"]);
    let stg = json["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .find(|a| a["key"] == "stg_payments")
        .expect("stg_payments");
    assert_eq!(stg["reasons"], serde_json::json!(["CODE_VERSION"]));
}

#[test]
fn json_shape_is_stable() {
    let (_dir, repo) = shop_repo("json");
    let repo = repo.to_str().expect("utf-8 path");
    let output = offshoot(&[
        "diff",
        "--repo",
        repo,
        "--base",
        "main",
        "--head",
        "feature/eur",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_ne!(json["base"]["commit"], json["base"]["tip"], "merge-base differs from main's tip");
    for field in ["commit", "tip"] {
        json["base"][field] = "<sha>".into();
    }
    json["head"]["commit"] = "<sha>".into();
    let fct = json["assets"]
        .as_array_mut()
        .expect("assets")
        .iter_mut()
        .find(|a| a["key"] == "fct_orders")
        .expect("fct_orders");
    for field in ["old_version", "new_version"] {
        fct["details"]["code"][field] = "<version>".into();
    }
    expect![[r#"
        {
          "against": "merge-base",
          "assets": [
            {
              "details": {
                "tags": {
                  "added": {},
                  "changed": {
                    "tier": {
                      "new": "gold",
                      "old": "silver"
                    }
                  },
                  "removed": {}
                }
              },
              "key": "customer_lifetime_value",
              "reasons": [
                "TAGS"
              ]
            },
            {
              "details": {
                "code": {
                  "derived": true,
                  "diff": "--- base/fct_orders\n+++ head/fct_orders\n@@ -2,3 +2,4 @@\n        round(p.amount_cents / 100.0 * coalesce(fx.rate_to_eur, 1.0), 2) AS amount_eur\n FROM int_order_payments AS p\n LEFT JOIN fx_rates AS fx ON fx.currency = p.currency\n+WHERE p.amount_cents > 0\n",
                  "new_version": "<version>",
                  "old_version": "<version>"
                }
              },
              "key": "fct_orders",
              "reasons": [
                "CODE_VERSION"
              ]
            },
            {
              "details": {},
              "key": "orders_by_country",
              "reasons": [
                "REMOVED"
              ]
            },
            {
              "details": {},
              "key": "weekly_revenue",
              "reasons": [
                "NEW"
              ]
            }
          ],
          "base": {
            "commit": "<sha>",
            "rev": "main",
            "tip": "<sha>"
          },
          "head": {
            "commit": "<sha>",
            "rev": "feature/eur"
          },
          "impacted": [
            {
              "key": "daily_revenue",
              "path": [
                "fct_orders",
                "daily_revenue"
              ]
            },
            {
              "key": "dim_customers",
              "path": [
                "fct_orders",
                "dim_customers"
              ]
            }
          ],
          "summary": {
            "changed": 2,
            "impacted": 2,
            "new": 1,
            "removed": 1
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&json).expect("json"));
}

#[test]
fn markdown_is_ready_for_a_pull_request() {
    let (_dir, repo) = shop_repo("markdown");
    let repo = repo.to_str().expect("utf-8 path");
    let output = offshoot(&[
        "diff",
        "--repo",
        repo,
        "--base",
        "main",
        "--head",
        "feature/eur",
        "--format",
        "markdown",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("| `fct_orders` | Changed in branch: CODE_VERSION |"), "{text}");
    assert!(text.contains("| `weekly_revenue` | New in branch |"), "{text}");
    assert!(
        text.contains("**Impacted downstream (2)**: `daily_revenue`, `dim_customers`"),
        "{text}"
    );
    assert!(text.contains("```diff\n--- base/fct_orders"), "{text}");
}

#[test]
fn select_prints_the_selected_keys() {
    let (_dir, repo) = shop_repo("select");
    let repo = repo.to_str().expect("utf-8 path");
    let output = offshoot(&[
        "diff",
        "--repo",
        repo,
        "--base",
        "main",
        "--head",
        "feature/eur",
        "--select",
        "changed_in_branch:ANY+",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    expect![[r#"
        customer_lifetime_value
        daily_revenue
        dim_customers
        fct_orders
        weekly_revenue
    "#]]
    .assert_eq(&stdout(&output));
    let output = offshoot(&[
        "diff",
        "--repo",
        repo,
        "--base",
        "main",
        "--head",
        "feature/eur",
        "--select",
        "+key:fct_orders and group:staging",
    ]);
    expect![[r#"
        stg_orders
        stg_payments
    "#]]
    .assert_eq(&stdout(&output));
    let output = offshoot(&[
        "diff",
        "--repo",
        repo,
        "--base",
        "main",
        "--head",
        "feature/eur",
        "--select",
        "changed_in_branch:CODE and",
    ]);
    assert_eq!(output.status.code(), Some(1));
    expect![[r#"
        error: selection error at column 19: unknown change reason `CODE`; use ANY, IMPACTED or one of NEW, REMOVED, CODE_VERSION, DEPENDENCIES, PARTITIONS_DEFINITION, TAGS, METADATA
          changed_in_branch:CODE and
                            ^
    "#]]
    .assert_eq(&stderr(&output));
}

#[test]
fn validate_commits_and_the_working_directory() {
    let (_dir, repo) = shop_repo("validate");
    let repo_str = repo.to_str().expect("utf-8 path");
    let output = offshoot(&["validate", "--repo", repo_str, "--rev", "feature/eur"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("9 SQL assets, 1 command asset, 3 sources"),
        "{}",
        stdout(&output)
    );

    let output = offshoot(&["validate", "--repo", repo_str, "--rev", "broken"]);
    assert_eq!(output.status.code(), Some(1));
    let redacted = redact(&stderr(&output));
    expect![[r#"
        assets/marts/broken.sql:2:1: error: SQL syntax error: Expected: table name, found: WHERE
          = hint: fix the query; `offshoot validate` re-checks every file
        assets/marts/dangling.sql:1:15: error: `missing_table` is not an asset, a source or a declared external table
          = hint: add an asset file for it, declare it under [sources.missing_table] in offshoot.toml, or list it in `external`

        2 problem(s) in broken (<sha>)
    "#]]
    .assert_eq(&redacted);

    // Markdown (for a pull request or a CI summary) is the output: stdout, nothing on stderr.
    let output =
        offshoot(&["validate", "--repo", repo_str, "--rev", "broken", "--format", "markdown"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "");
    let markdown = redact(&stdout(&output));
    assert!(markdown.starts_with("**2 problems in `broken (<sha>)`**\n\n- `assets/marts/broken.sql:2:1`: SQL syntax error"), "{markdown}");
    assert!(markdown.contains("\n  - hint: add an asset file for it"), "{markdown}");
    let output =
        offshoot(&["validate", "--repo", repo_str, "--rev", "feature/eur", "--format", "markdown"]);
    assert!(stdout(&output).starts_with("**ok**: `feature/eur ("), "{}", stdout(&output));

    // Uncommitted edits count in the working directory.
    std::fs::write(repo.join("assets/marts/wip.sql"), "SELECT * FROM fct_order").expect("write");
    let output = offshoot(&["validate", "--repo", repo_str]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("assets/marts/wip.sql:1:15: error: `fct_order` is not an asset"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("did you mean `fct_orders`?"), "{}", stderr(&output));

    let output = offshoot(&["diff", "--repo", repo_str, "--base", "main", "--head", "broken"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("head broken (") && stderr(&output).contains("has 2 problem(s)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn init_scaffolds_a_valid_project_and_never_overwrites() {
    let dir = TempDir::new("init");
    let project = dir.0.join("pipeline");
    let path = project.to_str().expect("utf-8 path");
    let output = offshoot(&["init", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = offshoot(&["validate", "--repo", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("2 SQL assets, 0 command assets, 1 source"),
        "{}",
        stdout(&output)
    );
    let output = offshoot(&["init", path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("offshoot.toml already exists"), "{}", stderr(&output));
}

#[test]
fn usage_errors_and_bad_revisions() {
    assert_eq!(offshoot(&["diff", "--base", "main"]).status.code(), Some(2));
    assert_eq!(offshoot(&["frobnicate"]).status.code(), Some(2));
    let (_dir, repo) = shop_repo("revs");
    let repo = repo.to_str().expect("utf-8 path");
    for rev in ["no-such-branch", "--upload-pack=evil", "main;rm -rf /", "ma\u{308}in"] {
        let head = format!("--head={rev}");
        let output = offshoot(&["diff", "--repo", repo, "--base", "main", &head]);
        assert_eq!(output.status.code(), Some(1), "{rev}");
        assert!(stderr(&output).contains("unknown revision"), "{rev}: {}", stderr(&output));
    }
}

#[test]
fn demo_deploys_and_materializes_prod_and_a_feature_branch() {
    let dir = TempDir::new("demo");
    let target = dir.0.join("demo");
    let path = target.to_str().expect("utf-8 path");
    let output = offshoot(&["demo", "--dir", path, "--listen", "127.0.0.1:0", "--exit"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("`changed_in_branch:ANY+` succeeded: fct_orders"), "{text}");
    assert!(text.contains("prod: run 1 `key:*` succeeded"), "{text}");
    assert!(text.contains("NEW       weekly_revenue"), "{text}");
    assert!(text.contains("REMOVED   orders_by_country"), "{text}");
    assert!(!text.contains("stg_orders  "), "formatting-only edits are not changes: {text}");
    let output = offshoot(&["validate", "--repo", path, "--rev", "feature/eur-revenue"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn init_adds_offshoot_to_existing_dbt_and_dagster_projects() {
    python_tools();
    let dir = TempDir::new("init-locations");
    let with_tools = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_offshoot"))
            .args(args)
            .env("PATH", path_with_python_tools())
            .output()
            .expect("offshoot runs")
    };
    // A Dagster project: the module is found by its definitions.py.
    let dagster = dir.0.join("dagster");
    example_repo("dagster_shop", &dagster);
    std::fs::remove_file(dagster.join("offshoot.toml")).expect("rm");
    let path = dagster.to_str().expect("utf-8");
    let output = offshoot(&["init", "--location", "dagster", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = std::fs::read_to_string(dagster.join("offshoot.toml")).expect("written");
    assert!(
        manifest.contains("type = \"dagster\"\nmodule = \"dagster_shop.definitions\"\n"),
        "{manifest}"
    );
    let output = with_tools(&["validate", "--repo", path]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("7 dagster assets, 2 sources"), "{}", stdout(&output));

    // A dbt project one folder down: project_dir is found by its dbt_project.yml.
    let repo = dir.0.join("dbt");
    example_repo("dbt_shop", &repo.join("transform"));
    std::fs::remove_file(repo.join("transform/offshoot.toml")).expect("rm");
    let path = repo.to_str().expect("utf-8");
    let output = offshoot(&["init", "--location", "dbt", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read_to_string(repo.join("offshoot.toml"))
        .expect("written")
        .contains("project_dir = \"transform\""));
    let output = with_tools(&["validate", "--repo", path, "--format", "json"]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        (report["location"].as_str(), report["tool_assets"].as_u64(), report["sources"].as_u64()),
        (Some("dbt"), Some(8), Some(3)),
        "{report}"
    );
    assert!(
        !repo.join("transform/target").exists() && !repo.join("transform/logs").exists(),
        "validate leaves no dbt artifacts in the project"
    );

    // Dagster's project template: the package under src/; `working_directory` follows.
    let template = dir.0.join("template");
    std::fs::create_dir_all(template.join("src/pkg")).expect("mkdir");
    std::fs::write(template.join("src/pkg/__init__.py"), "").expect("write");
    std::fs::write(template.join("src/pkg/definitions.py"), "").expect("write");
    let path = template.to_str().expect("utf-8");
    let output = offshoot(&["init", "--location", "dagster", "--module", "pkg.definitions", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = std::fs::read_to_string(template.join("offshoot.toml")).expect("written");
    assert!(
        manifest.contains("module = \"pkg.definitions\"\nworking_directory = \"src\"\n"),
        "{manifest}"
    );
    std::fs::remove_file(template.join("offshoot.toml")).expect("rm");
    let output = offshoot(&["init", "--location", "dagster", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    let found = std::fs::read_to_string(template.join("offshoot.toml")).expect("written");
    assert_eq!(found, manifest, "found by looking in src/ too");

    // A dbt project with packages: `dbt deps` prepares each checkout.
    let packaged = dir.0.join("packaged");
    std::fs::create_dir_all(&packaged).expect("mkdir");
    std::fs::write(packaged.join("dbt_project.yml"), "name: p\n").expect("write");
    std::fs::write(packaged.join("packages.yml"), "packages: []\n").expect("write");
    let output = offshoot(&["init", "--location", "dbt", packaged.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = std::fs::read_to_string(packaged.join("offshoot.toml")).expect("written");
    assert!(manifest.contains("prepare_command = \"dbt deps\"\n"), "{manifest}");

    // Broken and unknown input are refused with the reason.
    let output =
        offshoot(&["init", "--location", "airflow", dir.0.join("x").to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("unknown --location `airflow`"), "{}", stderr(&output));
}
