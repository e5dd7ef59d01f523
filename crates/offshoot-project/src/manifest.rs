//! `offshoot.toml`: the project's name, SQL dialect, production branch, declared externals and
//! sources.
//!
//! ```toml
//! [project]
//! name = "shop"
//! dialect = "sqlite"            # generic (default), sqlite or postgres
//! production_branch = "main"
//! external = ["sqlite_master"]  # tables read but neither assets nor tracked sources
//!
//! [location]                  # optional: who defines and builds the assets
//! type = "native"               # native (default), dbt or dagster; see `LocationConfig`
//!
//! [sources.raw_orders]
//! description = "Orders exported nightly by the shop database"
//! tags = { owner = "ops" }
//!
//! [[schedules]]                 # run in production; off in branch deployments unless switched on
//! name = "nightly"
//! cron = "0 2 * * *"            # five fields: minute hour day-of-month month day-of-week
//! timezone = "Europe/Berlin"    # an IANA time zone (default UTC)
//! selection = "group:marts+"    # what a tick materializes (default `*`, everything)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use offshoot_core::{
    Asset, AssetKey, AssetKind, CodeVersion, CronSchedule, Location, Schedule, ScheduleOrigin,
    Selection,
};
use serde::Deserialize;

use crate::diagnostic::{toml_error_message, toml_error_position, Diagnostic};
use crate::toml_value;
use crate::MANIFEST_PATH;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Generic,
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn parse(name: &str) -> Option<Dialect> {
        Some(match name {
            "generic" => Dialect::Generic,
            "sqlite" => Dialect::Sqlite,
            "postgres" | "postgresql" => Dialect::Postgres,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Generic => "generic",
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub dialect: Dialect,
    pub production_branch: String,
    /// Lower-cased names (qualified or not) that SQL may read without them being assets.
    pub external: Vec<String>,
    pub sources: Vec<Asset>,
    pub location: LocationConfig,
    /// `[project] untracked_metadata`: patterns of metadata keys change tracking ignores (values
    /// that depend on where or when a commit is loaded: hostnames, timestamps, names built from
    /// the deployment). `*` matches any run of characters.
    pub untracked_metadata: Vec<String>,
    /// `[[schedules]]`, valid ones only (the others are diagnostics).
    pub schedules: Vec<Schedule>,
}

impl Manifest {
    /// Whether change tracking ignores metadata `key` (`[project] untracked_metadata`).
    pub fn untracked(&self, key: &str) -> bool {
        self.untracked_metadata.iter().any(|pattern| glob_match(pattern, key))
    }
}

/// `*` matches any run of characters (`/` included); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The project's code location: what turns a commit into assets and builds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationConfig {
    /// SQL and command assets under `assets/`, read from the commit's tree.
    Native,
    Dbt(DbtConfig),
    Dagster(DagsterConfig),
}

impl LocationConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            LocationConfig::Native => "native",
            LocationConfig::Dbt(_) => "dbt",
            LocationConfig::Dagster(_) => "dagster",
        }
    }
}

/// `[location] type = "dbt"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbtConfig {
    /// Where `dbt_project.yml` is, relative to the repository root.
    pub project_dir: String,
    /// A shell command run in `project_dir` that writes `manifest.json` (default `dbt parse`).
    pub parse_command: String,
    /// A shell command that builds a selection; Offshoot appends `--select KEY...`
    /// (default `dbt build`).
    pub build_command: String,
    /// A shell command run in `project_dir` of the checkout before loading and before each build
    /// (`dbt deps`), once per commit and content of the lock files.
    pub prepare_command: Option<String>,
    pub timeout_seconds: u64,
}

/// `[location] type = "dagster"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagsterConfig {
    /// `-m`: a module importable from `working_directory`; or `file` (`-f`), exactly one.
    pub module: Option<String>,
    pub file: Option<String>,
    /// The `Definitions` attribute (default: `defs`, or the only `Definitions` in the module).
    pub attribute: Option<String>,
    /// The project's Python: a program on PATH or a path relative to the repository root.
    pub python: String,
    pub working_directory: String,
    /// A shell command run in `working_directory` of the checkout before loading and before each
    /// build (a dagster-dbt project's `dbt parse`), once per commit and content of the lock files.
    pub prepare_command: Option<String>,
    pub timeout_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    project: ProjectSection,
    #[serde(default)]
    location: Option<toml::Spanned<LocationSection>>,
    #[serde(default)]
    sources: BTreeMap<String, SourceSection>,
    #[serde(default)]
    schedules: Vec<toml::Spanned<ScheduleSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSection {
    name: toml::Spanned<String>,
    cron: toml::Spanned<String>,
    #[serde(default)]
    timezone: Option<toml::Spanned<String>>,
    #[serde(default)]
    selection: Option<toml::Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationSection {
    #[serde(rename = "type")]
    kind: toml::Spanned<String>,
    #[serde(default)]
    project_dir: Option<toml::Spanned<String>>,
    #[serde(default)]
    parse_command: Option<String>,
    #[serde(default)]
    build_command: Option<String>,
    #[serde(default)]
    prepare_command: Option<toml::Spanned<String>>,
    #[serde(default)]
    module: Option<toml::Spanned<String>>,
    #[serde(default)]
    file: Option<toml::Spanned<String>>,
    #[serde(default)]
    attribute: Option<toml::Spanned<String>>,
    #[serde(default)]
    python: Option<String>,
    #[serde(default)]
    working_directory: Option<toml::Spanned<String>>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectSection {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    dialect: Option<toml::Spanned<String>>,
    #[serde(default)]
    production_branch: Option<String>,
    #[serde(default)]
    external: Vec<String>,
    #[serde(default)]
    untracked_metadata: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    metadata: BTreeMap<String, toml::Value>,
    #[serde(default)]
    owners: Vec<String>,
}

/// Parses the manifest; problems go to `diagnostics` and the result is `None` only when the file
/// cannot be understood at all.
pub fn parse(text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Manifest> {
    let file: ManifestFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(error) => {
            diagnostics.push(
                Diagnostic::new(MANIFEST_PATH, toml_error_position(text, &error, 0), toml_error_message(&error))
                    .hint("offshoot.toml needs a [project] table with `name`; see README.md for every key"),
            );
            return None;
        }
    };
    let dialect = match &file.project.dialect {
        None => Dialect::Generic,
        Some(name) => Dialect::parse(name.get_ref()).unwrap_or_else(|| {
            let position = crate::diagnostic::line_column(text, name.span().start);
            diagnostics.push(
                Diagnostic::new(
                    MANIFEST_PATH,
                    position,
                    format!("unknown SQL dialect `{}`", name.get_ref()),
                )
                .hint("use \"generic\", \"sqlite\" or \"postgres\""),
            );
            Dialect::Generic
        }),
    };
    let mut sources = Vec::new();
    for (name, section) in file.sources {
        let line = text
            .lines()
            .position(|l| l.contains("sources") && l.contains(name.as_str()))
            .map_or(1, |i| i as u32 + 1);
        let key = match AssetKey::identifier(&name) {
            Ok(key) => key,
            Err(error) => {
                diagnostics.push(
                    Diagnostic::new(
                        MANIFEST_PATH,
                        (line, 1),
                        format!("invalid source name `{name}`: {error}"),
                    )
                    .hint("source names are table names: letters, digits and `_`"),
                );
                continue;
            }
        };
        let mut asset = Asset::new(key, AssetKind::Source);
        asset.group = section.group.unwrap_or_else(|| "sources".to_owned());
        asset.description = section.description;
        asset.tags = section.tags;
        asset.metadata =
            section.metadata.iter().map(|(k, v)| (k.clone(), toml_value::canonical(v))).collect();
        asset.owners = section.owners;
        asset.code = Arc::from("");
        asset.code_version = CodeVersion::derived("source");
        asset.location = Location { path: MANIFEST_PATH.to_owned(), line };
        sources.push(asset);
    }
    let _ = file.project.description;
    let location = match &file.location {
        None => LocationConfig::Native,
        Some(section) => {
            location_config(text, section.get_ref(), section.span().start, diagnostics)
        }
    };
    let schedules = schedules(text, &file.schedules, diagnostics);
    Some(Manifest {
        name: file.project.name,
        dialect,
        production_branch: file.project.production_branch.unwrap_or_else(|| "main".to_owned()),
        external: file.project.external.iter().map(|e| e.to_lowercase()).collect(),
        sources,
        location,
        untracked_metadata: file.project.untracked_metadata,
        schedules,
    })
}

/// The valid `[[schedules]]`; every problem (a bad name, pattern, time zone or selection, a
/// name used twice) is a diagnostic at the value.
fn schedules(
    text: &str,
    sections: &[toml::Spanned<ScheduleSection>],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Schedule> {
    let mut problem = |offset: usize, message: String, hint: &str| {
        diagnostics.push(
            Diagnostic::new(MANIFEST_PATH, crate::diagnostic::line_column(text, offset), message)
                .hint(hint),
        );
    };
    let mut schedules: Vec<Schedule> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for section in sections {
        let schedule = section.get_ref();
        let name = schedule.name.get_ref();
        let mut valid = true;
        if let Err(error) = Schedule::valid_name(name) {
            problem(schedule.name.span().start, error.to_string(), "like \"nightly\"");
            valid = false;
        } else if names.contains(&name.as_str()) {
            problem(
                schedule.name.span().start,
                format!("a second schedule named `{name}`"),
                "each [[schedules]] entry needs a name of its own",
            );
            valid = false;
        }
        names.push(name);
        let timezone = schedule.timezone.as_ref();
        let cron = match CronSchedule::parse(
            schedule.cron.get_ref(),
            timezone.map_or("UTC", |t| t.get_ref().as_str()),
        ) {
            Ok(cron) => Some(cron),
            Err(error @ offshoot_core::ScheduleError::TimeZone(_)) => {
                let at = timezone.map_or(section.span().start, |t| t.span().start);
                problem(
                    at,
                    error.to_string(),
                    "an IANA time zone, like \"UTC\" or \"Europe/Berlin\"",
                );
                None
            }
            Err(error) => {
                problem(
                    schedule.cron.span().start,
                    error.to_string(),
                    "five fields, like \"0 2 * * *\" (02:00 every day) or \"*/15 * * * *\"",
                );
                None
            }
        };
        let selection = schedule.selection.as_ref().map_or("*", |s| s.get_ref().as_str());
        if let Err(error) = Selection::parse(selection) {
            let at = schedule.selection.as_ref().map_or(0, |s| s.span().start + 1);
            problem(
                at + error.column.saturating_sub(1),
                format!("invalid selection in schedule `{name}`: {}", error.message),
                "the selection syntax of `offshoot run`, like \"group:marts+\" or \"*\"",
            );
            valid = false;
        }
        let _ = &schedule.description;
        if let (true, Some(cron)) = (valid, cron) {
            let line = crate::diagnostic::line_column(text, section.span().start).0;
            schedules.push(Schedule {
                name: name.clone(),
                cron,
                selection: selection.to_owned(),
                origin: ScheduleOrigin::Manifest { line },
                problem: None,
            });
        }
    }
    schedules
}

const DEFAULT_TOOL_TIMEOUT_SECONDS: u64 = 600;

fn location_config(
    text: &str,
    section: &LocationSection,
    start: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> LocationConfig {
    let mut problem = |offset: usize, message: String, hint: &str| {
        diagnostics.push(
            Diagnostic::new(MANIFEST_PATH, crate::diagnostic::line_column(text, offset), message)
                .hint(hint),
        );
    };
    let prepare_command = section.prepare_command.as_ref().and_then(|c| {
        if c.get_ref().trim().is_empty() {
            problem(
                c.span().start,
                "`prepare_command` is empty".to_owned(),
                "leave it out, or give a shell command like \"dbt deps\"",
            );
            None
        } else {
            Some(c.get_ref().clone())
        }
    });
    let timeout_seconds = section.timeout_seconds.unwrap_or(DEFAULT_TOOL_TIMEOUT_SECONDS).max(1);
    let mut relative = |value: &Option<toml::Spanned<String>>, key: &str| -> String {
        let Some(value) = value else { return ".".to_owned() };
        match relative_dir(value.get_ref()) {
            Ok(dir) => dir,
            Err(why) => {
                problem(
                    value.span().start,
                    format!("`{key}` {why}"),
                    "give a folder inside the repository, like \".\" or \"transform\"",
                );
                ".".to_owned()
            }
        }
    };
    let tool_only = |name: &str| format!("`{name}` applies to another location type");
    match section.kind.get_ref().as_str() {
        "native" => LocationConfig::Native,
        "dbt" => {
            let project_dir = relative(&section.project_dir, "project_dir");
            for (set, name) in [
                (section.module.is_some(), "module"),
                (section.file.is_some(), "file"),
                (section.attribute.is_some(), "attribute"),
                (section.python.is_some(), "python"),
                (section.working_directory.is_some(), "working_directory"),
            ] {
                if set {
                    problem(start, tool_only(name), "a dbt location takes project_dir, parse_command, build_command, prepare_command and timeout_seconds");
                }
            }
            LocationConfig::Dbt(DbtConfig {
                project_dir,
                parse_command: section
                    .parse_command
                    .clone()
                    .unwrap_or_else(|| "dbt parse".to_owned()),
                build_command: section
                    .build_command
                    .clone()
                    .unwrap_or_else(|| "dbt build".to_owned()),
                prepare_command,
                timeout_seconds,
            })
        }
        "dagster" => {
            let working_directory = relative(&section.working_directory, "working_directory");
            for (set, name) in [
                (section.project_dir.is_some(), "project_dir"),
                (section.parse_command.is_some(), "parse_command"),
                (section.build_command.is_some(), "build_command"),
            ] {
                if set {
                    problem(start, tool_only(name), "a dagster location takes module or file, attribute, python, working_directory, prepare_command and timeout_seconds");
                }
            }
            let module = section.module.as_ref().and_then(|m| {
                let valid =
                    !m.get_ref().is_empty() && m.get_ref().split('.').all(is_python_identifier);
                if !valid {
                    problem(
                        m.span().start,
                        format!("`{}` is not a Python module name", m.get_ref()),
                        "dotted identifiers, like \"my_project.definitions\"",
                    );
                }
                valid.then(|| m.get_ref().clone())
            });
            let file = section.file.as_ref().and_then(|f| match relative_dir(f.get_ref()) {
                Ok(path) if path != "." && path.ends_with(".py") => Some(path),
                Ok(_) => {
                    problem(
                        f.span().start,
                        "`file` must name a .py file".to_owned(),
                        "like \"definitions.py\"",
                    );
                    None
                }
                Err(why) => {
                    problem(
                        f.span().start,
                        format!("`file` {why}"),
                        "a .py file inside the repository",
                    );
                    None
                }
            });
            let attribute = section.attribute.as_ref().and_then(|a| {
                let valid = is_python_identifier(a.get_ref());
                if !valid {
                    problem(
                        a.span().start,
                        format!("`{}` is not a Python identifier", a.get_ref()),
                        "the name of the Definitions object, like \"defs\"",
                    );
                }
                valid.then(|| a.get_ref().clone())
            });
            if section.module.is_some() == section.file.is_some() {
                problem(
                    start,
                    "a dagster location needs exactly one of `module` and `file`".to_owned(),
                    "module = \"my_project.definitions\"",
                );
            }
            LocationConfig::Dagster(DagsterConfig {
                module,
                file,
                attribute,
                python: section.python.clone().unwrap_or_else(|| "python".to_owned()),
                working_directory,
                prepare_command,
                timeout_seconds,
            })
        }
        other => {
            problem(
                section.kind.span().start,
                format!("unknown location type `{other}`"),
                "use \"native\", \"dbt\" or \"dagster\"",
            );
            LocationConfig::Native
        }
    }
}

/// A relative path inside the repository, normalized; `Err` says why not.
fn relative_dir(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err("must be a relative path inside the repository");
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err("cannot leave the repository (`..`)");
    }
    Ok(if parts.is_empty() { ".".to_owned() } else { parts.join("/") })
}

fn is_python_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
