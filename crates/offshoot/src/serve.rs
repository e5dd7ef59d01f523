//! `offshoot serve`: configuration (TOML file < `OFFSHOOT_*` variables < flags), the embedded
//! backends under one data directory, and the server itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use offshoot_core::{BranchName, DeploymentName, RepositoryName, SchemaName};
use offshoot_server::config::{ForgeConfig, ForgeKind, OnDeploy, RemoteConfig, Secret};
use offshoot_server::variables::{check_name, Scope, Variable};
use offshoot_server::{
    ApiToken, AppState, RepositoryConfig, Role, ServerConfig, SharedState, WatchConfig,
};
use offshoot_store::Store;
use offshoot_store_postgres::PostgresStore;
use offshoot_store_sqlite::SqliteStore;
use offshoot_warehouse::{Target, Warehouse};
use offshoot_warehouse_postgres::{PostgresWarehouse, PostgresWarehouseOptions};
use offshoot_warehouse_sqlite::SqliteWarehouse;
use serde::Deserialize;

use crate::Outcome;

#[derive(clap::Args, Clone, Default)]
pub struct Args {
    /// A TOML configuration file; variables and flags override it.
    #[arg(long, env = "OFFSHOOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the embedded metadata store, warehouse files and checkouts live.
    #[arg(long, env = "OFFSHOOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "OFFSHOOT_LISTEN")]
    pub listen: Option<String>,
    /// The URL people reach the server at (for links).
    #[arg(long, env = "OFFSHOOT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Watch this local repository: its production branch deploys to prod, other branches
    /// matching --branches get branch deployments.
    #[arg(long, env = "OFFSHOOT_REPO")]
    pub repo: Option<PathBuf>,
    /// Name of the --repo repository (default: its folder name).
    #[arg(long, env = "OFFSHOOT_REPO_NAME")]
    pub repo_name: Option<String>,
    #[arg(long, env = "OFFSHOOT_PRODUCTION_BRANCH")]
    pub production_branch: Option<String>,
    /// Which branches of --repo get branch deployments (`*` matches anything).
    #[arg(long, env = "OFFSHOOT_BRANCHES")]
    pub branches: Option<String>,
    #[arg(long, env = "OFFSHOOT_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<u64>,
    /// An API token with its role, `ROLE:TOKEN` (role read, deploy or admin; repeatable). A
    /// token without a role is admin. Without any token, an admin one is generated into
    /// DATA_DIR/api-token.
    #[arg(
        long = "api-token",
        env = "OFFSHOOT_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,
    /// Require a token for reads too.
    #[arg(long, env = "OFFSHOOT_PRIVATE_READS")]
    pub private_reads: bool,
    #[arg(long, env = "OFFSHOOT_TTL_DAYS")]
    pub ttl_days: Option<u64>,
    #[arg(long, env = "OFFSHOOT_MAX_OPEN_BRANCH_DEPLOYMENTS")]
    pub max_open_branch_deployments: Option<usize>,
    #[arg(long, env = "OFFSHOOT_BRANCH_RUN_CONCURRENCY")]
    pub branch_run_concurrency: Option<usize>,
    #[arg(long, env = "OFFSHOOT_PRODUCTION_RUN_CONCURRENCY")]
    pub production_run_concurrency: Option<usize>,
    /// Runs of one branch deployment that may execute at once, across servers sharing the store
    /// (Dagster+'s max_concurrent_runs_per_branch_deployment) [default: no limit but the branch pool]
    #[arg(long, env = "OFFSHOOT_MAX_CONCURRENT_RUNS_PER_BRANCH_DEPLOYMENT")]
    pub max_concurrent_runs_per_branch_deployment: Option<usize>,
    /// The metadata store: `postgres://...`, or `sqlite://PATH` (default DATA_DIR/offshoot.db).
    #[arg(long, env = "OFFSHOOT_METADATA_URL", hide_env_values = true)]
    pub metadata_url: Option<String>,
    /// The warehouse: `postgres://...` (one schema per deployment), or SQLite files under
    /// DATA_DIR/warehouse (default).
    #[arg(long, env = "OFFSHOOT_WAREHOUSE_URL", hide_env_values = true)]
    pub warehouse_url: Option<String>,
    /// Names this server in leases; servers sharing a store need distinct ids (default:
    /// hostname and data directory).
    #[arg(long, env = "OFFSHOOT_SERVER_ID")]
    pub server_id: Option<String>,
    /// Seconds a deploy or run stays claimed without renewal before another server takes it over.
    #[arg(long, env = "OFFSHOOT_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    /// The PostgreSQL group role of the branches' login roles: it reads production (NOLOGIN;
    /// created if missing).
    #[arg(long, env = "OFFSHOOT_BRANCH_ROLE")]
    pub branch_role: Option<String>,
    /// Run branch command assets, dbt and Dagster on the embedded warehouse even on a kernel
    /// without Landlock, where they cannot be confined (they could write production's file).
    #[arg(long, env = "OFFSHOOT_ALLOW_UNCONFINED_BRANCH_COMMANDS")]
    pub allow_unconfined_branch_commands: bool,
    /// How much the server logs on stderr: error, warn, info (default), debug or trace.
    #[arg(long, env = "OFFSHOOT_LOG_LEVEL", value_parser = LOG_LEVELS)]
    pub log_level: Option<String>,
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The configuration file's shape.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    api_tokens: Vec<FileToken>,
    #[serde(alias = "public_read")]
    public_reads: Option<bool>,
    ttl_days: Option<u64>,
    max_open_branch_deployments: Option<usize>,
    branch_run_concurrency: Option<usize>,
    production_run_concurrency: Option<usize>,
    max_concurrent_runs_per_branch_deployment: Option<usize>,
    metadata_url: Option<String>,
    warehouse_url: Option<String>,
    branch_role: Option<String>,
    server_id: Option<String>,
    lease_seconds: Option<u64>,
    schedule_check_interval_ms: Option<u64>,
    allow_unconfined_branch_commands: Option<bool>,
    data_diff: Option<FileDataDiff>,
    production: Option<FileProduction>,
    log_level: Option<String>,
    #[serde(default)]
    repositories: Vec<FileRepository>,
    #[serde(default)]
    variables: Vec<FileVariable>,
    #[serde(default)]
    tag_concurrency_limits: Vec<FileTagLimit>,
}

/// One `[[tag_concurrency_limits]]` entry, as Dagster+ writes it: at most `limit` runs whose
/// tags have `key` (with `value`, or any value) at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTagLimit {
    key: String,
    value: Option<String>,
    limit: u32,
}

/// One `[[variables]]` entry: a name, its scopes, and its value from exactly one of `value`
/// (plain text in this file), `secret_env` (a variable of the server's environment) or
/// `secret_file` (a file's content, without its final newline).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVariable {
    name: String,
    scopes: Vec<String>,
    branch: Option<String>,
    repository: Option<String>,
    value: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
}

fn file_variable(entry: FileVariable) -> anyhow::Result<Variable> {
    let name = entry.name;
    check_name(&name).map_err(anyhow::Error::msg)?;
    let mut scopes = Vec::new();
    for text in &entry.scopes {
        scopes.push(Scope::parse(text).with_context(|| {
            format!("variable `{name}`: scope `{text}` is not production, branches or local")
        })?);
    }
    if scopes.is_empty() {
        bail!("variable `{name}` has no scopes: give `scopes = [\"production\"]`, `[\"branches\"]`, `[\"local\"]` or several");
    }
    let branch = match entry.branch {
        Some(_) if !scopes.contains(&Scope::Branches) => {
            bail!("variable `{name}`: `branch` needs the `branches` scope")
        }
        Some(text) => Some(
            BranchName::new(&text)
                .map_err(|e| anyhow::anyhow!("variable `{name}`: branch: {e}"))?,
        ),
        None => None,
    };
    let repository = entry
        .repository
        .map(|text| {
            RepositoryName::from_any(&text)
                .map_err(|e| anyhow::anyhow!("variable `{name}`: repository: {e}"))
        })
        .transpose()?;
    let (value, secret) = match (entry.value, entry.secret_env, entry.secret_file) {
        (Some(value), None, None) => (value, false),
        (None, Some(env), None) => (
            std::env::var(&env).with_context(|| {
                format!("variable `{name}`: `secret_env` names `{env}`, which is not set")
            })?,
            true,
        ),
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("variable `{name}`: reading `secret_file` {}", path.display())
            })?;
            (text.strip_suffix('\n').unwrap_or(&text).to_owned(), true)
        }
        _ => {
            bail!("variable `{name}` needs exactly one of `value`, `secret_env` and `secret_file`")
        }
    };
    let value = Secret::new(value).with_context(|| format!("variable `{name}` is empty"))?;
    Ok(Variable { name, value, scopes, branch, repository, secret })
}

/// Every `[[variables]]` entry, checked; the same name, scope, branch and repository twice is an
/// error (which value wins would be a guess).
fn file_variables(entries: Vec<FileVariable>) -> anyhow::Result<Vec<Variable>> {
    let mut variables: Vec<Variable> = Vec::new();
    for entry in entries {
        let variable = file_variable(entry)?;
        let clash = variables.iter().find(|other| {
            other.name == variable.name
                && other.branch == variable.branch
                && other.repository == variable.repository
                && other.scopes.iter().any(|s| variable.scopes.contains(s))
        });
        if clash.is_some() {
            bail!(
                "variable `{}` is given twice for the same scope; give each scope one value",
                variable.name
            );
        }
        variables.push(variable);
    }
    Ok(variables)
}

/// The `[[variables]]` of a server configuration file, for `offshoot env export`.
pub fn variables_of(path: &Path) -> anyhow::Result<Vec<Variable>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    file_variables(file.variables).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// One `api_tokens` entry: a plain string, which is an `admin` token (the form from before
/// roles), or a table `{ secret = "...", role = "deploy" }` (`secret_env` names a variable
/// instead), which `[[api_tokens]]` writes too.
enum FileToken {
    Plain(String),
    WithRole { secret: Option<String>, secret_env: Option<String>, role: Role },
}

/// A role in the file; a bad one is an error at its own line.
struct FileRole(Role);

impl<'de> Deserialize<'de> for FileRole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<FileRole, D::Error> {
        let text = String::deserialize(deserializer)?;
        Role::parse(&text).map(FileRole).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a role: use \"read\", \"deploy\" or \"admin\""
            ))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTokenTable {
    secret: Option<String>,
    secret_env: Option<String>,
    role: FileRole,
}

impl<'de> Deserialize<'de> for FileToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<FileToken, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileToken;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token string (role admin) or a table with `secret` (or `secret_env`) and `role`")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<FileToken, E> {
                Ok(FileToken::Plain(value.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FileToken, A::Error> {
                let table =
                    FileTokenTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if table.secret.is_some() == table.secret_env.is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "a `{}` token needs one of `secret` and `secret_env`",
                        table.role.0
                    )));
                }
                Ok(FileToken::WithRole {
                    secret: table.secret,
                    secret_env: table.secret_env,
                    role: table.role.0,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A `--api-token` / `OFFSHOOT_API_TOKENS` entry: `ROLE:TOKEN`, or a plain token (admin). A
/// prefix of letters before a colon is taken as a role and must be one, so a mistyped role is an
/// error rather than part of an admin token. Errors never repeat the token.
fn flag_token(entry: &str, position: usize) -> anyhow::Result<Option<ApiToken>> {
    let entry = entry.trim();
    let (role, secret) = match entry.split_once(':') {
        Some((prefix, rest)) if !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphabetic()) => match Role::parse(prefix) {
            Some(role) => (role, rest),
            None => bail!(
                "--api-token / OFFSHOOT_API_TOKENS entry {position}: `{prefix}:` is not a role; write `read:TOKEN`, `deploy:TOKEN` or `admin:TOKEN` (a token without a role is admin)"
            ),
        },
        _ => (Role::Admin, entry),
    };
    Ok(Secret::new(secret.trim()).map(|secret| ApiToken { secret, role }))
}

/// Every configured token, flags' first; the same secret twice is an error (its role would be
/// ambiguous).
fn api_tokens(args: &Args, file: Vec<FileToken>) -> anyhow::Result<Vec<ApiToken>> {
    let mut tokens = Vec::new();
    for (index, entry) in args.api_tokens.iter().enumerate() {
        tokens.extend(flag_token(entry, index + 1)?);
    }
    for entry in file {
        let token = match entry {
            FileToken::Plain(text) => {
                Secret::new(text).map(|secret| ApiToken { secret, role: Role::Admin })
            }
            FileToken::WithRole { secret: inline, secret_env, role } => {
                let secret = secret(inline, secret_env.as_deref(), None, "secret")?;
                secret.map(|secret| ApiToken { secret, role })
            }
        };
        tokens.extend(token);
    }
    for (index, token) in tokens.iter().enumerate() {
        if let Some(other) = tokens[..index]
            .iter()
            .find(|other| other.secret.matches(token.secret.expose().as_bytes()))
        {
            bail!("the same API token is configured twice (roles `{}` and `{}`); give each token once", other.role, token.role);
        }
    }
    Ok(tokens)
}

/// `[data_diff]`: when data diffs are computed on their own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDataDiff {
    /// After every branch run, for what it built (and into the pull-request comment).
    auto: Option<bool>,
    /// Rows per side above which a keyed diff matches a sample; 0: no limit.
    row_limit: Option<u64>,
}

/// `[production]`: what production does after a deploy, and how long a catch-up's replaced
/// tables are kept for a rollback.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileProduction {
    /// `catch-up` (default) or `manual`.
    on_deploy: Option<String>,
    /// Hours (default 24).
    retention_hours: Option<u64>,
}

/// Applies `[production]` to the configuration; a bad value is an error naming the good ones.
fn production_settings(
    config: &mut ServerConfig,
    file: Option<FileProduction>,
) -> anyhow::Result<()> {
    let file = file.unwrap_or_default();
    if let Some(text) = file.on_deploy {
        config.on_deploy = OnDeploy::parse(&text).ok_or_else(|| {
            let known: Vec<&str> = OnDeploy::ALL.iter().map(|o| o.as_str()).collect();
            anyhow::anyhow!(
                "[production] on_deploy `{text}` is not one of {} (\"catch-up\": production promotes what branches built and rebuilds the rest after every deploy; \"manual\": only `offshoot deployment catch-up prod` does)",
                known.join(", ")
            )
        })?;
    }
    if let Some(hours) = file.retention_hours {
        if hours == 0 {
            bail!("[production] retention_hours must be at least 1: a rollback needs the replaced tables");
        }
        config.archive_retention = Duration::from_secs(hours.saturating_mul(3600));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepository {
    name: Option<String>,
    /// A local repository; or `url`.
    path: Option<PathBuf>,
    /// A remote repository (https, ssh or file URL), mirrored under the data directory.
    url: Option<String>,
    production_branch: Option<String>,
    #[serde(default)]
    watch: bool,
    branches: Option<String>,
    poll_interval_ms: Option<u64>,
    /// The repository's web address, Dagster+'s `DAGSTER_CLOUD_GIT_URL` (default: from the forge
    /// or `url`).
    git_url: Option<String>,
    /// `github` or `gitlab` (inferred for github.com and gitlab.com URLs).
    forge: Option<String>,
    /// `owner/repo` (GitHub) or the project's full path (GitLab).
    project: Option<String>,
    api_url: Option<String>,
    /// Secrets, inline or from the named environment variable.
    token: Option<String>,
    token_env: Option<String>,
    webhook_secret: Option<String>,
    webhook_secret_env: Option<String>,
    #[serde(default)]
    deploy_forks: bool,
    /// Credentials for fetching `url` over https (default: `token`) or ssh.
    git_username: Option<String>,
    git_token: Option<String>,
    git_token_env: Option<String>,
    ssh_key: Option<PathBuf>,
}

/// The checked configuration and where to listen.
pub struct Settings {
    pub config: ServerConfig,
    pub backends: Backends,
    pub listen: String,
    /// Where a generated token was written, if one was.
    pub token_file: Option<PathBuf>,
    /// One of `LOG_LEVELS`.
    pub log_level: String,
}

fn repository_name(name: Option<&str>, path: &Path) -> anyhow::Result<RepositoryName> {
    let text = match name {
        Some(name) => name.to_owned(),
        None => std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "repo".to_owned()),
    };
    RepositoryName::from_any(&text).with_context(|| format!("`{text}` cannot name a repository"))
}

/// A secret from the file, from the environment variable the file names, or else from the
/// fallback variable. Never printed: errors name the variable, not its value.
fn secret(
    inline: Option<String>,
    env_name: Option<&str>,
    fallback_env: Option<&str>,
    key: &str,
) -> anyhow::Result<Option<Secret>> {
    if let Some(name) = env_name {
        let value = std::env::var(name).ok().and_then(Secret::new);
        return match value {
            Some(value) => Ok(Some(value)),
            None => bail!("`{key}_env` names `{name}`, which is not set"),
        };
    }
    Ok(inline
        .and_then(Secret::new)
        .or_else(|| fallback_env.and_then(|name| std::env::var(name).ok()).and_then(Secret::new)))
}

/// The host of an `https://`, `ssh://` or `user@host:path` URL, lower-cased.
fn url_host(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        None => url.split_once(':')?.0,
    };
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// A `[[repositories]]` entry, checked: exactly one of `path` and `url`; forge settings only
/// with a forge.
fn file_repository(
    config: &ServerConfig,
    repo: FileRepository,
) -> anyhow::Result<RepositoryConfig> {
    let name = match (&repo.path, &repo.url) {
        (Some(_), Some(_)) => bail!("a repository has both `path` and `url`; give one"),
        (None, None) => {
            bail!("a repository needs `path` (a local repository) or `url` (a remote one)")
        }
        (Some(path), None) => repository_name(repo.name.as_deref(), path)?,
        (None, Some(url)) => {
            let text =
                repo.name.clone().unwrap_or_else(|| offshoot_server::secret::redact(url, None));
            RepositoryName::from_any(&text)
                .with_context(|| format!("`{text}` cannot name a repository; set `name`"))?
        }
    };
    let host = repo.url.as_deref().and_then(url_host);
    let kind = match repo.forge.as_deref() {
        Some(text) => Some(ForgeKind::parse(text).with_context(|| {
            format!("repository `{name}`: forge `{text}` is not `github` or `gitlab`")
        })?),
        None => match host.as_deref() {
            Some("github.com") => Some(ForgeKind::GitHub),
            Some("gitlab.com") => Some(ForgeKind::GitLab),
            _ => None,
        },
    };
    let forge_keys = repo.project.is_some()
        || repo.api_url.is_some()
        || repo.token.is_some()
        || repo.token_env.is_some()
        || repo.webhook_secret.is_some()
        || repo.webhook_secret_env.is_some()
        || repo.deploy_forks;
    if kind.is_none() && forge_keys {
        bail!("repository `{name}`: set `forge = \"github\"` or `forge = \"gitlab\"` to use webhooks or pull-request feedback");
    }
    let forge = match kind {
        None => None,
        Some(kind) => {
            let fallback_token = match kind {
                ForgeKind::GitHub => "OFFSHOOT_GITHUB_TOKEN",
                ForgeKind::GitLab => "OFFSHOOT_GITLAB_TOKEN",
            };
            // Self-hosted: the API lives on the host the repository is cloned from.
            let api_url = repo.api_url.clone().unwrap_or_else(|| match (kind, host.as_deref()) {
                (_, None | Some("github.com" | "gitlab.com")) => kind.public_api_url().to_owned(),
                (ForgeKind::GitHub, Some(host)) => format!("https://{host}/api/v3"),
                (ForgeKind::GitLab, Some(host)) => format!("https://{host}/api/v4"),
            });
            if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
                bail!("repository `{name}`: `api_url` must start with https:// or http://");
            }
            Some(ForgeConfig {
                kind,
                project: repo.project.clone().map(|p| p.trim_matches('/').to_owned()),
                api_url,
                token: secret(
                    repo.token.clone(),
                    repo.token_env.as_deref(),
                    Some(fallback_token),
                    "token",
                )?,
                webhook_secret: secret(
                    repo.webhook_secret.clone(),
                    repo.webhook_secret_env.as_deref(),
                    Some("OFFSHOOT_WEBHOOK_SECRET"),
                    "webhook_secret",
                )?,
                deploy_forks: repo.deploy_forks,
            })
        }
    };
    let remote = match &repo.url {
        None => None,
        Some(url) => {
            if repo.watch {
                bail!("repository `{name}`: `watch` needs a local `path`; a repository with a `url` is fetched on each webhook event");
            }
            // An explicit git token, else the API token, else the fallback variable.
            let git_token = match secret(
                repo.git_token.clone(),
                repo.git_token_env.as_deref(),
                None,
                "git_token",
            )? {
                Some(token) => Some(token),
                None => forge.as_ref().and_then(|f| f.token.clone()).or(secret(
                    None,
                    None,
                    Some("OFFSHOOT_GIT_TOKEN"),
                    "git_token",
                )?),
            };
            let username = repo.git_username.clone().unwrap_or_else(|| match kind {
                Some(ForgeKind::GitHub) => "x-access-token".to_owned(),
                Some(ForgeKind::GitLab) => "oauth2".to_owned(),
                None => "git".to_owned(),
            });
            Some(RemoteConfig {
                url: url.clone(),
                username,
                token: git_token,
                ssh_key: repo.ssh_key.clone(),
            })
        }
    };
    let path = match (&repo.path, &remote) {
        (Some(path), _) => path.clone(),
        (None, _) => {
            let path = config.mirror_path(&name);
            offshoot_server::adapters::mirror::initialize(&path)
                .with_context(|| format!("repository `{name}`: preparing its mirror"))?;
            path
        }
    };
    if let Some(forge) = &forge {
        if forge.token.is_some()
            && forge.api_url.starts_with("https://")
            && !offshoot_server::adapters::forge::TLS
        {
            eprintln!("warning: repository `{name}`: {} is https, but this build has no TLS; pull-request feedback needs the `tls` feature", forge.api_url);
        }
    }
    let watch = repo.watch.then(|| WatchConfig {
        branches: repo.branches.clone().unwrap_or_else(|| "*".to_owned()),
        interval: Duration::from_millis(repo.poll_interval_ms.unwrap_or(2000)),
    });
    Ok(RepositoryConfig {
        name,
        path,
        production_branch: repo.production_branch.unwrap_or_else(|| "main".to_owned()),
        watch,
        remote,
        forge,
        git_url: repo.git_url.filter(|u| !u.trim().is_empty()),
    })
}

pub fn settings(args: &Args) -> anyhow::Result<Settings> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).map_err(|e| {
                let at = e.span().map(|s| text[..s.start].lines().count().max(1)).unwrap_or(1);
                anyhow::anyhow!("{}:{at}: {}", path.display(), e.message())
            })?
        }
        None => FileConfig::default(),
    };
    let log_level = args.log_level.clone().or(file.log_level).unwrap_or_else(|| "info".to_owned());
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        let at = args.config.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
        bail!("{at}log_level `{log_level}` is not one of {}", LOG_LEVELS.join(", "));
    }
    let data_dir =
        args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(".offshoot"));
    // Resolved once, against the working directory at start: every folder below it is handed to
    // tools that run elsewhere (a checkout, a work folder).
    let data_dir = absolute(&data_dir)?;
    let mut config = ServerConfig::new(data_dir.clone());
    let listen = args.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    config.public_url =
        args.public_url.clone().or(file.public_url).unwrap_or_else(|| format!("http://{listen}"));
    config.public_reads =
        if args.private_reads { false } else { file.public_reads.unwrap_or(true) };
    if let Some(days) = args.ttl_days.or(file.ttl_days) {
        config.ttl = Duration::from_secs(days * 86_400);
    }
    if let Some(n) = args.max_open_branch_deployments.or(file.max_open_branch_deployments) {
        config.max_open_branch_deployments = n;
    }
    config.allow_unconfined_branch_commands = args.allow_unconfined_branch_commands
        || file.allow_unconfined_branch_commands.unwrap_or(false);
    if let Some(ms) = file.schedule_check_interval_ms {
        config.schedule_check_interval = Duration::from_millis(ms.max(50));
    }
    if let Some(auto) = file.data_diff.as_ref().and_then(|d| d.auto) {
        config.data_diff_auto = auto;
    }
    if let Some(limit) = file.data_diff.as_ref().and_then(|d| d.row_limit) {
        config.data_diff_row_limit = (limit > 0).then_some(limit);
    }
    production_settings(&mut config, file.production).map_err(|e| match &args.config {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => e,
    })?;
    if let Some(n) = args.branch_run_concurrency.or(file.branch_run_concurrency) {
        config.branch_run_concurrency = n;
    }
    if let Some(n) = args.production_run_concurrency.or(file.production_run_concurrency) {
        config.production_run_concurrency = n;
    }
    if let Some(n) = args
        .max_concurrent_runs_per_branch_deployment
        .or(file.max_concurrent_runs_per_branch_deployment)
    {
        // Zero would queue every branch run forever.
        config.max_concurrent_runs_per_branch_deployment = Some(n.max(1));
    }
    for (index, entry) in file.tag_concurrency_limits.into_iter().enumerate() {
        if entry.key.is_empty() || entry.key.contains('=') || entry.limit == 0 {
            anyhow::bail!(
                "tag_concurrency_limits[{index}]: the key must be non-empty without `=` and the limit at least 1 (key {:?}, limit {})",
                entry.key,
                entry.limit
            );
        }
        config.tag_concurrency_limits.push(offshoot_store::TagLimit {
            key: entry.key,
            value: entry.value,
            limit: entry.limit,
        });
    }
    if let Some(id) = args.server_id.clone().or(file.server_id) {
        config.server_id = id;
    }
    if let Some(seconds) = args.lease_seconds.or(file.lease_seconds) {
        config.lease = Duration::from_secs(seconds.max(1));
    }
    for repo in file.repositories {
        let repository = file_repository(&config, repo)?;
        config.repositories.push(repository);
    }
    if let Some(path) = &args.repo {
        let name = repository_name(args.repo_name.as_deref(), path)?;
        config.repositories.retain(|r| r.name != name);
        config.repositories.push(RepositoryConfig {
            name,
            path: path.clone(),
            production_branch: args.production_branch.clone().unwrap_or_else(|| "main".to_owned()),
            watch: Some(WatchConfig {
                branches: args.branches.clone().unwrap_or_else(|| "*".to_owned()),
                interval: Duration::from_millis(args.poll_interval_ms.unwrap_or(1000)),
            }),
            remote: None,
            forge: None,
            git_url: None,
        });
    }
    let mut names: Vec<&str> = config.repositories.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        bail!("two repositories have the same name; give them distinct `name`s");
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    config.variables = file_variables(file.variables).map_err(|e| match &args.config {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => e,
    })?;
    config.api_tokens = api_tokens(args, file.api_tokens).map_err(|e| match &args.config {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => e,
    })?;
    let mut token_file = None;
    if config.api_tokens.is_empty() {
        let path = data_dir.join("api-token");
        config.api_tokens.push(ApiToken { secret: generated_token(&path)?, role: Role::Admin });
        token_file = Some(path);
    }
    let backends = Backends {
        metadata_url: args.metadata_url.clone().or(file.metadata_url),
        warehouse_url: args.warehouse_url.clone().or(file.warehouse_url),
        branch_role: args.branch_role.clone().or(file.branch_role),
    };
    Ok(Settings { config, backends, listen, token_file, log_level })
}

/// `path` made absolute against the current directory (not canonicalized: it may not exist yet).
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut out = cwd;
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The token in `path`, or a new random one written there readable by the owner only.
pub fn generated_token(path: &Path) -> anyhow::Result<Secret> {
    if let Some(existing) =
        std::fs::read_to_string(path).ok().and_then(|text| Secret::new(text.trim()))
    {
        return Ok(existing);
    }
    let mut bytes = [0u8; 24];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Secret::new(token).context("a generated token is never blank")
}

/// Which store and warehouse to use; `None` means the embedded SQLite defaults.
#[derive(Clone, Default)]
pub struct Backends {
    pub metadata_url: Option<String>,
    pub warehouse_url: Option<String>,
    pub branch_role: Option<String>,
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The configured backends (the binary is the only place that picks them).
pub async fn state_for(config: ServerConfig, backends: &Backends) -> anyhow::Result<SharedState> {
    let store: Arc<dyn Store> = match backends.metadata_url.as_deref() {
        Some(url) if is_postgres(url) => Arc::new(
            PostgresStore::connect(url)
                .await
                .context("connecting to the PostgreSQL metadata store")?,
        ),
        Some(url) => {
            let path = url
                .strip_prefix("sqlite://")
                .with_context(|| "metadata_url must start with postgres:// or sqlite://")?;
            Arc::new(
                SqliteStore::open(Path::new(path)).await.context("opening the metadata store")?,
            )
        }
        None => Arc::new(
            SqliteStore::open(&config.data_dir.join("offshoot.db"))
                .await
                .context("opening the metadata store")?,
        ),
    };
    let warehouse: Arc<dyn Warehouse> = match backends.warehouse_url.as_deref() {
        Some(url) if is_postgres(url) => {
            let mut options = PostgresWarehouseOptions::default();
            if let Some(role) = &backends.branch_role {
                options.branch_role = role.clone();
            }
            let warehouse = PostgresWarehouse::connect(url, options).await.context("connecting to the PostgreSQL warehouse")?;
            for repo in &config.repositories {
                let production = SchemaName::for_deployment(&repo.name, &DeploymentName::production());
                let target = Target { schema: production.clone(), production: production.clone() };
                warehouse.prepare(&target).await.context("creating the production schema")?;
                warehouse.setup_roles(&production).await.context("setting up the branch role")?;
            }
            Arc::new(warehouse)
        }
        Some(_) => anyhow::bail!("warehouse_url must start with postgres://; leave it out for the embedded SQLite warehouse"),
        None => Arc::new(SqliteWarehouse::new(config.data_dir.join("warehouse")).context("opening the warehouse")?),
    };
    Ok(AppState::new(store, warehouse, config))
}

/// The embedded backends under the data directory.
pub async fn embedded_state(
    config: ServerConfig,
) -> anyhow::Result<(SharedState, Arc<SqliteWarehouse>)> {
    let store = SqliteStore::open(&config.data_dir.join("offshoot.db"))
        .await
        .context("opening the metadata store")?;
    let warehouse = Arc::new(
        SqliteWarehouse::new(config.data_dir.join("warehouse")).context("opening the warehouse")?,
    );
    let state = AppState::new(Arc::new(store), warehouse.clone(), config);
    Ok((state, warehouse))
}

/// `level` is one of `LOG_LEVELS`; anything else logs at `info`.
pub fn init_logging(level: &str) {
    let level = level.parse::<tracing::Level>().unwrap_or(tracing::Level::INFO);
    use std::io::IsTerminal;
    let colours = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colours)
        .with_max_level(level)
        .try_init();
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let settings = settings(&args)?;
    init_logging(&settings.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&settings.listen).await.with_context(|| format!("listening on {}", settings.listen))?;
        let address = listener.local_addr()?;
        let state = state_for(settings.config.clone(), &settings.backends).await?;
        eprintln!("offshoot serving on http://{address} (data in {})", settings.config.data_dir.display());
        if let Some(path) = &settings.token_file {
            eprintln!("admin API token (no api_tokens are configured): in {} (export OFFSHOOT_API_TOKEN=$(cat {}))", path.display(), path.display());
        }
        for repo in &settings.config.repositories {
            let mode = if repo.watch.is_some() { "watching" } else { "serving" };
            eprintln!("{mode} repository `{}` at {} (production branch `{}`)", repo.name, repo.path.display(), repo.production_branch);
        }
        offshoot_server::serve(state, listener, shutdown_signal()).await?;
        Ok(Outcome::Ok)
    })
}

pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--api-token` entries: the role each gets, or the error (which never repeats the token).
    #[test]
    fn flag_tokens_are_role_colon_token_or_plain_admin() {
        let check = |entry: &str, expected: &str| {
            let got = match flag_token(entry, 1) {
                Ok(Some(token)) => format!("{} {}", token.role, token.secret.expose()),
                Ok(None) => "none".to_owned(),
                Err(error) => error.to_string(),
            };
            assert_eq!(got, expected, "{entry}");
        };
        check("deploy:ci-1", "deploy ci-1");
        check("read:r-1", "read r-1");
        check("admin:a:b", "admin a:b");
        check("plain-token", "admin plain-token");
        check(" deploy:ci-2 ", "deploy ci-2");
        check("0123:abcd", "admin 0123:abcd");
        check("deploy:", "none");
        check("", "none");
        check(
            "Deploy:ci-1",
            "--api-token / OFFSHOOT_API_TOKENS entry 1: `Deploy:` is not a role; write `read:TOKEN`, `deploy:TOKEN` or `admin:TOKEN` (a token without a role is admin)",
        );
    }
}
