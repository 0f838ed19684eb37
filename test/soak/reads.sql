-- Reads while the load runs: value in three modes, values of 20 keys, top 10, an hourly series, and the hot keys of the two slots counters checked against their rows (each statement its own transaction).
\set k random_zipfian(1, :keys, 1.1)
SELECT counter.value('s_slots', 'k' || :k) + counter.value('s_buffered', 'k' || :k) + counter.value('s_wal', 'k' || :k);
SELECT sum(value) FROM counter.values('s_events', ARRAY(SELECT 'k' || g FROM generate_series(:k::int, :k::int + 19) g));
SELECT count(*) FROM counter.top('s_switch', 10);
SELECT sum(value) FROM counter.series('s_wal', 'k' || :k, now() - interval '2 hours', now() + interval '1 hour');
-- A hot key's value against the rows it sums, in the same statement's snapshot (a read sums the adds noted since a read in another snapshot: src/read.c); a difference divides by zero (random() * 0: not folded by the planner), which fails the run.
\set h random(1, 3)
SELECT CASE WHEN counter.value(c.name, 'k' || :h) =
         (SELECT coalesce(sum(t.value), 0) FROM counter.totals t WHERE t.counter = c.name AND t.key = 'k' || :h)
       + (SELECT coalesce(sum(s.value), 0) FROM counter.slots s WHERE s.counter_id = c.id AND s.key = 'k' || :h)
       + (SELECT coalesce(sum(e.delta), 0) FROM counter.events e WHERE e.counter_id = c.id AND e.key = 'k' || :h AND counter._event_table_live(0))
       + (SELECT coalesce(sum(e.delta), 0) FROM counter.events_1 e WHERE e.counter_id = c.id AND e.key = 'k' || :h AND counter._event_table_live(1))
       THEN 1 ELSE 1 / (random() * 0)::int END
  FROM counter.counters c WHERE c.name IN ('s_slots', 's_bounded');
