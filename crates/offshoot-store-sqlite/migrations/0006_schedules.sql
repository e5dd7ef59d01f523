-- Schedules. A deployment's record of each schedule it has seen: whether it is on (production's
-- always are; a branch deployment's once switched on through the API) and since when its ticks
-- are owed. And every tick: one row per (deployment, schedule, tick time, manual), so of several
-- servers sharing this store only the one whose insert succeeds starts the tick's run.
CREATE TABLE schedule_states (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    schedule      TEXT    NOT NULL,
    enabled       INTEGER NOT NULL,
    since         INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, schedule)
);

CREATE TABLE schedule_ticks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    schedule      TEXT    NOT NULL,
    tick_at       INTEGER NOT NULL,
    manual        INTEGER NOT NULL,
    missed        INTEGER NOT NULL,
    status        TEXT    NOT NULL,
    run_id        INTEGER REFERENCES runs (id),
    message       TEXT,
    claimed_by    TEXT    NOT NULL,
    claimed_at    INTEGER NOT NULL,
    UNIQUE (deployment_id, schedule, tick_at, manual)
);
