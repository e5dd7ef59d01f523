//! Branch processes cannot write production (issue: trust boundary). A branch's command asset,
//! a Dagster asset (at import and at materialization) and, on PostgreSQL, a command using the
//! `PG*` variables it is given all try to write production, through what they are handed, a
//! guessed path, `sqlite3` and `psql`; every attempt is refused by the kernel (Landlock) or the
//! database (the branch's own login role), and production's bytes are unchanged.

use std::path::Path;

use serde_json::json;

use crate::server::{
    branch_target, commit_file, create_or_update, psql, wait_for_prod, warehouse, Database,
};
use crate::support::*;

/// Tries each write a hostile branch would, printing `refused: <what>` or `WROTE: <what>`, then
/// builds its own table `attack` (so the step succeeds only if its own schema stays writable).
const SQLITE_ATTACK: &str = r#"set -u
prod="${OFFSHOOT_PRODUCTION_URL#sqlite://}"
own="${OFFSHOOT_WAREHOUSE_URL#sqlite://}"
root="$(dirname "$(dirname "$own")")"
guess="$root/shop__prod.db"
store="$(dirname "$root")/offshoot.db"
try() { if sh -c "$2" >/dev/null 2>&1; then echo "WROTE: $1"; else echo "refused: $1"; fi; }
try given-url-python "python3 -c \"import sqlite3; c = sqlite3.connect('$prod'); c.execute('CREATE TABLE planted (x)'); c.commit()\""
try guessed-path-sqlite3 "sqlite3 '$guess' 'CREATE TABLE planted (x)'"
try hot-journal "echo x > '$prod-journal'"
try truncate ": > '$prod'"
try remove "rm '$prod'"
try rename "mv '$prod' '$root/stolen.db'"
try metadata-store "sqlite3 '$store' 'DELETE FROM deployments'"
try checkout "echo x > planted.txt"
try tmp "echo x > /tmp/offshoot-planted-$$"
echo x > "$TMPDIR/scratch" && echo "writable: own TMPDIR"
sqlite3 "$own" "CREATE TABLE attack AS SELECT 1 AS x"
"#;

const ATTACK_ASSET: &str = "command = \"sh scripts/attack.sh\"\ninputs = [\"scripts/attack.sh\"]\n";

fn sha256_of(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or("").to_owned()
}

fn step_log(run: &serde_json::Value, key: &str) -> String {
    run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["asset_key"] == key)
        .map(|s| s["log"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

fn assert_all_refused(log: &str, expected: &[&str]) {
    assert!(!log.contains("WROTE"), "a branch process wrote outside its folders:\n{log}");
    for what in expected {
        assert!(log.contains(&format!("refused: {what}")), "`{what}` was not tried:\n{log}");
    }
}

#[test]
fn a_branch_command_asset_cannot_write_production_on_the_embedded_warehouse() {
    assert!(
        offshoot_location::sandbox_support().is_ok(),
        "this machine's kernel has Landlock; the test needs it"
    );
    let (dir, repo) = shop_repo("confine-command");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    crate::server::seed_production(&server);
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let production =
        warehouse(&server).production_file(&crate::server::production_target().production);
    let before = sha256_of(&production);

    git(&repo, &["branch", "attack", "main"]);
    commit_file(&repo, "attack", "scripts/attack.sh", SQLITE_ATTACK, "Attack script");
    let sha =
        commit_file(&repo, "attack", "assets/ingest/attack.toml", ATTACK_ASSET, "Attack asset");
    let name = create_or_update(&server, "attack", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:attack"}));
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    let log = step_log(&run, "attack");
    assert_eq!(
        run["status"],
        "succeeded",
        "the branch still writes its own file: {run:#}\n{}",
        server.log()
    );
    assert_all_refused(
        &log,
        &[
            "given-url-python",
            "guessed-path-sqlite3",
            "hot-journal",
            "truncate",
            "remove",
            "rename",
            "metadata-store",
            "checkout",
            "tmp",
        ],
    );
    assert!(log.contains("writable: own TMPDIR"), "its own TMPDIR is writable:\n{log}");
    assert_eq!(sha256_of(&production), before, "production's file is byte for byte unchanged");
    assert!(!Path::new(&format!("{}-journal", production.display())).exists());
    assert_eq!(
        warehouse_rows(&warehouse(&server).file_of(&branch_target(&name)), "SELECT x FROM attack"),
        ["1"]
    );

    // Production's own command assets still write production.
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:fx_rates"}));
    assert_eq!(
        server.wait_for_run(run["id"].as_i64().expect("id"))["status"],
        "succeeded",
        "{}",
        server.log()
    );
    assert!(server.log().contains("confined with Landlock"), "start-up says so: {}", server.log());
}

fn warehouse_rows(file: &Path, sql: &str) -> Vec<String> {
    let output =
        std::process::Command::new("sqlite3").arg(file).arg(sql).output().expect("sqlite3");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// Code that runs when Dagster imports the definitions (every load, any commit) and when the
/// asset materializes: both try to write production's file; the asset records what happened.
const DAGSTER_ATTACK: &str = r#"

import os as _os
import sqlite3 as _sqlite3


def _try_write_production(label):
    url = _os.environ.get("OFFSHOOT_PRODUCTION_URL") or _os.environ.get("OFFSHOOT_WAREHOUSE_URL", "")
    path = url.removeprefix("sqlite://")
    try:
        connection = _sqlite3.connect(path)
        connection.execute(f"CREATE TABLE planted_{label} (x)")
        connection.commit()
        return f"WROTE: {label}"
    except Exception:
        return f"refused: {label}"


_AT_IMPORT = _try_write_production("import")


@dg.asset(group_name="marts", kinds={"python"})
def attack(warehouse: Warehouse) -> dg.MaterializeResult:
    """Tries to write production from a branch."""
    results = [_AT_IMPORT, _try_write_production("materialize")]
    rows = warehouse.load_rows("attack", [("result", "TEXT")], [(r,) for r in results])
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})
"#;

#[test]
fn a_branch_dagster_asset_cannot_write_production_at_import_or_materialization() {
    python_tools();
    let dir = TempDir::new("confine-dagster");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(
        server.wait_for_run(run["id"].as_i64().expect("id"))["status"],
        "succeeded",
        "{}",
        server.log()
    );
    let production =
        warehouse(&server).production_file(&crate::server::production_target().production);
    let before = sha256_of(&production);

    git(&repo, &["branch", "attack", "main"]);
    let marts = std::fs::read_to_string(repo.join("dagster_shop/marts.py")).expect("read");
    let sha =
        commit_file(&repo, "attack", "dagster_shop/marts.py", &(marts + DAGSTER_ATTACK), "Attack");
    let name = create_or_update(&server, "attack", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    assert_eq!(
        sha256_of(&production),
        before,
        "loading the branch's definitions wrote nothing to production"
    );
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:attack"}));
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    let results = warehouse_rows(
        &warehouse(&server).file_of(&branch_target(&name)),
        "SELECT result FROM attack ORDER BY result",
    );
    // At import in the run, the variable names the branch's own file (allowed); at load time it
    // named production's, refused; at materialization production's URL is refused.
    assert!(results.contains(&"refused: materialize".to_owned()), "{results:?}");
    assert!(
        !results.iter().any(|r| r.contains("WROTE") && r.contains("materialize")),
        "{results:?}"
    );
    assert_eq!(sha256_of(&production), before, "production's file is byte for byte unchanged");
    let tables =
        warehouse_rows(&production, "SELECT name FROM sqlite_master WHERE name LIKE 'planted%'");
    assert!(tables.is_empty(), "{tables:?}");
}

/// On PostgreSQL a branch command logs in as its branch's own role: `psql` with the `PG*`
/// variables it is given, a guessed server login, and SQL through the URL all fail to write
/// production, and the server's credentials are not in its environment.
const POSTGRES_ATTACK: &str = r#"set -u
try() { if sh -c "$2" >/dev/null 2>&1; then echo "WROTE: $1"; else echo "refused: $1"; fi; }
try pg-variables "psql -X -v ON_ERROR_STOP=1 -c 'CREATE TABLE shop__prod.planted (x int)'"
try url "psql -X -v ON_ERROR_STOP=1 \"$OFFSHOOT_WAREHOUSE_URL\" -c 'DELETE FROM shop__prod.fct_orders'"
try reset-role "psql -X -v ON_ERROR_STOP=1 -c 'RESET ROLE; DROP TABLE shop__prod.fct_orders'"
try internal-key "psql -X -v ON_ERROR_STOP=1 -c 'SELECT key FROM offshoot_internal.login_key'"
env | grep -q '^PGUSER=postgres$' && echo "WROTE: server-login-in-env" || echo "refused: server-login-in-env"
psql -X -v ON_ERROR_STOP=1 -q -c "CREATE TABLE \"$OFFSHOOT_SCHEMA\".attack AS SELECT current_user::text AS who"
"#;

#[test]
fn a_branch_command_on_postgres_logs_in_as_its_own_role_and_cannot_write_production() {
    if postgres_skipped() {
        return;
    }
    let database = Database(format!("offshoot_confine_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let dir = TempDir::new("confine-postgres");
    let repo = dir.0.join("repo");
    native_repo(
        &repo,
        "postgres",
        &["raw_orders"],
        &[("fct_orders.sql", "SELECT id, amount FROM raw_orders WHERE amount > 0\n")],
    );
    let role = format!("offshoot_branch_cf_{}", std::process::id());
    let server = Server::start(
        &dir.0,
        &repo,
        &format!("warehouse_url = \"{url}\"\nbranch_role = \"{role}\""),
    );
    wait_for_prod(&server, &repo);
    psql(&database.0, "CREATE TABLE shop__prod.raw_orders AS SELECT g AS id, g * 3 AS amount FROM generate_series(0, 9) AS g");
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(
        server.wait_for_run(run["id"].as_i64().expect("id"))["status"],
        "succeeded",
        "{}",
        server.log()
    );
    let checksum = || {
        psql(
            &database.0,
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM shop__prod.fct_orders t",
        )
    };
    let before = checksum();

    git(&repo, &["branch", "attack", "main"]);
    commit_file(&repo, "attack", "scripts/attack.sh", POSTGRES_ATTACK, "Attack script");
    let sha =
        commit_file(&repo, "attack", "assets/ingest/attack.toml", ATTACK_ASSET, "Attack asset");
    let name = create_or_update(&server, "attack", &sha);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:attack"}));
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    assert_all_refused(
        &step_log(&run, "attack"),
        &["pg-variables", "url", "reset-role", "internal-key", "server-login-in-env"],
    );
    assert_eq!(checksum(), before, "production is unchanged");
    let schema = branch_target(&name).schema;
    let who = psql(&database.0, &format!("SELECT who FROM \"{schema}\".attack"));
    assert!(
        who.trim().starts_with(&format!("{role}_")),
        "the command ran as the branch's own login: {who}"
    );

    // Closing drops the branch's schema and its login role.
    let closed = server.post(&format!("/api/v1/deployments/{name}/close"), json!({}));
    assert!(closed.get("error").is_none(), "{closed:#}");
    let started = std::time::Instant::now();
    while psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{}'", who.trim()),
    )
    .trim()
        != "0"
    {
        assert!(
            started.elapsed().as_secs() < 30,
            "the branch login was not dropped\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(server);
    psql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", database.0));
    crate::server::drop_branch_roles(&role);
}
