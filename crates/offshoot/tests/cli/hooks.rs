//! Webhooks, remote repositories and pull-request feedback, end to end: a real `offshoot serve`
//! receives GitHub and GitLab payloads laid out as the hosts document them, deploys the commits
//! of a real git repository, and writes comments and commit statuses to a fake host API.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const SECRET: &str = "webhook-secret-0123456789";
const API_TOKEN: &str = "forge-api-token-9876543210";

// ---- Sending webhooks -------------------------------------------------------------------------

/// POSTs `body` as it is to `path` with `headers`; (status, JSON answer or Null).
fn post_raw(server: &Server, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, text) = post_raw_text(server, path, headers, body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A GitHub delivery, signed with `secret`.
fn github_signed(
    server: &Server,
    event: &str,
    delivery: &str,
    body: &str,
    secret: &str,
) -> (u16, Value) {
    let signature = offshoot_server::http::hooks::github::signature(secret, body.as_bytes());
    post_raw(
        server,
        "/hooks/github",
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", &signature),
        ],
        body,
    )
}

/// A correctly signed GitHub delivery of `payload`.
fn github(server: &Server, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
    github_signed(server, event, delivery, &payload.to_string(), SECRET)
}

fn gitlab(server: &Server, event: &str, uuid: &str, token: &str, payload: &Value) -> (u16, Value) {
    post_raw(
        server,
        "/hooks/gitlab",
        &[("X-Gitlab-Event", event), ("X-Gitlab-Event-UUID", uuid), ("X-Gitlab-Token", token)],
        &payload.to_string(),
    )
}

// ---- Payloads, following GitHub's and GitLab's documented layouts -----------------------------

fn github_repository(full_name: &str, id: u64) -> Value {
    let (owner, name) = full_name.split_once('/').expect("owner/name");
    json!({
        "id": id, "node_id": "R_kgDOExample", "name": name, "full_name": full_name, "private": false,
        "owner": { "login": owner, "id": id + 1, "type": "Organization" },
        "html_url": format!("https://github.com/{full_name}"),
        "clone_url": format!("https://github.com/{full_name}.git"),
        "ssh_url": format!("git@github.com:{full_name}.git"),
        "git_url": format!("git://github.com/{full_name}.git"),
        "fork": id != 4242, "default_branch": "main", "visibility": "public"
    })
}

/// A `pull_request` event for pull request 7 of acme/shop, from `branch` at `head`.
fn pull_request(action: &str, branch: &str, head: &str) -> Value {
    json!({
        "action": action,
        "number": 7,
        "pull_request": {
            "url": "https://api.github.com/repos/acme/shop/pulls/7",
            "id": 1_000_007, "node_id": "PR_kwDOExample", "number": 7,
            "html_url": "https://github.com/acme/shop/pull/7",
            "state": if action == "closed" { "closed" } else { "open" },
            "locked": false, "draft": false, "title": "EUR revenue",
            "user": { "login": "ana", "id": 7, "type": "User" },
            "merged": false, "merge_commit_sha": null,
            "head": { "label": format!("acme:{branch}"), "ref": branch, "sha": head, "user": { "login": "acme" }, "repo": github_repository("acme/shop", 4242) },
            "base": { "label": "acme:main", "ref": "main", "sha": "0".repeat(40), "user": { "login": "acme" }, "repo": github_repository("acme/shop", 4242) }
        },
        "repository": github_repository("acme/shop", 4242),
        "sender": { "login": "ana", "id": 7, "type": "User" }
    })
}

fn synchronize(branch: &str, before: &str, after: &str) -> Value {
    let mut payload = pull_request("synchronize", branch, after);
    payload["before"] = json!(before);
    payload["after"] = json!(after);
    payload
}

fn closed(branch: &str, head: &str, merged: bool) -> Value {
    let mut payload = pull_request("closed", branch, head);
    payload["pull_request"]["merged"] = json!(merged);
    if merged {
        payload["pull_request"]["merge_commit_sha"] = json!("f".repeat(40));
    }
    payload
}

fn push(reference: &str, before: &str, after: &str, deleted: bool) -> Value {
    json!({
        "ref": reference, "before": before, "after": after,
        "created": false, "deleted": deleted, "forced": false, "base_ref": null,
        "compare": "https://github.com/acme/shop/compare/a...b",
        "commits": [], "head_commit": null,
        "repository": github_repository("acme/shop", 4242),
        "pusher": { "name": "ana", "email": "ana@shop.example" },
        "sender": { "login": "ana", "id": 7, "type": "User" }
    })
}

fn gitlab_project() -> Value {
    json!({
        "id": 42, "name": "shop", "description": "", "namespace": "acme", "visibility_level": 0,
        "web_url": "https://gitlab.example.com/acme/shop",
        "git_ssh_url": "git@gitlab.example.com:acme/shop.git",
        "git_http_url": "https://gitlab.example.com/acme/shop.git",
        "path_with_namespace": "acme/shop", "default_branch": "main",
        "homepage": "https://gitlab.example.com/acme/shop"
    })
}

/// A `Merge Request Hook` for merge request 5 of acme/shop.
fn merge_request(action: &str, branch: &str, head: &str) -> Value {
    json!({
        "object_kind": "merge_request", "event_type": "merge_request",
        "user": { "id": 1, "name": "Ana", "username": "ana" },
        "project": gitlab_project(),
        "repository": { "name": "shop", "url": "git@gitlab.example.com:acme/shop.git", "homepage": "https://gitlab.example.com/acme/shop" },
        "object_attributes": {
            "id": 9005, "iid": 5, "title": "EUR revenue", "action": action,
            "state": match action { "close" => "closed", "merge" => "merged", _ => "opened" },
            "source_branch": branch, "target_branch": "main",
            "source_project_id": 42, "target_project_id": 42,
            "source": gitlab_project(), "target": gitlab_project(),
            "url": "https://gitlab.example.com/acme/shop/-/merge_requests/5",
            "merge_status": "unchecked", "draft": false,
            "last_commit": { "id": head, "message": "EUR revenue", "title": "EUR revenue", "author": { "name": "Ana", "email": "ana@shop.example" } }
        },
        "labels": [], "changes": {}
    })
}

fn gitlab_push(reference: &str, before: &str, after: &str) -> Value {
    json!({
        "object_kind": "push", "event_name": "push", "before": before, "after": after, "ref": reference,
        "ref_protected": true, "checkout_sha": after, "user_id": 1, "user_name": "Ana", "user_username": "ana",
        "project_id": 42, "project": gitlab_project(), "commits": [], "total_commits_count": 0,
        "repository": { "name": "shop", "url": "git@gitlab.example.com:acme/shop.git" }
    })
}

// ---- Looking at the server --------------------------------------------------------------------

fn deployments(server: &Server) -> Vec<Value> {
    server.get("/api/v1/deployments?include_closed=true").as_array().expect("a list").clone()
}

fn branch_deployment(server: &Server, branch: &str) -> Option<Value> {
    deployments(server).into_iter().find(|d| d["branch"] == branch && d["kind"] == "branch")
}

fn wait_until<T>(server: &Server, what: &str, check: impl Fn() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never {what}:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `branch` has a deployment for which `check` holds.
fn wait_for_branch(
    server: &Server,
    branch: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(server, &format!("{branch} {what}"), || {
        branch_deployment(server, branch).filter(|d| check(d))
    })
}

fn revisions(server: &Server, name: &str) -> Vec<Value> {
    server.get(&format!("/api/v1/deployments/{name}/revisions")).as_array().expect("a list").clone()
}

fn wait_for_log(server: &Server, text: &str) {
    wait_until(server, &format!("logged {text:?}"), || server.log().contains(text).then_some(()));
}

fn commit_file(repo: &Path, branch: &str, path: &str, content: &str) -> String {
    git(repo, &["checkout", "-q", branch]);
    let full = repo.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(&full, content).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", &format!("Change {path}")]);
    let sha = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "-q", "main"]);
    sha
}

fn github_repository_keys(repo: &Path, extra: &str) -> String {
    format!("path = {:?}\nforge = \"github\"\nproject = \"acme/shop\"\nwebhook_secret = {SECRET:?}\n{extra}", repo.to_str().expect("utf-8"))
}

fn wait_for_prod(server: &Server, repo: &Path) {
    let main = git(repo, &["rev-parse", "main"]);
    server.wait_for_deployment("prod", "ready at main", |d| serving_commit(d) == main);
}

// ---- GitHub -----------------------------------------------------------------------------------

#[test]
fn github_webhooks_are_authenticated_before_anything_else() {
    let (dir, repo) = shop_repo("hooks-auth");
    let server = Server::start_with_repository(&dir.0, &github_repository_keys(&repo, ""), "");
    wait_for_prod(&server, &repo);
    let head = git(&repo, &["rev-parse", "feature/eur"]);
    let opened = pull_request("opened", "feature/eur", &head).to_string();

    // Missing, wrong-secret, other-body and malformed signatures: 401, and nothing happens.
    let (status, answer) = post_raw(
        &server,
        "/hooks/github",
        &[("X-GitHub-Event", "pull_request"), ("X-GitHub-Delivery", "d-1")],
        &opened,
    );
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unauthorized")), "{answer}");
    let (status, _) = github_signed(&server, "pull_request", "d-2", &opened, "not-the-secret");
    assert_eq!(status, 401);
    let other_body = offshoot_server::http::hooks::github::signature(SECRET, b"{}");
    let headers = [
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", "d-3"),
        ("X-Hub-Signature-256", other_body.as_str()),
    ];
    assert_eq!(post_raw(&server, "/hooks/github", &headers, &opened).0, 401);
    let headers = [
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", "d-4"),
        ("X-Hub-Signature-256", "sha256=not-hex"),
    ];
    assert_eq!(post_raw(&server, "/hooks/github", &headers, &opened).0, 401);
    // A 401 answer names no secret.
    assert!(!answer.to_string().contains(SECRET));

    // Signed but malformed: not JSON, or a pull_request without its head.
    let (status, answer) =
        github_signed(&server, "pull_request", "d-5", "{\"action\": \"opened\",", SECRET);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{answer}"
    );
    let mut headless = pull_request("opened", "feature/eur", &head);
    headless["pull_request"].as_object_mut().expect("object").remove("head");
    assert_eq!(github(&server, "pull_request", "d-6", &headless).0, 400);
    let bad_sha = pull_request("opened", "feature/eur", "not-a-sha; rm -rf /");
    assert_eq!(github(&server, "pull_request", "d-7", &bad_sha).0, 400);
    let control = pull_request("opened", "feature/\u{7}bell", &head);
    assert_eq!(github(&server, "pull_request", "d-8", &control).0, 400);

    // Events and actions that change nothing are accepted and ignored.
    let (status, answer) = github(
        &server,
        "ping",
        "d-9",
        &json!({ "zen": "Keep it logically awesome.", "hook_id": 1, "repository": github_repository("acme/shop", 4242) }),
    );
    assert_eq!((status, answer["status"].as_str()), (200, Some("pong")));
    let (status, answer) = github(
        &server,
        "issues",
        "d-10",
        &json!({ "action": "opened", "repository": github_repository("acme/shop", 4242) }),
    );
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    let (status, answer) =
        github(&server, "pull_request", "d-11", &pull_request("labeled", "feature/eur", &head));
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    let (status, answer) =
        github(&server, "push", "d-12", &push("refs/tags/v1", &"0".repeat(40), &head, false));
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    let mut elsewhere = pull_request("opened", "feature/eur", &head);
    elsewhere["repository"] = github_repository("acme/other", 5151);
    let (status, answer) = github(&server, "pull_request", "d-13", &elsewhere);
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));

    // A fork's pull request is ignored by default, even from a branch named like production.
    let mut fork = pull_request("opened", "main", &head);
    fork["pull_request"]["head"]["label"] = json!("mallory:main");
    fork["pull_request"]["head"]["repo"] = github_repository("mallory/shop", 6666);
    let (status, answer) = github(&server, "pull_request", "d-14", &fork);
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    assert!(answer["detail"].as_str().unwrap_or("").contains("fork"), "{answer}");
    assert!(server.log().contains("comes from a fork"), "{}", server.log());

    // GitLab has no repository configured: every delivery is refused.
    assert_eq!(
        gitlab(
            &server,
            "Merge Request Hook",
            "u-1",
            SECRET,
            &merge_request("open", "feature/eur", &head)
        )
        .0,
        401
    );

    // Nothing of the above created or changed a deployment.
    let all = deployments(&server);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(revisions(&server, "prod").len(), 1);
}

#[test]
fn github_pull_request_lifecycle() {
    let (dir, repo) = shop_repo("hooks-lifecycle");
    let server = Server::start_with_repository(&dir.0, &github_repository_keys(&repo, ""), "");
    wait_for_prod(&server, &repo);
    let first = git(&repo, &["rev-parse", "feature/eur"]);

    // Opened: answered at once, deployed in the background.
    let (status, answer) =
        github(&server, "pull_request", "lc-1", &pull_request("opened", "feature/eur", &first));
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    let deployment = wait_for_branch(&server, "feature/eur", "ready at the first commit", |d| {
        serving_commit(d) == first
    });
    let name = deployment["name"].as_str().expect("name").to_owned();
    assert_eq!(
        deployment["pull_request"],
        json!({ "id": "7", "url": "https://github.com/acme/shop/pull/7", "status": "OPEN" })
    );
    assert_eq!(deployment["current_revision"]["changed_count"], 4);

    // The same delivery again: a no-op.
    let (status, answer) =
        github(&server, "pull_request", "lc-1", &pull_request("opened", "feature/eur", &first));
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");

    // A new commit deploys; then the older head arrives late (a new delivery): recorded as
    // superseded, never serving.
    let second = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/big_orders.sql",
        "SELECT * FROM fct_orders WHERE amount_eur > 100\n",
    );
    assert_eq!(
        github(&server, "pull_request", "lc-2", &synchronize("feature/eur", &first, &second)).0,
        202
    );
    wait_for_branch(&server, "feature/eur", "ready at the second commit", |d| {
        serving_commit(d) == second
    });
    assert_eq!(
        github(
            &server,
            "pull_request",
            "lc-3",
            &synchronize("feature/eur", "0000000000000000000000000000000000000000", &first)
        )
        .0,
        202
    );
    wait_until(&server, "a superseded revision for the late push", || {
        revisions(&server, &name)
            .iter()
            .any(|r| {
                r["status"] == "superseded"
                    && r["commit"]["sha"] == first.as_str()
                    && r["number"] == 3
            })
            .then_some(())
    });
    assert_eq!(serving_commit(&server.get(&format!("/api/v1/deployments/{name}"))), second);
    let before_replay = revisions(&server, &name).len();

    // A stacked pull request, first against main, then retargeted onto feature/eur: change
    // tracking is recomputed against feature/eur's deployment. A title edit changes nothing.
    git(&repo, &["branch", "feature/stacked", &second]);
    let stacked = commit_file(
        &repo,
        "feature/stacked",
        "assets/marts/stacked.sql",
        "SELECT * FROM fct_orders\n",
    );
    let mut opened = pull_request("opened", "feature/stacked", &stacked);
    opened["number"] = json!(8);
    assert_eq!(github(&server, "pull_request", "lc-s1", &opened).0, 202);
    let deployment = wait_for_branch(&server, "feature/stacked", "ready against prod", |d| {
        serving_commit(d) == stacked
    });
    assert_eq!(deployment["current_revision"]["changed_count"], 6);
    let mut title_edit = opened.clone();
    title_edit["action"] = json!("edited");
    title_edit["changes"] = json!({ "title": { "from": "WIP" } });
    assert_eq!(github(&server, "pull_request", "lc-s2", &title_edit).1["status"], "ignored");
    let mut retargeted = title_edit;
    retargeted["pull_request"]["base"]["ref"] = json!("feature/eur");
    retargeted["changes"] =
        json!({ "base": { "ref": { "from": "main" }, "sha": { "from": "0".repeat(40) } } });
    assert_eq!(github(&server, "pull_request", "lc-s3", &retargeted).0, 202);
    let deployment =
        wait_for_branch(&server, "feature/stacked", "redeployed against feature/eur", |d| {
            d["base_deployment"] == name.as_str() && d["current_revision"]["changed_count"] == 1
        });
    assert_eq!(deployment["current_revision"]["commit"]["sha"], stacked.as_str());

    // Closed: the deployment closes. A late synchronize does not reopen it.
    assert_eq!(
        github(&server, "pull_request", "lc-4", &closed("feature/eur", &second, false)).0,
        202
    );
    let deployment = wait_for_branch(&server, "feature/eur", "closed", |d| d["status"] == "closed");
    assert_eq!(deployment["pull_request"]["status"], "CLOSED");
    assert_eq!(deployment["close_reason"], "pull request closed");
    let third = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/bigger_orders.sql",
        "SELECT * FROM fct_orders WHERE amount_eur > 1000\n",
    );
    assert_eq!(
        github(&server, "pull_request", "lc-5", &synchronize("feature/eur", &second, &third)).0,
        202
    );
    wait_for_log(&server, "stays closed until the pull request is reopened");
    assert_eq!(branch_deployment(&server, "feature/eur").expect("deployment")["status"], "closed");
    // The new commit is remembered (reopening deploys it), never deployed while closed.
    let remembered = wait_until(&server, "the new commit recorded", || {
        let list = revisions(&server, &name);
        (list.len() == before_replay + 1).then(|| list[0].clone())
    });
    assert_eq!(
        (remembered["status"].as_str(), remembered["commit"]["sha"].as_str()),
        (Some("superseded"), Some(third.as_str()))
    );
    assert_eq!(branch_deployment(&server, "feature/eur").expect("deployment")["status"], "closed");

    // Reopened: open again and deployed at the head.
    assert_eq!(
        github(&server, "pull_request", "lc-6", &pull_request("reopened", "feature/eur", &third)).0,
        202
    );
    let deployment = wait_for_branch(&server, "feature/eur", "reopened and ready", |d| {
        d["status"] == "open" && serving_commit(d) == third
    });
    assert_eq!(deployment["name"], name.as_str());
    assert_eq!(deployment["pull_request"]["status"], "OPEN");

    // Merged: closed with the merge recorded.
    assert_eq!(
        github(&server, "pull_request", "lc-7", &closed("feature/eur", &third, true)).0,
        202
    );
    let deployment =
        wait_for_branch(&server, "feature/eur", "closed as merged", |d| d["status"] == "closed");
    assert_eq!(deployment["pull_request"]["status"], "MERGED");
    assert_eq!(deployment["close_reason"], "pull request merged");

    // The merged branch is deleted: the pull request stays merged.
    assert_eq!(
        github(
            &server,
            "push",
            "lc-8",
            &push("refs/heads/feature/eur", &third, &"0".repeat(40), true)
        )
        .0,
        202
    );
    wait_for_log(&server, &format!("closed shop/{name}: the branch was deleted"));
    assert_eq!(
        branch_deployment(&server, "feature/eur").expect("deployment")["pull_request"]["status"],
        "MERGED"
    );
}

/// Durable intake: a delivery answered 202 is in the store before the answer, so a SIGKILL right
/// after the answers loses none of them; the restarted server carries out what was left, and a
/// replay of an id it accepted before the crash is still a duplicate.
#[test]
fn accepted_webhooks_survive_a_sigkill_right_after_the_answer() {
    let (dir, repo) = shop_repo("hooks-durable");
    let mut server = Server::start_with_repository(&dir.0, &github_repository_keys(&repo, ""), "");
    wait_for_prod(&server, &repo);
    let head = git(&repo, &["rev-parse", "feature/eur"]);
    let branches: Vec<String> = (0..30).map(|i| format!("durable/{i}")).collect();
    for (i, branch) in branches.iter().enumerate() {
        git(&repo, &["branch", branch, &head]);
        let mut payload = pull_request("opened", branch, &head);
        payload["number"] = json!(100 + i);
        let (status, answer) = github(&server, "pull_request", &format!("durable-{i}"), &payload);
        assert_eq!(status, 202, "{answer}");
    }
    server.kill();
    let existing_at_restart =
        deployments(server_after(&mut server)).iter().filter(|d| d["kind"] == "branch").count();
    for branch in &branches {
        wait_for_branch(&server, branch, "deployed after the restart", |d| {
            serving_commit(d) == head
        });
    }
    println!(
        "{existing_at_restart} of {} branch deployments existed as the restarted server answered",
        branches.len()
    );
    let (status, answer) =
        github(&server, "pull_request", "durable-0", &pull_request("opened", &branches[0], &head));
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
}

/// Restarts a killed server and returns it.
fn server_after(server: &mut Server) -> &Server {
    server.restart();
    server
}

#[test]
fn github_pushes_deploy_production_and_branch_names_are_taken_verbatim() {
    let (dir, repo) = shop_repo("hooks-push");
    let server = Server::start_with_repository(&dir.0, &github_repository_keys(&repo, ""), "");
    wait_for_prod(&server, &repo);

    // A branch name with slashes and non-ASCII characters.
    let branch = "feature/über-straße/☃";
    git(&repo, &["branch", branch, "feature/eur"]);
    let head = commit_file(&repo, branch, "assets/marts/snow.sql", "SELECT * FROM fct_orders\n");
    assert_eq!(
        github(&server, "pull_request", "p-1", &pull_request("opened", branch, &head)).0,
        202
    );
    let deployment = wait_for_branch(&server, branch, "ready", |d| serving_commit(d) == head);
    let name = deployment["name"].as_str().expect("name");
    assert!(name.starts_with("feature-") && name.is_ascii(), "{name}");

    // A push to another branch is left to its pull request.
    let (status, answer) =
        github(&server, "push", "p-2", &push(&format!("refs/heads/{branch}"), &head, &head, false));
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));

    // A push to the production branch redeploys prod.
    let main = commit_file(
        &repo,
        "main",
        "assets/marts/daily_orders.sql",
        "SELECT order_date, count(*) AS orders FROM fct_orders GROUP BY 1\n",
    );
    let before = git(&repo, &["rev-parse", "main~1"]);
    assert_eq!(
        github(&server, "push", "p-3", &push("refs/heads/main", &before, &main, false)).0,
        202
    );
    server.wait_for_deployment("prod", "ready at the new main", |d| serving_commit(d) == main);

    // Deleting the branch closes its deployment; deleting production is ignored.
    assert_eq!(
        github(
            &server,
            "push",
            "p-4",
            &push(&format!("refs/heads/{branch}"), &head, &"0".repeat(40), true)
        )
        .0,
        202
    );
    let deployment = wait_for_branch(&server, branch, "closed", |d| d["status"] == "closed");
    assert_eq!(deployment["close_reason"], "the branch was deleted");
    // Its pull request ended with the branch: shown closed in the API and the CLI.
    assert_eq!(deployment["pull_request"]["status"], "CLOSED", "{deployment:#}");
    let output = crate::server::client(&server, &["deployment", "status", name]);
    assert!(stdout(&output).contains("pull request 7 CLOSED"), "{}", stdout(&output));
    let (status, answer) =
        github(&server, "push", "p-5", &push("refs/heads/main", &main, &"0".repeat(40), true));
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
}

/// Names are exact: a branch literally named `refs/heads/main` (pushed as
/// `refs/heads/refs/heads/main`), one named `refs/heads/feature/eur`, and names that differ from
/// the production branch by case, a trailing slash or space, or Unicode normalisation never
/// touch `prod` or another branch's deployment, through GitHub's and GitLab's webhooks, the API
/// and the CLI.
#[test]
fn hostile_refs_never_touch_production_or_another_branch() {
    let (dir, repo) = shop_repo("hooks-hostile-refs");
    let server = Server::start_with_repository(&dir.0, &github_repository_keys(&repo, ""), "");
    wait_for_prod(&server, &repo);
    let main = git(&repo, &["rev-parse", "main"]);
    let victim_head = git(&repo, &["rev-parse", "feature/eur"]);
    assert_eq!(
        github(
            &server,
            "pull_request",
            "h-0",
            &pull_request("opened", "feature/eur", &victim_head)
        )
        .0,
        202
    );
    let victim =
        wait_for_branch(&server, "feature/eur", "ready", |d| serving_commit(d) == victim_head);

    // The attacker's branches, pushed with plain git.
    git(&repo, &["branch", "attacker", "feature/eur"]);
    let attack = commit_file(&repo, "attacker", "assets/marts/evil.sql", "SELECT 1 AS pwned\n");
    for hostile in ["refs/heads/main", "refs/heads/feature/eur"] {
        git(&repo, &["branch", hostile, &attack]);
    }
    assert_eq!(git(&repo, &["rev-parse", "refs/heads/refs/heads/main"]), attack);

    // GitHub: a push to `refs/heads/refs/heads/main` is a push to a branch, not to production.
    let (status, answer) =
        github(&server, "push", "h-1", &push("refs/heads/refs/heads/main", &main, &attack, false));
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    // A pull request from `refs/heads/feature/eur` gets a deployment of its own.
    let mut from_lookalike = pull_request("opened", "refs/heads/feature/eur", &attack);
    from_lookalike["number"] = json!(8);
    assert_eq!(github(&server, "pull_request", "h-2", &from_lookalike).0, 202);
    let lookalike = wait_for_branch(&server, "refs/heads/feature/eur", "ready", |d| {
        serving_commit(d) == attack
    });
    assert_ne!(lookalike["name"], victim["name"]);
    // Tags and other refs are not branches.
    for reference in ["refs/tags/main", "main", "HEAD", "refs/remotes/origin/main"] {
        let (status, answer) = github(
            &server,
            "push",
            &format!("h-ref-{reference}"),
            &push(reference, &main, &attack, false),
        );
        assert_eq!(
            (status, answer["status"].as_str()),
            (202, Some("ignored")),
            "{reference}: {answer}"
        );
    }

    // The API and the CLI: look-alikes of `main` become branch deployments of their own.
    for lookalike in ["refs/heads/main", "Main", "main/", "main ", " main", "ma\u{0301}in", "MAIN"]
    {
        let body = json!({"branch_name": lookalike, "commit_hash": attack});
        let (status, answer) =
            server.request("POST", "/api/v1/branch-deployments", Some(body), Some(TOKEN));
        assert_eq!(status, 200, "{lookalike:?}: {answer}");
        assert_ne!(answer["name"], "prod", "{lookalike:?}");
        assert_eq!(answer["deployment"]["kind"], "branch", "{lookalike:?}");
        assert_eq!(answer["deployment"]["branch"], lookalike, "shown verbatim");
    }
    let output = crate::server::client(
        &server,
        &[
            "branch-deployment",
            "create-or-update",
            "--branch-name",
            "refs/heads/main",
            "--commit-hash",
            &attack,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(stdout(&output).trim(), "prod");
    // Closing a look-alike closes only its own deployment.
    let (status, _) = server.request(
        "POST",
        "/api/v1/branch-deployments",
        Some(json!({"branch_name": "refs/heads/feature/eur", "commit_hash": attack, "pull_request_status": "CLOSED"})),
        Some(TOKEN),
    );
    assert_eq!(status, 200);
    assert_eq!(
        github(
            &server,
            "push",
            "h-3",
            &push("refs/heads/refs/heads/feature/eur", &attack, &"0".repeat(40), true)
        )
        .0,
        202
    );

    std::thread::sleep(Duration::from_millis(300));
    let prod = server.get("/api/v1/deployments/prod");
    assert_eq!(serving_commit(&prod), main, "prod never moved");
    assert_eq!(
        prod["latest_revision"]["commit"]["sha"],
        main.as_str(),
        "nothing was even queued for prod"
    );
    let victim_now = branch_deployment(&server, "feature/eur").expect("the victim's deployment");
    assert_eq!(
        (victim_now["status"].as_str(), serving_commit(&victim_now)),
        (Some("open"), victim_head.clone()),
        "the victim is untouched"
    );
    assert_eq!(revisions(&server, victim["name"].as_str().expect("name")).len(), 1);

    // GitLab: the same push, on a GitLab-configured server, leaves prod alone.
    let gitlab_dir = TempDir::new("hooks-hostile-refs-gitlab");
    let keys = format!(
        "path = {:?}\nforge = \"gitlab\"\nproject = \"acme/shop\"\nwebhook_secret = {SECRET:?}\n",
        repo.to_str().expect("utf-8")
    );
    let gitlab_server = Server::start_with_repository(&gitlab_dir.0, &keys, "");
    gitlab_server.wait_for_deployment("prod", "ready", |d| serving_commit(d) == main);
    let (status, answer) = gitlab(
        &gitlab_server,
        "Push Hook",
        "gh-1",
        SECRET,
        &gitlab_push("refs/heads/refs/heads/main", &main, &attack),
    );
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    std::thread::sleep(Duration::from_millis(300));
    let prod = gitlab_server.get("/api/v1/deployments/prod");
    assert_eq!(
        prod["latest_revision"]["commit"]["sha"],
        main.as_str(),
        "prod never moved on GitLab either"
    );
}

#[test]
fn remote_repository_is_mirrored_and_fetched_before_each_deploy() {
    let (dir, origin) = shop_repo("hooks-remote");
    let url = format!("file://{}", origin.to_str().expect("utf-8"));
    let keys = format!(
        "url = {url:?}\nforge = \"github\"\nproject = \"acme/shop\"\nwebhook_secret = {SECRET:?}\n"
    );
    let server = Server::start_with_repository(&dir.0, &keys, "");
    let mirror = server.data_dir.join("mirrors/shop.git");
    assert!(mirror.join("HEAD").is_file(), "the mirror is prepared at start");

    // The first event fetches the mirror; prod deploys from it.
    let main = git(&origin, &["rev-parse", "main"]);
    assert_eq!(
        github(&server, "push", "r-1", &push("refs/heads/main", &"0".repeat(40), &main, false)).0,
        202
    );
    server.wait_for_deployment("prod", "ready from the mirror", |d| serving_commit(d) == main);

    let first = git(&origin, &["rev-parse", "feature/eur"]);
    assert_eq!(
        github(&server, "pull_request", "r-2", &pull_request("opened", "feature/eur", &first)).0,
        202
    );
    wait_for_branch(&server, "feature/eur", "ready", |d| serving_commit(d) == first);

    // A commit that exists only in the origin: fetched, then deployed.
    let second = commit_file(
        &origin,
        "feature/eur",
        "assets/marts/remote_only.sql",
        "SELECT * FROM fct_orders\n",
    );
    assert_eq!(
        github(&server, "pull_request", "r-3", &synchronize("feature/eur", &first, &second)).0,
        202
    );
    wait_for_branch(&server, "feature/eur", "ready at the fetched commit", |d| {
        serving_commit(d) == second
    });
    assert_eq!(git(&mirror, &["rev-parse", "refs/heads/feature/eur"]), second);

    // A branch deleted in the origin is pruned from the mirror on the next fetch.
    git(&origin, &["branch", "-q", "-D", "broken"]);
    let newer_main =
        commit_file(&origin, "main", "assets/marts/more.sql", "SELECT * FROM fct_orders\n");
    assert_eq!(
        github(&server, "push", "r-4", &push("refs/heads/main", &main, &newer_main, false)).0,
        202
    );
    server.wait_for_deployment("prod", "ready at the newer main", |d| {
        serving_commit(d) == newer_main
    });
    let branches = git(&mirror, &["branch", "--list"]);
    assert!(!branches.contains("broken"), "{branches}");
}

// ---- Pull-request feedback --------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A fake GitHub/GitLab REST API on 127.0.0.1: lists, creates and edits comments (notes), takes
/// commit statuses, and records every request.
struct FakeForge {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeForge {
    fn start() -> FakeForge {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = requests.clone();
        std::thread::spawn(move || {
            let mut comments: Vec<(u64, String)> = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else { continue };
                let (status, answer) = respond(&request, &mut comments);
                recorded.lock().expect("lock").push(request);
                let text = answer.to_string();
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeForge { url, requests }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    fn wait_for(
        &self,
        server: &Server,
        what: &str,
        check: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        wait_until(server, what, || {
            let requests = self.requests();
            check(&requests).then_some(requests)
        })
    }
}

fn read_request(stream: &std::net::TcpStream) -> Option<Recorded> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn respond(request: &Recorded, comments: &mut Vec<(u64, String)>) -> (u16, Value) {
    let path = request.path.split('?').next().unwrap_or("");
    let listing = |comments: &Vec<(u64, String)>| {
        json!(comments
            .iter()
            .map(
                |(id, body)| json!({ "id": id, "body": body, "user": { "login": "offshoot-bot" } })
            )
            .collect::<Vec<_>>())
    };
    match request.method.as_str() {
        "GET" if path.ends_with("/comments") || path.ends_with("/notes") => {
            (200, listing(comments))
        }
        "POST" if path.ends_with("/comments") || path.ends_with("/notes") => {
            let id = 9000 + comments.len() as u64;
            let body = request.body["body"].as_str().unwrap_or("").to_owned();
            comments.push((id, body.clone()));
            (201, json!({ "id": id, "body": body }))
        }
        "PATCH" | "PUT" => {
            let id: u64 = path.rsplit('/').next().and_then(|id| id.parse().ok()).unwrap_or(0);
            match comments.iter_mut().find(|(known, _)| *known == id) {
                Some(comment) => {
                    comment.1 = request.body["body"].as_str().unwrap_or("").to_owned();
                    (200, json!({ "id": id, "body": comment.1 }))
                }
                None => (404, json!({ "message": "Not Found" })),
            }
        }
        "POST" if path.contains("/statuses/") => {
            (201, json!({ "id": 1, "state": request.body["state"] }))
        }
        _ => (404, json!({ "message": "Not Found" })),
    }
}

fn is(request: &Recorded, method: &str, path_part: &str) -> bool {
    request.method == method && request.path.contains(path_part)
}

#[test]
fn github_feedback_is_one_comment_edited_in_place_and_a_commit_status() {
    let forge = FakeForge::start();
    let (dir, repo) = shop_repo("hooks-feedback");
    let extra = format!("api_url = {:?}\ntoken = {API_TOKEN:?}\n", forge.url);
    let server = Server::start_with_repository(
        &dir.0,
        &github_repository_keys(&repo, &extra),
        "public_url = \"https://offshoot.example\"\n",
    );
    wait_for_prod(&server, &repo);
    let first = git(&repo, &["rev-parse", "feature/eur"]);

    assert_eq!(
        github(&server, "pull_request", "f-1", &pull_request("opened", "feature/eur", &first)).0,
        202
    );
    let deployment =
        wait_for_branch(&server, "feature/eur", "ready", |d| serving_commit(d) == first);
    let name = deployment["name"].as_str().expect("name").to_owned();
    let requests =
        forge.wait_for(&server, "a comment and a status for the first commit", |requests| {
            requests.iter().any(|r| is(r, "POST", "/repos/acme/shop/issues/7/comments"))
                && requests.iter().any(|r| is(r, "POST", &format!("/statuses/{first}")))
        });
    let created = requests.iter().find(|r| is(r, "POST", "/issues/7/comments")).expect("created");
    let body = created.body["body"].as_str().expect("body");
    assert!(body.starts_with(&format!("<!-- offshoot:deployment={name} -->")), "{body}");
    assert!(body.contains("is ready"), "{body}");
    assert!(body.contains(&format!("https://offshoot.example/#/d/shop/{name}")), "{body}");
    assert!(body.contains("**1 new, 2 changed, 1 removed, 2 impacted downstream**"), "{body}");
    assert!(body.contains("| [`fct_orders`](") && body.contains("CODE_VERSION"), "{body}");
    assert!(body.contains("REMOVED") && body.contains("NEW"), "{body}");
    let status = requests
        .iter()
        .find(|r| is(r, "POST", &format!("/repos/acme/shop/statuses/{first}")))
        .expect("status");
    assert_eq!(status.body["state"], "success");
    assert_eq!(status.body["context"], "offshoot");
    assert_eq!(status.body["target_url"], format!("https://offshoot.example/#/d/shop/{name}"));
    assert_eq!(
        status.headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {API_TOKEN}").as_str())
    );

    // A second push: the same comment is edited, a status is posted for the new commit.
    let second = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/big_orders.sql",
        "SELECT * FROM fct_orders WHERE amount_eur > 100\n",
    );
    assert_eq!(
        github(&server, "pull_request", "f-2", &synchronize("feature/eur", &first, &second)).0,
        202
    );
    let requests = forge.wait_for(
        &server,
        "the comment edited and a status for the second commit",
        |requests| {
            requests.iter().any(|r| is(r, "PATCH", "/repos/acme/shop/issues/comments/9000"))
                && requests.iter().any(|r| is(r, "POST", &format!("/statuses/{second}")))
        },
    );
    let edited = requests.iter().find(|r| is(r, "PATCH", "/issues/comments/9000")).expect("edited");
    assert!(
        edited.body["body"]
            .as_str()
            .expect("body")
            .contains("**2 new, 2 changed, 1 removed, 2 impacted downstream**"),
        "{}",
        edited.body
    );
    assert_eq!(
        requests.iter().filter(|r| is(r, "POST", "/comments")).count(),
        1,
        "one comment only: {requests:#?}"
    );

    // A failing revision: the comment says so, the status is a failure.
    let broken = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/broken.sql",
        "SELECT order_id FROM\nWHERE 1\n",
    );
    assert_eq!(
        github(&server, "pull_request", "f-3", &synchronize("feature/eur", &second, &broken)).0,
        202
    );
    let requests = forge.wait_for(&server, "a failure status", |requests| {
        requests.iter().any(|r| is(r, "POST", &format!("/statuses/{broken}")))
    });
    let failure =
        requests.iter().find(|r| is(r, "POST", &format!("/statuses/{broken}"))).expect("status");
    assert_eq!(failure.body["state"], "failure");
    let last_edit =
        requests.iter().rfind(|r| is(r, "PATCH", "/issues/comments/9000")).expect("edited");
    let body = last_edit.body["body"].as_str().expect("body");
    assert!(body.contains("failed") && body.contains("assets/marts/broken.sql:"), "{body}");
    assert!(body.contains("Still serving revision 2"), "{body}");
    assert_eq!(requests.iter().filter(|r| is(r, "POST", "/comments")).count(), 1);

    // After a branch run, the comment gets the data changes of what the branch built.
    crate::server::seed_production(&server);
    let run = server.post("/api/v1/deployments/prod/runs", json!({"selection": "key:*"}));
    assert_eq!(
        server.wait_for_run(run["id"].as_i64().expect("id"))["status"],
        "succeeded",
        "{}",
        server.log()
    );
    let run = server
        .post(&format!("/api/v1/deployments/{name}/runs"), json!({"selection": "key:fct_orders"}));
    assert_eq!(
        server.wait_for_run(run["id"].as_i64().expect("id"))["status"],
        "succeeded",
        "{}",
        server.log()
    );
    let requests = forge.wait_for(&server, "the comment edited with data changes", |requests| {
        requests.iter().any(|r| {
            is(r, "PATCH", "/issues/comments/9000")
                && r.body["body"].as_str().is_some_and(|b| b.contains("**Data changes**"))
        })
    });
    let with_diffs =
        requests.iter().rfind(|r| is(r, "PATCH", "/issues/comments/9000")).expect("edited");
    let body = with_diffs.body["body"].as_str().expect("body");
    assert!(
        body.contains(
            "| Asset | Rows (production → branch) | Added | Removed | Changed | Columns |"
        ),
        "{body}"
    );
    assert!(body.contains("| `fct_orders` |"), "{body}");

    // The token never reaches the log.
    assert!(
        !server.log().contains(API_TOKEN) && !server.log().contains(SECRET),
        "{}",
        server.log()
    );
}

// ---- GitLab -----------------------------------------------------------------------------------

#[test]
fn gitlab_merge_requests_pushes_and_notes() {
    let forge = FakeForge::start();
    let (dir, repo) = shop_repo("hooks-gitlab");
    let keys = format!(
        "path = {:?}\nforge = \"gitlab\"\nproject = \"acme/shop\"\nwebhook_secret = {SECRET:?}\napi_url = {:?}\ntoken = {API_TOKEN:?}\n",
        repo.to_str().expect("utf-8"),
        forge.url
    );
    let server = Server::start_with_repository(&dir.0, &keys, "");
    wait_for_prod(&server, &repo);
    let first = git(&repo, &["rev-parse", "feature/eur"]);
    let open = merge_request("open", "feature/eur", &first);

    // Token checks, malformed bodies, unknown events.
    assert_eq!(
        post_raw(
            &server,
            "/hooks/gitlab",
            &[("X-Gitlab-Event", "Merge Request Hook")],
            &open.to_string()
        )
        .0,
        401
    );
    assert_eq!(gitlab(&server, "Merge Request Hook", "g-0", "wrong-token", &open).0, 401);
    let headers = [("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", SECRET)];
    assert_eq!(post_raw(&server, "/hooks/gitlab", &headers, "[1, 2").0, 400);
    assert_eq!(
        gitlab(
            &server,
            "Merge Request Hook",
            "g-00",
            SECRET,
            &json!({ "object_kind": "merge_request" })
        )
        .0,
        400
    );
    let (status, answer) =
        gitlab(&server, "Pipeline Hook", "g-000", SECRET, &json!({ "object_kind": "pipeline" }));
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    assert_eq!(deployments(&server).len(), 1);

    // Opened: deployed, with one note and a commit status.
    let (status, answer) = gitlab(&server, "Merge Request Hook", "g-1", SECRET, &open);
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    let deployment =
        wait_for_branch(&server, "feature/eur", "ready", |d| serving_commit(d) == first);
    let name = deployment["name"].as_str().expect("name").to_owned();
    assert_eq!(
        deployment["pull_request"]["url"],
        "https://gitlab.example.com/acme/shop/-/merge_requests/5"
    );
    assert_eq!(
        gitlab(&server, "Merge Request Hook", "g-1", SECRET, &open).1["status"],
        "duplicate"
    );
    let requests = forge.wait_for(&server, "a note and a status", |requests| {
        requests.iter().any(|r| is(r, "POST", "/projects/acme%2Fshop/merge_requests/5/notes"))
            && requests
                .iter()
                .any(|r| is(r, "POST", &format!("/projects/acme%2Fshop/statuses/{first}")))
    });
    let status = requests.iter().find(|r| is(r, "POST", "/statuses/")).expect("status");
    assert_eq!(
        (status.body["state"].as_str(), status.body["name"].as_str()),
        (Some("success"), Some("offshoot"))
    );
    assert_eq!(status.headers.get("private-token").map(String::as_str), Some(API_TOKEN));
    let note = requests.iter().find(|r| is(r, "POST", "/notes")).expect("note");
    assert!(note.body["body"]
        .as_str()
        .expect("body")
        .starts_with(&format!("<!-- offshoot:deployment={name} -->")));

    // An update without new commits is ignored; with `oldrev` it deploys, and the note is edited.
    let (status, answer) = gitlab(
        &server,
        "Merge Request Hook",
        "g-2",
        SECRET,
        &merge_request("update", "feature/eur", &first),
    );
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    let second = commit_file(
        &repo,
        "feature/eur",
        "assets/marts/big_orders.sql",
        "SELECT * FROM fct_orders WHERE amount_eur > 100\n",
    );
    let mut update = merge_request("update", "feature/eur", &second);
    update["object_attributes"]["oldrev"] = json!(first);
    assert_eq!(gitlab(&server, "Merge Request Hook", "g-3", SECRET, &update).0, 202);
    wait_for_branch(&server, "feature/eur", "ready at the second commit", |d| {
        serving_commit(d) == second
    });
    let requests = forge.wait_for(&server, "the note edited in place", |requests| {
        requests.iter().any(|r| is(r, "PUT", "/projects/acme%2Fshop/merge_requests/5/notes/9000"))
            && requests.iter().any(|r| is(r, "POST", &format!("/statuses/{second}")))
    });
    assert_eq!(requests.iter().filter(|r| is(r, "POST", "/notes")).count(), 1);

    // Close, reopen, merge.
    assert_eq!(
        gitlab(
            &server,
            "Merge Request Hook",
            "g-4",
            SECRET,
            &merge_request("close", "feature/eur", &second)
        )
        .0,
        202
    );
    wait_for_branch(&server, "feature/eur", "closed", |d| {
        d["status"] == "closed" && d["pull_request"]["status"] == "CLOSED"
    });
    assert_eq!(
        gitlab(
            &server,
            "Merge Request Hook",
            "g-5",
            SECRET,
            &merge_request("reopen", "feature/eur", &second)
        )
        .0,
        202
    );
    wait_for_branch(&server, "feature/eur", "reopened", |d| {
        d["status"] == "open" && serving_commit(d) == second
    });
    assert_eq!(
        gitlab(
            &server,
            "Merge Request Hook",
            "g-6",
            SECRET,
            &merge_request("merge", "feature/eur", &second)
        )
        .0,
        202
    );
    wait_for_branch(&server, "feature/eur", "merged", |d| {
        d["status"] == "closed" && d["pull_request"]["status"] == "MERGED"
    });

    // A fork's merge request is ignored by default.
    let mut fork = merge_request("open", "main", &first);
    fork["object_attributes"]["source_project_id"] = json!(77);
    let (status, answer) = gitlab(&server, "Merge Request Hook", "g-7", SECRET, &fork);
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));

    // A push to main deploys prod.
    let main = commit_file(
        &repo,
        "main",
        "assets/marts/daily_orders.sql",
        "SELECT order_date, count(*) AS orders FROM fct_orders GROUP BY 1\n",
    );
    assert_eq!(
        gitlab(&server, "Push Hook", "g-8", SECRET, &gitlab_push("refs/heads/main", &first, &main))
            .0,
        202
    );
    server.wait_for_deployment("prod", "ready at the new main", |d| serving_commit(d) == main);
}

// ---- Bodies and load --------------------------------------------------------------------------

/// An answer read off a raw connection.
struct RawAnswer {
    status: u16,
    head: String,
    body: Value,
}

/// Sends a request head on a fresh connection and reads the answer without sending any of the
/// body: an answer proves the server decided without reading it. (Sending part of it would make
/// the server's close a reset that can destroy the answer in flight.) `None` when no answer comes within `wait`.
fn answer_without_the_body(
    server: &Server,
    path: &str,
    headers: &[(&str, String)],
    wait: Duration,
) -> Option<RawAnswer> {
    let mut stream =
        std::net::TcpStream::connect(server.url.trim_start_matches("http://")).expect("connect");
    send_head(&mut stream, path, headers);
    read_answer(&stream, wait)
}

fn send_head(stream: &mut std::net::TcpStream, path: &str, headers: &[(&str, String)]) {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write the head");
}

fn read_answer(stream: &std::net::TcpStream, wait: Duration) -> Option<RawAnswer> {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(RawAnswer { status, head, body: serde_json::from_slice(&body).unwrap_or(Value::Null) })
}

/// A signature that is well-formed (so the body must be read to check it) but wrong.
fn forged_signature() -> String {
    format!("sha256={}", "ab".repeat(32))
}

fn peak_rss_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("the server's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// Two repositories on one server, one per forge: `shop` takes GitHub webhooks, `lab` GitLab's.
fn two_forges_config(dir: &Path, repo: &Path) -> String {
    let path = repo.to_str().expect("utf-8");
    format!(
        "data_dir = {data:?}\nlisten = \"127.0.0.1:0\"\napi_tokens = [{TOKEN:?}]\n\
         [[repositories]]\nname = \"shop\"\nproduction_branch = \"main\"\npath = {path:?}\nforge = \"github\"\nproject = \"acme/shop\"\nwebhook_secret = {SECRET:?}\n\
         [[repositories]]\nname = \"lab\"\nproduction_branch = \"main\"\npath = {path:?}\nforge = \"gitlab\"\nproject = \"15\"\nwebhook_secret = {SECRET:?}\n",
        data = dir.join("data").to_str().expect("utf-8"),
    )
}

/// Waits until both repositories of [`two_forges_config`] serve `main` in prod.
fn wait_for_both_prods(server: &Server, repo: &Path) {
    let main = git(repo, &["rev-parse", "main"]);
    for repository in ["shop", "lab"] {
        server.wait_for_deployment(
            &format!("prod?repository={repository}"),
            "ready at main",
            |d| serving_commit(d) == main,
        );
    }
}

/// Oversized bodies get 413 and unauthenticated ones 401 before the server has read them (the
/// answer arrives while the client still holds the body back), GitHub's signature is checked on
/// a streamed body, excess requests and bodies beyond the budget get 503 with Retry-After at
/// once instead of queuing, and the server answers normally afterwards.
#[test]
fn webhook_bodies_are_bounded_and_refused_before_they_are_read() {
    let (dir, repo) = shop_repo("hooks-bodies");
    let server = Server::start_with_config(&dir.0, &two_forges_config(&dir.0, &repo));
    wait_for_both_prods(&server, &repo);
    let wait = Duration::from_secs(10);
    let mb = 1024 * 1024;
    let github_headers = |signature: Option<String>, length: usize| {
        let mut headers = vec![
            ("X-GitHub-Event", "push".to_owned()),
            ("X-GitHub-Delivery", "b-1".to_owned()),
            ("Content-Length", length.to_string()),
        ];
        headers.extend(signature.map(|s| ("X-Hub-Signature-256", s)));
        headers
    };

    // GitHub, unsigned or with a malformed signature: 401 from the head alone.
    for signature in [None, Some("sha256=not-hex".to_owned()), Some("sha1=0123".to_owned())] {
        let answer = answer_without_the_body(
            &server,
            "/hooks/github",
            &github_headers(signature.clone(), 20 * mb),
            wait,
        )
        .expect("an answer before the body");
        assert_eq!(
            (answer.status, answer.body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{signature:?}: {}",
            answer.body
        );
    }
    // Declared larger than 25 MB: 413 from the head alone, even with a signature to check.
    let answer = answer_without_the_body(
        &server,
        "/hooks/github",
        &github_headers(Some(forged_signature()), 26 * mb),
        wait,
    )
    .expect("an answer before the body");
    assert_eq!(
        (answer.status, answer.body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        answer.body
    );
    // Streamed without a length: read (and hashed) up to the cap, refused as it passes it.
    let mut stream =
        std::net::TcpStream::connect(server.url.trim_start_matches("http://")).expect("connect");
    let headers = [
        ("X-GitHub-Event", "push".to_owned()),
        ("X-Hub-Signature-256", forged_signature()),
        ("Transfer-Encoding", "chunked".to_owned()),
    ];
    send_head(&mut stream, "/hooks/github", &headers);
    let chunk = vec![b' '; mb];
    for _ in 0..25 {
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).expect("chunk size");
        stream.write_all(&chunk).expect("chunk");
        stream.write_all(b"\r\n").expect("chunk end");
    }
    stream.write_all(b"1\r\n ").expect("the byte past the cap");
    let answer = read_answer(&stream, Duration::from_secs(60)).expect("an answer at the cap");
    assert_eq!(answer.status, 413, "{}", answer.body);
    drop(stream);

    // GitLab: a wrong or missing token is refused before the body is read at all.
    for token in [None, Some("wrong-token")] {
        let mut headers = vec![
            ("X-Gitlab-Event", "Push Hook".to_owned()),
            ("Content-Length", (20 * mb).to_string()),
        ];
        headers.extend(token.map(|t| ("X-Gitlab-Token", t.to_owned())));
        let answer = answer_without_the_body(&server, "/hooks/gitlab", &headers, wait)
            .expect("an answer before the body");
        assert_eq!(answer.status, 401, "{token:?}: {}", answer.body);
    }
    let headers = [
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", SECRET.to_owned()),
        ("Content-Length", (26 * mb).to_string()),
    ];
    assert_eq!(
        answer_without_the_body(&server, "/hooks/gitlab", &headers, wait)
            .expect("an answer")
            .status,
        413
    );

    // 32 requests whose bodies are slow to come hold every slot: the next is refused at once.
    // Each attempt opens its holders afresh (a loaded machine may answer a probe slowly, and a
    // holder's slot ends with the 30 s body timeout), and waits a moment for the server to
    // admit them before the probe.
    let probe = |length: usize| {
        answer_without_the_body(
            &server,
            "/hooks/github",
            &github_headers(Some(forged_signature()), length),
            Duration::from_secs(10),
        )
    };
    let busy = wait_until(&server, "a request refused while every slot is held", || {
        let holders: Vec<std::net::TcpStream> = (0..32)
            .map(|_| {
                let mut stream =
                    std::net::TcpStream::connect(server.url.trim_start_matches("http://"))
                        .expect("connect");
                send_head(
                    &mut stream,
                    "/hooks/github",
                    &github_headers(Some(forged_signature()), 1000),
                );
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let answer = probe(0).filter(|a| a.status == 503);
        drop(holders);
        answer
    });
    assert_eq!(busy.body["error"]["code"], "webhooks_busy", "{}", busy.body);
    assert!(busy.head.to_ascii_lowercase().contains("retry-after: 1"), "{}", busy.head);
    // Freed as their connections go; a small forged delivery is read and refused again.
    wait_until(&server, "the slots freed", || probe(0).filter(|a| a.status == 401));

    // Two 25 MB bodies being read hold most of the 64 MB budget: a third is refused at once.
    // (Each attempt opens its holders afresh: one opened while an earlier connection still held
    // its slot was refused, and holds nothing.)
    let busy = wait_until(&server, "a body refused beyond the budget", || {
        let holders: Vec<std::net::TcpStream> = (0..2)
            .map(|_| {
                let mut stream =
                    std::net::TcpStream::connect(server.url.trim_start_matches("http://"))
                        .expect("connect");
                send_head(
                    &mut stream,
                    "/hooks/github",
                    &github_headers(Some(forged_signature()), 25 * mb),
                );
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let answer = probe(20 * mb).filter(|a| {
            a.status == 503 && a.body["error"]["message"].as_str().unwrap_or("").contains("bodies")
        });
        drop(holders);
        answer
    });
    assert_eq!(busy.body["error"]["code"], "webhooks_busy", "{}", busy.body);
    wait_until(&server, "the budget given back", || probe(0).filter(|a| a.status == 401));

    // The server still answers: a signed delivery, and the API.
    let (status, answer) = github(
        &server,
        "ping",
        "b-ping",
        &json!({ "zen": "Design for failure.", "repository": github_repository("acme/shop", 4242) }),
    );
    assert_eq!((status, answer["status"].as_str()), (200, Some("pong")), "{answer}");
    assert_eq!(server.get("/api/v1/deployments").as_array().map(Vec::len), Some(2));
    // Nothing above held more than a few bodies' worth of memory.
    let peak = peak_rss_kb(&server);
    println!("server VmHWM after the oversized and refused bodies: {} MB", peak / 1024);
    assert!(peak < 256 * 1024, "VmHWM {peak} kB");
}

/// A published forge payload from tests/fixtures/forges (its README cites the sources).
fn fixture_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forges").join(name)
}

/// GitLab's own published push payloads (tests/fixtures/forges), re-pointed at the test
/// repository: the "Webhook events" example with `project.id`, and the one whose `project` has
/// only the top-level `project_id`.
#[test]
fn gitlab_published_push_examples_are_accepted_with_or_without_project_id() {
    let (dir, repo) = shop_repo("hooks-gitlab-published");
    let keys = format!(
        "path = {:?}\nforge = \"gitlab\"\nproject = \"15\"\nwebhook_secret = {SECRET:?}\n",
        repo.to_str().expect("utf-8")
    );
    let server = Server::start_with_repository(&dir.0, &keys, "");
    wait_for_prod(&server, &repo);
    let fixture = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(fixture_path(name)).expect("fixture"))
            .expect("JSON")
    };
    let repoint = |mut payload: Value, before: &str, after: &str| {
        payload["ref"] = json!("refs/heads/main");
        payload["before"] = json!(before);
        payload["after"] = json!(after);
        payload["checkout_sha"] = json!(after);
        payload
    };

    let before = git(&repo, &["rev-parse", "main"]);
    let first =
        commit_file(&repo, "main", "assets/marts/published_one.sql", "SELECT * FROM fct_orders\n");
    let published = repoint(fixture("gitlab-push-hook.json"), &before, &first);
    assert_eq!(published["project"]["id"], 15);
    let (status, answer) = gitlab(&server, "Push Hook", "pub-1", SECRET, &published);
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    server.wait_for_deployment("prod", "ready at the first push", |d| serving_commit(d) == first);

    let second =
        commit_file(&repo, "main", "assets/marts/published_two.sql", "SELECT * FROM fct_orders\n");
    let only_top_level = repoint(fixture("gitlab-system-hook-push.json"), &first, &second);
    assert!(only_top_level["project"].get("id").is_none() && only_top_level["project_id"] == 15);
    let (status, answer) = gitlab(&server, "Push Hook", "pub-2", SECRET, &only_top_level);
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    server.wait_for_deployment("prod", "ready at the second push", |d| serving_commit(d) == second);

    // Another project's push (by the top-level id) is not this repository's.
    let mut elsewhere = repoint(fixture("gitlab-system-hook-push.json"), &second, &second);
    elsewhere["project_id"] = json!(16);
    let (status, answer) = gitlab(&server, "Push Hook", "pub-3", SECRET, &elsewhere);
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
}

/// The all-zero commit id names no commit: as a pull request's head or a push's new head it is a
/// 400 with a clear message (nothing is recorded); only a branch deletion carries it. GitHub's
/// pushes are its published example (a deleted tag), re-pointed.
#[test]
fn an_all_zero_head_is_refused_except_for_a_branch_deletion() {
    let (dir, repo) = shop_repo("hooks-zero-sha");
    let server = Server::start_with_config(&dir.0, &two_forges_config(&dir.0, &repo));
    wait_for_both_prods(&server, &repo);
    let zero = "0".repeat(40);
    let head = git(&repo, &["rev-parse", "feature/eur"]);

    let (status, answer) =
        github(&server, "pull_request", "z-1", &pull_request("opened", "feature/eur", &zero));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("pull_request.head.sha") && message.contains("all-zero"), "{message}");
    let (status, answer) =
        github(&server, "pull_request", "z-2", &synchronize("feature/eur", &head, &"0".repeat(64)));
    assert_eq!(status, 400, "{answer}");
    // GitHub's published push example (a deleted tag), re-pointed at this repository.
    let published: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path("github-push.json")).expect("fixture"),
    )
    .expect("JSON");
    let repoint = |reference: &str, deleted: bool| {
        let mut payload = published.clone();
        payload["repository"]["full_name"] = json!("acme/shop");
        payload["ref"] = json!(reference);
        payload["deleted"] = json!(deleted);
        payload
    };
    let (status, answer) = github(&server, "push", "z-3", &repoint("refs/heads/main", false));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`after` is the all-zero commit id"),
        "{answer}"
    );
    let (status, answer) =
        github(&server, "push", "z-3-tag", &repoint("refs/tags/simple-tag", true));
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    let mut open = merge_request("open", "feature/eur", &zero);
    open["project"]["id"] = json!(15);
    let (status, answer) = gitlab(&server, "Merge Request Hook", "z-4", SECRET, &open);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("object_attributes.last_commit.id"),
        "{answer}"
    );
    assert_eq!(deployments(&server).len(), 2, "nothing was recorded");
    assert!(!server.log().contains("webhook for"), "no job was accepted: {}", server.log());

    // A deletion is all zeros legitimately: accepted, on both forges.
    let (status, answer) = github(&server, "push", "z-5", &repoint("refs/heads/feature/eur", true));
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    let mut deleted = gitlab_push("refs/heads/feature/eur", &head, &zero);
    deleted["project"]["id"] = json!(15);
    let (status, answer) = gitlab(&server, "Push Hook", "z-6", SECRET, &deleted);
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
}

/// With several repositories, a deployment name unique among them needs no `?repository=` in the
/// API or `--repository` in the CLI; a name several have is an error naming them.
#[test]
fn a_deployment_name_unique_among_repositories_resolves_without_naming_the_repository() {
    let (dir, repo) = shop_repo("hooks-many-repositories");
    let server = Server::start_with_config(&dir.0, &two_forges_config(&dir.0, &repo));
    wait_for_both_prods(&server, &repo);
    let head = git(&repo, &["rev-parse", "feature/eur"]);
    let created = server.post(
        "/api/v1/branch-deployments",
        json!({ "git_repo_name": "shop", "branch_name": "feature/eur", "commit_hash": head }),
    );
    let name = created["name"].as_str().expect("name").to_owned();

    // Unique: found without the repository, in the API and the CLI.
    let (status, deployment) =
        server.request("GET", &format!("/api/v1/deployments/{name}"), None, Some(TOKEN));
    assert_eq!((status, deployment["repository"].as_str()), (200, Some("shop")), "{deployment}");
    server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == head);
    let (status, _) =
        server.request("GET", &format!("/api/v1/deployments/{name}/revisions"), None, Some(TOKEN));
    assert_eq!(status, 200);
    let output = crate::server::client(&server, &["deployment", "status", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("feature/eur"), "{}", stdout(&output));

    // Several: an error that names them; naming the repository picks one.
    let (status, answer) = server.request("GET", "/api/v1/deployments/prod", None, Some(TOKEN));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("ambiguous_deployment")),
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("shop") && message.contains("lab") && message.contains("?repository="),
        "{message}"
    );
    let output = crate::server::client(&server, &["deployment", "status", "prod"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("shop, lab") || stderr(&output).contains("lab, shop"),
        "{}",
        stderr(&output)
    );
    let output =
        crate::server::client(&server, &["deployment", "status", "prod", "--repository", "lab"]);
    assert!(output.status.success(), "{}", stderr(&output));
    server.post(
        "/api/v1/branch-deployments",
        json!({ "git_repo_name": "lab", "branch_name": "feature/eur", "commit_hash": head }),
    );
    let (status, answer) =
        server.request("GET", &format!("/api/v1/deployments/{name}"), None, Some(TOKEN));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("ambiguous_deployment")),
        "{answer}"
    );

    // None: not found, saying where it looked.
    let (status, answer) =
        server.request("GET", "/api/v1/deployments/no-such-deployment", None, Some(TOKEN));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("deployment_not_found")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"].as_str().unwrap_or("").contains("any repository"),
        "{answer}"
    );
}

// ---- Configuration ----------------------------------------------------------------------------

/// Runs `offshoot serve` on a configuration that must be refused; its stderr.
fn refused_configuration(dir: &Path, repository_keys: &str) -> String {
    let config = dir.join("refused.toml");
    let data = dir.join("refused-data");
    std::fs::write(&config, format!("data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[[repositories]]\nname = \"shop\"\n{repository_keys}\n", data.to_str().expect("utf-8")))
        .expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_offshoot"))
        .args(["serve", "--config", config.to_str().expect("utf-8")])
        .env("SHOP_SECRET_VALUE", "do-not-print-me")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("offshoot runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the server started on a configuration it should refuse: {repository_keys}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read");
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn repository_configuration_is_checked_without_printing_secrets() {
    let (dir, repo) = shop_repo("hooks-config");
    let path = format!("path = {:?}\n", repo.to_str().expect("utf-8"));

    let stderr = refused_configuration(
        &dir.0,
        &format!("{path}url = \"https://git.example/acme/shop.git\""),
    );
    assert!(stderr.contains("both `path` and `url`"), "{stderr}");
    let stderr = refused_configuration(&dir.0, "production_branch = \"main\"");
    assert!(stderr.contains("needs `path`"), "{stderr}");
    let stderr =
        refused_configuration(&dir.0, &format!("{path}webhook_secret = \"s3cret-in-file\""));
    assert!(stderr.contains("set `forge"), "{stderr}");
    assert!(!stderr.contains("s3cret-in-file"), "{stderr}");
    let stderr = refused_configuration(&dir.0, &format!("{path}forge = \"bitbucket\""));
    assert!(stderr.contains("not `github` or `gitlab`"), "{stderr}");
    let stderr = refused_configuration(
        &dir.0,
        &format!("{path}forge = \"github\"\nwebhook_secret_env = \"OFFSHOOT_TEST_NEVER_SET\""),
    );
    assert!(
        stderr.contains("`webhook_secret_env` names `OFFSHOOT_TEST_NEVER_SET`, which is not set"),
        "{stderr}"
    );
    let stderr = refused_configuration(&dir.0, "url = \"https://git.example/acme/shop.git\"\nwatch = true\ntoken_env = \"SHOP_SECRET_VALUE\"\nforge = \"gitlab\"");
    assert!(stderr.contains("`watch` needs a local `path`"), "{stderr}");
    assert!(!stderr.contains("do-not-print-me"), "{stderr}");
}
