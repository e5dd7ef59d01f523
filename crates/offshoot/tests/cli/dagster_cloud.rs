//! The drop-in promise for Dagster+ teams: the real `dagster-cloud` CLI (dagster-cloud-cli,
//! pinned in tests/python/requirements.txt) creates, updates and deletes branch deployments
//! through Offshoot's `/graphql`, with Offshoot's tokens and roles; and what Offshoot does not
//! serve is a GraphQL error that says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::server::wait_for_prod;
use crate::support::*;

const DEPLOY: &str = "deploy-token-2222";
const ADMIN: &str = "admin-token-3333";

fn config(dir: &Path, repo: &Path) -> String {
    format!(
        "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\npublic_reads = false\n\
         api_tokens = [{{ secret = {ADMIN:?}, role = \"admin\" }}, {{ secret = {DEPLOY:?}, role = \"deploy\" }}, {{ secret = {TOKEN:?}, role = \"read\" }}]\n\
         [[repositories]]\nname = \"shop\"\npath = {:?}\nproduction_branch = \"main\"\n",
        dir.join("data").to_str().expect("utf-8"),
        repo.to_str().expect("utf-8"),
    )
}

fn dagster_cloud_binary() -> PathBuf {
    let binary = python_tools().join("bin/dagster-cloud");
    assert!(
        binary.exists(),
        "{} is missing: install tests/python/requirements.txt (it pins dagster-cloud-cli)",
        binary.display()
    );
    binary
}

/// The real `dagster-cloud` with a clean configuration: no ~/.dagster_cloud_cli, no
/// DAGSTER_CLOUD_* from the caller's environment.
fn dagster_cloud(args: &[&str], env: &[(&str, &str)], home: &Path) -> Output {
    let mut command = Command::new(dagster_cloud_binary());
    command.args(args).env("HOME", home).env("DAGSTER_CLOUD_CLI_CONFIG", home.join("config"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DAGSTER_CLOUD_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().expect("dagster-cloud runs")
}

fn graphql(server: &Server, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).build(),
    );
    let mut request =
        agent.post(&format!("{}/graphql", server.url)).header("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.header("Dagster-Cloud-Api-Token", token);
    }
    let mut response = request
        .send(json!({ "query": query, "variables": variables }).to_string())
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn error_code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("?")
}

#[test]
fn the_real_dagster_cloud_cli_creates_updates_and_deletes_branch_deployments() {
    let (dir, repo) = shop_repo("dagster-cloud-cli");
    let server = Server::start_with_config(&dir.0, &config(&dir.0, &repo));
    wait_for_prod(&server, &repo);
    let home = dir.0.join("home");
    std::fs::create_dir_all(&home).expect("home");

    // create-or-update with the flags dagster-cloud's own CI templates pass; it prints the name.
    let first = git(&repo, &["rev-parse", "feature/eur"]);
    let output = dagster_cloud(
        &[
            "branch-deployment",
            "create-or-update",
            "--url",
            &server.url,
            "--api-token",
            DEPLOY,
            "--git-repo-name",
            "shop",
            "--branch-name",
            "feature/eur",
            "--commit-hash",
            &first,
            "--timestamp",
            "1767225600",
            "--branch-url",
            "https://git.example/acme/shop/tree/feature/eur",
            "--pull-request-url",
            "https://git.example/acme/shop/pull/7",
            "--pull-request-id",
            "7",
            "--pull-request-status",
            "OPEN",
            "--commit-message",
            "EUR revenue",
            "--author-name",
            "Test Author",
            "--author-email",
            "test@example.com",
        ],
        &[],
        &home,
    );
    assert!(output.status.success(), "{}\n{}", stderr(&output), server.log());
    let name = stdout(&output).trim().to_owned();
    assert!(
        name.starts_with("feature-eur-"),
        "dagster-cloud prints Offshoot's deployment name: {name:?}"
    );
    let deployment = server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == first);
    assert_eq!(deployment["branch"], "feature/eur");
    assert_eq!(
        deployment["pull_request"],
        json!({"id": "7", "url": "https://git.example/acme/shop/pull/7", "status": "OPEN"})
    );
    assert_eq!(deployment["current_revision"]["changed_count"], 4);

    // The token from DAGSTER_CLOUD_API_TOKEN, as in CI; a second push updates the same deployment.
    std::fs::write(repo.join("extra.txt"), "x").expect("write");
    git(&repo, &["checkout", "-q", "feature/eur"]);
    git(&repo, &["add", "extra.txt"]);
    git(&repo, &["commit", "-q", "-m", "second push"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "main"]);
    let output = dagster_cloud(
        &[
            "branch-deployment",
            "create-or-update",
            "--url",
            &server.url,
            "--git-repo-name",
            "shop",
            "--branch-name",
            "feature/eur",
            "--commit-hash",
            &second,
            "--timestamp",
            "1767225700",
        ],
        &[("DAGSTER_CLOUD_API_TOKEN", DEPLOY)],
        &home,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), name);
    server.wait_for_deployment(&name, "ready at the second push", |d| serving_commit(d) == second);

    // A deploy token never reaches production: not by deploying main, not by deleting.
    let main = git(&repo, &["rev-parse", "main"]);
    let output = dagster_cloud(
        &[
            "branch-deployment",
            "create-or-update",
            "--url",
            &server.url,
            "--api-token",
            DEPLOY,
            "--git-repo-name",
            "shop",
            "--branch-name",
            "main",
            "--commit-hash",
            &main,
            "--timestamp",
            "1767225800",
        ],
        &[],
        &home,
    );
    assert!(!output.status.success(), "a deploy token deployed production: {}", stdout(&output));
    assert!(
        stderr(&output).contains("needs an API token with the `admin` role"),
        "{}",
        stderr(&output)
    );
    let output = dagster_cloud(
        &[
            "branch-deployment",
            "delete",
            "--deployment",
            &name,
            "--url",
            &server.url,
            "--api-token",
            DEPLOY,
        ],
        &[],
        &home,
    );
    assert!(
        !output.status.success() && stderr(&output).contains("`admin` role"),
        "{}",
        stderr(&output)
    );
    server.wait_for_deployment(&name, "still there", |d| d["status"] == "open");

    // Production cannot be deleted: dagster-cloud refuses a non-branch deployment itself, and
    // Offshoot refuses the mutation even for an admin.
    let output = dagster_cloud(
        &[
            "branch-deployment",
            "delete",
            "--deployment",
            "prod",
            "--url",
            &server.url,
            "--api-token",
            ADMIN,
        ],
        &[],
        &home,
    );
    assert!(
        !output.status.success() && stderr(&output).contains("is not a branch deployment"),
        "{}",
        stderr(&output)
    );
    let (_, prod) = graphql(&server, Some(ADMIN), "query($n: String!) { deploymentByName(name: $n) { __typename ... on DagsterCloudDeployment { deploymentId deploymentType } } }", json!({"n": "prod"}));
    assert_eq!(prod["data"]["deploymentByName"]["deploymentType"], "PRODUCTION", "{prod}");
    let prod_id = prod["data"]["deploymentByName"]["deploymentId"].clone();
    let (_, answer) = graphql(
        &server,
        Some(ADMIN),
        "mutation($id: Int!) { deleteDeployment(deploymentId: $id) { __typename } }",
        json!({"id": prod_id}),
    );
    assert_eq!(error_code(&answer), "production_protected", "{answer}");
    server.wait_for_deployment("prod", "still there", |d| serving_commit(d) == main);

    // An admin deletes the branch deployment with dagster-cloud; the server comes from
    // DAGSTER_CLOUD_URL and the token from DAGSTER_CLOUD_API_TOKEN.
    let output = dagster_cloud(
        &["branch-deployment", "delete", "--deployment", &name],
        &[("DAGSTER_CLOUD_URL", &server.url), ("DAGSTER_CLOUD_API_TOKEN", ADMIN)],
        &home,
    );
    assert!(output.status.success(), "{}\n{}", stderr(&output), server.log());
    let (status, _) =
        server.request("GET", &format!("/api/v1/deployments/{name}"), None, Some(ADMIN));
    assert_eq!(status, 404, "the deployment is gone");
}

#[test]
fn the_graphql_api_says_what_it_does_not_implement_and_who_may_call_it() {
    let (dir, repo) = shop_repo("dagster-cloud-graphql");
    let server = Server::start_with_config(&dir.0, &config(&dir.0, &repo));
    wait_for_prod(&server, &repo);

    // An operation dagster-cloud has but Offshoot does not serve: a GraphQL error saying so.
    let (status, answer) =
        graphql(&server, Some(ADMIN), "query { workspaceOrError { __typename } }", json!({}));
    assert_eq!(status, 200);
    assert_eq!(answer["data"], Value::Null, "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Unknown field \"workspaceOrError\" on type \"Query\".")
            && message.contains("Offshoot does not implement"),
        "{message}"
    );
    assert_eq!(error_code(&answer), "not_implemented");

    // Tokens: none, unknown, read (reads only), deploy.
    let list = "query { fullDeployments { deploymentName deploymentType } }";
    let (_, answer) = graphql(&server, None, list, json!({}));
    assert_eq!(error_code(&answer), "unauthorized", "reads are private here: {answer}");
    let (status, answer) = graphql(&server, Some("not-a-token"), list, json!({}));
    assert_eq!((status, error_code(&answer)), (401, "unauthorized"), "{answer}");
    let (_, answer) = graphql(&server, Some(TOKEN), list, json!({}));
    assert_eq!(
        answer["data"]["fullDeployments"],
        json!([{"deploymentName": "prod", "deploymentType": "PRODUCTION"}]),
        "{answer}"
    );
    let create = "mutation($b: CreateOrUpdateBranchDeploymentInput!, $c: DeploymentCommitInput!) { createOrUpdateBranchDeployment(branchData: $b, commit: $c) { __typename ... on DagsterCloudDeployment { deploymentName } } }";
    let sha = git(&repo, &["rev-parse", "feature/eur"]);
    let variables = json!({"b": {"repoName": "shop", "branchName": "feature/eur"}, "c": {"commitHash": sha, "timestamp": 1767225600.0}});
    let (_, answer) = graphql(&server, Some(TOKEN), create, variables.clone());
    assert_eq!(error_code(&answer), "forbidden", "{answer}");
    assert_eq!(answer["errors"][0]["extensions"]["requiredRole"], "deploy", "{answer}");
    let (_, answer) = graphql(&server, Some(DEPLOY), create, variables);
    let name = answer["data"]["createOrUpdateBranchDeployment"]["deploymentName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(name.starts_with("feature-eur-"), "{answer}");
    let (_, answer) = graphql(
        &server,
        Some(TOKEN),
        "query { getBranchDeploymentName(repoName: \"shop\", branchName: \"feature/eur\") }",
        json!({}),
    );
    assert_eq!(answer["data"]["getBranchDeploymentName"], name.as_str(), "{answer}");
    let (_, answer) = graphql(
        &server,
        Some(TOKEN),
        "query { deploymentByName(name: \"nope\") { __typename } }",
        json!({}),
    );
    assert_eq!(
        answer["data"]["deploymentByName"]["__typename"], "DeploymentNotFoundError",
        "{answer}"
    );

    // A snapshot base condition is taken (its effect: `a_snapshot_base_condition_...`).
    let with_condition = "mutation($b: CreateOrUpdateBranchDeploymentInput!, $c: DeploymentCommitInput!) { createOrUpdateBranchDeployment(branchData: $b, commit: $c, snapshotBaseCondition: ON_CREATE) { __typename } }";
    let (_, answer) = graphql(
        &server,
        Some(DEPLOY),
        with_condition,
        json!({"b": {"repoName": "shop", "branchName": "feature/eur"}, "c": {"commitHash": sha, "timestamp": 1.0}}),
    );
    assert_eq!(
        answer["data"]["createOrUpdateBranchDeployment"]["__typename"], "DagsterCloudDeployment",
        "{answer}"
    );
    let (_, deployment) =
        server.request("GET", &format!("/api/v1/deployments/{name}"), None, Some(TOKEN));
    assert_eq!(deployment["snapshot_base"]["condition"], "on-create", "{deployment}");

    // Not a GraphQL request at all.
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).build(),
    );
    let response = agent
        .post(&format!("{}/graphql", server.url))
        .header("Dagster-Cloud-Api-Token", ADMIN)
        .send("not json")
        .expect("answers");
    assert_eq!(response.status().as_u16(), 400);
}

/// Offshoot's own CLI run with only the given environment (no OFFSHOOT_* or DAGSTER_CLOUD_* of
/// the caller's).
fn offshoot_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_offshoot"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("DAGSTER_CLOUD_") || key.starts_with("OFFSHOOT_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().expect("offshoot runs")
}

#[test]
fn offshoots_cli_takes_dagster_clouds_flags_and_variables() {
    // No server configured anywhere: a usage error that says where a URL goes, not a silent default.
    let output = offshoot_with(&["deployment", "list"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stderr(&output).contains("no Offshoot server given: pass --url URL or set OFFSHOOT_URL (DAGSTER_CLOUD_URL is read too)"), "{}", stderr(&output));

    // Every flag of create-or-update says what it does.
    let help = stdout(&offshoot_with(&["branch-deployment", "create-or-update", "--help"], &[]));
    for flag in [
        "--git-repo-name",
        "--branch-name",
        "--commit-hash",
        "--timestamp",
        "--branch-url",
        "--commit-url",
        "--pull-request-url",
        "--pull-request-id",
        "--pull-request-status",
        "--commit-message",
        "--author-name",
        "--author-email",
        "--author-avatar-url",
        "--base-deployment-name",
        "--snapshot-base-condition",
        "--read-git-state",
        "--url",
        "--api-token",
    ] {
        // clap's long help: the flag on its line, its description on the next.
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} is missing:\n{help}"));
        let description = lines.get(at + 1).map_or("", |l| l.trim());
        assert!(
            !description.is_empty() && !description.starts_with('-'),
            "{flag} has no help text:\n{help}"
        );
    }
    assert!(help.contains("[default: prod]") && help.contains("[env: OFFSHOOT_URL="), "{help}");

    let (dir, repo) = shop_repo("dagster-cloud-flags");
    let server = Server::start_with_config(&dir.0, &config(&dir.0, &repo));
    wait_for_prod(&server, &repo);
    let sha = git(&repo, &["rev-parse", "feature/eur"]);
    let create = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "branch-deployment",
            "create-or-update",
            "--git-repo-name",
            "shop",
            "--branch-name",
            "feature/eur",
            "--commit-hash",
            &sha,
        ];
        args.extend_from_slice(extra);
        offshoot_with(&args, env)
    };

    // DAGSTER_CLOUD_URL and DAGSTER_CLOUD_API_TOKEN stand in for OFFSHOOT_*; dagster-cloud's
    // flags, an RFC 3339 timestamp among them, are accepted.
    let dagster_env =
        [("DAGSTER_CLOUD_URL", server.url.as_str()), ("DAGSTER_CLOUD_API_TOKEN", DEPLOY)];
    let output = create(
        &[
            "--timestamp",
            "2026-01-01T01:00:00+01:00",
            "--branch-url",
            "https://git.example/b",
            "--commit-url",
            "https://git.example/c",
            "--author-avatar-url",
            "https://git.example/a.png",
            "--code-review-id",
            "9",
        ],
        &dagster_env,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let name = stdout(&output).trim().to_owned();
    let deployment = server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    assert_eq!(deployment["pull_request"]["id"], "9");

    // OFFSHOOT_* win over DAGSTER_CLOUD_*: a wrong DAGSTER_CLOUD_URL is not used.
    let output = create(
        &["--timestamp", "1767225600"],
        &[
            ("OFFSHOOT_URL", &server.url),
            ("OFFSHOOT_API_TOKEN", DEPLOY),
            ("DAGSTER_CLOUD_URL", "http://127.0.0.1:9"),
            ("DAGSTER_CLOUD_API_TOKEN", "wrong"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    // --read-git-state takes the commit from the repository in the current directory.
    git(&repo, &["checkout", "-q", "feature/eur"]);
    let output = Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args([
            "branch-deployment",
            "create-or-update",
            "--read-git-state",
            "--git-repo-name",
            "shop",
            "--branch-name",
            "feature/eur",
        ])
        .current_dir(&repo)
        .env("OFFSHOOT_URL", &server.url)
        .env("OFFSHOOT_API_TOKEN", DEPLOY)
        .output()
        .expect("offshoot runs");
    git(&repo, &["checkout", "-q", "main"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), name);
    let output = create(&[], &dagster_env);
    assert!(output.status.success());
    let output = offshoot_with(
        &["branch-deployment", "create-or-update", "--branch-name", "feature/eur"],
        &dagster_env,
    );
    assert_eq!(output.status.code(), Some(2), "no commit and no --read-git-state is a usage error");

    // Not a time; not a snapshot base condition.
    let output = create(&["--timestamp", "yesterday"], &dagster_env);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("neither a Unix time in seconds"), "{}", stderr(&output));
    let output = create(&["--snapshot-base-condition", "tip"], &dagster_env);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("on-create, on-update, merge-base"), "{}", stderr(&output));
}

/// Dagster+'s `--snapshot-base-condition` beside Offshoot's merge-base: `on-create` compares the
/// branch with what production served when the deployment was created, for good; `on-update`
/// with what production serves at each update (so main's later changes show up in the branch,
/// as in Dagster+); the default with the base's definitions where the branch forked.
#[test]
fn a_snapshot_base_condition_fixes_or_refreshes_what_a_branch_compares_with() {
    let (dir, repo) = shop_repo("dagster-cloud-snapshot-base");
    let server = Server::start_with_config(&dir.0, &config(&dir.0, &repo));
    let first_main = git(&repo, &["rev-parse", "main"]);
    wait_for_prod(&server, &repo);
    let fork = git(&repo, &["merge-base", "main", "feature/eur"]);
    let branch = git(&repo, &["rev-parse", "feature/eur"]);
    git(&repo, &["branch", "feature/update", "feature/eur"]);
    git(&repo, &["branch", "feature/fork", "feature/eur"]);
    let home = dir.0.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let env = [("DAGSTER_CLOUD_URL", server.url.as_str()), ("DAGSTER_CLOUD_API_TOKEN", DEPLOY)];
    let short = |sha: &str| sha[..12].to_owned();

    // on-create through the real dagster-cloud CLI's own flag.
    let on_create = |home: &Path| {
        let output = dagster_cloud(
            &[
                "branch-deployment",
                "create-or-update",
                "--url",
                &server.url,
                "--git-repo-name",
                "shop",
                "--branch-name",
                "feature/eur",
                "--commit-hash",
                &branch,
                "--timestamp",
                "1767225600",
                "--snapshot-base-condition",
                "on-create",
            ],
            &env,
            home,
        );
        assert!(
            output.status.success(),
            "{}{}\n{}",
            stdout(&output),
            stderr(&output),
            server.log()
        );
        stdout(&output).trim().to_owned()
    };
    let created = on_create(&home);
    // on-update and the default through Offshoot's CLI.
    let offshoot = |branch_name: &str, extra: &[&str]| {
        let mut args = vec![
            "branch-deployment",
            "create-or-update",
            "--branch-name",
            branch_name,
            "--commit-hash",
            &branch,
        ];
        args.extend_from_slice(extra);
        let output = offshoot_with(&args, &env);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).trim().to_owned()
    };
    let updated = offshoot("feature/update", &["--snapshot-base-condition", "on-update"]);
    let forked = offshoot("feature/fork", &[]);

    let base_of = |name: &str, commit: &str| {
        server.wait_for_deployment(name, &format!("ready, compared with {commit}"), |d| {
            serving_commit(d) == branch && d["current_revision"]["base_commit"] == commit
        })
    };
    // Production moved on after the fork (stg_payments): both production bases count it as the
    // branch's change, the merge-base does not.
    let d = base_of(&created, &first_main);
    assert_eq!(
        d["snapshot_base"],
        json!({"condition": "on-create", "commit": first_main, "description": format!("production at creation, {}", short(&first_main))})
    );
    assert_eq!(d["current_revision"]["changed_count"], 5, "{d}");
    let d = base_of(&updated, &first_main);
    assert_eq!(
        d["snapshot_base"]["description"],
        format!("production at last update, {}", short(&first_main))
    );
    assert_eq!(d["current_revision"]["changed_count"], 5, "{d}");
    let d = base_of(&forked, &fork);
    assert_eq!(
        d["snapshot_base"],
        json!({"condition": "merge-base", "commit": fork, "description": format!("merge base {}", short(&fork))})
    );
    assert_eq!(d["current_revision"]["changed_count"], 4, "{d}");

    // Production deploys a new asset.
    let second_main = crate::server::commit_file(
        &repo,
        "main",
        "assets/marts/late_report.sql",
        "SELECT count(*) AS orders FROM fct_orders\n",
        "Late report",
    );
    let (status, answer) = server.request(
        "POST",
        "/api/v1/branch-deployments",
        Some(json!({"branch_name": "main", "commit_hash": second_main})),
        Some(ADMIN),
    );
    assert_eq!(status, 200, "{answer}");
    wait_for_prod(&server, &repo);

    // The same branch commits pushed again: on-update takes production's new revision (the new
    // asset is missing from the branch: REMOVED, as Dagster+ shows it); on-create keeps its base,
    // also when the flag is given again; the condition, once given, stays without the flag.
    assert_eq!(on_create(&home), created);
    assert_eq!(offshoot("feature/update", &[]), updated);
    let d = base_of(&updated, &second_main);
    assert_eq!(
        d["snapshot_base"]["description"],
        format!("production at last update, {}", short(&second_main))
    );
    assert_eq!(d["current_revision"]["changed_count"], 6, "{d}");
    let d = base_of(&created, &first_main);
    assert_eq!(d["snapshot_base"]["commit"], first_main.as_str());
    assert_eq!(d["current_revision"]["changed_count"], 5, "{d}");

    // `deployment status` says it; the REST API refuses a condition it does not know.
    let output = offshoot_with(&["deployment", "status", &updated], &env);
    assert!(
        stdout(&output).contains(&format!(
            "compares with: production at last update, {}",
            short(&second_main)
        )),
        "{}",
        stdout(&output)
    );
    let (status, answer) = server.request(
        "POST",
        "/api/v1/branch-deployments",
        Some(json!({"branch_name": "feature/eur", "commit_hash": branch, "snapshot_base_condition": "tip"})),
        Some(DEPLOY),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`tip` is not on-create, on-update or merge-base"),
        "{answer}"
    );
}

#[test]
fn a_branch_deployment_runs_no_more_runs_at_once_than_its_limit_and_queued_runs_say_why() {
    let (dir, repo) = shop_repo("dagster-cloud-run-limit");
    let server = Server::start(&dir.0, &repo, "max_concurrent_runs_per_branch_deployment = 1");
    wait_for_prod(&server, &repo);
    let slow = crate::server::commit_file(
        &repo,
        "feature/eur",
        "assets/ops/slow_export.toml",
        "command = \"sleep 30\"\n",
        "Slow export",
    );
    let name = crate::server::create_or_update(&server, "feature/eur", &slow);
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == slow);

    let launch = || {
        server.post(
            &format!("/api/v1/deployments/{name}/runs"),
            json!({"selection": "key:slow_export"}),
        )["id"]
            .as_i64()
            .expect("id")
    };
    let first = launch();
    let started = std::time::Instant::now();
    while server.get(&format!("/api/v1/runs/{first}"))["status"] != "running" {
        assert!(started.elapsed().as_secs() < 30, "the first run never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = launch();
    // Several executor passes (one every 2 s at the latest) leave it queued, saying why.
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let queued = server.get(&format!("/api/v1/runs/{second}"));
    assert_eq!(queued["status"], "queued", "{queued:#}");
    assert_eq!(
        queued["waiting_for"],
        "1 runs of this branch deployment are running, its limit (max_concurrent_runs_per_branch_deployment = 1); it starts when one ends"
    );
    let runs = server.get(&format!("/api/v1/runs?deployment={name}"));
    assert!(
        runs.as_array()
            .expect("runs")
            .iter()
            .any(|r| r["id"] == second
                && r["waiting_for"].as_str().is_some_and(|w| w.contains("limit"))),
        "{runs:#}"
    );

    // When the first ends, the second starts.
    server.post(&format!("/api/v1/runs/{first}/cancel"), json!({}));
    assert_eq!(server.wait_for_run(first)["status"], "canceled");
    let started = std::time::Instant::now();
    loop {
        let run = server.get(&format!("/api/v1/runs/{second}"));
        if run["status"] == "running" {
            assert!(run.get("waiting_for").is_none(), "{run:#}");
            break;
        }
        assert!(started.elapsed().as_secs() < 30, "the second run never started: {run:#}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.post(&format!("/api/v1/runs/{second}/cancel"), json!({}));
    assert_eq!(server.wait_for_run(second)["status"], "canceled");
}

/// The step log of the one step of a run of `key:env_probe` in `deployment`.
fn probe(server: &Server, deployment: &str) -> String {
    let run = server.post(
        &format!("/api/v1/deployments/{deployment}/runs"),
        json!({"selection": "key:env_probe"}),
    );
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    run["steps"][0]["log"].as_str().expect("log").to_owned()
}

#[test]
fn variables_and_secrets_reach_the_deployments_of_their_scope_only_and_never_show() {
    let (dir, repo) = shop_repo("dagster-cloud-variables");
    // The probe prints what it got, and the secret's digest (its value itself is redacted).
    let probe_asset = r#"command = '''echo "tier=$SHOP_TIER local=${LOCAL_ONLY:-unset} secret=$SHOP_SECRET"; printf %s "$SHOP_SECRET" | sha256sum; python3 -c "import os, sqlite3; sqlite3.connect(os.environ['OFFSHOOT_WAREHOUSE_URL'].removeprefix('sqlite://')).execute('CREATE TABLE IF NOT EXISTS env_probe (x)')"'''
"#;
    let main = crate::server::commit_file(
        &repo,
        "main",
        "assets/ops/env_probe.toml",
        probe_asset,
        "Env probe",
    );
    git(&repo, &["branch", "feature/one", &main]);
    git(&repo, &["branch", "feature/two", &main]);
    let secret = "s3cr3t-value-42";
    let secret_file = dir.0.join("shop-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
    let variables = format!(
        "[[variables]]\nname = \"SHOP_TIER\"\nscopes = [\"production\"]\nvalue = \"prod-tier\"\n\
         [[variables]]\nname = \"SHOP_TIER\"\nscopes = [\"branches\"]\nvalue = \"branch-tier\"\n\
         [[variables]]\nname = \"SHOP_TIER\"\nscopes = [\"branches\"]\nbranch = \"feature/one\"\nvalue = \"one-tier\"\n\
         [[variables]]\nname = \"SHOP_SECRET\"\nscopes = [\"production\", \"branches\"]\nsecret_file = {:?}\n\
         [[variables]]\nname = \"LOCAL_ONLY\"\nscopes = [\"local\"]\nvalue = \"local's value\"\n",
        secret_file.to_str().expect("utf-8")
    );
    let server = Server::start(&dir.0, &repo, &format!("log_level = \"debug\"\n{variables}"));
    server.wait_for_deployment("prod", "ready at main", |d| serving_commit(d) == main);
    let one = crate::server::create_or_update(&server, "feature/one", &main);
    let two = crate::server::create_or_update(&server, "feature/two", &main);
    server.wait_for_deployment(&one, "ready", |d| serving_commit(d) == main);
    server.wait_for_deployment(&two, "ready", |d| serving_commit(d) == main);

    let expected_digest = {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s '{secret}' | sha256sum"))
            .output()
            .expect("sha256sum");
        stdout(&output).split_whitespace().next().expect("digest").to_owned()
    };
    for (deployment, tier) in
        [("prod", "prod-tier"), (one.as_str(), "one-tier"), (two.as_str(), "branch-tier")]
    {
        let log = probe(&server, deployment);
        assert!(
            log.contains(&format!("tier={tier} local=unset secret=<redacted>")),
            "{deployment}: {log}"
        );
        assert!(log.contains(&expected_digest), "{deployment} got the secret: {log}");
        assert!(!log.contains(secret), "{deployment}: {log}");
    }

    // Never returned by the API or written to the server's log.
    for path in [
        "/api/v1/deployments",
        &format!("/api/v1/deployments/{one}"),
        "/api/v1/runs",
        "/api/v1/openapi.json",
    ] {
        assert!(!server.get(path).to_string().contains(secret), "{path}");
    }
    assert!(!server.log().contains(secret), "the server log shows the secret");

    // Local values for a developer's .env, and only those.
    let output = offshoot_with(
        &["env", "export", "--scope", "local", "--config", server.config.to_str().expect("utf-8")],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "LOCAL_ONLY=\"local's value\"\n");
    let output = offshoot_with(
        &[
            "env",
            "export",
            "--scope",
            "production",
            "--config",
            server.config.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "production values do not leave the server");

    // Mistakes are refused at start-up with what to do.
    let bad = TempDir::new("dagster-cloud-variables-bad");
    std::fs::write(
        bad.0.join("c.toml"),
        "[[variables]]\nname = \"OFFSHOOT_SCHEMA\"\nscopes = [\"branches\"]\nvalue = \"x\"\n",
    )
    .expect("write");
    let output = offshoot_with(
        &[
            "env",
            "export",
            "--scope",
            "local",
            "--config",
            bad.0.join("c.toml").to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(
        stderr(&output).contains("`OFFSHOOT_SCHEMA` is set by Offshoot itself"),
        "{}",
        stderr(&output)
    );
}

/// A run of `env_probe` in `deployment`, launched with an admin token; its step log.
fn probe_as_admin(server: &Server, deployment: &str) -> String {
    let (status, run) = server.request(
        "POST",
        &format!("/api/v1/deployments/{deployment}/runs"),
        Some(json!({"selection": "key:env_probe"})),
        Some(ADMIN),
    );
    assert!(status == 200 || status == 201, "{status} {run}");
    let run = server.wait_for_run(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    run["steps"][0]["log"].as_str().expect("log").to_owned()
}

/// Variables and secrets set with `offshoot env set` (not in any configuration): scoped like
/// Dagster+'s, injected into the runs of matching deployments only, secrets from the CLI's
/// environment or a file and never shown again: not by the CLI, the API, the UI or the server's
/// debug log.
#[test]
fn variables_and_secrets_set_through_the_api_reach_their_scope_only_and_never_show() {
    let (dir, repo) = shop_repo("dagster-cloud-api-variables");
    let probe_asset = r#"command = '''echo "tier=$SHOP_TIER secret=$SHOP_SECRET local=${LOCAL_ONLY:-unset}"; printf %s "$SHOP_SECRET" | sha256sum; python3 -c "import os, sqlite3; sqlite3.connect(os.environ['OFFSHOOT_WAREHOUSE_URL'].removeprefix('sqlite://')).execute('CREATE TABLE IF NOT EXISTS env_probe (x)')"'''
"#;
    let main = crate::server::commit_file(
        &repo,
        "main",
        "assets/ops/env_probe.toml",
        probe_asset,
        "Env probe",
    );
    git(&repo, &["branch", "feature/one", &main]);
    git(&repo, &["branch", "feature/two", &main]);
    let server = Server::start_with_config(
        &dir.0,
        &format!("log_level = \"debug\"\n{}", config(&dir.0, &repo)),
    );
    server.wait_for_deployment("prod", "ready at main", |d| serving_commit(d) == main);
    let admin = [("OFFSHOOT_URL", server.url.as_str()), ("OFFSHOOT_API_TOKEN", ADMIN)];

    let production_secret = "prod-s3cr3t-7781";
    let branch_secret = "branch-s3cr3t-9924";
    let secret_file = dir.0.join("branch-secret");
    std::fs::write(&secret_file, format!("{branch_secret}\n")).expect("secret file");
    let secret_path = secret_file.to_str().expect("utf-8");
    let with_secret_env = [admin[0], admin[1], ("CI_PROD_SECRET", production_secret)];
    for (args, env) in [
        (vec!["SHOP_TIER", "--scope", "production", "--value", "prod-tier"], &admin[..]),
        (vec!["SHOP_TIER", "--scope", "branches", "--value", "branch-tier"], &admin[..]),
        (
            vec![
                "SHOP_TIER",
                "--scope",
                "branches",
                "--branch",
                "feature/one",
                "--value",
                "one-tier",
            ],
            &admin[..],
        ),
        (
            vec!["SHOP_SECRET", "--scope", "production", "--from-env", "CI_PROD_SECRET"],
            &with_secret_env[..],
        ),
        (vec!["SHOP_SECRET", "--scope", "branches", "--from-file", secret_path], &admin[..]),
        (vec!["LOCAL_ONLY", "--scope", "local", "--value", "for laptops"], &admin[..]),
    ] {
        let mut full = vec!["env", "set"];
        full.extend(args);
        let output = offshoot_with(&full, env);
        assert!(output.status.success(), "{full:?}: {}", stderr(&output));
        let printed = format!("{}{}", stdout(&output), stderr(&output));
        assert!(
            !printed.contains(production_secret) && !printed.contains(branch_secret),
            "{printed}"
        );
    }

    // Setting needs admin: a deploy token (every pull request's CI has one) cannot.
    let output = offshoot_with(
        &["env", "set", "SHOP_TIER", "--scope", "branches", "--value", "x"],
        &[("OFFSHOOT_URL", &server.url), ("OFFSHOOT_API_TOKEN", DEPLOY)],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("`admin` role"), "{}", stderr(&output));
    // Names Offshoot sets itself, a branch without the branches scope, a missing source.
    for (args, message) in [
        (
            vec!["OFFSHOOT_SCHEMA", "--scope", "branches", "--value", "x"],
            "is set by Offshoot itself",
        ),
        (
            vec!["X", "--scope", "production", "--branch", "feature/one", "--value", "x"],
            "a branch goes with the `branches` scope only",
        ),
        (
            vec!["X", "--scope", "production", "--from-env", "NOT_SET_ANYWHERE"],
            "the environment has no variable `NOT_SET_ANYWHERE`",
        ),
    ] {
        let mut full = vec!["env", "set"];
        full.extend(args);
        let output = offshoot_with(&full, &admin);
        assert!(!output.status.success(), "{full:?}");
        assert!(stderr(&output).contains(message), "{full:?}: {}", stderr(&output));
    }

    let deploy = |branch: &str| {
        let output = offshoot_with(
            &[
                "branch-deployment",
                "create-or-update",
                "--branch-name",
                branch,
                "--commit-hash",
                &main,
            ],
            &[("OFFSHOOT_URL", &server.url), ("OFFSHOOT_API_TOKEN", DEPLOY)],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let name = stdout(&output).trim().to_owned();
        server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == main);
        name
    };
    let (one, two) = (deploy("feature/one"), deploy("feature/two"));
    let digest = |secret: &str| {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s '{secret}' | sha256sum"))
            .output()
            .expect("sha256sum");
        stdout(&output).split_whitespace().next().expect("digest").to_owned()
    };
    let mut logs = String::new();
    for (deployment, tier, secret) in [
        ("prod", "prod-tier", production_secret),
        (one.as_str(), "one-tier", branch_secret),
        (two.as_str(), "branch-tier", branch_secret),
    ] {
        let log = probe_as_admin(&server, deployment);
        assert!(
            log.contains(&format!("tier={tier} secret=<redacted> local=unset")),
            "{deployment}: {log}"
        );
        assert!(log.contains(&digest(secret)), "{deployment} got its secret: {log}");
        logs.push_str(&log);
    }

    // Unsetting one branch's value: that branch falls back to the value for every branch.
    let output = offshoot_with(
        &["env", "unset", "SHOP_TIER", "--scope", "branches", "--branch", "feature/one"],
        &admin,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(probe_as_admin(&server, &one).contains("tier=branch-tier "));
    let output = offshoot_with(
        &["env", "unset", "SHOP_TIER", "--scope", "branches", "--branch", "feature/one"],
        &admin,
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no variable `SHOP_TIER` was set"), "{}", stderr(&output));

    // Local values go to a developer's .env (a deploy token suffices), and only those.
    let output = offshoot_with(
        &["env", "export", "--scope", "local", "--server"],
        &[("OFFSHOOT_URL", &server.url), ("OFFSHOOT_API_TOKEN", DEPLOY)],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "LOCAL_ONLY='for laptops'\n");

    // Listed by name, scope and branch, never by value.
    let output = offshoot_with(
        &["env", "list"],
        &[("OFFSHOOT_URL", &server.url), ("OFFSHOOT_API_TOKEN", TOKEN)],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let listed = stdout(&output);
    assert!(listed.contains("SHOP_SECRET\tbranches\tshop\tsecret\tapi"), "{listed}");
    assert!(listed.contains("LOCAL_ONLY\tlocal\tshop\tplain\tapi"), "{listed}");
    assert!(!listed.contains("for laptops") && !listed.contains("prod-tier"), "{listed}");

    // The secrets appear nowhere: API answers, the UI's pages, the server's debug log.
    let mut seen = String::new();
    for path in [
        "/api/v1/variables",
        "/api/v1/deployments",
        &format!("/api/v1/deployments/{one}"),
        "/api/v1/runs",
        "/api/v1/openapi.json",
    ] {
        let (status, body) = server.request("GET", path, None, Some(ADMIN));
        assert_eq!(status, 200, "{path}");
        seen.push_str(&body.to_string());
    }
    // The UI is its page and scripts, which render what the API answers.
    for path in ["/", "/ui/app.js"] {
        let mut response = ureq::get(&format!("{}{path}", server.url)).call().expect("the UI");
        seen.push_str(&response.body_mut().read_to_string().expect("text"));
    }
    seen.push_str(&server.log());
    seen.push_str(&logs);
    for secret in [production_secret, branch_secret] {
        assert!(!seen.contains(secret), "{secret} shows somewhere");
    }
    assert!(server.log().contains("variable SHOP_SECRET set for shop (production)"));
}
