-- Dagster+ drop-in: which base a branch deployment's change tracking compares with
-- (`--snapshot-base-condition`): `merge-base` (Offshoot's default: the base deployment's
-- definitions where the branch forked), `on-create` (production's serving commit when the
-- deployment was created, kept) or `on-update` (production's serving commit, taken again on every
-- update). The commit is the one taken; NULL for `merge-base`.
ALTER TABLE deployments ADD COLUMN snapshot_base TEXT NOT NULL DEFAULT 'merge-base';
ALTER TABLE deployments ADD COLUMN snapshot_base_commit TEXT;
