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

-- PostgreSQL has no LISTEN privilege: any role may LISTEN on any channel.
-- So each counter's feed goes to a channel nobody can guess, 'counter_'
-- and 32 random hex digits, told by counter.channel() to roles that may
-- read the counter, and replaced by a new one whenever counter.revoke()
-- takes a read right away (src/functions.c).  Set here for every existing
-- counter (a volatile default is evaluated per row) and by the default for
-- every new one.
ALTER TABLE counter.counters
	ADD COLUMN feed_channel text COLLATE "C" NOT NULL
	DEFAULT ('counter_' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''));

-- The channel to LISTEN on for a counter's change feed; needs read.
CREATE FUNCTION counter.channel(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'counter_channel'
LANGUAGE C STABLE PARALLEL RESTRICTED;

-- A security barrier: a caller's function in WHERE (COST 0.0000001, say)
-- is applied only to the rows of counters the caller may read, after
-- counter.can_read(), so it cannot see the others' names and settings.
-- This is the definition of 1.4 (of 1.2, plus quarantined_keys).
CREATE OR REPLACE VIEW counter.stats WITH (security_barrier = true) AS
SELECT c.name,
	   c.mode,
	   c.slots,
	   c.rollups,
	   c.retention,
	   c.min_value AS min,
	   c.max_value AS max,
	   c.members,
	   c.owner::regrole AS owner,
	   (SELECT pg_catalog.count(*) FROM counter.totals t
		 WHERE t.counter = c.name AND t.node = pg_catalog.current_setting('counter.node_id')::int4) AS keys,
	   (SELECT pg_catalog.count(*) FROM counter.pending_events e
		 WHERE e.counter_id = c.id) AS pending_events,
	   (SELECT pg_catalog.now() - pg_catalog.min(e.at) FROM counter.pending_events e
		 WHERE e.counter_id = c.id) AS oldest_pending_age,
	   (SELECT pg_catalog.count(*) FROM counter.slots s
		 WHERE s.counter_id = c.id) AS slot_rows,
	   w.last_compaction,
	   w.last_rate AS events_compacted_per_s,
	   counter._buffered_unflushed(c.name) AS buffered_unflushed,
	   pg_catalog.pg_total_relation_size('counter.slots') AS slots_table_bytes,
	   pg_catalog.pg_total_relation_size('counter.events') +
	   pg_catalog.pg_total_relation_size('counter.events_1') AS events_table_bytes,
	   (SELECT pg_catalog.count(*) FROM counter.quarantine q
		 WHERE q.counter_id = c.id) AS quarantined_keys
  FROM counter.counters c
  LEFT JOIN counter.worker_status() w ON w.database = pg_catalog.current_database()
 WHERE counter.can_read(c.name);

-- == end section: feed ==

-- == section: misc ==

-- top(): this node's totals in the result's order, value then key, so that
-- the candidates of a top-k decide ties at the cut as the result does
DROP INDEX counter.totals_top;
CREATE INDEX totals_top ON counter.totals (counter, node, value DESC, key);

-- == end section: misc ==

-- == section: nodes (add_node / remove_node / counter.nodes) ==
-- == end section: nodes ==

-- == section: get (last update time: counter.get, updated_at) ==

-- The time of the latest add folded into each total: compaction raises it
-- to the latest add time of what it folds (events' at, slot rows' touched,
-- buffered entries' commit time).  NULL for totals folded before 1.4.
-- counter.totals is replicated by name and column: update every node.
ALTER TABLE counter.totals ADD COLUMN updated timestamptz;

-- A key's exact value and the time of its latest add (NULL: none known),
-- in one read; needs read.
CREATE FUNCTION counter.get(name text, key text,
							OUT value int8, OUT updated_at timestamptz)
AS 'MODULE_PATHNAME', 'counter_get'
LANGUAGE C STABLE PARALLEL RESTRICTED;

-- == end section: get ==

-- == section: internal (version-dependent SQL as internal functions) ==
-- == end section: internal ==
