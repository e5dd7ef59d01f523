//! The contract every `Store` implementation must satisfy, as one async test story per concern.
//!
//! This is test code that lives in the library (behind the cargo feature `contract`, which the
//! backends enable for their tests only) so that every backend's integration tests can run it:
//! its functions panic on the first broken rule. Each function uses repositories of its own
//! (and lease owners of its own), so all of them can share one store, even one holding other data
//! (but not an earlier run's: the stories create fixed names). Queries that span repositories
//! (`revisions_with_status`, `list_runs` without a deployment, `pending_intake`) are checked on
//! the rows the story created, plus the ordering of the whole answer.
//!
//! Rules pinned here that the trait's signatures leave open:
//! - `ensure_deployment` never changes an existing deployment: it returns the branch's row as it
//!   is; a deployment's identity (`id`, `repository`, `name`, `kind`, `branch`, `created_at`) is
//!   fixed at creation;
//! - every applied write and every `set_pinned` bumps the version by exactly one and sets
//!   `updated_at` to its `now`; `renew_leases` changes neither;
//! - a write names revisions by number and runs by id, both inside its own deployment: an unknown
//!   one is `NotFound`, a revision number the deployment already has is `Conflict`, and either
//!   way nothing of the write is kept (the version does not move);
//! - a revision inserted finished (superseded) has `finished_at` = the write's `now`;
//! - `delete_requested` is a request: a patch that does not name it never withdraws it;
//! - ids are never reused, not even after the newest rows are deleted;
//! - list methods return nothing, not `NotFound`, for a parent that does not exist;
//! - `find_revision_by_commit` returns the newest revision when a commit was pushed twice;
//! - "newest first" and "oldest first" follow the caller's timestamps, ties broken by insertion
//!   order; string comparisons are exact (case-sensitive, no pattern matching);
//! - a delivery id, once recorded, refuses replays for good, also after it was processed.
//!
//! The concurrency stories drive several writers at once on the calling task ([`all_at_once`]):
//! while one awaits its database, the others go on, so their statements really interleave in the
//! database, and the contract needs neither a runtime nor a `futures` crate of its own.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use offshoot_core::lifecycle::StepsEnd;
use offshoot_core::{
    deployment_name_for_branch, AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName,
    DeploymentStatus, Fingerprint, PullRequestStatus, RepositoryName, RevisionStatus, RunStatus,
    SnapshotBase, StepStatus, UnixMillis, VariableScope,
};

use crate::{Activity, NewTick, RunActivity, ScheduleState, ScheduleTick, TickStatus};
use crate::{
    Applied, CommitDetails, DataDiffKey, DeployOutput, Deployment, DeploymentFilter, DeploymentId,
    DeploymentPatch, Intake, IntakeId, Lease, LifecycleWrite, Materialization, MaterializationId,
    NewDeployment, NewIntake, NewRevision, NewRun, PromotedFrom, Provenance, PullRequest,
    ReadMaterialization, Revision, RevisionPatch, Run, RunFilter, RunId, RunPatch, RunStep, StepId,
    Store, StoreError, StoreResult, StoredDataDiff, StoredVariable, TagLimit, Teardown,
    UpstreamProvenance,
};

/// Runs every story of the contract, one after the other, on one store.
pub async fn run_all(store: &dyn Store) {
    deployments_are_ensured_and_found(store).await;
    ensuring_a_deployment_is_an_upsert_by_branch(store).await;
    deployments_are_listed_production_first_then_by_name(store).await;
    deployment_patches_change_exactly_the_fields_they_name(store).await;
    pinning_is_a_lifecycle_change(store).await;
    a_write_applies_only_on_the_version_it_read(store).await;
    a_refused_write_keeps_nothing(store).await;
    deleting_a_deployment_removes_its_history(store).await;
    revisions_are_numbered_per_deployment(store).await;
    revision_patches_move_a_revision_through_its_phases(store).await;
    revisions_with_status_are_oldest_first_across_deployments(store).await;
    runs_are_inserted_with_their_steps_in_plan_order(store).await;
    run_patches_move_a_run_and_end_its_steps(store).await;
    steps_are_updated_and_their_logs_appended(store).await;
    finishing_a_step_writes_its_outcome_log_and_materialization_at_once(store).await;
    steps_are_updated_together_in_one_write(store).await;
    activity_changes_with_what_live_views_show(store).await;
    runs_are_listed_newest_first_with_filters(store).await;
    materializations_are_listed_newest_first(store).await;
    materializations_keep_their_provenance(store).await;
    data_diffs_are_cached_per_pair_of_materializations(store).await;
    the_lifecycle_reads_unfinished_work_head_and_serving(store).await;
    renewing_leases_extends_one_owners_leases_without_a_new_version(store).await;
    intake_records_each_delivery_once(store).await;
    schedules_are_switched_and_each_tick_is_claimed_once(store).await;
    variables_are_set_replaced_listed_and_unset_by_their_key(store).await;
    missing_rows_are_not_found(store).await;
    hostile_strings_round_trip_exactly(store).await;
    concurrent_writers_never_lose_a_write(store).await;
    concurrent_first_deliveries_share_one_deployment(store).await;
    concurrent_claims_have_one_winner(store).await;
    concurrent_claims_keep_tag_limits_across_deployments(store).await;
    concurrent_opens_never_exceed_the_cap(store).await;
}

pub async fn deployments_are_ensured_and_found(store: &dyn Store) {
    let repo = repository("contract-create");
    let other_repo = repository("contract-create-2");

    let new_prod = NewDeployment {
        kind: DeploymentKind::Production,
        ..new_deployment(&repo, "prod", "main", 1_000)
    };
    let prod = store.ensure_deployment(new_prod).await.expect("create prod");
    assert_eq!(
        prod,
        Deployment {
            id: prod.id,
            repository: repo.clone(),
            name: DeploymentName::production(),
            kind: DeploymentKind::Production,
            branch: branch("main"),
            status: DeploymentStatus::Open,
            pull_request: None,
            base_deployment: None,
            snapshot_base: SnapshotBase::MergeBase,
            snapshot_base_commit: None,
            pinned: false,
            current_revision: None,
            created_at: 1_000,
            updated_at: 1_000,
            last_push_at: 1_000,
            closed_at: None,
            close_reason: None,
            version: 0,
            head_revision: None,
            teardown: Teardown::Done,
            delete_requested: false,
        },
        "a new deployment is open, unpinned, at version 0, has no revision or teardown, and all its times are `now`"
    );

    let new_feature = NewDeployment {
        pull_request: Some(PullRequest {
            id: "17".to_owned(),
            url: "https://git.example/acme/shop/pull/17".to_owned(),
            status: PullRequestStatus::Open,
        }),
        base_deployment: Some(DeploymentName::production()),
        ..new_deployment(&repo, "feature-1", "feature/1", 2_000)
    };
    let feature = store.ensure_deployment(new_feature.clone()).await.expect("create feature-1");
    assert_ne!(feature.id, prod.id, "each deployment gets its own id");
    assert_eq!(feature.pull_request, new_feature.pull_request, "the pull request is stored");
    assert_eq!(
        feature.base_deployment, new_feature.base_deployment,
        "the base deployment is stored"
    );
    assert_eq!(feature.kind, DeploymentKind::Branch);

    assert_eq!(
        store.get_deployment(prod.id).await.expect("get prod"),
        prod,
        "get returns what ensure returned"
    );
    assert_eq!(
        store.get_deployment(feature.id).await.expect("get feature"),
        feature,
        "get returns what ensure returned"
    );

    let found = store.find_deployment(&repo, &name("feature-1")).await.expect("find by name");
    assert_eq!(found.as_ref(), Some(&feature), "find by (repository, name)");
    let found = store.find_deployment(&repo, &name("feature-2")).await.expect("find unknown name");
    assert_eq!(found, None, "an unknown name finds nothing");
    let found = store
        .find_deployment(&other_repo, &name("feature-1"))
        .await
        .expect("find in other repository");
    assert_eq!(found, None, "names are scoped by repository");

    let found =
        store.find_deployment_by_branch(&repo, &branch("feature/1")).await.expect("find by branch");
    assert_eq!(found.as_ref(), Some(&feature), "find by (repository, branch)");
    let found =
        store.find_deployment_by_branch(&repo, &branch("main")).await.expect("find prod by branch");
    assert_eq!(found.as_ref(), Some(&prod), "find by (repository, branch)");
    let found = store
        .find_deployment_by_branch(&repo, &branch("Feature/1"))
        .await
        .expect("find other case");
    assert_eq!(found, None, "branch comparison is case-sensitive");
    let found = store
        .find_deployment_by_branch(&other_repo, &branch("feature/1"))
        .await
        .expect("find in other repository");
    assert_eq!(found, None, "branches are scoped by repository");
}

/// The first delivery of a branch creates its deployment; every later one (or a concurrent one)
/// gets the same row back, unchanged. A name is one branch's only.
pub async fn ensuring_a_deployment_is_an_upsert_by_branch(store: &dyn Store) {
    let repo = repository("contract-ensure");
    let other_repo = repository("contract-ensure-2");

    let first = store
        .ensure_deployment(new_deployment(&repo, "feature-1", "feature/1", 1_000))
        .await
        .expect("create");
    let later = NewDeployment {
        pull_request: Some(PullRequest {
            id: "9".to_owned(),
            url: "https://git.example/9".to_owned(),
            status: PullRequestStatus::Open,
        }),
        base_deployment: Some(name("staging")),
        ..new_deployment(&repo, "feature-1", "feature/1", 2_000)
    };
    let again = store.ensure_deployment(later).await.expect("ensure the same branch again");
    assert_eq!(
        again, first,
        "the branch's deployment is returned as it is: same id, nothing overwritten"
    );

    let renamed = store
        .ensure_deployment(new_deployment(&repo, "feature-1-2", "feature/1", 3_000))
        .await
        .expect("ensure the branch under another name");
    assert_eq!(
        renamed, first,
        "the deployment is the branch's, whatever name the caller would have picked"
    );

    let taken =
        store.ensure_deployment(new_deployment(&repo, "feature-1", "feature/other", 4_000)).await;
    assert_conflict(taken, "a new branch asking for a name another branch's deployment has");
    let production = NewDeployment {
        kind: DeploymentKind::Production,
        ..new_deployment(&repo, "prod", "feature/1", 4_000)
    };
    assert_conflict(
        store.ensure_deployment(production).await,
        "the branch already has a deployment of another kind",
    );

    let elsewhere = store
        .ensure_deployment(new_deployment(&other_repo, "feature-1", "feature/1", 5_000))
        .await
        .expect("the same name and branch in another repository is another deployment");
    assert_ne!(elsewhere.id, first.id);

    let all = store.list_deployments(&including_closed(&repo)).await.expect("list");
    assert_eq!(all, [first], "refused and repeated ensures leave nothing behind");
}

pub async fn deployments_are_listed_production_first_then_by_name(store: &dyn Store) {
    let repo = repository("contract-list");
    let other_repo = repository("contract-list-2");

    // Created out of order, and "a-feature" sorts before "prod" by name, "branch" before
    // "production" by kind text: only an explicit "production first" gets this right.
    let b = store
        .ensure_deployment(new_deployment(&repo, "b-feature", "b", 1_000))
        .await
        .expect("create b");
    let prod = store
        .ensure_deployment(NewDeployment {
            kind: DeploymentKind::Production,
            ..new_deployment(&repo, "prod", "main", 2_000)
        })
        .await
        .expect("create prod");
    let a = store
        .ensure_deployment(new_deployment(&repo, "a-feature", "a", 3_000))
        .await
        .expect("create a");
    let c = store
        .ensure_deployment(new_deployment(&repo, "c-closed", "c", 4_000))
        .await
        .expect("create c");
    let close = DeploymentPatch {
        status: Some(DeploymentStatus::Closed),
        close_reason: Some("pull request merged".to_owned()),
        ..DeploymentPatch::default()
    };
    apply_now(store, LifecycleWrite { deployment_patch: close, ..change(c.id, 5_000) }, "close c")
        .await;
    let c = store.get_deployment(c.id).await.expect("get c");
    let other = store
        .ensure_deployment(new_deployment(&other_repo, "a-feature", "a", 6_000))
        .await
        .expect("create other");

    let open = store
        .list_deployments(&DeploymentFilter {
            repository: Some(repo.clone()),
            include_closed: false,
        })
        .await
        .expect("list open");
    assert_eq!(
        ids(&open),
        [prod.id, a.id, b.id],
        "production first, then by name; closed ones left out"
    );
    let all = store.list_deployments(&including_closed(&repo)).await.expect("list all");
    assert_eq!(ids(&all), [prod.id, a.id, b.id, c.id], "closed ones included on request");
    assert_eq!(all[3], c, "listed rows are whole rows");

    let everywhere = store
        .list_deployments(&DeploymentFilter { repository: None, include_closed: false })
        .await
        .expect("list everywhere");
    let ours: Vec<DeploymentId> = everywhere
        .iter()
        .filter(|d| d.repository == repo || d.repository == other_repo)
        .map(|d| d.id)
        .collect();
    assert_eq!(
        ours.len(),
        4,
        "without a repository filter every repository's open deployments are listed: {ours:?}"
    );
    for id in [prod.id, a.id, b.id, other.id] {
        assert!(ours.contains(&id), "deployment {id:?} listed without a repository filter");
    }
    assert!(
        !ours.contains(&c.id),
        "closed deployments are left out without a repository filter too"
    );
    let first_branch = everywhere
        .iter()
        .position(|d| d.kind == DeploymentKind::Branch)
        .unwrap_or(everywhere.len());
    assert!(
        everywhere[first_branch..].iter().all(|d| d.kind == DeploymentKind::Branch),
        "production deployments come first across repositories too"
    );
}

/// A field a patch names: what it sets, given the write's `now` and the row's revisions.
type Expectation = Box<dyn Fn(&mut Deployment, UnixMillis)>;

/// Each patch changes the fields it names and nothing else, besides the version (one up) and
/// `updated_at` (the write's now).
pub async fn deployment_patches_change_exactly_the_fields_they_name(store: &dyn Store) {
    let repo = repository("contract-patch");
    let created = store
        .ensure_deployment(new_deployment(&repo, "feature-1", "feature/1", 1_000))
        .await
        .expect("create");
    let inserted = apply_now(
        store,
        LifecycleWrite {
            new_revisions: vec![queued(1, 1), queued(2, 2)],
            ..change(created.id, 1_500)
        },
        "insert revisions 1 and 2",
    )
    .await
    .revisions;
    let (first, second) = (inserted[0].id, inserted[1].id);
    let merged = PullRequest {
        id: "42".to_owned(),
        url: "https://git.example/pull/42".to_owned(),
        status: PullRequestStatus::Merged,
    };
    let lease = Lease { owner: "contract-patch-server".to_owned(), until: 99_000 };

    let stories: Vec<(&str, DeploymentPatch, Expectation)> = vec![
        (
            "an empty patch changes only the version and updated_at",
            DeploymentPatch::default(),
            Box::new(|_, _| {}),
        ),
        (
            "pushed sets last_push_at to now",
            DeploymentPatch { pushed: true, ..DeploymentPatch::default() },
            Box::new(|d, now| d.last_push_at = now),
        ),
        (
            "a pull request is set",
            DeploymentPatch { pull_request: Some(merged.clone()), ..DeploymentPatch::default() },
            Box::new({
                let merged = merged.clone();
                move |d, _| d.pull_request = Some(merged.clone())
            }),
        ),
        (
            "a base deployment is set",
            DeploymentPatch {
                base_deployment: Some(Some(name("staging"))),
                ..DeploymentPatch::default()
            },
            Box::new(|d, _| d.base_deployment = Some(name("staging"))),
        ),
        (
            "a base deployment is cleared",
            DeploymentPatch { base_deployment: Some(None), ..DeploymentPatch::default() },
            Box::new(|d, _| d.base_deployment = None),
        ),
        (
            "a snapshot base is set with the production commit it took",
            DeploymentPatch {
                snapshot_base: Some((SnapshotBase::OnCreate, Some(sha(7)))),
                ..DeploymentPatch::default()
            },
            Box::new(|d, _| {
                d.snapshot_base = SnapshotBase::OnCreate;
                d.snapshot_base_commit = Some(sha(7));
            }),
        ),
        (
            "another snapshot base replaces both, commit too",
            DeploymentPatch {
                snapshot_base: Some((SnapshotBase::MergeBase, None)),
                ..DeploymentPatch::default()
            },
            Box::new(|d, _| {
                d.snapshot_base = SnapshotBase::MergeBase;
                d.snapshot_base_commit = None;
            }),
        ),
        (
            "the head is set by revision number",
            DeploymentPatch { head: Some(2), ..DeploymentPatch::default() },
            Box::new(move |d, _| d.head_revision = Some(second)),
        ),
        (
            "the serving revision is set by number",
            DeploymentPatch { serving: Some(Some(1)), ..DeploymentPatch::default() },
            Box::new(move |d, _| d.current_revision = Some(first)),
        ),
        (
            "the serving revision is cleared",
            DeploymentPatch { serving: Some(None), ..DeploymentPatch::default() },
            Box::new(|d, _| d.current_revision = None),
        ),
        (
            "several fields at once",
            DeploymentPatch {
                head: Some(1),
                serving: Some(Some(2)),
                pushed: true,
                ..DeploymentPatch::default()
            },
            Box::new(move |d, now| {
                d.head_revision = Some(first);
                d.current_revision = Some(second);
                d.last_push_at = now;
            }),
        ),
        (
            "closing sets closed_at to now and the reason",
            DeploymentPatch {
                status: Some(DeploymentStatus::Closed),
                close_reason: Some("merged".to_owned()),
                ..DeploymentPatch::default()
            },
            Box::new(|d, now| {
                d.status = DeploymentStatus::Closed;
                d.closed_at = Some(now);
                d.close_reason = Some("merged".to_owned());
            }),
        ),
        (
            "a patch without a status leaves a close alone",
            DeploymentPatch { pushed: true, ..DeploymentPatch::default() },
            Box::new(|d, now| d.last_push_at = now),
        ),
        (
            "a teardown becomes pending",
            DeploymentPatch { teardown: Some(Teardown::Pending), ..DeploymentPatch::default() },
            Box::new(|d, _| d.teardown = Teardown::Pending),
        ),
        (
            "a teardown is held for production's catch-up",
            DeploymentPatch { teardown: Some(Teardown::Held), ..DeploymentPatch::default() },
            Box::new(|d, _| d.teardown = Teardown::Held),
        ),
        (
            "a teardown runs under a lease",
            DeploymentPatch {
                teardown: Some(Teardown::Running(lease.clone())),
                ..DeploymentPatch::default()
            },
            Box::new({
                let lease = lease.clone();
                move |d, _| d.teardown = Teardown::Running(lease.clone())
            }),
        ),
        (
            "a teardown is done, its lease gone",
            DeploymentPatch { teardown: Some(Teardown::Done), ..DeploymentPatch::default() },
            Box::new(|d, _| d.teardown = Teardown::Done),
        ),
        (
            "reopening clears closed_at and the reason",
            DeploymentPatch { status: Some(DeploymentStatus::Open), ..DeploymentPatch::default() },
            Box::new(|d, _| {
                d.status = DeploymentStatus::Open;
                d.closed_at = None;
                d.close_reason = None;
            }),
        ),
        (
            "a delete is requested",
            DeploymentPatch { delete_requested: true, ..DeploymentPatch::default() },
            Box::new(|d, _| d.delete_requested = true),
        ),
        (
            "a patch that does not name the delete request never withdraws it",
            DeploymentPatch::default(),
            Box::new(|_, _| {}),
        ),
    ];

    for (step, (story, patch, expectation)) in stories.into_iter().enumerate() {
        let now = 10_000 + 1_000 * step as UnixMillis;
        let before = store.get_deployment(created.id).await.expect("get before the patch");
        let written = apply_now(
            store,
            LifecycleWrite { deployment_patch: patch, ..change(created.id, now) },
            story,
        )
        .await;
        let mut expected = Deployment { version: before.version + 1, updated_at: now, ..before };
        expectation(&mut expected, now);
        assert_eq!(written.version, expected.version, "{story}: Done carries the new version");
        assert_eq!(
            (written.revisions, written.runs),
            (vec![], vec![]),
            "{story}: a patch inserts nothing"
        );
        assert_eq!(
            store.get_deployment(created.id).await.expect("get after the patch"),
            expected,
            "{story}"
        );
    }
    let found = store.find_deployment(&repo, &name("feature-1")).await.expect("find");
    assert_eq!(
        found,
        Some(store.get_deployment(created.id).await.expect("get")),
        "find sees the patches"
    );
}

pub async fn pinning_is_a_lifecycle_change(store: &dyn Store) {
    let repo = repository("contract-pin");
    let created = store
        .ensure_deployment(new_deployment(&repo, "feature-1", "feature/1", 1_000))
        .await
        .expect("create");

    store.set_pinned(created.id, true, 2_000).await.expect("pin");
    let pinned = store.get_deployment(created.id).await.expect("get");
    assert_eq!(
        pinned,
        Deployment { pinned: true, version: 1, updated_at: 2_000, ..created.clone() },
        "pinning bumps the version"
    );
    store.set_pinned(created.id, false, 3_000).await.expect("unpin");
    let unpinned = store.get_deployment(created.id).await.expect("get");
    assert_eq!(
        unpinned,
        Deployment { pinned: false, version: 2, updated_at: 3_000, ..created.clone() },
        "so does unpinning"
    );

    let read_before_pinning =
        LifecycleWrite { deployment_patch: pushed(), ..change(created.id, 4_000) };
    let read_before_pinning = LifecycleWrite { version: 1, ..read_before_pinning };
    assert_eq!(
        store.apply(read_before_pinning).await.expect("apply a write read before the unpin"),
        Applied::Stale,
        "a decision taken before a pin change is stale"
    );
}

/// Compare-and-set: of two writes decided on the same version, the first applies and the second
/// is stale and writes nothing.
pub async fn a_write_applies_only_on_the_version_it_read(store: &dyn Store) {
    let repo = repository("contract-cas");
    let created = store
        .ensure_deployment(new_deployment(&repo, "feature-1", "feature/1", 1_000))
        .await
        .expect("create");
    let read = store.lifecycle(created.id).await.expect("read the lifecycle");
    let version = read.deployment.version;

    let first = LifecycleWrite {
        version,
        new_revisions: vec![queued(1, 1)],
        deployment_patch: DeploymentPatch {
            head: Some(1),
            pushed: true,
            ..DeploymentPatch::default()
        },
        ..change(created.id, 2_000)
    };
    let second = LifecycleWrite {
        version,
        new_revisions: vec![queued(1, 2), queued(2, 3)],
        deployment_patch: DeploymentPatch {
            head: Some(2),
            status: Some(DeploymentStatus::Closed),
            close_reason: Some("the other decision".to_owned()),
            delete_requested: true,
            ..DeploymentPatch::default()
        },
        delete: true,
        ..change(created.id, 3_000)
    };

    let Applied::Done { version: new_version, revisions, .. } =
        store.apply(first).await.expect("apply the first write")
    else {
        panic!("the first write on a version applies");
    };
    assert_eq!(new_version, version + 1, "an applied write bumps the version by one");
    let after_first = store.get_deployment(created.id).await.expect("get");
    assert_eq!(after_first.version, version + 1);
    assert_eq!(after_first.head_revision, Some(revisions[0].id));

    assert_eq!(
        store.apply(second).await.expect("apply the second write"),
        Applied::Stale,
        "the second write on a version is stale"
    );
    assert_eq!(
        store.get_deployment(created.id).await.expect("get"),
        after_first,
        "a stale write changes nothing, not even the version"
    );
    assert_eq!(
        store.list_revisions(created.id, 0).await.expect("list"),
        revisions,
        "a stale write inserts nothing"
    );

    let ahead = LifecycleWrite {
        version: version + 5,
        deployment_patch: pushed(),
        ..change(created.id, 4_000)
    };
    assert_eq!(
        store.apply(ahead).await.expect("apply a write on a future version"),
        Applied::Stale,
        "only the exact version applies"
    );
    assert_eq!(store.get_deployment(created.id).await.expect("get"), after_first);
}

/// A write that names something its deployment does not have (or inserts a number it has) is
/// refused whole: the rows it inserted before the bad part are gone and the version stays.
pub async fn a_refused_write_keeps_nothing(store: &dyn Store) {
    let repo = repository("contract-refused");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let other =
        store.ensure_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");
    let setup = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![new_run(1, &["x"])],
        deployment_patch: DeploymentPatch {
            head: Some(1),
            serving: Some(Some(1)),
            ..DeploymentPatch::default()
        },
        ..change(deployment.id, 2_000)
    };
    apply_now(store, setup, "set up a").await;
    let other_setup = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![new_run(1, &["x"])],
        ..change(other.id, 2_000)
    };
    let other_run = apply_now(store, other_setup, "set up b").await.runs.remove(0);
    let before = store.get_deployment(deployment.id).await.expect("get a");
    let revisions_before = store.list_revisions(deployment.id, 0).await.expect("list revisions");
    let runs_before = list_runs_of(store, deployment.id).await;
    let other_before = (
        store.get_deployment(other.id).await.expect("get b"),
        store.get_run(other_run.id).await.expect("get b's run"),
    );

    // Every write inserts a revision and a run and patches the deployment, then breaks one rule.
    let refused: Vec<(&str, LifecycleWrite, Refusal)> = vec![
        (
            "a head with an unknown number",
            LifecycleWrite {
                deployment_patch: DeploymentPatch { head: Some(99), ..pushed() },
                ..change(deployment.id, 3_000)
            },
            is_not_found,
        ),
        (
            "a serving revision with an unknown number",
            LifecycleWrite {
                deployment_patch: DeploymentPatch { serving: Some(Some(99)), ..pushed() },
                ..change(deployment.id, 3_000)
            },
            is_not_found,
        ),
        (
            "a patch of an unknown revision number",
            LifecycleWrite {
                revisions: vec![revision_to(99, RevisionStatus::Failed)],
                ..change(deployment.id, 3_000)
            },
            is_not_found,
        ),
        (
            "a run of an unknown revision number",
            LifecycleWrite { new_runs: vec![new_run(99, &["x"])], ..change(deployment.id, 3_000) },
            is_not_found,
        ),
        (
            "a patch of an unknown run",
            LifecycleWrite {
                runs: vec![run_to(RunId(1 << 50), RunStatus::Failed)],
                ..change(deployment.id, 3_000)
            },
            is_not_found,
        ),
        (
            "a patch of another deployment's run",
            LifecycleWrite {
                runs: vec![run_to(other_run.id, RunStatus::Canceled)],
                ..change(deployment.id, 3_000)
            },
            is_not_found,
        ),
        (
            "a revision number the deployment has",
            LifecycleWrite { new_revisions: vec![queued(1, 7)], ..change(deployment.id, 3_000) },
            is_conflict,
        ),
        (
            "the same new number twice",
            LifecycleWrite {
                new_revisions: vec![queued(3, 7), queued(3, 8)],
                ..change(deployment.id, 3_000)
            },
            is_conflict,
        ),
    ];
    for (story, broken, refusal) in refused {
        let mut write = LifecycleWrite {
            new_revisions: [vec![queued(2, 2)], broken.new_revisions].concat(),
            new_runs: [vec![new_run(1, &["y"])], broken.new_runs].concat(),
            ..broken
        };
        write.deployment_patch.pushed = true;
        write.deployment_patch.status = Some(DeploymentStatus::Closed);
        write.version = store.get_deployment(deployment.id).await.expect("get the version").version;
        let result = store.apply(write).await;
        assert!(refusal(&result), "{story}: refused, got {result:?}");
        assert_eq!(
            store.get_deployment(deployment.id).await.expect("get a"),
            before,
            "{story}: the deployment and its version are as before"
        );
        assert_eq!(
            store.list_revisions(deployment.id, 0).await.expect("list"),
            revisions_before,
            "{story}: no revision was kept"
        );
        assert_eq!(
            list_runs_of(store, deployment.id).await,
            runs_before,
            "{story}: no run was kept"
        );
        let other_after = (
            store.get_deployment(other.id).await.expect("get b"),
            store.get_run(other_run.id).await.expect("get b's run"),
        );
        assert_eq!(other_after, other_before, "{story}: the other deployment is untouched");
    }
}

pub async fn deleting_a_deployment_removes_its_history(store: &dyn Store) {
    let repo = repository("contract-delete");
    let doomed = store
        .ensure_deployment(new_deployment(&repo, "doomed", "doomed", 1_000))
        .await
        .expect("create doomed");
    let kept = store
        .ensure_deployment(new_deployment(&repo, "kept", "kept", 1_000))
        .await
        .expect("create kept");

    let mut history = Vec::new();
    for deployment in [&doomed, &kept] {
        let write = LifecycleWrite {
            new_revisions: vec![queued(1, 1)],
            new_runs: vec![new_run(1, &["a", "b"])],
            deployment_patch: DeploymentPatch {
                head: Some(1),
                serving: Some(Some(1)),
                ..DeploymentPatch::default()
            },
            ..change(deployment.id, 2_000)
        };
        let Written { revisions, runs, .. } =
            apply_now(store, write, "a revision serving and a run").await;
        let (revision, run) = (revisions[0].clone(), runs[0].clone());
        let steps = store.list_steps(run.id).await.expect("list steps");
        store.append_step_log(steps[0].id, "building a\n").await.expect("append log");
        store
            .record_materialization(&materialization(deployment.id, run.id, "a", 4_000))
            .await
            .expect("record");
        history.push((revision, run, steps));
    }

    let stale_delete = LifecycleWrite { version: 0, delete: true, ..change(doomed.id, 4_500) };
    assert_eq!(
        store.apply(stale_delete).await.expect("a stale delete"),
        Applied::Stale,
        "a delete checks the version too"
    );
    assert!(store.get_deployment(doomed.id).await.is_ok(), "a stale delete deletes nothing");

    let delete = LifecycleWrite {
        deployment_patch: DeploymentPatch {
            teardown: Some(Teardown::Done),
            ..DeploymentPatch::default()
        },
        delete: true,
        ..change(doomed.id, 5_000)
    };
    apply_now(store, delete, "delete doomed").await;

    let (revision, run, steps) = &history[0];
    assert_not_found(store.get_deployment(doomed.id).await, "the deleted deployment");
    assert_not_found(store.lifecycle(doomed.id).await, "the deleted deployment's lifecycle");
    assert_not_found(store.get_revision(revision.id).await, "a revision of the deleted deployment");
    assert_not_found(store.get_run(run.id).await, "a run of the deleted deployment");
    assert_eq!(
        store.list_steps(run.id).await.expect("list steps"),
        [],
        "the deleted run's steps are gone"
    );
    assert_not_found(
        store.append_step_log(steps[0].id, "late\n").await,
        "a step of the deleted deployment",
    );
    assert_eq!(
        store.list_revisions(doomed.id, 0).await.expect("list revisions"),
        [],
        "revisions are gone"
    );
    assert_eq!(
        store.list_materializations(doomed.id, None, 0).await.expect("list materializations"),
        [],
        "materializations are gone"
    );
    assert_eq!(list_runs_of(store, doomed.id).await, [], "runs are gone");
    assert_eq!(store.find_deployment(&repo, &name("doomed")).await.expect("find"), None);
    let newest = store.newest_revisions().await.expect("newest revisions");
    assert!(
        newest.iter().all(|r| r.deployment_id != doomed.id),
        "no newest revision of a deleted deployment"
    );
    let again = LifecycleWrite { delete: true, ..change(doomed.id, 6_000) };
    assert_not_found(store.apply(again).await, "deleting twice");

    let (revision, run, steps) = &history[1];
    let kept_now = store.get_deployment(kept.id).await.expect("get kept");
    assert_eq!(
        (kept_now.current_revision, kept_now.head_revision),
        (Some(revision.id), Some(revision.id)),
        "the other deployment is untouched"
    );
    assert_eq!(store.get_revision(revision.id).await.expect("get kept revision"), *revision);
    assert_eq!(store.get_run(run.id).await.expect("get kept run"), *run);
    let kept_steps = store.list_steps(run.id).await.expect("list kept steps");
    assert_eq!(kept_steps.len(), steps.len());
    assert_eq!(kept_steps[0].log, "building a\n");
    assert_eq!(
        store
            .list_materializations(kept.id, None, 0)
            .await
            .expect("list kept materializations")
            .len(),
        1
    );

    let again = store.ensure_deployment(new_deployment(&repo, "doomed", "doomed", 7_000)).await;
    let again = again.expect("a deleted deployment's name and branch can be used again");
    assert_eq!(
        (again.version, again.head_revision),
        (0, None),
        "a recreated deployment starts afresh"
    );
    assert_eq!(
        store.list_revisions(again.id, 0).await.expect("list revisions"),
        [],
        "a recreated deployment starts empty"
    );

    // Ids are never reused, even those of the newest rows: a worker holding a stale id must not
    // reach another deployment's data.
    let newest = store
        .ensure_deployment(new_deployment(&repo, "newest", "newest", 8_000))
        .await
        .expect("create newest");
    let insert = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![new_run(1, &["a"])],
        ..change(newest.id, 8_000)
    };
    let newest_rows = apply_now(store, insert, "insert the newest rows").await;
    apply_now(store, LifecycleWrite { delete: true, ..change(newest.id, 8_500) }, "delete newest")
        .await;
    let successor = store
        .ensure_deployment(new_deployment(&repo, "successor", "successor", 9_000))
        .await
        .expect("create successor");
    let insert = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![new_run(1, &["a"])],
        ..change(successor.id, 9_000)
    };
    let successor_rows = apply_now(store, insert, "insert the successor's rows").await;
    assert_ne!(successor.id, newest.id, "a deleted deployment's id is not reused");
    assert_ne!(
        successor_rows.revisions[0].id, newest_rows.revisions[0].id,
        "a deleted revision's id is not reused"
    );
    assert_ne!(
        successor_rows.runs[0].id, newest_rows.runs[0].id,
        "a deleted run's id is not reused"
    );
}

pub async fn revisions_are_numbered_per_deployment(store: &dyn Store) {
    let repo = repository("contract-revisions");
    let a =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b =
        store.ensure_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");

    let a1 = insert_revision(store, a.id, queued(1, 1), 2_000).await;
    let b1 = insert_revision(store, b.id, queued(1, 1), 2_100).await;
    let a2 = insert_revision(store, a.id, queued(2, 2), 2_200).await;
    let superseded = NewRevision {
        status: RevisionStatus::Superseded,
        error: Some("a newer commit arrived first".to_owned()),
        ..queued(3, 3)
    };
    let a3 = insert_revision(store, a.id, superseded, 2_300).await;
    assert_eq!([a1.number, a2.number, a3.number], [1, 2, 3], "numbers are the write's");
    assert_eq!(b1.number, 1, "another deployment has its own numbers");

    assert_eq!(
        a1,
        Revision {
            id: a1.id,
            deployment_id: a.id,
            number: 1,
            commit: commit_details(1),
            status: RevisionStatus::Queued,
            error: None,
            diagnostics_json: None,
            base_commit: None,
            changes_json: None,
            asset_count: 0,
            changed_count: 0,
            impacted_count: 0,
            queued_at: 2_000,
            started_at: None,
            finished_at: None,
            lease: None,
        },
        "a new revision has its commit, status and queue time (the write's now), and nothing else yet"
    );
    assert_eq!(a3.status, RevisionStatus::Superseded, "the status given at insertion is kept");
    assert_eq!(a3.error.as_deref(), Some("a newer commit arrived first"));
    assert_eq!(
        (a3.queued_at, a3.started_at, a3.finished_at),
        (2_300, None, Some(2_300)),
        "a revision inserted finished has finished now"
    );
    for revision in [&a1, &b1, &a2, &a3] {
        assert_eq!(
            store.get_revision(revision.id).await.expect("get revision"),
            *revision,
            "get returns what apply returned"
        );
    }

    let two =
        LifecycleWrite { new_revisions: vec![queued(3, 3), queued(2, 2)], ..change(b.id, 2_500) };
    let two = apply_now(store, two, "insert two revisions in one write").await.revisions;
    assert_eq!(numbers(&two), [3, 2], "inserted rows come back in the write's order");
    assert!(two[0].id < two[1].id, "and are inserted in that order");
    assert_eq!(two.iter().map(|r| r.queued_at).collect::<Vec<_>>(), [2_500, 2_500]);

    let newest = store.newest_revisions().await.expect("newest revisions");
    assert!(
        newest.contains(&a3) && newest.contains(&two[0]),
        "the newest (highest number) revision of each deployment"
    );
    assert!(
        !newest.contains(&a1) && !newest.contains(&a2) && !newest.contains(&two[1]),
        "lower numbers are not the newest"
    );

    let found = store.find_revision_by_commit(a.id, &sha(2)).await.expect("find a2");
    assert_eq!(found.as_ref(), Some(&a2), "find by commit");
    let found = store.find_revision_by_commit(b.id, &sha(1)).await.expect("find in b");
    assert_eq!(found, Some(b1.clone()), "commits are scoped by deployment");
    let found = store.find_revision_by_commit(a.id, &sha(99)).await.expect("find unknown");
    assert_eq!(found, None, "an unknown commit finds nothing");

    assert_eq!(
        numbers(&store.list_revisions(a.id, 0).await.expect("list a")),
        [3, 2, 1],
        "newest first"
    );
    assert_eq!(
        numbers(&store.list_revisions(a.id, 2).await.expect("list a, 2")),
        [3, 2],
        "limit keeps the newest"
    );
    assert_eq!(
        numbers(&store.list_revisions(b.id, 0).await.expect("list b")),
        [3, 2, 1],
        "only the deployment's own revisions"
    );

    // The same commit pushed again (a revert of a force-push) gets a new number; find returns it.
    let a4 = insert_revision(store, a.id, queued(4, 1), 2_400).await;
    let found = store.find_revision_by_commit(a.id, &sha(1)).await.expect("find repeated commit");
    assert_eq!(found, Some(a4), "a commit pushed twice finds its newest revision");
}

/// Queued → deploying (the lease, started_at) → taken over → ready (the output, finished_at, no
/// lease); and queued → deploying → queued again → failed, with errors kept unless replaced.
pub async fn revision_patches_move_a_revision_through_its_phases(store: &dyn Store) {
    let repo = repository("contract-rev-patch");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let other = store
        .ensure_deployment(new_deployment(&repo, "b", "b", 1_000))
        .await
        .expect("create other");
    let inserted = apply_now(
        store,
        LifecycleWrite {
            new_revisions: vec![queued(1, 1), queued(2, 2)],
            ..change(deployment.id, 2_000)
        },
        "insert",
    )
    .await
    .revisions;
    let other_revision = insert_revision(store, other.id, queued(1, 1), 2_000).await;
    let server_a = Lease { owner: "contract-rev-patch-a".to_owned(), until: 13_000 };
    let server_b = Lease { owner: "contract-rev-patch-b".to_owned(), until: 14_000 };

    let deploying = RevisionPatch {
        lease: Some(server_a.clone()),
        ..revision_to(1, RevisionStatus::Deploying)
    };
    let version = patch_revisions(store, deployment.id, vec![deploying], 3_000).await;
    let expected = Revision {
        status: RevisionStatus::Deploying,
        started_at: Some(3_000),
        lease: Some(server_a.clone()),
        ..inserted[0].clone()
    };
    assert_eq!(
        store.get_revision(expected.id).await.expect("get"),
        expected,
        "deploying sets started_at to now and the lease"
    );
    assert_eq!(version, 2, "the insert and each patch are one version each");

    let taken_over = RevisionPatch {
        lease: Some(server_b.clone()),
        ..revision_to(1, RevisionStatus::Deploying)
    };
    patch_revisions(store, deployment.id, vec![taken_over], 4_000).await;
    let expected = Revision { started_at: Some(4_000), lease: Some(server_b.clone()), ..expected };
    assert_eq!(
        store.get_revision(expected.id).await.expect("get"),
        expected,
        "a take-over replaces the lease and starts again"
    );

    let output = DeployOutput {
        diagnostics_json: Some(
            r#"[{"path":"assets/a.sql","line":1,"column":8,"message":"x","hint":"y"}]"#.to_owned(),
        ),
        base_commit: Some(sha(7)),
        changes_json: Some(r#"{"changed":["a"],"impacted":[]}"#.to_owned()),
        asset_count: 12,
        changed_count: 3,
        impacted_count: u32::MAX,
    };
    let ready =
        RevisionPatch { output: Some(output.clone()), ..revision_to(1, RevisionStatus::Ready) };
    patch_revisions(store, deployment.id, vec![ready], 5_000).await;
    let expected = Revision {
        status: RevisionStatus::Ready,
        diagnostics_json: output.diagnostics_json.clone(),
        base_commit: output.base_commit.clone(),
        changes_json: output.changes_json.clone(),
        asset_count: 12,
        changed_count: 3,
        impacted_count: u32::MAX,
        finished_at: Some(5_000),
        ..expected
    };
    assert_eq!(
        store.get_revision(expected.id).await.expect("get"),
        expected,
        "finishing writes the output and finished_at, and keeps the lease it finished under (who deployed it)"
    );
    assert_eq!(
        store.get_revision(inserted[1].id).await.expect("get"),
        inserted[1],
        "a patch changes only the revision it names"
    );

    let cleared = RevisionPatch {
        output: Some(DeployOutput::default()),
        ..revision_to(1, RevisionStatus::Ready)
    };
    patch_revisions(store, deployment.id, vec![cleared], 6_000).await;
    let expected = Revision {
        diagnostics_json: None,
        base_commit: None,
        changes_json: None,
        asset_count: 0,
        changed_count: 0,
        impacted_count: 0,
        finished_at: Some(6_000),
        ..expected
    };
    assert_eq!(
        store.get_revision(expected.id).await.expect("get"),
        expected,
        "an output's empty fields are cleared, not ignored"
    );

    // Revision 2: deploying, lost its server (queued again), then failed in one write with
    // another deployment's revision 1 untouched.
    let deploying = RevisionPatch {
        lease: Some(server_a.clone()),
        ..revision_to(2, RevisionStatus::Deploying)
    };
    patch_revisions(store, deployment.id, vec![deploying], 7_000).await;
    let requeued = RevisionPatch {
        error: Some("its server stopped".to_owned()),
        ..revision_to(2, RevisionStatus::Queued)
    };
    patch_revisions(store, deployment.id, vec![requeued], 8_000).await;
    let expected = Revision {
        status: RevisionStatus::Queued,
        error: Some("its server stopped".to_owned()),
        started_at: Some(7_000),
        finished_at: None,
        lease: None,
        ..inserted[1].clone()
    };
    assert_eq!(
        store.get_revision(expected.id).await.expect("get"),
        expected,
        "queued again: no lease; started_at is the last start"
    );

    let failed = RevisionPatch {
        error: Some("validation failed".to_owned()),
        output: Some(DeployOutput {
            diagnostics_json: Some("[]".to_owned()),
            ..DeployOutput::default()
        }),
        ..revision_to(2, RevisionStatus::Failed)
    };
    patch_revisions(store, deployment.id, vec![failed], 9_000).await;
    let expected = Revision {
        status: RevisionStatus::Failed,
        error: Some("validation failed".to_owned()),
        diagnostics_json: Some("[]".to_owned()),
        finished_at: Some(9_000),
        ..expected
    };
    assert_eq!(
        store.get_revision(expected.id).await.expect("get"),
        expected,
        "a given error replaces the error"
    );
    patch_revisions(store, deployment.id, vec![revision_to(2, RevisionStatus::Failed)], 10_000)
        .await;
    let expected = Revision { finished_at: Some(10_000), ..expected };
    assert_eq!(
        store.get_revision(expected.id).await.expect("get"),
        expected,
        "no error and no output leave both alone"
    );

    assert_eq!(
        store.get_revision(other_revision.id).await.expect("get other"),
        other_revision,
        "numbers are the write's deployment's"
    );
    let listed = store.list_revisions(deployment.id, 0).await.expect("list");
    assert_eq!(listed[0], expected, "list sees the patches");
}

pub async fn revisions_with_status_are_oldest_first_across_deployments(store: &dyn Store) {
    let repo = repository("contract-queue");
    let a =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b =
        store.ensure_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");

    let a1 = insert_revision(store, a.id, queued(1, 1), 10_000).await;
    let b1 = insert_revision(store, b.id, queued(1, 1), 10_001).await;
    let a2 = insert_revision(store, a.id, queued(2, 2), 10_002).await;
    let b2 = insert_revision(
        store,
        b.id,
        NewRevision { status: RevisionStatus::Superseded, ..queued(2, 2) },
        10_003,
    )
    .await;
    // Inserted later with an earlier time: the caller's time orders, not insertion.
    let b3 = insert_revision(store, b.id, queued(3, 3), 9_000).await;
    // Two in one write: the same time, insertion order breaks the tie.
    let ties =
        LifecycleWrite { new_revisions: vec![queued(3, 3), queued(4, 4)], ..change(a.id, 10_005) };
    let ties = apply_now(store, ties, "insert two at once").await.revisions;
    let (a3, a4) = (&ties[0], &ties[1]);
    let deploying = RevisionPatch {
        lease: Some(Lease { owner: "contract-queue".to_owned(), until: 20_000 }),
        ..revision_to(1, RevisionStatus::Deploying)
    };
    patch_revisions(store, a.id, vec![deploying], 10_004).await;

    let ours = |revisions: Vec<Revision>| -> Vec<crate::RevisionId> {
        revisions
            .into_iter()
            .filter(|r| r.deployment_id == a.id || r.deployment_id == b.id)
            .map(|r| r.id)
            .collect()
    };
    let queued_now = store.revisions_with_status(&[RevisionStatus::Queued]).await.expect("queued");
    assert_oldest_first(&queued_now);
    assert_eq!(
        ours(queued_now),
        [b3.id, b1.id, a2.id, a3.id, a4.id],
        "oldest first, interleaved across deployments"
    );
    let active = store
        .revisions_with_status(&[RevisionStatus::Queued, RevisionStatus::Deploying])
        .await
        .expect("active");
    assert_oldest_first(&active);
    assert_eq!(
        ours(active.clone()),
        [b3.id, a1.id, b1.id, a2.id, a3.id, a4.id],
        "several statuses at once"
    );
    assert!(
        active
            .iter()
            .all(|r| matches!(r.status, RevisionStatus::Queued | RevisionStatus::Deploying)),
        "only the statuses asked for"
    );
    let three = [RevisionStatus::Deploying, RevisionStatus::Superseded, RevisionStatus::Queued];
    let three = store.revisions_with_status(&three).await.expect("three statuses");
    assert_oldest_first(&three);
    assert_eq!(ours(three), [b3.id, a1.id, b1.id, a2.id, b2.id, a3.id, a4.id]);
    let ready = store.revisions_with_status(&[RevisionStatus::Ready]).await.expect("ready");
    assert_eq!(ours(ready), [], "no revision of ours is ready");
    let none = store.revisions_with_status(&[]).await.expect("no statuses");
    assert_eq!(none, [], "no statuses asked for, none returned");
}

pub async fn runs_are_inserted_with_their_steps_in_plan_order(store: &dyn Store) {
    let repo = repository("contract-runs");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let revision = insert_revision(store, deployment.id, queued(1, 1), 2_000).await;

    // Not alphabetical: the plan's order is kept, not re-sorted.
    let selection = r#"+orders tag:"finance" , 'x';--"#;
    let tags =
        vec![("dbt".to_owned(), "nightly=1 'x'".to_owned()), ("team".to_owned(), String::new())];
    let planned = NewRun {
        selection: selection.to_owned(),
        tags: tags.clone(),
        ..new_run(1, &["orders", "customers", "revenue"])
    };
    let empty = new_run(1, &[]);
    let write = LifecycleWrite { new_runs: vec![planned, empty], ..change(deployment.id, 3_000) };
    let runs = apply_now(store, write, "insert two runs").await.runs;
    let (run, empty) = (&runs[0], &runs[1]);
    assert_eq!(
        *run,
        Run {
            id: run.id,
            deployment_id: deployment.id,
            revision_id: revision.id,
            selection: selection.to_owned(),
            status: RunStatus::Queued,
            error: None,
            created_at: 3_000,
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            lease: None,
            tags,
        },
        "a new run is queued, not canceled, of the revision its number names, created now, with its tags"
    );
    assert!(run.id < empty.id, "runs come back in the write's order");
    assert_eq!(
        store.get_run(run.id).await.expect("get run"),
        *run,
        "get returns what apply returned"
    );

    let steps = store.list_steps(run.id).await.expect("list steps");
    let planned: Vec<(u32, &str)> =
        steps.iter().map(|s| (s.position, s.asset_key.as_str())).collect();
    assert_eq!(
        planned,
        [(0, "orders"), (1, "customers"), (2, "revenue")],
        "steps in plan order with their positions"
    );
    for step in &steps {
        assert_eq!(step.run_id, run.id);
        assert_eq!(step.status, StepStatus::Pending, "a new step is pending");
        assert_eq!(
            (
                step.started_at,
                step.finished_at,
                step.row_count,
                step.error.as_deref(),
                step.log.as_str()
            ),
            (None, None, None, None, "")
        );
    }
    let distinct: std::collections::BTreeSet<StepId> = steps.iter().map(|s| s.id).collect();
    assert_eq!(distinct.len(), steps.len(), "each step has its own id");
    assert_eq!(
        store.list_steps(empty.id).await.expect("list steps"),
        [],
        "a run may have no steps"
    );
}

/// Queued → running (lease, started_at) → canceled (finished_at, no lease, unfinished steps
/// canceled); an interrupted run fails its running step and skips the pending ones; a run its
/// executor finished keeps the steps the executor recorded.
pub async fn run_patches_move_a_run_and_end_its_steps(store: &dyn Store) {
    let repo = repository("contract-run-patch");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let insert = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![
            new_run(1, &["orders", "customers", "revenue"]),
            new_run(1, &["orders", "customers", "revenue"]),
            new_run(1, &["orders", "customers"]),
        ],
        ..change(deployment.id, 2_000)
    };
    let runs = apply_now(store, insert, "insert three runs").await.runs;
    let server = Lease { owner: "contract-run-patch".to_owned(), until: 30_000 };

    // Run 0: running, one step done, one running; then canceled.
    let canceled = &runs[0];
    let running =
        RunPatch { lease: Some(server.clone()), ..run_to(canceled.id, RunStatus::Running) };
    patch_runs(store, deployment.id, vec![running], 3_000).await;
    let expected = Run {
        status: RunStatus::Running,
        started_at: Some(3_000),
        lease: Some(server.clone()),
        ..canceled.clone()
    };
    assert_eq!(
        store.get_run(canceled.id).await.expect("get"),
        expected,
        "running sets started_at to now and the lease"
    );
    let steps = store.list_steps(canceled.id).await.expect("list steps");
    assert_eq!(
        (&steps[0].action, steps[0].promoted_from),
        (&None, None),
        "a new step says nothing"
    );
    // A catch-up's step says what it does, and which materialization a promotion takes.
    let succeeded = RunStep {
        status: StepStatus::Succeeded,
        started_at: Some(3_100),
        finished_at: Some(3_200),
        row_count: Some(5),
        action: Some("promoted (from feature-x, run 7)".to_owned()),
        promoted_from: Some(MaterializationId(1 << 40)),
        ..steps[0].clone()
    };
    let started =
        RunStep { status: StepStatus::Running, started_at: Some(3_300), ..steps[1].clone() };
    store.update_step(&succeeded).await.expect("the executor records step 0");
    store.update_step(&started).await.expect("the executor starts step 1");

    let cancel_requested = RunPatch {
        cancel_requested: true,
        lease: Some(server.clone()),
        ..run_to(canceled.id, RunStatus::Running)
    };
    patch_runs(store, deployment.id, vec![cancel_requested], 3_500).await;
    let expected = Run { cancel_requested: true, ..expected };
    assert_eq!(
        store.get_run(canceled.id).await.expect("get"),
        expected,
        "a cancel request is written; a run that stays running keeps the time it started"
    );

    let cancel = RunPatch {
        error: Some("canceled by alice".to_owned()),
        steps: StepsEnd::Canceled,
        ..run_to(canceled.id, RunStatus::Canceled)
    };
    patch_runs(store, deployment.id, vec![cancel], 4_000).await;
    let expected = Run {
        status: RunStatus::Canceled,
        error: Some("canceled by alice".to_owned()),
        finished_at: Some(4_000),
        cancel_requested: false,
        ..expected
    };
    assert_eq!(
        store.get_run(canceled.id).await.expect("get"),
        expected,
        "finishing sets finished_at and keeps the lease it finished under; cancel_requested is written"
    );
    let ended = store.list_steps(canceled.id).await.expect("list steps");
    assert_eq!(
        ended,
        [
            succeeded.clone(),
            RunStep { status: StepStatus::Canceled, finished_at: Some(4_000), ..started.clone() },
            RunStep { status: StepStatus::Canceled, finished_at: Some(4_000), ..steps[2].clone() },
        ],
        "canceled: finished steps stay, running and pending ones are canceled now"
    );

    // Run 1: its server stopped while step 0 ran.
    let interrupted = &runs[1];
    patch_runs(
        store,
        deployment.id,
        vec![RunPatch {
            lease: Some(server.clone()),
            ..run_to(interrupted.id, RunStatus::Running)
        }],
        5_000,
    )
    .await;
    let steps = store.list_steps(interrupted.id).await.expect("list steps");
    let started =
        RunStep { status: StepStatus::Running, started_at: Some(5_100), ..steps[0].clone() };
    store.update_step(&started).await.expect("the executor starts step 0");
    let fail = RunPatch {
        error: Some("the server stopped".to_owned()),
        steps: StepsEnd::Interrupted,
        ..run_to(interrupted.id, RunStatus::Failed)
    };
    patch_runs(store, deployment.id, vec![fail], 6_000).await;
    let run = store.get_run(interrupted.id).await.expect("get");
    assert_eq!(
        (
            run.status,
            run.error.as_deref(),
            run.started_at,
            run.finished_at,
            run.lease.map(|l| l.owner)
        ),
        (
            RunStatus::Failed,
            Some("the server stopped"),
            Some(5_000),
            Some(6_000),
            Some("contract-run-patch".to_owned())
        ),
        "an interrupted run keeps the lease of the server that stopped: it says who ran it"
    );
    let ended = store.list_steps(interrupted.id).await.expect("list steps");
    assert_eq!(
        ended,
        [
            RunStep {
                status: StepStatus::Failed,
                finished_at: Some(6_000),
                error: Some("the server stopped while this step ran".to_owned()),
                ..started
            },
            RunStep { status: StepStatus::Skipped, finished_at: Some(6_000), ..steps[1].clone() },
            RunStep { status: StepStatus::Skipped, finished_at: Some(6_000), ..steps[2].clone() },
        ],
        "interrupted: the running step failed with a reason, pending ones are skipped"
    );

    // Run 2: the executor recorded its steps; the patch that finishes it leaves them alone.
    let recorded = &runs[2];
    patch_runs(
        store,
        deployment.id,
        vec![RunPatch { lease: Some(server.clone()), ..run_to(recorded.id, RunStatus::Running) }],
        7_000,
    )
    .await;
    let steps = store.list_steps(recorded.id).await.expect("list steps");
    let done = RunStep {
        status: StepStatus::Succeeded,
        started_at: Some(7_100),
        finished_at: Some(7_200),
        ..steps[0].clone()
    };
    store.update_step(&done).await.expect("the executor records step 0");
    patch_runs(store, deployment.id, vec![run_to(recorded.id, RunStatus::Succeeded)], 8_000).await;
    assert_eq!(
        store.list_steps(recorded.id).await.expect("list steps"),
        [done, steps[1].clone()],
        "recorded: the steps are the executor's"
    );
    let run = store.get_run(recorded.id).await.expect("get");
    assert_eq!(
        (run.status, run.error, run.finished_at, run.lease.map(|l| l.owner)),
        (RunStatus::Succeeded, None, Some(8_000), Some("contract-run-patch".to_owned()))
    );
    patch_runs(store, deployment.id, vec![run_to(canceled.id, RunStatus::Canceled)], 9_000).await;
    assert_eq!(
        store.get_run(canceled.id).await.expect("get").error.as_deref(),
        Some("canceled by alice"),
        "no error leaves the error alone"
    );
}

pub async fn steps_are_updated_and_their_logs_appended(store: &dyn Store) {
    let repo = repository("contract-steps");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let run = insert_run(store, deployment.id, &["a", "b"], 3_000).await;
    let steps = store.list_steps(run.id).await.expect("list steps");

    store.append_step_log(steps[0].id, "line 1\n").await.expect("append 1");
    store.append_step_log(steps[0].id, "").await.expect("append nothing");
    store.append_step_log(steps[0].id, "line 2 ünïcødé 🚀\n").await.expect("append 2");
    store.append_step_log(steps[0].id, "no newline").await.expect("append 3");

    // The step as the executor last read it, with a stale log: update_step must not write it.
    let succeeded = RunStep {
        status: StepStatus::Succeeded,
        started_at: Some(4_000),
        finished_at: Some(5_000),
        row_count: Some(i64::MAX),
        error: Some("warning: 3 rows dropped".to_owned()),
        log: "stale".to_owned(),
        ..steps[0].clone()
    };
    store.update_step(&succeeded).await.expect("update step");
    store.append_step_log(steps[0].id, "\nafter").await.expect("append after update");

    let listed = store.list_steps(run.id).await.expect("list steps");
    let expected = RunStep {
        log: "line 1\nline 2 ünïcødé 🚀\nno newline\nafter".to_owned(),
        ..succeeded
    };
    assert_eq!(listed[0], expected, "status, times, row count and error are written; the log is appended in order, never overwritten");
    assert_eq!(listed[1], steps[1], "the other step is untouched");

    let failed = RunStep {
        status: StepStatus::Failed,
        row_count: Some(0),
        error: Some("boom".to_owned()),
        ..steps[1].clone()
    };
    store.update_step(&failed).await.expect("fail step");
    let cleared = RunStep {
        status: StepStatus::Skipped,
        row_count: None,
        error: None,
        started_at: None,
        finished_at: None,
        ..failed
    };
    store.update_step(&cleared).await.expect("clear step options");
    assert_eq!(
        store.list_steps(run.id).await.expect("list steps")[1],
        cleared,
        "options are cleared, not ignored"
    );
    let version = store.get_deployment(deployment.id).await.expect("get").version;
    assert_eq!(
        version, 1,
        "steps and logs are the executor's, not lifecycle changes: the version stays"
    );
}

pub async fn steps_are_updated_together_in_one_write(store: &dyn Store) {
    let repo = repository("contract-step-batch");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let run = insert_run(store, deployment.id, &["a", "b", "c"], 3_000).await;
    let steps = store.list_steps(run.id).await.expect("list steps");
    store.append_step_log(steps[0].id, "before\n").await.expect("append");
    let skipped = RunStep {
        status: StepStatus::Skipped,
        finished_at: Some(4_000),
        action: Some("up to date".to_owned()),
        log: "stale".to_owned(),
        ..steps[0].clone()
    };
    let promoted = RunStep {
        status: StepStatus::Succeeded,
        started_at: Some(3_500),
        finished_at: Some(4_000),
        row_count: Some(7),
        action: Some("promoted (from feature-x, run 7)".to_owned()),
        promoted_from: Some(MaterializationId(1 << 40)),
        ..steps[2].clone()
    };
    store
        .update_steps(&[(&skipped, "nothing to do 🚀\n"), (&promoted, "")])
        .await
        .expect("update two steps");
    let listed = store.list_steps(run.id).await.expect("list steps");
    assert_eq!(
        listed,
        vec![
            RunStep { log: "before\nnothing to do 🚀\n".to_owned(), ..skipped },
            steps[1].clone(),
            promoted.clone(),
        ],
        "every field is written and each text appended to its own step's log; the others stay"
    );

    // A step that is not there refuses the whole write: nothing of it is kept.
    let missing = RunStep { id: StepId(1 << 40), ..promoted.clone() };
    let failed = RunStep { status: StepStatus::Failed, ..steps[1].clone() };
    let refused = store.update_steps(&[(&failed, "x"), (&missing, "y")]).await;
    assert!(matches!(refused, Err(StoreError::NotFound(_))), "{refused:?}");
    assert_eq!(
        store.list_steps(run.id).await.expect("list steps"),
        listed,
        "a refused batch keeps nothing"
    );
    store.update_steps(&[]).await.expect("an empty batch writes nothing");
}

pub async fn activity_changes_with_what_live_views_show(store: &dyn Store) {
    let repo = repository("contract-activity");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let activity = || async { store.activity().await.expect("activity") };
    let before = activity().await;
    assert!(before.deployments.contains(&(deployment.id, deployment.version)), "{before:?}");
    assert_eq!(activity().await, before, "nothing happened: the same activity");

    let run = insert_run(store, deployment.id, &["a", "b"], 3_000).await;
    let queued = activity().await;
    assert_ne!(queued, before, "a lifecycle write changes it");
    let of_run = |activity: &Activity| activity.runs.iter().find(|r| r.run == run.id).cloned();
    let pending = StepStatus::Pending.as_str().to_owned();
    assert_eq!(
        of_run(&queued),
        Some(RunActivity {
            run: run.id,
            status: RunStatus::Queued.as_str().to_owned(),
            steps: vec![(pending.clone(), 2, 0, 0)],
        }),
        "an active run, its steps counted per status"
    );

    let steps = store.list_steps(run.id).await.expect("list steps");
    store.append_step_log(steps[0].id, "abc").await.expect("append");
    let logged = activity().await;
    assert_ne!(logged, queued, "a log write changes it");
    let running = RunStep { status: StepStatus::Running, ..steps[0].clone() };
    store.update_step(&running).await.expect("start a step");
    let started = activity().await;
    assert_ne!(started, logged, "a step's status changes it");
    let described = RunStep { action: Some("built".to_owned()), ..steps[1].clone() };
    store.update_step(&described).await.expect("describe a step");
    let expected = vec![(pending, 1, 1, 0), (StepStatus::Running.as_str().to_owned(), 1, 0, 3)];
    let mut steps_now = of_run(&activity().await).expect("still active").steps;
    steps_now.sort();
    assert_eq!(steps_now, expected, "a step's action changes it too");

    patch_runs(store, deployment.id, vec![run_to(run.id, RunStatus::Succeeded)], 5_000).await;
    let finished = activity().await;
    assert_eq!(of_run(&finished), None, "a finished run is not active");
    let version = store.get_deployment(deployment.id).await.expect("get").version;
    assert!(finished.deployments.contains(&(deployment.id, version)), "{finished:?}");
}

pub async fn finishing_a_step_writes_its_outcome_log_and_materialization_at_once(
    store: &dyn Store,
) {
    let repo = repository("contract-finish-step");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let run = insert_run(store, deployment.id, &["a", "b"], 3_000).await;
    let steps = store.list_steps(run.id).await.expect("list steps");
    store.append_step_log(steps[0].id, "building a\n").await.expect("append");
    let fingerprint = Fingerprint::from_hex(&"ab".repeat(32)).expect("hex");
    let provenance = Provenance {
        fingerprint,
        code_version: "v1".to_owned(),
        partitions: String::new(),
        upstream: vec![UpstreamProvenance {
            key: key("raw"),
            fingerprint: Fingerprint::from_hex(&"cd".repeat(32)).expect("hex"),
            read: None,
        }],
        promoted_from: None,
        built_against: None,
    };
    let built = materialization(deployment.id, run.id, "a", 4_500);
    let succeeded = RunStep {
        status: StepStatus::Succeeded,
        started_at: Some(4_000),
        finished_at: Some(5_000),
        row_count: Some(3),
        log: "stale".to_owned(),
        ..steps[0].clone()
    };
    let id = store
        .finish_step(&succeeded, "3 rows\n", Some((&built, &provenance)))
        .await
        .expect("finish a")
        .expect("a materialization id for a built step");
    let listed = store.list_steps(run.id).await.expect("list steps");
    assert_eq!(listed[0], RunStep { log: "building a\n3 rows\n".to_owned(), ..succeeded });
    let recorded = store.get_materialization(id).await.expect("the materialization");
    assert_eq!(recorded.materialization, built);
    assert_eq!(recorded.provenance.as_ref(), Some(&provenance));

    let failed = RunStep {
        status: StepStatus::Failed,
        error: Some("boom".to_owned()),
        finished_at: Some(6_000),
        ..steps[1].clone()
    };
    let none = store.finish_step(&failed, "error: boom\n", None).await.expect("finish b");
    assert_eq!(none, None, "no materialization for a step that built nothing");
    assert_eq!(
        store.list_steps(run.id).await.expect("list steps")[1],
        RunStep { log: "error: boom\n".to_owned(), ..failed }
    );
    // A step that does not exist: nothing is written, the materialization neither.
    let before = store.list_materializations(deployment.id, None, 100).await.expect("list").len();
    let missing = RunStep { id: StepId(i64::MAX), ..steps[1].clone() };
    let error = store
        .finish_step(&missing, "x", Some((&built, &provenance)))
        .await
        .expect_err("a missing step is not found");
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
    let after = store.list_materializations(deployment.id, None, 100).await.expect("list").len();
    assert_eq!(after, before, "the transaction kept nothing");
    let version = store.get_deployment(deployment.id).await.expect("get").version;
    assert_eq!(version, 1, "finishing a step is not a lifecycle change");
}

pub async fn runs_are_listed_newest_first_with_filters(store: &dyn Store) {
    let repo = repository("contract-run-list");
    let a =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b =
        store.ensure_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");

    let r1 = insert_run(store, a.id, &["x"], 10_000).await;
    let r2 = insert_run(store, b.id, &["x"], 20_000).await;
    let r3 = add_run(store, a.id, 30_000).await;
    let r4 = add_run(store, a.id, 40_000).await;
    patch_runs(
        store,
        a.id,
        vec![run_to(r1.id, RunStatus::Succeeded), run_to(r3.id, RunStatus::Failed)],
        50_000,
    )
    .await;
    let r3 = store.get_run(r3.id).await.expect("get r3");

    let list = |deployment_id: Option<DeploymentId>, statuses: &[RunStatus], limit: u32| {
        RunFilter { deployment_id, statuses: statuses.to_vec(), limit }
    };
    let of_a = store.list_runs(&list(Some(a.id), &[], 0)).await.expect("runs of a");
    assert_eq!(run_ids(&of_a), [r4.id, r3.id, r1.id], "newest first; no statuses means all");
    assert_eq!(of_a[1], r3, "listed runs are whole rows");
    let latest = store.list_runs(&list(Some(a.id), &[], 2)).await.expect("latest runs of a");
    assert_eq!(run_ids(&latest), [r4.id, r3.id], "the limit keeps the newest");
    let finished = store
        .list_runs(&list(Some(a.id), &[RunStatus::Succeeded, RunStatus::Failed], 0))
        .await
        .expect("finished runs of a");
    assert_eq!(run_ids(&finished), [r3.id, r1.id], "filtered by status");
    let of_b = store.list_runs(&list(Some(b.id), &[], 0)).await.expect("runs of b");
    assert_eq!(run_ids(&of_b), [r2.id], "filtered by deployment");

    let queued_runs = store
        .list_runs(&list(None, &[RunStatus::Queued], 0))
        .await
        .expect("queued runs everywhere");
    assert!(queued_runs.iter().all(|r| r.status == RunStatus::Queued), "only queued runs");
    assert!(
        queued_runs.windows(2).all(|pair| pair[0].created_at >= pair[1].created_at),
        "newest first across deployments"
    );
    let ours: Vec<RunId> = queued_runs
        .iter()
        .filter(|r| r.deployment_id == a.id || r.deployment_id == b.id)
        .map(|r| r.id)
        .collect();
    assert_eq!(ours, [r4.id, r2.id], "every deployment's runs without a deployment filter");
    let one = store.list_runs(&list(None, &[], 1)).await.expect("the newest run anywhere");
    assert_eq!(one.len(), 1, "the limit applies without filters too");
}

pub async fn materializations_are_listed_newest_first(store: &dyn Store) {
    let repo = repository("contract-materialize");
    let a =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b =
        store.ensure_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");
    let run_a = insert_run(store, a.id, &["orders", "revenue"], 3_000).await;
    let run_b = insert_run(store, b.id, &["orders"], 3_000).await;

    let m1 = materialization(a.id, run_a.id, "orders", 10_000);
    let m2 =
        Materialization { row_count: None, ..materialization(a.id, run_a.id, "revenue", 20_000) };
    let m3 = Materialization {
        commit: sha(2),
        duration_ms: 0,
        ..materialization(a.id, run_a.id, "orders", 30_000)
    };
    let m4 = materialization(b.id, run_b.id, "orders", 40_000);
    for m in [&m1, &m2, &m3, &m4] {
        store.record_materialization(m).await.expect("record");
    }

    let all = store.list_materializations(a.id, None, 0).await.expect("all of a");
    assert_eq!(all, [m3.clone(), m2.clone(), m1.clone()], "newest first, whole rows");
    let orders =
        store.list_materializations(a.id, Some(&key("orders")), 0).await.expect("orders of a");
    assert_eq!(orders, [m3.clone(), m1.clone()], "filtered by asset");
    let latest = store.list_materializations(a.id, None, 2).await.expect("latest of a");
    assert_eq!(latest, [m3.clone(), m2], "the limit keeps the newest");
    let latest_orders = store
        .list_materializations(a.id, Some(&key("orders")), 1)
        .await
        .expect("latest orders of a");
    assert_eq!(latest_orders, [m3], "asset filter and limit together");
    let unknown =
        store.list_materializations(a.id, Some(&key("Orders")), 0).await.expect("unknown asset");
    assert_eq!(unknown, [], "asset keys compare exactly");
    assert_eq!(
        store.list_materializations(b.id, None, 0).await.expect("all of b"),
        [m4],
        "filtered by deployment"
    );
}

/// The lifecycle record holds exactly what the lifecycle's rules read: every queued or
/// deploying revision, the head and the serving one (once each), and every queued or running
/// run; no finished history.
pub async fn the_lifecycle_reads_unfinished_work_head_and_serving(store: &dyn Store) {
    let repo = repository("contract-lifecycle");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let other = store
        .ensure_deployment(new_deployment(&repo, "b", "b", 1_000))
        .await
        .expect("create other");
    let empty = store.lifecycle(deployment.id).await.expect("the lifecycle of a new deployment");
    assert_eq!(
        (empty.deployment, empty.revisions, empty.runs),
        (deployment.clone(), vec![], vec![]),
        "a new deployment has nothing to read"
    );

    // 1 ready (serving), 2 failed, 3 superseded, 4 queued, 5 deploying, 6 failed (head).
    let superseded = NewRevision { status: RevisionStatus::Superseded, ..queued(3, 3) };
    let insert = LifecycleWrite {
        new_revisions: vec![
            queued(1, 1),
            queued(2, 2),
            superseded,
            queued(4, 4),
            queued(5, 5),
            queued(6, 6),
        ],
        new_runs: vec![
            new_run(1, &["x"]),
            new_run(1, &["x"]),
            new_run(1, &["x"]),
            new_run(1, &["x"]),
            new_run(1, &["x"]),
        ],
        ..change(deployment.id, 2_000)
    };
    let runs = apply_now(store, insert, "insert six revisions and five runs").await.runs;
    let lease = Lease { owner: "contract-lifecycle".to_owned(), until: 50_000 };
    let write = LifecycleWrite {
        revisions: vec![
            revision_to(1, RevisionStatus::Ready),
            revision_to(2, RevisionStatus::Failed),
            RevisionPatch {
                lease: Some(lease.clone()),
                ..revision_to(5, RevisionStatus::Deploying)
            },
            revision_to(6, RevisionStatus::Failed),
        ],
        runs: vec![
            run_to(runs[0].id, RunStatus::Succeeded),
            RunPatch { lease: Some(lease.clone()), ..run_to(runs[2].id, RunStatus::Running) },
            run_to(runs[3].id, RunStatus::Failed),
            run_to(runs[4].id, RunStatus::Canceled),
        ],
        deployment_patch: DeploymentPatch {
            head: Some(6),
            serving: Some(Some(1)),
            ..DeploymentPatch::default()
        },
        ..change(deployment.id, 3_000)
    };
    apply_now(store, write, "finish some, start some").await;
    // Another deployment's unfinished work is not this one's.
    let elsewhere = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![new_run(1, &["x"])],
        ..change(other.id, 3_000)
    };
    apply_now(store, elsewhere, "unfinished work elsewhere").await;

    let record = store.lifecycle(deployment.id).await.expect("the lifecycle");
    assert_eq!(
        record.deployment,
        store.get_deployment(deployment.id).await.expect("get"),
        "the whole deployment row"
    );
    assert_eq!(
        numbers(&record.revisions),
        [1, 4, 5, 6],
        "queued, deploying, head and serving, by number"
    );
    for revision in &record.revisions {
        assert_eq!(
            *revision,
            store.get_revision(revision.id).await.expect("get revision"),
            "whole revision rows"
        );
    }
    let mut active = record.runs.clone();
    active.sort_by_key(|r| r.id);
    assert_eq!(run_ids(&active), [runs[1].id, runs[2].id], "only queued and running runs");
    assert_eq!(active[1], store.get_run(runs[2].id).await.expect("get run"), "whole run rows");

    let same = DeploymentPatch { head: Some(1), ..DeploymentPatch::default() };
    apply_now(
        store,
        LifecycleWrite { deployment_patch: same, ..change(deployment.id, 4_000) },
        "head = serving",
    )
    .await;
    let record = store.lifecycle(deployment.id).await.expect("the lifecycle");
    assert_eq!(
        numbers(&record.revisions),
        [1, 4, 5],
        "a revision both head and serving is there once"
    );
    assert_eq!(record.deployment.version, 3, "three writes, three versions");
}

/// A heartbeat extends every lease its server holds (deploys, runs, teardowns) and no other
/// server's; it is not a lifecycle change, so no decision read before it turns stale.
pub async fn renewing_leases_extends_one_owners_leases_without_a_new_version(store: &dyn Store) {
    let repo = repository("contract-renew");
    let (ours, theirs) = ("contract-renew-ours", "contract-renew-theirs");
    let lease = |owner: &str| Lease { owner: owner.to_owned(), until: 10_000 };
    let deploys =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let closing =
        store.ensure_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");
    let foreign =
        store.ensure_deployment(new_deployment(&repo, "c", "c", 1_000)).await.expect("create c");

    let insert = LifecycleWrite {
        new_revisions: vec![queued(1, 1), queued(2, 2), queued(3, 3)],
        new_runs: vec![new_run(1, &["x"]), new_run(1, &["x"]), new_run(1, &["x"])],
        ..change(deploys.id, 2_000)
    };
    let inserted = apply_now(store, insert, "insert work").await;
    let start = LifecycleWrite {
        revisions: vec![
            RevisionPatch { lease: Some(lease(ours)), ..revision_to(1, RevisionStatus::Deploying) },
            RevisionPatch {
                lease: Some(lease(theirs)),
                ..revision_to(2, RevisionStatus::Deploying)
            },
        ],
        runs: vec![
            RunPatch {
                lease: Some(lease(ours)),
                ..run_to(inserted.runs[0].id, RunStatus::Running)
            },
            RunPatch {
                lease: Some(lease(theirs)),
                ..run_to(inserted.runs[1].id, RunStatus::Running)
            },
        ],
        ..change(deploys.id, 3_000)
    };
    apply_now(store, start, "start work under two servers' leases").await;
    let teardown = |owner: &str| DeploymentPatch {
        status: Some(DeploymentStatus::Closed),
        teardown: Some(Teardown::Running(lease(owner))),
        ..DeploymentPatch::default()
    };
    apply_now(
        store,
        LifecycleWrite { deployment_patch: teardown(ours), ..change(closing.id, 3_000) },
        "our teardown",
    )
    .await;
    apply_now(
        store,
        LifecycleWrite { deployment_patch: teardown(theirs), ..change(foreign.id, 3_000) },
        "their teardown",
    )
    .await;
    // Finished work keeps the lease it finished under (who did it), but it is never renewed.
    let start_more = LifecycleWrite {
        revisions: vec![RevisionPatch {
            lease: Some(lease(ours)),
            ..revision_to(3, RevisionStatus::Deploying)
        }],
        runs: vec![RunPatch {
            lease: Some(lease(ours)),
            ..run_to(inserted.runs[2].id, RunStatus::Running)
        }],
        ..change(deploys.id, 3_500)
    };
    apply_now(store, start_more, "start more of our work").await;
    let finish = LifecycleWrite {
        revisions: vec![revision_to(3, RevisionStatus::Ready)],
        runs: vec![run_to(inserted.runs[2].id, RunStatus::Succeeded)],
        ..change(deploys.id, 3_600)
    };
    apply_now(store, finish, "finish it").await;

    let mut before = Vec::new();
    for id in [deploys.id, closing.id, foreign.id] {
        before.push(store.get_deployment(id).await.expect("get before renewing"));
    }

    assert_eq!(
        store.renew_leases(ours, 20_000).await.expect("renew ours"),
        3,
        "a deploy, a run and a teardown"
    );
    let renewed = Some(Lease { owner: ours.to_owned(), until: 20_000 });
    assert_eq!(
        lease_of_revision(store, deploys.id, 1).await,
        renewed,
        "our deploy's lease is extended"
    );
    assert_eq!(
        lease_of_revision(store, deploys.id, 2).await,
        Some(lease(theirs)),
        "their deploy's lease is theirs alone"
    );
    assert_eq!(
        lease_of_revision(store, deploys.id, 3).await,
        Some(lease(ours)),
        "finished work's lease is not renewed"
    );
    assert_eq!(
        store.get_run(inserted.runs[0].id).await.expect("get run").lease,
        renewed,
        "our run's lease is extended"
    );
    assert_eq!(
        store.get_run(inserted.runs[1].id).await.expect("get run").lease,
        Some(lease(theirs)),
        "their run's lease is theirs alone"
    );
    assert_eq!(
        store.get_run(inserted.runs[2].id).await.expect("get run").lease,
        Some(lease(ours)),
        "a finished run's lease is not renewed"
    );
    let mut after = Vec::new();
    for id in [deploys.id, closing.id, foreign.id] {
        after.push(store.get_deployment(id).await.expect("get after renewing"));
    }
    assert_eq!(
        after[1].teardown,
        Teardown::Running(Lease { owner: ours.to_owned(), until: 20_000 }),
        "our teardown's lease is extended"
    );
    assert_eq!(after[2], before[2], "their teardown is untouched");
    let without_teardown = |d: &Deployment| Deployment { teardown: Teardown::Done, ..d.clone() };
    assert_eq!(
        after.iter().map(without_teardown).collect::<Vec<_>>(),
        before.iter().map(without_teardown).collect::<Vec<_>>(),
        "renewing is not a lifecycle change: no version moves, nothing else changes"
    );

    assert_eq!(
        store.renew_leases(ours, 500).await.expect("release ours"),
        3,
        "a lease in the past is still held, and renewed"
    );
    assert_eq!(
        lease_of_revision(store, deploys.id, 1).await,
        Some(Lease { owner: ours.to_owned(), until: 500 }),
        "releasing moves the lease into the past"
    );
    assert_eq!(
        store.renew_leases("contract-renew-nobody", 20_000).await.expect("renew nothing"),
        0,
        "a server holding nothing renews nothing"
    );
}

/// Webhook deliveries are recorded before they are answered, once per (source, delivery id),
/// and stay pending, oldest first, until processed.
pub async fn intake_records_each_delivery_once(store: &dyn Store) {
    let repo = repository("contract-intake");
    let hostile = "{\"ref\":\"x'; DROP TABLE intake; --\",\"ü\":\"🚀\\n\"}";
    let new_intake = |source: &str, delivery: Option<&str>, now: UnixMillis| NewIntake {
        source: source.to_owned(),
        delivery: delivery.map(str::to_owned),
        repository: repo.clone(),
        payload: format!("{{\"delivery\":{delivery:?},\"at\":{now}}}"),
        received_by: "contract-intake-server".to_owned(),
        now,
    };

    let first =
        NewIntake { payload: hostile.to_owned(), ..new_intake("github", Some("d-1"), 1_000) };
    let recorded = store
        .record_intake(first.clone())
        .await
        .expect("record")
        .expect("a new delivery is recorded");
    assert_eq!(
        recorded,
        Intake {
            id: recorded.id,
            source: "github".to_owned(),
            delivery: Some("d-1".to_owned()),
            repository: repo.clone(),
            payload: hostile.to_owned(),
            received_by: "contract-intake-server".to_owned(),
            received_at: 1_000,
            done_at: None,
        },
        "the delivery is recorded as given, received now, not done"
    );
    let replay = store
        .record_intake(new_intake("github", Some("d-1"), 2_000))
        .await
        .expect("record a replay");
    assert_eq!(replay, None, "a replayed delivery id is refused");
    let other_source = store
        .record_intake(new_intake("gitlab", Some("d-1"), 2_000))
        .await
        .expect("record")
        .expect("another source's id");
    let case = store
        .record_intake(new_intake("github", Some("D-1"), 2_000))
        .await
        .expect("record")
        .expect("ids compare exactly");
    let anonymous_1 = store
        .record_intake(new_intake("gitlab", None, 3_000))
        .await
        .expect("record")
        .expect("no delivery id");
    let anonymous_2 = store
        .record_intake(new_intake("gitlab", None, 3_000))
        .await
        .expect("record")
        .expect("no delivery id again");
    assert_ne!(anonymous_1.id, anonymous_2.id, "deliveries without an id are never deduplicated");

    let ours = |pending: Vec<Intake>| -> Vec<IntakeId> {
        pending.into_iter().filter(|i| i.repository == repo).map(|i| i.id).collect()
    };
    let pending = store.pending_intake().await.expect("pending");
    assert!(
        pending.windows(2).all(|pair| pair[0].received_at <= pair[1].received_at),
        "oldest first"
    );
    assert_eq!(
        ours(pending.clone()),
        [recorded.id, other_source.id, case.id, anonymous_1.id, anonymous_2.id],
        "oldest first, ties in recording order"
    );
    assert_eq!(
        pending.iter().find(|i| i.id == recorded.id),
        Some(&recorded),
        "pending rows are whole rows"
    );

    store.finish_intake(recorded.id, 4_000).await.expect("finish");
    store.finish_intake(anonymous_1.id, 4_000).await.expect("finish");
    assert_eq!(
        ours(store.pending_intake().await.expect("pending")),
        [other_source.id, case.id, anonymous_2.id],
        "processed deliveries are no longer pending"
    );
    let late_replay = store
        .record_intake(new_intake("github", Some("d-1"), 5_000))
        .await
        .expect("record a late replay");
    assert_eq!(late_replay, None, "a delivery id is refused for good, also after it was processed");
    assert_eq!(
        ours(store.pending_intake().await.expect("pending")),
        [other_source.id, case.id, anonymous_2.id]
    );
}

pub async fn variables_are_set_replaced_listed_and_unset_by_their_key(store: &dyn Store) {
    let repo = repository("contract-variables");
    let other = repository("contract-variables-2");
    let variable = |repo: &RepositoryName, name: &str, scope, branch: Option<&str>, value: &str| {
        StoredVariable {
            repository: repo.clone(),
            name: name.to_owned(),
            scope,
            branch: branch.map(self::branch),
            value: value.to_owned(),
            secret: true,
            updated_at: 1_000,
        }
    };
    let hostile = "p@ss'; DROP TABLE variables; --\n\u{1F511} \\ $1 ?";
    let all_branches = variable(&repo, "API_KEY", VariableScope::Branches, None, "for branches");
    let one_branch =
        variable(&repo, "API_KEY", VariableScope::Branches, Some("feature/1"), "for feature/1");
    let production = variable(&repo, "API_KEY", VariableScope::Production, None, hostile);
    let elsewhere = variable(&other, "API_KEY", VariableScope::Local, None, "local");
    for v in [&one_branch, &production, &all_branches, &elsewhere] {
        store.set_variable(v).await.expect("set");
    }
    assert_eq!(
        store.list_variables(Some(&repo)).await.expect("list"),
        vec![production.clone(), all_branches.clone(), one_branch.clone()],
        "one row per key (one branch's apart from every branch's), values exact, sorted by name, scope, branch"
    );
    let everything = store.list_variables(None).await.expect("list all");
    assert!(everything.contains(&elsewhere) && everything.contains(&production), "{everything:?}");

    // Setting the same key replaces value, secrecy and time; nothing else changes.
    let replaced = StoredVariable {
        value: "plain now".to_owned(),
        secret: false,
        updated_at: 2_000,
        ..production.clone()
    };
    store.set_variable(&replaced).await.expect("replace");
    assert_eq!(
        store.list_variables(Some(&repo)).await.expect("list"),
        vec![replaced.clone(), all_branches.clone(), one_branch.clone()]
    );

    // Unset removes exactly its key; a key that is not there is NotFound.
    store
        .unset_variable(&repo, "API_KEY", VariableScope::Branches, Some(&branch("feature/1")))
        .await
        .expect("unset one branch's");
    assert_eq!(
        store.list_variables(Some(&repo)).await.expect("list"),
        vec![replaced.clone(), all_branches.clone()]
    );
    let missing =
        store.unset_variable(&repo, "API_KEY", VariableScope::Local, None).await.expect_err("gone");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    assert_eq!(store.list_variables(Some(&other)).await.expect("list"), vec![elsewhere]);
}

pub async fn missing_rows_are_not_found(store: &dyn Store) {
    let repo = repository("contract-missing");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let run = insert_run(store, deployment.id, &["a"], 3_000).await;
    let step = store.list_steps(run.id).await.expect("list steps").remove(0);
    let revision = store.get_revision(run.revision_id).await.expect("get revision");

    // Far beyond anything the other stories create.
    let missing = 1_i64 << 50;
    let missing_deployment = DeploymentId(missing);
    let missing_run = RunId(missing);

    assert_not_found(store.get_deployment(missing_deployment).await, "get_deployment");
    assert_not_found(store.lifecycle(missing_deployment).await, "lifecycle");
    assert_not_found(
        store.apply(LifecycleWrite { version: 0, ..change(missing_deployment, 4_000) }).await,
        "apply to a missing deployment",
    );
    assert_not_found(
        store
            .apply(LifecycleWrite {
                version: 7,
                new_revisions: vec![queued(1, 1)],
                ..change(missing_deployment, 4_000)
            })
            .await,
        "apply to a missing deployment, whatever its version",
    );
    assert_not_found(store.set_pinned(missing_deployment, true, 4_000).await, "set_pinned");
    assert_not_found(store.get_revision(crate::RevisionId(missing)).await, "get_revision");
    assert_not_found(store.get_run(missing_run).await, "get_run");
    assert_not_found(
        store.update_step(&RunStep { id: StepId(missing), ..step.clone() }).await,
        "update_step",
    );
    assert_not_found(store.append_step_log(StepId(missing), "x").await, "append_step_log");
    assert_not_found(store.finish_intake(IntakeId(missing), 4_000).await, "finish_intake");
    assert_not_found(
        store
            .record_materialization(&materialization(missing_deployment, run.id, "a", 4_000))
            .await,
        "record_materialization of a missing deployment",
    );
    assert_not_found(
        store
            .record_materialization(&materialization(deployment.id, missing_run, "a", 4_000))
            .await,
        "record_materialization of a missing run",
    );

    // A row's references stay inside its deployment: another deployment's run is, for this
    // deployment, missing.
    let other = store
        .ensure_deployment(new_deployment(&repo, "other", "other", 1_000))
        .await
        .expect("create other");
    let other_run = insert_run(store, other.id, &["a"], 3_000).await;
    assert_not_found(
        store
            .record_materialization(&materialization(deployment.id, other_run.id, "a", 4_000))
            .await,
        "record_materialization of another deployment's run",
    );

    // Refused writes change nothing.
    assert_eq!(
        store.get_deployment(deployment.id).await.expect("get"),
        deployment_after_one_write(&deployment, 3_000)
    );
    assert_eq!(store.list_revisions(deployment.id, 0).await.expect("list revisions"), [revision]);
    assert_eq!(list_runs_of(store, deployment.id).await, [run]);
    assert_eq!(store.list_materializations(deployment.id, None, 0).await.expect("list"), []);

    // Lists of a missing parent are empty.
    assert_eq!(store.list_revisions(missing_deployment, 0).await.expect("list revisions"), []);
    assert_eq!(store.list_steps(missing_run).await.expect("list steps"), []);
    assert_eq!(
        store
            .list_materializations(missing_deployment, None, 0)
            .await
            .expect("list materializations"),
        []
    );
    assert_eq!(
        store.find_revision_by_commit(missing_deployment, &sha(1)).await.expect("find revision"),
        None
    );
    assert_eq!(list_runs_of(store, missing_deployment).await, []);
}

pub async fn hostile_strings_round_trip_exactly(store: &dyn Store) {
    let repo = repository("contract-hostile");
    let long_ascii: String = "a'\";-".repeat(200);
    let long_unicode: String = "é".repeat(500);
    let branches = [
        "x'; DROP TABLE deployments; --",
        "\"double\" and 'single' quotes",
        r"back\slash\\ and \x00 as text",
        "ünïcødé/ブランチ/🚀",
        "%",
        "_",
        "feature/%_*?[]",
        " leading and trailing spaces ",
        long_ascii.as_str(),
        long_unicode.as_str(),
    ];
    assert_eq!(long_ascii.chars().count(), 1000);
    let mut created = Vec::new();
    for (i, text) in branches.iter().enumerate() {
        let branch = BranchName::new(text).expect("a valid, hostile branch name");
        let deployment_name = deployment_name_for_branch(&branch, |_| false);
        let now = 1_000 + i as UnixMillis;
        let new = NewDeployment {
            repository: repo.clone(),
            name: deployment_name.clone(),
            kind: DeploymentKind::Branch,
            branch: branch.clone(),
            pull_request: Some(PullRequest {
                id: text.to_string(),
                url: format!("https://git.example/?q={text}"),
                status: PullRequestStatus::Open,
            }),
            base_deployment: None,
            now,
        };
        let deployment =
            store.ensure_deployment(new).await.expect("create a deployment for a hostile branch");
        assert_eq!(deployment.branch.as_str(), *text, "the branch is stored verbatim");
        created.push(deployment);
    }
    for (deployment, text) in created.iter().zip(branches) {
        let found = store
            .find_deployment_by_branch(&repo, &deployment.branch)
            .await
            .expect("find by hostile branch");
        assert_eq!(
            found.as_ref(),
            Some(deployment),
            "a hostile branch {text:?} finds exactly its deployment"
        );
        let got = store.get_deployment(deployment.id).await.expect("get");
        assert_eq!(got.branch.as_str(), text, "the branch round-trips exactly");
        assert_eq!(
            got.pull_request.as_ref().map(|p| p.id.as_str()),
            Some(text),
            "the pull request id round-trips exactly"
        );
    }
    let all = store.list_deployments(&including_closed(&repo)).await.expect("list");
    assert_eq!(all.len(), branches.len(), "no hostile string broke another row");
    for near_miss in [
        "x'; drop table deployments; --",
        "x'; DROP TABLE deployments; -- ",
        "%%",
        "ünïcødé/ブランチ/🚀 ",
    ] {
        let found = store
            .find_deployment_by_branch(&repo, &branch(near_miss))
            .await
            .expect("find a near miss");
        assert_eq!(
            found, None,
            "{near_miss:?} matches no branch: comparison is exact, without patterns"
        );
    }

    let hostile = "'); DELETE FROM revisions; --\n\"quoted\"\t\\ ünïcødé 🚀 %_";
    let deployment = &created[0];
    let details = CommitDetails {
        sha: sha(1),
        message: format!("Subject with 'quotes'\n\nBody; {hostile}\n"),
        author_name: "Zoë O'Brien; --".to_owned(),
        author_email: "zoe+\"test\"@exämple.org".to_owned(),
        time: -1,
    };
    let new_revision =
        NewRevision { commit: details.clone(), error: Some(hostile.to_owned()), ..queued(1, 1) };
    let new_run = NewRun { selection: hostile.to_owned(), ..new_run(1, &["a"]) };
    let close = DeploymentPatch {
        status: Some(DeploymentStatus::Closed),
        close_reason: Some(hostile.to_owned()),
        ..DeploymentPatch::default()
    };
    let write = LifecycleWrite {
        new_revisions: vec![new_revision],
        new_runs: vec![new_run],
        deployment_patch: close,
        ..change(deployment.id, 2_000)
    };
    let Written { revisions, runs, .. } = apply_now(store, write, "a write of hostile text").await;
    assert_eq!(
        store.get_deployment(deployment.id).await.expect("get").close_reason.as_deref(),
        Some(hostile),
        "the close reason round-trips"
    );
    assert_eq!(revisions[0].commit, details, "commit details round-trip exactly");
    assert_eq!(revisions[0].error.as_deref(), Some(hostile));
    let output = DeployOutput {
        diagnostics_json: Some(format!("[{{\"message\":{hostile:?}}}]")),
        changes_json: Some(hostile.to_owned()),
        ..DeployOutput::default()
    };
    let failed = RevisionPatch {
        error: Some(format!("{hostile}{long_unicode}")),
        output: Some(output.clone()),
        ..revision_to(1, RevisionStatus::Failed)
    };
    patch_revisions(store, deployment.id, vec![failed], 3_000).await;
    let stored = store.get_revision(revisions[0].id).await.expect("get revision");
    assert_eq!(
        (stored.diagnostics_json, stored.changes_json),
        (output.diagnostics_json, output.changes_json),
        "the output round-trips"
    );
    assert_eq!(stored.error, Some(format!("{hostile}{long_unicode}")));

    assert_eq!(store.get_run(runs[0].id).await.expect("get run").selection, hostile);
    let mut step = store.list_steps(runs[0].id).await.expect("list steps").remove(0);
    store.append_step_log(step.id, hostile).await.expect("append hostile log");
    store.append_step_log(step.id, &long_ascii).await.expect("append long log");
    step.error = Some(hostile.to_owned());
    store.update_step(&step).await.expect("update with hostile error");
    let stored = store.list_steps(runs[0].id).await.expect("list steps").remove(0);
    assert_eq!(stored.error.as_deref(), Some(hostile));
    assert_eq!(stored.log, format!("{hostile}{long_ascii}"), "logs round-trip exactly");
}

/// Two writers push to one deployment at once, each 25 times, each one reading the lifecycle,
/// inserting the next number and moving the head to it, and reading again when stale. No push
/// is lost or doubled: 50 revisions numbered 1 to 50, and one version per applied write.
pub async fn concurrent_writers_never_lose_a_write(store: &dyn Store) {
    const PUSHES_PER_WRITER: u32 = 25;
    let repo = repository("contract-race-push");
    let deployment = store
        .ensure_deployment(new_deployment(&repo, "busy", "busy", 1_000))
        .await
        .expect("create");

    let writer = |writer: u32| -> Pin<Box<dyn Future<Output = (Vec<i64>, u32)> + '_>> {
        Box::pin(async move {
            let (mut versions, mut stale) = (Vec::new(), 0);
            while versions.len() < PUSHES_PER_WRITER as usize {
                let record = store.lifecycle(deployment.id).await.expect("read the lifecycle");
                let next = record.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
                let write = LifecycleWrite {
                    version: record.deployment.version,
                    new_revisions: vec![queued(next, writer * 1_000 + versions.len() as u32)],
                    deployment_patch: DeploymentPatch {
                        head: Some(next),
                        pushed: true,
                        ..DeploymentPatch::default()
                    },
                    ..change(deployment.id, 2_000 + UnixMillis::from(next))
                };
                match store
                    .apply(write)
                    .await
                    .expect("a push on a version read just before is written or stale")
                {
                    Applied::Done { version, revisions, .. } => {
                        assert_eq!(numbers(&revisions), [next], "the push inserted its number");
                        versions.push(version);
                    }
                    Applied::Stale => stale += 1,
                    Applied::Limited(reason) => panic!("limited without limits: {reason}"),
                }
            }
            (versions, stale)
        })
    };
    let outcomes = all_at_once(vec![writer(1), writer(2)]).await;

    let stale: u32 = outcomes.iter().map(|(_, stale)| stale).sum();
    eprintln!("contract: two concurrent writers retried {stale} stale writes for 50 pushes");
    let mut versions: Vec<i64> = outcomes.into_iter().flat_map(|(versions, _)| versions).collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=50).collect::<Vec<i64>>(),
        "every applied write got a version of its own, none skipped"
    );
    let revisions = store.list_revisions(deployment.id, 0).await.expect("list revisions");
    assert_eq!(
        numbers(&revisions),
        (1..=50).rev().collect::<Vec<u32>>(),
        "50 revisions numbered 1 to 50: no gap, no duplicate"
    );
    let after = store.get_deployment(deployment.id).await.expect("get");
    assert_eq!(after.version, 50, "the version counts the applied writes");
    assert_eq!(after.head_revision, Some(revisions[0].id), "the head is the last push");
}

/// The first deliveries of a new branch, handled at once by several servers, all end up with
/// the one deployment of the branch.
pub async fn concurrent_first_deliveries_share_one_deployment(store: &dyn Store) {
    let repo = repository("contract-race-ensure");
    let deliveries = (0..8)
        .map(|i| -> Pin<Box<dyn Future<Output = StoreResult<Deployment>> + '_>> {
            let new = new_deployment(&repo, "feature-1", "feature/1", 1_000 + i);
            Box::pin(store.ensure_deployment(new))
        })
        .collect();
    let ensured = all_at_once(deliveries).await;
    let ensured: Vec<Deployment> = ensured
        .into_iter()
        .map(|d| d.expect("a concurrent first delivery gets the deployment"))
        .collect();
    let ids: std::collections::BTreeSet<DeploymentId> = ensured.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), 1, "every delivery got the same deployment: {ids:?}");
    let all = store.list_deployments(&including_closed(&repo)).await.expect("list");
    assert_eq!(all.len(), 1, "one deployment was created");
    assert!(ensured.iter().all(|d| *d == all[0]), "and each delivery got its whole row");
}

/// Two servers claim the same queued revision, and then the same queued run, each from the
/// version both read: one claim applies, the other is stale, and the winner's lease holds.
pub async fn concurrent_claims_have_one_winner(store: &dyn Store) {
    let repo = repository("contract-race-claim");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let write = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![new_run(1, &["x"])],
        ..change(deployment.id, 2_000)
    };
    let Written { revisions, runs, .. } =
        apply_now(store, write, "queue a revision and a run").await;
    let servers = ["contract-race-claim-a", "contract-race-claim-b"];
    let lease = |owner: &str| Lease { owner: owner.to_owned(), until: 60_000 };

    let read = store.lifecycle(deployment.id).await.expect("both servers read the lifecycle");
    let claims = servers
        .iter()
        .map(|owner| -> Pin<Box<dyn Future<Output = StoreResult<Applied>> + '_>> {
            let claim = RevisionPatch {
                lease: Some(lease(owner)),
                ..revision_to(1, RevisionStatus::Deploying)
            };
            Box::pin(store.apply(LifecycleWrite {
                version: read.deployment.version,
                revisions: vec![claim],
                ..change(deployment.id, 3_000)
            }))
        })
        .collect();
    let winner = one_winner(all_at_once(claims).await, &servers, "claiming the revision");
    let claimed = store.get_revision(revisions[0].id).await.expect("get revision");
    assert_eq!(
        (claimed.status, claimed.lease),
        (RevisionStatus::Deploying, Some(lease(winner))),
        "the winner deploys it"
    );
    assert_eq!(
        store.get_deployment(deployment.id).await.expect("get").version,
        read.deployment.version + 1,
        "one claim, one version"
    );

    let read = store.lifecycle(deployment.id).await.expect("both servers read the lifecycle again");
    let claims = servers
        .iter()
        .map(|owner| -> Pin<Box<dyn Future<Output = StoreResult<Applied>> + '_>> {
            let claim =
                RunPatch { lease: Some(lease(owner)), ..run_to(runs[0].id, RunStatus::Running) };
            Box::pin(store.apply(LifecycleWrite {
                version: read.deployment.version,
                runs: vec![claim],
                ..change(deployment.id, 4_000)
            }))
        })
        .collect();
    let winner = one_winner(all_at_once(claims).await, &servers, "claiming the run");
    let claimed = store.get_run(runs[0].id).await.expect("get run");
    assert_eq!(
        (claimed.status, claimed.lease),
        (RunStatus::Running, Some(lease(winner))),
        "the winner runs it"
    );
}

/// A schedule's record is inserted once and switched with `since` moving only when it is switched
/// on; a tick is claimed by exactly one caller (also when several claim it at once), a manual tick
/// at the same time is another tick, ticks are listed newest first and deleting the deployment
/// removes them.
pub async fn schedules_are_switched_and_each_tick_is_claimed_once(store: &dyn Store) {
    let repo = repository("contract-schedules");
    let deployment =
        store.ensure_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let other =
        store.ensure_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create");
    let hostile = "nightly'; DROP TABLE schedule_ticks; --🚀";
    let state =
        |schedule: &str, enabled: bool, since: UnixMillis, updated_at: UnixMillis| ScheduleState {
            deployment_id: deployment.id,
            schedule: schedule.to_owned(),
            enabled,
            since,
            updated_at,
        };
    let first = store.ensure_schedule_state(deployment.id, hostile, false, 2_000).await;
    assert_eq!(first.expect("ensure"), state(hostile, false, 2_000, 2_000));
    let again = store.ensure_schedule_state(deployment.id, hostile, true, 9_000).await;
    assert_eq!(again.expect("ensure"), state(hostile, false, 2_000, 2_000), "kept as it was");
    let on = store.set_schedule_enabled(deployment.id, hostile, true, 3_000).await;
    assert_eq!(on.expect("on"), state(hostile, true, 3_000, 3_000), "on: owed from now");
    let still_on = store.set_schedule_enabled(deployment.id, hostile, true, 4_000).await;
    assert_eq!(still_on.expect("on"), state(hostile, true, 3_000, 4_000), "on again: same since");
    let off = store.set_schedule_enabled(deployment.id, hostile, false, 5_000).await;
    assert_eq!(off.expect("off"), state(hostile, false, 3_000, 5_000));
    let fresh = store.set_schedule_enabled(deployment.id, "hourly", true, 6_000).await;
    assert_eq!(fresh.expect("new and on"), state("hourly", true, 6_000, 6_000));
    assert_eq!(
        store.schedule_states(deployment.id).await.expect("states"),
        vec![state("hourly", true, 6_000, 6_000), state(hostile, false, 3_000, 5_000)],
        "by name"
    );
    assert_eq!(store.schedule_states(other.id).await.expect("states"), vec![]);

    let tick = |schedule: &str, tick_at: UnixMillis, manual: bool, by: &str| NewTick {
        deployment_id: deployment.id,
        schedule: schedule.to_owned(),
        tick_at,
        manual,
        missed: 3,
        claimed_by: by.to_owned(),
        now: tick_at + 5,
    };
    assert_eq!(store.last_scheduled_tick(deployment.id, "hourly").await.expect("last"), None);
    let servers = ["contract-schedules-a", "contract-schedules-b"];
    let claims = servers
        .iter()
        .map(|by| -> Pin<Box<dyn Future<Output = StoreResult<Option<ScheduleTick>>> + '_>> {
            Box::pin(store.claim_tick(tick("hourly", 10_000, false, by)))
        })
        .collect();
    let results: Vec<_> =
        all_at_once(claims).await.into_iter().map(|r| r.expect("claim")).collect();
    let won: Vec<&ScheduleTick> = results.iter().flatten().collect();
    assert_eq!(won.len(), 1, "one of two servers claims the tick: {results:?}");
    let claimed = won[0].clone();
    assert!(servers.contains(&claimed.claimed_by.as_str()));
    assert_eq!(
        claimed,
        ScheduleTick {
            id: claimed.id,
            deployment_id: deployment.id,
            schedule: "hourly".to_owned(),
            tick_at: 10_000,
            manual: false,
            missed: 3,
            status: TickStatus::Claimed,
            run_id: None,
            message: None,
            claimed_by: claimed.claimed_by.clone(),
            claimed_at: 10_005,
        }
    );
    let again = store.claim_tick(tick("hourly", 10_000, false, "late")).await.expect("claim");
    assert_eq!(again, None, "claimed before");
    let manual = store.claim_tick(tick("hourly", 10_000, true, "x")).await.expect("claim");
    let manual = manual.expect("a manual tick at the same time is another tick");
    let later = store.claim_tick(tick("hourly", 20_000, false, "x")).await.expect("claim");
    let later = later.expect("a later tick");
    let elsewhere = store.claim_tick(tick(hostile, 30_000, true, "x")).await.expect("claim");
    elsewhere.expect("another schedule's tick");
    assert_eq!(
        store.last_scheduled_tick(deployment.id, "hourly").await.expect("last"),
        Some(20_000)
    );
    assert_eq!(
        store.last_scheduled_tick(deployment.id, hostile).await.expect("last"),
        None,
        "manual ticks do not count"
    );

    let run = insert_run(store, deployment.id, &["x"], 11_000).await;
    store.finish_tick(claimed.id, TickStatus::Started, Some(run.id), None).await.expect("started");
    assert_eq!(store.last_tick_run(deployment.id, "hourly").await.expect("last run"), Some(run.id));
    assert_eq!(store.last_tick_run(deployment.id, hostile).await.expect("last run"), None);
    let why = "run 7 of `hourly` is still running";
    store.finish_tick(later.id, TickStatus::Skipped, None, Some(why)).await.expect("skipped");
    let listed = store.list_ticks(deployment.id, Some("hourly"), 0).await.expect("list");
    let summary: Vec<_> = listed
        .iter()
        .map(|t| (t.tick_at, t.manual, t.status, t.run_id, t.message.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (20_000, false, TickStatus::Skipped, None, Some(why)),
            (10_000, true, TickStatus::Claimed, None, None),
            (10_000, false, TickStatus::Started, Some(run.id), None),
        ],
        "newest first, ties by insertion (newest first)"
    );
    assert_eq!(store.list_ticks(deployment.id, None, 2).await.expect("list").len(), 2);
    assert_eq!(store.list_ticks(deployment.id, None, 0).await.expect("list").len(), 4);
    assert_eq!(store.list_ticks(deployment.id, None, 1).await.expect("list")[0].tick_at, 30_000);
    assert_eq!(store.list_ticks(other.id, None, 0).await.expect("list"), vec![]);
    assert_eq!(manual.schedule, "hourly");
    assert_not_found(
        store.finish_tick(crate::TickId(i64::MAX), TickStatus::Failed, None, None).await,
        "finish_tick",
    );

    // A server that stopped between claiming and starting: its claimed ticks fail, no one else's.
    let stuck = store.claim_tick(tick("hourly", 50_000, false, "contract-schedules-gone")).await;
    let stuck = stuck.expect("claim").expect("a new tick");
    let other_server =
        store.claim_tick(tick("hourly", 60_000, false, "contract-schedules-c")).await;
    other_server.expect("claim").expect("a new tick");
    let why = "stopped";
    assert_eq!(
        store.abandon_claimed_ticks("contract-schedules-gone", why).await.expect("abandon"),
        1
    );
    assert_eq!(
        store.abandon_claimed_ticks("contract-schedules-gone", why).await.expect("again"),
        0
    );
    let listed = store.list_ticks(deployment.id, Some("hourly"), 2).await.expect("list");
    let states: Vec<_> = listed.iter().map(|t| (t.id, t.status, t.message.as_deref())).collect();
    assert_eq!(
        states,
        vec![(listed[0].id, TickStatus::Claimed, None), (stuck.id, TickStatus::Failed, Some(why)),]
    );

    let delete = LifecycleWrite { delete: true, ..change(deployment.id, 40_000) };
    apply_now(store, delete, "delete the deployment").await;
    assert_eq!(store.list_ticks(deployment.id, None, 0).await.expect("list"), vec![]);
    assert_eq!(store.schedule_states(deployment.id).await.expect("states"), vec![]);
}

/// Tag limits hold across deployments, whose claims no version check orders: of two concurrent
/// claims of runs tagged `dbt=nightly` in two deployments under a limit of 1, one is written and
/// the other is `Limited` with nothing written; a run with another value is not counted; a
/// freed slot is taken by the next claim.
pub async fn concurrent_claims_keep_tag_limits_across_deployments(store: &dyn Store) {
    let repo = repository("contract-race-tags");
    let nightly = vec![("dbt".to_owned(), "nightly".to_owned())];
    let hourly = vec![("dbt".to_owned(), "hourly".to_owned())];
    let limits =
        vec![TagLimit { key: "dbt".to_owned(), value: Some("nightly".to_owned()), limit: 1 }];
    let mut queued_runs = Vec::new();
    for (name, tags) in [("a", &nightly), ("b", &nightly), ("c", &hourly)] {
        let deployment = store
            .ensure_deployment(new_deployment(&repo, name, name, 1_000))
            .await
            .expect("create");
        let write = LifecycleWrite {
            new_revisions: vec![queued(1, 1)],
            new_runs: vec![NewRun { tags: tags.clone(), ..new_run(1, &["x"]) }],
            ..change(deployment.id, 2_000)
        };
        let Written { runs, .. } = apply_now(store, write, "queue a tagged run").await;
        queued_runs.push((deployment.id, runs[0].id));
    }
    let lease = Lease { owner: "contract-race-tags".to_owned(), until: 60_000 };
    let claim = |deployment: DeploymentId, run: RunId, version: i64| LifecycleWrite {
        version,
        runs: vec![RunPatch { lease: Some(lease.clone()), ..run_to(run, RunStatus::Running) }],
        run_limits: limits.clone(),
        ..change(deployment, 3_000)
    };
    let version = |deployment: DeploymentId| async move {
        store.get_deployment(deployment).await.expect("get").version
    };
    let (a, b, c) = (queued_runs[0], queued_runs[1], queued_runs[2]);
    let (version_a, version_b) = (version(a.0).await, version(b.0).await);
    let claims: Vec<Pin<Box<dyn Future<Output = StoreResult<Applied>> + '_>>> = vec![
        Box::pin(store.apply(claim(a.0, a.1, version_a))),
        Box::pin(store.apply(claim(b.0, b.1, version_b))),
    ];
    let outcomes = all_at_once(claims).await;
    let done: Vec<usize> =
        (0..2).filter(|i| matches!(outcomes[*i], Ok(Applied::Done { .. }))).collect();
    assert_eq!(done.len(), 1, "exactly one of two nightly claims runs: {outcomes:?}");
    let (winner, loser) = if done[0] == 0 { (a, b) } else { (b, a) };
    let limited = &outcomes[1 - done[0]];
    assert!(
        matches!(limited, Ok(Applied::Limited(reason)) if reason.contains("dbt=nightly (limit 1)")),
        "the other is limited and says by what: {limited:?}"
    );
    let left = store.get_run(loser.1).await.expect("get run");
    assert_eq!((left.status, left.lease), (RunStatus::Queued, None), "nothing of it was written");
    assert_eq!(
        store.get_deployment(loser.0).await.expect("get").version,
        if loser == a { version_a } else { version_b },
        "a limited write bumps no version"
    );

    // Another value of the tag is not counted against `dbt=nightly`.
    let written = store.apply(claim(c.0, c.1, version(c.0).await)).await.expect("claim c");
    assert!(matches!(written, Applied::Done { .. }), "{written:?}");

    // The slot frees when the winner ends; then the waiting run starts.
    let end = LifecycleWrite {
        version: version(winner.0).await,
        runs: vec![run_to(winner.1, RunStatus::Succeeded)],
        ..change(winner.0, 4_000)
    };
    assert!(matches!(store.apply(end).await.expect("end"), Applied::Done { .. }));
    let written =
        store.apply(claim(loser.0, loser.1, version(loser.0).await)).await.expect("claim");
    assert!(matches!(written, Applied::Done { .. }), "{written:?}");
    assert_eq!(store.get_run(loser.1).await.expect("get").status, RunStatus::Running);
}

// Helpers: short constructors for valid test data, so each story shows only what it is about.

/// What an applied write returned.
struct Written {
    version: i64,
    revisions: Vec<Revision>,
    runs: Vec<Run>,
}

/// A write of nothing yet, at `now`; [`apply_now`] fills in the current version.
/// Provenance round-trips exactly; `current_materializations` is the last recorded per asset
/// (with or without provenance); a promotion's origin and the reads survive the deletion of the
/// branch they name; a write that fails keeps nothing of itself.
pub async fn materializations_keep_their_provenance(store: &dyn Store) {
    let repo = repository("contract-provenance");
    let prod = store
        .ensure_deployment(NewDeployment {
            kind: DeploymentKind::Production,
            ..new_deployment(&repo, "prod", "main", 1_000)
        })
        .await
        .expect("create prod");
    let feature = store
        .ensure_deployment(new_deployment(&repo, "feature-x", "feature-x", 1_000))
        .await
        .expect("create feature-x");
    let prod_run = insert_run(store, prod.id, &["orders", "revenue"], 2_000).await;
    let branch_run = insert_run(store, feature.id, &["orders", "revenue"], 2_000).await;
    let fingerprint = |n: u8| Fingerprint::from_hex(&format!("{n:02x}").repeat(32)).expect("hex");
    let upstream = |k: &str, f: u8, read: Option<(MaterializationId, DeploymentId, RunId)>| {
        UpstreamProvenance {
            key: key(k),
            fingerprint: fingerprint(f),
            read: read.map(|(id, deployment_id, run_id)| ReadMaterialization {
                id,
                deployment_id,
                run_id,
            }),
        }
    };
    let provenance = |f: u8, code: &str, upstream: Vec<UpstreamProvenance>| Provenance {
        fingerprint: fingerprint(f),
        code_version: code.to_owned(),
        partitions: String::new(),
        upstream,
        promoted_from: None,
        built_against: None,
    };
    let record = |m: Materialization, p: Provenance| async move {
        store.record_provenance(&m, &p).await.expect("record with provenance")
    };

    // Production builds orders from a source, then revenue reading it.
    let p_orders_old = record(
        materialization(prod.id, prod_run.id, "orders", 10_000),
        provenance(1, "v0", vec![upstream("raw_orders", 9, None)]),
    )
    .await;
    let p_revenue = record(
        materialization(prod.id, prod_run.id, "revenue", 11_000),
        provenance(
            2,
            "v0",
            vec![
                upstream("orders", 1, Some((p_orders_old, prod.id, prod_run.id))),
                upstream("customers", 3, None),
            ],
        ),
    )
    .await;
    // The branch builds its own orders and a revenue reading it and production's customers.
    let b_orders = record(
        materialization(feature.id, branch_run.id, "orders", 12_000),
        Provenance {
            partitions: "daily from 2024-01-01".to_owned(),
            built_against: Some(ReadMaterialization {
                id: p_orders_old,
                deployment_id: prod.id,
                run_id: prod_run.id,
            }),
            ..provenance(4, "v1 'quoted' \u{e9}", vec![upstream("raw_orders", 9, None)])
        },
    )
    .await;
    let branch_revenue = provenance(
        5,
        "v0",
        // Out of order on purpose: read back sorted by key.
        vec![
            upstream("orders", 4, Some((b_orders, feature.id, branch_run.id))),
            upstream("customers", 3, Some((p_revenue, prod.id, prod_run.id))),
        ],
    );
    let b_revenue = record(
        materialization(feature.id, branch_run.id, "revenue", 13_000),
        branch_revenue.clone(),
    )
    .await;
    assert!(p_orders_old < p_revenue && p_revenue < b_orders && b_orders < b_revenue);

    let got = store.get_materialization(b_revenue).await.expect("get");
    assert_eq!(got.id, b_revenue);
    assert_eq!(got.materialization, materialization(feature.id, branch_run.id, "revenue", 13_000));
    let mut sorted = branch_revenue.clone();
    sorted.upstream.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got.provenance, Some(sorted.clone()), "provenance round-trips, reads by key");
    let orders = store.get_materialization(b_orders).await.expect("get orders");
    assert_eq!(
        orders.provenance.as_ref().map(|p| (p.code_version.as_str(), p.partitions.as_str())),
        Some(("v1 'quoted' \u{e9}", "daily from 2024-01-01"))
    );
    assert_eq!(
        orders.provenance.as_ref().and_then(|p| p.built_against.clone()),
        Some(ReadMaterialization { id: p_orders_old, deployment_id: prod.id, run_id: prod_run.id }),
        "the production materialization a branch built against round-trips"
    );

    // Production refreshes orders (a newer row of the same asset) and promotes the branch's
    // revenue: the current ones are the last recorded, by key.
    let p_orders = record(
        materialization(prod.id, prod_run.id, "orders", 14_000),
        provenance(1, "v0", vec![upstream("raw_orders", 9, None)]),
    )
    .await;
    let promoted = Provenance {
        promoted_from: Some(PromotedFrom {
            materialization: ReadMaterialization {
                id: b_revenue,
                deployment_id: feature.id,
                run_id: branch_run.id,
            },
            deployment: name("feature-x"),
        }),
        ..sorted.clone()
    };
    // Recorded with an earlier clock than the refresh: "current" is by recording, not by time.
    let p_promoted =
        record(materialization(prod.id, prod_run.id, "revenue", 9_000), promoted.clone()).await;
    let current = store.current_materializations(prod.id).await.expect("current of prod");
    assert_eq!(
        current.iter().map(|m| (m.materialization.asset_key.as_str(), m.id)).collect::<Vec<_>>(),
        [("orders", p_orders), ("revenue", p_promoted)]
    );
    assert_eq!(current[1].provenance, Some(promoted.clone()));
    // The ids alone, as a run's provenance starts from them: the same materializations.
    let ids = store.current_materialization_ids(prod.id, None).await.expect("ids of prod");
    assert_eq!(
        ids.iter().map(|(key, read)| (key.as_str(), read.id, read.run_id)).collect::<Vec<_>>(),
        current
            .iter()
            .map(|m| (m.materialization.asset_key.as_str(), m.id, m.materialization.run_id))
            .collect::<Vec<_>>()
    );
    assert!(ids.iter().all(|(_, read)| read.deployment_id == prod.id));
    // Only some keys': those of them that have one, in the same order.
    let some: std::collections::BTreeSet<_> = ["revenue", "nothing_yet", "raw/nothing"]
        .into_iter()
        .map(|k| AssetKey::new(k).expect("a key"))
        .collect();
    let only = store.current_materialization_ids(prod.id, Some(&some)).await.expect("some ids");
    assert_eq!(only, ids[1..].to_vec());
    let none = store.current_materialization_ids(prod.id, Some(&Default::default())).await;
    assert_eq!(none.expect("no keys"), []);
    // As the catch-up reads it: production's reads are production's, the branch's its own.
    let built = current[1].as_built(prod.id).expect("with provenance");
    assert_eq!(built.id, offshoot_core::catch_up::BuildId(p_promoted.0));
    let reads: Vec<_> = built.upstream.iter().map(|(k, u)| (k.as_str(), u.read)).collect();
    assert_eq!(
        reads,
        [
            (
                "customers",
                offshoot_core::catch_up::Read::Production(offshoot_core::catch_up::BuildId(
                    p_revenue.0
                ))
            ),
            (
                "orders",
                offshoot_core::catch_up::Read::Own(offshoot_core::catch_up::BuildId(b_orders.0))
            ),
        ]
    );
    assert_eq!(
        store.current_materializations(feature.id).await.expect("current of the branch").len(),
        2
    );

    // What a later materialization replaced (a rollback puts it back): the one before it.
    for (asset, id, expected, why) in [
        ("orders", p_orders, Some(p_orders_old), "the one it replaced"),
        ("revenue", p_promoted, Some(p_revenue), "by recording, not by time"),
        ("orders", p_orders_old, None, "nothing before the first"),
    ] {
        let found = store.materialization_before(prod.id, &key(asset), id).await.expect("before");
        assert_eq!(found.map(|m| m.id), expected, "{why}");
    }
    assert_eq!(
        store
            .materialization_before(prod.id, &key("revenue"), p_promoted)
            .await
            .expect("before")
            .and_then(|m| m.provenance),
        store.get_materialization(p_revenue).await.expect("get").provenance,
        "with its provenance"
    );
    assert_eq!(
        store
            .materialization_before(feature.id, &key("orders"), p_orders)
            .await
            .expect("before")
            .map(|m| m.id),
        Some(b_orders),
        "of the deployment asked about"
    );

    // A materialization recorded without provenance is current too, and has none.
    store
        .record_materialization(&materialization(prod.id, prod_run.id, "orders", 15_000))
        .await
        .expect("record without provenance");
    let current = store.current_materializations(prod.id).await.expect("current of prod");
    assert_eq!(current[0].materialization.asset_key, key("orders"));
    assert!(current[0].id > p_promoted);
    assert_eq!(current[0].provenance, None);
    assert_eq!(current[0].as_built(prod.id), None, "no provenance: never promoted or up to date");

    // A failing write keeps nothing: the run belongs to another deployment.
    assert_not_found(
        store
            .record_provenance(
                &materialization(prod.id, branch_run.id, "report", 16_000),
                &provenance(6, "v0", vec![upstream("revenue", 5, None)]),
            )
            .await,
        "record_provenance with another deployment's run",
    );
    assert_eq!(store.current_materializations(prod.id).await.expect("current").len(), 2);
    let missing = MaterializationId(p_promoted.0 + 1_000_000);
    assert_not_found(store.get_materialization(missing).await, "a missing materialization");
    assert_eq!(
        store.current_materializations(DeploymentId(-1)).await.expect("a missing deployment"),
        []
    );

    // Deleting the branch keeps production's record of where its revenue came from.
    let delete = LifecycleWrite { delete: true, ..change(feature.id, 20_000) };
    apply_now(store, delete, "delete feature-x").await;
    assert_not_found(store.get_materialization(b_revenue).await, "the deleted branch's build");
    assert_eq!(
        store.get_materialization(p_promoted).await.expect("the promoted one").provenance,
        Some(promoted)
    );
}

/// The data-diff cache: an entry matches only its exact key (both materializations and every
/// option), a second write replaces it, concurrent writers of one key leave one whole entry,
/// and a write prunes entries whose materializations are no longer current and the oldest past
/// `keep`.
pub async fn data_diffs_are_cached_per_pair_of_materializations(store: &dyn Store) {
    let repo = repository("contract-data-diffs");
    let prod = store
        .ensure_deployment(NewDeployment {
            kind: DeploymentKind::Production,
            ..new_deployment(&repo, "prod", "main", 1_000)
        })
        .await
        .expect("create prod");
    let feature = store
        .ensure_deployment(new_deployment(&repo, "feature-x", "feature-x", 1_000))
        .await
        .expect("create feature-x");
    let prod_run = insert_run(store, prod.id, &["orders"], 2_000).await;
    let branch_run = insert_run(store, feature.id, &["orders"], 2_000).await;
    let provenance = Provenance {
        fingerprint: Fingerprint::from_hex(&"ab".repeat(32)).expect("hex"),
        code_version: "v0".to_owned(),
        partitions: String::new(),
        upstream: Vec::new(),
        promoted_from: None,
        built_against: None,
    };
    let record = |m: Materialization| {
        let provenance = provenance.clone();
        async move { store.record_provenance(&m, &provenance).await.expect("record") }
    };
    let p1 = record(materialization(prod.id, prod_run.id, "orders", 10_000)).await;
    let b1 = record(materialization(feature.id, branch_run.id, "orders", 11_000)).await;
    let p_customers = record(materialization(prod.id, prod_run.id, "customers", 10_000)).await;
    let b_customers = record(materialization(feature.id, branch_run.id, "customers", 11_000)).await;
    let diff_key = |production, branch| DataDiffKey {
        production,
        branch,
        key_columns: Some(vec!["order_id".to_owned()]),
        tolerance: 0.0,
        row_limit: Some(1_000_000),
        sample: 10,
        format_version: 1,
    };
    let stored =
        |text: &str, at: UnixMillis| StoredDataDiff { diff_json: text.to_owned(), computed_at: at };
    let get = |key: DataDiffKey| async move {
        store.cached_data_diff(&key).await.expect("read the cache")
    };
    let put = |key: DataDiffKey, diff: StoredDataDiff, keep: u32| async move {
        store.cache_data_diff(&key, &diff, keep).await.expect("write the cache")
    };

    let key = diff_key(p1, b1);
    assert_eq!(get(key.clone()).await, None, "nothing cached yet");
    let hostile = "{\"notes\":[\"it's \\\"quoted\\\" \u{e9}\u{1f600}\"]}";
    put(key.clone(), stored(hostile, 5_000), 100).await;
    assert_eq!(
        get(key.clone()).await,
        Some(stored(hostile, 5_000)),
        "the text round-trips exactly"
    );

    // Every field of the key counts; key column lists that join alike stay apart.
    let others = [
        DataDiffKey { production: b1, branch: p1, ..key.clone() },
        DataDiffKey { key_columns: None, ..key.clone() },
        DataDiffKey { key_columns: Some(Vec::new()), ..key.clone() },
        DataDiffKey {
            key_columns: Some(vec!["order_id".to_owned(), "x".to_owned()]),
            ..key.clone()
        },
        DataDiffKey { key_columns: Some(vec!["ORDER_ID".to_owned()]), ..key.clone() },
        DataDiffKey { tolerance: 0.001, ..key.clone() },
        DataDiffKey { row_limit: None, ..key.clone() },
        DataDiffKey { row_limit: Some(999_999), ..key.clone() },
        DataDiffKey { sample: 0, ..key.clone() },
        DataDiffKey { format_version: 2, ..key.clone() },
    ];
    for other in &others {
        assert_eq!(get(other.clone()).await, None, "{other:?} is another entry");
    }
    let split =
        DataDiffKey { key_columns: Some(vec!["a".to_owned(), "b".to_owned()]), ..key.clone() };
    let joined = DataDiffKey { key_columns: Some(vec!["a\",\"b".to_owned()]), ..key.clone() };
    put(split.clone(), stored("split", 5_100), 100).await;
    assert_eq!(get(joined.clone()).await, None, "a name holding quote-comma-quote is one column");
    put(joined.clone(), stored("joined", 5_200), 100).await;
    assert_eq!(get(split.clone()).await, Some(stored("split", 5_100)));
    let inferred = DataDiffKey { key_columns: None, row_limit: None, ..key.clone() };
    put(inferred.clone(), stored("inferred, no limit", 5_300), 100).await;
    assert_eq!(get(inferred.clone()).await, Some(stored("inferred, no limit", 5_300)));

    // A second write of one key replaces it; two at once leave one of them, whole.
    put(key.clone(), stored("again", 6_000), 100).await;
    assert_eq!(get(key.clone()).await, Some(stored("again", 6_000)));
    let (first, second) = (stored("first", 6_100), stored("second", 6_100));
    let writes: Vec<Pin<Box<dyn Future<Output = StoreResult<()>> + '_>>> = vec![
        Box::pin(store.cache_data_diff(&key, &first, 100)),
        Box::pin(store.cache_data_diff(&key, &second, 100)),
    ];
    for result in all_at_once(writes).await {
        result.expect("concurrent writes of one key both succeed");
    }
    let after = get(key.clone()).await.expect("one entry stays");
    assert!(
        ["first", "second"].contains(&after.diff_json.as_str()) && after.computed_at == 6_100,
        "one of the two writes, whole: {after:?}"
    );

    // The branch rebuilds orders: entries of its old table go at the next write.
    let customers = diff_key(p_customers, b_customers);
    put(customers.clone(), stored("customers", 6_200), 100).await;
    let b2 = record(materialization(feature.id, branch_run.id, "orders", 12_000)).await;
    put(diff_key(p1, b2), stored("rebuilt branch", 7_000), 100).await;
    for gone in [&key, &split, &joined, &inferred] {
        assert_eq!(get(gone.clone()).await, None, "{gone:?} named the branch's replaced table");
    }
    assert_eq!(get(diff_key(p1, b2)).await, Some(stored("rebuilt branch", 7_000)));
    assert_eq!(
        get(customers.clone()).await,
        Some(stored("customers", 6_200)),
        "current pairs stay"
    );
    // Production rebuilds orders: the same.
    let p2 = record(materialization(prod.id, prod_run.id, "orders", 13_000)).await;
    put(diff_key(p2, b2), stored("rebuilt production", 8_000), 100).await;
    assert_eq!(get(diff_key(p1, b2)).await, None, "named production's replaced table");
    assert_eq!(get(diff_key(p2, b2)).await, Some(stored("rebuilt production", 8_000)));

    // Past `keep`, the least recently computed go.
    let tolerant = |t: f64| DataDiffKey { tolerance: t, ..diff_key(p2, b2) };
    put(tolerant(0.1), stored("0.1", 9_000), 100).await;
    put(tolerant(0.2), stored("0.2", 9_100), 3).await;
    assert_eq!(get(customers.clone()).await, None, "the oldest of four goes with keep 3");
    assert_eq!(get(diff_key(p2, b2)).await, Some(stored("rebuilt production", 8_000)));
    assert_eq!(get(tolerant(0.1)).await, Some(stored("0.1", 9_000)));
    assert_eq!(get(tolerant(0.2)).await, Some(stored("0.2", 9_100)));
}

fn change(deployment: DeploymentId, now: UnixMillis) -> LifecycleWrite {
    LifecycleWrite {
        deployment,
        version: 0,
        now,
        deployment_patch: DeploymentPatch::default(),
        new_revisions: Vec::new(),
        revisions: Vec::new(),
        new_runs: Vec::new(),
        runs: Vec::new(),
        delete: false,
        run_limits: Vec::new(),
    }
}

/// Applies `write` on the deployment's current version; nothing else writes the story's
/// deployments, so it must be written.
async fn apply_now(store: &dyn Store, write: LifecycleWrite, what: &str) -> Written {
    let version = store
        .get_deployment(write.deployment)
        .await
        .unwrap_or_else(|error| panic!("{what}: read the version: {error}"))
        .version;
    match store.apply(LifecycleWrite { version, ..write }).await {
        Ok(Applied::Done { version: new_version, revisions, runs }) => {
            assert_eq!(
                new_version,
                version + 1,
                "{what}: an applied write bumps the version by one"
            );
            Written { version: new_version, revisions, runs }
        }
        Ok(Applied::Stale) => panic!("{what}: stale, although nothing else writes this deployment"),
        Ok(Applied::Limited(reason)) => {
            panic!("{what}: limited ({reason}), although it has no limits")
        }
        Err(error) => panic!("{what}: {error}"),
    }
}

fn pushed() -> DeploymentPatch {
    DeploymentPatch { pushed: true, ..DeploymentPatch::default() }
}

fn queued(number: u32, commit: u32) -> NewRevision {
    NewRevision {
        number,
        commit: commit_details(commit),
        status: RevisionStatus::Queued,
        error: None,
    }
}

fn new_run(revision: u32, steps: &[&str]) -> NewRun {
    NewRun {
        revision,
        selection: "*".to_owned(),
        steps: steps.iter().map(|s| key(s)).collect(),
        tags: Vec::new(),
    }
}

fn revision_to(number: u32, status: RevisionStatus) -> RevisionPatch {
    RevisionPatch { number, status, error: None, lease: None, output: None }
}

fn run_to(id: RunId, status: RunStatus) -> RunPatch {
    RunPatch {
        id,
        status,
        cancel_requested: false,
        error: None,
        lease: None,
        steps: StepsEnd::Recorded,
    }
}

async fn insert_revision(
    store: &dyn Store,
    deployment: DeploymentId,
    new: NewRevision,
    now: UnixMillis,
) -> Revision {
    apply_now(
        store,
        LifecycleWrite { new_revisions: vec![new], ..change(deployment, now) },
        "insert a revision",
    )
    .await
    .revisions
    .remove(0)
}

/// A new deployment's first revision and a run of it, in one write.
async fn insert_run(
    store: &dyn Store,
    deployment: DeploymentId,
    steps: &[&str],
    now: UnixMillis,
) -> Run {
    let write = LifecycleWrite {
        new_revisions: vec![queued(1, 1)],
        new_runs: vec![new_run(1, steps)],
        ..change(deployment, now)
    };
    apply_now(store, write, "insert a revision and a run").await.runs.remove(0)
}

/// Another run of revision 1.
async fn add_run(store: &dyn Store, deployment: DeploymentId, now: UnixMillis) -> Run {
    apply_now(
        store,
        LifecycleWrite { new_runs: vec![new_run(1, &["x"])], ..change(deployment, now) },
        "insert a run",
    )
    .await
    .runs
    .remove(0)
}

async fn patch_revisions(
    store: &dyn Store,
    deployment: DeploymentId,
    patches: Vec<RevisionPatch>,
    now: UnixMillis,
) -> i64 {
    apply_now(
        store,
        LifecycleWrite { revisions: patches, ..change(deployment, now) },
        "patch revisions",
    )
    .await
    .version
}

async fn patch_runs(
    store: &dyn Store,
    deployment: DeploymentId,
    patches: Vec<RunPatch>,
    now: UnixMillis,
) -> i64 {
    apply_now(store, LifecycleWrite { runs: patches, ..change(deployment, now) }, "patch runs")
        .await
        .version
}

async fn list_runs_of(store: &dyn Store, deployment: DeploymentId) -> Vec<Run> {
    store
        .list_runs(&RunFilter { deployment_id: Some(deployment), ..RunFilter::default() })
        .await
        .expect("list runs")
}

async fn lease_of_revision(
    store: &dyn Store,
    deployment: DeploymentId,
    number: u32,
) -> Option<Lease> {
    let revisions = store.list_revisions(deployment, 0).await.expect("list revisions");
    revisions.into_iter().find(|r| r.number == number).expect("the revision").lease
}

/// The deployment as one applied write at `now` left it (nothing but its version and time).
fn deployment_after_one_write(created: &Deployment, now: UnixMillis) -> Deployment {
    Deployment { version: created.version + 1, updated_at: now, ..created.clone() }
}

/// Of concurrent applies from one version, exactly one is `Done`; returns whose.
fn one_winner<'a>(results: Vec<StoreResult<Applied>>, owners: &[&'a str], what: &str) -> &'a str {
    let results: Vec<Applied> =
        results.into_iter().map(|r| r.unwrap_or_else(|error| panic!("{what}: {error}"))).collect();
    let winners: Vec<usize> =
        (0..results.len()).filter(|&i| matches!(results[i], Applied::Done { .. })).collect();
    assert_eq!(
        winners.len(),
        1,
        "{what}: exactly one of the concurrent writes applies: {results:?}"
    );
    assert!(
        results.iter().filter(|r| **r == Applied::Stale).count() == results.len() - 1,
        "{what}: the others are stale"
    );
    owners[winners[0]]
}

/// Drives every future at once on the calling task and returns their outputs in order: while
/// one awaits its database, the others go on, so their statements interleave in the database
/// (on several connections). Written here so the port crate needs no runtime or `futures` crate.
async fn all_at_once<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<dyn Future<Output = T> + 'a>>>> =
        futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |context| {
        let mut unfinished = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => unfinished = true,
                }
            }
        }
        if unfinished {
            Poll::Pending
        } else {
            Poll::Ready(
                outputs
                    .iter_mut()
                    .map(|output| output.take().expect("every future finished"))
                    .collect(),
            )
        }
    })
    .await
}

fn repository(text: &str) -> RepositoryName {
    RepositoryName::new(text).expect("a valid repository name in the contract")
}

fn name(text: &str) -> DeploymentName {
    DeploymentName::new(text).expect("a valid deployment name in the contract")
}

fn branch(text: &str) -> BranchName {
    BranchName::new(text).expect("a valid branch name in the contract")
}

fn key(text: &str) -> AssetKey {
    AssetKey::new(text).expect("a valid asset key in the contract")
}

/// A distinct commit per number.
fn sha(n: u32) -> CommitSha {
    CommitSha::new(&format!("{n:040x}")).expect("40 hex digits")
}

fn commit_details(n: u32) -> CommitDetails {
    CommitDetails {
        sha: sha(n),
        message: format!("commit {n}"),
        author_name: "Alice".to_owned(),
        author_email: "alice@example.org".to_owned(),
        time: 1_700_000_000 + i64::from(n),
    }
}

fn new_deployment(
    repository: &RepositoryName,
    deployment_name: &str,
    branch_name: &str,
    now: UnixMillis,
) -> NewDeployment {
    NewDeployment {
        repository: repository.clone(),
        name: name(deployment_name),
        kind: DeploymentKind::Branch,
        branch: branch(branch_name),
        pull_request: None,
        base_deployment: None,
        now,
    }
}

fn materialization(
    deployment_id: DeploymentId,
    run_id: RunId,
    asset: &str,
    created_at: UnixMillis,
) -> Materialization {
    Materialization {
        deployment_id,
        run_id,
        asset_key: key(asset),
        commit: sha(1),
        row_count: Some(100),
        duration_ms: 250,
        created_at,
    }
}

fn including_closed(repository: &RepositoryName) -> DeploymentFilter {
    DeploymentFilter { repository: Some(repository.clone()), include_closed: true }
}

fn ids(deployments: &[Deployment]) -> Vec<DeploymentId> {
    deployments.iter().map(|d| d.id).collect()
}

fn numbers(revisions: &[Revision]) -> Vec<u32> {
    revisions.iter().map(|r| r.number).collect()
}

fn run_ids(runs: &[Run]) -> Vec<RunId> {
    runs.iter().map(|r| r.id).collect()
}

fn assert_oldest_first(revisions: &[Revision]) {
    assert!(
        revisions
            .windows(2)
            .all(|pair| (pair[0].queued_at, pair[0].id) <= (pair[1].queued_at, pair[1].id)),
        "oldest first: {:?}",
        revisions.iter().map(|r| (r.queued_at, r.id)).collect::<Vec<_>>()
    );
}

/// How a write must be refused.
type Refusal = fn(&StoreResult<Applied>) -> bool;

fn is_not_found(result: &StoreResult<Applied>) -> bool {
    matches!(result, Err(StoreError::NotFound(_)))
}

fn is_conflict(result: &StoreResult<Applied>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

fn assert_not_found<T: Debug>(result: StoreResult<T>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::NotFound(_))),
        "{what}: expected NotFound, got {result:?}"
    );
}

fn assert_conflict<T: Debug>(result: StoreResult<T>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{what}: expected Conflict, got {result:?}"
    );
}

/// Eight new branches race for the last two places under the cap: exactly two deployments are
/// created, the others are told the cap is reached, and a branch that has its deployment still
/// gets it back when the cap is full.
pub async fn concurrent_opens_never_exceed_the_cap(store: &dyn Store) {
    let repo = repository("contract-race-cap");
    let max_open = open_branch_count(store).await + 2;
    let opens = (0..8)
        .map(|i| -> Pin<Box<dyn Future<Output = StoreResult<Option<Deployment>>> + '_>> {
            let new = new_deployment(&repo, &format!("race-{i}"), &format!("race/{i}"), 2_000 + i);
            Box::pin(store.ensure_deployment_within(new, max_open))
        })
        .collect();
    let opened: Vec<Option<Deployment>> =
        all_at_once(opens).await.into_iter().map(|o| o.expect("no store error")).collect();
    let created: Vec<&Deployment> = opened.iter().flatten().collect();
    assert_eq!(created.len(), 2, "exactly the two free places were taken: {opened:?}");
    assert_eq!(open_branch_count(store).await, max_open);
    let again = new_deployment(&repo, created[0].name.as_str(), created[0].branch.as_str(), 3_000);
    let found = store.ensure_deployment_within(again, max_open).await.expect("no store error");
    assert_eq!(found.map(|d| d.id), Some(created[0].id), "an existing deployment is returned");
}

async fn open_branch_count(store: &dyn Store) -> usize {
    let open = store.list_deployments(&DeploymentFilter::default()).await.expect("list");
    open.iter().filter(|d| d.kind == DeploymentKind::Branch).count()
}
