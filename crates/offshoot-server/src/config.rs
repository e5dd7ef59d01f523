//! The server's options: everything has a default except the repositories to serve. The binary
//! layers a TOML file, `OFFSHOOT_*` variables and flags into this struct.

use std::path::PathBuf;
use std::time::Duration;

use offshoot_core::RepositoryName;

pub use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Everything the embedded defaults keep: metadata store, warehouse files, checkouts.
    pub data_dir: PathBuf,
    pub repositories: Vec<RepositoryConfig>,
    /// Bearer tokens and their roles (see `auth`); reads need any of them unless `public_reads`.
    pub api_tokens: Vec<ApiToken>,
    pub public_reads: bool,
    /// How many runs may execute at once in production, and in all branch deployments together.
    pub production_run_concurrency: usize,
    pub branch_run_concurrency: usize,
    /// How many runs of one branch deployment may execute at once (Dagster+'s
    /// `max_concurrent_runs_per_branch_deployment`); `None`: only the branch pool limits them.
    /// Enforced by the lifecycle's claim, so across servers sharing a store.
    pub max_concurrent_runs_per_branch_deployment: Option<usize>,
    /// Dagster+'s `tag_concurrency_limits`: at most `limit` runs with a tag (of a value, or any)
    /// at once, over every deployment and server of the store.
    pub tag_concurrency_limits: Vec<offshoot_store::TagLimit>,
    /// Variables and secrets for the processes of matching deployments (`variables`).
    pub variables: Vec<crate::variables::Variable>,
    /// Steps of one run that may execute at once.
    pub step_parallelism: usize,
    /// Deploys that may execute at once (each deployment deploys one revision at a time).
    pub deploy_concurrency: usize,
    /// Branch deployments without a push for this long are closed unless pinned.
    pub ttl: Duration,
    /// Names this server in leases. Servers sharing a store need distinct ids; a restarted server
    /// with the same id takes its own unfinished work back at once.
    pub server_id: String,
    /// How long a deploy or run stays claimed without a renewal; after that another server (or
    /// this one, restarted) takes it over. Renewed every third of it.
    pub lease: Duration,
    pub max_open_branch_deployments: usize,
    /// The URL people reach the server at, for links.
    pub public_url: String,
    /// Run branch processes (command assets, dbt, Dagster) on the embedded warehouse even where
    /// the kernel cannot confine them (no Landlock): they could then write production's file.
    pub allow_unconfined_branch_commands: bool,
    /// Compute data diffs after every branch run and put them in the pull-request comment.
    pub data_diff_auto: bool,
    /// How often the scheduler looks for due ticks (ticks are minutes apart at the finest).
    pub schedule_check_interval: Duration,
    /// Rows per side above which a keyed data diff matches a sample (by a hash of the key) and
    /// says so; `None`: always whole tables.
    pub data_diff_row_limit: Option<u64>,
    /// What production does after a deploy (`[production] on_deploy`).
    pub on_deploy: OnDeploy,
    /// How long the production tables a catch-up replaced are kept for a rollback
    /// (`[production] retention_hours`).
    pub archive_retention: Duration,
}

/// What production does after a deploy: catch up (promote what branches built that is exactly
/// what production would build, rebuild the rest of what changed) or nothing until asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeploy {
    CatchUp,
    Manual,
}

impl OnDeploy {
    pub const ALL: [OnDeploy; 2] = [OnDeploy::CatchUp, OnDeploy::Manual];

    pub fn parse(text: &str) -> Option<OnDeploy> {
        OnDeploy::ALL.into_iter().find(|o| o.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnDeploy::CatchUp => "catch-up",
            OnDeploy::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    pub name: RepositoryName,
    /// A local git repository (the working directory is never touched).
    pub path: PathBuf,
    pub production_branch: String,
    /// Poll the repository for branches: the production branch deploys to `prod`, every other
    /// branch matching the glob gets a branch deployment, a deleted branch closes its deployment.
    pub watch: Option<WatchConfig>,
    /// Set when the repository is fetched from a URL into the mirror at `path`.
    pub remote: Option<RemoteConfig>,
    /// The git host, for webhooks and pull-request feedback.
    pub forge: Option<ForgeConfig>,
    /// The repository's web address (`https://github.com/org/repo`), Dagster+'s
    /// `DAGSTER_CLOUD_GIT_URL`; `None`: from the forge or the remote URL, when they tell.
    pub git_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// `*` matches any run of characters.
    pub branches: String,
    pub interval: Duration,
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        let server_id = format!("{}:{}", hostname(), data_dir.display());
        ServerConfig {
            data_dir,
            repositories: Vec::new(),
            api_tokens: Vec::new(),
            public_reads: true,
            production_run_concurrency: 10,
            branch_run_concurrency: 50,
            max_concurrent_runs_per_branch_deployment: None,
            tag_concurrency_limits: Vec::new(),
            variables: Vec::new(),
            step_parallelism: 4,
            deploy_concurrency: 4,
            ttl: Duration::from_secs(7 * 24 * 3600),
            server_id,
            lease: Duration::from_secs(30),
            max_open_branch_deployments: 100,
            public_url: "http://127.0.0.1:3000".to_owned(),
            allow_unconfined_branch_commands: false,
            data_diff_auto: true,
            schedule_check_interval: Duration::from_secs(10),
            data_diff_row_limit: Some(1_000_000),
            on_deploy: OnDeploy::CatchUp,
            archive_retention: Duration::from_secs(24 * 3600),
        }
    }

    pub fn checkouts_dir(&self) -> PathBuf {
        self.data_dir.join("checkouts")
    }

    /// What code locations' tools write: per commit (dbt's target/, the Dagster entry point's
    /// output) and per run.
    pub fn locations_dir(&self, repository: &RepositoryName) -> PathBuf {
        self.data_dir.join("locations").join(repository.as_str())
    }

    /// The bare mirror of a repository configured by URL.
    pub fn mirror_path(&self, name: &RepositoryName) -> PathBuf {
        self.data_dir.join("mirrors").join(format!("{name}.git"))
    }
}

/// Where a repository is fetched from when it is not a local path: `path` is then a bare mirror
/// under the data directory (see `ServerConfig::mirror_path`), fetched before each hook event.
/// `Debug` redacts credentials written into the URL.
#[derive(Clone)]
pub struct RemoteConfig {
    /// `https://`, `ssh://`, `git@host:path` or `file://`. Credentials embedded in an https URL
    /// are taken out and handed to git through its askpass helper, never on a command line.
    pub url: String,
    /// For https: the user name sent with `token` (hosts accept any non-empty one with a token).
    pub username: String,
    /// For https: a token or password, given to git through `GIT_ASKPASS`.
    pub token: Option<Secret>,
    /// For ssh: a private key file.
    pub ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("url", &crate::secret::redact(&self.url, self.token.as_ref()))
            .field("username", &self.username)
            .field("token", &self.token)
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    GitHub,
    GitLab,
}

impl ForgeKind {
    pub fn parse(text: &str) -> Option<ForgeKind> {
        match text.to_ascii_lowercase().as_str() {
            "github" => Some(ForgeKind::GitHub),
            "gitlab" => Some(ForgeKind::GitLab),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
        }
    }

    /// The public API of the hosted service; self-hosted instances configure their own.
    pub fn public_api_url(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "https://api.github.com",
            ForgeKind::GitLab => "https://gitlab.com/api/v4",
        }
    }
}

/// The git host a repository lives on: which webhooks it accepts and where pull-request feedback
/// goes.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// `owner/repo` on GitHub, the project's full path (or numeric id) on GitLab. Matched against
    /// webhook payloads and used for API calls; when absent, webhooks match by the remote URL or
    /// the repository name, and feedback takes the project from the pull request's URL.
    pub project: Option<String>,
    /// `https://api.github.com`, `https://github.example.com/api/v3`, `https://gitlab.example.com/api/v4`.
    pub api_url: String,
    /// For pull-request comments and commit statuses; no feedback without it.
    pub token: Option<Secret>,
    /// GitHub: the HMAC key of `X-Hub-Signature-256`; GitLab: the `X-Gitlab-Token`. No webhook
    /// is accepted for the repository without it.
    pub webhook_secret: Option<Secret>,
    /// Deploy pull requests whose head is in a fork. Off by default: a fork's code would run
    /// with this server's warehouse credentials.
    pub deploy_forks: bool,
}

/// What an API token may do; ordered, each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every read: deployments, revisions, changes, the asset graph, runs, metrics.
    Read,
    /// Reads, plus previews: create, update, close and reopen branch deployments; launch and
    /// cancel runs in branch deployments. Never production: what a CI token needs.
    Deploy,
    /// Everything: production (its deploys and runs), delete, pin.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Deploy, Role::Admin];

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Deploy => "deploy",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bearer token the API accepts, and its role.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub secret: Secret,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_deploy_is_catch_up_or_manual() {
        for on_deploy in OnDeploy::ALL {
            assert_eq!(OnDeploy::parse(on_deploy.as_str()), Some(on_deploy));
        }
        assert_eq!(OnDeploy::parse("catch_up"), None);
        assert_eq!(ServerConfig::new("/tmp".into()).on_deploy, OnDeploy::CatchUp);
    }

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Read < Role::Deploy && Role::Deploy < Role::Admin);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("write"), None);
    }
}
