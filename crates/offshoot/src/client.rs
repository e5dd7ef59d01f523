//! A small blocking HTTP client for the server's API (plain HTTP; put TLS in front of the server
//! with a reverse proxy). Errors carry the server's error code and message.

use std::time::Duration;

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

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.authorize(self.agent.delete(&self.url(path))).call();
        self.answer(path, response)
    }

    fn answer(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut response = response
            .with_context(|| format!("cannot reach the Offshoot server at {}", self.base))?;
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
