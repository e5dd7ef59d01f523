//! Deployments and revisions as data: validated names, the slug of a hostile branch name, the
//! status enums, and the "latest commit wins" decision. No clock: callers pass times in.

use std::fmt;

use crate::fingerprint::sha256_hex;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            /// `[a-z0-9]` first and last, `[a-z0-9-]` between, at most `MAX_LEN` characters.
            pub fn new(text: &str) -> Result<$name, InvalidName> {
                check_slug(text, $max)?;
                Ok($name(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("a name cannot be empty")]
    Empty,
    #[error("a name is at most {max} characters long")]
    TooLong { max: usize },
    #[error("a name may contain only lower-case letters, digits and `-`, and must start and end with a letter or digit")]
    BadCharacter,
}

fn check_slug(text: &str, max: usize) -> Result<(), InvalidName> {
    if text.is_empty() {
        return Err(InvalidName::Empty);
    }
    if text.len() > max {
        return Err(InvalidName::TooLong { max });
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let first = text.chars().next().expect("non-empty");
    let last = text.chars().last().expect("non-empty");
    if !ok(first) || !ok(last) || !text.chars().all(|c| ok(c) || c == '-') {
        return Err(InvalidName::BadCharacter);
    }
    Ok(())
}

validated_name!(
    /// A deployment's name: `prod` or the slug of a branch. Safe in URLs, file names and (through
    /// [`SchemaName`]) SQL identifiers.
    DeploymentName,
    40
);

validated_name!(
    /// A repository's (code location's) name, from configuration or `--git-repo-name`.
    RepositoryName,
    20
);

impl DeploymentName {
    pub const PRODUCTION: &'static str = "prod";

    pub fn production() -> DeploymentName {
        DeploymentName(Self::PRODUCTION.to_owned())
    }

    pub fn is_production(&self) -> bool {
        self.0 == Self::PRODUCTION
    }
}

impl RepositoryName {
    /// A repository name from any text (a `--git-repo-name` like `acme/shop`): the slug of its
    /// last path segment.
    pub fn from_any(text: &str) -> Result<RepositoryName, InvalidName> {
        let last = text.trim_end_matches('/').rsplit('/').next().unwrap_or(text);
        let last = last.strip_suffix(".git").unwrap_or(last);
        let (slug, _) = slugify(last, Self::MAX_LEN);
        RepositoryName::new(&slug)
    }
}

/// A git branch name as pushed: hostile text, shown verbatim, never used as an identifier, and
/// never rewritten: `refs/heads/main` is a branch of that name (git allows it), not `main`. A
/// forge's ref becomes a branch name in one place (the webhook adapter strips `refs/heads/`
/// once); everything else compares names exactly.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BranchName(String);

impl BranchName {
    pub const MAX_LEN: usize = 1024;

    pub fn new(text: &str) -> Result<BranchName, InvalidBranchName> {
        if text.is_empty() {
            return Err(InvalidBranchName::Empty);
        }
        if text.len() > Self::MAX_LEN {
            return Err(InvalidBranchName::TooLong);
        }
        if text.chars().any(|c| c.is_control()) {
            return Err(InvalidBranchName::ControlCharacter);
        }
        Ok(BranchName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBranchName {
    #[error("the branch name is empty")]
    Empty,
    #[error("the branch name is longer than 1024 bytes")]
    TooLong,
    #[error("the branch name contains a control character")]
    ControlCharacter,
}

/// Lower-cases, maps every run of other characters to one `-`, trims `-`, truncates to `max`.
/// Returns the slug and whether it lost information.
fn slugify(text: &str, max: usize) -> (String, bool) {
    let mut slug = String::with_capacity(text.len().min(max));
    for ch in text.chars() {
        let mapped = if ch.is_ascii_alphanumeric() { ch.to_ascii_lowercase() } else { '-' };
        if mapped == '-' && (slug.is_empty() || slug.ends_with('-')) {
            continue;
        }
        slug.push(mapped);
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    slug.truncate(max);
    while slug.ends_with('-') {
        slug.pop();
    }
    let lossy = slug != text;
    (slug, lossy)
}

/// The deployment name for a branch: its slug when that is exactly the branch name, otherwise the
/// slug plus a short hash of the full branch name, so lossy slugs of different branches differ.
/// `prod` is never a branch's name. `taken_by_another_branch` reports collisions with existing
/// deployments; a longer hash resolves them.
pub fn deployment_name_for_branch(
    branch: &BranchName,
    taken_by_another_branch: impl Fn(&DeploymentName) -> bool,
) -> DeploymentName {
    let hash = sha256_hex(&[branch.as_str().as_bytes()]);
    let (slug, lossy) = slugify(branch.as_str(), DeploymentName::MAX_LEN);
    if !lossy && slug != DeploymentName::PRODUCTION {
        if let Ok(name) = DeploymentName::new(&slug) {
            if !taken_by_another_branch(&name) {
                return name;
            }
        }
    }
    for hash_len in [8, 16, 32] {
        let keep = DeploymentName::MAX_LEN - hash_len - 1;
        let mut base = slug.clone();
        base.truncate(keep);
        let base = base.trim_end_matches('-');
        let text = if base.is_empty() {
            format!("b-{}", &hash[..hash_len])
        } else {
            format!("{base}-{}", &hash[..hash_len])
        };
        let name = DeploymentName::new(&text).expect("a slug plus hex is a valid name");
        if !taken_by_another_branch(&name) {
            return name;
        }
    }
    // 32 hex digits of SHA-256 colliding with another branch is not a case worth a branch.
    DeploymentName::new(&format!("b-{}", &hash[..32])).expect("valid")
}

/// A schema (PostgreSQL) or database file (SQLite) name: `[a-z0-9_]`, derived only from a
/// repository and deployment name, so no branch text reaches SQL except through this function.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SchemaName(String);

impl SchemaName {
    pub fn for_deployment(repository: &RepositoryName, deployment: &DeploymentName) -> SchemaName {
        SchemaName(format!("{}__{}", repository.as_str(), deployment.as_str()).replace('-', "_"))
    }

    /// Parses a name produced by [`SchemaName::for_deployment`] (for listing what exists).
    pub fn parse(text: &str) -> Option<SchemaName> {
        let valid = !text.is_empty()
            && text.len() <= 63
            && text.contains("__")
            && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        valid.then(|| SchemaName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitSha(String);

impl CommitSha {
    pub fn new(text: &str) -> Option<CommitSha> {
        let ok = matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit());
        ok.then(|| CommitSha(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Case-insensitive.
            pub fn parse(text: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(text))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// Pull-request status, with dagster-cloud's spelling.
    PullRequestStatus { Open = "OPEN", Closed = "CLOSED", Merged = "MERGED" }
);

string_enum!(DeploymentKind { Production = "production", Branch = "branch" });

string_enum!(
    /// Whether a deployment serves; a closed one has no warehouse objects but keeps its history.
    DeploymentStatus { Open = "open", Closed = "closed" }
);

string_enum!(
    /// What a branch deployment's change tracking compares with. `merge-base` (the default):
    /// the base deployment's definitions at the commit where the branch forked. `on-create` and
    /// `on-update` are Dagster+'s `--snapshot-base-condition`: production's serving revision,
    /// taken when the deployment is created and kept, or taken again on every update.
    SnapshotBase { MergeBase = "merge-base", OnCreate = "on-create", OnUpdate = "on-update" }
);

impl SnapshotBase {
    /// Also dagster-cloud's GraphQL spelling (`ON_CREATE`).
    pub fn parse_flag(text: &str) -> Option<SnapshotBase> {
        SnapshotBase::parse(&text.replace('_', "-"))
    }

    /// Which base a deployment compares with, for people: "merge base abc1234", "production at
    /// creation, abc1234", "production at last update, def5678"; without a commit yet, the rule.
    pub fn describe(self, commit: Option<&CommitSha>) -> String {
        let what = match self {
            SnapshotBase::MergeBase => "merge base",
            SnapshotBase::OnCreate => "production at creation",
            SnapshotBase::OnUpdate => "production at last update",
        };
        match (self, commit) {
            (_, None) => what.to_owned(),
            (SnapshotBase::MergeBase, Some(commit)) => format!("{what} {}", commit.short()),
            (_, Some(commit)) => format!("{what}, {}", commit.short()),
        }
    }
}

string_enum!(
    /// Where a variable's value applies, as Dagster+ scopes them: production (`prod`), branch
    /// deployments (all, or one branch's), or developers' machines (never a deployment).
    VariableScope { Production = "production", Branches = "branches", Local = "local" }
);

string_enum!(RevisionStatus {
    Queued = "queued",
    Deploying = "deploying",
    Ready = "ready",
    Failed = "failed",
    Superseded = "superseded",
});

impl RevisionStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, RevisionStatus::Ready | RevisionStatus::Failed | RevisionStatus::Superseded)
    }
}

/// How a pushed commit relates to the newest commit a deployment already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitRelation {
    /// The same commit.
    Same,
    /// The pushed commit is an ancestor of the known one: an out-of-order or replayed delivery.
    Ancestor,
    /// The pushed commit descends from the known one: an ordinary push.
    Descendant,
    /// Neither (a force-push or rebase); then commit times decide, and the later delivery wins ties.
    Diverged { pushed_time: i64, known_time: i64 },
}

/// Latest commit wins: whether a pushed commit should become the deployment's newest revision.
pub fn pushed_commit_is_newer(relation: CommitRelation) -> bool {
    match relation {
        CommitRelation::Same | CommitRelation::Ancestor => false,
        CommitRelation::Descendant => true,
        CommitRelation::Diverged { pushed_time, known_time } => pushed_time >= known_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_for(branch: &str) -> String {
        deployment_name_for_branch(&BranchName::new(branch).expect("valid branch"), |_| false)
            .to_string()
    }

    #[test]
    fn snapshot_bases_parse_both_spellings_and_say_what_they_compare_with() {
        assert_eq!(SnapshotBase::parse_flag("on-create"), Some(SnapshotBase::OnCreate));
        assert_eq!(SnapshotBase::parse_flag("ON_UPDATE"), Some(SnapshotBase::OnUpdate));
        assert_eq!(SnapshotBase::parse_flag("merge-base"), Some(SnapshotBase::MergeBase));
        assert_eq!(SnapshotBase::parse_flag("tip"), None);
        let commit = CommitSha::new(&"abc1234def56".repeat(4)[..40]).expect("a full sha");
        assert_eq!(SnapshotBase::MergeBase.describe(Some(&commit)), "merge base abc1234def56");
        assert_eq!(
            SnapshotBase::OnCreate.describe(Some(&commit)),
            "production at creation, abc1234def56"
        );
        assert_eq!(SnapshotBase::OnUpdate.describe(None), "production at last update");
    }

    #[test]
    fn branch_names_become_safe_deployment_names() {
        let h = |branch: &str| sha256_hex(&[branch.as_bytes()])[..8].to_owned();
        assert_eq!(name_for("feature-1"), "feature-1");
        assert_eq!(name_for("feature/1"), format!("feature-1-{}", h("feature/1")));
        assert_eq!(name_for("Feature-1"), format!("feature-1-{}", h("Feature-1")));
        assert_eq!(name_for("prod"), format!("prod-{}", h("prod")));
        let hostile = "x'; DROP TABLE orders; --";
        assert_eq!(name_for(hostile), format!("x-drop-table-orders-{}", h(hostile)));
        assert_eq!(name_for("ünïcødé"), format!("n-c-d-{}", h("ünïcødé")));
        assert_eq!(name_for("///"), format!("b-{}", h("///")));
        let long = name_for(&"a".repeat(300));
        assert_eq!(long.len(), 40);
        assert!(long.ends_with(&sha256_hex(&["a".repeat(300).as_bytes()])[..8]));
        // Two branches whose slugs collide get different names.
        assert_ne!(name_for("feature/1"), name_for("feature_1"));
        for branch in ["feature/1", "a b", "é", "--", "a--b", "x".repeat(1000).as_str()] {
            let name = name_for(branch);
            assert!(DeploymentName::new(&name).is_ok(), "{branch} -> {name}");
        }
    }

    #[test]
    fn a_taken_name_gets_a_longer_hash() {
        let branch = BranchName::new("feature/1").expect("valid");
        let first = deployment_name_for_branch(&branch, |_| false);
        let second = deployment_name_for_branch(&branch, |n| *n == first);
        assert_ne!(first, second);
        assert!(second.as_str().starts_with("feature-1-"));
    }

    #[test]
    fn hostile_branch_names() {
        assert!(BranchName::new("").is_err());
        assert!(BranchName::new("a\nb").is_err());
        assert!(BranchName::new("a\0b").is_err());
        assert!(BranchName::new(&"é".repeat(600)).is_err());
        // Exact: a branch literally named `refs/heads/main` is not `main`.
        for exact in ["refs/heads/main", "Main", "main ", "main/", "HEAD", "ma\u{0301}in"] {
            assert_eq!(BranchName::new(exact).expect("valid").as_str(), exact);
        }
        assert_ne!(name_for("refs/heads/main"), name_for("main"));
        assert_ne!(name_for("refs/heads/x"), name_for("x"));
    }

    #[test]
    fn schema_names_are_identifiers() {
        let repo = RepositoryName::from_any("acme/Shop.git").expect("valid");
        assert_eq!(repo.as_str(), "shop");
        let schema = SchemaName::for_deployment(
            &repo,
            &DeploymentName::new("feature-1-d4b4f3c1").expect("valid"),
        );
        assert_eq!(schema.as_str(), "shop__feature_1_d4b4f3c1");
        assert!(SchemaName::parse(schema.as_str()).is_some());
        assert!(SchemaName::parse("x\"; drop").is_none());
    }

    #[test]
    fn latest_commit_wins() {
        assert!(!pushed_commit_is_newer(CommitRelation::Same));
        assert!(!pushed_commit_is_newer(CommitRelation::Ancestor));
        assert!(pushed_commit_is_newer(CommitRelation::Descendant));
        assert!(pushed_commit_is_newer(CommitRelation::Diverged { pushed_time: 2, known_time: 1 }));
        assert!(!pushed_commit_is_newer(CommitRelation::Diverged {
            pushed_time: 1,
            known_time: 2
        }));
    }
}
