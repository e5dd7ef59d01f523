//! `offshoot env export`: the local-scope variables of a server configuration as a `.env` file
//! for local development (what `dagster dev` and python-dotenv read). Production and branch
//! values never leave the server this way.

use std::path::PathBuf;

use crate::Outcome;

#[derive(clap::Subcommand)]
pub enum EnvCommand {
    /// Print the variables of a scope as `NAME='value'` lines: `offshoot env export --scope local > .env`.
    Export {
        /// Only `local`: production and branch values stay on the server
        #[arg(long, value_parser = ["local"])]
        scope: String,
        /// The server's configuration file, whose `[[variables]]` are read (secrets from the
        /// environment or files it names)
        #[arg(long, env = "OFFSHOOT_CONFIG", default_value = "offshoot-server.toml")]
        config: PathBuf,
    },
}

pub fn run(command: EnvCommand) -> anyhow::Result<Outcome> {
    match command {
        EnvCommand::Export { scope: _, config } => {
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
