//! The `offshoot` binary: argument parsing and glue. Libraries do the work; this file maps their
//! errors to messages and exit codes (0 ok, 1 failure or invalid definitions, 2 usage).

mod client;
mod data_diff;
mod demo;
mod diff;
mod env;
mod init;
mod locate;
mod remote;
mod report;
mod serve;
mod shop;
mod timestamp;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "offshoot",
    version,
    about = "Branch deployments for data pipelines: every pull request gets its own deployment, cloned schema and change tracking."
)]
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
    /// The whole workflow on one machine: a demo repository with a feature branch, the server on
    /// embedded defaults, prod and the branch deployed and materialized.
    Demo(demo::Args),
    /// Run the server: REST API, deploys, runs, and (with --repo) watching a local repository.
    Serve(Box<serve::Args>),
    /// Manage branch deployments on a server (flags mirror dagster-cloud's).
    #[command(subcommand)]
    BranchDeployment(remote::BranchDeploymentCommand),
    /// Inspect deployments on a server.
    #[command(subcommand)]
    Deployment(remote::DeploymentCommand),
    /// Materialize a selection in a deployment on a server.
    Materialize(remote::MaterializeArgs),
    /// List, show and cancel runs on a server.
    #[command(subcommand)]
    Runs(remote::RunsCommand),
    /// A deployment's schedules: list them, switch a branch deployment's on or off, run a tick now.
    #[command(subcommand)]
    Schedule(remote::ScheduleCommand),
    /// What a branch deployment's runs did to the data: its tables against production's.
    DataDiff(data_diff::Args),
    /// Variables and secrets: set, unset and list them on a server; export the local ones as `.env`.
    #[command(subcommand)]
    Env(env::EnvCommand),
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
        Command::Serve(args) => serve::run(*args),
        Command::BranchDeployment(command) => remote::branch_deployment(command),
        Command::Deployment(command) => remote::deployment(command),
        Command::Materialize(args) => remote::materialize(args),
        Command::Runs(command) => remote::runs(command),
        Command::Schedule(command) => remote::schedule(command),
        Command::DataDiff(args) => data_diff::run(args),
        Command::Env(command) => env::run(command),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            if error.downcast_ref::<client::UsageError>().is_some() {
                return ExitCode::from(2);
            }
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
