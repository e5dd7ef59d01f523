//! The `offshoot` binary: argument parsing and glue. Libraries do the work; this file maps their
//! errors to messages and exit codes (0 ok, 1 failure or invalid definitions, 2 usage).

mod demo;
mod diff;
mod init;
mod report;
mod shop;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "offshoot", version, about = "Branch deployments for data pipelines: every pull request gets its own deployment, cloned schema and change tracking.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new project (offshoot.toml and two example assets) that validates as it is.
    Init(init::Args),
    /// Check every definition of a project and report all problems at once.
    Validate(validate::Args),
    /// Show which assets a revision adds, removes or changes against a base.
    Diff(diff::Args),
    /// Build a demo repository from the example shop project, with a feature branch, and show
    /// what the branch changes.
    Demo(demo::Args),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// The outcome of a command that ran: success or a reported failure (exit 1).
pub enum Outcome {
    Ok,
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

/// `--repo`, shared by the commands that read a repository.
fn repo_arg_help() -> &'static str {
    "path to the project's git repository (or a folder inside it)"
}

#[derive(clap::Args, Clone)]
pub struct RepoArgs {
    #[arg(long, default_value = ".", help = repo_arg_help())]
    pub repo: PathBuf,
}
