/* counter--1.0--1.1.sql: batch adds, membership counters, bounded adds */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION counter UPDATE TO '1.1'" to load this file. \quit

-- Who is counted by a membership counter (create(..., members => true)):
-- a key's value is the number of its member rows, kept exact by like/unlike.
CREATE TABLE counter.members (
	counter_id	int4 NOT NULL REFERENCES counter.counters (id) ON DELETE CASCADE,
	key			text COLLATE "C" NOT NULL,
	member		text COLLATE "C" NOT NULL,
	created		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (counter_id, key, member)
);
REVOKE ALL ON counter.members FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('counter.members', '');

-- Many adds in one call: keys sorted (no deadlock between concurrent
-- batches) and duplicates summed first.  deltas NULL means 1 each.
CREATE FUNCTION counter.add_many(name text, keys text[], deltas int8[] DEFAULT NULL)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_add_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Like add, but returns NULL instead of raising 23514 when a bound would
-- be crossed; else the new value.
CREATE FUNCTION counter.try_add(name text, key text, delta int8 DEFAULT 1,
								idempotency_key text DEFAULT NULL)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_try_add'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter."like"(name text, key text, member text)
RETURNS bool
AS 'MODULE_PATHNAME', 'counter_like'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.unlike(name text, key text, member text)
RETURNS bool
AS 'MODULE_PATHNAME', 'counter_unlike'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.is_member(name text, key text, member text)
RETURNS bool
AS 'MODULE_PATHNAME', 'counter_is_member'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION counter.members(name text, key text, "limit" int4 DEFAULT 100,
								after text DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'counter_members'
LANGUAGE C STABLE PARALLEL RESTRICTED;

-- Buffered mode: per key, the amount of buffered adds the worker has
-- flushed into totals (src/buffer.c explains how reads stay exact).
CREATE TABLE counter.flushed (
	counter_id	int4 NOT NULL REFERENCES counter.counters (id) ON DELETE CASCADE,
	key			text COLLATE "C" NOT NULL,
	flushed		int8 NOT NULL,
	PRIMARY KEY (counter_id, key)
);
REVOKE ALL ON counter.flushed FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('counter.flushed', '');

-- (key, buffered amount) of a counter's keys in shared memory, for top()
CREATE FUNCTION counter._buffered(name text)
RETURNS TABLE (key text, pending int8)
AS 'MODULE_PATHNAME', 'counter_buffered'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

-- buffered adds not flushed yet: what a crash would lose now
CREATE FUNCTION counter._buffered_unflushed(name text)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_buffered_unflushed'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

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
	   (SELECT pg_catalog.count(*) FROM counter.events e
		 WHERE e.counter_id = c.id) AS pending_events,
	   (SELECT pg_catalog.now() - pg_catalog.min(e.at) FROM counter.events e
		 WHERE e.counter_id = c.id) AS oldest_pending_age,
	   (SELECT pg_catalog.count(*) FROM counter.slots s
		 WHERE s.counter_id = c.id) AS slot_rows,
	   w.last_compaction,
	   w.last_rate AS events_compacted_per_s,
	   counter._buffered_unflushed(c.name) AS buffered_unflushed,
	   pg_catalog.pg_total_relation_size('counter.slots') AS slots_table_bytes,
	   pg_catalog.pg_total_relation_size('counter.events') AS events_table_bytes
  FROM counter.counters c
  LEFT JOIN counter.worker_status() w ON w.database = pg_catalog.current_database()
 WHERE counter.can_read(c.name);
