//! `offshoot-bench incremental`: work proportional to the change (parse once per blob). Against
//! the real `offshoot serve` with embedded stores: production's first full load, warm deploys of
//! branches that each change a different 2% of the SQL files, the same after a restart (the
//! parse cache read back from disk), the server's memory; and `offshoot diff` of the generator's
//! 2% feature branch (cold and warm cache) against one full load (`offshoot validate --rev`).
//!
//! ```text
//! offshoot-bench incremental [--assets 10000,100000] [--runs 9] [--restarts 3] [--diff-runs 5] [--dir PATH] [--keep] [--offshoot PATH]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_repo::write::Tree;
use offshoot_repo::GitRepository;

use crate::server::{deploy_branch, DeploySample, Server};
use crate::{machine, mb, ms, project, stats_of, status_kb, thousands, workspace_commit, AUTHOR};

pub struct Args {
    assets: Vec<usize>,
    runs: usize,
    restarts: usize,
    diff_runs: usize,
    dir: Option<PathBuf>,
    keep: bool,
    offshoot: Option<PathBuf>,
}

const USAGE: &str = "usage: offshoot-bench incremental [--assets 10000,100000] [--runs 9] [--restarts 3] [--diff-runs 5] [--dir PATH] [--keep] [--offshoot PATH]";

pub fn parse_args(arguments: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        assets: vec![10_000, 100_000],
        runs: 9,
        restarts: 3,
        diff_runs: 5,
        dir: None,
        keep: false,
        offshoot: None,
    };
    let mut it = arguments;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--assets" => {
                args.assets = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().context("--assets takes numbers"))
                    .collect::<anyhow::Result<_>>()?
            }
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--restarts" => args.restarts = value()?.parse().context("--restarts")?,
            "--diff-runs" => args.diff_runs = value()?.parse().context("--diff-runs")?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--offshoot" => args.offshoot = Some(PathBuf::from(value()?)),
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if args.runs == 0 || args.assets.iter().any(|n| *n < 100) {
        bail!("--runs must be at least 1 and asset counts at least 100");
    }
    Ok(args)
}

/// Bars of issue 19.
const WARM_BAR: Duration = Duration::from_millis(100);
const RESTART_BAR: Duration = Duration::from_millis(250);
const LARGE_BAR: Duration = Duration::from_secs(1);
const LARGE_RSS_BAR_KB: u64 = 500 * 1024;
const DIFF_RATIO_BAR: f64 = 1.2;

pub fn run(args: &Args) -> anyhow::Result<()> {
    let binary = crate::server::offshoot_binary(args.offshoot.as_deref())?;
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = base.join(format!("offshoot-bench-incremental-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut report = String::new();
    let result = (|| {
        for &n in &args.assets {
            report.push_str(&measure(args, &binary, &work, n)?);
        }
        Ok::<(), anyhow::Error>(())
    })();
    println!(
        "## Incremental loads ({}, offshoot {}, {})\n",
        machine(),
        workspace_commit(),
        command_line()
    );
    println!("{report}");
    if args.keep {
        eprintln!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn command_line() -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{date}, `offshoot-bench {}`", std::env::args().skip(1).collect::<Vec<_>>().join(" "))
}

/// A copy of `main` in which every 50th SQL file (starting at `offset`) filters differently:
/// 2% of the files are new blobs, unlike any commit before.
fn two_percent(main: &Tree, sql_paths: &[String], offset: usize, label: &str) -> Tree {
    let mut tree = main.clone();
    for path in sql_paths.iter().skip(offset % 50).step_by(50) {
        if let Some(content) = tree.get_mut(path) {
            let sql = String::from_utf8_lossy(content).into_owned();
            *content = sql
                .replacen("t0.status <> 'cancelled'", &format!("t0.status <> '{label}'"), 1)
                .into_bytes();
        }
    }
    tree
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

fn row(out: &mut String, name: &str, n: usize, samples: &[Duration], bar: Option<Duration>) {
    let stats = stats_of(samples.to_vec());
    let (bar_text, verdict_text) = match bar {
        Some(bar) => (format!("≤ {}", ms(bar)), verdict(stats.median <= bar)),
        None => ("–".to_owned(), "info"),
    };
    out.push_str(&format!(
        "| {name} | {} | {} | {} | {} | {} | {bar_text} | {verdict_text} |\n",
        thousands(n),
        samples.len(),
        ms(stats.median),
        ms(stats.min),
        ms(stats.max),
    ));
}

fn deploy_all(
    server: &Server,
    repo: &GitRepository,
    main: &Tree,
    sql_paths: &[String],
    label: &str,
    runs: std::ops::Range<usize>,
) -> anyhow::Result<Vec<DeploySample>> {
    let api = server.api();
    let mut samples = Vec::new();
    for index in runs {
        let branch = format!("{label}-{index}");
        let tree = two_percent(main, sql_paths, index, &format!("x{index}"));
        let commit = repo.commit_tree(&branch, Some("main"), &tree, "2% edited", AUTHOR)?;
        let sample = deploy_branch(&api, &branch, &commit)?;
        eprintln!("  {branch}: {} (server {})", ms(sample.wall), ms(sample.server));
        samples.push(sample);
    }
    Ok(samples)
}

fn measure(args: &Args, binary: &Path, work: &Path, n: usize) -> anyhow::Result<String> {
    let mut out = String::new();
    eprintln!("{n} assets: generating");
    let generated = project::generate(n);
    let dir = work.join(format!("repo-{n}"));
    std::fs::create_dir_all(&dir)?;
    let repo = GitRepository::init(&dir, "main")?;
    let main_sha = repo.commit_tree("main", None, &generated.main, "generated", AUTHOR)?;
    repo.commit_tree("feature", Some("main"), &generated.feature, "feature", AUTHOR)?;
    let sql_paths: Vec<String> =
        generated.main.keys().filter(|p| p.ends_with(".sql")).cloned().collect();
    let bytes: usize = generated.main.values().map(Vec::len).sum();

    // The server: production's first load is a full parse into an empty cache.
    let server_dir = work.join(format!("server-{n}"));
    let started = Instant::now();
    let server = Server::start(binary, &server_dir, &dir, "")?;
    server.wait_for_production(&main_sha)?;
    let first_wall = started.elapsed();
    let prod = server.api().get("/api/v1/deployments/prod")?;
    let first_server = prod["current_revision"]["duration_ms"].as_i64().unwrap_or(0);
    let warm = deploy_all(&server, &repo, &generated.main, &sql_paths, "warm", 0..args.runs + 1)?;
    let warm = &warm[1..];
    let (rss, hwm) = status_kb(&server.pid.to_string())?;
    drop(server);

    let mut restarted = Vec::new();
    let mut restart_server = Vec::new();
    for restart in 0..args.restarts {
        let server = Server::start(binary, &server_dir, &dir, "")?;
        server.wait_for_production(&main_sha)?;
        let index = 1000 + restart;
        let samples =
            deploy_all(&server, &repo, &generated.main, &sql_paths, "restart", index..index + 1)?;
        restarted.extend(samples.iter().map(|s| s.wall));
        restart_server.extend(samples.iter().map(|s| s.server));
    }
    let cache_bytes: u64 = std::fs::read_dir(server_dir.join("data").join("parse-cache"))
        .map(|entries| {
            entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
        })
        .unwrap_or(0);

    let large = n >= 100_000;
    out.push_str(&format!(
        "### {} assets ({:.1} MB of files; each branch edits {} SQL files, a different 2%)\n\n",
        thousands(n),
        bytes as f64 / 1e6,
        sql_paths.len().div_ceil(50)
    ));
    out.push_str("| measurement | N | runs | median | min | max | bar | verdict |\n|---|---:|---:|---:|---:|---:|---|---|\n");
    out.push_str(&format!(
        "| first full load: prod's deploy into an empty parse cache (server `duration_ms`; wall from server start {}) | {} | 1 | {} ms | – | – | – | info |\n",
        ms(first_wall),
        thousands(n),
        first_server
    ));
    let walls: Vec<Duration> = warm.iter().map(|s| s.wall).collect();
    let servers: Vec<Duration> = warm.iter().map(|s| s.server).collect();
    let bar = if large { LARGE_BAR } else { WARM_BAR };
    row(&mut out, "2% push, warm server: API call → ready (client wall)", n, &walls, Some(bar));
    row(&mut out, "the same, server side (`duration_ms`)", n, &servers, None);
    if !restarted.is_empty() {
        let bar = (!large).then_some(RESTART_BAR);
        row(&mut out, "2% push, first deploy after a restart (client wall)", n, &restarted, bar);
        row(&mut out, "the same, server side", n, &restart_server, None);
    }
    out.push_str(&format!(
        "\nServer memory after the warm deploys: VmRSS {}, VmHWM {}{}. Parse cache on disk: {}. The first measured deploy reported {} assets, {} changed, {} impacted.\n\n",
        mb(rss),
        mb(hwm),
        if large {
            format!(" (bar: RSS < {}: {})", mb(LARGE_RSS_BAR_KB), verdict(rss < LARGE_RSS_BAR_KB))
        } else {
            String::new()
        },
        mb(cache_bytes / 1024),
        warm.first().map_or(0, |s| s.asset_count),
        warm.first().map_or(0, |s| s.changed_count),
        warm.first().map_or(0, |s| s.impacted_count),
    ));

    if args.diff_runs > 0 {
        out.push_str(&diff_rows(args, binary, &dir, n)?);
    }
    Ok(out)
}

/// Times one run of the CLI (process start to exit); fails if it fails.
fn time_cli(binary: &Path, arguments: &[&str]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let output = Command::new(binary).args(arguments).output().context("running offshoot")?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "offshoot {} failed: {}{}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

fn diff_rows(args: &Args, binary: &Path, dir: &Path, n: usize) -> anyhow::Result<String> {
    let repo = dir.to_str().context("a UTF-8 path")?;
    let cache = dir.join(".git").join("offshoot");
    let diff = ["diff", "--repo", repo, "--base", "main", "--head", "feature", "--format", "json"];
    let mut full = Vec::new();
    let mut scratch = Vec::new();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..args.diff_runs {
        eprintln!("  diff round {round}");
        full.push(time_cli(binary, &["validate", "--repo", repo, "--rev", "main"])?);
        let mut no_cache = diff.to_vec();
        no_cache.push("--no-cache");
        scratch.push(time_cli(binary, &no_cache)?);
        let _ = std::fs::remove_dir_all(&cache);
        cold.push(time_cli(binary, &diff)?);
        warm.push(time_cli(binary, &diff)?);
    }
    let full_median = stats_of(full.clone()).median;
    let ratio = |samples: &[Duration]| {
        stats_of(samples.to_vec()).median.as_secs_f64() / full_median.as_secs_f64()
    };
    let mut out = String::from("`offshoot diff --base main --head feature` (the generator's 2% branch), process start to exit:\n\n| command | N | runs | median | min | max | × one full load | verdict (≤ 1.2×) |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
    let mut line = |name: &str, samples: &[Duration], bar: bool| {
        let stats = stats_of(samples.to_vec());
        let r = ratio(samples);
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {r:.2} | {} |\n",
            thousands(n),
            samples.len(),
            ms(stats.median),
            ms(stats.min),
            ms(stats.max),
            if bar { verdict(r <= DIFF_RATIO_BAR) } else { "info" }
        ));
    };
    line("one full load: `offshoot validate --rev main`", &full, false);
    line("`diff --no-cache` (both commits parsed)", &scratch, false);
    line("`diff`, empty cache (base parsed, head reuses it)", &cold, true);
    line("`diff`, cache warm from the previous run", &warm, true);
    out.push('\n');
    Ok(out)
}
