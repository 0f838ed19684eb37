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
-- the candidates of a top-k decide ties at the cut as the result does
DROP INDEX counter.totals_top;
CREATE INDEX totals_top ON counter.totals (counter, node, value DESC, key);

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

-- A security barrier: a caller's function in WHERE (COST 0.0000001, say)
-- is applied only to the rows of counters the caller may read, after
-- counter.can_read(), so it cannot see the others' names and settings.
-- This is the definition of 1.4: that of 1.2, plus quarantined_keys, feed
-- and feed_dropped at the end.
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
				  WHERE d.counter_id = c.id), 0) AS feed_dropped
  FROM counter.counters c
  LEFT JOIN counter.worker_status() w ON w.database = pg_catalog.current_database()
 WHERE counter.can_read(c.name);

-- == end section: feed option ==

-- == section: internal (version-dependent SQL as internal functions) ==
-- == end section: internal ==

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

-- Add delta to this node's shard of (counter, key), bypassing rights, the
-- refusal of plain adds to membership counters and bounds: a correction
-- of what already happened (src/apply.c).  Nothing if the counter is
-- not defined here.
CREATE FUNCTION counter._correct(name text, key text, delta int8)
RETURNS void
AS 'MODULE_PATHNAME', 'counter_correct'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION counter._correct(text, text, int8) FROM PUBLIC;

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
