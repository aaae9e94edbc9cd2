-- The same tables as sqlite/0001_initial.sql, in PostgreSQL's types: times are timestamptz,
-- JSON is jsonb. Leases (deliveries.claimed_until) are set and compared with the database's
-- clock, so nodes whose clocks disagree still agree on when a claim has expired.
CREATE TABLE notifications (
    id              text PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL,
    severity        text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    source          text NOT NULL,
    recipients      jsonb NOT NULL,
    labels          jsonb NOT NULL,
    mail_from       text,
    raw             bytea,
    status          text NOT NULL,   -- pending | held | delivered | failed
    route           text NOT NULL,
    mode            text NOT NULL,   -- healthy | outage: the plan in force was made for this mode
    plan            jsonb NOT NULL,  -- array of channel names; [] when deferred
    step            integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX notifications_status ON notifications (status, mode);
CREATE INDEX notifications_created ON notifications (created_at);

CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id text NOT NULL REFERENCES notifications (id),
    mode            text NOT NULL,
    route           text NOT NULL,
    step            integer NOT NULL,
    channel         text NOT NULL,
    state           text NOT NULL,   -- pending | in_flight | delivered | failed | superseded
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    claimed_until   timestamptz,     -- the lease, on the database's clock
    claimed_by      text,            -- the node holding the claim
    last_error      text,
    remote_id       text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- Claims scan only the open rows: partial indexes stay small however long the history grows.
CREATE INDEX deliveries_due ON deliveries (channel, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_leases ON deliveries (channel, claimed_until) WHERE state = 'in_flight';
CREATE INDEX deliveries_notification ON deliveries (notification_id);

CREATE TABLE attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     bigint NOT NULL REFERENCES deliveries (id),
    notification_id text NOT NULL,
    channel         text NOT NULL,
    attempt         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    outcome         text NOT NULL,   -- delivered | retry | failed | superseded
    detail          text
);
CREATE INDEX attempts_notification ON attempts (notification_id);

CREATE TABLE provider (
    id         integer PRIMARY KEY CHECK (id = 1),
    state      text NOT NULL,
    mode       text NOT NULL,
    snapshot   jsonb NOT NULL,   -- the HealthTracker snapshot
    updated_at timestamptz NOT NULL
);
INSERT INTO provider (id, state, mode, snapshot, updated_at)
VALUES (1, 'healthy', 'healthy', '{}', 'epoch');

CREATE TABLE provider_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    from_state text NOT NULL,
    to_state   text NOT NULL,
    cause      text NOT NULL
);

CREATE TABLE check_results (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_name text NOT NULL,
    status     text NOT NULL,
    reason     text NOT NULL,
    latency_s  double precision NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX check_results_at ON check_results (check_name, at);
