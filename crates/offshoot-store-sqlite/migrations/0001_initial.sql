-- The metadata store's first schema. Times are milliseconds since the Unix epoch; enums are the
-- core types' `as_str()` text. AUTOINCREMENT keeps ids from being reused after a delete, so a
-- stale id never reaches another deployment's rows. Composite foreign keys keep every row inside
-- its deployment: a run's revision, a materialization's run and a deployment's current revision
-- all belong to the same deployment.

CREATE TABLE deployments (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    repository          TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    branch              TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    pull_request_id     TEXT,
    pull_request_url    TEXT,
    pull_request_status TEXT,
    base_deployment     TEXT,
    pinned              INTEGER NOT NULL,
    current_revision_id INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_push_at        INTEGER NOT NULL,
    closed_at           INTEGER,
    close_reason        TEXT,
    UNIQUE (repository, name),
    UNIQUE (repository, branch),
    CHECK ((pull_request_id IS NULL) = (pull_request_url IS NULL)
       AND (pull_request_id IS NULL) = (pull_request_status IS NULL)),
    -- Deferred: deleting a deployment removes its revisions before the deployment itself.
    FOREIGN KEY (id, current_revision_id) REFERENCES revisions (deployment_id, id) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE revisions (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id       INTEGER NOT NULL REFERENCES deployments (id),
    number              INTEGER NOT NULL,
    commit_sha          TEXT    NOT NULL,
    commit_message      TEXT    NOT NULL,
    commit_author_name  TEXT    NOT NULL,
    commit_author_email TEXT    NOT NULL,
    commit_time         INTEGER NOT NULL,
    status              TEXT    NOT NULL,
    error               TEXT,
    diagnostics_json    TEXT,
    base_commit         TEXT,
    changes_json        TEXT,
    asset_count         INTEGER NOT NULL,
    changed_count       INTEGER NOT NULL,
    impacted_count      INTEGER NOT NULL,
    queued_at           INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    UNIQUE (deployment_id, number),
    UNIQUE (deployment_id, id)
);
CREATE INDEX revisions_by_commit ON revisions (deployment_id, commit_sha);
CREATE INDEX revisions_by_status ON revisions (status, queued_at);

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id    INTEGER NOT NULL,
    revision_id      INTEGER NOT NULL,
    selection        TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    cancel_requested INTEGER NOT NULL,
    UNIQUE (deployment_id, id),
    FOREIGN KEY (deployment_id, revision_id) REFERENCES revisions (deployment_id, id)
);
CREATE INDEX runs_by_revision ON runs (deployment_id, revision_id);
CREATE INDEX runs_by_deployment ON runs (deployment_id, created_at);
CREATE INDEX runs_by_creation ON runs (created_at);

CREATE TABLE run_steps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    position    INTEGER NOT NULL,
    asset_key   TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    row_count   INTEGER,
    error       TEXT,
    log         TEXT    NOT NULL,
    UNIQUE (run_id, position)
);

CREATE TABLE materializations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    asset_key     TEXT    NOT NULL,
    commit_sha    TEXT    NOT NULL,
    row_count     INTEGER,
    duration_ms   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    FOREIGN KEY (deployment_id, run_id) REFERENCES runs (deployment_id, id)
);
CREATE INDEX materializations_by_run ON materializations (deployment_id, run_id);
CREATE INDEX materializations_by_deployment ON materializations (deployment_id, created_at);
CREATE INDEX materializations_by_asset ON materializations (deployment_id, asset_key, created_at);
