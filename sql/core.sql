-- Proves the core API: managing counters, exact adds and reads in slots and events modes (own uncommitted adds seen, rolled-back adds never), errors with their SQLSTATE, rights per counter, hidden tables and internal functions (1.4's, revoked from PUBLIC, _series inlined), and independence from the caller's search_path.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never

--
-- Managing counters
--
SELECT counter.create('likes', rollups => '{1 hour,1 day}');
SELECT counter.create('views', mode => 'events', rollups => '{1 minute,1 hour}',
                      retention => '{1 day,NULL}');
SELECT name, mode, slots, rollups, retention, owner FROM counter.list();

SELECT counter.create('likes');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', mode => 'nope');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', slots => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', slots => 1025);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create(repeat('x', 56));
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', rollups => '{1 month}');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', rollups => '{-1 hour}');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', rollups => '{1 hour}', retention => '{1 day,2 days}');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', rollups => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', rollups => '{1.5 seconds}');
\echo :LAST_ERROR_SQLSTATE
-- one granularity twice would make two buckets of one rollups row, which no
-- compaction of the database could write (1.4: refused)
SELECT counter.create('bad', rollups => '{1 day,1 hour,24 hours}');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.alter('likes', rollups => '{1 hour,1 hour}');
\echo :LAST_ERROR_SQLSTATE
-- the feed option (1.4): off for a new counter unless asked for
SELECT counter.create('bad', feed => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', feed => 'maybe');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('fed', feed => true);
SELECT counter.alter('likes', feed => NULL);
SELECT name, feed, feed_dropped FROM counter.stats ORDER BY name;
SELECT counter.alter('likes', feed => true);
SELECT counter.alter('fed', slots => 8);
SELECT name, feed FROM counter.stats ORDER BY name;
SELECT counter.alter('likes', feed => false);
SELECT counter.drop('fed');
SELECT counter.drop('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.alter('nope', slots => 4);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.alter('likes', slots => -1);
\echo :LAST_ERROR_SQLSTATE

--
-- Adding and reading, slots mode
--
SELECT counter.add('likes', 'p1');
SELECT counter.add('likes', 'p1', 41);
SELECT counter.increment('likes', 'p1');
SELECT counter.decrement('likes', 'p2');
SELECT counter.value('likes', 'p1'), counter.value('likes', 'p2'),
       counter.value('likes', 'never');
SELECT * FROM counter.values('likes', ARRAY['p1', 'p2', 'p3']);
SELECT counter.add_and_get('likes', 'p1', 10);
SELECT counter.add('likes', 'p1', 0);
SELECT counter.value('likes', 'p1');

-- own uncommitted adds are seen; rolled-back adds never count
BEGIN;
SELECT counter.add('likes', 'p1', 100);
SELECT counter.value('likes', 'p1');
ROLLBACK;
SELECT counter.value('likes', 'p1');
BEGIN;
SELECT counter.add('likes', 'p1', 5);
SAVEPOINT s;
SELECT counter.add('likes', 'p1', 1000);
ROLLBACK TO s;
SELECT counter.value('likes', 'p1');
COMMIT;
SELECT counter.value('likes', 'p1');

-- many adds in one statement each count
SELECT count(counter.add('likes', 'p3')) FROM generate_series(1, 100);
SELECT counter.value('likes', 'p3');

-- a key added to often, never contended, gets one slot row (its first
-- counter.slot_events adds are events)
SELECT count(*) FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
 WHERE c.name = 'likes' AND s.key = 'p3';

-- reset subtracts what the transaction sees
SELECT counter.reset('likes', 'p3');
SELECT counter.value('likes', 'p3');

-- bad arguments
SELECT counter.add('likes', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add(NULL, 'k');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add('likes', 'k', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add('likes', repeat('k', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add('nope', 'k');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('nope', 'k');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.values('likes', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.values('likes', ARRAY['a', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.top('likes', -1);
\echo :LAST_ERROR_SQLSTATE

-- int8 overflow of one slot: an error, and nothing changed
SELECT counter.add('likes', 'big', 9223372036854775807);
SELECT counter.add('likes', 'big', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('likes', 'big');
-- overflow of a sum of sources is reported on read
SELECT counter.add('likes', 'big', 1, at => '2020-01-01');
SELECT counter.value('likes', 'big');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add('likes', 'big', -1, at => '2020-01-01');
SELECT counter.value('likes', 'big');
SELECT counter.reset('likes', 'big');

--
-- Events mode
--
SELECT counter.add('views', 'home', 3);
SELECT counter.add('views', 'home', -1);
SELECT counter.add('views', 'about', 7, at => '2026-01-01 10:30:00+00');
SELECT counter.value('views', 'home'), counter.value('views', 'about');
SELECT counter.compact('views') >= 0;
SELECT counter.value('views', 'home'), counter.value('views', 'about');
SELECT key, value FROM counter.top('views', 10);
SELECT * FROM counter.series('views', 'about', '2026-01-01', '2026-01-02', '1 hour');
SELECT * FROM counter.series('views', 'about', '2026-01-01', '2026-01-02', '1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT granularity, drifted_keys, drift FROM counter.verify('views');

-- switching modes keeps the value exact
SELECT counter.alter('likes', mode => 'events');
SELECT counter.add('likes', 'p1', 2);
SELECT counter.value('likes', 'p1');
SELECT counter.alter('likes', mode => 'slots', slots => 2);
SELECT counter.add('likes', 'p1', 2);
SELECT counter.value('likes', 'p1');
SELECT counter.compact() >= 0;
SELECT counter.value('likes', 'p1');
SELECT key, value FROM counter.top('likes', 2);
SELECT granularity, drifted_keys, drift FROM counter.verify('likes');

--
-- Rights: a counter belongs to its creator; others need grants
--
CREATE ROLE counter_alice;
CREATE ROLE counter_bob;
SET ROLE counter_alice;
SELECT counter.create('alice_likes');
SELECT counter.add('alice_likes', 'x', 2);
SELECT name FROM counter.list();
SELECT * FROM counter.slots;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.pending_events;
\echo :LAST_ERROR_SQLSTATE
-- every relation of the schema but the stats view is hidden from a plain role
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'counter'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm', 'p')
   AND (has_table_privilege('counter_alice', c.oid, 'SELECT')
        OR has_table_privilege('counter_alice', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'))
 ORDER BY 1;
-- internal functions a plain role may run: only those checking the rights themselves
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'counter'::regnamespace AND p.proname LIKE '\_%'
   AND has_function_privilege('counter_alice', p.oid, 'EXECUTE')
 ORDER BY 1;
SET ROLE counter_bob;
SELECT counter.add('alice_likes', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('alice_likes', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.drop('alice_likes');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.grant('alice_likes', 'counter_bob', 'add');
\echo :LAST_ERROR_SQLSTATE
SELECT name FROM counter.stats;
SET ROLE counter_alice;
SELECT counter.grant('alice_likes', 'counter_bob', 'add');
SELECT counter.grant('alice_likes', 'counter_bob', 'superpowers');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.grant('alice_likes', 'no_such_role', 'read');
\echo :LAST_ERROR_SQLSTATE
SET ROLE counter_bob;
SELECT counter.add('alice_likes', 'x');
SELECT counter.value('alice_likes', 'x');
\echo :LAST_ERROR_SQLSTATE
SET ROLE counter_alice;
SELECT counter.grant('alice_likes', 'public', 'read');
SET ROLE counter_bob;
SELECT counter.value('alice_likes', 'x');
SELECT name FROM counter.stats;
SET ROLE counter_alice;
SELECT counter.revoke('alice_likes', 'public', 'read');
SELECT counter.revoke('alice_likes', 'counter_bob', 'add');
SET ROLE counter_bob;
SELECT counter.add('alice_likes', 'x');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

--
-- A read-only transaction (as on a hot standby) reads but cannot add, in
-- any mode: 25006.
--
SELECT counter.create('ro_events', mode => 'events');
BEGIN READ ONLY;
SELECT counter.value('alice_likes', 'x');
SELECT counter.add('alice_likes', 'x');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT counter.add('ro_events', 'x');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT counter.add_many('ro_events', ARRAY['x', 'y']);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT counter.value('ro_events', 'x');
SELECT counter.drop('ro_events');

--
-- A hostile search_path changes nothing: objects of the caller's schemas,
-- even ones named like built-ins, are never used by our functions.
--
CREATE SCHEMA evil;
CREATE FUNCTION evil.sum(int8) RETURNS int8 LANGUAGE sql AS 'SELECT 666::int8';
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$SELECT '1999-01-01'::timestamptz$$;
CREATE FUNCTION evil.int8eq_evil(int8, int8) RETURNS bool LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = int8, RIGHTARG = int8, FUNCTION = evil.int8eq_evil);
SET search_path = evil, pg_catalog;
SELECT counter.add('views', 'home', 1);
SELECT counter.value('views', 'home');
SELECT key, value FROM counter.top('views', 10);
SELECT counter.compact('views') >= 0;
SELECT counter.value('views', 'home');
RESET search_path;
DROP SCHEMA evil CASCADE;

--
-- Internal functions (1.4's version-dependent statements): their labels,
-- bodies bound at creation, no EXECUTE for PUBLIC, and _series inlined
-- into the statement that calls it
--
SELECT p.proname, p.provolatile, p.proisstrict, p.proparallel,
       p.prosqlbody IS NOT NULL AS bound,
       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                WHERE a.grantee = 0) AS public_may_run
  FROM pg_proc p
 WHERE p.pronamespace = 'counter'::regnamespace
   AND p.proname IN ('_create', '_alter', '_drop', '_revoke', '_series')
 ORDER BY 1;
CREATE FUNCTION pg_temp.series_inlined() RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
	line text;
BEGIN
	FOR line IN EXPLAIN (COSTS OFF)
		SELECT * FROM counter._series(1, 'k', now() - interval '1 day', now(), '1 hour')
	LOOP
		IF line LIKE '%Function Scan%' THEN
			RETURN false;
		END IF;
	END LOOP;
	RETURN true;
END
$$;
SELECT pg_temp.series_inlined();

--
-- Dropping
--
SELECT counter.drop('alice_likes');
SELECT counter.drop('likes');
SELECT counter.value('likes', 'p1');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM counter.slots s WHERE NOT EXISTS
  (SELECT 1 FROM counter.counters c WHERE c.id = s.counter_id);
SELECT count(*) FROM counter.totals WHERE counter = 'likes';
SELECT counter.drop('views');
DROP ROLE counter_alice;
DROP ROLE counter_bob;
DROP EXTENSION counter;
