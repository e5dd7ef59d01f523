//! `offshoot demo`: builds a git repository from the example shop project with a feature branch,
//! seeds a production warehouse, starts the server on embedded defaults watching the repository,
//! deploys prod and the branch, materializes production and the branch's changed assets with
//! their downstream, and says what to look at.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{
    diff, BranchName, DeploymentName, RepositoryName, RunStatus, SchemaName, Selection,
};
use offshoot_repo::GitRepository;
use offshoot_server::{ApiToken, RepositoryConfig, Role, ServerConfig, SharedState, WatchConfig};
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
    /// Which example: `shop` (native SQL, embedded), `dagster_shop` (needs Dagster in the Python on
    /// PATH), `dbt_shop` (needs dbt on PATH and --warehouse-url) or `dagster_dbt_shop` (a Dagster+
    /// project over dbt_shop: needs Dagster, dagster-dbt, dagster-cloud and dbt, and
    /// --warehouse-url); all but the first are read from the source checkout's examples/ folder.
    #[arg(long, default_value = "shop")]
    example: String,
    /// A PostgreSQL warehouse (postgres://...) instead of the embedded SQLite one; dbt_shop needs it.
    #[arg(long)]
    warehouse_url: Option<String>,
}

pub const FEATURE_BRANCH: &str = "feature/eur-revenue";

/// An example the demo deploys: main's files, a feature branch's, and what to say about them.
struct Example {
    name: &'static str,
    main: offshoot_repo::write::Tree,
    feature_branch: &'static str,
    feature: offshoot_repo::write::Tree,
    feature_message: &'static str,
    /// main's commit after the fork, when the example has one.
    main_after_fork: Option<offshoot_repo::write::Tree>,
    note: &'static str,
}

impl Example {
    fn named(name: &str) -> anyhow::Result<Example> {
        Ok(match name {
            "shop" => {
                let main = shop::main_tree();
                Example {
                    name: "shop",
                    feature_branch: FEATURE_BRANCH,
                    feature: shop::feature_tree(main.clone()),
                    feature_message: "Revenue in EUR: skip unpaid orders, weekly revenue",
                    main_after_fork: Some(shop::main_after_fork(main.clone())),
                    main,
                    note: "(stg_orders was only reformatted and stg_payments changed on main after the fork: neither is the branch's change.)",
                }
            }
            "dagster_shop" => {
                let main = example_files("dagster_shop")?;
                let feature = edited(
                    &main,
                    &[
                        ("dagster_shop/staging.py", "code_version=\"2\"", "code_version=\"3\""),
                        (
                            "dagster_shop/marts.py",
                            "\"lookback_days\": 365",
                            "\"lookback_days\": 730",
                        ),
                    ],
                )?;
                Example {
                    name: "dagster_shop",
                    main,
                    feature_branch: "feature/clv-lookback",
                    feature,
                    feature_message: "stg_orders v3, two-year lifetime value lookback",
                    main_after_fork: None,
                    note: "",
                }
            }
            "dbt_shop" => {
                let main = example_files("dbt_shop")?;
                let feature = edited(
                    &main,
                    &[(
                        "models/staging/stg_orders.sql",
                        "(shipping_cents / 100.0)::numeric(12, 2) as shipping_amount",
                        "round(shipping_cents / 100.0, 2)::numeric(12, 2) as shipping_amount",
                    )],
                )?;
                Example {
                    name: "dbt_shop",
                    main,
                    feature_branch: "feature/round-shipping",
                    feature,
                    feature_message: "Round shipping amounts",
                    main_after_fork: None,
                    note: "",
                }
            }
            "dagster_dbt_shop" => {
                // The Dagster+ project and, in dbt_shop/, the dbt project it builds.
                let mut main = example_files("dagster_dbt_shop")?;
                for (path, bytes) in example_files("dbt_shop")? {
                    if path != "offshoot.toml" {
                        main.insert(format!("dbt_shop/{path}"), bytes);
                    }
                }
                let feature = edited(
                    &main,
                    &[(
                        "dbt_shop/models/staging/stg_orders.sql",
                        "(shipping_cents / 100.0)::numeric(12, 2) as shipping_amount",
                        "round(shipping_cents / 100.0, 2)::numeric(12, 2) as shipping_amount",
                    )],
                )?;
                Example {
                    name: "dagster_dbt_shop",
                    main,
                    feature_branch: "feature/round-shipping",
                    feature,
                    feature_message: "Round shipping amounts",
                    main_after_fork: None,
                    note: "",
                }
            }
            other => bail!(
                "unknown example `{other}`: use shop, dagster_shop, dbt_shop or dagster_dbt_shop"
            ),
        })
    }
}

/// The files of `examples/NAME` in the source checkout this binary was built from.
fn example_files(name: &str) -> anyhow::Result<offshoot_repo::write::Tree> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
    let mut tree = offshoot_repo::write::Tree::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).with_context(|| {
            format!(
                "reading {} (the {name} example is read from the source checkout)",
                dir.display()
            )
        })?;
        for entry in entries {
            let path = entry?.path();
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if ["target", "logs", "dbt_packages", "__pycache__", ".venv"].contains(&file_name) {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(&root)
                    .expect("under the root")
                    .to_string_lossy()
                    .replace('\\', "/");
                tree.insert(relative, std::fs::read(&path)?);
            }
        }
    }
    Ok(tree)
}

fn edited(
    tree: &offshoot_repo::write::Tree,
    edits: &[(&str, &str, &str)],
) -> anyhow::Result<offshoot_repo::write::Tree> {
    let mut tree = tree.clone();
    for (path, from, to) in edits {
        let text = String::from_utf8(
            tree.get(*path).with_context(|| format!("the example has no {path}"))?.clone(),
        )?;
        anyhow::ensure!(
            text.contains(from),
            "the example's {path} changed; the demo's edit no longer applies"
        );
        tree.insert((*path).to_owned(), text.replacen(from, to, 1).into_bytes());
    }
    Ok(tree)
}
const AUTHOR: (&str, &str) = ("Dana Demo", "dana@shop.example");

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if args.dir.exists()
        && std::fs::read_dir(&args.dir).map(|mut d| d.next().is_some()).unwrap_or(true)
    {
        bail!("{} already exists and is not empty; remove it or pass --dir", args.dir.display());
    }
    let example = Example::named(&args.example)?;
    if matches!(example.name, "dbt_shop" | "dagster_dbt_shop")
        && !args.warehouse_url.as_deref().is_some_and(|u| u.starts_with("postgres"))
    {
        bail!("the {} example needs PostgreSQL: pass --warehouse-url postgres://USER@HOST:PORT/DATABASE (dbt has no adapter for the embedded SQLite warehouse)", example.name);
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    build_repository(&dir, &example)?;
    if let Some(url) = &args.warehouse_url {
        // Local loads (the change set printed below) give dbt's profile this warehouse.
        std::env::set_var("OFFSHOOT_WAREHOUSE_URL", url);
    }
    print_change_set(&dir, &example)?;

    let config = demo_config(&dir)?;
    // An admin token, and a deploy one like a CI's: it previews branches, never touches prod.
    let admin = serve::generated_token(&config.data_dir.join("api-token"))?;
    let deploy = serve::generated_token(&config.data_dir.join("deploy-token"))?;
    let mut config = config;
    config.api_tokens = vec![
        ApiToken { secret: admin, role: Role::Admin },
        ApiToken { secret: deploy, role: Role::Deploy },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        run_server(config, &args.listen, args.exit, &dir, &example, args.warehouse_url.as_deref())
            .await
    })
}

fn build_repository(dir: &std::path::Path, example: &Example) -> anyhow::Result<()> {
    let repo = GitRepository::init(dir, "main")?;
    repo.commit_tree(
        "main",
        None,
        &example.main,
        &format!("The {} pipeline", example.name),
        AUTHOR,
    )?;
    repo.commit_tree(
        example.feature_branch,
        Some("main"),
        &example.feature,
        example.feature_message,
        AUTHOR,
    )?;
    if let Some(after) = &example.main_after_fork {
        repo.commit_tree("main", None, after, "Count settled payments too", AUTHOR)?;
    }
    repo.checkout("main")?;
    // The server's data lives in DIR/.offshoot; keep it out of `git add -A` in the demo repository.
    std::fs::write(dir.join(".git/info/exclude"), ".offshoot/\n")
        .context("writing .git/info/exclude")?;
    Ok(())
}

fn print_change_set(dir: &std::path::Path, example: &Example) -> anyhow::Result<()> {
    let feature_branch = example.feature_branch;
    let repo = GitRepository::open(dir)?;
    let base_tip = repo.resolve("main")?;
    let head = repo.resolve(feature_branch)?;
    let compared = repo.merge_base(&base_tip.sha, &head.sha)?;
    let base =
        crate::diff::load(&repo, &compared, "main", None, None)?.context("the example is valid")?;
    let head_project = crate::diff::load(&repo, &head, feature_branch, None, None)?
        .context("the demo branch is valid")?;
    let changes = diff(&base.snapshot, &head_project.snapshot);
    let comparison = Comparison {
        base_rev: "main",
        base_tip: &base_tip,
        compared: &compared,
        against: "merge-base",
        head_rev: feature_branch,
        head: &head,
        changes: &changes,
    };
    let selected: Vec<String> = Selection::parse("changed_in_branch:ANY+")
        .expect("a valid selection")
        .evaluate(&head_project.snapshot, &changes)
        .iter()
        .map(|k| k.to_string())
        .collect();
    println!(
        "Created the demo repository {}: `main` holds the {} pipeline,",
        dir.display(),
        example.name
    );
    if example.main_after_fork.is_some() {
        println!("`{feature_branch}` changes it, and `main` moved on after the branch forked.\n");
    } else {
        println!("`{feature_branch}` changes it.\n");
    }
    print!("{}", report::text(&comparison));
    if !example.note.is_empty() {
        println!("{}", example.note);
    }
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
        git_url: None,
    });
    Ok(config)
}

async fn run_server(
    mut config: ServerConfig,
    listen: &str,
    exit: bool,
    dir: &std::path::Path,
    example: &Example,
    warehouse_url: Option<&str>,
) -> anyhow::Result<Outcome> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(_) => {
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a local port")?
        }
    };
    let address = listener.local_addr()?;
    config.public_url = format!("http://{address}");
    let repository = config.repositories[0].name.clone();
    let production = SchemaName::for_deployment(&repository, &DeploymentName::production());
    let state = match warehouse_url {
        None => {
            let (state, warehouse) = serve::embedded_state(config.clone()).await?;
            if example.name == "shop" {
                warehouse
                    .execute_production_script(&production, shop::SEED_SQL)
                    .await
                    .context("seeding the production warehouse")?;
            }
            state
        }
        Some(url) => {
            let backends = serve::Backends {
                metadata_url: None,
                warehouse_url: Some(url.to_owned()),
                branch_role: None,
            };
            let state = serve::state_for(config.clone(), &backends).await?;
            seed_postgres(url, &production, example).await?;
            state
        }
    };

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(offshoot_server::serve(state.clone(), listener, async move {
        tokio::select! {
            _ = serve::shutdown_signal() => {}
            _ = stopped => {}
        }
    }));

    let backends = if warehouse_url.is_some() {
        "embedded SQLite store, PostgreSQL warehouse"
    } else {
        "embedded SQLite store and warehouse"
    };
    println!(
        "Offshoot is serving on http://{address} ({backends} in {}).",
        config.data_dir.display()
    );
    let prod = wait_ready(&state, &repository, None).await?;
    let prod_run = materialize(&state, &prod, "key:*").await?;
    report_run(&state, "prod", &prod_run).await?;
    let branch = wait_ready(&state, &repository, Some(example.feature_branch)).await?;
    let branch_run = materialize(&state, &branch, "changed_in_branch:ANY+").await?;
    report_run(&state, branch.name.as_str(), &branch_run).await?;

    let token_file = config.data_dir.join("api-token");
    println!("\nWhat to look at:");
    println!("  http://{address}/#/d/{repository}/{}   the web UI: the branch's lineage with its changes marked", branch.name);
    println!("  http://{address}/api/v1/deployments                          both deployments, their revisions and change counts");
    println!(
        "  http://{address}/api/v1/deployments/{}/changes  why each asset changed, with code diffs",
        branch.name
    );
    println!("  http://{address}/api/v1/runs/{}                                  the branch run: only changed assets and their downstream", branch_run.id.0);
    if warehouse_url.is_none() {
        println!("  {}/warehouse/  one SQLite file per deployment; the branch file holds only what it rebuilt", config.data_dir.display());
    } else {
        println!(
            "  schema {production} and shop__{}: the branch schema holds only what it rebuilt",
            branch.name
        );
    }
    println!("\nTry the CLI against it:");
    println!("  export OFFSHOOT_URL=http://{address} OFFSHOOT_API_TOKEN=$(cat {})   # admin; {}/deploy-token is a CI's deploy token", token_file.display(), config.data_dir.display());
    println!("  offshoot deployment list");
    println!("  offshoot deployment status {}", branch.name);
    println!(
        "  offshoot materialize --deployment {} --select 'changed_in_branch:ANY+' --wait",
        branch.name
    );
    println!(
        "  offshoot data-diff --deployment {}   # what the branch run did to the data",
        branch.name
    );
    println!("  git -C {} checkout -b feature/another && (edit, commit): a new branch deployment appears", dir.display());
    println!(
        "  git -C {} merge --no-edit {}: production catches up, promoting what the branch built (offshoot runs list; offshoot deployment rollback prod undoes it)",
        dir.display(),
        branch.branch
    );
    if exit {
        let _ = stop.send(());
    } else {
        println!("\nServing until Ctrl-C.");
    }
    server.await.context("the server task")??;
    Ok(Outcome::Ok)
}

/// The examples' source data on PostgreSQL, readable by the branch role (sources live outside
/// Offshoot's schemas: README.md, "dbt projects").
async fn seed_postgres(
    url: &str,
    production: &SchemaName,
    example: &Example,
) -> anyhow::Result<()> {
    let script = match example.name {
        "shop" => include_str!("../../../examples/shop/data/seed_postgres.sql").to_owned(),
        "dbt_shop" | "dagster_dbt_shop" => {
            let role = offshoot_warehouse_postgres::PostgresWarehouseOptions::default().branch_role;
            let path = if example.name == "dbt_shop" {
                "data/seed_raw.sql"
            } else {
                "dbt_shop/data/seed_raw.sql"
            };
            let seed = String::from_utf8(
                example.main.get(path).context("dbt_shop has data/seed_raw.sql")?.clone(),
            )?;
            format!("{seed}\nGRANT USAGE ON SCHEMA shop_raw TO {role};\nGRANT SELECT ON ALL TABLES IN SCHEMA shop_raw TO {role};\n")
        }
        _ => return Ok(()),
    };
    let warehouse =
        offshoot_warehouse_postgres::PostgresWarehouse::connect(url, Default::default())
            .await
            .context("connecting to the PostgreSQL warehouse")?;
    warehouse
        .execute_production_script(production, &script)
        .await
        .context("seeding the production warehouse")?;
    warehouse.close().await;
    Ok(())
}

/// Waits until the deployment (prod, or the branch's) serves a ready revision.
async fn wait_ready(
    state: &SharedState,
    repository: &RepositoryName,
    branch: Option<&str>,
) -> anyhow::Result<Deployment> {
    let started = Instant::now();
    loop {
        let deployment = match branch {
            None => state.store.find_deployment(repository, &DeploymentName::production()).await?,
            Some(branch) => {
                state.store.find_deployment_by_branch(repository, &BranchName::new(branch)?).await?
            }
        };
        if let Some(deployment) = deployment {
            if let Some(current) = deployment.current_revision {
                let revision = state.store.get_revision(current).await?;
                println!(
                    "  {} deployed {} in {} ms: {} assets, {}",
                    deployment.name,
                    revision.commit.sha.short(),
                    revision.finished_at.unwrap_or(revision.queued_at) - revision.queued_at,
                    revision.asset_count,
                    offshoot_server::http::dto::revision_json(&revision)
                        .changes_summary
                        .unwrap_or_else(|| "no base to compare with".to_owned())
                );
                return Ok(deployment);
            }
            let latest = state.store.list_revisions(deployment.id, 1).await?;
            if let Some(failed) =
                latest.first().filter(|r| r.status == offshoot_core::RevisionStatus::Failed)
            {
                bail!(
                    "deploying {} failed: {}",
                    deployment.name,
                    failed.error.clone().unwrap_or_default()
                );
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the {} deployment was not ready within 2 minutes", branch.unwrap_or("prod"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn materialize(
    state: &SharedState,
    deployment: &Deployment,
    selection: &str,
) -> anyhow::Result<Run> {
    let run =
        offshoot_server::service::runner::launch(state, deployment, selection, &Default::default())
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
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
        .map(|s| {
            format!(
                "{} ({} rows)",
                s.asset_key,
                s.row_count.map(|n| n.to_string()).unwrap_or("-".into())
            )
        })
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
