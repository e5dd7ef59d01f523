//! The metadata store port: what Offshoot remembers about deployments, revisions, runs and
//! materializations, behind one trait that SQLite and PostgreSQL implement. Rows are this crate's
//! own types built from the core's newtypes; no driver type crosses this boundary.
//!
//! Lifecycle state (a deployment's status, head, serving revision, teardown; its revisions' and
//! runs' phases) changes only through [`Store::apply`]: one transaction that checks and bumps the
//! deployment's `version`, so two writers can never overwrite each other (compare-and-set). What
//! changes is said explicitly (patches), never by writing a whole row back.
//!
//! `contract` (cargo feature `contract`, so it is not compiled into the server) is the behaviour
//! every implementation must show; each backend's tests run it.

#[cfg(feature = "contract")]
pub mod contract;
pub mod rows;

use std::collections::BTreeSet;

use async_trait::async_trait;
use offshoot_core::catch_up;
use offshoot_core::lifecycle::StepsEnd;
pub use offshoot_core::lifecycle::{Lease, Teardown};
use offshoot_core::{
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus, Fingerprint,
    PullRequestStatus, RepositoryName, RevisionStatus, RunStatus, SnapshotBase, StepStatus,
    UnixMillis, VariableScope,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule was broken, e.g. a second deployment with the same repository and name.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed; the message is for logs, never for API clients.
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentId(pub i64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionId(pub i64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub i64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub id: String,
    pub url: String,
    pub status: PullRequestStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: DeploymentId,
    pub repository: RepositoryName,
    pub name: DeploymentName,
    pub kind: DeploymentKind,
    /// Shown verbatim; never used as an identifier.
    pub branch: BranchName,
    pub status: DeploymentStatus,
    pub pull_request: Option<PullRequest>,
    /// The deployment change tracking compares with; `None` means `prod`.
    pub base_deployment: Option<DeploymentName>,
    /// Which of its commits: the merge-base (default) or production's, taken at creation or at
    /// every update (Dagster+'s `--snapshot-base-condition`).
    pub snapshot_base: SnapshotBase,
    /// Production's commit taken for `on-create` / `on-update`; `None` for `merge-base`.
    pub snapshot_base_commit: Option<CommitSha>,
    /// Pinned deployments are never closed by the TTL.
    pub pinned: bool,
    /// The revision serving now: the latest ready one.
    pub current_revision: Option<RevisionId>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub last_push_at: UnixMillis,
    pub closed_at: Option<UnixMillis>,
    pub close_reason: Option<String>,
    /// Bumped by every lifecycle write: the compare-and-set token of [`Store::apply`].
    pub version: i64,
    /// The revision of the newest delivered commit (kept across a close: reopen deploys it).
    pub head_revision: Option<RevisionId>,
    /// Dropping the warehouse objects of a close, once nothing of the deployment runs.
    pub teardown: Teardown,
    /// Deleted once its teardown is done.
    pub delete_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub repository: RepositoryName,
    pub name: DeploymentName,
    pub kind: DeploymentKind,
    pub branch: BranchName,
    pub pull_request: Option<PullRequest>,
    pub base_deployment: Option<DeploymentName>,
    pub now: UnixMillis,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    pub repository: Option<RepositoryName>,
    pub include_closed: bool,
}

/// The commit a revision deploys, as git describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitDetails {
    pub sha: CommitSha,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// Seconds since the epoch, from git.
    pub time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: RevisionId,
    pub deployment_id: DeploymentId,
    /// 1, 2, 3... per deployment, in the order pushes arrived.
    pub number: u32,
    pub commit: CommitDetails,
    pub status: RevisionStatus,
    /// Why it failed or was superseded, for people.
    pub error: Option<String>,
    /// JSON array of diagnostics (`{path, line, column, message, hint}`) when validation failed.
    pub diagnostics_json: Option<String>,
    /// The commit change tracking compared with (merge-base or base tip).
    pub base_commit: Option<CommitSha>,
    /// The change set as JSON (the API's shape), once deployed.
    pub changes_json: Option<String>,
    pub asset_count: u32,
    pub changed_count: u32,
    pub impacted_count: u32,
    pub queued_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    /// Who deploys it while `deploying`.
    pub lease: Option<Lease>,
}

/// A revision a lifecycle write inserts; `number` is the lifecycle's next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRevision {
    pub number: u32,
    pub commit: CommitDetails,
    /// `Queued`, or `Superseded` for a push that arrived after a newer commit.
    pub status: RevisionStatus,
    pub error: Option<String>,
}

/// What a deploy found, written with its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployOutput {
    pub diagnostics_json: Option<String>,
    pub base_commit: Option<CommitSha>,
    pub changes_json: Option<String>,
    pub asset_count: u32,
    pub changed_count: u32,
    pub impacted_count: u32,
}

/// A revision's move to `status`. `deploying` sets `started_at` and the lease; a finished
/// status sets `finished_at` and keeps the lease it finished under (who executed it; no longer
/// renewed or read by any rule). `error` replaces the error when `Some`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionPatch {
    pub number: u32,
    pub status: RevisionStatus,
    pub error: Option<String>,
    pub lease: Option<Lease>,
    pub output: Option<DeployOutput>,
}

/// The deployment's fields a lifecycle write changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentPatch {
    /// `Closed` sets `closed_at` to now and `close_reason`; `Open` clears both.
    pub status: Option<DeploymentStatus>,
    pub close_reason: Option<String>,
    pub pull_request: Option<PullRequest>,
    pub base_deployment: Option<Option<DeploymentName>>,
    /// The snapshot base and its commit, both replaced.
    pub snapshot_base: Option<(SnapshotBase, Option<CommitSha>)>,
    /// By revision number.
    pub head: Option<u32>,
    /// By revision number; `Some(None)` clears it.
    pub serving: Option<Option<u32>>,
    /// Sets `last_push_at` to now.
    pub pushed: bool,
    pub teardown: Option<Teardown>,
    pub delete_requested: bool,
}

/// A run a lifecycle write inserts, `queued`, with its planned steps `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// By revision number.
    pub revision: u32,
    /// The selection as the user wrote it.
    pub selection: String,
    /// The planned steps, in execution (topological) order.
    pub steps: Vec<AssetKey>,
    /// The run's tags (key, value), sorted by key, keys unique; tag limits count them.
    pub tags: Vec<(String, String)>,
}

/// A run's move to `status`: `running` sets the lease, and `started_at` if it was not running
/// yet (a cancel request keeps it running and its start); a finished status sets
/// `finished_at`, keeps the lease it finished under and ends unfinished steps as `steps` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPatch {
    pub id: RunId,
    pub status: RunStatus,
    pub cancel_requested: bool,
    /// Replaces the error when `Some`.
    pub error: Option<String>,
    pub lease: Option<Lease>,
    pub steps: StepsEnd,
}

/// Dagster+'s `tag_concurrency_limits` entry: at most `limit` runs whose tags have `key` (with
/// `value`, or any value) run at once, across every deployment and every server of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagLimit {
    pub key: String,
    pub value: Option<String>,
    pub limit: u32,
}

impl TagLimit {
    pub fn matches(&self, tags: &[(String, String)]) -> bool {
        tags.iter().any(|(key, value)| {
            *key == self.key && self.value.as_ref().is_none_or(|wanted| wanted == value)
        })
    }

    /// For people: `dbt=nightly (limit 2)` or `dbt (any value, limit 2)`.
    pub fn describe(&self) -> String {
        match &self.value {
            Some(value) => format!("{}={value} (limit {})", self.key, self.limit),
            None => format!("{} (any value, limit {})", self.key, self.limit),
        }
    }
}

/// The first limit that starting a run tagged `claimed` would exceed while runs tagged
/// `running` run, as a sentence; `None` when every limit allows it. Shared by the backends,
/// which call it inside the claim's transaction (serialized with every other limited claim).
pub fn tag_limit_reached(
    claimed: &[(String, String)],
    running: &[Vec<(String, String)>],
    limits: &[TagLimit],
) -> Option<String> {
    limits.iter().filter(|limit| limit.matches(claimed)).find_map(|limit| {
        let count = running.iter().filter(|tags| limit.matches(tags)).count();
        (count >= limit.limit as usize).then(|| {
            let runs =
                if count == 1 { "1 running run is" } else { &format!("{count} running runs are") };
            format!("{runs} tagged {}: the tag limit", limit.describe())
        })
    })
}

/// Tags as one text column: `key=value` lines, sorted. Keys hold no `=` and no line break,
/// values no line break (the server checks both before a run is written).
pub fn tags_text(tags: &[(String, String)]) -> String {
    tags.iter().map(|(key, value)| format!("{key}={value}\n")).collect()
}

/// [`tags_text`] read back; `None` for text it cannot have written.
pub fn tags_from_text(text: &str) -> Option<Vec<(String, String)>> {
    text.lines()
        .map(|line| line.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// One decision of the lifecycle, applied in one transaction if the deployment's version is
/// still `version`. Order inside: new revisions, revision patches, new runs, run patches, the
/// deployment patch (so it may point at new revisions), then `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleWrite {
    pub deployment: DeploymentId,
    pub version: i64,
    pub now: UnixMillis,
    pub deployment_patch: DeploymentPatch,
    pub new_revisions: Vec<NewRevision>,
    pub revisions: Vec<RevisionPatch>,
    pub new_runs: Vec<NewRun>,
    pub runs: Vec<RunPatch>,
    /// Removes the deployment with its revisions, runs, steps and materializations.
    pub delete: bool,
    /// For a write that starts runs: the tag limits they must keep, counted over every running
    /// run of the store in the same transaction; over one, nothing is written
    /// ([`Applied::Limited`]).
    pub run_limits: Vec<TagLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written; the deployment's new version, and the rows inserted, in the write's order.
    Done { version: i64, revisions: Vec<Revision>, runs: Vec<Run> },
    /// The deployment changed since it was read: nothing was written; read it again.
    Stale,
    /// A run it starts would exceed a tag limit (the sentence says which): nothing was written.
    Limited(String),
}

/// What the lifecycle needs of a deployment: its row and the revisions and runs its rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRecord {
    pub deployment: Deployment,
    /// Every queued or deploying revision, the head and the serving one, by number.
    pub revisions: Vec<Revision>,
    /// Every queued or running run.
    pub runs: Vec<Run>,
}

/// A webhook delivery accepted for processing, recorded before it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntake {
    /// `github` or `gitlab`.
    pub source: String,
    /// The host's delivery id (scoped by source); a second delivery with the same id is refused.
    pub delivery: Option<String>,
    pub repository: RepositoryName,
    /// The parsed job, as JSON.
    pub payload: String,
    /// The server that accepted it.
    pub received_by: String,
    pub now: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntakeId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intake {
    pub id: IntakeId,
    pub source: String,
    pub delivery: Option<String>,
    pub repository: RepositoryName,
    pub payload: String,
    pub received_by: String,
    pub received_at: UnixMillis,
    pub done_at: Option<UnixMillis>,
}

/// A deployment's record of one schedule: whether it is on (production's always are; a branch
/// deployment's only once switched on) and since when its ticks count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub deployment_id: DeploymentId,
    pub schedule: String,
    pub enabled: bool,
    /// Ticks after this moment are owed: when the schedule was first seen or switched on.
    pub since: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TickId(pub i64);

/// What became of a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickStatus {
    /// Claimed by a server that is starting its run.
    Claimed,
    /// Its run was started (`run_id`).
    Started,
    /// Not run: the schedule's previous run was still active (`message` names it).
    Skipped,
    /// The run could not be started (`message` says why).
    Failed,
}

impl TickStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TickStatus::Claimed => "claimed",
            TickStatus::Started => "started",
            TickStatus::Skipped => "skipped",
            TickStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<TickStatus> {
        Some(match text {
            "claimed" => TickStatus::Claimed,
            "started" => TickStatus::Started,
            "skipped" => TickStatus::Skipped,
            "failed" => TickStatus::Failed,
            _ => return None,
        })
    }
}

/// A tick to claim: one per (deployment, schedule, tick time, manual), so of several servers
/// only one starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTick {
    pub deployment_id: DeploymentId,
    pub schedule: String,
    pub tick_at: UnixMillis,
    /// Asked for through the API ("run one tick now") rather than due by the pattern.
    pub manual: bool,
    /// Ticks of the pattern that passed unrun before this one (the server was down).
    pub missed: u64,
    pub claimed_by: String,
    pub now: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTick {
    pub id: TickId,
    pub deployment_id: DeploymentId,
    pub schedule: String,
    pub tick_at: UnixMillis,
    pub manual: bool,
    pub missed: u64,
    pub status: TickStatus,
    pub run_id: Option<RunId>,
    pub message: Option<String>,
    pub claimed_by: String,
    pub claimed_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: RunId,
    pub deployment_id: DeploymentId,
    pub revision_id: RevisionId,
    /// The selection as the user wrote it.
    pub selection: String,
    pub status: RunStatus,
    pub error: Option<String>,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    /// Set when someone asked to cancel; the executor stops at the next step boundary.
    pub cancel_requested: bool,
    /// Who executes it while `running`.
    pub lease: Option<Lease>,
    /// Sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    pub id: StepId,
    pub run_id: RunId,
    /// 0-based position in the plan.
    pub position: u32,
    pub asset_key: AssetKey,
    pub status: StepStatus,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub row_count: Option<i64>,
    pub error: Option<String>,
    /// Output of the step, appended while it runs.
    pub log: String,
    /// In a catch-up run: what the step does to its asset, for people (`promoted (from
    /// feature-x, run 7)`, `built (changed; never built in a branch)`); `None` elsewhere.
    pub action: Option<String>,
    /// In a catch-up run: the branch materialization a promotion takes.
    pub promoted_from: Option<MaterializationId>,
}

/// A fingerprint of what live views show, cheap to read and to compare: it differs from the
/// previous one whenever a lifecycle write bumped a deployment's version, or a step of an active
/// (queued or running) run changed its status, got its action, or wrote to its log. Read by every
/// event stream on every tick, so it is aggregated in the store, never a listing of every step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Every deployment (closed ones too) with its version, by id.
    pub deployments: Vec<(DeploymentId, i64)>,
    /// The active runs, by id.
    pub runs: Vec<RunActivity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunActivity {
    pub run: RunId,
    pub status: String,
    /// Per step status (its stored name), how many steps have it, how many of those have an
    /// action, and their logs' total length; by status name.
    pub steps: Vec<(String, i64, i64, i64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub deployment_id: Option<DeploymentId>,
    pub statuses: Vec<RunStatus>,
    /// Newest first; 0 means no limit.
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaterializationId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialization {
    pub deployment_id: DeploymentId,
    pub run_id: RunId,
    pub asset_key: AssetKey,
    pub commit: CommitSha,
    pub row_count: Option<i64>,
    pub duration_ms: i64,
    pub created_at: UnixMillis,
}

/// What a materialization was built from: the asset's fingerprint and its parts, and for each
/// upstream the materialization it read (production's, or its own deployment's; `None` for a
/// source or a table no recorded run built). The catch-up decides from it whether a branch's
/// table is exactly what production would build (`offshoot_core::catch_up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub fingerprint: Fingerprint,
    pub code_version: String,
    /// The partitions definition as the core renders it; empty for none.
    pub partitions: String,
    /// One per upstream, sorted by key.
    pub upstream: Vec<UpstreamProvenance>,
    /// Set on a production materialization that took a branch's table instead of running.
    pub promoted_from: Option<PromotedFrom>,
    /// On a branch materialization: production's materialization of the same asset that was
    /// current when the branch built it (the run's start), what "the branch against production
    /// as it was" compares with; `None` in production or when production had none.
    pub built_against: Option<ReadMaterialization>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProvenance {
    pub key: AssetKey,
    /// The upstream's fingerprint when this materialization was built.
    pub fingerprint: Fingerprint,
    pub read: Option<ReadMaterialization>,
}

/// A materialization that another one read or was promoted from. Kept by value (no foreign
/// key): the provenance stays readable after the deployment it names is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMaterialization {
    pub id: MaterializationId,
    pub deployment_id: DeploymentId,
    pub run_id: RunId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotedFrom {
    pub materialization: ReadMaterialization,
    /// The branch deployment's name then, for people.
    pub deployment: DeploymentName,
}

/// A recorded materialization with its id and, if it was recorded with one, its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMaterialization {
    pub id: MaterializationId,
    pub materialization: Materialization,
    pub provenance: Option<Provenance>,
}

impl RecordedMaterialization {
    /// The materialization as production's catch-up reads it (`offshoot_core::catch_up`): a
    /// read of a `production` materialization is `Production`, of any other deployment's (its
    /// own) `Own`, nothing recorded `External`. `None` without provenance: a materialization
    /// recorded before provenance existed is never promoted and never counts as up to date.
    pub fn as_built(&self, production: DeploymentId) -> Option<catch_up::Built> {
        let provenance = self.provenance.as_ref()?;
        let upstream = provenance
            .upstream
            .iter()
            .map(|upstream| {
                let read = match &upstream.read {
                    None => catch_up::Read::External,
                    Some(read) if read.deployment_id == production => {
                        catch_up::Read::Production(catch_up::BuildId(read.id.0))
                    }
                    Some(read) => catch_up::Read::Own(catch_up::BuildId(read.id.0)),
                };
                let read = catch_up::UpstreamRead { fingerprint: upstream.fingerprint, read };
                (upstream.key.clone(), read)
            })
            .collect();
        Some(catch_up::Built {
            id: catch_up::BuildId(self.id.0),
            fingerprint: provenance.fingerprint,
            code_version: provenance.code_version.clone(),
            partitions: provenance.partitions.clone(),
            upstream,
        })
    }
}

/// What a cached data diff was computed from: the pair of materializations (production's and
/// the branch's) and every option that changes the answer, as fields of their own. An entry
/// matches only when all of them are equal.
#[derive(Debug, Clone, PartialEq)]
pub struct DataDiffKey {
    pub production: MaterializationId,
    pub branch: MaterializationId,
    /// The key columns asked for; `None`: a key inferred from the data.
    pub key_columns: Option<Vec<String>>,
    pub tolerance: f64,
    /// Rows above which the diff samples; `None`: no limit.
    pub row_limit: Option<u64>,
    pub sample: u32,
    /// The stored form's version (the server's): an entry of another version never matches.
    pub format_version: u32,
}

/// A cached data diff: the server's stored form (JSON text, opaque to the store) and when it
/// was computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataDiff {
    pub diff_json: String,
    pub computed_at: UnixMillis,
}

/// Most data diffs the store keeps; the least recently computed go first.
pub const DATA_DIFF_CACHE_ENTRIES: u32 = 2_000;

/// `DataDiffKey::key_columns` as one text column: `*` for an inferred key, else each column
/// quoted as an SQL identifier (`"a","b""c"`), so distinct lists never share a text.
pub fn key_columns_text(key_columns: Option<&[String]>) -> String {
    match key_columns {
        None => "*".to_owned(),
        Some(columns) => columns
            .iter()
            .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Every method is one durable step: when it returns `Ok`, the change survives a crash.
/// A variable or secret set through the API, for the processes of matching deployments; the key
/// is repository, name, scope and branch.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredVariable {
    pub repository: RepositoryName,
    pub name: String,
    pub scope: VariableScope,
    /// With `branches`: only this branch's deployment; `None`: every branch.
    pub branch: Option<BranchName>,
    /// Never returned by the API for a secret (the server's rule); kept as given.
    pub value: String,
    pub secret: bool,
    pub updated_at: UnixMillis,
}

impl std::fmt::Debug for StoredVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredVariable")
            .field("repository", &self.repository)
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("branch", &self.branch)
            .field("value", &"<redacted>")
            .field("secret", &self.secret)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Deployments. (repository, name) is unique, and so is (repository, branch).
    /// The deployment of `new.branch`, created (open, version 0) if it has none: two concurrent
    /// calls for one branch return the same row. `Conflict` when `new.name` belongs to another
    /// branch (pick another name).
    async fn ensure_deployment(&self, new: NewDeployment) -> StoreResult<Deployment>;
    /// `ensure_deployment` for a branch deployment under a cap: a new one is created only while
    /// fewer than `max_open` branch deployments (of every repository) are open, counted and
    /// inserted as one step for every writer of the store (several servers too). `None` when the
    /// branch has no deployment and the cap is reached.
    async fn ensure_deployment_within(
        &self,
        new: NewDeployment,
        max_open: usize,
    ) -> StoreResult<Option<Deployment>>;
    async fn get_deployment(&self, id: DeploymentId) -> StoreResult<Deployment>;
    async fn find_deployment(
        &self,
        repository: &RepositoryName,
        name: &DeploymentName,
    ) -> StoreResult<Option<Deployment>>;
    async fn find_deployment_by_branch(
        &self,
        repository: &RepositoryName,
        branch: &BranchName,
    ) -> StoreResult<Option<Deployment>>;
    /// Ordered by kind (production first), then name.
    async fn list_deployments(&self, filter: &DeploymentFilter) -> StoreResult<Vec<Deployment>>;
    /// Pins (never closed by the TTL) or unpins; bumps the version.
    async fn set_pinned(&self, id: DeploymentId, pinned: bool, now: UnixMillis) -> StoreResult<()>;

    // The lifecycle.
    /// The deployment's row (read first) and the revisions and runs its lifecycle reads.
    async fn lifecycle(&self, id: DeploymentId) -> StoreResult<LifecycleRecord>;
    /// Applies one lifecycle decision atomically, if the version still matches.
    async fn apply(&self, write: LifecycleWrite) -> StoreResult<Applied>;

    // Revisions.
    async fn get_revision(&self, id: RevisionId) -> StoreResult<Revision>;
    /// Newest (highest number) first; `limit` 0 means all.
    async fn list_revisions(
        &self,
        deployment: DeploymentId,
        limit: u32,
    ) -> StoreResult<Vec<Revision>>;
    /// The newest (highest number) revision of every deployment that has one, in no order: one
    /// query for listings instead of one per deployment.
    async fn newest_revisions(&self) -> StoreResult<Vec<Revision>>;
    async fn find_revision_by_commit(
        &self,
        deployment: DeploymentId,
        commit: &CommitSha,
    ) -> StoreResult<Option<Revision>>;
    /// Across all deployments, oldest first: the deploy worker's queue and the reconciler's view.
    async fn revisions_with_status(
        &self,
        statuses: &[RevisionStatus],
    ) -> StoreResult<Vec<Revision>>;

    // Runs and their steps.
    async fn get_run(&self, id: RunId) -> StoreResult<Run>;
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>>;
    /// Extends every lease `owner` holds (deploying revisions, running runs, running teardowns)
    /// to `until` (`until` in the past releases them). Not a lifecycle change: the version
    /// stays. Returns how many it holds.
    async fn renew_leases(&self, owner: &str, until: UnixMillis) -> StoreResult<u64>;
    /// In plan order.
    async fn list_steps(&self, run: RunId) -> StoreResult<Vec<RunStep>>;
    /// Writes status, times, row count, error, action and promoted-from (not the log).
    async fn update_step(&self, step: &RunStep) -> StoreResult<()>;
    async fn append_step_log(&self, step: StepId, text: &str) -> StoreResult<()>;
    /// Several steps at once, in one transaction: each step's `update_step` fields written and
    /// its text appended to its log. For many steps decided together (a catch-up's up-to-date
    /// steps), one commit instead of two per step.
    async fn update_steps(&self, steps: &[(&RunStep, &str)]) -> StoreResult<()>;
    /// What live views depend on, aggregated ([`Activity`]).
    async fn activity(&self) -> StoreResult<Activity>;
    /// A step's outcome in one transaction: `update_step`'s fields, `log` appended, and, for a
    /// step that built its asset, the materialization with its provenance (its id returned).
    /// One commit per finished step instead of one per write.
    async fn finish_step(
        &self,
        step: &RunStep,
        log: &str,
        built: Option<(&Materialization, &Provenance)>,
    ) -> StoreResult<Option<MaterializationId>>;

    // Materializations: which deployment built which asset, when.
    async fn record_materialization(&self, materialization: &Materialization) -> StoreResult<()>;
    /// Newest first; `limit` 0 means all.
    async fn list_materializations(
        &self,
        deployment: DeploymentId,
        asset: Option<&AssetKey>,
        limit: u32,
    ) -> StoreResult<Vec<Materialization>>;

    /// Records a materialization with its provenance (the row and every upstream read, in one
    /// transaction) and returns its id. `NotFound` as `record_materialization`.
    async fn record_provenance(
        &self,
        materialization: &Materialization,
        provenance: &Provenance,
    ) -> StoreResult<MaterializationId>;
    /// The last recorded materialization of each asset of the deployment (the table it holds
    /// now), with its provenance, sorted by asset key.
    async fn current_materializations(
        &self,
        deployment: DeploymentId,
    ) -> StoreResult<Vec<RecordedMaterialization>>;
    /// [`Store::current_materializations`]' ids alone (which materialization, of which run),
    /// sorted by asset key: what a run's provenance starts from, without reading every row's
    /// provenance and reads. `Some(keys)` reads only those keys' (a run reads what its steps
    /// build and read, not the whole graph).
    async fn current_materialization_ids(
        &self,
        deployment: DeploymentId,
        keys: Option<&BTreeSet<AssetKey>>,
    ) -> StoreResult<Vec<(AssetKey, ReadMaterialization)>>;
    async fn get_materialization(
        &self,
        id: MaterializationId,
    ) -> StoreResult<RecordedMaterialization>;

    /// The asset's last materialization in the deployment recorded before `before` (the one a
    /// later materialization replaced), with its provenance; `None` if there was none.
    async fn materialization_before(
        &self,
        deployment: DeploymentId,
        asset: &AssetKey,
        before: MaterializationId,
    ) -> StoreResult<Option<RecordedMaterialization>>;

    // Data diffs, cached per pair of materializations.
    /// The cached diff of exactly `key`, if one is stored.
    async fn cached_data_diff(&self, key: &DataDiffKey) -> StoreResult<Option<StoredDataDiff>>;
    /// Stores (or replaces) the diff of `key`, and in the same transaction prunes the cache:
    /// entries whose production or branch materialization is no longer the current one of its
    /// deployment's asset (deleted, or replaced by a newer build: the table it described is
    /// gone), then all but the `keep` most recently computed (the server keeps
    /// [`DATA_DIFF_CACHE_ENTRIES`]).
    async fn cache_data_diff(
        &self,
        key: &DataDiffKey,
        diff: &StoredDataDiff,
        keep: u32,
    ) -> StoreResult<()>;

    // Durable intake of webhook deliveries.
    /// Records an accepted delivery; `None` when its delivery id was recorded before (a replay).
    async fn record_intake(&self, new: NewIntake) -> StoreResult<Option<Intake>>;
    /// Deliveries not processed yet, oldest first.
    async fn pending_intake(&self) -> StoreResult<Vec<Intake>>;
    async fn finish_intake(&self, id: IntakeId, now: UnixMillis) -> StoreResult<()>;

    // Schedules.
    /// The deployment's schedule records, by name.
    async fn schedule_states(&self, deployment: DeploymentId) -> StoreResult<Vec<ScheduleState>>;
    /// The schedule's record, inserted with `enabled` and `since` when there is none (an existing
    /// one is returned unchanged).
    async fn ensure_schedule_state(
        &self,
        deployment: DeploymentId,
        schedule: &str,
        enabled: bool,
        since: UnixMillis,
    ) -> StoreResult<ScheduleState>;
    /// Switches a schedule on or off at `now`; switching on (from off) moves `since` to `now`, so
    /// ticks from before are not owed.
    async fn set_schedule_enabled(
        &self,
        deployment: DeploymentId,
        schedule: &str,
        enabled: bool,
        now: UnixMillis,
    ) -> StoreResult<ScheduleState>;
    /// Claims a tick; `None` when it was claimed before (by this server or another).
    async fn claim_tick(&self, new: NewTick) -> StoreResult<Option<ScheduleTick>>;
    /// Records what became of a claimed tick.
    async fn finish_tick(
        &self,
        id: TickId,
        status: TickStatus,
        run: Option<RunId>,
        message: Option<&str>,
    ) -> StoreResult<()>;
    /// A deployment's ticks (of one schedule, or all), newest tick time first, at most `limit`
    /// (0: all).
    async fn list_ticks(
        &self,
        deployment: DeploymentId,
        schedule: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ScheduleTick>>;
    /// Marks the ticks `claimed_by` claimed and never finished `failed` with `message` (that
    /// server stopped between claiming a tick and starting its run); how many.
    async fn abandon_claimed_ticks(&self, claimed_by: &str, message: &str) -> StoreResult<u64>;
    /// The run of the schedule's newest tick that started one (manual ticks included).
    async fn last_tick_run(
        &self,
        deployment: DeploymentId,
        schedule: &str,
    ) -> StoreResult<Option<RunId>>;
    /// The newest tick time of the schedule's pattern that was claimed (manual ticks not counted).
    async fn last_scheduled_tick(
        &self,
        deployment: DeploymentId,
        schedule: &str,
    ) -> StoreResult<Option<UnixMillis>>;
    // Variables and secrets set through the API.
    /// Sets the variable of its key (repository, name, scope, branch), replacing value, secrecy
    /// and time.
    async fn set_variable(&self, variable: &StoredVariable) -> StoreResult<()>;
    /// Removes the variable of that key; `NotFound` when there is none.
    async fn unset_variable(
        &self,
        repository: &RepositoryName,
        name: &str,
        scope: VariableScope,
        branch: Option<&BranchName>,
    ) -> StoreResult<()>;
    /// The repository's variables (every repository's with `None`), sorted by repository, name,
    /// scope (production, branches, local) and branch (every branch's first).
    async fn list_variables(
        &self,
        repository: Option<&RepositoryName>,
    ) -> StoreResult<Vec<StoredVariable>>;
}

/// Where leases live, for `renew_leases`: (table, column prefix, status column, status).
pub const LEASED_WORK: [(&str, &str, &str, &str); 3] = [
    ("revisions", "lease", "status", "deploying"),
    ("runs", "lease", "status", "running"),
    ("deployments", "teardown_lease", "teardown", "running"),
];

/// What becomes of a run's unfinished steps when it ends without its executor: (from, to,
/// error).
pub fn step_endings(end: StepsEnd) -> &'static [(StepStatus, StepStatus, Option<&'static str>)] {
    match end {
        StepsEnd::Recorded => &[],
        StepsEnd::Canceled => &[
            (StepStatus::Pending, StepStatus::Canceled, None),
            (StepStatus::Running, StepStatus::Canceled, None),
        ],
        StepsEnd::Interrupted => &[
            (
                StepStatus::Running,
                StepStatus::Failed,
                Some("the server stopped while this step ran"),
            ),
            (StepStatus::Pending, StepStatus::Skipped, None),
        ],
    }
}

/// `ensure_deployment_within` when the insert did nothing: the branch's deployment (a concurrent
/// first delivery created it), `None` when the cap is reached, or why not.
pub async fn not_inserted_within<S: Store + ?Sized>(
    store: &S,
    new: &NewDeployment,
    max_open: usize,
) -> StoreResult<Option<Deployment>> {
    if let Some(existing) = store.find_deployment_by_branch(&new.repository, &new.branch).await? {
        return existing_deployment(new, Some(existing)).map(Some);
    }
    let open = store.list_deployments(&DeploymentFilter::default()).await?;
    let branches = open.iter().filter(|d| d.kind == DeploymentKind::Branch).count();
    if branches >= max_open {
        Ok(None)
    } else {
        existing_deployment(new, None).map(Some)
    }
}

/// `ensure_deployment` when the insert did nothing: the branch's existing deployment, or why not.
pub fn existing_deployment(
    new: &NewDeployment,
    existing: Option<Deployment>,
) -> StoreResult<Deployment> {
    match existing {
        Some(existing) if existing.kind == new.kind => Ok(existing),
        Some(existing) => Err(StoreError::Conflict(format!(
            "branch {:?} already has the {} deployment `{}`",
            new.branch.as_str(),
            existing.kind,
            existing.name
        ))),
        None => Err(StoreError::Conflict(format!(
            "the name `{}` belongs to another branch's deployment",
            new.name
        ))),
    }
}
