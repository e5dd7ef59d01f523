//! A location's prepare step (`[location] prepare_command`): a shell command run in the checkout
//! before the tool loads or builds it (`dbt deps`, a dagster-dbt project's `dbt parse`), with
//! the tool's environment and confinement, except that it may also write the checkout (where
//! `dbt_packages/` and a dagster-dbt project's `target/manifest.json` go).
//!
//! Once per commit and content of the lock files: a commit's checkout keeps a marker of the step
//! that prepared it (command, commit, lock files), so loading and every later build of the same
//! commit skip it; an edited lock file in a working directory runs it again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offshoot_core::fingerprint::sha256_hex;

use crate::lookup;
use crate::process::{self, ToolCommand};
use crate::sandbox::Sandbox;

/// Files whose content decides what a prepare step installs (dbt's and Python's lock files).
pub const LOCK_FILES: [&str; 8] = [
    "packages.yml",
    "dependencies.yml",
    "package-lock.yml",
    "uv.lock",
    "poetry.lock",
    "requirements.txt",
    "pyproject.toml",
    "dbt_project.yml",
];

/// The marker in a checkout that a prepare step ran there.
const MARKER: &str = ".offshoot-prepared";

pub struct Prepare<'a> {
    pub command: &'a str,
    pub checkout: &'a Path,
    /// Where the command runs (the dbt project's folder, Dagster's working directory).
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// The tool's sandbox; the step may write the checkout as well.
    pub sandbox: Option<&'a Sandbox>,
    /// Its output, kept for people.
    pub log: PathBuf,
}

/// What went wrong, for a diagnostic or a step's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareFailure {
    pub message: String,
    /// The end of the command's output.
    pub output: String,
}

impl Prepare<'_> {
    /// Runs the command unless this checkout was prepared for the same command, commit and lock
    /// files. Only one prepare runs in a checkout at a time.
    pub fn run(&self) -> Result<(), PrepareFailure> {
        let key = self.key();
        let marker = self.checkout.join(MARKER);
        // A working directory (no commit) is prepared every time, and gets no marker.
        let cached = key.is_some();
        let _lock = if cached { lock(self.checkout) } else { None };
        if let Some(key) = &key {
            if std::fs::read_to_string(&marker).is_ok_and(|k| k.trim() == key) {
                return Ok(());
            }
        }
        if let Some(parent) = self.log.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let sandbox = self.sandbox.map(|s| {
            let mut writable = s.writable.clone();
            writable.push(self.checkout.to_path_buf());
            Sandbox::writing(writable)
        });
        let command = ToolCommand {
            program: "sh".into(),
            args: vec!["-c".into(), self.command.to_owned()],
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            timeout: self.timeout,
            sandbox,
        };
        let output = process::run(&command, &self.log);
        if !output.success {
            return Err(PrepareFailure {
                message: format!(
                    "prepare_command `{}` failed: {}",
                    self.command,
                    output.failure.unwrap_or_default()
                ),
                output: {
                    let lines: Vec<&str> =
                        output.text.lines().filter(|l| !l.trim().is_empty()).collect();
                    lines[lines.len().saturating_sub(12)..].join("\n")
                },
            });
        }
        if let Some(key) = key {
            let _ = std::fs::write(&marker, format!("{key}\n"));
        }
        Ok(())
    }

    /// Command, commit and lock files, hashed; `None` without a commit.
    fn key(&self) -> Option<String> {
        let sha = lookup(&self.env, "OFFSHOOT_GIT_SHA").filter(|s| !s.is_empty())?;
        let mut parts: Vec<Vec<u8>> = vec![self.command.as_bytes().to_vec(), sha.into_bytes()];
        for dir in [self.checkout, self.cwd.as_path()] {
            for name in LOCK_FILES {
                parts.push(name.as_bytes().to_vec());
                parts.push(std::fs::read(dir.join(name)).unwrap_or_default());
            }
        }
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Some(sha256_hex(&slices))
    }
}

/// An exclusive lock on the checkout's prepare lock file, released when dropped.
#[allow(unsafe_code)] // flock(2); the block says why it is sound
fn lock(checkout: &Path) -> Option<File> {
    use std::os::fd::AsRawFd;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(checkout.join(".offshoot-prepare.lock"))
        .ok()?;
    // SAFETY: flock(2) on an fd this function owns; blocks until the lock is free.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0;
    locked.then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_once_per_commit_and_lock_file() {
        let dir = std::env::temp_dir().join(format!("offshoot-prepare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let checkout = dir.join("checkout");
        std::fs::create_dir_all(&checkout).unwrap();
        std::fs::write(checkout.join("packages.yml"), "packages: []\n").unwrap();
        let env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("OFFSHOOT_GIT_SHA".to_owned(), "a".repeat(40)),
        ];
        let prepare = |env: Vec<(String, String)>, command: &'static str| Prepare {
            command,
            checkout: &checkout,
            cwd: checkout.clone(),
            env,
            timeout: Duration::from_secs(10),
            sandbox: None,
            log: dir.join("prepare.log"),
        };
        let count = || std::fs::read_to_string(checkout.join("runs")).unwrap_or_default().len();
        prepare(env.clone(), "printf x >> runs").run().unwrap();
        prepare(env.clone(), "printf x >> runs").run().unwrap();
        assert_eq!(count(), 1, "cached for the commit");
        std::fs::write(checkout.join("packages.yml"), "packages: [{local: ../x}]\n").unwrap();
        prepare(env.clone(), "printf x >> runs").run().unwrap();
        assert_eq!(count(), 2, "a new lock file runs it again");
        prepare(env[..1].to_vec(), "printf x >> runs").run().unwrap();
        prepare(env[..1].to_vec(), "printf x >> runs").run().unwrap();
        assert_eq!(count(), 4, "a working directory is prepared every time");
        let failure = prepare(env, "echo no packages here; exit 3").run().unwrap_err();
        assert!(failure.message.contains("exited with"), "{failure:?}");
        assert_eq!(failure.output, "no packages here");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
