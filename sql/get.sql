-- Proves counter.get (1.4): the exact value and the time of the latest add it counts, in every mode (slots, events, buffered, wal): NULL time for a key never added, the adding transaction's own adds included with its start time, the same time before and after compaction (totals.updated), later adds move it forward, a decrement back to 0 keeps a time, mode switches stay exact; errors: no read right (42501), unknown counter, NULL arguments.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;
\set SHOW_CONTEXT never
-- slots-mode keys take a slot row at their first add here (not an event):
-- the slot row's time is what the slots case tests
SET counter.slot_events = 0;

SELECT counter.create('get_slots', mode => 'slots');
SELECT counter.create('get_events', mode => 'events');
SELECT counter.create('get_buffered', mode => 'buffered');
SELECT counter.create('get_wal', mode => 'wal');
-- wal mode adds are buffered once the worker has armed the database
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN (SELECT start_lsn IS NOT NULL FROM counter.wal_state);
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SELECT start_lsn IS NOT NULL AS armed FROM counter.wal_state;

-- a key never added: 0 and no time
SELECT c, g.value, g.updated_at IS NULL AS no_time
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c,
       counter.get(c, 'never') g;

-- the adding transaction sees its own adds, at its start time
BEGIN;
SELECT counter.add(c, 'k', 3)
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c;
SELECT c, g.value, g.updated_at = now() AS own_time
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c,
       counter.get(c, 'k') g;
SELECT now() AS t1 \gset
COMMIT;
-- nothing is written for a rolled-back add
BEGIN;
SELECT counter.add(c, 'k', 100)
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c;
ROLLBACK;
SELECT c, g.value, g.updated_at = :'t1' AS same_time
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c,
       counter.get(c, 'k') g;
-- where the sources are: slot row, event, shared memory (buffered and wal)
SELECT (SELECT count(*) FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
         WHERE c.name = 'get_slots' AND s.value <> 0) AS slot_rows,
       (SELECT count(*) FROM counter.pending_events e JOIN counter.counters c ON c.id = e.counter_id
         WHERE c.name = 'get_events') AS events;

-- compaction (slot values, events, buffered flush) keeps value and time
SELECT counter.compact() >= 0 AS compacted;
SELECT c, g.value, g.updated_at = :'t1' AS same_time
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c,
       counter.get(c, 'k') g;
SELECT t.counter, t.value, t.updated = :'t1' AS totals_updated
  FROM counter.totals t WHERE t.counter LIKE 'get\_%' ORDER BY 1;

-- a later add moves the time forward; a decrement back to 0 keeps one
SELECT pg_sleep(0.01);
BEGIN;
SELECT counter.add(c, 'k', -3)
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c;
SELECT now() AS t2 \gset
COMMIT;
SELECT c, g.value, g.updated_at = :'t2' AS later_time
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c,
       counter.get(c, 'k') g;
SELECT counter.compact() >= 0 AS compacted;
SELECT c, g.value, g.updated_at = :'t2' AS later_time
  FROM unnest(ARRAY['get_slots', 'get_events', 'get_buffered', 'get_wal']) AS c,
       counter.get(c, 'k') g;

-- get agrees with value(), whatever the mode a key's amounts were added in
SELECT pg_sleep(0.01);
SELECT counter.add('get_slots', 'm', 1);
SELECT counter.alter('get_slots', mode => 'events');
SELECT counter.add('get_slots', 'm', 1);
SELECT counter.alter('get_slots', mode => 'buffered');
BEGIN;
SELECT counter.add('get_slots', 'm', 1);
SELECT now() AS t3 \gset
COMMIT;
SELECT g.value, g.value = counter.value('get_slots', 'm') AS agrees,
       g.updated_at = :'t3' AS latest_time
  FROM counter.get('get_slots', 'm') g;
SELECT counter.compact() >= 0 AS compacted;
SELECT g.value, g.updated_at = :'t3' AS latest_time FROM counter.get('get_slots', 'm') g;
-- a back-dated add counts with its own time, the latest stays
SELECT counter.alter('get_slots', mode => 'events');
SELECT counter.add('get_slots', 'm', 1, at => timestamptz '2020-01-01 00:00:00+00');
SELECT g.value, g.updated_at = :'t3' AS latest_time FROM counter.get('get_slots', 'm') g;
SELECT counter.add('get_slots', 'old', 1, at => timestamptz '2020-01-01 00:00:00+00');
SELECT g.value, g.updated_at = timestamptz '2020-01-01 00:00:00+00' AS backdated
  FROM counter.get('get_slots', 'old') g;

-- errors
CREATE ROLE counter_get_other;
SET ROLE counter_get_other;
SELECT * FROM counter.get('get_events', 'k');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT counter.grant('get_events', 'counter_get_other', 'read');
SET ROLE counter_get_other;
SELECT value FROM counter.get('get_events', 'k');
RESET ROLE;
SELECT * FROM counter.get('get_nope', 'k');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.get(NULL, 'k');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM counter.get('get_events', NULL);
\echo :LAST_ERROR_SQLSTATE

DROP ROLE counter_get_other;
SELECT counter.drop(name) FROM counter.list();
DROP EXTENSION counter;
