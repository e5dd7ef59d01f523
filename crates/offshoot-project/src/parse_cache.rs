//! Parse once per blob: what the loader made of one asset file, keyed by what it depends on (the
//! file's content id, its path, the SQL dialect, the canonical-SQL version and this format's
//! version), so loading another commit parses only the files that changed. Resolution, duplicate
//! keys and cycles are never cached: the loader works them out for the whole graph every time.
//!
//! This module does no I/O: [`MemoryParseCache`] keeps entries in memory (bounded, least
//! recently used dropped first), and [`encode_segment`] / [`decode_segment`] turn entries into
//! bytes and back for a cache on disk (offshoot-location's), with an integrity check per entry:
//! a corrupt entry, or one that does not belong under its key, is rejected, never used.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use offshoot_core::TimeCadence;
use offshoot_core::{Asset, AssetKey, AssetKind, CodeVersion, Location, PartitionsDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::loader::{Draft, NamedDep};
use crate::sql::TableReference;
use crate::{Diagnostic, Dialect};

/// The version of what an entry holds and how it is encoded; bump it whenever the loader's
/// per-file output or [`ParsedFile`]'s encoding changes meaning.
pub const FORMAT_VERSION: u32 = 1;

/// The first bytes of every segment.
const MAGIC: &[u8] = b"OFFSHOOT-PARSE-CACHE\n";

/// Everything one file's parse depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub kind: AssetKind,
    pub dialect: Dialect,
    pub path: String,
    /// The file's content id ([`crate::FileId::Content`]).
    pub content: String,
}

/// The SHA-256 of a [`CacheKey`] with the versions: what entries are looked up by.
pub type EntryDigest = [u8; 32];

impl CacheKey {
    pub fn digest(&self) -> EntryDigest {
        let mut hasher = Sha256::new();
        let dialect = dialect_name(self.dialect);
        let format = FORMAT_VERSION.to_le_bytes();
        let canonical = crate::canonical::version();
        for part in [
            &format[..],
            canonical.as_bytes(),
            self.kind.as_str().as_bytes(),
            dialect.as_bytes(),
            self.path.as_bytes(),
            self.content.as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }
}

fn dialect_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Generic => "generic",
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    }
}

/// What the loader made of one asset file before references are resolved: the asset (or
/// nothing, for a file with errors), the problems found in it, and for a command asset the
/// content ids of the input files its code version hashed (`None`: the input did not exist).
#[derive(Debug, Clone)]
pub struct ParsedFile {
    pub(crate) draft: Option<Draft>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) inputs: Vec<(String, Option<String>)>,
}

/// Where a loader keeps and finds parsed files. Implementations are shared between threads.
pub trait ParseCache: Send + Sync {
    /// The entry stored under `digest`, if there is one.
    fn get(&self, digest: &EntryDigest) -> Option<Arc<ParsedFile>>;
    /// Stores what one load parsed (called once per load, with every new entry).
    fn insert(&self, entries: Vec<(CacheKey, Arc<ParsedFile>)>);
}

/// Counters of one cache, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries on disk that were corrupt, foreign (under the wrong key) or of another version.
    pub rejected: u64,
    pub entries: u64,
}

struct Slot {
    file: Arc<ParsedFile>,
    key: CacheKey,
    /// The use counter's value when the entry was last used: eviction drops the lowest.
    used: u64,
}

/// A bounded in-memory cache; when it holds more than `capacity` entries the least recently
/// used quarter goes.
pub struct MemoryParseCache {
    capacity: usize,
    slots: Mutex<HashMap<EntryDigest, Slot>>,
    clock: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl MemoryParseCache {
    pub fn new(capacity: usize) -> MemoryParseCache {
        MemoryParseCache {
            capacity: capacity.max(1),
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: 0,
            entries: self.len() as u64,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.lock().expect("never poisoned: no panics inside").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds entries read from elsewhere (a disk cache) without counting them as used.
    pub fn preload(&self, entries: Vec<(CacheKey, Arc<ParsedFile>)>) {
        self.put(entries, 0);
    }

    /// Every entry with its key, most recently used first (what a compaction keeps).
    pub fn entries(&self) -> Vec<(CacheKey, Arc<ParsedFile>)> {
        let slots = self.slots.lock().expect("never poisoned: no panics inside");
        let mut all: Vec<&Slot> = slots.values().collect();
        all.sort_by_key(|slot| std::cmp::Reverse(slot.used));
        all.into_iter().map(|slot| (slot.key.clone(), slot.file.clone())).collect()
    }

    fn put(&self, entries: Vec<(CacheKey, Arc<ParsedFile>)>, used: u64) {
        let mut slots = self.slots.lock().expect("never poisoned: no panics inside");
        for (key, file) in entries {
            slots.insert(key.digest(), Slot { file, key, used });
        }
        if slots.len() > self.capacity {
            let mut ages: Vec<u64> = slots.values().map(|slot| slot.used).collect();
            let keep = self.capacity - self.capacity / 4;
            let cut = ages.len() - keep;
            let (_, threshold, _) = ages.select_nth_unstable(cut);
            let threshold = *threshold;
            let mut over = slots.len() - keep;
            slots.retain(|_, slot| {
                if over > 0 && slot.used <= threshold {
                    over -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

impl ParseCache for MemoryParseCache {
    fn get(&self, digest: &EntryDigest) -> Option<Arc<ParsedFile>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slots = self.slots.lock().expect("never poisoned: no panics inside");
        match slots.get_mut(digest) {
            Some(slot) => {
                slot.used = now;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(slot.file.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn insert(&self, entries: Vec<(CacheKey, Arc<ParsedFile>)>) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        self.put(entries, now);
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding: a segment is MAGIC, the format version (u32 LE), the canonical version (u16 LE length
// and bytes), then records: payload length (u32 LE), the entry's digest, the SHA-256 of the
// payload, the payload (JSON of `Record`, which repeats the key so the digest can be checked).

/// What decoding a segment found.
#[derive(Debug, Default)]
pub struct DecodedSegment {
    pub entries: Vec<(CacheKey, Arc<ParsedFile>)>,
    /// Records (or whole segments of another version) that were not used.
    pub rejected: u64,
}

/// A segment's first bytes: the magic, the format version and the canonical version.
pub fn segment_header() -> Vec<u8> {
    let canonical = crate::canonical::version();
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let canonical = &canonical.as_bytes()[..canonical.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(canonical.len() as u16).to_le_bytes());
    out.extend_from_slice(canonical);
    out
}

/// The bytes of one segment holding `entries`.
pub fn encode_segment(entries: &[(CacheKey, Arc<ParsedFile>)]) -> Vec<u8> {
    let mut out = segment_header();
    out.reserve(entries.len() * 1024);
    for (key, file) in entries {
        let record = Record::of(key, file);
        let Ok(payload) = serde_json::to_vec(&record) else { continue };
        let Ok(length) = u32::try_from(payload.len()) else { continue };
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&key.digest());
        out.extend_from_slice(&Sha256::digest(&payload));
        out.extend_from_slice(&payload);
    }
    out
}

/// Where a segment's records are, without decoding them: each record's digest and byte range
/// (the whole record, framing included, as [`decode_record`] and a compaction take it).
#[derive(Debug, Default)]
pub struct SegmentIndex {
    pub records: Vec<(EntryDigest, std::ops::Range<usize>)>,
    /// Records whose checksum fails, a truncated tail, or a whole segment of another version.
    pub rejected: u64,
}

/// Indexes a segment, checking its header and every record's checksum; a record that fails is
/// left out and counted, a truncated tail ends the segment.
pub fn index_segment(bytes: &[u8]) -> SegmentIndex {
    let mut index = SegmentIndex::default();
    let header = segment_header();
    if !bytes.starts_with(&header) {
        index.rejected = 1;
        return index;
    }
    let mut at = header.len();
    while at < bytes.len() {
        let Some((digest, end)) = frame(bytes, at) else {
            index.rejected += 1;
            break;
        };
        if checked_payload(&bytes[at..end]).is_some() {
            index.records.push((digest, at..end));
        } else {
            index.rejected += 1;
        }
        at = end;
    }
    index
}

/// The record starting at `at`: its digest and where it ends.
fn frame(bytes: &[u8], at: usize) -> Option<(EntryDigest, usize)> {
    let mut rest = bytes.get(at..)?;
    let length = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
    let digest: EntryDigest = take(&mut rest, 32)?.try_into().ok()?;
    take(&mut rest, 32 + length)?;
    Some((digest, at + 4 + 64 + length))
}

/// A whole record's digest and payload, if its checksum holds.
fn checked_payload(record: &[u8]) -> Option<(EntryDigest, &[u8])> {
    let mut rest = record;
    let length = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
    let digest: EntryDigest = take(&mut rest, 32)?.try_into().ok()?;
    let checksum: [u8; 32] = take(&mut rest, 32)?.try_into().ok()?;
    let payload = take(&mut rest, length)?;
    (rest.is_empty() && <[u8; 32]>::from(Sha256::digest(payload)) == checksum)
        .then_some((digest, payload))
}

/// One whole record (as [`SegmentIndex`] locates it) decoded, if every check passes: the
/// checksum, the encoding, and the key the payload names hashing to the digest it is filed
/// under (an entry copied in from elsewhere does not).
pub fn decode_record(record: &[u8]) -> Option<(CacheKey, Arc<ParsedFile>)> {
    let (digest, payload) = checked_payload(record)?;
    let record: Record = serde_json::from_slice(payload).ok()?;
    let (key, file) = record.into_entry()?;
    (key.digest() == digest).then_some((key, Arc::new(file)))
}

/// The entries of a segment that pass every check ([`index_segment`], then
/// [`decode_record`]).
pub fn decode_segment(bytes: &[u8]) -> DecodedSegment {
    let index = index_segment(bytes);
    let mut decoded = DecodedSegment { entries: Vec::new(), rejected: index.rejected };
    for (_, range) in index.records {
        match decode_record(&bytes[range]) {
            Some(entry) => decoded.entries.push(entry),
            None => decoded.rejected += 1,
        }
    }
    decoded
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

// The serialized shapes: the core's types are never serialized directly.

#[derive(Serialize, Deserialize)]
struct Record {
    kind: String,
    dialect: String,
    path: String,
    content: String,
    asset: Option<AssetRecord>,
    diagnostics: Vec<DiagnosticRecord>,
    inputs: Vec<(String, Option<String>)>,
}

/// One table reference: its parts as (value, quoted), line and column.
type ReferenceRecord = (Vec<(String, bool)>, u32, u32);

#[derive(Serialize, Deserialize)]
struct AssetRecord {
    key: String,
    group: String,
    description: Option<String>,
    code: String,
    code_version: String,
    derived: bool,
    tags: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    partitions: Option<PartitionsRecord>,
    owners: Vec<String>,
    grain: Vec<String>,
    line: u32,
    /// `(parts as (value, quoted), line, column)` per table the SQL reads.
    references: Vec<ReferenceRecord>,
    /// `(name, line, column)` per `deps` entry.
    named_deps: Vec<(String, u32, u32)>,
}

#[derive(Serialize, Deserialize)]
enum PartitionsRecord {
    Time { cadence: String, start: String, end: Option<String> },
    Static { keys: Vec<String> },
    Other { description: String },
}

#[derive(Serialize, Deserialize)]
struct DiagnosticRecord {
    path: String,
    line: u32,
    column: u32,
    message: String,
    hint: Option<String>,
}

impl Record {
    fn of(key: &CacheKey, file: &ParsedFile) -> Record {
        Record {
            kind: key.kind.as_str().to_owned(),
            dialect: dialect_name(key.dialect).to_owned(),
            path: key.path.clone(),
            content: key.content.clone(),
            asset: file.draft.as_ref().map(AssetRecord::of),
            diagnostics: file
                .diagnostics
                .iter()
                .map(|d| DiagnosticRecord {
                    path: d.path.clone(),
                    line: d.line,
                    column: d.column,
                    message: d.message.clone(),
                    hint: d.hint.clone(),
                })
                .collect(),
            inputs: file.inputs.clone(),
        }
    }

    fn into_entry(self) -> Option<(CacheKey, ParsedFile)> {
        let kind = match self.kind.as_str() {
            "sql" => AssetKind::Sql,
            "command" => AssetKind::Command,
            _ => return None,
        };
        let key = CacheKey {
            kind,
            dialect: Dialect::parse(&self.dialect)?,
            path: self.path,
            content: self.content,
        };
        let draft = match self.asset {
            Some(asset) => Some(asset.into_draft(kind, &key.path)?),
            None => None,
        };
        let diagnostics = self
            .diagnostics
            .into_iter()
            .map(|d| Diagnostic {
                path: d.path,
                line: d.line,
                column: d.column,
                message: d.message,
                hint: d.hint,
            })
            .collect();
        Some((key, ParsedFile { draft, diagnostics, inputs: self.inputs }))
    }
}

impl AssetRecord {
    fn of(draft: &Draft) -> AssetRecord {
        let asset = &draft.asset;
        AssetRecord {
            key: asset.key.as_str().to_owned(),
            group: asset.group.clone(),
            description: asset.description.clone(),
            code: asset.code.to_string(),
            code_version: asset.code_version.value.clone(),
            derived: asset.code_version.derived,
            tags: asset.tags.clone(),
            metadata: asset.metadata.clone(),
            partitions: asset.partitions.as_ref().map(|p| match p {
                PartitionsDefinition::Time { cadence, start, end } => PartitionsRecord::Time {
                    cadence: cadence.as_str().to_owned(),
                    start: start.clone(),
                    end: end.clone(),
                },
                PartitionsDefinition::Static { keys } => {
                    PartitionsRecord::Static { keys: keys.clone() }
                }
                PartitionsDefinition::Other { description } => {
                    PartitionsRecord::Other { description: description.clone() }
                }
            }),
            owners: asset.owners.clone(),
            grain: asset.grain.clone(),
            line: asset.location.line,
            references: draft
                .references
                .iter()
                .map(|r| (r.parts.clone(), r.line, r.column))
                .collect(),
            named_deps: draft
                .named_deps
                .iter()
                .map(|d| (d.name.clone(), d.position.0, d.position.1))
                .collect(),
        }
    }

    fn into_draft(self, kind: AssetKind, path: &str) -> Option<Draft> {
        let mut asset = Asset::new(AssetKey::identifier(&self.key).ok()?, kind);
        asset.group = self.group;
        asset.description = self.description;
        asset.code = Arc::from(self.code);
        asset.code_version = CodeVersion { value: self.code_version, derived: self.derived };
        asset.tags = self.tags;
        asset.metadata = self.metadata;
        asset.partitions = match self.partitions {
            None => None,
            Some(PartitionsRecord::Time { cadence, start, end }) => {
                Some(PartitionsDefinition::Time {
                    cadence: TimeCadence::parse(&cadence)?,
                    start,
                    end,
                })
            }
            Some(PartitionsRecord::Static { keys }) => Some(PartitionsDefinition::Static { keys }),
            Some(PartitionsRecord::Other { description }) => {
                Some(PartitionsDefinition::Other { description })
            }
        };
        asset.owners = self.owners;
        asset.grain = self.grain;
        asset.location = Location { path: path.to_owned(), line: self.line };
        if self.references.iter().any(|(parts, _, _)| parts.is_empty()) {
            return None;
        }
        let references = self
            .references
            .into_iter()
            .map(|(parts, line, column)| TableReference { parts, line, column })
            .collect();
        let named_deps = self
            .named_deps
            .into_iter()
            .map(|(name, line, column)| NamedDep { name, position: (line, column) })
            .collect();
        Some(Draft { asset, references, named_deps })
    }
}
