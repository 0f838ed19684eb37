-- Proves the 1.1 features: idempotent adds, bounded counters (23514, try_add's NULL, nothing changed), add_many (sorted, duplicates summed, exact), membership counters (like twice counts once), and their errors.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never

--
-- Idempotency keys
--
SELECT counter.create('orders');
SELECT counter.add('orders', 'eu', 5, idempotency_key => 'req-1');
SELECT counter.add('orders', 'eu', 5, idempotency_key => 'req-1');
SELECT counter.add_and_get('orders', 'eu', 5, idempotency_key => 'req-1');
SELECT counter.value('orders', 'eu');
SELECT counter.add('orders', 'eu', 6, idempotency_key => 'req-1');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add('orders', 'us', 5, idempotency_key => 'req-1');
\echo :LAST_ERROR_SQLSTATE
-- an aborted add does not consume its key
BEGIN;
SELECT counter.add('orders', 'eu', 1, idempotency_key => 'req-2');
ROLLBACK;
SELECT counter.add('orders', 'eu', 1, idempotency_key => 'req-2');
SELECT counter.value('orders', 'eu');
-- expired keys (older than counter.idempotency_window) apply again
UPDATE counter.idempotency SET created = created - interval '2 days' WHERE idem = 'req-1';
SELECT counter.add('orders', 'eu', 5, idempotency_key => 'req-1');
SELECT counter.value('orders', 'eu');

--
-- Bounds
--
SELECT counter.create('stock', min => 0, max => 100, rollups => '{1 hour,1 day}');
SELECT counter.add('stock', 'sku1', 60);
SELECT counter.add('stock', 'sku1', 50);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('stock', 'sku1');
SELECT counter.try_add('stock', 'sku1', 40);
SELECT counter.try_add('stock', 'sku1', 1);
SELECT counter.try_add('stock', 'sku1', -101);
SELECT counter.add('stock', 'sku1', -100);
SELECT counter.add('stock', 'sku1', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('stock', 'sku1');
-- a bound crossed in add_many rolls the whole batch back
SELECT counter.add_many('stock', ARRAY['sku2', 'sku3'], ARRAY[10, -1]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.values('stock', ARRAY['sku2', 'sku3']);
-- the bound holds across compaction, which moves value and share together
SELECT counter.add('stock', 'sku1', 70);
SELECT counter.compact('stock') >= 0;
SELECT counter.try_add('stock', 'sku1', 31), counter.try_add('stock', 'sku1', 30);
SELECT counter.value('stock', 'sku1');
SELECT granularity, drift FROM counter.verify('stock');
-- one transaction may stock any number of new keys: 20000 first rows, more
-- locks than the lock table holds (a lock per new key was kept to the end)
SELECT count(counter.try_add('stock', 'bulk' || i, 7)) FROM generate_series(1, 20000) i;
SELECT count(*), sum(value), min(value) FROM counter.values('stock',
	ARRAY(SELECT 'bulk' || i FROM generate_series(1, 20000) i));
SELECT counter.try_add('stock', 'bulk1', 94) IS NULL, counter.try_add('stock', 'bulk1', 93);
-- a failed idempotent add gives its key back
SELECT counter.try_add('stock', 'sku1', 5, idempotency_key => 'req-9');
SELECT counter.try_add('stock', 'sku1', -5, idempotency_key => 'req-9');
-- bounds must include 0, and need slots mode
SELECT counter.create('bad', min => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', max => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('bad', mode => 'events', min => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.alter('stock', mode => 'events');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add('stock', 'sku1', 1, at => now());
\echo :LAST_ERROR_SQLSTATE

--
-- add_many
--
SELECT counter.create('views', mode => 'events');
-- in one transaction, so that the worker cannot compact the events meanwhile
BEGIN;
SELECT counter.add_many('views', ARRAY['b', 'a', 'b', 'c', 'a', 'a']);
SELECT counter.add_many('views', ARRAY['a', 'z'], ARRAY[10, -3]);
SELECT counter.add_many('views', '{}');
SELECT * FROM counter.values('views', ARRAY['a', 'b', 'c', 'z']);
-- one event row per distinct key and call
SELECT count(*) FROM counter.pending_events e JOIN counter.counters c ON c.id = e.counter_id
 WHERE c.name = 'views';
COMMIT;
SELECT counter.add_many('views', ARRAY['a', 'b'], ARRAY[1]);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add_many('views', ARRAY['a', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add_many('views', ARRAY['a', 'a'], ARRAY[9223372036854775807, 1]);
\echo :LAST_ERROR_SQLSTATE
-- an import in one statement
SELECT counter.add_many('views', array_agg('k' || (i % 7)), array_agg(i::int8))
  FROM generate_series(1, 1000) i;
SELECT sum(value) FROM counter.values('views', ARRAY['k0','k1','k2','k3','k4','k5','k6']);

--
-- Membership counters
--
SELECT counter.create('likes', members => true);
SELECT counter."like"('likes', 'post1', 'alice');
SELECT counter."like"('likes', 'post1', 'alice');
SELECT counter."like"('likes', 'post1', 'bob');
SELECT counter."like"('likes', 'post2', 'alice');
SELECT counter.unlike('likes', 'post1', 'carol');
SELECT counter.value('likes', 'post1'), counter.value('likes', 'post2');
SELECT counter.is_member('likes', 'post1', 'alice'), counter.is_member('likes', 'post1', 'carol');
SELECT * FROM counter.members('likes', 'post1');
SELECT * FROM counter.members('likes', 'post1', 1);
SELECT * FROM counter.members('likes', 'post1', 10, after => 'alice');
SELECT counter.unlike('likes', 'post1', 'alice');
SELECT counter.value('likes', 'post1');
SELECT counter.add('likes', 'post1', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT counter."like"('views', 'a', 'alice');
\echo :LAST_ERROR_SQLSTATE
SELECT counter."like"('likes', 'post1', NULL);
\echo :LAST_ERROR_SQLSTATE
-- dropping a counter drops its members
SELECT counter.drop('likes');
SELECT count(*) FROM counter.members;

--
-- A compaction that changes more keys than the change feed holds at once
-- (10000) flushes the feed in the middle of reading its own result (here
-- or in the worker, whichever comes first: before the fix, either crashed)
--
SELECT counter.create('wide', mode => 'events');
SELECT count(counter.add('wide', 'k' || i)) FROM generate_series(1, 10001) i;
SELECT counter.add('views', 'a', 1);
SELECT counter.compact() >= 0;
SELECT sum(value) FROM counter.totals WHERE counter = 'wide';

SELECT counter.drop(name) FROM counter.list();
DROP EXTENSION counter;
