-- digestif schema, version 5: the frozen issue. Once an issue is built, its
-- digest and the public rendering (what the web archive shows) are kept here,
-- and each variant subscribers receive (language × followed sections) is kept
-- the first time a sender renders it: every sender and every `serve`, whatever
-- its machine or working folder, then sends and shows the same bytes.

CREATE TABLE issues (
    issue_date  TEXT PRIMARY KEY,
    -- digest.json as archived
    digest      TEXT NOT NULL,
    -- email.html and email.txt: the public rendering (no name, no token)
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    frozen_at   TEXT NOT NULL
);

CREATE TABLE issue_variants (
    issue_date  TEXT NOT NULL REFERENCES issues (issue_date) ON DELETE CASCADE,
    -- '<locale>:<followed sections, ;-separated>'
    variant     TEXT NOT NULL,
    -- the rendered variant with its personal slots (JSON)
    template    TEXT NOT NULL,
    PRIMARY KEY (issue_date, variant)
);
