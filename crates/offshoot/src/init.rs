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
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let folder_name = std::fs::canonicalize(&args.path)
        .ok()
        .or_else(|| Some(args.path.clone()))
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name = args.name.or(folder_name).unwrap_or_default();
    let files = offshoot_project::scaffold::files(&name);
    for (path, _) in &files {
        let target = args.path.join(path);
        if target.exists() {
            bail!("{} already exists; `offshoot init` never overwrites files", target.display());
        }
    }
    for (path, content) in &files {
        let target = args.path.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, content).with_context(|| format!("writing {}", target.display()))?;
        println!("created {}", target.display());
    }
    println!("\nNext: `offshoot validate --repo {}`, then commit and open a pull request.", args.path.display());
    Ok(Outcome::Ok)
}
