-- Adds of 1000 in four modes then counter.compact(), all rolled back: none of it may count.
\set k random_zipfian(1, :keys, 1.1)
BEGIN;
SELECT counter.add('s_buffered', 'k' || :k, 1000);
SELECT counter.add('s_wal', 'k' || :k, 1000);
SELECT counter.add('s_events', 'k' || :k, 1000);
SELECT counter.add('s_switch', 'k' || :k, 1000);
SELECT counter.compact();
ROLLBACK;
