-- digestif schema for PostgreSQL, version 2: identities that never name someone
-- else (as SQLite's 0002_identity.sql).
--
-- * email_key is the whole address lowercased. Where two rows differ only in
--   letter case, one is kept: an unsubscribed one if any, else the oldest.
-- * link_key: a random key per subscriber, what unsubscribe and preferences
--   links name (new rows get theirs from digestif). legacy_links marks rows that
--   existed before this version: only they answer to an older link naming a row id.
-- * suppressions: a keyed hash (HMAC-SHA256 under settings.suppression_key) of
--   each address removed or forgotten, with the reason and date.
-- * signups.mailed_at: when the last confirmation mail went to that address.

DELETE FROM subscribers s
WHERE EXISTS (
    SELECT 1 FROM subscribers o
    WHERE lower(o.email) = lower(s.email) AND o.id <> s.id
      AND ((o.status = 'unsubscribed')::int > (s.status = 'unsubscribed')::int
           OR ((o.status = 'unsubscribed') = (s.status = 'unsubscribed') AND o.id < s.id))
);
UPDATE subscribers SET email_key = lower(email);
ALTER TABLE subscribers
    ADD COLUMN link_key TEXT NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', ''),
    ADD COLUMN legacy_links BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE subscribers ADD CONSTRAINT subscribers_link_key_key UNIQUE (link_key);
ALTER TABLE subscribers ALTER COLUMN legacy_links SET DEFAULT FALSE;

-- Sign-ups: one per address whatever its case (the latest request kept).
DELETE FROM signups s
WHERE EXISTS (
    SELECT 1 FROM signups o
    WHERE lower(o.email_key) = lower(s.email_key) AND o.email_key <> s.email_key
      AND (o.requested_at > s.requested_at
           OR (o.requested_at = s.requested_at AND o.email_key < s.email_key))
);
UPDATE signups SET email_key = lower(email_key);
ALTER TABLE signups ADD COLUMN mailed_at TIMESTAMPTZ;
CREATE INDEX signups_by_age ON signups (requested_at);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO settings (name, value)
VALUES ('suppression_key', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

CREATE TABLE suppressions (
    address_hash TEXT PRIMARY KEY,
    reason       TEXT NOT NULL
                 CHECK (reason IN ('unsubscribed', 'bounced', 'removed', 'forgotten')),
    created_at   TIMESTAMPTZ NOT NULL
);
