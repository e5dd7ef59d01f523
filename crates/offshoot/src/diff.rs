//! `offshoot diff`: the change set of a head revision against a base (merge-base by default).

use anyhow::Context;
use clap::ValueEnum;
use offshoot_core::{diff, Selection};
use offshoot_location::LocationError;
use offshoot_project::parse_cache::ParseCache;
use offshoot_project::Project;
use offshoot_repo::{CommitInfo, GitRepository};

use crate::report::{self, Comparison};
use crate::{Format, Outcome, RepoArgs};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Against {
    /// The commit where head forked from base: later commits on base are not the branch's.
    MergeBase,
    /// Base's current tip, like Dagster+ comparing against live production.
    Tip,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    repo: RepoArgs,
    /// The base revision, usually the production branch.
    #[arg(long)]
    base: String,
    /// The revision to compare, usually the pull request's branch.
    #[arg(long)]
    head: String,
    #[arg(long, value_enum, default_value = "merge-base")]
    against: Against,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Print the keys this selection picks instead of the change set, e.g. 'changed_in_branch:ANY+'.
    #[arg(long)]
    select: Option<String>,
    /// Parse every file afresh instead of reusing the parse cache in `.git/offshoot/parse-cache`.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let selection = match args.select.as_deref().map(Selection::parse) {
        Some(Err(error)) => {
            eprintln!("error: {}", error.render(args.select.as_deref().unwrap_or("")));
            return Ok(Outcome::Failed);
        }
        Some(Ok(selection)) => Some(selection),
        None => None,
    };
    let repo = GitRepository::open(&args.repo.repo)?;
    let base_tip = repo.resolve(&args.base)?;
    let head = repo.resolve(&args.head)?;
    let compared = match args.against {
        Against::MergeBase => repo.merge_base(&base_tip.sha, &head.sha)?,
        Against::Tip => base_tip.clone(),
    };
    // Parse once per blob: the head shares most of its files with the base.
    let cache = (!args.no_cache).then(|| crate::locate::parse_cache(&repo));
    let cache = cache.as_ref().map(|c| c as &dyn ParseCache);
    let Some(base_project) = load(&repo, &compared, &format!("base {}", args.base), cache, None)?
    else {
        return Ok(Outcome::Failed);
    };
    // The head starts from the base: only the files that differ are read and parsed.
    let head_what = format!("head {}", args.head);
    let Some(head_project) = load(&repo, &head, &head_what, cache, Some(&base_project))? else {
        return Ok(Outcome::Failed);
    };
    let changes = diff(&base_project.snapshot, &head_project.snapshot);

    if let Some(selection) = selection {
        let keys = selection.evaluate(&head_project.snapshot, &changes);
        match args.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&keys.iter().map(|k| k.as_str()).collect::<Vec<_>>())?
            ),
            Format::Markdown => keys.iter().for_each(|k| println!("- `{k}`")),
            Format::Text => keys.iter().for_each(|k| println!("{k}")),
        }
        return Ok(Outcome::Ok);
    }

    let comparison = Comparison {
        base_rev: &args.base,
        base_tip: &base_tip,
        compared: &compared,
        against: match args.against {
            Against::MergeBase => "merge-base",
            Against::Tip => "tip",
        },
        head_rev: &args.head,
        head: &head,
        changes: &changes,
    };
    match args.format {
        Format::Text => print!("{}", report::text(&comparison)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report::json(&comparison))?),
        Format::Markdown => print!("{}", report::markdown(&comparison)),
    }
    Ok(Outcome::Ok)
}

/// Loads the project at `commit` (from `previous` where it can); prints the diagnostics and
/// returns `None` if it is invalid.
pub fn load(
    repo: &GitRepository,
    commit: &CommitInfo,
    what: &str,
    cache: Option<&dyn ParseCache>,
    previous: Option<&Project>,
) -> anyhow::Result<Option<Project>> {
    match crate::locate::load_commit(repo, &commit.sha, cache, previous) {
        Ok(project) => Ok(Some(project)),
        Err(LocationError::Invalid(diagnostics)) => {
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            eprintln!(
                "\n{what} ({}) has {} problem(s); fix them before comparing",
                &commit.sha[..12],
                diagnostics.len()
            );
            Ok(None)
        }
        Err(LocationError::Tool(error)) => {
            Err(anyhow::anyhow!(error)).context(format!("loading {what}"))
        }
    }
}
