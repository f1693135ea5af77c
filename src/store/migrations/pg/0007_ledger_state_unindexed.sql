-- digestif schema for PostgreSQL, version 7 (PostgreSQL's own): every update of
-- a ledger row during a send is an update in place.
--
-- A send updates each row three times: the claim (its holder), the mark (state
-- sending) and the outcome (state sent or failed). Version 6 made the claim a
-- heap-only (HOT) update; the mark and the outcome change `state`, which
-- deliveries_by_state indexed, so each of them wrote a new entry in every index
-- of the ledger (three per update) and left the old ones dead until vacuum: at
-- a million rows, six million index entries a send, and the indexes and the
-- table growing as it went.
--
-- * deliveries_by_state is dropped: no index names the state or the holder.
--   The claim walks the primary key (issue, subscriber) from its cursor and
--   checks the state and holder of each row it passes; the queries over a
--   whole issue (take-over, release, counts) read the issue's rows through the
--   primary key.
-- * deliveries_by_subscriber (a subscriber's rows, for ON DELETE CASCADE and
--   the queries by subscriber) becomes a hash index: it answers `=` only, so
--   the planner can no longer walk it in subscriber order for a claim and
--   filter the issue out of every past issue's entries (its choice for the
--   claim once the ledger held two issues).

DROP INDEX deliveries_by_state;
DROP INDEX deliveries_by_subscriber;
CREATE INDEX deliveries_by_subscriber ON deliveries USING hash (subscriber_id);
