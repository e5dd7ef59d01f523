-- Provenance: what every materialization was built from, so that production's catch-up can take
-- a branch's table only when it is exactly what production would build. The asset's fingerprint
-- with its parts (code version, partitions; the upstream fingerprints are in the reads), where a
-- promoted production materialization came from, and per upstream the materialization it read.
-- The materializations named in them are kept by value, without foreign keys: a deployment's
-- deletion must not be blocked by (or erase) the provenance of what production promoted from it.
-- Rows from before have no fingerprint: no provenance, never promoted.
ALTER TABLE materializations ADD COLUMN fingerprint TEXT;
ALTER TABLE materializations ADD COLUMN code_version TEXT;
ALTER TABLE materializations ADD COLUMN partitions TEXT;
ALTER TABLE materializations ADD COLUMN promoted_from_id INTEGER;
ALTER TABLE materializations ADD COLUMN promoted_from_deployment_id INTEGER;
ALTER TABLE materializations ADD COLUMN promoted_from_deployment TEXT;
ALTER TABLE materializations ADD COLUMN promoted_from_run_id INTEGER;

CREATE TABLE materialization_reads (
    materialization_id INTEGER NOT NULL REFERENCES materializations (id),
    upstream_key         TEXT    NOT NULL,
    upstream_fingerprint TEXT    NOT NULL,
    read_id              INTEGER,
    read_deployment_id   INTEGER,
    read_run_id          INTEGER,
    PRIMARY KEY (materialization_id, upstream_key),
    CHECK ((read_id IS NULL) = (read_deployment_id IS NULL) AND (read_id IS NULL) = (read_run_id IS NULL))
);

-- The current materialization of each asset: the last one recorded.
CREATE INDEX materializations_current ON materializations (deployment_id, asset_key, id);
