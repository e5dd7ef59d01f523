//! The server's options: everything has a default except the repositories to serve. The binary
//! layers a TOML file, `OFFSHOOT_*` variables and flags into this struct.

use std::path::PathBuf;
use std::time::Duration;

use offshoot_core::RepositoryName;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Everything the embedded defaults keep: metadata store, warehouse files, checkouts.
    pub data_dir: PathBuf,
    pub repositories: Vec<RepositoryConfig>,
    /// Bearer tokens accepted for writes (and for reads unless `public_reads`).
    pub api_tokens: Vec<String>,
    pub public_reads: bool,
    /// How many runs may execute at once in production, and in all branch deployments together.
    pub production_run_concurrency: usize,
    pub branch_run_concurrency: usize,
    /// Steps of one run that may execute at once.
    pub step_parallelism: usize,
    /// Deploys that may execute at once (each deployment deploys one revision at a time).
    pub deploy_concurrency: usize,
    /// Branch deployments without a push for this long are closed unless pinned.
    pub ttl: Duration,
    pub max_open_branch_deployments: usize,
    /// The URL people reach the server at, for links.
    pub public_url: String,
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
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// `*` matches any run of characters.
    pub branches: String,
    pub interval: Duration,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            repositories: Vec::new(),
            api_tokens: Vec::new(),
            public_reads: true,
            production_run_concurrency: 10,
            branch_run_concurrency: 50,
            step_parallelism: 4,
            deploy_concurrency: 4,
            ttl: Duration::from_secs(7 * 24 * 3600),
            max_open_branch_deployments: 100,
            public_url: "http://127.0.0.1:3000".to_owned(),
        }
    }

    pub fn checkouts_dir(&self) -> PathBuf {
        self.data_dir.join("checkouts")
    }
}
