//! Shared helpers: temporary folders, fixture repositories built by real `git`, running the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("offshoot-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("OFFSHOOT_KEEP_TEST_DIRS").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shop history from fixtures/shop_history.sh, in its own temporary folder.
pub fn shop_repo(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let repo = dir.0.join("repo");
    let status = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shop_history.sh"))
        .arg(workspace().join("examples/shop"))
        .arg(&repo)
        .status()
        .expect("bash runs");
    assert!(status.success(), "the fixture script failed");
    (dir, repo)
}

pub fn offshoot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offshoot")).args(args).output().expect("offshoot runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Replaces 12-hex-digit SHAs so expectations do not depend on commit dates.
pub fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for ch in text.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_hexdigit() {
            run.push(ch);
            continue;
        }
        if run.len() >= 12 && run.chars().any(|c| c.is_ascii_digit()) {
            out.push_str("<sha>");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(ch);
    }
    out.pop();
    out
}

/// Runs git in `repo` with a fixed identity; panics on failure.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Whether the PostgreSQL tests are skipped on purpose (`OFFSHOOT_SKIP_POSTGRES=1`, on a machine
/// without PostgreSQL). Under CI (`OFFSHOOT_CI=1`, which `.ci/run` sets) nothing is skipped:
/// asking to fails the test. Every PostgreSQL test asks here, so none can pass by not running.
pub fn postgres_skipped() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| value == "1");
    if !set("OFFSHOOT_SKIP_POSTGRES") {
        return false;
    }
    assert!(
        !set("OFFSHOOT_CI"),
        "OFFSHOOT_SKIP_POSTGRES=1 under CI (OFFSHOOT_CI=1): CI runs every PostgreSQL test; \
         unset OFFSHOOT_SKIP_POSTGRES and start PostgreSQL (`.ci/run` does)"
    );
    eprintln!("skipped: OFFSHOOT_SKIP_POSTGRES=1");
    true
}

/// The virtualenv with dbt and Dagster (tests/python/requirements.txt) that `.ci/run` installs;
/// `OFFSHOOT_PYTHON_TOOLS` names another.
pub fn python_tools() -> PathBuf {
    let dir = std::env::var_os("OFFSHOOT_PYTHON_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/python-tools"));
    assert!(
        dir.join("bin/dbt").exists() && dir.join("bin/dagster").exists(),
        "the dbt and Dagster tests need {}: run `bash .ci/run`, or `python3 -m venv target/python-tools && target/python-tools/bin/pip install -r tests/python/requirements.txt`",
        dir.display()
    );
    dir
}

/// PATH with the Python tools first, when they are installed (servers run `dbt` and `python`).
pub fn path_with_python_tools() -> String {
    let dir = std::env::var_os("OFFSHOOT_PYTHON_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/python-tools"));
    let path = std::env::var("PATH").unwrap_or_default();
    if dir.join("bin").is_dir() {
        format!("{}:{path}", dir.join("bin").display())
    } else {
        path
    }
}

/// Copies an example project into a new git repository (one commit on `main`).
pub fn example_repo(example: &str, repo: &Path) -> String {
    copy_dir(&workspace().join("examples").join(example), repo);
    if example == "dagster_dbt_shop" {
        // Its dbt project is examples/dbt_shop, in dbt_shop/ (the example's README).
        copy_dir(&workspace().join("examples/dbt_shop"), &repo.join("dbt_shop"));
        std::fs::remove_file(repo.join("dbt_shop/offshoot.toml")).expect("rm");
    }
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", &format!("The {example} example")]);
    git(repo, &["rev-parse", "HEAD"])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read example") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        // What tools leave behind in a working copy is not part of the example.
        if ["target", "logs", "dbt_packages", "__pycache__", ".venv"].contains(&name_text.as_ref())
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy");
        }
    }
}

/// A real `offshoot serve` process on a free port, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    /// This start's log; each start has its own.
    pub log: PathBuf,
    starts: u32,
    /// The environment variables this server was started with, kept by `restart`.
    env: Vec<(String, String)>,
}

pub const TOKEN: &str = "test-token-0123456789";

impl Server {
    /// Serves `repo` (not watched) with its data in `dir/data`.
    pub fn start(dir: &Path, repo: &Path, extra_config: &str) -> Server {
        Server::start_with_repository(
            dir,
            &format!("path = {:?}", repo.to_str().expect("utf-8 path")),
            extra_config,
        )
    }

    /// Serves one repository named `shop` (production branch `main`) whose other keys are
    /// `repository_keys` (TOML lines: `path` or `url`, forge settings, ...).
    pub fn start_with_repository(dir: &Path, repository_keys: &str, extra_config: &str) -> Server {
        let config = dir.join("offshoot-server.toml");
        let data_dir = dir.join("data");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\nlisten = \"127.0.0.1:0\"\napi_tokens = [{TOKEN:?}]\n{extra_config}\n[[repositories]]\nname = \"shop\"\nproduction_branch = \"main\"\n{repository_keys}\n",
                data = data_dir.to_str().expect("utf-8 path"),
            ),
        )
        .expect("write config");
        Server::spawn(config, data_dir, 1)
    }

    /// Serves with a whole configuration file of the test's own (it must set data_dir, listen
    /// = "127.0.0.1:0" and api_tokens = [TOKEN]).
    pub fn start_with_config(dir: &Path, config_text: &str) -> Server {
        let config = dir.join("offshoot-server.toml");
        std::fs::write(&config, config_text).expect("write config");
        Server::spawn(config, dir.join("data"), 1)
    }

    /// [`Server::start_with_config`] with these environment variables added.
    pub fn start_with_config_env(dir: &Path, config_text: &str, env: &[(&str, &str)]) -> Server {
        let config = dir.join("offshoot-server.toml");
        std::fs::write(&config, config_text).expect("write config");
        Server::spawn_with(config, dir.join("data"), 1, env)
    }

    /// Starts the process again on the same configuration (after a kill).
    pub fn restart(&mut self) {
        let env = self.env.clone();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.restart_with_env(&env);
    }

    /// Starts the process again with these environment variables added (a new version, say).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self =
            Server::spawn_with(self.config.clone(), self.data_dir.clone(), self.starts + 1, env);
    }

    fn spawn(config: PathBuf, data_dir: PathBuf, starts: u32) -> Server {
        Server::spawn_with(config, data_dir, starts, &[])
    }

    /// Serves with a configuration file whose `data_dir` is relative, from the folder `cwd`.
    pub fn start_in(cwd: &Path, config_text: &str, data_dir: &Path) -> Server {
        let config = cwd.join("offshoot-server.toml");
        std::fs::write(&config, config_text).expect("write config");
        Server::spawn_in(Some(cwd), config, data_dir.to_path_buf(), 1, &[])
    }

    fn spawn_with(config: PathBuf, data_dir: PathBuf, starts: u32, env: &[(&str, &str)]) -> Server {
        Server::spawn_in(None, config, data_dir, starts, env)
    }

    fn spawn_in(
        cwd: Option<&Path>,
        config: PathBuf,
        data_dir: PathBuf,
        starts: u32,
        env: &[(&str, &str)],
    ) -> Server {
        let log = config.with_file_name(format!("server-{starts}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_offshoot"));
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .args(["serve", "--config", config.to_str().expect("utf-8 path")])
            .env_remove("OFFSHOOT_API_TOKEN")
            .env("PATH", path_with_python_tools())
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("offshoot serve starts");
        let started = std::time::Instant::now();
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Only whole lines: the server may be writing this one right now.
            let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            if let Some(line) = whole.lines().find(|l| l.starts_with("offshoot serving on ")) {
                break line
                    .trim_start_matches("offshoot serving on ")
                    .split_whitespace()
                    .next()
                    .expect("url")
                    .to_owned();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the server exited with {status}:\n{text}");
            }
            assert!(started.elapsed().as_secs() < 30, "the server did not start:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Server { child, url, data_dir, config, log, starts, env }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the server");
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder().http_status_as_error(false).build(),
        )
    }

    /// (status, JSON body or Null).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let agent = Server::agent();
        let url = format!("{}{path}", self.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) => {
                let mut request = agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            ("DELETE", _) => {
                let mut request = agent.delete(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            (_, body) => {
                let mut request = agent.post(&url).header("Content-Type", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body.unwrap_or(serde_json::json!({})).to_string())
            }
        };
        let mut response = response.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.request("GET", path, None, Some(TOKEN));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, answer) = self.request("POST", path, Some(body), Some(TOKEN));
        assert!(status == 200 || status == 201, "POST {path}: {status} {answer}");
        answer
    }

    /// Waits until `check` holds for the deployment's JSON, or panics with the last one seen.
    pub fn wait_for_deployment(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for(name, what, TOKEN, check)
    }

    /// `wait_for_deployment` reading with `token` (`name` may end in `?repository=...`).
    pub fn wait_for_deployment_as(
        &self,
        name: &str,
        token: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for(name, "as expected", token, check)
    }

    fn wait_for(
        &self,
        name: &str,
        what: &str,
        token: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let (status, deployment) =
                self.request("GET", &format!("/api/v1/deployments/{name}"), None, Some(token));
            if status == 200 && check(&deployment) {
                return deployment;
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "{name} never became {what}: {deployment:#}\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn wait_for_run(&self, id: i64) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}"));
            if matches!(run["status"].as_str(), Some("succeeded" | "failed" | "canceled")) {
                return run;
            }
            assert!(
                started.elapsed().as_secs() < 120,
                "run {id} never finished: {run:#}\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The serving revision's commit.
pub fn serving_commit(deployment: &serde_json::Value) -> String {
    deployment["current_revision"]["commit"]["sha"].as_str().unwrap_or("").to_owned()
}

/// POSTs `body` as it is to `path` with `headers`; (status, the answer's text).
pub fn post_raw_text(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).build(),
    );
    let mut request =
        agent.post(&format!("{}{path}", server.url)).header("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body.to_owned()).expect("the server answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().expect("body"))
}

/// A native project repository with one commit on `main`: `offshoot.toml` for `dialect` with
/// the `sources`, and `assets` as (path under assets/, text).
pub fn native_repo(repo: &Path, dialect: &str, sources: &[&str], assets: &[(&str, &str)]) {
    std::fs::create_dir_all(repo.join("assets")).expect("mkdir");
    let mut manifest = format!("[project]\nname = \"shop\"\ndialect = \"{dialect}\"\n");
    for source in sources {
        manifest.push_str(&format!("\n[sources.{source}]\n"));
    }
    std::fs::write(repo.join("offshoot.toml"), manifest).expect("manifest");
    for (path, text) in assets {
        std::fs::write(repo.join("assets").join(path), text).expect("asset");
    }
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "Orders"]);
}
