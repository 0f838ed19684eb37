-- Proves flushes and adds are exact in every transaction shape: compact() twice in one transaction, inside a rolled-back savepoint, in an exception block and in a loop moves each buffered or wal-mode amount into totals exactly once (totals, not only value(), which stays right until a restart); a compacting transaction cannot be prepared; a counter created and added to in one transaction keeps the add while the worker flushes; buffered adds cannot wrap bigint (22003); a prepared transaction holding this backend's slot row does not block its next add; compact() of every counter needs the extension owner's rights; one statement adding 2,000 times to one slots key writes its slot row once and takes the other adds as event rows, exact, with no chain of row versions (the slots table grows by a few pages, not by a page per 17 adds); a bounded key's adds in one transaction lock the row the transaction wrote last without an index search each, past a rolled-back savepoint and a compaction, bounds exact (23514).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never

-- the worker arms wal mode, then stays off so that only this test flushes
SELECT counter.create('sw', mode => 'wal');
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN (SELECT start_lsn IS NOT NULL FROM counter.wal_state);
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SELECT start_lsn IS NOT NULL AS armed FROM counter.wal_state;
ALTER SYSTEM SET counter.worker_enabled = off;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT counter.create('sb', mode => 'buffered');

-- the compacted amount of a key: this node's totals row
CREATE FUNCTION compacted(c text, k text) RETURNS int8 LANGUAGE sql AS
$$ SELECT coalesce((SELECT value FROM counter.totals WHERE counter = c AND key = k), 0) $$;

-- two flushes in one transaction
SELECT counter.add('sb', 'twice', 100), counter.add('sw', 'twice', 100);
BEGIN;
SELECT counter.compact() > 0 AS moved;
SELECT counter.compact() AS moved_again;
COMMIT;
SELECT compacted('sb', 'twice') AS sb, compacted('sw', 'twice') AS sw,
	   counter.value('sb', 'twice') AS sb_value, counter.value('sw', 'twice') AS sw_value;

-- a flush rolled back with its savepoint is taken again by the next one
SELECT counter.add('sb', 'savepoint', 100), counter.add('sw', 'savepoint', 100);
BEGIN;
SAVEPOINT s;
SELECT counter.compact() > 0 AS moved;
ROLLBACK TO s;
COMMIT;
SELECT compacted('sb', 'savepoint') AS sb, compacted('sw', 'savepoint') AS sw;
SELECT counter.compact() > 0 AS moved;
SELECT compacted('sb', 'savepoint') AS sb, compacted('sw', 'savepoint') AS sw,
	   counter.value('sb', 'savepoint') AS sb_value, counter.value('sw', 'savepoint') AS sw_value;

-- the same through an exception block, then flushes in a loop
SELECT counter.add('sb', 'block', 7), counter.add('sw', 'block', 7);
DO $$
BEGIN
	PERFORM counter.compact();
	RAISE division_by_zero;
EXCEPTION WHEN division_by_zero THEN
	NULL;
END $$;
DO $$
BEGIN
	FOR i IN 1 .. 5 LOOP
		PERFORM counter.add('sb', 'block', 1);
		PERFORM counter.compact();
	END LOOP;
END $$;
SELECT counter.compact() >= 0 AS done;
SELECT compacted('sb', 'block') AS sb, compacted('sw', 'block') AS sw,
	   (SELECT buffered_unflushed FROM counter.stats WHERE name = 'sb') AS sb_unflushed;

-- rolled-back adds leave nothing reserved or flushed
BEGIN;
SELECT counter.add('sb', 'block', 1000);
ROLLBACK;
SELECT counter.compact() >= 0 AS done;
SELECT compacted('sb', 'block') AS sb, counter.value('sb', 'block') AS sb_value;

-- a transaction that compacted cannot be prepared (it would hold the lock)
BEGIN;
SELECT counter.compact() >= 0 AS done;
PREPARE TRANSACTION 'shapes_compacted';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS prepared FROM pg_prepared_xacts;

-- create and add in one transaction while the worker flushes
ALTER SYSTEM RESET counter.worker_enabled;
SELECT pg_reload_conf();
BEGIN;
SELECT counter.create('sb_new', mode => 'buffered');
SELECT counter.create('sw_new', mode => 'wal');
SELECT counter.add('sb_new', 'k', 5), counter.add('sw_new', 'k', 5);
SELECT pg_sleep(1.5);
COMMIT;
SELECT counter.value('sb_new', 'k') AS sb_new, counter.value('sw_new', 'k') AS sw_new;
SELECT counter.compact() >= 0 AS done;
SELECT compacted('sb_new', 'k') AS sb_new, compacted('sw_new', 'k') AS sw_new;

-- buffered adds never wrap: 22003 and nothing changed
SELECT counter.add('sb', 'max', 9223372036854775807);
SELECT counter.add('sb', 'max', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.add('sw', 'max', -9223372036854775807);
SELECT counter.add('sw', 'max', -2);
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT counter.add('sb', 'max2', 9223372036854775807);
SELECT counter.add('sb', 'max2', 9223372036854775807);
ROLLBACK;
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('sb', 'max') AS sb_max, counter.value('sw', 'max') AS sw_max,
	   counter.value('sb', 'max2') AS sb_max2;
SELECT counter.add('sb', 'max', -1);
SELECT counter.add('sb', 'max2', 1);
SELECT counter.value('sb', 'max') AS sb_max, counter.value('sb', 'max2') AS sb_max2;

-- a prepared transaction holds this backend's slot row: the next add of
-- this backend (same backend number) takes a row of its own, no waiting
SELECT counter.create('sp');
SET statement_timeout = '5s';
BEGIN;
SELECT counter.add('sp', 'k', 5);
PREPARE TRANSACTION 'shapes_slot';
SELECT counter.add('sp', 'k', 1);
SELECT counter.value('sp', 'k');
COMMIT PREPARED 'shapes_slot';
SELECT counter.value('sp', 'k');
RESET statement_timeout;

-- one statement adding 2,000 times to one slots key: the slot row is
-- written once per transaction, the other adds are event rows (1.4): no
-- chain of 2,000 row versions, each add walking it (quadratic), over pages
-- of versions no one can prune before the transaction ends.  Adds 1-4 are
-- events (no slot row yet: counter.slot_events), the 5th takes a slot row,
-- the others go to events again.  Checked before the commit, so that the
-- worker cannot fold anything first.
SELECT counter.create('srep');
BEGIN;
SELECT pg_relation_size('counter.slots') AS slots_bytes \gset
SELECT count(counter.add('srep', 'k', 1)) AS adds FROM generate_series(1, 2000);
SELECT counter.value('srep', 'k') AS value,
       (SELECT sum(s.value) FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
         WHERE c.name = 'srep') AS in_slots,
       (SELECT count(*) FROM counter.pending_events e JOIN counter.counters c ON c.id = e.counter_id
         WHERE c.name = 'srep') AS events,
       (pg_relation_size('counter.slots') - :slots_bytes) / 8192 < 4 AS slots_pages_few;
COMMIT;
SELECT counter.value('srep', 'k') AS value;

-- the same for a bounded key, whose adds all go to its slot row: the row
-- this transaction wrote last is locked at once (its own row, 1.4), where
-- each add searched the index and walked the versions the transaction had
-- written (quadratic); a rolled-back savepoint and a compaction in the
-- transaction (which zeroes the row) are passed over
SELECT counter.create('srepb', min => 0);
BEGIN;
SELECT pg_stat_get_xact_numscans('counter.slots_pkey'::regclass) AS scans \gset
SELECT count(counter.add('srepb', 'k', 1)) AS adds FROM generate_series(1, 2000);
SELECT pg_stat_get_xact_numscans('counter.slots_pkey'::regclass) - :scans < 100 AS few_index_scans,
       counter.value('srepb', 'k') AS value;
SAVEPOINT s;
SELECT counter.add('srepb', 'k', 5);
ROLLBACK TO s;
SELECT counter.add('srepb', 'k', 1);
SELECT counter.compact('srepb') >= 0 AS compacted;
SELECT counter.add('srepb', 'k', -2001);
SELECT counter.add('srepb', 'k', -1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT counter.value('srepb', 'k') AS value;

-- compact() of every counter needs the owner's rights; a named one the read right
CREATE ROLE counter_shapes;
SET ROLE counter_shapes;
SELECT counter.compact();
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('mine', mode => 'buffered');
SELECT counter.add('mine', 'k', 3);
SELECT counter.compact('mine') >= 0 AS done;
SELECT counter.value('mine', 'k');
SELECT counter.drop('mine');
RESET ROLE;
DROP ROLE counter_shapes;

SELECT counter.drop(name) FROM counter.list() WHERE name IN ('sb', 'sw', 'sb_new', 'sw_new', 'sp', 'srep', 'srepb');
DROP FUNCTION compacted(text, text);
