//! Pure upkeep decisions: which per-commit and per-run folders are live (the folder sweep keeps
//! them), and whether a folder found on disk may go.

use std::collections::BTreeSet;

/// What the sweep knows of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionUse {
    pub commit: String,
    /// The commit its change set was computed against (and dbt defers to).
    pub base_commit: Option<String>,
    /// The deployment serves it now, however old it is.
    pub serving: bool,
    /// Queued or deploying: a load may be writing its folder.
    pub in_progress: bool,
}

/// The folder names that must stay: the commit (and the base commit) of every serving or
/// in-progress revision, and, for every active run, its run id and its revision's commit.
pub fn live_folders<'a>(
    revisions: impl IntoIterator<Item = &'a RevisionUse>,
    active_runs: impl IntoIterator<Item = (i64, &'a str)>,
) -> BTreeSet<String> {
    let mut live = BTreeSet::new();
    for revision in revisions {
        if revision.serving || revision.in_progress {
            live.insert(revision.commit.clone());
            live.extend(revision.base_commit.clone());
        }
    }
    for (run, commit) in active_runs {
        live.insert(run.to_string());
        live.insert(commit.to_owned());
    }
    live
}

/// Whether the sweep may remove the folder `name`: never the `runs` parent, nothing live (a
/// name's part before the first dot counts: `<sha>.tmp` belongs to `<sha>`), nothing younger
/// than the grace period (a load or run may be writing it), only folders.
pub fn removable(
    name: &str,
    live: &BTreeSet<String>,
    older_than_grace: bool,
    is_dir: bool,
) -> bool {
    let owner = name.split('.').next().unwrap_or_default();
    name != "runs" && !live.contains(owner) && older_than_grace && is_dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(commit: &str, base: Option<&str>, serving: bool, in_progress: bool) -> RevisionUse {
        RevisionUse {
            commit: commit.into(),
            base_commit: base.map(Into::into),
            serving,
            in_progress,
        }
    }

    #[test]
    fn serving_and_in_progress_revisions_keep_their_commit_and_base() {
        let revisions = [
            revision("old-serving", Some("base-1"), true, false),
            revision("superseded", Some("base-2"), false, false),
            revision("queued", None, false, true),
        ];
        let live = live_folders(&revisions, [(7, "run-commit")]);
        let expected: BTreeSet<String> =
            ["old-serving", "base-1", "queued", "7", "run-commit"].map(String::from).into();
        assert_eq!(live, expected);
    }

    #[test]
    fn what_may_be_removed() {
        let live: BTreeSet<String> = ["abc".to_owned()].into();
        for (name, old, dir, expect) in [
            ("abc", true, true, false),
            ("abc.tmp1", true, true, false),
            ("runs", true, true, false),
            ("def", false, true, false),
            ("def", true, false, false),
            ("def", true, true, true),
        ] {
            assert_eq!(removable(name, &live, old, dir), expect, "{name} old={old} dir={dir}");
        }
    }
}
