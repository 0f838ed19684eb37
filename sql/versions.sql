-- Proves that the library serves an installed schema older than 1.4 with the statements of src/legacy.c, as that version's library did (create, alter, top, series, grant, revoke, drop at 1.0, 1.1 and 1.2, in one session across ALTER EXTENSION UPDATE; what a version lacks is refused with 0A000), and that after the update to 1.4 the same calls, now through the internal functions, give the same results.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS counter;
CREATE EXTENSION counter VERSION '1.0';
RESET client_min_messages;
\set SHOW_CONTEXT never
-- 1.0: one events table, no buffered mode, no membership counters
SELECT counter.create('v_slots', rollups => '{1 hour}');
SELECT counter.create('v_events', mode => 'events', rollups => '{1 hour}');
SELECT counter.add('v_slots', 'a', 5), counter.add('v_slots', 'b', 3), counter.add('v_slots', 'c', 3);
SELECT counter.add('v_events', 'a', 2, at => '2026-01-01 10:30+00'),
       counter.add('v_events', 'a', 4, at => '2026-01-01 12:10+00'),
       counter.add('v_events', 'b', 7, at => '2026-01-01 11:30+00');
SELECT * FROM counter.top('v_slots', 10);
SELECT * FROM counter.top('v_slots', 2);
SELECT * FROM counter.top('v_events', 1);
SELECT * FROM counter.series('v_events', 'a', '2026-01-01 00:00+00', '2026-01-02 00:00+00', '1 hour');
SELECT counter.compact() >= 0;
SELECT * FROM counter.top('v_events', 10);
SELECT * FROM counter.series('v_events', 'a', '2026-01-01 00:00+00', '2026-01-02 00:00+00', '1 hour');
SELECT counter.alter('v_slots', mode => 'events', rollups => '{1 hour,1 day}');
SELECT name, mode, rollups, retention FROM counter.list() ORDER BY name;
SELECT counter.grant('v_slots', 'public', 'read');
SELECT count(*) FROM counter.grants;
SELECT counter.revoke('v_slots', 'public', 'read');
SELECT count(*) FROM counter.grants;
SELECT counter.create('v_buffered', mode => 'buffered');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.alter('v_slots', mode => 'buffered');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('v_fans', members => true);
\echo :LAST_ERROR_SQLSTATE
SELECT counter.drop('v_events');
SELECT name FROM counter.list() ORDER BY name;
SELECT (SELECT count(*) FROM counter.events) AS events,
       (SELECT count(*) FROM counter.rollups r
         WHERE NOT EXISTS (SELECT 1 FROM counter.counters c WHERE c.id = r.counter_id)) AS rollups_left;
-- 1.1: buffered adds are pending in top(); wal mode still refused
ALTER EXTENSION counter UPDATE TO '1.1';
SELECT counter.create('v_buffered', mode => 'buffered');
SELECT counter.add('v_buffered', 'a', 4), counter.add('v_buffered', 'b', 9);
SELECT * FROM counter.top('v_buffered', 10);
SELECT counter.add('v_slots', 'c', 10);
SELECT * FROM counter.top('v_slots', 2);
SELECT counter.alter('v_buffered', mode => 'wal');
\echo :LAST_ERROR_SQLSTATE
SELECT counter.create('v_fans', members => true);
SELECT counter.drop('v_fans');
-- 1.2: two events tables, only the live ones pending
ALTER EXTENSION counter UPDATE TO '1.2';
SELECT counter.add('v_slots', 'a', 1, at => '2026-01-01 10:45+00');
SELECT * FROM counter.top('v_slots', 10);
SELECT * FROM counter.series('v_slots', 'a', '2026-01-01 00:00+00', '2026-01-02 00:00+00', '1 hour');
SELECT counter.compact() >= 0;
SELECT * FROM counter.top('v_slots', 10);
SELECT * FROM counter.series('v_slots', 'a', '2026-01-01 00:00+00', '2026-01-02 00:00+00', '1 hour');
SELECT counter.drop('v_buffered');
SELECT name FROM counter.list() ORDER BY name;
-- 1.4: the same calls through counter._create, _alter, _drop, _revoke, _series
ALTER EXTENSION counter UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'counter';
SELECT * FROM counter.top('v_slots', 10);
SELECT * FROM counter.series('v_slots', 'a', '2026-01-01 00:00+00', '2026-01-02 00:00+00', '1 hour');
SELECT counter.create('v_new', mode => 'events', rollups => '{1 hour}', feed => true);
SELECT counter.add('v_new', 'a', 3, at => '2026-01-01 10:30+00');
SELECT * FROM counter.series('v_new', 'a', '2026-01-01 00:00+00', '2026-01-02 00:00+00', '1 hour');
SELECT counter.alter('v_slots', feed => false);
SELECT counter.alter('v_new', rollups => '{1 day}');
SELECT name, mode, rollups, feed FROM counter.stats ORDER BY name;
SELECT counter.grant('v_slots', 'public', 'read');
SELECT channel AS old_channel FROM counter.channel('v_slots') AS channel \gset
SELECT counter.revoke('v_slots', 'public', 'read');
SELECT count(*) AS grants, counter.channel('v_slots') <> :'old_channel' AS rotated FROM counter.grants;
SELECT counter.drop(name) FROM counter.list();
SELECT (SELECT count(*) FROM counter.counters) AS counters, (SELECT count(*) FROM counter.events) +
       (SELECT count(*) FROM counter.events_1) AS events, (SELECT count(*) FROM counter.slots) AS slots,
       (SELECT count(*) FROM counter.rollups) AS rollups,
       (SELECT count(*) FROM counter.totals) AS totals;
DROP EXTENSION counter;
