//! What a location's tool is told about the deployment and commit it runs for, in Offshoot's
//! own `OFFSHOOT_*` variables (the Dagster location adds Dagster+'s `DAGSTER_CLOUD_*` names for
//! the same values). Loading a commit and building it go through [`deployment_environment`],
//! so code sees the same variables at both.

/// The commit a tool loads or builds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitContext {
    pub sha: String,
    /// Committer time, Unix seconds (`git log --format=%cd --date=unix`, as Dagster+'s CI reads it).
    pub timestamp: i64,
    pub author_name: String,
    pub author_email: String,
    /// The first line of the message (`git log --format=%s`).
    pub message: String,
}

/// The deployment and repository a tool runs for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentContext {
    /// Offshoot's repository name: Dagster+'s code location name.
    pub location_name: String,
    /// `prod` or the branch deployment's name.
    pub deployment_name: String,
    pub is_branch_deployment: bool,
    /// The deployment's branch (production's branch for `prod`).
    pub branch: String,
    /// The repository's web address (`https://github.com/org/repo`), when known.
    pub git_url: Option<String>,
    /// `org/repo` on the forge, else Offshoot's repository name.
    pub git_repo: String,
    pub commit: CommitContext,
    /// `(number, OPEN | CLOSED | MERGED)` of the branch's pull request.
    pub pull_request: Option<(String, String)>,
}

/// `OFFSHOOT_*` variables for a tool: the same function for loading and for building.
pub fn deployment_environment(context: &DeploymentContext) -> Vec<(String, String)> {
    let (pr_id, pr_status) = context.pull_request.clone().unwrap_or_default();
    let commit = &context.commit;
    let mut env: Vec<(String, String)> = [
        ("OFFSHOOT_DEPLOYMENT_NAME", context.deployment_name.clone()),
        (
            "OFFSHOOT_IS_BRANCH_DEPLOYMENT",
            if context.is_branch_deployment { "1" } else { "0" }.to_owned(),
        ),
        ("OFFSHOOT_LOCATION_NAME", context.location_name.clone()),
        ("OFFSHOOT_GIT_SHA", commit.sha.clone()),
        ("OFFSHOOT_GIT_BRANCH", context.branch.clone()),
        ("OFFSHOOT_GIT_TIMESTAMP", commit.timestamp.to_string()),
        ("OFFSHOOT_GIT_AUTHOR_NAME", commit.author_name.clone()),
        ("OFFSHOOT_GIT_AUTHOR_EMAIL", commit.author_email.clone()),
        ("OFFSHOOT_GIT_MESSAGE", commit.message.clone()),
        ("OFFSHOOT_GIT_REPO", context.git_repo.clone()),
        ("OFFSHOOT_PULL_REQUEST_ID", pr_id),
        ("OFFSHOOT_PULL_REQUEST_STATUS", pr_status),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(url) = &context.git_url {
        env.push(("OFFSHOOT_GIT_URL".to_owned(), url.clone()));
    }
    env
}

/// A repository's web address from its clone URL, for the hosts whose addresses follow the
/// `https://host/owner/repo` pattern (GitHub, GitLab and their self-hosted editions):
/// `https://user:token@github.com/o/r.git` and `git@github.com:o/r.git` both give
/// `https://github.com/o/r`. `None` for local paths and `file://` URLs.
pub fn web_url(clone_url: &str) -> Option<String> {
    let url = clone_url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let (host, path) =
        if let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            rest.split_once('/')?
        } else if let Some(rest) = url.strip_prefix("ssh://") {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            let (host, path) = rest.split_once('/')?;
            (host.split(':').next().unwrap_or(host), path)
        } else if let Some((user_host, path)) = url.split_once(':') {
            if user_host.contains('/') || path.starts_with("//") {
                return None;
            }
            (user_host.rsplit_once('@').map_or(user_host, |(_, h)| h), path)
        } else {
            return None;
        };
    let path = path.trim_matches('/');
    if host.is_empty() || path.is_empty() || !path.contains('/') {
        return None;
    }
    Some(format!("https://{host}/{path}"))
}

/// A forge's web address from its API address (`https://api.github.com` →
/// `https://github.com`, `https://ghe.example/api/v3` → `https://ghe.example`,
/// `https://gitlab.example/api/v4` → `https://gitlab.example`) and the project's path.
pub fn forge_web_url(api_url: &str, project: &str) -> Option<String> {
    let api = api_url.trim().trim_end_matches('/');
    let base = if api == "https://api.github.com" {
        "https://github.com".to_owned()
    } else if let Some(base) = api.strip_suffix("/api/v3").or_else(|| api.strip_suffix("/api/v4")) {
        base.to_owned()
    } else {
        return None;
    };
    let project = project.trim_matches('/');
    (!project.is_empty() && !project.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{base}/{project}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_urls_from_clone_urls() {
        for (clone, web) in [
            ("https://x:tok@github.com/acme/shop.git", Some("https://github.com/acme/shop")),
            ("git@github.com:acme/shop.git", Some("https://github.com/acme/shop")),
            (
                "ssh://git@gitlab.example:2222/group/sub/shop.git",
                Some("https://gitlab.example/group/sub/shop"),
            ),
            ("https://gitlab.com/group/shop/", Some("https://gitlab.com/group/shop")),
            ("file:///srv/git/shop.git", None),
            ("/srv/git/shop", None),
        ] {
            assert_eq!(web_url(clone).as_deref(), web, "{clone}");
        }
        assert_eq!(
            forge_web_url("https://api.github.com", "acme/shop").as_deref(),
            Some("https://github.com/acme/shop")
        );
        assert_eq!(
            forge_web_url("https://gitlab.example/api/v4/", "g/shop").as_deref(),
            Some("https://gitlab.example/g/shop")
        );
        assert_eq!(forge_web_url("https://gitlab.example/api/v4", "1234"), None);
    }

    #[test]
    fn production_has_no_pull_request() {
        let env = deployment_environment(&DeploymentContext {
            deployment_name: "prod".into(),
            ..DeploymentContext::default()
        });
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("OFFSHOOT_IS_BRANCH_DEPLOYMENT"), Some("0"));
        assert_eq!(get("OFFSHOOT_PULL_REQUEST_ID"), Some(""));
        assert_eq!(get("OFFSHOOT_GIT_URL"), None);
    }
}
