//! A small blocking HTTP client for the server's API (plain HTTP; put TLS in front of the server
//! with a reverse proxy). Errors carry the server's error code and message.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use offshoot_server::config::Secret;
use serde_json::Value;

#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// The Offshoot server's URL, e.g. http://127.0.0.1:3000 (what `offshoot serve` listens on by
    /// default). No default: without --url, OFFSHOOT_URL or DAGSTER_CLOUD_URL (read after
    /// OFFSHOOT_URL, so a Dagster+ CI's variable works unchanged) the command stops with an error.
    #[arg(long, env = "OFFSHOOT_URL")]
    pub url: Option<String>,
    /// A bearer token from the server's configuration: `deploy` (or higher) for branch
    /// deployments and their runs, `admin` for production, delete and pin; any for reads when
    /// the server's reads are private. DAGSTER_CLOUD_API_TOKEN is read after OFFSHOOT_API_TOKEN.
    /// [default: none]
    // Raw input: it becomes a `Secret` in `Client::new` (an empty value, as CI systems pass for
    // an unset secret, means no token).
    #[arg(long, visible_alias = "user-token", env = "OFFSHOOT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// The fallbacks after OFFSHOOT_URL and OFFSHOOT_API_TOKEN: what a Dagster+ CI already sets.
const DAGSTER_CLOUD_URL: &str = "DAGSTER_CLOUD_URL";
const DAGSTER_CLOUD_API_TOKEN: &str = "DAGSTER_CLOUD_API_TOKEN";

/// A mistake in how the command was called, found after parsing: exit 2, like clap's own.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The server did not answer at all (down, restarting, network): a wait tries again.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach the Offshoot server at {}", self.0)
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<Secret>,
}

impl Client {
    /// Fails (a [`UsageError`]) when no server URL is configured anywhere.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let base = non_empty(args.url.clone()).or_else(|| non_empty(std::env::var(DAGSTER_CLOUD_URL).ok())).ok_or_else(|| {
            UsageError(
                "no Offshoot server given: pass --url URL or set OFFSHOOT_URL (DAGSTER_CLOUD_URL is read too), \
                 e.g. OFFSHOOT_URL=http://127.0.0.1:3000 for a local `offshoot serve`"
                    .to_owned(),
            )
        })?;
        let token = non_empty(args.api_token.clone())
            .or_else(|| non_empty(std::env::var(DAGSTER_CLOUD_API_TOKEN).ok()));
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            base: base.trim_end_matches('/').to_owned(),
            token: token.as_deref().and_then(Secret::new),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {}", token.expose())),
            None => request,
        }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.authorize(self.agent.get(&self.url(path))).call();
        self.answer(path, response)
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self
            .authorize(self.agent.post(&self.url(path)))
            .header("Content-Type", "application/json");
        let response = request.send(body.to_string());
        self.answer(path, response)
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self
            .authorize(self.agent.put(&self.url(path)))
            .header("Content-Type", "application/json");
        let response = request.send(body.to_string());
        self.answer(path, response)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.authorize(self.agent.delete(&self.url(path))).call();
        self.answer(path, response)
    }

    fn answer(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut response =
            response.map_err(|e| anyhow::Error::new(e).context(Unreachable(self.base.clone())))?;
        let status = response.status();
        let text = response.body_mut().read_to_string().context("reading the server's answer")?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .with_context(|| format!("the server's answer to {path} is not JSON"));
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        // What to do about a refusal: the message names the role; say where a token goes.
        let hint = match status.as_u16() {
            401 => "\n  hint: pass a token with --api-token, OFFSHOOT_API_TOKEN or DAGSTER_CLOUD_API_TOKEN",
            403 => "\n  hint: use a token with that role (--api-token, OFFSHOOT_API_TOKEN or DAGSTER_CLOUD_API_TOKEN)",
            _ => "",
        };
        match parsed.as_ref().and_then(|v| v.get("error")) {
            Some(error) => Err(anyhow!(
                "{} ({}, HTTP {}){hint}",
                error["message"].as_str().unwrap_or("unknown error"),
                error["code"].as_str().unwrap_or("unknown"),
                status.as_u16()
            )),
            None => Err(anyhow!("HTTP {} from {path}: {}", status.as_u16(), text.trim())),
        }
    }
}

/// How often a wait reads the state when the server's event stream cannot be had.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a subscription may take to say it is listening.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a subscription heard.
enum Heard {
    /// The stream is listening: anything that changes from now on will be announced.
    Ready,
    Change,
    /// The stream ended or broke.
    Lost,
}

/// A subscription to the server's event stream (`/api/v1/events`): a thread reads it and passes
/// each event on, so a wait can also time out.
struct Events {
    heard: mpsc::Receiver<Heard>,
}

impl Events {
    /// The next event before `deadline`; `None` when the deadline passed first.
    fn next(&self, deadline: Instant) -> Option<Heard> {
        let left = deadline.checked_duration_since(Instant::now())?;
        match self.heard.recv_timeout(left) {
            Ok(heard) => Some(heard),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Heard::Lost),
        }
    }
}

/// Reads server-sent events (`event:` lines, a blank line ends each) and reports them.
fn read_events(reader: impl BufRead, heard: &mpsc::Sender<Heard>) {
    let mut event = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_owned();
        } else if line.is_empty() && !event.is_empty() {
            let message = match event.as_str() {
                "ready" => Heard::Ready,
                _ => Heard::Change,
            };
            event.clear();
            if heard.send(message).is_err() {
                return;
            }
        }
    }
    let _ = heard.send(Heard::Lost);
}

impl Client {
    /// Subscribes to the event stream and waits until it listens; `None` when the server
    /// offers no stream or it cannot be had (the caller polls instead).
    fn subscribe(&self) -> Option<Events> {
        // The stream stays open for as long as the wait lasts: no overall timeout.
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(SUBSCRIBE_TIMEOUT))
            .timeout_recv_response(Some(SUBSCRIBE_TIMEOUT))
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let request = self
            .authorize(agent.get(&self.url("/api/v1/events")))
            .header("Accept", "text/event-stream");
        let (sender, heard) = mpsc::channel();
        std::thread::spawn(move || {
            let Ok(response) = request.call() else {
                let _ = sender.send(Heard::Lost);
                return;
            };
            if !response.status().is_success() {
                let _ = sender.send(Heard::Lost);
                return;
            }
            let reader = std::io::BufReader::new(response.into_body().into_reader());
            read_events(reader, &sender);
        });
        let events = Events { heard };
        match events.next(Instant::now() + SUBSCRIBE_TIMEOUT) {
            Some(Heard::Ready) => Some(events),
            _ => None,
        }
    }

    /// Calls `read` until it returns a value or `deadline` passes (then `None`), reading again
    /// whenever the server announces a change. It subscribes before each read, so a change
    /// between a read and the wait is never missed; when the stream breaks it subscribes again,
    /// and when there is none it reads every 200 ms. A server that does not answer (restarting)
    /// is waited for too, until the deadline.
    pub fn wait_for<T>(
        &self,
        deadline: Instant,
        mut read: impl FnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<Option<T>> {
        let mut read = || match read() {
            Err(error) if error.downcast_ref::<Unreachable>().is_some() => {
                if Instant::now() >= deadline {
                    return Err(error);
                }
                Ok(None)
            }
            other => other,
        };
        loop {
            let events = self.subscribe();
            if let Some(done) = read()? {
                return Ok(Some(done));
            }
            match events {
                Some(events) => loop {
                    match events.next(deadline) {
                        None => return Ok(None),
                        Some(Heard::Ready | Heard::Change) => {
                            if let Some(done) = read()? {
                                return Ok(Some(done));
                            }
                        }
                        // Subscribe again (after a breath, so a failing stream is no busy loop).
                        Some(Heard::Lost) => {
                            std::thread::sleep(Duration::from_millis(20));
                            break;
                        }
                    }
                },
                None => std::thread::sleep(POLL_INTERVAL),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
