//! The deployment lifecycle, applied: every state change of a deployment (push, close, reopen,
//! delete, TTL, deploy and run claims and results, teardown) is one event given to the pure
//! state machine in `offshoot_core::lifecycle`, whose decision is written in one transaction
//! with a version check ([`offshoot_store::Store::apply`]); a concurrent change makes the write
//! stale, and the event is decided again on what is there now. Effects (wake a worker, stop a
//! run, drop the schema, publish feedback) are carried out only after the write.
//!
//! Also here: the work around the lifecycle that is not a decision: the teardown itself, the TTL
//! sweep, the lease heartbeat, the folder sweep and start-up reconciliation.

use std::collections::BTreeMap;
use std::time::Duration;

use offshoot_core::lifecycle::{
    Change, Commit, Decision, Effect, Event, Lease, Lifecycle, Refusal, RevisionPhase,
    RevisionState, RunPhase, RunState,
};
use offshoot_core::{
    AssetKey, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus, RevisionStatus,
    RunStatus, SnapshotBase,
};
use offshoot_store::{
    Applied, CommitDetails, DeployOutput, Deployment, DeploymentFilter, DeploymentId,
    DeploymentPatch, LifecycleRecord, LifecycleWrite, NewRevision, NewRun, PullRequest, Revision,
    RevisionPatch, Run, RunId, RunPatch, StoreError, TagLimit,
};

use crate::notices::Notice;
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::{now, AppState, Metrics, SharedState};

/// Data an event's writes need beyond what the state machine decides.
#[derive(Debug, Default, Clone)]
pub struct Extras {
    /// The pushed commit as git describes it.
    pub commit: Option<CommitDetails>,
    /// A pull request's id and url (its status is the machine's).
    pub pull_request: Option<PullRequest>,
    pub base_deployment: Option<Option<DeploymentName>>,
    /// The snapshot base and the commit it took.
    pub snapshot_base: Option<(SnapshotBase, Option<CommitSha>)>,
    /// A finished deploy's findings.
    pub output: Option<DeployOutput>,
    /// A launched run's selection and planned steps.
    pub run: Option<(String, Vec<AssetKey>)>,
    /// A launched run's tags (sorted by key).
    pub run_tags: Vec<(String, String)>,
    /// For a run claim: the tag limits it must keep (`tag_concurrency_limits`).
    pub run_limits: Vec<TagLimit>,
    /// Why a finished run failed.
    pub run_error: Option<String>,
}

/// An event with what its writes need.
pub struct Input {
    pub event: Event,
    pub extras: Extras,
}

impl From<Event> for Input {
    fn from(event: Event) -> Input {
        Input { event, extras: Extras::default() }
    }
}

/// What an applied event did.
#[derive(Debug)]
pub struct Outcome {
    pub decision: Decision,
    /// The deployment as written (`None` once deleted).
    pub deployment: Option<Deployment>,
    pub new_revisions: Vec<Revision>,
    pub new_runs: Vec<Run>,
}

impl Outcome {
    /// Whether the decision moved revision `number` to `deploying` (a claim was granted).
    pub fn claimed_deploy(&self, number: u32) -> bool {
        self.decision.changes.iter().any(|c| matches!(c, Change::Revision { number: n, phase: RevisionPhase::Deploying(_), .. } if *n == number))
    }

    pub fn claimed_run(&self, run: RunId) -> bool {
        self.decision.changes.iter().any(
            |c| matches!(c, Change::Run { run: r, phase: RunPhase::Running(_), .. } if *r == run.0),
        )
    }

    pub fn claimed_teardown(&self) -> bool {
        self.decision
            .changes
            .iter()
            .any(|c| matches!(c, Change::Teardown(offshoot_core::lifecycle::Teardown::Running(_))))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Making the event failed (e.g. git could not relate two commits).
    #[error("{}", .0.message)]
    Input(ServiceError),
    #[error("the deployment kept changing; gave up after {0} attempts")]
    Contended(usize),
    /// A run claim over a tag limit (the sentence says which); nothing was written.
    #[error("{0}")]
    Limited(String),
}

impl From<LifecycleError> for ServiceError {
    fn from(error: LifecycleError) -> ServiceError {
        match error {
            LifecycleError::Refused(refusal) => refusal_error(refusal),
            LifecycleError::Store(error) => error.into(),
            LifecycleError::Input(error) => error,
            LifecycleError::Contended(_) | LifecycleError::Limited(_) => {
                ServiceError::internal(error)
            }
        }
    }
}

fn refusal_error(refusal: Refusal) -> ServiceError {
    let message = refusal.to_string();
    match refusal {
        Refusal::Production => ServiceError::conflict(
            "production_protected",
            "`prod` is production; it cannot be closed or deleted",
        ),
        Refusal::NotProduction => ServiceError::invalid("not_production", message),
        Refusal::AlreadyServing(_) => ServiceError::conflict("nothing_to_roll_back", message),
        Refusal::Closed => ServiceError::conflict("deployment_closed", message),
        Refusal::NotServing => ServiceError::conflict("deployment_not_ready", message),
        Refusal::RunFinished(_) => ServiceError::conflict("run_finished", message),
        Refusal::UnknownRun(_) => ServiceError::not_found("run_not_found", message),
        Refusal::UnknownRevision(_) => ServiceError::not_found("revision_not_found", message),
        Refusal::NotClaimable(_) | Refusal::LeaseNotHeld => ServiceError::internal(message),
    }
}

/// Attempts before a write that keeps meeting concurrent changes gives up (each attempt loses
/// only to a write that succeeded, so this bounds starvation, not progress).
pub const ATTEMPTS: usize = 200;

/// The state machine's view of a stored deployment, with the numbers of its revisions.
pub struct View {
    pub machine: Lifecycle,
    numbers: BTreeMap<i64, u32>,
}

impl View {
    pub fn number_of(&self, revision: offshoot_store::RevisionId) -> Option<u32> {
        self.numbers.get(&revision.0).copied()
    }
}

fn revision_phase(revision: &Revision) -> RevisionPhase {
    match revision.status {
        RevisionStatus::Queued => RevisionPhase::Queued,
        // A deploying row without a lease (from before leases) counts as abandoned.
        RevisionStatus::Deploying => RevisionPhase::Deploying(
            revision.lease.clone().unwrap_or(Lease { owner: String::new(), until: 0 }),
        ),
        RevisionStatus::Ready => RevisionPhase::Ready,
        RevisionStatus::Failed => RevisionPhase::Failed,
        RevisionStatus::Superseded => RevisionPhase::Superseded,
    }
}

fn run_phase(run: &Run) -> RunPhase {
    match run.status {
        RunStatus::Queued => RunPhase::Queued,
        RunStatus::Running => {
            RunPhase::Running(run.lease.clone().unwrap_or(Lease { owner: String::new(), until: 0 }))
        }
        RunStatus::Succeeded => RunPhase::Succeeded,
        RunStatus::Failed => RunPhase::Failed,
        RunStatus::Canceled => RunPhase::Canceled,
    }
}

pub fn view(record: &LifecycleRecord, next_revision: u32) -> View {
    let deployment = &record.deployment;
    let numbers: BTreeMap<i64, u32> = record.revisions.iter().map(|r| (r.id.0, r.number)).collect();
    let revisions = record
        .revisions
        .iter()
        .map(|r| {
            (
                r.number,
                RevisionState {
                    commit: Commit { sha: r.commit.sha.clone(), time: r.commit.time },
                    phase: revision_phase(r),
                },
            )
        })
        .collect();
    let runs = record
        .runs
        .iter()
        .map(|r| {
            (
                r.id.0,
                RunState {
                    revision: numbers.get(&r.revision_id.0).copied().unwrap_or(0),
                    phase: run_phase(r),
                    cancel_requested: r.cancel_requested,
                },
            )
        })
        .collect();
    let machine = Lifecycle {
        production: deployment.kind == DeploymentKind::Production,
        open: deployment.status == DeploymentStatus::Open,
        delete_requested: deployment.delete_requested,
        pull_request: deployment.pull_request.as_ref().map(|p| p.status),
        head: deployment.head_revision.and_then(|id| numbers.get(&id.0).copied()),
        serving: deployment.current_revision.and_then(|id| numbers.get(&id.0).copied()),
        next_revision,
        revisions,
        runs,
        teardown: deployment.teardown.clone(),
    };
    View { machine, numbers }
}

fn revision_status(phase: &RevisionPhase) -> RevisionStatus {
    match phase {
        RevisionPhase::Queued => RevisionStatus::Queued,
        RevisionPhase::Deploying(_) => RevisionStatus::Deploying,
        RevisionPhase::Ready => RevisionStatus::Ready,
        RevisionPhase::Failed => RevisionStatus::Failed,
        RevisionPhase::Superseded => RevisionStatus::Superseded,
    }
}

fn run_status(phase: &RunPhase) -> (RunStatus, Option<Lease>) {
    match phase {
        RunPhase::Queued => (RunStatus::Queued, None),
        RunPhase::Running(lease) => (RunStatus::Running, Some(lease.clone())),
        RunPhase::Succeeded => (RunStatus::Succeeded, None),
        RunPhase::Failed => (RunStatus::Failed, None),
        RunPhase::Canceled => (RunStatus::Canceled, None),
    }
}

/// The store writes of a decision.
fn write_of(
    record: &LifecycleRecord,
    decision: &Decision,
    extras: &Extras,
    now: i64,
) -> Result<LifecycleWrite, LifecycleError> {
    let deployment = &record.deployment;
    let mut write = LifecycleWrite {
        deployment: deployment.id,
        version: deployment.version,
        now,
        deployment_patch: DeploymentPatch::default(),
        new_revisions: Vec::new(),
        revisions: Vec::new(),
        new_runs: Vec::new(),
        runs: Vec::new(),
        delete: false,
        run_limits: extras.run_limits.clone(),
    };
    let patch = &mut write.deployment_patch;
    let details = |commit: &Commit| -> Option<CommitDetails> {
        extras
            .commit
            .iter()
            .chain(record.revisions.iter().map(|r| &r.commit))
            .find(|c| c.sha == commit.sha)
            .cloned()
    };
    for change in &decision.changes {
        match change {
            Change::Open => patch.status = Some(DeploymentStatus::Open),
            Change::Close { reason } => {
                patch.status = Some(DeploymentStatus::Closed);
                patch.close_reason = Some(reason.clone());
            }
            Change::PullRequest(status) => {
                let known = extras.pull_request.clone().or_else(|| deployment.pull_request.clone());
                let (id, url) = known.map(|p| (p.id, p.url)).unwrap_or_default();
                patch.pull_request = Some(PullRequest { id, url, status: *status });
            }
            Change::Head(number) => patch.head = Some(*number),
            Change::Serving(number) => patch.serving = Some(*number),
            Change::Pushed => patch.pushed = true,
            Change::Teardown(teardown) => patch.teardown = Some(teardown.clone()),
            Change::DeleteRequested => patch.delete_requested = true,
            Change::Delete => write.delete = true,
            Change::NewRevision { number, commit, phase, note } => {
                let commit = details(commit).ok_or_else(|| {
                    StoreError::Backend(format!("no details of commit {}", commit.sha))
                })?;
                write.new_revisions.push(NewRevision {
                    number: *number,
                    commit,
                    status: revision_status(phase),
                    error: note.clone(),
                });
            }
            Change::Revision { number, phase, note } => {
                let lease = match phase {
                    RevisionPhase::Deploying(lease) => Some(lease.clone()),
                    _ => None,
                };
                let output = matches!(phase, RevisionPhase::Ready | RevisionPhase::Failed)
                    .then(|| extras.output.clone())
                    .flatten();
                write.revisions.push(RevisionPatch {
                    number: *number,
                    status: revision_status(phase),
                    error: note.clone(),
                    lease,
                    output,
                });
            }
            Change::NewRun { revision } => {
                let (selection, steps) = extras
                    .run
                    .clone()
                    .ok_or_else(|| StoreError::Backend("a new run without its plan".into()))?;
                let tags = extras.run_tags.clone();
                write.new_runs.push(NewRun { revision: *revision, selection, steps, tags });
            }
            Change::Run { run, phase, cancel_requested, note, steps } => {
                let (status, lease) = run_status(phase);
                let error = note.clone().or_else(|| match phase {
                    RunPhase::Failed => extras.run_error.clone(),
                    RunPhase::Canceled => Some("canceled".to_owned()),
                    _ => None,
                });
                write.runs.push(RunPatch {
                    id: RunId(*run),
                    status,
                    cancel_requested: *cancel_requested,
                    error,
                    lease,
                    steps: *steps,
                });
            }
        }
    }
    // Pull-request details and the base ride along with a delivery that the machine took.
    let took_delivery =
        decision.changes.iter().any(|c| matches!(c, Change::Head(_) | Change::Open));
    if took_delivery || decision.changes.is_empty() {
        if let Some(pull_request) = &extras.pull_request {
            if patch.pull_request.is_none() {
                let status = deployment
                    .pull_request
                    .as_ref()
                    .map(|p| p.status)
                    .unwrap_or(pull_request.status);
                let wanted = PullRequest { status, ..pull_request.clone() };
                if deployment.pull_request.as_ref() != Some(&wanted) {
                    patch.pull_request = Some(wanted);
                }
            }
        }
        if let Some(base) = &extras.base_deployment {
            if &deployment.base_deployment != base {
                patch.base_deployment = Some(base.clone());
            }
        }
        if let Some(wanted) = &extras.snapshot_base {
            if (deployment.snapshot_base, deployment.snapshot_base_commit.as_ref())
                != (wanted.0, wanted.1.as_ref())
            {
                patch.snapshot_base = Some(wanted.clone());
            }
        }
    }
    Ok(write)
}

fn write_is_empty(write: &LifecycleWrite) -> bool {
    write.deployment_patch == DeploymentPatch::default()
        && write.new_revisions.is_empty()
        && write.revisions.is_empty()
        && write.new_runs.is_empty()
        && write.runs.is_empty()
        && !write.delete
}

/// Reads a deployment's lifecycle: its record and the state machine's view of it.
pub async fn read(
    state: &SharedState,
    deployment: DeploymentId,
) -> Result<(LifecycleRecord, View), LifecycleError> {
    let record = state.store.lifecycle(deployment).await?;
    // Read after the row, so a number taken meanwhile makes the write stale, never a clash.
    let next = state.store.list_revisions(deployment, 1).await?.first().map_or(1, |r| r.number + 1);
    let view = view(&record, next);
    Ok((record, view))
}

/// Decides `input` on what was read and writes it with the version check; `None` when another
/// writer came first (read again and decide again). Carries out the effects once written.
pub async fn attempt(
    state: &SharedState,
    record: LifecycleRecord,
    view: &View,
    input: Input,
) -> Result<Option<Outcome>, LifecycleError> {
    let time = now();
    let decision = view.machine.decide(&input.event, time)?;
    let write = write_of(&record, &decision, &input.extras, time)?;
    if write_is_empty(&write) {
        carry_out(state, &record.deployment, &decision.effects);
        return Ok(Some(Outcome {
            decision,
            deployment: Some(record.deployment),
            new_revisions: Vec::new(),
            new_runs: Vec::new(),
        }));
    }
    let deleted = write.delete;
    match state.store.apply(write).await? {
        Applied::Stale => Ok(None),
        Applied::Limited(reason) => Err(LifecycleError::Limited(reason)),
        Applied::Done { revisions, runs, .. } => {
            let written = if deleted {
                None
            } else {
                Some(state.store.get_deployment(record.deployment.id).await?)
            };
            count(state, &decision);
            state.notices.lifecycle_written();
            carry_out(state, written.as_ref().unwrap_or(&record.deployment), &decision.effects);
            Ok(Some(Outcome {
                decision,
                deployment: written,
                new_revisions: revisions,
                new_runs: runs,
            }))
        }
    }
}

/// The outcome when `make` finds nothing to do.
fn nothing(record: LifecycleRecord) -> Outcome {
    Outcome {
        decision: Decision::default(),
        deployment: Some(record.deployment),
        new_revisions: Vec::new(),
        new_runs: Vec::new(),
    }
}

/// Applies one event to a deployment: reads it, lets `make` build the event from what is there
/// (`None`: nothing to do after all), decides, and writes with the version check, again from the
/// start if another writer came first. Events that need I/O to be made (relating a pushed commit
/// to the head) loop over [`read`] and [`attempt`] themselves.
pub async fn apply<F>(
    state: &SharedState,
    deployment: DeploymentId,
    mut make: F,
) -> Result<Outcome, LifecycleError>
where
    F: FnMut(&LifecycleRecord, &View) -> Result<Option<Input>, ServiceError> + Send,
{
    for _ in 0..ATTEMPTS {
        let (record, view) = read(state, deployment).await?;
        let Some(input) = make(&record, &view).map_err(LifecycleError::Input)? else {
            return Ok(nothing(record));
        };
        if let Some(outcome) = attempt(state, record, &view, input).await? {
            return Ok(outcome);
        }
    }
    Err(LifecycleError::Contended(ATTEMPTS))
}

/// Applies an event that needs nothing but the state.
pub async fn apply_event(
    state: &SharedState,
    deployment: DeploymentId,
    event: Event,
) -> Result<Outcome, LifecycleError> {
    apply_with(state, deployment, event, Extras::default()).await
}

/// Reports the result of work this server did (a deploy, a run): retried a few times when the
/// store fails, since the work's lease is renewed while this server lives and nobody else would
/// ever finish it.
pub async fn report(
    state: &SharedState,
    deployment: DeploymentId,
    event: Event,
    extras: Extras,
) -> Result<Outcome, LifecycleError> {
    let mut wait = Duration::from_millis(100);
    loop {
        match apply_with(state, deployment, event.clone(), extras.clone()).await {
            Err(
                error @ (LifecycleError::Store(StoreError::Backend(_))
                | LifecycleError::Contended(_)),
            ) if wait < Duration::from_secs(10) => {
                tracing::warn!(
                    "reporting a result to deployment {}: {error}; retrying",
                    deployment.0
                );
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            result => return result,
        }
    }
}

/// Applies an event with fixed extras.
pub async fn apply_with(
    state: &SharedState,
    deployment: DeploymentId,
    event: Event,
    extras: Extras,
) -> Result<Outcome, LifecycleError> {
    apply(state, deployment, |_, _| {
        Ok(Some(Input { event: event.clone(), extras: extras.clone() }))
    })
    .await
}

fn count(state: &AppState, decision: &Decision) {
    for change in &decision.changes {
        match change {
            Change::Revision { phase: RevisionPhase::Superseded, .. }
            | Change::NewRevision { phase: RevisionPhase::Superseded, .. } => {
                Metrics::increment(&state.metrics.deploys_superseded)
            }
            Change::Revision { phase: RevisionPhase::Ready, .. } => {
                Metrics::increment(&state.metrics.deploys_ready)
            }
            Change::Revision { phase: RevisionPhase::Failed, .. } => {
                Metrics::increment(&state.metrics.deploys_failed)
            }
            Change::Run { phase: RunPhase::Succeeded, .. } => {
                Metrics::increment(&state.metrics.runs_succeeded)
            }
            Change::Run { phase: RunPhase::Failed, .. } => {
                Metrics::increment(&state.metrics.runs_failed)
            }
            Change::Run { phase: RunPhase::Canceled, .. } => {
                Metrics::increment(&state.metrics.runs_canceled)
            }
            _ => {}
        }
    }
}

/// Carries out a written decision's effects. None of them blocks the caller.
fn carry_out(state: &SharedState, deployment: &Deployment, effects: &[Effect]) {
    for effect in effects {
        match effect {
            Effect::Deploy => state.deploy_wakeup.notify_one(),
            Effect::StartRuns => state.run_wakeup.notify_one(),
            Effect::StopRun(run) => {
                if let Some(switch) = state
                    .cancel_switches
                    .lock()
                    .expect("never poisoned: no panics inside")
                    .get(&RunId(*run))
                {
                    let _ = switch.send(true);
                }
            }
            Effect::Teardown => {
                let (state, id) = (state.clone(), deployment.id);
                tokio::spawn(async move {
                    if let Err(error) = teardown(&state, id).await {
                        tracing::warn!(
                            "teardown of deployment {}: {error}; the maintenance sweep retries",
                            id.0
                        );
                    }
                });
            }
            Effect::RevisionFinished(number) => state
                .notices
                .send(Notice::RevisionFinished { deployment: deployment.id, number: *number }),
        }
    }
}

/// Claims a deployment's pending teardown, drops its warehouse objects, and records it done (or,
/// for a deleted deployment, removes its history). Nothing happens unless the claim is granted:
/// while runs or a deploy of the deployment are still going, the teardown waits for them.
pub async fn teardown(
    state: &SharedState,
    deployment: DeploymentId,
) -> Result<bool, LifecycleError> {
    let _turn = state.teardown_turn.lock().await;
    let lease = Lease {
        owner: state.config.server_id.clone(),
        until: now() + state.config.lease.as_millis() as i64,
    };
    let claimed = match apply_event(state, deployment, Event::ClaimTeardown { lease }).await {
        Ok(outcome) if outcome.claimed_teardown() => outcome,
        Ok(_) | Err(LifecycleError::Refused(_)) => return Ok(false),
        Err(error) => return Err(error),
    };
    let row = claimed.deployment.expect("a claimed teardown's deployment exists");
    state
        .warehouse
        .teardown(&state.target(&row))
        .await
        .map_err(|e| LifecycleError::Input(ServiceError::internal(e)))?;
    apply_event(
        state,
        deployment,
        Event::TeardownFinished { owner: state.config.server_id.clone() },
    )
    .await?;
    tracing::info!("dropped the warehouse objects of {}/{}", row.repository, row.name);
    Ok(true)
}

/// Closes a branch deployment: queued work is superseded or canceled, running runs are asked to
/// stop, and the warehouse objects are dropped once they have. History stays.
pub async fn close(
    state: &SharedState,
    deployment: &Deployment,
    reason: &str,
    pull_request: Option<offshoot_core::PullRequestStatus>,
) -> ServiceResult<Deployment> {
    close_with(state, deployment, reason, pull_request, Keep::Nothing, Extras::default()).await
}

/// What a close keeps of the deployment's warehouse objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Dropped once nothing of the deployment runs.
    Nothing,
    /// Kept for production's catch-up (a merge), until it releases them.
    TablesForCatchUp,
}

/// [`close`], recording the pull request's details too, keeping the tables when asked.
pub async fn close_with(
    state: &SharedState,
    deployment: &Deployment,
    reason: &str,
    pull_request: Option<offshoot_core::PullRequestStatus>,
    keep: Keep,
    extras: Extras,
) -> ServiceResult<Deployment> {
    let hold = keep == Keep::TablesForCatchUp;
    let event = Event::Close { reason: reason.to_owned(), pull_request, hold };
    let outcome = apply_with(state, deployment.id, event, extras).await?;
    tracing::info!(
        "closed {}/{}: {reason}{}",
        deployment.repository,
        deployment.name,
        if hold { "; its tables are kept for production's catch-up" } else { "" }
    );
    if outcome.decision.effects.contains(&Effect::Teardown) {
        // Nothing was running: the objects are dropped now, so the answer can say they are gone.
        return wait_for_teardown(state, deployment.id).await;
    }
    Ok(outcome.deployment.expect("a closed deployment exists"))
}

/// Waits (bounded) until the deployment's teardown is done; returns the row as it is then.
async fn wait_for_teardown(state: &SharedState, id: DeploymentId) -> ServiceResult<Deployment> {
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    loop {
        let row = state.store.get_deployment(id).await?;
        if row.teardown == offshoot_core::lifecycle::Teardown::Done
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(row);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens a closed deployment again and redeploys the newest commit it was delivered.
pub async fn reopen(state: &SharedState, deployment: &Deployment) -> ServiceResult<Deployment> {
    let _turn = state.open_turn.lock().await;
    if deployment.status == DeploymentStatus::Closed {
        check_open_limit(state).await?;
    }
    let outcome = apply_event(state, deployment.id, Event::Reopen).await?;
    Ok(outcome.deployment.expect("a reopened deployment exists"))
}

/// How long `delete` waits for runs to stop and the teardown to finish before answering.
const DELETE_WAIT: Duration = Duration::from_secs(30);

/// Deletes a branch deployment: closes it, and removes it with its history once its teardown is
/// done. `true` when it is gone on return; `false` when runs are still stopping (it goes later).
pub async fn delete(state: &SharedState, deployment: &Deployment) -> ServiceResult<bool> {
    let outcome = apply_event(state, deployment.id, Event::Delete).await?;
    if outcome.deployment.is_none() {
        return Ok(true);
    }
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    while tokio::time::Instant::now() < deadline {
        match state.store.get_deployment(deployment.id).await {
            Err(StoreError::NotFound(_)) => {
                tracing::info!("deleted {}/{}", deployment.repository, deployment.name);
                return Ok(true);
            }
            Err(error) => return Err(error.into()),
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    Ok(false)
}

/// Refuses opening one more branch deployment when `max_open_branch_deployments` are open.
/// (Creating one is checked by the store in the same step as the insert; reopening is checked
/// here, one reopen at a time on this server.)
pub async fn check_open_limit(state: &AppState) -> ServiceResult<()> {
    let open = state.store.list_deployments(&DeploymentFilter::default()).await?;
    let branches = open.iter().filter(|d| d.kind == DeploymentKind::Branch).count();
    if branches >= state.config.max_open_branch_deployments {
        return Err(open_limit_reached(state));
    }
    Ok(())
}

/// The error for a refused open: how many are open, the configured maximum.
pub fn open_limit_reached(state: &AppState) -> ServiceError {
    let max = state.config.max_open_branch_deployments;
    ServiceError::conflict(
        "deployment_limit_reached",
        format!("{max} branch deployments are open, the configured maximum; close one first"),
    )
}
