//! `offshoot demo`: a git repository built from the example shop project with a feature branch,
//! and the change set Offshoot computes for it.

use std::path::PathBuf;

use anyhow::{bail, Context};
use offshoot_core::{diff, Selection};
use offshoot_repo::GitRepository;

use crate::report::{self, Comparison};
use crate::{shop, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Where to create the demo repository.
    #[arg(long, default_value = "offshoot-demo")]
    dir: PathBuf,
}

pub const FEATURE_BRANCH: &str = "feature/eur-revenue";
const AUTHOR: (&str, &str) = ("Dana Demo", "dana@shop.example");

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if args.dir.exists() && std::fs::read_dir(&args.dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; remove it or pass --dir", args.dir.display());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let repo = GitRepository::init(&args.dir, "main")?;
    let main_tree = shop::main_tree();
    repo.commit_tree("main", None, &main_tree, "Shop analytics pipeline", AUTHOR)?;
    let feature = shop::feature_tree(main_tree.clone());
    repo.commit_tree(FEATURE_BRANCH, Some("main"), &feature, "Revenue in EUR: skip unpaid orders, weekly revenue", AUTHOR)?;
    repo.commit_tree("main", None, &shop::main_after_fork(main_tree), "Count settled payments too", AUTHOR)?;
    repo.checkout("main")?;

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
    let selection = Selection::parse("changed_in_branch:ANY+").expect("a valid selection");
    let selected: Vec<String> = selection.evaluate(&head_project.snapshot, &changes).iter().map(|k| k.to_string()).collect();

    let dir = args.dir.display();
    println!("Created the demo repository {dir}: `main` holds the shop pipeline ({} assets),", head_project.snapshot.len());
    println!("`{FEATURE_BRANCH}` changes it, and `main` moved on after the branch forked.\n");
    print!("{}", report::text(&comparison));
    println!("\n`changed_in_branch:ANY+` (changed assets and everything downstream) selects:\n  {}", selected.join(", "));
    println!("\nNote: stg_orders was only reformatted and stg_payments changed on main after the fork;");
    println!("neither is reported. Try:");
    println!("  offshoot diff --repo {dir} --base main --head {FEATURE_BRANCH} --format markdown");
    println!("  offshoot diff --repo {dir} --base main --head {FEATURE_BRANCH} --against tip");
    println!("  offshoot validate --repo {dir} --rev {FEATURE_BRANCH}");
    Ok(Outcome::Ok)
}
