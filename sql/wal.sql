-- Proves wal mode (1.3) from SQL: once the worker has armed the database an add writes no event and no slot row, values are exact before and after a flush, in the adding transaction itself, across rollbacks, savepoints and mode switches; add_many, top and the read functions see the buffered amounts; back-dated adds go to events; wrong uses fail with their SQLSTATE.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never

SELECT counter.create('plays', mode => 'wal', rollups => '{1 hour,1 day}');
SELECT mode FROM counter.list() WHERE name = 'plays';
-- the worker arms the database: a replication slot and a replay position
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN (SELECT start_lsn IS NOT NULL FROM counter.wal_state);
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SELECT start_lsn IS NOT NULL AS armed FROM counter.wal_state;
SELECT slot_type FROM pg_replication_slots
 WHERE slot_name = 'counter_wal_' || (SELECT oid FROM pg_database WHERE datname = current_database());

-- adds: no event row, no slot row; exact at once
SELECT counter.add('plays', 'song-1');
SELECT counter.add('plays', 'song-1', 4);
SELECT counter.increment('plays', 'song-2');
SELECT counter.value('plays', 'song-1'), counter.value('plays', 'song-2');
SELECT (SELECT count(*) FROM counter.pending_events) AS events,
	   (SELECT count(*) FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
		 WHERE c.name = 'plays') AS slot_rows;

-- the adding transaction sees its own adds; a rollback and a rolled-back
-- savepoint leave nothing
BEGIN;
SELECT counter.add('plays', 'song-1', 10);
SELECT counter.value('plays', 'song-1');
SAVEPOINT s;
SELECT counter.add('plays', 'song-1', 100);
SELECT counter.value('plays', 'song-1');
ROLLBACK TO s;
SELECT counter.add_and_get('plays', 'song-1', 1);
COMMIT;
BEGIN;
SELECT counter.add('plays', 'song-1', 1000);
ROLLBACK;
SELECT counter.value('plays', 'song-1');

-- batch adds, reads of many keys, top
SELECT counter.add_many('plays', ARRAY['song-3', 'song-4', 'song-3'], ARRAY[3, 4, 5]);
SELECT * FROM counter.values('plays', ARRAY['song-1', 'song-2', 'song-3', 'song-4', 'none']);
SELECT * FROM counter.top('plays', 3);

-- a flush moves the amounts into totals: the same values
SELECT counter.compact('plays') >= 0;
SELECT * FROM counter.values('plays', ARRAY['song-1', 'song-2', 'song-3', 'song-4']);
SELECT (SELECT sum(counter.value(state)) FROM counter.totals WHERE counter = 'plays') AS in_totals,
	   (SELECT buffered_unflushed FROM counter.stats WHERE name = 'plays') AS unflushed;
SELECT granularity, drift FROM counter.verify('plays');

-- a back-dated add is an event, in its own bucket
SELECT counter.add('plays', 'song-1', 2, at => '2026-01-01 10:00+00');
SELECT count(*) AS events FROM counter.pending_events;
SELECT counter.value('plays', 'song-1');

-- switching modes keeps every value exact
SELECT counter.alter('plays', mode => 'events');
SELECT counter.add('plays', 'song-1', 20);
SELECT counter.alter('plays', mode => 'slots');
SELECT counter.add('plays', 'song-1', 300);
SELECT counter.alter('plays', mode => 'wal');
SELECT counter.add('plays', 'song-1', 4000);
SELECT counter.value('plays', 'song-1');
SELECT counter.compact() >= 0;
SELECT counter.value('plays', 'song-1');

-- errors: bounds need slots mode, no adds in read-only transactions,
-- no PREPARE after a wal add, unknown modes
SELECT counter.create('capped', mode => 'wal', max => 10);
\echo :LAST_ERROR_SQLSTATE
BEGIN READ ONLY;
SELECT counter.add('plays', 'song-1');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT counter.add('plays', 'song-1');
PREPARE TRANSACTION 'p1';
\echo :LAST_ERROR_SQLSTATE
SELECT counter.value('plays', 'song-1');
SELECT counter.create('x', mode => 'WAL');
\echo :LAST_ERROR_SQLSTATE

SELECT counter.drop('plays');
