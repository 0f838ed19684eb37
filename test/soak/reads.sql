-- Reads while the load runs: value in three modes, values of 20 keys, top 10, an hourly series (each statement its own transaction).
\set k random_zipfian(1, :keys, 1.1)
SELECT counter.value('s_slots', 'k' || :k) + counter.value('s_buffered', 'k' || :k) + counter.value('s_wal', 'k' || :k);
SELECT sum(value) FROM counter.values('s_events', ARRAY(SELECT 'k' || g FROM generate_series(:k::int, :k::int + 19) g));
SELECT count(*) FROM counter.top('s_switch', 10);
SELECT sum(value) FROM counter.series('s_wal', 'k' || :k, now() - interval '2 hours', now() + interval '1 hour');
