-- Proves the upgrade path: a counter created and used under version 1.0 reads the same values after ALTER EXTENSION counter UPDATE to 1.1, 1.2 and 1.3, and the functions of each version work on it (1.2: events pending in the first table are compacted through the rotation; 1.3: wal mode, refused before it; 1.4: the values survive and the counters keep working, keeping their rollups and change feed while a new counter has neither, an idempotency key of before becomes a claim of this node, and member rows become members liked by this node; a counter listing one granularity twice keeps the first of each and compacts again).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS counter;
CREATE EXTENSION counter VERSION '1.0';
RESET client_min_messages;
SELECT extversion FROM pg_extension WHERE extname = 'counter';
SELECT counter.create('likes');
SELECT counter.create('views', mode => 'events');
SELECT counter.add('likes', 'p1', 41);
SELECT counter.add('views', 'home', 7);
SELECT counter.add('views', 'home', 1, at => '2026-01-01');
SELECT counter.compact() >= 0;
SELECT counter.add('views', 'home', 2);
SELECT counter.add('likes', 'idem', 1, idempotency_key => 'up-1');
SELECT counter.value('likes', 'p1'), counter.value('views', 'home');
ALTER EXTENSION counter UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'counter';
SELECT counter.value('likes', 'p1'), counter.value('views', 'home');
SELECT counter.add_many('likes', ARRAY['p1', 'p2']);
SELECT * FROM counter.values('likes', ARRAY['p1', 'p2']);
SELECT counter.create('fans', members => true);
SELECT counter."like"('fans', 'p1', 'ann');
SELECT counter.value('fans', 'p1');
SELECT granularity, drift FROM counter.verify('views');
SELECT counter.add('views', 'home', 3);
ALTER EXTENSION counter UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'counter';
SELECT counter.value('likes', 'p1'), counter.value('views', 'home');
SELECT counter.add('views', 'home', 4);
SELECT counter.compact() >= 0;
SELECT counter.value('views', 'home'), (SELECT count(*) FROM counter.pending_events) AS pending;
SELECT tab FROM counter.event_tables ORDER BY tab;
SELECT granularity, drift FROM counter.verify('views');
\set SHOW_CONTEXT never
SELECT counter.alter('views', mode => 'wal');
\echo :LAST_ERROR_SQLSTATE
ALTER EXTENSION counter UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'counter';
SELECT counter.value('likes', 'p1'), counter.value('views', 'home');
SELECT counter.alter('views', mode => 'wal');
SELECT counter.add('views', 'home', 5);
SELECT counter.value('views', 'home');
SELECT counter.compact() >= 0;
SELECT counter.value('views', 'home');
SELECT granularity, drift FROM counter.verify('views');
-- a counter whose granularities list one twice, as a library before 1.4
-- let counter.create() make (its rollups counted each add twice): the
-- update keeps the first of each with its retention, and it compacts
-- exactly (the add commits with the update, so that the worker cannot fold
-- it under 1.3, counting it in both equal granularities)
SELECT counter.create('twice', mode => 'events', rollups => '{1 day,1 hour}');
UPDATE counter.counters SET rollups = '{1 day,1 hour,24 hours}', retention = '{30 days,NULL,NULL}'
 WHERE name = 'twice';
BEGIN;
SELECT counter.add('twice', 'k', 1);
ALTER EXTENSION counter UPDATE TO '1.4';
COMMIT;
SELECT rollups, retention FROM counter.counters WHERE name = 'twice';
SELECT counter.compact() >= 0;
SELECT counter.value('twice', 'k'), (SELECT sum(drift) FROM counter.verify('twice')) AS drift;
SELECT counter.drop('twice');
SELECT extversion FROM pg_extension WHERE extname = 'counter';
-- the counters of before keep their change feed; a new one has none
SELECT counter.create('after_update');
SELECT name, feed, feed_dropped FROM counter.stats ORDER BY name;
-- the counters of before keep their rollups; a new one has none, and
-- counter.stats has buffered_fallbacks
SELECT name, rollups, buffered_fallbacks FROM counter.stats ORDER BY name;
SELECT counter.value('likes', 'p1'), counter.value('views', 'home');
-- a member row of before is a member liked by this node, and stays counted
SELECT counter, key, member, liked, node FROM counter.members;
SELECT counter.value('fans', 'p1'), counter.is_member('fans', 'p1', 'ann');
SELECT counter.unlike('fans', 'p1', 'ann');
SELECT counter."like"('fans', 'p1', 'bob');
SELECT counter.value('fans', 'p1'), counter.is_member('fans', 'p1', 'ann');
SELECT counter.add('views', 'home', 6);
SELECT counter.compact() >= 0;
SELECT counter.value('views', 'home');
SELECT granularity, drift FROM counter.verify('views');
-- a key of before is a claim of this node: a repeat is skipped, another add refused
SELECT idem, counter, key, delta, node FROM counter.idempotency;
SELECT counter.add('likes', 'idem', 1, idempotency_key => 'up-1');
SELECT counter.add('likes', 'idem', 2, idempotency_key => 'up-1');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('likes', 'idem');
SELECT name, idempotency_conflicts, idempotency_mismatches FROM counter.stats WHERE name = 'likes';
SELECT counter.drop(name) FROM counter.list();
DROP EXTENSION counter;
