//! `offshoot-bench webhooks`: a bounded flood of forged webhook deliveries against the real
//! `offshoot serve` on 127.0.0.1, and what it costs the server: its peak resident memory (VmHWM
//! from /proc), how fast every flood request gets its verdict, and whether a correctly signed
//! delivery still gets through meanwhile.
//!
//! The flood is three kinds of `POST /hooks/github` in turn, each with its whole body sent: a
//! well-formed but wrong signature on `--body-mb` MB (the worst case: the server has to read and
//! hash the body to refuse it), no signature on `--body-mb` MB (refusable from the headers), and
//! a wrong signature on 26 MB, over GitHub's 25 MB cap (refusable from its `Content-Length`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hmac::{Hmac, KeyInit, Mac};
use offshoot_repo::GitRepository;
use sha2::Sha256;

use crate::{machine, mb, ms, project, status_kb, workspace_commit, AUTHOR};

const SECRET: &str = "offshoot-bench-webhook-secret";
/// What a body declared too large declares, and sends: 1 MB over GitHub's 25 MB cap.
const TOO_LARGE: usize = 26 * 1024 * 1024;
const USAGE: &str = "usage: offshoot-bench webhooks [--clients 64] [--requests 384] [--body-mb 25] [--offshoot PATH] [--dir PATH]

Starts `offshoot serve` (by default the `offshoot` binary next to this one; build both with
`cargo build --release -p offshoot -p offshoot-bench`) with one GitHub-webhook repository, sends
--requests forged deliveries from --clients connections at once, and reports the server's peak
memory and the answers' latency.";

pub struct Args {
    clients: usize,
    requests: usize,
    body_mb: usize,
    offshoot: Option<PathBuf>,
    dir: Option<PathBuf>,
}

pub fn parse_args(arguments: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args { clients: 64, requests: 384, body_mb: 25, offshoot: None, dir: None };
    let mut it = arguments;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => args.clients = value()?.parse().context("--clients")?,
            "--requests" => args.requests = value()?.parse().context("--requests")?,
            "--body-mb" => args.body_mb = value()?.parse().context("--body-mb")?,
            "--offshoot" => args.offshoot = Some(PathBuf::from(value()?)),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`; see `offshoot-bench webhooks --help`"),
        }
    }
    if args.clients == 0 || args.requests == 0 || args.body_mb == 0 {
        bail!("--clients, --requests and --body-mb must be at least 1");
    }
    Ok(args)
}

/// The three kinds of forged delivery, sent in turn.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    WrongSignature,
    Unsigned,
    DeclaredTooLarge,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::WrongSignature => "well-formed wrong signature",
            Kind::Unsigned => "no signature",
            Kind::DeclaredTooLarge => "26 MB, wrong signature",
        }
    }
}

/// One request's outcome: the status, or `None` when the connection closed before an answer
/// could be read (the server refused it while the body was still being sent).
struct Sample {
    kind: Kind,
    status: Option<u16>,
    elapsed: Duration,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let binary = crate::server::offshoot_binary(args.offshoot.as_deref())?;
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = base.join(format!("offshoot-bench-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = flood(args, &binary, &work);
    if let Err(error) = std::fs::remove_dir_all(&work) {
        eprintln!("could not remove {}: {error}", work.display());
    }
    result
}

fn flood(args: &Args, binary: &Path, work: &Path) -> anyhow::Result<()> {
    let repo_dir = work.join("repo");
    std::fs::create_dir_all(&repo_dir)?;
    let generated = project::generate(100);
    GitRepository::init(&repo_dir, "main")?.commit_tree(
        "main",
        None,
        &generated.main,
        "100 generated assets",
        AUTHOR,
    )?;
    let server = Server::start(binary, work, &repo_dir)?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = server.child.id().to_string();
    let before = status_kb(&pid)?;
    eprintln!("  server pid {pid} on {}; VmRSS {} before the flood", server.address, mb(before.1));

    // One buffer for every kind: `--body-mb` MB, or the 26 MB a too-large one declares and sends.
    let body = Arc::new(vec![b' '; (args.body_mb * 1024 * 1024).max(TOO_LARGE)]);
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(before.1));
    let started = Instant::now();
    let (samples, signed) = std::thread::scope(|scope| {
        let monitor = {
            let (stop, peak_rss, pid) = (stop.clone(), peak_rss.clone(), pid.clone());
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, rss)) = status_kb(&pid) {
                        peak_rss.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let signed = {
            let (stop, address) = (stop.clone(), server.address.clone());
            scope.spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(signed_ping(&address));
                    std::thread::sleep(Duration::from_millis(100));
                }
                answers
            })
        };
        let clients: Vec<_> = (0..args.clients)
            .map(|_| {
                let (next, body, address) = (next.clone(), body.clone(), server.address.clone());
                let (requests, body_bytes) = (args.requests as u64, args.body_mb * 1024 * 1024);
                scope.spawn(move || {
                    let mut samples = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= requests {
                            return samples;
                        }
                        let kind = [Kind::WrongSignature, Kind::Unsigned, Kind::DeclaredTooLarge]
                            [(index % 3) as usize];
                        let length =
                            if kind == Kind::DeclaredTooLarge { TOO_LARGE } else { body_bytes };
                        samples.push(forged(&address, kind, &body[..length]));
                    }
                })
            })
            .collect();
        let samples: Vec<Sample> =
            clients.into_iter().flat_map(|c| c.join().expect("a client thread")).collect();
        stop.store(true, Ordering::Relaxed);
        monitor.join().expect("the monitor thread");
        (samples, signed.join().expect("the signed-delivery thread"))
    });
    let wall = started.elapsed();
    let after = status_kb(&pid)?;
    let after_ping = signed_ping(&server.address);
    report(
        args,
        &before,
        &after,
        peak_rss.load(Ordering::Relaxed),
        wall,
        &samples,
        &signed,
        &after_ping,
    );
    Ok(())
}

/// Sends one forged delivery with its whole body (on a second thread, so the answer is read
/// while the body is still going out, as a real client would see it).
fn forged(address: &str, kind: Kind, body: &[u8]) -> Sample {
    let start = Instant::now();
    let Ok(mut stream) = TcpStream::connect(address) else {
        return Sample { kind, status: None, elapsed: start.elapsed() };
    };
    let declared = body.len();
    let signature = match kind {
        Kind::WrongSignature | Kind::DeclaredTooLarge => {
            format!("X-Hub-Signature-256: sha256={}\r\n", "ab".repeat(32))
        }
        Kind::Unsigned => String::new(),
    };
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n{signature}Content-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return Sample { kind, status: None, elapsed: start.elapsed() };
    }
    let status = std::thread::scope(|scope| {
        let mut writer = stream.try_clone().expect("a second handle on the connection");
        scope.spawn(move || {
            // Fails once the server has answered and closed; that is the point.
            let _ = writer.write_all(body);
        });
        read_status(&stream)
    });
    Sample { kind, status, elapsed: start.elapsed() }
}

fn read_status(stream: &TcpStream) -> Option<u16> {
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A correctly signed `ping`: (status, latency).
fn signed_ping(address: &str) -> (Option<u16>, Duration) {
    let start = Instant::now();
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1,"repository":{"full_name":"acme/bench"}}"#;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    let signature: String =
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nX-GitHub-Event: ping\r\nX-Hub-Signature-256: sha256={signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let status = TcpStream::connect(address).ok().and_then(|mut stream| {
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body).ok()?;
        let status = read_status(&stream);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        status
    });
    (status, start.elapsed())
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * percent).div_ceil(100).max(1) - 1]
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    before: &(u64, u64),
    after: &(u64, u64),
    peak_sampled_rss: u64,
    wall: Duration,
    samples: &[Sample],
    signed: &[(Option<u16>, Duration)],
    after_ping: &(Option<u16>, Duration),
) {
    println!("## Webhook flood ({})", workspace_commit());
    println!();
    println!("Machine: {}", machine());
    println!(
        "{} forged deliveries of {} MB from {} connections at once, in {:.1} s; {} correctly signed pings sent meanwhile.",
        samples.len(),
        args.body_mb,
        args.clients,
        wall.as_secs_f64(),
        signed.len()
    );
    println!();
    println!("| server memory | |");
    println!("|---|---:|");
    println!("| VmRSS before the flood | {} |", mb(before.1));
    println!("| VmHWM (peak) before the flood (start-up, deploying prod) | {} |", mb(before.0));
    println!("| VmHWM (peak) after the flood | **{}** |", mb(after.0));
    println!("| highest VmRSS sampled every 20 ms | {} |", mb(peak_sampled_rss));
    println!("| VmRSS after the flood | {} |", mb(after.1));
    println!();
    println!("| kind | requests | answers (status × count) | median | p99 |");
    println!("|---|---:|---|---:|---:|");
    let mut kinds: BTreeMap<Kind, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        kinds.entry(sample.kind).or_default().push(sample);
    }
    for (kind, list) in &kinds {
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for sample in list {
            *statuses
                .entry(
                    sample.status.map_or("closed before an answer".to_owned(), |s| s.to_string()),
                )
                .or_default() += 1;
        }
        let mut times: Vec<Duration> = list.iter().map(|s| s.elapsed).collect();
        times.sort();
        let answers: Vec<String> =
            statuses.iter().map(|(status, count)| format!("{status} × {count}")).collect();
        println!(
            "| {} | {} | {} | {} | {} |",
            kind.label(),
            list.len(),
            answers.join(", "),
            ms(percentile(&times, 50)),
            ms(percentile(&times, 99))
        );
    }
    let mut ping_times: Vec<Duration> = signed.iter().map(|(_, t)| *t).collect();
    ping_times.sort();
    let pongs = signed.iter().filter(|(s, _)| *s == Some(200)).count();
    let refused = signed.iter().filter(|(s, _)| *s == Some(503)).count();
    println!(
        "| correctly signed `ping` during the flood | {} | 200 × {pongs}, 503 × {refused}, other × {} | {} | {} |",
        signed.len(),
        signed.len() - pongs - refused,
        ms(percentile(&ping_times, 50)),
        ms(percentile(&ping_times, 99))
    );
    println!(
        "| correctly signed `ping` after the flood | 1 | {} | {} | |",
        after_ping.0.map_or("none".to_owned(), |s| s.to_string()),
        ms(after_ping.1)
    );
}

/// `offshoot serve` on one generated repository that takes GitHub webhooks; killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(binary: &Path, dir: &Path, repo: &Path) -> anyhow::Result<Server> {
        let config = dir.join("offshoot.toml");
        let toml_path = |p: &Path| format!("{:?}", p.to_string_lossy());
        std::fs::write(
            &config,
            format!(
                "data_dir = {}\nlisten = \"127.0.0.1:0\"\napi_tokens = [\"offshoot-bench-token\"]\n[[repositories]]\nname = \"bench\"\npath = {}\nproduction_branch = \"main\"\nforge = \"github\"\nproject = \"acme/bench\"\nwebhook_secret = \"{SECRET}\"\n",
                toml_path(&dir.join("data")),
                toml_path(repo)
            ),
        )?;
        let log_path = dir.join("server.log");
        let log = File::create(&log_path)?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OFFSHOOT_") {
                command.env_remove(name);
            }
        }
        let mut child =
            command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(rest) = text.lines().find_map(|line| {
                line.split_once("offshoot serving on http://").map(|(_, rest)| rest.to_owned())
            }) {
                let address = rest.split_whitespace().next().unwrap_or_default().to_owned();
                return Ok(Server { child, address });
            }
            if let Some(status) = child.try_wait()? {
                bail!("the server exited ({status}) before listening:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the server did not listen within 60 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The process this benchmark started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
