//! The parse cache on disk: a folder of segment files, each load that parsed something
//! writing one (written aside, then renamed: a reader never sees half a segment), so what one
//! process parsed is reused by the next (a restarted server, the next `offshoot diff`). Only an
//! index (digest → segment, offset) and the most recently used entries are kept in memory; an
//! entry is read from its segment when asked for, so memory does not grow with the cache. When
//! there are too many segments or bytes, the most recently used entries are copied into one and
//! the rest deleted, so the folder stays bounded. Every entry is checked: checksums when a
//! segment is opened, and again with the key when an entry is read (see
//! [`offshoot_project::parse_cache`]); a corrupt, foreign or other-version entry is counted,
//! logged and ignored, and the file parsed again.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use offshoot_project::parse_cache::{
    decode_record, encode_segment, index_segment, segment_header, CacheKey, CacheStats,
    EntryDigest, MemoryParseCache, ParseCache, ParsedFile,
};

/// Bounds of a [`DiskParseCache`].
#[derive(Debug, Clone, Copy)]
pub struct ParseCacheOptions {
    /// Entries kept on disk (about 1–2 KB each); a compaction keeps the most recently used.
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

/// Entries decoded and kept in memory: what a push's load asks for again (its changed files),
/// not the whole project, which the loaded snapshots hold already.
const MEMORY_ENTRIES: usize = 8_192;

/// One segment file, open for reading.
struct Segment {
    path: PathBuf,
    size: u64,
    file: Arc<File>,
}

/// Where an entry is: its segment (a position in [`Disk::segments`]) and byte range, and when it
/// was last used.
#[derive(Clone, Copy)]
struct Place {
    segment: usize,
    start: u64,
    len: u32,
    used: u64,
}

#[derive(Default)]
struct Disk {
    /// Oldest first: a newer segment's entry replaces an older one's in the index.
    segments: Vec<Segment>,
    index: HashMap<EntryDigest, Place>,
    clock: u64,
}

impl Disk {
    /// Adds a segment's records to the index.
    fn add(&mut self, segment: Segment, records: Vec<(EntryDigest, std::ops::Range<usize>)>) {
        let at = self.segments.len();
        self.clock += 1;
        for (digest, range) in records {
            let len = u32::try_from(range.len()).unwrap_or(u32::MAX);
            let place = Place { segment: at, start: range.start as u64, len, used: self.clock };
            self.index.insert(digest, place);
        }
        self.segments.push(segment);
    }
}

pub struct DiskParseCache {
    dir: PathBuf,
    options: ParseCacheOptions,
    memory: MemoryParseCache,
    rejected: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The lock also serializes writes.
    disk: Mutex<Disk>,
}

impl DiskParseCache {
    /// Opens (or starts) the cache in `dir`, indexing every segment there. Never fails: a folder
    /// that cannot be read or written leaves a cache that works in memory, and says so in the log.
    pub fn open(dir: &Path, options: ParseCacheOptions) -> DiskParseCache {
        let cache = DiskParseCache {
            dir: dir.to_path_buf(),
            options,
            memory: MemoryParseCache::new(MEMORY_ENTRIES.min(options.max_entries)),
            rejected: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            disk: Mutex::new(Disk::default()),
        };
        let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == SEGMENT_EXTENSION))
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                tracing::warn!("parse cache: cannot read {}: {error}", dir.display());
                Vec::new()
            }
        };
        // Names start with the time they were written: oldest first, so newer entries win.
        found.sort();
        let mut disk = Disk::default();
        for path in found {
            let opened = File::open(&path).and_then(|file| {
                let size = file.metadata()?.len();
                let mut bytes = Vec::with_capacity(size as usize);
                std::io::Read::read_to_end(&mut &file, &mut bytes)?;
                Ok((file, bytes))
            });
            let (file, bytes) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    tracing::warn!("parse cache: cannot read {}: {error}", path.display());
                    continue;
                }
            };
            let index = index_segment(&bytes);
            cache.reject(index.rejected, &path);
            let segment = Segment { path, size: bytes.len() as u64, file: Arc::new(file) };
            disk.add(segment, index.records);
        }
        *cache.disk.lock().expect("never poisoned: no panics inside") = disk;
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
        let entries = self.disk.lock().expect("never poisoned: no panics inside").index.len();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            entries: entries.max(self.memory.stats().entries as usize) as u64,
        }
    }

    fn reject(&self, count: u64, path: &Path) {
        if count > 0 {
            tracing::warn!(
                "parse cache: ignored {count} corrupt, foreign or other-version entr{} in {}",
                if count == 1 { "y" } else { "ies" },
                path.display()
            );
            self.rejected.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Writes `bytes` as a new segment file (aside, then renamed) and opens it for reading.
    fn write_segment(&self, bytes: &[u8]) -> std::io::Result<Segment> {
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
        let staging = self.dir.join(format!("{name}.partial"));
        let path = self.dir.join(format!("{name}.{SEGMENT_EXTENSION}"));
        std::fs::write(&staging, bytes)?;
        std::fs::rename(&staging, &path)?;
        let file = Arc::new(File::open(&path)?);
        Ok(Segment { path, size: bytes.len() as u64, file })
    }

    /// Copies the most recently used entries into one segment and deletes the others. Past
    /// `max_entries` it keeps three quarters of them, so the next loads do not compact again.
    fn compact(&self, disk: &mut Disk) -> std::io::Result<()> {
        let mut live: Vec<(EntryDigest, Place)> =
            disk.index.iter().map(|(d, p)| (*d, *p)).collect();
        live.sort_by_key(|(_, place)| std::cmp::Reverse(place.used));
        if live.len() > self.options.max_entries {
            live.truncate(self.options.max_entries - self.options.max_entries / 4);
        }
        let mut bytes = segment_header();
        let mut records = Vec::with_capacity(live.len());
        let mut buffer = Vec::new();
        for (digest, place) in live {
            buffer.resize(place.len as usize, 0);
            disk.segments[place.segment].file.read_exact_at(&mut buffer, place.start)?;
            records.push((digest, bytes.len()..bytes.len() + buffer.len()));
            bytes.extend_from_slice(&buffer);
        }
        let segment = self.write_segment(&bytes)?;
        for old in disk.segments.drain(..) {
            let _ = std::fs::remove_file(&old.path);
        }
        disk.index.clear();
        disk.add(segment, records);
        Ok(())
    }
}

impl ParseCache for DiskParseCache {
    fn get(&self, digest: &EntryDigest) -> Option<Arc<ParsedFile>> {
        if let Some(found) = self.memory.get(digest) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(found);
        }
        let (file, place, path) = {
            let mut disk = self.disk.lock().expect("never poisoned: no panics inside");
            disk.clock += 1;
            let now = disk.clock;
            let Some(place) = disk.index.get_mut(digest) else {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            place.used = now;
            let place = *place;
            let segment = &disk.segments[place.segment];
            (segment.file.clone(), place, segment.path.clone())
        };
        let mut record = vec![0; place.len as usize];
        let decoded =
            file.read_exact_at(&mut record, place.start).ok().and_then(|()| decode_record(&record));
        match decoded {
            Some((key, parsed)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.memory.insert(vec![(key, parsed.clone())]);
                Some(parsed)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.reject(1, &path);
                let mut disk = self.disk.lock().expect("never poisoned: no panics inside");
                if disk
                    .index
                    .get(digest)
                    .is_some_and(|p| p.segment == place.segment && p.start == place.start)
                {
                    disk.index.remove(digest);
                }
                None
            }
        }
    }

    fn insert(&self, entries: Vec<(CacheKey, Arc<ParsedFile>)>) {
        let bytes = encode_segment(&entries);
        let mut disk = self.disk.lock().expect("never poisoned: no panics inside");
        match self.write_segment(&bytes) {
            Ok(segment) => {
                let records = index_segment(&bytes).records;
                disk.add(segment, records);
            }
            Err(error) => {
                tracing::warn!("parse cache: cannot write to {}: {error}", self.dir.display())
            }
        }
        self.memory.insert(entries);
        let bytes: u64 = disk.segments.iter().map(|s| s.size).sum();
        if disk.segments.len() > 1
            && (disk.segments.len() > self.options.max_segments
                || bytes > self.options.max_bytes
                || disk.index.len() > self.options.max_entries)
        {
            if let Err(error) = self.compact(&mut disk) {
                tracing::warn!("parse cache: cannot compact {}: {error}", self.dir.display())
            }
        }
    }
}
