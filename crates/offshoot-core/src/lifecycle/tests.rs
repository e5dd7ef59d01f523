//! The lifecycle's rules, one short event script per rule (the six failure families that a
//! model-based test once found in the server), and a property test against a reference model
//! over random histories with reordering, duplicates, two servers and crashes.

use proptest::prelude::*;

use super::*;
use crate::deployment::CommitRelation;

const LEASE: UnixMillis = 1_000;

fn sha(index: usize) -> CommitSha {
    CommitSha::new(&format!("{index:040x}")).expect("40 hex digits")
}

/// Commits on two lines of history: `0..LINE` on the first (each a descendant of the one
/// before), `LINE..` a rebased line whose commits are all newer in time than the first line's
/// same position. Newness is commit time, which ancestry agrees with inside a line.
const LINE: usize = 5;
const COMMITS: usize = 8;

fn commit(index: usize) -> Commit {
    let time = if index < LINE { 100 + 2 * index as i64 } else { 101 + 2 * (index - LINE) as i64 };
    Commit { sha: sha(index), time }
}

fn relation(pushed: usize, known: usize) -> CommitRelation {
    let (line_pushed, line_known) = (pushed < LINE, known < LINE);
    if pushed == known {
        CommitRelation::Same
    } else if line_pushed == line_known {
        if pushed < known {
            CommitRelation::Ancestor
        } else {
            CommitRelation::Descendant
        }
    } else {
        CommitRelation::Diverged {
            pushed_time: commit(pushed).time,
            known_time: commit(known).time,
        }
    }
}

fn index_of(state: &Lifecycle, number: u32) -> usize {
    let sha = &state.revisions[&number].commit.sha;
    (0..COMMITS).find(|i| &self::sha(*i) == sha).expect("a known commit")
}

fn push_event(state: &Lifecycle, index: usize, opens: bool) -> Event {
    let relation = state.head.map(|head| relation(index, index_of(state, head)));
    Event::Push { commit: commit(index), relation, opens, redeploy: false }
}

fn lease(owner: &str, now: UnixMillis) -> Lease {
    Lease { owner: owner.to_owned(), until: now + LEASE }
}

/// A little driver for scripts: one deployment, a clock, named servers.
struct Script {
    state: Lifecycle,
    now: UnixMillis,
}

impl Script {
    fn new() -> Script {
        Script { state: Lifecycle::new(false), now: 0 }
    }

    fn event(&mut self, event: Event) -> Result<Decision, Refusal> {
        self.now += 1;
        self.state.transition(&event, self.now)
    }

    fn push(&mut self, index: usize) -> Decision {
        let event = push_event(&self.state, index, true);
        self.event(event).expect("a push is never refused")
    }

    fn close(&mut self) -> Decision {
        self.event(Event::Close {
            reason: "pull request closed".into(),
            pull_request: Some(PullRequestStatus::Closed),
            hold: false,
        })
        .expect("close")
    }

    fn claim(&mut self, number: u32, owner: &str) -> Result<Decision, Refusal> {
        let lease = lease(owner, self.now);
        self.event(Event::ClaimDeploy { revision: number, lease })
    }

    fn finish(&mut self, number: u32, owner: &str) -> Result<Decision, Refusal> {
        self.event(Event::DeployFinished { revision: number, owner: owner.into(), outcome: Ok(()) })
    }

    fn phase(&self, number: u32) -> RevisionPhase {
        self.state.revisions[&number].phase.clone()
    }

    fn serving_commit(&self) -> Option<usize> {
        self.state.serving.map(|n| index_of(&self.state, n))
    }
}

#[test]
fn family_a_a_late_older_delivery_after_a_close_changes_nothing() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    s.close();
    let late = s.push(0);
    assert!(!s.state.open, "an older delivery never reopens");
    assert_eq!(late.changes.len(), 1, "only recorded: {late:?}");
    assert_eq!(s.phase(2), RevisionPhase::Superseded);
    // Reopen deploys the newest delivered commit, not the late one.
    s.event(Event::Reopen).expect("reopen");
    assert_eq!(index_of(&s.state, s.state.head.expect("head")), 1);
    assert_eq!(s.phase(s.state.head.expect("head")), RevisionPhase::Queued);
}

#[test]
fn family_b_a_deploy_that_finishes_after_a_close_is_discarded_and_the_teardown_waits_for_it() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    let close = s.close();
    assert!(!close.effects.contains(&Effect::Teardown), "the deploy may still create the schema");
    let finished = s.finish(1, "a").expect("finish");
    assert_eq!(s.phase(1), RevisionPhase::Superseded);
    assert_eq!(s.state.serving, None);
    assert!(!s.state.open, "the close is not lost");
    assert!(finished.effects.contains(&Effect::Teardown), "now it may go: {finished:?}");
}

#[test]
fn family_b_duplicate_deliveries_and_concurrent_promotes_never_leave_an_older_revision_serving() {
    let mut s = Script::new();
    s.push(1);
    assert!(s.push(1).is_empty(), "a duplicate of a queued commit changes nothing");
    s.claim(1, "a").expect("claim");
    s.push(2);
    assert_eq!(
        s.claim(2, "b"),
        Err(Refusal::NotClaimable("another revision of this deployment is deploying"))
    );
    s.finish(1, "a").expect("finish");
    assert_eq!(s.phase(1), RevisionPhase::Superseded, "discarded: a newer commit was delivered");
    assert_eq!(s.state.serving, None);
    s.claim(2, "b").expect("claim");
    s.finish(2, "b").expect("finish");
    assert_eq!(s.serving_commit(), Some(2));
    // A stale result from a server that lost its lease is refused.
    assert_eq!(s.finish(2, "a"), Err(Refusal::LeaseNotHeld));
}

#[test]
fn family_c_a_close_during_a_run_cancels_it_and_the_teardown_waits_for_it_to_stop() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    s.event(Event::LaunchRun).expect("launch");
    let run = *s.state.runs.keys().next().expect("a run");
    let held = lease("a", s.now);
    s.event(Event::ClaimRun { run, lease: held, max_running: None }).expect("claim run");
    let close = s.close();
    assert!(close.effects.contains(&Effect::StopRun(run)));
    assert!(!close.effects.contains(&Effect::Teardown));
    let other = lease("b", s.now);
    assert!(s.event(Event::ClaimTeardown { lease: other }).is_err(), "not while the run runs");
    let stopped =
        s.event(Event::RunFinished { run, owner: "a".into(), succeeded: false }).expect("finish");
    assert_eq!(
        s.state.runs[&run].phase,
        RunPhase::Canceled,
        "a failure after a cancel is a cancel"
    );
    assert!(stopped.effects.contains(&Effect::Teardown));
}

#[test]
fn family_d_a_close_remembers_the_newest_commit_even_while_it_is_queued() {
    let mut s = Script::new();
    s.push(0);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    s.push(2);
    s.close();
    assert_eq!(s.phase(2), RevisionPhase::Superseded);
    s.push(1);
    assert!(!s.state.open);
    s.event(Event::Reopen).expect("reopen");
    let head = s.state.head.expect("head");
    assert_eq!(index_of(&s.state, head), 2, "the newest delivered commit, not the late one");
    let teardown = lease("a", s.now);
    s.event(Event::ClaimTeardown { lease: teardown }).expect("the close's teardown first");
    assert!(s.claim(head, "a").is_err(), "no deploy while the teardown runs");
    let done = s.event(Event::TeardownFinished { owner: "a".into() }).expect("done");
    assert!(done.effects.contains(&Effect::Deploy));
    s.claim(head, "a").expect("claim");
    s.finish(head, "a").expect("finish");
    assert_eq!(s.serving_commit(), Some(2));
}

#[test]
fn family_e_an_older_commit_applied_after_a_newer_one_is_superseded() {
    let mut s = Script::new();
    s.push(2);
    s.push(1);
    assert_eq!(s.phase(1), RevisionPhase::Queued);
    assert_eq!(s.phase(2), RevisionPhase::Superseded);
    assert_eq!(index_of(&s.state, s.state.head.expect("head")), 2);
}

#[test]
fn diverged_history_is_decided_by_commit_time_and_a_failed_head_is_retried() {
    let mut s = Script::new();
    s.push(2);
    s.push(LINE + 2); // a rebased line, newer in time
    let head = s.state.head.expect("head");
    assert_eq!(index_of(&s.state, head), LINE + 2);
    s.claim(head, "a").expect("claim");
    s.event(Event::DeployFinished {
        revision: head,
        owner: "a".into(),
        outcome: Err("bad SQL".into()),
    })
    .expect("fail");
    assert_eq!(s.phase(head), RevisionPhase::Failed);
    let retry = s.push(LINE + 2);
    assert!(retry.effects.contains(&Effect::Deploy), "the same commit again retries a failure");
}

#[test]
fn production_is_never_closed_or_deleted() {
    let mut s = Script { state: Lifecycle::new(true), now: 0 };
    assert_eq!(
        s.event(Event::Close { reason: "x".into(), pull_request: None, hold: false }),
        Err(Refusal::Production)
    );
    assert_eq!(s.event(Event::Delete), Err(Refusal::Production));
}

#[test]
fn delete_waits_for_the_teardown() {
    let mut s = Script::new();
    s.push(1);
    s.event(Event::Delete).expect("delete");
    assert!(s.state.delete_requested && !s.state.open);
    let teardown = lease("a", s.now);
    s.event(Event::ClaimTeardown { lease: teardown }).expect("claim");
    let done = s.event(Event::TeardownFinished { owner: "a".into() }).expect("done");
    assert!(done.changes.contains(&Change::Delete));
}

fn merge(s: &mut Script, hold: bool) -> Decision {
    s.event(Event::Close {
        reason: "pull request merged".into(),
        pull_request: Some(PullRequestStatus::Merged),
        hold,
    })
    .expect("close")
}

#[test]
fn a_held_teardown_waits_for_the_release_and_then_for_the_runs() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    s.event(Event::LaunchRun).expect("launch");
    let run = *s.state.runs.keys().next().expect("a run");
    let held = lease("a", s.now);
    s.event(Event::ClaimRun { run, lease: held, max_running: None }).expect("claim run");
    let closed = merge(&mut s, true);
    assert_eq!(s.state.teardown, Teardown::Held);
    assert!(!closed.effects.contains(&Effect::Teardown), "{closed:?}");
    assert!(closed.effects.contains(&Effect::StopRun(run)), "runs still stop at a merge");
    let stopped =
        s.event(Event::RunFinished { run, owner: "a".into(), succeeded: true }).expect("finish");
    assert!(!stopped.effects.contains(&Effect::Teardown), "still held: {stopped:?}");
    let other = lease("b", s.now);
    assert_eq!(
        s.event(Event::ClaimTeardown { lease: other }),
        Err(Refusal::NotClaimable("production's catch-up may still take the deployment's tables"))
    );
    let released = s.event(Event::ReleaseTeardown).expect("release");
    assert_eq!(s.state.teardown, Teardown::Pending);
    assert!(released.effects.contains(&Effect::Teardown), "{released:?}");
    assert!(
        s.event(Event::ReleaseTeardown).expect("again").is_empty(),
        "a second release is nothing"
    );
    let teardown = lease("a", s.now);
    s.event(Event::ClaimTeardown { lease: teardown }).expect("claim");
    s.event(Event::TeardownFinished { owner: "a".into() }).expect("done");
    assert_eq!(s.state.teardown, Teardown::Done);
}

#[test]
fn a_merge_after_the_catch_up_tears_down_at_once_and_a_release_before_changes_nothing() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    assert!(s.event(Event::ReleaseTeardown).expect("release").is_empty());
    let closed = merge(&mut s, false);
    assert_eq!(s.state.teardown, Teardown::Pending);
    assert!(closed.effects.contains(&Effect::Teardown));
}

#[test]
fn reopen_and_delete_release_a_held_teardown() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    merge(&mut s, true);
    let reopened = s.event(Event::Reopen).expect("reopen");
    assert!(s.state.open);
    assert_eq!(s.state.teardown, Teardown::Pending, "what the catch-up took is gone: redeploy");
    assert!(reopened.effects.contains(&Effect::Teardown), "{reopened:?}");
    let head = s.state.head.expect("head");
    assert!(s.claim(head, "a").is_err(), "no deploy before the teardown");

    let mut s = Script::new();
    s.push(1);
    merge(&mut s, true);
    let deleted = s.event(Event::Delete).expect("delete");
    assert_eq!(s.state.teardown, Teardown::Pending);
    assert!(deleted.effects.contains(&Effect::Teardown), "{deleted:?}");
}

#[test]
fn production_rolls_back_to_a_revision_it_served() {
    let mut s = Script { state: Lifecycle::new(true), now: 0 };
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    s.push(2);
    s.claim(2, "a").expect("claim");
    s.finish(2, "a").expect("finish");
    assert_eq!(s.phase(1), RevisionPhase::Superseded);
    s.event(Event::Rollback { to: 1 }).expect("rollback");
    assert_eq!(s.serving_commit(), Some(1));
    assert_eq!(s.phase(1), RevisionPhase::Ready);
    assert_eq!(s.phase(2), RevisionPhase::Superseded);
    assert_eq!(s.state.head, Some(2), "the head stays the newest delivered commit");
    assert_eq!(s.event(Event::Rollback { to: 1 }), Err(Refusal::AlreadyServing(1)));
    assert_eq!(s.event(Event::Rollback { to: 9 }), Err(Refusal::UnknownRevision(9)));
    // Delivering the rolled-back commit again deploys it again.
    let again = s.push(2);
    assert!(again.effects.contains(&Effect::Deploy), "{again:?}");

    let mut branch = Script::new();
    branch.push(1);
    assert_eq!(branch.event(Event::Rollback { to: 1 }), Err(Refusal::NotProduction));
}

#[test]
fn a_run_whose_server_stopped_fails_and_a_claim_after_a_close_cancels_it() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    s.event(Event::LaunchRun).expect("launch");
    s.event(Event::LaunchRun).expect("launch");
    let runs: Vec<i64> = s.state.runs.keys().copied().collect();
    let held = lease("a", s.now);
    s.event(Event::ClaimRun { run: runs[0], lease: held, max_running: None }).expect("claim");
    s.now += 2 * LEASE;
    let other = Lease { owner: "b".into(), until: s.now + LEASE };
    s.event(Event::ClaimRun { run: runs[0], lease: other, max_running: None }).expect("take over");
    assert_eq!(s.state.runs[&runs[0]].phase, RunPhase::Failed);
    s.close();
    assert_eq!(s.state.runs[&runs[1]].phase, RunPhase::Canceled);
    assert_eq!(s.event(Event::LaunchRun), Err(Refusal::Closed));
}

#[test]
fn a_branch_deployment_runs_at_most_its_limit_of_runs_at_once() {
    let mut s = Script::new();
    s.push(1);
    s.claim(1, "a").expect("claim");
    s.finish(1, "a").expect("finish");
    for _ in 0..3 {
        s.event(Event::LaunchRun).expect("launch");
    }
    let runs: Vec<i64> = s.state.runs.keys().copied().collect();
    let claim = |s: &mut Script, run: i64, server: &str| {
        let lease = lease(server, s.now);
        s.event(Event::ClaimRun { run, lease, max_running: Some(2) })
    };
    claim(&mut s, runs[0], "a").expect("first");
    claim(&mut s, runs[1], "b").expect("second, on another server");
    assert_eq!(
        claim(&mut s, runs[2], "a").map(|_| ()),
        Err(Refusal::NotClaimable(RUN_LIMIT_REACHED))
    );
    assert_eq!(s.state.runs[&runs[2]].phase, RunPhase::Queued, "it waits, queued");
    s.event(Event::RunFinished { run: runs[0], owner: "a".into(), succeeded: true })
        .expect("finish");
    claim(&mut s, runs[2], "a").expect("a slot is free");
    // A run whose server died does not hold a slot: its lease expired.
    s.now += 2 * LEASE;
    s.event(Event::LaunchRun).expect("launch");
    let fourth = *s.state.runs.keys().last().expect("run");
    claim(&mut s, fourth, "b").expect("the expired runs hold no slot");
}

// The property test: random histories against a reference model.

/// What a test history does. Servers are 0 and 1; a crash of a server forgets what it was
/// doing and lets its leases expire.
#[derive(Debug, Clone)]
enum Action {
    Deliver {
        commit: usize,
        opens: bool,
    },
    /// `merged`: the close holds the teardown for production's catch-up.
    Close {
        merged: bool,
    },
    /// Production's catch-up released a held teardown.
    Release,
    Reopen,
    ClaimDeploy {
        server: usize,
    },
    FinishDeploy {
        server: usize,
        ok: bool,
    },
    Launch,
    ClaimRun {
        server: usize,
    },
    FinishRun {
        server: usize,
        ok: bool,
    },
    CancelRun,
    ClaimTeardown {
        server: usize,
    },
    FinishTeardown {
        server: usize,
    },
    Crash {
        server: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let server = 0..2usize;
    prop_oneof![
        4 => (0..COMMITS, proptest::bool::weighted(0.8)).prop_map(|(commit, opens)| Action::Deliver { commit, opens }),
        1 => any::<bool>().prop_map(|merged| Action::Close { merged }),
        1 => Just(Action::Release),
        1 => Just(Action::Reopen),
        3 => server.clone().prop_map(|server| Action::ClaimDeploy { server }),
        3 => (server.clone(), proptest::bool::weighted(0.8)).prop_map(|(server, ok)| Action::FinishDeploy { server, ok }),
        1 => Just(Action::Launch),
        1 => server.clone().prop_map(|server| Action::ClaimRun { server }),
        1 => (server.clone(), any::<bool>()).prop_map(|(server, ok)| Action::FinishRun { server, ok }),
        1 => Just(Action::CancelRun),
        1 => server.clone().prop_map(|server| Action::ClaimTeardown { server }),
        1 => server.clone().prop_map(|server| Action::FinishTeardown { server }),
        1 => server.prop_map(|server| Action::Crash { server }),
    ]
}

/// The reference model: what the rules say a history ends in, computed without the machine.
#[derive(Debug, Default)]
struct Reference {
    closed: bool,
    newest: Option<usize>,
}

impl Reference {
    fn deliver(&mut self, index: usize, opens: bool) {
        let same_or_newer = self.newest.is_none_or(|n| commit(index).time >= commit(n).time);
        if same_or_newer {
            self.newest = Some(index);
            if opens {
                self.closed = false;
            }
        }
    }
}

/// The machine under test, with two servers executing its work.
struct World {
    state: Lifecycle,
    now: UnixMillis,
    /// Per server: the revision it deploys, the runs it executes, whether it tears down.
    deploying: [Option<u32>; 3],
    running: [Vec<i64>; 3],
    tearing_down: [bool; 3],
    /// Runs that were active when a close arrived: they must end canceled.
    must_cancel: Vec<i64>,
    /// The newest commit time served since the last reopen.
    served_time: Option<i64>,
}

fn owner(server: usize) -> String {
    format!("server-{server}")
}

impl World {
    fn new() -> World {
        World {
            state: Lifecycle::new(false),
            now: 0,
            deploying: [None; 3],
            running: Default::default(),
            tearing_down: [false; 3],
            must_cancel: Vec::new(),
            served_time: None,
        }
    }

    fn lease(&self, server: usize) -> Lease {
        Lease { owner: owner(server), until: self.now + LEASE }
    }

    /// What the heartbeat of a live server does: extends its leases (no version change).
    fn renew(&mut self, server: usize) {
        let until = self.now + LEASE;
        let mine = owner(server);
        for revision in self.state.revisions.values_mut() {
            if let RevisionPhase::Deploying(lease) = &mut revision.phase {
                if lease.owner == mine {
                    lease.until = until;
                }
            }
        }
        for run in self.state.runs.values_mut() {
            if let RunPhase::Running(lease) = &mut run.phase {
                if lease.owner == mine {
                    lease.until = until;
                }
            }
        }
        if let Teardown::Running(lease) = &mut self.state.teardown {
            if lease.owner == mine {
                lease.until = until;
            }
        }
    }

    fn event(&mut self, event: Event) -> Result<Decision, Refusal> {
        self.now += 1;
        let before = self.state.clone();
        let result = self.state.transition(&event, self.now);
        if let Ok(decision) = &result {
            if matches!(event, Event::Close { .. }) && before.open {
                self.must_cancel.extend(
                    before.runs.iter().filter(|(_, r)| r.phase.is_active()).map(|(id, _)| *id),
                );
            }
            if matches!(event, Event::Reopen) || (before.open != self.state.open && self.state.open)
            {
                self.served_time = None;
            }
            self.check(&before, &event, decision);
        }
        result
    }

    fn act(&mut self, action: &Action, reference: &mut Reference) {
        match *action {
            Action::Deliver { commit, opens } => {
                let event = push_event(&self.state, commit, opens);
                self.event(event).expect("a push is never refused");
                reference.deliver(commit, opens);
            }
            Action::Close { merged } => {
                let status =
                    if merged { PullRequestStatus::Merged } else { PullRequestStatus::Closed };
                self.event(Event::Close {
                    reason: "closed".into(),
                    pull_request: Some(status),
                    hold: merged,
                })
                .expect("close");
                reference.closed = true;
            }
            Action::Release => {
                self.event(Event::ReleaseTeardown).expect("a release is never refused");
            }
            Action::Reopen => {
                self.event(Event::Reopen).expect("reopen");
                reference.closed = false;
            }
            Action::ClaimDeploy { server } => self.claim_deploy(server),
            Action::FinishDeploy { server, ok } => {
                if let Some(number) = self.deploying[server].take() {
                    let outcome = if ok { Ok(()) } else { Err("invalid definitions".to_owned()) };
                    let _ = self.event(Event::DeployFinished {
                        revision: number,
                        owner: owner(server),
                        outcome,
                    });
                }
            }
            Action::Launch => {
                let _ = self.event(Event::LaunchRun);
            }
            Action::ClaimRun { server } => {
                let queued = self
                    .state
                    .runs
                    .iter()
                    .find(|(_, r)| r.phase == RunPhase::Queued)
                    .map(|(id, _)| *id);
                if let Some(run) = queued {
                    let lease = self.lease(server);
                    if self.event(Event::ClaimRun { run, lease, max_running: None }).is_ok()
                        && matches!(self.state.runs[&run].phase, RunPhase::Running(_))
                    {
                        self.running[server].push(run);
                    }
                }
            }
            Action::FinishRun { server, ok } => {
                if let Some(run) = self.running[server].pop() {
                    let _ =
                        self.event(Event::RunFinished { run, owner: owner(server), succeeded: ok });
                }
            }
            Action::CancelRun => {
                if let Some(run) =
                    self.state.runs.iter().find(|(_, r)| r.phase.is_active()).map(|(id, _)| *id)
                {
                    self.event(Event::CancelRun { run }).expect("an active run can be canceled");
                }
            }
            Action::ClaimTeardown { server } => self.claim_teardown(server),
            Action::FinishTeardown { server } => {
                if std::mem::take(&mut self.tearing_down[server]) {
                    let _ = self.event(Event::TeardownFinished { owner: owner(server) });
                }
            }
            Action::Crash { server } => {
                self.deploying[server] = None;
                self.running[server].clear();
                self.tearing_down[server] = false;
                self.now += LEASE + 1;
                for other in 0..3 {
                    if other != server {
                        self.renew(other);
                    }
                }
            }
        }
    }

    fn claim_deploy(&mut self, server: usize) {
        if self.deploying[server].is_some() {
            return;
        }
        let now = self.now + 1;
        let candidate = self
            .state
            .revisions
            .iter()
            .find(|(_, r)| match &r.phase {
                RevisionPhase::Queued => true,
                RevisionPhase::Deploying(lease) => !lease.live(now),
                _ => false,
            })
            .map(|(n, _)| *n);
        if let Some(number) = candidate {
            let lease = self.lease(server);
            if self.event(Event::ClaimDeploy { revision: number, lease }).is_ok()
                && matches!(&self.state.revisions[&number].phase, RevisionPhase::Deploying(l) if l.owner == owner(server))
            {
                self.deploying[server] = Some(number);
            }
        }
    }

    fn claim_teardown(&mut self, server: usize) {
        let lease = self.lease(server);
        if self.event(Event::ClaimTeardown { lease }).is_ok() {
            self.tearing_down[server] = true;
        }
    }

    /// The invariants that hold after every accepted event.
    fn check(&mut self, before: &Lifecycle, event: &Event, decision: &Decision) {
        let state = &self.state;
        let now = self.now;
        let live_deploys = state
            .revisions
            .values()
            .filter(|r| matches!(&r.phase, RevisionPhase::Deploying(l) if l.live(now)))
            .count();
        assert!(live_deploys <= 1, "two revisions deploy at once after {event:?}: {state:?}");
        let ready = state.revisions.values().filter(|r| r.phase == RevisionPhase::Ready).count();
        assert!(ready <= 1, "two ready revisions after {event:?}: {state:?}");
        if !state.open {
            assert!(
                !state.revisions.values().any(|r| r.phase == RevisionPhase::Queued),
                "queued while closed after {event:?}"
            );
            let claimed = decision
                .changes
                .iter()
                .any(|c| matches!(c, Change::Revision { phase: RevisionPhase::Deploying(_), .. }));
            assert!(!claimed, "a deploy was claimed in a closed deployment");
        }
        if matches!(state.teardown, Teardown::Running(_))
            && !matches!(before.teardown, Teardown::Running(_))
        {
            assert!(!before.busy(now), "teardown claimed while work runs: {before:?}");
            assert_ne!(before.teardown, Teardown::Held, "a held teardown was claimed");
        }
        if state.teardown == Teardown::Held {
            assert!(!state.open, "held while open after {event:?}");
            assert!(
                !decision.effects.contains(&Effect::Teardown),
                "a teardown effect while held after {event:?}"
            );
        }
        for change in &decision.changes {
            if let Change::Run { phase: RunPhase::Running(_), run, .. } = change {
                if !matches!(before.runs[run].phase, RunPhase::Running(_)) {
                    assert!(
                        state.open && state.teardown == Teardown::Done,
                        "a run started in a closed deployment"
                    );
                }
            }
        }
        if let Some(serving) = state.serving {
            assert_eq!(
                state.revisions[&serving].phase,
                RevisionPhase::Ready,
                "serving a revision that is not ready"
            );
            if state.open {
                let time = state.revisions[&serving].commit.time;
                if let Some(previous) = self.served_time {
                    assert!(
                        time >= previous,
                        "an older commit replaced a newer one after {event:?}"
                    );
                }
                self.served_time = Some(time);
            }
        }
        for run in &self.must_cancel {
            if let Some(r) = state.runs.get(run) {
                assert!(
                    r.phase.is_active() || r.phase == RunPhase::Canceled,
                    "run {run} stopped after a close as {:?}",
                    r.phase
                );
            }
        }
    }

    /// A fresh server works until nothing is left to do, every deploy and run succeeding.
    fn drain(&mut self) {
        self.now += LEASE + 1;
        let server = 2;
        for _ in 0..50 {
            let before = self.state.clone();
            // Production's catch-up has run by now.
            self.event(Event::ReleaseTeardown).expect("release");
            self.claim_teardown(server);
            if self.tearing_down[server] {
                self.act(&Action::FinishTeardown { server }, &mut Reference::default());
            }
            self.claim_deploy(server);
            if let Some(number) = self.deploying[server].take() {
                self.event(Event::DeployFinished {
                    revision: number,
                    owner: owner(server),
                    outcome: Ok(()),
                })
                .expect("own deploy");
            }
            let active: Vec<i64> = self
                .state
                .runs
                .iter()
                .filter(|(_, r)| r.phase.is_active())
                .map(|(id, _)| *id)
                .collect();
            for run in active {
                let lease = self.lease(server);
                let _ = self.event(Event::ClaimRun { run, lease, max_running: None });
                if matches!(&self.state.runs[&run].phase, RunPhase::Running(l) if l.owner == owner(server))
                {
                    self.event(Event::RunFinished { run, owner: owner(server), succeeded: true })
                        .expect("own run");
                }
            }
            if self.state == before {
                return;
            }
        }
        panic!("the deployment never became quiet: {:?}", self.state);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_history_ends_where_the_rules_say(actions in proptest::collection::vec(action(), 1..60)) {
        let mut world = World::new();
        let mut reference = Reference::default();
        for action in &actions {
            world.act(action, &mut reference);
        }
        world.drain();
        let state = &world.state;
        prop_assert_eq!(state.open, !reference.closed, "open/closed");
        let head = state.head.map(|n| index_of(state, n));
        prop_assert_eq!(head, reference.newest, "the head is the newest delivered commit");
        // Open or closed, nothing is left to tear down once everything has settled.
        prop_assert_eq!(&state.teardown, &Teardown::Done);
        prop_assert!(!state.revisions.values().any(|r| matches!(r.phase, RevisionPhase::Queued | RevisionPhase::Deploying(_))));
        prop_assert!(!state.runs.values().any(|r| r.phase.is_active()));
        for run in &world.must_cancel {
            prop_assert_eq!(&state.runs[run].phase, &RunPhase::Canceled);
        }
        if state.open {
            if let Some(head) = state.head {
                let phase = &state.revisions[&head].phase;
                let served = state.serving == Some(head) && *phase == RevisionPhase::Ready;
                prop_assert!(served || *phase == RevisionPhase::Failed, "open: serving the newest commit or saying why not: {:?}", state);
            }
        }
    }
}
