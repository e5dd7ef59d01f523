//! `--wait` follows the server's event stream: the CLI returns moments after the run ends (not
//! at the next 200 ms poll), and a wait survives the server going away and coming back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::server::wait_for_prod;
use crate::support::*;

/// SQLite counting to `n`: a step that takes a while (about 0.2 s per million here).
fn slow_sql(n: u64) -> String {
    format!(
        "WITH RECURSIVE counter(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM counter WHERE x < {n})\nSELECT count(*) AS n FROM counter\n"
    )
}

fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `offshoot materialize --wait` of `key:slow` in production, started now.
fn materialize_slow(url: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args(["materialize", "--deployment", "prod", "--select", "key:slow", "--wait"])
        .env("OFFSHOOT_URL", url)
        .env("OFFSHOOT_API_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("offshoot runs")
}

/// Waits for the child to exit, looking every millisecond; returns its output and when it
/// exited (Unix milliseconds, the clock the server stamps runs with).
fn finish(mut child: std::process::Child) -> (std::process::Output, i64) {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("the child can be waited for").is_some() {
            let exited = unix_millis();
            return (child.wait_with_output().expect("its output"), exited);
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the wait never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn run_id(output: &std::process::Output) -> i64 {
    let text = stdout(output);
    text.strip_prefix("run ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {text}"))
}

#[test]
fn materialize_wait_returns_moments_after_the_run_ends() {
    let dir = TempDir::new("wait-events");
    let repo = dir.0.join("repo");
    native_repo(&repo, "sqlite", &[], &[("slow.sql", &slow_sql(1_500_000))]);
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let (output, exited) = finish(materialize_slow(&server.url));
        assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
        let run = server.get(&format!("/api/v1/runs/{}", run_id(&output)));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let started = run["started_at"].as_i64().expect("started_at");
        let finished = run["finished_at"].as_i64().expect("finished_at");
        assert!(finished - started > 30, "the step ran long enough to be waited for: {run:#}");
        gaps.push(exited - finished);
    }
    gaps.sort();
    // Polling every 200 ms puts the median near 100 ms (measured: 77); the stream, about 10.
    assert!(gaps[2] < 40, "from the run's end to the CLI's exit (ms, sorted): {gaps:?}");
}

#[test]
fn a_wait_outlives_a_server_restart() {
    let dir = TempDir::new("wait-restart");
    let repo = dir.0.join("repo");
    native_repo(&repo, "sqlite", &[], &[("slow.sql", &slow_sql(40_000_000))]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\napi_tokens = [{TOKEN:?}]\n\n[[repositories]]\nname = \"shop\"\nproduction_branch = \"main\"\npath = {repo:?}\n",
        data = dir.0.join("data").to_str().expect("utf-8 path"),
        repo = repo.to_str().expect("utf-8 path"),
    );
    let mut server = Server::start_with_config(&dir.0, &config);
    wait_for_prod(&server, &repo);
    let child = materialize_slow(&server.url);
    // Until the step runs: the CLI is waiting on the stream by then.
    let started = Instant::now();
    loop {
        let runs = server.get("/api/v1/runs?deployment=prod");
        if runs[0]["status"] == "running" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the run never started: {runs:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    // The restarted server fails the interrupted run; the CLI hears of it and says so.
    let (output, _) = finish(child);
    assert!(!output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("failed"), "{}{}", stdout(&output), stderr(&output));
}
