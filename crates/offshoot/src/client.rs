//! A small blocking HTTP client for the server's API (plain HTTP; put TLS in front of the server
//! with a reverse proxy). Errors carry the server's error code and message.

use std::time::Duration;

use anyhow::{anyhow, Context};
use offshoot_server::config::Secret;
use serde_json::Value;

#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// The Offshoot server.
    #[arg(long, env = "OFFSHOOT_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// A bearer token from the server's configuration: `deploy` (or higher) for branch
    /// deployments and their runs, `admin` for production, delete and pin; any for reads when
    /// the server's reads are private.
    /// Raw input: it becomes a `Secret` in `Client::new` (an empty value, as CI systems pass for
    /// an unset secret, means no token).
    #[arg(long, env = "OFFSHOOT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<Secret>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Client { agent: ureq::Agent::new_with_config(config), base: args.url.trim_end_matches('/').to_owned(), token: args.api_token.as_deref().and_then(|t| Secret::new(t.trim())) }
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
        let request = self.authorize(self.agent.post(&self.url(path))).header("Content-Type", "application/json");
        let response = request.send(body.to_string());
        self.answer(path, response)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.authorize(self.agent.delete(&self.url(path))).call();
        self.answer(path, response)
    }

    fn answer(&self, path: &str, response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> anyhow::Result<Value> {
        let mut response = response.with_context(|| format!("cannot reach the Offshoot server at {}", self.base))?;
        let status = response.status();
        let text = response.body_mut().read_to_string().context("reading the server's answer")?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).with_context(|| format!("the server's answer to {path} is not JSON"));
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        // What to do about a refusal: the message names the role; say where a token goes.
        let hint = match status.as_u16() {
            401 => "\n  hint: pass a token with --api-token or OFFSHOOT_API_TOKEN",
            403 => "\n  hint: use a token with that role (--api-token or OFFSHOOT_API_TOKEN)",
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
