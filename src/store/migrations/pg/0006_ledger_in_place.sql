-- digestif schema for PostgreSQL, version 6 (PostgreSQL's own: SQLite has no
-- such step): a sender's claim of ledger rows is an update in place.
--
-- A send updates each ledger row three times: claimed by a sender (its holder
-- set), marked sending, its outcome. An update that changes no indexed column
-- and finds room on its row's page is a heap-only (HOT) update: no new entry in
-- any index and less WAL. The claim changes the holder only.
--
-- * deliveries_held (the holder, indexed for the rows in pending or sending)
--   is dropped, so that no index names the holder. The queries by holder
--   (taking over a sender that is gone, releasing one's rows at the end) read
--   the issue's pending or sending rows through deliveries_by_state instead.
-- * The ledger's pages are filled to 30 % when the rows are enqueued, so that
--   each row's new version fits on its page: a claim takes a page's rows at
--   once, and at 50 % a third of them did not fit (measured at 20 000 rows).

DROP INDEX deliveries_held;
ALTER TABLE deliveries SET (fillfactor = 30);
