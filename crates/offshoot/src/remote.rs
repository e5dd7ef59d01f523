//! Client subcommands that talk to a running server: `branch-deployment`, `deployment`,
//! `materialize` and `runs`. Flag names of `branch-deployment` mirror dagster-cloud's.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use crate::client::{encode, Client, ClientArgs, UsageError};
use crate::{Format, Outcome};

#[derive(clap::Subcommand)]
pub enum BranchDeploymentCommand {
    /// Create the branch's deployment or queue a new commit in it; prints the deployment name.
    CreateOrUpdate(Box<CreateOrUpdateArgs>),
    /// Close a branch deployment: drop its warehouse objects, keep its history.
    Close {
        name: String,
        #[arg(long, value_parser = ["CLOSED", "MERGED"])]
        pull_request_status: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Delete a branch deployment with its warehouse objects and history (prod is refused).
    Delete {
        name: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// List branch deployments.
    List(ListArgs),
}

/// The flags of dagster-cloud's `branch-deployment create-or-update`, under the same names, so a
/// Dagster+ CI step runs unchanged with `offshoot` in place of `dagster-cloud`.
#[derive(clap::Args)]
pub struct CreateOrUpdateArgs {
    /// The repository as the server names it (e.g. `acme/shop`) [default: the server's only
    /// repository]
    #[arg(long, visible_alias = "repo-name")]
    git_repo_name: Option<String>,
    /// The branch, exactly as git names it; the deployment name is derived from it
    #[arg(long)]
    branch_name: String,
    /// The commit to deploy (a full or abbreviated hexadecimal id); the latest commit wins.
    /// Required unless --read-git-state
    #[arg(long, required_unless_present = "read_git_state")]
    commit_hash: Option<String>,
    /// Take the commit (HEAD of the git repository in the current directory), its time, author
    /// and message from git, as dagster-cloud's flag does; explicit flags win
    #[arg(long)]
    read_git_state: bool,
    /// The commit's time, as a Unix number (seconds, fractions allowed) or an RFC 3339 time
    /// (2026-01-31T12:00:00+01:00). Accepted for dagster-cloud compatibility; Offshoot reads
    /// commit times from git [default: none]
    #[arg(long, value_parser = crate::timestamp::parse_unix_or_rfc3339)]
    timestamp: Option<f64>,
    /// The branch's page on the forge. Accepted for dagster-cloud compatibility; not stored
    /// [default: none]
    #[arg(long)]
    branch_url: Option<String>,
    /// The commit's page on the forge. Accepted for dagster-cloud compatibility; not stored
    /// [default: none]
    #[arg(long)]
    commit_url: Option<String>,
    /// The pull request's page, shown in the UI [default: none]
    #[arg(long, visible_alias = "code-review-url")]
    pull_request_url: Option<String>,
    /// The pull request's number or id, shown in the UI and given to runs as
    /// OFFSHOOT_PULL_REQUEST_ID [default: none]
    #[arg(long, visible_alias = "code-review-id")]
    pull_request_id: Option<String>,
    /// OPEN deploys; CLOSED or MERGED closes the deployment and drops its warehouse objects
    /// [default: OPEN]
    #[arg(long, value_parser = ["OPEN", "CLOSED", "MERGED"])]
    pull_request_status: Option<String>,
    /// The commit's message. Accepted for dagster-cloud compatibility; Offshoot reads it from git
    /// [default: none]
    #[arg(long)]
    commit_message: Option<String>,
    /// The commit's author. Accepted for dagster-cloud compatibility; Offshoot reads it from git
    /// [default: none]
    #[arg(long)]
    author_name: Option<String>,
    /// The author's email. Accepted for dagster-cloud compatibility; Offshoot reads it from git
    /// [default: none]
    #[arg(long)]
    author_email: Option<String>,
    /// The author's avatar. Accepted for dagster-cloud compatibility; not stored [default: none]
    #[arg(long)]
    author_avatar_url: Option<String>,
    /// The deployment change tracking compares with [default: prod]
    #[arg(long)]
    base_deployment_name: Option<String>,
    /// What change tracking compares the branch with, as Dagster+'s flag: on-create takes
    /// production's serving commit when the deployment is created and keeps it; on-update takes
    /// it again on every update; merge-base (Offshoot's own) compares with the base's
    /// definitions where the branch forked, so later changes on main are not the branch's.
    /// Given once, it stays until another is given [default: merge-base, or the deployment's]
    #[arg(long, value_parser = ["on-create", "on-update", "merge-base"])]
    snapshot_base_condition: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Which server and repository a command addresses.
#[derive(clap::Args)]
pub struct Scope {
    /// Repository name; optional when the server has one, or when the deployment name is unique
    /// among its repositories.
    #[arg(long)]
    repository: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl Scope {
    fn query(&self) -> String {
        self.repository.as_deref().map(|r| format!("?repository={}", encode(r))).unwrap_or_default()
    }
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    include_closed: bool,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    scope: Scope,
}

#[derive(clap::Subcommand)]
pub enum DeploymentCommand {
    /// All deployments, production first.
    List(ListArgs),
    /// One deployment's status; `--wait` blocks until its newest revision has finished deploying.
    Status {
        name: String,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        scope: Scope,
    },
    /// Catch production up with the revision it serves: promote what branches built with the
    /// identical fingerprint, rebuild the rest of what changed (`[production] on_deploy =
    /// "manual"` runs it only this way); `--wait` follows the run.
    CatchUp {
        /// `prod`.
        name: String,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        #[command(flatten)]
        scope: Scope,
    },
    /// Undo production's last catch-up: the tables it replaced come back (they are kept for
    /// `[production] retention_hours`) and the previous revision serves again.
    Rollback {
        /// `prod`.
        name: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        scope: Scope,
    },
}

#[derive(clap::Args)]
pub struct MaterializeArgs {
    #[arg(long)]
    deployment: String,
    /// A run tag, `key=value` (repeat for several); the server's tag_concurrency_limits count
    /// them [default: none]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// For example 'changed_in_branch:ANY+' (changed assets and everything downstream).
    #[arg(long)]
    select: String,
    /// Wait for the run to finish and print its steps; exit 1 if it did not succeed.
    #[arg(long)]
    wait: bool,
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
    #[command(flatten)]
    scope: Scope,
}

#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// Recent runs, newest first.
    List {
        #[arg(long)]
        deployment: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        scope: Scope,
    },
    /// One run with its steps and logs.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a run.
    Cancel {
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn branch_deployment(command: BranchDeploymentCommand) -> anyhow::Result<Outcome> {
    match command {
        BranchDeploymentCommand::CreateOrUpdate(args) => {
            let mut args = *args;
            if args.read_git_state {
                let state = read_git_state()?;
                args.commit_hash = args.commit_hash.or(Some(state.commit_hash));
                args.timestamp = args.timestamp.or(Some(state.timestamp));
                args.author_email = args.author_email.or(Some(state.author_email));
                args.author_name = args.author_name.or(Some(state.author_name));
                args.commit_message = args.commit_message.or(Some(state.commit_message));
            }
            let commit_hash = args.commit_hash.ok_or_else(|| {
                UsageError("--commit-hash is required unless --read-git-state".to_owned())
            })?;
            let mut body = json!({ "branch_name": args.branch_name, "commit_hash": commit_hash });
            let optional = [
                ("git_repo_name", args.git_repo_name.map(Value::from)),
                ("timestamp", args.timestamp.map(Value::from)),
                ("pull_request_url", args.pull_request_url.map(Value::from)),
                ("pull_request_id", args.pull_request_id.map(Value::from)),
                ("pull_request_status", args.pull_request_status.map(Value::from)),
                ("commit_message", args.commit_message.map(Value::from)),
                ("author_name", args.author_name.map(Value::from)),
                ("author_email", args.author_email.map(Value::from)),
                ("author_avatar_url", args.author_avatar_url.map(Value::from)),
                ("branch_url", args.branch_url.map(Value::from)),
                ("commit_url", args.commit_url.map(Value::from)),
                ("base_deployment_name", args.base_deployment_name.map(Value::from)),
                ("snapshot_base_condition", args.snapshot_base_condition.map(Value::from)),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let answer = Client::new(&args.client)?.post("/api/v1/branch-deployments", &body)?;
            println!("{}", answer["name"].as_str().unwrap_or_default());
            Ok(Outcome::Ok)
        }
        BranchDeploymentCommand::Close { name, pull_request_status, scope } => {
            let body = match pull_request_status {
                Some(status) => json!({ "pull_request_status": status }),
                None => json!({}),
            };
            let answer = Client::new(&scope.client)?.post(
                &format!("/api/v1/deployments/{}/close{}", encode(&name), scope.query()),
                &body,
            )?;
            println!("closed {}", answer["name"].as_str().unwrap_or(&name));
            Ok(Outcome::Ok)
        }
        BranchDeploymentCommand::Delete { name, scope } => {
            Client::new(&scope.client)?.delete(&format!(
                "/api/v1/deployments/{}{}",
                encode(&name),
                scope.query()
            ))?;
            println!("deleted {name}");
            Ok(Outcome::Ok)
        }
        BranchDeploymentCommand::List(args) => list(args, true),
    }
}

/// What `--read-git-state` takes from `git log -1` in the current directory.
struct GitState {
    commit_hash: String,
    timestamp: f64,
    author_email: String,
    author_name: String,
    commit_message: String,
}

fn read_git_state() -> anyhow::Result<GitState> {
    let output = std::process::Command::new("git")
        .args(["log", "-1", "--format=%H%n%ct%n%ae%n%an%n%s"])
        .output()
        .map_err(|e| anyhow::anyhow!("--read-git-state runs `git log -1`: {e}"))?;
    if !output.status.success() {
        bail!("--read-git-state: `git log -1` failed here: {}; run it inside the repository or pass --commit-hash", String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text.splitn(5, '\n');
    let mut next = || lines.next().unwrap_or_default().trim_end().to_owned();
    let (commit_hash, timestamp, author_email, author_name, commit_message) =
        (next(), next(), next(), next(), next());
    let timestamp = timestamp.parse().map_err(|_| {
        anyhow::anyhow!("--read-git-state: git printed `{timestamp}` as the commit time")
    })?;
    Ok(GitState { commit_hash, timestamp, author_email, author_name, commit_message })
}

pub fn deployment(command: DeploymentCommand) -> anyhow::Result<Outcome> {
    match command {
        DeploymentCommand::List(args) => list(args, false),
        DeploymentCommand::Status { name, wait, timeout_secs, format, scope } => {
            let client = Client::new(&scope.client)?;
            let path = format!("/api/v1/deployments/{}{}", encode(&name), scope.query());
            let settled = |deployment: &Value| {
                let latest = deployment["latest_revision"]["status"].as_str().unwrap_or("");
                matches!(latest, "ready" | "failed" | "superseded")
                    || deployment["status"] == "closed"
            };
            let deployment = if wait {
                let deadline = Instant::now() + Duration::from_secs(timeout_secs);
                let mut last = Value::Null;
                let found = client.wait_for(deadline, || {
                    last = client.get(&path)?;
                    Ok(settled(&last).then(|| last.clone()))
                })?;
                match found {
                    Some(deployment) => deployment,
                    None => {
                        let latest = last["latest_revision"]["status"].as_str().unwrap_or("");
                        bail!("`{name}` did not finish deploying within {timeout_secs} s (latest revision: {latest})")
                    }
                }
            } else {
                client.get(&path)?
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&deployment)?),
                _ => print_deployment(&deployment),
            }
            let failed = deployment["latest_revision"]["status"] == "failed";
            Ok(if wait && failed { Outcome::Failed } else { Outcome::Ok })
        }
        DeploymentCommand::CatchUp { name, wait, timeout_secs, scope } => {
            let client = Client::new(&scope.client)?;
            let path = format!("/api/v1/deployments/{}/catch-up{}", encode(&name), scope.query());
            let answer = client.post(&path, &json!({}))?;
            let run = &answer["run"];
            let Some(id) = run["id"].as_i64() else {
                println!("{name} is up to date: nothing to promote or rebuild");
                return Ok(Outcome::Ok);
            };
            println!("catch-up run {id} in {name}:");
            if !wait {
                print_run(run, false);
                return Ok(Outcome::Ok);
            }
            let run = wait_for_run(&client, id, Duration::from_secs(timeout_secs))?;
            print_run(&run, false);
            Ok(if run["status"] == "succeeded" { Outcome::Ok } else { Outcome::Failed })
        }
        DeploymentCommand::Rollback { name, format, scope } => {
            let client = Client::new(&scope.client)?;
            let path = format!("/api/v1/deployments/{}/rollback{}", encode(&name), scope.query());
            let answer = client.post(&path, &json!({}))?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
                _ => {
                    let restored: Vec<&str> = answer["restored"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k.as_str())
                        .collect();
                    let serving = &answer["serving_revision"];
                    println!(
                        "rolled {name} back from revision {} to revision {} ({}): undid catch-up run {}, {} table(s) restored{}",
                        answer["rolled_back_revision"],
                        serving["number"],
                        serving["commit"]["sha"].as_str().map(|s| &s[..s.len().min(12)]).unwrap_or(""),
                        answer["catch_up_run"],
                        restored.len(),
                        if restored.is_empty() { String::new() } else { format!(": {}", restored.join(", ")) }
                    );
                }
            }
            Ok(Outcome::Ok)
        }
    }
}

fn list(args: ListArgs, branches_only: bool) -> anyhow::Result<Outcome> {
    let mut query = vec![format!("include_closed={}", args.include_closed)];
    if let Some(repository) = &args.scope.repository {
        query.push(format!("repository={}", encode(repository)));
    }
    let answer = Client::new(&args.scope.client)?
        .get(&format!("/api/v1/deployments?{}", query.join("&")))?;
    let deployments: Vec<&Value> =
        answer.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let deployments: Vec<&Value> =
        deployments.into_iter().filter(|d| !branches_only || d["kind"] == "branch").collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&deployments)?),
        _ => {
            println!(
                "{:<42} {:<8} {:<11} {:<13} {:>4} {:>8} {:>8} {:>9}  BRANCH",
                "NAME", "STATUS", "REVISION", "COMMIT", "NEW", "CHANGED", "REMOVED", "IMPACTED"
            );
            for d in deployments {
                let latest = &d["latest_revision"];
                // The revision's counts (one definition with the UI and the pull-request comment).
                let count = |which: &str| {
                    d["current_revision"]["counts"][which]
                        .as_u64()
                        .map(|n| n.to_string())
                        .unwrap_or("-".into())
                };
                println!(
                    "{:<42} {:<8} {:<11} {:<13} {:>4} {:>8} {:>8} {:>9}  {}",
                    d["name"].as_str().unwrap_or(""),
                    d["status"].as_str().unwrap_or(""),
                    latest["status"].as_str().unwrap_or("-"),
                    latest["commit"]["sha"].as_str().map(|s| &s[..s.len().min(12)]).unwrap_or("-"),
                    count("new"),
                    count("changed"),
                    count("removed"),
                    count("impacted"),
                    d["branch"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(Outcome::Ok)
}

fn print_deployment(d: &Value) {
    println!(
        "{} ({}, {}) — branch {}",
        d["name"].as_str().unwrap_or(""),
        d["kind"].as_str().unwrap_or(""),
        d["status"].as_str().unwrap_or(""),
        d["branch"].as_str().unwrap_or("")
    );
    if let Some(pr) = d["pull_request"].as_object() {
        println!(
            "  pull request {} {} {}",
            pr["id"].as_str().unwrap_or(""),
            pr["status"].as_str().unwrap_or(""),
            pr["url"].as_str().unwrap_or("")
        );
    }
    if let Some(description) = d["snapshot_base"]["description"].as_str() {
        println!("  compares with: {description}");
    }
    // A closed deployment serves nothing (its schema is gone): say so, and what it last served,
    // instead of a "serving" line.
    let closed = d["status"] == "closed";
    if closed {
        println!("  {}", closed_line(d));
    }
    let mut shown = vec![("latest", &d["latest_revision"])];
    if !closed {
        shown.insert(0, ("serving", &d["current_revision"]));
    }
    for (label, revision) in shown {
        if revision.is_null() {
            println!("  {label}: none");
            continue;
        }
        println!(
            "  {label}: revision {} {} at {} \"{}\" — {} assets, {}{}",
            revision["number"],
            revision["status"].as_str().unwrap_or(""),
            revision["commit"]["sha"].as_str().map(|s| &s[..s.len().min(12)]).unwrap_or(""),
            revision["commit"]["message"].as_str().unwrap_or(""),
            revision["asset_count"],
            revision["changes_summary"].as_str().unwrap_or("no base to compare with"),
            revision["duration_ms"]
                .as_i64()
                .map(|ms| format!(", deployed in {ms} ms"))
                .unwrap_or_default()
        );
        if let Some(error) = revision["error"].as_str() {
            println!("    error: {error}");
        }
        for diagnostic in revision["diagnostics"].as_array().into_iter().flatten() {
            println!(
                "    {}:{}:{}: error: {}",
                diagnostic["path"].as_str().unwrap_or(""),
                diagnostic["line"],
                diagnostic["column"],
                diagnostic["message"].as_str().unwrap_or("")
            );
        }
    }
}

/// `closed 2026-12-02 10:04 UTC (pull request merged); last served revision 3 (abc123def456)`.
fn closed_line(d: &Value) -> String {
    let when = d["closed_at"].as_i64().map(|ms| format!(" {}", utc_minute(ms))).unwrap_or_default();
    let reason = d["close_reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
    // A server from before `last_served_revision` kept the last served one in `current_revision`.
    let last = Some(&d["last_served_revision"])
        .filter(|r| r.is_object())
        .unwrap_or(&d["current_revision"]);
    let served = match last["number"].as_u64() {
        Some(number) => format!(
            "last served revision {number} ({})",
            last["commit"]["sha"].as_str().map(|s| &s[..s.len().min(12)]).unwrap_or("")
        ),
        None => "it never served".to_owned(),
    };
    format!("closed{when}{reason}; {served}")
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM UTC` (the proleptic Gregorian calendar,
/// Howard Hinnant's days-to-civil), so the CLI needs no date library.
fn utc_minute(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", of_day / 3600, of_day % 3600 / 60)
}

pub fn materialize(args: MaterializeArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.scope.client)?;
    let path =
        format!("/api/v1/deployments/{}/runs{}", encode(&args.deployment), args.scope.query());
    let mut tags = serde_json::Map::new();
    for tag in &args.tags {
        let (key, value) = tag
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--tag {tag}: write it as key=value")))?;
        tags.insert(key.to_owned(), Value::from(value));
    }
    let run = client.post(&path, &json!({ "selection": args.select, "tags": tags }))?;
    let id = run["id"].as_i64().unwrap_or_default();
    let keys: Vec<&str> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["asset_key"].as_str())
        .collect();
    println!("run {id} in {}: {} step(s): {}", args.deployment, keys.len(), keys.join(", "));
    if !args.wait {
        return Ok(Outcome::Ok);
    }
    let run = wait_for_run(&client, id, Duration::from_secs(args.timeout_secs))?;
    print_run(&run, false);
    Ok(if run["status"] == "succeeded" { Outcome::Ok } else { Outcome::Failed })
}

/// Waits for the run to end, following the server's event stream.
pub fn wait_for_run(client: &Client, id: i64, timeout: Duration) -> anyhow::Result<Value> {
    let path = format!("/api/v1/runs/{id}");
    let found = client.wait_for(Instant::now() + timeout, || {
        let run = client.get(&path)?;
        let ended = matches!(run["status"].as_str(), Some("succeeded" | "failed" | "canceled"));
        Ok(ended.then_some(run))
    })?;
    found.ok_or_else(|| anyhow::anyhow!("run {id} did not finish within {} s", timeout.as_secs()))
}

fn print_run(run: &Value, with_logs: bool) {
    println!(
        "run {} in {}: {} ({}){}",
        run["id"],
        run["deployment"].as_str().unwrap_or(""),
        run["status"].as_str().unwrap_or(""),
        run["selection"].as_str().unwrap_or(""),
        run["error"].as_str().map(|e| format!(" — {e}")).unwrap_or_default()
    );
    for step in run["steps"].as_array().into_iter().flatten() {
        println!(
            "  {:<30} {:<10} {:>8} {:>8}{}{}",
            step["asset_key"].as_str().unwrap_or(""),
            step["status"].as_str().unwrap_or(""),
            step["row_count"].as_i64().map(|n| format!("{n} rows")).unwrap_or_default(),
            step["duration_ms"].as_i64().map(|n| format!("{n} ms")).unwrap_or_default(),
            // A catch-up's step says what it does: promoted (from feature-x, run 7), built (...).
            step["action"].as_str().map(|a| format!("  {a}")).unwrap_or_default(),
            step["error"].as_str().map(|e| format!("  {e}")).unwrap_or_default()
        );
        if with_logs {
            for line in step["log"].as_str().unwrap_or("").lines() {
                println!("      | {line}");
            }
        }
    }
}

pub fn runs(command: RunsCommand) -> anyhow::Result<Outcome> {
    match command {
        RunsCommand::List { deployment, limit, format, scope } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(deployment) = &deployment {
                query.push(format!("deployment={}", encode(deployment)));
            }
            if let Some(repository) = &scope.repository {
                query.push(format!("repository={}", encode(repository)));
            }
            let runs =
                Client::new(&scope.client)?.get(&format!("/api/v1/runs?{}", query.join("&")))?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
                _ => {
                    for run in runs.as_array().into_iter().flatten() {
                        println!(
                            "{:>6}  {:<10} {:<30} {}",
                            run["id"],
                            run["status"].as_str().unwrap_or(""),
                            run["deployment"].as_str().unwrap_or(""),
                            run["selection"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(Outcome::Ok)
        }
        RunsCommand::Show { id, format, client } => {
            let run = Client::new(&client)?.get(&format!("/api/v1/runs/{id}"))?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&run)?),
                _ => print_run(&run, true),
            }
            Ok(Outcome::Ok)
        }
        RunsCommand::Cancel { id, client } => {
            let run =
                Client::new(&client)?.post(&format!("/api/v1/runs/{id}/cancel"), &json!({}))?;
            println!("run {id}: {}", run["status"].as_str().unwrap_or(""));
            Ok(Outcome::Ok)
        }
    }
}

#[derive(clap::Subcommand)]
pub enum ScheduleCommand {
    /// The deployment's schedules: on or off, pattern, next tick and last ticks.
    List {
        #[arg(long, default_value = "prod")]
        deployment: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        scope: Scope,
    },
    /// Switch a branch deployment's schedule on (production's always are).
    On {
        schedule: String,
        #[arg(long)]
        deployment: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Switch a branch deployment's schedule off.
    Off {
        schedule: String,
        #[arg(long)]
        deployment: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Run one tick of a schedule now (also while it is off).
    Tick {
        schedule: String,
        #[arg(long)]
        deployment: String,
        #[command(flatten)]
        scope: Scope,
    },
}

fn print_schedule(schedule: &Value) {
    let next = schedule["next_tick_at"]
        .as_i64()
        .map_or_else(|| "-".to_owned(), offshoot_core::schedule::format_instant);
    println!(
        "{:<24} {:<3} {:<16} {:<18} next {:<20} {}",
        schedule["name"].as_str().unwrap_or(""),
        if schedule["enabled"].as_bool() == Some(true) { "on" } else { "off" },
        schedule["cron"].as_str().unwrap_or(""),
        schedule["timezone"].as_str().unwrap_or(""),
        next,
        schedule["selection"].as_str().unwrap_or("")
    );
    for tick in schedule["ticks"].as_array().into_iter().flatten() {
        print_tick(tick);
    }
}

fn print_tick(tick: &Value) {
    let at = tick["tick_at"].as_i64().map(offshoot_core::schedule::format_instant);
    let mut line = format!(
        "  {} {}{}",
        at.unwrap_or_default(),
        tick["status"].as_str().unwrap_or(""),
        if tick["manual"].as_bool() == Some(true) { " (manual)" } else { "" }
    );
    if let Some(run) = tick["run_id"].as_i64() {
        line.push_str(&format!(" run {run} {}", tick["run_status"].as_str().unwrap_or("")));
    }
    if let Some(missed) = tick["missed"].as_u64().filter(|m| *m > 0) {
        line.push_str(&format!(", caught up {missed} missed tick(s)"));
    }
    if let Some(message) = tick["message"].as_str() {
        line.push_str(&format!(": {message}"));
    }
    println!("{line}");
}

pub fn schedule(command: ScheduleCommand) -> anyhow::Result<Outcome> {
    let path = |deployment: &str, schedule: &str, action: &str, scope: &Scope| {
        format!(
            "/api/v1/deployments/{}/schedules/{}/{action}{}",
            encode(deployment),
            encode(schedule),
            scope.query()
        )
    };
    match command {
        ScheduleCommand::List { deployment, format, scope } => {
            let path =
                format!("/api/v1/deployments/{}/schedules{}", encode(&deployment), scope.query());
            let schedules = Client::new(&scope.client)?.get(&path)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&schedules)?),
                _ => {
                    let list = schedules.as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        println!("`{deployment}` has no schedules");
                    }
                    for schedule in &list {
                        print_schedule(schedule);
                    }
                }
            }
            Ok(Outcome::Ok)
        }
        ScheduleCommand::On { schedule, deployment, scope } => {
            let answer = Client::new(&scope.client)?
                .post(&path(&deployment, &schedule, "on", &scope), &json!({}))?;
            print_schedule(&answer);
            Ok(Outcome::Ok)
        }
        ScheduleCommand::Off { schedule, deployment, scope } => {
            let answer = Client::new(&scope.client)?
                .post(&path(&deployment, &schedule, "off", &scope), &json!({}))?;
            print_schedule(&answer);
            Ok(Outcome::Ok)
        }
        ScheduleCommand::Tick { schedule, deployment, scope } => {
            let tick = Client::new(&scope.client)?
                .post(&path(&deployment, &schedule, "tick", &scope), &json!({}))?;
            print_tick(&tick);
            Ok(if tick["status"] == "started" { Outcome::Ok } else { Outcome::Failed })
        }
    }
}
