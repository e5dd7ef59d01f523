-- Dagster+ drop-in: which base a branch deployment's change tracking compares with
-- (`--snapshot-base-condition`): `merge-base` (Offshoot's default: the base deployment's
-- definitions where the branch forked), `on-create` (production's serving commit when the
-- deployment was created, kept) or `on-update` (production's serving commit, taken again on every
-- update). The commit is the one taken; NULL for `merge-base`.
ALTER TABLE deployments ADD COLUMN snapshot_base TEXT NOT NULL DEFAULT 'merge-base';
ALTER TABLE deployments ADD COLUMN snapshot_base_commit TEXT;

-- Variables and secrets set through the API (`[[variables]]` of the configuration are not
-- here): per repository, name, scope (`production`, `branches`, `local`) and branch (`''`: every
-- branch). The value is stored as given: the store's own access control is its protection at rest.
CREATE TABLE variables (
    repository TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    branch     TEXT    NOT NULL DEFAULT '',
    value      TEXT    NOT NULL,
    secret     BOOLEAN NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (repository, name, scope, branch)
);

-- Run tags (`key=value` lines, sorted), counted by tag concurrency limits when a run is claimed.
ALTER TABLE runs ADD COLUMN tags TEXT NOT NULL DEFAULT '';
