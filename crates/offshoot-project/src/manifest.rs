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
//! [sources.raw_orders]
//! description = "Orders exported nightly by the shop database"
//! tags = { owner = "ops" }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use offshoot_core::{Asset, AssetKey, AssetKind, CodeVersion, Location};
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    project: ProjectSection,
    #[serde(default)]
    sources: BTreeMap<String, SourceSection>,
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
                Diagnostic::new(MANIFEST_PATH, position, format!("unknown SQL dialect `{}`", name.get_ref()))
                    .hint("use \"generic\", \"sqlite\" or \"postgres\""),
            );
            Dialect::Generic
        }),
    };
    let mut sources = Vec::new();
    for (name, section) in file.sources {
        let line = text.lines().position(|l| l.contains("sources") && l.contains(name.as_str())).map_or(1, |i| i as u32 + 1);
        let key = match AssetKey::new(&name) {
            Ok(key) => key,
            Err(error) => {
                diagnostics.push(
                    Diagnostic::new(MANIFEST_PATH, (line, 1), format!("invalid source name `{name}`: {error}"))
                        .hint("source names are table names: letters, digits and `_`"),
                );
                continue;
            }
        };
        let mut asset = Asset::new(key, AssetKind::Source);
        asset.group = section.group.unwrap_or_else(|| "sources".to_owned());
        asset.description = section.description;
        asset.tags = section.tags;
        asset.metadata = section.metadata.iter().map(|(k, v)| (k.clone(), toml_value::canonical(v))).collect();
        asset.owners = section.owners;
        asset.code = Arc::from("");
        asset.code_version = CodeVersion::derived("source");
        asset.location = Location { path: MANIFEST_PATH.to_owned(), line };
        sources.push(asset);
    }
    let _ = file.project.description;
    Some(Manifest {
        name: file.project.name,
        dialect,
        production_branch: file.project.production_branch.unwrap_or_else(|| "main".to_owned()),
        external: file.project.external.iter().map(|e| e.to_lowercase()).collect(),
        sources,
    })
}
