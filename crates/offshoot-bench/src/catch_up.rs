//! `offshoot-bench catch-up [--models 1000] [--changed 29] [--rows 10000] [--runs 3] [--postgres URL | --no-postgres] [--offshoot PATH]`:
//! merge → production up to date through the real `offshoot serve`, on SQLite and PostgreSQL:
//! from the push of the merge to the production branch until production's catch-up run has
//! finished, for a `--models`-model project whose branch changed `--changed` models, with the
//! branch's tables promoted (the branch built them) and rebuilt (a branch that changed the same
//! models the same way did not build them), side by side in one run; on PostgreSQL also a
//! branch that rebuilt every model, all promoted in one catch-up. Every run checks the steps
//! (promoted or built) and that production ends with the branch's checksums.
//!
//! The project is `promotion`'s: a source `raw` of `--rows` rows, model `m<i>` reads `raw`
//! (the first ten) or `m<i-10>`. The branch changes the last `--changed` models: their
//! downstream is among them, so the catch-up has exactly those to promote or rebuild.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{DeploymentName, RepositoryName, SchemaName};
use offshoot_repo::GitRepository;
use offshoot_warehouse::{Target, Warehouse};
use offshoot_warehouse_sqlite::SqliteWarehouse;
use serde_json::{json, Value};

use crate::server::{Api, Server, REPOSITORY};
use crate::{machine, ms, workspace_commit, AUTHOR};

pub struct Args {
    models: usize,
    changed: usize,
    rows: u64,
    runs: usize,
    postgres: Option<String>,
    offshoot: Option<PathBuf>,
}

const USAGE: &str = "offshoot-bench catch-up [--models 1000] [--changed 29] [--rows 10000] [--runs 3] [--postgres URL | --no-postgres] [--offshoot PATH]";

pub fn parse_args(mut arguments: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        models: 1000,
        changed: 29,
        rows: 10_000,
        runs: 3,
        postgres: Some("postgres://postgres@127.0.0.1:5432".to_owned()),
        offshoot: None,
    };
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--models" => args.models = value()?.parse().context("--models")?,
            "--changed" => args.changed = value()?.parse().context("--changed")?,
            "--rows" => args.rows = value()?.parse().context("--rows")?,
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--postgres" => args.postgres = Some(value()?.trim_end_matches('/').to_owned()),
            "--no-postgres" => args.postgres = None,
            "--offshoot" => args.offshoot = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if args.models < 20 || args.changed == 0 || args.changed > args.models / 2 || args.runs == 0 {
        bail!("--models at least 20, --changed between 1 and half the models, --runs at least 1");
    }
    Ok(args)
}

fn model(i: usize) -> String {
    format!("m{i:04}")
}

/// The project's files with the models in `bumped` changed by `bump`.
fn tree(args: &Args, dialect: &str, bumped: &[usize], bump: u32) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        "offshoot.toml".to_owned(),
        format!("[project]\nname = \"bench\"\ndialect = \"{dialect}\"\n\n[sources.raw]\n")
            .into_bytes(),
    );
    for i in 0..args.models {
        let upstream = if i < 10 { "raw".to_owned() } else { model(i - 10) };
        let add = 1 + if bumped.contains(&i) { bump } else { 0 };
        files.insert(
            format!("assets/{}.sql", model(i)),
            format!("SELECT id, amount + {add} AS amount FROM {upstream}\n").into_bytes(),
        );
    }
    files
}

fn binary(args: &Args) -> anyhow::Result<PathBuf> {
    crate::server::offshoot_binary(args.offshoot.as_deref())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Where a backend's warehouse is read from for checksums.
enum Backend {
    Sqlite(SqliteWarehouse),
    Postgres { url: String, database: String },
}

fn schema(deployment: &str) -> SchemaName {
    SchemaName::for_deployment(
        &RepositoryName::new(REPOSITORY).expect("valid"),
        &DeploymentName::new(deployment).expect("valid"),
    )
}

fn psql(url: &str, database: &str, sql: &str) -> anyhow::Result<String> {
    let output = std::process::Command::new("psql")
        .arg(format!("{url}/{database}"))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", sql])
        .output()
        .context("running psql")?;
    if !output.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

impl Backend {
    fn checksum(&self, deployment: &str, table: &str) -> anyhow::Result<Option<String>> {
        let target = Target { schema: schema(deployment), production: schema("prod") };
        match self {
            Backend::Sqlite(warehouse) => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Ok(runtime.block_on(warehouse.table_checksum(&target, table))?)
            }
            Backend::Postgres { url, database } => {
                let text = psql(url, database, &format!(
                    "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM \"{}\".\"{table}\" AS t",
                    target.schema
                ))?;
                Ok(Some(text))
            }
        }
    }
}

/// One merge: from the push of the production branch to the end of its catch-up.
struct Merged {
    wall: Duration,
    run: Duration,
    promoted: usize,
    built: usize,
}

struct Bench<'a> {
    args: &'a Args,
    api: Api,
    repo: GitRepository,
    dialect: &'static str,
    backend: Backend,
}

impl Bench<'_> {
    fn wait_run(&self, id: i64) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let run = self.api.get(&format!("/api/v1/runs/{id}"))?;
            if matches!(run["status"].as_str(), Some("succeeded" | "failed" | "canceled")) {
                return Ok(run);
            }
            if started.elapsed() > Duration::from_secs(3600) {
                bail!("run {id} did not finish within an hour");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn materialize(&self, deployment: &str, selection: &str) -> anyhow::Result<Value> {
        let run = self.api.post(
            &format!("/api/v1/deployments/{deployment}/runs"),
            &json!({ "selection": selection }),
        )?;
        let run = self.wait_run(run["id"].as_i64().context("a run id")?)?;
        if run["status"] != "succeeded" {
            bail!("run in {deployment} ended {}: {}", run["status"], run["error"]);
        }
        Ok(run)
    }

    /// A branch off main with `bumped` changed by `bump`, deployed; its deployment name and tree.
    fn branch(
        &self,
        branch: &str,
        bumped: &[usize],
        bump: u32,
    ) -> anyhow::Result<(String, BTreeMap<String, Vec<u8>>)> {
        let files = tree(self.args, self.dialect, bumped, bump);
        let commit = self.repo.commit_tree(
            branch,
            Some("main"),
            &files,
            &format!("Bump {}", bumped.len()),
            AUTHOR,
        )?;
        let created = self.api.post("/api/v1/branch-deployments", &json!({"branch_name": branch, "commit_hash": commit, "pull_request_status": "OPEN", "pull_request_id": "1", "pull_request_url": "https://git.example/bench/pull/1"}))?;
        let name = created["name"].as_str().context("a deployment name")?.to_owned();
        self.api.wait_until_ready(&name, &commit)?;
        Ok((name, files))
    }

    /// Lands `files` on main as a squash merge and pushes main; waits for production's catch-up.
    fn merge(&self, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<Merged> {
        let commit = self.repo.commit_tree("main", Some("main"), files, "Merge", AUTHOR)?;
        let started = Instant::now();
        self.api.post(
            "/api/v1/branch-deployments",
            &json!({"branch_name": "main", "commit_hash": commit}),
        )?;
        let prod = self.api.wait_until_ready("prod", &commit)?;
        let revision = prod["current_revision"]["id"].as_i64().context("a revision id")?;
        let run = loop {
            let runs = self.api.get("/api/v1/runs?deployment=prod&limit=20")?;
            let found = runs
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["kind"] == "catch-up" && r["revision_id"] == revision)
                .cloned();
            if let Some(run) = found {
                break self.wait_run(run["id"].as_i64().context("a run id")?)?;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("no catch-up of revision {revision}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let wall = started.elapsed();
        if run["status"] != "succeeded" {
            bail!("the catch-up ended {}: {}", run["status"], run["error"]);
        }
        let steps = run["steps"].as_array().context("steps")?;
        let count = |prefix: &str| {
            steps
                .iter()
                .filter(|s| s["action"].as_str().is_some_and(|a| a.starts_with(prefix)))
                .count()
        };
        let at = |field: &str| run[field].as_i64().unwrap_or_default();
        Ok(Merged {
            wall,
            run: Duration::from_millis((at("finished_at") - at("started_at")).max(0) as u64),
            promoted: count("promoted"),
            built: count("built"),
        })
    }

    fn close(&self, name: &str, status: &str) -> anyhow::Result<()> {
        self.api.post(
            &format!("/api/v1/deployments/{name}/close"),
            &json!({"pull_request_status": status}),
        )?;
        Ok(())
    }

    /// Production holds `expected`'s checksum for each of `tables`.
    fn check(
        &self,
        tables: &[String],
        expected: &[Option<String>],
        what: &str,
    ) -> anyhow::Result<()> {
        for (table, expected) in tables.iter().zip(expected) {
            let got = self.backend.checksum("prod", table)?;
            if &got != expected {
                bail!("{what}: production's {table} is {got:?}, expected {expected:?}");
            }
        }
        Ok(())
    }
}

struct Report {
    backend: &'static str,
    promote: Vec<Merged>,
    rebuild: Vec<Merged>,
    everything: Option<Merged>,
}

fn run_backend(
    args: &Args,
    binary: &Path,
    work: &Path,
    label: &'static str,
) -> anyhow::Result<Report> {
    let dialect = if label == "SQLite" { "sqlite" } else { "postgres" };
    let dir = work.join(label);
    let repo_dir = dir.join("repo");
    std::fs::create_dir_all(&repo_dir)?;
    let repo = GitRepository::init(&repo_dir, "main")?;
    let main =
        repo.commit_tree("main", None, &tree(args, dialect, &[], 0), "The project", AUTHOR)?;
    let (config, backend) = match label {
        "SQLite" => (
            String::new(),
            Backend::Sqlite(SqliteWarehouse::new(dir.join("server/data/warehouse"))?),
        ),
        _ => {
            let url = args.postgres.clone().context("PostgreSQL")?;
            let database = format!("offshoot_bench_catch_up_{}", std::process::id());
            psql(&url, "postgres", &format!("DROP DATABASE IF EXISTS {database}"))?;
            psql(&url, "postgres", &format!("CREATE DATABASE {database}"))?;
            let config = format!("metadata_url = \"{url}/{database}\"\nwarehouse_url = \"{url}/{database}\"\nbranch_role = \"offshoot_bench_branch\"\n");
            (config, Backend::Postgres { url, database })
        }
    };
    let result = (|| {
        let server = Server::start(binary, &dir.join("server"), &repo_dir, &config)?;
        server.wait_for_production(&main)?;
        let bench = Bench { args, api: server.api(), repo, dialect, backend };
        let raw = format!(
            "CREATE TABLE raw AS WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {}) SELECT CAST(n AS BIGINT) AS id, CAST(n % 97 AS BIGINT) AS amount FROM s",
            args.rows
        );
        match &bench.backend {
            Backend::Sqlite(warehouse) => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(warehouse.execute_production_script(&schema("prod"), &raw))?;
            }
            Backend::Postgres { url, database } => {
                psql(url, database, &format!("SET search_path TO {}; {raw}", schema("prod")))?;
            }
        }
        let started = Instant::now();
        bench.materialize("prod", "key:*")?;
        eprintln!(
            "  {label}: production built, {} models in {}",
            args.models,
            ms(started.elapsed())
        );
        let changed: Vec<usize> = (args.models - args.changed..args.models).collect();
        let tables: Vec<String> = changed.iter().map(|i| model(*i)).collect();
        let mut report =
            Report { backend: label, promote: Vec::new(), rebuild: Vec::new(), everything: None };
        for run in 0..args.runs {
            // Promoted: the branch built the changed models.
            let bump = 2 * run as u32 + 1;
            let (name, files) = bench.branch(&format!("promote-{run}"), &changed, bump)?;
            bench.materialize(&name, "changed_in_branch:ANY+")?;
            let built = tables
                .iter()
                .map(|t| bench.backend.checksum(&name, t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = bench.merge(&files)?;
            if merged.promoted != args.changed || merged.built != 0 {
                bail!(
                    "expected {} promoted: {} promoted, {} built",
                    args.changed,
                    merged.promoted,
                    merged.built
                );
            }
            bench.check(&tables, &built, "promoted")?;
            bench.close(&name, "MERGED")?;
            eprintln!(
                "  {label} run {run}: promoted {} in {} (catch-up run {})",
                merged.promoted,
                ms(merged.wall),
                ms(merged.run)
            );
            report.promote.push(merged);

            // Rebuilt: the same change, never built in a branch.
            let bump = 2 * run as u32 + 2;
            let (name, files) = bench.branch(&format!("rebuild-{run}"), &changed, bump)?;
            bench.close(&name, "CLOSED")?;
            let merged = bench.merge(&files)?;
            if merged.built != args.changed || merged.promoted != 0 {
                bail!(
                    "expected {} rebuilt: {} promoted, {} built",
                    args.changed,
                    merged.promoted,
                    merged.built
                );
            }
            eprintln!(
                "  {label} run {run}: rebuilt {} in {} (catch-up run {})",
                merged.built,
                ms(merged.wall),
                ms(merged.run)
            );
            report.rebuild.push(merged);
        }
        if label == "PostgreSQL" {
            let all: Vec<usize> = (0..args.models).collect();
            let (name, files) = bench.branch("everything", &all, 1_000)?;
            let started = Instant::now();
            bench.materialize(&name, "key:*")?;
            eprintln!(
                "  {label}: the branch rebuilt all {} models in {}",
                args.models,
                ms(started.elapsed())
            );
            let sample: Vec<String> =
                [0, args.models / 2, args.models - 1].iter().map(|i| model(*i)).collect();
            let built = sample
                .iter()
                .map(|t| bench.backend.checksum(&name, t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = bench.merge(&files)?;
            if merged.promoted != args.models {
                bail!(
                    "expected all {} promoted: {} promoted, {} built",
                    args.models,
                    merged.promoted,
                    merged.built
                );
            }
            bench.check(&sample, &built, "all promoted")?;
            eprintln!(
                "  {label}: all {} promoted in {} (catch-up run {})",
                merged.promoted,
                ms(merged.wall),
                ms(merged.run)
            );
            report.everything = Some(merged);
        }
        drop(server);
        Ok(report)
    })();
    if let Some(url) = &args.postgres {
        if label == "PostgreSQL" {
            let database = format!("offshoot_bench_catch_up_{}", std::process::id());
            let _ =
                psql(url, "postgres", &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
        }
    }
    result
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let binary = binary(args)?;
    let work = std::env::temp_dir().join(format!("offshoot-bench-catch-up-{}", std::process::id()));
    println!(
        "merge → production up to date through `offshoot serve`: {} models of {} rows, the branch changed {}; {} runs, medians",
        args.models, args.rows, args.changed, args.runs
    );
    println!("machine: {}; commit {}", machine(), workspace_commit());
    let mut reports = vec![run_backend(args, &binary, &work, "SQLite")];
    if args.postgres.is_some() {
        reports.push(run_backend(args, &binary, &work, "PostgreSQL"));
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("\n| backend | promoted: push → caught up | its catch-up run | rebuilt: push → caught up | its catch-up run | rebuild / promote (run) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for report in &reports {
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                println!("| failed | {error:#} |");
                continue;
            }
        };
        let med = |samples: &[Merged], f: fn(&Merged) -> Duration| {
            median(samples.iter().map(f).collect())
        };
        let (promote_wall, promote_run) =
            (med(&report.promote, |m| m.wall), med(&report.promote, |m| m.run));
        let (rebuild_wall, rebuild_run) =
            (med(&report.rebuild, |m| m.wall), med(&report.rebuild, |m| m.run));
        println!(
            "| {} | {} | {} | {} | {} | {:.1}× |",
            report.backend,
            ms(promote_wall),
            ms(promote_run),
            ms(rebuild_wall),
            ms(rebuild_run),
            rebuild_run.as_secs_f64() / promote_run.as_secs_f64().max(1e-9)
        );
        if let Some(all) = &report.everything {
            println!(
                "| {}, all {} models promoted in one catch-up | {} | {} | | | |",
                report.backend,
                all.promoted,
                ms(all.wall),
                ms(all.run)
            );
        }
    }
    for report in reports {
        report?;
    }
    Ok(())
}
