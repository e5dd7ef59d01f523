//! dbt projects as a code location. Loading runs the project's parse step (`dbt parse` by
//! default) in a checkout of the commit and reads `target/manifest.json`: models, seeds and
//! snapshots become assets, dbt sources become sources (`source_name/table`). Building runs
//! `dbt build --select ...` against the deployment's schema; in a branch, unbuilt references are
//! deferred to production (`--defer --state` with production's manifest).
//!
//! Offshoot writes the profile (`offshoot`, target `offshoot`) so every deployment lands in its
//! own schema; it reads the connection from `OFFSHOOT_PG_*` variables derived from the
//! warehouse URL. dbt needs the PostgreSQL warehouse: no dbt adapter for SQLite supports dbt 1.11.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use offshoot_core::fingerprint::sha256_hex;
use offshoot_core::{Asset, AssetKey, AssetKind, CodeVersion, Location, Snapshot};
use offshoot_project::{DbtConfig, Diagnostic, Manifest};
use serde::Deserialize;
use serde_json::Value;

use crate::prepare::{Prepare, PrepareFailure};
use crate::process::{self, ToolCommand, ToolOutput};
use crate::{
    lookup, tool_diagnostic, BuildOutcome, BuildRequest, CodeLocation, LoadInput, LocationError,
    StepTiming,
};

/// The profile Offshoot gives dbt: the deployment's schema on the warehouse's database.
pub const PROFILES_YML: &str = include_str!("../dbt/profiles.yml");

/// Seeds larger than this show a note instead of their content as "code".
const MAX_SEED_CODE: u64 = 64 * 1024;

/// Config keys that do not change what dbt builds; left out of the derived code version so an
/// edit of only these is a TAGS or METADATA change, as it would be for a native asset.
const DESCRIPTIVE_CONFIG: [&str; 6] = ["tags", "meta", "docs", "persist_docs", "group", "access"];

pub struct DbtLocation {
    config: DbtConfig,
}

impl DbtLocation {
    pub fn new(config: DbtConfig) -> DbtLocation {
        DbtLocation { config }
    }

    fn project_dir(&self, checkout: &Path) -> PathBuf {
        checkout.join(&self.config.project_dir)
    }

    /// The environment of a dbt invocation whose artifacts go to `work_dir`.
    fn environment(
        &self,
        env: &[(String, String)],
        work_dir: &Path,
    ) -> Result<Vec<(String, String)>, String> {
        let profiles = work_dir.join("profiles");
        std::fs::create_dir_all(&profiles).map_err(|e| format!("{}: {e}", profiles.display()))?;
        std::fs::write(profiles.join("profiles.yml"), PROFILES_YML)
            .map_err(|e| format!("{}: {e}", profiles.display()))?;
        let mut all: Vec<(String, String)> = env.to_vec();
        let url = lookup(env, "OFFSHOOT_WAREHOUSE_URL").unwrap_or_default();
        all.extend(connection_variables(&url)?);
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        all.extend([
            ("DBT_PROFILES_DIR".to_owned(), path(profiles)),
            ("DBT_PROFILE".to_owned(), "offshoot".to_owned()),
            ("DBT_TARGET".to_owned(), "offshoot".to_owned()),
            ("DBT_TARGET_PATH".to_owned(), path(work_dir.join("target"))),
            ("DBT_LOG_PATH".to_owned(), path(work_dir.join("logs"))),
            ("DBT_SEND_ANONYMOUS_USAGE_STATS".to_owned(), "false".to_owned()),
            ("DBT_USE_COLORS".to_owned(), "false".to_owned()),
            ("DBT_PRINTER_WIDTH".to_owned(), "100".to_owned()),
        ]);
        Ok(all)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_seconds)
    }

    /// The project's prepare step (`dbt deps`) in `checkout`, with dbt's environment.
    fn prepare(
        &self,
        checkout: &Path,
        env: &[(String, String)],
        sandbox: Option<&crate::Sandbox>,
        log: PathBuf,
    ) -> Result<(), PrepareFailure> {
        let Some(command) = &self.config.prepare_command else { return Ok(()) };
        Prepare {
            command,
            checkout,
            cwd: self.project_dir(checkout),
            env: env.to_vec(),
            timeout: self.timeout(),
            sandbox,
            log,
        }
        .run()
    }
}

impl CodeLocation for DbtLocation {
    fn kind(&self) -> &'static str {
        "dbt"
    }

    fn needs_checkout(&self) -> bool {
        true
    }

    fn load(&self, _manifest: &Manifest, input: &LoadInput<'_>) -> Result<Snapshot, LocationError> {
        let checkout = input
            .checkout
            .ok_or_else(|| LocationError::Tool("a dbt location needs a checkout".into()))?;
        let project_dir = self.project_dir(checkout);
        if !project_dir.join("dbt_project.yml").is_file() {
            let path = format!("{}/dbt_project.yml", self.config.project_dir)
                .trim_start_matches("./")
                .to_owned();
            return Err(LocationError::Invalid(vec![tool_diagnostic(
                offshoot_project::MANIFEST_PATH,
                format!("the dbt location has no `{path}`"),
                "set [location] project_dir to the folder that holds dbt_project.yml",
            )]));
        }
        let env = self.environment(input.env, input.work_dir).map_err(LocationError::Tool)?;
        self.prepare(checkout, &env, input.sandbox, input.work_dir.join("prepare.log")).map_err(
            |failure| {
                LocationError::Invalid(vec![Diagnostic::new(
                    offshoot_project::MANIFEST_PATH,
                    (1, 1),
                    failure.message,
                )
                .hint(format!("its output:\n{}", failure.output))])
            },
        )?;
        let command = ToolCommand {
            program: "sh".into(),
            args: vec!["-c".into(), self.config.parse_command.clone()],
            cwd: project_dir,
            env,
            timeout: self.timeout(),
            sandbox: input.sandbox.cloned(),
        };
        seed_partial_parse(input.work_dir);
        let output = process::run(&command, &input.work_dir.join("parse.log"));
        if !output.success {
            return Err(parse_failure(&self.config, &output));
        }
        let manifest_path = input.work_dir.join("target").join("manifest.json");
        let bytes = std::fs::read(&manifest_path).map_err(|e| {
            LocationError::Tool(format!(
                "`{}` succeeded but wrote no {}: {e}",
                self.config.parse_command,
                manifest_path.display()
            ))
        })?;
        let manifest: DbtManifest = serde_json::from_slice(&bytes)
            .map_err(|e| LocationError::Tool(format!("cannot read dbt's manifest.json: {e}")))?;
        snapshot_from_manifest(&manifest, &self.config.project_dir, checkout)
            .map_err(LocationError::Invalid)
    }

    fn build_command(&self, request: &BuildRequest<'_>) -> Option<Result<ToolCommand, String>> {
        Some((|| {
            let env = self.environment(request.env, request.work_dir)?;
            self.prepare(
                request.checkout,
                &env,
                request.sandbox,
                request.work_dir.join("prepare.log"),
            )
            .map_err(|f| format!("{}\n{}", f.message, f.output))?;
            let mut script = format!("{} --select \"$@\"", self.config.build_command);
            if request.production_state.is_some() {
                script.push_str(" --defer --state \"$OFFSHOOT_DBT_STATE\"");
            }
            let mut env = env;
            if let Some(state) = request.production_state {
                env.push((
                    "OFFSHOOT_DBT_STATE".to_owned(),
                    state.join("target").to_string_lossy().into_owned(),
                ));
            }
            let mut args = vec!["-c".to_owned(), script, "offshoot-dbt".to_owned()];
            for key in request.keys {
                let asset = request
                    .snapshot
                    .get(key)
                    .ok_or_else(|| format!("`{key}` is not in the revision"))?;
                args.push(selector(asset));
            }
            Ok(ToolCommand {
                program: "sh".into(),
                args,
                cwd: self.project_dir(request.checkout),
                env,
                timeout: self.timeout(),
                sandbox: request.sandbox.cloned(),
            })
        })())
    }

    fn build_outcomes(
        &self,
        request: &BuildRequest<'_>,
        output: &ToolOutput,
    ) -> BTreeMap<AssetKey, BuildOutcome> {
        let target = request.work_dir.join("target");
        let results: Option<RunResults> = std::fs::read(target.join("run_results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let attached = attached_tests(&target);
        let by_unique_id: BTreeMap<String, AssetKey> = request
            .snapshot
            .assets()
            .filter_map(|a| a.metadata.get(UNIQUE_ID).map(|id| (id.clone(), a.key.clone())))
            .collect();
        let in_branch = request.production_state.is_some()
            || lookup(request.env, "OFFSHOOT_IS_BRANCH_DEPLOYMENT").as_deref() == Some("1");
        let explained = |message: &str| match in_branch.then(|| grant_hint(message)).flatten() {
            Some(hint) => format!("{message}\n{hint}"),
            None => message.to_owned(),
        };
        let mut outcomes = BTreeMap::new();
        // Data tests run after their model and fail it; unit tests run before it, and dbt then
        // skips the model: both are the model's own failure, with dbt's message.
        let mut test_failures: BTreeMap<AssetKey, Vec<String>> = BTreeMap::new();
        let mut unit_failures: BTreeMap<AssetKey, Vec<String>> = BTreeMap::new();
        for result in results.iter().flat_map(|r| &r.results) {
            let message = result.message.clone().unwrap_or_default();
            if let Some(key) = by_unique_id.get(&result.unique_id) {
                let outcome = match result.status.as_str() {
                    "success" | "pass" => BuildOutcome::Succeeded {
                        rows: result.adapter_response.get("rows_affected").and_then(Value::as_u64),
                    },
                    "skipped" => BuildOutcome::Skipped {
                        message: "dbt skipped it: an upstream model or test failed".into(),
                    },
                    _ => BuildOutcome::Failed {
                        message: if message.is_empty() {
                            format!("dbt status `{}`", result.status)
                        } else {
                            explained(&message)
                        },
                    },
                };
                outcomes.insert(key.clone(), outcome);
            } else if matches!(result.status.as_str(), "fail" | "error") {
                let Some(model) = attached.get(&result.unique_id) else { continue };
                let Some(key) = by_unique_id.get(&model.node) else { continue };
                let line = format!(
                    "{}: {}",
                    short_test_name(&result.unique_id),
                    if message.is_empty() { result.status.clone() } else { explained(&message) }
                );
                if model.unit {
                    unit_failures.entry(key.clone()).or_default().push(line);
                } else {
                    test_failures.entry(key.clone()).or_default().push(line);
                }
            }
        }
        for (key, failures) in unit_failures {
            if !matches!(outcomes.get(&key), Some(BuildOutcome::Failed { .. })) {
                outcomes.insert(
                    key,
                    BuildOutcome::Failed {
                        message: format!(
                            "not built: its unit tests failed: {}",
                            failures.join("; ")
                        ),
                    },
                );
            }
        }
        for (key, failures) in test_failures {
            if let Some(BuildOutcome::Succeeded { .. }) | None = outcomes.get(&key) {
                outcomes.insert(
                    key,
                    BuildOutcome::Failed {
                        message: format!("built, but its tests failed: {}", failures.join("; ")),
                    },
                );
            }
        }
        let missing = if results.is_none() {
            let why =
                output.failure.clone().unwrap_or_else(|| "dbt wrote no run_results.json".into());
            BuildOutcome::Failed {
                message: explained(&format!("{why}: {}", dbt_error_message(&output.text))),
            }
        } else {
            BuildOutcome::Skipped { message: "dbt did not build it".into() }
        };
        for key in request.keys {
            outcomes.entry(key.clone()).or_insert_with(|| missing.clone());
        }
        outcomes
    }

    fn build_timings(&self, request: &BuildRequest<'_>) -> BTreeMap<AssetKey, StepTiming> {
        let results: Option<RunResults> =
            std::fs::read(request.work_dir.join("target").join("run_results.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        let by_unique_id: BTreeMap<&str, &AssetKey> = request
            .snapshot
            .assets()
            .filter_map(|a| a.metadata.get(UNIQUE_ID).map(|id| (id.as_str(), &a.key)))
            .collect();
        let mut timings = BTreeMap::new();
        for result in results.iter().flat_map(|r| &r.results) {
            let Some(key) = by_unique_id.get(result.unique_id.as_str()) else { continue };
            let starts = result.timing.iter().filter_map(|t| unix_millis(t.started_at.as_deref()?));
            let ends = result.timing.iter().filter_map(|t| unix_millis(t.completed_at.as_deref()?));
            if let (Some(started_at), Some(finished_at)) = (starts.min(), ends.max()) {
                if finished_at >= started_at {
                    timings.insert((*key).clone(), StepTiming { started_at, finished_at });
                }
            }
        }
        timings
    }
}

/// A hint for a relation a branch build cannot see: branch builds run as the branch role, which
/// reads only what it was granted (README: "dbt projects").
fn grant_hint(message: &str) -> Option<String> {
    let lower = message.to_lowercase();
    let missing = lower.contains("does not exist") && lower.contains("relation");
    let denied = lower.contains("permission denied for schema")
        || lower.contains("permission denied for table");
    if !missing && !denied {
        return None;
    }
    // `relation "shop_raw.orders" does not exist`: the schema to grant.
    let schema = message
        .split('"')
        .nth(1)
        .and_then(|name| name.rsplit_once('.').map(|(schema, _)| schema.trim_matches('"')))
        .or_else(|| {
            lower.contains("for schema").then(|| message.split_whitespace().last()).flatten()
        })
        .unwrap_or("SCHEMA");
    Some(format!(
        "hint: branch builds run as the server's branch role, which reads only what it is granted; \
         if this relation exists in production, grant it as README.md's \"dbt projects\" says: \
         GRANT USAGE ON SCHEMA {schema} TO <branch_role>; \
         GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO <branch_role>;"
    ))
}

/// `2024-05-01T12:00:00.123456Z` (dbt's timings, UTC) as Unix milliseconds.
fn unix_millis(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once(['T', ' '])?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let time = time.split(['+']).next()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms_parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (hms_parts.next()??, hms_parts.next()??, hms_parts.next()??);
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Starts a commit's parse from the newest earlier commit's partial-parse state, when there is
/// one: the folders beside `work_dir` are other commits' of the same repository, parsed with the
/// same profile, so dbt re-parses only the files that differ (it falls back to a full parse by
/// itself whenever the state does not fit: another dbt version, profile or vars).
fn seed_partial_parse(work_dir: &Path) {
    const FILE: &str = "partial_parse.msgpack";
    let own = work_dir.join("target").join(FILE);
    if own.exists() {
        return;
    }
    let Some(parent) = work_dir.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let newest = entries
        .flatten()
        .map(|e| e.path().join("target").join(FILE))
        .filter(|p| !p.starts_with(work_dir))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    if let Some((_, state)) = newest {
        if std::fs::create_dir_all(own.parent().expect("target/")).is_ok() {
            let _ = std::fs::copy(state, &own);
        }
    }
}

/// Where each asset's dbt node comes from, kept in its metadata.
pub(crate) const UNIQUE_ID: &str = "dbt/unique_id";

/// The node selector for `--select`: the name, with the version for versioned models.
fn selector(asset: &Asset) -> String {
    let id = asset.metadata.get(UNIQUE_ID).map(String::as_str).unwrap_or("");
    let mut parts = id.splitn(3, '.');
    let (_, _, rest) = (parts.next(), parts.next(), parts.next().unwrap_or(asset.key.as_str()));
    rest.to_owned()
}

/// `test.project.name.hash` → `name`; `unit_test.project.model.name` → `name`.
fn short_test_name(unique_id: &str) -> &str {
    if unique_id.starts_with("unit_test.") {
        return unique_id.rsplit('.').next().unwrap_or(unique_id);
    }
    unique_id.split('.').nth(2).unwrap_or(unique_id)
}

/// The node a test tests, and whether it is a unit test (run before the model).
struct Attached {
    node: String,
    unit: bool,
}

/// test unique_id → the node it tests, from the build's own manifest: data tests by their
/// `attached_node`, unit tests by the model they name.
fn attached_tests(target: &Path) -> BTreeMap<String, Attached> {
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(default)]
        nodes: BTreeMap<String, TestNode>,
        #[serde(default)]
        unit_tests: BTreeMap<String, UnitTest>,
    }
    #[derive(Deserialize)]
    struct TestNode {
        #[serde(default)]
        attached_node: Option<String>,
    }
    #[derive(Deserialize)]
    struct UnitTest {
        #[serde(default)]
        depends_on: DependsOn,
    }
    let Some(manifest) = std::fs::read(target.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
    else {
        return BTreeMap::new();
    };
    let mut attached: BTreeMap<String, Attached> = manifest
        .nodes
        .into_iter()
        .filter_map(|(id, node)| {
            node.attached_node.map(|n| (id, Attached { node: n, unit: false }))
        })
        .collect();
    for (id, test) in manifest.unit_tests {
        if let Some(model) = test.depends_on.nodes.into_iter().find(|n| n.starts_with("model.")) {
            attached.insert(id, Attached { node: model, unit: true });
        }
    }
    attached
}

#[derive(Deserialize)]
struct RunResults {
    results: Vec<RunResult>,
}

#[derive(Deserialize)]
struct RunResult {
    unique_id: String,
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    adapter_response: serde_json::Map<String, Value>,
    #[serde(default)]
    timing: Vec<Timing>,
}

#[derive(Deserialize)]
struct Timing {
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
}

/// `OFFSHOOT_PG_*` from a `postgres://user:password@host:port/database` URL.
pub(crate) fn connection_variables(url: &str) -> Result<Vec<(String, String)>, String> {
    let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err("a dbt location needs the PostgreSQL warehouse (warehouse_url = \"postgres://...\"): dbt has no adapter for Offshoot's SQLite warehouse".into());
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, port)
        }
        _ => (host_port, "5432"),
    };
    let decode = percent_decode;
    Ok(vec![
        (
            "OFFSHOOT_PG_HOST".to_owned(),
            if host.is_empty() { "localhost".to_owned() } else { decode(host) },
        ),
        ("OFFSHOOT_PG_PORT".to_owned(), port.to_owned()),
        (
            "OFFSHOOT_PG_USER".to_owned(),
            if user.is_empty() { "postgres".to_owned() } else { decode(user) },
        ),
        ("OFFSHOOT_PG_PASSWORD".to_owned(), decode(password)),
        (
            "OFFSHOOT_PG_DATABASE".to_owned(),
            if database.is_empty() { "postgres".to_owned() } else { decode(database) },
        ),
    ])
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A failed parse as diagnostics: dbt's own message, placed at the file dbt names.
fn parse_failure(config: &DbtConfig, output: &ToolOutput) -> LocationError {
    if output.text.contains("command not found")
        || output.text.contains("not found")
            && output.text.lines().count() <= 2
            && output.text.contains("dbt")
    {
        return LocationError::Tool(format!(
            "`{}` could not run: {} (is dbt installed where the server finds it on PATH?)",
            config.parse_command,
            output.text.trim()
        ));
    }
    if output
        .failure
        .as_deref()
        .is_some_and(|f| f.contains("did not finish") || f.contains("cannot start"))
    {
        return LocationError::Tool(output.failure.clone().unwrap_or_default());
    }
    let message = dbt_error_message(&output.text);
    let path = mentioned_file(&message)
        .map(|file| {
            if config.project_dir == "." {
                file
            } else {
                format!("{}/{file}", config.project_dir)
            }
        })
        .unwrap_or_else(|| {
            if config.project_dir == "." {
                "dbt_project.yml".to_owned()
            } else {
                format!("{}/dbt_project.yml", config.project_dir)
            }
        });
    let hint = if message.contains("dbt deps") {
        match &config.prepare_command {
            None => format!(
                "the project's packages are not installed: add this line under [location] in offshoot.toml, \
                 so Offshoot runs `dbt deps` in each commit's checkout before `{}`:\n    prepare_command = \"dbt deps\"\n\
                 (offline, vendor the packages in the repository and name them in packages.yml as `- local: path/to/package`)",
                config.parse_command
            ),
            Some(prepare) => format!(
                "the packages are still missing after prepare_command `{prepare}`: it must install them (`dbt deps`)"
            ),
        }
    } else {
        format!("dbt's own message from `{}`", config.parse_command)
    };
    LocationError::Invalid(vec![Diagnostic::new(&path, (1, 1), message).hint(hint)])
}

/// The error dbt printed: the lines after "Encountered an error", without log timestamps.
pub(crate) fn dbt_error_message(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(strip_timestamp).collect();
    let start = lines.iter().position(|l| l.contains("Encountered an error")).map(|i| i + 1);
    let chosen: Vec<&str> = match start {
        Some(start) => {
            lines[start..].iter().copied().filter(|l| !l.trim().is_empty()).take(20).collect()
        }
        None => lines
            .iter()
            .rev()
            .copied()
            .filter(|l| !l.trim().is_empty())
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect(),
    };
    let message = chosen.iter().map(|l| l.trim_end()).collect::<Vec<_>>().join("\n");
    if message.is_empty() {
        "dbt failed without a message".to_owned()
    } else {
        message
    }
}

fn strip_timestamp(line: &str) -> &str {
    let bytes = line.as_bytes();
    if bytes.len() >= 10
        && bytes[2] == b':'
        && bytes[5] == b':'
        && bytes[..8].iter().enumerate().all(|(i, b)| i == 2 || i == 5 || b.is_ascii_digit())
    {
        line[8..].trim_start()
    } else {
        line
    }
}

/// The first `(path/to/file.sql)`-style file dbt names in a message.
fn mentioned_file(message: &str) -> Option<String> {
    for (open, _) in message.match_indices('(') {
        let rest = &message[open + 1..];
        let Some(close) = rest.find(')') else { continue };
        let inside = &rest[..close];
        let known =
            [".sql", ".yml", ".yaml", ".csv", ".py"].iter().any(|ext| inside.ends_with(ext));
        if known && !inside.contains(' ') && !inside.starts_with('/') && !inside.contains("..") {
            return Some(inside.to_owned());
        }
    }
    None
}

#[derive(Deserialize)]
pub(crate) struct DbtManifest {
    #[serde(default)]
    metadata: ManifestMetadata,
    #[serde(default)]
    nodes: BTreeMap<String, Node>,
    #[serde(default)]
    sources: BTreeMap<String, SourceNode>,
}

#[derive(Deserialize, Default)]
struct ManifestMetadata {
    #[serde(default)]
    adapter_type: Option<String>,
}

#[derive(Deserialize)]
struct Node {
    resource_type: String,
    name: String,
    #[serde(default)]
    original_file_path: String,
    #[serde(default)]
    fqn: Vec<String>,
    #[serde(default)]
    checksum: Option<Checksum>,
    #[serde(default)]
    config: serde_json::Map<String, Value>,
    #[serde(default)]
    unrendered_config: serde_json::Map<String, Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: serde_json::Map<String, Value>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    depends_on: DependsOn,
    #[serde(default)]
    raw_code: String,
    #[serde(default)]
    version: Option<Value>,
    /// Tests: which test (`unique`, `not_null`, ...) on which column of which node.
    #[serde(default)]
    test_metadata: Option<TestMetadata>,
    #[serde(default)]
    column_name: Option<String>,
    #[serde(default)]
    attached_node: Option<String>,
}

#[derive(Deserialize)]
struct TestMetadata {
    #[serde(default)]
    name: String,
}

/// A model's grain: its `unique_key` config, else the first column with both a `unique` and a
/// `not_null` test.
fn grain(unique_id: &str, node: &Node, manifest: &DbtManifest) -> Vec<String> {
    match node.config.get("unique_key") {
        Some(Value::String(key)) if !key.is_empty() => return vec![key.clone()],
        Some(Value::Array(keys)) => {
            let keys: Vec<String> =
                keys.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect();
            if !keys.is_empty() {
                return keys;
            }
        }
        _ => {}
    }
    let mut tests: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for test in manifest
        .nodes
        .values()
        .filter(|n| n.resource_type == "test" && n.attached_node.as_deref() == Some(unique_id))
    {
        if let (Some(column), Some(metadata)) =
            (test.column_name.as_deref(), test.test_metadata.as_ref())
        {
            tests.entry(column).or_default().insert(metadata.name.as_str());
        }
    }
    tests
        .iter()
        .find(|(_, names)| names.contains("unique") && names.contains("not_null"))
        .map(|(column, _)| vec![column.to_string()])
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Checksum {
    checksum: String,
}

#[derive(Deserialize, Default)]
struct DependsOn {
    #[serde(default)]
    nodes: Vec<String>,
}

#[derive(Deserialize)]
struct SourceNode {
    source_name: String,
    name: String,
    #[serde(default)]
    original_file_path: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: serde_json::Map<String, Value>,
    #[serde(default)]
    loader: String,
}

const BUILT_TYPES: [&str; 3] = ["model", "seed", "snapshot"];

/// The assets of a dbt manifest; problems (keys Offshoot cannot take) as diagnostics.
/// What the derived version hashes of a node's code: a model's (or snapshot's) SQL in canonical
/// form, its Jinja kept as tokens, so formatting, comments and case are no change; for seeds (and
/// manifests without `raw_code`) dbt's checksum of the file.
fn code_identity(node: &Node, adapter: &str) -> String {
    if node.resource_type == "seed" || node.raw_code.is_empty() {
        return node.checksum.as_ref().map_or(String::new(), |c| c.checksum.clone());
    }
    let dialect = if adapter == "postgres" {
        offshoot_project::Dialect::Postgres
    } else {
        offshoot_project::Dialect::Generic
    };
    format!(
        "{}\n{}",
        offshoot_project::canonical::version(),
        offshoot_project::canonical::canonical_template(&node.raw_code, dialect)
    )
}

pub(crate) fn snapshot_from_manifest(
    manifest: &DbtManifest,
    project_dir: &str,
    checkout: &Path,
) -> Result<Snapshot, Vec<Diagnostic>> {
    let in_repo = |path: &str| {
        if project_dir == "." {
            path.to_owned()
        } else {
            format!("{project_dir}/{path}")
        }
    };
    let adapter = manifest.metadata.adapter_type.clone().unwrap_or_else(|| "postgres".to_owned());
    let mut diagnostics = Vec::new();
    let mut keys: BTreeMap<&str, AssetKey> = BTreeMap::new();
    let mut assets = Vec::new();
    let key_for = |unique_id: &str, name: String, path: &str, diagnostics: &mut Vec<Diagnostic>| {
        match AssetKey::new(&name) {
            Ok(key) => Some(key),
            Err(error) => {
                diagnostics.push(
                    Diagnostic::new(
                        &in_repo(path),
                        (1, 1),
                        format!("dbt node `{unique_id}` cannot be an asset: {error}"),
                    )
                    .hint("rename it to letters, digits and `_`"),
                );
                None
            }
        }
    };
    for (unique_id, source) in &manifest.sources {
        let Some(key) = key_for(
            unique_id,
            format!("{}/{}", source.source_name, source.name),
            &source.original_file_path,
            &mut diagnostics,
        ) else {
            continue;
        };
        let mut asset = Asset::new(key.clone(), AssetKind::Source);
        asset.group = "sources".to_owned();
        asset.description = non_empty(&source.description);
        asset.tags = source.tags.iter().map(|t| (t.clone(), String::new())).collect();
        asset.metadata = canonical_map(&source.meta);
        asset.metadata.insert(UNIQUE_ID.to_owned(), unique_id.clone());
        if !source.loader.is_empty() {
            asset.metadata.insert("dbt/loader".to_owned(), source.loader.clone());
        }
        asset.owners = owners(&source.meta);
        asset.kinds = BTreeSet::from(["dbt".to_owned(), adapter.clone()]);
        asset.code_version = CodeVersion::derived("source");
        asset.location = Location { path: in_repo(&source.original_file_path), line: 1 };
        keys.insert(unique_id, key);
        assets.push(asset);
    }
    let mut seen: BTreeMap<AssetKey, &str> = BTreeMap::new();
    for (unique_id, node) in
        manifest.nodes.iter().filter(|(_, n)| BUILT_TYPES.contains(&n.resource_type.as_str()))
    {
        let name = match node.version.as_ref().filter(|v| !v.is_null()) {
            Some(version) => format!("{}_v{}", node.name, canonical(version)),
            None => node.name.clone(),
        };
        let Some(key) = key_for(unique_id, name, &node.original_file_path, &mut diagnostics) else {
            continue;
        };
        if let Some(other) = seen.insert(key.clone(), unique_id) {
            diagnostics.push(
                Diagnostic::new(
                    &in_repo(&node.original_file_path),
                    (1, 1),
                    format!("dbt nodes `{other}` and `{unique_id}` would both be asset `{key}`"),
                )
                .hint("give one of them another name"),
            );
            continue;
        }
        keys.insert(unique_id, key);
    }
    for (unique_id, node) in
        manifest.nodes.iter().filter(|(_, n)| BUILT_TYPES.contains(&n.resource_type.as_str()))
    {
        let Some(key) = keys.get(unique_id.as_str()).cloned() else { continue };
        let mut asset = Asset::new(key, AssetKind::Tool);
        asset.group = group(node);
        asset.description = non_empty(&node.description);
        asset.deps =
            node.depends_on.nodes.iter().filter_map(|d| keys.get(d.as_str()).cloned()).collect();
        asset.tags = node.tags.iter().map(|t| (t.clone(), String::new())).collect();
        asset.metadata = canonical_map(&node.meta);
        asset.metadata.insert(UNIQUE_ID.to_owned(), unique_id.clone());
        asset.owners = owners(&node.meta);
        asset.kinds = BTreeSet::from(["dbt".to_owned(), adapter.clone()]);
        if node.resource_type != "model" {
            asset.kinds.insert(node.resource_type.clone());
        }
        let mut config = node.unrendered_config.clone();
        config.retain(|k, _| !DESCRIPTIVE_CONFIG.contains(&k.as_str()));
        asset.code_version = CodeVersion::derived(sha256_hex(&[
            code_identity(node, &adapter).as_bytes(),
            b"\n",
            Value::Object(config).to_string().as_bytes(),
        ]));
        asset.code = Arc::from(if node.resource_type == "seed" {
            seed_code(checkout, &in_repo(&node.original_file_path))
        } else {
            node.raw_code.clone()
        });
        asset.location = Location { path: in_repo(&node.original_file_path), line: 1 };
        asset.grain = grain(unique_id, node, manifest);
        assets.push(asset);
    }
    if !diagnostics.is_empty() {
        diagnostics.sort();
        return Err(diagnostics);
    }
    Snapshot::new(assets).map_err(|e| {
        vec![tool_diagnostic(
            &in_repo("dbt_project.yml"),
            e.to_string(),
            "dbt's manifest.json is inconsistent",
        )]
    })
}

fn group(node: &Node) -> String {
    if let Some(Value::String(group)) = node.config.get("group") {
        return group.clone();
    }
    match node.resource_type.as_str() {
        "seed" => "seeds".to_owned(),
        "snapshot" => "snapshots".to_owned(),
        // fqn = [project, folders..., name]: the first folder under models/.
        _ if node.fqn.len() > 2 => node.fqn[1].clone(),
        _ => "default".to_owned(),
    }
}

fn seed_code(checkout: &Path, path: &str) -> String {
    let file = checkout.join(path);
    match std::fs::metadata(&file) {
        Ok(meta) if meta.len() <= MAX_SEED_CODE => {
            std::fs::read_to_string(&file).unwrap_or_default()
        }
        Ok(meta) => format!("-- seed {path}: {} bytes, not shown\n", meta.len()),
        Err(_) => String::new(),
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// JSON values as metadata: strings as they are, anything else as compact JSON (sorted keys).
fn canonical(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn canonical_map(map: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()
}

/// `meta.owner` (a string) or `meta.owners` (a list), as Dagster's dbt integration reads them.
fn owners(meta: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut owners = Vec::new();
    for key in ["owner", "owners"] {
        match meta.get(key) {
            Some(Value::String(owner)) => owners.push(owner.clone()),
            Some(Value::Array(list)) => {
                owners.extend(list.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_from_url() {
        let vars =
            connection_variables("postgres://dbt%40x:p%3Aw@db.example:6543/ware?sslmode=disable")
                .unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(get("OFFSHOOT_PG_USER"), "dbt@x");
        assert_eq!(get("OFFSHOOT_PG_PASSWORD"), "p:w");
        assert_eq!(get("OFFSHOOT_PG_HOST"), "db.example");
        assert_eq!(get("OFFSHOOT_PG_PORT"), "6543");
        assert_eq!(get("OFFSHOOT_PG_DATABASE"), "ware");
        assert!(connection_variables("sqlite:///tmp/x.db").unwrap_err().contains("PostgreSQL"));
    }

    fn manifest(orders_tags: &str, orders_sql: &str) -> DbtManifest {
        let text = format!(
            r#"{{"metadata": {{"adapter_type": "postgres"}},
            "sources": {{"source.shop.raw.orders": {{"source_name": "raw", "name": "orders", "original_file_path": "models/sources.yml", "meta": {{"owner": "ops@x"}}}}}},
            "nodes": {{
              "model.shop.stg_orders": {{"resource_type": "model", "name": "stg_orders", "original_file_path": "models/staging/stg_orders.sql",
                "fqn": ["shop", "staging", "stg_orders"], "checksum": {{"checksum": "{orders_sql}"}}, "tags": {orders_tags},
                "config": {{"materialized": "view"}}, "unrendered_config": {{"materialized": "view", "tags": {orders_tags}}},
                "depends_on": {{"nodes": ["source.shop.raw.orders", "macro.dbt.x"]}}, "raw_code": "select * from {{{{ source('raw', 'orders') }}}}{orders_sql}"}},
              "model.shop.dim.v2": {{"resource_type": "model", "name": "dim", "version": 2, "original_file_path": "models/dim_v2.sql",
                "fqn": ["shop", "dim"], "checksum": {{"checksum": "c2"}}, "depends_on": {{"nodes": ["model.shop.stg_orders", "seed.shop.codes"]}}}},
              "seed.shop.codes": {{"resource_type": "seed", "name": "codes", "original_file_path": "seeds/codes.csv", "checksum": {{"checksum": "c3"}}}},
              "test.shop.not_null_stg_orders_id.abc": {{"resource_type": "test", "name": "not_null_stg_orders_id", "depends_on": {{"nodes": ["model.shop.stg_orders"]}}}}
            }}}}"#
        );
        serde_json::from_str(&text).expect("a manifest")
    }

    #[test]
    fn manifest_to_snapshot() {
        let snapshot = snapshot_from_manifest(
            &manifest("[\"pii\"]", ""),
            "transform",
            Path::new("/nonexistent"),
        )
        .expect("valid");
        let keys: Vec<&str> = snapshot.assets().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["codes", "dim_v2", "raw/orders", "stg_orders"]);
        let stg = snapshot.get(&AssetKey::new("stg_orders").unwrap()).unwrap();
        assert_eq!(stg.kind, AssetKind::Tool);
        assert_eq!(stg.group, "staging");
        assert_eq!(stg.deps.iter().map(|k| k.as_str()).collect::<Vec<_>>(), ["raw/orders"]);
        assert_eq!(stg.location.path, "transform/models/staging/stg_orders.sql");
        assert_eq!(stg.tags.get("pii").map(String::as_str), Some(""));
        assert!(stg.kinds.contains("dbt") && stg.kinds.contains("postgres"));
        let dim = snapshot.get(&AssetKey::new("dim_v2").unwrap()).unwrap();
        assert_eq!(selector(dim), "dim.v2");
        assert_eq!(dim.deps.len(), 2);
        let source = snapshot.get(&AssetKey::new("raw/orders").unwrap()).unwrap();
        assert_eq!(
            (source.kind, source.owners.clone()),
            (AssetKind::Source, vec!["ops@x".to_owned()])
        );

        // Tags do not change the code version, nor do formatting, comments and case; the SQL does.
        let retagged = snapshot_from_manifest(
            &manifest("[\"pii\", \"gold\"]", ""),
            "transform",
            Path::new("/x"),
        )
        .expect("valid");
        let reformatted = snapshot_from_manifest(
            &manifest("[\"pii\"]", "\\n  -- a comment\\n"),
            "transform",
            Path::new("/x"),
        )
        .expect("valid");
        let edited = snapshot_from_manifest(
            &manifest("[\"pii\"]", " where id > 1"),
            "transform",
            Path::new("/x"),
        )
        .expect("valid");
        let version = |s: &Snapshot| {
            s.get(&AssetKey::new("stg_orders").unwrap()).unwrap().code_version.clone()
        };
        assert_eq!(version(&retagged), version(&snapshot));
        assert_eq!(version(&reformatted), version(&snapshot));
        assert_ne!(version(&edited), version(&snapshot));
    }

    #[test]
    fn run_results_become_step_outcomes() {
        let work =
            std::env::temp_dir().join(format!("offshoot-dbt-outcomes-{}", std::process::id()));
        let target = work.join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(
            target.join("run_results.json"),
            r#"{"results": [
                {"unique_id": "model.shop.stg_orders", "status": "success", "message": "SELECT 22", "adapter_response": {"rows_affected": 22}},
                {"unique_id": "test.shop.not_null_stg_orders_id.abc", "status": "fail", "message": "Got 1 result, configured to fail if != 0"},
                {"unique_id": "model.shop.dim.v2", "status": "skipped", "message": null},
                {"unique_id": "seed.shop.codes", "status": "error", "message": "Database Error in seed codes",
                 "timing": [{"name": "compile", "started_at": "2024-05-01T12:00:00.250000Z", "completed_at": "2024-05-01T12:00:00.500000Z"},
                            {"name": "execute", "started_at": "2024-05-01T12:00:00.500000Z", "completed_at": "2024-05-01T12:00:02.750000Z"}]},
                {"unique_id": "unit_test.shop.dim.dim_counts", "status": "fail", "message": "actual differs from expected"}
            ]}"#,
        )
        .unwrap();
        std::fs::write(target.join("manifest.json"), r#"{"nodes": {"test.shop.not_null_stg_orders_id.abc": {"attached_node": "model.shop.stg_orders"}},
            "unit_tests": {"unit_test.shop.dim.dim_counts": {"depends_on": {"nodes": ["model.shop.dim.v2"]}}}}"#).unwrap();
        let snapshot =
            snapshot_from_manifest(&manifest("[]", "c1"), ".", Path::new("/x")).expect("valid");
        let keys: Vec<AssetKey> =
            ["stg_orders", "dim_v2", "codes"].iter().map(|k| AssetKey::new(k).unwrap()).collect();
        let location = DbtLocation::new(DbtConfig {
            project_dir: ".".into(),
            parse_command: "dbt parse".into(),
            build_command: "dbt build".into(),
            prepare_command: None,
            timeout_seconds: 1,
        });
        let request = BuildRequest {
            keys: &keys,
            snapshot: &snapshot,
            checkout: Path::new("/x"),
            work_dir: &work,
            production_state: None,
            env: &[],
            sandbox: None,
        };
        let outcomes = location.build_outcomes(&request, &ToolOutput::default());
        let timings = location.build_timings(&request);
        let _ = std::fs::remove_dir_all(&work);
        assert_eq!(
            timings.get(&keys[2]),
            Some(&StepTiming { started_at: 1_714_564_800_250, finished_at: 1_714_564_802_750 })
        );
        assert_eq!(
            outcomes[&keys[0]],
            BuildOutcome::Failed { message: "built, but its tests failed: not_null_stg_orders_id: Got 1 result, configured to fail if != 0".into() }
        );
        // Its own unit test failed, so dbt skipped it: that is the model's failure.
        assert_eq!(
            outcomes[&keys[1]],
            BuildOutcome::Failed {
                message:
                    "not built: its unit tests failed: dim_counts: actual differs from expected"
                        .into()
            }
        );
        assert_eq!(
            outcomes[&keys[2]],
            BuildOutcome::Failed { message: "Database Error in seed codes".into() }
        );
    }

    #[test]
    fn missing_relations_in_branches_hint_at_the_grant() {
        let hint = grant_hint("Database Error in model stg_orders (models/staging/stg_orders.sql)\n  relation \"shop_raw.orders\" does not exist").unwrap();
        assert!(hint.contains("GRANT USAGE ON SCHEMA shop_raw TO <branch_role>"), "{hint}");
        assert_eq!(grant_hint("Database Error: division by zero"), None);
        assert_eq!(unix_millis("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(unix_millis("2000-03-01T00:00:00Z"), Some(951_868_800_000));
    }

    #[test]
    fn hostile_node_names_are_diagnostics() {
        let text = r#"{"nodes": {"model.s.bad": {"resource_type": "model", "name": "drop table; --", "original_file_path": "models/x.sql"}}}"#;
        let manifest: DbtManifest = serde_json::from_str(text).unwrap();
        let diagnostics = snapshot_from_manifest(&manifest, ".", Path::new("/x")).unwrap_err();
        assert_eq!(diagnostics[0].path, "models/x.sql");
        assert!(diagnostics[0].message.contains("cannot be an asset"), "{}", diagnostics[0]);
    }

    #[test]
    fn error_message_and_file() {
        let out = "12:00:00  Running with dbt=1.11.16\n12:00:01  Encountered an error:\nCompilation Error\n  Model 'model.s.a' (models/staging/a.sql) depends on a node named 'nope' which was not found\n";
        let message = dbt_error_message(out);
        assert_eq!(message, "Compilation Error\n  Model 'model.s.a' (models/staging/a.sql) depends on a node named 'nope' which was not found");
        assert_eq!(mentioned_file(&message).as_deref(), Some("models/staging/a.sql"));
    }
}
