-- The lifecycle state machine: a version for compare-and-set writes, the head (newest delivered
-- commit's revision, kept across a close), the teardown of a closed deployment (claimed under a
-- lease like deploys and runs), a delete that waits for it; and the durable intake of webhooks.
ALTER TABLE deployments ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN head_revision_id INTEGER;
ALTER TABLE deployments ADD COLUMN teardown TEXT NOT NULL DEFAULT 'done';
ALTER TABLE deployments ADD COLUMN teardown_lease_owner TEXT;
ALTER TABLE deployments ADD COLUMN teardown_lease_expires_at INTEGER;
ALTER TABLE deployments ADD COLUMN delete_requested INTEGER NOT NULL DEFAULT FALSE;

-- Existing deployments: the head is the newest revision that was not superseded (or the newest);
-- a closed one drops its schema again (dropping is idempotent).
UPDATE deployments SET head_revision_id = COALESCE(
    (SELECT id FROM revisions AS r WHERE r.deployment_id = deployments.id AND r.status <> 'superseded' ORDER BY number DESC LIMIT 1),
    (SELECT id FROM revisions AS r WHERE r.deployment_id = deployments.id ORDER BY number DESC LIMIT 1));
UPDATE deployments SET teardown = 'pending' WHERE status = 'closed';

CREATE TABLE intake (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL,
    delivery    TEXT,
    repository  TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    received_by TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    done_at     INTEGER,
    UNIQUE (source, delivery)
);
CREATE INDEX intake_pending ON intake (done_at, id);
