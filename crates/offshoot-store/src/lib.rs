//! The metadata store port: what Offshoot remembers about deployments, revisions, runs and
//! materializations, behind one trait that SQLite and PostgreSQL implement. Rows are this crate's
//! own types built from the core's newtypes; no driver type crosses this boundary.
//!
//! [`contract`] is the behaviour every implementation must show; each backend's tests run it.

pub mod contract;
pub mod rows;

use async_trait::async_trait;
use offshoot_core::{
    AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus, PullRequestStatus, RepositoryName,
    RevisionStatus, RunStatus, StepStatus, UnixMillis,
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
    /// Pinned deployments are never closed by the TTL.
    pub pinned: bool,
    /// The revision serving now: the latest ready one.
    pub current_revision: Option<RevisionId>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub last_push_at: UnixMillis,
    pub closed_at: Option<UnixMillis>,
    pub close_reason: Option<String>,
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

/// Who executes a revision's deploy or a run, and until when: a server renews its leases while
/// it works; a lease that expires (its server died) lets another server take the work over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub expires_at: UnixMillis,
}

/// A revision or run just claimed; `taken_over` when it was executing under an expired lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed<T> {
    pub row: T,
    pub taken_over: bool,
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
    /// Set by `claim_revision` and `renew_leases` only; `update_revision` leaves it alone.
    pub lease: Option<Lease>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRevision {
    pub deployment_id: DeploymentId,
    pub commit: CommitDetails,
    /// `Queued`, or `Superseded` for a push that arrived after a newer commit.
    pub status: RevisionStatus,
    pub error: Option<String>,
    pub now: UnixMillis,
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
    /// Set by `claim_run` and `renew_leases` only; `update_run` leaves it alone.
    pub lease: Option<Lease>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub deployment_id: DeploymentId,
    pub revision_id: RevisionId,
    pub selection: String,
    /// The planned steps, in execution (topological) order.
    pub steps: Vec<AssetKey>,
    pub now: UnixMillis,
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub deployment_id: Option<DeploymentId>,
    pub statuses: Vec<RunStatus>,
    /// Newest first; 0 means no limit.
    pub limit: u32,
}

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

/// Every method is one durable step: when it returns `Ok`, the change survives a crash.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Deployments. (repository, name) is unique, and so is (repository, branch).
    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Deployment>;
    async fn get_deployment(&self, id: DeploymentId) -> StoreResult<Deployment>;
    async fn find_deployment(&self, repository: &RepositoryName, name: &DeploymentName) -> StoreResult<Option<Deployment>>;
    async fn find_deployment_by_branch(&self, repository: &RepositoryName, branch: &BranchName) -> StoreResult<Option<Deployment>>;
    /// Ordered by kind (production first), then name.
    async fn list_deployments(&self, filter: &DeploymentFilter) -> StoreResult<Vec<Deployment>>;
    /// Writes every mutable field of the row with this id.
    async fn update_deployment(&self, deployment: &Deployment) -> StoreResult<()>;
    /// Removes the deployment with its revisions, runs, steps and materializations.
    async fn delete_deployment(&self, id: DeploymentId) -> StoreResult<()>;

    // Revisions.
    async fn insert_revision(&self, new: NewRevision) -> StoreResult<Revision>;
    async fn get_revision(&self, id: RevisionId) -> StoreResult<Revision>;
    /// Newest (highest number) first; `limit` 0 means all.
    async fn list_revisions(&self, deployment: DeploymentId, limit: u32) -> StoreResult<Vec<Revision>>;
    /// The newest (highest number) revision of every deployment that has one, in no order: one
    /// query for listings instead of one per deployment.
    async fn newest_revisions(&self) -> StoreResult<Vec<Revision>>;
    async fn find_revision_by_commit(&self, deployment: DeploymentId, commit: &CommitSha) -> StoreResult<Option<Revision>>;
    async fn update_revision(&self, revision: &Revision) -> StoreResult<()>;
    /// Across all deployments, oldest first: the deploy worker's queue and the reconciler's view.
    async fn revisions_with_status(&self, statuses: &[RevisionStatus]) -> StoreResult<Vec<Revision>>;
    /// Atomically: a `queued` revision, or a `deploying` one whose lease expired before `now`,
    /// becomes `deploying` under `owner`'s lease until `lease_until` (`started_at` = `now`). At
    /// most one caller gets `Some`; every other gets `None`.
    async fn claim_revision(&self, id: RevisionId, owner: &str, now: UnixMillis, lease_until: UnixMillis) -> StoreResult<Option<Claimed<Revision>>>;

    // Runs and their steps.
    async fn insert_run(&self, new: NewRun) -> StoreResult<Run>;
    async fn get_run(&self, id: RunId) -> StoreResult<Run>;
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>>;
    async fn update_run(&self, run: &Run) -> StoreResult<()>;
    /// Atomically: a `queued` run, or a `running` one whose lease expired before `now`, becomes
    /// `running` under `owner`'s lease. At most one caller gets `Some`.
    async fn claim_run(&self, id: RunId, owner: &str, now: UnixMillis, lease_until: UnixMillis) -> StoreResult<Option<Claimed<Run>>>;
    /// Extends every lease `owner` holds on deploying revisions and running runs to `lease_until`
    /// (`lease_until` in the past releases them). Returns how many it holds.
    async fn renew_leases(&self, owner: &str, lease_until: UnixMillis) -> StoreResult<u64>;
    /// In plan order.
    async fn list_steps(&self, run: RunId) -> StoreResult<Vec<RunStep>>;
    /// Writes status, times, row count and error (not the log).
    async fn update_step(&self, step: &RunStep) -> StoreResult<()>;
    async fn append_step_log(&self, step: StepId, text: &str) -> StoreResult<()>;

    // Materializations: which deployment built which asset, when.
    async fn record_materialization(&self, materialization: &Materialization) -> StoreResult<()>;
    /// Newest first; `limit` 0 means all.
    async fn list_materializations(&self, deployment: DeploymentId, asset: Option<&AssetKey>, limit: u32) -> StoreResult<Vec<Materialization>>;
}
