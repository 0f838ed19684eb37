-- Proves that counter.top(name, k) equals a brute-force sort of every key's exact value (value DESC, key ASC) in every mode, with pending and compacted deltas mixed, negative values, ties at the cut, k = 0, k beyond the key count, and peer nodes' rows in counter.totals (keys only on peers, negative peer rows, a node whose rows are all negative).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS counter;
RESET client_min_messages;

-- every key any source holds, valued one by one with counter.value()
CREATE FUNCTION pg_temp.brute(c text, k int) RETURNS TABLE (key text, value int8)
LANGUAGE sql AS $$
	SELECT x.key, counter.value(c, x.key) FROM (
		SELECT t.key FROM counter.totals t WHERE t.counter = c
		UNION SELECT s.key FROM counter.slots s, counter.counters cc
		       WHERE cc.name = c AND s.counter_id = cc.id AND s.value <> 0
		UNION SELECT e.key FROM counter.events e, counter.counters cc
		       WHERE cc.name = c AND e.counter_id = cc.id
		UNION SELECT e.key FROM counter.events_1 e, counter.counters cc
		       WHERE cc.name = c AND e.counter_id = cc.id
		UNION SELECT b.key FROM counter._buffered(c) b) x
	ORDER BY 2 DESC, 1 LIMIT k
$$;

-- for each k: 'ok' when top() equals the brute force, and how many rows
CREATE FUNCTION pg_temp.check(c text) RETURNS text
LANGUAGE sql AS $$
	SELECT string_agg(format('%s:%s', k.k,
		CASE WHEN t.r IS NOT DISTINCT FROM b.r
			 THEN 'ok(' || coalesce(cardinality(t.r), 0) || ')'
			 ELSE 'MISMATCH top=' || t.r::text || ' brute=' || b.r::text END), ' ' ORDER BY k.k)
	FROM unnest(ARRAY[0, 1, 3, 10, 25, 100000]) AS k(k),
	LATERAL (SELECT array_agg(x.key || '=' || x.value ORDER BY x.o) AS r
			   FROM counter.top(c, k.k) WITH ORDINALITY AS x(key, value, o)) t,
	LATERAL (SELECT array_agg(y.key || '=' || y.value ORDER BY y.o) AS r
			   FROM pg_temp.brute(c, k.k) WITH ORDINALITY AS y(key, value, o)) b
$$;

-- one counter per mode; wal mode once the worker armed the database
SELECT counter.create('tp_' || m, mode => m) FROM unnest(ARRAY['slots', 'events', 'buffered', 'wal']) m;
DO $$ BEGIN WHILE (SELECT start_lsn IS NULL FROM counter.wal_state) AND clock_timestamp() < now() + interval '30 s' LOOP PERFORM pg_sleep(0.1); END LOOP; END $$;
SELECT start_lsn IS NOT NULL AS armed FROM counter.wal_state;

-- empty counters
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;

-- 300 keys, values from -5 to 11: many ties at every cut, negatives, zeros
SELECT count(*) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c,
	generate_series(1, 300) i, LATERAL counter.add(c, 'k' || i, (i % 17) - 5);
-- pending only (or partly compacted by the worker meanwhile)
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;
-- compacted
SELECT counter.compact() >= 0 AS compacted;
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;
-- pending on top of compacted: raise some keys, lower others below zero
SELECT count(*) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c,
	generate_series(1, 300, 7) i, LATERAL counter.add(c, 'k' || i, CASE WHEN i % 2 = 0 THEN 9 ELSE -20 END);
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;
-- inside a transaction with its own uncommitted adds
BEGIN;
SELECT count(*) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c,
	generate_series(1, 300, 11) i, LATERAL counter.add(c, 'k' || i, 3);
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;
ROLLBACK;

-- peer nodes' rows, as replication brings them: node 2 holds keys of this
-- node (some negative) and keys only it has; node 3's rows are all negative
INSERT INTO counter.totals (counter, key, node, state)
SELECT c, 'k' || i, 2,
	   (CASE WHEN i % 3 = 0 THEN '{2:+0-' || (i % 13) || '}' ELSE '{2:+' || (i % 11) || '-0}' END)::counter.sharded_counter
  FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c, generate_series(1, 400, 2) i;
INSERT INTO counter.totals (counter, key, node, state)
SELECT c, 'p' || i, 3, ('{3:+0-' || i || '}')::counter.sharded_counter
  FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c, generate_series(1, 40) i;
INSERT INTO counter.totals (counter, key, node, state)
SELECT c, 'k' || i, 3, ('{3:+0-' || (i % 4) || '}')::counter.sharded_counter
  FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c, generate_series(1, 300, 5) i;
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;
-- with peers and pending adds
SELECT count(*) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c,
	generate_series(1, 400, 3) i, LATERAL counter.add(c, 'k' || i, (i % 7) - 3);
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;
SELECT counter.compact() >= 0 AS compacted;
SELECT c, pg_temp.check(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal']) c;

-- a counter whose keys are only on a peer, all of one value (ties only)
SELECT counter.create('tp_peer');
INSERT INTO counter.totals (counter, key, node, state)
SELECT 'tp_peer', 'q' || i, 2, '{2:+4-0}'::counter.sharded_counter FROM generate_series(1, 50) i;
SELECT pg_temp.check('tp_peer');

SELECT counter.drop(c) FROM unnest(ARRAY['tp_slots', 'tp_events', 'tp_buffered', 'tp_wal', 'tp_peer']) c;
