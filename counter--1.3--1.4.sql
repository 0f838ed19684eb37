/* counter--1.3--1.4.sql: hardening (isolated compaction failures, private change feed, security barrier) */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION counter UPDATE TO '1.4'" to load this file. \quit

-- == section: quarantine (compaction that one bad key cannot stop) ==

-- Keys that compaction cannot move (their totals or rollups would leave
-- bigint, say): their events and slot values stay where they are, still
-- counted by every read, while every other key keeps moving.  source is
-- where the key's amount waits ('events', 'slots' or 'buffered'), reason
-- the error that stopped it.  Shown in counter.stats.
CREATE TABLE counter.quarantine (
	counter_id	int4 NOT NULL REFERENCES counter.counters (id) ON DELETE CASCADE,
	key			text COLLATE "C" NOT NULL,
	source		text NOT NULL CHECK (source IN ('events', 'slots', 'buffered')),
	reason		text NOT NULL,
	since		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (counter_id, key, source)
);
REVOKE ALL ON counter.quarantine FROM PUBLIC;

-- == end section: quarantine ==

-- == section: feed (change feed only for roles that may read) ==

-- == end section: feed ==

-- == section: misc ==

-- top(): this node's totals in the result's order, value then key, so that
-- the candidates of a top-k decide ties at the cut as the result does
DROP INDEX counter.totals_top;
CREATE INDEX totals_top ON counter.totals (counter, node, value DESC, key);

-- == end section: misc ==
