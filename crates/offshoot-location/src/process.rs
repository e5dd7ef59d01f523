//! Running a location's tool: a program with arguments (never through a shell unless the
//! project's own configured command is a shell command), a working directory and an environment
//! built from nothing, in its own process group so a timeout or a cancel ends all of it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sandbox::Sandbox;

/// A program to run for a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCommand {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The whole environment: the child inherits nothing else.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Where it may write, enforced by the kernel; `None` runs it unconfined.
    pub sandbox: Option<Sandbox>,
}

impl ToolCommand {
    /// How the command reads in a log.
    pub fn display(&self) -> String {
        let mut parts = vec![self.program.clone()];
        parts.extend(self.args.iter().map(|a| {
            if a.contains([' ', '\'', '"']) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        }));
        parts.join(" ")
    }

    /// A `std` command ready to spawn (own process group, cleared environment, no stdin, its
    /// sandbox). Fails only when the sandbox cannot be set up; then nothing may run.
    pub fn to_command(&self) -> Result<Command, String> {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .process_group(0);
        if let Some(sandbox) = &self.sandbox {
            sandbox.apply(&mut command)?;
        }
        Ok(command)
    }
}

/// What a finished tool printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolOutput {
    pub success: bool,
    /// Why it did not succeed, when it did not (exit status, timeout, cannot start).
    pub failure: Option<String>,
    /// stdout and stderr interleaved, cut to the last [`MAX_OUTPUT`] bytes.
    pub text: String,
}

pub const MAX_OUTPUT: usize = 256 * 1024;

/// Runs `command` to completion (or its timeout), its output into `log` (kept for people).
pub fn run(command: &ToolCommand, log: &Path) -> ToolOutput {
    let failed = |failure: String| ToolOutput {
        success: false,
        failure: Some(failure),
        text: String::new(),
    };
    let file = match File::create(log) {
        Ok(file) => file,
        Err(error) => return failed(format!("cannot write {}: {error}", log.display())),
    };
    let (Ok(out), Ok(err)) = (file.try_clone(), file.try_clone()) else {
        return failed(format!("cannot write {}", log.display()));
    };
    let child = match command.to_command() {
        Err(error) => return failed(format!("cannot start `{}`: {error}", command.program)),
        Ok(mut child) => child.stdout(out).stderr(err).spawn(),
    };
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            return failed(format!(
                "cannot start `{}` in {}: {error}",
                command.program,
                command.cwd.display()
            ))
        }
    };
    let deadline = Instant::now() + command.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                break Err(format!(
                    "`{}` did not finish within {} s and was killed",
                    command.display(),
                    command.timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => break Err(format!("waiting for `{}`: {error}", command.program)),
        }
    };
    let text = tail(&std::fs::read(log).unwrap_or_default());
    match status {
        Ok(status) if status.success() => ToolOutput { success: true, failure: None, text },
        Ok(status) => ToolOutput {
            success: false,
            failure: Some(format!("`{}` exited with {status}", command.display())),
            text,
        },
        Err(failure) => ToolOutput { success: false, failure: Some(failure), text },
    }
}

/// The last [`MAX_OUTPUT`] bytes as text.
pub fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_OUTPUT);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last `count` non-empty lines of a tool's output on one line, each through `clean`.
pub fn last_lines(text: &str, count: usize, clean: impl Fn(&str) -> &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| clean(l))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// SIGKILL to the process group `group` leads (spawned with `process_group(0)`). Not through
/// the `kill` program: procps-ng 4.0.2's `kill -KILL -PGID` signals every process instead.
#[allow(unsafe_code)] // kill(2); the block says why it is sound
pub fn kill_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else { return };
    if group <= 1 {
        return; // never 0 (our own group) or 1 (everything)
    }
    // SAFETY: kill(2) takes plain integers and has no memory effects; a negative pid addresses
    // exactly the process group `group`.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// The environment every tool starts from: the server's PATH and locale, nothing secret.
pub fn base_environment() -> Vec<(String, String)> {
    ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// Hands memory the allocator holds free back to the system. A load parses SQL on every core,
/// and glibc keeps what each parse thread freed in that thread's arena until the next load:
/// about 200 MB a server holds for nothing after loading 100,000 assets.
#[allow(unsafe_code)] // malloc_trim(3); the block says why it is sound
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it returns the free pages of the allocator's own
    // arenas to the system and leaves every allocation in place.
    unsafe {
        libc::malloc_trim(0);
    }
}
