//! The deployment lifecycle as one pure state machine: [`Lifecycle`] is what a deployment is
//! (open or closed, the newest delivered commit, its revisions' and runs' phases, its teardown),
//! and [`Lifecycle::decide`] turns one [`Event`] into the [`Change`]s to write and the
//! [`Effect`]s to carry out once they are written. No clock, no I/O: callers pass `now` in and
//! compute the ancestry of a pushed commit before asking.
//!
//! The server applies a decision atomically (one transaction with a version check on the
//! deployment), so every rule below holds whatever the order of deliveries, duplicates,
//! concurrent calls, servers and crashes.
//!
//! # Rules
//! 1. **Latest commit wins, by ancestry.** The *head* is the newest commit ever delivered. A
//!    delivery of a descendant of the head (or, for diverged history, a commit at least as new)
//!    becomes the head; an ancestor or an older diverged commit is recorded as a superseded
//!    revision and changes nothing else. The same commit again is a duplicate, except that a
//!    failed head is retried and `redeploy` (the base changed) deploys it again.
//! 2. **Closed stays closed until reopened.** A close remembers the head. Reopen (or a delivery
//!    of the head or a newer commit that `opens`) deploys the head again. An older delivery
//!    never reopens a deployment.
//! 3. **At most one revision deploys at a time**, on any number of servers: a deploy is claimed
//!    under a lease, and a second claim waits until the first finishes or its lease expires. A
//!    claim of a newer revision supersedes a deploying one whose lease expired.
//! 4. **A deploy that finishes after a newer delivery or a close is discarded** (superseded):
//!    only the head is ever promoted, and only while the deployment is open. A failed head keeps
//!    the previous ready revision serving.
//! 5. **Teardown happens after everything of the deployment has stopped.** A close cancels
//!    queued runs at once, asks running ones to stop, and marks the teardown pending; the
//!    teardown is claimed (under a lease) only when no run is active and no deploy is in flight,
//!    and no deploy or run is claimed while it is pending. Runs that stop after a cancel end
//!    `canceled`, whatever their steps did.
//! 6. **Work is claimed under leases**; a result reported by a server that no longer holds the
//!    lease is refused. A run found executing under an expired lease fails with the reason (its
//!    step may have half-written a table); a deploy is simply claimed again (deploys are
//!    idempotent).
//! 7. Production is never closed or deleted.
//! 8. **A merged branch keeps its tables for production's catch-up.** A close that holds the
//!    teardown (the pull request merged; production's catch-up for the merge has not yet taken
//!    what it can) marks it `Held`: nothing is dropped until the catch-up releases it
//!    ([`Event::ReleaseTeardown`]); a reopen or a delete releases it too. The close and the push
//!    to the production branch may arrive in either order: the caller decides whether to hold.
//! 9. **Production rolls back to a revision it served before**: that revision serves again and
//!    the one serving is superseded; the head stays (a later push deploys as usual).

use std::collections::BTreeMap;

use crate::deployment::{
    pushed_commit_is_newer, CommitRelation, CommitSha, PullRequestStatus, UnixMillis,
};

/// Who executes a piece of work, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: UnixMillis,
}

impl Lease {
    fn live(&self, now: UnixMillis) -> bool {
        self.until >= now
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: CommitSha,
    /// Seconds since the epoch, from git: decides between diverged commits.
    pub time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionPhase {
    Queued,
    Deploying(Lease),
    Ready,
    Failed,
    Superseded,
}

impl RevisionPhase {
    pub fn is_finished(&self) -> bool {
        matches!(self, RevisionPhase::Ready | RevisionPhase::Failed | RevisionPhase::Superseded)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionState {
    pub commit: Commit,
    pub phase: RevisionPhase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunPhase {
    Queued,
    Running(Lease),
    Succeeded,
    Failed,
    Canceled,
}

impl RunPhase {
    pub fn is_active(&self) -> bool {
        matches!(self, RunPhase::Queued | RunPhase::Running(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    /// The revision it runs (the one serving when it was launched).
    pub revision: u32,
    pub phase: RunPhase,
    pub cancel_requested: bool,
}

/// Dropping a closed deployment's warehouse objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// Nothing to drop (open, or closed and dropped).
    Done,
    /// Closed: to be dropped once nothing of the deployment runs.
    Pending,
    Running(Lease),
    /// Closed after a merge: kept until production's catch-up has taken what it can of the
    /// tables ([`Event::ReleaseTeardown`] makes it `Pending`).
    Held,
}

/// One deployment's lifecycle. `revisions` holds at least every unfinished revision, the head
/// and the serving one (older finished ones may be left out: no rule reads them); `runs` holds
/// at least every active run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub production: bool,
    pub open: bool,
    pub delete_requested: bool,
    pub pull_request: Option<PullRequestStatus>,
    /// The revision of the newest delivered commit.
    pub head: Option<u32>,
    /// The revision serving now; while closed, the one that served last.
    pub serving: Option<u32>,
    pub next_revision: u32,
    pub revisions: BTreeMap<u32, RevisionState>,
    pub runs: BTreeMap<i64, RunState>,
    pub teardown: Teardown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A commit was delivered (API, webhook, watcher). `relation` is the commit's relation to the
    /// head's commit (`None` when there is no head). `opens`: a delivery of the head or a newer
    /// commit reopens a closed deployment. `redeploy`: deploy the head again even if it is ready
    /// (its base changed).
    Push {
        commit: Commit,
        relation: Option<CommitRelation>,
        opens: bool,
        redeploy: bool,
    },
    /// `hold`: keep the warehouse objects until [`Event::ReleaseTeardown`] (a merge whose
    /// production catch-up has not run yet).
    Close {
        reason: String,
        pull_request: Option<PullRequestStatus>,
        hold: bool,
    },
    /// Production's catch-up has taken what it can of a held deployment's tables: the teardown
    /// may go ahead. Nothing happens unless the teardown is held.
    ReleaseTeardown,
    /// Production serves revision `to` (one it served before) again.
    Rollback {
        to: u32,
    },
    Reopen,
    Delete,
    ClaimDeploy {
        revision: u32,
        lease: Lease,
    },
    /// `Err` is the failure message.
    DeployFinished {
        revision: u32,
        owner: String,
        outcome: Result<(), String>,
    },
    /// A run of the serving revision.
    LaunchRun,
    /// `max_running`: how many runs of a branch deployment may run at once
    /// (`max_concurrent_runs_per_branch_deployment`; `None`: only the pools limit them).
    /// Production ignores it: its pool is its limit.
    ClaimRun {
        run: i64,
        lease: Lease,
        max_running: Option<usize>,
    },
    /// `succeeded` is what the steps say; a requested cancel makes it `canceled` regardless.
    RunFinished {
        run: i64,
        owner: String,
        succeeded: bool,
    },
    CancelRun {
        run: i64,
    },
    ClaimTeardown {
        lease: Lease,
    },
    TeardownFinished {
        owner: String,
    },
}

/// What happens to a run's steps when the run ends without its executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepsEnd {
    /// The executor records them.
    Recorded,
    /// Canceled before it started: every step is canceled.
    Canceled,
    /// Its server stopped: a running step failed, pending ones are skipped.
    Interrupted,
}

/// One write of a decision. The store applies all of a decision's changes in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Open,
    Close {
        reason: String,
    },
    PullRequest(PullRequestStatus),
    Head(u32),
    Serving(Option<u32>),
    /// A delivery that counts for the TTL.
    Pushed,
    Teardown(Teardown),
    DeleteRequested,
    NewRevision {
        number: u32,
        commit: Commit,
        phase: RevisionPhase,
        note: Option<String>,
    },
    Revision {
        number: u32,
        phase: RevisionPhase,
        note: Option<String>,
    },
    NewRun {
        revision: u32,
    },
    Run {
        run: i64,
        phase: RunPhase,
        cancel_requested: bool,
        note: Option<String>,
        steps: StepsEnd,
    },
    /// Remove the deployment and its history (after its teardown).
    Delete,
}

/// What to carry out once a decision is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A revision is queued: wake the deploy worker.
    Deploy,
    /// A run is queued: wake the run executor.
    StartRuns,
    /// Stop a running run now (its process, its steps).
    StopRun(i64),
    /// The deployment's warehouse objects may be dropped: claim the teardown.
    Teardown,
    /// A revision reached its end (ready, failed): publish pull-request feedback.
    RevisionFinished(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("production cannot be closed or deleted")]
    Production,
    #[error("only production rolls back")]
    NotProduction,
    #[error("revision {0} is serving already")]
    AlreadyServing(u32),
    #[error("the deployment is closed; reopen it first")]
    Closed,
    #[error("the deployment has no ready revision yet")]
    NotServing,
    #[error("revision {0} is not known")]
    UnknownRevision(u32),
    #[error("run {0} is not known")]
    UnknownRun(i64),
    #[error("run {0} has finished already")]
    RunFinished(i64),
    /// A claim that cannot be granted now (another holds it, it moved on, a teardown waits).
    #[error("not claimable: {0}")]
    NotClaimable(&'static str),
    /// A result from a server that no longer holds the work's lease.
    #[error("the lease is held by another server or has been given up")]
    LeaseNotHeld,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub changes: Vec<Change>,
    pub effects: Vec<Effect>,
}

impl Decision {
    fn change(&mut self, change: Change) {
        self.changes.push(change);
    }

    fn effect(&mut self, effect: Effect) {
        if !self.effects.contains(&effect) {
            self.effects.push(effect);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.effects.is_empty()
    }
}

impl Lifecycle {
    /// A deployment with nothing delivered yet.
    pub fn new(production: bool) -> Lifecycle {
        Lifecycle {
            production,
            open: true,
            delete_requested: false,
            pull_request: None,
            head: None,
            serving: None,
            next_revision: 1,
            revisions: BTreeMap::new(),
            runs: BTreeMap::new(),
            teardown: Teardown::Done,
        }
    }

    /// The decision for `event`, or why it is refused (nothing changes then).
    pub fn decide(&self, event: &Event, now: UnixMillis) -> Result<Decision, Refusal> {
        let mut decision = Decision::default();
        match event {
            Event::Push { commit, relation, opens, redeploy } => {
                self.push(&mut decision, commit, *relation, *opens, *redeploy, now)
            }
            Event::Close { reason, pull_request, hold } => {
                self.close(&mut decision, reason, *pull_request, *hold, now)?
            }
            Event::ReleaseTeardown => {
                if self.teardown == Teardown::Held {
                    decision.change(Change::Teardown(Teardown::Pending));
                    self.teardown_if_quiet(&mut decision, now);
                }
            }
            Event::Rollback { to } => self.rollback(&mut decision, *to)?,
            Event::Reopen => self.reopen(&mut decision, now),
            Event::Delete => {
                if self.production {
                    return Err(Refusal::Production);
                }
                if !self.delete_requested {
                    decision.change(Change::DeleteRequested);
                }
                if self.open {
                    self.close(&mut decision, "deleted", None, false, now)?;
                } else if self.teardown == Teardown::Done {
                    decision.change(Change::Delete);
                } else {
                    // A held teardown goes ahead: the deployment is deleted, tables and all.
                    if self.teardown == Teardown::Held {
                        decision.change(Change::Teardown(Teardown::Pending));
                    }
                    self.teardown_if_quiet(&mut decision, now);
                }
            }
            Event::ClaimDeploy { revision, lease } => {
                self.claim_deploy(&mut decision, *revision, lease, now)?
            }
            Event::DeployFinished { revision, owner, outcome } => {
                self.deploy_finished(&mut decision, *revision, owner, outcome, now)?
            }
            Event::LaunchRun => {
                if !self.open {
                    return Err(Refusal::Closed);
                }
                let Some(serving) = self.serving else { return Err(Refusal::NotServing) };
                decision.change(Change::NewRun { revision: serving });
                decision.effect(Effect::StartRuns);
            }
            Event::ClaimRun { run, lease, max_running } => {
                self.claim_run(&mut decision, *run, lease, *max_running, now)?
            }
            Event::RunFinished { run, owner, succeeded } => {
                let state = self.runs.get(run).ok_or(Refusal::UnknownRun(*run))?;
                match &state.phase {
                    RunPhase::Running(held) if &held.owner == owner => {}
                    RunPhase::Running(_) => return Err(Refusal::LeaseNotHeld),
                    RunPhase::Queued => return Err(Refusal::LeaseNotHeld),
                    _ => return Err(Refusal::RunFinished(*run)),
                }
                let phase = match (state.cancel_requested, succeeded) {
                    (true, _) => RunPhase::Canceled,
                    (false, true) => RunPhase::Succeeded,
                    (false, false) => RunPhase::Failed,
                };
                decision.change(Change::Run {
                    run: *run,
                    phase,
                    cancel_requested: state.cancel_requested,
                    note: None,
                    steps: StepsEnd::Recorded,
                });
                self.teardown_if_quiet(&mut decision, now);
            }
            Event::CancelRun { run } => {
                let state = self.runs.get(run).ok_or(Refusal::UnknownRun(*run))?;
                if !state.phase.is_active() {
                    return Err(Refusal::RunFinished(*run));
                }
                self.cancel_run(&mut decision, *run, state, "canceled by request");
            }
            Event::ClaimTeardown { lease } => {
                let claimable = match &self.teardown {
                    Teardown::Pending => true,
                    // Its own claim again: a teardown that failed (the warehouse was down) is
                    // retried by the server holding it, whose heartbeat keeps the lease alive.
                    Teardown::Running(held) => !held.live(now) || held.owner == lease.owner,
                    Teardown::Done => false,
                    Teardown::Held => {
                        return Err(Refusal::NotClaimable(
                            "production's catch-up may still take the deployment's tables",
                        ))
                    }
                };
                if !claimable {
                    return Err(Refusal::NotClaimable("no teardown is waiting"));
                }
                if self.busy(now) {
                    return Err(Refusal::NotClaimable(
                        "runs or a deploy of the deployment have not stopped yet",
                    ));
                }
                // Work whose server stopped ends first, so no stale result is accepted later.
                for (number, revision) in &self.revisions {
                    if matches!(revision.phase, RevisionPhase::Deploying(_)) {
                        let note =
                            Some("discarded: its server stopped while it deployed".to_owned());
                        decision.change(Change::Revision {
                            number: *number,
                            phase: RevisionPhase::Superseded,
                            note,
                        });
                    }
                }
                for (run, state) in &self.runs {
                    if matches!(state.phase, RunPhase::Running(_)) {
                        decision.change(interrupted(*run, state));
                    }
                }
                decision.change(Change::Teardown(Teardown::Running(lease.clone())));
            }
            Event::TeardownFinished { owner } => {
                match &self.teardown {
                    Teardown::Running(held) if &held.owner == owner => {}
                    _ => return Err(Refusal::LeaseNotHeld),
                }
                decision.change(Change::Teardown(Teardown::Done));
                if self.delete_requested {
                    decision.change(Change::Delete);
                } else if self.open {
                    // Reopened while the teardown ran: the queued head deploys now.
                    decision.effect(Effect::Deploy);
                }
            }
        }
        Ok(decision)
    }

    /// The state after `decision`'s changes: what the store holds once it applied them. New
    /// runs get the next free key here (the store assigns its own ids).
    pub fn apply(&mut self, decision: &Decision, now: UnixMillis) {
        for change in &decision.changes {
            match change {
                Change::Open => self.open = true,
                Change::Close { .. } => self.open = false,
                Change::PullRequest(status) => self.pull_request = Some(*status),
                Change::Head(number) => self.head = Some(*number),
                Change::Serving(number) => self.serving = *number,
                Change::Pushed => {}
                Change::Teardown(teardown) => self.teardown = teardown.clone(),
                Change::DeleteRequested => self.delete_requested = true,
                Change::NewRevision { number, commit, phase, .. } => {
                    self.revisions.insert(
                        *number,
                        RevisionState { commit: commit.clone(), phase: phase.clone() },
                    );
                    self.next_revision = self.next_revision.max(number + 1);
                }
                Change::Revision { number, phase, .. } => {
                    if let Some(revision) = self.revisions.get_mut(number) {
                        revision.phase = phase.clone();
                    }
                }
                Change::NewRun { revision } => {
                    let key = self.runs.keys().next_back().map_or(1, |k| k + 1);
                    self.runs.insert(
                        key,
                        RunState {
                            revision: *revision,
                            phase: RunPhase::Queued,
                            cancel_requested: false,
                        },
                    );
                }
                Change::Run { run, phase, cancel_requested, .. } => {
                    if let Some(state) = self.runs.get_mut(run) {
                        state.phase = phase.clone();
                        state.cancel_requested = *cancel_requested;
                    }
                }
                Change::Delete => {
                    self.revisions.clear();
                    self.runs.clear();
                }
            }
        }
        let _ = now;
    }

    /// `decide` then `apply`: the state after `event`.
    pub fn transition(&mut self, event: &Event, now: UnixMillis) -> Result<Decision, Refusal> {
        let decision = self.decide(event, now)?;
        self.apply(&decision, now);
        Ok(decision)
    }

    pub fn head_commit(&self) -> Option<&Commit> {
        self.head.and_then(|n| self.revisions.get(&n)).map(|r| &r.commit)
    }

    /// A revision deploying under a live lease.
    fn deploying(&self, now: UnixMillis) -> Option<u32> {
        self.revisions
            .iter()
            .find(|(_, r)| matches!(&r.phase, RevisionPhase::Deploying(lease) if lease.live(now)))
            .map(|(n, _)| *n)
    }

    /// Anything of the deployment that may still touch its warehouse schema: a queued or running
    /// run, or a deploy in flight. Work under an expired lease counts as stopped (its server
    /// stopped renewing it); a teardown claim ends it first.
    fn busy(&self, now: UnixMillis) -> bool {
        let deploying = self
            .revisions
            .values()
            .any(|r| matches!(&r.phase, RevisionPhase::Deploying(lease) if lease.live(now)));
        let running = self.runs.values().any(|r| match &r.phase {
            RunPhase::Queued => true,
            RunPhase::Running(lease) => lease.live(now),
            _ => false,
        });
        deploying || running
    }

    fn push(
        &self,
        decision: &mut Decision,
        commit: &Commit,
        relation: Option<CommitRelation>,
        opens: bool,
        redeploy: bool,
        now: UnixMillis,
    ) {
        let number = self.next_revision;
        let head = self.head.and_then(|n| self.revisions.get(&n).map(|r| (n, &r.commit, &r.phase)));
        let same = head.is_some_and(|(_, c, _)| c.sha == commit.sha)
            || (head.is_some() && relation == Some(CommitRelation::Same));
        if let (true, Some((head_number, _, head_phase))) = (same, head) {
            let reopening = !self.open && opens;
            if reopening {
                decision.change(Change::Pushed);
                self.reopen(decision, now);
                return;
            }
            if !self.open {
                return;
            }
            let retry = match head_phase {
                RevisionPhase::Failed | RevisionPhase::Superseded => true,
                RevisionPhase::Ready => redeploy || self.serving != Some(head_number),
                RevisionPhase::Queued | RevisionPhase::Deploying(_) => false,
            };
            // A duplicate delivery of what is deploying or serving changes nothing.
            if retry {
                decision.change(Change::Pushed);
                self.queue_head_again(decision, commit, "deployed again");
            }
            return;
        }
        let newer = head.is_none() || relation.is_none_or(pushed_commit_is_newer);
        if !newer {
            let head_sha = head.map(|(_, c, _)| c.sha.short().to_owned()).unwrap_or_default();
            let note = Some(format!(
                "{} is older than {head_sha}, which this deployment already has",
                commit.sha.short()
            ));
            decision.change(Change::NewRevision {
                number,
                commit: commit.clone(),
                phase: RevisionPhase::Superseded,
                note,
            });
            return;
        }
        decision.change(Change::Head(number));
        decision.change(Change::Pushed);
        let reopening = !self.open && opens;
        if !self.open && !reopening {
            let note =
                Some("delivered while the deployment was closed; reopening deploys it".to_owned());
            decision.change(Change::NewRevision {
                number,
                commit: commit.clone(),
                phase: RevisionPhase::Superseded,
                note,
            });
            return;
        }
        if reopening {
            self.reopen_changes(decision, now);
        }
        self.supersede_queued(decision, &format!("superseded by {}", commit.sha.short()));
        decision.change(Change::NewRevision {
            number,
            commit: commit.clone(),
            phase: RevisionPhase::Queued,
            note: None,
        });
        decision.effect(Effect::Deploy);
    }

    /// Queues the head's commit again as a new revision (a retry, a reopen, a new base).
    fn queue_head_again(&self, decision: &mut Decision, commit: &Commit, why: &str) {
        let number = self.next_revision;
        self.supersede_queued(decision, why);
        decision.change(Change::Head(number));
        decision.change(Change::NewRevision {
            number,
            commit: commit.clone(),
            phase: RevisionPhase::Queued,
            note: None,
        });
        decision.effect(Effect::Deploy);
    }

    fn supersede_queued(&self, decision: &mut Decision, note: &str) {
        for (number, revision) in &self.revisions {
            if revision.phase == RevisionPhase::Queued {
                decision.change(Change::Revision {
                    number: *number,
                    phase: RevisionPhase::Superseded,
                    note: Some(note.to_owned()),
                });
            }
        }
    }

    fn reopen_changes(&self, decision: &mut Decision, now: UnixMillis) {
        decision.change(Change::Open);
        decision.change(Change::PullRequest(PullRequestStatus::Open));
        // Kept for a catch-up, perhaps partly taken by it: dropped now, and deployed afresh.
        if self.teardown == Teardown::Held {
            decision.change(Change::Teardown(Teardown::Pending));
            self.teardown_if_quiet(decision, now);
        }
        // The schema was (or is being) dropped: nothing serves until the head deploys again, and
        // what served before the close is history.
        if let Some(serving) = self.serving {
            decision.change(Change::Serving(None));
            if self.revisions.get(&serving).is_some_and(|r| r.phase == RevisionPhase::Ready) {
                let note = Some("served until the deployment was closed".to_owned());
                decision.change(Change::Revision {
                    number: serving,
                    phase: RevisionPhase::Superseded,
                    note,
                });
            }
        }
    }

    fn reopen(&self, decision: &mut Decision, now: UnixMillis) {
        if self.open {
            return;
        }
        self.reopen_changes(decision, now);
        if let Some(commit) = self.head_commit().cloned() {
            self.queue_head_again(decision, &commit, "the deployment was reopened");
        }
    }

    fn close(
        &self,
        decision: &mut Decision,
        reason: &str,
        pull_request: Option<PullRequestStatus>,
        hold: bool,
        now: UnixMillis,
    ) -> Result<(), Refusal> {
        if self.production {
            return Err(Refusal::Production);
        }
        if let Some(status) = pull_request {
            if self.pull_request != Some(status) {
                decision.change(Change::PullRequest(status));
            }
        }
        if !self.open {
            // Closing a closed deployment changes nothing else (a merge after a close is recorded).
            return Ok(());
        }
        decision.change(Change::Close { reason: reason.to_owned() });
        self.supersede_queued(decision, &format!("the deployment was closed ({reason})"));
        for (run, state) in &self.runs {
            if state.phase.is_active() {
                self.cancel_run(decision, *run, state, "the deployment was closed");
            }
        }
        if hold {
            decision.change(Change::Teardown(Teardown::Held));
            return Ok(());
        }
        decision.change(Change::Teardown(Teardown::Pending));
        // Queued runs were canceled above; a deploy or running run still holds the teardown back.
        let still_busy = self.deploying(now).is_some()
            || self
                .runs
                .values()
                .any(|r| matches!(&r.phase, RunPhase::Running(lease) if lease.live(now)));
        if !still_busy {
            decision.effect(Effect::Teardown);
        }
        Ok(())
    }

    fn cancel_run(&self, decision: &mut Decision, run: i64, state: &RunState, why: &str) {
        match state.phase {
            RunPhase::Queued => {
                let note = Some(why.to_owned());
                decision.change(Change::Run {
                    run,
                    phase: RunPhase::Canceled,
                    cancel_requested: true,
                    note,
                    steps: StepsEnd::Canceled,
                });
            }
            _ => {
                if !state.cancel_requested {
                    decision.change(Change::Run {
                        run,
                        phase: state.phase.clone(),
                        cancel_requested: true,
                        note: None,
                        steps: StepsEnd::Recorded,
                    });
                }
                decision.effect(Effect::StopRun(run));
            }
        }
    }

    /// After something stopped: a closed deployment whose work has all stopped may be torn down.
    fn teardown_if_quiet(&self, decision: &mut Decision, now: UnixMillis) {
        let mut after = self.clone();
        after.apply(decision, now);
        if after.teardown != Teardown::Pending {
            return;
        }
        if !after.busy(now) {
            decision.effect(Effect::Teardown);
        }
    }

    /// Production serves `to` again; the serving revision is superseded.
    fn rollback(&self, decision: &mut Decision, to: u32) -> Result<(), Refusal> {
        if !self.production {
            return Err(Refusal::NotProduction);
        }
        let serving = self.serving.ok_or(Refusal::NotServing)?;
        if serving == to {
            return Err(Refusal::AlreadyServing(to));
        }
        let target = self.revisions.get(&to).ok_or(Refusal::UnknownRevision(to))?;
        if !matches!(target.phase, RevisionPhase::Ready | RevisionPhase::Superseded) {
            return Err(Refusal::NotClaimable("the revision never finished deploying"));
        }
        decision.change(Change::Revision {
            number: serving,
            phase: RevisionPhase::Superseded,
            note: Some(format!("rolled back to revision {to}")),
        });
        decision.change(Change::Revision {
            number: to,
            phase: RevisionPhase::Ready,
            note: Some(format!("{SERVING_AGAIN}: revision {serving} was rolled back")),
        });
        decision.change(Change::Serving(Some(to)));
        Ok(())
    }

    fn claim_deploy(
        &self,
        decision: &mut Decision,
        number: u32,
        lease: &Lease,
        now: UnixMillis,
    ) -> Result<(), Refusal> {
        let revision = self.revisions.get(&number).ok_or(Refusal::UnknownRevision(number))?;
        match &revision.phase {
            RevisionPhase::Queued => {}
            RevisionPhase::Deploying(held) if !held.live(now) => {}
            _ => return Err(Refusal::NotClaimable("the revision is not waiting to deploy")),
        }
        if !self.open {
            // A deploy left over from before a close: it is discarded, never executed.
            let note = Some("the deployment was closed".to_owned());
            decision.change(Change::Revision { number, phase: RevisionPhase::Superseded, note });
            self.teardown_if_quiet(decision, now);
            return Ok(());
        }
        if self.teardown != Teardown::Done {
            return Err(Refusal::NotClaimable(
                "the warehouse objects of an earlier close are still being dropped",
            ));
        }
        if let Some(other) = self.deploying(now) {
            if other != number {
                return Err(Refusal::NotClaimable(
                    "another revision of this deployment is deploying",
                ));
            }
        }
        if self.head != Some(number) {
            let note = Some("superseded by a newer commit".to_owned());
            decision.change(Change::Revision { number, phase: RevisionPhase::Superseded, note });
            return Ok(());
        }
        // A revision left deploying by a stopped server gives way to the head.
        for (other, state) in &self.revisions {
            if *other != number && matches!(state.phase, RevisionPhase::Deploying(_)) {
                let note = Some("its server stopped while it deployed; superseded".to_owned());
                decision.change(Change::Revision {
                    number: *other,
                    phase: RevisionPhase::Superseded,
                    note,
                });
            }
        }
        decision.change(Change::Revision {
            number,
            phase: RevisionPhase::Deploying(lease.clone()),
            note: None,
        });
        Ok(())
    }

    fn deploy_finished(
        &self,
        decision: &mut Decision,
        number: u32,
        owner: &str,
        outcome: &Result<(), String>,
        now: UnixMillis,
    ) -> Result<(), Refusal> {
        let revision = self.revisions.get(&number).ok_or(Refusal::UnknownRevision(number))?;
        match &revision.phase {
            RevisionPhase::Deploying(held) if held.owner == owner => {}
            _ => return Err(Refusal::LeaseNotHeld),
        }
        if !self.open {
            let note = Some("discarded: the deployment was closed while it deployed".to_owned());
            decision.change(Change::Revision { number, phase: RevisionPhase::Superseded, note });
            self.teardown_if_quiet(decision, now);
            return Ok(());
        }
        if self.head != Some(number) {
            let newer = self
                .head
                .and_then(|h| self.revisions.get(&h))
                .map(|r| r.commit.sha.short().to_owned())
                .unwrap_or_default();
            let note = Some(format!("superseded by {newer} while it deployed"));
            decision.change(Change::Revision { number, phase: RevisionPhase::Superseded, note });
            decision.effect(Effect::Deploy);
            return Ok(());
        }
        match outcome {
            Err(message) => {
                decision.change(Change::Revision {
                    number,
                    phase: RevisionPhase::Failed,
                    note: Some(message.clone()),
                });
            }
            Ok(()) => {
                if let Some(previous) = self.serving.filter(|s| *s != number) {
                    if self
                        .revisions
                        .get(&previous)
                        .is_some_and(|r| r.phase == RevisionPhase::Ready)
                    {
                        let note = Some(format!("replaced by revision {number}"));
                        decision.change(Change::Revision {
                            number: previous,
                            phase: RevisionPhase::Superseded,
                            note,
                        });
                    }
                }
                decision.change(Change::Revision {
                    number,
                    phase: RevisionPhase::Ready,
                    note: None,
                });
                decision.change(Change::Serving(Some(number)));
            }
        }
        decision.effect(Effect::RevisionFinished(number));
        Ok(())
    }

    fn claim_run(
        &self,
        decision: &mut Decision,
        run: i64,
        lease: &Lease,
        max_running: Option<usize>,
        now: UnixMillis,
    ) -> Result<(), Refusal> {
        let state = self.runs.get(&run).ok_or(Refusal::UnknownRun(run))?;
        match &state.phase {
            RunPhase::Queued => {
                if self.teardown != Teardown::Done || !self.open {
                    let note = Some("the deployment was closed".to_owned());
                    decision.change(Change::Run {
                        run,
                        phase: RunPhase::Canceled,
                        cancel_requested: true,
                        note,
                        steps: StepsEnd::Canceled,
                    });
                    self.teardown_if_quiet(decision, now);
                    return Ok(());
                }
                if let Some(limit) = max_running.filter(|_| !self.production) {
                    // Decided on the deployment's own record under its version check, so the
                    // limit holds across every server sharing the store.
                    if self.running_runs(now) >= limit {
                        return Err(Refusal::NotClaimable(RUN_LIMIT_REACHED));
                    }
                }
                decision.change(Change::Run {
                    run,
                    phase: RunPhase::Running(lease.clone()),
                    cancel_requested: false,
                    note: None,
                    steps: StepsEnd::Recorded,
                });
            }
            RunPhase::Running(held) if !held.live(now) => {
                decision.change(interrupted(run, state));
                self.teardown_if_quiet(decision, now);
            }
            _ => return Err(Refusal::NotClaimable("the run is not waiting to start")),
        }
        Ok(())
    }
}

/// Why a queued run of a branch deployment waits although its pool has room.
pub const RUN_LIMIT_REACHED: &str = "as many runs of this branch deployment are running as max_concurrent_runs_per_branch_deployment allows";

impl Lifecycle {
    /// Runs executing now under a live lease (an expired one is failed by the next claim).
    pub fn running_runs(&self, now: UnixMillis) -> usize {
        self.runs
            .values()
            .filter(|r| matches!(&r.phase, RunPhase::Running(held) if held.live(now)))
            .count()
    }
}

/// The error of a run whose server stopped during it.
pub const INTERRUPTED_RUN: &str = "the server stopped during the run; launch it again";

/// How the note of a revision that serves again after a rollback begins.
pub const SERVING_AGAIN: &str = "serving again";

/// A run whose server stopped mid-way: a step may have half-written its table, so nothing is
/// re-executed behind the user's back; it fails with the reason (or ends canceled if a cancel was
/// asked for).
fn interrupted(run: i64, state: &RunState) -> Change {
    let (phase, note) = if state.cancel_requested {
        (RunPhase::Canceled, "canceled; its server stopped before it could finish")
    } else {
        (RunPhase::Failed, INTERRUPTED_RUN)
    };
    Change::Run {
        run,
        phase,
        cancel_requested: state.cancel_requested,
        note: Some(note.to_owned()),
        steps: StepsEnd::Interrupted,
    }
}

#[cfg(test)]
mod tests;
