//! The asset model: keys, kinds, code versions and partitions definitions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// The name of an asset or source. Native assets are SQL identifiers (`[A-Za-z_][A-Za-z0-9_]*`,
/// see [`AssetKey::identifier`]); code locations such as Dagster and dbt have path keys whose
/// components are joined by `/` (`raw/orders`, see [`AssetKey::new`]). At most 255 characters.
/// Keys are compared case-sensitively; loaders lower-case nothing.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssetKey(Arc<str>);

/// Why a string cannot be an [`AssetKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAssetKey {
    #[error("an asset key cannot be empty")]
    Empty,
    #[error("an asset key is at most 128 characters long, this one has {0}")]
    TooLong(usize),
    #[error("an asset key must start with a letter or `_`, not `{0}`")]
    BadStart(char),
    #[error("an asset key may contain only letters, digits and `_`, not `{0}`")]
    BadCharacter(char),
    #[error("an asset key path may contain only letters, digits, `_`, `-` and `/` between non-empty parts, not `{0}`")]
    BadPathCharacter(char),
    #[error("an asset key path cannot have an empty part (`//`, or `/` at either end)")]
    EmptyPart,
}

impl AssetKey {
    /// The longest SQL-identifier key (a native asset's table name).
    pub const MAX_LEN: usize = 128;
    /// The longest path key.
    pub const MAX_PATH_LEN: usize = 255;

    /// Any key: `/`-separated parts of ASCII letters, digits, `_` and `-`.
    pub fn new(name: &str) -> Result<AssetKey, InvalidAssetKey> {
        if name.is_empty() {
            return Err(InvalidAssetKey::Empty);
        }
        let count = name.chars().count();
        if count > Self::MAX_PATH_LEN {
            return Err(InvalidAssetKey::TooLong(count));
        }
        if let Some(bad) =
            name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')))
        {
            return Err(InvalidAssetKey::BadPathCharacter(bad));
        }
        if name.split('/').any(str::is_empty) {
            return Err(InvalidAssetKey::EmptyPart);
        }
        Ok(AssetKey(Arc::from(name)))
    }

    /// A key from path parts, as Dagster spells them (`["raw", "orders"]` is `raw/orders`).
    pub fn from_parts<S: AsRef<str>>(parts: &[S]) -> Result<AssetKey, InvalidAssetKey> {
        if parts.iter().any(|p| p.as_ref().is_empty() || p.as_ref().contains('/')) {
            return Err(InvalidAssetKey::EmptyPart);
        }
        let joined: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
        AssetKey::new(&joined.join("/"))
    }

    /// The parts of a path key (one part for an identifier).
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// A key that is also an SQL identifier: what native SQL and command assets must be.
    pub fn identifier(name: &str) -> Result<AssetKey, InvalidAssetKey> {
        let mut chars = name.chars();
        let first = chars.next().ok_or(InvalidAssetKey::Empty)?;
        let count = name.chars().count();
        if count > Self::MAX_LEN {
            return Err(InvalidAssetKey::TooLong(count));
        }
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(InvalidAssetKey::BadStart(first));
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
            return Err(InvalidAssetKey::BadCharacter(bad));
        }
        Ok(AssetKey(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keys order and hash as their text does, so maps keyed by them can be searched by a `&str`.
impl std::borrow::Borrow<str> for AssetKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// What produces an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AssetKind {
    /// One SELECT whose result becomes the asset's table.
    Sql,
    /// A program run in a checkout of the commit that writes the asset's table.
    Command,
    /// An external table the pipeline reads but does not produce.
    Source,
    /// Materialized by the code location's own tool (a dbt model, seed or snapshot; a Dagster
    /// asset): Offshoot runs the tool for a selection rather than building it step by step.
    Tool,
}

impl AssetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Sql => "sql",
            AssetKind::Command => "command",
            AssetKind::Source => "source",
            AssetKind::Tool => "tool",
        }
    }

    pub fn is_materializable(self) -> bool {
        !matches!(self, AssetKind::Source)
    }
}

/// The version of an asset's code. A user-supplied string wins; otherwise it is derived from the
/// canonical definition so that formatting-only edits do not change it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodeVersion {
    pub value: String,
    pub derived: bool,
}

impl CodeVersion {
    pub fn explicit(value: impl Into<String>) -> CodeVersion {
        CodeVersion { value: value.into(), derived: false }
    }

    pub fn derived(value: impl Into<String>) -> CodeVersion {
        CodeVersion { value: value.into(), derived: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeCadence {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl TimeCadence {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeCadence::Hourly => "hourly",
            TimeCadence::Daily => "daily",
            TimeCadence::Weekly => "weekly",
            TimeCadence::Monthly => "monthly",
        }
    }

    pub fn parse(text: &str) -> Option<TimeCadence> {
        Some(match text {
            "hourly" => TimeCadence::Hourly,
            "daily" => TimeCadence::Daily,
            "weekly" => TimeCadence::Weekly,
            "monthly" => TimeCadence::Monthly,
            _ => return None,
        })
    }
}

/// How an asset is split into partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PartitionsDefinition {
    Time {
        cadence: TimeCadence,
        start: String,
        end: Option<String>,
    },
    Static {
        keys: Vec<String>,
    },
    /// Any other definition a code location has (a cron schedule, dynamic or multi-dimensional
    /// partitions), as the location describes it; compared by that description.
    Other {
        description: String,
    },
}

impl fmt::Display for PartitionsDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionsDefinition::Time { cadence, start, end } => {
                write!(f, "{} from {}", cadence.as_str(), start)?;
                if let Some(end) = end {
                    write!(f, " to {end}")?;
                }
                Ok(())
            }
            PartitionsDefinition::Static { keys } => write!(f, "static [{}]", keys.join(", ")),
            PartitionsDefinition::Other { description } => f.write_str(description),
        }
    }
}

/// Where an asset is defined, for diagnostics and the UI.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub path: String,
    pub line: u32,
}

/// One asset (or source) of a snapshot, as its definition says.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub key: AssetKey,
    pub kind: AssetKind,
    pub group: String,
    pub description: Option<String>,
    pub deps: BTreeSet<AssetKey>,
    /// The definition as written (SQL body or command line), for code diffs. Empty for sources.
    pub code: Arc<str>,
    pub code_version: CodeVersion,
    pub tags: BTreeMap<String, String>,
    /// Values are canonical renderings (strings as they are, other values in TOML notation).
    pub metadata: BTreeMap<String, String>,
    /// Keys of `metadata` that change tracking ignores (`[project] untracked_metadata` in
    /// offshoot.toml): values that depend on where or when the commit was loaded.
    pub untracked_metadata: BTreeSet<String>,
    pub partitions: Option<PartitionsDefinition>,
    pub owners: Vec<String>,
    /// What the asset is made with (`dbt`, `postgres`, `python`...), for people; Dagster keeps
    /// them as `dagster/kind/*` tags, which is where change tracking sees them.
    pub kinds: BTreeSet<String>,
    /// The columns that identify a row (`grain` in a native header, dbt's `unique_key`, Dagster's
    /// primary-key metadata); empty if not declared. Data diffs match rows by it.
    pub grain: Vec<String>,
    pub location: Location,
}

impl Asset {
    /// A minimal asset, for tests and loaders that fill fields in afterwards.
    pub fn new(key: AssetKey, kind: AssetKind) -> Asset {
        Asset {
            key,
            kind,
            group: "default".to_owned(),
            description: None,
            deps: BTreeSet::new(),
            code: Arc::from(""),
            code_version: CodeVersion::derived(""),
            tags: BTreeMap::new(),
            metadata: BTreeMap::new(),
            untracked_metadata: BTreeSet::new(),
            partitions: None,
            owners: Vec::new(),
            kinds: BTreeSet::new(),
            grain: Vec::new(),
            location: Location::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_keys_are_sql_identifiers() {
        assert!(AssetKey::identifier("stg_orders").is_ok());
        assert!(AssetKey::identifier("_x1").is_ok());
        assert_eq!(AssetKey::identifier(""), Err(InvalidAssetKey::Empty));
        assert_eq!(AssetKey::identifier("1x"), Err(InvalidAssetKey::BadStart('1')));
        assert_eq!(AssetKey::identifier("a-b"), Err(InvalidAssetKey::BadCharacter('-')));
        assert_eq!(AssetKey::identifier("a;drop"), Err(InvalidAssetKey::BadCharacter(';')));
        assert_eq!(AssetKey::identifier("é"), Err(InvalidAssetKey::BadStart('é')));
        assert_eq!(AssetKey::identifier("a/b"), Err(InvalidAssetKey::BadCharacter('/')));
        assert_eq!(AssetKey::identifier(&"a".repeat(129)), Err(InvalidAssetKey::TooLong(129)));
    }

    #[test]
    fn path_keys_join_parts_with_slashes() {
        assert_eq!(AssetKey::new("raw/orders").map(|k| k.parts().count()), Ok(2));
        assert_eq!(
            AssetKey::from_parts(&["raw", "2024-orders"]).map(|k| k.to_string()),
            Ok("raw/2024-orders".to_owned())
        );
        assert_eq!(AssetKey::new("raw//orders"), Err(InvalidAssetKey::EmptyPart));
        assert_eq!(AssetKey::new("/orders"), Err(InvalidAssetKey::EmptyPart));
        assert_eq!(AssetKey::from_parts(&["a/b"]), Err(InvalidAssetKey::EmptyPart));
        assert_eq!(AssetKey::new("a b"), Err(InvalidAssetKey::BadPathCharacter(' ')));
        assert_eq!(AssetKey::new("a;drop"), Err(InvalidAssetKey::BadPathCharacter(';')));
        assert_eq!(AssetKey::new(&"a".repeat(256)), Err(InvalidAssetKey::TooLong(256)));
    }
}
