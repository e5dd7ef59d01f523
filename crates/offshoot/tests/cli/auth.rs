//! The trust boundary of the API, end to end: token roles (read < deploy < admin) through the
//! real binary's HTTP API and CLI, the configuration forms (a plain token is admin), and a server
//! run with known secrets through every path, none of which may show them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use expect_test::{expect, Expect};
use serde_json::{json, Value};

use crate::support::*;

const READ: &str = "read-token-1111";
const DEPLOY: &str = "deploy-token-2222";
/// Configured the way it was before roles: a plain string.
const LEGACY_ADMIN: &str = "legacy-admin-token-3333";

/// Who calls: a label and the token presented.
const CALLERS: [(&str, Option<&str>); 4] =
    [("none", None), ("read", Some(READ)), ("deploy", Some(DEPLOY)), ("admin", Some(LEGACY_ADMIN))];

fn role_config(dir: &Path, repo: &Path) -> String {
    format!(
        "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\npublic_reads = false\n\
         api_tokens = [{LEGACY_ADMIN:?}, {{ secret = {READ:?}, role = \"read\" }}, {{ secret = {DEPLOY:?}, role = \"deploy\" }}]\n\
         [[repositories]]\nname = \"shop\"\npath = {:?}\nproduction_branch = \"main\"\n",
        dir.join("data").to_str().expect("utf-8"),
        repo.to_str().expect("utf-8"),
    )
}

/// One cell: `ok` for any 2xx, else the error code; `run_finished` counts as allowed (the cancel
/// got past the role check and found the run done).
fn outcome(status: u16, body: &Value) -> String {
    if (200..300).contains(&status) {
        return "ok".to_owned();
    }
    match body["error"]["code"].as_str().unwrap_or("?") {
        "run_finished" => "ok".to_owned(),
        code => code.to_owned(),
    }
}

/// Each action by each caller, in order (admin last, so a deleting admin comes after the others),
/// as a table: a row per action, a column per caller.
fn matrix(server: &Server, actions: &[(&str, &str, String, Option<Value>)]) -> String {
    let mut out = format!("{:<34}{:<14}{:<14}{:<14}{}\n", "", "none", "read", "deploy", "admin");
    for (label, method, path, body) in actions {
        let mut row = format!("{label:<34}");
        for (_, token) in CALLERS {
            let (status, answer) = server.request(method, path, body.clone(), token);
            if status == 403 {
                let message = answer["error"]["message"].as_str().unwrap_or("");
                let needed = answer["error"]["required_role"].as_str().unwrap_or("?");
                assert!(
                    message.contains(&format!("the `{needed}` role")),
                    "{label}: a 403 names the role it needs: {answer}"
                );
            }
            row.push_str(&format!("{:<14}", outcome(status, &answer)));
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}

/// The name of `branch`'s deployment in `repository` once it serves (names of branches with a
/// slash carry a hash suffix).
fn ready_branch(server: &Server, token: &str, repository: &str, branch: &str) -> String {
    let started = Instant::now();
    loop {
        let (_, deployments) = server.request(
            "GET",
            &format!("/api/v1/deployments?repository={repository}"),
            None,
            Some(token),
        );
        let found = deployments
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["branch"] == branch && d["current_revision"]["status"] == "ready");
        if let Some(deployment) = found {
            return deployment["name"].as_str().expect("name").to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{branch} never served: {deployments:#}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_matrix(
    server: &Server,
    actions: &[(&str, &str, String, Option<Value>)],
    expected: Expect,
) {
    expected.assert_eq(&matrix(server, actions));
}

#[test]
fn each_role_may_do_exactly_what_it_allows_through_the_api() {
    let (dir, repo) = shop_repo("auth-matrix");
    let server = Server::start_with_config(&dir.0, &role_config(&dir.0, &repo));
    let main = git(&repo, &["rev-parse", "main"]);
    let feature = git(&repo, &["rev-parse", "feature/eur"]);
    server.wait_for_deployment_as("prod", LEGACY_ADMIN, |d| serving_commit(d) == main);

    let branch =
        json!({ "branch_name": "feature/eur", "commit_hash": feature, "pull_request_id": "7" });
    let production = json!({ "branch_name": "main", "commit_hash": main });
    check_matrix(
        &server,
        &[
            ("list deployments", "GET", "/api/v1/deployments".into(), None),
            ("show prod", "GET", "/api/v1/deployments/prod".into(), None),
            ("runs", "GET", "/api/v1/runs".into(), None),
            ("metrics", "GET", "/metrics".into(), None),
            (
                "create-or-update a branch",
                "POST",
                "/api/v1/branch-deployments".into(),
                Some(branch),
            ),
            (
                "create-or-update main (prod)",
                "POST",
                "/api/v1/branch-deployments".into(),
                Some(production),
            ),
        ],
        expect![[r#"
                                              none          read          deploy        admin
            list deployments                  unauthorized  ok            ok            ok
            show prod                         unauthorized  ok            ok            ok
            runs                              unauthorized  ok            ok            ok
            metrics                           unauthorized  ok            ok            ok
            create-or-update a branch         unauthorized  forbidden     ok            ok
            create-or-update main (prod)      unauthorized  forbidden     forbidden     ok
        "#]],
    );
    let name = ready_branch(&server, LEGACY_ADMIN, "shop", "feature/eur");
    let (_, branch_run) = server.request(
        "POST",
        &format!("/api/v1/deployments/{name}/runs"),
        Some(json!({ "selection": "key:*" })),
        Some(DEPLOY),
    );
    let (_, production_run) = server.request(
        "POST",
        "/api/v1/deployments/prod/runs",
        Some(json!({ "selection": "key:*" })),
        Some(LEGACY_ADMIN),
    );
    let (branch_run, production_run) = (
        branch_run["id"].as_i64().expect("branch run"),
        production_run["id"].as_i64().expect("prod run"),
    );
    let selection = || Some(json!({ "selection": "key:stg_orders" }));
    check_matrix(
        &server,
        &[
            ("run in the branch", "POST", format!("/api/v1/deployments/{name}/runs"), selection()),
            ("run in prod", "POST", "/api/v1/deployments/prod/runs".into(), selection()),
            ("cancel a branch run", "POST", format!("/api/v1/runs/{branch_run}/cancel"), None),
            ("cancel a prod run", "POST", format!("/api/v1/runs/{production_run}/cancel"), None),
            (
                "pin the branch",
                "POST",
                format!("/api/v1/deployments/{name}/pin"),
                Some(json!({ "pinned": true })),
            ),
            ("close prod", "POST", "/api/v1/deployments/prod/close".into(), None),
            ("reopen prod", "POST", "/api/v1/deployments/prod/reopen".into(), None),
            ("delete prod", "DELETE", "/api/v1/deployments/prod".into(), None),
            ("close the branch", "POST", format!("/api/v1/deployments/{name}/close"), None),
            ("reopen the branch", "POST", format!("/api/v1/deployments/{name}/reopen"), None),
            ("delete the branch", "DELETE", format!("/api/v1/deployments/{name}"), None),
        ],
        expect![[r#"
                                              none          read          deploy        admin
            run in the branch                 unauthorized  forbidden     ok            ok
            run in prod                       unauthorized  forbidden     forbidden     ok
            cancel a branch run               unauthorized  forbidden     ok            ok
            cancel a prod run                 unauthorized  forbidden     forbidden     ok
            pin the branch                    unauthorized  forbidden     forbidden     ok
            close prod                        unauthorized  forbidden     forbidden     production_protected
            reopen prod                       unauthorized  forbidden     forbidden     ok
            delete prod                       unauthorized  forbidden     forbidden     production_protected
            close the branch                  unauthorized  forbidden     ok            ok
            reopen the branch                 unauthorized  forbidden     ok            ok
            delete the branch                 unauthorized  forbidden     forbidden     ok
        "#]],
    );

    // The refusal says what the action needs and what the token has, in a stable shape.
    let (status, answer) =
        server.request("POST", "/api/v1/deployments/prod/runs", selection(), Some(DEPLOY));
    assert_eq!(status, 403);
    assert_eq!(
        answer,
        json!({ "error": { "code": "forbidden", "required_role": "admin",
            "message": "launching a run in the production deployment `prod` needs an API token with the `admin` role; this token's role is `deploy`" } })
    );
    let (status, answer) = server.request("GET", "/api/v1/deployments", None, None);
    assert_eq!(
        (status, answer["error"]["required_role"].as_str()),
        (401, Some("read")),
        "{answer}"
    );
    // A token that is not configured is told so, and is not a role.
    let (status, answer) =
        server.request("GET", "/api/v1/deployments", None, Some("legacy-admin-token-333"));
    assert_eq!(status, 401);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("the bearer token is not one of the server's API tokens"),
        "{answer}"
    );

    // whoami tells a client (the web UI) what the token may do.
    for (label, token) in CALLERS {
        let (status, answer) = server.request("GET", "/api/v1/whoami", None, token);
        assert_eq!(status, 200);
        let role = if label == "none" { Value::Null } else { json!(label) };
        assert_eq!(
            answer,
            json!({ "token": if token.is_some() { "valid" } else { "none" }, "role": role, "public_reads": false })
        );
    }
    let (_, answer) = server.request("GET", "/api/v1/whoami", None, Some("nope-nope"));
    assert_eq!(answer["token"], "invalid");
}

/// `offshoot` as a client of `server` with `token`.
fn client_as(server: &Server, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_offshoot"));
    command.args(args).env("OFFSHOOT_URL", &server.url).env_remove("OFFSHOOT_API_TOKEN");
    if let Some(token) = token {
        command.env("OFFSHOOT_API_TOKEN", token);
    }
    command.output().expect("offshoot runs")
}

#[test]
fn the_cli_previews_with_a_deploy_token_and_shows_why_production_is_refused() {
    let (dir, repo) = shop_repo("auth-cli");
    let server = Server::start_with_config(&dir.0, &role_config(&dir.0, &repo));
    let main = git(&repo, &["rev-parse", "main"]);
    let feature = git(&repo, &["rev-parse", "feature/eur"]);
    server.wait_for_deployment_as("prod", LEGACY_ADMIN, |d| serving_commit(d) == main);

    // A CI's deploy token previews the branch.
    let output = client_as(
        &server,
        Some(DEPLOY),
        &[
            "branch-deployment",
            "create-or-update",
            "--branch-name",
            "feature/eur",
            "--commit-hash",
            &feature,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let name = stdout(&output).trim().to_owned();
    let output = client_as(&server, Some(DEPLOY), &["deployment", "status", &name, "--wait"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = client_as(
        &server,
        Some(DEPLOY),
        &["materialize", "--deployment", &name, "--select", "changed_in_branch:ANY+"],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    // ... and is refused production, delete and pin, with the role each needs.
    let refused = |args: &[&str]| {
        let output = client_as(&server, Some(DEPLOY), args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", stdout(&output));
        stderr(&output)
    };
    expect![[r#"
        error: launching a run in the production deployment `prod` needs an API token with the `admin` role; this token's role is `deploy` (forbidden, HTTP 403)
          hint: use a token with that role (--api-token, OFFSHOOT_API_TOKEN or DAGSTER_CLOUD_API_TOKEN)
    "#]]
    .assert_eq(&refused(&["materialize", "--deployment", "prod", "--select", "key:*"]));
    expect![[r#"
        error: deploying the production branch `main` (to `prod`) needs an API token with the `admin` role; this token's role is `deploy` (forbidden, HTTP 403)
          hint: use a token with that role (--api-token, OFFSHOOT_API_TOKEN or DAGSTER_CLOUD_API_TOKEN)
    "#]]
    .assert_eq(&refused(&["branch-deployment", "create-or-update", "--branch-name", "main", "--commit-hash", &main]));
    expect![[r#"
        error: deleting a deployment needs an API token with the `admin` role; this token's role is `deploy` (forbidden, HTTP 403)
          hint: use a token with that role (--api-token, OFFSHOOT_API_TOKEN or DAGSTER_CLOUD_API_TOKEN)
    "#]]
    .assert_eq(&refused(&["branch-deployment", "delete", &name]));

    // Reads are private on this server: no token, no list.
    let output = client_as(&server, None, &["deployment", "list"]);
    assert_eq!(output.status.code(), Some(1));
    expect![[r#"
        error: this needs an API token: send `Authorization: Bearer <token>` with a token whose role is `read` or higher (unauthorized, HTTP 401)
          hint: pass a token with --api-token, OFFSHOOT_API_TOKEN or DAGSTER_CLOUD_API_TOKEN
    "#]]
    .assert_eq(&stderr(&output));
    let output = client_as(&server, Some(READ), &["deployment", "list"]);
    assert!(output.status.success() && stdout(&output).contains(&name), "{}", stderr(&output));

    // The admin token (configured as a plain string, the form from before roles) may.
    let output = client_as(&server, Some(LEGACY_ADMIN), &["branch-deployment", "delete", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn tokens_from_flags_and_variables_carry_roles_and_a_bad_role_names_its_place() {
    let (dir, repo) = shop_repo("auth-config");
    // OFFSHOOT_API_TOKENS: `role:token`, or a plain token (admin).
    let config = dir.0.join("plain.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[[repositories]]\nname = \"shop\"\npath = {:?}\n", dir.0.join("data").to_str().expect("utf-8"), repo.to_str().expect("utf-8")),
    )
    .expect("write");
    let log = dir.0.join("env.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args(["serve", "--config", config.to_str().expect("utf-8")])
        .env("OFFSHOOT_API_TOKENS", "deploy:ci-token-4444,plain-admin-5555")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("serve");
    let started = Instant::now();
    let url = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("offshoot serving on ") && text.contains(&format!("{l}\n")))
        {
            break line
                .trim_start_matches("offshoot serving on ")
                .split_whitespace()
                .next()
                .expect("url")
                .to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the server did not start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let whoami = |token: &str| {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder().http_status_as_error(false).build(),
        );
        let mut answer = agent
            .get(&format!("{url}/api/v1/whoami"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("answer");
        let text = answer.body_mut().read_to_string().expect("body");
        serde_json::from_str::<Value>(&text).expect("json")["role"].clone()
    };
    assert_eq!(whoami("ci-token-4444"), json!("deploy"));
    assert_eq!(whoami("plain-admin-5555"), json!("admin"));
    assert_eq!(whoami("deploy:ci-token-4444"), Value::Null);
    let _ = child.kill();
    let _ = child.wait();

    // A mistyped role: the file's path and line, and never the token.
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\napi_tokens = [\n  \"fine-admin-token\",\n  { secret = \"typo-token-6666\", role = \"deployer\" },\n]\n").expect("write");
    let output = offshoot(&["serve", "--config", bad.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(
        text,
        format!(
            "error: {}:4: `deployer` is not a role: use \"read\", \"deploy\" or \"admin\"\n",
            bad.display()
        )
    );
    let table = dir.0.join("table.toml");
    std::fs::write(&table, "listen = \"127.0.0.1:0\"\n\n[[api_tokens]]\nsecret = \"typo-token-6666\"\nrole = \"Admin\"\n").expect("write");
    let text = stderr(&offshoot(&["serve", "--config", table.to_str().expect("utf-8")]));
    assert_eq!(
        text,
        format!(
            "error: {}:5: `Admin` is not a role: use \"read\", \"deploy\" or \"admin\"\n",
            table.display()
        )
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args([
            "serve",
            "--config",
            config.to_str().expect("utf-8"),
            "--api-token",
            "deplyo:typo-token-7777",
        ])
        .output()
        .expect("runs");
    let text = stderr(&output);
    assert!(text.contains("entry 1: `deplyo:` is not a role"), "{text}");
    assert!(!text.contains("typo-token"), "{text}");
}

// ---- No secret anywhere ------------------------------------------------------------------------

/// Every secret the leak test configures, by what it is.
const SECRETS: [(&str, &str); 9] = [
    ("admin API token", "admin-secret-AAAA1111"),
    ("deploy API token", "deploy-secret-BBBB2222"),
    ("read API token", "read-secret-CCCC3333"),
    ("GitHub webhook secret", "webhook-secret-DDDD4444"),
    ("GitHub API token", "forge-secret-EEEE5555"),
    ("password in a remote URL", "url-secret-FFFF6666"),
    ("remote git token", "git-secret-GGGG7777"),
    ("GitLab webhook token", "gitlab-secret-HHHH8888"),
    // The local PostgreSQL trusts its clients, so any password connects.
    ("password in the metadata store URL", "pg-secret-IIII9999"),
];

fn secret(what: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(name, _)| *name == what)
        .map(|(_, value)| *value)
        .expect("a configured secret")
}

/// A forge that refuses everything and echoes the credentials it was sent in its error (some
/// proxies and hosts do), so a server that logs answers verbatim would leak them.
fn echoing_forge() -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Mutex::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut credentials = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("authorization:") || lower.starts_with("private-token:") {
                    credentials.push(line.trim_end().to_owned());
                }
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            *counter.lock().expect("lock") += 1;
            let text = json!({ "message": format!("Bad credentials: {}", credentials.join(" ")) })
                .to_string();
            let _ = write!(stream, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
        }
    });
    (url, seen)
}

/// A port nothing listens on: connections are refused.
fn refused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

fn get_raw(server: &Server, path: &str, authorization: Option<&str>) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).build(),
    );
    let mut request = agent.get(&format!("{}{path}", server.url));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request.call().expect("the server answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().expect("body"))
}

#[test]
fn no_secret_appears_in_any_answer_error_or_log_line() {
    let (dir, repo) = shop_repo("auth-leak");
    let (forge_url, forge_requests) = echoing_forge();
    let dead = refused_port();
    // The metadata store on PostgreSQL, with a password in its URL (SQLite when PostgreSQL is skipped).
    let database = crate::server::Database(format!("offshoot_leak_{}", std::process::id()));
    let metadata = if std::env::var("OFFSHOOT_SKIP_POSTGRES").as_deref() == Ok("1") {
        String::new()
    } else {
        crate::server::psql("postgres", &format!("CREATE DATABASE {}", database.0));
        format!(
            "metadata_url = \"postgres://postgres:{}@127.0.0.1:5432/{}\"\n",
            secret("password in the metadata store URL"),
            database.0
        )
    };
    let config = format!(
        "data_dir = {data:?}\nlisten = \"127.0.0.1:0\"\npublic_reads = false\nlog_level = \"debug\"\npublic_url = \"http://offshoot.example\"\n{metadata}\
         api_tokens = [{admin:?}, {{ secret = {deploy:?}, role = \"deploy\" }}, {{ secret = {read:?}, role = \"read\" }}]\n\
         [[repositories]]\nname = \"shop\"\npath = {repo:?}\nproduction_branch = \"main\"\nforge = \"github\"\nproject = \"acme/shop\"\n\
         webhook_secret = {webhook:?}\ntoken = {forge:?}\napi_url = {forge_url:?}\n\
         [[repositories]]\nname = \"elsewhere\"\nurl = \"http://bot:{url_password}@127.0.0.1:{dead}/acme/elsewhere.git\"\ngit_token = {git:?}\n\
         [[repositories]]\nname = \"lab\"\npath = {repo:?}\nforge = \"gitlab\"\nproject = \"acme/lab\"\nwebhook_secret = {gitlab:?}\napi_url = \"http://127.0.0.1:{dead}/api/v4\"\ntoken = {forge:?}\n",
        data = dir.0.join("data").to_str().expect("utf-8"),
        repo = repo.to_str().expect("utf-8"),
        admin = secret("admin API token"),
        deploy = secret("deploy API token"),
        read = secret("read API token"),
        webhook = secret("GitHub webhook secret"),
        forge = secret("GitHub API token"),
        url_password = secret("password in a remote URL"),
        git = secret("remote git token"),
        gitlab = secret("GitLab webhook token"),
    );
    let server = Server::start_with_config(&dir.0, &config);
    let (admin, deploy, read) =
        (secret("admin API token"), secret("deploy API token"), secret("read API token"));
    let main = git(&repo, &["rev-parse", "main"]);
    let feature = git(&repo, &["rev-parse", "feature/eur"]);
    let broken = git(&repo, &["rev-parse", "broken"]);
    let mut seen: Vec<(String, String)> = Vec::new();
    fn record(seen: &mut Vec<(String, String)>, what: &str, (status, body): (u16, String)) -> u16 {
        seen.push((format!("{what} ({status})"), body));
        status
    }
    let bearer = |token: &str| format!("Bearer {token}");

    // Authentication: missing, wrong, near-miss and misplaced credentials, on reads and writes.
    for (what, value) in [
        ("no token", None),
        ("a prefix of the admin token", Some(bearer(&admin[..admin.len() - 1]))),
        ("the admin token and more", Some(bearer(&format!("{admin}x")))),
        ("the webhook secret as a token", Some(bearer(secret("GitHub webhook secret")))),
        ("the forge token as a token", Some(bearer(secret("GitHub API token")))),
        ("basic auth", Some(format!("Basic {admin}"))),
        ("lower-case scheme", Some(format!("bearer {admin}"))),
    ] {
        assert_eq!(
            record(
                &mut seen,
                what,
                get_raw(&server, "/api/v1/deployments?repository=shop", value.as_deref())
            ),
            401,
            "{what}"
        );
        record(&mut seen, what, get_raw(&server, "/api/v1/whoami", value.as_deref()));
        record(&mut seen, what, get_raw(&server, "/metrics", value.as_deref()));
    }
    let with = |token: &str| [("Authorization", bearer(token))];
    let post = |token: &str, path: &str, body: &str| {
        let headers = with(token);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        post_raw_text(&server, path, &headers, body)
    };
    // Roles refused; bad requests; not-founds; a fetch that fails; a revision that fails.
    let create = |branch: &str, commit: &str, repository: &str| {
        json!({ "git_repo_name": repository, "branch_name": branch, "commit_hash": commit, "pull_request_id": "7", "pull_request_url": "https://github.com/acme/shop/pull/7" }).to_string()
    };
    assert_eq!(
        record(
            &mut seen,
            "read token writes",
            post(read, "/api/v1/branch-deployments", &create("feature/eur", &feature, "shop"))
        ),
        403
    );
    assert_eq!(
        record(
            &mut seen,
            "deploy token deploys prod",
            post(deploy, "/api/v1/branch-deployments", &create("main", &main, "shop"))
        ),
        403
    );
    assert_eq!(
        record(
            &mut seen,
            "deploy token runs prod",
            post(
                deploy,
                "/api/v1/deployments/prod/runs?repository=shop",
                r#"{"selection":"key:*"}"#
            )
        ),
        403
    );
    record(
        &mut seen,
        "malformed JSON",
        post(deploy, "/api/v1/branch-deployments", "{\"branch_name\": "),
    );
    record(
        &mut seen,
        "unknown field",
        post(
            deploy,
            "/api/v1/branch-deployments",
            r#"{"branch_name":"x","commit_hash":"abc","extra":1}"#,
        ),
    );
    record(
        &mut seen,
        "not a commit",
        post(deploy, "/api/v1/branch-deployments", &create("feature/eur", "deadbeef", "shop")),
    );
    record(
        &mut seen,
        "no repository",
        post(deploy, "/api/v1/branch-deployments", &create("feature/eur", &feature, "nope")),
    );
    record(
        &mut seen,
        "no repository named",
        post(deploy, "/api/v1/branch-deployments", r#"{"branch_name":"x","commit_hash":"abc"}"#),
    );
    assert_eq!(
        record(
            &mut seen,
            "a fetch that fails",
            post(deploy, "/api/v1/branch-deployments", &create("feature/x", &feature, "elsewhere"))
        ),
        502
    );
    record(
        &mut seen,
        "unknown deployment",
        get_raw(&server, "/api/v1/deployments/nope?repository=shop", Some(&bearer(read))),
    );
    record(&mut seen, "unknown run", get_raw(&server, "/api/v1/runs/999", Some(&bearer(read))));
    record(
        &mut seen,
        "unknown asset",
        get_raw(
            &server,
            "/api/v1/deployments/prod/assets/nope?repository=shop",
            Some(&bearer(read)),
        ),
    );
    record(
        &mut seen,
        "bad selection",
        get_raw(
            &server,
            "/api/v1/deployments/prod/select?repository=shop&selection=key%3A(",
            Some(&bearer(read)),
        ),
    );
    record(
        &mut seen,
        "invalid deployment",
        post(admin, "/api/v1/deployments/prod/runs?repository=shop", r#"{"selection":"key:("}"#),
    );
    record(
        &mut seen,
        "close prod",
        post(admin, "/api/v1/deployments/prod/close?repository=shop", ""),
    );
    record(
        &mut seen,
        "a failing revision",
        post(deploy, "/api/v1/branch-deployments", &create("broken", &broken, "shop")),
    );

    // Webhooks: unsigned, badly signed, signed with an API token, the GitLab token of another
    // repository, malformed; then a real pull request whose feedback the forge refuses.
    let pull_request = json!({
        "action": "opened", "number": 7,
        "pull_request": { "number": 7, "html_url": "https://github.com/acme/shop/pull/7", "state": "open", "merged": false,
            "head": { "ref": "feature/eur", "sha": feature, "repo": { "full_name": "acme/shop", "fork": false } },
            "base": { "ref": "main", "sha": main, "repo": { "full_name": "acme/shop" } } },
        "repository": { "full_name": "acme/shop", "clone_url": "https://github.com/acme/shop.git" }
    })
    .to_string();
    let sign = |key: &str, body: &str| {
        offshoot_server::http::hooks::github::signature(key, body.as_bytes())
    };
    let github = |delivery: &str, signature: &str, body: &str| {
        post_raw_text(
            &server,
            "/hooks/github",
            &[
                ("X-GitHub-Event", "pull_request"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", signature),
            ],
            body,
        )
    };
    assert_eq!(
        record(
            &mut seen,
            "unsigned hook",
            post_raw_text(&server, "/hooks/github", &[("X-GitHub-Event", "push")], &pull_request)
        ),
        401
    );
    assert_eq!(
        record(
            &mut seen,
            "hook signed by an API token",
            github("d-1", &sign(admin, &pull_request), &pull_request)
        ),
        401
    );
    assert_eq!(
        record(
            &mut seen,
            "hook with the secret as signature",
            github("d-2", secret("GitHub webhook secret"), &pull_request)
        ),
        401
    );
    record(
        &mut seen,
        "malformed signed hook",
        github("d-3", &sign(secret("GitHub webhook secret"), "{"), "{"),
    );
    let gitlab = |token: &str| {
        post_raw_text(
            &server,
            "/hooks/gitlab",
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", token)],
            "{}",
        )
    };
    assert_eq!(
        record(
            &mut seen,
            "gitlab hook with the GitHub secret",
            gitlab(secret("GitHub webhook secret"))
        ),
        401
    );
    assert_eq!(record(&mut seen, "gitlab hook with an API token", gitlab(admin)), 401);
    record(&mut seen, "gitlab hook, right token, bad body", gitlab(secret("GitLab webhook token")));
    assert_eq!(
        record(
            &mut seen,
            "signed pull request",
            github("d-4", &sign(secret("GitHub webhook secret"), &pull_request), &pull_request)
        ),
        202
    );

    // The branch deploys; a branch run; its feedback is refused by the forge (echoing the token).
    let name = ready_branch(&server, admin, "shop", "feature/eur");
    let (_, run) = post(
        deploy,
        &format!("/api/v1/deployments/{name}/runs?repository=shop"),
        r#"{"selection":"changed_in_branch:ANY+"}"#,
    );
    let run: Value = serde_json::from_str(&run).expect("run");
    let id = run["id"].as_i64().expect("run id");
    let started = Instant::now();
    loop {
        let (_, text) = get_raw(&server, &format!("/api/v1/runs/{id}"), Some(&bearer(read)));
        if ["succeeded", "failed", "canceled"]
            .iter()
            .any(|s| text.contains(&format!("\"status\":\"{s}\",\"error\"")))
            || started.elapsed() > Duration::from_secs(60)
        {
            seen.push(("the run".into(), text));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    while !server.log().contains("pull-request feedback") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no feedback failure was logged:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(*forge_requests.lock().expect("lock") > 0, "the forge was called");
    for path in [
        "/api/v1/deployments?repository=shop&include_closed=true".to_owned(),
        format!("/api/v1/deployments/{name}?repository=shop"),
        format!("/api/v1/deployments/{name}/revisions?repository=shop"),
        format!("/api/v1/deployments/{name}/changes?repository=shop"),
        format!("/api/v1/deployments/{name}/graph?repository=shop"),
        "/api/v1/deployments/broken/revisions?repository=shop".to_owned(),
        "/api/v1/runs?limit=50".to_owned(),
        "/api/v1/openapi.json".to_owned(),
        "/metrics".to_owned(),
        "/".to_owned(),
        "/ui/app.js".to_owned(),
    ] {
        record(&mut seen, &path, get_raw(&server, &path, Some(&bearer(admin))));
    }

    // The CLI: refusals, failures and an unreachable server.
    let cli = |token: &str, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_offshoot"))
            .args(args)
            .env("OFFSHOOT_URL", &server.url)
            .env("OFFSHOOT_API_TOKEN", token)
            .output()
            .expect("runs");
        format!("{}{}", stdout(&output), stderr(&output))
    };
    seen.push((
        "cli: materialize prod as deploy".into(),
        cli(
            deploy,
            &["materialize", "--repository", "shop", "--deployment", "prod", "--select", "key:*"],
        ),
    ));
    seen.push((
        "cli: delete as deploy".into(),
        cli(deploy, &["branch-deployment", "delete", "--repository", "shop", &name]),
    ));
    seen.push(("cli: wrong token".into(), cli(&format!("{admin}-wrong"), &["deployment", "list"])));
    seen.push((
        "cli: list".into(),
        cli(read, &["deployment", "list", "--repository", "shop", "--include-closed"]),
    ));
    seen.push(("cli: run".into(), cli(read, &["runs", "show", &id.to_string()])));
    seen.push((
        "cli: unreachable".into(),
        cli(admin, &["deployment", "list", "--url", &format!("http://127.0.0.1:{dead}")]),
    ));

    // The log at debug level, every answer and every CLI output: no secret, whole or quoted.
    let log = server.log();
    assert!(log.contains("DEBUG"), "the server logged at debug level:\n{log}");
    assert!(log.contains("fetching"), "the failed fetch was logged:\n{log}");
    seen.push(("the server log".into(), log));
    let mut leaks = Vec::new();
    for (where_, text) in &seen {
        for (what, value) in SECRETS {
            // The whole secret, or its distinctive last 8 characters (a cut-off quote).
            let tail = &value[value.len() - 8..];
            for line in text.lines().filter(|line| line.contains(tail)) {
                leaks.push(format!("{what} in {where_}: {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
