-- Times are REAL seconds since the Unix epoch (UTC).
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at      REAL NOT NULL,
    severity        TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    source          TEXT NOT NULL,
    recipients      TEXT NOT NULL,   -- JSON array
    labels          TEXT NOT NULL,   -- JSON object
    mail_from       TEXT,
    raw             BLOB,
    status          TEXT NOT NULL,   -- pending | held | delivered | failed
    route           TEXT NOT NULL,
    mode            TEXT NOT NULL,   -- healthy | outage: the plan in force was made for this mode
    plan            TEXT NOT NULL,   -- JSON array of channel names; [] when deferred
    step            INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL
);
CREATE INDEX notifications_status ON notifications (status, mode);
CREATE INDEX notifications_created ON notifications (created_at);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications (id),
    mode            TEXT NOT NULL,
    route           TEXT NOT NULL,
    step            INTEGER NOT NULL,
    channel         TEXT NOT NULL,
    state           TEXT NOT NULL,   -- pending | in_flight | delivered | failed | superseded
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    claimed_until   REAL,
    last_error      TEXT,
    remote_id       TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, channel, next_attempt_at);
CREATE INDEX deliveries_notification ON deliveries (notification_id);

CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    delivery_id     INTEGER NOT NULL REFERENCES deliveries (id),
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    started_at      REAL NOT NULL,
    finished_at     REAL NOT NULL,
    outcome         TEXT NOT NULL,   -- delivered | retry | failed | superseded
    detail          TEXT
);
CREATE INDEX attempts_notification ON attempts (notification_id);

CREATE TABLE provider (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    state      TEXT NOT NULL,
    mode       TEXT NOT NULL,
    snapshot   TEXT NOT NULL,   -- JSON of the HealthTracker snapshot
    updated_at REAL NOT NULL
);
INSERT INTO provider (id, state, mode, snapshot, updated_at) VALUES (1, 'healthy', 'healthy', '{}', 0);

CREATE TABLE provider_events (
    id         INTEGER PRIMARY KEY,
    at         REAL NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    cause      TEXT NOT NULL
);

CREATE TABLE check_results (
    id        INTEGER PRIMARY KEY,
    check_name TEXT NOT NULL,
    status    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    latency_s REAL NOT NULL,
    at        REAL NOT NULL
);
CREATE INDEX check_results_at ON check_results (check_name, at);
