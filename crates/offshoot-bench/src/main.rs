//! `offshoot-bench`: generates synthetic projects in fresh git repositories, times loading and
//! diffing them against the bars in BENCHMARKS.md and prints a markdown report. The `server`
//! mode (src/server.rs) measures the server bars against the real `offshoot serve` binary.
//!
//! ```text
//! cargo run --release -p offshoot-bench -- [--assets-small 1000] [--assets-large 10000] [--runs 15] [--dir PATH] [--keep]
//! offshoot-bench --only load --repo PATH   # one load of PATH's `main` in this process; prints VmHWM
//! offshoot-bench server [--runs 9] [--skip-10k] ...   # needs `cargo build --release -p offshoot -p offshoot-bench`
//! offshoot-bench promotion [--models 1000] [--changed 29]   # merge → production: promote vs rebuild (src/promotion.rs)
//! offshoot-bench catch-up [--models 1000] [--changed 29]   # the same through the server's catch-up (src/catch_up.rs)
//! offshoot-bench incremental [--assets 10000,100000] ...   # parse once per blob (src/incremental.rs)
//! offshoot-bench runs [--assets 1000] [--rows 1000] ...     # runs against the engine's floor (src/runs.rs)
//! offshoot-bench webhooks [--clients 64] [--requests 384] [--body-mb 25]   # a flood of forged webhooks (src/webhooks.rs)
//! ```

mod catch_up;
mod data_diff;
mod incremental;
mod project;
mod promotion;
mod runs;
mod server;
mod webhooks;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{diff, Selection, Snapshot};
use offshoot_project::{LoadError, MemoryFiles, Project, ProjectFiles, MANIFEST_PATH};
use offshoot_repo::GitRepository;

const AUTHOR: (&str, &str) = ("Bench Bot", "bench@offshoot.invalid");
const SELECTION: &str = "changed_in_branch:ANY+";

struct Args {
    assets_small: usize,
    assets_large: usize,
    runs: usize,
    dir: Option<PathBuf>,
    keep: bool,
    only: Option<String>,
    repo: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        assets_small: 1000,
        assets_large: 10_000,
        runs: 15,
        dir: None,
        keep: false,
        only: None,
        repo: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--assets-small" => args.assets_small = value()?.parse().context("--assets-small")?,
            "--assets-large" => args.assets_large = value()?.parse().context("--assets-large")?,
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--only" => args.only = Some(value()?),
            "--repo" => args.repo = Some(PathBuf::from(value()?)),
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("usage: offshoot-bench [--assets-small N] [--assets-large N] [--runs N] [--dir PATH] [--keep]");
                println!("       offshoot-bench --only load --repo PATH");
                println!("       offshoot-bench server --help");
                println!("       offshoot-bench webhooks --help");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`; see --help"),
        }
    }
    if args.runs == 0 || args.assets_small < 100 || args.assets_large < 100 {
        bail!("--runs must be at least 1 and asset counts at least 100");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let mut arguments = std::env::args().skip(1).peekable();
    if arguments.peek().map(String::as_str) == Some("server") {
        arguments.next();
        return server::run(&server::parse_args(arguments)?);
    }
    if arguments.peek().map(String::as_str) == Some("data-diff") {
        arguments.next();
        return data_diff::run(&data_diff::parse_args(arguments)?);
    }
    if arguments.peek().map(String::as_str) == Some("catch-up") {
        arguments.next();
        return catch_up::run(&catch_up::parse_args(arguments)?);
    }
    if arguments.peek().map(String::as_str) == Some("promotion") {
        arguments.next();
        return promotion::run(&promotion::parse_args(arguments)?);
    }
    if arguments.peek().map(String::as_str) == Some("runs") {
        arguments.next();
        return runs::run(&runs::parse_args(arguments)?);
    }
    if arguments.peek().map(String::as_str) == Some("incremental") {
        arguments.next();
        return incremental::run(&incremental::parse_args(arguments)?);
    }
    if arguments.peek().map(String::as_str) == Some("webhooks") {
        arguments.next();
        return webhooks::run(&webhooks::parse_args(arguments)?);
    }
    let args = parse_args()?;
    match args.only.as_deref() {
        None => run(&args),
        Some("load") => {
            let repo = args.repo.as_deref().context("--only load needs --repo PATH")?;
            only_load(repo)
        }
        Some(other) => bail!("unknown --only mode `{other}`; the only one is `load`"),
    }
}

// ---------------------------------------------------------------------------------------------
// Timing

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

/// Runs `f` once to warm up, then `runs` times; `f` returns the duration it measured itself, so it
/// can leave setup and drops out.
fn measure(runs: usize, mut f: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Stats> {
    f()?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        samples.push(f()?);
    }
    Ok(stats_of(samples))
}

/// Median, min and max of at least one sample.
fn stats_of(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats { median: samples[samples.len() / 2], min: samples[0], max: samples[samples.len() - 1] }
}

/// Times `f`; its result is dropped after the clock stops.
fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = black_box(f()?);
    let elapsed = start.elapsed();
    drop(out);
    Ok(elapsed)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

fn load_project(files: &dyn ProjectFiles) -> anyhow::Result<Project> {
    match offshoot_project::load(files) {
        Ok(project) => Ok(project),
        Err(LoadError::Invalid(diagnostics)) => {
            let shown: Vec<String> = diagnostics.iter().take(5).map(|d| d.to_string()).collect();
            bail!(
                "the generated project is invalid ({} problems):\n{}",
                diagnostics.len(),
                shown.join("\n")
            )
        }
        Err(error) => Err(error.into()),
    }
}

/// What the bar measures: the commit's files, then load and validate.
fn load_at(repo: &GitRepository, sha: &str) -> anyhow::Result<Project> {
    let files = repo.files_at(sha)?;
    load_project(&files)
}

/// Every file `load` reads, copied out of the commit into memory.
fn read_all(repo: &GitRepository, sha: &str) -> anyhow::Result<MemoryFiles> {
    let files = repo.files_at(sha)?;
    let mut memory = MemoryFiles::default();
    for path in files.asset_paths()?.into_iter().chain([MANIFEST_PATH.to_owned()]) {
        let content =
            files.read(&path)?.with_context(|| format!("{path} was listed but cannot be read"))?;
        memory.files.insert(path, content);
    }
    Ok(memory)
}

/// The same files with every `/* offshoot ... */` header cut off, to price TOML parsing.
fn without_headers(files: &MemoryFiles) -> MemoryFiles {
    let files = files
        .files
        .iter()
        .map(|(path, content)| {
            let text = String::from_utf8_lossy(content);
            let body = match (text.starts_with("/* offshoot"), text.find("*/")) {
                (true, Some(end)) => text[end + 2..].to_owned(),
                _ => text.into_owned(),
            };
            (path.clone(), body.into_bytes())
        })
        .collect();
    MemoryFiles { files }
}

// ---------------------------------------------------------------------------------------------
// Memory

/// `(VmHWM, VmRSS)` of this process in kB.
fn memory_kb() -> anyhow::Result<(u64, u64)> {
    status_kb("self")
}

/// `(VmHWM, VmRSS)` in kB of the process `pid` (a number, or `self`).
fn status_kb(pid: &str) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in {path}"))?;
        let number = line[name.len()..].trim().trim_end_matches("kB").trim();
        number.parse().with_context(|| format!("parsing {line:?}"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// `--only load`: one load in a fresh process, so its peak is the load's own.
fn only_load(path: &Path) -> anyhow::Result<()> {
    let (before, _) = memory_kb()?;
    let repo = GitRepository::open(path)?;
    let sha = repo.resolve("main")?.sha;
    let start = Instant::now();
    let project = load_at(&repo, &sha)?;
    let elapsed = start.elapsed();
    let (hwm, rss) = memory_kb()?;
    println!(
        "assets={} load_ms={:.2} hwm_before_kb={before} hwm_kb={hwm} rss_kb={rss}",
        project.snapshot.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// What one `--only load` process reports.
struct ChildRun {
    load: Duration,
    before_kb: u64,
    hwm_kb: u64,
    rss_kb: u64,
}

fn load_in_child(repo: &Path) -> anyhow::Result<ChildRun> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let output = Command::new(exe)
        .arg("--only")
        .arg("load")
        .arg("--repo")
        .arg(repo)
        .output()
        .context("running --only load")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("--only load failed: {}{}", stdout, String::from_utf8_lossy(&output.stderr));
    }
    let value = |name: &str| -> anyhow::Result<f64> {
        let prefix = format!("{name}=");
        let word = stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&prefix))
            .with_context(|| format!("no {name} in {stdout:?}"))?;
        word.parse().with_context(|| format!("parsing {name}={word}"))
    };
    Ok(ChildRun {
        load: Duration::from_secs_f64(value("load_ms")? / 1000.0),
        before_kb: value("hwm_before_kb")? as u64,
        hwm_kb: value("hwm_kb")? as u64,
        rss_kb: value("rss_kb")? as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// The environment

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l["MemTotal:".len()..].trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!("{model}, {cores} cores (nproc), {:.1} GB RAM", total_kb as f64 / 1024.0 / 1024.0)
}

fn workspace_commit() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.to_string_lossy();
    match command_output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]) {
        Some(sha) => {
            let dirty = command_output(
                "git",
                &["-C", &root, "status", "--porcelain", "--untracked-files=no"],
            )
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{sha} (with uncommitted changes)")
            } else {
                sha
            }
        }
        None => "unknown (git unavailable)".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// A generated project committed to its own repository.
struct Fixture {
    n: usize,
    dir: PathBuf,
    repo: GitRepository,
    main: String,
    feature: String,
    edits: String,
}

fn fixture(work: &Path, n: usize) -> anyhow::Result<Fixture> {
    let start = Instant::now();
    let generated = project::generate(n);
    let generated_in = start.elapsed();
    let dir = work.join(format!("repo-{n}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let repo = GitRepository::init(&dir, "main")?;
    let main =
        repo.commit_tree("main", None, &generated.main, &format!("{n} generated assets"), AUTHOR)?;
    let feature = repo.commit_tree(
        "feature",
        Some("main"),
        &generated.feature,
        "Feature: edit about 2% of the assets",
        AUTHOR,
    )?;
    eprintln!(
        "  {n} assets: generated in {}, committed main + feature in {} ({} files, {} KiB of SQL)",
        ms(generated_in),
        ms(start.elapsed() - generated_in),
        generated.main.len(),
        generated.main.values().map(Vec::len).sum::<usize>() / 1024
    );
    Ok(Fixture { n, dir, repo, main, feature, edits: generated.edits })
}

struct Row {
    name: String,
    n: usize,
    stats: Stats,
    bar: Option<Duration>,
}

impl Row {
    fn markdown(&self) -> String {
        let (bar, ratio, verdict) = match self.bar {
            Some(bar) => {
                let ratio = self.stats.median.as_secs_f64() / bar.as_secs_f64();
                let verdict = if self.stats.median <= bar { "PASS" } else { "**FAIL**" };
                (format!("≤ {}", ms(bar)), format!("{ratio:.2}"), verdict)
            }
            None => ("–".to_owned(), "–".to_owned(), "info"),
        };
        format!(
            "| {} | {} | {} | {} | {} | {bar} | {ratio} | {verdict} |",
            self.name,
            thousands(self.n),
            ms(self.stats.median),
            ms(self.stats.min),
            ms(self.stats.max)
        )
    }
}

fn thousands(n: usize) -> String {
    let reversed: Vec<char> = n.to_string().chars().rev().collect();
    let groups: Vec<String> =
        reversed.chunks(3).rev().map(|group| group.iter().rev().collect()).collect();
    groups.join(",")
}

fn run(args: &Args) -> anyhow::Result<()> {
    let total = Instant::now();
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = base.join(format!("offshoot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!("offshoot-bench: generating projects in {}", work.display());
    let result = benchmark(args, &work);
    if args.keep {
        eprintln!("kept {}", work.display());
    } else if let Err(error) = std::fs::remove_dir_all(&work) {
        eprintln!("could not remove {}: {error}", work.display());
    }
    eprintln!("done in {:.1} s", total.elapsed().as_secs_f64());
    result
}

fn benchmark(args: &Args, work: &Path) -> anyhow::Result<()> {
    let runs = args.runs;
    let small = fixture(work, args.assets_small)?;
    let large = fixture(work, args.assets_large)?;
    let mut rows = Vec::new();

    // Sanity: both branches load, and the feature branch's change set looks like the edits made.
    let mut change_summaries = Vec::new();
    for f in [&small, &large] {
        let base = load_at(&f.repo, &f.main)?;
        let head = load_at(&f.repo, &f.feature)?;
        let changes = diff(&base.snapshot, &head.snapshot);
        let selected = Selection::parse(SELECTION)?.evaluate(&head.snapshot, &changes);
        change_summaries.push(format!(
            "{} assets (+ {} sources): feature branch = {}; Offshoot reports {} changed, {} impacted downstream, `{SELECTION}` selects {}",
            thousands(f.n),
            base.manifest.sources.len(),
            f.edits,
            changes.changes.len(),
            changes.impacted.len(),
            selected.len()
        ));
    }

    eprintln!("measuring ({runs} runs each after one warm-up)");
    let stats = measure(runs, || timed(|| load_at(&small.repo, &small.main)))?;
    rows.push(Row {
        name: "load + validate N assets from a commit".into(),
        n: small.n,
        stats,
        bar: Some(Duration::from_millis(150)),
    });

    // Where the small load spends its time; measured before the large snapshots fill the heap.
    let mut phases = Vec::new();
    let stats = measure(runs, || timed(|| read_all(&small.repo, &small.main)))?;
    phases.push(("git: list the tree and read every blob", stats));
    let memory = read_all(&small.repo, &small.main)?;
    let stats = measure(runs, || timed(|| load_project(&memory)))?;
    phases.push(("load + validate from memory (everything but git)", stats));
    let headless = without_headers(&memory);
    let stats = measure(runs, || timed(|| load_project(&headless)))?;
    phases.push(("load + validate from memory, headers cut off (no TOML headers)", stats));
    let assets: Vec<offshoot_core::Asset> =
        load_project(&memory)?.snapshot.assets().cloned().collect();
    let stats = measure(runs, || {
        let input = assets.clone();
        timed(|| Ok(Snapshot::new(input)?))
    })?;
    phases.push(("`Snapshot::new`: graph order, fingerprints, downstream index", stats));

    let stats = measure(runs, || timed(|| load_at(&large.repo, &large.main)))?;
    rows.push(Row {
        name: "load + validate N assets from a commit".into(),
        n: large.n,
        stats,
        bar: None,
    });
    let base = load_at(&large.repo, &large.main)?.snapshot;
    let head = load_at(&large.repo, &large.feature)?.snapshot;
    let stats = measure(runs, || timed(|| Ok(diff(&base, &head))))?;
    rows.push(Row {
        name: "diff two snapshots".into(),
        n: large.n,
        stats,
        bar: Some(Duration::from_millis(30)),
    });
    let selection = Selection::parse(SELECTION)?;
    let stats = measure(runs, || {
        timed(|| {
            let changes = diff(&base, &head);
            Ok(selection.evaluate(&head, &changes))
        })
    })?;
    rows.push(Row { name: format!("diff + evaluate `{SELECTION}`"), n: large.n, stats, bar: None });

    // One load per fresh process, as a CLI invocation does it: the time and the peak memory.
    let mut children = Vec::new();
    let stats = measure(runs, || {
        let child = load_in_child(&small.dir)?;
        let load = child.load;
        children.push(child);
        Ok(load)
    })?;
    rows.insert(
        1,
        Row {
            name: "the same, as the only load in a fresh process (like one CLI run)".into(),
            n: small.n,
            stats,
            bar: Some(Duration::from_millis(150)),
        },
    );
    let mut peaks: Vec<u64> = children.iter().map(|c| c.hwm_kb).collect();
    peaks.sort();
    let child = &children[children.len() / 2];
    let (hwm, rss) = memory_kb()?;

    println!("## Results\n");
    println!("- Machine: {}", machine());
    println!("- Date: {}", command_output("date", &["-u"]).unwrap_or_else(|| "unknown".to_owned()));
    println!("- Workspace commit: {}", workspace_commit());
    println!("- Runs: {runs} per measurement after one warm-up; times are wall clock\n");
    println!("| Measurement | N | Median | Min | Max | Bar | Median / bar | Result |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for row in &rows {
        println!("{}", row.markdown());
    }
    println!(
        "| peak memory (VmHWM) of that process | {} | {} | {} | {} | – | – | info |",
        thousands(small.n),
        mb(peaks[peaks.len() / 2]),
        mb(peaks[0]),
        mb(peaks[peaks.len() - 1])
    );
    println!(
        "\nA load process starts at a VmHWM of about {} and ends with VmRSS {}. This benchmark process, \
         after everything above ({} assets loaded several times), has VmHWM {} and VmRSS {}.",
        mb(child.before_kb),
        mb(child.rss_kb),
        thousands(large.n),
        mb(hwm),
        mb(rss)
    );
    println!("\n### Projects\n");
    for summary in &change_summaries {
        println!("- {summary}");
    }
    println!("\n### Where the load of {} assets spends its time\n", thousands(small.n));
    println!("| Phase | Median | Min | Max |");
    println!("|---|---:|---:|---:|");
    for (name, stats) in &phases {
        println!("| {name} | {} | {} | {} |", ms(stats.median), ms(stats.min), ms(stats.max));
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.bar.is_some_and(|b| r.stats.median > b))
        .map(|r| format!("{} (N = {})", r.name, thousands(r.n)))
        .collect();
    if failed.is_empty() {
        println!("\nAll bars met.");
    } else {
        println!("\n**FAIL**: {} missed the bar.", failed.join("; "));
        eprintln!("FAIL: {} missed the bar", failed.join("; "));
    }
    Ok(())
}
