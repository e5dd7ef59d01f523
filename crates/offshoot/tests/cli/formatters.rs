//! Change tracking survives formatters: the real `sqlfluff fix` (default rules but ST06, which
//! reorders select columns), `sqlfmt` and `ruff format` (tests/python/requirements.txt) run over
//! copies of the three examples and a generated 300-model project, committed as a branch, and
//! `offshoot diff` reports nothing; a corpus of semantic edits on the same projects is each
//! reported.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Runs a formatter from the Python tools in `repo` (its exit code is not checked: sqlfluff
/// exits 1 when something is left unfixable, which is not this test's business).
fn format(repo: &Path, program: &str, args: &[&str]) {
    let tool = python_tools().join("bin").join(program);
    let output = Command::new(&tool)
        .args(args)
        .current_dir(repo)
        .env("PATH", path_with_python_tools())
        .output()
        .expect("the formatter runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("Traceback"), "{program} crashed: {text}");
}

/// A branch `name` off main with `change` applied and committed; the formatter must change files.
fn branch_with(repo: &Path, name: &str, change: impl FnOnce(&Path)) {
    git(repo, &["checkout", "-q", "-b", name, "main"]);
    change(repo);
    git(repo, &["add", "-A"]);
    let changed = git(repo, &["diff", "--cached", "--name-only"]);
    assert!(!changed.trim().is_empty(), "{name} changed no file");
    git(repo, &["commit", "-q", "-m", name]);
    git(repo, &["checkout", "-q", "main"]);
}

fn diff(repo: &Path, head: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args(["diff", "--repo", repo.to_str().expect("utf-8"), "--base", "main", "--head", head])
        .env("PATH", path_with_python_tools())
        .output()
        .expect("offshoot runs");
    assert!(output.status.success(), "offshoot diff --head {head}: {}", stderr(&output));
    stdout(&output)
}

fn assert_no_changes(repo: &Path, head: &str) {
    let report = diff(repo, head);
    assert!(report.contains("no asset changes"), "{head} is style only, but:\n{report}");
}

/// Each edit (file, from, to) on its own branch off main is reported as a change of `asset`.
fn assert_each_reported(repo: &Path, edits: &[(&str, &str, &str, &str)]) {
    for (index, (file, from, to, asset)) in edits.iter().enumerate() {
        let name = format!("edit-{index}");
        branch_with(repo, &name, |repo| {
            let text = std::fs::read_to_string(repo.join(file)).expect("read");
            assert!(text.contains(from), "{file} has no `{from}`; update this test");
            std::fs::write(repo.join(file), text.replacen(from, to, 1)).expect("write");
        });
        let report = diff(repo, &name);
        assert!(
            report.contains(&format!("CHANGED   {asset}")),
            "`{from}` -> `{to}` in {file} was not reported:\n{report}"
        );
    }
}

#[test]
fn formatting_the_native_example_changes_nothing_and_every_real_edit_counts() {
    python_tools();
    let (_dir, repo) = shop_repo("fmt-shop");
    branch_with(&repo, "sqlfluff", |repo| {
        format(
            repo,
            "sqlfluff",
            &["fix", "--dialect", "sqlite", "--exclude-rules", "ST06", "assets/"],
        )
    });
    branch_with(&repo, "sqlfmt", |repo| format(repo, "sqlfmt", &["assets/"]));
    assert_no_changes(&repo, "sqlfluff");
    assert_no_changes(&repo, "sqlfmt");
    assert_each_reported(
        &repo,
        &[
            ("assets/marts/fct_orders.sql", "100.0", "1000.0", "fct_orders"),
            ("assets/marts/fct_orders.sql", "LEFT JOIN", "JOIN", "fct_orders"),
            (
                "assets/marts/fct_orders.sql",
                "p.order_id, p.customer_id",
                "p.customer_id, p.order_id",
                "fct_orders",
            ),
            (
                "assets/marts/fct_orders.sql",
                "p.customer_id, p.order_date",
                "p.order_date",
                "fct_orders",
            ),
            (
                "assets/marts/fct_orders.sql",
                "fx.currency = p.currency",
                "fx.currency = p.currency AND fx.rate_to_eur > 0",
                "fct_orders",
            ),
        ],
    );
}

#[test]
fn formatting_the_dbt_example_changes_nothing_and_jinja_edits_count() {
    python_tools();
    let dir = TempDir::new("fmt-dbt");
    let repo = dir.0.join("repo");
    example_repo("dbt_shop", &repo);
    branch_with(&repo, "sqlfluff", |repo| {
        format(
            repo,
            "sqlfluff",
            &[
                "fix",
                "--dialect",
                "postgres",
                "--templater",
                "jinja",
                "--exclude-rules",
                "ST06",
                "models/",
            ],
        )
    });
    branch_with(&repo, "sqlfmt", |repo| format(repo, "sqlfmt", &["models/"]));
    assert_no_changes(&repo, "sqlfluff");
    assert_no_changes(&repo, "sqlfmt");
    assert_each_reported(
        &repo,
        &[
            ("models/marts/order_payments.sql", "'paypal'", "'PayPal'", "order_payments"),
            (
                "models/marts/customer_orders.sql",
                "{{ ref('country_codes') }}",
                "{{ ref('country_codes') }} where region is not null",
                "customer_orders",
            ),
            (
                "models/marts/customer_orders.sql",
                "{{ ref('order_payments') }}",
                "{{ ref('stg_orders') }}",
                "customer_orders",
            ),
        ],
    );
}

#[test]
fn formatting_the_dagster_example_changes_nothing_and_a_docstring_is_metadata() {
    python_tools();
    let dir = TempDir::new("fmt-dagster");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    branch_with(&repo, "ruff", |repo| format(repo, "ruff", &["format", "."]));
    assert_no_changes(&repo, "ruff");
    branch_with(&repo, "docstring", |repo| {
        let path = repo.join("dagster_shop/marts.py");
        let text = std::fs::read_to_string(&path).expect("read");
        // daily_revenue has no code_version: its version is derived from its function.
        let edited = text.replacen("the number finance reports", "the figure finance reports", 1);
        assert_ne!(edited, text, "the example's docstring changed; update this test");
        std::fs::write(&path, edited).expect("write");
    });
    let report = diff(&repo, "docstring");
    assert!(
        report.contains("CHANGED   daily_revenue  METADATA") && !report.contains("CODE_VERSION"),
        "{report}"
    );
    assert_each_reported(
        &repo,
        &[(
            "dagster_shop/marts.py",
            "WHERE is_completed = 1",
            "WHERE is_completed = 0",
            "daily_revenue",
        )],
    );
}

/// A 300-model project in ten layers, written the way people write SQL before a formatter:
/// mixed keyword and identifier case, aliases without AS, bare JOIN, `!=`, one-line selects.
fn generate_project(repo: &Path) {
    std::fs::create_dir_all(repo.join("assets")).expect("mkdir");
    let mut manifest = String::from("[project]\nname = \"big\"\ndialect = \"sqlite\"\n");
    for source in 0..10 {
        manifest.push_str(&format!("\n[sources.raw_{source}]\n"));
    }
    std::fs::write(repo.join("offshoot.toml"), manifest).expect("manifest");
    for layer in 1..=10 {
        for index in 0..30 {
            let upstream = |offset: usize| {
                if layer == 1 {
                    format!("raw_{}", (index + offset) % 10)
                } else {
                    format!("m_{}_{}", layer - 1, (index + offset) % 30)
                }
            };
            let (a, b) = (upstream(0), upstream(7));
            let sql = match index % 5 {
                0 => format!("SELECT A.Id, a.Amount * 2 AS Doubled, b.Amount FROM {a} A JOIN {b} B ON b.id = a.id WHERE (a.amount != 0)\n"),
                1 => format!("select id, sum(amount) as amount, COUNT(*) n from {a} group by id having (sum(amount) > 10)\n"),
                2 => format!("SELECT id, amount, CASE WHEN amount > 100 THEN 'big' ELSE 'small' END AS size FROM {a} LEFT OUTER JOIN {b} USING (id)\n"),
                3 => format!("select id, amount from {a} union all select id, amount from {b} order by id desc\n"),
                _ => format!("WITH x AS (SELECT id, amount, \"Label\" FROM {a}) SELECT x.id, (x.amount + 1) AS amount, x.\"Label\" FROM x INNER JOIN {b} y ON (x.id = y.id)\n"),
            };
            std::fs::write(repo.join(format!("assets/m_{layer}_{index}.sql")), sql).expect("asset");
        }
    }
}

#[test]
fn formatting_a_generated_300_model_project_changes_nothing() {
    python_tools();
    let dir = TempDir::new("fmt-300");
    let repo = dir.0.join("repo");
    generate_project(&repo);
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "300 models"]);
    branch_with(&repo, "sqlfluff", |repo| {
        format(
            repo,
            "sqlfluff",
            &[
                "fix",
                "--dialect",
                "sqlite",
                "--exclude-rules",
                "ST06",
                "--processes",
                "2",
                "assets/",
            ],
        )
    });
    branch_with(&repo, "sqlfmt", |repo| format(repo, "sqlfmt", &["assets/"]));
    assert_no_changes(&repo, "sqlfluff");
    assert_no_changes(&repo, "sqlfmt");
    assert_each_reported(
        &repo,
        &[
            ("assets/m_5_3.sql", "order by id desc", "order by id asc", "m_5_3"),
            ("assets/m_5_3.sql", "union all", "union", "m_5_3"),
            ("assets/m_5_4.sql", "\"Label\" FROM", "\"label\" FROM", "m_5_4"),
            ("assets/m_5_2.sql", "LEFT OUTER JOIN", "JOIN", "m_5_2"),
            ("assets/m_5_0.sql", "a.Amount * 2", "a.Amount * 3", "m_5_0"),
            ("assets/m_5_4.sql", "(x.amount + 1)", "x.amount + 1 * 2", "m_5_4"),
        ],
    );
}

/// Both sides of every diff are loaded by the running server (derived versions are never
/// stored), so an upgrade whose canonical rules differ marks nothing changed: a server restarted
/// "upgraded" (other rules) reports the same changes for a docs-only push as before.
#[test]
fn an_upgrade_that_changes_the_canonical_rules_marks_nothing_changed() {
    let (dir, repo) = shop_repo("canonical-upgrade");
    let mut server = Server::start(&dir.0, &repo, "");
    crate::server::wait_for_prod(&server, &repo);
    let reasons = |server: &Server, name: &str| -> Vec<String> {
        let changes = server.get(&format!("/api/v1/deployments/{name}/changes"));
        changes["changes"]["assets"]
            .as_array()
            .expect("assets")
            .iter()
            .map(|c| format!("{} {}", c["key"], c["reasons"]))
            .collect()
    };
    let first = git(&repo, &["rev-parse", "feature/eur"]);
    let name = crate::server::create_or_update(&server, "feature/eur", &first);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == first);
    let before = reasons(&server, &name);
    assert!(!before.is_empty());
    server
        .restart_with_env(&[("OFFSHOOT_TEST_CANONICAL_VERSION", "sql-canonical-from-the-future")]);
    let docs =
        crate::server::commit_file(&repo, "feature/eur", "NOTES.md", "Only words.\n", "Docs only");
    crate::server::create_or_update(&server, "feature/eur", &docs);
    server.wait_for_deployment(&name, "ready at the docs commit", |d| serving_commit(d) == docs);
    assert_eq!(reasons(&server, &name), before, "the upgrade changed no asset's reasons");
}
