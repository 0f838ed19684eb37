/* counter--1.1--1.2.sql: events in two rotating tables, folded whole */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION counter UPDATE TO '1.2'" to load this file. \quit

-- The second events table.  Adds go to one of counter.events (table 0) and
-- counter.events_1 (table 1), the "current" one.  When the current table
-- has grown past counter.rotate_size, compaction switches adds to the other
-- table, waits for the adds still writing the old one, folds it whole into
-- totals and rollups (no per-row delete), and marks it folded; TRUNCATE
-- empties it once no snapshot older than the fold is left.
CREATE TABLE counter.events_1 (
	counter_id	int4 NOT NULL,
	key			text COLLATE "C" NOT NULL,
	delta		int8 NOT NULL,
	at			timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.0,
		autovacuum_vacuum_threshold = 10000,
		autovacuum_vacuum_insert_scale_factor = 0.0,
		autovacuum_vacuum_insert_threshold = 100000);
CREATE INDEX events_1_key ON counter.events_1 (counter_id, key);
REVOKE ALL ON counter.events_1 FROM PUBLIC;

-- State of each events table.  folded is the transaction that folded the
-- table's rows into totals: a reader whose snapshot sees it committed skips
-- the table (its rows are counted in totals already).  NULL: live.
CREATE TABLE counter.event_tables (
	tab			int4 PRIMARY KEY CHECK (tab IN (0, 1)),
	folded		xid8
);
INSERT INTO counter.event_tables VALUES (0, NULL), (1, NULL);
REVOKE ALL ON counter.event_tables FROM PUBLIC;

-- Is events table tab live (not folded) in the current snapshot?
CREATE FUNCTION counter._event_table_live(tab int4)
RETURNS bool
AS 'MODULE_PATHNAME', 'counter_event_table_live'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- pg_dump carries only the rows of live tables, consistent with totals in
-- its snapshot: a restored database starts with both tables live.
SELECT pg_catalog.pg_extension_config_dump('counter.events',
										   'WHERE counter._event_table_live(0)');
SELECT pg_catalog.pg_extension_config_dump('counter.events_1',
										   'WHERE counter._event_table_live(1)');

-- Events not compacted yet: the rows of the live events tables.  Each
-- branch is skipped whole (a one-time filter) when its table is folded.
CREATE VIEW counter.pending_events AS
SELECT counter_id, key, delta, at FROM counter.events
 WHERE counter._event_table_live(0)
UNION ALL
SELECT counter_id, key, delta, at FROM counter.events_1
 WHERE counter._event_table_live(1);
REVOKE ALL ON counter.pending_events FROM PUBLIC;

CREATE OR REPLACE VIEW counter.stats AS
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
	   pg_catalog.pg_total_relation_size('counter.events_1') AS events_table_bytes
  FROM counter.counters c
  LEFT JOIN counter.worker_status() w ON w.database = pg_catalog.current_database()
 WHERE counter.can_read(c.name);
