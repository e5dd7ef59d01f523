//! The contract every `Store` implementation must satisfy, as one async test story per concern.
//!
//! This is test code that lives in the library so that every backend's integration tests can run
//! it: its functions panic on the first broken rule. Each function uses repositories of its own,
//! so all of them can share one store, even one holding other data (but not an earlier run's: the
//! stories create fixed names, which would conflict). Queries that span repositories
//! (`revisions_with_status`, `list_runs` without a deployment) are checked on the rows the story
//! created, plus the ordering of the whole answer.
//!
//! Rules pinned here that the trait's signatures leave open:
//! - a deployment's identity (`id`, `repository`, `name`, `kind`, `branch`, `created_at`) is
//!   fixed at creation; `update_deployment` writes every other field;
//! - a revision's `id`, `deployment_id`, `number`, `commit` and `queued_at` are fixed at insertion;
//!   a run's `id`, `deployment_id`, `revision_id`, `selection` and `created_at` likewise;
//! - writing a row that refers to a missing row (a revision of a missing deployment, a run of a
//!   missing revision) is `NotFound`, and so is updating or deleting a missing row;
//! - references stay inside a deployment: a deployment's current revision, a run's revision and a
//!   materialization's run must belong to the same deployment, or the write is `NotFound`;
//! - ids are never reused, not even after the newest rows are deleted;
//! - list methods return nothing, not `NotFound`, for a parent that does not exist;
//! - `find_revision_by_commit` returns the newest revision when a commit was pushed twice;
//! - "newest first" and "oldest first" follow the caller's timestamps, ties broken by insertion
//!   order; string comparisons are exact (case-sensitive, no pattern matching).

use std::fmt::Debug;

use offshoot_core::{
    deployment_name_for_branch, AssetKey, BranchName, CommitSha, DeploymentKind, DeploymentName, DeploymentStatus,
    PullRequestStatus, RepositoryName, RevisionStatus, RunStatus, StepStatus, UnixMillis,
};

use crate::{
    CommitDetails, Deployment, DeploymentFilter, DeploymentId, Lease, Materialization, NewDeployment, NewRevision, NewRun, PullRequest,
    Revision, RevisionId, Run, RunFilter, RunId, RunStep, StepId, Store, StoreError, StoreResult,
};

/// Runs every story of the contract, one after the other, on one store.
pub async fn run_all(store: &dyn Store) {
    deployments_are_created_and_found(store).await;
    deployment_names_and_branches_are_unique_per_repository(store).await;
    deployments_are_listed_production_first_then_by_name(store).await;
    deployment_updates_round_trip_every_mutable_field(store).await;
    deleting_a_deployment_removes_its_history(store).await;
    revisions_are_numbered_per_deployment(store).await;
    revision_updates_round_trip_every_mutable_field(store).await;
    revisions_with_status_are_oldest_first_across_deployments(store).await;
    runs_are_inserted_with_their_steps_in_plan_order(store).await;
    steps_are_updated_and_their_logs_appended(store).await;
    runs_are_listed_newest_first_with_filters(store).await;
    materializations_are_listed_newest_first(store).await;
    missing_rows_are_not_found(store).await;
    hostile_strings_round_trip_exactly(store).await;
    leases_let_one_server_at_a_time_claim_work(store).await;
}

pub async fn deployments_are_created_and_found(store: &dyn Store) {
    let repo = repository("contract-create");
    let other_repo = repository("contract-create-2");

    let new_prod = NewDeployment { kind: DeploymentKind::Production, ..new_deployment(&repo, "prod", "main", 1_000) };
    let prod = store.create_deployment(new_prod).await.expect("create prod");
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
            pinned: false,
            current_revision: None,
            created_at: 1_000,
            updated_at: 1_000,
            last_push_at: 1_000,
            closed_at: None,
            close_reason: None,
        },
        "a new deployment is open, unpinned, has no revision, and all its times are `now`"
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
    let feature = store.create_deployment(new_feature.clone()).await.expect("create feature-1");
    assert_ne!(feature.id, prod.id, "each deployment gets its own id");
    assert_eq!(feature.pull_request, new_feature.pull_request, "the pull request is stored");
    assert_eq!(feature.base_deployment, new_feature.base_deployment, "the base deployment is stored");
    assert_eq!(feature.kind, DeploymentKind::Branch);

    assert_eq!(store.get_deployment(prod.id).await.expect("get prod"), prod, "get returns what create returned");
    assert_eq!(store.get_deployment(feature.id).await.expect("get feature"), feature, "get returns what create returned");

    let found = store.find_deployment(&repo, &name("feature-1")).await.expect("find by name");
    assert_eq!(found.as_ref(), Some(&feature), "find by (repository, name)");
    let found = store.find_deployment(&repo, &name("feature-2")).await.expect("find unknown name");
    assert_eq!(found, None, "an unknown name finds nothing");
    let found = store.find_deployment(&other_repo, &name("feature-1")).await.expect("find in other repository");
    assert_eq!(found, None, "names are scoped by repository");

    let found = store.find_deployment_by_branch(&repo, &branch("feature/1")).await.expect("find by branch");
    assert_eq!(found.as_ref(), Some(&feature), "find by (repository, branch)");
    let found = store.find_deployment_by_branch(&repo, &branch("main")).await.expect("find prod by branch");
    assert_eq!(found.as_ref(), Some(&prod), "find by (repository, branch)");
    let found = store.find_deployment_by_branch(&repo, &branch("Feature/1")).await.expect("find other case");
    assert_eq!(found, None, "branch comparison is case-sensitive");
    let found = store.find_deployment_by_branch(&other_repo, &branch("feature/1")).await.expect("find in other repository");
    assert_eq!(found, None, "branches are scoped by repository");
}

pub async fn deployment_names_and_branches_are_unique_per_repository(store: &dyn Store) {
    let repo = repository("contract-unique");
    let other_repo = repository("contract-unique-2");

    let first = store.create_deployment(new_deployment(&repo, "feature-1", "feature/1", 1_000)).await.expect("create first");

    let same_name = store.create_deployment(new_deployment(&repo, "feature-1", "feature/other", 2_000)).await;
    assert_conflict(same_name, "a second deployment with the same repository and name");
    let same_branch = store.create_deployment(new_deployment(&repo, "feature-other", "feature/1", 2_000)).await;
    assert_conflict(same_branch, "a second deployment with the same repository and branch");

    let elsewhere = store
        .create_deployment(new_deployment(&other_repo, "feature-1", "feature/1", 3_000))
        .await
        .expect("the same name and branch in another repository is fine");
    assert_ne!(elsewhere.id, first.id);

    let all = store.list_deployments(&including_closed(&repo)).await.expect("list");
    assert_eq!(ids(&all), [first.id], "a refused create leaves nothing behind");
}

pub async fn deployments_are_listed_production_first_then_by_name(store: &dyn Store) {
    let repo = repository("contract-list");
    let other_repo = repository("contract-list-2");

    // Created out of order, and "a-feature" sorts before "prod" by name, "branch" before
    // "production" by kind text: only an explicit "production first" gets this right.
    let b = store.create_deployment(new_deployment(&repo, "b-feature", "b", 1_000)).await.expect("create b");
    let prod = store
        .create_deployment(NewDeployment { kind: DeploymentKind::Production, ..new_deployment(&repo, "prod", "main", 2_000) })
        .await
        .expect("create prod");
    let a = store.create_deployment(new_deployment(&repo, "a-feature", "a", 3_000)).await.expect("create a");
    let mut c = store.create_deployment(new_deployment(&repo, "c-closed", "c", 4_000)).await.expect("create c");
    c.status = DeploymentStatus::Closed;
    c.closed_at = Some(5_000);
    c.close_reason = Some("pull request merged".to_owned());
    store.update_deployment(&c).await.expect("close c");
    let other = store.create_deployment(new_deployment(&other_repo, "a-feature", "a", 6_000)).await.expect("create other");

    let open = store
        .list_deployments(&DeploymentFilter { repository: Some(repo.clone()), include_closed: false })
        .await
        .expect("list open");
    assert_eq!(ids(&open), [prod.id, a.id, b.id], "production first, then by name; closed ones left out");
    let all = store.list_deployments(&including_closed(&repo)).await.expect("list all");
    assert_eq!(ids(&all), [prod.id, a.id, b.id, c.id], "closed ones included on request");
    assert_eq!(all[3], c, "listed rows are whole rows");

    let everywhere =
        store.list_deployments(&DeploymentFilter { repository: None, include_closed: false }).await.expect("list everywhere");
    let ours: Vec<DeploymentId> =
        everywhere.iter().filter(|d| d.repository == repo || d.repository == other_repo).map(|d| d.id).collect();
    assert_eq!(ours.len(), 4, "without a repository filter every repository's open deployments are listed: {ours:?}");
    for id in [prod.id, a.id, b.id, other.id] {
        assert!(ours.contains(&id), "deployment {id:?} listed without a repository filter");
    }
    assert!(!ours.contains(&c.id), "closed deployments are left out without a repository filter too");
    let first_branch = everywhere.iter().position(|d| d.kind == DeploymentKind::Branch).unwrap_or(everywhere.len());
    assert!(
        everywhere[first_branch..].iter().all(|d| d.kind == DeploymentKind::Branch),
        "production deployments come first across repositories too"
    );
}

pub async fn deployment_updates_round_trip_every_mutable_field(store: &dyn Store) {
    let repo = repository("contract-update");
    let created = store.create_deployment(new_deployment(&repo, "feature-1", "feature/1", 1_000)).await.expect("create");
    let revision = store.insert_revision(new_revision(created.id, 1, 1_500)).await.expect("insert revision");

    let changed = Deployment {
        status: DeploymentStatus::Closed,
        pull_request: Some(PullRequest {
            id: "42".to_owned(),
            url: "https://git.example/pull/42".to_owned(),
            status: PullRequestStatus::Merged,
        }),
        base_deployment: Some(name("staging")),
        pinned: true,
        current_revision: Some(revision.id),
        updated_at: 2_000,
        last_push_at: 3_000,
        closed_at: Some(4_000),
        close_reason: Some("merged".to_owned()),
        ..created.clone()
    };
    store.update_deployment(&changed).await.expect("update with every option set");
    assert_eq!(store.get_deployment(created.id).await.expect("get"), changed, "every mutable field is written");

    let cleared = Deployment {
        status: DeploymentStatus::Open,
        pull_request: None,
        base_deployment: None,
        pinned: false,
        current_revision: None,
        updated_at: 5_000,
        closed_at: None,
        close_reason: None,
        ..changed.clone()
    };
    store.update_deployment(&cleared).await.expect("update with every option cleared");
    assert_eq!(store.get_deployment(created.id).await.expect("get"), cleared, "options are cleared, not ignored");
    let found = store.find_deployment(&repo, &name("feature-1")).await.expect("find");
    assert_eq!(found, Some(cleared), "find sees the update");
}

pub async fn deleting_a_deployment_removes_its_history(store: &dyn Store) {
    let repo = repository("contract-delete");
    let doomed = store.create_deployment(new_deployment(&repo, "doomed", "doomed", 1_000)).await.expect("create doomed");
    let kept = store.create_deployment(new_deployment(&repo, "kept", "kept", 1_000)).await.expect("create kept");

    let mut history = Vec::new();
    for deployment in [&doomed, &kept] {
        let revision = store.insert_revision(new_revision(deployment.id, 1, 2_000)).await.expect("insert revision");
        let mut with_revision = deployment.clone();
        with_revision.current_revision = Some(revision.id);
        store.update_deployment(&with_revision).await.expect("set current revision");
        let run = store.insert_run(new_run(deployment.id, revision.id, &["a", "b"], 3_000)).await.expect("insert run");
        let steps = store.list_steps(run.id).await.expect("list steps");
        store.append_step_log(steps[0].id, "building a\n").await.expect("append log");
        store.record_materialization(&materialization(deployment.id, run.id, "a", 4_000)).await.expect("record");
        history.push((revision, run, steps));
    }

    store.delete_deployment(doomed.id).await.expect("delete doomed");

    let (revision, run, steps) = &history[0];
    assert_not_found(store.get_deployment(doomed.id).await, "the deleted deployment");
    assert_not_found(store.get_revision(revision.id).await, "a revision of the deleted deployment");
    assert_not_found(store.get_run(run.id).await, "a run of the deleted deployment");
    assert_eq!(store.list_steps(run.id).await.expect("list steps"), [], "the deleted run's steps are gone");
    assert_not_found(store.append_step_log(steps[0].id, "late\n").await, "a step of the deleted deployment");
    assert_eq!(store.list_revisions(doomed.id, 0).await.expect("list revisions"), [], "revisions are gone");
    assert_eq!(
        store.list_materializations(doomed.id, None, 0).await.expect("list materializations"),
        [],
        "materializations are gone"
    );
    let runs = store.list_runs(&RunFilter { deployment_id: Some(doomed.id), ..RunFilter::default() }).await.expect("list runs");
    assert_eq!(runs, [], "runs are gone");
    assert_eq!(store.find_deployment(&repo, &name("doomed")).await.expect("find"), None);
    assert_not_found(store.delete_deployment(doomed.id).await, "deleting twice");

    let (revision, run, steps) = &history[1];
    assert_eq!(
        store.get_deployment(kept.id).await.expect("get kept").current_revision,
        Some(revision.id),
        "the other deployment is untouched"
    );
    assert_eq!(store.get_revision(revision.id).await.expect("get kept revision"), *revision);
    assert_eq!(store.get_run(run.id).await.expect("get kept run"), *run);
    let kept_steps = store.list_steps(run.id).await.expect("list kept steps");
    assert_eq!(kept_steps.len(), steps.len());
    assert_eq!(kept_steps[0].log, "building a\n");
    assert_eq!(store.list_materializations(kept.id, None, 0).await.expect("list kept materializations").len(), 1);

    let again = store.create_deployment(new_deployment(&repo, "doomed", "doomed", 5_000)).await;
    let again = again.expect("a deleted deployment's name and branch can be used again");
    assert_eq!(store.list_revisions(again.id, 0).await.expect("list revisions"), [], "a recreated deployment starts empty");

    // Ids are never reused, even those of the newest rows: a worker holding a stale id must not
    // reach another deployment's data.
    let newest = store.create_deployment(new_deployment(&repo, "newest", "newest", 6_000)).await.expect("create newest");
    let newest_revision = store.insert_revision(new_revision(newest.id, 1, 6_000)).await.expect("insert newest revision");
    store.delete_deployment(newest.id).await.expect("delete newest");
    let successor =
        store.create_deployment(new_deployment(&repo, "successor", "successor", 7_000)).await.expect("create successor");
    let successor_revision =
        store.insert_revision(new_revision(successor.id, 1, 7_000)).await.expect("insert successor revision");
    assert_ne!(successor.id, newest.id, "a deleted deployment's id is not reused");
    assert_ne!(successor_revision.id, newest_revision.id, "a deleted revision's id is not reused");
}

pub async fn revisions_are_numbered_per_deployment(store: &dyn Store) {
    let repo = repository("contract-revisions");
    let a = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b = store.create_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");

    let a1 = store.insert_revision(new_revision(a.id, 1, 2_000)).await.expect("insert a1");
    let b1 = store.insert_revision(new_revision(b.id, 1, 2_100)).await.expect("insert b1");
    let a2 = store.insert_revision(new_revision(a.id, 2, 2_200)).await.expect("insert a2");
    let superseded = NewRevision {
        status: RevisionStatus::Superseded,
        error: Some("a newer commit arrived first".to_owned()),
        ..new_revision(a.id, 3, 2_300)
    };
    let a3 = store.insert_revision(superseded).await.expect("insert a3");
    assert_eq!([a1.number, a2.number, a3.number], [1, 2, 3], "numbers count per deployment");
    assert_eq!(b1.number, 1, "another deployment counts from 1");

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
        "a new revision has its commit, status and queue time, and nothing else yet"
    );
    assert_eq!(a3.status, RevisionStatus::Superseded, "the status given at insertion is kept");
    assert_eq!(a3.error.as_deref(), Some("a newer commit arrived first"));
    for revision in [&a1, &b1, &a2, &a3] {
        assert_eq!(store.get_revision(revision.id).await.expect("get revision"), *revision, "get returns what insert returned");
    }

    let newest = store.newest_revisions().await.expect("newest revisions");
    assert!(newest.contains(&a3) && newest.contains(&b1), "the newest revision of each deployment");
    assert!(!newest.contains(&a1) && !newest.contains(&a2), "older revisions are not the newest");

    let found = store.find_revision_by_commit(a.id, &sha(2)).await.expect("find a2");
    assert_eq!(found.as_ref(), Some(&a2), "find by commit");
    let found = store.find_revision_by_commit(b.id, &sha(2)).await.expect("find in b");
    assert_eq!(found, None, "commits are scoped by deployment");
    let found = store.find_revision_by_commit(a.id, &sha(99)).await.expect("find unknown");
    assert_eq!(found, None, "an unknown commit finds nothing");

    assert_eq!(numbers(&store.list_revisions(a.id, 0).await.expect("list a")), [3, 2, 1], "newest first");
    assert_eq!(numbers(&store.list_revisions(a.id, 2).await.expect("list a, 2")), [3, 2], "limit keeps the newest");
    assert_eq!(store.list_revisions(b.id, 0).await.expect("list b"), [b1], "only the deployment's own revisions");

    // The same commit pushed again (a revert of a force-push) gets a new number; find returns it.
    let a4 = store.insert_revision(new_revision(a.id, 1, 2_400)).await.expect("insert a4");
    assert_eq!(a4.number, 4);
    let found = store.find_revision_by_commit(a.id, &sha(1)).await.expect("find repeated commit");
    assert_eq!(found, Some(a4), "a commit pushed twice finds its newest revision");
}

pub async fn revision_updates_round_trip_every_mutable_field(store: &dyn Store) {
    let repo = repository("contract-rev-update");
    let deployment = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let inserted = store.insert_revision(new_revision(deployment.id, 1, 2_000)).await.expect("insert");

    let changed = Revision {
        status: RevisionStatus::Failed,
        error: Some("validation failed".to_owned()),
        diagnostics_json: Some(r#"[{"path":"assets/a.sql","line":1,"column":8,"message":"x","hint":"y"}]"#.to_owned()),
        base_commit: Some(sha(7)),
        changes_json: Some(r#"{"changed":["a"],"impacted":[]}"#.to_owned()),
        asset_count: 12,
        changed_count: 3,
        impacted_count: u32::MAX,
        started_at: Some(3_000),
        finished_at: Some(4_000),
        ..inserted.clone()
    };
    store.update_revision(&changed).await.expect("update with every option set");
    assert_eq!(store.get_revision(inserted.id).await.expect("get"), changed, "every mutable field is written");

    let cleared = Revision {
        status: RevisionStatus::Ready,
        error: None,
        diagnostics_json: None,
        base_commit: None,
        changes_json: None,
        asset_count: 0,
        changed_count: 0,
        impacted_count: 0,
        started_at: None,
        finished_at: None,
        ..changed
    };
    store.update_revision(&cleared).await.expect("update with every option cleared");
    assert_eq!(store.get_revision(inserted.id).await.expect("get"), cleared, "options are cleared, not ignored");
    let listed = store.list_revisions(deployment.id, 0).await.expect("list");
    assert_eq!(listed, [cleared], "list sees the update");
}

pub async fn revisions_with_status_are_oldest_first_across_deployments(store: &dyn Store) {
    let repo = repository("contract-queue");
    let a = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b = store.create_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");

    let mut a1 = store.insert_revision(new_revision(a.id, 1, 10_000)).await.expect("insert a1");
    let b1 = store.insert_revision(new_revision(b.id, 1, 10_001)).await.expect("insert b1");
    let a2 = store.insert_revision(new_revision(a.id, 2, 10_002)).await.expect("insert a2");
    let superseded = NewRevision { status: RevisionStatus::Superseded, ..new_revision(b.id, 2, 10_003) };
    let b2 = store.insert_revision(superseded).await.expect("insert b2");
    a1.status = RevisionStatus::Deploying;
    a1.started_at = Some(10_004);
    store.update_revision(&a1).await.expect("start a1");

    let ours = |revisions: Vec<Revision>| -> Vec<RevisionId> {
        revisions.into_iter().filter(|r| r.deployment_id == a.id || r.deployment_id == b.id).map(|r| r.id).collect()
    };
    let queued = store.revisions_with_status(&[RevisionStatus::Queued]).await.expect("queued");
    assert_eq!(ours(queued), [b1.id, a2.id], "oldest first, interleaved across deployments");
    let active = store.revisions_with_status(&[RevisionStatus::Queued, RevisionStatus::Deploying]).await.expect("active");
    assert_oldest_first(&active);
    assert_eq!(ours(active.clone()), [a1.id, b1.id, a2.id], "several statuses at once");
    assert!(
        active.iter().all(|r| matches!(r.status, RevisionStatus::Queued | RevisionStatus::Deploying)),
        "only the statuses asked for"
    );
    let three = [RevisionStatus::Deploying, RevisionStatus::Superseded, RevisionStatus::Queued];
    let three = store.revisions_with_status(&three).await.expect("three statuses");
    assert_oldest_first(&three);
    assert_eq!(ours(three), [a1.id, b1.id, a2.id, b2.id]);
    let ready = store.revisions_with_status(&[RevisionStatus::Ready]).await.expect("ready");
    assert_eq!(ours(ready), [], "no revision of ours is ready");
    let none = store.revisions_with_status(&[]).await.expect("no statuses");
    assert_eq!(none, [], "no statuses asked for, none returned");
}

pub async fn runs_are_inserted_with_their_steps_in_plan_order(store: &dyn Store) {
    let repo = repository("contract-runs");
    let deployment = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let revision = store.insert_revision(new_revision(deployment.id, 1, 2_000)).await.expect("insert revision");

    // Not alphabetical: the plan's order is kept, not re-sorted.
    let selection = r#"+orders tag:"finance" , 'x';--"#;
    let new = NewRun {
        selection: selection.to_owned(),
        ..new_run(deployment.id, revision.id, &["orders", "customers", "revenue"], 3_000)
    };
    let run = store.insert_run(new).await.expect("insert run");
    assert_eq!(
        run,
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
        },
        "a new run is queued and not canceled"
    );
    assert_eq!(store.get_run(run.id).await.expect("get run"), run, "get returns what insert returned");

    let steps = store.list_steps(run.id).await.expect("list steps");
    let planned: Vec<(u32, &str)> = steps.iter().map(|s| (s.position, s.asset_key.as_str())).collect();
    assert_eq!(planned, [(0, "orders"), (1, "customers"), (2, "revenue")], "steps in plan order with their positions");
    for step in &steps {
        assert_eq!(step.run_id, run.id);
        assert_eq!(step.status, StepStatus::Pending, "a new step is pending");
        assert_eq!(
            (step.started_at, step.finished_at, step.row_count, step.error.as_deref(), step.log.as_str()),
            (None, None, None, None, "")
        );
    }
    let distinct: std::collections::BTreeSet<StepId> = steps.iter().map(|s| s.id).collect();
    assert_eq!(distinct.len(), steps.len(), "each step has its own id");

    let empty = store.insert_run(new_run(deployment.id, revision.id, &[], 3_100)).await.expect("insert a run without steps");
    assert_eq!(store.list_steps(empty.id).await.expect("list steps"), [], "a run may have no steps");

    let started = Run { status: RunStatus::Running, started_at: Some(4_000), cancel_requested: true, ..run.clone() };
    store.update_run(&started).await.expect("start run");
    assert_eq!(store.get_run(run.id).await.expect("get"), started, "status, start time and cancel request are written");
    let finished = Run {
        status: RunStatus::Canceled,
        error: Some("canceled by alice".to_owned()),
        finished_at: Some(5_000),
        cancel_requested: false,
        ..started
    };
    store.update_run(&finished).await.expect("finish run");
    assert_eq!(store.get_run(run.id).await.expect("get"), finished, "cancel_requested goes back to false");
    let cleared = Run { error: None, started_at: None, finished_at: None, ..finished };
    store.update_run(&cleared).await.expect("clear run options");
    assert_eq!(store.get_run(run.id).await.expect("get"), cleared, "options are cleared, not ignored");
    assert_eq!(store.list_steps(run.id).await.expect("list steps").len(), 3, "updating a run leaves its steps alone");
}

pub async fn steps_are_updated_and_their_logs_appended(store: &dyn Store) {
    let repo = repository("contract-steps");
    let deployment = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let revision = store.insert_revision(new_revision(deployment.id, 1, 2_000)).await.expect("insert revision");
    let run = store.insert_run(new_run(deployment.id, revision.id, &["a", "b"], 3_000)).await.expect("insert run");
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
    let expected = RunStep { log: "line 1\nline 2 ünïcødé 🚀\nno newline\nafter".to_owned(), ..succeeded };
    assert_eq!(
        listed[0], expected,
        "status, times, row count and error are written; the log is appended in order, never overwritten"
    );
    assert_eq!(listed[1], steps[1], "the other step is untouched");

    let failed = RunStep { status: StepStatus::Failed, row_count: Some(0), error: Some("boom".to_owned()), ..steps[1].clone() };
    store.update_step(&failed).await.expect("fail step");
    let cleared =
        RunStep { status: StepStatus::Skipped, row_count: None, error: None, started_at: None, finished_at: None, ..failed };
    store.update_step(&cleared).await.expect("clear step options");
    assert_eq!(store.list_steps(run.id).await.expect("list steps")[1], cleared, "options are cleared, not ignored");
}

pub async fn runs_are_listed_newest_first_with_filters(store: &dyn Store) {
    let repo = repository("contract-run-list");
    let a = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b = store.create_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");
    let revision_a = store.insert_revision(new_revision(a.id, 1, 2_000)).await.expect("insert revision a");
    let revision_b = store.insert_revision(new_revision(b.id, 1, 2_000)).await.expect("insert revision b");

    let mut r1 = store.insert_run(new_run(a.id, revision_a.id, &["x"], 10_000)).await.expect("insert r1");
    let r2 = store.insert_run(new_run(b.id, revision_b.id, &["x"], 20_000)).await.expect("insert r2");
    let mut r3 = store.insert_run(new_run(a.id, revision_a.id, &["x"], 30_000)).await.expect("insert r3");
    let r4 = store.insert_run(new_run(a.id, revision_a.id, &["x"], 40_000)).await.expect("insert r4");
    r1.status = RunStatus::Succeeded;
    store.update_run(&r1).await.expect("finish r1");
    r3.status = RunStatus::Failed;
    store.update_run(&r3).await.expect("fail r3");

    let list = |deployment_id: Option<DeploymentId>, statuses: &[RunStatus], limit: u32| RunFilter {
        deployment_id,
        statuses: statuses.to_vec(),
        limit,
    };
    let of_a = store.list_runs(&list(Some(a.id), &[], 0)).await.expect("runs of a");
    assert_eq!(run_ids(&of_a), [r4.id, r3.id, r1.id], "newest first; no statuses means all");
    assert_eq!(of_a[1], r3, "listed runs are whole rows");
    let latest = store.list_runs(&list(Some(a.id), &[], 2)).await.expect("latest runs of a");
    assert_eq!(run_ids(&latest), [r4.id, r3.id], "the limit keeps the newest");
    let finished =
        store.list_runs(&list(Some(a.id), &[RunStatus::Succeeded, RunStatus::Failed], 0)).await.expect("finished runs of a");
    assert_eq!(run_ids(&finished), [r3.id, r1.id], "filtered by status");
    let of_b = store.list_runs(&list(Some(b.id), &[], 0)).await.expect("runs of b");
    assert_eq!(run_ids(&of_b), [r2.id], "filtered by deployment");

    let queued = store.list_runs(&list(None, &[RunStatus::Queued], 0)).await.expect("queued runs everywhere");
    assert!(queued.iter().all(|r| r.status == RunStatus::Queued), "only queued runs");
    assert!(queued.windows(2).all(|pair| pair[0].created_at >= pair[1].created_at), "newest first across deployments");
    let ours: Vec<RunId> = queued.iter().filter(|r| r.deployment_id == a.id || r.deployment_id == b.id).map(|r| r.id).collect();
    assert_eq!(ours, [r4.id, r2.id], "every deployment's runs without a deployment filter");
    let one = store.list_runs(&list(None, &[], 1)).await.expect("the newest run anywhere");
    assert_eq!(one.len(), 1, "the limit applies without filters too");
}

pub async fn materializations_are_listed_newest_first(store: &dyn Store) {
    let repo = repository("contract-materialize");
    let a = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create a");
    let b = store.create_deployment(new_deployment(&repo, "b", "b", 1_000)).await.expect("create b");
    let revision_a = store.insert_revision(new_revision(a.id, 1, 2_000)).await.expect("insert revision a");
    let revision_b = store.insert_revision(new_revision(b.id, 1, 2_000)).await.expect("insert revision b");
    let run_a = store.insert_run(new_run(a.id, revision_a.id, &["orders", "revenue"], 3_000)).await.expect("insert run a");
    let run_b = store.insert_run(new_run(b.id, revision_b.id, &["orders"], 3_000)).await.expect("insert run b");

    let m1 = materialization(a.id, run_a.id, "orders", 10_000);
    let m2 = Materialization { row_count: None, ..materialization(a.id, run_a.id, "revenue", 20_000) };
    let m3 = Materialization { commit: sha(2), duration_ms: 0, ..materialization(a.id, run_a.id, "orders", 30_000) };
    let m4 = materialization(b.id, run_b.id, "orders", 40_000);
    for m in [&m1, &m2, &m3, &m4] {
        store.record_materialization(m).await.expect("record");
    }

    let all = store.list_materializations(a.id, None, 0).await.expect("all of a");
    assert_eq!(all, [m3.clone(), m2.clone(), m1.clone()], "newest first, whole rows");
    let orders = store.list_materializations(a.id, Some(&key("orders")), 0).await.expect("orders of a");
    assert_eq!(orders, [m3.clone(), m1.clone()], "filtered by asset");
    let latest = store.list_materializations(a.id, None, 2).await.expect("latest of a");
    assert_eq!(latest, [m3.clone(), m2], "the limit keeps the newest");
    let latest_orders = store.list_materializations(a.id, Some(&key("orders")), 1).await.expect("latest orders of a");
    assert_eq!(latest_orders, [m3], "asset filter and limit together");
    let unknown = store.list_materializations(a.id, Some(&key("Orders")), 0).await.expect("unknown asset");
    assert_eq!(unknown, [], "asset keys compare exactly");
    assert_eq!(store.list_materializations(b.id, None, 0).await.expect("all of b"), [m4], "filtered by deployment");
}

pub async fn missing_rows_are_not_found(store: &dyn Store) {
    let repo = repository("contract-missing");
    let deployment = store.create_deployment(new_deployment(&repo, "a", "a", 1_000)).await.expect("create");
    let revision = store.insert_revision(new_revision(deployment.id, 1, 2_000)).await.expect("insert revision");
    let run = store.insert_run(new_run(deployment.id, revision.id, &["a"], 3_000)).await.expect("insert run");
    let step = store.list_steps(run.id).await.expect("list steps").remove(0);

    // Far beyond anything the other stories create.
    let missing = 1_i64 << 50;
    let missing_deployment = DeploymentId(missing);
    let missing_revision = RevisionId(missing);
    let missing_run = RunId(missing);

    assert_not_found(store.get_deployment(missing_deployment).await, "get_deployment");
    assert_not_found(
        store.update_deployment(&Deployment { id: missing_deployment, ..deployment.clone() }).await,
        "update_deployment",
    );
    assert_not_found(store.delete_deployment(missing_deployment).await, "delete_deployment");
    assert_not_found(
        store.insert_revision(new_revision(missing_deployment, 1, 4_000)).await,
        "insert_revision of a missing deployment",
    );
    assert_not_found(store.get_revision(missing_revision).await, "get_revision");
    assert_not_found(store.update_revision(&Revision { id: missing_revision, ..revision.clone() }).await, "update_revision");
    assert_not_found(
        store.insert_run(new_run(deployment.id, missing_revision, &["a"], 4_000)).await,
        "insert_run of a missing revision",
    );
    assert_not_found(
        store.insert_run(new_run(missing_deployment, revision.id, &["a"], 4_000)).await,
        "insert_run of a missing deployment",
    );
    assert_not_found(store.get_run(missing_run).await, "get_run");
    assert_not_found(store.update_run(&Run { id: missing_run, ..run.clone() }).await, "update_run");
    assert_not_found(store.update_step(&RunStep { id: StepId(missing), ..step.clone() }).await, "update_step");
    assert_not_found(store.append_step_log(StepId(missing), "x").await, "append_step_log");
    assert_not_found(
        store.record_materialization(&materialization(missing_deployment, run.id, "a", 4_000)).await,
        "record_materialization of a missing deployment",
    );
    assert_not_found(
        store.record_materialization(&materialization(deployment.id, missing_run, "a", 4_000)).await,
        "record_materialization of a missing run",
    );
    let dangling = Deployment { current_revision: Some(missing_revision), ..deployment.clone() };
    assert_not_found(store.update_deployment(&dangling).await, "update_deployment to a missing current revision");

    // A row's references stay inside its deployment: another deployment's revision or run is,
    // for this deployment, missing.
    let other = store.create_deployment(new_deployment(&repo, "other", "other", 1_000)).await.expect("create other");
    let other_revision = store.insert_revision(new_revision(other.id, 1, 2_000)).await.expect("insert other revision");
    let other_run = store.insert_run(new_run(other.id, other_revision.id, &["a"], 3_000)).await.expect("insert other run");
    let borrowed = Deployment { current_revision: Some(other_revision.id), ..deployment.clone() };
    assert_not_found(store.update_deployment(&borrowed).await, "update_deployment to another deployment's revision");
    assert_not_found(
        store.insert_run(new_run(deployment.id, other_revision.id, &["a"], 4_000)).await,
        "insert_run of another deployment's revision",
    );
    assert_not_found(
        store.record_materialization(&materialization(deployment.id, other_run.id, "a", 4_000)).await,
        "record_materialization of another deployment's run",
    );

    // Refused writes change nothing.
    assert_eq!(store.get_deployment(deployment.id).await.expect("get"), deployment);
    assert_eq!(store.list_revisions(deployment.id, 0).await.expect("list revisions"), [revision]);
    let runs =
        store.list_runs(&RunFilter { deployment_id: Some(deployment.id), ..RunFilter::default() }).await.expect("list runs");
    assert_eq!(runs, [run]);
    assert_eq!(store.list_materializations(deployment.id, None, 0).await.expect("list"), []);

    // Lists of a missing parent are empty.
    assert_eq!(store.list_revisions(missing_deployment, 0).await.expect("list revisions"), []);
    assert_eq!(store.list_steps(missing_run).await.expect("list steps"), []);
    assert_eq!(store.list_materializations(missing_deployment, None, 0).await.expect("list materializations"), []);
    assert_eq!(store.find_revision_by_commit(missing_deployment, &sha(1)).await.expect("find revision"), None);
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
        let deployment = store.create_deployment(new).await.expect("create a deployment for a hostile branch");
        assert_eq!(deployment.branch.as_str(), *text, "the branch is stored verbatim");
        created.push(deployment);
    }
    for (deployment, text) in created.iter().zip(branches) {
        let found = store.find_deployment_by_branch(&repo, &deployment.branch).await.expect("find by hostile branch");
        assert_eq!(found.as_ref(), Some(deployment), "a hostile branch {text:?} finds exactly its deployment");
        let got = store.get_deployment(deployment.id).await.expect("get");
        assert_eq!(got.branch.as_str(), text, "the branch round-trips exactly");
        assert_eq!(got.pull_request.as_ref().map(|p| p.id.as_str()), Some(text), "the pull request id round-trips exactly");
    }
    let all = store.list_deployments(&including_closed(&repo)).await.expect("list");
    assert_eq!(all.len(), branches.len(), "no hostile string broke another row");
    for near_miss in ["x'; drop table deployments; --", "x'; DROP TABLE deployments; -- ", "%%", "ünïcødé/ブランチ/🚀 "]
    {
        let found = store.find_deployment_by_branch(&repo, &branch(near_miss)).await.expect("find a near miss");
        assert_eq!(found, None, "{near_miss:?} matches no branch: comparison is exact, without patterns");
    }

    let hostile = "'); DELETE FROM revisions; --\n\"quoted\"\t\\ ünïcødé 🚀 %_";
    let deployment = &created[0];
    let mut closing = deployment.clone();
    closing.close_reason = Some(hostile.to_owned());
    store.update_deployment(&closing).await.expect("update with hostile close reason");
    assert_eq!(store.get_deployment(deployment.id).await.expect("get"), closing);

    let details = CommitDetails {
        sha: sha(1),
        message: format!("Subject with 'quotes'\n\nBody; {hostile}\n"),
        author_name: "Zoë O'Brien; --".to_owned(),
        author_email: "zoe+\"test\"@exämple.org".to_owned(),
        time: -1,
    };
    let new = NewRevision { commit: details.clone(), error: Some(hostile.to_owned()), ..new_revision(deployment.id, 1, 2_000) };
    let mut revision = store.insert_revision(new).await.expect("insert a revision with hostile text");
    assert_eq!(revision.commit, details, "commit details round-trip exactly");
    revision.diagnostics_json = Some(format!("[{{\"message\":{hostile:?}}}]"));
    revision.changes_json = Some(hostile.to_owned());
    store.update_revision(&revision).await.expect("update with hostile text");
    assert_eq!(store.get_revision(revision.id).await.expect("get revision"), revision);

    let new = NewRun { selection: hostile.to_owned(), ..new_run(deployment.id, revision.id, &["a"], 3_000) };
    let run = store.insert_run(new).await.expect("insert a run with a hostile selection");
    assert_eq!(store.get_run(run.id).await.expect("get run").selection, hostile);
    let mut step = store.list_steps(run.id).await.expect("list steps").remove(0);
    store.append_step_log(step.id, hostile).await.expect("append hostile log");
    store.append_step_log(step.id, &long_ascii).await.expect("append long log");
    step.error = Some(hostile.to_owned());
    store.update_step(&step).await.expect("update with hostile error");
    let stored = store.list_steps(run.id).await.expect("list steps").remove(0);
    assert_eq!(stored.error.as_deref(), Some(hostile));
    assert_eq!(stored.log, format!("{hostile}{long_ascii}"), "logs round-trip exactly");
}

// Helpers: short constructors for valid test data, so each story shows only what it is about.

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

fn new_deployment(repository: &RepositoryName, deployment_name: &str, branch_name: &str, now: UnixMillis) -> NewDeployment {
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

fn new_revision(deployment_id: DeploymentId, commit: u32, now: UnixMillis) -> NewRevision {
    NewRevision { deployment_id, commit: commit_details(commit), status: RevisionStatus::Queued, error: None, now }
}

fn new_run(deployment_id: DeploymentId, revision_id: RevisionId, steps: &[&str], now: UnixMillis) -> NewRun {
    NewRun { deployment_id, revision_id, selection: "*".to_owned(), steps: steps.iter().map(|s| key(s)).collect(), now }
}

fn materialization(deployment_id: DeploymentId, run_id: RunId, asset: &str, created_at: UnixMillis) -> Materialization {
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
        revisions.windows(2).all(|pair| (pair[0].queued_at, pair[0].id) <= (pair[1].queued_at, pair[1].id)),
        "oldest first: {:?}",
        revisions.iter().map(|r| (r.queued_at, r.id)).collect::<Vec<_>>()
    );
}

fn assert_not_found<T: Debug>(result: StoreResult<T>, what: &str) {
    assert!(matches!(result, Err(StoreError::NotFound(_))), "{what}: expected NotFound, got {result:?}");
}

fn assert_conflict<T: Debug>(result: StoreResult<T>, what: &str) {
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{what}: expected Conflict, got {result:?}");
}

/// Claims move queued work to executing under one owner's lease; a live lease cannot be claimed,
/// an expired one is taken over; renewals extend only the owner's leases; updates keep leases.
pub async fn leases_let_one_server_at_a_time_claim_work(store: &dyn Store) {
    let repo = repository("contract-leases");
    let deployment = store.create_deployment(new_deployment(&repo, "feature-1", "feature/1", 1_000)).await.expect("create");
    let revision = store.insert_revision(new_revision(deployment.id, 1, 2_000)).await.expect("insert");
    let claimed = store.claim_revision(revision.id, "server-a", 3_000, 13_000).await.expect("claim").expect("a queued revision is claimable");
    assert!(!claimed.taken_over, "queued work is claimed, not taken over");
    assert_eq!((claimed.row.status, claimed.row.started_at), (RevisionStatus::Deploying, Some(3_000)));
    assert_eq!(claimed.row.lease, Some(Lease { owner: "server-a".to_owned(), expires_at: 13_000 }));
    assert!(store.claim_revision(revision.id, "server-b", 4_000, 14_000).await.expect("claim").is_none(), "a live lease is not claimable");

    let mut updated = claimed.row.clone();
    updated.asset_count = 5;
    store.update_revision(&updated).await.expect("update");
    assert_eq!(store.get_revision(revision.id).await.expect("get").lease, claimed.row.lease, "updates keep the lease");

    assert_eq!(store.renew_leases("server-a", 20_000).await.expect("renew"), 1);
    assert!(store.claim_revision(revision.id, "server-b", 15_000, 25_000).await.expect("claim").is_none(), "a renewed lease holds");
    let taken = store.claim_revision(revision.id, "server-b", 21_000, 31_000).await.expect("claim").expect("an expired lease is taken over");
    assert!(taken.taken_over);
    assert_eq!(taken.row.lease.as_ref().map(|l| l.owner.as_str()), Some("server-b"));
    assert_eq!(store.renew_leases("server-a", 40_000).await.expect("renew"), 0, "server-a no longer holds anything");

    let mut done = taken.row;
    done.status = RevisionStatus::Ready;
    store.update_revision(&done).await.expect("finish");
    assert!(store.claim_revision(revision.id, "server-c", 99_000, 100_000).await.expect("claim").is_none(), "finished work is never claimed");
    assert!(store.claim_revision(RevisionId(i64::MAX), "server-c", 1, 2).await.expect("claim").is_none(), "a missing revision is not claimed");

    let run = store.insert_run(new_run(deployment.id, revision.id, &["orders"], 5_000)).await.expect("run");
    let claimed = store.claim_run(run.id, "server-a", 6_000, 16_000).await.expect("claim").expect("a queued run is claimable");
    assert_eq!((claimed.row.status, claimed.taken_over), (RunStatus::Running, false));
    assert!(store.claim_run(run.id, "server-b", 7_000, 17_000).await.expect("claim").is_none(), "a live lease is not claimable");
    assert_eq!(store.renew_leases("server-a", 30_000).await.expect("renew"), 1, "the run's lease");
    let taken = store.claim_run(run.id, "server-b", 30_001, 40_000).await.expect("claim").expect("an expired run lease is taken over");
    assert!(taken.taken_over);
    assert!(!taken.row.cancel_requested);
}
