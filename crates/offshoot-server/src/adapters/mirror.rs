//! Remote repositories: a repository configured by URL is kept as a bare mirror under
//! `<data_dir>/mirrors/<name>.git` (every ref of the remote, pull-request refs included) and
//! fetched before each hook event; the rest of the server reads the mirror like a local path.
//!
//! The work is done by the `git` program, never through a shell. Credentials reach git through
//! an askpass helper that reads them from the child's environment, so they appear on no command
//! line, in no file and in no log; URLs in errors are redacted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::process::Command;

use crate::config::{RemoteConfig, RepositoryConfig};
use crate::secret::{redact, Secret};

/// A fetch that takes longer than this is killed; the next event fetches again.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

const ASKPASS_SCRIPT: &str = "#!/bin/sh\n# Written by offshoot: answers git's credential prompts from the environment.\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$OFFSHOOT_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$OFFSHOOT_GIT_PASSWORD\" ;;\nesac\n";

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("repository `{0}` is not configured by URL")]
    NotRemote(String),
    #[error("`git {command}` failed ({status}): {stderr}")]
    Git { command: &'static str, status: String, stderr: String },
    #[error("`git {0}` did not finish within {1} seconds")]
    Timeout(&'static str, u64),
    #[error("cannot run git: {0}")]
    Spawn(String),
    #[error("{0}")]
    Io(String),
}

/// Makes sure the mirror exists as a bare repository (an empty one until the first fetch).
/// Synchronous, for start-up: a path that does not exist would let git look for a repository in
/// the folders above it.
pub fn initialize(path: &Path) -> Result<(), MirrorError> {
    if path.join("HEAD").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(path)
        .map_err(|e| MirrorError::Io(format!("creating {}: {e}", path.display())))?;
    let output = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet", "--"])
        .arg(path)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| MirrorError::Spawn(e.to_string()))?;
    if !output.status.success() {
        return Err(MirrorError::Git {
            command: "init",
            status: output.status.to_string(),
            stderr: redact(&String::from_utf8_lossy(&output.stderr), None),
        });
    }
    Ok(())
}

/// One fetch at a time per mirror: two would race for git's ref locks.
static FETCHING: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

/// Brings the mirror of `repo` up to date with its remote: every ref, deleted ones pruned.
pub async fn fetch(data_dir: &Path, repo: &RepositoryConfig) -> Result<(), MirrorError> {
    let remote =
        repo.remote.as_ref().ok_or_else(|| MirrorError::NotRemote(repo.name.to_string()))?;
    let turn = FETCHING
        .lock()
        .expect("never poisoned: no panics inside")
        .entry(repo.path.clone())
        .or_default()
        .clone();
    let _turn = turn.lock().await;
    let path = repo.path.clone();
    tokio::task::spawn_blocking(move || initialize(&path))
        .await
        .map_err(|e| MirrorError::Io(e.to_string()))??;
    let (url, credentials) = split_credentials(remote);
    let mut command = Command::new("git");
    // An empty helper list: no credential helper of the machine stores or supplies anything.
    command.args(["-c", "credential.helper=", "--git-dir"]).arg(&repo.path);
    command.args([
        "fetch",
        "--prune",
        "--prune-tags",
        "--force",
        "--quiet",
        "--no-write-fetch-head",
        "--",
        &url,
        "+refs/*:refs/*",
    ]);
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((username, password)) = &credentials {
        let askpass = askpass_script(data_dir).await?;
        command
            .env("GIT_ASKPASS", askpass)
            .env("OFFSHOOT_GIT_USERNAME", username)
            .env("OFFSHOOT_GIT_PASSWORD", password.expose());
    }
    if let Some(key) = &remote.ssh_key {
        command.env(
            "GIT_SSH_COMMAND",
            format!(
                "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes",
                shell_quote(&key.to_string_lossy())
            ),
        );
    }
    let child = command.spawn().map_err(|e| MirrorError::Spawn(e.to_string()))?;
    let output = match tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| MirrorError::Spawn(e.to_string()))?,
        Err(_) => return Err(MirrorError::Timeout("fetch", GIT_TIMEOUT.as_secs())),
    };
    if !output.status.success() {
        let secret = credentials.as_ref().map(|(_, password)| password);
        return Err(MirrorError::Git {
            command: "fetch",
            status: output.status.to_string(),
            stderr: redact(&String::from_utf8_lossy(&output.stderr), secret),
        });
    }
    Ok(())
}

/// The remote URL for people: without credentials.
pub fn display_url(repo: &RepositoryConfig) -> String {
    repo.remote
        .as_ref()
        .map(|r| redact(&r.url, r.token.as_ref()))
        .unwrap_or_else(|| repo.path.display().to_string())
}

/// The URL without user information, and the credentials git should be given, if any. A token
/// in the configuration wins over a password written into the URL.
fn split_credentials(remote: &RemoteConfig) -> (String, Option<(String, Secret)>) {
    let (url, embedded) = strip_user_info(&remote.url);
    let credentials = match (&remote.token, embedded) {
        (Some(token), embedded) => Some((
            embedded
                .map(|(user, _)| user)
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| remote.username.clone()),
            token.clone(),
        )),
        (None, Some((user, Some(password)))) => Some((user, password)),
        (None, _) => None,
    };
    // ssh takes its user from the URL (`git@host`) and authenticates with keys: keep it as is.
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return (remote.url.clone(), None);
    }
    (url, credentials)
}

/// `https://user:pass@host/path` → (`https://host/path`, Some((user, Some(pass)))).
fn strip_user_info(url: &str) -> (String, Option<(String, Option<Secret>)>) {
    let Some(scheme_end) = url.find("://") else { return (url.to_owned(), None) };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return (url.to_owned(), None) };
    let user_info = &rest[..at];
    let (user, password) = match user_info.split_once(':') {
        Some((user, password)) => (user.to_owned(), Secret::new(password)),
        None => (user_info.to_owned(), None),
    };
    (format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]), Some((user, password)))
}

/// The askpass helper, written once under the data directory; it holds no secret.
async fn askpass_script(data_dir: &Path) -> Result<PathBuf, MirrorError> {
    let path = data_dir.join("mirrors").join("offshoot-askpass.sh");
    let current = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    if current != ASKPASS_SCRIPT {
        let io = |e: std::io::Error| MirrorError::Io(format!("writing {}: {e}", path.display()));
        tokio::fs::create_dir_all(data_dir.join("mirrors")).await.map_err(io)?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        tokio::fs::write(&temporary, ASKPASS_SCRIPT).await.map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(io)?;
        }
        tokio::fs::rename(&temporary, &path).await.map_err(io)?;
    }
    Ok(path)
}

/// Single-quotes `text` for the shell git runs `GIT_SSH_COMMAND` with.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url() {
        let remote = RemoteConfig {
            url: "https://bot:s3cret-pass@git.example/acme/shop.git".into(),
            username: "x-access-token".into(),
            token: None,
            ssh_key: None,
        };
        let (url, credentials) = split_credentials(&remote);
        assert_eq!(url, "https://git.example/acme/shop.git");
        let (user, password) = credentials.expect("credentials");
        assert_eq!((user.as_str(), password.expose()), ("bot", "s3cret-pass"));

        let remote = RemoteConfig {
            token: Secret::new("tok-123"),
            url: "https://git.example/acme/shop.git".into(),
            ..remote
        };
        let (_, credentials) = split_credentials(&remote);
        assert_eq!(
            credentials.map(|(u, p)| (u, p.expose().to_owned())),
            Some(("x-access-token".to_owned(), "tok-123".to_owned()))
        );

        let remote = RemoteConfig { url: "git@git.example:acme/shop.git".into(), ..remote };
        let (url, credentials) = split_credentials(&remote);
        assert_eq!((url.as_str(), credentials.is_none()), ("git@git.example:acme/shop.git", true));
    }

    #[test]
    fn redaction_hides_user_information_and_the_secret() {
        let secret = Secret::new("tok-123");
        let text = "fatal: unable to access 'https://bot:pw@git.example/acme/shop.git/': tok-123 rejected; see ssh://git@host/x";
        assert_eq!(
            redact(text, secret.as_ref()),
            "fatal: unable to access 'https://<redacted>@git.example/acme/shop.git/': <redacted> rejected; see ssh://<redacted>@host/x"
        );
    }
}
