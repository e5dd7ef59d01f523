-- Data diffs, cached per pair of materializations: the production and branch materializations
-- compared and every option that changes the answer, each a column of its own (key columns as
-- one text: `*` for an inferred key, else each name quoted as an SQL identifier; row_limit 0:
-- none), with the server's stored form of the diff as JSON text. The server ignores (and
-- recomputes) an entry it cannot decode; `format_version` keeps other versions from matching.
-- Writes prune entries whose materializations are no longer current, and the oldest past a bound.
CREATE TABLE data_diffs (
    production_materialization_id INTEGER NOT NULL,
    branch_materialization_id     INTEGER NOT NULL,
    key_columns                   TEXT NOT NULL,
    tolerance                     REAL NOT NULL,
    row_limit                     INTEGER NOT NULL,
    sample                        INTEGER NOT NULL,
    format_version                INTEGER NOT NULL,
    diff_json                     TEXT NOT NULL,
    computed_at                   INTEGER NOT NULL,
    PRIMARY KEY (production_materialization_id, branch_materialization_id, key_columns, tolerance,
                 row_limit, sample, format_version)
);
CREATE INDEX data_diffs_computed ON data_diffs (computed_at);

-- On a branch materialization: production's materialization of the same asset that was current
-- when the branch built it (kept by value, like the reads), so a diff can compare with production
-- as the branch saw it. NULL in production, when production had none, and for rows from before.
ALTER TABLE materializations ADD COLUMN built_against_id INTEGER;
ALTER TABLE materializations ADD COLUMN built_against_deployment_id INTEGER;
ALTER TABLE materializations ADD COLUMN built_against_run_id INTEGER;
