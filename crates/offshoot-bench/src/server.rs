//! `offshoot-bench server`: the server bars of PRODUCT.md section 7, measured from outside
//! against the real `offshoot serve` binary over HTTP on loopback: deploy latency (API call →
//! branch deployment ready), clone cost against the size of production's data, and memory and
//! API latency with 100 open branch deployments.
//!
//! Every server runs on its own data directory with embedded stores, serves one generated
//! repository (no watching) and is killed when its phase ends, also on errors.

use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{DeploymentName, RepositoryName, SchemaName};
use offshoot_repo::write::Tree;
use offshoot_repo::GitRepository;
use offshoot_warehouse_sqlite::SqliteWarehouse;
use serde_json::{json, Value};

use crate::{
    command_output, machine, mb, ms, project, stats_of, status_kb, thousands, workspace_commit,
    Row, Stats, AUTHOR,
};

/// The repository name every benchmark server serves; production's schema is `bench__prod`.
pub(crate) const REPOSITORY: &str = "bench";
const TOKEN: &str = "offshoot-bench-token";
/// How often a client asks whether a deployment is ready.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Longer than any deploy should take; a deploy that takes longer is reported as an error.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

const DEPLOY_BAR_SMALL: Duration = Duration::from_millis(500);
const DEPLOY_BAR_LARGE: Duration = Duration::from_secs(5);
const CLONE_RATIO_BAR: f64 = 1.2;
const RSS_BAR_KB: u64 = 300 * 1024;
const API_P99_BAR: Duration = Duration::from_millis(50);

pub struct Args {
    runs: usize,
    skip_large: bool,
    only: Option<Phase>,
    assets_small: usize,
    assets_large: usize,
    branches: usize,
    clients: usize,
    requests: usize,
    dir: Option<PathBuf>,
    keep: bool,
    offshoot: Option<PathBuf>,
    perf_dir: Option<PathBuf>,
    /// `--postgres URL`: run the servers on PostgreSQL (store and warehouse), one fresh database
    /// per server under this server URL (e.g. postgres://postgres@127.0.0.1:5432), dropped after.
    postgres: Option<String>,
}

/// The three measurements; all run unless `--only` names one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Deploy latency at two project sizes.
    Deploy,
    /// Deploy latency against production's data size.
    Clone,
    /// Memory and API latency with many open branch deployments.
    Open,
}

impl Args {
    fn runs_phase(&self, phase: Phase) -> bool {
        self.only.is_none_or(|only| only == phase)
    }
}

const USAGE: &str = "usage: offshoot-bench server [--runs 9] [--skip-10k] [--only deploy|clone|open] [--assets-small 1000] [--assets-large 10000] [--postgres URL]
                             [--branches 100] [--clients 100] [--requests 2500] [--dir PATH] [--keep]
                             [--offshoot PATH] [--perf-dir PATH]

Starts `offshoot serve` (by default the `offshoot` binary next to this one; build both with
`cargo build --release -p offshoot -p offshoot-bench`) and measures the server bars.
--requests is per endpoint; --perf-dir records `perf record --call-graph dwarf` of the server
during each 100-client load into PATH.";

pub fn parse_args(arguments: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        runs: 9,
        skip_large: false,
        only: None,
        assets_small: 1000,
        assets_large: 10_000,
        branches: 100,
        clients: 100,
        requests: 2500,
        dir: None,
        keep: false,
        offshoot: None,
        perf_dir: None,
        postgres: None,
    };
    let mut it = arguments;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--skip-10k" => args.skip_large = true,
            "--only" => {
                args.only = Some(match value()?.as_str() {
                    "deploy" => Phase::Deploy,
                    "clone" => Phase::Clone,
                    "open" => Phase::Open,
                    other => bail!("unknown phase `{other}`: deploy, clone or open"),
                })
            }
            "--assets-small" => args.assets_small = value()?.parse().context("--assets-small")?,
            "--assets-large" => args.assets_large = value()?.parse().context("--assets-large")?,
            "--branches" => args.branches = value()?.parse().context("--branches")?,
            "--clients" => args.clients = value()?.parse().context("--clients")?,
            "--requests" => args.requests = value()?.parse().context("--requests")?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--keep" => args.keep = true,
            "--offshoot" => args.offshoot = Some(PathBuf::from(value()?)),
            "--perf-dir" => args.perf_dir = Some(PathBuf::from(value()?)),
            "--postgres" => args.postgres = Some(value()?.trim_end_matches('/').to_owned()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`; see `offshoot-bench server --help`"),
        }
    }
    if args.runs == 0 || args.branches == 0 || args.clients == 0 || args.requests == 0 {
        bail!("--runs, --branches, --clients and --requests must be at least 1");
    }
    if args.assets_small < 100 || args.assets_large < 100 {
        bail!("asset counts must be at least 100");
    }
    Ok(args)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let total = Instant::now();
    let binary = offshoot_binary(args.offshoot.as_deref())?;
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = base.join(format!("offshoot-bench-server-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!(
        "offshoot-bench server: {} serving repositories in {}",
        binary.display(),
        work.display()
    );
    let result = benchmark(args, &binary, &work);
    if args.keep {
        eprintln!("kept {}", work.display());
    } else if let Err(error) = std::fs::remove_dir_all(&work) {
        eprintln!("could not remove {}: {error}", work.display());
    }
    eprintln!("done in {:.1} s", total.elapsed().as_secs_f64());
    result
}

/// `--offshoot`, or the `offshoot` binary cargo put next to this one: what every benchmark that
/// starts a server runs.
pub fn offshoot_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("locating this binary")?;
            exe.parent().context("this binary has no folder")?.join("offshoot")
        }
    };
    if !path.is_file() {
        bail!(
            "no offshoot binary at {}: run `cargo build --release -p offshoot -p offshoot-bench` first, or pass --offshoot PATH",
            path.display()
        );
    }
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// The benchmark

fn benchmark(args: &Args, binary: &Path, work: &Path) -> anyhow::Result<()> {
    let runs = args.runs;
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let small = Fixture::new(work, args.assets_small)?;
    let postgres =
        Postgres { url: args.postgres.clone(), databases: std::cell::RefCell::new(Vec::new()) };

    if args.runs_phase(Phase::Deploy) {
        eprintln!("phase 1: deploy latency, {} assets ({runs} runs after one warm-up)", small.n);
        let backend = postgres.database("deploy_small")?;
        let server =
            Server::start(binary, &work.join("server-deploy-small"), &small.dir, &backend)?;
        server.wait_for_production(&small.main)?;
        let samples = deploy_runs(&server, &small, "deploy-small", runs)?;
        drop(server);
        push_deploy_rows(&mut rows, small.n, &samples, Some(DEPLOY_BAR_SMALL));
        notes.push(deploy_note(small.n, &samples));
    }

    if args.runs_phase(Phase::Deploy) && !args.skip_large {
        let large = Fixture::new(work, args.assets_large)?;
        eprintln!("phase 1: deploy latency, {} assets ({runs} runs after one warm-up)", large.n);
        let backend = postgres.database("deploy_large")?;
        let server =
            Server::start(binary, &work.join("server-deploy-large"), &large.dir, &backend)?;
        server.wait_for_production(&large.main)?;
        let samples = deploy_runs(&server, &large, "deploy-large", runs)?;
        drop(server);
        push_deploy_rows(&mut rows, large.n, &samples, Some(DEPLOY_BAR_LARGE));
        notes.push(deploy_note(large.n, &samples));
    }

    let mut clone = None;
    if args.runs_phase(Phase::Clone) {
        eprintln!(
            "phase 2: clone cost with about 1 MB and 100 MB of production data, {} assets",
            small.n
        );
        clone = Some(clone_cost(binary, work, &small, runs, &postgres)?);
    }

    let mut memory = None;
    if args.runs_phase(Phase::Open) {
        eprintln!("phase 3: {} open branch deployments of {} assets", args.branches, small.n);
        memory = Some(many_deployments(args, binary, work, &small, &postgres)?);
    }

    print_report(args, &rows, &notes, clone.as_ref(), memory.as_ref());
    Ok(())
}

/// A generated project on `main` in its own repository; branches are committed per run.
struct Fixture {
    n: usize,
    dir: PathBuf,
    repo: GitRepository,
    tree: Tree,
    main: String,
    /// The SQL asset files, so each branch can change a different one.
    asset_paths: Vec<String>,
}

impl Fixture {
    fn new(work: &Path, n: usize) -> anyhow::Result<Fixture> {
        let start = Instant::now();
        let generated = project::generate(n);
        let dir = work.join(format!("repo-{n}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let repo = GitRepository::init(&dir, "main")?;
        let main = repo.commit_tree(
            "main",
            None,
            &generated.main,
            &format!("{n} generated assets"),
            AUTHOR,
        )?;
        let asset_paths: Vec<String> =
            generated.main.keys().filter(|p| p.ends_with(".sql")).cloned().collect();
        eprintln!("  {n} assets generated and committed in {}", ms(start.elapsed()));
        Ok(Fixture { n, dir, repo, tree: generated.main, main, asset_paths })
    }

    /// Commits a new branch off `main` that changes the SQL of one asset (a different one, in a
    /// different way, for every `index`). Returns the commit's SHA.
    fn commit_branch(&self, branch: &str, index: usize) -> anyhow::Result<String> {
        let path = &self.asset_paths[(index * 7919) % self.asset_paths.len()];
        let mut tree = self.tree.clone();
        let content = tree.get_mut(path).context("the asset path comes from this tree")?;
        let sql = String::from_utf8_lossy(content).into_owned();
        // Every generated asset filters on this; changing the literal changes the code version.
        let edited = sql.replacen(
            "t0.status <> 'cancelled'",
            &format!("t0.status <> 'cancelled_{index}'"),
            1,
        );
        if edited == sql {
            bail!("{path} has no `t0.status <> 'cancelled'` to edit");
        }
        *content = edited.into_bytes();
        Ok(self.repo.commit_tree(branch, Some("main"), &tree, &format!("Edit {path}"), AUTHOR)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 1: deploy latency

/// One branch deploy as the client saw it and as the server recorded it.
pub(crate) struct DeploySample {
    /// From just before the POST to the first response that shows the revision ready.
    pub(crate) wall: Duration,
    /// The revision's `duration_ms`: queued → finished, measured by the server.
    pub(crate) server: Duration,
    pub(crate) asset_count: usize,
    pub(crate) changed_count: u64,
    pub(crate) impacted_count: u64,
}

/// Creates a branch deployment for `branch` at `commit` and waits until it is ready.
pub(crate) fn deploy_branch(api: &Api, branch: &str, commit: &str) -> anyhow::Result<DeploySample> {
    let start = Instant::now();
    let created = api.post(
        "/api/v1/branch-deployments",
        &json!({"branch_name": branch, "commit_hash": commit}),
    )?;
    let name =
        created["name"].as_str().context("the create-or-update answer has no `name`")?.to_owned();
    let deployment = api.wait_until_ready(&name, commit)?;
    let wall = start.elapsed();
    let revision = &deployment["current_revision"];
    let server_ms =
        revision["duration_ms"].as_i64().context("a ready revision has a `duration_ms`")?;
    Ok(DeploySample {
        wall,
        server: Duration::from_millis(u64::try_from(server_ms).unwrap_or(0)),
        asset_count: revision["asset_count"].as_u64().map_or(0, |n| n as usize),
        changed_count: revision["changed_count"].as_u64().unwrap_or(0),
        impacted_count: revision["impacted_count"].as_u64().unwrap_or(0),
    })
}

/// One warm-up deploy, then `runs` measured ones, each on a new branch with its own commit.
fn deploy_runs(
    server: &Server,
    fixture: &Fixture,
    label: &str,
    runs: usize,
) -> anyhow::Result<Vec<DeploySample>> {
    let api = server.api();
    let mut samples = Vec::with_capacity(runs);
    for index in 0..=runs {
        let branch = format!("{label}-{index}");
        let commit = fixture.commit_branch(&branch, index)?;
        let sample = deploy_branch(&api, &branch, &commit)?;
        eprintln!("  {branch}: {} (server {})", ms(sample.wall), ms(sample.server));
        if index > 0 {
            samples.push(sample);
        }
    }
    Ok(samples)
}

fn wall_stats(samples: &[DeploySample]) -> Stats {
    stats_of(samples.iter().map(|s| s.wall).collect())
}

fn server_stats(samples: &[DeploySample]) -> Stats {
    stats_of(samples.iter().map(|s| s.server).collect())
}

fn push_deploy_rows(
    rows: &mut Vec<Row>,
    n: usize,
    samples: &[DeploySample],
    bar: Option<Duration>,
) {
    rows.push(Row {
        name: "deploy: API call → branch deployment ready (client wall time)".into(),
        n,
        stats: wall_stats(samples),
        bar,
    });
    rows.push(Row {
        name: "the same, server side (revision queued → finished, `duration_ms`)".into(),
        n,
        stats: server_stats(samples),
        bar: None,
    });
}

fn deploy_note(n: usize, samples: &[DeploySample]) -> String {
    let first = samples.first();
    format!(
        "{} assets: each branch changes the SQL of one asset; the server reports {} assets (sources included), {} changed, {} impacted for the first measured run.",
        thousands(n),
        thousands(first.map_or(0, |s| s.asset_count)),
        first.map_or(0, |s| s.changed_count),
        first.map_or(0, |s| s.impacted_count)
    )
}

// ---------------------------------------------------------------------------------------------
// Phase 2: clone cost against production's data size

struct CloneCost {
    n: usize,
    /// (target size in bytes, production file size in bytes, deploy samples)
    sizes: Vec<(u64, u64, Vec<DeploySample>)>,
}

/// Two servers, one with about 1 MB and one with about 100 MB in production's warehouse file,
/// deployed to alternately (in alternating order) so that load from elsewhere on the machine
/// hits both alike.
fn clone_cost(
    binary: &Path,
    work: &Path,
    fixture: &Fixture,
    runs: usize,
    postgres: &Postgres,
) -> anyhow::Result<CloneCost> {
    let targets: [u64; 2] = [1 << 20, 100 << 20];
    let mut servers = Vec::new();
    let mut file_sizes = Vec::new();
    for target in targets {
        let dir = work.join(format!("server-clone-{}mb", target >> 20));
        let start = Instant::now();
        let backend = postgres.database(&format!("clone_{}mb", target >> 20))?;
        let size = match &postgres.url {
            None => seed_production(&dir.join("data"), target)?,
            Some(_) => postgres.seed(&format!("clone_{}mb", target >> 20), target)?,
        };
        eprintln!("  seeded production with {} in {}", mb(size / 1024), ms(start.elapsed()));
        let server = Server::start(binary, &dir, &fixture.dir, &backend)?;
        server.wait_for_production(&fixture.main)?;
        servers.push(server);
        file_sizes.push(size);
    }
    let mut samples: Vec<Vec<DeploySample>> = vec![Vec::new(), Vec::new()];
    for index in 0..=runs {
        // Which size goes first alternates, so neither always follows the other's deploy.
        let order = if index % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let server = &servers[which];
            let branch = format!("clone-{}mb-{index}", targets[which] >> 20);
            let commit = fixture.commit_branch(&branch, 1000 + index)?;
            let sample = deploy_branch(&server.api(), &branch, &commit)?;
            eprintln!("  {branch}: {} (server {})", ms(sample.wall), ms(sample.server));
            if index > 0 {
                samples[which].push(sample);
            }
        }
    }
    drop(servers);
    let sizes = targets
        .iter()
        .zip(file_sizes)
        .zip(samples)
        .map(|((target, size), samples)| (*target, size, samples))
        .collect();
    Ok(CloneCost { n: fixture.n, sizes })
}

/// `--postgres`: one database per server, created here and dropped when the benchmark ends.
struct Postgres {
    url: Option<String>,
    databases: std::cell::RefCell<Vec<String>>,
}

impl Postgres {
    fn name(label: &str) -> String {
        format!("offshoot_bench_{}_{label}", std::process::id())
    }

    fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let base = self.url.as_deref().context("PostgreSQL mode")?;
        let output = Command::new("psql")
            .arg(format!("{base}/{database}"))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", sql])
            .output()
            .context("running psql")?;
        if !output.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The configuration lines for a server of its own: empty for SQLite.
    fn database(&self, label: &str) -> anyhow::Result<String> {
        let Some(base) = &self.url else { return Ok(String::new()) };
        let name = Postgres::name(label);
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"))?;
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        self.databases.borrow_mut().push(name.clone());
        Ok(format!("metadata_url = \"{base}/{name}\"\nwarehouse_url = \"{base}/{name}\"\nbranch_role = \"offshoot_bench_branch\"\n"))
    }

    /// About `bytes` of rows in the 20 source tables of production's schema; returns their size.
    fn seed(&self, label: &str, bytes: u64) -> anyhow::Result<u64> {
        let name = Postgres::name(label);
        let sources = project::source_names();
        // About 200 bytes a row on disk with the 128-character payload and tuple overhead.
        let rows_per_table = (bytes / 200 / sources.len() as u64).max(1);
        let mut script = format!("CREATE SCHEMA IF NOT EXISTS {REPOSITORY}__prod; SET search_path TO {REPOSITORY}__prod;");
        for (index, table) in sources.iter().enumerate() {
            let _ = write!(
                script,
                " CREATE TABLE {table} AS SELECT i AS id, (i * 7 + {index}) % 5000 AS customer_id, (random() * 1000)::numeric(10, 2) AS amount,\
                 (ARRAY['paid', 'open', 'refunded', 'cancelled'])[1 + i % 4] AS status, (date '2024-01-01' + (i % 700))::text AS created_at,\
                 md5(i::text) || md5((i + 1)::text) || md5((i + 2)::text) || md5((i + 3)::text) AS payload FROM generate_series(1, {rows_per_table}) AS i;"
            );
        }
        self.psql(&name, &script)?;
        let size = self.psql(
            &name,
            &format!("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{REPOSITORY}__prod' AND c.relkind = 'r'"),
        )?;
        size.parse::<u64>().context("the seeded size")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        for name in self.databases.borrow().iter() {
            let _ = self.psql("postgres", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Writes about `bytes` of rows into the 20 source tables of the generated project, in
/// production's warehouse file under `data_dir`, before any server opens it. Returns the file's
/// size.
pub(crate) fn seed_production(data_dir: &Path, bytes: u64) -> anyhow::Result<u64> {
    let warehouse =
        SqliteWarehouse::new(data_dir.join("warehouse")).context("opening the warehouse folder")?;
    let repository = RepositoryName::from_any(REPOSITORY).context("a valid repository name")?;
    let production = SchemaName::for_deployment(&repository, &DeploymentName::production());
    let sources = project::source_names();
    // A row takes about 170 bytes in the file: a 128-character payload, the columns the
    // generated SQL reads, and SQLite's record and page overhead.
    let rows_per_table = (bytes / 170 / sources.len() as u64).max(1);
    let mut script = String::new();
    for (index, table) in sources.iter().enumerate() {
        let _ = write!(
            script,
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount REAL NOT NULL, \
             status TEXT NOT NULL, created_at TEXT NOT NULL, payload TEXT NOT NULL);\n\
             INSERT INTO {table} (id, customer_id, amount, status, created_at, payload)\n\
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows_per_table})\n\
             SELECT i, (i * 7 + {index}) % 5000, (abs(random()) % 100000) / 100.0,\n\
                    CASE abs(random()) % 4 WHEN 0 THEN 'paid' WHEN 1 THEN 'open' WHEN 2 THEN 'refunded' ELSE 'cancelled' END,\n\
                    date('2024-01-01', '+' || (i % 700) || ' days'), hex(randomblob(64))\n\
             FROM n;\n"
        );
    }
    block_on(warehouse.execute_production_script(&production, &script))
        .context("seeding production's warehouse file")?;
    let path = warehouse.production_file(&production);
    let size = std::fs::metadata(&path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    Ok(size)
}

/// Drives a future to completion on this thread. Writing production's file needs no async
/// runtime (sqlx's SQLite driver does its work on its own thread and wakes us through channels),
/// and this saves the benchmark a tokio dependency for one call.
fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 3: many open branch deployments: memory and API latency

struct Memory {
    n: usize,
    branches: usize,
    /// (VmHWM, VmRSS) in kB with only production deployed.
    before_kb: (u64, u64),
    /// (VmHWM, VmRSS) in kB with every branch deployment ready.
    ready_kb: (u64, u64),
    /// (VmHWM, VmRSS) in kB after the API load as well.
    loaded_kb: (u64, u64),
    /// From the first create request until every branch deployment was ready.
    all_ready_in: Duration,
    latency: Vec<Latency>,
    perf_files: Vec<PathBuf>,
}

/// Request latencies of one endpoint under one load.
struct Latency {
    endpoint: &'static str,
    clients: usize,
    /// Sorted.
    samples: Vec<Duration>,
    bar: Option<Duration>,
    wall: Duration,
}

impl Latency {
    fn p(&self, percent: usize) -> Duration {
        percentile(&self.samples, percent)
    }
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn many_deployments(
    args: &Args,
    binary: &Path,
    work: &Path,
    fixture: &Fixture,
    postgres: &Postgres,
) -> anyhow::Result<Memory> {
    let backend = postgres.database("many")?;
    let server = Server::start(binary, &work.join("server-many"), &fixture.dir, &backend)?;
    server.wait_for_production(&fixture.main)?;
    let api = server.api();
    let before_kb = status_kb(&server.pid.to_string())?;

    let mut commits = Vec::with_capacity(args.branches);
    for index in 0..args.branches {
        let branch = format!("open-{index:03}");
        commits.push((branch.clone(), fixture.commit_branch(&branch, 2000 + index)?));
    }
    let start = Instant::now();
    let mut names = Vec::with_capacity(commits.len());
    for (branch, commit) in &commits {
        let created = api.post(
            "/api/v1/branch-deployments",
            &json!({"branch_name": branch, "commit_hash": commit}),
        )?;
        names.push(
            created["name"]
                .as_str()
                .context("the create-or-update answer has no `name`")?
                .to_owned(),
        );
    }
    for (name, (_, commit)) in names.iter().zip(&commits) {
        api.wait_until_ready(name, commit)?;
    }
    let all_ready_in = start.elapsed();
    let ready_kb = status_kb(&server.pid.to_string())?;
    eprintln!(
        "  {} branch deployments ready in {}; VmRSS {}, VmHWM {}",
        names.len(),
        ms(all_ready_in),
        mb(ready_kb.1),
        mb(ready_kb.0)
    );

    let list = vec![server.url("/api/v1/deployments")];
    let shows: Vec<String> =
        names.iter().map(|name| server.url(&format!("/api/v1/deployments/{name}"))).collect();
    let mut latency = Vec::new();
    // Unloaded first, to tell the cost of one request from queueing behind 99 others.
    latency.push(load(LIST_ENDPOINT, &list, 1, 100, None)?);
    latency.push(load(SHOW_ENDPOINT, &shows, 1, 100, None)?);
    let mut perf_files = Vec::new();
    for (endpoint, urls) in [(LIST_ENDPOINT, &list), (SHOW_ENDPOINT, &shows)] {
        let recording = match &args.perf_dir {
            Some(dir) => Some(PerfRecording::start(dir, server.pid, endpoint)?),
            None => None,
        };
        let result = load(endpoint, urls, args.clients, args.requests, Some(API_P99_BAR));
        if let Some(recording) = recording {
            perf_files.push(recording.stop()?);
        }
        latency.push(result?);
    }
    let loaded_kb = status_kb(&server.pid.to_string())?;
    drop(server);
    Ok(Memory {
        n: fixture.n,
        branches: names.len(),
        before_kb,
        ready_kb,
        loaded_kb,
        all_ready_in,
        latency,
        perf_files,
    })
}

const LIST_ENDPOINT: &str = "GET /api/v1/deployments";
const SHOW_ENDPOINT: &str = "GET /api/v1/deployments/{name}";

/// `clients` threads, each with its own connection, send `requests` GETs in total to `urls`
/// (spread over them) as fast as answers come. Each client's first request opens its connection
/// and is not timed; timing starts when every client has connected.
fn load(
    endpoint: &'static str,
    urls: &[String],
    clients: usize,
    requests: usize,
    bar: Option<Duration>,
) -> anyhow::Result<Latency> {
    let per_client = requests.div_ceil(clients);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::with_capacity(clients);
    for client in 0..clients {
        let barrier = barrier.clone();
        let urls = urls.to_vec();
        threads.push(std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let agent = agent();
            let connected = fetch(&agent, &urls[client % urls.len()]);
            // Wait even after a failure, or the others would wait for this client forever.
            barrier.wait();
            connected?;
            let mut samples = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let url = &urls[(client * per_client + i) % urls.len()];
                let start = Instant::now();
                fetch(&agent, url)?;
                samples.push(start.elapsed());
            }
            Ok(samples)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut samples = Vec::with_capacity(per_client * clients);
    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(mut mine)) => samples.append(&mut mine),
            Ok(Err(error)) => failure = Some(error),
            Err(_) => failure = Some(anyhow::anyhow!("a client thread panicked")),
        }
    }
    let wall = start.elapsed();
    if let Some(error) = failure {
        return Err(error.context(format!("load on {endpoint}")));
    }
    samples.sort();
    let latency = Latency { endpoint, clients, samples, bar, wall };
    eprintln!(
        "  {endpoint}, {clients} client(s), {} requests: p50 {}, p99 {}, max {}",
        latency.samples.len(),
        ms(latency.p(50)),
        ms(latency.p(99)),
        ms(latency.p(100))
    );
    Ok(latency)
}

/// `perf record` with call graphs, attached to the server until stopped.
struct PerfRecording {
    child: Child,
    output: PathBuf,
}

impl PerfRecording {
    fn start(dir: &Path, pid: u32, endpoint: &str) -> anyhow::Result<PerfRecording> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let slug: String =
            endpoint.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let output = dir.join(format!("perf-{}.data", slug.trim_matches('_')));
        let child = Command::new("perf")
            // DWARF call graphs: the release build keeps no frame pointers, so `-g` alone would
            // cut stacks short of the handler that called the hot code.
            .args([
                "record",
                "--call-graph",
                "dwarf,16384",
                "-F",
                "199",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(&output)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `perf record` (is perf installed?)")?;
        // perf needs a moment to attach before the load starts.
        std::thread::sleep(Duration::from_millis(500));
        Ok(PerfRecording { child, output })
    }

    fn stop(mut self) -> anyhow::Result<PathBuf> {
        // SIGINT lets perf write its data; kill(1) addresses exactly the process started above.
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().context("stopping perf")?;
        self.child.wait().context("waiting for perf")?;
        eprintln!("  perf data: {}", self.output.display());
        Ok(self.output)
    }
}

// ---------------------------------------------------------------------------------------------
// The server process and its API

pub(crate) struct Server {
    child: Child,
    pub(crate) pid: u32,
    base: String,
}

impl Server {
    /// Starts `offshoot serve` with a configuration in `dir` serving the repository at `repo`,
    /// and waits until it listens. Its log goes to `dir/server.log`.
    pub(crate) fn start(
        binary: &Path,
        dir: &Path,
        repo: &Path,
        backend: &str,
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("offshoot.toml");
        let text = format!(
            "data_dir = {}\nlisten = \"127.0.0.1:0\"\napi_tokens = [\"{TOKEN}\"]\n{backend}\n[[repositories]]\nname = \"{REPOSITORY}\"\npath = {}\nproduction_branch = \"main\"\n",
            toml_string(&dir.join("data")),
            toml_string(repo)
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let log_path = dir.join("server.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // The configuration file is the whole configuration: no OFFSHOOT_* from this shell.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OFFSHOOT_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let mut server = Server { child, pid, base: String::new() };
        server.base = server.wait_for_address(&log_path)?;
        eprintln!("  server {} (pid {pid}) on {}", dir.display(), server.base);
        Ok(server)
    }

    /// Reads `offshoot serving on http://ADDR ...` from the log.
    fn wait_for_address(&mut self, log_path: &Path) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if let Some(rest) = log.lines().find_map(|line| {
                line.split_once("offshoot serving on http://").map(|(_, rest)| rest.to_owned())
            }) {
                let address = rest.split_whitespace().next().unwrap_or_default();
                return Ok(format!("http://{address}"));
            }
            if let Some(status) = self.child.try_wait().context("checking on the server")? {
                bail!("the server exited ({status}) before listening; its log:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("the server did not listen within 60 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn api(&self) -> Api {
        Api { agent: agent(), base: self.base.clone() }
    }

    /// Waits until `prod` serves `commit` (the server deploys the production branch at start).
    pub(crate) fn wait_for_production(&self, commit: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        let api = self.api();
        api.wait_until_ready(DeploymentName::production().as_str(), commit)?;
        eprintln!("  prod ready {} after the server listened", ms(start.elapsed()));
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Kills the process this benchmark started (by its handle), and reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn toml_string(path: &Path) -> String {
    let text = path.to_string_lossy();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// GETs `url` and reads the whole answer; any status but 200 is an error.
fn fetch(agent: &ureq::Agent, url: &str) -> anyhow::Result<()> {
    let mut response = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_vec()
        .with_context(|| format!("reading the answer to GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(&body));
    }
    Ok(())
}

pub(crate) struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.agent.get(&format!("{}{path}", self.base)).call();
        answer("GET", path, response)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/json")
            .send(body.to_string());
        answer("POST", path, response)
    }

    /// Polls the deployment every 5 ms until its newest revision, at `commit`, is ready and is
    /// the one serving (the server marks a revision ready a moment before it promotes it, and
    /// only then does `current_revision` point at it); returns that answer. A failed or
    /// superseded revision is an error.
    pub(crate) fn wait_until_ready(&self, name: &str, commit: &str) -> anyhow::Result<Value> {
        let start = Instant::now();
        let path = format!("/api/v1/deployments/{name}");
        loop {
            let deployment = self.get(&path)?;
            let latest = &deployment["latest_revision"];
            let serving = deployment["current_revision"]["id"]
                .as_i64()
                .is_some_and(|id| Some(id) == latest["id"].as_i64());
            if latest["commit"]["sha"].as_str() == Some(commit) {
                match latest["status"].as_str() {
                    Some("ready") if serving => return Ok(deployment),
                    Some("failed" | "superseded") => {
                        bail!(
                            "the deploy of {commit} to {name} ended {}: {}",
                            latest["status"],
                            latest["error"]
                        )
                    }
                    _ => {}
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "{name} was not ready at {commit} after {} s: {latest}",
                    READY_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

fn answer(
    method: &str,
    path: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<Value> {
    let mut response =
        response.with_context(|| format!("{method} {path}: cannot reach the server"))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    if !status.is_success() {
        bail!("{method} {path}: HTTP {}: {}", status.as_u16(), text.trim());
    }
    serde_json::from_str(&text)
        .with_context(|| format!("the answer to {method} {path} is not JSON"))
}

// ---------------------------------------------------------------------------------------------
// The report

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "**FAIL**"
    }
}

fn print_report(
    args: &Args,
    rows: &[Row],
    notes: &[String],
    clone: Option<&CloneCost>,
    memory: Option<&Memory>,
) {
    let mut failed: Vec<String> = Vec::new();
    println!("## Server results\n");
    println!("- Machine: {}", machine());
    println!("- Date: {}", command_output("date", &["-u"]).unwrap_or_else(|| "unknown".to_owned()));
    println!("- Workspace commit: {}", workspace_commit());
    println!(
        "- `offshoot serve` on embedded stores (SQLite metadata store and warehouse) on loopback; {} deploys per measurement after one warm-up; the client polls every {} ms",
        args.runs,
        POLL_INTERVAL.as_millis()
    );

    if !rows.is_empty() {
        print_deploys(rows, notes, &mut failed);
    }
    if let Some(clone) = clone {
        print_clone_cost(clone, &mut failed);
    }
    if let Some(memory) = memory {
        print_open_deployments(memory, &mut failed);
    }
    if failed.is_empty() {
        println!("\nAll server bars measured were met.");
    } else {
        println!("\n**FAIL**: {} missed the bar.", failed.join("; "));
        eprintln!("FAIL: {} missed the bar", failed.join("; "));
    }
}

fn print_deploys(rows: &[Row], notes: &[String], failed: &mut Vec<String>) {
    println!("\n### Deploy latency\n");
    println!("| Measurement | N | Median | Min | Max | Bar | Median / bar | Result |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        println!("{}", row.markdown());
        if row.bar.is_some_and(|bar| row.stats.median > bar) {
            failed.push(format!("deploy of {} assets", thousands(row.n)));
        }
    }
    println!();
    for note in notes {
        println!("- {note}");
    }
}

fn print_clone_cost(clone: &CloneCost, failed: &mut Vec<String>) {
    println!("\n### Clone cost against production's data size ({} assets)\n", thousands(clone.n));
    println!("| Production data | Production file | Median | Min | Max | Server-side median |");
    println!("|---|---:|---:|---:|---:|---:|");
    let medians: Vec<Duration> =
        clone.sizes.iter().map(|(_, _, samples)| wall_stats(samples).median).collect();
    for (target, size, samples) in &clone.sizes {
        let wall = wall_stats(samples);
        println!(
            "| about {} MB | {} | {} | {} | {} | {} |",
            target >> 20,
            mb(size / 1024),
            ms(wall.median),
            ms(wall.min),
            ms(wall.max),
            ms(server_stats(samples).median)
        );
    }
    if let [small, large] = medians.as_slice() {
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-9);
        let pass = ratio <= CLONE_RATIO_BAR;
        if !pass {
            failed.push("clone cost ratio".to_owned());
        }
        println!(
            "\nRatio of medians, 100 MB / 1 MB: **{ratio:.2}** (bar ≤ {CLONE_RATIO_BAR}, {:.2} of the bar): {}",
            ratio / CLONE_RATIO_BAR,
            verdict(pass)
        );
    }
}

fn print_open_deployments(memory: &Memory, failed: &mut Vec<String>) {
    println!(
        "\n### {} open branch deployments of {} assets\n",
        memory.branches,
        thousands(memory.n)
    );
    println!("| Measurement | Value | Bar | Value / bar | Result |");
    println!("|---|---:|---:|---:|---|");
    let rss_kb = memory.ready_kb.1.max(memory.loaded_kb.1);
    let rss_pass = rss_kb <= RSS_BAR_KB;
    if !rss_pass {
        failed.push("server RSS".to_owned());
    }
    println!(
        "| server VmRSS, the larger of: every branch deployment ready ({}), after the API load below ({}) | {} | ≤ 300 MB | {:.2} | {} |",
        mb(memory.ready_kb.1),
        mb(memory.loaded_kb.1),
        mb(rss_kb),
        rss_kb as f64 / RSS_BAR_KB as f64,
        verdict(rss_pass)
    );
    println!(
        "| server VmHWM (peak RSS of its whole life), after the API load | {} | – | – | info |",
        mb(memory.loaded_kb.0)
    );
    println!(
        "| server VmRSS with only prod deployed | {} | – | – | info |",
        mb(memory.before_kb.1)
    );
    println!(
        "| time until all {} were ready (created back to back) | {} | – | – | info |",
        memory.branches,
        ms(memory.all_ready_in)
    );

    println!(
        "\n| Endpoint | Clients | Requests | Throughput | p50 | p99 | Max | Bar (p99) | Result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for latency in &memory.latency {
        let p99 = latency.p(99);
        let (bar, result) = match latency.bar {
            Some(bar) => {
                let pass = p99 <= bar;
                if !pass {
                    failed.push(format!(
                        "p99 of {} at {} clients",
                        latency.endpoint, latency.clients
                    ));
                }
                (format!("≤ {}", ms(bar)), verdict(pass))
            }
            None => ("–".to_owned(), "info"),
        };
        println!(
            "| `{}` | {} | {} | {:.0}/s | {} | {} | {} | {bar} | {result} |",
            latency.endpoint,
            latency.clients,
            thousands(latency.samples.len()),
            latency.samples.len() as f64 / latency.wall.as_secs_f64().max(1e-9),
            ms(latency.p(50)),
            ms(p99),
            ms(latency.p(100))
        );
    }
    for file in &memory.perf_files {
        println!("\nperf data: `{}`", file.display());
    }
}
