//! The CI integrations as CI runs them, with the real `offshoot` CLI on PATH and a real server:
//! the GitHub Action's step script (integrations/github/branch-deployment.sh) with a
//! pull_request event file of GitHub's shape as `GITHUB_EVENT_PATH`, the action's steps as
//! action.yml lists them (with its inputs' expressions filled in), and the GitLab template's
//! job scripts with GitLab's predefined merge-request variables.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::server::wait_for_prod;
use crate::support::*;

/// A `pull_request` event as GitHub delivers it (the fields the action reads, in their places).
fn event(action: &str, branch: &str, sha: &str, merged: bool, head_repository: &str) -> Value {
    json!({
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "html_url": "https://github.com/acme/shop/pull/7",
            "state": if action == "closed" { "closed" } else { "open" },
            "merged": merged,
            "head": { "ref": branch, "sha": sha, "repo": { "full_name": head_repository } },
            "base": { "ref": "main", "repo": { "full_name": "acme/shop" } },
        },
        "repository": { "full_name": "acme/shop" },
    })
}

fn run_action(dir: &Path, event: &Value, env: &[(&str, &str)]) -> (Output, String) {
    let event_path = dir.join("event.json");
    let output_path = dir.join("github-output");
    std::fs::write(&event_path, event.to_string()).expect("event file");
    std::fs::write(&output_path, "").expect("output file");
    let binary_dir =
        Path::new(env!("CARGO_BIN_EXE_offshoot")).parent().expect("bin dir").to_owned();
    let mut command = Command::new("bash");
    command.arg(workspace().join("integrations/github/branch-deployment.sh"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OFFSHOOT_")
            || key.starts_with("DAGSTER_CLOUD_")
            || key.starts_with("INPUT_")
            || key.starts_with("GITHUB_")
        {
            command.env_remove(key);
        }
    }
    command
        .env(
            "PATH",
            format!("{}:{}", binary_dir.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .env("GITHUB_EVENT_PATH", &event_path)
        .env("GITHUB_OUTPUT", &output_path)
        .env("GITHUB_STEP_SUMMARY", dir.join("summary.md"))
        .env("GITHUB_REPOSITORY", "acme/shop")
        .envs(env.iter().copied());
    let output = command.output().expect("bash runs");
    (output, std::fs::read_to_string(&output_path).unwrap_or_default())
}

#[test]
fn the_github_action_deploys_updates_and_closes_a_pull_requests_deployment() {
    let (dir, repo) = shop_repo("github-action");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    let first = git(&repo, &["rev-parse", "feature/eur"]);
    let inputs = [
        ("INPUT_URL", server.url.as_str()),
        ("INPUT_API_TOKEN", TOKEN),
        ("INPUT_REPOSITORY", "shop"),
        ("INPUT_WAIT", "true"),
        ("INPUT_SNAPSHOT_BASE_CONDITION", "on-create"),
    ];

    // opened: deploys, waits for it, and says the name in the step's output.
    let (output, github_output) =
        run_action(&dir.0, &event("opened", "feature/eur", &first, false, "acme/shop"), &inputs);
    assert!(output.status.success(), "{}\n{}", stderr(&output), server.log());
    let name = github_output
        .trim()
        .strip_prefix("deployment-name=")
        .expect("deployment-name output")
        .to_owned();
    assert!(name.starts_with("feature-eur-"), "{github_output}");
    assert!(stdout(&output).contains("ready"), "waited for the deploy: {}", stdout(&output));
    let deployment = server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == first);
    assert_eq!(
        deployment["pull_request"],
        json!({"id": "7", "url": "https://github.com/acme/shop/pull/7", "status": "OPEN"})
    );
    let main = git(&repo, &["rev-parse", "main"]);
    assert_eq!(deployment["snapshot_base"]["condition"], "on-create", "{deployment}");
    assert_eq!(deployment["snapshot_base"]["commit"], main.as_str(), "{deployment}");

    // synchronize with broken definitions: the step fails, as a check should.
    let broken = git(&repo, &["rev-parse", "broken"]);
    let (output, _) = run_action(
        &dir.0,
        &event("synchronize", "feature/eur", &broken, false, "acme/shop"),
        &inputs,
    );
    assert!(
        !output.status.success() && stdout(&output).contains("revision 2 failed"),
        "invalid definitions fail the step: {}\n{}",
        stdout(&output),
        stderr(&output)
    );

    // The server and token from the workflow's dagster-cloud variables when the inputs are empty.
    let dagster_env = [
        ("DAGSTER_CLOUD_URL", server.url.as_str()),
        ("DAGSTER_CLOUD_API_TOKEN", TOKEN),
        ("INPUT_REPOSITORY", "shop"),
        ("INPUT_WAIT", "false"),
    ];
    let (output, github_output) = run_action(
        &dir.0,
        &event("synchronize", "feature/eur", &first, false, "acme/shop"),
        &dagster_env,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(github_output.trim(), format!("deployment-name={name}"));

    // A fork's pull request is left to the webhook.
    let (output, github_output) =
        run_action(&dir.0, &event("opened", "fork-branch", &first, false, "someone/shop"), &inputs);
    assert!(output.status.success() && stdout(&output).contains("fork"), "{}", stderr(&output));
    assert!(github_output.is_empty());

    // closed and merged: the deployment closes.
    let (output, github_output) =
        run_action(&dir.0, &event("closed", "feature/eur", &first, true, "acme/shop"), &inputs);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(github_output.trim(), "deployment-name=");
    let deployment = server.wait_for_deployment(&name, "closed", |d| d["status"] == "closed");
    assert_eq!(deployment["pull_request"]["status"], "MERGED");

    // action.yml runs this script, with the inputs it reads.
    let action = std::fs::read_to_string(workspace().join("integrations/github/action.yml"))
        .expect("action.yml");
    assert!(
        action.contains("using: composite")
            && action.contains("bash \"$GITHUB_ACTION_PATH/branch-deployment.sh\""),
        "{action}"
    );
    for input in [
        "INPUT_URL",
        "INPUT_API_TOKEN",
        "INPUT_REPOSITORY",
        "INPUT_BASE_DEPLOYMENT_NAME",
        "INPUT_WAIT",
        "INPUT_TIMEOUT_SECS",
    ] {
        assert!(action.contains(&format!("{input}: ${{{{ inputs.")), "action.yml passes {input}");
    }
}

/// The shell of a GitLab CI job of integrations/gitlab/.gitlab-ci.yml (its `before_script` from
/// `extends`, then its `script`), read with PyYAML from the Python tools as GitLab reads YAML.
fn gitlab_job_script(job: &str) -> String {
    let reader = "import sys, yaml\n\
                  ci = yaml.safe_load(open(sys.argv[1]))\n\
                  job = ci[sys.argv[2]]\n\
                  base = ci.get(job.get('extends', ''), {})\n\
                  print('\\n'.join(base.get('before_script', []) + job['script']))\n";
    let output = Command::new(python_tools().join("bin/python"))
        .args([
            "-c",
            reader,
            workspace().join("integrations/gitlab/.gitlab-ci.yml").to_str().expect("utf-8"),
            job,
        ])
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

fn run_gitlab_job(job: &str, variables: &[(&str, &str)]) -> Output {
    let binary_dir =
        Path::new(env!("CARGO_BIN_EXE_offshoot")).parent().expect("bin dir").to_owned();
    let mut command = Command::new("bash");
    command.args(["-eu", "-c", &gitlab_job_script(job)]);
    for (key, _) in std::env::vars() {
        if key.starts_with("OFFSHOOT_")
            || key.starts_with("DAGSTER_CLOUD_")
            || key.starts_with("CI_")
        {
            command.env_remove(key);
        }
    }
    command
        .env(
            "PATH",
            format!("{}:{}", binary_dir.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .envs(variables.iter().copied());
    command.output().expect("bash runs")
}

#[test]
fn the_gitlab_template_deploys_and_closes_a_merge_requests_deployment() {
    let (dir, repo) = shop_repo("gitlab-template");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    let sha = git(&repo, &["rev-parse", "feature/eur"]);
    // GitLab's predefined variables of a merge request pipeline, and the project's CI/CD variables
    // (here the Dagster+ ones the CLI falls back to).
    let variables = [
        ("DAGSTER_CLOUD_URL", server.url.as_str()),
        ("DAGSTER_CLOUD_API_TOKEN", TOKEN),
        ("CI_PROJECT_PATH", "shop"),
        ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "feature/eur"),
        ("CI_COMMIT_SHA", sha.as_str()),
        ("CI_MERGE_REQUEST_IID", "12"),
        ("CI_MERGE_REQUEST_PROJECT_URL", "https://gitlab.example/acme/shop"),
        ("OFFSHOOT_SNAPSHOT_BASE_CONDITION", "on-update"),
    ];
    let output = run_gitlab_job("offshoot:deploy", &variables);
    assert!(output.status.success(), "{}\n{}", stderr(&output), server.log());
    let name = stdout(&output)
        .lines()
        .find_map(|l| l.strip_prefix("Branch deployment: "))
        .expect("the job names the deployment")
        .to_owned();
    let deployment = server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == sha);
    assert_eq!(
        deployment["pull_request"],
        json!({"id": "12", "url": "https://gitlab.example/acme/shop/-/merge_requests/12", "status": "OPEN"})
    );
    assert_eq!(deployment["snapshot_base"]["condition"], "on-update", "{deployment}");

    let output = run_gitlab_job("offshoot:close", &variables);
    assert!(output.status.success(), "{}", stderr(&output));
    let deployment = server.wait_for_deployment(&name, "closed", |d| d["status"] == "closed");
    assert_eq!(deployment["pull_request"]["status"], "CLOSED");
}

/// `action.yml` as JSON, read by PyYAML of the pinned Python tools (no YAML crate for one test).
fn action_yml() -> Value {
    let output = Command::new(python_tools().join("bin/python3"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(workspace().join("integrations/github/action.yml"))
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("action.yml as JSON")
}

/// The action as a runner runs it: each step of `runs.steps` in action.yml, a `run:` step's
/// shell with its `env:` after the `${{ ... }}` expressions it uses are filled in (inputs from
/// `with`, else their defaults). The cache step hits (the CLI under test is on PATH, as the
/// cached binary would be), so the install step's `if:` is false.
#[test]
fn the_github_action_runs_as_its_action_yml_says() {
    let action = action_yml();
    assert_eq!(action["runs"]["using"], "composite");
    let (dir, repo) = shop_repo("github-action-yml");
    let server = Server::start(&dir.0, &repo, "");
    wait_for_prod(&server, &repo);
    let first = git(&repo, &["rev-parse", "feature/eur"]);
    let with = [("url", server.url.as_str()), ("api-token", TOKEN), ("repository", "shop")];
    let expand = |text: &str| -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("a closed expression") + start;
            let expression = rest[start + 3..end].trim();
            let value = match expression.strip_prefix("inputs.") {
                Some(name) => match with.iter().find(|(key, _)| *key == name) {
                    Some((_, value)) => value.to_string(),
                    None => {
                        let default = &action["inputs"][name]["default"];
                        assert!(default.is_string(), "input `{name}` has no default");
                        let default = default.as_str().expect("a string");
                        assert!(!default.contains("${{ inputs."), "{default}");
                        default.replace("${{ github.repository }}", "acme/shop")
                    }
                },
                None if expression == "github.repository" => "acme/shop".to_owned(),
                None => panic!("the test does not know the expression `{expression}`"),
            };
            out.push_str(&value);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    };

    let event_path = dir.0.join("event.json");
    let output_path = dir.0.join("github-output");
    std::fs::write(
        &event_path,
        event("opened", "feature/eur", &first, false, "acme/shop").to_string(),
    )
    .expect("event file");
    std::fs::write(&output_path, "").expect("output file");
    let binary_dir =
        Path::new(env!("CARGO_BIN_EXE_offshoot")).parent().expect("bin dir").to_owned();
    let mut ran = 0;
    let mut cache_hit = false;
    for step in action["runs"]["steps"].as_array().expect("steps") {
        if let Some(uses) = step["uses"].as_str() {
            assert!(uses.starts_with("actions/cache@"), "an unknown action: {uses}");
            cache_hit = true;
            continue;
        }
        if let Some(condition) = step["if"].as_str() {
            assert_eq!(condition, "steps.cache.outputs.cache-hit != 'true'");
            if cache_hit {
                continue;
            }
        }
        assert_eq!(step["shell"], "bash", "{step}");
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
            .arg(step["run"].as_str().expect("a run step"));
        for (key, _) in std::env::vars() {
            if ["OFFSHOOT_", "DAGSTER_CLOUD_", "INPUT_", "GITHUB_"]
                .iter()
                .any(|p| key.starts_with(p))
            {
                command.env_remove(key);
            }
        }
        for (key, value) in step["env"].as_object().into_iter().flatten() {
            command.env(key, expand(value.as_str().expect("env values are text")));
        }
        let output = command
            .env(
                "PATH",
                format!("{}:{}", binary_dir.display(), std::env::var("PATH").unwrap_or_default()),
            )
            .env("GITHUB_ACTION_PATH", workspace().join("integrations/github"))
            .env("GITHUB_EVENT_PATH", &event_path)
            .env("GITHUB_OUTPUT", &output_path)
            .env("GITHUB_STEP_SUMMARY", dir.0.join("summary.md"))
            .env("GITHUB_REPOSITORY", "acme/shop")
            .output()
            .expect("bash runs");
        assert!(output.status.success(), "{step}: {}\n{}", stderr(&output), server.log());
        ran += 1;
    }
    assert_eq!(ran, 1, "one step ran besides the cache and the skipped install");
    let github_output = std::fs::read_to_string(&output_path).expect("output");
    let name = github_output.trim().strip_prefix("deployment-name=").expect("output").to_owned();
    let deployment = server.wait_for_deployment(&name, "ready", |d| serving_commit(d) == first);
    assert_eq!(deployment["pull_request"]["id"], "7", "{deployment}");
    assert_eq!(deployment["snapshot_base"]["condition"], "merge-base", "the input's default");
}
