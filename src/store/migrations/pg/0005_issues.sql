-- digestif schema for PostgreSQL, version 5: the frozen issue (as SQLite's
-- 0005_issues.sql). Every sender and every `serve` reads the issue from here,
-- so that all machines send and show the same bytes.

CREATE TABLE issues (
    issue_date  DATE PRIMARY KEY,
    digest      TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    frozen_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE issue_variants (
    issue_date  DATE NOT NULL REFERENCES issues (issue_date) ON DELETE CASCADE,
    variant     TEXT NOT NULL,
    template    TEXT NOT NULL,
    PRIMARY KEY (issue_date, variant)
);
