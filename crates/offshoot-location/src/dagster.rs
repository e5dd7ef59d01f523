//! Dagster code locations. Loading runs a small entry point (`python/offshoot_dagster.py`,
//! embedded here) with the project's own Python: it imports the code location's `Definitions`
//! and prints every asset spec as JSON through Dagster's definitions API (`dg list defs --json`
//! leaves out code versions, partitions and metadata). Building runs
//! `python -m dagster asset materialize --select ...` with the deployment's environment,
//! including Dagster+'s own `DAGSTER_CLOUD_*` variables, and a fresh `DAGSTER_HOME` per run
//! whose event log tells which assets materialized.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use offshoot_core::fingerprint::sha256_hex;
use offshoot_core::{
    Asset, AssetKey, AssetKind, CodeVersion, CronSchedule, Location, PartitionsDefinition,
    Schedule, ScheduleOrigin, Selection, Snapshot, TimeCadence,
};
use offshoot_project::{DagsterConfig, Diagnostic, Manifest};
use serde::Deserialize;

use crate::prepare::{Prepare, PrepareFailure};
use crate::process::{self, ToolCommand, ToolOutput};
use crate::{
    lookup, tool_diagnostic, BuildOutcome, BuildRequest, CodeLocation, LoadInput, LocationError,
};

/// The entry point Offshoot runs in the project's Python.
pub const ENTRY_POINT: &str = include_str!("../python/offshoot_dagster.py");

pub struct DagsterLocation {
    config: DagsterConfig,
}

impl DagsterLocation {
    pub fn new(config: DagsterConfig) -> DagsterLocation {
        DagsterLocation { config }
    }

    fn working_directory(&self, checkout: &Path) -> PathBuf {
        checkout.join(&self.config.working_directory)
    }

    /// The project's Python: a path inside the repository when it has a `/`, else found on PATH.
    fn python(&self, checkout: &Path) -> String {
        if self.config.python.contains('/') && !self.config.python.starts_with('/') {
            checkout.join(&self.config.python).to_string_lossy().into_owned()
        } else {
            self.config.python.clone()
        }
    }

    /// `-m module` or `-f file`, and `-a attribute`: the same for the entry point and Dagster.
    fn target_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(module) = &self.config.module {
            args.extend(["-m".to_owned(), module.clone()]);
        } else if let Some(file) = &self.config.file {
            args.extend(["-f".to_owned(), file.clone()]);
        }
        if let Some(attribute) = &self.config.attribute {
            args.extend(["-a".to_owned(), attribute.clone()]);
        }
        args
    }

    fn write_entry_point(work_dir: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
        let path = work_dir.join("offshoot_dagster.py");
        std::fs::write(&path, ENTRY_POINT).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    fn environment(env: &[(String, String)]) -> Vec<(String, String)> {
        let mut all = env.to_vec();
        // Keep checkouts free of __pycache__ (they are shared by every run of the commit).
        all.push(("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()));
        all.push(("PYTHONUNBUFFERED".to_owned(), "1".to_owned()));
        all.extend(dagster_cloud_variables(env));
        all
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_seconds)
    }

    /// The project's prepare step in `checkout`, if it has one (see [`crate::prepare`]).
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
            cwd: self.working_directory(checkout),
            env: Self::environment(env),
            timeout: self.timeout(),
            sandbox,
            log,
        }
        .run()
    }
}

/// Dagster+'s variable names, from Offshoot's own ([`crate::deployment_environment`]), so code
/// that switches on them works as is: set where Dagster+ sets them, left out where it leaves
/// them out (no pull request in production; `DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT` only in a
/// branch). Loading and building get the same.
pub fn dagster_cloud_variables(env: &[(String, String)]) -> Vec<(String, String)> {
    let get = |name: &str| lookup(env, name).filter(|v| !v.is_empty());
    let pairs = [
        ("DAGSTER_CLOUD_DEPLOYMENT_NAME", "OFFSHOOT_DEPLOYMENT_NAME"),
        ("DAGSTER_CLOUD_LOCATION_NAME", "OFFSHOOT_LOCATION_NAME"),
        ("DAGSTER_CLOUD_GIT_SHA", "OFFSHOOT_GIT_SHA"),
        ("DAGSTER_CLOUD_GIT_BRANCH", "OFFSHOOT_GIT_BRANCH"),
        ("DAGSTER_CLOUD_GIT_TIMESTAMP", "OFFSHOOT_GIT_TIMESTAMP"),
        ("DAGSTER_CLOUD_GIT_AUTHOR_NAME", "OFFSHOOT_GIT_AUTHOR_NAME"),
        ("DAGSTER_CLOUD_GIT_AUTHOR_EMAIL", "OFFSHOOT_GIT_AUTHOR_EMAIL"),
        ("DAGSTER_CLOUD_GIT_MESSAGE", "OFFSHOOT_GIT_MESSAGE"),
        ("DAGSTER_CLOUD_GIT_REPO", "OFFSHOOT_GIT_REPO"),
        ("DAGSTER_CLOUD_GIT_URL", "OFFSHOOT_GIT_URL"),
        ("DAGSTER_CLOUD_PULL_REQUEST_ID", "OFFSHOOT_PULL_REQUEST_ID"),
        ("DAGSTER_CLOUD_PULL_REQUEST_STATUS", "OFFSHOOT_PULL_REQUEST_STATUS"),
    ];
    let mut vars: Vec<(String, String)> = pairs
        .iter()
        .filter_map(|(cloud, ours)| get(ours).map(|v| (cloud.to_string(), v)))
        .collect();
    // A timestamp of 0 is no commit's (a load without one).
    vars.retain(|(k, v)| !(k == "DAGSTER_CLOUD_GIT_TIMESTAMP" && v == "0"));
    // Dagster+ sets it to "1" in branch deployments and leaves it unset elsewhere.
    if get("OFFSHOOT_IS_BRANCH_DEPLOYMENT").as_deref() == Some("1") {
        vars.push(("DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT".to_owned(), "1".to_owned()));
    }
    vars
}

impl CodeLocation for DagsterLocation {
    fn kind(&self) -> &'static str {
        "dagster"
    }

    fn needs_checkout(&self) -> bool {
        true
    }

    fn load(&self, _manifest: &Manifest, input: &LoadInput<'_>) -> Result<Snapshot, LocationError> {
        let checkout = input
            .checkout
            .ok_or_else(|| LocationError::Tool("a dagster location needs a checkout".into()))?;
        let entry = Self::write_entry_point(input.work_dir).map_err(LocationError::Tool)?;
        self.prepare(checkout, input.env, input.sandbox, input.work_dir.join("prepare.log"))
            .map_err(|failure| {
                LocationError::Invalid(vec![Diagnostic::new(
                    offshoot_project::MANIFEST_PATH,
                    (1, 1),
                    failure.message,
                )
                .hint(format!("its output:\n{}", failure.output))])
            })?;
        let output_path = input.work_dir.join("defs.json");
        let error_path = input.work_dir.join("defs.json.error.json");
        let _ = std::fs::remove_file(&output_path);
        let _ = std::fs::remove_file(&error_path);
        let mut args = vec![
            entry.to_string_lossy().into_owned(),
            "defs".to_owned(),
            "--output".to_owned(),
            output_path.to_string_lossy().into_owned(),
        ];
        args.extend(self.target_args());
        let command = ToolCommand {
            program: self.python(checkout),
            args,
            cwd: self.working_directory(checkout),
            env: Self::environment(input.env),
            timeout: self.timeout(),
            sandbox: input.sandbox.cloned(),
        };
        let output = process::run(&command, &input.work_dir.join("defs.log"));
        if !output.success {
            if output
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("cannot start") || f.contains("did not finish"))
            {
                return Err(LocationError::Tool(format!(
                    "{} (the project's Python is `{}`: set [location] python, or put its environment on the server's PATH)",
                    output.failure.unwrap_or_default(),
                    self.config.python
                )));
            }
            let described: Option<ImportError> =
                std::fs::read(&error_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            return Err(LocationError::Invalid(vec![match described {
                Some(error) => import_error(&self.config, checkout, &error, &output.text),
                None => import_failure(&self.config, checkout, &output.text),
            }]));
        }
        let bytes = std::fs::read(&output_path).map_err(|e| {
            LocationError::Tool(format!("the entry point wrote no definitions: {e}"))
        })?;
        let defs: Defs = serde_json::from_slice(&bytes)
            .map_err(|e| LocationError::Tool(format!("cannot read the entry point's JSON: {e}")))?;
        snapshot_from_defs(&defs, &self.config).map_err(LocationError::Invalid)
    }

    fn schedules(&self, input: &LoadInput<'_>) -> Vec<Schedule> {
        let Ok(bytes) = std::fs::read(input.work_dir.join("defs.json")) else { return Vec::new() };
        match serde_json::from_slice::<Defs>(&bytes) {
            Ok(defs) => schedules_from_defs(&defs),
            Err(_) => Vec::new(),
        }
    }

    fn build_command(&self, request: &BuildRequest<'_>) -> Option<Result<ToolCommand, String>> {
        Some((|| {
            let home = request.work_dir.join("dagster_home");
            std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
            std::fs::write(
                home.join("dagster.yaml"),
                // Telemetry writes ~/.dagster, which a confined run may not.
                "# Written by Offshoot: one run's own instance.\ntelemetry:\n  enabled: false\n",
            )
            .map_err(|e| format!("{}: {e}", home.display()))?;
            let entry = Self::write_entry_point(request.work_dir)?;
            self.prepare(
                request.checkout,
                request.env,
                request.sandbox,
                request.work_dir.join("prepare.log"),
            )
            .map_err(|f| format!("{}\n{}", f.message, f.output))?;
            let selection: Vec<&str> = request.keys.iter().map(AssetKey::as_str).collect();
            // `dagster asset materialize` refuses partitioned assets without one partition key;
            // Offshoot builds whole assets, so those selections go through the entry point's
            // `materialize`, which executes the same job unpartitioned.
            let partitioned = request
                .keys
                .iter()
                .any(|k| request.snapshot.get(k).is_some_and(|a| a.partitions.is_some()));
            let mut args: Vec<String> = if partitioned {
                vec![entry.to_string_lossy().into_owned(), "materialize".to_owned()]
            } else {
                ["-m", "dagster", "asset", "materialize"].iter().map(|s| s.to_string()).collect()
            };
            args.push("--select".to_owned());
            args.push(selection.join(","));
            args.extend(self.target_args());
            let mut env = Self::environment(request.env);
            env.push(("DAGSTER_HOME".to_owned(), home.to_string_lossy().into_owned()));
            // Dagster writes user-level telemetry to `~/.dagster` whatever DAGSTER_HOME says;
            // a confined process may not create it in the real home, so the run has its own.
            env.push(("HOME".to_owned(), home.to_string_lossy().into_owned()));
            Ok(ToolCommand {
                program: self.python(request.checkout),
                args,
                cwd: self.working_directory(request.checkout),
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
        let report = request.work_dir.join("results.json");
        let entry = request.work_dir.join("offshoot_dagster.py");
        let command = ToolCommand {
            program: self.python(request.checkout),
            args: vec![
                entry.to_string_lossy().into_owned(),
                "results".to_owned(),
                "--output".to_owned(),
                report.to_string_lossy().into_owned(),
            ],
            cwd: self.working_directory(request.checkout),
            env: {
                let mut env = Self::environment(request.env);
                let home = request.work_dir.join("dagster_home").to_string_lossy().into_owned();
                env.push(("DAGSTER_HOME".to_owned(), home.clone()));
                env.push(("HOME".to_owned(), home));
                env
            },
            timeout: self.timeout(),
            sandbox: request.sandbox.cloned(),
        };
        let read = process::run(&command, &request.work_dir.join("results.log"));
        let results: Option<RunReport> = read
            .success
            .then(|| std::fs::read(&report).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut outcomes = BTreeMap::new();
        let Some(results) = results else {
            let why =
                output.failure.clone().unwrap_or_else(|| "Dagster's run left no event log".into());
            for key in request.keys {
                outcomes.insert(
                    key.clone(),
                    BuildOutcome::Failed {
                        message: format!("{why}: {}", process::last_lines(&output.text, 6, |l| l)),
                    },
                );
            }
            return outcomes;
        };
        let materialized: BTreeSet<String> =
            results.materialized.iter().map(|k| k.join("/")).collect();
        let failed_steps: BTreeMap<&str, &str> = results
            .failed
            .iter()
            .filter_map(|f| Some((f.step.as_deref()?, f.message.as_str())))
            .collect();
        for key in request.keys {
            let outcome = if materialized.contains(key.as_str()) {
                BuildOutcome::Succeeded { rows: None }
            } else if let Some(message) =
                failed_steps.get(key.as_str().replace('/', "__").as_str()).or_else(|| {
                    op_of(request.snapshot, key).and_then(|op| failed_steps.get(op.as_str()))
                })
            {
                BuildOutcome::Failed { message: message.to_string() }
            } else if !output.success && results.failed.is_empty() {
                BuildOutcome::Failed {
                    message: format!(
                        "{}: {}",
                        output.failure.clone().unwrap_or_default(),
                        process::last_lines(&output.text, 6, |l| l)
                    ),
                }
            } else {
                BuildOutcome::Skipped {
                    message: "Dagster did not materialize it: an upstream step failed".into(),
                }
            };
            outcomes.insert(key.clone(), outcome);
        }
        outcomes
    }
}

fn op_of(snapshot: &Snapshot, key: &AssetKey) -> Option<String> {
    snapshot.get(key).and_then(|a| a.metadata.get(OP_NAME).cloned())
}

/// The op that materializes an asset, for mapping Dagster's step failures to assets. Kept in
/// the metadata (Dagster's differ sees no such entry; it only changes when the op is renamed).
const OP_NAME: &str = "dagster/op_name";

#[derive(Deserialize)]
struct RunReport {
    #[serde(default)]
    materialized: Vec<Vec<String>>,
    #[serde(default)]
    failed: Vec<FailedStep>,
}

#[derive(Deserialize)]
struct FailedStep {
    /// `None` for a failure of the run itself (no step).
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
pub(crate) struct Defs {
    assets: Vec<AssetSpec>,
    #[serde(default)]
    schedules: Vec<ScheduleSpec>,
}

/// A `ScheduleDefinition` as the entry point describes it (`describe_schedule`).
#[derive(Deserialize)]
struct ScheduleSpec {
    name: String,
    cron: Vec<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    keys: Vec<Vec<String>>,
    #[serde(default)]
    problem: Option<String>,
}

/// The Dagster schedules Offshoot can list, each with its job's assets as a selection (`key:"a"
/// or key:"b"`), or with the problem that keeps it from running: a job of ops, several cron
/// patterns, a key or selection Offshoot cannot express. One whose pattern or zone does not parse
/// (Dagster checks both when it defines them) or whose name is not a schedule name is left out.
fn schedules_from_defs(defs: &Defs) -> Vec<Schedule> {
    let mut schedules = Vec::new();
    for spec in &defs.schedules {
        let Some(pattern) = spec.cron.first() else { continue };
        if Schedule::valid_name(&spec.name).is_err() {
            continue;
        }
        let Ok(cron) = CronSchedule::parse(pattern, spec.timezone.as_deref().unwrap_or("UTC"))
        else {
            continue;
        };
        let mut problem = spec.problem.clone();
        if spec.cron.len() > 1 {
            problem.get_or_insert_with(|| {
                format!(
                    "it has {} cron patterns ({}); Offshoot runs schedules of one",
                    spec.cron.len(),
                    spec.cron.join(", ")
                )
            });
        }
        let mut keys = Vec::new();
        for parts in &spec.keys {
            match AssetKey::from_parts(parts) {
                Ok(key) => keys.push(format!("key:\"{}\"", key.as_str())),
                Err(error) => {
                    problem.get_or_insert_with(|| format!("asset key {parts:?}: {error}"));
                }
            }
        }
        let selection = keys.join(" or ");
        if problem.is_none() {
            if let Err(error) = Selection::parse(&selection) {
                problem = Some(format!("its job's assets as a selection: {}", error.message));
            }
        }
        schedules.push(Schedule {
            name: spec.name.clone(),
            cron,
            selection,
            origin: ScheduleOrigin::Dagster { job: spec.job.clone().unwrap_or_default() },
            problem,
        });
    }
    schedules
}

#[derive(Deserialize)]
struct AssetSpec {
    key: Vec<String>,
    kind: String,
    #[serde(default)]
    deps: Vec<Vec<String>>,
    #[serde(default)]
    code_version: Option<String>,
    #[serde(default)]
    source_hash: Option<String>,
    #[serde(default)]
    code: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    line: u32,
    #[serde(default)]
    op_name: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    partitions: Option<PartitionsSpec>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    owners: Vec<String>,
    /// Columns that identify a row, from `dagster/column_schema`'s constraints.
    #[serde(default)]
    grain: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum PartitionsSpec {
    Time {
        cadence: String,
        start: String,
        #[serde(default)]
        end: Option<String>,
    },
    Static {
        keys: Vec<String>,
    },
    Other {
        description: String,
    },
}

fn snapshot_from_defs(defs: &Defs, config: &DagsterConfig) -> Result<Snapshot, Vec<Diagnostic>> {
    let definitions_path = definitions_path(config);
    let in_repo = |path: &str| {
        if path.is_empty() {
            definitions_path.clone()
        } else if config.working_directory == "." {
            path.to_owned()
        } else {
            format!("{}/{path}", config.working_directory)
        }
    };
    let mut diagnostics = Vec::new();
    let mut assets = Vec::new();
    let key = |parts: &[String], path: &str, diagnostics: &mut Vec<Diagnostic>| {
        match AssetKey::from_parts(parts) {
            Ok(key) => Some(key),
            Err(error) => {
                diagnostics.push(
                    Diagnostic::new(
                        path,
                        (1, 1),
                        format!("Dagster asset key {parts:?} cannot be an Offshoot key: {error}"),
                    )
                    .hint("use key parts of letters, digits, `_` and `-`"),
                );
                None
            }
        }
    };
    for spec in &defs.assets {
        let path = in_repo(&spec.path);
        let Some(asset_key) = key(&spec.key, &path, &mut diagnostics) else { continue };
        let kind = if spec.kind == "source" { AssetKind::Source } else { AssetKind::Tool };
        let mut asset = Asset::new(asset_key, kind);
        asset.deps = spec.deps.iter().filter_map(|d| key(d, &path, &mut diagnostics)).collect();
        asset.group =
            spec.group.clone().filter(|g| !g.is_empty()).unwrap_or_else(|| "default".to_owned());
        asset.description = spec.description.clone().filter(|d| !d.trim().is_empty());
        asset.tags = spec.tags.clone();
        asset.metadata = spec.metadata.clone();
        if let Some(op) = &spec.op_name {
            asset.metadata.insert(OP_NAME.to_owned(), op.clone());
        }
        asset.owners = spec.owners.clone();
        asset.grain = spec.grain.clone();
        asset.kinds = spec.kinds.iter().cloned().collect();
        asset.code = Arc::from(spec.code.as_str());
        asset.code_version = match &spec.code_version {
            Some(version) => CodeVersion::explicit(version.clone()),
            // Dagster compares nothing when no code version is set; Offshoot derives one from
            // the function's source so an edit still shows (documented in README.md).
            None => CodeVersion::derived(
                spec.source_hash.clone().unwrap_or_else(|| sha256_hex(&[spec.code.as_bytes()])),
            ),
        };
        asset.partitions = match &spec.partitions {
            None => None,
            Some(PartitionsSpec::Static { keys }) => {
                Some(PartitionsDefinition::Static { keys: keys.clone() })
            }
            Some(PartitionsSpec::Other { description }) => {
                Some(PartitionsDefinition::Other { description: description.clone() })
            }
            Some(PartitionsSpec::Time { cadence, start, end }) => {
                Some(match TimeCadence::parse(cadence) {
                    Some(cadence) => PartitionsDefinition::Time {
                        cadence,
                        start: start.clone(),
                        end: end.clone(),
                    },
                    None => PartitionsDefinition::Other {
                        description: format!("{cadence} from {start}"),
                    },
                })
            }
        };
        asset.location = Location { path, line: spec.line };
        assets.push(asset);
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    // External deps Dagster lets a spec name without defining them become sources, as Dagster
    // shows them.
    let known: BTreeSet<AssetKey> = assets.iter().map(|a| a.key.clone()).collect();
    let missing: BTreeSet<AssetKey> = assets
        .iter()
        .flat_map(|a| a.deps.iter())
        .filter(|d| !known.contains(*d))
        .cloned()
        .collect();
    for key in missing {
        let mut source = Asset::new(key, AssetKind::Source);
        source.code_version = CodeVersion::derived("source");
        source.location = Location { path: definitions_path.clone(), line: 0 };
        assets.push(source);
    }
    Snapshot::new(assets).map_err(|e| {
        vec![tool_diagnostic(
            &definitions_path,
            e.to_string(),
            "the Dagster definitions are inconsistent",
        )]
    })
}

/// An import error as a diagnostic: Python's last line as the message, at the deepest frame
/// inside the checkout, with the traceback as the hint.
fn import_failure(config: &DagsterConfig, checkout: &Path, text: &str) -> Diagnostic {
    let checkout_text = checkout.to_string_lossy().into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut place: Option<(String, u32)> = None;
    for line in &lines {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("File \"") else { continue };
        let Some((file, after)) = rest.split_once('"') else { continue };
        let Some(relative) = file.strip_prefix(&checkout_text).map(|p| p.trim_start_matches('/'))
        else {
            continue;
        };
        let number = after
            .trim_start_matches(", line ")
            .split(',')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(1);
        place = Some((relative.to_owned(), number));
    }
    // The error line: the last line of the traceback that is not Offshoot's own note.
    let message = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("offshoot:")
                && !l.starts_with("File ")
                && !l.starts_with('^')
                && !l.starts_with(['├', '└', '│'])
        })
        .unwrap_or("the Dagster definitions could not be imported")
        .to_owned();
    let (path, line) = place
        .unwrap_or_else(|| (config.file.clone().unwrap_or_else(|| "offshoot.toml".to_owned()), 1));
    let excerpt: Vec<&str> = lines.iter().rev().take(14).rev().copied().collect();
    Diagnostic::new(&path, (line, 1), message)
        .hint(format!("Python's own message:\n{}", excerpt.join("\n")))
}

/// What the entry point wrote about a failed import (`OUTPUT.error.json`).
#[derive(Deserialize)]
struct ImportError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
    /// The root exception's traceback, outermost first.
    #[serde(default)]
    root_frames: Vec<(String, u32)>,
    /// Every exception's of the chain, outermost first.
    #[serde(default)]
    frames: Vec<(String, u32)>,
    /// The exceptions that wrapped the root (Dagster's component tree among them).
    #[serde(default)]
    wrappers: Vec<ErrorSummary>,
}

#[derive(Deserialize)]
struct ErrorSummary {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

/// An import error as a diagnostic: the root exception's type and message first, at the deepest
/// frame of its traceback inside the checkout (else of any exception that wrapped it); what
/// wrapped it (Dagster's component tree) and the traceback's end follow in the hint.
fn import_error(
    config: &DagsterConfig,
    checkout: &Path,
    error: &ImportError,
    text: &str,
) -> Diagnostic {
    let roots: Vec<String> = std::iter::once(checkout.to_path_buf())
        .chain(std::fs::canonicalize(checkout).ok())
        .map(|p| p.to_string_lossy().trim_end_matches('/').to_owned())
        .collect();
    let in_repo = |file: &str| {
        roots.iter().find_map(|root| {
            file.strip_prefix(root.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|rest| !rest.starts_with("..") && !rest.contains("/site-packages/"))
                .map(str::to_owned)
        })
    };
    let deepest = |frames: &[(String, u32)]| {
        frames.iter().rev().find_map(|(file, line)| in_repo(file).map(|path| (path, *line)))
    };
    let (path, line) = deepest(&error.root_frames)
        .or_else(|| deepest(&error.frames))
        .unwrap_or_else(|| (definitions_path(config), 1));
    let first_line = error.message.lines().next().unwrap_or("").trim();
    let message = if first_line.is_empty() {
        error.kind.clone()
    } else {
        format!("{}: {}", error.kind, error.message.trim())
    };
    // Paths in the checkout as the repository names them.
    let relative: Vec<(String, String)> =
        roots.iter().map(|r| (r.clone(), ".".to_owned())).collect();
    let message = crate::replace_environment_values(&message, &relative);
    let mut hint = String::new();
    for wrapper in &error.wrappers {
        hint.push_str(&format!("raised through {}: {}\n", wrapper.kind, wrapper.message.trim()));
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("offshoot:")).collect();
    let excerpt: Vec<&str> = lines.iter().rev().take(14).rev().copied().collect();
    hint.push_str(&format!("Python's own message ends:\n{}", excerpt.join("\n")));
    Diagnostic::new(&path, (line.max(1), 1), message).hint(hint)
}

/// The file that holds the Definitions, relative to the repository root.
fn definitions_path(config: &DagsterConfig) -> String {
    config.file.clone().unwrap_or_else(|| {
        let module = config.module.clone().unwrap_or_default().replace('.', "/");
        let base = if config.working_directory == "." {
            String::new()
        } else {
            format!("{}/", config.working_directory)
        };
        format!("{base}{module}.py")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DagsterConfig {
        DagsterConfig {
            module: Some("shop.definitions".into()),
            file: None,
            attribute: None,
            python: "python".into(),
            working_directory: "orchestration".into(),
            prepare_command: None,
            timeout_seconds: 1,
        }
    }

    #[test]
    fn asset_specs_to_snapshot() {
        let json = r#"{"assets": [
            {"key": ["raw", "orders"], "kind": "asset", "deps": [["exports", "orders_csv"]], "code_version": null, "source_hash": "abc",
             "code": "def load(): ...", "path": "shop/raw.py", "line": 12, "op_name": "load", "tags": {"dagster/kind/python": ""},
             "metadata": {"grain": "order"}, "partitions": {"type": "time", "cadence": "daily", "start": "2024-01-01", "end": null},
             "group": "raw", "owners": ["team:a"], "kinds": ["python"], "description": "Orders"},
            {"key": ["stg"], "kind": "asset", "deps": [["raw", "orders"]], "code_version": "7", "partitions": {"type": "other", "description": "cron 5 4 * * *"}}
        ]}"#;
        let defs: Defs = serde_json::from_str(json).expect("json");
        let snapshot = snapshot_from_defs(&defs, &config()).expect("valid");
        let keys: Vec<&str> = snapshot.assets().map(|a| a.key.as_str()).collect();
        // The undefined dep becomes a source, as Dagster shows it.
        assert_eq!(keys, ["exports/orders_csv", "raw/orders", "stg"]);
        let raw = snapshot.get(&AssetKey::new("raw/orders").unwrap()).unwrap();
        assert_eq!(
            (raw.kind, raw.code_version.derived, raw.code_version.value.as_str()),
            (AssetKind::Tool, true, "abc")
        );
        assert_eq!(raw.location.path, "orchestration/shop/raw.py");
        assert_eq!(raw.metadata.get(OP_NAME).map(String::as_str), Some("load"));
        assert_eq!(
            raw.partitions.as_ref().map(|p| p.to_string()).as_deref(),
            Some("daily from 2024-01-01")
        );
        let stg = snapshot.get(&AssetKey::new("stg").unwrap()).unwrap();
        assert_eq!((stg.code_version.derived, stg.code_version.value.as_str()), (false, "7"));
        assert_eq!(
            stg.partitions.as_ref().map(|p| p.to_string()).as_deref(),
            Some("cron 5 4 * * *")
        );
        assert_eq!(
            snapshot.get(&AssetKey::new("exports/orders_csv").unwrap()).unwrap().kind,
            AssetKind::Source
        );
    }

    #[test]
    fn schedules_become_selections_or_say_why_not() {
        let defs: Defs = serde_json::from_str(
            r#"{"assets": [], "schedules": [
                {"name": "nightly", "cron": ["0 2 * * *"], "timezone": "Europe/Berlin", "job": "daily", "keys": [["a"], ["shop", "b"]]},
                {"name": "ops", "cron": ["0 3 * * *"], "timezone": null, "job": "op_job", "keys": [], "problem": "its job `op_job` runs ops, not assets"},
                {"name": "twice", "cron": ["0 3 * * *", "0 4 * * *"], "job": "daily", "keys": [["a"]]},
                {"name": "broken", "cron": ["not a pattern"], "job": "daily", "keys": [["a"]]},
                {"name": "bad key", "cron": ["0 3 * * *"], "job": "daily", "keys": [["a"]]}
            ]}"#,
        )
        .expect("json");
        let rendered: Vec<String> = schedules_from_defs(&defs)
            .iter()
            .map(|s| {
                format!(
                    "{} {} in {} runs {:?} ({:?}) problem {:?}",
                    s.name,
                    s.cron.pattern(),
                    s.cron.timezone(),
                    s.selection,
                    s.origin,
                    s.problem
                )
            })
            .collect();
        assert_eq!(
            rendered,
            [
                r#"nightly 0 2 * * * in Europe/Berlin runs "key:\"a\" or key:\"shop/b\"" (Dagster { job: "daily" }) problem None"#,
                r#"ops 0 3 * * * in UTC runs "" (Dagster { job: "op_job" }) problem Some("its job `op_job` runs ops, not assets")"#,
                r#"twice 0 3 * * * in UTC runs "key:\"a\"" (Dagster { job: "daily" }) problem Some("it has 2 cron patterns (0 3 * * *, 0 4 * * *); Offshoot runs schedules of one")"#,
            ]
        );
    }

    #[test]
    fn hostile_keys_and_cycles_are_diagnostics() {
        let defs: Defs = serde_json::from_str(
            r#"{"assets": [{"key": ["a b", "../x"], "kind": "asset", "path": "shop/a.py"}]}"#,
        )
        .unwrap();
        let diagnostics = snapshot_from_defs(&defs, &config()).unwrap_err();
        assert_eq!(diagnostics[0].path, "orchestration/shop/a.py");
        assert!(diagnostics[0].message.contains("cannot be an Offshoot key"), "{}", diagnostics[0]);
        let cycle: Defs = serde_json::from_str(r#"{"assets": [{"key": ["a"], "kind": "asset", "deps": [["b"]]}, {"key": ["b"], "kind": "asset", "deps": [["a"]]}]}"#).unwrap();
        let diagnostics = snapshot_from_defs(&cycle, &config()).unwrap_err();
        assert!(diagnostics[0].message.contains("cycle"), "{}", diagnostics[0]);
    }

    #[test]
    fn import_errors_point_into_the_repository() {
        let checkout = Path::new("/data/checkouts/abc");
        let text = "Traceback (most recent call last):\n  File \"/venv/lib/python3.11/importlib/__init__.py\", line 126, in import_module\n  File \"/data/checkouts/abc/orchestration/shop/staging.py\", line 4, in <module>\n    import no_such_module\nModuleNotFoundError: No module named 'no_such_module'\noffshoot: could not load the Dagster definitions from module shop.definitions\n";
        let diagnostic = import_failure(&config(), checkout, text);
        assert_eq!(
            (diagnostic.path.as_str(), diagnostic.line),
            ("orchestration/shop/staging.py", 4)
        );
        assert_eq!(diagnostic.message, "ModuleNotFoundError: No module named 'no_such_module'");
    }

    #[test]
    fn import_errors_lead_with_the_root_exception() {
        let checkout = Path::new("/data/checkouts/abc");
        let error: ImportError = serde_json::from_str(r#"{
            "type": "DagsterDbtManifestNotFoundError",
            "message": "/data/checkouts/abc/dbt_project/target/manifest.json does not exist.",
            "root_frames": [["/data/checkouts/abc/orchestration/shop/defs/dbt.py", 12],
                            ["/venv/lib/python3.11/site-packages/dagster_dbt/dbt_manifest.py", 40]],
            "frames": [["/venv/lib/python3.11/site-packages/dagster/components/core/component_tree.py", 130],
                       ["/data/checkouts/abc/orchestration/shop/definitions.py", 3]],
            "wrappers": [{"type": "ComponentTreeException", "message": "Error while loading component at defs/dbt:\n└── defs/dbt.py (loaded)"}]
        }"#).unwrap();
        let text = "Traceback...\nComponentTreeException: Error while loading component at defs/dbt:\n└── defs/dbt.py (loaded)\noffshoot: could not load\n";
        let diagnostic = import_error(&config(), checkout, &error, text);
        assert_eq!(
            (diagnostic.path.as_str(), diagnostic.line),
            ("orchestration/shop/defs/dbt.py", 12)
        );
        assert!(
            diagnostic.message.starts_with(
                "DagsterDbtManifestNotFoundError: dbt_project/target/manifest.json does not exist"
            ),
            "{}",
            diagnostic.message
        );
        let hint = diagnostic.hint.clone().unwrap_or_default();
        assert!(hint.starts_with("raised through ComponentTreeException"), "{hint}");
        // Without a root frame in the repository: the deepest frame of any wrapper that is.
        let outside = ImportError { root_frames: vec![], ..error };
        let diagnostic = import_error(&config(), checkout, &outside, text);
        assert_eq!(
            (diagnostic.path.as_str(), diagnostic.line),
            ("orchestration/shop/definitions.py", 3)
        );
    }

    #[test]
    fn cloud_variables_follow_offshoots() {
        let env = vec![
            ("OFFSHOOT_DEPLOYMENT_NAME".to_owned(), "feature-x".to_owned()),
            ("OFFSHOOT_IS_BRANCH_DEPLOYMENT".to_owned(), "1".to_owned()),
            ("OFFSHOOT_GIT_SHA".to_owned(), "abc".to_owned()),
            ("OFFSHOOT_PULL_REQUEST_ID".to_owned(), "7".to_owned()),
        ];
        let vars = dagster_cloud_variables(&env);
        assert!(
            vars.contains(&("DAGSTER_CLOUD_DEPLOYMENT_NAME".to_owned(), "feature-x".to_owned()))
        );
        assert!(vars.contains(&("DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT".to_owned(), "1".to_owned())));
        assert!(vars.contains(&("DAGSTER_CLOUD_PULL_REQUEST_ID".to_owned(), "7".to_owned())));
        let production = dagster_cloud_variables(&[(
            "OFFSHOOT_IS_BRANCH_DEPLOYMENT".to_owned(),
            "0".to_owned(),
        )]);
        assert!(production.iter().all(|(k, _)| k != "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT"));
    }
}
