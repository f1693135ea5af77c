-- digestif schema, version 2: identities that never name someone else.
--
-- * subscribers.id is AUTOINCREMENT: the id of a removed reader is never given
--   to another one.
-- * email_key is the whole address lowercased (it was: the local part as given),
--   so Bob@example.com and bob@example.com are one subscriber. Where both
--   existed, one row is kept: an unsubscribed one if any (their choice stands),
--   else the oldest.
-- * link_key: a random key per subscriber, what unsubscribe and preferences
--   links name. legacy_links = 1 marks rows that existed before this version:
--   only they may still be reached by an older link that names a row id.
-- * suppressions: a keyed hash (HMAC-SHA256 under settings.suppression_key) of
--   each address removed or forgotten, with the reason and date, so that no
--   import or `add` brings it back.
-- * signups.mailed_at: when the last confirmation mail went to that address
--   (at most one per cooldown).
--
-- deliveries is rebuilt as well: dropping the old subscribers table would
-- otherwise cascade into it.

CREATE TABLE subscribers_v2 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    email           TEXT NOT NULL,
    -- the whole address, lowercased: the identity of an address
    email_key       TEXT NOT NULL UNIQUE,
    link_key        TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16)))),
    legacy_links    INTEGER NOT NULL DEFAULT 0,
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

INSERT INTO subscribers_v2
    (id, email, email_key, legacy_links, name, locale, categories, timezone, status,
     status_reason, created_at, updated_at, unsubscribed_at)
SELECT s.id, s.email, lower(s.email), 1, s.name, s.locale, s.categories, s.timezone, s.status,
       s.status_reason, s.created_at, s.updated_at, s.unsubscribed_at
FROM subscribers s
WHERE NOT EXISTS (
    SELECT 1 FROM subscribers o
    WHERE lower(o.email) = lower(s.email) AND o.id <> s.id
      AND ((o.status = 'unsubscribed') > (s.status = 'unsubscribed')
           OR ((o.status = 'unsubscribed') = (s.status = 'unsubscribed') AND o.id < s.id))
);

CREATE TABLE deliveries_v1 AS SELECT * FROM deliveries;
DROP TABLE deliveries;
DROP TABLE subscribers;
ALTER TABLE subscribers_v2 RENAME TO subscribers;
CREATE INDEX subscribers_by_status ON subscribers (status, id);

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
CREATE INDEX deliveries_by_state ON deliveries (issue_date, state, subscriber_id);
CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id);
INSERT INTO deliveries
SELECT * FROM deliveries_v1 WHERE subscriber_id IN (SELECT id FROM subscribers);
DROP TABLE deliveries_v1;

-- Sign-ups: one per address whatever its case (the latest request kept).
DELETE FROM signups WHERE rowid NOT IN (
    SELECT rowid FROM signups s
    WHERE requested_at = (SELECT MAX(requested_at) FROM signups o
                          WHERE lower(o.email_key) = lower(s.email_key))
    GROUP BY lower(email_key)
);
UPDATE signups SET email_key = lower(email_key);
ALTER TABLE signups ADD COLUMN mailed_at TEXT;
CREATE INDEX signups_by_age ON signups (requested_at);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO settings (name, value) VALUES ('suppression_key', lower(hex(randomblob(32))));

CREATE TABLE suppressions (
    address_hash TEXT PRIMARY KEY,
    reason       TEXT NOT NULL
                 CHECK (reason IN ('unsubscribed', 'bounced', 'removed', 'forgotten')),
    created_at   TEXT NOT NULL
);
