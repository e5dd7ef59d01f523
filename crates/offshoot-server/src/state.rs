//! Shared server state: the injected store and warehouse, configuration, wake-ups for the
//! background workers, the snapshot cache, cancel switches of running runs, and metrics.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use offshoot_core::{CommitSha, DeploymentName, RepositoryName, SchemaName, UnixMillis};
use offshoot_project::{Diagnostic, Project};
use offshoot_store::{Deployment, RunId, Store};
use offshoot_warehouse::{Target, Warehouse};
use tokio::sync::{watch, Notify};

use crate::clock::Clock;
use crate::config::{RepositoryConfig, ServerConfig};
use crate::notices::Notices;

pub type SharedState = Arc<AppState>;

/// One async lock per (repository, commit) being loaded.
type LoadLocks = HashMap<(RepositoryName, CommitSha), Arc<tokio::sync::Mutex<()>>>;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub warehouse: Arc<dyn Warehouse>,
    pub config: ServerConfig,
    /// Wakes the deploy worker when a revision is queued.
    pub deploy_wakeup: Notify,
    /// Wakes the run executor when a run is queued.
    pub run_wakeup: Notify,
    /// Wakes the webhook worker when a delivery was recorded.
    pub intake_wakeup: Notify,
    pub snapshots: SnapshotCache,
    /// One load per commit at a time: code locations' tools write into the commit's folder.
    load_locks: Mutex<LoadLocks>,
    /// Counting open branch deployments and opening one is one step on this server, so
    /// concurrent pushes cannot exceed `max_open_branch_deployments` together.
    pub open_turn: tokio::sync::Mutex<()>,
    /// One teardown at a time on this server: a retry never overlaps an earlier attempt.
    pub teardown_turn: tokio::sync::Mutex<()>,
    /// One production catch-up (or rollback) at a time on this server: two would replace the
    /// same tables.
    pub catch_up_turn: tokio::sync::Mutex<()>,
    /// Per running run: flipping the switch to `true` cancels it.
    pub cancel_switches: Mutex<HashMap<RunId, watch::Sender<bool>>>,
    pub metrics: Metrics,
    /// The kernel's Landlock ABI, or why processes cannot be confined (see `confine`).
    pub landlock: Result<u32, String>,
    /// What happened, for subscribers (feedback, data diffs).
    pub notices: Notices,
    /// What time it is for schedules (frozen in tests, see `clock`).
    pub clock: Clock,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        warehouse: Arc<dyn Warehouse>,
        config: ServerConfig,
    ) -> SharedState {
        Arc::new(AppState {
            store,
            warehouse,
            config,
            deploy_wakeup: Notify::new(),
            run_wakeup: Notify::new(),
            intake_wakeup: Notify::new(),
            snapshots: SnapshotCache::new(SNAPSHOT_CACHE_ASSETS),
            load_locks: Mutex::new(HashMap::new()),
            open_turn: tokio::sync::Mutex::new(()),
            teardown_turn: tokio::sync::Mutex::new(()),
            catch_up_turn: tokio::sync::Mutex::new(()),
            cancel_switches: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            landlock: offshoot_location::sandbox_support(),
            notices: Notices::default(),
            clock: Clock::from_environment(),
        })
    }

    /// The lock that serializes loads of one commit. Unused locks are dropped as others are made.
    pub fn load_lock(
        &self,
        repository: &RepositoryName,
        commit: &CommitSha,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.load_locks.lock().expect("never poisoned: no panics inside");
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry((repository.clone(), commit.clone())).or_default().clone()
    }

    pub fn repository(&self, name: &RepositoryName) -> Option<&RepositoryConfig> {
        self.config.repositories.iter().find(|r| &r.name == name)
    }

    /// Where a deployment reads and writes in the warehouse.
    pub fn target(&self, deployment: &Deployment) -> Target {
        Target {
            schema: SchemaName::for_deployment(&deployment.repository, &deployment.name),
            production: SchemaName::for_deployment(
                &deployment.repository,
                &DeploymentName::production(),
            ),
        }
    }
}

pub fn now() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as UnixMillis)
        .unwrap_or(0)
}

/// How many assets the snapshot cache holds in all (about 2 MB per 1,000): bounded by size, not
/// by entries, so 10,000-asset projects cannot grow the server past its memory bar.
const SNAPSHOT_CACHE_ASSETS: usize = 60_000;

/// A loaded project, or the diagnostics that made it invalid.
pub type Loaded = Arc<Result<Project, Vec<Diagnostic>>>;

/// Recently loaded snapshots by (repository, commit): loading is pure in the commit, so entries
/// never go stale; the bound (in assets, most recently used kept) keeps memory flat with many
/// open deployments. The two newest entries are always kept, however large: a deploy needs
/// its commit and the base it compares with, and evicting one for the other would load twice.
pub struct SnapshotCache {
    capacity_assets: usize,
    entries: Mutex<VecDeque<((RepositoryName, CommitSha), Loaded)>>,
}

fn weight(loaded: &Loaded) -> usize {
    match loaded.as_ref() {
        Ok(project) => project.snapshot.len().max(1),
        Err(diagnostics) => diagnostics.len().max(1),
    }
}

impl SnapshotCache {
    pub fn new(capacity_assets: usize) -> SnapshotCache {
        SnapshotCache { capacity_assets, entries: Mutex::new(VecDeque::new()) }
    }

    pub fn get(&self, repository: &RepositoryName, commit: &CommitSha) -> Option<Loaded> {
        let mut entries =
            self.entries.lock().expect("cache lock is never poisoned: no panics inside");
        let index = entries.iter().position(|((r, c), _)| r == repository && c == commit)?;
        let entry = entries.remove(index).expect("index is in range");
        let loaded = entry.1.clone();
        entries.push_front(entry);
        Some(loaded)
    }

    /// The most recently used valid project of `repository` that another commit's load can
    /// start from ([`offshoot_project::load_from`]).
    pub fn latest_reusable(&self, repository: &RepositoryName) -> Option<Loaded> {
        let entries = self.entries.lock().expect("cache lock is never poisoned: no panics inside");
        entries
            .iter()
            .find(|((r, _), loaded)| {
                r == repository && loaded.as_ref().as_ref().is_ok_and(|p| p.blobs.is_some())
            })
            .map(|(_, loaded)| loaded.clone())
    }

    pub fn insert(&self, repository: RepositoryName, commit: CommitSha, loaded: Loaded) {
        let mut entries =
            self.entries.lock().expect("cache lock is never poisoned: no panics inside");
        entries.retain(|((r, c), _)| !(r == &repository && c == &commit));
        entries.push_front(((repository, commit), loaded));
        let mut total: usize = entries.iter().map(|(_, l)| weight(l)).sum();
        while entries.len() > 2 && total > self.capacity_assets {
            let (_, evicted) = entries.pop_back().expect("more than two entries");
            total -= weight(&evicted);
        }
    }
}

/// Counters for `/metrics` (Prometheus text format).
#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub deploys_ready: AtomicU64,
    pub deploys_failed: AtomicU64,
    pub deploys_superseded: AtomicU64,
    pub runs_succeeded: AtomicU64,
    pub runs_failed: AtomicU64,
    pub runs_canceled: AtomicU64,
    pub steps_executed: AtomicU64,
    /// Data diffs the warehouse computed (not served from the cache).
    pub data_diffs_computed: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn increment(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(
        &self,
        open_deployments: usize,
        parse_cache: &offshoot_project::parse_cache::CacheStats,
    ) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP offshoot_http_requests_total HTTP requests served.\n# TYPE offshoot_http_requests_total counter\noffshoot_http_requests_total {}\n\
# HELP offshoot_deploys_total Finished deploys by outcome.\n# TYPE offshoot_deploys_total counter\n\
offshoot_deploys_total{{status=\"ready\"}} {}\noffshoot_deploys_total{{status=\"failed\"}} {}\noffshoot_deploys_total{{status=\"superseded\"}} {}\n\
# HELP offshoot_runs_total Finished runs by outcome.\n# TYPE offshoot_runs_total counter\n\
offshoot_runs_total{{status=\"succeeded\"}} {}\noffshoot_runs_total{{status=\"failed\"}} {}\noffshoot_runs_total{{status=\"canceled\"}} {}\n\
# HELP offshoot_steps_total Run steps executed.\n# TYPE offshoot_steps_total counter\noffshoot_steps_total {}\n\
# HELP offshoot_data_diffs_computed_total Data diffs computed in the warehouse (not served from the cache).\n# TYPE offshoot_data_diffs_computed_total counter\noffshoot_data_diffs_computed_total {}\n\
# HELP offshoot_open_deployments Open deployments, production included.\n# TYPE offshoot_open_deployments gauge\noffshoot_open_deployments {}\n\
# HELP offshoot_parse_cache_lookups_total Parsed asset files looked up in the parse cache, by result.\n# TYPE offshoot_parse_cache_lookups_total counter\n\
offshoot_parse_cache_lookups_total{{result=\"hit\"}} {}\noffshoot_parse_cache_lookups_total{{result=\"miss\"}} {}\n\
# HELP offshoot_parse_cache_rejected_total Cache entries found corrupt, foreign or of another version, and ignored.\n# TYPE offshoot_parse_cache_rejected_total counter\noffshoot_parse_cache_rejected_total {}\n\
# HELP offshoot_parse_cache_entries Parsed files held in memory.\n# TYPE offshoot_parse_cache_entries gauge\noffshoot_parse_cache_entries {}\n",
            get(&self.http_requests),
            get(&self.deploys_ready),
            get(&self.deploys_failed),
            get(&self.deploys_superseded),
            get(&self.runs_succeeded),
            get(&self.runs_failed),
            get(&self.runs_canceled),
            get(&self.steps_executed),
            get(&self.data_diffs_computed),
            open_deployments,
            parse_cache.hits,
            parse_cache.misses,
            parse_cache.rejected,
            parse_cache.entries,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(weight: usize) -> Loaded {
        Arc::new(Err((0..weight)
            .map(|i| Diagnostic::new("a.sql", (1, 1), i.to_string()))
            .collect()))
    }

    fn commit(digit: char) -> CommitSha {
        CommitSha::new(&digit.to_string().repeat(40)).expect("a full sha")
    }

    #[test]
    fn the_two_newest_snapshots_stay_however_large_and_older_ones_go_past_the_bound() {
        let repository = RepositoryName::new("shop").expect("a repository name");
        let cache = SnapshotCache::new(10);
        cache.insert(repository.clone(), commit('a'), loaded(4));
        cache.insert(repository.clone(), commit('b'), loaded(4));
        assert!(cache.get(&repository, &commit('a')).is_some(), "8 of 10: both fit");
        // `a` was just used, so `b` is the oldest when `c` comes: 12 assets, over the bound.
        cache.insert(repository.clone(), commit('c'), loaded(4));
        assert!(cache.get(&repository, &commit('b')).is_none());
        assert!(cache.get(&repository, &commit('a')).is_some());
        assert!(cache.get(&repository, &commit('c')).is_some());
        // A head and its base larger than the bound together are both kept: a deploy needs both.
        cache.insert(repository.clone(), commit('d'), loaded(30));
        cache.insert(repository.clone(), commit('e'), loaded(30));
        assert!(cache.get(&repository, &commit('d')).is_some());
        assert!(cache.get(&repository, &commit('e')).is_some());
        assert!(cache.get(&repository, &commit('c')).is_none());
    }
}
