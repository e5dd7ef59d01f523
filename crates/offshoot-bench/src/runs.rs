//! `offshoot-bench runs [--assets 1000] [--rows 1000] [--runs 3] [--downstream 29] [--offshoot PATH]`:
//! how close a run gets to the engine's floor. Against the real `offshoot serve` with the
//! embedded SQLite warehouse and the generated project (sources seeded with `--rows` rows each):
//! a production run of every model, and a branch run of one mid-layer model whose edit has
//! about `--downstream` models downstream (`changed_in_branch:ANY+`). Each is compared with its
//! floor: the same models' `CREATE TABLE ... AS` statements, in the order the run built them, on
//! one connection: into a copy of production's warehouse file for the production run, and for
//! the branch run into a file of its own with that copy attached (as a branch builds). The run's server time is its
//! `finished_at - started_at`; the client time adds the API call and the wait.
//! `OFFSHOOT_BENCH_KEEP=1` keeps the work folder, the server's log (`server/server.log`) in it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{DeploymentName, RepositoryName, SchemaName};
use offshoot_repo::write::Tree;
use offshoot_repo::GitRepository;
use offshoot_warehouse_sqlite::SqliteWarehouse;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::server::{seed_production, Api, Server, REPOSITORY};
use crate::{machine, ms, project, stats_of, thousands, workspace_commit, AUTHOR};

pub struct Args {
    assets: usize,
    rows: u64,
    runs: usize,
    downstream: usize,
    offshoot: Option<PathBuf>,
    /// One production run (to build what the branch reads), not measured.
    branch_only: bool,
    /// `[data_diff] auto = false`: no data diffs between the branch's runs.
    no_auto_diff: bool,
}

const USAGE: &str = "usage: offshoot-bench runs [--assets 1000] [--rows 1000] [--runs 3] [--downstream 29] [--branch-only] [--no-auto-diff] [--offshoot PATH]";

/// Bar of issue 19, item 3: a run's server time at most this many times its floor.
const RATIO_BAR: f64 = 1.5;

pub fn parse_args(arguments: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        assets: 1000,
        rows: 1000,
        runs: 3,
        downstream: 29,
        offshoot: None,
        branch_only: false,
        no_auto_diff: false,
    };
    let mut it = arguments;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--assets" => args.assets = value()?.parse().context("--assets takes a number")?,
            "--rows" => args.rows = value()?.parse().context("--rows takes a number")?,
            "--runs" => args.runs = value()?.parse().context("--runs takes a number")?,
            "--downstream" => args.downstream = value()?.parse().context("--downstream")?,
            "--offshoot" => args.offshoot = Some(PathBuf::from(value()?)),
            "--branch-only" => args.branch_only = true,
            "--no-auto-diff" => args.no_auto_diff = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if args.runs == 0 || args.assets < 100 || args.rows == 0 {
        bail!("--runs and --rows must be at least 1 and --assets at least 100\n{USAGE}");
    }
    Ok(args)
}

/// One measured run: what the server reported and what the client waited.
struct RunSample {
    server: Duration,
    client: Duration,
    /// The built models, in the order their steps started.
    order: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let binary = crate::server::offshoot_binary(args.offshoot.as_deref())?;
    let work = std::env::temp_dir().join(format!("offshoot-bench-runs-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = measure(args, &binary, &work);
    if std::env::var_os("OFFSHOOT_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!("{}", result?);
    Ok(())
}

fn measure(args: &Args, binary: &Path, work: &Path) -> anyhow::Result<String> {
    let n = args.assets;
    eprintln!("{n} assets: generating");
    let generated = project::generate(n);
    let dir = work.join("repo");
    std::fs::create_dir_all(&dir)?;
    let repo = GitRepository::init(&dir, "main")?;
    let main_sha = repo.commit_tree("main", None, &generated.main, "generated", AUTHOR)?;
    let server_dir = work.join("server");
    let sources = project::source_names().len() as u64;
    seed_production(&server_dir.join("data"), args.rows * 170 * sources)?;
    let settings = if args.no_auto_diff { "[data_diff]\nauto = false\n" } else { "" };
    let server = Server::start(binary, &server_dir, &dir, settings)?;
    server.wait_for_production(&main_sha)?;
    let api = server.api();

    // Production: every model, `runs` times (the first builds, the others rebuild).
    let mut production = Vec::new();
    let production_runs = if args.branch_only { 0 } else { args.runs };
    for index in 0..=production_runs {
        let sample = run_to_end(&api, "prod", "*")?;
        eprintln!("  prod run {index}: server {}, client {}", ms(sample.server), ms(sample.client));
        production.push(sample);
    }
    // The branch: one mid-layer model whose downstream is nearest `--downstream`.
    let (key, path, downstream) = pick_mid_layer(&api, &generated.main, args.downstream)?;
    let mut tree = generated.main.clone();
    let content = tree.get_mut(&path).context("the picked model's file")?;
    let edited = String::from_utf8_lossy(content).replacen(
        "t0.status <> 'cancelled'",
        "t0.status <> 'void'",
        1,
    );
    if edited.as_bytes() == content.as_slice() {
        bail!("{path}: the generated filter to edit is not there");
    }
    *content = edited.into_bytes();
    let branch_sha = repo.commit_tree("edit-one", Some("main"), &tree, "edit one model", AUTHOR)?;
    let created = api.post(
        "/api/v1/branch-deployments",
        &json!({"branch_name": "edit-one", "commit_hash": branch_sha}),
    )?;
    let branch = created["name"].as_str().context("the deployment's `name`")?.to_owned();
    api.wait_until_ready(&branch, &branch_sha)?;
    let mut branch_runs = Vec::new();
    for index in 0..=args.runs {
        let sample = run_to_end(&api, &branch, "changed_in_branch:ANY+")?;
        eprintln!(
            "  branch run {index} ({} steps): server {}, client {}",
            sample.order.len(),
            ms(sample.server),
            ms(sample.client)
        );
        branch_runs.push(sample);
    }
    drop(server);

    // The floors, on a copy of production's file as the server left it.
    let warehouse = SqliteWarehouse::new(server_dir.join("data").join("warehouse"))
        .context("opening the warehouse folder")?;
    let schema = SchemaName::for_deployment(
        &RepositoryName::from_any(REPOSITORY).context("a valid repository name")?,
        &DeploymentName::production(),
    );
    let file = warehouse.production_file(&schema);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let sql_of = |key: &str| model_sql(&generated.main, &tree, key);
    let production_floor = if args.branch_only {
        None
    } else {
        Some(runtime.block_on(floor(
            &file,
            work,
            Into::Production,
            &production[1].order,
            &|k: &str| sql_of(k),
            args.runs,
        ))?)
    };
    let branch_floor = runtime.block_on(floor(
        &file,
        work,
        Into::Branch,
        &branch_runs[1].order,
        &|k: &str| sql_of(k),
        args.runs,
    ))?;

    let mut out = String::new();
    out.push_str(&format!(
        "## Runs against the engine's floor ({}, offshoot {}, `offshoot-bench runs --assets {n} --rows {} --runs {}{}{}`)\n\n",
        machine(),
        workspace_commit(),
        args.rows,
        args.runs,
        if args.branch_only { " --branch-only" } else { "" },
        if args.no_auto_diff { " --no-auto-diff" } else { "" }
    ));
    out.push_str(&format!(
        "Embedded SQLite warehouse, {} sources of {} rows. The branch edits `{key}` ({downstream} models downstream). Medians of {} runs after one warm-up; floors are medians of {} passes.\n\n",
        sources,
        thousands(args.rows as usize),
        args.runs,
        args.runs
    ));
    out.push_str("| run | steps | server time (median) | client time (median) | floor: the same statements on one connection | server / floor | bar | verdict |\n|---|---:|---:|---:|---:|---:|---|---|\n");
    let mut measured = vec![("branch, `changed_in_branch:ANY+`", &branch_runs[1..], branch_floor)];
    if let Some(floor) = production_floor {
        measured.insert(0, ("production, every model", &production[1..], floor));
    }
    for (label, samples, floor) in measured {
        let server = stats_of(samples.iter().map(|s| s.server).collect()).median;
        let client = stats_of(samples.iter().map(|s| s.client).collect()).median;
        let ratio = server.as_secs_f64() / floor.as_secs_f64().max(1e-6);
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {ratio:.2} | ≤ {RATIO_BAR} | {} |\n",
            thousands(samples[0].order.len()),
            ms(server),
            ms(client),
            ms(floor),
            if ratio <= RATIO_BAR { "PASS" } else { "FAIL" }
        ));
    }
    Ok(out)
}

/// Launches a run and waits for it to succeed, polling every 5 ms the deployment's newest run
/// without its steps (the run with its 1,000 steps and their logs, asked for 200 times a
/// second, was load on the server it measures), then reads the run with its steps once.
fn run_to_end(api: &Api, deployment: &str, selection: &str) -> anyhow::Result<RunSample> {
    let start = Instant::now();
    let run = api.post(
        &format!("/api/v1/deployments/{deployment}/runs"),
        &json!({ "selection": selection }),
    )?;
    let id = run["id"].as_i64().context("the launched run has an `id`")?;
    loop {
        let newest = api.get(&format!("/api/v1/runs?deployment={deployment}&limit=1"))?;
        let newest = &newest[0];
        if newest["id"].as_i64() != Some(id) {
            bail!("run {id} is not {deployment}'s newest run: {newest}");
        }
        match newest["status"].as_str() {
            Some("succeeded") => {
                let client = start.elapsed();
                let run = api.get(&format!("/api/v1/runs/{id}"))?;
                let (Some(started), Some(finished)) =
                    (run["started_at"].as_i64(), run["finished_at"].as_i64())
                else {
                    bail!("run {id} succeeded without its times: {run}");
                };
                let mut steps: Vec<&Value> = run["steps"]
                    .as_array()
                    .context("a run has steps")?
                    .iter()
                    .filter(|s| s["status"] == "succeeded")
                    .collect();
                steps.sort_by_key(|s| s["started_at"].as_i64());
                let order = steps
                    .iter()
                    .filter_map(|s| s["asset_key"].as_str().map(str::to_owned))
                    .collect();
                let server = Duration::from_millis(u64::try_from(finished - started).unwrap_or(0));
                // Where the server's time went: before the first step started, and after the
                // last one finished.
                let first = steps.iter().filter_map(|s| s["started_at"].as_i64()).min();
                let last = steps.iter().filter_map(|s| s["finished_at"].as_i64()).max();
                if let (Some(first), Some(last)) = (first, last) {
                    eprintln!(
                        "    run {id}: {} ms before the first step, {} ms after the last",
                        first - started,
                        finished - last
                    );
                }
                return Ok(RunSample { server, client, order });
            }
            Some("failed" | "canceled") => {
                let run = api.get(&format!("/api/v1/runs/{id}"))?;
                bail!("run {id} on {deployment} ended: {run}")
            }
            _ => {}
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("run {id} on {deployment} did not finish in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The intermediate model whose downstream (itself included) is nearest `target` models.
fn pick_mid_layer(
    api: &Api,
    tree: &Tree,
    target: usize,
) -> anyhow::Result<(String, String, usize)> {
    let mut best: Option<(usize, String, String, usize)> = None;
    for path in tree.keys().filter(|p| p.ends_with(".sql") && p.contains("int_")).take(300) {
        let key = path.rsplit('/').next().unwrap_or(path).trim_end_matches(".sql").to_owned();
        let selected =
            api.get(&format!("/api/v1/deployments/prod/select?selection=key:{key}%2B"))?;
        let count = selected["keys"].as_array().map_or(0, Vec::len);
        let distance = count.abs_diff(target);
        if best.as_ref().is_none_or(|(d, ..)| distance < *d) {
            best = Some((distance, key, path.clone(), count));
        }
    }
    best.map(|(_, key, path, count)| (key, path, count - 1))
        .context("the generated project has no intermediate models")
}

/// A model's SQL without its `/* offshoot ... */` header, from the branch's tree (which has the
/// edited model) or main's.
fn model_sql(main: &Tree, branch: &Tree, key: &str) -> Option<String> {
    let suffix = format!("/{key}.sql");
    let path = branch.keys().find(|p| p.ends_with(&suffix))?;
    let text = String::from_utf8_lossy(branch.get(path).or_else(|| main.get(path))?).into_owned();
    let body = match text.trim_start().strip_prefix("/* offshoot") {
        Some(rest) => rest.split_once("*/").map_or(rest, |(_, body)| body).to_owned(),
        None => text,
    };
    Some(body.trim().trim_end_matches(';').to_owned())
}

/// Where a floor builds: into a copy of production's file (a production run), or, like a
/// branch, into a file of its own with that copy attached as `prod`, so that unqualified names
/// resolve to the file's own tables first and to production's otherwise.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Into {
    Production,
    Branch,
}

/// The engine's floor: `DROP TABLE IF EXISTS` + `CREATE TABLE ... AS` of each model in `order`,
/// each model in a transaction of its own (replaced atomically, as a step replaces it), on one
/// connection; the median of `passes` passes.
async fn floor(
    production: &Path,
    work: &Path,
    into: Into,
    order: &[String],
    sql_of: &dyn Fn(&str) -> Option<String>,
    passes: usize,
) -> anyhow::Result<Duration> {
    let copy = work.join("floor.db");
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", production.display()));
        let to = PathBuf::from(format!("{}{suffix}", copy.display()));
        if from.exists() {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let statements: Vec<String> = order
        .iter()
        .map(|key| {
            let sql = sql_of(key).with_context(|| format!("no SQL file for `{key}`"))?;
            Ok(format!("DROP TABLE IF EXISTS main.\"{key}\"; CREATE TABLE main.\"{key}\" AS {sql}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let own = match into {
        Into::Production => copy.clone(),
        Into::Branch => work.join("floor-branch.db"),
    };
    let url = format!("sqlite://{}?mode=rwc", own.display());
    let mut connection = sqlx::sqlite::SqliteConnection::connect(&url)
        .await
        .with_context(|| format!("opening {}", own.display()))?;
    if into == Into::Branch {
        sqlx::query("ATTACH DATABASE ?1 AS prod")
            .bind(copy.display().to_string())
            .execute(&mut connection)
            .await
            .context("attaching the copy of production")?;
    }
    let mut samples = Vec::new();
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        for statement in &statements {
            // The statements are the generated project's own SQL.
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str()))
                .execute(&mut connection)
                .await
                .with_context(|| format!("the floor statement failed: {statement}"))?;
        }
        samples.push(start.elapsed());
    }
    Ok(stats_of(samples).median)
}
