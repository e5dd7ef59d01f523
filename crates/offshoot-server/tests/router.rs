//! The router in process, without a socket (axum's `oneshot`): authentication and roles, error
//! codes and shapes, and the main routes' answers, on a real SQLite store and warehouse and a
//! real git repository made by `git`. The end-to-end tests on the real binary are in
//! `crates/offshoot/tests`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use offshoot_server::config::{ApiToken, RepositoryConfig, Role, Secret, ServerConfig};
use offshoot_server::http::error::ERROR_CODES;
use offshoot_server::{router, AppState, SharedState};
use serde_json::Value;
use tower::ServiceExt;

const READ: &str = "read-token-1234";
const DEPLOY: &str = "deploy-token-1234";
const ADMIN: &str = "admin-token-1234";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Router Test")
        .env("GIT_AUTHOR_EMAIL", "router@offshoot.invalid")
        .env("GIT_COMMITTER_NAME", "Router Test")
        .env("GIT_COMMITTER_EMAIL", "router@offshoot.invalid")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A native project with two assets on `main` and a branch `feature/x` that changes one.
fn repository(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir.join("assets")).expect("folders");
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("offshoot.toml"), "[project]\nname = \"router\"\n").expect("write");
    std::fs::write(dir.join("assets/orders.sql"), "SELECT 1 AS id, 10 AS amount\n").expect("write");
    std::fs::write(dir.join("assets/totals.sql"), "SELECT sum(amount) AS total FROM orders\n")
        .expect("write");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "two assets"]);
    let main = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "-q", "-b", "feature/x"]);
    std::fs::write(dir.join("assets/orders.sql"), "SELECT 2 AS id, 20 AS amount\n").expect("write");
    git(dir, &["commit", "-q", "-am", "change orders"]);
    let feature = git(dir, &["rev-parse", "HEAD"]);
    (main, feature)
}

struct App {
    state: SharedState,
    feature: String,
    main: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A folder removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    pub fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "offshoot-router-{name}-{}-{}",
            std::process::id(),
            rand()
        ));
        std::fs::create_dir_all(&path).expect("temp folder");
        Dir(path)
    }
    fn rand() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    }
}

async fn app(name: &str) -> App {
    let dir = tempdir::new(name);
    let repo = dir.0.join("repo");
    let (main, feature) = repository(&repo);
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).expect("data folder");
    let mut config = ServerConfig::new(data.clone());
    config.public_reads = false;
    config.api_tokens = [(READ, Role::Read), (DEPLOY, Role::Deploy), (ADMIN, Role::Admin)]
        .into_iter()
        .map(|(secret, role)| ApiToken { secret: Secret::new(secret).expect("not blank"), role })
        .collect();
    config.repositories = vec![RepositoryConfig {
        name: offshoot_core::RepositoryName::new("router").expect("valid"),
        path: repo,
        production_branch: "main".to_owned(),
        watch: None,
        remote: None,
        forge: None,
        git_url: None,
    }];
    let store = offshoot_store_sqlite::SqliteStore::open(&data.join("offshoot.db"))
        .await
        .expect("store opens");
    let warehouse =
        offshoot_warehouse_sqlite::SqliteWarehouse::new(data.join("warehouse")).expect("warehouse");
    let state = AppState::new(Arc::new(store), Arc::new(warehouse), config);
    offshoot_server::service::maintenance::reconcile(&state).await.expect("reconciles");
    App { state, feature, main, _dir: dir }
}

/// One request through the router: status and JSON body (`Null` when it is not JSON).
async fn call(
    app: &App,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let request =
        request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).expect("request");
    let response = router(app.state.clone()).oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// An error answer: `{"error": {"code", "message"}}` with a code from the documented table at
/// the status the table gives it.
fn check_error(status: StatusCode, body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let documented = ERROR_CODES.iter().find(|(c, _, _)| *c == code).expect("documented code");
    assert_eq!(status.as_u16(), documented.1, "{code}");
}

#[tokio::test]
async fn reads_need_a_token_when_reads_are_private() {
    let app = app("reads").await;
    let (status, body) = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    let (status, body) = call(&app, "GET", "/api/v1/deployments", None, None).await;
    check_error(status, &body, "unauthorized");
    let (status, body) = call(&app, "GET", "/api/v1/deployments", Some("wrong-token"), None).await;
    check_error(status, &body, "unauthorized");
    let (status, body) = call(&app, "GET", "/api/v1/deployments", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> =
        body.as_array().expect("a list").iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, ["prod"]);
    let (status, body) = call(&app, "GET", "/api/v1/whoami", Some(DEPLOY), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["role"], "deploy", "{body}");
    // The live stream is a read like any other: refused without a token, open with one (the UI
    // reads it with fetch so that it can send the token).
    let (status, body) = call(&app, "GET", "/api/v1/events", None, None).await;
    check_error(status, &body, "unauthorized");
    let request = Request::builder()
        .uri("/api/v1/events")
        .header("Authorization", format!("Bearer {READ}"))
        .body(Body::empty())
        .expect("request");
    let response = router(app.state.clone()).oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
}

#[tokio::test]
async fn writes_need_the_role_the_target_requires() {
    let app = app("roles").await;
    let branch = format!(
        r#"{{"branch_name": "feature/x", "commit_hash": "{}", "git_repo_name": "router"}}"#,
        app.feature
    );
    let (status, body) =
        call(&app, "POST", "/api/v1/branch-deployments", Some(READ), Some(&branch)).await;
    check_error(status, &body, "forbidden");
    assert_eq!(body["error"]["required_role"], "deploy");
    let production = format!(r#"{{"branch_name": "main", "commit_hash": "{}"}}"#, app.main);
    let (status, body) =
        call(&app, "POST", "/api/v1/branch-deployments", Some(DEPLOY), Some(&production)).await;
    check_error(status, &body, "forbidden");
    assert_eq!(body["error"]["required_role"], "admin");
    let (status, body) =
        call(&app, "POST", "/api/v1/branch-deployments", Some(DEPLOY), Some(&branch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let name = body["name"].as_str().expect("a name");
    assert!(name.starts_with("feature-x"), "{body}");
    assert_eq!(body["deployment"]["name"], name);
    assert_eq!(body["revision"]["commit"]["sha"], app.feature.as_str(), "{body}");
    let (status, body) = call(&app, "DELETE", "/api/v1/deployments/prod", Some(DEPLOY), None).await;
    check_error(status, &body, "forbidden");
    let (status, body) = call(&app, "DELETE", "/api/v1/deployments/prod", Some(ADMIN), None).await;
    check_error(status, &body, "production_protected");
}

#[tokio::test]
async fn bad_requests_get_a_documented_code() {
    let app = app("errors").await;
    let post = |body: &'static str| {
        call(&app, "POST", "/api/v1/branch-deployments", Some(DEPLOY), Some(body))
    };
    let (status, body) = post("{not json").await;
    check_error(status, &body, "invalid_request");
    let (status, body) = post(r#"{"branch_name": "x", "commit_hash": "abc", "surprise": 1}"#).await;
    check_error(status, &body, "invalid_request");
    let (status, body) = post(r#"{"branch_name": "x", "commit_hash": "not hex"}"#).await;
    check_error(status, &body, "invalid_request");
    let (status, body) = post(r#"{"branch_name": "", "commit_hash": "abc"}"#).await;
    check_error(status, &body, "invalid_branch_name");
    let (status, body) = post(r#"{"branch_name": "x", "commit_hash": "abcdef1234"}"#).await;
    check_error(status, &body, "commit_not_found");
    let (status, body) =
        post(r#"{"branch_name": "x", "commit_hash": "abc", "git_repo_name": "nope"}"#).await;
    check_error(status, &body, "repository_not_found");
    let (status, body) = call(&app, "GET", "/api/v1/deployments/nope", Some(READ), None).await;
    check_error(status, &body, "deployment_not_found");
    let (status, body) = call(&app, "GET", "/api/v1/runs/999", Some(READ), None).await;
    check_error(status, &body, "run_not_found");
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/deployments/prod/runs",
        Some(ADMIN),
        Some(r#"{"selection": "key:("}"#),
    )
    .await;
    assert!(
        ["invalid_selection", "deployment_not_ready"]
            .contains(&body["error"]["code"].as_str().unwrap_or_default()),
        "{status} {body}"
    );
}

#[tokio::test]
async fn the_openapi_document_and_the_shapes_agree() {
    let app = app("shapes").await;
    let (status, document) = call(&app, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().expect("paths");
    for path in ["/api/v1/deployments", "/api/v1/deployments/{name}", "/api/v1/runs/{id}"] {
        assert!(paths.contains_key(path), "{path} documented");
    }
    let (status, prod) = call(&app, "GET", "/api/v1/deployments/prod", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    for field in ["name", "kind", "status", "branch", "repository"] {
        assert!(prod.get(field).is_some(), "deployment has `{field}`: {prod}");
    }
    assert_eq!(prod["kind"], "production");
    let (status, revisions) =
        call(&app, "GET", "/api/v1/deployments/prod/revisions", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revisions.as_array().map(Vec::len), Some(1), "{revisions}");
    assert_eq!(revisions[0]["commit"]["sha"], app.main.as_str(), "{revisions}");
}
