//! `offshoot init`: scaffold a project without overwriting anything.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Folder to create the project in.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Project name (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Add Offshoot to an existing project instead: `dbt` or `dagster` (writes offshoot.toml only).
    #[arg(long)]
    location: Option<String>,
    /// dbt: the folder holding dbt_project.yml, relative to PATH (default: found by looking).
    #[arg(long)]
    project_dir: Option<String>,
    /// Dagster: the module that holds the Definitions (default: found by looking for definitions.py).
    #[arg(long)]
    module: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let folder_name = std::fs::canonicalize(&args.path)
        .ok()
        .or_else(|| Some(args.path.clone()))
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name = args.name.clone().or(folder_name).unwrap_or_default();
    let files: Vec<(&str, String)> = match args.location.as_deref() {
        None => offshoot_project::scaffold::files(&name),
        Some("dbt") => {
            let dir = match &args.project_dir {
                Some(dir) => dir.clone(),
                None => find(&args.path, "dbt_project.yml")
                    .context("no dbt_project.yml here or one folder down; pass --project-dir")?,
            };
            vec![(
                "offshoot.toml",
                offshoot_project::scaffold::location_manifest(
                    &name,
                    "dbt",
                    &[("project_dir", &dir)],
                ),
            )]
        }
        Some("dagster") => {
            let module = match &args.module {
                Some(module) => module.clone(),
                None => {
                    let dir = find(&args.path, "definitions.py")
                        .context("no definitions.py here or one folder down; pass --module")?;
                    if dir == "." {
                        "definitions".to_owned()
                    } else {
                        format!("{}.definitions", dir.replace('/', "."))
                    }
                }
            };
            vec![(
                "offshoot.toml",
                offshoot_project::scaffold::location_manifest(
                    &name,
                    "dagster",
                    &[("module", &module)],
                ),
            )]
        }
        Some(other) => bail!(
            "unknown --location `{other}`: use dbt or dagster (leave it out for a native project)"
        ),
    };
    for (path, _) in &files {
        let target = args.path.join(path);
        if target.exists() {
            bail!("{} already exists; `offshoot init` never overwrites files", target.display());
        }
    }
    for (path, content) in &files {
        let target = args.path.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("writing {}", target.display()))?;
        println!("created {}", target.display());
    }
    println!(
        "\nNext: `offshoot validate --repo {}`, then commit and open a pull request.",
        args.path.display()
    );
    Ok(Outcome::Ok)
}

/// The folder (relative to `root`: `.` or one level down) that holds `file`.
fn find(root: &std::path::Path, file: &str) -> Option<String> {
    if root.join(file).is_file() {
        return Some(".".to_owned());
    }
    let mut found: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.path().join(file).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    found.sort();
    found.into_iter().next()
}
