//! Schedules against the real server with a frozen clock (`OFFSHOOT_DEBUG_CLOCK_FILE`, debug
//! builds only): production ticks, a time zone, catch-up once after downtime, a tick skipped
//! while the previous run still runs, branch deployments off until switched on, a tick now, the
//! roles; on SQLite, and on PostgreSQL with two servers sharing the store (each tick once).

use std::path::Path;

use serde_json::{json, Value};

use crate::server::{
    client, commit_file, create_or_update, drop_branch_roles, psql, wait_for_prod, Database,
};
use crate::support::*;

const READ: &str = "schedules-read-token-0123";
const DEPLOY: &str = "schedules-deploy-token-0123";

/// Unix ms of an RFC 3339 instant (UTC, `Z`).
fn at(text: &str) -> i64 {
    let output = std::process::Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .expect("date runs");
    let seconds: i64 = String::from_utf8_lossy(&output.stdout).trim().parse().expect("seconds");
    seconds * 1000
}

struct Clock(std::path::PathBuf);

impl Clock {
    fn set(&self, text: &str) {
        // Written aside and renamed: the server never reads half a number.
        let aside = self.0.with_extension("tmp");
        std::fs::write(&aside, at(text).to_string()).expect("write the clock");
        std::fs::rename(&aside, &self.0).expect("move the clock");
    }
}

fn repository(repo: &Path, dialect: &str) {
    std::fs::create_dir_all(repo.join("assets")).expect("mkdir");
    std::fs::write(
        repo.join("offshoot.toml"),
        format!(
            "[project]\nname = \"shop\"\ndialect = \"{dialect}\"\n\n\
             [[schedules]]\nname = \"hourly\"\ncron = \"0 * * * *\"\nselection = \"key:orders\"\n\n\
             [[schedules]]\nname = \"evening\"\ncron = \"0 18 * * *\"\ntimezone = \"Europe/Berlin\"\nselection = \"key:slow_export\"\n"
        ),
    )
    .expect("manifest");
    std::fs::write(repo.join("assets/orders.sql"), "SELECT 1 AS id, 10 AS amount\n")
        .expect("asset");
    std::fs::write(repo.join("assets/slow_export.toml"), "command = \"sleep 120\"\n")
        .expect("asset");
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "Orders on a schedule"]);
}

fn config(dir: &Path, repo: &Path, extra: &str) -> String {
    format!(
        "data_dir = {data:?}\nlisten = \"127.0.0.1:0\"\nschedule_check_interval_ms = 100\n\
         api_tokens = [{TOKEN:?}, {{ secret = {READ:?}, role = \"read\" }}, {{ secret = {DEPLOY:?}, role = \"deploy\" }}]\n\
         {extra}\n[[repositories]]\nname = \"shop\"\nproduction_branch = \"main\"\npath = {repo:?}\n",
        data = dir.join("data").to_str().expect("utf-8 path"),
        repo = repo.to_str().expect("utf-8 path"),
    )
}

fn schedule(server: &Server, deployment: &str, name: &str) -> Value {
    let schedules = server.get(&format!("/api/v1/deployments/{deployment}/schedules"));
    schedules
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no schedule {name} in {schedules:#}"))
        .clone()
}

/// Waits until the schedule's listing satisfies `check`.
fn wait_for_schedule(
    server: &Server,
    deployment: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let found = schedule(server, deployment, name);
        if check(&found) {
            return found;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "{deployment}/{name}: never {what}: {found:#}\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The tick at `tick_at` (scheduled, not manual), once it is no longer `claimed`.
fn wait_for_tick(server: &Server, deployment: &str, name: &str, tick_at: i64) -> Value {
    let found = wait_for_schedule(server, deployment, name, "ticked", |s| {
        ticks(s)
            .iter()
            .any(|t| t["tick_at"] == tick_at && t["manual"] == false && t["status"] != "claimed")
    });
    ticks(&found)
        .into_iter()
        .find(|t| t["tick_at"] == tick_at && t["manual"] == false)
        .expect("found")
}

/// [`wait_for_tick`] for a tick that starts a run, and its run to finish: the next tick of the
/// schedule is then not skipped, however slow the machine.
fn wait_for_run_of_tick(server: &Server, deployment: &str, name: &str, tick_at: i64) -> Value {
    let tick = wait_for_tick(server, deployment, name, tick_at);
    assert_eq!(tick["status"], "started", "{tick:#}");
    run_of(server, &tick)
}

fn ticks(schedule: &Value) -> Vec<Value> {
    schedule["ticks"].as_array().cloned().unwrap_or_default()
}

/// (tick time, manual, status, missed), newest first.
fn summary(schedule: &Value) -> Vec<(i64, bool, String, u64)> {
    ticks(schedule)
        .iter()
        .map(|t| {
            (
                t["tick_at"].as_i64().expect("tick_at"),
                t["manual"].as_bool().expect("manual"),
                t["status"].as_str().expect("status").to_owned(),
                t["missed"].as_u64().expect("missed"),
            )
        })
        .collect()
}

fn run_of(server: &Server, tick: &Value) -> Value {
    let id = tick["run_id"].as_i64().unwrap_or_else(|| panic!("a run: {tick:#}"));
    server.wait_for_run(id)
}

fn started(t: i64, missed: u64) -> (i64, bool, String, u64) {
    (t, false, "started".to_owned(), missed)
}

/// The whole story on `servers` (the first is asked; all share the clock and the store).
fn story(servers: &mut [Server], clock: &Clock, repo: &Path) {
    let server = &servers[0];
    wait_for_prod(server, repo);
    // Production's schedules are on; each is owed from when the scheduler first saw it.
    let hourly = wait_for_schedule(server, "prod", "hourly", "seen", |s| s["owed_since"].is_i64());
    assert_eq!(hourly["owed_since"], at("2026-01-10T12:10:00Z"));
    assert_eq!(
        (&hourly["enabled"], &hourly["cron"], &hourly["timezone"], &hourly["selection"]),
        (&json!(true), &json!("0 * * * *"), &json!("UTC"), &json!("key:orders"))
    );
    assert_eq!(hourly["next_tick_at"], at("2026-01-10T13:00:00Z"));
    assert_eq!(hourly["defined_in"], "offshoot.toml:5");
    let evening =
        wait_for_schedule(server, "prod", "evening", "seen", |s| s["owed_since"].is_i64());
    assert_eq!(evening["next_tick_at"], at("2026-01-10T17:00:00Z"), "18:00 in Berlin is 17:00 UTC");

    // A tick: a production run of the selection.
    clock.set("2026-01-10T13:00:05Z");
    let tick = wait_for_tick(server, "prod", "hourly", at("2026-01-10T13:00:00Z"));
    let run = run_of(server, &tick);
    assert_eq!(
        (&run["status"], &run["selection"], &run["deployment"]),
        (&json!("succeeded"), &json!("key:orders"), &json!("prod")),
        "{run:#}"
    );

    // Down from 13:00:05 to 16:30: 14:00 and 15:00 are missed, 16:00 runs once for them.
    for server in servers.iter_mut() {
        server.kill();
    }
    clock.set("2026-01-10T16:30:00Z");
    for server in servers.iter_mut() {
        server.restart();
    }
    let server = &servers[0];
    let tick = wait_for_tick(server, "prod", "hourly", at("2026-01-10T16:00:00Z"));
    assert_eq!(run_of(server, &tick)["status"], "succeeded");
    let hourly = schedule(server, "prod", "hourly");
    assert_eq!(
        summary(&hourly),
        vec![started(at("2026-01-10T16:00:00Z"), 2), started(at("2026-01-10T13:00:00Z"), 0)]
    );
    assert_eq!(hourly["next_tick_at"], at("2026-01-10T17:00:00Z"));

    // 18:00 in Berlin: the slow export starts; a day later it still runs, so that tick is
    // skipped and says which run it waited for.
    clock.set("2026-01-10T17:00:05Z");
    let slow = wait_for_tick(server, "prod", "evening", at("2026-01-10T17:00:00Z"));
    assert_eq!(slow["status"], "started", "{slow:#}");
    let slow_run = slow["run_id"].as_i64().expect("a run");
    wait_for_run_of_tick(server, "prod", "hourly", at("2026-01-10T17:00:00Z"));
    clock.set("2026-01-11T17:00:05Z");
    let skipped = wait_for_tick(server, "prod", "evening", at("2026-01-11T17:00:00Z"));
    assert_eq!(skipped["status"], "skipped", "{skipped:#}");
    assert_eq!(skipped["run_id"], Value::Null);
    let message = skipped["message"].as_str().expect("a message");
    assert!(
        message == format!("run {slow_run} of the previous tick is still running")
            || message == format!("run {slow_run} of the previous tick is still queued"),
        "{message}"
    );
    let hourly = wait_for_tick(server, "prod", "hourly", at("2026-01-11T17:00:00Z"));
    assert_eq!(hourly["missed"], 23);
    run_of(server, &hourly);
    server.post(&format!("/api/v1/runs/{slow_run}/cancel"), json!({}));
    assert_eq!(server.wait_for_run(slow_run)["status"], "canceled");

    // A branch deployment's schedules are off: production ticks twice, the branch never.
    git(repo, &["branch", "feature/x"]);
    let sha = commit_file(repo, "feature/x", "assets/extra.sql", "SELECT 2 AS id\n", "Extra");
    let branch = create_or_update(server, "feature/x", &sha);
    server.wait_for_deployment(&branch, "ready", |d| serving_commit(d) == sha);
    let off = schedule(server, &branch, "hourly");
    assert_eq!((&off["enabled"], &off["next_tick_at"]), (&json!(false), &Value::Null), "{off:#}");
    for hour in ["2026-01-11T18:00:00Z", "2026-01-11T19:00:00Z"] {
        clock.set(&hour.replace(":00Z", ":05Z"));
        wait_for_run_of_tick(server, "prod", "hourly", at(hour));
    }
    assert_eq!(summary(&schedule(server, &branch, "hourly")), vec![], "off in branches");

    // Roles: reading needs read, switching a branch's needs deploy, production's tick admin.
    let path = format!("/api/v1/deployments/{branch}/schedules");
    assert_eq!(server.request("GET", &path, None, Some(READ)).0, 200);
    let (status, body) = server.request("POST", &format!("{path}/hourly/on"), None, Some(READ));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = server.request(
        "POST",
        "/api/v1/deployments/prod/schedules/hourly/tick",
        None,
        Some(DEPLOY),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) =
        server.request("POST", "/api/v1/deployments/prod/schedules/hourly/off", None, Some(TOKEN));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("production_schedule")),
        "{body}"
    );
    let (status, body) = server.request("POST", &format!("{path}/nightly/on"), None, Some(DEPLOY));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("schedule_not_found")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().expect("message").contains("it has hourly, evening"),
        "{body}"
    );

    // Switched on, a branch's schedule ticks from then on, in the branch.
    let (status, on) = server.request("POST", &format!("{path}/hourly/on"), None, Some(DEPLOY));
    assert_eq!(status, 200, "{on}");
    assert_eq!(
        (&on["enabled"], &on["next_tick_at"]),
        (&json!(true), &json!(at("2026-01-11T20:00:00Z")))
    );
    assert_eq!(on["owed_since"], at("2026-01-11T19:00:05Z"), "nothing from before is owed");
    clock.set("2026-01-11T20:00:05Z");
    wait_for_run_of_tick(server, "prod", "hourly", at("2026-01-11T20:00:00Z"));
    let tick = wait_for_tick(server, &branch, "hourly", at("2026-01-11T20:00:00Z"));
    let run = run_of(server, &tick);
    assert_eq!((&run["status"], &run["deployment"]), (&json!("succeeded"), &json!(branch)));

    // Off again; one tick now still runs (the CLI), nothing else.
    let output = client(server, &["schedule", "off", "hourly", "--deployment", &branch]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("hourly"), "{}", stdout(&output));
    let output = client(server, &["schedule", "tick", "hourly", "--deployment", &branch]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("started (manual) run "), "{}", stdout(&output));
    for hour in ["2026-01-11T21:00:00Z", "2026-01-11T22:00:00Z"] {
        clock.set(&hour.replace(":00Z", ":05Z"));
        wait_for_run_of_tick(server, "prod", "hourly", at(hour));
    }
    let branch_hourly = schedule(server, &branch, "hourly");
    assert_eq!(
        summary(&branch_hourly),
        vec![
            (at("2026-01-11T20:00:05Z"), true, "started".to_owned(), 0),
            started(at("2026-01-11T20:00:00Z"), 0)
        ],
        "{branch_hourly:#}"
    );
    let output = client(server, &["schedule", "list", "--deployment", "prod"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(text.contains("hourly") && text.contains("next 2026-01-11T23:00:00Z"), "{text}");
    assert!(text.contains("2026-01-11T17:00:00Z skipped: run "), "{text}");

    // Every production run is a tick's: nothing ran twice, whichever server claimed it.
    let runs = server.get("/api/v1/runs?deployment=prod&limit=500");
    let mut started_ticks: Vec<i64> = Vec::new();
    for name in ["hourly", "evening"] {
        let listing = server.get("/api/v1/deployments/prod/schedules");
        let one = listing.as_array().expect("list").iter().find(|s| s["name"] == name).cloned();
        // The listing shows the newest five; the store has them all (checked below per backend).
        started_ticks
            .extend(ticks(&one.expect("schedule")).iter().filter_map(|t| t["run_id"].as_i64()));
    }
    let run_ids: Vec<i64> =
        runs.as_array().expect("runs").iter().map(|r| r["id"].as_i64().expect("id")).collect();
    for id in &started_ticks {
        assert_eq!(run_ids.iter().filter(|r| *r == id).count(), 1, "run {id} of a tick");
    }
}

#[test]
fn schedules_on_sqlite() {
    let dir = TempDir::new("schedules-sqlite");
    let repo = dir.0.join("repo");
    repository(&repo, "sqlite");
    let clock = Clock(dir.0.join("clock"));
    clock.set("2026-01-10T12:10:00Z");
    let clock_path = clock.0.to_str().expect("utf-8 path").to_owned();
    let server = Server::start_with_config_env(
        &dir.0,
        &config(&dir.0, &repo, ""),
        &[("OFFSHOOT_DEBUG_CLOCK_FILE", &clock_path)],
    );
    let mut servers = [server];
    story(&mut servers, &clock, &repo);
    // 13:00, 16:00, 17:00, next day 17:00 to 22:00: every production run was a tick, and the
    // store has each tick once.
    let runs = servers[0].get("/api/v1/runs?deployment=prod&limit=500");
    assert_eq!(runs.as_array().expect("runs").len(), 3 + 6 + 1, "{runs:#}");
}

#[test]
fn schedules_on_postgres_with_two_servers() {
    if postgres_skipped() {
        return;
    }
    let database = Database(format!("offshoot_schedules_{}", std::process::id()));
    psql("postgres", &format!("CREATE DATABASE {}", database.0));
    let role = format!("offshoot_branch_s{}", std::process::id());
    let dir = TempDir::new("schedules-postgres");
    let repo = dir.0.join("repo");
    repository(&repo, "postgres");
    let clock = Clock(dir.0.join("clock"));
    clock.set("2026-01-10T12:10:00Z");
    let clock_path = clock.0.to_str().expect("utf-8 path").to_owned();
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", database.0);
    let mut servers = Vec::new();
    for id in ["a", "b"] {
        let home = dir.0.join(format!("server-{id}"));
        std::fs::create_dir_all(&home).expect("mkdir");
        let extra = format!(
            "metadata_url = \"{url}\"\nwarehouse_url = \"{url}\"\nbranch_role = \"{role}\"\nserver_id = \"server-{id}\""
        );
        servers.push(Server::start_with_config_env(
            &home,
            &config(&home, &repo, &extra),
            &[("OFFSHOOT_DEBUG_CLOCK_FILE", &clock_path)],
        ));
    }
    story(&mut servers, &clock, &repo);
    // Each tick once in the store, and each started tick has its own run.
    assert_eq!(
        psql(
            &database.0,
            "SELECT count(*) FROM schedule_ticks t JOIN deployments d ON d.id = t.deployment_id WHERE d.name = 'prod'"
        ),
        "11",
        "hourly: 13, 16, 17, then 17 to 22 the next day; evening: two"
    );
    assert_eq!(
        psql(&database.0, "SELECT count(DISTINCT run_id) = count(run_id) FROM schedule_ticks"),
        "t"
    );
    assert_eq!(
        psql(&database.0, "SELECT count(*) FROM runs r JOIN deployments d ON d.id = r.deployment_id WHERE d.name = 'prod'"),
        "10",
        "every production run is a started tick's"
    );
    drop(servers);
    psql("postgres", &format!("DROP DATABASE {} WITH (FORCE)", database.0));
    drop_branch_roles(&role);
}

#[test]
fn dagster_schedule_definitions_tick_in_production() {
    python_tools();
    let dir = TempDir::new("schedules-dagster");
    let repo = dir.0.join("repo");
    example_repo("dagster_shop", &repo);
    let definitions = repo.join("dagster_shop/definitions.py");
    let text = std::fs::read_to_string(&definitions).expect("read");
    let text = text.replace(
        "    executor=dg.in_process_executor,\n)",
        "    executor=dg.in_process_executor,\n    jobs=[everything, op_job],\n    schedules=[\n        dg.ScheduleDefinition(name=\"nightly\", job=everything, cron_schedule=\"0 2 * * *\", execution_timezone=\"Europe/Berlin\"),\n        dg.ScheduleDefinition(job=op_job, cron_schedule=\"0 3 * * *\"),\n    ],\n)",
    );
    let text = text.replace(
        "defs = dg.Definitions(",
        "everything = dg.define_asset_job(\"everything\", selection=dg.AssetSelection.all())\n\n\n@dg.op\ndef hello():\n    pass\n\n\n@dg.job\ndef op_job():\n    hello()\n\n\ndefs = dg.Definitions(",
    );
    std::fs::write(&definitions, text).expect("write");
    git(&repo, &["commit", "-q", "-am", "Schedules"]);
    let clock = Clock(dir.0.join("clock"));
    clock.set("2026-01-10T12:10:00Z");
    let clock_path = clock.0.to_str().expect("utf-8 path").to_owned();
    let server = Server::start_with_config_env(
        &dir.0,
        &config(&dir.0, &repo, ""),
        &[("OFFSHOOT_DEBUG_CLOCK_FILE", &clock_path)],
    );
    wait_for_prod(&server, &repo);
    let nightly =
        wait_for_schedule(&server, "prod", "nightly", "seen", |s| s["owed_since"].is_i64());
    assert_eq!(
        (&nightly["cron"], &nightly["timezone"], &nightly["defined_in"], &nightly["problem"]),
        (
            &json!("0 2 * * *"),
            &json!("Europe/Berlin"),
            &json!("dagster job everything"),
            &Value::Null
        )
    );
    let selection = nightly["selection"].as_str().expect("selection");
    assert!(
        selection.contains("key:\"raw/orders\"") && selection.contains(" or key:\"fct_orders\""),
        "{selection}"
    );
    assert_eq!(nightly["next_tick_at"], at("2026-01-11T01:00:00Z"), "02:00 in Berlin");
    let ops = schedule(&server, "prod", "op_job_schedule");
    assert_eq!(ops["problem"], "its job `op_job` runs ops, not assets", "{ops:#}");
    assert_eq!(ops["next_tick_at"], Value::Null);
    let (status, body) = server.request(
        "POST",
        "/api/v1/deployments/prod/schedules/op_job_schedule/tick",
        None,
        Some(TOKEN),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("schedule_not_runnable")),
        "{body}"
    );

    clock.set("2026-01-11T03:00:05Z");
    let tick = wait_for_tick(&server, "prod", "nightly", at("2026-01-11T01:00:00Z"));
    let run = run_of(&server, &tick);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", server.log());
    assert_eq!(
        run["steps"].as_array().expect("steps").len(),
        7,
        "every asset but the two sources: {run:#}"
    );
    assert_eq!(summary(&schedule(&server, "prod", "op_job_schedule")), vec![], "never ticks");
}
