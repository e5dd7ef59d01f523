//! `offshoot demo`: builds a git repository from the example shop project with a feature branch,
//! seeds a production warehouse, starts the server on embedded defaults watching the repository,
//! deploys prod and the branch, materializes production and the branch's changed assets with
//! their downstream, and says what to look at.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{diff, BranchName, DeploymentName, RepositoryName, RunStatus, SchemaName, Selection};
use offshoot_repo::GitRepository;
use offshoot_server::{RepositoryConfig, ServerConfig, SharedState, WatchConfig};
use offshoot_store::{Deployment, Run};

use crate::report::{self, Comparison};
use crate::{serve, shop, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Where to create the demo repository (the server's data goes into DIR/.offshoot).
    #[arg(long, default_value = "offshoot-demo")]
    dir: PathBuf,
    /// Address for the server; if it is taken, a free port is used.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Stop after the demo is set up instead of serving until Ctrl-C.
    #[arg(long)]
    exit: bool,
}

pub const FEATURE_BRANCH: &str = "feature/eur-revenue";
const AUTHOR: (&str, &str) = ("Dana Demo", "dana@shop.example");

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if args.dir.exists() && std::fs::read_dir(&args.dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; remove it or pass --dir", args.dir.display());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    build_repository(&dir)?;
    print_change_set(&dir)?;

    let config = demo_config(&dir)?;
    let token = serve::generated_token(&config.data_dir.join("api-token"))?;
    let mut config = config;
    config.api_tokens = vec![token];
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move { run_server(config, &args.listen, args.exit, &dir).await })
}

fn build_repository(dir: &std::path::Path) -> anyhow::Result<()> {
    let repo = GitRepository::init(dir, "main")?;
    let main_tree = shop::main_tree();
    repo.commit_tree("main", None, &main_tree, "Shop analytics pipeline", AUTHOR)?;
    let feature = shop::feature_tree(main_tree.clone());
    repo.commit_tree(FEATURE_BRANCH, Some("main"), &feature, "Revenue in EUR: skip unpaid orders, weekly revenue", AUTHOR)?;
    repo.commit_tree("main", None, &shop::main_after_fork(main_tree), "Count settled payments too", AUTHOR)?;
    repo.checkout("main")?;
    // The server's data lives in DIR/.offshoot; keep it out of `git add -A` in the demo repository.
    std::fs::write(dir.join(".git/info/exclude"), ".offshoot/\n").context("writing .git/info/exclude")?;
    Ok(())
}

fn print_change_set(dir: &std::path::Path) -> anyhow::Result<()> {
    let repo = GitRepository::open(dir)?;
    let base_tip = repo.resolve("main")?;
    let head = repo.resolve(FEATURE_BRANCH)?;
    let compared = repo.merge_base(&base_tip.sha, &head.sha)?;
    let base = crate::diff::load(&repo, &compared, "main")?.context("the embedded example is valid")?;
    let head_project = crate::diff::load(&repo, &head, FEATURE_BRANCH)?.context("the demo branch is valid")?;
    let changes = diff(&base.snapshot, &head_project.snapshot);
    let comparison = Comparison {
        base_rev: "main",
        base_tip: &base_tip,
        compared: &compared,
        against: "merge-base",
        head_rev: FEATURE_BRANCH,
        head: &head,
        changes: &changes,
    };
    let selected: Vec<String> = Selection::parse("changed_in_branch:ANY+")
        .expect("a valid selection")
        .evaluate(&head_project.snapshot, &changes)
        .iter()
        .map(|k| k.to_string())
        .collect();
    println!("Created the demo repository {}: `main` holds the shop pipeline,", dir.display());
    println!("`{FEATURE_BRANCH}` changes it, and `main` moved on after the branch forked.\n");
    print!("{}", report::text(&comparison));
    println!("(stg_orders was only reformatted and stg_payments changed on main after the fork: neither is the branch's change.)");
    println!("\n`changed_in_branch:ANY+` selects: {}\n", selected.join(", "));
    Ok(())
}

fn demo_config(dir: &std::path::Path) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::new(dir.join(".offshoot"));
    std::fs::create_dir_all(&config.data_dir)?;
    config.repositories.push(RepositoryConfig {
        name: RepositoryName::new("shop").expect("a valid name"),
        path: dir.to_path_buf(),
        production_branch: "main".to_owned(),
        watch: Some(WatchConfig { branches: "*".to_owned(), interval: Duration::from_millis(500) }),
        remote: None,
        forge: None,
    });
    Ok(config)
}

async fn run_server(mut config: ServerConfig, listen: &str, exit: bool, dir: &std::path::Path) -> anyhow::Result<Outcome> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a local port")?,
    };
    let address = listener.local_addr()?;
    config.public_url = format!("http://{address}");
    let (state, warehouse) = serve::embedded_state(config.clone()).await?;
    let repository = config.repositories[0].name.clone();
    let production = SchemaName::for_deployment(&repository, &DeploymentName::production());
    warehouse.execute_production_script(&production, shop::SEED_SQL).await.context("seeding the production warehouse")?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(offshoot_server::serve(state.clone(), listener, async move {
        tokio::select! {
            _ = serve::shutdown_signal() => {}
            _ = stopped => {}
        }
    }));

    println!("Offshoot is serving on http://{address} (embedded SQLite store and warehouse in {}).", config.data_dir.display());
    let prod = wait_ready(&state, &repository, None).await?;
    let prod_run = materialize(&state, &prod, "key:*").await?;
    report_run(&state, "prod", &prod_run).await?;
    let branch = wait_ready(&state, &repository, Some(FEATURE_BRANCH)).await?;
    let branch_run = materialize(&state, &branch, "changed_in_branch:ANY+").await?;
    report_run(&state, branch.name.as_str(), &branch_run).await?;

    let token_file = config.data_dir.join("api-token");
    println!("\nWhat to look at:");
    println!("  http://{address}/#/d/{repository}/{}   the web UI: the branch's lineage with its changes marked", branch.name);
    println!("  http://{address}/api/v1/deployments                          both deployments, their revisions and change counts");
    println!("  http://{address}/api/v1/deployments/{}/changes  why each asset changed, with code diffs", branch.name);
    println!("  http://{address}/api/v1/runs/{}                                  the branch run: only changed assets and their downstream", branch_run.id.0);
    println!("  {}/warehouse/  one SQLite file per deployment; the branch file holds only what it rebuilt", config.data_dir.display());
    println!("\nTry the CLI against it:");
    println!("  export OFFSHOOT_URL=http://{address} OFFSHOOT_API_TOKEN=$(cat {})", token_file.display());
    println!("  offshoot deployment list");
    println!("  offshoot deployment status {}", branch.name);
    println!("  offshoot materialize --deployment {} --select 'key:weekly_revenue+' --wait", branch.name);
    println!("  git -C {} checkout -b feature/another && (edit, commit): a new branch deployment appears", dir.display());
    if exit {
        let _ = stop.send(());
    } else {
        println!("\nServing until Ctrl-C.");
    }
    server.await.context("the server task")??;
    Ok(Outcome::Ok)
}

/// Waits until the deployment (prod, or the branch's) serves a ready revision.
async fn wait_ready(state: &SharedState, repository: &RepositoryName, branch: Option<&str>) -> anyhow::Result<Deployment> {
    let started = Instant::now();
    loop {
        let deployment = match branch {
            None => state.store.find_deployment(repository, &DeploymentName::production()).await?,
            Some(branch) => state.store.find_deployment_by_branch(repository, &BranchName::new(branch)?).await?,
        };
        if let Some(deployment) = deployment {
            if let Some(current) = deployment.current_revision {
                let revision = state.store.get_revision(current).await?;
                println!(
                    "  {} deployed {} in {} ms: {} assets, {} changed, {} impacted",
                    deployment.name,
                    revision.commit.sha.short(),
                    revision.finished_at.unwrap_or(revision.queued_at) - revision.queued_at,
                    revision.asset_count,
                    revision.changed_count,
                    revision.impacted_count
                );
                return Ok(deployment);
            }
            let latest = state.store.list_revisions(deployment.id, 1).await?;
            if let Some(failed) = latest.first().filter(|r| r.status == offshoot_core::RevisionStatus::Failed) {
                bail!("deploying {} failed: {}", deployment.name, failed.error.clone().unwrap_or_default());
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the {} deployment was not ready within 2 minutes", branch.unwrap_or("prod"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn materialize(state: &SharedState, deployment: &Deployment, selection: &str) -> anyhow::Result<Run> {
    let run = offshoot_server::runs::launch(state, deployment, selection).await.map_err(|e| anyhow::anyhow!(e.message))?;
    let started = Instant::now();
    loop {
        let run = state.store.get_run(run.id).await?;
        if run.status.is_finished() {
            return Ok(run);
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("run {} did not finish within 5 minutes", run.id.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn report_run(state: &SharedState, name: &str, run: &Run) -> anyhow::Result<()> {
    let steps = state.store.list_steps(run.id).await?;
    let built: Vec<String> = steps
        .iter()
        .map(|s| format!("{} ({} rows)", s.asset_key, s.row_count.map(|n| n.to_string()).unwrap_or("-".into())))
        .collect();
    println!("  {name}: run {} `{}` {}: {}", run.id.0, run.selection, run.status, built.join(", "));
    if run.status != RunStatus::Succeeded {
        for step in steps.iter().filter(|s| s.error.is_some()) {
            println!("    {}: {}", step.asset_key, step.error.as_deref().unwrap_or(""));
        }
        bail!("the {name} run did not succeed");
    }
    Ok(())
}
