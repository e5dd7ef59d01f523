//! `offshoot validate`: every problem of a working directory or a commit, in one pass.

use anyhow::Context;
use offshoot_core::AssetKind;
use offshoot_location::LocationError;
use offshoot_project::Project;
use offshoot_repo::GitRepository;

use crate::{Format, Outcome, RepoArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    repo: RepoArgs,
    /// Validate this commit (branch, tag or SHA) instead of the working directory.
    #[arg(long)]
    rev: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let (what, result) = match &args.rev {
        Some(rev) => {
            let repo = GitRepository::open(&args.repo.repo)?;
            let commit = repo.resolve(rev)?;
            (
                format!("{rev} ({})", &commit.sha[..12]),
                crate::locate::load_commit(&repo, &commit.sha, None, None),
            )
        }
        None => {
            let root = match GitRepository::open(&args.repo.repo) {
                Ok(repo) => repo
                    .workdir()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| args.repo.repo.clone()),
                Err(_) => args.repo.repo.clone(),
            };
            let root = root
                .canonicalize()
                .with_context(|| format!("{} cannot be read", root.display()))?;
            (root.display().to_string(), crate::locate::load_working_directory(&root))
        }
    };
    match result {
        Ok(project) => {
            print_valid(&project, &what, args.format);
            Ok(Outcome::Ok)
        }
        Err(LocationError::Invalid(diagnostics)) => {
            match args.format {
                Format::Json => {
                    let list: Vec<serde_json::Value> = diagnostics
                        .iter()
                        .map(|d| serde_json::json!({"path": d.path, "line": d.line, "column": d.column, "message": d.message, "hint": d.hint}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"valid": false, "diagnostics": list})
                        )?
                    );
                }
                // Markdown is for pasting into a pull request or a CI summary: it is the output,
                // on stdout like JSON, not a message on stderr.
                Format::Markdown => {
                    println!("**{} in `{what}`**\n", counted(diagnostics.len(), "problem"));
                    for d in &diagnostics {
                        println!("- `{}:{}:{}`: {}", d.path, d.line, d.column, d.message);
                        if let Some(hint) = &d.hint {
                            println!("  - hint: {hint}");
                        }
                    }
                }
                Format::Text => {
                    for diagnostic in &diagnostics {
                        eprintln!("{diagnostic}");
                    }
                    eprintln!("\n{} problem(s) in {what}", diagnostics.len());
                }
            }
            Ok(Outcome::Failed)
        }
        Err(LocationError::Tool(error)) => {
            Err(anyhow::anyhow!(error)).context(format!("loading {what}"))
        }
    }
}

fn print_valid(project: &Project, what: &str, format: Format) {
    let count = |kind| project.snapshot.assets().filter(|a| a.kind == kind).count();
    let (sql, command, source, tool) = (
        count(AssetKind::Sql),
        count(AssetKind::Command),
        count(AssetKind::Source),
        count(AssetKind::Tool),
    );
    let location = project.manifest.location.kind();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"valid": true, "project": project.manifest.name, "location": location, "sql_assets": sql, "command_assets": command, "tool_assets": tool, "sources": source})
        ),
        _ => {
            let counts = if location != "native" {
                format!(
                    "{}, {}",
                    counted(tool, &format!("{location} asset")),
                    counted(source, "source")
                )
            } else {
                format!(
                    "{}, {}, {}",
                    counted(sql, "SQL asset"),
                    counted(command, "command asset"),
                    counted(source, "source")
                )
            };
            match format {
                Format::Markdown => println!("**ok**: `{what}`: {counts}"),
                _ => println!("ok: {what}: {counts}"),
            }
        }
    }
}

/// "1 source", "3 sources".
fn counted(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}
