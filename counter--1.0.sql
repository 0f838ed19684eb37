/* counter--1.0.sql: exact counters under contention */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION counter" to load this file. \quit

-- Everything lives in schema counter, a member of the extension: DROP
-- EXTENSION removes it with all the rest.
CREATE SCHEMA counter;

--
-- The PN-counter type (src/type.c)
--
-- BEGIN type.sql
-- counter.sharded_counter: the state of a PN-counter (per shard: total
-- incremented, total decremented).  Objects defined in src/type.c.
-- Must be pasted in this order: shell type, I/O functions, full type, rest.

CREATE TYPE counter.sharded_counter;

CREATE FUNCTION counter.sharded_counter_in(pg_catalog.cstring)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_in'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_out(counter.sharded_counter)
	RETURNS pg_catalog.cstring
	AS 'MODULE_PATHNAME', 'sharded_counter_out'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_recv(pg_catalog.internal)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_recv'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_send(counter.sharded_counter)
	RETURNS pg_catalog.bytea
	AS 'MODULE_PATHNAME', 'sharded_counter_send'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE counter.sharded_counter (
	INPUT = counter.sharded_counter_in,
	OUTPUT = counter.sharded_counter_out,
	RECEIVE = counter.sharded_counter_recv,
	SEND = counter.sharded_counter_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT = double,
	STORAGE = extended
);

COMMENT ON TYPE counter.sharded_counter IS
	'PN-counter state: per shard the total incremented and the total decremented, e.g. {1:+15-3,7:+4}';

-- Sum over shards of (incremented - decremented); error if outside int8.
CREATE FUNCTION counter.value(counter.sharded_counter)
	RETURNS pg_catalog.int8
	AS 'MODULE_PATHNAME', 'sharded_counter_get_value'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Exact value as numeric, never overflows; used by the cast to numeric.
CREATE FUNCTION counter.sharded_counter_to_numeric(counter.sharded_counter)
	RETURNS pg_catalog.numeric
	AS 'MODULE_PATHNAME', 'sharded_counter_to_numeric'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- PN-counter join: union of shards, per shard max of each total.
CREATE FUNCTION counter.merge(a counter.sharded_counter, b counter.sharded_counter)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_merge'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Join of all non-NULL rows.  Over zero rows the result is '{}', the
-- identity of the join (the state nobody has touched, value 0), so that
-- merge() always yields a usable state, like count() and unlike sum().
CREATE AGGREGATE counter.merge(counter.sharded_counter) (
	SFUNC = counter.merge,
	STYPE = counter.sharded_counter,
	COMBINEFUNC = counter.merge,
	INITCOND = '{}',
	PARALLEL = SAFE
);

-- New state with delta added to one shard (delta < 0 counts as a decrement).
CREATE FUNCTION counter.increment(sc counter.sharded_counter, shard pg_catalog.int4, delta pg_catalog.int8)
	RETURNS counter.sharded_counter
	AS 'MODULE_PATHNAME', 'sharded_counter_increment'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- One row per shard, for inspection.
CREATE FUNCTION counter.shards(counter.sharded_counter)
	RETURNS TABLE(shard pg_catalog.int4, incremented pg_catalog.int8, decremented pg_catalog.int8)
	AS 'MODULE_PATHNAME', 'sharded_counter_shards'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
	ROWS 10;

-- Comparison by value: states with equal values compare equal.
CREATE FUNCTION counter.sharded_counter_lt(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_lt'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_le(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_le'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_eq(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_eq'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_ne(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_ne'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_ge(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_ge'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_gt(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.bool
	AS 'MODULE_PATHNAME', 'sharded_counter_gt'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION counter.sharded_counter_cmp(counter.sharded_counter, counter.sharded_counter)
	RETURNS pg_catalog.int4
	AS 'MODULE_PATHNAME', 'sharded_counter_cmp'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR counter.< (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_lt,
	COMMUTATOR = OPERATOR(counter.>),
	NEGATOR = OPERATOR(counter.>=),
	RESTRICT = pg_catalog.scalarltsel,
	JOIN = pg_catalog.scalarltjoinsel
);

CREATE OPERATOR counter.<= (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_le,
	COMMUTATOR = OPERATOR(counter.>=),
	NEGATOR = OPERATOR(counter.>),
	RESTRICT = pg_catalog.scalarlesel,
	JOIN = pg_catalog.scalarlejoinsel
);

CREATE OPERATOR counter.= (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_eq,
	COMMUTATOR = OPERATOR(counter.=),
	NEGATOR = OPERATOR(counter.<>),
	RESTRICT = pg_catalog.eqsel,
	JOIN = pg_catalog.eqjoinsel,
	MERGES
);

CREATE OPERATOR counter.<> (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_ne,
	COMMUTATOR = OPERATOR(counter.<>),
	NEGATOR = OPERATOR(counter.=),
	RESTRICT = pg_catalog.neqsel,
	JOIN = pg_catalog.neqjoinsel
);

CREATE OPERATOR counter.>= (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_ge,
	COMMUTATOR = OPERATOR(counter.<=),
	NEGATOR = OPERATOR(counter.<),
	RESTRICT = pg_catalog.scalargesel,
	JOIN = pg_catalog.scalargejoinsel
);

CREATE OPERATOR counter.> (
	LEFTARG = counter.sharded_counter,
	RIGHTARG = counter.sharded_counter,
	FUNCTION = counter.sharded_counter_gt,
	COMMUTATOR = OPERATOR(counter.<),
	NEGATOR = OPERATOR(counter.<=),
	RESTRICT = pg_catalog.scalargtsel,
	JOIN = pg_catalog.scalargtjoinsel
);

-- Btree by value.  No equalimage support function on purpose: equal values
-- need not have equal bytes, so btree deduplication must stay off.
CREATE OPERATOR CLASS counter.sharded_counter_ops
	DEFAULT FOR TYPE counter.sharded_counter USING btree AS
		OPERATOR 1 counter.<,
		OPERATOR 2 counter.<=,
		OPERATOR 3 counter.=,
		OPERATOR 4 counter.>=,
		OPERATOR 5 counter.>,
		FUNCTION 1 counter.sharded_counter_cmp(counter.sharded_counter, counter.sharded_counter);

-- Explicit casts to the value; deliberately no "+" operator (merge is not addition).
CREATE CAST (counter.sharded_counter AS pg_catalog.int8)
	WITH FUNCTION counter.value(counter.sharded_counter);

CREATE CAST (counter.sharded_counter AS pg_catalog.numeric)
	WITH FUNCTION counter.sharded_counter_to_numeric(counter.sharded_counter);
-- END type.sql

--
-- Hidden storage.  Reached only through the functions below: the tables are
-- revoked from PUBLIC and C functions check each caller's rights on the
-- counter themselves.  Column order is relied upon by src/storage.c.
--
CREATE TABLE counter.counters (
	id			int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name		text COLLATE "C" NOT NULL UNIQUE,
	owner		oid NOT NULL,
	mode		text NOT NULL CHECK (mode IN ('slots', 'events', 'buffered')),
	slots		int4 NOT NULL CHECK (slots BETWEEN 1 AND 1024),
	rollups		interval[] NOT NULL,
	retention	interval[] NOT NULL,
	min_value	int8,
	max_value	int8,
	members		bool NOT NULL DEFAULT false,
	created		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CHECK (pg_catalog.cardinality(rollups) = pg_catalog.cardinality(retention)),
	CHECK (min_value IS NULL OR max_value IS NULL OR min_value <= max_value)
);

CREATE TABLE counter.grants (
	counter_id	int4 NOT NULL REFERENCES counter.counters (id) ON DELETE CASCADE,
	grantee		oid NOT NULL,		-- 0 means PUBLIC
	privilege	text NOT NULL CHECK (privilege IN ('read', 'add', 'admin')),
	PRIMARY KEY (counter_id, grantee, privilege)
);

-- One row per (counter, key, slot).  fillfactor 10 and the pad column keep
-- each slot row alone on its heap page, so concurrent adds to one key never
-- share a buffer lock; updates are HOT (value is not indexed).
CREATE TABLE counter.slots (
	counter_id	int4 NOT NULL,
	key			text COLLATE "C" NOT NULL,
	slot		int4 NOT NULL,
	value		int8 NOT NULL,
	lo			int8,				-- escrow share of a bounded counter
	hi			int8,
	touched		timestamptz NOT NULL,
	pad			text NOT NULL,
	PRIMARY KEY (counter_id, key, slot)
) WITH (fillfactor = 10, autovacuum_vacuum_scale_factor = 0.0,
		autovacuum_vacuum_threshold = 1000);

-- Append-only events, deleted by compaction in the transaction that folds
-- them into totals and rollups.
CREATE TABLE counter.events (
	counter_id	int4 NOT NULL,
	key			text COLLATE "C" NOT NULL,
	delta		int8 NOT NULL,
	at			timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.0,
		autovacuum_vacuum_threshold = 10000,
		autovacuum_vacuum_insert_scale_factor = 0.0,
		autovacuum_vacuum_insert_threshold = 100000);
CREATE INDEX events_key ON counter.events (counter_id, key);

-- Compacted values: one PN-counter shard per node.  Keyed by counter name,
-- not id, so that nodes can exchange rows by logical replication.
CREATE TABLE counter.totals (
	counter		text COLLATE "C" NOT NULL,
	key			text COLLATE "C" NOT NULL,
	node		int4 NOT NULL,
	state		counter.sharded_counter NOT NULL,
	value		int8 GENERATED ALWAYS AS (counter.value(state)) STORED,
	PRIMARY KEY (counter, key, node)
);
CREATE INDEX totals_top ON counter.totals (counter, node, value DESC);

-- Per-bucket sums.  A bucket of -infinity holds the sum of buckets dropped by
-- retention, so the buckets of a granularity always add up to the total.
CREATE TABLE counter.rollups (
	counter_id	int4 NOT NULL,
	key			text COLLATE "C" NOT NULL,
	granularity	interval NOT NULL,
	bucket		timestamptz NOT NULL,
	value		int8 NOT NULL,
	PRIMARY KEY (counter_id, key, granularity, bucket)
);

CREATE TABLE counter.idempotency (
	idem		text COLLATE "C" PRIMARY KEY,
	counter_id	int4 NOT NULL,
	key			text COLLATE "C" NOT NULL,
	delta		int8 NOT NULL,
	created		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX idempotency_created ON counter.idempotency (created);

REVOKE ALL ON ALL TABLES IN SCHEMA counter FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA counter FROM PUBLIC;
GRANT USAGE ON SCHEMA counter TO PUBLIC;

-- pg_dump carries the data of every table along with the extension
SELECT pg_catalog.pg_extension_config_dump('counter.counters', '');
SELECT pg_catalog.pg_extension_config_dump('counter.counters_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('counter.grants', '');
SELECT pg_catalog.pg_extension_config_dump('counter.slots', '');
SELECT pg_catalog.pg_extension_config_dump('counter.events', '');
SELECT pg_catalog.pg_extension_config_dump('counter.totals', '');
SELECT pg_catalog.pg_extension_config_dump('counter.rollups', '');
SELECT pg_catalog.pg_extension_config_dump('counter.idempotency', '');

--
-- Managing counters
--
CREATE FUNCTION counter."create"(name text,
								 mode text DEFAULT 'slots',
								 slots int4 DEFAULT 64,
								 rollups interval[] DEFAULT '{1 hour,1 day}',
								 retention interval[] DEFAULT NULL,
								 min int8 DEFAULT NULL,
								 max int8 DEFAULT NULL,
								 members bool DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_create'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter."alter"(name text,
								mode text DEFAULT NULL,
								slots int4 DEFAULT NULL,
								rollups interval[] DEFAULT NULL,
								retention interval[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_alter'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter."drop"(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_drop'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter."grant"(name text, role text, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_grant'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter."revoke"(name text, role text, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_revoke'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

--
-- Adding and reading
--
CREATE FUNCTION counter.add(name text, key text, delta int8 DEFAULT 1,
							idempotency_key text DEFAULT NULL,
							at timestamptz DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_add'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.add_and_get(name text, key text, delta int8 DEFAULT 1,
									idempotency_key text DEFAULT NULL)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_add_and_get'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.increment(name text, key text)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_increment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.decrement(name text, key text)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_decrement'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.reset(name text, key text)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_reset'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.value(name text, key text)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_value'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION counter."values"(name text, keys text[])
RETURNS TABLE (key text, value int8)
AS 'MODULE_PATHNAME', 'counter_values'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION counter.top(name text, k int4 DEFAULT 10)
RETURNS TABLE (key text, value int8)
AS 'MODULE_PATHNAME', 'counter_top'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION counter.series(name text, key text, "from" timestamptz,
							   "to" timestamptz,
							   granularity interval DEFAULT '1 hour')
RETURNS TABLE (bucket timestamptz, value int8)
AS 'MODULE_PATHNAME', 'counter_series'
LANGUAGE C STABLE PARALLEL RESTRICTED;

--
-- Maintenance and monitoring
--
CREATE FUNCTION counter.compact(name text DEFAULT NULL)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_compact'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION counter.verify(name text)
RETURNS TABLE (granularity interval, keys int8, drifted_keys int8, drift numeric)
AS 'MODULE_PATHNAME', 'counter_verify'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION counter.worker_status()
RETURNS TABLE (database name, pid int4, started timestamptz,
			   last_compaction timestamptz, compactions int8,
			   events_compacted int8, slot_rows_collected int8,
			   last_batch int8, last_rate float8)
AS 'MODULE_PATHNAME', 'counter_worker_status'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- true when the calling role may read the counter (filters the views below)
CREATE FUNCTION counter.can_read(name text)
RETURNS bool
AS 'MODULE_PATHNAME', 'counter_can_read'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;

CREATE VIEW counter.stats AS
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
	   w.last_rate AS events_compacted_per_s
  FROM counter.counters c
  LEFT JOIN counter.worker_status() w ON w.database = pg_catalog.current_database()
 WHERE counter.can_read(c.name);

CREATE FUNCTION counter.list()
RETURNS TABLE (name text, mode text, slots int4, rollups interval[],
			   retention interval[], min int8, max int8, members bool,
			   owner regrole)
AS $$
	SELECT s.name, s.mode, s.slots, s.rollups, s.retention, s.min, s.max,
		   s.members, s.owner
	  FROM counter.stats s ORDER BY s.name
$$ LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp;

GRANT SELECT ON counter.stats TO PUBLIC;

-- wake the launcher so this database gets its worker now
CREATE FUNCTION counter._wake_launcher()
RETURNS void
AS 'MODULE_PATHNAME', 'counter_wake_launcher'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION counter._wake_launcher() FROM PUBLIC;
SELECT counter._wake_launcher();
