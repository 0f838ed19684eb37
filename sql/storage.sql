-- Proves the storage defaults of 1.4: no rollups for a new counter, counter.slot_events (4) and counter.buffered_keys (-1: sized from shared_buffers, at least 100,000 keys); in slots mode an uncontended key's adds are event rows (no slot row) until it has counter.slot_events pending events, then it gets one slot row, written once per transaction (its later adds in the transaction are events); on that event path an add that would take the key's pending events out of bigint fails with 22003 as a slot row's does; slot_events = 0 gives a slot row at the first add; bad settings fail (22023, 55P02); counter.stats.buffered_fallbacks is 0 while the buffered hash has room.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;

SHOW counter.slot_events;
SHOW counter.buffered_keys;
SELECT counter.create('st_slots');
SELECT counter.create('st_buffered', mode => 'buffered');
-- no rollups by default (1.4)
SELECT name, rollups, retention FROM counter.list() WHERE name = 'st_slots';
CREATE FUNCTION pg_temp.rows(k text) RETURNS TABLE (slot_rows int8, events int8)
	LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
			 WHERE c.name = 'st_slots' AND s.key = k),
		   (SELECT count(*) FROM counter.pending_events e JOIN counter.counters c ON c.id = e.counter_id
			 WHERE c.name = 'st_slots' AND e.key = k)$$;

-- one transaction (the worker cannot fold its events in between): three
-- adds are three events; the fifth add of a key with four gets a slot row,
-- and the transaction's later adds of the key are events again (the row is
-- written once per transaction)
BEGIN;
SELECT count(counter.add('st_slots', 'a')) FROM generate_series(1, 3);
SELECT * FROM pg_temp.rows('a');
SELECT count(counter.add('st_slots', 'b', 2)) FROM generate_series(1, 10);
SELECT * FROM pg_temp.rows('b');
SELECT counter.value('st_slots', 'a') AS a, counter.value('st_slots', 'b') AS b;
COMMIT;
SELECT counter.value('st_slots', 'a') AS a, counter.value('st_slots', 'b') AS b;

-- the event path keeps the add-time overflow check of a slot row
BEGIN;
SELECT counter.add('st_slots', 'big', 9223372036854775807);
SELECT counter.add('st_slots', 'big', 1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT counter.add('st_slots', 'neg', -9223372036854775807);
SELECT counter.add('st_slots', 'neg', -1);
SELECT counter.add('st_slots', 'neg', -1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- 0: a slot row at the first add, as before 1.4
SET counter.slot_events = 0;
SELECT counter.add('st_slots', 'c', 5);
SELECT * FROM pg_temp.rows('c');
RESET counter.slot_events;

-- bad settings
SET counter.slot_events = -1;
SET counter.slot_events = 1025;
SET counter.buffered_keys = 1000;

-- no fallback while the hash has room
SELECT counter.add('st_buffered', 'k' || g) FROM generate_series(1, 10) g;
SELECT name, buffered_fallbacks FROM counter.stats
 WHERE name IN ('st_slots', 'st_buffered') ORDER BY name;

SELECT counter.compact() >= 0 AS compacted;
SELECT counter.drop('st_slots');
SELECT counter.drop('st_buffered');
