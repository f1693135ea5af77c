-- digestif schema for PostgreSQL, version 4: several senders share one issue
-- (as SQLite's 0004_senders.sql).
--
-- * deliveries.holder: the sender (one per process, a random name) that claimed
--   a pending row or marked it sending. A pending row nobody holds is free to
--   claim; a row of a sender that is gone is taken over by another one.
-- * senders: who is sending which issue, and when each was last heard from
--   (a heartbeat).

ALTER TABLE deliveries ADD COLUMN holder TEXT;
CREATE INDEX deliveries_held ON deliveries (issue_date, holder)
    WHERE state IN ('pending', 'sending') AND holder IS NOT NULL;

CREATE TABLE senders (
    holder     TEXT PRIMARY KEY,
    issue_date DATE NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL
);
