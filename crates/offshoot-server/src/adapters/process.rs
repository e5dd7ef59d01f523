//! Running a command step or a location's tool as a child process that leads its own process
//! group: its output streamed line by line to whoever asked, **until the output ends**, so the
//! last lines (usually the error) are never lost; killed as a group on cancel or timeout.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

/// How long output may keep arriving after the process exited (a background grandchild can hold
/// the pipe open); then the group is killed and what arrived is kept.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Where a child's output goes, and how a cancel requested elsewhere (another server, through
/// the store) is noticed.
#[async_trait::async_trait]
pub trait Output: Send {
    /// One line of output (without its newline).
    async fn line(&mut self, line: String);
    /// Asked about once a second while the child runs.
    async fn cancel_requested(&mut self) -> bool;
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(ExitStatus),
    /// Canceled (the switch, or [`Output::cancel_requested`]): the group was killed.
    Canceled,
    /// Ran longer than its timeout: the group was killed.
    TimedOut(Duration),
}

/// Waits for `child`, which leads its own process group, passing its stdout and stderr lines
/// to `output` until both end. A cancel or the timeout kills the whole group.
pub async fn stream_child(
    mut child: tokio::process::Child,
    cancelled: &mut watch::Receiver<bool>,
    timeout: Duration,
    output: &mut dyn Output,
) -> Result<Ended, String> {
    let process_group = child.id();
    let kill = || {
        if let Some(group) = process_group {
            offshoot_location::kill_group(group);
        }
    };
    let (lines_tx, mut lines) = mpsc::channel::<String>(256);
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    {
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(lines_tx);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut store_check = tokio::time::interval(Duration::from_secs(1));
    store_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wait = Box::pin(child.wait());
    let status = loop {
        tokio::select! {
            status = &mut wait => break status.map_err(|e| format!("waiting for the command: {e}"))?,
            Some(line) = lines.recv() => output.line(line).await,
            _ = &mut deadline => {
                drop(wait);
                kill();
                return Ok(Ended::TimedOut(timeout));
            }
            _ = store_check.tick() => {
                if output.cancel_requested().await {
                    drop(wait);
                    kill();
                    return Ok(Ended::Canceled);
                }
            }
            changed = cancelled.changed() => {
                if changed.is_ok() && *cancelled.borrow() {
                    drop(wait);
                    kill();
                    return Ok(Ended::Canceled);
                }
            }
        }
    };
    // The process exited; its last lines may still be in the pipes or the reader tasks. Read
    // until both streams end (the readers drop their senders), within a grace period.
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while let Some(line) = lines.recv().await {
            output.line(line).await;
        }
    })
    .await;
    if drained.is_err() {
        kill();
        while let Ok(line) = lines.try_recv() {
            output.line(line).await;
        }
    }
    Ok(Ended::Exited(status))
}

/// Starts `sh -c command_line` in `dir` with exactly `env`, confined by `sandbox`, as the leader
/// of its own process group, its output piped.
pub fn spawn_shell(
    command_line: &str,
    dir: &Path,
    env: Vec<(String, String)>,
    timeout: Duration,
    sandbox: Option<&offshoot_location::Sandbox>,
) -> Result<tokio::process::Child, String> {
    let command = offshoot_location::ToolCommand {
        program: "sh".to_owned(),
        args: vec!["-c".to_owned(), command_line.to_owned()],
        cwd: dir.to_path_buf(),
        env,
        timeout,
        sandbox: sandbox.cloned(),
    };
    spawn(&command).map_err(|e| format!("starting `{command_line}`: {e}"))
}

/// Starts a location's tool command, its output piped.
pub fn spawn(command: &offshoot_location::ToolCommand) -> Result<tokio::process::Child, String> {
    let mut child = tokio::process::Command::from(command.to_command()?);
    child.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    child.spawn().map_err(|e| format!("cannot start `{}`: {e}", command.program))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<String>);

    #[async_trait::async_trait]
    impl Output for Collect {
        async fn line(&mut self, line: String) {
            // A slow consumer: the reader tasks fall behind the process.
            if self.0.len().is_multiple_of(500) {
                tokio::task::yield_now().await;
            }
            self.0.push(line);
        }
        async fn cancel_requested(&mut self) -> bool {
            false
        }
    }

    /// The last line a failing command prints (its error) arrives after thousands of others and
    /// right before the exit; it must never be lost.
    #[tokio::test]
    async fn every_line_is_read_after_the_process_exits() {
        for _ in 0..20 {
            let dir = std::env::temp_dir();
            let env = vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())];
            let child = spawn_shell(
                "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo 'error: the last line' >&2; exit 3",
                &dir,
                env,
                Duration::from_secs(60),
                None,
            )
            .expect("sh starts");
            let (_switch, mut cancelled) = watch::channel(false);
            let mut output = Collect(Vec::new());
            let ended = stream_child(child, &mut cancelled, Duration::from_secs(60), &mut output)
                .await
                .expect("the child is waited for");
            assert!(matches!(ended, Ended::Exited(status) if status.code() == Some(3)));
            assert_eq!(output.0.len(), 3001, "every line arrives");
            assert!(output.0.iter().any(|l| l == "error: the last line"));
        }
    }

    #[tokio::test]
    async fn a_cancel_kills_the_group() {
        let env = vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())];
        let child = spawn_shell(
            "sleep 30 & sleep 30",
            &std::env::temp_dir(),
            env,
            Duration::from_secs(60),
            None,
        )
        .expect("sh starts");
        let (switch, mut cancelled) = watch::channel(false);
        let mut output = Collect(Vec::new());
        let started = std::time::Instant::now();
        let stream = stream_child(child, &mut cancelled, Duration::from_secs(60), &mut output);
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            switch.send(true).expect("the stream listens");
        };
        let (ended, ()) = tokio::join!(stream, cancel);
        assert_eq!(ended.expect("waited"), Ended::Canceled);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
