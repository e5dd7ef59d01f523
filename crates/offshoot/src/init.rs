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
            let mut keys = vec![("project_dir", dir.as_str())];
            // Packages are installed in each checkout before dbt parses it.
            let project = args.path.join(&dir);
            if project.join("packages.yml").is_file() || project.join("dependencies.yml").is_file()
            {
                keys.push(("prepare_command", "dbt deps"));
            }
            vec![(
                "offshoot.toml",
                offshoot_project::scaffold::location_manifest(&name, "dbt", &keys),
            )]
        }
        Some("dagster") => {
            let module = match &args.module {
                Some(module) => module.clone(),
                None => {
                    let dir = find(&args.path, "definitions.py")
                        .or_else(|| {
                            find(&args.path.join("src"), "definitions.py")
                                .map(|d| format!("src/{d}"))
                        })
                        .context(
                            "no definitions.py here, one folder down or in src/; pass --module",
                        )?;
                    let dir = dir.strip_prefix("src/").unwrap_or(&dir).to_owned();
                    if dir == "." {
                        "definitions".to_owned()
                    } else {
                        format!("{}.definitions", dir.replace('/', "."))
                    }
                }
            };
            let mut keys = vec![("module", module.clone())];
            // A `src/` layout (Dagster's project template): the module imports from src/.
            if let Some(dir) = working_directory_of(&args.path, &module) {
                if dir != "." {
                    keys.push(("working_directory", dir));
                }
            }
            let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
            vec![(
                "offshoot.toml",
                offshoot_project::scaffold::location_manifest(&name, "dagster", &keys),
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

/// Where `module` is importable from: `.`, `src` or a folder one level down that holds it as
/// `a/b.py` or `a/b/__init__.py`.
fn working_directory_of(root: &std::path::Path, module: &str) -> Option<String> {
    let relative = module.replace('.', "/");
    let holds = |dir: &std::path::Path| {
        dir.join(format!("{relative}.py")).is_file()
            || dir.join(&relative).join("__init__.py").is_file()
    };
    if holds(root) {
        return Some(".".to_owned());
    }
    if holds(&root.join("src")) {
        return Some("src".to_owned());
    }
    let mut found: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| holds(&e.path()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    found.sort();
    found.into_iter().next()
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
