-- Proves that one key compaction cannot move (a total, a rollup bucket or a bucket's time out of range) never stops other keys or counters: it is quarantined (counter.quarantine, one WARNING), its amount stays pending and counted by every read (22003 where the exact value leaves bigint), other counters compact in the same round, through the rotation's fold (which carries the key's events to the current table) and the row-by-row delete, for events, slots and buffered adds; an add of the opposite amount releases it with nothing lost; and that add, create and alter refuse a time or granularity that could not be compacted.
CREATE EXTENSION IF NOT EXISTS counter;
\set VERBOSITY default
-- Hold the compaction lock for the whole test (the worker then skips its
-- rounds), taken once both events tables are live again: the next
-- compaction of pending events rotates, and folds the old table whole.
CREATE FUNCTION pg_temp.hold_compaction() RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..600 LOOP
		PERFORM pg_advisory_unlock_all();
		PERFORM pg_sleep(0.1);
		PERFORM pg_advisory_lock(1668248942, 1952805376);
		IF NOT EXISTS (SELECT 1 FROM counter.event_tables WHERE folded IS NOT NULL) THEN
			RETURN true;
		END IF;
	END LOOP;
	RETURN false;
END $$;
-- whether the last compaction rotated: a table is marked folded
CREATE FUNCTION pg_temp.rotated() RETURNS bool LANGUAGE sql
	AS $$SELECT EXISTS (SELECT 1 FROM counter.event_tables WHERE folded IS NOT NULL)$$;
-- store an event as version 1.3 could, in a live events table
CREATE FUNCTION pg_temp.insert_event(name text, key text, delta int8, at timestamptz)
	RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF (SELECT folded IS NULL FROM counter.event_tables WHERE tab = 0) THEN
		INSERT INTO counter.events SELECT id, key, delta, at FROM counter.counters c WHERE c.name = $1;
	ELSE
		INSERT INTO counter.events_1 SELECT id, key, delta, at FROM counter.counters c WHERE c.name = $1;
	END IF;
END $$;
-- the SQLSTATE a statement fails with, or 'ok'
CREATE FUNCTION pg_temp.sqlstate(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END $$;
CREATE FUNCTION pg_temp.pending(name text) RETURNS bigint LANGUAGE sql
	AS $$SELECT pending_events FROM counter.stats WHERE stats.name = $1$$;
CREATE FUNCTION pg_temp.quarantined() RETURNS TABLE (counter text, key text, source text, reason text)
	LANGUAGE sql AS $$SELECT c.name, q.key, q.source, q.reason FROM counter.quarantine q
	JOIN counter.counters c ON c.id = q.counter_id ORDER BY 1, 2, 3$$;

-- ov_slots keys take a slot row at their first add (not an event): the
-- slot rows are the source tested
SET counter.slot_events = 0;
SELECT counter.create('ov_events', mode => 'events', rollups => '{1 hour,1 day}');
SELECT counter.create('ov_slots', mode => 'slots', rollups => '{1 hour,1 day}');
SELECT counter.create('ov_week', mode => 'events', rollups => '{7 days}');
SELECT counter.create('ov_good', mode => 'events');
SELECT counter.compact() >= 0 AS settled;
SELECT pg_temp.hold_compaction() AS held;

-- 1. events: INT64_MAX, then +1, folded by the rotation with another
-- counter's events: the key is quarantined, its +1 carried to the current
-- table, the other counter compacted in the same round
SELECT counter.add('ov_events', 'max', 9223372036854775807);
SELECT counter.add('ov_events', 'small', 7);
SELECT counter.compact() AS moved;
SELECT pg_temp.hold_compaction() AS held;
SELECT counter.add('ov_events', 'max', 1);
SELECT counter.add('ov_good', 'k', 5);
SELECT counter.add('ov_good', 'k2', 6);
SELECT counter.compact() AS moved;
SELECT pg_temp.rotated() AS rotated;
SELECT * FROM pg_temp.quarantined();
SELECT pg_temp.pending('ov_good') AS good_pending, pg_temp.pending('ov_events') AS bad_pending;
SELECT counter.value('ov_good', 'k') AS k, counter.value('ov_events', 'small') AS small;
SELECT counter.value('ov_events', 'max');	-- INT64_MAX + 1: 22003
-- the next compactions (row by row) leave it too, and move the others
SELECT counter.add('ov_good', 'k', 1);
SELECT counter.compact() AS moved;
SELECT pg_temp.pending('ov_good') AS good_pending, pg_temp.pending('ov_events') AS bad_pending;
-- fixed: the opposite add releases it at the next maintenance round
SELECT counter.add('ov_events', 'max', -1);
SELECT counter.compact() AS moved;
SELECT * FROM pg_temp.quarantined();
SELECT counter.value('ov_events', 'max'), pg_temp.pending('ov_events') AS pending;
SELECT granularity, keys, drifted_keys, drift FROM counter.verify('ov_events');

-- 2. slots: +5e18, -5e18, +5e18: the value never passes 5e18, but the
-- incremented count of the key's total would
SELECT counter.add('ov_slots', 's', 5000000000000000000);
SELECT counter.compact() AS moved;
SELECT counter.add('ov_slots', 's', -5000000000000000000);
SELECT counter.compact() AS moved;
SELECT counter.add('ov_slots', 's', 5000000000000000000);
SELECT counter.add('ov_slots', 'fine', 2);
SELECT counter.add('ov_good', 'k', 1);
SELECT counter.compact() AS moved;
SELECT * FROM pg_temp.quarantined();
SELECT pg_temp.pending('ov_good') AS good_pending;
SELECT counter.value('ov_slots', 's') AS s, counter.value('ov_slots', 'fine') AS fine;
SELECT counter.add('ov_slots', 's', -5000000000000000000);
SELECT counter.compact() >= 0 AS compacted;
SELECT * FROM pg_temp.quarantined();
SELECT counter.value('ov_slots', 's') AS s,
       (SELECT sum(value) FROM counter.slots s JOIN counter.counters c ON c.id = s.counter_id
         WHERE c.name = 'ov_slots' AND s.key = 's') AS in_slots;
SELECT granularity, keys, drifted_keys, drift FROM counter.verify('ov_slots');

-- 3. a 7-day rollup of an event at the earliest timestamp (stored by 1.3,
-- which took any time): its bucket would start before the timestamp range
SELECT counter.add('ov_week', 'old', 1, at => '4714-11-24 00:00:00+00 BC');	-- 22008 now
SELECT counter.add('ov_week', 'old', 1, at => 'infinity');	-- 22008
SELECT pg_temp.insert_event('ov_week', 'old', 3, '4714-11-24 00:00:00+00 BC');
SELECT counter.add('ov_week', 'new', 4);
SELECT counter.add('ov_good', 'k', 1);
SELECT counter.compact() AS moved;
SELECT * FROM pg_temp.quarantined();
SELECT pg_temp.pending('ov_good') AS good_pending, pg_temp.pending('ov_week') AS week_pending;
SELECT counter.value('ov_week', 'old') AS old, counter.value('ov_week', 'new') AS new;
-- no add can fix that time: a granularity that bins it within the range can
SELECT counter.alter('ov_week', rollups => '{1 day}');
SELECT counter.compact() >= 0 AS compacted;
SELECT * FROM pg_temp.quarantined();
SELECT counter.value('ov_week', 'old') AS old, pg_temp.pending('ov_week') AS week_pending;
SELECT granularity, keys, drifted_keys, drift FROM counter.verify('ov_week');

-- 4. buffered: a flush onto a total at INT64_MAX stores the amount as an
-- event instead, and the read stays exact
SELECT counter.alter('ov_events', mode => 'buffered');
SELECT counter.add('ov_events', 'max', 1);
SELECT counter.add('ov_events', 'b', 2);
SELECT counter.add('ov_good', 'k', 1);
SELECT counter.compact() AS moved;
SELECT * FROM pg_temp.quarantined();
SELECT pg_temp.pending('ov_good') AS good_pending, pg_temp.pending('ov_events') AS pending;
SELECT counter.value('ov_events', 'b') AS b;
SELECT counter.value('ov_events', 'max');	-- INT64_MAX + 1: 22003
SELECT counter.add('ov_events', 'max', -1);
SELECT counter.compact() >= 0 AS compacted;	-- the -1 joins the +1 in events
SELECT counter.compact() >= 0 AS compacted;	-- both released and folded
SELECT * FROM pg_temp.quarantined();
SELECT counter.value('ov_events', 'max'), pg_temp.pending('ov_events') AS pending;
SELECT granularity, keys, drifted_keys, drift FROM counter.verify('ov_events');
SELECT pg_advisory_unlock(1668248942, 1952805376) AS unlocked;

-- 5. what adds, create and alter refuse, before anything changes
SELECT counter.add('ov_good', 'k', 1, at => '-infinity');
SELECT s, pg_temp.sqlstate(s) FROM (VALUES
	($$SELECT counter.add('ov_good', 'k', 1, at => '-infinity')$$),
	($$SELECT counter.add('ov_good', 'k', 1, at => 'infinity')$$),
	($$SELECT counter.add('ov_good', 'k', 1, at => '4614-11-24 23:59:59+00 BC')$$),
	($$SELECT counter.add('ov_good', 'k', 1, at => '4614-11-25 00:00:00+00 BC')$$),
	($$SELECT counter.create('ov_century', rollups => '{36526 days}')$$),
	($$SELECT counter.create('ov_century', rollups => '{36525 days 00:00:01}')$$),
	($$SELECT counter.create('ov_century', rollups => '{1 day}', retention => '{102 years}')$$),
	($$SELECT counter.create('ov_century', rollups => '{36525 days}', retention => '{100 years}')$$),
	($$SELECT counter.alter('ov_century', rollups => '{1 day}', retention => '{300000 years}')$$),
	($$SELECT counter.alter('ov_century', rollups => '{876601 hours}')$$),
	($$SELECT counter.add_many('ov_good', '{a,a}', '{9223372036854775807,1}')$$),
	($$SELECT counter.add('ov_slots', 'x', 9223372036854775807)$$),
	($$SELECT counter.add('ov_slots', 'x', 1)$$),
	($$SELECT counter.try_add('ov_slots', 'x', 1)$$),
	($$SELECT counter.add('ov_slots', 'y', -9223372036854775807)$$),
	($$SELECT counter.add('ov_slots', 'y', -1)$$),
	($$SELECT counter.reset('ov_slots', 'y')$$),
	($$SELECT counter.add('ov_slots', 'y', 1)$$)) AS t(s);
SELECT counter.value('ov_good', 'k') AS k, counter.value('ov_good', 'a') AS a,
       counter.value('ov_slots', 'x') AS x, counter.value('ov_slots', 'y') AS y;
SELECT name, rollups, retention FROM counter.list() WHERE name = 'ov_century';
SELECT counter.compact() >= 0 AS compacted;

SELECT counter.drop(name) FROM counter.list() WHERE name LIKE 'ov\_%' ORDER BY name;
SELECT count(*) AS quarantined FROM counter.quarantine;
