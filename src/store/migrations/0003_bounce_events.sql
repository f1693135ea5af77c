-- digestif schema, version 3: what came back after sending.
-- One row per bounce or complaint matched (through its signed VERP tag) to a
-- subscriber and an issue. report_key names the returned message ('mid:<Message-ID>'
-- or 'sha256:<hash of its bytes>'), so that one read twice is kept once.

CREATE TABLE bounce_events (
    id            INTEGER PRIMARY KEY,
    report_key    TEXT NOT NULL UNIQUE,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    issue_date    TEXT NOT NULL,
    kind          TEXT NOT NULL
                  CHECK (kind IN ('hard_bounce', 'soft_bounce', 'delayed', 'delivered', 'complaint')),
    -- enhanced status code (5.1.1), when the report gives one
    status        TEXT,
    diagnostic    TEXT,
    -- where it was read and in which form, e.g. 'maildir:new/1795759214.M1P2.host rfc3464'
    source        TEXT NOT NULL,
    received_at   TEXT NOT NULL
);
-- A subscriber's events (subscribers show, the soft-bounce window).
CREATE INDEX bounce_events_by_subscriber ON bounce_events (subscriber_id, kind, received_at);
-- An issue's rates (ledger, check, send).
CREATE INDEX bounce_events_by_issue ON bounce_events (issue_date, kind);
