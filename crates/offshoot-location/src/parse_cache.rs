//! The parse cache on disk: offshoot-project's [`MemoryParseCache`] in front of a folder of
//! segment files, so what one process parsed is reused by the next (a restarted server, the next
//! `offshoot diff`). Each load that parsed something writes one segment (written aside, then
//! renamed: a reader never sees half a segment); when there are too many segments or bytes, the
//! entries still in memory are written into one and the rest are deleted, so the folder stays
//! bounded. Every entry is checked when read (see [`offshoot_project::parse_cache`]): a corrupt,
//! foreign or other-version entry is counted, logged and ignored, and the file parsed again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use offshoot_project::parse_cache::{
    decode_segment, encode_segment, CacheKey, CacheStats, EntryDigest, MemoryParseCache,
    ParseCache, ParsedFile,
};

/// Bounds of a [`DiskParseCache`].
#[derive(Debug, Clone, Copy)]
pub struct ParseCacheOptions {
    /// Entries kept in memory (about 1–2 KB each); the least recently used go first.
    pub max_entries: usize,
    /// Segment files before they are compacted into one.
    pub max_segments: usize,
    /// Bytes of segment files before they are compacted.
    pub max_bytes: u64,
}

impl Default for ParseCacheOptions {
    fn default() -> ParseCacheOptions {
        ParseCacheOptions { max_entries: 300_000, max_segments: 16, max_bytes: 512 << 20 }
    }
}

const SEGMENT_EXTENSION: &str = "seg";

pub struct DiskParseCache {
    dir: PathBuf,
    options: ParseCacheOptions,
    memory: MemoryParseCache,
    rejected: AtomicU64,
    /// The segment files with their sizes, oldest first; the lock also serializes writes.
    segments: Mutex<Vec<(PathBuf, u64)>>,
}

impl DiskParseCache {
    /// Opens (or starts) the cache in `dir`, reading every segment there. Never fails: a folder
    /// that cannot be read or written leaves a cache that works in memory, and says so in the log.
    pub fn open(dir: &Path, options: ParseCacheOptions) -> DiskParseCache {
        let cache = DiskParseCache {
            dir: dir.to_path_buf(),
            options,
            memory: MemoryParseCache::new(options.max_entries),
            rejected: AtomicU64::new(0),
            segments: Mutex::new(Vec::new()),
        };
        let mut found: Vec<(PathBuf, u64)> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == SEGMENT_EXTENSION))
                .filter_map(|path| {
                    let size = std::fs::metadata(&path).ok()?.len();
                    Some((path, size))
                })
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                tracing::warn!("parse cache: cannot read {}: {error}", dir.display());
                Vec::new()
            }
        };
        // Names start with the time they were written: oldest first, so newer entries win.
        found.sort();
        for (path, _) in &found {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!("parse cache: cannot read {}: {error}", path.display());
                    continue;
                }
            };
            let decoded = decode_segment(&bytes);
            if decoded.rejected > 0 {
                tracing::warn!(
                    "parse cache: ignored {} corrupt, foreign or other-version entr{} in {}",
                    decoded.rejected,
                    if decoded.rejected == 1 { "y" } else { "ies" },
                    path.display()
                );
                cache.rejected.fetch_add(decoded.rejected, Ordering::Relaxed);
            }
            cache.memory.preload(decoded.entries);
        }
        *cache.segments.lock().expect("never poisoned: no panics inside") = found;
        cache
    }

    /// The one cache of `dir` in this process, opened on first use with the default bounds:
    /// every load in a process that names the same folder shares one memory.
    pub fn shared(dir: &Path) -> Arc<DiskParseCache> {
        static OPEN: OnceLock<Mutex<HashMap<PathBuf, Arc<DiskParseCache>>>> = OnceLock::new();
        let mut open = OPEN
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .expect("never poisoned: no panics inside");
        open.entry(dir.to_path_buf())
            .or_insert_with(|| Arc::new(DiskParseCache::open(dir, ParseCacheOptions::default())))
            .clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { rejected: self.rejected.load(Ordering::Relaxed), ..self.memory.stats() }
    }

    fn write_segment(
        &self,
        entries: &[(CacheKey, Arc<ParsedFile>)],
    ) -> std::io::Result<(PathBuf, u64)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{nanos:024}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let bytes = encode_segment(entries);
        let staging = self.dir.join(format!("{name}.partial"));
        let path = self.dir.join(format!("{name}.{SEGMENT_EXTENSION}"));
        std::fs::write(&staging, &bytes)?;
        std::fs::rename(&staging, &path)?;
        Ok((path, bytes.len() as u64))
    }
}

impl ParseCache for DiskParseCache {
    fn get(&self, digest: &EntryDigest) -> Option<Arc<ParsedFile>> {
        self.memory.get(digest)
    }

    fn insert(&self, entries: Vec<(CacheKey, Arc<ParsedFile>)>) {
        let mut segments = self.segments.lock().expect("never poisoned: no panics inside");
        match self.write_segment(&entries) {
            Ok(segment) => segments.push(segment),
            Err(error) => {
                tracing::warn!("parse cache: cannot write to {}: {error}", self.dir.display())
            }
        }
        self.memory.insert(entries);
        let bytes: u64 = segments.iter().map(|(_, size)| size).sum();
        if segments.len() > 1
            && (segments.len() > self.options.max_segments || bytes > self.options.max_bytes)
        {
            // What is in memory is what is worth keeping (bounded, most recently used).
            match self.write_segment(&self.memory.entries()) {
                Ok(compacted) => {
                    for (path, _) in segments.drain(..) {
                        let _ = std::fs::remove_file(path);
                    }
                    segments.push(compacted);
                }
                Err(error) => {
                    tracing::warn!("parse cache: cannot compact {}: {error}", self.dir.display())
                }
            }
        }
    }
}
