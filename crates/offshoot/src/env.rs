//! `offshoot env`: variables and secrets on a server (`set`, `unset`, `list`: values never come
//! back), and `export`, the local-scope variables of a server configuration as a `.env` file
//! for local development (what `dagster dev` and python-dotenv read). Production and branch
//! values never leave the server.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

use crate::client::{encode, Client, ClientArgs, UsageError};
use crate::Outcome;

/// Which variable: its name, scope and branch, in which repository.
#[derive(clap::Args)]
pub struct VariableKey {
    /// An environment variable name (letters, digits and `_`; not OFFSHOOT_* or DAGSTER_CLOUD_*)
    name: String,
    /// production (prod), branches (every branch deployment, or one with --branch) or local
    /// (developers' machines only)
    #[arg(long, value_parser = ["production", "branches", "local"])]
    scope: String,
    /// With `--scope branches`: only this branch's deployment; it wins over the value for every
    /// branch [default: every branch]
    #[arg(long)]
    branch: Option<String>,
    /// The repository as the server names it [default: the server's only repository]
    #[arg(long)]
    repository: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where the value comes from: exactly one. Values from the environment, a file or standard input
/// are secrets (redacted from step logs); `--value` is for plain settings (it shows in shell
/// history and `ps`).
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct ValueSource {
    /// A plain value, given on the command line (not for secrets)
    #[arg(long)]
    value: Option<String>,
    /// A secret: the value of this environment variable of the `offshoot` process (e.g. a CI
    /// secret)
    #[arg(long)]
    from_env: Option<String>,
    /// A secret: the content of this file, without one trailing newline (`-`: standard input)
    #[arg(long)]
    from_file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum EnvCommand {
    /// Set a variable or secret on the server (needs an `admin` token); the value is never
    /// printed or returned.
    Set {
        #[command(flatten)]
        key: VariableKey,
        #[command(flatten)]
        source: ValueSource,
    },
    /// Remove a variable set with `env set` (needs an `admin` token).
    Unset {
        #[command(flatten)]
        key: VariableKey,
    },
    /// The server's variables: names, scopes, branches and where each came from, never values.
    List {
        /// The repository as the server names it [default: every repository]
        #[arg(long)]
        repository: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the variables of a scope as `NAME='value'` lines: `offshoot env export --scope local > .env`.
    Export {
        /// Only `local`: production and branch values stay on the server
        #[arg(long, value_parser = ["local"])]
        scope: String,
        /// The server's configuration file, whose `[[variables]]` are read (secrets from the
        /// environment or files it names)
        #[arg(long, env = "OFFSHOOT_CONFIG", default_value = "offshoot-server.toml")]
        config: PathBuf,
        /// Read the values set with `env set --scope local` from the server instead (needs a
        /// `deploy` token)
        #[arg(long)]
        server: bool,
        /// With --server: the repository as the server names it [default: the server's only
        /// repository]
        #[arg(long, requires = "server")]
        repository: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn value_of(source: ValueSource) -> anyhow::Result<(String, bool)> {
    if let Some(value) = source.value {
        return Ok((value, false));
    }
    if let Some(name) = source.from_env {
        let value = std::env::var(&name).map_err(|_| {
            UsageError(format!(
                "--from-env {name}: the environment has no variable `{name}` (or it is not UTF-8)"
            ))
        })?;
        return Ok((value, true));
    }
    let path = source.from_file.expect("clap requires one source");
    let mut value = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut value)
            .context("reading the value from standard input")?;
    } else {
        value = std::fs::read_to_string(&path)
            .map_err(|e| UsageError(format!("--from-file {}: {e}", path.display())))?;
    }
    if let Some(stripped) = value.strip_suffix('\n') {
        value = stripped.strip_suffix('\r').unwrap_or(stripped).to_owned();
    }
    Ok((value, true))
}

fn key_query(key: &VariableKey) -> String {
    let mut query = format!("?scope={}", encode(&key.scope));
    if let Some(branch) = &key.branch {
        query.push_str(&format!("&branch={}", encode(branch)));
    }
    if let Some(repository) = &key.repository {
        query.push_str(&format!("&repository={}", encode(repository)));
    }
    query
}

fn describe(variable: &Value) -> String {
    let text = |key: &str| variable[key].as_str().unwrap_or("").to_owned();
    let branch = variable["branch"].as_str().map(|b| format!(" of branch {b}")).unwrap_or_default();
    let repository = variable["repository"].as_str().unwrap_or("every repository");
    let kind = if variable["secret"] == true { "secret" } else { "plain" };
    format!("{}\t{}{branch}\t{repository}\t{kind}\t{}", text("name"), text("scope"), text("source"))
}

pub fn run(command: EnvCommand) -> anyhow::Result<Outcome> {
    match command {
        EnvCommand::Set { key, source } => {
            let (value, secret) = value_of(source)?;
            let mut body = json!({ "scope": key.scope, "value": value, "secret": secret });
            if let Some(branch) = &key.branch {
                body["branch"] = Value::from(branch.as_str());
            }
            if let Some(repository) = &key.repository {
                body["repository"] = Value::from(repository.as_str());
            }
            let path = format!("/api/v1/variables/{}", encode(&key.name));
            let answer = Client::new(&key.client)?.put(&path, &body)?;
            println!("set {}", describe(&answer));
            Ok(Outcome::Ok)
        }
        EnvCommand::Unset { key } => {
            let path = format!("/api/v1/variables/{}{}", encode(&key.name), key_query(&key));
            Client::new(&key.client)?.delete(&path)?;
            println!("unset {} ({})", key.name, key.scope);
            Ok(Outcome::Ok)
        }
        EnvCommand::List { repository, client } => {
            let path = match repository {
                Some(repository) => format!("/api/v1/variables?repository={}", encode(&repository)),
                None => "/api/v1/variables".to_owned(),
            };
            let answer = Client::new(&client)?.get(&path)?;
            for variable in answer.as_array().into_iter().flatten() {
                println!("{}", describe(variable));
            }
            Ok(Outcome::Ok)
        }
        EnvCommand::Export { scope: _, server: true, repository, client, .. } => {
            let path = match repository {
                Some(repository) => {
                    format!("/api/v1/local-variables?repository={}", encode(&repository))
                }
                None => "/api/v1/local-variables".to_owned(),
            };
            let answer = Client::new(&client)?.get(&path)?;
            for variable in answer.as_array().into_iter().flatten() {
                let (Some(name), Some(value)) =
                    (variable["name"].as_str(), variable["value"].as_str())
                else {
                    continue;
                };
                println!("{name}={}", dotenv_quote(value));
            }
            Ok(Outcome::Ok)
        }
        EnvCommand::Export { scope: _, config, .. } => {
            let variables = crate::serve::variables_of(&config)?;
            for (name, value) in offshoot_server::variables::for_local(&variables) {
                println!("{name}={}", dotenv_quote(value.expose()));
            }
            Ok(Outcome::Ok)
        }
    }
}

/// Single quotes are literal to python-dotenv (no escapes, no `${...}` expansion); a value with a
/// single quote is double-quoted with its backslashes, double quotes and newlines escaped.
fn dotenv_quote(value: &str) -> String {
    if !value.contains('\'') {
        return format!("'{value}'");
    }
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}
