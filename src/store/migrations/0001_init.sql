-- digestif schema, version 1: subscribers, sign-ups, the delivery ledger, leases, runs.
-- Timestamps are RFC 3339 text in UTC, except leases.expires_at (Unix milliseconds,
-- compared in SQL).

CREATE TABLE subscribers (
    id              INTEGER PRIMARY KEY,
    email           TEXT NOT NULL,
    -- local part as given + lowercased domain: the identity of an address
    email_key       TEXT NOT NULL UNIQUE,
    name            TEXT,
    locale          TEXT,
    -- ';'-joined
    categories      TEXT NOT NULL DEFAULT '',
    timezone        TEXT,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'active', 'unsubscribed', 'bounced')),
    status_reason   TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    unsubscribed_at TEXT
);
CREATE INDEX subscribers_by_status ON subscribers (status, id);

-- Double opt-in: a sign-up waits here until its confirmation link is clicked.
CREATE TABLE signups (
    email_key    TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    name         TEXT,
    locale       TEXT,
    categories   TEXT NOT NULL DEFAULT '',
    timezone     TEXT,
    status       TEXT NOT NULL,
    requested_at TEXT NOT NULL
);

-- The ledger: one row per (issue date, subscriber); pending → sending → sent | failed.
CREATE TABLE deliveries (
    issue_date    TEXT NOT NULL,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    state         TEXT NOT NULL
                  CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    message_id    TEXT,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (issue_date, subscriber_id)
) WITHOUT ROWID;
-- Claims walk pending rows of a date in subscriber order; counts group by state.
CREATE INDEX deliveries_by_state ON deliveries (issue_date, state, subscriber_id);
-- Deleting a subscriber cascades here.
CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id);

-- One worker per issue date across processes.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Finished runs, for /healthz and /metrics.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    issue_date  TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    status      TEXT NOT NULL,
    sent        INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    retried     INTEGER NOT NULL,
    in_doubt    INTEGER NOT NULL,
    message     TEXT NOT NULL
);
