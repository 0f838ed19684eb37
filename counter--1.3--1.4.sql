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
-- takes a read right away (src/api.c).  Set here for every existing
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

-- counter.stats (a security barrier since 1.4) is defined once, in section
-- 'feed option' below, with every column 1.4 adds.

-- == end section: feed ==

-- == section: misc ==

-- top(): this node's totals in the result's order, value then key, so that
-- the candidates of a top-k decide ties at the cut as the result does.
-- Only top() reads it (src/topk.c, through the index itself), so it is
-- partial on a predicate every row meets and no query states: the planner
-- never takes it for a probe of one key.  Planned while totals was empty,
-- such a probe (counter, node, then key) costs what the primary key's
-- costs, and a plan kept from then (the worker's batches, a session's)
-- walked every total of the node for each key once the table had filled.
DROP INDEX counter.totals_top;
CREATE INDEX totals_top ON counter.totals (counter, node, value DESC, key)
	WHERE value IS NOT NULL;

-- == end section: misc ==

-- == section: nodes (add_node / remove_node / counter.nodes) ==

-- Multi-node meshes wired by counter.add_node() (src/nodes.c).  Every node
-- publishes all of counter.totals (publication counter_mesh, no row
-- filter) and subscribes to every other member, so every node holds and
-- republishes every shard, also the shards of nodes that left: a node that
-- joins at any time copies the whole history from any member.  Rows that
-- arrive twice (directly and as a peer's echo) are joined, not applied:
-- see counter._totals_join below.

-- The members of this node's mesh, this node included, as this node knows
-- them.  Each member keeps its own copy, written by add_node() and
-- remove_node() on every member they reach.  conninfo is how every member
-- connects to it (the member's counter.node_conninfo).
CREATE TABLE counter.mesh (
	name		text COLLATE "C" PRIMARY KEY,
	node_id		int4 NOT NULL UNIQUE,
	conninfo	text NOT NULL,
	joined		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON counter.mesh FROM PUBLIC;

-- A row of counter.totals that logical replication applies is joined with
-- the row already there (PN-counter join: per shard, the larger totals),
-- never written over it: an update that changes nothing is skipped, so an
-- echo of a row that a node already holds goes no further; an insert of a
-- row that exists (the initial copy of a re-joining node, or the same new
-- row arriving from two peers at once) is merged into it.  Enabled only for
-- replication (ENABLE REPLICA TRIGGER): apply and initial-copy workers run
-- with session_replication_role = replica, local compaction pays nothing.
CREATE FUNCTION counter._totals_join()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		NEW.state := counter.merge(OLD.state, NEW.state);
		-- where this node's buckets are is this node's to say
		NEW.sole := OLD.sole;
		IF NEW.counter = OLD.counter AND NEW.key = OLD.key AND NEW.node = OLD.node
		   AND NEW.state::text = OLD.state::text THEN
			RETURN NULL;
		END IF;
		RETURN NEW;
	END IF;
	-- the insert below, at depth 2, is the real one
	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NEW;
	END IF;
	INSERT INTO counter.totals AS t (counter, key, node, state)
	VALUES (NEW.counter, NEW.key, NEW.node, NEW.state)
	ON CONFLICT (counter, key, node) DO UPDATE SET state = excluded.state;
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION counter._totals_join() FROM PUBLIC;

CREATE TRIGGER totals_join BEFORE INSERT OR UPDATE ON counter.totals
	FOR EACH ROW EXECUTE FUNCTION counter._totals_join();
ALTER TABLE counter.totals ENABLE REPLICA TRIGGER totals_join;

-- Join this node to the mesh of the member reachable at conninfo (NULL:
-- found a mesh of one).  Run on the joining node, as a superuser.
CREATE FUNCTION counter.add_node(name text, conninfo text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_add_node'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION counter.add_node(text, text) FROM PUBLIC;

-- Take the member name out of the mesh, on any member; drains it first
-- when it is reachable.  Its shard stays on every node.
CREATE FUNCTION counter.remove_node(name text, drain_timeout interval DEFAULT '1 min')
RETURNS void
AS 'MODULE_PATHNAME', 'counter_remove_node'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION counter.remove_node(text, interval) FROM PUBLIC;

-- One row per member of the mesh as this node sees it, and one per
-- orphaned counter slot (its subscriber is no member): the subscription
-- that brings the member's rows here (counter_n<here>_from_n<member>) and
-- the slot through which the member takes this node's rows
-- (counter_n<member>_from_n<here>).
CREATE VIEW counter.nodes AS
WITH me AS (SELECT pg_catalog.current_setting('counter.node_id')::int4 AS id),
peers AS (
	SELECT m.name, m.node_id, m.node_id = me.id AS is_self, m.conninfo,
		   pg_catalog.format('counter_n%s_from_n%s', me.id, m.node_id) AS sub_name,
		   pg_catalog.format('counter_n%s_from_n%s', m.node_id, me.id) AS slot
	  FROM counter.mesh m, me
),
slots AS (
	SELECT s.slot_name::text AS slot, s.active, s.active_pid,
		   pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::int8 AS lag_bytes,
		   pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::int8 AS slot_bytes,
		   (pg_catalog.regexp_match(s.slot_name::text, '^counter_n([0-9]+)_from_n'))[1]::int4 AS subscriber
	  FROM pg_catalog.pg_replication_slots s
	 WHERE s.slot_name::text ~ '^counter_n[0-9]+_from_n[0-9]+$'
	   AND s.database = pg_catalog.current_database()
)
SELECT p.name,
	   p.node_id,
	   CASE
		   WHEN p.is_self THEN 'self'
		   WHEN s.oid IS NULL THEN 'not subscribed'
		   WHEN NOT s.subenabled THEN 'disabled'
		   WHEN st.pid IS NULL THEN 'down'
		   WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
						 WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') THEN 'syncing'
		   WHEN sl.slot IS NULL THEN 'no slot here'
		   WHEN NOT sl.active THEN 'not receiving'
		   ELSE 'streaming'
	   END AS status,
	   CASE WHEN p.is_self THEN NULL ELSE p.sub_name END AS subscription,
	   s.subenabled AS enabled,
	   st.last_msg_receipt_time AS last_received,
	   pg_catalog.now() - st.last_msg_receipt_time AS since_received,
	   CASE WHEN p.is_self THEN NULL ELSE p.slot END AS slot,
	   sl.active AS slot_active,
	   sl.lag_bytes,
	   r.replay_lag AS lag,
	   sl.slot_bytes,
	   p.conninfo
  FROM peers p
  LEFT JOIN pg_catalog.pg_subscription s
	ON s.subname = p.sub_name AND NOT p.is_self
   AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d
					 WHERE d.datname = pg_catalog.current_database())
  LEFT JOIN pg_catalog.pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
  LEFT JOIN slots sl ON sl.slot = p.slot AND NOT p.is_self
  LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = sl.active_pid
UNION ALL
SELECT NULL, sl.subscriber, 'orphaned slot', NULL, NULL, NULL, NULL,
	   sl.slot, sl.active, sl.lag_bytes, r.replay_lag, sl.slot_bytes, NULL
  FROM slots sl
  LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = sl.active_pid
 WHERE NOT EXISTS (SELECT 1 FROM peers p WHERE p.slot = sl.slot);
REVOKE ALL ON counter.nodes FROM PUBLIC;

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

-- == section: sole (a key's buckets held by its total) ==

-- Set on this node's total of a key whose every add compacted so far fell
-- in one bucket of each granularity of its counter: then its buckets are
-- those holding this time, each worth the whole total, and
-- counter.rollups has no row of the key (compaction writes them out, and
-- clears it, once an add falls in another bucket, a bucket is past
-- retention, or counter.alter() changes the granularities).  A key added
-- to within one hour or day costs one row, not one per granularity more.
-- Only this node's own rows carry it (counter._totals_join keeps a row's
-- own value against a peer's copy).
ALTER TABLE counter.totals ADD COLUMN sole timestamptz;

-- == end section: sole ==

-- == section: feed option ==

-- The change feed only where it is wanted: counters.feed says whether
-- compaction sends a counter's changed keys on its feed channel.  Existing
-- counters keep their feed (the column is added as true); new ones have
-- none unless created with feed => true (the default below), since the
-- feed costs compaction a read of each changed key's totals and a NOTIFY
-- queue entry per key whether anyone listens or not.
ALTER TABLE counter.counters ADD COLUMN feed bool NOT NULL DEFAULT true;
ALTER TABLE counter.counters ALTER COLUMN feed SET DEFAULT false;

-- Feed entries that compaction dropped because the NOTIFY queue was fuller
-- than counter.feed_queue_limit (a stuck listener, say), per counter;
-- shown in counter.stats as feed_dropped.
CREATE TABLE counter.feed_drops (
	counter_id	int4 PRIMARY KEY REFERENCES counter.counters (id) ON DELETE CASCADE,
	dropped		int8 NOT NULL
);
REVOKE ALL ON counter.feed_drops FROM PUBLIC;

DROP FUNCTION counter."create"(text, text, int4, interval[], interval[], int8, int8, bool);
CREATE FUNCTION counter."create"(name text,
								 mode text DEFAULT 'slots',
								 slots int4 DEFAULT 64,
								 rollups interval[] DEFAULT '{1 hour,1 day}',
								 retention interval[] DEFAULT NULL,
								 min int8 DEFAULT NULL,
								 max int8 DEFAULT NULL,
								 members bool DEFAULT false,
								 feed bool DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_create'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

DROP FUNCTION counter."alter"(text, text, int4, interval[], interval[]);
CREATE FUNCTION counter."alter"(name text,
								mode text DEFAULT NULL,
								slots int4 DEFAULT NULL,
								rollups interval[] DEFAULT NULL,
								retention interval[] DEFAULT NULL,
								feed bool DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_alter'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- counter.stats gains quarantined_keys, feed and feed_dropped: see the
-- section stats at the end, which defines the view once with every column
-- of 1.4.

-- == end section: feed option ==

-- == section: internal (version-dependent SQL as internal functions) ==

-- The statements of src/api.c whose SQL differs between versions, as
-- functions: C runs one statement per job, "SELECT counter._job(...)", as
-- the schema's owner (src/catalog.c), and each later upgrade script
-- replaces a body where its version changes the job (CREATE OR REPLACE).
-- SQL-standard bodies: parsed here, with every name bound now, so nothing
-- depends on the search_path of a call.  Schemas older than 1.4 run the
-- statements of src/legacy.c instead.  Parameters are positional ($n), as
-- the statements were: column names would shadow parameter names.

-- A new counter owned by owner, from counter.create()'s checked arguments.
CREATE FUNCTION counter._create(name text, owner oid, mode text, slots int4,
								rollups interval[], retention interval[],
								min int8, max int8, members bool, feed bool)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
BEGIN ATOMIC
	INSERT INTO counter.counters (name, owner, mode, slots, rollups, retention,
								  min_value, max_value, members, feed)
	VALUES ($1, $2, $3, $4, $5,
			coalesce($6, pg_catalog.array_fill(NULL::interval,
											   ARRAY[pg_catalog.cardinality($5)])),
			$7, $8, $9, coalesce($10, false));
END;
REVOKE ALL ON FUNCTION counter._create(text, oid, text, int4, interval[], interval[],
									   int8, int8, bool, bool) FROM PUBLIC;

-- counter.alter() of counter id: NULL keeps a setting; rollups of a
-- granularity dropped go, and a new granularity starts from this node's
-- compacted total (node), in one bucket.  When rollups are given, the
-- buckets that this node's totals held (totals.sole) are written out.
CREATE FUNCTION counter._alter(id int4, mode text, slots int4, rollups interval[],
							   retention interval[], node int4, feed bool)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
BEGIN ATOMIC
	WITH o AS (SELECT rollups FROM counter.counters WHERE id = $1),
	c AS (
		UPDATE counter.counters SET mode = coalesce($2, mode), slots = coalesce($3, slots),
			   rollups = coalesce($4, rollups),
			   retention = coalesce($5, CASE WHEN $4 IS NULL THEN retention
											 ELSE pg_catalog.array_fill(NULL::interval,
																		ARRAY[pg_catalog.cardinality($4)]) END),
			   feed = coalesce($7, feed)
		 WHERE id = $1 RETURNING id, name, rollups),
	gone AS (DELETE FROM counter.rollups r USING c
			  WHERE r.counter_id = c.id AND r.granularity <> ALL (c.rollups)),
	s AS (SELECT t.ctid, t.key, t.sole, t.value FROM c, counter.totals t
		   WHERE t.counter = c.name AND t.node = $6 AND t.sole IS NOT NULL AND $4 IS NOT NULL),
	u AS (UPDATE counter.totals t SET sole = NULL FROM s WHERE t.ctid = s.ctid)
	INSERT INTO counter.rollups (counter_id, key, granularity, bucket, value)
	SELECT c.id, t.key, g.g, '-infinity', t.value
	  FROM c, o, pg_catalog.unnest(c.rollups) g(g), counter.totals t
	 WHERE t.counter = c.name AND t.node = $6 AND $4 IS NOT NULL
	   AND g.g <> ALL (o.rollups)
	UNION ALL
	SELECT c.id, s.key, g.g,
		   pg_catalog.date_bin(g.g, s.sole, timestamptz '2000-01-01 00:00:00+00'), s.value
	  FROM c, o, s, pg_catalog.unnest(c.rollups) g(g)
	 WHERE g.g = ANY (o.rollups);
END;
REVOKE ALL ON FUNCTION counter._alter(int4, text, int4, interval[], interval[], int4, bool)
	FROM PUBLIC;

-- counter.drop() of counter id (named name): its rows of this node (node).
-- Peers' rows of counter.totals stay: they are their nodes' shares,
-- replicated here.  Rows of tables with a foreign key on counters go with
-- the counter.
CREATE FUNCTION counter._drop(id int4, name text, node int4)
RETURNS void
LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE
BEGIN ATOMIC
	WITH s AS (DELETE FROM counter.slots WHERE counter_id = $1),
	e AS (DELETE FROM counter.events WHERE counter_id = $1),
	e1 AS (DELETE FROM counter.events_1 WHERE counter_id = $1),
	r AS (DELETE FROM counter.rollups WHERE counter_id = $1),
	i AS (DELETE FROM counter.idempotency WHERE counter_id = $1),
	t AS (DELETE FROM counter.totals WHERE counter = $2 AND node = $3)
	DELETE FROM counter.counters WHERE id = $1;
END;
REVOKE ALL ON FUNCTION counter._drop(int4, text, int4) FROM PUBLIC;

-- counter.revoke() of one grant of counter id; taking a read right away
-- (read, or admin, which includes it) also gives the counter a new feed
-- channel, so the role that lost the right can follow the feed no longer.
CREATE FUNCTION counter._revoke(id int4, grantee oid, privilege text)
RETURNS void
LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE
BEGIN ATOMIC
	WITH d AS (DELETE FROM counter.grants
				WHERE counter_id = $1 AND grantee = $2 AND privilege = $3)
	UPDATE counter.counters SET feed_channel = DEFAULT
	 WHERE id = $1 AND $3 <> 'add';
END;
REVOKE ALL ON FUNCTION counter._revoke(int4, oid, text) FROM PUBLIC;

-- counter.series() of counter id's key: the non-empty buckets of
-- granularity from "from" to "to": rollups (or the one bucket this node's
-- total holds: totals.sole), plus events not yet compacted
-- in their own (event time) bucket, plus slot deltas not yet collected in
-- the current bucket (slot adds are bucketed when the worker collects
-- them).  Not STRICT, so that the planner inlines it into the caller's
-- statement (kept planned there).
CREATE FUNCTION counter._series(id int4, key text, "from" timestamptz,
								"to" timestamptz, granularity interval)
RETURNS TABLE (bucket timestamptz, value int8)
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
	WITH o AS (SELECT timestamptz '2000-01-01 00:00:00+00' AS origin),
	lo AS (SELECT pg_catalog.date_bin($5, $3, o.origin) AS b FROM o)
	SELECT s.b, pg_catalog.sum(s.v)::int8 FROM (
		SELECT bucket AS b, value AS v FROM counter.rollups
		 WHERE counter_id = $1 AND key = $2 AND granularity = $5
		   AND bucket >= (SELECT b FROM lo) AND bucket < $4
		UNION ALL
		SELECT pg_catalog.date_bin($5, t.sole, o.origin), t.value
		  FROM counter.counters c, counter.totals t, o
		 WHERE c.id = $1 AND $5 = ANY (c.rollups)
		   AND t.counter = c.name AND t.key = $2
		   AND t.node = coalesce(pg_catalog.current_setting('counter.node_id', true)::int4, 1)
		   AND t.sole IS NOT NULL
		UNION ALL
		SELECT pg_catalog.date_bin($5, e.at, o.origin), e.delta
		  FROM counter.pending_events e, o
		 WHERE e.counter_id = $1 AND e.key = $2
		UNION ALL
		SELECT pg_catalog.date_bin($5, pg_catalog.now(), o.origin), s.value
		  FROM counter.slots s, o
		 WHERE s.counter_id = $1 AND s.key = $2) s
	 WHERE s.b >= (SELECT b FROM lo) AND s.b < $4
	 GROUP BY s.b HAVING pg_catalog.sum(s.v) <> 0 ORDER BY s.b;
END;
REVOKE ALL ON FUNCTION counter._series(int4, text, timestamptz, timestamptz, interval)
	FROM PUBLIC;

-- == end section: internal ==

-- == section: idem (idempotency keys across a mesh) ==

-- Each row of counter.idempotency is a claim: an add (counter, key, delta)
-- made under the key, by node at created.  Since 1.4 the claim names its
-- counter (counter ids are local to each node) and its node, and the table
-- is published to the mesh (src/nodes.c), so a key claimed on one node
-- holds on every node once its claim has arrived.  counter_id is this
-- node's id of the counter (NULL for a claim that arrived for a counter
-- this node does not have).  Existing keys become claims of this node.
ALTER TABLE counter.idempotency
	ADD COLUMN counter text COLLATE "C",
	ADD COLUMN node int4;
UPDATE counter.idempotency i
   SET counter = c.name,
	   node = coalesce(pg_catalog.current_setting('counter.node_id', true)::int4, 1)
  FROM counter.counters c
 WHERE c.id = i.counter_id;
DELETE FROM counter.idempotency WHERE counter IS NULL;
ALTER TABLE counter.idempotency
	ALTER COLUMN counter SET NOT NULL,
	ALTER COLUMN node SET NOT NULL,
	ALTER COLUMN counter_id DROP NOT NULL;

-- This node's adds undone because another node's claim of the same key
-- won (see counter._idempotency_join), per counter: undone in all,
-- mismatched those whose claims named another add (counter, key or
-- delta).  Shown in counter.stats.
CREATE TABLE counter.idempotency_conflicts (
	counter_id	int4 PRIMARY KEY REFERENCES counter.counters (id) ON DELETE CASCADE,
	undone		int8 NOT NULL,
	mismatched	int8 NOT NULL
);
REVOKE ALL ON counter.idempotency_conflicts FROM PUBLIC;

-- Add delta to this node's shard of (counter, key), bypassing rights, the
-- refusal of plain adds to membership counters and bounds: a correction
-- of what already happened, made by replication's triggers (an
-- idempotency claim of this node that lost, a liked member row of this
-- node that a peer's later row replaced; src/apply.c).  Nothing if the
-- counter is not defined here.
CREATE FUNCTION counter._correct(name text, key text, delta int8)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_correct'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION counter._correct(text, text, int8) FROM PUBLIC;

-- A claim that logical replication applies is merged with the claim of the
-- same key already here, never written over it.  Two claims made less than
-- counter.idempotency_window apart are one request: the earlier claim wins
-- (the lower node id on a tie), on every node alike.  When the claim that
-- loses is this node's own, this node takes its add back from its own
-- shard (counter._correct, in the apply worker's transaction) and counts
-- it in counter.idempotency_conflicts; a loser that named another add
-- (another counter, key or delta) is also a WARNING.  Claims a window or
-- more apart are separate adds: the later one stays.  The winner is
-- written by a delete and an insert, never an update, so that every node
-- receives it whole; replicated deletes are skipped, since each node
-- forgets claims by itself, by claim time (src/compact.c).  Enabled only
-- for replication, like counter._totals_join: local adds pay nothing.
CREATE FUNCTION counter._idempotency_join()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	win interval := pg_catalog.current_setting('counter.idempotency_window')::interval;
	me int4 := pg_catalog.current_setting('counter.node_id')::int4;
	cur counter.idempotency;
	other bool;
BEGIN
	-- the statements below, at depth 2, are the real ones
	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
	END IF;
	IF TG_OP = 'DELETE' THEN
		RETURN NULL;
	END IF;
	LOOP
		SELECT * INTO cur FROM counter.idempotency i WHERE i.idem = NEW.idem FOR UPDATE;
		IF FOUND THEN
			IF NEW.created < cur.created + win AND
			   (cur.created >= NEW.created + win OR
				(cur.created, cur.node) <= (NEW.created, NEW.node)) THEN
				RETURN NULL;	-- the same claim, a stale one, or a loser
			END IF;
			IF NEW.created < cur.created + win AND cur.node = me
			   AND cur.counter_id IS NOT NULL THEN
				-- this node's own add lost: take it back
				other := (cur.counter, cur.key, cur.delta) IS DISTINCT FROM
						 (NEW.counter, NEW.key, NEW.delta);
				PERFORM counter._correct(cur.counter, cur.key, -cur.delta);
				INSERT INTO counter.idempotency_conflicts AS s (counter_id, undone, mismatched)
				VALUES (cur.counter_id, 1, other::int4)
				ON CONFLICT (counter_id) DO UPDATE
				   SET undone = s.undone + 1, mismatched = s.mismatched + excluded.mismatched;
				IF other THEN
					RAISE WARNING 'idempotency key "%" was used for another add on node %', NEW.idem, NEW.node
						USING ERRCODE = '22023',
							  DETAIL = pg_catalog.format('Node %s added %s to counter "%s" key "%s" at %s, node %s (here) %s to counter "%s" key "%s" at %s; the earlier add is kept, this node''s is undone.',
														 NEW.node, NEW.delta, NEW.counter, NEW.key, NEW.created,
														 cur.node, cur.delta, cur.counter, cur.key, cur.created);
				END IF;
			END IF;
			DELETE FROM counter.idempotency i WHERE i.idem = NEW.idem;
		ELSIF NEW.created < pg_catalog.now() - win THEN
			RETURN NULL;		-- forgotten here already
		END IF;
		INSERT INTO counter.idempotency (idem, counter_id, key, delta, created, counter, node)
		VALUES (NEW.idem, (SELECT c.id FROM counter.counters c WHERE c.name = NEW.counter),
				NEW.key, NEW.delta, NEW.created, NEW.counter, NEW.node)
		ON CONFLICT (idem) DO NOTHING;
		IF FOUND THEN
			RETURN NULL;
		END IF;
		-- a local add claimed the key meanwhile: merge with that claim
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION counter._idempotency_join() FROM PUBLIC;

CREATE TRIGGER idempotency_join BEFORE INSERT OR UPDATE OR DELETE ON counter.idempotency
	FOR EACH ROW EXECUTE FUNCTION counter._idempotency_join();
ALTER TABLE counter.idempotency ENABLE REPLICA TRIGGER idempotency_join;

-- == end section: idem ==

-- == section: storage (buffered fallbacks in counter.stats, no rollups by default) ==

-- No autovacuum of the events tables: compaction folds a table whole and
-- empties it with TRUNCATE, and its statements are planned the same
-- whatever the statistics say.  A VACUUM or ANALYZE that autovacuum starts
-- on a table just filled (a burst of a million adds) holds a lock the
-- rotation cannot take without waiting for it: after a second the
-- compaction gave up the rotation and deleted the events row by row, and
-- meanwhile it read and wrote the table against the fold for nothing.
-- (Anti-wraparound vacuums still run.)
ALTER TABLE counter.events SET (autovacuum_enabled = false, toast.autovacuum_enabled = false);
ALTER TABLE counter.events_1 SET (autovacuum_enabled = false, toast.autovacuum_enabled = false);

-- Adds of new keys of a buffered or wal counter stored as events since the
-- server started because the shared hash held counter.buffered_keys keys.
CREATE FUNCTION counter._buffered_fallbacks(name text)
RETURNS int8
AS 'MODULE_PATHNAME', 'counter_buffered_fallbacks'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

-- New counters have no rollups unless asked for: a rollup costs a row per
-- key and bucket (about 150 bytes each, a granularity of '1 day' one row
-- per key per day it is added on), more than the key's total.  Replaces
-- the definition of section 'feed option', with only this default changed;
-- existing counters keep their rollups.
CREATE OR REPLACE FUNCTION counter."create"(name text,
								 mode text DEFAULT 'slots',
								 slots int4 DEFAULT 64,
								 rollups interval[] DEFAULT '{}',
								 retention interval[] DEFAULT NULL,
								 min int8 DEFAULT NULL,
								 max int8 DEFAULT NULL,
								 members bool DEFAULT false,
								 feed bool DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_create'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Compaction inserts a batch's new keys into counter.totals in the order of
-- its indexes, so a counter's new keys (increasing post ids, a first
-- compaction) are added at the right end of its range: pages full there
-- (fillfactor 100) rather than 90% cost about 10% less index per key.
-- Keys added in between split pages half and half either way; the setting
-- applies from the next page split on.
ALTER INDEX counter.totals_pkey SET (fillfactor = 100);
ALTER INDEX counter.totals_top SET (fillfactor = 100);

-- == end section: storage ==

-- == section: bounds (global bounds: escrow rights across the nodes of a mesh) ==

-- A bounded counter in a mesh of more than one member keeps its bounds
-- globally by escrow: the headroom above min (and below max) is split into
-- rights held by the nodes, and the slot rows of a node share out only the
-- rights that node holds (src/rights.c, src/slots.c).  A node's rights on a
-- key and bound are not stored as such: they follow from its own shard and
-- the rows below, as AntidoteDB's bounded counter does it.  For min, the
-- node's own contribution (its shard of counter.totals plus its slot
-- values) must stay at or above
--   L = (min if the node holds the initial headroom, else 0)
--       + what it gave away - what it has credited of what it received,
-- so its increments create rights there, its decrements consume them; for
-- max it must stay at or below U = (max or 0) - given + credited.  The sum
-- of every node's L is min plus the rights in flight, so the sum of the
-- contributions, the value, stays within the bound wherever it is read.

-- Replicated (publication counter_mesh): a row (src <> dst) holds what
-- node src has transferred to node dst in total, and in how many moves;
-- a row (src = dst) holds how often node src asked for rights, each refused
-- add it noticed.  Each row is written by its src node only, its numbers
-- only grow, and replicas are joined by the larger (counter._rights_join).
CREATE TABLE counter.bound_rights (
	counter		text COLLATE "C" NOT NULL,
	key			text COLLATE "C" NOT NULL,
	bound		text COLLATE "C" NOT NULL CHECK (bound IN ('min', 'max')),
	src			int4 NOT NULL,
	dst			int4 NOT NULL,
	amount		int8 NOT NULL CHECK (amount >= 0),
	moves		int8 NOT NULL DEFAULT 0 CHECK (moves >= 0),
	PRIMARY KEY (counter, key, bound, src, dst)
);
REVOKE ALL ON counter.bound_rights FROM PUBLIC;

-- This node's own book, not replicated: of the rights peer transferred to
-- this node, how much its slot rows hold already (credited), and up to
-- which of peer's asks this node has answered (served).
CREATE TABLE counter.rights_local (
	counter		text COLLATE "C" NOT NULL,
	key			text COLLATE "C" NOT NULL,
	bound		text COLLATE "C" NOT NULL CHECK (bound IN ('min', 'max')),
	peer		int4 NOT NULL,
	credited	int8 NOT NULL DEFAULT 0,
	served		int8 NOT NULL DEFAULT 0,
	PRIMARY KEY (counter, key, bound, peer)
);
REVOKE ALL ON counter.rights_local FROM PUBLIC;

-- A row of counter.bound_rights that replication applies is joined with
-- the one there (the larger numbers), as counter._totals_join does it for
-- counter.totals: an echo that changes nothing stops here.
CREATE FUNCTION counter._rights_join()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		NEW.amount := greatest(OLD.amount, NEW.amount);
		NEW.moves := greatest(OLD.moves, NEW.moves);
		IF NEW.counter = OLD.counter AND NEW.key = OLD.key AND NEW.bound = OLD.bound
		   AND NEW.src = OLD.src AND NEW.dst = OLD.dst
		   AND NEW.amount = OLD.amount AND NEW.moves = OLD.moves THEN
			RETURN NULL;
		END IF;
		RETURN NEW;
	END IF;
	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NEW;
	END IF;
	INSERT INTO counter.bound_rights AS b (counter, key, bound, src, dst, amount, moves)
	VALUES (NEW.counter, NEW.key, NEW.bound, NEW.src, NEW.dst, NEW.amount, NEW.moves)
	ON CONFLICT (counter, key, bound, src, dst) DO UPDATE
	   SET amount = excluded.amount, moves = excluded.moves;
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION counter._rights_join() FROM PUBLIC;

CREATE TRIGGER rights_join BEFORE INSERT OR UPDATE ON counter.bound_rights
	FOR EACH ROW EXECUTE FUNCTION counter._rights_join();
ALTER TABLE counter.bound_rights ENABLE REPLICA TRIGGER rights_join;

-- counter.drop() deletes this node's shard of counter.totals; with it go
-- this node's rows of counter.bound_rights (replicated, as the shard's
-- deletion is) and its book, so that a counter created again under the
-- name starts with no rights moved.
CREATE FUNCTION counter._rights_drop()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM counter.bound_rights
	 WHERE counter = OLD.name AND src = pg_catalog.current_setting('counter.node_id')::int4;
	DELETE FROM counter.rights_local WHERE counter = OLD.name;
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION counter._rights_drop() FROM PUBLIC;

CREATE TRIGGER rights_drop AFTER DELETE ON counter.counters
	FOR EACH ROW EXECUTE FUNCTION counter._rights_drop();

-- Take the lock that serializes the headroom of a bounded key (its first
-- slot row, and every change of this node's rights on it); wait or not.
CREATE FUNCTION counter._rights_lock(counter_id int4, key text, wait bool)
RETURNS bool
AS 'MODULE_PATHNAME', 'counter_rights_lock'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION counter._rights_lock(int4, text, bool) FROM PUBLIC;

-- Whether node me is a member of a mesh of more than one: the bounds of
-- its counters are then shared out as rights.
-- Inlined where it is called; a first slot row asks it before reading its
-- share (src/rights.c), so that one node pays a probe of counter.mesh.
CREATE FUNCTION counter._in_mesh(me int4)
RETURNS bool
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT pg_catalog.count(*) > 1 AND coalesce(pg_catalog.bool_or(x.node_id = me), false)
	  FROM counter.mesh x;
END;
REVOKE ALL ON FUNCTION counter._in_mesh(int4) FROM PUBLIC;

-- The share of the whole headroom of (name, key) on node me, as the first
-- slot row of the key there takes it: lo = L - own shard, hi = U - own
-- shard (NULL for a bound the counter lacks); in_mesh false (and the
-- shares NULL) unless me is a member of a mesh of more than one.  The
-- holder of the initial headroom (min, max themselves) is the lowest
-- node id among the members, the nodes with a shard of the key and the
-- nodes that transferred rights on it: the lowest member, until it leaves
-- after having taken part in the key.  Reads in the caller's snapshot.
CREATE FUNCTION counter._rights_share(cname text, k text, me int4, min_bound int8,
									  max_bound int8, OUT in_mesh bool, OUT lo int8, OUT hi int8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH m AS (SELECT counter._in_mesh(me) AS ok),
h AS (SELECT pg_catalog.min(n.i) = me AS holder
		FROM (SELECT x.node_id FROM counter.mesh x
			  UNION ALL SELECT t.node FROM counter.totals t WHERE t.counter = cname AND t.key = k
			  UNION ALL SELECT b.src FROM counter.bound_rights b
			   WHERE b.counter = cname AND b.key = k AND b.src <> b.dst) n(i)),
own AS (SELECT coalesce((SELECT t.value FROM counter.totals t
						  WHERE t.counter = cname AND t.key = k AND t.node = me), 0) AS v),
net AS (SELECT bd.bound,
			   coalesce((SELECT pg_catalog.sum(b.amount) FROM counter.bound_rights b
						  WHERE b.counter = cname AND b.key = k AND b.bound = bd.bound
							AND b.src = me AND b.dst <> me), 0) -
			   coalesce((SELECT pg_catalog.sum(l.credited) FROM counter.rights_local l
						  WHERE l.counter = cname AND l.key = k AND l.bound = bd.bound), 0) AS out
		  FROM (VALUES ('min'), ('max')) bd(bound))
SELECT m.ok,
	   CASE WHEN m.ok AND min_bound IS NOT NULL THEN
		   ((CASE WHEN h.holder THEN min_bound ELSE 0 END) +
			(SELECT net.out FROM net WHERE net.bound = 'min') - own.v)::int8 END,
	   CASE WHEN m.ok AND max_bound IS NOT NULL THEN
		   ((CASE WHEN h.holder THEN max_bound ELSE 0 END) -
			(SELECT net.out FROM net WHERE net.bound = 'max') - own.v)::int8 END
  FROM m, h, own
$$;
REVOKE ALL ON FUNCTION counter._rights_share(text, text, int4, int8, int8) FROM PUBLIC;

-- Give node peer rights on (counter, key, bound) from this node (me): half
-- of what is spare (rounded down: the last unit stays where adds use it,
-- rather than moving to and fro), or all of it when asked to (give_all) or
-- when no add touched the key here for a second; NULL, giving nothing, when
-- the key's lock or every one of its slot rows is held by someone else
-- (try again later; wait: wait for them instead), and when the counter is
-- gone or being dropped.  The rights come out of
-- the slot rows this call locks (each gives its part of its share), or,
-- for a key without slot rows here, out of the whole share; the transfer
-- row is written in the same transaction, so the rights are never in two
-- places.  Never more than this node's shard holds beyond its own bound
-- (-lo, hi of counter._rights_share): rights that adds created but
-- compaction has not yet folded into the shard stay here until it has, so
-- a peer that spends them reads them in the shard too.  Returns the amount
-- given.  The counter's row stays key-share locked to the end of the
-- transaction, so a counter.drop() waits for the transfer row and then
-- deletes it (never leaving a row it could not see); a drop in flight is
-- skipped rather than waited for, so that the two never wait on each other.
CREATE FUNCTION counter._rights_give(cid int4, cname text, k text, bd text, me int4,
									 peer int4, give_all bool, wait bool)
RETURNS int8
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	given	int8 := 0;
	held	int8;
	cap		int8;
	s		record;
	c		counter.counters%ROWTYPE;
BEGIN
	IF NOT counter._rights_lock(cid, k, wait) THEN
		RETURN NULL;
	END IF;
	SELECT * INTO c FROM counter.counters WHERE id = cid FOR KEY SHARE SKIP LOCKED;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	SELECT * INTO s FROM counter._rights_share(cname, k, me, c.min_value, c.max_value);
	cap := greatest(CASE bd WHEN 'min' THEN -s.lo ELSE s.hi END, 0);
	IF EXISTS (SELECT 1 FROM counter.slots x WHERE x.counter_id = cid AND x.key = k) THEN
		IF wait THEN
			PERFORM 1 FROM counter.slots x WHERE x.counter_id = cid AND x.key = k
			  FOR NO KEY UPDATE;
		END IF;
		WITH h AS (SELECT x.ctid AS tid, x.touched,
						  CASE bd WHEN 'min' THEN x.value - x.lo ELSE x.hi - x.value END AS spare
					 FROM counter.slots x WHERE x.counter_id = cid AND x.key = k
					  FOR NO KEY UPDATE SKIP LOCKED),
		t AS (SELECT least(cap, pg_catalog.sum(h.spare)::int8 /
							CASE WHEN give_all OR pg_catalog.max(h.touched) < pg_catalog.now() - interval '1 second'
								 THEN 1 ELSE 2 END) AS target
				FROM h WHERE h.spare > 0),
		g AS (SELECT h.tid,
					 least(h.spare, t.target - coalesce(pg_catalog.sum(h.spare) OVER
						 (ORDER BY h.tid ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::int8) AS part
				FROM h, t WHERE h.spare > 0),
		u AS (UPDATE counter.slots x
				 SET lo = CASE bd WHEN 'min' THEN x.lo + g.part ELSE x.lo END,
					 hi = CASE bd WHEN 'max' THEN x.hi - g.part ELSE x.hi END
				FROM g WHERE x.ctid = g.tid AND g.part > 0
			  RETURNING g.part)
		SELECT coalesce((SELECT pg_catalog.sum(u.part) FROM u), 0), (SELECT pg_catalog.count(*) FROM h)
		  INTO given, held;
		IF held = 0 THEN
			RETURN NULL;
		END IF;
	ELSE
		given := cap;
	END IF;
	INSERT INTO counter.bound_rights AS b (counter, key, bound, src, dst, amount, moves)
	VALUES (cname, k, bd, me, peer, given, (given > 0)::int)
	ON CONFLICT (counter, key, bound, src, dst) DO UPDATE
	   SET amount = b.amount + excluded.amount, moves = b.moves + excluded.moves;
	RETURN given;
END
$$;
REVOKE ALL ON FUNCTION counter._rights_give(int4, text, text, text, int4, int4, bool, bool) FROM PUBLIC;

-- One round of this node's worker in a mesh of more than one member: the
-- asks noticed since the last round (counter ids, hashtext() of keys,
-- whether it was the max bound, how many refusals) become ask rows for
-- every key of those counters with that hash; rights transferred to this
-- node are credited to one of its slot rows of the key; every peer's ask
-- not yet answered gets half of this node's spare rights (all of them on
-- a key idle here).  A key whose lock or rows are held is left to the next
-- round.  Returns the number of transfers made; NULL when this node is in
-- no mesh of more than one member (its worker then stops noting refusals).
-- Every counter the round writes rows for is key-share locked first, with
-- SKIP LOCKED (as counter._rights_give does): a counter.drop() committed
-- meanwhile is seen, one in flight is skipped (its asks are dropped with
-- it), and a later one waits for this transaction and deletes its rows.
CREATE FUNCTION counter._rights_round(ids int4[], hashes int4[], maxes bool[], counts int8[])
RETURNS int8
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	me		int4 := pg_catalog.current_setting('counter.node_id')::int4;
	r		record;
	g		int8;
	nmoves	int8 := 0;
	live	int4[];
BEGIN
	IF NOT counter._in_mesh(me) THEN
		RETURN NULL;
	END IF;

	live := ARRAY(SELECT c.id FROM counter.counters c WHERE c.id = ANY (ids)
				   FOR KEY SHARE SKIP LOCKED);
	INSERT INTO counter.bound_rights AS b (counter, key, bound, src, dst, amount)
	SELECT c.name, k.key, CASE WHEN a.mx THEN 'max' ELSE 'min' END, me, me, pg_catalog.sum(a.n)
	  FROM unnest(ids, hashes, maxes, counts) a(id, h, mx, n)
	  JOIN counter.counters c ON c.id = a.id AND c.id = ANY (live)
	 CROSS JOIN LATERAL (SELECT s.key FROM counter.slots s
						  WHERE s.counter_id = a.id AND pg_catalog.hashtext(s.key) = a.h
						 UNION
						 SELECT t.key FROM counter.totals t
						  WHERE t.counter = c.name AND pg_catalog.hashtext(t.key) = a.h) k
	 GROUP BY 1, 2, 3
	ON CONFLICT (counter, key, bound, src, dst) DO UPDATE SET amount = b.amount + excluded.amount;

	FOR r IN SELECT b.counter, b.key, b.bound, b.src, b.amount,
					b.amount - coalesce(l.credited, 0) AS due, c.id AS cid
			   FROM counter.bound_rights b
			   JOIN counter.counters c ON c.name = b.counter
			   LEFT JOIN counter.rights_local l
				 ON l.counter = b.counter AND l.key = b.key AND l.bound = b.bound AND l.peer = b.src
			  WHERE b.dst = me AND b.src <> me AND b.amount > coalesce(l.credited, 0)
	LOOP
		CONTINUE WHEN NOT counter._rights_lock(r.cid, r.key, false);
		PERFORM 1 FROM counter.counters WHERE id = r.cid FOR KEY SHARE SKIP LOCKED;
		CONTINUE WHEN NOT FOUND;
		IF EXISTS (SELECT 1 FROM counter.slots x WHERE x.counter_id = r.cid AND x.key = r.key) THEN
			UPDATE counter.slots x
			   SET lo = CASE r.bound WHEN 'min' THEN x.lo - r.due ELSE x.lo END,
				   hi = CASE r.bound WHEN 'max' THEN x.hi + r.due ELSE x.hi END
			 WHERE x.ctid = (SELECT y.ctid FROM counter.slots y
							  WHERE y.counter_id = r.cid AND y.key = r.key
							  LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED);
			CONTINUE WHEN NOT FOUND;
		END IF;
		INSERT INTO counter.rights_local AS l (counter, key, bound, peer, credited)
		VALUES (r.counter, r.key, r.bound, r.src, r.amount)
		ON CONFLICT (counter, key, bound, peer) DO UPDATE SET credited = excluded.credited;
	END LOOP;

	FOR r IN SELECT b.counter, b.key, b.bound, b.src AS peer, b.amount AS asked, c.id AS cid
			   FROM counter.bound_rights b
			   JOIN counter.counters c ON c.name = b.counter
			   LEFT JOIN counter.rights_local l
				 ON l.counter = b.counter AND l.key = b.key AND l.bound = b.bound AND l.peer = b.src
			  WHERE b.src = b.dst AND b.src <> me AND b.amount > coalesce(l.served, 0)
				AND b.src IN (SELECT x.node_id FROM counter.mesh x)
				AND CASE b.bound WHEN 'min' THEN c.min_value ELSE c.max_value END IS NOT NULL
	LOOP
		g := counter._rights_give(r.cid, r.counter, r.key, r.bound, me, r.peer, false, false);
		CONTINUE WHEN g IS NULL;
		INSERT INTO counter.rights_local AS l (counter, key, bound, peer, served)
		VALUES (r.counter, r.key, r.bound, r.peer, r.asked)
		ON CONFLICT (counter, key, bound, peer) DO UPDATE SET served = excluded.served;
		nmoves := nmoves + (g > 0)::int;
	END LOOP;
	RETURN nmoves;
END
$$;
REVOKE ALL ON FUNCTION counter._rights_round(int4[], int4[], bool[], int8[]) FROM PUBLIC;

-- Run on a leaving node by counter.remove_node() while it drains: every
-- right this node holds, on every bounded key it has taken part in, goes to
-- the remaining member with the lowest node id (waiting for the rows that
-- adds hold).  Returns the amount handed over.
CREATE FUNCTION counter._rights_hand_over()
RETURNS int8
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	me		int4 := pg_catalog.current_setting('counter.node_id')::int4;
	heir	int4;
	r		record;
	total	int8 := 0;
BEGIN
	SELECT pg_catalog.min(node_id) INTO heir FROM counter.mesh WHERE node_id <> me;
	IF heir IS NULL OR NOT EXISTS (SELECT 1 FROM counter.mesh WHERE node_id = me) THEN
		RETURN 0;
	END IF;
	PERFORM counter._rights_round('{}', '{}', '{}', '{}');
	FOR r IN SELECT c.id, c.name, k.key, bd.bound
			   FROM counter.counters c
			  CROSS JOIN LATERAL (VALUES ('min', c.min_value), ('max', c.max_value)) bd(bound, v)
			  CROSS JOIN LATERAL (SELECT s.key FROM counter.slots s WHERE s.counter_id = c.id
								  UNION
								  SELECT b.key FROM counter.bound_rights b
								   WHERE b.counter = c.name AND b.dst = me AND b.src <> me) k
			  WHERE bd.v IS NOT NULL
	LOOP
		total := total + coalesce(counter._rights_give(r.id, r.name, r.key, r.bound, me, heir, true, true), 0);
	END LOOP;
	RETURN total;
END
$$;
REVOKE ALL ON FUNCTION counter._rights_hand_over() FROM PUBLIC;

-- Rights of bounded counters across the mesh, one row per (counter, key,
-- bound, node) known here: how often the node asked for rights (refused
-- adds it reported), what it gave and received in total and in how many
-- transfers, and on this node's own row the rights it holds now (spare in
-- its slot rows, or its whole share for a key without slot rows).
CREATE VIEW counter.rights AS
WITH me AS (SELECT pg_catalog.current_setting('counter.node_id')::int4 AS id),
n AS (SELECT b.counter, b.key, b.bound, b.src AS node FROM counter.bound_rights b
	  UNION SELECT b.counter, b.key, b.bound, b.dst FROM counter.bound_rights b)
SELECT n.counter, n.key, n.bound, n.node,
	   coalesce((SELECT b.amount FROM counter.bound_rights b
				  WHERE (b.counter, b.key, b.bound, b.src, b.dst) = (n.counter, n.key, n.bound, n.node, n.node)), 0) AS asked,
	   coalesce((SELECT pg_catalog.sum(b.amount) FROM counter.bound_rights b
				  WHERE (b.counter, b.key, b.bound, b.src) = (n.counter, n.key, n.bound, n.node)
					AND b.dst <> n.node), 0)::int8 AS given,
	   coalesce((SELECT pg_catalog.sum(b.moves) FROM counter.bound_rights b
				  WHERE (b.counter, b.key, b.bound, b.src) = (n.counter, n.key, n.bound, n.node)
					AND b.dst <> n.node), 0)::int8 AS transfers_out,
	   coalesce((SELECT pg_catalog.sum(b.amount) FROM counter.bound_rights b
				  WHERE (b.counter, b.key, b.bound, b.dst) = (n.counter, n.key, n.bound, n.node)
					AND b.src <> n.node), 0)::int8 AS received,
	   coalesce((SELECT pg_catalog.sum(b.moves) FROM counter.bound_rights b
				  WHERE (b.counter, b.key, b.bound, b.dst) = (n.counter, n.key, n.bound, n.node)
					AND b.src <> n.node), 0)::int8 AS transfers_in,
	   CASE WHEN n.node = me.id THEN
		   coalesce((SELECT pg_catalog.sum(CASE n.bound WHEN 'min' THEN s.value - s.lo ELSE s.hi - s.value END)
					   FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
					  WHERE c.name = n.counter AND s.key = n.key),
					(SELECT CASE n.bound WHEN 'min' THEN -sh.lo ELSE sh.hi END
					   FROM counter.counters c,
							counter._rights_share(c.name, n.key, me.id, c.min_value, c.max_value) sh
					  WHERE c.name = n.counter))::int8
	   END AS held
  FROM n, me;
REVOKE ALL ON counter.rights FROM PUBLIC;

-- == end section: bounds ==

-- == section: members (membership counters across nodes) ==

-- Since 1.4 a member row is a last-writer-wins register that the mesh
-- replicates (it is in nodes.c's mesh_tables): liked or not, the node that
-- wrote it and its stamp, identified by counter name (counter ids are
-- local to each node).  like() and unlike() always write it; an unlike
-- leaves an unliked row (a tombstone), so that it beats an earlier like
-- made on a node that had not seen it.  The stamp is a hybrid logical
-- clock kept per row: the time of the write, raised to 1 microsecond past
-- the row's previous stamp (src/members.c).  Of two rows, the one with the
-- later (stamp, node) wins.  Each node's shard of the count holds the
-- members whose winning row is liked and written by that node.
--
-- The rows of 1.3 are the likes of this node, stamped when they were made.
ALTER TABLE counter.members
	ADD COLUMN counter text COLLATE "C",
	ADD COLUMN liked bool NOT NULL DEFAULT true,
	ADD COLUMN node int4;
UPDATE counter.members m
   SET counter = c.name,
	   node = coalesce(pg_catalog.current_setting('counter.node_id', true)::int4, 1)
  FROM counter.counters c
 WHERE c.id = m.counter_id;
ALTER TABLE counter.members
	DROP CONSTRAINT members_pkey,
	DROP COLUMN counter_id,
	ALTER COLUMN counter SET NOT NULL,
	ALTER COLUMN node SET NOT NULL,
	ALTER COLUMN liked DROP DEFAULT,
	ALTER COLUMN created DROP DEFAULT,
	ADD PRIMARY KEY (counter, key, member);
ALTER TABLE counter.members RENAME COLUMN created TO stamp;

-- A counter's member rows go with it (the foreign key to counters.id did
-- so before 1.4); the deletion replicates like any change of the rows.
CREATE FUNCTION counter._members_drop()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM counter.members WHERE counter = OLD.name;
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION counter._members_drop() FROM PUBLIC;

CREATE TRIGGER members_drop AFTER DELETE ON counter.counters
	FOR EACH ROW WHEN (OLD.members) EXECUTE FUNCTION counter._members_drop();

-- Corrections of this node's shard go through counter._correct (section
-- idem).

-- A member row that logical replication applies is merged with the row
-- already here: the later (stamp, node) wins, and an update that loses, or
-- changes nothing (an echo), is skipped, so it goes no further.  When the
-- winner replaces a liked row of this node, or is one, this node's count
-- follows (counter._correct), in the same transaction.  An insert of a row
-- that exists (the initial copy, a row arriving from two peers) becomes an
-- update of it; a deletion (the counter dropped on a peer) of a liked row
-- of this node takes it off this node's count.  Enabled only for
-- replication (ENABLE REPLICA TRIGGER): like() and unlike() pay nothing.
CREATE FUNCTION counter._members_join()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	me int4 := pg_catalog.current_setting('counter.node_id')::int4;
	delta int8;
BEGIN
	IF TG_OP = 'DELETE' THEN
		IF OLD.liked AND OLD.node = me THEN
			PERFORM counter._correct(OLD.counter, OLD.key, -1);
		END IF;
		RETURN OLD;
	END IF;
	IF TG_OP = 'INSERT' THEN
		-- the insert below, at depth 2, is the real one
		IF pg_catalog.pg_trigger_depth() > 1 THEN
			RETURN NEW;
		END IF;
		LOOP
			PERFORM 1 FROM counter.members m
			  WHERE m.counter = NEW.counter AND m.key = NEW.key AND m.member = NEW.member
			  FOR UPDATE;
			IF FOUND THEN
				-- merged by this trigger's update branch
				UPDATE counter.members m
				   SET liked = NEW.liked, node = NEW.node, stamp = NEW.stamp
				 WHERE m.counter = NEW.counter AND m.key = NEW.key AND m.member = NEW.member;
				RETURN NULL;
			END IF;
			-- new here, unless a like made here meanwhile came first: then
			-- the next turn merges with it
			INSERT INTO counter.members (counter, key, member, liked, node, stamp)
			VALUES (NEW.counter, NEW.key, NEW.member, NEW.liked, NEW.node, NEW.stamp)
			ON CONFLICT DO NOTHING;
			IF FOUND THEN
				IF NEW.liked AND NEW.node = me THEN
					PERFORM counter._correct(NEW.counter, NEW.key, 1);
				END IF;
				RETURN NULL;
			END IF;
		END LOOP;
	END IF;
	IF (NEW.stamp, NEW.node) <= (OLD.stamp, OLD.node) THEN
		RETURN NULL;
	END IF;
	delta := (NEW.liked AND NEW.node = me)::int - (OLD.liked AND OLD.node = me)::int;
	IF delta <> 0 THEN
		PERFORM counter._correct(NEW.counter, NEW.key, delta);
	END IF;
	RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION counter._members_join() FROM PUBLIC;

CREATE TRIGGER members_join BEFORE INSERT OR UPDATE OR DELETE ON counter.members
	FOR EACH ROW EXECUTE FUNCTION counter._members_join();
ALTER TABLE counter.members ENABLE REPLICA TRIGGER members_join;

-- == end section: members ==

-- == section: fold (compaction's per-key buckets; totals_top without deduplication) ==

-- counter._buckets(at, delta, granularities): the rollup buckets of one
-- key being compacted, each bucket of each granularity summed in one pass
-- over the key's rows (src/compact.c), so that the fold aggregates by key
-- alone: a row per key, not per key, granularity and bucket, and no sort
-- within each key; NULL when each granularity got one bucket (the key is
-- sole: its total holds them).  Internal: only compaction calls it.
CREATE TYPE counter._bucket AS (granularity interval, bucket timestamptz, value int8);
CREATE FUNCTION counter._buckets_add(internal, timestamptz, int8, interval[])
RETURNS internal
AS 'MODULE_PATHNAME', 'counter_buckets_add'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION counter._buckets_result(internal)
RETURNS counter._bucket[]
AS 'MODULE_PATHNAME', 'counter_buckets_result'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE AGGREGATE counter._buckets(timestamptz, int8, interval[]) (
	SFUNC = counter._buckets_add,
	STYPE = internal,
	FINALFUNC = counter._buckets_result,
	FINALFUNC_MODIFY = READ_WRITE,
	PARALLEL = SAFE
);
REVOKE ALL ON FUNCTION counter._buckets_add(internal, timestamptz, int8, interval[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION counter._buckets_result(internal) FROM PUBLIC;
REVOKE ALL ON FUNCTION counter._buckets(timestamptz, int8, interval[]) FROM PUBLIC;

-- counter._sole_buckets(b, sole, value, granularities): buckets b (NULL:
-- none) with value added to the bucket holding sole of each granularity
-- (compaction, src/compact.c): the buckets of a key whose rows all fell in
-- one bucket of each (counter._buckets leaves them NULL), or those a fold
-- brings to a key whose total held its buckets (totals.sole), merged with
-- those, to be written out.  Internal.
CREATE FUNCTION counter._sole_buckets(counter._bucket[], timestamptz, int8, interval[])
RETURNS counter._bucket[]
AS 'MODULE_PATHNAME', 'counter_sole_buckets'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
REVOKE ALL ON FUNCTION counter._sole_buckets(counter._bucket[], timestamptz, int8, interval[]) FROM PUBLIC;

-- Every entry of totals_top is unique (it holds the primary key's
-- columns), so deduplication finds nothing to merge: without it, a full
-- leaf page splits at once instead of being searched for duplicates first.
ALTER INDEX counter.totals_top SET (deduplicate_items = off);

-- == end section: fold ==

-- == section: granularities (each once) ==

-- A counter created before 1.4 may list one granularity twice ('{1 day,24
-- hours}'): its rollups counted each add once per listing (counter.verify
-- showed drift), and 1.4's compaction, which makes a key's buckets per
-- listed granularity, would fail on the duplicate row, for every counter of
-- the database.  Keep the first of equal granularities, with its retention
-- (1.4 refuses such a list, 22023).  Equal granularities share their rows.
UPDATE counter.counters c
   SET rollups = d.rollups, retention = d.retention
  FROM (SELECT x.id, pg_catalog.array_agg(x.g ORDER BY x.o) AS rollups,
			   pg_catalog.array_agg(x.r ORDER BY x.o) AS retention
		  FROM (SELECT DISTINCT ON (k.id, u.g) k.id, u.g, u.r, u.o
				  FROM counter.counters k,
					   ROWS FROM (pg_catalog.unnest(k.rollups), pg_catalog.unnest(k.retention))
						   WITH ORDINALITY AS u(g, r, o)
				 ORDER BY k.id, u.g, u.o) x
		 GROUP BY x.id) d
 WHERE d.id = c.id AND pg_catalog.cardinality(d.rollups) < pg_catalog.cardinality(c.rollups);

-- == end section: granularities ==

-- == section: written ==

-- A read skips an events table that shared memory marks empty, and the slot
-- rows of a counter it marks as having none (src/events.c, src/slots.c),
-- until something writes them.  Adds say so in C; any insert through SQL (a
-- restore's COPY, compaction's carry of quarantined events) says so through
-- this trigger, before it commits.  A read of a hot key sums the adds noted
-- in shared memory since a read in another snapshot (src/read.c): any
-- other change of slot rows (compaction's UPDATE, a DELETE, a TRUNCATE)
-- stops that across its transaction, through the same trigger.  ENABLE
-- ALWAYS: also under session_replication_role = replica.
CREATE FUNCTION counter._written() RETURNS trigger
AS 'MODULE_PATHNAME', 'counter_written'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION counter._written() FROM PUBLIC;
CREATE TRIGGER written AFTER INSERT ON counter.events
	FOR EACH STATEMENT EXECUTE FUNCTION counter._written();
CREATE TRIGGER written AFTER INSERT ON counter.events_1
	FOR EACH STATEMENT EXECUTE FUNCTION counter._written();
CREATE TRIGGER written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON counter.slots
	FOR EACH STATEMENT EXECUTE FUNCTION counter._written();
ALTER TABLE counter.events ENABLE ALWAYS TRIGGER written;
ALTER TABLE counter.events_1 ENABLE ALWAYS TRIGGER written;
ALTER TABLE counter.slots ENABLE ALWAYS TRIGGER written;

-- == end section: written ==

-- == section: stats (counter.stats, defined once with every column of 1.4) ==

-- A security barrier: a caller's function in WHERE (COST 0.0000001, say)
-- is applied only to the rows of counters the caller may read, after
-- counter.can_read(), so it cannot see the others' names and settings.
-- The columns of 1.2, then those 1.4 adds at the end: quarantined_keys
-- (section quarantine), feed and feed_dropped (feed option),
-- idempotency_conflicts and idempotency_mismatches (idem),
-- buffered_fallbacks (storage).
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
		 WHERE q.counter_id = c.id) AS quarantined_keys,
	   c.feed,
	   coalesce((SELECT d.dropped FROM counter.feed_drops d
				  WHERE d.counter_id = c.id), 0) AS feed_dropped,
	   coalesce((SELECT i.undone FROM counter.idempotency_conflicts i
				  WHERE i.counter_id = c.id), 0) AS idempotency_conflicts,
	   coalesce((SELECT i.mismatched FROM counter.idempotency_conflicts i
				  WHERE i.counter_id = c.id), 0) AS idempotency_mismatches,
	   counter._buffered_fallbacks(c.name) AS buffered_fallbacks
  FROM counter.counters c
  LEFT JOIN counter.worker_status() w ON w.database = pg_catalog.current_database()
 WHERE counter.can_read(c.name);

-- == end section: stats ==
